//! What the platform daemons share: caches, record helpers, the platform error, and the answer to
//! a params error (params are read with the protocol's one reader, [`Params`]).

use daemonhost_data_client::{Data, DataClientError, Handle, ListParams};
pub(crate) use daemonhost_protocol::params::{ParamError, ParamType, Params};
use daemonhost_runtime::{BoundedCache, CacheStats, DaemonError};
use serde_json::{Map, Value, json};
use std::hash::Hash;
use std::num::NonZeroUsize;

/// Failures at the platform daemons' seams that are not a request's answer: a
/// data error while seeding.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A data-layer failure while seeding (system user, default rooms).
    #[error("{what}: {source}")]
    Data {
        /// What we were doing.
        what: &'static str,
        /// The cause.
        source: DataClientError,
    },
    /// A record came back without a string `id`.
    #[error("{0}: record without an id")]
    NoId(&'static str),
}

/// A capacity of at least one.
pub(crate) fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}

/// A named bounded LRU.
pub(crate) fn cache<K: Hash + Eq, V: Clone>(name: &'static str, n: usize) -> BoundedCache<K, V> {
    BoundedCache::with_name(name, cap(n))
}

/// A cache's counters as JSON for `set_details`.
pub(crate) fn stats_json(s: &CacheStats) -> Value {
    json!({
        "capacity": s.capacity,
        "len": s.len,
        "hits": s.hits,
        "misses": s.misses,
        "evictions": s.evictions,
        "inserts": s.inserts,
    })
}

/// A record's `id`.
pub(crate) fn id_of(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str)
}

/// A record's `version`.
pub(crate) fn version_of(v: &Value) -> Option<i64> {
    v.get("version").and_then(Value::as_i64)
}

/// A JSON object literal as a map (non-objects give an empty map).
pub(crate) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The first record of `collection` whose `uniqueId` is `uid`.
pub(crate) async fn find_by_unique(
    store: &Data,
    collection: &str,
    uid: &str,
) -> Result<Option<Value>, DataClientError> {
    let page = store
        .list(
            &Handle::Primary,
            collection,
            ListParams {
                filter: Some(json!({ "uniqueId": uid })),
                limit: Some(json!(1)),
                ..Default::default()
            },
        )
        .await?;
    Ok(page.items.into_iter().next())
}

/// Whether a data error is a unique-key conflict on `field`.
pub(crate) fn is_unique_conflict(e: &DataClientError, field: &str) -> bool {
    e.is_unique_conflict(field)
}

/// Longest string a client may name anything by (ids, names, unique ids) before we look it up.
pub(crate) const MAX_KEY: usize = 200;

/// The params of a request, or the `bad_request` for params that are not an object.
pub(crate) fn params_of(v: Value) -> Result<Params, DaemonError> {
    Params::new(v).map_err(DaemonError::from)
}

/// The text of a value for an error message, shortened.
pub(crate) fn short(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemonhost_runtime::ErrorCode;

    #[test]
    fn param_errors_keep_the_readers_code_and_message() {
        let p = params_of(json!({"a": 1})).expect("obj");
        let e = p
            .str_max("a", 10)
            .map_err(DaemonError::from)
            .expect_err("type");
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::BadRequest, "a: must be a string")
        );
        let e = p
            .str_max("d", 10)
            .map_err(DaemonError::from)
            .expect_err("missing");
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::Validation, "d: required")
        );
        let e = params_of(json!([1])).expect_err("not an object");
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::BadRequest, "params must be an object")
        );
    }
}
