//! `s3repl loadtest` against its own engine: constant rate, ramp, and a missed RTC target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s3repl-cli-lt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3repl")).arg("loadtest").args(args).output().unwrap()
}

fn report(path: &PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn constant_rate_replicates_every_version_and_plots_latency() {
    let dir = temp("constant");
    let (json, svg) = (dir.join("r.json"), dir.join("r.svg"));
    let out = loadtest(&[
        "--rate",
        "2000",
        "--duration",
        "1",
        "--rtc-threshold-ms",
        "60000",
        "--destination",
        "local",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&json);
    assert_eq!(r["issued"], 2000);
    assert_eq!(r["replicated"], 2000);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["halts"], serde_json::json!([]));
    assert_eq!(r["rtc"]["met"], true);
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(r["latency_ms"]["max"].as_f64().unwrap() >= r["latency_ms"]["p50"].as_f64().unwrap());
    // Open loop: the offered load took about the planned second, not less.
    assert!(r["seconds"].as_f64().unwrap() >= 0.9, "{r}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("polyline"), "{plot}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ramp_reports_each_step_and_the_highest_sustained_rate() {
    let dir = temp("ramp");
    let json = dir.join("r.json");
    let out = loadtest(&[
        "--ramp",
        "--rate",
        "500",
        "--ramp-step",
        "500",
        "--max-rate",
        "1500",
        "--duration",
        "0.5",
        "--p99-bound-ms",
        "2000",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&json);
    let steps = r["steps"].as_array().unwrap();
    let rates: Vec<f64> = steps.iter().map(|s| s["rate"].as_f64().unwrap()).collect();
    assert_eq!(rates, vec![500.0, 1000.0, 1500.0]);
    let issued: Vec<u64> = steps.iter().map(|s| s["issued"].as_u64().unwrap()).collect();
    assert_eq!(issued, vec![250, 500, 750]);
    assert!(steps.iter().all(|s| s["completed"] == s["issued"]), "{r}");
    assert_eq!(r["max_sustained_rate"], 1500.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missed_rtc_target_exits_1() {
    // A zero threshold cannot be met: every version takes at least a microsecond.
    let dir = temp("missed");
    let json = dir.join("r.json");
    let out = loadtest(&[
        "--rate",
        "500",
        "--duration",
        "0.2",
        "--rtc-threshold-ms",
        "0",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&json);
    assert_eq!(r["rtc"]["met"], false);
    assert_eq!(r["rtc"]["compliance_percent"], 0.0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISSED"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unbounded_runs_are_refused() {
    let out = loadtest(&["--rate", "10", "--duration", "10000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bound"));
}
