//! The log against a simple model (random appends, syncs, crashes, reopens, reads,
//! checkpoints, retention), plus recovery, corruption, fail-stop, tailing, group commit, and
//! io_uring-versus-pread equality on real files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::cast_possible_truncation, clippy::too_many_lines, clippy::many_single_char_names)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use s3repl_io::Error;
use s3repl_io::log::{
    Backend, Checkpoint, Crash, Damage, Durability, FileStorage, LogConfig, LogReader, LogWriter,
    MemStorage, ReadOptions, Record, RecordBatch, apply_retention, find_damage, inspect,
    load_checkpoint, partition_for, repair, save_checkpoint, segment_files, sync_records_below,
};

const DIR: &str = "/log";

fn std_opts() -> ReadOptions {
    ReadOptions { backend: Backend::Std, block_size: 256, ..ReadOptions::default() }
}

fn read_all<S: s3repl_io::log::Storage + Clone>(
    storage: &S,
    dir: &Path,
    partition: u32,
    from: u64,
    opts: ReadOptions,
) -> Result<Vec<Record>, Error> {
    // Through `RecordBatch` (the engine's form), cleared between reads so blocks recycle;
    // `iter` and `record` must agree.
    let mut r = LogReader::open(storage.clone(), dir, partition, from, opts);
    let mut out = Vec::new();
    let mut batch = RecordBatch::new();
    while r.read_records(7, &mut batch)? > 0 {
        assert_eq!(batch.iter().len(), batch.len());
        for (i, view) in batch.iter().enumerate() {
            let rec = batch.record(i).unwrap();
            assert_eq!((view.seq, view.payload), (rec.seq, &rec.payload[..]));
            out.push(rec);
        }
        batch.clear();
    }
    Ok(out)
}

/// The same through `read_batch` into a `Vec<Record>`.
fn read_all_vec(dir: &Path, partition: u32, opts: ReadOptions) -> Vec<Record> {
    let mut r = LogReader::open(FileStorage, dir, partition, 0, opts);
    let mut out = Vec::new();
    while r.read_batch(5, &mut out).unwrap() > 0 {}
    out
}

fn payload(key: u8, n: u64, len: usize) -> Vec<u8> {
    let mut p = format!("k{key}:{n}:").into_bytes();
    p.resize(len.max(p.len()), b'a' + (n % 26) as u8);
    p
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(u8, usize)>),
    Sync,
    Crash(Crash),
    Read,
    Checkpoint(u8),
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0u8..6, 0usize..120), 1..5).prop_map(Op::Append),
        2 => Just(Op::Sync),
        1 => prop_oneof![
            Just(Crash::DropUnsynced),
            (0usize..200).prop_map(Crash::Tear),
            // The file's new size persisted, not all of its contents: zeros or torn-sector
            // garbage after a kept prefix of the unsynced bytes.
            (0usize..200, 1usize..400, any::<bool>())
                .prop_map(|(kept, unwritten, garbage)| Crash::Unwritten { kept, unwritten, garbage }),
        ]
        .prop_map(Op::Crash),
        2 => Just(Op::Read),
        1 => (0u8..=100).prop_map(Op::Checkpoint),
        1 => Just(Op::Retention),
    ]
}

const PARTS: u32 = 3;

fn config() -> LogConfig {
    LogConfig { partitions: PARTS, segment_bytes: 300, durability: Durability::None }
}

/// The model: per partition, every record written (`records`) and how many of them are
/// durable (`synced`); plus the checkpoint and the lowest readable sequence number.
#[derive(Debug, Default, Clone)]
struct Model {
    records: BTreeMap<u32, Vec<Vec<u8>>>,
    synced: BTreeMap<u32, usize>,
    checkpoint: BTreeMap<u32, u64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let storage = MemStorage::new();
        let dir = Path::new(DIR);
        let mut writer = Some(LogWriter::open_with(storage.clone(), dir, config()).unwrap());
        let mut model = Model::default();
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Append(batch) => {
                    let w = writer.as_ref().unwrap();
                    let items: Vec<(String, Vec<u8>)> = batch.iter().map(|&(k, len)| {
                        counter += 1;
                        (format!("key-{k}"), payload(k, counter, len))
                    }).collect();
                    let refs: Vec<(&str, &str, &[u8])> = items.iter().map(|(k, p)| ("bucket", k.as_str(), p.as_slice())).collect();
                    let positions = w.append_batch(&refs).unwrap();
                    for ((key, p), pos) in items.iter().zip(&positions) {
                        prop_assert_eq!(pos.partition, partition_for("bucket", key, PARTS));
                        let recs = model.records.entry(pos.partition).or_default();
                        prop_assert_eq!(pos.seq, recs.len() as u64, "sequence numbers are dense");
                        recs.push(p.clone());
                    }
                }
                Op::Sync => {
                    writer.as_ref().unwrap().sync().unwrap();
                    for (p, recs) in &model.records {
                        model.synced.insert(*p, recs.len());
                    }
                }
                Op::Crash(how) => {
                    storage.crash(how);
                    drop(writer.take());
                    writer = Some(LogWriter::open_with(storage.clone(), dir, config()).unwrap());
                    let w = writer.as_ref().unwrap();
                    prop_assert_eq!(inspect(&storage, dir).unwrap().torn_tail_bytes, 0, "reopen truncated torn tails");
                    for p in 0..PARTS {
                        let from = model.checkpoint.get(&p).copied().unwrap_or(0);
                        let got = read_all(&storage, dir, p, from, std_opts()).unwrap();
                        let want = model.records.entry(p).or_default();
                        let durable = model.synced.get(&p).copied().unwrap_or(0);
                        // Everything synced survives; of the rest, at most a prefix, in order.
                        prop_assert!(from as usize + got.len() >= durable, "partition {}: lost synced records", p);
                        for (i, r) in got.iter().enumerate() {
                            let seq = from + i as u64;
                            prop_assert_eq!(r.seq, seq);
                            prop_assert_eq!(&r.payload[..], &want[seq as usize][..], "partition {} seq {}", p, seq);
                        }
                        want.truncate(from as usize + got.len());
                        model.synced.insert(p, want.len());
                        prop_assert_eq!(w.next_seqs()[p as usize], want.len() as u64);
                    }
                }
                Op::Read => {
                    for p in 0..PARTS {
                        let from = model.checkpoint.get(&p).copied().unwrap_or(0);
                        let got = read_all(&storage, dir, p, from, std_opts()).unwrap();
                        let want: Vec<&Vec<u8>> = model.records.get(&p).map(|r| r.iter().skip(from as usize).collect()).unwrap_or_default();
                        prop_assert_eq!(got.len(), want.len(), "partition {}", p);
                        for (g, w) in got.iter().zip(want) {
                            prop_assert_eq!(&g.payload[..], &w[..]);
                        }
                    }
                }
                Op::Checkpoint(pct) => {
                    let mut cp = Checkpoint::default();
                    for p in 0..PARTS {
                        // A consumer may pass any record it has read, synced or not (the
                        // engine reads what the writer wrote), making them durable first.
                        let len = model.records.get(&p).map_or(0, Vec::len) as u64;
                        let old = model.checkpoint.get(&p).copied().unwrap_or(0);
                        let at = (old + (len.saturating_sub(old)) * u64::from(pct) / 100).min(len);
                        sync_records_below(&storage, dir, p, at).unwrap();
                        let synced = model.synced.entry(p).or_default();
                        *synced = (*synced).max(at as usize);
                        cp.next.insert(p, at);
                    }
                    save_checkpoint(&storage, dir, "replicator", &cp).unwrap();
                    prop_assert_eq!(load_checkpoint(&storage, dir, "replicator").unwrap(), Some(cp.clone()));
                    model.checkpoint = cp.next;
                }
                Op::Retention => {
                    apply_retention(&storage, dir).unwrap();
                    // Everything at or after each checkpoint is still readable.
                    for p in 0..PARTS {
                        let from = model.checkpoint.get(&p).copied().unwrap_or(0);
                        let got = read_all(&storage, dir, p, from, std_opts()).unwrap();
                        prop_assert_eq!(got.len(), model.records.get(&p).map_or(0, Vec::len).saturating_sub(from as usize));
                    }
                }
            }
        }
        prop_assert_eq!(inspect(&storage, dir).unwrap().partitions, PARTS);
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "s3repl-log-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn torn_tail_is_truncated_and_mid_log_damage_is_an_error() {
    let storage = MemStorage::new();
    let dir = Path::new(DIR);
    let cfg = LogConfig { partitions: 1, segment_bytes: 200, durability: Durability::EveryBatch };
    let w = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    for i in 0..20u64 {
        w.append("b", "k", &payload(0, i, 40)).unwrap();
    }
    drop(w);
    // A torn write after the last synced record: bytes of half a record.
    let seg_names = |s: &MemStorage| {
        use s3repl_io::log::Storage;
        let mut v = s.list(&dir.join("p00000")).unwrap();
        v.sort();
        v
    };
    let names = seg_names(&storage);
    assert!(names.len() > 3, "rotation produced several segments: {names:?}");
    let last = dir.join("p00000").join(names.last().unwrap());
    {
        use s3repl_io::log::{Storage, StorageFile};
        let f = storage.open(&last, false).unwrap();
        let len = f.len().unwrap();
        f.write_at(len, &[9, 0, 0, 0, 1, 2, 3]).unwrap();
    }
    let seen = inspect(&storage, dir).unwrap();
    assert_eq!(
        (seen.records, seen.torn_tail_bytes),
        (20, 7),
        "a torn tail is healthy and reported"
    );
    let w = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    assert_eq!(inspect(&storage, dir).unwrap().torn_tail_bytes, 0);
    assert_eq!(w.append("b", "k", b"after").unwrap().seq, 20);
    drop(w);
    // Damage inside an earlier segment is corruption, from the reader and from inspect.
    let first = dir.join("p00000").join(&names[0]);
    assert!(storage.corrupt(&first, 40));
    let e = read_all(&storage, dir, 0, 0, std_opts()).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { partition: 0, ref segment, .. } if *segment == names[0]),
        "{e}"
    );
    assert!(matches!(inspect(&storage, dir), Err(Error::Corrupt { .. })));
    // Not something a repair truncates: it would drop every later segment.
    assert!(matches!(find_damage(&storage, dir), Err(Error::Corrupt { .. })));
}

#[test]
fn bad_checksum_in_the_last_record_is_a_torn_tail_but_not_before_it() {
    let storage = MemStorage::new();
    let dir = Path::new(DIR);
    let (cfg, seg) = one_segment(&storage, dir, 3, 30);
    let frame = 16 + 30;
    // Flip a payload byte of the last record: torn tail, truncated on open.
    assert!(storage.corrupt(&seg, 32 + 2 * frame + 20));
    assert_eq!(inspect(&storage, dir).unwrap().records, 2);
    // To a reader, a bad last frame may be one still being written: it stops before it, look
    // after look, and never calls it damage.
    let mut r = LogReader::open(storage.clone(), dir, 0, 0, std_opts());
    let mut batch = RecordBatch::new();
    assert_eq!(r.read_records(7, &mut batch).unwrap(), 2);
    for _ in 0..3 {
        assert_eq!(r.read_records(7, &mut batch).unwrap(), 0);
    }
    drop(LogWriter::open_with(storage.clone(), dir, cfg).unwrap());
    assert_eq!(read_all(&storage, dir, 0, 0, std_opts()).unwrap().len(), 2);
    // Flip a payload byte of the first record: a record follows it, so it is corruption.
    assert!(storage.corrupt(&seg, 32 + 20));
    assert!(matches!(inspect(&storage, dir), Err(Error::Corrupt { offset: 32, .. })));
    // A reader's first look may have raced the writer's copy of that frame, so it stops
    // there; the file already held a record past the frame, so the writer had finished it,
    // and a second look that still finds it bad reports the damage (it used to wait forever).
    for backend in [Backend::Std, Backend::Uring, Backend::ReadAhead] {
        let mut r =
            LogReader::open(storage.clone(), dir, 0, 0, ReadOptions { backend, ..std_opts() });
        assert_eq!(r.read_records(7, &mut batch).unwrap(), 0);
        let e = r.read_records(7, &mut batch).unwrap_err();
        assert!(matches!(e, Error::Corrupt { partition: 0, offset: 32, .. }), "{e}");
    }
    assert!(matches!(LogWriter::open_with(storage.clone(), dir, cfg), Err(Error::Corrupt { .. })));
}

/// One partition in one segment of `dir` holding `records` records with `len`-byte payloads,
/// written (the file is synced when the writer closes): its configuration and the segment's
/// path. Without durability (`Durability::None`), so the log promises nothing about them and
/// readers see what is written: the tests that damage them stand for a crash of a writer
/// whose records were not yet durable. (Under the other policies readers stop at the durable
/// mark, so they never meet such a tail, and damage below the mark is `Error::Lost`: see
/// `records_the_log_made_durable_are_never_lost_silently`.)
fn one_segment<S: s3repl_io::log::Storage + Clone>(
    storage: &S,
    dir: &Path,
    records: u64,
    len: usize,
) -> (LogConfig, PathBuf) {
    let cfg = LogConfig { partitions: 1, segment_bytes: 1 << 20, durability: Durability::None };
    let w = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    for i in 0..records {
        w.append("b", "k", &payload(0, i, len)).unwrap();
    }
    drop(w);
    (cfg, dir.join("p00000").join("00000000000000000000.seg"))
}

/// Overwrites `len` bytes of `path` at `at` with `fill` (extending the file if needed), as a
/// crash can leave a file: its size persisted, some blocks never written.
fn overwrite(path: &Path, at: u64, len: usize, fill: impl Fn(usize) -> u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let bytes: Vec<u8> = (0..len).map(fill).collect();
    f.write_all_at(&bytes, at).unwrap();
}

#[test]
fn a_crash_tail_of_zeros_or_garbage_is_torn_but_damage_before_a_record_is_not() {
    let frame = 16 + 40;
    for (case, fill) in [("zeros", 0usize), ("garbage", 1)] {
        let dir = temp_dir(&format!("crash-tail-{case}"));
        let (cfg, seg) = one_segment(&FileStorage, &dir, 10, 40);
        // Records 8 and 9 were unsynced: their blocks read back as zeros (or torn-sector
        // garbage), and the file's size says 8 KiB were written.
        let lost_at = 32 + 8 * frame as u64;
        overwrite(&seg, lost_at, 8192, |i| if fill == 0 { 0 } else { (i * 7 % 251 + 1) as u8 });
        let seen = inspect(&FileStorage, &dir).unwrap();
        assert_eq!((seen.records, seen.torn_tail_bytes), (8, 8192), "{case}: a torn tail");
        // A reader (say, a replicator in another process) waits there, look after look, for
        // the writer to come back; it does not call it damage.
        for backend in [Backend::Std, Backend::Uring, Backend::ReadAhead] {
            let opts = ReadOptions { backend, ..std_opts() };
            let mut r = LogReader::open(FileStorage, &dir, 0, 0, opts);
            let mut batch = RecordBatch::new();
            assert_eq!(r.read_records(100, &mut batch).unwrap(), 8, "{case}");
            for _ in 0..3 {
                assert_eq!(r.read_records(100, &mut batch).unwrap(), 0, "{case}");
            }
            // The writer reopens, truncates the tail and appends: the reader goes on.
            let w = LogWriter::open(&dir, cfg).unwrap();
            assert_eq!(w.append("b", "k", b"after the crash").unwrap().seq, 8, "{case}");
            drop(w);
            batch.clear();
            assert_eq!(r.read_records(100, &mut batch).unwrap(), 1, "{case}");
            assert_eq!(batch.iter().next().unwrap().payload, b"after the crash");
            // Damage the tail again for the next backend.
            overwrite(&seg, lost_at, 8192, |_| 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // A crash while the writer created a segment, before its header was durable: the
    // header reads back as zeros. No record was ever appended there; the header is rewritten.
    let dir = temp_dir("crash-new-segment");
    let (cfg, seg) = one_segment(&FileStorage, &dir, 1, 5);
    std::fs::write(&seg, [0u8; 4096]).unwrap();
    assert!(matches!(inspect(&FileStorage, &dir), Err(Error::Corrupt { offset: 0, .. })));
    let w = LogWriter::open(&dir, cfg).unwrap();
    assert_eq!(w.append("b", "k", b"again").unwrap().seq, 0);
    drop(w);
    assert_eq!(read_all(&FileStorage, &dir, 0, 0, std_opts()).unwrap().len(), 1);
    // With a record after the zeroed header, it is damage.
    overwrite(&seg, 0, 32, |_| 0);
    assert!(matches!(LogWriter::open(&dir, cfg), Err(Error::Corrupt { offset: 0, .. })));
    std::fs::remove_dir_all(&dir).unwrap();
    // A hole before records that survived (writeback out of order): the records after it
    // may have been acknowledged, so this is damage for the writer, inspect and readers.
    let dir = temp_dir("crash-hole");
    let (cfg, seg) = one_segment(&FileStorage, &dir, 10, 40);
    let hole = 32 + 5 * frame as u64;
    overwrite(&seg, hole, 2 * frame, |_| 0);
    let e = LogWriter::open(&dir, cfg).expect_err("the writer refuses to open");
    assert!(
        matches!(&e, Error::Corrupt { offset, reason, .. }
            if *offset == hole && reason.contains(&format!("valid record follows at offset {}", hole + 2 * frame as u64))),
        "{e}"
    );
    assert!(
        matches!(inspect(&FileStorage, &dir), Err(Error::Corrupt { offset, .. }) if offset == hole)
    );
    let mut r = LogReader::open(FileStorage, &dir, 0, 0, std_opts());
    let mut batch = RecordBatch::new();
    assert_eq!(r.read_records(100, &mut batch).unwrap(), 5);
    let e = r.read_records(100, &mut batch).and_then(|_| r.read_records(100, &mut batch));
    assert!(matches!(e, Err(Error::Corrupt { offset, .. }) if offset == hole), "{e:?}");
    // The operator's repair: first what truncating costs (records 5 and 6 were in the hole;
    // 7, 8 and 9 follow it), nothing changed; then the truncation, after which the writer
    // opens and goes on from sequence number 5.
    let len = std::fs::metadata(&seg).unwrap().len();
    // One consumer had passed the damage (it read the records before the crash), one had not.
    let at = |n: u64| Checkpoint { next: [(0, n)].into_iter().collect() };
    save_checkpoint(&FileStorage, &dir, "ahead", &at(9)).unwrap();
    save_checkpoint(&FileStorage, &dir, "behind", &at(3)).unwrap();
    let want = Damage {
        partition: 0,
        segment: "00000000000000000000.seg".into(),
        offset: hole,
        reason: format!(
            "record checksum mismatch, and a valid record follows at offset {}",
            hole + 2 * frame as u64
        ),
        bytes: len - hole,
        next_seq: 5,
        records_after: 3,
        seqs_after: Some((7, 9)),
        checkpoints_past: vec![("ahead".into(), 9)],
        lost: 0,
    };
    assert_eq!(find_damage(&FileStorage, &dir).unwrap(), vec![want.clone()]);
    assert_eq!(repair(&dir, false).unwrap(), vec![want.clone()]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "a dry run changes nothing");
    assert!(LogWriter::open(&dir, cfg).is_err());
    assert_eq!(repair(&dir, true).unwrap(), vec![want]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), hole);
    // The consumer that had passed the damage now reads the records that take its place.
    assert_eq!(load_checkpoint(&FileStorage, &dir, "ahead").unwrap(), Some(at(5)));
    assert_eq!(load_checkpoint(&FileStorage, &dir, "behind").unwrap(), Some(at(3)));
    let w = LogWriter::open(&dir, cfg).unwrap();
    // Never while a writer has the log open.
    assert!(matches!(repair(&dir, true), Err(Error::Busy { .. })));
    assert_eq!(w.append("b", "k", b"after the repair").unwrap().seq, 5);
    drop(w);
    assert_eq!(repair(&dir, true).unwrap(), vec![], "nothing left to repair");
    assert_eq!(inspect(&FileStorage, &dir).unwrap().records, 6);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_length_that_hides_later_records_is_corruption_not_a_torn_tail() {
    let storage = MemStorage::new();
    let dir = Path::new(DIR);
    let (cfg, seg) = one_segment(&storage, dir, 10, 40);
    let frame = 16 + 40;
    // Record 3's length now declares ~22 KB: past the end of the file, like a partial frame.
    let at = 32 + 3 * frame;
    assert!(storage.corrupt(&seg, at + 5));
    // Recovery used to truncate there, silently dropping the six acknowledged records after.
    let e = LogWriter::open_with(storage.clone(), dir, cfg).expect_err("refuses to open");
    assert!(
        matches!(&e, Error::Corrupt { offset, reason, .. }
            if *offset == at as u64 && reason.starts_with("incomplete record, and a valid record follows")),
        "{e}"
    );
    assert!(matches!(inspect(&storage, dir), Err(Error::Corrupt { .. })));
}

/// A tailing reader may list a partition while the writer rotates: a new segment must appear
/// under its name with its header already in it (it once appeared empty, and a reader that
/// opened it then reported the segment as corrupt).
/// Storage that watches what is done through it: it counts the calls (the reader's file
/// system work) and notes every segment file opened while shorter than a segment header
/// (what a reader listing the directory at that moment would take for a damaged segment).
#[derive(Debug, Clone, Default)]
struct Watched {
    inner: MemStorage,
    calls: Arc<std::sync::atomic::AtomicU64>,
    short: Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

#[derive(Debug)]
struct WatchedFile {
    inner: s3repl_io::log::MemFile,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl Watched {
    fn count(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl s3repl_io::log::StorageFile for WatchedFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, data)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()
    }
}

impl s3repl_io::log::Storage for Watched {
    type File = WatchedFile;
    fn open(&self, path: &Path, create: bool) -> std::io::Result<WatchedFile> {
        use s3repl_io::log::StorageFile;
        self.count();
        let f = self.inner.open(path, create)?;
        let segment = path.extension().is_some_and(|e| e == "seg");
        if segment && f.len()? < s3repl_io::log::SEGMENT_HEADER_LEN as u64 {
            self.short.lock().unwrap().push(path.to_owned());
        }
        Ok(WatchedFile { inner: f, calls: self.calls.clone() })
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.count();
        self.inner.list(dir)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.count();
        self.inner.exists(path)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

#[test]
fn new_segments_appear_whole() {
    let storage = Watched::default();
    let dir = Path::new(DIR);
    let cfg = LogConfig { partitions: 2, segment_bytes: 200, durability: Durability::EveryBatch };
    let w = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    for i in 0..40u64 {
        w.append("b", &format!("k{i}"), &payload(0, i, 40)).unwrap();
    }
    drop(w);
    // Recovery opens the last segments again; every segment is read back.
    drop(LogWriter::open_with(storage.clone(), dir, cfg).unwrap());
    let records: usize =
        (0..2).map(|p| read_all(&storage, dir, p, 0, std_opts()).unwrap().len()).sum();
    assert_eq!(records, 40);
    let listed = |p: u32| {
        let names = s3repl_io::log::Storage::list(&storage, &dir.join(format!("p{p:05}")));
        names
            .unwrap()
            .iter()
            .filter(|n| Path::new(n).extension().is_some_and(|e| e == "seg"))
            .count()
    };
    assert!(listed(0) + listed(1) > 4, "the writer rotated");
    assert_eq!(*storage.short.lock().unwrap(), Vec::<PathBuf>::new());
}

#[test]
fn failed_fsync_poisons_the_writer_until_reopened() {
    let storage = MemStorage::new();
    let dir = Path::new(DIR);
    let cfg = LogConfig { partitions: 2, ..LogConfig::default() };
    let w = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    w.append("b", "a", b"one").unwrap();
    storage.fail_syncs(true);
    assert!(matches!(w.append("b", "a", b"two"), Err(Error::Io { op: "fsync", .. })));
    storage.fail_syncs(false);
    assert!(
        matches!(w.append("b", "a", b"three"), Err(Error::Poisoned)),
        "fail-stop even after the disk recovers"
    );
    drop(w);
    storage.crash(Crash::DropUnsynced);
    let w = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    let p = w.partition_for("b", "a");
    let got = read_all(&storage, dir, p, 0, std_opts()).unwrap();
    assert_eq!(got.len(), 1, "the unacknowledged record did not survive");
    w.append("b", "a", b"four").unwrap();
}

#[test]
fn partition_count_is_fixed_at_creation() {
    let storage = MemStorage::new();
    let dir = Path::new(DIR);
    drop(
        LogWriter::open_with(
            storage.clone(),
            dir,
            LogConfig { partitions: 4, ..LogConfig::default() },
        )
        .unwrap(),
    );
    assert!(matches!(
        LogWriter::open_with(storage, dir, LogConfig { partitions: 5, ..LogConfig::default() }),
        Err(Error::Layout { .. })
    ));
}

#[test]
fn concurrent_appenders_share_fsyncs_and_keep_per_key_order() {
    let dir = temp_dir("group");
    let cfg =
        LogConfig { partitions: 4, segment_bytes: 64 << 10, durability: Durability::EveryBatch };
    let w = Arc::new(LogWriter::open(&dir, cfg).unwrap());
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| w.append("bucket", &format!("key-{t}"), &payload(t, i, 50)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let positions: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    drop(w);
    let mut all = Vec::new();
    for p in 0..4 {
        let recs = read_all(&FileStorage, &dir, p, 0, ReadOptions::default()).unwrap();
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.seq, i as u64);
        }
        all.extend(recs.into_iter().map(|r| (p, r)));
    }
    assert_eq!(all.len(), 800);
    assert_eq!(positions.len(), 800);
    // Each key's records come back in append order.
    for t in 0..8u8 {
        let mine: Vec<u64> = all
            .iter()
            .filter(|(_, r)| r.payload.starts_with(format!("k{t}:").as_bytes()))
            .map(|(_, r)| {
                String::from_utf8_lossy(&r.payload).split(':').nth(1).unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(mine, (0..100).collect::<Vec<_>>());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn uring_and_pread_readers_return_identical_records() {
    let dir = temp_dir("uring");
    let cfg = LogConfig { partitions: 2, segment_bytes: 256 << 10, durability: Durability::None };
    let w = LogWriter::open(&dir, cfg).unwrap();
    // Sizes straddle the 4 KiB read blocks, including records larger than a block.
    for i in 0..3000u64 {
        let len = [10, 200, 1000, 4090, 9000][(i % 5) as usize];
        w.append("b", &format!("k{}", i % 13), &payload((i % 13) as u8, i, len)).unwrap();
    }
    w.sync().unwrap();
    drop(w);
    for p in 0..2 {
        let small = |backend| ReadOptions {
            backend,
            block_size: 4096,
            queue_depth: 3,
            ..ReadOptions::default()
        };
        let a = read_all(&FileStorage, &dir, p, 0, small(Backend::Std)).unwrap();
        let b = read_all(&FileStorage, &dir, p, 0, small(Backend::Uring)).unwrap();
        let c = read_all(&FileStorage, &dir, p, 0, ReadOptions::default()).unwrap();
        let direct = |backend| ReadOptions { direct_io: true, ..small(backend) };
        let d = read_all(&FileStorage, &dir, p, 0, direct(Backend::Std)).unwrap();
        let e = read_all(&FileStorage, &dir, p, 0, direct(Backend::Uring)).unwrap();
        let f = read_all(&FileStorage, &dir, p, 0, small(Backend::ReadAhead)).unwrap();
        assert!(!a.is_empty());
        assert_eq!(a, read_all_vec(&dir, p, small(Backend::Std)), "partition {p}: Vec<Record>");
        assert_eq!(a, b, "partition {p}");
        assert_eq!(a, c, "partition {p}");
        assert_eq!(a, d, "partition {p}: O_DIRECT pread");
        assert_eq!(a, e, "partition {p}: O_DIRECT io_uring");
        assert_eq!(a, f, "partition {p}: pread read ahead");
        // Starting in the middle.
        let mid = a.len() as u64 / 2;
        for backend in [Backend::Uring, Backend::ReadAhead] {
            assert_eq!(
                read_all(&FileStorage, &dir, p, mid, small(backend)).unwrap(),
                a[mid as usize..].to_vec(),
                "{backend:?}"
            );
        }
    }
    if s3repl_io::log::uring_available() {
        let mut r = LogReader::open(
            FileStorage,
            &dir,
            0,
            0,
            ReadOptions { backend: Backend::Uring, ..ReadOptions::default() },
        );
        let mut out = Vec::new();
        r.read_batch(1, &mut out).unwrap();
        assert!(r.using_uring(), "io_uring is available here, so it is used");
        if std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            let mut r = LogReader::open(FileStorage, &dir, 0, 0, ReadOptions::default());
            r.read_batch(1, &mut out).unwrap();
            assert!(r.using_uring(), "several CPUs: Auto catches up with io_uring");
        }
    }
    {
        let opts = ReadOptions { backend: Backend::ReadAhead, ..ReadOptions::default() };
        let mut r = LogReader::open(FileStorage, &dir, 0, 0, opts);
        let mut out = Vec::new();
        r.read_batch(1, &mut out).unwrap();
        assert!(r.using_read_ahead() && !r.using_uring(), "pread on a read-ahead thread");
        let opts = ReadOptions { backend: Backend::Std, direct_io: true, ..ReadOptions::default() };
        let mut r = LogReader::open(FileStorage, &dir, 0, 0, opts);
        r.read_batch(1, &mut out).unwrap();
        assert!(r.using_direct_io(), "O_DIRECT is used where the file system supports it");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tailing_readers_see_new_appends_quickly() {
    let dir = temp_dir("tail");
    let cfg = LogConfig { partitions: 1, segment_bytes: 4096, durability: Durability::EveryBatch };
    let w = Arc::new(LogWriter::open(&dir, cfg).unwrap());
    for (notified, backend) in [(true, Backend::Uring), (false, Backend::Std)] {
        let start = w.next_seqs()[0];
        let mut r = LogReader::open(
            FileStorage,
            &dir,
            0,
            start,
            ReadOptions { backend, ..ReadOptions::default() },
        );
        if notified {
            r = r.with_notifier(w.notifier());
        }
        let writer = w.clone();
        let t = std::thread::spawn(move || {
            for i in 0..200u64 {
                writer.append("b", "k", &payload(0, i, 100)).unwrap();
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 200 && Instant::now() < deadline {
            r.wait_batch(64, &mut got, Duration::from_millis(100)).unwrap();
        }
        t.join().unwrap();
        assert_eq!(got.len(), 200, "notified={notified}");
        for (i, rec) in got.iter().enumerate() {
            assert_eq!(rec.seq, start + i as u64);
            assert!(rec.payload.starts_with(format!("k0:{i}:").as_bytes()));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Readers that read ahead (and share small blocks with their consumer: one in six is read by
/// it) while a writer appends: every record arrives once, in order, intact, across blocks and
/// segment rotations, with blocks of the growing segment read at different moments.
#[test]
fn read_ahead_readers_follow_a_writer_across_blocks_and_segments() {
    let dir = temp_dir("follow");
    let cfg = LogConfig { partitions: 1, segment_bytes: 96 << 10, durability: Durability::None };
    let w = Arc::new(LogWriter::open(&dir, cfg).unwrap());
    for backend in [Backend::Uring, Backend::ReadAhead, Backend::Auto] {
        let start = w.next_seqs()[0];
        let opts =
            ReadOptions { backend, block_size: 4096, queue_depth: 3, ..ReadOptions::default() };
        let mut r = LogReader::open(FileStorage, &dir, 0, start, opts);
        let writer = w.clone();
        let t = std::thread::spawn(move || {
            for i in 0..3000u64 {
                let len = 60 + (i * 7919 % 700) as usize;
                writer.append("b", "k", &payload(0, i, len)).unwrap();
                if i % 97 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        });
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < 3000 && Instant::now() < deadline {
            r.wait_batch(50, &mut got, Duration::from_millis(20)).unwrap();
        }
        t.join().unwrap();
        assert_eq!(got.len(), 3000, "{backend:?}");
        for (i, rec) in got.iter().enumerate() {
            let len = 60 + (i as u64 * 7919 % 700) as usize;
            assert_eq!(rec.seq, start + i as u64, "{backend:?}");
            assert_eq!(rec.payload, payload(0, i as u64, len), "{backend:?}: record {i}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idle_readers_find_a_rotation_at_once_and_a_gap_soon() {
    let dir = temp_dir("idle");
    let cfg = LogConfig { partitions: 1, segment_bytes: 4096, durability: Durability::EveryBatch };
    let w = LogWriter::open(&dir, cfg).unwrap();
    let pdir = dir.join("p00000");
    let segments = || std::fs::read_dir(&pdir).unwrap().count();
    let mut r = LogReader::open(FileStorage, &dir, 0, 0, std_opts());
    let mut got = Vec::new();
    // Append one record at a time, the reader catching up and idling at the segment's end
    // (past its first check, which lists the directory) after each, until the writer rotates.
    let mut i = 0u64;
    while segments() == 1 {
        w.append("b", "k", &payload(0, i, 100)).unwrap();
        i += 1;
        if segments() > 1 {
            break;
        }
        while r.read_batch(64, &mut got).unwrap() > 0 {}
        for _ in 0..3 {
            assert_eq!(r.read_batch(64, &mut got).unwrap(), 0);
        }
        assert!(i < 1000, "the writer never rotated");
    }
    // The record that opened the new segment is found by the next read, not dozens later.
    assert_eq!(r.read_batch(64, &mut got).unwrap(), 1);
    assert_eq!(got.len() as u64, i);
    assert!(got.iter().enumerate().all(|(n, rec)| rec.seq == n as u64));

    // Damage: a later segment that skips sequence numbers is found as a `Corrupt` error once
    // the reader reaches the end of its segment (while nothing new is durable it does not look
    // at the files at all; the writer, unaware of the planted segment, appends on until its
    // segment is full).
    for _ in 0..3 {
        assert_eq!(r.read_batch(64, &mut got).unwrap(), 0);
    }
    let skipped = i + 5;
    std::fs::write(
        pdir.join(format!("{skipped:020}.seg")),
        s3repl_io::log::SegmentHeader { partition: 0, first_seq: skipped }.encode(),
    )
    .unwrap();
    let found = (0..1000).find_map(|n| {
        w.append("b", "k", &payload(0, i + n, 100)).unwrap();
        match r.read_batch(64, &mut got) {
            Ok(_) => None,
            Err(e) => Some(Err::<usize, _>(e)),
        }
    });
    assert!(matches!(found, Some(Err(Error::Corrupt { .. }))), "{found:?}");
    // Inspect and repair agree: a gap between segments is damage, and not one a repair cuts.
    assert!(matches!(inspect(&FileStorage, &dir), Err(Error::Corrupt { .. })));
    assert!(matches!(find_damage(&FileStorage, &dir), Err(Error::Corrupt { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints_are_validated_and_retention_needs_every_consumer() {
    let storage = MemStorage::new();
    let dir = Path::new(DIR);
    let cfg = LogConfig { partitions: 1, segment_bytes: 150, durability: Durability::EveryBatch };
    let w = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    for i in 0..30u64 {
        w.append("b", "k", &payload(0, i, 30)).unwrap();
    }
    assert!(matches!(
        save_checkpoint(&storage, dir, "../evil", &Checkpoint::default()),
        Err(Error::Checkpoint { .. })
    ));
    assert!(apply_retention(&storage, dir).unwrap().is_empty(), "no consumer, no deletion");
    let at = |n| Checkpoint { next: BTreeMap::from([(0, n)]) };
    save_checkpoint(&storage, dir, "fast", &at(25)).unwrap();
    save_checkpoint(&storage, dir, "slow", &at(4)).unwrap();
    let deleted = apply_retention(&storage, dir).unwrap();
    assert!(
        read_all(&storage, dir, 0, 4, std_opts()).unwrap().len() == 26,
        "the slow consumer can still read"
    );
    save_checkpoint(&storage, dir, "slow", &at(25)).unwrap();
    let more = apply_retention(&storage, dir).unwrap();
    assert!(!more.is_empty() || !deleted.is_empty());
    assert_eq!(read_all(&storage, dir, 0, 25, std_opts()).unwrap().len(), 5);
    assert!(
        matches!(read_all(&storage, dir, 0, 0, std_opts()), Err(Error::Layout { .. })),
        "deleted records are reported, not skipped"
    );
    // What is left is listed with each segment's first sequence number, oldest first: a
    // reader started at the first of them reads every record retention kept.
    let left = segment_files(&storage, dir, 0).unwrap();
    assert!(left.windows(2).all(|w| w[0].0 < w[1].0), "{left:?}");
    let (oldest, path) = left.first().unwrap().clone();
    assert!(oldest > 0 && oldest <= 25, "{left:?}");
    assert!(path.ends_with(format!("p00000/{oldest:020}.seg")), "{}", path.display());
    let kept = read_all(&storage, dir, 0, oldest, std_opts()).unwrap();
    assert_eq!(kept.first().map(|r| r.seq), Some(oldest));
    assert_eq!(kept.len() as u64, 30 - oldest);
    assert_eq!(w.append("b", "k", b"x").unwrap().seq, 30);
    let bad = Checkpoint::decode(&[1, 2, 3, 4, 5]);
    assert!(bad.is_err());
}

#[test]
fn one_writer_per_log_across_handles() {
    let dir = temp_dir("writer-lock");
    let cfg = LogConfig { partitions: 2, ..LogConfig::default() };
    let first = LogWriter::open(&dir, cfg).unwrap();
    first.append("b", "k", b"one").unwrap();
    // A second writer is refused before it recovers (truncates) anything.
    match LogWriter::open(&dir, cfg) {
        Err(Error::Busy { .. }) => {}
        other => panic!("expected Busy, got {:?}", other.map(|_| ())),
    }
    drop(first);
    let second = LogWriter::open(&dir, cfg).unwrap();
    second.append("b", "k", b"two").unwrap();
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn atomic_writes_of_sibling_files_do_not_collide() {
    // `a.ckpt` and `a.horizon` once shared the temporary `a.tmp`: concurrent writers renamed
    // each other's file away.
    let dir = temp_dir("atomic-siblings");
    std::fs::create_dir_all(&dir).unwrap();
    let writers: Vec<_> = ["a.ckpt", "a.horizon"]
        .into_iter()
        .map(|name| {
            let path = dir.join(name);
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    s3repl_io::log::write_atomic(&FileStorage, &path, &i.to_le_bytes()).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(std::fs::read(dir.join("a.ckpt")).unwrap(), 299u32.to_le_bytes());
    assert_eq!(std::fs::read(dir.join("a.horizon")).unwrap(), 299u32.to_le_bytes());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key of `bucket` "b" that lands in `partition` of `partitions`.
fn key_in(partition: u32, partitions: u32) -> String {
    (0..10_000)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_for("b", k, partitions) == partition)
        .unwrap()
}

#[test]
fn a_notified_reader_sleeps_through_other_partitions_and_still_polls_for_other_writers() {
    let storage = MemStorage::new();
    let dir = Path::new(DIR);
    let cfg = LogConfig { partitions: 2, segment_bytes: 1 << 20, durability: Durability::None };
    let w = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    let (mine, other) = (key_in(0, 2), key_in(1, 2));
    let notifier = w.notifier();
    let g0 = (notifier.partition_generation(0), notifier.partition_generation(1));
    w.append("b", &other, b"x").unwrap();
    assert_eq!(notifier.partition_generation(0), g0.0, "an append to partition 1 bumps only it");
    assert_eq!(notifier.partition_generation(1), g0.1 + 1);

    let counting = Watched { inner: storage.clone(), ..Watched::default() };
    let mut r =
        LogReader::open(counting.clone(), dir, 0, 0, std_opts()).with_notifier(w.notifier());
    let mut batch = RecordBatch::new();
    w.append("b", &mine, b"first").unwrap();
    assert_eq!(r.wait_records(64, &mut batch, Duration::from_secs(5)).unwrap(), 1);
    // What one read that finds nothing costs.
    let before = counting.calls();
    assert_eq!(r.read_records(64, &mut batch).unwrap(), 0);
    let per_read = (counting.calls() - before).max(1);

    // Appends to the other partition and callers coming back every millisecond: the files are
    // read again only when a fallback poll (every 50 ms) is due, not on every call or append.
    let before = counting.calls();
    let started = Instant::now();
    for i in 0..40u64 {
        w.append("b", &other, &i.to_le_bytes()).unwrap();
        batch.clear();
        assert_eq!(r.wait_records(64, &mut batch, Duration::from_millis(1)).unwrap(), 0);
    }
    let polls_due = 2 + started.elapsed().as_millis() as u64 / 50;
    let reads = (counting.calls() - before) / per_read;
    assert!(
        reads <= polls_due,
        "{reads} reads in {:?} (at most {polls_due} due)",
        started.elapsed()
    );

    // An append to its own partition wakes it.
    w.append("b", &mine, b"second").unwrap();
    batch.clear();
    assert_eq!(r.wait_records(64, &mut batch, Duration::from_secs(5)).unwrap(), 1);
    assert_eq!(batch.iter().next().unwrap().payload, b"second");

    // A writer this notifier does not know (another process, a reopened log): found by the
    // fallback poll, within the wait.
    drop(w);
    let w2 = LogWriter::open_with(storage.clone(), dir, cfg).unwrap();
    w2.append("b", &mine, b"third").unwrap();
    batch.clear();
    assert_eq!(r.wait_records(64, &mut batch, Duration::from_secs(5)).unwrap(), 1);
    assert_eq!(batch.iter().next().unwrap().payload, b"third");
}

/// A frame as the log writes it (length, CRC32C, sequence number, payload), to plant inside
/// payloads: a decoy a reader must not take for a real frame.
fn decoy_frame(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut covered = (body.len() as u32).to_le_bytes().to_vec();
    covered.extend_from_slice(&seq.to_le_bytes());
    covered.extend_from_slice(body);
    let mut f = crc32c::crc32c(&covered).to_le_bytes().to_vec();
    f.extend_from_slice(&covered);
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The `io_uring` reader returns exactly what one thread with `pread` returns: records, or
    /// the same error at the same offset. Payloads of every size straddle blocks, and some
    /// carry valid frames numbered as the records around them are; a damaged byte may sit
    /// anywhere.
    #[test]
    fn uring_reads_equal_pread_with_decoys_and_damage(
        sizes in proptest::collection::vec((0usize..6000, 0u8..4), 40..160),
        block_kib in 1usize..6,
        damage in proptest::option::of((any::<proptest::sample::Index>(), 1u8..=255)),
        from in 0u64..30,
    ) {
        let dir = temp_dir("uring-prop");
        let cfg = LogConfig { partitions: 1, segment_bytes: 96 << 10, durability: Durability::None };
        let w = LogWriter::open(&dir, cfg).unwrap();
        for (i, &(len, kind)) in sizes.iter().enumerate() {
            let seq = i as u64;
            let mut p = payload(0, seq, len);
            if kind == 0 && len > 40 {
                // Decoys numbered as this record and the next are, at an odd place.
                let mut d = decoy_frame(seq, &p[..len / 4]);
                d.extend(decoy_frame(seq + 1, &p[..len / 3]));
                d.extend(decoy_frame(seq + 2, b"decoy"));
                let at = 7.min(p.len());
                p.splice(at..at, d);
            }
            w.append("b", "k", &p).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("p00000"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        if let Some((at, x)) = damage {
            let seg = &segs[at.index(segs.len())];
            let len = std::fs::metadata(seg).unwrap().len() as usize;
            let pos = 32 + at.index(len - 32);
            let mut bytes = std::fs::read(seg).unwrap();
            bytes[pos] ^= x;
            std::fs::write(seg, bytes).unwrap();
        }
        let opts = |backend| ReadOptions {
            backend,
            block_size: block_kib << 12,
            queue_depth: 2,
            ..ReadOptions::default()
        };
        let shown = |r: Result<Vec<Record>, Error>| r.map_err(|e| e.to_string());
        let want = shown(read_all(&FileStorage, &dir, 0, from, opts(Backend::Std)));
        let got = shown(read_all(&FileStorage, &dir, 0, from, opts(Backend::Uring)));
        let ahead = shown(read_all(&FileStorage, &dir, 0, from, opts(Backend::ReadAhead)));
        std::fs::remove_dir_all(&dir).unwrap();
        if damage.is_none() {
            prop_assert_eq!(want.as_ref().map(Vec::len), Ok(sizes.len() - from as usize));
        }
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(ahead, want);
    }
}

#[derive(Debug, Clone)]
enum DurOp {
    Append(Vec<(u8, usize)>),
    Sync,
    Read,
    Crash(Crash),
}

fn dur_op() -> impl Strategy<Value = DurOp> {
    prop_oneof![
        4 => proptest::collection::vec((0u8..6, 0usize..120), 1..6).prop_map(DurOp::Append),
        2 => Just(DurOp::Sync),
        3 => Just(DurOp::Read),
        1 => prop_oneof![
            Just(Crash::DropUnsynced),
            (1usize..200).prop_map(Crash::Tear),
            (0usize..100, 1usize..300, any::<bool>())
                .prop_map(|(kept, unwritten, garbage)| Crash::Unwritten { kept, unwritten, garbage }),
        ]
        .prop_map(DurOp::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Issue 25, finding 2: readers only ever see durable records. Under a policy that syncs
    /// (here `Interval`, with the syncs made explicit), a reader returns exactly the records
    /// synced so far; after any crash, every record a reader ever returned is still in the log
    /// with the same payload, and the writer never gives its number to another record (so a
    /// consumer's checkpoint can never pass a record that a crash replaces).
    #[test]
    fn readers_only_ever_see_durable_records(ops in proptest::collection::vec(dur_op(), 1..40)) {
        let storage = MemStorage::new();
        let dir = Path::new(DIR);
        let cfg = LogConfig {
            partitions: PARTS,
            segment_bytes: 300,
            durability: Durability::Interval(Duration::from_hours(1)),
        };
        let mut writer = Some(LogWriter::open_with(storage.clone(), dir, cfg).unwrap());
        // Per partition: every record written since the last crash, how many are synced, and
        // every record any reader has returned.
        let mut written: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        let mut synced: BTreeMap<u32, usize> = BTreeMap::new();
        let mut seen: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        let mut counter = 0u64;
        for op in ops {
            match op {
                DurOp::Append(batch) => {
                    let items: Vec<(String, Vec<u8>)> = batch.iter().map(|&(k, len)| {
                        counter += 1;
                        (format!("key-{k}"), payload(k, counter, len))
                    }).collect();
                    let refs: Vec<(&str, &str, &[u8])> = items.iter().map(|(k, p)| ("bucket", k.as_str(), p.as_slice())).collect();
                    let positions = writer.as_ref().unwrap().append_batch(&refs).unwrap();
                    for ((_, p), pos) in items.iter().zip(&positions) {
                        written.entry(pos.partition).or_default().push(p.clone());
                    }
                }
                DurOp::Sync => {
                    writer.as_ref().unwrap().sync().unwrap();
                    for (p, recs) in &written {
                        synced.insert(*p, recs.len());
                    }
                }
                DurOp::Read => {
                    for p in 0..PARTS {
                        let got = read_all(&storage, dir, p, 0, std_opts()).unwrap();
                        let durable = synced.get(&p).copied().unwrap_or(0);
                        prop_assert_eq!(got.len(), durable, "partition {}: a reader sees exactly the durable records", p);
                        let recs = written.get(&p).cloned().unwrap_or_default();
                        for r in &got {
                            prop_assert_eq!(&r.payload[..], &recs[r.seq as usize][..]);
                        }
                        let s = seen.entry(p).or_default();
                        for r in got.iter().skip(s.len()) {
                            s.push(r.payload.to_vec());
                        }
                    }
                }
                DurOp::Crash(how) => {
                    // The process dies: no sync on the way out (a failing sync stands for it).
                    storage.fail_syncs(true);
                    drop(writer.take());
                    storage.crash(how);
                    storage.fail_syncs(false);
                    writer = Some(LogWriter::open_with(storage.clone(), dir, cfg).unwrap());
                    let next = writer.as_ref().unwrap().next_seqs();
                    for p in 0..PARTS {
                        let got = read_all(&storage, dir, p, 0, std_opts()).unwrap();
                        let s = seen.get(&p).cloned().unwrap_or_default();
                        prop_assert!(next[p as usize] >= s.len() as u64, "partition {}: a seen number would be reused", p);
                        prop_assert!(got.len() >= s.len(), "partition {}: a record a reader saw is gone", p);
                        for (i, want) in s.iter().enumerate() {
                            prop_assert_eq!(&got[i].payload[..], &want[..], "partition {} seq {}", p, i);
                        }
                        let n = got.len();
                        let w = written.entry(p).or_default();
                        w.truncate(n);
                        synced.insert(p, n);
                    }
                }
            }
        }
    }
}

#[test]
fn a_reader_in_another_process_sees_records_once_they_are_durable() {
    let dir = temp_dir("durable-visible");
    let cfg = LogConfig {
        partitions: 1,
        segment_bytes: 1 << 20,
        durability: Durability::Interval(Duration::from_hours(1)),
    };
    let w = LogWriter::open(&dir, cfg).unwrap();
    let mut r = LogReader::open(FileStorage, &dir, 0, 0, std_opts());
    let mut batch = RecordBatch::new();
    for i in 0..5 {
        w.append("b", "k", &payload(0, i, 50)).unwrap();
    }
    assert_eq!(r.read_records(100, &mut batch).unwrap(), 0, "written, not durable: not readable");
    w.sync().unwrap();
    assert_eq!(r.read_records(100, &mut batch).unwrap(), 5);
    // Every batch is durable when its append returns under the default policy.
    drop(w);
    let cfg = LogConfig { durability: Durability::EveryBatch, ..cfg };
    let w = LogWriter::open(&dir, cfg).unwrap();
    w.append("b", "k", b"at once").unwrap();
    batch.clear();
    assert_eq!(r.read_records(100, &mut batch).unwrap(), 1);
    // A notified reader in the writer's process is woken by durability, not by the write.
    drop(w);
    let cfg = LogConfig { durability: Durability::Interval(Duration::from_hours(1)), ..cfg };
    let w = LogWriter::open(&dir, cfg).unwrap();
    let mut n = LogReader::open(FileStorage, &dir, 0, 6, std_opts()).with_notifier(w.notifier());
    w.append("b", "k", b"notified").unwrap();
    batch.clear();
    assert_eq!(n.wait_records(100, &mut batch, Duration::from_millis(30)).unwrap(), 0);
    let syncer = std::thread::spawn({
        let w = Arc::new(w);
        move || {
            std::thread::sleep(Duration::from_millis(20));
            w.sync().unwrap();
        }
    });
    assert_eq!(n.wait_records(100, &mut batch, Duration::from_secs(5)).unwrap(), 1);
    syncer.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn records_the_log_made_durable_are_never_lost_silently() {
    let dir = temp_dir("durable-lost");
    let cfg =
        LogConfig { partitions: 1, segment_bytes: 1 << 20, durability: Durability::EveryBatch };
    let w = LogWriter::open(&dir, cfg).unwrap();
    for i in 0..10 {
        w.append("b", "k", &payload(0, i, 40)).unwrap();
    }
    drop(w);
    // Records 8 and 9 were durable; a disk that loses them (or an operator's cut) and half a
    // record of garbage where they were.
    let seg = dir.join("p00000").join("00000000000000000000.seg");
    let frame = 16 + 40u64;
    let cut = 32 + 8 * frame;
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
    overwrite(&seg, cut, 20, |i| i as u8);
    let seen = inspect(&FileStorage, &dir).unwrap();
    assert_eq!((seen.records, seen.lost_records, seen.torn_tail_bytes), (8, 2, 20));
    save_checkpoint(&FileStorage, &dir, "ahead", &Checkpoint { next: [(0, 10)].into() }).unwrap();
    let e = LogWriter::open(&dir, cfg).expect_err("the writer refuses to reuse their numbers");
    assert!(matches!(e, Error::Lost { partition: 0, durable: 10, end: 8 }), "{e}");
    // The writer truncated the torn tail before refusing; repair says what is lost.
    let found = repair(&dir, false).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].lost, found[0].next_seq, found[0].records_after), (2, 8, 0));
    assert_eq!(found[0].checkpoints_past, vec![("ahead".to_owned(), 10)]);
    assert!(LogWriter::open(&dir, cfg).is_err(), "a dry run changes nothing");
    repair(&dir, true).unwrap();
    assert_eq!(load_checkpoint(&FileStorage, &dir, "ahead").unwrap().unwrap().next[&0], 8);
    assert_eq!(inspect(&FileStorage, &dir).unwrap().lost_records, 0);
    let w = LogWriter::open(&dir, cfg).unwrap();
    assert_eq!(w.append("b", "k", b"after the repair").unwrap().seq, 8);
    drop(w);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_counts_the_records_a_torn_tail_had_begun() {
    let dir = temp_dir("torn-count");
    let (_, seg) = one_segment(&FileStorage, &dir, 6, 30);
    // The last three records' writes never completed: their headers are there, the ends of
    // their payloads are not.
    let frame = 16 + 30u64;
    for r in 3..6u64 {
        overwrite(&seg, 32 + (r + 1) * frame - 10, 10, |_| 0);
    }
    let seen = inspect(&FileStorage, &dir).unwrap();
    assert_eq!((seen.records, seen.torn_tail_records), (3, 3));
    std::fs::remove_dir_all(&dir).unwrap();
}
