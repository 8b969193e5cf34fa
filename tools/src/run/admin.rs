//! The S3-compatible admin endpoint: `PUT`/`GET`/`DELETE /{bucket}?replication` with S3 XML
//! bodies and S3 XML errors, authenticated with `SigV4`; `GET /metrics` (Prometheus text,
//! unauthenticated, like most exporters: it carries counts and ARNs only);
//! `GET /-/status/{bucket}` (JSON, authenticated); `GET /-/health`.
//!
//! A configuration change is validated, persisted (atomic file write) and installed in the
//! running engine before the answer; a refused one changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use s3repl::config::{
    BucketContext, DestinationBucket, ReplicationConfiguration, SourceBucket, ValidationError,
    Variant, Versioning,
};
use s3repl::pipeline::{
    DestinationHealth, DestinationState, EngineControl, ReplicationStatus, StatusSink, StatusUpdate,
};
use serde_json::json;

use s3repl::sigv4::{self, AuthError, Credentials};

/// Largest request body read (S3's limit for `PutBucketReplication` bodies is 2 MiB; the
/// configuration codec enforces it with `MaxMessageLengthExceeded`).
const MAX_BODY: usize = (2 << 20) + 1;

/// The default budget of request-body bytes held at once across all connections.
pub(crate) const BODY_BUDGET: usize = 16 << 20;

/// The `Content-Length` a request declares: `None` for a body of unknown length (chunked).
fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    if headers.contains_key(hyper::header::TRANSFER_ENCODING) {
        return None;
    }
    match headers.get(hyper::header::CONTENT_LENGTH) {
        None => Some(0),
        Some(v) => v.to_str().ok().and_then(|v| v.trim().parse().ok()),
    }
}

/// `reply`, closing the connection when the request's body was not read (so it is not taken
/// for the next request, nor read at all).
fn close_if(unread: bool, mut reply: Reply) -> Reply {
    if unread {
        reply
            .headers_mut()
            .insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    }
    reply
}

/// Queued operations listed per bucket by the status route (the oldest; the total is given).
const QUEUE_LISTED: usize = 100;

use super::intake::now_ms;

/// One destination's health fields for the status route.
fn health_json(h: &DestinationHealth, now: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut o = serde_json::Map::new();
    o.insert("state".into(), json!(h.state.as_str()));
    o.insert("down_since_ms".into(), json!(h.state.down_since_ms()));
    o.insert("consecutive_failures".into(), json!(h.consecutive_failures));
    o.insert("last_error".into(), json!(h.last_error));
    o.insert("parked_ops".into(), json!(h.parked_ops));
    o.insert("parked_bytes".into(), json!(h.parked_bytes));
    o.insert("queued_failed_ops".into(), json!(h.failed_ops));
    o.insert(
        "oldest_waiting_age_s".into(),
        json!(h.oldest_waiting_commit_ms.map(|c| now.saturating_sub(c) / 1000)),
    );
    o
}

/// Reads one destination's gauge at a time (ms since the epoch).
type Gauge = fn(&DestinationHealth, u64) -> u64;

/// The allocator's heap in use and free (glibc's `mallinfo2`; free memory may or may not have
/// been given back to the system): whether memory kept after a burst (a drained outage) is
/// live data or freed heap the allocator holds. Nothing elsewhere than glibc.
fn heap_gauges(text: &mut String) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallinfo2` takes no arguments and only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        let _ = write!(
            text,
            "# HELP s3repl_heap_in_use_bytes Heap bytes allocated and not freed, mmapped blocks included (glibc mallinfo2 uordblks + hblkhd).\n# TYPE s3repl_heap_in_use_bytes gauge\ns3repl_heap_in_use_bytes {}\n# HELP s3repl_heap_free_bytes Heap bytes freed and kept by the allocator, resident or given back (glibc mallinfo2 fordblks).\n# TYPE s3repl_heap_free_bytes gauge\ns3repl_heap_free_bytes {}\n",
            m.uordblks.saturating_add(m.hblkhd),
            m.fordblks
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = text;
}

/// Per destination: up or down, for how long, and what waits for it (Prometheus gauges).
fn destination_gauges(text: &mut String, health: &[DestinationHealth]) {
    let now = now_ms();
    let series: [(&str, &str, Gauge); 6] = [
        (
            "up",
            "1 while the destination takes work, 0 while it is down (its work parked).",
            |h, _| u64::from(matches!(h.state, DestinationState::Up)),
        ),
        ("down_seconds", "How long the destination has been down (0 while up).", |h, now| {
            h.state.down_since_ms().map_or(0, |since| now.saturating_sub(since) / 1000)
        }),
        ("parked_operations", "Operations parked until the destination answers.", |h, _| {
            h.parked_ops
        }),
        ("parked_bytes", "Object bytes of the parked operations.", |h, _| h.parked_bytes),
        ("queued_failed_operations", "FAILED operations queued for a background retry.", |h, _| {
            h.failed_ops
        }),
        (
            "oldest_waiting_seconds",
            "Age (since its commit) of the oldest version parked or queued for the destination.",
            |h, now| h.oldest_waiting_commit_ms.map_or(0, |c| now.saturating_sub(c) / 1000),
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(
            text,
            "# HELP s3repl_destination_{name} {help}\n# TYPE s3repl_destination_{name} gauge"
        );
        for h in health {
            let label = h.destination.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                text,
                "s3repl_destination_{name}{{destination=\"{label}\"}} {}",
                value(h, now)
            );
        }
    }
}

/// Recent failures kept per bucket for the status route.
const RECENT_FAILURES: usize = 100;

/// Per-bucket replication outcome counters, fed by the engine's status updates.
#[derive(Debug, Default)]
pub(crate) struct RunStatus {
    buckets: Mutex<HashMap<String, BucketStatus>>,
}

#[derive(Debug, Default)]
struct BucketStatus {
    pending: u64,
    completed: u64,
    failed: u64,
    recent_failures: VecDeque<serde_json::Value>,
}

impl StatusSink for RunStatus {
    fn report(&self, u: &StatusUpdate<'_>) {
        if let ReplicationStatus::Failed { reason, detail } = u.status {
            tracing::warn!(bucket = %u.bucket, key = %u.key, version_id = %u.version_id, destination = %u.destination, reason = %reason, detail = %detail, "Replication FAILED.");
        }
        let mut all = self.buckets.lock();
        if !all.contains_key(u.bucket) {
            all.insert(u.bucket.to_owned(), BucketStatus::default());
        }
        let Some(b) = all.get_mut(u.bucket) else { return };
        match u.status {
            ReplicationStatus::Pending => b.pending += 1,
            ReplicationStatus::Completed => {
                b.pending = b.pending.saturating_sub(1);
                b.completed += 1;
                // A failure listed earlier that a retry has since replicated is no longer one.
                if !b.recent_failures.is_empty() {
                    b.recent_failures.retain(|f| {
                        f["key"] != u.key
                            || f["version_id"] != u.version_id
                            || f["destination"] != u.destination
                    });
                }
            }
            ReplicationStatus::Failed { reason, detail } => {
                b.pending = b.pending.saturating_sub(1);
                b.failed += 1;
                if b.recent_failures.len() == RECENT_FAILURES {
                    b.recent_failures.pop_front();
                }
                b.recent_failures.push_back(json!({
                    "key": u.key, "version_id": u.version_id,
                    "destination": u.destination, "reason": reason.as_str(), "detail": detail,
                }));
            }
        }
    }
}

impl RunStatus {
    fn json(&self, bucket: &str) -> serde_json::Value {
        let all = self.buckets.lock();
        all.get(bucket).map_or_else(
            || json!({"pending": 0, "completed": 0, "failed": 0, "recent_failures": []}),
            |b| {
                json!({
                    "pending": b.pending, "completed": b.completed, "failed": b.failed,
                    "recent_failures": b.recent_failures,
                })
            },
        )
    }
}

/// Everything a request handler needs.
pub(crate) struct Admin {
    /// The engine, which persists and installs configurations (`EngineBuilder::config_dir`).
    pub(crate) engine: EngineControl,
    pub(crate) credentials: Credentials,
    /// Buckets accepted as sources; `None` accepts any valid name.
    pub(crate) sources: Option<HashSet<String>>,
    /// Known destination buckets for validation; `None` skips those checks.
    pub(crate) destinations: Option<BTreeMap<String, DestinationBucket>>,
    pub(crate) status: Arc<RunStatus>,
    /// Bytes of request bodies held at once, in KiB, across every connection.
    pub(crate) body_budget: tokio::sync::Semaphore,
    /// How long a body may take to arrive.
    pub(crate) body_timeout: std::time::Duration,
    /// Bounds the log lines refused requests write.
    pub(crate) refusals: super::listener::Throttle,
    pub(crate) request_ids: AtomicU64,
    /// The account that owns the source buckets (`[admin] account`): a request whose
    /// `x-amz-expected-bucket-owner` names another is refused.
    pub(crate) account: Option<String>,
    /// Intake of bucket events (`[intake]`): from the webhook when `webhook`, at
    /// `POST /-/events`, and from the event topic.
    pub(crate) intake: Option<Arc<super::intake::Intake>>,
    /// Whether `POST /-/events` takes deliveries (`[intake] webhook`).
    pub(crate) webhook: bool,
    /// The event topic's consumer (`[intake] kafka_topic`), stopped with the admin.
    pub(crate) event_topic: Option<super::intake_kafka::EventTopic>,
    /// Background backfills by source bucket (with intake: a configuration with
    /// `ExistingObjectReplication` Enabled starts one).
    pub(crate) backfills: Mutex<HashMap<String, Arc<Backfill>>>,
    /// Limits set with `PUT /-/limits`, kept for the next start.
    pub(crate) limit_overrides: super::overrides::LimitOverrides,
}

/// One background backfill: its counts and how it stands.
#[derive(Debug, Default)]
pub(crate) struct Backfill {
    pub(crate) progress: crate::backfill::Progress,
    /// `running`, `complete`, or `failed: …`.
    pub(crate) state: Mutex<String>,
}

impl Admin {
    /// Starts backfilling `bucket` under `config` in the background, below live traffic (a few
    /// reads at a time), if intake is on, a rule has `ExistingObjectReplication` Enabled and no
    /// backfill of the bucket runs. `restart`: from the start (a new configuration), not from
    /// the saved position.
    pub(crate) fn start_backfill(
        &self,
        bucket: &str,
        config: &ReplicationConfiguration,
        restart: bool,
    ) {
        let Some(intake) = self.intake.clone() else { return };
        let existing = config.rules.iter().any(|r| {
            r.is_enabled() && r.existing_object_replication == Some(s3repl::config::Status::Enabled)
        });
        if !existing || intake.reader(bucket).is_none() {
            return;
        }
        let Ok(rules) = s3repl::rules::CompiledRules::compile(config) else { return };
        let state = Arc::new(Backfill::default());
        {
            let mut running = self.backfills.lock();
            if running.get(bucket).is_some_and(|b| b.state.lock().as_str() == "running") {
                return;
            }
            *state.state.lock() = "running".into();
            running.insert(bucket.to_owned(), state.clone());
        }
        let job = crate::backfill::Job {
            bucket: bucket.to_owned(),
            prefix: String::new(),
            all: false,
            restart,
            concurrency: 8,
        };
        tracing::info!(bucket = %bucket, "Backfilling existing objects in the background.");
        tokio::spawn(async move {
            let outcome =
                crate::backfill::run_job(&intake, &rules, &job, &state.progress, |_| {}).await;
            let done = match outcome {
                Ok(()) => "complete".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
            tracing::info!(bucket = %job.bucket, state = %done, counts = %state.progress.json(), "Backfill ended.");
            *state.state.lock() = done;
        });
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("sources", &self.sources).finish_non_exhaustive()
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>, request_id: &str) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = request_id.parse() {
        h.insert("x-amz-request-id", v);
    }
    if let Ok(v) = host_id().parse() {
        h.insert("x-amz-id-2", v);
    }
    r
}

/// The `HostId` of this process's answers (`x-amz-id-2`, and in error bodies): opaque, as S3's
/// is, and the same for every answer of one process (which replicator answered).
fn host_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{}:{nanos}", std::process::id());
        blake3::hash(seed.as_bytes()).to_hex().chars().take(32).collect()
    })
}

/// The error codes whose S3 answers name the bucket (`BucketName`).
const NAMES_BUCKET: [&str; 3] =
    ["NoSuchBucket", "ReplicationConfigurationNotFoundError", "InvalidBucketName"];

fn xml_escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// An S3 XML error document: `Code`, `Message`, `Resource`, `RequestId`, `HostId`, and
/// `BucketName` where S3 names it (the bucket of `resource`, a path).
fn s3_error(status: u16, code: &str, message: &str, resource: &str, request_id: &str) -> Reply {
    let bucket = resource.trim_start_matches('/').split('/').next().unwrap_or_default();
    let bucket = if NAMES_BUCKET.contains(&code) && !bucket.is_empty() {
        format!("<BucketName>{}</BucketName>", xml_escape(bucket))
    } else {
        String::new()
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>{bucket}<Resource>{}</Resource><RequestId>{}</RequestId><HostId>{}</HostId></Error>",
        xml_escape(code),
        xml_escape(message),
        xml_escape(resource),
        request_id,
        host_id(),
    );
    reply(status, "application/xml", body, request_id)
}

/// S3's `InternalError` (details go to the log, not to the client).
fn internal_error(resource: &str, request_id: &str) -> Reply {
    s3_error(
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
        resource,
        request_id,
    )
}

fn validation_error(e: &ValidationError, resource: &str, request_id: &str) -> Reply {
    s3_error(e.code.http_status(), e.code.as_str(), &e.message, resource, request_id)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Admin {
    /// Handles one request.
    pub(crate) async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Result<Reply, Infallible>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = format!("{:016X}", self.request_ids.fetch_add(1, Ordering::Relaxed));
        let (parts, body) = req.into_parts();
        let raw_path = parts.uri.path().to_owned();
        let raw_query = parts.uri.query().unwrap_or("").to_owned();
        let method = parts.method.as_str().to_owned();
        if method == "GET" && raw_path == "/metrics" {
            let mut text = self.engine.metrics().map(|m| m.render_prometheus()).unwrap_or_default();
            let _ = write!(
                text,
                "# HELP s3repl_halts Parts of the engine stopped for good (damaged log partition, failed log or destination sync).\n# TYPE s3repl_halts gauge\ns3repl_halts {}\n# HELP s3repl_checkpoint_failing_seconds For how long saving the checkpoint or the replay horizon has been failing and retried (0 while they are saved).\n# TYPE s3repl_checkpoint_failing_seconds gauge\ns3repl_checkpoint_failing_seconds {}\n",
                self.engine.halts().len(),
                self.engine
                    .checkpoint_trouble()
                    .map_or(0, |t| now_ms().saturating_sub(t.since_ms) / 1000)
            );
            // Durable: what the saved checkpoint holds and the failed-operations journal, which
            // a restart keeps (the counters above start again from zero).
            let _ = writeln!(
                text,
                "# HELP s3repl_checkpoint_next_seq Per log partition, the saved checkpoint: every record below it is finished (replicated, or FAILED and in the failed-operations queue).\n# TYPE s3repl_checkpoint_next_seq gauge"
            );
            for (p, next) in self.engine.progress().iter().enumerate() {
                let _ = writeln!(text, "s3repl_checkpoint_next_seq{{partition=\"{p}\"}} {next}");
            }
            let _ = write!(
                text,
                "# HELP s3repl_failed_queue_operations Operations in the durable failed-operations queue (retried in the background).\n# TYPE s3repl_failed_queue_operations gauge\ns3repl_failed_queue_operations {}\n",
                self.engine.failed_queue_len()
            );
            destination_gauges(&mut text, &self.engine.destinations());
            heap_gauges(&mut text);
            if let Some(topic) = &self.event_topic {
                let c = &topic.counters;
                counters(
                    &mut text,
                    &[
                        (
                            "topic_taken",
                            "Event topic messages taken (their records durable).",
                            &c.taken,
                        ),
                        (
                            "topic_passed_over",
                            "Event topic messages refused as malformed and passed over.",
                            &c.passed_over,
                        ),
                    ],
                );
            }
            if let Some(intake) = &self.intake {
                let c = &intake.counters;
                counters(
                    &mut text,
                    &[
                        ("deliveries", "Event deliveries received.", &c.deliveries),
                        (
                            "refused",
                            "Event deliveries refused (nothing of them appended).",
                            &c.refused,
                        ),
                        ("appended", "Records appended to the log from events.", &c.appended),
                        ("duplicates", "Events already appended (redeliveries).", &c.duplicates),
                        (
                            "skipped",
                            "Events with nothing to replicate, or for versions gone since.",
                            &c.skipped,
                        ),
                        (
                            "out_of_order",
                            "Versions whose event came after a later version's of the same key.",
                            &c.out_of_order,
                        ),
                    ],
                );
            }
            return Ok(reply(200, "text/plain; version=0.0.4", text, &request_id));
        }
        if method == "GET" && raw_path == "/-/health" {
            // Unhealthy once part of the engine has stopped for good (a damaged log partition,
            // checkpointing): it makes no progress there until repaired and restarted.
            // Degraded (still 200: the rest replicates) while a destination is down or saving
            // checkpoints fails and is retried (a full disk).
            let halts = self.engine.halts();
            let down: Vec<String> = self
                .engine
                .destinations()
                .iter()
                .filter_map(|d| {
                    let since = d.state.down_since_ms()?;
                    Some(format!(
                        "destination {} down for {} s, {} operations parked: {}",
                        d.destination,
                        now_ms().saturating_sub(since) / 1000,
                        d.parked_ops,
                        d.last_error.as_deref().unwrap_or("no answer")
                    ))
                })
                .collect();
            let trouble = self.engine.checkpoint_trouble().map(|t| {
                format!(
                    "progress not saved for {} s ({} attempts, retried; a restart would replay from the last saved checkpoint): {}",
                    now_ms().saturating_sub(t.since_ms) / 1000,
                    t.attempts,
                    t.error
                )
            });
            let down: Vec<String> = trouble.into_iter().chain(down).collect();
            let (code, first) = match (halts.is_empty(), down.is_empty()) {
                (true, true) => return Ok(reply(200, "text/plain", "ok\n", &request_id)),
                (true, false) => (200, "degraded"),
                (false, _) => (503, "halted"),
            };
            let text: String = std::iter::once(first.to_owned())
                .chain(halts.iter().map(ToString::to_string))
                .chain(down)
                .map(|l| l + "\n")
                .collect();
            return Ok(reply(code, "text/plain", text, &request_id));
        }
        // Event senders that cannot sign (MinIO's webhook target) present a bearer token.
        if let Some(intake) = self.intake.as_ref().filter(|_| self.webhook)
            && raw_path == EVENTS_PATH
            && let Some(token) = parts
                .headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        {
            let declared = declared_length(&parts.headers);
            let matches =
                intake.token.as_deref().is_some_and(|t| constant_time_eq(t, token.trim()));
            if !matches || method != "POST" {
                if let Some(held) = self.refusals.allow() {
                    tracing::info!(path = %raw_path, similar_held_back = held, "Event delivery with a wrong token or method refused.");
                }
                return Ok(close_if(
                    declared != Some(0),
                    s3_error(403, "AccessDenied", "Access Denied", &raw_path, &request_id),
                ));
            }
            let body = match self.read_body(body, declared, &raw_path, &request_id).await {
                Ok(b) => b,
                Err(reply) => return Ok(reply),
            };
            return Ok(deliver(intake, &body, &request_id).await);
        }
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect();
        // The signature covers the head (`x-amz-content-sha256` with it): checked before a byte
        // of the body is read, so an unauthenticated client cannot make the process hold one.
        let declared = declared_length(&parts.headers);
        let has_body = declared != Some(0);
        let head = sigv4::Request {
            method: &method,
            raw_path: &raw_path,
            raw_query: &raw_query,
            headers: &headers,
        };
        let verified = match self.credentials.verify_head(&head, has_body, now_unix()) {
            Ok(v) => v,
            Err(e) => {
                if let Some(held) = self.refusals.allow() {
                    tracing::info!(method = %method, path = %raw_path, code = e.code(), similar_held_back = held, "Admin request refused.");
                }
                return Ok(close_if(has_body, auth_error(&e, &raw_path, &request_id)));
            }
        };
        let body = match self.read_body(body, declared, &raw_path, &request_id).await {
            Ok(b) => b,
            Err(reply) => return Ok(reply),
        };
        if let Err(e) = verified.check_body(&body) {
            return Ok(auth_error(&e, &raw_path, &request_id));
        }
        if let Some(bucket) = raw_path.strip_prefix("/-/status/") {
            return Ok(self.status_json(bucket, &request_id));
        }
        if raw_path == EVENTS_PATH
            && let Some(intake) = self.intake.as_ref().filter(|_| self.webhook)
        {
            if method != "POST" {
                return Ok(s3_error(
                    405,
                    "MethodNotAllowed",
                    "Events are POSTed.",
                    &raw_path,
                    &request_id,
                ));
            }
            return Ok(deliver(intake, &body, &request_id).await);
        }
        if raw_path == "/-/destinations" && method == "GET" {
            let now = now_ms();
            let list: Vec<serde_json::Value> = self
                .engine
                .destinations()
                .iter()
                .map(|h| {
                    let mut o = health_json(h, now);
                    o.insert("destination".into(), json!(h.destination));
                    o.insert("bandwidth_bytes_per_second".into(), json!(h.limits.bytes_per_second));
                    o.insert("max_requests".into(), json!(h.limits.max_requests));
                    serde_json::Value::Object(o)
                })
                .collect();
            let body = json!({ "destinations": list }).to_string();
            return Ok(reply(200, "application/json", body, &request_id));
        }
        if raw_path == "/-/limits" && method == "PUT" {
            return Ok(self.set_limits(&raw_query, &body, &request_id));
        }
        if method == "POST" && raw_path == "/-/retry-failed" {
            let n = self.engine.retry_failed_now();
            tracing::info!(operations = n, "Failed operations re-armed for retry.");
            let body = json!({"rearmed": n}).to_string();
            return Ok(reply(200, "application/json", body, &request_id));
        }
        let bucket = raw_path.trim_start_matches('/');
        let is_replication =
            raw_query.split('&').any(|p| p == "replication" || p.starts_with("replication="));
        if bucket.is_empty() || bucket.contains('/') || !is_replication {
            return Ok(s3_error(
                501,
                "NotImplemented",
                "Only the bucket replication sub-resource is implemented here.",
                &raw_path,
                &request_id,
            ));
        }
        if !s3repl::pipeline::valid_bucket_name(bucket) {
            return Ok(s3_error(
                400,
                "InvalidBucketName",
                "The specified bucket is not valid.",
                &raw_path,
                &request_id,
            ));
        }
        if self.sources.as_ref().is_some_and(|s| !s.contains(bucket)) {
            return Ok(s3_error(
                404,
                "NoSuchBucket",
                "The specified bucket does not exist",
                &raw_path,
                &request_id,
            ));
        }
        // `ExpectedBucketOwner`: a request meant for another account's bucket is refused, as
        // S3 refuses it (403 `AccessDenied`), when the owning account is configured.
        if let (Some(owner), Some((_, expected))) = (
            &self.account,
            headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("x-amz-expected-bucket-owner")),
        ) && expected.trim() != owner
        {
            return Ok(s3_error(403, "AccessDenied", "Access Denied", &raw_path, &request_id));
        }
        if method == "PUT"
            && let Err(e) = super::digest::check(&headers, &verified, &body)
        {
            return Ok(s3_error(e.status, e.code, &e.message, &raw_path, &request_id));
        }
        Ok(match method.as_str() {
            "PUT" => self.put(bucket, &body, &raw_path, &request_id),
            "GET" => self.get(bucket, &raw_path, &request_id),
            "DELETE" => self.delete(bucket, &raw_path, &request_id),
            _ => s3_error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                &raw_path,
                &request_id,
            ),
        })
    }

    /// Reads an authenticated request's body: at most [`MAX_BODY`] bytes, within the shared
    /// byte budget (S3's `SlowDown` when it is spent) and within `body_timeout` (S3's
    /// `RequestTimeout`, for a client that promises more than it sends).
    async fn read_body<B>(
        &self,
        body: B,
        declared: Option<u64>,
        resource: &str,
        request_id: &str,
    ) -> Result<Bytes, Reply>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if declared == Some(0) {
            return Ok(Bytes::new());
        }
        let too_big = || {
            close_if(
                true,
                s3_error(
                    400,
                    "MaxMessageLengthExceeded",
                    "Your request was too big.",
                    resource,
                    request_id,
                ),
            )
        };
        let want = match declared {
            Some(n) if n > MAX_BODY as u64 => return Err(too_big()),
            Some(n) => usize::try_from(n).unwrap_or(MAX_BODY),
            None => MAX_BODY,
        };
        let kib = u32::try_from(want.div_ceil(1024)).unwrap_or(u32::MAX);
        let Ok(_held) = self.body_budget.try_acquire_many(kib) else {
            return Err(close_if(
                true,
                s3_error(503, "SlowDown", "Please reduce your request rate.", resource, request_id),
            ));
        };
        match tokio::time::timeout(self.body_timeout, Limited::new(body, MAX_BODY).collect()).await
        {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(_)) => Err(too_big()),
            Err(_) => Err(close_if(
                true,
                s3_error(
                    400,
                    "RequestTimeout",
                    "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
                    resource,
                    request_id,
                ),
            )),
        }
    }

    fn put(&self, bucket: &str, body: &[u8], resource: &str, request_id: &str) -> Reply {
        let config = match ReplicationConfiguration::from_xml(body, Some(Variant::S3)) {
            Ok(c) => c,
            Err(e) => return validation_error(&e, resource, request_id),
        };
        let ctx = BucketContext {
            account: None,
            source: Some(SourceBucket {
                bucket: bucket.to_owned(),
                versioning: Versioning::Enabled,
                object_lock: false,
            }),
            buckets: self.destinations.clone(),
        };
        if let Err(e) = config.validate(&ctx) {
            return validation_error(&e, resource, request_id);
        }
        // Persisted (with the time since which the bucket has a configuration) and installed
        // by the engine; a failure changes neither.
        if let Err(e) = self.engine.set_config(bucket, &config) {
            return match e {
                s3repl::Error::Config(v) => validation_error(&v, resource, request_id),
                s3repl::Error::ShutDown => s3_error(
                    503,
                    "ServiceUnavailable",
                    "The replicator is shutting down.",
                    resource,
                    request_id,
                ),
                e => {
                    tracing::error!(bucket = %bucket, error = %e, "Installing a replication configuration failed.");
                    internal_error(resource, request_id)
                }
            };
        }
        tracing::info!(bucket = %bucket, rules = config.rules.len(), "Replication configuration installed.");
        self.start_backfill(bucket, &config, true);
        reply(200, "application/xml", Bytes::new(), request_id)
    }

    fn get(&self, bucket: &str, resource: &str, request_id: &str) -> Reply {
        match self.engine.config(bucket) {
            Some(c) => reply(200, "application/xml", c.to_xml(), request_id),
            None => s3_error(
                404,
                "ReplicationConfigurationNotFoundError",
                "The replication configuration was not found",
                resource,
                request_id,
            ),
        }
    }

    fn delete(&self, bucket: &str, resource: &str, request_id: &str) -> Reply {
        match self.engine.remove_config(bucket) {
            Ok(true) => tracing::info!(bucket = %bucket, "Replication configuration deleted."),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(bucket = %bucket, error = %e, "Removing a replication configuration failed.");
                return internal_error(resource, request_id);
            }
        }
        // S3 answers 204 whether or not a configuration existed.
        reply(204, "application/xml", Bytes::new(), request_id)
    }

    /// `PUT /-/limits?destination=ARN` with `{"bandwidth": "20MiB" | null, "max_requests":
    /// 16 | null}`: a destination's limits from now on (absent or null: unlimited), kept in
    /// `DATA_DIR/state/limits.json` for later starts (see [`super::overrides`]).
    fn set_limits(&self, raw_query: &str, body: &[u8], request_id: &str) -> Reply {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            bandwidth: Option<String>,
            max_requests: Option<usize>,
        }
        let resource = "/-/limits";
        let arn = raw_query
            .split('&')
            .find_map(|p| p.strip_prefix("destination="))
            .and_then(|v| super::events::url_decode(v).ok());
        let Some(arn) = arn else {
            return s3_error(
                400,
                "InvalidArgument",
                "Name the destination: ?destination=ARN.",
                resource,
                request_id,
            );
        };
        let parsed =
            serde_json::from_slice::<Body>(body).map_err(|e| e.to_string()).and_then(|b| {
                super::settings::destination_limits(b.bandwidth.as_deref(), b.max_requests)
            });
        let limits = match parsed {
            Ok(l) => l,
            Err(e) => return s3_error(400, "InvalidArgument", &e, resource, request_id),
        };
        if !self.engine.set_destination_limits(&arn, limits) {
            return s3_error(
                404,
                "NoSuchDestination",
                "No such destination is registered.",
                resource,
                request_id,
            );
        }
        // In force now either way; kept for the next start unless the disk refuses.
        let kept = self.limit_overrides.record(&arn, limits);
        if let Err(e) = &kept {
            tracing::warn!(destination = %arn, error = %e, "Destination limits set, but not kept for the next start.");
        }
        let body = json!({
            "destination": arn,
            "bandwidth_bytes_per_second": limits.bytes_per_second,
            "max_requests": limits.max_requests,
            "kept": kept.is_ok(),
        });
        reply(200, "application/json", body.to_string(), request_id)
    }

    fn status_json(&self, bucket: &str, request_id: &str) -> Reply {
        let config = self.engine.config(bucket);
        let destinations: Vec<String> = config
            .as_ref()
            .map(|c| {
                let mut d: Vec<String> =
                    c.rules.iter().map(|r| r.destination.bucket.clone()).collect();
                d.sort();
                d.dedup();
                d
            })
            .unwrap_or_default();
        let metrics = self.engine.metrics().map(|m| m.snapshot());
        let health = self.engine.destinations();
        let now = now_ms();
        let per_destination: Vec<serde_json::Value> = metrics
            .iter()
            .flat_map(|m| m.destinations.iter())
            .filter(|d| destinations.contains(&d.destination))
            .map(|d| {
                let mut j = json!({
                    "destination": d.destination, "pending_ops": d.pending_ops,
                    "pending_bytes": d.pending_bytes, "completed_ops": d.completed_ops,
                    "completed_bytes": d.completed_bytes, "failed_ops": d.failed_ops,
                    "failed_retries": d.failed_retries, "parked_total": d.parked_ops,
                    "missed_threshold_ops": d.missed_threshold_ops,
                    "latency_ms": {"p50": d.latency_ms[0], "p90": d.latency_ms[1], "p99": d.latency_ms[2], "p99_9": d.latency_ms[3], "max": d.latency_ms[4]},
                    "state": "up",
                });
                if let (Some(h), Some(o)) =
                    (health.iter().find(|h| h.destination == d.destination), j.as_object_mut())
                {
                    o.extend(health_json(h, now));
                }
                j
            })
            .collect();
        // The oldest entries only: an outage can park hundreds of thousands.
        let (total, oldest) = self.engine.failed_operations_of(bucket, QUEUE_LISTED);
        let queued: Vec<serde_json::Value> = oldest
            .into_iter()
            .map(|f| {
                json!({
                    "key": f.key, "version_id": f.version_id, "destination": f.destination,
                    "reason": f.reason.as_str(), "detail": f.detail, "attempts": f.attempts,
                    "next_retry_ms": f.next_retry_ms, "parked": f.parked,
                })
            })
            .collect();
        let body = json!({
            "failed_queue_total": total,
            "failed_queue": queued,
            "bucket": bucket,
            "configured": config.is_some(),
            "rules": config.as_ref().map_or(0, |c| c.rules.len()),
            "destinations": destinations,
            // Counted since this process started; `failed_queue` and `/metrics`'s checkpoint
            // gauges are what is durable.
            "operations_since_start": self.status.json(bucket),
            "metrics": per_destination,
            "backfill": self.backfills.lock().get(bucket).map(|b| {
                let mut j = b.progress.json();
                if let Some(o) = j.as_object_mut() {
                    o.insert("state".into(), json!(b.state.lock().clone()));
                }
                j
            }),
        });
        reply(200, "application/json", body.to_string(), request_id)
    }
}

/// Appends intake counters to a Prometheus text (`s3repl_intake_{name}_total`).
fn counters(text: &mut String, all: &[(&str, &str, &AtomicU64)]) {
    for (name, help, v) in all {
        let _ = write!(
            text,
            "# HELP s3repl_intake_{name}_total {help}\n# TYPE s3repl_intake_{name}_total counter\ns3repl_intake_{name}_total {}\n",
            v.load(Ordering::Relaxed)
        );
    }
}

/// Where event senders deliver (`[intake] webhook`).
pub(crate) const EVENTS_PATH: &str = "/-/events";

/// Hands a delivery to intake: 200 with what was appended once it is durable, else the status
/// and reason as JSON (the sender retries on any other status than 200).
async fn deliver(intake: &Arc<super::intake::Intake>, body: &[u8], request_id: &str) -> Reply {
    match intake.deliver(body).await {
        Ok(report) => reply(200, "application/json", report.to_string(), request_id),
        Err(refusal) => {
            tracing::warn!(status = refusal.status, reason = %refusal.reason, "Event delivery refused; nothing of it was appended.");
            let body = json!({"error": refusal.reason}).to_string();
            reply(refusal.status, "application/json", body, request_id)
        }
    }
}

/// Compares a presented secret with the configured one in time independent of where they
/// differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn auth_error(e: &AuthError, resource: &str, request_id: &str) -> Reply {
    s3_error(e.status(), e.code(), &e.message(), resource, request_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use s3repl::pipeline::{FailureReason, OwnedStatusUpdate};

    fn update(key: &str, status: ReplicationStatus) -> OwnedStatusUpdate {
        OwnedStatusUpdate {
            bucket: "b".into(),
            key: key.into(),
            version_id: "v".into(),
            destination: "arn:aws:s3:::d".into(),
            status,
            destination_version_id: None,
        }
    }

    /// A failure a retry later replicated leaves the recent failures; others stay.
    #[test]
    fn recent_failures_forget_what_has_since_replicated() {
        let s = RunStatus::default();
        let failed = || ReplicationStatus::Failed {
            reason: FailureReason::DstUnavailable,
            detail: "refused".into(),
        };
        for k in ["a", "b"] {
            s.report(&update(k, ReplicationStatus::Pending).as_update());
            s.report(&update(k, failed()).as_update());
        }
        assert_eq!(s.json("b")["recent_failures"].as_array().unwrap().len(), 2);
        s.report(&update("a", ReplicationStatus::Pending).as_update());
        s.report(&update("a", ReplicationStatus::Completed).as_update());
        let j = s.json("b");
        let left = j["recent_failures"].as_array().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["key"], "b");
        assert_eq!((j["failed"].as_u64(), j["completed"].as_u64()), (Some(2), Some(1)));
    }
}
