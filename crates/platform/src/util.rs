//! What the platform daemons share: caches, record helpers, the platform error, and (until the
//! protocol's reader replaces it) request params.

use daemonhost_data_client::{Data, DataClientError, Handle, ListParams};
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

/// Request params as an object, with accessors whose errors name the field.
#[derive(Debug)]
pub(crate) struct Params(Map<String, Value>);

impl Params {
    /// The params of a request (`null` is an empty object).
    pub(crate) fn new(v: Value) -> Result<Self, DaemonError> {
        match v {
            Value::Object(m) => Ok(Params(m)),
            Value::Null => Ok(Params(Map::new())),
            _ => Err(DaemonError::bad_request("params must be an object")),
        }
    }

    /// A raw value (absent and `null` are `None`).
    pub(crate) fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    /// Take a raw value out.
    pub(crate) fn take(&mut self, k: &str) -> Option<Value> {
        self.0.remove(k).filter(|v| !v.is_null())
    }

    /// An optional string; must be non-empty and at most `max` characters.
    pub(crate) fn opt_str(&self, k: &str, max: usize) -> Result<Option<&str>, DaemonError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(DaemonError::validation(format!("{k}: must not be empty")))
            }
            Some(Value::String(s)) if s.chars().count() > max => Err(DaemonError::validation(
                format!("{k}: at most {max} characters"),
            )),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(DaemonError::bad_request(format!("{k}: must be a string"))),
        }
    }

    /// A required string (see [`Params::opt_str`]).
    pub(crate) fn str(&self, k: &str, max: usize) -> Result<&str, DaemonError> {
        self.opt_str(k, max)?
            .ok_or_else(|| DaemonError::bad_request(format!("{k}: required")))
    }

    /// The first of several names for one string param (`type` / `kind`).
    pub(crate) fn opt_str_any(
        &self,
        keys: &[&str],
        max: usize,
    ) -> Result<Option<&str>, DaemonError> {
        for k in keys {
            if let Some(s) = self.opt_str(k, max)? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// An optional non-negative integer.
    pub(crate) fn opt_u64(&self, k: &str) -> Result<Option<u64>, DaemonError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                DaemonError::bad_request(format!("{k}: must be a non-negative integer"))
            }),
        }
    }

    /// A page size: `default` when absent, `validation` above `max` or at 0.
    pub(crate) fn limit(&self, default: usize, max: usize) -> Result<usize, DaemonError> {
        match self.opt_u64("limit")? {
            None => Ok(default),
            Some(0) => Err(DaemonError::validation("limit: must be at least 1")),
            Some(n) if n > max as u64 => Err(DaemonError::validation(format!(
                "limit: at most {max} (got {n})"
            ))),
            Some(n) => Ok(usize::try_from(n).unwrap_or(max)),
        }
    }
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

    #[test]
    fn params_errors_name_the_field() {
        let p = Params::new(json!({"a": 1, "b": "", "c": "xyz", "limit": 900})).expect("obj");
        assert!(p.str("a", 10).expect_err("type").message.contains("a:"));
        assert!(p.str("b", 10).expect_err("empty").message.contains("b:"));
        assert!(p.str("c", 2).expect_err("long").message.contains("c:"));
        assert!(p.str("d", 2).expect_err("missing").message.contains("d:"));
        assert!(p.limit(50, 500).expect_err("max").message.contains("limit"));
        assert_eq!(
            Params::new(Value::Null)
                .expect("null")
                .limit(50, 500)
                .expect("d"),
            50
        );
        assert!(Params::new(json!([1])).is_err());
    }
}
