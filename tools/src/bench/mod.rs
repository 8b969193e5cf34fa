//! `s3repl bench`: the benchmark runner. Embedded defaults (temporary log, synthetic source,
//! local or in-memory destinations), one command, a table and a JSON report, the latency
//! histogram as an `HdrHistogram` `.hgrm` file and an SVG plot.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use log::BenchLog;
use object_store::ObjectStoreExt as _;
use s3repl::dest::{Destination, DestinationRegistry, S3Options};
use s3repl::pipeline::{
    Limits, ObjectSource, ObjectStoreSource, ReplicationStatus, StatusSink, StatusUpdate,
};
use s3repl::record::VersionRecord;
use serde_json::json;

mod log;
mod measure;
mod source;

use crate::error::CliError;

pub(crate) use measure::{CpuUsage, peak_rss, reset_peak_rss};
use measure::{fs_create_rate, svg};
pub(crate) use source::{SyntheticSource, pick_size};

/// Arguments of `s3repl bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Object versions to replicate (default 20,000; with `--duration`, unlimited).
    #[arg(long)]
    objects: Option<u64>,
    /// Stop appending after this many seconds (then drain).
    #[arg(long)]
    duration: Option<f64>,
    /// Distinct keys the versions are spread over (default: every version its own key).
    #[arg(long)]
    keys: Option<u64>,
    /// Zipf exponent of the key popularity with `--keys` (0 = uniform; 1.1 = a few hot keys).
    #[arg(long, default_value_t = 0.0)]
    key_skew: f64,
    /// Pad keys to this many bytes.
    #[arg(long, default_value_t = 0)]
    key_length: usize,
    /// Tags per version.
    #[arg(long, default_value_t = 0)]
    tags: u32,
    /// Extra prefix rules besides the catch-all per destination (at most 1,000 rules in all).
    #[arg(long, default_value_t = 0)]
    rules: u32,
    /// Percent of versions that are SSE-KMS objects (re-encrypted under the replica key).
    #[arg(long, default_value_t = 0.0)]
    sse_kms: f64,
    /// Object size, or a weighted distribution such as `4KiB:90,1MiB:9,64MiB:1`.
    #[arg(long, default_value = "4KiB")]
    size: String,
    /// Where replicas go: `local` (files in a temporary directory), `memory`, or `s3` (buckets
    /// on `--s3-endpoint`: `--s3-bucket`, or `--s3-bucket`-N with several destinations).
    #[arg(long, default_value = "local")]
    destination: String,
    /// S3-compatible endpoint for `--destination s3` (and `--s3-source-bucket`).
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Destination bucket (prefix) on the endpoint.
    #[arg(long, default_value = "s3repl-bench")]
    s3_bucket: String,
    /// Read the objects from this versioned bucket on the endpoint instead of a synthetic
    /// source: they are uploaded there first (not timed), then replicated by version id.
    #[arg(long)]
    s3_source_bucket: Option<String>,
    /// With --s3-source-bucket: read and write every object's bytes through the engine instead
    /// of copying server-side (`CopyObject`), which destinations on the source's endpoint do.
    #[arg(long)]
    no_server_side_copy: bool,
    /// Region for request signing.
    #[arg(long, default_value = "us-east-1")]
    s3_region: String,
    /// Number of destinations (a catch-all rule per destination).
    #[arg(long, default_value_t = 1)]
    destinations: u32,
    /// Log partitions.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// The log the versions go through: `local` (the segment log) or `kafka` (a topic read by
    /// a consumer group: on `--kafka-brokers`, else on librdkafka's mock cluster in this
    /// process).
    #[arg(long, default_value = "local")]
    log: String,
    /// Kafka brokers for `--log kafka`, with `--kafka-topic`: a fresh topic of `--partitions`
    /// partitions (read from its start by a new consumer group).
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// The topic on `--kafka-brokers`.
    #[arg(long, default_value = "s3repl-bench")]
    kafka_topic: String,
    /// In-flight byte budget (e.g. `256MiB`).
    #[arg(long, default_value = "256MiB")]
    budget: String,
    /// Copy workers.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency histogram (`HdrHistogram` percentile distribution) to this file.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write an SVG plot of the latency distribution to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Keep the temporary directory (log and local replicas) for inspection.
    #[arg(long)]
    keep: bool,
}

/// Parses `4KiB`, `1MiB`, `64MiB`, `512`, `2GiB`, `10kB`.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} overflows"))
}

/// `SIZE` or `SIZE:WEIGHT,SIZE:WEIGHT,...` → (size, weight) pairs.
pub(crate) fn parse_distribution(s: &str) -> Result<Vec<(u64, u64)>, String> {
    s.split(',')
        .map(|part| match part.split_once(':') {
            Some((size, w)) => Ok((
                parse_bytes(size)?,
                w.trim().parse().map_err(|_| format!("bad weight in {part:?}"))?,
            )),
            None => Ok((parse_bytes(part)?, 1)),
        })
        .collect::<Result<Vec<_>, String>>()
        .and_then(|d| {
            if d.iter().all(|(_, w)| *w == 0) { Err("all weights are 0".into()) } else { Ok(d) }
        })
}

fn s3_options(a: &Args, bucket: &str) -> Result<S3Options, CliError> {
    let env = |k: &str| {
        std::env::var(k).map_err(|_| CliError::settings(format!("{k} is not set (S3 credentials)")))
    };
    Ok(S3Options {
        endpoint: a
            .s3_endpoint
            .clone()
            .ok_or_else(|| CliError::settings("--destination s3 needs --s3-endpoint"))?,
        bucket: bucket.to_owned(),
        region: a.s3_region.clone(),
        access_key_id: env("AWS_ACCESS_KEY_ID")?,
        secret_access_key: env("AWS_SECRET_ACCESS_KEY")?,
        allow_http: true,
        virtual_hosted_style: false,
    })
}

fn s3_store(a: &Args, bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>, CliError> {
    Ok(s3repl::dest::s3_store(&s3_options(a, bucket)?)?)
}

/// Uploads the benchmark's objects to a versioned source bucket, 32 at a time; returns the
/// version id the server minted for each.
async fn upload_sources(
    store: Arc<dyn object_store::ObjectStore>,
    workload: &crate::workload::Workload,
    objects: u64,
    dist: &[(u64, u64)],
    total_weight: u64,
    max_size: u64,
) -> Result<Vec<String>, CliError> {
    let source = SyntheticSource::new(max_size);
    let count = usize::try_from(objects).map_err(|e| CliError::settings(e.to_string()))?;
    let mut versions = vec![String::new(); count];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..objects {
        if tasks.len() >= 32
            && let Some(done) = tasks.join_next().await
        {
            let (i, v): (u64, String) = done.map_err(|e| CliError::internal(e.to_string()))??;
            if let Some(slot) = versions.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
                *slot = v;
            }
        }
        let size = pick_size(dist, total_weight, i);
        let body = source
            .bytes(&format!("v-{size}"), None)
            .map_err(|e| CliError::internal(e.to_string()))?;
        let path = object_store::path::Path::from(workload.key(i));
        let store = store.clone();
        tasks.spawn(async move {
            let r = store.put(&path, body.into()).await?;
            let v = r.version.ok_or_else(|| {
                CliError::remote("the source bucket is not versioned (no version id)")
            })?;
            Ok::<_, CliError>((i, v))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, v) = done.map_err(|e| CliError::internal(e.to_string()))??;
        if let Some(slot) = versions.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
            *slot = v;
        }
    }
    Ok(versions)
}

/// Records commit → replicated latency for each version once every destination completed.
///
/// It is the measuring instrument, called on the engine's threads for every status change, so it
/// keeps its cost down: one lock for the pending versions and the histogram together, a fast
/// (non-cryptographic) hash of the version ids, and atomic counters the append loop reads.
struct LatencySink {
    state: Mutex<Latencies>,
    done: AtomicU64,
    failed: AtomicU64,
    progress: ProgressBar,
}

/// What [`LatencySink`] guards with its one lock.
struct Latencies {
    /// Version id → (commit time, destinations still to complete).
    committed: HashMap<String, (Instant, u32), foldhash::fast::RandomState>,
    hist: Histogram<u64>,
}

impl LatencySink {
    fn new(progress: ProgressBar) -> Result<Self, CliError> {
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .map_err(|e| CliError::internal(e.to_string()))?;
        Ok(LatencySink {
            state: Mutex::new(Latencies { committed: HashMap::default(), hist }),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            progress,
        })
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, Latencies> {
        self.state.lock()
    }

    /// Versions whose every destination completed.
    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Failures reported (one per version and destination).
    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl StatusSink for LatencySink {
    fn report(&self, u: &StatusUpdate<'_>) {
        match u.status {
            ReplicationStatus::Pending => {}
            ReplicationStatus::Failed { reason, detail } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.progress
                    .println(format!("FAILED {} {}: {reason} ({detail})", u.key, u.destination));
            }
            ReplicationStatus::Completed => {
                {
                    let mut state = self.state();
                    let Some((at, left)) = state.committed.get_mut(u.version_id) else { return };
                    *left -= 1;
                    if *left > 0 {
                        return;
                    }
                    let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                    state.committed.remove(u.version_id);
                    state.hist.saturating_record(us);
                }
                self.done.fetch_add(1, Ordering::Relaxed);
                self.progress.inc(1);
            }
        }
    }
}

/// Runs the benchmark.
pub(crate) fn run(a: &Args) -> ExitCode {
    match run_inner(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3repl bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// A run's temporary directory (log, local replicas), removed when dropped unless kept.
pub(crate) struct RemoveOnDrop {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn run_inner(a: &Args) -> Result<(), CliError> {
    let dist = parse_distribution(&a.size).map_err(CliError::Settings)?;
    let objects = match (a.objects, a.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => 20_000,
    };
    let deadline = match a.duration {
        Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
        Some(_) => {
            return Err(CliError::settings("--duration must be a positive number of seconds"));
        }
        None => None,
    };
    let workload =
        crate::workload::Workload::new(a.keys, a.key_skew, a.key_length, a.tags, a.sse_kms)?;
    let kms = if workload.uses_kms() {
        if a.s3_source_bucket.is_some() {
            return Err(CliError::settings(
                "--sse-kms needs the synthetic source (not --s3-source-bucket)",
            ));
        }
        Some(Arc::new(crate::workload::Kms::new()?))
    } else {
        None
    };
    let budget = parse_bytes(&a.budget).map_err(CliError::Settings)?;
    let max_size = dist.iter().map(|(s, _)| *s).max().unwrap_or(0);
    let total_weight: u64 = dist.iter().map(|(_, w)| *w).sum();
    let dir = std::env::temp_dir().join(format!("s3repl-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Removed however the run ends (an error below returns early), unless `--keep`.
    let _cleanup = RemoveOnDrop { path: dir.clone(), keep: a.keep };
    let mut registry = DestinationRegistry::new();
    for d in 0..a.destinations {
        let arn = format!("arn:aws:s3:::bench-dst-{d}");
        let target = match a.destination.as_str() {
            "memory" => Destination::in_memory(&arn),
            "local" => Destination::local(&arn, &dir.join(format!("dst-{d}")))?,
            "s3" => {
                let bucket = if a.destinations == 1 {
                    a.s3_bucket.clone()
                } else {
                    format!("{}-{d}", a.s3_bucket)
                };
                let d = Destination::s3(&arn, &s3_options(a, &bucket)?)?;
                if a.no_server_side_copy { d.without_server_side_copy() } else { d }
            }
            other => {
                return Err(CliError::settings(format!(
                    "destination kind {other:?} is not supported (local, memory, s3)"
                )));
            }
        };
        registry.insert(target);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))?;
    // With an S3 source the objects are uploaded first (untimed); their version ids follow.
    let (source, uploaded): (Arc<dyn ObjectSource>, Option<Vec<String>>) = match &a.s3_source_bucket
    {
        None => {
            let mut synthetic = SyntheticSource::new(max_size);
            synthetic.kms.clone_from(&kms);
            (Arc::new(synthetic), None)
        }
        Some(bucket) => {
            let store = s3_store(a, bucket)?;
            let versions = rt.block_on(upload_sources(
                store.clone(),
                &workload,
                objects,
                &dist,
                total_weight,
                max_size,
            ))?;
            let source =
                ObjectStoreSource::new().s3_bucket("bench-src", &s3_options(a, bucket)?)?;
            (Arc::new(source), Some(versions))
        }
    };
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(if objects == u64::MAX { 0 } else { objects });
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} versions {per_sec} eta {eta}",
            )
            .map_err(|e| CliError::internal(e.to_string()))?
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let sink = Arc::new(LatencySink::new(progress.clone())?);
    let log_dir = dir.join("log");
    let log = BenchLog::open(a, &log_dir)?;
    let limits = Limits { workers: a.workers, budget_bytes: budget, ..Limits::default() };
    // The SSE-KMS baseline: this machine's decrypt + encrypt + BLAKE3 rate, measured now and
    // again after the run, each time over about as many bytes as the run re-encrypts.
    let mean_size = dist.iter().map(|(s, w)| *s as f64 * *w as f64).sum::<f64>()
        / (total_weight as f64).max(1.0);
    // Clamped to 0..=4 GB first, so the cast is exact enough and cannot wrap.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let sealed_bytes = (objects as f64 * mean_size * a.sse_kms / 100.0).clamp(0.0, 4e9) as u64;
    let kms_before = match &kms {
        Some(k) => Some(k.machine_rate(sealed_bytes)?),
        None => None,
    };
    // The local baseline: how fast this file system creates files as the local destination
    // does (write a staging file, rename it into place, one syncfs for the lot), measured now,
    // in the same directory.
    let fs_rate = if a.destination == "local" {
        Some(fs_create_rate(&dir.join("fs-baseline"), max_size, objects.min(20_000), &|i| {
            workload.key(i)
        })?)
    } else {
        None
    };
    // The run's own peak: the setup above (an S3 source's upload, the baselines) is not the
    // engine's memory.
    let peak_is_run = reset_peak_rss();
    let cpu0 = CpuUsage::now();
    let started = Instant::now();
    let mut bytes_total = 0u64;
    // The plaintext SSE-KMS records are sealed from (a pattern of up to 32 MiB: only if needed).
    let source_plain = kms.as_ref().map(|_| SyntheticSource::new(max_size));
    let outcome: Result<(), CliError> = rt.block_on(async {
        let mut builder = log
            .engine(&log_dir, a.partitions)?
            .bucket(
                "bench-src",
                crate::workload::configuration(a.destinations, a.rules, kms.is_some())?,
            )
            .source(source.clone())
            .destinations(registry.clone())
            .status(sink.clone())
            .limits(limits);
        if let Some(k) = &kms {
            builder = builder.keys(k.ring.clone());
        }
        let mut engine = builder.start()?;
        let mut n = 0u64;
        let mut last_report = Instant::now();
        while n < objects && deadline.is_none_or(|d| started.elapsed() < d) {
            let take = 256.min(objects - n);
            let mut batch = Vec::with_capacity(usize::try_from(take).unwrap_or(256));
            for i in n..n + take {
                let size = pick_size(&dist, total_weight, i);
                let key = workload.key(i);
                let sealed = kms.is_some() && workload.is_kms(i);
                let version_id = match &uploaded {
                    Some(v) => v
                        .get(usize::try_from(i).unwrap_or(usize::MAX))
                        .cloned()
                        .ok_or_else(|| CliError::internal("missing uploaded version"))?,
                    None if sealed => format!("k{i}-{size}"),
                    None => format!("v{i}-{size}"),
                };
                let mut rec = VersionRecord {
                    bucket: "bench-src".into(),
                    key: key.clone(),
                    version_id: version_id.clone(),
                    size,
                    tags: workload.tags(i),
                    ..VersionRecord::default()
                };
                if let (Some(k), Some(plain), true) = (&kms, &source_plain, sealed) {
                    let (_, digest) = k.object(size, |r| {
                        plain.content(r).map_err(|e| CliError::internal(e.to_string()))
                    })?;
                    k.seal_record(&mut rec, digest)?;
                }
                bytes_total += size;
                batch.push((key, version_id, rec.to_bytes()?));
            }
            {
                let mut state = sink.state();
                let now = Instant::now();
                for (_, v, _) in &batch {
                    state.committed.insert(v.clone(), (now, a.destinations));
                }
            }
            let refs: Vec<(&str, &str, &[u8])> =
                batch.iter().map(|(k, _, b)| ("bench-src", k.as_str(), b.as_slice())).collect();
            log.append_batch(&refs)?;
            n += take;
            // Open loop with a bounded backlog: do not run more than 64k versions ahead.
            while n - sink.done() > 65_536 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if progress.is_hidden() && last_report.elapsed() > Duration::from_secs(2) {
                // With `--duration` the count is open-ended (`u64::MAX`): no total to show.
                let of = if objects == u64::MAX { String::new() } else { format!("/{objects}") };
                eprintln!("appended {n}{of} versions, replicated {}", sink.done());
                last_report = Instant::now();
            }
        }
        // Bounded, and cut short if part of the engine halts (it would never catch up).
        let target = log.next_seqs()?;
        let give_up = Instant::now() + Duration::from_hours(1);
        // Once every version has a final status, the checkpoint (which makes the replicas
        // durable) is asked for at once: the run's time then includes that durability, not
        // the wait for the checkpoint's next tick (up to 200 ms, a sixth of a 100k-object run).
        while !engine.wait_for(&target, Duration::from_millis(2)).await {
            if sink.done() + sink.failed() >= n {
                engine.checkpoint_now();
            }
            if let Some(h) = engine.halts().first() {
                return Err(CliError::Run(format!("the engine halted: {h}")));
            }
            if Instant::now() > give_up {
                return Err(CliError::Run("timed out waiting for replication".into()));
            }
        }
        Ok(engine.shutdown().await?)
    });
    outcome?;
    let seconds = started.elapsed().as_secs_f64();
    // Before the SSE-KMS baseline below, whose CPU is not the run's.
    let cpu = cpu0.zip(CpuUsage::now()).map(|(c0, c1)| c1.since(&c0));
    let peak = peak_rss();
    progress.finish_and_clear();
    let kms_after = match &kms {
        Some(k) => Some(k.machine_rate(sealed_bytes)?),
        None => None,
    };
    let rate = |(b, s): (u64, f64)| b as f64 / s.max(1e-9);
    let kms_rate = kms_before.zip(kms_after).map(|((b0, s0), (b1, s1))| rate((b0 + b1, s0 + s1)));
    // The destinations outlive the timed run: freeing what a memory destination holds (gigabytes
    // for large objects) is not replication work.
    drop(registry);
    let hist = sink.state().hist.clone();
    let failed = sink.failed();
    let done = sink.done();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let replicated_bytes = bytes_total * u64::from(a.destinations);
    // Per source version: with several destinations, the work of all its replicas.
    let cpu_us_per_version = cpu.map(|c| c.seconds() * 1e6 / (done.max(1) as f64));
    let report = json!({
        "objects": done,
        "failed": failed,
        "bytes": replicated_bytes,
        "seconds": seconds,
        "objects_per_s": done as f64 / seconds,
        "mb_per_s": replicated_bytes as f64 / 1e6 / seconds,
        "cpu_seconds": cpu.map(|c| c.seconds()),
        "cpu_user_seconds": cpu.map(|c| c.user),
        "cpu_system_seconds": cpu.map(|c| c.system),
        "minor_page_faults": cpu.map(|c| c.minor_faults),
        "cpu_seconds_per_gb": cpu.map(|c| if replicated_bytes > 0 { c.seconds() / (replicated_bytes as f64 / 1e9) } else { 0.0 }),
        "cpu_us_per_version": cpu_us_per_version,
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999), "max": hist.max() as f64 / 1000.0},
        "peak_rss_bytes": peak,
        "peak_rss_scope": if peak_is_run { "run" } else { "process" },
        "destinations": a.destinations,
        "destination_kind": a.destination,
        "size": a.size,
        "partitions": a.partitions,
        "log": a.log,
        "workers": a.workers,
        "budget_bytes": budget,
        "keys": a.keys,
        "key_skew": a.key_skew,
        "key_length": a.key_length,
        "tags": a.tags,
        "rules": a.destinations + a.rules,
        "sse_kms_percent": a.sse_kms,
        "reencrypt_machine_mb_per_s": kms_rate.map(|r| r / 1e6),
        "reencrypt_machine_before_mb_per_s": kms_before.map(|m| rate(m) / 1e6),
        "reencrypt_machine_after_mb_per_s": kms_after.map(|m| rate(m) / 1e6),
        "fs_baseline_files_per_s": fs_rate.map(|r| r.files_per_s),
        "fs_baseline_ratio": fs_rate.map(|r| done as f64 / seconds / r.files_per_s),
        "fs_baseline_mb_per_s": fs_rate.map(|r| r.bytes_per_s / 1e6),
        "fs_baseline_bytes_ratio": fs_rate.map(|r| replicated_bytes as f64 / seconds / r.bytes_per_s),
        "reencrypt_efficiency": kms_rate.map(|r| replicated_bytes as f64 / seconds / r),
    });
    println!(
        "s3repl bench: {done} versions × {} destination(s) ({}), sizes {}\n\
         objects/s        {:>12.0}\n\
         MB/s             {:>12.1}\n\
         CPU s per GB     {:>12}\n\
         CPU µs / version {:>12}\n\
         CPU user / sys   {:>12}\n\
         minor faults     {:>12}\n\
         latency (commit → replicated; every version appended up front, so it includes queueing)\n\
         latency p50      {:>9.2} ms\n\
         latency p90      {:>9.2} ms\n\
         latency p99      {:>9.2} ms\n\
         latency p99.9    {:>9.2} ms\n\
         latency max      {:>9.2} ms\n\
         peak RSS         {:>9.1} MiB{}\n\
         failed           {failed:>12}{}{}",
        a.destinations,
        a.destination,
        a.size,
        done as f64 / seconds,
        replicated_bytes as f64 / 1e6 / seconds,
        report
            .get("cpu_seconds_per_gb")
            .and_then(serde_json::Value::as_f64)
            .map_or_else(|| "n/a".into(), |v| format!("{v:.2}")),
        cpu_us_per_version.map_or_else(|| "n/a".into(), |v| format!("{v:.2}")),
        cpu.map_or_else(|| "n/a".into(), |c| format!("{:.2} / {:.2} s", c.user, c.system)),
        cpu.map_or_else(|| "n/a".into(), |c| c.minor_faults.to_string()),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0,
        peak.unwrap_or(0) as f64 / 1_048_576.0,
        if peak_is_run { "" } else { " (whole process)" },
        kms_rate.map_or_else(String::new, |r| format!(
            "\nSSE-KMS vs machine {:>9.1} % of {:.0} MB/s (decrypt + encrypt + BLAKE3, all cores; {:.0} before, {:.0} after)",
            replicated_bytes as f64 / seconds / r * 100.0,
            r / 1e6,
            kms_before.map_or(0.0, |m| rate(m) / 1e6),
            kms_after.map_or(0.0, |m| rate(m) / 1e6),
        )),
        // Small objects are counted in files, large ones in bytes.
        fs_rate.map_or_else(String::new, |r| if max_size < 1 << 20 {
            format!(
                "\nvs local FS      {:>9.1} % of {:.0} files/s (create + write + rename + syncfs, all cores)",
                done as f64 / seconds / r.files_per_s * 100.0,
                r.files_per_s
            )
        } else {
            format!(
                "\nvs local FS      {:>9.1} % of {:.0} MB/s (create + write + rename + syncfs, all cores)",
                replicated_bytes as f64 / seconds / r.bytes_per_s * 100.0,
                r.bytes_per_s / 1e6
            )
        }),
    );
    if let Some(path) = &a.json {
        std::fs::write(path, format!("{report}\n")).map_err(CliError::file(path))?;
    }
    if let Some(path) = &a.hgrm {
        let mut text = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
        for v in hist.iter_quantiles(1) {
            let p = v.quantile_iterated_to();
            let inv = if p < 1.0 { format!("{:.2}", 1.0 / (1.0 - p)) } else { "inf".into() };
            let _ = writeln!(
                text,
                "{:12.3} {:14.12} {:10} {:>14}",
                v.value_iterated_to() as f64 / 1000.0,
                p,
                v.count_since_last_iteration(),
                inv
            );
        }
        let _ = writeln!(
            text,
            "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
            hist.mean() / 1000.0,
            hist.stdev() / 1000.0
        );
        let _ = writeln!(
            text,
            "#[Max     = {:12.3}, Total count    = {:12}]",
            hist.max() as f64 / 1000.0,
            hist.len()
        );
        std::fs::write(path, text).map_err(CliError::file(path))?;
    }
    if let Some(path) = &a.svg {
        std::fs::write(path, svg(&hist)).map_err(CliError::file(path))?;
    }
    if failed > 0 {
        return Err(CliError::Run(format!("{failed} replications failed")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::source::PERIOD;
    use super::*;

    #[test]
    fn a_reset_peak_rss_forgets_memory_freed_before_it() {
        // Every byte written, so all of it is resident; this large an allocation is mapped on
        // its own and unmapped when freed.
        let big = vec![1u8; 256 << 20];
        let before = peak_rss().unwrap();
        assert!(before >= std::hint::black_box(&big).len() as u64);
        drop(big);
        assert!(reset_peak_rss(), "the kernel refused to reset VmHWM");
        let after = peak_rss().unwrap();
        assert!(after + (128 << 20) < before, "peak {after} after the reset, {before} before");
    }

    #[test]
    fn the_file_system_baseline_writes_the_runs_keys_and_leaves_no_staging_files() {
        let dir = std::env::temp_dir().join(format!("s3repl-fs-baseline-{}", std::process::id()));
        let _remove = RemoveOnDrop { path: dir.clone(), keep: false };
        let key = |i: u64| format!("bench/{:02}/object-{i}", i % 3);
        let rate = fs_create_rate(&dir, 100, 12, &key).unwrap();
        assert!(rate.files_per_s > 0.0 && rate.bytes_per_s > 0.0);
        let mut found = Vec::new();
        for sub in std::fs::read_dir(dir.join("bench")).unwrap() {
            for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                let f = f.unwrap();
                assert_eq!(f.metadata().unwrap().len(), 100);
                found.push(f.path().strip_prefix(&dir).unwrap().to_string_lossy().into_owned());
            }
        }
        found.sort();
        let mut want: Vec<String> = (0..12).map(key).collect();
        want.sort();
        assert_eq!(found, want);
    }

    #[test]
    fn sizes_and_distributions_parse() {
        assert_eq!(parse_bytes("4KiB"), Ok(4096));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("10kB"), Ok(10_000));
        assert!(parse_bytes("4XB").is_err());
        assert_eq!(
            parse_distribution("4KiB:90,1MiB:9,64MiB:1"),
            Ok(vec![(4096, 90), (1 << 20, 9), (64 << 20, 1)])
        );
        assert_eq!(parse_distribution("1MiB"), Ok(vec![(1 << 20, 1)]));
        assert!(parse_distribution("4KiB:0").is_err());
    }

    #[test]
    fn cpu_usage_reads_proc_stat_fields_after_the_command_name() {
        // pid (comm with spaces and a parenthesis) state ppid pgrp session tty tpgid flags
        // minflt cminflt majflt cmajflt utime stime ...
        let line = "4242 (s3repl (x) y) R 1 2 3 4 5 6 9000 7 8 9 250 75 0 0 20 0";
        let u = CpuUsage::parse(line).unwrap();
        assert_eq!(u, CpuUsage { user: 2.5, system: 0.75, minor_faults: 9000 });
        let later = CpuUsage { user: 3.0, system: 1.0, minor_faults: 9500 };
        let d = later.since(&u);
        assert_eq!(d.minor_faults, 500);
        assert!((d.seconds() - 0.75).abs() < 1e-9);
        assert!(CpuUsage::parse("4242 (s3repl) R 1 2").is_none());
        let now = CpuUsage::now().unwrap();
        assert!(now.minor_faults > 0 && now.seconds() >= 0.0);
    }

    #[test]
    fn synthetic_content_is_the_same_whichever_way_it_is_read() {
        let s = SyntheticSource::new(40 << 20);
        let size: u64 = 40 << 20;
        let whole = s.bytes(&format!("v1-{size}"), None).unwrap();
        assert_eq!(whole.len() as u64, size);
        assert!(whole.iter().enumerate().all(|(i, b)| usize::from(*b) == i % PERIOD));
        for r in [0..10, 1000..(9 << 20), (33 << 20)..size, 251..502] {
            let part = s.bytes(&format!("v1-{size}"), Some(r.clone())).unwrap();
            let (a, b) = (usize::try_from(r.start).unwrap(), usize::try_from(r.end).unwrap());
            assert_eq!(part, whole.slice(a..b));
        }
        assert!(s.bytes(&format!("v1-{size}"), Some(0..size + 1)).is_err());
        assert!(s.bytes("no-size-here", None).is_err());
    }
}
