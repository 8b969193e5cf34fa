//! The durable marks: for each partition, the sequence number below which every record is
//! durable. Readers return only records below their partition's mark, so nothing a consumer
//! acts on (replicates, checkpoints past) can be lost by a crash, and the writer never gives a
//! number a consumer has seen to another record.
//!
//! The writer keeps them in `log.durable` (and in its [`super::Notifier`], for readers in its
//! process): after recovery it makes the recovered records durable and writes the marks
//! (durably); after each group fsync it overwrites them in place with one positional write
//! (not synced: a value there is written only after the records below it are durable, so any
//! value it holds, even after a power loss, is at most what is durable). Under
//! [`super::Durability::None`] nothing is durable and the marks follow what is written.
//!
//! Layout (**frozen**, little-endian): a 16-byte header — magic `S3RD`, version u16 = 1,
//! flags u16 (bit 0: the marks follow what is written, not what is durable: a writer under
//! `Durability::None`), partition count u32, CRC32C of the 12 bytes before — then 16 bytes per
//! partition: the mark u64, the CRC32C of (partition u32, mark u64), reserved u32. Each entry
//! checks itself, so a reader that races the writer's overwrite sees a bad entry, not a wrong
//! mark, and looks again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::storage::{Storage, StorageFile};
use super::writer::write_atomic;
use crate::error::{Error, io_err};

/// The file name, in the log directory.
pub(crate) const FILE: &str = "log.durable";
const MAGIC: [u8; 4] = *b"S3RD";
const VERSION: u16 = 1;
const HEADER: usize = 16;
const ENTRY: usize = 16;

fn entry_crc(partition: u32, mark: u64) -> u32 {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&partition.to_le_bytes());
    b[4..].copy_from_slice(&mark.to_le_bytes());
    crc32c::crc32c(&b)
}

/// The entries of `marks`, as written after the header.
pub(crate) fn encode_entries(marks: &[u64], out: &mut Vec<u8>) {
    out.clear();
    for (p, &m) in (0u32..).zip(marks) {
        out.extend_from_slice(&m.to_le_bytes());
        out.extend_from_slice(&entry_crc(p, m).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
}

/// Header flag: the marks follow what is written (no durability).
const WRITTEN: u16 = 1;

fn header(partitions: u32, written: bool) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&(if written { WRITTEN } else { 0 }).to_le_bytes());
    h[8..12].copy_from_slice(&partitions.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes partition `p`'s entry; `None` when it does not check (torn or never written).
fn decode_entry(p: u32, e: &[u8]) -> Option<u64> {
    let mark = u64::from_le_bytes(e.get(..8)?.try_into().ok()?);
    let crc = u32::from_le_bytes(e.get(8..12)?.try_into().ok()?);
    (crc == entry_crc(p, mark)).then_some(mark)
}

/// The path of the marks of the log in `dir`.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// What the marks file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Per partition, the mark (`None` for an entry that does not check).
    pub(crate) marks: Vec<Option<u64>>,
    /// Whether they follow what was written rather than what was durable.
    pub(crate) written: bool,
}

/// Every partition's mark as the file holds it, or `None` when the log has no marks file
/// (written by a version without them).
pub(crate) fn read_marks<S: Storage>(
    storage: &S,
    dir: &Path,
    partitions: u32,
) -> Result<Option<Stored>, Error> {
    let path = path(dir);
    let file = match storage.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let mut buf = vec![0u8; HEADER + ENTRY * partitions as usize];
    let n = file.read_at(0, &mut buf).map_err(io_err("read", &path))?;
    let written = buf.get(..HEADER) == Some(&header(partitions, true)[..]);
    if !written && buf.get(..HEADER) != Some(&header(partitions, false)[..]) {
        return Ok(Some(Stored { marks: vec![None; partitions as usize], written }));
    }
    let marks = (0..partitions)
        .map(|p| {
            let at = HEADER + ENTRY * p as usize;
            buf.get(at..(at + ENTRY).min(n)).and_then(|e| decode_entry(p, e))
        })
        .collect();
    Ok(Some(Stored { marks, written }))
}

/// Every partition's durable mark in the log in `dir` (`None` for one whose entry does not
/// check), or `None` for a log without marks (written before they existed) or without
/// durability (`Durability::None`: the marks follow what is written). Records below a mark were
/// durable when it was read; no reader has returned one at or above it.
pub fn durable_marks<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<Option<Vec<Option<u64>>>, Error> {
    let Some(partitions) = super::writer::read_partitions(storage, dir)? else { return Ok(None) };
    Ok(read_marks(storage, dir, partitions)?.filter(|m| !m.written).map(|m| m.marks))
}

/// The writer's side: the open marks file.
#[derive(Debug)]
pub(crate) struct Marks<F> {
    file: F,
    path: PathBuf,
    scratch: parking_lot::Mutex<Vec<u8>>,
}

impl<F: StorageFile> Marks<F> {
    /// Writes `marks` durably (creating the file whole, or overwriting its entries and syncing)
    /// and opens the file for [`Marks::publish`]. `written`: the marks will follow what is
    /// written, not what is durable.
    pub(crate) fn create<S: Storage<File = F>>(
        storage: &S,
        dir: &Path,
        marks: &[u64],
        written: bool,
    ) -> Result<Self, Error> {
        let path = path(dir);
        let partitions = u32::try_from(marks.len()).unwrap_or(u32::MAX);
        let mut entries = Vec::new();
        encode_entries(marks, &mut entries);
        let whole = HEADER + entries.len();
        let existing = match storage.open(&path, false) {
            Ok(f) => {
                let mut h = [0u8; HEADER];
                let n = f.read_at(0, &mut h).map_err(io_err("read", &path))?;
                let len = f.len().map_err(io_err("stat", &path))?;
                if n == HEADER && h == header(partitions, written) && len == whole as u64 {
                    Some(f)
                } else {
                    // About to be replaced: spoil its entries first, so a reader holding it
                    // open finds them bad and opens the new file by name.
                    let spoilt = vec![0xFF; usize::try_from(len).unwrap_or(0).min(whole)];
                    f.write_at(0, &spoilt).map_err(io_err("write", &path))?;
                    None
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        // Overwritten in place where it is whole, so readers holding it open keep reading it.
        let file = if let Some(f) = existing {
            f.write_at(HEADER as u64, &entries).map_err(io_err("write", &path))?;
            f.sync().map_err(io_err("fsync", &path))?;
            f
        } else {
            let mut bytes = header(partitions, written).to_vec();
            bytes.extend_from_slice(&entries);
            write_atomic(storage, &path, &bytes)?;
            storage.open(&path, false).map_err(io_err("open", &path))?
        };
        Ok(Marks { file, path, scratch: parking_lot::Mutex::new(entries) })
    }

    /// Overwrites the marks (one positional write, not synced; see the module comment).
    pub(crate) fn publish(&self, marks: &[u64]) -> Result<(), Error> {
        let mut buf = self.scratch.lock();
        encode_entries(marks, &mut buf);
        self.file.write_at(HEADER as u64, &buf).map_err(io_err("write", &self.path))
    }
}

/// A reader's view of one partition's mark.
#[derive(Debug)]
pub(crate) struct MarkReader<F> {
    partition: u32,
    path: PathBuf,
    file: Option<Arc<F>>,
    /// The last mark read that checked.
    last: u64,
}

/// What a reader may read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Records below this sequence number.
    Below(u64),
    /// The log has no marks (written by a version without them): everything written.
    Unmarked,
}

impl<F: StorageFile> MarkReader<F> {
    pub(crate) fn new(dir: &Path, partition: u32) -> Self {
        MarkReader { partition, path: path(dir), file: None, last: 0 }
    }

    /// The partition's mark now. An entry that does not check (a read racing the writer's
    /// overwrite, a file being replaced) gives the last good one: marks only grow while a
    /// writer runs.
    pub(crate) fn read<S: Storage<File = F>>(&mut self, storage: &S) -> Result<Limit, Error> {
        for _ in 0..2 {
            let file = match &self.file {
                Some(f) => f.clone(),
                None => match storage.open(&self.path, false) {
                    Ok(f) => self.file.insert(Arc::new(f)).clone(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Limit::Unmarked);
                    }
                    Err(e) => return Err(io_err("open", &self.path)(e)),
                },
            };
            let mut e = [0u8; ENTRY];
            let at = (HEADER + ENTRY * self.partition as usize) as u64;
            let n = file.read_at(at, &mut e).map_err(io_err("read", &self.path))?;
            if let Some(mark) = e.get(..n).and_then(|e| decode_entry(self.partition, e)) {
                self.last = mark;
                return Ok(Limit::Below(mark));
            }
            // Perhaps replaced since it was opened (a writer that found it damaged): once more
            // from the name.
            self.file = None;
        }
        Ok(Limit::Below(self.last))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::storage::MemStorage;

    #[test]
    fn marks_round_trip_and_damage_reads_as_unknown() {
        let storage = MemStorage::new();
        let dir = Path::new("/log");
        storage.create_dir_all(dir).unwrap();
        assert_eq!(read_marks(&storage, dir, 3).unwrap(), None);
        let marks = Marks::create(&storage, dir, &[5, 0, 9], false).unwrap();
        let stored = |marks: Vec<Option<u64>>, written| Some(Stored { marks, written });
        assert_eq!(
            read_marks(&storage, dir, 3).unwrap(),
            stored(vec![Some(5), Some(0), Some(9)], false)
        );
        marks.publish(&[7, 1, 9]).unwrap();
        let mut r = MarkReader::new(dir, 1);
        assert_eq!(r.read(&storage).unwrap(), Limit::Below(1));
        // A damaged entry: the reader keeps its last good mark; read_marks says unknown.
        let f = storage.open(&path(dir), false).unwrap();
        f.write_at((HEADER + ENTRY) as u64, &[0xFF]).unwrap();
        assert_eq!(r.read(&storage).unwrap(), Limit::Below(1));
        assert_eq!(
            read_marks(&storage, dir, 3).unwrap(),
            stored(vec![Some(7), None, Some(9)], false)
        );
        // Created again over a whole file: overwritten in place, so open readers follow it.
        drop(Marks::create(&storage, dir, &[8, 2, 10], false).unwrap());
        assert_eq!(r.read(&storage).unwrap(), Limit::Below(2));
        // Replaced (a writer without durability): the open reader finds its entries spoilt
        // and follows the new file.
        drop(Marks::create(&storage, dir, &[8, 3, 10], true).unwrap());
        assert_eq!(r.read(&storage).unwrap(), Limit::Below(3));
        assert_eq!(
            read_marks(&storage, dir, 3).unwrap(),
            stored(vec![Some(8), Some(3), Some(10)], true)
        );
        // A partition count that does not match the header: every entry unknown.
        assert_eq!(read_marks(&storage, dir, 4).unwrap(), stored(vec![None; 4], false));
    }
}
