//! The replication pipeline's stage machinery: what every stage between the log reader and the
//! destinations shares. Landed so far (the stages that use them come with the pipeline issue):
//!
//! - [`KeyedScheduler`]: operations on one key run one at a time in admission (log) order,
//!   different keys in parallel, with a bound on admitted operations (backpressure to the log
//!   reader: `submit` waits when the bound is reached).
//! - [`ByteBudget`]: the global in-flight byte budget, a weighted semaphore whose owned
//!   permits travel with the data they account for.
//! - [`Watermark`]: the low watermark of finished sequence numbers of one partition, which is
//!   what a checkpoint stores (replay from it is idempotent).

mod budget;
mod scheduler;
mod watermark;

pub use budget::{BudgetPermit, ByteBudget};
pub use scheduler::{Admitted, KeyedScheduler, SchedulerClosed};
pub use watermark::Watermark;
