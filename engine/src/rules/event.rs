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

/// Which properties of an existing version a [`EventKind::MetadataUpdate`] changed: its tag
/// set, its ACL, its Object Lock retention, its legal hold (any combination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetadataChanges(u8);

impl MetadataChanges {
    /// No change.
    pub const NONE: Self = MetadataChanges(0);
    /// The tag set changed (`PutObjectTagging`, `DeleteObjectTagging`).
    pub const TAGS: Self = MetadataChanges(1);
    /// The ACL changed (`PutObjectAcl`).
    pub const ACL: Self = MetadataChanges(2);
    /// The Object Lock retention changed (`PutObjectRetention`).
    pub const RETENTION: Self = MetadataChanges(4);
    /// The legal hold changed (`PutObjectLegalHold`).
    pub const LEGAL_HOLD: Self = MetadataChanges(8);
    const ALL_BITS: u8 = 15;

    /// The raw bits (tags 1, ACL 2, retention 4, legal hold 8), as the log record stores them.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// From raw bits; `None` when an unknown bit is set.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::ALL_BITS == 0 { Some(MetadataChanges(bits)) } else { None }
    }

    /// Whether every change in `other` is among these.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// These changes without those in `other`.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        MetadataChanges(self.0 & !other.0)
    }

    /// Whether nothing changed.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The changes a rule replicates: all of them, except ACL changes when the rule makes the
    /// destination account own the replicas (`AccessControlTranslation`, S3's owner override).
    #[must_use]
    pub const fn replicated(self, owner_override: bool) -> Self {
        if owner_override { self.without(MetadataChanges::ACL) } else { self }
    }
}

impl Default for MetadataChanges {
    /// A tag change: what a metadata update meant before the other kinds were recorded (log
    /// records of version 1 carry no change set).
    fn default() -> Self {
        MetadataChanges::TAGS
    }
}

impl std::ops::BitOr for MetadataChanges {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        MetadataChanges(self.0 | other.0)
    }
}

impl fmt::Display for MetadataChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (MetadataChanges::TAGS, "tags"),
            (MetadataChanges::ACL, "acl"),
            (MetadataChanges::RETENTION, "retention"),
            (MetadataChanges::LEGAL_HOLD, "legal_hold"),
        ];
        let set: Vec<&str> =
            names.iter().filter(|(c, _)| self.contains(*c)).map(|(_, n)| *n).collect();
        if set.is_empty() { f.write_str("none") } else { f.write_str(&set.join("+")) }
    }
}

impl FromStr for MetadataChanges {
    type Err = String;
    /// `tags`, `acl`, `retention`, `legal_hold`, joined with `+` (or `none`).
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(MetadataChanges::NONE);
        }
        s.split('+').try_fold(MetadataChanges::NONE, |acc, part| {
            let one = match part {
                "tags" => MetadataChanges::TAGS,
                "acl" => MetadataChanges::ACL,
                "retention" => MetadataChanges::RETENTION,
                "legal_hold" => MetadataChanges::LEGAL_HOLD,
                other => {
                    return Err(format!(
                        "unknown metadata change {other:?} (expected tags, acl, retention, legal_hold, joined with +)"
                    ));
                }
            };
            Ok(acc | one)
        })
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
    /// For [`EventKind::MetadataUpdate`]: what changed. A rule whose destination account owns
    /// the replicas (`AccessControlTranslation`) does not replicate ACL changes.
    pub changes: MetadataChanges,
}

s3repl_io::wire_names!(EventKind {
    Put => "put",
    DeleteMarker => "delete_marker",
    DeleteVersion => "delete_version",
    MetadataUpdate => "metadata_update",
});
s3repl_io::wire_names!(SseKind { None => "none", SseS3 => "SSE-S3", SseKms => "SSE-KMS", DsseKms => "DSSE-KMS", SseC => "SSE-C" });
s3repl_io::wire_names!(Origin { User => "user", Lifecycle => "lifecycle" });
