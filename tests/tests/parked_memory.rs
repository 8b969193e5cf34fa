//! What an outage costs in memory (issue 31): operations parked for a down destination keep
//! only a small summary in memory, the rest in the failed-operations journal on disk. A
//! global allocator counts live heap bytes while 20,000 versions are parked for a destination
//! nobody listens for; each may hold at most 512 bytes (a whole entry in memory took 1,060;
//! the summary takes 214). Parking is journaled on blocking threads a few at a time: the
//! process's threads are sampled throughout, and parking 20,000 versions with every worker
//! busy may add only a bounded number (unbounded, each worker took a thread of its own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{DestinationState, Engine, Limits, MemorySource, StatusSink, StatusUpdate};
use s3repl::record::{AppendRecord, VersionRecord};
use s3repl_io::dest::{Destination, DestinationRegistry};

/// Live heap bytes.
static LIVE: AtomicI64 = AtomicI64::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(i64::try_from(layout.size()).unwrap_or(0), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(i64::try_from(layout.size()).unwrap_or(0), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown =
            i64::try_from(new_size).unwrap_or(0) - i64::try_from(layout.size()).unwrap_or(0);
        LIVE.fetch_add(grown, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Keeps nothing (statuses are not what is measured).
struct Discard;

impl StatusSink for Discard {
    fn report(&self, _: &StatusUpdate<'_>) {}
}

const DOWN: &str = "arn:aws:s3:::nowhere";
const VERSIONS: usize = 20_000;
/// Threads the engine may add to the process while it parks: its own (the log reader, the
/// input), the runtime's blocking threads for the journal (8 at once), the checkpoint and the
/// replay horizon. 16–17 were measured with the journal's bound, 82 without it.
const MAX_ADDED_THREADS: u64 = 32;

/// This process's threads now.
fn threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().parse().unwrap()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_operations_cost_little_memory() {
    // Nothing listens on the port: every request is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The most threads seen while the engine runs (a sampling thread of its own included).
    let threads_before = threads();
    let (peak, sampling) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(threads(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let down = Destination::s3(
        DOWN,
        &s3repl_tests::seaweed::options(&format!("http://127.0.0.1:{port}"), "nowhere"),
    )
    .unwrap();
    let mut registry = DestinationRegistry::new();
    registry.insert(down);
    let dir = s3repl_tests::temp_dir("parked-memory");
    let log = dir.path().join("log");
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let engine = Engine::builder()
        .log(&log, 2)
        .notifier(writer.notifier())
        .bucket("src", s3repl_tests::everything_to(&[DOWN]))
        .source(Arc::new(source.clone()))
        .destinations(registry)
        .status(Arc::new(Discard))
        .limits(Limits {
            breaker_failures: 2,
            backoff: Duration::from_millis(1),
            ..Limits::default()
        })
        .start()
        .unwrap();
    let control = engine.control();
    let records: Vec<VersionRecord> = (0..VERSIONS)
        .map(|i| {
            let key = format!("some/longer/prefix/of/a/key/{i:08}");
            let data = Bytes::from_static(b"x");
            source.insert(
                "src",
                &key,
                "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
                data,
            );
            let mut r = VersionRecord::put(
                "src",
                &key,
                "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
                1,
            );
            r.etag = "\"9dd4e461268c8034f5c8564e155c67a6\"".into();
            r
        })
        .collect();
    // The breaker opens on the first records; the rest are parked without an attempt.
    writer.append_records(&records[..100]).unwrap();
    let deadline = Instant::now() + Duration::from_mins(1);
    while !control.destinations().iter().any(|d| d.parked_ops == 100) {
        assert!(Instant::now() < deadline, "{:?}", control.destinations());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        control.destinations()[0].state,
        DestinationState::Down { .. } | DestinationState::Probing { .. }
    ));
    // Fixed costs (read buffers, tables) are paid by the first half; the second is measured.
    let half = VERSIONS / 2;
    let parked = |n: usize| {
        let n = n as u64;
        control.destinations().iter().any(|d| d.parked_ops == n)
    };
    writer.append_records(&records[100..half]).unwrap();
    while !parked(half) {
        assert!(Instant::now() < deadline, "{:?}", control.destinations());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = LIVE.load(Ordering::Relaxed);
    writer.append_records(&records[half..]).unwrap();
    while !parked(VERSIONS) {
        assert!(Instant::now() < deadline, "{:?}", control.destinations());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grown = LIVE.load(Ordering::Relaxed) - before;
    drop(records);
    let per = grown / i64::try_from(VERSIONS - half).unwrap();
    eprintln!("{per} bytes of heap per parked operation");
    assert!(per < 512, "{per} bytes of heap per parked operation");
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let added = peak.load(Ordering::Relaxed).saturating_sub(threads_before + 1);
    eprintln!("{added} threads added while parking");
    assert!(added <= MAX_ADDED_THREADS, "{added} threads added while parking");
    engine.shutdown().await.unwrap();
}
