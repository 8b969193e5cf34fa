//! Azure Blob destinations on a real emulator over HTTP on 127.0.0.1 (Azurite): the destination
//! conformance suite, and the engine replicating into Azure beside an in-memory destination,
//! bytes and metadata (names spelled as Azure allows) read back. (GCS: see `Destination::gcs`
//! for why no emulator here can serve `object_store`'s client.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{Engine, MemorySource, MemoryStatus, ReplicationStatus};
use s3repl::record::{ContentHeaders, ObjectLock, VersionRecord};
use s3repl_io::dest::{
    AzureOptions, Destination, DestinationError, DestinationRegistry, ReplicaMeta, conformance,
};
use s3repl_tests::emulators::{self, AZURITE_ACCOUNT, AZURITE_KEY, Emulator};

const AZURE_ARN: &str = "arn:aws:s3:::azure-replicas";
const MEMORY_ARN: &str = "arn:aws:s3:::memory-replicas";

fn azure(server: &Emulator, container: &str) -> Destination {
    let opts = AzureOptions {
        account: AZURITE_ACCOUNT.into(),
        container: container.into(),
        access_key: AZURITE_KEY.into(),
        endpoint: Some(server.azure_endpoint()),
        allow_http: true,
    };
    Destination::azure(AZURE_ARN, &opts).unwrap()
}

async fn conforms(d: &Destination) {
    conformance::put_get_delete(d).await.unwrap();
    conformance::multipart(d).await.unwrap();
    conformance::metadata_kept(d).await.unwrap();
    conformance::exact_keys(d).await.unwrap();
    // Neither store can lock objects: a locked replica is refused before anything is written.
    let locked = ReplicaMeta {
        lock: ObjectLock { legal_hold: true, ..ObjectLock::default() },
        ..ReplicaMeta::default()
    };
    match d.put("locked", Bytes::from_static(b"x"), &locked).await {
        Err(DestinationError::Permanent { refusal, .. }) => {
            assert_eq!(refusal, s3repl_io::dest::Refusal::NoObjectLock);
        }
        other => panic!("a locked replica was not refused: {other:?}"),
    }
    let path = object_store::path::Path::parse("locked").unwrap();
    assert!(d.store().head(&path).await.is_err(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_destinations_conform() {
    let server = emulators::azurite("azurite-conform", &["conform"]).unwrap();
    conforms(&azure(&server, "conform")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_replicates_into_azure() {
    let azurite = emulators::azurite("azurite-e2e", &["replicas"]).unwrap();
    let log_dir = std::env::temp_dir().join(format!("s3repl-cloud-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let mut expected = Vec::new();
    for i in 0..12u32 {
        let key = format!("reports/{}/r-{i}.csv", i % 3);
        let data = Bytes::from(format!("{key},{i}\n").repeat(20 + i as usize));
        let rec = VersionRecord {
            bucket: "src".into(),
            key: key.clone(),
            version_id: format!("v{i}"),
            size: data.len() as u64,
            blake3: Some(*blake3::hash(&data).as_bytes()),
            user_metadata: vec![("team".into(), format!("t{}", i % 2))],
            content: ContentHeaders {
                content_type: Some("text/csv".into()),
                ..ContentHeaders::default()
            },
            ..VersionRecord::default()
        };
        source.insert("src", &key, &rec.version_id, data.clone());
        writer.append("src", &key, &rec.to_bytes().unwrap()).unwrap();
        expected.push((key, data, i % 2));
    }
    let body = format!(
        r#"{{"Role":"arn:aws:iam::111122223333:role/replication","Rules":[
            {{"ID":"to-azure","Priority":2,"Status":"Enabled","Filter":{{}},
              "DeleteMarkerReplication":{{"Status":"Disabled"}},"Destination":{{"Bucket":"{AZURE_ARN}"}}}},
            {{"ID":"to-memory","Priority":1,"Status":"Enabled","Filter":{{}},
              "DeleteMarkerReplication":{{"Status":"Disabled"}},"Destination":{{"Bucket":"{MEMORY_ARN}","StorageClass":"STANDARD_IA"}}}}]}}"#
    );
    let config = s3repl::config::ReplicationConfiguration::parse(body.as_bytes(), None).unwrap();
    let mut reg = DestinationRegistry::new();
    let (to_azure, to_memory) = (azure(&azurite, "replicas"), Destination::in_memory(MEMORY_ARN));
    reg.insert(to_azure.clone());
    reg.insert(to_memory.clone());
    let status = MemoryStatus::new();
    let mut engine = Engine::builder()
        .log(&log_dir, 2)
        .bucket("src", config)
        .source(Arc::new(source))
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .start()
        .unwrap();
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    let done: Vec<_> =
        status.updates().into_iter().filter(|u| u.status != ReplicationStatus::Pending).collect();
    assert_eq!(done.len(), 24, "{done:?}");
    assert!(done.iter().all(|u| u.status == ReplicationStatus::Completed), "{done:?}");
    for d in [&to_azure, &to_memory] {
        for (key, data, team) in &expected {
            let path = object_store::path::Path::parse(key).unwrap();
            let got = d.store().get(&path).await.unwrap();
            let attrs = got.attributes.clone();
            assert_eq!(&got.bytes().await.unwrap(), data, "{} {key}", d.arn());
            let meta = |name: &str| d.metadata(&attrs, name);
            assert_eq!(meta("team"), Some(format!("t{team}")), "{} {key}", d.arn());
            assert_eq!(meta("s3repl-replication-status").as_deref(), Some("REPLICA"));
            let content_type =
                attrs.get(&object_store::Attribute::ContentType).map(|v| v.as_ref().to_owned());
            assert_eq!(content_type.as_deref(), Some("text/csv"), "{} {key}", d.arn());
            // The S3 storage class reaches stores that have S3 classes only.
            let class =
                attrs.get(&object_store::Attribute::StorageClass).map(|v| v.as_ref().to_owned());
            let want = (d.arn() == MEMORY_ARN).then(|| "STANDARD_IA".to_owned());
            assert_eq!(class, want, "{} {key}", d.arn());
        }
    }
    let _ = std::fs::remove_dir_all(&log_dir);
}
