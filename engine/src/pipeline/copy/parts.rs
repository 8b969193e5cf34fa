//! Reading a version's parts: into pooled buffers where the source can fill them, else as the
//! source's own allocations; a failed part read is retried alone.

use crate::pipeline::buffers::PartBuf;
use crate::pipeline::context::Shared;
use crate::pipeline::source::SourceError;
use crate::record::VersionRecord;

/// One part's bytes as read from the source.
pub(crate) enum Part {
    /// Into a pool buffer the engine lent ([`ObjectSource::read_range_into`]).
    Lent(PartBuf),
    /// As the source returned them ([`ObjectSource::get_range`]).
    Read(bytes::Bytes),
}

impl Part {
    pub(crate) fn len(&self) -> usize {
        match self {
            Part::Lent(buf) => buf.len(),
            Part::Read(bytes) => bytes.len(),
        }
    }

    pub(crate) fn into_bytes(self) -> bytes::Bytes {
        match self {
            Part::Lent(buf) => buf.freeze(),
            Part::Read(bytes) => bytes,
        }
    }
}

/// Reads bytes `range` of `r`: into a pool buffer where the source can fill one and the
/// part's length suits the pool, else as the source returns them.
pub(crate) async fn read_part(
    shared: &Shared,
    r: &VersionRecord,
    range: std::ops::Range<u64>,
) -> Result<Part, SourceError> {
    if let Some(buf) = read_lent(shared, r, range.clone()).await? {
        return Ok(Part::Lent(buf));
    }
    Ok(Part::Read(shared.source.get_range(&r.bucket, &r.key, &r.version_id, range).await?))
}

/// Reads bytes `range` of `r` into a pool buffer, where the source can fill one and the
/// length suits the pool; `None` otherwise (read the bytes as the source returns them).
pub(crate) async fn read_lent(
    shared: &Shared,
    r: &VersionRecord,
    range: std::ops::Range<u64>,
) -> Result<Option<PartBuf>, SourceError> {
    let len = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
    let lent = if shared.source.reads_into_buffers() { shared.buffers.lend(len) } else { None };
    let Some(mut buf) = lent else { return Ok(None) };
    // A reused buffer holds earlier bytes, perhaps of another object: a source that claims a
    // fill it did not do must not replicate them. The digest check, where a digest is
    // recorded, fails them; without one they are zeroed first (a memset of the part: a tenth
    // of the CPU of copying an 8 MiB version).
    if r.blake3.is_none() {
        buf.as_mut_slice().fill(0);
    }
    let filled = shared
        .source
        .read_range_into(&r.bucket, &r.key, &r.version_id, range, buf.as_mut_slice())
        .await?;
    Ok(filled.then_some(buf))
}
