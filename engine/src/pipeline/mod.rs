//! The replication pipeline: [`Engine`] reads the log, matches each version against its
//! bucket's compiled rules, schedules the work per key, copies to the destinations, reports
//! [`ReplicationStatus`] and checkpoints the low watermark. Stage machinery:
//!
//! - [`KeyedScheduler`]: operations on one key run one at a time in admission (log) order,
//!   different keys in parallel, with a bound on admitted operations (backpressure to the log
//!   reader: `submit` waits when the bound is reached).
//! - [`ByteBudget`]: the global in-flight byte budget, a weighted semaphore whose owned
//!   permits travel with the data they account for.
//! - [`Watermark`]: the low watermark of finished sequence numbers of one partition, which is
//!   what a checkpoint stores (replay from it is idempotent).

mod budget;
mod buffers;
mod configs;
mod engine;
mod failed;
mod metrics;
mod scheduler;
mod source;
mod status;
mod store;
mod versions;
mod watermark;

pub use budget::{BudgetPermit, ByteBudget};
pub use engine::{Engine, EngineBuilder, EngineControl, EngineHandle, Halt, Limits, Resolver};
pub use failed::{FailedOperation, RetryPolicy};
pub use metrics::{DestinationSnapshot, Metrics, MetricsSnapshot, RTC_THRESHOLD};
pub use scheduler::{Admitted, KeyedScheduler, SchedulerClosed};
pub use source::{BoxFuture, MemorySource, ObjectSource, SourceError, slice_range};
pub use status::{MemoryStatus, ReplicationStatus, StatusSink, StatusUpdate};
pub use store::{LocalVersionStore, ObjectStoreSource, valid_bucket_name};
pub use watermark::Watermark;

/// Locks `m`, taking over a lock poisoned by a panicking holder: the pipeline's shared state
/// is updated in single steps, so a panic elsewhere leaves nothing half-written.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
