//! What a replica carries besides its bytes, on a real S3-compatible server (`SeaweedFS` over
//! HTTP on 127.0.0.1): content headers, storage class (the rule's override, else the source's),
//! ACL, Object Lock retention and legal hold (set as the replica is created, single-part or
//! multipart: no retention call follows, and a multipart replica keeps `Expires` too; a part
//! that fails is retried alone), and later changes of ACL and Object Lock applied to the same
//! replica version; a rule with `AccessControlTranslation` gives its replicas no source
//! ACL and does not replicate ACL changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use s3repl::config::ReplicationConfiguration;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{
    EngineHandle, FailureReason, MemorySource, MemoryStatus, OwnedStatusUpdate, ReplicationStatus,
};
use s3repl::record::{
    CannedAcl, ContentHeaders, LockMode, ObjectAcl, ObjectLock, Retention, VersionRecord,
};
use s3repl::rules::{EventKind, MetadataChanges};
use s3repl_io::dest::{Destination, DestinationRegistry};
use s3repl_tests::fault_proxy::FaultProxy;
use s3repl_tests::seaweed::{SeaweedFs, options};

const LOCKED: &str = "arn:aws:s3:::locked";
const OWNED: &str = "arn:aws:s3:::owned";
const KEY: &str = "docs/report.txt";
/// Copied as a multipart upload (the test lowers the threshold below its size).
const BIG: &str = "docs/archive.bin";
const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// 2030-01-01T00:00:00Z and 2031-01-01T00:00:00Z.
const Y2030_MS: u64 = 1_893_456_000_000;
const Y2031_MS: u64 = 1_924_992_000_000;

fn destination(endpoint: &str, arn: &str, bucket: &str) -> Destination {
    Destination::s3(arn, &options(endpoint, bucket)).unwrap()
}

fn config() -> ReplicationConfiguration {
    let body = format!(
        r#"{{"Role":"arn:aws:iam::111122223333:role/replication","Rules":[
            {{"ID":"locked","Priority":2,"Status":"Enabled","Filter":{{}},
              "DeleteMarkerReplication":{{"Status":"Disabled"}},
              "Destination":{{"Bucket":"{LOCKED}","StorageClass":"STANDARD_IA"}}}},
            {{"ID":"owned","Priority":1,"Status":"Enabled","Filter":{{}},
              "DeleteMarkerReplication":{{"Status":"Disabled"}},
              "Destination":{{"Bucket":"{OWNED}","Account":"444455556666",
                "AccessControlTranslation":{{"Owner":"Destination"}}}}}}]}}"#
    );
    ReplicationConfiguration::parse(body.as_bytes(), None).unwrap()
}

/// A version with every property a replica should carry.
fn put_record(size: u64) -> VersionRecord {
    VersionRecord {
        bucket: "src".into(),
        key: KEY.into(),
        version_id: "v1".into(),
        size,
        tags: vec![("class".into(), "audit".into())],
        user_metadata: vec![("author".into(), "ada".into())],
        content: ContentHeaders {
            content_type: Some("text/x-report".into()),
            content_encoding: Some("identity".into()),
            content_disposition: Some("attachment; filename=\"report.txt\"".into()),
            content_language: Some("fr-CA".into()),
            cache_control: Some("max-age=600".into()),
            expires: Some("Wed, 01 Jan 2031 00:00:00 GMT".into()),
        },
        acl: Some(ObjectAcl::Canned(CannedAcl::PublicRead)),
        lock: ObjectLock {
            retention: Some(Retention { mode: LockMode::Governance, retain_until_ms: Y2030_MS }),
            legal_hold: true,
        },
        ..VersionRecord::default()
    }
}

/// The engine under test: objects from 32 KiB up copied as multipart uploads of 5 MiB parts
/// (the least part size but the last on S3 and `SeaweedFS`).
fn start(
    log_dir: &std::path::Path,
    source: Arc<MemorySource>,
    reg: DestinationRegistry,
) -> (EngineHandle, MemoryStatus) {
    let limits = s3repl::pipeline::Limits {
        multipart_threshold: 32 << 10,
        part_size: 5 << 20,
        ..s3repl::pipeline::Limits::default()
    };
    s3repl_tests::start_engine(log_dir, config(), source, reg, limits)
}

/// The final (not `PENDING`) status updates so far.
fn finished(status: &MemoryStatus) -> Vec<OwnedStatusUpdate> {
    status.updates().into_iter().filter(|u| u.status != ReplicationStatus::Pending).collect()
}

fn get_of(server: &SeaweedFs, bucket: &str, key: &str, sub: &str, version: &str) -> String {
    let (code, xml) =
        server.curl("GET", &format!("/{bucket}/{key}?{sub}=&versionId={version}"), "").unwrap();
    assert_eq!(code, 200, "{sub} of {bucket}/{key}: {xml}");
    xml
}

fn get(server: &SeaweedFs, bucket: &str, sub: &str, version: &str) -> String {
    get_of(server, bucket, KEY, sub, version)
}

fn head(server: &SeaweedFs, bucket: &str, version: &str) -> String {
    let (code, headers, _) =
        server.request("HEAD", &format!("/{bucket}/{KEY}?versionId={version}"), &[], "").unwrap();
    assert_eq!(code, 200, "{headers}");
    headers.to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_carry_content_headers_storage_class_acl_and_object_lock() {
    let server = SeaweedFs::start("props", &[]).unwrap();
    server.create_locked_bucket("locked").unwrap();
    server.create_locked_bucket("owned").unwrap();
    let log_dir = std::env::temp_dir().join(format!("s3repl-props-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let data = Bytes::from_static(b"quarterly numbers, locked until 2030");
    source.insert("src", KEY, "v1", data.clone());
    let put = put_record(data.len() as u64);
    writer.append("src", KEY, &put.to_bytes().unwrap()).unwrap();
    // Parts of 5 MiB (S3's and SeaweedFS's least but the last): 5 + 5 + 1 MiB, each part
    // different, so a part out of place shows.
    let big = (0..(11 << 20) / 8).fold(String::new(), |mut s, i| {
        use std::fmt::Write as _;
        let _ = writeln!(s, "{i:07}");
        s
    });
    let big = Bytes::from(big);
    source.insert("src", BIG, "b1", big.clone());
    let big_put = VersionRecord {
        key: BIG.into(),
        version_id: "b1".into(),
        size: big.len() as u64,
        ..put.clone()
    };
    writer.append("src", BIG, &big_put.to_bytes().unwrap()).unwrap();

    // The locked bucket is reached through a proxy that fails the first upload of part 2.
    let proxy = FaultProxy::start(
        server.port(),
        Arc::new(|line: &str, before: usize| {
            line.starts_with("PUT ") && line.contains("partNumber=2&") && before == 0
        }),
    )
    .unwrap();
    let mut reg = DestinationRegistry::new();
    reg.insert(destination(&proxy.endpoint(), LOCKED, "locked"));
    reg.insert(destination(&server.endpoint(), OWNED, "owned"));
    let (mut engine, status) = start(&log_dir, Arc::new(source.clone()), reg);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    let done = finished(&status);
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(done.iter().all(|u| u.status == ReplicationStatus::Completed), "{done:?}");
    let version_at = |arn: &str, key: &str| {
        let u = done.iter().find(|u| u.destination == arn && u.key == key).unwrap();
        u.destination_version_id.clone().unwrap()
    };
    let (locked_v, owned_v) = (version_at(LOCKED, KEY), version_at(OWNED, KEY));

    // The multipart replica was created locked, with its Expires; its ACL follows the upload.
    let big_v = version_at(LOCKED, BIG);
    let seen: Vec<String> = proxy.seen().into_iter().map(|(line, _)| line).collect();
    let big_path = format!("/locked/{BIG}");
    let of_big: Vec<&String> = seen.iter().filter(|l| l.contains(&big_path)).collect();
    let count = |what: &str| of_big.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("?uploads"), 1, "{of_big:#?}");
    assert_eq!(count("partNumber=2&"), 2, "part 2 retried alone: {of_big:#?}");
    assert_eq!(count("partNumber="), 4, "{of_big:#?}");
    assert_eq!(
        count("?retention") + count("?legal-hold"),
        0,
        "no lock after the fact: {of_big:#?}"
    );
    let (code, body) = server.curl("GET", &format!("/locked/{BIG}?versionId={big_v}"), "").unwrap();
    assert_eq!(code, 200);
    assert!(body.as_bytes() == big, "the multipart replica's bytes differ");
    let (code, headers, _) =
        server.request("HEAD", &format!("/locked/{BIG}?versionId={big_v}"), &[], "").unwrap();
    assert_eq!(code, 200);
    assert!(
        headers.to_ascii_lowercase().contains("expires: wed, 01 jan 2031 00:00:00 gmt"),
        "{headers}"
    );
    assert!(get_of(&server, "locked", BIG, "acl", &big_v).contains(ALL_USERS));
    assert!(get_of(&server, "locked", BIG, "retention", &big_v).contains("2030-01-01T00:00:00"));
    assert!(get_of(&server, "locked", BIG, "legal-hold", &big_v).contains("<Status>ON</Status>"));
    let owned_big = version_at(OWNED, BIG);
    assert!(!get_of(&server, "owned", BIG, "acl", &owned_big).contains(ALL_USERS));

    // Content headers on both; the storage class is the rule's override where it has one.
    for (bucket, v) in [("locked", &locked_v), ("owned", &owned_v)] {
        let h = head(&server, bucket, v);
        for want in [
            "content-type: text/x-report",
            "content-encoding: identity",
            "content-disposition: attachment; filename=\"report.txt\"",
            "content-language: fr-ca",
            "cache-control: max-age=600",
            "expires: wed, 01 jan 2031 00:00:00 gmt",
            "x-amz-meta-author: ada",
        ] {
            assert!(h.contains(want), "{bucket} lacks {want:?}: {h}");
        }
    }
    assert!(head(&server, "locked", &locked_v).contains("x-amz-storage-class: standard_ia"));
    assert!(!head(&server, "owned", &owned_v).contains("standard_ia"), "the source's class");

    // The source ACL, except where the destination account owns the replicas.
    assert!(get(&server, "locked", "acl", &locked_v).contains(ALL_USERS));
    assert!(!get(&server, "owned", "acl", &owned_v).contains(ALL_USERS));
    // Object Lock on both.
    for (bucket, v) in [("locked", &locked_v), ("owned", &owned_v)] {
        let retention = get(&server, bucket, "retention", v);
        assert!(retention.contains("<Mode>GOVERNANCE</Mode>"), "{bucket}: {retention}");
        assert!(retention.contains("2030-01-01T00:00:00"), "{bucket}: {retention}");
        let hold = get(&server, bucket, "legal-hold", v);
        assert!(hold.contains("<Status>ON</Status>"), "{bucket}: {hold}");
    }

    // The ACL goes private, the legal hold is lifted, the retention extended: each change
    // reaches the replica version (the ACL change only where the source ACL is replicated).
    let lifted = VersionRecord {
        operation: EventKind::MetadataUpdate,
        changes: MetadataChanges::ACL | MetadataChanges::LEGAL_HOLD | MetadataChanges::RETENTION,
        acl: Some(ObjectAcl::Canned(CannedAcl::Private)),
        lock: ObjectLock {
            retention: Some(Retention { mode: LockMode::Governance, retain_until_ms: Y2031_MS }),
            legal_hold: false,
        },
        ..put.clone()
    };
    // Then an ACL change alone: not replicated to the destination that owns its replicas.
    let reopened = VersionRecord {
        changes: MetadataChanges::ACL,
        acl: Some(ObjectAcl::Canned(CannedAcl::PublicReadWrite)),
        ..lifted.clone()
    };
    for r in [&lifted, &reopened] {
        writer.append("src", KEY, &r.to_bytes().unwrap()).unwrap();
    }
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    let done: Vec<OwnedStatusUpdate> =
        finished(&status).into_iter().filter(|u| u.key == KEY).collect();
    let targets: Vec<&str> = done.iter().map(|u| u.destination.as_str()).collect();
    // Per key in log order: the copies, the lock change at both, the ACL change at one.
    assert_eq!(done.len(), 5, "{done:?}");
    assert_eq!(targets.iter().filter(|d| **d == LOCKED).count(), 3, "{done:?}");
    assert_eq!(targets.iter().filter(|d| **d == OWNED).count(), 2, "{done:?}");
    assert!(done.iter().all(|u| u.status == ReplicationStatus::Completed), "{done:?}");
    for u in &done {
        let v = if u.destination == LOCKED { &locked_v } else { &owned_v };
        assert_eq!(u.destination_version_id.as_ref(), Some(v), "the same replica version");
    }
    for (bucket, v) in [("locked", &locked_v), ("owned", &owned_v)] {
        assert!(get(&server, bucket, "legal-hold", v).contains("<Status>OFF</Status>"));
        assert!(get(&server, bucket, "retention", v).contains("2031-01-01T00:00:00"));
    }
    let locked_acl = get(&server, "locked", "acl", &locked_v);
    assert!(locked_acl.contains(ALL_USERS) && locked_acl.contains("WRITE"), "{locked_acl}");
    assert!(!get(&server, "owned", "acl", &owned_v).contains(ALL_USERS));
    let _ = std::fs::remove_dir_all(&log_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_multipart_replica_refused_mid_upload_is_failed_and_aborted() {
    let server = SeaweedFs::start("props-abort", &[]).unwrap();
    server.create_locked_bucket("locked").unwrap();
    // Every upload of part 2 is refused (403 AccessDenied: permanent, not retried).
    let proxy = FaultProxy::start_with(
        server.port(),
        Arc::new(|line: &str, _| line.starts_with("PUT ") && line.contains("partNumber=2&")),
        403,
        "AccessDenied",
    )
    .unwrap();
    let log_dir = std::env::temp_dir().join(format!("s3repl-props-abort-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let big = Bytes::from(vec![b'x'; 11 << 20]);
    source.insert("src", BIG, "b1", big.clone());
    let record = VersionRecord {
        key: BIG.into(),
        version_id: "b1".into(),
        size: big.len() as u64,
        ..put_record(0)
    };
    writer.append("src", BIG, &record.to_bytes().unwrap()).unwrap();
    let mut reg = DestinationRegistry::new();
    reg.insert(destination(&proxy.endpoint(), LOCKED, "locked"));
    reg.insert(destination(&server.endpoint(), OWNED, "owned"));
    server.create_locked_bucket("owned").unwrap();
    let (mut engine, status) = start(&log_dir, Arc::new(source), reg);
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    let done = finished(&status);
    let at = |arn: &str| done.iter().find(|u| u.destination == arn).map(|u| u.status.clone());
    assert_eq!(
        s3repl_tests::reason(at(LOCKED)),
        Some(FailureReason::DstMultipartUploadNotPermitted),
        "{done:?}"
    );
    assert_eq!(at(OWNED), Some(ReplicationStatus::Completed), "{done:?}");
    // The upload was aborted: nothing is left on the target, no object either.
    let seen = proxy.seen();
    assert_eq!(
        seen.iter().filter(|(l, _)| l.starts_with("DELETE ") && l.contains("uploadId=")).count(),
        1,
        "{seen:?}"
    );
    let (code, uploads) = server.curl("GET", "/locked?uploads=", "").unwrap();
    assert_eq!(code, 200, "{uploads}");
    assert!(!uploads.contains("<Upload>"), "{uploads}");
    let (code, versions) = server.curl("GET", "/locked?versions=", "").unwrap();
    assert_eq!(code, 200, "{versions}");
    assert!(!versions.contains(BIG), "{versions}");
    let _ = std::fs::remove_dir_all(&log_dir);
}
