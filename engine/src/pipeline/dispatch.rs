//! Stage 2, dispatch: decodes, matches each record against its bucket's rules, plans the
//! per-destination tasks, saves the replay horizon ahead of admission, and admits the work to
//! the per-key scheduler.

use std::sync::Arc;
use std::time::Duration;

use s3repl_io::log::{Checkpoint, FileStorage};
use tokio::sync::mpsc;

use crate::Error;
use crate::pipeline::context::{Shared, Stop, task_failed};
use crate::pipeline::scheduler::{KeyedScheduler, Reserved};
use crate::pipeline::status::ReplicationStatus;
use crate::pipeline::task::{Item, Job, KeyHash, Task, Tasks, key_hash, task_bytes};
use crate::rules::{Action, Plan, VersionEvent};

pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Vec<Item>>,
    scheduler: KeyedScheduler<KeyHash, Job>,
    stop: Arc<Stop>,
) {
    let mut plan = Plan::default();
    while let Some(batch) = rx.recv().await {
        hold_while_unrecorded(&shared, &stop).await;
        // Admission slots are taken for several records at once (the rest of the batch, up to
        // an eighth of the scheduler's capacity), when a record first needs one: while the
        // pipeline is full, the workers' releases then wake this task once per many slots,
        // not once per record. Records no rule selects need none.
        let mut reserved = Reserved::default();
        let mut left = batch.len();
        for item in batch {
            let slots = (&mut reserved, left);
            left -= 1;
            if !admit(&shared, &scheduler, &mut plan, item, &stop, slots).await {
                return;
            }
        }
    }
}

/// Replica versions the version map may hold in memory, not yet committed, before nothing more
/// is admitted (about 150 bytes each). Checkpoints commit them every `checkpoint_every`; only
/// checkpoints that keep failing (a full disk) let them pile up.
pub(crate) const MAX_UNCOMMITTED_MAPPINGS: usize = 1 << 19;

/// While checkpoints fail, what the copies record waits in memory: past
/// [`MAX_UNCOMMITTED_MAPPINGS`] nothing more is admitted (the readers wait behind the channel)
/// until a checkpoint commits them, or the engine stops. (Only then: a record that holds the
/// low watermark for long, a large copy, must not stop the rest; the checkpoint task commits
/// the map on its own meanwhile.)
async fn hold_while_unrecorded(shared: &Shared, stop: &Stop) {
    let mut held = false;
    while shared.versions.pending() >= MAX_UNCOMMITTED_MAPPINGS
        && shared.checkpoint_trouble.get().is_some()
        && !stop.is_set()
    {
        if !held {
            held = true;
            tracing::warn!(
                waiting = shared.versions.pending(),
                "The version map cannot commit; no more records are admitted until it can."
            );
        }
        stop.sleep(Duration::from_millis(100)).await;
    }
    if held {
        tracing::info!("The version map commits again; records are admitted again.");
    }
}

/// Matches one record and hands its tasks to the scheduler; false when the pipeline stops.
pub(crate) async fn admit(
    shared: &Arc<Shared>,
    scheduler: &KeyedScheduler<KeyHash, Job>,
    plan: &mut Plan,
    item: Item,
    stop: &Stop,
    (reserved, want): (&mut Reserved, usize),
) -> bool {
    shared.metrics.read(1);
    let all = shared.rules.load();
    let tasks: Tasks = match all.get(&item.record.bucket) {
        None => Tasks::new(),
        Some(bucket) => {
            let rules = &bucket.rules;
            // A record committed before the bucket had a configuration is an existing object.
            let existing = bucket.predates(item.record.commit_time_ms);
            item.record.with_event(|ev| {
                rules.match_into(&VersionEvent { existing: ev.existing || existing, ..*ev }, plan);
            });
            plan.replications()
                .iter()
                .filter_map(|r| {
                    let rule = rules.rule(r.rule)?;
                    Some(Task {
                        destination: rules.shared_destination(r.destination)?.clone(),
                        action: r.action,
                        storage_class: r.storage_class,
                        replica_kms_key: rule.replica_kms_key_id.clone(),
                        multi_region_key: rule.use_source_multi_region_key,
                        owner_override: rule.owner_override,
                    })
                })
                .collect()
        }
    };
    if tasks.is_empty() {
        shared.finish(item.partition, item.seq);
        return true;
    }
    shared.metrics.matched();
    for t in &tasks {
        shared.metrics.pending(&t.destination, task_bytes(&item.record, t));
        // A metadata change says nothing of the version's status until it is known to have a
        // replica to change (see `run_task`).
        if t.action != Action::SyncMetadata {
            shared.report(&item.record, &t.destination, &ReplicationStatus::Pending, None);
        }
    }
    // Nothing is admitted that a restart could not recognise: the horizon is saved first. A
    // failed save (a full disk) is tried again until it succeeds — the file is written whole
    // each time — and nothing more is admitted meanwhile.
    let mut failed = false;
    while let Err(e) = advance_horizon(shared, item.partition, item.seq).await {
        if stop.is_set() {
            tracing::error!(error = %e, "Saving the replay horizon failed while stopping; the rest is not admitted.");
            return false;
        }
        failed = true;
        shared.horizon_trouble.failed("the replay horizon", &e);
        stop.sleep(shared.limits.checkpoint_every.max(Duration::from_millis(100))).await;
    }
    if failed {
        shared
            .horizon_trouble
            .resolved("The replay horizon is saved again; records are admitted again.");
    }
    let key = key_hash(shared, &item.record);
    scheduler
        .submit_reserved(
            key,
            Job { item, tasks, retry: None, parked: false, check_first: false, _lease: None },
            reserved,
            want,
        )
        .await
        .is_ok()
}

/// Records admitted past the saved horizon move it this far ahead (one fsync per this many
/// records; after a crash, at most this many records per partition are checked at the
/// destination before being copied).
pub(crate) const HORIZON_STEP: u64 = 4096;

pub(crate) fn load_horizon(path: &std::path::Path, partitions: u32) -> Result<Vec<u64>, Error> {
    let cp = match std::fs::read(path) {
        Ok(bytes) => Checkpoint::decode(&bytes).map_err(|reason| {
            Error::Log(s3repl_io::Error::Checkpoint { path: path.to_owned(), reason })
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
        Err(e) => {
            return Err(Error::Log(s3repl_io::Error::Io {
                op: "read",
                path: path.to_owned(),
                source: e,
            }));
        }
    };
    Ok((0..partitions).map(|p| cp.next.get(&p).copied().unwrap_or(0)).collect())
}

/// Makes sure `seq` is below the saved horizon of its partition before it is admitted.
pub(crate) async fn advance_horizon(
    shared: &Shared,
    partition: u32,
    seq: u64,
) -> Result<(), Error> {
    let mut horizon = shared.horizon.lock().await;
    let Some(&h) = horizon.get(partition as usize) else { return Ok(()) };
    if seq < h {
        return Ok(());
    }
    // Raised in memory only once saved: a failed save is tried again in full.
    let next = seq + HORIZON_STEP;
    let cp = Checkpoint {
        next: (0u32..)
            .zip(horizon.iter().copied())
            .map(|(p, at)| (p, if p == partition { next } else { at }))
            .collect(),
    };
    let path = shared.horizon_path.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| s3repl_io::Error::Io {
                op: "mkdir",
                path: d.to_owned(),
                source: e,
            })?;
        }
        s3repl_io::log::write_atomic(&FileStorage, &path, &cp.encode())
    })
    .await
    .map_err(|e| task_failed("horizon task", shared.horizon_path.clone(), &e))??;
    if let Some(h) = horizon.get_mut(partition as usize) {
        *h = next;
    }
    Ok(())
}
