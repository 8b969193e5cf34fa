//! AWS Signature Version 4, the parts both sides need: the canonical request, the signing key
//! and the signature. The admin endpoint verifies with them; the destinations' signed client
//! signs every S3 call it makes (`PutObject`, `CopyObject`, uploads, tagging, ACL, Object Lock).
//!
//! Our own rather than the SDK's `aws-sigv4`: on the same `CopyObject` request (the signatures
//! are equal, `benches/benches/sigv4.rs` checks) the SDK's signer took 8.7 µs, this one 2.8 µs
//! with the day's signing key kept (`Signer`) and 3.9 µs deriving it each time; the verifier
//! needs the canonical request from the raw request either way, and is tested against the
//! AWS CLI (botocore) in `tools/tests/cli_run.rs`.

use std::fmt::Write as _;

mod verify;

pub use verify::{AuthError, Credentials, Payload, SignedRequest, Verified};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// A request as signed: method, raw (percent-encoded) path and query, lowercase headers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The path as sent (percent-encoded).
    pub raw_path: &'a str,
    /// The query string as sent, without `?`.
    pub raw_query: &'a str,
    /// (lowercase name, value); repeated names appear repeatedly.
    pub headers: &'a [(String, String)],
}

/// Hex SHA-256 of `data` (the payload hash).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// S3's URI encoding: unreserved characters stay, the rest become `%XX`; `/` stays when
/// `keep_slash`.
pub fn uri_encode(s: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// The canonical request over the `signed` header names (lowercase, sorted by the caller).
pub fn canonical_request(req: &Request<'_>, signed: &[&str], payload_hash: &str) -> String {
    let path = if req.raw_path.is_empty() { "/" } else { req.raw_path };
    let uri = uri_encode(&percent_decode(path), true);
    let mut query: Vec<(String, String)> = req
        .raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k), false), uri_encode(&percent_decode(v), false))
        })
        .collect();
    query.sort();
    let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut headers = String::new();
    for name in signed {
        headers.push_str(name);
        headers.push(':');
        // Values of a repeated name joined by commas, each trimmed, inner runs of whitespace
        // made one space.
        for (i, (_, v)) in req.headers.iter().filter(|(n, _)| n == name).enumerate() {
            if i > 0 {
                headers.push(',');
            }
            for (j, word) in v.split_whitespace().enumerate() {
                if j > 0 {
                    headers.push(' ');
                }
                headers.push_str(word);
            }
        }
        headers.push('\n');
    }
    format!("{}\n{uri}\n{query}\n{headers}\n{}\n{payload_hash}", req.method, signed.join(";"))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// The signing key of credential scope `date/region/service/aws4_request` (four HMACs; the
/// same all day, so a client signing many requests keeps it: [`Signer`]).
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// The hex signature of `canonical` for credential scope `date/region/service/aws4_request`.
pub fn signature(
    secret: &str,
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    canonical: &str,
) -> String {
    let key = signing_key(secret, date, region, service);
    signature_with_key(&key, amz_date, date, region, service, canonical)
}

/// [`signature`] with the scope's [`signing_key`] already derived.
fn signature_with_key(
    key: &[u8; 32],
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    canonical: &str,
) -> String {
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        sha256_hex(canonical.as_bytes())
    );
    hex::encode(hmac(key, to_sign.as_bytes()))
}

/// The `Authorization` header for `req`, signing every header it carries (which must include
/// `host` and `x-amz-date`) with payload hash `payload_hash`.
pub fn authorization(
    req: &Request<'_>,
    access_key: &str,
    secret: &str,
    amz_date: &str,
    region: &str,
    payload_hash: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or_default();
    let key = signing_key(secret, date, region, "s3");
    authorization_with_key(req, access_key, &key, amz_date, region, payload_hash)
}

/// [`authorization`] with the day's signing key already derived.
fn authorization_with_key(
    req: &Request<'_>,
    access_key: &str,
    key: &[u8; 32],
    amz_date: &str,
    region: &str,
    payload_hash: &str,
) -> String {
    let mut signed: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    signed.sort_unstable();
    signed.dedup();
    let date = amz_date.get(..8).unwrap_or_default();
    let canonical = canonical_request(req, &signed, payload_hash);
    let sig = signature_with_key(key, amz_date, date, region, "s3", &canonical);
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{date}/{region}/s3/aws4_request, SignedHeaders={}, Signature={sig}",
        signed.join(";")
    )
}

/// Signs S3 requests for one access key and region, keeping the current day's signing key:
/// the same `Authorization` as [`authorization`], without its four key-derivation HMACs per
/// request.
pub struct Signer {
    access_key: String,
    secret: String,
    region: String,
    /// (`YYYYMMDD`, that day's signing key).
    day: parking_lot::Mutex<Option<(String, [u8; 32])>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, nor the key derived from it.
        f.debug_struct("Signer")
            .field("access_key", &self.access_key)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `access_key`/`secret` in `region`.
    pub fn new(access_key: &str, secret: &str, region: &str) -> Self {
        Signer {
            access_key: access_key.to_owned(),
            secret: secret.to_owned(),
            region: region.to_owned(),
            day: parking_lot::Mutex::new(None),
        }
    }

    /// The `Authorization` header for `req` at `amz_date` (`YYYYMMDDTHHMMSSZ`, also in its
    /// `x-amz-date` header), as [`authorization`] computes it.
    pub fn authorization(&self, req: &Request<'_>, amz_date: &str, payload_hash: &str) -> String {
        let date = amz_date.get(..8).unwrap_or_default();
        let key = {
            let mut day = self.day.lock();
            match &*day {
                Some((d, key)) if d == date => *key,
                _ => {
                    let key = signing_key(&self.secret, date, &self.region, "s3");
                    *day = Some((date.to_owned(), key));
                    key
                }
            }
        };
        authorization_with_key(req, &self.access_key, &key, amz_date, &self.region, payload_hash)
    }
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds.
pub fn amz_date(unix: i64) -> String {
    utc(unix).format("%Y%m%dT%H%M%SZ").to_string()
}

/// An instant in milliseconds since the Unix epoch as S3 writes dates in XML bodies
/// (`RetainUntilDate`): `YYYY-MM-DDTHH:MM:SS.sssZ`.
pub fn iso8601_ms(unix_ms: u64) -> String {
    let at = i64::try_from(unix_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// An HTTP date (RFC 1123, as in `Date`, `Expires` and Azure's `x-ms-date`) for Unix seconds:
/// `Tue, 01 Dec 2026 08:00:00 GMT` (times before 1970 are written as 1970's first second).
pub fn http_date(unix: i64) -> String {
    let secs = std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + secs)
}

/// A Unix time in UTC (out of chrono's range: its last instant).
fn utc(unix: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(unix, 0).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_868_800), "20000301T000000Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_796_112_000), "Tue, 01 Dec 2026 08:00:00 GMT");
        // 2028-02-29 (a leap day) 13:24:15.678 UTC.
        assert_eq!(iso8601_ms(1_835_443_455_678), "2028-02-29T13:24:15.678Z");
    }

    /// AWS's published "GET Object" example.
    #[test]
    fn aws_documented_example() {
        let headers: Vec<(String, String)> = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            (
                "x-amz-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            ("x-amz-date", "20130524T000000Z"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        let req =
            Request { method: "GET", raw_path: "/test.txt", raw_query: "", headers: &headers };
        let auth = authorization(
            &req,
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524T000000Z",
            "us-east-1",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        assert!(
            auth.ends_with(
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{auth}"
        );
        // The signer that keeps the day's key signs the same, and derives a new key when the
        // date moves on (a stale key would sign every later request wrongly).
        let signer = Signer::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
        );
        let payload = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(signer.authorization(&req, "20130524T000000Z", payload), auth);
        assert_eq!(signer.authorization(&req, "20130524T000000Z", payload), auth);
        let next_day = authorization(
            &req,
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130525T000001Z",
            "us-east-1",
            payload,
        );
        assert_ne!(next_day, auth);
        assert_eq!(signer.authorization(&req, "20130525T000001Z", payload), next_day);
        assert!(!format!("{signer:?}").contains("EXAMPLEKEY"), "the secret in Debug");
    }

    /// Header values as `SigV4` canonicalizes them: trimmed, inner whitespace runs made one
    /// space, a repeated name's values joined by commas in the order sent.
    #[test]
    fn canonical_headers_trim_collapse_and_join() {
        let headers: Vec<(String, String)> = [
            ("host", "h"),
            ("x-amz-meta-a", "  one   two\tthree  "),
            ("x-amz-meta-b", "first"),
            ("x-amz-meta-b", " second "),
            ("x-amz-meta-c", ""),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        let req = Request { method: "PUT", raw_path: "/b/k", raw_query: "", headers: &headers };
        let signed = ["host", "x-amz-meta-a", "x-amz-meta-b", "x-amz-meta-c"];
        let canonical = canonical_request(&req, &signed, "UNSIGNED-PAYLOAD");
        assert_eq!(
            canonical,
            "PUT\n/b/k\n\nhost:h\nx-amz-meta-a:one two three\nx-amz-meta-b:first,second\n\
             x-amz-meta-c:\n\nhost;x-amz-meta-a;x-amz-meta-b;x-amz-meta-c\nUNSIGNED-PAYLOAD"
        );
    }
}
