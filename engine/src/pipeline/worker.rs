//! Stage 3, the copy workers: run each admitted version's tasks with retries, settle the
//! failed-operations queue, report statuses, finish the log position; and the background
//! retries of the failed-operations queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use s3repl_io::dest::{DestinationError, Pending, Refusal, Stamp};

use crate::pipeline::context::{Shared, Stop, panic_message, task_failed};
use crate::pipeline::copy::{Written, changed_settings, copy, replica_settings};
use crate::pipeline::failed::Queued;
use crate::pipeline::input::LogInput;
use crate::pipeline::replay::{lookup_replica, replayed, replica_of};
use crate::pipeline::scheduler::{Admitted, KeyedScheduler};
use crate::pipeline::status::{FailureReason, ReplicationStatus};
use crate::pipeline::task::{Failure, Item, Job, KeyHash, Task, backoff, key_hash, task_bytes};
use crate::record::{VersionRecord, stamps};
use crate::rules::Action;

/// Dispatched jobs, shared by the copy workers, and the slots of the jobs they may run at
/// once.
pub(crate) struct Ready {
    rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Admitted<KeyHash, Job>>>,
    /// One per job running (`Limits::workers`).
    slots: tokio::sync::Semaphore,
}

impl Ready {
    pub(crate) fn new(
        rx: tokio::sync::mpsc::Receiver<Admitted<KeyHash, Job>>,
        workers: usize,
    ) -> Self {
        Ready { rx: tokio::sync::Mutex::new(rx), slots: tokio::sync::Semaphore::new(workers) }
    }
}

/// Admitted jobs a worker takes at once when more are waiting: each hand-off between the
/// workers (the shared receiver's lock passing on) wakes a task, and on a multi-threaded
/// runtime about every other wake-up also wakes a parked thread (a system call and a context
/// switch: together a fifth of the CPU of a small-object copy, `docs/design/cpu-per-version.md`);
/// a batch makes one hand-off do for several jobs. A batch's jobs run concurrently, each
/// holding one of `Limits::workers` slots, so no job waits behind another and no more than
/// that many run at once.
const BATCH_JOBS: usize = 8;
/// Only small jobs are batched (their object bytes together): a batch's jobs share one task,
/// which one thread polls, and a large copy's hashing should have a thread of its own.
const BATCH_BYTES: u64 = 1 << 20;

pub(crate) async fn work(shared: Arc<Shared>, ready: Arc<Ready>, stop: Arc<Stop>) {
    let mut batch = Vec::with_capacity(BATCH_JOBS);
    loop {
        {
            let mut rx = ready.rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            // Waited for with the receiver held: while every slot is taken, no other worker
            // could start a job either.
            let Ok(slot) = ready.slots.acquire().await else { return };
            let mut bytes = job_bytes(&first);
            batch.push((first, slot));
            while batch.len() < BATCH_JOBS && bytes < BATCH_BYTES {
                let Ok(slot) = ready.slots.try_acquire() else { break };
                let Ok(more) = rx.try_recv() else { break };
                bytes += job_bytes(&more);
                batch.push((more, slot));
            }
        }
        if batch.len() == 1 {
            if let Some((admitted, _slot)) = batch.pop() {
                run_job(&shared, admitted, &stop).await;
            }
        } else {
            futures_util::future::join_all(batch.drain(..).map(|(admitted, slot)| {
                let (shared, stop) = (&shared, &stop);
                async move {
                    run_job(shared, admitted, stop).await;
                    drop(slot);
                }
            }))
            .await;
        }
    }
}

fn job_bytes(admitted: &Admitted<KeyHash, Job>) -> u64 {
    admitted.job_ref().map_or(0, |j| j.item.record.size)
}

/// Runs one admitted job: its tasks, the queue's bookkeeping, its statuses, its position.
async fn run_job(shared: &Arc<Shared>, mut admitted: Admitted<KeyHash, Job>, stop: &Stop) {
    let Some(job) = admitted.take_job() else { return };
    if let Some(id) = job.retry {
        // A newer version of the key may have reached the destination while this retry
        // waited for the key: then the entry is gone and the old version must not follow.
        if !shared.failed.is_live(id) {
            return;
        }
        for t in &job.tasks {
            let r = &job.item.record;
            tracing::debug!(key = %r.key, destination = %t.destination, "Retrying a queued operation.");
            shared.metrics.pending(&t.destination, task_bytes(r, t));
            // A FAILED version is PENDING again; a parked one never left PENDING.
            if !job.parked {
                shared.report(r, &t.destination, &ReplicationStatus::Pending, None);
            }
        }
    }
    // Whether the failed-operations queue holds what the outcomes need: a position is
    // finished (and checkpointed past) only then.
    let mut settled = true;
    for task in &job.tasks {
        let r = &job.item.record;
        // A down destination's work is parked without an attempt; so is a live operation
        // whose key has older ones parked there (it must not overtake them).
        let outcome = if shared.health.is_down(&task.destination)
            || (job.retry.is_none()
                && shared.failed.has_parked(&r.bucket, &r.key, &task.destination))
        {
            Outcome::Park { attempted: false }
        } else {
            contained(run_task(shared, &job.item, task, job.check_first), r, task).await
        };
        let (status, version) = match outcome {
            Outcome::Park { attempted } => {
                shared.metrics.parked(&task.destination, task_bytes(r, task));
                shared.health.parked(&task.destination);
                settled &=
                    settle_durably(shared, &job, task, Settle::Park { attempted }, stop).await;
                continue;
            }
            Outcome::Done(status, version) => (status, version),
        };
        if status == ReplicationStatus::Pending {
            // Nothing to apply (a metadata change of a version never replicated there); a
            // queued one leaves the queue.
            shared.metrics.not_applied(&task.destination, task_bytes(r, task));
            settled &= settle_durably(shared, &job, task, Settle::Status(&status), stop).await;
            continue;
        }
        let ok = matches!(status, ReplicationStatus::Completed);
        // A parked operation's first outcome is its version's first (a FAILED one's
        // retry failing again is not another failed version).
        shared.metrics.finished(
            &task.destination,
            task_bytes(r, task),
            ok,
            r.commit_time_ms,
            job.retry.is_none() || job.parked,
        );
        settled &= settle_durably(shared, &job, task, Settle::Status(&status), stop).await;
        shared.report(r, &task.destination, &status, version.as_deref());
    }
    if job.retry.is_none() && settled {
        shared.finish(job.item.partition, job.item.seq);
    }
    // Releasing the key lets its next version start.
    drop(admitted);
}

/// How one destination's share of a version ended.
pub(crate) enum Outcome {
    /// A status (`Pending`: nothing to apply).
    Done(ReplicationStatus, Option<String>),
    /// The destination is down: parked until it answers. `attempted`: an attempt reached
    /// (or may have reached) the destination first.
    Park { attempted: bool },
}

/// Runs one task's replication, turning a panic inside it (a bug in the engine, in a store
/// client, in the embedder's source) into a FAILED status for that version. Uncaught, the
/// panic would end the worker, and the version would never finish: the checkpoint would stop
/// there for good, and every restart would replay from it.
pub(crate) async fn contained(
    run: impl Future<Output = Outcome>,
    r: &VersionRecord,
    task: &Task,
) -> Outcome {
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            tracing::error!(key = %r.key, version_id = %r.version_id, destination = %task.destination, panic = %what, "Replicating a version panicked; it is FAILED.");
            let detail = format!("replicating the version panicked: {what}");
            Outcome::Done(
                ReplicationStatus::Failed { reason: FailureReason::InternalError, detail },
                None,
            )
        }
    }
}

/// What the failed-operations queue must take from one task's outcome.
#[derive(Clone, Copy)]
enum Settle<'a> {
    /// The task ended with this status.
    Status(&'a ReplicationStatus),
    /// The destination is down: the task is parked. `attempted`: an attempt reached (or may
    /// have reached) the destination first.
    Park { attempted: bool },
}

/// [`settle_queue`] until the journal takes it. A journal that refuses its line (a full disk)
/// holds this worker, and with it the key and the log position, rather than let the position
/// be checkpointed past a failure (or a parked operation) nobody will retry: the pipeline
/// stalls until there is room. Returns false when the engine stopped first; the position then
/// stays unfinished, and the next start replays it. Lines about it are bounded per
/// destination.
async fn settle_durably(
    shared: &Arc<Shared>,
    job: &Job,
    task: &Task,
    settle: Settle<'_>,
    stop: &Stop,
) -> bool {
    let mut wait = Duration::from_millis(100);
    loop {
        let Err(e) = settle_queue(shared, job, task, settle).await else { return true };
        let key = &job.item.record.key;
        if stop.is_set() {
            tracing::error!(key = %key, destination = %task.destination, error = %e, "Updating the failed-operations queue failed; the engine is stopping, so the next start replays this version.");
            return false;
        }
        if let Some(held) = shared.health.may_log(&task.destination) {
            tracing::error!(key = %key, destination = %task.destination, error = %e, retry_in = ?wait, similar_held_back = held, "Updating the failed-operations queue failed; this version holds its log position until it succeeds.");
        }
        stop.sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Keeps the failed-operations queue in step with an outcome: a first failure, or a parking,
/// is journaled (durably, before the log position can be checkpointed past it); a retry's
/// outcome updates its entry; a completion supersedes older queued entries for the same key
/// and destination.
async fn settle_queue(
    shared: &Arc<Shared>,
    job: &Job,
    task: &Task,
    settle: Settle<'_>,
) -> Result<(), crate::Error> {
    let now = super::metrics::now_ms();
    let item = &job.item;
    // A new entry, journaled off the async workers (the journal syncs).
    let add = |reason: FailureReason, detail: String, queued: Queued| {
        let (s, r, t) = (shared.clone(), item.record.clone(), task.clone());
        let (partition, seq) = (item.partition, item.seq);
        async move {
            // Closed never: `Shared` owns the semaphore and outlives its workers.
            let _permit = s.journal_writers.acquire().await.ok();
            let journal = s.clone();
            tokio::task::spawn_blocking(move || {
                journal.failed.add(partition, seq, &r, &t, reason, &detail, now, queued).map(|_| ())
            })
            .await
            .unwrap_or_else(|e| {
                Err(task_failed("failed-operations queue task", PathBuf::new(), &e))
            })
        }
    };
    match (settle, job.retry) {
        (Settle::Park { attempted }, None) => {
            let why = "parked: the destination is down".to_owned();
            add(FailureReason::DstUnavailable, why, Queued::Parked { attempted }).await
        }
        (Settle::Park { attempted }, Some(id)) => shared.failed.park_again(id, now, attempted),
        (Settle::Status(ReplicationStatus::Failed { reason, detail }), None) => {
            add(*reason, detail.clone(), Queued::Failed).await
        }
        (Settle::Status(ReplicationStatus::Failed { reason, detail }), Some(id)) => {
            shared.failed.failed_again(id, *reason, detail, now)
        }
        // Replicated, or nothing to apply: the entry leaves the queue.
        (Settle::Status(ReplicationStatus::Completed | ReplicationStatus::Pending), Some(id)) => {
            shared.failed.succeeded(id)
        }
        (Settle::Status(ReplicationStatus::Completed), None) => {
            let r = &item.record;
            shared
                .failed
                .supersede(&r.bucket, &r.key, &task.destination, item.partition, item.seq)
                .map(|dropped| {
                    for e in dropped {
                        tracing::info!(key = %r.key, destination = %e.destination, "A queued failed operation was superseded by a newer version and dropped.");
                    }
                })
        }
        (Settle::Status(ReplicationStatus::Pending), None) => Ok(()),
    }
}

/// Hands due entries of the failed-operations queue back to the scheduler, under their key,
/// until the engine stops: FAILED ones when their retry is due, parked ones as soon as their
/// destination is up. While entries are due it hands them over as fast as the scheduler
/// admits them (a backlog parked through an outage drains at full speed); otherwise it looks
/// again after a second, or at once when a destination comes back. Compacts the journal
/// between rounds.
pub(crate) async fn retry_failed(
    shared: Arc<Shared>,
    input: Arc<dyn LogInput>,
    scheduler: KeyedScheduler<KeyHash, Job>,
    stop: Arc<Stop>,
) {
    const MOVED: &str = "its partition moved to another process, which reads it again from its oldest failed operation";
    const BATCH: usize = 256;
    while !stop.is_set() {
        // A distributed input's partitions move: their queued operations are their new
        // reader's, which re-reads them (the input's commits stopped at the oldest).
        let owned: Vec<bool> = (0..input.partitions()).map(|p| input.lease(p).is_some()).collect();
        let dropped = if owned.iter().all(|o| *o) {
            Ok(0)
        } else {
            shared
                .failed
                .drop_partitions(|p| owned.get(p as usize).copied().unwrap_or(false), MOVED)
        };
        match dropped {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                operations = n,
                "Failed operations of partitions now read by another process dropped here (that process redoes them)."
            ),
            Err(e) => {
                tracing::warn!(error = %e, "Dropping the failed operations of moved partitions failed; retried.");
            }
        }
        let due = shared.failed.due(super::metrics::now_ms(), BATCH, |d| !shared.health.is_down(d));
        let full = due.len() == BATCH;
        for e in due {
            let Some(lease) = input.lease(e.partition) else {
                let _ = shared.failed.drop_partitions(|p| p != e.partition, MOVED);
                continue;
            };
            let (Some(record), Some(task)) = (e.record(), e.task()) else {
                tracing::error!(id = e.id, "Undecodable failed-operations entry; exhausted.");
                let _ = shared.failed.failed_again(
                    e.id,
                    FailureReason::InternalError,
                    "undecodable entry",
                    u64::MAX / 2,
                );
                continue;
            };
            let key = key_hash(&shared, &record);
            let item = Item { partition: e.partition, seq: e.seq, record };
            let job = Job {
                item,
                tasks: smallvec::smallvec![task],
                retry: Some(e.id),
                parked: e.parked,
                check_first: !e.fresh,
                _lease: Some(lease),
            };
            if scheduler.submit(key, job).await.is_err() {
                return;
            }
        }
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.failed.compact_if_worth()).await {
            Ok(Ok(true)) => tracing::debug!("Compacted the failed-operations journal."),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Compacting the failed-operations journal failed; tried again later.");
            }
            Err(e) => {
                tracing::warn!(error = %e, "The failed-operations journal's compaction task died.");
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            () = stop.sleep(Duration::from_secs(1)) => {}
            () = shared.health.back.notified() => {}
        }
    }
}

/// Probes each down destination every `probe_interval` (one probe at a time per destination,
/// each bounded by a timeout); one that answers is up again, and what waits for it in the
/// failed-operations queue is handed back at once.
pub(crate) async fn probe_down(shared: Arc<Shared>, stop: Arc<Stop>) {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
    while !stop.is_set() {
        stop.sleep(shared.limits.probe_interval).await;
        let down = shared.health.down();
        if down.is_empty() {
            continue;
        }
        let registry = shared.destinations.load_full();
        let probes = down.into_iter().map(|arn| {
            let (shared, dest) = (shared.clone(), registry.get(&arn).cloned());
            async move {
                shared.health.probing(&arn, true);
                let answered = match dest {
                    // No longer configured: nothing will be sent there; let its work be retried
                    // (and fail for the missing destination) rather than wait for ever.
                    None => true,
                    Some(d) => {
                        matches!(tokio::time::timeout(PROBE_TIMEOUT, d.probe()).await, Ok(Ok(())))
                    }
                };
                if answered {
                    let waiting = shared.failed.release(&arn, super::metrics::now_ms());
                    shared.health.came_back(&arn, waiting);
                } else {
                    shared.health.probing(&arn, false);
                }
            }
        });
        futures_util::future::join_all(probes).await;
    }
}

/// Performs one destination's action with retries; returns the final status — or `Pending`
/// when there was nothing to apply: a metadata change of a version that has no replica at the
/// destination. `retry`: a background retry from the failed-operations queue that must ask the
/// destination first whether an earlier attempt applied it.
pub(crate) async fn run_task(shared: &Shared, item: &Item, task: &Task, retry: bool) -> Outcome {
    let r = &item.record;
    let Some(dest) = shared.destinations.load().get(&task.destination).cloned() else {
        let detail = format!("no destination {} is registered", task.destination);
        return Outcome::Done(
            ReplicationStatus::Failed { reason: FailureReason::DstBucketNotFound, detail },
            None,
        );
    };
    // Local file systems open their breaker only when out of room (see `health.rs`).
    let local = dest.is_local();
    let mut attempt = 0u32;
    let started = std::time::Instant::now();
    // A replica an earlier attempt wrote: its version (where the destination names one) and
    // the settings it still lacks. A retry only finishes it, never writes it again.
    let mut written: Option<Written> = None;
    // Whether an earlier attempt failed at the destination, where the write may have been
    // applied all the same (a server error after the commit, an answer lost on the way): the
    // next attempt asks the destination before writing again.
    let mut unsure = false;
    loop {
        attempt += 1;
        let result: Result<Option<String>, Failure> = match task.action {
            Action::CopyObject => {
                let copied = match written.clone() {
                    Some(w) => Ok(w),
                    // Found at the destination: whether its settings were applied is unknown,
                    // so they are applied (again; the calls are idempotent).
                    None => match replayed(shared, item, task, &dest, retry || unsure).await {
                        Ok(Some(version)) => Ok((version, Pending::ALL)),
                        Ok(None) => {
                            copy(shared, item, task, &dest).await.inspect(|(version, _)| {
                                if let Some(v) = version {
                                    shared
                                        .versions
                                        .record(replica_of(item.partition, r, task), v.clone());
                                }
                            })
                        }
                        Err(e) => Err(e),
                    },
                };
                match copied {
                    Ok((version, pending)) if pending.is_none() => Ok(version),
                    Ok((version, pending)) => {
                        written = Some((version.clone(), pending));
                        let settings = replica_settings(r, task).only(pending);
                        dest.finish_replica(&r.key, version.as_deref(), &settings)
                            .await
                            .map(|()| version)
                            .map_err(Failure::Destination)
                    }
                    Err(e) => Err(e),
                }
            }
            Action::ReplicateDeleteMarker => {
                match replayed(shared, item, task, &dest, retry || unsure).await {
                    Ok(Some(version)) => Ok(version),
                    Ok(None) => {
                        dest.delete_marker(&r.key).await.map_err(Failure::Destination).inspect(
                            |version| {
                                if let Some(v) = version {
                                    shared
                                        .versions
                                        .record(replica_of(item.partition, r, task), v.clone());
                                }
                            },
                        )
                    }
                    Err(e) => Err(e),
                }
            }
            Action::SyncMetadata => {
                let known = lookup_replica(shared, replica_of(item.partition, r, task)).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "Version map lookup failed; updating the current replica.");
                    None
                });
                let synced = dest
                    .sync_metadata(
                        &r.key,
                        Stamp { name: stamps::SOURCE_VERSION_ID, value: &r.version_id },
                        known.as_deref(),
                        &changed_settings(r, task),
                    )
                    .await;
                match synced {
                    // Neither the version map nor the destination knows a replica of this
                    // version: it was not replicated (no rule selected it when it was
                    // created, say). S3 replicates metadata changes of replicated versions
                    // only: nothing to do, and no status (the version has none here).
                    Err(DestinationError::Permanent {
                        refusal: Refusal::VersionNotFound, ..
                    }) if known.is_none() => {
                        tracing::debug!(key = %r.key, destination = %task.destination, "A metadata change of a version with no replica there is not replicated.");
                        return Outcome::Done(ReplicationStatus::Pending, None);
                    }
                    other => other.map_err(Failure::Destination),
                }
            }
        };
        match result {
            Ok(version) => {
                shared.health.succeeded(&task.destination);
                return Outcome::Done(ReplicationStatus::Completed, version);
            }
            Err(f) => {
                // The destination not answering (as opposed to refusing), or a local file
                // system out of room: it counts toward its breaker, and once that is open the
                // operation is parked, not retried here.
                let unanswered = matches!(&f, Failure::Destination(d)
                    if d.is_retryable() && (!local || d.is_out_of_space()));
                if unanswered && shared.health.failed(&task.destination, &f) {
                    return Outcome::Park { attempted: true };
                }
                if !(f.retryable() && attempt < shared.limits.max_attempts) {
                    return Outcome::Done(f.status(), None);
                }
                unsure |= matches!(f, Failure::Destination(_));
                let delay = backoff(shared, r, attempt);
                if started.elapsed().saturating_add(delay) > shared.limits.retry_deadline {
                    tracing::warn!(key = %r.key, destination = %task.destination, attempt, error = %f, elapsed_ms = started.elapsed().as_millis(), "Replication attempt failed and the retry deadline has passed; the version is FAILED (retried in the background).");
                    return Outcome::Done(f.status(), None);
                }
                // One destination's repeating failures write a few lines a second, not one
                // per attempt.
                if let Some(held) = shared.health.may_log(&task.destination) {
                    tracing::warn!(key = %r.key, destination = %task.destination, attempt, error = %f, similar_held_back = held, "Replication attempt failed; retrying.");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}
