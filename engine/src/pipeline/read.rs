//! Stage 1, reading: one thread per input partition ([`LogInput`](super::LogInput)) reads
//! committed-version records in batches, decodes them and hands them to the dispatcher through
//! a bounded channel (backpressure reaches the input here).

use std::time::Duration;

use tokio::sync::mpsc;

use crate::Error;
use crate::pipeline::context::{Halt, Stop};
use crate::pipeline::input::PartitionReader;
use crate::pipeline::task::Item;
use crate::record::VersionRecord;

/// Records a reader decodes and hands to the dispatcher at a time.
pub(crate) const READ_BATCH: usize = 256;

/// What a reader tells the rest of the engine besides its records.
pub(crate) struct Marks<'a> {
    /// Positions `from..to` the input skipped: finished.
    pub(crate) skipped: &'a dyn Fn(u64, u64),
    /// Records below this may have been applied by another reader of the partition
    /// ([`PartitionReader::taken_over_below`]).
    pub(crate) taken_over: &'a dyn Fn(u64),
}

/// What a reader does after a read.
enum Next {
    /// Read on.
    Read,
    /// A transient failure: pause, then a new reader from where this one stopped.
    Reopen,
    /// The partition cannot be read on.
    Halt(Halt),
}

/// Reads one partition into the pipeline, from `from`, until the engine stops (`None`) or the
/// partition cannot be read on (the [`Halt`] saying why). `open` opens a reader at a position:
/// a transient failure ([`Error::is_transient`]: short of descriptors or memory, an input that
/// says so) is retried with a new reader from where the last one stopped, after a pause (up to
/// 2 s), instead of halting. Records go on in batches of up to `batch`.
///
/// Positions an input skips (past the next one expected: another process's work on a
/// distributed log, offsets that hold no record) are handed to `skipped` as a range, finished.
pub(crate) fn read_partition(
    open: impl Fn(u64) -> Result<Box<dyn PartitionReader>, Error>,
    from: u64,
    partition: u32,
    batch: usize,
    stop: &Stop,
    tx: &mpsc::Sender<Vec<Item>>,
    marks: &Marks<'_>,
) -> Option<Halt> {
    let mut at = from;
    let mut reader: Option<Box<dyn PartitionReader>> = None;
    let mut items = Vec::with_capacity(batch);
    let mut pause = Duration::from_millis(50);
    let mut warned: Option<std::time::Instant> = None;
    let mut warn = |e: &Error, pause: Duration| {
        // At most one line a second, whatever the retry rate.
        if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(partition, error = %e, pause_ms = pause.as_millis(), "Log read failed for want of a resource; retrying.");
            warned = Some(std::time::Instant::now());
        }
    };
    while !stop.is_set() {
        let r = match reader.as_mut() {
            Some(r) => r,
            None => match open(at) {
                Ok(r) => reader.insert(r),
                Err(e) if e.is_transient() => {
                    warn(&e, pause);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(e) => {
                    tracing::error!(partition, error = %e, "Opening the log failed; replication of this partition stops.");
                    return Some(Halt::LogRead { partition, error: e.to_string() });
                }
            },
        };
        let mut undecodable = None;
        let mut expected = at;
        let read = r.read(batch, Duration::from_millis(20), &mut |seq, payload| {
            if undecodable.is_some() {
                return;
            }
            if seq > expected {
                (marks.skipped)(expected, seq);
            }
            expected = expected.max(seq.saturating_add(1));
            match VersionRecord::decode(payload) {
                Ok(record) => items.push(Item { partition, seq, record }),
                Err(e) => undecodable = Some((seq, e)),
            }
        });
        at = r.position();
        // Before the records go on: their replay check depends on it.
        if let Some(below) = r.taken_over_below() {
            (marks.taken_over)(below);
        }
        let next = match (undecodable, read) {
            (Some((seq, e)), _) => {
                tracing::error!(partition, seq, error = %e, "Undecodable log record; replication of this partition stops.");
                Next::Halt(Halt::Record { partition, seq, error: e.to_string() })
            }
            (None, Ok(_)) => {
                pause = Duration::from_millis(50);
                Next::Read
            }
            (None, Err(e)) if e.is_transient() => {
                warn(&e, pause);
                Next::Reopen
            }
            (None, Err(e)) => {
                tracing::error!(partition, error = %e, "Log read failed; replication of this partition stops.");
                Next::Halt(Halt::LogRead { partition, error: e.to_string() })
            }
        };
        // The records before a failure still go through. Blocks when the pipeline is full:
        // this is where backpressure reaches the input.
        if !items.is_empty()
            && tx.blocking_send(std::mem::replace(&mut items, Vec::with_capacity(batch))).is_err()
        {
            return None;
        }
        match next {
            Next::Read => {}
            Next::Halt(halt) => return Some(halt),
            Next::Reopen => {
                // The records read before the failure went on above; a new reader starts after
                // them.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
                reader = None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::context::libc_errno;
    use crate::pipeline::input::SegmentReader;
    use s3repl_io::log::{LogReader, ReadOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A storage whose `open` and `list` fail with "too many open files" while `fail` is set.
    #[derive(Debug, Clone)]
    struct Starved {
        inner: s3repl_io::log::MemStorage,
        fail: Arc<AtomicBool>,
    }

    impl Starved {
        fn check(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::Acquire) {
                Err(std::io::Error::from_raw_os_error(libc_errno::EMFILE))
            } else {
                Ok(())
            }
        }
    }

    impl s3repl_io::log::Storage for Starved {
        type File = s3repl_io::log::MemFile;
        fn open(&self, path: &std::path::Path, create: bool) -> std::io::Result<Self::File> {
            self.check()?;
            self.inner.open(path, create)
        }
        fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
            self.check()?;
            self.inner.list(dir)
        }
        fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
            self.inner.create_dir_all(dir)
        }
        fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
            self.inner.remove_file(path)
        }
        fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
            self.inner.rename(from, to)
        }
        fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
            self.inner.sync_dir(dir)
        }
    }

    /// Issue 25, finding 4: a partition whose reads fail for want of descriptors goes on once
    /// they are back (it used to halt for good), losing and repeating nothing.
    #[test]
    fn a_reader_short_of_descriptors_retries_instead_of_halting() {
        use s3repl_io::log::{Durability, LogConfig, LogWriter};
        let mem = s3repl_io::log::MemStorage::new();
        let dir = std::path::Path::new("/log");
        // Segments of a few records each.
        let config = LogConfig { partitions: 1, segment_bytes: 256, durability: Durability::None };
        let writer = LogWriter::open_with(mem.clone(), dir, config).unwrap();
        let record = |i: u32| {
            VersionRecord {
                bucket: "b".into(),
                key: format!("k{i}"),
                version_id: format!("v{i}"),
                ..VersionRecord::default()
            }
            .to_bytes()
            .unwrap()
        };
        for i in 0..20 {
            writer.append("b", "k", &record(i)).unwrap();
        }
        let starved = Starved { inner: mem, fail: Arc::new(AtomicBool::new(true)) };
        let (tx, mut rx) = mpsc::channel(64);
        let stop = Arc::new(Stop::default());
        let (s, st) = (starved.clone(), stop.clone());
        let opts = ReadOptions { backend: s3repl_io::log::Backend::Std, ..ReadOptions::default() };
        let reader = std::thread::spawn(move || {
            let open = |at| -> Result<Box<dyn PartitionReader>, Error> {
                Ok(Box::new(SegmentReader::new(LogReader::open(s.clone(), dir, 0, at, opts))))
            };
            let marks = Marks { skipped: &|_, _| {}, taken_over: &|_| {} };
            read_partition(open, 0, 0, READ_BATCH, &st, &tx, &marks)
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(rx.try_recv().is_err(), "nothing can be read while starved");
        assert!(!reader.is_finished(), "the reader waits instead of halting");
        starved.fail.store(false, Ordering::Release);
        let mut seqs = Vec::new();
        while seqs.len() < 20 {
            let batch = rx.blocking_recv().unwrap();
            seqs.extend(batch.iter().map(|i| i.seq));
        }
        assert_eq!(seqs.len(), 20);
        // Starved again while the writer starts new segments (which the reader must open).
        starved.fail.store(true, Ordering::Release);
        for i in 20..40 {
            writer.append("b", "k", &record(i)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        // What the open segment holds may arrive; the later segments cannot be opened.
        while let Ok(batch) = rx.try_recv() {
            seqs.extend(batch.iter().map(|i| i.seq));
        }
        assert!(seqs.len() < 40, "the new segments cannot be opened while starved");
        starved.fail.store(false, Ordering::Release);
        while seqs.len() < 40 {
            let batch = rx.blocking_recv().unwrap();
            seqs.extend(batch.iter().map(|i| i.seq));
        }
        assert_eq!(seqs, (0..40).collect::<Vec<u64>>(), "every record once, in order");
        stop.set();
        assert_eq!(reader.join().unwrap(), None, "no halt");
    }
}
