//! Reads a freshly written log in a loop, for profilers and quick A/B runs:
//! `cargo run --release -p s3repl-benches --example log_profile -- RECORDS ROUNDS [CASE...]`.
//!
//! Each round reads the whole log once per case, cases alternating, so every case sees the
//! same machine conditions; it prints ns per record for each case (median of the rounds) and
//! its ratio to the plain large-block `pread` of the same files measured in the same rounds.
//! Cases: `plain[:BLOCK_KiB]` (the baseline is `plain`, 1 MiB reads), `rot[:BLOCK_KiB[:N]]`
//! (plain reads into N buffers in turn), `std[:BLOCK_KiB]`, `uring[:BLOCK_KiB[:DEPTH]]` (default: all three);
//! `ahead[:BLOCK_KiB[:DEPTH]]` (`pread` on a read-ahead thread, where no ring can be created);
//! `dstd` and `during` (same arguments) read with `O_DIRECT`, bypassing the page cache.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use s3repl_io::log::{Backend, Durability, LogConfig, LogWriter, ReadOptions, RecordBatch};

#[derive(Debug, Clone, Copy)]
enum Case {
    Plain(usize),
    /// Plain reads into `n` buffers in turn (how a reader's pool uses memory).
    Rotating(usize, usize),
    /// A reader: backend, block size, queue depth, `O_DIRECT`.
    Reader(Backend, usize, usize, bool),
}

fn parse(case: &str) -> Case {
    let mut parts = case.split(':');
    let name = parts.next().unwrap_or_default();
    let block = parts.next().map(|b| b.parse::<usize>().unwrap() << 10);
    let depth = parts.next().map_or(ReadOptions::default().queue_depth, |d| d.parse().unwrap());
    match name {
        "plain" => Case::Plain(block.unwrap_or(1 << 20)),
        "rot" => Case::Rotating(block.unwrap_or(256 << 10), depth),
        "std" | "dstd" => Case::Reader(Backend::Std, block.unwrap_or(256 << 10), 1, name == "dstd"),
        "uring" | "during" => {
            Case::Reader(Backend::Uring, block.unwrap_or(256 << 10), depth, name == "during")
        }
        "ahead" => Case::Reader(Backend::ReadAhead, block.unwrap_or(256 << 10), depth, false),
        other => panic!("unknown case {other}"),
    }
}

/// Plain reads of `files` into `bufs` in turn (allocated once, outside the timed rounds, as a
/// reader's pool is reused).
fn plain(files: &[PathBuf], bufs: &mut [Vec<u8>]) -> u64 {
    let buffers = bufs.len();
    let mut total = 0u64;
    let mut turn = 0;
    for f in files {
        let file = std::fs::File::open(f).unwrap();
        let mut off = 0;
        loop {
            turn = (turn + 1) % buffers;
            let n = file.read_at(&mut bufs[turn], off).unwrap();
            if n == 0 {
                break;
            }
            off += n as u64;
            total += n as u64;
        }
    }
    total
}

fn reader(dir: &Path, opts: ReadOptions, out: &mut RecordBatch) -> u64 {
    s3repl_benches::read_partition(dir, opts, out).unwrap()
}

/// CPU time of the whole process (every thread), in ns.
fn cpu_ns() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let records: u64 = args.first().map_or(400_000, |a| a.parse().unwrap());
    let rounds: usize = args.get(1).map_or(9, |a| a.parse().unwrap());
    let mut cases: Vec<(String, Case)> =
        args.iter().skip(2).map(|c| (c.clone(), parse(c))).collect();
    if cases.is_empty() {
        cases = ["plain", "std", "uring"].iter().map(|c| ((*c).to_owned(), parse(c))).collect();
    }
    if !cases.iter().any(|(n, _)| n == "plain") {
        cases.insert(0, ("plain".into(), Case::Plain(1 << 20)));
    }
    let dir = std::env::temp_dir().join(format!("s3repl-log-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let w = LogWriter::open(
        &dir,
        LogConfig { partitions: 1, segment_bytes: 64 << 20, durability: Durability::None },
    )
    .unwrap();
    let payload = vec![0x42u8; 184];
    let batch: Vec<(&str, &str, &[u8])> =
        (0..1000).map(|_| ("b", "k", payload.as_slice())).collect();
    for _ in 0..records / 1000 {
        w.append_batch(&batch).unwrap();
    }
    drop(w);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir.join("p00000")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut out = RecordBatch::new();
    let mut bufs: Vec<Vec<Vec<u8>>> = cases
        .iter()
        .map(|(_, c)| match *c {
            Case::Plain(block) => vec![vec![0u8; block]],
            Case::Rotating(block, n) => vec![vec![0u8; block]; n],
            Case::Reader(..) => Vec::new(),
        })
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    // Per case: (CPU time, wall time) summed over the measured rounds.
    let mut busy = vec![(0.0, 0.0); cases.len()];
    for round in 0..=rounds {
        for (i, (_, case)) in cases.iter().enumerate() {
            let (t, cpu) = (std::time::Instant::now(), cpu_ns());
            match *case {
                Case::Plain(_) | Case::Rotating(..) => {
                    assert!(plain(&files, &mut bufs[i]) > 0);
                }
                Case::Reader(backend, block_size, queue_depth, direct_io) => {
                    let opts = ReadOptions {
                        backend,
                        block_size,
                        queue_depth,
                        direct_io,
                        ..ReadOptions::default()
                    };
                    assert_eq!(reader(&dir, opts, &mut out), records / 1000 * 1000);
                }
            }
            // Round 0 warms the page cache and the allocator.
            if round > 0 {
                let wall = t.elapsed().as_nanos() as f64;
                times[i].push(wall / records as f64);
                busy[i].0 += cpu_ns() - cpu;
                busy[i].1 += wall;
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    let base = cases.iter().position(|(n, _)| n == "plain").unwrap();
    for (((name, _), m), (cpu, wall)) in cases.iter().zip(&medians).zip(&busy) {
        println!(
            "{name:>16}: {m:6.1} ns/record  {:6.1} M records/s  {:5.1} % of plain  {:4.2} CPUs busy",
            1e3 / m,
            100.0 * medians[base] / m,
            cpu / wall
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
