//! Reading segment files in large blocks, with the portable `pread` backend and the
//! `io_uring` backend, and decoding frames out of the blocks without copying payloads.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::format::{Decoded, FRAME_HEADER_LEN, MAX_RECORD_LEN, decode_frame};
use super::storage::StorageFile;

/// A source of consecutive file contents.
pub(crate) trait BlockSource: Send {
    /// The next bytes from the current position; `None` at end of file (a later call may
    /// return more if the file grew).
    fn next_block(&mut self) -> io::Result<Option<Bytes>>;

    /// Ends this source and hands back its buffer pool, so the source that replaces it (the
    /// next segment, or `pread` after an `io_uring` catch-up) reuses the buffers instead of
    /// allocating and zero-filling its own.
    fn into_pool(self: Box<Self>) -> Option<BlockPool> {
        None
    }
}

/// Where the reader puts the records it decodes.
pub(crate) trait Sink {
    /// How the sink refers to a block it was shown.
    type Block: Copy;
    /// Registers the block that the following frames lie in.
    fn block(&mut self, block: &Bytes) -> Self::Block;
    /// Adds the record `seq` whose payload is `payload` of `bytes` (the registered block).
    fn frame(&mut self, block: Self::Block, bytes: &Bytes, seq: u64, payload: Range<usize>);
}

/// Recycles block buffers: a handed-out block whose payload slices have all been dropped is
/// unique again and is read into next, so steady-state reading allocates nothing.
#[derive(Debug)]
pub(crate) struct BlockPool {
    block: usize,
    /// Handed-out blocks it remembers, oldest first (at most `keep`).
    out: VecDeque<Bytes>,
    /// How many handed-out blocks it remembers: more than a source and its consumer hold at
    /// once, or the oldest is forgotten while still held, and `get` allocates (and zero-fills)
    /// a new buffer for every block.
    keep: usize,
    spare: Option<BytesMut>,
    /// Buffers allocated so far (the rest of `get`'s answers were reused).
    allocated: usize,
}

impl BlockPool {
    pub(crate) fn new(block: usize) -> Self {
        BlockPool { block, out: VecDeque::new(), keep: 16, spare: None, allocated: 0 }
    }

    /// Remembers at least `n` handed-out blocks.
    pub(crate) fn keep_at_least(&mut self, n: usize) {
        self.keep = self.keep.max(n);
    }

    /// `pool` if it holds buffers of `block` bytes, else a new pool.
    pub(crate) fn reuse(pool: Option<BlockPool>, block: usize) -> Self {
        pool.filter(|p| p.block == block).unwrap_or_else(|| BlockPool::new(block))
    }

    /// A buffer of exactly `block` initialized bytes.
    pub(crate) fn get(&mut self) -> BytesMut {
        if let Some(spare) = self.spare.take() {
            return spare;
        }
        for _ in 0..self.out.len() {
            let Some(b) = self.out.pop_front() else { break };
            match b.try_into_mut() {
                // Lent blocks keep their full length, so reuse needs no zero-filling.
                Ok(m) if m.len() == self.block => return m,
                Ok(_) => {}
                Err(shared) => self.out.push_back(shared),
            }
        }
        self.allocated += 1;
        BytesMut::zeroed(self.block)
    }

    /// Keeps a buffer that was not handed out (a read found nothing new).
    pub(crate) fn put_back(&mut self, b: BytesMut) {
        if b.len() == self.block {
            self.spare = Some(b);
        }
    }

    /// A pool for another reader of the same file, given up to `n` of this pool's buffers.
    pub(crate) fn share(&mut self, n: usize) -> BlockPool {
        let mut other = BlockPool::new(self.block);
        for _ in 0..n {
            let Some(b) = self.out.pop_front() else { break };
            other.out.push_back(b);
        }
        other
    }

    /// Takes over `other`'s buffers (lent or spare) when they have this pool's block size.
    pub(crate) fn absorb(&mut self, other: BlockPool) {
        if other.block != self.block {
            return;
        }
        for b in other.out {
            self.lend(&b);
        }
        if self.spare.is_none() {
            self.spare = other.spare;
        }
        self.allocated += other.allocated;
    }

    /// Remembers a handed-out block so it can be reused once the consumer is done with it.
    pub(crate) fn lend(&mut self, b: &Bytes) {
        if self.out.len() >= self.keep {
            self.out.pop_front();
        }
        self.out.push_back(b.clone());
    }
}

/// `pread` in large blocks through the storage seam.
#[derive(Debug)]
pub(crate) struct StdBlocks<F> {
    file: Arc<F>,
    offset: u64,
    pool: BlockPool,
}

impl<F: StorageFile> StdBlocks<F> {
    pub(crate) fn new(file: Arc<F>, offset: u64, block: usize) -> Self {
        StdBlocks::with_pool(file, offset, BlockPool::new(block))
    }

    /// Reads into `pool`'s buffers.
    pub(crate) fn with_pool(file: Arc<F>, offset: u64, pool: BlockPool) -> Self {
        StdBlocks { file, offset, pool }
    }
}

impl<F: StorageFile> BlockSource for StdBlocks<F> {
    fn next_block(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = self.pool.get();
        let n = self.file.read_at(self.offset, &mut buf)?;
        if n == 0 {
            // Tailing polls land here often: keep the buffer instead of reallocating it.
            self.pool.put_back(buf);
            return Ok(None);
        }
        self.offset += n as u64;
        let block = buf.freeze();
        self.pool.lend(&block);
        Ok(Some(block.slice(..n)))
    }

    fn into_pool(self: Box<Self>) -> Option<BlockPool> {
        Some(self.pool)
    }
}

/// Alignment of `O_DIRECT` buffers, offsets and lengths.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// A zeroed, [`DIRECT_ALIGN`]-aligned heap buffer, as `O_DIRECT` reads require. Handed to
/// `Bytes::from_owner`, so records slice it without copying; it is freed when the last slice
/// drops (direct reads are device-bound, so a fresh allocation per block costs little).
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: the buffer is uniquely owned heap memory with no thread affinity.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access is read-only (`AsRef<[u8]>`).
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (`len` a non-zero multiple of [`DIRECT_ALIGN`]).
    pub(crate) fn new(len: usize) -> Option<Self> {
        if len == 0 || !len.is_multiple_of(DIRECT_ALIGN) {
            return None;
        }
        let layout = std::alloc::Layout::from_size_align(len, DIRECT_ALIGN).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(AlignedBuf { ptr, layout })
    }

    #[cfg(uring)]
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `layout.size()` initialized (zeroed) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`; shared borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.layout.size()).finish_non_exhaustive()
    }
}

/// Opens a file for `O_DIRECT` reads (bypassing the page cache).
#[cfg(target_os = "linux")]
pub(crate) fn open_direct(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)
}

/// `pread` with `O_DIRECT`: aligned offsets and buffers, one read in flight.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub(crate) struct DirectBlocks {
    file: std::fs::File,
    offset: u64,
    block: usize,
    eof: bool,
}

#[cfg(target_os = "linux")]
impl DirectBlocks {
    /// Reads `path` from the aligned `offset` with blocks of `block` bytes (aligned).
    pub(crate) fn open(path: &std::path::Path, offset: u64, block: usize) -> io::Result<Self> {
        if !offset.is_multiple_of(DIRECT_ALIGN as u64) || !block.is_multiple_of(DIRECT_ALIGN) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "unaligned direct read"));
        }
        Ok(DirectBlocks { file: open_direct(path)?, offset, block, eof: false })
    }
}

#[cfg(target_os = "linux")]
impl BlockSource for DirectBlocks {
    fn next_block(&mut self) -> io::Result<Option<Bytes>> {
        if self.eof {
            return Ok(None);
        }
        let mut buf = AlignedBuf::new(self.block).ok_or_else(|| io::Error::other("allocation"))?;
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf.as_mut_slice(), self.offset)?;
        // A short read is the end of the file; later offsets would be unaligned.
        self.eof = n < self.block;
        if n == 0 {
            return Ok(None);
        }
        self.offset += n as u64;
        Ok(Some(Bytes::from_owner(buf).slice(..n)))
    }
}

/// A source with nothing to read (a cursor between sources).
struct NoBlocks;

impl BlockSource for NoBlocks {
    fn next_block(&mut self) -> io::Result<Option<Bytes>> {
        Ok(None)
    }
}

/// What [`FrameCursor::next`] found.
#[derive(Debug)]
pub(crate) enum Step {
    /// A valid frame.
    Frame {
        /// Sequence number.
        seq: u64,
        /// Where the payload lies in [`FrameCursor::block`].
        payload: Range<usize>,
        /// File offset of the frame.
        offset: u64,
    },
    /// End of the readable data: `trailing` bytes of an incomplete frame remain at `offset`,
    /// or (`bad`) an invalid frame starts there.
    End {
        /// File offset where valid data ends.
        offset: u64,
        /// Bytes present after `offset`.
        trailing: usize,
        /// Why the frame at `offset` is invalid, and its declared length.
        bad: Option<(String, usize)>,
    },
}

/// Decodes frames from a block source. Frames inside one block are returned as ranges of it
/// ([`FrameCursor::block`]); only a frame spanning a block boundary is copied (once) into its
/// own buffer. [`FrameCursor::run`] is the bulk fast path.
pub(crate) struct FrameCursor {
    src: Box<dyn BlockSource>,
    /// The current block; frames before `pos` have been returned.
    cur: Bytes,
    pos: usize,
    /// The rest of a block whose head was copied into a spanning frame.
    stash: Option<Bytes>,
    offset: u64,
    /// Bytes at the start of the source to skip (an aligned direct read starting before the
    /// first frame).
    skip: usize,
}

impl std::fmt::Debug for FrameCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCursor")
            .field("offset", &self.offset)
            .field("buffered", &self.buffered())
            .finish_non_exhaustive()
    }
}

/// The header fields of a frame at `at` in `b`, if the header and the payload it declares are
/// both there and the length is plausible: (crc, frame end, sequence number).
#[inline]
fn whole_frame(b: &[u8], at: usize) -> Option<(u32, usize, u64)> {
    let h: &[u8; FRAME_HEADER_LEN] = b.get(at..at + FRAME_HEADER_LEN)?.try_into().ok()?;
    let [c0, c1, c2, c3, l0, l1, l2, l3, s @ ..] = *h;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_RECORD_LEN {
        return None;
    }
    let end = at + FRAME_HEADER_LEN + len;
    (end <= b.len()).then(|| (u32::from_le_bytes([c0, c1, c2, c3]), end, u64::from_le_bytes(s)))
}

impl FrameCursor {
    /// A cursor whose source starts at file offset `offset`.
    pub(crate) fn new(src: Box<dyn BlockSource>, offset: u64) -> Self {
        FrameCursor { src, cur: Bytes::new(), pos: 0, stash: None, offset, skip: 0 }
    }

    /// A cursor whose source starts `skip` bytes before the first frame at `offset`.
    pub(crate) fn skipping(src: Box<dyn BlockSource>, offset: u64, skip: usize) -> Self {
        FrameCursor { skip, ..FrameCursor::new(src, offset) }
    }

    /// Replaces the block source (e.g. `io_uring` → `pread` once caught up); the new source
    /// must continue right after what the old one returned.
    pub(crate) fn set_source(&mut self, src: Box<dyn BlockSource>) {
        self.src = src;
    }

    /// Ends the cursor, handing back its source's buffer pool ([`BlockSource::into_pool`]).
    pub(crate) fn into_pool(self) -> Option<BlockPool> {
        self.src.into_pool()
    }

    /// Hands back the current source's buffer pool, leaving the cursor without a source (it
    /// reads nothing more until [`FrameCursor::set_source`]).
    pub(crate) fn take_pool(&mut self) -> Option<BlockPool> {
        std::mem::replace(&mut self.src, Box::new(NoBlocks)).into_pool()
    }

    /// Bytes the cursor has read past `offset()`.
    pub(crate) fn buffered(&self) -> usize {
        self.cur.len() - self.pos + self.stash.as_ref().map_or(0, Bytes::len)
    }

    /// The block the payload ranges of [`Step::Frame`] refer to (valid until the next call).
    pub(crate) fn block(&self) -> &Bytes {
        &self.cur
    }

    /// Returns the frame ending at `end` in `cur`, which starts at `pos`.
    #[inline]
    fn take(&mut self, seq: u64, end: usize) -> Step {
        let start = self.pos;
        let offset = self.offset;
        self.pos = end;
        self.offset += (end - start) as u64;
        Step::Frame { seq, payload: start + FRAME_HEADER_LEN..end, offset }
    }

    /// The fast path for bulk reading: gives `sink` the whole, valid frames at the cursor
    /// whose sequence numbers run on from `next_seq`, three at a time (checksummed together),
    /// at most `max`, without leaving the current block. Returns how many; it stops short,
    /// changing nothing, at anything else (a frame spanning blocks, damage, an unexpected
    /// sequence number, fewer than three frames left), which [`FrameCursor::next`] handles.
    #[inline]
    pub(crate) fn run(&mut self, next_seq: u64, max: usize, sink: &mut impl Sink) -> usize {
        let mut n = 0;
        let mut block = None;
        while n + 3 <= max {
            let b = self.cur.as_ref();
            let p = self.pos;
            let Some((c0, e0, s0)) = whole_frame(b, p) else { break };
            let Some((c1, e1, s1)) = whole_frame(b, e0) else { break };
            let Some((c2, e2, s2)) = whole_frame(b, e1) else { break };
            let want = next_seq + n as u64;
            if (s0, s1, s2) != (want, want + 1, want + 2) {
                break;
            }
            let (Some(f0), Some(f1), Some(f2)) =
                (b.get(p + 4..e0), b.get(e0 + 4..e1), b.get(e1 + 4..e2))
            else {
                break;
            };
            if super::crc::crc32c_3(f0, f1, f2) != [c0, c1, c2] {
                break;
            }
            let at = *block.get_or_insert_with(|| sink.block(&self.cur));
            sink.frame(at, &self.cur, s0, p + FRAME_HEADER_LEN..e0);
            sink.frame(at, &self.cur, s1, e0 + FRAME_HEADER_LEN..e1);
            sink.frame(at, &self.cur, s2, e1 + FRAME_HEADER_LEN..e2);
            self.offset += (e2 - p) as u64;
            self.pos = e2;
            n += 3;
        }
        n
    }

    pub(crate) fn next(&mut self) -> io::Result<Step> {
        loop {
            match decode_frame(self.cur.get(self.pos..).unwrap_or_default()) {
                Decoded::Frame { seq, payload } => {
                    let end = self.pos + payload.end;
                    return Ok(self.take(seq, end));
                }
                Decoded::Bad { reason, declared } => {
                    return Ok(Step::End {
                        offset: self.offset,
                        trailing: self.buffered(),
                        bad: Some((reason, declared)),
                    });
                }
                Decoded::Incomplete { need } => {
                    let block = match self.stash.take() {
                        Some(b) => Some(b),
                        None => self.src.next_block()?,
                    };
                    let Some(block) = block else {
                        return Ok(Step::End {
                            offset: self.offset,
                            trailing: self.buffered(),
                            bad: None,
                        });
                    };
                    let block = if self.skip > 0 {
                        let n = self.skip.min(block.len());
                        self.skip -= n;
                        block.slice(n..)
                    } else {
                        block
                    };
                    if self.pos == self.cur.len() {
                        self.cur = block;
                    } else {
                        self.join(&block, need);
                    }
                    self.pos = 0;
                }
            }
        }
    }

    /// Completes a frame that spans blocks: copies just the bytes that frame still needs (its
    /// header first, then the rest once its length is known) and stashes the block's tail,
    /// which later frames are sliced from without copying.
    fn join(&mut self, block: &Bytes, need: usize) {
        let want = need.max(FRAME_HEADER_LEN);
        let have = self.cur.get(self.pos..).unwrap_or_default();
        let take = want.saturating_sub(have.len()).min(block.len());
        let mut m = BytesMut::with_capacity(have.len() + take);
        m.extend_from_slice(have);
        m.extend_from_slice(block.get(..take).unwrap_or_default());
        self.cur = m.freeze();
        let rest = block.slice(take..);
        if !rest.is_empty() {
            self.stash = Some(rest);
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod uring;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::{BlockPool, BlockSource, StdBlocks};
    use crate::log::storage::{FileStorage, Storage};

    const BLOCK: usize = 4096;

    /// A file of three and a half blocks of distinct bytes.
    fn file(name: &str) -> (PathBuf, Vec<u8>) {
        let path =
            std::env::temp_dir().join(format!("s3repl-blocks-{name}-{}", std::process::id()));
        let data: Vec<u8> = (0..BLOCK * 7 / 2).map(|i| u8::try_from(i % 251).unwrap()).collect();
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    /// Reads `src` to its end, holding every block until then (as a consumer's batch does):
    /// the bytes.
    fn drain(src: &mut dyn BlockSource) -> Vec<u8> {
        let mut held: Vec<Bytes> = Vec::new();
        while let Some(b) = src.next_block().unwrap() {
            held.push(b);
        }
        held.concat()
    }

    /// A pool that has allocated at least four buffers, and a source reading the last block
    /// of the file with it: the source must reuse them (a new pool would allocate its own).
    fn check_reuse(data: &[u8], open: impl Fn(u64, Option<BlockPool>) -> Box<dyn BlockSource>) {
        let mut first = open(0, None);
        assert_eq!(drain(first.as_mut()), data);
        let pool = first.into_pool().expect("the source hands back its pool");
        let allocated = pool.allocated;
        assert!(allocated >= 4, "{allocated} buffers for four blocks held at once");
        let from = 3 * BLOCK as u64 + 100;
        let mut next = open(from, Some(pool));
        assert_eq!(drain(next.as_mut()), data[3 * BLOCK + 100..]);
        let pool = next.into_pool().expect("the source hands back its pool");
        assert_eq!(pool.allocated, allocated, "the second source allocated buffers of its own");
    }

    #[cfg(uring)]
    #[test]
    fn a_split_io_uring_source_returns_the_file_in_order() {
        use super::uring::{ReadAhead, SPLIT, Via, available};
        let split = usize::try_from(SPLIT).unwrap();
        let path = std::env::temp_dir().join(format!("s3repl-blocks-split-{}", std::process::id()));
        for blocks in [split - 1, split, split + 1, 2 * split, 2 * split + 1, 3 * split + 2] {
            for extra in [0, 100] {
                let data: Vec<u8> =
                    (0..blocks * BLOCK + extra).map(|i| u8::try_from(i % 251).unwrap()).collect();
                std::fs::write(&path, &data).unwrap();
                for from in [0, 100, (split - 1) * BLOCK, (split - 1) * BLOCK + 7, split * BLOCK] {
                    for via in [Via::Ring, Via::Pread] {
                        if via == Via::Ring && !available() {
                            continue;
                        }
                        let at = (from as u64, (BLOCK, 2));
                        let mut src = ReadAhead::open(via, &path, at.0, at.1, false, None);
                        let got = drain(src.as_mut().unwrap());
                        assert!(
                            got == data.get(from..).unwrap_or_default(),
                            "{via:?}, {blocks} blocks + {extra} bytes from {from}: {} bytes read",
                            got.len()
                        );
                    }
                }
            }
        }
        std::fs::remove_file(path).unwrap();
    }

    /// With more reads in flight than the pool used to remember, blocks were forgotten while
    /// still held and every read allocated (and zero-filled) a new buffer.
    #[cfg(uring)]
    #[test]
    fn a_deep_io_uring_source_reuses_its_buffers() {
        use super::uring::{ReadAhead, Via, available};
        let path = std::env::temp_dir().join(format!("s3repl-blocks-deep-{}", std::process::id()));
        let data: Vec<u8> = (0..64 * BLOCK).map(|i| u8::try_from(i % 251).unwrap()).collect();
        std::fs::write(&path, &data).unwrap();
        let depth = 8;
        let via = if available() { Via::Ring } else { Via::Pread };
        let mut src = ReadAhead::open(via, &path, 0, (BLOCK, depth), false, None).unwrap();
        let (mut got, mut held) = (Vec::new(), std::collections::VecDeque::new());
        while let Some(b) = src.next_block().unwrap() {
            got.extend_from_slice(&b);
            // The consumer holds its last four blocks, as a batch does.
            held.push_back(b);
            if held.len() > 4 {
                held.pop_front();
            }
        }
        drop(held);
        assert!(got == data);
        let allocated = Box::new(src).into_pool().unwrap().allocated;
        // In flight, in the channel, held, and the consumer's own reads' buffers.
        assert!(allocated <= 2 * depth + 4 + 4, "{allocated} buffers for 64 blocks");
        std::fs::remove_file(path).unwrap();
    }

    /// A reader catching up with a writer opens a source, reads it to its end, and opens the
    /// next one where that ended: what it gets must be the file, in order, even when the
    /// consumer's own block and the ring thread's blocks around it saw the file at different
    /// lengths.
    #[cfg(uring)]
    #[test]
    fn a_split_io_uring_source_over_a_growing_file_reads_it_in_order() {
        use std::io::Write;

        use super::uring::{ReadAhead, Via, available};
        let path = std::env::temp_dir().join(format!("s3repl-blocks-grow-{}", std::process::id()));
        let total = 300 * BLOCK + 123;
        let data: Vec<u8> = (0..total).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let mut sources = 0;
        for round in 0..16 {
            let via = if round % 2 == 0 && available() { Via::Ring } else { Via::Pread };
            let mut f = std::fs::File::create(&path).unwrap();
            let writer = {
                let data = data.clone();
                std::thread::spawn(move || {
                    let mut at = 0;
                    let mut step = round + 1;
                    while at < data.len() {
                        // Pieces of 1 byte to 3 blocks, ending anywhere in a block.
                        step = (step * 7919 + 13) % (3 * BLOCK) + 1;
                        let end = (at + step).min(data.len());
                        f.write_all(&data[at..end]).unwrap();
                        at = end;
                        std::thread::yield_now();
                    }
                })
            };
            let mut got: Vec<u8> = Vec::new();
            let mut pool = None;
            while got.len() < total {
                let from = got.len() as u64;
                let mut src = ReadAhead::open(via, &path, from, (BLOCK, 3), false, pool).unwrap();
                while let Some(b) = src.next_block().unwrap() {
                    got.extend_from_slice(&b);
                }
                pool = Box::new(src).into_pool();
                sources += 1;
                let ok = got.len() <= total && got[..] == data[..got.len()];
                assert!(ok, "round {round} ({via:?}): wrong bytes after {from}");
            }
            writer.join().unwrap();
        }
        assert!(sources > 16, "the file never grew under the reader");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_pread_source_hands_its_buffers_to_the_next() {
        let (path, data) = file("std");
        let f = Arc::new(FileStorage.open(&path, false).unwrap());
        check_reuse(&data, |from, pool| {
            Box::new(StdBlocks::with_pool(f.clone(), from, BlockPool::reuse(pool, BLOCK)))
        });
        // A pool of another block size is not reused.
        assert_eq!(BlockPool::reuse(Some(BlockPool::new(BLOCK)), 2 * BLOCK).block, 2 * BLOCK);
        std::fs::remove_file(path).unwrap();
    }

    #[cfg(uring)]
    #[test]
    fn an_io_uring_source_hands_its_buffers_to_the_next() {
        use super::uring::{ReadAhead, Via, available};
        if !available() {
            return;
        }
        let (path, data) = file("uring");
        check_reuse(&data, |from, pool| {
            Box::new(ReadAhead::open(Via::Ring, &path, from, (BLOCK, 2), false, pool).unwrap())
        });
        // Stopped mid-file, the thread still hands its pool back.
        let mut mid = ReadAhead::open(Via::Ring, &path, 0, (BLOCK, 2), false, None).unwrap();
        assert!(mid.next_block().unwrap().is_some());
        assert!(Box::new(mid).into_pool().is_some());
        std::fs::remove_file(path).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pread_read_ahead_source_hands_its_buffers_to_the_next() {
        use super::uring::{ReadAhead, Via};
        let (path, data) = file("ahead");
        check_reuse(&data, |from, pool| {
            Box::new(ReadAhead::open(Via::Pread, &path, from, (BLOCK, 2), false, pool).unwrap())
        });
        let mut mid = ReadAhead::open(Via::Pread, &path, 0, (BLOCK, 2), false, None).unwrap();
        assert!(mid.next_block().unwrap().is_some());
        assert!(Box::new(mid).into_pool().is_some());
        let direct = ReadAhead::open(Via::Pread, &path, 0, (BLOCK, 2), true, None);
        assert!(direct.is_err(), "O_DIRECT reads ahead only through a ring");
        std::fs::remove_file(path).unwrap();
    }
}
