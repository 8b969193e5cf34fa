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

/// A `SeaweedFS` with versioned `src-bucket` and `dst-bucket` (the S3 tests' pair).
pub(crate) fn two_buckets(name: &str) -> s3repl_tests::seaweed::SeaweedFs {
    let server =
        s3repl_tests::seaweed::SeaweedFs::start(name, &["src-bucket", "dst-bucket"]).unwrap();
    server.enable_versioning("src-bucket").unwrap();
    server.enable_versioning("dst-bucket").unwrap();
    server
}

/// A fresh data directory and its `s3repl.toml`: a log of `partitions`, `src-bucket` read from
/// `source` and `arn:aws:s3:::dst-bucket` written at `destination` (both as the test identity),
/// then the TOML `extra`; with `rule` (a `<Rule>` element), `src-bucket`'s installed
/// configuration holding it. Returns (the data directory, the settings file).
pub(crate) fn s3_to_s3(
    name: &str,
    source: &str,
    destination: &str,
    extra: &str,
    rule: Option<&str>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY};
    let data = std::env::temp_dir().join(format!("s3repl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(data.join("replication")).unwrap();
    let s3 = |endpoint: &str| {
        format!(
            "endpoint = \"{endpoint}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\nallow_http = true"
        )
    };
    let config = data.join("s3repl.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[log]\npartitions = 2\n[source]\nkind = \"s3\"\nbuckets = [\"src-bucket\"]\n{}\n\
             [[destinations]]\narn = \"arn:aws:s3:::dst-bucket\"\nkind = \"s3\"\n{}\n{extra}",
            data.display(),
            s3(source),
            s3(destination)
        ),
    )
    .unwrap();
    if let Some(rule) = rule {
        std::fs::write(
            data.join("replication/src-bucket.xml"),
            format!(
                r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role>{rule}</ReplicationConfiguration>"#
            ),
        )
        .unwrap();
    }
    (data, config)
}

/// A rule replicating keys under `prefix` to `dst-bucket`; `more` goes inside it (e.g.
/// `ExistingObjectReplication`), `delete_markers` says whether markers replicate.
pub(crate) fn rule(prefix: &str, more: &str, delete_markers: bool) -> String {
    let dmr = if delete_markers { "Enabled" } else { "Disabled" };
    format!(
        "<Rule><ID>r</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix>{prefix}</Prefix></Filter>{more}<DeleteMarkerReplication><Status>{dmr}</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::dst-bucket</Bucket></Destination></Rule>"
    )
}

/// The value of response header `name` in curl's header dump.
pub(crate) fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The hex SHA-256 of `body` (the `x-amz-content-sha256` header curl does not send).
pub(crate) fn hex_sha256(body: &str) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    sha2::Sha256::digest(body.as_bytes()).iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Waits up to `limit` for `child` to exit (after a SIGTERM, say): its status, or `None` if it
/// still runs.
pub(crate) fn exit_within(
    child: &mut Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
