//! Segment files of one partition: listing, scanning, and recovery of the tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::blocks::{FrameCursor, StdBlocks, Step};
use super::format::{
    Decoded, FRAME_HEADER_LEN, MAX_RECORD_LEN, SEGMENT_HEADER_LEN, SegmentHeader, decode_frame,
    parse_segment_name, partition_dir, segment_name,
};
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

/// A partition's segment files in log order, each with the sequence number of its first
/// record (for tools that read the files themselves, such as `s3repl log read`'s plain-read
/// baseline, and that must start a reader where retention left the partition).
pub fn segment_files<S: Storage>(
    storage: &S,
    dir: &Path,
    partition: u32,
) -> Result<Vec<(u64, PathBuf)>, Error> {
    let pdir = partition_path(dir, partition);
    let firsts = list_segments(storage, &pdir)?;
    Ok(firsts.into_iter().map(|f| (f, pdir.join(segment_name(f)))).collect())
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

/// A valid frame found by [`valid_frame_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FoundFrame {
    /// File offset of the frame.
    pub(crate) offset: u64,
    /// Its sequence number.
    pub(crate) seq: u64,
    /// File offset just past it.
    pub(crate) end: u64,
}

/// The first valid frame that starts after `bad` in `file` and carries a sequence number from
/// `next_seq` on (any later record of the segment would), if there is one: whether damage at
/// `bad` is followed by records, or only by what a crash left of unsynced writes (zeros where
/// the file system allocated blocks it never wrote, a torn write, garbage). Every offset is
/// tried: a frame header is 16 bytes, and only a header whose sequence number and length fit
/// what remains of the file is checksummed, so random bytes and zeros cost one header check
/// each. Only the file's length when the search starts is searched (a writer may be appending).
pub(crate) fn valid_frame_after<F: StorageFile>(
    file: &F,
    bad: u64,
    next_seq: u64,
) -> std::io::Result<Option<FoundFrame>> {
    let file_len = file.len()?;
    let mut buf = vec![0u8; SCAN_BLOCK + FRAME_HEADER_LEN];
    let mut frame = Vec::new();
    let mut at = bad.saturating_add(1);
    while at.saturating_add(FRAME_HEADER_LEN as u64) <= file_len {
        let n = file.read_at(at, &mut buf)?;
        let in_file = usize::try_from(file_len - at).unwrap_or(usize::MAX);
        let window = buf.get(..n.min(in_file)).unwrap_or_default();
        if window.len() < FRAME_HEADER_LEN {
            break;
        }
        let starts = window.len() - FRAME_HEADER_LEN + 1;
        for i in 0..starts.min(SCAN_BLOCK) {
            let Some(h) = window.get(i..i + FRAME_HEADER_LEN) else { break };
            let Ok::<[u8; FRAME_HEADER_LEN], _>([_, _, _, _, l0, l1, l2, l3, s @ ..]) =
                h.try_into()
            else {
                break;
            };
            let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
            let seq = u64::from_le_bytes(s);
            let off = at + i as u64;
            let remaining = file_len.saturating_sub(off);
            let end = (FRAME_HEADER_LEN + len) as u64;
            // Each record takes at least a header, so a later one's sequence number is below
            // `next_seq` plus the frames that fit in the rest of the file.
            let max_seq = next_seq.saturating_add(remaining / FRAME_HEADER_LEN as u64);
            if len > MAX_RECORD_LEN || end > remaining || seq < next_seq || seq > max_seq {
                continue;
            }
            let whole = if let Some(w) = window.get(i..i + FRAME_HEADER_LEN + len) {
                w
            } else {
                frame.resize(FRAME_HEADER_LEN + len, 0);
                let got = file.read_at(off, &mut frame)?;
                frame.get(..got).unwrap_or_default()
            };
            if matches!(decode_frame(whole), Decoded::Frame { .. }) {
                return Ok(Some(FoundFrame { offset: off, seq, end: off + end }));
            }
        }
        at += starts.min(SCAN_BLOCK) as u64;
    }
    Ok(None)
}

/// How many records a torn tail at `offset` had begun: frame headers that continue the
/// sequence from `next_seq`, each followed by the next (the last may run past the end of the
/// file). What a crash cut short of the writes that were never made durable.
pub(crate) fn frames_begun<F: StorageFile>(
    file: &F,
    offset: u64,
    next_seq: u64,
) -> std::io::Result<u64> {
    let len = file.len()?;
    let (mut at, mut seq, mut n) = (offset, next_seq, 0u64);
    let mut h = [0u8; FRAME_HEADER_LEN];
    while at.saturating_add(FRAME_HEADER_LEN as u64) <= len {
        if file.read_at(at, &mut h)? < FRAME_HEADER_LEN {
            break;
        }
        let [_, _, _, _, l0, l1, l2, l3, s @ ..] = h;
        let frame_len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        if u64::from_le_bytes(s) != seq || frame_len > MAX_RECORD_LEN {
            break;
        }
        n += 1;
        seq += 1;
        at = at.saturating_add((FRAME_HEADER_LEN + frame_len) as u64);
    }
    Ok(n)
}

/// Scans every record of a segment, checking checksums and sequence continuity.
///
/// The first damaged or incomplete frame ends the valid records. It starts a torn tail if no
/// valid later record follows it anywhere in the file ([`valid_frame_after`]): what a crash
/// leaves of unsynced writes (a partial frame, zeros where blocks were never written, garbage).
/// Damage followed by a valid record is [`Error::Corrupt`], including a frame whose damaged
/// length field hides the records after it. `visit` sees every valid record.
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
                // Whatever ends the valid records (a bad frame, or one whose declared length
                // runs past the end of the file, as a damaged length field would too) is a
                // torn tail only if no valid record follows it.
                if torn > 0
                    && let Some(next) = valid_frame_after(file.as_ref(), offset, next_seq)
                        .map_err(io_err("read", path))?
                {
                    let reason = bad.map_or_else(|| "incomplete record".to_owned(), |b| b.0);
                    return Err(corrupt(
                        partition,
                        path,
                        offset,
                        format!("{reason}, and a valid record follows at offset {}", next.offset),
                    ));
                }
                let _ = trailing;
                return Ok(ScanEnd { valid_len: offset, next_seq, records, torn });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
    use std::path::Path;

    use super::{FRAME_HEADER_LEN, SCAN_BLOCK, valid_frame_after};
    use crate::log::format::encode_frame;
    use crate::log::storage::{MemStorage, Storage, StorageFile, pseudo_random_bytes};

    /// A file of `len` garbage bytes with a frame of sequence number `seq` written at `at`.
    fn garbage_with_frame(len: usize, at: usize, seq: u64, payload: usize) -> impl StorageFile {
        let storage = MemStorage::new();
        let f = storage.open(Path::new("/f"), true).unwrap();
        let bytes: Vec<u8> = pseudo_random_bytes(0x2545_F491_4F6C_DD1D).take(len).collect();
        f.write_at(0, &bytes).unwrap();
        let mut frame = Vec::new();
        encode_frame(seq, &vec![7u8; payload], &mut frame);
        f.write_at(at as u64, &frame).unwrap();
        f
    }

    #[test]
    fn finds_a_frame_at_any_offset_across_search_windows() {
        // A header straddling the first window's end, a payload longer than what is left of a
        // window, and plain offsets: all found, with their sequence numbers and ends.
        // Searching from offset 1, the first window's last start is SCAN_BLOCK and the
        // second window's first is SCAN_BLOCK + 1.
        for (at, payload) in [
            (5, 10),
            (SCAN_BLOCK - 7, 100),
            (SCAN_BLOCK - 40, 3 << 20),
            (SCAN_BLOCK, 20),
            (SCAN_BLOCK + 1, 20),
            (SCAN_BLOCK + 3, 0),
        ] {
            let f = garbage_with_frame(SCAN_BLOCK * 2 + 64, at, 42, payload);
            let len = f.len().unwrap().max((at + FRAME_HEADER_LEN + payload) as u64);
            let found = valid_frame_after(&f, 0, 40).unwrap().expect("found");
            assert_eq!((found.offset, found.seq), (at as u64, 42), "at {at}");
            assert_eq!(found.end, (at + FRAME_HEADER_LEN + payload) as u64);
            assert!(found.end <= len);
            // Only after `bad`, and only sequence numbers from `next_seq` on.
            assert_eq!(valid_frame_after(&f, at as u64, 40).unwrap(), None, "at {at}");
            assert_eq!(valid_frame_after(&f, 0, 43).unwrap(), None, "at {at}");
        }
        // Zeros hold no frame, even where a zero sequence number would be plausible.
        let storage = MemStorage::new();
        let f = storage.open(Path::new("/z"), true).unwrap();
        f.write_at(0, &vec![0u8; SCAN_BLOCK + 100]).unwrap();
        assert_eq!(valid_frame_after(&f, 0, 0).unwrap(), None);
    }
}
