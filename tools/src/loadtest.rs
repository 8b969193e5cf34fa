//! `s3repl loadtest`: the load-test harness. Open-loop arrivals at a target rate (constant, or
//! a ramp of rising steps) for a bounded time, appended to the log of an engine it starts (or
//! of an `s3repl run` already running, through its data directory), with commit → replicated
//! latency corrected for coordinated omission: every version's commit time is its *scheduled*
//! arrival time, so a generator or engine that falls behind shows up as latency instead of
//! silently lowering the offered load. Reports RTC compliance against a threshold, a
//! latency-over-time SVG, and in ramp mode the highest rate sustained with p99 under a bound.

// Rates and durations are validated positive, finite and bounded (900 s, 20 M versions) before
// any float → integer conversion; truncation toward zero is the intended rounding.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use crate::error::CliError;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use s3repl::dest::{Destination, DestinationRegistry};
use s3repl::log::{Durability, FileStorage, LogConfig, LogWriter, read_partitions};
use s3repl::pipeline::{Engine, LocalVersionStore, ReplicationStatus, StatusSink, StatusUpdate};
use s3repl::record::VersionRecord;
use serde_json::json;

use crate::bench::{
    CpuUsage, RemoveOnDrop, SyntheticSource, parse_distribution, peak_rss, pick_size,
};

/// Hard bounds whatever the arguments: a load test must end.
const MAX_SECONDS: f64 = 900.0;
const MAX_VERSIONS: u64 = 20_000_000;

/// Arguments of `s3repl loadtest`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Offered load, versions per second (constant mode; the first step in ramp mode).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds of load (constant mode; per step in ramp mode). At most 900 in all.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Object size or distribution (`4KiB:90,1MiB:9,64MiB:1`).
    #[arg(long, default_value = "4KiB")]
    size: String,
    /// Ramp mode: raise the rate by `--ramp-step` after each step until p99 exceeds
    /// `--p99-bound-ms`, the backlog exceeds `--max-backlog`, or `--max-rate` is passed.
    #[arg(long)]
    ramp: bool,
    /// Rate increase per ramp step, versions per second.
    #[arg(long, default_value_t = 2000.0)]
    ramp_step: f64,
    /// Highest rate a ramp tries.
    #[arg(long, default_value_t = 200_000.0)]
    max_rate: f64,
    /// The p99 bound of a sustained ramp step, milliseconds.
    #[arg(long, default_value_t = 100.0)]
    p99_bound_ms: f64,
    /// Versions issued but not replicated beyond which a step counts as not sustained.
    #[arg(long, default_value_t = 200_000)]
    max_backlog: u64,
    /// RTC threshold, milliseconds (S3's is 900000, 15 minutes).
    #[arg(long, default_value_t = 900_000)]
    rtc_threshold_ms: u64,
    /// RTC target: the share of versions that must replicate within the threshold, percent.
    #[arg(long, default_value_t = 99.99)]
    rtc_target: f64,
    /// Where replicas go when the harness starts its own engine: `memory` or `local`.
    #[arg(long, default_value = "memory")]
    destination: String,
    /// Log partitions of the harness's own engine.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Drive an `s3repl run` already running: its data directory (versions are appended to
    /// `DIR/log` and their bytes written to `DIR/source`). Needs `--admin`.
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// The running replicator's admin endpoint (for its `/metrics`), e.g. `http://127.0.0.1:9080`.
    #[arg(long)]
    admin: Option<String>,
    /// Source bucket of the generated versions (with `--target-dir` it must be configured).
    #[arg(long, default_value = "loadtest-src")]
    bucket: String,
    /// Seconds to wait after each step for its versions to replicate before judging the step
    /// (against a running replicator, RTC is judged after waiting for the drain up to the RTC
    /// threshold).
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency-over-time plot (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
}

/// One constant-rate stretch of the schedule: versions `first..` arrive from `start_us` on at
/// `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Step {
    first: u64,
    start_us: u64,
    rate: f64,
}

impl Step {
    /// Scheduled arrival of version `i` (in this step), microseconds since the run started.
    fn arrival_us(&self, i: u64) -> u64 {
        self.start_us + ((i - self.first) as f64 * 1e6 / self.rate) as u64
    }
}

/// Latency bookkeeping fed by the engine's status updates (harness-owned engine).
struct Recorder {
    steps: Mutex<Vec<Step>>,
    started: Instant,
    /// Per step: latency histogram (µs).
    per_step: Mutex<Vec<Histogram<u64>>>,
    /// Per second of scheduled arrival: latency histogram (µs).
    timeline: Mutex<Vec<Histogram<u64>>>,
    all: Mutex<Histogram<u64>>,
    within_threshold: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    threshold_us: u64,
}

fn histogram() -> Result<Histogram<u64>, CliError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| CliError::internal(e.to_string()))
}

impl StatusSink for Recorder {
    fn report(&self, u: &StatusUpdate<'_>) {
        match u.status {
            ReplicationStatus::Pending => {}
            ReplicationStatus::Failed { reason, detail } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("FAILED {} {}: {reason} ({detail})", u.key, u.destination);
            }
            ReplicationStatus::Completed => {
                let now_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                // Version ids are `lt-<index>-<size>`.
                let Some(i) = u.version_id.split('-').nth(1).and_then(|n| n.parse::<u64>().ok())
                else {
                    return;
                };
                let (step_index, arrival) = {
                    let steps = self.steps.lock();
                    let Some(pos) = steps.iter().rposition(|s| s.first <= i) else { return };
                    let Some(step) = steps.get(pos) else { return };
                    (pos, step.arrival_us(i))
                };
                let latency = now_us.saturating_sub(arrival).max(1);
                if latency <= self.threshold_us {
                    self.within_threshold.fetch_add(1, Ordering::Relaxed);
                }
                self.all.lock().saturating_record(latency);
                if let Some(h) = self.per_step.lock().get_mut(step_index) {
                    h.saturating_record(latency);
                }
                let second = usize::try_from(arrival / 1_000_000).unwrap_or(usize::MAX);
                let mut timeline = self.timeline.lock();
                if second < 4 * MAX_SECONDS as usize {
                    while timeline.len() <= second {
                        match histogram() {
                            Ok(h) => timeline.push(h),
                            Err(_) => return,
                        }
                    }
                    if let Some(h) = timeline.get_mut(second) {
                        h.saturating_record(latency);
                    }
                }
                self.done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Where generated versions go.
enum Sink {
    /// The harness's own engine: no bytes written (a synthetic source serves them).
    Own,
    /// A running replicator: bytes go to its local source store.
    External(LocalVersionStore),
}

/// Writes generated versions: bytes to the source (external mode), records to the log.
struct Generator<'a> {
    writer: &'a LogWriter,
    sink: &'a Sink,
    bucket: &'a str,
    dist: &'a [(u64, u64)],
    total_weight: u64,
    /// Unix milliseconds of the run's start (commit times are scheduled arrivals after it).
    epoch_ms: u64,
    pattern: &'a [u8],
}

impl Generator<'_> {
    /// Appends versions `range` of `step`; returns their bytes.
    fn append(&self, step: &Step, range: std::ops::Range<u64>) -> Result<u64, CliError> {
        let mut bytes = 0;
        let mut batch = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
        for i in range {
            let size = pick_size(self.dist, self.total_weight, i);
            let key = format!("loadtest/{:04}/object-{i}", i % 1000);
            let version_id = format!("lt-{i}-{size}");
            if let Sink::External(store) = self.sink {
                let len = usize::try_from(size).unwrap_or(usize::MAX);
                let data = self.pattern.get(..len).unwrap_or(self.pattern);
                store.put(self.bucket, &key, &version_id, data).map_err(|source| {
                    CliError::File {
                        path: store
                            .path(self.bucket, &key, &version_id)
                            .unwrap_or_else(|| PathBuf::from(self.bucket)),
                        source,
                    }
                })?;
            }
            let rec = VersionRecord {
                bucket: self.bucket.to_owned(),
                key: key.clone(),
                version_id,
                size,
                commit_time_ms: self.epoch_ms + step.arrival_us(i) / 1000,
                ..VersionRecord::default()
            };
            bytes += size;
            batch.push((key, rec.to_bytes()?));
        }
        let refs: Vec<(&str, &str, &[u8])> =
            batch.iter().map(|(k, b)| (self.bucket, k.as_str(), b.as_slice())).collect();
        self.writer.append_batch(&refs)?;
        Ok(bytes)
    }
}

/// Sum of a counter family in Prometheus text.
fn prom_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l.get(name.len()..).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// What a running replicator holds durably about this run's versions, from its `/metrics`:
/// how many of them its saved checkpoint has passed (each partition's `next_seq` against the
/// positions this run appended between `from` and `to`), and its failed-operations queue. A
/// restart of the replicator keeps both (its counters start again from zero).
fn durable_progress(text: &str, from: &[u64], to: &[u64]) -> (u64, u64) {
    let name = "s3repl_checkpoint_next_seq{partition=\"";
    let mut finished = 0;
    for line in text.lines().filter_map(|l| l.strip_prefix(name)) {
        let Some((p, rest)) = line.split_once("\"}") else { continue };
        let (Ok(p), Ok(next)) = (p.parse::<usize>(), rest.trim().parse::<u64>()) else {
            continue;
        };
        if let (Some(&lo), Some(&hi)) = (from.get(p), to.get(p)) {
            finished += next.clamp(lo, hi.max(lo)) - lo;
        }
    }
    (finished, prom_sum(text, "s3repl_failed_queue_operations"))
}

/// The largest `quantile` of the replicator's latency summary over its destinations (since it
/// started), milliseconds.
fn prom_quantile(text: &str, quantile: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("s3repl_replication_latency_milliseconds{")
                && l.contains(&format!("quantile=\"{quantile}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

/// The replicator's latency histogram summed over its destinations: (bucket bound in ms,
/// cumulative count), `+Inf` as `u64::MAX`, in bound order.
fn prom_histogram(text: &str) -> Vec<(u64, u64)> {
    let mut buckets: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    let name = "s3repl_replication_latency_hist_milliseconds_bucket{";
    for line in text.lines().filter_map(|l| l.strip_prefix(name)) {
        let Some((labels, value)) = line.rsplit_once("} ") else { continue };
        let Some(le) = labels.split("le=\"").nth(1).and_then(|v| v.split('"').next()) else {
            continue;
        };
        let le = if le == "+Inf" { u64::MAX } else { le.parse().unwrap_or(u64::MAX) };
        *buckets.entry(le).or_insert(0) += value.trim().parse::<u64>().unwrap_or(0);
    }
    buckets.into_iter().collect()
}

/// The `q` quantile (milliseconds; a bucket's upper bound, so at most about 26% high) of the
/// latencies recorded between two scrapes of the histogram; 0 when none were.
fn histogram_quantile(before: &[(u64, u64)], after: &[(u64, u64)], q: f64) -> u64 {
    let earlier = |le: u64| before.iter().find(|(b, _)| *b == le).map_or(0, |(_, n)| *n);
    let diff: Vec<(u64, u64)> =
        after.iter().map(|&(le, n)| (le, n.saturating_sub(earlier(le)))).collect();
    let total = diff.last().map_or(0, |(_, n)| *n);
    if total == 0 {
        return 0;
    }
    let want = (q * total as f64).ceil().max(1.0) as u64;
    let finite_max = diff.iter().rev().find(|(le, _)| *le != u64::MAX).map_or(0, |(le, _)| *le);
    diff.iter()
        .find(|(_, n)| *n >= want)
        .map_or(finite_max, |(le, _)| if *le == u64::MAX { finite_max } else { *le })
}

/// [`scrape`], retried for up to 30 s (a replicator restarting answers nothing meanwhile).
fn scrape_patiently(admin: &str) -> Result<String, CliError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match scrape(admin) {
            Ok(text) => return Ok(text),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `GET {admin}/metrics` over plain HTTP on loopback.
fn scrape(admin: &str) -> Result<String, CliError> {
    get(admin, "/metrics")
}

/// `GET {admin}{path}` over plain HTTP on loopback: the body, whatever the status.
fn get(admin: &str, path: &str) -> Result<String, CliError> {
    use std::io::{Read, Write};
    let addr = admin.strip_prefix("http://").unwrap_or(admin).trim_end_matches('/');
    let remote = |e: std::io::Error| CliError::remote(format!("{addr}{path}: {e}"));
    let mut s = std::net::TcpStream::connect(addr).map_err(remote)?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(remote)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(remote)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(remote)?;
    Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

pub(crate) fn run(a: &Args) -> ExitCode {
    match run_inner(a) {
        Ok(true) => ExitCode::SUCCESS,
        // The run worked; the SLO (RTC target) was missed.
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("s3repl loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// One step's outcome.
struct StepReport {
    rate: f64,
    issued: u64,
    completed: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    sustained: bool,
}

fn run_inner(a: &Args) -> Result<bool, CliError> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(a.rate) || !positive(a.duration) || !positive(a.ramp_step) {
        return Err(CliError::settings("--rate and --duration must be positive"));
    }
    if a.ramp && a.target_dir.is_some() {
        return Err(CliError::settings(
            "--ramp drives the harness's own engine; it cannot be combined with --target-dir",
        ));
    }
    let planned = if a.ramp {
        let steps = ((a.max_rate - a.rate) / a.ramp_step.max(1.0)).floor().max(0.0) + 1.0;
        a.duration * steps
    } else {
        a.duration
    };
    if planned > MAX_SECONDS {
        return Err(CliError::settings(format!(
            "the run would last {planned:.0} s; the bound is {MAX_SECONDS:.0} s"
        )));
    }
    let dist = parse_distribution(&a.size).map_err(CliError::Settings)?;
    let total_weight: u64 = dist.iter().map(|(_, w)| *w).sum();
    let max_size = dist.iter().map(|(s, _)| *s).max().unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))?;
    let recorder = Arc::new(Recorder {
        steps: Mutex::new(Vec::new()),
        started: Instant::now(),
        per_step: Mutex::new(Vec::new()),
        timeline: Mutex::new(Vec::new()),
        all: Mutex::new(histogram()?),
        within_threshold: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        threshold_us: a.rtc_threshold_ms.saturating_mul(1000),
    });
    let epoch_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| CliError::internal(format!("the clock is before 1970: {e}")))?
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
    .saturating_sub(u64::try_from(recorder.started.elapsed().as_millis()).unwrap_or(0));
    let scratch = std::env::temp_dir().join(format!("s3repl-loadtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    // Removed however the run ends (an error below returns early).
    let _cleanup = RemoveOnDrop { path: scratch.clone(), keep: false };
    let (log_dir, sink, partitions, pattern) = match &a.target_dir {
        Some(dir) => {
            if a.admin.is_none() {
                return Err(CliError::settings(
                    "--target-dir needs --admin (the running replicator's endpoint)",
                ));
            }
            // Versions of a bucket without a configuration replicate nowhere: say so now
            // rather than wait for the drain and report nothing replicated.
            let configured = ["json", "xml"]
                .iter()
                .any(|ext| dir.join("replication").join(format!("{}.{ext}", a.bucket)).exists());
            if !configured {
                return Err(CliError::settings(format!(
                    "bucket {} has no replication configuration in {} (install one with `aws s3api put-bucket-replication --bucket {}`, or name a configured --bucket): its versions would replicate nowhere",
                    a.bucket,
                    dir.join("replication").display(),
                    a.bucket
                )));
            }
            let log_dir = dir.join("log");
            let p = read_partitions(&FileStorage, &log_dir)?.ok_or_else(|| {
                CliError::settings(format!(
                    "no log at {} (start `s3repl run` first)",
                    log_dir.display()
                ))
            })?;
            let pattern: Vec<u8> = (0..usize::try_from(max_size).unwrap_or(usize::MAX))
                .map(|i| u8::try_from(i % 251).unwrap_or(0))
                .collect();
            (
                log_dir,
                Sink::External(LocalVersionStore::new(dir.join("source")).durable(false)),
                p,
                pattern,
            )
        }
        None => (scratch.join("log"), Sink::Own, a.partitions.max(1), Vec::new()),
    };
    let writer = LogWriter::open(
        &log_dir,
        LogConfig {
            partitions,
            durability: Durability::Interval(Duration::from_millis(5)),
            ..LogConfig::default()
        },
    )?;
    // Against a running replicator, what it holds durably is counted, not its counters
    // (a restart sets them to zero): this run's records below its saved checkpoint, and its
    // failed-operations queue.
    let first_seqs = writer.next_seqs();
    let (missed_baseline, failed_baseline, parked_baseline) = match &a.admin {
        Some(admin) if a.target_dir.is_some() => {
            let text = scrape(admin)?;
            (
                prom_sum(&text, "s3repl_operations_missed_threshold_total"),
                prom_sum(&text, "s3repl_failed_queue_operations"),
                prom_sum(&text, "s3repl_destination_parked_operations"),
            )
        }
        _ => (0, 0, 0),
    };
    // Against a running replicator: this run's versions replicated (below its saved
    // checkpoint, less what waits in its failed-operations queue, parked or FAILED).
    let replicated_by = |text: &str, to: &[u64]| {
        let (finished, queued) = durable_progress(text, &first_seqs, to);
        finished.saturating_sub(queued.saturating_sub(failed_baseline))
    };
    let cpu0 = CpuUsage::now();
    let mut reports: Vec<StepReport> = Vec::new();
    let mut issued = 0u64;
    let mut bytes = 0u64;
    let outcome: Result<Vec<String>, CliError> = rt.block_on(async {
        let generator = Generator {
            writer: &writer,
            sink: &sink,
            bucket: &a.bucket,
            dist: &dist,
            total_weight,
            epoch_ms,
            pattern: &pattern,
        };
        let mut engine = if a.target_dir.is_some() {
            None
        } else {
            let mut registry = DestinationRegistry::new();
            let arn = "arn:aws:s3:::bench-dst-0";
            registry.insert(match a.destination.as_str() {
                "memory" => Destination::in_memory(arn),
                "local" => Destination::local(arn, &scratch.join("dst"))?,
                d => {
                    return Err(CliError::settings(format!(
                        "destination must be memory or local, not {d:?}"
                    )));
                }
            });
            Some(
                Engine::builder()
                    .log(&log_dir, partitions)
                    .notifier(writer.notifier())
                    .bucket(&a.bucket, crate::workload::configuration(1, 0, false)?)
                    .source(Arc::new(SyntheticSource::new(max_size)))
                    .destinations(registry)
                    .status(recorder.clone())
                    .start()?,
            )
        };
        let mut rate = a.rate;
        loop {
            let step = Step {
                first: issued,
                start_us: u64::try_from(recorder.started.elapsed().as_micros()).unwrap_or(0),
                rate,
            };
            recorder.steps.lock().push(step);
            recorder.per_step.lock().push(histogram()?);
            // The replicator's histogram as the step starts: its latencies are the difference.
            let histogram_before = match (&engine, &a.admin) {
                (None, Some(admin)) => prom_histogram(&scrape_patiently(admin)?),
                _ => Vec::new(),
            };
            let step_start = Instant::now();
            let target = ((a.duration * rate) as u64).min(MAX_VERSIONS.saturating_sub(issued));
            let mut overloaded = false;
            let mut sent = 0u64;
            while sent < target {
                // Everything scheduled up to now is due: append it (open loop, never waiting for
                // the engine); then sleep until the next arrival.
                let due = ((step_start.elapsed().as_secs_f64() * rate) as u64 + 1).min(target);
                if due > sent {
                    let chunk = (due - sent).min(1024);
                    bytes += generator.append(&step, issued..issued + chunk)?;
                    issued += chunk;
                    sent += chunk;
                    continue;
                }
                let done = match &engine {
                    Some(_) => recorder.done.load(Ordering::Relaxed),
                    None => issued, // the external engine's backlog is checked at the end
                };
                if issued - done > a.max_backlog {
                    overloaded = true;
                    break;
                }
                let next = Duration::from_secs_f64((sent as f64 + 1.0) / rate);
                tokio::time::sleep(
                    next.saturating_sub(step_start.elapsed()).max(Duration::from_micros(200)),
                )
                .await;
            }
            writer.sync()?;
            // Let this step's versions finish before judging it (bounded).
            let deadline = Instant::now() + Duration::from_secs_f64(a.drain_timeout);
            let completed = loop {
                let done = match (&engine, &a.admin) {
                    (Some(_), _) => {
                        recorder.done.load(Ordering::Relaxed)
                            + recorder.failed.load(Ordering::Relaxed)
                    }
                    // A replicator restarting meanwhile answers nothing for a while.
                    (None, Some(admin)) => match scrape(admin) {
                        Ok(text) => replicated_by(&text, &writer.next_seqs()),
                        Err(_) if Instant::now() <= deadline => 0,
                        Err(e) => return Err(e),
                    },
                    (None, None) => issued,
                };
                if done >= issued || Instant::now() > deadline {
                    break done;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let index = reports.len();
            let h = recorder.per_step.lock().get(index).cloned();
            // A running replicator's latencies are its own: what its histogram recorded during
            // this step (bucket bounds, so up to about 26% high); the harness's own engine's
            // are measured per version.
            let external = match (&engine, &a.admin) {
                (None, Some(admin)) => Some(prom_histogram(&scrape_patiently(admin)?)),
                _ => None,
            };
            let ms = |q: f64| match &external {
                Some(after) => histogram_quantile(&histogram_before, after, q) as f64,
                None => h.as_ref().map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0),
            };
            let p99 = ms(0.99);
            let sustained =
                !overloaded && completed >= issued && (!a.ramp || p99 <= a.p99_bound_ms);
            reports.push(StepReport {
                rate,
                issued: sent,
                completed: completed
                    .saturating_sub(reports.iter().map(|r| r.completed).sum::<u64>()),
                p50_ms: ms(0.5),
                p99_ms: p99,
                max_ms: if external.is_some() {
                    ms(1.0)
                } else {
                    h.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0)
                },
                sustained,
            });
            eprintln!(
                "step {}: {rate:.0}/s offered, {sent} issued, p99 {p99:.2} ms{}",
                index + 1,
                if sustained { "" } else { " — not sustained" }
            );
            if !a.ramp || !sustained || rate + a.ramp_step > a.max_rate || issued >= MAX_VERSIONS {
                break;
            }
            rate += a.ramp_step;
        }
        // A running replicator: RTC is judged once everything replicated or the threshold has
        // passed since the last arrival (a version parked through an outage may still make it).
        if let (None, Some(admin)) = (&engine, &a.admin) {
            let end = Instant::now();
            let threshold = Duration::from_millis(a.rtc_threshold_ms);
            let mut said = Instant::now();
            loop {
                let text = scrape_patiently(admin)?;
                let replicated = replicated_by(&text, &writer.next_seqs());
                if replicated >= issued || end.elapsed() > threshold {
                    break;
                }
                if said.elapsed() > Duration::from_secs(5) {
                    said = Instant::now();
                    let parked = prom_sum(&text, "s3repl_destination_parked_operations");
                    eprintln!(
                        "waiting for the replicator: {replicated} of {issued} replicated, {parked} parked; RTC judged at the latest {:.0} s from now",
                        threshold.saturating_sub(end.elapsed()).as_secs_f64()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // What stopped for good during the run (a run with a halt measured a crippled engine).
        let halts: Vec<String> = match (&engine, &a.admin) {
            (Some(e), _) => e.halts().iter().map(ToString::to_string).collect(),
            // `/-/health` answers `halted` and then one line per halt.
            (None, Some(admin)) => match get(admin, "/-/health")?.strip_prefix("halted\n") {
                Some(lines) => lines.lines().map(str::to_owned).collect(),
                None => Vec::new(),
            },
            (None, None) => Vec::new(),
        };
        if let Some(e) = engine.take() {
            e.shutdown().await?;
        }
        Ok(halts)
    });
    let halts = outcome?;
    let cpu = cpu0.zip(CpuUsage::now()).map(|(c0, c1)| c1.since(&c0).seconds());
    let seconds = recorder.started.elapsed().as_secs_f64();
    // Latency: our own per-version measurement, or the running replicator's histogram (also
    // coordinated-omission corrected: commit times are scheduled arrivals).
    let external = a.target_dir.as_ref().and(a.admin.as_ref());
    let (done, failed, parked, within, latency) = if let Some(admin) = external {
        let text = scrape_patiently(admin)?;
        // Durable: this run's records the saved checkpoint has passed, less the growth of the
        // failed-operations queue (FAILED and parked records are passed too, once journaled).
        let (finished, queued) = durable_progress(&text, &first_seqs, &writer.next_seqs());
        let waiting = queued.saturating_sub(failed_baseline).min(finished);
        let parked = prom_sum(&text, "s3repl_destination_parked_operations")
            .saturating_sub(parked_baseline)
            .min(waiting);
        let done = finished - waiting;
        // RTC misses are only counted since the replicator started.
        let missed = prom_sum(&text, "s3repl_operations_missed_threshold_total")
            .saturating_sub(missed_baseline);
        let q = |quantile: &str| prom_quantile(&text, quantile);
        (
            done,
            waiting - parked,
            parked,
            done.saturating_sub(missed),
            json!({"p50": q("0.5"), "p90": q("0.9"), "p99": q("0.99"), "p99_9": q("0.999"), "max": q("1"), "source": "replicator /metrics (since it started)"}),
        )
    } else {
        let h = recorder.all.lock().clone();
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (
            recorder.done.load(Ordering::Relaxed),
            recorder.failed.load(Ordering::Relaxed),
            0,
            recorder.within_threshold.load(Ordering::Relaxed),
            json!({"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999), "max": h.max() as f64 / 1000.0, "source": "harness, per version"}),
        )
    };
    // Versions never replicated count against compliance.
    let compliance = if issued == 0 { 100.0 } else { within as f64 * 100.0 / issued as f64 };
    let met = compliance >= a.rtc_target;
    let best = reports
        .iter()
        .filter(|r| r.sustained)
        .map(|r| r.rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let report = json!({
        "mode": if a.ramp { "ramp" } else { "constant" },
        "engine": if a.target_dir.is_some() { "external" } else { "harness" },
        "issued": issued,
        "replicated": done,
        "failed": failed,
        "parked": parked,
        "bytes": bytes,
        "seconds": seconds,
        "latency_ms": latency,
        "rtc": {"threshold_ms": a.rtc_threshold_ms, "target_percent": a.rtc_target, "compliance_percent": compliance, "met": met},
        "steps": reports.iter().map(|r| json!({"rate": r.rate, "issued": r.issued, "completed": r.completed, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms, "sustained": r.sustained})).collect::<Vec<_>>(),
        "max_sustained_rate": best,
        "p99_bound_ms": a.p99_bound_ms,
        "cpu_seconds": cpu,
        "peak_rss_bytes": peak_rss(),
        "halts": halts,
    });
    println!(
        "s3repl loadtest: {issued} versions offered in {seconds:.1} s, {done} replicated, {failed} failed, {parked} parked{}",
        if external.is_some() {
            " (durably: the replicator's saved checkpoint and failed-operations queue)"
        } else {
            ""
        }
    );
    if external.is_some() {
        println!(
            "latency columns: the replicator's own, recorded during each step (its histogram's bucket bounds)"
        );
    }
    for h in &halts {
        println!("halted: {h}");
    }
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  sustained",
        "rate/s", "issued", "done", "p50 ms", "p99 ms", "max ms"
    );
    for r in &reports {
        println!(
            "{:>10.0} {:>10} {:>10} {:>10.2} {:>10.2} {:>10.2}  {}",
            r.rate,
            r.issued,
            r.completed,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            if r.sustained { "yes" } else { "no" }
        );
    }
    println!(
        "RTC: {compliance:.3} % within {} ms (target {} %): {}",
        a.rtc_threshold_ms,
        a.rtc_target,
        if met { "met" } else { "MISSED" }
    );
    if a.ramp {
        match best {
            Some(r) => println!(
                "highest rate sustained with p99 ≤ {} ms: {r:.0} versions/s",
                a.p99_bound_ms
            ),
            None => println!("no step sustained p99 ≤ {} ms", a.p99_bound_ms),
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, format!("{report}\n")).map_err(CliError::file(path))?;
    }
    if let Some(path) = &a.svg {
        let timeline = recorder.timeline.lock().clone();
        std::fs::write(path, timeline_svg(&timeline, a.rtc_threshold_ms))
            .map_err(CliError::file(path))?;
    }
    Ok(met)
}

/// p50 / p99 / max latency per second of scheduled arrival, log-scale milliseconds.
fn timeline_svg(seconds: &[Histogram<u64>], threshold_ms: u64) -> String {
    let (width, height, pad) = (720.0, 360.0, 56.0);
    let series: Vec<[f64; 3]> = seconds
        .iter()
        .map(|h| {
            if h.is_empty() {
                [f64::NAN; 3]
            } else {
                [
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                    h.max() as f64 / 1000.0,
                ]
            }
        })
        .collect();
    let top = series.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.01, f64::max);
    let bottom =
        series.iter().flatten().copied().filter(|v| v.is_finite()).fold(top, f64::min).max(0.001);
    let (lo, hi) = (bottom.log10(), top.log10().max(bottom.log10() + 1e-9));
    let n = series.len().max(2) as f64 - 1.0;
    let x = |i: usize| pad + (i as f64 / n) * (width - 2.0 * pad);
    let y =
        |v: f64| height - pad - ((v.max(bottom).log10() - lo) / (hi - lo)) * (height - 2.0 * pad);
    let mut lines = String::new();
    for (k, (name, colour)) in
        [("p50", "seagreen"), ("p99", "steelblue"), ("max", "firebrick")].iter().enumerate()
    {
        let mut points = String::new();
        for (i, s) in series.iter().enumerate() {
            if let Some(v) = s.get(k).filter(|v| v.is_finite()) {
                let _ = write!(points, "{:.1},{:.1} ", x(i), y(*v));
            }
        }
        let _ = write!(
            lines,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/><text x="{}" y="{}" font-size="11" fill="{colour}">{name}</text>"#,
            width - pad + 4.0,
            pad + 14.0 * k as f64
        );
    }
    let threshold = threshold_ms as f64;
    let rtc = if threshold <= top {
        format!(
            r#"<line x1="{pad}" y1="{ty:.1}" x2="{rx}" y2="{ty:.1}" stroke="orange" stroke-dasharray="4"/><text x="{tx}" y="{ty:.1}" font-size="11" fill="orange">RTC threshold</text>"#,
            ty = y(threshold),
            rx = width - pad,
            tx = pad + 4.0
        )
    } else {
        String::new()
    };
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{tx}" y="20" font-size="14" text-anchor="middle">s3repl loadtest: commit → replicated latency over time (corrected for coordinated omission)</text>
<line x1="{pad}" y1="{by}" x2="{rx}" y2="{by}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{by}" stroke="black"/>
<text x="4" y="{pad}" font-size="11">{top:.2} ms</text><text x="4" y="{by}" font-size="11">{bottom:.3} ms</text>
<text x="{pad}" y="{ly}" font-size="11">0 s</text><text x="{rx}" y="{ly}" font-size="11" text-anchor="end">{secs} s</text>
{rtc}{lines}
</svg>
"#,
        tx = width / 2.0,
        by = height - pad,
        rx = width - pad,
        ly = height - pad + 16.0,
        secs = seconds.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_step_latencies_come_from_the_difference_of_two_histograms() {
        let scrape = |a: [u64; 4], b: [u64; 4]| {
            let mut t =
                String::from("# TYPE s3repl_replication_latency_hist_milliseconds histogram\n");
            for (d, counts) in [("x", a), ("y", b)] {
                for (le, n) in ["10", "100", "1000", "+Inf"].iter().zip(counts) {
                    let _ = writeln!(
                        t,
                        "s3repl_replication_latency_hist_milliseconds_bucket{{destination=\"arn:aws:s3:::{d}\",le=\"{le}\"}} {n}"
                    );
                }
            }
            t
        };
        let before = prom_histogram(&scrape([5, 5, 5, 5], [0, 0, 0, 0]));
        assert_eq!(before, vec![(10, 5), (100, 5), (1000, 5), (u64::MAX, 5)]);
        // During the step: 90 under 10 ms, 9 under 100, 1 under 1000 (summed over destinations).
        let after = prom_histogram(&scrape([50, 54, 55, 55], [45, 50, 50, 50]));
        assert_eq!(histogram_quantile(&before, &after, 0.5), 10);
        assert_eq!(histogram_quantile(&before, &after, 0.95), 100);
        assert_eq!(histogram_quantile(&before, &after, 1.0), 1000);
        assert_eq!(histogram_quantile(&after, &after, 0.99), 0, "nothing recorded");
        // Above the last finite bound: reported as that bound.
        let beyond = prom_histogram(&scrape([5, 5, 5, 7], [0, 0, 0, 0]));
        assert_eq!(histogram_quantile(&before, &beyond, 0.99), 1000);
    }

    #[test]
    fn schedule_and_prometheus_parsing() {
        let s = Step { first: 100, start_us: 5_000_000, rate: 1000.0 };
        assert_eq!(s.arrival_us(100), 5_000_000);
        assert_eq!(s.arrival_us(1100), 6_000_000);
        let text = "# HELP x\ns3repl_operations_completed_total{destination=\"a\"} 5\ns3repl_operations_completed_total{destination=\"b\"} 7\ns3repl_operations_completed_totalx 100\n";
        assert_eq!(prom_sum(text, "s3repl_operations_completed_total"), 12);
        // This run appended partition 0's records 10..20 and partition 1's 5..8; the saved
        // checkpoint passed 0 at 15 and 1 at 30 (beyond: another run's records after ours).
        let text = "s3repl_checkpoint_next_seq{partition=\"0\"} 15\ns3repl_checkpoint_next_seq{partition=\"1\"} 30\ns3repl_failed_queue_operations 2\n";
        assert_eq!(durable_progress(text, &[10, 5], &[20, 8]), (8, 2));
        assert_eq!(durable_progress(text, &[16, 31], &[20, 40]), (0, 2));
    }
}
