//! Reusable part buffers for multipart copies: parts that sources read into them, and parts
//! that are rewritten (SSE-KMS re-encryption).
//!
//! A source that can fill a buffer (`ObjectSource::read_range_into`, announced by
//! `ObjectSource::reads_into_buffers`) reads each part into a pool buffer lent for it.
//! Otherwise a part arrives as `Bytes`. When nothing else shares it, its own
//! allocation is rewritten in place; when it is shared (a cache, a slice of a larger read), the
//! rewrite reads it and writes into a buffer from this pool (no copy first). Pool buffers
//! leave as `Bytes` whose drop puts the buffer back, so the next part reuses memory that is
//! already mapped: a fresh allocation of every part cost more in page faults and zeroing than
//! the AES-GCM work itself (measured: two thirds of the kernel time of an SSE-KMS benchmark).
//!
//! Memory: a buffer is only created when none is idle, so the pool never holds more buffers
//! than were in use at once, which the byte budget bounds (every part in flight holds a
//! permit for its length); idle buffers beyond `max_idle` are freed.

use std::sync::Arc;

use parking_lot::Mutex;

use bytes::{Bytes, BytesMut};

/// A pool of equal-capacity buffers.
#[derive(Debug, Clone)]
pub(crate) struct BufferPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Idle buffers, each `capacity` bytes long (initialized: handing one out needs no fill).
    idle: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
    max_idle: usize,
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
        if buf.len() != self.home.capacity {
            return;
        }
        let mut idle = self.home.idle.lock();
        if idle.len() < self.home.max_idle {
            idle.push(buf);
        }
    }
}

impl BufferPool {
    /// Buffers of `capacity` bytes; at most `max_idle` kept while unused.
    pub(crate) fn new(capacity: usize, max_idle: usize) -> Self {
        BufferPool { inner: Arc::new(Inner { idle: Mutex::new(Vec::new()), capacity, max_idle }) }
    }

    /// How to rewrite `data`: in place if nothing else shares it, else into a buffer of its
    /// length (a pool buffer when it is at least half a pool buffer long; other lengths get a
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

    /// A pool buffer to read a part of `len` bytes into, if `len` suits the pool (at most a
    /// buffer, at least half of one, as in [`BufferPool::rewrite`]).
    pub(crate) fn lend(&self, len: usize) -> Option<PartBuf> {
        if len > self.inner.capacity || len < self.inner.capacity / 2 {
            return None;
        }
        let reused = self.inner.idle.lock().pop();
        let buf = reused.unwrap_or_else(|| vec![0u8; self.inner.capacity]);
        Some(PartBuf::Pooled(Pooled { buf, len, home: self.inner.clone() }))
    }

    /// Buffers idle in the pool now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.idle.lock().len()
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
        let pool = BufferPool::new(1000, 2);
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
        let short = shared.slice(..600);
        let mut again = target(pool.rewrite(short.clone()), &short);
        assert_eq!(again.as_mut_slice().len(), 600);
        let again = again.freeze();
        assert_eq!((again.as_ptr(), again.len()), (first, 600), "the idle buffer is reused");
        drop(again);
        let long = Bytes::from(vec![5u8; 1000]);
        let long_out = target(pool.rewrite(long.clone()), &long).freeze();
        assert_eq!((long_out.as_ptr(), long_out.len()), (first, 1000));
        drop(long_out);
        assert_eq!(pool.idle(), 1);

        // At most `max_idle` are kept.
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
}
