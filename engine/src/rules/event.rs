//! What the matcher is asked about: one committed version event.

use std::fmt;
use std::str::FromStr;

use crate::config::StorageClass;

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventKind {
    /// A new object version (PUT, POST, COPY, `CompleteMultipartUpload`).
    #[default]
    Put,
    /// A new delete marker (DELETE without a version id).
    DeleteMarker,
    /// A permanent delete of one version (DELETE with a version id). Never replicated.
    DeleteVersion,
    /// A metadata change on an existing version (tags, ACL, Object Lock retention/legal hold).
    MetadataUpdate,
}

/// The source object's server-side encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SseKind {
    /// Not encrypted.
    #[default]
    None,
    /// SSE-S3 (S3-managed keys).
    SseS3,
    /// SSE-KMS.
    SseKms,
    /// Dual-layer SSE-KMS (treated like SSE-KMS).
    DsseKms,
    /// SSE-C (customer-provided keys).
    SseC,
}

impl SseKind {
    /// Whether the object is KMS-encrypted, which makes it need `SseKmsEncryptedObjects`.
    pub fn is_kms(self) -> bool {
        matches!(self, SseKind::SseKms | SseKind::DsseKms)
    }
}

/// Who caused the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Origin {
    /// A user request.
    #[default]
    User,
    /// A lifecycle action (expiration, transition). Lifecycle actions are never replicated.
    Lifecycle,
}

/// One committed version event, borrowed from wherever the caller keeps it.
///
/// For [`EventKind::MetadataUpdate`] the `tags` are the ones the version was created with: S3
/// evaluates tag filters on creation-time tags (adding a matching tag later does not make a
/// version eligible).
#[derive(Debug, Clone, Copy, Default)]
pub struct VersionEvent<'a> {
    /// The source bucket.
    pub bucket: &'a str,
    /// The object key; prefixes match byte-wise, case-sensitively.
    pub key: &'a str,
    /// The version id.
    pub version_id: &'a str,
    /// What happened.
    pub kind: EventKind,
    /// The object's tags, as (key, value) pairs.
    pub tags: &'a [(&'a str, &'a str)],
    /// The source object's encryption.
    pub sse: SseKind,
    /// Whether the version is itself a replica (status `REPLICA`).
    pub is_replica: bool,
    /// Whether the version predates the replication configuration.
    pub existing: bool,
    /// The source object's storage class.
    pub storage_class: StorageClass,
    /// Who caused the event.
    pub origin: Origin,
}

macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The name used on the command line and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name,)* }
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(format!(
                        "unknown {} {s:?} (expected one of: {})",
                        stringify!($ty),
                        [$($name),*].join(", ")
                    )),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(EventKind {
    Put => "put",
    DeleteMarker => "delete_marker",
    DeleteVersion => "delete_version",
    MetadataUpdate => "metadata_update",
});
names!(SseKind { None => "none", SseS3 => "SSE-S3", SseKms => "SSE-KMS", DsseKms => "DSSE-KMS", SseC => "SSE-C" });
names!(Origin { User => "user", Lifecycle => "lifecycle" });
