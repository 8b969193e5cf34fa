//! Destinations: where replicas are written, through `object_store` (local file system, in
//! memory, S3-compatible endpoints, Google Cloud Storage, Azure Blob Storage).
//!
//! A [`Destination`] writes one replica version (data, metadata, content headers, storage
//! class, tags) or a delete marker, applies the per-version settings `object_store` cannot send
//! (ACL, Object Lock retention and legal hold: signed S3 calls on the version just written), and
//! reports what the target did. [`DestinationRegistry`] maps destination bucket ARNs from a
//! replication configuration to destinations.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
mod local;
mod memory;
mod replica;
mod signed;
mod uploads;

pub use local::sync_file_system;
pub use replica::{
    AclGrant, AclPermission, CannedAcl, ContentHeaders, Grantee, LockMode, ObjectAcl, ObjectLock,
    Pending, ReplicaMeta, Retention, VersionSettings,
};
#[doc(hidden)]
pub use signed::read_answer;
pub use uploads::{OpenUpload, UploadJournal};

use object_store::path::Path;
use object_store::{
    Attribute, Attributes, MultipartUpload, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, TagSet,
};

/// How to reach an S3-compatible destination bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:8333`.
    pub endpoint: String,
    /// Bucket name at that endpoint.
    pub bucket: String,
    /// Signing region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (never printed).
    pub secret_access_key: String,
    /// Allow plain HTTP (loopback test servers).
    pub allow_http: bool,
    /// Virtual-hosted-style addressing (`bucket.host`) instead of path style.
    pub virtual_hosted_style: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish_non_exhaustive()
    }
}

/// An `object_store` client for the bucket `opts` names (destinations, and sources read by
/// version id).
pub fn s3_store(opts: &S3Options) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&opts.endpoint)
        .with_bucket_name(&opts.bucket)
        .with_region(&opts.region)
        .with_access_key_id(&opts.access_key_id)
        .with_secret_access_key(&opts.secret_access_key)
        .with_allow_http(opts.allow_http)
        .with_virtual_hosted_style_request(opts.virtual_hosted_style)
        .build()?;
    Ok(Arc::new(store))
}

impl S3Options {
    /// Where this bucket is, for server-side copies out of it ([`Destination::copy_from`]).
    pub fn location(&self) -> S3Location {
        S3Location { endpoint: self.endpoint.clone(), bucket: self.bucket.clone() }
    }
}

/// Signed reads of versions from one bucket on an S3-compatible endpoint, by exact key: for
/// keys `object_store`'s paths cannot hold unchanged (a `logs/` folder marker, `a//b`), which
/// its client would read as another object or refuse.
#[derive(Debug, Clone)]
pub struct S3VersionReader {
    s3: Arc<signed::SignedS3>,
}

/// Why a signed read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum S3ReadError {
    /// The server has no such version (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// No answer, throttling or a server error: the same read may succeed later.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Refused (permission, a bad request): repeating it cannot succeed.
    #[error("refused: {0}")]
    Refused(String),
}

impl S3VersionReader {
    /// A reader of the bucket `opts` names.
    pub fn new(opts: &S3Options) -> Self {
        S3VersionReader { s3: Arc::new(signed::SignedS3::new(opts.clone())) }
    }

    /// The bytes of version `version_id` of `key` (bytes `range` only, if given).
    pub async fn get(
        &self,
        key: &str,
        version_id: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, S3ReadError> {
        self.s3.get_object(key, version_id, range).await.map_err(|e| match e {
            e if e.is_transient() => S3ReadError::Transient(e.to_string()),
            signed::SignedError::Status(404, body) => S3ReadError::NotFound(body),
            e => S3ReadError::Refused(e.to_string()),
        })
    }

    /// Whether `key` needs this reader: `object_store` cannot address it unchanged.
    pub fn needed_for(key: &str) -> bool {
        !Destination::addressable(key)
    }
}

/// Where a source bucket's versions live on an S3-compatible endpoint. An S3 destination on
/// the same endpoint copies them server-side (`CopyObject`, `UploadPartCopy`) instead of
/// reading and writing the bytes ([`Destination::copy_from`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    /// Endpoint URL, as in [`S3Options::endpoint`].
    pub endpoint: String,
    /// The bucket's name at that endpoint.
    pub bucket: String,
}

/// One source version to copy server-side.
#[derive(Debug, Clone, Copy)]
pub struct CopySource<'a> {
    /// Where the source bucket is.
    pub location: &'a S3Location,
    /// The key.
    pub key: &'a str,
    /// The version id.
    pub version_id: &'a str,
    /// The version's `ETag` as recorded when it was committed (empty: not checked). Sent as
    /// `x-amz-copy-source-if-match`, so the server copies only that content.
    pub etag: &'a str,
    /// The version's size.
    pub size: u64,
}

/// S3's most parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;

/// How server-side copies are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyPlan {
    /// The largest object copied with one `CopyObject` (S3 allows 5 GiB).
    pub single_max: u64,
    /// The part size of larger copies (`UploadPartCopy`; grown where an object would need more
    /// than 10,000 parts).
    pub part_size: u64,
    /// Parts copied at once.
    pub concurrency: usize,
}

/// How to reach a Google Cloud Storage bucket.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GcsOptions {
    /// The bucket.
    pub bucket: String,
    /// A service account key file (JSON); without it or a token, the application default
    /// credentials.
    pub service_account_path: Option<std::path::PathBuf>,
    /// A fixed OAuth bearer token (one the caller keeps fresh, or any string for an emulator;
    /// never printed). `object_store` 0.14's GCS writes fetch a credential even with
    /// `skip_signature`, so unsigned access is spelled this way.
    pub bearer_token: Option<String>,
    /// Another endpoint than Google's (an emulator such as fake-gcs-server).
    pub base_url: Option<String>,
    /// Allow plain HTTP (loopback emulators).
    pub allow_http: bool,
}

impl fmt::Debug for GcsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsOptions")
            .field("bucket", &self.bucket)
            .field("service_account_path", &self.service_account_path)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "…"))
            .field("base_url", &self.base_url)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// How to reach an Azure Blob Storage container.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AzureOptions {
    /// The storage account.
    pub account: String,
    /// The container.
    pub container: String,
    /// The account's access key (shared-key signing; never printed).
    pub access_key: String,
    /// Another endpoint than `https://<account>.blob.core.windows.net`, e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1` (account in the path).
    pub endpoint: Option<String>,
    /// Allow plain HTTP (loopback emulators).
    pub allow_http: bool,
}

impl fmt::Debug for AzureOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureOptions")
            .field("account", &self.account)
            .field("container", &self.container)
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

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

/// Why a destination write failed, decided once: can the same write succeed if retried?
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// Transient (network, throttling, server error): retry with backoff.
    #[error("destination {destination}: transient failure: {source}")]
    Transient {
        /// The destination bucket ARN.
        destination: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Permanent (permission, missing bucket, unsupported): the version is FAILED.
    #[error("destination {destination}: permanent failure ({reason}): {source}")]
    Permanent {
        /// The destination bucket ARN.
        destination: String,
        /// S3's replication failure reason name (`DstPutObjectNotPermitted`, ...).
        reason: &'static str,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

impl DestinationError {
    /// Whether retrying the same write may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DestinationError::Transient { .. })
    }

    /// The one place destination errors are classified.
    fn classify(destination: &str, put: bool, source: object_store::Error) -> Self {
        use object_store::Error as E;
        let reason = match &source {
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                Some(if put { "DstPutObjectNotPermitted" } else { "DstDelObjNotPermitted" })
            }
            E::NotSupported { .. } | E::NotImplemented { .. } | E::InvalidPath { .. } => {
                Some("DstPutObjectNotPermitted")
            }
            // A write answered "not found" means the bucket is missing.
            E::NotFound { .. } if put => Some("DstBucketNotFound"),
            _ => None,
        };
        match reason {
            Some(reason) => {
                DestinationError::Permanent { destination: destination.to_owned(), reason, source }
            }
            None => DestinationError::Transient { destination: destination.to_owned(), source },
        }
    }
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
        let fail = |e| self.signed_failure(e, "DstMultipartAbortNotPermitted", "DstBucketNotFound");
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
        reason: &'static str,
    ) -> Result<(), DestinationError> {
        if !self.keeps_metadata {
            return Ok(());
        }
        match meta.unsendable() {
            None => Ok(()),
            Some(why) => Err(DestinationError::Permanent {
                destination: self.arn.to_string(),
                reason,
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
                reason: "DstBucketObjectLockConfigMissing",
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
                self.signed_failure(e, "DstPutTaggingNotPermitted", "DstVersionNotFound")
            })?;
        }
        if let Some(acl) = settings.acl {
            s3.put_acl(key, version, acl).await.map_err(|e| {
                self.signed_failure(e, "DstPutAclNotPermitted", "DstVersionNotFound")
            })?;
        }
        if let Some(retention) = settings.retention {
            s3.put_retention(key, version, retention).await.map_err(|e| {
                self.signed_failure(e, "DstPutRetentionNotPermitted", "DstVersionNotFound")
            })?;
        }
        if let Some(on) = settings.legal_hold {
            s3.put_legal_hold(key, version, on).await.map_err(|e| {
                self.signed_failure(e, "DstPutLegalHoldNotPermitted", "DstVersionNotFound")
            })?;
        }
        Ok(())
    }

    /// The one place a signed call's failure is classified: no answer, throttling and server
    /// errors are transient; "not found" is `not_found` (the version, or for a write the
    /// bucket); a bucket without Object Lock is `DstBucketObjectLockConfigMissing`; any other
    /// refusal is `refused`.
    fn signed_failure(
        &self,
        e: signed::SignedError,
        refused: &'static str,
        not_found: &'static str,
    ) -> DestinationError {
        let destination = self.arn.to_string();
        let reason = match &e {
            _ if e.is_transient() => None,
            signed::SignedError::Status(404, _) => Some(not_found),
            signed::SignedError::Status(_, body)
                if body.contains("Object Lock Configuration")
                    || body.contains("ObjectLockConfiguration") =>
            {
                Some("DstBucketObjectLockConfigMissing")
            }
            _ => Some(refused),
        };
        let source = object_store::Error::Generic { store: "S3", source: Box::new(e) };
        match reason {
            None => DestinationError::Transient { destination, source },
            Some(reason) => DestinationError::Permanent { destination, reason, source },
        }
    }

    /// Writes one replica in a single PUT.
    pub async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, DestinationError> {
        let fail = |e| DestinationError::classify(&self.arn, true, e);
        self.check_settings(key, &meta.after_write())?;
        self.check_sendable(meta, "DstPutObjectNotPermitted")?;
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
            let outcome = s3.put_object(key, data, meta).await.map_err(|e| {
                self.signed_failure(e, "DstPutObjectNotPermitted", "DstBucketNotFound")
            })?;
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
                let job = move || local::block_on(store.put_opts(&path, payload, opts));
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
            return s3
                .delete_object(key)
                .await
                .map_err(|e| self.signed_failure(e, "DstDelObjNotPermitted", "DstBucketNotFound"));
        }
        let fail = |e| DestinationError::classify(&self.arn, false, e);
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

/// How a store spells user-metadata names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetadataNames {
    /// As given (S3, GCS, memory).
    AsIs,
    /// As identifiers (Azure Blob: letters, digits and `_`, not starting with a digit): every
    /// other character becomes `_`, so `s3repl-source-seq` is `s3repl_source_seq` there. Two
    /// names differing only in such characters (`a-b`, `a_b`) collide; the later one wins.
    Identifiers,
}

impl MetadataNames {
    fn spell(self, name: &str) -> String {
        match self {
            MetadataNames::AsIs => name.to_owned(),
            MetadataNames::Identifiers => {
                let mut out: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
                    .collect();
                if out.chars().next().is_none_or(|c| c.is_ascii_digit()) {
                    out.insert(0, '_');
                }
                out
            }
        }
    }
}

/// The user-metadata entry `name` among `attributes`.
fn metadata_entry(attributes: &object_store::Attributes, name: &str) -> Option<String> {
    attributes.iter().find_map(|(k, v)| match k {
        Attribute::Metadata(m) if m.as_ref() == name => Some(v.as_ref().to_owned()),
        _ => None,
    })
}

/// What a HEAD found as a key's current replica ([`Destination::current_replica`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentReplica {
    /// The requested user-metadata entry (`None`: the object has none, or the store keeps no
    /// metadata and so cannot tell).
    pub value: Option<String>,
    /// The current version's id, where the store versions.
    pub version: Option<String>,
}

impl Destination {
    /// The current replica of `key` (one HEAD request) with its user-metadata entry `name`:
    /// `None` when the key has no current object (absent, or a delete marker). Stores that keep
    /// no metadata cannot tell, and answer an empty [`CurrentReplica`] without asking. Used to
    /// recognise replays after a crash without writing twice.
    pub async fn current_replica(
        &self,
        key: &str,
        name: &str,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        if !self.keeps_metadata {
            return Ok(Some(CurrentReplica::default()));
        }
        self.head(key, name, None).await
    }

    /// One HEAD of `key` (at `version`, else its current version): `None` when there is no
    /// such object.
    async fn head(
        &self,
        key: &str,
        name: &str,
        version: Option<String>,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        if let Some(s3) = &self.s3 {
            let answer = s3.head_object(key, version.as_deref()).await.map_err(|e| {
                self.signed_failure(e, "DstPutObjectNotPermitted", "DstBucketNotFound")
            })?;
            return Ok(answer.map(|headers| CurrentReplica {
                value: signed::answer_header(&headers, &format!("x-amz-meta-{name}")),
                version: version.or_else(|| signed::answer_header(&headers, "x-amz-version-id")),
            }));
        }
        let fail = |e| DestinationError::classify(&self.arn, false, e);
        let path = self.store_path(key).map_err(fail)?;
        let opts = object_store::GetOptions {
            head: true,
            version: version.clone(),
            ..object_store::GetOptions::default()
        };
        match self.store.get_opts(&path, opts).await {
            Ok(r) => Ok(Some(CurrentReplica {
                value: self.metadata(&r.attributes, name),
                version: version.or(r.meta.version),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    /// The newest version of `key` below its current delete marker(s), with its user-metadata
    /// entry `name` (one `ListObjectVersions` and one HEAD; S3 targets only, `None` elsewhere
    /// or when the key has no version). Used on replay to find a replica that a later delete
    /// marker hides.
    pub async fn hidden_replica(
        &self,
        key: &str,
        name: &str,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        let Some(s3) = &self.s3 else { return Ok(None) };
        let version = s3.newest_version(key).await.map_err(|e| {
            // A failed listing only means the replay cannot tell yet: retry it.
            let destination = self.arn.to_string();
            let source = object_store::Error::Generic { store: "S3", source: Box::new(e) };
            DestinationError::Transient { destination, source }
        })?;
        let Some(version) = version else { return Ok(None) };
        self.head(key, name, Some(version)).await
    }

    /// Metadata-only replication: gives the replica of source version `source_version_id`
    /// the changed `settings` (tags, ACL, retention, legal hold); returns the destination
    /// version updated.
    ///
    /// With `replica_version` (the version the destination minted for that replica, from the
    /// engine's version map) the settings go to exactly that version on S3, current or not.
    /// Without it, the replica must be the key's current version, identified by its
    /// `s3repl-source-version-id` stamp. On stores without versions a tag change rewrites the
    /// object with the new tags; stores that keep no metadata have no tags to update. ACLs
    /// exist on S3 destinations only; Object Lock protection anywhere else is refused.
    pub async fn sync_metadata(
        &self,
        key: &str,
        source_version_id: &str,
        replica_version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<Option<String>, DestinationError> {
        self.check_settings(key, settings)?;
        if !self.keeps_metadata {
            return Ok(None);
        }
        if let (Some(_), Some(v)) = (&self.s3, replica_version) {
            self.apply(key, Some(v), settings).await?;
            return Ok(Some(v.to_owned()));
        }
        let fail = |e| DestinationError::classify(&self.arn, true, e);
        let missing = |what: &str| DestinationError::Permanent {
            destination: self.arn.to_string(),
            reason: "DstVersionNotFound",
            source: object_store::Error::NotFound {
                path: key.to_owned(),
                source: what.to_owned().into(),
            },
        };
        if self.s3.is_some() {
            // Only the current version's stamp and id are needed: one HEAD.
            let stamp = "s3repl-source-version-id";
            let current = self.head(key, stamp, None).await?;
            let Some(current) = current else { return Err(missing("no current replica")) };
            if current.value.as_deref() != Some(source_version_id) {
                return Err(missing("the current replica is not this source version"));
            }
            self.apply(key, current.version.as_deref(), settings).await?;
            return Ok(current.version);
        }
        let path = self.store_path(key).map_err(fail)?;
        // A rewrite needs the bytes.
        let current = match self.store.get_opts(&path, object_store::GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(missing("no current replica")),
            Err(e) => return Err(fail(e)),
        };
        let stamp = self.metadata(&current.attributes, "s3repl-source-version-id");
        if stamp.as_deref() != Some(source_version_id) {
            return Err(missing("the current replica is not this source version"));
        }
        let version = current.meta.version.clone();
        let Some(tags) = settings.tags else { return Ok(version) };
        // A store without per-version tagging: rewrite the object with the new tags.
        let attributes = current.attributes.clone();
        let data = current.bytes().await.map_err(fail)?;
        let mut tag_set = TagSet::default();
        for (k, v) in tags {
            tag_set.push(k, v);
        }
        let opts = PutOptions { attributes, tags: tag_set, ..PutOptions::default() };
        let r =
            self.store.put_opts(&path, PutPayload::from_bytes(data), opts).await.map_err(fail)?;
        Ok(r.version)
    }

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
        let reason = match &e {
            signed::SignedError::Status(404, body)
                if body.contains("NoSuchKey") || body.contains("NoSuchVersion") =>
            {
                Some("SrcVersionNotFound")
            }
            signed::SignedError::Status(404, body)
                if body.contains(&format!("<BucketName>{source_bucket}</BucketName>")) =>
            {
                Some("SrcBucketNotFound")
            }
            signed::SignedError::Status(412, _) => Some("SrcObjectNotEligible"),
            _ => None,
        };
        match reason {
            Some(reason) => DestinationError::Permanent {
                destination: self.arn.to_string(),
                reason,
                source: object_store::Error::Generic { store: "S3", source: Box::new(e) },
            },
            None => self.signed_failure(e, "DstPutObjectNotPermitted", "DstBucketNotFound"),
        }
    }

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
        let fail = |e| DestinationError::classify(&self.arn, true, e);
        self.check_settings(key, &meta.after_write())?;
        self.check_sendable(meta, "DstMultipartInitNotPermitted")?;
        // Every S3 upload is signed: its id is then ours to journal, so an upload a crash
        // leaves open is aborted at the next start (`object_store` keeps the id to itself). It
        // carries the lock at creation; the ACL follows once complete.
        if let Some(s3) = &self.s3 {
            let upload = signed::SignedUpload::start(s3.clone(), key, meta).await.map_err(|e| {
                self.signed_failure(e, "DstMultipartInitNotPermitted", "DstBucketNotFound")
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
                        part.await.map_err(|e| DestinationError::classify(&d.arn, true, e))
                    })
                }
                Upload::Signed(upload) => {
                    let part = upload.put_part(data);
                    Box::pin(async move {
                        part.await.map_err(|e| {
                            let reason = "DstMultipartUploadNotPermitted";
                            d.signed_failure(e, reason, reason)
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
                    e => DestinationError::classify(&d.arn, true, e),
                })?;
                PutOutcome { version_id: r.version, e_tag: r.e_tag, pending: Pending::NONE }
            }
            Upload::Signed(upload) => upload.complete().await.map_err(|e| match e {
                e @ signed::SignedError::Status(404, _) => {
                    gone(object_store::Error::Generic { store: "S3", source: Box::new(e) })
                }
                e => {
                    let reason = "DstMultipartCompleteNotPermitted";
                    d.signed_failure(e, reason, reason)
                }
            })?,
        };
        Ok(PutOutcome { pending: self.pending, ..r })
    }

    /// Aborts the upload, removing its parts from the target.
    pub async fn abort(mut self) -> Result<(), DestinationError> {
        let d = &self.destination;
        match &mut self.upload {
            Upload::Store(upload) => {
                upload.abort().await.map_err(|e| DestinationError::classify(&d.arn, true, e))
            }
            Upload::Signed(upload) => upload.abort().await.map_err(|e| {
                let reason = "DstMultipartAbortNotPermitted";
                d.signed_failure(e, reason, reason)
            }),
        }
    }
}

/// Writer threads for local destinations (one pool per process): file creation on a local file
/// system is CPU work in the kernel (tmpfs) or waits on the journal (ext4, where more writers in
/// flight help).
pub const LOCAL_WRITERS: usize = 8;

/// Destination bucket ARN → destination.
#[derive(Debug, Clone, Default)]
pub struct DestinationRegistry {
    by_arn: HashMap<String, Destination>,
}

impl DestinationRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        DestinationRegistry::default()
    }

    /// Registers a destination under its ARN (replacing any previous one).
    pub fn insert(&mut self, d: Destination) {
        self.by_arn.insert(d.arn().to_owned(), d);
    }

    /// The destination for an ARN.
    pub fn get(&self, arn: &str) -> Option<&Destination> {
        self.by_arn.get(arn)
    }

    /// [`Destination::sync`] of every destination (blocking).
    pub fn sync(&self) -> Result<(), DestinationError> {
        self.by_arn.values().try_for_each(Destination::sync)
    }

    /// Every registered destination.
    pub fn iter(&self) -> impl Iterator<Item = &Destination> + '_ {
        self.by_arn.values()
    }
}

/// Conformance checks every destination implementation must pass; run them against each
/// backend (in memory and local in unit tests; S3-compatible servers in end-to-end tests).
pub mod conformance {
    use super::{Destination, DestinationError, ReplicaMeta};
    use bytes::Bytes;
    use object_store::ObjectStoreExt;

    /// A replica reads back byte for byte; a second PUT of the same key replaces it; a delete
    /// marker removes it; deleting again is not an error.
    pub async fn put_get_delete(d: &Destination) -> Result<(), String> {
        let key = "conformance/a b/é.bin";
        let meta = ReplicaMeta {
            user_metadata: vec![("s3repl-replication-status".into(), "REPLICA".into())],
            ..ReplicaMeta::default()
        };
        d.put(key, Bytes::from_static(b"first"), &meta).await.map_err(|e| e.to_string())?;
        let second = d
            .put(key, Bytes::from_static(b"second version"), &meta)
            .await
            .map_err(|e| e.to_string())?;
        let path = object_store::path::Path::parse(key).map_err(|e| e.to_string())?;
        let got = read_back(d, &path).await?;
        if &got[..] != b"second version" {
            return Err(format!("read back {got:?}"));
        }
        let marker = d.delete_marker(key).await.map_err(|e| e.to_string())?;
        if d.store().head(&path).await.is_ok() {
            return Err("the object survived its delete marker".into());
        }
        // A versioning target names the marker it created, as it named the version.
        if second.version_id.is_some() && (marker.is_none() || marker == second.version_id) {
            return Err(format!("delete marker version {marker:?} after {:?}", second.version_id));
        }
        if d.keeps_metadata {
            let current = d.current_replica(key, "s3repl-replication-status").await;
            if current.map_err(|e| e.to_string())?.is_some() {
                return Err("a deleted key still has a current replica".into());
            }
        }
        d.delete_marker(key).await.map_err(|e| e.to_string()).map(|_| ())
    }

    async fn read_back(d: &Destination, path: &object_store::path::Path) -> Result<Bytes, String> {
        let got = d.store().get(path).await.map_err(|e| e.to_string())?;
        got.bytes().await.map_err(|e| e.to_string())
    }

    /// Parts upload concurrently and complete into one object in order; an aborted upload
    /// leaves no object behind.
    pub async fn multipart(d: &Destination) -> Result<(), String> {
        let key = "conformance/multipart";
        let meta = ReplicaMeta::default();
        let mut up = d.start_multipart(key, &meta).await.map_err(|e| e.to_string())?;
        let first = up.put_part(Bytes::from(vec![b'a'; 5 << 20]));
        let second = up.put_part(Bytes::from_static(b"tail"));
        // Finishing the second part first must not reorder the object.
        second.await.map_err(|e| e.to_string())?;
        first.await.map_err(|e| e.to_string())?;
        up.complete().await.map_err(|e| e.to_string())?;
        let path = object_store::path::Path::parse(key).map_err(|e| e.to_string())?;
        let got = read_back(d, &path).await?;
        if got.len() != (5 << 20) + 4 || !got.ends_with(b"tail") || got.first() != Some(&b'a') {
            return Err(format!("multipart object of {} bytes", got.len()));
        }
        let aborted = "conformance/aborted";
        let mut up = d.start_multipart(aborted, &meta).await.map_err(|e| e.to_string())?;
        up.put_part(Bytes::from_static(b"part")).await.map_err(|e| e.to_string())?;
        up.abort().await.map_err(|e| e.to_string())?;
        let path = object_store::path::Path::parse(aborted).map_err(|e| e.to_string())?;
        if d.store().head(&path).await.is_ok() {
            return Err("an aborted upload left an object".into());
        }
        Ok(())
    }

    /// Keys an `object_store` path cannot hold unchanged (a folder marker `…/folder/`, an
    /// empty segment `a//b`), written whole or as a multipart upload, are either stored under
    /// exactly their own name or refused as a permanent failure: never written under another
    /// name (`Path` would make `…/folder/` into `…/folder`).
    pub async fn exact_keys(d: &Destination) -> Result<(), String> {
        let stamp = "s3repl-source-seq";
        let meta = ReplicaMeta {
            user_metadata: vec![(stamp.into(), "0:1".into())],
            ..ReplicaMeta::default()
        };
        let found = async |key: &str| -> Result<(), String> {
            if !d.keeps_metadata {
                return Ok(());
            }
            // Present (its metadata may not be: SeaweedFS makes `…/` keys directories, which
            // keep none).
            match d.current_replica(key, stamp).await.map_err(|e| e.to_string())? {
                Some(_) => Ok(()),
                None => Err(format!("{key:?} is not there under its own name")),
            }
        };
        let refused = |key: &str, e: DestinationError| match e {
            DestinationError::Permanent { .. } => Ok(()),
            e => Err(format!("{key:?}: {e}")),
        };
        let mut written = Vec::new();
        for key in ["conformance/folder/", "conformance/a//b"] {
            match d.put(key, Bytes::new(), &meta).await {
                Ok(_) => written.push(key),
                Err(e) => refused(key, e)?,
            }
        }
        let key = "conformance/parts/";
        match d.start_multipart(key, &meta).await {
            Ok(mut up) => {
                up.put_part(Bytes::from_static(b"one part")).await.map_err(|e| e.to_string())?;
                up.complete().await.map_err(|e| e.to_string())?;
                written.push(key);
            }
            Err(e) => refused(key, e)?,
        }
        for stripped in ["conformance/folder", "conformance/parts"] {
            let path = object_store::path::Path::parse(stripped).map_err(|e| e.to_string())?;
            if d.store().head(&path).await.is_ok() {
                return Err(format!("{stripped}/ was written as {stripped}"));
            }
        }
        for key in written {
            found(key).await?;
            d.delete_marker(key).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Metadata written with a replica is kept, where the destination keeps metadata.
    pub async fn metadata_kept(d: &Destination) -> Result<(), String> {
        if !d.keeps_metadata {
            return Ok(());
        }
        let key = "conformance/meta";
        let meta = ReplicaMeta {
            user_metadata: vec![("source-version-id".into(), "v1".into())],
            ..ReplicaMeta::default()
        };
        d.put(key, Bytes::from_static(b"x"), &meta).await.map_err(|e| e.to_string())?;
        let path = object_store::path::Path::parse(key).map_err(|e| e.to_string())?;
        let r = d.store().get(&path).await.map_err(|e| e.to_string())?;
        let found = d.metadata(&r.attributes, "source-version-id");
        if found.as_deref() == Some("v1") {
            Ok(())
        } else {
            Err(format!("metadata read back as {found:?}"))
        }
    }
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

    fn reason(e: &DestinationError) -> Option<&'static str> {
        match e {
            DestinationError::Permanent { reason, .. } => Some(reason),
            DestinationError::Transient { .. } => None,
        }
    }

    #[tokio::test]
    async fn stores_without_object_lock_refuse_locked_replicas_before_writing() {
        let d = Destination::in_memory("arn:aws:s3:::mem");
        let locked = ReplicaMeta {
            lock: ObjectLock { retention: None, legal_hold: true },
            ..ReplicaMeta::default()
        };
        let e = d.put("k", Bytes::from_static(b"x"), &locked).await.unwrap_err();
        assert_eq!(reason(&e), Some("DstBucketObjectLockConfigMissing"), "{e}");
        let e = d.start_multipart("k", &locked).await.unwrap_err();
        assert_eq!(reason(&e), Some("DstBucketObjectLockConfigMissing"), "{e}");
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
        let refused = |e: DestinationError| {
            matches!(e, DestinationError::Permanent { reason: "DstPutObjectNotPermitted", .. })
        };
        let e = local.put("r/report#2", Bytes::from_static(b"x"), &meta).await.unwrap_err();
        assert!(refused(e));
        assert!(local.start_multipart("r/report#2", &meta).await.is_err_and(refused));
        assert!(local.delete_marker("r/report#2").await.is_err_and(refused));
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
        let classify = |e, refused, missing| d.signed_failure(e, refused, missing);
        assert!(classify(S::Status(503, String::new()), "R", "M").is_retryable());
        assert!(classify(S::Status(429, String::new()), "R", "M").is_retryable());
        assert!(classify(S::Transport("reset".into()), "R", "M").is_retryable());
        assert_eq!(reason(&classify(S::Status(404, String::new()), "R", "M")), Some("M"));
        assert_eq!(reason(&classify(S::Status(403, String::new()), "R", "M")), Some("R"));
        let no_lock = "<Error><Code>InvalidRequest</Code><Message>Bucket is missing Object Lock Configuration</Message></Error>";
        assert_eq!(
            reason(&classify(S::Status(400, no_lock.into()), "R", "M")),
            Some("DstBucketObjectLockConfigMissing")
        );
    }
}
