//! The committed-version log on Kafka (issue 27), against a real Kafka-protocol broker (tansu)
//! on 127.0.0.1: records a `KafkaWriter` appends replicate through engines that read the topic
//! as one consumer group; engines sharing the topic write every version once, in order, also
//! when a member joins mid-way (a rebalance); a record that does not decode stops its
//! partition with a typed halt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStoreExt as _;
use s3repl::pipeline::{
    EngineHandle, Halt, KafkaLog, KafkaSettings, KafkaWriter, LogInput, MemorySource,
};
use s3repl::record::{AppendRecord, VersionRecord};
use s3repl_io::dest::Destination;
use s3repl_tests::seaweed::SeaweedFs;
use s3repl_tests::tansu::Tansu;

const DEST: &str = "arn:aws:s3:::kafka-dst";

fn settings(broker: &Tansu, topic: &str, group: &str) -> KafkaSettings {
    let mut s = group_settings(&broker.brokers(), topic);
    group.clone_into(&mut s.group);
    s
}

fn group_settings(brokers: &str, topic: &str) -> KafkaSettings {
    let mut s = KafkaSettings::new(brokers, topic, "replicators");
    // A member that leaves or dies hands its partitions over within seconds.
    s.extra.push(("session.timeout.ms".into(), "6000".into()));
    s.extra.push(("heartbeat.interval.ms".into(), "500".into()));
    s.drain_timeout = Duration::from_secs(20);
    s
}

/// Puts version `v` of `key` into the source and appends its record.
fn put(writer: &KafkaWriter, source: &MemorySource, key: &str, v: u32) {
    let data = Bytes::from(format!("{key} version {v}"));
    let version_id = format!("v{v}");
    source.insert("src", key, &version_id, data.clone());
    let mut record = VersionRecord::put("src", key, &version_id, data.len() as u64);
    record.blake3 = Some(*blake3::hash(&data).as_bytes());
    writer.append_record(&record).unwrap();
}

fn engine(
    input: KafkaLog,
    state: &std::path::Path,
    source: &MemorySource,
    dest: &Destination,
) -> EngineHandle {
    engine_on(Arc::new(input), state, source, dest)
}

fn engine_on(
    input: Arc<KafkaLog>,
    state: &std::path::Path,
    source: &MemorySource,
    dest: &Destination,
) -> EngineHandle {
    s3repl_tests::start_engine_on(input, state, s3repl_tests::catch_all(DEST, false), source, dest)
}

async fn wait_until(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_on_a_topic_replicate_and_the_group_commits_them() {
    s3repl_tests::watchdog::arm("records_on_a_topic_replicate_and_the_group_commits_them", 300);
    let broker = Tansu::start().unwrap();
    broker.create_topic("versions", 4).unwrap();
    let dir = s3repl_tests::temp_dir("kafka-one");
    let source = MemorySource::new();
    let dest = Destination::in_memory(DEST);
    let s = settings(&broker, "versions", "replicators");
    let writer = KafkaWriter::new(&s).unwrap();
    assert_eq!(writer.partitions(), 4);
    let keys: Vec<String> = (0..200).map(|i| format!("k/{i}")).collect();
    for k in &keys {
        put(&writer, &source, k, 1);
    }
    let engine = engine(KafkaLog::new(&s).unwrap(), dir.path(), &source, &dest);
    wait_until("every record replicated", 60, async || {
        for k in &keys {
            let path = object_store::path::Path::parse(k).unwrap();
            let Ok(r) = dest.store().get(&path).await else { return false };
            if r.bytes().await.unwrap() != format!("{k} version 1") {
                return false;
            }
        }
        true
    })
    .await;
    // The group's offsets reach the end of every partition (the records' count, all told).
    let probe = KafkaLog::new(&settings(&broker, "versions", "replicators")).unwrap();
    wait_until("the offsets committed", 30, async || {
        probe.committed().unwrap().iter().sum::<u64>() == keys.len() as u64
    })
    .await;
    drop(probe);
    assert!(engine.halts().is_empty(), "{:?}", engine.halts());
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_stops_its_partition_with_a_typed_halt() {
    s3repl_tests::watchdog::arm(
        "a_record_that_does_not_decode_stops_its_partition_with_a_typed_halt",
        300,
    );
    let broker = Tansu::start().unwrap();
    broker.create_topic("bad", 2).unwrap();
    let dir = s3repl_tests::temp_dir("kafka-bad");
    let source = MemorySource::new();
    let dest = Destination::in_memory(DEST);
    let s = settings(&broker, "bad", "replicators");
    let writer = KafkaWriter::new(&s).unwrap();
    let at = writer.append("src", "broken", b"not a version record").unwrap();
    let engine = engine(KafkaLog::new(&s).unwrap(), dir.path(), &source, &dest);
    wait_until("the halt", 30, async || !engine.halts().is_empty()).await;
    assert!(
        matches!(engine.halts().as_slice(),
            [Halt::Record { partition, seq, .. }] if *partition == at.partition && *seq == at.seq),
        "{:?}",
        engine.halts()
    );
    engine.shutdown().await.unwrap();
}

/// Two engines share a topic's partitions, a third joins while records keep coming (every
/// partition is revoked and assigned again), and one leaves: each key's three versions reach
/// a versioned S3 destination exactly once each, the last one current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_in_a_group_write_every_version_once_through_rebalances() {
    const KEYS: u32 = 60;
    s3repl_tests::watchdog::arm(
        "engines_in_a_group_write_every_version_once_through_rebalances",
        300,
    );
    // tansu 0.6's group coordinator keeps a member that left as the group's leader, after
    // which no member gets an assignment again (seen: SyncGroup "rebalance in progress"
    // forever): group membership is tested on librdkafka's own mock cluster, in process.
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("shared", 6, 1).unwrap();
    let server = SeaweedFs::start("kafka-group", &["kgroup"]).unwrap();
    server.enable_versioning("kgroup").unwrap();
    let dest = Destination::s3(DEST, &s3repl_tests::seaweed::options(&server.endpoint(), "kgroup"))
        .unwrap();
    let source = MemorySource::new();
    let s = group_settings(&mock.bootstrap_servers(), "shared");
    let writer = KafkaWriter::new(&s).unwrap();
    let dirs: Vec<_> =
        (0..3).map(|i| s3repl_tests::temp_dir(&format!("kafka-group-{i}"))).collect();
    let a = engine(KafkaLog::new(&s).unwrap(), dirs[0].path(), &source, &dest);
    let b = engine(KafkaLog::new(&s).unwrap(), dirs[1].path(), &source, &dest);
    for v in 1..=3 {
        for k in 0..KEYS {
            put(&writer, &source, &format!("g/{k}"), v);
        }
        if v == 1 {
            // A member joins mid-stream.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let c = engine(KafkaLog::new(&s).unwrap(), dirs[2].path(), &source, &dest);
    for k in 0..KEYS {
        put(&writer, &source, &format!("g/{k}"), 4);
    }
    // One member leaves (cleanly): its partitions go to the others.
    a.shutdown().await.unwrap();
    for k in 0..KEYS {
        put(&writer, &source, &format!("g/{k}"), 5);
    }
    let counts = || server.version_counts("kgroup").unwrap();
    wait_until("five replica versions of every key", 180, async || {
        counts().values().sum::<usize>() >= (5 * KEYS) as usize
    })
    .await;
    // Settled: nothing more arrives (a duplicate would).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = counts();
    for k in 0..KEYS {
        let key = format!("g/{k}");
        assert_eq!(counts.get(&key), Some(&5), "{key}: every version once: {counts:?}");
        let path = object_store::path::Path::parse(&key).unwrap();
        let current = dest.store().get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(current, format!("{key} version 5"), "the last version is current");
    }
    for e in [&b, &c] {
        assert!(e.halts().is_empty(), "{:?}", e.halts());
    }
    b.shutdown().await.expect("b shuts down");
    c.shutdown().await.expect("c shuts down");
}

/// A broker outage mid-run (librdkafka's mock cluster takes its broker down and up again):
/// nothing halts, nothing is skipped, and once the broker is back every version replicates,
/// those appended during the outage included (the writer's sends wait in its queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_waited_out_and_nothing_is_skipped() {
    s3repl_tests::watchdog::arm("a_broker_outage_is_waited_out_and_nothing_is_skipped", 300);
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("outage", 3, 1).unwrap();
    let dir = s3repl_tests::temp_dir("kafka-outage");
    let source = MemorySource::new();
    let dest = Destination::in_memory(DEST);
    let s = group_settings(&mock.bootstrap_servers(), "outage");
    let writer = Arc::new(KafkaWriter::new(&s).unwrap());
    for k in 0..50 {
        put(&writer, &source, &format!("before/{k}"), 1);
    }
    let engine = engine(KafkaLog::new(&s).unwrap(), dir.path(), &source, &dest);
    let replicated = async |prefix: &str, n: u32| {
        for k in 0..n {
            let path = object_store::path::Path::parse(format!("{prefix}/{k}")).unwrap();
            if dest.store().get(&path).await.is_err() {
                return false;
            }
        }
        true
    };
    wait_until("the first versions", 30, async || replicated("before", 50).await).await;
    mock.broker_down(1).unwrap();
    // Appends during the outage: each waits until the broker takes it (on another thread).
    let during = {
        let (writer, source) = (writer.clone(), source.clone());
        std::thread::spawn(move || {
            for k in 0..30 {
                put(&writer, &source, &format!("during/{k}"), 1);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(engine.halts().is_empty(), "an outage is not a halt: {:?}", engine.halts());
    mock.broker_up(1).unwrap();
    during.join().unwrap();
    for k in 0..20 {
        put(&writer, &source, &format!("after/{k}"), 1);
    }
    wait_until("the versions of the outage and after", 120, async || {
        replicated("during", 30).await && replicated("after", 20).await
    })
    .await;
    assert!(engine.halts().is_empty(), "{:?}", engine.halts());
    engine.shutdown().await.unwrap();
}

/// A failed operation follows its partition (issue 27): engine A cannot replicate one version
/// (the destination refuses it, `403 AccessDenied`: permanent, so it goes to A's
/// failed-operations queue), replicates the rest, and leaves the group. The group's offset of
/// that partition was held at the refused version, so engine B — its own, empty state —
/// reads the partition again from there once it owns it: the refused version replicates (the
/// destination accepts it now), and the versions after it, which A applied, are recognised at
/// the destination and not written twice. A drops the operation it no longer owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_operation_follows_its_partition_to_the_next_owner() {
    use s3repl_tests::fault_proxy::FaultProxy;
    use std::sync::atomic::{AtomicBool, Ordering};
    const KEYS: u32 = 30;
    s3repl_tests::watchdog::arm("a_failed_operation_follows_its_partition_to_the_next_owner", 300);
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("failing", 3, 1).unwrap();
    let server = SeaweedFs::start("kafka-failed", &["kfail"]).unwrap();
    server.enable_versioning("kfail").unwrap();
    let refusing = Arc::new(AtomicBool::new(true));
    let proxy =
        FaultProxy::refusing_puts(server.port(), "/kfail/f/refused", refusing.clone()).unwrap();
    let dest =
        Destination::s3(DEST, &s3repl_tests::seaweed::options(&proxy.endpoint(), "kfail")).unwrap();
    let source = MemorySource::new();
    let s = group_settings(&mock.bootstrap_servers(), "failing");
    let writer = KafkaWriter::new(&s).unwrap();
    let dirs: Vec<_> =
        (0..2).map(|i| s3repl_tests::temp_dir(&format!("kafka-failed-{i}"))).collect();
    let a = engine(KafkaLog::new(&s).unwrap(), dirs[0].path(), &source, &dest);
    // The refused version first: every later record of its partition is past it.
    put(&writer, &source, "f/refused", 1);
    for k in 0..KEYS {
        put(&writer, &source, &format!("f/{k}"), 1);
    }
    let counts = || server.version_counts("kfail").unwrap();
    wait_until("A replicates all but the refused version, which it queues", 60, async || {
        counts().values().sum::<usize>() >= KEYS as usize && a.control().failed_queue_len() == 1
    })
    .await;
    // Commits went on for the other partitions; give the held one a checkpoint or two too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.shutdown().await.unwrap();
    assert!(!counts().contains_key("f/refused"), "refused while A owned it: {:?}", counts());
    refusing.store(false, Ordering::SeqCst);
    let b = engine(KafkaLog::new(&s).unwrap(), dirs[1].path(), &source, &dest);
    wait_until("B replicates the version A could not", 60, async || {
        counts().get("f/refused") == Some(&1)
    })
    .await;
    // Settled: a version written twice would arrive meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = counts();
    assert_eq!(counts.get("f/refused"), Some(&1), "{counts:?}");
    for k in 0..KEYS {
        assert_eq!(counts.get(&format!("f/{k}")), Some(&1), "f/{k} once: {counts:?}");
    }
    assert!(b.halts().is_empty(), "{:?}", b.halts());
    b.shutdown().await.unwrap();
}

/// A member joining before any record is handed out takes its partitions without checking
/// anything (an `owned` mark on them would make the newcomer check its first records at the
/// destination, three requests a record where one does: three processes ran at the rate of
/// one) — also when the first member's commit as it lets them go is refused. librdkafka's mock
/// coordinator refuses commits while a member rejoins, and CI's load once put that commit
/// there; here the coordinator refuses it every time. The first member commits no mark of
/// its own before it has a record to hand out; before that change, its `owned` mark stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_let_go_before_any_work_are_taken_without_checks() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use s3repl_tests::fault_proxy::FaultProxy;
    const KEYS: u32 = 40;
    s3repl_tests::watchdog::arm("partitions_let_go_before_any_work_are_taken_without_checks", 300);
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("early", 4, 1).unwrap();
    let server = SeaweedFs::start("kafka-early", &["kearly"]).unwrap();
    server.enable_versioning("kearly").unwrap();
    let proxy = FaultProxy::start(server.port(), Arc::new(|_: &str, _| false)).unwrap();
    let dest = Destination::s3(DEST, &s3repl_tests::seaweed::options(&proxy.endpoint(), "kearly"))
        .unwrap();
    let source = MemorySource::new();
    let settings = group_settings(&mock.bootstrap_servers(), "early");
    let writer = KafkaWriter::new(&settings).unwrap();
    let dirs: Vec<_> =
        (0..2).map(|i| s3repl_tests::temp_dir(&format!("kafka-early-{i}"))).collect();
    let a_input = Arc::new(KafkaLog::new(&settings).unwrap());
    let a = engine_on(a_input.clone(), dirs[0].path(), &source, &dest);
    wait_until("A owns every partition", 30, async || a_input.assigned().len() == 4).await;
    // Whatever A commits as it takes them lands meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS; 4],
    );
    let b_input = Arc::new(KafkaLog::new(&settings).unwrap());
    let b = engine_on(b_input.clone(), dirs[1].path(), &source, &dest);
    wait_until("A and B split the topic", 60, async || {
        let (first, second) = (a_input.assigned(), b_input.assigned());
        !first.is_empty() && !second.is_empty() && first.len() + second.len() == 4
    })
    .await;
    mock.clear_request_errors(RDKafkaApiKey::OffsetCommit);
    for k in 0..KEYS {
        put(&writer, &source, &format!("e/{k}"), 1);
    }
    wait_until("every version", 60, async || {
        server.version_counts("kearly").unwrap().values().sum::<usize>() >= KEYS as usize
    })
    .await;
    let asked: Vec<String> =
        proxy.seen().into_iter().map(|(line, _)| line).filter(|l| !l.starts_with("PUT ")).collect();
    assert!(asked.is_empty(), "nothing to check, so nothing but writes: {asked:?}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A group that lost its offsets (Kafka drops an empty group's offsets after
/// `offsets.retention.minutes`; here: the same process restarted under a new group) does not
/// make the process write everything again: its state directory's replay horizon says how far
/// it read each partition, so the records read again from the topic's start are checked at the
/// destination, and only what is new is replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_lost_its_offsets_does_not_write_everything_twice() {
    const KEYS: u32 = 30;
    s3repl_tests::watchdog::arm(
        "a_group_that_lost_its_offsets_does_not_write_everything_twice",
        300,
    );
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("forgotten", 3, 1).unwrap();
    let server = SeaweedFs::start("kafka-forgotten", &["kforgot"]).unwrap();
    server.enable_versioning("kforgot").unwrap();
    let dest =
        Destination::s3(DEST, &s3repl_tests::seaweed::options(&server.endpoint(), "kforgot"))
            .unwrap();
    let source = MemorySource::new();
    let dir = s3repl_tests::temp_dir("kafka-forgotten");
    let with_group = |group: &str| {
        let mut settings = group_settings(&mock.bootstrap_servers(), "forgotten");
        group.clone_into(&mut settings.group);
        settings
    };
    let writer = KafkaWriter::new(&with_group("writers")).unwrap();
    for k in 0..KEYS {
        put(&writer, &source, &format!("f/{k}"), 1);
    }
    let counts = || server.version_counts("kforgot").unwrap();
    let first = engine(KafkaLog::new(&with_group("before")).unwrap(), dir.path(), &source, &dest);
    wait_until("the first versions", 60, async || {
        counts().values().sum::<usize>() >= KEYS as usize
    })
    .await;
    first.shutdown().await.unwrap();
    // The same process, its group's offsets gone.
    let again = engine(KafkaLog::new(&with_group("after")).unwrap(), dir.path(), &source, &dest);
    for k in 0..5 {
        put(&writer, &source, &format!("f/new/{k}"), 1);
    }
    wait_until("the new versions", 60, async || {
        let c = counts();
        (0..5).all(|k| c.contains_key(&format!("f/new/{k}")))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = counts();
    for k in 0..KEYS {
        assert_eq!(counts.get(&format!("f/{k}")), Some(&1), "f/{k} once: {counts:?}");
    }
    assert!(again.halts().is_empty(), "{:?}", again.halts());
    again.shutdown().await.unwrap();
}

/// A group coordinator that keeps its connections but stops answering holds neither the
/// engine's shutdown nor the input's drop (librdkafka's synchronous commit waits for its
/// answer without a limit: the drop alone was still waiting after 400 s). Each commit waits at
/// most `commit_timeout`, the consumer's close at most the drain and commit timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_stops_answering_holds_neither_shutdown_nor_drop() {
    s3repl_tests::watchdog::arm(
        "a_coordinator_that_stops_answering_holds_neither_shutdown_nor_drop",
        300,
    );
    // Records come from broker 1, the group's coordinator is broker 2.
    let mock = rdkafka::mocking::MockCluster::new(2).unwrap();
    mock.create_topic("hung", 1, 1).unwrap();
    mock.partition_leader("hung", 0, Some(1)).unwrap();
    mock.coordinator(rdkafka::mocking::MockCoordinator::Group("hung-group".into()), 2).unwrap();
    let mut settings = group_settings(&mock.bootstrap_servers(), "hung");
    "hung-group".clone_into(&mut settings.group);
    settings.commit_timeout = Duration::from_secs(2);
    settings.drain_timeout = Duration::from_secs(2);
    let writer = KafkaWriter::new(&settings).unwrap();
    let source = MemorySource::new();
    let dest = Destination::in_memory(DEST);
    let dir = s3repl_tests::temp_dir("kafka-hung");
    let input = Arc::new(KafkaLog::new(&settings).unwrap());
    let engine = engine_on(input.clone(), dir.path(), &source, &dest);
    wait_until("the partition assigned", 30, async || input.assigned().len() == 1).await;
    let replicated = async |keys: std::ops::Range<u32>| {
        for k in keys {
            let path = object_store::path::Path::parse(format!("h/{k}")).unwrap();
            if dest.store().get(&path).await.is_err() {
                return false;
            }
        }
        true
    };
    for k in 0..5 {
        put(&writer, &source, &format!("h/{k}"), 1);
    }
    wait_until("the first records replicated", 30, async || replicated(0..5).await).await;
    wait_until("their offsets committed", 30, async || input.committed().unwrap() == [5]).await;
    // The coordinator stops answering; records still come from the partition's leader, and
    // the checkpoint after them commits into the silence.
    mock.broker_round_trip_time(2, Duration::from_hours(1)).unwrap();
    for k in 5..10 {
        put(&writer, &source, &format!("h/{k}"), 1);
    }
    wait_until("the later records replicated", 30, async || replicated(5..10).await).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shutdown = tokio::time::timeout(Duration::from_mins(1), engine.shutdown()).await;
    assert!(shutdown.is_ok(), "the engine's shutdown waited on the silent coordinator");
    assert_eq!(Arc::strong_count(&input), 1, "the engine let its input go");
    let (dropped, done) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        drop(input);
        let _ = dropped.send(());
    });
    assert!(
        done.recv_timeout(Duration::from_secs(30)).is_ok(),
        "dropping the input waited on the silent coordinator"
    );
}
