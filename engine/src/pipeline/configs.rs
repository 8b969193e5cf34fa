//! The buckets' replication configurations as the engine holds them: each bucket's compiled
//! rules, the configuration they came from, and the time since which the bucket has had a
//! configuration without interruption; and, when the embedder gives the engine a directory for
//! them ([`super::EngineBuilder::config_dir`]), their persistence.
//!
//! The rule this module exists for: **no record committed while a configuration was in force is
//! skipped because the engine had not loaded that configuration yet.** Two things make it hold:
//! - a persisted configuration is installed before any log reader starts (a restart with a
//!   backlog matches the backlog under it, never under "no configuration");
//! - records committed before a bucket had a configuration are *existing objects* (replicated
//!   only by rules with `ExistingObjectReplication`), decided by comparing the record's commit
//!   time with the configuration's *since* time, which is persisted with it. A configuration
//!   installed while the engine runs takes its since time *after* it is in the engine: a record
//!   committed later is read later, so it is matched under it.
//!
//! Replacing a bucket's configuration keeps its since time (the bucket never stopped having
//! one: records committed under the old configuration and read after the change are matched
//! under the new one, as S3 applies the configuration in force when it replicates). Deleting it
//! ends the interval: records read afterwards are not replicated, and a later configuration
//! starts a new interval.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use s3repl_io::log::{FileStorage, write_atomic};

use crate::Error;
use crate::config::{ReplicationConfiguration, Variant};
use crate::rules::CompiledRules;

/// A since time not yet stamped: every record with a known commit time counts as committed
/// before the configuration (it is being installed).
const UNSTAMPED: u64 = u64::MAX;

/// One bucket's configuration in the engine.
#[derive(Debug)]
pub(crate) struct BucketConfig {
    /// The compiled rules records are matched under.
    pub(crate) rules: Arc<CompiledRules>,
    /// The configuration as installed (served back to embedders, persisted).
    pub(crate) config: Arc<ReplicationConfiguration>,
    /// Milliseconds since the Unix epoch since which the bucket has had a configuration
    /// without interruption; 0 for "always" (configurations given to the builder, and those
    /// persisted before since times were).
    since_ms: AtomicU64,
}

impl BucketConfig {
    /// A configuration in force since `since_ms`.
    pub(crate) fn new(
        rules: Arc<CompiledRules>,
        config: Arc<ReplicationConfiguration>,
        since_ms: u64,
    ) -> Self {
        BucketConfig { rules, config, since_ms: AtomicU64::new(since_ms) }
    }

    /// A configuration being installed: its since time is stamped by [`BucketConfig::stamp`]
    /// once it is in the engine.
    pub(crate) fn unstamped(
        rules: Arc<CompiledRules>,
        config: Arc<ReplicationConfiguration>,
    ) -> Self {
        BucketConfig::new(rules, config, UNSTAMPED)
    }

    /// Stamps the since time of a configuration that is now in the engine; returns it.
    pub(crate) fn stamp(&self, now_ms: u64) -> u64 {
        self.since_ms.store(now_ms, Ordering::Release);
        now_ms
    }

    /// The since time (milliseconds since the Unix epoch; 0 for always).
    pub(crate) fn since_ms(&self) -> u64 {
        self.since_ms.load(Ordering::Acquire)
    }

    /// Whether a record committed at `commit_time_ms` predates the configuration (an
    /// existing object). A commit time of 0 means the server did not stamp one; such records
    /// cannot be placed before the configuration and are matched as new.
    pub(crate) fn predates(&self, commit_time_ms: u64) -> bool {
        commit_time_ms != 0 && commit_time_ms < self.since_ms()
    }
}

/// Bucket → configuration, replaced as a whole on a change.
pub(crate) type Buckets = HashMap<String, Arc<BucketConfig>>;

/// A persisted configuration: the S3 XML and its since time.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Persisted {
    bucket: String,
    since_ms: u64,
    /// The configuration in S3's XML (lossless).
    configuration: String,
}

/// Where a directory of persisted configurations is kept: `<bucket>.json` per bucket, written
/// atomically. `<bucket>.xml` files (S3 XML alone, as `s3repl run` persisted them before since
/// times existed, or provisioned by hand) are read as in force since always, and replaced by
/// the bucket's next change.
#[derive(Debug, Clone)]
pub(crate) struct ConfigStore {
    dir: PathBuf,
}

fn store_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Configuration { path: path.to_owned(), reason: reason.to_string() }
}

impl ConfigStore {
    pub(crate) fn new(dir: PathBuf) -> Self {
        ConfigStore { dir }
    }

    /// Every persisted configuration: (bucket, configuration, since). An unreadable or invalid
    /// file is an error, not a skipped bucket: skipping it would pass its records unreplicated.
    pub(crate) fn load(&self) -> Result<Vec<(String, ReplicationConfiguration, u64)>, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(store_error(&self.dir, e)),
        };
        let mut found: HashMap<String, (ReplicationConfiguration, u64, bool)> = HashMap::new();
        for entry in entries {
            let path = entry.map_err(|e| store_error(&self.dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let (bucket, json) = if let Some(b) = name.strip_suffix(".json") {
                (b, true)
            } else if let Some(b) = name.strip_suffix(".xml") {
                (b, false)
            } else {
                continue;
            };
            if !super::valid_bucket_name(bucket) {
                continue;
            }
            let body = std::fs::read(&path).map_err(|e| store_error(&path, e))?;
            let (config, since) = if json {
                let p: Persisted =
                    serde_json::from_slice(&body).map_err(|e| store_error(&path, e))?;
                if p.bucket != bucket {
                    return Err(store_error(
                        &path,
                        format!("holds the configuration of bucket {}", p.bucket),
                    ));
                }
                let c = ReplicationConfiguration::from_xml(
                    p.configuration.as_bytes(),
                    Some(Variant::S3),
                )
                .map_err(|e| store_error(&path, e))?;
                (c, p.since_ms)
            } else {
                let c = ReplicationConfiguration::from_xml(&body, Some(Variant::S3))
                    .map_err(|e| store_error(&path, e))?;
                (c, 0)
            };
            // A bucket with both files: the JSON one is the newer (written by a change, which
            // removes the XML one after it).
            match found.get(bucket) {
                Some((_, _, true)) if !json => {}
                _ => {
                    found.insert(bucket.to_owned(), (config, since, json));
                }
            }
        }
        let mut all: Vec<_> = found.into_iter().map(|(b, (c, s, _))| (b, c, s)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// Persists `bucket`'s configuration and since time (durably, before returning).
    pub(crate) fn save(
        &self,
        bucket: &str,
        config: &ReplicationConfiguration,
        since_ms: u64,
    ) -> Result<(), Error> {
        self.check_name(bucket)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| store_error(&self.dir, e))?;
        let p = Persisted { bucket: bucket.to_owned(), since_ms, configuration: config.to_xml() };
        let body = serde_json::to_vec_pretty(&p).map_err(|e| store_error(&self.dir, e))?;
        let path = self.dir.join(format!("{bucket}.json"));
        write_atomic(&FileStorage, &path, &body)?;
        self.remove_file(&self.dir.join(format!("{bucket}.xml")))
    }

    /// Removes `bucket`'s persisted configuration (durably, before returning).
    pub(crate) fn remove(&self, bucket: &str) -> Result<(), Error> {
        self.check_name(bucket)?;
        self.remove_file(&self.dir.join(format!("{bucket}.json")))?;
        self.remove_file(&self.dir.join(format!("{bucket}.xml")))
    }

    fn check_name(&self, bucket: &str) -> Result<(), Error> {
        if super::valid_bucket_name(bucket) {
            Ok(())
        } else {
            Err(store_error(&self.dir, format!("{bucket:?} is not a valid bucket name")))
        }
    }

    fn remove_file(&self, path: &Path) -> Result<(), Error> {
        match std::fs::remove_file(path) {
            Ok(()) => {
                use s3repl_io::log::Storage as _;
                FileStorage.sync_dir(&self.dir).map_err(|e| store_error(&self.dir, e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(prefix: &str) -> ReplicationConfiguration {
        let body = format!(
            r#"{{"Role":"arn:aws:iam::123456789012:role/r","Rules":[{{"ID":"a","Priority":1,"Status":"Enabled","Filter":{{"Prefix":"{prefix}"}},"DeleteMarkerReplication":{{"Status":"Disabled"}},"Destination":{{"Bucket":"arn:aws:s3:::dst"}}}}]}}"#
        );
        ReplicationConfiguration::parse(body.as_bytes(), None).unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("s3repl-configs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saved_configurations_load_back_with_their_since_times() {
        let d = dir("roundtrip");
        let store = ConfigStore::new(d.clone());
        store.save("one", &config("a/"), 1_700_000_000_000).unwrap();
        store.save("two", &config("b/"), 5).unwrap();
        let all = store.load().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0, "one");
        assert_eq!(all[0].1.to_xml(), config("a/").to_xml());
        assert_eq!(all[0].2, 1_700_000_000_000);
        assert_eq!((all[1].0.as_str(), all[1].2), ("two", 5));
        store.remove("one").unwrap();
        assert_eq!(store.load().unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn legacy_xml_files_load_as_in_force_always_and_a_change_replaces_them() {
        let d = dir("legacy");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("old.xml"), config("x/").to_xml()).unwrap();
        let store = ConfigStore::new(d.clone());
        let all = store.load().unwrap();
        assert_eq!((all[0].0.as_str(), all[0].2), ("old", 0));
        store.save("old", &config("y/"), 42).unwrap();
        assert!(!d.join("old.xml").exists());
        let all = store.load().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].2, 42);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_file_fails_the_load_instead_of_dropping_the_bucket() {
        let d = dir("damaged");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("bad.json"), b"{not json").unwrap();
        assert!(matches!(ConfigStore::new(d.clone()).load(), Err(Error::Configuration { .. })));
        std::fs::write(
            d.join("bad.json"),
            serde_json::to_vec(&Persisted {
                bucket: "other".into(),
                since_ms: 1,
                configuration: config("a/").to_xml(),
            })
            .unwrap(),
        )
        .unwrap();
        assert!(ConfigStore::new(d.clone()).load().is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bucket_names_that_are_not_file_names_are_refused() {
        let d = dir("names");
        let store = ConfigStore::new(d.clone());
        for bad in ["../escape", "a/b", "", "UPPER"] {
            assert!(store.save(bad, &config("a/"), 1).is_err(), "{bad}");
            assert!(store.remove(bad).is_err(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn predates_compares_known_commit_times_only() {
        let c = BucketConfig::unstamped(
            Arc::new(CompiledRules::compile(&config("a/")).unwrap()),
            Arc::new(config("a/")),
        );
        assert!(c.predates(1), "unstamped: every known commit time predates it");
        assert!(!c.predates(0), "no commit time: never an existing object");
        c.stamp(1000);
        assert!(c.predates(999));
        assert!(!c.predates(1000));
        assert!(!c.predates(0));
    }
}
