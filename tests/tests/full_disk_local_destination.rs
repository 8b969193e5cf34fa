//! A local destination whose disk fills under load. Its copies cannot succeed until there is
//! room, whatever the retry timer says, so it must count as down: its work parked (not
//! FAILED) and a probe that writes finding the moment there is room again, at which the parked
//! work resumes at once. Before, a local file system had no breaker: its copies went FAILED
//! into the failed-operations queue and waited for the queue's retry round (30 s, doubling to
//! an hour) however soon the disk had room.
//!
//! The disk is filled with the process's file size limit (`RLIMIT_FSIZE` at 1 byte, `SIGXFSZ`
//! ignored), which fails every write as a full disk does (`EFBIG`), the engine's own files
//! included. The limit is process-wide, so this binary holds this one test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{
    DestinationState, Engine, Limits, MemorySource, MemoryStatus, ReplicationStatus, RetryPolicy,
};
use s3repl_io::dest::{Destination, DestinationRegistry};
use s3repl_tests::full_disk::{GatedSource, limit_file_size};

const DST: &str = "arn:aws:s3:::dst";
const RECORDS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_destination_parks_its_work_and_resumes_when_there_is_room() {
    let dir = std::env::temp_dir().join(format!("s3repl-full-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (log, root) = (dir.join("log"), dir.join("dst"));
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    let inner = MemorySource::new();
    let end = s3repl_tests::append_memory_versions(&writer, &inner, "data/", RECORDS, |i| {
        format!("object {i}").into_bytes()
    })
    .unwrap();
    let source = Arc::new(GatedSource::new(inner));
    let status = MemoryStatus::new();
    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::local(DST, &root).unwrap());
    let mut engine = Engine::builder()
        .log(&log, 1)
        .bucket("src", s3repl_tests::catch_all(DST, false))
        .source(source.clone())
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .limits(Limits {
            max_in_flight: 64,
            queue: 256,
            backoff: Duration::from_millis(10),
            probe_interval: Duration::from_millis(200),
            // A FAILED copy would wait an hour for its retry: only the breaker's probe can
            // bring the work back within this test.
            retry: RetryPolicy { first: Duration::from_hours(1), ..RetryPolicy::default() },
            ..Limits::default()
        })
        .start()
        .unwrap();
    let state = |engine: &s3repl::pipeline::EngineHandle| {
        engine.control().destinations().into_iter().find(|d| d.destination == DST).map(|d| d.state)
    };

    // The first reads are held; now the disk is full, and they go on.
    source.reached.notified().await;
    limit_file_size(Some(1));
    source.open();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        state(&engine),
        Some(DestinationState::Down { .. } | DestinationState::Probing { .. })
    ) {
        assert!(Instant::now() < deadline, "not down on a full disk: {:?}", state(&engine));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still down while there is no room: the probe writes, and fails.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        matches!(
            state(&engine),
            Some(DestinationState::Down { .. } | DestinationState::Probing { .. })
        ),
        "{:?}",
        state(&engine)
    );
    assert!(engine.halts().is_empty(), "{:?}", engine.halts());

    // Room again: the probe finds it, and everything parked replicates, each file whole.
    limit_file_size(None);
    let completed = || {
        status
            .updates()
            .iter()
            .filter(|u| u.status == ReplicationStatus::Completed)
            .map(|u| u.key.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64
    };
    let deadline = Instant::now() + Duration::from_mins(1);
    while completed() < RECORDS || engine.control().failed_queue_len() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} of {RECORDS} replicated, {} queued: {:?}",
            completed(),
            engine.control().failed_queue_len(),
            engine.control().destinations()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(engine.wait_for(&end, Duration::from_mins(1)).await, "{:?}", engine.progress());
    let failed: Vec<_> = status
        .updates()
        .into_iter()
        .filter(|u| matches!(u.status, ReplicationStatus::Failed { .. }))
        .collect();
    assert!(failed.is_empty(), "a full disk is not a failure of the versions: {failed:?}");
    for i in 0..RECORDS {
        let path = root.join(format!("data/{i}"));
        let body = std::fs::read(&path).unwrap_or_else(|e| {
            let there: Vec<_> = std::fs::read_dir(root.join("data"))
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
                .unwrap_or_default();
            panic!("{}: {e}; updates {:?}; there {there:?}", path.display(), status.updates().len())
        });
        assert_eq!(body, format!("object {i}").as_bytes());
    }
    assert_eq!(state(&engine), Some(DestinationState::Up));
    assert!(engine.halts().is_empty(), "{:?}", engine.halts());
    engine.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
