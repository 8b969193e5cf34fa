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
//! A reader hands out no record past what the group's last commit makes the next owner check
//! (`Part::limit`), so the check always covers what a dead owner may have applied.
//!
//! **Failed operations follow their partition**: a partition's commits stop at its oldest
//! queued failed operation, with the commit's metadata ([`Mark`]) saying how far past it work
//! was applied; the next owner reads the partition again from that operation, redoes it, and
//! checks the rest at the destination. The version map stays local to each process; a new
//! owner's misses are answered by the destination's own stamps: `docs/design/kafka-log.md`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::Error;
use crate::pipeline::input::{Lease, LogInput, PartitionReader};
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
    /// How long a commit of offsets waits for the brokers' answer before it counts as failed
    /// (transient: the engine's next checkpoint commits again). librdkafka's own synchronous
    /// commit waits without a limit, and a broker that keeps its connections but stops
    /// answering would hold the checkpoint, a rebalance and the shutdown with it.
    pub commit_timeout: Duration,
    /// After taking over a partition its previous owner did not hand over cleanly (it died,
    /// or let go before its work was committed), the first this many records past the
    /// group's offset are checked at their destinations before being applied (the previous
    /// owner may have applied them). At least the engine's admission bound
    /// ([`crate::pipeline::Limits::queue`]) plus a read batch. It is also how far past the
    /// group's last commit this process hands records out (so the check covers whatever it
    /// applies should it die): smaller values cost throughput when commits are far apart.
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
            commit_timeout: Duration::from_secs(30),
            takeover_check: 20_000,
        }
    }

    /// Whether the group uses the consumer rebalance protocol (KIP-848: the brokers assign
    /// partitions and time members out; `group.protocol = "consumer"` among the
    /// [`KafkaSettings::extra`] settings) rather than the classic one.
    fn consumer_protocol(&self) -> bool {
        self.extra.iter().any(|(k, v)| k == "group.protocol" && v.eq_ignore_ascii_case("consumer"))
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
    /// For [`KafkaWriter::read_partition`]'s consumer.
    settings: KafkaSettings,
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
        Ok(KafkaWriter {
            producer,
            topic: settings.topic.clone(),
            partitions,
            settings: settings.clone(),
        })
    }

    /// Reads `partition`'s records from offset `from` (or the partition's first, if that was
    /// deleted) up to its end as the brokers report it once every record this writer sent is
    /// delivered or failed, handing each (offset, payload) to `each`; returns that end (the next
    /// offset). For a writer's own bookkeeping after a crash or a failure between an append and
    /// what it records of it (the webhook's marks): the topic's tail says what was appended.
    /// Outside any group (nothing is committed).
    pub fn read_partition(
        &self,
        partition: u32,
        from: u64,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<u64, Error> {
        // A send still in flight could land after the end read below.
        self.producer
            .flush(Duration::from_mins(1))
            .map_err(|e| kafka_error("delivering what was sent", &e))?;
        let p = i32::try_from(partition).map_err(|_| Error::Setup("partition out of range"))?;
        let consumer: BaseConsumer = self
            .settings
            .client(&[
                ("group.id", &format!("{}-tail", self.settings.group)),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "true"),
            ])
            .create()
            .map_err(|e| kafka_error("creating a reader", &e))?;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, p, Duration::from_secs(30))
            .map_err(|e| kafka_error("reading a partition's offsets", &e))?;
        let (low, end) = (u64::try_from(low).unwrap_or(0), u64::try_from(high).unwrap_or(0));
        let start = from.max(low);
        if start >= end {
            return Ok(end.max(from));
        }
        if end - start >= 100_000 {
            tracing::info!(
                topic = %self.topic,
                partition,
                records = end - start,
                "Reading a long stretch of a partition (a writer's bookkeeping after a crash, or kept for the first time)."
            );
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &self.topic,
            p,
            Offset::Offset(i64::try_from(start).unwrap_or(i64::MAX)),
        )
        .map_err(|e| kafka_error("assigning a partition", &e))?;
        consumer.assign(&list).map_err(|e| kafka_error("assigning a partition", &e))?;
        // Bounded by progress (a minute without a record), not by length: a long tail is read
        // whole.
        let mut last_progress = Instant::now();
        loop {
            let error = match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let Ok(offset) = u64::try_from(m.offset()) else { continue };
                    if offset >= end {
                        break;
                    }
                    each(offset, m.payload().unwrap_or_default());
                    if offset + 1 >= end {
                        break;
                    }
                    continue;
                }
                Some(Err(KafkaError::PartitionEOF(at))) if at == p => break,
                Some(Err(e)) => kafka_error("reading a partition", &e),
                None => Error::Input {
                    transient: true,
                    source: format!(
                        "Kafka: no record of partition {partition} for a minute (its end is offset {end})"
                    )
                    .into(),
                },
            };
            if last_progress.elapsed() > Duration::from_mins(1) {
                return Err(error);
            }
        }
        Ok(end)
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
    /// The group's committed offset (by the group, or by this process since assignment).
    committed: u64,
    /// The engine's finished position as last committed (as the offset, or, while a failed
    /// operation holds the offset back, in the commit's [`Mark`]).
    done: u64,
    /// No record at or past this offset is handed out: what the group's last commit makes the
    /// partition's next owner check (or skip) covers everything below it, so nothing this
    /// process applies can be applied again should it die. Raised by every commit.
    limit: u64,
    /// A commit to make at `committed` before anything is handed out: the group's commit
    /// carries a previous owner's drained mark (which would tell the next owner nothing past
    /// it was applied), or none yet (a partition never owned, whose first owner marks it
    /// [`OWNED`]).
    remark: Option<Remark>,
    /// Work of the partition under way outside the readers (retries of failed operations):
    /// it is not let go while any is.
    leases: usize,
    /// The offset after the last record this process handed out in any ownership: a group
    /// that has no offset for a partition read that far lost its state.
    seen: u64,
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
    /// Whether nothing of the partition is under way here: everything handed out is finished
    /// and committed, and no retry of it runs (what a revocation waits for).
    fn is_settled(&self) -> bool {
        self.handed.is_none_or(|h| h <= self.done) && self.leases == 0
    }

    /// Whether the next owner can be told exactly what to check: the partition is settled,
    /// and the window a previous owner may have applied in is known.
    fn is_drained(&self) -> bool {
        self.check != Check::FromFirst && self.is_settled()
    }

    /// Whether a mark is to be committed now (see [`Part::remark`]).
    fn wants_remark(&self) -> bool {
        self.assigned
            && self.remark.as_ref().is_some_and(|r| !r.when_queued || !self.queue.is_empty())
    }

    /// The end of what may have been applied: this process's finished work, and the window
    /// of a previous owner.
    fn applied_below(&self) -> u64 {
        match self.check {
            Check::Below(b) => self.done.max(b),
            _ => self.done,
        }
    }
}

/// The partitions assigned to this process.
fn owned(parts: &[Part]) -> Vec<u32> {
    (0u32..).zip(parts).filter(|(_, p)| p.assigned).map(|(i, _)| i).collect()
}

/// The commit metadata of a partition's first owner, committed where it starts before it hands
/// out anything: a partition without a committed offset was never owned.
const OWNED: &str = "s3repl:owned";

/// A commit's metadata, for the partition's next owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    /// The owner let the partition go with everything it handed out finished and committed
    /// (`s3repl:drained`): the next owner checks only `check_below`.
    drained: bool,
    /// Records from the committed offset up to here may have been applied
    /// (`check-below=N`): a failed operation held the offset back, or a previous owner's
    /// window was still open. Not drained: the next owner checks `takeover_check` more.
    check_below: Option<u64>,
}

impl Mark {
    fn parse(metadata: &str) -> Mark {
        let mut mark = Mark::default();
        let Some(rest) = metadata.strip_prefix("s3repl:") else { return mark };
        for part in rest.split(';') {
            if part == "drained" {
                mark.drained = true;
            } else if let Some(n) = part.strip_prefix("check-below=") {
                mark.check_below = n.parse().ok();
            }
        }
        mark
    }

    fn render(self) -> String {
        match (self.drained, self.check_below) {
            (true, None) => "s3repl:drained".to_owned(),
            (true, Some(b)) => format!("s3repl:drained;check-below={b}"),
            (false, Some(b)) => format!("s3repl:check-below={b}"),
            (false, None) => String::new(),
        }
    }

    /// What the next owner checks, from the committed offset `at`.
    fn check(self, takeover_check: u64) -> Check {
        match (self.drained, self.check_below) {
            (true, None) => Check::Nothing,
            (true, Some(b)) => Check::Below(b),
            (false, Some(b)) => Check::Below(b.saturating_add(takeover_check)),
            (false, None) => Check::FromFirst,
        }
    }

    /// The offset below which the next owner checks (or skips) everything, committed at `at`.
    fn covered(self, at: u64, takeover_check: u64) -> u64 {
        match self.check(takeover_check) {
            Check::Nothing => at,
            Check::Below(b) => b.max(at),
            // The first record the next owner gets is at or past `at`.
            Check::FromFirst => at.saturating_add(takeover_check),
        }
    }
}

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
    /// Runs every commit of offsets, each waited for at most `commit_timeout`; set once the
    /// consumer exists.
    committer: std::sync::OnceLock<Committer>,
}

impl Shared {
    /// Commits `list` (synchronously, waiting at most the commit timeout); see [`Committer`].
    fn commit(&self, list: &TopicPartitionList) -> KafkaResult<()> {
        match self.committer.get() {
            Some(c) => c.commit(list),
            None => Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::State)),
        }
    }
}

/// Commits waiting for the [`Committer`]'s thread at most; more are refused as timed out.
const COMMITS_QUEUED: usize = 16;

/// A commit handed to the [`Committer`]'s thread, with where its result goes.
type CommitRequest = (TopicPartitionList, std::sync::mpsc::SyncSender<KafkaResult<()>>);

/// Runs the consumer's commits, one at a time in the order asked, on a thread of its own, and
/// lets each caller wait at most `timeout` for its own. librdkafka's synchronous commit waits
/// for the brokers' answer without a limit: with a broker that kept its connection and
/// stopped answering, dropping a `KafkaLog` (which commits its drained marks) was still
/// waiting after 400 s. A commit that timed out still goes through if the brokers answer;
/// until it returns, later commits are refused at once rather than queued behind it (the
/// engine's checkpoint commits again later; a shutdown gives up after its retries).
struct Committer {
    requests: std::sync::mpsc::SyncSender<CommitRequest>,
    state: Arc<Mutex<CommitState>>,
    timeout: Duration,
}

/// What the [`Committer`]'s callers know of its thread.
#[derive(Debug, Default)]
struct CommitState {
    /// A commit is waiting for the brokers.
    in_flight: bool,
    /// A caller stopped waiting for the commit in flight.
    abandoned: bool,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the thread committing through `consumer` (held weakly: the thread does not keep
    /// the consumer alive, and ends when the committer is dropped).
    fn start(
        consumer: std::sync::Weak<BaseConsumer<Group>>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        // Commits queue only behind a slow one (after a timeout they are refused at once).
        let (requests, queue) = std::sync::mpsc::sync_channel::<CommitRequest>(COMMITS_QUEUED);
        let state = Arc::new(Mutex::new(CommitState::default()));
        let thread_state = state.clone();
        std::thread::Builder::new()
            .name("s3repl-kafka-commit".into())
            .spawn(move || {
                for (list, reply) in queue {
                    thread_state.lock().in_flight = true;
                    let result = match consumer.upgrade() {
                        Some(c) => c.commit(&list, CommitMode::Sync),
                        None => Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::State)),
                    };
                    // The answer first: a caller that timed out meanwhile finds it there and
                    // does not leave the committer marked stuck.
                    let _ = reply.send(result);
                    *thread_state.lock() = CommitState::default();
                }
            })
            .map_err(|e| Error::Input {
                transient: false,
                source: format!("starting the Kafka commit thread: {e}").into(),
            })?;
        Ok(Committer { requests, state, timeout })
    }

    /// Commits `list`, waiting at most the timeout (`OperationTimedOut` after it, or at once
    /// while an earlier commit that timed out is still waiting for the brokers).
    fn commit(&self, list: &TopicPartitionList) -> KafkaResult<()> {
        let timed_out = Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::OperationTimedOut));
        if self.state.lock().abandoned {
            return timed_out;
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        match self.requests.try_send((list.clone(), reply)) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => return timed_out,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::State));
            }
        }
        match answer.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::State))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let mut state = self.state.lock();
                // Answered just now (the thread answers before it clears its state).
                if let Ok(result) = answer.try_recv() {
                    return result;
                }
                if state.in_flight && !state.abandoned {
                    state.abandoned = true;
                    drop(state);
                    tracing::warn!(
                        timeout_s = self.timeout.as_secs_f64(),
                        "A Kafka commit got no answer from the brokers in time; commits are refused until it returns (the engine commits again later)."
                    );
                }
                timed_out
            }
        }
    }
}

/// Adds a drained partition to `list` with its [`Mark`], for the next owner. Also where nothing
/// was handed out: an [`OWNED`] mark committed for records queued but not yet handed out
/// would otherwise stay, and the next owner would check its first records at the destination
/// for nothing (three requests a record where one does: `scripts/scale-out.sh` ran three
/// processes at the rate of one).
fn mark_drained(list: &mut TopicPartitionList, topic: &str, partition: usize, part: &Part) {
    let below = part.applied_below();
    let mark = Mark { drained: true, check_below: (below > part.committed).then_some(below) };
    let (Ok(p), Ok(o)) = (i32::try_from(partition), i64::try_from(part.committed)) else {
        return;
    };
    let _ = add_marked(list, topic, p, o, &mark.render());
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

/// Where a partition the group never committed starts (its low watermark); `None` when the
/// brokers cannot say.
fn first_start(consumer: &BaseConsumer<Group>, topic: &str, partition: i32) -> Option<u64> {
    let (low, _) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).ok()?;
    u64::try_from(low).ok()
}

/// A mark an owner commits before it hands out anything (see [`Part::remark`]).
#[derive(Debug)]
struct Remark {
    /// The commit's metadata.
    mark: String,
    /// The [`Part::limit`] it allows.
    limit: u64,
    /// Whether it waits until the partition has a record queued: what the group's commit
    /// says now (drained, or never owned) is true for as long as nothing is handed out, so a
    /// partition let go before any work needs no commit of its own to be taken over without
    /// checks — the commit at revocation can be refused (librdkafka's mock coordinator
    /// refuses commits while a member rejoins), a process can die.
    when_queued: bool,
}

/// Commits the pending marks of assigned partitions (see [`Part::remark`]); each that lands
/// lets its reader hand out records. One that fails is tried again by the poll thread; returns
/// whether it failed.
fn remark(shared: &Shared) -> bool {
    let mut list = TopicPartitionList::new();
    {
        let parts = shared.parts.lock();
        for (p, part) in parts.iter().enumerate() {
            if let (true, Some(remark), Ok(p), Ok(at)) =
                (part.wants_remark(), &part.remark, i32::try_from(p), i64::try_from(part.committed))
            {
                let _ = add_marked(&mut list, &shared.topic, p, at, &remark.mark);
            }
        }
    }
    if list.count() == 0 {
        return false;
    }
    if let Err(e) = shared.commit(&list) {
        tracing::warn!(error = %e, "Marking newly assigned partitions failed; their records wait until it succeeds.");
        return true;
    }
    let mut parts = shared.parts.lock();
    for e in list.elements_for_topic(&shared.topic) {
        if let Some(part) = usize::try_from(e.partition()).ok().and_then(|p| parts.get_mut(p))
            && let Some(remark) = part.remark.take()
        {
            part.limit = part.limit.max(remark.limit);
        }
    }
    drop(parts);
    shared.changed.notify_all();
    false
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
        if consumer.assignment_lost() {
            // Not handed over but lost: this member's session ended, or the brokers no longer
            // know the group (restarted empty). The partitions may be another member's by now,
            // and offsets this process read may not even name the same records any more (a
            // topic recreated): committing them could skip records of the new topic. Let go
            // without a commit; the next owner finds no drained mark and checks at the
            // destination what this process may have applied.
            for &p in &revoked {
                if let Some(part) = parts.get_mut(p) {
                    part.handed = None;
                    part.revoking = false;
                }
            }
            drop(parts);
            tracing::warn!(partitions = ?revoked, "Kafka partitions lost (this member's session ended, or the brokers no longer know the group): let go without committing; their next owner checks at the destination what this process may have applied.");
            return;
        }
        // Wait until the engine finished and committed everything it was handed.
        let deadline = Instant::now() + shared.drain_timeout;
        loop {
            let pending: Vec<usize> = revoked
                .iter()
                .copied()
                .filter(|&p| parts.get(p).is_some_and(|part| !part.is_settled()))
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
                    mark_drained(&mut drained, &shared.topic, p, part);
                }
                part.handed = None;
                part.revoking = false;
            }
        }
        let owned = owned(&parts);
        drop(parts);
        // Not while the input is dropped: it committed the drained marks before closing the
        // consumer, and the close may run on the committer's own thread.
        if drained.count() > 0
            && !shared.stop.load(Ordering::Acquire)
            && let Err(e) = shared.commit(&drained)
        {
            tracing::warn!(error = %e, "Marking revoked partitions drained failed; their next owner checks its first records at the destination.");
        }
        if !revoked.is_empty() {
            tracing::info!(partitions = ?owned, revoked = ?revoked, "Kafka partitions revoked from this process.");
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
        // commits where it starts before it hands anything out (`remark`). Nothing can have
        // been applied, so nothing is checked. Such a mark, and one replacing a drained mark,
        // waits until there is a record to hand out (`Remark::when_queued`).
        let t = shared.takeover_check;
        let mut parts = shared.parts.lock();
        for &p in &assigned {
            let Some(part) = usize::try_from(p).ok().and_then(|i| parts.get_mut(i)) else {
                continue;
            };
            let entry = committed.as_ref().and_then(|c| c.find_partition(&shared.topic, p));
            let known = entry.as_ref().and_then(|e| match e.offset() {
                Offset::Offset(o) => u64::try_from(o).ok(),
                _ => None,
            });
            let (at, check, limit, remark) = if let Some(at) = known {
                let mark =
                    Mark::parse(entry.as_ref().and_then(|e| e.metadata().into()).unwrap_or(""));
                let check = mark.check(t);
                // A drained mark says nothing past it was applied: until it is replaced, only
                // what it covers is handed out.
                let remark = mark.drained.then(|| {
                    let ours = Mark {
                        drained: false,
                        check_below: match check {
                            Check::Below(b) => Some(b),
                            _ => None,
                        },
                    };
                    Remark { mark: ours.render(), limit: ours.covered(at, t), when_queued: true }
                });
                (at, check, mark.covered(at, t), remark)
            } else if committed.is_some()
                && let Some(low) = first_start(consumer, &shared.topic, p)
            {
                if part.seen > low {
                    // Not a partition nobody owned: the brokers lost the group's offsets, or
                    // the topic itself (a memory-only broker restarted, a topic recreated).
                    // Read again from the start, checking every record up to past what this
                    // process read at the destination (a topic reproduced in the same order
                    // replays without a second replica version; the stamps name offsets, so
                    // a record that differs from what the old topic held at its offset
                    // cannot be told apart).
                    tracing::error!(
                        partition = p,
                        read_up_to = part.seen,
                        restart_at = low,
                        "The Kafka group has no committed offset for a partition this process read: the brokers lost the topic or the group's offsets. Reading it again from the start, each record checked at the destination."
                    );
                    let below = part.seen;
                    let mark = Mark { drained: false, check_below: Some(below) };
                    (
                        low,
                        Check::Below(below.saturating_add(t)),
                        low,
                        // The group's state says nothing of what this process read: the
                        // mark goes in at once, should this process die before any work.
                        Some(Remark {
                            mark: mark.render(),
                            limit: mark.covered(low, t),
                            when_queued: false,
                        }),
                    )
                } else {
                    let owned = Remark {
                        mark: OWNED.to_owned(),
                        limit: low.saturating_add(t),
                        when_queued: true,
                    };
                    (low, Check::Nothing, low, Some(owned))
                }
            } else {
                // The group's offsets are unknown: wherever the consumer starts, the first
                // records are checked; what the group's commit covers is unknown too, so
                // nothing bounds what is handed out (as before this process's first commit
                // on any partition whose group commit could not be read).
                (0, Check::FromFirst, u64::MAX, None)
            };
            *part = Part {
                assigned: true,
                committed: at,
                done: at,
                limit,
                remark,
                check,
                // Retries of an earlier ownership still running (a drain that timed out).
                leases: part.leases,
                seen: part.seen,
                ..Part::default()
            };
        }
        // Every partition this process owns now (with the cooperative protocol an assignment
        // only adds to what it had).
        let owned = owned(&parts);
        drop(parts);
        // One that fails is tried again by the poll thread.
        remark(shared);
        shared.changed.notify_all();
        tracing::info!(partitions = ?owned, added = ?assigned, "Kafka partitions assigned to this process.");
    }
}

/// The topic as an input of the engine, read as a member of the consumer group.
pub struct KafkaLog {
    /// `None` only once dropping closes it.
    consumer: Option<Arc<BaseConsumer<Group>>>,
    shared: Arc<Shared>,
    partitions: u32,
    poller: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// How long dropping waits for the consumer to close (its last revocation, leaving the
    /// group): the drain timeout and a commit's.
    close_timeout: Duration,
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
        let mut defaults = vec![
            ("group.id", settings.group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ];
        // The classic protocol's members assign partitions among themselves: incremental
        // rebalances, so a member joining or dying moves only the partitions that change
        // hands and the others keep replicating instead of draining and starting over (every
        // member of a group must use the same strategy). With the consumer protocol
        // (KIP-848, `group.protocol = "consumer"`) the brokers assign, always incrementally,
        // and librdkafka refuses a client-side strategy.
        if !settings.consumer_protocol() {
            defaults.push(("partition.assignment.strategy", "cooperative-sticky"));
        }
        let config = settings.client(&defaults);
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
            committer: std::sync::OnceLock::new(),
        });
        let consumer: BaseConsumer<Group> = config
            .create_with_context(Group(shared.clone()))
            .map_err(|e| kafka_error("creating the consumer", &e))?;
        let consumer = Arc::new(consumer);
        let _ = shared
            .committer
            .set(Committer::start(Arc::downgrade(&consumer), settings.commit_timeout)?);
        consumer
            .subscribe(&[&settings.topic])
            .map_err(|e| kafka_error("subscribing to the topic", &e))?;
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
        Ok(KafkaLog {
            consumer: Some(consumer),
            shared,
            partitions,
            poller: Mutex::new(Some(poller)),
            close_timeout: settings.drain_timeout.saturating_add(settings.commit_timeout),
        })
    }

    /// The partitions this process owns now.
    pub fn assigned(&self) -> Vec<u32> {
        owned(&self.shared.parts.lock())
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        // After a clean engine shutdown everything handed out is committed: tell the next
        // owners they need not check.
        let mut drained = TopicPartitionList::new();
        for (p, part) in self.shared.parts.lock().iter().enumerate() {
            if part.assigned && part.is_drained() {
                mark_drained(&mut drained, &self.shared.topic, p, part);
            }
        }
        if drained.count() > 0
            && let Err(e) = self.shared.commit(&drained)
        {
            tracing::warn!(error = %e, "Marking this process's partitions drained failed; their next owners check their first records at the destination.");
        }
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        if let Some(t) = self.poller.lock().take() {
            let _ = t.join();
        }
        let Some(consumer) = self.consumer.take() else { return };
        // Closing the consumer (rust-rdkafka's drop) polls until librdkafka says it is closed,
        // without a limit; brokers that stopped answering would hold the caller (a process
        // shutting down) with it. It runs on a thread of its own, waited for a bounded time.
        let (closed, close_done) = std::sync::mpsc::sync_channel::<()>(1);
        let closing =
            std::thread::Builder::new().name("s3repl-kafka-close".into()).spawn(move || {
                // Leaves the group at once (its partitions go to the others without waiting
                // for the session to time out).
                consumer.unsubscribe();
                drop(consumer);
                let _ = closed.send(());
            });
        if closing.is_ok() && close_done.recv_timeout(self.close_timeout).is_err() {
            tracing::error!(
                timeout_s = self.close_timeout.as_secs_f64(),
                "The Kafka consumer did not close in time (the brokers do not answer); going on without it. The group hands its partitions to other members once its session times out."
            );
        }
    }
}

/// The poll thread: routes records to their partitions' queues, pausing a partition whose
/// queue is full and resuming it once drained, until the input is dropped.
fn poll(consumer: &BaseConsumer<Group>, shared: &Shared) {
    let mut errors = 0u64;
    // After a failed marking commit, the next is tried no sooner than a second later.
    let mut remark_at = Instant::now();
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
        let (any_paused, unmarked) = {
            let parts = shared.parts.lock();
            (parts.iter().any(|p| p.paused), parts.iter().any(Part::wants_remark))
        };
        if unmarked && Instant::now() >= remark_at && remark(shared) {
            remark_at = Instant::now() + Duration::from_secs(1);
        }
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

/// A hold on a partition (see [`LogInput::lease`]): a revocation waits until it is dropped.
struct PartLease {
    shared: Arc<Shared>,
    partition: usize,
}

impl std::fmt::Debug for PartLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartLease").field("partition", &self.partition).finish_non_exhaustive()
    }
}

impl Drop for PartLease {
    fn drop(&mut self) {
        if let Some(part) = self.shared.parts.lock().get_mut(self.partition) {
            part.leases = part.leases.saturating_sub(1);
        }
        self.shared.changed.notify_all();
    }
}

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
            parts.get(p).is_some_and(|part| {
                part.assigned && part.queue.front().is_some_and(|(o, _)| *o < part.limit)
            })
        };
        if !ready(&parts, self.partition) {
            self.shared.changed.wait_for(&mut parts, wait);
        }
        let Some(part) = parts.get_mut(self.partition) else { return Ok(0) };
        if !part.assigned {
            return Ok(0);
        }
        // Within one ownership the consumer's offsets only grow, from the group's commit on,
        // unless it was reset: the brokers answered that its position is out of range (they
        // lost the topic or its records, and `auto.offset.reset` took it back to the start).
        // What comes again may have been applied already: check it at the destination, up to
        // past what was read.
        let floor = part.handed.unwrap_or(0).max(part.committed);
        if let Some(&(first, _)) = part.queue.front()
            && first < floor
        {
            let check_below = part.seen.max(floor).saturating_add(self.shared.takeover_check);
            if !matches!(part.check, Check::Below(b) if b >= check_below) {
                tracing::error!(
                    partition = self.partition,
                    read_up_to = floor,
                    restart_at = first,
                    "The Kafka consumer went back to an earlier offset of a partition this process read (an offset reset: the brokers lost the topic or its records). Records up to past what was read are checked at the destination."
                );
                part.check = Check::Below(check_below);
            }
        }
        // Only what the group's last commit makes a successor check (see `Part::limit`).
        let below = part.queue.partition_point(|(o, _)| *o < part.limit);
        let take = below.min(max);
        let records: Vec<(u64, Vec<u8>)> = part.queue.drain(..take).collect();
        part.queued_bytes -= records.iter().map(|(_, r)| r.len()).sum::<usize>();
        if let (Check::FromFirst, Some((first, _))) = (part.check, records.first()) {
            part.check = Check::Below(first.saturating_add(self.shared.takeover_check));
        }
        if let Some((last, _)) = records.last() {
            // Counted as handed out before the engine sees them: a revocation waits for them
            // (and for what was handed before a reset took the consumer back).
            part.handed = Some(part.handed.map_or(last + 1, |h| h.max(last + 1)));
            part.seen = part.seen.max(last + 1);
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
        let consumer = self.consumer.as_ref().ok_or(Error::ShutDown)?;
        let got = consumer
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

    fn lease(&self, partition: u32) -> Option<Lease> {
        let mut parts = self.shared.parts.lock();
        let part = parts.get_mut(partition as usize)?;
        if !part.assigned {
            return None;
        }
        part.leases += 1;
        Some(Box::new(PartLease { shared: self.shared.clone(), partition: partition as usize }))
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
        self.commit_holding(positions, &[])
    }

    /// Commits, for the partitions this process owns, positions past what the group has, each
    /// no further than its oldest failed operation; where that holds the offset back, the
    /// commit's metadata (`s3repl:check-below=N`) says up to where the next owner checks.
    fn commit_holding(&self, positions: &[u64], failed: &[Option<u64>]) -> Result<(), Error> {
        let t = self.shared.takeover_check;
        let mut list = TopicPartitionList::new();
        // (partition, offset, finished position, what the commit covers)
        let mut advanced = Vec::new();
        {
            let parts = self.shared.parts.lock();
            for (p, (&pos, part)) in positions.iter().zip(parts.iter()).enumerate() {
                if !(part.assigned || part.revoking) || part.remark.is_some() {
                    continue;
                }
                let held = failed.get(p).copied().flatten().filter(|&f| f < pos);
                // Never backwards (an operation of an earlier ownership, not yet dropped).
                let offset = held.unwrap_or(pos).max(part.committed);
                let below = part.applied_below().max(pos);
                let mark = Mark { drained: false, check_below: (below > offset).then_some(below) };
                if offset <= part.committed && pos <= part.done {
                    continue;
                }
                let (Ok(i), Ok(o)) = (i32::try_from(p), i64::try_from(offset)) else { continue };
                if add_marked(&mut list, &self.shared.topic, i, o, &mark.render()).is_none() {
                    continue;
                }
                advanced.push((i, offset, pos, mark.covered(offset, t)));
            }
        }
        if advanced.is_empty() {
            return Ok(());
        }
        match self.shared.commit(&list) {
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
        for (p, offset, pos, covered) in advanced {
            if let Some(part) = usize::try_from(p).ok().and_then(|i| parts.get_mut(i)) {
                part.committed = part.committed.max(offset);
                part.done = part.done.max(pos);
                part.limit = part.limit.max(covered);
            }
        }
        drop(parts);
        self.shared.changed.notify_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Check, Mark, Part, Remark};

    const T: u64 = 100;

    #[test]
    fn marks_round_trip_and_say_what_the_next_owner_checks() {
        for drained in [false, true] {
            for check_below in [None, Some(0), Some(7), Some(u64::MAX)] {
                let m = Mark { drained, check_below };
                assert_eq!(Mark::parse(&m.render()), m, "{m:?} as {:?}", m.render());
            }
        }
        // A group's commit without our metadata (or another tool's): not drained, nothing
        // known past the offset.
        for foreign in ["", "s3repl:owned", "hello", "s3repl:check-below=x", "s3repl:"] {
            assert_eq!(Mark::parse(foreign), Mark::default(), "{foreign:?}");
        }
        let m = |drained, check_below| Mark { drained, check_below };
        assert_eq!(m(true, None).check(T), Check::Nothing);
        assert_eq!(m(true, Some(50)).check(T), Check::Below(50));
        assert_eq!(m(false, Some(50)).check(T), Check::Below(150));
        assert_eq!(m(false, None).check(T), Check::FromFirst);
        // What a commit at offset 10 covers: nothing past it when drained; what the next
        // owner checks otherwise.
        assert_eq!(m(true, None).covered(10, T), 10);
        assert_eq!(m(true, Some(50)).covered(10, T), 50);
        assert_eq!(m(false, Some(50)).covered(10, T), 150);
        assert_eq!(m(false, None).covered(10, T), 110);
    }

    #[test]
    fn a_partition_is_drained_only_with_its_work_committed_and_no_retry_running() {
        let part =
            |handed, done, leases, check| Part { handed, done, leases, check, ..Part::default() };
        assert!(part(None, 0, 0, Check::Nothing).is_drained());
        assert!(part(Some(10), 10, 0, Check::Below(40)).is_drained());
        assert!(!part(Some(11), 10, 0, Check::Nothing).is_drained(), "handed, not finished");
        assert!(!part(Some(10), 10, 1, Check::Nothing).is_drained(), "a retry runs");
        assert!(!part(Some(10), 10, 0, Check::FromFirst).is_drained(), "window unknown");
        // What may have been applied: this process's finished work, or a previous owner's
        // window, whichever reaches further.
        assert_eq!(part(Some(10), 10, 0, Check::Below(40)).applied_below(), 40);
        assert_eq!(part(Some(90), 90, 0, Check::Below(40)).applied_below(), 90);
    }

    #[test]
    fn a_mark_that_waits_for_work_is_committed_only_once_a_record_is_queued() {
        let part = |when_queued, queued: usize| Part {
            assigned: true,
            remark: Some(Remark { mark: super::OWNED.to_owned(), limit: T, when_queued }),
            queue: (0..queued as u64).map(|o| (o, vec![1])).collect(),
            ..Part::default()
        };
        assert!(!part(true, 0).wants_remark(), "nothing to hand out: the group's commit holds");
        assert!(part(true, 1).wants_remark());
        assert!(part(false, 0).wants_remark(), "a mark that goes in at once");
        let revoked = Part { assigned: false, ..part(false, 1) };
        assert!(!revoked.wants_remark());
        assert!(!Part { assigned: true, ..Part::default() }.wants_remark());
    }
}
