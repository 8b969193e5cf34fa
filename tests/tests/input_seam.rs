//! The engine's input seam (issue 26, item 2): the engine reads any [`LogInput`] — partitions
//! of committed-version records at positions it commits back — not only the segment log. An
//! in-memory input stands in here for a distributed log: the engine resumes each partition at
//! its committed position, commits only finished work, retries an input's transient failures
//! and halts only the partition whose input failed for good. And the segment log refuses a
//! partition count that is not the log's own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use s3repl::Error;
use s3repl::config::ReplicationConfiguration;
use s3repl::log::{LogConfig, LogWriter};
use s3repl::pipeline::{
    Engine, EngineHandle, Halt, LogInput, MemorySource, MemoryStatus, PartitionReader,
};
use s3repl::record::VersionRecord;
use s3repl_io::dest::Destination;

const DEST: &str = "arn:aws:s3:::seam-dst";

fn config() -> ReplicationConfiguration {
    let body = format!(
        r#"{{"Role":"arn:aws:iam::123456789012:role/r","Rules":[
          {{"ID":"all","Priority":1,"Status":"Enabled","Filter":{{}},
            "DeleteMarkerReplication":{{"Status":"Disabled"}},
            "Destination":{{"Bucket":"{DEST}"}}}}]}}"#
    );
    ReplicationConfiguration::parse(body.as_bytes(), None).unwrap()
}

/// What a partition's next read does instead of reading.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Transient,
    Fatal,
}

#[derive(Debug, Default)]
struct State {
    /// Per partition: the encoded records at their positions (increasing; a distributed log's
    /// may skip some).
    records: Vec<Vec<(u64, Vec<u8>)>>,
    /// Per partition: a fault the next read reports (once).
    faults: Vec<Option<Fault>>,
    committed: Vec<u64>,
    /// What readers report as [`PartitionReader::taken_over_below`].
    taken_over: Option<u64>,
    /// Every reader opened: (partition, from).
    opens: Vec<(u32, u64)>,
    commits: usize,
}

/// An in-memory partitioned log, as a distributed one would look to the engine.
#[derive(Debug)]
struct MemoryInput {
    state: Mutex<State>,
    appended: Condvar,
}

impl MemoryInput {
    fn new(partitions: usize) -> Arc<Self> {
        Arc::new(MemoryInput {
            state: Mutex::new(State {
                records: vec![Vec::new(); partitions],
                faults: vec![None; partitions],
                committed: vec![0; partitions],
                ..State::default()
            }),
            appended: Condvar::new(),
        })
    }

    fn push(&self, partition: usize, record: &VersionRecord) {
        let mut state = self.state.lock().unwrap();
        let records = &mut state.records[partition];
        let at = records.last().map_or(0, |(p, _)| p + 1);
        records.push((at, record.to_bytes().unwrap()));
        drop(state);
        self.appended.notify_all();
    }

    /// The partition's next record goes `by` positions further than the one after its last
    /// (as offsets another consumer group member finished, or offsets that hold no record).
    fn skip(&self, partition: usize, by: u64) {
        let mut state = self.state.lock().unwrap();
        let records = &mut state.records[partition];
        let at = records.last().map_or(0, |(p, _)| p + 1) + by;
        // A placeholder the reader never hands out: it only moves the next position on.
        records.push((at - 1, Vec::new()));
    }

    fn fail_next(&self, partition: usize, fault: Fault) {
        self.state.lock().unwrap().faults[partition] = Some(fault);
    }

    fn committed_now(&self) -> Vec<u64> {
        self.state.lock().unwrap().committed.clone()
    }

    fn opens(&self) -> Vec<(u32, u64)> {
        self.state.lock().unwrap().opens.clone()
    }

    /// Waits until the engine has committed every partition up to `want`.
    async fn wait_committed(&self, want: &[u64]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.committed_now() == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

struct Reader {
    input: Arc<MemoryInput>,
    partition: usize,
    at: u64,
}

impl PartitionReader for Reader {
    fn read(
        &mut self,
        max: usize,
        wait: Duration,
        each: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<usize, Error> {
        let mut state = self.input.state.lock().unwrap();
        let last = |s: &State| s.records[self.partition].last().map_or(0, |(p, _)| p + 1);
        if last(&state) <= self.at {
            state = self.input.appended.wait_timeout(state, wait).unwrap().0;
        }
        if let Some(fault) = state.faults[self.partition].take() {
            return Err(Error::Input {
                transient: fault == Fault::Transient,
                source: format!("{fault:?} fault").into(),
            });
        }
        let records = &state.records[self.partition];
        let mut n = 0;
        let from = self.at;
        for (at, r) in records.iter().filter(|(at, _)| *at >= from) {
            if n == max {
                break;
            }
            self.at = at + 1;
            if r.is_empty() {
                continue; // a skip's placeholder
            }
            each(*at, r);
            n += 1;
        }
        Ok(n)
    }

    fn position(&self) -> u64 {
        self.at
    }

    fn taken_over_below(&self) -> Option<u64> {
        self.input.state.lock().unwrap().taken_over
    }
}

#[derive(Debug)]
struct Input(Arc<MemoryInput>);

impl LogInput for Input {
    fn partitions(&self) -> u32 {
        self.0.state.lock().unwrap().records.len() as u32
    }

    fn committed(&self) -> Result<Vec<u64>, Error> {
        Ok(self.0.committed_now())
    }

    fn open(&self, partition: u32, from: u64) -> Result<Box<dyn PartitionReader>, Error> {
        self.0.state.lock().unwrap().opens.push((partition, from));
        Ok(Box::new(Reader { input: self.0.clone(), partition: partition as usize, at: from }))
    }

    fn commit(&self, positions: &[u64]) -> Result<(), Error> {
        let mut state = self.0.state.lock().unwrap();
        for (c, &p) in state.committed.iter().zip(positions) {
            assert!(p >= *c, "a commit never goes back");
        }
        state.committed = positions.to_vec();
        state.commits += 1;
        Ok(())
    }
}

/// Puts `n` versions of keys `tag/i` into the source and the input's partition.
fn append(
    input: &MemoryInput,
    source: &MemorySource,
    partition: usize,
    tag: &str,
    n: u32,
) -> Vec<String> {
    (0..n)
        .map(|i| {
            let key = format!("{tag}/{i}");
            let data = Bytes::from(format!("bytes of {key}"));
            let version_id = format!("{tag}-{i}");
            source.insert("src", &key, &version_id, data.clone());
            input.push(
                partition,
                &VersionRecord {
                    bucket: "src".into(),
                    key: key.clone(),
                    version_id,
                    size: data.len() as u64,
                    blake3: Some(*blake3::hash(&data).as_bytes()),
                    ..VersionRecord::default()
                },
            );
            key
        })
        .collect()
}

/// A partition taken over from a reader that may have applied records without committing them
/// (a distributed log's previous owner, dead mid-copy): with the input saying so
/// (`taken_over_below`), the new reader's engine checks those records at the destination and
/// writes no second replica version of any; told nothing, it would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_previous_reader_may_have_applied_are_checked_not_written_twice() {
    use s3repl_tests::seaweed::SeaweedFs;
    let server = SeaweedFs::start("seam-takeover", &["takeover"]).unwrap();
    server.enable_versioning("takeover").unwrap();
    let dest =
        Destination::s3(DEST, &s3repl_tests::seaweed::options(&server.endpoint(), "takeover"))
            .unwrap();
    let input = MemoryInput::new(1);
    let source = MemorySource::new();
    let keys = append(&input, &source, 0, "t", 30);
    // The previous owner applied everything, and died before committing any of it.
    let first = s3repl_tests::temp_dir("seam-takeover-a");
    let engine = start(&input, first.path(), &source, &dest);
    let deadline = Instant::now() + Duration::from_secs(30);
    while input.committed_now() != [30] && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.shutdown().await.unwrap();
    input.state.lock().unwrap().committed = vec![0];
    // The new owner: another process (its own state), told the first 30 may be applied.
    input.state.lock().unwrap().taken_over = Some(30);
    let second = s3repl_tests::temp_dir("seam-takeover-b");
    let engine = start(&input, second.path(), &source, &dest);
    assert!(input.wait_committed(&[30]).await, "committed {:?}", input.committed_now());
    engine.shutdown().await.unwrap();
    let counts = server.version_counts("takeover").unwrap();
    for k in &keys {
        assert_eq!(
            counts.get(k),
            Some(&1),
            "{k}: one replica version, not one per reader: {counts:?}"
        );
    }
}

fn start(
    input: &Arc<MemoryInput>,
    state: &std::path::Path,
    source: &MemorySource,
    dest: &Destination,
) -> EngineHandle {
    s3repl_tests::start_engine_on(Arc::new(Input(input.clone())), state, config(), source, dest)
}

async fn replicated(dest: &Destination, key: &str) -> bool {
    let path = object_store::path::Path::parse(key).unwrap();
    match dest.store().get(&path).await {
        Ok(r) => r.bytes().await.unwrap() == format!("bytes of {key}"),
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_reads_any_input_resumes_at_its_committed_positions() {
    let dir = s3repl_tests::temp_dir("seam-resume");
    let input = MemoryInput::new(2);
    let source = MemorySource::new();
    let dest = Destination::in_memory(DEST);
    let mut keys = append(&input, &source, 0, "p0", 50);
    keys.extend(append(&input, &source, 1, "p1", 30));
    let engine = start(&input, dir.path(), &source, &dest);
    assert!(input.wait_committed(&[50, 30]).await, "committed {:?}", input.committed_now());
    for k in &keys {
        assert!(replicated(&dest, k).await, "{k} was not replicated");
    }
    engine.shutdown().await.unwrap();
    let mut opens = input.opens();
    opens.sort_unstable();
    assert_eq!(opens, [(0, 0), (1, 0)], "each partition opened once, from the start");

    // While the engine is down the input grows; a new engine resumes where the last committed.
    let later = append(&input, &source, 0, "later", 10);
    let engine = start(&input, dir.path(), &source, &dest);
    assert!(input.wait_committed(&[60, 30]).await, "committed {:?}", input.committed_now());
    for k in &later {
        assert!(replicated(&dest, k).await, "{k} was not replicated");
    }
    engine.shutdown().await.unwrap();
    let mut opens = input.opens().split_off(2);
    opens.sort_unstable();
    assert_eq!(opens, [(0, 50), (1, 30)], "resumed at the committed positions");
}

/// An input may skip positions (a distributed log's offsets finished by another process, or
/// offsets that hold no record): the engine counts them finished, and commits past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_an_input_skips_are_committed_past() {
    let dir = s3repl_tests::temp_dir("seam-skips");
    let input = MemoryInput::new(2);
    let source = MemorySource::new();
    let dest = Destination::in_memory(DEST);
    let mut keys = append(&input, &source, 0, "before", 5);
    input.skip(0, 1_000_000);
    keys.extend(append(&input, &source, 0, "after", 5));
    input.skip(1, 7);
    keys.extend(append(&input, &source, 1, "one", 3));
    let engine = start(&input, dir.path(), &source, &dest);
    let want = [5 + 1_000_000 + 5, 7 + 3];
    assert!(input.wait_committed(&want).await, "committed {:?}", input.committed_now());
    for k in &keys {
        assert!(replicated(&dest, k).await, "{k} was not replicated");
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_input_failure_is_retried_and_a_fatal_one_halts_its_partition_alone() {
    let dir = s3repl_tests::temp_dir("seam-faults");
    let input = MemoryInput::new(2);
    let source = MemorySource::new();
    let dest = Destination::in_memory(DEST);
    let engine = start(&input, dir.path(), &source, &dest);
    let mut keys = append(&input, &source, 0, "first", 20);
    assert!(input.wait_committed(&[20, 0]).await);

    // A transient failure: the partition is read again from where it was, nothing lost.
    input.fail_next(0, Fault::Transient);
    keys.extend(append(&input, &source, 0, "after-transient", 20));
    assert!(input.wait_committed(&[40, 0]).await, "committed {:?}", input.committed_now());
    assert!(engine.halts().is_empty(), "{:?}", engine.halts());
    assert!(
        input.opens().iter().any(|&(p, from)| p == 0 && from > 0),
        "a new reader resumed partition 0 mid-way: {:?}",
        input.opens()
    );

    // A fatal failure of partition 1 stops that partition, and only it.
    input.fail_next(1, Fault::Fatal);
    append(&input, &source, 1, "unread", 5);
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.halts().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        matches!(engine.halts().as_slice(), [Halt::LogRead { partition: 1, .. }]),
        "{:?}",
        engine.halts()
    );
    keys.extend(append(&input, &source, 0, "after-fatal", 20));
    assert!(input.wait_committed(&[60, 0]).await, "committed {:?}", input.committed_now());
    for k in &keys {
        assert!(replicated(&dest, k).await, "{k} was not replicated");
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_refuses_a_partition_count_that_is_not_the_logs() {
    let dir = s3repl_tests::temp_dir("seam-count");
    let log = dir.path().join("log");
    let _writer =
        LogWriter::open(&log, LogConfig { partitions: 8, ..LogConfig::default() }).unwrap();
    let builder = |partitions: u32| {
        Engine::builder()
            .log(&log, partitions)
            .source(Arc::new(MemorySource::new()))
            .status(Arc::new(MemoryStatus::new()))
    };
    for wrong in [4, 0, 9] {
        let err = builder(wrong).start().expect_err("a wrong partition count must fail the start");
        assert!(matches!(err, Error::Input { transient: false, .. }), "{err}");
        assert!(err.to_string().contains("partition"), "{err}");
    }
    // Outside a tokio runtime the start fails with a reason instead of panicking.
    let outside = std::thread::spawn({
        let b = builder(8);
        move || b.start().map(|_| ()).expect_err("no runtime on this thread")
    })
    .join()
    .expect("start() must not panic outside a runtime");
    assert!(matches!(outside, Error::Setup(_)), "{outside:?}");
    let engine = builder(8).start().unwrap();
    let control = engine.control();
    engine.shutdown().await.unwrap();
    // A shut-down engine says so (not an S3 validation error).
    let gone = control.set_config("b", &config()).expect_err("the engine is shut down");
    assert!(matches!(gone, Error::ShutDown), "{gone:?}");

    // An input and a log at once, or an input without a state directory, are refused too.
    let input = Arc::new(Input(MemoryInput::new(1)));
    let both = builder(8).input(input.clone()).start().expect_err("a log and an input");
    assert!(matches!(both, Error::Setup(_)), "{both:?}");
    let no_state = Engine::builder()
        .input(input)
        .source(Arc::new(MemorySource::new()))
        .status(Arc::new(MemoryStatus::new()))
        .start()
        .expect_err("an input needs a state directory");
    assert!(matches!(no_state, Error::Setup(_)), "{no_state:?}");
}
