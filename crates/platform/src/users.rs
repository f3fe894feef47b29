//! The `user` daemon: users (human, agent, persona, system) and their `user_states`.
//!
//! The seed's UserDaemon queried *all* users every 5 s and reconciled every 30 s, and opened a
//! client connection per persona. Here:
//!
//! - `user/create` writes the user and its `user_states` record in **one transaction**
//!   (`Data::batch`), so a user never exists without its state.
//! - Users created some other way (`data/create` directly) get their state from the
//!   `data:users:created` event; users that predate the daemon are reconciled once in deferred
//!   init, page by page (one `$in` query per page, one batch of creates per page).
//! - Users are cached in a bounded LRU (`users`) by id; `data:users:updated|deleted` events
//!   invalidate entries, so a change made through `data/update` is never served stale.
//! - A `system` user (uniqueId `system`) is ensured in core init: it owns default rooms and is the
//!   default chat sender.
//!
//! Personas: persona users are plain `users` records of type `persona`; the persona daemons (built
//! later) react to the same `data:users:*` events to bring a persona to life. Nothing here opens a
//! connection or runs a loop per persona.
//!
//! Commands:
//! - `user/create {displayName, type (alias kind): human|agent|persona|system, uniqueId?,
//!   shortDescription?, status?, personaId?, capabilities?, personaConfig?, modelConfig?}` → the user
//! - `user/get {id | uniqueId}` → the user
//! - `user/list {type?, status?, limit? (100, max 1000), cursor?}` → `{items, count, nextCursor}`
//! - `user/update {id, version?, displayName?, status?, shortDescription?, type?, ...}` → the user
//! - `user/state {userId}` → the user's `user_states` record

use crate::util::{
    MAX_KEY, ParamError, Params, PlatformError, cache, find_by_unique, id_of, is_unique_conflict,
    obj, params_of, short, stats_json,
};
use daemonhost_data_client::{BatchOp, Data, DataClient, DataClientError, Handle, ListParams};
use daemonhost_runtime::{
    BoundedCache, BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Delivery,
    Request,
};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The user kinds (`users.type`).
pub const USER_KINDS: [&str; 4] = ["human", "agent", "persona", "system"];

/// The system user's `uniqueId`.
pub const SYSTEM_UNIQUE_ID: &str = "system";

/// Fields `user/create` and `user/update` accept besides `type` and `displayName`.
const OPTIONAL_FIELDS: [&str; 9] = [
    "uniqueId",
    "shortDescription",
    "status",
    "personaId",
    "genomeId",
    "intelligenceLevel",
    "capabilities",
    "personaConfig",
    "modelConfig",
];

/// Page size of the deferred `user_states` reconciliation.
const RECONCILE_PAGE: usize = 500;

/// Settings of the [`UserDaemon`].
#[derive(Debug, Clone)]
pub struct UserConfig {
    /// Capacity of the `users` LRU.
    pub cache_capacity: usize,
}

impl Default for UserConfig {
    fn default() -> Self {
        UserConfig {
            cache_capacity: 4096,
        }
    }
}

/// The user daemon (name `user`).
#[derive(Debug, Clone)]
pub struct UserDaemon {
    store: DataClient,
    cfg: UserConfig,
}

impl UserDaemon {
    /// A user daemon reading the store from `store`.
    pub fn new(store: DataClient, cfg: UserConfig) -> Self {
        UserDaemon { store, cfg }
    }
}

/// The running user daemon's state.
#[derive(Debug)]
pub struct UserDaemonState {
    store: Data,
    users: BoundedCache<String, Arc<Value>>,
    system_id: String,
    states_created: AtomicU64,
    reconciled: AtomicU64,
}

/// The system user, created if missing (a concurrent creator's record wins the unique key).
pub async fn ensure_system_user(store: &Data) -> Result<Value, PlatformError> {
    let what = "ensuring the system user";
    let wrap = |source| PlatformError::Data { what, source };
    if let Some(u) = find_by_unique(store, "users", SYSTEM_UNIQUE_ID)
        .await
        .map_err(wrap)?
    {
        return Ok(u);
    }
    let data = obj(json!({
        "type": "system", "uniqueId": SYSTEM_UNIQUE_ID, "displayName": "System", "status": "online",
    }));
    match create_with_state(store, data).await {
        Ok(u) => Ok(u),
        Err(e) if is_unique_conflict(&e, "uniqueId") => {
            find_by_unique(store, "users", SYSTEM_UNIQUE_ID)
                .await
                .map_err(wrap)?
                .ok_or(PlatformError::NoId("system user"))
        }
        Err(e) => Err(wrap(e)),
    }
}

/// Create a user and its `user_states` record in one transaction.
async fn create_with_state(
    store: &Data,
    data: Map<String, Value>,
) -> Result<Value, DataClientError> {
    let id = uuid::Uuid::now_v7().to_string();
    let ops = vec![
        BatchOp::Create {
            collection: "users".into(),
            id: Some(id.clone()),
            data,
        },
        BatchOp::Create {
            collection: "user_states".into(),
            id: None,
            data: obj(json!({ "userId": id, "contentState": {}, "preferences": {} })),
        },
    ];
    let mut out = store.batch(&Handle::Primary, ops).await?;
    if out.is_empty() {
        return Err(DataClientError::Other(DaemonError::internal(
            "batch returned no records",
        )));
    }
    Ok(out.swap_remove(0))
}

fn validate_kind(kind: &str) -> Result<(), DaemonError> {
    if USER_KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(DaemonError::validation(format!(
            "type: must be one of {} (got '{}')",
            USER_KINDS.join(", "),
            short(kind)
        )))
    }
}

/// Copy the accepted optional fields from params into `data`.
fn copy_optional(p: &Params, data: &mut Map<String, Value>) {
    for k in OPTIONAL_FIELDS {
        if let Some(v) = p.get(k) {
            data.insert(k.to_owned(), v.clone());
        }
    }
}

impl UserDaemonState {
    fn publish_stats(&self, ctx: &Context) {
        ctx.set_details(json!({
            "caches": { "users": stats_json(&self.users.stats()) },
            "systemUserId": self.system_id,
            "statesCreatedFromEvents": self.states_created.load(Ordering::Relaxed),
            "statesReconciled": self.reconciled.load(Ordering::Relaxed),
        }));
    }

    async fn get(&self, id: &str) -> Result<Arc<Value>, DaemonError> {
        if let Some(u) = self.users.get(&id.to_owned()) {
            return Ok(u);
        }
        let u = match self.store.read(&Handle::Primary, "users", id).await {
            Ok(u) => Arc::new(u),
            Err(DataClientError::NotFound { .. }) => {
                return Err(DaemonError::not_found(format!(
                    "id: no user with id '{}'",
                    short(id)
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.users.insert(id.to_owned(), u.clone());
        Ok(u)
    }

    /// Create the `user_states` record of `user_id` if it has none (idempotent).
    async fn ensure_state(&self, user_id: &str) -> Result<bool, DataClientError> {
        let n = self
            .store
            .count(
                &Handle::Primary,
                "user_states",
                Some(json!({ "userId": user_id })),
            )
            .await?;
        if n > 0 {
            return Ok(false);
        }
        let data = obj(json!({ "userId": user_id, "contentState": {}, "preferences": {} }));
        match self
            .store
            .create(&Handle::Primary, "user_states", None, data)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_unique_conflict(&e, "userId") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give every existing user without a state one: a page of users, one `$in` query for their
    /// states, one batch for the missing ones.
    async fn reconcile_states(&self) -> Result<u64, DataClientError> {
        let mut cursor = None;
        let mut created = 0u64;
        loop {
            let page = self
                .store
                .list(
                    &Handle::Primary,
                    "users",
                    ListParams {
                        fields: Some(json!(["id"])),
                        limit: Some(json!(RECONCILE_PAGE)),
                        cursor: cursor.take(),
                        ..Default::default()
                    },
                )
                .await?;
            let ids: Vec<&str> = page.items.iter().filter_map(id_of).collect();
            if !ids.is_empty() {
                let have = self
                    .store
                    .list(
                        &Handle::Primary,
                        "user_states",
                        ListParams {
                            filter: Some(json!({ "userId": { "$in": ids } })),
                            fields: Some(json!(["userId"])),
                            limit: Some(json!(RECONCILE_PAGE)),
                            ..Default::default()
                        },
                    )
                    .await?;
                let have: std::collections::HashSet<&str> = have
                    .items
                    .iter()
                    .filter_map(|s| s.get("userId").and_then(Value::as_str))
                    .collect();
                let ops: Vec<BatchOp> = ids
                    .iter()
                    .filter(|id| !have.contains(**id))
                    .map(|id| BatchOp::Create {
                        collection: "user_states".into(),
                        id: None,
                        data: obj(json!({ "userId": id, "contentState": {}, "preferences": {} })),
                    })
                    .collect();
                if !ops.is_empty() {
                    created += ops.len() as u64;
                    self.store.batch(&Handle::Primary, ops).await?;
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(created),
            }
        }
    }
}

impl Daemon for UserDaemon {
    type State = UserDaemonState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("user")
            .requires("data")
            .events("data:users:created")
            .events("data:users:updated")
            .events("data:users:deleted")
            .command(
                CommandSpec::new("user/create", "Create a user and its user state")
                    .param(
                        "displayName",
                        "string",
                        true,
                        "shown name, at most 100 characters",
                    )
                    .param(
                        "type",
                        "string",
                        false,
                        "human | agent | persona | system; required, as type or its alias kind",
                    )
                    .param("uniqueId", "string", false, "unique handle")
                    .param(
                        "shortDescription",
                        "string",
                        false,
                        "one line about the user",
                    )
                    .param(
                        "status",
                        "string",
                        false,
                        "online | offline | away | busy | frozen | deleted",
                    )
                    .param(
                        "personaConfig",
                        "object",
                        false,
                        "persona settings (persona users)",
                    )
                    .param(
                        "modelConfig",
                        "object",
                        false,
                        "model settings (agents, personas)",
                    ),
            )
            .command(
                CommandSpec::new("user/get", "One user by id or uniqueId (cached)")
                    .param("id", "string", false, "user id")
                    .param("uniqueId", "string", false, "unique handle"),
            )
            .command(
                CommandSpec::new("user/list", "A page of users, newest first")
                    .param("type", "string", false, "only this kind")
                    .param("status", "string", false, "only this status")
                    .param(
                        "limit",
                        "integer",
                        false,
                        "page size, default 100, max 1000",
                    )
                    .param("cursor", "string", false, "nextCursor of the previous page"),
            )
            .command(
                CommandSpec::new("user/update", "Change fields of a user")
                    .param("id", "string", true, "user id")
                    .param("version", "integer", false, "expected current version")
                    .param("displayName", "string", false, "new name")
                    .param("status", "string", false, "new status")
                    .param("type", "string", false, "new kind"),
            )
            .command(
                CommandSpec::new("user/state", "A user's UserState record")
                    .param("userId", "string", true, "user id"),
            )
    }

    async fn start(&self, ctx: &Context) -> Result<UserDaemonState, BoxError> {
        let store = self.store.bind(ctx.router());
        let system = ensure_system_user(&store).await?;
        let system_id = id_of(&system)
            .ok_or(PlatformError::NoId("system user"))?
            .to_owned();
        let state = UserDaemonState {
            store,
            users: cache("users", self.cfg.cache_capacity),
            system_id,
            states_created: AtomicU64::new(0),
            reconciled: AtomicU64::new(0),
        };
        state.publish_stats(ctx);
        Ok(state)
    }

    async fn start_deferred(&self, ctx: &Context, state: &UserDaemonState) -> Result<(), BoxError> {
        let n = state.reconcile_states().await?;
        state.reconciled.fetch_add(n, Ordering::Relaxed);
        state.publish_stats(ctx);
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &UserDaemonState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let p = params_of(req.params)?;
        let out = match req.command.as_str() {
            "user/create" => {
                let kind = p
                    .opt_str_any(&["type", "kind"], 20)
                    .and_then(|k| k.ok_or_else(|| ParamError::missing("type")))?;
                validate_kind(kind)?;
                let name = p.str_max("displayName", 100)?;
                let mut data = Map::new();
                data.insert("type".into(), json!(kind));
                data.insert("displayName".into(), json!(name.trim()));
                copy_optional(&p, &mut data);
                let u = create_with_state(&state.store, data).await?;
                if let Some(id) = id_of(&u) {
                    state.users.insert(id.to_owned(), Arc::new(u.clone()));
                }
                Ok(u)
            }
            "user/get" => {
                if let Some(id) = p.opt_str_max("id", MAX_KEY)? {
                    state.get(id).await.map(|u| (*u).clone())
                } else if let Some(uid) = p.opt_str_max("uniqueId", MAX_KEY)? {
                    find_by_unique(&state.store, "users", uid)
                        .await?
                        .ok_or_else(|| {
                            DaemonError::not_found(format!(
                                "uniqueId: no user with uniqueId '{}'",
                                short(uid)
                            ))
                        })
                } else {
                    Err(DaemonError::validation("id: required (or uniqueId)"))
                }
            }
            "user/list" => {
                let limit = p.limit(100, 1000)?;
                let mut filter = Map::new();
                if let Some(kind) = p.opt_str_any(&["type", "kind"], 20)? {
                    validate_kind(kind)?;
                    filter.insert("type".into(), json!(kind));
                }
                if let Some(s) = p.opt_str_max("status", 20)? {
                    filter.insert("status".into(), json!(s));
                }
                let page = state
                    .store
                    .list(
                        &Handle::Primary,
                        "users",
                        ListParams {
                            filter: Some(Value::Object(filter)),
                            limit: Some(json!(limit)),
                            cursor: p.opt_str_max("cursor", 4096)?.map(str::to_owned),
                            ..Default::default()
                        },
                    )
                    .await?;
                Ok(
                    json!({ "items": page.items, "count": page.count, "nextCursor": page.next_cursor }),
                )
            }
            "user/update" => {
                let id = p.str_max("id", MAX_KEY)?;
                let mut data = Map::new();
                if let Some(kind) = p.opt_str_any(&["type", "kind"], 20)? {
                    validate_kind(kind)?;
                    data.insert("type".into(), json!(kind));
                }
                if let Some(n) = p.opt_str_max("displayName", 100)? {
                    data.insert("displayName".into(), json!(n.trim()));
                }
                if let Some(v) = p.get("lastActiveAt") {
                    data.insert("lastActiveAt".into(), v.clone());
                }
                copy_optional(&p, &mut data);
                if data.is_empty() {
                    return Err(DaemonError::validation(
                        "data: nothing to update (give displayName, status, type, ...)",
                    ));
                }
                let version = p.opt_i64("version")?;
                let u = match state
                    .store
                    .update(&Handle::Primary, "users", id, data, version)
                    .await
                {
                    Ok(u) => u,
                    Err(DataClientError::NotFound { .. }) => {
                        return Err(DaemonError::not_found(format!(
                            "id: no user with id '{}'",
                            short(id)
                        )));
                    }
                    Err(e) => return Err(e.into()),
                };
                // The event will invalidate too; dropping it now makes our own next read fresh.
                state.users.remove(&id.to_owned());
                Ok(u)
            }
            "user/state" => {
                let id = p.str_max("userId", MAX_KEY)?;
                let page = state
                    .store
                    .list(
                        &Handle::Primary,
                        "user_states",
                        ListParams {
                            filter: Some(json!({ "userId": id })),
                            limit: Some(json!(1)),
                            ..Default::default()
                        },
                    )
                    .await?;
                page.items.into_iter().next().ok_or_else(|| {
                    DaemonError::not_found(format!("userId: no user state for '{}'", short(id)))
                })
            }
            other => Err(DaemonError::unknown_command(format!(
                "user daemon has no command '{}'",
                short(other)
            ))),
        };
        state.publish_stats(ctx);
        out
    }

    async fn on_event(&self, ctx: &Context, state: &UserDaemonState, d: Delivery) {
        let Delivery::Event(ev) = d else {
            // Lost events: drop the whole cache rather than risk serving a stale user.
            state.users.clear();
            return;
        };
        let Some(id) = id_of(ev.data()) else { return };
        match ev.topic() {
            "data:users:created" => match state.ensure_state(id).await {
                Ok(true) => {
                    state.states_created.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(user = id, error = %e, "cannot create the user state"),
            },
            _ => {
                state.users.remove(&id.to_owned());
            }
        }
        state.publish_stats(ctx);
    }
}
