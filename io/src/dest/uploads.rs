//! The journal of multipart uploads this process opened on S3 destinations, so that uploads a
//! crash left open are aborted at the next start — and only those. Before
//! `CreateMultipartUpload` the intent is journaled durably (destination, key, time), and the
//! upload id once the server answers, before the first part (one `fdatasync` each); the end
//! (completed or aborted) is noted without a sync. At the next start an upload with an id and
//! no end is aborted by its id (one the server had completed is no longer there: a lost end
//! costs one request, never an object). An intent without an id (a crash while the upload was
//! being created) is resolved at the destination: the uploads of exactly that key, initiated
//! within minutes of the intent, that hold no part (this process sends none before journaling
//! the id) are aborted. Uploads other tools open are in no journal, so never touched (short of
//! a tool opening one on the very key of a replica, in those minutes, and sending it no part).
//!
//! Format: JSON lines, `{"intent":N,"destination":ARN,"key":K,"at_ms":T}`,
//! `{"start":N,"upload_id":U}` and `{"end":N}`. Opening the journal reads the uploads left open
//! and rewrites the file with them alone (atomically), so it never grows past one run's.
// Only S3 destinations open uploads that outlive the process: built without `aws`, nothing
// journals one (the engine still opens the journal).
#![cfg_attr(not(feature = "aws"), allow(dead_code))]

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An upload a previous run opened (or was opening) and did not see end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    /// The destination's ARN.
    pub destination: String,
    /// The replica's key.
    pub key: String,
    /// The server's upload id; `None` when the run crashed before the server answered.
    pub upload_id: Option<String>,
    /// When the upload was about to be created (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// One journal line (each kind fills some fields).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
}

impl Line {
    fn intent(n: u64, u: &OpenUpload) -> Self {
        Line {
            intent: Some(n),
            destination: Some(u.destination.clone()),
            key: Some(u.key.clone()),
            upload_id: u.upload_id.clone(),
            at_ms: Some(u.at_ms),
            ..Line::default()
        }
    }
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl UploadJournal {
    /// Opens (creating) the journal at `path`; returns it with the uploads earlier runs left
    /// open, which the journal keeps until [`UploadJournal::forget`] is told they are gone.
    /// Damaged lines (a torn last write) are skipped: an intent whose line is damaged never
    /// reached the server, and an id whose line is damaged was never given a part.
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
            match l {
                Line {
                    intent: Some(n), destination: Some(destination), key: Some(key), ..
                } => {
                    let upload = OpenUpload {
                        destination,
                        key,
                        upload_id: l.upload_id,
                        at_ms: l.at_ms.unwrap_or(0),
                    };
                    open.insert(n, upload);
                }
                Line { start: Some(n), upload_id: Some(id), .. } => {
                    if let Some(u) = open.get_mut(&n) {
                        u.upload_id = Some(id);
                    }
                }
                Line { end: Some(n), .. } => {
                    open.remove(&n);
                }
                _ => {}
            }
        }
        let next = open.keys().next_back().map_or(0, |n| n + 1);
        let mut body = Vec::new();
        for (n, u) in &open {
            body.extend(serde_json::to_vec(&Line::intent(*n, u)).map_err(|e| io_error(path, e))?);
            body.push(b'\n');
        }
        crate::log::write_atomic(&crate::log::FileStorage, path, &body)
            .map_err(std::io::Error::other)?;
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
        let mut f = self.file.lock();
        crate::log::append_whole(&mut f, &bytes, sync).map_err(|e| io_error(&self.path, e))
    }

    /// Journals (durably) that an upload of `key` at `destination` is about to be created;
    /// returns its entry number.
    pub(crate) fn intend(&self, destination: &str, key: &str) -> std::io::Result<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let u = OpenUpload {
            destination: destination.to_owned(),
            key: key.to_owned(),
            upload_id: None,
            at_ms: now_ms(),
        };
        self.append(&Line::intent(n, &u), true)?;
        Ok(n)
    }

    /// Journals (durably) the id the server gave entry `n`'s upload.
    pub(crate) fn started(&self, n: u64, upload_id: &str) -> std::io::Result<()> {
        let line =
            Line { start: Some(n), upload_id: Some(upload_id.to_owned()), ..Line::default() };
        self.append(&line, true)
    }

    /// Notes that entry `n`'s upload is gone (completed or aborted, or never created); not
    /// synced.
    pub fn forget(&self, n: u64) {
        if let Err(e) = self.append(&Line { end: Some(n), ..Line::default() }, false) {
            tracing::warn!(error = %e, "Noting the end of a multipart upload failed; the next start aborts it again (harmlessly).");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write as _;

    #[test]
    #[allow(clippy::many_single_char_names)]
    fn uploads_left_open_are_returned_and_kept_until_forgotten() {
        let dir = std::env::temp_dir().join(format!("s3repl-uploads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("j.jsonl");
        let (j, left) = UploadJournal::open(&path).unwrap();
        assert!(left.is_empty());
        let a = j.intend("arn:aws:s3:::d", "k1").unwrap();
        j.started(a, "u1").unwrap();
        let b = j.intend("arn:aws:s3:::d", "k2").unwrap();
        j.started(b, "u2").unwrap();
        // A crash between the intent and the server's answer: no id.
        let c = j.intend("arn:aws:s3:::d", "k9").unwrap();
        j.forget(a);
        drop(j);
        // A torn last line (a crash mid-write) is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"intent\":9,\"dest")
            .unwrap();
        let (j, left) = UploadJournal::open(&path).unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].0, b);
        assert_eq!(left[0].1.upload_id.as_deref(), Some("u2"));
        assert_eq!((left[1].0, left[1].1.key.as_str()), (c, "k9"));
        assert_eq!(left[1].1.upload_id, None);
        assert!(left[1].1.at_ms > 0);
        // Entry numbers go on past the ones left open.
        let d = j.intend("arn:aws:s3:::d", "k3").unwrap();
        assert!(d > c);
        j.started(d, "u3").unwrap();
        j.forget(b);
        j.forget(c);
        drop(j);
        let (_, left) = UploadJournal::open(&path).unwrap();
        assert_eq!(left.len(), 1, "only u3 is left");
        assert_eq!(left[0].1.key, "k3");
        assert_eq!(left[0].1.upload_id.as_deref(), Some("u3"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
