//! The admin listener: what a client that is not an administrator can make the process spend.
//!
//! - **Connections are bounded** ([`ListenerLimits::max_connections`], itself a quarter of the
//!   process's descriptor limit at most): the accept loop takes a slot before it accepts, so past
//!   the bound clients wait in the kernel's backlog and hold none of the descriptors the log
//!   readers, sources and destinations need.
//! - **Accept errors back off** (10 ms doubling to 1 s) and are logged at a bounded rate:
//!   at the descriptor limit `accept` fails at once, every time, and a loop that retried at once
//!   spun a core and wrote millions of warnings.
//! - **Slow and idle connections are cut**: a request head must arrive within
//!   [`ListenerLimits::header_timeout`] (hyper's), a connection that moves no byte for
//!   [`ListenerLimits::idle_timeout`] is closed, and the handler gives a body
//!   `body_timeout` (see `admin.rs`, answered `RequestTimeout` as S3 does).
//! - Each connection buffers at most 64 KiB of head (hyper's `max_buf_size`); bodies are read
//!   only after the signature is checked, against a byte budget shared by all connections.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use super::admin::Admin;

/// Bounds of the admin listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenerLimits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// Time for a request head to arrive once a request has begun.
    pub(crate) header_timeout: Duration,
    /// A connection that moves no byte for this long is closed.
    pub(crate) idle_timeout: Duration,
}

/// A log line at most `per_second` times a second; the lines held back are counted and the
/// count goes with the next line let through.
#[derive(Debug)]
pub(crate) struct Throttle {
    per_second: u64,
    /// Seconds since `base` of the current window, and lines let through in it.
    window: AtomicU64,
    used: AtomicU64,
    held: AtomicU64,
    base: Instant,
}

impl Throttle {
    pub(crate) fn new(per_second: u64) -> Self {
        Throttle {
            per_second,
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
            held: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// `Some(lines held back since the last one let through)` when this line may be logged.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = self.base.elapsed().as_secs();
        if self.window.swap(now, Ordering::AcqRel) != now {
            self.used.store(0, Ordering::Release);
        }
        if self.used.fetch_add(1, Ordering::AcqRel) < self.per_second {
            Some(self.held.swap(0, Ordering::AcqRel))
        } else {
            self.held.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

/// Raises the process's soft descriptor limit to its hard limit and returns the soft limit
/// now in force (`None` where it cannot be read).
pub(crate) fn raise_descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one is
        // allowed for any process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            lim = raised;
        }
    }
    Some(lim.rlim_cur)
}

/// The connection bound: the configured one, and never more than a quarter of the descriptors
/// the process may open (the rest are replication's).
pub(crate) fn connection_bound(configured: usize, descriptors: Option<u64>) -> usize {
    let share = descriptors.map_or(configured, |d| usize::try_from(d / 4).unwrap_or(usize::MAX));
    configured.min(share).max(1)
}

/// Serves the admin endpoint on `listener` until `stop` turns true; then stops accepting
/// (the port is closed), lets requests in progress finish — a bucket event's delivery is then
/// answered once its records are durable, instead of cut off after they were — and returns
/// once every connection has ended, or after `drain` at most.
pub(crate) async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    limits: ListenerLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let throttle = Throttle::new(5);
    let mut backoff = Duration::from_millis(10);
    loop {
        // A slot before the accept: past the bound, clients wait in the backlog.
        let slot = tokio::select! {
            () = stopped(&mut stop) => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(c) => {
                backoff = Duration::from_millis(10);
                c
            }
            Err(e) => {
                if let Some(held) = throttle.allow() {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis(), similar_held_back = held, "Accepting an admin connection failed; backing off.");
                }
                drop(slot);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (admin, stop) = (admin.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, admin, limits, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let open = limits.max_connections - slots.available_permits();
    if open > 0 {
        tracing::info!(
            connections = open,
            "Admin endpoint closed; finishing the requests in progress."
        );
    }
    if tokio::time::timeout(drain, slots.acquire_many(all)).await.is_err() {
        let open = limits.max_connections - slots.available_permits();
        tracing::warn!(
            connections = open,
            drain_s = drain.as_secs(),
            "Admin requests still in progress are cut off (a sender that got no answer delivers again)."
        );
    }
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// One connection, cut when it moves no byte for `idle_timeout`; once `stop` turns true, it
/// ends after the request in progress (at once when none is).
async fn connection(
    stream: tokio::net::TcpStream,
    admin: Arc<Admin>,
    limits: ListenerLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let base = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = Watched { inner: stream, last: last.clone(), base };
    let service = hyper::service::service_fn(move |req| admin.clone().handle(req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 << 10);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        let idle_for =
            base.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Acquire)));
        let left = limits.idle_timeout.saturating_sub(idle_for);
        if left.is_zero() {
            // Dropping the connection closes the socket.
            return;
        }
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "Admin connection ended with an error.");
                }
                return;
            }
            () = tokio::time::sleep(left) => {}
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A stream that notes when it last moved a byte (milliseconds since `base`).
struct Watched<S> {
    inner: S,
    last: Arc<AtomicU64>,
    base: Instant,
}

impl<S> Watched<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Release);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_a_few_lines_a_second_through_and_counts_the_rest() {
        let t = Throttle::new(3);
        let through: Vec<Option<u64>> = (0..10).map(|_| t.allow()).collect();
        assert_eq!(through.iter().filter(|x| x.is_some()).count(), 3);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(t.allow(), Some(7), "the next line says how many were held back");
    }

    #[test]
    fn admin_connections_get_at_most_a_quarter_of_the_descriptors() {
        assert_eq!(connection_bound(512, Some(1024)), 256);
        assert_eq!(connection_bound(512, Some(1 << 20)), 512);
        assert_eq!(connection_bound(512, None), 512);
        assert_eq!(connection_bound(512, Some(2)), 1);
    }
}
