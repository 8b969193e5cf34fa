//! The S3 calls `object_store` does not make, signed with [`crate::sigv4`]: on one version,
//! `PutObjectTagging`, `PutObjectAcl`, `PutObjectRetention` and `PutObjectLegalHold`
//! (metadata-only replication, and the settings a replica gets right after its write);
//! `DeleteObject` answering the version id of the delete marker it creates (the engine's
//! version map records it); one `ListObjectVersions` page; a `PutObject` and a multipart
//! upload ([`SignedUpload`]) carrying every header a replica can have, so that its Object Lock
//! and `Expires` are set as it is created (`object_store` sends content headers, storage
//! class, metadata and tags only); and server-side copies from another bucket on the same
//! endpoint (`CopyObject`, `UploadPartCopy`), which `object_store` makes only within a bucket.

use std::fmt::Write as _;
use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;

use super::replica::{ObjectAcl, Pending, ReplicaMeta, Retention};
use super::{PutOutcome, S3Options, answers};

mod upload;
use crate::sigv4;
pub(crate) use upload::SignedUpload;

/// S3's XML namespace.
const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The pooled HTTP/1.1 client the signed calls go through (plain HTTP only where the options
/// allow it).
type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// Where a bucket's requests go, worked out once from the options.
#[derive(Debug, Clone)]
struct Target {
    scheme: http::uri::Scheme,
    /// `host[:port]` as the request line, `Host` header and signature carry it (with the
    /// bucket in front for virtual-hosted-style addressing).
    authority: http::uri::Authority,
    /// The path every object path starts with: the endpoint's own path (if any), then
    /// `/bucket` for path-style addressing.
    prefix: String,
}

impl Target {
    fn new(opts: &S3Options) -> Result<Self, String> {
        let endpoint = opts.endpoint.trim_end_matches('/');
        let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => http::uri::Scheme::HTTPS,
            "http" if opts.allow_http => http::uri::Scheme::HTTP,
            "http" => {
                return Err(format!(
                    "endpoint {endpoint} is plain HTTP, which this destination does not allow \
                     (allow_http)"
                ));
            }
            other => return Err(format!("endpoint {endpoint}: unknown scheme {other:?}")),
        };
        let (authority, prefix) = if opts.virtual_hosted_style {
            (format!("{}.{authority}", opts.bucket), path.to_owned())
        } else {
            (authority.to_owned(), format!("{path}/{}", opts.bucket))
        };
        let authority = authority
            .parse::<http::uri::Authority>()
            .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
        Ok(Target { scheme, authority, prefix })
    }
}

/// The client: TLS through rustls with the platform's verifier (as `object_store`'s own
/// client verifies), `TCP_NODELAY` (a small request must not wait for the previous one's
/// acknowledgement), connections kept alive and reused.
fn http_client(allow_http: bool) -> Result<HttpClient, String> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("TLS certificate verifier: {e}"))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let connector = if allow_http {
        builder.https_or_http().enable_http1().wrap_connector(tcp)
    } else {
        builder.https_only().enable_http1().wrap_connector(tcp)
    };
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector))
}

/// An error and its causes, in one line (hyper's own message names only the outermost).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let _ = write!(out, ": {c}");
        cause = c.source();
    }
    out
}

/// How long a signed call waits for the server.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// For the answer's status and headers. Generous: servers such as `SeaweedFS` answer a
    /// `CopyObject` only once the copy is done (up to 5 GiB).
    answer: Duration,
    /// For the answer's body once its headers arrived (S3 itself answers a long `CopyObject`
    /// with 200 at once and keeps the body open, sending spaces, until the copy is done).
    body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { answer: Duration::from_mins(5), body: Duration::from_mins(5) }
    }
}

/// How long a connection attempt may take (as `object_store`'s own client allows).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A minimal signed client for one S3-compatible bucket.
#[derive(Debug)]
pub(crate) struct SignedS3 {
    pub(crate) opts: S3Options,
    /// The client and where requests go, or why there are none (an unusable endpoint or TLS
    /// setup: every call then fails with that reason).
    conn: Result<(HttpClient, Target), String>,
    timeouts: Timeouts,
    /// Signs with the options' credentials, keeping the day's signing key.
    signer: sigv4::Signer,
    /// Where uploads this client opens are journaled (the destination's ARN with it), so a
    /// restart can abort the ones a crash left open.
    pub(crate) journal: std::sync::OnceLock<(Arc<super::uploads::UploadJournal>, String)>,
}

/// How a signed call ended.
#[derive(Debug)]
pub(crate) enum SignedError {
    /// HTTP status and body from the server.
    Status(u16, String),
    /// No answer (connection, timeout).
    Transport(String),
}

impl SignedError {
    /// Whether the same call may succeed if repeated (no answer, throttling, server error).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            SignedError::Status(code, _) => *code >= 500 || *code == 429,
            SignedError::Transport(_) => true,
        }
    }
}

impl std::fmt::Display for SignedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignedError::Status(code, body) => write!(f, "HTTP {code}: {body}"),
            SignedError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SignedError {}

fn xml_escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Standard base64 (for `x-amz-checksum-sha256`).
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The query naming one version: `versionId=` and the id, URL-encoded.
fn version_query(version_id: &str) -> String {
    format!("versionId={}", sigv4::uri_encode(version_id.as_bytes(), false))
}

/// The query of a per-version subresource call: `sub=` plus the version id, when the replica
/// has one (unversioned buckets: the object itself).
fn subresource(sub: &str, version_id: Option<&str>) -> String {
    match version_id {
        Some(v) => format!("{sub}=&{}", version_query(v)),
        None => format!("{sub}="),
    }
}

/// The tag set as `x-amz-tagging` carries it: URL-encoded `key=value` pairs joined by `&`.
fn tagging_header(tags: &[(String, String)]) -> String {
    let enc = |s: &str| sigv4::uri_encode(s.as_bytes(), false);
    tags.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The headers a replica is created with, by `PutObject` or `CreateMultipartUpload`: content
/// headers (`Expires` included), storage class, user metadata, tags and Object Lock (mode,
/// retain-until date, legal hold). Not the ACL (see [`crate::dest::Destination::put`]).
fn creation_headers(meta: &ReplicaMeta) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let storage_class = ("x-amz-storage-class", meta.storage_class.as_deref());
    for (name, value) in meta.content.named().into_iter().chain([storage_class]) {
        if let Some(v) = value {
            headers.push((name.to_ascii_lowercase(), v.to_owned()));
        }
    }
    for (k, v) in &meta.user_metadata {
        headers.push((format!("x-amz-meta-{}", k.to_ascii_lowercase()), v.to_string()));
    }
    if !meta.tags.is_empty() {
        headers.push(("x-amz-tagging".to_owned(), tagging_header(&meta.tags)));
    }
    if let Some(r) = meta.lock.retention {
        headers.push(("x-amz-object-lock-mode".to_owned(), r.mode.as_str().to_owned()));
        headers.push((
            "x-amz-object-lock-retain-until-date".to_owned(),
            sigv4::iso8601_ms(r.retain_until_ms),
        ));
    }
    if meta.lock.legal_hold {
        headers.push(("x-amz-object-lock-legal-hold".to_owned(), "ON".to_owned()));
    }
    headers
}

impl SignedS3 {
    pub(crate) fn new(opts: S3Options) -> Self {
        let signer = sigv4::Signer::new(&opts.access_key_id, &opts.secret_access_key, &opts.region);
        let conn = Target::new(&opts).and_then(|t| Ok((http_client(opts.allow_http)?, t)));
        if let Err(e) = &conn {
            tracing::warn!(bucket = %opts.bucket, error = %e, "S3 destination unusable; its calls will fail.");
        }
        SignedS3 {
            opts,
            conn,
            signer,
            timeouts: Timeouts::default(),
            journal: std::sync::OnceLock::new(),
        }
    }

    /// Writes one replica with what it carries in the request itself: content headers
    /// (`Expires` included), storage class, user metadata, tags and Object Lock (mode,
    /// retain-until date, legal hold). The ACL is not sent (see [`crate::dest::Destination::put`]).
    /// Returns the version id and `ETag` the server names.
    pub(crate) async fn put_object(
        &self,
        key: &str,
        data: Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, SignedError> {
        let headers = creation_headers(meta);
        let (answer, _) = self.send("PUT", Some(key), "", data, headers).await?;
        Ok(PutOutcome {
            version_id: answer_header(&answer, "x-amz-version-id"),
            e_tag: answer_header(&answer, "etag"),
            pending: Pending::NONE,
        })
    }

    /// Starts a multipart upload of one replica created with everything [`creation_headers`]
    /// sends (its Object Lock and `Expires` included); returns the upload id.
    async fn create_multipart(&self, key: &str, meta: &ReplicaMeta) -> Result<String, SignedError> {
        let headers = creation_headers(meta);
        let (_, body) = self.send("POST", Some(key), "uploads=", Bytes::new(), headers).await?;
        answers::field(&body, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| SignedError::Status(200, format!("no UploadId in {body}")))
    }

    /// Uploads part `number` (from 1); returns its `ETag`. The signed payload hash
    /// (`x-amz-content-sha256`) lets the server verify the part; no `x-amz-checksum-*`
    /// header, which S3 refuses on parts of an upload created without a checksum algorithm.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<String, SignedError> {
        let query = format!(
            "partNumber={number}&uploadId={}",
            sigv4::uri_encode(upload_id.as_bytes(), false)
        );
        let (answer, _) = self.send_with("PUT", Some(key), &query, data, Vec::new(), false).await?;
        answer_header(&answer, "etag")
            .ok_or_else(|| SignedError::Status(200, format!("no ETag for part {number}")))
    }

    /// Completes an upload from its parts' `ETag`s in part order. S3 may answer 200 with an
    /// `<Error>` body (the failure happened after the status line went out): that is an error
    /// too, transient when its code says so.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        e_tags: &[String],
    ) -> Result<PutOutcome, SignedError> {
        let mut body = format!("<CompleteMultipartUpload xmlns=\"{S3_NS}\">");
        for (i, e_tag) in e_tags.iter().enumerate() {
            let _ = write!(
                body,
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml_escape(e_tag)
            );
        }
        body.push_str("</CompleteMultipartUpload>");
        let query = format!("uploadId={}", sigv4::uri_encode(upload_id.as_bytes(), false));
        let (answer, text) = self.send("POST", Some(key), &query, body.into(), Vec::new()).await?;
        let root = written(&text)?;
        Ok(PutOutcome {
            version_id: answer_header(&answer, "x-amz-version-id"),
            e_tag: answer_header(&answer, "etag").or_else(|| etag_of(root.as_ref())),
            pending: Pending::NONE,
        })
    }

    /// Copies a source version on this endpoint to `key` server-side (`CopyObject`), with the
    /// replica's own metadata, tags and creation headers (`REPLACE` directives). At most 5 GiB.
    pub(crate) async fn copy_object(
        &self,
        key: &str,
        src: &CopySpec,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, SignedError> {
        let mut headers = creation_headers(meta);
        headers.extend(src.headers());
        headers.push(("x-amz-metadata-directive".to_owned(), "REPLACE".to_owned()));
        headers.push(("x-amz-tagging-directive".to_owned(), "REPLACE".to_owned()));
        let (answer, text) = self.send("PUT", Some(key), "", Bytes::new(), headers).await?;
        let root = written(&text)?;
        Ok(PutOutcome {
            version_id: answer_header(&answer, "x-amz-version-id"),
            e_tag: etag_of(root.as_ref()),
            pending: Pending::NONE,
        })
    }

    /// Copies bytes `range` of a source version server-side as part `number` of an upload
    /// (`UploadPartCopy`); returns the part's `ETag`.
    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        src: &CopySpec,
        range: std::ops::Range<u64>,
    ) -> Result<String, SignedError> {
        let query = format!(
            "partNumber={number}&uploadId={}",
            sigv4::uri_encode(upload_id.as_bytes(), false)
        );
        let mut headers = src.headers();
        let last = range.end.saturating_sub(1);
        headers
            .push(("x-amz-copy-source-range".to_owned(), format!("bytes={}-{last}", range.start)));
        let (_, text) = self.send("PUT", Some(key), &query, Bytes::new(), headers).await?;
        etag_of(written(&text)?.as_ref())
            .ok_or_else(|| SignedError::Status(200, format!("no ETag for part {number}: {text}")))
    }

    /// Aborts an upload, removing its parts; an upload already gone (`NoSuchUpload`) is done.
    pub(crate) async fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), SignedError> {
        let query = format!("uploadId={}", sigv4::uri_encode(upload_id.as_bytes(), false));
        match self.send("DELETE", Some(key), &query, Bytes::new(), Vec::new()).await {
            Ok(_) | Err(SignedError::Status(404, _)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the tag set of `key` (at `version_id`).
    pub(crate) async fn put_tagging(
        &self,
        key: &str,
        version_id: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), SignedError> {
        let mut body = format!("<Tagging xmlns=\"{S3_NS}\"><TagSet>");
        for (k, v) in tags {
            let _ = write!(
                body,
                "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                xml_escape(k),
                xml_escape(v)
            );
        }
        body.push_str("</TagSet></Tagging>");
        let query = subresource("tagging", version_id);
        self.send("PUT", Some(key), &query, body.into(), Vec::new()).await.map(|_| ())
    }

    /// Replaces the ACL of `key` (at `version_id`), with the `x-amz-acl` or `x-amz-grant-*`
    /// headers.
    pub(crate) async fn put_acl(
        &self,
        key: &str,
        version_id: Option<&str>,
        acl: &ObjectAcl,
    ) -> Result<(), SignedError> {
        let query = subresource("acl", version_id);
        self.send("PUT", Some(key), &query, Bytes::new(), acl.headers()).await.map(|_| ())
    }

    /// Sets the retention of `key` (at `version_id`); `None` removes it, which S3 allows for
    /// `GOVERNANCE` retention with the bypass header (and refuses for `COMPLIANCE`).
    pub(crate) async fn put_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        retention: Option<Retention>,
    ) -> Result<(), SignedError> {
        let (body, headers) = match retention {
            Some(r) => (
                format!(
                    "<Retention xmlns=\"{S3_NS}\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
                    r.mode.as_str(),
                    sigv4::iso8601_ms(r.retain_until_ms)
                ),
                Vec::new(),
            ),
            None => (
                format!("<Retention xmlns=\"{S3_NS}\"/>"),
                vec![("x-amz-bypass-governance-retention".to_owned(), "true".to_owned())],
            ),
        };
        let query = subresource("retention", version_id);
        self.send("PUT", Some(key), &query, body.into(), headers).await.map(|_| ())
    }

    /// Turns the legal hold of `key` (at `version_id`) on or off.
    pub(crate) async fn put_legal_hold(
        &self,
        key: &str,
        version_id: Option<&str>,
        on: bool,
    ) -> Result<(), SignedError> {
        let status = if on { "ON" } else { "OFF" };
        let body = format!("<LegalHold xmlns=\"{S3_NS}\"><Status>{status}</Status></LegalHold>");
        let query = subresource("legal-hold", version_id);
        self.send("PUT", Some(key), &query, body.into(), Vec::new()).await.map(|_| ())
    }

    /// Deletes `key` without a version id: on a versioned bucket this creates a delete marker,
    /// whose version id is returned (when the server names it).
    pub(crate) async fn delete_object(&self, key: &str) -> Result<Option<String>, SignedError> {
        let (headers, _) = self.send("DELETE", Some(key), "", Bytes::new(), Vec::new()).await?;
        Ok(answer_header(&headers, "x-amz-version-id"))
    }

    /// One HEAD of `key` (at `version_id`, else its current version): the answer's headers,
    /// `None` when there is no such object (or the current version is a delete marker).
    pub(crate) async fn head_object(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<http::HeaderMap>, SignedError> {
        let query = version_id.map(version_query).unwrap_or_default();
        match self.send("HEAD", Some(key), &query, Bytes::new(), Vec::new()).await {
            Ok((headers, _)) => Ok(Some(headers)),
            // 405: the version asked for is a delete marker.
            Err(SignedError::Status(404 | 405, _)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id of the newest version (not delete marker) of exactly `key`, from one
    /// `ListObjectVersions` page (newest first): how a replica hidden under a delete marker is
    /// found. `None` if the page holds none.
    pub(crate) async fn newest_version(&self, key: &str) -> Result<Option<String>, SignedError> {
        let query =
            format!("max-keys=100&prefix={}&versions=", sigv4::uri_encode(key.as_bytes(), false));
        let (_, body) = self.send("GET", None, &query, Bytes::new(), Vec::new()).await?;
        Ok(answers::newest_version(&body, key))
    }

    /// The versions of exactly `key`, newest first (one `ListObjectVersions` page of up to 100
    /// entries).
    pub(crate) async fn versions_of(&self, key: &str) -> Result<Vec<String>, SignedError> {
        let query =
            format!("max-keys=100&prefix={}&versions=", sigv4::uri_encode(key.as_bytes(), false));
        let (_, body) = self.send("GET", None, &query, Bytes::new(), Vec::new()).await?;
        Ok(answers::versions(&body, key))
    }

    /// One `ListObjectVersions` page of the bucket under `prefix`, after the markers (key,
    /// version id) of the previous page: the answer's body.
    pub(crate) async fn list_versions_page(
        &self,
        prefix: &str,
        after: Option<(&str, &str)>,
        max_keys: u32,
    ) -> Result<String, SignedError> {
        let enc = |s: &str| sigv4::uri_encode(s.as_bytes(), false);
        // Parameters in the order SigV4's canonical query sorts them.
        let key_marker = after.map(|(k, _)| format!("key-marker={}&", enc(k))).unwrap_or_default();
        let version_marker = after
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| format!("&version-id-marker={}", enc(v)))
            .unwrap_or_default();
        let query = format!(
            "{key_marker}max-keys={max_keys}&prefix={}{version_marker}&versions=",
            enc(prefix)
        );
        let (_, body) = self.send("GET", None, &query, Bytes::new(), Vec::new()).await?;
        Ok(body)
    }

    /// The ACL of version `version_id` of `key` (`GetObjectAcl`): the answer's body.
    pub(crate) async fn get_acl(&self, key: &str, version_id: &str) -> Result<String, SignedError> {
        let query = subresource("acl", Some(version_id));
        let (_, body) = self.send("GET", Some(key), &query, Bytes::new(), Vec::new()).await?;
        Ok(body)
    }

    /// The tag set of version `version_id` of `key` (`GetObjectTagging`): the answer's body.
    pub(crate) async fn get_tagging(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<String, SignedError> {
        let query = subresource("tagging", Some(version_id));
        let (_, body) = self.send("GET", Some(key), &query, Bytes::new(), Vec::new()).await?;
        Ok(body)
    }

    /// The multipart uploads open on exactly `key` (`ListMultipartUploads` with it as the
    /// prefix, one page of up to 1,000): (upload id, initiated, in milliseconds since the
    /// Unix epoch, when the answer says).
    pub(crate) async fn uploads_of(
        &self,
        key: &str,
    ) -> Result<Vec<(String, Option<u64>)>, SignedError> {
        let query = format!(
            "max-uploads=1000&prefix={}&uploads=",
            sigv4::uri_encode(key.as_bytes(), false)
        );
        let (_, body) = self.send("GET", None, &query, Bytes::new(), Vec::new()).await?;
        Ok(answers::uploads(&body, key)
            .into_iter()
            .map(|(id, initiated)| (id, initiated.and_then(|t| parse_iso8601_ms(&t))))
            .collect())
    }

    /// Whether upload `upload_id` of `key` has any part (`ListParts`, one entry).
    pub(crate) async fn has_parts(&self, key: &str, upload_id: &str) -> Result<bool, SignedError> {
        let query =
            format!("max-parts=1&uploadId={}", sigv4::uri_encode(upload_id.as_bytes(), false));
        let (_, body) = self.send("GET", Some(key), &query, Bytes::new(), Vec::new()).await?;
        Ok(body.contains("<Part>"))
    }

    /// Sends one signed request for `key` (or the bucket) with `extra` headers (signed too; a
    /// body also gets its `x-amz-checksum-sha256`, which S3 requires for the Object Lock
    /// calls and verifies on writes); returns the answer's headers and body on success.
    async fn send(
        &self,
        method: &'static str,
        key: Option<&str>,
        raw_query: &str,
        body: Bytes,
        extra: Vec<(String, String)>,
    ) -> Result<(http::HeaderMap, String), SignedError> {
        let (headers, body) = self.send_with(method, key, raw_query, body, extra, true).await?;
        Ok((headers, text(&body)))
    }

    /// [`SignedS3::send`], with the body's `x-amz-checksum-sha256` only if `checksum`.
    async fn send_with(
        &self,
        method: &'static str,
        key: Option<&str>,
        raw_query: &str,
        body: Bytes,
        extra: Vec<(String, String)>,
        checksum: bool,
    ) -> Result<(http::HeaderMap, Bytes), SignedError> {
        // A value HTTP cannot carry (a control character) is the request's fault, not the
        // network's: refused here as a client error, never retried.
        if let Some((name, _)) = extra.iter().find(|(_, v)| !super::replica::header_value_ok(v)) {
            return Err(SignedError::Status(
                400,
                format!("the value of header {name} cannot be sent over HTTP"),
            ));
        }
        // A destination that cannot be reached as configured: refused as a client error,
        // never retried (repeating the call cannot change the configuration).
        let (client, target) =
            self.conn.as_ref().map_err(|e| SignedError::Status(400, e.clone()))?;
        let mut raw_path = target.prefix.clone();
        match key {
            Some(k) => {
                raw_path.push('/');
                raw_path.push_str(&sigv4::uri_encode(k.as_bytes(), true));
            }
            None if raw_path.is_empty() => raw_path.push('/'),
            None => {}
        }
        // One SHA-256 of the body serves the signature and the checksum header.
        let digest = sigv4::sha256(&body);
        let payload = hex::encode(digest);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let amz_date = sigv4::amz_date(now);
        let mut headers: Vec<(String, String)> = Vec::with_capacity(4 + extra.len());
        headers.push(("host".into(), target.authority.as_str().to_owned()));
        if checksum && !body.is_empty() {
            headers.push(("x-amz-checksum-sha256".into(), base64(&digest)));
        }
        headers.push(("x-amz-content-sha256".into(), payload.clone()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        headers.extend(extra);
        let req = sigv4::Request { method, raw_path: &raw_path, raw_query, headers: &headers };
        let auth = self.signer.authorization(&req, &amz_date, &payload);
        // The path goes out exactly as signed: `http::Uri` checks its characters but, unlike
        // a URL parser, never resolves `.` and `..` segments.
        let path_and_query = if raw_query.is_empty() {
            raw_path
        } else {
            let mut pq = raw_path;
            pq.push('?');
            pq.push_str(raw_query);
            pq
        };
        let refused = |what: &str, e: &dyn std::fmt::Display| {
            SignedError::Status(400, format!("{what} cannot be sent over HTTP: {e}"))
        };
        let uri = http::Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| refused("the request path", &e))?;
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|e| SignedError::Transport(e.to_string()))?;
        let mut request = http::Request::new(http_body_util::Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let out = request.headers_mut();
        out.reserve(headers.len() + 1);
        let auth = http::HeaderValue::from_maybe_shared(Bytes::from(auth))
            .map_err(|e| refused("the authorization", &e))?;
        out.insert(http::header::AUTHORIZATION, auth);
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| refused(&format!("header name {name}"), &e))?;
            let value = http::HeaderValue::from_maybe_shared(Bytes::from(value))
                .map_err(|e| refused(&format!("the value of header {name}"), &e))?;
            out.append(name, value);
        }
        // A server that stops answering fails the call (transient: it is retried) instead of
        // holding its task, and the key's queue behind it, forever.
        let silent = |what: &str, after: Duration| {
            SignedError::Transport(format!("no {what} within {} s", after.as_secs_f64()))
        };
        let response = tokio::time::timeout(self.timeouts.answer, client.request(request))
            .await
            .map_err(|_| silent("answer", self.timeouts.answer))?
            .map_err(|e| SignedError::Transport(error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(self.timeouts.body, http_body_util::BodyExt::collect(body))
            .await
            .map_err(|_| silent("complete answer body", self.timeouts.body))?;
        let body = match body {
            Ok(b) => b.to_bytes(),
            Err(e) if parts.status.is_success() => {
                return Err(SignedError::Transport(error_chain(&e)));
            }
            Err(_) => Bytes::new(),
        };
        if parts.status.is_success() {
            return Ok((parts.headers, body));
        }
        Err(SignedError::Status(parts.status.as_u16(), text(&body)))
    }

    /// The bytes of version `version_id` of `key` (only bytes `range`, if given).
    pub(crate) async fn get_object(
        &self,
        key: &str,
        version_id: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, SignedError> {
        let query = version_query(version_id);
        let headers = match range.clone() {
            Some(r) if r.end > r.start => {
                vec![("range".to_owned(), format!("bytes={}-{}", r.start, r.end - 1))]
            }
            // An empty range: nothing to ask for.
            Some(_) => return Ok(Bytes::new()),
            None => Vec::new(),
        };
        let (_, body) =
            self.send_with("GET", Some(key), &query, Bytes::new(), headers, false).await?;
        // A server that ignores `Range` answers the whole object: never taken for the range.
        if let Some(r) = range
            && body.len() as u64 != r.end - r.start
        {
            return Err(SignedError::Transport(format!(
                "{} bytes answered for the {} of range {r:?}",
                body.len(),
                r.end - r.start
            )));
        }
        Ok(body)
    }
}

/// An answer body as text (invalid UTF-8 replaced).
fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// One source version for a server-side copy, on the destination's own endpoint.
#[derive(Debug, Clone)]
pub(crate) struct CopySpec {
    /// The source bucket at the endpoint.
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) version_id: String,
    /// The source version's `ETag`, sent as `x-amz-copy-source-if-match`: the server copies
    /// only the version the log recorded.
    pub(crate) if_match: Option<String>,
}

impl CopySpec {
    fn headers(&self) -> Vec<(String, String)> {
        let mut h = vec![(
            "x-amz-copy-source".to_owned(),
            format!(
                "/{}/{}?versionId={}",
                self.bucket,
                sigv4::uri_encode(self.key.as_bytes(), true),
                sigv4::uri_encode(self.version_id.as_bytes(), false)
            ),
        )];
        if let Some(e) = &self.if_match {
            let quoted = if e.starts_with('"') { e.clone() } else { format!("\"{e}\"") };
            h.push(("x-amz-copy-source-if-match".to_owned(), quoted));
        }
        h
    }
}

/// An error S3 put in the body of a 200 answer (`CopyObject`, `UploadPartCopy` and
/// `CompleteMultipartUpload` may fail after the status line went out), as the status its code
/// means: transient codes as 500/503, others as 400.
fn error_in_body(root: Option<&answers::Element>, text: &str) -> Option<SignedError> {
    let status = match root?.error_code()? {
        "InternalError" | "ServiceUnavailable" => 500,
        "SlowDown" => 503,
        _ => 400,
    };
    Some(SignedError::Status(status, text.to_owned()))
}

/// The answer of a write that may fail after its 200 status line went out, read once: its
/// element tree, or the error in its body.
fn written(text: &str) -> Result<Option<answers::Element>, SignedError> {
    let root = answers::parse(text);
    match error_in_body(root.as_ref(), text) {
        Some(e) => Err(e),
        None => Ok(root),
    }
}

/// The `ETag` a write's answer names.
fn etag_of(root: Option<&answers::Element>) -> Option<String> {
    root?.child("ETag").map(str::to_owned)
}

/// A header of an answer, unless empty or `null` (how unversioned buckets name no version).
pub(crate) fn answer_header(answer: &http::HeaderMap, name: &str) -> Option<String> {
    answer
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && *v != "null")
        .map(str::to_owned)
}

/// An RFC 3339 time (`2026-12-06T04:53:17.250Z`, as S3 writes them) → milliseconds since the
/// Unix epoch.
pub(crate) fn parse_iso8601_ms(text: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

/// What the signed client reads out of an S3 answer body, for the fuzz target: the
/// `ListObjectVersions` newest version of `key`, the `UploadId`, the `ETag`, and the status an
/// error in a 200 body maps to.
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub fn read_answer(
    xml: &str,
    key: &str,
) -> (Option<String>, Option<String>, Option<String>, Option<u16>) {
    let status = error_in_body(answers::parse(xml).as_ref(), xml).map(|e| match e {
        SignedError::Status(code, _) => code,
        SignedError::Transport(_) => 0,
    });
    // Listings and tag sets are read too (their results are not part of the answer).
    let _ = (answers::version_listing(xml), answers::tag_set(xml), answers::acl_grants(xml));
    (
        answers::newest_version(xml, key),
        answers::field(xml, "UploadId"),
        answers::field(xml, "ETag"),
        status,
    )
}

#[cfg(test)]
mod tests;
