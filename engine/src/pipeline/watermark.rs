//! The low watermark of finished sequence numbers.

use std::collections::BTreeSet;

/// Tracks which sequence numbers of one partition have finished, in any order, and the lowest
/// one that has not: every record below [`Watermark::low`] is done, so a checkpoint may store
/// it and a restart replays from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Watermark {
    low: u64,
    /// Finished sequence numbers above `low` (holes below them are still running).
    ahead: BTreeSet<u64>,
}

impl Watermark {
    /// Starts at `low` (e.g. the checkpoint a reader resumed from).
    pub(crate) fn new(low: u64) -> Self {
        Watermark { low, ahead: BTreeSet::new() }
    }

    /// The lowest unfinished sequence number.
    pub(crate) fn low(&self) -> u64 {
        self.low
    }

    /// Marks `seq` finished; returns whether the watermark moved. Finishing a number below the
    /// watermark, or twice, changes nothing (replays are idempotent).
    pub(crate) fn finish(&mut self, seq: u64) -> bool {
        if seq < self.low {
            return false;
        }
        if seq != self.low {
            self.ahead.insert(seq);
            return false;
        }
        self.low += 1;
        while self.ahead.first() == Some(&self.low) {
            self.ahead.pop_first();
            self.low += 1;
        }
        true
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
    }
}
