//! `s3repl-crypto`: encrypted replicas of SSE-KMS objects.
//!
//! - [`KeyStore`]: where master keys come from (embedders plug in their KMS); [`FileKeyring`]
//!   for standalone use (owner-only file, aliases, zeroized material).
//! - [`DataKey`] / [`WrappedKey`]: a fresh data key per object, wrapped with AES-256-GCM under
//!   a master key, bound to the key id and the object identity.
//! - [`Sealer`] / [`Opener`] / [`ReEncryptor`] and their buffered forms: chunked streaming AEAD
//!   over `bytes`, with truncation, reordering, duplication and splicing detected.
//! - [`PlaintextDigest`]: BLAKE3 of the plaintext while streaming, whole object and per part.
//!
//! ```
//! use bytes::BytesMut;
//! use s3repl_crypto::{DataKey, Opener, Sealer};
//!
//! let dek = DataKey::generate()?;
//! let mut sealer = Sealer::new(&dek, 4)?;
//! let header = sealer.header_bytes();
//! let a = sealer.seal(BytesMut::from(&b"abcd"[..]), false)?;
//! let b = sealer.seal(BytesMut::from(&b"ef"[..]), true)?;
//! let mut opener = Opener::new(&dek, &header)?;
//! assert_eq!(&opener.open(BytesMut::from(&a[..]), false)?[..], b"abcd");
//! assert_eq!(&opener.open(BytesMut::from(&b[..]), true)?[..], b"ef");
//! # Ok::<(), s3repl_crypto::Error>(())
//! ```
//!
//! This crate is a leaf: no other s3repl crate, no async runtime.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

mod aead;
mod digest;
mod envelope;
mod error;
mod keys;
mod stream;

pub use aead::{AeadKey, KEY_LEN, NONCE_LEN, TAG_LEN};
pub use digest::{ObjectDigest, PlaintextDigest};
pub use envelope::{DataKey, ObjectIdentity, WRAPPED_KEY_MAGIC, WRAPPED_KEY_VERSION, WrappedKey};
pub use error::Error;
pub use keys::{
    FileKeyring, KeyStore, MasterKey, is_alias_arn, is_key_arn, related_multi_region_arn,
};
pub use stream::{
    ALGORITHM_AES_256_GCM, DEFAULT_PACKAGE_SIZE, DecryptStream, EncryptStream, HEADER_LEN,
    MAX_PACKAGE_SIZE, MAX_PACKAGES, NONCE_PREFIX_LEN, Opener, ReEncryptStream, ReEncryptor,
    STREAM_MAGIC, STREAM_VERSION, Sealer, StreamHeader,
};
