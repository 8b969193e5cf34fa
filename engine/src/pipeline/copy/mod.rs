//! Stage 3's copies: how one version reaches one destination — one PUT, a server-side copy,
//! or a multipart upload (`multipart`, reading parts through `parts`, re-encrypting through
//! `reencrypt`) — and what the replica carries.

pub(crate) mod multipart;
pub(crate) mod parts;
pub(crate) mod reencrypt;
pub(crate) mod server_side;

use std::borrow::Cow;

use s3repl_io::dest::{CannedAcl, ObjectAcl, Pending, ReplicaMeta, VersionSettings};

use crate::record::VersionRecord;
use crate::rules::{MetadataChanges, SseKind};

use crate::pipeline::context::Shared;
use crate::pipeline::copy::multipart::copy_multipart;
use crate::pipeline::copy::reencrypt::reencrypt;
use crate::pipeline::copy::server_side::copy_server_side;
use crate::pipeline::task::{Failure, Item, Task};
use crate::record::stamps;

pub(crate) async fn copy(
    shared: &Shared,
    item: &Item,
    task: &Task,
    dest: &s3repl_io::dest::Destination,
) -> Result<Written, Failure> {
    let r = &item.record;
    if let Some(written) = copy_server_side(shared, item, task, dest).await? {
        return Ok(written);
    }
    let sse_c = r.sse.kind == SseKind::SseC;
    if !sse_c && r.size >= shared.limits.multipart_threshold.max(1) {
        // Budgeted per part inside: a whole-object permit here would double-count the bytes
        // and, for objects at least as large as the budget, starve the parts forever.
        return copy_multipart(shared, item, task, dest).await;
    }
    // Holds the object's bytes against the budget until the write is done (an SSE-KMS object
    // is re-encrypted in place: in its own buffer, or in one copy when the source shares it).
    let _permit = shared.budget.acquire(r.size).await;
    let data = read_whole(shared, r).await?;
    let mut user_metadata = owned_metadata(r);
    let data = if r.sse.kind.is_kms() {
        let (sealed, stamps) = reencrypt(shared, r, task, dest.region(), data).await?;
        user_metadata.extend(stamps.into_iter().map(|(k, v)| (k.into(), v.into())));
        sealed
    } else if sse_c {
        // SSE-C: the engine never has the customer's key. As S3 does, the stored ciphertext is
        // copied as it is, with the key's MD5, so the replica opens with the same customer key
        // (on a server that stores SSE-C objects the same way); its plaintext size and digest
        // cannot be checked here. Copied whole (no multipart: the stored size is unknown).
        user_metadata.push((stamps::SSE.into(), "SSE-C".into()));
        if let Some(md5) = &r.sse.kms_key_id {
            user_metadata.push((stamps::SSE_CUSTOMER_KEY_MD5.into(), md5.clone().into()));
        }
        data
    } else {
        if data.len() as u64 != r.size {
            return Err(Failure::Integrity("size"));
        }
        if let Some(expected) = r.blake3
            && blake3::hash(&data).as_bytes() != &expected
        {
            return Err(Failure::Integrity("BLAKE3"));
        }
        data
    };
    let meta = replica_meta(item, task, user_metadata);
    let outcome = dest.put(&r.key, data, &meta).await?;
    Ok((outcome.version_id, outcome.pending))
}

/// A version's bytes, to copy whole: a plain one (the bytes the source returns are the
/// replica's) into a pool buffer where the source can fill one — buffers that come back to the
/// pool are what keeps the process within its budget without tuning the allocator
/// (`pipeline/buffers.rs`) — else as the source returns them. An encrypted one as the source
/// returns it: its stored length is not the recorded one.
async fn read_whole(
    shared: &Shared,
    r: &VersionRecord,
) -> Result<bytes::Bytes, crate::pipeline::source::SourceError> {
    let plain = matches!(r.sse.kind, SseKind::None | SseKind::SseS3);
    if plain && let Some(buf) = parts::read_lent(shared, r, 0..r.size).await? {
        return Ok(buf.freeze());
    }
    shared.source.get(&r.bucket, &r.key, &r.version_id).await
}

/// An ACL change with no ACL recorded resets the object to the bucket's default.
pub(crate) const DEFAULT_ACL: ObjectAcl = ObjectAcl::Canned(CannedAcl::Private);

/// What a replica gets right after its write: the source's ACL (unless the destination account
/// owns replicas), its retention and its legal hold.
pub(crate) fn replica_settings<'a>(r: &'a VersionRecord, task: &Task) -> VersionSettings<'a> {
    VersionSettings {
        tags: None,
        acl: r.acl.as_ref().filter(|_| !task.owner_override),
        retention: r.lock.retention.map(Some),
        legal_hold: r.lock.legal_hold.then_some(true),
    }
}

/// What a metadata update changes at the replica: each changed property the rule replicates,
/// with its new value from the record.
pub(crate) fn changed_settings<'a>(r: &'a VersionRecord, task: &Task) -> VersionSettings<'a> {
    let changes = r.changes.replicated(task.owner_override);
    VersionSettings {
        tags: changes.contains(MetadataChanges::TAGS).then_some(r.tags.as_slice()),
        acl: changes.contains(MetadataChanges::ACL).then(|| r.acl.as_ref().unwrap_or(&DEFAULT_ACL)),
        retention: changes.contains(MetadataChanges::RETENTION).then_some(r.lock.retention),
        legal_hold: changes.contains(MetadataChanges::LEGAL_HOLD).then_some(r.lock.legal_hold),
    }
}

/// A replica's user metadata: borrowed where static (see [`ReplicaMeta::user_metadata`]).
pub(crate) type Metadata = Vec<(Cow<'static, str>, Cow<'static, str>)>;

/// The version's own user metadata, with room for the stamps the replica gets.
pub(crate) fn owned_metadata(r: &VersionRecord) -> Metadata {
    let mut out = Vec::with_capacity(r.user_metadata.len() + 8);
    out.extend(r.user_metadata.iter().map(|(k, v)| (k.clone().into(), v.clone().into())));
    out
}

/// The replica's metadata: the source's user metadata plus the replication stamps, its content
/// headers, storage class (the rule's, else the source's), ACL and Object Lock settings.
pub(crate) fn replica_meta(item: &Item, task: &Task, mut user_metadata: Metadata) -> ReplicaMeta {
    let r = &item.record;
    user_metadata.push((stamps::REPLICATION_STATUS.into(), "REPLICA".into()));
    user_metadata.push((stamps::SOURCE_VERSION_ID.into(), r.version_id.clone().into()));
    // Formatted with itoa: `fmt`'s machinery took about 700 instructions per version here.
    let mut numbers = itoa::Buffer::new();
    let modified = numbers.format(r.commit_time_ms).to_owned();
    user_metadata.push((stamps::SOURCE_LAST_MODIFIED_MS.into(), modified.into()));
    let mut seq = String::with_capacity(24);
    seq.push_str(numbers.format(item.partition));
    seq.push(':');
    seq.push_str(numbers.format(item.seq));
    user_metadata.push((stamps::SOURCE_SEQ.into(), seq.into()));
    if let Some(h) = r.blake3 {
        user_metadata
            .push((stamps::BLAKE3.into(), blake3::Hash::from_bytes(h).to_hex().to_string().into()));
    }
    let settings = replica_settings(r, task);
    ReplicaMeta {
        user_metadata,
        tags: r.tags.clone(),
        content: r.content.clone(),
        storage_class: task.storage_class.map(|sc| sc.as_str().to_owned()),
        acl: settings.acl.cloned(),
        lock: r.lock,
    }
}

/// A replica just written: the version the destination named, and the settings its write did
/// not carry ([`s3repl_io::dest::PutOutcome`]).
pub(crate) type Written = (Option<String>, Pending);
