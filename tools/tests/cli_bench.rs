//! `s3repl bench` end to end: the simple form with JSON, `.hgrm` and SVG reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::process::Command;

#[test]
fn bench_replicates_and_reports_measured_figures() {
    let dir = std::env::temp_dir().join(format!("s3repl-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, hgrm, svg) = (dir.join("r.json"), dir.join("r.hgrm"), dir.join("r.svg"));
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["bench", "--objects", "2000", "--size", "4KiB:9,64KiB:1", "--destinations", "2"])
        .args([
            "--json",
            json.to_str().unwrap(),
            "--hgrm",
            hgrm.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    let rows = ["objects/s", "MB/s", "CPU s per GB", "latency p50", "latency p99.9", "peak RSS"];
    for row in rows.into_iter().chain(["vs local FS"]) {
        assert!(table.contains(row), "{table}");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["objects"], 2000);
    assert_eq!(r["failed"], 0);
    assert!(r["bytes"].as_u64().unwrap() >= 2 * 2000 * 4096, "both destinations counted");
    for key in ["seconds", "objects_per_s", "mb_per_s", "fs_baseline_files_per_s"] {
        assert!(r[key].as_f64().unwrap() > 0.0, "{key}");
    }
    // The local destination's ratio to the file system baseline measured in the same run.
    let ratio = r["fs_baseline_ratio"].as_f64().unwrap();
    let rate =
        r["objects_per_s"].as_f64().unwrap() / r["fs_baseline_files_per_s"].as_f64().unwrap();
    assert!((ratio - rate).abs() < 1e-9 * rate.max(1.0), "{ratio} vs {rate}");
    // And by bytes (the line large objects print); the baseline files have the largest size.
    let bytes_ratio = r["fs_baseline_bytes_ratio"].as_f64().unwrap();
    let mb = r["mb_per_s"].as_f64().unwrap() / r["fs_baseline_mb_per_s"].as_f64().unwrap();
    assert!((bytes_ratio - mb).abs() < 1e-9 * mb.max(1.0), "{bytes_ratio} vs {mb}");
    let per_file = r["fs_baseline_mb_per_s"].as_f64().unwrap() * 1e6
        / r["fs_baseline_files_per_s"].as_f64().unwrap();
    assert!((per_file - 65536.0).abs() < 1e-6, "{per_file}");
    let lat = &r["latency_ms"];
    assert!(lat["p50"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap());
    assert!(lat["p99"].as_f64().unwrap() <= lat["max"].as_f64().unwrap());
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(std::fs::read_to_string(&hgrm).unwrap().contains("Percentile"));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn workload_options_hot_keys_tags_rules_sse_kms_and_duration() {
    let dir = std::env::temp_dir().join(format!("s3repl-cli-bench-wl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("w.json");
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args([
            "bench",
            "--objects",
            "1500",
            "--size",
            "4KiB:3,100KiB:1",
            "--destination",
            "memory",
        ])
        .args(["--keys", "40", "--key-skew", "1.1", "--key-length", "200", "--tags", "3"])
        .args(["--rules", "998", "--sse-kms", "30", "--destinations", "2"])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Every version reached both destinations, SSE-KMS ones re-encrypted (a failure would
    // be counted and make the exit code 2).
    assert_eq!(r["objects"], 1500);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["rules"], 1000);
    assert_eq!(r["sse_kms_percent"], 30.0);
    // More rules than S3 allows are refused with S3's message.
    let too_many = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["bench", "--objects", "10", "--rules", "1000"])
        .output()
        .unwrap();
    assert_eq!(too_many.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_many.stderr).contains("cannot exceed 1000"));
    // Duration mode: appends for about a second, then drains and reports what it did.
    let timed = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["bench", "--duration", "1", "--destination", "memory", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(timed.status.code(), Some(0), "{}", String::from_utf8_lossy(&timed.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(r["objects"].as_u64().unwrap() > 0);
    assert!(r["seconds"].as_f64().unwrap() >= 1.0);
    assert!(r["fs_baseline_files_per_s"].is_null(), "no file system baseline for memory");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With an S3 source and every byte through s3repl, the timed run's peak RSS stays within the
/// byte budget plus 64 MiB: multipart parts are read into the engine's pooled buffers, and the
/// binary's allocator setting unmaps the buffers of objects copied whole once freed (without
/// it, glibc's heaps kept them: 217-229 MiB at this budget, measured).
#[test]
fn bench_memory_stays_within_the_budget_with_an_s3_source() {
    use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY, SeaweedFs};
    let server = SeaweedFs::start("bench-rss", &["rss-src", "rss-dst"]).unwrap();
    for bucket in ["rss-src", "rss-dst"] {
        server.enable_versioning(bucket).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("s3repl-cli-bench-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let budget = 128u64 << 20;
    // Objects copied whole (under the 16 MiB multipart threshold), then multipart ones.
    for (objects, size) in [("96", "8MiB"), ("8", "40MiB")] {
        let json = dir.join(format!("{size}.json"));
        let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
            .args(["bench", "--objects", objects, "--size", size, "--budget", "128MiB"])
            .args(["--destination", "s3", "--s3-endpoint", &server.endpoint()])
            .args(["--s3-source-bucket", "rss-src", "--s3-bucket", "rss-dst"])
            .args(["--no-server-side-copy", "--json", json.to_str().unwrap()])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(r["failed"], 0, "{size}");
        assert_eq!(r["peak_rss_scope"], "run", "{size}");
        let peak = r["peak_rss_bytes"].as_u64().unwrap();
        eprintln!("{size}: peak RSS {} MiB", peak >> 20);
        assert!(
            peak <= budget + (64 << 20),
            "{size}: peak RSS {} MiB over a {} MiB budget + 64 MiB",
            peak >> 20,
            budget >> 20
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--log kafka` drives the same run through a Kafka topic (librdkafka's mock cluster, in the
/// bench's process) read by the engine as a consumer group, with the same report.
#[test]
fn bench_drives_the_kafka_path() {
    let dir = s3repl_tests::temp_dir("cli-bench-kafka");
    let json = dir.path().join("r.json");
    let out = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(["bench", "--objects", "3000", "--size", "4KiB", "--destination", "memory"])
        .args(["--log", "kafka", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["log"], "kafka");
    assert_eq!(r["objects"], 3000);
    assert_eq!(r["failed"], 0);
    assert!(r["objects_per_s"].as_f64().unwrap() > 0.0);
}
