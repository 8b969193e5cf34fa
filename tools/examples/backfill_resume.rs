//! `s3repl backfill` of a large bucket, killed midway and resumed (issue 28: "Backfill of
//! 100,000 small versions resumes after SIGKILL and skips what is done"), on a loopback
//! `SeaweedFS`: `--objects` versions are put; plain `ListObjectVersions` paging of the bucket
//! is timed (the baseline); a backfill is killed (`SIGKILL`) once it has listed half of them; a second
//! one resumes from the saved position; a third, from the start (`--restart`), must append
//! nothing. Then the local log is read back: every version must be in it exactly once.
//!
//! Reported: how much the resumed backfill listed again, each run's counts and rate, the rate
//! against the listing baseline, and the log's versions (missing, twice).
//!
//! Usage: `scripts/backfill-resume.sh [--objects N] [--concurrency C]`. Prints one JSON object;
//! exits 1 when a version is missing from the log or in it twice.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::cast_precision_loss)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use object_store::ObjectStoreExt as _;
use s3repl::dest::S3VersionReader;
use s3repl::record::VersionRecord;
use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY, SeaweedFs, options};

#[derive(Parser, Debug)]
#[command(about = "A large backfill killed midway and resumed")]
struct Args {
    /// The `s3repl` binary.
    #[arg(long)]
    s3repl: PathBuf,
    /// Objects in the bucket (one version each).
    #[arg(long, default_value_t = 100_000)]
    objects: usize,
    /// Puts, and the backfill's reads, in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Log partitions of the backfill's data directory.
const PARTITIONS: u32 = 4;

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
        Ok((report, sound)) => {
            println!("{report}");
            if sound { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn measure(args: &Args) -> Result<(serde_json::Value, bool), String> {
    let server = SeaweedFs::start("backfill-resume", &["src-bucket"])?;
    server.enable_versioning("src-bucket")?;
    let endpoint = server.endpoint();
    let store =
        s3repl::dest::s3_store(&options(&endpoint, "src-bucket")).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..args.objects {
        let (store, limit) = (store.clone(), limit.clone());
        puts.spawn(async move {
            let _p = limit.acquire().await;
            let path = object_store::path::Path::from(format!("existing/{i:07}"));
            store.put(&path, vec![b'x'; 64].into()).await.map_err(|e| e.to_string())
        });
    }
    while let Some(done) = puts.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    eprintln!("{} objects put in {:.1} s", args.objects, started.elapsed().as_secs_f64());

    // The baseline: plain `ListObjectVersions` paging of the bucket.
    let reader = S3VersionReader::new(&options(&endpoint, "src-bucket"));
    let started = Instant::now();
    let listed = s3repl_tests::seaweed::list_all(&reader).await?;
    let listing_per_s = listed as f64 / started.elapsed().as_secs_f64();

    let data = std::env::temp_dir().join(format!("s3repl-backfill-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let config = settings(&data, &endpoint)?;
    let backfill = |more: &[&str]| {
        let mut cmd = Command::new(&args.s3repl);
        cmd.args(["backfill", "--config", config.to_str().unwrap_or_default()])
            .args(["--bucket", "src-bucket", "--json"])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(more);
        cmd
    };

    // Killed once it has listed half the bucket (its progress lines follow saved positions).
    let started = Instant::now();
    let mut child = backfill(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut progress = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut line = String::new();
    let before_kill = loop {
        line.clear();
        if progress.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            let _ = child.wait();
            return Err("the first backfill ended before half the bucket was listed".into());
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let Some(progress) = v.get("progress") else { continue };
        if progress.get("listed").and_then(serde_json::Value::as_u64).unwrap_or(0)
            >= (args.objects / 2) as u64
        {
            break progress.clone();
        }
    };
    child.kill().map_err(|e| e.to_string())?;
    let _ = child.wait();
    let killed_after_s = started.elapsed().as_secs_f64();

    let run = |more: &[&str]| -> Result<(serde_json::Value, f64), String> {
        let started = Instant::now();
        let out = backfill(more).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("backfill failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(text.lines().last().unwrap_or_default())
            .map_err(|e| format!("backfill's report: {e}"))?;
        Ok((report, started.elapsed().as_secs_f64()))
    };
    let (resumed, resumed_s) = run(&[])?;
    let (again, again_s) = run(&["--restart"])?;

    // Every version in the log exactly once.
    let counts = versions_in_log(&data.join("log"))?;
    let twice = counts.values().filter(|n| **n > 1).count();
    let keys: std::collections::HashSet<&str> = counts.keys().map(|(k, _)| k.as_str()).collect();
    let missing =
        (0..args.objects).filter(|i| !keys.contains(format!("existing/{i:07}").as_str())).count();
    let _ = std::fs::remove_dir_all(&data);
    let resumed_listed =
        resumed.get("listed").and_then(serde_json::Value::as_u64).unwrap_or(0) as f64;
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok((
        serde_json::json!({
            "objects": args.objects,
            "listing_per_s": round(listing_per_s),
            "killed": {"after_s": round(killed_after_s), "progress": before_kill},
            "resumed": {"report": resumed, "seconds": round(resumed_s),
                        "listed_per_s": round(resumed_listed / resumed_s),
                        "ratio_to_listing": round(resumed_listed / resumed_s / listing_per_s)},
            "from_the_start": {"report": again, "seconds": round(again_s)},
            "log": {"versions": counts.len(), "missing": missing, "twice": twice},
        }),
        missing == 0 && twice == 0,
    ))
}

/// The backfill's settings under `data` (a local log of [`PARTITIONS`]; one rule selecting
/// every existing version for a destination the backfill never writes to).
fn settings(data: &Path, endpoint: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(data.join("replication")).map_err(|e| e.to_string())?;
    std::fs::write(
        data.join("replication/src-bucket.xml"),
        r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>all</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><ExistingObjectReplication><Status>Enabled</Status></ExistingObjectReplication><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::elsewhere</Bucket></Destination></Rule></ReplicationConfiguration>"#,
    )
    .map_err(|e| e.to_string())?;
    let s3 = format!(
        "endpoint = \"{endpoint}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\nallow_http = true\n"
    );
    let config = data.join("s3repl.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[log]\npartitions = {PARTITIONS}\n[source]\nkind = \"s3\"\nbuckets = [\"src-bucket\"]\n{s3}\
             [[destinations]]\narn = \"arn:aws:s3:::elsewhere\"\nkind = \"s3\"\nbucket = \"elsewhere\"\n{s3}",
            data.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(config)
}

/// How many times each (key, version id) is in the local log at `dir`.
fn versions_in_log(dir: &Path) -> Result<HashMap<(String, String), usize>, String> {
    let mut counts = HashMap::new();
    for partition in 0..PARTITIONS {
        let mut reader = s3repl::log::LogReader::open(
            s3repl::log::FileStorage,
            dir,
            partition,
            0,
            s3repl::log::ReadOptions::default(),
        );
        let mut batch = s3repl::log::RecordBatch::default();
        loop {
            batch.clear();
            if reader.read_records(1024, &mut batch).map_err(|e| e.to_string())? == 0 {
                break;
            }
            for rec in batch.iter() {
                let r = VersionRecord::decode(rec.payload).map_err(|e| e.to_string())?;
                *counts.entry((r.key, r.version_id)).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}
