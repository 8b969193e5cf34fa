//! The log a bench run goes through: the segment log, or a Kafka topic (`--log kafka`: on
//! `--kafka-brokers`, else on librdkafka's mock cluster in this process).

use std::sync::Arc;
use std::time::Duration;

use s3repl::log::{Durability, LogConfig, LogWriter};
use s3repl::pipeline::Engine;

use super::Args;
use crate::error::CliError;

/// The log a bench run appends its versions to, and the engine reads.
pub(super) enum BenchLog {
    /// The segment log in the run's directory.
    Local(LogWriter),
    /// A Kafka topic; with the mock cluster that serves it when no brokers were given (kept
    /// alive for the run).
    Kafka {
        writer: Box<s3repl::pipeline::KafkaWriter>,
        settings: Box<s3repl::pipeline::KafkaSettings>,
        next: std::sync::Mutex<Vec<u64>>,
        /// Batches sent and not yet acknowledged (several in flight).
        sent: std::sync::Mutex<std::collections::VecDeque<s3repl::pipeline::Sent>>,
        _mock: Option<rdkafka::producer::BaseProducer>,
    },
}

/// librdkafka's mock cluster in this process, serving `topic` with `partitions` partitions:
/// the client that owns it (the brokers live as long as it does) and their address.
///
/// A new group's first assignment is not held back: Kafka brokers wait
/// `group.initial.rebalance.delay.ms` (3 s by default, and on the mock) for more members
/// before a new group's first rebalance, a one-time wait of the group's start, not of the
/// path a run measures (it was a third of a 600,000-version run).
fn mock_brokers(
    topic: &str,
    partitions: u32,
) -> Result<(rdkafka::producer::BaseProducer, String), CliError> {
    use rdkafka::producer::Producer as _;
    let fail = |e: &dyn std::fmt::Display| CliError::internal(format!("Kafka mock cluster: {e}"));
    let client: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .map_err(|e| fail(&e))?;
    let mock = client.client().mock_cluster().ok_or_else(|| fail(&"none made"))?;
    let count = i32::try_from(partitions.max(1)).unwrap_or(1);
    mock.create_topic(topic, count, 1).map_err(|e| fail(&e))?;
    let brokers = mock.bootstrap_servers();
    drop(mock);
    // SAFETY: the cluster belongs to `client`, alive here; the call only stores a setting
    // under the cluster's lock.
    unsafe {
        let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(client.client().native_ptr());
        if !cluster.is_null() {
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
    }
    Ok((client, brokers))
}

impl BenchLog {
    pub(super) fn open(a: &Args, log_dir: &std::path::Path) -> Result<Self, CliError> {
        match a.log.as_str() {
            "local" => Ok(BenchLog::Local(LogWriter::open(
                log_dir,
                LogConfig {
                    partitions: a.partitions,
                    durability: Durability::Interval(Duration::from_millis(10)),
                    ..LogConfig::default()
                },
            )?)),
            "kafka" => {
                let topic = a.kafka_topic.clone();
                let (brokers, mock) = if let Some(b) = &a.kafka_brokers {
                    (b.clone(), None)
                } else {
                    let (client, brokers) = mock_brokers(&topic, a.partitions)?;
                    (brokers, Some(client))
                };
                let group = format!("s3repl-bench-{}", std::process::id());
                let settings = s3repl::pipeline::KafkaSettings::new(&brokers, &topic, &group);
                let writer = s3repl::pipeline::KafkaWriter::new(&settings)?;
                let next = std::sync::Mutex::new(vec![0; writer.partitions() as usize]);
                let sent = std::sync::Mutex::default();
                let (writer, settings) = (Box::new(writer), Box::new(settings));
                Ok(BenchLog::Kafka { writer, settings, next, sent, _mock: mock })
            }
            other => {
                Err(CliError::settings(format!("--log must be local or kafka, not {other:?}")))
            }
        }
    }

    /// An engine builder reading this log.
    pub(super) fn engine(
        &self,
        log_dir: &std::path::Path,
        partitions: u32,
    ) -> Result<s3repl::pipeline::EngineBuilder, CliError> {
        Ok(match self {
            BenchLog::Local(w) => Engine::builder().log(log_dir, partitions).notifier(w.notifier()),
            BenchLog::Kafka { settings, .. } => Engine::builder()
                .input(Arc::new(s3repl::pipeline::KafkaLog::new(settings)?))
                .state_dir(log_dir),
        })
    }

    pub(super) fn append_batch(&self, batch: &[(&str, &str, &[u8])]) -> Result<(), CliError> {
        match self {
            BenchLog::Local(w) => {
                w.append_batch(batch)?;
            }
            BenchLog::Kafka { writer, sent, .. } => {
                let mut sent = sent.lock().map_err(|_| CliError::internal("poisoned"))?;
                sent.push_back(writer.send_batch(batch)?);
                // Up to 32 batches in flight: the acknowledgements of one batch are not
                // waited for before the next is sent.
                while sent.len() > 32 {
                    if let Some(oldest) = sent.pop_front() {
                        self.acknowledged(oldest)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits for a batch's acknowledgements and notes how far each partition got.
    fn acknowledged(&self, batch: s3repl::pipeline::Sent) -> Result<(), CliError> {
        let BenchLog::Kafka { next, .. } = self else { return Ok(()) };
        let at = batch.wait()?;
        let mut next = next.lock().map_err(|_| CliError::internal("poisoned"))?;
        for p in at {
            if let Some(n) = next.get_mut(p.partition as usize) {
                *n = (*n).max(p.seq + 1);
            }
        }
        Ok(())
    }

    /// Every partition's position after the last record appended (synced first).
    pub(super) fn next_seqs(&self) -> Result<Vec<u64>, CliError> {
        match self {
            BenchLog::Local(w) => {
                w.sync()?;
                Ok(w.next_seqs())
            }
            BenchLog::Kafka { next, sent, .. } => {
                let pending: Vec<_> =
                    sent.lock().map_err(|_| CliError::internal("poisoned"))?.drain(..).collect();
                for batch in pending {
                    self.acknowledged(batch)?;
                }
                Ok(next.lock().map_err(|_| CliError::internal("poisoned"))?.clone())
            }
        }
    }
}
