//! `s3repl run`: the standalone replicator. Reads the committed-version log under the data
//! directory (appended by the storage server, `s3repl log gen` or `s3repl loadtest`), replicates
//! what the installed configurations select, and serves the S3-compatible admin endpoint where
//! `aws s3api put-bucket-replication` installs them. Structured logs with `tracing`; SIGINT or
//! SIGTERM drains gracefully (final checkpoint).

pub(crate) mod admin;
mod digest;
pub(crate) mod events;
pub(crate) mod intake;
mod intake_kafka;
mod listener;
mod overrides;
pub(crate) mod settings;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use s3repl::crypto::FileKeyring;
use s3repl::dest::{Destination, DestinationRegistry};
use s3repl::log::{FileStorage, LogConfig, LogWriter, read_partitions};
use s3repl::pipeline::{Engine, EngineHandle, LocalVersionStore, ObjectSource, ObjectStoreSource};

use admin::{Admin, RunStatus};
use s3repl::sigv4::Credentials;
use settings::{Settings, arn_bucket};

use crate::error::CliError;

/// Arguments of `s3repl run`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The configuration file (TOML). Without one, embedded defaults: local source and
    /// destinations under the data directory, admin endpoint on 127.0.0.1:9080.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory (overrides the file's `data_dir`; default `./s3repl-data`): the log,
    /// the source store, persisted configurations, local replicas.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The admin listener (overrides `[admin] listen`), e.g. `127.0.0.1:9080`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub(crate) fn run(args: &Args) -> ExitCode {
    init_tracing(args.log_format);
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the async runtime.");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        // Once, through the log (text or JSON, on stderr like everything else).
        Err(e) => {
            tracing::error!(error = %e, "s3repl run failed.");
            ExitCode::from(2)
        }
    }
}

/// At most two glibc malloc arenas (glibc's default is eight per core), unless the operator
/// set `MALLOC_ARENA_MAX`. Memory freed after a drain stayed spread over a dozen per-thread
/// arenas, where `malloc_trim` could not give most of it back: in paired 3-minute outages
/// (`scripts/outage.sh --warmup 60 --outage 180 --after 60`, 55,000–58,000 parked) RSS went
/// from 48 MiB before to 75 and 78 at the peak and 68 and 74 after the drain by default, and
/// from 47 and 50 to 68 and 67 and then 60 and 61 with two arenas; `s3repl bench
/// --destination memory` showed no CPU cost (14.6–16.3 µs per version by default, 13.0–15.2
/// with two, alternated). Set before the runtime starts its threads.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` takes two integers and only changes the allocator's settings;
        // called before any other thread of this process allocates.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (stderr on a full disk) is dropped: reporting it
        // would be another write to stderr, with `eprintln!`, which panics when it fails — in
        // whichever task logged (an admin request, a replication worker).
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Settings from the file (or defaults) with the command-line overrides applied.
fn settings(args: &Args) -> Result<Settings, CliError> {
    let mut s = match &args.config {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    if let Some(d) = &args.data_dir {
        s.data_dir = Some(d.clone());
    }
    if let Some(l) = args.admin_listen {
        s.admin.listen = Some(l);
    }
    Ok(s)
}

fn credentials(s: &Settings) -> Result<Credentials, CliError> {
    let mut c = Credentials::default();
    for k in &s.admin.credentials {
        c.insert(&k.access_key_id, &k.secret_access_key);
    }
    if c.is_empty() {
        match (
            std::env::var("S3REPL_ADMIN_ACCESS_KEY_ID"),
            std::env::var("S3REPL_ADMIN_SECRET_ACCESS_KEY"),
        ) {
            (Ok(k), Ok(v)) if !k.is_empty() && !v.is_empty() => c.insert(&k, &v),
            _ if s.admin.listen.is_some() => {
                return Err(CliError::settings(
                    "the admin endpoint needs credentials: [admin] credentials in the config file, or S3REPL_ADMIN_ACCESS_KEY_ID and S3REPL_ADMIN_SECRET_ACCESS_KEY",
                ));
            }
            _ => {}
        }
    }
    Ok(c)
}

fn source(s: &Settings) -> Result<Arc<dyn ObjectSource>, CliError> {
    match s.source.kind.as_str() {
        "local" => {
            let root = s.source.root.clone().unwrap_or_else(|| s.data_dir().join("source"));
            Ok(Arc::new(LocalVersionStore::new(root)))
        }
        "s3" => {
            if s.source.buckets.is_empty() {
                return Err(CliError::settings(
                    "[source] kind = \"s3\" needs the list of source buckets",
                ));
            }
            let mut src = ObjectStoreSource::new();
            for b in &s.source.buckets {
                let o = s.source.s3.options(b)?;
                src = src
                    .s3_bucket(b, &o)
                    .map_err(|e| CliError::settings(format!("source bucket {b}: {e}")))?;
            }
            Ok(Arc::new(src))
        }
        k => Err(CliError::settings(format!("[source] kind must be local or s3, not {k:?}"))),
    }
}

/// The `[log] kind = "kafka"` settings.
fn kafka_settings(s: &Settings) -> Result<s3repl::pipeline::KafkaSettings, CliError> {
    let need = |v: &Option<String>, what: &str| {
        v.clone().ok_or_else(|| CliError::settings(format!("[log] kind = \"kafka\" needs {what}")))
    };
    let mut k = s3repl::pipeline::KafkaSettings::new(
        &need(&s.log.brokers, "brokers")?,
        &need(&s.log.topic, "topic")?,
        &s.log.group,
    );
    k.drain_timeout = std::time::Duration::from_secs(s.log.drain_timeout_s);
    k.commit_timeout = std::time::Duration::from_secs(s.log.commit_timeout_s.max(1));
    k.extra = s.log.kafka.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
    Ok(k)
}

/// Opens (or creates) the log and returns its partition count.
fn log_partitions(s: &Settings) -> Result<u32, CliError> {
    let dir = s.log_dir();
    if let Ok(Some(p)) = read_partitions(&FileStorage, &dir) {
        return Ok(p);
    }
    // Create an empty log so the server (or `s3repl log gen`) can append to it.
    let w = LogWriter::open(
        &dir,
        LogConfig { partitions: s.log.partitions.max(1), ..LogConfig::default() },
    )?;
    drop(w);
    read_partitions(&FileStorage, &dir)?.ok_or_else(|| {
        CliError::internal(format!("the log just created at {} has no metadata", dir.display()))
    })
}

fn start_engine(s: &Settings, status: Arc<RunStatus>) -> Result<EngineHandle, CliError> {
    let mut registry = DestinationRegistry::new();
    for d in s.build_destinations()? {
        registry.insert(d);
    }
    let mut builder = match s.log.kind.as_str() {
        "local" => {
            let partitions = log_partitions(s)?;
            Engine::builder().log(s.log_dir(), partitions).read_options(s.read_options()?)
        }
        "kafka" => {
            let input = s3repl::pipeline::KafkaLog::new(&kafka_settings(s)?)?;
            // Per-process state (version map, failed operations, uploads) beside the data.
            Engine::builder().input(Arc::new(input)).state_dir(s.data_dir().join("state"))
        }
        other => {
            return Err(CliError::settings(format!(
                "[log] kind must be local or kafka, not {other:?}"
            )));
        }
    };
    builder = builder
        .consumer(&s.log.consumer)
        // Persisted configurations are installed before the first record is read.
        .config_dir(s.data_dir().join("replication"))
        .source(source(s)?)
        .destinations(registry)
        .status(status)
        .limits(s.limits()?);
    if let Some(path) = &s.keyring {
        let ring = FileKeyring::open(path)
            .map_err(|e| CliError::settings(format!("keyring {}: {e}", path.display())))?;
        builder = builder.keys(Arc::new(ring));
    }
    if s.destinations.is_empty() {
        // Embedded default: any destination a configuration names becomes a local directory.
        let root = s.data_dir().join("destinations");
        builder = builder.destination_resolver(move |arn| {
            let bucket = arn_bucket(arn)?;
            match Destination::local(arn, &root.join(bucket)) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(arn, error = %e, "Cannot create a local destination.");
                    None
                }
            }
        });
    }
    Ok(builder.start()?)
}

/// Starts the engine and the admin endpoint's request handler (on the current runtime).
pub(crate) fn start(
    s: &Settings,
    credentials: Credentials,
    body_timeout: std::time::Duration,
) -> Result<(EngineHandle, Arc<Admin>), CliError> {
    if let Some(a) = &s.admin.account
        && !(a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(CliError::settings(format!(
            "[admin] account must be a 12-digit AWS account id, not {a:?}"
        )));
    }
    let status = Arc::new(RunStatus::default());
    let engine = start_engine(s, status.clone())?;
    let taking_events = s.intake.webhook || s.intake.kafka_topic.is_some();
    let intake = if taking_events { Some(Arc::new(open_intake(s)?)) } else { None };
    let event_topic = match (&intake, &s.intake.kafka_topic) {
        (Some(intake), Some(topic)) => {
            let brokers =
                s.intake.kafka_brokers.clone().ok_or_else(|| {
                    CliError::settings("[intake] kafka_topic needs kafka_brokers")
                })?;
            let settings = intake_kafka::TopicSettings {
                brokers,
                topic: topic.clone(),
                group: s.intake.kafka_group.clone().unwrap_or_else(|| "s3repl-intake".into()),
                extra: s.intake.kafka.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            };
            Some(intake_kafka::start(intake.clone(), &settings, tokio::runtime::Handle::current())?)
        }
        _ => None,
    };
    // Limits set while running before (PUT /-/limits) apply again, unless the settings' own
    // limits for that destination changed since.
    let configured = s
        .destinations
        .iter()
        .map(|d| Ok((d.arn.clone(), d.limits()?)))
        .collect::<Result<std::collections::HashMap<_, _>, CliError>>()?;
    let (limit_overrides, apply) =
        overrides::LimitOverrides::load(s.data_dir().join("state").join("limits.json"), configured);
    for (arn, limits) in apply {
        engine.control().set_destination_limits(&arn, limits);
    }
    let admin = Arc::new(Admin {
        engine: engine.control(),
        credentials,
        sources: (!s.source.buckets.is_empty())
            .then(|| s.source.buckets.iter().cloned().collect::<HashSet<_>>()),
        destinations: s.known_destinations(),
        status,
        body_budget: tokio::sync::Semaphore::new(admin::BODY_BUDGET / 1024),
        body_timeout,
        refusals: listener::Throttle::new(5),
        request_ids: AtomicU64::new(1),
        account: s.admin.account.clone(),
        intake,
        webhook: s.intake.webhook,
        event_topic,
        backfills: parking_lot::Mutex::new(std::collections::HashMap::new()),
        limit_overrides,
    });
    // Backfills a stop cut short resume where they were.
    if let Some(intake) = &admin.intake {
        for bucket in engine.buckets() {
            if intake.backfill_position(&bucket, "").ok().flatten().is_some()
                && let Some(config) = engine.control().config(&bucket)
            {
                admin.start_backfill(&bucket, &config, false);
            }
        }
    }
    Ok((engine, admin))
}

/// The webhook intake: a reader of each source bucket, and a writer of the log the engine
/// reads (this process becomes the log's one writer).
pub(crate) fn open_intake(s: &Settings) -> Result<intake::Intake, CliError> {
    if s.source.kind != "s3" || s.source.buckets.is_empty() {
        return Err(CliError::settings(
            "[intake] reads each event's version from its bucket: it needs [source] kind = \"s3\" and the list of source buckets",
        ));
    }
    let mut readers = std::collections::HashMap::new();
    for b in &s.source.buckets {
        readers.insert(
            b.clone(),
            Arc::new(s3repl::dest::S3VersionReader::new(&s.source.s3.options(b)?)),
        );
    }
    let (sink, log_dir) = if s.log.kind == "kafka" {
        (intake::Sink::Kafka(s3repl::pipeline::KafkaWriter::new(&kafka_settings(s)?)?), None)
    } else {
        let config = LogConfig { partitions: log_partitions(s)?, ..LogConfig::default() };
        let writer = LogWriter::open(&s.log_dir(), config).map_err(|e| {
            CliError::settings(format!(
                "[intake] webhook = true makes this process the log's writer, and the log at {} cannot be opened for writing: {e}",
                s.log_dir().display()
            ))
        })?;
        (intake::Sink::Local(intake::LocalLog::new(writer)), Some(s.log_dir()))
    };
    intake::Intake::open(
        readers,
        sink,
        &s.data_dir().join("state"),
        log_dir.as_deref(),
        s.intake.token()?,
        std::time::Duration::from_millis(s.intake.marks_durable_every_ms.unwrap_or(1000)),
    )
}

/// The longest a stopping replicator waits for admin requests in progress to finish.
const ADMIN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve(args: &Args) -> Result<(), CliError> {
    let s = settings(args)?;
    let credentials = credentials(&s)?;
    let data_dir = s.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(CliError::file(&data_dir))?;
    // The admin listener may take a quarter of the descriptors at most; the rest are the log
    // readers', the sources' and the destinations'.
    let descriptors = listener::raise_descriptor_limit();
    let (header_timeout, body_timeout, idle_timeout) = s.admin.timeouts()?;
    let limits = listener::ListenerLimits {
        max_connections: listener::connection_bound(s.admin.max_connections, descriptors),
        header_timeout,
        idle_timeout,
    };
    // Bound before the engine starts (a port in use is reported before anything else
    // happens), announced once it has.
    let listener = match s.admin.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::settings(format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    let (engine, admin) = start(&s, credentials, body_timeout)?;
    let returner = tokio::spawn(return_freed_memory());
    let restored = engine.buckets().len();
    tracing::info!(data_dir = %data_dir.display(), log = %s.log_dir().display(), configurations = restored, "s3repl replicator started.");
    if let Some(l) = &listener {
        let bound = l.local_addr().map_err(|e| CliError::internal(e.to_string()))?;
        tracing::info!(listen = %bound, max_connections = limits.max_connections, descriptors, "Admin endpoint listening.");
        // A machine-readable line for scripts that asked for port 0.
        println!("admin endpoint: http://{bound}");
    }
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // `admin` itself lives until the end: without a listener it still holds the event topic's
    // consumer and the background backfills.
    let serving = listener
        .map(|l| tokio::spawn(listener::serve(l, admin.clone(), limits, stopping, ADMIN_DRAIN)));
    let signal = shutdown_signal().await;
    tracing::info!(signal, "Shutting down: finishing admin requests, then in-flight replication.");
    // Requests in progress (a bucket event's delivery among them) are answered first.
    let _ = stop.send(true);
    if let Some(serving) = serving {
        let _ = serving.await;
    }
    returner.abort();
    drop(admin);
    engine.shutdown().await?;
    tracing::info!("s3repl replicator stopped; checkpoint saved.");
    Ok(())
}

/// Gives freed heap back to the system. glibc returns on its own only what lies at the top of
/// an arena; what is freed below it (a drained outage's parked operations and the drain's
/// work, a burst of large copies) stays resident, and the process would stay near its peak.
/// Every 5 s, while the allocator holds at least [`TRIM_FREE`] of heap free (`mallinfo2`),
/// `malloc_trim` gives back the whole pages among it. Free chunks come apart as their
/// neighbours are freed, so a page that could not be given back at one trim often can be at a
/// later one: trimming only as a drain ended, RSS after a 3-minute outage (`scripts/outage.sh
/// --warmup 60 --outage 180 --after 60`) was 49.1 MiB against 40.8 before, with the heap in
/// use lower than before (22.6 MB against 23.5), and one `malloc_trim` later (through gdb)
/// took 4.9 MiB back. Steady load keeps far less than [`TRIM_FREE`] free (1–2 MB measured),
/// so a trim (a walk over the allocator's free lists; its cost was not measured on its own)
/// runs only after such bursts.
async fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        // SAFETY: `mallinfo2` takes no arguments and only reads the allocator's counters.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free >= TRIM_FREE {
            // SAFETY: `malloc_trim` takes no pointers and only releases free memory.
            unsafe {
                libc::malloc_trim(0);
            }
            tracing::trace!(free_heap_bytes = free, "Returned freed heap to the system.");
        }
    }
}

/// Free heap (counted whether its pages were given back or not) above which
/// [`return_freed_memory`] trims.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_FREE: usize = 8 << 20;

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot watch SIGTERM; only SIGINT stops the replicator.");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
