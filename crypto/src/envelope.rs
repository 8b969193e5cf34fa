//! Envelope keys: a fresh data key (DEK) per object, wrapped with AES-256-GCM under a master
//! key, the wrap bound to the master key id and the object identity.
//!
//! Wrapped key encoding (v1; frozen, see `docs/design/envelope-format.md`):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `S3RK` |
//! | 1 | version `1` |
//! | 2 | key id length `n`, little-endian |
//! | n | key id (canonical KMS key ARN, UTF-8) |
//! | 12 | nonce (random) |
//! | 48 | wrapped DEK: 32 bytes ciphertext + 16 bytes tag |
//!
//! The wrap's associated data is `"s3repl/dek/v1"` followed by the key id, bucket, key and
//! version id, each prefixed by its length (u32 little-endian), so a wrapped key moved to
//! another object, or relabelled with another key id, does not unwrap.

use std::fmt;

use zeroize::Zeroizing;

use crate::aead::{AeadKey, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::error::Error;
use crate::keys::{KeyStore, MasterKey, random_key};

/// Magic of an encoded wrapped key (frozen).
pub const WRAPPED_KEY_MAGIC: [u8; 4] = *b"S3RK";
/// Version of the wrapped key encoding (frozen for v1).
pub const WRAPPED_KEY_VERSION: u8 = 1;
const WRAP_AAD_LABEL: &[u8] = b"s3repl/dek/v1";

/// Which object a data key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectIdentity<'a> {
    /// Bucket name.
    pub bucket: &'a str,
    /// Object key.
    pub key: &'a str,
    /// Version id.
    pub version_id: &'a str,
}

/// A per-object 256-bit data key; wiped on drop, never printed.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A fresh key from the OS random number generator.
    pub fn generate() -> Result<Self, Error> {
        random_key().map(DataKey)
    }

    /// A key from known bytes (tests, and embedders that manage DEKs themselves).
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        DataKey(bytes)
    }

    pub(crate) fn aead(&self) -> AeadKey {
        AeadKey::new(&self.0)
    }

    /// Wraps this key under `master` for `object`.
    pub fn wrap(
        &self,
        master: &MasterKey,
        object: ObjectIdentity<'_>,
    ) -> Result<WrappedKey, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
        let mut sealed = [0u8; KEY_LEN + TAG_LEN];
        let (ct, tag_out) = sealed.split_at_mut(KEY_LEN);
        ct.copy_from_slice(&self.0[..]);
        let tag = AeadKey::new(master.material()).seal(nonce, &wrap_aad(master.id(), object), ct);
        tag_out.copy_from_slice(&tag);
        Ok(WrappedKey { key_id: master.id().to_owned(), nonce, sealed })
    }
}

fn push_field(out: &mut Vec<u8>, field: &str) {
    out.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(field.as_bytes());
}

fn wrap_aad(key_id: &str, object: ObjectIdentity<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(
        WRAP_AAD_LABEL.len()
            + 16
            + key_id.len()
            + object.bucket.len()
            + object.key.len()
            + object.version_id.len(),
    );
    aad.extend_from_slice(WRAP_AAD_LABEL);
    for field in [key_id, object.bucket, object.key, object.version_id] {
        push_field(&mut aad, field);
    }
    aad
}

/// A data key wrapped under a master key, as stored beside the object.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    key_id: String,
    nonce: [u8; NONCE_LEN],
    sealed: [u8; KEY_LEN + TAG_LEN],
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed { what: "wrapped key", reason: reason.into() }
}

impl WrappedKey {
    /// The master key id it is wrapped under.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Unwraps with the master key named by [`WrappedKey::key_id`] from `store`.
    pub fn unwrap_with(
        &self,
        store: &dyn KeyStore,
        object: ObjectIdentity<'_>,
    ) -> Result<DataKey, Error> {
        let master = store.master_key(&self.key_id)?;
        self.unwrap_key(&master, object)
    }

    /// Unwraps with a given master key.
    pub fn unwrap_key(
        &self,
        master: &MasterKey,
        object: ObjectIdentity<'_>,
    ) -> Result<DataKey, Error> {
        let fail = || Error::Unwrap { key_id: self.key_id.clone() };
        if master.id() != self.key_id {
            return Err(fail());
        }
        let mut buf = Zeroizing::new([0u8; KEY_LEN]);
        let (ct, tag) = self.sealed.split_at(KEY_LEN);
        buf.copy_from_slice(ct);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| fail())?;
        let ok = AeadKey::new(master.material()).open(
            self.nonce,
            &wrap_aad(&self.key_id, object),
            &mut buf[..],
            &tag,
        );
        if ok { Ok(DataKey(buf)) } else { Err(fail()) }
    }

    /// The v1 encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.key_id.len() + NONCE_LEN + KEY_LEN + TAG_LEN);
        out.extend_from_slice(&WRAPPED_KEY_MAGIC);
        out.push(WRAPPED_KEY_VERSION);
        out.extend_from_slice(&u16::try_from(self.key_id.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Decodes the v1 encoding; the whole input must be one wrapped key.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let rest =
            bytes.strip_prefix(&WRAPPED_KEY_MAGIC[..]).ok_or_else(|| malformed("bad magic"))?;
        let (&version, rest) = rest.split_first().ok_or_else(|| malformed("truncated"))?;
        if version != WRAPPED_KEY_VERSION {
            return Err(malformed(format!("unknown version {version}")));
        }
        let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(|| malformed("truncated"))?;
        let len = usize::from(u16::from_le_bytes(*len));
        if rest.len() != len + NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(malformed(format!(
                "expected {} bytes after the key id length, got {}",
                len + NONCE_LEN + KEY_LEN + TAG_LEN,
                rest.len()
            )));
        }
        let (id, rest) = rest.split_at(len);
        let key_id =
            std::str::from_utf8(id).map_err(|_| malformed("key id is not UTF-8"))?.to_owned();
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        Ok(WrappedKey {
            key_id,
            nonce: nonce.try_into().map_err(|_| malformed("nonce"))?,
            sealed: sealed.try_into().map_err(|_| malformed("sealed key"))?,
        })
    }
}
