//! The committed-version log on a Kafka topic (feature `kafka`): [`KafkaWriter`], which a
//! storage server appends records to, and [`KafkaLog`], an input of the engine
//! ([`LogInput`]) that reads the topic as one member of a consumer group, so that several
//! engine processes share its partitions and take over those of a process that dies.
//!
//! Records are the engine's record schema, unchanged, keyed by `bucket/key` and sent to the
//! partition the segment log would use (`partition_for`), so per-key order holds within a
//! partition. Positions are Kafka offsets.
//!
//! **Reading.** One thread polls the group's consumer and routes each record to its
//! partition's bounded queue, which the engine's reader for that partition drains; a full
//! queue pauses that partition's fetching (backpressure), it is never a reason to stop polling
//! (the group would count the process dead).
//!
//! **Commits** go only to partitions this process owns, and only forward: the engine commits
//! the low watermark of finished work; a position below what the group committed when the
//! partition was assigned (work of an earlier ownership still finishing) is not sent.
//!
//! **Rebalances.** Before partitions are revoked the input stops handing out their records,
//! drops what it fetched but did not hand out, and waits (up to `drain_timeout`) until the
//! engine has committed everything it handed out; only then does it let go. A partition
//! assigned again resumes at the group's committed offset; the offsets between are another
//! member's work, which the engine counts finished (a skip). After a crash (or a drain that
//! timed out) the next owner replays from the committed offset, and the engine's replay check
//! (the `s3repl-source-seq` stamp on replicas) keeps it from writing a second replica version.
//! What does not follow a partition yet is the version map and the failed-operations queue
//! (local to each process): `docs/design/kafka-log.md`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::Error;
use crate::pipeline::input::{LogInput, PartitionReader};
use crate::record::{AppendRecord, VersionRecord};

/// Where the topic is and how to reach it.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic of committed-version records.
    pub topic: String,
    /// The consumer group the engine processes form.
    pub group: String,
    /// Further librdkafka settings (`session.timeout.ms`, security, …), applied last.
    pub extra: Vec<(String, String)>,
    /// How long a revocation waits for the engine to finish and commit what it was handed.
    pub drain_timeout: Duration,
    /// After taking over a partition its previous owner did not hand over cleanly (it died,
    /// or let go before its work was committed), the first this many records past the
    /// group's offset are checked at their destinations before being applied (the previous
    /// owner may have applied them). At least the engine's admission bound
    /// ([`crate::pipeline::Limits::queue`]) plus a read batch.
    pub takeover_check: u64,
}

impl KafkaSettings {
    /// Settings for `topic` on `brokers`, read by the group `group`.
    pub fn new(brokers: &str, topic: &str, group: &str) -> Self {
        KafkaSettings {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            extra: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            takeover_check: 20_000,
        }
    }

    /// A client configuration: the brokers, then `defaults`, then the user's `extra` (which
    /// may override them).
    fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

fn kafka_error(what: &str, e: &KafkaError) -> Error {
    let transient = !matches!(e, KafkaError::ClientConfig(..) | KafkaError::ClientCreation(..));
    Error::Input { transient, source: format!("Kafka: {what}: {e}").into() }
}

/// The topic's partition count, from the brokers' metadata.
fn partition_count<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<u32, Error> {
    let meta = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| kafka_error("reading the topic's metadata", &e))?;
    let n = meta.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    if n == 0 {
        return Err(Error::Input {
            transient: false,
            source: format!("Kafka: topic {topic:?} has no partitions (does it exist?)").into(),
        });
    }
    u32::try_from(n).map_err(|_| Error::Setup("the topic has too many partitions"))
}

/// Appends committed-version records to the topic, as [`crate::log::LogWriter`] does to the
/// segment log: an append returns once the brokers acknowledged it (`acks=all`, idempotent
/// producer: a retried send is never written twice).
pub struct KafkaWriter {
    producer: ThreadedProducer<Delivered>,
    topic: String,
    partitions: u32,
}

impl std::fmt::Debug for KafkaWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaWriter")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Where an acknowledged record landed, or why it was not.
type Ack = Result<(i32, i64), String>;

/// The producer's delivery reports, each sent back to the append waiting for it.
struct Delivered;

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = Box<std::sync::mpsc::SyncSender<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, to: Self::DeliveryOpaque) {
        let ack = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        let _ = to.send(ack);
    }
}

impl KafkaWriter {
    /// A writer to the topic `settings` names (which must exist).
    pub fn new(settings: &KafkaSettings) -> Result<Self, Error> {
        let config =
            settings.client(&[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "2")]);
        let producer: ThreadedProducer<Delivered> = config
            .create_with_context(Delivered)
            .map_err(|e| kafka_error("creating the producer", &e))?;
        let partitions = partition_count(producer.client(), &settings.topic)?;
        Ok(KafkaWriter { producer, topic: settings.topic.clone(), partitions })
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Sends one encoded record of `bucket`/`key`; the receiver gets its acknowledgement.
    fn send(
        &self,
        bucket: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<std::sync::mpsc::Receiver<Ack>, Error> {
        let partition = s3repl_io::log::partition_for(bucket, key, self.partitions);
        let message_key = format!("{bucket}/{key}");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut opaque = Box::new(tx);
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let record = BaseRecord::with_opaque_to(&self.topic, opaque)
                .partition(i32::try_from(partition).unwrap_or(0))
                .key(message_key.as_bytes())
                .payload(payload);
            match self.producer.send(record) {
                Ok(()) => return Ok(rx),
                // The local queue is full: wait for deliveries to make room.
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) if Instant::now() < deadline => {
                    opaque = r.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(kafka_error("sending a record", &e)),
            }
        }
    }

    /// Appends an encoded record; returns where it is once the brokers have it.
    pub fn append(
        &self,
        bucket: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<crate::log::Position, Error> {
        let ack = self.send(bucket, key, payload)?;
        wait(&ack)
    }

    /// Appends encoded records (bucket, key, record): sends them all, then waits for every
    /// acknowledgement; returns where each is.
    pub fn append_batch(
        &self,
        batch: &[(&str, &str, &[u8])],
    ) -> Result<Vec<crate::log::Position>, Error> {
        self.send_batch(batch)?.wait()
    }

    /// Sends encoded records without waiting: they are appended once [`Sent::wait`] returns
    /// (a writer keeps several batches in flight this way).
    pub fn send_batch(&self, batch: &[(&str, &str, &[u8])]) -> Result<Sent, Error> {
        let acks = batch
            .iter()
            .map(|(bucket, key, payload)| self.send(bucket, key, payload))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Sent { acks })
    }
}

/// Records sent by [`KafkaWriter::send_batch`], not yet known to be appended.
#[derive(Debug)]
pub struct Sent {
    acks: Vec<std::sync::mpsc::Receiver<Ack>>,
}

impl Sent {
    /// Waits until the brokers have every record; returns where each is.
    pub fn wait(self) -> Result<Vec<crate::log::Position>, Error> {
        self.acks.iter().map(wait).collect()
    }

    /// How many records were sent.
    pub fn len(&self) -> usize {
        self.acks.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }
}

/// Waits for one acknowledgement.
fn wait(ack: &std::sync::mpsc::Receiver<Ack>) -> Result<crate::log::Position, Error> {
    match ack.recv_timeout(Duration::from_mins(2)) {
        Ok(Ok((partition, offset))) => Ok(crate::log::Position {
            partition: u32::try_from(partition).unwrap_or(0),
            seq: u64::try_from(offset).unwrap_or(0),
        }),
        Ok(Err(e)) => Err(Error::Input { transient: true, source: format!("Kafka: {e}").into() }),
        Err(_) => Err(Error::Input {
            transient: true,
            source: "Kafka: no acknowledgement within 120 s".into(),
        }),
    }
}

impl AppendRecord for KafkaWriter {
    fn append_record(&self, record: &VersionRecord) -> Result<crate::log::Position, Error> {
        self.append(&record.bucket, &record.key, &record.to_bytes()?)
    }

    /// Sends them all, then waits for every acknowledgement.
    fn append_records(
        &self,
        records: &[VersionRecord],
    ) -> Result<Vec<crate::log::Position>, Error> {
        let acks = records
            .iter()
            .map(|r| self.send(&r.bucket, &r.key, &r.to_bytes()?))
            .collect::<Result<Vec<_>, Error>>()?;
        acks.iter().map(wait).collect()
    }
}

/// One partition, as this process sees it.
#[derive(Debug, Default)]
struct Part {
    /// Whether the group has assigned it to this process.
    assigned: bool,
    /// Whether it is being revoked: nothing more is handed out, but the engine's commits of
    /// what it was handed still go through.
    revoking: bool,
    /// Fetched records not yet handed to the engine: (offset, payload).
    queue: VecDeque<(u64, Vec<u8>)>,
    /// The payload bytes in `queue`.
    queued_bytes: usize,
    /// Whether its fetching is paused (the queue is full).
    paused: bool,
    /// The offset after the last record handed to the engine in this ownership.
    handed: Option<u64>,
    /// The highest position committed (by the group, or by this process) since assignment.
    committed: u64,
    /// What of the partition a previous owner may have applied (see
    /// [`KafkaSettings::takeover_check`]).
    check: Check,
}

/// What of a partition its previous owner may have applied, to be checked at the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Check {
    /// Nothing: it was never owned, or let go drained.
    #[default]
    Nothing,
    /// The first `takeover_check` records from the first one this process is handed.
    FromFirst,
    /// Every record below this position.
    Below(u64),
}

impl Part {
    /// Whether nothing past the committed offset can have been applied: everything handed
    /// out is committed, and so is the window a previous owner may have applied in.
    fn is_drained(&self) -> bool {
        let checked = match self.check {
            Check::Nothing => true,
            Check::FromFirst => false,
            Check::Below(b) => self.committed >= b,
        };
        checked && self.handed.is_none_or(|h| h <= self.committed)
    }
}

/// The commit metadata of a partition's first owner, committed where it starts before it hands
/// out anything: a partition without a committed offset was never owned.
const OWNED: &str = "s3repl:owned";

/// The commit metadata of an owner that let a partition go with all its work committed: the
/// next owner need not check anything.
const DRAINED: &str = "s3repl:drained";

/// What the poll thread, the rebalance callbacks, the readers and the commits share.
#[derive(Debug)]
struct Shared {
    parts: Mutex<Vec<Part>>,
    /// Signalled when a queue gains records, a partition is assigned or revoked, or a commit
    /// lands.
    changed: Condvar,
    stop: AtomicBool,
    topic: String,
    drain_timeout: Duration,
    takeover_check: u64,
    /// A partition's fetching pauses when its queue holds this many bytes, and resumes at half.
    queue_max: usize,
}

/// Adds `partition` at `offset` to `list` with the [`DRAINED`] mark (nothing to mark at 0:
/// nothing was handed out).
fn mark_drained(list: &mut TopicPartitionList, topic: &str, partition: usize, offset: u64) {
    let (Ok(p), Ok(o)) = (i32::try_from(partition), i64::try_from(offset)) else { return };
    if o == 0 {
        return;
    }
    let _ = add_marked(list, topic, p, o, DRAINED);
}

/// Adds `partition` at `offset` to `list` with the commit metadata `mark`.
fn add_marked(
    list: &mut TopicPartitionList,
    topic: &str,
    partition: i32,
    offset: i64,
    mark: &str,
) -> Option<()> {
    list.add_partition_offset(topic, partition, Offset::Offset(offset)).ok()?;
    list.find_partition(topic, partition)?.set_metadata(mark);
    Some(())
}

/// Where a partition the group never committed starts (its low watermark), added to `first`
/// with the [`OWNED`] mark; `None` when the brokers cannot say.
fn first_start(
    consumer: &BaseConsumer<Group>,
    topic: &str,
    partition: i32,
    first: &mut TopicPartitionList,
) -> Option<u64> {
    let (low, _) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).ok()?;
    add_marked(first, topic, partition, low, OWNED)?;
    u64::try_from(low).ok()
}

/// The group consumer's callbacks: revocations drain, assignments resume.
struct Group(Arc<Shared>);

impl ClientContext for Group {}

impl ConsumerContext for Group {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let shared = &self.0;
        let revoked: Vec<usize> = list
            .elements_for_topic(&shared.topic)
            .iter()
            .filter_map(|e| usize::try_from(e.partition()).ok())
            .collect();
        let mut parts = shared.parts.lock();
        for &p in &revoked {
            if let Some(part) = parts.get_mut(p) {
                // Nothing more goes to the engine; what it was not handed is the next owner's.
                part.assigned = false;
                part.revoking = true;
                part.queue.clear();
                part.queued_bytes = 0;
                part.paused = false;
            }
        }
        shared.changed.notify_all();
        // Wait until the engine finished and committed everything it was handed.
        let deadline = Instant::now() + shared.drain_timeout;
        loop {
            let pending: Vec<usize> = revoked
                .iter()
                .copied()
                .filter(|&p| {
                    parts.get(p).is_some_and(|part| part.handed.is_some_and(|h| h > part.committed))
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(partitions = ?pending, timeout_s = shared.drain_timeout.as_secs(), "Letting revoked partitions go before their work finished; the next owner replays it (checked at the destination).");
                break;
            }
            shared.changed.wait_for(&mut parts, Duration::from_millis(100));
        }
        // Those whose work is all committed are marked so, for the next owner.
        let mut drained = TopicPartitionList::new();
        for &p in &revoked {
            if let Some(part) = parts.get_mut(p) {
                if part.is_drained() {
                    mark_drained(&mut drained, &shared.topic, p, part.committed);
                }
                part.handed = None;
                part.revoking = false;
            }
        }
        drop(parts);
        if drained.count() > 0
            && let Err(e) = consumer.commit(&drained, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "Marking revoked partitions drained failed; their next owner checks its first records at the destination.");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else { return };
        let shared = &self.0;
        let assigned: Vec<i32> = list
            .elements_for_topic(&shared.topic)
            .iter()
            .map(rdkafka::topic_partition_list::TopicPartitionListElem::partition)
            .collect();
        // Where the group stands for each: commits below it would go backwards.
        let mut query = TopicPartitionList::new();
        for &p in &assigned {
            query.add_partition(&shared.topic, p);
        }
        let committed = consumer.committed_offsets(query, Duration::from_secs(10)).ok();
        // A partition the group never committed: no member ever owned it, if every owner
        // commits where it starts before it hands anything out (done here). Nothing can have
        // been applied, so nothing is checked; if that first commit fails, it is.
        let mut first = TopicPartitionList::new();
        let mut starts = Vec::new();
        for &p in &assigned {
            let entry = committed.as_ref().and_then(|c| c.find_partition(&shared.topic, p));
            let known = entry.as_ref().and_then(|e| match e.offset() {
                Offset::Offset(o) => u64::try_from(o).ok(),
                _ => None,
            });
            let drained = entry.as_ref().is_some_and(|e| e.metadata() == DRAINED);
            let start = if let Some(at) = known {
                (at, drained)
            } else if committed.is_some()
                && let Some(low) = first_start(consumer, &shared.topic, p, &mut first)
            {
                (low, true)
            } else {
                (0, false)
            };
            starts.push((p, start));
        }
        let first_ok = first.count() == 0 || consumer.commit(&first, CommitMode::Sync).is_ok();
        let mut parts = shared.parts.lock();
        for (p, (at, clean)) in starts {
            let Some(part) = usize::try_from(p).ok().and_then(|i| parts.get_mut(i)) else {
                continue;
            };
            let fresh = first.find_partition(&shared.topic, p).is_some();
            let clean = clean && (!fresh || first_ok);
            // Not clean: the first records this process is handed (wherever the group's
            // offset really is) are checked.
            *part = Part {
                assigned: true,
                committed: at,
                check: if clean { Check::Nothing } else { Check::FromFirst },
                ..Part::default()
            };
        }
        shared.changed.notify_all();
        tracing::info!(partitions = ?assigned, "Kafka partitions assigned to this process.");
    }
}

/// The topic as an input of the engine, read as a member of the consumer group.
pub struct KafkaLog {
    consumer: Arc<BaseConsumer<Group>>,
    shared: Arc<Shared>,
    partitions: u32,
    poller: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("topic", &self.shared.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Joins the group `settings` names and starts polling the topic (which must exist).
    pub fn new(settings: &KafkaSettings) -> Result<Self, Error> {
        let config = settings.client(&[
            ("group.id", &settings.group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ]);
        let probe: BaseConsumer =
            settings.client(&[]).create().map_err(|e| kafka_error("creating the consumer", &e))?;
        let partitions = partition_count(probe.client(), &settings.topic)?;
        drop(probe);
        let shared = Arc::new(Shared {
            parts: Mutex::new((0..partitions).map(|_| Part::default()).collect()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            topic: settings.topic.clone(),
            drain_timeout: settings.drain_timeout,
            takeover_check: settings.takeover_check,
            // Each pause and resume costs a fetch round trip: with 4,096 records the input
            // ran at half the rate it does with queues this long (bench --log kafka).
            queue_max: (QUEUE_BYTES / partitions.max(1) as usize).max(1 << 20),
        });
        let consumer: BaseConsumer<Group> = config
            .create_with_context(Group(shared.clone()))
            .map_err(|e| kafka_error("creating the consumer", &e))?;
        consumer
            .subscribe(&[&settings.topic])
            .map_err(|e| kafka_error("subscribing to the topic", &e))?;
        let consumer = Arc::new(consumer);
        let poller = {
            let (consumer, shared) = (consumer.clone(), shared.clone());
            std::thread::Builder::new()
                .name("s3repl-kafka".into())
                .spawn(move || poll(&consumer, &shared))
                .map_err(|e| Error::Input {
                    transient: false,
                    source: format!("starting the Kafka poll thread: {e}").into(),
                })?
        };
        Ok(KafkaLog { consumer, shared, partitions, poller: Mutex::new(Some(poller)) })
    }

    /// The partitions this process owns now.
    pub fn assigned(&self) -> Vec<u32> {
        let parts = self.shared.parts.lock();
        (0u32..).zip(parts.iter()).filter(|(_, p)| p.assigned).map(|(i, _)| i).collect()
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        // After a clean engine shutdown everything handed out is committed: tell the next
        // owners they need not check.
        let mut drained = TopicPartitionList::new();
        for (p, part) in self.shared.parts.lock().iter().enumerate() {
            if part.assigned && part.is_drained() {
                mark_drained(&mut drained, &self.shared.topic, p, part.committed);
            }
        }
        if drained.count() > 0 {
            let _ = self.consumer.commit(&drained, CommitMode::Sync);
        }
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        if let Some(t) = self.poller.lock().take() {
            let _ = t.join();
        }
        // Leaves the group at once (its partitions go to the others without waiting for the
        // session to time out).
        self.consumer.unsubscribe();
    }
}

/// The poll thread: routes records to their partitions' queues, pausing a partition whose
/// queue is full and resuming it once drained, until the input is dropped.
fn poll(consumer: &BaseConsumer<Group>, shared: &Shared) {
    let mut errors = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        let resume: Vec<i32> = {
            let mut parts = shared.parts.lock();
            (0i32..)
                .zip(parts.iter_mut())
                .filter(|(_, p)| p.paused && p.queued_bytes < shared.queue_max / 2)
                .map(|(i, p)| {
                    p.paused = false;
                    i
                })
                .collect()
        };
        if !resume.is_empty() {
            let mut list = TopicPartitionList::new();
            for p in resume {
                list.add_partition(&shared.topic, p);
            }
            let _ = consumer.resume(&list);
        }
        // One record waited for, then whatever else is already fetched (up to a batch): the
        // shared state is locked, and readers woken, once per batch rather than per record.
        let mut batch: Vec<(i32, u64, Vec<u8>)> = Vec::new();
        // While a partition is paused, come back soon to resume it once its reader drained.
        let any_paused = shared.parts.lock().iter().any(|p| p.paused);
        let mut timeout = Duration::from_millis(if any_paused { 2 } else { 100 });
        while batch.len() < POLL_BATCH {
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    if let Ok(offset) = u64::try_from(m.offset()) {
                        let payload = m.payload().unwrap_or_default().to_vec();
                        batch.push((m.partition(), offset, payload));
                    }
                }
                Some(Err(e)) => {
                    errors += 1;
                    if errors.is_power_of_two() {
                        tracing::warn!(error = %e, errors, "Kafka consumer error (the client retries).");
                    }
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        if batch.is_empty() {
            continue;
        }
        let mut pause = TopicPartitionList::new();
        let mut parts = shared.parts.lock();
        for (partition, offset, payload) in batch {
            let Some(part) = usize::try_from(partition).ok().and_then(|p| parts.get_mut(p)) else {
                continue;
            };
            if !part.assigned {
                continue;
            }
            part.queued_bytes += payload.len();
            part.queue.push_back((offset, payload));
            if part.queued_bytes >= shared.queue_max && !part.paused {
                part.paused = true;
                pause.add_partition(&shared.topic, partition);
            }
        }
        drop(parts);
        shared.changed.notify_all();
        if pause.count() > 0 {
            let _ = consumer.pause(&pause);
        }
    }
}

/// Bytes of fetched records the partitions' queues hold in all (each its share, at least 1
/// MiB) before a partition's fetching pauses.
const QUEUE_BYTES: usize = 64 << 20;

/// Records the poll thread takes from the consumer before handing them over.
const POLL_BATCH: usize = 1024;

/// The engine's reader of one partition: hands out what the poll thread queued, while this
/// process owns the partition.
struct Reader {
    shared: Arc<Shared>,
    partition: usize,
    at: u64,
}

impl PartitionReader for Reader {
    fn read(
        &mut self,
        max: usize,
        wait: Duration,
        each: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<usize, Error> {
        let mut parts = self.shared.parts.lock();
        let ready = |parts: &Vec<Part>, p: usize| {
            parts.get(p).is_some_and(|part| part.assigned && !part.queue.is_empty())
        };
        if !ready(&parts, self.partition) {
            self.shared.changed.wait_for(&mut parts, wait);
        }
        let Some(part) = parts.get_mut(self.partition) else { return Ok(0) };
        if !part.assigned {
            return Ok(0);
        }
        let take = part.queue.len().min(max);
        let records: Vec<(u64, Vec<u8>)> = part.queue.drain(..take).collect();
        part.queued_bytes -= records.iter().map(|(_, r)| r.len()).sum::<usize>();
        if let (Check::FromFirst, Some((first, _))) = (part.check, records.first()) {
            part.check = Check::Below(first.saturating_add(self.shared.takeover_check));
        }
        if let Some((last, _)) = records.last() {
            // Counted as handed out before the engine sees them: a revocation waits for them.
            part.handed = Some(last + 1);
        }
        drop(parts);
        // Records the engine finished in an earlier ownership come again after a rebalance
        // only if the group's commit was behind; they are handed out all the same (the replay
        // check recognises their replicas).
        for (offset, payload) in &records {
            each(*offset, payload);
            self.at = offset + 1;
        }
        Ok(records.len())
    }

    fn position(&self) -> u64 {
        self.at
    }

    fn taken_over_below(&self) -> Option<u64> {
        match self.shared.parts.lock().get(self.partition).map(|p| p.check) {
            Some(Check::Below(b)) => Some(b),
            _ => None,
        }
    }
}

impl LogInput for KafkaLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The group's committed offsets (0 where it has none: the topic's start).
    fn committed(&self) -> Result<Vec<u64>, Error> {
        let mut query = TopicPartitionList::new();
        for p in 0..self.partitions {
            query.add_partition(&self.shared.topic, i32::try_from(p).unwrap_or(0));
        }
        let got = self
            .consumer
            .committed_offsets(query, Duration::from_secs(10))
            .map_err(|e| kafka_error("reading the group's committed offsets", &e))?;
        Ok((0..self.partitions)
            .map(|p| {
                got.find_partition(&self.shared.topic, i32::try_from(p).unwrap_or(0))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => u64::try_from(o).ok(),
                        _ => None,
                    })
                    .unwrap_or(0)
            })
            .collect())
    }

    fn open(&self, partition: u32, from: u64) -> Result<Box<dyn PartitionReader>, Error> {
        Ok(Box::new(Reader {
            shared: self.shared.clone(),
            partition: partition as usize,
            at: from,
        }))
    }

    /// Commits, for the partitions this process owns, positions past what the group has.
    fn commit(&self, positions: &[u64]) -> Result<(), Error> {
        let mut list = TopicPartitionList::new();
        let mut advanced = Vec::new();
        {
            let parts = self.shared.parts.lock();
            for (p, (&pos, part)) in positions.iter().zip(parts.iter()).enumerate() {
                if (part.assigned || part.revoking) && pos > part.committed {
                    let offset = Offset::Offset(i64::try_from(pos).unwrap_or(i64::MAX));
                    let p = i32::try_from(p).unwrap_or(0);
                    list.add_partition_offset(&self.shared.topic, p, offset)
                        .map_err(|e| kafka_error("building a commit", &e))?;
                    advanced.push((p, pos));
                }
            }
        }
        if advanced.is_empty() {
            return Ok(());
        }
        match self.consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {}
            // The group is moving these partitions: the commit is refused, and retrying it
            // would not help. Nothing is lost: whoever reads them next starts at the last
            // commit that went through, without the drained mark, so it checks at the
            // destination what this process may have applied since.
            Err(KafkaError::ConsumerCommit(
                code @ (RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost),
            )) => {
                tracing::warn!(error = %code, "A commit refused during a rebalance; the partitions' next reader checks what came after the last commit.");
                return Ok(());
            }
            Err(e) => return Err(kafka_error("committing offsets", &e)),
        }
        let mut parts = self.shared.parts.lock();
        for (p, pos) in advanced {
            if let Some(part) = usize::try_from(p).ok().and_then(|i| parts.get_mut(i)) {
                part.committed = part.committed.max(pos);
            }
        }
        drop(parts);
        self.shared.changed.notify_all();
        Ok(())
    }
}
