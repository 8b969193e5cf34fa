//! A destination outage (issue 31): a `SeaweedFS` destination behind a proxy that answers every
//! request with `503` while "down", beside a healthy in-memory destination. Its breaker opens,
//! its work is parked (not FAILED, holding no log position), the healthy destination gets
//! everything meanwhile, and once the server answers again the parked backlog drains at once
//! (long before a background retry round), in order per key, with no version missing or
//! written twice; a live write of a key with parked versions waits behind them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{
    DestinationState, Engine, Limits, MemorySource, MemoryStatus, ReplicationStatus,
};
use s3repl::record::{AppendRecord, VersionRecord};
use s3repl_io::dest::{Destination, DestinationRegistry};
use s3repl_tests::fault_proxy::{Fault, FaultProxy};
use s3repl_tests::seaweed::SeaweedFs;

const FLAKY: &str = "arn:aws:s3:::outage";
const HEALTHY: &str = "arn:aws:s3:::healthy";
const KEYS: u32 = 40;

/// Round `round`'s version of every key: bytes in the source, the record to append.
fn round(source: &MemorySource, round: u32) -> Vec<VersionRecord> {
    (0..KEYS)
        .map(|k| {
            let (key, version) = (format!("k/{k}"), format!("v{round}-{k}"));
            let data = Bytes::from(format!("round {round} of key {k}"));
            source.insert("src", &key, &version, data.clone());
            let mut r = VersionRecord::put("src", &key, &version, data.len() as u64);
            r.blake3 = Some(*blake3::hash(&data).as_bytes());
            r.commit_time_ms = s3repl_tests::now_ms();
            r
        })
        .collect()
}

fn count(status: &MemoryStatus, destination: &str, want: &ReplicationStatus) -> usize {
    status.updates().iter().filter(|u| u.destination == destination && &u.status == want).count()
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_destination_parks_its_work_and_drains_it_at_once_when_back() {
    let server = SeaweedFs::start("outage", &["outage"]).unwrap();
    server.enable_versioning("outage").unwrap();
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let proxy = FaultProxy::start_picking(
        server.port(),
        Arc::new(move |_: &str, _| {
            flag.load(Ordering::SeqCst).then_some(Fault {
                status: 503,
                code: "ServiceUnavailable",
                forwarded: false,
            })
        }),
    )
    .unwrap();
    let flaky =
        Destination::s3(FLAKY, &s3repl_tests::seaweed::options(&proxy.endpoint(), "outage"))
            .unwrap();
    let mut registry = DestinationRegistry::new();
    registry.insert(flaky.clone());
    registry.insert(Destination::in_memory(HEALTHY));

    let dir = s3repl_tests::temp_dir("outage");
    let log = dir.path().join("log");
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let status = MemoryStatus::new();
    let limits = Limits {
        breaker_failures: 3,
        probe_interval: Duration::from_millis(200),
        backoff: Duration::from_millis(5),
        ..Limits::default()
    };
    let engine = Engine::builder()
        .log(&log, 2)
        .notifier(writer.notifier())
        .bucket("src", s3repl_tests::everything_to(&[FLAKY, HEALTHY]))
        .source(Arc::new(source.clone()))
        .destinations(registry)
        .status(Arc::new(status.clone()))
        .limits(limits)
        .start()
        .unwrap();
    let control = engine.control();

    // Two versions of every key while the destination is down.
    let mut appended = 0usize;
    for r in 0..2 {
        let batch = round(&source, r);
        appended += batch.len();
        writer.append_records(&batch).unwrap();
    }
    let completed = ReplicationStatus::Completed;
    // The healthy destination gets everything meanwhile; the other's work is parked, and the
    // log positions are finished past it (nothing holds the checkpoint).
    until("the healthy destination replicates everything", Duration::from_mins(1), || {
        count(&status, HEALTHY, &completed) == appended
    })
    .await;
    until("every operation of the down destination is parked", Duration::from_secs(30), || {
        control
            .destinations()
            .iter()
            .any(|d| d.destination == FLAKY && d.parked_ops == appended as u64)
    })
    .await;
    let health = control.destinations();
    let d = health.iter().find(|d| d.destination == FLAKY).unwrap();
    assert!(
        matches!(d.state, DestinationState::Down { .. } | DestinationState::Probing { .. }),
        "{d:?}"
    );
    assert!(d.last_error.as_deref().is_some_and(|e| e.contains("503")), "{d:?}");
    assert!(d.oldest_waiting_commit_ms.is_some(), "{d:?}");
    let h = health.iter().find(|d| d.destination == HEALTHY).unwrap();
    assert_eq!((h.state, h.parked_ops), (DestinationState::Up, 0), "{h:?}");
    let failed = status
        .updates()
        .iter()
        .filter(|u| matches!(u.status, ReplicationStatus::Failed { .. }))
        .count();
    assert_eq!(failed, 0, "an outage is not a failure");
    engine.checkpoint_now();
    until("the checkpoint passes the parked versions", Duration::from_secs(10), || {
        engine.progress().iter().sum::<u64>() == appended as u64
    })
    .await;
    let m = control.metrics().unwrap().snapshot();
    let fm = m.destinations.iter().find(|d| d.destination == FLAKY).unwrap();
    assert_eq!((fm.failed_ops, fm.pending_ops), (0, 0), "{fm:?}");
    assert!(fm.parked_ops >= appended as u64, "{fm:?}");

    // Back: the backlog drains at once (the first background retry round is 30 s away), and a
    // third version of every key written now waits behind the parked ones.
    down.store(false, Ordering::SeqCst);
    let third = round(&source, 2);
    appended += third.len();
    writer.append_records(&third).unwrap();
    let drained = until("the parked backlog drains", Duration::from_secs(25), || {
        count(&status, FLAKY, &completed) >= appended
    })
    .await;
    assert!(control.failed_operations().is_empty(), "{:?}", control.failed_operations());
    let health = control.destinations();
    let d = health.iter().find(|d| d.destination == FLAKY).unwrap();
    assert_eq!((d.state, d.parked_ops), (DestinationState::Up, 0), "{d:?}");
    // Every version exactly once, and each key's newest version is its current replica.
    let counts = server.version_counts("outage").unwrap();
    for k in 0..KEYS {
        let key = format!("k/{k}");
        assert_eq!(counts.get(&key), Some(&3), "{key}: {counts:?}");
        let current = flaky.current_replica(&key, "s3repl-source-version-id").await.unwrap();
        assert_eq!(
            current.and_then(|c| c.value).as_deref(),
            Some(format!("v2-{k}").as_str()),
            "{key}: versions replicated out of order"
        );
    }
    eprintln!("drained {appended} operations {drained:?} after the destination came back");
    engine.shutdown().await.unwrap();
}

/// A destination's bandwidth limit holds (bytes per second over the run, within 10%), and a
/// limit lifted while running lets the rest go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_limit_holds_and_can_be_lifted_while_running() {
    const SIZE: usize = 128 << 10;
    const RATE: u64 = 1 << 20;
    let dir = s3repl_tests::temp_dir("bandwidth");
    let log = dir.path().join("log");
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let status = MemoryStatus::new();
    let limited = Destination::in_memory(HEALTHY);
    limited.set_limits(s3repl_io::dest::DestinationLimits {
        bytes_per_second: Some(RATE),
        max_requests: Some(4),
    });
    let mut registry = DestinationRegistry::new();
    registry.insert(limited);
    let engine = Engine::builder()
        .log(&log, 2)
        .notifier(writer.notifier())
        .bucket("src", s3repl_tests::everything_to(&[HEALTHY]))
        .source(Arc::new(source.clone()))
        .destinations(registry)
        .status(Arc::new(status.clone()))
        .start()
        .unwrap();
    let batch = |from: usize, n: usize| -> Vec<VersionRecord> {
        (from..from + n)
            .map(|i| {
                let data = Bytes::from(vec![u8::try_from(i % 251).unwrap(); SIZE]);
                let key = format!("big/{i}");
                source.insert("src", &key, "v", data.clone());
                let mut r = VersionRecord::put("src", &key, "v", SIZE as u64);
                r.blake3 = Some(*blake3::hash(&data).as_bytes());
                r
            })
            .collect()
    };
    let completed = ReplicationStatus::Completed;
    // 4 MiB at 1 MiB/s.
    let started = Instant::now();
    writer.append_records(&batch(0, 32)).unwrap();
    until("the limited copies", Duration::from_mins(1), || {
        count(&status, HEALTHY, &completed) == 32
    })
    .await;
    let limited = started.elapsed().as_secs_f64();
    let rate = (32 * SIZE) as f64 / limited;
    // The first 250 ms are a burst the bucket allows.
    assert!(rate <= RATE as f64 * 1.1 * (4.0 / 3.75), "{rate:.0} B/s against a limit of {RATE}");
    // Lifted while running: the next 4 MiB take a fraction of that.
    let control = engine.control();
    assert!(control.set_destination_limits(HEALTHY, s3repl_io::dest::DestinationLimits::default()));
    assert!(!control.set_destination_limits(
        "arn:aws:s3:::nope",
        s3repl_io::dest::DestinationLimits::default()
    ));
    let started = Instant::now();
    writer.append_records(&batch(32, 32)).unwrap();
    until("the unlimited copies", Duration::from_mins(1), || {
        count(&status, HEALTHY, &completed) == 64
    })
    .await;
    let free = started.elapsed().as_secs_f64();
    assert!(free < limited / 2.0, "unlimited {free:.2} s against limited {limited:.2} s");
    assert_eq!(control.destinations()[0].limits, s3repl_io::dest::DestinationLimits::default());
    engine.shutdown().await.unwrap();
}
