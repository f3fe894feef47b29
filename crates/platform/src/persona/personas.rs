//! [`Personas`]: every hosted persona's state, and what the daemon does with them (load, offer,
//! tick, reply, snapshot). Shared by the daemon's handlers, its scheduler and its timers.

use crate::persona::config::PersonasConfig;
use crate::persona::state::{
    Action, Heard, Hearing, InboxItem, Offered, PersonaSnapshot, PersonaState, SenderKind,
    truncate_utf8,
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
    /// When the persona user was created: it hears nothing older.
    pub(super) created_at: u64,
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
    /// Events the daemon's queue lost (each loss is repaired by a resync).
    pub(super) lost_events: Mutex<u64>,
    /// Resyncs finished (the load in deferred start, and one per loss of events).
    pub(super) resyncs: Mutex<u64>,
    pub(super) reply_failures: Mutex<u64>,
    /// Replies being written per room, not heard yet: they count toward the room's chain.
    /// At most `max_concurrent_replies` entries (one per reply task).
    pub(super) pending: Mutex<HashMap<String, u32>>,
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

    /// Load (or refresh) a persona from its user record, follow its rooms and catch up.
    pub(super) async fn add(&self, user: &Value) {
        let Some(id) = user.get("id").and_then(Value::as_str) else {
            return;
        };
        if !self.load(user).await {
            return;
        }
        let result = match self.sync_rooms(Some(id)).await {
            Ok(_) => self.catch_up(id, None).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(persona = id, error = %e, "Persona rooms could not be caught up");
        }
    }

    /// Load (or refresh) a persona from its user record; true when it was newly loaded.
    pub(super) async fn load(&self, user: &Value) -> bool {
        let Some(id) = user.get("id").and_then(Value::as_str) else {
            return false;
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
                return false;
            }
            if map.len() >= self.config.max_personas {
                *self.not_loaded.lock() += 1;
                tracing::warn!(
                    persona = id,
                    max = self.config.max_personas,
                    "Persona limit reached; not loaded"
                );
                return false;
            }
        }
        let now = now_ms_u64();
        let state = match self.load_snapshot(id).await {
            Some(snap) => PersonaState::restore(snap, self.config.persona.clone()),
            None => PersonaState::new(id, self.config.persona.clone(), now),
        };
        let next_tick = state.next_tick_at(now);
        let created_at = message_time_field(user, "createdAt").unwrap_or(0);
        self.map.lock().entry(id.to_owned()).or_insert(Entry {
            state,
            name,
            unique_id,
            created_at,
            next_tick,
            dirty: false,
        });
        self.wake.notify_one();
        true
    }

    pub(super) async fn remove(&self, id: &str) {
        let entry = self.map.lock().remove(id);
        if let Some(e) = entry
            && let Err(err) = self.save_snapshot(e.state.snapshot()).await
        {
            tracing::warn!(persona = id, error = %err, "Could not snapshot a removed persona");
        }
    }

    /// Hear a chat message (from the event stream, a catch-up or a reply just sent) in every
    /// persona that follows its room; returns how many queued it.
    pub(super) fn hear_message(&self, msg: &Value) -> usize {
        self.hear_in(msg, None)
    }

    /// [`Personas::hear_message`] for every persona, or only `only`.
    fn hear_in(&self, msg: &Value, only: Option<&str>) -> usize {
        let (Some(id), Some(room), Some(sender)) = (
            msg.get("id").and_then(Value::as_str),
            msg.get("roomId").and_then(Value::as_str),
            msg.get("senderId").and_then(Value::as_str),
        ) else {
            return 0;
        };
        let now = now_ms_u64();
        let at = message_time(msg).unwrap_or(now);
        let mut text = message_text(msg);
        let sender_type = msg
            .get("senderType")
            .and_then(Value::as_str)
            .unwrap_or("human");
        let kind = match sender_type {
            "human" => SenderKind::Human,
            "system" => SenderKind::System,
            _ => SenderKind::Ai,
        };
        let reply_to = msg.get("replyToId").and_then(Value::as_str);
        let lower = text.to_lowercase();
        // Every persona gets a copy: cut it to the preview first, so each copy is small.
        truncate_utf8(&mut text, self.config.persona.max_text_bytes);
        let mut offered = 0;
        let mut map = self.map.lock();
        for (pid, e) in map.iter_mut() {
            if only.is_some_and(|o| o != pid) || !e.state.follows(room) {
                continue;
            }
            let mentioned = pid != sender
                && (names(&lower, &e.name.to_lowercase())
                    || e.unique_id
                        .as_deref()
                        .is_some_and(|u| names(&lower, &u.to_lowercase())));
            // A mention raises priority only when a person (or the system) wrote it: another
            // persona's reply that quotes "@name" (retrieval answers quote earlier messages)
            // is chatter, and escalating it lets personas keep each other busy.
            let direct = mentioned && kind != SenderKind::Ai;
            let priority = match (direct, kind) {
                (true, _) => 200,
                (false, SenderKind::Human) => 100,
                (false, SenderKind::System) => 50,
                (false, SenderKind::Ai) => 20,
            };
            let heard = Heard {
                item: InboxItem {
                    message_id: id.to_owned(),
                    room_id: room.to_owned(),
                    sender_id: sender.to_owned(),
                    text: text.clone(),
                    priority,
                    received_at: now,
                    direct,
                },
                at,
                sender: kind,
                reply_to: reply_to.map(str::to_owned),
            };
            match e.state.hear(heard) {
                Hearing::NotFollowing | Hearing::BeforeJoin | Hearing::Seen => {}
                Hearing::Offered(Offered::Accepted | Offered::Displaced(_)) => {
                    offered += 1;
                    e.dirty = true;
                    // A new message may change the mood (and so the cadence): tick soon, or
                    // when a held-back reply may go.
                    e.next_tick = e.next_tick.min(e.state.next_tick_at(now));
                }
                Hearing::Own | Hearing::ChainSilenced | Hearing::Offered(_) => e.dirty = true,
            }
        }
        drop(map);
        if offered > 0 {
            self.wake.notify_one();
        }
        offered
    }

    /// Make every hosted persona (or only `only`) follow exactly the rooms it is a member of,
    /// reading every room a page at a time; returns the (persona, room) pairs newly followed.
    pub(super) async fn sync_rooms(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<(String, String)>, DataClientError> {
        let mut member_of: HashMap<String, HashMap<String, u64>> = HashMap::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list(
                    &Handle::Primary,
                    "rooms",
                    ListParams {
                        fields: Some(json!(["id", "members"])),
                        limit: Some(json!(self.config.rooms_page.clamp(1, 1000))),
                        cursor: cursor.take(),
                        ..Default::default()
                    },
                )
                .await?;
            {
                let map = self.map.lock();
                for room in &page.items {
                    let Some(rid) = room.get("id").and_then(Value::as_str) else {
                        continue;
                    };
                    for (uid, joined) in members(room) {
                        if map.contains_key(uid) && only.is_none_or(|o| o == uid) {
                            member_of
                                .entry(uid.to_owned())
                                .or_default()
                                .insert(rid.to_owned(), joined);
                        }
                    }
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut followed = Vec::new();
        let mut map = self.map.lock();
        for (pid, e) in map.iter_mut() {
            if only.is_some_and(|o| o != pid) {
                continue;
            }
            let rooms = member_of.remove(pid.as_str()).unwrap_or_default();
            let left: Vec<String> = e
                .state
                .rooms()
                .filter(|r| !rooms.contains_key(*r))
                .map(str::to_owned)
                .collect();
            for r in left {
                e.state.unfollow(&r);
                e.dirty = true;
            }
            for (rid, joined) in rooms {
                if e.state.follow(&rid, self.join_floor(e.created_at, joined)) {
                    e.dirty = true;
                    followed.push((pid.clone(), rid));
                }
            }
        }
        Ok(followed)
    }

    /// A room was created, updated or deleted: follow or unfollow it for every hosted persona
    /// by its member list; returns the personas that joined it now.
    pub(super) fn room_changed(&self, room: &Value, deleted: bool) -> Vec<String> {
        let Some(rid) = room.get("id").and_then(Value::as_str) else {
            return Vec::new();
        };
        let now_members: HashMap<&str, u64> = if deleted {
            HashMap::new()
        } else {
            members(room).collect()
        };
        let mut joined = Vec::new();
        let mut map = self.map.lock();
        for (pid, e) in map.iter_mut() {
            match now_members.get(pid.as_str()) {
                Some(at) => {
                    if e.state.follow(rid, self.join_floor(e.created_at, *at)) {
                        e.dirty = true;
                        joined.push(pid.clone());
                    }
                }
                None => {
                    if e.state.unfollow(rid) {
                        e.dirty = true;
                    }
                }
            }
        }
        joined
    }

    /// From when a persona created at `created` hears a room it joined at `joined`.
    fn join_floor(&self, created: u64, joined: u64) -> u64 {
        joined
            .saturating_sub(self.config.join_window_ms)
            .max(created)
    }

    /// Read what `persona` has not heard yet in each of `rooms` (every followed room when
    /// None), newest first up to what its inbox holds and no older than
    /// `catch_up_max_age_ms`, and hear it oldest first; what the bounds leave out is counted.
    pub(super) async fn catch_up(
        &self,
        persona: &str,
        rooms: Option<Vec<String>>,
    ) -> Result<usize, DataClientError> {
        let now = now_ms_u64();
        let rooms: Vec<(String, u64)> = {
            let map = self.map.lock();
            let Some(e) = map.get(persona) else {
                return Ok(0);
            };
            let list: Vec<String> =
                rooms.unwrap_or_else(|| e.state.rooms().map(str::to_owned).collect());
            list.into_iter()
                .filter_map(|r| {
                    let from = e
                        .state
                        .catch_up_from(&r, now, self.config.catch_up_max_age_ms)?;
                    Some((r, from))
                })
                .collect()
        };
        let take = self.config.persona.inbox_capacity.max(1);
        let mut queued = 0;
        for (room, from) in rooms {
            let filter = json!({
                "roomId": room,
                "timestamp": { "$gte": time::format_ms(i64::try_from(from).unwrap_or(i64::MAX)) },
            });
            let page = self
                .store
                .list(
                    &Handle::Primary,
                    "chat_messages",
                    ListParams {
                        filter: Some(filter.clone()),
                        order_by: Some(json!([
                            { "field": "timestamp", "direction": "desc" },
                            { "field": "id", "direction": "desc" }
                        ])),
                        limit: Some(json!(take)),
                        ..Default::default()
                    },
                )
                .await?;
            if page.next_cursor.is_some() {
                // More than the inbox holds: the newest are kept, the rest counted.
                let total = self
                    .store
                    .list(
                        &Handle::Primary,
                        "chat_messages",
                        ListParams {
                            filter: Some(filter),
                            limit: Some(json!(0)),
                            ..Default::default()
                        },
                    )
                    .await?
                    .count;
                let passed = total.saturating_sub(page.items.len() as u64);
                if let Some(e) = self.map.lock().get_mut(persona) {
                    e.state.note_passed_over(passed);
                    e.dirty = true;
                }
            }
            for m in page.items.iter().rev() {
                queued += self.hear_in(m, Some(persona));
            }
        }
        Ok(queued)
    }

    /// Everything a load, a restart or lost events need: every persona user loaded, every
    /// persona following exactly its rooms, and every room caught up.
    pub(super) async fn resync(&self) -> Result<(), DataClientError> {
        let page = self
            .store
            .list(
                &Handle::Primary,
                "users",
                ListParams {
                    filter: Some(json!({ "type": "persona" })),
                    order_by: Some(json!("createdAt")),
                    limit: Some(json!(self.config.max_personas.max(1))),
                    cursor: None,
                    fields: None,
                },
            )
            .await?;
        for user in &page.items {
            self.load(user).await;
        }
        self.sync_rooms(None).await?;
        let ids: Vec<String> = self.map.lock().keys().cloned().collect();
        for id in ids {
            self.catch_up(&id, None).await?;
        }
        *self.resyncs.lock() += 1;
        Ok(())
    }

    /// Tick every due persona; returns replies to make and the next wake-up time. Each reply
    /// is counted as pending in its room (see [`Personas::pending`]) until it is heard or
    /// fails: the caller ends it with [`Personas::reply`].
    pub(super) fn tick_due(&self, now: u64) -> (Vec<(String, String, InboxItem)>, Option<u64>) {
        let mut replies = Vec::new();
        let mut next: Option<u64> = None;
        let mut map = self.map.lock();
        let mut pending = self.pending.lock();
        for (pid, e) in map.iter_mut() {
            if e.next_tick <= now {
                let (mood, energy) = (e.state.mood(), e.state.energy());
                let actions = e
                    .state
                    .tick_with(now, |room| pending.get(room).copied().unwrap_or(0));
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
                        *pending.entry(item.room_id.clone()).or_default() += 1;
                        replies.push((pid.clone(), e.name.clone(), item));
                    }
                }
                e.next_tick = e.state.next_tick_at(now);
            }
            next = Some(next.map_or(e.next_tick, |n| n.min(e.next_tick)));
        }
        (replies, next)
    }

    /// Write one reply decided by [`Personas::tick_due`]; the sent message is heard at once by
    /// every persona of the room (its event, later, is a duplicate), then its pending count
    /// ends.
    pub(super) async fn reply(&self, ctx: &Context, persona: &str, name: &str, item: InboxItem) {
        let started = now_ms_u64();
        let result = self.generate_and_send(ctx, persona, name, &item).await;
        let spent = now_ms_u64().saturating_sub(started);
        if let Ok(Some(sent)) = &result {
            self.hear_message(sent);
        }
        {
            let mut pending = self.pending.lock();
            if let Some(n) = pending.get_mut(&item.room_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    pending.remove(&item.room_id);
                }
            }
        }
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
    ) -> Result<Option<Value>, DaemonError> {
        // A persona answers only where it may speak: rooms it is a member of.
        let check = ctx
            .router()
            .ask(
                "room/check",
                json!({ "room": item.room_id, "userId": persona }),
            )
            .await?;
        if check.get("member") != Some(&Value::Bool(true)) {
            // Left the room since: nothing is said, and the room is not followed any more.
            if let Some(e) = self.map.lock().get_mut(persona)
                && e.state.unfollow(&item.room_id)
            {
                e.dirty = true;
            }
            return Ok(None);
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
        let sent = ctx
            .router()
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
        Ok(Some(sent))
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
                "chains": s.rooms().map(|r| (r.to_owned(), json!(s.chain(r)))).collect::<serde_json::Map<_, _>>(),
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
                    "lostEvents": *self.lost_events.lock(),
                    "resyncs": *self.resyncs.lock(),
                })
            }
        }
    }
}

/// Whether `text` names `name` as a word of its own (both lowercased): "Sage, hi" and "@sage"
/// do, "message" does not.
pub(super) fn names(text: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(name).any(|(i, _)| {
        !word(text[..i].chars().next_back()) && !word(text[i + name.len()..].chars().next())
    })
}

/// A record's date field as epoch milliseconds.
fn message_time_field(m: &Value, field: &str) -> Option<u64> {
    match m.get(field)? {
        Value::String(s) => time::parse_date_ms(s).and_then(|v| u64::try_from(v).ok()),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// When a chat message was written (its `timestamp`, else `createdAt`).
fn message_time(m: &Value) -> Option<u64> {
    message_time_field(m, "timestamp").or_else(|| message_time_field(m, "createdAt"))
}

/// A room record's members as (user id, joined at) pairs.
fn members(room: &Value) -> impl Iterator<Item = (&str, u64)> {
    room.get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let uid = m.get("userId").and_then(Value::as_str)?;
            Some((uid, message_time_field(m, "joinedAt").unwrap_or(0)))
        })
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

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn a_mention_is_the_name_as_a_word_not_part_of_another() {
        assert!(names("sage, what is new?", "sage"));
        assert!(names("hi @sage!", "sage"));
        assert!(names("ask sage", "sage"));
        assert!(names("ask dr. who now", "dr. who"));
        assert!(!names("message 12", "sage"));
        assert!(!names("sages and sage_bot", "sage"));
        assert!(!names("anything", ""));
        assert!(names("é sage é", "sage"));
    }
}
