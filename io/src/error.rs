//! The crate's one error type.

use std::path::PathBuf;

/// What the log can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record other than the torn tail is damaged: never skipped.
    #[error("corrupt log: partition {partition}, segment {segment}, offset {offset}: {reason}")]
    Corrupt {
        /// The partition.
        partition: u32,
        /// The segment file name.
        segment: String,
        /// Byte offset of the bad frame in the segment.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or fsync failed; the writer refuses appends until reopened (fail-stop:
    /// after a failed fsync the page cache may have dropped the data, so nothing is acknowledged).
    #[error("the log writer is poisoned by an earlier I/O failure; reopen it to recover")]
    Poisoned,
    /// A record larger than the format allows.
    #[error("record of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The log directory does not match what was asked (format version, partition count).
    #[error("log {path}: {reason}")]
    Layout {
        /// The directory or file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// Another writer (in this or another process) has the log open.
    #[error("log {path}: another writer has this log open")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// Records the log had made durable are gone: the durable mark says records below
    /// `durable` were synced, but the partition now ends at `end`. No crash does this (a torn
    /// tail holds only records that were never durable); a disk that lost synced data or a
    /// file cut by hand does. The writer refuses to open, since new records would take the lost
    /// records' numbers, which consumers may have passed; `s3repl log repair` says what was
    /// lost and, with `--truncate`, accepts it.
    #[error(
        "log partition {partition}: records {end}..{durable} were durable and are gone (run `s3repl log repair`)"
    )]
    Lost {
        /// The partition.
        partition: u32,
        /// Its durable mark.
        durable: u64,
        /// Where its records end now.
        end: u64,
    },
    /// A checkpoint file is unreadable or damaged.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Maps an I/O error to [`Error::Io`]. The path is copied only when an error happens: this is
/// called on hot paths (once per record read) where an eager copy would allocate every time.
pub(crate) fn io_err<P: AsRef<std::path::Path>>(
    op: &'static str,
    path: P,
) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { op, path: path.as_ref().to_owned(), source }
}
