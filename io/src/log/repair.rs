//! Operator-requested repair of damage that recovery does not truncate on its own.
//!
//! Recovery truncates a torn tail: damage in a partition's last segment with no valid record
//! after it. Damage *followed* by valid records makes the writer refuse to open, because those
//! records may have been acknowledged; so does a partition that lacks records below its
//! durable mark (`Error::Lost`: records the log made durable are gone). A crash can still leave exactly that (a file system that
//! wrote back a later block of the unsynced tail but not an earlier one), and then only an
//! operator can decide to give the records up. [`find_damage`] says what truncating would cost
//! (bytes, and the valid records after the damage with their sequence numbers);
//! [`truncate_damage`] does it. Damage in an earlier segment is not repaired here: cutting it off
//! would drop whole later segments.

use std::path::Path;

use super::checkpoint::{Checkpoint, consumers, load_checkpoint, save_checkpoint};
use super::format::segment_name;
use super::inspect::scan_partition;
use super::segment::{partition_path, valid_frame_after};
use super::storage::{FileStorage, Storage, StorageFile};
use super::writer::{lock_writer, read_partitions};
use crate::error::{Error, io_err};

/// Damage in a partition's last segment that the writer will not truncate by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The partition.
    pub partition: u32,
    /// The segment file's name.
    pub segment: String,
    /// Where the valid records end: truncating the segment here repairs it.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
    /// Bytes from `offset` to the end of the segment (what truncating removes).
    pub bytes: u64,
    /// The sequence number the damaged record had (the writer's next one after repair).
    pub next_seq: u64,
    /// Valid records after the damage, lost by truncating.
    pub records_after: u64,
    /// The lowest and highest sequence numbers among them.
    pub seqs_after: Option<(u64, u64)>,
    /// Consumers whose checkpoint for this partition is past `next_seq`, with that checkpoint:
    /// truncating lowers them to `next_seq`, or they would skip the new records that take the
    /// dropped records' sequence numbers.
    pub checkpoints_past: Vec<(String, u64)>,
    /// Records below the partition's durable mark that are gone or that truncating drops:
    /// records the log had made durable (and readers may have acted on). Truncating lowers the
    /// mark to `next_seq`.
    pub lost: u64,
}

/// Every partition's damage that needs an operator, without changing anything. Damage before
/// a partition's last segment is returned as [`Error::Corrupt`]: it cannot be repaired here.
pub fn find_damage<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<Damage>, Error> {
    let partitions = read_partitions(storage, dir)?.ok_or_else(|| Error::Layout {
        path: dir.to_owned(),
        reason: "not a log directory (no log.meta)".into(),
    })?;
    // Every consumer's checkpoint, read once, when the first damage is found.
    let mut checkpoints: Option<Vec<(String, Checkpoint)>> = None;
    let marks = super::durable::read_marks(storage, dir, partitions)?;
    let mut found = Vec::new();
    for p in 0..partitions {
        let scanned = scan_partition(storage, dir, p)?;
        let lost = super::inspect::lost(marks.as_ref(), p, scanned.next_seq);
        let Some(d) = scanned.damaged_last else {
            // No damage that hides records, but durable records are gone.
            let Some((first, valid_len)) = scanned.last.filter(|_| lost > 0) else {
                continue;
            };
            let loaded = match &mut checkpoints {
                Some(all) => all,
                None => checkpoints.insert(load_all_checkpoints(storage, dir)?),
            };
            let end = scanned.next_seq;
            found.push(Damage {
                partition: p,
                segment: segment_name(first),
                offset: valid_len,
                reason: format!("records {end} to {} were durable and are gone", end + lost - 1),
                bytes: scanned.torn,
                next_seq: end,
                records_after: 0,
                seqs_after: None,
                checkpoints_past: past(loaded, p, end),
                lost,
            });
            continue;
        };
        let len = d.file.len().map_err(io_err("stat", &d.path))?;
        let (records_after, seqs_after) = records_after(d.file.as_ref(), d.offset, d.next_seq)
            .map_err(io_err("read", &d.path))?;
        let loaded = match &mut checkpoints {
            Some(all) => all,
            None => checkpoints.insert(load_all_checkpoints(storage, dir)?),
        };
        let checkpoints_past = past(loaded, p, d.next_seq);
        found.push(Damage {
            partition: p,
            segment: segment_name(d.first),
            offset: d.offset,
            reason: d.reason,
            bytes: len.saturating_sub(d.offset),
            next_seq: d.next_seq,
            records_after,
            seqs_after,
            checkpoints_past,
            lost,
        });
    }
    Ok(found)
}

/// The consumers whose checkpoint for partition `p` is past `next_seq`, with it.
fn past(all: &[(String, Checkpoint)], p: u32, next_seq: u64) -> Vec<(String, u64)> {
    all.iter()
        .filter_map(|(c, cp)| cp.next.get(&p).map(|&at| (c.clone(), at)))
        .filter(|&(_, at)| at > next_seq)
        .collect()
}

/// Every consumer's saved checkpoint.
fn load_all_checkpoints<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<Vec<(String, Checkpoint)>, Error> {
    let mut all = Vec::new();
    for c in consumers(storage, dir)? {
        if let Some(cp) = load_checkpoint(storage, dir, &c)? {
            all.push((c, cp));
        }
    }
    Ok(all)
}

/// The valid records after damage at `offset`: how many, and their lowest and highest
/// sequence numbers.
fn records_after<F: StorageFile>(
    file: &F,
    offset: u64,
    next_seq: u64,
) -> std::io::Result<(u64, Option<(u64, u64)>)> {
    let (mut count, mut range, mut at, mut next) = (0u64, None, offset, next_seq);
    while let Some(f) = valid_frame_after(file, at, next)? {
        count += 1;
        range = Some(range.map_or((f.seq, f.seq), |(lo, _): (u64, u64)| (lo, f.seq)));
        next = f.seq + 1;
        // The next frame starts where this one ends; searching from its last byte finds it.
        at = f.end - 1;
    }
    Ok((count, range))
}

/// Truncates the damaged segment at the damage (and syncs it): the records after it are gone,
/// and the writer opens the log again. Lowers the partition's durable mark to the damaged
/// record's sequence number, then the checkpoints in [`Damage::checkpoints_past`], so their
/// consumers read the records that will take the dropped ones' numbers.
pub fn truncate_damage<S: Storage>(storage: &S, dir: &Path, damage: &Damage) -> Result<(), Error> {
    let path = partition_path(dir, damage.partition).join(&damage.segment);
    let file = storage.open(&path, false).map_err(io_err("open", &path))?;
    file.set_len(damage.offset).map_err(io_err("truncate", &path))?;
    file.sync().map_err(io_err("fsync", &path))?;
    let partitions = read_partitions(storage, dir)?.unwrap_or(0);
    if let Some(stored) = super::durable::read_marks(storage, dir, partitions)? {
        let marks: Vec<u64> = (0u32..)
            .zip(&stored.marks)
            .map(|(p, m)| {
                let m = m.unwrap_or(0);
                if p == damage.partition { m.min(damage.next_seq) } else { m }
            })
            .collect();
        drop(super::durable::Marks::create(storage, dir, &marks, stored.written)?);
    }
    for (consumer, _) in &damage.checkpoints_past {
        if let Some(mut cp) = load_checkpoint(storage, dir, consumer)? {
            if let Some(at) = cp.next.get_mut(&damage.partition) {
                *at = (*at).min(damage.next_seq);
            }
            save_checkpoint(storage, dir, consumer, &cp)?;
        }
    }
    Ok(())
}

/// [`find_damage`] on the real file system, and with `truncate` [`truncate_damage`] for each,
/// holding the writer lock throughout ([`Error::Busy`] while a writer has the log open).
pub fn repair(dir: &Path, truncate: bool) -> Result<Vec<Damage>, Error> {
    let _lock = lock_writer(dir)?;
    let found = find_damage(&FileStorage, dir)?;
    if truncate {
        for d in &found {
            tracing::warn!(
                partition = d.partition,
                segment = %d.segment,
                offset = d.offset,
                bytes = d.bytes,
                records = d.records_after,
                lost = d.lost,
                "Truncating damage on request; the records after it are dropped."
            );
            truncate_damage(&FileStorage, dir, d)?;
        }
    }
    Ok(found)
}
