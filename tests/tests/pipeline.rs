//! The engine end to end on real files: versions appended to a real log, read back, matched,
//! scheduled per key, copied to an in-memory and a local-file-system destination, statuses
//! reported, checkpoints saved, and a restart resuming from the checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::too_many_lines, clippy::items_after_statements, clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use s3repl::config::ReplicationConfiguration;
use s3repl::log::{Durability, LogConfig, LogWriter};
use s3repl::pipeline::{
    Engine, EngineHandle, FailureReason, Limits, MemorySource, MemoryStatus, ReplicationStatus,
};
use s3repl::record::VersionRecord;
use s3repl::rules::EventKind;
use s3repl_io::dest::{Destination, DestinationRegistry};

const ROLE: &str = "arn:aws:iam::123456789012:role/r";
const DST_A: &str = "arn:aws:s3:::dst-a";
const DST_B: &str = "arn:aws:s3:::dst-b";

fn config() -> ReplicationConfiguration {
    let body = format!(
        r#"{{"Role":"{ROLE}","Rules":[
          {{"ID":"logs","Priority":2,"Status":"Enabled","Filter":{{"Prefix":"logs/"}},
            "DeleteMarkerReplication":{{"Status":"Disabled"}},
            "Destination":{{"Bucket":"{DST_A}","StorageClass":"STANDARD_IA"}}}},
          {{"ID":"all","Priority":1,"Status":"Enabled","Filter":{{}},
            "DeleteMarkerReplication":{{"Status":"Enabled"}},
            "Destination":{{"Bucket":"{DST_B}"}}}}]}}"#
    );
    ReplicationConfiguration::parse(body.as_bytes(), None).unwrap()
}

/// A test's temporary directories, `log` and `dst` (for a log and a local destination) in one
/// temporary directory, removed when the test ends, also when it fails.
struct Dirs {
    _root: tempfile::TempDir,
    log: PathBuf,
    local: PathBuf,
}

impl Dirs {
    fn new(name: &str) -> Self {
        let root = s3repl_tests::temp_dir(&format!("pipeline-{name}"));
        let (log, local) = (root.path().join("log"), root.path().join("dst"));
        Dirs { _root: root, log, local }
    }
}

/// A writer for the log in `dir`, of `partitions` partitions and default settings otherwise.
fn open_log(dir: &Path, partitions: u32) -> LogWriter {
    LogWriter::open(dir, LogConfig { partitions, ..LogConfig::default() }).unwrap()
}

/// Appends `rec` under its bucket and key.
fn append(w: &LogWriter, rec: &VersionRecord) {
    w.append(&rec.bucket, &rec.key, &rec.to_bytes().unwrap()).unwrap();
}

/// A registry of one in-memory destination, `DST_A`.
fn memory_destination() -> (DestinationRegistry, Destination) {
    let a = Destination::in_memory(DST_A);
    let mut reg = DestinationRegistry::new();
    reg.insert(a.clone());
    (reg, a)
}

/// Replicates what `writer` appended to bucket `src` of a one-partition log, under a
/// catch-all rule, to one in-memory destination: that destination and the statuses reported.
async fn replicate_to_memory(
    log_dir: &Path,
    writer: &LogWriter,
    source: MemorySource,
) -> (Destination, MemoryStatus) {
    let (reg, a) = memory_destination();
    let status = MemoryStatus::new();
    let engine = Engine::builder()
        .log(log_dir, 1)
        .bucket("src", s3repl_tests::catch_all(DST_A, false))
        .source(Arc::new(source))
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .start()
        .unwrap();
    drain(engine, writer).await;
    (a, status)
}

/// Waits (30 s at most) until `engine` has passed everything `writer` appended, then shuts it
/// down.
async fn drain(mut engine: EngineHandle, writer: &LogWriter) {
    let caught_up = engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await;
    assert!(caught_up, "progress {:?}", engine.progress());
    engine.shutdown().await.unwrap();
}

/// What the source holds and what each key's final state should be.
struct World {
    source: MemorySource,
    /// key → last written bytes, or None when the last event was a delete marker.
    last: HashMap<String, Option<Bytes>>,
    /// (key, version) of every put.
    puts: Vec<(String, String)>,
    /// key → bytes of its last put.
    last_put: HashMap<String, Bytes>,
}

impl World {
    fn new() -> Self {
        World {
            source: MemorySource::new(),
            last: HashMap::new(),
            puts: Vec::new(),
            last_put: HashMap::new(),
        }
    }
}

/// The last status reported for `key`.
fn last_status(status: &MemoryStatus, key: &str) -> Option<ReplicationStatus> {
    status.updates().into_iter().rev().find(|u| u.key == key).map(|u| u.status)
}

/// Version `v1` of `key` in bucket `src`, `data.len()` bytes (no digest).
fn version(key: &str, data: &[u8]) -> VersionRecord {
    VersionRecord {
        bucket: "src".into(),
        key: key.into(),
        version_id: "v1".into(),
        size: data.len() as u64,
        ..VersionRecord::default()
    }
}

/// An engine for bucket `src` under [`config`], reading `log_dir` and `source`.
fn start_engine(
    log_dir: &Path,
    partitions: u32,
    source: Arc<dyn s3repl::pipeline::ObjectSource>,
    reg: DestinationRegistry,
    status: &MemoryStatus,
    limits: Limits,
) -> EngineHandle {
    Engine::builder()
        .log(log_dir, partitions)
        .bucket("src", config())
        .source(source)
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .limits(limits)
        .start()
        .unwrap()
}

fn append_versions(w: &LogWriter, world: &mut World, round: u32, keys: u32, versions: u32) {
    for v in 0..versions {
        let mut batch = Vec::new();
        for k in 0..keys {
            let key =
                if k % 3 == 0 { format!("logs/app-{k}.log") } else { format!("data/{k}/object") };
            let version_id = format!("r{round}-v{v}-k{k}");
            let delete = v + 1 == versions && k % 7 == 0;
            let record = if delete {
                world.last.insert(key.clone(), None);
                VersionRecord {
                    bucket: "src".into(),
                    key: key.clone(),
                    version_id,
                    operation: EventKind::DeleteMarker,
                    ..VersionRecord::default()
                }
            } else {
                let data = Bytes::from(
                    format!("{key} round {round} version {v} ").repeat(1 + (k as usize % 5)),
                );
                world.source.insert("src", &key, &version_id, data.clone());
                world.last.insert(key.clone(), Some(data.clone()));
                world.puts.push((key.clone(), version_id.clone()));
                world.last_put.insert(key.clone(), data.clone());
                VersionRecord {
                    bucket: "src".into(),
                    key: key.clone(),
                    version_id,
                    size: data.len() as u64,
                    blake3: Some(*blake3::hash(&data).as_bytes()),
                    tags: vec![("round".into(), round.to_string())],
                    user_metadata: vec![("owner".into(), "test".into())],
                    ..VersionRecord::default()
                }
            };
            batch.push((key, record.to_bytes().unwrap()));
        }
        let refs: Vec<(&str, &str, &[u8])> =
            batch.iter().map(|(k, b)| ("src", k.as_str(), b.as_slice())).collect();
        w.append_batch(&refs).unwrap();
    }
}

async fn read(d: &Destination, key: &str) -> Option<Bytes> {
    let path = object_store::path::Path::parse(key).unwrap();
    match d.store().get(&path).await {
        Ok(r) => Some(r.bytes().await.unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

fn registry(local_root: &Path) -> (DestinationRegistry, Destination, Destination) {
    let a = Destination::in_memory(DST_A);
    let b = Destination::local(DST_B, local_root).unwrap();
    let mut reg = DestinationRegistry::new();
    reg.insert(a.clone());
    reg.insert(b.clone());
    (reg, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_reach_their_destinations_in_order_and_restart_resumes() {
    let dirs = Dirs::new("restart");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let cfg =
        LogConfig { partitions: 4, segment_bytes: 64 << 10, durability: Durability::EveryBatch };
    let writer = LogWriter::open(&log_dir, cfg).unwrap();
    let mut world = World::new();
    append_versions(&writer, &mut world, 1, 40, 6);
    let (reg, a, b) = registry(&local);
    let status = MemoryStatus::new();
    // Tight limits: backpressure on every stage.
    let limits =
        Limits { max_in_flight: 8, workers: 4, queue: 16, budget_bytes: 4096, ..Limits::default() };
    let mut engine =
        start_engine(&log_dir, 4, Arc::new(world.source.clone()), reg.clone(), &status, limits);
    assert!(
        engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await,
        "progress {:?}",
        engine.progress()
    );
    engine.shutdown().await.unwrap();

    for (key, last) in &world.last {
        // Every key goes to dst-b (the catch-all rule); delete markers remove it there.
        assert_eq!(read(&b, key).await, last.clone(), "dst-b {key}");
        // Only logs/ keys go to dst-a, whose rule does not replicate delete markers: the last
        // put stays.
        if key.starts_with("logs/") {
            assert_eq!(read(&a, key).await, world.last_put.get(key).cloned(), "dst-a {key}");
        } else {
            assert_eq!(read(&a, key).await, None, "dst-a must not get {key}");
        }
    }
    let updates = status.updates();
    assert!(
        updates.iter().all(|u| !matches!(u.status, ReplicationStatus::Failed { .. })),
        "{:?}",
        updates.iter().find(|u| matches!(u.status, ReplicationStatus::Failed { .. }))
    );
    let completed =
        |u: &&s3repl::pipeline::OwnedStatusUpdate| u.status == ReplicationStatus::Completed;
    let logs_puts = world.puts.iter().filter(|(k, _)| k.starts_with("logs/")).count();
    let deletes = world.last.values().filter(|v| v.is_none()).count();
    assert_eq!(updates.iter().filter(completed).count(), world.puts.len() + logs_puts + deletes);

    // Restart: only the new versions are processed.
    append_versions(&writer, &mut world, 2, 40, 2);
    let status2 = MemoryStatus::new();
    let mut engine =
        start_engine(&log_dir, 4, Arc::new(world.source.clone()), reg, &status2, Limits::default());
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    let updates = status2.updates();
    assert!(!updates.is_empty());
    assert!(
        updates.iter().all(|u| u.version_id.starts_with("r2-")),
        "replayed old versions after a clean shutdown"
    );
    for (key, last) in &world.last {
        assert_eq!(read(&b, key).await, last.clone(), "after restart, dst-b {key}");
    }
}

/// A shutdown does not wait out the tasks' sleeps: with an hour between checkpoints it still
/// drains, saves the final checkpoint and returns, and a restart replays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wakes_sleeping_tasks_and_saves_the_final_checkpoint() {
    let dirs = Dirs::new("shutdown");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let cfg = LogConfig { partitions: 2, ..LogConfig::default() };
    let writer = LogWriter::open(&log_dir, cfg).unwrap();
    let mut world = World::new();
    append_versions(&writer, &mut world, 1, 5, 2);
    let (reg, _a, b) = registry(&local);
    let status = MemoryStatus::new();
    let limits = Limits { checkpoint_every: Duration::from_hours(1), ..Limits::default() };
    let engine =
        start_engine(&log_dir, 2, Arc::new(world.source.clone()), reg.clone(), &status, limits);
    // Every key's last state reached dst-b (the checkpoint is not saved yet: no wait_for).
    until_replicated(&b, &world).await;
    tokio::time::timeout(Duration::from_secs(30), engine.shutdown())
        .await
        .expect("shutdown waited for the next checkpoint round")
        .unwrap();
    let status2 = MemoryStatus::new();
    let mut engine =
        start_engine(&log_dir, 2, Arc::new(world.source.clone()), reg, &status2, Limits::default());
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    assert!(
        status2.updates().is_empty(),
        "replayed after a clean shutdown: {:?}",
        status2.updates()
    );
}

/// Polls until every key's last state in `world` is at `d` (one minute at most).
async fn until_replicated(d: &Destination, world: &World) {
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    for (key, last) in &world.last {
        while read(d, key).await != *last {
            assert!(std::time::Instant::now() < deadline, "{key} never replicated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_now_saves_between_ticks_and_again_after_more_work() {
    let dirs = Dirs::new("checkpoint-now");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    let mut world = World::new();
    let (reg, _a, b) = registry(&local);
    let status = MemoryStatus::new();
    // The next tick is an hour away: only `checkpoint_now` can move the checkpoint.
    let limits = Limits { checkpoint_every: Duration::from_hours(1), ..Limits::default() };
    let mut engine =
        start_engine(&log_dir, 2, Arc::new(world.source.clone()), reg, &status, limits);
    let start = engine.progress();
    for round in 1..=2 {
        append_versions(&writer, &mut world, round, 5, 2);
        until_replicated(&b, &world).await;
        let target = writer.next_seqs();
        // From round 2 the checkpoint task surely sleeps (in round 1 its first look, at start,
        // could in principle run late enough to see finished records).
        if round > 1 {
            assert!(
                !engine.wait_for(&target, Duration::from_millis(300)).await,
                "round {round}: the checkpoint moved without being asked"
            );
        }
        // A request saves what is finished by then; the last versions of the round may still
        // be on their way (a key whose delete marker was already its state after round 1 looks
        // replicated at once), so ask until the checkpoint passes them.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            engine.checkpoint_now();
            if engine.wait_for(&target, Duration::from_millis(100)).await {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: checkpoint_now saved nothing: {:?} (started at {start:?})",
                engine.progress()
            );
        }
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_corrupt_sources_fail_with_s3_reasons() {
    let dirs = Dirs::new("fail");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let writer = open_log(&log_dir, 1);
    let source = MemorySource::new();
    source.insert("src", "data/tampered", "v1", Bytes::from_static(b"not what was committed"));
    let ok = Bytes::from_static(b"fine");
    source.insert("src", "data/ok", "v1", ok.clone());
    let rec = |key: &str, data: &[u8]| VersionRecord {
        blake3: Some(*blake3::hash(data).as_bytes()),
        ..version(key, data)
    };
    // Same length as what the source now holds, different bytes: only the digest can tell.
    let tampered = rec("data/tampered", b"what the server committed");
    let tampered = VersionRecord { size: b"not what was committed".len() as u64, ..tampered };
    for r in [rec("data/missing", b"gone"), tampered, rec("data/ok", &ok)] {
        append(&writer, &r);
    }
    let (reg, _a, b) = registry(&local);
    let status = MemoryStatus::new();
    drain(start_engine(&log_dir, 1, Arc::new(source), reg, &status, Limits::default()), &writer)
        .await;
    let final_status = |key: &str| last_status(&status, key);
    assert_eq!(
        s3repl_tests::reason(final_status("data/missing")),
        Some(FailureReason::SrcVersionNotFound)
    );
    assert!(
        matches!(final_status("data/tampered"), Some(ReplicationStatus::Failed { reason: FailureReason::SrcObjectNotEligible, ref detail }) if detail.contains("BLAKE3")),
        "{:?}",
        final_status("data/tampered")
    );
    assert_eq!(final_status("data/ok"), Some(ReplicationStatus::Completed));
    assert_eq!(read(&b, "data/tampered").await, None, "tampered bytes are never written");
    assert_eq!(read(&b, "data/ok").await, Some(ok));
}

/// A source with a bug: reading `data/boom` panics; every other read goes to `inner`.
struct PanickingSource {
    inner: MemorySource,
}

impl s3repl::pipeline::ObjectSource for PanickingSource {
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
        assert!(key != "data/boom", "the source's own bug");
        self.inner.get(bucket, key, version_id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_copy_fails_its_version_and_the_worker_goes_on() {
    let dirs = Dirs::new("panic");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let writer = open_log(&log_dir, 1);
    let source = MemorySource::new();
    let boom = version("data/boom", b"never read");
    append(&writer, &boom);
    for i in 0..20 {
        let key = format!("data/after-{i}");
        let data = Bytes::from(format!("bytes of {key}"));
        source.insert("src", &key, "v1", data.clone());
        writer.append("src", &key, &version(&key, &data).to_bytes().unwrap()).unwrap();
    }
    let (reg, _a, b) = registry(&local);
    let status = MemoryStatus::new();
    // One worker: had the panic ended it, nothing after the first version would be copied.
    let source = Arc::new(PanickingSource { inner: source });
    let mut engine =
        start_engine(&log_dir, 1, source, reg, &status, Limits { workers: 1, ..Limits::default() });
    assert!(
        engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await,
        "the checkpoint passes the version that panicked: {:?}",
        engine.progress()
    );
    engine.shutdown().await.unwrap();
    let final_status = |key: &str| last_status(&status, key);
    assert!(
        matches!(final_status("data/boom"), Some(ReplicationStatus::Failed { reason: FailureReason::InternalError, ref detail }) if detail.contains("panicked")),
        "{:?}",
        final_status("data/boom")
    );
    for i in 0..20 {
        let key = format!("data/after-{i}");
        assert_eq!(final_status(&key), Some(ReplicationStatus::Completed), "{key}");
        assert_eq!(read(&b, &key).await, Some(Bytes::from(format!("bytes of {key}"))));
    }
}

/// A status sink with a bug: its first report panics; later ones are kept.
#[derive(Default)]
struct PanicsOnce {
    inner: MemoryStatus,
    panicked: std::sync::atomic::AtomicBool,
}

impl s3repl::pipeline::StatusSink for PanicsOnce {
    fn report(&self, update: &s3repl::pipeline::StatusUpdate<'_>) {
        let first = !self.panicked.swap(true, std::sync::atomic::Ordering::SeqCst);
        assert!(!first, "the sink's own bug");
        self.inner.report(update);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_status_sink_loses_one_update_not_the_engine() {
    let dirs = Dirs::new("sink");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let writer = open_log(&log_dir, 1);
    let source = MemorySource::new();
    for i in 0..10 {
        let key = format!("data/k{i}");
        let data = Bytes::from(format!("bytes of {key}"));
        source.insert("src", &key, "v1", data.clone());
        writer.append("src", &key, &version(&key, &data).to_bytes().unwrap()).unwrap();
    }
    let (reg, _a, b) = registry(&local);
    let sink = Arc::new(PanicsOnce::default());
    // The first report is the dispatcher's PENDING: had it killed the dispatcher, nothing
    // would be copied and the checkpoint would never move.
    let mut engine = Engine::builder()
        .log(&log_dir, 1)
        .bucket("src", config())
        .source(Arc::new(source))
        .destinations(reg)
        .status(sink.clone())
        .start()
        .unwrap();
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    assert!(engine.halts().is_empty(), "{:?}", engine.halts());
    engine.shutdown().await.unwrap();
    let updates = sink.inner.updates();
    for i in 0..10 {
        let key = format!("data/k{i}");
        assert_eq!(read(&b, &key).await, Some(Bytes::from(format!("bytes of {key}"))));
        assert!(
            updates.iter().any(|u| u.key == key && u.status == ReplicationStatus::Completed),
            "{key}"
        );
    }
    assert_eq!(updates.len(), 19, "20 updates (PENDING, COMPLETED per key), the first lost");
}

/// A source that is always briefly unavailable (a transient error), counting reads.
#[derive(Default)]
struct Unavailable {
    reads: std::sync::atomic::AtomicUsize,
}

impl s3repl::pipeline::ObjectSource for Unavailable {
    fn get<'a>(
        &'a self,
        _bucket: &'a str,
        _key: &'a str,
        _version_id: &'a str,
    ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Err(s3repl::pipeline::SourceError::Transient("busy".into())) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_total_deadline_however_many_attempts_remain() {
    let dirs = Dirs::new("deadline");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let writer = open_log(&log_dir, 1);
    let rec = version("data/busy", b"some bytes");
    append(&writer, &rec);
    let (reg, _a, _b) = registry(&local);
    let status = MemoryStatus::new();
    let source = Arc::new(Unavailable::default());
    // A thousand attempts with doubling backoff would take hours; the deadline ends it.
    let limits = Limits {
        max_attempts: 1000,
        backoff: Duration::from_millis(20),
        retry_deadline: Duration::from_millis(300),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let mut engine = start_engine(&log_dir, 1, source.clone(), reg, &status, limits);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(20)).await);
    let took = started.elapsed();
    engine.shutdown().await.unwrap();
    let last = last_status(&status, "data/busy");
    assert_eq!(s3repl_tests::reason(last), Some(FailureReason::SrcGetObjectNotPermitted));
    let reads = source.reads.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..1000).contains(&reads), "retried, then stopped: {reads} reads in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_undecodable_partition_halts_visibly_and_the_others_go_on() {
    use s3repl::log::partition_for;
    use s3repl::pipeline::Halt;
    let dirs = Dirs::new("halt");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let writer = open_log(&log_dir, 2);
    let source = MemorySource::new();
    // Keys for each partition.
    let keys: Vec<Vec<String>> = (0..2u32)
        .map(|p| {
            (0..200)
                .map(|i| format!("data/k{i}"))
                .filter(|k| partition_for("src", k, 2) == p)
                .take(4)
                .collect()
        })
        .collect();
    let put = |key: &str| {
        let data = Bytes::from(format!("bytes of {key}"));
        source.insert("src", key, "v1", data.clone());
        writer.append("src", key, &version(key, &data).to_bytes().unwrap()).unwrap();
    };
    // Partition 0: two good records, one whose payload is not a record, one more good one.
    put(&keys[0][0]);
    put(&keys[0][1]);
    writer.append("src", &keys[0][2], b"not a version record").unwrap();
    put(&keys[0][3]);
    // Partition 1: four good records, then the second one's bytes are damaged on disk.
    for k in &keys[1] {
        put(k);
    }
    writer.sync().unwrap();
    drop(writer);
    let seg = std::fs::read_dir(log_dir.join("p00001")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let second = {
        // Segment header (32 bytes), then frames: 16-byte header + payload.
        let first_len = u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as usize;
        32 + 16 + first_len
    };
    bytes[second + 20] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();

    let (reg, _a, b) = registry(&local);
    let status = MemoryStatus::new();
    let engine =
        start_engine(&log_dir, 2, Arc::new(source.clone()), reg, &status, Limits::default());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while engine.halts().len() < 2 || engine.progress() != vec![2, 1] {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} {:?}",
            engine.halts(),
            engine.progress()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut halts = engine.halts();
    halts.sort_by_key(|h| matches!(h, Halt::LogRead { .. }));
    assert!(matches!(&halts[0], Halt::Record { partition: 0, seq: 2, .. }), "{halts:?}");
    assert!(matches!(&halts[1], Halt::LogRead { partition: 1, .. }), "{halts:?}");
    assert!(halts[1].to_string().contains("partition 1"), "{}", halts[1]);
    // What lies before the damage is replicated; nothing at or after it is skipped past.
    for (k, copied) in [(&keys[0][0], true), (&keys[0][1], true), (&keys[0][3], false)]
        .into_iter()
        .chain([(&keys[1][0], true), (&keys[1][1], false), (&keys[1][2], false)])
    {
        assert_eq!(read(&b, k).await.is_some(), copied, "{k}");
    }
    engine.shutdown().await.unwrap();
}

#[test]
fn builder_reports_configuration_errors_at_start() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let e = Engine::builder().bucket("src", config()).start().unwrap_err();
        assert!(e.to_string().contains("log directory"), "{e}");
        let e = Engine::builder()
            .log(s3repl_tests::temp_dir("pipeline-nodest").path(), 1)
            .bucket("src", config())
            .source(Arc::new(MemorySource::new()))
            .status(Arc::new(MemoryStatus::new()))
            .start()
            .unwrap_err();
        assert!(e.to_string().contains("not registered"), "{e}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_hot_swap_applies_to_new_versions() {
    fn assert_send<T: Send>(_: &T) {}
    let dirs = Dirs::new("swap");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let writer = open_log(&log_dir, 2);
    let mut world = World::new();
    let (reg, a, b) = registry(&local);
    let mut engine = Engine::builder()
        .log(&log_dir, 2)
        .bucket("src", config())
        .source(Arc::new(world.source.clone()))
        .destinations(reg)
        .status(Arc::new(MemoryStatus::new()))
        .start()
        .unwrap();
    // Public futures are Send (embedders spawn them on multi-threaded runtimes).
    assert_send(&engine.wait_for(&[0, 0], Duration::from_millis(1)));
    append_versions(&writer, &mut world, 1, 6, 1);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    assert!(read(&b, "data/1/object").await.is_some());
    // Swap to a configuration whose only rule is disabled: later versions stay put.
    let disabled = ReplicationConfiguration::parse(
        config().to_json().replace(r#""Status": "Enabled""#, r#""Status": "Disabled""#).as_bytes(),
        None,
    )
    .unwrap();
    assert!(disabled.rules.iter().all(|r| !r.is_enabled()));
    engine.set_config("src", &disabled).unwrap();
    // A configuration naming a destination nobody registered (and no resolver) is refused and
    // changes nothing.
    let unknown = ReplicationConfiguration::parse(
        config().to_json().replace(DST_B, "arn:aws:s3:::nowhere").as_bytes(),
        None,
    )
    .unwrap();
    assert!(engine.set_config("other-bucket", &unknown).is_err());
    assert_eq!(engine.buckets(), vec!["src".to_owned()]);
    append_versions(&writer, &mut world, 2, 6, 1);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    let metrics = engine.metrics().unwrap().snapshot();
    // Round 1 replicated, round 2 did not: all 6 versions to dst-b (the delete marker of
    // logs/app-0.log too), and to dst-a only logs/app-3.log (its rule does not replicate
    // delete markers).
    assert_eq!(metrics.records_read, 12);
    assert_eq!(metrics.records_matched, 6);
    assert!(metrics.destinations.iter().all(|d| d.pending_ops == 0 && d.failed_ops == 0));
    let done: u64 = metrics.destinations.iter().map(|d| d.completed_ops).sum();
    assert_eq!(done, 7, "{metrics:?}");
    let shutdown = engine.shutdown();
    assert_send(&shutdown);
    shutdown.await.unwrap();
    let old = world.last_put.get("data/1/object").cloned();
    assert_ne!(read(&b, "data/1/object").await, old, "round 2 must not have replicated");
    assert!(read(&b, "data/1/object").await.unwrap().starts_with(b"data/1/object round 1"));
    assert!(read(&a, "logs/app-3.log").await.unwrap().starts_with(b"logs/app-3.log round 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_kms_sources_are_re_encrypted_under_the_replica_key_only() {
    kms_round_trip("kms-log", 200_000, Limits::default()).await;
}

/// Larger than the multipart threshold: re-encrypted part by part, in place, under a budget
/// smaller than the object. Parts are cut at package boundaries: a 100,000-byte part size
/// holds one 64 KiB package per part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sse_kms_objects_are_re_encrypted_part_by_part_within_the_budget() {
    let limits = Limits {
        multipart_threshold: 256 << 10,
        part_size: 100_000,
        budget_bytes: 600 << 10,
        ..Limits::default()
    };
    kms_round_trip("kms-large-log", 1_300_000, limits).await;
}

/// Several packages per part, the last part short and the last package partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_kms_parts_of_several_packages_re_encrypt() {
    let limits = Limits {
        multipart_threshold: 256 << 10,
        part_size: 300_000,
        budget_bytes: 2 << 20,
        ..Limits::default()
    };
    kms_round_trip("kms-parts-log", 1_000_003, limits).await;
}

/// Limits that copy versions of 300,000 bytes and more in parts of 200,000, within 1 MiB.
fn small_parts() -> Limits {
    Limits {
        multipart_threshold: 300_000,
        part_size: 200_000,
        budget_bytes: 1 << 20,
        ..Limits::default()
    }
}

/// A million bytes (not a multiple of [`small_parts`]' part size), patterned by `modulus`.
fn large_data(modulus: u32) -> Vec<u8> {
    (0..1_000_003u32).map(|i| u8::try_from(i % modulus).unwrap()).collect()
}

/// Logs version `v1` of `key` (`data`, with its BLAKE3) in `dirs`' one-partition log and
/// replicates it from `source` with `limits` under a catch-all rule to one in-memory
/// destination: that destination and the last status reported.
async fn replicate_large(
    dirs: &Dirs,
    key: &str,
    data: &[u8],
    source: Arc<dyn s3repl::pipeline::ObjectSource>,
    limits: Limits,
) -> (Destination, Option<ReplicationStatus>) {
    let writer = open_log(&dirs.log, 1);
    let digest = Some(*blake3::hash(data).as_bytes());
    append(&writer, &VersionRecord { blake3: digest, ..version(key, data) });
    let (reg, a) = memory_destination();
    let catch_all = s3repl_tests::catch_all(DST_A, false);
    let (engine, status) = s3repl_tests::start_engine(&dirs.log, catch_all, source, reg, limits);
    drain(engine, &writer).await;
    (a, status.updates().last().map(|u| u.status.clone()))
}

/// Plain multipart copies read each full part into a pool buffer the engine lends where the
/// source can fill one, and what is read there is what is hashed and uploaded: a part damaged
/// in the buffer fails the version's BLAKE3 check instead of reaching the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_plain_objects_are_read_into_lent_part_buffers() {
    for damage in [false, true] {
        let dirs = Dirs::new(&format!("lent-{damage}"));
        let data = large_data(251);
        let inner = MemorySource::new();
        inner.insert("src", "big/a", "v1", Bytes::from(data.clone()));
        let source = TestReads::new(inner, Reads::Into, damage);
        let limits = Limits { max_attempts: 1, ..small_parts() };
        let (a, last) = replicate_large(&dirs, "big/a", &data, source.clone(), limits).await;
        // Five full parts of 200,000 bytes, and a last one of 3 bytes read the usual way.
        assert_eq!(source.filled(), 5);
        if damage {
            assert!(matches!(last, Some(ReplicationStatus::Failed { .. })), "{last:?}");
            assert_eq!(read(&a, "big/a").await, None, "a damaged replica was written");
        } else {
            assert_eq!(last, Some(ReplicationStatus::Completed));
            assert!(read(&a, "big/a").await.unwrap() == data, "replica bytes differ");
        }
    }
}

/// A large version in a [`s3repl::pipeline::LocalVersionStore`] is copied part by part, each
/// full part read (`pread`) straight into a lent buffer on a worker handed over to blocking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_local_versions_copy_part_by_part() {
    let dirs = Dirs::new("local-parts");
    let data = large_data(241);
    let store =
        s3repl::pipeline::LocalVersionStore::new(dirs.local.join("versions")).durable(false);
    store.put("src", "big/local", "v1", &data).unwrap();
    let (a, last) =
        replicate_large(&dirs, "big/local", &data, Arc::new(store), small_parts()).await;
    assert_eq!(last, Some(ReplicationStatus::Completed));
    assert!(read(&a, "big/local").await.unwrap() == data, "replica bytes differ");
}

/// A source that claims to have filled a lent buffer without writing it (a bug) never makes a
/// replica of an earlier part's bytes, here another version's: lent buffers are zeroed first.
/// A local destination drops each part once written, so the second version reuses the first
/// one's buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_a_source_did_not_fill_never_carries_an_earlier_parts_bytes() {
    let dirs = Dirs::new("lazy");
    let writer = open_log(&dirs.log, 1);
    let secret: Vec<u8> = (0..600_000u32).map(|i| u8::try_from(i % 13 + 1).unwrap()).collect();
    let inner = MemorySource::new();
    inner.insert("src", "k", "v1", Bytes::from(secret.clone()));
    inner.insert("src", "k", "v2", Bytes::from(vec![7u8; secret.len()]));
    // No digests recorded: only the zeroing stands between v1's bytes and v2's replica.
    append(&writer, &version("k", &secret));
    append(&writer, &VersionRecord { version_id: "v2".into(), ..version("k", &secret) });
    let (source, dst, engine, _status) = lazy_engine(&dirs, inner, "v2");
    drain(engine, &writer).await;
    assert_eq!(source.filled(), 3, "v1's three parts read into lent buffers");
    let got = read(&dst, "k").await.expect("v2's replica");
    assert_eq!(got.len(), secret.len());
    assert!(got.iter().all(|&b| b == 0), "v2's replica carries bytes it was never given");
}

/// Versions copied whole are read into lent buffers too, and with a digest recorded a reused
/// buffer is not zeroed first: a source that claims a fill it did not do then gets the version
/// FAILED by the digest check, never a replica of the earlier version's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_versions_read_into_buffers_are_held_to_their_digest() {
    let dirs = Dirs::new("whole-lent");
    let writer = open_log(&dirs.log, 1);
    // Below `small_parts`' multipart threshold, and long enough for a pool buffer.
    let first: Vec<u8> = (0..250_000u32).map(|i| u8::try_from(i % 11 + 1).unwrap()).collect();
    let second = vec![9u8; first.len()];
    let inner = MemorySource::new();
    inner.insert("src", "k1", "v1", Bytes::from(first.clone()));
    inner.insert("src", "k2", "v2", Bytes::from(second.clone()));
    let digest = |d: &[u8]| Some(*blake3::hash(d).as_bytes());
    append(&writer, &VersionRecord { blake3: digest(&first), ..version("k1", &first) });
    let v2 = VersionRecord { blake3: digest(&second), ..version("k2", &second) };
    append(&writer, &VersionRecord { version_id: "v2".into(), ..v2 });
    let (source, dst, engine, status) = lazy_engine(&dirs, inner, "v2");
    drain(engine, &writer).await;
    assert_eq!(source.filled(), 1, "v1 read whole into a lent buffer");
    assert_eq!(read(&dst, "k1").await.as_deref(), Some(&first[..]));
    let last =
        |key: &str| status.updates().iter().rev().find(|u| u.key == key).map(|u| u.status.clone());
    assert_eq!(last("k1"), Some(ReplicationStatus::Completed));
    assert!(matches!(last("k2"), Some(ReplicationStatus::Failed { .. })), "{:?}", last("k2"));
    assert_eq!(read(&dst, "k2").await, None, "no replica of bytes the source never gave");
}

/// An engine under [`small_parts`] reading `inner` into lent buffers, through a source that
/// claims to fill them for version `lazy` without writing anything (a buggy source), into one
/// local destination (which drops each replica's buffers once written, so they are reused).
fn lazy_engine(
    dirs: &Dirs,
    inner: MemorySource,
    lazy: &str,
) -> (Arc<TestReads>, Destination, EngineHandle, MemoryStatus) {
    let source = TestReads::new(inner, Reads::Into, false);
    source.lazy.lock().unwrap().insert(lazy.into());
    let dst = Destination::local(DST_A, &dirs.local).unwrap();
    let mut reg = DestinationRegistry::new();
    reg.insert(dst.clone());
    let (engine, status) = s3repl_tests::start_engine(
        &dirs.log,
        s3repl_tests::catch_all(DST_A, false),
        source.clone(),
        reg,
        small_parts(),
    );
    (source, dst, engine, status)
}

/// How a test source hands the engine a version's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Shared buffers, as [`MemorySource`] returns them: parts are re-encrypted into a pool
    /// buffer.
    Shared,
    /// Buffers of their own (as reading a file does): parts are re-encrypted in place.
    Owned,
    /// Into the engine's lent buffers (`read_range_into`), parts and plain versions copied
    /// whole alike.
    Into,
}

/// [`MemorySource`]'s versions, read as `reads` says; counts the parts read into lent buffers,
/// and with `damage` flips a byte of each (the engine must then fail the version, proving it
/// copies what was read into the buffer).
struct TestReads {
    inner: MemorySource,
    reads: Reads,
    damage: bool,
    filled: std::sync::atomic::AtomicUsize,
    /// Calls to `read_range_into` made although `reads_into_buffers` says no (the engine must
    /// not make them: each cost a zeroed buffer).
    asked_anyway: std::sync::atomic::AtomicUsize,
    /// Versions whose reads into buffers claim a fill but write nothing (a buggy source).
    lazy: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl TestReads {
    fn new(inner: MemorySource, reads: Reads, damage: bool) -> Arc<Self> {
        Arc::new(TestReads {
            inner,
            reads,
            damage,
            filled: 0.into(),
            asked_anyway: 0.into(),
            lazy: std::sync::Mutex::default(),
        })
    }

    fn filled(&self) -> usize {
        self.filled.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl s3repl::pipeline::ObjectSource for TestReads {
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
        Box::pin(async move {
            let got = self.inner.get(bucket, key, version_id).await?;
            Ok(if self.reads == Reads::Shared { got } else { Bytes::from(got.to_vec()) })
        })
    }

    fn get_range<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
    ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
        Box::pin(async move {
            let got = self.inner.get_range(bucket, key, version_id, range).await?;
            Ok(if self.reads == Reads::Shared { got } else { Bytes::from(got.to_vec()) })
        })
    }

    fn read_range_into<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
        buf: &'a mut [u8],
    ) -> s3repl::pipeline::BoxFuture<'a, Result<bool, s3repl::pipeline::SourceError>> {
        Box::pin(async move {
            if self.reads != Reads::Into {
                self.asked_anyway.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Ok(false);
            }
            if self.lazy.lock().unwrap().contains(version_id) {
                return Ok(true);
            }
            let got = self.inner.get_range(bucket, key, version_id, range).await?;
            assert_eq!(got.len(), buf.len(), "the engine lends a buffer of the part's length");
            buf.copy_from_slice(&got);
            if self.damage {
                buf[buf.len() / 2] ^= 1;
            }
            self.filled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(true)
        })
    }

    fn reads_into_buffers(&self) -> bool {
        self.reads == Reads::Into
    }
}

/// [`kms_one_round_trip`] with each way of reading the source.
async fn kms_round_trip(name: &str, len: u32, limits: Limits) {
    for reads in [Reads::Shared, Reads::Owned, Reads::Into] {
        kms_one_round_trip(&format!("{name}-{reads:?}"), len, limits, reads).await;
    }
}

async fn kms_one_round_trip(name: &str, len: u32, limits: Limits, reads: Reads) {
    use s3repl::crypto::{
        DataKey, EncryptStream, FileKeyring, KeyStore, ObjectIdentity, WrappedKey,
    };
    use s3repl::rules::SseKind;
    const SRC_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/source";
    const DST_KEY: &str = "arn:aws:kms:us-east-1:444455556666:key/replica";
    let mut ring = FileKeyring::default();
    ring.insert(SRC_KEY, &[], zeroize_key(1)).unwrap();
    ring.insert(DST_KEY, &[], zeroize_key(2)).unwrap();
    let ring = Arc::new(ring);
    let dirs = Dirs::new(name);
    let log_dir = dirs.log.clone();
    let writer = open_log(&log_dir, 1);
    let source = MemorySource::new();
    let plaintext: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
    // The source server stored the object encrypted under a data key wrapped by SRC_KEY.
    let dek = DataKey::generate().unwrap();
    let id = ObjectIdentity { bucket: "src", key: "secret/a", version_id: "v1" };
    let wrapped = dek.wrap(&ring.master_key(SRC_KEY).unwrap(), id).unwrap();
    let mut enc = EncryptStream::new(&dek, 65_536).unwrap();
    let mut stored = enc.header_bytes().to_vec();
    enc.update(&plaintext, |b| stored.extend_from_slice(&b)).unwrap();
    stored.extend_from_slice(&enc.finish().unwrap());
    source.insert("src", "secret/a", "v1", Bytes::from(stored.clone()));
    let rec = VersionRecord {
        bucket: "src".into(),
        key: "secret/a".into(),
        version_id: "v1".into(),
        size: plaintext.len() as u64,
        blake3: Some(*blake3::hash(&plaintext).as_bytes()),
        sse: s3repl::record::SseInfo {
            kind: SseKind::SseKms,
            kms_key_id: Some(SRC_KEY.into()),
            wrapped_dek: Some(wrapped.encode()),
        },
        ..VersionRecord::default()
    };
    append(&writer, &rec);
    let body = format!(
        r#"{{"Role":"{ROLE}","Rules":[{{"ID":"kms","Priority":1,"Status":"Enabled","Filter":{{}},
          "SourceSelectionCriteria":{{"SseKmsEncryptedObjects":{{"Status":"Enabled"}}}},
          "DeleteMarkerReplication":{{"Status":"Disabled"}},
          "Destination":{{"Bucket":"{DST_A}","EncryptionConfiguration":{{"ReplicaKmsKeyID":"{DST_KEY}"}}}}}}]}}"#
    );
    let (reg, a) = memory_destination();
    let status = MemoryStatus::new();
    let reads_from = TestReads::new(source, reads, false);
    let engine = Engine::builder()
        .log(&log_dir, 1)
        .bucket("src", ReplicationConfiguration::parse(body.as_bytes(), None).unwrap())
        .source(reads_from.clone())
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .keys(ring.clone())
        .limits(limits)
        .start()
        .unwrap();
    drain(engine, &writer).await;
    assert_eq!(
        status.updates().last().map(|u| u.status.clone()),
        Some(ReplicationStatus::Completed),
        "{:?}",
        status.updates()
    );
    let multipart = u64::from(len) >= limits.multipart_threshold;
    assert_eq!(
        reads_from.filled() > 0,
        reads == Reads::Into && multipart,
        "parts read into buffers"
    );
    assert_eq!(
        reads_from.asked_anyway.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the engine lent buffers to a source that does not read into them"
    );
    let path = object_store::path::Path::parse("secret/a").unwrap();
    let got = a.store().get(&path).await.unwrap();
    let meta = |name: &str| {
        got.attributes
            .get(&object_store::Attribute::Metadata(name.to_owned().into()))
            .map(|v| v.as_ref().to_owned())
    };
    assert_eq!(meta("s3repl-kms-key-id").as_deref(), Some(DST_KEY));
    let wrapped_hex = meta("s3repl-wrapped-dek").unwrap();
    let replica_bytes = got.bytes().await.unwrap();
    assert_ne!(&replica_bytes[..], &stored[..], "a fresh data key and nonce prefix");
    let wrap_bytes: Vec<u8> = (0..wrapped_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&wrapped_hex[i..i + 2], 16).unwrap())
        .collect();
    let replica_wrap = WrappedKey::decode(&wrap_bytes).unwrap();
    let replica_id = ObjectIdentity { bucket: DST_A, key: "secret/a", version_id: "v1" };
    // Only the replica key unwraps it; the replica decrypts to the source plaintext.
    assert!(replica_wrap.unwrap_key(&ring.master_key(SRC_KEY).unwrap(), replica_id).is_err());
    let replica_dek = replica_wrap.unwrap_with(ring.as_ref(), replica_id).unwrap();
    let mut dec = s3repl::crypto::DecryptStream::new(replica_dek);
    let mut out = Vec::new();
    dec.update(&replica_bytes, |b| out.extend_from_slice(&b)).unwrap();
    out.extend_from_slice(&dec.finish().unwrap());
    assert!(out == plaintext, "replica plaintext differs from the source");
}

fn zeroize_key(byte: u8) -> zeroize::Zeroizing<[u8; 32]> {
    zeroize::Zeroizing::new([byte; 32])
}

/// A source whose range reads fail: transiently once per part (`flaky`), or always from an
/// offset on (`broken_from`).
struct FlakySource {
    inner: MemorySource,
    failed_once: std::sync::Mutex<std::collections::HashSet<u64>>,
    broken_from: Option<u64>,
    range_reads: std::sync::atomic::AtomicUsize,
}

impl s3repl::pipeline::ObjectSource for FlakySource {
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
        self.inner.get(bucket, key, version_id)
    }

    fn get_range<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
    ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
        self.range_reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let first_time = self.failed_once.lock().unwrap().insert(range.start);
        let broken = self.broken_from.is_some_and(|b| range.start >= b);
        Box::pin(async move {
            if broken {
                return Err(s3repl::pipeline::SourceError::VersionNotFound {
                    bucket: bucket.into(),
                    key: key.into(),
                    version_id: version_id.into(),
                });
            }
            if first_time {
                return Err(s3repl::pipeline::SourceError::Transient(
                    "injected part failure".into(),
                ));
            }
            s3repl::pipeline::slice_range(&self.inner.get(bucket, key, version_id).await?, range)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_copy_as_multipart_retrying_failed_parts_alone_and_aborting_on_failure() {
    let dirs = Dirs::new("mp");
    let (log_dir, local) = (dirs.log.clone(), dirs.local.clone());
    let writer = open_log(&log_dir, 1);
    let big: Vec<u8> = (0..1_000_003u32).map(|i| (i % 239) as u8).collect();
    let inner = MemorySource::new();
    for key in ["data/big", "data/broken"] {
        inner.insert("src", key, "v1", Bytes::from(big.clone()));
        let rec = VersionRecord {
            bucket: "src".into(),
            key: key.into(),
            version_id: "v1".into(),
            size: big.len() as u64,
            blake3: Some(*blake3::hash(&big).as_bytes()),
            ..VersionRecord::default()
        };
        writer.append("src", key, &rec.to_bytes().unwrap()).unwrap();
    }
    let flaky = |broken_from: Option<u64>| {
        Arc::new(FlakySource {
            inner: inner.clone(),
            failed_once: std::sync::Mutex::default(),
            broken_from,
            range_reads: std::sync::atomic::AtomicUsize::new(0),
        })
    };
    let source = flaky(Some(600_000));
    let (_reg, _a, b) = registry(&local);
    let mut reg = DestinationRegistry::new();
    reg.insert(b.clone());
    reg.insert(Destination::in_memory(DST_A));
    let status = MemoryStatus::new();
    // The budget is smaller than the object: parts must share it, one object at a time.
    let limits = Limits {
        budget_bytes: 128 * 1024,
        multipart_threshold: 100_000,
        part_size: 64 * 1024,
        part_concurrency: 3,
        backoff: Duration::from_millis(1),
        ..Limits::default()
    };
    // Only "data/big" reads succeed (after one failure per part); "data/broken" fails from
    // 600,000 bytes on, permanently.
    struct Routed(Arc<FlakySource>, Arc<FlakySource>);
    impl s3repl::pipeline::ObjectSource for Routed {
        fn get<'a>(
            &'a self,
            b: &'a str,
            k: &'a str,
            v: &'a str,
        ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
            if k == "data/broken" { self.1.get(b, k, v) } else { self.0.get(b, k, v) }
        }
        fn get_range<'a>(
            &'a self,
            b: &'a str,
            k: &'a str,
            v: &'a str,
            r: std::ops::Range<u64>,
        ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
            if k == "data/broken" {
                self.1.get_range(b, k, v, r)
            } else {
                self.0.get_range(b, k, v, r)
            }
        }
    }
    let healthy = flaky(None);
    let routed = Arc::new(Routed(healthy.clone(), source.clone()));
    let engine = Engine::builder()
        .log(&log_dir, 1)
        .bucket("src", config())
        .source(routed)
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .limits(limits)
        .start()
        .unwrap();
    drain(engine, &writer).await;
    assert_eq!(
        read(&b, "data/big").await.as_deref(),
        Some(&big[..]),
        "multipart replica is byte-identical"
    );
    let parts = big.len().div_ceil(64 * 1024);
    assert_eq!(
        healthy.range_reads.load(std::sync::atomic::Ordering::SeqCst),
        2 * parts,
        "each failed part was re-read alone, once"
    );
    let final_status = |key: &str| last_status(&status, key);
    assert_eq!(final_status("data/big"), Some(ReplicationStatus::Completed));
    assert_eq!(
        s3repl_tests::reason(final_status("data/broken")),
        Some(FailureReason::SrcVersionNotFound)
    );
    assert_eq!(read(&b, "data/broken").await, None, "no partial object");
    // The aborted upload left no staging files behind.
    let leftovers: Vec<_> =
        walk(&local).into_iter().filter(|p| p.to_string_lossy().contains("broken")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_added_and_removed_at_runtime_through_the_resolver() {
    let dirs = Dirs::new("runtime");
    let log_dir = dirs.log.clone();
    let writer = open_log(&log_dir, 1);
    let mut world = World::new();
    let made = Arc::new(std::sync::Mutex::new(HashMap::<String, Destination>::new()));
    let resolver_made = made.clone();
    let mut engine = Engine::builder()
        .log(&log_dir, 1)
        .source(Arc::new(world.source.clone()))
        .status(Arc::new(MemoryStatus::new()))
        .destination_resolver(move |arn| {
            let d = Destination::in_memory(arn);
            resolver_made.lock().unwrap().insert(arn.to_owned(), d.clone());
            Some(d)
        })
        .start()
        .unwrap();
    // No bucket configured: the first round is read and skipped.
    append_versions(&writer, &mut world, 1, 4, 1);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    assert!(made.lock().unwrap().is_empty());
    engine.set_config("src", &config()).unwrap();
    assert_eq!(made.lock().unwrap().len(), 2, "both destinations resolved");
    append_versions(&writer, &mut world, 2, 4, 1);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    let b = made.lock().unwrap().get(DST_B).cloned().unwrap();
    assert!(read(&b, "data/1/object").await.unwrap().starts_with(b"data/1/object round 2"));
    assert!(engine.remove_config("src").unwrap());
    assert!(!engine.remove_config("src").unwrap());
    append_versions(&writer, &mut world, 3, 4, 1);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    assert!(read(&b, "data/1/object").await.unwrap().starts_with(b"data/1/object round 2"));
    engine.shutdown().await.unwrap();
}

/// A source that answers after a pseudo-random delay, so copies finish out of order unless the
/// scheduler keeps each key's versions in sequence.
struct JitterSource {
    inner: MemorySource,
}

impl s3repl::pipeline::ObjectSource for JitterSource {
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> s3repl::pipeline::BoxFuture<'a, Result<Bytes, s3repl::pipeline::SourceError>> {
        Box::pin(async move {
            let h = blake3::hash(version_id.as_bytes());
            let micros = u64::from(h.as_bytes()[0]) * 8;
            tokio::time::sleep(Duration::from_micros(micros)).await;
            self.inner.get(bucket, key, version_id).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_keys_operations_apply_in_log_order_under_heavy_parallelism() {
    const KEYS: u32 = 16;
    const VERSIONS: u32 = 40;
    let dirs = Dirs::new("order");
    let log_dir = dirs.log.clone();
    let writer = LogWriter::open(
        &log_dir,
        LogConfig { partitions: 4, durability: Durability::None, ..LogConfig::default() },
    )
    .unwrap();
    let source = MemorySource::new();
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let mut last: HashMap<String, Option<Bytes>> = HashMap::new();
    for v in 0..VERSIONS {
        let mut batch = Vec::new();
        for k in 0..KEYS {
            let key = format!("hot/{k}");
            let version_id = format!("v{v:03}-k{k}");
            // Every fifth version of a key is a delete marker: it must never overtake the put
            // beneath it, nor be overtaken by the next one.
            let record = if (v + k) % 5 == 4 {
                last.insert(key.clone(), None);
                VersionRecord {
                    bucket: "src".into(),
                    key: key.clone(),
                    version_id: version_id.clone(),
                    operation: EventKind::DeleteMarker,
                    ..VersionRecord::default()
                }
            } else {
                let data = Bytes::from(format!("{key} {version_id}"));
                source.insert("src", &key, &version_id, data.clone());
                last.insert(key.clone(), Some(data.clone()));
                VersionRecord {
                    bucket: "src".into(),
                    key: key.clone(),
                    version_id: version_id.clone(),
                    size: data.len() as u64,
                    ..VersionRecord::default()
                }
            };
            expected.entry(key.clone()).or_default().push(version_id);
            batch.push((key, record.to_bytes().unwrap()));
        }
        let refs: Vec<(&str, &str, &[u8])> =
            batch.iter().map(|(k, b)| ("src", k.as_str(), b.as_slice())).collect();
        writer.append_batch(&refs).unwrap();
    }
    let only_b = s3repl_tests::catch_all(DST_B, true);
    let dest = Destination::in_memory(DST_B);
    let mut reg = DestinationRegistry::new();
    reg.insert(dest.clone());
    let status = MemoryStatus::new();
    let mut engine = Engine::builder()
        .log(&log_dir, 4)
        .bucket("src", only_b)
        .source(Arc::new(JitterSource { inner: source.clone() }))
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .limits(Limits { workers: 128, max_in_flight: 4096, ..Limits::default() })
        .start()
        .unwrap();
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    let mut completed: HashMap<String, Vec<String>> = HashMap::new();
    for u in status.updates() {
        assert!(!matches!(u.status, ReplicationStatus::Failed { .. }), "{u:?}");
        if u.status == ReplicationStatus::Completed {
            completed.entry(u.key).or_default().push(u.version_id);
        }
    }
    assert_eq!(completed, expected, "per-key completion order differs from log order");
    for (key, want) in &last {
        assert_eq!(read(&dest, key).await, *want, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_c_versions_replicate_as_stored_ciphertext_with_the_key_md5() {
    use s3repl::rules::SseKind;
    let dirs = Dirs::new("ssec");
    let log_dir = dirs.log.clone();
    let writer = open_log(&log_dir, 1);
    let source = MemorySource::new();
    // What the source server stored: opaque ciphertext, longer than the plaintext.
    let stored: Vec<u8> =
        (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    source.insert("src", "private/c", "v1", Bytes::from(stored.clone()));
    let rec = VersionRecord {
        bucket: "src".into(),
        key: "private/c".into(),
        version_id: "v1".into(),
        size: 65_536,
        sse: s3repl::record::SseInfo {
            kind: SseKind::SseC,
            kms_key_id: Some("kqWUtE4XeqEsuqZzbMmO7A==".into()),
            wrapped_dek: None,
        },
        ..VersionRecord::default()
    };
    append(&writer, &rec);
    let (a, status) = replicate_to_memory(&log_dir, &writer, source).await;
    assert_eq!(
        status.updates().last().map(|u| u.status.clone()),
        Some(ReplicationStatus::Completed)
    );
    let path = object_store::path::Path::parse("private/c").unwrap();
    let got = a.store().get(&path).await.unwrap();
    let meta = |name: &str| {
        got.attributes
            .get(&object_store::Attribute::Metadata(name.to_owned().into()))
            .map(|v| v.as_ref().to_owned())
    };
    assert_eq!(meta("s3repl-sse").as_deref(), Some("SSE-C"));
    assert_eq!(meta("s3repl-sse-customer-key-md5").as_deref(), Some("kqWUtE4XeqEsuqZzbMmO7A=="));
    assert_eq!(got.bytes().await.unwrap(), stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_changes_rewrite_unversioned_replicas_and_skip_stale_ones() {
    let dirs = Dirs::new("retag");
    let log_dir = dirs.log.clone();
    let writer = open_log(&log_dir, 1);
    let source = MemorySource::new();
    let rec = |key: &str, v: &str, op: EventKind, tag: &str| VersionRecord {
        bucket: "src".into(),
        key: key.into(),
        version_id: v.into(),
        size: 5,
        operation: op,
        tags: vec![("class".into(), tag.into())],
        ..VersionRecord::default()
    };
    for (k, v) in [("a", "v1"), ("b", "v1"), ("b", "v2")] {
        source.insert("src", k, v, Bytes::from_static(b"bytes"));
    }
    let records = [
        rec("a", "v1", EventKind::Put, "draft"),
        rec("a", "v1", EventKind::MetadataUpdate, "final"),
        rec("b", "v1", EventKind::Put, "draft"),
        rec("b", "v2", EventKind::Put, "draft"),
        // v1 of b is no longer the replica's current version: nothing to update.
        rec("b", "v1", EventKind::MetadataUpdate, "final"),
        // c was never replicated (its creation predates the log): S3 replicates metadata
        // changes of replicated versions only, so nothing happens and no status is reported
        // (it was reported FAILED DstVersionNotFound, and journaled for retries).
        rec("c", "v1", EventKind::MetadataUpdate, "final"),
    ];
    for r in &records {
        append(&writer, r);
    }
    let (a, status) = replicate_to_memory(&log_dir, &writer, source).await;
    assert!(status.updates().iter().all(|u| u.key != "c"), "{:?}", status.updates());
    assert!(read(&a, "c").await.is_none());
    let finals: Vec<_> =
        status.updates().into_iter().filter(|u| u.status != ReplicationStatus::Pending).collect();
    assert_eq!(finals.len(), 4, "{finals:?}");
    // Keys proceed in parallel, so only each version's own updates have an order.
    let of = |k: &str, v: &str| -> Vec<ReplicationStatus> {
        finals
            .iter()
            .filter(|u| u.key == k && u.version_id == v)
            .map(|u| u.status.clone())
            .collect()
    };
    let done = ReplicationStatus::Completed;
    assert_eq!(of("a", "v1"), [done.clone(), done.clone()], "{finals:?}");
    // Nor for b's v1, whose replica the destination no longer has: its COMPLETED stands.
    assert_eq!(of("b", "v1"), std::slice::from_ref(&done));
    assert_eq!(of("b", "v2"), [done]);
    // The memory store keeps tags only as put options; the rewrite kept the bytes and stamps.
    let got = a.store().get(&object_store::path::Path::parse("a").unwrap()).await.unwrap();
    let stamp = got
        .attributes
        .get(&object_store::Attribute::Metadata("s3repl-source-version-id".into()))
        .map(|v| v.as_ref().to_owned());
    assert_eq!(stamp.as_deref(), Some("v1"));
    assert_eq!(got.bytes().await.unwrap(), &b"bytes"[..]);
}

/// Found by the crash harness: a clean stop soon after a crash (during the replay settle, before
/// the records a crashed run may have applied were checked) reset the replay horizon to the
/// checkpoint, so the next start copied those records again without checking: a versioned
/// destination got a second replica of each. The horizon now keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_right_after_a_crash_keeps_the_replay_horizon() {
    use s3repl::log::{Checkpoint, FileStorage, load_checkpoint, save_checkpoint, write_atomic};
    let dirs = Dirs::new("horizon");
    let log_dir = dirs.log.clone();
    let writer = open_log(&log_dir, 1);
    let mut world = World::new();
    append_versions(&writer, &mut world, 1, 10, 1);
    let (reg, _) = memory_destination();
    let one = || s3repl_tests::catch_all(DST_A, false);
    let source = || Arc::new(world.source.clone());
    let (engine, _) = s3repl_tests::start_engine(&log_dir, one(), source(), reg, Limits::default());
    drain(engine, &writer).await;
    // What a crash leaves: a checkpoint behind the records a crashed run admitted (the replay
    // horizon, saved ahead of admission).
    let horizon_path = log_dir.join("checkpoints/replicator.horizon");
    let at = |n: u64| Checkpoint { next: [(0, n)].into_iter().collect() };
    save_checkpoint(&FileStorage, &log_dir, "replicator", &at(3)).unwrap();
    write_atomic(&FileStorage, &horizon_path, &at(4099).encode()).unwrap();
    // A start, and a clean stop while its readers still wait out the settle.
    let (reg, _) = memory_destination();
    let limits = Limits { replay_settle: Duration::from_secs(5), ..Limits::default() };
    let (engine, _) = s3repl_tests::start_engine(&log_dir, one(), source(), reg, limits);
    engine.shutdown().await.unwrap();
    assert_eq!(load_checkpoint(&FileStorage, &log_dir, "replicator").unwrap(), Some(at(3)));
    // Records 3..10 are still to be checked before copying; the crashed run's horizon ran
    // ahead of what the log held (10 records), which it cannot have admitted.
    let horizon = Checkpoint::decode(&std::fs::read(&horizon_path).unwrap()).unwrap();
    assert_eq!(horizon, at(10));
}

/// Two engines of one consumer would share a checkpoint, a version map and a failed-operations
/// queue: the second is refused, saying so (it used to fail on the version map's database lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_of_the_same_consumer_is_refused() {
    let dirs = Dirs::new("busy");
    let log_dir = dirs.log.clone();
    drop(open_log(&log_dir, 1));
    let world = World::new();
    let start = |reg| {
        Engine::builder()
            .log(&log_dir, 1)
            .source(Arc::new(world.source.clone()))
            .destinations(reg)
            .status(Arc::new(MemoryStatus::new()))
            .start()
    };
    let first = start(memory_destination().0).unwrap();
    let err = start(memory_destination().0).unwrap_err();
    assert!(
        matches!(&err, s3repl::Error::ConsumerBusy { consumer, .. } if consumer == "replicator"),
        "{err}"
    );
    first.shutdown().await.unwrap();
    let again = start(memory_destination().0).unwrap();
    again.shutdown().await.unwrap();
}

/// Issue 29, item 2: under `UseSourceMultiRegionKey`, an SSE-KMS replica is encrypted under the
/// multi-Region key related to the source object's key in the destination's Region (not under
/// `ReplicaKmsKeyID`); a source key with no relative there, or a destination with no Region,
/// fails the version as `DstKmsKeyNotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_source_multi_region_key_encrypts_under_the_related_key_in_the_destination_region() {
    use s3repl::crypto::{
        DataKey, DecryptStream, EncryptStream, FileKeyring, KeyStore, ObjectIdentity, WrappedKey,
    };
    use s3repl::rules::SseKind;
    const MRK: &str = "arn:aws:kms:us-east-1:123456789012:key/mrk-0a1b2c";
    const MRK_EU: &str = "arn:aws:kms:eu-west-1:123456789012:key/mrk-0a1b2c";
    const SINGLE: &str = "arn:aws:kms:us-east-1:123456789012:key/single";
    const REPLICA_KEY: &str = "arn:aws:kms:eu-west-1:444455556666:key/replica";
    const DST_NOWHERE: &str = "arn:aws:s3:::dst-nowhere";
    let mut ring = FileKeyring::default();
    ring.insert(MRK, &[], zeroize_key(7)).unwrap();
    ring.insert(MRK_EU, &[], zeroize_key(7)).unwrap();
    ring.insert(SINGLE, &[], zeroize_key(8)).unwrap();
    ring.insert(REPLICA_KEY, &[], zeroize_key(9)).unwrap();
    let ring = Arc::new(ring);
    let dirs = Dirs::new("mrk-log");
    let writer = open_log(&dirs.log, 1);
    let source = MemorySource::new();
    let plaintext: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for (key, kms) in [("mrk/a", MRK), ("single/a", SINGLE)] {
        let dek = DataKey::generate().unwrap();
        let id = ObjectIdentity { bucket: "src", key, version_id: "v1" };
        let wrapped = dek.wrap(&ring.master_key(kms).unwrap(), id).unwrap();
        let mut enc = EncryptStream::new(&dek, 65_536).unwrap();
        let mut stored = enc.header_bytes().to_vec();
        enc.update(&plaintext, |b| stored.extend_from_slice(&b)).unwrap();
        stored.extend_from_slice(&enc.finish().unwrap());
        source.insert("src", key, "v1", Bytes::from(stored));
        append(
            &writer,
            &VersionRecord {
                bucket: "src".into(),
                key: key.into(),
                version_id: "v1".into(),
                size: plaintext.len() as u64,
                blake3: Some(*blake3::hash(&plaintext).as_bytes()),
                sse: s3repl::record::SseInfo {
                    kind: SseKind::SseKms,
                    kms_key_id: Some(kms.into()),
                    wrapped_dek: Some(wrapped.encode()),
                },
                ..VersionRecord::default()
            },
        );
    }
    let rule = |id: &str, priority: u32, dest: &str| {
        format!(
            r#"{{"ID":"{id}","Priority":{priority},"Status":"Enabled","Filter":{{}},
              "SourceSelectionCriteria":{{"SseKmsEncryptedObjects":{{"Status":"Enabled"}}}},
              "DeleteMarkerReplication":{{"Status":"Disabled"}},
              "Destination":{{"Bucket":"{dest}","EncryptionConfiguration":{{"ReplicaKmsKeyID":"{REPLICA_KEY}","UseSourceMultiRegionKey":{{"Status":"Enabled"}}}}}}}}"#
        )
    };
    let body = format!(
        r#"{{"Role":"{ROLE}","Rules":[{},{}]}}"#,
        rule("eu", 1, DST_A),
        rule("nowhere", 2, DST_NOWHERE)
    );
    let eu = Destination::in_memory(DST_A).with_region("eu-west-1");
    let mut reg = DestinationRegistry::new();
    reg.insert(eu.clone());
    reg.insert(Destination::in_memory(DST_NOWHERE));
    let status = MemoryStatus::new();
    let engine = Engine::builder()
        .log(&dirs.log, 1)
        .bucket("src", ReplicationConfiguration::parse(body.as_bytes(), None).unwrap())
        .source(Arc::new(source))
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .keys(ring.clone())
        .start()
        .unwrap();
    drain(engine, &writer).await;
    let status_of = |key: &str, dest: &str| {
        status
            .updates()
            .iter()
            .rev()
            .find(|u| u.key == key && u.destination == dest)
            .map(|u| u.status.clone())
    };
    assert_eq!(status_of("mrk/a", DST_A), Some(ReplicationStatus::Completed));
    for (key, dest, why) in [
        ("single/a", DST_A, "no related multi-Region key"),
        ("mrk/a", DST_NOWHERE, "Region is not configured"),
        ("single/a", DST_NOWHERE, "Region is not configured"),
    ] {
        let got = status_of(key, dest);
        assert!(
            matches!(&got, Some(ReplicationStatus::Failed { reason: FailureReason::DstKmsKeyNotFound, detail }) if detail.contains(why)),
            "{key} to {dest}: {got:?}"
        );
    }
    assert_eq!(read(&eu, "single/a").await, None);
    let got = eu.store().get(&object_store::path::Path::parse("mrk/a").unwrap()).await.unwrap();
    let meta = |name: &str| {
        got.attributes
            .get(&object_store::Attribute::Metadata(name.to_owned().into()))
            .map(|v| v.as_ref().to_owned())
    };
    assert_eq!(meta("s3repl-kms-key-id").as_deref(), Some(MRK_EU), "not ReplicaKmsKeyID");
    let wrap =
        WrappedKey::decode(&hex::decode(meta("s3repl-wrapped-dek").unwrap()).unwrap()).unwrap();
    assert_eq!(wrap.key_id(), MRK_EU);
    let replica_id = ObjectIdentity { bucket: DST_A, key: "mrk/a", version_id: "v1" };
    let mut dec = DecryptStream::new(wrap.unwrap_with(ring.as_ref(), replica_id).unwrap());
    let bytes = got.bytes().await.unwrap();
    let mut out = Vec::new();
    dec.update(&bytes, |b| out.extend_from_slice(&b)).unwrap();
    out.extend_from_slice(&dec.finish().unwrap());
    assert!(out == plaintext, "the replica decrypts to the source plaintext");
}
