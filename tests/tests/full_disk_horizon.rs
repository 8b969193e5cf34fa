//! A disk that fills while records are being admitted. The replay horizon is saved ahead of
//! admission (every 4,096 records of a partition), so a restart can recognise what a crashed
//! run may have copied; when that save fails, nothing more may be admitted — but once there is
//! room again admission must resume by itself. Before, the dispatcher gave up for good at the
//! first failed save: replication stopped, without a halt or a word in the engine's health.
//!
//! The disk is filled with the process's file size limit (`RLIMIT_FSIZE` at 1 byte, `SIGXFSZ`
//! ignored), which fails every write as a full disk does. The limit is process-wide, so this
//! binary holds this one test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{Engine, EngineHandle, Limits, MemorySource, MemoryStatus, ObjectSource};
use s3repl_io::dest::{Destination, DestinationRegistry};
use s3repl_tests::full_disk::{GatedSource, limit_file_size};

const DST: &str = "arn:aws:s3:::dst";
/// Past the first horizon step (4,096), so that a save falls while the disk is full.
const RECORDS: u64 = 6_000;

fn start(log: &std::path::Path, source: Arc<dyn ObjectSource>) -> EngineHandle {
    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::in_memory(DST));
    Engine::builder()
        .log(log, 1)
        .bucket("src", s3repl_tests::catch_all(DST, false))
        .source(source)
        .destinations(reg)
        .status(Arc::new(MemoryStatus::new()))
        .limits(Limits { max_in_flight: 64, queue: 256, ..Limits::default() })
        .start()
        .unwrap()
}

fn completed(engine: &EngineHandle) -> u64 {
    engine.metrics().unwrap().snapshot().destinations.iter().map(|d| d.completed_ops).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_admission_back_until_there_is_room_again() {
    let log = std::env::temp_dir().join(format!("s3repl-full-horizon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log);
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    let inner = MemorySource::new();
    let end = s3repl_tests::append_memory_versions(&writer, &inner, "data/", RECORDS, |i| {
        format!("object {i}").into_bytes()
    })
    .unwrap();
    let source = Arc::new(GatedSource::new(inner));
    let mut engine = start(&log, source.clone());

    // The first reads are held (the horizon is saved up to 4,096); now the disk is full.
    source.reached.notified().await;
    limit_file_size(Some(1));
    source.open();
    let deadline = Instant::now() + Duration::from_secs(30);
    let trouble = loop {
        if let Some(t) = engine.control().checkpoint_trouble() {
            break t;
        }
        assert!(Instant::now() < deadline, "no trouble reported under a full disk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(trouble.attempts >= 1, "{trouble:?}");
    // Nothing past the saved horizon is admitted while it cannot be raised.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = completed(&engine);
    assert!(held <= 4096, "{held} replicated past a horizon the disk refused");
    assert!(engine.halts().is_empty(), "{:?}", engine.halts());
    assert!(engine.control().checkpoint_trouble().is_some());

    // Room again: admission resumes, every record replicates, the checkpoint passes them all.
    limit_file_size(None);
    assert!(engine.wait_for(&end, Duration::from_mins(1)).await, "{:?}", engine.progress());
    assert_eq!(completed(&engine), RECORDS);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(t) = engine.control().checkpoint_trouble() {
        assert!(Instant::now() < deadline, "trouble still reported with room again: {t:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(engine.halts().is_empty(), "{:?}", engine.halts());
    engine.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&log);
}
