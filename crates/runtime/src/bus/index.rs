//! The subscription index: a trie keyed by pattern segments.
//!
//! Publishing walks the trie along the topic's segments, following the literal child and the `*` child at
//! each level and collecting the "rest" subscribers (trailing `*`) it passes. The cost is proportional to
//! the topic depth plus the number of matches, and does not grow with subscribers that do not match —
//! the original system's broadcast-then-filter did the opposite.
//!
//! Nodes are created on subscribe and pruned as soon as they hold nothing, so after every subscription
//! is gone the index is back to its lone root.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::pattern::{Pattern, Segment};
use super::queue::SubShared;

/// Hasher for subscription ids (already unique `u64`s): one multiply spreads them over the table.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SubSet = HashMap<u64, Arc<SubShared>, BuildHasherDefault<IdHasher>>;

/// One trie node.
#[derive(Debug, Default)]
struct Node {
    /// Children for literal segments.
    literals: HashMap<Box<str>, Node>,
    /// Child for a one-segment `*`.
    star: Option<Box<Node>>,
    /// Subscribers whose pattern ends exactly here.
    exact: SubSet,
    /// Subscribers whose pattern continues with a trailing `*` (one or more further segments).
    rest: SubSet,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.star.is_none()
            && self.exact.is_empty()
            && self.rest.is_empty()
    }

    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        1 + self.literals.values().map(Node::count_nodes).sum::<usize>()
            + self.star.as_ref().map_or(0, |s| s.count_nodes())
    }

    fn insert(&mut self, segs: &[Segment], rest: bool, sub: &Arc<SubShared>, created: &mut usize) {
        let Some((first, tail)) = segs.split_first() else {
            let set = if rest {
                &mut self.rest
            } else {
                &mut self.exact
            };
            set.insert(sub.id(), Arc::clone(sub));
            return;
        };
        match first {
            Segment::Literal(lit) => self
                .literal_child(lit, created)
                .insert(tail, rest, sub, created),
            Segment::AnyOf(alts) => {
                for alt in alts {
                    self.literal_child(alt, created)
                        .insert(tail, rest, sub, created);
                }
            }
            Segment::Star => self
                .star
                .get_or_insert_with(|| {
                    *created += 1;
                    Box::default()
                })
                .insert(tail, rest, sub, created),
        }
    }

    fn literal_child(&mut self, lit: &str, created: &mut usize) -> &mut Node {
        self.literals.entry(lit.into()).or_insert_with(|| {
            *created += 1;
            Node::default()
        })
    }

    /// Removes `id` along the pattern's paths, pruning children left empty. Returns whether it was found.
    fn remove(&mut self, segs: &[Segment], rest: bool, id: u64, pruned: &mut usize) -> bool {
        let Some((first, tail)) = segs.split_first() else {
            let set = if rest {
                &mut self.rest
            } else {
                &mut self.exact
            };
            let found = set.remove(&id).is_some();
            if set.is_empty() {
                // Give the table's memory back, not just its entries.
                *set = SubSet::default();
            }
            return found;
        };
        let mut found = false;
        match first {
            Segment::Literal(lit) => found |= self.remove_literal(lit, tail, rest, id, pruned),
            Segment::AnyOf(alts) => {
                for alt in alts {
                    found |= self.remove_literal(alt, tail, rest, id, pruned);
                }
            }
            Segment::Star => {
                if let Some(star) = self.star.as_mut() {
                    found = star.remove(tail, rest, id, pruned);
                    if star.is_empty() {
                        self.star = None;
                        *pruned += 1;
                    }
                }
            }
        }
        found
    }

    fn remove_literal(
        &mut self,
        lit: &str,
        tail: &[Segment],
        rest: bool,
        id: u64,
        pruned: &mut usize,
    ) -> bool {
        let Some(child) = self.literals.get_mut(lit) else {
            return false;
        };
        let found = child.remove(tail, rest, id, pruned);
        if child.is_empty() {
            self.literals.remove(lit);
            *pruned += 1;
            if self.literals.is_empty() {
                self.literals = HashMap::new();
            }
        }
        found
    }

    /// Calls `f` for every subscriber matching the remaining topic. `topic` is `None` once every segment
    /// has been consumed.
    fn walk(&self, topic: Option<&str>, f: &mut impl FnMut(&Arc<SubShared>)) {
        let Some(remaining) = topic else {
            self.exact.values().for_each(&mut *f);
            return;
        };
        // At least one segment remains: every trailing-`*` subscriber here matches.
        self.rest.values().for_each(&mut *f);
        let (seg, tail) = match remaining.split_once(':') {
            Some((seg, tail)) => (seg, Some(tail)),
            None => (remaining, None),
        };
        if let Some(child) = self.literals.get(seg) {
            child.walk(tail, f);
        }
        if let Some(star) = &self.star {
            star.walk(tail, f);
        }
    }

    fn drain_into(&mut self, out: &mut Vec<Arc<SubShared>>) {
        out.extend(self.exact.drain().map(|(_, s)| s));
        out.extend(self.rest.drain().map(|(_, s)| s));
        for (_, mut child) in self.literals.drain() {
            child.drain_into(out);
        }
        if let Some(mut star) = self.star.take() {
            star.drain_into(out);
        }
    }
}

/// The trie plus its bookkeeping. Lives behind the bus's `RwLock`.
#[derive(Debug)]
pub(crate) struct Index {
    root: Node,
    /// Nodes in the trie, root included.
    nodes: usize,
    /// Live subscriptions (not index entries: a brace pattern has several entries).
    subscriptions: usize,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            root: Node::default(),
            nodes: 1,
            subscriptions: 0,
        }
    }
}

impl Index {
    pub(crate) fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    pub(crate) fn nodes(&self) -> usize {
        self.nodes
    }

    /// Counts nodes by traversal (tests check it against the maintained counter).
    #[cfg(test)]
    pub(crate) fn count_nodes_slow(&self) -> usize {
        self.root.count_nodes()
    }

    pub(crate) fn insert(&mut self, pattern: &Pattern, sub: &Arc<SubShared>) {
        let mut created = 0;
        self.root
            .insert(pattern.segments(), pattern.rest(), sub, &mut created);
        self.nodes += created;
        self.subscriptions += 1;
    }

    /// Removes a subscription; a no-op if it is not there (e.g. after `close`).
    pub(crate) fn remove(&mut self, pattern: &Pattern, id: u64) -> bool {
        let mut pruned = 0;
        let found = self
            .root
            .remove(pattern.segments(), pattern.rest(), id, &mut pruned);
        self.nodes -= pruned;
        if found {
            self.subscriptions -= 1;
        }
        found
    }

    /// Calls `f` once for every subscriber whose pattern matches `topic` (a validated topic).
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(&Arc<SubShared>)) {
        self.root.walk(Some(topic), &mut f);
    }

    /// Empties the index, handing back every subscriber (each once).
    pub(crate) fn take_all(&mut self) -> Vec<Arc<SubShared>> {
        let mut out = Vec::with_capacity(self.subscriptions);
        self.root.drain_into(&mut out);
        // A brace pattern sits under several nodes.
        out.sort_unstable_by_key(|s| s.id());
        out.dedup_by_key(|s| s.id());
        *self = Self::default();
        out
    }
}
