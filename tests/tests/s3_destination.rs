//! Destinations on a real S3-compatible server (`SeaweedFS` over HTTP on 127.0.0.1, `SigV4`
//! enforced): the destination conformance suite, a wrong secret refused, and the engine
//! replicating into a versioned bucket, recording the version ids the server minted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use s3repl::config::ReplicationConfiguration;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{Engine, MemorySource, MemoryStatus, ReplicationStatus};
use s3repl::record::VersionRecord;
use s3repl::rules::EventKind;
use s3repl_io::dest::{Destination, DestinationRegistry, S3Options, conformance};
use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY, SeaweedFs};

fn options(server: &SeaweedFs, bucket: &str, secret: &str) -> S3Options {
    options_at(&server.endpoint(), bucket, secret)
}

fn options_at(endpoint: &str, bucket: &str, secret: &str) -> S3Options {
    S3Options {
        endpoint: endpoint.to_owned(),
        bucket: bucket.into(),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: secret.into(),
        allow_http: true,
        virtual_hosted_style: false,
    }
}

/// An engine replicating bucket `src` (from `source`, under `config`) into the one S3
/// destination `arn` reached with `opts`; statuses go to the returned sink.
fn s3_engine(
    arn: &str,
    opts: &S3Options,
    config: ReplicationConfiguration,
    log: (&std::path::Path, u32),
    source: &MemorySource,
    limits: s3repl::pipeline::Limits,
) -> (s3repl::pipeline::EngineHandle, MemoryStatus) {
    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::s3(arn, opts).unwrap());
    let status = MemoryStatus::new();
    let engine = Engine::builder()
        .log(log.0, log.1)
        .bucket("src", config)
        .source(Arc::new(source.clone()))
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .limits(limits)
        .start()
        .unwrap();
    (engine, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_destinations_conform_and_the_engine_replicates_into_them() {
    let server = SeaweedFs::start("dest", &["conform", "replicas"]).unwrap();
    server.enable_versioning("replicas").unwrap();
    let conform =
        Destination::s3("arn:aws:s3:::conform", &options(&server, "conform", SECRET_KEY)).unwrap();
    conformance::put_get_delete(&conform).await.unwrap();
    conformance::multipart(&conform).await.unwrap();
    conformance::metadata_kept(&conform).await.unwrap();
    conformance::exact_keys(&conform).await.unwrap();

    // A wrong secret is refused by the server (SigV4 is enforced), as a permanent failure.
    let forged =
        Destination::s3("arn:aws:s3:::conform", &options(&server, "conform", "wrong")).unwrap();
    let e = forged
        .put("x", Bytes::from_static(b"x"), &s3repl_io::dest::ReplicaMeta::default())
        .await
        .unwrap_err();
    assert!(!e.is_retryable(), "{e}");

    // A metadata value HTTP cannot carry (a newline) is refused at once, single PUT or
    // multipart, instead of failing inside the HTTP client as a "transport" error retried
    // until FAILED; nothing reaches the bucket.
    let meta = s3repl_io::dest::ReplicaMeta {
        user_metadata: vec![("note".into(), "two\nlines".into())],
        ..s3repl_io::dest::ReplicaMeta::default()
    };
    let e = conform.put("bad-meta", Bytes::from_static(b"x"), &meta).await.unwrap_err();
    assert!(
        matches!(
            &e,
            s3repl_io::dest::DestinationError::Permanent {
                operation: s3repl_io::dest::Operation::Put,
                refusal: s3repl_io::dest::Refusal::NotPermitted,
                ..
            }
        ),
        "{e}"
    );
    let Err(e) = conform.start_multipart("bad-meta", &meta).await else {
        panic!("a multipart upload with unsendable metadata was started")
    };
    assert!(
        matches!(
            &e,
            s3repl_io::dest::DestinationError::Permanent {
                operation: s3repl_io::dest::Operation::MultipartInit,
                refusal: s3repl_io::dest::Refusal::NotPermitted,
                ..
            }
        ),
        "{e}"
    );
    let path = object_store::path::Path::from("bad-meta");
    assert!(matches!(conform.store().head(&path).await, Err(object_store::Error::NotFound { .. })));

    // The engine, end to end, into a versioned bucket.
    let log_dir = std::env::temp_dir().join(format!("s3repl-s3-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let key = format!("docs/{}/file-{i}.txt", i % 3);
        for v in 0..2 {
            let data = Bytes::from(format!("{key} v{v}").repeat(10 + i as usize));
            let version_id = format!("src-{i}-{v}");
            source.insert("src", &key, &version_id, data.clone());
            let rec = VersionRecord {
                bucket: "src".into(),
                key: key.clone(),
                version_id,
                size: data.len() as u64,
                blake3: Some(*blake3::hash(&data).as_bytes()),
                tags: vec![("team".into(), "storage".into())],
                ..VersionRecord::default()
            };
            writer.append("src", &key, &rec.to_bytes().unwrap()).unwrap();
            if v == 1 {
                expected.push((key.clone(), data));
            }
        }
    }
    // A console's folder marker: the replica keeps the trailing '/' (`object_store`'s `Path`
    // would have dropped it).
    let folder = VersionRecord {
        bucket: "src".into(),
        key: "docs/folder/".into(),
        version_id: "src-folder".into(),
        blake3: Some(*blake3::hash(b"").as_bytes()),
        ..VersionRecord::default()
    };
    source.insert("src", &folder.key, &folder.version_id, Bytes::new());
    writer.append("src", &folder.key, &folder.to_bytes().unwrap()).unwrap();
    // One key ends with a delete marker.
    let dm = VersionRecord {
        bucket: "src".into(),
        key: "docs/0/file-0.txt".into(),
        version_id: "src-dm".into(),
        operation: EventKind::DeleteMarker,
        ..VersionRecord::default()
    };
    writer.append("src", &dm.key, &dm.to_bytes().unwrap()).unwrap();
    let body = r#"{"Role":"arn:aws:iam::123456789012:role/r","Rules":[{"ID":"all","Priority":1,"Status":"Enabled","Filter":{"Prefix":"docs/"},
        "DeleteMarkerReplication":{"Status":"Enabled"},"Destination":{"Bucket":"arn:aws:s3:::replicas"}}]}"#;
    let replicas =
        Destination::s3("arn:aws:s3:::replicas", &options(&server, "replicas", SECRET_KEY))
            .unwrap();
    let mut reg = DestinationRegistry::new();
    reg.insert(replicas.clone());
    let status = MemoryStatus::new();
    let mut engine = Engine::builder()
        .log(&log_dir, 2)
        .bucket("src", ReplicationConfiguration::parse(body.as_bytes(), None).unwrap())
        .source(Arc::new(source))
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .start()
        .unwrap();
    assert!(
        engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await,
        "{:?}",
        engine.progress()
    );
    engine.shutdown().await.unwrap();
    let updates = status.updates();
    assert!(
        updates.iter().all(|u| !matches!(u.status, ReplicationStatus::Failed { .. })),
        "{updates:?}"
    );
    let completed: Vec<_> =
        updates.iter().filter(|u| u.status == ReplicationStatus::Completed).collect();
    assert_eq!(completed.len(), 42);
    let (code, xml) = server.curl("GET", "/replicas?versions=", "").unwrap();
    assert_eq!(code, 200, "{xml}");
    assert!(xml.contains("<Key>docs/folder/</Key>"), "{xml}");
    // The versioned server minted its own version ids; the engine reports them (SeaweedFS
    // keeps `…/` keys as directories, unversioned).
    assert!(
        completed
            .iter()
            .filter(|u| u.version_id != "src-dm" && u.version_id != "src-folder")
            .all(|u| u.destination_version_id.is_some()),
        "{completed:?}"
    );
    for (key, data) in expected {
        let path = object_store::path::Path::parse(&key).unwrap();
        let got = replicas.store().get(&path).await;
        if key == "docs/0/file-0.txt" {
            assert!(
                matches!(got, Err(object_store::Error::NotFound { .. })),
                "the delete marker hides {key}"
            );
            continue;
        }
        let got = got.unwrap();
        let meta = got
            .attributes
            .get(&object_store::Attribute::Metadata("s3repl-replication-status".into()))
            .map(|v| v.as_ref().to_owned());
        assert_eq!(meta.as_deref(), Some("REPLICA"));
        assert_eq!(got.bytes().await.unwrap(), data, "{key}");
    }
    let _ = std::fs::remove_dir_all(&log_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_source_is_read_by_version_id() {
    use s3repl::pipeline::{ObjectSource, ObjectStoreSource, SourceError};
    let server = SeaweedFs::start("source", &["origin"]).unwrap();
    server.enable_versioning("origin").unwrap();
    let opts = options(&server, "origin", SECRET_KEY);
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&opts.endpoint)
            .with_bucket_name(&opts.bucket)
            .with_region(&opts.region)
            .with_access_key_id(&opts.access_key_id)
            .with_secret_access_key(&opts.secret_access_key)
            .with_allow_http(true)
            .build()
            .unwrap(),
    );
    let path = object_store::path::Path::parse("dir/key.bin").unwrap();
    let first = store.put(&path, Bytes::from_static(b"version one").into()).await.unwrap();
    let second = store.put(&path, Bytes::from_static(b"version two!").into()).await.unwrap();
    let (v1, v2) = (first.version.unwrap(), second.version.unwrap());
    assert_ne!(v1, v2, "the server mints a version id per put");
    let source = ObjectStoreSource::new().bucket("origin", store);
    assert_eq!(source.get("origin", "dir/key.bin", &v1).await.unwrap(), &b"version one"[..]);
    assert_eq!(source.get("origin", "dir/key.bin", &v2).await.unwrap(), &b"version two!"[..]);
    assert_eq!(source.get_range("origin", "dir/key.bin", &v1, 8..11).await.unwrap(), &b"one"[..]);
    let mut buf = [0u8; 4];
    assert!(source.read_range_into("origin", "dir/key.bin", &v2, 8..12, &mut buf).await.unwrap());
    assert_eq!(&buf, b"two!");
    let missing = source.get("origin", "dir/other.bin", &v1).await;
    assert!(matches!(missing, Err(SourceError::VersionNotFound { .. })), "{missing:?}");

    // A key `object_store`'s paths cannot hold (an empty segment) is read with signed
    // requests, whole, as a range and into a buffer (SeaweedFS itself folds `//` into `/`).
    let odd = "odd//key.bin";
    let dest = Destination::s3("arn:aws:s3:::origin", &opts).unwrap();
    let meta = s3repl_io::dest::ReplicaMeta::default();
    let put = dest.put(odd, Bytes::from_static(b"an odd key"), &meta).await.unwrap();
    let v = put.version_id.unwrap();
    let source = ObjectStoreSource::new().s3_bucket("origin", &opts).unwrap();
    assert_eq!(source.get("origin", odd, &v).await.unwrap(), &b"an odd key"[..]);
    assert_eq!(source.get_range("origin", odd, &v, 3..6).await.unwrap(), &b"odd"[..]);
    let mut buf = [0u8; 3];
    assert!(source.read_range_into("origin", odd, &v, 7..10, &mut buf).await.unwrap());
    assert_eq!(&buf, b"key");
    let mut long = [0u8; 5];
    let short = source.read_range_into("origin", odd, &v, 7..12, &mut long).await;
    assert!(matches!(short, Err(SourceError::Transient(_))), "{short:?}");
    let missing = source.get("origin", "odd//other.bin", &v).await;
    assert!(matches!(missing, Err(SourceError::VersionNotFound { .. })), "{missing:?}");
}

/// Counts the versions (not delete markers) of each key in a `ListObjectVersions` answer.
fn version_counts(xml: &str) -> std::collections::BTreeMap<String, usize> {
    entry_counts(xml, "<Version>")
}

/// Counts the entries opened by `tag` (`<Version>`, `<DeleteMarker>`) per key.
fn entry_counts(xml: &str, tag: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for part in xml.split(tag).skip(1) {
        let key = part.split("<Key>").nth(1).and_then(|k| k.split("</Key>").next()).unwrap();
        *counts.entry(key.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// A fresh log (removed when dropped) and an empty source, for tests that write their own
/// versions and replicate them into one S3 destination.
struct Fixture {
    log_dir: std::path::PathBuf,
    partitions: u32,
    writer: LogWriter,
    source: MemorySource,
}

impl Fixture {
    fn new(name: &str, partitions: u32) -> Self {
        let log_dir = std::env::temp_dir().join(format!("s3repl-s3-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&log_dir);
        let writer =
            LogWriter::open(&log_dir, LogConfig { partitions, ..LogConfig::default() }).unwrap();
        Fixture { log_dir, partitions, writer, source: MemorySource::new() }
    }

    /// Version `version` of `key` with bytes `data`: in the source, and its record in the log.
    fn version(&self, key: &str, version: &str, data: Bytes) {
        let rec = VersionRecord {
            bucket: "src".into(),
            key: key.into(),
            version_id: version.into(),
            size: data.len() as u64,
            blake3: Some(*blake3::hash(&data).as_bytes()),
            ..VersionRecord::default()
        };
        self.source.insert("src", key, version, data);
        self.writer.append("src", key, &rec.to_bytes().unwrap()).unwrap();
    }

    /// A delete marker `version` of `key`, in the log.
    fn marker(&self, key: &str, version: &str) {
        let rec = VersionRecord {
            bucket: "src".into(),
            key: key.into(),
            version_id: version.into(),
            operation: EventKind::DeleteMarker,
            ..VersionRecord::default()
        };
        self.writer.append("src", key, &rec.to_bytes().unwrap()).unwrap();
    }

    /// An engine replicating bucket `src` into bucket `bucket` at `endpoint` (ARN
    /// `arn:aws:s3:::{bucket}`; delete markers too if `markers`).
    fn engine(
        &self,
        endpoint: &str,
        bucket: &str,
        markers: bool,
        limits: s3repl::pipeline::Limits,
    ) -> (s3repl::pipeline::EngineHandle, MemoryStatus) {
        let arn = format!("arn:aws:s3:::{bucket}");
        let opts = options_at(endpoint, bucket, SECRET_KEY);
        let config = s3repl_tests::catch_all(&arn, markers);
        s3_engine(&arn, &opts, config, (&self.log_dir, self.partitions), &self.source, limits)
    }

    /// Runs [`Fixture::engine`] through the whole log, then stops it; the statuses reported.
    async fn replicate(
        &self,
        endpoint: &str,
        bucket: &str,
        markers: bool,
        limits: s3repl::pipeline::Limits,
    ) -> Vec<s3repl::pipeline::OwnedStatusUpdate> {
        let (mut engine, status) = self.engine(endpoint, bucket, markers, limits);
        assert!(engine.wait_for(&self.writer.next_seqs(), Duration::from_mins(1)).await);
        engine.shutdown().await.unwrap();
        status.updates()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// How many of `updates` are COMPLETED.
fn completed(updates: &[s3repl::pipeline::OwnedStatusUpdate]) -> usize {
    updates.iter().filter(|u| u.status == ReplicationStatus::Completed).count()
}

const CRASH_KEYS: u32 = 24;
const CRASH_VERSIONS: u32 = 4;
/// Set in the child process that replicates half of the log and then crashes.
const CRASH_CHILD: &str = "S3REPL_TEST_CRASH_CHILD";

/// Delete markers the crash test writes for key `k`: one after version 1 for even keys (later
/// versions land on top of it), one after the last version for keys divisible by three.
fn crash_markers(k: u32) -> usize {
    usize::from(k.is_multiple_of(2)) + usize::from(k.is_multiple_of(3))
}

/// The source objects of the crash test (the same in the parent and the crashing child), and
/// the log records in order.
fn crash_source() -> (MemorySource, Vec<VersionRecord>) {
    let source = MemorySource::new();
    let mut records = Vec::new();
    let marker = |k: u32, n: u32| VersionRecord {
        bucket: "src".into(),
        key: format!("k/{k}"),
        version_id: format!("dm{n}-k{k}"),
        operation: EventKind::DeleteMarker,
        ..VersionRecord::default()
    };
    for v in 0..CRASH_VERSIONS {
        if v == 2 {
            records.extend((0..CRASH_KEYS).filter(|k| k.is_multiple_of(2)).map(|k| marker(k, 1)));
        }
        for k in 0..CRASH_KEYS {
            let key = format!("k/{k}");
            let data = Bytes::from(format!("{key} version {v}").repeat(50));
            let version_id = format!("v{v}-k{k}");
            source.insert("src", &key, &version_id, data.clone());
            records.push(VersionRecord {
                bucket: "src".into(),
                key: key.clone(),
                version_id,
                size: data.len() as u64,
                blake3: Some(*blake3::hash(&data).as_bytes()),
                ..VersionRecord::default()
            });
        }
    }
    records.extend((0..CRASH_KEYS).filter(|k| k.is_multiple_of(3)).map(|k| marker(k, 2)));
    (source, records)
}

fn crash_engine(
    endpoint: &str,
    log_dir: &std::path::Path,
    source: &MemorySource,
    limits: s3repl::pipeline::Limits,
) -> (s3repl::pipeline::EngineHandle, MemoryStatus) {
    let arn = "arn:aws:s3:::crashdst";
    let config = s3repl_tests::catch_all(arn, true);
    s3_engine(
        arn,
        &options_at(endpoint, "crashdst", SECRET_KEY),
        config,
        (log_dir, 2),
        source,
        limits,
    )
}

#[test]
fn a_crash_mid_stream_loses_nothing_and_duplicates_no_version() {
    const KEYS: u32 = CRASH_KEYS;
    const VERSIONS: u32 = CRASH_VERSIONS;
    let (source, records) = crash_source();
    if let Ok(args) = std::env::var(CRASH_CHILD) {
        // The child: no checkpoint is saved (10 min interval), and once about half of the
        // versions are replicated the process aborts — no destructor, no final checkpoint, no
        // version-map commit, and the kernel drops its file locks, as in a real crash.
        let (endpoint, log_dir) = args.split_once('|').unwrap();
        let slow_checkpoints = s3repl::pipeline::Limits {
            checkpoint_every: Duration::from_mins(10),
            workers: 4,
            ..s3repl::pipeline::Limits::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let log_dir = std::path::Path::new(log_dir);
            let (_engine, status) = crash_engine(endpoint, log_dir, &source, slow_checkpoints);
            loop {
                let done = status
                    .updates()
                    .iter()
                    .filter(|u| u.status == ReplicationStatus::Completed)
                    .count();
                if done >= records.len() / 2 {
                    println!("CRASH-CHILD completed {done}");
                    std::process::abort();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        return;
    }
    let server = SeaweedFs::start("crash", &["crashdst"]).unwrap();
    server.enable_versioning("crashdst").unwrap();
    let log_dir = std::env::temp_dir().join(format!("s3repl-s3-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 2, ..LogConfig::default() }).unwrap();
    for rec in &records {
        writer.append("src", &rec.key, &rec.to_bytes().unwrap()).unwrap();
    }
    // Run 1, in a child process of this test binary that crashes halfway.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_crash_mid_stream_loses_nothing_and_duplicates_no_version"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD, format!("{}|{}", server.endpoint(), log_dir.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(!child.status.success(), "the child must crash: {stdout}");
    let completed_before: usize = stdout
        .lines()
        .find_map(|l| l.split("CRASH-CHILD completed ").nth(1))
        .unwrap_or_else(|| panic!("the child did not reach its crash point: {stdout}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        completed_before < (KEYS * VERSIONS) as usize,
        "the crash came too late to test anything"
    );
    // Run 2 replays from the checkpoint (the start of the log): everything below the saved
    // replay horizon is checked at the destination before being copied.
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let after = rt.block_on(async {
        let limits = s3repl::pipeline::Limits::default();
        let (mut engine, status) = crash_engine(&server.endpoint(), &log_dir, &source, limits);
        assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
        engine.shutdown().await.unwrap();
        status.updates()
    });
    assert!(
        after.iter().all(|u| !matches!(u.status, ReplicationStatus::Failed { .. })),
        "{after:?}"
    );
    let (code, xml) = server.curl("GET", "/crashdst?versions=", "").unwrap();
    assert_eq!(code, 200, "{xml}");
    let counts = version_counts(&xml);
    assert_eq!(counts.len(), KEYS as usize, "{counts:?}");
    for (key, n) in &counts {
        assert_eq!(*n, VERSIONS as usize, "{key} has {n} versions: lost or duplicated; {counts:?}");
    }
    // Delete markers are neither lost nor placed twice.
    let markers = entry_counts(&xml, "<DeleteMarker>");
    for k in 0..KEYS {
        let n = markers.get(&format!("k/{k}")).copied().unwrap_or(0);
        assert_eq!(n, crash_markers(k), "k/{k} has {n} delete markers; {markers:?}");
    }
    // And the current replica of every key is its last version (or its final marker).
    rt.block_on(async {
        let dest =
            Destination::s3("arn:aws:s3:::crashdst", &options(&server, "crashdst", SECRET_KEY))
                .unwrap();
        for k in 0..KEYS {
            let path = object_store::path::Path::parse(format!("k/{k}")).unwrap();
            let got = dest.store().get(&path).await;
            if k.is_multiple_of(3) {
                assert!(matches!(got, Err(object_store::Error::NotFound { .. })), "k/{k}");
                continue;
            }
            let got = got.unwrap().bytes().await.unwrap();
            assert!(got.starts_with(format!("k/{k} version {}", VERSIONS - 1).as_bytes()));
        }
    });
    let _ = std::fs::remove_dir_all(&log_dir);
}

/// A write the server applied but answered as failed (a 500 after the commit, as when an answer
/// is lost) is not written again: the retry asks the destination first and finds the replica.
/// Without that, a versioned destination keeps two replicas of one version (or two markers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_but_answered_as_failed_is_not_written_twice() {
    const KEYS: u32 = 6;
    let server = SeaweedFs::start("once", &["oncedst"]).unwrap();
    server.enable_versioning("oncedst").unwrap();
    // Each key's first object write and first delete reach the server, which applies them;
    // the client is answered 500 InternalError (transient: it retries).
    let proxy = s3repl_tests::fault_proxy::FaultProxy::start_after_forwarding(
        server.port(),
        Arc::new(|line: &str, before| {
            let write = line.starts_with("PUT /oncedst/") && !line.contains('?');
            (write || line.starts_with("DELETE /oncedst/")) && before == 0
        }),
        500,
        "InternalError",
    )
    .unwrap();
    let f = Fixture::new("once", 2);
    for v in 1..=2 {
        for k in 0..KEYS {
            let key = format!("o/{k}");
            f.version(&key, &format!("v{v}"), Bytes::from(format!("{key} version {v}")));
        }
    }
    for k in (0..KEYS).filter(|k| k.is_multiple_of(2)) {
        f.marker(&format!("o/{k}"), "dm");
    }
    let limits = s3repl::pipeline::Limits::default();
    let updates = f.replicate(&proxy.endpoint(), "oncedst", true, limits).await;
    assert_eq!(completed(&updates), (2 * KEYS + KEYS.div_ceil(2)) as usize, "{updates:?}");
    assert!(updates.iter().all(|u| !matches!(u.status, ReplicationStatus::Failed { .. })));
    // The failures were injected: every key's first write, every marker's first delete.
    let injected = proxy.seen().iter().filter(|(_, failed)| *failed).count();
    assert_eq!(injected, (KEYS + KEYS.div_ceil(2)) as usize, "{:?}", proxy.seen());
    let (code, xml) = server.curl("GET", "/oncedst?versions=", "").unwrap();
    assert_eq!(code, 200, "{xml}");
    let versions = version_counts(&xml);
    let markers = entry_counts(&xml, "<DeleteMarker>");
    for k in 0..KEYS {
        let key = format!("o/{k}");
        assert_eq!(versions.get(&key), Some(&2), "{key}: {versions:?}");
        let expected = usize::from(k.is_multiple_of(2));
        assert_eq!(markers.get(&key).copied().unwrap_or(0), expected, "{key}: {markers:?}");
    }
}

/// Where the destination refuses to be read (403 on HEAD: a role allowed to write replicas,
/// not to read them), the check before a retry cannot tell, and the write is applied again, as
/// a plain retry would: the version is COMPLETED, not FAILED over a refused check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_check_is_refused_writes_again_instead_of_failing() {
    use s3repl_tests::fault_proxy::{Fault, FaultProxy};
    const KEYS: u32 = 3;
    let server = SeaweedFs::start("noread", &["noread"]).unwrap();
    server.enable_versioning("noread").unwrap();
    let proxy = FaultProxy::start_picking(
        server.port(),
        Arc::new(|line: &str, before| {
            if line.starts_with("HEAD /noread/") {
                return Some(Fault { status: 403, code: "AccessDenied", forwarded: false });
            }
            let first_write =
                line.starts_with("PUT /noread/") && !line.contains('?') && before == 0;
            first_write.then_some(Fault { status: 500, code: "InternalError", forwarded: true })
        }),
    )
    .unwrap();
    let f = Fixture::new("noread", 1);
    for k in 0..KEYS {
        let key = format!("n/{k}");
        f.version(&key, "v1", Bytes::from(format!("{key} v1")));
    }
    let limits = s3repl::pipeline::Limits::default();
    let updates = f.replicate(&proxy.endpoint(), "noread", false, limits).await;
    assert_eq!(completed(&updates), KEYS as usize, "{updates:?}");
    // Every write after a key's first was preceded by one (refused) check. Usually that is
    // one retry per key; a loaded server may fail a retry too, which adds a check and a write.
    let seen = proxy.seen();
    let count = |what: &str| seen.iter().filter(|(l, _)| l.starts_with(what)).count();
    let (code, xml) = server.curl("GET", "/noread?versions=", "").unwrap();
    assert_eq!(code, 200, "{xml}");
    let versions = version_counts(&xml);
    assert_eq!(versions.len(), KEYS as usize, "{xml}");
    for k in 0..KEYS {
        let key = format!("n/{k}");
        let puts = count(&format!("PUT /noread/{key} "));
        let heads = count(&format!("HEAD /noread/{key} "));
        assert!(puts >= 2 && heads == puts - 1, "{key}: a check before each retry: {seen:?}");
        // Applied again: the check could not tell that the first write had landed.
        let n = versions.get(&key).copied().unwrap_or(0);
        assert!((2..=puts).contains(&n), "{key}: {n} versions from {puts} writes: {xml}");
    }
    assert!(seen.iter().filter(|(l, _)| l.starts_with("HEAD ")).all(|(_, f)| *f), "{seen:?}");
}

/// A multipart upload whose completion the server carried out but answered as failed: the
/// client's repeat finds the upload gone (404 `NoSuchUpload`), which says nothing about the
/// bucket (it was there to start the upload). The engine checks the destination and finds the replica: COMPLETED, one version
/// (not FAILED `DstBucketNotFound`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_upload_answered_as_failed_is_found_not_failed() {
    let server = SeaweedFs::start("mpdone", &["mpdone"]).unwrap();
    server.enable_versioning("mpdone").unwrap();
    // The completion reaches the server and is answered 500; its repeat is answered as a
    // server that forgets completed uploads would (SeaweedFS answers it 200 itself).
    let proxy = s3repl_tests::fault_proxy::FaultProxy::start_picking(
        server.port(),
        Arc::new(|line: &str, before| {
            use s3repl_tests::fault_proxy::Fault;
            if !(line.starts_with("POST /mpdone/") && line.contains("uploadId=")) {
                return None;
            }
            Some(match before {
                0 => Fault { status: 500, code: "InternalError", forwarded: true },
                _ => Fault { status: 404, code: "NoSuchUpload", forwarded: false },
            })
        }),
    )
    .unwrap();
    let f = Fixture::new("mpdone", 1);
    let data: Bytes =
        (0..(12u32 << 20) / 8).flat_map(|i| format!("{i:07}\n").into_bytes()).collect();
    f.version("big.bin", "v1", data.clone());
    let limits = s3repl::pipeline::Limits {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        ..s3repl::pipeline::Limits::default()
    };
    let updates = f.replicate(&proxy.endpoint(), "mpdone", false, limits).await;
    let last = updates.iter().rev().find(|u| u.status != ReplicationStatus::Pending);
    assert_eq!(last.map(|u| &u.status), Some(&ReplicationStatus::Completed), "{updates:?}");
    let seen = proxy.seen();
    assert!(seen.iter().any(|(l, failed)| l.contains("uploadId=") && *failed), "{seen:?}");
    let (code, xml) = server.curl("GET", "/mpdone?versions=", "").unwrap();
    assert_eq!(code, 200, "{xml}");
    assert_eq!(version_counts(&xml).get("big.bin"), Some(&1), "{xml}");
    let dest =
        Destination::s3("arn:aws:s3:::mpdone", &options(&server, "mpdone", SECRET_KEY)).unwrap();
    let path = object_store::path::Path::parse("big.bin").unwrap();
    let got = dest.store().get(&path).await.unwrap().bytes().await.unwrap();
    assert!(got == data, "the replica's bytes differ");
}

#[test]
fn failed_operations_are_kept_across_restarts_and_retried_once_fixed() {
    let server = SeaweedFs::start("retry", &["later"]).unwrap();
    // Writes are refused (403 AccessDenied, not retried by the client) until "fixed".
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = broken.clone();
    let proxy = s3repl_tests::fault_proxy::FaultProxy::start_with(
        server.port(),
        Arc::new(move |line: &str, _| {
            line.starts_with("PUT ") && flag.load(std::sync::atomic::Ordering::SeqCst)
        }),
        403,
        "AccessDenied",
    )
    .unwrap();
    let f = Fixture::new("retry", 1);
    for i in 0..3 {
        f.version(&format!("later/{i}"), "v1", Bytes::from(format!("object {i}")));
    }
    let limits = s3repl::pipeline::Limits {
        max_attempts: 2,
        retry: s3repl::pipeline::RetryPolicy {
            first: Duration::from_millis(500),
            max: Duration::from_secs(1),
            max_rounds: 1000,
        },
        ..s3repl::pipeline::Limits::default()
    };
    let start = || f.engine(&proxy.endpoint(), "later", false, limits);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut engine, status) = start();
        // The log position passes the failures (they are FAILED, and journaled).
        assert!(engine.wait_for(&f.writer.next_seqs(), Duration::from_mins(1)).await);
        let failed: Vec<_> = status
            .updates()
            .into_iter()
            .filter_map(|u| match u.status {
                ReplicationStatus::Failed { reason, detail } => Some((reason, detail)),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 3, "{failed:?}");
        assert!(
            failed
                .iter()
                .all(|(r, _)| *r == s3repl::pipeline::FailureReason::DstPutObjectNotPermitted),
            "{failed:?}"
        );
        assert_eq!(engine.control().failed_operations().len(), 3);
        engine.shutdown().await.unwrap();
    });
    // Restart: the queue is still there; fix the cause; the retries complete.
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    rt.block_on(async {
        let (engine, status) = start();
        let control = engine.control();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !control.failed_operations().is_empty() {
            assert!(std::time::Instant::now() < deadline, "{:?}", control.failed_operations());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(completed(&status.updates()), 3);
        engine.shutdown().await.unwrap();
        let dest =
            Destination::s3("arn:aws:s3:::later", &options(&server, "later", SECRET_KEY)).unwrap();
        for i in 0..3 {
            let path = object_store::path::Path::parse(format!("later/{i}")).unwrap();
            let got = dest.store().get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(got, format!("object {i}").as_bytes());
        }
    });
}

/// The tags of one replica version (the server's `GetObjectTagging` answer).
fn replica_tags(server: &SeaweedFs, key: &str, version: &str) -> String {
    let (code, xml) =
        server.curl("GET", &format!("/tagged/{key}?tagging=&versionId={version}"), "").unwrap();
    assert_eq!(code, 200, "{xml}");
    xml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_changes_reach_the_replica_version() {
    let server = SeaweedFs::start("tagging", &["tagged"]).unwrap();
    server.enable_versioning("tagged").unwrap();
    let log_dir = std::env::temp_dir().join(format!("s3repl-s3-tags-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    let source = MemorySource::new();
    let data = Bytes::from_static(b"tagged object");
    source.insert("src", "docs/t.txt", "v1", data.clone());
    source.insert("src", "docs/t.txt", "v2", Bytes::from_static(b"second version"));
    let put = VersionRecord {
        bucket: "src".into(),
        key: "docs/t.txt".into(),
        version_id: "v1".into(),
        size: data.len() as u64,
        tags: vec![("class".into(), "draft".into())],
        ..VersionRecord::default()
    };
    // A newer version lands above v1 at the destination...
    let put2 = VersionRecord {
        version_id: "v2".into(),
        size: 14,
        tags: vec![("class".into(), "newest".into())],
        ..put.clone()
    };
    // ...then v1's tags change: a metadata-only event for the older, no longer current,
    // version. The destination minted its own version ids, so only the version map can find
    // v1's replica.
    let retag = VersionRecord {
        operation: EventKind::MetadataUpdate,
        tags: vec![
            ("class".into(), "final".into()),
            ("owner".into(), "team a+b/x@y.z:1=2_3-4".into()),
        ],
        ..put.clone()
    };
    for r in [&put, &put2, &retag] {
        writer.append("src", &r.key, &r.to_bytes().unwrap()).unwrap();
    }
    let start = || {
        let arn = "arn:aws:s3:::tagged";
        let opts = options(&server, "tagged", SECRET_KEY);
        let config = s3repl_tests::catch_all(arn, false);
        s3_engine(arn, &opts, config, (&log_dir, 1), &source, s3repl::pipeline::Limits::default())
    };
    let (mut engine, status) = start();
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    let mapped = engine
        .control()
        .replica_version("arn:aws:s3:::tagged", "src", "docs/t.txt", "v1")
        .await
        .unwrap();
    engine.shutdown().await.unwrap();
    let done: Vec<_> =
        status.updates().into_iter().filter(|u| u.status != ReplicationStatus::Pending).collect();
    assert_eq!(done.len(), 3, "{done:?}");
    assert!(done.iter().all(|u| u.status == ReplicationStatus::Completed), "{done:?}");
    // One key's operations complete in log order: v1's copy, v2's copy, v1's tag change.
    let versions: Vec<_> = done.iter().map(|u| u.version_id.as_str()).collect();
    assert_eq!(versions, ["v1", "v2", "v1"]);
    let v1 = done[0].destination_version_id.clone().unwrap();
    let v2 = done[1].destination_version_id.clone().unwrap();
    assert_ne!(v1, v2, "SeaweedFS mints a version id per replica");
    // The copy and the tag change name the same destination version, and the map has it.
    assert_eq!(done[0].destination_version_id, done[2].destination_version_id, "{done:?}");
    assert_eq!(mapped.as_deref(), Some(v1.as_str()));
    let xml = replica_tags(&server, "docs/t.txt", &v1);
    assert!(xml.contains("<Key>class</Key><Value>final</Value>"), "{xml}");
    assert!(xml.contains("<Value>team a+b/x@y.z:1=2_3-4</Value>"), "{xml}");
    assert!(!xml.contains("draft"), "{xml}");
    assert!(replica_tags(&server, "docs/t.txt", &v2).contains("<Value>newest</Value>"));

    // After a restart the map still knows v1's replica (it was committed before the
    // checkpoint): another tag change reaches it.
    let retag2 = VersionRecord { tags: vec![("class".into(), "archived".into())], ..retag };
    writer.append("src", &retag2.key, &retag2.to_bytes().unwrap()).unwrap();
    let (mut engine, status) = start();
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    let done: Vec<_> =
        status.updates().into_iter().filter(|u| u.status != ReplicationStatus::Pending).collect();
    assert_eq!(done.len(), 1, "only the new record is processed: {done:?}");
    assert_eq!(done[0].status, ReplicationStatus::Completed, "{done:?}");
    assert_eq!(done[0].destination_version_id.as_deref(), Some(v1.as_str()));
    assert!(replica_tags(&server, "docs/t.txt", &v1).contains("<Value>archived</Value>"));
    assert!(replica_tags(&server, "docs/t.txt", &v2).contains("<Value>newest</Value>"));

    // Without the version map (another process's, once a Kafka partition moved; or lost), v1's
    // replica is found among the key's versions by its source-version stamp.
    std::fs::remove_dir_all(log_dir.join("versions")).unwrap();
    let retag3 = VersionRecord { tags: vec![("class".into(), "found".into())], ..retag2 };
    writer.append("src", &retag3.key, &retag3.to_bytes().unwrap()).unwrap();
    let (mut engine, status) = start();
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(1)).await);
    engine.shutdown().await.unwrap();
    let done: Vec<_> =
        status.updates().into_iter().filter(|u| u.status != ReplicationStatus::Pending).collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].status, ReplicationStatus::Completed, "{done:?}");
    assert_eq!(done[0].destination_version_id.as_deref(), Some(v1.as_str()));
    assert!(replica_tags(&server, "docs/t.txt", &v1).contains("<Value>found</Value>"));
    assert!(replica_tags(&server, "docs/t.txt", &v2).contains("<Value>newest</Value>"));
    let _ = std::fs::remove_dir_all(&log_dir);
}
