//! Server-side copies on a real S3-compatible server (`SeaweedFS` over HTTP on 127.0.0.1):
//! with the source bucket on the destination's own endpoint, replicas are made with
//! `CopyObject` (and above the single-copy limit with `UploadPartCopy` parts, a failed part
//! retried alone) from the exact source version, carrying the replica's own metadata, tags and
//! content headers; no object byte is read by the engine. The recorded `ETag` guards the copy
//! (`SrcObjectNotEligible`), a missing source version is `SrcVersionNotFound`, a destination
//! with server-side copies turned off reads and writes the bytes, and so does one whose server
//! refuses the copy. A copy the server made but answered as failed is not made twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStoreExt as _, PutPayload};
use s3repl::config::ReplicationConfiguration;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{FailureReason, ObjectStoreSource, ReplicationStatus};
use s3repl::record::{ContentHeaders, VersionRecord};
use s3repl_io::dest::{Destination, DestinationRegistry, s3_store};
use s3repl_tests::fault_proxy::FaultProxy;
use s3repl_tests::seaweed::{SeaweedFs, options};

const COPIED: &str = "arn:aws:s3:::copied";
const STREAMED: &str = "arn:aws:s3:::streamed";
const REFUSED: &str = "arn:aws:s3:::refused";
/// A key that needs encoding in `x-amz-copy-source`.
const ODD: &str = "odd dir/ü+&=?.txt";

fn config() -> ReplicationConfiguration {
    let body = format!(
        r#"{{"Role":"arn:aws:iam::111122223333:role/replication","Rules":[
            {{"ID":"copied","Priority":2,"Status":"Enabled","Filter":{{}},
              "DeleteMarkerReplication":{{"Status":"Disabled"}},
              "Destination":{{"Bucket":"{COPIED}"}}}},
            {{"ID":"streamed","Priority":1,"Status":"Enabled","Filter":{{"Prefix":"small"}},
              "DeleteMarkerReplication":{{"Status":"Disabled"}},
              "Destination":{{"Bucket":"{STREAMED}"}}}},
            {{"ID":"refused","Priority":3,"Status":"Enabled","Filter":{{"Prefix":"small"}},
              "DeleteMarkerReplication":{{"Status":"Disabled"}},
              "Destination":{{"Bucket":"{REFUSED}"}}}}]}}"#
    );
    ReplicationConfiguration::parse(body.as_bytes(), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_the_source_endpoint_are_copied_server_side() {
    let server = SeaweedFs::start("copy", &["src", "copied", "streamed", "refused"]).unwrap();
    for b in ["src", "copied", "streamed", "refused"] {
        server.enable_versioning(b).unwrap();
    }
    // Everything, source reads included, goes through a proxy that records the requests,
    // fails the first attempt of part 2 of any upload (503), and refuses the first write to
    // the `refused` bucket (403, as a server that does not allow the copy).
    let refused_once = std::sync::atomic::AtomicBool::new(false);
    let proxy = FaultProxy::start_answering(
        server.port(),
        Arc::new(move |line: &str, before: usize| {
            if line.starts_with("PUT /refused/") {
                let first = !refused_once.swap(true, std::sync::atomic::Ordering::SeqCst);
                return first.then_some((403, "AccessDenied"));
            }
            let part_2 = line.starts_with("PUT ") && line.contains("partNumber=2&");
            (part_2 && before == 0).then_some((503, "SlowDown"))
        }),
    )
    .unwrap();
    let endpoint = proxy.endpoint();

    // The source versions, uploaded straight to the server.
    let src = s3_store(&options(&server.endpoint(), "src")).unwrap();
    let small = Bytes::from_static(b"a small object, copied by the server");
    // 11 MiB: above the test's single-copy limit, so three 5 MiB-or-less part copies.
    let mid: Bytes =
        (0..(11u32 << 20) / 8).flat_map(|i| format!("{i:07}\n").into_bytes()).collect();
    let put = async |key: &str, data: &Bytes| {
        let path = object_store::path::Path::parse(key).unwrap();
        let r = src.put(&path, PutPayload::from(data.clone())).await.unwrap();
        (r.version.unwrap(), r.e_tag.unwrap())
    };
    let (small_v, small_etag) = put("small.txt", &small).await;
    let (mid_v, mid_etag) = put("mid.bin", &mid).await;
    // A later version of the same key: the copy must take the recorded one.
    put("small.txt", &Bytes::from_static(b"a newer version")).await;
    let (stale_v, _) = put("stale.txt", &small).await;
    let (odd_v, odd_etag) = put(ODD, &small).await;

    let log_dir = std::env::temp_dir().join(format!("s3repl-ssc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    let record = |key: &str, version: &str, etag: &str, size: usize| VersionRecord {
        bucket: "src".into(),
        key: key.into(),
        version_id: version.into(),
        etag: etag.into(),
        size: size as u64,
        tags: vec![("team".into(), "storage".into())],
        user_metadata: vec![("author".into(), "ada".into())],
        content: ContentHeaders {
            content_type: Some("text/x-copied".into()),
            ..ContentHeaders::default()
        },
        ..VersionRecord::default()
    };
    let records = [
        record("small.txt", &small_v, &small_etag, small.len()),
        record("mid.bin", &mid_v, &mid_etag, mid.len()),
        record(ODD, &odd_v, &odd_etag, small.len()),
        // The log says this version has another ETag than the server's.
        record("stale.txt", &stale_v, "\"0123456789abcdef0123456789abcdef\"", small.len()),
        record("gone.txt", "no-such-version", "", 5),
    ];
    for r in &records {
        writer.append("src", &r.key, &r.to_bytes().unwrap()).unwrap();
    }

    let source = ObjectStoreSource::new().s3_bucket("src", &options(&endpoint, "src")).unwrap();
    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::s3(COPIED, &options(&endpoint, "copied")).unwrap());
    reg.insert(
        Destination::s3(STREAMED, &options(&endpoint, "streamed"))
            .unwrap()
            .without_server_side_copy(),
    );
    reg.insert(Destination::s3(REFUSED, &options(&endpoint, "refused")).unwrap());
    let limits = s3repl::pipeline::Limits {
        single_copy_max: 8 << 20,
        copy_part_size: 5 << 20,
        max_attempts: 2,
        ..s3repl::pipeline::Limits::default()
    };
    let (mut engine, status) =
        s3repl_tests::start_engine(&log_dir, config(), Arc::new(source), reg, limits);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();

    let done: Vec<_> =
        status.updates().into_iter().filter(|u| u.status != ReplicationStatus::Pending).collect();
    let status_of = |arn: &str, key: &str| {
        done.iter().find(|u| u.destination == arn && u.key == key).map(|u| u.status.clone())
    };
    for key in ["small.txt", "mid.bin", ODD] {
        assert_eq!(status_of(COPIED, key), Some(ReplicationStatus::Completed), "{done:?}");
    }
    assert_eq!(status_of(STREAMED, "small.txt"), Some(ReplicationStatus::Completed), "{done:?}");
    // Refused as a server-side copy, then copied through the engine.
    assert_eq!(status_of(REFUSED, "small.txt"), Some(ReplicationStatus::Completed), "{done:?}");
    assert_eq!(
        s3repl_tests::reason(status_of(COPIED, "stale.txt")),
        Some(FailureReason::SrcObjectNotEligible),
        "{done:?}"
    );
    assert_eq!(
        s3repl_tests::reason(status_of(COPIED, "gone.txt")),
        Some(FailureReason::SrcVersionNotFound),
        "{done:?}"
    );

    // What crossed the proxy: for the copied destination no source read at all; the mid
    // object as one upload of three part copies, part 2 retried alone.
    let seen: Vec<String> = proxy.seen().into_iter().map(|(l, _)| l).collect();
    let count = |f: &dyn Fn(&str) -> bool| seen.iter().filter(|l| f(l)).count();
    assert_eq!(count(&|l| l.starts_with("GET /src/mid.bin")), 0, "{seen:#?}");
    assert_eq!(count(&|l| l.starts_with("GET /src/odd")), 0, "{seen:#?}");
    assert_eq!(
        count(&|l| l.starts_with("GET /src/small.txt")),
        2,
        "only the streamed copy and the refused one: {seen:#?}"
    );
    assert_eq!(count(&|l| l.starts_with("PUT /refused/small.txt ")), 2, "{seen:#?}");
    assert_eq!(count(&|l| l.starts_with("POST /copied/mid.bin?uploads")), 1, "{seen:#?}");
    assert_eq!(count(&|l| l.starts_with("PUT /copied/mid.bin?partNumber=")), 4, "{seen:#?}");
    assert_eq!(count(&|l| l.starts_with("PUT /copied/mid.bin?partNumber=2&")), 2, "{seen:#?}");
    assert_eq!(count(&|l| l.starts_with("PUT /copied/small.txt ")), 1, "{seen:#?}");

    // The replicas: the recorded versions' bytes, with their own metadata, tags and headers.
    let copied = s3_store(&options(&server.endpoint(), "copied")).unwrap();
    for (key, data) in [("small.txt", &small), ("mid.bin", &mid)] {
        let path = object_store::path::Path::parse(key).unwrap();
        let got = copied.get(&path).await.unwrap();
        let attributes = got.attributes.clone();
        assert_eq!(got.bytes().await.unwrap(), data, "{key}");
        let meta = |name: &str| {
            attributes.iter().find_map(|(k, v)| match k {
                object_store::Attribute::Metadata(m) if m.as_ref() == name => {
                    Some(v.as_ref().to_owned())
                }
                _ => None,
            })
        };
        assert_eq!(meta("author").as_deref(), Some("ada"), "{key}: {attributes:?}");
        assert_eq!(meta("s3repl-replication-status").as_deref(), Some("REPLICA"), "{key}");
        let source_version = if key == "small.txt" { &small_v } else { &mid_v };
        assert_eq!(meta("s3repl-source-version-id").as_ref(), Some(source_version), "{key}");
        let content_type = attributes.get(&object_store::Attribute::ContentType);
        assert_eq!(content_type.map(AsRef::as_ref), Some("text/x-copied"), "{key}");
        let (code, tags) = server.curl("GET", &format!("/copied/{key}?tagging="), "").unwrap();
        assert_eq!(code, 200, "{tags}");
        assert!(
            tags.contains("<Key>team</Key>") && tags.contains("<Value>storage</Value>"),
            "{key}: {tags}"
        );
    }
    let odd = object_store::path::Path::parse(ODD).unwrap();
    assert_eq!(copied.get(&odd).await.unwrap().bytes().await.unwrap(), small);
    let (code, versions) = server.curl("GET", "/copied?versions=", "").unwrap();
    assert_eq!(code, 200);
    assert!(!versions.contains("stale.txt") && !versions.contains("gone.txt"), "{versions}");
    let path = object_store::path::Path::parse("small.txt").unwrap();
    for bucket in ["streamed", "refused"] {
        let store = s3_store(&options(&server.endpoint(), bucket)).unwrap();
        assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap(), small, "{bucket}");
    }
    let _ = std::fs::remove_dir_all(&log_dir);
}

/// A `CopyObject` the server carried out but answered as failed (500 after the copy) is not
/// made again: the retry finds the replica, stamped with this record's log position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_applied_but_answered_as_failed_is_not_copied_twice() {
    const KEYS: usize = 4;
    let server = SeaweedFs::start("copyonce", &["src", "once"]).unwrap();
    for b in ["src", "once"] {
        server.enable_versioning(b).unwrap();
    }
    let proxy = FaultProxy::start_after_forwarding(
        server.port(),
        Arc::new(|line: &str, before| line.starts_with("PUT /once/") && before == 0),
        500,
        "InternalError",
    )
    .unwrap();
    let src = s3_store(&options(&server.endpoint(), "src")).unwrap();
    let log_dir = std::env::temp_dir().join(format!("s3repl-ssc-once-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    for k in 0..KEYS {
        let key = format!("c/{k}");
        let data = Bytes::from(format!("{key}, copied once"));
        let path = object_store::path::Path::parse(&key).unwrap();
        let r = src.put(&path, PutPayload::from(data.clone())).await.unwrap();
        let rec = VersionRecord {
            bucket: "src".into(),
            key: key.clone(),
            version_id: r.version.unwrap(),
            etag: r.e_tag.unwrap(),
            size: data.len() as u64,
            ..VersionRecord::default()
        };
        writer.append("src", &key, &rec.to_bytes().unwrap()).unwrap();
    }
    let arn = "arn:aws:s3:::once";
    let source =
        ObjectStoreSource::new().s3_bucket("src", &options(&proxy.endpoint(), "src")).unwrap();
    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::s3(arn, &options(&proxy.endpoint(), "once")).unwrap());
    let config = s3repl_tests::catch_all(arn, false);
    let limits = s3repl::pipeline::Limits::default();
    let (mut engine, status) =
        s3repl_tests::start_engine(&log_dir, config, Arc::new(source), reg, limits);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    let updates = status.updates();
    let done = updates.iter().filter(|u| u.status == ReplicationStatus::Completed).count();
    assert_eq!(done, KEYS, "{updates:?}");
    let seen = proxy.seen();
    // Each key's one copy went out (a PUT with x-amz-copy-source, no source read) and was
    // answered 500; nothing else wrote to the destination.
    assert_eq!(
        seen.iter().filter(|(l, failed)| l.starts_with("PUT /once/") && *failed).count(),
        KEYS
    );
    assert_eq!(seen.iter().filter(|(l, _)| l.starts_with("PUT /once/")).count(), KEYS, "{seen:?}");
    assert!(!seen.iter().any(|(l, _)| l.starts_with("GET /src/")), "{seen:?}");
    let (code, xml) = server.curl("GET", "/once?versions=", "").unwrap();
    assert_eq!(code, 200, "{xml}");
    for k in 0..KEYS {
        let key = format!("<Key>c/{k}</Key>");
        assert_eq!(xml.matches(&key).count(), 1, "c/{k}: {xml}");
    }
    let _ = std::fs::remove_dir_all(&log_dir);
}
