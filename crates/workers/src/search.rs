//! The search service: the original's stateless algorithms (`search/execute`, `search/vector`,
//! `search/list`, `search/params`) plus an incremental BM25 index over chat messages
//! (`search/messages`, `search/index-add`, `search/index-remove`, `search/index-clear`,
//! `search/stats`).
//!
//! The index is fed by the host: a bulk load from the `primary` database in deferred init (in
//! chunks of `search/index-add`), then one `search/index-add` / `search/index-remove` per
//! `data:chat_messages:*` event, `search/index-clear` when the collection is truncated. The
//! worker holds no database handle. A restarted worker starts
//! empty; `search/stats` (`docs`) tells the host to reload.
//!
//! Scoring is CPU work: anything beyond a small input runs on `spawn_blocking`, never on the
//! async workers, with at most one such job per core at a time (a semaphore; the rest wait
//! asynchronously). The index sits behind a `parking_lot::RwLock`: searches share it, adds take it
//! briefly (a chunk of a bulk load at a time).

mod algorithms;
mod index;
mod tokenize;

use std::sync::Arc;

use daemonhost_protocol::params::{ParamError, ParamType, Params};
use daemonhost_protocol::{ErrorBody, ErrorCode};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

pub use algorithms::{
    Algorithm, AlgorithmParams, STOP_WORDS, SearchOutput, bm25, bm25_idf, bm25_raw_scores, bow,
    cosine_text, cosine_vectors, execute,
};
pub use index::{Hit, IndexStats, InvalidId, MessageIndex, MessageIndexConfig, NewMessage};
pub use tokenize::{MIN_TOKEN_LEN, tokenize, tokenize_with};

use crate::service::{ServiceCommand, WorkerService, unknown_command, validation};

/// Inputs smaller than this (bytes of text) are scored inline; larger ones on `spawn_blocking`.
const INLINE_BYTES: usize = 16 * 1024;
/// Messages `search/index-add` inserts on the calling task at most (with fewer than
/// [`INLINE_BYTES`] of text, and only while they fit without eviction); more go to a blocking
/// thread. Inserting tokenises every message, so many short messages cost as much as a few
/// long ones, and an add to a full index evicts and may compact all of it: in the host's
/// fallback (10,000 documents, full after the first pages of a load) such adds held the search
/// daemon's task for up to 26 ms.
const INLINE_MAX_MESSAGES: usize = 64;
/// Default and maximum `limit` of `search/messages`.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest `limit` accepted by `search/messages` (larger values are clamped).
pub const MAX_LIMIT: usize = 1000;

/// Configuration of a [`SearchService`].
#[derive(Debug, Clone, Default)]
pub struct SearchConfig {
    /// The message index's configuration.
    pub index: MessageIndexConfig,
}

/// The search service (see the module docs).
#[derive(Debug, Clone)]
pub struct SearchService {
    index: Arc<RwLock<MessageIndex>>,
    cpu: Arc<Semaphore>,
}

impl Default for SearchService {
    fn default() -> Self {
        SearchService::new(SearchConfig::default())
    }
}

const COMMANDS: &[ServiceCommand] = &[
    ServiceCommand::new(
        "search/execute",
        "stateless text search {algorithm?: bm25|bow|cosine, query, corpus[], params?} -> {algorithm, scores[], rankedIndices[]}",
        true,
    ),
    ServiceCommand::new(
        "search/vector",
        "cosine similarity of vectors {queryVector[], corpusVectors[][], normalize?, threshold?} -> {algorithm, scores[], rankedIndices[]}",
        true,
    ),
    ServiceCommand::new("search/list", "list the algorithms -> {algorithms[]}", true),
    ServiceCommand::new(
        "search/params",
        "an algorithm's parameters {algorithm} -> {algorithm, params[], values{}}",
        true,
    ),
    ServiceCommand::new(
        "search/messages",
        "BM25 over indexed chat messages {query, roomId?, limit?} -> {hits[{id, roomId, score, createdAt}], matched}",
        true,
    ),
    ServiceCommand::new(
        "search/index-add",
        "index (or replace) messages {messages[{id, roomId, text, createdAt?}]} -> {added, docs}",
        true,
    ),
    ServiceCommand::new(
        "search/index-remove",
        "remove messages from the index {ids[]} -> {removed, docs}",
        true,
    ),
    ServiceCommand::new(
        "search/index-clear",
        "drop every indexed message (chat_messages was truncated) {} -> {removed, docs}",
        true,
    ),
    ServiceCommand::new(
        "search/stats",
        "index counters -> {docs, tombstones, terms, ...}",
        true,
    ),
];

async fn blocking<T: Send + 'static>(
    permits: &Semaphore,
    inline: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorBody> {
    if inline {
        return Ok(f());
    }
    // At most one CPU-heavy job per core; the others wait here, off every thread.
    let _permit = permits
        .acquire()
        .await
        .map_err(|_| ErrorBody::new(ErrorCode::ShuttingDown, "the search service is stopping"))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("search task failed: {e}")))
}

fn output_json(algorithm: &str, out: SearchOutput) -> Value {
    json!({
        "algorithm": algorithm,
        "scores": out.scores,
        "rankedIndices": out.ranked_indices,
    })
}

/// An array of numbers named `what`; a wrong element is named by index (`what[3]`).
fn f64_vec(v: &[Value], what: &str) -> Result<Vec<f64>, ParamError> {
    v.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .ok_or_else(|| ParamError::wrong_type(format!("{what}[{i}]"), ParamType::Number))
        })
        .collect()
}

/// The algorithm a request names (`algorithm`).
fn algorithm_of(name: &str) -> Result<Algorithm, ParamError> {
    Algorithm::parse(name).ok_or_else(|| {
        ParamError::invalid(
            "algorithm",
            format!(
                "unknown algorithm '{}' (known: bow, bm25, cosine)",
                name.chars().take(32).collect::<String>()
            ),
        )
    })
}

impl SearchService {
    /// A service with an empty index.
    pub fn new(config: SearchConfig) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        SearchService {
            index: Arc::new(RwLock::new(MessageIndex::new(config.index))),
            cpu: Arc::new(Semaphore::new(cores)),
        }
    }

    /// The shared index (for a host that feeds it in-process).
    pub fn index(&self) -> &Arc<RwLock<MessageIndex>> {
        &self.index
    }

    async fn execute(&self, params: Value) -> Result<Value, ErrorBody> {
        let mut m = Params::new(params)?;
        let algorithm = algorithm_of(m.opt_str("algorithm")?.unwrap_or("bm25"))?;
        let query = m.string("query")?;
        let corpus = m
            .array("corpus")?
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                _ => Err(ParamError::wrong_type(
                    format!("corpus[{i}]"),
                    ParamType::String,
                )),
            })
            .collect::<Result<Vec<String>, _>>()?;
        let mut p = AlgorithmParams::default();
        if let Some(o) = m.opt_object("params")? {
            p.apply(algorithm, &o).map_err(|e| e.within("params"))?;
        }
        let size: usize = query.len() + corpus.iter().map(String::len).sum::<usize>();
        let out = blocking(&self.cpu, size < INLINE_BYTES, move || {
            execute(algorithm, &query, &corpus, &p)
        })
        .await?;
        Ok(output_json(algorithm.name(), out))
    }

    async fn vector(&self, params: Value) -> Result<Value, ErrorBody> {
        let mut m = Params::new(params)?;
        let q = f64_vec(&m.array("queryVector")?, "queryVector")?;
        let corpus = m
            .array("corpusVectors")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let at = format!("corpusVectors[{i}]");
                match v {
                    Value::Array(a) => f64_vec(a, &at),
                    _ => Err(ParamError::wrong_type(at, ParamType::Array)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let normalize = m.opt_bool("normalize")?.unwrap_or(true);
        let threshold = m.opt_f64("threshold")?.unwrap_or(0.0);
        let size = q.len() * (corpus.len() + 1) * 8;
        let out = blocking(&self.cpu, size < INLINE_BYTES, move || {
            cosine_vectors(&q, &corpus, normalize, threshold)
        })
        .await?;
        Ok(output_json("cosine", out))
    }

    fn params(&self, params: Value) -> Result<Value, ErrorBody> {
        let algorithm = algorithm_of(Params::new(params)?.str("algorithm")?)?;
        Ok(json!({
            "algorithm": algorithm.name(),
            "params": algorithm.param_names(),
            "values": AlgorithmParams::default().values(algorithm),
        }))
    }

    async fn messages(&self, params: Value) -> Result<Value, ErrorBody> {
        let mut m = Params::new(params)?;
        let query = m.string("query")?;
        let room = m.opt_string("roomId")?;
        let limit = m
            .opt_u64("limit")?
            .map_or(DEFAULT_LIMIT, |l| usize::try_from(l).unwrap_or(MAX_LIMIT))
            .min(MAX_LIMIT);
        let index = Arc::clone(&self.index);
        let inline = index.read().len() < 2048;
        let (hits, matched) = blocking(&self.cpu, inline, move || {
            index.read().search_counted(&query, room.as_deref(), limit)
        })
        .await?;
        Ok(json!({ "hits": hits, "matched": matched }))
    }

    async fn index_add(&self, params: Value) -> Result<Value, ErrorBody> {
        let list = Params::new(params)?.array("messages")?;
        let mut owned: Vec<(String, String, String, i64)> = Vec::with_capacity(list.len());
        for (i, v) in list.into_iter().enumerate() {
            let at = || format!("messages[{i}]");
            let Value::Object(o) = v else {
                return Err(ParamError::wrong_type(at(), ParamType::Object).into());
            };
            let mut o = Params::from(o);
            let mut read = || -> Result<_, ParamError> {
                Ok((
                    o.string("id")?,
                    o.string("roomId")?,
                    o.string("text")?,
                    o.opt_i64("createdAt")?.unwrap_or(0),
                ))
            };
            owned.push(read().map_err(|e| e.within(&at()))?);
        }
        let size: usize = owned.iter().map(|m| m.2.len()).sum();
        let index = Arc::clone(&self.index);
        // A full index evicts on every add and compacts now and then, which costs as much as
        // the index is large: never inline then.
        let inline = size < INLINE_BYTES
            && owned.len() <= INLINE_MAX_MESSAGES
            && self.index.read().fits(owned.len());
        let result = blocking(&self.cpu, inline, move || {
            let batch: Vec<NewMessage<'_>> = owned
                .iter()
                .map(|(id, room, text, created)| NewMessage {
                    id,
                    room_id: room,
                    text,
                    created_at: *created,
                })
                .collect();
            let mut ix = index.write();
            ix.add_many(&batch).map(|added| (added, ix.len()))
        })
        .await?;
        let (added, docs) = result.map_err(|e| validation(e.to_string()))?;
        Ok(json!({ "added": added, "docs": docs }))
    }

    fn index_remove(&self, params: Value) -> Result<Value, ErrorBody> {
        let ids = Params::new(params)?.array("ids")?;
        let ids = ids
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .ok_or_else(|| ParamError::wrong_type(format!("ids[{i}]"), ParamType::String))
            })
            .collect::<Result<Vec<&str>, _>>()?;
        let mut ix = self.index.write();
        let removed = ids.iter().filter(|id| ix.remove(id)).count();
        Ok(json!({ "removed": removed, "docs": ix.len() }))
    }

    fn stats(&self) -> Value {
        serde_json::to_value(self.index.read().stats()).unwrap_or(Value::Null)
    }
}

impl WorkerService for SearchService {
    fn kind(&self) -> &'static str {
        "search"
    }

    fn commands(&self) -> Vec<ServiceCommand> {
        COMMANDS.to_vec()
    }

    async fn handle(&self, command: &str, params: Value) -> Result<Value, ErrorBody> {
        match command {
            "search/execute" => self.execute(params).await,
            "search/vector" => self.vector(params).await,
            "search/list" => Ok(json!({
                "algorithms": Algorithm::ALL.iter().map(|a| a.name()).collect::<Vec<_>>()
            })),
            "search/params" => self.params(params),
            "search/messages" => self.messages(params).await,
            "search/index-add" => self.index_add(params).await,
            "search/index-remove" => self.index_remove(params),
            "search/index-clear" => {
                Params::new(params)?;
                let mut ix = self.index.write();
                let removed = ix.clear();
                Ok(json!({ "removed": removed, "docs": ix.len() }))
            }
            "search/stats" => Ok(self.stats()),
            other => Err(unknown_command("search", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(i: u32) -> String {
        format!("01900000-0000-7000-8000-{i:012x}")
    }

    #[tokio::test]
    async fn execute_result_shape_matches_the_original() {
        let s = SearchService::default();
        let r = s
            .handle(
                "search/execute",
                json!({"algorithm": "bm25", "query": "genome register", "corpus": [
                    "Use genome/paging-register with personaId",
                    "The weather is nice today",
                    "Register genome adapters for personas"
                ]}),
            )
            .await
            .expect("ok");
        assert_eq!(r["algorithm"], "bm25");
        assert_eq!(r["scores"].as_array().expect("scores").len(), 3);
        assert_eq!(r["scores"][1], 0.0);
        assert_eq!(r["rankedIndices"][2], 1);
        // Default algorithm is bm25; params override.
        let r = s
            .handle(
                "search/execute",
                json!({"query": "a", "corpus": [], "params": {"k1": 2.0}}),
            )
            .await
            .expect("ok");
        assert_eq!(
            r,
            json!({"algorithm": "bm25", "scores": [], "rankedIndices": []})
        );
        let e = s
            .handle(
                "search/execute",
                json!({"algorithm": "tfidf", "query": "a", "corpus": []}),
            )
            .await
            .expect_err("unknown");
        assert_eq!(e.code, ErrorCode::Validation);
        let e = s
            .handle("search/execute", json!({"query": "a", "corpus": [1]}))
            .await
            .expect_err("bad");
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = s
            .handle("search/execute", json!({"corpus": []}))
            .await
            .expect_err("bad");
        assert_eq!(e.code, ErrorCode::Validation);
    }

    /// The worker answers what every daemon answers (the protocol's one params reader).
    #[tokio::test]
    async fn params_errors_follow_the_protocol_contract() {
        let s = SearchService::default();
        let cases = [
            (
                "search/execute",
                json!({"corpus": ["a"]}),
                ErrorCode::Validation,
                "query: required",
            ),
            (
                "search/execute",
                json!({"query": 1, "corpus": ["a"]}),
                ErrorCode::BadRequest,
                "query: must be a string",
            ),
            (
                "search/execute",
                json!({"query": "a", "corpus": ["a", 2]}),
                ErrorCode::BadRequest,
                "corpus[1]: must be a string",
            ),
            (
                "search/execute",
                json!({"query": "a", "corpus": [], "params": {"k1": "x"}}),
                ErrorCode::BadRequest,
                "params.k1: must be a number",
            ),
            (
                "search/execute",
                json!({"query": "a", "corpus": [], "params": {"min_term_length": 3}}),
                ErrorCode::Validation,
                "params.min_term_length: unknown parameter for bm25 (known: k1, b, case_insensitive)",
            ),
            (
                "search/execute",
                json!({"algorithm": "tfidf", "query": "a", "corpus": []}),
                ErrorCode::Validation,
                "algorithm: unknown algorithm 'tfidf' (known: bow, bm25, cosine)",
            ),
            (
                "search/params",
                json!({}),
                ErrorCode::Validation,
                "algorithm: required",
            ),
            (
                "search/messages",
                Value::Null,
                ErrorCode::Validation,
                "query: required",
            ),
            (
                "search/messages",
                json!({"query": "a", "limit": "5"}),
                ErrorCode::BadRequest,
                "limit: must be a non-negative integer",
            ),
            (
                "search/vector",
                json!({"corpusVectors": []}),
                ErrorCode::Validation,
                "queryVector: required",
            ),
            (
                "search/vector",
                json!({"queryVector": [1.0], "corpusVectors": [[1.0], [true]]}),
                ErrorCode::BadRequest,
                "corpusVectors[1][0]: must be a number",
            ),
            (
                "search/vector",
                json!({"queryVector": [1.0], "corpusVectors": [], "normalize": 1}),
                ErrorCode::BadRequest,
                "normalize: must be a boolean",
            ),
            (
                "search/index-add",
                json!({"messages": [{"id": uid(1), "roomId": "r", "text": 5}]}),
                ErrorCode::BadRequest,
                "messages[0].text: must be a string",
            ),
            (
                "search/index-remove",
                json!({}),
                ErrorCode::Validation,
                "ids: required",
            ),
            (
                "search/index-remove",
                json!({"ids": ["a", 1]}),
                ErrorCode::BadRequest,
                "ids[1]: must be a string",
            ),
            (
                "search/messages",
                json!("hello"),
                ErrorCode::BadRequest,
                "params must be an object",
            ),
        ];
        for (command, params, code, message) in cases {
            let e = s
                .handle(command, params.clone())
                .await
                .expect_err("refused");
            assert_eq!(
                (e.code, e.message.as_str()),
                (code, message),
                "{command} {params}"
            );
        }
    }

    #[tokio::test]
    async fn list_params_and_vector_commands_answer_and_unknown_ones_are_refused() {
        let s = SearchService::default();
        assert_eq!(
            s.handle("search/list", json!({})).await.expect("ok"),
            json!({"algorithms": ["bow", "bm25", "cosine"]})
        );
        assert_eq!(
            s.handle("search/params", json!({"algorithm": "bm25"}))
                .await
                .expect("ok"),
            json!({"algorithm": "bm25", "params": ["k1", "b", "case_insensitive"],
                   "values": {"k1": 1.2, "b": 0.75, "case_insensitive": true}})
        );
        let r = s
            .handle(
                "search/vector",
                json!({"queryVector": [1.0, 0.0], "corpusVectors": [[0.0, 1.0], [2.0, 0.0]]}),
            )
            .await
            .expect("ok");
        assert_eq!(r["rankedIndices"], json!([1, 0]));
        assert_eq!(
            s.handle("search/nope", json!({}))
                .await
                .expect_err("unknown")
                .code,
            ErrorCode::UnknownCommand
        );
    }

    #[tokio::test]
    async fn index_add_remove_and_clear_keep_exact_counts_and_refuse_bad_messages() {
        let s = SearchService::default();
        let r = s
            .handle(
                "search/index-add",
                json!({"messages": [
                    {"id": uid(1), "roomId": "r1", "text": "hello rust world", "createdAt": 5},
                    {"id": uid(2), "roomId": "r2", "text": "hello python", "createdAt": 6},
                ]}),
            )
            .await
            .expect("ok");
        assert_eq!(r, json!({"added": 2, "docs": 2}));
        let r = s
            .handle("search/messages", json!({"query": "hello", "roomId": "r1"}))
            .await
            .expect("ok");
        assert_eq!(r["matched"], 1);
        assert_eq!(r["hits"][0]["id"], uid(1));
        assert_eq!(r["hits"][0]["roomId"], "r1");
        assert_eq!(r["hits"][0]["createdAt"], 5);
        assert!(r["hits"][0]["score"].as_f64().expect("score") > 0.0);
        let r = s
            .handle("search/index-remove", json!({"ids": [uid(1), uid(3)]}))
            .await
            .expect("ok");
        assert_eq!(r, json!({"removed": 1, "docs": 1}));
        let st = s.handle("search/stats", json!({})).await.expect("ok");
        assert_eq!(st["docs"], 1);
        assert_eq!(st["tombstones"], 1);
        let e = s
            .handle(
                "search/index-add",
                json!({"messages": [{"id": "x", "roomId": "r", "text": "t"}]}),
            )
            .await
            .expect_err("bad id");
        assert_eq!(e.code, ErrorCode::Validation);
        let e = s
            .handle(
                "search/index-add",
                json!({"messages": [{"id": uid(1), "text": "t"}]}),
            )
            .await
            .expect_err("no room");
        assert_eq!(e.code, ErrorCode::Validation);
        assert_eq!(e.message, "messages[0].roomId: required");
        // Clearing (a truncated collection) drops every document, tombstones included.
        let r = s.handle("search/index-clear", json!({})).await.expect("ok");
        assert_eq!(r, json!({"removed": 1, "docs": 0}));
        let st = s.handle("search/stats", json!({})).await.expect("ok");
        assert_eq!(
            (st["docs"].clone(), st["tombstones"].clone()),
            (json!(0), json!(0))
        );
        assert_eq!(st["terms"], 0);
        let r = s
            .handle("search/messages", json!({"query": "hello"}))
            .await
            .expect("ok");
        assert_eq!(r["matched"], 0);
        let e = s
            .handle("search/index-clear", json!([]))
            .await
            .expect_err("not an object");
        assert_eq!(e.code, ErrorCode::BadRequest);
    }
}
