//! The journal of multipart uploads this process opened on S3 destinations, so that uploads a
//! crash left open are aborted at the next start — and only those: an upload is journaled
//! durably (one `fdatasync`) after `CreateMultipartUpload` answers and before its first part,
//! and its end (completed or aborted) is noted without a sync. An upload whose end was not
//! noted is aborted at the next start; aborting one the server had completed finds no such
//! upload (404) and changes nothing, so a lost end costs one request, never an object. Uploads
//! started by other tools are never in the journal, so they are never touched.
//!
//! Format: JSON lines, `{"start":N,"destination":ARN,"key":K,"upload_id":U}` and
//! `{"end":N}`. Opening the journal reads the uploads left open and rewrites the file with
//! them alone (atomically), so it never grows past one run's uploads.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// An upload a previous run opened and did not see end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenUpload {
    /// The destination's ARN.
    pub destination: String,
    /// The replica's key.
    pub key: String,
    /// The server's upload id.
    pub upload_id: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    upload: Option<OpenUpload>,
}

/// The journal (see the module documentation).
#[derive(Debug)]
pub struct UploadJournal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    next: AtomicU64,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {e}", path.display()))
}

impl UploadJournal {
    /// Opens (creating) the journal at `path`; returns it with the uploads earlier runs left
    /// open, which the journal keeps until [`UploadJournal::forget`] is told they are gone.
    /// Damaged lines (a torn last write) are skipped: an upload whose start line is damaged was
    /// never given a part.
    pub fn open(path: &Path) -> std::io::Result<(Self, Vec<(u64, OpenUpload)>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
        let text = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(path, e)),
        };
        let mut open: BTreeMap<u64, OpenUpload> = BTreeMap::new();
        for line in text.split(|&b| b == b'\n') {
            let Ok(l) = serde_json::from_slice::<Line>(line) else { continue };
            match (l.start, l.end, l.upload) {
                (Some(n), _, Some(u)) => {
                    open.insert(n, u);
                }
                (_, Some(n), _) => {
                    open.remove(&n);
                }
                _ => {}
            }
        }
        let next = open.keys().next_back().map_or(0, |n| n + 1);
        let mut body = Vec::new();
        for (n, u) in &open {
            body.extend(
                serde_json::to_vec(&Line { start: Some(*n), end: None, upload: Some(u.clone()) })
                    .map_err(|e| io_error(path, e))?,
            );
            body.push(b'\n');
        }
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, &body).map_err(|e| io_error(&tmp, e))?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, e))?;
        }
        let file =
            std::fs::OpenOptions::new().append(true).open(path).map_err(|e| io_error(path, e))?;
        let journal = UploadJournal {
            path: path.to_owned(),
            file: Mutex::new(file),
            next: AtomicU64::new(next),
        };
        Ok((journal, open.into_iter().collect()))
    }

    fn append(&self, line: &Line, sync: bool) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(|e| io_error(&self.path, e))?;
        bytes.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f.write_all(&bytes).map_err(|e| io_error(&self.path, e))?;
        if sync {
            f.sync_data().map_err(|e| io_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Journals an upload just created (durably); returns its entry number.
    pub(crate) fn started(
        &self,
        destination: &str,
        key: &str,
        upload_id: &str,
    ) -> std::io::Result<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let upload = OpenUpload {
            destination: destination.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
        };
        self.append(&Line { start: Some(n), end: None, upload: Some(upload) }, true)?;
        Ok(n)
    }

    /// Notes that entry `n`'s upload is gone (completed or aborted); not synced.
    pub fn forget(&self, n: u64) {
        if let Err(e) = self.append(&Line { start: None, end: Some(n), upload: None }, false) {
            tracing::warn!(error = %e, "Noting the end of a multipart upload failed; the next start aborts it again (harmlessly).");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uploads_left_open_are_returned_and_kept_until_forgotten() {
        let dir = std::env::temp_dir().join(format!("s3repl-uploads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("j.jsonl");
        let (j, left) = UploadJournal::open(&path).unwrap();
        assert!(left.is_empty());
        let a = j.started("arn:aws:s3:::d", "k1", "u1").unwrap();
        let b = j.started("arn:aws:s3:::d", "k2", "u2").unwrap();
        j.forget(a);
        drop(j);
        // A torn last line (a crash mid-write) is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"start\":9,\"dest")
            .unwrap();
        let (j, left) = UploadJournal::open(&path).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, b);
        assert_eq!(left[0].1.upload_id, "u2");
        // Entry numbers go on past the ones left open.
        assert!(j.started("arn:aws:s3:::d", "k3", "u3").unwrap() > b);
        j.forget(b);
        drop(j);
        let (_, left) = UploadJournal::open(&path).unwrap();
        assert_eq!(left.len(), 1, "only u3 is left");
        assert_eq!(left[0].1.key, "k3");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
