//! The `training` daemon: turns new chat messages in configured rooms into `training_examples`.
//!
//! On `data:chat_messages:created` in a configured room it fetches the room's last
//! [`TrainingConfig::context`] messages up to and including the new one in **one** `list` query
//! (the seed then read every sender separately, an N+1; the sender's name and kind are already on
//! each message) and stores one `training_examples` record `{roomId, messages (oldest first),
//! messageCount, source: "chat"}`.
//!
//! Bounds: the event queue holds at most [`TrainingConfig::queue`] messages and at most
//! [`TrainingConfig::concurrency`] are processed at once; when the queue overflows the bus drops
//! the oldest and the daemon counts them as `skippedOverloaded` instead of buffering without
//! limit. Whether a room is configured is cached per room id in the `training-rooms` LRU (one
//! room read per room, not per message). With no rooms configured the daemon subscribes to
//! nothing and stays idle.

use crate::util::{cache, id_of, obj, short, stats_json};
use daemonhost_data_client::{Data, DataClient, DataClientError, Handle, ListParams};
use daemonhost_runtime::{
    BoundedCache, BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Delivery,
    Request,
};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// Settings of the [`TrainingDaemon`].
#[derive(Debug, Clone)]
pub struct TrainingConfig {
    /// Room names (or ids) whose messages become examples; empty = idle.
    pub rooms: Vec<String>,
    /// Messages of context per example (1–100).
    pub context: usize,
    /// Messages waiting to be processed before the oldest are dropped.
    pub queue: usize,
    /// Messages processed at once.
    pub concurrency: usize,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            rooms: Vec::new(),
            context: 10,
            queue: 256,
            concurrency: 2,
        }
    }
}

/// The training daemon (name `training`).
#[derive(Debug, Clone)]
pub struct TrainingDaemon {
    store: DataClient,
    cfg: TrainingConfig,
}

impl TrainingDaemon {
    /// A training daemon reading the store from `store`.
    pub fn new(store: DataClient, cfg: TrainingConfig) -> Self {
        TrainingDaemon { store, cfg }
    }

    fn context(&self) -> usize {
        self.cfg.context.clamp(1, 100)
    }
}

/// The running training daemon's state.
#[derive(Debug)]
pub struct TrainingState {
    store: Data,
    rooms: HashSet<String>,
    watched: BoundedCache<String, bool>,
    examples: AtomicU64,
    context_queries: AtomicU64,
    skipped: AtomicU64,
    ignored: AtomicU64,
    failures: AtomicU64,
}

impl TrainingState {
    fn stats(&self) -> Value {
        json!({
            "rooms": self.rooms.iter().collect::<Vec<_>>(),
            "examples": self.examples.load(Ordering::Relaxed),
            "contextQueries": self.context_queries.load(Ordering::Relaxed),
            "skippedOverloaded": self.skipped.load(Ordering::Relaxed),
            "ignored": self.ignored.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "caches": { "training-rooms": stats_json(&self.watched.stats()) },
        })
    }

    /// Whether room `room_id` is configured (cached per room id).
    async fn watched(&self, room_id: &str) -> Result<bool, DataClientError> {
        if let Some(w) = self.watched.get(&room_id.to_owned()) {
            return Ok(w);
        }
        let w = if self.rooms.contains(room_id) {
            true
        } else {
            match self.store.read(&Handle::Primary, "rooms", room_id).await {
                Ok(r) => ["uniqueId", "name"].iter().any(|k| {
                    r.get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(|n| self.rooms.contains(&n.to_lowercase()))
                }),
                Err(DataClientError::NotFound { .. }) => false,
                Err(e) => return Err(e),
            }
        };
        self.watched.insert(room_id.to_owned(), w);
        Ok(w)
    }

    async fn example(&self, msg: &Value, n: usize) -> Result<Option<Value>, DataClientError> {
        let (Some(room_id), Some(id), Some(ts)) = (
            msg.get("roomId").and_then(Value::as_str),
            id_of(msg),
            msg.get("timestamp").and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        if !self.watched(room_id).await? {
            self.ignored.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        // Up to and including this message: not later timestamps, and at this timestamp not
        // later ids (ids are time-ordered UUID v7).
        self.context_queries.fetch_add(1, Ordering::Relaxed);
        let page = self
            .store
            .list(
                &Handle::Primary,
                "chat_messages",
                ListParams {
                    filter: Some(json!({
                        "roomId": room_id,
                        "timestamp": { "$lte": ts },
                        "id": { "$lte": id },
                    })),
                    order_by: Some(json!([{ "field": "timestamp", "direction": "desc" }])),
                    limit: Some(json!(n)),
                    fields: Some(json!([
                        "senderId",
                        "senderName",
                        "senderType",
                        "content",
                        "timestamp"
                    ])),
                    ..Default::default()
                },
            )
            .await?;
        let messages: Vec<Value> = page
            .items
            .into_iter()
            .rev()
            .map(|m| {
                let role = match m.get("senderType").and_then(Value::as_str) {
                    Some("human") => "user",
                    Some("system") => "system",
                    _ => "assistant",
                };
                json!({
                    "id": m.get("id"),
                    "role": role,
                    "senderId": m.get("senderId"),
                    "senderName": m.get("senderName"),
                    "text": m.get("content").and_then(|c| c.get("text")),
                    "timestamp": m.get("timestamp"),
                })
            })
            .collect();
        let rec = self
            .store
            .create(
                &Handle::Primary,
                "training_examples",
                None,
                obj(json!({
                    "roomId": room_id,
                    "messageCount": messages.len(),
                    "messages": messages,
                    "source": "chat",
                })),
            )
            .await?;
        self.examples.fetch_add(1, Ordering::Relaxed);
        Ok(Some(rec))
    }
}

impl Daemon for TrainingDaemon {
    type State = TrainingState;

    fn spec(&self) -> DaemonSpec {
        let mut s = DaemonSpec::new("training")
            .requires("data")
            .concurrency(self.cfg.concurrency.max(1))
            .event_queue(self.cfg.queue.max(1))
            .command(CommandSpec::new(
                "training/status",
                "Configured rooms and counters (examples, contextQueries, skippedOverloaded)",
            ));
        if !self.cfg.rooms.is_empty() {
            s = s.events("data:chat_messages:created");
        }
        s
    }

    async fn start(&self, ctx: &Context) -> Result<TrainingState, BoxError> {
        let state = TrainingState {
            store: self.store.bind(ctx.router()),
            rooms: self.cfg.rooms.iter().map(|r| r.to_lowercase()).collect(),
            watched: cache("training-rooms", 256),
            examples: AtomicU64::new(0),
            context_queries: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        ctx.set_details(state.stats());
        Ok(state)
    }

    async fn handle(
        &self,
        _ctx: &Context,
        state: &TrainingState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        match req.command.as_str() {
            "training/status" => {
                let mut s = state.stats();
                s["context"] = json!(self.context());
                Ok(s)
            }
            other => Err(DaemonError::unknown_command(format!(
                "training daemon has no command '{}'",
                short(other)
            ))),
        }
    }

    async fn on_event(&self, ctx: &Context, state: &TrainingState, d: Delivery) {
        match d {
            Delivery::Event(ev) => {
                if let Err(e) = state.example(ev.data(), self.context()).await {
                    state.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "training example not stored");
                }
            }
            Delivery::Lagged { missed } => {
                state.skipped.fetch_add(missed, Ordering::Relaxed);
            }
        }
        ctx.set_details(state.stats());
    }
}
