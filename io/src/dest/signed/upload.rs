//! Multipart uploads through the signed client, parts retried alone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{CopySpec, SignedError, SignedS3};
use crate::dest::{PutOutcome, ReplicaMeta};

/// A multipart upload through [`SignedS3`]: used where the replica must be created with what
/// `object_store`'s uploads cannot send (Object Lock, `Expires`, a key its paths cannot hold).
/// Parts are numbered in the order [`SignedUpload::put_part`] is called and may upload
/// concurrently; a failed part is retried alone (transient failures only, with backoff), as
/// `object_store` retries its own.
#[derive(Debug)]
pub(crate) struct SignedUpload {
    s3: Arc<SignedS3>,
    key: Arc<str>,
    upload_id: Arc<str>,
    /// Its entry in the journal of open uploads.
    journaled: Option<u64>,
    parts: u32,
    /// The uploaded parts' `ETag`s, by part number − 1.
    e_tags: Arc<Mutex<Vec<Option<String>>>>,
}

/// What a part is made of.
enum Part {
    /// Bytes sent with the request.
    Data(Bytes),
    /// A range of a source version on the same endpoint, copied by the server.
    Copy(Arc<CopySpec>, std::ops::Range<u64>),
}

/// Attempts per part before its failure is the upload's.
const PART_ATTEMPTS: u32 = 5;
/// The first retry's backoff ceiling; doubled per attempt (full jitter).
const PART_BACKOFF: Duration = Duration::from_millis(100);

impl SignedUpload {
    /// Creates the upload (`CreateMultipartUpload` with the replica's headers).
    pub(crate) async fn start(
        s3: Arc<SignedS3>,
        key: &str,
        meta: &ReplicaMeta,
    ) -> Result<Self, SignedError> {
        // The intent is journaled before the upload exists, its id once it does, and both
        // before any part is sent: an upload a crash leaves open, even one created just before
        // the crash, is known to the next start (see `uploads.rs`).
        let journal = s3.journal.get();
        let intent = match journal {
            None => None,
            Some((journal, arn)) => Some(journal.intend(arn, key).map_err(|e| {
                SignedError::Transport(format!("journaling a multipart upload failed: {e}"))
            })?),
        };
        let upload_id = s3.create_multipart(key, meta).await?;
        if let (Some((journal, _)), Some(n)) = (journal, intent)
            && let Err(e) = journal.started(n, &upload_id)
        {
            // Unjournaled: aborted at once, and the replica fails (retried).
            if s3.abort_multipart(key, &upload_id).await.is_ok() {
                journal.forget(n);
            }
            return Err(SignedError::Transport(format!(
                "journaling a multipart upload failed: {e}"
            )));
        }
        let journaled = intent;
        Ok(SignedUpload {
            s3,
            key: key.into(),
            upload_id: upload_id.into(),
            journaled,
            parts: 0,
            e_tags: Arc::default(),
        })
    }

    /// Notes in the journal that the upload is gone.
    fn ended(&self) {
        if let (Some(n), Some((journal, _))) = (self.journaled, self.s3.journal.get()) {
            journal.forget(n);
        }
    }

    /// Numbers the next part; the returned future uploads it.
    pub(crate) fn put_part(
        &mut self,
        data: Bytes,
    ) -> impl Future<Output = Result<(), SignedError>> + Send + 'static {
        self.part(Part::Data(data))
    }

    /// Numbers the next part; the returned future copies it server-side from bytes `range` of
    /// the source version `src` (on the same endpoint).
    pub(crate) fn copy_part(
        &mut self,
        src: Arc<CopySpec>,
        range: std::ops::Range<u64>,
    ) -> impl Future<Output = Result<(), SignedError>> + Send + 'static {
        self.part(Part::Copy(src, range))
    }

    fn part(
        &mut self,
        part: Part,
    ) -> impl Future<Output = Result<(), SignedError>> + Send + 'static {
        self.parts += 1;
        let number = self.parts;
        let (s3, key, id, e_tags) =
            (self.s3.clone(), self.key.clone(), self.upload_id.clone(), self.e_tags.clone());
        async move {
            let mut attempt = 0;
            let e_tag = loop {
                attempt += 1;
                let result = match &part {
                    Part::Data(data) => s3.upload_part(&key, &id, number, data.clone()).await,
                    Part::Copy(src, range) => {
                        s3.upload_part_copy(&key, &id, number, src, range.clone()).await
                    }
                };
                match result {
                    Ok(e_tag) => break e_tag,
                    Err(e) if e.is_transient() && attempt < PART_ATTEMPTS => {
                        tracing::warn!(key = %key, part = number, attempt, error = %e, "A part upload failed; retrying that part.");
                        tokio::time::sleep(jitter(PART_BACKOFF * (1 << (attempt - 1)))).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let mut e_tags = e_tags.lock();
            let slot = usize::try_from(number - 1).unwrap_or(usize::MAX);
            if e_tags.len() <= slot {
                e_tags.resize(slot + 1, None);
            }
            if let Some(s) = e_tags.get_mut(slot) {
                *s = Some(e_tag);
            }
            Ok(())
        }
    }

    /// Completes the upload once every part future has finished (a part not uploaded is an
    /// error, and the upload is left to [`SignedUpload::abort`]).
    pub(crate) async fn complete(&self) -> Result<PutOutcome, SignedError> {
        let e_tags: Option<Vec<String>> = {
            let e_tags = self.e_tags.lock();
            let all = e_tags.len() == usize::try_from(self.parts).unwrap_or(usize::MAX);
            all.then(|| e_tags.iter().cloned().collect()).flatten()
        };
        let e_tags = e_tags.ok_or_else(|| {
            SignedError::Status(400, "completing an upload with parts not uploaded".into())
        })?;
        let done = self.s3.complete_multipart(&self.key, &self.upload_id, &e_tags).await;
        if done.is_ok() {
            self.ended();
        }
        done
    }

    /// Aborts the upload.
    pub(crate) async fn abort(&self) -> Result<(), SignedError> {
        self.s3.abort_multipart(&self.key, &self.upload_id).await?;
        self.ended();
        Ok(())
    }
}

/// A uniformly random duration below `cap` (full jitter).
fn jitter(cap: Duration) -> Duration {
    cap.mul_f64(fastrand::f64())
}
