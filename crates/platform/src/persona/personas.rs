//! [`Personas`]: every hosted persona's state, and what the daemon does with them (load, offer,
//! tick, reply, snapshot). Shared by the daemon's handlers, its scheduler and its timers.

use crate::persona::config::PersonasConfig;
use crate::persona::state::{
    Action, InboxItem, Offered, PersonaSnapshot, PersonaState, truncate_utf8,
};
use daemonhost_data_client::{Data, DataClientError, Handle, ListParams};
use daemonhost_protocol::time;
use daemonhost_runtime::{BoxError, Context, DaemonError, Semaphore};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Notify;

pub(super) struct Entry {
    pub(super) state: PersonaState,
    pub(super) name: String,
    pub(super) unique_id: Option<String>,
    pub(super) next_tick: u64,
    pub(super) dirty: bool,
}

/// What the daemon owns while it runs.
pub struct Personas {
    pub(super) store: Data,
    pub(super) config: PersonasConfig,
    pub(super) map: Mutex<HashMap<String, Entry>>,
    pub(super) wake: Notify,
    pub(super) replies: Semaphore,
    pub(super) not_loaded: Mutex<u64>,
    pub(super) reply_failures: Mutex<u64>,
}

impl std::fmt::Debug for Personas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Personas")
            .field("personas", &self.map.lock().len())
            .finish_non_exhaustive()
    }
}

/// [`time::now_ms`] as the unsigned milliseconds the persona state counts in.
pub(super) fn now_ms_u64() -> u64 {
    u64::try_from(time::now_ms()).unwrap_or(0)
}

pub(super) fn data_err(e: DataClientError) -> BoxError {
    Box::new(e)
}

/// Change of energy within one tick that makes a persona's state worth a snapshot.
const SNAPSHOT_ENERGY_STEP: f32 = 0.05;

impl Personas {
    pub(super) async fn load_snapshot(&self, id: &str) -> Option<PersonaSnapshot> {
        match self.store.snapshot_read(id).await {
            Ok(Some(v)) => serde_json::from_value(v).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(persona = id, error = %e, "Cannot read the persona's snapshot; starting afresh");
                None
            }
        }
    }

    pub(super) async fn save_snapshot(&self, snap: PersonaSnapshot) -> Result<(), DataClientError> {
        let v = serde_json::to_value(&snap)
            .map_err(|e| DataClientError::Other(DaemonError::internal(format!("snapshot: {e}"))))?;
        self.store.snapshot_write(&snap.persona_id, v).await
    }

    /// Load (or refresh) a persona from its user record.
    pub(super) async fn add(&self, user: &Value) {
        let Some(id) = user.get("id").and_then(Value::as_str) else {
            return;
        };
        let name = user
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_owned();
        let unique_id = user
            .get("uniqueId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        {
            let mut map = self.map.lock();
            if let Some(e) = map.get_mut(id) {
                e.name = name;
                e.unique_id = unique_id;
                return;
            }
            if map.len() >= self.config.max_personas {
                *self.not_loaded.lock() += 1;
                tracing::warn!(
                    persona = id,
                    max = self.config.max_personas,
                    "Persona limit reached; not loaded"
                );
                return;
            }
        }
        let now = now_ms_u64();
        let state = match self.load_snapshot(id).await {
            Some(snap) => PersonaState::restore(snap, self.config.persona.clone()),
            None => PersonaState::new(id, self.config.persona.clone(), now),
        };
        let next_tick = state.next_tick_at(now);
        self.map.lock().entry(id.to_owned()).or_insert(Entry {
            state,
            name,
            unique_id,
            next_tick,
            dirty: false,
        });
        self.wake.notify_one();
    }

    pub(super) async fn remove(&self, id: &str) {
        let entry = self.map.lock().remove(id);
        if let Some(e) = entry
            && let Err(err) = self.save_snapshot(e.state.snapshot()).await
        {
            tracing::warn!(persona = id, error = %err, "Could not snapshot a removed persona");
        }
    }

    /// Offer a new chat message to every persona following its room (except its sender).
    pub(super) fn offer(&self, msg: &Value) -> usize {
        let (Some(id), Some(room), Some(sender)) = (
            msg.get("id").and_then(Value::as_str),
            msg.get("roomId").and_then(Value::as_str),
            msg.get("senderId").and_then(Value::as_str),
        ) else {
            return 0;
        };
        let mut text = message_text(msg);
        let sender_type = msg
            .get("senderType")
            .and_then(Value::as_str)
            .unwrap_or("human");
        let lower = text.to_lowercase();
        // Every persona gets a copy: cut it to the preview first, so each copy is small.
        truncate_utf8(&mut text, self.config.persona.max_text_bytes);
        let now = now_ms_u64();
        let mut offered = 0;
        let mut map = self.map.lock();
        for (pid, e) in map.iter_mut() {
            if pid == sender {
                continue;
            }
            // Personas follow the rooms they hear from (bounded by `max_rooms`).
            e.state.follow(room);
            let mentioned = lower.contains(&e.name.to_lowercase())
                || e.unique_id
                    .as_deref()
                    .is_some_and(|u| lower.contains(&u.to_lowercase()));
            // A mention raises priority only when a person (or the system) wrote it: another
            // persona's reply that quotes "@name" (retrieval answers quote earlier messages)
            // is chatter, and escalating it lets personas keep each other busy.
            let priority = match (mentioned, sender_type) {
                (true, "human" | "system") => 200,
                (false, "human") => 100,
                (_, "system") => 50,
                _ => 20,
            };
            let item = InboxItem {
                message_id: id.to_owned(),
                room_id: room.to_owned(),
                sender_id: sender.to_owned(),
                text: text.clone(),
                priority,
                received_at: now,
            };
            if matches!(
                e.state.offer(item),
                Offered::Accepted | Offered::Displaced(_)
            ) {
                offered += 1;
                e.dirty = true;
                // A new message may change the mood (and so the cadence): tick soon, or when
                // a held-back reply may go.
                e.next_tick = e.next_tick.min(e.state.next_tick_at(now));
            }
        }
        drop(map);
        if offered > 0 {
            self.wake.notify_one();
        }
        offered
    }

    /// Tick every due persona; returns replies to make and the next wake-up time.
    pub(super) fn tick_due(&self, now: u64) -> (Vec<(String, String, InboxItem)>, Option<u64>) {
        let mut replies = Vec::new();
        let mut next: Option<u64> = None;
        let mut map = self.map.lock();
        for (pid, e) in map.iter_mut() {
            if e.next_tick <= now {
                let (mood, energy) = (e.state.mood(), e.state.energy());
                let actions = e.state.tick(now);
                // A tick that did nothing but let energy recover a little is not worth a
                // snapshot: an idle host does not rewrite every persona's database each
                // interval. A reply, a new mood or a visible change of energy are (new
                // messages mark it dirty when they arrive).
                if actions.iter().any(|a| matches!(a, Action::Reply { .. }))
                    || e.state.mood() != mood
                    || (e.state.energy() - energy).abs() >= SNAPSHOT_ENERGY_STEP
                {
                    e.dirty = true;
                }
                for action in actions {
                    if let Action::Reply { item } = action {
                        replies.push((pid.clone(), e.name.clone(), item));
                    }
                }
                e.next_tick = e.state.next_tick_at(now);
            }
            next = Some(next.map_or(e.next_tick, |n| n.min(e.next_tick)));
        }
        (replies, next)
    }

    pub(super) async fn reply(&self, ctx: &Context, persona: &str, name: &str, item: InboxItem) {
        let started = now_ms_u64();
        let result = self.generate_and_send(ctx, persona, name, &item).await;
        let spent = now_ms_u64().saturating_sub(started);
        if let Some(e) = self.map.lock().get_mut(persona) {
            e.state.record_compute(now_ms_u64(), spent);
            e.dirty = true;
        }
        if let Err(err) = result {
            *self.reply_failures.lock() += 1;
            tracing::warn!(persona, message = %item.message_id, error = %err, "Persona reply failed");
        }
    }

    pub(super) async fn generate_and_send(
        &self,
        ctx: &Context,
        persona: &str,
        name: &str,
        item: &InboxItem,
    ) -> Result<(), DaemonError> {
        // A persona answers only where it may speak: rooms it is a member of.
        let check = ctx
            .router()
            .ask(
                "room/check",
                json!({ "room": item.room_id, "userId": persona }),
            )
            .await?;
        if check.get("member") != Some(&Value::Bool(true)) {
            return Ok(());
        }
        // Context: the last N messages of the room, in one query.
        let page = self
            .store
            .list(
                &Handle::Primary,
                "chat_messages",
                ListParams {
                    filter: Some(json!({ "roomId": item.room_id })),
                    order_by: Some(json!("-timestamp")),
                    limit: Some(json!(self.config.context_messages.max(1))),
                    cursor: None,
                    fields: None,
                },
            )
            .await
            .map_err(DaemonError::from)?;
        let mut messages = vec![json!({
            "role": "system",
            "content": format!("You are {name}, a persona in a group chat. Reply briefly and helpfully."),
        })];
        for m in page.items.iter().rev() {
            let mine = m.get("senderId").and_then(Value::as_str) == Some(persona);
            messages.push(json!({
                "role": if mine { "assistant" } else { "user" },
                "content": message_text(m),
            }));
        }
        if page.items.is_empty() {
            messages.push(json!({ "role": "user", "content": item.text }));
        }
        let answer = ctx
            .router()
            .ask_timeout(
                "ai/generate",
                json!({ "messages": messages, "roomId": item.room_id }),
                Duration::from_millis(self.config.reply_timeout_ms),
            )
            .await?;
        let text = answer
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned();
        if text.is_empty() {
            return Err(DaemonError::internal(
                "the AI provider returned an empty reply",
            ));
        }
        ctx.router()
            .ask(
                "chat/send",
                json!({
                    "room": item.room_id,
                    "message": text,
                    "sender": persona,
                    "replyTo": item.message_id,
                    "clientMessageId": format!("{persona}:{}", item.message_id),
                }),
            )
            .await?;
        Ok(())
    }

    /// Snapshot every dirty persona; returns how many were written.
    pub(super) async fn snapshot_dirty(&self) -> usize {
        // One persona at a time: a snapshot copies the whole inbox (up to 256 items), so
        // taking all twenty first held ~2 MB at once, every round, for nothing.
        let dirty: Vec<String> = self
            .map
            .lock()
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(id, _)| id.clone())
            .collect();
        let mut n = 0;
        for id in dirty {
            let snap = match self.map.lock().get_mut(&id) {
                Some(e) if e.dirty => {
                    e.dirty = false;
                    e.state.snapshot()
                }
                // Removed (and snapshotted by `remove`) or saved meanwhile.
                _ => continue,
            };
            n += 1;
            if let Err(e) = self.save_snapshot(snap).await {
                tracing::warn!(persona = %id, error = %e, "Persona snapshot failed");
            }
        }
        n
    }

    pub(super) fn status(&self, id: Option<&str>) -> Value {
        let map = self.map.lock();
        let now = now_ms_u64();
        let one = |pid: &str, e: &Entry| {
            let s = &e.state;
            json!({
                "id": pid,
                "name": e.name,
                "mood": s.mood(),
                "energy": s.energy(),
                "attention": s.attention(),
                "inbox": s.inbox_len(),
                "rooms": s.rooms().count(),
                "nextTickInMs": e.next_tick.saturating_sub(now),
                // Set while pacing or the window holds the next reply back.
                "nextReplyInMs": s.reply_gate().filter(|g| *g > now).map(|g| g - now),
                "counters": s.counters(),
            })
        };
        match id {
            Some(id) => map.get(id).map(|e| one(id, e)).unwrap_or(Value::Null),
            None => {
                let mut all: Vec<Value> = map.iter().map(|(k, e)| one(k, e)).collect();
                all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
                json!({
                    "personas": all,
                    "count": map.len(),
                    "notLoaded": *self.not_loaded.lock(),
                    "replyFailures": *self.reply_failures.lock(),
                })
            }
        }
    }
}

fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(c) => c
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| c.to_string()),
        None => String::new(),
    }
}
