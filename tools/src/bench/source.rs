//! The benchmark's synthetic source: deterministic bytes per version, sizes drawn from a
//! weighted distribution.

use std::sync::Arc;

use bytes::Bytes;
use s3repl::pipeline::{BoxFuture, ObjectSource, SourceError};

/// The size of object `i` under a weighted distribution (deterministic, well spread).
pub(crate) fn pick_size(dist: &[(u64, u64)], total_weight: u64, i: u64) -> u64 {
    let mut pick = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % total_weight.max(1);
    dist.iter()
        .find(|(_, w)| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .map_or(0, |(s, _)| *s)
}

/// Deterministic object bytes: slices of one patterned buffer, so the source costs no
/// allocation or copy per read (the size is carried in the version id).
pub(crate) struct SyntheticSource {
    pub(super) data: Bytes,
    /// SSE-KMS objects (version ids starting with `k`) are served encrypted.
    pub(super) kms: Option<Arc<crate::workload::Kms>>,
}

/// The synthetic content's period: byte `i` of every object is `i % 251`.
pub(super) const PERIOD: usize = 251;
/// The longest read served as a slice of the shared pattern (larger ones are assembled).
const MAX_SLICE: usize = 32 << 20;

impl SyntheticSource {
    /// A source whose version ids end in `-<size>`; it holds one pattern of at most 32 MiB
    /// whatever the object sizes (a 10 GiB object is served part by part).
    pub(crate) fn new(max_size: u64) -> Self {
        let len = usize::try_from(max_size).unwrap_or(usize::MAX).min(MAX_SLICE) + PERIOD;
        let pattern: Vec<u8> = (0..len).map(|i| u8::try_from(i % PERIOD).unwrap_or(0)).collect();
        SyntheticSource { data: Bytes::from(pattern), kms: None }
    }

    /// Bytes `range` of the content: a zero-copy slice when it fits the pattern.
    pub(super) fn content(&self, range: std::ops::Range<u64>) -> Result<Bytes, SourceError> {
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| SourceError::Transient("range too large".into()))?;
        let phase = usize::try_from(range.start % PERIOD as u64).unwrap_or(0);
        if phase + len <= self.data.len() {
            return Ok(self.data.slice(phase..phase + len));
        }
        let mut out = Vec::with_capacity(len);
        let mut at = phase;
        while out.len() < len {
            let take = (len - out.len()).min(self.data.len() - at);
            out.extend_from_slice(self.data.get(at..at + take).unwrap_or_default());
            at = (at + take) % PERIOD;
        }
        Ok(Bytes::from(out))
    }

    pub(super) fn bytes(
        &self,
        version_id: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, SourceError> {
        let Some(size) = version_id.rsplit_once('-').and_then(|(_, s)| s.parse::<u64>().ok())
        else {
            return Err(SourceError::Transient(format!(
                "no synthetic object for version {version_id}"
            )));
        };
        if let (Some(kms), true) = (&self.kms, version_id.starts_with('k')) {
            let (stored, _) = kms
                .object(size, |r| {
                    self.content(r).map_err(|e| crate::error::CliError::internal(e.to_string()))
                })
                .map_err(|e| SourceError::Transient(e.to_string()))?;
            return match range {
                Some(r) => s3repl::pipeline::slice_range(&stored, r),
                None => Ok(stored),
            };
        }
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(SourceError::Transient(format!(
                "range {range:?} outside a {size}-byte version"
            )));
        }
        self.content(range)
    }
}

impl ObjectSource for SyntheticSource {
    fn get<'a>(
        &'a self,
        _bucket: &'a str,
        _key: &'a str,
        version_id: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        let out = self.bytes(version_id, None);
        Box::pin(async move { out })
    }

    fn get_range<'a>(
        &'a self,
        _bucket: &'a str,
        _key: &'a str,
        version_id: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<Bytes, SourceError>> {
        let out = self.bytes(version_id, Some(range));
        Box::pin(async move { out })
    }
}
