//! Many small source-object reads in flight (4 KiB versions stored one file each, as
//! `LocalVersionStore` keeps them), 64 reads in flight from tokio tasks: `LocalVersionStore::get`
//! as it reads by default (the `io_uring` reader thread) and with `pread` on tokio's blocking
//! pool; plain `std::fs::read` on one thread per core (the portable ceiling); and the raw ring
//! (`s3repl_io::files::UringFiles`: open, read and close linked per file) at several depths.
//! From the page cache and, evicted with `posix_fadvise(DONTNEED)` before each pass, from the
//! disk. Files per second.
//!
//! Ratios to report: `engine_io_uring` / `engine_pread_blocking_pool`, per case.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use s3repl::pipeline::{LocalVersionStore, ObjectSource};
use s3repl_io::files::UringFiles;

const SIZE: usize = 4096;

fn prepare(n: usize) -> (PathBuf, LocalVersionStore, Vec<(String, String)>, Vec<PathBuf>) {
    let root = std::env::temp_dir().join(format!("s3repl-bench-src-{n}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let store = LocalVersionStore::new(&root).durable(false);
    let data = vec![0x42u8; SIZE];
    let mut keys = Vec::with_capacity(n);
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let (key, version) =
            (format!("tenant-{}/2026/12/01/object-{i}.bin", i % 7), format!("v{i}"));
        store.put("source-bucket", &key, &version, &data).unwrap();
        paths.push(store.path("source-bucket", &key, &version).unwrap());
        keys.push((key, version));
    }
    (root, store, keys, paths)
}

/// Drops the files' pages from the page cache, so the next reads go to the disk.
fn evict(paths: &[PathBuf]) {
    for p in paths {
        let f = std::fs::File::open(p).unwrap();
        // SAFETY: a valid descriptor; advice only.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

fn engine_path(
    rt: &tokio::runtime::Runtime,
    store: &LocalVersionStore,
    keys: &Arc<Vec<(String, String)>>,
) {
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let (store, keys) = (store.clone(), keys.clone());
                tokio::spawn(async move {
                    for (key, version) in keys.iter().skip(t).step_by(64) {
                        let b = store.get("source-bucket", key, version).await.unwrap();
                        assert_eq!(b.len(), SIZE);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn std_threads(paths: &[PathBuf]) {
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for p in paths.iter().skip(t).step_by(threads) {
                    assert_eq!(std::fs::read(p).unwrap().len(), SIZE);
                }
            });
        }
    });
}

fn uring(ring: &mut UringFiles, paths: &[&Path]) {
    for r in ring.read_all(paths, SIZE + 1) {
        assert_eq!(r.unwrap().unwrap().len(), SIZE);
    }
}

fn reads(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    for (group, n, cold) in
        [("source_reads_4KiB_cached", 20_000, false), ("source_reads_4KiB_disk", 2_000, true)]
    {
        let (root, store, keys, paths) = prepare(n);
        let keys = Arc::new(keys);
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let setup = || {
            if cold {
                evict(&paths);
            }
        };
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(n as u64));
        g.sample_size(10);
        let pread = store.clone().without_io_uring();
        g.bench_function("engine_pread_blocking_pool", |b| {
            b.iter_batched(setup, |()| engine_path(&rt, &pread, &keys), BatchSize::PerIteration);
        });
        g.bench_function("engine_io_uring", |b| {
            b.iter_batched(setup, |()| engine_path(&rt, &store, &keys), BatchSize::PerIteration);
        });
        g.bench_function("std_threads", |b| {
            b.iter_batched(setup, |()| std_threads(&paths), BatchSize::PerIteration);
        });
        for depth in [8, 32, 128] {
            let Ok(mut ring) = UringFiles::new(depth) else {
                eprintln!("io_uring with registered file slots is unavailable here");
                break;
            };
            g.bench_function(format!("io_uring_depth_{depth}"), |b| {
                b.iter_batched(setup, |()| uring(&mut ring, &refs), BatchSize::PerIteration);
            });
        }
        g.finish();
        let _ = std::fs::remove_dir_all(&root);
    }
}

criterion_group!(benches, reads);
criterion_main!(benches);
