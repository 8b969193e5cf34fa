//! The read side: one partition from a sequence number, in batches of zero-copy records,
//! catching up with `io_uring` (or `pread`) and then tailing new appends.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::blocks::{BlockPool, BlockSource, FrameCursor, Sink, StdBlocks, Step};
use super::durable::{Limit, MarkReader};
use super::format::{SEGMENT_HEADER_LEN, segment_name};
use super::segment::{check_header, list_segments, partition_path, valid_frame_after};
use super::storage::{Storage, StorageFile};
use super::writer::Notifier;
use crate::error::{Error, io_err};

/// Which implementation reads segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// For real files with a second CPU, catch-up reads ahead on a thread of its own: with
    /// `io_uring` when the kernel and sandbox allow it, else (with one warning) with `pread`;
    /// the thread's copy out of the page cache then overlaps the decode. On one CPU the two
    /// would take turns, so there, and for other storage, `pread` in the calling thread.
    #[default]
    Auto,
    /// Portable `pread` in the calling thread, through the storage seam (forced, e.g. for
    /// tests).
    Std,
    /// `io_uring`; falls back to `pread` (with a warning) if a ring cannot be created.
    Uring,
    /// `pread` on a read-ahead thread, as `Auto` does where a ring cannot be created (forced,
    /// e.g. for tests); `pread` in the calling thread for storage that is not real files, and
    /// for `O_DIRECT`.
    ReadAhead,
}

/// Reader settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// The backend.
    pub backend: Backend,
    /// Bytes per read: large reads amortize system calls, and a block that stays in L2 cache
    /// between the kernel's copy and the decode is checked faster (256 KiB by default; see
    /// `benches/benches/log.rs`).
    pub block_size: usize,
    /// `io_uring` reads kept in flight (read-ahead depth).
    pub queue_depth: usize,
    /// How often a tailing reader without an in-process notifier polls for new data.
    pub poll_interval: Duration,
    /// Read with `O_DIRECT`, bypassing the page cache (catch-up of logs larger than memory;
    /// needs a block size that is a multiple of 4 KiB). Falls back to buffered reads, with a
    /// warning, where the file system refuses it.
    pub direct_io: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            backend: Backend::Auto,
            block_size: 256 << 10,
            queue_depth: 4,
            poll_interval: Duration::from_millis(2),
            direct_io: false,
        }
    }
}

/// One record read back: its sequence number and its payload (a slice of a read buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number in the partition.
    pub seq: u64,
    /// The opaque payload.
    pub payload: Bytes,
}

/// A batch of records read back, kept as the read blocks plus each record's place in them: one
/// reference count per block rather than one per record. The engine's hot path reads into
/// this; [`Record`] values can still be taken out of it without copying.
#[derive(Debug, Default)]
pub struct RecordBatch {
    blocks: Vec<Bytes>,
    frames: Vec<FrameAt>,
}

#[derive(Debug, Clone)]
struct FrameAt {
    seq: u64,
    block: usize,
    payload: Range<usize>,
}

/// One record of a [`RecordBatch`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Sequence number in the partition.
    pub seq: u64,
    /// The opaque payload.
    pub payload: &'a [u8],
}

impl RecordBatch {
    /// An empty batch.
    pub fn new() -> Self {
        RecordBatch::default()
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Empties the batch, releasing its blocks to the reader for reuse.
    pub fn clear(&mut self) {
        self.blocks.clear();
        self.frames.clear();
    }

    /// The records in log order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.frames.iter().map(|f| RecordRef {
            seq: f.seq,
            payload: self
                .blocks
                .get(f.block)
                .and_then(|b| b.get(f.payload.clone()))
                .unwrap_or_default(),
        })
    }

    /// Record `i` as an owned [`Record`] (a slice of its block, no copy).
    pub fn record(&self, i: usize) -> Option<Record> {
        let f = self.frames.get(i)?;
        let block = self.blocks.get(f.block)?;
        (f.payload.start <= f.payload.end && f.payload.end <= block.len())
            .then(|| Record { seq: f.seq, payload: block.slice(f.payload.clone()) })
    }
}

impl Sink for Vec<Record> {
    type Block = ();
    fn block(&mut self, _: &Bytes) {}
    #[inline]
    fn frame(&mut self, (): (), bytes: &Bytes, seq: u64, payload: Range<usize>) {
        self.push(Record { seq, payload: bytes.slice(payload) });
    }
}

impl Sink for RecordBatch {
    type Block = usize;
    #[inline]
    fn block(&mut self, block: &Bytes) -> usize {
        // A block the batch holds cannot be recycled by the reader's pool, so the same
        // address and length mean the same block.
        let same = self
            .blocks
            .last()
            .is_some_and(|b| b.as_ptr() == block.as_ptr() && b.len() == block.len());
        if !same {
            self.blocks.push(block.clone());
        }
        self.blocks.len() - 1
    }
    #[inline]
    fn frame(&mut self, block: usize, _: &Bytes, seq: u64, payload: Range<usize>) {
        self.frames.push(FrameAt { seq, block, payload });
    }
}

/// How the open segment is being read. Every catch-up source (all but `Tail`) is replaced by
/// buffered `pread` at the segment's end, where reads become small and latency-bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `io_uring` on a read-ahead thread; `direct`: with `O_DIRECT`.
    Ring { direct: bool },
    /// `pread` on a read-ahead thread (buffered).
    ReadAhead,
    /// `O_DIRECT` `pread` in the calling thread.
    Direct,
    /// Buffered `pread` in the calling thread: tailing, or where nothing else is available.
    Tail,
}

impl Source {
    fn uring(self) -> bool {
        matches!(self, Source::Ring { .. })
    }

    fn direct(self) -> bool {
        matches!(self, Source::Ring { direct: true } | Source::Direct)
    }

    fn catch_up(self) -> bool {
        self != Source::Tail
    }
}

#[derive(Debug)]
struct OpenSegment {
    first: u64,
    path: PathBuf,
    cursor: FrameCursor,
    source: Source,
    /// Re-read once after a later segment appeared: the writer completes a segment before it
    /// creates the next, so what the first read missed (appended between our end-of-file and
    /// our directory listing) is there now.
    rechecked: bool,
    /// The offset of a bad frame at the end of what was read, seen while a valid later
    /// record already followed it. A writer appends in file order, so by then it had finished
    /// writing that frame: if a re-read still finds it bad, the frame is damaged, not being
    /// written (see [`LogReader::read_into`]). A bad frame followed by nothing valid is what a
    /// crashed writer leaves (its unsynced tail); the reader waits there for the writer to
    /// reopen, truncate it and append.
    suspect: Option<u64>,
    /// A bad frame's offset and the file length when [`valid_frame_after`] last found no valid
    /// record after it: while the file keeps that length, it is not searched again.
    searched: Option<(u64, u64)>,
}

/// A `pread` source reading into `pool`'s buffers when it has `block`-byte ones.
fn std_blocks<F: StorageFile + 'static>(
    file: Arc<F>,
    offset: u64,
    block: usize,
    pool: Option<BlockPool>,
) -> Box<dyn BlockSource> {
    Box::new(StdBlocks::with_pool(file, offset, BlockPool::reuse(pool, block)))
}

/// Whether `io_uring` works here (probed once per process).
pub fn uring_available() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        #[cfg(uring)]
        {
            super::blocks::uring::available()
        }
        #[cfg(not(uring))]
        {
            false
        }
    })
}

fn warn_direct_fallback_once(why: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            reason = why,
            "O_DIRECT reads are refused here; the log reader uses buffered reads."
        );
    }
}

fn warn_fallback_once(why: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(reason = why, "io_uring is unavailable; the log reader uses pread instead.");
    }
}

#[cfg(target_os = "linux")]
fn warn_read_ahead_once(why: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            reason = why,
            "the log reader could not start its read-ahead thread; it reads in the calling thread."
        );
    }
}

/// Reads one partition of a log.
#[derive(Debug)]
pub struct LogReader<S: Storage + Clone> {
    storage: S,
    dir: PathBuf,
    partition: u32,
    opts: ReadOptions,
    next_seq: u64,
    current: Option<OpenSegment>,
    notifier: Option<Arc<Notifier>>,
    /// Ends of the open segment found since the last directory listing with nothing read in
    /// between (see [`FULL_LISTING_EVERY`]).
    idle_ends: u32,
    /// The buffers of the last block source, for the next one (each segment, and each switch
    /// from catch-up reads to `pread`, would otherwise allocate and zero-fill its own).
    pool: Option<BlockPool>,
    /// With a notifier: the partition's generation and the time when a read last found
    /// nothing new (cleared by a read that finds records).
    empty_read: Option<(u64, Instant)>,
    /// The partition's durable mark, read from the log's marks file.
    marks: MarkReader<S::File>,
    /// Records below this may be returned (the last mark read; `u64::MAX` for a log without
    /// marks).
    readable: u64,
}

/// How often a notified reader still reads its files when no append woke it: appends by
/// another process (`s3repl log gen`, a restarted server) do not notify.
const NOTIFIED_POLL: Duration = Duration::from_millis(50);

/// A reader caught up at the end of its segment checks whether the writer moved on to a new
/// one. The new segment can only be named by the next sequence number, so the check is one
/// `exists` of that name; the whole directory is listed (which also finds damage: a later
/// segment that does not continue the sequence) the first time the reader finds itself caught
/// up after reading anything, and every this many idle checks after that.
const FULL_LISTING_EVERY: u32 = 64;

impl<S: Storage + Clone> LogReader<S> {
    /// A reader of `partition` starting at sequence number `from`.
    pub fn open(storage: S, dir: &Path, partition: u32, from: u64, opts: ReadOptions) -> Self {
        LogReader {
            storage,
            dir: dir.to_owned(),
            partition,
            opts,
            next_seq: from,
            current: None,
            notifier: None,
            idle_ends: 0,
            pool: None,
            empty_read: None,
            marks: MarkReader::new(dir, partition),
            readable: 0,
        }
    }

    /// Waits on the writer's notifier instead of polling (same process).
    #[must_use]
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The sequence number of the next record this reader returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Whether the current segment is read with `O_DIRECT`.
    pub fn using_direct_io(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.source.direct())
    }

    /// Whether the current segment is read with `io_uring`.
    pub fn using_uring(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.source.uring())
    }

    /// Whether the current segment is read ahead on a thread of its own (with `io_uring`, or
    /// with `pread` where there is no ring).
    pub fn using_read_ahead(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| matches!(c.source, Source::Ring { .. } | Source::ReadAhead))
    }

    /// The block source for `path` from `offset`: a cursor, and how it reads.
    fn cursor(&mut self, path: &Path, file: Arc<S::File>, offset: u64) -> (FrameCursor, Source) {
        let real = self.storage.real_path(path);
        let want_uring = match self.opts.backend {
            Backend::Std | Backend::ReadAhead => false,
            Backend::Auto | Backend::Uring if real.is_none() => false,
            Backend::Auto | Backend::Uring => {
                if !uring_available() {
                    let why = if cfg!(uring) {
                        "cannot create a ring (old kernel or seccomp)"
                    } else if cfg!(target_os = "linux") {
                        "built without the io-uring feature"
                    } else {
                        "io_uring is Linux only"
                    };
                    warn_fallback_once(why);
                }
                uring_available()
            }
        };
        #[cfg(target_os = "linux")]
        if let Some(real) = real.as_deref() {
            use super::blocks::uring::{ReadAhead, Via, several_cpus};
            let (o, bs, qd) = (self.opts, self.opts.block_size, self.opts.queue_depth);
            if o.direct_io {
                let align = super::blocks::DIRECT_ALIGN as u64;
                let start = offset - offset % align;
                let skip = usize::try_from(offset - start).unwrap_or(0);
                let src: std::io::Result<(Box<dyn BlockSource>, Source)> = if want_uring {
                    ReadAhead::open(Via::Ring, real, start, (bs, qd), true, None).map(|u| {
                        (Box::new(u) as Box<dyn BlockSource>, Source::Ring { direct: true })
                    })
                } else {
                    super::blocks::DirectBlocks::open(real, start, bs)
                        .map(|d| (Box::new(d) as Box<dyn BlockSource>, Source::Direct))
                };
                match src {
                    Ok((src, source)) => {
                        return (FrameCursor::skipping(src, offset, skip), source);
                    }
                    Err(e) => warn_direct_fallback_once(&e.to_string()),
                }
            }
            // Buffered reads ahead on a thread only pay off when it has a CPU of its own.
            let via = match o.backend {
                Backend::Std => None,
                Backend::Uring => want_uring.then_some(Via::Ring),
                Backend::ReadAhead => Some(Via::Pread),
                Backend::Auto => {
                    several_cpus().then_some(if want_uring { Via::Ring } else { Via::Pread })
                }
            };
            if let Some(via) = via {
                let pool = self.pool.take();
                match ReadAhead::open(via, real, offset, (bs, qd), false, pool) {
                    Ok(u) => {
                        let source = if via == Via::Ring {
                            Source::Ring { direct: false }
                        } else {
                            Source::ReadAhead
                        };
                        return (FrameCursor::new(Box::new(u), offset), source);
                    }
                    Err(e) if via == Via::Ring => warn_fallback_once(&e.to_string()),
                    Err(e) => warn_read_ahead_once(&e.to_string()),
                }
            }
        }
        let _ = (want_uring, real);
        let src = std_blocks(file, offset, self.opts.block_size, self.pool.take());
        (FrameCursor::new(src, offset), Source::Tail)
    }

    fn corrupt(&self, path: &Path, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            partition: self.partition,
            segment: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            offset,
            reason: reason.into(),
        }
    }

    /// Opens the segment holding `next_seq` (or the one after it). `false` if none exists yet.
    fn open_segment(&mut self) -> Result<bool, Error> {
        let pdir = partition_path(&self.dir, self.partition);
        let segments = list_segments(&self.storage, &pdir)?;
        let Some(&first) = segments.iter().rev().find(|&&f| f <= self.next_seq) else {
            return match segments.first() {
                Some(&oldest) => Err(Error::Layout {
                    path: pdir,
                    reason: format!(
                        "records before {oldest} were removed by retention; cannot read from {}",
                        self.next_seq
                    ),
                }),
                None => Ok(false),
            };
        };
        let path = pdir.join(segment_name(first));
        let file = Arc::new(self.storage.open(&path, false).map_err(io_err("open", &path))?);
        check_header(file.as_ref(), &path, self.partition, first)?;
        let (cursor, source) = self.cursor(&path, file, SEGMENT_HEADER_LEN as u64);
        self.current = Some(OpenSegment {
            first,
            path,
            cursor,
            source,
            rechecked: false,
            suspect: None,
            searched: None,
        });
        Ok(true)
    }

    /// Reads up to `max` records into `out`; returns how many. Returns 0 when caught up with
    /// the writer (call again later, or use [`LogReader::wait_batch`]).
    pub fn read_batch(&mut self, max: usize, out: &mut Vec<Record>) -> Result<usize, Error> {
        self.read_into(max, out)
    }

    /// Like [`LogReader::read_batch`], into a [`RecordBatch`] (the cheaper form: no reference
    /// count per record). Records are appended; clear the batch between calls to let the
    /// reader reuse its buffers.
    pub fn read_records(&mut self, max: usize, out: &mut RecordBatch) -> Result<usize, Error> {
        self.read_into(max, out)
    }

    fn read_into(&mut self, max: usize, out: &mut impl Sink) -> Result<usize, Error> {
        let n = self.read_some(max, out)?;
        if n > 0 {
            self.idle_ends = 0;
        }
        Ok(n)
    }

    /// How many records from `next_seq` may be returned: only durable ones (see
    /// `durable.rs`), so nothing a consumer acts on can be lost by a crash. The mark is read
    /// again only once the reader has reached the last one read.
    fn readable(&mut self, max: usize) -> Result<usize, Error> {
        if self.next_seq >= self.readable {
            // The notifier knows its writer's marks without a read; the file also knows those
            // of a writer it does not (another process, a reopened log).
            let notified = self.notifier.as_ref().and_then(|n| n.durable_mark(self.partition));
            self.readable = match notified {
                Some(mark) if mark > self.next_seq => mark,
                _ => match self.marks.read(&self.storage)? {
                    Limit::Below(mark) => mark.max(notified.unwrap_or(0)),
                    Limit::Unmarked => u64::MAX,
                },
            };
        }
        let ahead = self.readable.saturating_sub(self.next_seq);
        Ok(usize::try_from(ahead).unwrap_or(usize::MAX).min(max))
    }

    fn read_some(&mut self, max: usize, out: &mut impl Sink) -> Result<usize, Error> {
        let max = self.readable(max)?;
        let mut n = 0;
        while n < max {
            if self.current.is_none() && !self.open_segment()? {
                break;
            }
            let Some(seg) = self.current.as_mut() else { break };
            let ran = seg.cursor.run(self.next_seq, max - n, out);
            if ran > 0 {
                self.next_seq += ran as u64;
                n += ran;
                continue;
            }
            match seg.cursor.next().map_err(io_err("read", &seg.path))? {
                Step::Frame { seq, payload, offset } => {
                    if seq < self.next_seq {
                        continue;
                    }
                    if seq > self.next_seq {
                        let path = seg.path.clone();
                        return Err(self.corrupt(
                            &path,
                            offset,
                            format!("sequence {seq} where {} was expected", self.next_seq),
                        ));
                    }
                    let block = seg.cursor.block();
                    let at = out.block(block);
                    out.frame(at, block, seq, payload);
                    self.next_seq += 1;
                    n += 1;
                }
                Step::End { offset, trailing, bad } => {
                    let (first, path) = (seg.first, seg.path.clone());
                    let pdir = partition_path(&self.dir, self.partition);
                    let full = n > 0
                        || self.idle_ends == 0
                        || self.idle_ends >= FULL_LISTING_EVERY
                        || trailing > 0
                        || bad.is_some();
                    let listed = full || {
                        let next = pdir.join(segment_name(self.next_seq));
                        self.storage.exists(&next).map_err(io_err("stat", &next))?
                    };
                    self.idle_ends = if listed { 1 } else { self.idle_ends + 1 };
                    let later = if listed {
                        list_segments(&self.storage, &pdir)?.into_iter().find(|&f| f > first)
                    } else {
                        None
                    };
                    if let Some(next) = later {
                        // The segment may have grown after our read reached its end and before
                        // the listing saw the next one: read on from here once more.
                        if !seg.rechecked
                            && (trailing > 0 || bad.is_some() || next != self.next_seq)
                        {
                            let file = Arc::new(
                                self.storage.open(&path, false).map_err(io_err("open", &path))?,
                            );
                            let pool = seg.cursor.take_pool();
                            let src = std_blocks(file, offset, self.opts.block_size, pool);
                            seg.cursor = FrameCursor::new(src, offset);
                            seg.rechecked = true;
                            // The check after this re-read lists the directory again.
                            self.idle_ends = 0;
                            seg.source = Source::Tail;
                            continue;
                        }
                        // Only the last segment may end in a torn tail; anything else is damage.
                        if trailing > 0 || bad.is_some() {
                            let reason = bad.map_or_else(
                                || "incomplete record before a later segment".to_owned(),
                                |b| b.0,
                            );
                            return Err(self.corrupt(&path, offset, reason));
                        }
                        if next != self.next_seq {
                            return Err(self.corrupt(
                                &path,
                                offset,
                                format!(
                                    "segment ends at {} but the next starts at {next}",
                                    self.next_seq
                                ),
                            ));
                        }
                        self.pool = self.current.take().and_then(|s| s.cursor.into_pool());
                        continue;
                    }
                    // Caught up with the writer. Further reads of this segment are small and
                    // latency-bound: continue with pread after any io_uring catch-up, and after a
                    // frame that is not yet fully written, re-read it from its start next time.
                    if seg.source.catch_up() || bad.is_some() {
                        let file = Arc::new(
                            self.storage.open(&path, false).map_err(io_err("open", &path))?,
                        );
                        // A bad frame in the last segment is usually one being written (our
                        // read raced the writer's copy), or the unsynced tail of a crashed
                        // writer. It is damage when a valid record already followed it on an
                        // earlier look and it is still bad now.
                        if let Some((reason, _)) = &bad {
                            let len = file.len().map_err(io_err("stat", &path))?;
                            let follows = seg.searched != Some((offset, len))
                                && valid_frame_after(file.as_ref(), offset, self.next_seq)
                                    .map_err(io_err("read", &path))?
                                    .is_some();
                            if follows && seg.suspect == Some(offset) {
                                return Err(self.corrupt(&path, offset, reason.clone()));
                            }
                            seg.suspect = follows.then_some(offset);
                            seg.searched = (!follows).then_some((offset, len));
                        }
                        let resume = if bad.is_some() { offset } else { offset + trailing as u64 };
                        let pool = seg.cursor.take_pool();
                        let src = std_blocks(file, resume, self.opts.block_size, pool);
                        if bad.is_some() {
                            seg.cursor = FrameCursor::new(src, offset);
                        } else {
                            seg.cursor.set_source(src);
                        }
                        seg.source = Source::Tail;
                    }
                    break;
                }
            }
        }
        Ok(n)
    }

    /// Like [`LogReader::read_batch`], but when caught up waits for new appends (notified or
    /// polled) up to `timeout`.
    pub fn wait_batch(
        &mut self,
        max: usize,
        out: &mut Vec<Record>,
        timeout: Duration,
    ) -> Result<usize, Error> {
        self.wait_into(max, out, timeout)
    }

    /// Like [`LogReader::wait_batch`], into a [`RecordBatch`].
    pub fn wait_records(
        &mut self,
        max: usize,
        out: &mut RecordBatch,
        timeout: Duration,
    ) -> Result<usize, Error> {
        self.wait_into(max, out, timeout)
    }

    fn wait_into(
        &mut self,
        max: usize,
        out: &mut impl Sink,
        timeout: Duration,
    ) -> Result<usize, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.notifier.as_ref().map(|n| n.partition_generation(self.partition));
            // Notified and nothing appended to this partition since a read found nothing, not
            // long ago: the files are not read again until the fallback poll is due, however
            // often the caller comes back with short timeouts.
            let idle = match (seen, self.empty_read) {
                (Some(g), Some((at_gen, at))) if g == at_gen => {
                    at.checked_add(NOTIFIED_POLL).filter(|due| *due > Instant::now())
                }
                _ => None,
            };
            let n = if idle.is_some() { 0 } else { self.read_into(max, out)? };
            let now = Instant::now();
            if n > 0 {
                self.empty_read = None;
                return Ok(n);
            }
            if idle.is_none() {
                self.empty_read = seen.map(|g| (g, now));
            }
            if now >= deadline {
                return Ok(0);
            }
            match (&self.notifier, seen) {
                (Some(notifier), Some(g)) => {
                    let until = idle.unwrap_or(now + NOTIFIED_POLL).min(deadline);
                    notifier.wait_partition_past(self.partition, g, until - now);
                }
                _ => std::thread::sleep(self.opts.poll_interval.min(deadline - now)),
            }
        }
    }
}
