//! Reusable buffers for the bytes of versions: whole versions and multipart parts that sources
//! read into them, and parts that are rewritten (SSE-KMS re-encryption).
//!
//! A source that can fill a buffer (`ObjectSource::read_range_into`, announced by
//! `ObjectSource::reads_into_buffers`) reads each part, and each plain version copied whole,
//! into a pool buffer lent for it. Otherwise the bytes arrive as `Bytes`. When nothing else
//! shares them, their own allocation is rewritten in place; when they are shared (a cache, a
//! slice of a larger read), the rewrite reads them and writes into a buffer from this pool (no
//! copy first). Pool buffers leave as `Bytes` whose drop puts the buffer back, so the next
//! version reuses memory that is already mapped: a fresh allocation of every part cost more in
//! page faults and zeroing than the AES-GCM work itself (measured: two thirds of the kernel time
//! of an SSE-KMS benchmark).
//!
//! Reuse is also what keeps the process within its byte budget without tuning the allocator:
//! glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), after
//! which object-sized buffers come from its heaps, which keep freed memory. With versions read
//! as fresh allocations (8 MiB objects, an S3 source, a 128 MiB budget) peak RSS was 101 MiB
//! over the budget unless the process fixed the threshold with `mallopt`; buffers that come
//! back to this pool are not freed, so there is nothing for the allocator to keep.
//!
//! Sizes: classes a quarter octave apart (each about 19% larger than the one below), from one
//! part (sealed: with its packages' tags and the stream header) down to [`SMALLEST_CLASS`] (or
//! half a part, if that is smaller: a part read as whole packages can be that short), and
//! up until a class holds the multipart threshold (versions copied whole, at most
//! [`LARGEST_WHOLE`]). A length gets the smallest class that holds it, if it fills at least 80%
//! of it (so buffers in use are at most a quarter larger than the budget counts); other lengths
//! get no pool buffer.
//!
//! Memory: a buffer is only created when none of its class is idle, after freeing idle
//! buffers of other classes worth at least as much, so the pool never holds more than were in
//! use at once (which the byte budget bounds: every version or part in flight holds a permit
//! for its length) plus one buffer; idle buffers beyond `max_idle_bytes` are freed.

use std::sync::Arc;

use parking_lot::Mutex;

use bytes::{Bytes, BytesMut};

/// The smallest class's capacity: below it, the allocator's own mmap threshold (128 KiB to
/// begin with) and its heaps serve well, and a pool would only add a lock per version.
pub(crate) const SMALLEST_CLASS: usize = 512 << 10;

/// Versions copied whole get pool buffers up to this size (a raised multipart threshold does
/// not make the pool keep buffers of gigabytes).
pub(crate) const LARGEST_WHOLE: usize = 64 << 20;

/// The next class below `c`: a quarter octave smaller (2^(1/4) ≈ 1.1892), rounded up.
fn class_below(c: usize) -> usize {
    (c as u128 * 10_000).div_ceil(11_892).try_into().unwrap_or(usize::MAX)
}

/// The next class above `c`: a quarter octave larger, rounded up.
fn class_above(c: usize) -> usize {
    (c as u128 * 11_892).div_ceil(10_000).try_into().unwrap_or(usize::MAX)
}

/// A pool of buffers in size classes.
#[derive(Debug, Clone)]
pub(crate) struct BufferPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Class capacities, ascending.
    classes: Vec<usize>,
    state: Mutex<Idle>,
    max_idle_bytes: usize,
}

/// The idle buffers, per class (initialized: handing one out needs no fill).
#[derive(Debug)]
struct Idle {
    buffers: Vec<Vec<Vec<u8>>>,
    bytes: usize,
}

/// A part's bytes to rewrite: its own allocation, or a pooled buffer.
#[derive(Debug)]
pub(crate) enum PartBuf {
    /// An allocation of the part's own.
    Owned(BytesMut),
    /// A pool buffer.
    Pooled(Pooled),
}

/// How a part is rewritten.
#[derive(Debug)]
pub(crate) enum Rewrite {
    /// Nothing else shares the part's bytes: rewrite them where they are.
    InPlace(PartBuf),
    /// The bytes are shared: read them from `from`, write the result into `to` (of the same
    /// length, its contents unspecified).
    Into {
        /// The part as read.
        from: Bytes,
        /// Where its rewritten bytes go.
        to: PartBuf,
    },
}

/// A buffer on loan from the pool (its first `len` bytes in use); goes back when dropped.
#[derive(Debug)]
pub(crate) struct Pooled {
    buf: Vec<u8>,
    len: usize,
    class: usize,
    home: Arc<Inner>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let capacity = buf.len();
        let mut idle = self.home.state.lock();
        if idle.bytes + capacity <= self.home.max_idle_bytes
            && let Some(class) = idle.buffers.get_mut(self.class)
        {
            class.push(buf);
            idle.bytes += capacity;
        }
    }
}

impl BufferPool {
    /// Classes from `part` bytes down to [`SMALLEST_CLASS`] (at least to half a part) and up
    /// until one holds `whole`
    /// (at most [`LARGEST_WHOLE`]); at most `max_idle_bytes` kept while unused.
    pub(crate) fn new(part: usize, whole: usize, max_idle_bytes: usize) -> Self {
        let mut classes = vec![part.max(1)];
        let mut below = part.max(1);
        // At least an octave below a part: its reads of whole packages can be half of it.
        let floor = SMALLEST_CLASS.min(part / 2);
        while class_below(below) >= floor && class_below(below) < below {
            below = class_below(below);
            classes.push(below);
        }
        classes.reverse();
        let mut above = part.max(1);
        while above < whole.min(LARGEST_WHOLE) {
            above = class_above(above);
            classes.push(above);
        }
        let buffers = classes.iter().map(|_| Vec::new()).collect();
        let state = Mutex::new(Idle { buffers, bytes: 0 });
        BufferPool { inner: Arc::new(Inner { classes, state, max_idle_bytes }) }
    }

    /// How to rewrite `data`: in place if nothing else shares it, else into a buffer of its
    /// length (a pool buffer when one suits it, see [`BufferPool::lend`]; other lengths get a
    /// zeroed allocation of their own, which for large ones the allocator maps already zeroed).
    pub(crate) fn rewrite(&self, data: Bytes) -> Rewrite {
        let from = match data.try_into_mut() {
            Ok(own) => return Rewrite::InPlace(PartBuf::Owned(own)),
            Err(shared) => shared,
        };
        let len = from.len();
        let to = self.lend(len).unwrap_or_else(|| PartBuf::Owned(BytesMut::zeroed(len)));
        Rewrite::Into { from, to }
    }

    /// A pool buffer to read `len` bytes into: of the smallest class that holds them, if they
    /// fill at least 80% of it (see the module documentation).
    pub(crate) fn lend(&self, len: usize) -> Option<PartBuf> {
        let inner = &self.inner;
        let class = inner.classes.iter().position(|&c| c >= len)?;
        let capacity = *inner.classes.get(class)?;
        if (len as u128) * 5 < (capacity as u128) * 4 {
            return None;
        }
        let mut evicted = Vec::new();
        let reused = {
            let mut idle = inner.state.lock();
            let reused = idle.buffers.get_mut(class).and_then(Vec::pop);
            if let Some(buf) = &reused {
                idle.bytes -= buf.len();
            } else {
                // Free idle buffers of other classes worth this one first (outside the lock),
                // so that what the pool holds never grows past what was in use at once.
                let mut freed = 0;
                for other in idle.buffers.iter_mut().rev() {
                    while freed < capacity {
                        let Some(buf) = other.pop() else { break };
                        freed += buf.len();
                        evicted.push(buf);
                    }
                }
                idle.bytes -= freed;
            }
            reused
        };
        drop(evicted);
        let buf = reused.unwrap_or_else(|| vec![0u8; capacity]);
        Some(PartBuf::Pooled(Pooled { buf, len, class, home: inner.clone() }))
    }

    /// Buffers idle in the pool now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.state.lock().buffers.iter().map(Vec::len).sum()
    }

    /// Bytes idle in the pool now.
    #[cfg(test)]
    fn idle_bytes(&self) -> usize {
        self.inner.state.lock().bytes
    }
}

impl PartBuf {
    /// The bytes, to rewrite.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            PartBuf::Owned(b) => b,
            PartBuf::Pooled(p) => p.buf.get_mut(..p.len).unwrap_or_default(),
        }
    }

    /// The length in use.
    pub(crate) fn len(&self) -> usize {
        match self {
            PartBuf::Owned(b) => b.len(),
            PartBuf::Pooled(p) => p.len,
        }
    }

    /// The rewritten bytes; a pool buffer returns to the pool when the last clone is dropped.
    pub(crate) fn freeze(self) -> Bytes {
        match self {
            PartBuf::Owned(b) => b.freeze(),
            PartBuf::Pooled(p) => Bytes::from_owner(p),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// The destination buffer of a rewrite of shared bytes.
    fn target(r: Rewrite, source: &Bytes) -> PartBuf {
        match r {
            Rewrite::Into { from, to } => {
                assert_eq!(from, *source);
                to
            }
            Rewrite::InPlace(_) => panic!("shared bytes rewritten in place"),
        }
    }

    #[test]
    fn unshared_bytes_are_rewritten_in_place_shared_ones_into_reused_buffers() {
        let pool = BufferPool::new(1000, 1000, 2000);
        // Unshared: the same allocation comes back.
        let own = Bytes::from(vec![7u8; 800]);
        let at = own.as_ptr();
        let Rewrite::InPlace(mut part) = pool.rewrite(own) else { panic!("not in place") };
        part.as_mut_slice()[0] = 1;
        let out = part.freeze();
        assert_eq!(out.as_ptr(), at);
        assert_eq!((out[0], out[1], out.len()), (1, 7, 800));

        // Shared: a pool buffer of the same length; the source is untouched; the buffer
        // returns when the output drops.
        let shared = Bytes::from(vec![3u8; 900]);
        let mut part = target(pool.rewrite(shared.clone()), &shared);
        assert!(matches!(part, PartBuf::Pooled(_)));
        assert_eq!(part.as_mut_slice().len(), 900);
        part.as_mut_slice().fill(4);
        let out = part.freeze();
        let first = out.as_ptr();
        assert_eq!((out.len(), out[899], shared[899]), (900, 4, 3));
        let clone = out.clone();
        drop(out);
        assert_eq!(pool.idle(), 0, "a clone still holds the buffer");
        drop(clone);
        assert_eq!(pool.idle(), 1);
        // Reused, at the new part's length (a shorter one, then a longer one).
        let short = shared.slice(..850);
        let mut again = target(pool.rewrite(short.clone()), &short);
        assert_eq!(again.as_mut_slice().len(), 850);
        let again = again.freeze();
        assert_eq!((again.as_ptr(), again.len()), (first, 850), "the idle buffer is reused");
        drop(again);
        let long = Bytes::from(vec![5u8; 1000]);
        let long_out = target(pool.rewrite(long.clone()), &long).freeze();
        assert_eq!((long_out.as_ptr(), long_out.len()), (first, 1000));
        drop(long_out);
        assert_eq!(pool.idle(), 1);

        // At most `max_idle_bytes` are kept.
        let parts: Vec<Bytes> =
            (0..4).map(|_| target(pool.rewrite(shared.clone()), &shared).freeze()).collect();
        drop(parts);
        assert_eq!(pool.idle(), 2);

        // Too small or too large for the pool: a buffer of their own, of their length.
        for len in [10, 1001] {
            let odd = Bytes::from(vec![1u8; len]);
            let mut to = target(pool.rewrite(odd.clone()), &odd);
            assert!(matches!(to, PartBuf::Owned(_)));
            assert_eq!(to.as_mut_slice().len(), len);
        }
    }

    /// What a lent buffer's capacity is.
    fn capacity(buf: &PartBuf) -> usize {
        match buf {
            PartBuf::Pooled(p) => p.buf.len(),
            PartBuf::Owned(_) => panic!("not a pool buffer"),
        }
    }

    #[test]
    fn every_length_from_half_a_mib_to_the_multipart_threshold_gets_a_snug_buffer() {
        let limits = crate::pipeline::Limits::default();
        let pool = crate::pipeline::context::part_buffers(&limits);
        let whole = usize::try_from(limits.multipart_threshold).unwrap();
        let part = usize::try_from(limits.part_size).unwrap();
        let mut len = SMALLEST_CLASS;
        while len <= whole {
            let buf = pool.lend(len).unwrap_or_else(|| panic!("no buffer for {len}"));
            let cap = capacity(&buf);
            assert!(cap >= len && cap * 4 <= len * 5, "{len} bytes in a buffer of {cap}");
            len += len / 7 + 1;
        }
        // A part, sealed or not, fits the part class.
        let sealed = pool.lend(part + 4096).unwrap();
        assert!(capacity(&sealed) >= part + 4096);
        assert!(pool.lend(SMALLEST_CLASS / 4).is_none(), "too small to pool");
        assert!(pool.lend(LARGEST_WHOLE * 2).is_none(), "too large to pool");
    }

    proptest::proptest! {
        /// Against a model of what is in use: every buffer holds its length and wastes at most
        /// a fifth of its capacity; the pool never holds more than the capacities in use at
        /// the peak, and never more than `max_idle` idle.
        #[test]
        fn the_pool_holds_no_more_than_was_in_use_at_once(
            ops in proptest::collection::vec((0usize..2600, proptest::bool::ANY), 1..200),
        ) {
            let max_idle = 3000;
            let pool = BufferPool::new(1000, 2000, max_idle);
            let mut held: Vec<(usize, PartBuf)> = Vec::new();
            let mut peak = 0;
            for (len, release) in ops {
                if release && !held.is_empty() {
                    let at = len % held.len();
                    held.swap_remove(at);
                } else if let Some(buf) = pool.lend(len) {
                    let cap = capacity(&buf);
                    proptest::prop_assert!(cap >= len && len * 5 >= cap * 4, "{} in {}", len, cap);
                    held.push((cap, buf));
                }
                let in_use: usize = held.iter().map(|(c, _)| c).sum();
                peak = peak.max(in_use);
                proptest::prop_assert!(pool.idle_bytes() <= max_idle);
                proptest::prop_assert!(in_use + pool.idle_bytes() <= peak);
            }
        }
    }
}
