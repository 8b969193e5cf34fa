//! Destination health: a breaker per destination. Consecutive transport failures (a refused
//! or reset connection, a timeout, a server error: whatever the destination calls transient)
//! open it; while it is open the destination is *down*: its operations are parked in the
//! failed-operations queue (not FAILED, not retried in a loop, holding no worker, budget or
//! admission slot), and one probe at a time asks whether it answers again. When it does, the
//! destination is *up*, and its parked operations are handed back at once.
//!
//! A local file system is not a server that goes away: its breaker counts only failures for
//! want of room (no space left, a quota, a file size limit). Those open it like an outage, and
//! its probe writes, syncs and removes a file of its own, so the work parked on a full disk
//! resumes as soon as there is room, not at the failed queue's next retry round (which waits
//! 30 s and doubles up to an hour). Its other failures are retried and go FAILED as before.
//!
//! Also here: the bound on log lines about one destination's repeating failures, so an outage
//! writes a line when it starts, one when it ends, and a few per second between.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

/// What an operator sees of one destination ([`super::EngineControl::destinations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DestinationHealth {
    /// Destination bucket ARN.
    pub destination: String,
    /// Up, down, or being probed.
    pub state: DestinationState,
    /// Transport failures in a row (0 after any success).
    pub consecutive_failures: u32,
    /// The failure that opened the breaker, while down.
    pub last_error: Option<String>,
    /// Operations parked in the failed-operations queue until the destination answers.
    pub parked_ops: u64,
    /// Object bytes of those operations.
    pub parked_bytes: u64,
    /// Operations that ended FAILED and wait in the queue for a background retry.
    pub failed_ops: u64,
    /// Commit time (Unix ms) of the oldest version waiting in the queue for this destination
    /// (parked or FAILED), if any.
    pub oldest_waiting_commit_ms: Option<u64>,
    /// What the destination may be sent (bytes per second, requests at once); default for a
    /// destination no longer registered.
    pub limits: s3repl_io::dest::DestinationLimits,
}

/// A destination's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestinationState {
    /// Taking work.
    Up,
    /// Not answering since `since_ms` (Unix ms); its work is parked.
    Down {
        /// When the breaker opened.
        since_ms: u64,
    },
    /// Down, and a probe is asking right now.
    Probing {
        /// When the breaker opened.
        since_ms: u64,
    },
}

impl DestinationState {
    /// When the destination went down (Unix ms); `None` while it is up.
    pub fn down_since_ms(self) -> Option<u64> {
        match self {
            DestinationState::Up => None,
            DestinationState::Down { since_ms } | DestinationState::Probing { since_ms } => {
                Some(since_ms)
            }
        }
    }

    /// `up`, `down` or `probing`.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationState::Up => "up",
            DestinationState::Down { .. } => "down",
            DestinationState::Probing { .. } => "probing",
        }
    }
}

/// One destination's breaker.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    down: AtomicBool,
    consecutive: AtomicU32,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    since_ms: u64,
    probing: bool,
    last_error: Option<String>,
    /// When the breaker opened (for the outage's length in the line saying it ended).
    opened: Option<Instant>,
    /// Operations parked since it opened.
    parked: u64,
    lines: LineBudget,
}

/// At most [`LINES_PER_SECOND`] lines per second for one cause; the rest are counted and
/// said with the next line allowed.
#[derive(Debug, Default)]
struct LineBudget {
    window: Option<Instant>,
    used: u32,
    held: u64,
}

/// Log lines per second about one destination's failures.
pub(crate) const LINES_PER_SECOND: u32 = 2;

impl LineBudget {
    /// `Some(lines held back since the last one)` when a line may be written now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1)) {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used < LINES_PER_SECOND {
            self.used += 1;
            Some(std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

/// Every destination's breaker, made on first use.
#[derive(Debug)]
pub(crate) struct Health {
    breakers: RwLock<HashMap<Arc<str>, Arc<Breaker>>>,
    /// Transport failures in a row that open a breaker.
    threshold: u32,
    /// Woken when a destination comes back (the retrier hands its parked work back at once).
    pub(crate) back: tokio::sync::Notify,
}

impl Health {
    pub(crate) fn new(threshold: u32) -> Self {
        Health {
            breakers: RwLock::new(HashMap::new()),
            threshold: threshold.max(1),
            back: tokio::sync::Notify::new(),
        }
    }

    fn breaker(&self, arn: &str) -> Arc<Breaker> {
        if let Some(b) = self.breakers.read().get(arn) {
            return b.clone();
        }
        self.breakers.write().entry(Arc::from(arn)).or_default().clone()
    }

    /// Whether `arn` is down (its work is parked).
    pub(crate) fn is_down(&self, arn: &str) -> bool {
        self.breakers.read().get(arn).is_some_and(|b| b.down.load(Ordering::Acquire))
    }

    /// The destinations that are down.
    pub(crate) fn down(&self) -> Vec<Arc<str>> {
        self.breakers
            .read()
            .iter()
            .filter(|(_, b)| b.down.load(Ordering::Acquire))
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// An operation at `arn` succeeded.
    pub(crate) fn succeeded(&self, arn: &str) {
        if let Some(b) = self.breakers.read().get(arn)
            && b.consecutive.load(Ordering::Relaxed) != 0
        {
            b.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// A transport failure at `arn`; returns whether the destination is down now (this
    /// failure opened the breaker, or it was open already).
    pub(crate) fn failed(&self, arn: &str, error: &dyn std::fmt::Display) -> bool {
        let b = self.breaker(arn);
        let n = b.consecutive.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if b.down.load(Ordering::Acquire) {
            return true;
        }
        if n < self.threshold {
            return false;
        }
        let mut inner = b.inner.lock();
        if b.down.swap(true, Ordering::AcqRel) {
            return true;
        }
        inner.since_ms = super::metrics::now_ms();
        inner.opened = Some(Instant::now());
        inner.parked = 0;
        inner.last_error = Some(error.to_string());
        tracing::warn!(destination = arn, consecutive_failures = n, error = %error, "Destination is down: its operations are parked until a probe finds it answering again.");
        true
    }

    /// An operation for `arn` was parked.
    pub(crate) fn parked(&self, arn: &str) {
        if let Some(b) = self.breakers.read().get(arn) {
            b.inner.lock().parked += 1;
        }
    }

    /// A probe of `arn` starts (`true`) or ended without an answer (`false`).
    pub(crate) fn probing(&self, arn: &str, on: bool) {
        if let Some(b) = self.breakers.read().get(arn) {
            b.inner.lock().probing = on;
        }
    }

    /// A probe found `arn` answering: it is up again. `waiting`: operations queued for it,
    /// handed back now.
    pub(crate) fn came_back(&self, arn: &str, waiting: usize) {
        let Some(b) = self.breakers.read().get(arn).cloned() else { return };
        let mut inner = b.inner.lock();
        b.consecutive.store(0, Ordering::Release);
        if !b.down.swap(false, Ordering::AcqRel) {
            return;
        }
        inner.probing = false;
        let down_for = inner.opened.take().map(|o| o.elapsed()).unwrap_or_default();
        tracing::info!(
            destination = arn,
            down_seconds = down_for.as_secs(),
            parked_meanwhile = inner.parked,
            waiting,
            "Destination answers again: its parked and failed operations are handed back now."
        );
        inner.last_error = None;
        drop(inner);
        self.back.notify_one();
    }

    /// Whether a line about a failure at `arn` may be written now: `Some(lines held back
    /// since the last one)`, at most [`LINES_PER_SECOND`] a second per destination.
    pub(crate) fn may_log(&self, arn: &str) -> Option<u64> {
        self.breaker(arn).inner.lock().lines.allow(Instant::now())
    }

    /// Each known destination's breaker state: (ARN, state, consecutive failures, the error
    /// that opened it).
    pub(crate) fn states(&self) -> Vec<(Arc<str>, DestinationState, u32, Option<String>)> {
        self.breakers
            .read()
            .iter()
            .map(|(arn, b)| {
                let inner = b.inner.lock();
                let state = match (b.down.load(Ordering::Acquire), inner.probing) {
                    (false, _) => DestinationState::Up,
                    (true, false) => DestinationState::Down { since_ms: inner.since_ms },
                    (true, true) => DestinationState::Probing { since_ms: inner.since_ms },
                };
                let last = if matches!(state, DestinationState::Up) {
                    None
                } else {
                    inner.last_error.clone()
                };
                (arn.clone(), state, b.consecutive.load(Ordering::Relaxed), last)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_transport_failures_open_the_breaker_and_a_success_resets_the_count() {
        let h = Health::new(3);
        assert!(!h.is_down("a"));
        assert!(!h.failed("a", &"refused"));
        assert!(!h.failed("a", &"refused"));
        h.succeeded("a");
        assert!(!h.failed("a", &"refused"), "the count started again");
        assert!(!h.failed("a", &"refused"));
        assert!(h.failed("a", &"refused"), "third in a row");
        assert!(h.is_down("a"));
        assert!(!h.is_down("b"), "other destinations are not touched");
        assert_eq!(h.down(), vec![Arc::<str>::from("a")]);
        let states = h.states();
        let (_, state, n, last) = &states[0];
        assert!(matches!(state, DestinationState::Down { since_ms } if *since_ms > 0));
        assert_eq!((*n, last.as_deref()), (3, Some("refused")));
        h.probing("a", true);
        assert_eq!(h.states()[0].1.as_str(), "probing");
        // A success of an operation started before the breaker opened does not close it:
        // only a probe does.
        h.succeeded("a");
        assert!(h.is_down("a"));
        h.came_back("a", 7);
        assert!(!h.is_down("a"));
        assert_eq!(h.states()[0].1, DestinationState::Up);
        assert_eq!(h.states()[0].3, None);
        assert!(h.down().is_empty());
    }

    #[test]
    fn lines_about_one_destination_are_bounded_per_second() {
        let mut budget = LineBudget::default();
        let t0 = Instant::now();
        assert_eq!(budget.allow(t0), Some(0));
        assert_eq!(budget.allow(t0), Some(0));
        for _ in 0..100 {
            assert_eq!(budget.allow(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(budget.allow(t0 + Duration::from_secs(1)), Some(100), "says what it held");
        let h = Health::new(1);
        let allowed = (0..1000).filter(|_| h.may_log("a").is_some()).count();
        assert!(allowed <= LINES_PER_SECOND as usize * 2, "{allowed} lines allowed at once");
    }
}
