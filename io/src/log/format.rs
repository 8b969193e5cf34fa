//! Byte layouts of segments and record frames (see `docs/design/log-format.md`).
//!
//! Fixed little-endian encodings only. Constants marked frozen are part of data at rest.

use std::ops::Range;

/// Segment magic (frozen).
pub const SEGMENT_MAGIC: [u8; 4] = *b"S3RL";
/// Segment format version (frozen for v1).
pub const FORMAT_VERSION: u16 = 1;
/// Segment header length (frozen for v1).
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Frame header length: CRC32C (u32), payload length (u32), sequence number (u64). Frozen.
pub const FRAME_HEADER_LEN: usize = 16;
/// Largest payload accepted (bounds memory per record; a longer declared length is corruption).
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// The header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The partition the segment belongs to.
    pub partition: u32,
    /// The sequence number of its first record (also the file name).
    pub first_seq: u64,
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

impl SegmentHeader {
    /// `magic (4) | version u16 | reserved u16 | partition u32 | reserved u32 | first_seq u64 |
    /// CRC32C of bytes 0..24 (u32) | reserved u32`.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        let mut v = Vec::with_capacity(SEGMENT_HEADER_LEN);
        v.extend_from_slice(&SEGMENT_MAGIC);
        v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&self.partition.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&self.first_seq.to_le_bytes());
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        for (d, s) in h.iter_mut().zip(v) {
            *d = s;
        }
        h
    }

    /// Parses and checks a header.
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(format!(
                "segment header needs {SEGMENT_HEADER_LEN} bytes, got {}",
                b.len()
            ));
        }
        if b.get(..4) != Some(&SEGMENT_MAGIC[..]) {
            return Err("bad segment magic".into());
        }
        let version = b.get(4..6).and_then(|v| v.try_into().ok()).map(u16::from_le_bytes);
        if version != Some(FORMAT_VERSION) {
            return Err(format!("unknown segment format version {version:?}"));
        }
        let crc = le_u32(b, 24).ok_or("truncated")?;
        if Some(crc) != b.get(..24).map(crc32c::crc32c) {
            return Err("segment header checksum mismatch".into());
        }
        Ok(SegmentHeader {
            partition: le_u32(b, 8).ok_or("truncated")?,
            first_seq: le_u64(b, 16).ok_or("truncated")?,
        })
    }
}

/// Appends one frame: `crc32c u32 | len u32 | seq u64 | payload`, the CRC covering everything
/// after it (length, sequence number, payload: one contiguous run, so one checksum call).
pub(crate) fn encode_frame(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(out.get(start + 4..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Length of the frame holding a payload of `len` bytes.
pub fn frame_len(len: usize) -> usize {
    FRAME_HEADER_LEN + len
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole, valid frame.
    Frame {
        /// Its sequence number.
        seq: u64,
        /// Where its payload lies in the buffer.
        payload: Range<usize>,
    },
    /// The buffer ends inside the frame; `need` is the frame's full length when the header is
    /// complete, else the header length.
    Incomplete {
        /// Bytes needed from the frame start.
        need: usize,
    },
    /// The frame is invalid (checksum or length).
    Bad {
        /// Why.
        reason: String,
        /// The frame's length as declared (to tell a bad *last* frame from a bad middle one).
        declared: usize,
    },
}

/// Decodes the frame at the start of `b` without copying.
#[inline]
pub(crate) fn decode_frame(b: &[u8]) -> Decoded {
    let (Some(crc), Some(len), Some(seq)) = (le_u32(b, 0), le_u32(b, 4), le_u64(b, 8)) else {
        return Decoded::Incomplete { need: FRAME_HEADER_LEN };
    };
    let len = len as usize;
    if len > MAX_RECORD_LEN {
        return Decoded::Bad {
            reason: format!("declared length {len} exceeds {MAX_RECORD_LEN}"),
            declared: usize::MAX,
        };
    }
    let total = FRAME_HEADER_LEN + len;
    let Some(covered) = b.get(4..total) else {
        return Decoded::Incomplete { need: total };
    };
    if crc32c::crc32c(covered) != crc {
        return Decoded::Bad { reason: "record checksum mismatch".into(), declared: total };
    }
    Decoded::Frame { seq, payload: FRAME_HEADER_LEN..total }
}

/// The file name of the segment starting at `first_seq` (20 digits, so names sort by number).
pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first sequence number a segment file name encodes.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The directory name of a partition.
pub(crate) fn partition_dir(partition: u32) -> String {
    format!("p{partition:05}")
}

/// The partition for an object: FNV-1a 64 of `bucket`, a 0xFF separator (never in UTF-8) and
/// `key`, modulo the partition count. Frozen: changing it would split a key's versions across
/// partitions and lose their order.
pub fn partition_for(bucket: &str, key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bucket.as_bytes().iter().chain(&[0xFF]).chain(key.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u32::try_from(h % u64::from(partitions.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut buf = Vec::new();
        encode_frame(42, b"hello", &mut buf);
        assert_eq!(buf.len(), frame_len(5));
        assert_eq!(decode_frame(&buf), Decoded::Frame { seq: 42, payload: 16..21 });
        assert_eq!(decode_frame(&buf[..10]), Decoded::Incomplete { need: 16 });
        assert_eq!(decode_frame(&buf[..18]), Decoded::Incomplete { need: 21 });
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(!matches!(decode_frame(&bad), Decoded::Frame { seq: 42, .. }), "flip at {i}");
        }
    }

    #[test]
    fn segment_header_round_trip() {
        let h = SegmentHeader { partition: 7, first_seq: 123_456 };
        let b = h.encode();
        assert_eq!(SegmentHeader::parse(&b), Ok(h));
        let mut bad = b;
        bad[17] ^= 1;
        assert!(SegmentHeader::parse(&bad).is_err());
        assert_eq!(parse_segment_name(&segment_name(123_456)), Some(123_456));
        assert_eq!(parse_segment_name("123.seg"), None);
    }

    #[test]
    fn partitioning_is_stable() {
        // Pinned values: a change here breaks per-key ordering of existing logs.
        assert_eq!(partition_for("b", "k", 1), 0);
        assert_eq!(partition_for("photos", "2024/01/a.jpg", 1024), 156);
        assert_eq!(partition_for("bucket", "key", 16), 7);
        assert_eq!(partition_for("", "", 7), 0);
        assert_ne!(partition_for("ab", "c", 1 << 20), partition_for("a", "bc", 1 << 20));
    }
}
