//! The reader's backend choice on one CPU: a process that may run on one CPU only (affinity
//! or cgroup quota) catches up with buffered `pread` in the calling thread under
//! `Backend::Auto`, because a read-ahead thread (`io_uring` or `pread`) would take turns with
//! the decoding thread instead of overlapping it. Its own test
//! binary: the CPU count is probed once per process, here after pinning.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, missing_docs)]

use s3repl_io::log::{
    Backend, Durability, FileStorage, LogConfig, LogReader, LogWriter, ReadOptions,
};

/// Whether a reader with `backend` reads partition 0 of `dir` with `io_uring`, and whether
/// on a read-ahead thread.
fn source(dir: &std::path::Path, backend: Backend) -> (bool, bool) {
    let mut r =
        LogReader::open(FileStorage, dir, 0, 0, ReadOptions { backend, ..ReadOptions::default() });
    let mut out = Vec::new();
    assert_eq!(r.read_batch(1, &mut out).unwrap(), 1);
    (r.using_uring(), r.using_read_ahead())
}

#[test]
fn auto_reads_in_place_on_one_cpu_and_ahead_when_asked() {
    let dir = std::env::temp_dir().join(format!("s3repl-one-cpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = LogConfig { partitions: 1, segment_bytes: 1 << 20, durability: Durability::None };
    let w = LogWriter::open(&dir, cfg).unwrap();
    w.append_batch(&[("b", "k", &b"one"[..]), ("b", "k", &b"two"[..])]).unwrap();
    drop(w);
    // Pin this thread (the one that opens the readers) to its current CPU.
    // SAFETY: `set` is a valid, zero-initialized cpu_set_t owned by this frame.
    unsafe {
        let cpu = usize::try_from(libc::sched_getcpu()).unwrap();
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set), 0);
    }
    assert_eq!(std::thread::available_parallelism().unwrap().get(), 1);
    assert_eq!(source(&dir, Backend::Auto), (false, false), "one CPU: Auto reads in place");
    assert_eq!(source(&dir, Backend::ReadAhead), (false, true), "a forced read-ahead is used");
    if s3repl_io::log::uring_available() {
        assert_eq!(source(&dir, Backend::Uring), (true, true), "a forced io_uring is used");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
