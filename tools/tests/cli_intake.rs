//! Webhook intake on a real `SeaweedFS`: objects put with real requests (one key with a space,
//! two versions of one key, a multipart upload, a tag change, a delete marker), events composed
//! from those requests' answers in `MinIO`'s and Ceph's message formats — out of order,
//! redelivered, after a SIGKILL that followed an acknowledgement — appended once each, replicated
//! by `s3repl run`, and proven in agreement by `s3repl verify --tags`. Bad deliveries are refused
//! and append nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY, SeaweedFs};

const TOKEN: &str = "intake-token-0123456789";

/// A signed request to the server; panics unless it answers `want`. Returns the headers and
/// body.
fn call(
    server: &SeaweedFs,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    want: u16,
) -> (String, String) {
    let (code, h, b) = server.request(method, path, headers, body).unwrap();
    assert_eq!(code, want, "{method} {path}: {b}");
    (h, b)
}

/// One event record as `MinIO` (with `s3:` prefixes) or Ceph (without) writes it.
fn record(
    minio: bool,
    name: &str,
    key: &str,
    version: &str,
    size: usize,
    etag: &str,
    seq: u32,
) -> String {
    let prefix = if minio { "s3:" } else { "" };
    let key = s3repl::sigv4::uri_encode(key.as_bytes(), false).replace("%20", "+");
    format!(
        r#"{{"eventVersion":"2.1","eventSource":"{}","awsRegion":"us-east-1","eventTime":"2026-12-06T00:00:00.000Z",
           "eventName":"{prefix}{name}","userIdentity":{{"principalId":"x"}},"requestParameters":{{}},"responseElements":{{}},
           "s3":{{"s3SchemaVersion":"1.0","configurationId":"c","bucket":{{"name":"src-bucket","arn":"arn:aws:s3:::src-bucket"}},
                  "object":{{"key":"{key}","size":{size},"eTag":{etag:?},"versionId":"{version}","sequencer":"{seq:016X}"}}}}}}"#,
        if minio { "minio:s3" } else { "ceph:s3" }
    )
}

fn delivery(records: &[String]) -> String {
    format!(
        r#"{{"EventName":"s3:ObjectCreated:Put","Key":"src-bucket/x","Records":[{}]}}"#,
        records.join(",")
    )
}

/// POSTs a delivery to the webhook; (status, body).
fn post(endpoint: &str, auth: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "--data-binary", body])
        .args(["-H", &format!("Authorization: {auth}"), "-H", "Content-Type: application/json"])
        .arg(format!("{endpoint}/-/events"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

fn start(config: &Path, data: &Path) -> (Child, String) {
    common::spawn_run(
        &["--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"],
        &[
            ("S3REPL_ADMIN_ACCESS_KEY_ID", "admin"),
            ("S3REPL_ADMIN_SECRET_ACCESS_KEY", "admin-secret"),
        ],
        &data.join("run.log"),
    )
}

/// A `SeaweedFS` with the two buckets and a replicator configuration taking webhook events
/// for `src-bucket`: (server, its endpoint, data directory, configuration file).
fn webhook_to_s3(name: &str) -> (SeaweedFs, String, PathBuf, PathBuf) {
    let server = common::two_buckets(name);
    let endpoint = server.endpoint();
    let (data, config) = common::s3_to_s3(
        name,
        &endpoint,
        &endpoint,
        &format!("[intake]\nwebhook = true\nwebhook_token = \"{TOKEN}\"\n"),
        Some(&common::rule("", "", true)),
    );
    (server, endpoint, data, config)
}

/// `s3repl run` on `config`, its stdout piped, its stderr to `stderr`; not waited for.
fn spawn_raw(config: &Path, stderr: std::process::Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["run", "--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"])
        .env("S3REPL_ADMIN_ACCESS_KEY_ID", "admin")
        .env("S3REPL_ADMIN_SECRET_ACCESS_KEY", "admin-secret")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn appended(endpoint: &str) -> u64 {
    let addr = endpoint.trim_start_matches("http://");
    let out =
        Command::new("curl").args(["-s", &format!("http://{addr}/metrics")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("s3repl_intake_appended_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Issue 28, item 1.
#[test]
fn events_from_minio_and_ceph_replicate_each_version_once() {
    let (server, endpoint, data, config) = webhook_to_s3("intake");
    let (run, admin) = start(&config, &data);
    let run = common::Running(run);

    // The source's own answers.
    let put = |key: &str, body: &str, headers: &[(&str, &str)]| {
        let path = format!("/src-bucket/{}", s3repl::sigv4::uri_encode(key.as_bytes(), true));
        let (h, _) = call(&server, "PUT", &path, headers, body, 200);
        (
            common::header(&h, "x-amz-version-id").unwrap(),
            common::header(&h, "etag").unwrap(),
            body.len(),
        )
    };
    // A key curl cannot sign (a space): written with the AWS CLI.
    let body_file = data.join("spaced.txt");
    std::fs::write(&body_file, "spaced").unwrap();
    let answer = aws(
        &endpoint,
        &["put-object", "--bucket", "src-bucket", "--key", "notes/a b.txt"],
        &[
            "--body",
            body_file.to_str().unwrap(),
            "--content-type",
            "text/plain",
            "--metadata",
            "owner=me",
        ],
    )
    .unwrap();
    let spaced = (
        answer["VersionId"].as_str().unwrap().to_owned(),
        answer["ETag"].as_str().unwrap().to_owned(),
        "spaced".len(),
    );
    let x1 = put("dir/x", "first", &[]);
    let x2 = put("dir/x", "second version", &[("x-amz-tagging", "team=blue")]);
    // A multipart upload (of one part: `SeaweedFS` holds parts but the last to 5 MiB, more than
    // a command line carries).
    let (_, init) = call(&server, "POST", "/src-bucket/big?uploads=", &[], "", 200);
    let upload =
        init.split("<UploadId>").nth(1).unwrap().split("</UploadId>").next().unwrap().to_owned();
    let part = "a".repeat(4096);
    let path = format!("/src-bucket/big?partNumber=1&uploadId={upload}");
    let (h1, _) = call(&server, "PUT", &path, &[], &part, 200);
    let complete = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        common::header(&h1, "etag").unwrap()
    );
    let (hc, _) =
        call(&server, "POST", &format!("/src-bucket/big?uploadId={upload}"), &[], &complete, 200);
    let big_version = common::header(&hc, "x-amz-version-id").unwrap();
    // A tag change on dir/x's second version, and a delete marker on the spaced key.
    let tagging =
        "<Tagging><TagSet><Tag><Key>team</Key><Value>red</Value></Tag></TagSet></Tagging>";
    call(
        &server,
        "PUT",
        &format!("/src-bucket/dir/x?tagging=&versionId={}", x2.0),
        &[],
        tagging,
        200,
    );
    let answer =
        aws(&endpoint, &["delete-object", "--bucket", "src-bucket", "--key", "notes/a b.txt"], &[])
            .unwrap();
    let marker = answer["VersionId"].as_str().unwrap().to_owned();

    let created = |minio, key: &str, v: &(String, String, usize), seq| {
        record(minio, "ObjectCreated:Put", key, &v.0, v.2, &v.1, seq)
    };
    let bearer = format!("Bearer {TOKEN}");
    // Bad deliveries: refused, nothing appended.
    assert_eq!(
        post(&admin, "Bearer wrong-token-0123456789", &delivery(&[created(true, "dir/x", &x1, 2)]))
            .0,
        403
    );
    assert_eq!(post(&admin, &bearer, "{\"Records\": 5}").0, 400);
    let unknown =
        created(true, "dir/x", &x1, 2).replace("\"name\":\"src-bucket\"", "\"name\":\"elsewhere\"");
    let (code, body) = post(&admin, &bearer, &delivery(&[unknown]));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a source bucket"), "{body}");
    let unversioned = created(true, "dir/x", &x1, 2)
        .replace(&format!("\"versionId\":\"{}\"", x1.0), "\"versionId\":\"\"");
    let (code, body) = post(&admin, &bearer, &delivery(&[unversioned]));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no versionId"), "{body}");
    assert_eq!(appended(&admin), 0);

    // MinIO: the spaced key. Ceph: dir/x's two versions, out of order in one delivery.
    let d1 = delivery(&[created(true, "notes/a b.txt", &spaced, 1)]);
    let (code, body) = post(&admin, &bearer, &d1);
    assert_eq!((code, body.as_str()), (200, r#"{"appended":1,"duplicates":0,"skipped":0}"#));
    let d2 = delivery(&[created(false, "dir/x", &x2, 3), created(false, "dir/x", &x1, 2)]);
    assert_eq!(
        post(&admin, &bearer, &d2),
        (200, r#"{"appended":2,"duplicates":0,"skipped":0}"#.to_owned())
    );
    // Redelivered: nothing appended twice.
    assert_eq!(
        post(&admin, &bearer, &d1),
        (200, r#"{"appended":0,"duplicates":1,"skipped":0}"#.to_owned())
    );
    // The multipart object, the tag change, the delete marker and a version delete (skipped).
    let d4 = delivery(&[
        record(
            true,
            "ObjectCreated:CompleteMultipartUpload",
            "big",
            &big_version,
            4096 + 4,
            "m-2",
            4,
        ),
        record(true, "ObjectCreated:PutTagging", "dir/x", &x2.0, 0, "", 5),
        record(false, "ObjectRemoved:DeleteMarkerCreated", "notes/a b.txt", &marker, 0, "", 6),
        record(false, "ObjectRemoved:Delete", "dir/gone", "v0", 0, "", 7),
    ]);
    assert_eq!(
        post(&admin, &bearer, &d4),
        (200, r#"{"appended":3,"duplicates":0,"skipped":1}"#.to_owned())
    );
    // Killed right after acknowledging; the sender, unsure, delivers again after the restart.
    drop(run);
    let (run, admin) = start(&config, &data);
    let run = common::Running(run);
    assert_eq!(
        post(&admin, &bearer, &d4),
        (200, r#"{"appended":0,"duplicates":3,"skipped":1}"#.to_owned())
    );
    // Signed with an admin key (SigV4) instead of the token: the same route.
    let signed = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", &d2])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "admin:admin-secret"])
        .args(["-H", &format!("x-amz-content-sha256: {}", common::hex_sha256(&d2))])
        .arg(format!("{admin}/-/events"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&signed.stdout), "200");

    // Everything replicates once: two versions of dir/x, one of each other object.
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let counts = server.version_counts("dst-bucket").unwrap();
        let want = [("dir/x", 2), ("notes/a b.txt", 1), ("big", 1)];
        if want.iter().all(|(k, n)| counts.get(*k) == Some(n)) {
            assert_eq!(counts.len(), 3, "{counts:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counts:?}\n{}",
            std::fs::read_to_string(data.join("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The delete marker and the tag change land too (checked by verify and the marker's HEAD).
    std::thread::sleep(Duration::from_secs(2));
    drop(run);
    let head =
        aws(&endpoint, &["head-object", "--bucket", "dst-bucket", "--key", "notes/a b.txt"], &[]);
    assert!(
        head.unwrap_err().contains("404"),
        "the delete marker is the replica's current version"
    );
    let verify = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["verify", "--config", config.to_str().unwrap(), "--bucket", "src-bucket", "--tags"])
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// `aws s3api ARGS MORE` as the test identity: the answer's JSON, or the error output.
fn aws(endpoint: &str, args: &[&str], more: &[&str]) -> Result<serde_json::Value, String> {
    let aws = std::env::var("S3REPL_AWS").unwrap_or_else(|_| "aws".into());
    let out = Command::new(&aws)
        .args(["--endpoint-url", endpoint, "s3api"])
        .args(args)
        .args(more)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Issue 28, item 1: the same messages from a Kafka topic (`MinIO`'s and Ceph's Kafka targets),
/// offsets committed once the records are durable: duplicates and a malformed message append
/// nothing, and a replicator killed and restarted appends nothing twice.
#[test]
fn events_from_a_kafka_topic_replicate_each_version_once() {
    let broker = s3repl_tests::tansu::Tansu::start().unwrap();
    broker.create_topic("bucket-events", 2).unwrap();
    let server = common::two_buckets("intake-kafka");
    let endpoint = server.endpoint();
    let (data, config) = common::s3_to_s3(
        "intake-kafka",
        &endpoint,
        &endpoint,
        &format!(
            "[intake]\nkafka_topic = \"bucket-events\"\nkafka_brokers = \"{}\"\n\
             [intake.kafka]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
            broker.brokers()
        ),
        Some(&common::rule("", "", false)),
    );
    let producer = s3repl::pipeline::KafkaWriter::new(&s3repl::pipeline::KafkaSettings::new(
        &broker.brokers(),
        "bucket-events",
        "unused",
    ))
    .unwrap();
    let publish = |messages: &[String]| {
        let batch: Vec<(&str, &str, &[u8])> =
            messages.iter().map(|m| ("src-bucket", "events", m.as_bytes())).collect();
        producer.append_batch(&batch).unwrap();
    };
    let put = |key: &str, body: &str| {
        let (h, _) = call(&server, "PUT", &format!("/src-bucket/{key}"), &[], body, 200);
        (
            common::header(&h, "x-amz-version-id").unwrap(),
            common::header(&h, "etag").unwrap(),
            body.len(),
        )
    };
    let (run, _) = start(&config, &data);
    let run = common::Running(run);
    let a = put("k/a", "alpha");
    let b1 = put("k/b", "beta one");
    let b2 = put("k/b", "beta two");
    let created = |minio, key: &str, v: &(String, String, usize), seq| {
        delivery(&[record(minio, "ObjectCreated:Put", key, &v.0, v.2, &v.1, seq)])
    };
    publish(&[
        created(true, "k/a", &a, 1),
        created(false, "k/b", &b1, 2),
        "{\"not\": \"an event\"}".to_owned(),
        created(false, "k/b", &b2, 3),
        created(true, "k/a", &a, 1),
    ]);
    let wait_for = |want: &[(&str, usize)]| {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let counts = server.version_counts("dst-bucket").unwrap();
            if want.iter().all(|(k, n)| counts.get(*k) == Some(n)) {
                assert_eq!(counts.len(), want.len(), "{counts:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{counts:?}\n{}",
                std::fs::read_to_string(data.join("run.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(&[("k/a", 1), ("k/b", 2)]);
    // Killed at once (offsets maybe not committed): the restarted replicator is redelivered
    // what it took, appends none of it again, and takes a new message.
    drop(run);
    let c = put("k/c", "gamma");
    let (run, admin) = start(&config, &data);
    let run = common::Running(run);
    publish(&[created(true, "k/c", &c, 4)]);
    wait_for(&[("k/a", 1), ("k/b", 2), ("k/c", 1)]);
    std::thread::sleep(Duration::from_secs(2));
    let metrics = Command::new("curl").args(["-s", &format!("{admin}/metrics")]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    drop(run);
    assert!(metrics.contains("s3repl_intake_topic_taken_total"), "{metrics}");
    let counts = server.version_counts("dst-bucket").unwrap();
    assert_eq!(counts.values().sum::<usize>(), 4, "nothing written twice: {counts:?}");
    // With --stamps: every replica paired with its source version, not only where the
    // listings disagree.
    let verify = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["verify", "--config", config.to_str().unwrap(), "--bucket", "src-bucket"])
        .arg("--stamps")
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
    let log = std::fs::read_to_string(data.join("run.log")).unwrap_or_default();
    assert!(log.contains("passed over"), "the malformed message is reported");
    assert!(!log.contains("arrived after a later version"), "a partition's order is kept:\n{log}");
    let _ = std::fs::remove_dir_all(&data);
}

/// An attack: the event topic's brokers keep their connections and stop answering, then the
/// replicator is told to stop (SIGTERM). librdkafka's final commit and its consumer's close
/// wait for the brokers without a limit; the replicator waits for them a bounded time and
/// exits.
#[test]
fn an_event_topic_whose_brokers_stopped_answering_does_not_hold_the_stop() {
    let brokers = s3repl_tests::kafka_run::MockBrokers::start().unwrap();
    brokers.create_topic("silent-events", 1).unwrap();
    let server = common::two_buckets("intake-silent");
    let endpoint = server.endpoint();
    let (data, config) = common::s3_to_s3(
        "intake-silent",
        &endpoint,
        &endpoint,
        &format!(
            "[intake]\nkafka_topic = \"silent-events\"\nkafka_brokers = \"{}\"\n\
             [intake.kafka]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
            brokers.bootstrap_servers()
        ),
        Some(&common::rule("", "", false)),
    );
    let producer = s3repl::pipeline::KafkaWriter::new(&s3repl::pipeline::KafkaSettings::new(
        brokers.bootstrap_servers(),
        "silent-events",
        "unused",
    ))
    .unwrap();
    let (mut run, _) = start(&config, &data);
    let (h, _) = call(&server, "PUT", "/src-bucket/s/a", &[], "alpha", 200);
    let (version, etag) =
        (common::header(&h, "x-amz-version-id").unwrap(), common::header(&h, "etag").unwrap());
    let message = delivery(&[record(true, "ObjectCreated:Put", "s/a", &version, 5, &etag, 1)]);
    producer.append_batch(&[("src-bucket", "events", message.as_bytes())]).unwrap();
    replicated_once(&server, "s/", 1);
    brokers.round_trip_time(Duration::from_hours(1)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap().success()
    );
    let stopped = Instant::now();
    let Some(status) = common::exit_within(&mut run, Duration::from_secs(90)) else {
        let _ = run.kill();
        let _ = run.wait();
        panic!(
            "no exit within 90 s of SIGTERM with the brokers silent; log:\n{}",
            std::fs::read_to_string(data.join("run.log")).unwrap_or_default()
        );
    };
    eprintln!("exited {status} {:?} after SIGTERM, the brokers silent", stopped.elapsed());
    let _ = std::fs::remove_dir_all(&data);
}

/// Issue 28, an attack: the marks file damaged while the replicator was down. It must never
/// take a damaged mark for a missing one, which would let a redelivered event append its
/// version twice (a second replica version): cut short, the file stops `s3repl run` at start
/// with an error naming it; overwritten past its header (the damage only a read finds),
/// every redelivered event is refused for the sender to retry, never appended again.
#[test]
fn a_damaged_marks_file_never_lets_a_version_in_twice() {
    let (server, _, data, config) = webhook_to_s3("intake-marks");
    let (run, admin) = start(&config, &data);
    let run = common::Running(run);
    let bearer = format!("Bearer {TOKEN}");
    let mut deliveries = Vec::new();
    for i in 0..20 {
        let key = format!("k{i}");
        let (h, _) = call(&server, "PUT", &format!("/src-bucket/{key}"), &[], "body", 200);
        let version = common::header(&h, "x-amz-version-id").unwrap();
        let etag = common::header(&h, "etag").unwrap();
        let d = delivery(&[record(true, "ObjectCreated:Put", &key, &version, 4, &etag, i + 1)]);
        assert_eq!(post(&admin, &bearer, &d).0, 200);
        deliveries.push(d);
    }
    drop(run);
    let marks = data.join("state").join("intake.redb");
    let saved = std::fs::read(&marks).unwrap();

    // Cut short: refused at start, naming the file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&marks)
        .unwrap()
        .set_len(saved.len() as u64 / 2)
        .unwrap();
    let mut child = spawn_raw(&config, std::process::Stdio::piped());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("s3repl run started with a marks file cut short");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(marks.to_str().unwrap()), "the error names the file:\n{stderr}");

    // Overwritten past its first 8 KiB: whatever opens, nothing is appended again.
    let mut garbled = saved.clone();
    if let Some(rest) = garbled.get_mut(8192..) {
        rest.fill(0xa5);
    }
    std::fs::write(&marks, &garbled).unwrap();
    let mut child =
        spawn_raw(&config, std::fs::File::create(data.join("garbled.log")).unwrap().into());
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    if let Some(admin) = line.trim().strip_prefix("admin endpoint: ") {
        let child = common::Running(child);
        for d in &deliveries {
            let (code, body) = post(admin, &bearer, d);
            eprintln!("redelivered over overwritten marks: {code} {body}");
            assert!(
                code >= 500 || body.contains(r#""appended":0"#),
                "a redelivered event was appended again ({code}): {body}"
            );
        }
        drop(child);
    } else {
        let status = child.wait().unwrap();
        eprintln!("overwritten marks: refused at start ({status})");
        assert!(!status.success());
        let log = std::fs::read_to_string(data.join("garbled.log")).unwrap();
        assert!(log.contains(marks.to_str().unwrap()), "the error names the file:\n{log}");
    }

    // Put back as it was, the marks recognise every delivery again.
    std::fs::write(&marks, &saved).unwrap();
    let (run, admin) = start(&config, &data);
    let _run = common::Running(run);
    for d in &deliveries {
        assert_eq!(
            post(&admin, &bearer, d),
            (200, r#"{"appended":0,"duplicates":1,"skipped":0}"#.to_owned())
        );
    }
    let _ = std::fs::remove_dir_all(&data);
}

/// Puts `n` objects `{prefix}{i}` into `src-bucket`; their `ObjectCreated:Put` records, as
/// `MinIO` sends them.
fn put_records(server: &SeaweedFs, prefix: &str, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| {
            let key = format!("{prefix}{i}");
            let (h, _) = call(server, "PUT", &format!("/src-bucket/{key}"), &[], "body", 200);
            let version = common::header(&h, "x-amz-version-id").unwrap();
            let etag = common::header(&h, "etag").unwrap();
            record(true, "ObjectCreated:Put", &key, &version, 4, &etag, i + 1)
        })
        .collect()
}

/// Waits (a minute at most) for `n` keys under `prefix` in `dst-bucket`, each with one version.
fn replicated_once(server: &SeaweedFs, prefix: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let counts = server.version_counts("dst-bucket").unwrap();
        let ours: Vec<usize> =
            counts.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| *v).collect();
        if ours.len() == n {
            assert!(ours.iter().all(|v| *v == 1), "each version once: {counts:?}");
            return;
        }
        assert!(Instant::now() < deadline, "not replicated: {counts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 28: intake's marks are committed durably only now and then (`[intake]
/// marks_durable_every_ms`), so a SIGKILL loses those of the last acknowledged deliveries.
/// They must come back from the log's tail at start: every redelivered event is recognised
/// (appended 0 times), and each version replicates once.
#[test]
fn marks_lost_to_a_sigkill_come_back_from_the_log() {
    let (server, _, data, config) = webhook_to_s3("intake-lazy-marks");
    // No durable commit of the marks after start: all of them are lost to the kill.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("[intake]\n", "[intake]\nmarks_durable_every_ms = 600000\n", 1),
    )
    .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let records = put_records(&server, "lazy/", 12);
    // Three deliveries, so that the lost marks span several group commits.
    let deliveries: Vec<String> = records.chunks(4).map(delivery).collect();
    let (run, admin) = start(&config, &data);
    let run = common::Running(run);
    for d in &deliveries {
        assert_eq!(
            post(&admin, &bearer, d),
            (200, r#"{"appended":4,"duplicates":0,"skipped":0}"#.to_owned())
        );
    }
    drop(run); // SIGKILL
    let (run, admin) = start(&config, &data);
    let _run = common::Running(run);
    let log = std::fs::read_to_string(data.join("run.log")).unwrap();
    assert!(
        log.contains("Intake marks restored from the log's tail"),
        "the marks were lost and restored:\n{log}"
    );
    for d in &deliveries {
        assert_eq!(
            post(&admin, &bearer, d),
            (200, r#"{"appended":0,"duplicates":4,"skipped":0}"#.to_owned())
        );
    }
    replicated_once(&server, "lazy/", 12);
    let _ = std::fs::remove_dir_all(&data);
}

/// Issue 28, an attack: SIGTERM while a delivery waits on its source (a proxy holds each
/// request 1.5 s). The replicator stops accepting connections, answers the delivery once its
/// records are durable (not a cut-off connection after they were), and exits cleanly; the
/// same delivery sent again after a restart appends nothing, and each version replicates once.
#[test]
fn sigterm_mid_delivery_answers_it_before_stopping() {
    let server = common::two_buckets("intake-sigterm");
    let proxy = s3repl_tests::fault_proxy::FaultProxy::start_delaying(
        server.port(),
        Duration::from_millis(1500),
    )
    .unwrap();
    let (data, config) = common::s3_to_s3(
        "intake-sigterm",
        &proxy.endpoint(),
        &server.endpoint(),
        &format!("[intake]\nwebhook = true\nwebhook_token = \"{TOKEN}\"\n"),
        Some(&common::rule("", "", true)),
    );
    let d = delivery(&put_records(&server, "term/", 3));
    let bearer = format!("Bearer {TOKEN}");
    let (run, admin) = start(&config, &data);
    let mut run = common::Running(run);
    let sending = {
        let (admin, bearer, d) = (admin.clone(), bearer.clone(), d.clone());
        std::thread::spawn(move || post(&admin, &bearer, &d))
    };
    // The delivery is reading its versions (each read held 1.5 s by the proxy).
    std::thread::sleep(Duration::from_millis(500));
    let term = Command::new("kill").args(["-TERM", &run.0.id().to_string()]).status().unwrap();
    assert!(term.success());
    std::thread::sleep(Duration::from_millis(200));
    // No new connection is taken meanwhile.
    let refused = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
        .arg(format!("{admin}/-/health"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "000", "the port is closed");
    assert_eq!(
        sending.join().unwrap(),
        (200, r#"{"appended":3,"duplicates":0,"skipped":0}"#.to_owned()),
        "the delivery in progress is answered"
    );
    let status = common::exit_within(&mut run.0, Duration::from_mins(1));
    let status = status.expect("no exit after SIGTERM");
    assert!(status.success(), "{status}");
    let (run, admin) = start(&config, &data);
    let _run = common::Running(run);
    assert_eq!(
        post(&admin, &bearer, &d),
        (200, r#"{"appended":0,"duplicates":3,"skipped":0}"#.to_owned())
    );
    replicated_once(&server, "term/", 3);
    let _ = std::fs::remove_dir_all(&data);
}

/// `s3repl run` on `config` with SIGXFSZ ignored (so that a file size limit fails writes as a
/// full disk does, instead of ending the process): the process and its admin endpoint.
fn start_ignoring_xfsz(config: &Path, data: &Path) -> (Child, String) {
    let mut child = Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_s3repl")])
        .args(["run", "--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"])
        .env("S3REPL_ADMIN_ACCESS_KEY_ID", "admin")
        .env("S3REPL_ADMIN_SECRET_ACCESS_KEY", "admin-secret")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        // A file the limit covers too: the process's own log is on the full disk.
        .stderr(std::fs::File::create(data.join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let admin = line.trim().strip_prefix("admin endpoint: ").unwrap().to_owned();
    (child, admin)
}

/// Sets the file size limit (`soft:hard`, as `prlimit --fsize` takes it) of a running `child`.
fn limit_file_size(child: &Child, limit: &str) {
    let out = Command::new("prlimit")
        .args(["--pid", &child.id().to_string(), &format!("--fsize={limit}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 28, an attack: the disk fills under intake. The refusal is made with the process's
/// file size limit (`prlimit`), which fails writes past it as a full disk does — set just past
/// the shortest log segment, so an append is cut part way or refused whole. Deliveries are
/// refused (503: the sender retries) and append nothing; once there is room again, without a
/// restart, the same deliveries are taken, each version once, and earlier ones are still
/// recognised. The replicator's own log (stderr, a file) is on the same full disk: its lines
/// are lost, and nothing else (a log line that could not be written made its task panic,
/// through tracing's report of the failure, and the delivery went unanswered).
#[test]
fn a_full_disk_refuses_deliveries_until_there_is_room_again() {
    let (server, _, data, config) = webhook_to_s3("intake-full");
    let bearer = format!("Bearer {TOKEN}");
    let deliveries: Vec<String> =
        put_records(&server, "full/", 12).chunks(3).map(delivery).collect();
    let (run, admin) = start_ignoring_xfsz(&config, &data);
    let run = common::Running(run);
    let appended = |n: u32| format!(r#"{{"appended":{n},"duplicates":{},"skipped":0}}"#, 3 - n);
    assert_eq!(post(&admin, &bearer, &deliveries[0]), (200, appended(3)));
    // Full: writes past the end of the shortest segment fail.
    let shortest = (0..2)
        .filter_map(|p| {
            std::fs::read_dir(data.join(format!("log/p{p:05}")))
                .unwrap()
                .filter_map(|e| e.ok()?.metadata().ok().map(|m| m.len()))
                .max()
        })
        .min()
        .unwrap();
    let limit = |l: &str| limit_file_size(&run.0, l);
    limit(&format!("{}:unlimited", shortest + 20));
    for d in &deliveries[1..3] {
        let (code, body) = post(&admin, &bearer, d);
        assert_eq!(code, 503, "refused for the sender to retry: {body}");
    }
    // Room again.
    limit("unlimited:unlimited");
    let mut taken = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    for d in &deliveries[1..] {
        loop {
            let (code, body) = post(&admin, &bearer, d);
            if code == 200 {
                assert_eq!(body, appended(3), "taken once, whole");
                taken += 1;
                break;
            }
            assert!(Instant::now() < deadline, "still refused with room again: {code} {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(taken, 3);
    assert_eq!(post(&admin, &bearer, &deliveries[0]), (200, appended(0)));
    replicated_once(&server, "full/", 12);
    drop(run);
    let _ = std::fs::remove_dir_all(&data);
}

/// `GET /-/health`: (status, body).
fn health(admin: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", &format!("{admin}/-/health")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

/// The records every log partition's saved checkpoint has passed, from `/metrics`.
fn checkpointed(admin: &str) -> u64 {
    let out = Command::new("curl").args(["-s", &format!("{admin}/metrics")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("s3repl_checkpoint_next_seq{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// An attack: the disk fills under the engine (the file size limit again, at 1 byte, so no
/// file grows). Committing the version map fails (redb refuses every write after a failed one
/// until it is opened again) and the checkpoint cannot be saved: health says so, degraded (200,
/// replication goes on), not halted; once there is room again, without a restart, the map is
/// opened again, what it held in memory is committed, and the checkpoint passes every record.
/// Before, checkpointing stopped for good until a restart ("halted", 503).
#[test]
fn a_full_disk_holds_checkpoints_back_until_there_is_room_again() {
    let (server, _, data, config) = webhook_to_s3("checkpoint-full");
    let bearer = format!("Bearer {TOKEN}");
    let deliveries: Vec<String> =
        put_records(&server, "ckpt/", 15).chunks(3).map(delivery).collect();
    let (run, admin) = start_ignoring_xfsz(&config, &data);
    let run = common::Running(run);
    let appended = r#"{"appended":3,"duplicates":0,"skipped":0}"#.to_owned();
    let limit = |l: &str| limit_file_size(&run.0, l);
    let wait_checkpointed = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while checkpointed(&admin) < n {
            assert!(Instant::now() < deadline, "checkpoint at {}, not {n}", checkpointed(&admin));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Intake repairs itself after a full disk too (its marks may have failed to commit): a
    // refusal first is its sender's retry.
    let deliver = |d: &String| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = post(&admin, &bearer, d);
            if code == 200 {
                assert_eq!(body, appended, "taken once, whole");
                return;
            }
            assert!(Instant::now() < deadline, "intake refuses with room: {code} {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    deliver(&deliveries[0]);
    wait_checkpointed(3);
    // Full right after a delivery is taken, before its versions are replicated and
    // checkpointed (a checkpoint that came first is missed: then again with the next).
    let mut taken = 1;
    let failing = loop {
        assert!(taken < 4, "the checkpoint never failed under a full disk");
        deliver(&deliveries[taken]);
        taken += 1;
        limit("1:unlimited");
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = loop {
            let (code, body) = health(&admin);
            if body.contains("progress not saved") {
                break Some((code, body));
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(seen) = seen {
            break seen;
        }
        limit("unlimited:unlimited");
        wait_checkpointed(3 * taken as u64);
    };
    assert_eq!(failing.0, 200, "degraded, not halted: {}", failing.1);
    assert!(failing.1.starts_with("degraded\n"), "{}", failing.1);
    // Replication goes on meanwhile; the checkpoint stays behind.
    replicated_once(&server, "ckpt/", 3 * taken);
    std::thread::sleep(Duration::from_secs(1));
    assert!(checkpointed(&admin) < 3 * taken as u64);
    assert!(health(&admin).1.contains("progress not saved"), "still failing");
    // Room again.
    limit("unlimited:unlimited");
    wait_checkpointed(3 * taken as u64);
    assert_eq!(health(&admin), (200, "ok\n".to_owned()));
    for d in &deliveries[taken..] {
        deliver(d);
    }
    wait_checkpointed(15);
    replicated_once(&server, "ckpt/", 15);
    drop(run);
    let _ = std::fs::remove_dir_all(&data);
}

/// An attack on intake into a log on Kafka (`[log] kind = "kafka"`): the brokers take a group's
/// records, then the marks' commit fails (a full disk: the file size limit at 1 byte) and the
/// sender is refused (503), or the process dies (SIGKILL) before its marks are saved. The
/// retried events must append nothing: the marks come back from the topic's tail, without a
/// restart once there is room again and at start after the kill. Before, a Kafka log had no
/// tail to restore them from, and each retried event appended its version again (a second
/// replica version).
#[test]
fn marks_lost_after_kafka_took_the_records_come_back_from_the_topic() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("versions", 2, 1).unwrap();
    let (server, _, data, config) = webhook_to_s3("intake-kafka-marks");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replacen(
            "[log]\npartitions = 2\n",
            &format!(
                "[log]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"versions\"\ngroup = \"replicators\"\n\
                 [log.kafka]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
                mock.bootstrap_servers()
            ),
            1,
        )
        // Every group's marks durable: the full disk fails the very commit after the append.
        .replacen("[intake]\n", "[intake]\nmarks_durable_every_ms = 0\n", 1);
    std::fs::write(&config, text).unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let deliveries: Vec<String> =
        put_records(&server, "kmarks/", 12).chunks(3).map(delivery).collect();
    let appended = |n: u32| format!(r#"{{"appended":{n},"duplicates":{},"skipped":0}}"#, 3 - n);
    let (run, admin) = start_ignoring_xfsz(&config, &data);
    let mut run = common::Running(run);
    assert_eq!(post(&admin, &bearer, &deliveries[0]), (200, appended(3)));
    // Full: the records reach the topic, their marks do not.
    limit_file_size(&run.0, "1:unlimited");
    let (code, body) = post(&admin, &bearer, &deliveries[1]);
    assert_eq!(code, 503, "refused for the sender to retry: {body}");
    // Room again, same process: the retry is recognised.
    limit_file_size(&run.0, "unlimited:unlimited");
    let retried = |admin: &str, d: &str| {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let (code, body) = post(admin, &bearer, d);
            if code == 200 {
                return body;
            }
            assert!(Instant::now() < deadline, "still refused: {code} {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert_eq!(retried(&admin, &deliveries[1]), appended(0), "appended once, before the refusal");
    // Full again, and the process dies with its marks unsaved.
    limit_file_size(&run.0, "1:unlimited");
    let (code, body) = post(&admin, &bearer, &deliveries[2]);
    assert_eq!(code, 503, "{body}");
    run.0.kill().unwrap();
    let _ = run.0.wait();
    drop(run);
    let (run, admin) = start(&config, &data);
    let _run = common::Running(run);
    assert_eq!(retried(&admin, &deliveries[2]), appended(0), "restored at start");
    assert_eq!(retried(&admin, &deliveries[3]), appended(3));
    assert_eq!(post(&admin, &bearer, &deliveries[0]), (200, appended(0)));
    replicated_once(&server, "kmarks/", 12);
    let _ = std::fs::remove_dir_all(&data);
}
