//! A 1 GiB object replicated as a multipart upload into a real S3 server (`SeaweedFS`) through a
//! fault-injecting proxy that fails one part upload: the part is retried alone, the upload is
//! created once and completed, the replica's BLAKE3 matches, and the process's peak RSS stays
//! within the byte budget plus 64 MiB (plus this test binary's own baseline).
//!
//! Its own test binary, so no other test's memory shows up in the peak RSS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use object_store::ObjectStoreExt;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{
    BoxFuture, Engine, Limits, MemoryStatus, ObjectSource, ReplicationStatus, SourceError,
};
use s3repl::record::VersionRecord;
use s3repl_io::dest::{Destination, DestinationRegistry, S3Options};
use s3repl_tests::fault_proxy::FaultProxy;
use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY, SeaweedFs};

const SIZE: u64 = 1 << 30;
const BLOCK: usize = 1 << 20;

/// Deterministic bytes without holding the object: 1 MiB blocks, each a fixed pattern with the
/// block number written at its start.
struct Generated {
    pattern: Bytes,
}

impl Generated {
    fn new() -> Self {
        let pattern: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
        Generated { pattern: Bytes::from(pattern) }
    }

    fn range(&self, range: std::ops::Range<u64>) -> Bytes {
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        while at < range.end {
            let block = at / BLOCK as u64;
            let offset = (at % BLOCK as u64) as usize;
            let take = (BLOCK - offset).min((range.end - at) as usize);
            let mut chunk = self.pattern.slice(offset..offset + take).to_vec();
            for (i, b) in block.to_le_bytes().iter().enumerate() {
                if (offset..offset + take).contains(&i) {
                    chunk[i - offset] = *b;
                }
            }
            out.extend_from_slice(&chunk);
            at += take as u64;
        }
        out.freeze()
    }
}

impl ObjectSource for Generated {
    fn get<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        Box::pin(async { Err(SourceError::Transient("whole reads are not expected".into())) })
    }

    fn get_range<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        Box::pin(async move { Ok(self.range(range)) })
    }
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_object_survives_a_failed_part_within_the_memory_budget() {
    let server = SeaweedFs::start("large", &["big"]).unwrap();
    // Fail the first upload of part 3 (S3 answers 503 SlowDown; the client retries that part).
    let proxy = FaultProxy::start(
        server.port(),
        Arc::new(|line: &str, before: usize| {
            line.starts_with("PUT ") && line.contains("partNumber=3&") && before == 0
        }),
    )
    .unwrap();
    let generated = Generated::new();
    let mut hasher = blake3::Hasher::new();
    let mut at = 0;
    while at < SIZE {
        hasher.update(&generated.range(at..at + (8 << 20)));
        at += 8 << 20;
    }
    let expected = *hasher.finalize().as_bytes();

    let log_dir = std::env::temp_dir().join(format!("s3repl-large-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let writer =
        LogWriter::open(&log_dir, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap();
    let rec = VersionRecord {
        bucket: "src".into(),
        key: "big/object.bin".into(),
        version_id: "v1".into(),
        size: SIZE,
        blake3: Some(expected),
        ..VersionRecord::default()
    };
    writer.append("src", &rec.key, &rec.to_bytes().unwrap()).unwrap();
    let opts = |endpoint: String| S3Options {
        endpoint,
        bucket: "big".into(),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        allow_http: true,
        virtual_hosted_style: false,
    };
    let dest = Destination::s3("arn:aws:s3:::big", &opts(proxy.endpoint())).unwrap();
    let mut reg = DestinationRegistry::new();
    reg.insert(dest);
    let budget = 64u64 << 20;
    let status = MemoryStatus::new();
    let baseline = peak_rss();
    let mut engine = Engine::builder()
        .log(&log_dir, 1)
        .bucket("src", s3repl_tests::catch_all("arn:aws:s3:::big", false))
        .source(Arc::new(generated))
        .destinations(reg)
        .status(Arc::new(status.clone()))
        .limits(Limits {
            budget_bytes: budget,
            part_size: 8 << 20,
            part_concurrency: 4,
            ..Limits::default()
        })
        .start()
        .unwrap();
    assert!(engine.wait_for(&writer.next_seqs(), Duration::from_mins(5)).await);
    engine.shutdown().await.unwrap();
    let peak = peak_rss();
    let updates = status.updates();
    assert!(updates.iter().any(|u| u.status == ReplicationStatus::Completed), "{updates:?}");
    assert!(
        updates.iter().all(|u| !matches!(u.status, ReplicationStatus::Failed { .. })),
        "{updates:?}"
    );

    // What crossed the proxy: one CreateMultipartUpload, 128 parts with part 3 twice (failed
    // once, retried alone), one CompleteMultipartUpload, no abort, no whole-object PUT.
    let seen = proxy.seen();
    let count = |f: &dyn Fn(&str) -> bool| seen.iter().filter(|(l, _)| f(l)).count();
    assert_eq!(count(&|l| l.starts_with("POST ") && l.contains("?uploads")), 1, "{seen:?}");
    assert_eq!(count(&|l| l.starts_with("POST ") && l.contains("uploadId=")), 1);
    assert_eq!(count(&|l| l.starts_with("DELETE ")), 0);
    assert_eq!(count(&|l| l.starts_with("PUT ") && l.contains("partNumber=3&")), 2);
    assert_eq!(count(&|l| l.starts_with("PUT ") && l.contains("partNumber=")), 129);
    assert_eq!(seen.iter().filter(|(_, failed)| *failed).count(), 1);

    // The replica, read straight from the server, is the object.
    let direct = Destination::s3("arn:aws:s3:::big", &opts(server.endpoint())).unwrap();
    let path = object_store::path::Path::parse("big/object.bin").unwrap();
    let mut stream = direct.store().get(&path).await.unwrap().into_stream();
    let mut got = blake3::Hasher::new();
    let mut len = 0u64;
    while let Some(chunk) = futures_next(&mut stream).await {
        let chunk = chunk.unwrap();
        len += chunk.len() as u64;
        got.update(&chunk);
    }
    assert_eq!(len, SIZE);
    assert_eq!(got.finalize().as_bytes(), &expected);

    // Memory: the engine held at most the budget of object data at once.
    let grew = peak.saturating_sub(baseline);
    assert!(
        grew <= budget + (64 << 20),
        "peak RSS grew by {} MiB (budget {} MiB)",
        grew >> 20,
        budget >> 20
    );
    let _ = std::fs::remove_dir_all(&log_dir);
}

/// `StreamExt::next` without the futures crate.
async fn futures_next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}
