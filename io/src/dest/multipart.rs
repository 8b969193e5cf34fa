//! An open multipart upload of one replica, through `object_store` or signed calls (the
//! backends open them: `store.rs`, `s3.rs`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use object_store::{MultipartUpload, PutPayload};

#[cfg(feature = "aws")]
use super::s3::signed_failure;
use super::{DestinationError, Operation, Pending, PutOutcome};
#[cfg(feature = "aws")]
use super::{Refusal, signed};

/// An open multipart upload.
pub struct MultipartWrite {
    /// The destination's ARN, for its errors.
    arn: Arc<str>,
    upload: Upload,
    /// The replica's settings to apply once complete.
    pending: Pending,
    /// The destination's limits, which parts are charged against.
    throttle: Arc<super::throttle::Throttle>,
}

/// How a multipart upload is made.
pub(super) enum Upload {
    /// Through `object_store`.
    Store(Box<dyn MultipartUpload>),
    /// With signed calls that create the replica with everything it carries.
    #[cfg(feature = "aws")]
    Signed(signed::SignedUpload),
}

impl fmt::Debug for MultipartWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultipartWrite")
            .field("arn", &self.arn)
            .field("signed", &!matches!(self.upload, Upload::Store(_)))
            .finish_non_exhaustive()
    }
}

impl MultipartWrite {
    /// An upload a backend opened.
    pub(super) fn new(arn: Arc<str>, upload: Upload, pending: Pending) -> Self {
        MultipartWrite { arn, upload, pending, throttle: Arc::default() }
    }

    /// This upload, its parts charged against `throttle` (the destination's limits).
    pub(super) fn throttled(mut self, throttle: Arc<super::throttle::Throttle>) -> Self {
        self.throttle = throttle;
        self
    }

    /// Queues the next part; the returned future uploads it (run several concurrently; a
    /// failed request of the part is retried alone, by the store or the signed client).
    pub fn put_part(
        &mut self,
        data: Bytes,
    ) -> impl std::future::Future<Output = Result<(), DestinationError>> + Send + 'static {
        let arn = self.arn.clone();
        let (throttle, len) = (self.throttle.clone(), data.len() as u64);
        let part: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            match &mut self.upload {
                Upload::Store(upload) => {
                    let part = upload.put_part(PutPayload::from(data));
                    Box::pin(async move {
                        part.await.map_err(|e| {
                            DestinationError::classify(&arn, Operation::MultipartUpload, e)
                        })
                    })
                }
                #[cfg(feature = "aws")]
                Upload::Signed(upload) => {
                    let part = upload.put_part(data);
                    Box::pin(async move {
                        part.await.map_err(|e| {
                            let op = Operation::MultipartUpload;
                            signed_failure(&arn, e, op, Refusal::NotPermitted)
                        })
                    })
                }
            };
        async move {
            let _slot = throttle.request().await;
            throttle.charge(len).await;
            part.await
        }
    }

    /// Completes the upload once every part future has finished. What the upload did not
    /// carry (the ACL; on `object_store` uploads, Object Lock) is in [`PutOutcome::pending`].
    ///
    /// "Not found" here is transient, not a missing bucket (the bucket took the upload): the
    /// upload is gone, which is what a repeated completion of one the server already carried
    /// out finds. The engine's retry then asks the destination whether the replica is there.
    pub async fn complete(mut self) -> Result<PutOutcome, DestinationError> {
        let throttle = self.throttle.clone();
        let _slot = throttle.request().await;
        let arn = &*self.arn;
        let gone = |source| DestinationError::Transient { destination: arn.to_owned(), source };
        let r = match &mut self.upload {
            Upload::Store(upload) => {
                let r = upload.complete().await.map_err(|e| match e {
                    e @ object_store::Error::NotFound { .. } => gone(e),
                    e => DestinationError::classify(arn, Operation::MultipartComplete, e),
                })?;
                PutOutcome { version_id: r.version, e_tag: r.e_tag, pending: Pending::NONE }
            }
            #[cfg(feature = "aws")]
            Upload::Signed(upload) => upload.complete().await.map_err(|e| match e {
                e @ signed::SignedError::Status(404, _) => {
                    gone(object_store::Error::Generic { store: "S3", source: Box::new(e) })
                }
                e => signed_failure(arn, e, Operation::MultipartComplete, Refusal::NotPermitted),
            })?,
        };
        Ok(PutOutcome { pending: self.pending, ..r })
    }

    /// Aborts the upload, removing its parts from the target.
    pub async fn abort(mut self) -> Result<(), DestinationError> {
        let throttle = self.throttle.clone();
        let _slot = throttle.request().await;
        let arn = &*self.arn;
        match &mut self.upload {
            Upload::Store(upload) => upload
                .abort()
                .await
                .map_err(|e| DestinationError::classify(arn, Operation::MultipartAbort, e)),
            #[cfg(feature = "aws")]
            Upload::Signed(upload) => upload.abort().await.map_err(|e| {
                signed_failure(arn, e, Operation::MultipartAbort, Refusal::NotPermitted)
            }),
        }
    }
}
