//! The input seam: what the engine reads committed-version records from. An input is a set of
//! partitions, each an ordered sequence of encoded [`VersionRecord`](crate::record::VersionRecord)s
//! at increasing positions; the engine reads each partition from its committed position and
//! commits back, per partition, the position below which every record is finished and its
//! effects durable. [`SegmentLog`] — the checksummed segment log an embedding server appends to
//! in this machine — is one such input; a distributed log (a Kafka topic) is another.
//!
//! Everything of the engine that follows a partition is addressed by the partition's number:
//! its position, its replay horizon, its failed operations and its version-map entries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use s3repl_io::log::{
    FileStorage, LogReader, Notifier, ReadOptions, RecordBatch, Storage, load_checkpoint,
    read_partitions, save_checkpoint, sync_records_below,
};

use crate::Error;

/// A source of committed-version records, read per partition (see the module documentation).
///
/// The engine calls these from blocking threads (one reader thread per partition; the
/// checkpoint task commits from tokio's blocking pool): they may block.
pub trait LogInput: Send + Sync + std::fmt::Debug + 'static {
    /// How many partitions the input has; the engine reads partitions `0..partitions()`.
    fn partitions(&self) -> u32;

    /// The committed position of every partition (index = partition; a missing entry is 0):
    /// where reading resumes. Checked here, at start: an input that cannot be read as
    /// configured (a partition count that does not match the log's) fails the start.
    fn committed(&self) -> Result<Vec<u64>, Error>;

    /// A reader of `partition` whose first record is the one at position `from`.
    fn open(&self, partition: u32, from: u64) -> Result<Box<dyn PartitionReader>, Error>;

    /// Commits `positions` (index = partition): every record below its partition's position
    /// is finished and what it did is durable. A later [`LogInput::committed`] returns them.
    fn commit(&self, positions: &[u64]) -> Result<(), Error>;

    /// Like [`LogInput::commit`], with, per partition, the position of its oldest queued failed
    /// operation (`None`: none queued). An input whose partitions can move to another process
    /// (a distributed log) commits no further than that operation, so that whoever reads the
    /// partition next reads it again and redoes it (checking at the destination what came after
    /// it, which may have been applied); the default commits `positions` (a segment log keeps
    /// its failed operations in this machine's journal, retried from there).
    fn commit_holding(&self, positions: &[u64], failed: &[Option<u64>]) -> Result<(), Error> {
        let _ = failed;
        self.commit(positions)
    }

    /// While the returned lease is held, the input keeps `partition` in this process: a work
    /// of the partition that is not a record a reader handed out (a background retry of a
    /// queued failed operation) takes one, and a distributed input waits for it before it lets
    /// the partition go. `None`: this process does not (or no longer) read the partition, and
    /// its queued failed operations are its new reader's (they are dropped here). The default:
    /// every partition is always this process's.
    fn lease(&self, partition: u32) -> Option<Lease> {
        let _ = partition;
        Some(Box::new(()))
    }

    /// Per partition, a position no reader of an earlier run can have been given a record at
    /// or past (a record becomes readable only once durable, so a crashed run cannot have
    /// replicated anything from there on): it bounds the replay check after a crash. `None`
    /// when the input cannot say (the check then runs up to the saved replay horizon).
    fn durable_marks(&self) -> Result<Option<Vec<Option<u64>>>, Error> {
        Ok(None)
    }
}

/// Held while work of a partition is under way outside its readers (see [`LogInput::lease`]).
pub type Lease = Box<dyn std::fmt::Debug + Send + Sync>;

/// One partition's records, in order.
pub trait PartitionReader: Send {
    /// Hands up to `max` records to `each` (position, encoded record), in order, waiting up to
    /// `wait` for the first when there is none yet; returns how many. Records handed out
    /// before an error count as read (the position is past them). An error whose
    /// [`Error::is_transient`] says so is retried from [`PartitionReader::position`] with a new
    /// reader; any other stops the partition.
    fn read(
        &mut self,
        max: usize,
        wait: Duration,
        each: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<usize, Error>;

    /// The position of the next record this reader hands out.
    fn position(&self) -> u64;

    /// Records below this position may have been applied by another reader of the partition
    /// (on a distributed log: a previous owner that died, or let go before its work was
    /// committed): the engine checks each at its destinations before applying it, so that
    /// none is written twice. Asked after every read; `None` (the default): no other reader.
    fn taken_over_below(&self) -> Option<u64> {
        None
    }
}

/// The segment log in a directory of this machine ([`s3repl_io::log`]), read as one consumer:
/// positions are the log's sequence numbers, commits are the consumer's checkpoint file.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    partitions: u32,
    consumer: String,
    read: ReadOptions,
    notifier: Option<Arc<Notifier>>,
    /// The positions of the last commit, so a commit syncs only what advanced.
    committed: Mutex<Vec<u64>>,
}

impl SegmentLog {
    /// The log in `dir`, of `partitions` partitions (checked against the log's own record of
    /// it when the engine starts), read as the consumer `replicator`.
    pub fn new(dir: impl Into<PathBuf>, partitions: u32) -> Self {
        SegmentLog {
            dir: dir.into(),
            partitions,
            consumer: "replicator".into(),
            read: ReadOptions::default(),
            notifier: None,
            committed: Mutex::new(Vec::new()),
        }
    }

    /// The consumer name under which the checkpoint is stored.
    #[must_use]
    pub fn consumer(mut self, name: &str) -> Self {
        name.clone_into(&mut self.consumer);
        self
    }

    /// Log reader settings.
    #[must_use]
    pub fn read_options(mut self, opts: ReadOptions) -> Self {
        self.read = opts;
        self
    }

    /// The log writer's notifier, when the writer is in this process: caught-up readers sleep
    /// until an append instead of polling.
    #[must_use]
    pub fn notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl LogInput for SegmentLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn committed(&self) -> Result<Vec<u64>, Error> {
        if self.partitions == 0 {
            return Err(Error::Input {
                transient: false,
                source: format!("the log in {} needs at least one partition", self.dir.display())
                    .into(),
            });
        }
        // A count that differs from the log's would leave partitions unread or read ones
        // that do not exist: replication would stall without a word.
        if let Some(n) = read_partitions(&FileStorage, &self.dir)?
            && n != self.partitions
        {
            return Err(Error::Input {
                transient: false,
                source: format!(
                    "the log in {} has {n} partitions; the engine was given {}",
                    self.dir.display(),
                    self.partitions
                )
                .into(),
            });
        }
        let cp = load_checkpoint(&FileStorage, &self.dir, &self.consumer)?.unwrap_or_default();
        let at: Vec<u64> =
            (0..self.partitions).map(|p| cp.next.get(&p).copied().unwrap_or(0)).collect();
        self.committed.lock().clone_from(&at);
        Ok(at)
    }

    fn open(&self, partition: u32, from: u64) -> Result<Box<dyn PartitionReader>, Error> {
        let reader = LogReader::open(FileStorage, &self.dir, partition, from, self.read);
        let reader = match &self.notifier {
            Some(n) => reader.with_notifier(n.clone()),
            None => reader,
        };
        Ok(Box::new(SegmentReader::new(reader)))
    }

    fn commit(&self, positions: &[u64]) -> Result<(), Error> {
        let mut last = self.committed.lock();
        // A reader sees records before their fsync; the checkpoint must not pass records a
        // power loss could still take back (see `sync_records_below`).
        for (p, &next) in (0u32..).zip(positions) {
            if last.get(p as usize).is_none_or(|&before| next > before) {
                sync_records_below(&FileStorage, &self.dir, p, next)?;
            }
        }
        let cp =
            s3repl_io::log::Checkpoint { next: (0u32..).zip(positions.iter().copied()).collect() };
        // Written whole to a new file and renamed over the old one: a failed attempt (a full
        // disk) leaves the last checkpoint in place, and the next one starts afresh.
        save_checkpoint(&FileStorage, &self.dir, &self.consumer, &cp)
            .map_err(|e| Error::Input { transient: true, source: Box::new(e) })?;
        positions.clone_into(&mut last);
        Ok(())
    }

    fn durable_marks(&self) -> Result<Option<Vec<Option<u64>>>, Error> {
        Ok(s3repl_io::log::durable_marks(&FileStorage, &self.dir)?)
    }
}

/// A [`LogReader`] of one partition with its reusable batch.
pub(crate) struct SegmentReader<S: Storage + Clone> {
    reader: LogReader<S>,
    batch: RecordBatch,
}

impl<S: Storage + Clone> SegmentReader<S> {
    pub(crate) fn new(reader: LogReader<S>) -> Self {
        SegmentReader { reader, batch: RecordBatch::new() }
    }
}

impl<S: Storage + Clone + Send> PartitionReader for SegmentReader<S>
where
    S::File: Send,
{
    fn read(
        &mut self,
        max: usize,
        wait: Duration,
        each: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<usize, Error> {
        self.batch.clear();
        let read = self.reader.wait_records(max, &mut self.batch, wait);
        // Records read before a failure count as read (the position is past them).
        for rec in self.batch.iter() {
            each(rec.seq, rec.payload);
        }
        Ok(read.map(|_| self.batch.len())?)
    }

    fn position(&self) -> u64 {
        self.reader.next_seq()
    }
}
