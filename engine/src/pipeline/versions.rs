//! The version map: for each destination, which replica version holds each source version.
//!
//! Targets such as AWS S3 (and `SeaweedFS`) mint their own version ids, so a replica cannot be
//! addressed by its source version id. The copier records the id the destination answered with;
//! a later metadata update (tags) goes to exactly that replica version even when newer versions
//! sit above it, and a replay after a crash recognises a copy it already made without asking
//! the destination.
//!
//! Storage: one [`redb`] database per consumer, `<state>/versions/<consumer>.redb`, keyed by
//! (input partition, destination ARN, source bucket, key, source version id): a partition's
//! entries are one key range, so they can follow the partition should it move to another
//! process. Entries written before the partition was part of the key stay in the first table
//! (`replica_versions`), which a lookup that misses still reads. Recording is an in-memory insert
//! (the copier must not wait for a disk); [`VersionMap::flush`] commits what was recorded in one
//! durable transaction, and the checkpoint task calls it *before* saving each checkpoint, so
//! every record below a saved checkpoint has its mapping on disk. Mappings of records above the
//! checkpoint can be lost in a crash; those records are replayed, and the replay check finds
//! the replica by its stamp and records its version again. Entries are never removed: S3 never
//! replicates version deletions, so a replica version lives as long as the destination keeps it
//! (about 100 bytes per replicated version).
//!
//! A failed commit (a full disk, say) leaves the mappings pending, and redb refuses every
//! write after a failed one: the next [`VersionMap::flush`] opens the database again (redb
//! goes back to its last durable commit) and writes the whole pending batch anew, so a disk
//! that has room again takes the map's writes again without a restart.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::Error;

/// (partition, destination ARN, source bucket, key, source version id) → replica version id.
const TABLE: TableDefinition<(u32, &str, &str, &str, &str), &str> =
    TableDefinition::new("replica_versions_by_partition");

/// The first layout, without the partition: read, never written.
const LEGACY: TableDefinition<(&str, &str, &str, &str), &str> =
    TableDefinition::new("replica_versions");

/// One source version at one destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Replica {
    /// The input partition whose record the replica copies.
    pub(crate) partition: u32,
    pub(crate) destination: std::sync::Arc<str>,
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) source_version: String,
}

impl Replica {
    fn as_key(&self) -> (u32, &str, &str, &str, &str) {
        (self.partition, &*self.destination, &self.bucket, &self.key, &self.source_version)
    }

    fn as_legacy_key(&self) -> (&str, &str, &str, &str) {
        (&*self.destination, &self.bucket, &self.key, &self.source_version)
    }
}

/// The persisted map (see the module documentation).
pub(crate) struct VersionMap {
    /// `None` only after a failed commit, until opening it again succeeds.
    db: RwLock<Option<Arc<Database>>>,
    /// A commit failed: the database must be opened again before the next one.
    reopen: AtomicBool,
    path: PathBuf,
    /// Recorded, not yet committed.
    pending: Mutex<HashMap<Replica, String>>,
}

impl std::fmt::Debug for VersionMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionMap").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Bytes of the version map's page cache. It fills as versions replicate, outage or not, and
/// stays: with 16 MiB a 3-minute outage under load (`scripts/outage.sh --warmup 60 --outage 180
/// --after 60`) ended 16 MiB above its RSS before the outage, with 4 MiB 6 MiB. Commits insert
/// in key order (see [`VersionMap::flush`]), so the smaller cache costs nothing measurable:
/// 7.5–8.6 µs per version either way at 2,000,000 versions into memory (`s3repl bench
/// --destination memory --objects 2000000 --size 4KiB`), where unsorted commits with 4 MiB
/// measured 8.0–8.9 against 7.4–8.5 with 16 MiB.
pub(crate) const VERSION_MAP_CACHE: usize = 4 << 20;

impl VersionMap {
    /// Opens (or creates) the map at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let fail = |reason: String| Error::VersionMap { path: path.to_owned(), reason };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let db = open_database(path).map_err(|e| fail(e.to_string()))?;
        Ok(VersionMap {
            db: RwLock::new(Some(Arc::new(db))),
            reopen: AtomicBool::new(false),
            path: path.to_owned(),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The open database; opens it again if a failed commit closed it.
    fn database(&self) -> Result<Arc<Database>, Error> {
        if let Some(db) = self.db.read().clone() {
            return Ok(db);
        }
        self.open_again()
    }

    /// Drops the database (once no lookup holds it) and opens the file again.
    fn open_again(&self) -> Result<Arc<Database>, Error> {
        let mut slot = self.db.write();
        if let Some(old) = slot.take()
            && let Err(shared) = Arc::try_unwrap(old)
        {
            // A lookup holds it: the next flush tries again.
            *slot = Some(shared);
            return Err(self.error("in use by a lookup while it had to be opened again"));
        }
        let db = Arc::new(open_database(&self.path).map_err(|e| self.error(e))?);
        *slot = Some(db.clone());
        Ok(db)
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::VersionMap { path: self.path.clone(), reason: e.to_string() }
    }

    /// How many recorded mappings wait for the next commit.
    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// Remembers that `replica` is stored as `version` (durable at the next flush).
    pub(crate) fn record(&self, replica: Replica, version: String) {
        self.pending.lock().insert(replica, version);
    }

    /// The replica version holding `replica`, if recorded. Reads the database (blocking; a
    /// few microseconds from its cache).
    pub(crate) fn lookup(&self, replica: &Replica) -> Result<Option<String>, Error> {
        if let Some(v) = self.pending.lock().get(replica) {
            return Ok(Some(v.clone()));
        }
        // Held while the transaction reads: the map is not opened again under it.
        let db = self.database()?;
        let txn = db.begin_read().map_err(|e| self.error(e))?;
        match txn.open_table(TABLE) {
            Ok(table) => {
                if let Some(v) = table.get(replica.as_key()).map_err(|e| self.error(e))? {
                    return Ok(Some(v.value().to_owned()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        match txn.open_table(LEGACY) {
            Ok(table) => Ok(table
                .get(replica.as_legacy_key())
                .map_err(|e| self.error(e))?
                .map(|v| v.value().to_owned())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Commits everything recorded so far in one durable transaction; returns how many
    /// mappings it wrote. On failure the mappings stay pending (and the caller must not
    /// advance past the records they belong to); the next call opens the database again
    /// first, so it can succeed once the cause (a full disk) is gone.
    pub(crate) fn flush(&self) -> Result<usize, Error> {
        let db = if self.reopen.load(Ordering::Acquire) {
            let db = self.open_again()?;
            self.reopen.store(false, Ordering::Release);
            tracing::info!(path = %self.path.display(), "The version map was opened again after a failed commit.");
            db
        } else {
            self.database()?
        };
        let batch = std::mem::take(&mut *self.pending.lock());
        if batch.is_empty() {
            return Ok(0);
        }
        let written = (|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(TABLE)?;
                // In key order: each B-tree page is then visited once per batch, not once per
                // entry (the batch comes from a hash map), so few pages must stay cached.
                let mut sorted: Vec<_> = batch.iter().map(|(r, v)| (r.as_key(), v)).collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                for (key, version) in sorted {
                    table.insert(key, version.as_str())?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        match written {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                // Newer recordings (made meanwhile) win over the batch being put back.
                let mut pending = self.pending.lock();
                for (replica, version) in batch {
                    pending.entry(replica).or_insert(version);
                }
                self.reopen.store(true, Ordering::Release);
                Err(self.error(e))
            }
        }
    }
}

/// Opens (or creates) the database file.
fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    // redb caches up to 1 GiB per database by default, and the map gains an entry per
    // replica: without a bound the process grows with every version replicated (+41 MiB
    // over 146,000 versions into SeaweedFS, `scripts/outage.sh`). Lookups (rare: metadata
    // updates, replay checks) need the B-tree's inner pages, a small part of it; a page
    // outside the cache is read back from the file.
    redb::Builder::new().set_cache_size(VERSION_MAP_CACHE).create(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn replica(key: &str, v: &str) -> Replica {
        Replica {
            partition: 0,
            destination: "arn:aws:s3:::dst".into(),
            bucket: "src".into(),
            key: key.into(),
            source_version: v.into(),
        }
    }

    #[test]
    fn flushed_mappings_survive_reopening_and_pending_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("s3repl-versions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c.redb");
        {
            let map = VersionMap::open(&path).unwrap();
            assert_eq!(map.lookup(&replica("k", "s1")).unwrap(), None);
            map.record(replica("k", "s1"), "d1".into());
            map.record(replica("k", "s2"), "d2".into());
            assert_eq!(map.lookup(&replica("k", "s1")).unwrap().as_deref(), Some("d1"));
            assert_eq!(map.flush().unwrap(), 2);
            assert_eq!(map.flush().unwrap(), 0);
            assert_eq!(map.lookup(&replica("k", "s2")).unwrap().as_deref(), Some("d2"));
            // Recorded after the last flush: lost with the process.
            map.record(replica("k", "s3"), "d3".into());
        }
        let map = VersionMap::open(&path).unwrap();
        assert_eq!(map.lookup(&replica("k", "s1")).unwrap().as_deref(), Some("d1"));
        assert_eq!(map.lookup(&replica("k", "s2")).unwrap().as_deref(), Some("d2"));
        assert_eq!(map.lookup(&replica("k", "s3")).unwrap(), None);
        // Keys are exact: another destination, bucket or key does not match.
        let other = Replica { destination: "arn:aws:s3:::other".into(), ..replica("k", "s1") };
        assert_eq!(map.lookup(&other).unwrap(), None);
        assert_eq!(map.lookup(&replica("k2", "s1")).unwrap(), None);
        drop(map);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Entries are addressed per partition; those of the first layout (no partition) are
    /// still found.
    #[test]
    fn entries_are_kept_per_partition_and_the_first_layout_is_still_read() {
        let dir = std::env::temp_dir().join(format!("s3repl-versions-p-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c.redb");
        {
            // A map written by a version that kept no partition.
            std::fs::create_dir_all(&dir).unwrap();
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(LEGACY)
                .unwrap()
                .insert(replica("old", "s1").as_legacy_key(), "d-old")
                .unwrap();
            txn.commit().unwrap();
        }
        let map = VersionMap::open(&path).unwrap();
        let in_p3 = |key: &str, v: &str| Replica { partition: 3, ..replica(key, v) };
        map.record(in_p3("k", "s1"), "d1".into());
        map.flush().unwrap();
        assert_eq!(map.lookup(&in_p3("k", "s1")).unwrap().as_deref(), Some("d1"));
        assert_eq!(map.lookup(&replica("k", "s1")).unwrap(), None, "another partition's entry");
        assert_eq!(map.lookup(&in_p3("old", "s1")).unwrap().as_deref(), Some("d-old"));
        let txn = map.database().unwrap().begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
        let p3: Vec<String> = table
            .range((3, "", "", "", "")..(4, "", "", "", ""))
            .unwrap()
            .map(|e| e.unwrap().0.value().3.to_owned())
            .collect();
        assert_eq!(p3, ["k"], "a partition's entries are one key range");
        drop((table, txn, map));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// After a failed commit the map is opened again before the next one (redb refuses every
    /// write after a failed one), and not while a lookup holds it: the pending entries wait,
    /// still found, and are committed once it could be opened again.
    #[test]
    fn after_a_failed_commit_the_map_is_opened_again_and_nothing_pending_is_lost() {
        let dir = std::env::temp_dir().join(format!("s3repl-versions-r-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c.redb");
        let map = VersionMap::open(&path).unwrap();
        map.record(replica("k", "s1"), "d1".into());
        assert_eq!(map.flush().unwrap(), 1);
        map.record(replica("k", "s2"), "d2".into());
        // As a failed commit leaves it.
        map.reopen.store(true, Ordering::Release);
        let held = map.database().unwrap();
        assert!(map.flush().is_err(), "opened again while a lookup holds it");
        assert_eq!(map.lookup(&replica("k", "s2")).unwrap().as_deref(), Some("d2"), "pending");
        drop(held);
        assert_eq!(map.flush().unwrap(), 1);
        assert!(!map.reopen.load(Ordering::Acquire));
        assert_eq!(map.lookup(&replica("k", "s1")).unwrap().as_deref(), Some("d1"));
        drop(map);
        let map = VersionMap::open(&path).unwrap();
        assert_eq!(map.lookup(&replica("k", "s2")).unwrap().as_deref(), Some("d2"), "durable");
        drop(map);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_map_larger_than_its_cache_finds_every_mapping_after_reopening() {
        let dir =
            std::env::temp_dir().join(format!("s3repl-versions-large-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c.redb");
        // About 8 MiB of entries (twice the cache), in hash order, over several commits, keys
        // and source versions scattered as a partition's records are.
        let (n, commits) = (60_000u64, 6);
        let name = |i: u64| {
            let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (format!("dir-{}/object-{h:016x}-{i}", h % 97), format!("v{:032x}", h ^ i))
        };
        {
            let map = VersionMap::open(&path).unwrap();
            for c in 0..commits {
                for i in (c..n).step_by(usize::try_from(commits).unwrap()) {
                    let (key, version) = name(i);
                    map.record(replica(&key, &version), format!("replica-{i}"));
                }
                assert_eq!(map.flush().unwrap() as u64, n / commits);
            }
        }
        let map = VersionMap::open(&path).unwrap();
        for i in 0..n {
            let (key, version) = name(i);
            let want = format!("replica-{i}");
            assert_eq!(map.lookup(&replica(&key, &version)).unwrap(), Some(want), "entry {i}");
        }
        assert_eq!(map.lookup(&replica("dir-0/object-missing", "v")).unwrap(), None);
        drop(map);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
