//! Issue 25, findings 4 and 5: the admin endpoint of `s3repl run` against hostile clients.
//! Unsigned, wrong-key, skewed, replayed, oversized, entity-bomb, deep-nesting and
//! path-traversal requests get S3's errors and change nothing; a body the signature does not
//! cover is refused unless a signed checksum covers it; slow and idle clients are cut; and a
//! flood of unauthenticated bodies plus idle connections leaves the process within its memory
//! bound, its log within its line rate, and replication flowing.
//!
//! The flood's size comes from `S3REPL_HOSTILE_BODIES` (default 1,000 connections of 2 MiB)
//! and `S3REPL_HOSTILE_IDLE` (default 2,000 idle connections; `scripts/hostile.sh` runs it
//! with 20,000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::format_push_string, clippy::format_collect, clippy::similar_names)]
#![allow(clippy::too_many_lines, clippy::cast_precision_loss)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::Digest as _;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::LocalVersionStore;
use s3repl::sigv4::{Request, amz_date, authorization, sha256_hex};

const KEY: &str = "hostile-admin";
const SECRET: &str = "hostile-admin-secret";

struct Server {
    child: Child,
    addr: String,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
    )
    .unwrap()
}

fn start(name: &str, timeouts_secs: f64) -> Server {
    let data = std::env::temp_dir().join(format!("s3repl-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("s3repl.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\ncredentials = [{{ access_key_id = \"{KEY}\", secret_access_key = \"{SECRET}\" }}]\nheader_timeout_secs = {timeouts_secs}\nbody_timeout_secs = {timeouts_secs}\nidle_timeout_secs = {}\n",
            data.to_str().unwrap(),
            timeouts_secs * 2.0
        ),
    )
    .unwrap();
    let (child, endpoint) =
        common::spawn_run(&["--config", config.to_str().unwrap()], &[], &data.join("run.log"));
    let addr = endpoint.trim_start_matches("http://").to_owned();
    Server { child, addr, data }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("run.log")).unwrap_or_default()
    }

    /// Sends raw bytes; returns (status, whole answer). A server that closes while we write
    /// still gets its answer read.
    fn raw(&self, bytes: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(bytes);
        let mut text = Vec::new();
        let _ = s.read_to_end(&mut text);
        let text = String::from_utf8_lossy(&text).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, text)
    }

    /// Peak and current RSS of the server, KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

/// A request to sign: method, path, query, body and the headers beyond the signing ones.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    body: &'a [u8],
    /// Signed extra headers.
    signed: Vec<(&'a str, String)>,
    /// Extra headers sent but not signed.
    unsigned: Vec<(&'a str, String)>,
    /// `x-amz-content-sha256`: `None` for the body's hash.
    payload: Option<&'a str>,
    secret: &'a str,
    key: &'a str,
    when: i64,
    /// The declared `Content-Length` (the body's length when `None`).
    length: Option<usize>,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, path: &'a str, query: &'a str, body: &'a [u8]) -> Self {
        Req {
            method,
            path,
            query,
            body,
            signed: Vec::new(),
            unsigned: Vec::new(),
            payload: None,
            secret: SECRET,
            key: KEY,
            when: now(),
            length: None,
        }
    }

    fn md5(mut self) -> Self {
        self.signed.push(("content-md5", md5_of(self.body)));
        self
    }

    fn bytes(&self, host: &str) -> Vec<u8> {
        let date = amz_date(self.when);
        let payload = self.payload.map_or_else(|| sha256_hex(self.body), str::to_owned);
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host.into()),
            ("x-amz-content-sha256".into(), payload.clone()),
            ("x-amz-date".into(), date.clone()),
        ];
        headers.extend(self.signed.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
        let req = Request {
            method: self.method,
            raw_path: self.path,
            raw_query: self.query,
            headers: &headers,
        };
        let auth = authorization(&req, self.key, self.secret, &date, "us-east-1", &payload);
        let target = if self.query.is_empty() {
            self.path.to_owned()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        let mut out = format!("{} {target} HTTP/1.1\r\n", self.method);
        for (n, v) in headers.iter().chain(
            self.unsigned
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect::<Vec<_>>()
                .iter(),
        ) {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str(&format!("authorization: {auth}\r\n"));
        out.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            self.length.unwrap_or(self.body.len())
        ));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(self.body);
        bytes
    }
}

fn md5_of(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

const CONFIG: &str = r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>all</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::dst-bucket</Bucket></Destination></Rule></ReplicationConfiguration>"#;

fn code(answer: &str) -> &str {
    answer.split("<Code>").nth(1).and_then(|s| s.split("</Code>").next()).unwrap_or("")
}

/// Whether the bucket has a configuration (a signed GET).
fn configured(server: &Server, bucket: &str) -> bool {
    let path = format!("/{bucket}");
    let (status, answer) =
        server.raw(&Req::new("GET", &path, "replication", b"").bytes(&server.addr));
    assert!(status == 200 || status == 404, "{answer}");
    status == 200
}

#[test]
fn hostile_requests_get_s3_errors_and_change_nothing() {
    let server = start("requests", 20.0);
    let host = server.addr.clone();
    let put = |r: Req<'_>| server.raw(&r.bytes(&host));
    let body = CONFIG.as_bytes();

    // Unsigned.
    let (status, answer) = server.raw(
        format!(
            "PUT /bk1?replication HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n\r\n{CONFIG}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!((status, code(&answer)), (403, "AccessDenied"), "{answer}");
    // Wrong secret, unknown key, a date an hour off.
    let (status, answer) =
        put(Req { secret: "wrong", ..Req::new("PUT", "/bk1", "replication", body).md5() });
    assert_eq!((status, code(&answer)), (403, "SignatureDoesNotMatch"), "{answer}");
    let (status, answer) =
        put(Req { key: "nobody", ..Req::new("PUT", "/bk1", "replication", body).md5() });
    assert_eq!((status, code(&answer)), (403, "InvalidAccessKeyId"), "{answer}");
    let (status, answer) =
        put(Req { when: now() - 3600, ..Req::new("PUT", "/bk1", "replication", body).md5() });
    assert_eq!((status, code(&answer)), (403, "RequestTimeTooSkewed"), "{answer}");
    // A body whose hash the signature does not name: refused before it is read.
    let mut raw = Req::new("PUT", "/bk1", "replication", body).md5().bytes(&host);
    let text = String::from_utf8_lossy(&raw).replace(&sha256_hex(body), &sha256_hex(b"other"));
    raw = text.into_bytes();
    let (status, answer) = server.raw(&raw);
    assert_eq!(status, 403, "{answer}");
    assert!(!configured(&server, "bk1"));

    // Finding 5: the checksum S3 requires, checked; an unsigned body only with a signed one.
    let (status, answer) = put(Req::new("PUT", "/bk1", "replication", body));
    assert_eq!((status, code(&answer)), (400, "InvalidRequest"), "{answer}");
    assert!(answer.contains("Missing required header"), "{answer}");
    let mut bad = Req::new("PUT", "/bk1", "replication", body);
    bad.signed.push(("content-md5", md5_of(b"something else")));
    let (status, answer) = put(bad);
    assert_eq!((status, code(&answer)), (400, "BadDigest"), "{answer}");
    let mut invalid = Req::new("PUT", "/bk1", "replication", body);
    invalid.signed.push(("content-md5", "not base64!".into()));
    let (status, answer) = put(invalid);
    assert_eq!((status, code(&answer)), (400, "InvalidDigest"), "{answer}");
    // UNSIGNED-PAYLOAD with an unsigned Content-MD5: a captured request's body could be
    // swapped (and its MD5 with it).
    let mut captured = Req::new("PUT", "/bk1", "replication", body);
    captured.payload = Some("UNSIGNED-PAYLOAD");
    captured.unsigned.push(("content-md5", md5_of(body)));
    let (status, answer) = put(captured);
    assert_eq!((status, code(&answer)), (400, "InvalidRequest"), "{answer}");
    assert!(!configured(&server, "bk1"));
    // UNSIGNED-PAYLOAD with a signed checksum is accepted, as a signed payload hash is.
    let mut covered = Req::new("PUT", "/bk1", "replication", body).md5();
    covered.payload = Some("UNSIGNED-PAYLOAD");
    let (status, answer) = put(covered);
    assert_eq!(status, 200, "{answer}");
    assert!(configured(&server, "bk1"));
    // The same signed request again (a replay within the window) is the same change.
    let again = Req::new("PUT", "/bk2", "replication", body).md5().bytes(&host);
    assert_eq!(server.raw(&again).0, 200);
    assert_eq!(server.raw(&again).0, 200);

    // Oversized: refused on its declared length, its body never read.
    let big = Req { length: Some(3 << 20), ..Req::new("PUT", "/bk3", "replication", b"").md5() };
    let (status, answer) = server.raw(&big.bytes(&host));
    assert_eq!((status, code(&answer)), (400, "MaxMessageLengthExceeded"), "{answer}");
    // An entity bomb and deep nesting: MalformedXML, nothing expanded.
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\">{}]><ReplicationConfiguration><Role>&a9;</Role></ReplicationConfiguration>",
        (1..10)
            .map(|i| format!(
                "<!ENTITY a{i} \"{}\">",
                format!("&a{};", i - 1).repeat(10).replace("&a0;", "&a;")
            ))
            .collect::<String>()
    );
    let (status, answer) = put(Req::new("PUT", "/bk3", "replication", bomb.as_bytes()).md5());
    assert_eq!((status, code(&answer)), (400, "MalformedXML"), "{answer}");
    let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    let (status, answer) = put(Req::new("PUT", "/bk3", "replication", deep.as_bytes()).md5());
    assert_eq!((status, code(&answer)), (400, "MalformedXML"), "{answer}");
    assert!(!configured(&server, "bk3"));
    // Path traversal: never a file outside the configuration directory.
    for path in ["/..%2F..%2Fescape", "/%2e%2e", "/a/../escape", "/..", "/bk1/..%2Fescape"] {
        let (status, answer) = put(Req::new("PUT", path, "replication", body).md5());
        assert!(matches!(status, 400 | 501), "{path}: {answer}");
    }
    let outside: Vec<_> =
        std::fs::read_dir(&server.data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!outside.iter().any(|n| n.to_string_lossy().contains("escape")), "{outside:?}");
    let mut configs: Vec<String> = std::fs::read_dir(server.data.join("replication"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    configs.sort();
    assert_eq!(configs, ["bk1.json", "bk2.json"]);
    assert!(server.log().lines().count() < 200, "{}", server.log());
}

#[test]
fn slow_and_idle_clients_are_cut() {
    let server = start("slow", 1.0);
    // Idle: no byte at all.
    let started = Instant::now();
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0, "closed");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // A head that never ends.
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    slow.write_all(b"PUT /b?replication HTTP/1.1\r\nhost: x\r\n").unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // A signed request that promises 1,000 bytes and sends 5: S3's RequestTimeout.
    let body = b"<abc>";
    let mut req = Req::new("PUT", "/b", "replication", body).md5();
    req.length = Some(1000);
    req.payload = Some("UNSIGNED-PAYLOAD");
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&req.bytes(&server.addr)).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(code(&answer), "RequestTimeout", "{answer}");
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Raises this process's descriptor limit (the flood needs many client sockets).
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit to fill, then to set (soft up to hard is always allowed).
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
    }
    lim.rlim_cur
}

fn append_versions(data: &Path, round: u32, n: u32) -> Vec<String> {
    let store = LocalVersionStore::new(data.join("source")).durable(false);
    let writer =
        LogWriter::open(&data.join("log"), LogConfig { partitions: 4, ..LogConfig::default() })
            .unwrap();
    (0..n)
        .map(|i| {
            let key = format!("flood/{round}/{i}");
            let version_id = format!("r{round}-{i}");
            let body = format!("{key} body").into_bytes();
            let rec = common::put_version(&store, "src-bucket", &key, &version_id, &body);
            writer.append("src-bucket", &key, &rec.to_bytes().unwrap()).unwrap();
            key
        })
        .collect()
}

fn wait_replicated(server: &Server, keys: &[String]) {
    let deadline = Instant::now() + Duration::from_mins(1);
    let dst = server.data.join("destinations/dst-bucket");
    while !keys.iter().all(|k| dst.join(k).exists()) {
        assert!(Instant::now() < deadline, "replication stalled; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_flood_of_unauthenticated_bodies_and_idle_connections_is_bounded() {
    let bodies = env_count("S3REPL_HOSTILE_BODIES", 1000);
    let idle = env_count("S3REPL_HOSTILE_IDLE", 2000);
    let limit = raise_nofile();
    // At most the server's bound plus its backlog get established; this process holds them.
    assert!(limit > idle.min(8192) as u64 + 256, "descriptor limit {limit} is too low");
    let server = start("flood", 1.5);
    // The log has as many partitions as the writer wants before the flood (the replicator
    // made one of 8 by default when it started).
    let (status, answer) = server.raw(
        &Req::new("PUT", "/src-bucket", "replication", CONFIG.as_bytes()).md5().bytes(&server.addr),
    );
    assert_eq!(status, 200, "{answer}");
    wait_replicated(&server, &append_versions(&server.data, 0, 50));
    let lines_before = server.log().lines().count();
    let started = Instant::now();

    // Unauthenticated 2 MiB bodies, 250 connections at a time (the server once read each
    // body before checking the signature: 1,000 at once took it to 2.3 GiB).
    let addr = server.addr.clone();
    let body = std::sync::Arc::new(vec![b'x'; (2 << 20) - 1]);
    let sent: usize = std::thread::scope(|s| {
        let threads = 250.min(bodies.max(1));
        let per = bodies.div_ceil(threads);
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                let (addr, body) = (addr.clone(), body.clone());
                s.spawn(move || {
                    let mut done = 0;
                    for _ in 0..per.min(bodies.saturating_sub(w * per)) {
                        let Ok(mut c) = TcpStream::connect(&addr) else { continue };
                        let _ = c.set_write_timeout(Some(Duration::from_secs(10)));
                        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                        let head = format!(
                            "PUT /src-bucket?replication HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = c.write_all(head.as_bytes());
                        let _ = c.write_all(&body);
                        let mut answer = Vec::new();
                        let _ = c.read_to_end(&mut answer);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(sent, bodies);
    // Replication flows meanwhile.
    wait_replicated(&server, &append_versions(&server.data, 1, 50));

    // Idle connections, many more than the listener serves.
    // Past the server's bound (and its backlog) connections are not taken at all: attempts
    // time out, and the server's descriptors stay bounded.
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let held: Vec<TcpStream> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..16)
            .map(|w| {
                s.spawn(move || {
                    (0..idle.div_ceil(16).min(idle.saturating_sub(w * idle.div_ceil(16))))
                        .filter_map(|_| {
                            TcpStream::connect_timeout(&target, Duration::from_millis(100)).ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).unwrap().count();
    // Held past the idle timeout (3 s): the server cuts them, and replication flows meanwhile.
    let hold = Instant::now();
    let mut round = 2;
    while hold.elapsed() < Duration::from_secs(5) {
        wait_replicated(&server, &append_versions(&server.data, round, 20));
        round += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let (peak_kib, _) = server.rss_kib();
    let held_count = held.len();
    drop(held);
    let elapsed = started.elapsed().as_secs_f64();

    // Afterwards: healthy, no halt, replicating.
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        let (status, answer) = server.raw(
            format!("GET /-/health HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        );
        if status == 200 || Instant::now() > deadline {
            break (status, answer);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health.0, 200, "{}", health.1);
    let (_, metrics) = server.raw(
        format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    assert!(metrics.contains("\ns3repl_halts 0\n"), "{metrics}");
    wait_replicated(&server, &append_versions(&server.data, round, 50));
    let lines = server.log().lines().count() - lines_before;
    let rate = lines as f64 / elapsed;
    eprintln!(
        "flood: {bodies} unauthenticated 2 MiB bodies and {idle} idle connection attempts ({held_count} established), over {elapsed:.1} s: peak RSS {} MiB, {fds} server descriptors, {lines} log lines ({rate:.1}/s)",
        peak_kib / 1024
    );
    assert!(peak_kib <= 128 << 10, "peak RSS {} MiB", peak_kib / 1024);
    assert!(rate <= 100.0, "{rate:.1} log lines per second");
    // The listener's 512 connections and what replication holds open.
    assert!(fds <= 512 + 256, "{fds} descriptors");
}
