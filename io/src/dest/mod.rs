//! Destinations: where replicas are written, through `object_store` (local file system, in
//! memory, S3-compatible endpoints, Google Cloud Storage, Azure Blob Storage).
//!
//! A [`Destination`] writes one replica version (data, metadata, content headers, storage
//! class, tags) or a delete marker, applies the per-version settings `object_store` cannot send
//! (ACL, Object Lock retention and legal hold: signed S3 calls on the version just written), and
//! reports what the target did. [`DestinationRegistry`] maps destination bucket ARNs from a
//! replication configuration to destinations.
//!
//! Files: this one holds [`Destination`] with its construction, single writes and delete
//! markers; `options.rs` how endpoints are reached; `metadata.rs` reading replicas and changing
//! their metadata; `multipart.rs` multipart uploads; `server_side.rs` copies the server makes;
//! `signed.rs` the signed S3 client; `local.rs`, `memory.rs` the local and in-memory stores;
//! `replica.rs` what a replica carries; `uploads.rs` the journal of open uploads;
//! `registry.rs` ARN → destination; `conformance.rs` the checks every backend passes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
mod answers;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod error;
mod local;
mod memory;
mod metadata;
mod multipart;
mod options;
mod registry;
mod replica;
mod server_side;
mod signed;
mod uploads;

pub use error::{DestinationError, Operation, Refusal};
pub use local::sync_file_system;
pub use metadata::CurrentReplica;
use metadata::{MetadataNames, metadata_entry};
pub use multipart::MultipartWrite;
pub use options::{
    AzureOptions, CopyPlan, CopySource, GcsOptions, MAX_PARTS, S3Location, S3Options, S3ReadError,
    S3VersionReader, s3_store,
};
pub use registry::{DestinationRegistry, LOCAL_WRITERS};
pub use replica::{
    AclGrant, AclPermission, CannedAcl, ContentHeaders, Grantee, LockMode, ObjectAcl, ObjectLock,
    Pending, ReplicaMeta, Retention, VersionSettings,
};
#[cfg(feature = "testing")]
pub use signed::read_answer;
pub use uploads::{OpenUpload, UploadJournal};

use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, TagSet,
};

/// What the destination did with a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// The version id the destination minted, when it versions (S3 mints its own).
    pub version_id: Option<String>,
    /// The destination's `ETag`.
    pub e_tag: Option<String>,
    /// The settings the write did not carry: apply them with [`Destination::finish_replica`].
    pub pending: Pending,
}

/// One destination bucket.
#[derive(Clone)]
pub struct Destination {
    arn: Arc<str>,
    store: Arc<dyn ObjectStore>,
    /// Whether the store keeps object metadata attributes (`LocalFileSystem` does not).
    keeps_metadata: bool,
    /// How the store spells user-metadata names.
    names: MetadataNames,
    /// Whether the store takes S3 storage classes (S3 and memory; Azure's access tiers and
    /// GCS's classes are other sets, so their container or bucket default applies).
    s3_storage_classes: bool,
    /// For S3-compatible destinations: signed calls `object_store` does not make.
    s3: Option<Arc<signed::SignedS3>>,
    /// Whether versions in other buckets of the same endpoint are copied server-side.
    server_side_copy: bool,
    /// Set once the server refused a server-side copy (403, 501): later replicas go through
    /// the engine without asking again.
    copy_refused: Arc<std::sync::atomic::AtomicBool>,
    /// For local file-system destinations: the shared writer threads, and the root that
    /// [`Destination::sync`] flushes.
    local: Option<(Arc<local::LocalWriters>, Arc<std::path::Path>)>,
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("arn", &self.arn)
            .field("store", &self.store.to_string())
            .field("keeps_metadata", &self.keeps_metadata)
            .field("names", &self.names)
            .field("s3_storage_classes", &self.s3_storage_classes)
            .field("signed_calls", &self.s3.is_some())
            .field("server_side_copy", &self.server_side_copy)
            .field("copy_refused", &self.copy_refused)
            .field("local_writers", &self.local.is_some())
            .finish()
    }
}

impl Destination {
    /// A destination writing to `store`. `keeps_metadata` says whether the store accepts
    /// metadata attributes; when it does not, replicas are written without them.
    pub fn new(
        arn: impl Into<Arc<str>>,
        store: Arc<dyn ObjectStore>,
        keeps_metadata: bool,
    ) -> Self {
        Destination {
            arn: arn.into(),
            store,
            keeps_metadata,
            names: MetadataNames::AsIs,
            s3_storage_classes: false,
            s3: None,
            server_side_copy: false,
            copy_refused: Arc::default(),
            local: None,
        }
    }

    /// An in-memory destination (tests, benchmarks).
    pub fn in_memory(arn: &str) -> Self {
        let mut d = Destination::new(arn, Arc::new(memory::PartsMemory::default()), true);
        d.s3_storage_classes = true;
        d
    }

    /// A destination on the local file system under `root`. Replicas are written by the
    /// process's [`LOCAL_WRITERS`] dedicated threads (shared by all local destinations), each
    /// into a staging file renamed into place; they are made durable together by
    /// [`Destination::sync`] (the engine calls it before each checkpoint).
    pub fn local(arn: &str, root: &std::path::Path) -> Result<Self, object_store::Error> {
        let io = |e: std::io::Error| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        };
        std::fs::create_dir_all(root).map_err(io)?;
        // Whole objects are written by `local::put_file` beside the store: both resolve keys
        // under this one absolute root (as the store would canonicalize it anyway).
        let root = std::fs::canonicalize(root).map_err(io)?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)?;
        let mut d = Destination::new(arn, Arc::new(fs), false);
        let writers = local::LocalWriters::shared(LOCAL_WRITERS).map_err(io)?;
        d.local = Some((writers, root.into()));
        Ok(d)
    }

    /// Whether this is a local file-system destination.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Journals the multipart uploads this destination opens from now on in `journal` (S3
    /// destinations; others open none that outlive the process). Once per destination: a
    /// later call is ignored.
    pub fn journal_uploads(&self, journal: &Arc<UploadJournal>) {
        if let Some(s3) = &self.s3 {
            let _ = s3.journal.set((journal.clone(), self.arn.to_string()));
        }
    }

    /// Aborts an upload a previous run left open (from its [`UploadJournal`]). An upload the
    /// server no longer has (completed, or aborted already) is not an error. Without an upload
    /// id (the run died while the upload was being created), the uploads of exactly that key
    /// initiated within minutes of the journaled intent (one minute before, for clocks that
    /// differ, to ten after: creating one is given five) that hold no part are aborted: the run
    /// sent none before journaling the id, and another tool's upload of a replica's own key in
    /// those minutes that has no part yet is all this could mistake for one.
    pub async fn abort_left_open(&self, upload: &OpenUpload) -> Result<(), DestinationError> {
        let Some(s3) = &self.s3 else { return Ok(()) };
        let fail = |e| self.signed_failure(e, Operation::MultipartAbort, Refusal::BucketNotFound);
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

    /// Removes the staging files a killed process left in a local destination (`name#digits`,
    /// which no key may have here) last modified before `before`: writes of this process
    /// started after it are not touched. Returns how many it removed. Walks the whole tree
    /// (blocking; call it off the async threads); nothing to do for other destinations.
    pub fn remove_orphaned_staging(&self, before: std::time::SystemTime) -> std::io::Result<usize> {
        match &self.local {
            Some((_, root)) => local::remove_orphaned_staging(root, before),
            None => Ok(0),
        }
    }

    /// Makes every replica written so far durable, where the destination does not do so
    /// itself: a local file system is flushed (`syncfs`, once for all its replicas); remote
    /// stores acknowledge durable writes, and memory has nothing to flush. Blocking: call it
    /// off the async threads.
    pub fn sync(&self) -> Result<(), DestinationError> {
        match &self.local {
            Some((_, root)) => {
                local::sync_file_system(root).map_err(|e| DestinationError::Transient {
                    destination: self.arn.to_string(),
                    source: object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                })
            }
            None => Ok(()),
        }
    }

    /// A destination bucket on an S3-compatible endpoint (AWS S3 or a compatible server).
    pub fn s3(arn: &str, opts: &S3Options) -> Result<Self, object_store::Error> {
        let mut d = Destination::new(arn, s3_store(opts)?, true);
        d.s3_storage_classes = true;
        d.s3 = Some(Arc::new(signed::SignedS3::new(opts.clone())));
        d.server_side_copy = true;
        Ok(d)
    }

    /// A Google Cloud Storage bucket, through `object_store`'s builder. It keeps metadata, but
    /// has no S3 ACLs, storage classes or Object Lock: locked replicas are refused there.
    ///
    /// Not verified against a GCS server here: neither emulator installable in this project's
    /// environment serves `object_store`'s XML-API client (fake-gcs-server refuses path-style
    /// writes, gcp-storage-emulator answers reads without an `ETag`).
    pub fn gcs(arn: &str, opts: &GcsOptions) -> Result<Self, object_store::Error> {
        let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
            .with_bucket_name(&opts.bucket)
            .with_client_options(
                object_store::ClientOptions::new().with_allow_http(opts.allow_http),
            );
        if let Some(token) = &opts.bearer_token {
            let credential = object_store::gcp::GcpCredential { bearer: token.clone() };
            b = b.with_credentials(Arc::new(object_store::StaticCredentialProvider::new(
                credential,
            )));
        }
        if let Some(p) = &opts.service_account_path {
            b = b.with_service_account_path(p.to_string_lossy());
        }
        if let Some(u) = &opts.base_url {
            b = b.with_base_url(u);
        }
        Ok(Destination::new(arn, Arc::new(b.build()?), true))
    }

    /// An Azure Blob Storage container (shared-key signing), tested on Azurite. It keeps
    /// metadata (names spelled as identifiers: `-` becomes `_`), but has no S3 ACLs, storage
    /// classes or Object Lock: locked replicas are refused there.
    pub fn azure(arn: &str, opts: &AzureOptions) -> Result<Self, object_store::Error> {
        let mut b = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(&opts.account)
            .with_container_name(&opts.container)
            .with_access_key(&opts.access_key)
            .with_allow_http(opts.allow_http);
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e.clone());
        }
        let mut d = Destination::new(arn, Arc::new(b.build()?), true);
        d.names = MetadataNames::Identifiers;
        Ok(d)
    }

    /// The user-metadata entry `name` among `attributes` read from this destination (whose
    /// store may spell names its own way: Azure's are identifiers).
    pub fn metadata(&self, attributes: &Attributes, name: &str) -> Option<String> {
        metadata_entry(attributes, &self.names.spell(name))
    }

    /// The destination bucket ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The underlying store (to read replicas back, e.g. in tests and verification).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `key` as an `object_store` path, refused unless the path names exactly that key:
    /// `Path` drops a leading or trailing `/` (a console's folder marker `logs/` would be
    /// written as `logs`, and a later `logs/x` could not be) and cannot hold empty, `.` or
    /// `..` segments. S3 destinations send such keys as they are, with signed calls.
    fn path(key: &str) -> Result<Path, object_store::Error> {
        let path = Path::parse(key).map_err(|e| object_store::Error::InvalidPath { source: e })?;
        if path.as_ref() != key {
            let why = format!(
                "key {key:?} cannot be stored under its own name here: this store's paths have no leading or trailing '/'"
            );
            return Err(object_store::Error::NotSupported { source: why.into() });
        }
        Ok(path)
    }

    /// [`Destination::path`], on this destination: a local file system also refuses the names
    /// `LocalFileSystem` keeps for its staging files (`report#2`), for every operation, as
    /// FAILED `DstPutObjectNotPermitted` (the store itself would refuse them as a transient
    /// error, retried until the deadline).
    fn store_path(&self, key: &str) -> Result<Path, object_store::Error> {
        let path = Self::path(key)?;
        if self.local.is_some() && !local::is_file_name(&path) {
            let why = format!(
                "key {key:?} cannot be stored on a local file system: names ending in '#' and digits are its staging files"
            );
            return Err(object_store::Error::NotSupported { source: why.into() });
        }
        Ok(path)
    }

    /// Whether `key` is written through `object_store` unchanged (see [`Destination::path`]).
    fn addressable(key: &str) -> bool {
        Self::path(key).is_ok()
    }

    /// The attributes and tags a replica is written with.
    fn attributes_and_tags(&self, meta: &ReplicaMeta) -> (Attributes, TagSet) {
        if !self.keeps_metadata {
            return (Attributes::new(), tags(meta));
        }
        // Sized once: growing the map rehashes it, and a replica has a handful of entries.
        let mut attributes = Attributes::with_capacity(meta.user_metadata.len() + 6);
        for (k, v) in &meta.user_metadata {
            attributes.insert(Attribute::Metadata(self.names.spell(k).into()), v.clone().into());
        }
        let c = &meta.content;
        for (attribute, value) in [
            (Attribute::ContentType, &c.content_type),
            (Attribute::ContentEncoding, &c.content_encoding),
            (Attribute::ContentDisposition, &c.content_disposition),
            (Attribute::ContentLanguage, &c.content_language),
            (Attribute::CacheControl, &c.cache_control),
            (
                Attribute::StorageClass,
                if self.s3_storage_classes { &meta.storage_class } else { &None },
            ),
        ] {
            if let Some(v) = value {
                attributes.insert(attribute, v.clone().into());
            }
        }
        (attributes, tags(meta))
    }

    /// Refuses, before anything is sent, metadata or content headers that no HTTP request can
    /// carry, as a permanent failure with `reason`: no retry could send them, and
    /// `object_store` 0.14.2's S3 client panics on them while signing (`"request valid"`).
    /// The in-memory store refuses them too, as S3 would; stores that keep no metadata (local
    /// files) are not sent any, so nothing is refused there.
    fn check_sendable(
        &self,
        meta: &ReplicaMeta,
        operation: Operation,
    ) -> Result<(), DestinationError> {
        if !self.keeps_metadata {
            return Ok(());
        }
        match meta.unsendable() {
            None => Ok(()),
            Some(why) => Err(DestinationError::Permanent {
                destination: self.arn.to_string(),
                operation,
                refusal: Refusal::NotPermitted,
                source: object_store::Error::Generic { store: "s3repl", source: why.into() },
            }),
        }
    }

    /// Refuses, before anything is written, settings this destination cannot keep: a store
    /// without Object Lock must not hold an unprotected copy of a locked version (S3 fails
    /// such replications with `DstBucketObjectLockConfigMissing`). ACLs on stores without
    /// them are not an error: like an S3 bucket with ACLs disabled, the store's own access
    /// control applies.
    fn check_settings(
        &self,
        key: &str,
        settings: &VersionSettings<'_>,
    ) -> Result<(), DestinationError> {
        if self.s3.is_none() && settings.protects() {
            return Err(DestinationError::Permanent {
                destination: self.arn.to_string(),
                operation: Operation::Put,
                refusal: Refusal::NoObjectLock,
                source: object_store::Error::NotSupported {
                    source: format!("{key}: this destination cannot lock objects (Object Lock retention or legal hold)").into(),
                },
            });
        }
        Ok(())
    }

    /// Applies `settings` to `version` of `key` (the key itself on unversioned buckets) with
    /// one signed call each; S3 destinations only (elsewhere there is nothing to apply once
    /// [`Destination::check_settings`] passed).
    async fn apply(
        &self,
        key: &str,
        version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<(), DestinationError> {
        let Some(s3) = &self.s3 else { return Ok(()) };
        if let Some(tags) = settings.tags {
            s3.put_tagging(key, version, tags).await.map_err(|e| {
                self.signed_failure(e, Operation::PutTagging, Refusal::VersionNotFound)
            })?;
        }
        if let Some(acl) = settings.acl {
            s3.put_acl(key, version, acl)
                .await
                .map_err(|e| self.signed_failure(e, Operation::PutAcl, Refusal::VersionNotFound))?;
        }
        if let Some(retention) = settings.retention {
            s3.put_retention(key, version, retention).await.map_err(|e| {
                self.signed_failure(e, Operation::PutRetention, Refusal::VersionNotFound)
            })?;
        }
        if let Some(on) = settings.legal_hold {
            s3.put_legal_hold(key, version, on).await.map_err(|e| {
                self.signed_failure(e, Operation::PutLegalHold, Refusal::VersionNotFound)
            })?;
        }
        Ok(())
    }

    /// The one place a signed call's failure is classified: no answer, throttling and server
    /// errors are transient; "not found" is `not_found` (the version, or for a write the
    /// bucket); a bucket without Object Lock is [`Refusal::NoObjectLock`]; any other refusal
    /// is [`Refusal::NotPermitted`].
    fn signed_failure(
        &self,
        e: signed::SignedError,
        operation: Operation,
        not_found: Refusal,
    ) -> DestinationError {
        let destination = self.arn.to_string();
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
            Some(refusal) => {
                DestinationError::Permanent { destination, operation, refusal, source }
            }
        }
    }

    /// Writes one replica in a single PUT.
    pub async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, DestinationError> {
        let fail = |e| DestinationError::classify(&self.arn, Operation::Put, e);
        self.check_settings(key, &meta.after_write())?;
        self.check_sendable(meta, Operation::Put)?;
        // The ACL follows the write on S3 (`PutObjectAcl`): until then the replica has S3's
        // default object ACL, private, which is the safe direction (some servers, SeaweedFS
        // among them, ignore `x-amz-acl` on writes).
        let pending = Pending { acl: self.s3.is_some() && meta.acl.is_some(), lock: false };
        if let Some(s3) = &self.s3 {
            // One signed request, never repeated here: a write the server applied but
            // answered with an error (a 500 after the commit, a lost answer) must not be sent
            // again blindly, or a versioned destination keeps two replicas of one version.
            // The engine retries, and asks the destination first (`object_store` would repeat
            // it at once). The request carries Object Lock at creation, as S3 replication
            // does (the replica is never unprotected, and its retention overrides the bucket's
            // default, which a later call could not shorten), and `Expires`, which
            // `object_store` lacks.
            let outcome = s3
                .put_object(key, data, meta)
                .await
                .map_err(|e| self.signed_failure(e, Operation::Put, Refusal::BucketNotFound))?;
            return Ok(PutOutcome { pending, ..outcome });
        }
        let path = self.store_path(key).map_err(fail)?;
        let gone = || object_store::Error::Generic {
            store: "LocalFileSystem",
            source: "the destination's writer threads stopped".into(),
        };
        #[cfg(unix)]
        if let Some((writers, root)) = &self.local {
            // The store keeps neither metadata nor tags: the file is all there is to write.
            let root = root.clone();
            let job = move || local::put_file(&root, &path, std::slice::from_ref(&data));
            writers.run(job).await.ok_or_else(gone).and_then(|r| r).map_err(fail)?;
            return Ok(PutOutcome { version_id: None, e_tag: None, pending });
        }
        let (attributes, tags) = self.attributes_and_tags(meta);
        let opts = PutOptions { attributes, tags, ..PutOptions::default() };
        let payload = PutPayload::from_bytes(data);
        let r = match &self.local {
            // Reached only where `put_file` is not built (not Unix).
            Some((writers, _)) => {
                let store = self.store.clone();
                let job = move || futures_executor::block_on(store.put_opts(&path, payload, opts));
                writers.run(job).await.ok_or_else(gone).and_then(|r| r).map_err(fail)?
            }
            None => self.store.put_opts(&path, payload, opts).await.map_err(fail)?,
        };
        Ok(PutOutcome { version_id: r.version, e_tag: r.e_tag, pending })
    }

    /// Gives the replica just written (`version`, as [`PutOutcome`] named it) what its write
    /// could not carry ([`PutOutcome::pending`] of [`ReplicaMeta::after_write`]): its ACL, and
    /// for multipart uploads its retention and legal hold. Idempotent, so a failed attempt is
    /// repeated without writing the replica again.
    pub async fn finish_replica(
        &self,
        key: &str,
        version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<(), DestinationError> {
        self.apply(key, version, settings).await
    }

    /// Replicates a delete marker: a DELETE without a version id (on a versioned target this
    /// creates the marker; on an unversioned one it removes the object). Deleting a key that
    /// does not exist succeeds. Returns the marker's version id where the target names it (S3
    /// targets: the request is signed here to read `x-amz-version-id`).
    pub async fn delete_marker(&self, key: &str) -> Result<Option<String>, DestinationError> {
        if let Some(s3) = &self.s3 {
            return s3.delete_object(key).await.map_err(|e| {
                self.signed_failure(e, Operation::DeleteMarker, Refusal::BucketNotFound)
            });
        }
        let fail = |e| DestinationError::classify(&self.arn, Operation::DeleteMarker, e);
        let path = self.store_path(key).map_err(fail)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }
}

/// The replica's tags as `object_store` sends them.
fn tags(meta: &ReplicaMeta) -> TagSet {
    let mut tags = TagSet::default();
    for (k, v) in &meta.tags {
        tags.push(k, v);
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_and_local_destinations_conform() {
        let dir = std::env::temp_dir().join(format!("s3repl-dest-{}", std::process::id()));
        let local = Destination::local("arn:aws:s3:::local", &dir).unwrap();
        for d in [Destination::in_memory("arn:aws:s3:::mem"), local] {
            conformance::put_get_delete(&d).await.unwrap();
            conformance::multipart(&d).await.unwrap();
            conformance::metadata_kept(&d).await.unwrap();
            conformance::exact_keys(&d).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn stores_without_object_lock_refuse_locked_replicas_before_writing() {
        let d = Destination::in_memory("arn:aws:s3:::mem");
        let locked = ReplicaMeta {
            lock: ObjectLock { retention: None, legal_hold: true },
            ..ReplicaMeta::default()
        };
        let e = d.put("k", Bytes::from_static(b"x"), &locked).await.unwrap_err();
        assert_eq!(e.refusal(), Some(Refusal::NoObjectLock), "{e}");
        let e = d.start_multipart("k", &locked).await.unwrap_err();
        assert_eq!(e.refusal(), Some(Refusal::NoObjectLock), "{e}");
        assert!(d.store().head(&Path::from("k")).await.is_err(), "nothing was written");
        // An ACL is no error there (like a bucket with ACLs disabled), and nothing is pending.
        let acl = ReplicaMeta {
            acl: Some(ObjectAcl::Canned(CannedAcl::PublicRead)),
            ..ReplicaMeta::default()
        };
        let done = d.put("k", Bytes::from_static(b"x"), &acl).await.unwrap();
        assert!(done.pending.is_none());
        // Lifting a legal hold asks for no protection, so it is not refused either.
        let lift = VersionSettings { legal_hold: Some(false), ..VersionSettings::default() };
        assert!(!lift.protects());
    }

    #[tokio::test]
    async fn local_replicas_are_synced_and_a_failed_sync_is_an_error() {
        let dir = std::env::temp_dir().join(format!("s3repl-dest-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let local = Destination::local("arn:aws:s3:::local", &dir).unwrap();
        let mut reg = DestinationRegistry::new();
        reg.insert(local.clone());
        reg.insert(Destination::in_memory("arn:aws:s3:::mem"));
        local.put("a/b", Bytes::from_static(b"x"), &ReplicaMeta::default()).await.unwrap();
        assert_eq!(std::fs::read(dir.join("a/b")).unwrap(), b"x");
        reg.sync().unwrap();
        // With its file system gone, the sync fails (and the engine then saves no checkpoint).
        std::fs::remove_dir_all(&dir).unwrap();
        let e = reg.sync().unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }

    /// `LocalFileSystem` keeps `name#<digits>` for its staging files: a local destination
    /// refuses such keys for writes, multipart uploads and deletes alike, permanently, and
    /// writes nothing; other stores take them.
    #[tokio::test]
    async fn local_destinations_refuse_the_stores_staging_names() {
        let dir = std::env::temp_dir().join(format!("s3repl-dest-staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let local = Destination::local("arn:aws:s3:::local", &dir).unwrap();
        let meta = ReplicaMeta::default();
        // Refused for good, each as the operation it was.
        let refused = |op: Operation| {
            move |e: DestinationError| {
                matches!(
                    e,
                    DestinationError::Permanent { operation, refusal: Refusal::NotPermitted, .. }
                        if operation == op
                )
            }
        };
        let e = local.put("r/report#2", Bytes::from_static(b"x"), &meta).await.unwrap_err();
        assert!(refused(Operation::Put)(e));
        let multipart = local.start_multipart("r/report#2", &meta).await;
        assert!(multipart.is_err_and(refused(Operation::MultipartInit)));
        let marker = local.delete_marker("r/report#2").await;
        assert!(marker.is_err_and(refused(Operation::DeleteMarker)));
        assert!(!dir.join("r").exists(), "nothing may be written for a refused key");
        // Not a staging name: `#` followed by anything but digits.
        local.put("r/report#2b", Bytes::from_static(b"y"), &meta).await.unwrap();
        assert_eq!(std::fs::read(dir.join("r/report#2b")).unwrap(), b"y");
        let mem = Destination::in_memory("arn:aws:s3:::mem");
        mem.put("r/report#2", Bytes::from_static(b"z"), &meta).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn azure_spells_metadata_names_as_identifiers() {
        let az = MetadataNames::Identifiers;
        assert_eq!(az.spell("s3repl-source-seq"), "s3repl_source_seq");
        assert_eq!(az.spell("x.y z"), "x_y_z");
        assert_eq!(az.spell("2fa"), "_2fa");
        assert_eq!(az.spell(""), "_");
        assert_eq!(az.spell("Already_Fine1"), "Already_Fine1");
        assert_eq!(MetadataNames::AsIs.spell("s3repl-source-seq"), "s3repl-source-seq");
    }

    #[test]
    fn signed_call_failures_are_classified_in_one_place() {
        use signed::SignedError as S;
        let d = Destination::in_memory("arn:aws:s3:::mem");
        let classify = |e| d.signed_failure(e, Operation::PutAcl, Refusal::VersionNotFound);
        assert!(classify(S::Status(503, String::new())).is_retryable());
        assert!(classify(S::Status(429, String::new())).is_retryable());
        assert!(classify(S::Transport("reset".into())).is_retryable());
        assert_eq!(
            classify(S::Status(404, String::new())).refusal(),
            Some(Refusal::VersionNotFound)
        );
        let refused = classify(S::Status(403, String::new()));
        assert!(
            matches!(
                refused,
                DestinationError::Permanent {
                    operation: Operation::PutAcl,
                    refusal: Refusal::NotPermitted,
                    ..
                }
            ),
            "{refused}"
        );
        let no_lock = "<Error><Code>InvalidRequest</Code><Message>Bucket is missing Object Lock Configuration</Message></Error>";
        assert_eq!(classify(S::Status(400, no_lock.into())).refusal(), Some(Refusal::NoObjectLock));
    }
}
