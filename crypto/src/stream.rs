//! Streaming AEAD: object data in fixed-size packages, each sealed with AES-256-GCM under the
//! object's data key. Byte layout in `docs/design/envelope-format.md`.
//!
//! A stream is a 20-byte header followed by packages. Every package but the last holds exactly
//! `package_size` plaintext bytes; the last holds 0..=`package_size` (an empty object is one
//! empty last package). Each sealed package is its ciphertext followed by a 16-byte tag. The
//! nonce of package `i` is `prefix (7 bytes) || i (u32, big-endian) || last flag (1 byte)`, and
//! each package's associated data is the header. Hence:
//! - reordering, duplicating or dropping packages changes a counter → authentication fails;
//! - truncation at a package boundary leaves no package with the last flag → detected;
//! - packages from another object were sealed under another data key → authentication fails;
//! - a header edit (package size, prefix) changes every package's AAD → authentication fails.
//!
//! Two API levels: [`Sealer`] / [`Opener`] / [`ReEncryptor`] work on one package at a time,
//! in place in a caller's `BytesMut` (zero copies); [`EncryptStream`], [`DecryptStream`] and
//! [`ReEncryptStream`] accept arbitrary chunks and hold at most two packages.

use bytes::{Bytes, BytesMut};

use crate::aead::{AeadKey, NONCE_LEN, TAG_LEN};
use crate::digest::PlaintextDigest;
use crate::envelope::DataKey;
use crate::error::Error;

/// Stream magic (frozen).
pub const STREAM_MAGIC: [u8; 4] = *b"S3RE";
/// Stream format version (frozen for v1).
pub const STREAM_VERSION: u8 = 1;
/// Algorithm byte for AES-256-GCM (frozen).
pub const ALGORITHM_AES_256_GCM: u8 = 1;
/// Header length (frozen for v1).
pub const HEADER_LEN: usize = 20;
/// Length of the random per-object nonce prefix (frozen).
pub const NONCE_PREFIX_LEN: usize = 7;
/// Default plaintext bytes per package: 64 KiB amortizes the tag and per-call cost while
/// keeping a ranged read's overhead under one package.
pub const DEFAULT_PACKAGE_SIZE: u32 = 64 * 1024;
/// Largest package size accepted when reading a header (bounds memory per stream).
pub const MAX_PACKAGE_SIZE: u32 = 16 * 1024 * 1024;
/// Most packages in one stream (the counter is 32 bits).
pub const MAX_PACKAGES: u64 = 1 << 32;

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed { what: "stream header", reason: reason.into() }
}

/// The stream header: package size and nonce prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    package_size: u32,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl StreamHeader {
    /// A header with a fresh random nonce prefix.
    pub fn random(package_size: u32) -> Result<Self, Error> {
        if package_size == 0 || package_size > MAX_PACKAGE_SIZE {
            return Err(malformed(format!(
                "package size {package_size} outside 1..={MAX_PACKAGE_SIZE}"
            )));
        }
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        getrandom::fill(&mut nonce_prefix).map_err(|e| Error::Random(e.to_string()))?;
        Ok(StreamHeader { package_size, nonce_prefix })
    }

    /// Plaintext bytes per package.
    pub fn package_size(&self) -> u32 {
        self.package_size
    }

    /// Sealed bytes per full package (plaintext + tag).
    pub fn sealed_package_len(&self) -> usize {
        self.package_size as usize + TAG_LEN
    }

    /// The 20-byte encoding: magic, version, algorithm, 2 reserved zero bytes, package size
    /// (u32 little-endian), nonce prefix, 1 reserved zero byte.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let mut w = h.iter_mut();
        let size = self.package_size.to_le_bytes();
        let fields: [&[u8]; 6] = [
            &STREAM_MAGIC,
            &[STREAM_VERSION, ALGORITHM_AES_256_GCM],
            &[0, 0],
            &size,
            &self.nonce_prefix,
            &[0],
        ];
        for b in fields.into_iter().flatten() {
            if let Some(slot) = w.next() {
                *slot = *b;
            }
        }
        h
    }

    /// Parses a header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let h: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed(format!("need {HEADER_LEN} bytes, got {}", bytes.len())))?;
        let (magic, rest) = h.split_at(4);
        if magic != STREAM_MAGIC {
            return Err(malformed("bad magic"));
        }
        let [version, alg, r0, r1, s0, s1, s2, s3, rest @ ..] = rest else {
            return Err(malformed("truncated"));
        };
        if *version != STREAM_VERSION {
            return Err(malformed(format!("unknown version {version}")));
        }
        if *alg != ALGORITHM_AES_256_GCM {
            return Err(malformed(format!("unknown algorithm {alg}")));
        }
        let package_size = u32::from_le_bytes([*s0, *s1, *s2, *s3]);
        let (prefix, reserved) = rest.split_at(NONCE_PREFIX_LEN);
        if *r0 != 0 || *r1 != 0 || reserved != [0] {
            return Err(malformed("reserved bytes are not zero"));
        }
        if package_size == 0 || package_size > MAX_PACKAGE_SIZE {
            return Err(malformed(format!(
                "package size {package_size} outside 1..={MAX_PACKAGE_SIZE}"
            )));
        }
        let nonce_prefix = prefix.try_into().map_err(|_| malformed("nonce prefix"))?;
        Ok(StreamHeader { package_size, nonce_prefix })
    }

    fn nonce(&self, index: u64, last: bool) -> Result<[u8; NONCE_LEN], Error> {
        let counter = u32::try_from(index).map_err(|_| Error::Tampered { package: index })?;
        let mut n = [0u8; NONCE_LEN];
        let (prefix, rest) = n.split_at_mut(NONCE_PREFIX_LEN);
        prefix.copy_from_slice(&self.nonce_prefix);
        let (ctr, flag) = rest.split_at_mut(4);
        ctr.copy_from_slice(&counter.to_be_bytes());
        if let Some(f) = flag.first_mut() {
            *f = u8::from(last);
        }
        Ok(n)
    }

    /// Number of packages for a plaintext of `len` bytes (at least one).
    pub fn package_count(&self, len: u64) -> u64 {
        len.div_ceil(u64::from(self.package_size)).max(1)
    }

    /// Total encrypted length (header included) of a plaintext of `len` bytes.
    pub fn ciphertext_len(&self, len: u64) -> u64 {
        HEADER_LEN as u64 + len + self.package_count(len) * TAG_LEN as u64
    }

    /// Plaintext length of an encrypted stream of `len` bytes (header included).
    pub fn plaintext_len(&self, len: u64) -> Result<u64, Error> {
        let body = len.checked_sub(HEADER_LEN as u64).ok_or(Error::Truncated { packages: 0 })?;
        let sealed = self.sealed_package_len() as u64;
        let (full, rem) = (body / sealed, body % sealed);
        match (full, rem) {
            (0, r) if r < TAG_LEN as u64 => Err(Error::Truncated { packages: 0 }),
            (f, 0) => Ok(f * u64::from(self.package_size)),
            (_, r) if r < TAG_LEN as u64 => Err(Error::Truncated { packages: full }),
            (f, r) => Ok(f * u64::from(self.package_size) + r - TAG_LEN as u64),
        }
    }

    /// Byte range (from the start of the stream) of sealed package `index`, for ranged reads.
    pub fn package_range(&self, index: u64, total_plaintext: u64) -> std::ops::Range<u64> {
        let sealed = self.sealed_package_len() as u64;
        let start = HEADER_LEN as u64 + index * sealed;
        let last = self.package_count(total_plaintext) - 1;
        let len = if index < last {
            sealed
        } else {
            total_plaintext - last * u64::from(self.package_size) + TAG_LEN as u64
        };
        start..start + len
    }
}

/// Seals packages in order, in place.
#[derive(Debug)]
pub struct Sealer {
    key: AeadKey,
    header: StreamHeader,
    header_bytes: [u8; HEADER_LEN],
    next: u64,
    finished: bool,
}

impl Sealer {
    /// A sealer for a new stream with a fresh nonce prefix.
    pub fn new(dek: &DataKey, package_size: u32) -> Result<Self, Error> {
        let header = StreamHeader::random(package_size)?;
        Ok(Sealer {
            key: dek.aead(),
            header,
            header_bytes: header.encode(),
            next: 0,
            finished: false,
        })
    }

    /// The stream header to write before the first package.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// The encoded header.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        self.header_bytes
    }

    /// Seals the next package in place and appends its tag. `buf` holds exactly
    /// `package_size` bytes, or (last package) at most that many; reserve [`crate::TAG_LEN`]
    /// spare capacity to avoid a reallocation.
    pub fn seal(&mut self, mut buf: BytesMut, last: bool) -> Result<Bytes, Error> {
        let tag = self.seal_in_place(&mut buf, last)?;
        buf.extend_from_slice(&tag);
        Ok(buf.freeze())
    }

    /// Seals the next package's plaintext `body` in place and returns its tag (which follows
    /// the ciphertext in the stream). Same size rules as [`Sealer::seal`].
    pub fn seal_in_place(&mut self, body: &mut [u8], last: bool) -> Result<[u8; TAG_LEN], Error> {
        let size = self.header.package_size as usize;
        if self.finished || body.len() > size || (!last && body.len() != size) {
            return Err(Error::Malformed {
                what: "stream header",
                reason: format!(
                    "package {} of {} bytes does not fit a {size}-byte package stream{}",
                    self.next,
                    body.len(),
                    if self.finished { " that is already finished" } else { "" }
                ),
            });
        }
        let tag = self.key.seal(self.header.nonce(self.next, last)?, &self.header_bytes, body);
        self.next += 1;
        self.finished = last;
        Ok(tag)
    }
}

/// Opens packages, in order or at random, in place.
#[derive(Debug)]
pub struct Opener {
    key: AeadKey,
    header: StreamHeader,
    header_bytes: [u8; HEADER_LEN],
    next: u64,
    finished: bool,
}

impl Opener {
    /// An opener for a stream starting with `header` (at least [`HEADER_LEN`] bytes).
    pub fn new(dek: &DataKey, header: &[u8]) -> Result<Self, Error> {
        let parsed = StreamHeader::parse(header)?;
        Ok(Opener {
            key: dek.aead(),
            header: parsed,
            header_bytes: parsed.encode(),
            next: 0,
            finished: false,
        })
    }

    /// The stream's header.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// Opens the next package in place (tag stripped).
    pub fn open(&mut self, buf: BytesMut, last: bool) -> Result<Bytes, Error> {
        if self.finished {
            return Err(Error::Tampered { package: self.next });
        }
        let plain = self.open_at(self.next, buf, last)?;
        self.next += 1;
        self.finished = last;
        Ok(plain)
    }

    /// Opens package `index` (random access for ranged reads); `last` says whether it is the
    /// stream's final package (see [`StreamHeader::package_count`]).
    pub fn open_at(&self, index: u64, mut buf: BytesMut, last: bool) -> Result<Bytes, Error> {
        let body_len = self.open_in_place(index, &mut buf, last)?;
        buf.truncate(body_len);
        Ok(buf.freeze())
    }

    /// Opens sealed package `index` (its ciphertext then its tag, as in the stream) in place;
    /// returns the plaintext's length: the plaintext is `sealed[..len]`, the tag bytes after it
    /// are left as they were.
    pub fn open_in_place(&self, index: u64, sealed: &mut [u8], last: bool) -> Result<usize, Error> {
        let body_len = self.body_len(index, sealed.len(), last)?;
        let (body, tag) = sealed.split_at_mut(body_len);
        let tag: &[u8; TAG_LEN] =
            (&*tag).try_into().map_err(|_| Error::Tampered { package: index })?;
        if self.key.open(self.header.nonce(index, last)?, &self.header_bytes, body, tag) {
            Ok(body_len)
        } else {
            Err(Error::Tampered { package: index })
        }
    }

    /// Opens sealed package `index` from `sealed` into `out` (at least the plaintext's length);
    /// returns the plaintext's length: the plaintext is `out[..len]`.
    pub fn open_into(
        &self,
        index: u64,
        sealed: &[u8],
        out: &mut [u8],
        last: bool,
    ) -> Result<usize, Error> {
        let tampered = Error::Tampered { package: index };
        let body_len = self.body_len(index, sealed.len(), last)?;
        let (body, tag) = sealed.split_at(body_len);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Tampered { package: index })?;
        let out = out.get_mut(..body_len).ok_or(Error::Tampered { package: index })?;
        if self.key.open_into(self.header.nonce(index, last)?, &self.header_bytes, body, tag, out) {
            Ok(body_len)
        } else {
            Err(tampered)
        }
    }

    /// The plaintext length of sealed package `index` of `sealed_len` bytes, if that length
    /// fits the stream.
    fn body_len(&self, index: u64, sealed_len: usize, last: bool) -> Result<usize, Error> {
        let body_len =
            sealed_len.checked_sub(TAG_LEN).ok_or(Error::Truncated { packages: index })?;
        if body_len > self.header.package_size as usize
            || (!last && body_len != self.header.package_size as usize)
        {
            return Err(Error::Tampered { package: index });
        }
        Ok(body_len)
    }
}

/// Where [`ReEncryptor`] reads packages and writes the replica's.
enum Packages<'a> {
    /// The same buffer.
    InPlace(&'a mut [u8]),
    /// From the first buffer into the second (of the same length).
    Into(&'a [u8], &'a mut [u8]),
}

/// Decrypts under the source data key and seals under a fresh one, package by package in the
/// same buffer, hashing the plaintext on the way. The replica keeps the source's package size.
#[derive(Debug)]
pub struct ReEncryptor {
    opener: Opener,
    sealer: Sealer,
    digest: PlaintextDigest,
}

impl ReEncryptor {
    /// Re-encrypts the stream whose header is `source_header` from `source` to `replica`.
    pub fn new(
        source: &DataKey,
        source_header: &[u8],
        replica: &DataKey,
        per_part_digest: bool,
    ) -> Result<Self, Error> {
        let opener = Opener::new(source, source_header)?;
        let sealer = Sealer::new(replica, opener.header.package_size)?;
        Ok(ReEncryptor { opener, sealer, digest: PlaintextDigest::new(per_part_digest) })
    }

    /// The replica stream's header.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        self.sealer.header_bytes()
    }

    /// The source stream's header (as given to [`ReEncryptor::new`]: a parsed header has one
    /// encoding).
    pub fn source_header_bytes(&self) -> [u8; HEADER_LEN] {
        self.opener.header_bytes
    }

    /// Re-encrypts the next sealed package in place.
    pub fn package(&mut self, sealed: BytesMut, last: bool) -> Result<Bytes, Error> {
        let plain = self.opener.open(sealed, last)?;
        self.digest.update(&plain);
        // `plain` is the only handle on the buffer, so it converts back without copying.
        let buf = plain.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        self.sealer.seal(buf, last)
    }

    /// Re-encrypts the stream's next sealed packages, laid end to end in `buf`, in place: each
    /// package's ciphertext and tag become the replica's, which have the same length, so a
    /// part of the source stream becomes the same part of the replica stream without a copy.
    /// Every package in `buf` is full but, when `last`, the final one, which ends the stream.
    /// Returns the plaintext bytes the packages held; after an error `buf` holds unspecified
    /// bytes (the package that failed to open, zeros) and the stream cannot go on.
    pub fn packages_in_place(&mut self, buf: &mut [u8], last: bool) -> Result<u64, Error> {
        self.packages(Packages::InPlace(buf), last)
    }

    /// Like [`ReEncryptor::packages_in_place`], reading the packages from `sealed` and writing
    /// the replica's into `out` (of the same length), so a buffer shared with others (a cache,
    /// a slice of a larger read) is re-encrypted without first being copied. After an error,
    /// `out` holds unspecified bytes and the stream cannot go on.
    pub fn packages_into(
        &mut self,
        sealed: &[u8],
        out: &mut [u8],
        last: bool,
    ) -> Result<u64, Error> {
        if sealed.len() != out.len() {
            return Err(Error::Malformed {
                what: "stream packages",
                reason: format!("{} bytes to re-encrypt into {}", sealed.len(), out.len()),
            });
        }
        self.packages(Packages::Into(sealed, out), last)
    }

    fn packages(&mut self, mut packages: Packages<'_>, last: bool) -> Result<u64, Error> {
        let sealed_len = self.opener.header.sealed_package_len();
        let total = match &packages {
            Packages::InPlace(b) => b.len(),
            Packages::Into(s, _) => s.len(),
        };
        if last && total == 0 {
            return Err(Error::Truncated { packages: self.opener.next });
        }
        let count = total.div_ceil(sealed_len);
        let mut plaintext = 0u64;
        for i in 0..count {
            let at = i * sealed_len;
            let range = at..total.min(at + sealed_len);
            let index = self.opener.next;
            let is_last = last && i + 1 == count;
            if !is_last && range.len() != sealed_len {
                return Err(Error::Malformed {
                    what: "stream packages",
                    reason: format!(
                        "{} bytes from package {index} on are not whole {sealed_len}-byte packages",
                        range.len()
                    ),
                });
            }
            if self.opener.finished {
                return Err(Error::Tampered { package: index });
            }
            let (opened, package) = match &mut packages {
                Packages::InPlace(buf) => {
                    let package = buf.get_mut(range).unwrap_or_default();
                    (self.opener.open_in_place(index, package, is_last), package)
                }
                Packages::Into(sealed, out) => {
                    let from = sealed.get(range.clone()).unwrap_or_default();
                    let package = out.get_mut(range).unwrap_or_default();
                    (self.opener.open_into(index, from, package, is_last), package)
                }
            };
            let len = match opened {
                Ok(len) => len,
                Err(e) => {
                    // A package that failed authentication may have been decrypted anyway:
                    // its bytes are not left behind in a buffer that is reused.
                    package.fill(0);
                    return Err(e);
                }
            };
            self.opener.next += 1;
            self.opener.finished = is_last;
            let (body, tag) = package.split_at_mut(len);
            self.digest.update(body);
            tag.copy_from_slice(&self.sealer.seal_in_place(body, is_last)?);
            plaintext += len as u64;
        }
        Ok(plaintext)
    }

    /// The whole stream's plaintext digest, once its last package was re-encrypted.
    pub fn finish(&self) -> Result<crate::digest::ObjectDigest, Error> {
        if !self.opener.finished {
            return Err(Error::Truncated { packages: self.opener.next });
        }
        Ok(self.digest.finalize())
    }

    /// The plaintext digest so far (use [`PlaintextDigest::finish_part`] through
    /// [`ReEncryptor::digest_mut`] at part boundaries).
    pub fn digest(&self) -> &PlaintextDigest {
        &self.digest
    }

    /// The digest, to mark part boundaries.
    pub fn digest_mut(&mut self) -> &mut PlaintextDigest {
        &mut self.digest
    }
}

/// Splits a ciphertext stream arriving in arbitrary chunks into sealed packages, holding back
/// one full package until it knows whether more follows (the last package may be full).
#[derive(Debug)]
struct Framer {
    sealed_len: usize,
    pending: BytesMut,
    packages: u64,
}

impl Framer {
    fn new(sealed_len: usize) -> Self {
        Framer { sealed_len, pending: BytesMut::new(), packages: 0 }
    }

    fn update(
        &mut self,
        input: &[u8],
        mut each: impl FnMut(BytesMut) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut input = input;
        while !input.is_empty() {
            // Fill up to one byte past a full package: only then is the package known not last.
            let room = (self.sealed_len + 1).saturating_sub(self.pending.len());
            let (now, later) = input.split_at(room.min(input.len()));
            if self.pending.capacity() - self.pending.len() < now.len() {
                self.pending.reserve(self.sealed_len + 1);
            }
            self.pending.extend_from_slice(now);
            input = later;
            if self.pending.len() > self.sealed_len {
                // The package leaves in its own buffer (the byte past it starts the next one):
                // a `split_to` would share the allocation, so the package could not be opened
                // and re-sealed in place without a copy and a reallocation for the tag.
                let mut next = BytesMut::with_capacity(self.sealed_len + 1);
                next.extend_from_slice(self.pending.get(self.sealed_len..).unwrap_or_default());
                let mut package = std::mem::replace(&mut self.pending, next);
                package.truncate(self.sealed_len);
                self.packages += 1;
                each(package)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(BytesMut, u64), Error> {
        if self.pending.len() < TAG_LEN {
            return Err(Error::Truncated { packages: self.packages });
        }
        let last = std::mem::take(&mut self.pending);
        Ok((last, self.packages))
    }
}

/// Encrypts plaintext arriving in arbitrary chunks; holds at most one package.
#[derive(Debug)]
pub struct EncryptStream {
    sealer: Sealer,
    pending: BytesMut,
}

impl EncryptStream {
    /// A new stream under `dek`.
    pub fn new(dek: &DataKey, package_size: u32) -> Result<Self, Error> {
        Ok(EncryptStream { sealer: Sealer::new(dek, package_size)?, pending: BytesMut::new() })
    }

    /// The header to emit first.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        self.sealer.header_bytes()
    }

    fn fresh(&self) -> BytesMut {
        BytesMut::with_capacity(self.sealer.header.sealed_package_len())
    }

    /// Adds plaintext; calls `out` with each sealed package that is complete.
    pub fn update(&mut self, input: &[u8], mut out: impl FnMut(Bytes)) -> Result<(), Error> {
        let size = self.sealer.header.package_size as usize;
        let mut input = input;
        while !input.is_empty() {
            if self.pending.len() == size {
                let full = std::mem::replace(&mut self.pending, BytesMut::new());
                out(self.sealer.seal(full, false)?);
            }
            if self.pending.capacity() == 0 {
                self.pending = self.fresh();
            }
            let take = (size - self.pending.len()).min(input.len());
            let (now, later) = input.split_at(take);
            self.pending.extend_from_slice(now);
            input = later;
        }
        Ok(())
    }

    /// Seals the final package.
    pub fn finish(mut self) -> Result<Bytes, Error> {
        let last = std::mem::take(&mut self.pending);
        self.sealer.seal(last, true)
    }
}

/// Decrypts a stream arriving in arbitrary chunks (header first); holds at most two packages.
#[derive(Debug)]
pub struct DecryptStream {
    dek: Option<DataKey>,
    header: Vec<u8>,
    inner: Option<(Opener, Framer)>,
}

/// Collects the header from the front of `input`; returns the rest once it is complete.
fn take_header<'a>(header: &mut Vec<u8>, input: &'a [u8]) -> Option<&'a [u8]> {
    let need = HEADER_LEN.saturating_sub(header.len());
    let (h, rest) = input.split_at(need.min(input.len()));
    header.extend_from_slice(h);
    (header.len() == HEADER_LEN).then_some(rest)
}

impl DecryptStream {
    /// A decryptor for a stream sealed under `dek`.
    pub fn new(dek: DataKey) -> Self {
        DecryptStream { dek: Some(dek), header: Vec::new(), inner: None }
    }

    /// Adds ciphertext; calls `out` with each plaintext package that is authenticated.
    pub fn update(&mut self, input: &[u8], mut out: impl FnMut(Bytes)) -> Result<(), Error> {
        let mut input = input;
        if self.inner.is_none() {
            let Some(rest) = take_header(&mut self.header, input) else { return Ok(()) };
            input = rest;
            let dek = self.dek.take().ok_or_else(|| malformed("header seen twice"))?;
            let opener = Opener::new(&dek, &self.header)?;
            let framer = Framer::new(opener.header.sealed_package_len());
            self.inner = Some((opener, framer));
        }
        let Some((opener, framer)) = self.inner.as_mut() else { return Ok(()) };
        framer.update(input, |package| {
            out(opener.open(package, false)?);
            Ok(())
        })
    }

    /// Opens the final package; fails if the stream was truncated.
    pub fn finish(mut self) -> Result<Bytes, Error> {
        let Some((mut opener, framer)) = self.inner.take() else {
            return Err(Error::Truncated { packages: 0 });
        };
        let (last, packages) = framer.finish()?;
        let probe = last.clone();
        opener.open(last, true).map_err(|e| truncation_or(&opener, packages, probe, e))
    }
}

/// A final package that authenticates as *not* last means the stream was cut at a package
/// boundary: report truncation rather than tampering.
fn truncation_or(opener: &Opener, index: u64, package: BytesMut, e: Error) -> Error {
    if opener.open_at(index, package, false).is_ok() {
        Error::Truncated { packages: index + 1 }
    } else {
        e
    }
}

/// Re-encrypts a stream arriving in arbitrary chunks; holds at most two packages.
#[derive(Debug)]
pub struct ReEncryptStream {
    source: Option<DataKey>,
    replica: Option<DataKey>,
    header: Vec<u8>,
    inner: Option<(ReEncryptor, Framer)>,
    per_part: bool,
}

impl ReEncryptStream {
    /// Re-encrypts from the `source` data key to the `replica` data key.
    pub fn new(source: DataKey, replica: DataKey, per_part_digest: bool) -> Self {
        ReEncryptStream {
            source: Some(source),
            replica: Some(replica),
            header: Vec::new(),
            inner: None,
            per_part: per_part_digest,
        }
    }

    /// Adds source ciphertext; calls `out` with the replica header (once) and each
    /// re-encrypted package.
    pub fn update(&mut self, input: &[u8], mut out: impl FnMut(Bytes)) -> Result<(), Error> {
        let mut input = input;
        if self.inner.is_none() {
            let Some(rest) = take_header(&mut self.header, input) else { return Ok(()) };
            input = rest;
            let (Some(src), Some(dst)) = (self.source.take(), self.replica.take()) else {
                return Err(malformed("header seen twice"));
            };
            let re = ReEncryptor::new(&src, &self.header, &dst, self.per_part)?;
            out(Bytes::copy_from_slice(&re.header_bytes()));
            let framer = Framer::new(re.opener.header.sealed_package_len());
            self.inner = Some((re, framer));
        }
        let Some((re, framer)) = self.inner.as_mut() else { return Ok(()) };
        framer.update(input, |package| {
            out(re.package(package, false)?);
            Ok(())
        })
    }

    /// Re-encrypts the final package; returns it with the plaintext digest.
    pub fn finish(mut self) -> Result<(Bytes, crate::digest::ObjectDigest), Error> {
        let Some((mut re, framer)) = self.inner.take() else {
            return Err(Error::Truncated { packages: 0 });
        };
        let (last, packages) = framer.finish()?;
        let probe = last.clone();
        let sealed =
            re.package(last, true).map_err(|e| truncation_or(&re.opener, packages, probe, e))?;
        Ok((sealed, re.digest.finalize()))
    }
}
