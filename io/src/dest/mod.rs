//! Destinations: where replicas are written — local file systems, S3-compatible buckets,
//! Google Cloud Storage, Azure Blob Storage, memory, or any `object_store` store.
//!
//! A [`Destination`] writes one replica version (data, metadata, content headers, storage
//! class, tags) or a delete marker, applies the per-version settings a write cannot carry
//! (ACL, Object Lock retention and legal hold), and reports what the target did.
//! [`DestinationRegistry`] maps destination bucket ARNs from a replication configuration to
//! destinations.
//!
//! A destination is an ARN over one backend per kind (`backend.rs` says where a new kind
//! goes): `store.rs` any `object_store` store; `local.rs` local file systems; `s3.rs` S3 with
//! its signed client (`signed/`) and server-side copies (`server_side.rs`). This file holds
//! what every kind shares: construction, refusing before anything is sent what a kind cannot
//! keep, and the operations the engine calls. Beside them: `options.rs` how endpoints are
//! reached; `metadata.rs` reading replicas and changing their metadata; `multipart.rs` an open
//! multipart upload; `memory.rs` the in-memory store; `replica.rs` what a replica carries;
//! `uploads.rs` the journal of open uploads; `registry.rs` ARN → destination; `answers.rs` S3's
//! XML answers; `error.rs` how operations fail; `conformance.rs` the checks every backend
//! passes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
#[cfg(feature = "aws")]
mod answers;
mod backend;
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
#[cfg(feature = "aws")]
mod s3;
#[cfg(feature = "aws")]
mod server_side;
#[cfg(feature = "aws")]
mod signed;
mod store;
mod throttle;
mod uploads;

pub use backend::Stamp;
pub use error::{DestinationError, Operation, Refusal};
pub use local::sync_file_system;
pub use metadata::CurrentReplica;
use metadata::metadata_entry;
pub use multipart::MultipartWrite;
pub use options::{
    AzureOptions, CopyPlan, CopySource, GcsOptions, MAX_PARTS, S3Location, S3Options, addressable,
};
#[cfg(feature = "aws")]
pub use options::{
    ListedVersion, S3ReadError, S3VersionReader, VersionHead, VersionPage, s3_store,
};
pub use registry::{DestinationRegistry, LOCAL_WRITERS};
pub use replica::{
    AclGrant, AclPermission, CannedAcl, ContentHeaders, Grantee, LockMode, ObjectAcl, ObjectLock,
    Pending, ReplicaMeta, Retention, VersionSettings,
};
#[cfg(all(feature = "aws", feature = "testing"))]
pub use signed::read_answer;
pub use throttle::DestinationLimits;
pub use uploads::{OpenUpload, UploadJournal};

use backend::Backend;
use object_store::{Attributes, ObjectStore};

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

/// One destination bucket: its ARN and the backend of its kind. Cheap to clone.
#[derive(Clone)]
pub struct Destination {
    arn: Arc<str>,
    backend: Arc<dyn Backend>,
    /// Whether versions in other buckets of the same endpoint are copied server-side (where
    /// the backend can).
    server_side_copy: bool,
    /// The Region the destination bucket lives in, where known (`UseSourceMultiRegionKey`
    /// picks the replica key by it).
    region: Option<Arc<str>>,
    /// Bytes per second and requests at once (shared by the clones).
    throttle: Arc<throttle::Throttle>,
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("arn", &self.arn)
            .field("backend", &self.backend)
            .field("server_side_copy", &self.server_side_copy)
            .field("region", &self.region)
            .field("limits", &self.throttle.get())
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// A destination over `backend`.
    fn with_backend(arn: Arc<str>, backend: impl Backend + 'static) -> Self {
        Destination {
            arn,
            backend: Arc::new(backend),
            server_side_copy: true,
            region: None,
            throttle: Arc::default(),
        }
    }

    /// A destination writing to `store`, any `object_store` store. `keeps_metadata` says
    /// whether the store accepts metadata attributes; when it does not, replicas are written
    /// without them.
    pub fn new(
        arn: impl Into<Arc<str>>,
        store: Arc<dyn ObjectStore>,
        keeps_metadata: bool,
    ) -> Self {
        let arn = arn.into();
        Self::with_backend(arn.clone(), store::StoreBackend::new(arn, store, keeps_metadata))
    }

    /// An in-memory destination (tests, benchmarks).
    pub fn in_memory(arn: &str) -> Self {
        let arn: Arc<str> = arn.into();
        let store = Arc::new(memory::PartsMemory::default());
        let backend = store::StoreBackend::new(arn.clone(), store, true).with_s3_storage_classes();
        Self::with_backend(arn, backend)
    }

    /// A destination on the local file system under `root`. Replicas are written by the
    /// process's [`LOCAL_WRITERS`] dedicated threads (shared by all local destinations), each
    /// into a staging file renamed into place; they are made durable together by
    /// [`Destination::sync`] (the engine calls it before each checkpoint).
    pub fn local(arn: &str, root: &std::path::Path) -> Result<Self, object_store::Error> {
        let arn: Arc<str> = arn.into();
        Ok(Self::with_backend(arn.clone(), local::LocalBackend::new(arn, root)?))
    }

    /// A destination bucket on an S3-compatible endpoint (AWS S3 or a compatible server).
    #[cfg(feature = "aws")]
    pub fn s3(arn: &str, opts: &S3Options) -> Result<Self, object_store::Error> {
        let arn: Arc<str> = arn.into();
        Ok(Self::with_backend(arn.clone(), s3::S3Backend::new(arn, opts)?)
            .with_region(&opts.region))
    }

    /// A Google Cloud Storage bucket, through `object_store`'s builder. It keeps metadata, but
    /// has no S3 ACLs, storage classes or Object Lock: locked replicas are refused there.
    ///
    /// Not verified against a GCS server here: neither emulator installable in this project's
    /// environment serves `object_store`'s XML-API client (fake-gcs-server refuses path-style
    /// writes, gcp-storage-emulator answers reads without an `ETag`).
    #[cfg(feature = "gcp")]
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
    #[cfg(feature = "azure")]
    pub fn azure(arn: &str, opts: &AzureOptions) -> Result<Self, object_store::Error> {
        let mut b = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(&opts.account)
            .with_container_name(&opts.container)
            .with_access_key(&opts.access_key)
            .with_allow_http(opts.allow_http);
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e.clone());
        }
        let arn: Arc<str> = arn.into();
        let backend = store::StoreBackend::new(arn.clone(), Arc::new(b.build()?), true)
            .with_names(metadata::MetadataNames::Identifiers);
        Ok(Self::with_backend(arn, backend))
    }

    /// Whether the store keeps user metadata and content headers.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn keeps_metadata(&self) -> bool {
        self.backend.keeps_metadata()
    }

    /// Whether this is a local file-system destination.
    pub fn is_local(&self) -> bool {
        self.backend.is_local()
    }

    /// Journals the multipart uploads this destination opens from now on in `journal` (S3
    /// destinations; others open none that outlive the process). Once per destination: a
    /// later call is ignored.
    pub fn journal_uploads(&self, journal: &Arc<UploadJournal>) {
        self.backend.journal_uploads(journal);
    }

    /// Aborts an upload a previous run left open (from its [`UploadJournal`]). An upload the
    /// server no longer has (completed, or aborted already) is not an error; one whose id the
    /// run never learned is found by its key and time, never another tool's (see the S3
    /// backend). Nothing to do for destinations whose uploads die with the process.
    pub async fn abort_left_open(&self, upload: &OpenUpload) -> Result<(), DestinationError> {
        self.backend.abort_left_open(upload).await
    }

    /// Removes the staging files a killed process left in a local destination (`name#digits`,
    /// which no key may have here) last modified before `before`: writes of this process
    /// started after it are not touched. Returns how many it removed. Walks the whole tree
    /// (blocking; call it off the async threads); nothing to do for other destinations.
    pub fn remove_orphaned_staging(&self, before: std::time::SystemTime) -> std::io::Result<usize> {
        self.backend.remove_orphaned_staging(before)
    }

    /// Makes every replica written so far durable, where the destination does not do so
    /// itself: a local file system is flushed (`syncfs`, once for all its replicas); remote
    /// stores acknowledge durable writes, and memory has nothing to flush. Blocking: call it
    /// off the async threads.
    pub fn sync(&self) -> Result<(), DestinationError> {
        self.backend.sync()
    }

    /// The user-metadata entry `name` among `attributes` read from this destination (whose
    /// store may spell names its own way: Azure's are identifiers).
    pub fn metadata(&self, attributes: &Attributes, name: &str) -> Option<String> {
        metadata_entry(attributes, &self.backend.names().spell(name))
    }

    /// The destination bucket ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The underlying store (to read replicas back, e.g. in tests and verification).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        self.backend.store()
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
        if !self.backend.keeps_metadata() {
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
        if !self.backend.keeps_object_lock() && settings.protects() {
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

    /// Writes one replica in a single PUT (on S3, one signed request that creates it with its
    /// Object Lock and `Expires`; the ACL is then pending, see [`PutOutcome::pending`]).
    pub async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, DestinationError> {
        self.check_settings(key, &meta.after_write())?;
        self.check_sendable(meta, Operation::Put)?;
        let _slot = self.throttle.request().await;
        self.throttle.charge(data.len() as u64).await;
        self.backend.put(key, data, meta).await
    }

    /// Starts a multipart upload of one replica. Complete it, or abort it: an upload that
    /// cannot complete must not be left on the target.
    ///
    /// On S3 destinations the upload is made with signed calls that create the replica with
    /// its Object Lock and `Expires`, as [`Destination::put`] does for single-part replicas:
    /// the replica is locked from its first moment, with its own retention rather than the
    /// bucket default; keys `object_store` cannot address unchanged (`logs/`, `a//b`) are
    /// sent as they are there, and refused elsewhere.
    pub async fn start_multipart(
        &self,
        key: &str,
        meta: &ReplicaMeta,
    ) -> Result<MultipartWrite, DestinationError> {
        self.check_settings(key, &meta.after_write())?;
        self.check_sendable(meta, Operation::MultipartInit)?;
        let _slot = self.throttle.request().await;
        let write = self.backend.start_multipart(key, meta).await?;
        Ok(write.throttled(self.throttle.clone()))
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
        let _slot = self.throttle.request().await;
        self.backend.apply(key, version, settings).await
    }

    /// Replicates a delete marker: a DELETE without a version id (on a versioned target this
    /// creates the marker; on an unversioned one it removes the object). Deleting a key that
    /// does not exist succeeds. Returns the marker's version id where the target names it (S3
    /// targets).
    pub async fn delete_marker(&self, key: &str) -> Result<Option<String>, DestinationError> {
        let _slot = self.throttle.request().await;
        self.backend.delete_marker(key).await
    }

    /// Whether versions at `location` are copied here server-side: an S3 destination on the
    /// same endpoint (its credentials must also be allowed to read the source bucket; where
    /// they are not, [`Destination::copy_from`] answers `None`), unless turned off with
    /// [`Destination::without_server_side_copy`].
    pub fn copies_from(&self, location: &S3Location) -> bool {
        self.server_side_copy && self.backend.copies_from(location)
    }

    /// This destination, in `region` (S3 destinations take their endpoint's Region; set it
    /// for others whose replicas `UseSourceMultiRegionKey` rules encrypt).
    #[must_use]
    pub fn with_region(mut self, region: &str) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets what this destination (and every clone of it) may be sent from now on: bytes per
    /// second and requests at once. Requests waiting for a slot see a raised limit at once.
    pub fn set_limits(&self, limits: DestinationLimits) {
        self.throttle.set(limits);
    }

    /// What this destination may be sent.
    pub fn limits(&self) -> DestinationLimits {
        self.throttle.get()
    }

    /// The Region the destination bucket lives in, where known.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
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
        if !self.copies_from(src.location) {
            return Ok(None);
        }
        self.check_settings(key, &meta.after_write())?;
        let _slot = self.throttle.request().await;
        self.throttle.charge(src.size).await;
        self.backend.copy_from(key, src, meta, plan).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt as _;
    use object_store::path::Path;

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

    /// A local destination's probe writes: it leaves nothing behind, and a root removed
    /// meanwhile is made again (writes would make it too), rather than keeping the
    /// destination down.
    #[tokio::test]
    async fn a_local_probe_writes_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("s3repl-dest-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let local = Destination::local("arn:aws:s3:::local", &dir).unwrap();
        local.probe().await.unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the probe file is removed");
        std::fs::remove_dir_all(&dir).unwrap();
        local.probe().await.unwrap();
        assert!(dir.is_dir());
        local.put("k", Bytes::from_static(b"x"), &ReplicaMeta::default()).await.unwrap();
        assert_eq!(std::fs::read(dir.join("k")).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
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
        use metadata::MetadataNames;
        let az = MetadataNames::Identifiers;
        assert_eq!(az.spell("s3repl-source-seq"), "s3repl_source_seq");
        assert_eq!(az.spell("x.y z"), "x_y_z");
        assert_eq!(az.spell("2fa"), "_2fa");
        assert_eq!(az.spell(""), "_");
        assert_eq!(az.spell("Already_Fine1"), "Already_Fine1");
        assert_eq!(MetadataNames::AsIs.spell("s3repl-source-seq"), "s3repl-source-seq");
    }

    #[cfg(feature = "aws")]
    #[test]
    fn signed_call_failures_are_classified_in_one_place() {
        use signed::SignedError as S;
        let classify = |e| {
            s3::signed_failure("arn:aws:s3:::d", e, Operation::PutAcl, Refusal::VersionNotFound)
        };
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
