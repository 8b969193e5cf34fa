//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong with keys, envelopes and encrypted streams. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No key with this id or alias.
    #[error("unknown KMS key {0:?}")]
    UnknownKey(String),
    /// A multi-Region key's related key was asked for, and there is none: the key is not a
    /// multi-Region key (`key/mrk-…`), or it has no replica in that Region.
    #[error("KMS key {key_id:?} has no related multi-Region key in {region:?}")]
    NoRelatedKey {
        /// The key whose relative was asked for.
        key_id: String,
        /// The Region asked for.
        region: String,
    },
    /// The keyring file is readable by others than its owner.
    #[error(
        "keyring file {path} has mode {mode:o}: it must be readable by its owner only (chmod 600)"
    )]
    KeyringPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The keyring file could not be read or parsed.
    #[error("keyring file {path}: {reason}")]
    Keyring {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key material).
        reason: String,
    },
    /// A key could not be added to a keyring: its id or an alias is not a KMS ARN, or a name is
    /// defined twice.
    #[error("{0}")]
    KeyName(String),
    /// A wrapped data key did not unwrap: wrong master key, or it belongs to another object.
    #[error("the data key does not unwrap under key {key_id:?} for this object")]
    Unwrap {
        /// The master key id the wrap names.
        key_id: String,
    },
    /// A wrapped key or stream header is not in a format we know.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// `"wrapped key"` or `"stream header"`.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A package failed authentication: flipped, swapped, reordered, duplicated or spliced
    /// data, or the wrong data key.
    #[error("package {package} failed authentication")]
    Tampered {
        /// The package index.
        package: u64,
    },
    /// The stream ended before its final package (truncated).
    #[error("the encrypted stream is truncated after {packages} packages")]
    Truncated {
        /// Packages read before the end.
        packages: u64,
    },
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}
