//! The S3 calls `object_store` does not make, signed with [`crate::sigv4`]: `PutObjectTagging`
//! on one version (metadata-only replication).

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
        let endpoint = self.opts.endpoint.trim_end_matches('/');
        let host = endpoint.split_once("://").map_or(endpoint, |(_, h)| h).to_owned();
        let (host, raw_path) = if self.opts.virtual_hosted_style {
            (
                format!("{}.{host}", self.opts.bucket),
                format!("/{}", sigv4::uri_encode(key.as_bytes(), true)),
            )
        } else {
            (host, format!("/{}/{}", self.opts.bucket, sigv4::uri_encode(key.as_bytes(), true)))
        };
        let raw_query =
            format!("tagging=&versionId={}", sigv4::uri_encode(version_id.as_bytes(), false));
        let payload = sigv4::sha256_hex(body.as_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let amz_date = sigv4::amz_date(now);
        let headers: Vec<(String, String)> = vec![
            ("host".into(), host.clone()),
            ("x-amz-checksum-sha256".into(), base64(&sigv4::sha256(body.as_bytes()))),
            ("x-amz-content-sha256".into(), payload.clone()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        let req = sigv4::Request {
            method: "PUT",
            raw_path: &raw_path,
            raw_query: &raw_query,
            headers: &headers,
        };
        let auth = sigv4::authorization(
            &req,
            &self.opts.access_key_id,
            &self.opts.secret_access_key,
            &amz_date,
            &self.opts.region,
            &payload,
        );
        let scheme = endpoint.split_once("://").map_or("https", |(s, _)| s);
        let url = format!("{scheme}://{host}{raw_path}?{raw_query}");
        let mut request = self.http.put(url).header("authorization", auth).body(body);
        for (n, v) in headers.iter().filter(|(n, _)| n != "host") {
            request = request.header(n.as_str(), v.as_str());
        }
        let response = request.send().await.map_err(|e| TaggingError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(TaggingError::Status(status, text))
    }
}

#[cfg(test)]
mod tests {
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
