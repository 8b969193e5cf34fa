//! Fuzz segment decoding and recovery: arbitrary bytes after a valid segment header, as the
//! last segment of a partition. Inspect, read and reopen must never panic; after a reopen
//! (which truncates a torn tail) inspect finds no torn tail, and the reader returns the records
//! inspect counted, the same through `read_batch` and `read_records`; a reader looking again at
//! the end of a log inspect finds healthy never reports damage.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use s3repl_io::log::{
    Backend, LogConfig, LogReader, LogWriter, MemStorage, ReadOptions, RecordBatch, SegmentHeader,
    Storage, StorageFile, inspect,
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
