//! Replication metrics: what S3 reports as Replication Time Control metrics (per destination:
//! operations and bytes pending, operations failed, replication latency, operations that
//! missed the threshold) plus the engine's own counters, rendered in the Prometheus text
//! format for a `/metrics` route.
//!
//! Latency is measured from the version's commit time (stamped by the embedding server in the
//! log record) to the moment the destination acknowledged the write, into an `HdrHistogram` per
//! destination (1 ms to 1 day, 3 significant digits).

use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// S3's Replication Time Control threshold: 15 minutes.
pub const RTC_THRESHOLD: Duration = Duration::from_mins(15);

/// Per-destination counters.
#[derive(Debug)]
struct DestinationStats {
    pending_ops: u64,
    pending_bytes: u64,
    completed_ops: u64,
    completed_bytes: u64,
    failed_ops: u64,
    failed_retries: u64,
    parked_ops: u64,
    missed_threshold_ops: u64,
    /// The sum of the completed operations' latencies (the summary's `_sum`).
    latency_sum_ms: u64,
    /// `None` only if `HdrHistogram` refused the constant bounds (it does not).
    latency_ms: Option<Histogram<u64>>,
}

impl DestinationStats {
    fn new() -> Self {
        DestinationStats {
            pending_ops: 0,
            pending_bytes: 0,
            completed_ops: 0,
            completed_bytes: 0,
            failed_ops: 0,
            failed_retries: 0,
            parked_ops: 0,
            missed_threshold_ops: 0,
            latency_sum_ms: 0,
            // 1 ms .. 1 day, 3 significant figures.
            latency_ms: Histogram::new_with_bounds(1, 86_400_000, 3).ok(),
        }
    }
}

/// The engine's metrics. Shared by the stages; read with [`Metrics::snapshot`] or
/// [`Metrics::render_prometheus`].
#[derive(Debug)]
pub struct Metrics {
    records_read: AtomicU64,
    records_matched: AtomicU64,
    threshold: Duration,
    destinations: Mutex<BTreeMap<String, DestinationStats>>,
}

/// A point-in-time copy of one destination's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSnapshot {
    /// Destination bucket ARN.
    pub destination: String,
    /// Operations matched and not yet finished.
    pub pending_ops: u64,
    /// Object bytes of those operations.
    pub pending_bytes: u64,
    /// Operations that completed.
    pub completed_ops: u64,
    /// Object bytes replicated.
    pub completed_bytes: u64,
    /// Operations that ended FAILED (each version once per destination: its first failure).
    pub failed_ops: u64,
    /// Background retries of FAILED or parked operations that failed again.
    pub failed_retries: u64,
    /// Operations parked because their destination was down (each time one was parked).
    pub parked_ops: u64,
    /// Completed operations whose commit → replicated latency exceeded the threshold.
    pub missed_threshold_ops: u64,
    /// Latency percentiles in milliseconds: p50, p90, p99, p99.9, max (0 when empty).
    pub latency_ms: [u64; 5],
    /// The sum of the completed operations' latencies, in milliseconds.
    pub latency_sum_ms: u64,
}

/// A point-in-time copy of all metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Log records read.
    pub records_read: u64,
    /// Records that at least one rule selected.
    pub records_matched: u64,
    /// Per destination, ordered by ARN.
    pub destinations: Vec<DestinationSnapshot>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Metrics {
    /// Empty metrics with the RTC `threshold` (S3's is [`RTC_THRESHOLD`]).
    pub fn new(threshold: Duration) -> Self {
        Metrics {
            records_read: AtomicU64::new(0),
            records_matched: AtomicU64::new(0),
            threshold,
            destinations: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, DestinationStats>> {
        self.destinations.lock()
    }

    fn with<R>(&self, destination: &str, f: impl FnOnce(&mut DestinationStats) -> R) -> R {
        let mut all = self.lock();
        if let Some(s) = all.get_mut(destination) {
            return f(s);
        }
        f(all.entry(destination.to_owned()).or_insert_with(DestinationStats::new))
    }

    pub(crate) fn read(&self, n: u64) {
        self.records_read.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn matched(&self) {
        self.records_matched.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn pending(&self, destination: &str, bytes: u64) {
        self.with(destination, |s| {
            s.pending_ops += 1;
            s.pending_bytes += bytes;
        });
    }

    /// An operation finished: `commit_ms` is the version's commit time.
    /// An operation that turned out to have nothing to apply: no longer pending, neither
    /// completed nor failed.
    pub(crate) fn not_applied(&self, destination: &str, bytes: u64) {
        self.with(destination, |s| {
            s.pending_ops = s.pending_ops.saturating_sub(1);
            s.pending_bytes = s.pending_bytes.saturating_sub(bytes);
        });
    }

    /// An operation was parked (its destination is down): no longer pending here, it waits in
    /// the failed-operations queue.
    pub(crate) fn parked(&self, destination: &str, bytes: u64) {
        self.with(destination, |s| {
            s.pending_ops = s.pending_ops.saturating_sub(1);
            s.pending_bytes = s.pending_bytes.saturating_sub(bytes);
            s.parked_ops += 1;
        });
    }

    /// An operation ended; `first`: its first run (not a background retry), so a failure is
    /// a version failing rather than a retry failing again.
    pub(crate) fn finished(
        &self,
        destination: &str,
        bytes: u64,
        ok: bool,
        commit_ms: u64,
        first: bool,
    ) {
        let latency = now_ms().saturating_sub(commit_ms).max(1);
        let missed = u128::from(latency) > self.threshold.as_millis();
        self.with(destination, |s| {
            s.pending_ops = s.pending_ops.saturating_sub(1);
            s.pending_bytes = s.pending_bytes.saturating_sub(bytes);
            if ok {
                s.completed_ops += 1;
                s.completed_bytes += bytes;
                s.latency_sum_ms = s.latency_sum_ms.saturating_add(latency);
                if let Some(h) = &mut s.latency_ms {
                    h.saturating_record(latency);
                }
                if missed {
                    s.missed_threshold_ops += 1;
                }
            } else if first {
                s.failed_ops += 1;
            } else {
                s.failed_retries += 1;
            }
        });
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let destinations = self
            .lock()
            .iter()
            .map(|(d, s)| {
                let q = |p: f64| match &s.latency_ms {
                    Some(h) if !h.is_empty() => h.value_at_quantile(p),
                    _ => 0,
                };
                DestinationSnapshot {
                    destination: d.clone(),
                    pending_ops: s.pending_ops,
                    pending_bytes: s.pending_bytes,
                    completed_ops: s.completed_ops,
                    completed_bytes: s.completed_bytes,
                    failed_ops: s.failed_ops,
                    failed_retries: s.failed_retries,
                    parked_ops: s.parked_ops,
                    missed_threshold_ops: s.missed_threshold_ops,
                    latency_ms: [q(0.5), q(0.9), q(0.99), q(0.999), q(1.0)],
                    latency_sum_ms: s.latency_sum_ms,
                }
            })
            .collect();
        MetricsSnapshot {
            records_read: self.records_read.load(Ordering::Relaxed),
            records_matched: self.records_matched.load(Ordering::Relaxed),
            destinations,
        }
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let snap = self.snapshot();
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        // Counters count since this process started (Prometheus's `rate()` handles restarts);
        // what is durable is in the `s3repl_checkpoint_*` and `s3repl_failed_queue_*` gauges.
        counter(
            "s3repl_log_records_read_total",
            "Log records read since this process started.",
            "counter",
            snap.records_read,
        );
        counter(
            "s3repl_log_records_matched_total",
            "Log records selected by at least one rule, since this process started.",
            "counter",
            snap.records_matched,
        );
        let series: [(&str, &str, &str, Field); 8] = [
            ("s3repl_operations_pending", "Operations not yet replicated.", "gauge", |d| {
                d.pending_ops
            }),
            ("s3repl_bytes_pending", "Object bytes not yet replicated.", "gauge", |d| {
                d.pending_bytes
            }),
            (
                "s3repl_operations_completed_total",
                "Operations replicated since this process started.",
                "counter",
                |d| d.completed_ops,
            ),
            (
                "s3repl_bytes_replicated_total",
                "Object bytes replicated since this process started.",
                "counter",
                |d| d.completed_bytes,
            ),
            (
                "s3repl_operations_failed_total",
                "Operations that ended FAILED since this process started (versions per destination, not attempts).",
                "counter",
                |d| d.failed_ops,
            ),
            (
                "s3repl_operation_retries_failed_total",
                "Background retries of queued operations that failed again, since this process started.",
                "counter",
                |d| d.failed_retries,
            ),
            (
                "s3repl_operations_parked_total",
                "Operations parked because their destination was down, since this process started.",
                "counter",
                |d| d.parked_ops,
            ),
            (
                "s3repl_operations_missed_threshold_total",
                "Operations replicated after the RTC threshold since this process started.",
                "counter",
                |d| d.missed_threshold_ops,
            ),
        ];
        for (name, help, kind, field) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for d in &snap.destinations {
                let _ = writeln!(
                    out,
                    "{name}{{destination=\"{}\"}} {}",
                    escape_label(&d.destination),
                    field(d)
                );
            }
        }
        let name = "s3repl_replication_latency_milliseconds";
        let _ = writeln!(
            out,
            "# HELP {name} Commit to replicated latency, since this process started.\n# TYPE {name} summary"
        );
        for d in &snap.destinations {
            let label = escape_label(&d.destination);
            for (q, v) in ["0.5", "0.9", "0.99", "0.999", "1"].iter().zip(d.latency_ms) {
                let _ = writeln!(out, "{name}{{destination=\"{label}\",quantile=\"{q}\"}} {v}");
            }
            let _ = writeln!(out, "{name}_sum{{destination=\"{label}\"}} {}", d.latency_sum_ms);
            let _ = writeln!(out, "{name}_count{{destination=\"{label}\"}} {}", d.completed_ops);
        }
        // The same latencies as a histogram (cumulative bucket counts, ten buckets a decade),
        // which, unlike the summary's quantiles, can be subtracted: the latencies of what
        // completed between two scrapes (`s3repl loadtest` reports each step's so).
        let name = "s3repl_replication_latency_hist_milliseconds";
        let _ = writeln!(
            out,
            "# HELP {name} Commit to replicated latency, since this process started.\n# TYPE {name} histogram"
        );
        let all = self.lock();
        for (d, s) in all.iter() {
            let label = escape_label(d);
            let Some(h) = &s.latency_ms else { continue };
            for le in latency_buckets() {
                let n = h.count_between(0, le);
                let _ = writeln!(out, "{name}_bucket{{destination=\"{label}\",le=\"{le}\"}} {n}");
            }
            let total = h.len();
            let _ = writeln!(out, "{name}_bucket{{destination=\"{label}\",le=\"+Inf\"}} {total}");
            let _ = writeln!(out, "{name}_sum{{destination=\"{label}\"}} {}", s.latency_sum_ms);
            let _ = writeln!(out, "{name}_count{{destination=\"{label}\"}} {total}");
        }
        drop(all);
        out
    }
}

/// The latency histogram's bucket bounds, milliseconds: ten a decade (each about 26% above
/// the last), from 1 ms to about a day.
pub(crate) fn latency_buckets() -> impl Iterator<Item = u64> {
    let mut last = 0;
    (0..80u32).filter_map(move |k| {
        // 10^(k/10), rounded; the low ones collapse (1, 1, 2, 2, ...) and are given once.
        let b = 10f64.powf(f64::from(k) / 10.0).round();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let b = b as u64;
        (b > last).then(|| {
            last = b;
            b
        })
    })
}

/// Reads one per-destination value.
type Field = fn(&DestinationSnapshot) -> u64;

/// Escapes a Prometheus label value (backslash, quote, newline).
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_completed_failed_and_threshold() {
        let m = Metrics::new(Duration::from_mins(1));
        m.read(3);
        m.matched();
        m.pending("arn:aws:s3:::a", 10);
        m.pending("arn:aws:s3:::a", 20);
        m.pending("arn:aws:s3:::b", 5);
        let now = now_ms();
        m.finished("arn:aws:s3:::a", 10, true, now, true);
        m.finished("arn:aws:s3:::a", 20, true, now - 120_000, true);
        m.finished("arn:aws:s3:::b", 5, false, now, true);
        // A retry failing again is not another failed version; a parked one is not pending.
        m.finished("arn:aws:s3:::b", 5, false, now, false);
        m.pending("arn:aws:s3:::b", 7);
        m.parked("arn:aws:s3:::b", 7);
        let s = m.snapshot();
        assert_eq!((s.records_read, s.records_matched), (3, 1));
        let a = &s.destinations[0];
        assert_eq!(a.destination, "arn:aws:s3:::a");
        assert_eq!((a.pending_ops, a.pending_bytes, a.completed_ops), (0, 0, 2));
        assert_eq!((a.completed_bytes, a.failed_ops, a.missed_threshold_ops), (30, 0, 1));
        assert!(a.latency_ms[4] >= 120_000, "max latency {:?}", a.latency_ms);
        let b = &s.destinations[1];
        assert_eq!((b.failed_ops, b.completed_ops, b.pending_ops), (1, 0, 0));
        assert_eq!((b.failed_retries, b.parked_ops, b.pending_bytes), (1, 1, 0));
        let text = m.render_prometheus();
        assert!(
            text.contains("s3repl_operations_completed_total{destination=\"arn:aws:s3:::a\"} 2")
        );
        assert!(text.contains("s3repl_operations_failed_total{destination=\"arn:aws:s3:::b\"} 1"));
        assert!(text.contains("s3repl_log_records_read_total 3"));
        // The summary has its quantiles, `_sum` (at least the 2-minute-old one) and `_count`.
        let sum: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "s3repl_replication_latency_milliseconds_sum{destination=\"arn:aws:s3:::a\"} ",
                )
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!((120_000..130_000).contains(&sum), "_sum {sum} in\n{text}");
        assert_eq!(s.destinations[0].latency_sum_ms, sum);
        assert!(text.contains(
            "s3repl_replication_latency_milliseconds_count{destination=\"arn:aws:s3:::a\"} 2"
        ));
        // The histogram: one fast completion under 100 ms, the 2-minute one above.
        let bucket = |le: &str| {
            let key = format!(
                "s3repl_replication_latency_hist_milliseconds_bucket{{destination=\"arn:aws:s3:::a\",le=\"{le}\"}} "
            );
            text.lines().find_map(|l| l.strip_prefix(&key)).map(|v| v.parse::<u64>().unwrap())
        };
        assert_eq!(bucket("100"), Some(1), "{text}");
        assert_eq!(bucket("+Inf"), Some(2));
        let bounds: Vec<u64> = latency_buckets().collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]) && bounds[0] == 1, "{bounds:?}");
        assert!(bounds.contains(&100) && *bounds.last().unwrap() > 60_000_000);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
