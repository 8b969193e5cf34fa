//! SSE-KMS re-encryption: the source's data key unwrapped, a fresh one under the rule's
//! `ReplicaKmsKeyID`, packages re-sealed part by part (or whole, for small objects).

use crate::pipeline::buffers::Rewrite;
use crate::pipeline::context::Shared;
use crate::pipeline::copy::parts::Part;
use crate::pipeline::status::FailureReason;
use crate::pipeline::task::{Failure, Task};
use crate::record::{VersionRecord, stamps};
use s3repl_crypto::{DataKey, HEADER_LEN, ObjectIdentity, ReEncryptor, StreamHeader, WrappedKey};

/// What happens to each part between the source and the destination.
pub(crate) enum PartCodec {
    /// Copied as is, hashed on the way.
    Plain(Box<blake3::Hasher>),
    /// Source ciphertext re-encrypted in place under the replica key, part by part; parts hold
    /// whole packages, so each becomes the same part of the replica stream (the re-encryptor
    /// verifies and hashes the plaintext). `stream` is `None` only while a part is processed.
    Reencrypt { stream: Option<Box<ReEncryptor>>, sealed_len: u64, package_size: u64 },
}

impl PartCodec {
    /// Where the part starting at `start` ends: `part_size` bytes later, or for re-encryption
    /// after as many whole packages as `part_size` holds plaintext (the first part also holds
    /// the stream header).
    pub(crate) fn part_end(&self, start: u64, total: u64, part_size: u64) -> u64 {
        let len = match self {
            PartCodec::Plain(_) => part_size,
            PartCodec::Reencrypt { sealed_len, package_size, .. } => {
                let packages = (part_size / (*package_size).max(1)).max(1);
                let header = if start == 0 { HEADER_LEN as u64 } else { 0 };
                header + packages * sealed_len
            }
        };
        start.saturating_add(len.max(1)).min(total)
    }

    /// Transforms one part (`start` is its offset in the source); `last` also checks the
    /// whole object's digest.
    pub(crate) async fn process(
        &mut self,
        shared: &Shared,
        data: Part,
        start: u64,
        last: bool,
        expected: Option<[u8; 32]>,
    ) -> Result<bytes::Bytes, Failure> {
        match self {
            PartCodec::Plain(hasher) => {
                let data = data.into_bytes();
                hasher.update(&data);
                if last && expected.is_some_and(|h| hasher.finalize().as_bytes() != &h) {
                    return Err(Failure::Integrity("BLAKE3"));
                }
                Ok(data)
            }
            PartCodec::Reencrypt { stream, .. } => {
                let re =
                    stream.take().ok_or(Failure::Task("re-encryption stream already finished"))?;
                let part = match data {
                    // The buffer is the engine's own: nothing else shares it.
                    Part::Lent(buf) => Rewrite::InPlace(buf),
                    Part::Read(bytes) => shared.buffers.rewrite(bytes),
                };
                // Closed never: `Shared` owns the semaphore.
                let _permit = shared.sealing.acquire().await.ok();
                let (re, out) = tokio::task::spawn_blocking(move || {
                    reencrypt_part(re, part, start == 0, last, expected)
                })
                .await
                .map_err(|_| Failure::Task("the re-encryption task panicked or was cancelled"))??;
                *stream = re;
                Ok(out)
            }
        }
    }
}

/// Re-encrypts one part (see [`PartCodec::Reencrypt`]), in place or into a pool buffer. A
/// `first` part starts with the stream header the re-encryptor was made from, which becomes
/// the replica's. With `last`, checks the whole plaintext's BLAKE3 and gives the re-encryptor
/// up.
pub(crate) fn reencrypt_part(
    mut re: Box<ReEncryptor>,
    part: Rewrite,
    first: bool,
    last: bool,
    expected: Option<[u8; 32]>,
) -> Result<(Option<Box<ReEncryptor>>, bytes::Bytes), Failure> {
    let bad_header = || Failure::Integrity("encrypted stream header");
    let bad_stream = |_| Failure::Integrity("encrypted stream");
    let header_len = |len: usize| if first { HEADER_LEN.min(len) } else { 0 };
    let buf = match part {
        Rewrite::InPlace(mut buf) => {
            let bytes = buf.as_mut_slice();
            let (h, packages) = bytes.split_at_mut(header_len(bytes.len()));
            if first {
                if *h != re.source_header_bytes() {
                    return Err(bad_header());
                }
                h.copy_from_slice(&re.header_bytes());
            }
            re.packages_in_place(packages, last).map_err(bad_stream)?;
            buf
        }
        Rewrite::Into { from, mut to } => {
            let (h, packages) = from.split_at(header_len(from.len()));
            let out = to.as_mut_slice();
            let (out_h, out_packages) = out.split_at_mut(h.len());
            if first {
                if *h != re.source_header_bytes() {
                    return Err(bad_header());
                }
                out_h.copy_from_slice(&re.header_bytes());
            }
            re.packages_into(packages, out_packages, last).map_err(bad_stream)?;
            to
        }
    };
    if !last {
        return Ok((Some(re), buf.freeze()));
    }
    let digest = re.finish().map_err(|_| Failure::Integrity("encrypted stream"))?;
    if expected.is_some_and(|h| digest.whole.as_bytes() != &h) {
        return Err(Failure::Integrity("BLAKE3"));
    }
    Ok((None, buf.freeze()))
}

/// Re-encrypts an SSE-KMS source (our streaming format, its data key wrapped under the source
/// KMS key) under a fresh data key wrapped by the rule's replica key (see [`kms_keys`]) for a
/// destination in `region`, checking the
/// plaintext's BLAKE3 on the way. Returns the replica's bytes and the metadata that lets the
/// destination side unwrap them: the replica key id and the wrapped data key. The replica's
/// wrap is bound to (destination ARN, key, source version id): the destination's own version
/// id is not known before the write.
pub(crate) async fn reencrypt(
    shared: &Shared,
    r: &VersionRecord,
    task: &Task,
    region: Option<&str>,
    data: bytes::Bytes,
) -> Result<(bytes::Bytes, Vec<(String, String)>), Failure> {
    let header =
        StreamHeader::parse(&data).map_err(|_| Failure::Integrity("encrypted stream header"))?;
    if header.ciphertext_len(r.size) != data.len() as u64 {
        return Err(Failure::Integrity("size"));
    }
    let (source_dek, replica_dek, stamps) = kms_keys(shared, r, task, region)?;
    let re = ReEncryptor::new(&source_dek, &data, &replica_dek, false)
        .map_err(|_| Failure::Integrity("encrypted stream header"))?;
    let expected = r.blake3;
    let part = shared.buffers.rewrite(data);
    // AES-GCM and BLAKE3 over the whole object are CPU work: keep them off the async workers.
    let _permit = shared.sealing.acquire().await.ok();
    let (_, sealed) = tokio::task::spawn_blocking(move || {
        reencrypt_part(Box::new(re), part, true, true, expected)
    })
    .await
    .map_err(|_| Failure::Task("the re-encryption task panicked or was cancelled"))??;
    Ok((sealed, stamps))
}

/// The source data key, a fresh replica data key, and the replica's metadata stamps.
pub(crate) type KmsKeys = (DataKey, DataKey, Vec<(String, String)>);

/// The source data key (unwrapped under the source KMS key for this version), a fresh replica
/// data key, and the replica's metadata stamps (key id, wrapped replica key).
///
/// The replica key is the rule's `ReplicaKmsKeyID`, or, under `UseSourceMultiRegionKey`, the
/// multi-Region key related to the source object's key in the destination's `region`; with no
/// such key the version fails as `DstKmsKeyNotFound`, S3's reason for a replica key it cannot
/// find.
pub(crate) fn kms_keys(
    shared: &Shared,
    r: &VersionRecord,
    task: &Task,
    region: Option<&str>,
) -> Result<KmsKeys, Failure> {
    let keys = shared
        .keys
        .clone()
        .ok_or(Failure::Kms(FailureReason::SrcKmsKeyInvalidState, "no key store configured"))?;
    let wrapped = r.sse.wrapped_dek.as_deref().and_then(|w| WrappedKey::decode(w).ok()).ok_or(
        Failure::Kms(FailureReason::SrcKmsKeyInvalidState, "missing or malformed wrapped data key"),
    )?;
    let source_id = ObjectIdentity { bucket: &r.bucket, key: &r.key, version_id: &r.version_id };
    let source_dek = wrapped.unwrap_with(keys.as_ref(), source_id).map_err(|_| {
        Failure::Kms(FailureReason::SrcKmsKeyInvalidState, "the source data key does not unwrap")
    })?;
    let master = if task.multi_region_key {
        let region = region.ok_or(Failure::Kms(
            FailureReason::DstKmsKeyNotFound,
            "UseSourceMultiRegionKey: the destination's Region is not configured",
        ))?;
        keys.related_multi_region_key(wrapped.key_id(), region).map_err(|_| {
            Failure::Kms(
                FailureReason::DstKmsKeyNotFound,
                "UseSourceMultiRegionKey: the source object's KMS key has no related multi-Region key in the destination's Region",
            )
        })?
    } else {
        let replica_key_id = task.replica_kms_key.as_deref().ok_or(Failure::Kms(
            FailureReason::DstKmsKeyNotFound,
            "the rule has no ReplicaKmsKeyID",
        ))?;
        keys.master_key(replica_key_id).map_err(|_| {
            Failure::Kms(FailureReason::DstKmsKeyNotFound, "the replica KMS key is unknown")
        })?
    };
    let replica_dek = DataKey::generate()
        .map_err(|_| Failure::Kms(FailureReason::DstKmsKeyInvalidState, "no randomness"))?;
    let replica_id =
        ObjectIdentity { bucket: &task.destination, key: &r.key, version_id: &r.version_id };
    let replica_wrap = replica_dek.wrap(&master, replica_id).map_err(|_| {
        Failure::Kms(
            FailureReason::DstKmsKeyInvalidState,
            "the replica data key could not be wrapped",
        )
    })?;
    let stamps = vec![
        (stamps::SSE.to_owned(), "aws:kms".to_owned()),
        (stamps::KMS_KEY_ID.to_owned(), master.id().to_owned()),
        (stamps::WRAPPED_DEK.to_owned(), hex::encode(replica_wrap.encode())),
    ];
    Ok((source_dek, replica_dek, stamps))
}
