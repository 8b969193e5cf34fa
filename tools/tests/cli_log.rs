//! `s3repl log gen | inspect | read | tail | repair` on real files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn s3repl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3repl")).args(args).output().unwrap()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s3repl-cli-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(out.stdout.trim_ascii_end().rsplit(|b| *b == b'\n').next().unwrap())
        .unwrap()
}

fn segments(dir: &Path, partition: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join(partition)).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn gen_then_inspect_then_tail() {
    let dir = temp("gen");
    let d = dir.to_str().unwrap();
    let out = s3repl(&[
        "log",
        "gen",
        "--dir",
        d,
        "--count",
        "5000",
        "--partitions",
        "4",
        "--seed",
        "7",
        "--format",
        "json",
        "--durability",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out);
    assert_eq!(report["records"], 5000);
    // The rate is of the timed append phases alone, which lie inside the whole run.
    let (append, whole) =
        (report["append_seconds"].as_f64().unwrap(), report["seconds"].as_f64().unwrap());
    assert!(append > 0.0 && append < whole, "append {append} s of a {whole} s run");
    let rate = report["records_per_s"].as_f64().unwrap();
    assert!((rate * append - 5000.0).abs() < 1.0, "{rate} records/s over {append} s");
    // Four threads (the default) append 1,250 records each, in calls of 64.
    assert_eq!(report["append_calls"], 4 * 1250u64.div_ceil(64));
    let out = s3repl(&["log", "inspect", "--dir", d, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"{"partitions":4,"segments":4,"records":5000,"torn_tail_bytes":0,"torn_tail_records":0,"lost_records":0}"#
    );
    let out =
        s3repl(&["log", "tail", "--dir", d, "--from", "0", "--max", "10", "--partition", "1"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i);
        assert_eq!(l["partition"], 1);
        assert!(l["key"].as_str().unwrap().starts_with("tenant-"));
    }
    // Same seed, same records (in the same order with one appending thread).
    let dir2 = temp("gen2");
    let dir3 = temp("gen3");
    for d in [&dir2, &dir3] {
        let d = d.to_str().unwrap();
        let args =
            ["log", "gen", "--dir", d, "--count", "5000", "--partitions", "4", "--seed", "7"];
        s3repl(&[&args[..], &["--threads", "1", "--durability", "none"]].concat());
    }
    let keys = |d: &str| -> Vec<String> {
        let out =
            s3repl(&["log", "tail", "--dir", d, "--from", "0", "--max", "50", "--partition", "2"]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["key"].to_string())
            .collect()
    };
    assert_eq!(keys(dir3.to_str().unwrap()), keys(dir2.to_str().unwrap()));
    for d in [dir, dir2, dir3] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn read_reports_the_reader_beside_a_plain_read_of_the_same_files() {
    let dir = temp("read");
    let d = dir.to_str().unwrap();
    let args = ["log", "gen", "--dir", d, "--count", "20000", "--partitions", "3"];
    let out = s3repl(&[&args[..], &["--durability", "none"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes: u64 = ["p00000", "p00001", "p00002"]
        .iter()
        .flat_map(|p| segments(&dir, p))
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    for backend in ["auto", "uring", "read-ahead", "std"] {
        let out = s3repl(&[
            "log",
            "read",
            "--dir",
            d,
            "--backend",
            backend,
            "--rounds",
            "2",
            "--format",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let r = json(&out);
        assert_eq!(r["records"], 20000, "{backend}");
        assert_eq!(r["bytes"], bytes, "{backend}: the plain read covers every segment file");
        assert_eq!(r["backend"], backend);
        assert_eq!(r["rounds"], 2);
        let (plain, reader) = (
            r["plain_ns_per_record"].as_f64().unwrap(),
            r["reader_ns_per_record"].as_f64().unwrap(),
        );
        let ratio = r["ratio_to_plain"].as_f64().unwrap();
        assert!(plain > 0.0 && reader > 0.0, "{r}");
        assert!((ratio - plain / reader).abs() < 1e-6, "{r}");
    }
    let text = s3repl(&["log", "read", "--dir", d, "--rounds", "1"]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("read 20000 records"));
    // Damage is reported, not read past.
    let seg = segments(&dir, "p00001").pop().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(32 + 16 + 10)).unwrap();
    f.write_all(&[0xEE]).unwrap();
    drop(f);
    let out = s3repl(&["log", "read", "--dir", d, "--rounds", "1"]);
    assert_eq!(out.status.code(), Some(1), "damage exits 1, as inspect's does");
    assert!(String::from_utf8_lossy(&out.stderr).contains("partition 1"), "{out:?}");
    assert_eq!(s3repl(&["log", "read", "--dir", "/nonexistent-s3repl"]).status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_reports_torn_tails_and_corruption() {
    let dir = temp("damage");
    let d = dir.to_str().unwrap();
    s3repl(&[
        "log",
        "gen",
        "--dir",
        d,
        "--count",
        "300",
        "--partitions",
        "1",
        "--durability",
        "none",
    ]);
    let seg = segments(&dir, "p00000").pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // A torn tail: half a frame appended.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    drop(f);
    let out = s3repl(&["log", "inspect", "--dir", d, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["torn_tail_bytes"], 9);
    assert_eq!(json(&out)["records"], 300);
    // A flipped byte in the first record's payload: corruption, with its location.
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(32 + 16 + 10)).unwrap();
    f.write_all(&[0xEE]).unwrap();
    drop(f);
    let out = s3repl(&["log", "inspect", "--dir", d, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["error"], "corrupt");
    assert_eq!(v["partition"], 0);
    assert_eq!(v["segment"], seg.file_name().unwrap().to_str().unwrap());
    assert_eq!(v["offset"], 32);
    assert!(len > 32);
    // `log repair` says what cutting the damage off would drop, and changes nothing...
    let out = s3repl(&["log", "repair", "--dir", d, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!((v["offset"].as_u64(), v["next_seq"].as_u64()), (Some(32), Some(0)));
    assert_eq!(v["records_after"], 299);
    assert_eq!(v["seqs_after"], serde_json::json!([1, 299]));
    assert_eq!(v["bytes"].as_u64(), Some(std::fs::metadata(&seg).unwrap().len() - 32));
    assert_eq!(v["truncated"], false);
    assert_eq!(v["checkpoints_past"], serde_json::json!([]));
    assert_eq!(s3repl(&["log", "inspect", "--dir", d]).status.code(), Some(1));
    // ...until asked to.
    let out = s3repl(&["log", "repair", "--dir", d, "--truncate"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("truncated"));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 32);
    let out = s3repl(&["log", "inspect", "--dir", d, "--format", "json"]);
    assert_eq!((out.status.code(), json(&out)["records"].as_u64()), (Some(0), Some(0)));
    let out = s3repl(&["log", "repair", "--dir", d]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nothing to repair"));
    assert_eq!(s3repl(&["log", "inspect", "--dir", "/nonexistent-s3repl"]).status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `log gen --kafka-brokers` publishes the synthetic versions to a topic (tansu, on
/// 127.0.0.1): every record arrives, each a version record keyed `bucket/key` on the
/// partition the segment log would give it.
#[test]
fn gen_publishes_to_a_kafka_topic() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let broker = s3repl_tests::tansu::Tansu::start().unwrap();
    broker.create_topic("gen", 3).unwrap();
    let out = s3repl(&[
        "log",
        "gen",
        "--kafka-brokers",
        &broker.brokers(),
        "--kafka-topic",
        "gen",
        "--count",
        "500",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "gen-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        list.add_partition_offset("gen", p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = 0;
    while seen < 500 && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(std::time::Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        let record = s3repl::record::VersionRecord::decode(m.payload().unwrap()).unwrap();
        let key = format!("{}/{}", record.bucket, record.key);
        assert_eq!(m.key(), Some(key.as_bytes()));
        let want = s3repl::log::partition_for(&record.bucket, &record.key, 3);
        assert_eq!(u32::try_from(m.partition()).unwrap(), want, "{key}");
        seen += 1;
    }
    assert_eq!(seen, 500);
}
