//! Log read + decode from the page cache: the `pread` and `io_uring` readers beside a plain
//! large-block `pread` of the same segment files (the baseline), in records per second.
//!
//! Ratios to report: reader / plain read ≥ 0.8; `io_uring` / `pread` reader ≥ 0.9.
//!
//! Appends with group commit and an fsync every 10 ms (the policy), in batches of 64,
//! beside the same frames written by plain `write_all` calls with a thread calling
//! `fdatasync` every 10 ms (the baseline: what the disk and the kernel allow).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    for (name, backend) in [
        ("reader_pread", Backend::Std),
        ("reader_io_uring", Backend::Uring),
        ("reader_pread_read_ahead", Backend::ReadAhead),
    ] {
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

/// Records per timed append run (about 80 MB: large enough that the periodic fsyncs and the
/// page cache's writeback are part of what is measured).
const APPEND_RECORDS: usize = 400_000;
const APPEND_BATCH: usize = 64;

/// Keys as a storage server hands them over: distinct, under a few prefixes.
fn append_keys() -> Vec<String> {
    (0..APPEND_RECORDS).map(|i| format!("tenant-{:02}/2026/12/{:08}.bin", i % 50, i)).collect()
}

fn append(c: &mut Criterion) {
    let keys = append_keys();
    let payload = vec![0x42u8; PAYLOAD];
    let root = std::env::temp_dir().join(format!("s3repl-bench-append-{}", std::process::id()));
    let mut g = c.benchmark_group("log_append_200B");
    g.throughput(Throughput::Elements(APPEND_RECORDS as u64));
    g.sample_size(10);
    g.bench_function("plain_write_fdatasync_10ms", |b| {
        // The same frames (16-byte header + payload), pre-encoded: the baseline spends nothing
        // on framing, checksums or partitioning.
        let mut frame = vec![0u8; 16];
        frame.extend_from_slice(&payload);
        let chunk: Vec<u8> =
            frame.iter().copied().cycle().take(frame.len() * APPEND_BATCH).collect();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_dir_all(&root);
                std::fs::create_dir_all(&root).unwrap();
                let path = root.join("plain");
                let mut file = std::fs::File::create(&path).unwrap();
                let syncer = file.try_clone().unwrap();
                let stop = Arc::new(AtomicBool::new(false));
                let stopped = Arc::clone(&stop);
                let t0 = Instant::now();
                let flusher = std::thread::spawn(move || {
                    while !stopped.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        syncer.sync_data().unwrap();
                    }
                });
                for _ in 0..APPEND_RECORDS / APPEND_BATCH {
                    std::io::Write::write_all(&mut file, &chunk).unwrap();
                }
                total += t0.elapsed();
                stop.store(true, Ordering::Relaxed);
                flusher.join().unwrap();
            }
            let _ = std::fs::remove_dir_all(&root);
            total
        });
    });
    for partitions in [1u32, 8] {
        g.bench_function(format!("writer_interval_10ms_{partitions}_partitions"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let _ = std::fs::remove_dir_all(&root);
                    let cfg = LogConfig {
                        partitions,
                        durability: Durability::Interval(Duration::from_millis(10)),
                        ..LogConfig::default()
                    };
                    let w = LogWriter::open(&root, cfg).unwrap();
                    let t0 = Instant::now();
                    for keys in keys.chunks(APPEND_BATCH) {
                        let batch: Vec<(&str, &str, &[u8])> = keys
                            .iter()
                            .map(|k| ("source", k.as_str(), payload.as_slice()))
                            .collect();
                        w.append_batch(&batch).unwrap();
                    }
                    total += t0.elapsed();
                    drop(w);
                }
                let _ = std::fs::remove_dir_all(&root);
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, read, append);
criterion_main!(benches);
