//! Writes to a local file-system destination on dedicated threads.
//!
//! `object_store`'s `LocalFileSystem` runs each operation through tokio's blocking pool when it
//! is called inside a runtime: one thread hand-off (and, under load, one more pool thread) per
//! replica, which measured at under a third of the file system's own create + write + rename
//! rate on tmpfs. Outside a runtime it does its I/O inline, so these threads call it directly,
//! fed by a bounded queue (a full queue makes the caller wait: backpressure, not growth).
//!
//! One pool serves every local destination of the process (a configuration naming many
//! destination buckets must not start threads per bucket). Durability comes in groups:
//! `LocalFileSystem` does not fsync, so [`sync_file_system`] flushes the whole file system
//! (`syncfs`) once per checkpoint, before the checkpoint can count the replicas written so far as
//! done.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake};

use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// The writer threads local destinations share.
#[derive(Debug)]
pub(crate) struct LocalWriters {
    tx: mpsc::Sender<Job>,
}

/// The process's pool while any local destination holds it.
static SHARED: Mutex<Weak<LocalWriters>> = Mutex::new(Weak::new());

impl LocalWriters {
    /// The process's pool of `threads` writers, started on first use; its threads stop once
    /// the last destination holding it is dropped and the queue is drained.
    pub(crate) fn shared(threads: usize) -> std::io::Result<Arc<Self>> {
        let mut slot = SHARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pool) = slot.upgrade() {
            return Ok(pool);
        }
        let pool = Arc::new(LocalWriters::start(threads)?);
        *slot = Arc::downgrade(&pool);
        Ok(pool)
    }

    /// Starts `threads` writers.
    fn start(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>(threads.max(1) * 64);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("s3repl-local-{i}")).spawn(move || {
                loop {
                    // One thread waits for the next job at a time; the others wait for the lock.
                    let job = match rx.lock() {
                        Ok(mut rx) => rx.blocking_recv(),
                        Err(_) => None,
                    };
                    match job {
                        Some(job) => job(),
                        None => return,
                    }
                }
            })?;
        }
        Ok(LocalWriters { tx })
    }

    /// Runs `f` on a writer thread (outside any tokio runtime) and returns its result; `None`
    /// if the writers are gone.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        self.tx.send(job).await.ok()?;
        result.await.ok()
    }
}

/// Makes everything written under `root` so far durable: one `syncfs` of its file system
/// (blocking; call it off the async threads). What [`crate::dest::Destination::sync`] does for
/// a local destination; public so that benchmarks can hold a baseline to the same durability.
pub fn sync_file_system(root: &Path) -> std::io::Result<()> {
    sync_dir(&std::fs::File::open(root)?)
}

#[cfg(target_os = "linux")]
fn sync_dir(dir: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `dir` is an open file descriptor for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_dir(dir: &std::fs::File) -> std::io::Result<()> {
    // Without syncfs: the directory itself (file contents are the caller's business there).
    dir.sync_all()
}

/// Drives a future to completion on the current (non-runtime) thread.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}
