//! Reads a freshly written log in a loop for profilers:
//! `cargo run --release -p s3repl-benches --example log_profile -- RECORDS ROUNDS`.
#![allow(missing_docs, clippy::unwrap_used, clippy::cast_precision_loss)]

use s3repl_io::log::{
    Backend, Durability, FileStorage, LogConfig, LogReader, LogWriter, ReadOptions,
};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (records, rounds) =
        (args.first().copied().unwrap_or(100_000), args.get(1).copied().unwrap_or(3));
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
    let t = std::time::Instant::now();
    let mut out = Vec::with_capacity(4096);
    for _ in 0..rounds {
        let mut r = LogReader::open(
            FileStorage,
            &dir,
            0,
            0,
            ReadOptions { backend: Backend::Std, ..ReadOptions::default() },
        );
        loop {
            out.clear();
            if r.read_batch(4096, &mut out).unwrap() == 0 {
                break;
            }
        }
    }
    let per = t.elapsed().as_nanos() as f64 / (records * rounds) as f64;
    println!("{per:.1} ns per record");
    let _ = std::fs::remove_dir_all(&dir);
}
