//! Reusable part buffers for copies that rewrite bytes (SSE-KMS re-encryption, done in place).
//!
//! A part read from a source arrives as `Bytes`. When nothing else shares it, its own
//! allocation is rewritten in place; when it is shared (a cache, a slice of a larger read), it
//! is copied into a buffer from this pool. Pool buffers leave as `Bytes` whose drop puts the
//! buffer back, so the next part reuses memory that is already mapped: a fresh allocation of
//! every part cost more in page faults and zeroing than the AES-GCM work itself (measured:
//! two thirds of the kernel time of an SSE-KMS benchmark).
//!
//! Memory: a buffer is only created when none is idle, so the pool never holds more buffers
//! than were in use at once, which the byte budget bounds (every part in flight holds a
//! permit for its length); idle buffers beyond `max_idle` are freed.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

/// A pool of equal-capacity buffers.
#[derive(Debug, Clone)]
pub(crate) struct BufferPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    idle: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
    max_idle: usize,
}

/// A writable copy of a part: its own allocation, or a pooled buffer.
#[derive(Debug)]
pub(crate) enum PartBuf {
    /// The source's buffer, no longer shared.
    Owned(BytesMut),
    /// A pool buffer holding a copy.
    Pooled(Pooled),
}

/// A buffer on loan from the pool; goes back when dropped.
#[derive(Debug)]
pub(crate) struct Pooled {
    buf: Vec<u8>,
    home: Arc<Inner>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() != self.home.capacity {
            return;
        }
        if let Ok(mut idle) = self.home.idle.lock()
            && idle.len() < self.home.max_idle
        {
            idle.push(buf);
        }
    }
}

impl BufferPool {
    /// Buffers of `capacity` bytes; at most `max_idle` kept while unused.
    pub(crate) fn new(capacity: usize, max_idle: usize) -> Self {
        BufferPool { inner: Arc::new(Inner { idle: Mutex::new(Vec::new()), capacity, max_idle }) }
    }

    /// `data` in a buffer that can be rewritten: its own allocation if nothing else shares
    /// it, else a copy (in a pool buffer when it is at least half a pool buffer long; smaller
    /// copies are left to the allocator, which serves them from memory it already has).
    pub(crate) fn writable(&self, data: Bytes) -> PartBuf {
        let data = match data.try_into_mut() {
            Ok(own) => return PartBuf::Owned(own),
            Err(shared) => shared,
        };
        let len = data.len();
        if len > self.inner.capacity || len < self.inner.capacity / 2 {
            return PartBuf::Owned(BytesMut::from(&data[..]));
        }
        let reused = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(self.inner.capacity));
        buf.clear();
        buf.extend_from_slice(&data);
        PartBuf::Pooled(Pooled { buf, home: self.inner.clone() })
    }

    /// Buffers idle in the pool now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.idle.lock().map_or(0, |idle| idle.len())
    }
}

impl PartBuf {
    /// The bytes, to rewrite in place.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            PartBuf::Owned(b) => b,
            PartBuf::Pooled(p) => &mut p.buf,
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

    #[test]
    fn unshared_bytes_are_rewritten_in_place_shared_ones_copied_into_reused_buffers() {
        let pool = BufferPool::new(1000, 2);
        // Unshared: the same allocation comes back.
        let own = Bytes::from(vec![7u8; 800]);
        let at = own.as_ptr();
        let mut part = pool.writable(own);
        assert!(matches!(part, PartBuf::Owned(_)));
        part.as_mut_slice()[0] = 1;
        let out = part.freeze();
        assert_eq!(out.as_ptr(), at);
        assert_eq!((out[0], out[1], out.len()), (1, 7, 800));

        // Shared: copied; the source is untouched; the buffer returns when the output drops.
        let shared = Bytes::from(vec![3u8; 900]);
        let keep = shared.clone();
        let mut part = pool.writable(shared);
        assert!(matches!(part, PartBuf::Pooled(_)));
        part.as_mut_slice()[899] = 4;
        let out = part.freeze();
        let first = out.as_ptr();
        assert_eq!((out[0], out[899], keep[899]), (3, 4, 3));
        let clone = out.clone();
        drop(out);
        assert_eq!(pool.idle(), 0, "a clone still holds the buffer");
        drop(clone);
        assert_eq!(pool.idle(), 1);
        let again = pool.writable(keep.clone()).freeze();
        assert_eq!(again.as_ptr(), first, "the idle buffer is reused");
        assert_eq!(&again[..], &keep[..]);
        assert_eq!(pool.idle(), 0);

        // At most `max_idle` are kept.
        let parts: Vec<Bytes> = (0..4).map(|_| pool.writable(keep.clone()).freeze()).collect();
        drop(parts);
        assert_eq!(pool.idle(), 2);

        // Too small or too large for the pool: an ordinary copy.
        let small = Bytes::from(vec![1u8; 10]);
        assert!(matches!(pool.writable(small.clone()), PartBuf::Owned(_)));
        let big = Bytes::from(vec![1u8; 1001]);
        assert!(matches!(pool.writable(big.clone()), PartBuf::Owned(_)));
        drop((small, big));
    }
}
