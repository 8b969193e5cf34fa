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
use smallvec::SmallVec;

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
            destination: self.destination.as_str().into(),
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

/// What memory keeps of one entry: enough to pick due entries, count them per destination and
/// find a key's entries. The entry itself is its line in the journal, read when needed, so an
/// outage that parks hundreds of thousands of operations costs tens of bytes each in memory,
/// not the kilobyte a whole entry took (measured: 1,060 bytes per parked 4 KiB version).
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Where the entry's newest `add` line is in the journal.
    offset: u64,
    len: u32,
    partition: u32,
    seq: u64,
    /// The destination and the bucket, as indices into [`State::names`].
    destination: u32,
    bucket: u32,
    /// Hash of (bucket, key, destination).
    key: u64,
    /// Unix ms; `u64::MAX` when exhausted.
    next_at_ms: u64,
    commit_ms: u64,
    bytes: u64,
    parked: bool,
    fresh: bool,
    /// The last failure was the destination not answering (`DstUnavailable`).
    unavailable: bool,
}

struct State {
    /// The journal, appended to.
    file: std::fs::File,
    /// The journal, read by position.
    reader: std::fs::File,
    /// The journal's length.
    end: u64,
    next_id: u64,
    slots: BTreeMap<u64, Slot>,
    /// Key hash → ids, to find a key's entries: nearly always one, kept inline, so a parked
    /// operation costs no small allocation of its own here (a `Vec` each was 181,000 of them
    /// in a 10-minute outage, freed among longer-lived ones as the backlog drained).
    by_key: HashMap<u64, SmallVec<[u64; 1]>>,
    /// Destination ARNs and bucket names, interned.
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    /// Ids handed to the scheduler and not yet finished.
    running: std::collections::HashSet<u64>,
    /// Lines in the journal file (live and dead), to know when compacting is worth it.
    lines: usize,
    /// Parked entries among the slots.
    parked: usize,
    /// Where the last look for due entries stopped (the next starts there, then wraps).
    cursor: u64,
}

impl State {
    /// Sets entry `id`'s slot, keeping the parked count.
    fn put(&mut self, id: u64, slot: Slot) {
        if let Some(old) = self.slots.insert(id, slot) {
            self.parked -= usize::from(old.parked);
        }
        self.parked += usize::from(slot.parked);
    }

    /// Takes entry `id`'s slot away, keeping the parked count.
    fn take(&mut self, id: u64) -> Option<Slot> {
        let slot = self.slots.remove(&id)?;
        self.parked -= usize::from(slot.parked);
        Some(slot)
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.name_ids.get(name) {
            return i;
        }
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.to_owned());
        self.name_ids.insert(name.to_owned(), i);
        i
    }

    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }

    fn id_of(&self, name: &str) -> Option<u32> {
        self.name_ids.get(name).copied()
    }
}

/// The queue (see the module documentation).
pub(crate) struct FailedQueue {
    path: PathBuf,
    policy: RetryPolicy,
    hasher: std::hash::RandomState,
    state: Mutex<State>,
    /// Lines written so far (this process): what a sync makes durable. Outside the state's
    /// lock: a sync reads it holding `synced`, and compaction takes `synced` holding the
    /// state's lock, so taking the state's lock there would deadlock.
    written: std::sync::atomic::AtomicU64,
    /// Group commit: the lines (by `written`) known durable, and the handle synced.
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

/// Per destination, what waits in the queue ([`FailedQueue::by_destination`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub(crate) parked_ops: u64,
    pub(crate) parked_bytes: u64,
    pub(crate) failed_ops: u64,
    /// The oldest commit time among them (0s, from old journals, left out).
    pub(crate) oldest_commit_ms: Option<u64>,
}

/// The journal's handles: for appending, for syncing (a clone), for reading by position.
fn open_handles(
    path: &Path,
) -> Result<(std::fs::File, std::fs::File, std::fs::File), crate::Error> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| io_error("open", path, e))?;
    let sync = file.try_clone().map_err(|e| io_error("dup", path, e))?;
    let reader = std::fs::File::open(path).map_err(|e| io_error("open", path, e))?;
    Ok((file, sync, reader))
}

/// Reads `len` bytes at `offset`.
fn read_at(file: &std::fs::File, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Writes `lines` (each `(offset, len)` in `from`) as the journal at `path`, atomically and
/// durably (a temporary file synced, renamed over, the directory synced); returns each
/// line's offset in the new file.
fn rewrite(
    path: &Path,
    from: &std::fs::File,
    lines: &[(u64, u32)],
) -> Result<Vec<u64>, crate::Error> {
    use std::io::Write as _;
    let tmp = path.with_extension("jsonl.compacting");
    let file = std::fs::File::create(&tmp).map_err(|e| io_error("create", &tmp, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut offsets = Vec::with_capacity(lines.len());
    let mut at = 0u64;
    for &(offset, len) in lines {
        let line = read_at(from, offset, len).map_err(|e| io_error("read", path, e))?;
        out.write_all(&line).map_err(|e| io_error("write", &tmp, e))?;
        offsets.push(at);
        at += u64::from(len);
    }
    let file = out.into_inner().map_err(|e| io_error("write", &tmp, e.into_error()))?;
    file.sync_all().map_err(|e| io_error("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error("rename", path, e))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync", dir, e))?;
    Ok(offsets)
}

impl FailedQueue {
    /// Opens (creating) the journal, replays and compacts it.
    pub(crate) fn open(path: PathBuf, policy: RetryPolicy) -> Result<Self, crate::Error> {
        use std::io::BufRead as _;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io_error("mkdir", dir, e))?;
        if !path.exists() {
            s3repl_io::log::write_atomic(&s3repl_io::log::FileStorage, &path, b"")?;
        }
        let hasher = std::hash::RandomState::new();
        let (file, sync, reader) = open_handles(&path)?;
        let mut st = State {
            file,
            reader,
            end: 0,
            next_id: 1,
            slots: BTreeMap::new(),
            by_key: HashMap::new(),
            names: Vec::new(),
            name_ids: HashMap::new(),
            running: std::collections::HashSet::new(),
            lines: 0,
            parked: 0,
            cursor: 0,
        };
        // Replay, a line at a time; a torn last line (no newline) is ignored.
        let mut input = std::io::BufReader::new(
            std::fs::File::open(&path).map_err(|e| io_error("open", &path, e))?,
        );
        let mut line = Vec::new();
        let mut offset = 0u64;
        let mut n = 0usize;
        loop {
            line.clear();
            let read =
                input.read_until(b'\n', &mut line).map_err(|e| io_error("read", &path, e))?;
            if read == 0 || line.last() != Some(&b'\n') {
                break;
            }
            n += 1;
            let parsed: Line = serde_json::from_slice(&line).map_err(|e| {
                crate::Error::Log(s3repl_io::Error::Checkpoint {
                    path: path.clone(),
                    reason: format!("failed-operations journal line {n}: {e}"),
                })
            })?;
            let len = u32::try_from(read).unwrap_or(u32::MAX);
            match parsed {
                Line::Add(e) => {
                    st.next_id = st.next_id.max(e.id + 1);
                    let slot = Self::slot_of(&hasher, &mut st, &e, offset, len);
                    st.put(e.id, slot);
                }
                Line::Done { id, .. } => {
                    st.take(id);
                }
            }
            offset += read as u64;
        }
        drop(input);
        let q = FailedQueue {
            path,
            policy,
            hasher,
            state: Mutex::new(st),
            written: std::sync::atomic::AtomicU64::new(0),
            synced: Mutex::new((0, sync)),
            nonempty: std::sync::atomic::AtomicBool::new(false),
            parked: std::sync::atomic::AtomicUsize::new(0),
        };
        {
            let mut st = q.lock();
            q.compact(&mut st)?;
            let ids: Vec<(u64, u64)> = st.slots.iter().map(|(id, s)| (*id, s.key)).collect();
            for (id, key) in ids {
                st.by_key.entry(key).or_default().push(id);
            }
            q.set_counts(&st);
        }
        Ok(q)
    }

    /// What memory keeps of entry `e`, whose line is `len` bytes at `offset`.
    fn slot_of(
        hasher: &std::hash::RandomState,
        st: &mut State,
        e: &Entry,
        offset: u64,
        len: u32,
    ) -> Slot {
        use std::hash::BuildHasher as _;
        let record = e.record();
        let bucket = record.as_ref().map_or("", |r| r.bucket.as_str());
        let key = hasher.hash_one((
            bucket,
            record.as_ref().map_or("", |r| r.key.as_str()),
            &e.destination,
        ));
        Slot {
            offset,
            len,
            partition: e.partition,
            seq: e.seq,
            destination: st.intern(&e.destination),
            bucket: st.intern(bucket),
            key,
            next_at_ms: e.next_at_ms.unwrap_or(u64::MAX),
            commit_ms: e.commit_ms,
            bytes: e.bytes,
            parked: e.parked,
            fresh: e.fresh,
            unavailable: e.reason == FailureReason::DstUnavailable.as_str(),
        }
    }

    fn key_hash(&self, bucket: &str, key: &str, destination: &str) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one((bucket, key, destination))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The entry `slot` stands for, read from the journal (with what memory keeps newer: when
    /// it is due, whether it was parked before any attempt).
    fn read(&self, st: &State, slot: &Slot) -> Result<Entry, crate::Error> {
        let bytes = read_at(&st.reader, slot.offset, slot.len)
            .map_err(|e| io_error("read", &self.path, e))?;
        match serde_json::from_slice::<Line>(&bytes) {
            Ok(Line::Add(mut e)) => {
                e.next_at_ms = (slot.next_at_ms != u64::MAX).then_some(slot.next_at_ms);
                e.fresh = slot.fresh;
                Ok(e)
            }
            Ok(Line::Done { .. }) | Err(_) => {
                Err(crate::Error::Log(s3repl_io::Error::Checkpoint {
                    path: self.path.clone(),
                    reason: format!("failed-operations journal: no entry at byte {}", slot.offset),
                }))
            }
        }
    }

    /// Writes one line (not yet durable: see [`FailedQueue::sync_to`]); returns its number,
    /// offset and length.
    fn append(&self, st: &mut State, line: &Line) -> Result<(u64, u64, u32), crate::Error> {
        let mut text = serde_json::to_string(line)
            .map_err(|e| io_error("encode", &self.path, std::io::Error::other(e.to_string())))?;
        text.push('\n');
        s3repl_io::log::append_whole(&mut st.file, text.as_bytes(), false)
            .map_err(|e| io_error("append", &self.path, e))?;
        let offset = st.end;
        st.end += text.len() as u64;
        st.lines += 1;
        let n = self.written.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        Ok((n, offset, u32::try_from(text.len()).unwrap_or(u32::MAX)))
    }

    /// Makes every line up to number `line` durable: one `fdatasync` covers every line
    /// written before it started, so concurrent callers share it (group commit).
    fn sync_to(&self, line: u64) -> Result<(), crate::Error> {
        let mut synced = self.synced.lock();
        if synced.0 >= line {
            return Ok(());
        }
        let upto = self.written.load(std::sync::atomic::Ordering::Acquire);
        synced.1.sync_data().map_err(|e| io_error("fsync", &self.path, e))?;
        synced.0 = upto;
        Ok(())
    }

    fn set_counts(&self, st: &State) {
        use std::sync::atomic::Ordering::Release;
        self.nonempty.store(!st.slots.is_empty(), Release);
        self.parked.store(st.parked, Release);
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
        let hash = self.key_hash(&record.bucket, &record.key, &task.destination);
        let mut st = self.lock();
        // Queued already (a record replayed after a crash that came after the journal line
        // but before the checkpoint): not twice.
        let queued_already = st.by_key.get(&hash).and_then(|ids| {
            let destination = st.id_of(&task.destination)?;
            ids.iter().copied().find(|id| {
                st.slots.get(id).is_some_and(|s| {
                    s.partition == partition && s.seq == seq && s.destination == destination
                })
            })
        });
        if let Some(id) = queued_already {
            return Ok(id);
        }
        let id = st.next_id;
        st.next_id += 1;
        let entry = Entry {
            id,
            partition,
            seq,
            destination: task.destination.to_string(),
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
        let (line, offset, len) = self.append(&mut st, &Line::Add(entry.clone()))?;
        let slot = Self::slot_of(&self.hasher, &mut st, &entry, offset, len);
        st.by_key.entry(slot.key).or_default().push(id);
        st.put(id, slot);
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
        let Some(slot) = st.take(id) else { return };
        if let Some(ids) = st.by_key.get_mut(&slot.key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                st.by_key.remove(&slot.key);
            }
        }
        st.running.remove(&id);
        self.set_counts(st);
    }

    /// Drops entry `id`, on disk first: when the journal refuses the line (a full disk), the
    /// entry stays queued in memory as it does on disk, and the caller's retry finds it again.
    /// Returns the line's number (not yet durable) when there was an entry.
    fn remove(&self, st: &mut State, id: u64, why: &str) -> Result<Option<u64>, crate::Error> {
        if !st.slots.contains_key(&id) {
            return Ok(None);
        }
        let (line, _, _) = self.append(st, &Line::Done { id, why: why.to_owned() })?;
        self.forget(st, id);
        Ok(Some(line))
    }

    /// Rewrites entry `e`'s line (a changed entry) and its slot.
    fn rewrite_entry(&self, st: &mut State, e: &Entry) -> Result<(), crate::Error> {
        let (_, offset, len) = self.append(st, &Line::Add(e.clone()))?;
        let slot = Self::slot_of(&self.hasher, st, e, offset, len);
        st.put(e.id, slot);
        self.set_counts(st);
        Ok(())
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
        let hash = self.key_hash(bucket, key, destination);
        let mut st = self.lock();
        let Some(ids) = st.by_key.get(&hash).cloned() else { return Ok(Vec::new()) };
        let mut dropped = Vec::new();
        let mut last = None;
        for id in ids {
            let Some(slot) = st.slots.get(&id).copied() else { continue };
            if slot.partition != partition || slot.seq >= seq || slot.parked {
                continue;
            }
            // The hash matched: the entry itself says whether it is this key's.
            let e = self.read(&st, &slot)?;
            let same = e.destination == destination
                && e.record().is_some_and(|r| r.bucket == bucket && r.key == key);
            // Entries handed to the scheduler are dropped too: the worker checks `is_live`
            // before running a retry (and a key's operations never run concurrently).
            if same {
                last = self.remove(&mut st, id, "superseded by a newer version")?.or(last);
                dropped.push(e);
            }
        }
        drop(st);
        if let Some(line) = last {
            self.sync_to(line)?;
        }
        Ok(dropped)
    }

    /// Whether (bucket, key) has operations parked for `destination`: a newer one must park
    /// behind them. (By the key's hash: a collision, at odds of 2^-64, parks an operation
    /// behind another key's until those are retried.)
    pub(crate) fn has_parked(&self, bucket: &str, key: &str, destination: &str) -> bool {
        if self.parked.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return false;
        }
        let hash = self.key_hash(bucket, key, destination);
        let st = self.lock();
        st.by_key
            .get(&hash)
            .is_some_and(|ids| ids.iter().any(|id| st.slots.get(id).is_some_and(|s| s.parked)))
    }

    /// Per partition (index; `partitions` of them), the log position of its oldest queued
    /// entry, exhausted and parked ones included.
    pub(crate) fn oldest(&self, partitions: u32) -> Vec<Option<u64>> {
        let mut oldest = vec![None; partitions as usize];
        if !self.nonempty.load(std::sync::atomic::Ordering::Acquire) {
            return oldest;
        }
        for s in self.lock().slots.values() {
            if let Some(o) = oldest.get_mut(s.partition as usize) {
                *o = Some(o.map_or(s.seq, |q: u64| q.min(s.seq)));
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
            st.slots.iter().filter(|(_, s)| !keep(s.partition)).map(|(id, _)| *id).collect();
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
    /// An entry the journal cannot give back is logged and exhausted.
    pub(crate) fn due(&self, now_ms: u64, limit: usize, up: impl Fn(&str) -> bool) -> Vec<Entry> {
        let mut st = self.lock();
        let down: std::collections::HashSet<u32> =
            (0..u32::try_from(st.names.len()).unwrap_or(0)).filter(|i| !up(st.name(*i))).collect();
        // From where the last look stopped, then from the start: a drain of many entries
        // costs each look about `limit` entries, not the whole queue.
        // Per key and destination, oldest first whatever the scan's order: an entry waits while
        // an older one of its key (not exhausted) is queued and not handed out (before, or in
        // this look).
        let cursor = st.cursor;
        let mut picked: Vec<(u64, Slot)> = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for (id, s) in st.slots.range(cursor..).chain(st.slots.range(..cursor)) {
            if picked.len() == limit {
                break;
            }
            let ready = s.next_at_ms != u64::MAX
                && s.next_at_ms <= now_ms
                && !st.running.contains(id)
                && !down.contains(&s.destination);
            let behind = || {
                st.by_key.get(&s.key).is_some_and(|ids| {
                    ids.iter().any(|o| {
                        *o < *id
                            && !st.running.contains(o)
                            && !taken.contains(o)
                            && st.slots.get(o).is_some_and(|older| older.next_at_ms != u64::MAX)
                    })
                })
            };
            if ready && !behind() {
                taken.insert(*id);
                picked.push((*id, *s));
            }
        }
        if let Some((last, _)) = picked.last() {
            st.cursor = last + 1;
        }
        // Handed out in id order (a look that wrapped found the older ones last).
        picked.sort_by_key(|(id, _)| *id);
        let mut due = Vec::with_capacity(picked.len());
        for (id, slot) in picked {
            match self.read(&st, &slot) {
                Ok(e) => {
                    st.running.insert(id);
                    due.push(e);
                }
                Err(e) => {
                    tracing::error!(id, error = %e, "A failed-operations entry cannot be read back; exhausted.");
                    if let Some(s) = st.slots.get_mut(&id) {
                        s.next_at_ms = u64::MAX;
                    }
                }
            }
        }
        due
    }

    /// Whether an entry is still queued (not superseded or finished).
    pub(crate) fn is_live(&self, id: u64) -> bool {
        self.lock().slots.contains_key(&id)
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
        let Some(slot) = st.slots.get(&id).copied() else { return Ok(()) };
        let mut e = self.read(&st, &slot)?;
        e.attempts += 1;
        e.parked = false;
        e.fresh = false;
        reason.as_str().clone_into(&mut e.reason);
        detail.clone_into(&mut e.detail);
        e.next_at_ms = (e.attempts <= self.policy.max_rounds)
            .then(|| now_ms + millis(self.policy.delay(e.attempts)));
        self.rewrite_entry(&mut st, &e)
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
        let Some(slot) = st.slots.get_mut(&id) else { return Ok(()) };
        if attempted {
            slot.fresh = false;
        }
        let slot = *slot;
        if !slot.parked {
            let mut e = self.read(&st, &slot)?;
            e.parked = true;
            e.next_at_ms = Some(now_ms);
            self.rewrite_entry(&mut st, &e)?;
        }
        Ok(())
    }

    /// `destination` answers again: its FAILED entries whose failure was the destination
    /// not answering are due now (parked ones are due whenever it is up). Returns how many
    /// entries wait for it.
    pub(crate) fn release(&self, destination: &str, now_ms: u64) -> usize {
        let mut st = self.lock();
        let Some(d) = st.id_of(destination) else { return 0 };
        let mut n = 0;
        for s in st.slots.values_mut().filter(|s| s.destination == d) {
            n += 1;
            if !s.parked && s.unavailable {
                s.next_at_ms = now_ms;
            }
        }
        n
    }

    /// Re-arms every entry (exhausted ones too) for an immediate retry; returns how many.
    pub(crate) fn retry_now(&self, now_ms: u64) -> usize {
        let mut st = self.lock();
        for s in st.slots.values_mut() {
            s.next_at_ms = now_ms;
        }
        st.slots.len()
    }

    /// Rewrites the journal with the live entries alone once its dead lines outnumber them
    /// (and there are enough to matter); returns whether it did. Blocking.
    pub(crate) fn compact_if_worth(&self) -> Result<bool, crate::Error> {
        let mut st = self.lock();
        if st.lines < 4096 || st.lines < 2 * st.slots.len() + 1024 {
            return Ok(false);
        }
        self.compact(&mut st)?;
        Ok(true)
    }

    /// Rewrites the journal with each live entry's newest line (copied as it is), durably.
    fn compact(&self, st: &mut State) -> Result<(), crate::Error> {
        let mut synced = self.synced.lock();
        let lines: Vec<(u64, u32)> = st.slots.values().map(|s| (s.offset, s.len)).collect();
        let offsets = rewrite(&self.path, &st.reader, &lines)?;
        for (slot, offset) in st.slots.values_mut().zip(&offsets) {
            slot.offset = *offset;
        }
        let (file, sync, reader) = open_handles(&self.path)?;
        st.end = lines.iter().map(|(_, len)| u64::from(*len)).sum();
        st.file = file;
        st.reader = reader;
        st.lines = lines.len();
        // A drained outage leaves the key index's and the running set's tables at their peak
        // size (a 180,000-entry backlog: ~8 MiB); compaction follows a drain, so give them back.
        st.by_key.shrink_to_fit();
        st.running.shrink_to_fit();
        *synced = (self.written.load(std::sync::atomic::Ordering::Acquire), sync);
        Ok(())
    }

    /// How many entries are queued.
    pub(crate) fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Per destination, what waits in the queue.
    pub(crate) fn by_destination(&self) -> HashMap<String, Waiting> {
        let mut out: HashMap<String, Waiting> = HashMap::new();
        if !self.nonempty.load(std::sync::atomic::Ordering::Acquire) {
            return out;
        }
        let st = self.lock();
        let mut by: HashMap<u32, Waiting> = HashMap::new();
        for s in st.slots.values() {
            let w = by.entry(s.destination).or_default();
            if s.parked {
                w.parked_ops += 1;
                w.parked_bytes += s.bytes;
            } else {
                w.failed_ops += 1;
            }
            if s.commit_ms > 0 {
                w.oldest_commit_ms =
                    Some(w.oldest_commit_ms.map_or(s.commit_ms, |o| o.min(s.commit_ms)));
            }
        }
        for (d, w) in by {
            out.insert(st.name(d).to_owned(), w);
        }
        out
    }

    /// Everything queued.
    pub(crate) fn list(&self) -> Vec<FailedOperation> {
        self.list_of(None, usize::MAX).1
    }

    /// How many entries `bucket` (every bucket: `None`) has queued, and the oldest `limit` of
    /// them (read from the journal: only those).
    pub(crate) fn list_of(
        &self,
        bucket: Option<&str>,
        limit: usize,
    ) -> (usize, Vec<FailedOperation>) {
        let st = self.lock();
        let wanted = match bucket {
            None => None,
            Some(b) => match st.id_of(b) {
                Some(i) => Some(i),
                None => return (0, Vec::new()),
            },
        };
        let mine = |s: &&Slot| wanted.is_none_or(|b| s.bucket == b);
        let total = st.slots.values().filter(mine).count();
        let listed = st
            .slots
            .values()
            .filter(mine)
            .take(limit)
            .filter_map(|s| {
                let e = self.read(&st, s).ok()?;
                let r = e.record()?;
                Some(FailedOperation {
                    id: e.id,
                    bucket: r.bucket,
                    key: r.key,
                    version_id: r.version_id,
                    reason: e.failure_reason(),
                    detail: e.failure_detail(),
                    attempts: e.attempts,
                    next_retry_ms: e.next_at_ms,
                    parked: e.parked,
                    partition: e.partition,
                    destination: e.destination,
                })
            })
            .collect();
        (total, listed)
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
        let park = |q: &FailedQueue, partition: u32, seq: u64, r: &VersionRecord| {
            q.add(partition, seq, r, &t, why, "parked", 1000, Queued::Parked { attempted: false })
                .unwrap()
        };
        let mut r1 = record("k1", "v1");
        r1.commit_time_ms = 500;
        let p1 = park(&q, 0, 10, &r1);
        let p2 = park(&q, 0, 11, &record("k1", "v2"));
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
        // The same operation (partition, position, destination) is not queued twice.
        let again =
            q.add(0, 11, &record("k1", "v2"), &t, why, "parked", 9000, Queued::Failed).unwrap();
        assert_eq!(again, p2);
        assert_eq!(q.len(), 2);
        // Compaction while running: dead lines outnumber the live ones.
        for i in 0..3000u64 {
            let id = park(&q, 1, i, &record("k3", "v"));
            q.succeeded(id).unwrap();
        }
        let before = std::fs::metadata(&path).unwrap().len();
        assert!(q.compact_if_worth().unwrap());
        assert!(!q.compact_if_worth().unwrap(), "nothing left to gain");
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 100 < before, "{before} -> {after} bytes");
        let kept = park(&q, 1, 5, &record("k4", "v"));
        drop(q);
        let q = FailedQueue::open(path, RetryPolicy::default()).unwrap();
        assert_eq!(q.list().iter().map(|e| e.id).collect::<Vec<_>>(), vec![p2, f, kept]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Due entries of one key and destination are handed out oldest first, wherever the
    /// last look stopped.
    #[test]
    fn a_keys_entries_are_handed_out_oldest_first() {
        let dir = std::env::temp_dir().join(format!("s3repl-failed-order-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let q = FailedQueue::open(dir.join("f.jsonl"), RetryPolicy::default()).unwrap();
        let t = task(None, None, false);
        let why = FailureReason::DstUnavailable;
        let old = q.add(0, 1, &record("k", "v1"), &t, why, "", 0, Queued::Failed).unwrap();
        let others: Vec<u64> = (0..4u64)
            .map(|i| {
                let r = record(&format!("o{i}"), "v");
                q.add(0, 2 + i, &r, &t, why, "", 0, Queued::Parked { attempted: false }).unwrap()
            })
            .collect();
        let new = q
            .add(0, 9, &record("k", "v2"), &t, why, "", 0, Queued::Parked { attempted: false })
            .unwrap();
        // k's FAILED v1 is not due yet: nothing of k is handed out, the others are.
        let first: Vec<u64> = q.due(1, 2, |_| true).iter().map(|e| e.id).collect();
        assert_eq!(first, others[..2]);
        let second: Vec<u64> = q.due(1, 10, |_| true).iter().map(|e| e.id).collect();
        assert_eq!(second, others[2..], "v2 waits behind v1");
        // v1 due (the look starts past it): v1 first, and v2 only once v1 is handed out.
        q.release("arn:aws:s3:::d", 1);
        assert_eq!(q.due(1, 1, |_| true).iter().map(|e| e.id).collect::<Vec<_>>(), vec![old]);
        assert_eq!(q.due(1, 10, |_| true).iter().map(|e| e.id).collect::<Vec<_>>(), vec![new]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Group commits and compactions running at once finish (a sync must not wait for the
    /// state's lock while a compaction holding it waits for the sync).
    #[test]
    fn syncs_and_compactions_at_once_do_not_deadlock() {
        let dir = std::env::temp_dir().join(format!("s3repl-failed-locks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let q = std::sync::Arc::new(
            FailedQueue::open(dir.join("f.jsonl"), RetryPolicy::default()).unwrap(),
        );
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(4);
        let mut threads = Vec::new();
        for w in 0..4u32 {
            let (q, done) = (q.clone(), done_tx.clone());
            threads.push(std::thread::spawn(move || {
                let t = task(None, None, false);
                for i in 0..1500u64 {
                    let r = record(&format!("w{w}-{i}"), "v");
                    let queued = Queued::Parked { attempted: false };
                    let id =
                        q.add(w, i, &r, &t, FailureReason::DstUnavailable, "", 0, queued).unwrap();
                    q.succeeded(id).unwrap();
                }
                done.send(()).unwrap();
            }));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let compactor = {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || {
                // Compacting over and over (holding the state's lock, taking the sync's).
                let mut compacted = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let mut st = q.lock();
                    q.compact(&mut st).unwrap();
                    compacted += 1;
                }
                compacted
            })
        };
        for _ in 0..4 {
            done_rx.recv_timeout(Duration::from_mins(1)).expect("a writer is stuck");
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        assert!(compactor.join().unwrap() > 0, "compactions ran meanwhile");
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(q.len(), 0);
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
