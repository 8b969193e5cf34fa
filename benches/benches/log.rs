//! Log read + decode from the page cache: the `pread` and `io_uring` readers beside a plain
//! large-block `pread` of the same segment files (the baseline), in records per second.
//!
//! Ratios to report: reader / plain read ≥ 0.8; `io_uring` / `pread` reader ≥ 0.9.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use s3repl_io::log::{
    Backend, Durability, FileStorage, LogConfig, LogReader, LogWriter, ReadOptions, RecordBatch,
};

const RECORDS: u64 = 400_000;
const PAYLOAD: usize = 200 - 16; // 200-byte records including the frame header

fn prepare() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("s3repl-bench-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = LogConfig { partitions: 1, segment_bytes: 64 << 20, durability: Durability::None };
    let w = LogWriter::open(&dir, cfg).unwrap();
    let payload = vec![0x42u8; PAYLOAD];
    let batch: Vec<(&str, &str, &[u8])> =
        (0..1000).map(|_| ("b", "k", payload.as_slice())).collect();
    for _ in 0..RECORDS / 1000 {
        w.append_batch(&batch).unwrap();
    }
    w.sync().unwrap();
    dir
}

/// Reads the whole partition, checking every record arrived.
fn read_all(dir: &std::path::Path, opts: ReadOptions, out: &mut RecordBatch) -> u64 {
    let n = s3repl_benches::read_partition(dir, opts, out).unwrap();
    assert_eq!(n, RECORDS);
    n
}

fn read(c: &mut Criterion) {
    let dir = prepare();
    let files: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(dir.join("p00000")).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    let mut g = c.benchmark_group("log_read_200B");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(10);
    g.bench_function("plain_pread_1MiB", |b| {
        let mut buf = vec![0u8; 1 << 20];
        b.iter(|| {
            let mut total = 0u64;
            for f in &files {
                let file = std::fs::File::open(f).unwrap();
                let mut off = 0;
                loop {
                    let n = file.read_at(&mut buf, off).unwrap();
                    if n == 0 {
                        break;
                    }
                    off += n as u64;
                    total += n as u64;
                }
            }
            total
        });
    });
    for (name, backend) in [("reader_pread", Backend::Std), ("reader_io_uring", Backend::Uring)] {
        g.bench_function(name, |b| {
            let mut out = RecordBatch::new();
            b.iter(|| read_all(&dir, ReadOptions { backend, ..ReadOptions::default() }, &mut out));
        });
    }
    // Block size and read-ahead depth (the defaults are 256 KiB and 4): blocks that stay in L2
    // between the kernel's copy and the decode are checked faster.
    for (name, backend, block_size, queue_depth) in [
        ("reader_pread_1MiB", Backend::Std, 1 << 20, 1),
        ("reader_pread_128KiB", Backend::Std, 128 << 10, 1),
        ("reader_io_uring_1MiB_qd4", Backend::Uring, 1 << 20, 4),
        ("reader_io_uring_256KiB_qd8", Backend::Uring, 256 << 10, 8),
    ] {
        g.bench_function(name, |b| {
            let mut out = RecordBatch::new();
            let opts = ReadOptions { backend, block_size, queue_depth, ..ReadOptions::default() };
            b.iter(|| read_all(&dir, opts, &mut out));
        });
    }
    // The `Vec<Record>` form: one reference-counted `Bytes` per record.
    g.bench_function("reader_pread_vec", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            let mut r = LogReader::open(
                FileStorage,
                &dir,
                0,
                0,
                ReadOptions { backend: Backend::Std, ..ReadOptions::default() },
            );
            let mut n = 0;
            loop {
                out.clear();
                let got = r.read_batch(4096, &mut out).unwrap();
                if got == 0 {
                    break;
                }
                n += got;
            }
            assert_eq!(n as u64, RECORDS);
        });
    });
    g.finish();
    // Bypassing the page cache: where io_uring's queue depth should pay (reads in flight while
    // the device works), beside one-at-a-time O_DIRECT pread.
    let mut g = c.benchmark_group("log_read_200B_direct");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(10);
    for (name, backend, queue_depth) in [
        ("pread_direct", Backend::Std, 1),
        ("io_uring_direct_qd4", Backend::Uring, 4),
        ("io_uring_direct_qd16", Backend::Uring, 16),
    ] {
        g.bench_function(name, |b| {
            let mut out = RecordBatch::new();
            let opts = ReadOptions {
                backend,
                queue_depth,
                direct_io: true,
                block_size: 256 << 10,
                ..ReadOptions::default()
            };
            b.iter(|| read_all(&dir, opts, &mut out));
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, read);
criterion_main!(benches);
