//! Read-only verification of a whole log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::segment_name;
use super::segment::{frames_begun, list_segments, partition_path, scan};
use super::storage::Storage;
use super::writer::read_partitions;
use crate::error::{Error, io_err};

/// What [`inspect`] found in a healthy log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Partitions.
    pub partitions: u32,
    /// Segment files.
    pub segments: u64,
    /// Valid records.
    pub records: u64,
    /// Bytes of torn tail (healthy: the writer truncates them on open).
    pub torn_tail_bytes: u64,
    /// Records the torn tails had begun (frame headers continuing the sequence): records a
    /// crash cut short, which the writer drops when it opens the log. They were never durable
    /// (readers never saw them); under `Durability::Interval` some may have been acknowledged.
    pub torn_tail_records: u64,
    /// Records below a partition's durable mark that the log no longer holds: records it had
    /// made durable are gone (a disk that lost synced data, a file cut by hand). Not healthy:
    /// the writer refuses to open (`Error::Lost`) until `s3repl log repair --truncate`.
    pub lost_records: u64,
}

/// Verifies every checksum of every segment without changing anything. A torn tail in a
/// partition's last segment is reported, and so are records below a durable mark that are
/// gone; any other damage is [`Error::Corrupt`].
pub fn inspect<S: Storage>(storage: &S, dir: &Path) -> Result<Inspection, Error> {
    let partitions = read_partitions(storage, dir)?.ok_or_else(|| Error::Layout {
        path: dir.to_owned(),
        reason: "not a log directory (no log.meta)".into(),
    })?;
    let mut out = Inspection { partitions, ..Inspection::default() };
    let marks = super::durable::read_marks(storage, dir, partitions)?;
    for p in 0..partitions {
        let scanned = scan_partition(storage, dir, p)?;
        if let Some(d) = scanned.damaged_last {
            return Err(Error::Corrupt {
                partition: p,
                segment: segment_name(d.first),
                offset: d.offset,
                reason: d.reason,
            });
        }
        out.segments += scanned.segments;
        out.records += scanned.records;
        out.torn_tail_bytes += scanned.torn;
        out.torn_tail_records += scanned.torn_records;
        out.lost_records += lost(marks.as_ref(), p, scanned.next_seq);
    }
    Ok(out)
}

/// Records below partition `p`'s durable mark that a partition ending at `end` lacks.
pub(crate) fn lost(marks: Option<&super::durable::Stored>, p: u32, end: u64) -> u64 {
    marks
        .filter(|m| !m.written)
        .and_then(|m| m.marks.get(p as usize).copied().flatten())
        .map_or(0, |mark| mark.saturating_sub(end))
}

/// Damage in a partition's last segment past its header: what a repair can truncate.
pub(crate) struct LastDamage<F> {
    /// The segment's first sequence number.
    pub(crate) first: u64,
    /// Its path.
    pub(crate) path: PathBuf,
    /// The open segment.
    pub(crate) file: Arc<F>,
    /// The damaged record's sequence number.
    pub(crate) next_seq: u64,
    /// Where the valid records end.
    pub(crate) offset: u64,
    /// What is wrong there.
    pub(crate) reason: String,
}

/// One partition's segments scanned in order.
pub(crate) struct PartitionScan<F> {
    /// Segments scanned whole (the damaged last one is not counted).
    pub(crate) segments: u64,
    /// Valid records in them.
    pub(crate) records: u64,
    /// Torn tail bytes (of the last segment).
    pub(crate) torn: u64,
    /// Records the torn tail had begun.
    pub(crate) torn_records: u64,
    /// The sequence number after the last valid record.
    pub(crate) next_seq: u64,
    /// The last segment: its first sequence number and where its valid records end.
    pub(crate) last: Option<(u64, u64)>,
    /// Damage in the last segment followed by valid records, if any.
    pub(crate) damaged_last: Option<LastDamage<F>>,
}

/// Scans every segment of partition `p` in order, checking that each continues the sequence
/// of the one before. Damage before the last segment, a gap between segments, or a damaged
/// header is [`Error::Corrupt`]; damage past the last segment's header is returned as
/// [`PartitionScan::damaged_last`] (the case `inspect` reports and `repair` can truncate).
pub(crate) fn scan_partition<S: Storage>(
    storage: &S,
    dir: &Path,
    p: u32,
) -> Result<PartitionScan<S::File>, Error> {
    let pdir = partition_path(dir, p);
    let segments = list_segments(storage, &pdir)?;
    let mut out = PartitionScan {
        segments: 0,
        records: 0,
        torn: 0,
        torn_records: 0,
        next_seq: 0,
        last: None,
        damaged_last: None,
    };
    let mut expected: Option<u64> = None;
    for (i, &first) in segments.iter().enumerate() {
        let path = pdir.join(segment_name(first));
        if let Some(e) = expected
            && e != first
        {
            return Err(Error::Corrupt {
                partition: p,
                segment: segment_name(first),
                offset: 0,
                reason: format!("previous segment ends at sequence {e}"),
            });
        }
        let file = Arc::new(storage.open(&path, false).map_err(io_err("open", &path))?);
        let mut next_seq = first;
        let last = i + 1 == segments.len();
        let end = match scan(&file, &path, p, first, |seq, _| next_seq = seq + 1) {
            Ok(end) => end,
            Err(Error::Corrupt { offset, reason, .. }) if last && offset > 0 => {
                out.next_seq = next_seq;
                out.damaged_last = Some(LastDamage { first, path, file, next_seq, offset, reason });
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        if end.torn > 0 && !last {
            return Err(Error::Corrupt {
                partition: p,
                segment: segment_name(first),
                offset: end.valid_len,
                reason: "damaged record before a later segment".into(),
            });
        }
        if end.torn > 0 {
            out.torn_records += frames_begun(file.as_ref(), end.valid_len, end.next_seq)
                .map_err(io_err("read", &path))?;
        }
        out.segments += 1;
        out.records += end.records;
        out.torn += end.torn;
        out.next_seq = end.next_seq;
        out.last = Some((first, end.valid_len));
        expected = Some(end.next_seq);
    }
    Ok(out)
}
