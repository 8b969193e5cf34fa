//! `s3repl.toml`: the standalone replicator's configuration file, and the embedded defaults
//! used without one. Every section is optional; see `docs/run.md` for an annotated example.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use s3repl::config::{DestinationBucket, Versioning};
use s3repl::dest::{AzureOptions, Destination, DestinationLimits, GcsOptions, S3Options};
use s3repl::log::ReadOptions;
use s3repl::pipeline::Limits;
use serde::Deserialize;

use crate::bench::parse_bytes;
use crate::error::CliError;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Where the log, persisted configurations, the default source and default destinations
    /// live. Default `./s3repl-data`.
    pub(crate) data_dir: Option<PathBuf>,
    #[serde(default)]
    pub(crate) log: LogSettings,
    #[serde(default)]
    pub(crate) source: SourceSettings,
    /// Destination buckets by ARN. When empty, any destination ARN a configuration names is
    /// created as a local directory under `DATA_DIR/destinations/`.
    #[serde(default)]
    pub(crate) destinations: Vec<DestinationSettings>,
    /// The KMS keyring file (owner-only JSON) for SSE-KMS re-encryption.
    pub(crate) keyring: Option<PathBuf>,
    #[serde(default)]
    pub(crate) limits: LimitSettings,
    #[serde(default)]
    pub(crate) admin: AdminSettings,
    #[serde(default)]
    pub(crate) intake: IntakeSettings,
}

/// `[intake]`: bucket event notifications from servers that do not embed the engine.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IntakeSettings {
    /// Accept S3 event messages at `POST /-/events` on the admin listener (`MinIO`'s webhook
    /// target, Ceph RGW's HTTP endpoint) and append their versions to the log. Needs
    /// `[source] kind = "s3"` (events are enriched from the source bucket).
    pub(crate) webhook: bool,
    /// The bearer token senders authenticate with (`MinIO`'s `auth_token`); or
    /// `webhook_token_env`, the name of an environment variable holding it. Without one,
    /// senders sign with an admin key (`SigV4`).
    pub(crate) webhook_token: Option<String>,
    pub(crate) webhook_token_env: Option<String>,
    /// Also take event messages from this Kafka topic (`MinIO`'s and Ceph's Kafka targets),
    /// with `kafka_brokers` and the consumer group `kafka_group` (default `s3repl-intake`).
    pub(crate) kafka_topic: Option<String>,
    pub(crate) kafka_brokers: Option<String>,
    pub(crate) kafka_group: Option<String>,
    /// Further librdkafka settings of the event topic's consumer (`[intake.kafka]`).
    pub(crate) kafka: std::collections::BTreeMap<String, String>,
    /// The longest the marks of appended events go without a durable commit (an
    /// fdatasync), default 1000 ms; 0 makes every commit durable. Marks lost to a crash are
    /// restored from the log's tail (a local log's, or the Kafka topic's) at start, so this
    /// bounds that replay, not what is recognised.
    pub(crate) marks_durable_every_ms: Option<u64>,
}

impl IntakeSettings {
    /// The bearer token, given inline or through an environment variable.
    pub(crate) fn token(&self) -> Result<Option<String>, CliError> {
        match (&self.webhook_token, &self.webhook_token_env) {
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                settings(format!("environment variable {var} (webhook token) is not set"))
            }),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                Err(settings("give webhook_token or webhook_token_env, not both"))
            }
        }
        .and_then(|t| match t {
            Some(t) if t.len() < 16 => {
                Err(settings("the webhook token must be at least 16 characters"))
            }
            t => Ok(t),
        })
    }
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSettings {
    /// `local` (the segment log in `dir`) or `kafka` (a topic, read as a consumer group).
    pub(crate) kind: String,
    /// Default `DATA_DIR/log`.
    pub(crate) dir: Option<PathBuf>,
    /// Partitions of a log created here (an existing log keeps its own).
    pub(crate) partitions: u32,
    /// `auto` (read ahead with `io_uring` when available, else with `pread`, given two CPUs),
    /// `uring`, `read-ahead` (`pread` on a read-ahead thread) or `std`.
    pub(crate) backend: String,
    /// The consumer name under which the checkpoint is stored.
    pub(crate) consumer: String,
    /// `kafka`: bootstrap brokers (`host:port,…`).
    pub(crate) brokers: Option<String>,
    /// `kafka`: the topic of committed-version records.
    pub(crate) topic: Option<String>,
    /// `kafka`: the consumer group the replicators form (default `s3repl`).
    pub(crate) group: String,
    /// `kafka`: seconds a revoked partition waits for its work to be committed (default 30).
    pub(crate) drain_timeout_s: u64,
    /// `kafka`: seconds a commit of offsets waits for the brokers' answer (default 30, at least 1).
    pub(crate) commit_timeout_s: u64,
    /// `kafka`: further librdkafka settings (`[log.kafka]`: `"session.timeout.ms" = "6000"`,
    /// security settings, …).
    pub(crate) kafka: std::collections::BTreeMap<String, String>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            kind: "local".into(),
            dir: None,
            partitions: 4,
            backend: "auto".into(),
            consumer: "replicator".into(),
            brokers: None,
            topic: None,
            group: "s3repl".into(),
            drain_timeout_s: 30,
            commit_timeout_s: 30,
            kafka: std::collections::BTreeMap::new(),
        }
    }
}

/// `[source]`: where version bytes are read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SourceSettings {
    /// `local` (a `LocalVersionStore` directory) or `s3` (versioned buckets on an endpoint).
    pub(crate) kind: String,
    /// `local`: the store's root; default `DATA_DIR/source`.
    pub(crate) root: Option<PathBuf>,
    /// `s3`: the endpoint and credentials.
    #[serde(flatten)]
    pub(crate) s3: S3Settings,
    /// Source buckets accepted by the admin endpoint; empty means any bucket name (and for
    /// `s3`, each is read from the same-named bucket on the endpoint).
    pub(crate) buckets: Vec<String>,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            kind: "local".into(),
            root: None,
            s3: S3Settings::default(),
            buckets: Vec::new(),
        }
    }
}

/// Endpoint settings shared by S3 sources and destinations.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct S3Settings {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) access_key_id: Option<String>,
    /// Or `secret_access_key_env`, the name of an environment variable holding it.
    pub(crate) secret_access_key: Option<String>,
    pub(crate) secret_access_key_env: Option<String>,
    pub(crate) allow_http: bool,
    pub(crate) virtual_hosted_style: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret (the name of its environment variable is no secret).
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key_env", &self.secret_access_key_env)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// The secret key, given inline or through an environment variable.
    pub(crate) fn secret(&self) -> Result<String, CliError> {
        match (&self.secret_access_key, &self.secret_access_key_env) {
            (Some(s), None) => Ok(s.clone()),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                settings(format!("environment variable {var} (secret key) is not set"))
            }),
            (None, None) => Err(settings("an endpoint needs secret_access_key")),
            (Some(_), Some(_)) => {
                Err(settings("give secret_access_key or secret_access_key_env, not both"))
            }
        }
    }

    pub(crate) fn options(&self, bucket: &str) -> Result<S3Options, CliError> {
        let secret = self.secret()?;
        Ok(S3Options {
            endpoint: self
                .endpoint
                .clone()
                .ok_or_else(|| settings("an S3 endpoint needs endpoint"))?,
            bucket: bucket.to_owned(),
            region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_id: self
                .access_key_id
                .clone()
                .ok_or_else(|| settings("an S3 endpoint needs access_key_id"))?,
            secret_access_key: secret,
            allow_http: self.allow_http,
            virtual_hosted_style: self.virtual_hosted_style,
        })
    }
}

/// `[[destinations]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DestinationSettings {
    /// The destination bucket ARN configurations name (`arn:aws:s3:::bucket`).
    pub(crate) arn: String,
    /// `local`, `memory`, `s3`, `azure` or `gcs`.
    pub(crate) kind: String,
    /// `local`: the directory; default `DATA_DIR/destinations/<bucket>`.
    pub(crate) root: Option<PathBuf>,
    /// `s3`: the bucket on the endpoint; `azure`: the container; `gcs`: the bucket; default the
    /// ARN's bucket name.
    pub(crate) bucket: Option<String>,
    /// `azure`: the storage account (its key in `secret_access_key` or
    /// `secret_access_key_env`; `endpoint` for another than `https://<account>.blob.core.windows.net`).
    pub(crate) storage_account: Option<String>,
    /// `gcs`: a service account key file (else the application default credentials;
    /// `endpoint` for another than Google's).
    pub(crate) service_account_path: Option<PathBuf>,
    #[serde(flatten)]
    pub(crate) s3: S3Settings,
    /// Versioning of the destination bucket as validation sees it (default Enabled).
    pub(crate) versioning: Option<Versioning>,
    /// The owning account, for the `AccessControlTranslation` checks.
    pub(crate) account: Option<String>,
    /// `s3`: copy versions from source buckets on the same endpoint server-side (`CopyObject`,
    /// `UploadPartCopy`; default true).
    pub(crate) server_side_copy: Option<bool>,
    /// Object bytes per second sent to it, e.g. `20MiB` (default unlimited; changeable while
    /// running with `PUT /-/limits`).
    pub(crate) bandwidth: Option<String>,
    /// Requests in flight to it at once (default unlimited).
    pub(crate) max_requests: Option<usize>,
}

impl DestinationSettings {
    /// The limits this destination's settings give it (see [`destination_limits`]).
    pub(crate) fn limits(&self) -> Result<DestinationLimits, CliError> {
        destination_limits(self.bandwidth.as_deref(), self.max_requests)
            .map_err(|e| settings(format!("destination {}: {e}", self.arn)))
    }
}

/// Parses a destination's limits (`bandwidth`, bytes per second as `20MiB`; `max_requests`,
/// at least 1).
pub(crate) fn destination_limits(
    bandwidth: Option<&str>,
    max_requests: Option<usize>,
) -> Result<DestinationLimits, String> {
    let bytes_per_second = match bandwidth {
        None => None,
        Some(b) => match parse_bytes(b.trim_end_matches("/s"))? {
            0 => return Err("bandwidth must be more than 0 bytes per second".into()),
            n => Some(n),
        },
    };
    if max_requests == Some(0) {
        return Err("max_requests must be at least 1".into());
    }
    Ok(DestinationLimits { bytes_per_second, max_requests })
}

/// `[limits]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitSettings {
    pub(crate) workers: usize,
    pub(crate) max_in_flight: usize,
    /// In-flight byte budget, e.g. `256MiB`.
    pub(crate) budget: String,
    pub(crate) max_attempts: u32,
    /// No retry of a version starts this many seconds after its first attempt (default 300).
    pub(crate) retry_deadline_secs: u64,
    pub(crate) multipart_threshold: String,
    pub(crate) part_size: String,
    /// Replication Time Control threshold in seconds (S3: 900).
    pub(crate) rtc_threshold_secs: u64,
    /// Milliseconds between checkpoints (commits of finished work to the log; default 200).
    pub(crate) checkpoint_ms: u64,
    /// Transport failures in a row after which a destination is down and its work parked
    /// (default 8).
    pub(crate) breaker_failures: u32,
    /// Milliseconds between probes of a down destination (default 1000).
    pub(crate) probe_interval_ms: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let l = Limits::default();
        LimitSettings {
            workers: l.workers,
            max_in_flight: l.max_in_flight,
            budget: "256MiB".into(),
            max_attempts: l.max_attempts,
            retry_deadline_secs: l.retry_deadline.as_secs(),
            multipart_threshold: "16MiB".into(),
            part_size: "8MiB".into(),
            rtc_threshold_secs: l.rtc_threshold.as_secs(),
            checkpoint_ms: u64::try_from(l.checkpoint_every.as_millis()).unwrap_or(200),
            breaker_failures: l.breaker_failures,
            probe_interval_ms: u64::try_from(l.probe_interval.as_millis()).unwrap_or(1000),
        }
    }
}

/// `[admin]`: the S3-compatible admin endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AdminSettings {
    /// Listen address; no listener when absent. Default `127.0.0.1:9080`.
    pub(crate) listen: Option<SocketAddr>,
    /// Access keys accepted (`SigV4`). When empty, taken from `S3REPL_ADMIN_ACCESS_KEY_ID` /
    /// `S3REPL_ADMIN_SECRET_ACCESS_KEY`.
    pub(crate) credentials: Vec<AdminCredential>,
    /// Connections served at once (default 512); never more than a quarter of the process's
    /// descriptor limit, which replication needs.
    pub(crate) max_connections: usize,
    /// Seconds a request head may take to arrive once begun (default 10).
    pub(crate) header_timeout_secs: f64,
    /// Seconds a request body may take to arrive (default 20; S3's `RequestTimeout`).
    pub(crate) body_timeout_secs: f64,
    /// Seconds a connection may move no byte before it is closed (default 30; more than
    /// `body_timeout_secs`, so that a stalled body is answered `RequestTimeout` first).
    pub(crate) idle_timeout_secs: f64,
    /// The AWS account id that owns the source buckets: requests whose
    /// `x-amz-expected-bucket-owner` names another are refused (`AccessDenied`). Unchecked
    /// when absent.
    pub(crate) account: Option<String>,
}

impl AdminSettings {
    /// The listener's bounds (the connection bound before the descriptor limit applies).
    pub(crate) fn timeouts(&self) -> Result<(Duration, Duration, Duration), CliError> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
                settings(format!("[admin] {name} must be a positive number of seconds"))
            })
        };
        let (header, body, idle) = (
            secs("header_timeout_secs", self.header_timeout_secs)?,
            secs("body_timeout_secs", self.body_timeout_secs)?,
            secs("idle_timeout_secs", self.idle_timeout_secs)?,
        );
        if idle <= body {
            return Err(settings(
                "[admin] idle_timeout_secs must be more than body_timeout_secs (a stalled body is answered RequestTimeout before its connection is closed)",
            ));
        }
        Ok((header, body, idle))
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9080))),
            credentials: Vec::new(),
            max_connections: 512,
            header_timeout_secs: 10.0,
            body_timeout_secs: 20.0,
            idle_timeout_secs: 30.0,
            account: None,
        }
    }
}

/// One admin access key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminCredential {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("AdminCredential")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Whether a setting's name says its value is a secret.
fn secret_name(name: &str) -> bool {
    let n = name.trim().trim_matches(|c| c == '"' || c == '\'').to_ascii_lowercase();
    ["secret", "password", "token", "credential", "account_key", "sas"]
        .iter()
        .any(|w| n.contains(w))
        || (n.ends_with("key") && !n.ends_with("key_id"))
}

/// A TOML error as something safe to print: where it is (line and column) and what is wrong,
/// never the file's text. The toml crate's own message quotes the offending line, which may be
/// a secret key's; a type error can quote the value itself. So every value of a setting whose
/// name says it is a secret is cut out of the message, and an error on such a setting's line
/// says only which setting it is.
fn redacted(text: &str, e: &toml::de::Error) -> String {
    let (line, column) = e.span().map_or((0, 0), |span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    });
    // The secret-bearing `name = value` pairs, inline tables included, and their lines.
    let mut secrets: Vec<String> = Vec::new();
    let mut secret_lines = Vec::new();
    for (n, l) in text.lines().enumerate() {
        for pair in l.split(['{', '}', ',']) {
            let Some((name, value)) = pair.split_once('=') else { continue };
            if !secret_name(name) {
                continue;
            }
            secret_lines.push(n + 1);
            let value = value.trim();
            secrets.push(value.to_owned());
            secrets.push(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    let message = if secret_lines.contains(&line) {
        let name = text
            .lines()
            .nth(line.saturating_sub(1))
            .and_then(|l| {
                l.split(['{', '}', ',']).find_map(|p| p.split_once('=').map(|(n, _)| n.trim()))
            })
            .filter(|n| secret_name(n))
            .unwrap_or("a secret");
        format!("the value of {name} is not valid (not shown: it is a secret)")
    } else {
        let mut m = e.message().trim().to_owned();
        for s in secrets.iter().filter(|s| s.len() >= 3) {
            m = m.replace(s.as_str(), "[redacted]");
        }
        m
    };
    format!("line {line}, column {column}: {message}")
}

impl Settings {
    pub(crate) fn load(path: &Path) -> Result<Settings, CliError> {
        let text = std::fs::read_to_string(path).map_err(CliError::file(path))?;
        toml::from_str(&text)
            .map_err(|e| settings(format!("{}: {}", path.display(), redacted(&text, &e))))
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("s3repl-data"))
    }

    pub(crate) fn log_dir(&self) -> PathBuf {
        self.log.dir.clone().unwrap_or_else(|| self.data_dir().join("log"))
    }

    pub(crate) fn read_options(&self) -> Result<ReadOptions, CliError> {
        let b = &self.log.backend;
        let backend =
            <crate::log_cmd::BackendArg as clap::ValueEnum>::from_str(b, false).map_err(|_| {
                settings(format!("[log] backend must be auto, uring, read-ahead or std, not {b:?}"))
            })?;
        Ok(ReadOptions { backend: backend.into(), ..ReadOptions::default() })
    }

    pub(crate) fn limits(&self) -> Result<Limits, CliError> {
        let l = &self.limits;
        Ok(Limits {
            workers: l.workers.max(1),
            max_in_flight: l.max_in_flight.max(1),
            budget_bytes: parse_bytes(&l.budget).map_err(settings)?,
            max_attempts: l.max_attempts.max(1),
            retry_deadline: Duration::from_secs(l.retry_deadline_secs),
            multipart_threshold: parse_bytes(&l.multipart_threshold).map_err(settings)?,
            part_size: parse_bytes(&l.part_size).map_err(settings)?.max(5 << 20),
            rtc_threshold: Duration::from_secs(l.rtc_threshold_secs),
            checkpoint_every: Duration::from_millis(l.checkpoint_ms.max(1)),
            breaker_failures: l.breaker_failures.max(1),
            probe_interval: Duration::from_millis(l.probe_interval_ms.max(10)),
            ..Limits::default()
        })
    }

    /// The configured destinations, built.
    pub(crate) fn build_destinations(&self) -> Result<Vec<Destination>, CliError> {
        self.destinations
            .iter()
            .map(|d| {
                self.build_destination(d).map(|dest| match &d.s3.region {
                    Some(region) => dest.with_region(region),
                    None => dest,
                })
            })
            .collect()
    }

    /// One configured destination, built, with its limits.
    fn build_destination(&self, d: &DestinationSettings) -> Result<Destination, CliError> {
        let limits = d.limits()?;
        let dest = self.build_destination_kind(d)?;
        dest.set_limits(limits);
        Ok(dest)
    }

    fn build_destination_kind(&self, d: &DestinationSettings) -> Result<Destination, CliError> {
        let name = arn_bucket(&d.arn).ok_or_else(|| {
            settings(format!("destination ARN {:?} is not arn:aws:s3:::bucket", d.arn))
        })?;
        match d.kind.as_str() {
            "memory" => Ok(Destination::in_memory(&d.arn)),
            "local" => {
                let root = d
                    .root
                    .clone()
                    .unwrap_or_else(|| self.data_dir().join("destinations").join(name));
                Destination::local(&d.arn, &root).map_err(|e| invalid(&d.arn, &e))
            }
            "s3" => {
                let bucket = d.bucket.as_deref().unwrap_or(name);
                let dest = Destination::s3(&d.arn, &d.s3.options(bucket)?)
                    .map_err(|e| invalid(&d.arn, &e))?;
                Ok(if d.server_side_copy == Some(false) {
                    dest.without_server_side_copy()
                } else {
                    dest
                })
            }
            "azure" => {
                let opts = AzureOptions {
                    account: d.storage_account.clone().ok_or_else(|| {
                        settings(format!("destination {}: azure needs storage_account", d.arn))
                    })?,
                    container: d.bucket.as_deref().unwrap_or(name).to_owned(),
                    access_key: d.s3.secret()?,
                    endpoint: d.s3.endpoint.clone(),
                    allow_http: d.s3.allow_http,
                };
                Destination::azure(&d.arn, &opts).map_err(|e| invalid(&d.arn, &e))
            }
            "gcs" => {
                let opts = GcsOptions {
                    bucket: d.bucket.as_deref().unwrap_or(name).to_owned(),
                    service_account_path: d.service_account_path.clone(),
                    bearer_token: None,
                    base_url: d.s3.endpoint.clone(),
                    allow_http: d.s3.allow_http,
                };
                Destination::gcs(&d.arn, &opts).map_err(|e| invalid(&d.arn, &e))
            }
            k => Err(settings(format!(
                "destination {}: kind must be local, memory, s3, azure or gcs, not {k:?}",
                d.arn
            ))),
        }
    }

    /// What validation knows of destination buckets: `None` (unknown, checks skipped) when no
    /// destinations are configured.
    pub(crate) fn known_destinations(&self) -> Option<BTreeMap<String, DestinationBucket>> {
        if self.destinations.is_empty() {
            return None;
        }
        Some(
            self.destinations
                .iter()
                .map(|d| {
                    (
                        d.arn.clone(),
                        DestinationBucket {
                            versioning: d.versioning.unwrap_or(Versioning::Enabled),
                            account: d.account.clone(),
                            object_lock: false,
                        },
                    )
                })
                .collect(),
        )
    }
}

/// The bucket name of `arn:aws:s3:::bucket` (any partition), if it is one.
pub(crate) fn arn_bucket(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("s3"), Some(""), Some(""), Some(bucket)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    s3repl::pipeline::valid_bucket_name(bucket).then_some(bucket)
}

/// A settings error.
fn settings(message: impl Into<String>) -> CliError {
    CliError::settings(message)
}

/// A destination the settings describe that cannot be built.
fn invalid(arn: &str, e: &object_store::Error) -> CliError {
    CliError::settings(format!("{arn}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3repl::log::Backend;

    #[test]
    fn a_full_file_parses_and_unknown_keys_are_refused() {
        let s: Settings = toml::from_str(
            r#"
            data_dir = "/tmp/x"
            keyring = "/tmp/keys.json"
            [log]
            partitions = 8
            backend = "std"
            [source]
            kind = "s3"
            endpoint = "http://127.0.0.1:9000"
            access_key_id = "a"
            secret_access_key = "b"
            allow_http = true
            buckets = ["src"]
            [[destinations]]
            arn = "arn:aws:s3:::dst"
            kind = "memory"
            [limits]
            budget = "64MiB"
            workers = 8
            [admin]
            listen = "127.0.0.1:9999"
            credentials = [{ access_key_id = "k", secret_access_key = "s" }]
            "#,
        )
        .unwrap();
        assert_eq!(s.log.partitions, 8);
        assert_eq!(s.limits().unwrap().budget_bytes, 64 << 20);
        assert_eq!(s.build_destinations().unwrap().len(), 1);
        assert!(s.known_destinations().unwrap().contains_key("arn:aws:s3:::dst"));
        assert_eq!(s.source.s3.options("src").unwrap().endpoint, "http://127.0.0.1:9000");
        assert!(toml::from_str::<Settings>("[log]\nfoo = 1").is_err());
        assert!(
            toml::from_str::<Settings>("[log]\nbackend = \"x\"").unwrap().read_options().is_err()
        );
        for (name, backend) in [
            ("auto", Backend::Auto),
            ("uring", Backend::Uring),
            ("read-ahead", Backend::ReadAhead),
            ("std", Backend::Std),
        ] {
            let s = toml::from_str::<Settings>(&format!("[log]\nbackend = \"{name}\"")).unwrap();
            assert_eq!(s.read_options().unwrap().backend, backend, "{name}");
        }
        assert!(Settings::default().known_destinations().is_none());
    }

    #[test]
    fn azure_and_gcs_destinations_are_built_from_their_settings() {
        let s: Settings = toml::from_str(
            r#"
            [[destinations]]
            arn = "arn:aws:s3:::to-azure"
            kind = "azure"
            storage_account = "devstoreaccount1"
            secret_access_key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
            endpoint = "http://127.0.0.1:10000/devstoreaccount1"
            allow_http = true
            [[destinations]]
            arn = "arn:aws:s3:::to-gcs"
            kind = "gcs"
            bucket = "replicas"
            "#,
        )
        .unwrap();
        let built = s.build_destinations().unwrap();
        assert_eq!(
            built.iter().map(Destination::arn).collect::<Vec<_>>(),
            ["arn:aws:s3:::to-azure", "arn:aws:s3:::to-gcs"]
        );
        // An Azure destination without its account or key is a clear error, not a panic.
        let no_account: Settings = toml::from_str(
            "[[destinations]]\narn = \"arn:aws:s3:::abc\"\nkind = \"azure\"\nsecret_access_key = \"k\"",
        )
        .unwrap();
        let e = no_account.build_destinations().unwrap_err();
        assert!(matches!(e, CliError::Settings(_)), "{e:?}");
        assert!(e.to_string().contains("storage_account"), "{e}");
        let no_key: Settings = toml::from_str(
            "[[destinations]]\narn = \"arn:aws:s3:::abc\"\nkind = \"azure\"\nstorage_account = \"x\"",
        )
        .unwrap();
        let e = no_key.build_destinations().unwrap_err();
        assert!(matches!(e, CliError::Settings(_)), "{e:?}");
        assert!(e.to_string().contains("secret_access_key"), "{e}");
    }

    #[test]
    fn s3_destinations_copy_server_side_unless_turned_off() {
        let s: Settings = toml::from_str(
            r#"
            [[destinations]]
            arn = "arn:aws:s3:::copies"
            kind = "s3"
            endpoint = "http://127.0.0.1:8333"
            access_key_id = "k"
            secret_access_key = "s"
            [[destinations]]
            arn = "arn:aws:s3:::streams"
            kind = "s3"
            endpoint = "http://127.0.0.1:8333"
            access_key_id = "k"
            secret_access_key = "s"
            server_side_copy = false
            "#,
        )
        .unwrap();
        let built = s.build_destinations().unwrap();
        let here = s3repl::dest::S3Location {
            endpoint: "http://127.0.0.1:8333/".into(),
            bucket: "src".into(),
        };
        let elsewhere = s3repl::dest::S3Location {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "src".into(),
        };
        let copies: Vec<(bool, bool)> =
            built.iter().map(|d| (d.copies_from(&here), d.copies_from(&elsewhere))).collect();
        assert_eq!(copies, [(true, false), (false, false)]);
    }

    /// Issue 25, finding 6: a configuration error never prints a secret, wherever it is.
    #[test]
    fn configuration_errors_never_show_secrets() {
        let cases = [
            // A syntax error on the secret's own line (the toml crate quotes the line).
            (
                "[admin]\ncredentials = [{ access_key_id = \"k\", secret_access_key = \"TOPSECRET-1\" ]\n",
                "TOPSECRET-1",
            ),
            (
                "[[destinations]]\narn = \"arn:aws:s3:::d\"\nkind = \"s3\"\nsecret_access_key = \"TOPSECRET-2\nregion = \"x\"\n",
                "TOPSECRET-2",
            ),
            // A type error quoting the value.
            (
                "[[destinations]]\narn = \"arn:aws:s3:::d\"\nkind = \"s3\"\nsecret_access_key = 12345678\n",
                "12345678",
            ),
            // An error elsewhere in a file holding secrets.
            (
                "[admin]\ncredentials = [{ access_key_id = \"k\", secret_access_key = \"TOPSECRET-3\" }]\nlisten = 7\n",
                "TOPSECRET-3",
            ),
            (
                "[[destinations]]\narn = \"arn:aws:s3:::d\"\nkind = \"azure\"\nsecret_access_key = \"Eby8vdM02xNOcqFl==\"\nunknown = \"Eby8vdM02xNOcqFl==\"\n",
                "Eby8vdM02xNOcqFl",
            ),
        ];
        for (text, secret) in cases {
            let e = toml::from_str::<Settings>(text).expect_err(text);
            let shown = redacted(text, &e);
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.starts_with("line "), "{shown}");
        }
        // What the redaction is for: the crate's own message quotes the secret's line.
        let raw = toml::from_str::<Settings>(cases[0].0).unwrap_err().to_string();
        assert!(raw.contains("TOPSECRET-1"), "{raw}");
        let debug = format!("{:?}", toml::from_str::<Settings>("[admin]\ncredentials = [{ access_key_id = \"k\", secret_access_key = \"TOPSECRET-4\" }]\n").unwrap());
        assert!(!debug.contains("TOPSECRET-4"), "{debug}");
    }

    #[test]
    fn the_annotated_example_parses() {
        let s: Settings = toml::from_str(include_str!("../../../examples/s3repl.toml")).unwrap();
        assert_eq!(s.destinations.len(), 4);
        assert_eq!(s.admin.credentials.len(), 1);
        assert_eq!(s.limits().unwrap(), Limits::default());
        assert!(s.read_options().is_ok());
    }

    #[test]
    fn arns() {
        assert_eq!(arn_bucket("arn:aws:s3:::my-bucket"), Some("my-bucket"));
        assert_eq!(arn_bucket("arn:aws-cn:s3:::b-1"), Some("b-1"));
        assert_eq!(arn_bucket("arn:aws:s3:::../etc"), None);
        assert_eq!(arn_bucket("arn:aws:s3:us-east-1::b"), None);
    }
}
