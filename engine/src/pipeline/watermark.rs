//! The low watermark of finished positions.

use std::collections::BTreeMap;

/// Tracks which positions of one partition have finished, in any order, and the lowest one
/// that has not: every record below [`Watermark::low`] is done, so a checkpoint may store it
/// and a restart replays from it. Positions an input skips (a distributed log's offsets after
/// another process owned the partition, or offsets that hold no record) finish as a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Watermark {
    low: u64,
    /// Finished ranges above `low`, start → end (exclusive), disjoint and not touching (holes
    /// between them are still running).
    ahead: BTreeMap<u64, u64>,
}

impl Watermark {
    /// Starts at `low` (e.g. the checkpoint a reader resumed from).
    pub(crate) fn new(low: u64) -> Self {
        Watermark { low, ahead: BTreeMap::new() }
    }

    /// The lowest unfinished position.
    pub(crate) fn low(&self) -> u64 {
        self.low
    }

    /// Marks `seq` finished; returns whether the watermark moved. Finishing a position below
    /// the watermark, or twice, changes nothing (replays are idempotent).
    pub(crate) fn finish(&mut self, seq: u64) -> bool {
        self.finish_range(seq, seq.saturating_add(1))
    }

    /// Marks every position in `from..to` finished; returns whether the watermark moved.
    pub(crate) fn finish_range(&mut self, from: u64, to: u64) -> bool {
        let (mut from, mut to) = (from.max(self.low), to);
        if from >= to {
            return false;
        }
        // Merge with every range it overlaps or touches.
        if let Some((&s, &e)) = self.ahead.range(..=from).next_back()
            && e >= from
        {
            from = s;
            to = to.max(e);
        }
        let touching: Vec<u64> = self.ahead.range(from..=to).map(|(&s, _)| s).collect();
        for s in touching {
            if let Some(e) = self.ahead.remove(&s) {
                to = to.max(e);
            }
        }
        if from == self.low {
            self.low = to;
            return true;
        }
        self.ahead.insert(from, to);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model: the watermark is the smallest number not finished.
        #[test]
        fn is_the_smallest_unfinished(start in 0u64..5, order in Just((0u64..60).collect::<Vec<_>>()).prop_shuffle(), cut in 0usize..60) {
            let mut w = Watermark::new(start);
            let mut finished = std::collections::BTreeSet::new();
            for &s in order.iter().take(cut) {
                w.finish(s);
                w.finish(s);
                finished.insert(s);
                let want = (start..=start + 61).find(|x| !finished.contains(x)).unwrap_or(u64::MAX);
                prop_assert_eq!(w.low(), want);
            }
        }

        /// Ranges and single positions mixed, against the same model; the ranges kept stay
        /// disjoint and apart.
        #[test]
        fn ranges_finish_like_their_positions(start in 0u64..5, ops in proptest::collection::vec((0u64..80, 0u64..8), 0..40)) {
            let mut w = Watermark::new(start);
            let mut finished = std::collections::BTreeSet::new();
            for (from, len) in ops {
                w.finish_range(from, from + len);
                finished.extend(from..from + len);
                let want = (start..=start + 90).find(|x| !finished.contains(x)).unwrap_or(u64::MAX);
                prop_assert_eq!(w.low(), want);
                let mut last_end = w.low();
                for (&s, &e) in &w.ahead {
                    prop_assert!(s > last_end && e > s, "{:?}", w.ahead);
                    last_end = e;
                }
            }
        }
    }

    #[test]
    fn a_huge_skip_is_one_range() {
        let mut w = Watermark::new(10);
        assert!(!w.finish_range(20, 5_000_000_000));
        assert_eq!(w.ahead.len(), 1);
        assert!(w.finish_range(10, 20));
        assert_eq!(w.low(), 5_000_000_000);
        assert!(w.ahead.is_empty());
    }
}
