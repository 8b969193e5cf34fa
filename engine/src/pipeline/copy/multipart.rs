//! Multipart copies: parts read in order, passed through their codec, uploaded concurrently
//! under the byte budget, the digest checked before completing, aborted on failure.

use s3repl_io::dest::MAX_PARTS;

use crate::pipeline::context::Shared;
use crate::pipeline::copy::parts::read_part;
use crate::pipeline::copy::reencrypt::{PartCodec, kms_keys};
use crate::pipeline::copy::{Written, replica_meta};
use crate::pipeline::source::SourceError;
use crate::pipeline::task::{Failure, Item, Task, backoff};
use crate::record::VersionRecord;
use s3repl_crypto::{HEADER_LEN, ReEncryptor, StreamHeader};

/// Copies a large object part by part: parts are read in order (a failed read is retried
/// alone, with backoff), hashed, and uploaded `part_concurrency` at a time, each holding its
/// budget permit until uploaded. Any failure aborts the upload so no parts stay on the target.
pub(crate) async fn copy_multipart(
    shared: &Shared,
    item: &Item,
    task: &Task,
    dest: &s3repl_io::dest::Destination,
) -> Result<Written, Failure> {
    let r = &item.record;
    let mut user_metadata = super::owned_metadata(r);
    let (codec, total) = if r.sse.kind.is_kms() {
        // Re-encrypted part by part: the source ciphertext is read in ranges and streamed
        // through the re-encryptor; nothing holds the whole object.
        let head =
            shared.source.get_range(&r.bucket, &r.key, &r.version_id, 0..HEADER_LEN as u64).await?;
        let header = StreamHeader::parse(&head)
            .map_err(|_| Failure::Integrity("encrypted stream header"))?;
        let (source_dek, replica_dek, stamps) = kms_keys(shared, r, task, dest.region())?;
        user_metadata.extend(stamps.into_iter().map(|(k, v)| (k.into(), v.into())));
        let re = ReEncryptor::new(&source_dek, &head, &replica_dek, false)
            .map_err(|_| Failure::Integrity("encrypted stream header"))?;
        let codec = PartCodec::Reencrypt {
            stream: Some(Box::new(re)),
            sealed_len: header.sealed_package_len() as u64,
            package_size: u64::from(header.package_size()),
        };
        (codec, header.ciphertext_len(r.size))
    } else {
        (PartCodec::Plain(Box::new(blake3::Hasher::new())), r.size)
    };
    let mut upload = dest.start_multipart(&r.key, &replica_meta(item, task, user_metadata)).await?;
    let result = upload_parts(shared, r, &mut upload, total, codec).await;
    match result {
        Ok(()) => {
            let outcome = upload.complete().await?;
            Ok((outcome.version_id, outcome.pending))
        }
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::error!(key = %r.key, destination = %task.destination, error = %abort, "Aborting a failed multipart copy failed; parts may remain on the target.");
            }
            Err(e)
        }
    }
}

/// The part size for an upload of `total` bytes: the configured one, or more where that would
/// need more than [`MAX_PARTS`] parts (8 MiB parts stop at 78 GiB; S3 objects reach 5 TiB),
/// in whole MiB plus `slack` (the most a part may fall short of its size: re-encrypted parts
/// end at a package boundary).
pub(crate) fn part_size_for(total: u64, configured: u64, slack: u64) -> u64 {
    let needed = total.div_ceil(MAX_PARTS - 1).saturating_add(slack);
    if configured >= needed {
        return configured.max(1);
    }
    needed.next_multiple_of(1 << 20).saturating_add(slack)
}

pub(crate) async fn upload_parts(
    shared: &Shared,
    r: &VersionRecord,
    upload: &mut s3repl_io::dest::MultipartWrite,
    total: u64,
    mut codec: PartCodec,
) -> Result<(), Failure> {
    let slack = match &codec {
        PartCodec::Plain(_) => 0,
        PartCodec::Reencrypt { package_size, .. } => *package_size,
    };
    let part = part_size_for(total, shared.limits.part_size, slack);
    if part > shared.budget.capacity() {
        // S3's 10,000-part limit forces parts this large; each one takes the whole budget
        // (so the object's parts go one at a time) and memory exceeds the budget by the rest.
        tracing::warn!(key = %r.key, size = total, part_bytes = part, budget_bytes = shared.budget.capacity(), "A part of this object is larger than the byte budget; raise the budget to keep memory within it.");
    }
    let mut in_flight = tokio::task::JoinSet::new();
    let mut start = 0u64;
    while start < total {
        let end = codec.part_end(start, total, part);
        while in_flight.len() >= shared.limits.part_concurrency.max(1) {
            if let Some(done) = in_flight.join_next().await {
                done.map_err(|_| Failure::Task("a part upload task panicked or was cancelled"))??;
            }
        }
        // The part's bytes, held until uploaded (re-encryption rewrites them in place).
        let permit = shared.budget.acquire(end - start).await;
        let mut attempt = 0;
        let data = loop {
            attempt += 1;
            match read_part(shared, r, start..end).await {
                Ok(d) => break d,
                Err(e @ SourceError::Transient(_)) if attempt < shared.limits.max_attempts => {
                    tracing::warn!(key = %r.key, attempt, error = %e, "Reading a part failed; retrying that part.");
                    tokio::time::sleep(backoff(shared, r, attempt)).await;
                }
                Err(e) => {
                    in_flight.abort_all();
                    return Err(e.into());
                }
            }
        };
        if data.len() as u64 != end - start {
            in_flight.abort_all();
            return Err(Failure::Integrity("size"));
        }
        let out = match codec.process(shared, data, start, end == total, r.blake3).await {
            Ok(out) => out,
            Err(e) => {
                in_flight.abort_all();
                return Err(e);
            }
        };
        start = end;
        let put = upload.put_part(out);
        in_flight.spawn(async move {
            let outcome = put.await;
            drop(permit);
            outcome.map_err(Failure::Destination)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done.map_err(|_| Failure::Task("a part upload task panicked or was cancelled"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many parts `codec` cuts `total` bytes into with the part size chosen for it.
    fn parts(codec: &PartCodec, total: u64, configured: u64) -> u64 {
        let slack = match codec {
            PartCodec::Plain(_) => 0,
            PartCodec::Reencrypt { package_size, .. } => *package_size,
        };
        let part = part_size_for(total, configured, slack);
        let (mut start, mut n) = (0, 0);
        while start < total {
            start = codec.part_end(start, total, part);
            n += 1;
        }
        n
    }

    #[test]
    fn uploads_never_need_more_parts_than_s3_allows() {
        const GIB: u64 = 1 << 30;
        let plain = PartCodec::Plain(Box::new(blake3::Hasher::new()));
        let sealed = |package_size: u64| PartCodec::Reencrypt {
            stream: None,
            sealed_len: package_size + s3repl_crypto::TAG_LEN as u64,
            package_size,
        };
        for total in [GIB, 80 * GIB, 81 * GIB, 1000 * GIB, 5 << 40, (5 << 40) + 12_345] {
            for codec in [&plain, &sealed(64 << 10), &sealed(1 << 20), &sealed(3 << 20)] {
                let n = parts(codec, total, 8 << 20);
                assert!(n <= MAX_PARTS, "{total} bytes: {n} parts");
            }
        }
        // Objects that fit keep the configured part size.
        assert_eq!(parts(&plain, 78 * GIB, 8 << 20), 78 * GIB / (8 << 20));
        assert_eq!(part_size_for(GIB, 8 << 20, 64 << 10), 8 << 20);
        assert_eq!(part_size_for(64 << 10, 16 << 10, 0), 16 << 10);
    }
}
