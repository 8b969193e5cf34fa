//! The tools' one error type: why a command could not do its job, by whose fault.

use std::path::{Path, PathBuf};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Arguments, settings or an input document that cannot be used as given.
    #[error("{0}")]
    Settings(String),
    /// A file or directory could not be read, written or created.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The engine refused to start, or failed.
    #[error(transparent)]
    Engine(#[from] s3repl::Error),
    /// A replication configuration was refused.
    #[error(transparent)]
    Config(#[from] s3repl::config::ValidationError),
    /// Keys or encryption failed.
    #[error(transparent)]
    Crypto(#[from] s3repl::crypto::Error),
    /// A version record could not be encoded or decoded.
    #[error(transparent)]
    Record(#[from] s3repl::record::RecordError),
    /// An object store (a source or destination bucket, local or remote) failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// The committed-version log failed.
    #[error(transparent)]
    Log(#[from] s3repl::LogError),
    /// A server this command talks to (an S3-compatible endpoint, a replicator's admin
    /// endpoint) failed or answered what the command cannot use.
    #[error("{0}")]
    Remote(String),
    /// The run did not replicate what it should have (failures, a halt, a timeout).
    #[error("{0}")]
    Run(String),
    /// Something this process needs failed while running (a runtime, a thread, a timer).
    #[error("{0}")]
    Internal(String),
}

impl CliError {
    /// A settings error.
    pub(crate) fn settings(message: impl Into<String>) -> Self {
        CliError::Settings(message.into())
    }

    /// A file error at `path`.
    pub(crate) fn file(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| CliError::File { path: path.to_owned(), source }
    }

    /// A remote error.
    pub(crate) fn remote(message: impl Into<String>) -> Self {
        CliError::Remote(message.into())
    }

    /// An internal error.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        CliError::Internal(message.into())
    }
}
