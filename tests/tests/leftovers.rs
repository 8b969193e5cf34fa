//! Issue 25, finding 3: what a killed process leaves at its destinations is cleared at the
//! next start — staging files in a local destination, and multipart uploads it opened on an S3
//! destination (journaled before their first part) — and nothing else: keys that merely look
//! odd stay, and an upload another tool opened on the same bucket is never aborted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{Engine, MemorySource, MemoryStatus};
use s3repl_io::dest::{Destination, DestinationRegistry, ReplicaMeta, S3Options, UploadJournal};
use s3repl_tests::seaweed::SeaweedFs;

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_files_a_killed_process_left_are_removed_at_start() {
    let dir = s3repl_tests::temp_dir("leftovers-local");
    let root = dir.path().join("dst");
    let log = dir.path().join("log");
    drop(LogWriter::open(&log, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap());
    // What a SIGKILL mid-write leaves: `put_file`'s staging file, a multipart upload's.
    std::fs::create_dir_all(root.join("deep/er")).unwrap();
    for f in ["big.bin#1", "deep/er/part.bin#2"] {
        std::fs::write(root.join(f), vec![7u8; 4096]).unwrap();
    }
    // Keys, not staging files.
    for f in ["deep/kept", "deep/er/x#y", "a#b#1"] {
        std::fs::write(root.join(f), b"replica").unwrap();
    }
    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::local("arn:aws:s3:::dst", &root).unwrap());
    let engine = start(&log, reg);
    wait_until("the staging files to go", || {
        !root.join("big.bin#1").exists() && !root.join("deep/er/part.bin#2").exists()
    });
    for f in ["deep/kept", "deep/er/x#y", "a#b#1"] {
        assert!(root.join(f).exists(), "{f} was removed");
    }
    engine.shutdown().await.unwrap();
}

fn options(server: &SeaweedFs, bucket: &str) -> S3Options {
    s3repl_tests::seaweed::options(&server.endpoint(), bucket)
}

/// An engine on the one-partition log at `log`, writing to `reg`, reading nothing.
fn start(log: &std::path::Path, reg: DestinationRegistry) -> s3repl::pipeline::EngineHandle {
    Engine::builder()
        .log(log, 1)
        .source(Arc::new(MemorySource::new()))
        .destinations(reg)
        .status(Arc::new(MemoryStatus::new()))
        .start()
        .unwrap()
}

/// The upload ids open on `bucket`.
fn open_uploads(server: &SeaweedFs, bucket: &str) -> Vec<String> {
    let (code, body) = server.curl("GET", &format!("/{bucket}?uploads="), "").unwrap();
    assert_eq!(code, 200, "{body}");
    body.split("<UploadId>")
        .skip(1)
        .filter_map(|s| s.split("</UploadId>").next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_a_crash_left_open_are_aborted_at_start_and_only_those() {
    let server = SeaweedFs::start("leftovers", &["uploads"]).unwrap();
    let dir = s3repl_tests::temp_dir("leftovers-s3");
    let log = dir.path().join("log");
    drop(LogWriter::open(&log, LogConfig { partitions: 1, ..LogConfig::default() }).unwrap());
    let arn = "arn:aws:s3:::uploads";
    // Another tool's upload on the same bucket.
    let (code, body) = server.curl("POST", "/uploads/theirs.bin?uploads=", "").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(open_uploads(&server, "uploads").len(), 1);

    // A process that journals its uploads (as the engine's do) is killed mid-upload: a part is
    // sent, nothing completes or aborts.
    {
        let (journal, left) =
            UploadJournal::open(&log.join("uploads").join("replicator.jsonl")).unwrap();
        assert!(left.is_empty());
        let d = Destination::s3(arn, &options(&server, "uploads")).unwrap();
        d.journal_uploads(&Arc::new(journal));
        let mut up = d.start_multipart("ours.bin", &ReplicaMeta::default()).await.unwrap();
        up.put_part(Bytes::from(vec![1u8; 5 << 20])).await.unwrap();
        std::mem::forget(up);
    }
    assert_eq!(open_uploads(&server, "uploads").len(), 2);
    // Killed while the server created another: the journal holds the intent, not the id.
    let (code, body) = server.curl("POST", "/uploads/unrecorded.bin?uploads=", "").unwrap();
    assert_eq!(code, 200, "{body}");
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    std::fs::OpenOptions::new()
        .append(true)
        .open(log.join("uploads").join("replicator.jsonl"))
        .unwrap()
        .write_all(
            format!("{{\"intent\":7,\"destination\":\"{arn}\",\"key\":\"unrecorded.bin\",\"at_ms\":{now_ms}}}\n")
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(open_uploads(&server, "uploads").len(), 3);

    let mut reg = DestinationRegistry::new();
    reg.insert(Destination::s3(arn, &options(&server, "uploads")).unwrap());
    let engine = start(&log, reg);
    wait_until("our upload to be aborted", || open_uploads(&server, "uploads").len() == 1);
    // Only theirs is left, and the journal no longer names ours.
    let (code, body) = server.curl("GET", "/uploads?uploads=", "").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("theirs.bin") && !body.contains("ours.bin"), "{body}");
    assert!(!body.contains("unrecorded.bin"), "{body}");
    engine.shutdown().await.unwrap();
    let (_, left) = UploadJournal::open(&log.join("uploads").join("replicator.jsonl")).unwrap();
    assert!(left.is_empty(), "{left:?}");
}
