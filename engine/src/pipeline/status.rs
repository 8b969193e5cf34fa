//! Replication status flowing back to the embedding server.

use std::sync::{Arc, Mutex};

/// A version's replication status toward one destination (`x-amz-replication-status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationStatus {
    /// Eligible and not yet replicated (transient failures stay here while retried).
    Pending,
    /// Replicated.
    Completed,
    /// Permanently failed, with S3's failure reason name (`DstBucketNotFound`, ...).
    Failed(String),
}

impl ReplicationStatus {
    /// The header value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReplicationStatus::Pending => "PENDING",
            ReplicationStatus::Completed => "COMPLETED",
            ReplicationStatus::Failed(_) => "FAILED",
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
                ReplicationStatus::Failed(r) => return Some(ReplicationStatus::Failed(r.clone())),
                ReplicationStatus::Pending => all_done = false,
                ReplicationStatus::Completed => {}
            }
        }
        let done = if all_done { ReplicationStatus::Completed } else { ReplicationStatus::Pending };
        any.then_some(done)
    }
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
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
    /// The replica's version id at the destination, once completed (targets such as S3 mint
    /// their own; later delete markers and metadata updates address it).
    pub destination_version_id: Option<String>,
}

/// Where status updates go (the embedding server stores them with the version).
pub trait StatusSink: Send + Sync {
    /// Records one update. Must not block for long: it is called from the dispatcher and the
    /// copy workers. Should it panic, that one update is lost (and logged); the engine goes on.
    fn report(&self, update: StatusUpdate);
}

/// Keeps every update in memory (tests, benchmarks).
#[derive(Debug, Clone, Default)]
pub struct MemoryStatus {
    updates: Arc<Mutex<Vec<StatusUpdate>>>,
}

impl MemoryStatus {
    /// An empty recorder.
    pub fn new() -> Self {
        MemoryStatus::default()
    }

    /// Every update so far, in order.
    pub fn updates(&self) -> Vec<StatusUpdate> {
        self.updates.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl StatusSink for MemoryStatus {
    fn report(&self, update: StatusUpdate) {
        self.updates.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(update);
    }
}

#[cfg(test)]
mod tests {
    use super::ReplicationStatus as S;

    #[test]
    fn aggregate_follows_s3() {
        assert_eq!(S::aggregate(&[]), None);
        assert_eq!(S::aggregate(&[S::Completed, S::Completed]), Some(S::Completed));
        assert_eq!(S::aggregate(&[S::Completed, S::Pending]), Some(S::Pending));
        assert_eq!(
            S::aggregate(&[S::Pending, S::Failed("DstBucketNotFound".into())]),
            Some(S::Failed("DstBucketNotFound".into()))
        );
    }
}
