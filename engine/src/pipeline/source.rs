//! Where the engine reads a version's bytes: the embedding server's storage.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::Bytes;

/// A boxed, `Send` future (object-safe async trait methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a source read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The version no longer exists (S3's `SrcVersionNotFound`): permanent.
    #[error("source version {bucket}/{key}@{version_id} not found")]
    VersionNotFound {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Version id.
        version_id: String,
    },
    /// Anything else (I/O, timeouts): retried.
    #[error("source read failed: {0}")]
    Transient(String),
    /// The source cannot read this version as asked, and never will (S3's
    /// `SrcGetObjectNotPermitted`): permanent.
    #[error("source read refused: {0}")]
    Refused(String),
}

/// How the engine reads the bytes of a committed version. Implemented by the embedding server
/// over its own storage. Contract: reads of a committed version are repeatable (same bytes every
/// time) and take no lock that writers wait on (a version is immutable once committed).
pub trait ObjectSource: Send + Sync {
    /// The whole version.
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>>;

    /// Bytes `range` of the version (large objects are copied part by part). The default reads
    /// the whole version and slices it; sources that can read ranges should override it.
    fn get_range<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        Box::pin(async move { slice_range(&self.get(bucket, key, version_id).await?, range) })
    }

    /// Reads bytes `range` of the version into `buf` (exactly as long as `range`), for sources
    /// that can fill a caller's buffer: the engine lends one from its pool of part buffers, so
    /// a large copy reuses memory already mapped instead of allocating every part (which,
    /// besides the page faults, leaves the allocator holding freed parts: memory beyond the byte
    /// budget). `Ok(false)`: this source does not read into buffers (the default), and the engine
    /// calls [`ObjectSource::get_range`] instead. A version shorter than `range` is an error.
    /// `buf` is zeroed before the call (it may have held another object's bytes). The engine
    /// calls this only where [`ObjectSource::reads_into_buffers`] says it may succeed.
    fn read_range_into<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, Result<bool, SourceError>> {
        let _ = (bucket, key, version_id, range, buf);
        Box::pin(async { Ok(false) })
    }

    /// Whether [`ObjectSource::read_range_into`] can fill buffers (it may still decline a
    /// call). Sources that override it must say so here: otherwise the engine does not lend
    /// them buffers, and so spares zeroing a buffer for a call that can only decline. The
    /// default: no.
    fn reads_into_buffers(&self) -> bool {
        false
    }

    /// Where `bucket`'s versions are on an S3-compatible endpoint, if they are: destinations on
    /// that endpoint then copy them server-side instead of reading them through the engine.
    /// The default: nowhere (every copy reads the bytes).
    fn s3_location(&self, bucket: &str) -> Option<&s3repl_io::dest::S3Location> {
        let _ = bucket;
        None
    }
}

/// Bytes `range` of a whole version, or a transient error if the range lies outside it (for
/// sources that read whole versions and slice).
pub fn slice_range(all: &Bytes, range: std::ops::Range<u64>) -> Result<Bytes, SourceError> {
    let start = usize::try_from(range.start).unwrap_or(usize::MAX);
    let end = usize::try_from(range.end).unwrap_or(usize::MAX);
    if start > end || end > all.len() {
        return Err(SourceError::Transient(format!(
            "range {range:?} outside a {}-byte version",
            all.len()
        )));
    }
    Ok(all.slice(start..end))
}

/// (bucket, key, version id).
type VersionKey = (String, String, String);

/// An in-memory source (tests, benchmarks, and embedders' own tests).
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    versions: Arc<Mutex<HashMap<VersionKey, Bytes>>>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        MemorySource::default()
    }

    /// Stores a version.
    pub fn insert(&self, bucket: &str, key: &str, version_id: &str, data: Bytes) {
        self.versions
            .lock()
            .insert((bucket.to_owned(), key.to_owned(), version_id.to_owned()), data);
    }
}

impl ObjectSource for MemorySource {
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        version_id: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        let found = self
            .versions
            .lock()
            .get(&(bucket.to_owned(), key.to_owned(), version_id.to_owned()))
            .cloned();
        Box::pin(async move {
            found.ok_or_else(|| SourceError::VersionNotFound {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                version_id: version_id.to_owned(),
            })
        })
    }
}
