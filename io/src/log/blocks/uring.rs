//! Block reading ahead on a dedicated thread, with `io_uring` (`depth` reads of `block` bytes
//! in flight) or with `pread`, handed back in file order through a bounded channel (the
//! channel bounds read-ahead memory to `depth` blocks plus the consumer's).

use std::fs::File;
use std::io;
#[cfg(uring)]
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
#[cfg(uring)]
use bytes::BytesMut;
use crossbeam_channel::{
    Receiver, RecvError, SendError, Sender, TryRecvError, TrySendError, bounded,
};
#[cfg(uring)]
use io_uring::{IoUring, opcode, types};

#[cfg(uring)]
use super::AlignedBuf;
use super::{BlockPool, BlockSource, open_direct};

/// Built without `io_uring` (the `io-uring` feature off): no ring is ever created, so
/// [`Via::Ring`] fails to open and callers read with `pread`.
#[cfg(not(uring))]
#[derive(Debug, Clone, Copy)]
enum IoUring {}

/// A ring for `depth` reads in flight (twice that many entries).
#[cfg(uring)]
fn new_ring(depth: usize) -> io::Result<IoUring> {
    IoUring::new(u32::try_from(depth.max(1) * 2).unwrap_or(8))
}

#[cfg(not(uring))]
fn new_ring(_depth: usize) -> io::Result<IoUring> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "built without the io-uring feature"))
}

#[cfg(not(uring))]
fn run(
    ring: IoUring,
    _file: &File,
    _at: (u64, u64),
    _pool: (BlockPool, usize),
    _direct: bool,
    _tx: &Sender<io::Result<Option<Bytes>>>,
) -> BlockPool {
    match ring {}
}

/// The longest the consumer polls for the next block before it sleeps: a consumer that
/// slept after every block would cost the reading thread a futex wake-up per block (figures:
/// `docs/design/log-format.md`, "Reading").
const MAX_POLL: Duration = Duration::from_micros(100);

/// Of every this many blocks of a buffered read, the consumer reads the last itself (with
/// `pread`, into buffers of its own) and the reading thread the others: from the page cache the
/// reading thread's copy is the slower side, so the consumer takes a share of it. Why six, and
/// what one in two to eight measured: `docs/design/log-format.md`, "Reading".
pub(crate) const SPLIT: u64 = 6;

/// Whether block `index` of a read split every `split` blocks (0: not split) is one the
/// consumer reads itself: the last of each group.
fn consumers_block(index: u64, split: u64) -> bool {
    split > 0 && index % split == split - 1
}

/// The consumer's share of a split read.
struct OwnReads {
    file: Arc<File>,
    /// File offset of block 0.
    start: u64,
    /// Index of the next block handed out.
    next: u64,
    pool: BlockPool,
}

/// Reads a file ahead of its consumer on a thread of its own (with `io_uring`, or with
/// `pread` where a ring cannot be created), handing blocks over in file order.
pub(crate) struct ReadAhead {
    rx: Receiver<io::Result<Option<Bytes>>>,
    /// The reading thread; it hands back its buffer pool when it ends.
    thread: Option<JoinHandle<BlockPool>>,
    done: bool,
    wait: Wait,
    /// Buffered reads only: the blocks the consumer reads itself.
    own: Option<OwnReads>,
}

/// How one side of a read-ahead waits for the other (the consumer for a block, the
/// reading thread for room in the channel): it keeps a moving average of those waits,
/// starting from a page-cache block's time; while that is at most [`MAX_POLL`], it polls
/// for up to four times the average (capped at [`MAX_POLL`]: a block a little late should
/// not cost a wake-up) before it sleeps; above, it sleeps at once, so slow blocks (a disk
/// read with `O_DIRECT`) or a slow consumer (the engine) cost no polling.
#[derive(Debug)]
pub(crate) struct Wait {
    /// The average, in ns.
    average_ns: u64,
    /// Never poll: on one CPU the side it waits for cannot run while it polls (pinned to
    /// one CPU, polling took a forced read-ahead from 63% of a plain read to 55%).
    sleep_only: bool,
}

impl Default for Wait {
    fn default() -> Self {
        Wait { average_ns: 25_000, sleep_only: false }
    }
}

/// A [`Wait`] for this process: one that never polls when it has one CPU.
fn wait_here() -> Wait {
    Wait { sleep_only: !several_cpus(), ..Wait::default() }
}

impl Wait {
    /// How long the next wait polls before it sleeps.
    pub(crate) fn poll_budget(&self) -> Duration {
        let usual = Duration::from_nanos(self.average_ns);
        if self.sleep_only || usual > MAX_POLL { Duration::ZERO } else { (usual * 4).min(MAX_POLL) }
    }

    /// Counts a wait by a quarter. A wait that ended asleep counts too, so a source that
    /// turns fast is polled for again.
    pub(crate) fn observe(&mut self, waited: Duration) {
        let w = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.average_ns = (self.average_ns / 4 * 3).saturating_add(w / 4);
    }

    /// The next message of `rx`: polled for (yielding the CPU between looks, in case the
    /// sender shares this core) for [`Wait::poll_budget`], then slept for.
    pub(crate) fn recv<T>(&mut self, rx: &Receiver<T>) -> Result<T, RecvError> {
        match rx.try_recv() {
            Ok(m) => return Ok(m),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) => {}
        }
        let start = Instant::now();
        let poll = self.poll_budget();
        let got = loop {
            match rx.try_recv() {
                Ok(m) => break Ok(m),
                Err(TryRecvError::Disconnected) => break Err(RecvError),
                Err(TryRecvError::Empty) if start.elapsed() < poll => {
                    std::thread::yield_now();
                }
                Err(TryRecvError::Empty) => break rx.recv(),
            }
        };
        self.observe(start.elapsed());
        got
    }

    /// Sends `msg` on `tx`: if the channel is full, polled (yielding the CPU between
    /// looks) for [`Wait::poll_budget`], then slept for. The reading thread sends this way,
    /// so when the consumer is the slower side, it does not have to wake the reader for
    /// every block it takes.
    pub(crate) fn send<T>(&mut self, tx: &Sender<T>, msg: T) -> Result<(), SendError<T>> {
        let mut msg = match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(m)) => return Err(SendError(m)),
            Err(TrySendError::Full(m)) => m,
        };
        let start = Instant::now();
        let poll = self.poll_budget();
        let sent = loop {
            match tx.try_send(msg) {
                Ok(()) => break Ok(()),
                Err(TrySendError::Disconnected(m)) => break Err(SendError(m)),
                Err(TrySendError::Full(m)) if start.elapsed() < poll => {
                    msg = m;
                    std::thread::yield_now();
                }
                Err(TrySendError::Full(m)) => break tx.send(m),
            }
        };
        self.observe(start.elapsed());
        sent
    }
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead").field("done", &self.done).finish_non_exhaustive()
    }
}

/// Whether this process may run on more than one CPU (affinity and cgroup quota; probed
/// once).
pub(crate) fn several_cpus() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// Whether this kernel and sandbox let us create a ring.
#[cfg(uring)]
pub(crate) fn available() -> bool {
    new_ring(1).is_ok()
}

/// How the read-ahead thread reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `io_uring`: `depth` reads in flight with `O_DIRECT`, at most two buffered.
    Ring,
    /// `pread`, one block at a time, `depth` blocks ahead (where a ring cannot be created;
    /// buffered reads only).
    Pread,
}

impl ReadAhead {
    /// Starts reading `path` from `offset` through `via` with blocks of `block` bytes,
    /// into the buffers of `pool` (if it has that block size) when not reading with
    /// `O_DIRECT` (which `Via::Pread` refuses).
    pub(crate) fn open(
        via: Via,
        path: &Path,
        offset: u64,
        (block, depth): (usize, usize),
        direct: bool,
        pool: Option<BlockPool>,
    ) -> io::Result<Self> {
        if direct && via == Via::Pread {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "O_DIRECT reads ahead only through io_uring",
            ));
        }
        let file = Arc::new(if direct { open_direct(path)? } else { File::open(path)? });
        let ring = match via {
            Via::Ring => Some(new_ring(depth)?),
            Via::Pread => None,
        };
        let (tx, rx) = bounded(depth.max(1));
        let mut pool = BlockPool::reuse(pool, block);
        // Blocks in flight, in the channel, and held by the consumer (a batch of a few).
        pool.keep_at_least(2 * depth.max(1) + 8);
        // Direct reads wait for the device: there the ring's queue depth is what helps, and
        // a consumer reading synchronously would stall.
        let split = if direct { 0 } else { SPLIT };
        let own = (split > 0).then(|| OwnReads {
            file: Arc::clone(&file),
            start: offset,
            next: 0,
            pool: pool.share(2),
        });
        // A buffered read of cached pages completes inside the submission, so every read
        // in flight is a copy done before any block is handed over: the blocks come in
        // bursts, more of them stay in flight than the cache holds, and more than two cost
        // 2–4% of the rate (`log_profile`, depth 4 against 2 and 3). Reads that wait for
        // the device (`O_DIRECT`) keep the whole depth.
        let in_flight = if direct { depth.max(1) } else { depth.clamp(1, 2) };
        let name = if ring.is_some() { "s3repl-uring" } else { "s3repl-read-ahead" };
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            let at = (offset, split);
            match ring {
                Some(ring) => run(ring, &file, at, (pool, in_flight), direct, &tx),
                None => run_pread(&file, at, pool, &tx),
            }
        })?;
        Ok(ReadAhead { rx, thread: Some(thread), done: false, wait: wait_here(), own })
    }

    fn recv(&mut self) -> Result<io::Result<Option<Bytes>>, RecvError> {
        self.wait.recv(&self.rx)
    }

    /// Stops the thread: dropping the receiver makes its next send fail; it then drains
    /// its in-flight reads (the kernel must not write into freed buffers) and exits,
    /// handing back its pool (none if it panicked).
    fn stop(&mut self) -> Option<BlockPool> {
        let (_tx, rx) = bounded(0);
        drop(std::mem::replace(&mut self.rx, rx));
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

impl BlockSource for ReadAhead {
    fn next_block(&mut self) -> io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let got = match self.own.as_mut() {
            Some(own) if consumers_block(own.next, SPLIT) => own.read(),
            _ => match self.recv() {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(None),
            },
        };
        match got {
            Ok(Some(b)) => {
                if let Some(own) = self.own.as_mut() {
                    own.next += 1;
                    // A short block ended the file when it was read; the next block would
                    // start past that end, so the source ends here (the reader continues
                    // from the end of this one).
                    if b.len() < own.pool.block {
                        self.done = true;
                    }
                }
                Ok(Some(b))
            }
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn into_pool(mut self: Box<Self>) -> Option<BlockPool> {
        let mut pool = self.stop()?;
        if let Some(own) = self.own.take() {
            pool.absorb(own.pool);
        }
        Some(pool)
    }
}

impl OwnReads {
    /// Reads the consumer's next block: `None` at the end of the file.
    fn read(&mut self) -> io::Result<Option<Bytes>> {
        let at = self.start + self.next * self.pool.block as u64;
        read_block(&self.file, at, &mut self.pool)
    }
}

/// Reads the block at `at` into one of `pool`'s buffers (as much of it as the file holds):
/// `None` at the end of the file.
fn read_block(file: &File, at: u64, pool: &mut BlockPool) -> io::Result<Option<Bytes>> {
    let mut buf = pool.get();
    let mut n = 0;
    while n < buf.len() {
        let rest = buf.get_mut(n..).unwrap_or_default();
        match std::os::unix::fs::FileExt::read_at(file, rest, at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if n == 0 {
        pool.put_back(buf);
        return Ok(None);
    }
    let block = buf.freeze();
    pool.lend(&block);
    Ok(Some(block.slice(..n)))
}

/// The read-ahead thread without a ring: reads blocks from `start` in file order with
/// `pread`, leaving out the consumer's share as [`run`] does, until a short block (the end
/// of the file), an error, or a closed channel; the bounded channel keeps it at most
/// `depth` blocks ahead.
fn run_pread(
    file: &File,
    (start, split): (u64, u64),
    mut pool: BlockPool,
    tx: &Sender<io::Result<Option<Bytes>>>,
) -> BlockPool {
    let block = pool.block;
    let mut index = 0u64;
    let mut wait = wait_here();
    loop {
        if consumers_block(index, split) {
            index += 1;
        }
        match read_block(file, start + index * block as u64, &mut pool) {
            Ok(Some(b)) => {
                let short = b.len() < block;
                if wait.send(tx, Ok(Some(b))).is_err() {
                    return pool;
                }
                if short {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(e));
                return pool;
            }
        }
        index += 1;
    }
    let _ = tx.send(Ok(None));
    pool
}

/// A buffer the kernel reads into: pooled, or aligned for `O_DIRECT`.
#[cfg(uring)]
enum Buf {
    Pooled(BytesMut),
    Aligned(AlignedBuf),
}

#[cfg(uring)]
impl Buf {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            Buf::Pooled(b) => b.as_mut_ptr(),
            Buf::Aligned(b) => b.as_mut_ptr(),
        }
    }

    fn into_bytes(self, n: usize, pool: &mut BlockPool) -> Bytes {
        match self {
            Buf::Pooled(b) => {
                let block = b.freeze();
                pool.lend(&block);
                block.slice(..n)
            }
            Buf::Aligned(a) => Bytes::from_owner(a).slice(..n),
        }
    }
}

/// One read in flight: the buffer the kernel writes into, and its result once complete.
#[cfg(uring)]
struct InFlight {
    id: u64,
    buf: Buf,
    result: Option<i32>,
}

/// Reads blocks from `start` in file order, leaving out every `split`-th block (the last
/// of each group of `split`; none when `split` is 0), which the consumer reads.
#[cfg(uring)]
fn run(
    mut ring: IoUring,
    file: &File,
    (start, split): (u64, u64),
    (mut pool, depth): (BlockPool, usize),
    direct: bool,
    tx: &Sender<io::Result<Option<Bytes>>>,
) -> BlockPool {
    let fd = types::Fd(file.as_raw_fd());
    let block = pool.block;
    let mut wait = wait_here();
    let mut queue: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    let mut next_id = 0u64;
    let mut eof = false;
    let mut stop = false;
    let len = u32::try_from(block).unwrap_or(u32::MAX);
    let mut index = 0u64;
    loop {
        while !eof && !stop && queue.len() < depth {
            if consumers_block(index, split) {
                index += 1;
            }
            let offset = start + index * block as u64;
            let mut buf = if direct {
                if let Some(a) = AlignedBuf::new(block) {
                    Buf::Aligned(a)
                } else {
                    let _ = tx.send(Err(io::Error::other("unaligned direct block size")));
                    stop = true;
                    break;
                }
            } else {
                Buf::Pooled(pool.get())
            };
            let entry = opcode::Read::new(fd, buf.as_mut_ptr(), len)
                .offset(offset)
                .build()
                .user_data(next_id);
            // SAFETY: `buf` stays alive and unmoved (its heap block does not move when the
            // `BytesMut`/`AlignedBuf` handle moves into `queue`) until this read's completion
            // has been reaped below; the file descriptor outlives the ring's use of it.
            let pushed = unsafe { ring.submission().push(&entry) };
            if pushed.is_err() {
                break;
            }
            queue.push_back(InFlight { id: next_id, buf, result: None });
            next_id += 1;
            index += 1;
        }
        if queue.is_empty() {
            break;
        }
        if let Err(e) = ring.submit_and_wait(1) {
            let _ = tx.send(Err(e));
            stop = true;
        }
        for cqe in ring.completion() {
            if let Some(f) = queue.iter_mut().find(|f| f.id == cqe.user_data()) {
                f.result = Some(cqe.result());
            }
        }
        while queue.front().is_some_and(|f| f.result.is_some()) {
            let Some(f) = queue.pop_front() else { break };
            let r = f.result.unwrap_or(0);
            if stop || eof {
                continue;
            }
            if r < 0 {
                let _ = tx.send(Err(io::Error::from_raw_os_error(-r)));
                stop = true;
                continue;
            }
            let n = usize::try_from(r).unwrap_or(0);
            if n < block {
                eof = true;
            }
            if n == 0 {
                continue;
            }
            let b = f.buf.into_bytes(n, &mut pool);
            if wait.send(tx, Ok(Some(b))).is_err() {
                stop = true;
            }
        }
        if (eof || stop) && queue.iter().all(|f| f.result.is_some()) {
            break;
        }
    }
    if !stop {
        let _ = tx.send(Ok(None));
    }
    pool
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_POLL, Wait};

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn quick_blocks_are_polled_for_up_to_four_times_the_usual_wait() {
        let mut w = Wait::default();
        assert_eq!(w.poll_budget(), MAX_POLL, "a page-cache block's time is assumed");
        for _ in 0..40 {
            w.observe(5 * US);
        }
        // The average approaches 5 µs from above.
        let b = w.poll_budget();
        assert!(b >= 20 * US && b < 21 * US, "{b:?}");
        w.observe(45 * US);
        // (5 µs and a little) * 3/4 + 45/4 = 15 µs and a little.
        let b = w.poll_budget();
        assert!(b >= 60 * US && b < 61 * US, "{b:?}");
        for _ in 0..20 {
            w.observe(90 * US);
        }
        assert_eq!(w.poll_budget(), MAX_POLL, "the poll is capped");
    }

    #[test]
    fn a_wait_on_one_cpu_never_polls() {
        let mut w = Wait { sleep_only: true, ..Wait::default() };
        for _ in 0..40 {
            w.observe(5 * US);
            assert_eq!(w.poll_budget(), Duration::ZERO);
        }
    }

    #[test]
    fn slow_blocks_are_slept_for_until_blocks_come_quickly_again() {
        let mut w = Wait::default();
        let mut slow = 0;
        while w.poll_budget() > Duration::ZERO {
            w.observe(Duration::from_millis(2));
            slow += 1;
            assert!(slow < 3, "disk-speed blocks are still polled for");
        }
        let mut quick = 0;
        while w.poll_budget() == Duration::ZERO {
            w.observe(10 * US);
            quick += 1;
            assert!(quick < 20, "the average never came down");
        }
        assert!(quick > 5, "one quick block moved the average too far: {quick}");
        assert!(w.poll_budget() <= MAX_POLL);
    }

    /// A wait that has seen eight waits of `usual` (none: a fresh one).
    fn primed_with(usual: Option<Duration>) -> Wait {
        let mut w = Wait::default();
        for _ in 0..8 {
            if let Some(p) = usual {
                w.observe(p);
            }
        }
        w
    }

    #[test]
    fn waiting_returns_every_message_in_order_then_the_disconnect() {
        for primed in [None, Some(50 * US), Some(Duration::from_millis(5))] {
            let mut w = primed_with(primed);
            let (tx, rx) = crossbeam_channel::bounded(2);
            let sender = std::thread::spawn(move || {
                for i in 0..20u32 {
                    if i % 4 == 0 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    tx.send(i).unwrap();
                }
            });
            let got: Vec<u32> = std::iter::from_fn(|| w.recv(&rx).ok()).collect();
            sender.join().unwrap();
            assert_eq!(got, (0..20).collect::<Vec<_>>(), "primed with {primed:?}");
            assert!(w.recv(&rx).is_err(), "a disconnected channel stays an error");
        }
    }

    #[test]
    fn sending_delivers_every_message_in_order_then_hands_back_the_undelivered() {
        for primed in [None, Some(50 * US), Some(Duration::from_millis(5))] {
            let mut w = primed_with(primed);
            let (tx, rx) = crossbeam_channel::bounded(2);
            let receiver = std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < 20 {
                    if got.len() % 4 == 0 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    got.push(rx.recv().unwrap());
                }
                got
            });
            for i in 0..20u32 {
                w.send(&tx, i).unwrap();
            }
            let got = receiver.join().unwrap();
            assert_eq!(got, (0..20).collect::<Vec<_>>(), "primed with {primed:?}");
            // The receiver is gone: the message comes back.
            assert_eq!(w.send(&tx, 99).map_err(|e| e.0), Err(99));
        }
        // Full and then disconnected while polling or asleep.
        let (tx, rx) = crossbeam_channel::bounded(1);
        tx.send(0u32).unwrap();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            drop(rx);
        });
        assert_eq!(Wait::default().send(&tx, 1).map_err(|e| e.0), Err(1));
        dropper.join().unwrap();
    }
}
