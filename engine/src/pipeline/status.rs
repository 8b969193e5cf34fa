//! Replication status flowing back to the embedding server.

use std::sync::Arc;

use parking_lot::Mutex;
use s3repl_io::dest::{Operation, Refusal};

/// Declares [`FailureReason`] with its S3 names (the variant's name, written once).
macro_rules! failure_reasons {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Why an operation FAILED: S3's replication failure reasons (the `failureReason` of
        /// an `s3:Replication:OperationFailedReplication` event), which S3-aware tools and
        /// operators know, plus [`FailureReason::InternalError`] for the engine's own faults.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum FailureReason {
            $($(#[$doc])* $name,)*
        }

        impl FailureReason {
            /// Every reason.
            pub const ALL: &'static [FailureReason] = &[$(FailureReason::$name,)*];

            /// S3's name for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(FailureReason::$name => stringify!($name),)*
                }
            }
        }
    };
}

failure_reasons! {
    /// The replication role cannot be assumed.
    AssumeRoleNotPermitted,
    /// The destination bucket does not exist.
    DstBucketNotFound,
    /// The source has Object Lock settings; the destination bucket has no Object Lock.
    DstBucketObjectLockConfigMissing,
    /// The destination bucket is not versioned.
    DstBucketUnversioned,
    /// A delete marker could not be written.
    DstDelObjNotPermitted,
    /// The replica's KMS key cannot be used.
    DstKmsKeyInvalidState,
    /// The replica's KMS key does not exist.
    DstKmsKeyNotFound,
    /// A multipart upload could not be aborted.
    DstMultipartAbortNotPermitted,
    /// A multipart upload could not be completed.
    DstMultipartCompleteNotPermitted,
    /// A multipart upload could not be started.
    DstMultipartInitNotPermitted,
    /// A part could not be uploaded.
    DstMultipartUploadNotPermitted,
    /// The replica's ACL could not be set.
    DstPutAclNotPermitted,
    /// The replica's legal hold could not be set.
    DstPutLegalHoldNotPermitted,
    /// The replica could not be written.
    DstPutObjectNotPermitted,
    /// The replica's retention could not be set.
    DstPutRetentionNotPermitted,
    /// The replica's tags could not be set.
    DstPutTaggingNotPermitted,
    /// The replica version a metadata change addresses does not exist.
    DstVersionNotFound,
    /// The source bucket does not exist.
    SrcBucketNotFound,
    /// The source bucket has no replication configuration.
    SrcBucketReplicationConfigMissing,
    /// The source version's ACL could not be read.
    SrcGetAclNotPermitted,
    /// The source version could not be read.
    SrcGetObjectNotPermitted,
    /// The source version's tags could not be read.
    SrcGetTaggingNotPermitted,
    /// The source version could not be looked up.
    SrcHeadObjectNotPermitted,
    /// The source version's KMS key cannot be used.
    SrcKmsKeyInvalidState,
    /// The source version cannot be replicated as it is (its bytes do not match the committed
    /// version, say).
    SrcObjectNotEligible,
    /// The source version does not exist.
    SrcVersionNotFound,
    /// Not S3's: the destination did not answer through every attempt (connection refused or
    /// reset, timeouts, server errors) although it was not known to be down.
    DstUnavailable,
    /// Not S3's: the engine itself failed (a panic while replicating the version).
    InternalError,
}

impl FailureReason {
    /// S3's reason for a destination's refusal of `operation`.
    pub fn refused(operation: Operation, refusal: Refusal) -> FailureReason {
        match refusal {
            Refusal::BucketNotFound => FailureReason::DstBucketNotFound,
            Refusal::VersionNotFound => FailureReason::DstVersionNotFound,
            Refusal::NoObjectLock => FailureReason::DstBucketObjectLockConfigMissing,
            Refusal::SourceVersionNotFound => FailureReason::SrcVersionNotFound,
            Refusal::SourceBucketNotFound => FailureReason::SrcBucketNotFound,
            Refusal::SourceChanged => FailureReason::SrcObjectNotEligible,
            // `Refusal` may grow: what this version does not know reads as not permitted.
            Refusal::NotPermitted | _ => match operation {
                Operation::DeleteMarker => FailureReason::DstDelObjNotPermitted,
                Operation::MultipartInit => FailureReason::DstMultipartInitNotPermitted,
                Operation::MultipartUpload => FailureReason::DstMultipartUploadNotPermitted,
                Operation::MultipartComplete => FailureReason::DstMultipartCompleteNotPermitted,
                Operation::MultipartAbort => FailureReason::DstMultipartAbortNotPermitted,
                Operation::PutTagging => FailureReason::DstPutTaggingNotPermitted,
                Operation::PutAcl => FailureReason::DstPutAclNotPermitted,
                Operation::PutRetention => FailureReason::DstPutRetentionNotPermitted,
                Operation::PutLegalHold => FailureReason::DstPutLegalHoldNotPermitted,
                Operation::Put | Operation::Head | _ => FailureReason::DstPutObjectNotPermitted,
            },
        }
    }

    /// The reason S3 names `name`, if any.
    pub fn from_name(name: &str) -> Option<FailureReason> {
        FailureReason::ALL.iter().copied().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version's replication status toward one destination (`x-amz-replication-status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationStatus {
    /// Eligible and not yet replicated (transient failures stay here while retried).
    Pending,
    /// Replicated.
    Completed,
    /// Failed for good (until the failed-operations queue retries it).
    Failed {
        /// S3's reason.
        reason: FailureReason,
        /// What happened, for people (the error, the mismatch found).
        detail: String,
    },
}

impl ReplicationStatus {
    /// The header value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReplicationStatus::Pending => "PENDING",
            ReplicationStatus::Completed => "COMPLETED",
            ReplicationStatus::Failed { .. } => "FAILED",
        }
    }

    /// The source version's aggregate over its destinations, as S3 defines it: `FAILED` if any
    /// failed, `COMPLETED` only if all completed, else `PENDING`. `None` for no destination
    /// (an ineligible version carries no status).
    pub fn aggregate<'a>(
        per_destination: impl IntoIterator<Item = &'a ReplicationStatus>,
    ) -> Option<ReplicationStatus> {
        let mut any = false;
        let mut all_done = true;
        for s in per_destination {
            any = true;
            match s {
                ReplicationStatus::Failed { .. } => return Some(s.clone()),
                ReplicationStatus::Pending => all_done = false,
                ReplicationStatus::Completed => {}
            }
        }
        let done = if all_done { ReplicationStatus::Completed } else { ReplicationStatus::Pending };
        any.then_some(done)
    }
}

/// One status change, as the engine hands it to a [`StatusSink`]: borrowed from the version
/// being replicated, so reporting costs no allocation (two updates per version and
/// destination: PENDING, then the outcome). A sink that keeps it calls
/// [`StatusUpdate::to_owned_update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusUpdate<'a> {
    /// Source bucket.
    pub bucket: &'a str,
    /// Key.
    pub key: &'a str,
    /// Source version id.
    pub version_id: &'a str,
    /// Destination bucket ARN.
    pub destination: &'a str,
    /// The new status.
    pub status: &'a ReplicationStatus,
    /// The replica's version id at the destination, once completed (targets such as S3 mint
    /// their own; later delete markers and metadata updates address it).
    pub destination_version_id: Option<&'a str>,
}

impl StatusUpdate<'_> {
    /// A copy that owns its strings, to keep.
    pub fn to_owned_update(&self) -> OwnedStatusUpdate {
        OwnedStatusUpdate {
            bucket: self.bucket.to_owned(),
            key: self.key.to_owned(),
            version_id: self.version_id.to_owned(),
            destination: self.destination.to_owned(),
            status: self.status.clone(),
            destination_version_id: self.destination_version_id.map(str::to_owned),
        }
    }
}

/// A [`StatusUpdate`] that owns its strings (what [`MemoryStatus`] keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedStatusUpdate {
    /// Source bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Source version id.
    pub version_id: String,
    /// Destination bucket ARN.
    pub destination: String,
    /// The new status.
    pub status: ReplicationStatus,
    /// The replica's version id at the destination, once completed.
    pub destination_version_id: Option<String>,
}

impl OwnedStatusUpdate {
    /// The update, borrowed (to pass on to a [`StatusSink`]).
    pub fn as_update(&self) -> StatusUpdate<'_> {
        StatusUpdate {
            bucket: &self.bucket,
            key: &self.key,
            version_id: &self.version_id,
            destination: &self.destination,
            status: &self.status,
            destination_version_id: self.destination_version_id.as_deref(),
        }
    }
}

/// Where status updates go (the embedding server stores them with the version).
pub trait StatusSink: Send + Sync {
    /// Records one update. Must not block for long: it is called from the dispatcher and the
    /// copy workers. Should it panic, that one update is lost (and logged); the engine goes on.
    fn report(&self, update: &StatusUpdate<'_>);
}

/// Keeps every update in memory (tests, benchmarks).
#[derive(Debug, Clone, Default)]
pub struct MemoryStatus {
    updates: Arc<Mutex<Vec<OwnedStatusUpdate>>>,
}

impl MemoryStatus {
    /// An empty recorder.
    pub fn new() -> Self {
        MemoryStatus::default()
    }

    /// Every update so far, in order.
    pub fn updates(&self) -> Vec<OwnedStatusUpdate> {
        self.updates.lock().clone()
    }
}

impl StatusSink for MemoryStatus {
    fn report(&self, update: &StatusUpdate<'_>) {
        self.updates.lock().push(update.to_owned_update());
    }
}

/// A version's outcome: its final status at each destination that replicates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// (destination ARN, `COMPLETED` or `FAILED`), in the order they were reported.
    pub destinations: Vec<(String, ReplicationStatus)>,
}

impl Outcome {
    /// Whether every destination has the version.
    pub fn completed(&self) -> bool {
        self.destinations.iter().all(|(_, s)| *s == ReplicationStatus::Completed)
    }

    /// The aggregate status, as S3 reports it on the source version (`FAILED` if any failed).
    pub fn status(&self) -> Option<ReplicationStatus> {
        ReplicationStatus::aggregate(self.destinations.iter().map(|(_, s)| s))
    }
}

/// (bucket, key, version id).
type VersionKey = (String, String, String);

#[derive(Debug, Default)]
struct Outcomes {
    /// Per version: each destination's latest status.
    versions: std::collections::HashMap<VersionKey, Vec<(String, ReplicationStatus)>>,
    /// Versions in the order they were first reported, for the capacity bound.
    order: std::collections::VecDeque<VersionKey>,
}

/// A [`StatusSink`] that remembers each version's outcome and wakes the tasks waiting for it,
/// passing every update on to another sink (the embedding server's own store of statuses), if
/// given. Share it with [`EngineBuilder::status`](super::EngineBuilder::status) and call
/// [`StatusWaiter::wait`] from any task.
///
/// It keeps the outcomes of the last `capacity` versions reported (oldest forgotten first): a
/// waiter must ask within that many versions of its own, or the version reads as unknown.
/// A FAILED outcome can later turn COMPLETED, when the failed-operations queue retries it; a
/// waiter sees the first outcome.
///
/// Every update wakes every waiting task, which then looks its own version up: meant for
/// tens of concurrent waiters, not one per version in flight at high rates (a per-version
/// wake-up would be the next step).
pub struct StatusWaiter {
    next: Option<Arc<dyn StatusSink>>,
    capacity: usize,
    state: Mutex<Outcomes>,
    changed: tokio::sync::Notify,
}

impl std::fmt::Debug for StatusWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWaiter").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl StatusWaiter {
    /// Remembers the outcomes of the last `capacity` versions, passing updates on to `next`.
    pub fn new(capacity: usize, next: Option<Arc<dyn StatusSink>>) -> Self {
        StatusWaiter {
            next,
            capacity: capacity.max(1),
            state: Mutex::new(Outcomes::default()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The version's outcome if every destination that reported it `PENDING` has since
    /// reported `COMPLETED` or `FAILED`; `None` while one is pending, or before the engine
    /// reported anything of it.
    pub fn outcome(&self, bucket: &str, key: &str, version_id: &str) -> Option<Outcome> {
        let state = self.state.lock();
        let statuses =
            state.versions.get(&(bucket.to_owned(), key.to_owned(), version_id.to_owned()))?;
        let settled =
            !statuses.is_empty() && statuses.iter().all(|(_, s)| *s != ReplicationStatus::Pending);
        settled.then(|| Outcome { destinations: statuses.clone() })
    }

    /// Waits until the version has an outcome ([`StatusWaiter::outcome`]), at most `timeout`.
    /// A version no rule replicates never gets one (the engine reports nothing of it).
    pub async fn wait(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        timeout: std::time::Duration,
    ) -> Option<Outcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so an update between the look and the wait wakes it.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some(o) = self.outcome(bucket, key, version_id) {
                return Some(o);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.outcome(bucket, key, version_id);
            }
        }
    }
}

impl StatusSink for StatusWaiter {
    fn report(&self, update: &StatusUpdate<'_>) {
        {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let key =
                (update.bucket.to_owned(), update.key.to_owned(), update.version_id.to_owned());
            let statuses = match state.versions.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    state.order.push_back(e.key().clone());
                    e.insert(Vec::new())
                }
            };
            match statuses.iter_mut().find(|(d, _)| *d == update.destination) {
                Some((_, s)) => s.clone_from(update.status),
                None => statuses.push((update.destination.to_owned(), update.status.clone())),
            }
            while state.order.len() > self.capacity {
                if let Some(old) = state.order.pop_front() {
                    state.versions.remove(&old);
                }
            }
        }
        self.changed.notify_waiters();
        if let Some(next) = &self.next {
            next.report(update);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{FailureReason, ReplicationStatus as S};

    #[test]
    fn aggregate_follows_s3() {
        let failed = S::Failed { reason: FailureReason::DstBucketNotFound, detail: "gone".into() };
        assert_eq!(S::aggregate(&[]), None);
        assert_eq!(S::aggregate(&[S::Completed, S::Completed]), Some(S::Completed));
        assert_eq!(S::aggregate(&[S::Completed, S::Pending]), Some(S::Pending));
        assert_eq!(S::aggregate(&[S::Pending, failed.clone()]), Some(failed));
    }

    #[test]
    fn reasons_round_trip_by_name() {
        for &r in FailureReason::ALL {
            assert_eq!(FailureReason::from_name(r.as_str()), Some(r));
        }
        assert_eq!(
            FailureReason::from_name("DstPutObjectNotPermitted").map(|r| r.to_string()).as_deref(),
            Some("DstPutObjectNotPermitted")
        );
        assert_eq!(FailureReason::from_name("NoSuchReason"), None);
    }

    /// Each operation a destination refuses has its own `NotPermitted` reason, as S3 names
    /// them; the other refusals name what is missing whatever the operation.
    #[test]
    fn refusals_map_to_s3_reasons() {
        use s3repl_io::dest::{Operation as O, Refusal as R};
        let ops = [
            O::Put,
            O::DeleteMarker,
            O::MultipartInit,
            O::MultipartUpload,
            O::MultipartComplete,
            O::MultipartAbort,
            O::PutTagging,
            O::PutAcl,
            O::PutRetention,
            O::PutLegalHold,
        ];
        let names: std::collections::HashSet<&str> =
            ops.iter().map(|&o| FailureReason::refused(o, R::NotPermitted).as_str()).collect();
        assert_eq!(names.len(), ops.len(), "one NotPermitted reason per operation: {names:?}");
        assert!(names.iter().all(|n| n.starts_with("Dst") && n.ends_with("NotPermitted")));
        assert_eq!(
            FailureReason::refused(O::Head, R::NotPermitted).as_str(),
            "DstPutObjectNotPermitted"
        );
        for o in ops {
            assert_eq!(
                FailureReason::refused(o, R::NoObjectLock),
                FailureReason::DstBucketObjectLockConfigMissing
            );
            assert_eq!(
                FailureReason::refused(o, R::BucketNotFound),
                FailureReason::DstBucketNotFound
            );
            assert_eq!(
                FailureReason::refused(o, R::VersionNotFound),
                FailureReason::DstVersionNotFound
            );
        }
        assert_eq!(
            FailureReason::refused(O::Put, R::SourceChanged),
            FailureReason::SrcObjectNotEligible
        );
        assert_eq!(
            FailureReason::refused(O::Put, R::SourceVersionNotFound),
            FailureReason::SrcVersionNotFound
        );
        assert_eq!(
            FailureReason::refused(O::Put, R::SourceBucketNotFound),
            FailureReason::SrcBucketNotFound
        );
    }
}
