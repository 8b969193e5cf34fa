//! Read-only verification of a whole log.

use std::path::Path;
use std::sync::Arc;

use super::format::segment_name;
use super::segment::{list_segments, partition_path, scan};
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
}

/// Verifies every checksum of every segment without changing anything. A torn tail in a
/// partition's last segment is reported; any other damage is [`Error::Corrupt`].
pub fn inspect<S: Storage>(storage: &S, dir: &Path) -> Result<Inspection, Error> {
    let partitions = read_partitions(storage, dir)?.ok_or_else(|| Error::Layout {
        path: dir.to_owned(),
        reason: "not a log directory (no log.meta)".into(),
    })?;
    let mut out = Inspection { partitions, ..Inspection::default() };
    for p in 0..partitions {
        let pdir = partition_path(dir, p);
        let segments = list_segments(storage, &pdir)?;
        let mut expected: Option<u64> = None;
        for (i, &first) in segments.iter().enumerate() {
            let path = pdir.join(segment_name(first));
            if let Some(e) = expected
                && e != first
            {
                {
                    return Err(Error::Corrupt {
                        partition: p,
                        segment: segment_name(first),
                        offset: 0,
                        reason: format!("previous segment ends at sequence {e}"),
                    });
                }
            }
            let file = Arc::new(storage.open(&path, false).map_err(io_err("open", &path))?);
            let end = scan(&file, &path, p, first, |_, _| {})?;
            let last = i + 1 == segments.len();
            if end.torn > 0 && !last {
                return Err(Error::Corrupt {
                    partition: p,
                    segment: segment_name(first),
                    offset: end.valid_len,
                    reason: "damaged record before a later segment".into(),
                });
            }
            out.segments += 1;
            out.records += end.records;
            out.torn_tail_bytes += end.torn;
            expected = Some(end.next_seq);
        }
    }
    Ok(out)
}
