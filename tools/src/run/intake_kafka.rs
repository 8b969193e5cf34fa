//! The second intake path: a Kafka topic of S3 event messages (`MinIO`'s and Ceph RGW's Kafka
//! targets publish the same JSON their webhooks post), read by a consumer group on a thread of
//! its own. Each message is a delivery handed to the same [`Intake`] as the webhook's; a
//! message's offset is stored for the group's commit only once its records are durable in the
//! log (auto-commit of stored offsets), so a replicator that dies redelivers the messages
//! after its last commit, and intake appends none of them twice.
//!
//! A message intake refuses as malformed (400: not an event message, an event without a
//! version id, a bucket this replicator does not serve) is logged and passed over: unlike a
//! webhook sender, a topic would replay it forever. A failure that may pass (the source or the
//! log not answering) is retried, with the consumer holding the message, until it succeeds or
//! the replicator stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use super::intake::Intake;
use crate::error::CliError;

/// Messages handed to intake at once (their deliveries share group commits).
const BATCH: usize = 256;

/// What the topic consumer has done since the process started (for `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct TopicCounters {
    /// Messages whose records are durable (or that held nothing to append).
    pub(crate) taken: AtomicU64,
    /// Messages refused as malformed and passed over.
    pub(crate) passed_over: AtomicU64,
}

/// The running consumer; stopped (final commit of stored offsets) when dropped.
pub(crate) struct EventTopic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Disconnected once the consumer's thread has ended (its final commit made and the
    /// consumer closed).
    ended: parking_lot::Mutex<std::sync::mpsc::Receiver<()>>,
    pub(crate) counters: Arc<TopicCounters>,
}

/// How long dropping an [`EventTopic`] waits for its final commit and the consumer's close:
/// librdkafka waits for both without a limit, and brokers that keep their connections but
/// stop answering would keep the replicator from exiting.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for EventTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTopic").finish_non_exhaustive()
    }
}

impl Drop for EventTopic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        match self.ended.get_mut().recv_timeout(STOP_TIMEOUT) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Left running: the group redelivers what was not committed (intake appends
                // nothing twice).
                tracing::error!(
                    timeout_s = STOP_TIMEOUT.as_secs(),
                    "The event topic's consumer did not stop in time (the brokers do not answer); going on without it."
                );
            }
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// Where the event topic is.
#[derive(Debug, Clone)]
pub(crate) struct TopicSettings {
    pub(crate) brokers: String,
    pub(crate) topic: String,
    pub(crate) group: String,
    /// Further librdkafka settings, applied last.
    pub(crate) extra: Vec<(String, String)>,
}

/// Subscribes to the topic and starts taking its messages into `intake` (on `runtime`).
pub(crate) fn start(
    intake: Arc<Intake>,
    settings: &TopicSettings,
    runtime: tokio::runtime::Handle,
) -> Result<EventTopic, CliError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("auto.commit.interval.ms", "1000");
    for (k, v) in &settings.extra {
        config.set(k, v);
    }
    let consumer: BaseConsumer =
        config.create().map_err(|e| CliError::settings(format!("[intake] event topic: {e}")))?;
    consumer
        .subscribe(&[settings.topic.as_str()])
        .map_err(|e| CliError::settings(format!("[intake] event topic {}: {e}", settings.topic)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(TopicCounters::default());
    let (ending, ended) = std::sync::mpsc::sync_channel::<()>(1);
    let thread = {
        let (stop, counters) = (stop.clone(), counters.clone());
        std::thread::Builder::new()
            .name("s3repl-event-topic".into())
            .spawn(move || {
                consume(&consumer, &intake, &runtime, &stop, &counters);
                // Closes the consumer (without a limit: see `STOP_TIMEOUT`).
                drop(consumer);
                drop(ending);
            })
            .map_err(|e| {
                CliError::internal(format!("cannot start the event topic's thread: {e}"))
            })?
    };
    tracing::info!(topic = %settings.topic, group = %settings.group, "Taking bucket events from a Kafka topic.");
    Ok(EventTopic { stop, thread: Some(thread), ended: parking_lot::Mutex::new(ended), counters })
}

fn consume(
    consumer: &BaseConsumer,
    intake: &Arc<Intake>,
    runtime: &tokio::runtime::Handle,
    stop: &AtomicBool,
    counters: &TopicCounters,
) {
    while !stop.load(Ordering::SeqCst) {
        let mut batch = Vec::new();
        let mut wait = Duration::from_millis(200);
        while batch.len() < BATCH {
            match consumer.poll(wait) {
                Some(Ok(m)) => batch.push(m.detach()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Reading the event topic failed; retrying.");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        if batch.is_empty() {
            continue;
        }
        // Every message's delivery at once (they share group commits), then the failures that
        // may pass again, until none is left or the replicator stops.
        let mut left: Vec<&rdkafka::message::OwnedMessage> = batch.iter().collect();
        let mut pause = Duration::from_millis(100);
        while !left.is_empty() {
            // One call: the messages' records are appended in their order (a partition's
            // order is a key's order when the sender gives no sequencers).
            let bodies: Vec<&[u8]> = left.iter().map(|m| m.payload().unwrap_or_default()).collect();
            let outcomes = runtime.block_on(intake.deliver_in_order(&bodies));
            let mut again = Vec::new();
            for (m, outcome) in left.iter().copied().zip(outcomes) {
                match outcome {
                    Ok(_) => {
                        counters.taken.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(refusal) if refusal.status < 500 => {
                        counters.passed_over.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(partition = m.partition(), offset = m.offset(), reason = %refusal.reason, "Event message refused; passed over (nothing of it appended).");
                    }
                    Err(refusal) => {
                        tracing::warn!(partition = m.partition(), offset = m.offset(), reason = %refusal.reason, "Event message not taken yet; retrying.");
                        again.push(m);
                    }
                }
            }
            left = again;
            if !left.is_empty() {
                if stop.load(Ordering::SeqCst) {
                    // Not stored: the group redelivers them to whoever takes the partition.
                    return commit(consumer);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
        for m in &batch {
            if let Err(e) = consumer.store_offset(m.topic(), m.partition(), m.offset()) {
                tracing::warn!(error = %e, "Storing an event topic offset failed (the message may be delivered again; intake appends nothing twice).");
            }
        }
    }
    commit(consumer);
}

/// Commits the stored offsets before the consumer goes.
fn commit(consumer: &BaseConsumer) {
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "Final commit of the event topic's offsets.");
    }
}
