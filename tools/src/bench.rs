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

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use object_store::ObjectStoreExt as _;
use s3repl::dest::{Destination, DestinationRegistry, S3Options};
use s3repl::log::{Durability, LogConfig, LogWriter};
use s3repl::pipeline::{
    BoxFuture, Engine, Limits, ObjectSource, ObjectStoreSource, ReplicationStatus, SourceError,
    StatusSink, StatusUpdate,
};
use s3repl::record::VersionRecord;
use serde_json::json;

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

fn s3_options(a: &Args, bucket: &str) -> Result<S3Options, String> {
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set (S3 credentials)"));
    Ok(S3Options {
        endpoint: a.s3_endpoint.clone().ok_or("--destination s3 needs --s3-endpoint")?,
        bucket: bucket.to_owned(),
        region: a.s3_region.clone(),
        access_key_id: env("AWS_ACCESS_KEY_ID")?,
        secret_access_key: env("AWS_SECRET_ACCESS_KEY")?,
        allow_http: true,
        virtual_hosted_style: false,
    })
}

fn s3_store(a: &Args, bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>, String> {
    s3repl::dest::s3_store(&s3_options(a, bucket)?).map_err(|e| e.to_string())
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
) -> Result<Vec<String>, String> {
    let source = SyntheticSource::new(max_size);
    let mut versions = vec![String::new(); usize::try_from(objects).map_err(|e| e.to_string())?];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..objects {
        if tasks.len() >= 32
            && let Some(done) = tasks.join_next().await
        {
            let (i, v): (u64, String) = done.map_err(|e| e.to_string())??;
            if let Some(slot) = versions.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
                *slot = v;
            }
        }
        let size = pick_size(dist, total_weight, i);
        let body = source.bytes(&format!("v-{size}"), None).map_err(|e| e.to_string())?;
        let path = object_store::path::Path::from(workload.key(i));
        let store = store.clone();
        tasks.spawn(async move {
            let r = store.put(&path, body.into()).await.map_err(|e| e.to_string())?;
            let v = r.version.ok_or("the source bucket is not versioned (no version id)")?;
            Ok::<_, String>((i, v))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, v) = done.map_err(|e| e.to_string())??;
        if let Some(slot) = versions.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
            *slot = v;
        }
    }
    Ok(versions)
}

/// The size of object `i` under a weighted distribution (deterministic, well spread).
pub(crate) fn pick_size(dist: &[(u64, u64)], total_weight: u64, i: u64) -> u64 {
    let mut pick = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % total_weight.max(1);
    dist.iter()
        .find(|(_, w)| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .map_or(0, |(s, _)| *s)
}

/// Deterministic object bytes: slices of one patterned buffer, so the source costs no
/// allocation or copy per read (the size is carried in the version id).
pub(crate) struct SyntheticSource {
    data: Bytes,
    /// SSE-KMS objects (version ids starting with `k`) are served encrypted.
    kms: Option<Arc<crate::workload::Kms>>,
}

/// The synthetic content's period: byte `i` of every object is `i % 251`.
const PERIOD: usize = 251;
/// The longest read served as a slice of the shared pattern (larger ones are assembled).
const MAX_SLICE: usize = 32 << 20;

impl SyntheticSource {
    /// A source whose version ids end in `-<size>`; it holds one pattern of at most 32 MiB
    /// whatever the object sizes (a 10 GiB object is served part by part).
    pub(crate) fn new(max_size: u64) -> Self {
        let len = usize::try_from(max_size).unwrap_or(usize::MAX).min(MAX_SLICE) + PERIOD;
        let pattern: Vec<u8> = (0..len).map(|i| u8::try_from(i % PERIOD).unwrap_or(0)).collect();
        SyntheticSource { data: Bytes::from(pattern), kms: None }
    }

    /// Bytes `range` of the content: a zero-copy slice when it fits the pattern.
    fn content(&self, range: std::ops::Range<u64>) -> Result<Bytes, SourceError> {
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| SourceError::Transient("range too large".into()))?;
        let phase = usize::try_from(range.start % PERIOD as u64).unwrap_or(0);
        if phase + len <= self.data.len() {
            return Ok(self.data.slice(phase..phase + len));
        }
        let mut out = Vec::with_capacity(len);
        let mut at = phase;
        while out.len() < len {
            let take = (len - out.len()).min(self.data.len() - at);
            out.extend_from_slice(self.data.get(at..at + take).unwrap_or_default());
            at = (at + take) % PERIOD;
        }
        Ok(Bytes::from(out))
    }

    fn bytes(
        &self,
        version_id: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, SourceError> {
        let Some(size) = version_id.rsplit_once('-').and_then(|(_, s)| s.parse::<u64>().ok())
        else {
            return Err(SourceError::Transient(format!(
                "no synthetic object for version {version_id}"
            )));
        };
        if let (Some(kms), true) = (&self.kms, version_id.starts_with('k')) {
            let (stored, _) = kms
                .object(size, |r| self.content(r).map_err(|e| e.to_string()))
                .map_err(SourceError::Transient)?;
            return match range {
                Some(r) => s3repl::pipeline::slice_range(&stored, r),
                None => Ok(stored),
            };
        }
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(SourceError::Transient(format!(
                "range {range:?} outside a {size}-byte version"
            )));
        }
        self.content(range)
    }
}

impl ObjectSource for SyntheticSource {
    fn get<'a>(
        &'a self,
        _bucket: &'a str,
        _key: &'a str,
        version_id: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        let out = self.bytes(version_id, None);
        Box::pin(async move { out })
    }

    fn get_range<'a>(
        &'a self,
        _bucket: &'a str,
        _key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        let out = self.bytes(version_id, Some(range));
        Box::pin(async move { out })
    }
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
    fn new(progress: ProgressBar) -> Result<Self, String> {
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
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
    fn report(&self, u: StatusUpdate) {
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
                    let Some((at, left)) = state.committed.get_mut(&u.version_id) else { return };
                    *left -= 1;
                    if *left > 0 {
                        return;
                    }
                    let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                    state.committed.remove(&u.version_id);
                    state.hist.saturating_record(us);
                }
                self.done.fetch_add(1, Ordering::Relaxed);
                self.progress.inc(1);
            }
        }
    }
}

/// How fast this file system takes files the way the local destination writes them.
#[derive(Debug, Clone, Copy)]
struct FsRate {
    files_per_s: f64,
    bytes_per_s: f64,
}

/// Creates files the way the local destination does (a staging file written, then renamed
/// into place, its directory created when the first file needs it) over one thread per core:
/// up to `count` files of `size` bytes (at most 64 MiB each, and about 1 GiB in all, so a
/// large-object run does not first write as much again), named by the run's own keys (`key`
/// of version 0, 1, ...), so the baseline spreads its files over the same directories as the
/// run does (on tmpfs here, 20,000 files in two directories went about 10% faster than over
/// the 1,000 directories of the default keys). The files stay until the benchmark's directory is
/// removed, so that their deletion does not slow the measured run.
fn fs_create_rate(
    dir: &std::path::Path,
    size: u64,
    count: u64,
    key: &(dyn Fn(u64) -> String + Sync),
) -> Result<FsRate, String> {
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get) as u64;
    let data = vec![0x5au8; usize::try_from(size.min(64 << 20)).unwrap_or(0)];
    let count = count.min(((1u64 << 30) / (data.len() as u64).max(1)).max(1));
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let data = &data;
                scope.spawn(move || -> std::io::Result<()> {
                    for i in (t..count).step_by(usize::try_from(threads).unwrap_or(1)) {
                        let path = dir.join(key(i));
                        let mut staging = path.clone().into_os_string();
                        staging.push(format!(".{t}.tmp"));
                        if let Err(e) = std::fs::write(&staging, data) {
                            let parent =
                                path.parent().filter(|_| e.kind() == std::io::ErrorKind::NotFound);
                            std::fs::create_dir_all(parent.ok_or(e)?)?;
                            std::fs::write(&staging, data)?;
                        }
                        std::fs::rename(&staging, &path)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| "file system baseline thread panicked".to_owned())?
                .map_err(|e| format!("file system baseline in {}: {e}", dir.display()))?;
        }
        Ok::<(), String>(())
    })?;
    // Made durable the way the local destination makes its replicas durable (one syncfs for
    // the lot), so both sides of the ratio pay for durability, and the engine's first sync
    // does not pay for the baseline's files.
    s3repl::dest::sync_file_system(dir)
        .map_err(|e| format!("file system baseline sync of {}: {e}", dir.display()))?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok(FsRate {
        files_per_s: count as f64 / secs,
        bytes_per_s: (count * data.len() as u64) as f64 / secs,
    })
}

/// What this process has used so far, from `/proc/self/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuUsage {
    /// User CPU seconds.
    pub(crate) user: f64,
    /// System (kernel) CPU seconds.
    pub(crate) system: f64,
    /// Minor page faults (a fresh page mapped and zeroed by the kernel: memory touched for
    /// the first time).
    pub(crate) minor_faults: u64,
}

impl CpuUsage {
    /// This process's usage now.
    pub(crate) fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Parses a `/proc/<pid>/stat` line (the command name, in parentheses, may hold spaces).
    fn parse(stat: &str) -> Option<Self> {
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let minor_faults = fields.get(7)?.parse().ok()?;
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // Clock ticks are 100 per second on Linux.
        Some(CpuUsage { user: utime / 100.0, system: stime / 100.0, minor_faults })
    }

    /// User + system seconds.
    pub(crate) fn seconds(&self) -> f64 {
        self.user + self.system
    }

    /// What was used between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        CpuUsage {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }
}

/// Resets this process's peak resident set size (`VmHWM`) to its current one, so that
/// [`peak_rss`] then covers only what follows: a run's peak, not its setup's (uploading source
/// objects, measuring baselines) once that memory is freed. False where the kernel refuses
/// (then the peak stays the whole process's).
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process (`VmHWM`), bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn svg(hist: &Histogram<u64>) -> String {
    // Latency (ms, log scale) against percentile, the usual HdrHistogram view.
    let (width, height, pad) = (640.0, 360.0, 50.0);
    let max_ms = (hist.max() as f64 / 1000.0).max(0.001);
    let min_ms = (hist.min().max(1) as f64 / 1000.0).min(max_ms);
    let (lo, hi) = (min_ms.log10(), max_ms.log10().max(min_ms.log10() + 1e-9));
    let mut points = String::new();
    for i in 0..=200 {
        let quantile = 1.0 - 10f64.powf(-(f64::from(i) / 200.0) * 5.0);
        let value = hist.value_at_quantile(quantile) as f64 / 1000.0;
        let x = pad + (f64::from(i) / 200.0) * (width - 2.0 * pad);
        let y =
            height - pad - ((value.max(min_ms).log10() - lo) / (hi - lo)) * (height - 2.0 * pad);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    let mut labels = String::new();
    for (i, name) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].iter().enumerate() {
        let x = pad + (i as f64 / 5.0) * (width - 2.0 * pad);
        let _ = write!(
            labels,
            r#"<text x="{x:.0}" y="{}" font-size="11" text-anchor="middle">{name}</text>"#,
            height - pad + 16.0
        );
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{tx}" y="20" font-size="14" text-anchor="middle">s3repl bench: commit → replicated latency by percentile</text>
<line x1="{pad}" y1="{by}" x2="{rx}" y2="{by}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{by}" stroke="black"/>
<text x="8" y="{pad}" font-size="11">{max_ms:.2} ms</text><text x="8" y="{by}" font-size="11">{min_ms:.3} ms</text>
{labels}
<polyline fill="none" stroke="steelblue" stroke-width="2" points="{points}"/>
</svg>
"#,
        tx = width / 2.0,
        by = height - pad,
        rx = width - pad,
    )
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

fn run_inner(a: &Args) -> Result<(), String> {
    let dist = parse_distribution(&a.size)?;
    let objects = match (a.objects, a.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => 20_000,
    };
    let deadline = match a.duration {
        Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
        Some(_) => return Err("--duration must be a positive number of seconds".into()),
        None => None,
    };
    let workload =
        crate::workload::Workload::new(a.keys, a.key_skew, a.key_length, a.tags, a.sse_kms)?;
    let kms = if workload.uses_kms() {
        if a.s3_source_bucket.is_some() {
            return Err("--sse-kms needs the synthetic source (not --s3-source-bucket)".into());
        }
        Some(Arc::new(crate::workload::Kms::new()?))
    } else {
        None
    };
    let budget = parse_bytes(&a.budget)?;
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
            "local" => Destination::local(&arn, &dir.join(format!("dst-{d}")))
                .map_err(|e| e.to_string())?,
            "s3" => {
                let bucket = if a.destinations == 1 {
                    a.s3_bucket.clone()
                } else {
                    format!("{}-{d}", a.s3_bucket)
                };
                let d =
                    Destination::s3(&arn, &s3_options(a, &bucket)?).map_err(|e| e.to_string())?;
                if a.no_server_side_copy { d.without_server_side_copy() } else { d }
            }
            other => {
                return Err(format!(
                    "destination kind {other:?} is not supported (local, memory, s3)"
                ));
            }
        };
        registry.insert(target);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
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
            let source = ObjectStoreSource::new()
                .s3_bucket("bench-src", &s3_options(a, bucket)?)
                .map_err(|e| e.to_string())?;
            (Arc::new(source), Some(versions))
        }
    };
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(if objects == u64::MAX { 0 } else { objects });
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} versions {per_sec} eta {eta}",
            )
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let sink = Arc::new(LatencySink::new(progress.clone())?);
    let log_dir = dir.join("log");
    let writer = LogWriter::open(
        &log_dir,
        LogConfig {
            partitions: a.partitions,
            durability: Durability::Interval(Duration::from_millis(10)),
            ..LogConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
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
    let outcome: Result<(), String> = rt.block_on(async {
        let mut builder = Engine::builder()
            .log(&log_dir, a.partitions)
            .notifier(writer.notifier())
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
        let mut engine = builder.start().map_err(|e| e.to_string())?;
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
                        .ok_or("missing uploaded version")?,
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
                    let (_, digest) =
                        k.object(size, |r| plain.content(r).map_err(|e| e.to_string()))?;
                    k.seal_record(&mut rec, digest)?;
                }
                bytes_total += size;
                batch.push((key, version_id, rec.to_bytes().map_err(|e| e.to_string())?));
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
            writer.append_batch(&refs).map_err(|e| e.to_string())?;
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
        writer.sync().map_err(|e| e.to_string())?;
        // Bounded, and cut short if part of the engine halts (it would never catch up).
        let target = writer.next_seqs();
        let give_up = Instant::now() + Duration::from_hours(1);
        // Once every version has a final status, the checkpoint (which makes the replicas
        // durable) is asked for at once: the run's time then includes that durability, not
        // the wait for the checkpoint's next tick (up to 200 ms, a sixth of a 100k-object run).
        while !engine.wait_for(&target, Duration::from_millis(2)).await {
            if sink.done() + sink.failed() >= n {
                engine.checkpoint_now();
            }
            if let Some(h) = engine.halts().first() {
                return Err(format!("the engine halted: {h}"));
            }
            if Instant::now() > give_up {
                return Err("timed out waiting for replication".into());
            }
        }
        engine.shutdown().await.map_err(|e| e.to_string())
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
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999), "max": hist.max() as f64 / 1000.0},
        "peak_rss_bytes": peak,
        "peak_rss_scope": if peak_is_run { "run" } else { "process" },
        "destinations": a.destinations,
        "destination_kind": a.destination,
        "size": a.size,
        "partitions": a.partitions,
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
        std::fs::write(path, format!("{report}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
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
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &a.svg {
        std::fs::write(path, svg(&hist)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if failed > 0 {
        return Err(format!("{failed} replications failed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
