//! Writes to a local file-system destination on dedicated threads.
//!
//! `object_store`'s `LocalFileSystem` runs each operation through tokio's blocking pool when it
//! is called inside a runtime: one thread hand-off (and, under load, one more pool thread) per
//! replica, which measured at under a third of the file system's own create + write + rename
//! rate on tmpfs. Outside a runtime it does its I/O inline, so these threads call it directly,
//! fed by a bounded queue (a full queue makes the caller wait: backpressure, not growth).
//!
//! Whole-object writes ([`put_file`]) skip `LocalFileSystem::put_opts` and write the same
//! files themselves: the same staging-file names and the same rename into place, so the
//! store's listings, reads, deletes and multipart uploads see exactly what it would have
//! written, without its per-call URL round trip for the path, its `fstat` for an entity tag
//! nobody reads here, and its boxed future (a tenth of these threads' time at 4 KiB).
//!
//! One pool serves every local destination of the process (a configuration naming many
//! destination buckets must not start threads per bucket). Durability comes in groups:
//! `LocalFileSystem` does not fsync, so [`sync_file_system`] flushes the whole file system
//! (`syncfs`) once per checkpoint, before the checkpoint can count the replicas written so far as
//! done.

use std::path::Path;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use object_store::ObjectStore;
use tokio::sync::{mpsc, oneshot};

use super::backend::{Backend, Stamp};
use super::store::{StoreBackend, exact_path};
use super::{
    CurrentReplica, DestinationError, MultipartWrite, Operation, Pending, PutOutcome, ReplicaMeta,
    VersionSettings,
};

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
        let mut slot = SHARED.lock();
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
                    let job = rx.lock().blocking_recv();
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

/// Whether `LocalFileSystem` keeps `location` as a file: its last segment must not be one of
/// the store's own staging names (`name#` and digits), which its listings skip and its calls
/// refuse.
pub(crate) fn is_file_name(location: &object_store::path::Path) -> bool {
    let name = location.filename().unwrap_or_default();
    !name.is_empty() && !is_staging_name(name)
}

/// `LocalFileSystem`'s staging names: what follows the first `#` is all digits.
fn is_staging_name(name: &str) -> bool {
    name.split_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `chunks` as the object `location` of a `LocalFileSystem` rooted at `root`, as its
/// `put` would (without `fsync`, like the store it stands in for): a staging file
/// `<file>#<n>` (the first `n` from 1 not taken; the store's listings skip such names) created
/// with its missing parent directories, written, closed (a failed `close` is an error: on
/// network file systems it can mean lost data) and renamed over the file. The staging file
/// is removed on failure. I/O errors are [`object_store::Error::Generic`], as the store
/// reports them (transient: retried); a name the store would refuse, a last segment ending in
/// `#` and digits (its own staging names), is [`object_store::Error::InvalidPath`].
#[cfg(unix)]
pub(crate) fn put_file(
    root: &Path,
    location: &object_store::path::Path,
    chunks: &[bytes::Bytes],
) -> object_store::Result<()> {
    use std::io::Write as _;
    use std::os::fd::IntoRawFd as _;
    if !is_file_name(location) {
        let path = std::path::PathBuf::from(location.as_ref());
        return Err(object_store::Error::InvalidPath {
            source: object_store::path::Error::InvalidPath { path },
        });
    }
    let dest = root.join(location.as_ref());
    // The error's kind is kept (a full disk is told apart by it: `is_out_of_space`).
    let fail = |source: std::io::Error, at: &Path| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(std::io::Error::new(source.kind(), format!("{}: {source}", at.display()))),
    };
    let mut n = 1u32;
    let mut made_parent = false;
    let (mut file, staging) = loop {
        let mut staging = dest.clone().into_os_string();
        staging.push(format!("#{n}"));
        let staging = std::path::PathBuf::from(staging);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&staging) {
            Ok(f) => break (f, staging),
            // Bounded: a file system that answers "exists" to every name must not spin here.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !made_parent => {
                let parent = dest.parent().unwrap_or(root);
                std::fs::create_dir_all(parent).map_err(|e| fail(e, parent))?;
                made_parent = true;
            }
            Err(e) => return Err(fail(e, &staging)),
        }
    };
    let written = chunks.iter().try_for_each(|c| file.write_all(c));
    // SAFETY: `into_raw_fd` hands over the descriptor, which is closed exactly once, here.
    let closed = if unsafe { libc::close(file.into_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    let done = written.and(closed).and_then(|()| std::fs::rename(&staging, &dest));
    done.map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        fail(e, &dest)
    })
}

/// The error of a write the writer threads can no longer take (the process is ending).
fn writers_stopped() -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: "the destination's writer threads stopped".into(),
    }
}

/// A local file-system destination: `LocalFileSystem` for everything but whole-object
/// writes, which the shared writer threads make ([`put_file`]); durable with
/// [`sync_file_system`]; keeps no metadata (the store has none).
#[derive(Debug)]
pub(crate) struct LocalBackend {
    inner: StoreBackend,
    writers: Arc<LocalWriters>,
    /// The canonical root both the store and [`put_file`] resolve keys under.
    root: Arc<Path>,
}

impl LocalBackend {
    /// A backend under `root`, created if missing.
    pub(crate) fn new(arn: Arc<str>, root: &Path) -> Result<Self, object_store::Error> {
        let io = |e: std::io::Error| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        };
        std::fs::create_dir_all(root).map_err(io)?;
        // Whole objects are written by `put_file` beside the store: both resolve keys under
        // this one absolute root (as the store would canonicalize it anyway).
        let root = std::fs::canonicalize(root).map_err(io)?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)?;
        let writers = LocalWriters::shared(super::LOCAL_WRITERS).map_err(io)?;
        Ok(LocalBackend {
            inner: StoreBackend::new(arn, Arc::new(fs), false),
            writers,
            root: root.into(),
        })
    }

    /// `key` as a path of this store, refusing (for every operation, as not permitted) the
    /// names `LocalFileSystem` keeps for its staging files (`report#2`): the store itself
    /// would refuse them as a transient error, retried until the deadline.
    fn path(
        &self,
        key: &str,
        operation: Operation,
    ) -> Result<object_store::path::Path, DestinationError> {
        let fail = self.inner.fail(operation);
        let path = exact_path(key).map_err(&fail)?;
        if !is_file_name(&path) {
            let why = format!(
                "key {key:?} cannot be stored on a local file system: names ending in '#' and digits are its staging files"
            );
            return Err(fail(object_store::Error::NotSupported { source: why.into() }));
        }
        Ok(path)
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    fn keeps_metadata(&self) -> bool {
        false
    }

    fn is_local(&self) -> bool {
        true
    }

    async fn put(
        &self,
        key: &str,
        data: bytes::Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, DestinationError> {
        let path = self.path(key, Operation::Put)?;
        let fail = self.inner.fail(Operation::Put);
        // The store keeps neither metadata nor tags: the file is all there is to write.
        #[cfg(unix)]
        let job = {
            let _ = meta;
            let root = self.root.clone();
            move || put_file(&root, &path, std::slice::from_ref(&data))
        };
        // Where `put_file` is not built, the store writes it, on the writer threads still.
        #[cfg(not(unix))]
        let job = {
            let (attributes, tags) = self.inner.attributes_and_tags(meta);
            let opts = object_store::PutOptions { attributes, tags, ..Default::default() };
            let store = self.inner.store.clone();
            let payload = object_store::PutPayload::from_bytes(data);
            move || futures_executor::block_on(store.put_opts(&path, payload, opts)).map(|_| ())
        };
        self.writers.run(job).await.ok_or_else(writers_stopped).and_then(|r| r).map_err(fail)?;
        Ok(PutOutcome { version_id: None, e_tag: None, pending: Pending::NONE })
    }

    async fn start_multipart(
        &self,
        key: &str,
        meta: &ReplicaMeta,
    ) -> Result<MultipartWrite, DestinationError> {
        let path = self.path(key, Operation::MultipartInit)?;
        self.inner.start_multipart_at(path, meta).await
    }

    async fn delete_marker(&self, key: &str) -> Result<Option<String>, DestinationError> {
        let path = self.path(key, Operation::DeleteMarker)?;
        self.inner.delete_at(path).await
    }

    async fn head(
        &self,
        key: &str,
        name: &str,
        version: Option<String>,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        self.path(key, Operation::Head)?;
        self.inner.head(key, name, version).await
    }

    async fn sync_metadata(
        &self,
        _key: &str,
        _stamp: Stamp<'_>,
        _replica_version: Option<&str>,
        _settings: &VersionSettings<'_>,
    ) -> Result<Option<String>, DestinationError> {
        // No metadata, so no tags to change (the destination does not ask).
        Ok(None)
    }

    /// Room to write: a probe file (a staging name, `.s3repl-probe#0`, which no key can take
    /// and the sweep of a killed process's leftovers removes) written, synced and removed on
    /// the writer threads. A full disk (or quota, or file size limit) fails it.
    async fn probe(&self) -> Result<(), DestinationError> {
        /// Enough to cross a file system's reserve of partly used blocks.
        const PROBE_BYTES: usize = 256 << 10;
        let (root, path) = (self.root.clone(), self.root.join(".s3repl-probe#0"));
        let job = move || {
            use std::io::Write as _;
            // A root removed meanwhile is made again, as writes make their directories.
            let written = std::fs::create_dir_all(&root)
                .and_then(|()| std::fs::File::create(&path))
                .and_then(|mut f| {
                    f.write_all(&vec![0u8; PROBE_BYTES])?;
                    f.sync_data()
                });
            let _ = std::fs::remove_file(&path);
            written
        };
        let fail = self.inner.fail(Operation::Put);
        match self.writers.run(job).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(fail(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })),
            None => Err(fail(writers_stopped())),
        }
    }

    fn remove_orphaned_staging(&self, before: std::time::SystemTime) -> std::io::Result<usize> {
        remove_orphaned_staging(&self.root, before)
    }

    fn sync(&self) -> Result<(), DestinationError> {
        sync_file_system(&self.root).map_err(|e| DestinationError::Transient {
            destination: self.inner.arn.to_string(),
            source: object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) },
        })
    }
}

/// Removes every staging file (`name#digits`) under `root` last modified before `before`;
/// returns how many. Such names are never keys here ([`is_file_name`]), so each is what a
/// killed process left of a write (`put_file`'s, or a `LocalFileSystem` multipart upload's).
pub(crate) fn remove_orphaned_staging(
    root: &Path,
    before: std::time::SystemTime,
) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // Removed meanwhile (a delete of the last key under it).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            // The store's own rule, so no name a key can have is ever taken for one. (The
            // staging file of a key that itself holds a `#` does not match it and is left: a
            // key may have its name.)
            let staging = entry.file_name().to_str().is_some_and(is_staging_name);
            if !staging || !kind.is_file() {
                continue;
            }
            let old = entry.metadata()?.modified().is_ok_and(|m| m < before);
            if old {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
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

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use bytes::Bytes;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path;
    use object_store::{ObjectStore as _, ObjectStoreExt as _};

    use super::put_file;

    fn root(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("s3repl-put-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::canonicalize(&d).unwrap()
    }

    /// The names under `dir`, sorted (staging files included).
    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// What `put_file` writes is what the store it stands in for reads, lists and deletes;
    /// it creates missing directories, replaces an earlier file, steps over a staging name
    /// left by a crash, and leaves no staging file behind.
    #[tokio::test]
    async fn the_store_sees_exactly_what_put_file_wrote() {
        let dir = root("store");
        let store = LocalFileSystem::new_with_prefix(&dir).unwrap();
        let key = Path::parse("a/b c/%41 d.bin").unwrap();
        let chunks = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        put_file(&dir, &key, &chunks).unwrap();
        let got = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), b"hello world");
        // A staging file left by a crash is stepped over, and stays invisible to listings.
        let parent = dir.join("a/b c");
        std::fs::write(parent.join("%41 d.bin#1"), b"left over").unwrap();
        put_file(&dir, &key, &[Bytes::from_static(b"second")]).unwrap();
        let got = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), b"second");
        assert_eq!(names(&parent), ["%41 d.bin", "%41 d.bin#1"]);
        let listed = store.list_with_delimiter(Some(&Path::parse("a/b c").unwrap())).await.unwrap();
        let listed: Vec<_> = listed.objects.iter().map(|o| o.location.to_string()).collect();
        assert_eq!(listed, [key.to_string()]);
        store.delete(&key).await.unwrap();
        assert!(store.head(&key).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn orphaned_staging_files_are_removed_and_nothing_else() {
        let dir = root("orphans");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        for f in ["k#1", "a/b/obj#17", "a/keep#x", "a/b/keep", "a/#", "a/b/x#", "a/y#z#3"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let cutoff = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        // Not before a staging file of this run: untouched.
        let early = std::time::SystemTime::UNIX_EPOCH;
        assert_eq!(super::remove_orphaned_staging(&dir, early).unwrap(), 0);
        assert_eq!(super::remove_orphaned_staging(&dir, cutoff).unwrap(), 2);
        let mut left: Vec<String> = walkdir(&dir);
        left.sort();
        assert_eq!(left, ["a/#", "a/b/keep", "a/b/x#", "a/keep#x", "a/y#z#3"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn walkdir(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    #[test]
    fn staging_names_are_refused_and_failures_leave_nothing_behind() {
        let dir = root("fail");
        for name in ["x#1", "d/y#20"] {
            let err = put_file(&dir, &Path::parse(name).unwrap(), &[]).unwrap_err();
            assert!(matches!(err, object_store::Error::InvalidPath { .. }), "{name}: {err}");
        }
        // `x#a` is an ordinary name to the store.
        put_file(&dir, &Path::parse("x#a").unwrap(), &[Bytes::from_static(b"1")]).unwrap();
        // A directory where the file should go: the rename fails, transiently, and the
        // staging file is removed.
        std::fs::create_dir_all(dir.join("taken/inner")).unwrap();
        let err = put_file(&dir, &Path::parse("taken").unwrap(), &[Bytes::from_static(b"z")])
            .unwrap_err();
        assert!(matches!(err, object_store::Error::Generic { .. }), "{err}");
        assert_eq!(names(&dir), ["taken", "x#a"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
