//! Frozen-format fixtures: log records written by the version-1 encoder (before the extension
//! section existed) must keep decoding to the same versions, and re-encode to the current
//! version without losing anything.

use s3repl::config::StorageClass;
use s3repl::record::{ContentHeaders, ObjectLock, RECORD_VERSION, SseInfo, VersionRecord};
use s3repl::rules::{EventKind, MetadataChanges, Origin, SseKind};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expected_put() -> VersionRecord {
    VersionRecord {
        bucket: "src-bucket".into(),
        key: "photos/2026/cat.jpg".into(),
        version_id: "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY".into(),
        operation: EventKind::Put,
        origin: Origin::User,
        size: 4096,
        etag: "\"9b2cf535f27731c974343645a3985328\"".into(),
        blake3: Some([7u8; 32]),
        commit_time_ms: 1_764_547_200_123,
        storage_class: StorageClass::StandardIa,
        tags: vec![("class".into(), "audit".into())],
        user_metadata: vec![("camera".into(), "x100".into())],
        sse: SseInfo {
            kind: SseKind::SseKms,
            kms_key_id: Some("alias/src".into()),
            wrapped_dek: Some(vec![1, 2, 3, 4]),
        },
        is_replica: false,
        existing: true,
        content: ContentHeaders::default(),
        acl: None,
        lock: ObjectLock::default(),
        changes: MetadataChanges::TAGS,
    }
}

#[test]
fn version_1_records_decode_unchanged() {
    let put = fixture("record-v1-put.bin");
    assert_eq!(put.first(), Some(&1), "the fixture is a version-1 record");
    assert_eq!(VersionRecord::decode(&put), Ok(expected_put()));

    // A v1 metadata update meant a tag change: that is what it decodes to.
    let update = VersionRecord::decode(&fixture("record-v1-metadata-update.bin")).unwrap();
    assert_eq!(update.operation, EventKind::MetadataUpdate);
    assert_eq!(update.changes, MetadataChanges::TAGS);
    assert_eq!(update.tags, vec![("class".to_owned(), "archived".to_owned())]);
}

#[test]
fn version_1_records_re_encode_as_the_current_version_losslessly() {
    let decoded = VersionRecord::decode(&fixture("record-v1-put.bin")).unwrap();
    let again = decoded.to_bytes().unwrap();
    assert_eq!(again.first(), Some(&RECORD_VERSION));
    assert_eq!(VersionRecord::decode(&again), Ok(decoded));
}
