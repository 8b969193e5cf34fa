//! Server-side copies into an S3 destination from a bucket on its endpoint (`CopyObject`,
//! `UploadPartCopy`).

use std::sync::Arc;

use super::s3::S3Backend;
use super::{
    CopyPlan, CopySource, DestinationError, MAX_PARTS, Operation, Pending, PutOutcome, Refusal,
    ReplicaMeta, S3Location, signed,
};

impl S3Backend {
    /// Whether this bucket is on the endpoint of `location`, and the server has not refused a
    /// copy yet.
    pub(super) fn copies_from_endpoint(&self, location: &S3Location) -> bool {
        let ours = self.signed.opts.endpoint.trim_end_matches('/');
        !self.copy_refused.load(std::sync::atomic::Ordering::Relaxed)
            && ours.eq_ignore_ascii_case(location.endpoint.trim_end_matches('/'))
    }

    /// One `CopyObject` up to `plan.single_max`, else a signed multipart upload of
    /// `UploadPartCopy` parts (each retried alone; aborted on failure); `None` when the server
    /// refused the copy itself (403, 501), after which this destination stops asking. Called
    /// only where [`S3Backend::copies_from_endpoint`] holds (`Destination::copy_from` asks).
    pub(super) async fn copy_server_side(
        &self,
        key: &str,
        src: &CopySource<'_>,
        meta: &ReplicaMeta,
        plan: CopyPlan,
    ) -> Result<Option<PutOutcome>, DestinationError> {
        let s3 = &self.signed;
        let spec = signed::CopySpec {
            bucket: src.location.bucket.clone(),
            key: src.key.to_owned(),
            version_id: src.version_id.to_owned(),
            if_match: (!src.etag.is_empty()).then(|| src.etag.to_owned()),
        };
        let result = if src.size <= plan.single_max {
            s3.copy_object(key, &spec, meta).await
        } else {
            copy_in_parts(s3, key, spec, src.size, meta, plan).await
        };
        match result {
            Ok(outcome) => {
                let pending = Pending { acl: meta.acl.is_some(), lock: false };
                Ok(Some(PutOutcome { pending, ..outcome }))
            }
            Err(signed::SignedError::Status(403 | 501, body)) => {
                if !self.copy_refused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(key, destination = %self.arn, answer = %body, "The server refused a server-side copy; this destination's replicas are copied through s3repl from now on.");
                }
                Ok(None)
            }
            Err(e) => Err(self.copy_failure(e, &src.location.bucket)),
        }
    }

    /// Classifies a failed server-side copy: a missing source version is the source's
    /// (`SrcVersionNotFound`, or `SrcBucketNotFound` when the answer names the source bucket),
    /// a source whose `ETag` differs from the recorded one is `SrcObjectNotEligible`; the rest
    /// as any signed write.
    fn copy_failure(&self, e: signed::SignedError, source_bucket: &str) -> DestinationError {
        let refusal = match &e {
            signed::SignedError::Status(404, body)
                if body.contains("NoSuchKey") || body.contains("NoSuchVersion") =>
            {
                Some(Refusal::SourceVersionNotFound)
            }
            signed::SignedError::Status(404, body)
                if body.contains(&format!("<BucketName>{source_bucket}</BucketName>")) =>
            {
                Some(Refusal::SourceBucketNotFound)
            }
            signed::SignedError::Status(412, _) => Some(Refusal::SourceChanged),
            _ => None,
        };
        match refusal {
            Some(refusal) => DestinationError::Permanent {
                destination: self.arn.to_string(),
                operation: Operation::Put,
                refusal,
                source: object_store::Error::Generic { store: "S3", source: Box::new(e) },
            },
            None => self.failure(e, Operation::Put, Refusal::BucketNotFound),
        }
    }
}

/// A server-side copy of `size` bytes as a signed multipart upload of `UploadPartCopy` parts,
/// `plan.concurrency` at a time; aborted if any part fails.
async fn copy_in_parts(
    s3: &Arc<signed::SignedS3>,
    key: &str,
    spec: signed::CopySpec,
    size: u64,
    meta: &ReplicaMeta,
    plan: CopyPlan,
) -> Result<PutOutcome, signed::SignedError> {
    use futures_util::StreamExt as _;
    let part = plan.part_size.max(size.div_ceil(MAX_PARTS)).max(1);
    let mut upload = signed::SignedUpload::start(s3.clone(), key, meta).await?;
    let spec = Arc::new(spec);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < size {
        let end = start.saturating_add(part).min(size);
        parts.push(upload.copy_part(spec.clone(), start..end));
        start = end;
    }
    let mut copies = futures_util::stream::iter(parts).buffer_unordered(plan.concurrency.max(1));
    let mut failed = None;
    while let Some(r) = copies.next().await {
        if let Err(e) = r {
            failed = Some(e);
            break;
        }
    }
    drop(copies);
    let result = match failed {
        Some(e) => Err(e),
        None => upload.complete().await,
    };
    if result.is_err()
        && let Err(abort) = upload.abort().await
    {
        tracing::error!(key, error = %abort, "Aborting a failed server-side copy failed; parts may remain on the target.");
    }
    result
}
