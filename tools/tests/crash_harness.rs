//! Issue 25's crash and restart harness: `s3repl run` replicating into a real `SeaweedFS` bucket
//! (versioned, over HTTP on 127.0.0.1) and a local directory, while this process plays the
//! storage server — appending puts, overwrites, delete markers, tag changes and multipart-sized
//! objects to the log and the source store — and, at seeded moments, SIGKILLs the replicator,
//! stops it cleanly and appends a backlog while it is down, or cuts a torn tail after a kill
//! (records written past the durable mark, as a writer's unsynced appends are, then dropped as
//! a power loss drops them, their sequence numbers reused).
//!
//! At the end every destination is compared with the state the source log says it must have:
//! missing, extra (a replica of no source version, or a second replica of one), corrupt and
//! out-of-order versions, wrong tags, orphaned staging files and open multipart uploads must all
//! be zero. It prints its figures and its seed.
//!
//! Knobs (environment): `S3REPL_HARNESS_SEED` (replays a run), `S3REPL_HARNESS_KILLS` (4),
//! `S3REPL_HARNESS_CLEAN` (2), `S3REPL_HARNESS_TORN` (1), `S3REPL_HARNESS_OPS` (operations per
//! phase, 150). `scripts/crash-harness.sh` runs the long version (30 / 10 / 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::too_many_lines, clippy::cast_possible_truncation, clippy::similar_names)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s3repl::log::{FRAME_HEADER_LEN, LogConfig, LogWriter};
use s3repl::pipeline::LocalVersionStore;
use s3repl::record::VersionRecord;
use s3repl::rules::{EventKind, MetadataChanges};
use s3repl_tests::seaweed::{ACCESS_KEY, SECRET_KEY, SeaweedFs};

const BUCKET: &str = "src-bucket";
const S3_BUCKET: &str = "harness-s3";
const PARTITIONS: u32 = 4;
/// Objects at least this large are replicated as multipart uploads (the replicator's setting).
const MULTIPART: usize = 6 << 20;

/// A seeded xorshift generator: the same seed replays the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What happened to a key, in log order.
#[derive(Debug, Clone)]
enum Event {
    Put { version_id: String, hash: [u8; 32], tags: Vec<(String, String)> },
    Marker,
}

/// The storage server's side: the log, the source store, and what it committed.
struct World {
    data: PathBuf,
    writer: Option<LogWriter>,
    store: LocalVersionStore,
    keys: BTreeMap<String, Vec<Event>>,
    /// Source version id → (key, content hash), for every put.
    versions: HashMap<String, (String, [u8; 32])>,
    counter: u64,
    multipart: u64,
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(),
    )
    .unwrap()
}

impl World {
    fn open_writer(&mut self) {
        self.writer = Some(
            LogWriter::open(
                &self.data.join("log"),
                LogConfig { partitions: PARTITIONS, ..LogConfig::default() },
            )
            .unwrap(),
        );
    }

    /// Content unique to a version (so a replica names the version it came from).
    fn body(version_id: &str, key: &str, size: usize) -> Vec<u8> {
        let mut b = format!("{key} {version_id} ").into_bytes();
        let fill = blake3::hash(version_id.as_bytes());
        while b.len() < size {
            b.extend_from_slice(fill.as_bytes());
        }
        b.truncate(size.max(1));
        b
    }

    /// One seeded operation: a put (new key or overwrite, now and then a multipart-sized
    /// one), a delete marker or a tag change.
    fn op(&mut self, rng: &mut Rng) -> VersionRecord {
        self.counter += 1;
        let version_id = format!("v{:08}", self.counter);
        let live: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, ev)| matches!(ev.last(), Some(Event::Put { .. })))
            .map(|(k, _)| k.clone())
            .collect();
        let roll = rng.below(100);
        if roll < 15 && !live.is_empty() {
            let key = live[rng.below(live.len() as u64) as usize].clone();
            self.keys.get_mut(&key).unwrap().push(Event::Marker);
            return VersionRecord {
                bucket: BUCKET.into(),
                key,
                version_id,
                operation: EventKind::DeleteMarker,
                commit_time_ms: now_ms(),
                ..VersionRecord::default()
            };
        }
        if roll < 30 && !live.is_empty() {
            let key = live[rng.below(live.len() as u64) as usize].clone();
            let tags = vec![("round".to_owned(), rng.below(1000).to_string())];
            let Some(Event::Put { version_id: of, tags: t, .. }) =
                self.keys.get_mut(&key).unwrap().last_mut()
            else {
                unreachable!("a live key ends in a put")
            };
            t.clone_from(&tags);
            let of = of.clone();
            let size = 0;
            return VersionRecord {
                bucket: BUCKET.into(),
                key,
                version_id: of,
                operation: EventKind::MetadataUpdate,
                changes: MetadataChanges::TAGS,
                tags,
                size,
                commit_time_ms: now_ms(),
                ..VersionRecord::default()
            };
        }
        let key = if live.is_empty() || rng.below(100) < 30 {
            format!("k/{}", rng.below(400))
        } else {
            live[rng.below(live.len() as u64) as usize].clone()
        };
        let size = if rng.below(100) < 2 && self.multipart < 6 {
            self.multipart += 1;
            MULTIPART + 5 * (1 << 20)
        } else {
            64 + rng.below(4096) as usize
        };
        let body = Self::body(&version_id, &key, size);
        self.store.put(BUCKET, &key, &version_id, &body).unwrap();
        let hash = *blake3::hash(&body).as_bytes();
        let tags = vec![("round".to_owned(), "0".to_owned())];
        self.keys.entry(key.clone()).or_default().push(Event::Put {
            version_id: version_id.clone(),
            hash,
            tags: tags.clone(),
        });
        self.versions.insert(version_id.clone(), (key.clone(), hash));
        VersionRecord {
            bucket: BUCKET.into(),
            key,
            version_id,
            size: size as u64,
            blake3: Some(hash),
            tags,
            commit_time_ms: now_ms(),
            ..VersionRecord::default()
        }
    }

    /// Appends `n` seeded operations, in batches of up to 16.
    fn append(&mut self, rng: &mut Rng, n: usize) {
        let mut left = n;
        while left > 0 {
            let batch: Vec<VersionRecord> =
                (0..left.min(1 + rng.below(16) as usize)).map(|_| self.op(rng)).collect();
            left -= batch.len();
            let encoded: Vec<(String, Vec<u8>)> =
                batch.iter().map(|r| (r.key.clone(), r.to_bytes().unwrap())).collect();
            let refs: Vec<(&str, &str, &[u8])> =
                encoded.iter().map(|(k, b)| (BUCKET, k.as_str(), b.as_slice())).collect();
            self.writer.as_ref().unwrap().append_batch(&refs).unwrap();
        }
    }
}

/// The running replicator.
struct Replicator {
    child: Child,
    data: PathBuf,
    config: PathBuf,
    listen: String,
}

impl Replicator {
    fn start(data: &Path, config: &Path, listen: &str) -> Self {
        let level = std::env::var("S3REPL_HARNESS_LOG").unwrap_or_else(|_| "info".into());
        let (child, _) = common::spawn_run(
            &["--config", config.to_str().unwrap()],
            &[("RUST_LOG", &level)],
            &data.join("run.log"),
        );
        Replicator {
            child,
            data: data.to_owned(),
            config: config.to_owned(),
            listen: listen.to_owned(),
        }
    }

    /// Starts it again (after a kill or a clean stop).
    fn restart(&mut self) {
        *self = Replicator::start(&self.data, &self.config, &self.listen);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop_cleanly(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "exit {exit:?}; log:\n{}", log_tail(&self.data));
    }

    fn metrics(&self) -> Option<String> {
        let mut s = std::net::TcpStream::connect(&self.listen).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Waits until the saved checkpoint has passed `next` on every partition and the failed
    /// queue is empty.
    fn wait_caught_up(&self, next: &[u64]) {
        let deadline = Instant::now() + Duration::from_mins(3);
        loop {
            if let Some(text) = self.metrics() {
                let cp: Vec<u64> = (0..next.len())
                    .map(|p| {
                        let name = format!("s3repl_checkpoint_next_seq{{partition=\"{p}\"}} ");
                        text.lines()
                            .find_map(|l| l.strip_prefix(&name))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0)
                    })
                    .collect();
                let queued = text
                    .lines()
                    .find_map(|l| l.strip_prefix("s3repl_failed_queue_operations "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1);
                if cp.iter().zip(next).all(|(c, n)| c >= n) && queued == 0 {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "not caught up: checkpoint {cp:?}, log {next:?}, {queued} queued; log:\n{}",
                    log_tail(&self.data)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("run.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The durable mark of `partition` (the log's `log.durable`, frozen format: a 16-byte header,
/// then 16 bytes per partition starting with the mark).
fn durable_mark(log: &Path, partition: u32) -> u64 {
    let bytes = std::fs::read(log.join("log.durable")).unwrap();
    let at = 16 + 16 * partition as usize;
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// A frame as the log writes it: CRC32C of (length, sequence number, payload), then those.
fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut covered = (payload.len() as u32).to_le_bytes().to_vec();
    covered.extend_from_slice(&seq.to_le_bytes());
    covered.extend_from_slice(payload);
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &covered) as u32;
    let mut f = crc.to_le_bytes().to_vec();
    f.extend_from_slice(&covered);
    f
}

/// The last segment of a partition and its length.
fn last_segment(log: &Path, partition: u32) -> (PathBuf, u64) {
    let dir = log.join(format!("p{partition:05}"));
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let last = segs.pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    (last, len)
}

/// A torn tail: records written past the durable mark of one partition (an append whose fsync
/// never came), seen by nobody that honours the mark; then the replicator is killed and a
/// power loss drops them, leaving half a frame; the writer reopens and gives their numbers
/// to new records. Returns the keys of the dropped versions, which no destination may hold.
fn torn_tail(world: &mut World, rng: &mut Rng, replicator: &mut Replicator) -> Vec<String> {
    drop(world.writer.take());
    let log = world.data.join("log");
    let partition = rng.below(u64::from(PARTITIONS)) as u32;
    let mark = durable_mark(&log, partition);
    let (seg, len) = last_segment(&log, partition);
    let mut unsynced = Vec::new();
    let mut lost = Vec::new();
    for i in 0..5u64 {
        world.counter += 1;
        let version_id = format!("torn{:08}", world.counter);
        let key = format!("torn/{version_id}");
        let body = World::body(&version_id, &key, 100);
        world.store.put(BUCKET, &key, &version_id, &body).unwrap();
        let rec = VersionRecord {
            bucket: BUCKET.into(),
            key: key.clone(),
            version_id,
            size: body.len() as u64,
            blake3: Some(*blake3::hash(&body).as_bytes()),
            commit_time_ms: now_ms(),
            ..VersionRecord::default()
        };
        unsynced.extend(frame(mark + i, &rec.to_bytes().unwrap()));
        lost.push(key);
    }
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &unsynced, len).unwrap();
    // Time for a replicator that ignored the mark to take them.
    std::thread::sleep(Duration::from_millis(600));
    replicator.kill();
    // The power loss: the unsynced bytes are gone, but for half a frame of garbage.
    f.set_len(len).unwrap();
    let garbage: Vec<u8> = (0..(FRAME_HEADER_LEN + 20)).map(|i| (i * 37 % 251) as u8).collect();
    std::os::unix::fs::FileExt::write_all_at(&f, &garbage, len).unwrap();
    drop(f);
    world.open_writer();
    lost
}

/// One version listed by `ListObjectVersions`.
#[derive(Debug, Clone)]
struct Listed {
    key: String,
    version_id: String,
    marker: bool,
}

fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + len])
}

/// A GET signed here (curl's own signing does not sort a query of several parameters as the
/// server does): (status, body).
fn signed_get(server: &SeaweedFs, path: &str, query: &str) -> (u16, String) {
    use s3repl::sigv4::{Request, amz_date, authorization, sha256_hex};
    let host = server.endpoint().trim_start_matches("http://").to_owned();
    let date = amz_date(
        i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        )
        .unwrap(),
    );
    let payload = sha256_hex(b"");
    let headers = vec![
        ("host".to_owned(), host),
        ("x-amz-content-sha256".to_owned(), payload.clone()),
        ("x-amz-date".to_owned(), date.clone()),
    ];
    let req = Request { method: "GET", raw_path: path, raw_query: query, headers: &headers };
    let auth = authorization(&req, ACCESS_KEY, SECRET_KEY, &date, "us-east-1", &payload);
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(["-H", &format!("x-amz-content-sha256: {payload}")])
        .args(["-H", &format!("x-amz-date: {date}")])
        .args(["-H", &format!("Authorization: {auth}")])
        .arg(format!("{}{path}?{query}", server.endpoint()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

/// Every version and delete marker of the bucket, each key's newest first.
fn list_versions(server: &SeaweedFs) -> Vec<Listed> {
    let mut out = Vec::new();
    let mut query = String::from("max-keys=1000&versions=");
    loop {
        let (code, body) = signed_get(server, &format!("/{S3_BUCKET}"), &query);
        assert_eq!(code, 200, "{body}");
        // Versions and delete markers interleave, newest first per key: read them in order.
        let mut rest = body.as_str();
        loop {
            let version = rest.find("<Version>").map(|i| (i, "Version", false));
            let marker = rest.find("<DeleteMarker>").map(|i| (i, "DeleteMarker", true));
            let Some((at, tag, marker)) =
                [version, marker].into_iter().flatten().min_by_key(|x| x.0)
            else {
                break;
            };
            let entry = &rest[at + tag.len() + 2..];
            let end = entry.find(&format!("</{tag}>")).unwrap();
            out.push(Listed {
                key: element(&entry[..end], "Key").unwrap().to_owned(),
                version_id: element(&entry[..end], "VersionId").unwrap().to_owned(),
                marker,
            });
            rest = &entry[end..];
        }
        if element(&body, "IsTruncated") != Some("true") {
            break;
        }
        let enc = |v: &str| s3repl::sigv4::uri_encode(v.as_bytes(), false);
        query = format!(
            "key-marker={}&max-keys=1000&version-id-marker={}&versions=",
            enc(element(&body, "NextKeyMarker").unwrap_or("")),
            enc(element(&body, "NextVersionIdMarker").unwrap_or(""))
        );
    }
    out
}

#[test]
fn crashes_clean_restarts_and_torn_tails_lose_nothing_and_let_nothing_in() {
    let seed = env_or(
        "S3REPL_HARNESS_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
            | 1,
    );
    let (kills, cleans, torns) = (
        env_or("S3REPL_HARNESS_KILLS", 4),
        env_or("S3REPL_HARNESS_CLEAN", 2),
        env_or("S3REPL_HARNESS_TORN", 1),
    );
    let ops = env_or("S3REPL_HARNESS_OPS", 150) as usize;
    eprintln!(
        "crash harness: seed {seed} (S3REPL_HARNESS_SEED={seed} replays it), {kills} SIGKILLs, {cleans} clean restarts with a backlog, {torns} torn tails, {ops} operations per phase"
    );
    let mut rng = Rng(seed);

    let server = SeaweedFs::start("harness", &[S3_BUCKET]).unwrap();
    server.enable_versioning(S3_BUCKET).unwrap();
    let data = std::env::temp_dir().join(format!("s3repl-harness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(data.join("replication")).unwrap();
    let local = data.join("local-dst");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let config = data.join("s3repl.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
[log]
partitions = {PARTITIONS}
[[destinations]]
arn = "arn:aws:s3:::{S3_BUCKET}"
kind = "s3"
endpoint = "{endpoint}"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
allow_http = true
[[destinations]]
arn = "arn:aws:s3:::local-dst"
kind = "local"
root = {local:?}
[limits]
multipart_threshold = "6MiB"
part_size = "5MiB"
[admin]
listen = "{listen}"
credentials = [{{ access_key_id = "harness", secret_access_key = "harness-secret" }}]
"#,
            endpoint = server.endpoint()
        ),
    )
    .unwrap();
    std::fs::write(
        data.join(format!("replication/{BUCKET}.xml")),
        format!(
            r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>to-s3</ID><Priority>2</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::{S3_BUCKET}</Bucket></Destination></Rule><Rule><ID>to-local</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::local-dst</Bucket></Destination></Rule></ReplicationConfiguration>"#
        ),
    )
    .unwrap();

    let mut world = World {
        data: data.clone(),
        writer: None,
        store: LocalVersionStore::new(data.join("source")).durable(true),
        keys: BTreeMap::new(),
        versions: HashMap::new(),
        counter: 0,
        multipart: 0,
    };
    let mut replicator = Replicator::start(&data, &config, &listen);
    world.open_writer();
    world.append(&mut rng, ops);

    let mut schedule: Vec<char> = std::iter::repeat_n('k', kills as usize)
        .chain(std::iter::repeat_n('c', cleans as usize))
        .chain(std::iter::repeat_n('t', torns as usize))
        .collect();
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut lost_keys = Vec::new();
    let started = Instant::now();
    for event in schedule {
        match event {
            'k' => {
                // A SIGKILL at a random moment while the server appends.
                let w = Arc::new(Mutex::new(std::mem::replace(&mut world, placeholder(&data))));
                let mut sub = Rng(rng.next() | 1);
                let appender = {
                    let w = w.clone();
                    std::thread::spawn(move || w.lock().unwrap().append(&mut sub, ops))
                };
                std::thread::sleep(Duration::from_millis(rng.below(800)));
                replicator.kill();
                appender.join().unwrap();
                world = Arc::try_unwrap(w).ok().unwrap().into_inner().unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                replicator.restart();
            }
            'c' => {
                // A clean stop, a backlog while it is down, a restart.
                replicator.stop_cleanly();
                world.append(&mut rng, ops * 2);
                replicator.restart();
            }
            _ => {
                lost_keys.extend(torn_tail(&mut world, &mut rng, &mut replicator));
                replicator.restart();
            }
        }
        world.append(&mut rng, ops / 2);
    }
    world.append(&mut rng, ops);
    replicator.wait_caught_up(&world.writer.as_ref().unwrap().next_seqs());
    replicator.stop_cleanly();
    // One more start: it clears what the kills left (staging files, open uploads).
    replicator.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let open_uploads = loop {
        let (_, body) = server.curl("GET", &format!("/{S3_BUCKET}?uploads="), "").unwrap();
        let n = body.matches("<Upload>").count();
        if n == 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_millis(500));
    replicator.stop_cleanly();
    let elapsed = started.elapsed();

    // The S3 destination: every source version and marker, once, in log order, intact.
    let listed = list_versions(&server);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dest = s3repl::dest::Destination::s3(
        &format!("arn:aws:s3:::{S3_BUCKET}"),
        &s3repl_tests::seaweed::options(&server.endpoint(), S3_BUCKET),
    )
    .unwrap();
    let by_hash: HashMap<[u8; 32], String> =
        world.versions.iter().map(|(v, (_, h))| (*h, v.clone())).collect();
    let (mut missing, mut extra, mut corrupt, mut out_of_order, mut wrong_tags) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut replica_versions = 0u64;
    let mut by_key: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for l in listed {
        by_key.entry(l.key.clone()).or_default().push(l);
    }
    for (key, entries) in &by_key {
        if !world.keys.contains_key(key) {
            eprintln!("extra: {key} ({} versions) has no source", entries.len());
            extra += entries.len() as u64;
        }
    }
    for (key, events) in &world.keys {
        let listed = by_key.get(key).cloned().unwrap_or_default();
        // Oldest first, each put named by the source version its content is.
        let mut got: Vec<Option<String>> = Vec::new();
        for l in listed.iter().rev() {
            if l.marker {
                got.push(None);
                continue;
            }
            replica_versions += 1;
            let path = object_store::path::Path::parse(key).unwrap();
            let opts = object_store::GetOptions {
                version: Some(l.version_id.clone()),
                ..Default::default()
            };
            let bytes = rt.block_on(async {
                dest.store().get_opts(&path, opts).await.unwrap().bytes().await.unwrap()
            });
            match by_hash.get(blake3::hash(&bytes).as_bytes()) {
                Some(v) if world.versions[v].0 == *key => got.push(Some(v.clone())),
                _ => {
                    eprintln!(
                        "corrupt: {key} version {} matches no source version of it",
                        l.version_id
                    );
                    corrupt += 1;
                }
            }
        }
        let want: Vec<Option<String>> = events
            .iter()
            .map(|e| match e {
                Event::Put { version_id, .. } => Some(version_id.clone()),
                Event::Marker => None,
            })
            .collect();
        if got != want {
            let have = |v: &Option<String>| got.iter().filter(|g| *g == v).count();
            let need = |v: &Option<String>| want.iter().filter(|w| *w == v).count();
            let mut distinct: Vec<&Option<String>> = want.iter().chain(got.iter()).collect();
            distinct.sort();
            distinct.dedup();
            let (mut m, mut x) = (0, 0);
            for v in distinct {
                m += need(v).saturating_sub(have(v));
                x += have(v).saturating_sub(need(v));
            }
            missing += m as u64;
            extra += x as u64;
            if m == 0 && x == 0 {
                out_of_order += 1;
            }
            eprintln!("{key}: want {want:?}, got {got:?}");
        }
        // The current version's tags are its last tag set.
        if let Some(Event::Put { tags, .. }) = events.last()
            && let Some(current) = listed.first().filter(|l| !l.marker)
        {
            let (code, body) = server
                .curl(
                    "GET",
                    &format!("/{S3_BUCKET}/{key}?tagging=&versionId={}", current.version_id),
                    "",
                )
                .unwrap();
            let ok = code == 200
                && tags
                    .iter()
                    .all(|(k, v)| body.contains(&format!("<Key>{k}</Key><Value>{v}</Value>")));
            if !ok {
                eprintln!("tags: {key} wants {tags:?}: {code} {body}");
                wrong_tags += 1;
            }
        }
    }
    // Versions of the torn tail must be nowhere.
    let leaked =
        lost_keys.iter().filter(|k| by_key.contains_key(*k) || local.join(k).exists()).count();

    // The local destination: each key's current state (bytes only).
    let (mut local_wrong, mut staging) = (0u64, 0u64);
    for (key, events) in &world.keys {
        let path = local.join(key);
        let ok = match events.last() {
            Some(Event::Put { hash, .. }) => {
                std::fs::read(&path).is_ok_and(|b| blake3::hash(&b).as_bytes() == hash)
            }
            _ => !path.exists(),
        };
        if !ok {
            eprintln!("local: {key} is not its last version");
            local_wrong += 1;
        }
    }
    let mut dirs = vec![local.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split_once('#'))
                .is_some_and(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
            {
                staging += 1;
            }
        }
    }
    let source_versions = world.keys.values().map(Vec::len).sum::<usize>();
    // What the kills left for the restarts to clear, as the replicator reported it.
    let run_log = std::fs::read_to_string(data.join("run.log")).unwrap_or_default();
    let count = |what: &str| run_log.lines().filter(|l| l.contains(what)).count();
    let recoveries = count("did not shut down cleanly");
    let swept: usize = run_log
        .lines()
        .filter(|l| l.contains("Removed staging files"))
        .filter_map(|l| l.split("files=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    let aborted = count("Aborted a multipart upload");
    eprintln!(
        "crash harness (seed {seed}): {kills} SIGKILLs, {cleans} clean restarts with a backlog, {torns} torn tails ({} records dropped) in {:.1} s; {} keys, {source_versions} versions and markers, {replica_versions} replica versions on SeaweedFS; missing {missing}, extra {extra}, corrupt {corrupt}, out of order {out_of_order}, wrong tags {wrong_tags}, torn versions leaked {leaked}, local wrong {local_wrong}, staging files {staging}, open uploads {open_uploads}",
        lost_keys.len(),
        elapsed.as_secs_f64(),
        world.keys.len(),
    );
    eprintln!(
        "crash harness (seed {seed}): {recoveries} starts after an unclean stop, {swept} staging files and {aborted} multipart uploads left by kills cleared at start"
    );
    assert_eq!(
        (
            missing,
            extra,
            corrupt,
            out_of_order,
            wrong_tags,
            leaked,
            local_wrong,
            staging,
            open_uploads
        ),
        (0, 0, 0, 0, 0, 0, 0, 0, 0),
        "seed {seed}; log:\n{}",
        log_tail(&data)
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// A stand-in while the real world is lent to an appending thread.
fn placeholder(data: &Path) -> World {
    World {
        data: data.to_owned(),
        writer: None,
        store: LocalVersionStore::new(data.join("source")).durable(false),
        keys: BTreeMap::new(),
        versions: HashMap::new(),
        counter: 0,
        multipart: 0,
    }
}
