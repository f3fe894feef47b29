//! The chat platform: users, rooms and membership, chat, training, governance and the console,
//! as daemons on top of the data daemon.
//!
//! # The graph
//!
//! The seed's "commands" and "events" daemons are the runtime itself: the [`Router`] routes every
//! command (what the seed's CommandDaemon did) and the [`EventBus`] carries every event (the
//! seed's EventsDaemon; the `events` system daemon serves `events/*` for clients). Both exist
//! before any daemon starts, so nothing here depends on them by name.
//!
//! ```text
//! data ─┬─ user ─┬─ room ─┬─ room-membership
//!       │        │        └─ chat (also requires user)
//!       ├─ training
//!       └─ governance
//! logger ── console          (registered only when PlatformConfig::console is set)
//! ```
//!
//! | Daemon | Requires | Events | Serves |
//! |---|---|---|---|
//! | `user` | data | `data:users:created`, `:updated`, `:deleted` | `user/create`, `get`, `list`, `update`, `state` |
//! | `room` | data, user | `data:rooms:updated`, `:deleted` | `room/create`, `get`, `list`, `join`, `leave`, `members`, `check` |
//! | `room-membership` | data, room | `data:users:created` | `room-membership/status` |
//! | `chat` | data, room, user | — | `chat/send`, `history` |
//! | `training` | data | `data:chat_messages:created` (only when rooms are configured) | `training/status` |
//! | `governance` | data | — | `decision/propose`, `vote`, `finalize`, `list`, `get` |
//! | `console` | logger | — | `console/write`, `write-batch` |
//!
//! # Why these choices
//!
//! - **The store directly, not `data/*` through the router.** Every daemon here `requires("data")`
//!   and reads the [`DataStore`] from the [`StoreSlot`] in its `start`. Calls are typed (no JSON
//!   params built and parsed again, no extra mailbox hop through the data daemon's queue), errors
//!   stay [`DataError`]s we can match on (a unique-key race is a `Validation` on the field, not a
//!   string), and events are still published by the writer thread after commit, so reacting to
//!   `data:*` events works exactly as if the router had been used. Cross-daemon questions (is this
//!   user a member? does this user exist?) *do* go through the router (`room/check`, `user/get`)
//!   so that each cache has one owner and one invalidation path.
//! - **Events, not polling.** Users get their `user_states` record and their auto-joined rooms
//!   from `data:users:created`; catch-up for users that existed before the daemon started runs
//!   once in deferred init, paged. No fixed delays, no monitor loops: the only interval is
//!   governance's overdue finaliser, a registered timer that dies with the daemon.
//! - **Everything bounded.** Caches are [`BoundedCache`]s (`users`, `room-names`,
//!   `room-members`, `message-dedup`, `training-rooms`) whose counters are published with
//!   [`Context::set_details`] and so appear in `health/status` under each daemon. Queries are
//!   paged with a hard limit, batches have a maximum, and training's work is bounded by its event
//!   queue (overflow is counted, never buffered without limit).
//!
//! [`Router`]: daemonhost_runtime::Router
//! [`EventBus`]: daemonhost_runtime::EventBus
//! [`Context::set_details`]: daemonhost_runtime::Context::set_details

use crate::chat::{ChatConfig, ChatDaemon};
use crate::console::{ConsoleConfig, ConsoleDaemon};
use crate::data::{DataError, DataStore, Handle, ListParams, StoreSlot};
use crate::governance::{GovernanceConfig, GovernanceDaemon};
use crate::rooms::{MembershipConfig, RoomConfig, RoomDaemon, RoomMembershipDaemon};
use crate::training::{TrainingConfig, TrainingDaemon};
use crate::users::{UserConfig, UserDaemon};
use daemonhost_runtime::{BoundedCache, CacheStats, DaemonError, RuntimeBuilder};
use serde_json::{Map, Value, json};
use std::hash::Hash;
use std::num::NonZeroUsize;

/// Settings of every platform daemon.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// The `user` daemon.
    pub users: UserConfig,
    /// The `room` daemon.
    pub rooms: RoomConfig,
    /// The `room-membership` daemon.
    pub membership: MembershipConfig,
    /// The `chat` daemon.
    pub chat: ChatConfig,
    /// The `training` daemon.
    pub training: TrainingConfig,
    /// The `governance` daemon.
    pub governance: GovernanceConfig,
    /// Register the `console` daemon. It `requires("logger")`, so set this only when a daemon
    /// named `logger` is registered too, or the plan will not validate.
    pub console: bool,
    /// The `console` daemon.
    pub console_config: ConsoleConfig,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            users: UserConfig::default(),
            rooms: RoomConfig::default(),
            membership: MembershipConfig::default(),
            chat: ChatConfig::default(),
            training: TrainingConfig::default(),
            governance: GovernanceConfig::default(),
            console: true,
            console_config: ConsoleConfig::default(),
        }
    }
}

/// Register the platform daemons (`user`, `room`, `room-membership`, `chat`, `training`,
/// `governance`, and `console` when `cfg.console`) reading the data daemon's store from `store`.
pub fn register_platform(builder: &mut RuntimeBuilder, store: StoreSlot, cfg: &PlatformConfig) {
    builder.register(UserDaemon::new(store.clone(), cfg.users.clone()));
    builder.register(RoomDaemon::new(store.clone(), cfg.rooms.clone()));
    builder.register(RoomMembershipDaemon::new(
        store.clone(),
        cfg.membership.clone(),
    ));
    builder.register(ChatDaemon::new(store.clone(), cfg.chat.clone()));
    builder.register(TrainingDaemon::new(store.clone(), cfg.training.clone()));
    builder.register(GovernanceDaemon::new(store, cfg.governance.clone()));
    if cfg.console {
        builder.register(ConsoleDaemon::new(cfg.console_config.clone()));
    }
}

/// Failures at the platform daemons' seams that are not a request's answer: starting without a
/// store, or a data error while seeding.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// `start` ran but the data daemon has not published its store.
    #[error("the data daemon's store is not available (is 'data' registered and READY?)")]
    NoStore,
    /// A data-layer failure while seeding (system user, default rooms).
    #[error("{what}: {source}")]
    Data {
        /// What we were doing.
        what: &'static str,
        /// The cause.
        source: DataError,
    },
    /// A record came back without a string `id`.
    #[error("{0}: record without an id")]
    NoId(&'static str),
}

/// The store, or [`PlatformError::NoStore`].
pub(crate) fn store_of(slot: &StoreSlot) -> Result<DataStore, PlatformError> {
    slot.get().ok_or(PlatformError::NoStore)
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
    store: &DataStore,
    collection: &str,
    uid: &str,
) -> Result<Option<Value>, DataError> {
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
pub(crate) fn is_unique_conflict(e: &DataError, field: &str) -> bool {
    matches!(e, DataError::Validation { field: f, reason, .. } if f == field && reason.contains("unique"))
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
