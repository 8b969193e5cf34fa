//! The record schema carried in the log: one committed object version, as the embedding server
//! appends it. The log itself treats records as opaque bytes; this module owns their layout.
//!
//! Encoding v1 (little-endian, see `docs/design/log-format.md`):
//!
//! ```text
//! u8 version (=1) | u8 operation | u8 origin | u8 flags | u8 storage class | u8 SSE kind | u16 0
//! u64 size | u64 commit time (ms since the Unix epoch) | [32] BLAKE3 (if flag)
//! str bucket | str key | str version id | str ETag
//! u16 n, n × (str, str) tags | u16 m, m × (str, str) user metadata
//! str KMS key id (if flag) | bytes wrapped data key (if flag)
//! ```
//!
//! where `str` and `bytes` are a u16 length then the bytes. Flags: bit 0 replica, bit 1
//! existing (predates the configuration), bit 2 BLAKE3 present, bit 3 KMS key id present, bit 4
//! wrapped data key present.

use crate::config::StorageClass;
use crate::rules::{EventKind, Origin, SseKind, VersionEvent};

/// Version byte of the record encoding (frozen for v1).
pub const RECORD_VERSION: u8 = 1;

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
}

const OPS: [EventKind; 4] =
    [EventKind::Put, EventKind::DeleteMarker, EventKind::DeleteVersion, EventKind::MetadataUpdate];
const ORIGINS: [Origin; 2] = [Origin::User, Origin::Lifecycle];
const SSE: [SseKind; 5] =
    [SseKind::None, SseKind::SseS3, SseKind::SseKms, SseKind::DsseKms, SseKind::SseC];

fn index_of<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter().position(|x| x == v).and_then(|i| u8::try_from(i).ok()).unwrap_or(u8::MAX)
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

impl VersionRecord {
    /// Appends the v1 encoding to `out`.
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
        Ok(())
    }

    /// The v1 encoding as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(64 + self.bucket.len() + self.key.len() + self.etag.len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes one record; the whole input must be the record.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        let version = r.u8("version")?;
        if version != RECORD_VERSION {
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
        let rec = VersionRecord {
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
        };
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        )
            .prop_map(
                |(
                    (bucket, key, version_id, etag),
                    (op, origin, size, blake3, commit_time_ms),
                    (sc, tags, user_metadata),
                    (sse, kms, dek, is_replica, existing),
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
    fn bad_enums_are_typed_errors() {
        let mut b = VersionRecord::default().to_bytes().unwrap();
        b[1] = 9;
        assert_eq!(
            VersionRecord::decode(&b),
            Err(RecordError::BadValue { field: "operation", value: 9 })
        );
        b[1] = 0;
        b[0] = 2;
        assert_eq!(VersionRecord::decode(&b), Err(RecordError::UnknownVersion(2)));
    }
}
