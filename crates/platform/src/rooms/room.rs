//! The `room` daemon: rooms, their member lists (it is their only writer) and membership checks.

use crate::users::ensure_system_user;
use crate::util::{
    MAX_KEY, Params, PlatformError, cache, find_by_unique, id_of, is_unique_conflict, obj,
    params_of, short, stats_json, version_of,
};
use daemonhost_data_client::{Data, DataClient, DataClientError, Handle, ListParams};
use daemonhost_protocol::time::now_text;
use daemonhost_runtime::{
    BoundedCache, BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Delivery,
    Request,
};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most user ids in one `room/join`.
pub const MAX_JOIN: usize = 1000;

/// Retries of a membership write that lost a version race with an outside writer.
const WRITE_RETRIES: usize = 3;

/// Settings of the [`RoomDaemon`].
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Rooms ensured at start (created on first start, never duplicated).
    pub default_rooms: Vec<String>,
    /// Capacity of the `room-names` LRU.
    pub names_cache: usize,
    /// Capacity of the `room-members` LRU (parsed member sets).
    pub members_cache: usize,
    /// Most members one room may hold.
    pub max_members: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            default_rooms: vec!["general".into()],
            names_cache: 1024,
            members_cache: 256,
            max_members: 10_000,
        }
    }
}

/// The room daemon (name `room`).
#[derive(Debug, Clone)]
pub struct RoomDaemon {
    store: DataClient,
    cfg: RoomConfig,
}

impl RoomDaemon {
    /// A room daemon reading the store from `store`.
    pub fn new(store: DataClient, cfg: RoomConfig) -> Self {
        RoomDaemon { store, cfg }
    }
}

/// A parsed member set and the record version it came from.
#[derive(Debug, Clone)]
struct Members {
    version: i64,
    name: Arc<str>,
    ids: Arc<HashSet<String>>,
}

/// The running room daemon's state.
#[derive(Debug)]
pub struct RoomState {
    store: Data,
    names: BoundedCache<String, String>,
    members: BoundedCache<String, Members>,
    write: tokio::sync::Mutex<()>,
    system_id: String,
    max_members: usize,
    joins: AtomicU64,
    leaves: AtomicU64,
}

/// A room name: 1–100 characters of `[a-z0-9_-]` after lowercasing.
fn room_slug(name: &str) -> Result<String, DaemonError> {
    let slug = name.trim().to_lowercase();
    if slug.is_empty()
        || slug.len() > 100
        || !slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(DaemonError::validation(format!(
            "name: 1-100 characters of a-z, 0-9, '-' and '_' (got '{}')",
            short(name)
        )));
    }
    Ok(slug)
}

fn members_of(room: &Value) -> Vec<Value> {
    room.get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn member_ids(members: &[Value]) -> HashSet<String> {
    members
        .iter()
        .filter_map(|m| m.get("userId").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn room_name(room: &Value) -> String {
    room.get("uniqueId")
        .or_else(|| room.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Create room `slug` owned by `owner` unless it exists; returns it.
async fn ensure_room(
    store: &Data,
    slug: &str,
    owner: &str,
    extra: Map<String, Value>,
) -> Result<(Value, bool), DataClientError> {
    if let Some(r) = find_by_unique(store, "rooms", slug).await? {
        return Ok((r, false));
    }
    let mut data = extra;
    data.insert("uniqueId".into(), json!(slug));
    data.entry("name").or_insert_with(|| json!(slug));
    data.insert("ownerId".into(), json!(owner));
    data.insert(
        "members".into(),
        json!([{ "userId": owner, "role": "owner", "joinedAt": now_text() }]),
    );
    match store.create(&Handle::Primary, "rooms", None, data).await {
        Ok(r) => Ok((r, true)),
        Err(e) if is_unique_conflict(&e, "uniqueId") => find_by_unique(store, "rooms", slug)
            .await?
            .map(|r| (r, false))
            .ok_or(e),
        Err(e) => Err(e),
    }
}

impl RoomState {
    fn publish_stats(&self, ctx: &Context) {
        ctx.set_details(json!({
            "caches": {
                "room-names": stats_json(&self.names.stats()),
                "room-members": stats_json(&self.members.stats()),
            },
            "joins": self.joins.load(Ordering::Relaxed),
            "leaves": self.leaves.load(Ordering::Relaxed),
        }));
    }

    /// The id of the room named or identified by `key`.
    async fn resolve(&self, key: &str) -> Result<String, DaemonError> {
        if let Some(id) = self.names.get(&key.to_owned()) {
            return Ok(id);
        }
        let lower = key.trim().to_lowercase();
        let found = match find_by_unique(&self.store, "rooms", &lower).await? {
            Some(r) => Some(r),
            None => match self.store.read(&Handle::Primary, "rooms", key).await {
                Ok(r) => Some(r),
                Err(DataClientError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let Some(room) = found else {
            return Err(DaemonError::not_found(format!(
                "room: no room named or with id '{}'",
                short(key)
            )));
        };
        let id = id_of(&room)
            .ok_or_else(|| DaemonError::internal("room without an id"))?
            .to_owned();
        self.names.insert(key.to_owned(), id.clone());
        Ok(id)
    }

    async fn read(&self, id: &str) -> Result<Value, DaemonError> {
        match self.store.read(&Handle::Primary, "rooms", id).await {
            Ok(r) => Ok(r),
            Err(DataClientError::NotFound { .. }) => {
                self.names.remove(&id.to_owned());
                self.members.remove(&id.to_owned());
                Err(DaemonError::not_found(format!(
                    "room: no room with id '{}'",
                    short(id)
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn remember(&self, id: &str, room: &Value, ids: HashSet<String>) -> Members {
        let m = Members {
            version: version_of(room).unwrap_or(0),
            name: room_name(room).into(),
            ids: Arc::new(ids),
        };
        self.members.insert(id.to_owned(), m.clone());
        m
    }

    /// The member set of room `id` (cached).
    async fn member_set(&self, id: &str) -> Result<Members, DaemonError> {
        if let Some(m) = self.members.get(&id.to_owned()) {
            return Ok(m);
        }
        let room = self.read(id).await?;
        let ids = member_ids(&members_of(&room));
        Ok(self.remember(id, &room, ids))
    }

    /// Add `users` (already validated to exist) to room `id`. Returns (room, joined ids,
    /// already-member count).
    async fn join(
        &self,
        id: &str,
        users: &[String],
        role: &str,
    ) -> Result<(Value, Vec<String>, usize), DaemonError> {
        let _w = self.write.lock().await;
        let mut tries = 0;
        loop {
            let room = self.read(id).await?;
            let mut members = members_of(&room);
            let mut ids = member_ids(&members);
            let mut joined = Vec::new();
            let now = now_text();
            for u in users {
                if ids.insert(u.clone()) {
                    members.push(json!({ "userId": u, "role": role, "joinedAt": now }));
                    joined.push(u.clone());
                }
            }
            let already = users.len() - joined.len();
            if joined.is_empty() {
                self.remember(id, &room, ids);
                return Ok((room, joined, already));
            }
            if members.len() > self.max_members {
                return Err(DaemonError::validation(format!(
                    "userIds: room '{}' would have {} members, more than the limit of {}",
                    room_name(&room),
                    members.len(),
                    self.max_members
                )));
            }
            match self
                .store
                .update(
                    &Handle::Primary,
                    "rooms",
                    id,
                    obj(json!({ "members": members })),
                    version_of(&room),
                )
                .await
            {
                Ok(updated) => {
                    self.remember(id, &updated, ids);
                    self.joins.fetch_add(joined.len() as u64, Ordering::Relaxed);
                    return Ok((updated, joined, already));
                }
                Err(DataClientError::VersionConflict { .. }) if tries < WRITE_RETRIES => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn leave(&self, id: &str, user: &str) -> Result<(Value, bool), DaemonError> {
        let _w = self.write.lock().await;
        let mut tries = 0;
        loop {
            let room = self.read(id).await?;
            let mut members = members_of(&room);
            let before = members.len();
            members.retain(|m| m.get("userId").and_then(Value::as_str) != Some(user));
            if members.len() == before {
                let ids = member_ids(&members);
                self.remember(id, &room, ids);
                return Ok((room, false));
            }
            let ids = member_ids(&members);
            match self
                .store
                .update(
                    &Handle::Primary,
                    "rooms",
                    id,
                    obj(json!({ "members": members })),
                    version_of(&room),
                )
                .await
            {
                Ok(updated) => {
                    self.remember(id, &updated, ids);
                    self.leaves.fetch_add(1, Ordering::Relaxed);
                    return Ok((updated, true));
                }
                Err(DataClientError::VersionConflict { .. }) if tries < WRITE_RETRIES => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `users` that do not exist, found with one `$in` query.
    async fn unknown_users(&self, users: &[String]) -> Result<Vec<String>, DaemonError> {
        let page = self
            .store
            .list(
                &Handle::Primary,
                "users",
                ListParams {
                    filter: Some(json!({ "id": { "$in": users } })),
                    fields: Some(json!(["id"])),
                    limit: Some(json!(users.len().max(1))),
                    ..Default::default()
                },
            )
            .await?;
        let found: HashSet<&str> = page.items.iter().filter_map(id_of).collect();
        Ok(users
            .iter()
            .filter(|u| !found.contains(u.as_str()))
            .cloned()
            .collect())
    }
}

fn user_ids(p: &Params) -> Result<Vec<String>, DaemonError> {
    if let Some(u) = p.opt_str_max("userId", MAX_KEY)? {
        return Ok(vec![u.to_owned()]);
    }
    let Some(list) = p.get("userIds") else {
        return Err(DaemonError::validation("userId: required (or userIds)"));
    };
    let Some(list) = list.as_array() else {
        return Err(DaemonError::bad_request(
            "userIds: must be an array of strings",
        ));
    };
    if list.is_empty() || list.len() > MAX_JOIN {
        return Err(DaemonError::validation(format!(
            "userIds: 1 to {MAX_JOIN} user ids (got {})",
            list.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        match v.as_str() {
            Some(s) if !s.is_empty() && s.len() <= MAX_KEY => {
                if seen.insert(s) {
                    out.push(s.to_owned());
                }
            }
            Some(_) => {
                return Err(DaemonError::validation(format!(
                    "userIds[{i}]: must be a non-empty string of at most {MAX_KEY} characters"
                )));
            }
            None => {
                return Err(DaemonError::bad_request(format!(
                    "userIds[{i}]: must be a string"
                )));
            }
        }
    }
    Ok(out)
}

impl Daemon for RoomDaemon {
    type State = RoomState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("room")
            .requires("data")
            .requires("user")
            .events("data:rooms:updated")
            .events("data:rooms:deleted")
            .command(
                CommandSpec::new(
                    "room/create",
                    "Create a room (its owner is its first member)",
                )
                .param("name", "string", true, "unique name: a-z 0-9 - _")
                .param("displayName", "string", false, "shown name")
                .param("description", "string", false, "what the room is for")
                .param("topic", "string", false, "current topic")
                .param(
                    "type",
                    "string",
                    false,
                    "public (default) | private | direct",
                )
                .param(
                    "ownerId",
                    "string",
                    false,
                    "owner user id (default: the system user)",
                ),
            )
            .command(
                CommandSpec::new("room/get", "A room with its members and memberCount").param(
                    "room",
                    "string",
                    true,
                    "room name or id",
                ),
            )
            .command(
                CommandSpec::new("room/list", "A page of rooms (without members)")
                    .param("type", "string", false, "only this type")
                    .param(
                        "limit",
                        "integer",
                        false,
                        "page size, default 100, max 1000",
                    )
                    .param("cursor", "string", false, "nextCursor of the previous page"),
            )
            .command(CommandSpec::new("room/members", "A room's members").param(
                "room",
                "string",
                true,
                "room name or id",
            ))
            .command(
                CommandSpec::new("room/join", "Add users to a room (idempotent)")
                    .param("room", "string", true, "room name or id")
                    .param("userId", "string", false, "one user")
                    .param("userIds", "array", false, "up to 1000 users")
                    .param("role", "string", false, "member (default) | admin | owner"),
            )
            .command(
                CommandSpec::new("room/leave", "Remove a user from a room")
                    .param("room", "string", true, "room name or id")
                    .param("userId", "string", true, "user id"),
            )
            .command(
                CommandSpec::new(
                    "room/check",
                    "Resolve a room and (optionally) check membership",
                )
                .param("room", "string", true, "room name or id")
                .param("userId", "string", false, "user to check"),
            )
    }

    async fn start(&self, ctx: &Context) -> Result<RoomState, BoxError> {
        let store = self.store.bind(ctx.router());
        let system = ensure_system_user(&store).await?;
        let system_id = id_of(&system)
            .ok_or(PlatformError::NoId("system user"))?
            .to_owned();
        let state = RoomState {
            store,
            names: cache("room-names", self.cfg.names_cache),
            members: cache("room-members", self.cfg.members_cache),
            write: tokio::sync::Mutex::new(()),
            system_id,
            max_members: self.cfg.max_members.max(1),
            joins: AtomicU64::new(0),
            leaves: AtomicU64::new(0),
        };
        for name in &self.cfg.default_rooms {
            let slug = room_slug(name).map_err(|e| e.message)?;
            let (room, created) = ensure_room(&state.store, &slug, &state.system_id, Map::new())
                .await
                .map_err(|source| PlatformError::Data {
                    what: "ensuring a default room",
                    source,
                })?;
            if let Some(id) = id_of(&room) {
                state.names.insert(slug.clone(), id.to_owned());
            }
            if created {
                tracing::info!(room = %slug, "created default room");
            }
        }
        state.publish_stats(ctx);
        Ok(state)
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &RoomState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let p = params_of(req.params)?;
        let out = match req.command.as_str() {
            "room/create" => {
                let slug = room_slug(p.str_max("name", 100)?)?;
                let owner = match p.opt_str_max("ownerId", MAX_KEY)? {
                    Some(o) => {
                        if !state.unknown_users(&[o.to_owned()]).await?.is_empty() {
                            return Err(DaemonError::validation(format!(
                                "ownerId: no user with id '{}'",
                                short(o)
                            )));
                        }
                        o.to_owned()
                    }
                    None => state.system_id.clone(),
                };
                if find_by_unique(&state.store, "rooms", &slug)
                    .await?
                    .is_some()
                {
                    return Err(DaemonError::validation(format!(
                        "name: a room named '{slug}' already exists"
                    )));
                }
                let mut extra = Map::new();
                for k in ["displayName", "description", "topic", "type"] {
                    if let Some(v) = p.get(k) {
                        extra.insert(k.to_owned(), v.clone());
                    }
                }
                let (room, created) = ensure_room(&state.store, &slug, &owner, extra).await?;
                if !created {
                    return Err(DaemonError::validation(format!(
                        "name: a room named '{slug}' already exists"
                    )));
                }
                if let Some(id) = id_of(&room) {
                    state.names.insert(slug, id.to_owned());
                }
                Ok(room)
            }
            "room/get" => {
                let id = state.resolve(p.str_max("room", MAX_KEY)?).await?;
                let mut room = state.read(&id).await?;
                let n = members_of(&room).len();
                if let Some(o) = room.as_object_mut() {
                    o.insert("memberCount".into(), json!(n));
                }
                Ok(room)
            }
            "room/list" => {
                let limit = p.limit(100, 1000)?;
                let mut filter = Map::new();
                if let Some(t) = p.opt_str_max("type", 20)? {
                    filter.insert("type".into(), json!(t));
                }
                let page = state
                    .store
                    .list(
                        &Handle::Primary,
                        "rooms",
                        ListParams {
                            filter: Some(Value::Object(filter)),
                            limit: Some(json!(limit)),
                            cursor: p.opt_str_max("cursor", 4096)?.map(str::to_owned),
                            fields: Some(json!([
                                "uniqueId",
                                "name",
                                "displayName",
                                "description",
                                "topic",
                                "type",
                                "status",
                                "ownerId",
                                "lastMessageAt",
                                "createdAt",
                                "updatedAt",
                                "version"
                            ])),
                            ..Default::default()
                        },
                    )
                    .await?;
                Ok(
                    json!({ "items": page.items, "count": page.count, "nextCursor": page.next_cursor }),
                )
            }
            "room/members" => {
                let id = state.resolve(p.str_max("room", MAX_KEY)?).await?;
                let room = state.read(&id).await?;
                Ok(json!({ "roomId": id, "name": room_name(&room), "members": members_of(&room) }))
            }
            "room/join" => {
                let id = state.resolve(p.str_max("room", MAX_KEY)?).await?;
                let users = user_ids(&p)?;
                let role = p.opt_str_max("role", 20)?.unwrap_or("member");
                if !["member", "admin", "owner"].contains(&role) {
                    return Err(DaemonError::validation(format!(
                        "role: must be member, admin or owner (got '{}')",
                        short(role)
                    )));
                }
                let unknown = state.unknown_users(&users).await?;
                if let Some(u) = unknown.first() {
                    let field = if p.get("userId").is_some() {
                        "userId"
                    } else {
                        "userIds"
                    };
                    return Err(DaemonError::validation(format!(
                        "{field}: no user with id '{}'{}",
                        short(u),
                        if unknown.len() > 1 {
                            format!(" (and {} more)", unknown.len() - 1)
                        } else {
                            String::new()
                        }
                    )));
                }
                let (room, joined, already) = state.join(&id, &users, role).await?;
                Ok(json!({
                    "roomId": id,
                    "name": room_name(&room),
                    "joined": joined,
                    "alreadyMembers": already,
                    "memberCount": members_of(&room).len(),
                }))
            }
            "room/leave" => {
                let id = state.resolve(p.str_max("room", MAX_KEY)?).await?;
                let user = p.str_max("userId", MAX_KEY)?;
                let (room, left) = state.leave(&id, user).await?;
                Ok(json!({
                    "roomId": id,
                    "name": room_name(&room),
                    "left": left,
                    "memberCount": members_of(&room).len(),
                }))
            }
            "room/check" => {
                let id = state.resolve(p.str_max("room", MAX_KEY)?).await?;
                let m = state.member_set(&id).await?;
                let member = match p.opt_str_max("userId", MAX_KEY)? {
                    Some(u) => Value::Bool(m.ids.contains(u)),
                    None => Value::Null,
                };
                Ok(json!({ "roomId": id, "name": &*m.name, "member": member }))
            }
            other => Err(DaemonError::unknown_command(format!(
                "room daemon has no command '{}'",
                short(other)
            ))),
        };
        state.publish_stats(ctx);
        out
    }

    async fn on_event(&self, ctx: &Context, state: &RoomState, d: Delivery) {
        let Delivery::Event(ev) = d else {
            state.members.clear();
            return;
        };
        let Some(id) = id_of(ev.data()) else { return };
        let key = id.to_owned();
        match ev.topic() {
            "data:rooms:deleted" => {
                state.members.remove(&key);
                state.names.remove(&key);
                state.names.remove(&room_name(ev.data()));
            }
            _ => {
                // Our own writes already updated the cache with this version; only a newer
                // version (someone else's write) invalidates.
                let newer = match (state.members.get(&key), version_of(ev.data())) {
                    (Some(m), Some(v)) => v > m.version,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if newer {
                    state.members.remove(&key);
                }
            }
        }
        state.publish_stats(ctx);
    }
}
