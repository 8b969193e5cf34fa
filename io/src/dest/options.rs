//! How destinations and sources on S3-compatible endpoints, GCS and Azure are reached
//! (options, signed version reads, server-side copy plans).

use std::fmt;
#[cfg(feature = "aws")]
use std::sync::Arc;

#[cfg(feature = "aws")]
use bytes::Bytes;
#[cfg(feature = "aws")]
use object_store::ObjectStore;

#[cfg(feature = "aws")]
use super::signed;

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
#[cfg(feature = "aws")]
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
    /// Where this bucket is, for server-side copies out of it
    /// ([`Destination::copy_from`](super::Destination::copy_from)).
    pub fn location(&self) -> S3Location {
        S3Location { endpoint: self.endpoint.clone(), bucket: self.bucket.clone() }
    }
}

/// Signed reads of one bucket on an S3-compatible endpoint: versions by exact key (for keys
/// `object_store`'s paths cannot hold unchanged, a `logs/` folder marker, `a//b`, which its
/// client would read as another object or refuse), and the listing, headers and tags of its
/// versions (for intake and `s3repl verify`).
#[cfg(feature = "aws")]
#[derive(Debug, Clone)]
pub struct S3VersionReader {
    s3: Arc<signed::SignedS3>,
}

/// Why a signed read failed.
#[cfg(feature = "aws")]
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

#[cfg(feature = "aws")]
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
        self.s3.get_object(key, version_id, range).await.map_err(read_error)
    }

    /// Whether `key` needs this reader: `object_store` cannot address it unchanged.
    pub fn needed_for(key: &str) -> bool {
        !addressable(key)
    }

    /// One page (up to `max_keys` entries) of the bucket's versions and delete markers under
    /// `prefix` (`ListObjectVersions`), after `after` (the previous page's
    /// [`VersionPage::next`]).
    pub async fn list_versions(
        &self,
        prefix: &str,
        after: Option<&(String, String)>,
        max_keys: u32,
    ) -> Result<VersionPage, S3ReadError> {
        let after = after.map(|(k, v)| (k.as_str(), v.as_str()));
        let body = self.s3.list_versions_page(prefix, after, max_keys).await.map_err(read_error)?;
        let (entries, next) = super::answers::version_listing(&body).ok_or_else(|| {
            S3ReadError::Refused(format!("not a ListObjectVersions answer: {}", clip(&body)))
        })?;
        let entries = entries
            .into_iter()
            .map(|l| ListedVersion {
                last_modified_ms: l.last_modified.as_deref().and_then(signed::parse_iso8601_ms),
                key: l.key,
                version_id: l.version_id,
                delete_marker: l.delete_marker,
                is_latest: l.is_latest,
                size: l.size,
                etag: l.etag,
                storage_class: l.storage_class,
            })
            .collect();
        Ok(VersionPage { entries, next })
    }

    /// The headers of version `version_id` of `key` (`HeadObject`); `None` when there is no
    /// such version (or it is a delete marker).
    pub async fn head(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<VersionHead>, S3ReadError> {
        let Some(headers) = self.s3.head_object(key, Some(version_id)).await.map_err(read_error)?
        else {
            return Ok(None);
        };
        let headers: Vec<(String, String)> = headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        Ok(Some(VersionHead { headers }))
    }

    /// The tags of version `version_id` of `key` (`GetObjectTagging`), in the answer's order.
    pub async fn tags(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Vec<(String, String)>, S3ReadError> {
        let body = self.s3.get_tagging(key, version_id).await.map_err(read_error)?;
        super::answers::tag_set(&body).ok_or_else(|| {
            S3ReadError::Refused(format!("not a GetObjectTagging answer: {}", clip(&body)))
        })
    }
}

#[cfg(feature = "aws")]
impl S3VersionReader {
    /// The ACL of version `version_id` of `key` (`GetObjectAcl`): its grants, the owner's
    /// own included, as S3 lists them.
    pub async fn acl(&self, key: &str, version_id: &str) -> Result<super::ObjectAcl, S3ReadError> {
        let body = self.s3.get_acl(key, version_id).await.map_err(read_error)?;
        super::answers::acl_grants(&body).map(super::ObjectAcl::Grants).ok_or_else(|| {
            S3ReadError::Refused(format!("not a GetObjectAcl answer: {}", clip(&body)))
        })
    }
}

/// A signed call's failure as a read error.
#[cfg(feature = "aws")]
fn read_error(e: signed::SignedError) -> S3ReadError {
    match e {
        e if e.is_transient() => S3ReadError::Transient(e.to_string()),
        signed::SignedError::Status(404, body) => S3ReadError::NotFound(body),
        e => S3ReadError::Refused(e.to_string()),
    }
}

/// The start of an answer body, for error messages.
#[cfg(feature = "aws")]
fn clip(body: &str) -> String {
    body.chars().take(200).collect()
}

/// One version or delete marker of a `ListObjectVersions` page.
#[cfg(feature = "aws")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVersion {
    /// The object key.
    pub key: String,
    /// Its version id (`null` for an object written while versioning was off).
    pub version_id: String,
    /// Whether this entry is a delete marker.
    pub delete_marker: bool,
    /// Whether it is the key's current version.
    pub is_latest: bool,
    /// Bytes (0 for delete markers).
    pub size: u64,
    /// The `ETag` as listed (quoted), absent for delete markers.
    pub etag: Option<String>,
    /// `LastModified`, in milliseconds since the Unix epoch.
    pub last_modified_ms: Option<u64>,
    /// The storage class as listed.
    pub storage_class: Option<String>,
}

/// One page of [`S3VersionReader::list_versions`].
#[cfg(feature = "aws")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionPage {
    /// The entries, per key newest first.
    pub entries: Vec<ListedVersion>,
    /// Where the next page starts (key and version id markers); `None` on the last page.
    pub next: Option<(String, String)>,
}

/// The answer to a `HeadObject` of one version: its headers, names in lower case.
#[cfg(feature = "aws")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionHead {
    /// Every header whose value is text.
    pub headers: Vec<(String, String)>,
}

#[cfg(feature = "aws")]
impl VersionHead {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The user metadata (`x-amz-meta-*`), names without the prefix.
    pub fn user_metadata(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers.iter().filter_map(|(n, v)| Some((n.strip_prefix("x-amz-meta-")?, v.as_str())))
    }

    /// `Content-Length`.
    pub fn size(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// `x-amz-tagging-count` (0 when absent).
    pub fn tagging_count(&self) -> u64 {
        self.header("x-amz-tagging-count").and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// Whether `object_store` addresses `key` unchanged: its paths drop a leading or trailing `/`
/// and cannot hold empty, `.` or `..` segments. Other keys are written and read with signed
/// calls on S3, and refused elsewhere.
pub fn addressable(key: &str) -> bool {
    super::store::exact_path(key).is_ok()
}

/// Where a source bucket's versions live on an S3-compatible endpoint. An S3 destination on
/// the same endpoint copies them server-side (`CopyObject`, `UploadPartCopy`) instead of
/// reading and writing the bytes ([`Destination::copy_from`](super::Destination::copy_from)).
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
