//! Server-side copies from a bucket on the same S3 endpoint (`CopyObject`, `UploadPartCopy`).

use std::sync::Arc;

use super::{
    CopyPlan, CopySource, Destination, DestinationError, MAX_PARTS, Operation, Pending, PutOutcome,
    Refusal, ReplicaMeta, S3Location, signed,
};

impl Destination {
    /// Whether versions at `location` are copied here server-side: an S3 destination on the
    /// same endpoint (its credentials must also be allowed to read the source bucket; where
    /// they are not, [`Destination::copy_from`] answers `None`), unless turned off with
    /// [`Destination::without_server_side_copy`].
    pub fn copies_from(&self, location: &S3Location) -> bool {
        self.server_side_copy
            && !self.copy_refused.load(std::sync::atomic::Ordering::Relaxed)
            && self.s3.as_ref().is_some_and(|s3| {
                let ours = s3.opts.endpoint.trim_end_matches('/');
                ours.eq_ignore_ascii_case(location.endpoint.trim_end_matches('/'))
            })
    }

    /// This destination, copying every replica's bytes through the engine even from buckets
    /// on its own endpoint (for servers whose copies are slower than a GET and a PUT, or
    /// credentials that cannot read the source).
    #[must_use]
    pub fn without_server_side_copy(mut self) -> Self {
        self.server_side_copy = false;
        self
    }

    /// Writes the replica of `src` server-side, when [`Destination::copies_from`] its
    /// location: one `CopyObject` up to `plan.single_max`, else a signed multipart upload of
    /// `UploadPartCopy` parts (each retried alone; aborted on failure). The replica gets its
    /// own metadata, tags, content headers, storage class and Object Lock as with
    /// [`Destination::put`]; the ACL is pending as there. The bytes never pass through here, so
    /// their BLAKE3 is not checked; the source `ETag` is (`x-amz-copy-source-if-match`).
    ///
    /// `None`: this destination does not copy from there, or the server refused the copy
    /// itself (403, 501): copy the bytes instead, which then fails or succeeds on its own terms.
    /// After a refusal the destination stops trying server-side copies.
    pub async fn copy_from(
        &self,
        key: &str,
        src: &CopySource<'_>,
        meta: &ReplicaMeta,
        plan: CopyPlan,
    ) -> Result<Option<PutOutcome>, DestinationError> {
        let Some(s3) = self.s3.as_ref().filter(|_| self.copies_from(src.location)) else {
            return Ok(None);
        };
        self.check_settings(key, &meta.after_write())?;
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
            None => self.signed_failure(e, Operation::Put, Refusal::BucketNotFound),
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
