//! Limits on what one destination is sent, changeable while running: bytes per second (a
//! token bucket, kept as the time at which the bytes sent so far are paid for) and requests
//! at once. Shared by every clone of the [`Destination`](super::Destination), charged by its
//! writes (single PUTs, multipart parts, server-side copies by the size copied) and counted by
//! every request it makes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What a destination may be sent ([`super::Destination::set_limits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationLimits {
    /// Object bytes per second, averaged over a second or more (`None`: unlimited).
    pub bytes_per_second: Option<u64>,
    /// Requests in flight at once (`None`: unlimited).
    pub max_requests: Option<usize>,
}

/// How far ahead of the rate a burst may go.
const BURST: Duration = Duration::from_millis(250);

/// The shared state behind [`DestinationLimits`].
#[derive(Debug, Default)]
pub(super) struct Throttle {
    /// Bytes per second; 0 is unlimited.
    rate: AtomicU64,
    /// Requests at once; 0 is unlimited.
    max: AtomicUsize,
    in_flight: AtomicUsize,
    freed: tokio::sync::Notify,
    /// When everything charged so far is paid for at the rate.
    paid_until: Mutex<Option<Instant>>,
}

/// A request's slot; released when dropped.
#[derive(Debug)]
pub(super) struct Slot<'a>(Option<&'a Throttle>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            t.in_flight.fetch_sub(1, Ordering::AcqRel);
            t.freed.notify_one();
        }
    }
}

impl Throttle {
    pub(super) fn set(&self, limits: DestinationLimits) {
        self.rate.store(limits.bytes_per_second.unwrap_or(0), Ordering::Release);
        self.max.store(limits.max_requests.unwrap_or(0), Ordering::Release);
        // Waiters re-read the limit (a raised one lets them go).
        self.freed.notify_waiters();
    }

    pub(super) fn get(&self) -> DestinationLimits {
        let rate = self.rate.load(Ordering::Acquire);
        let max = self.max.load(Ordering::Acquire);
        DestinationLimits {
            bytes_per_second: (rate > 0).then_some(rate),
            max_requests: (max > 0).then_some(max),
        }
    }

    /// Waits for a request slot.
    pub(super) async fn request(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let max = self.max.load(Ordering::Acquire);
            let now = self.in_flight.load(Ordering::Acquire);
            if max == 0 || now < max {
                if self
                    .in_flight
                    .compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Slot(Some(self));
                }
                continue;
            }
            freed.await;
        }
    }

    /// Charges `bytes` against the rate, waiting until they are within it.
    pub(super) async fn charge(&self, bytes: u64) {
        let rate = self.rate.load(Ordering::Acquire);
        if rate == 0 || bytes == 0 {
            return;
        }
        // Precision: a rate or size beyond 2^52 bytes loses nothing that matters here.
        #[allow(clippy::cast_precision_loss)]
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let start = {
            let mut paid = self.paid_until.lock();
            let now = Instant::now();
            let from = paid.map_or(now, |p| p.max(now));
            *paid = Some(from + cost);
            // Sent once what came before is paid for, less the burst allowed ahead (its own
            // bytes are paid for by the requests after it).
            from.checked_sub(BURST).map_or(now, |s| s.max(now))
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_at_once_are_bounded_and_a_raised_limit_lets_waiters_go() {
        let t = std::sync::Arc::new(Throttle::default());
        t.set(DestinationLimits { bytes_per_second: None, max_requests: Some(2) });
        let a = t.request().await;
        let _b = t.request().await;
        let waiting = {
            let t = t.clone();
            tokio::spawn(async move {
                let _c = t.request().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third request waits");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        let _a = t.request().await;
        let blocked = {
            let t = t.clone();
            tokio::spawn(async move {
                let _c = t.request().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished());
        t.set(DestinationLimits { bytes_per_second: None, max_requests: Some(3) });
        tokio::time::timeout(Duration::from_secs(5), blocked).await.unwrap().unwrap();
        assert_eq!(t.get().max_requests, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_are_paced_at_the_rate() {
        let t = Throttle::default();
        t.set(DestinationLimits { bytes_per_second: Some(1000), max_requests: None });
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            t.charge(500).await;
        }
        // 5,000 bytes at 1,000/s: the last 500 start once 4,500 are paid for, less the burst.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(4200) && took <= Duration::from_millis(4300),
            "{took:?}"
        );
        t.set(DestinationLimits::default());
        let again = tokio::time::Instant::now();
        t.charge(1 << 30).await;
        assert!(again.elapsed() < Duration::from_millis(1), "unlimited");
    }
}
