//! Intake of bucket event notifications (`POST /-/events` on the admin listener): for servers
//! that never embed the engine (`MinIO`, Ceph RGW, ...), their S3 event messages become
//! committed-version records in the log the replicator reads.
//!
//! A delivery is parsed ([`super::events`]); each event is enriched from the source bucket on
//! its S3 endpoint (one `HEAD` of the version: metadata, content headers, encryption, storage
//! class, Object Lock, replica status; `GetObjectTagging` only when it has tags;
//! `GetObjectAcl` for ACL changes); then, one delivery at a time, events already appended are
//! dropped, the rest are sorted by key and sequencer and appended in one batch, and marked as
//! appended. The sender is answered 200 only once its records are durable in the log, so a
//! sender that gets no answer retries, and a retried event appends nothing twice.
//!
//! Duplicates are recognised by the version (bucket, key, version id) for new versions and
//! delete markers — the events whose records would make a second replica — and by the
//! sequencer for tag and ACL changes (repeating those is harmless: they set the same values).
//! The marks live in a redb table beside the data. Version marks are committed durably at
//! most every `[intake] marks_durable_every_ms` (an fdatasync per group commit cost the webhook
//! a seventh of its CPU); records appended since the last durable commit are marked again at
//! start from the log's tail (the local log's, or the Kafka topic's partitions from the marked
//! offsets), so a crash loses none. Tag and ACL changes, which the log's records cannot
//! restore, are committed durably at once.
//!
//! A failed write of the log or the marks (a full disk, brokers that do not acknowledge)
//! refuses the group (503: the sender retries) and makes the next group repair first: a local
//! log is reopened (its torn tail cut off), the marks too when redb refuses writes after the
//! failure, and the records past the durable marks are marked — so intake resumes by itself
//! once there is room, and what the failed group got into the log is not appended again.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use s3repl::dest::{S3ReadError, S3VersionReader, VersionHead};
use s3repl::log::Position;
use s3repl::record::{ContentHeaders, LockMode, ObjectLock, Retention, SseInfo, VersionRecord};
use s3repl::rules::{EventKind, MetadataChanges, SseKind};
use serde_json::json;

use super::events::{Event, Kind, parse_delivery};
use crate::error::CliError;

/// Versions (and delete markers) appended: (bucket, key, version id).
const VERSIONS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("appended_versions");
/// Tag and ACL changes appended: (bucket, key, version id, kind, sequencer).
const CHANGES: TableDefinition<(&str, &str, &str, &str, &str), ()> =
    TableDefinition::new("appended_changes");
/// Per key, the highest sequencer of a version or delete marker appended.
const LATEST: TableDefinition<(&str, &str), &str> = TableDefinition::new("latest_sequencer");
/// Per log partition, the sequence number below which every record is marked.
const MARKED: TableDefinition<u32, u64> = TableDefinition::new("marked_below");
/// Per (bucket, prefix) being backfilled: the last key whose versions are all taken.
const BACKFILL: TableDefinition<(&str, &str), &str> = TableDefinition::new("backfill_after_key");

/// Source reads (`HEAD`, tags, ACL) intake keeps in flight at most.
const READS: usize = 128;

/// Where intake appends: the local log or the Kafka topic the replicator reads.
pub(crate) enum Sink {
    /// The local log (the replicator is its one writer).
    Local(LocalLog),
    /// A Kafka topic.
    Kafka(s3repl::pipeline::KafkaWriter),
}

/// The local log's writer, and what it takes to open it again: after an I/O failure (a full
/// disk) a writer refuses every append, and intake reopens it (which cuts a torn tail off)
/// once the disk takes writes again, without a restart.
pub(crate) struct LocalLog {
    writer: parking_lot::Mutex<Option<s3repl::log::LogWriter>>,
    dir: std::path::PathBuf,
    config: s3repl::log::LogConfig,
}

impl LocalLog {
    /// Intake's hold on `writer`.
    pub(crate) fn new(writer: s3repl::log::LogWriter) -> Self {
        let (dir, config) = (writer.dir().to_owned(), writer.config());
        LocalLog { writer: parking_lot::Mutex::new(Some(writer)), dir, config }
    }

    /// Where each partition's next record will go.
    fn next_seqs(&self) -> Vec<u64> {
        self.writer.lock().as_ref().map(s3repl::log::LogWriter::next_seqs).unwrap_or_default()
    }

    /// Drops the writer (and its lock) and opens the log again, recovering its tails.
    fn reopen(&self) -> Result<Vec<u64>, CliError> {
        let mut writer = self.writer.lock();
        *writer = None;
        let fresh = s3repl::log::LogWriter::open(&self.dir, self.config)?;
        let next = fresh.next_seqs();
        *writer = Some(fresh);
        Ok(next)
    }
}

impl Sink {
    fn append(&self, batch: &[(&str, &str, &[u8])]) -> Result<Vec<Position>, CliError> {
        match self {
            Sink::Local(l) => match l.writer.lock().as_ref() {
                Some(w) => Ok(w.append_batch(batch)?),
                None => Err(CliError::internal("the log is not open (it failed to reopen)")),
            },
            Sink::Kafka(w) => Ok(w.append_batch(batch)?),
        }
    }
}

/// What intake has done since the process started (for `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct IntakeCounters {
    pub(crate) deliveries: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) appended: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) out_of_order: AtomicU64,
}

/// The webhook's state.
pub(crate) struct Intake {
    readers: HashMap<String, Arc<S3VersionReader>>,
    sink: Arc<Sink>,
    /// The marks (`None` only while reopened after an I/O failure, see [`Intake::repair`]).
    marks: parking_lot::RwLock<Option<Arc<Database>>>,
    marks_path: std::path::PathBuf,
    /// Deliveries waiting for the appender.
    pending: parking_lot::Mutex<Vec<Waiting>>,
    /// The appender's turn: one group checks, appends and marks at a time (the sequence that
    /// keeps duplicates out and a key's records in order).
    appending: Arc<tokio::sync::Mutex<()>>,
    /// The bearer token senders may authenticate with (`MinIO`'s `auth_token`).
    pub(crate) token: Option<String>,
    /// Source reads in flight for enrichment, across deliveries.
    reads: Arc<tokio::sync::Semaphore>,
    pub(crate) counters: IntakeCounters,
    /// When the marks were last committed durably.
    last_durable: parking_lot::Mutex<std::time::Instant>,
    /// An append or a marks' commit failed (a full disk): before the next group, the local
    /// log is reopened and its records past the marks are marked again ([`Intake::repair`]).
    repair_needed: Arc<std::sync::atomic::AtomicBool>,
    /// Bounds the warnings of a log that cannot be written.
    refusals: super::listener::Throttle,
    /// The longest the marks go without a durable commit (a local log's).
    durable_every: std::time::Duration,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").field("buckets", &self.readers.keys()).finish_non_exhaustive()
    }
}

/// A delivery's events with their records, and how many of its events were skipped.
type Prepared = (Vec<(Event, VersionRecord)>, u64);

/// A delivery waiting for the appender, and where its (appended, duplicates) go.
struct Waiting {
    batch: Vec<(Event, VersionRecord)>,
    done: tokio::sync::oneshot::Sender<Result<(u64, u64), Refusal>>,
}

/// Why a delivery was not taken: the HTTP status and the reason.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into() }
}

fn marks_error(e: impl std::fmt::Display) -> CliError {
    CliError::internal(format!("intake marks: {e}"))
}

/// Opens (creating) the marks at `path`, with every table.
fn open_marks(path: &Path) -> Result<Database, redb::Error> {
    // A bounded page cache (redb's default is 1 GiB: the process would grow with every
    // version marked).
    let marks = redb::Builder::new().set_cache_size(16 << 20).create(path)?;
    let txn = marks.begin_write()?;
    txn.open_table(VERSIONS)?;
    txn.open_table(CHANGES)?;
    txn.open_table(LATEST)?;
    txn.open_table(MARKED)?;
    txn.open_table(BACKFILL)?;
    txn.commit()?;
    Ok(marks)
}

impl Intake {
    /// Intake for the source buckets `readers` names, appending to `sink`, its marks in
    /// `state_dir/intake.redb`, committed durably at least every `durable_every`. With a local
    /// log (`log_dir`), records appended after the last durable marks (a crash between an
    /// append and its marks, or before a durable commit) are marked first.
    pub(crate) fn open(
        readers: HashMap<String, Arc<S3VersionReader>>,
        sink: Sink,
        state_dir: &Path,
        log_dir: Option<&Path>,
        token: Option<String>,
        durable_every: std::time::Duration,
    ) -> Result<Self, CliError> {
        std::fs::create_dir_all(state_dir).map_err(CliError::file(state_dir))?;
        let path = state_dir.join("intake.redb");
        // Never started without its marks: a redelivered event would then append its version
        // again (a second replica version). The operator decides.
        let damaged = |e: &dyn std::fmt::Display| {
            CliError::internal(format!(
                "intake marks {}: {e}. They recognise events delivered again; restore the file, \
                 or move it aside to start without them (events delivered again may then \
                 replicate their versions twice)",
                path.display()
            ))
        };
        let marks = open_marks(&path).map_err(|e| damaged(&e))?;
        match (&sink, log_dir) {
            (Sink::Local(l), Some(dir)) => remark_tail(&marks, dir, &l.next_seqs())?,
            (Sink::Kafka(w), _) => remark_topic(&marks, w)?,
            (Sink::Local(_), None) => {}
        }
        Ok(Intake {
            readers,
            sink: Arc::new(sink),
            marks: parking_lot::RwLock::new(Some(Arc::new(marks))),
            marks_path: path,
            pending: parking_lot::Mutex::new(Vec::new()),
            appending: Arc::new(tokio::sync::Mutex::new(())),
            token,
            reads: Arc::new(tokio::sync::Semaphore::new(READS)),
            counters: IntakeCounters::default(),
            last_durable: parking_lot::Mutex::new(std::time::Instant::now()),
            durable_every,
            repair_needed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            refusals: super::listener::Throttle::new(1),
        })
    }

    /// Takes one delivery: its JSON answer once every record is durable, or why not.
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        body: &[u8],
    ) -> Result<serde_json::Value, Refusal> {
        self.deliver_in_order(&[body]).await.pop().unwrap_or_else(|| Err(refuse(500, "no answer")))
    }

    /// Takes deliveries that must keep their order (a Kafka partition's messages): all in one
    /// group commit, so a key's events of two of them cannot be appended out of order. One
    /// answer per delivery, in order.
    pub(crate) async fn deliver_in_order(
        self: &Arc<Self>,
        bodies: &[&[u8]],
    ) -> Vec<Result<serde_json::Value, Refusal>> {
        self.counters.deliveries.fetch_add(bodies.len() as u64, Ordering::Relaxed);
        // Enriched at once; answered in order.
        let mut preparing = tokio::task::JoinSet::new();
        for (i, body) in bodies.iter().enumerate() {
            let (me, body) = (self.clone(), body.to_vec());
            preparing.spawn(async move { (i, me.prepare(&body).await) });
        }
        let mut prepared: Vec<Result<Prepared, Refusal>> =
            (0..bodies.len()).map(|_| Err(refuse(500, "an enrichment task failed"))).collect();
        while let Some(Ok((i, p))) = preparing.join_next().await {
            if let Some(slot) = prepared.get_mut(i) {
                *slot = p;
            }
        }
        let batches: Vec<Vec<(Event, VersionRecord)>> = prepared
            .iter_mut()
            .filter_map(|p| p.as_mut().ok().map(|(batch, _)| std::mem::take(batch)))
            .collect();
        let mut committed = self.submit(batches).await.into_iter();
        let results: Vec<Option<Result<(u64, u64), Refusal>>> =
            prepared.iter().map(|p| p.is_ok().then(|| committed.next()).flatten()).collect();
        let mut answers = Vec::with_capacity(prepared.len());
        for (p, result) in prepared.into_iter().zip(results) {
            let answer = match (p, result) {
                (Ok((_, skipped)), Some(result)) => match result {
                    Ok((appended, duplicates)) => {
                        self.counters.skipped.fetch_add(skipped, Ordering::Relaxed);
                        Ok(
                            json!({"appended": appended, "duplicates": duplicates, "skipped": skipped}),
                        )
                    }
                    Err(e) => Err(e),
                },
                (Err(e), _) => Err(e),
                (Ok(_), None) => Err(refuse(500, "no answer")),
            };
            if answer.is_err() {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            answers.push(answer);
        }
        answers
    }

    /// Where a backfill of `bucket` under `prefix` stopped: the last key whose versions were
    /// all taken (`None`: from the start).
    pub(crate) fn backfill_position(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Option<String>, CliError> {
        let txn = self.marks()?.begin_read().map_err(marks_error)?;
        let table = txn.open_table(BACKFILL).map_err(marks_error)?;
        Ok(table.get((bucket, prefix)).map_err(marks_error)?.map(|g| g.value().to_owned()))
    }

    /// Saves (or, with `None`, forgets: the backfill is complete) where a backfill stopped.
    pub(crate) fn save_backfill_position(
        &self,
        bucket: &str,
        prefix: &str,
        after_key: Option<&str>,
    ) -> Result<(), CliError> {
        let saved = (|| {
            let txn = self.marks()?.begin_write().map_err(marks_error)?;
            {
                let mut table = txn.open_table(BACKFILL).map_err(marks_error)?;
                match after_key {
                    Some(k) => table.insert((bucket, prefix), k).map(|_| ()),
                    None => table.remove((bucket, prefix)).map(|_| ()),
                }
                .map_err(marks_error)?;
            }
            txn.commit().map_err(marks_error)
        })();
        if saved.is_err() {
            self.needs_repair();
        }
        saved
    }

    /// The marks, unless they are being reopened.
    fn marks(&self) -> Result<Arc<Database>, CliError> {
        self.marks.read().clone().ok_or_else(|| marks_error("reopened after an I/O failure"))
    }

    /// After a failed write of the log or the marks: the next group repairs first.
    fn needs_repair(&self) {
        self.repair_needed.store(true, Ordering::Release);
    }

    /// Whether each version (key, version id) of `bucket` was appended already.
    pub(crate) fn appended(
        &self,
        bucket: &str,
        versions: &[(&str, &str)],
    ) -> Result<Vec<bool>, CliError> {
        let txn = self.marks()?.begin_read().map_err(marks_error)?;
        let table = txn.open_table(VERSIONS).map_err(marks_error)?;
        versions
            .iter()
            .map(|&(k, v)| Ok(table.get((bucket, k, v)).map_err(marks_error)?.is_some()))
            .collect()
    }

    /// The reader of a source bucket this intake serves.
    pub(crate) fn reader(&self, bucket: &str) -> Option<Arc<S3VersionReader>> {
        self.readers.get(bucket).cloned()
    }

    /// Appends batches of events with their records (in order, in one group commit with
    /// whatever else waits) once none of them was appended before: (appended, duplicates) per
    /// batch, in order.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        batches: Vec<Vec<(Event, VersionRecord)>>,
    ) -> Vec<Result<(u64, u64), Refusal>> {
        // Group commit: every batch waiting when the appender is free goes in one append (one
        // fsync of the log, one of the marks); the first to get the turn appends for all.
        let mut results = Vec::with_capacity(batches.len());
        {
            let mut pending = self.pending.lock();
            for batch in batches {
                let (done, result) = tokio::sync::oneshot::channel();
                pending.push(Waiting { batch, done });
                results.push(result);
            }
        }
        // The group is appended and marked by a task of its own, holding the turn: a client
        // that goes away mid-append cancels neither the marks nor the other deliveries' answers.
        let turn = self.appending.clone().lock_owned().await;
        let group = std::mem::take(&mut *self.pending.lock());
        if !group.is_empty() {
            let me = self.clone();
            let _ = tokio::spawn(async move {
                me.commit(group).await;
                drop(turn);
            })
            .await;
        }
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            out.push(
                r.await
                    .unwrap_or_else(|_| Err(refuse(500, "the appender stopped before answering"))),
            );
        }
        out
    }

    /// Parses and enriches one delivery: its events with their records, and how many were
    /// skipped (nothing to replicate, or the version is gone).
    async fn prepare(&self, body: &[u8]) -> Result<Prepared, Refusal> {
        let events = parse_delivery(body).map_err(|e| refuse(400, e))?;
        let mut skipped = 0u64;
        let mut wanted = Vec::with_capacity(events.len());
        for e in events {
            if let Kind::Skipped(why) = &e.kind {
                tracing::debug!(bucket = %e.bucket, key = %e.key, why = %why, "Event skipped.");
                skipped += 1;
                continue;
            }
            if !self.readers.contains_key(&e.bucket) {
                return Err(refuse(
                    400,
                    format!(
                        "bucket {:?} is not a source bucket of this replicator ([source] buckets)",
                        e.bucket
                    ),
                ));
            }
            wanted.push(e);
        }
        // Enriched outside the append lock, at once (a delivery holds a handful of events).
        let mut enriching = tokio::task::JoinSet::new();
        for (i, e) in wanted.iter().cloned().enumerate() {
            let Some(reader) = self.readers.get(&e.bucket).cloned() else { continue };
            let reads = self.reads.clone();
            enriching.spawn(async move {
                // A delivery of thousands of events reads at most `READS` versions at once.
                let _permit = reads.acquire_owned().await;
                (i, record_for(&reader, &e).await)
            });
        }
        let mut records: Vec<Option<VersionRecord>> = vec![None; wanted.len()];
        while let Some(done) = enriching.join_next().await {
            let (i, r) =
                done.map_err(|e| refuse(500, format!("an enrichment task failed: {e}")))?;
            match r {
                Ok(r) => {
                    if let Some(slot) = records.get_mut(i) {
                        *slot = r;
                    }
                }
                // The sender retries: a source that does not answer now may later.
                Err(S3ReadError::Transient(e)) => {
                    return Err(refuse(503, format!("the source did not answer: {e}")));
                }
                Err(e) => return Err(refuse(502, format!("the source refused a read: {e}"))),
            }
        }
        let mut batch: Vec<(Event, VersionRecord)> = Vec::with_capacity(wanted.len());
        for (e, r) in wanted.into_iter().zip(records) {
            if let Some(r) = r {
                batch.push((e, r));
            } else {
                // Deleted since: nothing left to copy (S3 would report SrcVersionNotFound).
                tracing::info!(bucket = %e.bucket, key = %e.key, version = %e.version_id, "Event for a version that no longer exists; nothing appended.");
                skipped += 1;
            }
        }
        Ok((batch, skipped))
    }

    /// Appends the deliveries of `group` as one batch and answers each: per key in sequencer
    /// order, without what was appended before (or earlier in the group).
    async fn commit(self: &Arc<Self>, group: Vec<Waiting>) {
        let mut all: Vec<(usize, Event, VersionRecord)> = Vec::new();
        let mut answers = Vec::with_capacity(group.len());
        for (owner, w) in group.into_iter().enumerate() {
            all.extend(w.batch.into_iter().map(|(e, r)| (owner, e, r)));
            answers.push(w.done);
        }
        // Stable: the same key's events of two deliveries keep their arrival order on a tie.
        all.sort_by(|(_, a, _), (_, b, _)| {
            (&a.bucket, &a.key, &a.sequencer).cmp(&(&b.bucket, &b.key, &b.sequencer))
        });
        let outcome = self.append_group(all, answers.len()).await;
        for (owner, answer) in answers.into_iter().enumerate() {
            let _ = answer.send(match &outcome {
                Ok(counts) => Ok(counts.get(owner).copied().unwrap_or((0, 0))),
                Err(refusal) => Err(refusal.clone()),
            });
        }
    }

    /// Deduplicates, appends and marks a group; (appended, duplicates) per delivery.
    async fn append_group(
        self: &Arc<Self>,
        all: Vec<(usize, Event, VersionRecord)>,
        owners: usize,
    ) -> Result<Vec<(u64, u64)>, Refusal> {
        let mut counts = vec![(0u64, 0u64); owners];
        if self.repair_needed.load(Ordering::Acquire) {
            self.repair().await?;
        }
        let (fresh, duplicated) = self.unseen(all).map_err(|e| {
            self.needs_repair();
            refuse(503, e.to_string())
        })?;
        for owner in duplicated {
            if let Some(c) = counts.get_mut(owner) {
                c.1 += 1;
            }
        }
        if fresh.is_empty() {
            self.counters.duplicates.fetch_add(counts.iter().map(|c| c.1).sum(), Ordering::Relaxed);
            return Ok(counts);
        }
        let encoded: Vec<(String, String, Vec<u8>)> = fresh
            .iter()
            .map(|(_, _, r)| Ok((r.bucket.clone(), r.key.clone(), r.to_bytes()?)))
            .collect::<Result<_, s3repl::record::RecordError>>()
            .map_err(|e| refuse(400, format!("an event cannot be recorded: {e}")))?;
        // Marks are committed durably when the log's tail cannot restore them (for tag and
        // ACL changes, whose marks the records do not carry) and at least once per
        // `durable_every` (`[intake] marks_durable_every_ms`); in between, redb keeps them in
        // memory and a crash loses them to the last durable commit, from whose positions
        // `remark_tail` (`remark_topic` on Kafka) marks the log's records again at start. A
        // durable commit is an fdatasync: one per group cost the webhook a seventh of its CPU
        // (perf, scripts/intake-load.sh).
        let durable =
            fresh.iter().any(|(_, e, _)| !matches!(e.kind, Kind::Created | Kind::DeleteMarker))
                || self.last_durable.lock().elapsed() >= self.durable_every;
        let marks = self.marks().map_err(|e| refuse(503, e.to_string()))?;
        let (sink, repair) = (self.sink.clone(), self.repair_needed.clone());
        let (owners, events): (Vec<usize>, Vec<Event>) =
            fresh.into_iter().map(|(owner, e, _)| (owner, e)).unzip();
        // The append and the marks' commit block (fdatasync): off the runtime's workers. When
        // either fails (a full disk) the sender is refused and retries; the records may be in
        // the log without their marks, so the next group first repairs: it reopens the log
        // and marks what is in it.
        let late = tokio::task::spawn_blocking(move || {
            let batch: Vec<(&str, &str, &[u8])> =
                encoded.iter().map(|(b, k, p)| (b.as_str(), k.as_str(), p.as_slice())).collect();
            let positions = sink.append(&batch).map_err(|e| {
                repair.store(true, Ordering::Release);
                refuse(503, format!("the log did not take the records: {e}"))
            })?;
            mark(&marks, &events, &positions, durable).map_err(|e| {
                repair.store(true, Ordering::Release);
                refuse(503, format!("the records are in the log, their marks are not: {e}"))
            })
        })
        .await
        .map_err(|e| refuse(500, format!("the append task failed: {e}")))??;
        if durable {
            *self.last_durable.lock() = std::time::Instant::now();
        }
        for owner in &owners {
            if let Some(c) = counts.get_mut(*owner) {
                c.0 += 1;
            }
        }
        self.counters.out_of_order.fetch_add(late, Ordering::Relaxed);
        self.counters.appended.fetch_add(owners.len() as u64, Ordering::Relaxed);
        self.counters.duplicates.fetch_add(counts.iter().map(|c| c.1).sum(), Ordering::Relaxed);
        Ok(counts)
    }

    /// After an append or a marks' commit failed: reopens a local log (cutting a torn tail
    /// off) and marks the records past the durable marks (a local log's tail, the topic's on
    /// Kafka, where the brokers may have taken records whose acknowledgement or marks were
    /// lost), so that nothing the failed group got into the log is appended again. Refuses
    /// (503) while the disk or the brokers still fail it.
    async fn repair(self: &Arc<Self>) -> Result<(), Refusal> {
        let this = self.clone();
        let repaired = tokio::task::spawn_blocking(move || {
            let next = match &*this.sink {
                Sink::Local(l) => Some(l.reopen()?),
                Sink::Kafka(_) => None,
            };
            let remark = |marks: &Database| match (&*this.sink, &next) {
                (Sink::Local(l), Some(next)) => remark_tail(marks, &l.dir, next),
                (Sink::Kafka(w), _) => remark_topic(marks, w),
                (Sink::Local(_), None) => Ok(()),
            };
            if let Ok(marks) = this.marks()
                && remark(&marks).is_ok()
            {
                return Ok(());
            }
            // redb refuses every write after a failed one until it is opened again (and the
            // marks are not open at all when opening them again failed before).
            let mut slot = this.marks.write();
            if let Some(old) = slot.take()
                && let Err(shared) = Arc::try_unwrap(old)
            {
                *slot = Some(shared);
                return Err(marks_error("still in use; reopened with a later delivery"));
            }
            let marks = Arc::new(open_marks(&this.marks_path).map_err(marks_error)?);
            *slot = Some(marks.clone());
            drop(slot);
            remark(&marks)
        })
        .await
        .map_err(|e| refuse(500, format!("the repair task failed: {e}")))?;
        match repaired {
            Ok(()) => {
                self.repair_needed.store(false, Ordering::Release);
                tracing::info!("The log takes writes again; intake resumes.");
                Ok(())
            }
            Err(e) => {
                if let Some(held) = self.refusals.allow() {
                    tracing::warn!(error = %e, similar_held_back = held, "The log cannot be written; deliveries are refused until it can.");
                }
                Err(refuse(503, format!("the log cannot be written: {e}")))
            }
        }
    }

    /// The events not appended before (and not twice in this group), and the owners of those
    /// that were.
    #[allow(clippy::type_complexity)]
    fn unseen(
        &self,
        batch: Vec<(usize, Event, VersionRecord)>,
    ) -> Result<(Vec<(usize, Event, VersionRecord)>, Vec<usize>), CliError> {
        let txn = self.marks()?.begin_read().map_err(marks_error)?;
        let versions = txn.open_table(VERSIONS).map_err(marks_error)?;
        let changes = txn.open_table(CHANGES).map_err(marks_error)?;
        let mut seen_here = BTreeSet::new();
        let mut fresh = Vec::with_capacity(batch.len());
        let mut duplicates = Vec::new();
        for (owner, e, r) in batch {
            let kind = kind_name(&e.kind);
            let id = (e.bucket.clone(), e.key.clone(), e.version_id.clone(), kind, change_id(&e));
            let before = match e.kind {
                Kind::Created | Kind::DeleteMarker => versions
                    .get((e.bucket.as_str(), e.key.as_str(), e.version_id.as_str()))
                    .map_err(marks_error)?
                    .is_some(),
                _ => changes
                    .get((
                        e.bucket.as_str(),
                        e.key.as_str(),
                        e.version_id.as_str(),
                        kind,
                        id.4.as_str(),
                    ))
                    .map_err(marks_error)?
                    .is_some(),
            };
            if before || !seen_here.insert(id) {
                duplicates.push(owner);
            } else {
                fresh.push((owner, e, r));
            }
        }
        Ok((fresh, duplicates))
    }
}

/// Marks appended events and the log positions they reached; returns how many versions
/// arrived after a later one of their key (appended anyway: nothing is dropped). Not `durable`:
/// held in memory until a later durable commit (see `Intake::append_group`).
fn mark(
    marks: &Database,
    batch: &[Event],
    positions: &[Position],
    durable: bool,
) -> Result<u64, CliError> {
    let mut txn = marks.begin_write().map_err(marks_error)?;
    txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
        .map_err(marks_error)?;
    let mut late = 0;
    {
        let mut versions = txn.open_table(VERSIONS).map_err(marks_error)?;
        let mut changes = txn.open_table(CHANGES).map_err(marks_error)?;
        let mut latest = txn.open_table(LATEST).map_err(marks_error)?;
        let mut marked = txn.open_table(MARKED).map_err(marks_error)?;
        for e in batch {
            let (b, k, v) = (e.bucket.as_str(), e.key.as_str(), e.version_id.as_str());
            match e.kind {
                Kind::Created | Kind::DeleteMarker => {
                    versions.insert((b, k, v), ()).map_err(marks_error)?;
                    let newest =
                        latest.get((b, k)).map_err(marks_error)?.map(|g| g.value().to_owned());
                    match newest {
                        Some(n) if !e.sequencer.is_empty() && n.as_str() > e.sequencer.as_str() => {
                            late += 1;
                            tracing::warn!(
                                bucket = b,
                                key = k,
                                version = v,
                                "A version's event arrived after a later version's: appended after it, so the destination's current version may be this older one until the key changes again."
                            );
                        }
                        _ => {
                            latest.insert((b, k), e.sequencer.as_str()).map_err(marks_error)?;
                        }
                    }
                }
                _ => {
                    let id = change_id(e);
                    changes
                        .insert((b, k, v, kind_name(&e.kind), id.as_str()), ())
                        .map_err(marks_error)?;
                }
            }
        }
        for p in positions {
            let below = marked.get(p.partition).map_err(marks_error)?.map_or(0, |g| g.value());
            if p.seq + 1 > below {
                marked.insert(p.partition, p.seq + 1).map_err(marks_error)?;
            }
        }
    }
    txn.commit().map_err(marks_error)?;
    Ok(late)
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Created => "created",
        Kind::DeleteMarker => "delete_marker",
        Kind::Tagging => "tagging",
        Kind::Acl => "acl",
        Kind::Retention => "retention",
        Kind::LegalHold => "legal_hold",
        Kind::Skipped(_) => "skipped",
    }
}

/// A change event's identity beyond its version: its sequencer (or, without one, its size
/// and `ETag`, which is all a sender without sequencers says).
fn change_id(e: &Event) -> String {
    if e.sequencer.is_empty() { format!("{:?}/{:?}", e.size, e.etag) } else { e.sequencer.clone() }
}

/// Marks the versions and delete markers of records appended to the local log at or after
/// the marked positions (a crash between an append and its marks).
fn remark_tail(marks: &Database, dir: &Path, ends: &[u64]) -> Result<(), CliError> {
    let partitions = u32::try_from(ends.len()).unwrap_or(u32::MAX);
    remark_from(marks, partitions, |partition, from, each| {
        let end = ends.get(partition as usize).copied().unwrap_or(0);
        if from >= end {
            return Ok(from);
        }
        let mut reader = s3repl::log::LogReader::open(
            s3repl::log::FileStorage,
            dir,
            partition,
            from,
            s3repl::log::ReadOptions::default(),
        );
        let mut batch = s3repl::log::RecordBatch::default();
        loop {
            batch.clear();
            if reader.read_records(1024, &mut batch)? == 0 {
                break;
            }
            for rec in batch.iter() {
                each(rec.payload);
            }
        }
        Ok(end)
    })
}

/// [`remark_tail`] for a log on a Kafka topic: the records at or after the marked offsets, up
/// to each partition's end (a crash, or a failed marks' commit, after the brokers took a
/// group's records; or records the brokers took although their acknowledgement never came).
fn remark_topic(marks: &Database, writer: &s3repl::pipeline::KafkaWriter) -> Result<(), CliError> {
    remark_from(marks, writer.partitions(), |partition, from, each| {
        Ok(writer.read_partition(partition, from, |_, payload| each(payload))?)
    })
}

/// Marks the versions and delete markers of the records `read(partition, from, each)` hands
/// to `each`, for each partition from its marked position; `read` returns where the partition
/// ends, which is marked. Durable.
fn remark_from(
    marks: &Database,
    partitions: u32,
    mut read: impl FnMut(u32, u64, &mut dyn FnMut(&[u8])) -> Result<u64, CliError>,
) -> Result<(), CliError> {
    let txn = marks.begin_write().map_err(marks_error)?;
    {
        let mut versions = txn.open_table(VERSIONS).map_err(marks_error)?;
        let mut marked = txn.open_table(MARKED).map_err(marks_error)?;
        for partition in 0..partitions {
            let from = marked.get(partition).map_err(marks_error)?.map_or(0, |g| g.value());
            let mut remarked = 0u64;
            let mut failed = None;
            let end = read(partition, from, &mut |payload| {
                let Ok(r) = VersionRecord::decode(payload) else { return };
                if failed.is_none()
                    && matches!(r.operation, EventKind::Put | EventKind::DeleteMarker)
                {
                    match versions
                        .insert((r.bucket.as_str(), r.key.as_str(), r.version_id.as_str()), ())
                    {
                        Ok(_) => remarked += 1,
                        Err(e) => failed = Some(marks_error(e)),
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            if end > from {
                marked.insert(partition, end).map_err(marks_error)?;
            }
            if remarked > 0 {
                tracing::info!(
                    partition,
                    records = remarked,
                    "Intake marks restored from the log's tail."
                );
            }
        }
    }
    txn.commit().map_err(marks_error)
}

/// The record an event stands for, read from the source: `None` when the version is gone.
pub(crate) async fn record_for(
    reader: &S3VersionReader,
    e: &Event,
) -> Result<Option<VersionRecord>, S3ReadError> {
    let base = VersionRecord {
        bucket: e.bucket.clone(),
        key: e.key.clone(),
        version_id: e.version_id.clone(),
        commit_time_ms: now_ms(),
        ..VersionRecord::default()
    };
    if e.kind == Kind::DeleteMarker {
        return Ok(Some(VersionRecord { operation: EventKind::DeleteMarker, ..base }));
    }
    let Some(head) = reader.head(&e.key, &e.version_id).await? else { return Ok(None) };
    let mut r = from_head(base, &head);

    match e.kind {
        Kind::Created => {
            if head.tagging_count() > 0 {
                let Some(tags) = gone(reader.tags(&e.key, &e.version_id).await)? else {
                    return Ok(None);
                };
                r.tags = tags;
            }
        }
        Kind::Tagging => {
            let Some(tags) = gone(reader.tags(&e.key, &e.version_id).await)? else {
                return Ok(None);
            };
            r.tags = tags;
            r.operation = EventKind::MetadataUpdate;
            r.changes = MetadataChanges::TAGS;
        }
        Kind::Acl => {
            let Some(acl) = gone(reader.acl(&e.key, &e.version_id).await)? else {
                return Ok(None);
            };
            r.acl = Some(acl);
            r.operation = EventKind::MetadataUpdate;
            r.changes = MetadataChanges::ACL;
        }
        // The HEAD carries the version's Object Lock settings now.
        Kind::Retention => {
            r.operation = EventKind::MetadataUpdate;
            r.changes = MetadataChanges::RETENTION;
        }
        Kind::LegalHold => {
            r.operation = EventKind::MetadataUpdate;
            r.changes = MetadataChanges::LEGAL_HOLD;
        }
        Kind::DeleteMarker | Kind::Skipped(_) => return Ok(None),
    }
    Ok(Some(r))
}

/// A read's answer, `None` when the version is gone (deleted since its event).
fn gone<T>(res: Result<T, S3ReadError>) -> Result<Option<T>, S3ReadError> {
    match res {
        Err(S3ReadError::NotFound(_)) => Ok(None),
        other => other.map(Some),
    }
}

/// The encryption a version's `HEAD` answer names (`verify` reads it too).
pub(crate) fn sse_kind(head: &VersionHead) -> SseKind {
    if head.header("x-amz-server-side-encryption-customer-algorithm").is_some() {
        return SseKind::SseC;
    }
    match head.header("x-amz-server-side-encryption") {
        Some("aws:kms") => SseKind::SseKms,
        Some("aws:kms:dsse") => SseKind::DsseKms,
        Some("AES256") => SseKind::SseS3,
        _ => SseKind::None,
    }
}

/// A version's record as its `HEAD` describes it.
fn from_head(base: VersionRecord, h: &VersionHead) -> VersionRecord {
    let header = |n: &str| h.header(n).map(str::to_owned);
    let sse_kind = sse_kind(h);
    let retention = match (
        h.header("x-amz-object-lock-mode").and_then(|m| m.parse::<LockMode>().ok()),
        h.header("x-amz-object-lock-retain-until-date").and_then(parse_date_ms),
    ) {
        (Some(mode), Some(retain_until_ms)) => Some(Retention { mode, retain_until_ms }),
        _ => None,
    };
    VersionRecord {
        size: h.size().unwrap_or(0),
        etag: header("etag").unwrap_or_default(),
        commit_time_ms: h
            .header("last-modified")
            .and_then(parse_date_ms)
            .unwrap_or(base.commit_time_ms),
        storage_class: h
            .header("x-amz-storage-class")
            .and_then(|c| c.parse().ok())
            .unwrap_or_default(),
        user_metadata: h.user_metadata().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        sse: SseInfo {
            kind: sse_kind,
            kms_key_id: match sse_kind {
                SseKind::SseC => header("x-amz-server-side-encryption-customer-key-md5"),
                SseKind::SseKms | SseKind::DsseKms => {
                    header("x-amz-server-side-encryption-aws-kms-key-id")
                }
                _ => None,
            },
            wrapped_dek: None,
        },
        is_replica: h.header("x-amz-replication-status") == Some("REPLICA"),
        content: ContentHeaders {
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
            content_disposition: header("content-disposition"),
            content_language: header("content-language"),
            cache_control: header("cache-control"),
            expires: header("expires"),
        },
        lock: ObjectLock {
            retention,
            legal_hold: h.header("x-amz-object-lock-legal-hold") == Some("ON"),
        },
        ..base
    }
}

/// An HTTP date (`Last-Modified`) or an ISO 8601 one (`retain-until-date`), in Unix ms.
fn parse_date_ms(s: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc2822(s)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

/// Milliseconds since the Unix epoch (also the admin endpoint's clock).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
