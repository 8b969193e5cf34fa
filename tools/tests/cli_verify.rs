//! `s3repl verify` on a real `SeaweedFS`: versions put with real requests, replicated by
//! `s3repl run` (S3 source, S3 destination), found in agreement; then a deleted replica, an
//! extra object and a corrupted replica are each found, and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use s3repl::log::{LogConfig, LogWriter};
use s3repl::record::VersionRecord;
use s3repl_tests::seaweed::SeaweedFs;

/// PUTs `body` at `bucket/key` with `headers`; the version id and `ETag` the server answered.
fn put(
    server: &SeaweedFs,
    bucket: &str,
    key: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (String, String) {
    let (code, answered, text) =
        server.request("PUT", &format!("/{bucket}/{key}"), headers, body).unwrap();
    assert_eq!(code, 200, "{text}");
    (
        common::header(&answered, "x-amz-version-id").unwrap(),
        common::header(&answered, "etag").unwrap(),
    )
}

/// The version ids of exactly `key` in `bucket`, from one listing.
fn versions_of(server: &SeaweedFs, bucket: &str, key: &str) -> Vec<String> {
    let prefix = s3repl::sigv4::uri_encode(key.as_bytes(), false);
    let (code, body) =
        server.curl("GET", &format!("/{bucket}?prefix={prefix}&versions="), "").unwrap();
    assert_eq!(code, 200, "{body}");
    body.split("<Version>")
        .skip(1)
        .filter(|v| v.contains(&format!("<Key>{key}</Key>")))
        .filter_map(|v| {
            v.split("<VersionId>").nth(1)?.split("</VersionId>").next().map(str::to_owned)
        })
        .collect()
}

fn verify(config: &Path, format: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["verify", "--config", config.to_str().unwrap(), "--bucket", "src-bucket"])
        .args(["--format", format])
        .args(extra)
        .output()
        .unwrap()
}

/// The summary line's `name`.
fn field(out: &Output, name: &str) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    let s: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    s[name].as_u64().unwrap_or_else(|| panic!("no {name} in {s}"))
}

/// The summary line's (checked, missing, extra, different).
fn summary(out: &Output) -> (u64, u64, u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let s: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let n = |name: &str| s[name].as_u64().unwrap_or_else(|| panic!("no {name} in {s}"));
    (n("checked"), n("missing"), n("extra"), n("different"))
}

/// Issue 28, item 3.
#[test]
fn verify_finds_agreement_then_a_missing_an_extra_and_a_different_replica() {
    let server = common::two_buckets("verify");
    let endpoint = server.endpoint();
    let (data, config) = common::s3_to_s3(
        "verify",
        &endpoint,
        &endpoint,
        "",
        Some(&common::rule("docs/", "", false)),
    );
    // Versions put with real requests; the log gets their records, as a storage server's would.
    let writer =
        LogWriter::open(&data.join("log"), LogConfig { partitions: 2, ..LogConfig::default() })
            .unwrap();
    let mut sources = Vec::new();
    for key in ["docs/0", "docs/1", "docs/2", "docs/1", "other/x"] {
        let body = format!("{key} written at {}", sources.len());
        let (version_id, etag) = put(&server, "src-bucket", key, &body, &[]);
        let rec = VersionRecord {
            bucket: "src-bucket".into(),
            key: key.into(),
            version_id: version_id.clone(),
            size: body.len() as u64,
            etag,
            blake3: Some(*blake3::hash(body.as_bytes()).as_bytes()),
            commit_time_ms: s3repl_tests::now_ms(),
            ..VersionRecord::default()
        };
        writer.append("src-bucket", key, &rec.to_bytes().unwrap()).unwrap();
        sources.push((key, version_id, body));
    }
    drop(writer);
    let (child, _) = common::spawn_run(
        &["--config", config.to_str().unwrap(), "--admin-listen", "127.0.0.1:0"],
        &[("S3REPL_ADMIN_ACCESS_KEY_ID", "a"), ("S3REPL_ADMIN_SECRET_ACCESS_KEY", "b")],
        &data.join("run.log"),
    );
    let child = common::Running(child);
    let deadline = Instant::now() + Duration::from_mins(1);
    while server.version_counts("dst-bucket").unwrap().values().sum::<usize>() < 4 {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(data.join("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child);

    // Four docs/ versions replicated (two of docs/1), other/x not selected: all agree — by the
    // listings alone, and by every version's stamps with --stamps (5 source versions, 4 replicas
    // read).
    for (extra, heads) in [(&[][..], 0), (&["--stamps"][..], 9)] {
        let out = verify(&config, "text", extra);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{extra:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(summary(&out), (4, 0, 0, 0), "{extra:?}");
        assert_eq!(field(&out, "heads"), heads, "{extra:?}");
    }

    // A deleted replica, an object that is no replica, and a replica whose bytes changed.
    let replica = versions_of(&server, "dst-bucket", "docs/0");
    assert_eq!(replica.len(), 1);
    let (code, _) =
        server.curl("DELETE", &format!("/dst-bucket/docs/0?versionId={}", replica[0]), "").unwrap();
    assert_eq!(code, 204);
    put(&server, "dst-bucket", "docs/stray", "not a replica", &[]);
    let (_, v2, body2) = &sources[2];
    let stamp = ("x-amz-meta-s3repl-source-version-id", v2.as_str());
    let replica2 = versions_of(&server, "dst-bucket", "docs/2");
    put(&server, "dst-bucket", "docs/2", &"X".repeat(body2.len()), &[stamp]);
    server.curl("DELETE", &format!("/dst-bucket/docs/2?versionId={}", replica2[0]), "").unwrap();

    // The same three found either way; by the listings, only the keys that disagree are read:
    // docs/0's source version, docs/stray's object, and docs/2's source version and replica.
    for (extra, heads) in [(&[][..], 4), (&["--stamps"][..], 9)] {
        let out = verify(&config, "json", extra);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let found: Vec<(String, String)> = lines
            .iter()
            .filter_map(|l| {
                Some((l["difference"].as_str()?.to_owned(), l["key"].as_str()?.to_owned()))
            })
            .collect();
        assert_eq!(found.len(), 3, "{extra:?}: {text}");
        for want in [("missing", "docs/0"), ("extra", "docs/stray"), ("different", "docs/2")] {
            assert!(found.contains(&(want.0.to_owned(), want.1.to_owned())), "{want:?} in {text}");
        }
        assert_eq!(summary(&out), (4, 1, 1, 1), "{extra:?}");
        assert_eq!(field(&out, "heads"), heads, "{extra:?}: {text}");
    }

    // Errors exit 2: a bucket this replicator does not serve.
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["verify", "--config", config.to_str().unwrap(), "--bucket", "nothing-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nothing-here\""));
    let _ = std::fs::remove_dir_all(&data);
}
