//! The engine: log → decode → match → schedule → copy → status → checkpoint.
//!
//! Stages are joined only by bounded queues: one reader thread per partition sends decoded
//! records into a bounded channel; the dispatcher matches them and submits work to the
//! [`KeyedScheduler`] (which waits when `max_in_flight` operations are admitted); copy workers
//! take a [`ByteBudget`] permit for the bytes they hold. When a destination slows down the
//! scheduler fills, the dispatcher waits, the channel fills and the readers stop reading.

use s3repl_io::sigv4::hex;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use s3repl_io::dest::{
    CannedAcl, Destination, DestinationError, DestinationRegistry, MAX_PARTS, ObjectAcl, Pending,
    ReplicaMeta, UploadJournal, VersionSettings,
};
use s3repl_io::log::{
    Checkpoint, FileStorage, LogReader, ReadOptions, RecordBatch, load_checkpoint, save_checkpoint,
    sync_records_below,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::budget::ByteBudget;
use super::buffers::{BufferPool, PartBuf, Rewrite};
use super::configs::{BucketConfig, Buckets, ConfigStore};
use super::failed::{FailedOperation, FailedQueue, RetryPolicy};
use super::lock;
use super::metrics::{Metrics, RTC_THRESHOLD};
use super::scheduler::{Admitted, KeyedScheduler};
use super::source::{ObjectSource, SourceError};
use super::status::{ReplicationStatus, StatusSink, StatusUpdate};
use super::versions::{Replica, VersionMap};
use super::watermark::Watermark;
use crate::Error;
use crate::config::ReplicationConfiguration;
use crate::record::VersionRecord;
use crate::rules::{Action, CompiledRules, MetadataChanges, Plan, SseKind, VersionEvent};
use s3repl_crypto::{
    DataKey, HEADER_LEN, KeyStore, ObjectIdentity, ReEncryptor, StreamHeader, WrappedKey,
};

/// Limits and pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Operations admitted (queued per key or running) at once.
    pub max_in_flight: usize,
    /// Concurrent copy workers.
    pub workers: usize,
    /// Bytes of object data held in memory at once.
    pub budget_bytes: u64,
    /// Decoded records buffered between the readers and the dispatcher.
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
        }
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    log_dir: Option<PathBuf>,
    partitions: u32,
    consumer: String,
    read: ReadOptions,
    notifier: Option<Arc<s3repl_io::log::Notifier>>,
    configs: HashMap<String, ReplicationConfiguration>,
    config_dir: Option<PathBuf>,
    source: Option<Arc<dyn ObjectSource>>,
    destinations: DestinationRegistry,
    status: Option<Arc<dyn StatusSink>>,
    keys: Option<Arc<dyn KeyStore>>,
    resolver: Option<Resolver>,
    limits: Limits,
}

/// Makes a destination for an ARN no registry entry names (see
/// [`EngineBuilder::destination_resolver`]).
pub type Resolver = Arc<dyn Fn(&str) -> Option<Destination> + Send + Sync>;

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("log_dir", &self.log_dir)
            .field("partitions", &self.partitions)
            .field("notified", &self.notifier.is_some())
            .field("buckets", &self.configs.keys().collect::<Vec<_>>())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The replication engine. Start one with [`Engine::builder`].
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// A builder with default limits.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            log_dir: None,
            partitions: 0,
            consumer: "replicator".into(),
            read: ReadOptions::default(),
            notifier: None,
            configs: HashMap::new(),
            config_dir: None,
            source: None,
            destinations: DestinationRegistry::new(),
            status: None,
            keys: None,
            resolver: None,
            limits: Limits::default(),
        }
    }
}

fn config_error(message: &str) -> Error {
    Error::Config(crate::config::ValidationError::new(
        crate::config::S3ErrorCode::InvalidRequest,
        message,
    ))
}

impl EngineBuilder {
    /// The log directory and its partition count (as created by the writer).
    #[must_use]
    pub fn log(mut self, dir: impl Into<PathBuf>, partitions: u32) -> Self {
        self.log_dir = Some(dir.into());
        self.partitions = partitions;
        self
    }

    /// The consumer name under which the checkpoint is stored.
    #[must_use]
    pub fn consumer(mut self, name: &str) -> Self {
        name.clone_into(&mut self.consumer);
        self
    }

    /// Log reader settings.
    #[must_use]
    pub fn read_options(mut self, opts: ReadOptions) -> Self {
        self.read = opts;
        self
    }

    /// The log writer's notifier ([`s3repl_io::log::LogWriter::notifier`]), when the embedding
    /// server appends in this process: readers that have caught up then sleep until an
    /// append instead of polling the log files every `poll_interval` (2 ms), which costs a
    /// wake-up, a `pread` and a `stat` per partition each time.
    #[must_use]
    pub fn notifier(mut self, notifier: Arc<s3repl_io::log::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The replication configuration of a source bucket, in force for every record (as if
    /// installed before the bucket's first version). Not persisted: an embedder that keeps
    /// configurations itself passes them here at every start. Overrides a configuration of the
    /// same bucket in [`EngineBuilder::config_dir`] (whose since time it then keeps).
    #[must_use]
    pub fn bucket(mut self, bucket: &str, config: ReplicationConfiguration) -> Self {
        self.configs.insert(bucket.to_owned(), config);
        self
    }

    /// A directory where the engine persists the buckets' configurations: every one found
    /// there is installed before the first record is read, and
    /// [`EngineControl::set_config`] / [`EngineControl::remove_config`] change it durably
    /// before they return. Each configuration is kept with the time since which its bucket has
    /// had one: records committed earlier are existing objects (replicated only by rules with
    /// `ExistingObjectReplication`), later ones are never skipped for want of it, across
    /// restarts and however long the backlog. A file there that cannot be read fails
    /// [`EngineBuilder::start`] rather than leave its bucket unconfigured.
    #[must_use]
    pub fn config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config_dir = Some(dir.into());
        self
    }

    /// Where version bytes are read.
    #[must_use]
    pub fn source(mut self, source: Arc<dyn ObjectSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Where replicas are written.
    #[must_use]
    pub fn destinations(mut self, registry: DestinationRegistry) -> Self {
        self.destinations = registry;
        self
    }

    /// Where status updates go.
    #[must_use]
    pub fn status(mut self, sink: Arc<dyn StatusSink>) -> Self {
        self.status = Some(sink);
        self
    }

    /// Master keys, for SSE-KMS sources (re-encrypted under each rule's `ReplicaKmsKeyID`).
    #[must_use]
    pub fn keys(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// A fallback for destination ARNs the registry does not name: called when a configuration
    /// naming such an ARN is installed; the destination it returns is registered. Without one,
    /// such configurations are refused.
    #[must_use]
    pub fn destination_resolver(
        mut self,
        resolve: impl Fn(&str) -> Option<Destination> + Send + Sync + 'static,
    ) -> Self {
        self.resolver = Some(Arc::new(resolve));
        self
    }

    /// Limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Compiles the configurations, resumes from the checkpoint and starts every stage on the
    /// current tokio runtime. Configuration errors are reported here, not later.
    pub fn start(self) -> Result<EngineHandle, Error> {
        // Files older than this that look like a killed process's staging files are its.
        let started = std::time::SystemTime::now();
        let dir = self.log_dir.ok_or_else(|| config_error("the engine needs a log directory"))?;
        let source =
            self.source.ok_or_else(|| config_error("the engine needs an object source"))?;
        let status = self.status.ok_or_else(|| config_error("the engine needs a status sink"))?;
        let uploads_path = dir.join("uploads").join(format!("{}.jsonl", self.consumer));
        let (journal, left_open) = UploadJournal::open(&uploads_path).map_err(|e| {
            Error::Log(s3repl_io::Error::Io { op: "open", path: uploads_path.clone(), source: e })
        })?;
        let care = Arc::new(Housekeeping::new(journal, started));
        let mut rules = Buckets::new();
        let mut destinations = self.destinations;
        for d in destinations.iter() {
            care.adopt(d);
        }
        let store = self.config_dir.map(ConfigStore::new);
        // Persisted configurations are in force before any record is read.
        let persisted = store.as_ref().map(ConfigStore::load).transpose()?.unwrap_or_default();
        let mut since: HashMap<String, u64> = HashMap::new();
        for (bucket, config, since_ms) in persisted {
            since.insert(bucket.clone(), since_ms);
            if self.configs.contains_key(&bucket) {
                continue;
            }
            let compiled = CompiledRules::compile(&config)?;
            resolve_destinations(&compiled, &mut destinations, self.resolver.as_ref(), &care)?;
            tracing::info!(bucket = %bucket, rules = config.rules.len(), since_ms, "Restored a persisted replication configuration.");
            let entry = BucketConfig::new(Arc::new(compiled), Arc::new(config), since_ms);
            rules.insert(bucket, Arc::new(entry));
        }
        for (bucket, config) in self.configs {
            let compiled = CompiledRules::compile(&config)?;
            resolve_destinations(&compiled, &mut destinations, self.resolver.as_ref(), &care)?;
            let since_ms = since.get(&bucket).copied().unwrap_or(0);
            let entry = BucketConfig::new(Arc::new(compiled), Arc::new(config), since_ms);
            rules.insert(bucket, Arc::new(entry));
        }
        let checkpoint = load_checkpoint(&FileStorage, &dir, &self.consumer)?.unwrap_or_default();
        let starts: Vec<u64> =
            (0..self.partitions).map(|p| checkpoint.next.get(&p).copied().unwrap_or(0)).collect();
        let horizon_path = dir.join("checkpoints").join(format!("{}.horizon", self.consumer));
        let mut replay_horizon = load_horizon(&horizon_path, self.partitions)?;
        // A crashed run can only have admitted records that were durable when it died, so
        // none at or above today's durable marks: the check stops there. (Its horizon was
        // saved up to 4,096 records ahead of what it admitted.)
        if let Some(marks) = s3repl_io::log::durable_marks(&FileStorage, &dir)? {
            for (h, mark) in replay_horizon.iter_mut().zip(marks) {
                if let Some(m) = mark {
                    *h = (*h).min(m);
                }
            }
        }
        let failed = FailedQueue::open(
            dir.join("failed").join(format!("{}.jsonl", self.consumer)),
            self.limits.retry,
        )?;
        let versions = Arc::new(VersionMap::open(
            &dir.join("versions").join(format!("{}.redb", self.consumer)),
        )?);
        let halts: Arc<Mutex<Vec<Halt>>> = Arc::default();
        let (progress_tx, progress) = watch::channel(starts.clone());
        let shared = Arc::new(Shared {
            saved: progress.clone(),
            halts: halts.clone(),
            versions,
            rules: ArcSwap::from_pointee(rules),
            store,
            care,
            destinations: ArcSwap::from_pointee(destinations),
            resolver: self.resolver,
            config_lock: Mutex::new(()),
            metrics: Arc::new(Metrics::new(self.limits.rtc_threshold)),
            source,
            status,
            keys: self.keys,
            budget: ByteBudget::new(self.limits.budget_bytes),
            buffers: part_buffers(&self.limits),
            watermarks: Mutex::new(starts.iter().map(|&s| Watermark::new(s)).collect()),
            horizon: tokio::sync::Mutex::new(replay_horizon.clone()),
            replay_horizon,
            horizon_path,
            failed,
            limits: self.limits,
            hasher: RandomState::new(),
            checkpoint_soon: tokio::sync::Notify::new(),
        });
        let stop = Arc::new(Stop::default());
        let crashed = shared.replay_horizon.iter().zip(&starts).any(|(h, s)| h > s);
        let settle = if crashed { self.limits.replay_settle } else { Duration::ZERO };
        if crashed {
            tracing::warn!(
                settle_ms = settle.as_millis(),
                "The previous run did not shut down cleanly; records past the checkpoint are checked at their destinations before being copied again."
            );
        }
        // Readers hand records over in batches (one wake-up per batch, not per record); the
        // channel holds `queue` records' worth of batches.
        let (records_tx, records_rx) = mpsc::channel(self.limits.queue.div_ceil(READ_BATCH).max(1));
        let mut readers = Vec::new();
        for (p, &from) in (0u32..).zip(&starts) {
            let (tx, stop, dir, read) = (records_tx.clone(), stop.clone(), dir.clone(), self.read);
            let halts = halts.clone();
            let notifier = self.notifier.clone();
            let handle = std::thread::Builder::new()
                .name(format!("s3repl-read-{p}"))
                .spawn(move || {
                    // The settle, cut short by a stop.
                    let settled = std::time::Instant::now() + settle;
                    while !stop.is_set() && std::time::Instant::now() < settled {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let open = |at: u64| {
                        let reader = LogReader::open(FileStorage, &dir, p, at, read);
                        match &notifier {
                            Some(n) => reader.with_notifier(n.clone()),
                            None => reader,
                        }
                    };
                    let read = std::panic::AssertUnwindSafe(|| {
                        read_partition(open, from, p, &stop.flag, &tx)
                    });
                    let halt = std::panic::catch_unwind(read).unwrap_or_else(|panic| {
                        let error = panic_message(panic.as_ref());
                        tracing::error!(partition = p, panic = %error, "A log reader panicked.");
                        Some(Halt::Task { task: "log reader", error })
                    });
                    if let Some(halt) = halt {
                        lock(&halts).push(halt);
                    }
                })
                .map_err(|e| {
                    Error::Log(s3repl_io::Error::Io {
                        op: "spawn reader",
                        path: PathBuf::new(),
                        source: e,
                    })
                })?;
            readers.push(handle);
        }
        drop(records_tx);
        let (scheduler, ready) = KeyedScheduler::new(self.limits.max_in_flight);
        let ready = Arc::new(tokio::sync::Mutex::new(ready));
        let mut tasks = vec![
            tokio::spawn(guarded(
                "failed-operations retrier",
                halts.clone(),
                retry_failed(shared.clone(), scheduler.clone(), stop.clone()),
            )),
            tokio::spawn(guarded(
                "dispatcher",
                halts.clone(),
                dispatch(shared.clone(), records_rx, scheduler),
            )),
        ];
        for _ in 0..self.limits.workers.max(1) {
            tasks.push(tokio::spawn(guarded(
                "copy worker",
                halts.clone(),
                work(shared.clone(), ready.clone()),
            )));
        }
        if !left_open.is_empty() {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                let care = s.care.clone();
                care.abort_left_open(left_open, &s).await;
            }));
        }
        let saver = tokio::spawn(checkpoints(
            shared.clone(),
            dir.clone(),
            self.consumer.clone(),
            progress_tx,
            stop.clone(),
        ));
        Ok(EngineHandle {
            shared: Some(shared),
            stop,
            readers,
            tasks,
            saver: Some(saver),
            progress,
        })
    }
}

/// A running engine. Call [`EngineHandle::shutdown`] to drain it; dropping it only stops the
/// log readers (the rest winds down as the queues empty, without a final checkpoint).
#[derive(Debug)]
pub struct EngineHandle {
    shared: Option<Arc<Shared>>,
    stop: Arc<Stop>,
    readers: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    saver: Option<JoinHandle<Result<(), Error>>>,
    progress: watch::Receiver<Vec<u64>>,
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop.set();
    }
}

/// The engine's stop signal: a flag the log reader threads poll, and a wake-up for the tasks
/// that sleep between rounds (so a shutdown does not wait out their sleep).
#[derive(Debug, Default)]
struct Stop {
    flag: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Stop {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sleeps for `d`, or until the engine stops if that is sooner.
    async fn sleep(&self, d: Duration) {
        let mut woken = std::pin::pin!(self.wake.notified());
        // Registered before the check: a stop between the check and the wait still wakes it.
        woken.as_mut().enable();
        if self.is_set() {
            return;
        }
        let _ = tokio::time::timeout(d, woken).await;
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
    /// Checkpointing stopped (committing the version map, syncing a destination or saving
    /// the checkpoint failed); replication goes on, and a restart replays from the last
    /// saved checkpoint.
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
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Runs one of the engine's long-lived tasks; should it panic, the panic is recorded as a
/// [`Halt::Task`] (and logged) instead of vanishing with the task.
async fn guarded(task: &'static str, halts: Arc<Mutex<Vec<Halt>>>, run: impl Future<Output = ()>) {
    use futures_util::FutureExt as _;
    if let Err(panic) = std::panic::AssertUnwindSafe(run).catch_unwind().await {
        let error = panic_message(panic.as_ref());
        tracing::error!(task, panic = %error, "An engine task panicked.");
        lock(&halts).push(Halt::Task { task, error });
    }
}

impl EngineHandle {
    /// The checkpointed position of every partition: all records below it are finished.
    pub fn progress(&self) -> Vec<u64> {
        self.progress.borrow().clone()
    }

    /// Asks for the checkpoint to be saved at once instead of at its next tick
    /// ([`Limits::checkpoint_every`]): after a burst an embedder wants counted as done (before a
    /// planned snapshot of the destinations, say, or at the end of a benchmark). It makes the
    /// destinations durable and saves what is finished by then; [`EngineHandle::progress`] and
    /// [`EngineHandle::wait_for`] see the result. Cheap when nothing advanced.
    pub fn checkpoint_now(&self) {
        if let Some(s) = &self.shared {
            s.checkpoint_soon.notify_one();
        }
    }

    /// Waits until every partition's checkpoint reaches `target` (e.g. the writer's
    /// `next_seqs()`), or `timeout` passes; returns whether it did.
    pub async fn wait_for(&mut self, target: &[u64], timeout: Duration) -> bool {
        let reached = |p: &Vec<u64>| p.iter().zip(target).all(|(have, want)| have >= want);
        tokio::time::timeout(timeout, self.progress.wait_for(reached))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A cheap, cloneable handle for changing configurations and reading metrics from other
    /// tasks (an admin endpoint, say). It does not keep the engine alive: after
    /// [`EngineHandle::shutdown`] its calls fail.
    pub fn control(&self) -> EngineControl {
        EngineControl {
            shared: self.shared.as_ref().map_or_else(std::sync::Weak::new, Arc::downgrade),
        }
    }

    /// Installs a bucket's configuration (see [`EngineControl::set_config`]).
    pub fn set_config(&self, bucket: &str, config: &ReplicationConfiguration) -> Result<(), Error> {
        self.control().set_config(bucket, config)
    }

    /// Removes a bucket's configuration (see [`EngineControl::remove_config`]).
    pub fn remove_config(&self, bucket: &str) -> Result<bool, Error> {
        self.control().remove_config(bucket)
    }

    /// The buckets that have a configuration.
    pub fn buckets(&self) -> Vec<String> {
        self.control().buckets()
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        self.control().metrics()
    }

    /// What has stopped for good since the engine started; see [`Halt`].
    pub fn halts(&self) -> Vec<Halt> {
        self.control().halts()
    }

    /// Graceful drain: stop reading, finish what was admitted, save the final checkpoint.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        // The checkpoint saver makes its final save once it holds the last reference.
        drop(self.shared.take());
        self.stop.set();
        for r in std::mem::take(&mut self.readers) {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        match self.saver.take() {
            Some(saver) => saver
                .await
                .unwrap_or_else(|e| Err(task_failed("checkpoint task", PathBuf::new(), &e))),
            None => Ok(()),
        }
    }
}

/// Changes a running engine's configurations and reads its metrics; see
/// [`EngineHandle::control`].
#[derive(Debug, Clone)]
pub struct EngineControl {
    shared: std::sync::Weak<Shared>,
}

impl EngineControl {
    fn engine(&self) -> Result<Arc<Shared>, Error> {
        self.shared.upgrade().ok_or_else(|| config_error("the engine is shut down"))
    }

    /// Installs a bucket's configuration, adding the bucket or replacing its rules (hot swap:
    /// records read from now on are matched under the new rules; work already matched finishes
    /// under the old ones). Destinations the registry does not name go to the resolver; the
    /// configuration is refused if it cannot place one.
    ///
    /// A bucket that had no configuration gets one in force from the moment this call puts it
    /// in the engine: records committed earlier are existing objects (see
    /// [`EngineBuilder::config_dir`]); replacing a configuration keeps the time the bucket got
    /// its first. With a configuration directory the change is durable when this returns; if
    /// persisting fails, the previous configuration is put back and the error returned.
    pub fn set_config(&self, bucket: &str, config: &ReplicationConfiguration) -> Result<(), Error> {
        let engine = self.engine()?;
        let compiled = Arc::new(CompiledRules::compile(config)?);
        let _serial = lock(&engine.config_lock);
        let old_destinations = engine.destinations.load_full();
        let mut destinations = DestinationRegistry::clone(&old_destinations);
        resolve_destinations(&compiled, &mut destinations, engine.resolver.as_ref(), &engine.care)?;
        let old_rules = engine.rules.load_full();
        let config = Arc::new(config.clone());
        // A bucket that had no configuration gets its since time once this one is in the
        // engine: a record committed after the stamp is read after it, so it is matched under
        // this configuration; records matched before the stamp count as committed before it.
        let previous = old_rules.get(bucket).map(|b| b.since_ms());
        let entry = Arc::new(match previous {
            Some(since) => BucketConfig::new(compiled, config.clone(), since),
            None => BucketConfig::unstamped(compiled, config.clone()),
        });
        engine.destinations.store(Arc::new(destinations));
        let mut rules = Buckets::clone(&old_rules);
        rules.insert(bucket.to_owned(), entry.clone());
        engine.rules.store(Arc::new(rules));
        let since = previous.unwrap_or_else(|| entry.stamp(super::configs::now_ms()));
        if let Some(store) = &engine.store
            && let Err(e) = store.save(bucket, &config, since)
        {
            engine.rules.store(old_rules);
            engine.destinations.store(old_destinations);
            return Err(e);
        }
        Ok(())
    }

    /// Removes a bucket's configuration: its later records are not replicated. Returns whether
    /// the bucket had one. With a configuration directory the removal is durable first.
    pub fn remove_config(&self, bucket: &str) -> Result<bool, Error> {
        let engine = self.engine()?;
        let _serial = lock(&engine.config_lock);
        if let Some(store) = &engine.store {
            store.remove(bucket)?;
        }
        let mut rules = Buckets::clone(&engine.rules.load());
        let had = rules.remove(bucket).is_some();
        engine.rules.store(Arc::new(rules));
        Ok(had)
    }

    /// A bucket's installed configuration, as installed.
    pub fn config(&self, bucket: &str) -> Option<ReplicationConfiguration> {
        let engine = self.shared.upgrade()?;
        engine.rules.load().get(bucket).map(|b| ReplicationConfiguration::clone(&b.config))
    }

    /// The time (milliseconds since the Unix epoch) since which `bucket` has had a
    /// configuration without interruption; records committed earlier are existing objects.
    /// 0 for configurations in force for every record (given to the builder, or persisted by
    /// a version that kept no time). `None` without a configuration.
    pub fn config_since(&self, bucket: &str) -> Option<u64> {
        let engine = self.shared.upgrade()?;
        engine.rules.load().get(bucket).map(|b| b.since_ms())
    }

    /// The buckets that have a configuration, sorted.
    pub fn buckets(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .shared
            .upgrade()
            .map(|e| e.rules.load().keys().cloned().collect())
            .unwrap_or_default();
        all.sort();
        all
    }

    /// The engine's metrics (`None` once it is shut down).
    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        self.shared.upgrade().map(|s| s.metrics.clone())
    }

    /// What has stopped for good since the engine started (empty while all is well; see
    /// [`Halt`]). A health check should fail while this is not empty.
    pub fn halts(&self) -> Vec<Halt> {
        self.shared.upgrade().map(|s| lock(&s.halts).clone()).unwrap_or_default()
    }

    /// The checkpointed position of every partition: all records below it are finished
    /// (durably: it is what the last saved checkpoint holds). Empty once the engine is shut down.
    pub fn progress(&self) -> Vec<u64> {
        self.shared.upgrade().map(|s| s.saved.borrow().clone()).unwrap_or_default()
    }

    /// How many operations the durable failed-operations queue holds (cheaper than
    /// [`EngineControl::failed_operations`]).
    pub fn failed_queue_len(&self) -> usize {
        self.shared.upgrade().map_or(0, |s| s.failed.len())
    }

    /// The durable failed-operations queue: operations that ended FAILED and are retried in
    /// the background (or parked after too many rounds).
    pub fn failed_operations(&self) -> Vec<FailedOperation> {
        self.shared.upgrade().map(|s| s.failed.list()).unwrap_or_default()
    }

    /// The version id the destination `destination` minted for its replica of source version
    /// `version_id` of `bucket`/`key`, as recorded when it was copied (`None` when the
    /// destination does not version, or the copy is unknown).
    pub async fn replica_version(
        &self,
        destination: &str,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<String>, Error> {
        let shared = self.engine()?;
        let replica = Replica {
            destination: destination.to_owned(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source_version: version_id.to_owned(),
        };
        lookup_replica(&shared, replica).await
    }

    /// Re-arms every queued failed operation, parked ones included, for an immediate retry
    /// (after fixing what made them fail); returns how many.
    pub fn retry_failed_now(&self) -> usize {
        self.shared.upgrade().map_or(0, |s| s.failed.retry_now(super::metrics::now_ms()))
    }
}

/// The pool of part buffers: one part of whole packages plus the stream header, at most as
/// many idle as the budget holds parts.
fn part_buffers(limits: &Limits) -> BufferPool {
    let part = usize::try_from(limits.part_size.max(1)).unwrap_or(usize::MAX);
    let packages = part.div_ceil(s3repl_crypto::DEFAULT_PACKAGE_SIZE as usize).max(1);
    let capacity = part.saturating_add(packages * s3repl_crypto::TAG_LEN + HEADER_LEN);
    let max_idle = usize::try_from(limits.budget_bytes / limits.part_size.max(1)).unwrap_or(1);
    BufferPool::new(capacity, max_idle.max(1))
}

struct Shared {
    /// The last saved checkpoint (see [`EngineHandle::progress`]).
    saved: watch::Receiver<Vec<u64>>,
    /// What stopped for good (a damaged log, a failed checkpoint), for embedders to see.
    halts: Arc<Mutex<Vec<Halt>>>,
    /// Per destination: source version → the replica version the destination minted.
    versions: Arc<VersionMap>,
    /// Bucket → configuration, replaced as a whole (under `config_lock`) on a change.
    rules: ArcSwap<Buckets>,
    /// Where configurations persist, if the embedder gave a directory.
    store: Option<ConfigStore>,
    /// What a killed predecessor left at the destinations, and the journal that finds it.
    care: Arc<Housekeeping>,
    destinations: ArcSwap<DestinationRegistry>,
    resolver: Option<Resolver>,
    /// Serialises configuration changes (readers never take it).
    config_lock: Mutex<()>,
    metrics: Arc<Metrics>,
    source: Arc<dyn ObjectSource>,
    status: Arc<dyn StatusSink>,
    keys: Option<Arc<dyn KeyStore>>,
    budget: ByteBudget,
    /// Buffers for parts rewritten in place (re-encryption) when the source's are shared.
    buffers: BufferPool,
    watermarks: Mutex<Vec<Watermark>>,
    /// Per partition: records at or above this were never admitted (saved ahead of admission).
    horizon: tokio::sync::Mutex<Vec<u64>>,
    /// The horizon found at start: records below it (and at or above the checkpoint) may have
    /// reached a destination before a crash, so their copies first check the replica.
    replay_horizon: Vec<u64>,
    horizon_path: PathBuf,
    failed: FailedQueue,
    limits: Limits,
    hasher: RandomState,
    /// Asks the checkpoint task to save now rather than at its next tick
    /// ([`EngineHandle::checkpoint_now`]); a request made while it saves is kept for the next round.
    checkpoint_soon: tokio::sync::Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("buckets", &self.rules.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Local destinations that can wait for the staging-file sweep at once.
const SWEEP_QUEUE: usize = 4096;

/// What a process killed mid-write leaves at its destinations, and how the next start clears
/// it: staging files in local destinations (removed in the background, once per destination),
/// and multipart uploads on S3 destinations (journaled when opened, so the ones left open are
/// aborted; see [`UploadJournal`]).
#[derive(Debug)]
struct Housekeeping {
    uploads: Arc<UploadJournal>,
    /// When this engine started: staging files older than this are a predecessor's.
    started: std::time::SystemTime,
    /// The one thread that sweeps local destinations, one after the other (started with the
    /// first; a configuration naming many local destinations must not start a thread each).
    sweeper: Mutex<Option<std::sync::mpsc::SyncSender<Destination>>>,
}

impl Housekeeping {
    fn new(uploads: UploadJournal, started: std::time::SystemTime) -> Self {
        Housekeeping { uploads: Arc::new(uploads), started, sweeper: Mutex::new(None) }
    }

    /// Prepares a destination the engine starts writing to.
    fn adopt(&self, d: &Destination) {
        d.journal_uploads(&self.uploads);
        if !d.is_local() {
            return;
        }
        let mut sweeper = lock(&self.sweeper);
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
    async fn abort_left_open(
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
fn resolve_destinations(
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
            Some(d) if d.arn() == arn.as_str() => {
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
    fn finish(&self, partition: u32, seq: u64) {
        if let Some(w) = lock(&self.watermarks).get_mut(partition as usize) {
            w.finish(seq);
        }
    }

    fn report(
        &self,
        r: &VersionRecord,
        destination: &str,
        status: ReplicationStatus,
        dst_version: Option<String>,
    ) {
        let update = StatusUpdate {
            bucket: r.bucket.clone(),
            key: r.key.clone(),
            version_id: r.version_id.clone(),
            destination: destination.to_owned(),
            status,
            destination_version_id: dst_version,
        };
        // The sink is the embedder's code, called from the dispatcher and the workers: a panic
        // in it loses this one update instead of the task (and with the dispatcher, the engine).
        let sink = std::panic::AssertUnwindSafe(|| self.status.report(update));
        if let Err(panic) = std::panic::catch_unwind(sink) {
            tracing::error!(key = %r.key, destination, panic = %panic_message(panic.as_ref()), "The status sink panicked; this status update is lost.");
        }
    }
}

/// One record on its way through the pipeline.
#[derive(Debug)]
struct Item {
    partition: u32,
    seq: u64,
    record: VersionRecord,
}

/// One destination's share of a version's work: what the winning rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Task {
    pub(crate) destination: String,
    pub(crate) action: Action,
    pub(crate) storage_class: Option<crate::config::StorageClass>,
    /// The winning rule's `ReplicaKmsKeyID` (SSE-KMS sources are re-encrypted under it).
    pub(crate) replica_kms_key: Option<String>,
    /// The rule's `AccessControlTranslation`: the destination account owns the replicas, so
    /// they get no source ACL and ACL changes are not replicated.
    pub(crate) owner_override: bool,
}

/// A version with its per-destination tasks, scheduled under its key.
#[derive(Debug)]
struct Job {
    item: Item,
    tasks: Vec<Task>,
    /// A background retry of this failed-operations queue entry (one task; its log position
    /// was finished long ago).
    retry: Option<u64>,
}

/// Records a reader decodes and hands to the dispatcher at a time.
const READ_BATCH: usize = 256;

/// Whether an error is the process running short of a resource (descriptors, memory) rather
/// than a fault of what it reads or writes: it passes, so the work is retried rather than
/// stopped for good. (Never a failed fsync, which stays fail-stop.)
fn exhausted(e: &(dyn std::error::Error + 'static)) -> bool {
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
mod libc_errno {
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const ENFILE: i32 = 23;
    pub(super) const EMFILE: i32 = 24;
    pub(super) const ENOBUFS: i32 = 105;
}

/// Reads one partition into the pipeline, from `from`, until the engine stops (`None`) or the
/// partition cannot be read on (the [`Halt`] saying why). `open` opens a reader at a sequence
/// number: a read that fails for want of descriptors or memory is retried with a new reader
/// from where the last one stopped, after a pause (up to 2 s), instead of halting.
fn read_partition<S: s3repl_io::log::Storage + Clone>(
    open: impl Fn(u64) -> LogReader<S>,
    from: u64,
    partition: u32,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Vec<Item>>,
) -> Option<Halt> {
    let mut reader = open(from);
    let mut batch = RecordBatch::new();
    let mut items = Vec::with_capacity(READ_BATCH);
    let mut pause = Duration::from_millis(50);
    let mut warned: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Acquire) {
        batch.clear();
        let read = reader.wait_records(READ_BATCH, &mut batch, Duration::from_millis(20));
        let retry = match read {
            Ok(_) => {
                pause = Duration::from_millis(50);
                false
            }
            Err(e) if exhausted(&e) => {
                // At most one line a second, whatever the retry rate.
                if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(partition, error = %e, pause_ms = pause.as_millis(), "Log read failed for want of a resource; retrying.");
                    warned = Some(std::time::Instant::now());
                }
                true
            }
            Err(e) => {
                tracing::error!(partition, error = %e, "Log read failed; replication of this partition stops.");
                return Some(Halt::LogRead { partition, error: e.to_string() });
            }
        };
        for rec in batch.iter() {
            let record = match VersionRecord::decode(rec.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(partition, seq = rec.seq, error = %e, "Undecodable log record; replication of this partition stops.");
                    // The records before it in this batch still go through.
                    if !items.is_empty() {
                        let _ = tx.blocking_send(items);
                    }
                    return Some(Halt::Record { partition, seq: rec.seq, error: e.to_string() });
                }
            };
            items.push(Item { partition, seq: rec.seq, record });
        }
        // Blocks when the pipeline is full: this is where backpressure reaches the log.
        if !items.is_empty()
            && tx
                .blocking_send(std::mem::replace(&mut items, Vec::with_capacity(READ_BATCH)))
                .is_err()
        {
            return None;
        }
        if retry {
            // The records read before the failure went on above; a new reader starts after them.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
            reader = open(reader.next_seq());
        }
    }
    None
}

async fn dispatch(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Vec<Item>>,
    scheduler: KeyedScheduler<(String, String), Job>,
) {
    let mut plan = Plan::default();
    while let Some(batch) = rx.recv().await {
        for item in batch {
            if !admit(&shared, &scheduler, &mut plan, item).await {
                return;
            }
        }
    }
}

/// Matches one record and hands its tasks to the scheduler; false when the pipeline stops.
async fn admit(
    shared: &Arc<Shared>,
    scheduler: &KeyedScheduler<(String, String), Job>,
    plan: &mut Plan,
    item: Item,
) -> bool {
    shared.metrics.read(1);
    let all = shared.rules.load();
    let tasks: Vec<Task> = match all.get(&item.record.bucket) {
        None => Vec::new(),
        Some(bucket) => {
            let rules = &bucket.rules;
            // A record committed before the bucket had a configuration is an existing object.
            let existing = bucket.predates(item.record.commit_time_ms);
            item.record.with_event(|ev| {
                rules.match_into(&VersionEvent { existing: ev.existing || existing, ..*ev }, plan);
            });
            plan.replications()
                .iter()
                .filter_map(|r| {
                    let rule = rules.rule(r.rule)?;
                    Some(Task {
                        destination: rules.destination(r.destination)?.to_owned(),
                        action: r.action,
                        storage_class: r.storage_class,
                        replica_kms_key: rule.replica_kms_key_id.clone(),
                        owner_override: rule.owner_override,
                    })
                })
                .collect()
        }
    };
    if tasks.is_empty() {
        shared.finish(item.partition, item.seq);
        return true;
    }
    shared.metrics.matched();
    for t in &tasks {
        shared.metrics.pending(&t.destination, task_bytes(&item.record, t));
        // A metadata change says nothing of the version's status until it is known to have a
        // replica to change (see `run_task`).
        if t.action != Action::SyncMetadata {
            shared.report(&item.record, &t.destination, ReplicationStatus::Pending, None);
        }
    }
    if let Err(e) = advance_horizon(shared, item.partition, item.seq).await {
        tracing::error!(error = %e, "Saving the replay horizon failed; replication stops (nothing is admitted that a restart could not recognise).");
        return false;
    }
    let key = (item.record.bucket.clone(), item.record.key.clone());
    scheduler.submit(key, Job { item, tasks, retry: None }).await.is_ok()
}

/// Dispatched jobs, shared by the copy workers.
type Ready = Arc<tokio::sync::Mutex<mpsc::Receiver<Admitted<(String, String), Job>>>>;

async fn work(shared: Arc<Shared>, ready: Ready) {
    loop {
        let next = ready.lock().await.recv().await;
        let Some(mut admitted) = next else { return };
        let Some(job) = admitted.take_job() else { continue };
        if let Some(id) = job.retry {
            // A newer version of the key may have reached the destination while this retry
            // waited for the key: then the entry is gone and the old version must not follow.
            if !shared.failed.is_live(id) {
                continue;
            }
            for t in &job.tasks {
                let r = &job.item.record;
                tracing::info!(key = %r.key, destination = %t.destination, "Retrying a failed replication.");
                shared.metrics.pending(&t.destination, task_bytes(r, t));
                shared.report(r, &t.destination, ReplicationStatus::Pending, None);
            }
        }
        for task in &job.tasks {
            let (status, version) = contained(
                run_task(&shared, &job.item, task, job.retry.is_some()),
                &job.item.record,
                task,
            )
            .await;
            let r = &job.item.record;
            if status == ReplicationStatus::Pending {
                // Nothing to apply (a metadata change of a version never replicated there).
                shared.metrics.not_applied(&task.destination, task_bytes(r, task));
                continue;
            }
            let ok = matches!(status, ReplicationStatus::Completed);
            shared.metrics.finished(&task.destination, task_bytes(r, task), ok, r.commit_time_ms);
            settle_queue(&shared, &job, task, &status).await;
            shared.report(r, &task.destination, status, version);
        }
        if job.retry.is_none() {
            shared.finish(job.item.partition, job.item.seq);
        }
        // Releasing the key lets its next version start.
        drop(admitted);
    }
}

/// Runs one task's replication, turning a panic inside it (a bug in the engine, in a store
/// client, in the embedder's source) into a FAILED status for that version. Uncaught, the
/// panic would end the worker, and the version would never finish: the checkpoint would stop
/// there for good, and every restart would replay from it.
async fn contained(
    run: impl Future<Output = (ReplicationStatus, Option<String>)>,
    r: &VersionRecord,
    task: &Task,
) -> (ReplicationStatus, Option<String>) {
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            tracing::error!(key = %r.key, version_id = %r.version_id, destination = %task.destination, panic = %what, "Replicating a version panicked; it is FAILED.");
            (ReplicationStatus::Failed("InternalError: panicked".into()), None)
        }
    }
}

/// Keeps the failed-operations queue in step with an outcome: a first failure is journaled
/// (durably, before the log position can be checkpointed past it); a retry's outcome updates
/// its entry; a completion supersedes older queued entries for the same key and destination.
async fn settle_queue(shared: &Arc<Shared>, job: &Job, task: &Task, status: &ReplicationStatus) {
    let now = super::metrics::now_ms();
    let item = &job.item;
    let outcome = match (status, job.retry) {
        (ReplicationStatus::Failed(reason), None) => {
            let (s, r, t) = (shared.clone(), item.record.clone(), task.clone());
            let (partition, seq, reason) = (item.partition, item.seq, reason.clone());
            tokio::task::spawn_blocking(move || {
                s.failed.add(partition, seq, &r, &t, &reason, now).map(|_| ())
            })
            .await
            .unwrap_or_else(|e| {
                Err(task_failed("failed-operations queue task", PathBuf::new(), &e))
            })
        }
        (ReplicationStatus::Failed(reason), Some(id)) => {
            shared.failed.failed_again(id, reason, now)
        }
        (ReplicationStatus::Completed, Some(id)) => shared.failed.succeeded(id),
        (ReplicationStatus::Completed, None) => {
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
        (ReplicationStatus::Pending, _) => Ok(()),
    };
    if let Err(e) = outcome {
        // The status still reaches the sink; only the durable retry record is missing.
        tracing::error!(key = %item.record.key, destination = %task.destination, error = %e, "Updating the failed-operations queue failed.");
    }
}

/// Hands due entries of the failed-operations queue back to the scheduler, under their key,
/// once a second, until the engine stops.
async fn retry_failed(
    shared: Arc<Shared>,
    scheduler: KeyedScheduler<(String, String), Job>,
    stop: Arc<Stop>,
) {
    while !stop.is_set() {
        for e in shared.failed.due(super::metrics::now_ms(), 256) {
            let (Some(record), Some(task)) = (e.record(), e.task()) else {
                tracing::error!(id = e.id, "Undecodable failed-operations entry; parked.");
                let _ = shared.failed.failed_again(e.id, "undecodable entry", u64::MAX / 2);
                continue;
            };
            let key = (record.bucket.clone(), record.key.clone());
            let item = Item { partition: e.partition, seq: e.seq, record };
            let job = Job { item, tasks: vec![task], retry: Some(e.id) };
            if scheduler.submit(key, job).await.is_err() {
                return;
            }
        }
        stop.sleep(Duration::from_secs(1)).await;
    }
}

/// A blocking helper task died (panic or cancellation) while doing `op` on `path`.
fn task_failed(op: &'static str, path: PathBuf, e: &tokio::task::JoinError) -> Error {
    Error::Log(s3repl_io::Error::Io { op, path, source: std::io::Error::other(e.to_string()) })
}

/// Records admitted past the saved horizon move it this far ahead (one fsync per this many
/// records; after a crash, at most this many records per partition are checked at the
/// destination before being copied).
const HORIZON_STEP: u64 = 4096;

fn load_horizon(path: &std::path::Path, partitions: u32) -> Result<Vec<u64>, Error> {
    let cp = match std::fs::read(path) {
        Ok(bytes) => Checkpoint::decode(&bytes).map_err(|reason| {
            Error::Log(s3repl_io::Error::Checkpoint { path: path.to_owned(), reason })
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
        Err(e) => {
            return Err(Error::Log(s3repl_io::Error::Io {
                op: "read",
                path: path.to_owned(),
                source: e,
            }));
        }
    };
    Ok((0..partitions).map(|p| cp.next.get(&p).copied().unwrap_or(0)).collect())
}

/// Makes sure `seq` is below the saved horizon of its partition before it is admitted.
async fn advance_horizon(shared: &Shared, partition: u32, seq: u64) -> Result<(), Error> {
    let mut horizon = shared.horizon.lock().await;
    let Some(h) = horizon.get_mut(partition as usize) else { return Ok(()) };
    if seq < *h {
        return Ok(());
    }
    *h = seq + HORIZON_STEP;
    let cp = Checkpoint { next: (0u32..).zip(horizon.iter().copied()).collect() };
    let path = shared.horizon_path.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| s3repl_io::Error::Io {
                op: "mkdir",
                path: d.to_owned(),
                source: e,
            })?;
        }
        s3repl_io::log::write_atomic(&FileStorage, &path, &cp.encode())
    })
    .await
    .map_err(|e| task_failed("horizon task", shared.horizon_path.clone(), &e))??;
    Ok(())
}

/// The object bytes an operation moves (for the pending/replicated byte metrics).
fn task_bytes(r: &VersionRecord, task: &Task) -> u64 {
    if task.action == Action::CopyObject { r.size } else { 0 }
}

/// Performs one destination's action with retries; returns the final status — or `Pending`
/// when there was nothing to apply: a metadata change of a version that has no replica at the
/// destination. `retry`: a background retry from the failed-operations queue.
async fn run_task(
    shared: &Shared,
    item: &Item,
    task: &Task,
    retry: bool,
) -> (ReplicationStatus, Option<String>) {
    let r = &item.record;
    let Some(dest) = shared.destinations.load().get(&task.destination).cloned() else {
        return (ReplicationStatus::Failed("DstBucketNotFound".into()), None);
    };
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
                                    shared.versions.record(replica_of(r, task), v.clone());
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
                                    shared.versions.record(replica_of(r, task), v.clone());
                                }
                            },
                        )
                    }
                    Err(e) => Err(e),
                }
            }
            Action::SyncMetadata => {
                let known = lookup_replica(shared, replica_of(r, task)).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "Version map lookup failed; updating the current replica.");
                    None
                });
                let synced = dest
                    .sync_metadata(
                        &r.key,
                        &r.version_id,
                        known.as_deref(),
                        &changed_settings(r, task),
                    )
                    .await;
                match synced {
                    // Neither the version map nor the destination knows a replica of this
                    // version: it was not replicated (no rule selected it when it was
                    // created, say). S3 replicates metadata changes of replicated versions
                    // only: nothing to do, and no status (the version has none here).
                    Err(DestinationError::Permanent { reason: "DstVersionNotFound", .. })
                        if known.is_none() =>
                    {
                        tracing::debug!(key = %r.key, destination = %task.destination, "A metadata change of a version with no replica there is not replicated.");
                        return (ReplicationStatus::Pending, None);
                    }
                    other => other.map_err(Failure::Destination),
                }
            }
        };
        match result {
            Ok(version) => return (ReplicationStatus::Completed, version),
            Err(f) if f.retryable() && attempt < shared.limits.max_attempts => {
                unsure |= matches!(f, Failure::Destination(_));
                let delay = backoff(shared, r, attempt);
                if started.elapsed().saturating_add(delay) > shared.limits.retry_deadline {
                    tracing::warn!(key = %r.key, destination = %task.destination, attempt, error = %f, elapsed_ms = started.elapsed().as_millis(), "Replication attempt failed and the retry deadline has passed; the version is FAILED (retried in the background).");
                    return (ReplicationStatus::Failed(f.reason()), None);
                }
                tracing::warn!(key = %r.key, destination = %task.destination, attempt, error = %f, "Replication attempt failed; retrying.");
                tokio::time::sleep(delay).await;
            }
            Err(f) => return (ReplicationStatus::Failed(f.reason()), None),
        }
    }
}

/// Exponential backoff with full jitter: uniform in `[0, backoff · 2^(attempt-1)]`.
fn backoff(shared: &Shared, r: &VersionRecord, attempt: u32) -> Duration {
    let cap = shared.limits.backoff.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let roll = shared.hasher.hash_one((&r.version_id, attempt, std::time::Instant::now()));
    let fraction = f64::from(u32::try_from(roll % 1_000_000).unwrap_or(0)) / 1_000_000.0;
    cap.mul_f64(fraction)
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error("source bytes do not match the committed version ({0})")]
    Integrity(&'static str),
    #[error("{0}")]
    Kms(&'static str),
    /// A helper task died (panic or cancellation): not the data's fault, retried.
    #[error("{0}")]
    Task(&'static str),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Source(SourceError::Transient(_)) | Failure::Task(_) => true,
            Failure::Destination(d) => d.is_retryable(),
            Failure::Source(_) | Failure::Integrity(_) | Failure::Kms(_) => false,
        }
    }

    fn reason(&self) -> String {
        match self {
            Failure::Source(SourceError::VersionNotFound { .. }) => "SrcVersionNotFound".into(),
            Failure::Source(_) => "SrcGetObjectNotPermitted".into(),
            Failure::Destination(DestinationError::Permanent { reason, .. })
            | Failure::Kms(reason) => (*reason).into(),
            Failure::Destination(_) => "DstPutObjectNotPermitted".into(),
            Failure::Integrity(what) => format!("SrcObjectNotEligible: {what} mismatch"),
            Failure::Task(what) => format!("InternalError: {what}"),
        }
    }
}

/// The replica metadata entry naming the log position a replica was written from.
const SOURCE_SEQ: &str = "s3repl-source-seq";

/// Whether a record that may have been applied already is at the destination, and if so its
/// replica version (`Some(None)` where unknown). Asked for records below the replay horizon
/// (applied, perhaps, before a crash), for background retries from the failed-operations
/// queue, and for attempts after one that failed at the destination (`again`): a write the
/// server applied but answered with an error, or whose answer was lost, is not written twice.
///
/// A copy or delete marker recorded in the version map is known without asking. Otherwise one
/// HEAD of the key's current replica decides, using the log position stamped on replicas (a
/// key's operations reach a destination in log order, and the key's later operations wait
/// while this one is retried):
/// - a copy was made if the current replica came from this record or a later one of the
///   partition (when a delete marker is current, the newest version below it is asked);
/// - a delete marker was placed if the key has no current object, or its current replica came
///   from a later record. When the key has no current object the marker is not placed again
///   even if it never was (the key was absent or already deleted there): what readers see is
///   the same, and a duplicate marker is avoided.
///
/// Stores that keep no metadata cannot tell; there the operation is repeated (they do not
/// version, so repeating it is harmless). A first attempt above the horizon asks nothing.
async fn replayed(
    shared: &Shared,
    item: &Item,
    task: &Task,
    dest: &s3repl_io::dest::Destination,
    again: bool,
) -> Result<Option<Option<String>>, Failure> {
    let below = shared.replay_horizon.get(item.partition as usize).is_some_and(|h| item.seq < *h);
    if !below && !again {
        return Ok(None);
    }
    let replica = replica_of(&item.record, task);
    match lookup_replica(shared, replica.clone()).await {
        Ok(Some(version)) => {
            tracing::debug!(key = %item.record.key, destination = %task.destination, seq = item.seq, "Record already applied (in the version map); not applied again.");
            return Ok(Some(Some(version)));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "Version map lookup failed; asking the destination."),
    }
    let marker = task.action == Action::ReplicateDeleteMarker;
    // A destination that refuses to be read (a replication role allowed to write replicas,
    // not to read them) cannot tell: the operation is applied again, as before this check
    // existed, rather than FAILED. Transient failures are retried.
    let unreadable = |e: s3repl_io::dest::DestinationError| {
        if e.is_retryable() {
            return Err(Failure::Destination(e));
        }
        tracing::warn!(key = %item.record.key, destination = %task.destination, error = %e, "The destination cannot be read to check whether this operation was already applied; applying it (again).");
        Ok(None)
    };
    let current = match dest.current_replica(&item.record.key, SOURCE_SEQ).await {
        Ok(current) => current,
        Err(e) => return unreadable(e),
    };
    let current = match current {
        Some(current) => current,
        None if marker => {
            tracing::debug!(key = %item.record.key, destination = %task.destination, seq = item.seq, "Delete marker: the key is already deleted there; not applied again.");
            return Ok(Some(None));
        }
        // Deleted there: the copy may be hidden under a later delete marker (only a crashed
        // run can have placed one; otherwise the key's later operations are still waiting).
        None if !below => return Ok(None),
        None => match dest.hidden_replica(&item.record.key, SOURCE_SEQ).await {
            Ok(Some(hidden)) => hidden,
            Ok(None) => return Ok(None),
            Err(e) => return unreadable(e),
        },
    };
    let stamped = current
        .value
        .as_deref()
        .and_then(|s| s.split_once(':'))
        .and_then(|(p, q)| Some((p.parse::<u32>().ok()?, q.parse::<u64>().ok()?)))
        .filter(|&(p, _)| p == item.partition);
    let done = stamped.is_some_and(|(_, q)| if marker { q > item.seq } else { q >= item.seq });
    if !done {
        return Ok(None);
    }
    tracing::debug!(key = %item.record.key, destination = %task.destination, seq = item.seq, "Record already applied at the destination; not applied again.");
    // The current replica is this record's own copy: its version is the one to remember.
    let version = current.version.filter(|_| stamped == Some((item.partition, item.seq)));
    if let Some(v) = &version {
        shared.versions.record(replica, v.clone());
    }
    Ok(Some(version))
}

/// The version-map key of `r`'s replica at `task`'s destination.
fn replica_of(r: &VersionRecord, task: &Task) -> Replica {
    Replica {
        destination: task.destination.clone(),
        bucket: r.bucket.clone(),
        key: r.key.clone(),
        source_version: r.version_id.clone(),
    }
}

/// Looks `replica` up in the version map off the async threads.
async fn lookup_replica(shared: &Shared, replica: Replica) -> Result<Option<String>, Error> {
    let versions = shared.versions.clone();
    tokio::task::spawn_blocking(move || versions.lookup(&replica))
        .await
        .map_err(|e| task_failed("version map lookup", PathBuf::new(), &e))?
}

async fn copy(
    shared: &Shared,
    item: &Item,
    task: &Task,
    dest: &s3repl_io::dest::Destination,
) -> Result<Written, Failure> {
    let r = &item.record;
    if let Some(written) = copy_server_side(shared, item, task, dest).await? {
        return Ok(written);
    }
    let sse_c = r.sse.kind == SseKind::SseC;
    if !sse_c && r.size >= shared.limits.multipart_threshold.max(1) {
        // Budgeted per part inside: a whole-object permit here would double-count the bytes
        // and, for objects at least as large as the budget, starve the parts forever.
        return copy_multipart(shared, item, task, dest).await;
    }
    // Holds the object's bytes against the budget until the write is done (an SSE-KMS object
    // is re-encrypted in place: in its own buffer, or in one copy when the source shares it).
    let _permit = shared.budget.acquire(r.size).await;
    let data = shared.source.get(&r.bucket, &r.key, &r.version_id).await?;
    let mut user_metadata = r.user_metadata.clone();
    let data = if r.sse.kind.is_kms() {
        let (sealed, stamps) = reencrypt(shared, r, task, data).await?;
        user_metadata.extend(stamps);
        sealed
    } else if sse_c {
        // SSE-C: the engine never has the customer's key. As S3 does, the stored ciphertext is
        // copied as it is, with the key's MD5, so the replica opens with the same customer key
        // (on a server that stores SSE-C objects the same way); its plaintext size and digest
        // cannot be checked here. Copied whole (no multipart: the stored size is unknown).
        user_metadata.push(("s3repl-sse".to_owned(), "SSE-C".to_owned()));
        if let Some(md5) = &r.sse.kms_key_id {
            user_metadata.push(("s3repl-sse-customer-key-md5".to_owned(), md5.clone()));
        }
        data
    } else {
        if data.len() as u64 != r.size {
            return Err(Failure::Integrity("size"));
        }
        if let Some(expected) = r.blake3
            && blake3::hash(&data).as_bytes() != &expected
        {
            return Err(Failure::Integrity("BLAKE3"));
        }
        data
    };
    let meta = replica_meta(item, task, user_metadata);
    let outcome = dest.put(&r.key, data, &meta).await?;
    Ok((outcome.version_id, outcome.pending))
}

/// Copies a version server-side where its bytes need no work here (not encrypted, or SSE-S3)
/// and the destination is on the source bucket's own S3 endpoint; `None` otherwise, or when
/// the server refused the copy: the caller copies the bytes.
async fn copy_server_side(
    shared: &Shared,
    item: &Item,
    task: &Task,
    dest: &s3repl_io::dest::Destination,
) -> Result<Option<Written>, Failure> {
    let r = &item.record;
    if !matches!(r.sse.kind, SseKind::None | SseKind::SseS3) {
        return Ok(None);
    }
    let Some(location) = shared.source.s3_location(&r.bucket) else { return Ok(None) };
    if !dest.copies_from(location) {
        return Ok(None);
    }
    let src = s3repl_io::dest::CopySource {
        location,
        key: &r.key,
        version_id: &r.version_id,
        etag: &r.etag,
        size: r.size,
    };
    let plan = s3repl_io::dest::CopyPlan {
        single_max: shared.limits.single_copy_max,
        part_size: shared.limits.copy_part_size,
        concurrency: shared.limits.part_concurrency,
    };
    let meta = replica_meta(item, task, r.user_metadata.clone());
    let outcome = dest.copy_from(&r.key, &src, &meta, plan).await?;
    Ok(outcome.map(|o| (o.version_id, o.pending)))
}

/// An ACL change with no ACL recorded resets the object to the bucket's default.
const DEFAULT_ACL: ObjectAcl = ObjectAcl::Canned(CannedAcl::Private);

/// What a replica gets right after its write: the source's ACL (unless the destination account
/// owns replicas), its retention and its legal hold.
fn replica_settings<'a>(r: &'a VersionRecord, task: &Task) -> VersionSettings<'a> {
    VersionSettings {
        tags: None,
        acl: r.acl.as_ref().filter(|_| !task.owner_override),
        retention: r.lock.retention.map(Some),
        legal_hold: r.lock.legal_hold.then_some(true),
    }
}

/// What a metadata update changes at the replica: each changed property the rule replicates,
/// with its new value from the record.
fn changed_settings<'a>(r: &'a VersionRecord, task: &Task) -> VersionSettings<'a> {
    let changes = r.changes.replicated(task.owner_override);
    VersionSettings {
        tags: changes.contains(MetadataChanges::TAGS).then_some(r.tags.as_slice()),
        acl: changes.contains(MetadataChanges::ACL).then(|| r.acl.as_ref().unwrap_or(&DEFAULT_ACL)),
        retention: changes.contains(MetadataChanges::RETENTION).then_some(r.lock.retention),
        legal_hold: changes.contains(MetadataChanges::LEGAL_HOLD).then_some(r.lock.legal_hold),
    }
}

/// The replica's metadata: the source's user metadata plus the replication stamps, its content
/// headers, storage class (the rule's, else the source's), ACL and Object Lock settings.
fn replica_meta(item: &Item, task: &Task, mut user_metadata: Vec<(String, String)>) -> ReplicaMeta {
    let r = &item.record;
    user_metadata.push(("s3repl-replication-status".into(), "REPLICA".into()));
    user_metadata.push(("s3repl-source-version-id".into(), r.version_id.clone()));
    user_metadata.push(("s3repl-source-last-modified-ms".into(), r.commit_time_ms.to_string()));
    user_metadata.push((SOURCE_SEQ.into(), format!("{}:{}", item.partition, item.seq)));
    if let Some(h) = r.blake3 {
        user_metadata
            .push(("s3repl-blake3".into(), blake3::Hash::from_bytes(h).to_hex().to_string()));
    }
    let settings = replica_settings(r, task);
    ReplicaMeta {
        user_metadata,
        tags: r.tags.clone(),
        content: r.content.clone(),
        storage_class: task.storage_class.map(|sc| sc.as_str().to_owned()),
        acl: settings.acl.cloned(),
        lock: r.lock,
    }
}

/// A replica just written: the version the destination named, and the settings its write did
/// not carry ([`s3repl_io::dest::PutOutcome`]).
type Written = (Option<String>, Pending);

/// Copies a large object part by part: parts are read in order (a failed read is retried
/// alone, with backoff), hashed, and uploaded `part_concurrency` at a time, each holding its
/// budget permit until uploaded. Any failure aborts the upload so no parts stay on the target.
async fn copy_multipart(
    shared: &Shared,
    item: &Item,
    task: &Task,
    dest: &s3repl_io::dest::Destination,
) -> Result<Written, Failure> {
    let r = &item.record;
    let mut user_metadata = r.user_metadata.clone();
    let (codec, total) = if r.sse.kind.is_kms() {
        // Re-encrypted part by part: the source ciphertext is read in ranges and streamed
        // through the re-encryptor; nothing holds the whole object.
        let head =
            shared.source.get_range(&r.bucket, &r.key, &r.version_id, 0..HEADER_LEN as u64).await?;
        let header = StreamHeader::parse(&head)
            .map_err(|_| Failure::Integrity("encrypted stream header"))?;
        let (source_dek, replica_dek, stamps) = kms_keys(shared, r, task)?;
        user_metadata.extend(stamps);
        let re = ReEncryptor::new(&source_dek, &head, &replica_dek, false)
            .map_err(|_| Failure::Integrity("encrypted stream header"))?;
        let codec = PartCodec::Reencrypt {
            stream: Some(Box::new(re)),
            sealed_len: header.sealed_package_len() as u64,
            package_size: u64::from(header.package_size()),
        };
        (codec, header.ciphertext_len(r.size))
    } else {
        (PartCodec::Plain(Box::new(blake3::Hasher::new())), r.size)
    };
    let mut upload = dest.start_multipart(&r.key, &replica_meta(item, task, user_metadata)).await?;
    let result = upload_parts(shared, r, &mut upload, total, codec).await;
    match result {
        Ok(()) => {
            let outcome = upload.complete().await?;
            Ok((outcome.version_id, outcome.pending))
        }
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::error!(key = %r.key, destination = %task.destination, error = %abort, "Aborting a failed multipart copy failed; parts may remain on the target.");
            }
            Err(e)
        }
    }
}

/// One part's bytes as read from the source.
enum Part {
    /// Into a pool buffer the engine lent ([`ObjectSource::read_range_into`]).
    Lent(PartBuf),
    /// As the source returned them ([`ObjectSource::get_range`]).
    Read(bytes::Bytes),
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Lent(buf) => buf.len(),
            Part::Read(bytes) => bytes.len(),
        }
    }

    fn into_bytes(self) -> bytes::Bytes {
        match self {
            Part::Lent(buf) => buf.freeze(),
            Part::Read(bytes) => bytes,
        }
    }
}

/// Reads bytes `range` of `r`: into a pool buffer where the source can fill one and the
/// part's length suits the pool, else as the source returns them.
async fn read_part(
    shared: &Shared,
    r: &VersionRecord,
    range: std::ops::Range<u64>,
) -> Result<Part, SourceError> {
    let len = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
    let lent = if shared.source.reads_into_buffers() { shared.buffers.lend(len) } else { None };
    if let Some(mut buf) = lent {
        // A reused buffer holds an earlier part, perhaps of another object: a source that
        // claims a fill it did not do must not replicate those bytes (it gets zeros instead,
        // which the digest check, where recorded, then fails).
        buf.as_mut_slice().fill(0);
        let source = &shared.source;
        let filled = source
            .read_range_into(&r.bucket, &r.key, &r.version_id, range.clone(), buf.as_mut_slice())
            .await?;
        if filled {
            return Ok(Part::Lent(buf));
        }
    }
    Ok(Part::Read(shared.source.get_range(&r.bucket, &r.key, &r.version_id, range).await?))
}

/// What happens to each part between the source and the destination.
enum PartCodec {
    /// Copied as is, hashed on the way.
    Plain(Box<blake3::Hasher>),
    /// Source ciphertext re-encrypted in place under the replica key, part by part; parts hold
    /// whole packages, so each becomes the same part of the replica stream (the re-encryptor
    /// verifies and hashes the plaintext). `stream` is `None` only while a part is processed.
    Reencrypt { stream: Option<Box<ReEncryptor>>, sealed_len: u64, package_size: u64 },
}

impl PartCodec {
    /// Where the part starting at `start` ends: `part_size` bytes later, or for re-encryption
    /// after as many whole packages as `part_size` holds plaintext (the first part also holds
    /// the stream header).
    fn part_end(&self, start: u64, total: u64, part_size: u64) -> u64 {
        let len = match self {
            PartCodec::Plain(_) => part_size,
            PartCodec::Reencrypt { sealed_len, package_size, .. } => {
                let packages = (part_size / (*package_size).max(1)).max(1);
                let header = if start == 0 { HEADER_LEN as u64 } else { 0 };
                header + packages * sealed_len
            }
        };
        start.saturating_add(len.max(1)).min(total)
    }

    /// Transforms one part (`start` is its offset in the source); `last` also checks the
    /// whole object's digest.
    async fn process(
        &mut self,
        shared: &Shared,
        data: Part,
        start: u64,
        last: bool,
        expected: Option<[u8; 32]>,
    ) -> Result<bytes::Bytes, Failure> {
        match self {
            PartCodec::Plain(hasher) => {
                let data = data.into_bytes();
                hasher.update(&data);
                if last && expected.is_some_and(|h| hasher.finalize().as_bytes() != &h) {
                    return Err(Failure::Integrity("BLAKE3"));
                }
                Ok(data)
            }
            PartCodec::Reencrypt { stream, .. } => {
                let re =
                    stream.take().ok_or(Failure::Task("re-encryption stream already finished"))?;
                let part = match data {
                    // The buffer is the engine's own: nothing else shares it.
                    Part::Lent(buf) => Rewrite::InPlace(buf),
                    Part::Read(bytes) => shared.buffers.rewrite(bytes),
                };
                let (re, out) = tokio::task::spawn_blocking(move || {
                    reencrypt_part(re, part, start == 0, last, expected)
                })
                .await
                .map_err(|_| Failure::Task("the re-encryption task panicked or was cancelled"))??;
                *stream = re;
                Ok(out)
            }
        }
    }
}

/// Re-encrypts one part (see [`PartCodec::Reencrypt`]), in place or into a pool buffer. A
/// `first` part starts with the stream header the re-encryptor was made from, which becomes
/// the replica's. With `last`, checks the whole plaintext's BLAKE3 and gives the re-encryptor
/// up.
fn reencrypt_part(
    mut re: Box<ReEncryptor>,
    part: Rewrite,
    first: bool,
    last: bool,
    expected: Option<[u8; 32]>,
) -> Result<(Option<Box<ReEncryptor>>, bytes::Bytes), Failure> {
    let bad_header = || Failure::Integrity("encrypted stream header");
    let bad_stream = |_| Failure::Integrity("encrypted stream");
    let header_len = |len: usize| if first { HEADER_LEN.min(len) } else { 0 };
    let buf = match part {
        Rewrite::InPlace(mut buf) => {
            let bytes = buf.as_mut_slice();
            let (h, packages) = bytes.split_at_mut(header_len(bytes.len()));
            if first {
                if *h != re.source_header_bytes() {
                    return Err(bad_header());
                }
                h.copy_from_slice(&re.header_bytes());
            }
            re.packages_in_place(packages, last).map_err(bad_stream)?;
            buf
        }
        Rewrite::Into { from, mut to } => {
            let (h, packages) = from.split_at(header_len(from.len()));
            let out = to.as_mut_slice();
            let (out_h, out_packages) = out.split_at_mut(h.len());
            if first {
                if *h != re.source_header_bytes() {
                    return Err(bad_header());
                }
                out_h.copy_from_slice(&re.header_bytes());
            }
            re.packages_into(packages, out_packages, last).map_err(bad_stream)?;
            to
        }
    };
    if !last {
        return Ok((Some(re), buf.freeze()));
    }
    let digest = re.finish().map_err(|_| Failure::Integrity("encrypted stream"))?;
    if expected.is_some_and(|h| digest.whole.as_bytes() != &h) {
        return Err(Failure::Integrity("BLAKE3"));
    }
    Ok((None, buf.freeze()))
}

/// The part size for an upload of `total` bytes: the configured one, or more where that would
/// need more than [`MAX_PARTS`] parts (8 MiB parts stop at 78 GiB; S3 objects reach 5 TiB),
/// in whole MiB plus `slack` (the most a part may fall short of its size: re-encrypted parts
/// end at a package boundary).
fn part_size_for(total: u64, configured: u64, slack: u64) -> u64 {
    let needed = total.div_ceil(MAX_PARTS - 1).saturating_add(slack);
    if configured >= needed {
        return configured.max(1);
    }
    needed.next_multiple_of(1 << 20).saturating_add(slack)
}

async fn upload_parts(
    shared: &Shared,
    r: &VersionRecord,
    upload: &mut s3repl_io::dest::MultipartWrite,
    total: u64,
    mut codec: PartCodec,
) -> Result<(), Failure> {
    let slack = match &codec {
        PartCodec::Plain(_) => 0,
        PartCodec::Reencrypt { package_size, .. } => *package_size,
    };
    let part = part_size_for(total, shared.limits.part_size, slack);
    if part > shared.budget.capacity() {
        // S3's 10,000-part limit forces parts this large; each one takes the whole budget
        // (so the object's parts go one at a time) and memory exceeds the budget by the rest.
        tracing::warn!(key = %r.key, size = total, part_bytes = part, budget_bytes = shared.budget.capacity(), "A part of this object is larger than the byte budget; raise the budget to keep memory within it.");
    }
    let mut in_flight = tokio::task::JoinSet::new();
    let mut start = 0u64;
    while start < total {
        let end = codec.part_end(start, total, part);
        while in_flight.len() >= shared.limits.part_concurrency.max(1) {
            if let Some(done) = in_flight.join_next().await {
                done.map_err(|_| Failure::Task("a part upload task panicked or was cancelled"))??;
            }
        }
        // The part's bytes, held until uploaded (re-encryption rewrites them in place).
        let permit = shared.budget.acquire(end - start).await;
        let mut attempt = 0;
        let data = loop {
            attempt += 1;
            match read_part(shared, r, start..end).await {
                Ok(d) => break d,
                Err(e @ SourceError::Transient(_)) if attempt < shared.limits.max_attempts => {
                    tracing::warn!(key = %r.key, attempt, error = %e, "Reading a part failed; retrying that part.");
                    tokio::time::sleep(backoff(shared, r, attempt)).await;
                }
                Err(e) => {
                    in_flight.abort_all();
                    return Err(e.into());
                }
            }
        };
        if data.len() as u64 != end - start {
            in_flight.abort_all();
            return Err(Failure::Integrity("size"));
        }
        let out = match codec.process(shared, data, start, end == total, r.blake3).await {
            Ok(out) => out,
            Err(e) => {
                in_flight.abort_all();
                return Err(e);
            }
        };
        start = end;
        let put = upload.put_part(out);
        in_flight.spawn(async move {
            let outcome = put.await;
            drop(permit);
            outcome.map_err(Failure::Destination)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done.map_err(|_| Failure::Task("a part upload task panicked or was cancelled"))??;
    }
    Ok(())
}

/// Re-encrypts an SSE-KMS source (our streaming format, its data key wrapped under the source
/// KMS key) under a fresh data key wrapped by the rule's `ReplicaKmsKeyID`, checking the
/// plaintext's BLAKE3 on the way. Returns the replica's bytes and the metadata that lets the
/// destination side unwrap them: the replica key id and the wrapped data key. The replica's
/// wrap is bound to (destination ARN, key, source version id): the destination's own version
/// id is not known before the write.
async fn reencrypt(
    shared: &Shared,
    r: &VersionRecord,
    task: &Task,
    data: bytes::Bytes,
) -> Result<(bytes::Bytes, Vec<(String, String)>), Failure> {
    let header =
        StreamHeader::parse(&data).map_err(|_| Failure::Integrity("encrypted stream header"))?;
    if header.ciphertext_len(r.size) != data.len() as u64 {
        return Err(Failure::Integrity("size"));
    }
    let (source_dek, replica_dek, stamps) = kms_keys(shared, r, task)?;
    let re = ReEncryptor::new(&source_dek, &data, &replica_dek, false)
        .map_err(|_| Failure::Integrity("encrypted stream header"))?;
    let expected = r.blake3;
    let part = shared.buffers.rewrite(data);
    // AES-GCM and BLAKE3 over the whole object are CPU work: keep them off the async workers.
    let (_, sealed) = tokio::task::spawn_blocking(move || {
        reencrypt_part(Box::new(re), part, true, true, expected)
    })
    .await
    .map_err(|_| Failure::Task("the re-encryption task panicked or was cancelled"))??;
    Ok((sealed, stamps))
}

/// The source data key, a fresh replica data key, and the replica's metadata stamps.
type KmsKeys = (DataKey, DataKey, Vec<(String, String)>);

/// The source data key (unwrapped under the source KMS key for this version), a fresh replica
/// data key, and the replica's metadata stamps (key id, wrapped replica key).
fn kms_keys(shared: &Shared, r: &VersionRecord, task: &Task) -> Result<KmsKeys, Failure> {
    let keys = shared
        .keys
        .clone()
        .ok_or(Failure::Kms("SrcKmsKeyInvalidState: no key store configured"))?;
    let wrapped = r
        .sse
        .wrapped_dek
        .as_deref()
        .and_then(|w| WrappedKey::decode(w).ok())
        .ok_or(Failure::Kms("SrcKmsKeyInvalidState: missing or malformed wrapped data key"))?;
    let source_id = ObjectIdentity { bucket: &r.bucket, key: &r.key, version_id: &r.version_id };
    let source_dek = wrapped
        .unwrap_with(keys.as_ref(), source_id)
        .map_err(|_| Failure::Kms("SrcKmsKeyInvalidState"))?;
    let replica_key_id = task
        .replica_kms_key
        .as_deref()
        .ok_or(Failure::Kms("DstKmsKeyNotFound: the rule has no ReplicaKmsKeyID"))?;
    let master = keys.master_key(replica_key_id).map_err(|_| Failure::Kms("DstKmsKeyNotFound"))?;
    let replica_dek =
        DataKey::generate().map_err(|_| Failure::Kms("DstKmsKeyInvalidState: no randomness"))?;
    let replica_id =
        ObjectIdentity { bucket: &task.destination, key: &r.key, version_id: &r.version_id };
    let replica_wrap =
        replica_dek.wrap(&master, replica_id).map_err(|_| Failure::Kms("DstKmsKeyInvalidState"))?;
    let stamps = vec![
        ("s3repl-sse".to_owned(), "aws:kms".to_owned()),
        ("s3repl-kms-key-id".to_owned(), master.id().to_owned()),
        ("s3repl-wrapped-dek".to_owned(), hex(&replica_wrap.encode())),
    ];
    Ok((source_dek, replica_dek, stamps))
}

async fn checkpoints(
    shared: Arc<Shared>,
    dir: PathBuf,
    consumer: String,
    progress: watch::Sender<Vec<u64>>,
    stop: Arc<Stop>,
) -> Result<(), Error> {
    let mut saved: Vec<u64> = progress.borrow().clone();
    let mut failures = 0u32;
    loop {
        let stopping = stop.is_set();
        // On shutdown, wait for the workers to drain before the final save.
        if stopping && Arc::strong_count(&shared) > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let lows: Vec<u64> = lock(&shared.watermarks).iter().map(Watermark::low).collect();
        if lows != saved {
            let cp = Checkpoint { next: (0u32..).zip(lows.iter().copied()).collect() };
            let (d, c) = (dir.clone(), consumer.clone());
            // The replica versions of every record below `lows` were recorded before those
            // records finished: commit them before the checkpoint passes the records. Likewise
            // the replicas themselves, where the destination does not make writes durable on
            // its own (local file systems: one syncfs for everything written since the last).
            // And the log records themselves: this process may have read and finished
            // records the writer had not yet synced (see `sync_records_below`).
            let versions = shared.versions.clone();
            let destinations = shared.destinations.load_full();
            let advanced: Vec<(u32, u64)> = (0u32..)
                .zip(lows.iter().zip(&saved))
                .filter(|(_, (now, before))| now > before)
                .map(|(p, (&now, _))| (p, now))
                .collect();
            let saved_now = tokio::task::spawn_blocking(move || {
                versions.flush()?;
                destinations.sync()?;
                for (p, next) in advanced {
                    sync_records_below(&FileStorage, &d, p, next).map_err(Error::Log)?;
                }
                save_checkpoint(&FileStorage, &d, &c, &cp).map_err(Error::Log)
            })
            .await
            .map_err(|e| task_failed("checkpoint task", dir.clone(), &e))
            .and_then(|r| r);
            match saved_now {
                Ok(()) => failures = 0,
                // Short of descriptors or memory: nothing was lost, the next round tries again
                // (on shutdown, for a few seconds).
                Err(e) if exhausted(&e) && !(stopping && failures >= 50) => {
                    if failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, "Saving the checkpoint failed for want of a resource; retrying.");
                    }
                    failures += 1;
                    if stopping {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        stop.sleep(shared.limits.checkpoint_every).await;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Saving the checkpoint failed; checkpointing stops (replication continues; a restart replays from the last saved checkpoint).");
                    lock(&shared.halts).push(Halt::Checkpoint { error: e.to_string() });
                    return Err(e);
                }
            }
            saved.clone_from(&lows);
            progress.send_replace(lows);
        }
        if stopping {
            // Drained: nothing at or above the checkpoint was admitted by this run, so a
            // restart need not check what this run did. But records below the horizon found
            // at start (a crashed predecessor may have applied them) that the checkpoint has
            // not passed yet keep their check: a clean stop soon after a crash (during the
            // replay settle, say) must not forget it (the crash harness found such records
            // replicated twice).
            let horizon = saved
                .iter()
                .zip(shared.replay_horizon.iter().chain(std::iter::repeat(&0)))
                .map(|(&cp, &h)| cp.max(h));
            let cp = Checkpoint { next: (0u32..).zip(horizon).collect() };
            let path = shared.horizon_path.clone();
            let horizon = tokio::task::spawn_blocking(move || {
                if let Some(d) = path.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                s3repl_io::log::write_atomic(&FileStorage, &path, &cp.encode())
            })
            .await;
            if !matches!(horizon, Ok(Ok(()))) {
                tracing::warn!(
                    "Resetting the replay horizon failed; the next start checks more replicas than needed."
                );
            }
            return Ok(());
        }
        tokio::select! {
            () = stop.sleep(shared.limits.checkpoint_every) => {}
            () = shared.checkpoint_soon.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storage whose `open` and `list` fail with "too many open files" while `fail` is set.
    #[derive(Debug, Clone)]
    struct Starved {
        inner: s3repl_io::log::MemStorage,
        fail: Arc<AtomicBool>,
    }

    impl Starved {
        fn check(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::Acquire) {
                Err(std::io::Error::from_raw_os_error(libc_errno::EMFILE))
            } else {
                Ok(())
            }
        }
    }

    impl s3repl_io::log::Storage for Starved {
        type File = s3repl_io::log::MemFile;
        fn open(&self, path: &std::path::Path, create: bool) -> std::io::Result<Self::File> {
            self.check()?;
            self.inner.open(path, create)
        }
        fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
            self.check()?;
            self.inner.list(dir)
        }
        fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
            self.inner.create_dir_all(dir)
        }
        fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
            self.inner.remove_file(path)
        }
        fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
            self.inner.rename(from, to)
        }
        fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
            self.inner.sync_dir(dir)
        }
    }

    /// Issue 25, finding 4: a partition whose reads fail for want of descriptors goes on once
    /// they are back (it used to halt for good), losing and repeating nothing.
    #[test]
    fn a_reader_short_of_descriptors_retries_instead_of_halting() {
        use s3repl_io::log::{Durability, LogConfig, LogWriter};
        let mem = s3repl_io::log::MemStorage::new();
        let dir = std::path::Path::new("/log");
        // Segments of a few records each.
        let config = LogConfig { partitions: 1, segment_bytes: 256, durability: Durability::None };
        let writer = LogWriter::open_with(mem.clone(), dir, config).unwrap();
        let record = |i: u32| {
            VersionRecord {
                bucket: "b".into(),
                key: format!("k{i}"),
                version_id: format!("v{i}"),
                ..VersionRecord::default()
            }
            .to_bytes()
            .unwrap()
        };
        for i in 0..20 {
            writer.append("b", "k", &record(i)).unwrap();
        }
        let starved = Starved { inner: mem, fail: Arc::new(AtomicBool::new(true)) };
        let (tx, mut rx) = mpsc::channel(64);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (starved.clone(), stop.clone());
        let opts = ReadOptions { backend: s3repl_io::log::Backend::Std, ..ReadOptions::default() };
        let reader = std::thread::spawn(move || {
            read_partition(|at| LogReader::open(s.clone(), dir, 0, at, opts), 0, 0, &st, &tx)
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(rx.try_recv().is_err(), "nothing can be read while starved");
        assert!(!reader.is_finished(), "the reader waits instead of halting");
        starved.fail.store(false, Ordering::Release);
        let mut seqs = Vec::new();
        while seqs.len() < 20 {
            let batch = rx.blocking_recv().unwrap();
            seqs.extend(batch.iter().map(|i| i.seq));
        }
        assert_eq!(seqs.len(), 20);
        // Starved again while the writer starts new segments (which the reader must open).
        starved.fail.store(true, Ordering::Release);
        for i in 20..40 {
            writer.append("b", "k", &record(i)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        // What the open segment holds may arrive; the later segments cannot be opened.
        while let Ok(batch) = rx.try_recv() {
            seqs.extend(batch.iter().map(|i| i.seq));
        }
        assert!(seqs.len() < 40, "the new segments cannot be opened while starved");
        starved.fail.store(false, Ordering::Release);
        while seqs.len() < 40 {
            let batch = rx.blocking_recv().unwrap();
            seqs.extend(batch.iter().map(|i| i.seq));
        }
        assert_eq!(seqs, (0..40).collect::<Vec<u64>>(), "every record once, in order");
        stop.store(true, Ordering::Release);
        assert_eq!(reader.join().unwrap(), None, "no halt");
    }

    #[test]
    fn only_resource_shortages_count_as_passing() {
        let io = |n| s3repl_io::Error::Io {
            op: "open",
            path: PathBuf::new(),
            source: std::io::Error::from_raw_os_error(n),
        };
        assert!(exhausted(&io(libc_errno::EMFILE)));
        assert!(exhausted(&Error::Log(io(libc_errno::ENFILE))));
        assert!(!exhausted(&io(5)), "EIO is not");
        assert!(!exhausted(&Error::Log(io(2))), "ENOENT is not");
    }

    #[tokio::test]
    async fn a_panicking_engine_task_is_recorded_as_a_halt() {
        let halts: Arc<Mutex<Vec<Halt>>> = Arc::default();
        guarded("quiet task", halts.clone(), async {}).await;
        assert!(lock(&halts).is_empty());
        let task = tokio::spawn(guarded("dispatcher", halts.clone(), async {
            tokio::task::yield_now().await;
            panic!("bug {}", 42);
        }));
        task.await.unwrap();
        assert_eq!(*lock(&halts), vec![Halt::Task { task: "dispatcher", error: "bug 42".into() }]);
        assert_eq!(lock(&halts)[0].to_string(), "the dispatcher panicked: bug 42");
    }

    /// How many parts `codec` cuts `total` bytes into with the part size chosen for it.
    fn parts(codec: &PartCodec, total: u64, configured: u64) -> u64 {
        let slack = match codec {
            PartCodec::Plain(_) => 0,
            PartCodec::Reencrypt { package_size, .. } => *package_size,
        };
        let part = part_size_for(total, configured, slack);
        let (mut start, mut n) = (0, 0);
        while start < total {
            start = codec.part_end(start, total, part);
            n += 1;
        }
        n
    }

    #[test]
    fn uploads_never_need_more_parts_than_s3_allows() {
        const GIB: u64 = 1 << 30;
        let plain = PartCodec::Plain(Box::new(blake3::Hasher::new()));
        let sealed = |package_size: u64| PartCodec::Reencrypt {
            stream: None,
            sealed_len: package_size + s3repl_crypto::TAG_LEN as u64,
            package_size,
        };
        for total in [GIB, 80 * GIB, 81 * GIB, 1000 * GIB, 5 << 40, (5 << 40) + 12_345] {
            for codec in [&plain, &sealed(64 << 10), &sealed(1 << 20), &sealed(3 << 20)] {
                let n = parts(codec, total, 8 << 20);
                assert!(n <= MAX_PARTS, "{total} bytes: {n} parts");
            }
        }
        // Objects that fit keep the configured part size.
        assert_eq!(parts(&plain, 78 * GIB, 8 << 20), 78 * GIB / (8 << 20));
        assert_eq!(part_size_for(GIB, 8 << 20, 64 << 10), 8 << 20);
        assert_eq!(part_size_for(64 << 10, 16 << 10, 0), 16 << 10);
    }
}
