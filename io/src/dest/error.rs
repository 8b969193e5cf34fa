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

    /// Whether the store ran out of room: no space left on the device, a quota reached, or a
    /// file past the process's size limit (`ENOSPC`, `EDQUOT`, `EFBIG`, found anywhere in
    /// the error's chain of sources). A local file system in that state is *down* in the
    /// engine's sense: writes cannot succeed until room is made, whatever the retry timer.
    pub fn is_out_of_space(&self) -> bool {
        use std::io::ErrorKind as K;
        let mut at: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = at {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && matches!(io.kind(), K::StorageFull | K::QuotaExceeded | K::FileTooLarge)
            {
                return true;
            }
            at = e.source();
        }
        false
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn generic(e: std::io::Error) -> DestinationError {
        let source = object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) };
        DestinationError::classify("arn:aws:s3:::d", Operation::Put, source)
    }

    #[test]
    fn out_of_space_is_found_in_the_chain_and_nothing_else_is_taken_for_it() {
        for code in [libc::ENOSPC, libc::EDQUOT, libc::EFBIG] {
            let e = generic(std::io::Error::from_raw_os_error(code));
            assert!(e.is_retryable() && e.is_out_of_space(), "{code}: {e}");
        }
        // Kept by the kind alone (a message added on the way, as `put_file` adds the path).
        let kind = std::io::Error::from_raw_os_error(libc::ENOSPC).kind();
        assert!(generic(std::io::Error::new(kind, "/d/k: no space")).is_out_of_space());
        for code in [libc::EIO, libc::EACCES, libc::ECONNREFUSED, libc::ENOENT] {
            assert!(!generic(std::io::Error::from_raw_os_error(code)).is_out_of_space(), "{code}");
        }
        let text = object_store::Error::Generic {
            store: "S3",
            source: "no space left on device (a server's words)".into(),
        };
        assert!(!DestinationError::classify("d", Operation::Put, text).is_out_of_space());
    }
}
