//! Embedding the engine in a storage server, end to end: the server stores each object version
//! durably, appends its record to the committed-version log, and the engine replicates it to a
//! local destination directory. `cargo run -p s3repl --example embed` runs it; the test suite
//! runs it too (`[[example]] test = true`), and the README's library snippet is the part
//! between the `README` markers, checked to be identical by `engine/tests/readme.rs`.

use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = r#"{"Role": "arn:aws:iam::123456789012:role/replication",
  "Rules": [{"ID": "everything", "Priority": 1, "Status": "Enabled", "Filter": {},
             "DeleteMarkerReplication": {"Status": "Disabled"},
             "Destination": {"Bucket": "arn:aws:s3:::backup"}}]}"#;

/// Replicates three versions and returns how many reached the destination.
async fn embed(dir: &std::path::Path) -> Result<usize, Box<dyn std::error::Error>> {
    // README-BEGIN
    use s3repl::config::{BucketContext, ReplicationConfiguration};
    use s3repl::dest::{Destination, DestinationRegistry};
    use s3repl::log::{LogConfig, LogWriter};
    use s3repl::pipeline::{Engine, LocalVersionStore, MemoryStatus, ReplicationStatus};
    use s3repl::record::VersionRecord;

    let (log_dir, store_dir, backup_dir) = (dir.join("log"), dir.join("store"), dir.join("backup"));
    // A bucket's configuration, as PutBucketReplication carries it (XML or AWS CLI JSON).
    let config = ReplicationConfiguration::parse(CONFIG.as_bytes(), None)?;
    config.validate(&BucketContext::default())?; // S3's checks and error codes

    // The server's versions (here: files, fsynced before their record is appended) and the
    // log of committed versions it appends to.
    let store = LocalVersionStore::new(&store_dir).durable(true);
    let writer = LogWriter::open(&log_dir, LogConfig { partitions: 4, ..LogConfig::default() })?;

    // The engine (on the current tokio runtime): where to read, what to replicate where.
    let mut destinations = DestinationRegistry::new();
    destinations.insert(Destination::local("arn:aws:s3:::backup", &backup_dir)?);
    let status = Arc::new(MemoryStatus::new()); // a real server stores these with the version
    let mut engine = Engine::builder()
        .log(&log_dir, 4)
        .notifier(writer.notifier()) // readers wake on appends instead of polling
        .bucket("photos", config)
        .source(Arc::new(store.clone()))
        .destinations(destinations)
        .status(status.clone())
        .start()?;

    // Each PUT the server commits: bytes durable first, then the record.
    for (key, data) in [("a.jpg", "aaa"), ("b.jpg", "bbbb"), ("c/d.jpg", "ccccc")] {
        let version_id = format!("v-{key}");
        store.put("photos", key, &version_id, data.as_bytes())?;
        let record = VersionRecord {
            bucket: "photos".into(),
            key: key.into(),
            version_id,
            size: data.len() as u64,
            blake3: Some(*blake3::hash(data.as_bytes()).as_bytes()), // checked end to end
            ..VersionRecord::default()
        };
        writer.append("photos", key, &record.to_bytes()?)?;
    }

    // Wait until everything appended so far is replicated (and checkpointed).
    engine.checkpoint_now();
    let done = engine.wait_for(&writer.next_seqs(), Duration::from_secs(30)).await;
    assert!(done && engine.halts().is_empty(), "replication stalled: {:?}", engine.halts());
    engine.shutdown().await?;
    // README-END
    let completed =
        status.updates().iter().filter(|u| u.status == ReplicationStatus::Completed).count();
    Ok(completed)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("s3repl-embed-{}", std::process::id()));
    let replicated = embed(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("replicated {} versions", replicated?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_example_replicates_every_version() {
        let dir = std::env::temp_dir().join(format!("s3repl-embed-test-{}", std::process::id()));
        let replicated = super::embed(&dir).await;
        let files = walk(&dir.join("backup"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(replicated.unwrap(), 3);
        assert_eq!(files, 3, "three replicas on disk");
    }

    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
        })
    }
}
