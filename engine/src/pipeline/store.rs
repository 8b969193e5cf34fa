//! Ready-made [`ObjectSource`]s for the standalone replicator and the tools: a local versioned
//! store on the file system ([`LocalVersionStore`]) and any `object_store` backend read by
//! version id ([`ObjectStoreSource`], e.g. a versioned bucket on an S3-compatible endpoint).
//!
//! Embedding servers implement [`ObjectSource`] over their own storage instead.

#[cfg(feature = "aws")]
use s3repl_io::dest::{S3ReadError, S3VersionReader};
use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::{GetOptions, GetRange, ObjectStore};

use super::source::{BoxFuture, ObjectSource, SourceError};

/// A versioned object store in a directory: every version of every key is one immutable file
/// at `ROOT/<bucket>/<2 hex>/<BLAKE3 of the key, hex>/<version id>`. Hashing the key keeps any
/// S3 key (up to 1,024 bytes, any characters, `a` and `a/b` both present) a valid path; version
/// ids that are not plain file names are hex-encoded.
#[derive(Debug, Clone)]
pub struct LocalVersionStore {
    root: Arc<Path>,
    durable: bool,
    /// Whole-version reads through one `io_uring` thread (started on the first read), unless
    /// turned off or unavailable; `None` inside means unavailable.
    uring: Option<Arc<std::sync::OnceLock<Option<s3repl_io::files::FileReader>>>>,
}

/// Versions shorter than this are read whole with `io_uring`; longer ones, and ranges, with
/// `pread` on tokio's blocking pool: for small versions the ring reads several times as many
/// per second (`benches/benches/source_reads.rs`; figures in ARCHITECTURE.md, "Ready-made
/// sources").
const URING_READ_MAX: usize = 64 << 10;

/// Reads the `io_uring` thread keeps in flight (each slot has a buffer of [`URING_READ_MAX`]
/// bytes: 4 MiB per store).
const URING_DEPTH: usize = 64;

/// How a failed `object_store` read of a version maps to a source error.
fn failure<'a>(
    bucket: &'a str,
    key: &'a str,
    version_id: &'a str,
) -> impl Fn(object_store::Error) -> SourceError + 'a {
    move |e| match e {
        object_store::Error::NotFound { .. } => not_found(bucket, key, version_id),
        e => SourceError::Transient(e.to_string()),
    }
}

fn not_found(bucket: &str, key: &str, version_id: &str) -> SourceError {
    SourceError::VersionNotFound {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version_id: version_id.to_owned(),
    }
}

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !s.starts_with(".tmp")
}

/// Whether `bucket` is a valid S3 bucket name (3–63 lowercase letters, digits, dots, hyphens,
/// starting and ending with a letter or digit). Only such names become directories.
pub fn valid_bucket_name(bucket: &str) -> bool {
    let b = bucket.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

impl LocalVersionStore {
    /// A store under `root` (created on first write). Each `put` is durable (fsynced) before it
    /// returns, as a version's bytes must be before its record is appended; see
    /// [`LocalVersionStore::durable`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalVersionStore {
            root: root.into().into(),
            durable: true,
            uring: Some(Arc::new(std::sync::OnceLock::new())),
        }
    }

    /// Reads every version with `pread` on tokio's blocking pool, never with `io_uring`.
    #[must_use]
    pub fn without_io_uring(mut self) -> Self {
        self.uring = None;
        self
    }

    /// The `io_uring` reader, started on first use; `None` when turned off or unavailable
    /// (logged once).
    fn uring(&self) -> Option<&s3repl_io::files::FileReader> {
        self.uring
            .as_ref()?
            .get_or_init(|| {
                match s3repl_io::files::FileReader::start(URING_DEPTH, URING_READ_MAX) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::info!(error = %e, "io_uring file reads are unavailable; local versions are read with pread.");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Whether [`LocalVersionStore::put`] fsyncs the version file and its directory before
    /// returning (the default): needed when the version's record is appended right after.
    /// `false` only where losing the bytes in a crash does not matter (load generators, tests
    /// of other things).
    #[must_use]
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// The file of one version, or `None` for an invalid bucket name.
    pub fn path(&self, bucket: &str, key: &str, version_id: &str) -> Option<PathBuf> {
        if !valid_bucket_name(bucket) {
            return None;
        }
        let hash = blake3::hash(key.as_bytes()).to_hex();
        let version = if plain_name(version_id) {
            version_id.to_owned()
        } else {
            format!("x{}", hex::encode(version_id.as_bytes()))
        };
        Some(self.root.join(bucket).join(&hash[..2]).join(hash.as_str()).join(version))
    }

    /// Stores a version (write to a temporary file, then rename: readers never see a partial
    /// version). Writing the same version again replaces it with the same bytes.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        data: &[u8],
    ) -> std::io::Result<()> {
        let path = self.path(bucket, key, version_id).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid bucket name")
        })?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            if self.durable {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            if self.durable {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn read_file(path: &Path, range: Option<std::ops::Range<u64>>) -> std::io::Result<Bytes> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let range = range.unwrap_or(0..len);
    let n = usize::try_from(range.end.saturating_sub(range.start))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "range too large"))?;
    let mut buf = vec![0u8; n];
    read_at(&f, len, range, &mut buf)?;
    Ok(Bytes::from(buf))
}

/// Reads `range` of `f` (`len` bytes long) into `buf`, as long as the range.
fn read_at(
    f: &std::fs::File,
    len: u64,
    range: std::ops::Range<u64>,
    buf: &mut [u8],
) -> std::io::Result<()> {
    if range.start > range.end || range.end > len || (range.end - range.start) != buf.len() as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("range {range:?} outside a {len}-byte version"),
        ));
    }
    f.read_exact_at(buf, range.start)
}

/// How a failed read of a stored version maps to a source error.
fn io_failure<'a>(
    bucket: &'a str,
    key: &'a str,
    version_id: &'a str,
) -> impl Fn(std::io::Error) -> SourceError + 'a {
    move |e| match e.kind() {
        std::io::ErrorKind::NotFound => not_found(bucket, key, version_id),
        _ => SourceError::Transient(e.to_string()),
    }
}

impl LocalVersionStore {
    fn read<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: Option<std::ops::Range<u64>>,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        Box::pin(async move {
            let path = self
                .path(bucket, key, version_id)
                .ok_or_else(|| not_found(bucket, key, version_id))?;
            let failed = io_failure(bucket, key, version_id);
            if range.is_none()
                && let Some(reader) = self.uring()
            {
                match reader.read(path.clone()).await {
                    Some(Ok(Some(b))) => return Ok(b),
                    Some(Err(e)) => return Err(failed(e)),
                    // Too long for one read, or the reader's thread is gone.
                    Some(Ok(None)) | None => {}
                }
            }
            tokio::task::spawn_blocking(move || read_file(&path, range))
                .await
                .map_err(|e| SourceError::Transient(format!("read task: {e}")))?
                .map_err(failed)
        })
    }
}

impl ObjectSource for LocalVersionStore {
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        self.read(bucket, key, version_id, None)
    }

    fn get_range<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        self.read(bucket, key, version_id, Some(range))
    }

    /// `pread` straight into the engine's buffer, on this worker thread handed over to
    /// blocking (`block_in_place`): only on a multi-threaded tokio runtime, which allows that;
    /// elsewhere `false`, and the engine reads with `get_range` on the blocking pool.
    fn read_range_into<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, Result<bool, SourceError>> {
        Box::pin(async move {
            if !multi_threaded() {
                return Ok(false);
            }
            let path = self
                .path(bucket, key, version_id)
                .ok_or_else(|| not_found(bucket, key, version_id))?;
            tokio::task::block_in_place(|| {
                let f = std::fs::File::open(&path)?;
                let len = f.metadata()?.len();
                read_at(&f, len, range, buf)
            })
            .map_err(io_failure(bucket, key, version_id))?;
            Ok(true)
        })
    }

    /// On a multi-threaded runtime only (see [`LocalVersionStore::read_range_into`]).
    fn reads_into_buffers(&self) -> bool {
        multi_threaded()
    }
}

/// Whether the current tokio runtime is multi-threaded (`block_in_place` needs one).
fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Reads versions from `object_store` backends, one per source bucket, by version id (on an
/// S3-compatible endpoint: `GET /key?versionId=…`, ranges as `Range` requests).
///
/// Keys `object_store`'s paths cannot hold unchanged (a `logs/` folder marker, `a//b`) are
/// read with signed requests from S3 buckets ([`ObjectStoreSource::s3_bucket`]), and refused
/// elsewhere (`SrcGetObjectNotPermitted`) rather than read as another object.
#[derive(Debug, Clone, Default)]
pub struct ObjectStoreSource {
    buckets: HashMap<String, Arc<dyn ObjectStore>>,
    /// Where S3 source buckets are, for server-side copies.
    locations: HashMap<String, s3repl_io::dest::S3Location>,
    /// Signed readers of S3 source buckets, for keys `object_store` cannot address.
    #[cfg(feature = "aws")]
    signed: HashMap<String, S3VersionReader>,
}

impl ObjectStoreSource {
    /// No buckets yet.
    pub fn new() -> Self {
        ObjectStoreSource::default()
    }

    /// Reads `bucket`'s versions from `store`.
    #[must_use]
    pub fn bucket(mut self, bucket: &str, store: Arc<dyn ObjectStore>) -> Self {
        self.buckets.insert(bucket.to_owned(), store);
        self
    }

    /// Reads `bucket`'s versions from the bucket `opts` names on an S3-compatible endpoint;
    /// S3 destinations on the same endpoint copy them server-side.
    #[cfg(feature = "aws")]
    pub fn s3_bucket(
        mut self,
        bucket: &str,
        opts: &s3repl_io::dest::S3Options,
    ) -> Result<Self, object_store::Error> {
        self.buckets.insert(bucket.to_owned(), s3repl_io::dest::s3_store(opts)?);
        self.locations.insert(bucket.to_owned(), opts.location());
        self.signed.insert(bucket.to_owned(), S3VersionReader::new(opts));
        Ok(self)
    }

    /// Reads a version (or bytes `range` of it) whose key `object_store` cannot address, with
    /// a signed request where the bucket is on S3; refused otherwise.
    #[cfg_attr(not(feature = "aws"), allow(clippy::unused_async))]
    async fn read_signed(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, SourceError> {
        #[cfg(feature = "aws")]
        if let Some(reader) = self.signed.get(bucket) {
            return reader.get(key, version_id, range).await.map_err(|e| match e {
                S3ReadError::NotFound(_) => not_found(bucket, key, version_id),
                S3ReadError::Transient(e) => SourceError::Transient(format!("{bucket}/{key}: {e}")),
                e => SourceError::Refused(format!("{bucket}/{key}: {e}")),
            });
        }
        let _ = (version_id, range);
        Err(SourceError::Refused(format!(
            "{bucket}/{key}: object_store cannot address this key unchanged (a leading or trailing '/', an empty, '.' or '..' segment)"
        )))
    }

    /// Starts the GET of a version, or of bytes `range` of it.
    async fn open(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<object_store::GetResult, SourceError> {
        let store = self.buckets.get(bucket).ok_or_else(|| not_found(bucket, key, version_id))?;
        // Callers read keys `Path` cannot hold unchanged with `read_signed`: `Path` would read
        // `logs/` as `logs` (another object) and cannot name `a//b`.
        let path = object_store::path::Path::parse(key)
            .ok()
            .filter(|p| p.as_ref() == key)
            .ok_or_else(|| not_found(bucket, key, version_id))?;
        let opts = GetOptions {
            version: Some(version_id.to_owned()),
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        store.get_opts(&path, opts).await.map_err(failure(bucket, key, version_id))
    }

    fn read<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: Option<std::ops::Range<u64>>,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        Box::pin(async move {
            if !s3repl_io::dest::addressable(key) {
                return self.read_signed(bucket, key, version_id, range).await;
            }
            let got = self.open(bucket, key, version_id, range).await?;
            got.bytes().await.map_err(failure(bucket, key, version_id))
        })
    }

    /// Streams bytes `range` of a version into `buf`, which must be exactly filled.
    async fn read_into(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        range: std::ops::Range<u64>,
        buf: &mut [u8],
    ) -> Result<(), SourceError> {
        use futures_util::StreamExt as _;
        let want = buf.len();
        let short = |filled: usize| {
            SourceError::Transient(format!(
                "{bucket}/{key}: {filled} of the {want} bytes of range {range:?} returned"
            ))
        };
        if !s3repl_io::dest::addressable(key) {
            let got = self.read_signed(bucket, key, version_id, Some(range.clone())).await?;
            if got.len() != buf.len() {
                return Err(short(got.len()));
            }
            buf.copy_from_slice(&got);
            return Ok(());
        }
        let fail = failure(bucket, key, version_id);
        let mut chunks =
            self.open(bucket, key, version_id, Some(range.clone())).await?.into_stream();
        let mut filled = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(&fail)?;
            let Some(to) = buf.get_mut(filled..filled + chunk.len()) else {
                return Err(SourceError::Transient(format!(
                    "{bucket}/{key}: more than the {} bytes of range {range:?} returned",
                    buf.len()
                )));
            };
            to.copy_from_slice(&chunk);
            filled += chunk.len();
        }
        if filled != buf.len() {
            return Err(short(filled));
        }
        Ok(())
    }
}

impl ObjectSource for ObjectStoreSource {
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        self.read(bucket, key, version_id, None)
    }

    fn get_range<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        self.read(bucket, key, version_id, Some(range))
    }

    /// Streams the range into the engine's buffer: no allocation of the part's size.
    fn read_range_into<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, Result<bool, SourceError>> {
        Box::pin(async move {
            self.read_into(bucket, key, version_id, range, buf).await?;
            Ok(true)
        })
    }

    fn reads_into_buffers(&self) -> bool {
        true
    }

    fn s3_location(&self, bucket: &str) -> Option<&s3repl_io::dest::S3Location> {
        self.locations.get(bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt as _;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_ranges_read_into_the_callers_buffer_on_a_multi_threaded_runtime() {
        let root = std::env::temp_dir().join(format!("s3repl-lvs-into-{}", std::process::id()));
        let store = LocalVersionStore::new(&root).durable(false);
        let data: Vec<u8> = (0..100u8).collect();
        store.put("bucket-1", "k", "v1", &data).unwrap();
        assert!(store.reads_into_buffers());
        let mut buf = vec![0u8; 50];
        assert!(store.read_range_into("bucket-1", "k", "v1", 10..60, &mut buf).await.unwrap());
        assert_eq!(buf, &data[10..60]);
        let mut buf = vec![0u8; 60];
        let short = store.read_range_into("bucket-1", "k", "v1", 90..150, &mut buf).await;
        assert!(matches!(short, Err(SourceError::Transient(_))), "{short:?}");
        let missing = store.read_range_into("bucket-1", "k", "v2", 0..10, &mut buf[..10]).await;
        assert!(matches!(missing, Err(SourceError::VersionNotFound { .. })), "{missing:?}");
        // A current-thread runtime cannot block a worker: the engine is told to use get_range.
        let current = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let asks = rt.block_on(async { store.reads_into_buffers() });
            (asks, rt.block_on(store.read_range_into("bucket-1", "k", "v1", 0..10, &mut buf[..10])))
        });
        assert_eq!(current.join().unwrap(), (false, Ok(false)));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn object_store_ranges_stream_into_the_callers_buffer() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let data: Vec<u8> = (0..100u8).collect();
        let path = object_store::path::Path::parse("dir/k").unwrap();
        store.put(&path, data.clone().into()).await.unwrap();
        let source = ObjectStoreSource::new().bucket("b", store.clone());
        assert!(source.reads_into_buffers());
        let mut buf = vec![0u8; 50];
        assert!(source.read_range_into("b", "dir/k", "v", 10..60, &mut buf).await.unwrap());
        assert_eq!(buf, &data[10..60]);
        // A version shorter than the range: an error, never a part with stale bytes.
        let mut buf = vec![0u8; 60];
        let short = source.read_range_into("b", "dir/k", "v", 90..150, &mut buf).await;
        assert!(matches!(short, Err(SourceError::Transient(_))), "{short:?}");
        // A key `Path` cannot hold unchanged is refused (not an S3 bucket: no signed reads),
        // never read as another object (`dir/k/` would be read as `dir/k`).
        for key in ["dir/k/", "dir//k"] {
            let refused = source.get("b", key, "v").await;
            assert!(matches!(refused, Err(SourceError::Refused(_))), "{key}: {refused:?}");
            let mut buf = vec![0u8; 10];
            let refused = source.read_range_into("b", key, "v", 0..10, &mut buf).await;
            assert!(matches!(refused, Err(SourceError::Refused(_))), "{key}: {refused:?}");
        }
        let missing = source.read_range_into("b", "dir/none", "v", 0..10, &mut buf[..10]).await;
        assert!(matches!(missing, Err(SourceError::VersionNotFound { .. })), "{missing:?}");
    }

    #[tokio::test]
    async fn local_versions_round_trip_with_ranges_and_odd_names() {
        let root = std::env::temp_dir().join(format!("s3repl-lvs-{}", std::process::id()));
        let store = LocalVersionStore::new(&root).durable(true);
        store.put("bucket-1", "a", "v1", b"first").unwrap();
        store.put("bucket-1", "a/b", "v1", b"nested").unwrap();
        store.put("bucket-1", "a", "../../etc/passwd", b"odd version").unwrap();
        store.put("bucket-1", &"k".repeat(1024), "v1", b"long key").unwrap();
        assert_eq!(store.get("bucket-1", "a", "v1").await.unwrap(), &b"first"[..]);
        assert_eq!(store.get("bucket-1", "a/b", "v1").await.unwrap(), &b"nested"[..]);
        assert_eq!(
            store.get("bucket-1", "a", "../../etc/passwd").await.unwrap(),
            &b"odd version"[..]
        );
        assert_eq!(store.get_range("bucket-1", "a", "v1", 1..4).await.unwrap(), &b"irs"[..]);
        // Whole reads go through the io_uring reader where it starts; a version too long for
        // its one read, and a store with it turned off, read the same bytes with pread.
        let big: Vec<u8> =
            (0..URING_READ_MAX + 1000).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect();
        store.put("bucket-1", "big", "v1", &big).unwrap();
        let plain = store.clone().without_io_uring();
        for s in [&store, &plain] {
            assert_eq!(s.get("bucket-1", "big", "v1").await.unwrap(), &big[..]);
            assert_eq!(s.get("bucket-1", "a", "v1").await.unwrap(), &b"first"[..]);
            assert!(matches!(
                s.get("bucket-1", "a", "v9").await,
                Err(SourceError::VersionNotFound { .. })
            ));
        }
        assert!(plain.uring().is_none());
        assert_eq!(store.uring().is_some(), s3repl_io::files::FileReader::start(2, 64).is_ok());
        assert!(matches!(
            store.get("bucket-1", "a", "v2").await,
            Err(SourceError::VersionNotFound { .. })
        ));
        assert!(matches!(
            store.get_range("bucket-1", "a", "v1", 3..9).await,
            Err(SourceError::Transient(_))
        ));
        assert!(store.put("Bad_Bucket", "a", "v1", b"x").is_err());
        assert!(matches!(
            store.get("../x", "a", "v1").await,
            Err(SourceError::VersionNotFound { .. })
        ));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn bucket_names() {
        assert!(valid_bucket_name("my-bucket.1"));
        for bad in ["ab", "-ab", "ab-", "Abc", "a_b", "..", &"a".repeat(64)] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn object_store_source_reads_the_version() {
        let mem: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = object_store::path::Path::parse("k").unwrap();
        mem.put(&path, Bytes::from_static(b"hello").into()).await.unwrap();
        let source = ObjectStoreSource::new().bucket("b", mem);
        // The in-memory store ignores version ids (versioned reads are tested against a real
        // S3 server in tests/tests/s3_destination.rs); ranges and unknown buckets are checked here.
        assert_eq!(source.get("b", "k", "v1").await.unwrap(), &b"hello"[..]);
        assert_eq!(source.get_range("b", "k", "v1", 1..3).await.unwrap(), &b"el"[..]);
        assert!(matches!(
            source.get("b", "missing", "v1").await,
            Err(SourceError::VersionNotFound { .. })
        ));
        assert!(matches!(
            source.get("c", "k", "v1").await,
            Err(SourceError::VersionNotFound { .. })
        ));
    }
}
