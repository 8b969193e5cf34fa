//! Waiting for outcomes (issue 32): an embedder waits for given versions to be COMPLETED or
//! FAILED, from several tasks at once, through a status sink that wakes its waiters and passes
//! every update on to the embedder's own sink; and appends records filed under the bucket and
//! key they carry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use s3repl::config::ReplicationConfiguration;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{
    Engine, FailureReason, MemorySource, MemoryStatus, ReplicationStatus, StatusSink, StatusWaiter,
};
use s3repl::record::{AppendRecord, VersionRecord};
use s3repl_io::dest::{Destination, DestinationRegistry};

const VERSIONS: u32 = 1000;

fn config() -> ReplicationConfiguration {
    let body = r#"{"Role":"arn:aws:iam::123456789012:role/r","Rules":[
      {"ID":"a","Priority":1,"Status":"Enabled","Filter":{},
       "DeleteMarkerReplication":{"Status":"Disabled"},"Destination":{"Bucket":"arn:aws:s3:::dst-a"}},
      {"ID":"b","Priority":2,"Status":"Enabled","Filter":{},
       "DeleteMarkerReplication":{"Status":"Disabled"},"Destination":{"Bucket":"arn:aws:s3:::dst-b"}}]}"#;
    ReplicationConfiguration::parse(body.as_bytes(), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_waits_for_each_versions_outcome_from_several_tasks() {
    let dir = s3repl_tests::temp_dir("outcomes");
    let log = dir.path().join("log");
    let writer =
        LogWriter::open(&log, LogConfig { partitions: 4, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let mut registry = DestinationRegistry::new();
    for d in ["arn:aws:s3:::dst-a", "arn:aws:s3:::dst-b"] {
        registry.insert(Destination::in_memory(d));
    }
    // The embedder's own sink still sees every update.
    let own = Arc::new(MemoryStatus::new());
    let waiter = Arc::new(StatusWaiter::new(10_000, Some(own.clone() as Arc<dyn StatusSink>)));
    let engine = Engine::builder()
        .log(&log, 4)
        .notifier(writer.notifier())
        .bucket("src", config())
        .source(Arc::new(source.clone()))
        .destinations(registry)
        .status(waiter.clone())
        .start()
        .unwrap();

    // Every seventh version's bytes are missing from the source: those fail.
    let missing: BTreeSet<u32> = (0..VERSIONS).filter(|i| i % 7 == 3).collect();
    let records: Vec<VersionRecord> = (0..VERSIONS)
        .map(|i| {
            let (key, version) = (format!("k/{i}"), format!("v{i}"));
            let data = Bytes::from(format!("bytes {i}"));
            if !missing.contains(&i) {
                source.insert("src", &key, &version, data.clone());
            }
            let mut r = VersionRecord::put("src", &key, &version, data.len() as u64);
            r.blake3 = Some(*blake3::hash(&data).as_bytes());
            r
        })
        .collect();
    // Waiters start before the records exist: they must not miss an outcome reported meanwhile.
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let w = waiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = BTreeSet::new();
            for i in (t..VERSIONS).step_by(4) {
                let outcome = w
                    .wait("src", &format!("k/{i}"), &format!("v{i}"), Duration::from_mins(1))
                    .await
                    .unwrap_or_else(|| panic!("no outcome for version {i}"));
                assert_eq!(outcome.destinations.len(), 2, "{i}: {outcome:?}");
                if !outcome.completed() {
                    for (d, s) in &outcome.destinations {
                        assert!(
                            matches!(
                                s,
                                ReplicationStatus::Failed {
                                    reason: FailureReason::SrcVersionNotFound,
                                    ..
                                }
                            ),
                            "{i} at {d}: {s:?}"
                        );
                    }
                    failed.insert(i);
                }
            }
            failed
        }));
    }
    for chunk in records.chunks(100) {
        writer.append_records(chunk).unwrap();
    }
    let mut failed = BTreeSet::new();
    for t in tasks {
        failed.extend(t.await.unwrap());
    }
    assert_eq!(failed, missing, "exactly the versions whose bytes are missing failed");
    // A version no one appended has no outcome; waiting for it times out.
    assert!(waiter.wait("src", "k/none", "v", Duration::from_millis(100)).await.is_none());
    engine.shutdown().await.unwrap();
    let finals = own.updates().iter().filter(|u| u.status != ReplicationStatus::Pending).count();
    assert_eq!(finals, 2 * VERSIONS as usize, "the embedder's own sink got every final status");
}

/// `append_record` files a record under its own bucket and key: the same partition, in order,
/// as `append` with them given separately.
#[test]
fn records_are_appended_under_their_own_bucket_and_key() {
    let dir = s3repl_tests::temp_dir("append");
    let writer =
        LogWriter::open(dir.path(), LogConfig { partitions: 8, ..LogConfig::default() }).unwrap();
    for i in 0..50 {
        let r = VersionRecord::put("bucket-x", &format!("key/{i}"), "v1", 3);
        let at = writer.append_record(&r).unwrap();
        assert_eq!(at.partition, writer.partition_for("bucket-x", &r.key), "{i}");
    }
    let marker = VersionRecord::delete_marker("bucket-x", "key/1", "dm1");
    assert_eq!(marker.operation, s3repl::rules::EventKind::DeleteMarker);
    let at = writer.append_records(std::slice::from_ref(&marker)).unwrap();
    assert_eq!(at[0].partition, writer.partition_for("bucket-x", "key/1"));
}
