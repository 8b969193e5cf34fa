//! `s3repl run` on a Kafka topic (issue 27): two replicator processes form a consumer group
//! over a topic of committed versions, one is killed (`SIGKILL`) mid-run, and the other takes its
//! partitions over: every version reaches the versioned S3 destination exactly once; and a
//! failed operation of the killed process is redone by its successor. The takeover is tested
//! with both rebalance protocols (classic, and KIP-848's consumer protocol).
//!
//! The brokers are librdkafka's mock cluster, hosted by this test process on 127.0.0.1 (real
//! Kafka protocol over TCP; tansu 0.6's group coordinator loses the group after a member
//! leaves: `docs/design/kafka-log.md`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use s3repl::pipeline::{KafkaSettings, KafkaWriter, LocalVersionStore};
use s3repl::record::AppendRecord;
use s3repl_tests::kafka_run::{GroupProtocol, MockBrokers};
use s3repl_tests::seaweed::SeaweedFs;

struct Replicator {
    child: Child,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log(data: &Path) -> String {
    std::fs::read_to_string(data.join("run.log")).unwrap_or_default()
}

/// Starts `s3repl run` reading `topic` on `brokers` as a member of the group, the shared
/// source store `source`, into the bucket `kdst` of `server`.
fn start(
    name: &str,
    brokers: &str,
    source: &Path,
    server: &SeaweedFs,
    protocol: GroupProtocol,
) -> Replicator {
    let endpoint = server.endpoint();
    // Commits seconds apart: a process killed mid-run has applied records it never committed,
    // which its successor must not write again.
    let limits = "checkpoint_ms = 3000";
    start_on(name, brokers, source, (&endpoint, "kdst"), ("versions", protocol), limits)
}

/// Like [`start`], into `bucket` at `endpoint`, reading `topic`, with `limits`.
fn start_on(
    name: &str,
    brokers: &str,
    source: &Path,
    (endpoint, bucket): (&str, &str),
    (topic, protocol): (&str, GroupProtocol),
    limits: &str,
) -> Replicator {
    let dir = s3repl_tests::temp_dir(name);
    let data = dir.path().to_path_buf();
    let config = s3repl_tests::kafka_run::configure(&s3repl_tests::kafka_run::Member {
        data: &data,
        brokers,
        topic,
        group: "replicators",
        source,
        endpoint,
        bucket,
        limits,
        protocol,
    })
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"];
    let env = [("S3REPL_ADMIN_ACCESS_KEY_ID", "k"), ("S3REPL_ADMIN_SECRET_ACCESS_KEY", "s")];
    let (child, _endpoint) = common::spawn_run(&args, &env, &data.join("run.log"));
    Replicator { child, data, _dir: dir }
}

#[test]
fn a_killed_replicators_partitions_are_taken_over_and_nothing_is_written_twice() {
    killed_member_taken_over(GroupProtocol::Classic);
}

/// The same with the consumer rebalance protocol (KIP-848): the brokers assign, so the
/// dead member's partitions move when its session times out, without waiting for the
/// members to rejoin.
#[test]
fn with_the_consumer_protocol_a_killed_replicators_partitions_are_taken_over_once() {
    killed_member_taken_over(GroupProtocol::Consumer);
}

fn killed_member_taken_over(protocol: GroupProtocol) {
    const KEYS: u32 = 40;
    const ROUNDS: u32 = 6;
    let mock = MockBrokers::start().unwrap();
    mock.create_topic("versions", 6).unwrap();
    let brokers = mock.bootstrap_servers().to_owned();
    let name = |n: &str| format!("kafka-kill-{protocol:?}-{n}").to_lowercase();
    let server = SeaweedFs::start(&name("s3"), &["kdst"]).unwrap();
    server.enable_versioning("kdst").unwrap();
    let source_dir = s3repl_tests::temp_dir(&name("source"));
    let store = LocalVersionStore::new(source_dir.path()).durable(true);
    let writer = KafkaWriter::new(&KafkaSettings::new(&brokers, "versions", "writers")).unwrap();
    let mut a = start(&name("a"), &brokers, source_dir.path(), &server, protocol);
    let b = start(&name("b"), &brokers, source_dir.path(), &server, protocol);
    // Both members hold partitions before the records come (each has work when A dies).
    let deadline = Instant::now() + Duration::from_mins(1);
    while ![&a.data, &b.data].iter().all(|d| log(d).contains("Kafka partitions assigned")) {
        assert!(
            Instant::now() < deadline,
            "no assignment:\nA:\n{}\nB:\n{}",
            log(&a.data),
            log(&b.data)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let append = |round: u32| {
        for k in 0..KEYS {
            let key = format!("k/{k}");
            let body = format!("{key} round {round}");
            let version = format!("r{round}");
            let rec = common::put_version(&store, "src-bucket", &key, &version, body.as_bytes());
            writer.append_record(&rec).unwrap();
        }
    };
    for round in 0..3 {
        append(round);
    }
    // Mid-run, while it holds partitions and applied work it has not committed: no leave, no
    // commit, no drain.
    std::thread::sleep(Duration::from_millis(1500));
    a.child.kill().unwrap();
    let _ = a.child.wait();
    for round in 3..ROUNDS {
        append(round);
    }
    let started = Instant::now();
    let want = (KEYS * ROUNDS) as usize;
    loop {
        let n: usize = server.version_counts("kdst").unwrap().values().sum();
        if n >= want {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{n} of {want} replica versions within 90 s after the kill; survivor's log:\n{}",
            log(&b.data)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    // Settled: a duplicate would still arrive.
    std::thread::sleep(Duration::from_secs(2));
    let counts = server.version_counts("kdst").unwrap();
    for k in 0..KEYS {
        let key = format!("k/{k}");
        assert_eq!(counts.get(&key).copied(), Some(ROUNDS as usize), "{key}: {counts:?}");
    }
    eprintln!("all {want} versions replicated {took:?} after the kill, none twice");
    drop(b);
    drop(a);
}

/// A replicator killed (`SIGKILL`) while a failed operation holds its partition's offset (the
/// destination refused one version, 403: permanent, queued in the dead process's journal): the
/// survivor re-reads the partition from that version and replicates it once the destination
/// takes it, and writes none of the versions after it a second time (the commit's
/// `check-below` mark, plus the takeover window, covers what the dead process applied).
#[test]
fn a_failed_operation_of_a_killed_replicator_is_redone_by_its_successor() {
    use s3repl_tests::fault_proxy::FaultProxy;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const KEYS: u32 = 40;
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("held", 4, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let server = SeaweedFs::start("kafka-held", &["kheld"]).unwrap();
    server.enable_versioning("kheld").unwrap();
    let refusing = Arc::new(AtomicBool::new(true));
    let proxy =
        FaultProxy::refusing_puts(server.port(), "/kheld/k/refused", refusing.clone()).unwrap();
    let endpoint = proxy.endpoint();
    let source_dir = s3repl_tests::temp_dir("kafka-held-source");
    let store = LocalVersionStore::new(source_dir.path()).durable(true);
    let writer = KafkaWriter::new(&KafkaSettings::new(&brokers, "held", "writers")).unwrap();
    let target = (endpoint.as_str(), "kheld");
    let held = ("held", GroupProtocol::Classic);
    let mut a = start_on("kafka-held-a", &brokers, source_dir.path(), target, held, "");
    let deadline = Instant::now() + Duration::from_mins(1);
    while !log(&a.data).contains("Kafka partitions assigned") {
        assert!(Instant::now() < deadline, "no assignment:\n{}", log(&a.data));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The refused version first: every later record of its partition is past it.
    let put = |key: &str| {
        let rec = common::put_version(&store, "src-bucket", key, "v1", key.as_bytes());
        writer.append_record(&rec).unwrap();
    };
    put("k/refused");
    for k in 0..KEYS {
        put(&format!("k/{k}"));
    }
    let count = || server.version_counts("kheld").unwrap();
    let deadline = Instant::now() + Duration::from_mins(1);
    while count().values().sum::<usize>() < KEYS as usize {
        assert!(Instant::now() < deadline, "A's versions:\n{}", log(&a.data));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few checkpoints (200 ms apart) with the offset held, then no goodbye.
    std::thread::sleep(Duration::from_secs(1));
    a.child.kill().unwrap();
    let _ = a.child.wait();
    assert!(!count().contains_key("k/refused"), "refused while A lived");
    refusing.store(false, Ordering::SeqCst);
    let b = start_on("kafka-held-b", &brokers, source_dir.path(), target, held, "");
    let deadline = Instant::now() + Duration::from_secs(90);
    while count().get("k/refused") != Some(&1) {
        assert!(
            Instant::now() < deadline,
            "the refused version within 90 s; B's log:\n{}",
            log(&b.data)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Settled: a version written twice would still arrive.
    std::thread::sleep(Duration::from_secs(2));
    let counts = count();
    assert_eq!(counts.get("k/refused"), Some(&1), "{counts:?}");
    for k in 0..KEYS {
        assert_eq!(counts.get(&format!("k/{k}")), Some(&1), "k/{k} once: {counts:?}");
    }
    drop(b);
}

/// Brokers that keep their connections and stop answering do not keep a replicator told to
/// stop (SIGTERM) from exiting: librdkafka's synchronous commit would wait for their answer
/// for ever (the final checkpoint's, the drained marks'), and so would the consumer's close.
/// Each commit waits at most `commit_timeout_s`, the close at most the drain and commit
/// timeouts (10 s each here).
#[test]
fn a_replicator_whose_brokers_stopped_answering_still_stops() {
    const KEYS: u32 = 20;
    let mock = MockBrokers::start().unwrap();
    mock.create_topic("hung", 2).unwrap();
    let brokers = mock.bootstrap_servers().to_owned();
    let server = SeaweedFs::start("kafka-hung-s3", &["khung"]).unwrap();
    let source_dir = s3repl_tests::temp_dir("kafka-hung-source");
    let store = LocalVersionStore::new(source_dir.path()).durable(true);
    let writer = KafkaWriter::new(&KafkaSettings::new(&brokers, "hung", "writers")).unwrap();
    let endpoint = server.endpoint();
    let mut run = start_on(
        "kafka-hung-run",
        &brokers,
        source_dir.path(),
        (&endpoint, "khung"),
        ("hung", GroupProtocol::Classic),
        "checkpoint_ms = 200",
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    while !log(&run.data).contains("Kafka partitions assigned") {
        assert!(Instant::now() < deadline, "no assignment:\n{}", log(&run.data));
        std::thread::sleep(Duration::from_millis(100));
    }
    for k in 0..KEYS {
        let key = format!("h/{k}");
        let rec = common::put_version(&store, "src-bucket", &key, "v1", key.as_bytes());
        writer.append_record(&rec).unwrap();
    }
    // Two minutes: a destination PUT that fails is retried 30 s later (this test is about
    // stopping, not about a slow server).
    let deadline = Instant::now() + Duration::from_mins(2);
    while server.version_counts("khung").unwrap().values().sum::<usize>() < KEYS as usize {
        assert!(
            Instant::now() < deadline,
            "not replicated:\n{}\nSeaweedFS errors:\n{}",
            log(&run.data),
            server.log_errors()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    mock.round_trip_time(Duration::from_hours(1)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let pid = run.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = Instant::now();
    let status = common::exit_within(&mut run.child, Duration::from_secs(90));
    let status = status.unwrap_or_else(|| {
        panic!("no exit within 90 s of SIGTERM with the brokers silent; log:\n{}", log(&run.data))
    });
    eprintln!("exited {status} {:?} after SIGTERM, the brokers silent", stopped.elapsed());
}
