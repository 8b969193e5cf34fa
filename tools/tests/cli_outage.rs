//! Issue 31: `s3repl run` through a destination outage. `SeaweedFS` is the destination; it is
//! stopped with SIGTERM under load and started again on the same ports and data. Meanwhile a
//! healthy destination keeps replicating, the down one's work is parked (not FAILED), health
//! and metrics say it is down, the log says so once (and stays a few lines a second); when the
//! server is back the backlog drains at once, with no version missing or written twice. A
//! destination whose key may not write still FAILS with `DstPutObjectNotPermitted`, and a
//! destination's limits change while running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::LocalVersionStore;
use s3repl_tests::seaweed::{ACCESS_KEY, READ_ONLY_KEY, READ_ONLY_SECRET, SECRET_KEY, SeaweedFs};

const KEY: &str = "s3repl-admin";
const SECRET: &str = "s3repl-admin-secret";
const DOWN: &str = "arn:aws:s3:::dst-bucket";
const HEALTHY: &str = "arn:aws:s3:::healthy";
const READ_ONLY: &str = "arn:aws:s3:::read-only";

fn settings(data: &Path, endpoint: &str) -> std::path::PathBuf {
    let s3 = |key: &str, secret: &str| {
        format!(
            "kind = \"s3\"\nbucket = \"dst-bucket\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\nallow_http = true"
        )
    };
    let toml = format!(
        "data_dir = \"{}\"\n[log]\npartitions = 2\n[limits]\nbreaker_failures = 3\nprobe_interval_ms = 250\n\
         [[destinations]]\narn = \"{DOWN}\"\n{}\n\
         [[destinations]]\narn = \"{HEALTHY}\"\nkind = \"local\"\n\
         [[destinations]]\narn = \"{READ_ONLY}\"\n{}\n",
        data.display(),
        s3(ACCESS_KEY, SECRET_KEY),
        s3(READ_ONLY_KEY, READ_ONLY_SECRET),
    );
    let path = data.join("s3repl.toml");
    std::fs::write(&path, toml).unwrap();
    let rule = |id: &str, p: u32, arn: &str| {
        format!(
            "<Rule><ID>{id}</ID><Priority>{p}</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>{arn}</Bucket></Destination></Rule>"
        )
    };
    std::fs::create_dir_all(data.join("replication")).unwrap();
    std::fs::write(
        data.join("replication/src-bucket.xml"),
        format!(
            r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role>{}{}{}</ReplicationConfiguration>"#,
            rule("down", 1, DOWN),
            rule("healthy", 2, HEALTHY),
            rule("ro", 3, READ_ONLY)
        ),
    )
    .unwrap();
    path
}

/// Versions `from..to` (one key each), bytes in the source store, records in the log.
fn append(data: &Path, from: u32, to: u32) {
    append_sized(data, from, to, None);
}

/// As [`append`], each version `size` bytes (else its key's).
fn append_sized(data: &Path, from: u32, to: u32, size: Option<usize>) {
    let store = LocalVersionStore::new(data.join("source")).durable(false);
    let writer =
        LogWriter::open(&data.join("log"), LogConfig { partitions: 2, ..LogConfig::default() })
            .unwrap();
    for i in from..to {
        let key = format!("k/{i:05}");
        let body = size.map_or_else(|| key.clone().into_bytes(), |n| vec![(i % 251) as u8; n]);
        let rec = common::put_version(&store, "src-bucket", &key, "v1", &body);
        writer.append("src-bucket", &key, &rec.to_bytes().unwrap()).unwrap();
    }
}

fn get(endpoint: &str, path: &str) -> String {
    let out = Command::new("curl").args(["-sS", &format!("{endpoint}{path}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn signed(endpoint: &str, method: &str, path: &str, body: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args(["--user", &format!("{KEY}:{SECRET}"), "--data-binary", body])
        .args(["-H", &format!("x-amz-content-sha256: {}", common::hex_sha256(body))])
        .arg(format!("{endpoint}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A gauge or counter of `destination` in the Prometheus text.
fn metric(text: &str, name: &str, destination: &str) -> u64 {
    let prefix = format!("{name}{{destination=\"{destination}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn wait(what: &str, log: &Path, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!("{what}: not within {limit:?}; log tail:\n{}", tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// A `SeaweedFS` with versioned `dst-bucket`, and a fresh data directory with its settings.
fn prepare(name: &str) -> (SeaweedFs, std::path::PathBuf) {
    let server = SeaweedFs::start(name, &["dst-bucket"]).unwrap();
    server.enable_versioning("dst-bucket").unwrap();
    let data = std::env::temp_dir().join(format!("s3repl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    settings(&data, &server.endpoint());
    (server, data)
}

/// `s3repl run` on `data` (its log in `data/run.log`): the process, killed when dropped, and
/// its admin endpoint.
fn run(data: &Path) -> (common::Running, String) {
    let config = data.join("s3repl.toml");
    let env = [("S3REPL_ADMIN_ACCESS_KEY_ID", KEY), ("S3REPL_ADMIN_SECRET_ACCESS_KEY", SECRET)];
    let args = ["--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"];
    let (child, admin) = common::spawn_run(&args, &env, &data.join("run.log"));
    (common::Running(child), admin)
}

#[test]
fn an_outage_parks_the_destinations_work_and_its_return_drains_it() {
    let (mut server, data) = prepare("cli-outage");
    let log = data.join("run.log");
    let (first, admin) = run(&data);
    let completed =
        |d: &str| metric(&get(&admin, "/metrics"), "s3repl_operations_completed_total", d);

    // Before: everything replicates where it may; the read-only key's writes FAIL as refused.
    append(&data, 0, 50);
    wait("the first 50 replicate", &log, Duration::from_mins(1), || {
        completed(DOWN) == 50 && completed(HEALTHY) == 50
    });
    let metrics = get(&admin, "/metrics");
    wait("the read-only destination's failures", &log, Duration::from_mins(1), || {
        metric(&get(&admin, "/metrics"), "s3repl_operations_failed_total", READ_ONLY) == 50
    });
    assert_eq!(metric(&metrics, "s3repl_destination_up", READ_ONLY), 1, "a refusal is no outage");
    let status = signed(&admin, "GET", "/-/status/src-bucket", "");
    let status: serde_json::Value =
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    let reasons: Vec<&str> = status["failed_queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| *r == "DstPutObjectNotPermitted"),
        "{reasons:?}"
    );
    assert_eq!(status["failed_queue_total"], 50);
    // The read-only destination is out of the way from here on.
    let before = std::fs::read_to_string(&log).unwrap().lines().count();

    // Down: SIGTERM, under load.
    server.stop().unwrap();
    let down_at = Instant::now();
    append(&data, 50, 250);
    wait(
        "the healthy destination replicates through the outage",
        &log,
        Duration::from_mins(1),
        || completed(HEALTHY) == 250,
    );
    wait("the down destination's work parked", &log, Duration::from_mins(1), || {
        metric(&get(&admin, "/metrics"), "s3repl_destination_parked_operations", DOWN) == 200
    });
    let metrics = get(&admin, "/metrics");
    assert_eq!(metric(&metrics, "s3repl_destination_up", DOWN), 0, "{metrics}");
    assert_eq!(metric(&metrics, "s3repl_destination_up", HEALTHY), 1);
    assert_eq!(
        metric(&metrics, "s3repl_operations_failed_total", DOWN),
        0,
        "an outage is not a failure"
    );
    let health = get(&admin, "/-/health");
    assert!(health.starts_with("degraded\n") && health.contains(DOWN), "{health}");
    let listed = signed(&admin, "GET", "/-/destinations", "");
    let listed: serde_json::Value =
        serde_json::from_str(&listed).unwrap_or_else(|e| panic!("{e}: {listed}"));
    let down = listed["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == DOWN)
        .unwrap()
        .clone();
    assert!(down["state"] == "down" || down["state"] == "probing", "{down}");
    assert!(down["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{down}");
    // Some seconds of outage: lines stay bounded (a few a second, not one per attempt).
    std::thread::sleep(Duration::from_secs(3).saturating_sub(down_at.elapsed()));
    let outage = down_at.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count() - before;
    assert!(
        f64::from(u32::try_from(lines).unwrap()) < 20.0 + 6.0 * outage,
        "{lines} lines in {outage:.1} s"
    );
    // (The read-only destination is on the same server, so it went down too.)
    let said = |what: &str| text.lines().filter(|l| l.contains(what) && l.contains(DOWN)).count();
    assert_eq!(said("Destination is down"), 1, "said once");

    // Back on the same ports and data: the backlog drains at once (a retry round is 30 s).
    server.restart(&["dst-bucket"]).unwrap();
    let drained =
        wait("the parked backlog drains", &log, Duration::from_secs(25), || completed(DOWN) == 250);
    eprintln!("drained 200 parked operations {drained:?} after the server answered again");
    let health = get(&admin, "/-/health");
    assert_eq!(health, "ok\n");
    let metrics = get(&admin, "/metrics");
    assert_eq!(metric(&metrics, "s3repl_destination_parked_operations", DOWN), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let said = text.lines().filter(|l| l.contains("Destination answers again") && l.contains(DOWN));
    assert_eq!(said.count(), 1, "said once");
    let counts = server.version_counts("dst-bucket").unwrap();
    assert_eq!(counts.len(), 250, "every key: {}", counts.len());
    assert!(counts.values().all(|n| *n == 1), "no version twice: {counts:?}");

    // Limits change while running (signed requests only), and are listed.
    let unsigned = Command::new("curl")
        .args(["-sS", "-X", "PUT", "--data-binary", "{}"])
        .arg(format!("{admin}/-/limits?destination=x"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unsigned.stdout).contains("AccessDenied"));
    let set = signed(
        &admin,
        "PUT",
        &format!("/-/limits?destination={}", DOWN.replace(':', "%3A")),
        r#"{"bandwidth":"1MiB","max_requests":4}"#,
    );
    assert!(set.contains("\"max_requests\":4") && set.contains("\"kept\":true"), "{set}");
    let listed = signed(&admin, "GET", "/-/destinations", "");
    assert!(listed.contains("\"bandwidth_bytes_per_second\":1048576"), "{listed}");
    let bad = signed(&admin, "PUT", "/-/limits?destination=arn%3Aaws%3As3%3A%3A%3Anope", "{}");
    assert!(bad.contains("NoSuchDestination"), "{bad}");
    let bad = signed(
        &admin,
        "PUT",
        &format!("/-/limits?destination={}", DOWN.replace(':', "%3A")),
        r#"{"bandwidth":"0"}"#,
    );
    assert!(bad.contains("InvalidArgument"), "{bad}");
    // Garbage and unknown fields are refused too, and change nothing.
    let path = format!("/-/limits?destination={}", DOWN.replace(':', "%3A"));
    for body in ["not json {", r#"{"bandwidth":"1MiB","burst":3}"#, r#"{"max_requests":0}"#] {
        let bad = signed(&admin, "PUT", &path, body);
        assert!(bad.contains("InvalidArgument"), "{body:?}: {bad}");
    }
    let listed = signed(&admin, "GET", "/-/destinations", "");
    assert!(listed.contains("\"bandwidth_bytes_per_second\":1048576"), "{listed}");
    // Kept across a restart (the settings file's limits for it did not change).
    drop(first);
    let (_second, admin) = run(&data);
    let listed = signed(&admin, "GET", "/-/destinations", "");
    let down = listed.find(DOWN).map(|i| &listed[i..]).unwrap_or_default();
    assert!(
        down.contains("\"bandwidth_bytes_per_second\":1048576")
            && down.contains("\"max_requests\":4"),
        "{listed}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// Parked operations are on disk: a replicator `SIGKILL`ed while its destination is down finds
/// them at its next start (parking them again while the destination is still down, beside new
/// ones), and replicates each once when the destination is back.
/// Issue 31: a bandwidth limit set in the settings holds within 10% over 30 s, into `SeaweedFS`.
/// Versions of 256 KiB wait in the log, far more than the limit lets through; from the fifth
/// completed copy on (past the bucket's first burst), 30 s of completions are counted.
#[test]
fn a_bandwidth_limit_from_the_settings_holds_over_30_seconds() {
    const SIZE: usize = 256 << 10;
    const LIMIT: f64 = 1_048_576.0;
    let (server, data) = prepare("cli-bandwidth");
    let config = data.join("s3repl.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    // Only the S3 destination, limited to 1 MiB/s.
    let only = text.split("[[destinations]]").take(2).collect::<Vec<_>>().join("[[destinations]]");
    std::fs::write(&config, format!("{only}\nbandwidth = \"1MiB\"\n")).unwrap();
    std::fs::write(
        data.join("replication/src-bucket.xml"),
        format!(
            r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>all</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>{DOWN}</Bucket></Destination></Rule></ReplicationConfiguration>"#
        ),
    )
    .unwrap();
    // 40 s of copies at the limit.
    append_sized(&data, 0, 160, Some(SIZE));
    let log = data.join("run.log");
    let (_run, admin) = run(&data);
    let completed = || metric(&get(&admin, "/metrics"), "s3repl_operations_completed_total", DOWN);
    wait("the first copies", &log, Duration::from_secs(30), || completed() >= 5);
    let (from, started) = (completed(), Instant::now());
    std::thread::sleep(Duration::from_secs(30));
    let (to, seconds) = (completed(), started.elapsed().as_secs_f64());
    let copies = f64::from(u32::try_from(to - from).unwrap());
    let rate = copies * f64::from(u32::try_from(SIZE).unwrap()) / seconds;
    eprintln!("{} copies of 256 KiB in {seconds:.2} s: {rate:.0} B/s against 1 MiB/s", to - from);
    assert!(
        (LIMIT * 0.9..=LIMIT * 1.1).contains(&rate),
        "{rate:.0} B/s against a limit of {LIMIT} B/s"
    );
    assert!(to < 160, "the limit, not the backlog, ended the measurement");
    let counts = server.version_counts("dst-bucket").unwrap();
    assert!(counts.values().all(|n| *n == 1), "no version twice: {counts:?}");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn parked_operations_survive_a_sigkill_of_the_replicator() {
    let (mut server, data) = prepare("cli-outage-kill");
    let log = data.join("run.log");
    let (first, admin) = run(&data);
    let gauge = |admin: &str, name: &str, d: &str| metric(&get(admin, "/metrics"), name, d);
    append(&data, 0, 30);
    wait("the first 30 replicate", &log, Duration::from_mins(1), || {
        gauge(&admin, "s3repl_operations_completed_total", DOWN) == 30
    });
    server.stop().unwrap();
    append(&data, 30, 130);
    wait("100 parked", &log, Duration::from_mins(1), || {
        gauge(&admin, "s3repl_destination_parked_operations", DOWN) == 100
    });
    drop(first); // SIGKILL
    let (_run, admin) = run(&data);
    append(&data, 130, 180);
    // (Records past the last checkpoint are read again: their operations are queued once.)
    wait("all 150 parked after the restart", &log, Duration::from_mins(1), || {
        gauge(&admin, "s3repl_destination_parked_operations", DOWN) == 150
    });
    server.restart(&["dst-bucket"]).unwrap();
    wait("the backlog drains", &log, Duration::from_mins(1), || {
        gauge(&admin, "s3repl_destination_parked_operations", DOWN) == 0
            && gauge(&admin, "s3repl_operations_completed_total", DOWN) == 150
    });
    let counts = server.version_counts("dst-bucket").unwrap();
    assert_eq!(counts.len(), 180, "every key");
    assert!(counts.values().all(|n| *n == 1), "no version twice: {counts:?}");
    let _ = std::fs::remove_dir_all(&data);
}
