//! The engine's builder and handles: [`EngineBuilder::start`] opens what the stages share
//! (checkpoint, replay horizon, version map, failed-operations queue, configurations in force)
//! and starts them — the readers (`read.rs`), the dispatcher (`dispatch.rs`), the copy workers
//! (`worker.rs`), the failed-operations retrier and the checkpoint task (`checkpoint.rs`);
//! [`EngineHandle`] drains them, [`EngineControl`] changes configurations and reads metrics
//! while they run.

use std::collections::HashMap;
use std::hash::RandomState;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use arc_swap::ArcSwap;
use s3repl_io::dest::{Destination, DestinationLimits, DestinationRegistry, UploadJournal};
use s3repl_io::log::ReadOptions;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::Error;
use crate::config::ReplicationConfiguration;
use crate::pipeline::budget::ByteBudget;
use crate::pipeline::checkpoint::checkpoints;
use crate::pipeline::configs::{BucketConfig, Buckets, ConfigStore};
use crate::pipeline::context::{
    CheckpointTrouble, Halt, Housekeeping, Limits, Resolver, Shared, Stop, Trouble, guarded,
    panic_message, part_buffers, resolve_destinations, task_failed,
};
use crate::pipeline::dispatch::{dispatch, load_horizon};
use crate::pipeline::failed::{FailedOperation, FailedQueue};
use crate::pipeline::health::{DestinationHealth, DestinationState, Health};
use crate::pipeline::input::{LogInput, SegmentLog};
use crate::pipeline::metrics::Metrics;
use crate::pipeline::read::{Marks, READ_BATCH, read_partition};
use crate::pipeline::replay::lookup_replica;
use crate::pipeline::scheduler::KeyedScheduler;
use crate::pipeline::source::ObjectSource;
use crate::pipeline::status::StatusSink;
use crate::pipeline::versions::{Replica, VersionMap};
use crate::pipeline::watermark::Watermark;
use crate::pipeline::worker::{Ready, probe_down, retry_failed, work};
use crate::rules::CompiledRules;
use s3repl_crypto::KeyStore;

/// Builds an [`Engine`].
pub struct EngineBuilder {
    log_dir: Option<PathBuf>,
    partitions: u32,
    input: Option<Arc<dyn LogInput>>,
    state_dir: Option<PathBuf>,
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

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("log_dir", &self.log_dir)
            .field("partitions", &self.partitions)
            .field("input", &self.input)
            .field("state_dir", &self.state_dir)
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
            input: None,
            state_dir: None,
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

impl EngineBuilder {
    /// Reads the segment log in `dir` ([`SegmentLog`]), of `partitions` partitions (as created
    /// by the writer; a different count fails [`EngineBuilder::start`]), as the consumer named
    /// by [`EngineBuilder::consumer`], with [`EngineBuilder::read_options`] and
    /// [`EngineBuilder::notifier`]. The engine keeps its state there too, unless
    /// [`EngineBuilder::state_dir`] says otherwise.
    #[must_use]
    pub fn log(mut self, dir: impl Into<PathBuf>, partitions: u32) -> Self {
        self.log_dir = Some(dir.into());
        self.partitions = partitions;
        self
    }

    /// Reads committed-version records from `input` instead of a segment log (see
    /// [`LogInput`]); needs [`EngineBuilder::state_dir`].
    #[must_use]
    pub fn input(mut self, input: Arc<dyn LogInput>) -> Self {
        self.input = Some(input);
        self
    }

    /// Where the engine keeps its own state: the consumer's lock, the replay horizon, the
    /// version map, the failed-operations queue and the journal of open multipart uploads
    /// (`checkpoints/`, `versions/`, `failed/`, `uploads/`, each file named after the
    /// consumer). Defaults to the log directory of [`EngineBuilder::log`].
    #[must_use]
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The consumer name under which the checkpoint and the engine's state are stored.
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
    /// current tokio runtime (outside one: [`Error::Setup`]). Configuration errors are
    /// reported here, not later.
    pub fn start(self) -> Result<EngineHandle, Error> {
        // Its stages are tokio tasks: outside a runtime, say so rather than panic in spawn.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Setup("start() must be called inside a tokio runtime"));
        }
        // Files older than this that look like a killed process's staging files are its.
        let started = std::time::SystemTime::now();
        let (input, dir): (Arc<dyn LogInput>, PathBuf) = match (self.input, self.log_dir) {
            (Some(_), Some(_)) => {
                return Err(Error::Setup("the engine reads either a log directory or an input"));
            }
            (Some(input), None) => {
                let dir = self.state_dir.ok_or_else(|| {
                    Error::Setup("an engine with an input needs a state directory")
                })?;
                (input, dir)
            }
            (None, Some(log)) => {
                let mut segments = SegmentLog::new(log.clone(), self.partitions)
                    .consumer(&self.consumer)
                    .read_options(self.read);
                if let Some(n) = self.notifier {
                    segments = segments.notifier(n);
                }
                (Arc::new(segments), self.state_dir.unwrap_or(log))
            }
            (None, None) => return Err(Error::Setup("the engine needs a log directory")),
        };
        let partitions = input.partitions();
        let source =
            self.source.ok_or_else(|| Error::Setup("the engine needs an object source"))?;
        let status = self.status.ok_or_else(|| Error::Setup("the engine needs a status sink"))?;
        let consumer_lock = lock_consumer(&dir, &self.consumer)?;
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
        let committed = input.committed()?;
        let starts: Vec<u64> =
            (0..partitions as usize).map(|p| committed.get(p).copied().unwrap_or(0)).collect();
        let horizon_path = dir.join("checkpoints").join(format!("{}.horizon", self.consumer));
        let mut replay_horizon = load_horizon(&horizon_path, partitions)?;
        // A crashed run can only have admitted records that were durable when it died, so
        // none at or above today's durable marks: the check stops there. (Its horizon was
        // saved up to 4,096 records ahead of what it admitted.)
        if let Some(marks) = input.durable_marks()? {
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
            _consumer_lock: consumer_lock,
            saved: progress.clone(),
            halts: halts.clone(),
            checkpoint_trouble: Trouble::default(),
            horizon_trouble: Trouble::default(),
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
            journal_writers: tokio::sync::Semaphore::new(super::context::JOURNAL_WRITERS),
            sealing: tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            ),
            buffers: part_buffers(&self.limits),
            watermarks: Mutex::new(starts.iter().map(|&s| Watermark::new(s)).collect()),
            horizon: tokio::sync::Mutex::new(replay_horizon.clone()),
            replay_horizon,
            taken_over: (0..partitions).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
            horizon_path,
            failed,
            health: Health::new(self.limits.breaker_failures),
            limits: self.limits,
            hasher: RandomState::new(),
            key_hasher: foldhash::fast::RandomState::default(),
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
        // channel holds `queue` records' worth of batches, but no more than four times what
        // may be admitted at once (the default ratio): more would only wait. A record read is
        // a record handed out, which a distributed input's revocation waits for and a
        // partition taken over queues behind, so a slow destination with few operations in
        // flight keeps few records read ahead.
        let buffered = self.limits.queue.min(self.limits.max_in_flight.saturating_mul(4)).max(1);
        let batch = buffered.min(READ_BATCH);
        let (records_tx, records_rx) = mpsc::channel(buffered.div_ceil(batch));
        let mut readers = Vec::new();
        for (p, &from) in (0u32..).zip(&starts) {
            let (tx, stop, input) = (records_tx.clone(), stop.clone(), input.clone());
            let (halts, shared) = (halts.clone(), shared.clone());
            let handle = std::thread::Builder::new()
                .name(format!("s3repl-read-{p}"))
                .spawn(move || {
                    // The settle, cut short by a stop.
                    let settled = std::time::Instant::now() + settle;
                    while !stop.is_set() && std::time::Instant::now() < settled {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let open = |at: u64| input.open(p, at);
                    let marks = Marks {
                        skipped: &|from: u64, to: u64| shared.finish_range(p, from, to),
                        taken_over: &|below: u64| shared.check_below(p, below),
                    };
                    let read = std::panic::AssertUnwindSafe(|| {
                        read_partition(open, from, p, batch, &stop, &tx, &marks)
                    });
                    let halt = std::panic::catch_unwind(read).unwrap_or_else(|panic| {
                        let error = panic_message(panic.as_ref());
                        tracing::error!(partition = p, panic = %error, "A log reader panicked.");
                        Some(Halt::Task { task: "log reader", error })
                    });
                    if let Some(halt) = halt {
                        halts.lock().push(halt);
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
        let ready = Arc::new(Ready::new(ready, self.limits.workers.max(1)));
        // The tasks that hold the shared state; the checkpoint task makes its final save once
        // they have all ended.
        let tasks = tokio_util::task::TaskTracker::new();
        tasks.spawn(guarded(
            "failed-operations retrier",
            halts.clone(),
            retry_failed(shared.clone(), input.clone(), scheduler.clone(), stop.clone()),
        ));
        tasks.spawn(guarded(
            "destination prober",
            halts.clone(),
            probe_down(shared.clone(), stop.clone()),
        ));
        tasks.spawn(guarded(
            "dispatcher",
            halts.clone(),
            dispatch(shared.clone(), records_rx, scheduler, stop.clone()),
        ));
        for _ in 0..self.limits.workers.max(1) {
            tasks.spawn(guarded(
                "copy worker",
                halts.clone(),
                work(shared.clone(), ready.clone(), stop.clone()),
            ));
        }
        if !left_open.is_empty() {
            let s = shared.clone();
            tasks.spawn(async move {
                let care = s.care.clone();
                care.abort_left_open(left_open, &s).await;
            });
        }
        let saver = tokio::spawn(checkpoints(
            shared.clone(),
            input,
            progress_tx,
            stop.clone(),
            tasks.clone(),
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

/// Takes the exclusive lock of `consumer` on the log in `dir` (held while the engine lives): a
/// second engine of the same consumer — a second `s3repl run` on the same data directory, say —
/// is refused with [`Error::ConsumerBusy`] before it touches the checkpoint, the version map or
/// the failed-operations queue.
fn lock_consumer(dir: &std::path::Path, consumer: &str) -> Result<std::fs::File, Error> {
    s3repl_io::log::lock_consumer(dir, consumer)?.ok_or_else(|| Error::ConsumerBusy {
        consumer: consumer.to_owned(),
        path: dir.join("checkpoints").join(format!("{consumer}.lock")),
    })
}

/// A running engine. Call [`EngineHandle::shutdown`] to drain it; dropping it only stops the
/// log readers (the rest winds down as the queues empty, without a final checkpoint).
#[derive(Debug)]
pub struct EngineHandle {
    shared: Option<Arc<Shared>>,
    stop: Arc<Stop>,
    readers: Vec<std::thread::JoinHandle<()>>,
    tasks: tokio_util::task::TaskTracker,
    saver: Option<JoinHandle<Result<(), Error>>>,
    progress: watch::Receiver<Vec<u64>>,
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop.set();
        self.tasks.close();
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
        drop(self.shared.take());
        self.stop.set();
        self.tasks.close();
        for r in std::mem::take(&mut self.readers) {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
        // The checkpoint saver makes its final save once every task has ended.
        self.tasks.wait().await;
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
        self.shared.upgrade().ok_or(Error::ShutDown)
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
        let _serial = engine.config_lock.lock();
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
        let since = previous.unwrap_or_else(|| entry.stamp(super::metrics::now_ms()));
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
        let _serial = engine.config_lock.lock();
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
        self.shared.upgrade().map(|s| s.halts.lock().clone()).unwrap_or_default()
    }

    /// Whether saving checkpoints is failing and being retried (a full disk, say), since when
    /// and why; `None` while checkpoints are saved. A health check should report it as
    /// degraded: replication goes on, but a restart would replay everything since the last
    /// saved checkpoint.
    pub fn checkpoint_trouble(&self) -> Option<CheckpointTrouble> {
        let s = self.shared.upgrade()?;
        let (checkpoint, horizon) = (s.checkpoint_trouble.get(), s.horizon_trouble.get());
        // The longer-lasting of the two.
        match (checkpoint, horizon) {
            (Some(c), Some(h)) => Some(if h.since_ms < c.since_ms { h } else { c }),
            (c, h) => c.or(h),
        }
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
    /// the background (or exhausted after too many rounds), and operations parked while their
    /// destination is down. Each is read from the journal: with a large queue, prefer
    /// [`EngineControl::failed_operations_of`].
    pub fn failed_operations(&self) -> Vec<FailedOperation> {
        self.shared.upgrade().map(|s| s.failed.list()).unwrap_or_default()
    }

    /// How many queued operations source bucket `bucket` has, and the oldest `limit` of them
    /// (only those are read from the journal).
    pub fn failed_operations_of(
        &self,
        bucket: &str,
        limit: usize,
    ) -> (usize, Vec<FailedOperation>) {
        self.shared.upgrade().map(|s| s.failed.list_of(Some(bucket), limit)).unwrap_or_default()
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
        // The key's partition is the input's business: ask each (a map lookup apiece).
        let partitions = u32::try_from(shared.watermarks.lock().len()).unwrap_or(u32::MAX);
        for partition in 0..partitions {
            let replica = Replica {
                partition,
                destination: destination.into(),
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                source_version: version_id.to_owned(),
            };
            if let Some(v) = lookup_replica(&shared, replica).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Each destination's health as an operator needs it: up, down since when, or being
    /// probed; what waits for it in the failed-operations queue (parked while it is down, or
    /// FAILED), and the oldest waiting version's commit time. Every registered destination,
    /// and any other with work queued.
    pub fn destinations(&self) -> Vec<DestinationHealth> {
        let Some(s) = self.shared.upgrade() else { return Vec::new() };
        let mut waiting = s.failed.by_destination();
        let mut out: Vec<DestinationHealth> = s
            .health
            .states()
            .into_iter()
            .map(|(arn, state, consecutive_failures, last_error)| {
                let w = waiting.remove(arn.as_ref()).unwrap_or_default();
                DestinationHealth {
                    destination: arn.to_string(),
                    state,
                    consecutive_failures,
                    last_error,
                    parked_ops: w.parked_ops,
                    parked_bytes: w.parked_bytes,
                    failed_ops: w.failed_ops,
                    oldest_waiting_commit_ms: w.oldest_commit_ms,
                    limits: DestinationLimits::default(),
                }
            })
            .collect();
        // Registered destinations that never failed, and destinations that only have queued
        // work (no longer configured, or not sent anything since the start).
        for d in s.destinations.load().iter() {
            if !out.iter().any(|h| h.destination == d.arn()) {
                waiting.entry(d.arn().to_owned()).or_default();
            }
        }
        out.extend(waiting.into_iter().map(|(destination, w)| DestinationHealth {
            destination,
            state: DestinationState::Up,
            consecutive_failures: 0,
            last_error: None,
            parked_ops: w.parked_ops,
            parked_bytes: w.parked_bytes,
            failed_ops: w.failed_ops,
            oldest_waiting_commit_ms: w.oldest_commit_ms,
            limits: DestinationLimits::default(),
        }));
        let registry = s.destinations.load();
        for h in &mut out {
            if let Some(d) = registry.get(&h.destination) {
                h.limits = d.limits();
            }
        }
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        out
    }

    /// Sets what destination `arn` may be sent from now on (bytes per second, requests at
    /// once), taking effect for requests not yet sent; false when no such destination is
    /// registered.
    pub fn set_destination_limits(&self, arn: &str, limits: DestinationLimits) -> bool {
        let Some(s) = self.shared.upgrade() else { return false };
        let registry = s.destinations.load();
        let Some(d) = registry.get(arn) else { return false };
        d.set_limits(limits);
        tracing::info!(destination = arn, bytes_per_second = ?limits.bytes_per_second, max_requests = ?limits.max_requests, "Destination limits set.");
        true
    }

    /// Re-arms every queued failed operation, exhausted ones included, for an immediate retry
    /// (after fixing what made them fail); returns how many.
    pub fn retry_failed_now(&self) -> usize {
        self.shared.upgrade().map_or(0, |s| s.failed.retry_now(super::metrics::now_ms()))
    }
}
