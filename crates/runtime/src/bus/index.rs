//! The subscription index: a trie keyed by pattern segments.
//!
//! Publishing walks the trie along the topic's segments, following the literal child and the `*` child at
//! each level and collecting the "rest" subscribers (trailing `*`) it passes. The cost is proportional to
//! the topic depth plus the number of matches, and does not grow with subscribers that do not match —
//! the original system's broadcast-then-filter did the opposite.
//!
//! Nodes are created on subscribe and pruned as soon as they hold nothing, so after every subscription
//! is gone the index is back to its lone root.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
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

/// A map that is a plain vector while small and a hash map once it holds more than [`SPILL`] entries.
///
/// Most trie nodes have one or two children and one or two subscribers; a vector keeps those cheap to
/// create, scan and free, while the hash map keeps a node with thousands of children (or subscribers) at
/// O(1) per lookup, so publish cost stays independent of non-matching subscriptions.
#[derive(Debug)]
enum SmallMap<K, V, S> {
    Few(Vec<(K, V)>),
    Many(HashMap<K, V, S>),
}

/// Entries above which a [`SmallMap`] becomes a hash map.
const SPILL: usize = 8;
/// Entries at or below which a spilled [`SmallMap`] goes back to a vector (hysteresis avoids flapping).
const UNSPILL: usize = 2;

impl<K, V, S> Default for SmallMap<K, V, S> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> SmallMap<K, V, S> {
    fn is_empty(&self) -> bool {
        match self {
            Self::Few(v) => v.is_empty(),
            Self::Many(m) => m.is_empty(),
        }
    }

    fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        match self {
            Self::Few(v) => v.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            Self::Many(m) => m.get(key),
        }
    }

    fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match self {
            Self::Few(v) => v
                .iter_mut()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            Self::Many(m) => m.get_mut(key),
        }
    }

    /// Inserts a key the caller knows is absent.
    fn insert_new(&mut self, key: K, value: V) {
        match self {
            Self::Few(v) if v.len() < SPILL => v.push((key, value)),
            Self::Few(v) => {
                let mut m: HashMap<K, V, S> =
                    HashMap::with_capacity_and_hasher(SPILL * 2, S::default());
                m.extend(v.drain(..));
                m.insert(key, value);
                *self = Self::Many(m);
            }
            Self::Many(m) => {
                m.insert(key, value);
            }
        }
    }

    fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match self {
            Self::Few(v) => {
                let i = v.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, value) = v.swap_remove(i);
                if v.is_empty() {
                    // Give the allocation back, not just the entry.
                    *v = Vec::new();
                }
                Some(value)
            }
            Self::Many(m) => {
                let value = m.remove(key)?;
                if m.len() <= UNSPILL {
                    *self = Self::Few(m.drain().collect());
                }
                Some(value)
            }
        }
    }

    fn for_each_value(&self, mut f: impl FnMut(&V)) {
        match self {
            Self::Few(v) => v.iter().for_each(|(_, x)| f(x)),
            Self::Many(m) => m.values().for_each(f),
        }
    }

    #[cfg(test)]
    fn values_sum(&self, f: impl Fn(&V) -> usize) -> usize {
        let mut n = 0;
        self.for_each_value(|v| n += f(v));
        n
    }

    fn take_values(&mut self) -> Vec<V> {
        match std::mem::take(self) {
            Self::Few(v) => v.into_iter().map(|(_, x)| x).collect(),
            Self::Many(m) => m.into_values().collect(),
        }
    }
}

type SubSet = SmallMap<u64, Arc<SubShared>, BuildHasherDefault<IdHasher>>;

/// One trie node.
#[derive(Debug, Default)]
struct Node {
    /// Children for literal segments.
    literals: SmallMap<Box<str>, Node, RandomState>,
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
        1 + self.literals.values_sum(Node::count_nodes)
            + self.star.as_ref().map_or(0, |s| s.count_nodes())
    }

    fn insert(
        &mut self,
        raw: &str,
        segs: &[Segment],
        rest: bool,
        sub: &Arc<SubShared>,
        created: &mut usize,
    ) {
        let Some((first, tail)) = segs.split_first() else {
            let set = if rest {
                &mut self.rest
            } else {
                &mut self.exact
            };
            set.insert_new(sub.id(), Arc::clone(sub));
            return;
        };
        match first {
            Segment::Literal(lit) => {
                self.insert_literal(lit.of(raw), raw, tail, rest, sub, created)
            }
            Segment::AnyOf(alts) => {
                for alt in alts {
                    self.insert_literal(alt.of(raw), raw, tail, rest, sub, created);
                }
            }
            Segment::Star => self
                .star
                .get_or_insert_with(|| {
                    *created += 1;
                    Box::default()
                })
                .insert(raw, tail, rest, sub, created),
        }
    }

    fn insert_literal(
        &mut self,
        lit: &str,
        raw: &str,
        tail: &[Segment],
        rest: bool,
        sub: &Arc<SubShared>,
        created: &mut usize,
    ) {
        // Look up first so an existing child costs no key allocation.
        if let Some(child) = self.literals.get_mut(lit) {
            child.insert(raw, tail, rest, sub, created);
            return;
        }
        let mut child = Node::default();
        *created += 1;
        child.insert(raw, tail, rest, sub, created);
        self.literals.insert_new(lit.into(), child);
    }

    /// Removes `id` along the pattern's paths, pruning children left empty. Returns whether it was found.
    fn remove(
        &mut self,
        raw: &str,
        segs: &[Segment],
        rest: bool,
        id: u64,
        pruned: &mut usize,
    ) -> bool {
        let Some((first, tail)) = segs.split_first() else {
            let set = if rest {
                &mut self.rest
            } else {
                &mut self.exact
            };
            return set.remove(&id).is_some();
        };
        let mut found = false;
        match first {
            Segment::Literal(lit) => {
                found |= self.remove_literal(lit.of(raw), raw, tail, rest, id, pruned)
            }
            Segment::AnyOf(alts) => {
                for alt in alts {
                    found |= self.remove_literal(alt.of(raw), raw, tail, rest, id, pruned);
                }
            }
            Segment::Star => {
                if let Some(star) = self.star.as_mut() {
                    found = star.remove(raw, tail, rest, id, pruned);
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
        raw: &str,
        tail: &[Segment],
        rest: bool,
        id: u64,
        pruned: &mut usize,
    ) -> bool {
        let Some(child) = self.literals.get_mut(lit) else {
            return false;
        };
        let found = child.remove(raw, tail, rest, id, pruned);
        if child.is_empty() {
            self.literals.remove(lit);
            *pruned += 1;
        }
        found
    }

    /// Calls `f` for every subscriber matching the remaining topic. `topic` is `None` once every segment
    /// has been consumed.
    fn walk(&self, topic: Option<&str>, f: &mut impl FnMut(&Arc<SubShared>)) {
        let Some(remaining) = topic else {
            self.exact.for_each_value(&mut *f);
            return;
        };
        // At least one segment remains: every trailing-`*` subscriber here matches.
        self.rest.for_each_value(&mut *f);
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
        out.extend(self.exact.take_values());
        out.extend(self.rest.take_values());
        for mut child in self.literals.take_values() {
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
        self.root.insert(
            pattern.raw(),
            pattern.segments(),
            pattern.rest(),
            sub,
            &mut created,
        );
        self.nodes += created;
        self.subscriptions += 1;
    }

    /// Removes a subscription; a no-op if it is not there (e.g. after `close`).
    pub(crate) fn remove(&mut self, pattern: &Pattern, id: u64) -> bool {
        let mut pruned = 0;
        let found = self.root.remove(
            pattern.raw(),
            pattern.segments(),
            pattern.rest(),
            id,
            &mut pruned,
        );
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
