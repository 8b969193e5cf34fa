//! Consumer checkpoints (next sequence number per partition, stored atomically) and retention
//! of segments every consumer has passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::format::segment_name;
use super::segment::{list_segments, partition_path};
use super::storage::{Storage, StorageFile};
use super::writer::{read_partitions, try_lock, write_atomic};
use crate::error::{Error, io_err};

const MAGIC: [u8; 4] = *b"S3RC";
const VERSION: u16 = 1;

/// A consumer's position: for each partition, the next sequence number it will process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Partition → next sequence number.
    pub next: BTreeMap<u32, u64>,
}

fn checkpoint_dir(dir: &Path) -> PathBuf {
    dir.join("checkpoints")
}

fn checkpoint_path(dir: &Path, consumer: &str) -> Result<PathBuf, Error> {
    let ok = !consumer.is_empty()
        && consumer.len() <= 64
        && consumer.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(Error::Checkpoint {
            path: checkpoint_dir(dir),
            reason: format!("consumer name {consumer:?} must be 1-64 of [A-Za-z0-9_-]"),
        });
    }
    Ok(checkpoint_dir(dir).join(format!("{consumer}.ckpt")))
}

/// Takes the exclusive lock of `consumer` on the log in `dir` (`checkpoints/<consumer>.lock`, on
/// the real file system), held until the file is dropped; `None` when another holder (an
/// engine of the same consumer, in this process or another) has it. Two consumers of one name
/// would share one checkpoint.
pub fn lock_consumer(dir: &Path, consumer: &str) -> Result<Option<std::fs::File>, Error> {
    let path = checkpoint_path(dir, consumer)?.with_extension("lock");
    let parent = checkpoint_dir(dir);
    std::fs::create_dir_all(&parent).map_err(io_err("mkdir", &parent))?;
    try_lock(&path)
}

impl Checkpoint {
    /// `S3RC` | version u16 | reserved u16 | count u32 | (partition u32, next u64)* | CRC32C u32.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.next.len() * 12);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.next.len()).unwrap_or(u32::MAX).to_le_bytes());
        for (p, n) in &self.next {
            out.extend_from_slice(&p.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses [`Checkpoint::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (body, crc) = bytes.split_last_chunk::<4>().ok_or("too short")?;
        if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
            return Err("checksum mismatch".into());
        }
        let rest = body.strip_prefix(&MAGIC[..]).ok_or("bad magic")?;
        let (version, rest) = rest.split_first_chunk::<2>().ok_or("too short")?;
        if u16::from_le_bytes(*version) != VERSION {
            return Err(format!("unknown version {}", u16::from_le_bytes(*version)));
        }
        let (_, rest) = rest.split_first_chunk::<2>().ok_or("too short")?;
        let (count, mut rest) = rest.split_first_chunk::<4>().ok_or("too short")?;
        let mut next = BTreeMap::new();
        for _ in 0..u32::from_le_bytes(*count) {
            let (partition, after) = rest.split_first_chunk::<4>().ok_or("truncated entry")?;
            let (seq, after) = after.split_first_chunk::<8>().ok_or("truncated entry")?;
            next.insert(u32::from_le_bytes(*partition), u64::from_le_bytes(*seq));
            rest = after;
        }
        if !rest.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(Checkpoint { next })
    }
}

/// Stores a consumer's checkpoint atomically (temporary file, fsync, rename, fsync dir).
pub fn save_checkpoint<S: Storage>(
    storage: &S,
    dir: &Path,
    consumer: &str,
    cp: &Checkpoint,
) -> Result<(), Error> {
    let path = checkpoint_path(dir, consumer)?;
    storage.create_dir_all(&checkpoint_dir(dir)).map_err(io_err("mkdir", checkpoint_dir(dir)))?;
    write_atomic(storage, &path, &cp.encode())
}

/// Loads a consumer's checkpoint (`None` if it has none).
pub fn load_checkpoint<S: Storage>(
    storage: &S,
    dir: &Path,
    consumer: &str,
) -> Result<Option<Checkpoint>, Error> {
    let path = checkpoint_path(dir, consumer)?;
    let f = match storage.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let len =
        usize::try_from(f.len().map_err(io_err("stat", &path))?).unwrap_or(usize::MAX).min(1 << 24);
    let mut buf = vec![0u8; len];
    let n = f.read_at(0, &mut buf).map_err(io_err("read", &path))?;
    buf.truncate(n);
    Checkpoint::decode(&buf).map(Some).map_err(|reason| Error::Checkpoint { path, reason })
}

/// The registered consumers (those with a checkpoint file).
pub fn consumers<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<String>, Error> {
    let cdir = checkpoint_dir(dir);
    let mut names: Vec<String> = storage
        .list(&cdir)
        .map_err(io_err("list", &cdir))?
        .into_iter()
        .filter_map(|n| n.strip_suffix(".ckpt").map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Makes every record of `partition` below `next` durable, for a consumer about to save a
/// checkpoint that passes them. A reader sees what the writer has written, synced or not (it
/// is in the page cache), so a consumer can finish records before their fsync; if a power loss
/// then dropped them, the writer would give their sequence numbers to new records, and the
/// consumer, resuming past them, would skip those. Syncs the segment holding record
/// `next - 1` (an fsync flushes the file's pages whoever asks; earlier segments were synced
/// before their successors were created, and only sealed segments are removed by retention).
/// Nothing to do for `next == 0`.
pub fn sync_records_below<S: Storage>(
    storage: &S,
    dir: &Path,
    partition: u32,
    next: u64,
) -> Result<(), Error> {
    let Some(last) = next.checked_sub(1) else { return Ok(()) };
    let pdir = partition_path(dir, partition);
    // No segment that old: retention removed it, and only sealed (synced) segments go.
    let Some(first) = list_segments(storage, &pdir)?.into_iter().rev().find(|&f| f <= last) else {
        return Ok(());
    };
    let path = pdir.join(segment_name(first));
    let file = storage.open(&path, false).map_err(io_err("open", &path))?;
    file.sync().map_err(io_err("fsync", &path))
}

/// Deletes segments every registered consumer has entirely passed: a segment goes when the
/// next segment's first sequence number is at or below every consumer's checkpoint. The last
/// segment of a partition is never deleted. Returns the deleted files. With no consumer,
/// nothing is deleted.
pub fn apply_retention<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let names = consumers(storage, dir)?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let checkpoints =
        names.iter().map(|c| load_checkpoint(storage, dir, c)).collect::<Result<Vec<_>, _>>()?;
    let partitions = read_partitions(storage, dir)?.unwrap_or(0);
    let mut deleted = Vec::new();
    for p in 0..partitions {
        let low = checkpoints
            .iter()
            .map(|c| c.as_ref().and_then(|c| c.next.get(&p).copied()).unwrap_or(0))
            .min()
            .unwrap_or(0);
        let pdir = partition_path(dir, p);
        let segments = list_segments(storage, &pdir)?;
        for pair in segments.windows(2) {
            let [first, next] = pair else { continue };
            if *next <= low {
                let path = pdir.join(segment_name(*first));
                storage.remove_file(&path).map_err(io_err("remove", &path))?;
                deleted.push(path);
            }
        }
        if !deleted.is_empty() {
            storage.sync_dir(&pdir).map_err(io_err("fsync", &pdir))?;
        }
    }
    Ok(deleted)
}
