//! After a crash: was this record already applied at the destination? (The version map, else
//! one HEAD of the key's current or hidden replica and its `s3repl-source-seq` stamp.)

use std::path::PathBuf;

use crate::Error;
use crate::pipeline::context::{Shared, task_failed};
use crate::pipeline::task::{Failure, Item, Task};
use crate::pipeline::versions::Replica;
use crate::record::{VersionRecord, stamps};
use crate::rules::Action;

/// Whether a record that may have been applied already is at the destination, and if so its
/// replica version (`Some(None)` where unknown). Asked for records below the replay horizon
/// (applied, perhaps, before a crash), for background retries from the failed-operations
/// queue, and for attempts after one that failed at the destination (`again`): a write the
/// server applied but answered with an error, or whose answer was lost, is not written twice.
///
/// A copy or delete marker recorded in the version map is known without asking. Otherwise one
/// HEAD of the key's current replica decides, using the log position stamped on replicas (a
/// key's operations reach a destination in log order, and the key's later operations wait
/// while this one is retried):
/// - a copy was made if the current replica came from this record or a later one of the
///   partition (when a delete marker is current, the newest version below it is asked);
/// - a delete marker was placed if the key has no current object, or its current replica came
///   from a later record. When the key has no current object the marker is not placed again
///   even if it never was (the key was absent or already deleted there): what readers see is
///   the same, and a duplicate marker is avoided.
///
/// Stores that keep no metadata cannot tell; there the operation is repeated (they do not
/// version, so repeating it is harmless). A first attempt above the horizon asks nothing.
pub(crate) async fn replayed(
    shared: &Shared,
    item: &Item,
    task: &Task,
    dest: &s3repl_io::dest::Destination,
    again: bool,
) -> Result<Option<Option<String>>, Failure> {
    let below = shared.may_be_applied(item.partition, item.seq);
    if !below && !again {
        return Ok(None);
    }
    let replica = replica_of(item.partition, &item.record, task);
    match lookup_replica(shared, replica.clone()).await {
        Ok(Some(version)) => {
            tracing::debug!(key = %item.record.key, destination = %task.destination, seq = item.seq, "Record already applied (in the version map); not applied again.");
            return Ok(Some(Some(version)));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "Version map lookup failed; asking the destination."),
    }
    let marker = task.action == Action::ReplicateDeleteMarker;
    // A destination that refuses to be read (a replication role allowed to write replicas,
    // not to read them) cannot tell: the operation is applied again, as before this check
    // existed, rather than FAILED. Transient failures are retried.
    let unreadable = |e: s3repl_io::dest::DestinationError| {
        if e.is_retryable() {
            return Err(Failure::Destination(e));
        }
        tracing::warn!(key = %item.record.key, destination = %task.destination, error = %e, "The destination cannot be read to check whether this operation was already applied; applying it (again).");
        Ok(None)
    };
    let current = match dest.current_replica(&item.record.key, stamps::SOURCE_SEQ).await {
        Ok(current) => current,
        Err(e) => return unreadable(e),
    };
    let current = match current {
        Some(current) => current,
        None if marker => {
            tracing::debug!(key = %item.record.key, destination = %task.destination, seq = item.seq, "Delete marker: the key is already deleted there; not applied again.");
            return Ok(Some(None));
        }
        // Deleted there: the copy may be hidden under a later delete marker (only a crashed
        // run can have placed one; otherwise the key's later operations are still waiting).
        None if !below => return Ok(None),
        None => match dest.hidden_replica(&item.record.key, stamps::SOURCE_SEQ).await {
            Ok(Some(hidden)) => hidden,
            Ok(None) => return Ok(None),
            Err(e) => return unreadable(e),
        },
    };
    let stamped = current
        .value
        .as_deref()
        .and_then(|s| s.split_once(':'))
        .and_then(|(p, q)| Some((p.parse::<u32>().ok()?, q.parse::<u64>().ok()?)))
        .filter(|&(p, _)| p == item.partition);
    let done = stamped.is_some_and(|(_, q)| if marker { q > item.seq } else { q >= item.seq });
    if !done {
        return Ok(None);
    }
    tracing::debug!(key = %item.record.key, destination = %task.destination, seq = item.seq, "Record already applied at the destination; not applied again.");
    // The current replica is this record's own copy: its version is the one to remember.
    let version = current.version.filter(|_| stamped == Some((item.partition, item.seq)));
    if let Some(v) = &version {
        shared.versions.record(replica, v.clone());
    }
    Ok(Some(version))
}

/// The version-map key of `r`'s replica at `task`'s destination.
pub(crate) fn replica_of(partition: u32, r: &VersionRecord, task: &Task) -> Replica {
    Replica {
        partition,
        destination: task.destination.clone(),
        bucket: r.bucket.clone(),
        key: r.key.clone(),
        source_version: r.version_id.clone(),
    }
}

/// Looks `replica` up in the version map off the async threads.
pub(crate) async fn lookup_replica(
    shared: &Shared,
    replica: Replica,
) -> Result<Option<String>, Error> {
    let versions = shared.versions.clone();
    tokio::task::spawn_blocking(move || versions.lookup(&replica))
        .await
        .map_err(|e| task_failed("version map lookup", PathBuf::new(), &e))?
}
