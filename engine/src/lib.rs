//! `s3repl`: an S3 bucket replication engine for storage servers.
//!
//! The crate an embedding server depends on:
//! - [`config`]: the `ReplicationConfiguration` — S3 XML (both namespaces) and AWS CLI JSON
//!   codecs, and S3's validation with its error codes;
//! - [`rules`]: configurations compiled to a prefix trie with tag predicates, matching a version
//!   to its destinations with S3's priority semantics;
//! - [`record`]: the committed-version record carried in the log;
//! - [`pipeline`]: the replication engine;
//! - [`log`], [`dest`] and [`crypto`]: the `s3repl-io` log and destinations and the
//!   `s3repl-crypto` envelope, and [`object_store`], re-exported so embedders need this crate
//!   only.
//!
//! **Runtime:** the engine runs on the caller's tokio runtime (multi-threaded, with time and
//! I/O enabled): call [`pipeline::EngineBuilder::start`] inside one (outside, it returns
//! [`Error::Setup`]). **Errors:** everything at this facade converts into [`Error`] with `?`
//! (configuration, record, log, store and I/O errors), each keeping its cause as `source()`.
//! **Durability:** make a version's bytes durable in the source before appending its record
//! ([`record::AppendRecord`]). A complete embedding: `engine/examples/embed.rs`.
//!
//! The replication pipeline builds on these (see `ARCHITECTURE.md`).
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

pub mod config;
pub mod pipeline;
pub mod record;
pub mod rules;

pub use object_store;
pub use s3repl_crypto as crypto;
pub use s3repl_io::Error as LogError;
pub use s3repl_io::dest;
pub use s3repl_io::log;
#[cfg(feature = "sigv4")]
pub use s3repl_io::sigv4;

/// The engine's error: one variant per part an embedder deals with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration was refused (S3 error code inside).
    #[error(transparent)]
    Config(#[from] config::ValidationError),
    /// A log record could not be decoded.
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] s3repl_io::Error),
    /// Keys or encryption failed.
    #[error(transparent)]
    Crypto(#[from] s3repl_crypto::Error),
    /// The persisted map of replica versions failed (open, read or commit).
    #[error("version map {path}: {reason}")]
    VersionMap {
        /// The database file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another engine runs as the same consumer of this log (in this process or another): two
    /// would share one checkpoint, version map and failed-operations queue.
    #[error("another engine runs as consumer {consumer} of this log ({path} is locked)")]
    ConsumerBusy {
        /// The consumer name.
        consumer: String,
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// A persisted replication configuration could not be read, written or removed.
    #[error("replication configuration {path}: {reason}")]
    Configuration {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A destination could not make its replicas durable before a checkpoint.
    #[error(transparent)]
    Destination(#[from] s3repl_io::dest::DestinationError),
    /// An object store (a destination being built, a source bucket) failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A ready-made source or store could not read or write a file. (The error itself is the
    /// `source()`, so [`Error::is_transient`] sees a shortage of descriptors or memory.)
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The engine was given too little to start (a log or input, a source, a status sink).
    #[error("the engine cannot start: {0}")]
    Setup(&'static str),
    /// The engine has shut down.
    #[error("the engine is shut down")]
    ShutDown,
    /// The log input ([`pipeline::LogInput`]) failed.
    #[error("log input: {source}")]
    Input {
        /// Whether trying again later may succeed (a broker out of reach, say).
        transient: bool,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether trying the same thing again later may succeed: the process was short of file
    /// descriptors or memory, or an input said so.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Input { transient: true, .. }) || pipeline::exhausted(self)
    }
}
