//! A bounded, thread-safe LRU cache with counters.
//!
//! Why: the original system's biggest leak was a set of unbounded `Map` caches. Every daemon
//! cache goes through [`BoundedCache`]: a hard capacity, least-recently-used eviction, and
//! [`CacheStats`] (hits, misses, evictions) exported as metrics so a cache that thrashes or sits
//! at capacity is visible. Values are returned by clone: keep them cheap (`Arc<T>` for big ones)
//! so the lock is held only for the map operation.

use std::borrow::Cow;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::Mutex;
use serde::Serialize;

/// A snapshot of a cache's size and counters (counters are cumulative since creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// The name given at construction (`"unnamed"` by default).
    pub name: Cow<'static, str>,
    /// Maximum number of entries.
    pub capacity: usize,
    /// Current number of entries.
    pub len: usize,
    /// Lookups that found a value (`get`, `get_or_insert_with`).
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries pushed out because the cache was full.
    pub evictions: u64,
    /// Values stored (new keys and replacements).
    pub inserts: u64,
}

struct State<K: Hash + Eq, V> {
    lru: LruCache<K, V>,
    hits: u64,
    misses: u64,
    evictions: u64,
    inserts: u64,
}

impl<K: Hash + Eq, V> State<K, V> {
    /// Stores `v`, counting an eviction if the LRU entry was pushed out; returns the value
    /// previously stored under `k`.
    fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.inserts += 1;
        let existed = self.lru.contains(&k);
        match self.lru.push(k, v) {
            Some((_, old)) if existed => Some(old),
            Some(_evicted) => {
                self.evictions += 1;
                None
            }
            None => None,
        }
    }
}

/// A capacity-bounded LRU cache behind a mutex. See the [module docs](self).
pub struct BoundedCache<K: Hash + Eq, V: Clone> {
    name: Cow<'static, str>,
    state: Mutex<State<K, V>>,
}

impl<K: Hash + Eq, V: Clone> fmt::Debug for BoundedCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    /// An unnamed cache holding at most `capacity` entries.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self::with_name("unnamed", capacity)
    }

    /// A cache named `name` (reported in [`CacheStats`]) holding at most `capacity` entries.
    pub fn with_name(name: impl Into<Cow<'static, str>>, capacity: NonZeroUsize) -> Self {
        Self {
            name: name.into(),
            state: Mutex::new(State {
                lru: LruCache::new(capacity),
                hits: 0,
                misses: 0,
                evictions: 0,
                inserts: 0,
            }),
        }
    }

    /// The value for `k` (cloned), marking it most recently used. Counts a hit or a miss.
    pub fn get(&self, k: &K) -> Option<V> {
        let mut s = self.state.lock();
        match s.lru.get(k).cloned() {
            Some(v) => {
                s.hits += 1;
                Some(v)
            }
            None => {
                s.misses += 1;
                None
            }
        }
    }

    /// Stores `v` under `k` as most recently used; returns the previous value for `k`. If the
    /// cache was full and `k` was new, the least recently used entry is evicted (counted).
    pub fn insert(&self, k: K, v: V) -> Option<V> {
        self.state.lock().insert(k, v)
    }

    /// Removes `k`, returning its value.
    pub fn remove(&self, k: &K) -> Option<V> {
        self.state.lock().lru.pop(k)
    }

    /// Whether `k` is cached. Does not change recency or counters.
    pub fn contains(&self, k: &K) -> bool {
        self.state.lock().lru.contains(k)
    }

    /// The cached value for `k` (a hit), or `make()` stored and returned (a miss).
    ///
    /// `make` runs **without** the lock held (it may be slow or touch this cache). If another
    /// caller stored `k` meanwhile, that value wins and is returned; `make`'s result is dropped.
    pub fn get_or_insert_with<F>(&self, k: K, make: F) -> V
    where
        F: FnOnce() -> V,
    {
        if let Some(v) = self.get(&k) {
            return v;
        }
        let v = make();
        let mut s = self.state.lock();
        if let Some(existing) = s.lru.get(&k) {
            return existing.clone();
        }
        s.insert(k, v.clone());
        v
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.state.lock().lru.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.state.lock().lru.cap().get()
    }

    /// Removes every entry (counters are kept).
    pub fn clear(&self) {
        self.state.lock().lru.clear();
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A snapshot of size and counters.
    pub fn stats(&self) -> CacheStats {
        let s = self.state.lock();
        CacheStats {
            name: self.name.clone(),
            capacity: s.lru.cap().get(),
            len: s.lru.len(),
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
            inserts: s.inserts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cap(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("non-zero")
    }

    /// Keys from most to least recently used.
    fn order<K: Hash + Eq + Clone, V: Clone>(c: &BoundedCache<K, V>) -> Vec<K> {
        c.state.lock().lru.iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn exact_lru_order_and_counters() {
        let c = BoundedCache::with_name("t", cap(3));
        assert_eq!(c.insert("a", 1), None);
        assert_eq!(c.insert("b", 2), None);
        assert_eq!(c.insert("c", 3), None);
        assert_eq!(order(&c), vec!["c", "b", "a"]);
        assert_eq!(c.get(&"a"), Some(1)); // promotes a
        assert_eq!(order(&c), vec!["a", "c", "b"]);
        assert!(c.contains(&"b")); // no promotion
        assert_eq!(order(&c), vec!["a", "c", "b"]);
        assert_eq!(c.insert("d", 4), None); // evicts b
        assert_eq!(order(&c), vec!["d", "a", "c"]);
        assert!(!c.contains(&"b"));
        assert_eq!(c.get(&"b"), None);
        assert_eq!(c.insert("c", 30), Some(3)); // replacement, not eviction
        assert_eq!(order(&c), vec!["c", "d", "a"]);
        assert_eq!(c.remove(&"d"), Some(4));
        assert_eq!(c.remove(&"d"), None);
        assert_eq!(c.get_or_insert_with("a", || 99), 1);
        assert_eq!(c.get_or_insert_with("e", || 5), 5);
        assert_eq!(order(&c), vec!["e", "a", "c"]);
        assert_eq!(
            c.stats(),
            CacheStats {
                name: "t".into(),
                capacity: 3,
                len: 3,
                hits: 2,
                misses: 2,
                evictions: 1,
                inserts: 6,
            }
        );
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.capacity(), 3);
        assert_eq!(c.stats().hits, 2);
        let json = serde_json::to_value(c.stats()).expect("serialize");
        assert_eq!(json["name"], "t");
        assert_eq!(json["evictions"], 1);
    }

    #[test]
    fn get_or_insert_with_may_touch_the_cache() {
        let c = BoundedCache::new(cap(2));
        let v = c.get_or_insert_with(1, || {
            c.insert(2, 20);
            10
        });
        assert_eq!(v, 10);
        assert_eq!(c.len(), 2);
        assert_eq!(c.name(), "unnamed");
        // A value stored meanwhile under the same key wins.
        let v = c.get_or_insert_with(3, || {
            c.insert(3, 300);
            30
        });
        assert_eq!(v, 300);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Get(u8),
        Insert(u8, u16),
        Remove(u8),
        Contains(u8),
        GetOrInsert(u8, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = 0u8..12;
        prop_oneof![
            k.clone().prop_map(Op::Get),
            (k.clone(), any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
            k.clone().prop_map(Op::Remove),
            k.clone().prop_map(Op::Contains),
            (k, any::<u16>()).prop_map(|(k, v)| Op::GetOrInsert(k, v)),
        ]
    }

    /// Reference model: a Vec ordered from least to most recently used.
    struct Model {
        cap: usize,
        items: Vec<(u8, u16)>,
        evictions: u64,
    }

    impl Model {
        fn pos(&self, k: u8) -> Option<usize> {
            self.items.iter().position(|(x, _)| *x == k)
        }
        fn touch(&mut self, i: usize) -> u16 {
            let e = self.items.remove(i);
            self.items.push(e);
            e.1
        }
        fn get(&mut self, k: u8) -> Option<u16> {
            self.pos(k).map(|i| self.touch(i))
        }
        fn insert(&mut self, k: u8, v: u16) -> Option<u16> {
            if let Some(i) = self.pos(k) {
                let old = self.items.remove(i).1;
                self.items.push((k, v));
                return Some(old);
            }
            if self.items.len() == self.cap {
                self.items.remove(0);
                self.evictions += 1;
            }
            self.items.push((k, v));
            None
        }
    }

    proptest! {
        #[test]
        fn matches_reference_lru(capacity in 1usize..6, ops in proptest::collection::vec(op(), 0..200)) {
            let c = BoundedCache::new(cap(capacity));
            let mut m = Model { cap: capacity, items: Vec::new(), evictions: 0 };
            for op in ops {
                match op {
                    Op::Get(k) => prop_assert_eq!(c.get(&k), m.get(k)),
                    Op::Insert(k, v) => prop_assert_eq!(c.insert(k, v), m.insert(k, v)),
                    Op::Remove(k) => {
                        let expected = m.pos(k).map(|i| m.items.remove(i).1);
                        prop_assert_eq!(c.remove(&k), expected);
                    }
                    Op::Contains(k) => prop_assert_eq!(c.contains(&k), m.pos(k).is_some()),
                    Op::GetOrInsert(k, v) => {
                        let expected = match m.get(k) {
                            Some(existing) => existing,
                            None => { m.insert(k, v); v }
                        };
                        prop_assert_eq!(c.get_or_insert_with(k, || v), expected);
                    }
                }
                prop_assert!(c.len() <= capacity);
                let mut mru: Vec<u8> = m.items.iter().map(|(k, _)| *k).collect();
                mru.reverse();
                prop_assert_eq!(order(&c), mru);
                prop_assert_eq!(c.stats().evictions, m.evictions);
            }
        }
    }
}
