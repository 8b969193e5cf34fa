//! One version's work item on its way through the pipeline ([`Item`], its per-destination
//! [`Task`]s, the [`Job`] the scheduler holds) and how its failures are judged ([`Failure`],
//! [`backoff`]).

use std::hash::BuildHasher;
use std::time::Duration;

use s3repl_io::dest::DestinationError;

use crate::pipeline::context::Shared;
use crate::pipeline::source::SourceError;
use crate::pipeline::status::{FailureReason, ReplicationStatus};
use crate::record::VersionRecord;
use crate::rules::Action;

/// One record on its way through the pipeline.
#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) partition: u32,
    pub(crate) seq: u64,
    pub(crate) record: VersionRecord,
}

/// One destination's share of a version's work: what the winning rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Task {
    /// The destination's ARN (shared with the compiled rules: no allocation per version).
    pub(crate) destination: std::sync::Arc<str>,
    pub(crate) action: Action,
    pub(crate) storage_class: Option<crate::config::StorageClass>,
    /// The winning rule's `ReplicaKmsKeyID` (SSE-KMS sources are re-encrypted under it).
    pub(crate) replica_kms_key: Option<String>,
    /// The rule's `UseSourceMultiRegionKey` is Enabled: SSE-KMS sources are re-encrypted under
    /// their key's related multi-Region key in the destination's Region instead.
    pub(crate) multi_region_key: bool,
    /// The rule's `AccessControlTranslation`: the destination account owns the replicas, so
    /// they get no source ACL and ACL changes are not replicated.
    pub(crate) owner_override: bool,
}

/// A version's per-destination tasks: one destination's kept in place (no allocation per
/// version for the common configuration).
pub(crate) type Tasks = smallvec::SmallVec<[Task; 1]>;

/// A version with its per-destination tasks, scheduled under its key.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) item: Item,
    pub(crate) tasks: Tasks,
    /// A background retry of this failed-operations queue entry (one task; its log position
    /// was finished long ago).
    pub(crate) retry: Option<u64>,
    /// A retry of a parked operation (its status never left PENDING).
    pub(crate) parked: bool,
    /// A retry that must ask the destination whether an earlier attempt applied it.
    pub(crate) check_first: bool,
    /// A retry's hold on its partition (the input keeps the partition here until it ends).
    pub(crate) _lease: Option<crate::pipeline::input::Lease>,
}

/// What the scheduler orders by: a hash of (bucket, key). Two keys with the same hash share a
/// lane, which only serializes them (per-key order still holds); with at most
/// `Limits::max_in_flight` keys admitted that is about never. Hashing spares two `String`
/// clones and a `SipHash` of them per version (issue 30).
pub(crate) type KeyHash = u64;

/// The scheduler key of `record`'s key.
pub(crate) fn key_hash(shared: &Shared, record: &VersionRecord) -> KeyHash {
    shared.key_hasher.hash_one((record.bucket.as_str(), record.key.as_str()))
}

/// The object bytes an operation moves (for the pending/replicated byte metrics).
pub(crate) fn task_bytes(r: &VersionRecord, task: &Task) -> u64 {
    if task.action == Action::CopyObject { r.size } else { 0 }
}

/// Exponential backoff with full jitter: uniform in `[0, backoff · 2^(attempt-1)]`.
pub(crate) fn backoff(shared: &Shared, r: &VersionRecord, attempt: u32) -> Duration {
    let cap = shared.limits.backoff.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let roll = shared.hasher.hash_one((&r.version_id, attempt, std::time::Instant::now()));
    let fraction = f64::from(u32::try_from(roll % 1_000_000).unwrap_or(0)) / 1_000_000.0;
    cap.mul_f64(fraction)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error("source bytes do not match the committed version ({0})")]
    Integrity(&'static str),
    #[error("{0}: {1}")]
    Kms(FailureReason, &'static str),
    /// A helper task died (panic or cancellation): not the data's fault, retried.
    #[error("{0}")]
    Task(&'static str),
}

impl Failure {
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Failure::Source(SourceError::Transient(_)) | Failure::Task(_) => true,
            Failure::Destination(d) => d.is_retryable(),
            Failure::Source(_) | Failure::Integrity(_) | Failure::Kms(..) => false,
        }
    }

    /// S3's reason for this failure.
    pub(crate) fn reason(&self) -> FailureReason {
        match self {
            Failure::Source(SourceError::VersionNotFound { .. }) => {
                FailureReason::SrcVersionNotFound
            }
            Failure::Source(_) => FailureReason::SrcGetObjectNotPermitted,
            Failure::Destination(DestinationError::Permanent { operation, refusal, .. }) => {
                FailureReason::refused(*operation, *refusal)
            }
            Failure::Kms(reason, _) => *reason,
            // A destination that kept failing in ways worth retrying (out of reach, busy) is
            // not refusing: S3 has no reason of its own for that; the detail says what it was.
            Failure::Destination(_) => FailureReason::DstUnavailable,
            Failure::Integrity(_) => FailureReason::SrcObjectNotEligible,
            Failure::Task(_) => FailureReason::InternalError,
        }
    }

    /// The FAILED status this failure gives its version.
    pub(crate) fn status(&self) -> ReplicationStatus {
        ReplicationStatus::Failed { reason: self.reason(), detail: self.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each failure gives its version S3's reason, and says what happened in the detail.
    #[test]
    fn failures_carry_their_reason_and_detail() {
        let kms = Failure::Kms(FailureReason::DstKmsKeyNotFound, "the rule has no ReplicaKmsKeyID");
        let ReplicationStatus::Failed { reason, detail } = kms.status() else { panic!() };
        assert_eq!(reason, FailureReason::DstKmsKeyNotFound);
        assert!(detail.contains("ReplicaKmsKeyID"), "{detail}");
        let refused = Failure::Destination(DestinationError::Permanent {
            destination: "arn:aws:s3:::d".into(),
            operation: s3repl_io::dest::Operation::PutAcl,
            refusal: s3repl_io::dest::Refusal::NotPermitted,
            source: object_store::Error::Generic { store: "test", source: "refused".into() },
        });
        assert_eq!(refused.reason(), FailureReason::DstPutAclNotPermitted);
        assert!(!refused.retryable());
        let changed = Failure::Integrity("BLAKE3");
        let ReplicationStatus::Failed { reason, detail } = changed.status() else { panic!() };
        assert_eq!(reason, FailureReason::SrcObjectNotEligible);
        assert!(detail.contains("BLAKE3"), "{detail}");
        assert_eq!(Failure::Task("panicked").reason(), FailureReason::InternalError);
    }
}
