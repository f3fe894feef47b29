//! An incremental BM25 index over chat messages.
//!
//! Layout (memory-compact, no per-document heap objects):
//! - documents are `u32` slots in insertion order, with parallel arrays for the message id (a
//!   UUID stored as `u128`), the interned room (`u32`), the token count and `created_at`;
//! - a term dictionary `term → u32`, and per term two parallel posting arrays, doc slots
//!   (`u32`, ascending) and term frequencies (`u16`, saturating): 6 bytes per posting;
//! - removal sets a tombstone bit; tombstoned slots are skipped at query time and reclaimed by
//!   [`MessageIndex::compact`], which runs by itself once a quarter of the slots are dead.
//!
//! Scores are exact BM25 over the *live* documents (N, avgdl and df count live documents only;
//! df of a term is recounted from its postings when tombstones exist), identical to
//! [`super::bm25_raw_scores`] over the same texts, and computed term-at-a-time into a dense
//! accumulator (reused between queries) followed by a top-k heap.
//!
//! **Memory bound**: at most `max_docs` live documents. Adding beyond it evicts the oldest
//! documents first, where "oldest" is **insertion order** (feed the bulk load ordered by
//! `created_at`, as the host's `ORDER BY created_at` does; events then arrive in time order).
//! Roughly 70 bytes per document (parallel arrays plus the id map) and 6 bytes per distinct
//! (term, document) pair plus `Vec` growth slack: measured ~230 MB (`search/stats` `approxBytes`)
//! for a million 5–30-word messages over a 50 000-word vocabulary (16 M postings). Terms and rooms
//! that no live document uses are dropped at compaction, which also trims the slack.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use parking_lot::Mutex;
use serde::Serialize;

use super::algorithms::{bm25_idf, bm25_tf_part};
use super::tokenize::{MIN_TOKEN_LEN, for_each_token, lower};

/// Score accumulators kept for reuse (each is 8 bytes per document slot).
const MAX_POOLED_SCRATCH: usize = 4;

/// Configuration of a [`MessageIndex`].
#[derive(Debug, Clone)]
pub struct MessageIndexConfig {
    /// Live documents kept at most; the oldest are evicted beyond it. Default 2 000 000.
    pub max_docs: usize,
    /// BM25 k1 (1.2).
    pub k1: f64,
    /// BM25 b (0.75).
    pub b: f64,
}

impl Default for MessageIndexConfig {
    fn default() -> Self {
        MessageIndexConfig {
            max_docs: 2_000_000,
            k1: 1.2,
            b: 0.75,
        }
    }
}

/// A message to index.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// Message id, a UUID (any version, any case; stored and returned as lowercase hyphenated).
    pub id: &'a str,
    /// Room id (any string).
    pub room_id: &'a str,
    /// Text to index.
    pub text: &'a str,
    /// Creation time, e.g. ms since the epoch; returned with hits and used to break ties.
    pub created_at: i64,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    /// Message id (lowercase hyphenated UUID).
    pub id: String,
    /// Room id.
    pub room_id: String,
    /// Raw BM25 score (not normalised).
    pub score: f64,
    /// As given when indexed.
    pub created_at: i64,
}

/// The id was not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message id '{id}' is not a UUID")]
pub struct InvalidId {
    /// The offending id.
    pub id: String,
}

/// Counters of [`MessageIndex::stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexStats {
    /// Live documents.
    pub docs: usize,
    /// Dead slots not yet reclaimed.
    pub tombstones: usize,
    /// Distinct terms in the dictionary.
    pub terms: usize,
    /// Distinct rooms.
    pub rooms: usize,
    /// Posting entries (including those of dead slots).
    pub postings: usize,
    /// The configured bound.
    pub max_docs: usize,
    /// Documents evicted by the bound since creation.
    pub evicted: u64,
    /// Compactions run since creation.
    pub compactions: u64,
    /// Approximate heap bytes used by the index.
    pub approx_bytes: usize,
}

/// The incremental message index. Mutation takes `&mut self`, search `&self` (so many searches
/// can share a read lock).
#[derive(Debug)]
pub struct MessageIndex {
    cfg: MessageIndexConfig,
    terms: HashMap<Box<str>, u32>,
    term_docs: Vec<Vec<u32>>,
    term_tfs: Vec<Vec<u16>>,
    rooms: HashMap<Box<str>, u32>,
    room_names: Vec<Box<str>>,
    doc_id: Vec<u128>,
    doc_room: Vec<u32>,
    doc_len: Vec<u32>,
    doc_created: Vec<i64>,
    dead: Vec<u64>,
    by_id: HashMap<u128, u32>,
    live: usize,
    total_len: u64,
    tombstones: usize,
    evict_cursor: usize,
    evicted: u64,
    compactions: u64,
    /// Reusable dense score accumulators, one per concurrent query.
    scratch: Mutex<Vec<Vec<f64>>>,
    /// Reusable per-message term buffer.
    term_buf: Vec<(u32, u16)>,
}

impl Default for MessageIndex {
    fn default() -> Self {
        MessageIndex::new(MessageIndexConfig::default())
    }
}

fn parse_id(id: &str) -> Result<u128, InvalidId> {
    uuid::Uuid::try_parse(id)
        .map(|u| u.as_u128())
        .map_err(|_| InvalidId { id: id.to_owned() })
}

fn format_id(id: u128) -> String {
    uuid::Uuid::from_u128(id).hyphenated().to_string()
}

/// A candidate in the top-k heap, ordered best-first: higher score, then newer, then smaller id.
#[derive(Debug, Clone, Copy)]
struct Cand {
    score: f64,
    created: i64,
    id: u128,
    doc: u32,
}

impl Cand {
    fn better(&self, other: &Cand) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.created.cmp(&other.created))
            .then(other.id.cmp(&self.id))
    }
}

/// Heap order: the *worst* candidate on top (a min-heap by quality).
struct Worst(Cand);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.better(&self.0)
    }
}

impl MessageIndex {
    /// An empty index.
    pub fn new(cfg: MessageIndexConfig) -> Self {
        MessageIndex {
            cfg,
            terms: HashMap::new(),
            term_docs: Vec::new(),
            term_tfs: Vec::new(),
            rooms: HashMap::new(),
            room_names: Vec::new(),
            doc_id: Vec::new(),
            doc_room: Vec::new(),
            doc_len: Vec::new(),
            doc_created: Vec::new(),
            dead: Vec::new(),
            by_id: HashMap::new(),
            live: 0,
            total_len: 0,
            tombstones: 0,
            evict_cursor: 0,
            evicted: 0,
            compactions: 0,
            scratch: Mutex::new(Vec::new()),
            term_buf: Vec::new(),
        }
    }

    /// Drop every document (the collection was truncated), releasing the memory; the counters
    /// of evictions and compactions carry on. Returns how many live documents were dropped.
    pub fn clear(&mut self) -> usize {
        let dropped = self.live;
        let mut fresh = MessageIndex::new(self.cfg.clone());
        fresh.evicted = self.evicted;
        fresh.compactions = self.compactions;
        *self = fresh;
        dropped
    }

    /// The configuration.
    pub fn config(&self) -> &MessageIndexConfig {
        &self.cfg
    }

    /// Live documents.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether `n` more documents fit under `max_docs`, so adding them evicts nothing (and so
    /// cannot start a compaction, whose cost depends on the index's size, not on `n`).
    pub fn fits(&self, n: usize) -> bool {
        self.live.saturating_add(n) <= self.cfg.max_docs
    }

    /// No live documents.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Whether a message with this id is indexed.
    pub fn contains(&self, id: &str) -> bool {
        parse_id(id).is_ok_and(|k| self.by_id.contains_key(&k))
    }

    #[inline]
    fn is_dead(&self, doc: u32) -> bool {
        let d = doc as usize;
        self.dead[d / 64] & (1 << (d % 64)) != 0
    }

    fn set_dead(&mut self, doc: u32) {
        let d = doc as usize;
        self.dead[d / 64] |= 1 << (d % 64);
    }

    /// Index a message. An id already present is replaced (this is also `update`).
    pub fn add(
        &mut self,
        id: &str,
        room_id: &str,
        text: &str,
        created_at: i64,
    ) -> Result<(), InvalidId> {
        let key = parse_id(id)?;
        self.insert(key, room_id, text, created_at);
        self.enforce_bound();
        self.maybe_compact();
        Ok(())
    }

    /// Replace the text (and room, time) of a message; same as [`MessageIndex::add`].
    pub fn update(
        &mut self,
        id: &str,
        room_id: &str,
        text: &str,
        created_at: i64,
    ) -> Result<(), InvalidId> {
        self.add(id, room_id, text, created_at)
    }

    /// Index many messages; faster than repeated `add` (eviction and compaction run once at the
    /// end). Every id is validated first: on an invalid id nothing is added.
    pub fn add_many<'a>(&mut self, messages: &[NewMessage<'a>]) -> Result<usize, InvalidId> {
        let keys = messages
            .iter()
            .map(|m| parse_id(m.id))
            .collect::<Result<Vec<_>, _>>()?;
        let extra = messages.len().min(self.cfg.max_docs);
        self.doc_id.reserve(extra);
        self.doc_room.reserve(extra);
        self.doc_len.reserve(extra);
        self.doc_created.reserve(extra);
        self.by_id.reserve(extra);
        for (m, key) in messages.iter().zip(keys) {
            self.insert(key, m.room_id, m.text, m.created_at);
            // Keep memory bounded during huge loads too.
            if self.live
                > self
                    .cfg
                    .max_docs
                    .saturating_add(self.cfg.max_docs / 4 + 1024)
            {
                self.enforce_bound();
                self.maybe_compact();
            }
        }
        self.enforce_bound();
        self.maybe_compact();
        Ok(messages.len())
    }

    /// Remove a message; `false` if it was not indexed (or the id is not a UUID).
    pub fn remove(&mut self, id: &str) -> bool {
        let Ok(key) = parse_id(id) else {
            return false;
        };
        let Some(doc) = self.by_id.remove(&key) else {
            return false;
        };
        self.kill(doc);
        self.maybe_compact();
        true
    }

    fn kill(&mut self, doc: u32) {
        self.set_dead(doc);
        self.live -= 1;
        self.total_len -= u64::from(self.doc_len[doc as usize]);
        self.tombstones += 1;
    }

    fn insert(&mut self, key: u128, room_id: &str, text: &str, created_at: i64) {
        if let Some(old) = self.by_id.remove(&key) {
            self.kill(old);
        }
        let doc = u32::try_from(self.doc_id.len()).unwrap_or(u32::MAX);
        if doc == u32::MAX {
            // 4 billion slots: only reachable with compaction disabled; compact and retry.
            self.compact();
            return self.insert(key, room_id, text, created_at);
        }
        let room = match self.rooms.get(room_id) {
            Some(&r) => r,
            None => {
                let r = self.room_names.len() as u32;
                self.room_names.push(room_id.into());
                self.rooms.insert(room_id.into(), r);
                r
            }
        };
        // Collect (term, tf) for this message.
        let mut buf = std::mem::take(&mut self.term_buf);
        buf.clear();
        let lowered = lower(text, true);
        let mut len: u32 = 0;
        for_each_token(&lowered, MIN_TOKEN_LEN, |t| {
            len = len.saturating_add(1);
            let term = match self.terms.get(t) {
                Some(&id) => id,
                None => {
                    let id = self.term_docs.len() as u32;
                    self.terms.insert(t.into(), id);
                    self.term_docs.push(Vec::new());
                    self.term_tfs.push(Vec::new());
                    id
                }
            };
            buf.push((term, 1));
        });
        buf.sort_unstable_by_key(|&(t, _)| t);
        buf.dedup_by(|next, kept| {
            if next.0 == kept.0 {
                kept.1 = kept.1.saturating_add(1);
                true
            } else {
                false
            }
        });
        for &(term, tf) in &buf {
            self.term_docs[term as usize].push(doc);
            self.term_tfs[term as usize].push(tf);
        }
        self.term_buf = buf;
        self.doc_id.push(key);
        self.doc_room.push(room);
        self.doc_len.push(len);
        self.doc_created.push(created_at);
        if self.dead.len() * 64 < self.doc_id.len() {
            self.dead.push(0);
        }
        self.by_id.insert(key, doc);
        self.live += 1;
        self.total_len += u64::from(len);
    }

    fn enforce_bound(&mut self) {
        while self.live > self.cfg.max_docs && self.evict_cursor < self.doc_id.len() {
            let doc = self.evict_cursor as u32;
            self.evict_cursor += 1;
            if !self.is_dead(doc) {
                self.by_id.remove(&self.doc_id[doc as usize]);
                self.kill(doc);
                self.evicted += 1;
            }
        }
    }

    fn maybe_compact(&mut self) {
        if self.tombstones >= 1024 && self.tombstones * 4 >= self.doc_id.len() {
            self.compact();
        }
    }

    /// Reclaim tombstoned slots, and drop terms and rooms no live document uses.
    pub fn compact(&mut self) {
        if self.tombstones == 0 {
            return;
        }
        let n = self.doc_id.len();
        let mut remap = vec![u32::MAX; n];
        let mut next = 0u32;
        for (doc, slot) in remap.iter_mut().enumerate() {
            if !self.is_dead(doc as u32) {
                *slot = next;
                next += 1;
            }
        }
        fn keep<T>(v: &mut Vec<T>, remap: &[u32]) {
            let mut i = 0;
            v.retain(|_| {
                let k = remap[i] != u32::MAX;
                i += 1;
                k
            });
            v.shrink_to_fit();
        }
        keep(&mut self.doc_id, &remap);
        keep(&mut self.doc_len, &remap);
        keep(&mut self.doc_created, &remap);
        // Rooms: remap to those still used.
        let mut room_remap = vec![u32::MAX; self.room_names.len()];
        let mut new_room_names: Vec<Box<str>> = Vec::new();
        let mut new_rooms = Vec::with_capacity(next as usize);
        for (doc, &r) in self.doc_room.iter().enumerate() {
            if remap[doc] == u32::MAX {
                continue;
            }
            let slot = &mut room_remap[r as usize];
            if *slot == u32::MAX {
                *slot = new_room_names.len() as u32;
                new_room_names.push(std::mem::take(&mut self.room_names[r as usize]));
            }
            new_rooms.push(*slot);
        }
        self.doc_room = new_rooms;
        self.rooms = new_room_names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i as u32))
            .collect();
        self.room_names = new_room_names;
        // Postings: drop dead slots, then drop empty terms and renumber the rest.
        let old_terms = std::mem::take(&mut self.terms);
        let mut old_docs = std::mem::take(&mut self.term_docs);
        let mut old_tfs = std::mem::take(&mut self.term_tfs);
        for (name, old_id) in old_terms {
            let docs = std::mem::take(&mut old_docs[old_id as usize]);
            let tfs = std::mem::take(&mut old_tfs[old_id as usize]);
            let mut nd = Vec::with_capacity(docs.len());
            let mut nt = Vec::with_capacity(docs.len());
            for (d, tf) in docs.into_iter().zip(tfs) {
                let m = remap[d as usize];
                if m != u32::MAX {
                    nd.push(m);
                    nt.push(tf);
                }
            }
            if !nd.is_empty() {
                nd.shrink_to_fit();
                nt.shrink_to_fit();
                let id = self.term_docs.len() as u32;
                self.term_docs.push(nd);
                self.term_tfs.push(nt);
                self.terms.insert(name, id);
            }
        }
        self.by_id = self
            .doc_id
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, i as u32))
            .collect();
        self.dead = vec![0; self.doc_id.len().div_ceil(64)];
        self.tombstones = 0;
        self.evict_cursor = 0;
        self.compactions += 1;
        self.scratch.lock().clear();
    }

    /// BM25 search over live documents (optionally only those of `room_id`), best `limit` hits,
    /// best first (ties: newer first, then smaller id). IDF and avgdl are over the whole index
    /// even with a room filter.
    pub fn search(&self, query: &str, room_id: Option<&str>, limit: usize) -> Vec<Hit> {
        self.search_counted(query, room_id, limit).0
    }

    /// Like [`MessageIndex::search`], also returning how many documents matched.
    pub fn search_counted(
        &self,
        query: &str,
        room_id: Option<&str>,
        limit: usize,
    ) -> (Vec<Hit>, usize) {
        if limit == 0 || self.live == 0 {
            return (Vec::new(), 0);
        }
        let room = match room_id {
            Some(r) => match self.rooms.get(r) {
                Some(&id) => Some(id),
                None => return (Vec::new(), 0),
            },
            None => None,
        };
        let lowered = lower(query, true);
        let mut qterms: Vec<u32> = Vec::new();
        for_each_token(&lowered, MIN_TOKEN_LEN, |t| {
            if let Some(&id) = self.terms.get(t) {
                qterms.push(id);
            }
        });
        if qterms.is_empty() {
            return (Vec::new(), 0);
        }
        let n = self.live;
        let avg = self.total_len as f64 / n as f64;
        let (k1, b) = (self.cfg.k1, self.cfg.b);
        let slots = self.doc_id.len();
        let mut acc = self.scratch.lock().pop().unwrap_or_default();
        if acc.len() < slots {
            acc.resize(slots, 0.0);
        }
        let mut touched: Vec<u32> = Vec::new();
        let mut idf_cache: Vec<(u32, f64)> = Vec::new();
        for &t in &qterms {
            let docs = &self.term_docs[t as usize];
            let tfs = &self.term_tfs[t as usize];
            let idf = match idf_cache.iter().find(|(id, _)| *id == t) {
                Some(&(_, idf)) => idf,
                None => {
                    let df = if self.tombstones == 0 {
                        docs.len()
                    } else {
                        docs.iter().filter(|&&d| !self.is_dead(d)).count()
                    };
                    let idf = bm25_idf(n, df);
                    idf_cache.push((t, idf));
                    idf
                }
            };
            for (&d, &tf) in docs.iter().zip(tfs) {
                if self.tombstones != 0 && self.is_dead(d) {
                    continue;
                }
                if let Some(r) = room
                    && self.doc_room[d as usize] != r
                {
                    continue;
                }
                let len = f64::from(self.doc_len[d as usize]);
                let contrib = idf * bm25_tf_part(f64::from(tf), len, avg, k1, b);
                let slot = &mut acc[d as usize];
                if *slot == 0.0 {
                    touched.push(d);
                }
                *slot += contrib;
            }
        }
        let matched = touched.len();
        let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(limit.min(matched) + 1);
        for &d in &touched {
            let slot = &mut acc[d as usize];
            let c = Cand {
                score: *slot,
                created: self.doc_created[d as usize],
                id: self.doc_id[d as usize],
                doc: d,
            };
            *slot = 0.0;
            if heap.len() < limit {
                heap.push(Worst(c));
            } else if let Some(worst) = heap.peek()
                && c.better(&worst.0) == Ordering::Greater
            {
                heap.pop();
                heap.push(Worst(c));
            }
        }
        let mut pool = self.scratch.lock();
        if pool.len() < MAX_POOLED_SCRATCH {
            pool.push(acc);
        }
        drop(pool);
        let mut best: Vec<Cand> = heap.into_iter().map(|w| w.0).collect();
        best.sort_by(|a, b| b.better(a));
        let hits = best
            .into_iter()
            .map(|c| Hit {
                id: format_id(c.id),
                room_id: self.room_names[self.doc_room[c.doc as usize] as usize].to_string(),
                score: c.score,
                created_at: c.created,
            })
            .collect();
        (hits, matched)
    }

    /// Counters and an approximate memory figure.
    pub fn stats(&self) -> IndexStats {
        let postings: usize = self.term_docs.iter().map(Vec::len).sum();
        let posting_cap: usize = self
            .term_docs
            .iter()
            .zip(&self.term_tfs)
            .map(|(d, t)| d.capacity() * 4 + t.capacity() * 2 + 48)
            .sum();
        let dict: usize = self.terms.keys().map(|k| k.len() + 16 + 4 + 8).sum();
        let rooms: usize = self.room_names.iter().map(|r| 2 * (r.len() + 16) + 8).sum();
        let docs = self.doc_id.capacity() * 16
            + self.doc_room.capacity() * 4
            + self.doc_len.capacity() * 4
            + self.doc_created.capacity() * 8
            + self.dead.capacity() * 8
            + self.by_id.capacity() * (16 + 4 + 12);
        let scratch: usize = self.scratch.lock().iter().map(|v| v.capacity() * 8).sum();
        IndexStats {
            docs: self.live,
            tombstones: self.tombstones,
            terms: self.terms.len(),
            rooms: self.rooms.len(),
            postings,
            max_docs: self.cfg.max_docs,
            evicted: self.evicted,
            compactions: self.compactions,
            approx_bytes: posting_cap + dict + rooms + docs + scratch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::algorithms::bm25_raw_scores;
    use proptest::prelude::*;

    fn uid(i: u32) -> String {
        format_id(0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(i))
    }

    #[test]
    fn add_search_room_filter_and_remove() {
        let mut ix = MessageIndex::default();
        ix.add(&uid(1), "r1", "Rust async runtime", 10)
            .expect("add");
        ix.add(&uid(2), "r2", "rust rust memory safety", 20)
            .expect("add");
        ix.add(&uid(3), "r1", "python async", 30).expect("add");
        let hits = ix.search("rust", None, 10);
        assert_eq!(
            hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
            [uid(2), uid(1)]
        );
        let hits = ix.search("rust async", Some("r1"), 10);
        assert_eq!(
            hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
            [uid(1), uid(3)]
        );
        assert!(hits.iter().all(|h| h.room_id == "r1"));
        assert!(ix.search("rust", Some("nope"), 10).is_empty());
        assert!(ix.search("zzz", None, 10).is_empty());
        assert!(ix.remove(&uid(1)));
        assert!(!ix.remove(&uid(1)));
        assert!(!ix.remove("not-a-uuid"));
        let hits = ix.search("rust async", Some("r1"), 10);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, uid(3));
        assert_eq!(ix.len(), 2);
        // Update replaces the text.
        ix.update(&uid(3), "r1", "now about gardening", 31)
            .expect("update");
        assert!(ix.search("python", None, 10).is_empty());
        assert_eq!(ix.search("gardening", None, 10)[0].created_at, 31);
        assert_eq!(ix.len(), 2);
        assert_eq!(
            ix.add("xyz", "r", "t", 0),
            Err(InvalidId { id: "xyz".into() })
        );
        // Upper-case ids are accepted and returned lowercase.
        ix.add(&uid(9).to_uppercase(), "r", "kiwi", 1).expect("add");
        assert_eq!(ix.search("kiwi", None, 1)[0].id, uid(9));
    }

    #[test]
    fn limit_and_ties_prefer_newer() {
        let mut ix = MessageIndex::default();
        for i in 0..10 {
            ix.add(&uid(i), "r", "same words here", i64::from(i))
                .expect("add");
        }
        let hits = ix.search("words", None, 3);
        assert_eq!(
            hits.iter().map(|h| h.created_at).collect::<Vec<_>>(),
            [9, 8, 7]
        );
        assert!(ix.search("words", None, 0).is_empty());
    }

    #[test]
    fn eviction_keeps_the_newest_and_bounds_memory() {
        let mut ix = MessageIndex::new(MessageIndexConfig {
            max_docs: 100,
            ..Default::default()
        });
        let texts: Vec<String> = (0..5000).map(|i| format!("msg{i} common")).collect();
        let ids: Vec<String> = (0..5000).map(uid).collect();
        let batch: Vec<NewMessage<'_>> = (0..5000)
            .map(|i| NewMessage {
                id: &ids[i],
                room_id: "r",
                text: &texts[i],
                created_at: i as i64,
            })
            .collect();
        assert!(
            ix.fits(100) && !ix.fits(101),
            "an empty index of 100 takes 100"
        );
        ix.add_many(&batch[..2500]).expect("add");
        assert!(!ix.fits(1), "a full index evicts on every add");
        for m in &batch[2500..] {
            ix.add(m.id, m.room_id, m.text, m.created_at).expect("add");
        }
        let st = ix.stats();
        assert_eq!(st.docs, 100);
        assert_eq!(st.evicted, 4900);
        assert!(st.compactions > 0);
        assert!(st.terms <= 100 + 1 + st.tombstones, "{st:?}");
        assert!(ix.contains(&uid(4999)) && !ix.contains(&uid(4899)));
        assert_eq!(ix.search("msg10", None, 5), vec![]);
        assert_eq!(ix.search("msg4950", None, 5)[0].id, uid(4950));
        assert_eq!(ix.search("common", None, 1000).len(), 100);
    }

    /// Brute-force reference: scores of the live docs, ranked the same way.
    fn brute(
        docs: &[(u32, String, String, i64)],
        query: &str,
        room: Option<&str>,
        limit: usize,
    ) -> Vec<(String, f64)> {
        let corpus: Vec<&str> = docs.iter().map(|d| d.2.as_str()).collect();
        let scores = bm25_raw_scores(query, &corpus, 1.2, 0.75, true);
        let mut c: Vec<(f64, i64, u128, usize)> = docs
            .iter()
            .enumerate()
            .filter(|(i, d)| scores[*i] > 0.0 && room.is_none_or(|r| d.1 == r))
            .map(|(i, d)| (scores[i], d.3, parse_id(&uid(d.0)).expect("id"), i))
            .collect();
        c.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        c.truncate(limit);
        c.into_iter()
            .map(|(s, _, id, _)| (format_id(id), s))
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u32, u8, Vec<u8>, i64),
        Remove(u32),
        Compact,
    }

    const WORDS: [&str; 6] = ["aa", "bb", "cc", "dd", "ee", "x"];

    fn text_of(words: &[u8]) -> String {
        words
            .iter()
            .map(|&w| WORDS[w as usize % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u32..24, 0u8..3, prop::collection::vec(0u8..6, 0..8), 0i64..5)
                .prop_map(|(i, r, w, t)| Op::Add(i, r, w, t)),
            2 => (0u32..24).prop_map(Op::Remove),
            1 => Just(Op::Compact),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn index_equals_brute_force(
            ops in prop::collection::vec(op(), 1..60),
            query in prop::collection::vec(0u8..6, 1..4),
            room in prop::option::of(0u8..3),
            limit in 1usize..10,
        ) {
            let mut ix = MessageIndex::default();
            // Reference: live docs in insertion order (a replaced id moves to the end).
            let mut live: Vec<(u32, String, String, i64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Add(i, r, w, t) => {
                        let text = text_of(&w);
                        let room = format!("room{r}");
                        ix.add(&uid(i), &room, &text, t).expect("add");
                        live.retain(|d| d.0 != i);
                        live.push((i, room, text, t));
                    }
                    Op::Remove(i) => {
                        let had = live.iter().any(|d| d.0 == i);
                        prop_assert_eq!(ix.remove(&uid(i)), had);
                        live.retain(|d| d.0 != i);
                    }
                    Op::Compact => ix.compact(),
                }
            }
            let q = text_of(&query);
            let room = room.map(|r| format!("room{r}"));
            let got: Vec<(String, f64)> = ix
                .search(&q, room.as_deref(), limit)
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect();
            let want = brute(&live, &q, room.as_deref(), limit);
            prop_assert_eq!(got, want);
            prop_assert_eq!(ix.len(), live.len());
        }
    }
}
