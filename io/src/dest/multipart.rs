//! Multipart uploads of one replica, through `object_store` or signed calls.

use std::fmt;

use bytes::Bytes;
use object_store::{MultipartUpload, PutMultipartOptions, PutPayload};

use super::{
    Destination, DestinationError, Operation, Pending, PutOutcome, Refusal, ReplicaMeta, signed,
};

impl Destination {
    /// Starts a multipart upload of one replica. Complete it, or abort it: an upload that
    /// cannot complete must not be left on the target.
    ///
    /// On S3 destinations a replica with Object Lock or `Expires` is uploaded with signed
    /// calls that create it with them, as [`Destination::put`] does for single-part replicas:
    /// the replica is locked from its first moment, with its own retention rather than the
    /// bucket default. So is a replica whose key `object_store` cannot address unchanged
    /// (`logs/`, `a//b`: `Path` would drop or refuse part of it); other stores refuse such keys.
    pub async fn start_multipart(
        &self,
        key: &str,
        meta: &ReplicaMeta,
    ) -> Result<MultipartWrite, DestinationError> {
        let fail = |e| DestinationError::classify(&self.arn, Operation::MultipartInit, e);
        self.check_settings(key, &meta.after_write())?;
        self.check_sendable(meta, Operation::MultipartInit)?;
        // Every S3 upload is signed: its id is then ours to journal, so an upload a crash
        // leaves open is aborted at the next start (`object_store` keeps the id to itself). It
        // carries the lock at creation; the ACL follows once complete.
        if let Some(s3) = &self.s3 {
            let upload = signed::SignedUpload::start(s3.clone(), key, meta).await.map_err(|e| {
                self.signed_failure(e, Operation::MultipartInit, Refusal::BucketNotFound)
            })?;
            return Ok(MultipartWrite {
                destination: self.clone(),
                upload: Upload::Signed(upload),
                pending: Pending { acl: meta.acl.is_some(), lock: false },
            });
        }
        // Other stores have no ACLs and refuse locks (`check_settings`): nothing is pending.
        let path = self.store_path(key).map_err(fail)?;
        let (attributes, tags) = self.attributes_and_tags(meta);
        let opts = PutMultipartOptions { attributes, tags, ..PutMultipartOptions::default() };
        let upload = self.store.put_multipart_opts(&path, opts).await.map_err(fail)?;
        Ok(MultipartWrite {
            destination: self.clone(),
            upload: Upload::Store(upload),
            pending: Pending::NONE,
        })
    }
}

/// An open multipart upload.
pub struct MultipartWrite {
    destination: Destination,
    upload: Upload,
    /// The replica's settings to apply once complete.
    pending: Pending,
}

/// How a multipart upload is made.
enum Upload {
    /// Through `object_store`.
    Store(Box<dyn MultipartUpload>),
    /// With signed calls that create the replica with everything it carries.
    Signed(signed::SignedUpload),
}

impl fmt::Debug for MultipartWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultipartWrite")
            .field("arn", &self.destination.arn)
            .field("signed", &matches!(self.upload, Upload::Signed(_)))
            .finish_non_exhaustive()
    }
}

impl MultipartWrite {
    /// Queues the next part; the returned future uploads it (run several concurrently; a
    /// failed request of the part is retried alone, by the store or the signed client).
    pub fn put_part(
        &mut self,
        data: Bytes,
    ) -> impl std::future::Future<Output = Result<(), DestinationError>> + Send + 'static {
        let d = self.destination.clone();
        let part: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            match &mut self.upload {
                Upload::Store(upload) => {
                    let part = upload.put_part(PutPayload::from(data));
                    Box::pin(async move {
                        part.await.map_err(|e| {
                            DestinationError::classify(&d.arn, Operation::MultipartUpload, e)
                        })
                    })
                }
                Upload::Signed(upload) => {
                    let part = upload.put_part(data);
                    Box::pin(async move {
                        part.await.map_err(|e| {
                            let op = Operation::MultipartUpload;
                            d.signed_failure(e, op, Refusal::NotPermitted)
                        })
                    })
                }
            };
        part
    }

    /// Completes the upload once every part future has finished. What the upload did not
    /// carry (the ACL; on `object_store` uploads, Object Lock) is in [`PutOutcome::pending`].
    ///
    /// "Not found" here is transient, not a missing bucket (the bucket took the upload): the
    /// upload is gone, which is what a repeated completion of one the server already carried
    /// out finds. The engine's retry then asks the destination whether the replica is there.
    pub async fn complete(mut self) -> Result<PutOutcome, DestinationError> {
        let d = &self.destination;
        let gone = |source| DestinationError::Transient { destination: d.arn.to_string(), source };
        let r = match &mut self.upload {
            Upload::Store(upload) => {
                let r = upload.complete().await.map_err(|e| match e {
                    e @ object_store::Error::NotFound { .. } => gone(e),
                    e => DestinationError::classify(&d.arn, Operation::MultipartComplete, e),
                })?;
                PutOutcome { version_id: r.version, e_tag: r.e_tag, pending: Pending::NONE }
            }
            Upload::Signed(upload) => upload.complete().await.map_err(|e| match e {
                e @ signed::SignedError::Status(404, _) => {
                    gone(object_store::Error::Generic { store: "S3", source: Box::new(e) })
                }
                e => d.signed_failure(e, Operation::MultipartComplete, Refusal::NotPermitted),
            })?,
        };
        Ok(PutOutcome { pending: self.pending, ..r })
    }

    /// Aborts the upload, removing its parts from the target.
    pub async fn abort(mut self) -> Result<(), DestinationError> {
        let d = &self.destination;
        match &mut self.upload {
            Upload::Store(upload) => upload
                .abort()
                .await
                .map_err(|e| DestinationError::classify(&d.arn, Operation::MultipartAbort, e)),
            Upload::Signed(upload) => upload
                .abort()
                .await
                .map_err(|e| d.signed_failure(e, Operation::MultipartAbort, Refusal::NotPermitted)),
        }
    }
}
