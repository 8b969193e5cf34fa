//! The durable failed-operations queue. An operation that ends FAILED is journaled (fsynced
//! before its log position can be checkpointed past) with everything needed to redo it, then
//! retried in the background with exponential backoff — through the per-key scheduler, so a
//! retry never overtakes or is overtaken by newer operations on the same key. An entry leaves
//! the queue when a retry completes, or when a newer version of the same key reaches the same
//! destination (replaying the old one then would make a stale version the replica's latest).
//! After `max_rounds` failed retries an entry is *exhausted*: kept and listed, retried again
//! only on request. Nothing is dropped silently (`MinIO` drops failed entries after three
//! retries).
//!
//! The same queue holds the operations *parked* while their destination is down
//! (`health.rs`): not failures, so they count no rounds and are due as soon as their
//! destination answers again. While a key has parked operations for a destination, newer
//! operations of that key for it are parked behind them (so a live write never overtakes,
//! nor supersedes, a parked one).
//!
//! Journal: `<log dir>/failed/<consumer>.jsonl`, one JSON object per line (`add` with the
//! operation, `done` with an id and why); a torn last line is ignored. Lines are made durable
//! by group commit (one `fdatasync` for every line written while the previous one ran). The
//! journal is compacted on open and, while running, once its dead lines outnumber the live.
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
    /// When the next retry is due (Unix ms); `None` when exhausted (retried only on request).
    /// A parked operation is due whenever its destination is up.
    pub next_retry_ms: Option<u64>,
    /// Parked while its destination is down, not FAILED.
    pub parked: bool,
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Add(Entry),
    Done { id: u64, why: String },
}

/// Everything needed to redo one destination's action for one version.
// A journal line: each flag is its own JSON field.
#[allow(clippy::struct_excessive_bools)]
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
    /// Unix ms; `None` when exhausted.
    pub(crate) next_at_ms: Option<u64>,
    /// Parked while the destination is down (not a failure: due once it answers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) parked: bool,
    /// The version's commit time (Unix ms; 0 in entries written before it was recorded).
    #[serde(default)]
    pub(crate) commit_ms: u64,
    /// The object bytes the operation moves.
    #[serde(default)]
    pub(crate) bytes: u64,
    /// Parked by this process before any attempt reached the destination, so its retry need
    /// not ask the destination first (never journaled: after a restart every entry is asked
    /// about, since a retry may have been under way when the process died).
    #[serde(skip)]
    pub(crate) fresh: bool,
}

/// How an operation enters the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// It ended FAILED.
    Failed,
    /// Parked while its destination is down; `attempted`: an attempt reached (or may have
    /// reached) the destination first.
    Parked { attempted: bool },
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
    /// Lines in the journal file (live and dead), to know when compacting is worth it.
    lines: usize,
    /// Lines written so far (this process): what a sync makes durable.
    written: u64,
}

/// The queue (see the module documentation).
pub(crate) struct FailedQueue {
    path: PathBuf,
    policy: RetryPolicy,
    state: Mutex<State>,
    /// Group commit: the lines (by [`State::written`]) known durable, and the handle synced.
    synced: Mutex<(u64, std::fs::File)>,
    /// Fast path: whether any entry exists (checked on every completion).
    nonempty: std::sync::atomic::AtomicBool,
    /// Parked entries (checked for every operation while non-zero).
    parked: std::sync::atomic::AtomicUsize,
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

/// Per destination, what waits in the queue ([`FailedQueue::by_destination`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub(crate) parked_ops: u64,
    pub(crate) parked_bytes: u64,
    pub(crate) failed_ops: u64,
    /// The oldest commit time among them (0s, from old journals, left out).
    pub(crate) oldest_commit_ms: Option<u64>,
}

/// Writes the live entries as a fresh journal, atomically (durable on return); how many lines.
fn write_compacted(path: &Path, entries: &BTreeMap<u64, Entry>) -> Result<usize, crate::Error> {
    let mut compacted = String::new();
    for e in entries.values() {
        if let Ok(l) = serde_json::to_string(&Line::Add(e.clone())) {
            compacted.push_str(&l);
            compacted.push('\n');
        }
    }
    s3repl_io::log::write_atomic(&s3repl_io::log::FileStorage, path, compacted.as_bytes())?;
    Ok(entries.len())
}

fn open_append(path: &Path) -> Result<(std::fs::File, std::fs::File), crate::Error> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| io_error("open", path, e))?;
    let sync = file.try_clone().map_err(|e| io_error("dup", path, e))?;
    Ok((file, sync))
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
        drop(text);
        let lines = write_compacted(&path, &entries)?;
        let (file, sync) = open_append(&path)?;
        let mut by_key: HashMap<_, Vec<u64>> = HashMap::new();
        for e in entries.values() {
            if let Some(r) = e.record() {
                by_key.entry(key_of(e, &r)).or_default().push(e.id);
            }
        }
        let nonempty = std::sync::atomic::AtomicBool::new(!entries.is_empty());
        let parked =
            std::sync::atomic::AtomicUsize::new(entries.values().filter(|e| e.parked).count());
        Ok(FailedQueue {
            path,
            policy,
            state: Mutex::new(State {
                file,
                next_id,
                entries,
                by_key,
                running: std::collections::HashSet::new(),
                lines,
                written: 0,
            }),
            synced: Mutex::new((0, sync)),
            nonempty,
            parked,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Writes one line (not yet durable: see [`FailedQueue::sync_to`]); returns its number.
    fn append(&self, st: &mut State, line: &Line) -> Result<u64, crate::Error> {
        let mut text = serde_json::to_string(line)
            .map_err(|e| io_error("encode", &self.path, std::io::Error::other(e.to_string())))?;
        text.push('\n');
        s3repl_io::log::append_whole(&mut st.file, text.as_bytes(), false)
            .map_err(|e| io_error("append", &self.path, e))?;
        st.lines += 1;
        st.written += 1;
        Ok(st.written)
    }

    /// Makes every line up to number `line` durable: one `fdatasync` covers every line
    /// written before it started, so concurrent callers share it (group commit).
    fn sync_to(&self, line: u64) -> Result<(), crate::Error> {
        let mut synced = self.synced.lock();
        if synced.0 >= line {
            return Ok(());
        }
        let upto = self.lock().written;
        synced.1.sync_data().map_err(|e| io_error("fsync", &self.path, e))?;
        synced.0 = upto;
        Ok(())
    }

    fn set_counts(&self, st: &State) {
        use std::sync::atomic::Ordering::Release;
        self.nonempty.store(!st.entries.is_empty(), Release);
        self.parked.store(st.entries.values().filter(|e| e.parked).count(), Release);
    }

    /// Journals an operation (durable on return): FAILED with `reason`, or `parked` while its
    /// destination is down. Blocking: call off the async workers.
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
        queued: Queued,
    ) -> Result<u64, crate::Error> {
        let parked = matches!(queued, Queued::Parked { .. });
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
            attempts: u32::from(!parked),
            next_at_ms: Some(if parked { now_ms } else { now_ms + millis(self.policy.delay(1)) }),
            parked,
            commit_ms: record.commit_time_ms,
            bytes: super::task::task_bytes(record, task),
            fresh: queued == Queued::Parked { attempted: false },
        };
        let line = self.append(&mut st, &Line::Add(entry.clone()))?;
        st.by_key.entry(key_of(&entry, record)).or_default().push(id);
        st.entries.insert(id, entry);
        self.set_counts(&st);
        drop(st);
        if let Err(e) = self.sync_to(line) {
            // Not durable: the caller tries again (a second line for the same operation, should
            // this one survive after all, is retried twice, and the retry finds the replica).
            let mut st = self.lock();
            self.forget(&mut st, id);
            return Err(e);
        }
        Ok(id)
    }

    /// Drops entry `id` from memory.
    fn forget(&self, st: &mut State, id: u64) {
        let Some(e) = st.entries.remove(&id) else { return };
        if let Some(r) = e.record()
            && let Some(ids) = st.by_key.get_mut(&key_of(&e, &r))
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                st.by_key.remove(&key_of(&e, &r));
            }
        }
        st.running.remove(&id);
        self.set_counts(st);
    }

    /// Drops entry `id`, on disk first: when the journal refuses the line (a full disk), the
    /// entry stays queued in memory as it does on disk, and the caller's retry finds it again.
    /// Returns the line's number (not yet durable) when there was an entry.
    fn remove(&self, st: &mut State, id: u64, why: &str) -> Result<Option<u64>, crate::Error> {
        if !st.entries.contains_key(&id) {
            return Ok(None);
        }
        let line = self.append(st, &Line::Done { id, why: why.to_owned() })?;
        self.forget(st, id);
        Ok(Some(line))
    }

    /// A newer operation on (bucket, key) reached `destination` from log position
    /// (`partition`, `seq`): older queued entries for it are dropped as superseded (durably:
    /// should one come back after a crash, its retry would make the older version the
    /// replica's latest). Parked entries are never superseded (newer operations wait behind
    /// them). Returns the dropped entries.
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
        let mut last = None;
        for id in ids {
            let older = st
                .entries
                .get(&id)
                .is_some_and(|e| e.partition == partition && e.seq < seq && !e.parked);
            // Entries handed to the scheduler are dropped too: the worker checks `is_live`
            // before running a retry (and a key's operations never run concurrently).
            if older {
                if let Some(e) = st.entries.get(&id).cloned() {
                    dropped.push(e);
                }
                last = self.remove(&mut st, id, "superseded by a newer version")?.or(last);
            }
        }
        drop(st);
        if let Some(line) = last {
            self.sync_to(line)?;
        }
        Ok(dropped)
    }

    /// Whether (bucket, key) has operations parked for `destination`: a newer one must park
    /// behind them.
    pub(crate) fn has_parked(&self, bucket: &str, key: &str, destination: &str) -> bool {
        if self.parked.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return false;
        }
        let st = self.lock();
        let k = (bucket.to_owned(), key.to_owned(), destination.to_owned());
        st.by_key
            .get(&k)
            .is_some_and(|ids| ids.iter().any(|id| st.entries.get(id).is_some_and(|e| e.parked)))
    }

    /// Per partition (index; `partitions` of them), the log position of its oldest queued
    /// entry, exhausted and parked ones included.
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
        let mut last = None;
        for &id in &gone {
            last = self.remove(&mut st, id, why)?.or(last);
        }
        drop(st);
        if let Some(line) = last {
            self.sync_to(line)?;
        }
        Ok(gone.len())
    }

    /// Entries due for a retry at `now_ms` whose destination `up` says is up, marked running
    /// (at most `limit`), oldest first. Parked entries are due whenever their destination is up.
    pub(crate) fn due(&self, now_ms: u64, limit: usize, up: impl Fn(&str) -> bool) -> Vec<Entry> {
        let mut st = self.lock();
        let due: Vec<Entry> = st
            .entries
            .values()
            .filter(|e| {
                e.next_at_ms.is_some_and(|t| t <= now_ms)
                    && !st.running.contains(&e.id)
                    && up(&e.destination)
            })
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

    /// A retry completed: the entry leaves the queue. (Not synced: should the line be lost
    /// to a crash, the entry's retry finds its replica at the destination.)
    pub(crate) fn succeeded(&self, id: u64) -> Result<(), crate::Error> {
        let mut st = self.lock();
        self.remove(&mut st, id, "replicated").map(|_| ())
    }

    /// A retry failed again: next round later, or exhausted after `max_rounds`. A parked
    /// entry that failed for another reason is a failure from now on.
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
        e.parked = false;
        reason.as_str().clone_into(&mut e.reason);
        detail.clone_into(&mut e.detail);
        e.next_at_ms = (e.attempts <= self.policy.max_rounds)
            .then(|| now_ms + millis(self.policy.delay(e.attempts)));
        self.append(&mut st, &Line::Add(e.clone()))?;
        st.entries.insert(id, e);
        self.set_counts(&st);
        Ok(())
    }

    /// A retry found its destination down again: parked once more (no round counted).
    /// `attempted`: an attempt reached (or may have reached) the destination.
    pub(crate) fn park_again(
        &self,
        id: u64,
        now_ms: u64,
        attempted: bool,
    ) -> Result<(), crate::Error> {
        let mut st = self.lock();
        st.running.remove(&id);
        let Some(mut e) = st.entries.get(&id).cloned() else { return Ok(()) };
        if attempted && let Some(live) = st.entries.get_mut(&id) {
            live.fresh = false;
            e.fresh = false;
        }
        if !e.parked {
            e.parked = true;
            e.next_at_ms = Some(now_ms);
            self.append(&mut st, &Line::Add(e.clone()))?;
            st.entries.insert(id, e);
            self.set_counts(&st);
        }
        Ok(())
    }

    /// `destination` answers again: its FAILED entries whose failure was the destination
    /// not answering are due now (parked ones are due whenever it is up). Returns how many
    /// entries wait for it.
    pub(crate) fn release(&self, destination: &str, now_ms: u64) -> usize {
        let unavailable = FailureReason::DstUnavailable.as_str();
        let mut st = self.lock();
        let mut n = 0;
        for e in st.entries.values_mut().filter(|e| e.destination == destination) {
            n += 1;
            if !e.parked && e.reason == unavailable {
                e.next_at_ms = Some(now_ms);
            }
        }
        n
    }

    /// Re-arms every entry (exhausted ones too) for an immediate retry; returns how many.
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

    /// Rewrites the journal with the live entries alone once its dead lines outnumber them
    /// (and there are enough to matter); returns whether it did. Blocking.
    pub(crate) fn compact_if_worth(&self) -> Result<bool, crate::Error> {
        let mut st = self.lock();
        if st.lines < 4096 || st.lines < 2 * st.entries.len() + 1024 {
            return Ok(false);
        }
        let mut synced = self.synced.lock();
        st.lines = write_compacted(&self.path, &st.entries)?;
        let (file, sync) = open_append(&self.path)?;
        st.file = file;
        *synced = (st.written, sync);
        Ok(true)
    }

    /// How many entries are queued.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Per destination, what waits in the queue.
    pub(crate) fn by_destination(&self) -> HashMap<String, Waiting> {
        let mut out: HashMap<String, Waiting> = HashMap::new();
        if !self.nonempty.load(std::sync::atomic::Ordering::Acquire) {
            return out;
        }
        for e in self.lock().entries.values() {
            let w = out.entry(e.destination.clone()).or_default();
            if e.parked {
                w.parked_ops += 1;
                w.parked_bytes += e.bytes;
            } else {
                w.failed_ops += 1;
            }
            if e.commit_ms > 0 {
                w.oldest_commit_ms =
                    Some(w.oldest_commit_ms.map_or(e.commit_ms, |o| o.min(e.commit_ms)));
            }
        }
        out
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
                    parked: e.parked,
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
                Queued::Failed,
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
                Queued::Failed,
            )
            .unwrap();
        assert!(q.due(1500, 10, |_| true).is_empty());
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
        let due = q.due(2000, 10, |_| true);
        assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(due[1].task(), Some(task(Some(StorageClass::StandardIa), Some("kms"), true)));
        assert_eq!(due[0].task(), Some(task(None, None, false)));
        assert_eq!(due[1].record().unwrap().key, "k2");
        // Running entries are not handed out twice.
        assert!(q.due(2000, 10, |_| true).is_empty());
        q.succeeded(a).unwrap();
        q.failed_again(b, FailureReason::DstBucketNotFound, "still", 2000).unwrap();
        assert_eq!(q.list()[0].next_retry_ms, Some(2000 + 2000));
        assert_eq!(q.due(4000, 10, |_| true).len(), 1);
        q.failed_again(b, FailureReason::DstBucketNotFound, "still", 4000).unwrap();
        // Parked after max_rounds: listed, never due, until re-armed.
        assert_eq!(q.list()[0].next_retry_ms, None);
        assert!(q.due(u64::MAX, 10, |_| true).is_empty());
        assert_eq!(q.retry_now(5000), 1);
        let again = q.due(5000, 10, |_| true);
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

    /// Operations parked while their destination is down: no round counted, due whenever the
    /// destination is up, newer operations of the key parked behind them (never superseded),
    /// counted per destination; FAILED ones for an unanswering destination are re-armed when
    /// it is back; all of it survives a reopen; the journal is compacted while running.
    #[test]
    fn parked_operations_wait_for_their_destination() {
        let dir = std::env::temp_dir().join(format!("s3repl-parked-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("failed/replicator.jsonl");
        let q = FailedQueue::open(path.clone(), RetryPolicy::default()).unwrap();
        let t = task(None, None, false);
        let why = FailureReason::DstUnavailable;
        let mut r1 = record("k1", "v1");
        r1.commit_time_ms = 500;
        let p1 = q
            .add(0, 10, &r1, &t, why, "parked", 1000, Queued::Parked { attempted: false })
            .unwrap();
        let p2 = q
            .add(
                0,
                11,
                &record("k1", "v2"),
                &t,
                why,
                "parked",
                1000,
                Queued::Parked { attempted: false },
            )
            .unwrap();
        let f = q.add(0, 12, &record("k2", "v1"), &t, why, "503", 1000, Queued::Failed).unwrap();
        assert!(q.has_parked("b", "k1", "arn:aws:s3:::d"));
        assert!(!q.has_parked("b", "k2", "arn:aws:s3:::d"), "k2's entry is FAILED, not parked");
        assert!(!q.has_parked("b", "k1", "arn:aws:s3:::other"));
        let w = q.by_destination()["arn:aws:s3:::d"];
        assert_eq!((w.parked_ops, w.parked_bytes, w.failed_ops), (2, 6, 1));
        assert_eq!(w.oldest_commit_ms, Some(500));
        // Down: nothing is due, however late.
        assert!(q.due(u64::MAX / 4, 10, |_| false).is_empty());
        // A newer version reaching the destination supersedes no parked entry.
        assert!(q.supersede("b", "k1", "arn:aws:s3:::d", 0, 99).unwrap().is_empty());
        // Back: the parked ones are due at once; the FAILED one once released.
        let due = q.due(1000, 10, |_| true);
        assert_eq!(
            due.iter().map(|e| (e.id, e.fresh)).collect::<Vec<_>>(),
            vec![(p1, true), (p2, true)]
        );
        assert_eq!(q.release("arn:aws:s3:::d", 1001), 3);
        assert_eq!(q.due(1001, 10, |_| true).iter().map(|e| e.id).collect::<Vec<_>>(), vec![f]);
        // Down again while retrying: parked once more, no round counted.
        q.park_again(p2, 2000, false).unwrap();
        q.park_again(f, 2000, true).unwrap();
        q.succeeded(p1).unwrap();
        drop(q);
        let q = FailedQueue::open(path.clone(), RetryPolicy::default()).unwrap();
        assert!(
            q.due(5000, 10, |_| true).iter().all(|e| !e.fresh),
            "reopened: every retry asks first"
        );
        let listed = q.list();
        assert_eq!(
            listed.iter().map(|e| (e.id, e.parked, e.attempts)).collect::<Vec<_>>(),
            vec![(p2, true, 0), (f, true, 1)]
        );
        // Failing for another reason makes a parked entry a failure.
        q.failed_again(p2, FailureReason::DstBucketNotFound, "404", 3000).unwrap();
        assert!(!q.list()[0].parked);
        assert!(!q.has_parked("b", "k1", "arn:aws:s3:::d"));
        // Compaction while running: dead lines outnumber the live ones.
        for i in 0..3000u64 {
            let id = q
                .add(
                    1,
                    i,
                    &record("k3", "v"),
                    &t,
                    why,
                    "parked",
                    1000,
                    Queued::Parked { attempted: false },
                )
                .unwrap();
            q.succeeded(id).unwrap();
        }
        let before = std::fs::metadata(&path).unwrap().len();
        assert!(q.compact_if_worth().unwrap());
        assert!(!q.compact_if_worth().unwrap(), "nothing left to gain");
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 100 < before, "{before} -> {after} bytes");
        let kept = q
            .add(
                1,
                5,
                &record("k4", "v"),
                &t,
                why,
                "parked",
                1000,
                Queued::Parked { attempted: false },
            )
            .unwrap();
        drop(q);
        let q = FailedQueue::open(path, RetryPolicy::default()).unwrap();
        assert_eq!(q.list().iter().map(|e| e.id).collect::<Vec<_>>(), vec![p2, f, kept]);
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
            parked: false,
            commit_ms: 0,
            bytes: 0,
            fresh: false,
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
