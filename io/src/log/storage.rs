//! The narrow storage seam the log does its file I/O through: real files, or an in-memory
//! file system that separates written from synced bytes so tests can crash it at any point.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// One open file.
// `len` is a file length, not a collection size: there is no meaningful `is_empty`.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at end of file).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes written data durable.
    fn sync(&self) -> io::Result<()>;
}

/// A directory tree of files.
pub trait Storage: Send + Sync + Debug + 'static {
    /// The file type.
    type File: StorageFile + 'static;
    /// Opens (optionally creating) a file for reading and writing.
    fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// Names of the entries of a directory (empty if it does not exist).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether a file exists. The default lists its directory; stores with a cheaper answer
    /// (one `stat`) override it.
    fn exists(&self, path: &Path) -> io::Result<bool> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Ok(false) };
        Ok(self.list(dir)?.iter().any(|n| std::ffi::OsStr::new(n) == name))
    }
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes a directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The real path of a file, when it has one (lets the `io_uring` reader open it itself).
    fn real_path(&self, _path: &Path) -> Option<PathBuf> {
        None
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStorage;

/// A real file.
#[derive(Debug)]
pub struct RealFile(std::fs::File);

impl StorageFile for RealFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, data, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Storage for FileStorage {
    type File = RealFile;
    fn open(&self, path: &Path, create: bool) -> io::Result<RealFile> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map(RealFile)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        match std::fs::read_dir(dir) {
            Ok(rd) => rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn real_path(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_owned())
    }
}

/// How an in-memory crash treats bytes written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Lose every unsynced byte.
    DropUnsynced,
    /// Keep the first `n` unsynced bytes of each file (a torn write), lose the rest.
    Tear(usize),
    /// Keep the first `kept` unsynced bytes of each file as written, and up to `unwritten`
    /// more of the file's written length without their contents: the file system persisted
    /// the file's new size but not every block of it (writeback is not in file order), so
    /// they read back as zeros, or with `garbage` as bytes that are neither zeros nor what
    /// was written (a torn sector).
    Unwritten {
        /// Unsynced bytes that survive as written.
        kept: usize,
        /// Bytes after those whose contents were lost.
        unwritten: usize,
        /// Lost contents read back as pseudo-random bytes rather than zeros.
        garbage: bool,
    },
}

#[derive(Debug, Default)]
struct MemFileData {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct MemFs {
    files: BTreeMap<PathBuf, Arc<Mutex<MemFileData>>>,
    dirs: BTreeSet<PathBuf>,
    fail_sync: bool,
}

/// An in-memory file system for deterministic crash tests. Directory operations are durable
/// at once (as after an fsync of the directory); file contents are durable only once synced.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    fs: Arc<Mutex<MemFs>>,
}

/// A file of a [`MemStorage`].
#[derive(Debug)]
pub struct MemFile {
    data: Arc<Mutex<MemFileData>>,
    fs: Arc<Mutex<MemFs>>,
}

impl MemStorage {
    /// An empty file system.
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// Simulates a power loss: every file falls back to its synced contents (plus, with
    /// [`Crash::Tear`] and [`Crash::Unwritten`], part of what was written after).
    pub fn crash(&self, how: Crash) {
        let fs = self.fs.lock();
        for f in fs.files.values() {
            let mut f = f.lock();
            let (keep, lost, garbage) = match how {
                Crash::DropUnsynced => (0, 0, false),
                Crash::Tear(n) => (n, 0, false),
                Crash::Unwritten { kept, unwritten, garbage } => (kept, unwritten, garbage),
            };
            let synced_len = f.synced.len();
            let unsynced = f.data.get(synced_len..).unwrap_or_default();
            let kept = keep.min(unsynced.len());
            let lost = lost.min(unsynced.len() - kept);
            let mut data = f.synced.clone();
            data.extend_from_slice(unsynced.get(..kept).unwrap_or_default());
            // Stale bytes, deterministic per file length.
            let seed = 0x9E37_79B9_7F4A_7C15u64 ^ (data.len() as u64);
            data.extend(pseudo_random_bytes(seed).take(lost).map(|b| if garbage { b } else { 0 }));
            // What survived the crash is on disk: durable from now on.
            f.synced.clone_from(&data);
            f.data = data;
        }
    }

    /// Makes every later `sync` fail (to test fail-stop), or succeed again.
    pub fn fail_syncs(&self, fail: bool) {
        self.fs.lock().fail_sync = fail;
    }

    /// Flips one byte of a file (to test corruption handling).
    pub fn corrupt(&self, path: &Path, offset: usize) -> bool {
        let fs = self.fs.lock();
        let Some(f) = fs.files.get(path) else { return false };
        let mut f = f.lock();
        let hit = f.data.get_mut(offset).map(|b| *b ^= 0x55).is_some();
        if let Some(b) = f.synced.get_mut(offset) {
            *b ^= 0x55;
        }
        hit
    }
}

impl StorageFile for MemFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self.data.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(f.data.len());
        let src = f.data.get(start..).unwrap_or_default();
        let n = src.len().min(buf.len());
        if let (Some(d), Some(s)) = (buf.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        Ok(n)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut f = self.data.lock();
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset"))?;
        let end = start + data.len();
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        if let Some(d) = f.data.get_mut(start..end) {
            d.copy_from_slice(data);
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().data.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut f = self.data.lock();
        let len = usize::try_from(len).map_err(|_| io::Error::other("length"))?;
        f.data.resize(len, 0);
        // A truncation below the synced length is itself synced by the caller; model it as
        // durable so recovery never resurrects truncated bytes.
        if f.synced.len() > len {
            f.synced.truncate(len);
        }
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        if self.fs.lock().fail_sync {
            return Err(io::Error::other("injected fsync failure"));
        }
        let mut f = self.data.lock();
        let MemFileData { data, synced } = &mut *f;
        synced.clone_from(data);
        Ok(())
    }
}

impl Storage for MemStorage {
    type File = MemFile;
    fn open(&self, path: &Path, create: bool) -> io::Result<MemFile> {
        let mut fs = self.fs.lock();
        let data = match fs.files.get(path) {
            Some(d) => d.clone(),
            None if create => {
                let d = Arc::new(Mutex::new(MemFileData::default()));
                fs.files.insert(path.to_owned(), d.clone());
                d
            }
            None => {
                return Err(io::Error::new(io::ErrorKind::NotFound, path.display().to_string()));
            }
        };
        Ok(MemFile { data, fs: self.fs.clone() })
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let fs = self.fs.lock();
        let files = fs.files.keys().filter(|p| p.parent() == Some(dir));
        let dirs = fs.dirs.iter().filter(|p| p.parent() == Some(dir));
        Ok(files
            .chain(dirs)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        for a in dir.ancestors() {
            fs.dirs.insert(a.to_owned());
        }
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.fs
            .lock()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        let f = fs.files.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        fs.files.insert(to.to_owned(), f);
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        if self.fs.lock().fail_sync {
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }
}

/// Deterministic pseudo-random bytes: the low byte of each xorshift64 state after `seed`.
pub(crate) fn pseudo_random_bytes(seed: u64) -> impl Iterator<Item = u8> {
    std::iter::successors(Some(seed), |&s| {
        let s = s ^ (s << 13);
        let s = s ^ (s >> 7);
        Some(s ^ (s << 17))
    })
    .skip(1)
    .map(|s| s.to_le_bytes()[0])
}
