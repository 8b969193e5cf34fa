//! A disk that refuses the failed-operations journal's writes part way. A FAILED version must
//! not be checkpointed past until its retry record is durable, and a line the disk cut short
//! must not stay in the journal, where the next start would take it for damage and refuse to
//! start.
//!
//! The refusal is made with the process's file size limit (`RLIMIT_FSIZE`, `SIGXFSZ`
//! ignored), which fails a write exactly as a full disk does: the bytes below the limit are
//! written, then the write fails. The limit is process-wide, so this binary holds this one test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{Engine, EngineHandle, MemorySource, MemoryStatus, ObjectSource};
use s3repl::record::VersionRecord;
use s3repl_io::dest::{Destination, DestinationRegistry};
use s3repl_tests::full_disk::{GatedSource, limit_file_size};

const DST: &str = "arn:aws:s3:::dst";

fn start(
    log: &std::path::Path,
    source: Arc<dyn ObjectSource>,
    status: &MemoryStatus,
) -> EngineHandle {
    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::in_memory(DST));
    Engine::builder()
        .log(log, 1)
        .bucket("src", s3repl_tests::catch_all(DST, false))
        .source(source)
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_the_disk_cannot_journal_holds_its_log_position_and_leaves_no_torn_line() {
    let log = std::env::temp_dir().join(format!("s3repl-full-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log);
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    // The version is not in the source: it ends FAILED (SrcVersionNotFound) and is journaled.
    let source = Arc::new(GatedSource::new(MemorySource::new()));
    let mut engine = start(&log, source.clone(), &MemoryStatus::new());
    let rec = VersionRecord {
        bucket: "src".into(),
        key: "data/missing".into(),
        version_id: "v1".into(),
        size: 4,
        ..VersionRecord::default()
    };
    writer.append("src", &rec.key, &rec.to_bytes().unwrap()).unwrap();
    let end = writer.next_seqs();
    let journal = log.join("failed").join("replicator.jsonl");

    // The read is under way; now room for checkpoints (tens of bytes), not for a journal line
    // (hundreds).
    source.reached.notified().await;
    limit_file_size(Some(200));
    source.open();
    let metrics = engine.metrics().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.snapshot().destinations.iter().map(|d| d.failed_ops).sum::<u64>() == 0 {
        assert!(Instant::now() < deadline, "the version never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.checkpoint_now();
    let passed = engine.wait_for(&end, Duration::from_secs(3)).await;
    let torn = std::fs::metadata(&journal).unwrap().len();
    let queued = engine.control().failed_operations();
    limit_file_size(None);
    assert!(
        !passed,
        "the checkpoint passed a FAILED version whose retry record the disk refused: {:?}",
        engine.progress()
    );
    assert!(queued.is_empty(), "{queued:?}");
    assert_eq!(torn, 0, "the refused line's first bytes are still in the journal");

    // Room again: the journal takes the entry, and the position is passed.
    assert!(engine.wait_for(&end, Duration::from_secs(30)).await, "{:?}", engine.progress());
    let queued = engine.control().failed_operations();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].key, "data/missing");
    engine.shutdown().await.unwrap();

    // The journal reads back whole at the next start.
    let engine = start(&log, Arc::new(MemorySource::new()), &MemoryStatus::new());
    let queued = engine.control().failed_operations();
    assert_eq!(queued.len(), 1, "{queued:?}");
    engine.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&log);
}
