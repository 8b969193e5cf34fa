//! The scale-out measurement behind `scripts/scale-out.sh` (issue 27): `s3repl run` processes in
//! one consumer group over a Kafka topic of committed versions, into a destination bound by
//! request latency.
//!
//! - The brokers: librdkafka's mock cluster, hosted by this process on 127.0.0.1 (the Kafka
//!   protocol over TCP, with a group coordinator; tansu 0.6's coordinator loses a group once a
//!   member leaves, which the killed run needs: `docs/design/kafka-log.md`). The group uses
//!   the consumer rebalance protocol (KIP-848, the brokers assign) unless `--group-protocol
//!   classic`; either way its session timeout is 6 s and its heartbeat 500 ms.
//! - The destination: a versioned `SeaweedFS` bucket behind a proxy that holds every request
//!   `--delay-ms` (default 50 ms, a remote region's round trip) before passing it on, with each
//!   process limited to `--in-flight` versions at once (default 8). A process then moves at most
//!   `in_flight / delay` versions a second whatever the CPU, so the measurement shows what the
//!   group adds rather than what two shared cores allow.
//! - The runs: one process, then two, then three, on the same workload (`--objects` versions of
//!   1 KiB, a fresh topic and group each), timed from the first append until the destination
//!   lists every version; then two processes, one `SIGKILL`ed once a third of the versions are
//!   replicated. The killed run counts each key's versions at the destination (its source
//!   writes two versions of each key), how long after the kill the survivor owned the dead
//!   process's partitions (`reassigned_s`: the brokers' doing — librdkafka's mock coordinator
//!   notices a dead member on a 1 s timer after the session timeout; with the classic
//!   protocol it then waits the session timeout less 1 s for members to rejoin, with the
//!   consumer protocol it assigns at the survivor's next heartbeat) and how long until they
//!   replicated again (`rebalance_s`).
//!
//! The last line printed is one JSON object; the exit status is 0 only when the killed run
//! has nothing missing and nothing written twice.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::cast_precision_loss)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use s3repl::pipeline::{KafkaSettings, KafkaWriter, LocalVersionStore};
use s3repl::record::{AppendRecord, VersionRecord};
use s3repl_tests::fault_proxy::FaultProxy;
use s3repl_tests::kafka_run::{GroupProtocol, Member, MockBrokers, SESSION_TIMEOUT_MS, configure};
use s3repl_tests::put_version;
use s3repl_tests::seaweed::SeaweedFs;

/// The topics' partition count: three processes hold four each.
const PARTITIONS: u32 = 12;
const SOURCE_BUCKET: &str = "src-bucket";
/// How often the destination is listed to see whether a run finished.
const POLL_MS: u64 = 500;

#[derive(Parser, Debug)]
#[command(about = "s3repl processes in a Kafka consumer group: scale-out and a SIGKILL")]
struct Args {
    /// The `s3repl` binary (built with the `kafka` feature, as the tools are).
    #[arg(long)]
    s3repl: PathBuf,
    /// Fewer versions (fits in CI).
    #[arg(long)]
    quick: bool,
    /// Keep the work directory (each process's configuration and log), and say where.
    #[arg(long)]
    keep: bool,
    /// Versions per run (default 6,000; 720 with `--quick`).
    #[arg(long)]
    objects: Option<usize>,
    /// Added latency of every destination request, in milliseconds.
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// Versions each process replicates at once (`[limits] max_in_flight`).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// The group's rebalance protocol: `consumer` (KIP-848: the brokers assign, and move a
    /// dead member's partitions once its session times out) or `classic` (the members
    /// assign; librdkafka's mock coordinator then also waits the session timeout less 1 s for
    /// the members to rejoin).
    #[arg(long, value_enum, default_value_t = Protocol::Consumer)]
    group_protocol: Protocol,
}

/// `--group-protocol`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Protocol {
    Classic,
    Consumer,
}

impl From<Protocol> for GroupProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Classic => GroupProtocol::Classic,
            Protocol::Consumer => GroupProtocol::Consumer,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(clean) => {
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("scale-out: {e}");
            ExitCode::from(2)
        }
    }
}

/// Everything the runs share.
struct Bench<'a> {
    args: &'a Args,
    brokers: String,
    mock: MockBrokers,
    server: SeaweedFs,
    proxy: FaultProxy,
    store: LocalVersionStore,
    source: PathBuf,
    work: PathBuf,
}

fn run(args: &Args) -> Result<bool, String> {
    let objects = args.objects.unwrap_or(if args.quick { 720 } else { 6000 });
    let work = tempfile::Builder::new()
        .prefix("s3repl-scale-out-")
        .tempdir()
        .map_err(|e| format!("a work directory: {e}"))?;
    let runs = ["one", "two", "three", "killed"];
    let server = SeaweedFs::start("scale-out", &runs)?;
    for b in runs {
        server.enable_versioning(b)?;
    }
    let proxy = FaultProxy::start_delaying(server.port(), Duration::from_millis(args.delay_ms))?;
    let mock = MockBrokers::start()?;
    let brokers = mock.bootstrap_servers().to_owned();
    let source = work.path().join("source");
    let store = LocalVersionStore::new(&source).durable(false);
    let bench = Bench {
        args,
        brokers,
        mock,
        server,
        proxy,
        store,
        source,
        work: work.path().to_path_buf(),
    };
    eprintln!(
        "scale-out: {objects} versions of 1 KiB a run; destination SeaweedFS behind a {} ms delay; {} in flight a process; {PARTITIONS} partitions",
        args.delay_ms, args.in_flight
    );
    let one = bench.throughput("one", 1, objects)?;
    let two = bench.throughput("two", 2, objects)?;
    let three = bench.throughput("three", 3, objects)?;
    let killed = bench.killed(objects)?;
    let clean = killed.missing == 0 && killed.duplicates == 0;
    if args.keep {
        eprintln!("scale-out: work directory kept: {}", work.keep().display());
    }
    let json = serde_json::json!({
        "one": {"objects_per_s": round(one)},
        "two": {"objects_per_s": round(two)},
        "three": {"objects_per_s": round(three)},
        "speedup_two": round(two / one),
        "speedup_three": round(three / one),
        "killed": {
            "versions": killed.versions,
            "replicated": killed.replicated,
            "missing": killed.missing,
            "duplicates": killed.duplicates,
            "rebalance_s": round(killed.rebalance_s),
            "reassigned_s": round(killed.reassigned_s),
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "group_protocol": format!("{:?}", args.group_protocol).to_lowercase(),
        },
        "workload": {
            "objects": objects,
            "size": 1024,
            "partitions": PARTITIONS,
            "delay_ms": args.delay_ms,
            "in_flight_per_process": args.in_flight,
        },
    });
    println!("{json}");
    Ok(clean)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What the killed run found at the destination.
struct Killed {
    versions: usize,
    replicated: usize,
    missing: usize,
    duplicates: usize,
    /// From the kill until a version of the dead process's partitions replicated again.
    rebalance_s: f64,
    /// From the kill until the survivor owned the dead process's partitions.
    reassigned_s: f64,
}

/// One `s3repl run` process.
struct Replicator {
    child: Child,
    log: PathBuf,
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replicator {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The partitions its last assignment named.
    fn assigned(&self) -> Option<Vec<u32>> {
        let text = self.text();
        let line = text.lines().rev().find(|l| {
            l.contains("Kafka partitions assigned") || l.contains("Kafka partitions revoked")
        })?;
        let list = line.split("partitions=[").nth(1)?.split(']').next()?;
        list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(|p| p.parse().ok()).collect()
    }
}

impl Bench<'_> {
    /// Starts a member of `group` replicating `topic` into the bucket `bucket`.
    fn start(&self, name: &str, topic: &str, bucket: &str) -> Result<Replicator, String> {
        let data = self.work.join(name);
        let io = |e: std::io::Error| format!("{}: {e}", data.display());
        let endpoint = self.proxy.endpoint();
        let limits = format!("max_in_flight = {}", self.args.in_flight);
        let config = configure(&Member {
            data: &data,
            brokers: &self.brokers,
            topic,
            group: &format!("{topic}-group"),
            source: &self.source,
            endpoint: &endpoint,
            bucket,
            limits: &limits,
            protocol: self.args.group_protocol.into(),
        })
        .map_err(io)?;
        let log = data.join("run.log");
        let stderr = std::fs::File::create(&log).map_err(io)?;
        let mut child = Command::new(&self.args.s3repl)
            .args(["run", "--config"])
            .arg(&config)
            .args(["--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("S3REPL_ADMIN_ACCESS_KEY_ID", "scale-out")
            .env("S3REPL_ADMIN_SECRET_ACCESS_KEY", "scale-out-secret")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.args.s3repl.display()))?;
        // The first line says the admin endpoint listens: the process is up.
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let replicator = Replicator { child, log };
        if !line.starts_with("admin endpoint: ") {
            return Err(format!("{name} did not start:\n{}", tail(&replicator.text())));
        }
        Ok(replicator)
    }

    /// Starts `n` members of a fresh group and waits until their assignments split the
    /// topic's partitions between them.
    fn group(&self, run: &str, n: usize) -> Result<Vec<Replicator>, String> {
        self.mock.create_topic(run, PARTITIONS)?;
        let members = (0..n)
            .map(|i| self.start(&format!("{run}-{i}"), run, run))
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let owned: Option<Vec<Vec<u32>>> = members.iter().map(Replicator::assigned).collect();
            if let Some(owned) = owned {
                let all: BTreeSet<u32> = owned.iter().flatten().copied().collect();
                let held: usize = owned.iter().map(Vec::len).sum();
                if owned.iter().all(|o| !o.is_empty())
                    && held == PARTITIONS as usize
                    && all.len() == held
                {
                    return Ok(members);
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = members.iter().map(|m| tail(&m.text())).collect();
                return Err(format!(
                    "{run}: the group never split the topic:\n{}",
                    logs.join("\n--\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes `count` versions (`rounds` of each key) to the source store; returns their
    /// records in append order.
    fn versions(
        &self,
        run: &str,
        count: usize,
        rounds: usize,
    ) -> Result<Vec<VersionRecord>, String> {
        let keys = count / rounds;
        let mut records = Vec::with_capacity(count);
        for round in 0..rounds {
            for k in 0..keys {
                let key = format!("{run}/{k:06}");
                let version = format!("r{round}");
                let mut body = format!("{key} {version} ").into_bytes();
                body.resize(1024, b'.');
                let record = put_version(&self.store, SOURCE_BUCKET, &key, &version, &body)
                    .map_err(|e| format!("the source store: {e}"))?;
                records.push(record);
            }
        }
        Ok(records)
    }

    fn append(&self, topic: &str, records: &[VersionRecord]) -> Result<(), String> {
        let writer = KafkaWriter::new(&KafkaSettings::new(&self.brokers, topic, "writers"))
            .map_err(|e| format!("the writer: {e}"))?;
        writer.append_records(records).map_err(|e| format!("appending: {e}"))?;
        Ok(())
    }

    fn replicated(&self, bucket: &str) -> Result<BTreeMap<String, usize>, String> {
        self.server.version_counts(bucket)
    }

    /// Versions a second of `n` processes on `objects` versions.
    fn throughput(&self, run: &str, n: usize, objects: usize) -> Result<f64, String> {
        let records = self.versions(run, objects, 1)?;
        let members = self.group(run, n)?;
        let started = Instant::now();
        self.append(run, &records)?;
        let deadline = started + Duration::from_mins(10);
        loop {
            let done: usize = self.replicated(run)?.values().sum();
            if done >= records.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{run}: {done} of {} versions in ten minutes", records.len()));
            }
            // Each look lists every version (curl, and SeaweedFS's CPU): not too often.
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        let rate = records.len() as f64 / started.elapsed().as_secs_f64();
        eprintln!("scale-out: {n} process(es): {rate:.1} versions/s");
        drop(members);
        Ok(rate)
    }

    /// Two processes; one is killed once a third of the versions are replicated.
    fn killed(&self, objects: usize) -> Result<Killed, String> {
        let run = "killed";
        let records = self.versions(run, objects, 2)?;
        let mut members = self.group(run, 2)?;
        let victim = members.remove(0);
        let dead: BTreeSet<u32> = victim.assigned().unwrap_or_default().into_iter().collect();
        let theirs = |key: &str| dead.contains(&partition_of(key));
        self.append(run, &records)?;
        let deadline = Instant::now() + Duration::from_mins(10);
        loop {
            let counts = self.replicated(run)?;
            if counts.values().sum::<usize>() * 3 >= records.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err("killed: a third never replicated".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut victim = victim;
        victim.child.kill().map_err(|e| format!("killing: {e}"))?;
        let killed_at = Instant::now();
        let _ = victim.child.wait();
        // Requests the victim sent before it died may still land (the proxy holds each for
        // the delay): its partitions count as moving again only past what they had a second
        // after the kill.
        std::thread::sleep(Duration::from_secs(1) + Duration::from_millis(self.args.delay_ms));
        let theirs_at_kill: usize =
            self.replicated(run)?.iter().filter(|(k, _)| theirs(k)).map(|(_, n)| n).sum();
        let mut rebalance = None;
        let mut reassigned = None;
        let survivor = members.first().ok_or("killed: no survivor")?;
        let deadline = Instant::now() + Duration::from_mins(10);
        loop {
            if reassigned.is_none()
                && survivor.assigned().is_some_and(|a| dead.iter().all(|p| a.contains(p)))
            {
                reassigned = Some(killed_at.elapsed().as_secs_f64());
            }
            let counts = self.replicated(run)?;
            let theirs_now: usize = counts.iter().filter(|(k, _)| theirs(k)).map(|(_, n)| n).sum();
            if rebalance.is_none() && theirs_now > theirs_at_kill {
                rebalance = Some(killed_at.elapsed().as_secs_f64());
            }
            if counts.values().sum::<usize>() >= records.len() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Settled: a version written twice would still arrive.
        std::thread::sleep(Duration::from_secs(2));
        let counts = self.replicated(run)?;
        drop(members);
        let mut expected: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &records {
            *expected.entry(r.key.as_str()).or_insert(0) += 1;
        }
        let (mut missing, mut duplicates) = (0, 0);
        for (key, want) in &expected {
            let got = counts.get(*key).copied().unwrap_or(0);
            missing += want.saturating_sub(got);
            duplicates += got.saturating_sub(*want);
        }
        duplicates += counts
            .iter()
            .filter(|(k, _)| !expected.contains_key(k.as_str()))
            .map(|(_, n)| n)
            .sum::<usize>();
        Ok(Killed {
            versions: records.len(),
            replicated: records.len() - missing,
            missing,
            duplicates,
            rebalance_s: rebalance.unwrap_or(f64::NAN),
            reassigned_s: reassigned.unwrap_or(f64::NAN),
        })
    }
}

/// The partition a key of the source bucket is appended to.
fn partition_of(key: &str) -> u32 {
    s3repl::log::partition_for(SOURCE_BUCKET, key, PARTITIONS)
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().rev().take(30).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}
