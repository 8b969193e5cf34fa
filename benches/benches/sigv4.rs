//! Signing one S3 request (`SigV4`) as the destinations' signed client does for every
//! `CopyObject` and `PutObject`, beside the one SHA-256 of the canonical request that signing
//! cannot avoid (the baseline).
//!
//! Ratio to report: baseline time / signing time (how close signing is to its hashing floor);
//! `authorization` derives the signing key every time, `signer_authorization` keeps the day's;
//! `aws_sigv4` is the AWS SDK's signer on the same request (S3 settings: single percent
//! encoding, no path normalization), the alternative to keeping our own.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use s3repl_io::sigv4;

/// The headers of a replica `CopyObject` with user metadata and tags, as the client sends.
fn copy_headers() -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = vec![
        ("host".into(), "127.0.0.1:8333".into()),
        ("x-amz-content-sha256".into(), sigv4::sha256_hex(b"")),
        ("x-amz-date".into(), sigv4::amz_date(1_796_000_000)),
        ("x-amz-copy-source".into(), "/src/bench/0042/object-42?versionId=3a7f9c2e41d8".into()),
        ("x-amz-copy-source-if-match".into(), "\"9b2cf535f27731c974343645a3985328\"".into()),
        ("x-amz-metadata-directive".into(), "REPLACE".into()),
        ("x-amz-tagging-directive".into(), "REPLACE".into()),
        ("x-amz-tagging".into(), "t0=v3&t1=v5".into()),
        ("content-type".into(), "application/octet-stream".into()),
        ("x-amz-storage-class".into(), "STANDARD".into()),
        ("x-amz-meta-s3repl-source-version-id".into(), "3a7f9c2e41d8".into()),
        ("x-amz-meta-s3repl-source-last-modified".into(), "1796000000000".into()),
        ("x-amz-meta-s3repl-blake3".into(), "ab".repeat(32)),
        ("x-amz-meta-s3repl-replication-status".into(), "REPLICA".into()),
    ];
    h.sort();
    h
}

fn sign(c: &mut Criterion) {
    let headers = copy_headers();
    let req = sigv4::Request {
        method: "PUT",
        raw_path: "/dst-one/bench/0042/object-42",
        raw_query: "",
        headers: &headers,
    };
    let amz_date = sigv4::amz_date(1_796_000_000);
    let payload = sigv4::sha256_hex(b"");
    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.dedup();
    let canonical = sigv4::canonical_request(&req, &names, &payload);
    let mut g = c.benchmark_group("sigv4_copy_object");
    g.bench_function("baseline_sha256_of_canonical_request", |b| {
        b.iter(|| sigv4::sha256(std::hint::black_box(canonical.as_bytes())));
    });
    g.bench_function("authorization", |b| {
        b.iter(|| {
            sigv4::authorization(
                std::hint::black_box(&req),
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                &amz_date,
                "us-east-1",
                &payload,
            )
        });
    });
    // What the destinations' client does: the day's signing key kept.
    let signer =
        sigv4::Signer::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1");
    g.bench_function("signer_authorization", |b| {
        b.iter(|| signer.authorization(std::hint::black_box(&req), &amz_date, &payload));
    });
    // The SDK's signer (it derives the signing key on every call, as `authorization` does).
    let identity: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "bench",
        )
        .into();
    let mut settings = aws_sigv4::http_request::SigningSettings::default();
    settings.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
    settings.uri_path_normalization_mode =
        aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
    let params: aws_sigv4::http_request::SigningParams<'_> =
        aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000))
            .settings(settings)
            .build()
            .unwrap()
            .into();
    let sdk_headers: Vec<(String, String)> =
        headers.iter().filter(|(n, _)| n != "x-amz-date").cloned().collect();
    // Both sign the same canonical request: the SDK's signature is ours.
    let sdk_sign = || {
        let signable = aws_sigv4::http_request::SignableRequest::new(
            "PUT",
            "http://127.0.0.1:8333/dst-one/bench/0042/object-42",
            sdk_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            aws_sigv4::http_request::SignableBody::Precomputed(payload.clone()),
        )
        .unwrap();
        aws_sigv4::http_request::sign(signable, &params).unwrap()
    };
    let ours = sigv4::authorization(
        &req,
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        &amz_date,
        "us-east-1",
        &payload,
    );
    let (instructions, signature) = sdk_sign().into_parts();
    let sdk_auth: Vec<_> = instructions
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_owned())
        .collect();
    assert!(ours.ends_with(&format!("Signature={signature}")), "ours {ours}, SDK {sdk_auth:?}");
    g.bench_function("aws_sigv4", |b| b.iter(&sdk_sign));
    g.finish();
}

criterion_group!(benches, sign);
criterion_main!(benches);
