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
//! Objects sit in 256 hash tables by their path's hash, each behind its own lock, and a
//! listing sorts what it returns. Measured with `s3repl loadtest --destination memory` (perf,
//! RSS), each choice against what it replaced:
//! - one ordered tree of every object: a write compared paths at each level of the tree (a
//!   `memcmp` per level, a fifth of the CPU once it held a million objects); ordered by hash
//!   instead, inserting into a tree of 3 million objects still took 13% of the CPU (a cache
//!   miss per level) behind one lock every writer shares;
//! - one hash map: every write stalled for up to a tenth of a second each time it grew,
//!   moving all its entries at once (a table here moves a 256th);
//! - an object's attributes as an `Attributes` map, with an allocation per value: 1.2 KiB of
//!   memory per 4 KiB replica of the engine's (six attributes), and the kernel's page zeroing
//!   of that growth took 16% of the CPU. They are packed into one buffer instead
//!   ([`Packed`]), and an object of one buffer keeps it without a list.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use hashbrown::HashTable;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, CopyMode, CopyOptions, GetOptions, GetResult,
    GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use parking_lot::Mutex;

const STORE: &str = "PartsMemory";
/// How many tables the objects are spread over (a table's number is a `u8`).
const SHARDS: usize = 256;
const _: () = assert!(SHARDS == u8::MAX as usize + 1, "a table for each value of a u8");

/// An in-memory object store that keeps each object as a list of buffers.
#[derive(Debug, Default)]
pub(crate) struct PartsMemory {
    objects: Arc<Objects>,
}

/// An object's buffers: one (most objects: a single put) or the parts of a multipart upload.
#[derive(Debug, Clone)]
enum Chunks {
    One(Bytes),
    Many(Arc<[Bytes]>),
}

impl Chunks {
    /// `chunks` kept as they are (a single buffer without a list).
    fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let mut it = chunks.into_iter();
        match (it.next(), it.next()) {
            (None, _) => Chunks::Many(Arc::new([])),
            (Some(one), None) => Chunks::One(one),
            (Some(a), Some(b)) => Chunks::Many([a, b].into_iter().chain(it).collect()),
        }
    }

    fn as_slice(&self) -> &[Bytes] {
        match self {
            Chunks::One(b) => std::slice::from_ref(b),
            Chunks::Many(m) => m,
        }
    }
}

/// An object's attributes, packed: for each, a tag byte (`Attribute::Metadata` also with its
/// name), then the value, each string preceded by its length (`u32`, little-endian). An
/// attribute of a kind this store does not know (`Attribute` is non-exhaustive) keeps the map
/// as it came.
#[derive(Debug, Clone)]
enum Packed {
    Empty,
    Bytes(Box<[u8]>),
    Map(Box<Attributes>),
}

/// The tag bytes of [`Packed`].
const TAGS: [(u8, Attribute); 6] = [
    (1, Attribute::ContentDisposition),
    (2, Attribute::ContentEncoding),
    (3, Attribute::ContentLanguage),
    (4, Attribute::ContentType),
    (5, Attribute::CacheControl),
    (6, Attribute::StorageClass),
];
const METADATA_TAG: u8 = 7;

impl Packed {
    fn new(attributes: Attributes) -> Self {
        if attributes.is_empty() {
            return Packed::Empty;
        }
        // Sized once: a tag and two lengths per attribute, plus the strings.
        let size: usize = attributes
            .iter()
            .map(|(a, v)| {
                let name = if let Attribute::Metadata(n) = a { n.len() } else { 0 };
                9 + name + v.len()
            })
            .sum();
        let mut out = Vec::with_capacity(size);
        let put = |out: &mut Vec<u8>, s: &str| -> bool {
            let Ok(n) = u32::try_from(s.len()) else { return false };
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            true
        };
        for (attribute, value) in &attributes {
            let known = match attribute {
                Attribute::Metadata(name) => {
                    out.push(METADATA_TAG);
                    put(&mut out, name)
                }
                a => match TAGS.iter().find(|(_, t)| t == a) {
                    Some((tag, _)) => {
                        out.push(*tag);
                        true
                    }
                    None => false,
                },
            };
            if !known || !put(&mut out, value.as_ref()) {
                return Packed::Map(Box::new(attributes));
            }
        }
        Packed::Bytes(out.into_boxed_slice())
    }

    fn unpack(&self) -> Attributes {
        let bytes = match self {
            Packed::Empty => return Attributes::new(),
            Packed::Map(m) => return (**m).clone(),
            Packed::Bytes(b) => b,
        };
        let mut out = Attributes::new();
        let mut rest: &[u8] = bytes;
        let take = |rest: &mut &[u8]| -> Option<String> {
            let (n, tail) = rest.split_first_chunk::<4>()?;
            let n = usize::try_from(u32::from_le_bytes(*n)).ok()?;
            let (s, tail) = tail.split_at_checked(n)?;
            *rest = tail;
            String::from_utf8(s.to_vec()).ok()
        };
        while let Some((&tag, tail)) = rest.split_first() {
            rest = tail;
            let attribute = if tag == METADATA_TAG {
                let Some(name) = take(&mut rest) else { break };
                Attribute::Metadata(name.into())
            } else {
                let Some((_, a)) = TAGS.iter().find(|(t, _)| *t == tag) else { break };
                a.clone()
            };
            let Some(value) = take(&mut rest) else { break };
            out.insert(attribute, AttributeValue::from(value));
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Entry {
    chunks: Chunks,
    len: u64,
    last_modified: chrono::DateTime<chrono::Utc>,
    e_tag: u64,
    attributes: Packed,
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
        for c in self.chunks.as_slice() {
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

fn not_found(location: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: location.to_string(),
        source: format!("no object at {location}").into(),
    }
}

/// An object in its table: its path, what is kept of it, and the hash the table files it
/// under (kept so that growing the table reads no path).
#[derive(Debug)]
struct Slot {
    hash: u64,
    path: Path,
    entry: Entry,
}

/// One of the objects' tables.
type Table = Mutex<HashTable<Slot>>;

/// How many of a path hash's top bits [`ROUTE`] maps to a table.
const ROUTE_BITS: u32 = 16;

/// The objects: [`SHARDS`] tables, a path's table chosen by its hash's top bits ([`ROUTE`]).
#[derive(Debug)]
struct Objects {
    shards: Box<[Table; SHARDS]>,
    next_etag: AtomicU64,
}

impl Default for Objects {
    fn default() -> Self {
        Objects {
            shards: Box::new(std::array::from_fn(|_| Mutex::new(HashTable::new()))),
            next_etag: AtomicU64::new(0),
        }
    }
}

/// A table for each value of a path hash's top [`ROUTE_BITS`] bits: table `i` gets about
/// `2^(i / SHARDS)` parts of them. A table doubles when its share of the objects reaches a
/// power of two, and with equal shares all of them did so within the same quarter second,
/// moving every object at once (a stall of up to 0.7 s with 3.6 million objects: `s3repl
/// loadtest --destination memory --rate 120000 --duration 40 --svg`). With shares spread over
/// a factor of two, the tables double one after another, evenly through each doubling of the
/// whole. The same for every store: computed once.
static ROUTE: LazyLock<Box<[u8]>> = LazyLock::new(|| {
    let weights: Vec<f64> = (0..=u8::MAX).map(|i| (f64::from(i) / 256.0).exp2()).collect();
    let total: f64 = weights.iter().sum();
    let slots = 1usize << ROUTE_BITS;
    let mut route = Vec::with_capacity(slots);
    let mut upto = 0.0;
    for (table, w) in (0..=u8::MAX).zip(&weights) {
        upto += w;
        // Through the end of this table's share: a fraction of `slots`, in 0..=65,536.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let end = ((upto / total) * f64::from(1u32 << ROUTE_BITS)).round() as usize;
        route.resize(end.clamp(route.len(), slots), table);
    }
    route.resize(slots, u8::MAX);
    route.into_boxed_slice()
});

fn hash(location: &Path) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(location.as_ref())
}

/// The hash a table files `location` under. The table's control bytes are its hash's top 7
/// bits, which the table's choice already fixed for all its paths: unmixed, every probe
/// matched every occupied slot and compared paths (`memcmp` took 9% of the CPU). Multiplying
/// by an odd constant mixes every bit into the top ones.
fn table_hash(h: u64) -> u64 {
    h.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Objects {
    /// `location`'s hash in its table, and the table (chosen by the hash's top bits).
    fn shard(&self, location: &Path) -> (u64, &Table) {
        let h = hash(location);
        let top = usize::try_from(h >> (64 - ROUTE_BITS)).unwrap_or(0);
        let i = ROUTE.get(top).copied().unwrap_or(0);
        // A u8: below SHARDS (256) whatever the route says.
        #[allow(clippy::indexing_slicing)]
        (table_hash(h), &self.shards[usize::from(i)])
    }

    fn get(&self, location: &Path) -> Option<Entry> {
        let (h, shard) = self.shard(location);
        shard.lock().find(h, |s| s.path == *location).map(|s| s.entry.clone())
    }

    fn remove(&self, location: &Path) {
        let (h, shard) = self.shard(location);
        if let Ok(found) = shard.lock().find_entry(h, |s| s.path == *location) {
            found.remove();
        }
    }

    /// The metadata of every object whose path `keep` selects, sorted by path.
    fn list(&self, keep: impl Fn(&Path) -> bool) -> Vec<ObjectMeta> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            found.extend(
                shard.lock().iter().filter(|s| keep(&s.path)).map(|s| s.entry.meta(&s.path)),
            );
        }
        found.sort_unstable_by(|a, b| a.location.cmp(&b.location));
        found
    }

    /// Stores `chunks` at `location` under `mode`; returns the new entity tag.
    fn insert(
        &self,
        location: &Path,
        chunks: Chunks,
        mode: &PutMode,
        attributes: Packed,
    ) -> Result<u64> {
        let (h, shard) = self.shard(location);
        let mut table = shard.lock();
        let slot = table.entry(h, |s| s.path == *location, |s| s.hash);
        let existing = match &slot {
            hashbrown::hash_table::Entry::Occupied(o) => Some(&o.get().entry),
            hashbrown::hash_table::Entry::Vacant(_) => None,
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
        let e_tag = self.next_etag.fetch_add(1, Ordering::Relaxed);
        let len = chunks.as_slice().iter().map(|c| c.len() as u64).sum();
        let entry = Entry { chunks, len, last_modified: chrono::Utc::now(), e_tag, attributes };
        match slot {
            hashbrown::hash_table::Entry::Occupied(mut o) => o.get_mut().entry = entry,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(Slot { hash: h, path: location.clone(), entry });
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
        self.objects.get(location).ok_or_else(|| not_found(location))
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
        let chunks = Chunks::new(payload);
        let attributes = Packed::new(opts.attributes);
        let e_tag = self.objects.insert(location, chunks, &opts.mode, attributes)?;
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
            objects: self.objects.clone(),
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
            attributes: entry.attributes.unpack(),
            meta,
            range,
            extensions: object_store::Extensions::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let objects = self.objects.clone();
        locations
            .map(move |location| {
                let location = location?;
                objects.remove(&location);
                Ok(location)
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let root = Path::default();
        let prefix = prefix.unwrap_or(&root);
        let listed: Vec<Result<ObjectMeta>> =
            self.objects.list(|k| k.prefix_matches(prefix)).into_iter().map(Ok).collect();
        futures_util::stream::iter(listed).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let root = Path::default();
        let prefix = prefix.unwrap_or(&root);
        let mut common_prefixes = BTreeSet::new();
        let mut objects = Vec::new();
        // Sorted by path already.
        for meta in self.objects.list(|k| k.prefix_matches(prefix)) {
            let below = {
                let Some(mut parts) = meta.location.prefix_match(prefix) else { continue };
                let Some(first) = parts.next() else { continue };
                parts.next().is_some().then(|| prefix.clone().join(first))
            };
            match below {
                Some(common) => {
                    common_prefixes.insert(common);
                }
                None => objects.push(meta),
            }
        }
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
        self.objects.insert(to, entry.chunks, &mode, entry.attributes)?;
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
    objects: Arc<Objects>,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        Box::pin(futures_util::future::ready(Ok(())))
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let chunks = std::mem::take(&mut self.parts).into_iter().flatten();
        let attributes = Packed::new(std::mem::take(&mut self.attributes));
        let e_tag = self.objects.insert(
            &self.location,
            Chunks::new(chunks),
            &PutMode::Overwrite,
            attributes,
        )?;
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

    #[test]
    fn paths_of_one_table_get_spread_control_tags() {
        // The paths filed in table 0: their table hashes' top 7 bits (the table's control
        // tags) must still spread, or every probe compares paths.
        let store = Objects::default();
        let mut tags = std::collections::HashSet::new();
        let mut in_first = 0;
        for i in 0..200_000 {
            let p = Path::from(format!("k/{i}"));
            let (h, shard) = store.shard(&p);
            if std::ptr::eq(shard, &raw const store.shards[0]) {
                in_first += 1;
                tags.insert(h >> 57);
            }
        }
        assert!(in_first > 400, "{in_first} paths in table 0");
        assert!(tags.len() > 100, "{} distinct tags among {in_first} paths", tags.len());
    }

    #[test]
    fn tables_get_shares_spread_over_a_factor_of_two() {
        // Equal shares would make every table double at once (a stall moving all objects).
        let mut share = [0usize; SHARDS];
        for &t in ROUTE.iter() {
            share[usize::from(t)] += 1;
        }
        assert_eq!(ROUTE.len(), 1 << ROUTE_BITS);
        assert!(share.iter().all(|&n| n > 0), "every table gets paths: {share:?}");
        let part = |i: usize| f64::from(u32::try_from(share[i]).unwrap());
        let ratio = part(SHARDS - 1) / part(0);
        assert!((1.8..2.2).contains(&ratio), "largest/smallest share {ratio}");
        // Shares grow evenly (geometrically) from the first table to the last.
        let mid = part(SHARDS / 2) / part(0);
        assert!((1.3..1.53).contains(&mid), "middle/smallest share {mid}");
    }

    fn attribute(kind: u8, name: String) -> Attribute {
        match kind {
            0 => Attribute::Metadata(name.into()),
            k => TAGS[usize::from(k - 1) % TAGS.len()].1.clone(),
        }
    }

    proptest::proptest! {
        /// Packing keeps every attribute, value and metadata name (any UTF-8, empty, long),
        /// against the map that came in.
        #[test]
        fn packed_attributes_unpack_to_what_was_stored(
            entries in proptest::collection::vec(
                (0u8..8, ".{0,12}", proptest::prop_oneof![".{0,40}", ".{300,400}"]),
                0..10,
            )
        ) {
            let mut attributes = Attributes::new();
            for (kind, name, value) in entries {
                attributes.insert(attribute(kind, name), AttributeValue::from(value));
            }
            let packed = Packed::new(attributes.clone());
            proptest::prop_assert!(!matches!(packed, Packed::Map(_)), "every kind is known");
            let back = packed.unpack();
            proptest::prop_assert_eq!(back.len(), attributes.len());
            for (k, v) in &attributes {
                proptest::prop_assert_eq!(back.get(k), Some(v));
            }
        }
    }

    #[tokio::test]
    async fn attributes_come_back_with_the_object_and_its_copy() {
        let store = PartsMemory::default();
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "text/plain".into());
        attributes.insert(Attribute::Metadata("s3repl-source-seq".into()), "3:17".into());
        attributes.insert(Attribute::Metadata("empty".into()), "".into());
        let at = Path::from("k");
        let opts = PutOptions { attributes: attributes.clone(), ..PutOptions::default() };
        store.put_opts(&at, PutPayload::from_static(b"body"), opts).await.unwrap();
        store.copy(&at, &Path::from("k2")).await.unwrap();
        for p in ["k", "k2"] {
            let got = store.get_opts(&Path::from(p), GetOptions::default()).await.unwrap();
            assert_eq!(got.attributes, attributes, "{p}");
        }
        // A multipart upload's attributes too.
        let opts = PutMultipartOptions { attributes: attributes.clone(), ..Default::default() };
        let mut up = store.put_multipart_opts(&Path::from("m"), opts).await.unwrap();
        up.put_part(PutPayload::from_static(b"a")).await.unwrap();
        up.complete().await.unwrap();
        let got = store.get_opts(&Path::from("m"), GetOptions::default()).await.unwrap();
        assert_eq!(got.attributes, attributes);
    }
}
