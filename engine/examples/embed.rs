//! Embedding the engine in a storage server, end to end: the server stores each object version
//! durably, appends its record to the committed-version log, and the engine replicates it to a
//! local destination directory; the server waits for each version's outcome and verifies the
//! replicas. `cargo run -p s3repl --example embed` prints `{"replicated":N,"verified":N}`; the
//! test suite runs it too (`[[example]] test = true`), and the README's library snippet is the
//! part between the `README` markers, checked to be identical by `engine/tests/readme.rs`.

use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = r#"{"Role": "arn:aws:iam::123456789012:role/replication",
  "Rules": [{"ID": "everything", "Priority": 1, "Status": "Enabled", "Filter": {},
             "DeleteMarkerReplication": {"Status": "Disabled"},
             "Destination": {"Bucket": "arn:aws:s3:::backup"}}]}"#;

/// The objects the "server" stores: (key, bytes).
const OBJECTS: [(&str, &str); 3] = [("a.jpg", "aaa"), ("b.jpg", "bbbb"), ("c/d.jpg", "ccccc")];

/// Replicates the objects; returns (replicated, verified).
async fn embed(dir: &std::path::Path) -> Result<(usize, usize), s3repl::Error> {
    // README-BEGIN
    use s3repl::config::{BucketContext, ReplicationConfiguration};
    use s3repl::dest::{Destination, DestinationRegistry};
    use s3repl::log::{LogConfig, LogWriter};
    use s3repl::pipeline::{Engine, LocalVersionStore, StatusWaiter};
    use s3repl::record::{AppendRecord, VersionRecord};

    let (log_dir, store_dir, backup_dir) = (dir.join("log"), dir.join("store"), dir.join("backup"));
    // A bucket's configuration, as PutBucketReplication carries it (XML or AWS CLI JSON).
    let config = ReplicationConfiguration::parse(CONFIG.as_bytes(), None)?;
    config.validate(&BucketContext::default())?; // S3's checks and error codes

    // The server's versions (files, each fsynced before `put` returns) and the log of
    // committed versions it appends to.
    let store = LocalVersionStore::new(&store_dir);
    let writer = LogWriter::open(&log_dir, LogConfig { partitions: 4, ..LogConfig::default() })?;

    // The engine, on the current tokio runtime: where to read, what to replicate where, and
    // a status sink that wakes whoever waits for a version (a real server also passes the
    // statuses on to its own store: the second argument).
    let mut destinations = DestinationRegistry::new();
    destinations.insert(Destination::local("arn:aws:s3:::backup", &backup_dir)?);
    let outcomes = Arc::new(StatusWaiter::new(100_000, None));
    let engine = Engine::builder()
        .log(&log_dir, 4) // checked against the log's own partition count
        .notifier(writer.notifier()) // readers wake on appends instead of polling
        .bucket("photos", config)
        .source(Arc::new(store.clone()))
        .destinations(destinations)
        .status(outcomes.clone())
        .start()?;

    // Each PUT the server commits: the bytes durable first, then the record.
    for (key, data) in OBJECTS {
        let version_id = format!("v-{key}");
        store.put("photos", key, &version_id, data.as_bytes())?;
        let mut record = VersionRecord::put("photos", key, &version_id, data.len() as u64);
        record.blake3 = Some(*blake3::hash(data.as_bytes()).as_bytes()); // checked end to end
        writer.append_record(&record)?;
    }

    // Wait for each version's outcome (COMPLETED or FAILED, per destination).
    let mut replicated = 0;
    for (key, _) in OBJECTS {
        let version_id = format!("v-{key}");
        let outcome = outcomes.wait("photos", key, &version_id, Duration::from_secs(30)).await;
        if outcome.is_some_and(|o| o.completed()) {
            replicated += 1;
        }
    }
    engine.shutdown().await?;
    // README-END
    // Verify: every replica holds its version's bytes.
    let verified = OBJECTS
        .iter()
        .filter(|(key, data)| {
            std::fs::read(backup_dir.join(key)).is_ok_and(|bytes| bytes == data.as_bytes())
        })
        .count();
    Ok((replicated, verified))
}

#[tokio::main]
async fn main() -> Result<(), s3repl::Error> {
    let dir = std::env::temp_dir().join(format!("s3repl-embed-{}", std::process::id()));
    let outcome = embed(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (replicated, verified) = outcome?;
    println!("{{\"replicated\":{replicated},\"verified\":{verified}}}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_example_replicates_and_verifies_every_version() {
        let dir = std::env::temp_dir().join(format!("s3repl-embed-test-{}", std::process::id()));
        let outcome = super::embed(&dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(outcome.unwrap(), (3, 3));
    }
}
