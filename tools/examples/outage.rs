//! A destination outage under load (issue 31's targets), measured end to end: `s3repl run`
//! replicating one source bucket to two destinations, each a versioned bucket on its own
//! loopback `SeaweedFS`. Versions are offered at `--rate` for the whole run; after `--warmup`
//! seconds the first server is stopped with SIGTERM for `--outage` seconds, then started again
//! on the same ports and data.
//!
//! Measured once a second from the replicator's `/metrics` and `/proc`: completions per
//! destination, parked operations, RSS. Reported: the healthy destination's rate before and
//! during the outage; when the backlog started draining after the server answered again and
//! at what rate, against the rate at which the same replicator copies a backlog of the same
//! size into a destination that stays up (measured first, in the same run); RSS before,
//! at its peak and after the drain; log lines during the outage; and the versions at each
//! destination (none missing, none twice).
//!
//! Usage: `scripts/outage.sh [--rate R] [--warmup S] [--outage S] [--after S] [--control]`. Prints one
//! JSON object.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::LocalVersionStore;
use s3repl::record::VersionRecord;
use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY, SeaweedFs};

const KEY: &str = "outage-admin";
const SECRET: &str = "outage-admin-secret";
const DOWN: &str = "arn:aws:s3:::down";
const HEALTHY: &str = "arn:aws:s3:::healthy";

#[derive(Parser, Debug)]
#[command(about = "A destination outage under load")]
struct Args {
    /// The `s3repl` binary.
    #[arg(long)]
    s3repl: PathBuf,
    /// Versions offered per second, throughout.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Seconds of load before the outage.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Seconds the first destination's server is stopped.
    #[arg(long, default_value_t = 30)]
    outage: u64,
    /// Seconds of load after the server is back (the drain must finish within them).
    #[arg(long, default_value_t = 60)]
    after: u64,
    /// Object size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// The control run: the same schedule with the first server left running through the
    /// "outage", so what a run's memory does without an outage can be told from what the
    /// outage leaves behind.
    #[arg(long)]
    control: bool,
}

/// The replicator, killed when dropped.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match measure(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn settings(data: &Path, down: &str, healthy: &str) -> Result<PathBuf, String> {
    let s3 = |arn: &str, endpoint: &str, bucket: &str| {
        format!(
            "[[destinations]]\narn = \"{arn}\"\nkind = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\nallow_http = true\n"
        )
    };
    let toml = format!(
        "data_dir = \"{}\"\n[log]\npartitions = 4\n{}{}",
        data.display(),
        s3(DOWN, down, "down"),
        s3(HEALTHY, healthy, "healthy")
    );
    let path = data.join("s3repl.toml");
    std::fs::write(&path, toml).map_err(|e| e.to_string())?;
    let rule = |id: &str, p: u32, arn: &str| {
        format!(
            "<Rule><ID>{id}</ID><Priority>{p}</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>{arn}</Bucket></Destination></Rule>"
        )
    };
    std::fs::create_dir_all(data.join("replication")).map_err(|e| e.to_string())?;
    for (bucket, rules) in [
        ("src", format!("{}{}", rule("down", 1, DOWN), rule("healthy", 2, HEALTHY))),
        ("warm", rule("down", 1, DOWN)),
    ] {
        std::fs::write(
            data.join(format!("replication/{bucket}.xml")),
            format!(
                r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role>{rules}</ReplicationConfiguration>"#
            ),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(path)
}

fn scrape(admin: &str) -> String {
    Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("{admin}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn metric(text: &str, name: &str, destination: &str) -> u64 {
    let prefix = format!("{name}{{destination=\"{destination}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A gauge without labels from `/metrics`, bytes as MiB (0 when absent).
fn gauge_mib(text: &str, name: &str) -> f64 {
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |b| b / 1_048_576.0)
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A number of `/proc/PID/status` (`field` with its colon; a memory figure's `kB` dropped), or
/// `None` when unreadable.
fn status_number(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// A memory figure of `/proc/PID/status`, in MiB (0 when unreadable). `RssAnon` is the heap
/// and stacks, `RssFile` the mapped files (the binary's pages among them): which of the two an
/// outage leaves behind says what to look at.
fn status_mib(pid: u32, field: &str) -> f64 {
    status_number(pid, field).map_or(0.0, |kb| kb as f64 / 1024.0)
}

/// The process's thread count (0 if unreadable).
fn threads(pid: u32) -> u64 {
    status_number(pid, "Threads:").unwrap_or(0)
}

/// Appends versions `range` of `bucket`, keys `prefix/N` (bytes into the source store,
/// records into the log).
fn append(
    writer: &LogWriter,
    store: &LocalVersionStore,
    bucket: &str,
    prefix: &str,
    range: std::ops::Range<u64>,
    body: &[u8],
) -> Result<(), String> {
    let mut records = Vec::new();
    for i in range {
        let key = format!("{prefix}/{i:08}");
        store.put(bucket, &key, "v1", body).map_err(|e| e.to_string())?;
        let r = VersionRecord {
            bucket: bucket.into(),
            key: key.clone(),
            version_id: "v1".into(),
            size: body.len() as u64,
            blake3: Some(*blake3::hash(body).as_bytes()),
            commit_time_ms: s3repl_tests::now_ms(),
            ..VersionRecord::default()
        };
        records.push((key, r.to_bytes().map_err(|e| e.to_string())?));
    }
    let batch: Vec<(&str, &str, &[u8])> =
        records.iter().map(|(k, r)| (bucket, k.as_str(), r.as_slice())).collect();
    writer.append_batch(&batch).map_err(|e| e.to_string())?;
    Ok(())
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Offers `rate` versions a second of bucket `src` until `stop`, counting them in `issued`.
fn load(
    writer: &LogWriter,
    store: &LocalVersionStore,
    rate: f64,
    body: &[u8],
    issued: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), String> {
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Acquire) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        if due > sent {
            let n = (due - sent).min(2000);
            append(writer, store, "src", "k", sent..sent + n, body)?;
            sent += n;
            issued.store(sent, Ordering::Release);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.sync().map_err(|e| e.to_string())
}

#[allow(clippy::too_many_lines)]
fn measure(a: &Args) -> Result<serde_json::Value, String> {
    let mut down = SeaweedFs::start("outage-down", &["down"])?;
    down.enable_versioning("down")?;
    let healthy = SeaweedFs::start("outage-healthy", &["healthy"])?;
    healthy.enable_versioning("healthy")?;
    let data = std::env::temp_dir().join(format!("s3repl-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let config = settings(&data, &down.endpoint(), &healthy.endpoint())?;
    let log_path = data.join("run.log");
    let mut child = Command::new(&a.s3repl)
        .args(["run", "--config"])
        .arg(&config)
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("S3REPL_ADMIN_ACCESS_KEY_ID", KEY)
        .env("S3REPL_ADMIN_SECRET_ACCESS_KEY", SECRET)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    let pid = child.id();
    let _run = Run(child);
    let admin = line.trim().strip_prefix("admin endpoint: ").ok_or(line.clone())?.to_owned();
    let store = LocalVersionStore::new(data.join("source")).durable(false);
    let writer =
        LogWriter::open(&data.join("log"), LogConfig { partitions: 4, ..LogConfig::default() })
            .map_err(|e| e.to_string())?;
    let body: Vec<u8> = (0..a.size).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect();
    let issued = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let lines = || std::fs::read_to_string(&log_path).map_or(0, |s| s.lines().count());
    let backlog = (a.rate * a.outage as f64) as u64;

    let report = std::thread::scope(|scope| -> Result<serde_json::Value, String> {
        // A measurement that fails stops the load too: the scope waits for the loader.
        let _stop_on_return = StopOnDrop(&stop);
        let loader = scope.spawn(|| load(&writer, &store, a.rate, &body, &issued, &stop));
        let started = Instant::now();
        let (rss_peak, parked_peak) = (std::cell::Cell::new(0.0f64), std::cell::Cell::new(0u64));
        // Samples every 100 ms until `done` says so (or `limit` passes).
        let watch = |what: &str,
                     limit: Duration,
                     done: &dyn Fn(&Sample) -> bool|
         -> Result<Sample, String> {
            let from = Instant::now();
            loop {
                let text = scrape(&admin);
                let s = Sample {
                    at: started.elapsed().as_secs_f64(),
                    down: metric(&text, "s3repl_operations_completed_total", DOWN),
                    healthy: metric(&text, "s3repl_operations_completed_total", HEALTHY),
                    parked: metric(&text, "s3repl_destination_parked_operations", DOWN),
                    rss: rss_mib(pid),
                    anon: status_mib(pid, "RssAnon:"),
                    file: status_mib(pid, "RssFile:"),
                    threads: threads(pid),
                    heap_in_use: gauge_mib(&text, "s3repl_heap_in_use_bytes"),
                    heap_free: gauge_mib(&text, "s3repl_heap_free_bytes"),
                    issued: issued.load(Ordering::Acquire),
                };
                rss_peak.set(rss_peak.get().max(s.rss));
                parked_peak.set(parked_peak.get().max(s.parked));
                if done(&s) {
                    return Ok(s);
                }
                if from.elapsed() > limit {
                    return Err(format!("{what}: not within {limit:?} ({s:?})"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        // The same replicator under the same live load catching up on a backlog the size of
        // the outage's (bucket `warm`, replicated to the first destination alone): its rate.
        let first =
            watch("the load to start", Duration::from_secs(30), &|s| s.at >= 1.0 && s.healthy > 0)?;
        let warm_from = watch("the load to settle", Duration::from_secs(30), &|s| s.at >= 8.0)?;
        append(&writer, &store, "warm", "w", 0..backlog, &body)?;
        let warm_to = watch("the catch-up", Duration::from_mins(15), &|s| {
            s.down >= s.issued + backlog && s.issued > 0
        })?;
        let catch_up_rate = (warm_to.down - warm_from.down) as f64 / (warm_to.at - warm_from.at);
        eprintln!("catching up under the live load: {catch_up_rate:.0} versions/s");
        let before =
            watch("the warm-up", Duration::from_secs(a.warmup + 60), &|s| s.at >= a.warmup as f64)?;

        // The outage.
        let at_stop = lines();
        if !a.control {
            down.stop()?;
        }
        let stopped = watch("a sample", Duration::from_secs(1), &|_| true)?;
        let what = if a.control { "left running (control)" } else { "stopped" };
        eprintln!("{what}: the first destination's server at {:.1} s", stopped.at);
        let until = stopped.at + a.outage as f64;
        let last = watch("the outage", Duration::from_secs(a.outage + 30), &|s| s.at >= until)?;
        let lines_during = lines() - at_stop;
        if !a.control {
            down.restart(&["down"])?;
        }
        let back = watch("a sample", Duration::from_secs(1), &|_| true)?;
        eprintln!("the server answers again at {:.1} s ({} parked)", back.at, back.parked);
        let moved = watch("the drain to start", Duration::from_mins(1), &|s| s.down > back.down)?;
        let drained = watch("the drain", Duration::from_mins(15), &|s| s.parked == 0)?;
        let rss_peak = rss_peak.get();
        let until = drained.at + a.after as f64;
        watch("the load after", Duration::from_secs(a.after + 60), &|s| s.at >= until)?;
        stop.store(true, Ordering::Release);
        loader.join().map_err(|_| "the loader panicked")??;
        let total = issued.load(Ordering::Acquire);
        let end = watch("the last versions", Duration::from_mins(10), &|s| {
            s.down >= total + backlog && s.healthy >= total
        })?;
        std::thread::sleep(Duration::from_secs(3));
        let (rss_after, anon_after, file_after) =
            (rss_mib(pid), status_mib(pid, "RssAnon:"), status_mib(pid, "RssFile:"));
        let after = watch("a sample", Duration::from_secs(5), &|_| true)?;

        let drain_rate = (drained.down - back.down) as f64 / (drained.at - back.at).max(0.001);
        // Before the catch-up (which shares the replicator with the live load).
        let healthy_before = (warm_from.healthy - first.healthy) as f64 / (warm_from.at - first.at);
        let healthy_during = (last.healthy - stopped.healthy) as f64 / (last.at - stopped.at);
        let versions = |server: &SeaweedFs, bucket: &str| -> Result<(usize, usize), String> {
            let counts = server.version_counts(bucket)?;
            Ok((counts.len(), counts.values().filter(|n| **n > 1).count()))
        };
        let (down_keys, down_twice) = versions(&down, "down")?;
        let (healthy_keys, healthy_twice) = versions(&healthy, "healthy")?;
        let expected_down = usize::try_from(total + backlog).unwrap_or(usize::MAX);
        let expected_healthy = usize::try_from(total).unwrap_or(usize::MAX);
        Ok(serde_json::json!({
            "control": a.control,
            "offered_rate": a.rate,
            "outage_seconds": last.at - stopped.at,
            "issued": total,
            "catch_up_rate_under_load": catch_up_rate,
            "parked_peak": parked_peak.get(),
            "drain": {
                "first_progress_after_return_s": moved.at - back.at,
                "drained_after_return_s": drained.at - back.at,
                "rate": drain_rate,
                "ratio_to_catch_up": drain_rate / catch_up_rate,
            },
            "healthy_destination": {
                "rate_before": healthy_before,
                "rate_during_outage": healthy_during,
                "ratio": if healthy_before > 0.0 { healthy_during / healthy_before } else { 0.0 },
            },
            "rss_mib": {"at_start": first.rss, "before": before.rss, "peak": rss_peak, "after_drain": rss_after},
            "rss_anon_mib": {"before": before.anon, "after_drain": anon_after},
            "rss_file_mib": {"before": before.file, "after_drain": file_after},
            "threads": {"before": before.threads, "after_drain": threads(pid)},
            "heap_mib": {
                "in_use_before": before.heap_in_use, "free_before": before.heap_free,
                "in_use_after_drain": after.heap_in_use, "free_after_drain": after.heap_free,
            },
            "log_lines_during_outage": lines_during,
            "log_lines_per_second_during_outage": lines_during as f64 / (last.at - stopped.at),
            "seconds": end.at,
            "versions": {
                "down": {"keys": down_keys, "expected": expected_down, "missing": expected_down.saturating_sub(down_keys), "twice": down_twice},
                "healthy": {"keys": healthy_keys, "expected": expected_healthy, "missing": expected_healthy.saturating_sub(healthy_keys), "twice": healthy_twice},
            },
        }))
    });
    let _ = std::fs::remove_dir_all(&data);
    report
}

/// One look at the replicator.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the load started.
    at: f64,
    /// Completions at the first destination, the second.
    down: u64,
    healthy: u64,
    /// Operations parked for the first destination.
    parked: u64,
    rss: f64,
    /// Of `rss`: anonymous memory (heap, stacks), mapped files.
    anon: f64,
    file: f64,
    /// The replicator's threads.
    threads: u64,
    /// The allocator's heap in use and freed-but-kept, MiB (`/metrics`; 0 where not glibc).
    heap_in_use: f64,
    heap_free: f64,
    /// Versions the load had appended.
    issued: u64,
}
