//! Frames checked ahead of the consumer, by the thread that read their block.
//!
//! On warm page cache a reader's time is the kernel's copy plus the CRC32C of every frame, and
//! one core does both at about 60% of a plain read. The split source
//! ([`super::blocks::uring::SplitBlocks`]) has the ring thread read every other block and check
//! its frames while the consumer reads and checks the blocks in between, so each core copies
//! and checks half the bytes, in buffers that stay in its own cache.
//!
//! The ring thread does not know where the first frame of its block starts (that depends on
//! the block before, which the consumer is still reading), so it looks for it: the first
//! offset whose frame header is plausible (a sequence number in the range the block can hold,
//! a length that fits) and whose checksum is right, then follows frames from there while each
//! is whole, valid and numbered on. That guess may be wrong: a payload can contain bytes that
//! look like a valid frame. It costs nothing when it is, because the consumer only takes a
//! checked frame when its own walk of the frames arrives exactly at that frame's offset with
//! the sequence number it expects. From the same offset the same bytes decode to the same
//! frames, so from there on the checked frames are the ones the consumer would have checked.
//! Everything else (the frames before the first checked one, a frame spanning blocks, damage)
//! the consumer checks itself, as it does every block of its own.

use super::format::FRAME_HEADER_LEN;

/// Consecutive whole frames of one block whose checksums and sequence numbers were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Block offset of the first checked frame.
    start: usize,
    /// Its sequence number; the others follow on.
    seq: u64,
    /// Block offset where each checked frame ends, in order.
    ends: Vec<usize>,
    /// Frames before this one have been taken or stepped over.
    next: usize,
}

impl Checked {
    /// Block offset where checked frame `i` starts.
    fn start_of(&self, i: usize) -> Option<usize> {
        if i == 0 { Some(self.start) } else { self.ends.get(i - 1).copied() }
    }

    /// The checked frames starting at block offset `pos`, if the first is numbered `seq`:
    /// (sequence number, start, end) of at most `max` of them, which are marked taken.
    pub(crate) fn take_at(
        &mut self,
        pos: usize,
        seq: u64,
        max: usize,
    ) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
        while self.start_of(self.next).is_some_and(|s| s < pos) {
            self.next += 1;
        }
        let first = self.next;
        let here = self.start_of(first) == Some(pos)
            && self.seq.checked_add(first as u64) == Some(seq)
            && first < self.ends.len();
        let count = if here { max.min(self.ends.len() - first) } else { 0 };
        self.next += count;
        let starts = std::iter::once(self.start_of(first).unwrap_or(0))
            .chain(self.ends.get(first..).unwrap_or_default().iter().copied());
        let ends = self.ends.get(first..first + count).unwrap_or_default();
        (0u64..).zip(starts.zip(ends.iter().copied())).map(move |(i, (s, e))| (seq + i, s, e))
    }

    /// The same frames in the block's tail from offset `cut` (a cursor copied the head into a
    /// frame spanning blocks); `None` if none start there or later.
    pub(crate) fn after(self, cut: usize) -> Option<Checked> {
        let skip = (0..self.ends.len()).find(|&i| self.start_of(i).is_some_and(|s| s >= cut))?;
        let start = self.start_of(skip)? - cut;
        let ends = self.ends.get(skip..)?.iter().map(|e| e - cut).collect();
        Some(Checked { start, seq: self.seq + skip as u64, ends, next: 0 })
    }
}

/// What the ring thread knows about sequence numbers: the frame at file offset `offset` or
/// later is numbered `seq` or higher. A block reaching `d` bytes past `offset` can start no
/// frame numbered beyond `seq + d / 16` (a frame is at least its 16-byte header).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqHint {
    /// File offset.
    pub(crate) offset: u64,
    /// Lowest sequence number a frame at `offset` or later can have.
    pub(crate) seq: u64,
}

/// How far into a block the ring thread looks for its first frame. Frames longer than this can
/// hide the start of the next one; such blocks are left to the consumer.
pub(crate) const SCAN_LIMIT: usize = 64 << 10;

impl SeqHint {
    /// Checks the frames of `block`, read at file offset `at`, and moves the hint past them.
    pub(crate) fn check(&mut self, block: &[u8], at: u64) -> Option<Checked> {
        let reach = (at + block.len() as u64).saturating_sub(self.offset);
        let (lo, span) = (self.seq, reach / FRAME_HEADER_LEN as u64 + 1);
        let checked = check_block(block, lo, span)?;
        let last = *checked.ends.last()?;
        self.offset = at + last as u64;
        self.seq = checked.seq + checked.ends.len() as u64;
        Some(checked)
    }
}

/// Finds the first frame in `b` numbered `lo..lo + span` whose checksum is right, within
/// [`SCAN_LIMIT`] bytes, and the valid, consecutively numbered whole frames that follow it.
pub(crate) fn check_block(b: &[u8], lo: u64, span: u64) -> Option<Checked> {
    let last = b.len().checked_sub(FRAME_HEADER_LEN)?.min(SCAN_LIMIT);
    for p in 0..=last {
        let Some(seq) =
            b.get(p + 8..p + 16).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes)
        else {
            break;
        };
        if seq.wrapping_sub(lo) >= span {
            continue;
        }
        let Some((crc, end, seq)) = super::blocks::whole_frame(b, p) else { continue };
        if b.get(p + 4..end).map(crc32c::crc32c) != Some(crc) {
            continue;
        }
        // Room for frames of 128 bytes on average: most blocks never grow it.
        let mut ends = Vec::with_capacity((b.len() - p) / 128 + 1);
        ends.push(end);
        follow(b, seq, &mut ends);
        return Some(Checked { start: p, seq, ends, next: 0 });
    }
    None
}

/// Extends `ends` (frames from `seq` on, the last ending where the next starts) while the next
/// frame is whole, valid and numbered on; three frames are checksummed together at a time.
fn follow(b: &[u8], seq: u64, ends: &mut Vec<usize>) {
    use super::blocks::whole_frame;
    loop {
        let (Some(&p), n) = (ends.last(), ends.len() as u64) else { return };
        let want = seq + n;
        let three = whole_frame(b, p).and_then(|f0| {
            let f1 = whole_frame(b, f0.1)?;
            let f2 = whole_frame(b, f1.1)?;
            ((f0.2, f1.2, f2.2) == (want, want + 1, want + 2)).then_some((p, f0, f1, f2))
        });
        if let Some((p, (c0, e0, _), (c1, e1, _), (c2, e2, _))) = three
            && let (Some(a), Some(m), Some(z)) =
                (b.get(p + 4..e0), b.get(e0 + 4..e1), b.get(e1 + 4..e2))
            && super::crc::crc32c_3(a, m, z) == [c0, c1, c2]
        {
            ends.extend([e0, e1, e2]);
            continue;
        }
        // Fewer than three left, or one of them is not valid: one at a time.
        match whole_frame(b, p) {
            Some((crc, end, s))
                if s == want && b.get(p + 4..end).map(crc32c::crc32c) == Some(crc) =>
            {
                ends.push(end);
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Checked, SeqHint, check_block};
    use crate::log::format::encode_frame;

    fn frames(first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            encode_frame(first + i as u64, p, &mut out);
        }
        out
    }

    #[test]
    fn finds_the_first_frame_after_a_partial_one_and_follows_the_rest() {
        let all = frames(10, &[b"aaaaaaaaaaaaaaaaaaaaaaaa", b"bb", b"", b"cccc", b"d"]);
        // The block starts 5 bytes into the first frame and ends inside the last.
        let b = &all[5..all.len() - 3];
        let c = check_block(b, 10, 1000).unwrap();
        let first_end = 16 + 24 - 5;
        assert_eq!((c.start, c.seq), (first_end, 11));
        assert_eq!(c.ends, vec![first_end + 18, first_end + 34, first_end + 54]);
    }

    #[test]
    fn a_frame_outside_the_numbers_the_block_can_hold_is_not_taken() {
        let all = frames(10, &[b"x", b"y"]);
        assert!(check_block(&all, 12, 100).is_none());
        assert!(check_block(&all, 0, 10).is_none());
        assert_eq!(check_block(&all, 0, 11).map(|c| c.seq), Some(10));
    }

    #[test]
    fn a_damaged_frame_ends_the_checked_run() {
        let mut all = frames(1, &[b"one", b"two", b"three", b"four", b"five"]);
        let third = 2 * 16 + 3 + 3;
        all[third + 17] ^= 1;
        let c = check_block(&all, 1, 100).unwrap();
        assert_eq!((c.start, c.seq, c.ends.len()), (0, 1, 2));
    }

    #[test]
    fn a_damaged_first_frame_is_not_taken() {
        let mut all = frames(1, &[b"one", b"two", b"three"]);
        all[17] ^= 1;
        let c = check_block(&all, 1, 100).unwrap();
        assert_eq!((c.start, c.seq, c.ends.len()), (19, 2, 2));
    }

    #[test]
    fn the_consumer_takes_frames_only_where_its_walk_arrives() {
        let all = frames(5, &[b"a", b"b", b"c", b"d"]);
        let mut c = check_block(&all, 5, 100).unwrap();
        // Wrong number at the right place, or a place between frames: nothing.
        assert_eq!(c.clone().take_at(17, 7, 10).count(), 0);
        assert_eq!(c.clone().take_at(20, 6, 10).count(), 0);
        let got: Vec<_> = c.take_at(17, 6, 2).collect();
        assert_eq!(got, vec![(6, 17, 34), (7, 34, 51)]);
        let got: Vec<_> = c.take_at(51, 8, 10).collect();
        assert_eq!(got, vec![(8, 51, 68)]);
        assert_eq!(c.take_at(68, 9, 10).count(), 0);
    }

    #[test]
    fn the_tail_after_a_cut_keeps_the_frames_that_start_in_it() {
        let all = frames(5, &[b"a", b"b", b"c"]);
        let c = check_block(&all, 5, 100).unwrap();
        let t = c.clone().after(17).unwrap();
        assert_eq!(t, Checked { start: 0, seq: 6, ends: vec![17, 34], next: 0 });
        let t = c.clone().after(20).unwrap();
        assert_eq!(t, Checked { start: 14, seq: 7, ends: vec![31], next: 0 });
        assert!(c.after(52).is_none());
    }

    #[test]
    fn the_hint_moves_past_what_was_checked() {
        let all = frames(100, &[b"aaaa", b"bbbb", b"cccc", b"dddd"]);
        let mut h = SeqHint { offset: 0, seq: 100 };
        let c = h.check(&all[..40], 1000).unwrap();
        assert_eq!((c.seq, c.ends.len()), (100, 2));
        assert_eq!((h.offset, h.seq), (1040, 102));
        let c = h.check(&all[40..], 1040).unwrap();
        assert_eq!((c.start, c.seq, c.ends.len()), (0, 102, 2));
    }
}
