//! AWS Signature Version 4, the parts both sides need: the canonical request, the signing key
//! and the signature. The admin endpoint verifies with them; the destinations' signed client
//! signs every S3 call it makes (`PutObject`, `CopyObject`, uploads, tagging, ACL, Object Lock).
//!
//! Our own rather than the SDK's `aws-sigv4`: on the same `CopyObject` request (the signatures
//! are equal, `benches/benches/sigv4.rs` checks) the SDK's signer took 8.7 µs, this one 2.8 µs
//! with the day's signing key kept (`Signer`) and 3.9 µs deriving it each time; the verifier
//! needs the canonical request from the raw request either way, and is tested against the
//! AWS CLI (botocore) in `tools/tests/cli_run.rs`.

mod sign;
mod verify;

pub use verify::{AuthError, Credentials, Payload, SignedRequest, Verified};

// Signing is public only to tests, benchmarks and fuzzers (the `testing` feature): embedders
// verify requests with `Credentials`; the destinations sign their own.
#[cfg(feature = "testing")]
pub use sign::{
    Signer, amz_date, authorization, canonical_request, http_date, iso8601_ms, sha256, sha256_hex,
    signature, uri_encode,
};
#[cfg(not(feature = "testing"))]
#[allow(unused_imports)]
pub(crate) use sign::{
    Signer, amz_date, authorization, canonical_request, http_date, iso8601_ms, sha256, sha256_hex,
    signature, uri_encode,
};

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
