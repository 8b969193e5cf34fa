//! What the CLI tests that run `s3repl run` share: starting it and reading its endpoint.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `s3repl run ARGS` with `env`, its log appended to `log`; returns the child and the
/// admin endpoint it printed (`http://…`). Panics with the log's end if it did not start.
pub(crate) fn spawn_run(args: &[&str], env: &[(&str, &str)], log: &Path) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3repl"));
    cmd.arg("run").args(args).env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let Some(endpoint) = line.trim().strip_prefix("admin endpoint: ") else {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        panic!(
            "unexpected first line {line:?}; log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    };
    let endpoint = endpoint.to_owned();
    (child, endpoint)
}

/// What a storage server does when a put commits (see [`s3repl_tests::put_version`]).
pub(crate) fn put_version(
    store: &s3repl::pipeline::LocalVersionStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    body: &[u8],
) -> s3repl::record::VersionRecord {
    s3repl_tests::put_version(store, bucket, key, version_id, body).unwrap()
}

/// A child process killed and reaped when dropped: a test that fails midway leaves no
/// replicator running behind it.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
