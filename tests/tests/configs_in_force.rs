//! Issue 25, finding 1, for embedders: no record committed while a configuration was in force is
//! skipped because the engine had not loaded that configuration yet. Configurations persisted in
//! the engine's configuration directory are installed before the first record is read (a restart
//! with a backlog, several buckets); records committed before a bucket had a configuration are
//! existing objects, decided by the record's commit time against the configuration's since time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use s3repl::config::ReplicationConfiguration;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{Engine, EngineHandle, MemorySource, MemoryStatus};
use s3repl::record::VersionRecord;
use s3repl_io::dest::Destination;

fn config(destination: &str, existing: bool) -> ReplicationConfiguration {
    let eor = if existing { r#","ExistingObjectReplication":{"Status":"Enabled"}"# } else { "" };
    let body = format!(
        r#"{{"Role":"arn:aws:iam::123456789012:role/r","Rules":[
          {{"ID":"all","Priority":1,"Status":"Enabled","Filter":{{}}{eor},
            "DeleteMarkerReplication":{{"Status":"Disabled"}},
            "Destination":{{"Bucket":"arn:aws:s3:::{destination}"}}}}]}}"#
    );
    ReplicationConfiguration::parse(body.as_bytes(), None).unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(),
    )
    .unwrap()
}

/// In-memory destinations made on demand and kept across engine restarts.
#[derive(Clone, Default)]
struct Destinations(Arc<Mutex<HashMap<String, Destination>>>);

impl Destinations {
    fn get(&self, arn: &str) -> Destination {
        self.0
            .lock()
            .unwrap()
            .entry(arn.to_owned())
            .or_insert_with(|| Destination::in_memory(arn))
            .clone()
    }

    async fn has(&self, destination: &str, key: &str) -> bool {
        let d = self.get(&format!("arn:aws:s3:::{destination}"));
        let path = object_store::path::Path::parse(key).unwrap();
        match d.store().get(&path).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => panic!("{e}"),
        }
    }
}

fn start(log: &Path, source: &MemorySource, dests: &Destinations) -> EngineHandle {
    let d = dests.clone();
    Engine::builder()
        .log(log, 2)
        .config_dir(log.join("configurations"))
        .source(Arc::new(source.clone()))
        .status(Arc::new(MemoryStatus::new()))
        .destination_resolver(move |arn| Some(d.get(arn)))
        .start()
        .unwrap()
}

/// Appends `n` put versions of `bucket` committed at `commit_time_ms`; returns their keys.
fn append(
    w: &LogWriter,
    source: &MemorySource,
    bucket: &str,
    tag: &str,
    n: u32,
    commit_time_ms: u64,
) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("{tag}/{i}");
        let data = Bytes::from(format!("{bucket} {key}"));
        let version_id = format!("{tag}-{i}");
        source.insert(bucket, &key, &version_id, data.clone());
        let rec = VersionRecord {
            bucket: bucket.into(),
            key: key.clone(),
            version_id,
            size: data.len() as u64,
            blake3: Some(*blake3::hash(&data).as_bytes()),
            commit_time_ms,
            ..VersionRecord::default()
        };
        w.append(bucket, &key, &rec.to_bytes().unwrap()).unwrap();
        keys.push(key);
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_installs_every_persisted_configuration_before_reading_the_backlog() {
    let dir = s3repl_tests::temp_dir("in-force-restart");
    let log = dir.path().join("log");
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let dests = Destinations::default();
    let mut engine = start(&log, &source, &dests);
    engine.set_config("bucket-one", &config("dst-one", false)).unwrap();
    engine.set_config("bucket-two", &config("dst-two", false)).unwrap();
    let since = engine.control().config_since("bucket-one").unwrap();
    assert!(since > 0 && since <= now_ms());
    append(&writer, &source, "bucket-one", "before-stop", 10, now_ms() + 1);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    engine.shutdown().await.unwrap();

    // While the engine is down, the server commits a backlog for both buckets.
    let later = now_ms() + 1;
    let one = append(&writer, &source, "bucket-one", "backlog", 600, later);
    let two = append(&writer, &source, "bucket-two", "backlog", 600, later);
    let mut engine = start(&log, &source, &dests);
    assert_eq!(engine.buckets(), ["bucket-one", "bucket-two"]);
    assert_eq!(engine.control().config_since("bucket-one"), Some(since), "the since time persists");
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    for k in &one {
        assert!(dests.has("dst-one", k).await, "bucket-one {k} was skipped");
    }
    for k in &two {
        assert!(dests.has("dst-two", k).await, "bucket-two {k} was skipped");
    }
    engine.shutdown().await.unwrap();

    // Removal persists too: after a restart, the bucket's records are not replicated.
    let engine = start(&log, &source, &dests);
    assert!(engine.remove_config("bucket-two").unwrap());
    engine.shutdown().await.unwrap();
    let mut engine = start(&log, &source, &dests);
    assert_eq!(engine.buckets(), ["bucket-one"]);
    let gone = append(&writer, &source, "bucket-two", "after-removal", 5, now_ms() + 1);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    for k in &gone {
        assert!(!dests.has("dst-two", k).await);
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_committed_before_a_bucket_had_a_configuration_are_existing_objects() {
    let dir = s3repl_tests::temp_dir("in-force-existing");
    let log = dir.path().join("log");
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let dests = Destinations::default();
    let engine = start(&log, &source, &dests);
    engine.set_config("plain", &config("dst-plain", false)).unwrap();
    engine.set_config("with-eor", &config("dst-eor", true)).unwrap();
    let since = engine.control().config_since("plain").unwrap();
    engine.shutdown().await.unwrap();
    // A backlog read under the configurations: versions committed before they were installed
    // (the server's clock says so), after, and without a commit time.
    let before = since.saturating_sub(60_000);
    let old = append(&writer, &source, "plain", "old", 20, before);
    let old_eor = append(&writer, &source, "with-eor", "old", 20, before);
    let unstamped = append(&writer, &source, "plain", "unstamped", 5, 0);
    let new = append(&writer, &source, "plain", "new", 20, since);
    let mut engine = start(&log, &source, &dests);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await);
    for k in &old {
        assert!(!dests.has("dst-plain", k).await, "{k} predates the configuration");
    }
    for k in &old_eor {
        assert!(dests.has("dst-eor", k).await, "ExistingObjectReplication selects {k}");
    }
    for k in new.iter().chain(&unstamped) {
        assert!(dests.has("dst-plain", k).await, "{k} was committed under the configuration");
    }

    // Replacing a configuration keeps the bucket's since time; deleting and adding one again
    // starts a new one.
    engine.set_config("plain", &config("dst-plain", false)).unwrap();
    assert_eq!(engine.control().config_since("plain"), Some(since));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(engine.remove_config("plain").unwrap());
    engine.set_config("plain", &config("dst-plain", false)).unwrap();
    assert!(engine.control().config_since("plain").unwrap() > since);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_configuration_that_cannot_be_read_fails_the_start() {
    let dir = s3repl_tests::temp_dir("in-force-damaged");
    let log = dir.path().join("log");
    drop(LogWriter::open(&log, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap());
    std::fs::create_dir_all(log.join("configurations")).unwrap();
    std::fs::write(log.join("configurations/bucket.json"), b"{\"bucket\":").unwrap();
    let err = Engine::builder()
        .log(&log, 2)
        .config_dir(log.join("configurations"))
        .source(Arc::new(MemorySource::new()))
        .status(Arc::new(MemoryStatus::new()))
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("bucket.json"), "{err}");
}
