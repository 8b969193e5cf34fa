//! `s3repl validate` as a user runs it: exit codes, the JSON verdict line, text reports,
//! standard input, `--context` and `--print`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::format_push_string, clippy::struct_excessive_bools, clippy::too_many_lines)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn s3repl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_s3repl"))
        .args(args)
        .current_dir(examples())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn last_line(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn seeds_are_valid_in_both_variants_and_syntaxes() {
    for (file, ctx) in [
        ("replication.json", "context.json"),
        ("replication.xml", "context.json"),
        ("replication-v1.xml", "context.json"),
        ("outposts-replication.json", "outposts-context.json"),
        ("outposts-replication.xml", "outposts-context.json"),
    ] {
        let out = s3repl(&["validate", "--format", "json", "--context", ctx, file], None);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"valid\":true}\n", "{file}");
    }
}

#[test]
fn invalid_configuration_exits_1_with_the_s3_code_and_rule() {
    let body = br#"{"Role":"arn:aws:iam::123456789012:role/r","Rules":[{"ID":"r1","Status":"Enabled","Priority":1,"Filter":{},"Destination":{"Bucket":"arn:aws:s3:::dst-bucket"}}]}"#;
    let out = s3repl(&["validate", "--format", "json", "-"], Some(body));
    assert_eq!(out.status.code(), Some(1));
    let v = last_line(&out);
    assert_eq!(v["valid"], false);
    assert_eq!(v["code"], "InvalidRequest");
    assert_eq!(v["rule_id"], "r1");
    assert!(
        v["message"].as_str().unwrap().starts_with("DeleteMarkerReplication must be specified")
    );
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["valid", "code", "message", "rule_id"]);
}

#[test]
fn malformed_document_has_null_rule_id() {
    let out = s3repl(&["validate", "--format", "json", "-"], Some(b"<ReplicationConfiguration>"));
    assert_eq!(out.status.code(), Some(1));
    let v = last_line(&out);
    assert_eq!(v["code"], "MalformedXML");
    assert!(v["rule_id"].is_null());
}

#[test]
fn text_report_names_the_rule_and_the_element() {
    let body = include_str!("../../examples/replication.xml")
        .replace("<Owner>Destination</Owner>", "<Owner>Source</Owner>");
    let out = s3repl(&["validate", "-"], Some(body.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("MalformedXML"), "{text}");
    assert!(text.contains("AccessControlTranslation/Owner"), "{text}");

    let body = include_str!("../../examples/replication.xml")
        .replace("<Priority>1</Priority>", "<Priority>2</Priority>");
    let out = s3repl(&["validate", "-"], Some(body.as_bytes()));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rule \"everything-to-dr\""), "{text}");
    assert!(text.contains("duplicate priority 2"), "{text}");
}

#[test]
fn context_checks_bucket_state() {
    let dir = std::env::temp_dir().join(format!("s3repl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ctx = dir.join("ctx.json");
    std::fs::write(&ctx, r#"{"source":{"bucket":"my-bucket","versioning":"Suspended"}}"#).unwrap();
    let out = s3repl(
        &["validate", "--format", "json", "--context", ctx.to_str().unwrap(), "replication.json"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(last_line(&out)["code"], "InvalidRequest");
    std::fs::write(&ctx, "{not json").unwrap();
    let out = s3repl(&["validate", "--context", ctx.to_str().unwrap(), "replication.json"], None);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(s3repl(&["validate", "no-such-file.xml"], None).status.code(), Some(2));
    assert_eq!(
        s3repl(&["validate", "--variant", "gcs", "replication.json"], None).status.code(),
        Some(2)
    );
    assert_eq!(s3repl(&["validate"], None).status.code(), Some(2));
}

#[test]
fn variant_flag_is_enforced() {
    let out = s3repl(
        &["validate", "--format", "json", "--variant", "s3", "outposts-replication.xml"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(last_line(&out)["code"], "MalformedXML");
}

#[test]
fn print_writes_the_normalized_configuration() {
    let out = s3repl(&["validate", "--format", "json", "--print", "xml", "replication.json"], None);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (xml, verdict) = stdout.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(verdict, "{\"valid\":true}");
    assert!(xml.contains("<ID>"), "a generated ID is printed: {xml}");
    // The printed XML validates again and carries the same configuration.
    let again =
        s3repl(&["validate", "--format", "json", "--print", "json", "-"], Some(xml.as_bytes()));
    assert_eq!(again.status.code(), Some(0));
    let again_json = String::from_utf8(again.stdout).unwrap();
    let first =
        s3repl(&["validate", "--format", "json", "--print", "json", "replication.json"], None);
    assert_eq!(String::from_utf8(first.stdout).unwrap(), again_json);
}
