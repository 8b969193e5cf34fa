//! Many small whole-file reads in flight with `io_uring` (source objects stored one file per
//! version, as `LocalVersionStore` does): per file, an open into a registered file slot, a
//! read and a close, linked so the kernel runs the three without a trip back to user space,
//! with `depth` files in flight on one ring ([`UringFiles`]). [`FileReader`] serves reads from
//! many tasks on one such ring on a dedicated thread, batching what arrives while a batch runs.
//! Measured against the portable paths in `benches/benches/source_reads.rs`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bytes::Bytes;
use io_uring::{IoUring, opcode, squeue, types};

/// One ring and its registered file slots, with a read buffer per slot.
pub struct UringFiles {
    ring: IoUring,
    depth: usize,
    /// Per slot, reused from batch to batch (a read's bytes are copied out at their length).
    bufs: Vec<Vec<u8>>,
    /// A submission failed with reads in flight: their completions may still arrive and their
    /// files may hold slots, so the ring is not used again.
    broken: bool,
}

impl std::fmt::Debug for UringFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringFiles").field("depth", &self.depth).finish_non_exhaustive()
    }
}

/// A file being read: its name (alive and unmoved until its open completes), its slot, and
/// the results that have arrived.
struct InFlight {
    index: usize,
    path: CString,
    slot: u32,
    open: Option<i32>,
    read: Option<i32>,
    closed: bool,
}

impl UringFiles {
    /// A ring with `depth` files in flight (fails where `io_uring` or registered file slots
    /// are unavailable: kernels before 5.15, sandboxes).
    pub fn new(depth: usize) -> io::Result<Self> {
        let depth = depth.clamp(1, 4096);
        let entries = u32::try_from((depth * 3).next_power_of_two()).unwrap_or(4096);
        let ring = IoUring::new(entries)?;
        ring.submitter().register_files_sparse(u32::try_from(depth).unwrap_or(4096))?;
        Ok(UringFiles { ring, depth, bufs: Vec::new(), broken: false })
    }

    /// Reads each file whole, in order of `paths`: `Some(bytes)`, or `None` for a file of
    /// `max_len` bytes or more (one read of `max_len` cannot tell whether more follows: read
    /// it another way).
    pub fn read_all(&mut self, paths: &[&Path], max_len: usize) -> Vec<io::Result<Option<Bytes>>> {
        if self.broken {
            return paths
                .iter()
                .map(|_| Err(io::Error::other("io_uring ring is broken")))
                .collect();
        }
        if self.bufs.first().is_none_or(|b| b.len() != max_len) {
            self.bufs = (0..self.depth).map(|_| vec![0u8; max_len]).collect();
        }
        let mut out: Vec<Option<io::Result<Option<Bytes>>>> =
            (0..paths.len()).map(|_| None).collect();
        let mut flights: Vec<Option<InFlight>> = (0..self.depth).map(|_| None).collect();
        let mut free: Vec<u32> = (0..u32::try_from(self.depth).unwrap_or(0)).rev().collect();
        let mut next = 0;
        let mut running = 0usize;
        let len = u32::try_from(max_len).unwrap_or(u32::MAX);
        loop {
            // Queue files while slots are free.
            while let Some(&file) = paths.get(next)
                && let Some(slot) = free.pop()
            {
                let index = next;
                next += 1;
                let Ok(path) = CString::new(file.as_os_str().as_bytes()) else {
                    set(&mut out, index, Err(io::Error::from(io::ErrorKind::InvalidInput)));
                    free.push(slot);
                    continue;
                };
                let Ok(target) = types::DestinationSlot::try_from_slot_target(slot) else {
                    set(&mut out, index, Err(io::Error::other("file slot out of range")));
                    free.push(slot);
                    continue;
                };
                let (Some(place), Some(buf)) =
                    (flights.get_mut(slot as usize), self.bufs.get_mut(slot as usize))
                else {
                    set(&mut out, index, Err(io::Error::other("file slot out of range")));
                    continue;
                };
                // The path is owned by `flights` before the kernel sees it.
                let f = place.insert(InFlight {
                    index,
                    path,
                    slot,
                    open: None,
                    read: None,
                    closed: false,
                });
                let user = u64::from(slot) << 2;
                let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), f.path.as_ptr())
                    .file_index(Some(target))
                    // (O_CLOEXEC is refused for registered slots, which never reach exec.)
                    .flags(libc::O_RDONLY)
                    .build()
                    .flags(squeue::Flags::IO_HARDLINK)
                    .user_data(user);
                let read = opcode::Read::new(types::Fixed(slot), buf.as_mut_ptr(), len)
                    .offset(0)
                    .build()
                    .flags(squeue::Flags::IO_HARDLINK)
                    .user_data(user | 1);
                let close = opcode::Close::new(types::Fixed(slot)).build().user_data(user | 2);
                // SAFETY: the path stays in `flights` and the buffer in `self.bufs` (heap memory
                // that does not move with its handle, and is not touched or resized) until all
                // three completions of this slot are reaped; the ring has room for 3 × depth
                // entries and at most depth files are queued.
                let pushed = unsafe { self.ring.submission().push_multiple(&[open, read, close]) };
                if pushed.is_err() {
                    place.take();
                    set(&mut out, index, Err(io::Error::other("submission queue full")));
                    free.push(slot);
                    continue;
                }
                running += 1;
            }
            if running == 0 {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The kernel may still write into the buffers of reads in flight: keep
                    // them (and the names) alive for good rather than free memory it can reach.
                    for f in flights.iter_mut().filter_map(Option::take) {
                        set(&mut out, f.index, Err(io::Error::new(e.kind(), e.to_string())));
                        std::mem::forget(f);
                    }
                    std::mem::forget(std::mem::take(&mut self.bufs));
                    self.broken = true;
                    break;
                }
            }
            for cqe in self.ring.completion() {
                let slot = (cqe.user_data() >> 2) as usize;
                let Some(Some(f)) = flights.get_mut(slot) else { continue };
                match cqe.user_data() & 3 {
                    0 => f.open = Some(cqe.result()),
                    1 => f.read = Some(cqe.result()),
                    _ => f.closed = true,
                }
                if f.closed && f.open.is_some() && f.read.is_some() {
                    let Some(done) = flights.get_mut(slot).and_then(Option::take) else {
                        continue;
                    };
                    running -= 1;
                    free.push(done.slot);
                    let index = done.index;
                    let buf = self.bufs.get(done.slot as usize).map_or(&[][..], Vec::as_slice);
                    set(&mut out, index, finish(&done, buf, max_len));
                }
            }
        }
        out.into_iter().map(|r| r.unwrap_or_else(|| Err(io::Error::other("not read")))).collect()
    }
}

/// Records file `index`'s result.
fn set(out: &mut [Option<io::Result<Option<Bytes>>>], index: usize, r: io::Result<Option<Bytes>>) {
    if let Some(slot) = out.get_mut(index) {
        *slot = Some(r);
    }
}

/// The result of one file whose three operations completed, read into `buf`.
fn finish(f: &InFlight, buf: &[u8], max_len: usize) -> io::Result<Option<Bytes>> {
    let open = f.open.unwrap_or(-libc::EIO);
    if open < 0 {
        return Err(io::Error::from_raw_os_error(-open));
    }
    let read = f.read.unwrap_or(-libc::EIO);
    if read < 0 {
        return Err(io::Error::from_raw_os_error(-read));
    }
    let n = usize::try_from(read).unwrap_or(0);
    if n >= max_len {
        return Ok(None);
    }
    Ok(Some(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default())))
}

/// A read waiting for the ring thread.
struct Request {
    path: std::path::PathBuf,
    reply: tokio::sync::oneshot::Sender<io::Result<Option<Bytes>>>,
}

/// Whole small-file reads from any number of tasks, served by one [`UringFiles`] ring on a
/// dedicated thread: it takes the reads waiting when it is free (up to the ring's depth) as one
/// batch, so reads arriving while a batch runs go together in the next. The thread ends when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct FileReader {
    tx: tokio::sync::mpsc::Sender<Request>,
}

impl FileReader {
    /// Starts the thread, with `depth` files in flight, each read with one read of `max_len`
    /// bytes. Fails where [`UringFiles::new`] does.
    pub fn start(depth: usize, max_len: usize) -> io::Result<Self> {
        Self::serve(UringFiles::new(depth)?, max_len)
    }

    /// Starts the thread that serves reads with `ring`.
    fn serve(mut ring: UringFiles, max_len: usize) -> io::Result<Self> {
        let depth = ring.depth;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Request>(depth * 2);
        std::thread::Builder::new().name("s3repl-files".into()).spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < depth
                    && let Ok(more) = rx.try_recv()
                {
                    batch.push(more);
                }
                let paths: Vec<&Path> = batch.iter().map(|r| r.path.as_path()).collect();
                let results = ring.read_all(&paths, max_len);
                for (req, r) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(r);
                }
                if ring.broken {
                    // Callers find the reader gone and read the portable way.
                    tracing::warn!("io_uring file reads failed; reading with pread from now on.");
                    return;
                }
            }
        })?;
        Ok(FileReader { tx })
    }

    /// Reads `path` whole: `Some(Ok(Some(bytes)))`; `Some(Ok(None))` if the file holds
    /// `max_len` bytes or more (read it another way); `None` if the reader's thread is gone.
    pub async fn read(&self, path: std::path::PathBuf) -> Option<io::Result<Option<Bytes>>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx.send(Request { path, reply }).await.ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::{FileReader, UringFiles};
    use std::path::PathBuf;

    #[test]
    fn reads_match_std_including_missing_and_long_files() {
        let Ok(mut ring) = UringFiles::new(4) else { return };
        let dir = std::env::temp_dir().join(format!("s3repl-uring-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut paths: Vec<PathBuf> = (0..23)
            .map(|i| {
                let p = dir.join(format!("f{i}"));
                std::fs::write(&p, vec![u8::try_from(i).unwrap(); i * 97]).unwrap();
                p
            })
            .collect();
        paths.push(dir.join("missing"));
        let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
        // 1,000 bytes per read: the longer files are left to the caller.
        let check = |got: &[std::io::Result<Option<bytes::Bytes>>]| {
            assert_eq!(got.len(), paths.len());
            for (p, r) in paths.iter().zip(got) {
                match std::fs::read(p) {
                    Ok(want) if want.len() >= 1000 => assert!(r.as_ref().unwrap().is_none()),
                    Ok(want) => assert_eq!(r.as_ref().unwrap().as_deref(), Some(&want[..])),
                    Err(e) => assert_eq!(r.as_ref().unwrap_err().kind(), e.kind()),
                }
            }
        };
        check(&ring.read_all(&refs, 1000));
        // Again with the same ring (its buffers reused), and through the reader thread from
        // many tasks at once.
        check(&ring.read_all(&refs, 1000));
        let reader = FileReader::start(4, 1000).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let got: Vec<_> = rt.block_on(async {
            let tasks: Vec<_> = paths
                .iter()
                .map(|p| {
                    let (reader, p) = (reader.clone(), p.clone());
                    tokio::spawn(async move { reader.read(p).await.unwrap() })
                })
                .collect();
            let mut got = Vec::new();
            for t in tasks {
                got.push(t.await.unwrap());
            }
            got
        });
        check(&got);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A ring whose descriptor now names `/dev/null`: every `io_uring_enter` fails
    /// (`EOPNOTSUPP`), as it would after the kernel or a sandbox turned rings off.
    fn failing_ring() -> Option<UringFiles> {
        use std::os::fd::AsRawFd;
        let ring = UringFiles::new(4).ok()?;
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: both descriptors are open; dup2 only re-points the ring's own descriptor
        // number, which the ring closes when dropped (its mappings keep the ring alive).
        assert!(unsafe { libc::dup2(null.as_raw_fd(), ring.ring.as_raw_fd()) } >= 0);
        Some(ring)
    }

    #[test]
    fn after_a_failed_submission_the_ring_is_retired_and_the_reader_thread_ends() {
        let dir = std::env::temp_dir().join(format!("s3repl-uring-broken-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths: Vec<PathBuf> = (0..3)
            .map(|i| {
                let p = dir.join(format!("f{i}"));
                std::fs::write(&p, b"bytes").unwrap();
                p
            })
            .collect();
        let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();

        let Some(mut ring) = failing_ring() else { return };
        let got = ring.read_all(&refs, 1000);
        assert!(got.iter().all(Result::is_err), "{got:?}");
        assert!(ring.broken);
        // Never used again, even for reads that would now succeed.
        let again = ring.read_all(&refs, 1000);
        assert!(again.iter().all(|r| r.as_ref().is_err_and(|e| e.to_string().contains("broken"))));

        // Through the reader: the batch that failed gets its errors, then the thread is gone
        // (callers see `None` and read another way).
        let reader = FileReader::serve(failing_ring().unwrap(), 1000).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let first = reader.read(paths[0].clone()).await;
            assert!(matches!(first, Some(Err(_))), "{first:?}");
            for p in &paths {
                assert!(reader.read(p.clone()).await.is_none());
            }
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
