//! The `chat` daemon: sending messages to rooms and reading a room's history.
//!
//! - `chat/send {room (name or id), message, sender? (user id; default the system user),
//!   clientMessageId?, replyTo?}` → the stored `chat_messages` record plus `deduplicated`.
//!   Storing the record is what publishes `data:chat_messages:created` (from the data layer,
//!   after commit), so every reaction to a message (training, personas, clients subscribed to
//!   the event) hangs off that one event.
//! - `chat/history {room, limit? (50, max 500), before? (message id or RFC 3339 / epoch-ms
//!   timestamp)}` → `{roomId, name, messages, hasMore, nextBefore}`. The page holds the `limit`
//!   newest messages strictly before `before`, returned **oldest first** (the order a chat view
//!   renders); pass `nextBefore` (the oldest message's id) to get the page before it. Reads use
//!   the indexed `(roomId, timestamp)` order, ties broken by id.
//!
//! Decisions:
//! - **Membership**: the sender must be a member of the room (`validation` naming `sender`
//!   otherwise); the system user may post anywhere. Auto-joining on send would let any client
//!   put any user into any room; joining is `room/join`'s job.
//! - **Dedup**: with a `clientMessageId`, the key `(sender, clientMessageId)` goes into the
//!   bounded `message-dedup` LRU holding a once-cell per key: concurrent resends wait for the
//!   first store and all get the same record with `deduplicated: true`. A failed store leaves the
//!   cell empty, so a retry stores again. The record's id is derived from the key (a name-based
//!   UUID), so beyond the cache's window and across restarts the database itself refuses a
//!   second record for it, and the resend gets the first one back: a client retrying a send
//!   whose answer was lost (the host killed mid-request) never makes two messages.
//!   The cell keeps the stored record's **id only** (≈ 100 bytes per entry, not the whole
//!   record): a resend is rare and reads the record back; one deleted since answers
//!   `{id, deduplicated: true, deleted: true}`. Holding whole records made the cache grow by
//!   megabytes as it filled under steady traffic.
//! - Sender and room are checked through `user/get` and `room/check`, so the `users`,
//!   `room-names` and `room-members` caches (owned by those daemons) serve the common case.

use crate::users::SYSTEM_UNIQUE_ID;
use crate::util::{
    MAX_KEY, Params, PlatformError, cache, find_by_unique, id_of, obj, params_of, short, stats_json,
};
use daemonhost_data_client::{Data, DataClient, DataClientError, Handle, ListParams};
use daemonhost_protocol::time::{format_ms, now_ms, parse_date_ms};
use daemonhost_runtime::{
    BoundedCache, BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, ErrorCode,
    Request,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::OnceCell;

/// Settings of the [`ChatDaemon`].
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Capacity of the `message-dedup` LRU (client message ids remembered).
    pub dedup_capacity: usize,
    /// Longest message text, in characters.
    pub max_message_chars: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            dedup_capacity: 8192,
            max_message_chars: 32_000,
        }
    }
}

/// The chat daemon (name `chat`).
#[derive(Debug, Clone)]
pub struct ChatDaemon {
    store: DataClient,
    cfg: ChatConfig,
}

impl ChatDaemon {
    /// A chat daemon reading the store from `store`.
    pub fn new(store: DataClient, cfg: ChatConfig) -> Self {
        ChatDaemon { store, cfg }
    }
}

/// A dedup entry: the id of the record stored for the key, once stored.
type Slot = Arc<OnceCell<String>>;

/// The running chat daemon's state.
#[derive(Debug)]
pub struct ChatState {
    store: Data,
    dedup: BoundedCache<String, Slot>,
    system_id: String,
    sent: AtomicU64,
    deduplicated: AtomicU64,
}

/// Fields of a message returned by `chat/history`.
const HISTORY_FIELDS: [&str; 11] = [
    "roomId",
    "senderId",
    "senderName",
    "senderType",
    "content",
    "status",
    "timestamp",
    "replyToId",
    "editedAt",
    "reactions",
    "createdAt",
];

impl ChatState {
    fn publish_stats(&self, ctx: &Context) {
        ctx.set_details(json!({
            "caches": { "message-dedup": stats_json(&self.dedup.stats()) },
            "sent": self.sent.load(Ordering::Relaxed),
            "deduplicated": self.deduplicated.load(Ordering::Relaxed),
        }));
    }

    async fn page(&self, filter: Value, limit: usize) -> Result<Vec<Value>, DataClientError> {
        Ok(self
            .store
            .list(
                &Handle::Primary,
                "chat_messages",
                ListParams {
                    filter: Some(filter),
                    order_by: Some(json!([{ "field": "timestamp", "direction": "desc" }])),
                    limit: Some(json!(limit)),
                    fields: Some(json!(HISTORY_FIELDS)),
                    ..Default::default()
                },
            )
            .await?
            .items)
    }
}

async fn send(
    ctx: &Context,
    cfg: &ChatConfig,
    state: &ChatState,
    p: &Params,
) -> Result<Value, DaemonError> {
    let room = p.str_max("room", MAX_KEY)?;
    let text = p.str_max("message", cfg.max_message_chars)?;
    let sender = p
        .opt_str_max("sender", MAX_KEY)?
        .unwrap_or(&state.system_id)
        .to_owned();
    let reply_to = p.opt_str_max("replyTo", MAX_KEY)?.map(str::to_owned);
    let client_id = p
        .opt_str_max("clientMessageId", MAX_KEY)?
        .map(str::to_owned);

    let store_it = || async {
        let user = match ctx.router().ask("user/get", json!({ "id": sender })).await {
            Ok(u) => u,
            Err(e) if e.code == ErrorCode::NotFound => {
                return Err(DaemonError::validation(format!(
                    "sender: no user with id '{}'",
                    short(&sender)
                )));
            }
            Err(e) => return Err(e),
        };
        let check = ctx
            .router()
            .ask("room/check", json!({ "room": room, "userId": sender }))
            .await?;
        let room_id = check["roomId"]
            .as_str()
            .ok_or_else(|| DaemonError::internal("room/check returned no roomId"))?;
        if check["member"] != json!(true) && sender != state.system_id {
            return Err(DaemonError::validation(format!(
                "sender: user '{}' is not a member of room '{}' (room/join first)",
                short(&sender),
                check["name"].as_str().unwrap_or(room)
            )));
        }
        let mut content = json!({ "text": text });
        if let Some(c) = &client_id {
            content["clientMessageId"] = json!(c);
        }
        let mut data = obj(json!({
            "roomId": room_id,
            "senderId": sender,
            "senderName": user.get("displayName").cloned().unwrap_or(Value::Null),
            "senderType": user.get("type").cloned().unwrap_or(Value::Null),
            "content": content,
            "status": "sent",
            "timestamp": format_ms(now_ms()),
        }));
        if let Some(r) = &reply_to {
            data.insert("replyToId".into(), json!(r));
        }
        // With a clientMessageId the record's id is derived from (sender, clientMessageId), so
        // the database itself refuses a second message for the key, across restarts and beyond
        // the dedup cache's window: a resend whose first answer was lost finds the first record.
        let id = client_id.as_deref().map(|c| dedup_id(&sender, c));
        let msg = match state
            .store
            .create(&Handle::Primary, "chat_messages", id.clone(), data)
            .await
        {
            Ok(msg) => msg,
            Err(DataClientError::Validation { field: Some(f), .. })
                if f == "id" && id.is_some() =>
            {
                let id = id.unwrap_or_default();
                return Ok(StoreOutcome::Existing(id));
            }
            Err(e) => return Err(e.into()),
        };
        state.sent.fetch_add(1, Ordering::Relaxed);
        Ok::<StoreOutcome, DaemonError>(StoreOutcome::Stored(msg))
    };

    let (mut msg, dedup) = match client_id.as_deref() {
        None => match store_it().await? {
            StoreOutcome::Stored(msg) => (msg, false),
            StoreOutcome::Existing(id) => (read_existing(state, &id).await?, true),
        },
        Some(cid) => {
            let key = format!("{sender}\u{1f}{cid}");
            let slot: Slot = state
                .dedup
                .get_or_insert_with(key, || Arc::new(OnceCell::new()));
            // The first sender stores and keeps the record it got; later ones read it back.
            let mut first: Option<Value> = None;
            let id = slot
                .get_or_try_init(|| async {
                    match store_it().await? {
                        StoreOutcome::Stored(msg) => {
                            let id = msg["id"]
                                .as_str()
                                .ok_or_else(|| DaemonError::internal("stored message has no id"))?
                                .to_owned();
                            first = Some(msg);
                            Ok::<String, DaemonError>(id)
                        }
                        // Stored before this host's cache knew it (an earlier run of the host).
                        StoreOutcome::Existing(id) => Ok(id),
                    }
                })
                .await?
                .clone();
            match first {
                Some(msg) => (msg, false),
                None => (read_existing(state, &id).await?, true),
            }
        }
    };
    if dedup {
        state.deduplicated.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(o) = msg.as_object_mut() {
        o.insert("deduplicated".into(), json!(dedup));
    }
    Ok(msg)
}

/// What storing a message did: stored it, or found the one its dedup key already names.
enum StoreOutcome {
    Stored(Value),
    Existing(String),
}

/// The record of an earlier send with the same dedup key (or a stub if it was deleted since).
async fn read_existing(state: &ChatState, id: &str) -> Result<Value, DaemonError> {
    match state
        .store
        .read(&Handle::Primary, "chat_messages", id)
        .await
    {
        Ok(msg) => Ok(msg),
        Err(DataClientError::NotFound { .. }) => Ok(json!({ "id": id, "deleted": true })),
        Err(e) => Err(e.into()),
    }
}

/// The record id of the message `sender` sent with `client_id`: a name-based UUID (v5) of the
/// pair, so the same key always names the same record.
fn dedup_id(sender: &str, client_id: &str) -> String {
    /// The namespace of chat dedup ids (a fixed random UUID).
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5d1c_7a0e_3f4b_4c2a_9e8d_61b0_2f7c_a913);
    let mut name = Vec::with_capacity(sender.len() + 1 + client_id.len());
    name.extend_from_slice(sender.as_bytes());
    name.push(0x1f);
    name.extend_from_slice(client_id.as_bytes());
    uuid::Uuid::new_v5(&NAMESPACE, &name).to_string()
}

async fn history(ctx: &Context, state: &ChatState, p: &Params) -> Result<Value, DaemonError> {
    let limit = p.limit(50, 500)?;
    let room = p.str_max("room", MAX_KEY)?;
    let check = ctx
        .router()
        .ask("room/check", json!({ "room": room }))
        .await?;
    let room_id = check["roomId"]
        .as_str()
        .ok_or_else(|| DaemonError::internal("room/check returned no roomId"))?;
    // One more than asked tells whether there is an older page.
    let want = limit + 1;
    let mut items = match p.get("before") {
        None => state.page(json!({ "roomId": room_id }), want).await?,
        Some(Value::Number(n)) => {
            let ms = n.as_i64().ok_or_else(|| {
                DaemonError::validation("before: epoch milliseconds out of range")
            })?;
            let ts = format_ms(ms);
            state
                .page(
                    json!({ "roomId": room_id, "timestamp": { "$lt": ts } }),
                    want,
                )
                .await?
        }
        Some(Value::String(s)) if s.len() <= MAX_KEY => {
            if let Some(ms) = parse_date_ms(s) {
                let ts = format_ms(ms);
                state
                    .page(
                        json!({ "roomId": room_id, "timestamp": { "$lt": ts } }),
                        want,
                    )
                    .await?
            } else {
                // A message id: strictly before (timestamp, id), as two indexed queries: the
                // same-millisecond messages with a smaller id, then the older ones.
                let anchor = match state.store.read(&Handle::Primary, "chat_messages", s).await {
                    Ok(m) => m,
                    Err(DataClientError::NotFound { .. }) => {
                        return Err(DaemonError::validation(format!(
                            "before: no message with id '{}' (or give a timestamp)",
                            short(s)
                        )));
                    }
                    Err(e) => return Err(e.into()),
                };
                if anchor["roomId"].as_str() != Some(room_id) {
                    return Err(DaemonError::validation(
                        "before: that message is in another room",
                    ));
                }
                let ts = anchor["timestamp"].clone();
                let mut same = state
                    .page(
                        json!({ "roomId": room_id, "timestamp": ts, "id": { "$lt": s } }),
                        want,
                    )
                    .await?;
                if same.len() < want {
                    let older = state
                        .page(
                            json!({ "roomId": room_id, "timestamp": { "$lt": ts } }),
                            want - same.len(),
                        )
                        .await?;
                    same.extend(older);
                }
                same
            }
        }
        Some(Value::String(_)) => {
            return Err(DaemonError::validation(format!(
                "before: at most {MAX_KEY} characters"
            )));
        }
        Some(_) => {
            return Err(DaemonError::bad_request(
                "before: must be a message id, an RFC 3339 timestamp or epoch milliseconds",
            ));
        }
    };
    let has_more = items.len() > limit;
    items.truncate(limit);
    items.reverse();
    let next_before = if has_more {
        items.first().and_then(id_of).map(str::to_owned)
    } else {
        None
    };
    Ok(json!({
        "roomId": room_id,
        "name": check["name"],
        "messages": items,
        "hasMore": has_more,
        "nextBefore": next_before,
    }))
}

impl Daemon for ChatDaemon {
    type State = ChatState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("chat")
            .requires("data")
            .requires("room")
            .requires("user")
            .command(
                CommandSpec::new(
                    "chat/send",
                    "Post a message to a room; publishes data:chat_messages:created",
                )
                .param("room", "string", true, "room name or id")
                .param("message", "string", true, "the text")
                .param(
                    "sender",
                    "string",
                    false,
                    "sender user id (default: the system user); must be a member",
                )
                .param(
                    "clientMessageId",
                    "string",
                    false,
                    "client's id: a resend returns the original (deduplicated: true)",
                )
                .param("replyTo", "string", false, "id of the message answered"),
            )
            .command(
                CommandSpec::new("chat/history", "A page of a room's messages, oldest first")
                    .param("room", "string", true, "room name or id")
                    .param(
                        "limit",
                        "non-negative integer",
                        false,
                        "page size, default 50, max 500",
                    )
                    .param(
                        "before",
                        "string|integer",
                        false,
                        "message id, RFC 3339 timestamp or epoch ms: only older messages",
                    ),
            )
    }

    async fn start(&self, ctx: &Context) -> Result<ChatState, BoxError> {
        let store = self.store.bind(ctx.router());
        let system = find_by_unique(&store, "users", SYSTEM_UNIQUE_ID)
            .await
            .map_err(|source| PlatformError::Data {
                what: "finding the system user",
                source,
            })?
            .ok_or(PlatformError::NoId("system user"))?;
        let system_id = id_of(&system)
            .ok_or(PlatformError::NoId("system user"))?
            .to_owned();
        let state = ChatState {
            store,
            dedup: cache("message-dedup", self.cfg.dedup_capacity),
            system_id,
            sent: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
        };
        state.publish_stats(ctx);
        Ok(state)
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &ChatState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let p = params_of(req.params)?;
        let out = match req.command.as_str() {
            "chat/send" => send(ctx, &self.cfg, state, &p).await,
            "chat/history" => history(ctx, state, &p).await,
            other => Err(DaemonError::unknown_command(format!(
                "chat daemon has no command '{}'",
                short(other)
            ))),
        };
        state.publish_stats(ctx);
        out
    }
}
