//! `s3repl log gen | inspect | read | tail | repair`: synthetic versions into a log,
//! verification, the read rate beside a plain read of the same files, following, and
//! truncating damage that recovery leaves to an operator.

use crate::error::CliError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use s3repl::config::StorageClass;
use s3repl::log::{
    Backend, Durability, FileStorage, LogConfig, LogReader, LogWriter, ReadOptions, RecordBatch,
    inspect, read_partitions, segment_files,
};
use s3repl::record::{ContentHeaders, SseInfo, VersionRecord};
use s3repl::rules::{EventKind, MetadataChanges, SseKind};
use serde_json::json;

/// `s3repl log` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Append synthetic object versions (realistic keys, sizes, tags) and report append rate
    /// and latency.
    Gen(GenArgs),
    /// Verify every checksum of a log, read-only.
    Inspect(InspectArgs),
    /// Read a whole log as a replicator catching up does (every checksum verified), in rounds
    /// alternating with a plain 1 MiB `pread` of the same files, and report both rates.
    Read(ReadArgs),
    /// Print records as JSON lines as they are appended.
    Tail(TailArgs),
    /// Show (and with `--truncate`, cut off) damage in a partition's last segment that is
    /// followed by valid records, which the writer refuses to truncate by itself.
    Repair(RepairArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Arguments of `s3repl log gen`.
#[derive(Debug, clap::Args)]
pub(crate) struct GenArgs {
    /// The log directory (created if needed).
    #[arg(long, required_unless_present = "kafka_brokers")]
    dir: Option<PathBuf>,
    /// Publish to a Kafka topic on these brokers instead (`--kafka-topic`; it must exist).
    #[arg(long, conflicts_with = "dir")]
    kafka_brokers: Option<String>,
    /// The topic for `--kafka-brokers`.
    #[arg(long, default_value = "versions")]
    kafka_topic: String,
    /// Number of versions to append.
    #[arg(long)]
    count: u64,
    /// Partitions (fixed when the log is created).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Seed of the generator: the same seed gives the same records (in the same order with
    /// `--threads 1`; with more threads, their interleaving varies, each key's order does not).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Records per append call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Durability: `every-batch` (default), `interval:<ms>` or `none`.
    #[arg(long, default_value = "every-batch", value_parser = parse_durability)]
    durability: Durability,
    /// Concurrent appending threads (group commit shares fsyncs between them).
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Number of distinct tenants (key prefixes), skewed: tenant i gets weight 1/(i+1).
    #[arg(long, default_value_t = 50)]
    tenants: u64,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "every-batch" => Ok(Durability::EveryBatch),
        "none" => Ok(Durability::None),
        _ => s
            .strip_prefix("interval:")
            .and_then(|ms| ms.parse().ok())
            .map(|ms| Durability::Interval(Duration::from_millis(ms)))
            .ok_or_else(|| format!("durability is every-batch, interval:<ms> or none, not {s:?}")),
    }
}

/// A small deterministic generator (`SplitMix64`). Hand-written on purpose: `s3repl log gen`
/// promises the same records for the same seed across releases, which general-purpose RNG
/// crates do not guarantee for their seeded generators.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        items.get(i).copied().unwrap_or_default()
    }
}

const WORDS: &[&str] =
    &["invoice", "photo", "backup", "report", "log", "video", "thumb", "export", "model", "index"];
const EXTS: &[&str] =
    &["pdf", "jpg", "tar.gz", "csv", "log", "mp4", "png", "parquet", "bin", "json"];

/// The `Content-Type` a writer would give a file with this extension.
fn content_type(ext: &str) -> &'static str {
    match ext {
        "pdf" => "application/pdf",
        "jpg" => "image/jpeg",
        "png" => "image/png",
        "tar.gz" => "application/gzip",
        "csv" => "text/csv",
        "log" => "text/plain",
        "mp4" => "video/mp4",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// One synthetic version: a skewed tenant, a dated path, a lognormal-ish size, 0–3 tags,
/// mostly puts (with a content type from the extension) with some delete markers, metadata
/// updates (of tags, ACLs or Object Lock) and version deletes.
fn synth(rng: &mut SplitMix, n: u64, tenants: u64) -> VersionRecord {
    // Tenant skew: pick a tenant with probability ∝ 1/(i+1) by inverting a harmonic draw.
    let h: f64 = (1..=tenants).map(|i| 1.0 / i as f64).sum();
    let mut x = (rng.below(1_000_000) as f64 / 1_000_000.0) * h;
    let mut tenant = 0;
    for i in 1..=tenants {
        x -= 1.0 / i as f64;
        if x <= 0.0 {
            tenant = i - 1;
            break;
        }
    }
    let word = rng.pick(WORDS);
    let ext = rng.pick(EXTS);
    let key = format!(
        "tenant-{tenant:04}/{}/{:02}/{:02}/{word}-{n}.{ext}",
        2020 + rng.below(6),
        1 + rng.below(12),
        1 + rng.below(28)
    );
    let roll = rng.below(100);
    let operation = match roll {
        0..=89 => EventKind::Put,
        90..=95 => EventKind::DeleteMarker,
        96..=98 => EventKind::MetadataUpdate,
        _ => EventKind::DeleteVersion,
    };
    // Sizes: 4 KiB * 2^k, k skewed low (most objects small, a few large).
    let size = if operation == EventKind::DeleteMarker {
        0
    } else {
        4096u64 << rng.below(12).min(rng.below(12))
    };
    let tags = (0..rng.below(4))
        .map(|i| {
            let name = ["class", "team", "retention"]
                .get(usize::try_from(i).unwrap_or(0))
                .copied()
                .unwrap_or("class");
            (name.to_owned(), format!("v{}", rng.below(5)))
        })
        .collect();
    let kms = rng.chance(10);
    // What changed, for metadata updates: mostly tags, some ACLs, some Object Lock.
    let changes = match rng.below(10) {
        0..=5 => MetadataChanges::TAGS,
        6 | 7 => MetadataChanges::ACL,
        _ => MetadataChanges::RETENTION | MetadataChanges::LEGAL_HOLD,
    };
    let content = ContentHeaders {
        content_type: (operation == EventKind::Put).then(|| content_type(ext).to_owned()),
        ..ContentHeaders::default()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    VersionRecord {
        bucket: "source".into(),
        key,
        version_id: format!("{:016x}", rng.next()),
        operation,
        size,
        etag: format!("{:032x}", u128::from(rng.next()) << 64 | u128::from(rng.next())),
        commit_time_ms: now,
        storage_class: if rng.chance(5) {
            StorageClass::StandardIa
        } else {
            StorageClass::Standard
        },
        tags,
        user_metadata: vec![("origin".into(), "s3repl-log-gen".into())],
        sse: if kms {
            SseInfo {
                kind: SseKind::SseKms,
                kms_key_id: Some("arn:aws:kms:us-east-1:111122223333:key/gen".into()),
                wrapped_dek: None,
            }
        } else {
            SseInfo::default()
        },
        content,
        changes,
        ..VersionRecord::default()
    }
}

/// Records generated ahead of each timed append phase of `s3repl log gen` (bounds its memory
/// to about this many encoded records).
const GEN_ROUND: u64 = 1 << 18;

/// What one `s3repl log gen` thread did.
struct GenThread {
    hist: Histogram<u64>,
    bytes: u64,
    append: Duration,
    generate: Duration,
}

/// Where `log gen` appends: the segment log, or a Kafka topic.
enum GenLog {
    Local(LogWriter),
    Kafka(Box<s3repl::pipeline::KafkaWriter>),
}

impl GenLog {
    fn open(a: &GenArgs) -> Result<Self, CliError> {
        if let Some(brokers) = &a.kafka_brokers {
            let settings = s3repl::pipeline::KafkaSettings::new(brokers, &a.kafka_topic, "s3repl");
            return Ok(GenLog::Kafka(Box::new(s3repl::pipeline::KafkaWriter::new(&settings)?)));
        }
        let dir = a.dir.as_ref().ok_or_else(|| CliError::settings("--dir or --kafka-brokers"))?;
        let config = LogConfig {
            partitions: a.partitions,
            durability: a.durability,
            ..LogConfig::default()
        };
        Ok(GenLog::Local(LogWriter::open(dir, config)?))
    }

    /// Appends a batch; durable (or acknowledged by the brokers) when this returns, as the
    /// log's durability says.
    fn append_batch(&self, batch: &[(&str, &str, &[u8])]) -> Result<(), CliError> {
        match self {
            GenLog::Local(w) => w.append_batch(batch).map(|_| ()).map_err(CliError::Log),
            GenLog::Kafka(w) => w.append_batch(batch).map(|_| ()).map_err(CliError::Engine),
        }
    }
}

/// `s3repl log gen`. The run alternates untimed generation rounds (every thread synthesizes
/// and encodes its share of the next [`GEN_ROUND`] records) with timed append phases (every
/// thread appends what it generated), the threads meeting at a barrier between phases. The
/// reported rate is of appending alone: the synthesizer's string formatting costs more CPU
/// than the writer, and on two cores it would otherwise be measured as the log's.
fn generate(a: &GenArgs) -> ExitCode {
    let writer = match GenLog::open(a) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("s3repl log gen: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = a.threads.max(1) as u64;
    let barrier = Barrier::new(a.threads.max(1));
    // Set by a thread that failed; every thread stops at the next phase boundary (a thread
    // that returned early would leave the others waiting at the barrier forever).
    let failed = AtomicBool::new(false);
    // Made here, not in the threads: a thread failing before its first barrier would leave
    // the others waiting. Each thread records into a copy; this one adds them up.
    let mut hist = match Histogram::<u64>::new_with_bounds(1, 60_000_000, 3) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("s3repl log gen: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let results: Vec<Result<GenThread, CliError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (writer, barrier, failed) = (&writer, &barrier, &failed);
                let empty = hist.clone();
                scope.spawn(move || {
                    let mut rng = SplitMix(a.seed ^ (t.wrapping_mul(0xA076_1D64_78BD_642F)));
                    let mut out = GenThread {
                        hist: empty,
                        bytes: 0,
                        append: Duration::ZERO,
                        generate: Duration::ZERO,
                    };
                    let mut error = None;
                    let mut n = t;
                    let mut round_start = 0;
                    while round_start < a.count {
                        let round = GEN_ROUND.min(a.count - round_start);
                        round_start += round;
                        let mine = round / threads + u64::from(t < round % threads);
                        let t0 = Instant::now();
                        let recs: Result<Vec<(String, Vec<u8>)>, CliError> = (0..mine)
                            .map(|_| {
                                let r = synth(&mut rng, n, a.tenants);
                                n += threads;
                                Ok(r.to_bytes().map(|b| (r.key, b))?)
                            })
                            .collect();
                        let recs = recs.unwrap_or_else(|e| {
                            error.get_or_insert(e);
                            failed.store(true, Ordering::Relaxed);
                            Vec::new()
                        });
                        barrier.wait();
                        out.generate += t0.elapsed();
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let phase = Instant::now();
                        for chunk in recs.chunks(a.batch.max(1)) {
                            let batch: Vec<(&str, &str, &[u8])> = chunk
                                .iter()
                                .map(|(k, b)| ("source", k.as_str(), b.as_slice()))
                                .collect();
                            let t0 = Instant::now();
                            if let Err(e) = writer.append_batch(&batch) {
                                error.get_or_insert(e);
                                failed.store(true, Ordering::Relaxed);
                                break;
                            }
                            let us =
                                u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                            out.hist.saturating_record(us);
                            out.bytes += chunk.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
                        }
                        barrier.wait();
                        out.append += phase.elapsed();
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    error.map_or(Ok(out), Err)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Err(CliError::internal("a generator thread panicked")))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let (mut bytes, mut append, mut generate) = (0, 0.0f64, 0.0f64);
    for r in results {
        match r {
            Ok(g) => {
                let _ = hist.add(&g.hist);
                bytes += g.bytes;
                // Every thread's append phases span the same barrier-to-barrier wall time, give
                // or take a wake-up; the longest is the run's.
                append = append.max(g.append.as_secs_f64());
                generate = generate.max(g.generate.as_secs_f64());
            }
            Err(e) => {
                eprintln!("s3repl log gen: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let report = json!({
        "log": if a.kafka_brokers.is_some() { "kafka" } else { "local" },
        "records": a.count,
        "bytes": bytes,
        "seconds": secs,
        "append_seconds": append,
        "generate_seconds": generate,
        "records_per_s": a.count as f64 / append,
        "records_per_s_with_generation": a.count as f64 / secs,
        "append_calls": hist.len(),
        "batch": a.batch,
        "threads": threads,
        "append_latency_us": {"p50": hist.value_at_quantile(0.5), "p99": hist.value_at_quantile(0.99), "max": hist.max()},
    });
    let text = match a.format {
        Format::Json => report.to_string(),
        Format::Text => format!(
            "appended {} records ({:.1} MB) in {append:.2} s of appending: {:.0} records/s ({:.0} records/s counting the {secs:.2} s run, whose untimed generation rounds took {generate:.2} s); append call latency p50 {} µs, p99 {} µs, max {} µs ({} calls of {} records, {} threads)",
            a.count,
            bytes as f64 / 1e6,
            a.count as f64 / append,
            a.count as f64 / secs,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.max(),
            hist.len(),
            a.batch,
            threads
        ),
    };
    println!("{text}");
    ExitCode::SUCCESS
}

/// Arguments of `s3repl log inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The log directory.
    #[arg(long)]
    dir: PathBuf,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn inspect_cmd(a: &InspectArgs) -> ExitCode {
    match inspect(&FileStorage, &a.dir) {
        Ok(i) => {
            match a.format {
                Format::Json => println!(
                    "{}",
                    json!({"partitions": i.partitions, "segments": i.segments, "records": i.records,
                           "torn_tail_bytes": i.torn_tail_bytes, "torn_tail_records": i.torn_tail_records,
                           "lost_records": i.lost_records})
                ),
                Format::Text => println!(
                    "{}: {} partitions, {} segments, {} records, {} torn tail bytes{}{}",
                    if i.lost_records > 0 { "lost records" } else { "healthy" },
                    i.partitions,
                    i.segments,
                    i.records,
                    i.torn_tail_bytes,
                    if i.torn_tail_bytes > 0 {
                        format!(
                            " ({} records a crash cut short, never durable; the writer truncates them when it next opens the log)",
                            i.torn_tail_records
                        )
                    } else {
                        String::new()
                    },
                    if i.lost_records > 0 {
                        format!(
                            "; {} records the log had made durable are gone (the writer refuses to open: see s3repl log repair)",
                            i.lost_records
                        )
                    } else {
                        String::new()
                    }
                ),
            }
            if i.lost_records > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(s3repl::LogError::Corrupt { partition, segment, offset, reason }) => {
            match a.format {
                Format::Json => println!(
                    "{}",
                    json!({"error": "corrupt", "partition": partition, "segment": segment, "offset": offset})
                ),
                Format::Text => println!(
                    "corrupt: partition {partition}, segment {segment}, offset {offset}: {reason}"
                ),
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("s3repl log inspect: {e}");
            ExitCode::from(2)
        }
    }
}

/// How the log is read: `s3repl log read --backend`, and `[log] backend` in `s3repl run`'s
/// settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendArg {
    /// What the engine uses: a read-ahead thread (`io_uring`, else `pread`) on two or more
    /// CPUs, `pread` in the calling thread on one.
    Auto,
    /// `io_uring` on a read-ahead thread.
    Uring,
    /// `pread` on a read-ahead thread.
    ReadAhead,
    /// `pread` in the calling thread.
    Std,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => Backend::Auto,
            BackendArg::Uring => Backend::Uring,
            BackendArg::ReadAhead => Backend::ReadAhead,
            BackendArg::Std => Backend::Std,
        }
    }
}

/// Arguments of `s3repl log read`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    /// The log directory (read-only; a writer may be appending).
    #[arg(long)]
    dir: PathBuf,
    /// How the log is read.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Timed rounds, after one untimed round that warms the page cache; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// One round of each side: wall seconds and the process's CPU seconds.
#[derive(Debug, Default, Clone, Copy)]
struct Timed {
    secs: f64,
    cpu: f64,
}

/// CPU seconds this process (all its threads) has used.
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) } == 0;
    if ok { ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9 } else { 0.0 }
}

fn timed(f: impl FnOnce() -> Result<u64, ReadFailure>) -> Result<(u64, Timed), ReadFailure> {
    let (t, c) = (Instant::now(), process_cpu_seconds());
    let n = f()?;
    Ok((n, Timed { secs: t.elapsed().as_secs_f64(), cpu: process_cpu_seconds() - c }))
}

/// Why `s3repl log read` stopped: the exit status says which, as `inspect`'s does.
#[derive(Debug)]
enum ReadFailure {
    /// A record other than the torn tail is damaged (exit 1).
    Damaged(String),
    /// Anything else (exit 2).
    Other(String),
}

impl From<String> for ReadFailure {
    fn from(e: String) -> Self {
        ReadFailure::Other(e)
    }
}

/// Plain 1 MiB `pread`s of `files` into `buf`: the bytes read.
fn plain_read(files: &[PathBuf], buf: &mut [u8]) -> Result<u64, ReadFailure> {
    use std::os::unix::fs::FileExt;
    let mut total = 0u64;
    for f in files {
        let file = std::fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let mut at = 0u64;
        loop {
            let n = file.read_at(buf, at).map_err(|e| format!("{}: {e}", f.display()))?;
            if n == 0 {
                break;
            }
            at += n as u64;
        }
        total += at;
    }
    Ok(total)
}

/// Reads every partition of `dir` from its oldest record (`firsts[p]`) with `opts`: the
/// records read.
fn reader_read(dir: &Path, firsts: &[u64], opts: ReadOptions) -> Result<u64, ReadFailure> {
    let mut batch = RecordBatch::new();
    let mut records = 0u64;
    for (p, &from) in (0u32..).zip(firsts) {
        let mut r = LogReader::open(FileStorage, dir, p, from, opts);
        // A reader stops at a bad frame the first time, since a writer may be completing it;
        // a second look that still finds it bad (with a valid record after it) is damage.
        let mut looks = 0;
        while looks < 2 {
            batch.clear();
            let n = r.read_records(4096, &mut batch).map_err(|e| match e {
                s3repl::LogError::Corrupt { .. } => ReadFailure::Damaged(e.to_string()),
                e => ReadFailure::Other(e.to_string()),
            })?;
            records += n as u64;
            looks = if n == 0 { looks + 1 } else { 0 };
        }
    }
    Ok(records)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Exits 0 with the report, 1 when the log is damaged (a record other than the torn tail),
/// 2 on other errors.
fn read_cmd(a: &ReadArgs) -> ExitCode {
    match read_rates(a) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(ReadFailure::Damaged(e)) => {
            eprintln!("s3repl log read: damaged: {e}");
            ExitCode::from(1)
        }
        Err(ReadFailure::Other(e)) => {
            eprintln!("s3repl log read: {e}");
            ExitCode::from(2)
        }
    }
}

/// The report of `s3repl log read`.
fn read_rates(a: &ReadArgs) -> Result<String, ReadFailure> {
    let partitions = read_partitions(&FileStorage, &a.dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} is not a log directory", a.dir.display()))?;
    let (mut files, mut firsts) = (Vec::new(), Vec::new());
    for p in 0..partitions {
        let segments = segment_files(&FileStorage, &a.dir, p).map_err(|e| e.to_string())?;
        // Retention may have removed a partition's oldest segments.
        firsts.push(segments.first().map_or(0, |(first, _)| *first));
        files.extend(segments.into_iter().map(|(_, path)| path));
    }
    let opts = ReadOptions { backend: a.backend.into(), ..ReadOptions::default() };
    let mut buf = vec![0u8; 1 << 20];
    let (mut plain, mut reader) = (Vec::new(), Vec::new());
    let (mut records, mut bytes, mut cpu) = (0u64, 0u64, 0.0);
    for round in 0..=a.rounds.max(1) {
        let (read_bytes, plain_round) = timed(|| plain_read(&files, &mut buf))?;
        let (read_records, reader_round) = timed(|| reader_read(&a.dir, &firsts, opts))?;
        if round > 0 {
            (records, bytes) = (read_records, read_bytes);
            plain.push(plain_round.secs);
            reader.push(reader_round.secs);
            cpu += reader_round.cpu / reader_round.secs.max(1e-9);
        }
    }
    let rounds = a.rounds.max(1);
    let (plain, reader) = (median(plain), median(reader));
    let per = |secs: f64| secs * 1e9 / records.max(1) as f64;
    let ratio = if reader > 0.0 { plain / reader } else { 0.0 };
    let cpus = cpu / rounds as f64;
    let backend =
        a.backend.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
    Ok(match a.format {
        Format::Json => json!({
            "records": records,
            "bytes": bytes,
            "rounds": rounds,
            "backend": backend,
            "plain_ns_per_record": per(plain),
            "reader_ns_per_record": per(reader),
            "reader_records_per_s": records as f64 / reader.max(1e-9),
            "ratio_to_plain": ratio,
            "reader_cpus": cpus,
        })
        .to_string(),
        Format::Text => format!(
            "read {records} records ({:.1} MB) with backend {backend}, median of {rounds} rounds: \
             plain 1 MiB pread {:.1} ns/record ({:.2} GB/s); reader {:.1} ns/record ({:.1} M \
             records/s, {:.2} CPUs busy): {:.1}% of the plain read",
            bytes as f64 / 1e6,
            per(plain),
            bytes as f64 / plain.max(1e-9) / 1e9,
            per(reader),
            records as f64 / reader.max(1e-9) / 1e6,
            cpus,
            100.0 * ratio
        ),
    })
}

/// Arguments of `s3repl log tail`.
#[derive(Debug, clap::Args)]
pub(crate) struct TailArgs {
    /// The log directory.
    #[arg(long)]
    dir: PathBuf,
    /// Only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at this sequence number in every followed partition (default: the current end).
    #[arg(long)]
    from: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this long without a new record (milliseconds).
    #[arg(long)]
    idle_exit_ms: Option<u64>,
}

fn tail(a: &TailArgs) -> ExitCode {
    let partitions = match read_partitions(&FileStorage, &a.dir) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("s3repl log tail: {} is not a log directory", a.dir.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("s3repl log tail: {e}");
            return ExitCode::from(2);
        }
    };
    let which: Vec<u32> = a.partition.map_or_else(|| (0..partitions).collect(), |p| vec![p]);
    let mut readers = Vec::new();
    for p in which {
        let from = if let Some(f) = a.from {
            f
        } else {
            // The current end: read through what exists.
            let mut r = LogReader::open(FileStorage, &a.dir, p, 0, ReadOptions::default());
            let mut sink = RecordBatch::new();
            loop {
                sink.clear();
                match r.read_records(4096, &mut sink) {
                    Ok(0) => break r.next_seq(),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("s3repl log tail: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
        };
        readers.push(LogReader::open(FileStorage, &a.dir, p, from, ReadOptions::default()));
    }
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut last = Instant::now();
    let mut batch = RecordBatch::new();
    loop {
        let mut any = false;
        for r in &mut readers {
            batch.clear();
            if let Err(e) = r.read_records(256, &mut batch) {
                eprintln!("s3repl log tail: {e}");
                return ExitCode::from(2);
            }
            for rec in batch.iter() {
                let line = match VersionRecord::decode(rec.payload) {
                    Ok(v) => json!({
                        "partition": r.partition(), "seq": rec.seq, "bucket": v.bucket, "key": v.key,
                        "version_id": v.version_id, "operation": v.operation.as_str(), "size": v.size,
                        "storage_class": v.storage_class.as_str(), "sse": v.sse.kind.as_str(),
                        "tags": v.tags.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                        "commit_time_ms": v.commit_time_ms, "is_replica": v.is_replica, "existing": v.existing,
                    }),
                    Err(e) => {
                        json!({"partition": r.partition(), "seq": rec.seq, "undecodable": e.to_string(), "bytes": rec.payload.len()})
                    }
                };
                if writeln!(out, "{line}").is_err() {
                    return ExitCode::SUCCESS;
                }
                printed += 1;
                any = true;
                if a.max.is_some_and(|m| printed >= m) {
                    return ExitCode::SUCCESS;
                }
            }
        }
        if any {
            last = Instant::now();
            let _ = out.flush();
        } else {
            if a.idle_exit_ms.is_some_and(|ms| last.elapsed() >= Duration::from_millis(ms)) {
                return ExitCode::SUCCESS;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Runs a `log` subcommand.
pub(crate) fn run(cmd: &LogCommand) -> ExitCode {
    match cmd {
        LogCommand::Gen(a) => generate(a),
        LogCommand::Inspect(a) => inspect_cmd(a),
        LogCommand::Read(a) => read_cmd(a),
        LogCommand::Tail(a) => tail(a),
        LogCommand::Repair(a) => repair_cmd(a),
    }
}

/// Arguments of `s3repl log repair`.
#[derive(Debug, clap::Args)]
pub(crate) struct RepairArgs {
    /// The log directory (no writer may have it open).
    #[arg(long)]
    dir: PathBuf,
    /// Truncate each damaged segment at its damage, dropping the records after it. Without
    /// this flag nothing is changed: the command only says what truncating would drop.
    #[arg(long)]
    truncate: bool,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Exit codes: 0 when nothing needs repair or `--truncate` repaired it; 1 when damage was
/// found and left as it is; 2 on errors (damage in an earlier segment, a writer holding the
/// log, not a log).
fn repair_cmd(a: &RepairArgs) -> ExitCode {
    let found = match s3repl::log::repair(&a.dir, a.truncate) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("s3repl log repair: {e}");
            return ExitCode::from(2);
        }
    };
    for d in &found {
        match a.format {
            Format::Json => println!(
                "{}",
                json!({
                    "partition": d.partition, "segment": d.segment, "offset": d.offset,
                    "reason": d.reason, "bytes": d.bytes, "next_seq": d.next_seq,
                    "records_after": d.records_after, "lost": d.lost,
                    "seqs_after": d.seqs_after.map(|(lo, hi)| [lo, hi]),
                    "checkpoints_past": d.checkpoints_past.iter()
                        .map(|(c, at)| json!({"consumer": c, "next": at})).collect::<Vec<_>>(),
                    "truncated": a.truncate,
                })
            ),
            Format::Text => println!(
                "partition {} segment {} offset {}: {}; {} {} bytes holding {} valid records{}{}{}",
                d.partition,
                d.segment,
                d.offset,
                d.reason,
                if a.truncate { "truncated" } else { "truncating drops" },
                d.bytes,
                d.records_after,
                d.seqs_after
                    .map(|(lo, hi)| format!(" (sequence numbers {lo} to {hi})"))
                    .unwrap_or_default(),
                if d.lost > 0 {
                    format!(
                        "; {} records below the durable mark are lost; {} the mark to {}",
                        d.lost,
                        if a.truncate { "lowered" } else { "lowers" },
                        d.next_seq
                    )
                } else {
                    String::new()
                },
                if d.checkpoints_past.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} the checkpoints past it to {}: {}",
                        if a.truncate { "lowered" } else { "lowers" },
                        d.next_seq,
                        d.checkpoints_past
                            .iter()
                            .map(|(c, at)| format!("{c} (at {at})"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        }
    }
    if found.is_empty() {
        if a.format == Format::Text {
            println!(
                "nothing to repair: every partition ends in valid records or a torn tail \
                 (which the writer truncates when it opens the log)"
            );
        }
        return ExitCode::SUCCESS;
    }
    if a.truncate {
        ExitCode::SUCCESS
    } else {
        if a.format == Format::Text {
            println!("nothing changed; run again with --truncate to drop them");
        }
        ExitCode::from(1)
    }
}
