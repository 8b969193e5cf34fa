//! The replication pipeline: [`Engine`] reads the log, matches each version against its
//! bucket's compiled rules, schedules the work per key, copies to the destinations, reports
//! [`ReplicationStatus`] and checkpoints the low watermark. The chain, a file per stage, every
//! arrow a bounded queue:
//!
//! ```text
//! input.rs      the seam: partitions of records, positions committed back (SegmentLog;
//!               kafka.rs: a Kafka topic read by a consumer group, feature `kafka`)
//! read.rs       one thread per input partition: records in batches     ─bounded channel─►
//! dispatch.rs   decode, match (configs.rs: the rules in force), plan,
//!               replay horizon, admit per key                           ─KeyedScheduler─►
//! worker.rs     a version's tasks with retries, status, failed queue; parking while a
//!               destination is down (health.rs: breakers, probes)
//!   replay.rs     after a crash: was it applied already?
//!   copy/         one PUT, server-side, multipart (parts, reencrypt)
//! checkpoint.rs low watermark made durable, checkpoint saved
//! ```
//!
//! `engine.rs` builds and starts the chain and holds the handles ([`EngineHandle`],
//! [`EngineControl`]); `context.rs` is what every stage shares, `task.rs` one version's work
//! item. Stage machinery:
//!
//! - `KeyedScheduler` (`scheduler.rs`): operations on one key run one at a time in admission (log) order,
//!   different keys in parallel, with a bound on admitted operations (backpressure to the log
//!   reader: `submit` waits when the bound is reached).
//! - `ByteBudget` (`budget.rs`): the global in-flight byte budget, a weighted semaphore whose owned
//!   permits travel with the data they account for.
//! - `Watermark` (`watermark.rs`): the low watermark of finished sequence numbers of one partition, which is
//!   what a checkpoint stores (replay from it is idempotent).

mod budget;
mod buffers;
mod checkpoint;
mod configs;
mod context;
mod copy;
mod dispatch;
mod engine;
mod failed;
mod health;
mod input;
#[cfg(feature = "kafka")]
mod kafka;
mod metrics;
mod read;
mod replay;
mod scheduler;
mod source;
mod status;
mod store;
mod task;
mod versions;
mod watermark;
mod worker;

pub(crate) use context::exhausted;
pub use context::{CheckpointTrouble, Halt, Limits, Resolver};
pub use engine::{Engine, EngineBuilder, EngineControl, EngineHandle};
pub use failed::{FailedOperation, RetryPolicy};
pub use health::{DestinationHealth, DestinationState};
pub use input::{Lease, LogInput, PartitionReader, SegmentLog};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaLog, KafkaSettings, KafkaWriter, Sent};
pub use metrics::{DestinationSnapshot, Metrics, MetricsSnapshot, RTC_THRESHOLD};

pub use source::{BoxFuture, MemorySource, ObjectSource, SourceError, slice_range};
pub use status::{
    FailureReason, MemoryStatus, Outcome, OwnedStatusUpdate, ReplicationStatus, StatusSink,
    StatusUpdate, StatusWaiter,
};
pub use store::{LocalVersionStore, ObjectStoreSource, valid_bucket_name};

/// The configuration installed for `bucket` in a configuration directory (what
/// [`EngineBuilder::config_dir`] persists, `s3repl run`'s `DATA_DIR/replication`), with the time
/// since which it is in force (Unix ms; 0: always); `None` when the bucket has none.
pub fn installed_configuration(
    dir: &std::path::Path,
    bucket: &str,
) -> Result<Option<(crate::config::ReplicationConfiguration, u64)>, crate::Error> {
    Ok(configs::ConfigStore::new(dir.to_owned())
        .load()?
        .into_iter()
        .find(|(b, _, _)| b == bucket)
        .map(|(_, c, since)| (c, since)))
}
