//! A frozen, path-compressed byte trie (radix tree) mapping prefixes to the rules that end there.
//!
//! Built once, then stored as flat arrays so a lookup touches a few cache lines: each node has
//! an edge label (a slice of `labels`), the rules whose prefix ends at the node, and children
//! sorted by the first byte of their label; nodes with several children also get a 256-entry
//! table indexed by that byte. Walking a key visits only the nodes whose path is a
//! prefix of the key, so the cost is bounded by the key length and independent of how many
//! rules the configuration has.

use std::collections::BTreeMap;
use std::ops::Range;

/// One frozen node; ranges index the trie's flat arrays.
#[derive(Debug, Clone, Default)]
struct Node {
    label: Range<u32>,
    rules: Range<u32>,
    children: Range<u32>,
    /// Where this node's 256-entry child table starts in `dense` (nodes with at least
    /// [`DENSE_MIN`] children), else [`NO_TABLE`].
    table: u32,
}

/// Nodes with this many children (and fewer than 256) get a byte-indexed child table: one load
/// instead of a scan whose data-dependent exit the branch predictor misses (measured in
/// `benches/rules.rs`). An entry is the child's position in the node's child list plus one, so
/// a table is 256 bytes and the tables of a 1,000-rule configuration stay in L1/L2 cache.
const DENSE_MIN: usize = 4;
const NO_TABLE: u32 = u32::MAX;

/// The frozen trie.
#[derive(Debug, Clone)]
pub(crate) struct PrefixTrie {
    nodes: Vec<Node>,
    labels: Vec<u8>,
    /// First byte of each node's label, parallel to `nodes` (a node's children are
    /// consecutive, so their bytes are too).
    child_bytes: Vec<u8>,
    /// Byte-indexed child tables: entry `b` is the position of the child reached by byte `b`
    /// in the node's child list, plus one (0: none).
    dense: Vec<u8>,
    rules: Vec<u32>,
}

/// An uncompressed node used while building.
#[derive(Default)]
struct BuildNode {
    children: BTreeMap<u8, usize>,
    rules: Vec<u32>,
}

fn idx(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

impl PrefixTrie {
    /// Builds the trie from `(prefix, rule)` pairs; the rules at a node keep the given order.
    pub(crate) fn build<'a>(entries: impl IntoIterator<Item = (&'a [u8], u32)>) -> Self {
        let mut build = vec![BuildNode::default()];
        for (prefix, rule) in entries {
            let mut at = 0;
            for &b in prefix {
                let next = build.len();
                let child = match build.get_mut(at) {
                    Some(node) => *node.children.entry(b).or_insert(next),
                    None => break,
                };
                if child == next {
                    build.push(BuildNode::default());
                }
                at = child;
            }
            if let Some(node) = build.get_mut(at) {
                node.rules.push(rule);
            }
        }
        let mut trie = PrefixTrie {
            nodes: Vec::new(),
            labels: Vec::new(),
            child_bytes: Vec::new(),
            dense: Vec::new(),
            rules: Vec::new(),
        };
        trie.nodes.push(Node::default());
        trie.child_bytes.push(0);
        trie.freeze(0, &build, 0, &[]);
        trie
    }

    /// Fills the already allocated node `me` from build node `at` reached through `label`.
    ///
    /// A chain of build nodes with one child and no rules collapses into one edge label. A
    /// node's children get consecutive ids (allocated together before any of them is filled),
    /// so a child is found as `first child + position` without another lookup.
    fn freeze(&mut self, me: usize, build: &[BuildNode], at: usize, label: &[u8]) {
        let mut label = label.to_vec();
        let mut at = at;
        // Collapse: follow single-child, rule-less nodes (never the root).
        while !label.is_empty() {
            let Some(node) = build.get(at) else { break };
            if !node.rules.is_empty() || node.children.len() != 1 {
                break;
            }
            let Some((&b, &child)) = node.children.iter().next() else { break };
            label.push(b);
            at = child;
        }
        let label_start = idx(self.labels.len());
        self.labels.extend_from_slice(&label);
        let label_end = idx(self.labels.len());
        let rules_start = idx(self.rules.len());
        let (rules, children): (&[u32], Vec<(u8, usize)>) = match build.get(at) {
            Some(n) => (&n.rules, n.children.iter().map(|(b, c)| (*b, *c)).collect()),
            None => (&[], Vec::new()),
        };
        self.rules.extend_from_slice(rules);
        let rules_end = idx(self.rules.len());
        let first = self.nodes.len();
        self.nodes.resize(first + children.len(), Node::default());
        self.child_bytes.extend(children.iter().map(|&(b, _)| b));
        let table = if (DENSE_MIN..256).contains(&children.len()) {
            let at = self.dense.len();
            self.dense.resize(at + 256, 0);
            for (pos, &(b, _)) in children.iter().enumerate() {
                if let (Some(slot), Ok(pos)) =
                    (self.dense.get_mut(at + usize::from(b)), u8::try_from(pos + 1))
                {
                    *slot = pos;
                }
            }
            idx(at)
        } else {
            NO_TABLE
        };
        if let Some(node) = self.nodes.get_mut(me) {
            *node = Node {
                label: label_start..label_end,
                rules: rules_start..rules_end,
                children: idx(first)..idx(first + children.len()),
                table,
            };
        }
        for (i, (b, child)) in children.into_iter().enumerate() {
            self.freeze(first + i, build, child, &[b]);
        }
    }

    /// Calls `visit` with the rules of every node whose path is a prefix of `key`, shortest
    /// prefix first.
    #[inline]
    pub(crate) fn for_each_prefix_of(&self, key: &[u8], mut visit: impl FnMut(&[u32])) {
        let Some(mut node) = self.nodes.first() else { return };
        let mut rest = key;
        loop {
            if node.rules.start != node.rules.end
                && let Some(rules) = self.rules.get(range(&node.rules))
            {
                visit(rules);
            }
            let Some(&b) = rest.first() else { return };
            let children = range(&node.children);
            let pos = if node.table == NO_TABLE {
                let Some(bytes) = self.child_bytes.get(children.clone()) else { return };
                if bytes.len() <= 32 {
                    bytes.iter().position(|&c| c == b)
                } else {
                    bytes.binary_search(&b).ok()
                }
            } else {
                // Positions are stored plus one, so 0 means "no child for this byte".
                let at = node.table as usize + usize::from(b);
                self.dense.get(at).and_then(|&p| usize::from(p).checked_sub(1))
            };
            let Some(child) = pos.and_then(|p| self.nodes.get(children.start + p)) else { return };
            // The label's first byte is `b` (that is how the child was found), and most labels
            // are that one byte: only longer ones are compared.
            let len = (child.label.end - child.label.start) as usize;
            if len > 1 {
                let label =
                    self.labels.get(child.label.start as usize + 1..child.label.end as usize);
                if label.is_none() || label != rest.get(1..len) {
                    return;
                }
            }
            let Some(after) = rest.get(len..) else { return };
            rest = after;
            node = child;
        }
    }

    /// Number of frozen nodes (for tests and sizing reports).
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(trie: &PrefixTrie, key: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        trie.for_each_prefix_of(key, |rules| out.extend_from_slice(rules));
        out
    }

    #[test]
    fn finds_every_prefix_in_order() {
        let entries: Vec<(&[u8], u32)> =
            vec![(b"", 0), (b"a", 1), (b"abc", 2), (b"abd", 3), (b"b", 4), (b"abc", 5)];
        let trie = PrefixTrie::build(entries);
        assert_eq!(collect(&trie, b"abcz"), vec![0, 1, 2, 5]);
        assert_eq!(collect(&trie, b"ab"), vec![0, 1]);
        assert_eq!(collect(&trie, b"abd"), vec![0, 1, 3]);
        assert_eq!(collect(&trie, b"c"), vec![0]);
        assert_eq!(collect(&trie, b""), vec![0]);
        assert_eq!(collect(&trie, b"B"), vec![0], "case-sensitive");
    }

    #[test]
    fn every_fan_out_finds_its_children() {
        // 3 children (scanned), 4 and 255 (table), 256 (binary search: no room for "none").
        for fan_out in [3usize, 4, 255, 256] {
            let prefixes: Vec<Vec<u8>> = (0..fan_out)
                .map(|b| vec![u8::try_from(b).unwrap(), b'/'])
                .chain(std::iter::once(Vec::new()))
                .collect();
            let trie =
                PrefixTrie::build(prefixes.iter().enumerate().map(|(i, p)| (&p[..], idx(i))));
            for b in 0..=255u8 {
                let key = [b, b'/', b'x'];
                let want: Vec<u32> = prefixes
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| key.starts_with(p))
                    .map(|(i, _)| idx(i))
                    .collect();
                let mut got = collect(&trie, &key);
                got.sort_unstable();
                assert_eq!(got, want, "fan-out {fan_out}, byte {b}");
            }
        }
    }

    #[test]
    fn compresses_chains() {
        let long = vec![b'x'; 1024];
        let trie = PrefixTrie::build([(&long[..], 7u32)]);
        assert_eq!(trie.node_count(), 2);
        assert_eq!(collect(&trie, &[b'x'; 2000]), vec![7]);
        assert!(collect(&trie, &[b'x'; 1023]).is_empty());
    }

    proptest! {
        #[test]
        // Six symbols: nodes with fewer than four children (scanned) and with more (table).
        fn agrees_with_starts_with(
            prefixes in proptest::collection::vec(proptest::collection::vec(0u8..6, 0..6), 0..60),
            key in proptest::collection::vec(0u8..6, 0..8),
        ) {
            let trie = PrefixTrie::build(prefixes.iter().enumerate().map(|(i, p)| (&p[..], idx(i))));
            let mut got = collect(&trie, &key);
            got.sort_unstable();
            let want: Vec<u32> = prefixes.iter().enumerate().filter(|(_, p)| key.starts_with(p)).map(|(i, _)| idx(i)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
