//! The copy workers take waiting jobs in batches (one hand-off between them for several jobs).
//! That must cost no concurrency and no bound: a burst of versions whose reads each take long
//! runs `Limits::workers` of them at once — not a batch's worth one after another — and never
//! more than that.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{
    BoxFuture, Engine, Limits, MemorySource, MemoryStatus, ObjectSource, SourceError,
};
use s3repl_io::dest::{Destination, DestinationRegistry};

const DST: &str = "arn:aws:s3:::dst";
const WORKERS: usize = 16;
const RECORDS: usize = 48;

/// Counts reads in flight; each read waits until `WORKERS` are in flight at once (or a
/// deadline passes), so the reads of a batch run one after another could never meet there.
#[derive(Debug)]
struct Meeting {
    inner: MemorySource,
    now: AtomicUsize,
    most: AtomicUsize,
    met: tokio::sync::Notify,
    reached: AtomicUsize,
}

impl ObjectSource for Meeting {
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        Box::pin(async move {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            if n >= WORKERS {
                self.reached.fetch_add(1, Ordering::SeqCst);
                self.met.notify_waiters();
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(5), self.met.notified()).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.inner.get(bucket, key, version_id).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_runs_as_many_jobs_at_once_as_there_are_workers_and_no_more() {
    let dir = s3repl_tests::temp_dir("worker-concurrency");
    let writer =
        LogWriter::open(dir.path(), LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    let inner = MemorySource::new();
    let end = s3repl_tests::append_memory_versions(&writer, &inner, "k/", RECORDS as u64, |_| {
        vec![7u8; 4096]
    })
    .unwrap();
    let source = Arc::new(Meeting {
        inner,
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        met: tokio::sync::Notify::new(),
        reached: AtomicUsize::new(0),
    });
    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::in_memory(DST));
    let mut engine = Engine::builder()
        .log(dir.path(), 1)
        .bucket("src", s3repl_tests::catch_all(DST, false))
        .source(source.clone())
        .destinations(reg)
        .status(Arc::new(MemoryStatus::new()))
        .limits(Limits { workers: WORKERS, max_in_flight: 256, ..Limits::default() })
        .start()
        .unwrap();
    assert!(engine.wait_for(&end, Duration::from_mins(1)).await, "{:?}", engine.progress());
    let most = source.most.load(Ordering::SeqCst);
    assert_eq!(most, WORKERS, "jobs at once (workers {WORKERS})");
    assert!(source.reached.load(Ordering::SeqCst) >= 1, "the reads met");
    engine.shutdown().await.unwrap();
}
