//! The generic backend: any `object_store` store (memory, Google Cloud Storage, Azure Blob
//! Storage, an embedder's own), written through its trait alone.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, TagSet,
};

use super::backend::{Backend, Stamp};
use super::metadata::{MetadataNames, metadata_entry};
use super::multipart::Upload;
use super::{
    CurrentReplica, DestinationError, MultipartWrite, Operation, Pending, PutOutcome, Refusal,
    ReplicaMeta, VersionSettings,
};

/// A destination written through `object_store` alone.
pub(crate) struct StoreBackend {
    pub(super) arn: Arc<str>,
    pub(super) store: Arc<dyn ObjectStore>,
    /// Whether the store keeps object metadata attributes (`LocalFileSystem` does not).
    keeps_metadata: bool,
    /// How the store spells user-metadata names.
    names: MetadataNames,
    /// Whether the store takes S3 storage classes (memory; Azure's access tiers and GCS's
    /// classes are other sets, so their container or bucket default applies).
    s3_storage_classes: bool,
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBackend")
            .field("arn", &self.arn)
            .field("store", &self.store.to_string())
            .field("keeps_metadata", &self.keeps_metadata)
            .field("names", &self.names)
            .field("s3_storage_classes", &self.s3_storage_classes)
            .finish()
    }
}

impl StoreBackend {
    /// A backend writing to `store`, with metadata attributes if `keeps_metadata`.
    pub(super) fn new(arn: Arc<str>, store: Arc<dyn ObjectStore>, keeps_metadata: bool) -> Self {
        StoreBackend {
            arn,
            store,
            keeps_metadata,
            names: MetadataNames::AsIs,
            s3_storage_classes: false,
        }
    }

    /// Sends S3 storage classes (a store that takes S3's names).
    pub(super) fn with_s3_storage_classes(mut self) -> Self {
        self.s3_storage_classes = true;
        self
    }

    /// Spells user-metadata names as `names`.
    #[cfg_attr(not(feature = "azure"), allow(dead_code))]
    pub(super) fn with_names(mut self, names: MetadataNames) -> Self {
        self.names = names;
        self
    }

    /// `e` from the store, classified for `operation`.
    pub(super) fn fail(
        &self,
        operation: Operation,
    ) -> impl Fn(object_store::Error) -> DestinationError {
        let arn = self.arn.clone();
        move |e| DestinationError::classify(&arn, operation, e)
    }

    /// The attributes and tags a replica is written with.
    pub(super) fn attributes_and_tags(&self, meta: &ReplicaMeta) -> (Attributes, TagSet) {
        if !self.keeps_metadata {
            return (Attributes::new(), tags(meta));
        }
        // Sized once: growing the map rehashes it, and a replica has a handful of entries.
        let mut attributes = Attributes::with_capacity(meta.user_metadata.len() + 6);
        for (k, v) in &meta.user_metadata {
            let value = match v {
                Cow::Borrowed(v) => AttributeValue::from(*v),
                Cow::Owned(v) => AttributeValue::from(v.clone()),
            };
            attributes.insert(Attribute::Metadata(self.names.spell_name(k)), value);
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

    /// The write of a whole replica through the store, at `path`.
    pub(super) async fn put_at(
        &self,
        path: Path,
        data: Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, DestinationError> {
        let (attributes, tags) = self.attributes_and_tags(meta);
        let opts = PutOptions { attributes, tags, ..PutOptions::default() };
        let r = self
            .store
            .put_opts(&path, PutPayload::from_bytes(data), opts)
            .await
            .map_err(self.fail(Operation::Put))?;
        Ok(PutOutcome { version_id: r.version, e_tag: r.e_tag, pending: Pending::NONE })
    }

    /// The start of a multipart upload through the store, at `path`. Other stores than S3
    /// have no ACLs and refuse locks before this: nothing is pending.
    pub(super) async fn start_multipart_at(
        &self,
        path: Path,
        meta: &ReplicaMeta,
    ) -> Result<MultipartWrite, DestinationError> {
        let (attributes, tags) = self.attributes_and_tags(meta);
        let opts = PutMultipartOptions { attributes, tags, ..PutMultipartOptions::default() };
        let upload = self
            .store
            .put_multipart_opts(&path, opts)
            .await
            .map_err(self.fail(Operation::MultipartInit))?;
        Ok(MultipartWrite::new(self.arn.clone(), Upload::Store(upload), Pending::NONE))
    }

    /// A delete of `path` (a marker, on versioned stores).
    pub(super) async fn delete_at(&self, path: Path) -> Result<Option<String>, DestinationError> {
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(Operation::DeleteMarker)(e)),
        }
    }
}

#[async_trait]
impl Backend for StoreBackend {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn keeps_metadata(&self) -> bool {
        self.keeps_metadata
    }

    fn names(&self) -> MetadataNames {
        self.names
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, DestinationError> {
        let path = exact_path(key).map_err(self.fail(Operation::Put))?;
        self.put_at(path, data, meta).await
    }

    async fn start_multipart(
        &self,
        key: &str,
        meta: &ReplicaMeta,
    ) -> Result<MultipartWrite, DestinationError> {
        let path = exact_path(key).map_err(self.fail(Operation::MultipartInit))?;
        self.start_multipart_at(path, meta).await
    }

    async fn delete_marker(&self, key: &str) -> Result<Option<String>, DestinationError> {
        let path = exact_path(key).map_err(self.fail(Operation::DeleteMarker))?;
        self.delete_at(path).await
    }

    async fn head(
        &self,
        key: &str,
        name: &str,
        version: Option<String>,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        let fail = self.fail(Operation::Head);
        let path = exact_path(key).map_err(&fail)?;
        let opts = object_store::GetOptions {
            head: true,
            version: version.clone(),
            ..object_store::GetOptions::default()
        };
        match self.store.get_opts(&path, opts).await {
            Ok(r) => Ok(Some(CurrentReplica {
                value: metadata_entry(&r.attributes, &self.names.spell(name)),
                version: version.or(r.meta.version),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    /// The replica must be the key's current object (these stores address no other version
    /// for a change); a tag change rewrites it with the new tags, as a store without
    /// per-version tagging must. ACLs and Object Lock do not exist here (refused before).
    async fn sync_metadata(
        &self,
        key: &str,
        stamp: Stamp<'_>,
        _replica_version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<Option<String>, DestinationError> {
        let fail = self.fail(Operation::PutTagging);
        let path = exact_path(key).map_err(&fail)?;
        // A rewrite needs the bytes.
        let current = match self.store.get_opts(&path, object_store::GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(missing(&self.arn, key, "no current replica"));
            }
            Err(e) => return Err(fail(e)),
        };
        let found = metadata_entry(&current.attributes, &self.names.spell(stamp.name));
        if found.as_deref() != Some(stamp.value) {
            return Err(missing(&self.arn, key, "the current replica is not this source version"));
        }
        let version = current.meta.version.clone();
        let Some(tags) = settings.tags else { return Ok(version) };
        let attributes = current.attributes.clone();
        let data = current.bytes().await.map_err(&fail)?;
        let mut tag_set = TagSet::default();
        for (k, v) in tags {
            tag_set.push(k, v);
        }
        let opts = PutOptions { attributes, tags: tag_set, ..PutOptions::default() };
        let r =
            self.store.put_opts(&path, PutPayload::from_bytes(data), opts).await.map_err(fail)?;
        Ok(r.version)
    }
}

/// A metadata change whose replica is not there: FAILED, as S3 reports it.
pub(super) fn missing(arn: &str, key: &str, what: &str) -> DestinationError {
    DestinationError::Permanent {
        destination: arn.to_owned(),
        operation: Operation::PutTagging,
        refusal: Refusal::VersionNotFound,
        source: object_store::Error::NotFound {
            path: key.to_owned(),
            source: what.to_owned().into(),
        },
    }
}

/// `key` as an `object_store` path, refused unless the path names exactly that key: `Path`
/// drops a leading or trailing `/` (a console's folder marker `logs/` would be written as
/// `logs`, and a later `logs/x` could not be) and cannot hold empty, `.` or `..` segments.
/// S3 destinations send such keys as they are, with signed calls.
pub(super) fn exact_path(key: &str) -> Result<Path, object_store::Error> {
    let path = Path::parse(key).map_err(|e| object_store::Error::InvalidPath { source: e })?;
    if path.as_ref() != key {
        let why = format!(
            "key {key:?} cannot be stored under its own name here: this store's paths have no leading or trailing '/'"
        );
        return Err(object_store::Error::NotSupported { source: why.into() });
    }
    Ok(path)
}

/// The replica's tags as `object_store` sends them.
fn tags(meta: &ReplicaMeta) -> TagSet {
    let mut tags = TagSet::default();
    for (k, v) in &meta.tags {
        tags.push(k, v);
    }
    tags
}
