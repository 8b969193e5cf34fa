//! AES-256-GCM behind our own type, so the implementation is a cargo feature: `aws-lc`
//! (default, fastest measured here) or `rustcrypto` (the `aes-gcm` crate, pure Rust).

#[cfg(all(feature = "aws-lc", feature = "rustcrypto"))]
compile_error!("enable exactly one AES-GCM backend: `aws-lc` or `rustcrypto`");
#[cfg(not(any(feature = "aws-lc", feature = "rustcrypto")))]
compile_error!("enable one AES-GCM backend: `aws-lc` or `rustcrypto`");

/// AES-GCM nonce length (frozen: part of every format we write).
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length (frozen).
pub const TAG_LEN: usize = 16;
/// AES-256 key length.
pub const KEY_LEN: usize = 32;

/// An AES-256-GCM key schedule. The backend zeroizes or drops its own schedule.
pub struct AeadKey {
    #[cfg(feature = "aws-lc")]
    inner: aws_lc_rs::aead::LessSafeKey,
    #[cfg(feature = "rustcrypto")]
    inner: aes_gcm::Aes256Gcm,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

impl AeadKey {
    /// Expands a 256-bit key.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        #[cfg(feature = "aws-lc")]
        {
            // A 32-byte key is always the right length for AES_256_GCM.
            let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key)
                .unwrap_or_else(|_| unreachable!("AES-256 key length is fixed"));
            AeadKey { inner: aws_lc_rs::aead::LessSafeKey::new(unbound) }
        }
        #[cfg(feature = "rustcrypto")]
        {
            use aes_gcm::KeyInit;
            AeadKey { inner: aes_gcm::Aes256Gcm::new(&(*key).into()) }
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    #[inline]
    pub fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{Aad, Nonce};
            // Sealing fails only when the input exceeds GCM's 64 GiB limit; our callers seal
            // one package or one key at a time.
            match self.inner.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                buf,
            ) {
                Ok(tag) => {
                    let mut out = [0u8; TAG_LEN];
                    for (o, t) in out.iter_mut().zip(tag.as_ref()) {
                        *o = *t;
                    }
                    out
                }
                Err(_) => unreachable!("GCM input limit exceeded by one package"),
            }
        }
        #[cfg(feature = "rustcrypto")]
        {
            use aes_gcm::AeadInOut;
            match self.inner.encrypt_inout_detached(&nonce.into(), aad, buf.into()) {
                Ok(tag) => tag.into(),
                Err(_) => unreachable!("GCM input limit exceeded by one package"),
            }
        }
    }

    /// Decrypts `input` into `out` (the same length); `false` (and unspecified contents of
    /// `out`) if authentication fails or the lengths differ. Saves the copy that decrypting a
    /// shared buffer in place would need first.
    #[inline]
    #[must_use]
    pub fn open_into(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        input: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> bool {
        if input.len() != out.len() {
            return false;
        }
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{Aad, Nonce};
            self.inner
                .open_separate_gather(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    input,
                    tag,
                    out,
                )
                .is_ok()
        }
        #[cfg(feature = "rustcrypto")]
        {
            use aes_gcm::AeadInOut;
            use aes_gcm::aead::inout::InOutBuf;
            let Ok(buf) = InOutBuf::new(input, out) else { return false };
            self.inner.decrypt_inout_detached(&nonce.into(), aad, buf, &(*tag).into()).is_ok()
        }
    }

    /// Decrypts `buf` in place; `false` (and unspecified contents) if authentication fails.
    #[inline]
    #[must_use]
    pub fn open(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{Aad, Nonce};
            self.inner
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    tag,
                    buf,
                )
                .is_ok()
        }
        #[cfg(feature = "rustcrypto")]
        {
            use aes_gcm::AeadInOut;
            self.inner
                .decrypt_inout_detached(&nonce.into(), aad, buf.into(), &(*tag).into())
                .is_ok()
        }
    }
}
