//! Destination limits changed while running (`PUT /-/limits`), kept across restarts in
//! `DATA_DIR/state/limits.json`, as `MinIO` keeps a target's bandwidth in its configuration.
//!
//! An override holds until the settings file's own limits for that destination change: each
//! entry remembers the settings' limits it replaced, and at start an entry whose destination's
//! settings now say something else is dropped (the edit is the newer intent), as is one for a
//! destination the settings no longer have. The file is written whole and atomically (temporary
//! file, fsync, rename); a damaged one is reported and left out, never a reason not to start —
//! limits only shape traffic.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use s3repl::dest::DestinationLimits;
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// A destination's limits as the file spells them (`null`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Limits {
    bandwidth_bytes_per_second: Option<u64>,
    max_requests: Option<usize>,
}

impl From<DestinationLimits> for Limits {
    fn from(l: DestinationLimits) -> Self {
        Limits { bandwidth_bytes_per_second: l.bytes_per_second, max_requests: l.max_requests }
    }
}

impl From<Limits> for DestinationLimits {
    fn from(l: Limits) -> Self {
        DestinationLimits {
            bytes_per_second: l.bandwidth_bytes_per_second,
            max_requests: l.max_requests,
        }
    }
}

/// One destination's override.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Override {
    /// The limits set while running.
    set: Limits,
    /// The settings file's limits for the destination when they were set.
    settings_then: Limits,
}

/// The overrides in force, and where they are kept.
#[derive(Debug)]
pub(crate) struct LimitOverrides {
    path: PathBuf,
    /// Per destination ARN, the settings file's limits.
    configured: HashMap<String, Limits>,
    current: parking_lot::Mutex<BTreeMap<String, Override>>,
}

impl LimitOverrides {
    /// Reads `path` against the settings' `configured` limits; returns the overrides and the
    /// limits to apply now, per destination.
    pub(crate) fn load(
        path: PathBuf,
        configured: HashMap<String, DestinationLimits>,
    ) -> (Self, Vec<(String, DestinationLimits)>) {
        let configured: HashMap<String, Limits> =
            configured.into_iter().map(|(arn, l)| (arn, l.into())).collect();
        let stored: BTreeMap<String, Override> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "Destination limits set while running cannot be read; the settings' limits apply (the file is rewritten at the next PUT /-/limits).");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "Destination limits set while running cannot be read; the settings' limits apply.");
                BTreeMap::new()
            }
        };
        let mut current = BTreeMap::new();
        let mut apply = Vec::new();
        for (arn, o) in stored {
            match configured.get(&arn) {
                Some(now) if *now == o.settings_then => {
                    tracing::info!(destination = %arn, bytes_per_second = ?o.set.bandwidth_bytes_per_second, max_requests = ?o.set.max_requests, "Destination limits set while running apply again.");
                    apply.push((arn.clone(), o.set.into()));
                    current.insert(arn, o);
                }
                Some(_) => {
                    tracing::info!(destination = %arn, "The settings' limits of this destination changed since limits were set while running: the settings' apply.");
                }
                None => {}
            }
        }
        (LimitOverrides { path, configured, current: parking_lot::Mutex::new(current) }, apply)
    }

    /// Keeps `limits`, just set for `arn` while running, for the next start.
    pub(crate) fn record(&self, arn: &str, limits: DestinationLimits) -> Result<(), CliError> {
        let settings_then = self
            .configured
            .get(arn)
            .copied()
            .unwrap_or_else(|| DestinationLimits::default().into());
        let mut current = self.current.lock();
        current.insert(arn.to_owned(), Override { set: limits.into(), settings_then });
        let bytes = serde_json::to_vec_pretty(&*current)
            .map_err(|e| CliError::internal(format!("destination limits: {e}")))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(CliError::file(dir))?;
        }
        s3repl::log::write_atomic(&s3repl::log::FileStorage, &self.path, &bytes)
            .map_err(|e| CliError::internal(format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(bw: Option<u64>, mr: Option<usize>) -> DestinationLimits {
        DestinationLimits { bytes_per_second: bw, max_requests: mr }
    }

    #[test]
    fn an_override_holds_until_the_settings_change_and_a_damaged_file_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("limits.json");
        let settings = |bw| {
            HashMap::from([
                ("arn:aws:s3:::a".to_owned(), limits(bw, None)),
                ("arn:aws:s3:::b".to_owned(), limits(None, Some(4))),
            ])
        };
        let (first, apply) = LimitOverrides::load(path.clone(), settings(Some(1 << 20)));
        assert!(apply.is_empty());
        first.record("arn:aws:s3:::a", limits(Some(5 << 20), Some(8))).unwrap();
        first.record("arn:aws:s3:::b", limits(None, None)).unwrap();
        // The same settings: both overrides apply again.
        let (_, apply) = LimitOverrides::load(path.clone(), settings(Some(1 << 20)));
        assert_eq!(
            apply,
            vec![
                ("arn:aws:s3:::a".to_owned(), limits(Some(5 << 20), Some(8))),
                ("arn:aws:s3:::b".to_owned(), limits(None, None)),
            ]
        );
        // a's settings changed: its override is dropped, b's holds.
        let (_, apply) = LimitOverrides::load(path.clone(), settings(Some(2 << 20)));
        assert_eq!(apply, vec![("arn:aws:s3:::b".to_owned(), limits(None, None))]);
        // A destination gone from the settings: its override is dropped (a's still holds:
        // the file keeps what it had, and a's settings are as they were then).
        let only_a = HashMap::from([("arn:aws:s3:::a".to_owned(), limits(Some(1 << 20), None))]);
        let (_, apply) = LimitOverrides::load(path.clone(), only_a);
        assert_eq!(apply.len(), 1);
        // Damaged: nothing applies, and the next record rewrites it whole.
        std::fs::write(&path, b"{\"arn:aws:s3:::a\": {\"set\": ").unwrap();
        let (again, apply) = LimitOverrides::load(path.clone(), settings(Some(1 << 20)));
        assert!(apply.is_empty());
        again.record("arn:aws:s3:::a", limits(Some(3), None)).unwrap();
        let (_, apply) = LimitOverrides::load(path, settings(Some(1 << 20)));
        assert_eq!(apply, vec![("arn:aws:s3:::a".to_owned(), limits(Some(3), None))]);
    }
}
