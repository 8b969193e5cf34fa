//! Signing: the canonical request, the signing key (kept per day by [`Signer`]), the signature,
//! and the date formats the signed client sends.
// Without the `testing` feature these are the crate's own (re-exported `pub(crate)`), and a
// few serve only the tests.
#![cfg_attr(not(feature = "testing"), allow(dead_code, unreachable_pub))]

use std::fmt::Write as _;

use super::Request;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

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
