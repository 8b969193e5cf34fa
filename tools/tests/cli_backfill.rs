//! `s3repl backfill` on a real `SeaweedFS`: existing versions (more than a listing page, a key
//! with several versions, a delete marker, keys no rule selects) appended once each, oldest
//! first per key; a second backfill appends nothing; one killed midway resumes from its saved
//! position; `s3repl run` then replicates them and `s3repl verify` finds the buckets agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt as _;
use s3repl_tests::fault_proxy::FaultProxy;
use s3repl_tests::seaweed::options;

/// `s3repl backfill --json` of `src-bucket` under `config`, with `more` arguments.
fn backfill_command(config: &Path, more: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3repl"));
    cmd.args(["backfill", "--config", config.to_str().unwrap(), "--bucket", "src-bucket"])
        .arg("--json")
        .args(more);
    cmd
}

fn backfill(config: &Path, more: &[&str]) -> Output {
    backfill_command(config, more).output().unwrap()
}

fn report(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// Puts `keys` (one version each) into `src-bucket`, 32 at once.
fn put_all(endpoint: &str, keys: &[String]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = s3repl::dest::s3_store(&options(endpoint, "src-bucket")).unwrap();
    runtime.block_on(async {
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = tokio::task::JoinSet::new();
        for k in keys {
            let (store, limit, k) = (store.clone(), limit.clone(), k.clone());
            tasks.spawn(async move {
                let _p = limit.acquire().await;
                let path = object_store::path::Path::from(k.as_str());
                store.put(&path, format!("body of {k}").into_bytes().into()).await.unwrap();
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
}

/// Issue 28, item 2.
#[test]
fn backfill_appends_existing_versions_once_and_resumes_after_a_kill() {
    let server = common::two_buckets("backfill");
    let endpoint = server.endpoint();
    // 1,100 keys under docs/ (more than a page), 40 under other/ (no rule selects them).
    let mut keys: Vec<String> = (0..1100).map(|i| format!("docs/{i:04}")).collect();
    keys.extend((0..40).map(|i| format!("other/{i:02}")));
    put_all(&endpoint, &keys);
    // Three versions of one key, then a delete marker on another.
    for body in ["one", "two", "three"] {
        let (code, _) = server.curl("PUT", "/src-bucket/docs/multi", body).unwrap();
        assert_eq!(code, 200);
    }
    let (code, _) = server.curl("DELETE", "/src-bucket/docs/0007", "").unwrap();
    assert_eq!(code, 204);
    let listed = 1100 + 40 + 3 + 1;
    let selected = 1100 + 3 + 1;

    // The source is read through a proxy adding 100 ms to each request, so that a backfill can
    // be killed midway (its second page takes half a second).
    let proxy = FaultProxy::start_delaying(server.port(), Duration::from_millis(100)).unwrap();
    let (data, config) = common::s3_to_s3(
        "backfill",
        &proxy.endpoint(),
        &endpoint,
        "",
        Some(&common::rule(
            "docs/",
            "<ExistingObjectReplication><Status>Enabled</Status></ExistingObjectReplication>",
            true,
        )),
    );
    let child = backfill_command(&config, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = common::Running(child);
    // Killed once it has taken its first page (its position saved), before it ends.
    let mut progress = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut progress, &mut line).unwrap();
    assert!(line.contains("\"progress\""), "{line}");
    assert!(child.0.try_wait().unwrap().is_none(), "the backfill ended before it could be killed");
    drop(child);
    let resumed = report(&backfill(&config, &[]));
    assert!(
        resumed["listed"].as_u64().unwrap() < listed / 2,
        "a resumed backfill lists only what is left: {resumed}"
    );
    assert!(resumed["enqueued"].as_u64().unwrap() > 0, "{resumed}");
    // Everything is in now: another backfill appends nothing; from the start it lists all, and
    // reads none of the versions appended before.
    // (Read through a proxy that records every request and delays none.)
    let recording =
        FaultProxy::start_picking(server.port(), std::sync::Arc::new(|_: &str, _| None)).unwrap();
    let again_config = data.join("again.toml");
    let settings = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&again_config, settings.replacen(&proxy.endpoint(), &recording.endpoint(), 1))
        .unwrap();
    let again = report(&backfill(&again_config, &["--restart"]));
    assert_eq!(again["listed"], listed, "{again}");
    assert_eq!(again["enqueued"], 0, "{again}");
    let seen = recording.seen();
    assert!(seen.iter().any(|(line, _)| line.starts_with("GET /src-bucket?")), "{seen:?}");
    assert!(
        !seen.iter().any(|(line, _)| line.starts_with("HEAD ")),
        "versions appended before are not read again"
    );

    // Replicated, once each, and proven.
    let (run, _) = common::spawn_run(
        &["--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"],
        &[("S3REPL_ADMIN_ACCESS_KEY_ID", "a"), ("S3REPL_ADMIN_SECRET_ACCESS_KEY", "b")],
        &data.join("run.log"),
    );
    let run = common::Running(run);
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let counts = server.version_counts("dst-bucket").unwrap();
        if counts.values().sum::<usize>() >= selected - 1 {
            assert_eq!(counts.get("docs/multi"), Some(&3), "{counts:?}");
            assert!(counts.keys().all(|k| k.starts_with("docs/")), "{counts:?}");
            assert_eq!(counts.values().sum::<usize>(), selected - 1, "no version twice");
            break;
        }
        assert!(Instant::now() < deadline, "{}", counts.values().sum::<usize>());
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(1));
    drop(run);
    // The three versions of docs/multi arrived oldest first: the current one is the last put.
    let (code, body) = server.curl("GET", "/dst-bucket/docs/multi", "").unwrap();
    assert_eq!((code, body.as_str()), (200, "three"));
    let (code, _) = server.curl("GET", "/dst-bucket/docs/0007", "").unwrap();
    assert_eq!(code, 404, "the delete marker replicated");
    // With --stamps: every replica paired with its source version, not only where the
    // listings disagree.
    let verify = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["verify", "--config", config.to_str().unwrap(), "--bucket", "src-bucket"])
        .arg("--stamps")
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
    let _ = std::fs::remove_dir_all(&data);
}

/// Issue 28, item 2: `s3repl run` taking bucket events backfills by itself, in the background,
/// when a configuration with `ExistingObjectReplication` Enabled is installed, and says how far
/// it got in `/-/status`.
#[test]
fn run_backfills_in_the_background_when_a_configuration_asks_for_existing_objects() {
    let server = common::two_buckets("backfill-run");
    let endpoint = server.endpoint();
    let keys: Vec<String> = (0..300).map(|i| format!("old/{i:03}")).collect();
    put_all(&endpoint, &keys);
    let (data, config) = common::s3_to_s3(
        "backfill-run",
        &endpoint,
        &endpoint,
        "[intake]\nwebhook = true\nwebhook_token = \"backfill-run-token-0123\"\n",
        None,
    );
    let (run, admin) = common::spawn_run(
        &["--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"],
        &[
            ("S3REPL_ADMIN_ACCESS_KEY_ID", "admin"),
            ("S3REPL_ADMIN_SECRET_ACCESS_KEY", "admin-secret"),
        ],
        &data.join("run.log"),
    );
    let run = common::Running(run);
    let doc = data.join("replication.json");
    std::fs::write(
        &doc,
        r#"{"Role":"arn:aws:iam::123456789012:role/r","Rules":[{"ID":"old","Priority":1,"Status":"Enabled",
            "Filter":{"Prefix":"old/"},"ExistingObjectReplication":{"Status":"Enabled"},
            "DeleteMarkerReplication":{"Status":"Disabled"},"Destination":{"Bucket":"arn:aws:s3:::dst-bucket"}}]}"#,
    )
    .unwrap();
    let aws = std::env::var("S3REPL_AWS").unwrap_or_else(|_| "aws".into());
    let put = Command::new(&aws)
        .args([
            "--endpoint-url",
            &admin,
            "s3api",
            "put-bucket-replication",
            "--bucket",
            "src-bucket",
        ])
        .args(["--replication-configuration", &format!("file://{}", doc.display())])
        .env("AWS_ACCESS_KEY_ID", "admin")
        .env("AWS_SECRET_ACCESS_KEY", "admin-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    // The CLI refuses while this replicator holds the log and the marks, and says why.
    let refused = backfill(&config, &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("backfills by itself"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    while server.version_counts("dst-bucket").unwrap().values().sum::<usize>() < 300 {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(data.join("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = Command::new("curl")
        .args(["-s", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "admin:admin-secret"])
        .arg(format!("{admin}/-/status/src-bucket"))
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["backfill"]["state"], "complete", "{status}");
    assert_eq!(status["backfill"]["enqueued"], 300, "{status}");
    drop(run);
    assert_eq!(server.version_counts("dst-bucket").unwrap().values().sum::<usize>(), 300);
    let _ = std::fs::remove_dir_all(&data);
}
