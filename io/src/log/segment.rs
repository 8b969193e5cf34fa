//! Segment files of one partition: listing, scanning, and recovery of the tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::blocks::{FrameCursor, StdBlocks, Step};
use super::format::{SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_name, partition_dir};
use super::storage::{Storage, StorageFile};
use crate::error::{Error, io_err};

/// Block size of sequential scans.
pub(crate) const SCAN_BLOCK: usize = 1 << 20;

/// The directory of a partition.
pub(crate) fn partition_path(dir: &Path, partition: u32) -> PathBuf {
    dir.join(partition_dir(partition))
}

/// First sequence numbers of a partition's segments, ascending.
pub(crate) fn list_segments<S: Storage>(storage: &S, pdir: &Path) -> Result<Vec<u64>, Error> {
    let mut firsts: Vec<u64> = storage
        .list(pdir)
        .map_err(io_err("list", pdir))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

/// How a scan of one segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Offset just past the last valid record.
    pub(crate) valid_len: u64,
    /// The sequence number the next record must carry.
    pub(crate) next_seq: u64,
    /// Records read.
    pub(crate) records: u64,
    /// Bytes after `valid_len` that form a torn tail (incomplete or bad *last* record).
    pub(crate) torn: u64,
}

fn corrupt(partition: u32, path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        partition,
        segment: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        offset,
        reason: reason.into(),
    }
}

/// Reads and checks a segment header against its name and partition.
pub(crate) fn check_header<F: StorageFile>(
    file: &F,
    path: &Path,
    partition: u32,
    first_seq: u64,
) -> Result<(), Error> {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    let n = file.read_at(0, &mut h).map_err(io_err("read", path))?;
    let header = SegmentHeader::parse(h.get(..n).unwrap_or_default())
        .map_err(|r| corrupt(partition, path, 0, r))?;
    if header.partition != partition || header.first_seq != first_seq {
        return Err(corrupt(
            partition,
            path,
            0,
            format!(
                "header says partition {} first sequence {}, expected {partition} and {first_seq}",
                header.partition, header.first_seq
            ),
        ));
    }
    Ok(())
}

/// Scans every record of a segment, checking checksums and sequence continuity.
///
/// A damaged record is a torn tail only if it is the last thing in the file (an incomplete
/// frame, or a bad frame whose declared end reaches the end of the file); anywhere else it is
/// [`Error::Corrupt`]. `visit` sees every valid record.
pub(crate) fn scan<F: StorageFile + 'static>(
    file: &Arc<F>,
    path: &Path,
    partition: u32,
    first_seq: u64,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<ScanEnd, Error> {
    check_header(file.as_ref(), path, partition, first_seq)?;
    let file_len = file.len().map_err(io_err("stat", path))?;
    let src = StdBlocks::new(file.clone(), SEGMENT_HEADER_LEN as u64, SCAN_BLOCK);
    let mut cursor = FrameCursor::new(Box::new(src), SEGMENT_HEADER_LEN as u64);
    let mut next_seq = first_seq;
    let mut records = 0u64;
    loop {
        match cursor.next().map_err(io_err("read", path))? {
            Step::Frame { seq, payload, offset } => {
                if seq != next_seq {
                    return Err(corrupt(
                        partition,
                        path,
                        offset,
                        format!("sequence {seq} where {next_seq} was expected"),
                    ));
                }
                visit(seq, cursor.block().get(payload).unwrap_or_default());
                next_seq += 1;
                records += 1;
            }
            Step::End { offset, trailing, bad } => {
                let torn = file_len.saturating_sub(offset);
                if let Some((reason, declared)) = bad {
                    let end = offset.saturating_add(declared as u64);
                    if end < file_len {
                        return Err(corrupt(partition, path, offset, reason));
                    }
                }
                let _ = trailing;
                return Ok(ScanEnd { valid_len: offset, next_seq, records, torn });
            }
        }
    }
}
