//! The record schema carried in the log: one committed object version, as the embedding server
//! appends it. The log itself treats records as opaque bytes; this module owns their layout.
//!
//! Encoding (little-endian, see `docs/design/log-format.md`; v1 is frozen, v2 is v1 plus an
//! extension section):
//!
//! ```text
//! u8 version (1 or 2) | u8 operation | u8 origin | u8 flags | u8 storage class | u8 SSE kind | u16 0
//! u64 size | u64 commit time (ms since the Unix epoch) | [32] BLAKE3 (if flag)
//! str bucket | str key | str version id | str ETag
//! u16 n, n × (str, str) tags | u16 m, m × (str, str) user metadata
//! str KMS key id (if flag) | bytes wrapped data key (if flag)
//! v2 only: u16 k, k × (u8 field, bytes value)      fields strictly increasing
//! ```
//!
//! where `str` and `bytes` are a u16 length then the bytes. Flags: bit 0 replica, bit 1
//! existing (predates the configuration), bit 2 BLAKE3 present, bit 3 KMS key id present, bit 4
//! wrapped data key present. Extension fields: 1–6 content headers (`Content-Type`,
//! `Content-Encoding`, `Content-Disposition`, `Content-Language`, `Cache-Control`, `Expires`;
//! UTF-8), 7 ACL, 8 Object Lock retention, 9 legal hold on (empty value), 10 metadata changes.
//! A field absent means "none" (for 10: a tag change, what v1 expresses, which is therefore
//! never written as field 10). Unknown fields are refused: a newer writer's record is never
//! decoded with parts of it dropped. The encoding is canonical: one record, one byte string.

/// The user-metadata entries every replica carries besides the source's own, defined here once:
/// what a replica says of the version it was made from. Destinations store them as they store
/// any user metadata (`x-amz-meta-…` on S3; Azure spells `-` as `_`).
pub mod stamps {
    /// `REPLICA`: this object is a replica (S3's `x-amz-replication-status` on replicas).
    pub const REPLICATION_STATUS: &str = "s3repl-replication-status";
    /// The source version id: metadata changes find their replica by it.
    pub const SOURCE_VERSION_ID: &str = "s3repl-source-version-id";
    /// The source version's commit time, ms since the Unix epoch.
    pub const SOURCE_LAST_MODIFIED_MS: &str = "s3repl-source-last-modified-ms";
    /// `partition:sequence` of the record the replica was written for: a replay after a crash
    /// recognises a replica it already wrote by it.
    pub const SOURCE_SEQ: &str = "s3repl-source-seq";
    /// The source bytes' BLAKE3, hex.
    pub const BLAKE3: &str = "s3repl-blake3";
    /// The source's server-side encryption (`SSE-C`, `aws:kms`).
    pub const SSE: &str = "s3repl-sse";
    /// An SSE-C source's customer-key MD5 (base64).
    pub const SSE_CUSTOMER_KEY_MD5: &str = "s3repl-sse-customer-key-md5";
    /// The destination KMS key a re-encrypted replica's data key is wrapped under.
    pub const KMS_KEY_ID: &str = "s3repl-kms-key-id";
    /// A re-encrypted replica's wrapped data key, hex.
    pub const WRAPPED_DEK: &str = "s3repl-wrapped-dek";
}

pub use s3repl_io::dest::{
    AclGrant, AclPermission, CannedAcl, ContentHeaders, Grantee, LockMode, ObjectAcl, ObjectLock,
    Retention,
};

use crate::config::StorageClass;
use crate::rules::{EventKind, MetadataChanges, Origin, SseKind, VersionEvent};

/// Version byte of the record encoding written today.
pub const RECORD_VERSION: u8 = 2;
/// The first encoding (no extension section), still read (frozen).
pub const RECORD_VERSION_1: u8 = 1;

/// Extension fields of the v2 encoding (frozen values).
mod field {
    pub(super) const CONTENT_TYPE: u8 = 1;
    pub(super) const EXPIRES: u8 = 6;
    pub(super) const ACL: u8 = 7;
    pub(super) const RETENTION: u8 = 8;
    pub(super) const LEGAL_HOLD: u8 = 9;
    pub(super) const CHANGES: u8 = 10;
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The bytes end early.
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    /// A version we do not know.
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    /// A field holds a value outside its set.
    #[error("record field {field} has invalid value {value}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The raw value.
        value: u64,
    },
    /// A text field is not UTF-8.
    #[error("record field {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A field is longer than its u16 length prefix allows (when encoding).
    #[error("record field {0} is longer than 65535 bytes")]
    TooLong(&'static str),
    /// Bytes follow the record.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    /// An extension field this version does not know, or fields out of order.
    #[error("record extension field {0} is unknown or out of order")]
    UnknownField(u8),
}

/// Server-side encryption of the source version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseInfo {
    /// The kind.
    pub kind: SseKind,
    /// SSE-KMS: the KMS key the object's data key is wrapped under. SSE-C: the customer key's
    /// MD5 (base64), as S3 reports it, carried to the replica.
    pub kms_key_id: Option<String>,
    /// SSE-KMS: the wrapped data key (`s3repl_crypto::WrappedKey` encoding).
    pub wrapped_dek: Option<Vec<u8>>,
}

/// One committed object version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionRecord {
    /// Source bucket.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Version id.
    pub version_id: String,
    /// What happened.
    pub operation: EventKind,
    /// Who caused it.
    pub origin: Origin,
    /// Object size in bytes (0 for delete markers).
    pub size: u64,
    /// `ETag`.
    pub etag: String,
    /// BLAKE3 of the stored plaintext, when the server computed it.
    pub blake3: Option<[u8; 32]>,
    /// Commit time, milliseconds since the Unix epoch.
    pub commit_time_ms: u64,
    /// Storage class.
    pub storage_class: StorageClass,
    /// Object tags (for metadata updates: the tags the version was created with).
    pub tags: Vec<(String, String)>,
    /// User metadata (`x-amz-meta-*`), names without the prefix.
    pub user_metadata: Vec<(String, String)>,
    /// Encryption.
    pub sse: SseInfo,
    /// Whether the version is a replica.
    pub is_replica: bool,
    /// Whether it predates the replication configuration.
    pub existing: bool,
    /// The content headers the writer set.
    pub content: ContentHeaders,
    /// The ACL the writer set (`None`: the bucket's default).
    pub acl: Option<ObjectAcl>,
    /// The Object Lock settings.
    pub lock: ObjectLock,
    /// For [`EventKind::MetadataUpdate`]: what changed (the record carries the new values in
    /// `tags`, `acl` and `lock`).
    pub changes: MetadataChanges,
}

const OPS: [EventKind; 4] =
    [EventKind::Put, EventKind::DeleteMarker, EventKind::DeleteVersion, EventKind::MetadataUpdate];
const ORIGINS: [Origin; 2] = [Origin::User, Origin::Lifecycle];
const SSE: [SseKind; 5] =
    [SseKind::None, SseKind::SseS3, SseKind::SseKms, SseKind::DsseKms, SseKind::SseC];

fn index_of<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter().position(|x| x == v).and_then(|i| u8::try_from(i).ok()).unwrap_or(u8::MAX)
}

fn put_str_field(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), RecordError> {
    put_bytes(out, field, s.as_bytes())
}

fn put_bytes(out: &mut Vec<u8>, field: &'static str, b: &[u8]) -> Result<(), RecordError> {
    let len = u16::try_from(b.len()).map_err(|_| RecordError::TooLong(field))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated(field));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        self.take(1, field).map(|b| b.first().copied().unwrap_or(0))
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes(b.try_into().map_err(|_| RecordError::Truncated(field))?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, RecordError> {
        let b = self.take(8, field)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| RecordError::Truncated(field))?))
    }
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], RecordError> {
        let n = self.u16(field)?;
        self.take(usize::from(n), field)
    }
    fn str(&mut self, field: &'static str) -> Result<String, RecordError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| RecordError::NotUtf8(field))
    }
    fn pairs(&mut self, field: &'static str) -> Result<Vec<(String, String)>, RecordError> {
        let n = self.u16(field)?;
        (0..n).map(|_| Ok((self.str(field)?, self.str(field)?))).collect()
    }
}

fn pick<T: Copy>(all: &[T], raw: u8, field: &'static str) -> Result<T, RecordError> {
    all.get(usize::from(raw)).copied().ok_or(RecordError::BadValue { field, value: u64::from(raw) })
}

/// The ACL extension field: `u8 form` then, for a canned ACL, `u8 name`; for grants,
/// `u16 n, n × (u8 permission, u8 grantee kind (id, uri, e-mail), str grantee)`.
fn decode_acl(value: &mut Reader<'_>) -> Result<ObjectAcl, RecordError> {
    match value.u8("acl")? {
        0 => Ok(ObjectAcl::Canned(pick(CannedAcl::ALL, value.u8("acl")?, "canned acl")?)),
        1 => {
            let count = value.u16("acl")?;
            let grants = (0..count)
                .map(|_| {
                    let permission = pick(AclPermission::ALL, value.u8("acl")?, "acl permission")?;
                    let kind = value.u8("acl")?;
                    let who = value.str("acl")?;
                    let grantee = match kind {
                        0 => Grantee::CanonicalUser(who),
                        1 => Grantee::Group(who),
                        2 => Grantee::Email(who),
                        k => {
                            return Err(RecordError::BadValue {
                                field: "acl grantee",
                                value: u64::from(k),
                            });
                        }
                    };
                    Ok(AclGrant { grantee, permission })
                })
                .collect::<Result<_, RecordError>>()?;
            Ok(ObjectAcl::Grants(grants))
        }
        form => Err(RecordError::BadValue { field: "acl form", value: u64::from(form) }),
    }
}

impl VersionRecord {
    /// A new object version (a PUT) of `bucket`/`key`: the fields every record of a PUT needs.
    /// Set the others on the result where the server knows them — above all `blake3` (the
    /// engine then proves the replica's bytes end to end) and `commit_time_ms` (RTC latency,
    /// and whether the version predates its bucket's configuration); the rest (content
    /// headers, tags, metadata, ACL, Object Lock, encryption) as the version was written.
    pub fn put(bucket: &str, key: &str, version_id: &str, size: u64) -> Self {
        VersionRecord {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: version_id.to_owned(),
            operation: EventKind::Put,
            size,
            ..VersionRecord::default()
        }
    }

    /// A delete marker of `bucket`/`key`, with its version id.
    pub fn delete_marker(bucket: &str, key: &str, version_id: &str) -> Self {
        VersionRecord {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: version_id.to_owned(),
            operation: EventKind::DeleteMarker,
            ..VersionRecord::default()
        }
    }

    /// Appends the encoding (version [`RECORD_VERSION`]) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let flags = u8::from(self.is_replica)
            | u8::from(self.existing) << 1
            | u8::from(self.blake3.is_some()) << 2
            | u8::from(self.sse.kms_key_id.is_some()) << 3
            | u8::from(self.sse.wrapped_dek.is_some()) << 4;
        out.extend_from_slice(&[
            RECORD_VERSION,
            index_of(&OPS, &self.operation),
            index_of(&ORIGINS, &self.origin),
            flags,
            index_of(StorageClass::ALL, &self.storage_class),
            index_of(&SSE, &self.sse.kind),
            0,
            0,
        ]);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.commit_time_ms.to_le_bytes());
        if let Some(h) = &self.blake3 {
            out.extend_from_slice(h);
        }
        put_bytes(out, "bucket", self.bucket.as_bytes())?;
        put_bytes(out, "key", self.key.as_bytes())?;
        put_bytes(out, "version_id", self.version_id.as_bytes())?;
        put_bytes(out, "etag", self.etag.as_bytes())?;
        for (field, pairs) in [("tags", &self.tags), ("user_metadata", &self.user_metadata)] {
            let n = u16::try_from(pairs.len()).map_err(|_| RecordError::TooLong(field))?;
            out.extend_from_slice(&n.to_le_bytes());
            for (k, v) in pairs {
                put_bytes(out, field, k.as_bytes())?;
                put_bytes(out, field, v.as_bytes())?;
            }
        }
        if let Some(k) = &self.sse.kms_key_id {
            put_bytes(out, "kms_key_id", k.as_bytes())?;
        }
        if let Some(d) = &self.sse.wrapped_dek {
            put_bytes(out, "wrapped_dek", d)?;
        }
        self.encode_extensions(out)
    }

    /// The v2 extension section: the fields that are set, in field order.
    fn encode_extensions(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let mut fields: Vec<(u8, Vec<u8>)> = Vec::new();
        for (f, value) in (field::CONTENT_TYPE..).zip(self.content_fields()) {
            if let Some(v) = value {
                fields.push((f, v.as_bytes().to_vec()));
            }
        }
        if let Some(acl) = &self.acl {
            let mut v = Vec::new();
            match acl {
                ObjectAcl::Canned(c) => v.extend_from_slice(&[0, index_of(CannedAcl::ALL, c)]),
                ObjectAcl::Grants(grants) => {
                    v.push(1);
                    let n = u16::try_from(grants.len()).map_err(|_| RecordError::TooLong("acl"))?;
                    v.extend_from_slice(&n.to_le_bytes());
                    for g in grants {
                        let (kind, who) = match &g.grantee {
                            Grantee::CanonicalUser(id) => (0, id),
                            Grantee::Group(uri) => (1, uri),
                            Grantee::Email(e) => (2, e),
                        };
                        v.extend_from_slice(&[index_of(AclPermission::ALL, &g.permission), kind]);
                        put_str_field(&mut v, "acl", who)?;
                    }
                }
            }
            fields.push((field::ACL, v));
        }
        if let Some(r) = &self.lock.retention {
            let mut v = vec![index_of(LockMode::ALL, &r.mode)];
            v.extend_from_slice(&r.retain_until_ms.to_le_bytes());
            fields.push((field::RETENTION, v));
        }
        if self.lock.legal_hold {
            fields.push((field::LEGAL_HOLD, Vec::new()));
        }
        if self.changes != MetadataChanges::default() {
            fields.push((field::CHANGES, vec![self.changes.bits()]));
        }
        let n = u16::try_from(fields.len()).map_err(|_| RecordError::TooLong("extensions"))?;
        out.extend_from_slice(&n.to_le_bytes());
        for (f, v) in fields {
            out.push(f);
            put_bytes(out, "extension", &v)?;
        }
        Ok(())
    }

    /// The content headers in extension-field order (fields 1 to 6).
    fn content_fields(&self) -> [&Option<String>; 6] {
        let c = &self.content;
        [
            &c.content_type,
            &c.content_encoding,
            &c.content_disposition,
            &c.content_language,
            &c.cache_control,
            &c.expires,
        ]
    }

    /// Reads the v2 extension section into `self`.
    fn decode_extensions(&mut self, input: &mut Reader<'_>) -> Result<(), RecordError> {
        let count = input.u16("extensions")?;
        let mut last = 0u8;
        for _ in 0..count {
            let tag = input.u8("extension field")?;
            if tag <= last {
                return Err(RecordError::UnknownField(tag));
            }
            last = tag;
            let mut value = Reader(input.bytes("extension")?);
            match tag {
                field::CONTENT_TYPE..=field::EXPIRES => {
                    let text = std::str::from_utf8(value.0)
                        .map_err(|_| RecordError::NotUtf8("content header"))?
                        .to_owned();
                    value.0 = &[];
                    let c = &mut self.content;
                    let slot = match tag - field::CONTENT_TYPE {
                        0 => &mut c.content_type,
                        1 => &mut c.content_encoding,
                        2 => &mut c.content_disposition,
                        3 => &mut c.content_language,
                        4 => &mut c.cache_control,
                        _ => &mut c.expires,
                    };
                    *slot = Some(text);
                }
                field::ACL => self.acl = Some(decode_acl(&mut value)?),
                field::RETENTION => {
                    let mode = pick(LockMode::ALL, value.u8("retention")?, "retention mode")?;
                    let retain_until_ms = value.u64("retention")?;
                    self.lock.retention = Some(Retention { mode, retain_until_ms });
                }
                field::LEGAL_HOLD => self.lock.legal_hold = true,
                field::CHANGES => {
                    let bits = value.u8("changes")?;
                    // The default (a tag change) is never written: accepting it would give one
                    // record two encodings.
                    self.changes = MetadataChanges::from_bits(bits)
                        .filter(|c| *c != MetadataChanges::default())
                        .ok_or(RecordError::BadValue {
                            field: "changes",
                            value: u64::from(bits),
                        })?;
                }
                other => return Err(RecordError::UnknownField(other)),
            }
            if !value.0.is_empty() {
                return Err(RecordError::Trailing(value.0.len()));
            }
        }
        Ok(())
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(64 + self.bucket.len() + self.key.len() + self.etag.len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes one record; the whole input must be the record.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        let version = r.u8("version")?;
        if version != RECORD_VERSION && version != RECORD_VERSION_1 {
            return Err(RecordError::UnknownVersion(version));
        }
        let operation = pick(&OPS, r.u8("operation")?, "operation")?;
        let origin = pick(&ORIGINS, r.u8("origin")?, "origin")?;
        let flags = r.u8("flags")?;
        if flags >> 5 != 0 {
            return Err(RecordError::BadValue { field: "flags", value: u64::from(flags) });
        }
        let storage_class = pick(StorageClass::ALL, r.u8("storage_class")?, "storage_class")?;
        let sse_kind = pick(&SSE, r.u8("sse")?, "sse")?;
        if r.u16("reserved")? != 0 {
            return Err(RecordError::BadValue { field: "reserved", value: 1 });
        }
        let size = r.u64("size")?;
        let commit_time_ms = r.u64("commit_time")?;
        let blake3 = if flags & 4 != 0 {
            let b = r.take(32, "blake3")?;
            Some(b.try_into().map_err(|_| RecordError::Truncated("blake3"))?)
        } else {
            None
        };
        let mut rec = VersionRecord {
            bucket: r.str("bucket")?,
            key: r.str("key")?,
            version_id: r.str("version_id")?,
            etag: r.str("etag")?,
            tags: r.pairs("tags")?,
            user_metadata: r.pairs("user_metadata")?,
            sse: SseInfo {
                kind: sse_kind,
                kms_key_id: if flags & 8 != 0 { Some(r.str("kms_key_id")?) } else { None },
                wrapped_dek: if flags & 16 != 0 {
                    Some(r.bytes("wrapped_dek")?.to_vec())
                } else {
                    None
                },
            },
            operation,
            origin,
            size,
            blake3,
            commit_time_ms,
            storage_class,
            is_replica: flags & 1 != 0,
            existing: flags & 2 != 0,
            ..VersionRecord::default()
        };
        if version == RECORD_VERSION {
            rec.decode_extensions(&mut r)?;
        }
        if !r.0.is_empty() {
            return Err(RecordError::Trailing(r.0.len()));
        }
        Ok(rec)
    }

    /// Calls `f` with the matcher's view of this record.
    pub fn with_event<R>(&self, f: impl FnOnce(&VersionEvent<'_>) -> R) -> R {
        let tags: Vec<(&str, &str)> =
            self.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        f(&VersionEvent {
            bucket: &self.bucket,
            key: &self.key,
            version_id: &self.version_id,
            kind: self.operation,
            tags: &tags,
            sse: self.sse.kind,
            is_replica: self.is_replica,
            existing: self.existing,
            storage_class: self.storage_class,
            origin: self.origin,
            changes: self.changes,
        })
    }
}

/// Appends [`VersionRecord`]s to a log, filed under the bucket and key they carry (the log's
/// own `append` takes them separately, and a mismatch would put a record in another key's
/// partition and break that key's order).
///
/// **The rule:** make the version's bytes durable in the source before appending its record.
/// The engine may read them as soon as the record is durable, and after a crash a record whose
/// bytes were lost replicates as `SrcVersionNotFound`. [`crate::pipeline::LocalVersionStore`]
/// fsyncs each version before `put` returns (its default).
pub trait AppendRecord {
    /// Appends one record; under [`crate::log::Durability::EveryBatch`] it is durable when this
    /// returns.
    fn append_record(&self, record: &VersionRecord) -> Result<crate::log::Position, crate::Error>;

    /// Appends records in one batch (one write per partition, one group commit).
    fn append_records(
        &self,
        records: &[VersionRecord],
    ) -> Result<Vec<crate::log::Position>, crate::Error>;
}

impl AppendRecord for crate::log::LogWriter {
    fn append_record(&self, record: &VersionRecord) -> Result<crate::log::Position, crate::Error> {
        Ok(self.append(&record.bucket, &record.key, &record.to_bytes()?)?)
    }

    fn append_records(
        &self,
        records: &[VersionRecord],
    ) -> Result<Vec<crate::log::Position>, crate::Error> {
        let encoded: Vec<Vec<u8>> =
            records.iter().map(VersionRecord::to_bytes).collect::<Result<_, _>>()?;
        let batch: Vec<(&str, &str, &[u8])> = records
            .iter()
            .zip(&encoded)
            .map(|(r, b)| (r.bucket.as_str(), r.key.as_str(), b.as_slice()))
            .collect();
        Ok(self.append_batch(&batch)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acl() -> impl Strategy<Value = Option<ObjectAcl>> {
        let grant = (0usize..5, 0usize..3, ".{0,20}").prop_map(|(p, kind, who)| AclGrant {
            permission: AclPermission::ALL[p],
            grantee: match kind {
                0 => Grantee::CanonicalUser(who),
                1 => Grantee::Group(who),
                _ => Grantee::Email(who),
            },
        });
        proptest::option::of(prop_oneof![
            (0usize..7).prop_map(|c| ObjectAcl::Canned(CannedAcl::ALL[c])),
            proptest::collection::vec(grant, 0..4).prop_map(ObjectAcl::Grants),
        ])
    }

    fn extensions()
    -> impl Strategy<Value = (ContentHeaders, Option<ObjectAcl>, ObjectLock, MetadataChanges)> {
        let text = || proptest::option::of(".{0,16}");
        (
            (text(), text(), text(), text(), text(), text()),
            acl(),
            proptest::option::of((0usize..2, any::<u64>())),
            any::<bool>(),
            0u8..16,
        )
            .prop_map(|(c, acl, retention, legal_hold, changes)| {
                let (content_type, content_encoding, content_disposition) = (c.0, c.1, c.2);
                let (content_language, cache_control, expires) = (c.3, c.4, c.5);
                (
                    ContentHeaders {
                        content_type,
                        content_encoding,
                        content_disposition,
                        content_language,
                        cache_control,
                        expires,
                    },
                    acl,
                    ObjectLock {
                        retention: retention.map(|(m, retain_until_ms)| Retention {
                            mode: LockMode::ALL[m],
                            retain_until_ms,
                        }),
                        legal_hold,
                    },
                    MetadataChanges::from_bits(changes).unwrap(),
                )
            })
    }

    fn record() -> impl Strategy<Value = VersionRecord> {
        (
            ("[a-z0-9.-]{3,20}", ".{0,40}", "[A-Za-z0-9]{0,32}", "[a-f0-9]{0,34}"),
            (
                0usize..4,
                0usize..2,
                any::<u64>(),
                proptest::option::of(any::<[u8; 32]>()),
                any::<u64>(),
            ),
            (
                0usize..13,
                proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
                proptest::collection::vec((".{0,8}", ".{0,20}"), 0..4),
            ),
            (
                0usize..5,
                proptest::option::of(".{0,30}"),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
                any::<bool>(),
                any::<bool>(),
            ),
            extensions(),
        )
            .prop_map(
                |(
                    (bucket, key, version_id, etag),
                    (op, origin, size, blake3, commit_time_ms),
                    (sc, tags, user_metadata),
                    (sse, kms, dek, is_replica, existing),
                    (content, acl, lock, changes),
                )| VersionRecord {
                    bucket,
                    key,
                    version_id,
                    operation: OPS[op],
                    origin: ORIGINS[origin],
                    size,
                    etag,
                    blake3,
                    commit_time_ms,
                    storage_class: StorageClass::ALL[sc],
                    tags,
                    user_metadata,
                    sse: SseInfo { kind: SSE[sse], kms_key_id: kms, wrapped_dek: dek },
                    is_replica,
                    existing,
                    content,
                    acl,
                    lock,
                    changes,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(r in record()) {
            let bytes = r.to_bytes().unwrap();
            prop_assert_eq!(VersionRecord::decode(&bytes), Ok(r));
        }

        #[test]
        fn every_prefix_and_extension_is_refused(r in record(), extra in 1usize..4) {
            let bytes = r.to_bytes().unwrap();
            for cut in 0..bytes.len() {
                prop_assert!(VersionRecord::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.extend(std::iter::repeat_n(0u8, extra));
            prop_assert_eq!(VersionRecord::decode(&longer), Err(RecordError::Trailing(extra)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = VersionRecord::decode(&b);
        }
    }

    #[test]
    fn extension_fields_are_canonical_and_unknown_ones_refused() {
        let mut r = VersionRecord {
            content: ContentHeaders {
                cache_control: Some("no-cache".into()),
                ..Default::default()
            },
            lock: ObjectLock { retention: None, legal_hold: true },
            ..VersionRecord::default()
        };
        let b = r.to_bytes().unwrap();
        // The section is the record's tail: two fields, Cache-Control (5) then legal hold (9).
        let tail = [2, 0, 5, 8, 0, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e', 9, 0, 0];
        assert!(b.ends_with(&tail), "{b:?}");
        let at = b.len() - tail.len();
        // Out of order (9 then 5) and unknown (11) fields are errors, not skipped.
        let mut swapped = b[..at].to_vec();
        swapped.extend_from_slice(&[2, 0, 9, 0, 0, 5, 1, 0, b'x']);
        assert_eq!(VersionRecord::decode(&swapped), Err(RecordError::UnknownField(5)));
        let mut unknown = b[..at].to_vec();
        unknown.extend_from_slice(&[1, 0, 11, 0, 0]);
        assert_eq!(VersionRecord::decode(&unknown), Err(RecordError::UnknownField(11)));
        // A value longer than its field reads is trailing garbage.
        let mut long = b[..at].to_vec();
        long.extend_from_slice(&[1, 0, 9, 1, 0, 0]);
        assert_eq!(VersionRecord::decode(&long), Err(RecordError::Trailing(1)));
        // The default change set (tags) is not written, and refused when written (found by
        // the fuzzer: one record, two encodings); others are written.
        let mut explicit = b[..at].to_vec();
        explicit.extend_from_slice(&[1, 0, 10, 1, 0, 1]);
        assert_eq!(
            VersionRecord::decode(&explicit),
            Err(RecordError::BadValue { field: "changes", value: 1 })
        );
        r.changes = MetadataChanges::ACL | MetadataChanges::LEGAL_HOLD;
        assert!(r.to_bytes().unwrap().ends_with(&[9, 0, 0, 10, 1, 0, 10]));
    }

    #[test]
    fn bad_enums_are_typed_errors() {
        let mut b = VersionRecord::default().to_bytes().unwrap();
        b[1] = 9;
        assert_eq!(
            VersionRecord::decode(&b),
            Err(RecordError::BadValue { field: "operation", value: 9 })
        );
        b[1] = 0;
        b[0] = 3;
        assert_eq!(VersionRecord::decode(&b), Err(RecordError::UnknownVersion(3)));
    }
}
