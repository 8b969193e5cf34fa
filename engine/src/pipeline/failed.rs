//! The durable failed-operations queue. An operation that ends FAILED is journaled (fsynced
//! before its log position can be checkpointed past) with everything needed to redo it, then
//! retried in the background with exponential backoff — through the per-key scheduler, so a
//! retry never overtakes or is overtaken by newer operations on the same key. An entry leaves
//! the queue when a retry completes, or when a newer version of the same key reaches the same
//! destination (replaying the old one then would make a stale version the replica's latest).
//! After `max_rounds` failed retries an entry is parked: kept and listed, retried again only on
//! request. Nothing is dropped silently (`MinIO` drops failed entries after three retries).
//!
//! Journal: `<log dir>/failed/<consumer>.jsonl`, one JSON object per line (`add` with the
//! operation, `done` with an id and why); a torn last line is ignored, compacted on open.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::status::FailureReason;
use super::task::Task;
use crate::record::VersionRecord;
use crate::rules::Action;

/// A queued operation, as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedOperation {
    /// Queue id.
    pub id: u64,
    /// The input partition of the version's record (the operation follows the partition).
    pub partition: u32,
    /// Source bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Source version id.
    pub version_id: String,
    /// Destination bucket ARN.
    pub destination: String,
    /// The last failure's reason.
    pub reason: FailureReason,
    /// What happened at the last failure.
    pub detail: String,
    /// Failed attempts so far (the first run counts as one).
    pub attempts: u32,
    /// When the next retry is due (Unix ms); `None` when parked.
    pub next_retry_ms: Option<u64>,
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Add(Entry),
    Done { id: u64, why: String },
}

/// Everything needed to redo one destination's action for one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) partition: u32,
    pub(crate) seq: u64,
    pub(crate) destination: String,
    /// `Action::as_str`.
    pub(crate) action: String,
    pub(crate) storage_class: Option<String>,
    pub(crate) replica_kms_key: Option<String>,
    /// The rule's `UseSourceMultiRegionKey` is Enabled (absent in entries written before it
    /// existed).
    #[serde(default)]
    pub(crate) multi_region_key: bool,
    /// The rule makes the destination account own the replicas (absent in entries written
    /// before this was recorded: they predate owner-override support).
    #[serde(default)]
    pub(crate) owner_override: bool,
    /// The version record (`VersionRecord::to_bytes`), hex.
    pub(crate) record: String,
    /// S3's reason name (`FailureReason::as_str`; entries written before `detail` existed
    /// may hold `Name: detail`).
    pub(crate) reason: String,
    #[serde(default)]
    pub(crate) detail: String,
    pub(crate) attempts: u32,
    /// Unix ms; `None` when parked.
    pub(crate) next_at_ms: Option<u64>,
}

impl Entry {
    /// The destination's share of the work, as it was when the operation failed; `None` if
    /// the entry names an action or storage class this version does not know.
    pub(crate) fn task(&self) -> Option<Task> {
        let action = [Action::CopyObject, Action::ReplicateDeleteMarker, Action::SyncMetadata]
            .into_iter()
            .find(|a| a.as_str() == self.action)?;
        let storage_class = match &self.storage_class {
            Some(s) => Some(s.parse().ok()?),
            None => None,
        };
        Some(Task {
            destination: self.destination.clone(),
            action,
            storage_class,
            replica_kms_key: self.replica_kms_key.clone(),
            multi_region_key: self.multi_region_key,
            owner_override: self.owner_override,
        })
    }

    /// The entry's reason; a name this version does not know (a journal written by a later
    /// one) reads as `InternalError`, with the name kept in the detail.
    fn failure_reason(&self) -> FailureReason {
        let name = self.reason.split_once(": ").map_or(self.reason.as_str(), |(name, _)| name);
        FailureReason::from_name(name).unwrap_or(FailureReason::InternalError)
    }

    fn failure_detail(&self) -> String {
        match self.reason.split_once(": ") {
            Some((_, legacy)) if self.detail.is_empty() => legacy.to_owned(),
            _ if FailureReason::from_name(&self.reason).is_none() => {
                format!("{} {}", self.reason, self.detail).trim_end().to_owned()
            }
            _ => self.detail.clone(),
        }
    }

    pub(crate) fn record(&self) -> Option<VersionRecord> {
        VersionRecord::decode(&hex::decode(&self.record).ok()?).ok()
    }
}

/// Retry pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first background retry; doubles per round.
    pub first: Duration,
    /// Longest delay between rounds.
    pub max: Duration,
    /// Rounds before an entry is parked.
    pub max_rounds: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { first: Duration::from_secs(30), max: Duration::from_hours(1), max_rounds: 12 }
    }
}

impl RetryPolicy {
    fn delay(&self, attempts: u32) -> Duration {
        self.first.saturating_mul(1 << attempts.saturating_sub(1).min(20)).min(self.max)
    }
}

struct State {
    file: std::fs::File,
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    /// (bucket, key, destination) → ids, to find superseded entries.
    by_key: HashMap<(String, String, String), Vec<u64>>,
    /// Ids handed to the scheduler and not yet finished.
    running: std::collections::HashSet<u64>,
}

/// The queue (see the module documentation).
pub(crate) struct FailedQueue {
    path: PathBuf,
    policy: RetryPolicy,
    state: Mutex<State>,
    /// Fast path: whether any entry exists (checked on every completion).
    nonempty: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for FailedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedQueue").field("path", &self.path).finish_non_exhaustive()
    }
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> crate::Error {
    crate::Error::Log(s3repl_io::Error::Io { op, path: path.to_owned(), source })
}

fn key_of(e: &Entry, r: &VersionRecord) -> (String, String, String) {
    (r.bucket.clone(), r.key.clone(), e.destination.clone())
}

impl FailedQueue {
    /// Opens (creating) the journal, replays and compacts it.
    pub(crate) fn open(path: PathBuf, policy: RetryPolicy) -> Result<Self, crate::Error> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io_error("mkdir", dir, e))?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        let mut entries = BTreeMap::new();
        let mut next_id = 1;
        let complete = text.rsplit_once('\n').map_or("", |(done, _torn)| done);
        for (n, line) in complete.lines().enumerate() {
            let parsed: Line = serde_json::from_str(line).map_err(|e| {
                crate::Error::Log(s3repl_io::Error::Checkpoint {
                    path: path.clone(),
                    reason: format!("failed-operations journal line {}: {e}", n + 1),
                })
            })?;
            match parsed {
                Line::Add(e) => {
                    next_id = next_id.max(e.id + 1);
                    entries.insert(e.id, e);
                }
                Line::Done { id, .. } => {
                    entries.remove(&id);
                }
            }
        }
        // Compact: rewrite the live entries, atomically.
        let mut compacted = String::new();
        for e in entries.values() {
            if let Ok(l) = serde_json::to_string(&Line::Add(e.clone())) {
                compacted.push_str(&l);
                compacted.push('\n');
            }
        }
        s3repl_io::log::write_atomic(&s3repl_io::log::FileStorage, &path, compacted.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        let mut by_key: HashMap<_, Vec<u64>> = HashMap::new();
        for e in entries.values() {
            if let Some(r) = e.record() {
                by_key.entry(key_of(e, &r)).or_default().push(e.id);
            }
        }
        let nonempty = std::sync::atomic::AtomicBool::new(!entries.is_empty());
        Ok(FailedQueue {
            path,
            policy,
            state: Mutex::new(State {
                file,
                next_id,
                entries,
                by_key,
                running: std::collections::HashSet::new(),
            }),
            nonempty,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    fn append(&self, st: &mut State, line: &Line) -> Result<(), crate::Error> {
        let mut text = serde_json::to_string(line)
            .map_err(|e| io_error("encode", &self.path, std::io::Error::other(e.to_string())))?;
        text.push('\n');
        s3repl_io::log::append_whole(&mut st.file, text.as_bytes(), true)
            .map_err(|e| io_error("append", &self.path, e))
    }

    /// Journals a failed operation (durable on return). Blocking: call off the async workers.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &self,
        partition: u32,
        seq: u64,
        record: &VersionRecord,
        task: &Task,
        reason: FailureReason,
        detail: &str,
        now_ms: u64,
    ) -> Result<u64, crate::Error> {
        let bytes = record.to_bytes()?;
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        let entry = Entry {
            id,
            partition,
            seq,
            destination: task.destination.clone(),
            action: task.action.as_str().to_owned(),
            storage_class: task.storage_class.map(|s| s.as_str().to_owned()),
            replica_kms_key: task.replica_kms_key.clone(),
            multi_region_key: task.multi_region_key,
            owner_override: task.owner_override,
            record: hex::encode(&bytes),
            reason: reason.as_str().to_owned(),
            detail: detail.to_owned(),
            attempts: 1,
            next_at_ms: Some(now_ms + millis(self.policy.delay(1))),
        };
        self.append(&mut st, &Line::Add(entry.clone()))?;
        st.by_key.entry(key_of(&entry, record)).or_default().push(id);
        st.entries.insert(id, entry);
        self.nonempty.store(true, std::sync::atomic::Ordering::Release);
        Ok(id)
    }

    /// Drops entry `id`, on disk first: when the journal refuses the line (a full disk), the
    /// entry stays queued in memory as it does on disk, and the caller's retry finds it again.
    fn remove(&self, st: &mut State, id: u64, why: &str) -> Result<(), crate::Error> {
        if !st.entries.contains_key(&id) {
            return Ok(());
        }
        self.append(st, &Line::Done { id, why: why.to_owned() })?;
        let Some(e) = st.entries.remove(&id) else { return Ok(()) };
        if let Some(r) = e.record()
            && let Some(ids) = st.by_key.get_mut(&key_of(&e, &r))
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                st.by_key.remove(&key_of(&e, &r));
            }
        }
        st.running.remove(&id);
        self.nonempty.store(!st.entries.is_empty(), std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// A newer operation on (bucket, key) reached `destination` from log position
    /// (`partition`, `seq`): older queued entries for it are dropped as superseded. Returns the
    /// dropped entries.
    pub(crate) fn supersede(
        &self,
        bucket: &str,
        key: &str,
        destination: &str,
        partition: u32,
        seq: u64,
    ) -> Result<Vec<Entry>, crate::Error> {
        if !self.nonempty.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let mut st = self.lock();
        let k = (bucket.to_owned(), key.to_owned(), destination.to_owned());
        let Some(ids) = st.by_key.get(&k).cloned() else { return Ok(Vec::new()) };
        let mut dropped = Vec::new();
        for id in ids {
            let older =
                st.entries.get(&id).is_some_and(|e| e.partition == partition && e.seq < seq);
            // Entries handed to the scheduler are dropped too: the worker checks `is_live`
            // before running a retry (and a key's operations never run concurrently).
            if older {
                if let Some(e) = st.entries.get(&id).cloned() {
                    dropped.push(e);
                }
                self.remove(&mut st, id, "superseded by a newer version")?;
            }
        }
        Ok(dropped)
    }

    /// Per partition (index; `partitions` of them), the log position of its oldest queued
    /// entry, parked ones included.
    pub(crate) fn oldest(&self, partitions: u32) -> Vec<Option<u64>> {
        let mut oldest = vec![None; partitions as usize];
        if !self.nonempty.load(std::sync::atomic::Ordering::Acquire) {
            return oldest;
        }
        for e in self.lock().entries.values() {
            if let Some(o) = oldest.get_mut(e.partition as usize) {
                *o = Some(o.map_or(e.seq, |s: u64| s.min(e.seq)));
            }
        }
        oldest
    }

    /// Drops the entries of the partitions `keep` refuses (they moved to another process,
    /// which redoes them); returns how many.
    pub(crate) fn drop_partitions(
        &self,
        keep: impl Fn(u32) -> bool,
        why: &str,
    ) -> Result<usize, crate::Error> {
        if !self.nonempty.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(0);
        }
        let mut st = self.lock();
        let gone: Vec<u64> =
            st.entries.values().filter(|e| !keep(e.partition)).map(|e| e.id).collect();
        for &id in &gone {
            self.remove(&mut st, id, why)?;
        }
        Ok(gone.len())
    }

    /// Entries due for a retry at `now_ms`, marked running (at most `limit`).
    pub(crate) fn due(&self, now_ms: u64, limit: usize) -> Vec<Entry> {
        let mut st = self.lock();
        let due: Vec<Entry> = st
            .entries
            .values()
            .filter(|e| e.next_at_ms.is_some_and(|t| t <= now_ms) && !st.running.contains(&e.id))
            .take(limit)
            .cloned()
            .collect();
        for e in &due {
            st.running.insert(e.id);
        }
        due
    }

    /// Whether an entry is still queued (not superseded or finished).
    pub(crate) fn is_live(&self, id: u64) -> bool {
        self.lock().entries.contains_key(&id)
    }

    /// A retry completed: the entry leaves the queue.
    pub(crate) fn succeeded(&self, id: u64) -> Result<(), crate::Error> {
        let mut st = self.lock();
        self.remove(&mut st, id, "replicated")
    }

    /// A retry failed again: next round later, or parked after `max_rounds`.
    pub(crate) fn failed_again(
        &self,
        id: u64,
        reason: FailureReason,
        detail: &str,
        now_ms: u64,
    ) -> Result<(), crate::Error> {
        let mut st = self.lock();
        st.running.remove(&id);
        let Some(mut e) = st.entries.get(&id).cloned() else { return Ok(()) };
        e.attempts += 1;
        reason.as_str().clone_into(&mut e.reason);
        detail.clone_into(&mut e.detail);
        e.next_at_ms = (e.attempts <= self.policy.max_rounds)
            .then(|| now_ms + millis(self.policy.delay(e.attempts)));
        self.append(&mut st, &Line::Add(e.clone()))?;
        st.entries.insert(id, e);
        Ok(())
    }

    /// Re-arms every entry (parked ones too) for an immediate retry; returns how many.
    pub(crate) fn retry_now(&self, now_ms: u64) -> usize {
        let mut st = self.lock();
        let ids: Vec<u64> = st.entries.keys().copied().collect();
        for id in &ids {
            if let Some(e) = st.entries.get_mut(id) {
                e.next_at_ms = Some(now_ms);
            }
        }
        ids.len()
    }

    /// How many entries are queued.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Everything queued.
    pub(crate) fn list(&self) -> Vec<FailedOperation> {
        self.lock()
            .entries
            .values()
            .filter_map(|e| {
                let r = e.record()?;
                Some(FailedOperation {
                    id: e.id,
                    bucket: r.bucket,
                    key: r.key,
                    version_id: r.version_id,
                    destination: e.destination.clone(),
                    reason: e.failure_reason(),
                    detail: e.failure_detail(),
                    attempts: e.attempts,
                    next_retry_ms: e.next_at_ms,
                    partition: e.partition,
                })
            })
            .collect()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageClass;
    use std::io::Write as _;

    fn task(storage_class: Option<StorageClass>, kms: Option<&str>, owner_override: bool) -> Task {
        Task {
            destination: "arn:aws:s3:::d".into(),
            action: Action::CopyObject,
            storage_class,
            replica_kms_key: kms.map(str::to_owned),
            multi_region_key: false,
            owner_override,
        }
    }

    fn record(key: &str, v: &str) -> VersionRecord {
        VersionRecord {
            bucket: "b".into(),
            key: key.into(),
            version_id: v.into(),
            size: 3,
            ..VersionRecord::default()
        }
    }

    #[test]
    fn entries_survive_reopen_retry_supersede_and_park() {
        let dir = std::env::temp_dir().join(format!("s3repl-failed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("failed/replicator.jsonl");
        let policy = RetryPolicy {
            first: Duration::from_secs(1),
            max: Duration::from_secs(4),
            max_rounds: 2,
        };
        let q = FailedQueue::open(path.clone(), policy).unwrap();
        let a = q
            .add(
                0,
                10,
                &record("k1", "v1"),
                &task(None, None, false),
                FailureReason::DstPutObjectNotPermitted,
                "connection refused",
                1000,
            )
            .unwrap();
        let b = q
            .add(
                3,
                11,
                &record("k2", "v1"),
                &task(Some(StorageClass::StandardIa), Some("kms"), true),
                FailureReason::DstBucketNotFound,
                "",
                1000,
            )
            .unwrap();
        assert!(q.due(1500, 10).is_empty());
        drop(q);
        // A torn last line (a crash mid-append) is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"add\",\"id\":9")
            .unwrap();
        let q = FailedQueue::open(path.clone(), policy).unwrap();
        let listed = q.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].reason, FailureReason::DstBucketNotFound);
        assert_eq!(listed[0].detail, "connection refused");
        assert_eq!((listed[0].partition, listed[1].partition), (0, 3), "kept per partition");
        let due = q.due(2000, 10);
        assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(due[1].task(), Some(task(Some(StorageClass::StandardIa), Some("kms"), true)));
        assert_eq!(due[0].task(), Some(task(None, None, false)));
        assert_eq!(due[1].record().unwrap().key, "k2");
        // Running entries are not handed out twice.
        assert!(q.due(2000, 10).is_empty());
        q.succeeded(a).unwrap();
        q.failed_again(b, FailureReason::DstBucketNotFound, "still", 2000).unwrap();
        assert_eq!(q.list()[0].next_retry_ms, Some(2000 + 2000));
        assert_eq!(q.due(4000, 10).len(), 1);
        q.failed_again(b, FailureReason::DstBucketNotFound, "still", 4000).unwrap();
        // Parked after max_rounds: listed, never due, until re-armed.
        assert_eq!(q.list()[0].next_retry_ms, None);
        assert!(q.due(u64::MAX, 10).is_empty());
        assert_eq!(q.retry_now(5000), 1);
        let again = q.due(5000, 10);
        assert_eq!(again.len(), 1);
        q.failed_again(b, FailureReason::DstBucketNotFound, "still", 5000).unwrap();
        // A newer version of k2 at the destination supersedes the queued one.
        let dropped = q.supersede("b", "k2", "arn:aws:s3:::d", 3, 12).unwrap();
        assert_eq!(dropped.len(), 1);
        assert!(q.list().is_empty());
        drop(q);
        let q = FailedQueue::open(path, policy).unwrap();
        assert!(q.list().is_empty(), "done lines persist");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Entries journaled before reasons were typed held `Name: detail` in one string.
    #[test]
    fn reasons_of_older_journals_read_as_typed() {
        let entry = |reason: &str, detail: &str| Entry {
            id: 1,
            partition: 0,
            seq: 0,
            destination: "arn:aws:s3:::d".into(),
            action: Action::CopyObject.as_str().into(),
            storage_class: None,
            replica_kms_key: None,
            multi_region_key: false,
            owner_override: false,
            record: String::new(),
            reason: reason.into(),
            detail: detail.into(),
            attempts: 1,
            next_at_ms: None,
        };
        let legacy = entry("SrcObjectNotEligible: BLAKE3 mismatch", "");
        assert_eq!(legacy.failure_reason(), FailureReason::SrcObjectNotEligible);
        assert_eq!(legacy.failure_detail(), "BLAKE3 mismatch");
        let plain = entry("DstBucketNotFound", "404");
        assert_eq!(
            (plain.failure_reason(), plain.failure_detail().as_str()),
            (FailureReason::DstBucketNotFound, "404")
        );
        let unknown = entry("DstSomethingNew", "x");
        assert_eq!(unknown.failure_reason(), FailureReason::InternalError);
        assert_eq!(unknown.failure_detail(), "DstSomethingNew x");
    }
}
