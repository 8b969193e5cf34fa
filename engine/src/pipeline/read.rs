//! Stage 1, reading: one thread per log partition reads committed-version records in batches
//! and hands them to the dispatcher through a bounded channel (backpressure reaches the log
//! here).

use crate::pipeline::context::Stop;
use std::time::Duration;

use s3repl_io::log::{LogReader, RecordBatch};
use tokio::sync::mpsc;

use crate::record::VersionRecord;

use crate::pipeline::context::{Halt, exhausted};
use crate::pipeline::task::Item;

/// Records a reader decodes and hands to the dispatcher at a time.
pub(crate) const READ_BATCH: usize = 256;

/// Reads one partition into the pipeline, from `from`, until the engine stops (`None`) or the
/// partition cannot be read on (the [`Halt`] saying why). `open` opens a reader at a sequence
/// number: a read that fails for want of descriptors or memory is retried with a new reader
/// from where the last one stopped, after a pause (up to 2 s), instead of halting.
pub(crate) fn read_partition<S: s3repl_io::log::Storage + Clone>(
    open: impl Fn(u64) -> LogReader<S>,
    from: u64,
    partition: u32,
    stop: &Stop,
    tx: &mpsc::Sender<Vec<Item>>,
) -> Option<Halt> {
    let mut reader = open(from);
    let mut batch = RecordBatch::new();
    let mut items = Vec::with_capacity(READ_BATCH);
    let mut pause = Duration::from_millis(50);
    let mut warned: Option<std::time::Instant> = None;
    while !stop.is_set() {
        batch.clear();
        let read = reader.wait_records(READ_BATCH, &mut batch, Duration::from_millis(20));
        let retry = match read {
            Ok(_) => {
                pause = Duration::from_millis(50);
                false
            }
            Err(e) if exhausted(&e) => {
                // At most one line a second, whatever the retry rate.
                if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(partition, error = %e, pause_ms = pause.as_millis(), "Log read failed for want of a resource; retrying.");
                    warned = Some(std::time::Instant::now());
                }
                true
            }
            Err(e) => {
                tracing::error!(partition, error = %e, "Log read failed; replication of this partition stops.");
                return Some(Halt::LogRead { partition, error: e.to_string() });
            }
        };
        for rec in batch.iter() {
            let record = match VersionRecord::decode(rec.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(partition, seq = rec.seq, error = %e, "Undecodable log record; replication of this partition stops.");
                    // The records before it in this batch still go through.
                    if !items.is_empty() {
                        let _ = tx.blocking_send(items);
                    }
                    return Some(Halt::Record { partition, seq: rec.seq, error: e.to_string() });
                }
            };
            items.push(Item { partition, seq: rec.seq, record });
        }
        // Blocks when the pipeline is full: this is where backpressure reaches the log.
        if !items.is_empty()
            && tx
                .blocking_send(std::mem::replace(&mut items, Vec::with_capacity(READ_BATCH)))
                .is_err()
        {
            return None;
        }
        if retry {
            // The records read before the failure went on above; a new reader starts after them.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
            reader = open(reader.next_seq());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::context::libc_errno;
    use s3repl_io::log::ReadOptions;
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
            read_partition(|at| LogReader::open(s.clone(), dir, 0, at, opts), 0, 0, &st, &tx)
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
