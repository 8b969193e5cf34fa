//! The committed-version log: the engine's input and its durability boundary.
//!
//! A log directory holds `log.meta` (format and partition count), one directory per partition
//! (`p00000`, …) of segment files named by their first sequence number, and `checkpoints/`.
//! Byte layouts are in `docs/design/log-format.md`.
//!
//! - [`LogWriter`]: what a storage server calls when a version commits; group commit under a
//!   [`Durability`] policy, segment rotation, fail-stop after a failed fsync, recovery of a torn
//!   tail on open.
//! - [`LogReader`]: one partition from a sequence number, in batches of zero-copy [`Record`]s,
//!   with `io_uring` (dedicated thread, read-ahead) or `pread`, then tailing.
//! - [`save_checkpoint`] / [`apply_retention`]: consumer positions and segment deletion;
//!   [`sync_records_below`] makes what a checkpoint passes durable first.
//! - [`inspect`]: read-only verification of every checksum.
//! - [`find_damage`] / [`repair`]: what truncating damage that recovery leaves alone would
//!   cost, and doing it on an operator's request.
//! - [`Storage`]: the narrow seam all file I/O goes through; [`MemStorage`] simulates crashes.

mod blocks;
mod checkpoint;
mod crc;
mod durable;
mod format;
mod inspect;
mod reader;
mod repair;
mod segment;
mod storage;
mod writer;

pub use checkpoint::{
    Checkpoint, apply_retention, consumers, load_checkpoint, lock_consumer, save_checkpoint,
    sync_records_below,
};
pub use durable::durable_marks;
pub use format::{
    FORMAT_VERSION, FRAME_HEADER_LEN, MAX_RECORD_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    SegmentHeader, frame_len, partition_for,
};
pub use inspect::{Inspection, inspect};
pub use reader::{
    Backend, LogReader, ReadOptions, Record, RecordBatch, RecordRef, uring_available,
};
pub use repair::{Damage, find_damage, repair, truncate_damage};
pub use segment::segment_files;
pub use storage::{Crash, FileStorage, MemFile, MemStorage, RealFile, Storage, StorageFile};
pub use writer::{
    Durability, LogConfig, LogWriter, Notifier, Position, append_whole, read_partitions,
    write_atomic,
};
