//! Server-side copies: `CopyObject` / `UploadPartCopy` where source and destination are on one
//! S3 endpoint; no byte passes through the engine.

use crate::rules::SseKind;

use crate::pipeline::context::Shared;
use crate::pipeline::copy::{Written, replica_meta};
use crate::pipeline::task::{Failure, Item, Task};

/// Copies a version server-side where its bytes need no work here (not encrypted, or SSE-S3)
/// and the destination is on the source bucket's own S3 endpoint; `None` otherwise, or when
/// the server refused the copy: the caller copies the bytes.
pub(crate) async fn copy_server_side(
    shared: &Shared,
    item: &Item,
    task: &Task,
    dest: &s3repl_io::dest::Destination,
) -> Result<Option<Written>, Failure> {
    let r = &item.record;
    if !matches!(r.sse.kind, SseKind::None | SseKind::SseS3) {
        return Ok(None);
    }
    let Some(location) = shared.source.s3_location(&r.bucket) else { return Ok(None) };
    if !dest.copies_from(location) {
        return Ok(None);
    }
    let src = s3repl_io::dest::CopySource {
        location,
        key: &r.key,
        version_id: &r.version_id,
        etag: &r.etag,
        size: r.size,
    };
    let plan = s3repl_io::dest::CopyPlan {
        single_max: shared.limits.single_copy_max,
        part_size: shared.limits.copy_part_size,
        concurrency: shared.limits.part_concurrency,
    };
    let meta = replica_meta(item, task, super::owned_metadata(r));
    let outcome = dest.copy_from(&r.key, &src, &meta, plan).await?;
    Ok(outcome.map(|o| (o.version_id, o.pending)))
}
