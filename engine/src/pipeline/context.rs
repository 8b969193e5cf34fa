//! What every stage of the pipeline shares: the limits, the engine's shared state
//! ([`Shared`]), its stop signal, what halts look like, and the housekeeping of what a killed
//! predecessor left at the destinations.

use std::hash::RandomState;
use std::path::PathBuf;

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use arc_swap::ArcSwap;
use s3repl_io::dest::{Destination, DestinationRegistry, UploadJournal};
use tokio::sync::watch;

use crate::Error;
use crate::pipeline::budget::ByteBudget;
use crate::pipeline::buffers::BufferPool;
use crate::pipeline::configs::{Buckets, ConfigStore};
use crate::pipeline::failed::{FailedQueue, RetryPolicy};
use crate::pipeline::health::Health;
use crate::pipeline::metrics::{Metrics, RTC_THRESHOLD};
use crate::pipeline::source::ObjectSource;
use crate::pipeline::status::{ReplicationStatus, StatusSink, StatusUpdate};
use crate::pipeline::versions::VersionMap;
use crate::pipeline::watermark::Watermark;
use crate::record::VersionRecord;
use crate::rules::CompiledRules;
use s3repl_crypto::{HEADER_LEN, KeyStore};

/// Limits and pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Operations admitted (queued per key or running) at once.
    pub max_in_flight: usize,
    /// Concurrent copy workers.
    pub workers: usize,
    /// Bytes of object data held in memory at once.
    pub budget_bytes: u64,
    /// Decoded records buffered between the readers and the dispatcher (at most four times
    /// `max_in_flight`).
    pub queue: usize,
    /// How often the checkpoint is saved.
    pub checkpoint_every: Duration,
    /// Attempts per destination write before the version is FAILED.
    pub max_attempts: u32,
    /// Total deadline for retrying one version at one destination: no retry starts once this
    /// long has passed since its first attempt began (an attempt under way is never cut short,
    /// so a huge object still finishes), and the version is FAILED (the failed-operations
    /// queue retries it in the background). Bounds the time a version holds a worker and its
    /// key when each attempt is slow (a store client's own retries and timeouts).
    pub retry_deadline: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff: Duration,
    /// Objects at least this large are copied as multipart uploads.
    pub multipart_threshold: u64,
    /// Part size of multipart copies.
    pub part_size: u64,
    /// Parts of one object uploaded concurrently (also server-side copied).
    pub part_concurrency: usize,
    /// Server-side copies (source and destination buckets on one S3 endpoint): the largest
    /// object copied with one `CopyObject` (S3 allows 5 GiB).
    pub single_copy_max: u64,
    /// Part size of larger server-side copies (`UploadPartCopy`).
    pub copy_part_size: u64,
    /// After a crash (the saved replay horizon is above the checkpoint), how long to wait
    /// before replaying: a write the dead process had in flight may still land at the
    /// destination, and the replay's check must see it. Not applied after a clean shutdown.
    pub replay_settle: Duration,
    /// Replication Time Control threshold: completed operations slower than this (commit →
    /// replicated) are counted as having missed it. S3's is 15 minutes.
    pub rtc_threshold: Duration,
    /// Background retries of FAILED operations (the durable failed-operations queue).
    pub retry: RetryPolicy,
    /// Transport failures in a row (refused, reset, timeout, server error) after which a
    /// destination is down: its operations are parked until a probe finds it answering.
    pub breaker_failures: u32,
    /// How often a down destination is probed.
    pub probe_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 1024,
            workers: 64,
            budget_bytes: 256 << 20,
            queue: 4096,
            checkpoint_every: Duration::from_millis(200),
            max_attempts: 5,
            retry_deadline: Duration::from_mins(5),
            backoff: Duration::from_millis(50),
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            part_concurrency: 4,
            single_copy_max: 5 << 30,
            copy_part_size: 512 << 20,
            rtc_threshold: RTC_THRESHOLD,
            replay_settle: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            breaker_failures: 8,
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// Makes a destination for an ARN no registry entry names (see
/// [`super::EngineBuilder::destination_resolver`]).
pub type Resolver = Arc<dyn Fn(&str) -> Option<Destination> + Send + Sync>;

/// The engine's stop signal: a flag the log reader threads poll, and a wake-up for the tasks
/// that sleep between rounds (so a shutdown does not wait out their sleep).
#[derive(Debug, Default)]
pub(crate) struct Stop {
    token: tokio_util::sync::CancellationToken,
}

impl Stop {
    pub(crate) fn set(&self) {
        self.token.cancel();
    }

    /// Whether the engine is stopping (a cheap check, for the reader threads too).
    pub(crate) fn is_set(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Sleeps for `d`, or until the engine stops if that is sooner.
    pub(crate) async fn sleep(&self, d: Duration) {
        tokio::select! {
            () = self.token.cancelled() => {}
            () = tokio::time::sleep(d) => {}
        }
    }
}

/// Saving the engine's progress has been failing (a full disk, say) and is being retried:
/// the checkpoint — replication goes on, but nothing past the last saved checkpoint is
/// durable as finished (a restart would replay it, checking each replica first), and the
/// version map's new entries wait in memory, up to a bound past which nothing more is
/// admitted — or the replay horizon, which must be saved ahead of what is admitted, so
/// nothing more is admitted until it is. Clears itself once saving succeeds again; see
/// [`EngineControl::checkpoint_trouble`](super::EngineControl::checkpoint_trouble).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointTrouble {
    /// When the first failed attempt of this run of failures was made (Unix ms).
    pub since_ms: u64,
    /// Failed attempts since then.
    pub attempts: u64,
    /// The last attempt's error.
    pub error: String,
}

/// How often a save that keeps failing is logged again (the first failure always is).
const TROUBLE_LOG_EVERY_MS: u64 = 60_000;

/// One kind of save (the checkpoint, the replay horizon) that fails and is retried: what
/// [`CheckpointTrouble`] reports, and the log lines about it — the first failure of a run,
/// then one a minute, and one when saving succeeds again.
#[derive(Debug, Default)]
pub(crate) struct Trouble {
    /// The current run of failures, and when it was last logged (Unix ms).
    run: Mutex<Option<(CheckpointTrouble, u64)>>,
}

impl Trouble {
    /// What is failing, if anything.
    pub(crate) fn get(&self) -> Option<CheckpointTrouble> {
        self.run.lock().as_ref().map(|(t, _)| t.clone())
    }

    /// Saving `what` failed with `e` and will be tried again.
    pub(crate) fn failed(&self, what: &str, e: &Error) {
        let now = super::metrics::now_ms();
        let mut run = self.run.lock();
        let first = run.is_none();
        let (t, logged) = run.get_or_insert_with(|| {
            (CheckpointTrouble { since_ms: now, attempts: 0, error: String::new() }, now)
        });
        t.attempts += 1;
        t.error = format!("saving {what}: {e}");
        if first {
            tracing::error!(error = %e, "Saving {what} failed; retrying until it succeeds.");
        } else if now.saturating_sub(*logged) >= TROUBLE_LOG_EVERY_MS {
            *logged = now;
            tracing::warn!(error = %e, failed_attempts = t.attempts, seconds = now.saturating_sub(t.since_ms) / 1000, "Saving {what} still fails; retrying.");
        }
    }

    /// Saving succeeded: ends a run of failures (logging `resumed` once, if there was one).
    pub(crate) fn resolved(&self, resumed: &str) {
        if let Some((t, _)) = self.run.lock().take() {
            tracing::info!(
                failed_attempts = t.attempts,
                seconds = super::metrics::now_ms().saturating_sub(t.since_ms) / 1000,
                "{resumed}"
            );
        }
    }

    /// Forgets a run of failures without a word (the part stopped for good instead).
    pub(crate) fn clear(&self) {
        self.run.lock().take();
    }
}

/// A part of a running engine that stopped on an error it cannot work around. The rest goes
/// on: other partitions are read and copied, and nothing is lost (the records stay in the log,
/// and a restart after the cause is repaired resumes from the checkpoint), but the halted part
/// makes no progress until then, so embedders should alert on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Halt {
    /// Reading a partition stopped: its log is damaged (a bad record that is not the torn
    /// tail) or unreadable.
    #[error("partition {partition}: log read failed: {error}")]
    LogRead {
        /// The partition.
        partition: u32,
        /// The log's error.
        error: String,
    },
    /// A record that passed its checksum could not be decoded (written by something else
    /// than this engine's record codec); reading the partition stopped before it.
    #[error("partition {partition}: record {seq} cannot be decoded: {error}")]
    Record {
        /// The partition.
        partition: u32,
        /// The record's sequence number.
        seq: u64,
        /// The decoder's error.
        error: String,
    },
    /// Checkpointing stopped: syncing a destination or the log failed (after a failed fsync
    /// the data it covered may be gone, so trying again proves nothing). Replication goes on,
    /// and a restart replays from the last saved checkpoint, checking each replica first. (A
    /// failed commit of the version map or write of the checkpoint file is retried instead:
    /// [`CheckpointTrouble`].)
    #[error("checkpointing stopped: {error}")]
    Checkpoint {
        /// The error.
        error: String,
    },
    /// One of the engine's own tasks panicked (a bug in the engine): `task` names it (a log
    /// reader, the dispatcher, a copy worker, the failed-operations retrier). Without the dispatcher
    /// nothing more is replicated; restart the engine.
    #[error("the {task} panicked: {error}")]
    Task {
        /// Which task.
        task: &'static str,
        /// The panic's message.
        error: String,
    },
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Runs one of the engine's long-lived tasks; should it panic, the panic is recorded as a
/// [`Halt::Task`] (and logged) instead of vanishing with the task.
pub(crate) async fn guarded(
    task: &'static str,
    halts: Arc<Mutex<Vec<Halt>>>,
    run: impl Future<Output = ()>,
) {
    use futures_util::FutureExt as _;
    if let Err(panic) = std::panic::AssertUnwindSafe(run).catch_unwind().await {
        let error = panic_message(panic.as_ref());
        tracing::error!(task, panic = %error, "An engine task panicked.");
        halts.lock().push(Halt::Task { task, error });
    }
}

/// The pool of version and part buffers: classes around one part of whole packages plus the
/// stream header, up to versions copied whole (below the multipart threshold); at most the
/// budget's worth idle.
pub(crate) fn part_buffers(limits: &Limits) -> BufferPool {
    let part = usize::try_from(limits.part_size.max(1)).unwrap_or(usize::MAX);
    let packages = part.div_ceil(s3repl_crypto::DEFAULT_PACKAGE_SIZE as usize).max(1);
    let capacity = part.saturating_add(packages * s3repl_crypto::TAG_LEN + HEADER_LEN);
    let whole = usize::try_from(limits.multipart_threshold).unwrap_or(usize::MAX);
    let max_idle = usize::try_from(limits.budget_bytes).unwrap_or(usize::MAX);
    BufferPool::new(capacity, whole, max_idle.max(capacity))
}

pub(crate) struct Shared {
    /// The consumer's lock on the log, held while anything of the engine runs.
    pub(crate) _consumer_lock: std::fs::File,
    /// The last saved checkpoint (see [`EngineHandle::progress`]).
    pub(crate) saved: watch::Receiver<Vec<u64>>,
    /// What stopped for good (a damaged log, a failed checkpoint), for embedders to see.
    pub(crate) halts: Arc<Mutex<Vec<Halt>>>,
    /// Saving checkpoints (or the version map alone) fails and is retried (see
    /// [`CheckpointTrouble`]).
    pub(crate) checkpoint_trouble: Trouble,
    /// Saving the replay horizon ahead of admission fails and is retried: nothing more is
    /// admitted meanwhile.
    pub(crate) horizon_trouble: Trouble,
    /// Per destination: source version → the replica version the destination minted.
    pub(crate) versions: Arc<VersionMap>,
    /// Bucket → configuration, replaced as a whole (under `config_lock`) on a change.
    pub(crate) rules: ArcSwap<Buckets>,
    /// Where configurations persist, if the embedder gave a directory.
    pub(crate) store: Option<ConfigStore>,
    /// What a killed predecessor left at the destinations, and the journal that finds it.
    pub(crate) care: Arc<Housekeeping>,
    pub(crate) destinations: ArcSwap<DestinationRegistry>,
    pub(crate) resolver: Option<Resolver>,
    /// Serialises configuration changes (readers never take it).
    pub(crate) config_lock: Mutex<()>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) source: Arc<dyn ObjectSource>,
    pub(crate) status: Arc<dyn StatusSink>,
    pub(crate) keys: Option<Arc<dyn KeyStore>>,
    pub(crate) budget: ByteBudget,
    /// Buffers for parts rewritten in place (re-encryption) when the source's are shared.
    pub(crate) buffers: BufferPool,
    pub(crate) watermarks: Mutex<Vec<Watermark>>,
    /// Per partition: records at or above this were never admitted (saved ahead of admission).
    pub(crate) horizon: tokio::sync::Mutex<Vec<u64>>,
    /// The horizon found at start: records below it (and at or above the checkpoint) may have
    /// reached a destination before a crash, so their copies first check the replica.
    pub(crate) replay_horizon: Vec<u64>,
    /// Per partition: records below this may have been applied by another reader of the
    /// partition (the previous owner on a distributed log, which may have died mid-copy), so
    /// they are checked like those below the replay horizon. Raised by the input.
    pub(crate) taken_over: Vec<std::sync::atomic::AtomicU64>,
    pub(crate) horizon_path: PathBuf,
    pub(crate) failed: FailedQueue,
    /// Journal adds to [`failed`](Self::failed) running at once ([`JOURNAL_WRITERS`]).
    pub(crate) journal_writers: tokio::sync::Semaphore,
    /// Re-encryptions (AES-GCM and BLAKE3 over a part, on a blocking thread) running at once:
    /// two per core. Unbounded, 64 workers on SSE-KMS objects ran 46–59 threads on 2 cores;
    /// with this bound 15, at the same rate within noise (one per core lost 15%: `s3repl bench
    /// --destination memory --objects 40 --size 64MiB --sse-kms 100`).
    pub(crate) sealing: tokio::sync::Semaphore,
    /// Each destination's breaker (down destinations' work is parked).
    pub(crate) health: Health,
    pub(crate) limits: Limits,
    pub(crate) hasher: RandomState,
    /// The scheduler keys' hasher ([`key_hash`](super::task::key_hash)).
    pub(crate) key_hasher: foldhash::fast::RandomState,
    /// Asks the checkpoint task to save now rather than at its next tick
    /// ([`EngineHandle::checkpoint_now`]); a request made while it saves is kept for the next round.
    pub(crate) checkpoint_soon: tokio::sync::Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("buckets", &self.rules.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Operations journaled into the failed queue at once, each on a blocking thread. The journal
/// syncs once for all the lines written before it (`FailedQueue::add`), so a few at a time
/// already share each sync. Unbounded, every worker whose destination went down took a blocking
/// thread of its own: a 3-minute outage under load left the replicator with 49 threads instead
/// of 9, which the runtime then kept (`scripts/outage.sh`).
pub(crate) const JOURNAL_WRITERS: usize = 8;

/// Local destinations that can wait for the staging-file sweep at once.
pub(crate) const SWEEP_QUEUE: usize = 4096;

/// What a process killed mid-write leaves at its destinations, and how the next start clears
/// it: staging files in local destinations (removed in the background, once per destination),
/// and multipart uploads on S3 destinations (journaled when opened, so the ones left open are
/// aborted; see [`UploadJournal`]).
#[derive(Debug)]
pub(crate) struct Housekeeping {
    pub(crate) uploads: Arc<UploadJournal>,
    /// When this engine started: staging files older than this are a predecessor's.
    pub(crate) started: std::time::SystemTime,
    /// The one thread that sweeps local destinations, one after the other (started with the
    /// first; a configuration naming many local destinations must not start a thread each).
    pub(crate) sweeper: Mutex<Option<std::sync::mpsc::SyncSender<Destination>>>,
}

impl Housekeeping {
    pub(crate) fn new(uploads: UploadJournal, started: std::time::SystemTime) -> Self {
        Housekeeping { uploads: Arc::new(uploads), started, sweeper: Mutex::new(None) }
    }

    /// Prepares a destination the engine starts writing to.
    pub(crate) fn adopt(&self, d: &Destination) {
        d.journal_uploads(&self.uploads);
        if !d.is_local() {
            return;
        }
        let mut sweeper = self.sweeper.lock();
        if sweeper.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Destination>(SWEEP_QUEUE);
            let before = self.started;
            let spawned = std::thread::Builder::new().name("s3repl-sweep".into()).spawn(move || {
                for d in rx {
                    match d.remove_orphaned_staging(before) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(destination = %d.arn(), files = n, "Removed staging files a killed process left."),
                        Err(e) => tracing::warn!(destination = %d.arn(), error = %e, "Removing staging files a killed process left failed."),
                    }
                }
            });
            match spawned {
                Ok(_) => *sweeper = Some(tx),
                Err(e) => tracing::warn!(error = %e, "Cannot start the staging-file sweep."),
            }
        }
        if let Some(tx) = sweeper.as_ref()
            && tx.try_send(d.clone()).is_err()
        {
            tracing::warn!(destination = %d.arn(), "Too many local destinations wait for the staging-file sweep; this one is swept at a later start.");
        }
    }

    /// Aborts the uploads a previous run left open (each at the destination the journal names;
    /// one whose destination is not configured now stays journaled for a later start).
    pub(crate) async fn abort_left_open(
        &self,
        left: Vec<(u64, s3repl_io::dest::OpenUpload)>,
        shared: &Shared,
    ) {
        for (n, u) in left {
            let Some(d) = shared.destinations.load().get(&u.destination).cloned() else {
                tracing::warn!(destination = %u.destination, key = %u.key, "A multipart upload a previous run left open is at a destination not configured now; it stays journaled.");
                continue;
            };
            match d.abort_left_open(&u).await {
                Ok(()) => {
                    tracing::info!(destination = %u.destination, key = %u.key, "Aborted a multipart upload a previous run left open.");
                    self.uploads.forget(n);
                }
                Err(e) => {
                    tracing::warn!(destination = %u.destination, key = %u.key, error = %e, "Aborting a multipart upload a previous run left open failed; the next start tries again.");
                }
            }
        }
    }
}

/// Registers every destination of `compiled` that `registry` lacks, through `resolver`.
pub(crate) fn resolve_destinations(
    compiled: &CompiledRules,
    registry: &mut DestinationRegistry,
    resolver: Option<&Resolver>,
    care: &Housekeeping,
) -> Result<(), Error> {
    for arn in compiled.destinations() {
        if registry.get(arn).is_some() {
            continue;
        }
        match resolver.and_then(|r| r(arn)) {
            Some(d) if d.arn() == &**arn => {
                care.adopt(&d);
                registry.insert(d);
            }
            _ => {
                return Err(config_error(&format!(
                    "destination {arn} is not registered and cannot be resolved"
                )));
            }
        }
    }
    Ok(())
}

impl Shared {
    pub(crate) fn finish(&self, partition: u32, seq: u64) {
        if let Some(w) = self.watermarks.lock().get_mut(partition as usize) {
            w.finish(seq);
        }
    }

    /// Records of `partition` below `below` may have been applied by another reader: check
    /// them at the destination before applying them.
    pub(crate) fn check_below(&self, partition: u32, below: u64) {
        if let Some(t) = self.taken_over.get(partition as usize) {
            t.fetch_max(below, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Whether a record of `partition` at `seq` may have been applied before (by a crashed
    /// run of this engine, or another reader of the partition).
    pub(crate) fn may_be_applied(&self, partition: u32, seq: u64) -> bool {
        let p = partition as usize;
        self.replay_horizon.get(p).is_some_and(|h| seq < *h)
            || self
                .taken_over
                .get(p)
                .is_some_and(|t| seq < t.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Positions `from..to` of `partition` hold nothing for this engine (an input skipped
    /// them): finished.
    pub(crate) fn finish_range(&self, partition: u32, from: u64, to: u64) {
        if let Some(w) = self.watermarks.lock().get_mut(partition as usize) {
            w.finish_range(from, to);
        }
    }

    pub(crate) fn report(
        &self,
        r: &VersionRecord,
        destination: &str,
        status: &ReplicationStatus,
        dst_version: Option<&str>,
    ) {
        let update = StatusUpdate {
            bucket: &r.bucket,
            key: &r.key,
            version_id: &r.version_id,
            destination,
            status,
            destination_version_id: dst_version,
        };
        // The sink is the embedder's code, called from the dispatcher and the workers: a panic
        // in it loses this one update instead of the task (and with the dispatcher, the engine).
        let sink = std::panic::AssertUnwindSafe(|| self.status.report(&update));
        if let Err(panic) = std::panic::catch_unwind(sink) {
            tracing::error!(key = %r.key, destination, panic = %panic_message(panic.as_ref()), "The status sink panicked; this status update is lost.");
        }
    }
}

/// Whether an error is the process running short of a resource (descriptors, memory) rather
/// than a fault of what it reads or writes: it passes, so the work is retried rather than
/// stopped for good. (Never a failed fsync, which stays fail-stop.)
pub(crate) fn exhausted(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = at {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.raw_os_error(),
                Some(
                    libc_errno::EMFILE
                        | libc_errno::ENFILE
                        | libc_errno::ENOMEM
                        | libc_errno::ENOBUFS
                )
            )
        {
            return true;
        }
        at = err.source();
    }
    false
}

/// The error numbers [`exhausted`] knows (Linux's; the same on the other Unixes for these).
pub(crate) mod libc_errno {
    pub(crate) const ENOMEM: i32 = 12;
    pub(crate) const ENFILE: i32 = 23;
    pub(crate) const EMFILE: i32 = 24;
    pub(crate) const ENOBUFS: i32 = 105;
}

/// A blocking helper task died (panic or cancellation) while doing `op` on `path`.
pub(crate) fn task_failed(op: &'static str, path: PathBuf, e: &tokio::task::JoinError) -> Error {
    Error::Log(s3repl_io::Error::Io { op, path, source: std::io::Error::other(e.to_string()) })
}

/// A configuration error with S3's `InvalidRequest` (the builder's, the resolver's).
pub(crate) fn config_error(message: &str) -> Error {
    Error::Config(crate::config::ValidationError::new(
        crate::config::S3ErrorCode::InvalidRequest,
        message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resource_shortages_count_as_passing() {
        let io = |n| s3repl_io::Error::Io {
            op: "open",
            path: PathBuf::new(),
            source: std::io::Error::from_raw_os_error(n),
        };
        assert!(exhausted(&io(libc_errno::EMFILE)));
        assert!(exhausted(&Error::Log(io(libc_errno::ENFILE))));
        assert!(Error::Io(std::io::Error::from_raw_os_error(libc_errno::EMFILE)).is_transient());
        assert!(!Error::Io(std::io::Error::from_raw_os_error(5)).is_transient());
        assert!(!exhausted(&io(5)), "EIO is not");
        assert!(!exhausted(&Error::Log(io(2))), "ENOENT is not");
    }

    #[tokio::test]
    async fn a_panicking_engine_task_is_recorded_as_a_halt() {
        let halts: Arc<Mutex<Vec<Halt>>> = Arc::default();
        guarded("quiet task", halts.clone(), async {}).await;
        assert!(halts.lock().is_empty());
        let task = tokio::spawn(guarded("dispatcher", halts.clone(), async {
            tokio::task::yield_now().await;
            panic!("bug {}", 42);
        }));
        task.await.unwrap();
        assert_eq!(*halts.lock(), vec![Halt::Task { task: "dispatcher", error: "bug 42".into() }]);
        assert_eq!(halts.lock()[0].to_string(), "the dispatcher panicked: bug 42");
    }
}
