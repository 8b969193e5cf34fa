//! The webhook intake's throughput (issue 28's target): `s3repl run` with `[intake] webhook`,
//! its source a versioned `SeaweedFS` bucket holding `--events` objects, sent one event per
//! delivery (as `MinIO`'s webhook target sends them) by `--concurrency` connections at once.
//! Each event costs the replicator one `HEAD` of the version at the source, so beside the
//! intake's rate the same `HEAD`s are timed alone, at the same concurrency, in the same run.
//! No configuration is installed: the engine reads the records and replicates nothing, so what
//! is measured is intake (parse, `HEAD`, group-committed append and marks, answer).
//!
//! Before that, `s3repl backfill` of the same bucket (every version selected: one `HEAD` each,
//! group-committed appends) is timed beside plain `ListObjectVersions` paging of it, and
//! `s3repl verify` of it against a destination bucket holding a stamped replica of every
//! version — by the listings (the default), and with `--stamps` (a `HEAD` per version on each
//! side) — beside both buckets' listings paged at once.
//!
//! Usage: `scripts/intake-load.sh [--events N] [--concurrency C]`. Prints one JSON object.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::cast_precision_loss)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use object_store::ObjectStoreExt as _;
use s3repl::dest::S3VersionReader;
use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY, SeaweedFs, list_all, options};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "intake-load-token-0123456789";

#[derive(Parser, Debug)]
#[command(about = "Webhook intake throughput beside the source's HEAD rate")]
struct Args {
    /// The `s3repl` binary.
    #[arg(long)]
    s3repl: PathBuf,
    /// Objects, and events (one per delivery).
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// Deliveries (and, for the baseline, HEADs) in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(measure(&args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// One delivery in `MinIO`'s webhook shape.
fn delivery(key: &str, version: &str, seq: usize) -> String {
    format!(
        r#"{{"EventName":"s3:ObjectCreated:Put","Key":"src-bucket/{key}","Records":[{{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put","s3":{{"s3SchemaVersion":"1.0","bucket":{{"name":"src-bucket","arn":"arn:aws:s3:::src-bucket"}},"object":{{"key":"{key}","size":1024,"eTag":"e","versionId":"{version}","sequencer":"{seq:016X}"}}}}}}]}}"#
    )
}

async fn measure(args: &Args) -> Result<String, String> {
    let server = SeaweedFs::start("intake-load", &["src-bucket", "dst-bucket"])?;
    server.enable_versioning("src-bucket")?;
    server.enable_versioning("dst-bucket")?;
    let endpoint = server.endpoint();
    // The objects, and a replica of each, stamped as s3repl stamps them.
    let store =
        s3repl::dest::s3_store(&options(&endpoint, "src-bucket")).map_err(|e| e.to_string())?;
    let replicas =
        s3repl::dest::s3_store(&options(&endpoint, "dst-bucket")).map_err(|e| e.to_string())?;
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..args.events {
        let (store, replicas, limit) = (store.clone(), replicas.clone(), limit.clone());
        puts.spawn(async move {
            let _p = limit.acquire().await;
            let key = format!("load/{i:06}");
            let path = object_store::path::Path::from(key.as_str());
            let body = format!("{key} {}", "x".repeat(1024));
            let put = store.put(&path, body.clone().into()).await.map_err(|e| e.to_string())?;
            let version = put.version.unwrap_or_default();
            let mut attributes = object_store::Attributes::new();
            attributes.insert(
                object_store::Attribute::Metadata(s3repl::record::stamps::SOURCE_VERSION_ID.into()),
                version.clone().into(),
            );
            let opts = object_store::PutOptions { attributes, ..Default::default() };
            replicas.put_opts(&path, body.into(), opts).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((key, version))
        });
    }
    let mut objects: Vec<(String, String)> = Vec::with_capacity(args.events);
    while let Some(done) = puts.join_next().await {
        objects.push(done.map_err(|e| e.to_string())??);
    }
    objects.sort();
    // Backfill (each selected version: one HEAD, then group-committed appends) beside plain
    // `ListObjectVersions` paging of the same bucket.
    let reader = Arc::new(S3VersionReader::new(&options(&endpoint, "src-bucket")));
    let mut cpu = serde_json::Map::new();
    let at = Cpu::now(server.pid());
    let started = Instant::now();
    let listed = list_all(&reader).await?;
    let listing_per_s = listed as f64 / started.elapsed().as_secs_f64();
    cpu.insert("listing".into(), Cpu::now(server.pid()).per_version(at, listed, 0.0));
    // Verify's baseline: both buckets' listings paged at once.
    let at = Cpu::now(server.pid());
    let started = Instant::now();
    let mut listings = tokio::task::JoinSet::new();
    for bucket in ["src-bucket", "dst-bucket"] {
        let reader = S3VersionReader::new(&options(&endpoint, bucket));
        listings.spawn(async move { list_all(&reader).await });
    }
    let mut both_listed = 0usize;
    while let Some(done) = listings.join_next().await {
        both_listed += done.map_err(|e| e.to_string())??;
    }
    let two_listings_per_s = both_listed as f64 / started.elapsed().as_secs_f64();
    cpu.insert("two_listings".into(), Cpu::now(server.pid()).per_version(at, both_listed, 0.0));
    let backfill_dir =
        std::env::temp_dir().join(format!("s3repl-backfill-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&backfill_dir);
    std::fs::create_dir_all(backfill_dir.join("replication")).map_err(|e| e.to_string())?;
    std::fs::write(
        backfill_dir.join("replication/src-bucket.xml"),
        r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>all</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><ExistingObjectReplication><Status>Enabled</Status></ExistingObjectReplication><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::elsewhere</Bucket></Destination></Rule></ReplicationConfiguration>"#,
    )
    .map_err(|e| e.to_string())?;
    let backfill_config = backfill_dir.join("s3repl.toml");
    // The rule's destination is dst-bucket, where every version has its replica.
    let s3 = format!(
        "endpoint = \"{endpoint}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\nallow_http = true\n"
    );
    std::fs::write(
        &backfill_config,
        format!(
            "data_dir = \"{}\"\n[log]\npartitions = 4\n[source]\nkind = \"s3\"\nbuckets = [\"src-bucket\"]\n{s3}\
             [[destinations]]\narn = \"arn:aws:s3:::elsewhere\"\nkind = \"s3\"\nbucket = \"dst-bucket\"\n{s3}",
            backfill_dir.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let at = Cpu::now(server.pid());
    let started = Instant::now();
    let out = Command::new(&args.s3repl)
        .args([
            "backfill",
            "--config",
            backfill_config.to_str().unwrap_or_default(),
            "--bucket",
            "src-bucket",
            "--json",
        ])
        .args(["--concurrency", &args.concurrency.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("backfill failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let backfill_per_s = args.events as f64 / started.elapsed().as_secs_f64();
    cpu.insert("backfill".into(), Cpu::now(server.pid()).per_version(at, args.events, 0.0));
    let mut verify = |stamps: bool| -> Result<f64, String> {
        let at = Cpu::now(server.pid());
        let started = Instant::now();
        let out = Command::new(&args.s3repl)
            .args([
                "verify",
                "--config",
                backfill_config.to_str().unwrap_or_default(),
                "--bucket",
                "src-bucket",
            ])
            .args(["--format", "json", "--concurrency", &args.concurrency.to_string()])
            .args(stamps.then_some("--stamps"))
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "verify (stamps: {stamps}) found differences or failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Versions verify went through (each listed, and with --stamps read, on both
        // sides), per second.
        let per_s = (2 * args.events) as f64 / started.elapsed().as_secs_f64();
        let name = if stamps { "verify_stamps" } else { "verify" };
        cpu.insert(name.into(), Cpu::now(server.pid()).per_version(at, 2 * args.events, 0.0));
        Ok(per_s)
    };
    let verify_per_s = verify(false)?;
    let verify_stamps_per_s = verify(true)?;
    let _ = std::fs::remove_dir_all(&backfill_dir);
    // The replicator.
    let data = std::env::temp_dir().join(format!("s3repl-intake-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let config = data.join("s3repl.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[log]\npartitions = 4\n[source]\nkind = \"s3\"\nbuckets = [\"src-bucket\"]\n\
             endpoint = \"{endpoint}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\nallow_http = true\n\
             [intake]\nwebhook = true\nwebhook_token = \"{TOKEN}\"\n[admin]\nmax_connections = 512\n",
            data.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut child = Command::new(&args.s3repl)
        .args([
            "run",
            "--config",
            config.to_str().unwrap_or_default(),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("S3REPL_ADMIN_ACCESS_KEY_ID", "a")
        .env("S3REPL_ADMIN_SECRET_ACCESS_KEY", "b")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line).map_err(|e| e.to_string())?;
    }
    let admin =
        line.trim().strip_prefix("admin endpoint: http://").ok_or("no admin endpoint")?.to_owned();

    // Baseline: the same HEADs alone, at the same concurrency.
    let at = Cpu::now(server.pid());
    let started = Instant::now();
    let mut heads = tokio::task::JoinSet::new();
    for (key, version) in objects.clone() {
        let (reader, limit) = (reader.clone(), limit.clone());
        heads.spawn(async move {
            let _p = limit.acquire().await;
            reader.head(&key, &version).await.map_err(|e| e.to_string())
        });
    }
    while let Some(done) = heads.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    let heads_per_s = args.events as f64 / started.elapsed().as_secs_f64();
    cpu.insert("heads".into(), Cpu::now(server.pid()).per_version(at, args.events, 0.0));

    // The deliveries: `concurrency` keep-alive connections, one delivery at a time each.
    let replicator = child.id().to_string();
    let replicator_before = cpu_seconds(&replicator).unwrap_or_default().0;
    let at = Cpu::now(server.pid());
    let queue =
        Arc::new(parking_lot::Mutex::new(objects.into_iter().enumerate().collect::<Vec<_>>()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (queue, admin) = (queue.clone(), admin.clone());
        workers.spawn(async move {
            let mut conn = tokio::io::BufReader::new(
                tokio::net::TcpStream::connect(&admin).await.map_err(|e| e.to_string())?,
            );
            let mut latencies = Vec::new();
            loop {
                let Some((seq, (key, version))) = queue.lock().pop() else { break };
                let body = delivery(&key, &version, seq + 1);
                let t = Instant::now();
                let status = post(&mut conn, &admin, &body).await?;
                if status != 200 {
                    return Err(format!("delivery answered {status}"));
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        });
    }
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    while let Some(done) = workers.join_next().await {
        for l in done.map_err(|e| e.to_string())?? {
            let _ = histogram.record(u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        }
    }
    let events_per_s = args.events as f64 / started.elapsed().as_secs_f64();
    let replicator_cpu = cpu_seconds(&replicator).unwrap_or_default().0 - replicator_before;
    cpu.insert(
        "webhook".into(),
        Cpu::now(server.pid()).per_version(at, args.events, replicator_cpu),
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "events": args.events,
        "concurrency": args.concurrency,
        "events_per_s": (events_per_s * 10.0).round() / 10.0,
        "heads_per_s": (heads_per_s * 10.0).round() / 10.0,
        "ratio_to_heads": (events_per_s / heads_per_s * 1000.0).round() / 1000.0,
        "ack_p50_ms": ms(0.5),
        "ack_p99_ms": ms(0.99),
        "cpu_us_per_version": cpu,
        "listing_per_s": (listing_per_s * 10.0).round() / 10.0,
        "backfill_per_s": (backfill_per_s * 10.0).round() / 10.0,
        "backfill_ratio_to_listing": (backfill_per_s / listing_per_s * 1000.0).round() / 1000.0,
        "two_listings_per_s": (two_listings_per_s * 10.0).round() / 10.0,
        "verify_versions_per_s": (verify_per_s * 10.0).round() / 10.0,
        "verify_ratio_to_listings": (verify_per_s / two_listings_per_s * 1000.0).round() / 1000.0,
        "verify_stamps_versions_per_s": (verify_stamps_per_s * 10.0).round() / 10.0,
        "verify_stamps_ratio_to_listings":
            (verify_stamps_per_s / two_listings_per_s * 1000.0).round() / 1000.0,
    })
    .to_string())
}

/// CPU seconds (user and system) a process has used, and those of its children it waited
/// for, from `/proc/<pid>/stat` (fields 14–17, counted after the command name's closing
/// parenthesis), at 100 ticks per second.
fn cpu_seconds(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<f64> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let [user, system, c_user, c_system] = fields[..] else { return None };
    Some(((user + system) / 100.0, (c_user + c_system) / 100.0))
}

/// CPU used so far by the server, by this process (the measuring client), and by the
/// `s3repl` commands it ran and waited for.
#[derive(Clone, Copy)]
struct Cpu {
    server: f64,
    client: f64,
    commands: f64,
}

impl Cpu {
    fn now(server: u32) -> Self {
        let (server, _) = cpu_seconds(&server.to_string()).unwrap_or_default();
        let (client, commands) = cpu_seconds("self").unwrap_or_default();
        Self { server, client, commands }
    }

    /// µs per version since `before`, per party (the replicator's own share given apart:
    /// it is not a waited-for child while it runs).
    fn per_version(self, before: Self, versions: usize, s3repl: f64) -> serde_json::Value {
        let us = |s: f64| (s * 1e6 / versions.max(1) as f64).round();
        serde_json::json!({
            "seaweedfs": us(self.server - before.server),
            "client": us(self.client - before.client),
            "s3repl": us(self.commands - before.commands + s3repl),
        })
    }
}

/// One keep-alive POST of a delivery; the answer's status (its body read and dropped). The
/// connection is buffered: reading the answer's head a byte per syscall cost the measuring
/// client as much CPU as the replicator spent, on the same two cores.
async fn post(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    host: &str,
    body: &str,
) -> Result<u16, String> {
    let request = format!(
        "POST /-/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut status = None;
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if status.is_none() {
            status = l.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        } else if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut rest = vec![0u8; length];
    conn.read_exact(&mut rest).await.map_err(|e| e.to_string())?;
    status.ok_or_else(|| "no status".to_owned())
}
