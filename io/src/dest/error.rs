//! Why a destination failed: transient (retried), or refused for good, saying which operation
//! and why in the destination's terms. S3's failure-reason names are the engine's business
//! (its `FailureReason` maps an operation and a refusal to one); this crate names none.

use std::fmt;

/// What a destination was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Write a replica (single PUT, or a server-side copy).
    Put,
    /// Read what the destination holds of a key (HEAD, listing its versions).
    Head,
    /// Write a delete marker.
    DeleteMarker,
    /// Start a multipart upload.
    MultipartInit,
    /// Upload (or copy) a part.
    MultipartUpload,
    /// Complete a multipart upload.
    MultipartComplete,
    /// Abort a multipart upload.
    MultipartAbort,
    /// Set a replica's tags.
    PutTagging,
    /// Set a replica's ACL.
    PutAcl,
    /// Set a replica's Object Lock retention.
    PutRetention,
    /// Set a replica's Object Lock legal hold.
    PutLegalHold,
}

impl Operation {
    /// Whether "not found" from the store means the bucket is missing (a write): reads and
    /// deletes of what is not there are not failures of the bucket.
    fn writes(self) -> bool {
        !matches!(self, Operation::Head | Operation::DeleteMarker)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a destination refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// Not permitted: credentials, policy, or a request no retry can fix (a key the store
    /// cannot hold, metadata no HTTP request can carry).
    NotPermitted,
    /// The destination bucket does not exist.
    BucketNotFound,
    /// The replica version the operation addresses does not exist.
    VersionNotFound,
    /// The replica has Object Lock settings; the destination cannot keep them.
    NoObjectLock,
    /// A server-side copy's source version does not exist.
    SourceVersionNotFound,
    /// A server-side copy's source bucket does not exist.
    SourceBucketNotFound,
    /// A server-side copy's source is not the version the log recorded (its `ETag` differs).
    SourceChanged,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a destination operation failed, decided once: can the same operation succeed if
/// retried?
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// Transient (network, throttling, server error): retry with backoff.
    #[error("destination {destination}: transient failure: {source}")]
    Transient {
        /// The destination bucket ARN.
        destination: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Refused for good (permission, missing bucket or version, unsupported): the version is
    /// FAILED.
    #[error("destination {destination}: {operation} refused ({refusal}): {source}")]
    Permanent {
        /// The destination bucket ARN.
        destination: String,
        /// What was asked.
        operation: Operation,
        /// Why it was refused.
        refusal: Refusal,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

impl DestinationError {
    /// Whether retrying the same write may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DestinationError::Transient { .. })
    }

    /// The refusal, for a permanent failure.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            DestinationError::Permanent { refusal, .. } => Some(*refusal),
            DestinationError::Transient { .. } => None,
        }
    }

    /// The one place `object_store` errors are classified.
    pub(super) fn classify(
        destination: &str,
        operation: Operation,
        source: object_store::Error,
    ) -> Self {
        use object_store::Error as E;
        let refusal = match &source {
            E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::InvalidPath { .. } => Some(Refusal::NotPermitted),
            // A write answered "not found" means the bucket is missing.
            E::NotFound { .. } if operation.writes() => Some(Refusal::BucketNotFound),
            _ => None,
        };
        let destination = destination.to_owned();
        match refusal {
            Some(refusal) => {
                DestinationError::Permanent { destination, operation, refusal, source }
            }
            None => DestinationError::Transient { destination, source },
        }
    }
}
