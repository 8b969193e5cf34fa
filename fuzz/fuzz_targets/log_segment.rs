//! Fuzz segment decoding and recovery: arbitrary bytes after a valid segment header, as the
//! last segment of a partition. Inspect, read and reopen must never panic; after a reopen
//! (which truncates a torn tail) inspect finds no torn tail, and the reader returns the records
//! inspect counted, the same through `read_batch` and `read_records`; a reader looking again at
//! the end of a log inspect finds healthy never reports damage. Damage inspect reports is what
//! `find_damage` reports, and after `truncate_damage` the writer opens with the records before it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use s3repl_io::Error;
use s3repl_io::log::{
    Backend, LogConfig, LogReader, LogWriter, MemStorage, ReadOptions, RecordBatch, SegmentHeader,
    Storage, StorageFile, find_damage, inspect, truncate_damage,
};

fuzz_target!(|data: &[u8]| {
    let storage = MemStorage::new();
    let dir = Path::new("/log");
    let config = LogConfig { partitions: 1, ..LogConfig::default() };
    drop(LogWriter::open_with(storage.clone(), dir, config).unwrap());
    let seg = dir.join("p00000").join("00000000000000000000.seg");
    let f = storage.open(&seg, false).unwrap();
    let mut body = SegmentHeader { partition: 0, first_seq: 0 }.encode().to_vec();
    body.extend_from_slice(data);
    f.write_at(0, &body).unwrap();
    f.sync().unwrap();
    let before = inspect(&storage, dir);
    let opts = ReadOptions { backend: Backend::Std, block_size: 64, ..ReadOptions::default() };
    // Every record a reader returns, looking three times at the end of the log (a bad frame
    // there may be one being written: never damage to a reader of a log inspect finds healthy).
    let read_thrice = || {
        let mut r = LogReader::open(storage.clone(), dir, 0, 0, opts);
        let mut out = Vec::new();
        for _ in 0..3 {
            while r.read_batch(16, &mut out).unwrap() > 0 {}
        }
        out
    };
    if let Ok(b) = &before {
        assert_eq!(read_thrice().len() as u64, b.records);
        assert_eq!(find_damage(&storage, dir).unwrap(), vec![]);
    }
    if let Err(Error::Corrupt { offset, .. }) = &before
        && *offset > 0
    {
        // One segment: the damage is in the last one, so a repair can truncate it.
        let damage = find_damage(&storage, dir).unwrap();
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].offset, *offset);
        // A reader returns the records before the damage.
        let mut r = LogReader::open(storage.clone(), dir, 0, 0, opts);
        let mut out = Vec::new();
        let (mut reported, mut idle) = (false, 0);
        while idle < 3 {
            match r.read_batch(16, &mut out) {
                Ok(0) => idle += 1,
                Ok(_) => idle = 0,
                Err(Error::Corrupt { offset: at, .. }) => {
                    assert_eq!(at, *offset);
                    reported = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        // A bad frame is reported once a valid record follows it; an incomplete one may be a
        // frame being written, so a reader waits there (the writer refuses to open over it).
        let incomplete = damage[0].reason.starts_with("incomplete record");
        assert!(reported != incomplete, "{before:?}: reported {reported}, {} records", out.len());
        let kept = out.len() as u64;
        assert_eq!(kept, damage[0].next_seq);
        truncate_damage(&storage, dir, &damage[0]).unwrap();
        let after = inspect(&storage, dir).unwrap();
        assert_eq!((after.records, after.torn_tail_bytes), (kept, 0));
        assert!(LogWriter::open_with(storage.clone(), dir, config).is_ok());
        return;
    }
    if LogWriter::open_with(storage.clone(), dir, config).is_ok() {
        let after = inspect(&storage, dir).unwrap();
        assert_eq!(after.torn_tail_bytes, 0);
        if let Ok(b) = before {
            assert_eq!(b.records, after.records);
        }
        let out = read_thrice();
        assert_eq!(out.len() as u64, after.records);
        // The batch form (three-frames-at-once fast path) returns the same records.
        let mut r = LogReader::open(storage.clone(), dir, 0, 0, opts);
        let mut batch = RecordBatch::new();
        while r.read_records(16, &mut batch).unwrap() > 0 {}
        assert!(
            batch
                .iter()
                .map(|v| (v.seq, v.payload))
                .eq(out.iter().map(|r| (r.seq, &r.payload[..])))
        );
    }
});
