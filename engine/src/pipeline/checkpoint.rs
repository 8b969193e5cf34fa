//! Stage 4, checkpointing: the low watermark of finished records, made durable (version map,
//! destinations, log) before each checkpoint save; on shutdown, the final save and the replay
//! horizon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use s3repl_io::log::{Checkpoint, FileStorage};
use tokio::sync::watch;

use crate::Error;
use crate::pipeline::context::{Halt, Shared, Stop, task_failed};
use crate::pipeline::input::LogInput;
use crate::pipeline::watermark::Watermark;

pub(crate) async fn checkpoints(
    shared: Arc<Shared>,
    input: Arc<dyn LogInput>,
    progress: watch::Sender<Vec<u64>>,
    stop: Arc<Stop>,
    tasks: tokio_util::task::TaskTracker,
) -> Result<(), Error> {
    let mut saved: Vec<u64> = progress.borrow().clone();
    // The oldest queued failed operation of each partition, as last committed.
    let mut saved_failed: Vec<Option<u64>> = Vec::new();
    let mut failures = 0u32;
    loop {
        let stopping = stop.is_set();
        // On shutdown, wait for the workers to drain before the final save.
        if stopping {
            tasks.wait().await;
        }
        let lows: Vec<u64> = shared.watermarks.lock().iter().map(Watermark::low).collect();
        // Read after the watermarks: a failed operation is queued before its position
        // finishes, so every one below `lows` is here.
        let failed = shared.failed.oldest(u32::try_from(lows.len()).unwrap_or(u32::MAX));
        if lows != saved || failed != saved_failed {
            // The replica versions of every record below `lows` were recorded before those
            // records finished: commit them before the input's positions pass the records.
            // Likewise the replicas themselves, where the destination does not make writes
            // durable on its own (local file systems: one syncfs for everything written since
            // the last). The input makes its own records durable as it commits (a segment log
            // may have handed out records its writer had not yet synced).
            let versions = shared.versions.clone();
            let destinations = shared.destinations.load_full();
            let (input, commit, held) = (input.clone(), lows.clone(), failed.clone());
            let saved_now = tokio::task::spawn_blocking(move || {
                // The version map opens itself again after a failed commit and writes what is
                // pending anew: trying again is sound, and succeeds once the disk has room.
                versions.flush().map_err(|e| (true, e))?;
                destinations.sync().map_err(|e| (false, Error::from(e)))?;
                input.commit_holding(&commit, &held).map_err(|e| (false, e))
            })
            .await
            .map_err(|e| (false, task_failed("checkpoint task", PathBuf::new(), &e)))
            .and_then(|r| r);
            match saved_now {
                Ok(()) => {
                    failures = 0;
                    shared.checkpoint_trouble.resolved("Checkpoints are saved again.");
                }
                // A version map that could not commit (a full disk), a checkpoint file that
                // could not be written, a shortage of descriptors or memory: nothing was lost,
                // the next round tries again (on shutdown, for a few seconds).
                Err((retry, e)) if (retry || e.is_transient()) && !(stopping && failures >= 50) => {
                    failures = failures.saturating_add(1);
                    shared.checkpoint_trouble.failed("the checkpoint", &e);
                    if stopping {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        stop.sleep(shared.limits.checkpoint_every).await;
                    }
                    continue;
                }
                // A failed sync of a destination or the log: after a failed fsync the data it
                // covered may be gone while the next fsync succeeds, so only a restart (which
                // checks every replica past the saved checkpoint) is sound.
                Err((_, e)) => {
                    tracing::error!(error = %e, "Saving the checkpoint failed; checkpointing stops (replication continues; a restart replays from the last saved checkpoint).");
                    shared.checkpoint_trouble.clear();
                    shared.halts.lock().push(Halt::Checkpoint { error: e.to_string() });
                    return Err(e);
                }
            }
            saved.clone_from(&lows);
            saved_failed = failed;
            progress.send_replace(lows);
        } else if !stopping && shared.versions.pending() >= COMMIT_MAP_ALONE {
            // The low watermark has not moved (a record holds it: a large copy, say) while
            // later copies finished: their mappings are committed without a checkpoint, so
            // they do not pile up in memory for as long as it holds.
            let versions = shared.versions.clone();
            let flushed = tokio::task::spawn_blocking(move || versions.flush())
                .await
                .map_err(|e| task_failed("version map task", PathBuf::new(), &e))
                .and_then(|r| r);
            match flushed {
                Ok(_) => shared.checkpoint_trouble.resolved("The version map commits again."),
                Err(e) => shared.checkpoint_trouble.failed("the version map", &e),
            }
        }
        if stopping {
            // Drained: nothing at or above the checkpoint was admitted by this run, so a
            // restart need not check what this run did. But records below the horizon found
            // at start (a crashed predecessor may have applied them) that the checkpoint has
            // not passed yet keep their check: a clean stop soon after a crash (during the
            // replay settle, say) must not forget it (the crash harness found such records
            // replicated twice).
            let horizon = saved
                .iter()
                .zip(shared.replay_horizon.iter().chain(std::iter::repeat(&0)))
                .map(|(&cp, &h)| cp.max(h));
            let cp = Checkpoint { next: (0u32..).zip(horizon).collect() };
            let path = shared.horizon_path.clone();
            let horizon = tokio::task::spawn_blocking(move || {
                if let Some(d) = path.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                s3repl_io::log::write_atomic(&FileStorage, &path, &cp.encode())
            })
            .await;
            if !matches!(horizon, Ok(Ok(()))) {
                tracing::warn!(
                    "Resetting the replay horizon failed; the next start checks more replicas than needed."
                );
            }
            return Ok(());
        }
        tokio::select! {
            () = stop.sleep(shared.limits.checkpoint_every) => {}
            () = shared.checkpoint_soon.notified() => {}
        }
    }
}

/// Uncommitted version-map entries past which the map is committed without a checkpoint
/// (while the low watermark does not move).
const COMMIT_MAP_ALONE: usize = 1 << 16;
