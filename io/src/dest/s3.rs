//! The S3 backend: an S3-compatible bucket written with signed calls (`signed/`), read back
//! through `object_store`'s S3 client.
//!
//! Every write is signed here rather than left to `object_store`: a replica is created with
//! its Object Lock and `Expires` (which a later call could not give it as S3 replication
//! does), keys `object_store` cannot address unchanged (`logs/`, `a//b`) are sent as they are,
//! the version id the server mints is read from the answer, and multipart upload ids are ours
//! to journal, so that an upload a crash leaves open is aborted at the next start. ACLs,
//! retention and legal holds follow the write, one call each. Server-side copies are in
//! `server_side.rs`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStore;

use super::backend::{Backend, Stamp};
use super::multipart::Upload;
use super::store::missing;
use super::{
    CopyPlan, CopySource, CurrentReplica, DestinationError, MultipartWrite, OpenUpload, Operation,
    Pending, PutOutcome, Refusal, ReplicaMeta, S3Location, S3Options, UploadJournal,
    VersionSettings, s3_store, signed,
};

/// An S3-compatible destination bucket.
#[derive(Debug)]
pub(crate) struct S3Backend {
    pub(super) arn: Arc<str>,
    store: Arc<dyn ObjectStore>,
    pub(super) signed: Arc<signed::SignedS3>,
    /// Set once the server refused a server-side copy (403, 501): later replicas go through
    /// the engine without asking again.
    pub(super) copy_refused: AtomicBool,
}

impl S3Backend {
    /// The bucket `opts` names.
    pub(crate) fn new(arn: Arc<str>, opts: &S3Options) -> Result<Self, object_store::Error> {
        Ok(S3Backend {
            arn,
            store: s3_store(opts)?,
            signed: Arc::new(signed::SignedS3::new(opts.clone())),
            copy_refused: AtomicBool::new(false),
        })
    }

    /// [`signed_failure`] on this destination.
    pub(super) fn failure(
        &self,
        e: signed::SignedError,
        operation: Operation,
        not_found: Refusal,
    ) -> DestinationError {
        signed_failure(&self.arn, e, operation, not_found)
    }
}

/// The one place a signed call's failure is classified: no answer, throttling and server
/// errors are transient; "not found" is `not_found` (the version, or for a write the bucket);
/// a bucket without Object Lock is [`Refusal::NoObjectLock`]; any other refusal is
/// [`Refusal::NotPermitted`].
pub(super) fn signed_failure(
    arn: &str,
    e: signed::SignedError,
    operation: Operation,
    not_found: Refusal,
) -> DestinationError {
    let destination = arn.to_owned();
    let refusal = match &e {
        _ if e.is_transient() => None,
        signed::SignedError::Status(404, _) => Some(not_found),
        signed::SignedError::Status(_, body)
            if body.contains("Object Lock Configuration")
                || body.contains("ObjectLockConfiguration") =>
        {
            Some(Refusal::NoObjectLock)
        }
        _ => Some(Refusal::NotPermitted),
    };
    let source = object_store::Error::Generic { store: "S3", source: Box::new(e) };
    match refusal {
        None => DestinationError::Transient { destination, source },
        Some(refusal) => DestinationError::Permanent { destination, operation, refusal, source },
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn keeps_metadata(&self) -> bool {
        true
    }

    fn keeps_object_lock(&self) -> bool {
        true
    }

    /// One signed request, never repeated here: a write the server applied but answered with
    /// an error (a 500 after the commit, a lost answer) must not be sent again blindly, or a
    /// versioned destination keeps two replicas of one version. The engine retries, and asks
    /// the destination first. The ACL follows the write (`PutObjectAcl`): until then the
    /// replica has S3's default object ACL, private, which is the safe direction.
    // Some servers, SeaweedFS among them, ignore `x-amz-acl` on writes.
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, DestinationError> {
        let outcome = self
            .signed
            .put_object(key, data, meta)
            .await
            .map_err(|e| self.failure(e, Operation::Put, Refusal::BucketNotFound))?;
        let pending = Pending { acl: meta.acl.is_some(), lock: false };
        Ok(PutOutcome { pending, ..outcome })
    }

    /// Signed, so its id is ours to journal; it carries the lock at creation, and the ACL
    /// follows once complete.
    async fn start_multipart(
        &self,
        key: &str,
        meta: &ReplicaMeta,
    ) -> Result<MultipartWrite, DestinationError> {
        let upload = signed::SignedUpload::start(self.signed.clone(), key, meta)
            .await
            .map_err(|e| self.failure(e, Operation::MultipartInit, Refusal::BucketNotFound))?;
        let pending = Pending { acl: meta.acl.is_some(), lock: false };
        Ok(MultipartWrite::new(self.arn.clone(), Upload::Signed(upload), pending))
    }

    /// Signed, to read the marker's `x-amz-version-id`.
    async fn delete_marker(&self, key: &str) -> Result<Option<String>, DestinationError> {
        self.signed
            .delete_object(key)
            .await
            .map_err(|e| self.failure(e, Operation::DeleteMarker, Refusal::BucketNotFound))
    }

    async fn head(
        &self,
        key: &str,
        name: &str,
        version: Option<String>,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        let answer = self
            .signed
            .head_object(key, version.as_deref())
            .await
            .map_err(|e| self.failure(e, Operation::Head, Refusal::BucketNotFound))?;
        Ok(answer.map(|headers| CurrentReplica {
            value: signed::answer_header(&headers, &format!("x-amz-meta-{name}")),
            version: version.or_else(|| signed::answer_header(&headers, "x-amz-version-id")),
        }))
    }

    /// One `ListObjectVersions` and one HEAD.
    async fn hidden_replica(
        &self,
        key: &str,
        name: &str,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        let version = self.signed.newest_version(key).await.map_err(|e| {
            // A failed listing only means the replay cannot tell yet: retry it.
            let destination = self.arn.to_string();
            let source = object_store::Error::Generic { store: "S3", source: Box::new(e) };
            DestinationError::Transient { destination, source }
        })?;
        let Some(version) = version else { return Ok(None) };
        self.head(key, name, Some(version)).await
    }

    /// One signed call per setting.
    async fn apply(
        &self,
        key: &str,
        version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<(), DestinationError> {
        let s3 = &self.signed;
        let gone = Refusal::VersionNotFound;
        if let Some(tags) = settings.tags {
            let r = s3.put_tagging(key, version, tags).await;
            r.map_err(|e| self.failure(e, Operation::PutTagging, gone))?;
        }
        if let Some(acl) = settings.acl {
            let r = s3.put_acl(key, version, acl).await;
            r.map_err(|e| self.failure(e, Operation::PutAcl, gone))?;
        }
        if let Some(retention) = settings.retention {
            let r = s3.put_retention(key, version, retention).await;
            r.map_err(|e| self.failure(e, Operation::PutRetention, gone))?;
        }
        if let Some(on) = settings.legal_hold {
            let r = s3.put_legal_hold(key, version, on).await;
            r.map_err(|e| self.failure(e, Operation::PutLegalHold, gone))?;
        }
        Ok(())
    }

    /// To exactly `replica_version` when known (current or not); else to the key's current
    /// version if it carries `stamp` (one HEAD); else to the newest older version that carries
    /// it (one `ListObjectVersions` of the key, then a HEAD per version, newest first, among
    /// its 100 newest): the replica of a version that is no longer current, when the version
    /// map that named it is another process's (a partition taken over) or was lost.
    async fn sync_metadata(
        &self,
        key: &str,
        stamp: Stamp<'_>,
        replica_version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<Option<String>, DestinationError> {
        if let Some(v) = replica_version {
            self.apply(key, Some(v), settings).await?;
            return Ok(Some(v.to_owned()));
        }
        let current = self.head(key, stamp.name, None).await?;
        if let Some(current) = &current
            && current.value.as_deref() == Some(stamp.value)
        {
            self.apply(key, current.version.as_deref(), settings).await?;
            return Ok(current.version.clone());
        }
        let listed = self.signed.versions_of(key).await.map_err(|e| {
            // A failed listing only means the replica cannot be found yet: retry it.
            let destination = self.arn.to_string();
            let source = object_store::Error::Generic { store: "S3", source: Box::new(e) };
            DestinationError::Transient { destination, source }
        })?;
        let checked = current.and_then(|c| c.version);
        for version in listed.into_iter().filter(|v| Some(v) != checked.as_ref()) {
            let Some(older) = self.head(key, stamp.name, Some(version)).await? else { continue };
            if older.value.as_deref() == Some(stamp.value) {
                self.apply(key, older.version.as_deref(), settings).await?;
                return Ok(older.version);
            }
        }
        Err(missing(&self.arn, key, "no replica of this source version"))
    }

    fn copies_from(&self, location: &S3Location) -> bool {
        self.copies_from_endpoint(location)
    }

    async fn copy_from(
        &self,
        key: &str,
        src: &CopySource<'_>,
        meta: &ReplicaMeta,
        plan: CopyPlan,
    ) -> Result<Option<PutOutcome>, DestinationError> {
        self.copy_server_side(key, src, meta, plan).await
    }

    fn journal_uploads(&self, journal: &Arc<UploadJournal>) {
        let _ = self.signed.journal.set((journal.clone(), self.arn.to_string()));
    }

    /// With an upload id, that upload. Without one (the run died while the upload was being
    /// created), the uploads of exactly that key initiated within minutes of the journaled
    /// intent (one minute before, for clocks that differ, to ten after: creating one is given
    /// five) that hold no part: the run sent none before journaling the id, and another
    /// tool's upload of a replica's own key in those minutes that has no part yet is all this
    /// could mistake for one.
    async fn abort_left_open(&self, upload: &OpenUpload) -> Result<(), DestinationError> {
        let s3 = &self.signed;
        let fail = |e| self.failure(e, Operation::MultipartAbort, Refusal::BucketNotFound);
        if let Some(id) = &upload.upload_id {
            return s3.abort_multipart(&upload.key, id).await.map_err(fail);
        }
        let (from, to) =
            (upload.at_ms.saturating_sub(60_000), upload.at_ms.saturating_add(600_000));
        for (id, initiated) in s3.uploads_of(&upload.key).await.map_err(fail)? {
            if initiated.is_some_and(|t| (from..=to).contains(&t))
                && !s3.has_parts(&upload.key, &id).await.map_err(fail)?
            {
                s3.abort_multipart(&upload.key, &id).await.map_err(fail)?;
            }
        }
        Ok(())
    }
}
