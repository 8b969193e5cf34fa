//! The body checksum S3 requires on `PutBucketReplication`: `Content-MD5` or one
//! `x-amz-checksum-*` header (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256), checked against the
//! body received. And one rule of ours: a body the signature does not cover (`UNSIGNED-PAYLOAD`)
//! must be covered by a *signed* checksum header, or a captured request could install any
//! configuration for as long as its signature is valid (15 minutes).
//!
//! Errors are S3's: `InvalidDigest` (a `Content-MD5` that is not 16 bytes of base64),
//! `BadDigest` (a checksum that does not match), `InvalidRequest` (a missing header, a malformed
//! `x-amz-checksum-*` value, more than one of them); the unsigned-body rule answers
//! `InvalidRequest` too (ours: S3 does not have it; `docs/s3-compatibility.md`).

use base64::Engine as _;
use s3repl::sigv4::{Payload, Verified};

/// An S3 error: HTTP status, code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn error(code: &'static str, message: impl Into<String>) -> DigestError {
    DigestError { status: 400, code, message: message.into() }
}

/// The `x-amz-checksum-*` headers S3 takes, with the name S3's messages give the algorithm.
const CHECKSUMS: [(&str, &str); 5] = [
    ("x-amz-checksum-crc32", "CRC32"),
    ("x-amz-checksum-crc32c", "CRC32C"),
    ("x-amz-checksum-crc64nvme", "CRC64NVME"),
    ("x-amz-checksum-sha1", "SHA1"),
    ("x-amz-checksum-sha256", "SHA256"),
];

/// The digest of `body` under the checksum header `name` (as S3 encodes it, big-endian).
fn digest(name: &str, body: &[u8]) -> Vec<u8> {
    use crc_fast::CrcAlgorithm;
    use sha2::Digest as _;
    let crc32 =
        |alg| u32::try_from(crc_fast::checksum(alg, body)).unwrap_or(0).to_be_bytes().to_vec();
    match name {
        "x-amz-checksum-crc32" => crc32(CrcAlgorithm::Crc32IsoHdlc),
        "x-amz-checksum-crc32c" => crc32(CrcAlgorithm::Crc32Iscsi),
        "x-amz-checksum-crc64nvme" => {
            crc_fast::checksum(CrcAlgorithm::Crc64Nvme, body).to_be_bytes().to_vec()
        }
        "x-amz-checksum-sha1" => sha1::Sha1::digest(body).to_vec(),
        _ => sha2::Sha256::digest(body).to_vec(),
    }
}

/// Checks `body` of a `PutBucketReplication` against its checksum headers (lowercase names)
/// and the signature's coverage.
pub(crate) fn check(
    headers: &[(String, String)],
    verified: &Verified,
    body: &[u8],
) -> Result<(), DigestError> {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim());
    let b64 = base64::engine::general_purpose::STANDARD;
    let md5 = header("content-md5");
    let checksums: Vec<(&str, &str, &str)> =
        CHECKSUMS.iter().filter_map(|&(name, alg)| header(name).map(|v| (name, alg, v))).collect();
    if checksums.len() > 1 {
        return Err(error(
            "InvalidRequest",
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        ));
    }
    if md5.is_none() && checksums.is_empty() {
        return Err(error(
            "InvalidRequest",
            "Missing required header for this request: Content-MD5 (or an x-amz-checksum- header)",
        ));
    }
    if let Some(v) = md5 {
        let want =
            b64.decode(v).ok().filter(|d| d.len() == 16).ok_or_else(|| {
                error("InvalidDigest", "The Content-MD5 you specified was invalid.")
            })?;
        if <md5::Md5 as md5::Digest>::digest(body).as_slice() != want.as_slice() {
            return Err(error(
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    if let Some(&(name, alg, v)) = checksums.first() {
        let got = digest(name, body);
        let want = b64.decode(v).ok().filter(|d| d.len() == got.len()).ok_or_else(|| {
            error("InvalidRequest", format!("Value for {name} header is invalid."))
        })?;
        if want != got {
            return Err(error(
                "BadDigest",
                format!("The {alg} you specified did not match the calculated checksum."),
            ));
        }
    }
    let signed_checksum = (md5.is_some() && verified.signs("content-md5"))
        || checksums.iter().any(|(name, _, _)| verified.signs(name));
    if verified.payload == Payload::Unsigned && !signed_checksum {
        return Err(error(
            "InvalidRequest",
            "The request body is covered by neither the signed payload hash \
             (x-amz-content-sha256 is UNSIGNED-PAYLOAD) nor a signed Content-MD5 or \
             x-amz-checksum- header.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn verified(payload: Payload, signed: &[&str]) -> Verified {
        Verified {
            access_key: "k".into(),
            payload,
            signed_headers: signed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    const BODY: &[u8] = b"<ReplicationConfiguration/>";

    fn b64(d: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(d)
    }

    #[test]
    fn known_answers() {
        // CRC32("123456789") = CBF43926, CRC32C = E3069283, CRC64/NVME = AE8B14860A799888.
        assert_eq!(digest("x-amz-checksum-crc32", b"123456789"), [0xCB, 0xF4, 0x39, 0x26]);
        assert_eq!(digest("x-amz-checksum-crc32c", b"123456789"), [0xE3, 0x06, 0x92, 0x83]);
        assert_eq!(
            digest("x-amz-checksum-crc64nvme", b"123456789"),
            [0xAE, 0x8B, 0x14, 0x86, 0x0A, 0x79, 0x98, 0x88]
        );
        assert_eq!(b64(&digest("x-amz-checksum-sha1", b"abc")), "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
    }

    #[test]
    fn every_header_is_checked_and_the_unsigned_body_must_be_covered() {
        use md5::Digest as _;
        let signed = verified(Payload::Sha256("x".into()), &["host"]);
        let md5 = b64(&md5::Md5::digest(BODY));
        assert_eq!(check(&h(&[("content-md5", &md5)]), &signed, BODY), Ok(()));
        let code = |hs: &[(&str, &str)], v: &Verified| check(&h(hs), v, BODY).map_err(|e| e.code);
        assert_eq!(code(&[], &signed), Err("InvalidRequest"));
        assert_eq!(code(&[("content-md5", "AAAA")], &signed), Err("InvalidDigest"));
        assert_eq!(code(&[("content-md5", &b64(&[0; 16]))], &signed), Err("BadDigest"));
        for (name, _) in CHECKSUMS {
            let good = b64(&digest(name, BODY));
            assert_eq!(code(&[(name, &good)], &signed), Ok(()), "{name}");
            assert_eq!(code(&[(name, &b64(&digest(name, b"x")))], &signed), Err("BadDigest"));
            assert_eq!(code(&[(name, "!!")], &signed), Err("InvalidRequest"), "{name}");
        }
        let (c1, c2) = (
            b64(&digest("x-amz-checksum-crc32", BODY)),
            b64(&digest("x-amz-checksum-sha256", BODY)),
        );
        assert_eq!(
            code(&[("x-amz-checksum-crc32", &c1), ("x-amz-checksum-sha256", &c2)], &signed),
            Err("InvalidRequest")
        );
        // UNSIGNED-PAYLOAD: only a signed checksum header covers the body.
        let unsigned_md5_unsigned = verified(Payload::Unsigned, &["host"]);
        assert_eq!(code(&[("content-md5", &md5)], &unsigned_md5_unsigned), Err("InvalidRequest"));
        let unsigned_md5_signed = verified(Payload::Unsigned, &["host", "content-md5"]);
        assert_eq!(code(&[("content-md5", &md5)], &unsigned_md5_signed), Ok(()));
        let unsigned_crc = verified(Payload::Unsigned, &["host", "x-amz-checksum-crc32"]);
        assert_eq!(code(&[("x-amz-checksum-crc32", &c1)], &unsigned_crc), Ok(()));
    }
}
