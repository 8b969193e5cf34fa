//! `s3repl run` as a process: the S3-compatible admin endpoint driven by the real AWS CLI
//! (`aws s3api put/get/delete-bucket-replication`), `SigV4` enforced, S3 error codes identical to
//! `s3repl validate`, configurations persisted across a restart, replication of versions
//! appended to the log into the embedded local destination, `/metrics`, the JSON status
//! route, and a graceful stop on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::LocalVersionStore;

const KEY: &str = "s3repl-admin";
const SECRET: &str = "s3repl-admin-secret";

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s3repl-cli-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running `s3repl run`; killed on drop if the test fails midway.
struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path) -> Server {
    start_on(data, "127.0.0.1:0")
}

fn log(data: &Path) -> String {
    std::fs::read_to_string(data.join("run.log")).unwrap_or_default()
}

fn aws(server: &Server, secret: &str, args: &[&str]) -> Output {
    aws_as(server, KEY, secret, args)
}

/// `aws s3api ARGS` against the server, signed with `key` and `secret`.
fn aws_as(server: &Server, key: &str, secret: &str, args: &[&str]) -> Output {
    aws_with(server, key, secret, &[], args)
}

/// [`aws_as`] with more environment variables.
fn aws_with(
    server: &Server,
    key: &str,
    secret: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let aws = std::env::var("S3REPL_AWS").unwrap_or_else(|_| "aws".into());
    Command::new(&aws)
        .args(["--endpoint-url", &server.endpoint, "s3api"])
        .args(args)
        .envs(env.iter().copied())
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the AWS CLI ({aws}): {e}; run scripts/test.sh, which installs it")
        })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn get_config(server: &Server, secret: &str) -> Output {
    aws(server, secret, &["get-bucket-replication", "--bucket", "src-bucket"])
}

/// `put-bucket-replication` of `file_arg` (`file://…`) on `src-bucket`.
fn put_config(server: &Server, key: &str, secret: &str, file_arg: &str) -> Output {
    let args = ["put-bucket-replication", "--bucket", "src-bucket"];
    aws_as(server, key, secret, &[&args[..], &["--replication-configuration", file_arg]].concat())
}

/// A plain HTTP GET (no signature).
fn http_get(server: &Server, path: &str) -> (u16, String) {
    let addr = server.endpoint.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn wait_for(what: &str, data: &Path, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", log(data));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append_versions(data: &Path, round: u32) {
    let store = LocalVersionStore::new(data.join("source")).durable(true);
    let writer =
        LogWriter::open(&data.join("log"), LogConfig { partitions: 4, ..LogConfig::default() })
            .unwrap();
    for i in 0..10u32 {
        let key = if i % 2 == 0 { format!("docs/{i}.txt") } else { format!("other/{i}.txt") };
        let version_id = format!("r{round}-{i}");
        let body = format!("{key} round {round}").into_bytes();
        let rec = common::put_version(&store, "src-bucket", &key, &version_id, &body);
        writer.append("src-bucket", &key, &rec.to_bytes().unwrap()).unwrap();
    }
}

fn replica(data: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(data.join("destinations/dst-bucket").join(key)).ok()
}

#[test]
fn the_aws_cli_configures_replication_and_versions_replicate() {
    let data = temp("e2e");
    let server = start(&data);
    let config = data.join("replication.json");
    std::fs::write(
        &config,
        r#"{"Role":"arn:aws:iam::123456789012:role/replication",
            "Rules":[{"ID":"docs","Priority":1,"Status":"Enabled","Filter":{"Prefix":"docs/"},
                      "DeleteMarkerReplication":{"Status":"Disabled"},
                      "Destination":{"Bucket":"arn:aws:s3:::dst-bucket","StorageClass":"STANDARD_IA"}}]}"#,
    )
    .unwrap();
    let file_arg = format!("file://{}", config.display());

    // No configuration yet: S3's not-found error.
    let none = get_config(&server, SECRET);
    assert!(!none.status.success());
    assert!(stderr(&none).contains("ReplicationConfigurationNotFoundError"), "{}", stderr(&none));

    // Bad credentials change nothing: a wrong secret, then an unknown access key.
    let forged = put_config(&server, KEY, "wrong-secret", &file_arg);
    assert!(stderr(&forged).contains("SignatureDoesNotMatch"), "{}", stderr(&forged));
    let unknown = put_config(&server, "nobody", SECRET, &file_arg);
    assert!(stderr(&unknown).contains("InvalidAccessKeyId"), "{}", stderr(&unknown));
    assert!(stderr(&get_config(&server, SECRET)).contains("ReplicationConfigurationNotFoundError"));

    // The seed's command.
    let put = put_config(&server, KEY, SECRET, &file_arg);
    assert!(put.status.success(), "{}", stderr(&put));
    let got = get_config(&server, SECRET);
    assert!(got.status.success(), "{}", stderr(&got));
    let got: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    let rule = &got["ReplicationConfiguration"]["Rules"][0];
    assert_eq!(rule["ID"], "docs");
    assert_eq!(rule["Destination"]["StorageClass"], "STANDARD_IA");

    // An invalid configuration gets the same S3 error code as `s3repl validate`, and the
    // installed configuration stays.
    let invalid = data.join("invalid.json");
    std::fs::write(
        &invalid,
        r#"{"Role":"arn:aws:iam::123456789012:role/replication",
            "Rules":[{"ID":"a","Priority":1,"Status":"Enabled","Filter":{"Prefix":"x/"},
                      "DeleteMarkerReplication":{"Status":"Disabled"},
                      "Destination":{"Bucket":"arn:aws:s3:::dst-bucket"}},
                     {"ID":"b","Priority":1,"Status":"Enabled","Filter":{"Prefix":"y/"},
                      "DeleteMarkerReplication":{"Status":"Disabled"},
                      "Destination":{"Bucket":"arn:aws:s3:::dst-bucket"}}]}"#,
    )
    .unwrap();
    let verdict = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["validate", "--format", "json", invalid.to_str().unwrap()])
        .output()
        .unwrap();
    let verdict: serde_json::Value = serde_json::from_slice(
        verdict.stdout.trim_ascii_end().rsplit(|b| *b == b'\n').next().unwrap(),
    )
    .unwrap();
    assert_eq!(verdict["valid"], false);
    let code = verdict["code"].as_str().unwrap();
    let refused = put_config(&server, KEY, SECRET, &format!("file://{}", invalid.display()));
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(&format!("({code})")),
        "expected {code}: {}",
        stderr(&refused)
    );
    let still: serde_json::Value =
        serde_json::from_slice(&get_config(&server, SECRET).stdout).unwrap();
    assert_eq!(still["ReplicationConfiguration"]["Rules"][0]["ID"], "docs");

    // Versions appended to the log replicate; only docs/ is selected.
    append_versions(&data, 1);
    wait_for("docs/0.txt to replicate", &data, || replica(&data, "docs/0.txt").is_some());
    wait_for("all docs/ replicas", &data, || {
        (0..10).step_by(2).all(|i| replica(&data, &format!("docs/{i}.txt")).is_some())
    });
    assert_eq!(replica(&data, "docs/4.txt").unwrap(), "docs/4.txt round 1");
    assert!(replica(&data, "other/1.txt").is_none());

    // Metrics (unauthenticated Prometheus text) and the status route (signed).
    let (status, metrics) = http_get(&server, "/metrics");
    assert_eq!(status, 200);
    wait_for("metrics to count 5 completions", &data, || {
        http_get(&server, "/metrics").1.contains(
            "s3repl_operations_completed_total{destination=\"arn:aws:s3:::dst-bucket\"} 5\n",
        )
    });
    assert!(metrics.contains("s3repl_log_records_read_total"), "{metrics}");
    // The allocator's heap (glibc only): something is in use.
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let in_use: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("s3repl_heap_in_use_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no heap gauge: {metrics}"));
        assert!(in_use > 1 << 20, "{in_use} bytes of heap in use");
        assert!(metrics.contains("\ns3repl_heap_free_bytes "), "{metrics}");
    }
    let (unsigned, body) = http_get(&server, "/-/status/src-bucket");
    assert_eq!(unsigned, 403, "{body}");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    let status = Command::new("curl")
        .args([
            "-sS",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            &format!("{KEY}:{SECRET}"),
            &format!("{}/-/status/src-bucket", server.endpoint),
        ])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&status.stdout)));
    assert_eq!(status["configured"], true);
    assert_eq!(status["operations_since_start"]["completed"], 5);
    assert_eq!(status["operations_since_start"]["failed"], 0);
    assert_eq!(status["metrics"][0]["completed_ops"], 5);

    // SIGTERM drains and exits 0; the configuration and the checkpoint persist.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut server = server;
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log(&data));
    assert!(log(&data).contains("checkpoint saved"));
    drop(server);

    let server = start(&data);
    let again: serde_json::Value =
        serde_json::from_slice(&get_config(&server, SECRET).stdout).unwrap();
    assert_eq!(again["ReplicationConfiguration"]["Rules"][0]["ID"], "docs");
    append_versions(&data, 2);
    wait_for("round 2 to replicate", &data, || {
        replica(&data, "docs/8.txt").as_deref() == Some("docs/8.txt round 2")
    });
    // The restart resumed from the checkpoint: round 1 was not replicated again (this process
    // counts only round 2's five docs/ versions once nothing is pending).
    wait_for("all round 2 replicas", &data, || {
        (0..10).step_by(2).all(|i| {
            replica(&data, &format!("docs/{i}.txt")).as_deref()
                == Some(format!("docs/{i}.txt round 2").as_str())
        })
    });
    let pending = "s3repl_operations_pending{destination=\"arn:aws:s3:::dst-bucket\"} 0\n";
    wait_for("nothing pending", &data, || http_get(&server, "/metrics").1.contains(pending));
    let metrics = http_get(&server, "/metrics").1;
    assert!(
        metrics.contains(
            "s3repl_operations_completed_total{destination=\"arn:aws:s3:::dst-bucket\"} 5\n"
        ),
        "{metrics}"
    );

    // DELETE removes it; later versions stay put.
    let del = aws(&server, SECRET, &["delete-bucket-replication", "--bucket", "src-bucket"]);
    assert!(del.status.success(), "{}", stderr(&del));
    assert!(stderr(&get_config(&server, SECRET)).contains("ReplicationConfigurationNotFoundError"));
    drop(server);
    let restarted = start(&data);
    assert!(
        stderr(&get_config(&restarted, SECRET)).contains("ReplicationConfigurationNotFoundError")
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn health_turns_503_when_a_log_partition_halts() {
    let data = temp("halt");
    provision(&data, "src-bucket");
    let server = start(&data);
    assert_eq!(http_get(&server, "/-/health"), (200, "ok\n".into()));
    assert!(http_get(&server, "/metrics").1.contains("\ns3repl_halts 0\n"));
    // A record whose frame is sound but whose payload is no version record: the reader of its
    // partition stops before it (nothing is skipped), and health says so.
    let writer =
        LogWriter::open(&data.join("log"), LogConfig { partitions: 4, ..LogConfig::default() })
            .unwrap();
    writer.append("src-bucket", "docs/bad.txt", b"not a version record").unwrap();
    wait_for("health to report the halt", &data, || http_get(&server, "/-/health").0 == 503);
    let (_, body) = http_get(&server, "/-/health");
    assert!(body.starts_with("halted\n"), "{body}");
    assert!(body.contains("record 0 cannot be decoded"), "{body}");
    assert!(http_get(&server, "/metrics").1.contains("\ns3repl_halts 1\n"));
    // A load test against it reports the halt (its figures measured a crippled engine). It
    // appends through its own writer, so ours goes first.
    drop(writer);
    let json = data.join("lt.json");
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["loadtest", "--rate", "50", "--duration", "0.2", "--bucket", "src-bucket"])
        .args(["--target-dir", data.to_str().unwrap(), "--admin", &server.endpoint])
        .args(["--drain-timeout", "0.5", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["halts"].as_array().map(Vec::len), Some(1), "{r}");
    assert!(r["halts"][0].as_str().unwrap().contains("record 0 cannot be decoded"), "{r}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("halted: "));
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn without_credentials_the_admin_endpoint_refuses_to_start() {
    let data = temp("nocreds");
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["run", "--data-dir", data.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"])
        .env_remove("S3REPL_ADMIN_ACCESS_KEY_ID")
        .env_remove("S3REPL_ADMIN_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("S3REPL_ADMIN_ACCESS_KEY_ID"));
    let _ = std::fs::remove_dir_all(&data);
}

/// Provisions a configuration of `bucket` (everything to `lt-dst`) as a file, before the
/// replicator starts: it is restored like a persisted one.
fn provision(data: &Path, bucket: &str) {
    std::fs::create_dir_all(data.join("replication")).unwrap();
    std::fs::write(
        data.join(format!("replication/{bucket}.xml")),
        r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>all</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::lt-dst</Bucket></Destination></Rule></ReplicationConfiguration>"#,
    )
    .unwrap();
}

#[test]
fn loadtest_drives_a_running_replicator() {
    let data = temp("loadtest");
    provision(&data, "lt-src");
    let server = start(&data);
    // A bucket without a configuration: said at once, not after a drain that replicates nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["loadtest", "--rate", "400", "--duration", "1", "--bucket", "unconfigured"])
        .args(["--target-dir", data.to_str().unwrap(), "--admin", &server.endpoint])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no replication configuration"));
    let json = data.join("lt.json");
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["loadtest", "--rate", "400", "--duration", "1", "--bucket", "lt-src"])
        .args(["--target-dir", data.to_str().unwrap(), "--admin", &server.endpoint])
        .args(["--rtc-threshold-ms", "60000", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\nlog:\n{}", String::from_utf8_lossy(&out.stderr), log(&data));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["engine"], "external");
    assert_eq!(r["halts"], serde_json::json!([]));
    assert_eq!(r["issued"], 400);
    assert_eq!(r["replicated"], 400);
    assert_eq!(r["rtc"]["met"], true);
    assert!(r["latency_ms"]["max"].as_f64().unwrap() > 0.0, "{r}");
    let replicas = walk(&data.join("destinations/lt-dst"));
    assert_eq!(replicas, 400);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries.map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk(&p) } else { 1 }).sum()
    })
}

/// Appends `n` put versions of `backlog/{round}/{i}` (one batch per 250), as the storage server
/// would while the replicator is down; returns the keys.
fn append_backlog(data: &Path, round: u32, n: u32) -> Vec<String> {
    let store = LocalVersionStore::new(data.join("source")).durable(false);
    let writer =
        LogWriter::open(&data.join("log"), LogConfig { partitions: 4, ..LogConfig::default() })
            .unwrap();
    let mut keys = Vec::new();
    let mut batch = Vec::new();
    for i in 0..n {
        let key = format!("docs/backlog/{round}/{i}");
        let version_id = format!("b{round}-{i}");
        let body = format!("{key} v").into_bytes();
        let rec = common::put_version(&store, "src-bucket", &key, &version_id, &body);
        batch.push((key.clone(), rec.to_bytes().unwrap()));
        keys.push(key);
        if batch.len() == 250 || i + 1 == n {
            let refs: Vec<(&str, &str, &[u8])> =
                batch.iter().map(|(k, b)| ("src-bucket", k.as_str(), b.as_slice())).collect();
            writer.append_batch(&refs).unwrap();
            batch.clear();
        }
    }
    keys
}

fn stop_cleanly(server: Server, data: &Path) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut server = server;
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log(data));
}

fn docs_config(data: &Path) -> String {
    let config = data.join("replication.json");
    std::fs::write(
        &config,
        r#"{"Role":"arn:aws:iam::123456789012:role/replication",
            "Rules":[{"ID":"docs","Priority":1,"Status":"Enabled","Filter":{"Prefix":"docs/"},
                      "DeleteMarkerReplication":{"Status":"Disabled"},
                      "Destination":{"Bucket":"arn:aws:s3:::dst-bucket"}}]}"#,
    )
    .unwrap();
    format!("file://{}", config.display())
}

/// Issue 25, finding 1: versions committed while the replicator was cleanly stopped all
/// replicate after the restart (the persisted configuration is in force before any record is
/// read), and a second restart finds nothing left behind.
#[test]
fn a_clean_restart_with_a_backlog_replicates_every_version() {
    let data = temp("backlog");
    let server = start(&data);
    let put = put_config(&server, KEY, SECRET, &docs_config(&data));
    assert!(put.status.success(), "{}", stderr(&put));
    stop_cleanly(server, &data);
    let keys = append_backlog(&data, 0, 2000);
    let server = start(&data);
    wait_for("the whole backlog to replicate", &data, || {
        keys.iter().all(|k| replica(&data, k).is_some())
    });
    stop_cleanly(server, &data);
    let keys = append_backlog(&data, 1, 2000);
    let server = start(&data);
    wait_for("the second backlog to replicate", &data, || {
        keys.iter().all(|k| replica(&data, k).is_some())
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// Issue 25, finding 6: a configuration file with an error never has its secrets printed, in
/// text or in the JSON log.
#[test]
fn configuration_errors_never_print_secrets() {
    let data = temp("secrets");
    let config = data.join("s3repl.toml");
    std::fs::write(
        &config,
        "[admin]\ncredentials = [{ access_key_id = \"k\", secret_access_key = \"ADMIN-SECRET-9f2\" ]\n\n[[destinations]]\narn = \"arn:aws:s3:::d\"\nkind = \"azure\"\nsecret_access_key = \"AZURE-KEY-77Qx==\"\n",
    )
    .unwrap();
    for format in ["text", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
            .args(["run", "--config", config.to_str().unwrap(), "--log-format", format])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(shown.contains("line 2"), "{shown}");
        assert!(
            !shown.contains("ADMIN-SECRET-9f2") && !shown.contains("AZURE-KEY-77Qx"),
            "{shown}"
        );
    }
    let _ = std::fs::remove_dir_all(&data);
}

fn start_on(data: &Path, listen: &str) -> Server {
    let args = ["--data-dir", data.to_str().unwrap(), "--admin-listen", listen];
    let env = [("S3REPL_ADMIN_ACCESS_KEY_ID", KEY), ("S3REPL_ADMIN_SECRET_ACCESS_KEY", SECRET)];
    let (child, endpoint) = common::spawn_run(&args, &env, &data.join("run.log"));
    Server { child, endpoint }
}

/// Issue 25, finding 7: a load test against a replicator that restarts during the run counts
/// what the replicator holds durably (its saved checkpoint), not its counters, which a restart
/// sets to zero (it reported 9,520 of 15,000 replicated when all 15,000 were there); and its
/// table shows the replicator's latencies, not zeros.
#[test]
fn loadtest_counts_durably_across_a_replicator_restart() {
    let data = temp("lt-restart");
    provision(&data, "lt-src");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let server = start_on(&data, &listen);
    let json = data.join("lt.json");
    let loadtest = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["loadtest", "--rate", "500", "--duration", "3", "--bucket", "lt-src"])
        .args(["--target-dir", data.to_str().unwrap(), "--admin", &server.endpoint])
        .args(["--rtc-threshold-ms", "60000", "--drain-timeout", "60"])
        .args(["--json", json.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop_cleanly(server, &data);
    // The port is free again once the old process is gone.
    let server = start_on(&data, &listen);
    let out = loadtest.wait_with_output().unwrap();
    assert!(out.status.success(), "log:\n{}", log(&data));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["issued"], 1500, "{r}");
    assert_eq!(r["replicated"], 1500, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(walk(&data.join("destinations/lt-dst")), 1500);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.trim_start().starts_with("500")).unwrap();
    let p99: f64 = row.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(p99 > 0.0, "{text}");
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// A second replicator on the same data directory is refused, saying why (it reported a
/// database lock), and leaves the first one running.
#[test]
fn a_second_replicator_on_the_same_data_directory_is_refused() {
    let data = temp("second");
    let first = start(&data);
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["run", "--data-dir", data.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"])
        .env("S3REPL_ADMIN_ACCESS_KEY_ID", KEY)
        .env("S3REPL_ADMIN_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another engine runs as consumer replicator"), "{stderr}");
    assert_eq!(stderr.matches("another engine").count(), 1, "said once: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("admin endpoint"));
    assert_eq!(http_get(&first, "/-/health").0, 200);
    drop(first);
    let _ = std::fs::remove_dir_all(&data);
}

/// S3's full error answers (issue 29, item 4): `Code`, `Message`, `Resource`, `RequestId`,
/// `HostId` and, where S3 has it, `BucketName`; `x-amz-request-id` and `x-amz-id-2` on every
/// answer; `ExpectedBucketOwner` checked against the configured owning account.
#[test]
fn errors_are_s3s_whole_answers_and_the_expected_bucket_owner_is_checked() {
    let data = temp("s3-answers");
    let config = data.join("s3repl.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n[admin]\naccount = \"123456789012\"\n", data.display()),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"];
    let env = [("S3REPL_ADMIN_ACCESS_KEY_ID", KEY), ("S3REPL_ADMIN_SECRET_ACCESS_KEY", SECRET)];
    let (child, endpoint) = common::spawn_run(&args, &env, &data.join("run.log"));
    let server = Server { child, endpoint };

    // The whole answer, as a client sees it (curl signs it).
    let signed = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-i", "--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{KEY}:{SECRET}")])
            .args([
                "-H",
                "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ])
            .args(extra)
            .arg(format!("{}/src-bucket?replication=", server.endpoint))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let answer = signed(&[]);
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    for part in [
        "<Code>ReplicationConfigurationNotFoundError</Code>",
        "<BucketName>src-bucket</BucketName>",
        "<Resource>/src-bucket</Resource>",
        "<RequestId>",
        "<HostId>",
    ] {
        assert!(answer.contains(part), "{part} missing: {answer}");
    }
    assert!(
        lower.contains("\r\nx-amz-request-id: ") && lower.contains("\r\nx-amz-id-2: "),
        "{answer}"
    );
    // A success carries them too.
    let health = Command::new("curl")
        .args(["-s", "-i", &format!("{}/-/health", server.endpoint)])
        .output()
        .unwrap();
    let health = String::from_utf8_lossy(&health.stdout).to_ascii_lowercase();
    assert!(health.starts_with("http/1.1 200"), "{health}");
    assert!(
        health.contains("\r\nx-amz-request-id: ") && health.contains("\r\nx-amz-id-2: "),
        "{health}"
    );

    // Another owner expected: refused; this one: answered.
    let expecting = |owner: &str| {
        let args = ["get-bucket-replication", "--bucket", "src-bucket"];
        stderr(&aws(&server, SECRET, &[&args[..], &["--expected-bucket-owner", owner]].concat()))
    };
    let other = expecting("111111111111");
    assert!(other.contains("AccessDenied"), "{other}");
    let ours = expecting("123456789012");
    assert!(ours.contains("ReplicationConfigurationNotFoundError"), "{ours}");
    drop(server);

    // An account that is not one is refused at start.
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n[admin]\naccount = \"12345\"\n", data.display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["run", "--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"])
        .envs(env)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("12-digit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tests' Python, beside `S3REPL_AWS` in the virtualenv `scripts/install-awscli.sh` makes.
fn python_bin() -> PathBuf {
    let aws = std::env::var("S3REPL_AWS").unwrap_or_else(|_| "aws".into());
    Path::new(&aws).with_file_name("python")
}

/// Runs the tests' Python with `args`, the endpoint and `src-bucket`, and the admin credentials.
fn python(server: &Server, args: &[&str]) -> Output {
    let python = python_bin();
    Command::new(&python)
        .args(args)
        .arg(&server.endpoint)
        .arg("src-bucket")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run scripts/test.sh, which installs boto3",
                python.display()
            )
        })
}

/// Issue 29: the maximal configurations, whose coverage of every member of botocore's own S3
/// model is checked (a member S3 adds later fails this test), round-trip through the admin
/// endpoint with boto3 and with the AWS CLI; then an exclusion filter put with boto3 decides
/// what replicates.
#[test]
fn boto3_round_trips_every_member_of_the_current_model_and_exclusions_replicate() {
    let data = temp("boto3");
    let server = start(&data);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/botocore_model.py");
    let out = python(&server, &[script]);
    assert!(out.status.success(), "{}\nlog:\n{}", stderr(&out), log(&data));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["members"].as_u64().unwrap() >= 40, "{report}");
    assert_eq!(report["documents"], 2, "{report}");
    // The AWS CLI v1 vendors an older botocore; pointed at boto3's newer model (AWS_DATA_PATH,
    // which botocore searches before its own data), it sends and reads the same documents.
    let written = Command::new(python_bin())
        .args([script, "--write-documents", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(written.status.success(), "{}", stderr(&written));
    let model = Command::new(python_bin())
        .args([
            "-c",
            "import botocore, os; print(os.path.join(os.path.dirname(botocore.__file__), 'data'))",
        ])
        .output()
        .unwrap();
    let model = String::from_utf8(model.stdout).unwrap();
    for i in 0..2 {
        let file = data.join(format!("document-{i}.json"));
        let sent: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let aws = |args: &[&str]| {
            aws_with(&server, KEY, SECRET, &[("AWS_DATA_PATH", model.trim())], args)
        };
        let file_arg = format!("file://{}", file.display());
        let put = aws(&[
            "put-bucket-replication",
            "--bucket",
            "src-bucket",
            "--replication-configuration",
            &file_arg,
        ]);
        assert!(put.status.success(), "document {i}: {}", stderr(&put));
        let got = aws(&["get-bucket-replication", "--bucket", "src-bucket"]);
        assert!(got.status.success(), "{}", stderr(&got));
        let got: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
        assert_eq!(got["ReplicationConfiguration"], sent, "document {i} through the AWS CLI");
    }
    // Everything under docs/ but docs/2.txt and objects tagged class=secret (none here).
    let exclusion = r#"
import sys, boto3
from botocore.config import Config
c = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"}))
c.put_bucket_replication(Bucket=sys.argv[2], ReplicationConfiguration={
    "Role": "arn:aws:iam::123456789012:role/replication",
    "Rules": [{"ID": "docs-but-2", "Priority": 1, "Status": "Enabled",
               "Filter": {"And": {"Prefix": "docs/", "Not": {"Or": {
                   "Prefixes": ["docs/2"], "Tags": [{"Key": "class", "Value": "secret"}]}}}},
               "DeleteMarkerReplication": {"Status": "Disabled"},
               "Destination": {"Bucket": "arn:aws:s3:::dst-bucket"}}]})
"#;
    let out = python(&server, &["-c", exclusion]);
    assert!(out.status.success(), "{}", stderr(&out));
    append_versions(&data, 1);
    wait_for("docs/ replicas but docs/2.txt", &data, || {
        [0, 4, 6, 8].iter().all(|i| replica(&data, &format!("docs/{i}.txt")).is_some())
    });
    stop_cleanly(server, &data);
    assert_eq!(replica(&data, "docs/2.txt"), None, "excluded by Not/Or/Prefix");
    assert_eq!(replica(&data, "other/1.txt"), None, "outside the rule's prefix");
}
