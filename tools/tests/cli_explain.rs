//! `s3repl explain` as a user runs it: single objects, JSON lines in order with defaults,
//! words in text mode, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn s3repl(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(args)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn json_lines_in_order_with_defaults() {
    let input = concat!(
        r#"{"key":"logs/a","tags":{"class":"audit","keep":"yes"}}"#,
        "\n",
        r#"{"key":"logs/a","tags":{"class":"audit"}}"#,
        "\n",
        r#"{"key":"x","kind":"delete_marker"}"#,
        "\n",
        r#"{"key":"x","kind":"delete_version"}"#,
        "\n",
        r#"{"key":"x","is_replica":true}"#,
        "\n",
        r#"{"key":"logs/a","tags":{"class":"audit","keep":"yes"},"sse":"SSE-KMS","storage_class":"GLACIER_IR"}"#,
        "\n",
        r#"{"key":"x","kind":"delete_marker","origin":"lifecycle"}"#,
        "\n",
    );
    let out = s3repl(
        &["explain", "--config", "replication.xml", "--objects", "-", "--format", "json"],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    assert_eq!(got.len(), 7);
    let targets = |v: &serde_json::Value| {
        v["replicate_to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["bucket"].as_str().unwrap().to_owned(),
                    t["rule_id"].as_str().unwrap().to_owned(),
                    t["storage_class"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let backup = "arn:aws:s3:::my-bucket-backup".to_owned();
    let dr = "arn:aws:s3:::my-bucket-dr".to_owned();
    assert_eq!(
        targets(&got[0]),
        vec![
            (backup.clone(), "logs-to-backup".into(), serde_json::json!("STANDARD_IA")),
            (dr.clone(), "everything-to-dr".into(), serde_json::json!("GLACIER_IR")),
        ]
    );
    assert_eq!(
        targets(&got[1]),
        vec![(dr.clone(), "everything-to-dr".into(), serde_json::json!("GLACIER_IR"))]
    );
    assert_eq!(targets(&got[2]), vec![(dr, "everything-to-dr".into(), serde_json::Value::Null)]);
    assert!(targets(&got[3]).is_empty());
    assert!(targets(&got[4]).is_empty());
    assert_eq!(
        targets(&got[5]),
        vec![(backup, "logs-to-backup".into(), serde_json::json!("STANDARD_IA"))]
    );
    assert!(targets(&got[6]).is_empty());
    for v in &got {
        assert!(!v["why"].as_array().unwrap().is_empty());
    }
    assert!(got[3]["why"][0].as_str().unwrap().contains("version deletes"));
}

#[test]
fn text_mode_explains_skipped_rules_in_words() {
    let out = s3repl(
        &[
            "explain",
            "--config",
            "replication.xml",
            "--key",
            "logs/a",
            "--tag",
            "class=audit",
            "--sse",
            "SSE-KMS",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rule \"logs-to-backup\": skipped: tag \"keep\" is missing"), "{text}");
    assert!(
        text.contains("rule \"everything-to-dr\": skipped: the object is KMS-encrypted"),
        "{text}"
    );
    assert!(text.contains("not replicated: no rule selects this object"), "{text}");
}

#[test]
fn bad_lines_are_reported_in_place_and_exit_2() {
    let input = "{\"key\":\"a\"}\nnot json\n{\"key\":\"b\",\"sse\":\"AES\"}\n{\"key\":\"c\"}\n";
    let out = s3repl(
        &["explain", "--config", "replication.xml", "--objects", "-", "--format", "json"],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    let got = lines(&out);
    assert_eq!(got.len(), 4);
    assert!(got[1]["error"].is_string());
    assert!(got[2]["error"].as_str().unwrap().contains("SseKind"));
    assert!(got[3]["replicate_to"].is_array());
}

#[test]
fn invalid_configuration_exits_1_and_usage_errors_2() {
    let out = s3repl(&["explain", "--config", "-", "--key", "a"], b"<ReplicationConfiguration/>");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(s3repl(&["explain", "--config", "replication.xml"], b"").status.code(), Some(2));
    assert_eq!(
        s3repl(&["explain", "--config", "replication.xml", "--key", "a", "--kind", "copy"], b"")
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn acl_changes_are_not_replicated_under_an_owner_override() {
    let dir = std::env::temp_dir().join(format!("s3repl-explain-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("owned.json");
    std::fs::write(
        &config,
        r#"{"Role":"arn:aws:iam::111122223333:role/r","Rules":[{"ID":"owned","Priority":1,
            "Status":"Enabled","Filter":{},"DeleteMarkerReplication":{"Status":"Disabled"},
            "Destination":{"Bucket":"arn:aws:s3:::owned","Account":"444455556666",
            "AccessControlTranslation":{"Owner":"Destination"}}}]}"#,
    )
    .unwrap();
    let input = concat!(
        r#"{"key":"a","kind":"metadata_update","changes":"acl"}"#,
        "\n",
        r#"{"key":"a","kind":"metadata_update","changes":"acl+legal_hold"}"#,
        "\n",
        r#"{"key":"a","kind":"metadata_update"}"#,
        "\n",
    );
    let config = config.to_str().unwrap();
    let out = s3repl(
        &["explain", "--config", config, "--objects", "-", "--format", "json"],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    let targets = |i: usize| got[i]["replicate_to"].as_array().unwrap().len();
    assert_eq!((targets(0), targets(1), targets(2)), (0, 1, 1), "{got:?}");
    assert!(got[0]["why"][0].as_str().unwrap().contains("ACL changes are not replicated"));
    // The text form names the change set.
    let out = s3repl(
        &[
            "explain",
            "--config",
            config,
            "--key",
            "a",
            "--kind",
            "metadata_update",
            "--changes",
            "acl",
        ],
        b"",
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("metadata_update of acl"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 29: `explain` names the exclusion (`Not`) that skipped a rule.
#[test]
fn explain_names_the_exclusion_that_skipped_a_rule() {
    let dir = std::env::temp_dir().join(format!("s3repl-explain-not-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("not.json");
    std::fs::write(
        &config,
        r#"{"Role":"arn:aws:iam::123456789012:role/r","Rules":[
          {"ID":"logs-but-tmp","Priority":2,"Status":"Enabled","DeleteMarkerReplication":{"Status":"Disabled"},
           "Filter":{"And":{"Prefix":"logs/","Not":{"Or":{"Prefixes":["logs/tmp/"],"Tags":[{"Key":"class","Value":"secret"}]}}}},
           "Destination":{"Bucket":"arn:aws:s3:::backup"}}]}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let explain = |key: &str, tag: &str| {
        let out = s3repl(&["explain", "--config", config, "--key", key, "--tag", tag], b"");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = explain("logs/tmp/x", "class=public");
    assert!(text.contains(r#"skipped: the rule's Not excludes prefix "logs/tmp/""#), "{text}");
    let text = explain("logs/x", "class=secret");
    assert!(text.contains(r#"skipped: the rule's Not excludes tag "class"="secret""#), "{text}");
    let text = explain("logs/x", "class=public");
    assert!(text.contains(r#"rule "logs-but-tmp": selected"#), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
