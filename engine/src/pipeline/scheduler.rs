//! Per-key ordering with a bound on admitted work.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// The scheduler's consumer side is gone (shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the scheduler is shut down")]
pub(crate) struct SchedulerClosed;

type Lane<T> = VecDeque<(T, OwnedSemaphorePermit)>;

#[derive(Debug)]
struct Shared<K: Hash + Eq + Clone, T> {
    /// A key has an entry exactly while one of its jobs is dispatched; the queue holds the
    /// jobs admitted after it, in order.
    lanes: Mutex<HashMap<K, Lane<T>, foldhash::fast::RandomState>>,
    admission: Arc<Semaphore>,
    ready: mpsc::Sender<Admitted<K, T>>,
}

/// Runs jobs so that jobs with equal keys run one at a time in submission order, while jobs
/// with different keys run in parallel. At most `capacity` jobs are admitted (queued or
/// running) at once; [`KeyedScheduler::submit`] waits for room, which is how a slow
/// destination pushes back on the log reader.
///
/// Dispatched jobs arrive on the receiver returned by [`KeyedScheduler::new`] as [`Admitted`]
/// values; dropping one (after the work is done, or when abandoning it) releases its admission
/// slot and dispatches the next job of its key. Because release happens on drop, a panicking or
/// cancelled worker cannot stall a key.
#[derive(Debug)]
pub(crate) struct KeyedScheduler<K: Hash + Eq + Clone, T> {
    shared: Arc<Shared<K, T>>,
}

impl<K: Hash + Eq + Clone, T> Clone for KeyedScheduler<K, T> {
    fn clone(&self) -> Self {
        KeyedScheduler { shared: self.shared.clone() }
    }
}

/// A dispatched job: its key's turn. Drop it when done.
#[derive(Debug)]
pub(crate) struct Admitted<K: Hash + Eq + Clone, T> {
    key: Option<K>,
    job: Option<T>,
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared<K, T>>,
}

impl<K: Hash + Eq + Clone, T> Admitted<K, T> {
    #[cfg(test)]
    /// The job's key.
    pub(crate) fn key(&self) -> Option<&K> {
        self.key.as_ref()
    }

    #[cfg(test)]
    /// The job.
    pub(crate) fn job(&self) -> Option<&T> {
        self.job.as_ref()
    }

    /// The job, if not taken out.
    pub(crate) fn job_ref(&self) -> Option<&T> {
        self.job.as_ref()
    }

    /// Takes the job out (the key stays busy until this value is dropped).
    pub(crate) fn take_job(&mut self) -> Option<T> {
        self.job.take()
    }
}

impl<K: Hash + Eq + Clone, T> Drop for Admitted<K, T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        drop(self.permit.take());
        let shared = self.shared.clone();
        let mut lanes = shared.lanes.lock();
        let Some(lane) = lanes.get_mut(&key) else { return };
        let Some((job, permit)) = lane.pop_front() else {
            lanes.remove(&key);
            return;
        };
        drop(lanes);
        let next = Admitted {
            key: Some(key),
            job: Some(job),
            permit: Some(permit),
            shared: shared.clone(),
        };
        if let Err(TrySendError::Closed(mut rejected) | TrySendError::Full(mut rejected)) =
            shared.ready.try_send(next)
        {
            // Only a closed channel can refuse (it has room for every admitted job). Shut
            // down: drop this key's queue without dispatching it (and, with the key taken
            // out, without recursing).
            if let Some(key) = rejected.key.take() {
                shared.lanes.lock().remove(&key);
            }
        }
    }
}

/// Admission slots taken ahead for several jobs ([`KeyedScheduler::reserve`]); what is left
/// returns to the scheduler on drop.
#[derive(Debug, Default)]
pub(crate) struct Reserved(Option<OwnedSemaphorePermit>);

impl Reserved {
    /// Whether no slot is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// One slot, if any is left.
    fn take_one(&mut self) -> Option<OwnedSemaphorePermit> {
        let all = self.0.as_mut()?;
        if all.num_permits() > 1 { all.split(1) } else { self.0.take() }
    }
}

impl<K: Hash + Eq + Clone, T> KeyedScheduler<K, T> {
    /// A scheduler admitting at most `capacity` jobs, and the receiver of dispatched jobs.
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Admitted<K, T>>) {
        let capacity = capacity.max(1);
        let (ready, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared {
            lanes: Mutex::new(HashMap::default()),
            admission: Arc::new(Semaphore::new(capacity)),
            ready,
        });
        (KeyedScheduler { shared }, rx)
    }

    #[cfg(test)]
    /// Jobs admitted and not yet released.
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.ready.max_capacity() - self.shared.admission.available_permits()
    }

    /// Admits a job, waiting for room; it is dispatched when every earlier job with the same
    /// key has been released.
    ///
    /// # Cancel safety
    /// Cancel safe while waiting for room (nothing is admitted); once admitted the call
    /// completes without further waiting.
    pub(crate) async fn submit(&self, key: K, job: T) -> Result<(), SchedulerClosed> {
        let permit =
            self.shared.admission.clone().acquire_owned().await.map_err(|_| SchedulerClosed)?;
        self.admit(key, job, permit)
    }

    /// Takes admission slots for up to `n` jobs at once (at least one, at most an eighth of the
    /// capacity), waiting until that many are free. A submitter that waits for room is then
    /// woken once for many released slots instead of once per slot (each wake-up on a
    /// multi-threaded runtime can wake a parked thread: a system call and a context switch).
    /// Slots not used are given back when the reservation is dropped.
    pub(crate) async fn reserve(&self, n: usize) -> Result<Reserved, SchedulerClosed> {
        let most = (self.shared.ready.max_capacity() / 8).max(1);
        let n = u32::try_from(n.clamp(1, most)).unwrap_or(1);
        let permit = self
            .shared
            .admission
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| SchedulerClosed)?;
        Ok(Reserved(Some(permit)))
    }

    /// [`KeyedScheduler::submit`] with a slot of `reserved`; when it has none left, slots for
    /// up to `want` jobs (this one included) are reserved first, as
    /// [`KeyedScheduler::reserve`] does.
    ///
    /// # Cancel safety
    /// Cancel safe while waiting for room (nothing is admitted).
    pub(crate) async fn submit_reserved(
        &self,
        key: K,
        job: T,
        reserved: &mut Reserved,
        want: usize,
    ) -> Result<(), SchedulerClosed> {
        if reserved.is_empty() {
            *reserved = self.reserve(want).await?;
        }
        match reserved.take_one() {
            Some(permit) => self.admit(key, job, permit),
            None => self.submit(key, job).await,
        }
    }

    /// Admits `job` with its slot `permit`.
    fn admit(&self, key: K, job: T, permit: OwnedSemaphorePermit) -> Result<(), SchedulerClosed> {
        let mut lanes = self.shared.lanes.lock();
        match lanes.entry(key) {
            Entry::Occupied(mut lane) => {
                lane.get_mut().push_back((job, permit));
                Ok(())
            }
            Entry::Vacant(v) => {
                // One copy of the key for the lane, one for the job (its drop finds the lane).
                let key = v.key().clone();
                v.insert(VecDeque::new());
                drop(lanes);
                let admitted = Admitted {
                    key: Some(key),
                    job: Some(job),
                    permit: Some(permit),
                    shared: self.shared.clone(),
                };
                match self.shared.ready.try_send(admitted) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Closed(mut a) | TrySendError::Full(mut a)) => {
                        if let Some(key) = a.key.take() {
                            self.shared.lanes.lock().remove(&key);
                        }
                        Err(SchedulerClosed)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use proptest::prelude::*;

    /// Runs `jobs` (key, work ms) through a scheduler with `workers` concurrent workers and
    /// returns, per key, the order jobs ran in, checking no two jobs of a key overlapped.
    fn run(
        jobs: Vec<(u8, u8)>,
        capacity: usize,
        workers: usize,
    ) -> Result<HashMap<u8, Vec<usize>>, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let (sched, rx) = KeyedScheduler::<u8, (usize, u8)>::new(capacity);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let running: Arc<Mutex<HashMap<u8, bool>>> = Arc::default();
            let order: Arc<Mutex<HashMap<u8, Vec<usize>>>> = Arc::default();
            let total = jobs.len();
            let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut handles = Vec::new();
            for _ in 0..workers {
                let (rx, running, order, done) =
                    (rx.clone(), running.clone(), order.clone(), done.clone());
                handles.push(tokio::spawn(async move {
                    loop {
                        if done.load(std::sync::atomic::Ordering::SeqCst) >= total {
                            return Ok::<(), String>(());
                        }
                        let next = tokio::time::timeout(Duration::from_millis(50), async {
                            rx.lock().await.recv().await
                        })
                        .await;
                        let Ok(Some(mut a)) = next else { continue };
                        let key = *a.key().ok_or("no key")?;
                        let (index, ms) = a.take_job().ok_or("no job")?;
                        if running.lock().insert(key, true) == Some(true) {
                            return Err(format!("two jobs of key {key} overlapped"));
                        }
                        order.lock().entry(key).or_default().push(index);
                        tokio::time::sleep(Duration::from_millis(u64::from(ms % 3))).await;
                        running.lock().insert(key, false);
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        drop(a);
                    }
                }));
            }
            for (i, (key, ms)) in jobs.into_iter().enumerate() {
                sched.submit(key, (i, ms)).await.map_err(|e| e.to_string())?;
                if sched.in_flight() > capacity {
                    return Err("admitted more than the capacity".into());
                }
            }
            for h in handles {
                h.await.map_err(|e| e.to_string())??;
            }
            let order = order.lock().clone();
            Ok(order)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn per_key_order_is_submission_order(
            jobs in proptest::collection::vec((0u8..5, any::<u8>()), 1..60),
            capacity in 1usize..8,
            workers in 1usize..5,
        ) {
            let got = run(jobs.clone(), capacity, workers).map_err(TestCaseError::fail)?;
            for key in 0u8..5 {
                let want: Vec<usize> = jobs.iter().enumerate().filter(|(_, (k, _))| *k == key).map(|(i, _)| i).collect();
                prop_assert_eq!(got.get(&key).cloned().unwrap_or_default(), want, "key {}", key);
            }
        }
    }

    #[tokio::test]
    async fn different_keys_run_in_parallel_and_submit_waits_for_room() {
        let (sched, mut rx) = KeyedScheduler::<&str, u32>::new(2);
        sched.submit("a", 1).await.unwrap();
        sched.submit("b", 2).await.unwrap();
        let a = rx.recv().await.unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!((a.job(), b.job()), (Some(&1), Some(&2)), "both keys dispatched at once");
        // Full: a third submission waits until a job is released.
        let s2 = sched.clone();
        let third = tokio::spawn(async move { s2.submit("a", 3).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished());
        drop(b);
        third.await.unwrap().unwrap();
        assert!(rx.try_recv().is_err(), "key a is still busy with job 1");
        drop(a);
        assert_eq!(rx.recv().await.unwrap().job(), Some(&3));
    }

    #[tokio::test]
    async fn reserved_slots_count_against_capacity_and_what_is_left_returns_on_drop() {
        let (sched, mut rx) = KeyedScheduler::<&str, u32>::new(16);
        // At most an eighth of the capacity at once.
        let mut reserved = sched.reserve(100).await.unwrap();
        assert_eq!(sched.in_flight(), 2);
        sched.submit_reserved("a", 1, &mut reserved, 100).await.unwrap();
        sched.submit_reserved("a", 2, &mut reserved, 99).await.unwrap();
        assert!(reserved.is_empty());
        assert_eq!(sched.in_flight(), 2, "the reserved slots, used");
        // None left: slots for what is still wanted are reserved first.
        sched.submit_reserved("b", 3, &mut reserved, 1).await.unwrap();
        assert!(reserved.is_empty());
        assert_eq!(sched.in_flight(), 3);
        let unused = sched.reserve(1).await.unwrap();
        assert_eq!(sched.in_flight(), 4);
        drop(unused);
        assert_eq!(sched.in_flight(), 3, "an unused reservation gives its slots back");
        // Per-key order holds for reserved submissions.
        let first = rx.recv().await.unwrap();
        let other = rx.recv().await.unwrap();
        assert_eq!((first.job(), other.job()), (Some(&1), Some(&3)));
        assert!(rx.try_recv().is_err(), "key a is busy with job 1");
        drop(first);
        assert_eq!(rx.recv().await.unwrap().job(), Some(&2));
        // A full scheduler: a reservation waits for as many slots as it asks.
        let (small, mut rx) = KeyedScheduler::<u8, u8>::new(8);
        for k in 0..8 {
            small.submit(k, k).await.unwrap();
        }
        let s2 = small.clone();
        let waiting = tokio::spawn(async move { s2.reserve(1).await.map(|r| r.is_empty()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(rx.recv().await.unwrap());
        assert_eq!(waiting.await.unwrap(), Ok(false));
    }

    /// Embedders spawn these futures on multi-threaded runtimes: they must be `Send`.
    #[test]
    fn public_futures_are_send() {
        fn assert_send<F: Send>(_: &F) {}
        let (sched, _rx) = KeyedScheduler::<String, Vec<u8>>::new(1);
        assert_send(&sched.submit("k".into(), Vec::new()));
        let budget = crate::pipeline::budget::ByteBudget::new(1024);
        assert_send(&budget.acquire(1));
    }

    #[tokio::test]
    async fn shutdown_is_reported_not_hung() {
        let (sched, rx) = KeyedScheduler::<u8, u8>::new(4);
        drop(rx);
        assert_eq!(sched.submit(1, 1).await, Err(SchedulerClosed));
        assert_eq!(sched.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_job_released_after_shutdown_drops_its_keys_queue() {
        let (sched, mut rx) = KeyedScheduler::<u8, u8>::new(4);
        for job in [10, 11, 12] {
            sched.submit(1, job).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        assert_eq!(first.job(), Some(&10));
        drop(rx);
        // It would dispatch 11, but nothing receives: 11 and 12 are dropped with their lane.
        drop(first);
        assert_eq!(sched.in_flight(), 0);
        assert!(sched.shared.lanes.lock().is_empty());
    }
}
