//! AWS Signature Version 4 verification (for the admin endpoint of `s3repl run`) (header-signed requests, as the
//! AWS CLI and SDKs send them). The verifier recomputes the canonical request from what it
//! received, derives the signing key from the configured secret and compares signatures in
//! constant time. Errors are the S3 codes S3 itself answers with.

use std::collections::HashMap;

use super::{self as core, Request, sha256_hex};

/// How far a request's `x-amz-date` may be from our clock (S3: 15 minutes).
const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request was not authenticated; the S3 error code and HTTP status come with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("AccessDenied: Access Denied")]
    Missing,
    /// The access key is not configured.
    #[error(
        "InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records."
    )]
    UnknownKey,
    /// The signature does not match.
    #[error(
        "SignatureDoesNotMatch: The request signature we calculated does not match the signature you provided. Check your key and signing method."
    )]
    BadSignature,
    /// The Authorization header cannot be parsed or names another scheme.
    #[error("AuthorizationHeaderMalformed: {0}")]
    Malformed(String),
    /// The request time is too far from ours.
    #[error(
        "RequestTimeTooSkewed: The difference between the request time and the current time is too large."
    )]
    Skewed,
    /// The body's SHA-256 differs from `x-amz-content-sha256`.
    #[error(
        "XAmzContentSHA256Mismatch: The provided 'x-amz-content-sha256' header does not match what was computed."
    )]
    PayloadMismatch,
    /// A signing mode we do not accept (streaming chunk signatures, query-string presigning).
    #[error("NotImplemented: {0}")]
    Unsupported(&'static str),
    /// A request with a body but no `x-amz-content-sha256`: its signature could only be
    /// checked after reading the body, which is never read before the signature is checked.
    #[error("InvalidRequest: Missing required header for this request: x-amz-content-sha256")]
    MissingPayloadHash,
}

impl AuthError {
    /// The S3 error code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "AccessDenied",
            AuthError::UnknownKey => "InvalidAccessKeyId",
            AuthError::BadSignature => "SignatureDoesNotMatch",
            AuthError::Malformed(_) => "AuthorizationHeaderMalformed",
            AuthError::Skewed => "RequestTimeTooSkewed",
            AuthError::PayloadMismatch => "XAmzContentSHA256Mismatch",
            AuthError::Unsupported(_) => "NotImplemented",
            AuthError::MissingPayloadHash => "InvalidRequest",
        }
    }

    /// The HTTP status S3 answers with.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing
            | AuthError::UnknownKey
            | AuthError::BadSignature
            | AuthError::Skewed => 403,
            AuthError::Malformed(_)
            | AuthError::PayloadMismatch
            | AuthError::MissingPayloadHash => 400,
            AuthError::Unsupported(_) => 501,
        }
    }

    /// The message (the text after the code).
    pub fn message(&self) -> String {
        let full = self.to_string();
        full.split_once(": ").map_or(full.clone(), |(_, m)| m.to_owned())
    }
}

/// What the verifier needs of a request.
#[derive(Debug)]
pub struct SignedRequest<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The path as received (percent-encoded).
    pub raw_path: &'a str,
    /// The query string as received, without `?`.
    pub raw_query: &'a str,
    /// Header (lowercase name, value) pairs; repeated names appear repeatedly.
    pub headers: &'a [(String, String)],
    /// The request body (its SHA-256 is checked against `x-amz-content-sha256`).
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    /// The head: what the signature covers besides the payload hash.
    fn core(&self) -> Request<'_> {
        Request {
            method: self.method,
            raw_path: self.raw_path,
            raw_query: self.raw_query,
            headers: self.headers,
        }
    }
}

/// What the signature covers of the body, once the head is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The body's SHA-256 (lowercase hex): the body must have it.
    Sha256(String),
    /// `UNSIGNED-PAYLOAD`: the signature says nothing of the body.
    Unsigned,
}

/// A request whose head carries a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who signed it.
    pub access_key: String,
    /// What the signature covers of the body.
    pub payload: Payload,
    /// The signed header names (lowercase).
    pub signed_headers: Vec<String>,
}

impl Verified {
    /// Checks a body against the signed payload hash ([`AuthError::PayloadMismatch`]); any body
    /// passes an unsigned payload.
    pub fn check_body(&self, body: &[u8]) -> Result<(), AuthError> {
        match &self.payload {
            Payload::Sha256(want) if !want.eq_ignore_ascii_case(&sha256_hex(body)) => {
                Err(AuthError::PayloadMismatch)
            }
            _ => Ok(()),
        }
    }

    /// Whether header `name` (lowercase) is covered by the signature.
    pub fn signs(&self, name: &str) -> bool {
        self.signed_headers.iter().any(|h| h == name)
    }
}

/// The configured access keys.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: HashMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("Credentials").field("access_keys", &self.secrets.keys()).finish()
    }
}

impl Credentials {
    /// Accepts `access_key_id` with `secret`.
    pub fn insert(&mut self, access_key_id: &str, secret: &str) {
        self.secrets.insert(access_key_id.to_owned(), secret.to_owned());
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Verifies a request signed at most 15 minutes from `now_unix`; returns the access key.
    pub fn verify(&self, req: &SignedRequest<'_>, now_unix: i64) -> Result<String, AuthError> {
        let verified = self.check(&req.core(), Body::Known(req.body), now_unix)?;
        verified.check_body(req.body)?;
        Ok(verified.access_key)
    }

    /// Verifies a request's head before its body is read (a server must not read what an
    /// unauthenticated client sends): the signature covers the headers, `x-amz-content-sha256`
    /// among them, and [`Verified::check_body`] then holds the body to that hash. A request
    /// that declares a body (`has_body`) must carry `x-amz-content-sha256`
    /// ([`AuthError::MissingPayloadHash`]); one that declares none is signed over the empty
    /// body's hash when it does not.
    pub fn verify_head(
        &self,
        req: &Request<'_>,
        has_body: bool,
        now_unix: i64,
    ) -> Result<Verified, AuthError> {
        self.check(req, if has_body { Body::Unread } else { Body::Known(b"") }, now_unix)
    }

    fn check(
        &self,
        req: &Request<'_>,
        body: Body<'_>,
        now_unix: i64,
    ) -> Result<Verified, AuthError> {
        let header =
            |name: &str| req.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        if req.raw_query.split('&').any(|p| p.starts_with("X-Amz-Signature=")) {
            return Err(AuthError::Unsupported("presigned URLs are not accepted"));
        }
        let auth = header("authorization").ok_or(AuthError::Missing)?;
        let auth = parse_authorization(auth)?;
        let secret = self.secrets.get(auth.access_key).ok_or(AuthError::UnknownKey)?;
        let amz_date = header("x-amz-date")
            .ok_or_else(|| AuthError::Malformed("missing x-amz-date".into()))?;
        let when = parse_amz_date(amz_date)
            .ok_or_else(|| AuthError::Malformed(format!("bad x-amz-date {amz_date:?}")))?;
        if (when - now_unix).abs() > MAX_SKEW_SECS {
            return Err(AuthError::Skewed);
        }
        if amz_date.get(..8) != Some(auth.date) {
            return Err(AuthError::Malformed("credential date is not the request date".into()));
        }
        if auth.service != "s3" || auth.terminator != "aws4_request" {
            return Err(AuthError::Malformed("credential scope must be for s3".into()));
        }
        if !auth.signed_headers.contains(&"host") {
            return Err(AuthError::Malformed("the host header must be signed".into()));
        }
        // S3 clients send `x-amz-content-sha256`; generic SigV4 signers (curl --aws-sigv4)
        // leave it out, and then the payload hash is the body's SHA-256, as SigV4 defines.
        let (payload, hash) = match (header("x-amz-content-sha256"), body) {
            (None, Body::Known(b)) => {
                let sha = sha256_hex(b);
                (Payload::Sha256(sha.clone()), sha)
            }
            (None, Body::Unread) => return Err(AuthError::MissingPayloadHash),
            (Some(p), _) if p.starts_with("STREAMING-") => {
                return Err(AuthError::Unsupported("streaming chunk signatures are not accepted"));
            }
            (Some(p), _) if p == "UNSIGNED-PAYLOAD" => (Payload::Unsigned, p.to_owned()),
            (Some(p), _) if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (Payload::Sha256(p.to_ascii_lowercase()), p.to_owned())
            }
            (Some(_), _) => return Err(AuthError::PayloadMismatch),
        };
        let canonical = core::canonical_request(req, &auth.signed_headers, &hash);
        let expected =
            core::signature(secret, amz_date, auth.date, auth.region, auth.service, &canonical);
        if constant_time_eq(expected.as_bytes(), auth.signature.to_ascii_lowercase().as_bytes()) {
            Ok(Verified {
                access_key: auth.access_key.to_owned(),
                payload,
                signed_headers: auth.signed_headers.iter().map(|h| (*h).to_owned()).collect(),
            })
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// The body, as far as the verifier knows it.
#[derive(Clone, Copy)]
enum Body<'a> {
    /// Read already.
    Known(&'a [u8]),
    /// Declared, not read yet.
    Unread,
}

struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthError> {
    let malformed = |m: &str| AuthError::Malformed(m.to_owned());
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| malformed("only AWS4-HMAC-SHA256 is accepted"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(|| malformed("bad component"))?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return Err(malformed("unknown component")),
        }
    }
    let credential = credential.ok_or_else(|| malformed("missing Credential"))?;
    let mut scope = credential.split('/');
    let (Some(access_key), Some(date), Some(region), Some(service), Some(terminator), None) =
        (scope.next(), scope.next(), scope.next(), scope.next(), scope.next(), scope.next())
    else {
        return Err(malformed("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        terminator,
        signed_headers: signed
            .ok_or_else(|| malformed("missing SignedHeaders"))?
            .split(';')
            .collect(),
        signature: signature.ok_or_else(|| malformed("missing Signature"))?,
    })
}

/// `YYYYMMDDTHHMMSSZ` → Unix seconds.
fn parse_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes.get(8) != Some(&b'T') || bytes.get(15) != Some(&b'Z') {
        return None;
    }
    let at = chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ").ok()?;
    Some(at.and_utc().timestamp())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

/// Signs a request the way the AWS CLI does (tests).
#[cfg(test)]
pub(super) fn sign(
    req: &SignedRequest<'_>,
    access_key: &str,
    secret: &str,
    amz_date: &str,
    region: &str,
) -> String {
    let payload = req
        .headers
        .iter()
        .find(|(n, _)| n == "x-amz-content-sha256")
        .map_or("UNSIGNED-PAYLOAD", |(_, v)| v.as_str());
    core::authorization(&req.core(), access_key, secret, amz_date, region, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn creds() -> Credentials {
        let mut c = Credentials::default();
        c.insert(KEY, SECRET);
        c
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    /// AWS's published example "GET Object" (S3 API reference, `SigV4` header examples).
    #[test]
    fn aws_documented_get_object_example_verifies() {
        let mut headers = h(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        headers.push(("authorization".into(), "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41".into()));
        let req = SignedRequest {
            method: "GET",
            raw_path: "/test.txt",
            raw_query: "",
            headers: &headers,
            body: b"",
        };
        let now = parse_amz_date("20130524T000100Z").unwrap();
        assert_eq!(creds().verify(&req, now), Ok(KEY.to_owned()));
        // An hour later the same request is refused as skewed (replay window).
        assert_eq!(creds().verify(&req, now + 3600), Err(AuthError::Skewed));
    }

    /// AWS's published example "GET Bucket Lifecycle": a sub-resource query without value.
    #[test]
    fn aws_documented_subresource_example_verifies() {
        let headers = h(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
            ),
        ]);
        let req = SignedRequest {
            method: "GET",
            raw_path: "/",
            raw_query: "lifecycle",
            headers: &headers,
            body: b"",
        };
        let now = parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(creds().verify(&req, now), Ok(KEY.to_owned()));
    }

    fn put<'a>(
        headers: &'a [(String, String)],
        body: &'a [u8],
        method: &'a str,
    ) -> SignedRequest<'a> {
        SignedRequest { method, raw_path: "/bucket", raw_query: "replication", headers, body }
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let body: &[u8] = b"<ReplicationConfiguration/>";
        let sha = sha256_hex(body);
        let base = h(&[
            ("host", "127.0.0.1:9000"),
            ("x-amz-content-sha256", &sha),
            ("x-amz-date", "20261122T120000Z"),
        ]);
        let now = parse_amz_date("20261122T120500Z").unwrap();
        let auth = sign(&put(&base, body, "PUT"), KEY, SECRET, "20261122T120000Z", "us-east-1");
        let mut good = base.clone();
        good.push(("authorization".into(), auth));
        assert_eq!(creds().verify(&put(&good, body, "PUT"), now), Ok(KEY.to_owned()));
        // Another method, another body, another secret, an unknown key, no header at all.
        assert_eq!(creds().verify(&put(&good, body, "DELETE"), now), Err(AuthError::BadSignature));
        assert_eq!(
            creds().verify(&put(&good, b"<other/>", "PUT"), now),
            Err(AuthError::PayloadMismatch)
        );
        let mut wrong = Credentials::default();
        wrong.insert(KEY, "not-the-secret");
        assert_eq!(wrong.verify(&put(&good, body, "PUT"), now), Err(AuthError::BadSignature));
        assert_eq!(
            Credentials::default().verify(&put(&good, body, "PUT"), now),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(creds().verify(&put(&base, body, "PUT"), now), Err(AuthError::Missing));
        assert_eq!(AuthError::BadSignature.code(), "SignatureDoesNotMatch");
        assert_eq!(AuthError::BadSignature.status(), 403);
    }

    fn head(hs: &[(String, String)]) -> Request<'_> {
        Request { method: "PUT", raw_path: "/bucket", raw_query: "replication", headers: hs }
    }

    #[test]
    fn a_head_verifies_before_its_body_is_read() {
        let body: &[u8] = b"<ReplicationConfiguration/>";
        let sha = sha256_hex(body);
        let now = parse_amz_date("20261122T120500Z").unwrap();
        let signed = |payload: &str| {
            let mut hs = h(&[("host", "127.0.0.1:9000"), ("x-amz-date", "20261122T120000Z")]);
            hs.push(("x-amz-content-sha256".into(), payload.to_owned()));
            let auth = sign(&put(&hs, body, "PUT"), KEY, SECRET, "20261122T120000Z", "us-east-1");
            hs.push(("authorization".into(), auth));
            hs
        };
        let hashed = signed(&sha);
        let v = creds().verify_head(&head(&hashed), true, now).unwrap();
        assert_eq!(v.payload, Payload::Sha256(sha.clone()));
        assert!(v.signs("x-amz-content-sha256") && !v.signs("content-md5"));
        assert_eq!(v.check_body(body), Ok(()));
        assert_eq!(v.check_body(b"<other/>"), Err(AuthError::PayloadMismatch));
        let unsigned = signed("UNSIGNED-PAYLOAD");
        let v = creds().verify_head(&head(&unsigned), true, now).unwrap();
        assert_eq!(v.payload, Payload::Unsigned);
        assert_eq!(v.check_body(b"anything"), Ok(()));
        // Not a hash at all: refused before anything else.
        let junk = signed("not-a-hash");
        assert_eq!(creds().verify_head(&head(&junk), true, now), Err(AuthError::PayloadMismatch));
        // A body without a payload hash cannot be verified before it is read.
        let mut none = h(&[("host", "127.0.0.1:9000"), ("x-amz-date", "20261122T120000Z")]);
        let auth = sign(&put(&none, b"", "PUT"), KEY, SECRET, "20261122T120000Z", "us-east-1");
        none.push(("authorization".into(), auth));
        assert_eq!(
            creds().verify_head(&head(&none), true, now),
            Err(AuthError::MissingPayloadHash)
        );
        assert_eq!(AuthError::MissingPayloadHash.code(), "InvalidRequest");
    }

    #[test]
    fn dates_and_encoding() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20000301T000000Z"), Some(951_868_800));
        assert_eq!(parse_amz_date("2000-03-01T00:00:00Z"), None);
        assert_eq!(parse_amz_date("20001301T000000Z"), None);
        assert_eq!(core::uri_encode(b"a b/c~", true), "a%20b/c~");
        assert_eq!(core::uri_encode(b"a/b", false), "a%2Fb");
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=a/b/c").is_err());
        assert!(parse_authorization("Basic abc").is_err());
    }
}
