//! `s3repl-io`: the committed-version log (segments, group-commit writer, `io_uring` reader,
//! tailing, checkpoints), and — as the pipeline lands — object sources and destinations.
//!
//! ```
//! use s3repl_io::log::{LogConfig, LogReader, LogWriter, MemStorage, ReadOptions};
//!
//! let storage = MemStorage::new();
//! let dir = std::path::Path::new("/log");
//! let writer = LogWriter::open_with(storage.clone(), dir, LogConfig::default())?;
//! let pos = writer.append("photos", "2024/cat.jpg", b"an opaque record")?;
//! let mut reader = LogReader::open(storage, dir, pos.partition, 0, ReadOptions::default());
//! let mut out = Vec::new();
//! reader.read_batch(100, &mut out)?;
//! assert_eq!(&out[0].payload[..], b"an opaque record");
//! # Ok::<(), s3repl_io::Error>(())
//! ```
//!
//! This crate is a leaf: no other s3repl crate.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

pub mod dest;
mod error;
pub mod log;
pub mod sigv4;

pub use error::Error;
