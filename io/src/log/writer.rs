//! The append side: what a storage server calls when a version commits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::durable::Marks;
use super::format::{
    MAX_RECORD_LEN, SEGMENT_HEADER_LEN, SegmentHeader, encode_frame, partition_for, segment_name,
};
use super::segment::{check_header, list_segments, partition_path, scan, valid_frame_after};
use super::storage::{FileStorage, Storage, StorageFile};
use crate::error::{Error, io_err};

/// When appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every append call returns after an fsync covering it; concurrent callers share one
    /// fsync (group commit). The default.
    EveryBatch,
    /// Appends return once written; a background thread fsyncs at this interval, so up to one
    /// interval of acknowledged appends can be lost in a power failure.
    Interval(Duration),
    /// Never fsync (benchmarks only). Nothing is durable, so readers see records as soon as
    /// they are written (under the other policies, only once they are durable).
    None,
}

/// How a log is laid out and made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Number of partitions (fixed when the log is created; a key always maps to one).
    pub partitions: u32,
    /// Segment size at which the writer starts a new segment (a batch may overshoot it).
    pub segment_bytes: u64,
    /// Durability policy.
    pub durability: Durability,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { partitions: 8, segment_bytes: 128 << 20, durability: Durability::EveryBatch }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// Its sequence number in the partition.
    pub seq: u64,
}

/// Wakes tailing readers in the same process when records become readable (durable, or under
/// [`Durability::None`] written), and tells them how far they may read.
///
/// It keeps one generation for the whole log and one per partition, each with its own
/// condition variable: a reader of one partition sleeps through appends to the others (with
/// eight partitions, a single shared generation woke eight readers, seven for nothing, on
/// every append).
#[derive(Debug, Default)]
pub struct Notifier {
    whole: Generation,
    partitions: Vec<Generation>,
    /// Per partition, the durable mark: records below it may be read.
    marks: Vec<AtomicU64>,
}

/// A generation (the whole log's, or one partition's) and the condition variable its readers
/// wait on.
#[derive(Debug, Default)]
struct Generation {
    value: Mutex<u64>,
    changed: Condvar,
}

impl Generation {
    fn get(&self) -> u64 {
        *self.value.lock()
    }

    fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let mut g = self.value.lock();
        self.changed.wait_while_for(&mut g, |g| *g == seen, timeout);
        *g
    }

    fn bump(&self) {
        *self.value.lock() += 1;
        self.changed.notify_all();
    }
}

impl Notifier {
    /// A notifier with a generation for each of `partitions` partitions.
    fn with_partitions(partitions: u32, marks: &[u64]) -> Self {
        Notifier {
            partitions: (0..partitions).map(|_| Generation::default()).collect(),
            marks: marks.iter().map(|&m| AtomicU64::new(m)).collect(),
            ..Notifier::default()
        }
    }

    /// The durable mark of `partition`: the records below it are durable (or, under
    /// [`Durability::None`], written) and may be read. `None` for a partition it does not know.
    pub fn durable_mark(&self, partition: u32) -> Option<u64> {
        self.marks.get(partition as usize).map(|m| m.load(Ordering::Acquire))
    }

    /// Records new marks and wakes the readers of the partitions they moved.
    fn advance(&self, marks: &[u64]) {
        let mut moved = false;
        for ((m, &new), generation) in self.marks.iter().zip(marks).zip(&self.partitions) {
            if m.fetch_max(new, Ordering::AcqRel) < new {
                generation.bump();
                moved = true;
            }
        }
        if moved {
            self.whole.bump();
        }
    }

    /// The current generation of the whole log (bumped whenever records become readable).
    pub fn generation(&self) -> u64 {
        self.whole.get()
    }

    /// Waits until the whole log's generation differs from `seen` or `timeout` passes;
    /// returns it.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        self.whole.wait_past(seen, timeout)
    }

    /// `partition`'s generation, or the whole log's for a partition this notifier does not
    /// know.
    fn of(&self, partition: u32) -> &Generation {
        self.partitions.get(partition as usize).unwrap_or(&self.whole)
    }

    /// The current generation of `partition` (bumped whenever records of it become readable); the
    /// whole log's for a partition this notifier does not know.
    pub fn partition_generation(&self, partition: u32) -> u64 {
        self.of(partition).get()
    }

    /// Waits until `partition`'s generation differs from `seen` or `timeout` passes; returns
    /// it (the whole log's, for a partition this notifier does not know).
    pub fn wait_partition_past(&self, partition: u32, seen: u64, timeout: Duration) -> u64 {
        self.of(partition).wait_past(seen, timeout)
    }
}

#[derive(Debug)]
struct Part<F> {
    dir: PathBuf,
    file: Arc<F>,
    len: u64,
    next_seq: u64,
    dirty: bool,
    /// Frames encoded for the current call, and how many.
    scratch: Vec<u8>,
    scratch_frames: u64,
}

#[derive(Debug)]
struct Inner<F> {
    parts: Vec<Part<F>>,
    /// Tickets: one per append call that wrote something.
    written: u64,
}

#[derive(Debug, Default)]
struct SyncState {
    synced: u64,
    leader: bool,
}

#[derive(Debug)]
struct Shared<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: LogConfig,
    inner: Mutex<Inner<S::File>>,
    sync: Mutex<SyncState>,
    synced_cv: Condvar,
    poisoned: AtomicBool,
    notifier: Arc<Notifier>,
    /// The durable marks (`log.durable`), published after each fsync.
    marks: Marks<S::File>,
}

/// The log writer. Cheap to share (`&self` methods, internally synchronized).
#[derive(Debug)]
pub struct LogWriter<S: Storage = FileStorage> {
    shared: Arc<Shared<S>>,
    flusher: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    /// The exclusive lock on `writer.lock` (real file system only): one writer per log, across
    /// processes, for as long as this writer lives.
    lock: Option<std::fs::File>,
}

const META: &str = "log.meta";
/// The file a writer holds an exclusive lock on.
const WRITER_LOCK: &str = "writer.lock";

fn meta_text(partitions: u32) -> String {
    format!("s3repl-log 1\npartitions {partitions}\n")
}

/// Reads the partition count recorded in a log directory.
pub fn read_partitions<S: Storage>(storage: &S, dir: &Path) -> Result<Option<u32>, Error> {
    let path = dir.join(META);
    let file = match storage.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let mut buf = vec![0u8; 256];
    let n = file.read_at(0, &mut buf).map_err(io_err("read", &path))?;
    let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
    let layout = |reason: String| Error::Layout { path: path.clone(), reason };
    let mut lines = text.lines();
    if lines.next() != Some("s3repl-log 1") {
        return Err(layout(format!("unknown log format {:?}", text.lines().next().unwrap_or(""))));
    }
    lines
        .next()
        .and_then(|l| l.strip_prefix("partitions "))
        .and_then(|n| n.parse().ok())
        .filter(|&n: &u32| n > 0)
        .map(Some)
        .ok_or_else(|| layout("missing partition count".into()))
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic<S: Storage>(storage: &S, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    // `<name>.tmp` next to `<name>` (not `with_extension`: `a.ckpt` and `a.horizon` would
    // share `a.tmp`, and two concurrent atomic writes would rename each other's file).
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let f = storage.open(&tmp, true).map_err(io_err("create", &tmp))?;
    f.set_len(0).map_err(io_err("truncate", &tmp))?;
    f.write_at(0, bytes).map_err(io_err("write", &tmp))?;
    f.sync().map_err(io_err("fsync", &tmp))?;
    storage.rename(&tmp, path).map_err(io_err("rename", path))?;
    storage.sync_dir(dir).map_err(io_err("fsync", dir))
}

/// Appends `line` to a journal `file` opened for appending (fsynced when `sync`) whole or
/// not at all: when the write or its fsync fails part way (a full disk), the file is cut back
/// to its length before, so the next append does not land behind half a line that the
/// journal's reader would take for damage.
pub fn append_whole(file: &mut std::fs::File, line: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let before = file.metadata()?.len();
    let written = file.write_all(line).and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    if let Err(e) = written {
        // Shrinking needs no space, so it works on the full disk that refused the write.
        file.set_len(before).map_err(|cut| {
            std::io::Error::new(cut.kind(), format!("{e}; cutting the torn line off failed: {cut}"))
        })?;
        return Err(e);
    }
    Ok(())
}

/// Creates segment `first_seq` holding its header, durably. The file appears under its name
/// whole ([`write_atomic`]): a reader listing the directory never finds a segment shorter
/// than its header, which it would have to take for damage.
fn new_segment<S: Storage>(
    storage: &S,
    pdir: &Path,
    partition: u32,
    first_seq: u64,
) -> Result<S::File, Error> {
    let path = pdir.join(segment_name(first_seq));
    write_atomic(storage, &path, &SegmentHeader { partition, first_seq }.encode())?;
    storage.open(&path, false).map_err(io_err("open", &path))
}

/// Whether a crash cut the creation of a segment short, before its header was durable (so
/// before any record was appended to it): the file is shorter than a header, or its header
/// reads back as zeros (its blocks were never written) and no valid record follows.
fn never_written<F: StorageFile>(file: &F, first_seq: u64) -> std::io::Result<bool> {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    let n = file.read_at(0, &mut h)?;
    if n < SEGMENT_HEADER_LEN {
        return Ok(true);
    }
    Ok(h.iter().all(|&b| b == 0)
        && valid_frame_after(file, SEGMENT_HEADER_LEN as u64 - 1, first_seq)?.is_none())
}

/// Opens a partition for appending: recovers the last segment, truncating a torn tail.
fn recover_partition<S: Storage>(
    storage: &S,
    dir: &Path,
    partition: u32,
) -> Result<Part<S::File>, Error> {
    let pdir = partition_path(dir, partition);
    storage.create_dir_all(&pdir).map_err(io_err("mkdir", &pdir))?;
    let segments = list_segments(storage, &pdir)?;
    let Some((&last, earlier)) = segments.split_last() else {
        let file = new_segment(storage, &pdir, partition, 0)?;
        return Ok(Part {
            dir: pdir,
            file: Arc::new(file),
            len: SEGMENT_HEADER_LEN as u64,
            next_seq: 0,
            dirty: false,
            scratch: Vec::new(),
            scratch_frames: 0,
        });
    };
    for &first in earlier {
        let path = pdir.join(segment_name(first));
        let f = storage.open(&path, false).map_err(io_err("open", &path))?;
        check_header(&f, &path, partition, first)?;
    }
    let path = pdir.join(segment_name(last));
    let file = Arc::new(storage.open(&path, false).map_err(io_err("open", &path))?);
    if never_written(file.as_ref(), last).map_err(io_err("read", &path))? {
        // A crash while creating the segment: it holds no record yet; write its header again.
        let f = new_segment(storage, &pdir, partition, last)?;
        return Ok(Part {
            dir: pdir,
            file: Arc::new(f),
            len: SEGMENT_HEADER_LEN as u64,
            next_seq: last,
            dirty: false,
            scratch: Vec::new(),
            scratch_frames: 0,
        });
    }
    let end = scan(&file, &path, partition, last, |_, _| {})?;
    if end.torn > 0 {
        tracing::warn!(partition, segment = %path.display(), offset = end.valid_len, bytes = end.torn, "Truncating a torn tail left by a crash.");
        file.set_len(end.valid_len).map_err(io_err("truncate", &path))?;
        file.sync().map_err(io_err("fsync", &path))?;
    }
    Ok(Part {
        dir: pdir,
        file,
        len: end.valid_len,
        next_seq: end.next_seq,
        dirty: false,
        scratch: Vec::new(),
        scratch_frames: 0,
    })
}

/// Makes every partition's recovered records durable (a process that died without the machine
/// left them in the page cache, readable but not yet synced), checks that no record the log had
/// made durable is gone, and writes the durable marks. `written`: the marks will follow what is
/// written ([`Durability::None`]).
fn open_marks<S: Storage>(
    storage: &S,
    dir: &Path,
    parts: &[Part<S::File>],
    written: bool,
) -> Result<Marks<S::File>, Error> {
    for part in parts {
        part.file.sync().map_err(io_err("fsync", &part.dir))?;
    }
    let partitions = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    let stored = super::durable::read_marks(storage, dir, partitions)?;
    for (partition, part) in (0u32..).zip(parts) {
        let lost = super::inspect::lost(stored.as_ref(), partition, part.next_seq);
        if lost > 0 {
            let end = part.next_seq;
            return Err(Error::Lost { partition, durable: end + lost, end });
        }
    }
    let next: Vec<u64> = parts.iter().map(|p| p.next_seq).collect();
    Marks::create(storage, dir, &next, written)
}

/// Takes the exclusive writer lock of the log in `dir` (held until the file is dropped), or
/// [`Error::Busy`] if a writer (or a repair) holds it.
pub(crate) fn lock_writer(dir: &Path) -> Result<std::fs::File, Error> {
    let path = dir.join(WRITER_LOCK);
    try_lock(&path)?.ok_or(Error::Busy { path })
}

/// An exclusive `flock` on `path` (created if missing), held until the file is dropped;
/// `None` when someone else holds it.
pub(crate) fn try_lock(path: &Path) -> Result<Option<std::fs::File>, Error> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err("lock", path)(e)),
    }
}

impl LogWriter<FileStorage> {
    /// Opens (creating if needed) the log in `dir` on the real file system.
    /// Only one writer may have a log open at a time, across processes: a second `open` fails
    /// with [`Error::Busy`] (before recovery touches anything) until the first is dropped.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
        let lock = lock_writer(dir)?;
        let mut w = Self::open_with(FileStorage, dir, config)?;
        w.lock = Some(lock);
        Ok(w)
    }
}

impl<S: Storage> LogWriter<S> {
    /// Opens (creating if needed) the log in `dir` through `storage`, recovering every
    /// partition: a torn tail in a partition's last segment is truncated; damage anywhere
    /// else is reported when read, never skipped.
    pub fn open_with(storage: S, dir: &Path, config: LogConfig) -> Result<Self, Error> {
        storage.create_dir_all(dir).map_err(io_err("mkdir", dir))?;
        match read_partitions(&storage, dir)? {
            Some(n) if n != config.partitions => {
                return Err(Error::Layout {
                    path: dir.to_owned(),
                    reason: format!("the log has {n} partitions, not {}", config.partitions),
                });
            }
            Some(_) => {}
            None => {
                write_atomic(&storage, &dir.join(META), meta_text(config.partitions).as_bytes())?;
            }
        }
        let parts = (0..config.partitions)
            .map(|p| recover_partition(&storage, dir, p))
            .collect::<Result<Vec<_>, _>>()?;
        let marks = open_marks(&storage, dir, &parts, config.durability == Durability::None)?;
        let next: Vec<u64> = parts.iter().map(|p| p.next_seq).collect();
        let shared = Arc::new(Shared {
            storage,
            dir: dir.to_owned(),
            config,
            inner: Mutex::new(Inner { parts, written: 0 }),
            sync: Mutex::new(SyncState::default()),
            synced_cv: Condvar::new(),
            poisoned: AtomicBool::new(false),
            notifier: Arc::new(Notifier::with_partitions(config.partitions, &next)),
            marks,
        });
        let flusher = match config.durability {
            Durability::Interval(every) => {
                let stop = Arc::new(AtomicBool::new(false));
                let (s, st) = (shared.clone(), stop.clone());
                let handle = std::thread::Builder::new()
                    .name("s3repl-log-flush".into())
                    .spawn(move || {
                        while !st.load(Ordering::Acquire) {
                            std::thread::park_timeout(every);
                            let target = s.inner.lock().written;
                            if s.sync_upto(target).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(io_err("spawn flusher", dir))?;
                Some((handle, stop))
            }
            Durability::EveryBatch | Durability::None => None,
        };
        Ok(LogWriter { shared, flusher, lock: None })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration.
    pub fn config(&self) -> LogConfig {
        self.shared.config
    }

    /// The partition a (bucket, key) maps to.
    pub fn partition_for(&self, bucket: &str, key: &str) -> u32 {
        partition_for(bucket, key, self.shared.config.partitions)
    }

    /// Wakes in-process tailing readers on every append.
    pub fn notifier(&self) -> Arc<Notifier> {
        self.shared.notifier.clone()
    }

    /// The next sequence number of each partition.
    pub fn next_seqs(&self) -> Vec<u64> {
        self.shared.inner.lock().parts.iter().map(|p| p.next_seq).collect()
    }

    /// Appends one record for an object version. Under [`Durability::EveryBatch`] the record is
    /// durable when this returns. On error the outcome is unknown (the record may or may not
    /// survive a restart); after an I/O error the writer is poisoned.
    pub fn append(&self, bucket: &str, key: &str, payload: &[u8]) -> Result<Position, Error> {
        let mut pos = self.append_batch(&[(bucket, key, payload)])?;
        pos.pop().ok_or(Error::Poisoned)
    }

    /// Appends records in order (records of one key keep their order), sharing one write per
    /// partition and one fsync.
    pub fn append_batch(&self, records: &[(&str, &str, &[u8])]) -> Result<Vec<Position>, Error> {
        let s = &self.shared;
        if let Some((_, _, p)) = records.iter().find(|(_, _, p)| p.len() > MAX_RECORD_LEN) {
            return Err(Error::TooLarge { len: p.len(), max: MAX_RECORD_LEN });
        }
        let ticket = {
            let mut inner = s.inner.lock();
            if s.poisoned.load(Ordering::Acquire) {
                return Err(Error::Poisoned);
            }
            let mut positions = Vec::with_capacity(records.len());
            for &(bucket, key, payload) in records {
                let partition = partition_for(bucket, key, s.config.partitions);
                let Some(part) = inner.parts.get_mut(partition as usize) else {
                    return Err(Error::Poisoned);
                };
                encode_frame(part.next_seq, payload, &mut part.scratch);
                part.scratch_frames += 1;
                positions.push(Position { partition, seq: part.next_seq });
                part.next_seq += 1;
            }
            for (partition, part) in inner.parts.iter_mut().enumerate() {
                if part.scratch.is_empty() {
                    continue;
                }
                let result = self.write_part(u32::try_from(partition).unwrap_or(u32::MAX), part);
                part.scratch.clear();
                part.scratch_frames = 0;
                if let Err(e) = result {
                    s.poisoned.store(true, Ordering::Release);
                    s.synced_cv.notify_all();
                    return Err(e);
                }
            }
            inner.written += 1;
            let ticket = inner.written;
            if s.config.durability == Durability::None {
                // Nothing becomes durable: readers follow what is written.
                let next: Vec<u64> = inner.parts.iter().map(|p| p.next_seq).collect();
                if let Err(e) = s.marks.publish(&next) {
                    s.poisoned.store(true, Ordering::Release);
                    return Err(e);
                }
                s.notifier.advance(&next);
            }
            drop(inner);
            (ticket, positions)
        };
        if s.config.durability == Durability::EveryBatch {
            s.sync_upto(ticket.0)?;
        }
        Ok(ticket.1)
    }

    /// Writes a partition's pending frames, starting a new segment first if the current one
    /// is full (the full one is synced before the new one exists, so only the last segment of
    /// a partition can ever have a torn tail).
    fn write_part(&self, partition: u32, part: &mut Part<S::File>) -> Result<(), Error> {
        let s = &self.shared;
        if part.len > SEGMENT_HEADER_LEN as u64
            && part.len + part.scratch.len() as u64 > s.config.segment_bytes
        {
            part.file.sync().map_err(io_err("fsync", &part.dir))?;
            let first = part.next_seq - part.scratch_frames;
            part.file = Arc::new(new_segment(&s.storage, &part.dir, partition, first)?);
            part.len = SEGMENT_HEADER_LEN as u64;
        }
        part.file.write_at(part.len, &part.scratch).map_err(io_err("write", &part.dir))?;
        part.len += part.scratch.len() as u64;
        part.dirty = true;
        Ok(())
    }

    /// Forces an fsync of everything written so far.
    pub fn sync(&self) -> Result<(), Error> {
        let target = self.shared.inner.lock().written;
        self.shared.sync_upto(target)
    }
}

impl<S: Storage> Shared<S> {
    /// Group commit: returns once an fsync that started after ticket `target` was written has
    /// completed. One caller (the leader) fsyncs every dirty file; the others wait for it.
    fn sync_upto(&self, target: u64) -> Result<(), Error> {
        let mut st = self.sync.lock();
        loop {
            if self.poisoned.load(Ordering::Acquire) {
                return Err(Error::Poisoned);
            }
            if st.synced >= target {
                return Ok(());
            }
            if st.leader {
                self.synced_cv.wait(&mut st);
                continue;
            }
            st.leader = true;
            drop(st);
            let (covered, files, next) = {
                let mut inner = self.inner.lock();
                let files: Vec<(Arc<S::File>, PathBuf)> = inner
                    .parts
                    .iter_mut()
                    .filter(|p| p.dirty)
                    .map(|p| {
                        p.dirty = false;
                        (p.file.clone(), p.dir.clone())
                    })
                    .collect();
                // Every record below these is written (frames are written under this lock as
                // their numbers are given), so durable once the files are synced.
                let next: Vec<u64> = inner.parts.iter().map(|p| p.next_seq).collect();
                (inner.written, files, next)
            };
            let result = files
                .iter()
                .try_for_each(|(f, d)| f.sync().map_err(io_err("fsync", d)))
                // Published by the leader, so in order; only after the fsync.
                .and_then(|()| {
                    if self.config.durability == Durability::None {
                        return Ok(());
                    }
                    self.marks.publish(&next)?;
                    self.notifier.advance(&next);
                    Ok(())
                });
            st = self.sync.lock();
            st.leader = false;
            match result {
                Ok(()) => st.synced = st.synced.max(covered),
                Err(e) => {
                    tracing::error!(error = %e, "Log fsync failed; the writer refuses further appends.");
                    self.poisoned.store(true, Ordering::Release);
                    self.synced_cv.notify_all();
                    return Err(e);
                }
            }
            self.synced_cv.notify_all();
        }
    }
}

impl<S: Storage> Drop for LogWriter<S> {
    fn drop(&mut self) {
        if let Some((handle, stop)) = self.flusher.take() {
            stop.store(true, Ordering::Release);
            handle.thread().unpark();
            let _ = handle.join();
        }
        if self.shared.config.durability != Durability::None {
            let _ = self.sync();
        }
    }
}
