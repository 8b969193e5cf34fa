//! The in-memory object store behind [`super::Destination::in_memory`]: objects are kept as
//! the buffers they arrived in, so a multipart replica is never concatenated.
//!
//! `object_store`'s own `InMemory` copies every multipart upload into one fresh allocation on
//! completion; for large objects that copy and its page faults cost about as much CPU as
//! re-encrypting the object (measured with `s3repl bench --sse-kms`), which made the memory
//! destination a poor stand-in for a real one. Semantics otherwise follow `InMemory`: put
//! modes and preconditions, ranged and conditional gets, entity tags from a counter, no
//! versions, listing in key order; object tags are ignored (the destination layer keeps
//! them in metadata for stores without tagging).
//!
//! Objects are ordered by their path's hash, and a listing sorts what it returns: ordered by
//! path, every write compared paths byte by byte at each level of the tree (a `memcmp` per
//! level, a fifth of the CPU of a small-object run into this store once it held a million
//! objects: `s3repl loadtest --destination memory`, perf), for listings that tests make now
//! and then. (A hash map instead stalled every write for a tenth of a second each time it
//! grew, moving all its entries at once.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, Result, UploadPart,
};

const STORE: &str = "PartsMemory";

/// An in-memory object store that keeps each object as a list of buffers.
#[derive(Debug, Default)]
pub(crate) struct PartsMemory {
    state: Arc<RwLock<State>>,
}

#[derive(Debug, Default)]
struct State {
    objects: Objects,
    next_etag: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    chunks: Arc<[Bytes]>,
    len: u64,
    last_modified: chrono::DateTime<chrono::Utc>,
    e_tag: u64,
    attributes: Attributes,
}

impl Entry {
    fn meta(&self, location: &Path) -> ObjectMeta {
        ObjectMeta {
            location: location.clone(),
            last_modified: self.last_modified,
            size: self.len,
            e_tag: Some(quoted(self.e_tag)),
            version: None,
        }
    }

    /// The buffers' slices covering `range` (within `0..len`), in order.
    fn slices(&self, range: std::ops::Range<u64>) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for c in self.chunks.iter() {
            let (start, end) = (at, at + c.len() as u64);
            at = end;
            if end <= range.start || c.is_empty() {
                continue;
            }
            if start >= range.end {
                break;
            }
            let from = usize::try_from(range.start.saturating_sub(start)).unwrap_or(0);
            let to = usize::try_from(range.end.min(end) - start).unwrap_or(c.len());
            out.push(c.slice(from..to));
        }
        out
    }
}

fn poisoned() -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: "the store's lock was poisoned".into() }
}

fn not_found(location: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: location.to_string(),
        source: format!("no object at {location}").into(),
    }
}

/// The objects, ordered by their path's hash (and then the path, should two hashes meet).
#[derive(Debug, Default)]
struct Objects {
    map: BTreeMap<(u64, Path), Entry>,
}

impl Objects {
    fn key(location: &Path) -> (u64, Path) {
        use std::hash::BuildHasher as _;
        let h = foldhash::fast::FixedState::with_seed(0x5eed).hash_one(location.as_ref());
        (h, location.clone())
    }

    fn get(&self, location: &Path) -> Option<&Entry> {
        self.map.get(&Self::key(location))
    }

    fn remove(&mut self, location: &Path) -> Option<Entry> {
        self.map.remove(&Self::key(location))
    }

    fn iter(&self) -> impl Iterator<Item = (&Path, &Entry)> {
        self.map.iter().map(|((_, p), e)| (p, e))
    }
}

impl State {
    /// Stores `chunks` at `location` under `mode`; returns the new entity tag.
    fn insert(
        &mut self,
        location: &Path,
        chunks: Arc<[Bytes]>,
        mode: &PutMode,
        attributes: Attributes,
    ) -> Result<u64> {
        let slot = self.objects.map.entry(Objects::key(location));
        let existing = match &slot {
            std::collections::btree_map::Entry::Occupied(o) => Some(o.get()),
            std::collections::btree_map::Entry::Vacant(_) => None,
        };
        match (mode, existing) {
            (PutMode::Overwrite, _) | (PutMode::Create, None) => {}
            (PutMode::Create, Some(_)) => {
                return Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "the object exists".into(),
                });
            }
            (PutMode::Update(v), found) => {
                let current = found.map(|e| quoted(e.e_tag));
                if found.is_none() || v.e_tag.is_none() || v.e_tag != current {
                    return Err(object_store::Error::Precondition {
                        path: location.to_string(),
                        source: format!("entity tag {:?} is not {:?}", current, v.e_tag).into(),
                    });
                }
            }
        }
        let e_tag = self.next_etag;
        self.next_etag += 1;
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        let entry = Entry { chunks, len, last_modified: chrono::Utc::now(), e_tag, attributes };
        match slot {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                o.insert(entry);
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
        Ok(e_tag)
    }
}

/// `n` as an entity tag (quoted), without `fmt` (one per write).
fn quoted(n: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    let mut out = String::with_capacity(digits.len() + 2);
    out.push('"');
    out.push_str(digits);
    out.push('"');
    out
}

fn put_result(e_tag: u64) -> PutResult {
    PutResult {
        e_tag: Some(quoted(e_tag)),
        version: None,
        extensions: object_store::Extensions::default(),
    }
}

impl std::fmt::Display for PartsMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(STORE)
    }
}

impl PartsMemory {
    fn entry(&self, location: &Path) -> Result<Entry> {
        let state = self.state.read().map_err(|_| poisoned())?;
        state.objects.get(location).cloned().ok_or_else(|| not_found(location))
    }
}

#[async_trait]
impl ObjectStore for PartsMemory {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let chunks: Arc<[Bytes]> = payload.into_iter().collect();
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let e_tag = state.insert(location, chunks, &opts.mode, opts.attributes)?;
        Ok(put_result(e_tag))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(Upload {
            location: location.clone(),
            attributes: opts.attributes,
            parts: Vec::new(),
            state: self.state.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let entry = self.entry(location)?;
        let meta = entry.meta(location);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(r) => r.as_range(entry.len).map_err(|source| object_store::Error::Generic {
                store: STORE,
                source: Box::new(source),
            })?,
            None => 0..entry.len,
        };
        let slices = if options.head { Vec::new() } else { entry.slices(range.clone()) };
        let stream = futures_util::stream::iter(slices.into_iter().map(Ok));
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream.boxed()),
            attributes: entry.attributes,
            meta,
            range,
            extensions: object_store::Extensions::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let state = self.state.clone();
        locations
            .map(move |location| {
                let location = location?;
                state.write().map_err(|_| poisoned())?.objects.remove(&location);
                Ok(location)
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let root = Path::default();
        let prefix = prefix.unwrap_or(&root);
        let listed: Vec<Result<ObjectMeta>> = match self.state.read() {
            Ok(state) => {
                let mut found: Vec<(&Path, &Entry)> =
                    state.objects.iter().filter(|(k, _)| k.prefix_matches(prefix)).collect();
                found.sort_unstable_by(|a, b| a.0.cmp(b.0));
                found.into_iter().map(|(k, e)| Ok(e.meta(k))).collect()
            }
            Err(_) => vec![Err(poisoned())],
        };
        futures_util::stream::iter(listed).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let root = Path::default();
        let prefix = prefix.unwrap_or(&root);
        let state = self.state.read().map_err(|_| poisoned())?;
        let mut common_prefixes = BTreeSet::new();
        let mut objects = Vec::new();
        for (k, e) in state.objects.iter() {
            let Some(mut parts) = k.prefix_match(prefix) else { continue };
            let Some(first) = parts.next() else { continue };
            if parts.next().is_some() {
                common_prefixes.insert(prefix.clone().join(first));
            } else {
                objects.push(e.meta(k));
            }
        }
        objects.sort_unstable_by(|a, b| a.location.cmp(&b.location));
        Ok(ListResult {
            objects,
            common_prefixes: common_prefixes.into_iter().collect(),
            extensions: object_store::Extensions::default(),
        })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let entry = self.entry(from)?;
        let mode = match options.mode {
            CopyMode::Overwrite => PutMode::Overwrite,
            CopyMode::Create => PutMode::Create,
        };
        let mut state = self.state.write().map_err(|_| poisoned())?;
        state.insert(to, entry.chunks, &mode, entry.attributes)?;
        Ok(())
    }
}

/// A multipart upload: parts are kept as they arrive and become the object's buffers, in part
/// order, on completion.
#[derive(Debug)]
struct Upload {
    location: Path,
    attributes: Attributes,
    parts: Vec<PutPayload>,
    state: Arc<RwLock<State>>,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        Box::pin(futures_util::future::ready(Ok(())))
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let chunks: Arc<[Bytes]> = std::mem::take(&mut self.parts).into_iter().flatten().collect();
        let attributes = std::mem::take(&mut self.attributes);
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let e_tag = state.insert(&self.location, chunks, &PutMode::Overwrite, attributes)?;
        Ok(put_result(e_tag))
    }

    async fn abort(&mut self) -> Result<()> {
        self.parts.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use object_store::{GetRange, ObjectStoreExt, UpdateVersion};

    async fn read(store: &PartsMemory, at: &Path, range: Option<GetRange>) -> Result<Vec<u8>> {
        let opts = GetOptions { range, ..GetOptions::default() };
        Ok(store.get_opts(at, opts).await?.bytes().await?.to_vec())
    }

    #[tokio::test]
    async fn multipart_objects_keep_their_parts_and_read_like_one_buffer() {
        let store = PartsMemory::default();
        let at = Path::from("a/b");
        let mut up = store.put_multipart_opts(&at, PutMultipartOptions::default()).await.unwrap();
        let parts: [&'static [u8]; 3] = [b"hello ", b"", b"multipart world"];
        let whole: Vec<u8> = parts.concat();
        let first = Bytes::from_static(parts[0]);
        for p in parts {
            up.put_part(PutPayload::from_static(p)).await.unwrap();
        }
        assert!(read(&store, &at, None).await.is_err(), "not visible before completion");
        up.complete().await.unwrap();
        let got = store.get_opts(&at, GetOptions::default()).await.unwrap();
        assert_eq!(got.meta.size, whole.len() as u64);
        let chunks: Vec<Bytes> = got.into_stream().map(|c| c.unwrap()).collect::<Vec<_>>().await;
        assert_eq!(chunks[0].as_ptr(), first.as_ptr(), "parts are not copied");
        assert_eq!(chunks.concat(), whole);
        // Every range, across part boundaries, against the concatenation.
        for start in 0..=whole.len() {
            for end in start..=whole.len() {
                let r = GetRange::Bounded(start as u64..end as u64);
                if start == end {
                    continue;
                }
                assert_eq!(read(&store, &at, Some(r)).await.unwrap(), &whole[start..end]);
            }
            let r = GetRange::Offset(start as u64);
            if start < whole.len() {
                assert_eq!(read(&store, &at, Some(r)).await.unwrap(), &whole[start..]);
            }
        }
        assert_eq!(read(&store, &at, Some(GetRange::Suffix(5))).await.unwrap(), b"world");
        assert!(read(&store, &at, Some(GetRange::Offset(1000))).await.is_err());
        let head = store.get_opts(&at, GetOptions { head: true, ..GetOptions::default() });
        assert_eq!(head.await.unwrap().bytes().await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn put_modes_preconditions_listing_copy_and_delete() {
        let store = PartsMemory::default();
        let a = Path::from("dir/a");
        let r1 = store.put(&a, PutPayload::from_static(b"one")).await.unwrap();
        let create = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        let again = store.put_opts(&a, PutPayload::from_static(b"x"), create).await;
        assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })));
        let stale = UpdateVersion { e_tag: Some("\"999\"".into()), version: None };
        let update = PutOptions { mode: PutMode::Update(stale), ..PutOptions::default() };
        let refused = store.put_opts(&a, PutPayload::from_static(b"x"), update).await;
        assert!(matches!(refused, Err(object_store::Error::Precondition { .. })));
        let current = UpdateVersion { e_tag: r1.e_tag.clone(), version: None };
        let update = PutOptions { mode: PutMode::Update(current), ..PutOptions::default() };
        let r2 = store.put_opts(&a, PutPayload::from_static(b"two"), update).await.unwrap();
        assert_ne!(r1.e_tag, r2.e_tag);
        assert_eq!(read(&store, &a, None).await.unwrap(), b"two");
        let if_match = GetOptions { if_match: r1.e_tag.clone(), ..GetOptions::default() };
        assert!(store.get_opts(&a, if_match).await.is_err(), "the old tag no longer matches");

        store.put(&Path::from("dir/sub/c"), PutPayload::from_static(b"c")).await.unwrap();
        store.put(&Path::from("dirt"), PutPayload::from_static(b"d")).await.unwrap();
        let listed: Vec<String> = store
            .list(Some(&Path::from("dir")))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        assert_eq!(listed, ["dir/a", "dir/sub/c"], "a prefix is whole path segments");
        let level = store.list_with_delimiter(Some(&Path::from("dir"))).await.unwrap();
        assert_eq!(level.objects.len(), 1);
        assert_eq!(level.common_prefixes, [Path::from("dir/sub")]);

        store.copy(&a, &Path::from("copy")).await.unwrap();
        assert_eq!(read(&store, &Path::from("copy"), None).await.unwrap(), b"two");
        assert!(store.copy_if_not_exists(&a, &Path::from("copy")).await.is_err());
        store.delete(&a).await.unwrap();
        assert!(matches!(
            store.get_opts(&a, GetOptions::default()).await,
            Err(object_store::Error::NotFound { .. })
        ));

        let mut up = store.put_multipart_opts(&a, PutMultipartOptions::default()).await.unwrap();
        up.put_part(PutPayload::from_static(b"never")).await.unwrap();
        up.abort().await.unwrap();
        assert!(read(&store, &a, None).await.is_err(), "an aborted upload leaves nothing");

        // Listings are in key order, whatever order the objects are kept in.
        for k in ["z/1", "m/2", "b/3", "dir/sub/a", "a/9", "q/0", "dir/0"] {
            store.put(&Path::from(k), PutPayload::from_static(b"x")).await.unwrap();
        }
        let all: Vec<String> =
            store.list(None).map(|m| m.unwrap().location.to_string()).collect().await;
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(all.len(), 10, "{all:?}");
        let level = store.list_with_delimiter(Some(&Path::from("dir"))).await.unwrap();
        let names: Vec<String> = level.objects.iter().map(|m| m.location.to_string()).collect();
        assert_eq!(names, ["dir/0"]);
    }
}
