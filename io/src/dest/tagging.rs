//! The S3 calls `object_store` does not make, signed with [`crate::sigv4`]: `PutObjectTagging`
//! on one version (metadata-only replication), and `DeleteObject` answering the version id of
//! the delete marker it creates (the engine's version map records it).

use std::fmt::Write as _;

use super::S3Options;
use crate::sigv4;

/// A minimal signed client for one S3-compatible bucket.
#[derive(Debug)]
pub(crate) struct S3Extra {
    pub(crate) opts: S3Options,
    http: reqwest::Client,
}

/// How a tagging call ended.
#[derive(Debug)]
pub(crate) enum TaggingError {
    /// HTTP status and body from the server.
    Status(u16, String),
    /// No answer (connection, timeout).
    Transport(String),
}

impl std::fmt::Display for TaggingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaggingError::Status(code, body) => write!(f, "HTTP {code}: {body}"),
            TaggingError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TaggingError {}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Standard base64 (for `x-amz-checksum-sha256`).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(T.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl S3Extra {
    pub(crate) fn new(opts: S3Options) -> Self {
        S3Extra { opts, http: reqwest::Client::new() }
    }

    /// Replaces the tag set of `key` at `version_id`.
    pub(crate) async fn put_tagging(
        &self,
        key: &str,
        version_id: &str,
        tags: &[(String, String)],
    ) -> Result<(), TaggingError> {
        let mut body =
            String::from("<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>");
        for (k, v) in tags {
            let _ = write!(
                body,
                "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                xml_escape(k),
                xml_escape(v)
            );
        }
        body.push_str("</TagSet></Tagging>");
        let query =
            format!("tagging=&versionId={}", sigv4::uri_encode(version_id.as_bytes(), false));
        let checksum = base64(&sigv4::sha256(body.as_bytes()));
        self.send("PUT", Some(key), &query, body, Some(checksum)).await.map(|(_, _)| ())
    }

    /// Deletes `key` without a version id: on a versioned bucket this creates a delete marker,
    /// whose version id is returned (when the server names it).
    pub(crate) async fn delete_object(&self, key: &str) -> Result<Option<String>, TaggingError> {
        let (headers, _) = self.send("DELETE", Some(key), "", String::new(), None).await?;
        Ok(headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_owned))
    }

    /// The id of the newest version (not delete marker) of exactly `key`, from one
    /// `ListObjectVersions` page (newest first): how a replica hidden under a delete marker is
    /// found. `None` if the page holds none.
    pub(crate) async fn newest_version(&self, key: &str) -> Result<Option<String>, TaggingError> {
        let query =
            format!("max-keys=100&prefix={}&versions=", sigv4::uri_encode(key.as_bytes(), false));
        let (_, body) = self.send("GET", None, &query, String::new(), None).await?;
        Ok(newest_version_in(&body, key))
    }

    /// Sends one signed request for `key` (or the bucket); returns the answer's headers and
    /// body on success.
    async fn send(
        &self,
        method: &'static str,
        key: Option<&str>,
        raw_query: &str,
        body: String,
        checksum_sha256: Option<String>,
    ) -> Result<(reqwest::header::HeaderMap, String), TaggingError> {
        let endpoint = self.opts.endpoint.trim_end_matches('/');
        let host = endpoint.split_once("://").map_or(endpoint, |(_, h)| h).to_owned();
        let object = key.map(|k| format!("/{}", sigv4::uri_encode(k.as_bytes(), true)));
        let (host, raw_path) = if self.opts.virtual_hosted_style {
            (format!("{}.{host}", self.opts.bucket), object.unwrap_or_else(|| "/".to_owned()))
        } else {
            (host, format!("/{}{}", self.opts.bucket, object.unwrap_or_default()))
        };
        let payload = sigv4::sha256_hex(body.as_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let amz_date = sigv4::amz_date(now);
        let mut headers: Vec<(String, String)> = vec![("host".into(), host.clone())];
        if let Some(sum) = checksum_sha256 {
            headers.push(("x-amz-checksum-sha256".into(), sum));
        }
        headers.push(("x-amz-content-sha256".into(), payload.clone()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        let req = sigv4::Request { method, raw_path: &raw_path, raw_query, headers: &headers };
        let auth = sigv4::authorization(
            &req,
            &self.opts.access_key_id,
            &self.opts.secret_access_key,
            &amz_date,
            &self.opts.region,
            &payload,
        );
        let scheme = endpoint.split_once("://").map_or("https", |(s, _)| s);
        let url = if raw_query.is_empty() {
            format!("{scheme}://{host}{raw_path}")
        } else {
            format!("{scheme}://{host}{raw_path}?{raw_query}")
        };
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| TaggingError::Transport(e.to_string()))?;
        let mut request = self.http.request(method, url).header("authorization", auth);
        if !body.is_empty() {
            request = request.body(body);
        }
        for (n, v) in headers.iter().filter(|(n, _)| n != "host") {
            request = request.header(n.as_str(), v.as_str());
        }
        let response = request.send().await.map_err(|e| TaggingError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            let headers = response.headers().clone();
            let text = response.text().await.map_err(|e| TaggingError::Transport(e.to_string()))?;
            return Ok((headers, text));
        }
        let text = response.text().await.unwrap_or_default();
        Err(TaggingError::Status(status, text))
    }
}

/// The text of the first `<tag>…</tag>` in `xml`, unescaped.
fn element<'a>(xml: &'a str, tag: &str) -> Option<std::borrow::Cow<'a, str>> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    let text = xml.get(start..start + len)?;
    Some(if text.contains('&') {
        std::borrow::Cow::Owned(
            text.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    })
}

/// The `VersionId` of the first `<Version>` entry for exactly `key` in a `ListObjectVersions`
/// answer (entries of one key come newest first; keys sharing the prefix are skipped).
fn newest_version_in(xml: &str, key: &str) -> Option<String> {
    xml.split("<Version>").skip(1).find_map(|entry| {
        let entry = entry.split("</Version>").next()?;
        (element(entry, "Key")? == key)
            .then(|| element(entry, "VersionId").map(std::borrow::Cow::into_owned))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_newest_version_of_exactly_the_key() {
        let xml = "<ListVersionsResult><DeleteMarker><Key>a&amp;b</Key><VersionId>m1</VersionId></DeleteMarker>\
            <Version><Key>a&amp;b</Key><VersionId>v2</VersionId></Version>\
            <Version><Key>a&amp;b</Key><VersionId>v1</VersionId></Version>\
            <Version><Key>a&amp;bc</Key><VersionId>x</VersionId></Version></ListVersionsResult>";
        assert_eq!(super::newest_version_in(xml, "a&b").as_deref(), Some("v2"));
        assert_eq!(super::newest_version_in(xml, "a&bc").as_deref(), Some("x"));
        assert_eq!(super::newest_version_in(xml, "a"), None);
    }

    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
