//! A persona's long-running state as a pure value (the seed's Rust priority 1).
//!
//! Personas run for days; in the original they were where memory grew without bound. Here every
//! collection is bounded (inbox, rooms, reply window), time is passed in as milliseconds instead of
//! read from a clock, and all decisions come from [`PersonaState::tick`], a pure function of the
//! state and `now`. The daemon around it only feeds messages in, calls `tick` on the cadence that
//! [`PersonaState::next_tick_in`] asks for, carries out the returned [`Action`]s and snapshots the
//! value. That makes every behaviour (overflow, moods, rate limits, energy) testable without
//! tasks, timers or I/O.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Milliseconds since the Unix epoch (or any fixed origin; only differences matter).
pub type Millis = u64;

/// Tunables. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonaConfig {
    /// Inbox bound; on overflow the lowest-priority item is dropped and counted.
    pub inbox_capacity: usize,
    /// Items older than this are dropped at the next tick (a stale question is not answered).
    pub max_item_age_ms: u64,
    /// Replies allowed per `rate_window_ms`.
    pub max_replies: usize,
    /// Sliding window of the reply rate limit.
    pub rate_window_ms: u64,
    /// Energy spent per reply (energy is 0.0..=1.0).
    pub energy_per_reply: f32,
    /// Energy regained per second.
    pub energy_recovery_per_sec: f32,
    /// Below this energy the persona is tired and rests.
    pub tired_below: f32,
    /// Resting lasts until energy is back above this.
    pub rested_above: f32,
    /// Inbox load (len / capacity) at which the persona is overwhelmed.
    pub overwhelmed_load: f32,
    /// Generation time (ms) the persona may spend per `rate_window_ms`; past it, it counts as tired.
    pub compute_budget_ms: u64,
    /// Most replies decided in one tick when overwhelmed (triage); otherwise one. Paced
    /// personas reply once per gap whatever the mood (the inbox order still puts the most
    /// important first).
    pub overwhelmed_replies_per_tick: usize,
    /// Spread replies over the rate window instead of spending its allowance in one burst:
    /// after a reply the next waits `rate_window_ms / max_replies` on average. Without it, 20
    /// personas hearing the same room all answered in the same second, six times each, then
    /// waited for the window together: a herd at the AI providers every minute.
    pub pace_replies: bool,
    /// How much each pacing gap varies around its mean (0.25: from 0.75 to 1.25 times), drawn
    /// per persona and per reply from a deterministic sequence, so personas that start together
    /// drift apart. The sliding window still caps the count.
    pub pace_jitter: f32,
    /// Bound on rooms followed.
    pub max_rooms: usize,
    /// Bound on the text kept per inbox item, in bytes: a preview (for `persona/status` and
    /// the empty-room fallback). A reply's context is read from the room when it is written,
    /// so the inbox need not hold whole messages: 20 personas × 256 items of whole retrieval
    /// answers (≈ 1.6 KB each) was 8 MB, filling over many minutes.
    pub max_text_bytes: usize,
    /// Most persona messages in a row in one room after a human (or system) message: past it,
    /// personas stay silent in that room until a human writes again. Counted per room over
    /// every persona (a persona's own messages included); a human's direct mention of this
    /// persona is answered whatever the chain. 0: personas answer only direct mentions.
    pub max_chain: u32,
    /// Message ids remembered per followed room to drop a message heard twice (a catch-up
    /// re-reading what the event stream delivered, or the event of a reply already heard).
    pub seen_ids: usize,
    /// How far before the newest message heard in a room a catch-up starts reading: covers
    /// messages committed out of timestamp order.
    pub cursor_skew_ms: u64,
    /// Tick cadence per mood.
    pub tick_idle_ms: u64,
    /// Tick cadence when active.
    pub tick_active_ms: u64,
    /// Tick cadence when tired.
    pub tick_tired_ms: u64,
    /// Tick cadence when overwhelmed.
    pub tick_overwhelmed_ms: u64,
}

impl Default for PersonaConfig {
    fn default() -> Self {
        PersonaConfig {
            inbox_capacity: 256,
            max_item_age_ms: 10 * 60 * 1000,
            max_replies: 6,
            rate_window_ms: 60_000,
            energy_per_reply: 0.1,
            energy_recovery_per_sec: 0.01,
            tired_below: 0.2,
            rested_above: 0.5,
            overwhelmed_load: 0.75,
            compute_budget_ms: 30_000,
            overwhelmed_replies_per_tick: 2,
            pace_replies: true,
            pace_jitter: 0.25,
            max_rooms: 1024,
            max_text_bytes: 256,
            max_chain: 2,
            seen_ids: 512,
            cursor_skew_ms: 5_000,
            tick_idle_ms: 5_000,
            tick_active_ms: 1_000,
            tick_tired_ms: 10_000,
            tick_overwhelmed_ms: 500,
        }
    }
}

/// How the persona feels, derived from inbox load, energy and compute spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mood {
    /// Nothing to do.
    Idle,
    /// Working through the inbox.
    Active,
    /// Out of energy or compute budget: resting.
    Tired,
    /// The inbox is nearly full: triage, highest priority first.
    Overwhelmed,
}

/// A message waiting for the persona's attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxItem {
    /// The chat message id.
    pub message_id: String,
    /// Room it was posted in.
    pub room_id: String,
    /// Who wrote it.
    pub sender_id: String,
    /// The text (truncated to `max_text_bytes`).
    pub text: String,
    /// Higher is more urgent (a direct mention beats ambient chatter).
    pub priority: u8,
    /// When it arrived.
    pub received_at: Millis,
    /// A human (or the system) named this persona: answered even past the chain limit.
    #[serde(default)]
    pub direct: bool,
}

/// Who wrote a message, as far as conversation chains go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderKind {
    /// A person: ends a chain.
    Human,
    /// The system: ends a chain.
    System,
    /// A persona or an agent: one more link of the chain.
    Ai,
}

/// A chat message as a persona hears it (from the event stream, a catch-up read, or a reply
/// just sent by the daemon).
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    /// The message as an inbox item (priority and `direct` already decided).
    pub item: InboxItem,
    /// The message's own timestamp (not the time it was heard).
    pub at: Millis,
    /// Who wrote it.
    pub sender: SenderKind,
    /// The message it answers, if any.
    pub reply_to: Option<String>,
}

/// What hearing a message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Hearing {
    /// The persona does not follow (is not a member of) the room.
    NotFollowing,
    /// Written before the persona joined the room.
    BeforeJoin,
    /// Heard before: nothing changed.
    Seen,
    /// The persona's own message: it counts in the room's chain, nothing is queued.
    Own,
    /// A persona message past the room's chain limit: not queued, counted.
    ChainSilenced,
    /// Offered to the inbox.
    Offered(Offered),
}

/// Where a persona is in one room it follows (kept in its snapshot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoomCursor {
    /// Messages before this (the join, less a grace window) are not for the persona.
    pub joined: Millis,
    /// Timestamp of the newest message heard in the room.
    pub newest: Millis,
    /// Ids of the last messages heard (at most `seen_ids`), oldest first.
    pub seen: VecDeque<String>,
    /// Persona messages since the last human or system message.
    pub chain: u32,
}

/// What the persona decided to do at a tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Generate and post a reply to this message.
    Reply {
        /// The item being answered.
        item: InboxItem,
    },
    /// Recover energy until this time.
    Rest {
        /// When resting ends at the earliest.
        until: Millis,
    },
    /// Nothing to do.
    Idle,
}

/// What happened to an item offered to the inbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Offered {
    /// Queued.
    Accepted,
    /// Queued, and this lower-priority item was dropped to make room.
    Displaced(InboxItem),
    /// Not queued: it had the lowest priority of all.
    Rejected,
    /// Not queued: the persona does not follow that room.
    NotFollowing,
    /// Not queued: already in the inbox (same message id).
    Duplicate,
}

/// Counters kept across snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PersonaCounters {
    /// Items accepted into the inbox.
    pub received: u64,
    /// Items dropped or rejected because the inbox was full.
    pub dropped_overflow: u64,
    /// Items dropped because they grew stale.
    pub dropped_stale: u64,
    /// Replies decided.
    pub replies: u64,
    /// Ticks where the rate limit (the sliding window) held a reply back.
    pub rate_limited: u64,
    /// Ticks where pacing held a reply back (the window still had room).
    pub paced: u64,
    /// Ticks spent resting.
    pub rests: u64,
    /// Messages not answered because the room's persona chain was at its limit.
    pub chain_silenced: u64,
    /// Messages a catch-up passed over: older than its maximum age, or beyond what the inbox
    /// holds.
    pub passed_over: u64,
    /// Rooms not followed because `max_rooms` were followed already.
    pub rooms_refused: u64,
}

/// The serialisable form of a persona's state (what is written to its database handle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonaSnapshot {
    /// Persona user id.
    pub persona_id: String,
    /// Inbox, highest priority first.
    pub inbox: Vec<InboxItem>,
    /// Energy 0.0..=1.0.
    pub energy: f32,
    /// Attention 0.0..=1.0.
    pub attention: f32,
    /// Mood at snapshot time.
    pub mood: Mood,
    /// Rooms followed (kept for snapshots written before cursors; `cursors` wins).
    pub rooms: Vec<String>,
    /// Each followed room's cursor.
    #[serde(default)]
    pub cursors: BTreeMap<String, RoomCursor>,
    /// Reply times inside the rate window.
    pub recent_replies: Vec<Millis>,
    /// Generation time spent inside the rate window: (when, ms).
    pub recent_compute: Vec<(Millis, u64)>,
    /// Resting until, if resting.
    pub resting_until: Option<Millis>,
    /// Last tick time.
    pub last_tick: Millis,
    /// Counters.
    pub counters: PersonaCounters,
}

/// The live state. All methods are pure functions of `self` and their arguments.
#[derive(Debug, Clone)]
pub struct PersonaState {
    persona_id: String,
    config: PersonaConfig,
    /// Keyed by (priority, reversed arrival sequence): the last entry is the highest priority,
    /// oldest among equals (answered first); the first is the lowest priority, newest among
    /// equals (dropped first on overflow).
    inbox: BTreeMap<(u8, std::cmp::Reverse<u64>), InboxItem>,
    seq: u64,
    energy: f32,
    attention: f32,
    mood: Mood,
    rooms: BTreeMap<String, RoomCursor>,
    recent_replies: VecDeque<Millis>,
    recent_compute: VecDeque<(Millis, u64)>,
    resting_until: Option<Millis>,
    last_tick: Millis,
    counters: PersonaCounters,
    /// Seeds the pacing jitter: a stable hash of the persona id.
    pace_seed: u64,
}

impl PersonaState {
    /// A fresh persona: full energy, idle, empty inbox, following no rooms.
    pub fn new(persona_id: impl Into<String>, config: PersonaConfig, now: Millis) -> Self {
        let persona_id = persona_id.into();
        PersonaState {
            pace_seed: fnv1a(persona_id.as_bytes()),
            persona_id,
            config,
            inbox: BTreeMap::new(),
            seq: 0,
            energy: 1.0,
            attention: 1.0,
            mood: Mood::Idle,
            rooms: BTreeMap::new(),
            recent_replies: VecDeque::new(),
            recent_compute: VecDeque::new(),
            resting_until: None,
            last_tick: now,
            counters: PersonaCounters::default(),
        }
    }

    /// The persona's id.
    pub fn persona_id(&self) -> &str {
        &self.persona_id
    }
    /// Current mood.
    pub fn mood(&self) -> Mood {
        self.mood
    }
    /// Current energy.
    pub fn energy(&self) -> f32 {
        self.energy
    }
    /// Current attention: how much of itself the persona can give the next message (falls as the
    /// inbox fills and energy drains).
    pub fn attention(&self) -> f32 {
        self.attention
    }
    /// Items waiting.
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }
    /// Counters.
    pub fn counters(&self) -> &PersonaCounters {
        &self.counters
    }
    /// Rooms followed.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }
    /// A followed room's cursor.
    pub fn cursor(&self, room_id: &str) -> Option<&RoomCursor> {
        self.rooms.get(room_id)
    }
    /// Whether the persona follows the room.
    pub fn follows(&self, room_id: &str) -> bool {
        self.rooms.contains_key(room_id)
    }
    /// The configuration.
    pub fn config(&self) -> &PersonaConfig {
        &self.config
    }

    /// Follow a room, hearing its messages from `joined` on. Returns false when already
    /// following (the cursor is kept) or at the room bound (counted in `rooms_refused`).
    pub fn follow(&mut self, room_id: &str, joined: Millis) -> bool {
        if self.rooms.contains_key(room_id) {
            return false;
        }
        if self.rooms.len() >= self.config.max_rooms {
            self.counters.rooms_refused += 1;
            return false;
        }
        self.rooms.insert(
            room_id.to_owned(),
            RoomCursor {
                joined,
                newest: joined,
                ..RoomCursor::default()
            },
        );
        true
    }

    /// Stop following a room and drop its waiting items.
    pub fn unfollow(&mut self, room_id: &str) -> bool {
        self.inbox.retain(|_, it| it.room_id != room_id);
        let was = self.rooms.remove(room_id).is_some();
        if was {
            self.update_mood();
        }
        was
    }

    /// Where a catch-up of `room_id` starts reading at `now`: the newest message heard less the
    /// skew, never before the join, never older than `max_age_ms`. None when not following.
    pub fn catch_up_from(&self, room_id: &str, now: Millis, max_age_ms: u64) -> Option<Millis> {
        let c = self.rooms.get(room_id)?;
        Some(
            c.newest
                .saturating_sub(self.config.cursor_skew_ms)
                .max(c.joined)
                .max(now.saturating_sub(max_age_ms)),
        )
    }

    /// Count messages a catch-up passed over (see [`PersonaCounters::passed_over`]).
    pub fn note_passed_over(&mut self, n: u64) {
        self.counters.passed_over += n;
    }

    /// Hear a message of a room: each message is taken once whatever the path it comes by
    /// (event, catch-up, own reply), counts in the room's persona chain, and is offered to the
    /// inbox unless it is the persona's own or a persona message past the chain limit.
    pub fn hear(&mut self, heard: Heard) -> Hearing {
        let Heard {
            item,
            at,
            sender,
            reply_to,
        } = heard;
        let seen_cap = self.config.seen_ids.max(1);
        let Some(cursor) = self.rooms.get_mut(&item.room_id) else {
            return Hearing::NotFollowing;
        };
        if at < cursor.joined {
            return Hearing::BeforeJoin;
        }
        if cursor.seen.iter().any(|id| *id == item.message_id) {
            return Hearing::Seen;
        }
        cursor.seen.push_back(item.message_id.clone());
        while cursor.seen.len() > seen_cap {
            cursor.seen.pop_front();
        }
        cursor.newest = cursor.newest.max(at);
        match sender {
            SenderKind::Human | SenderKind::System => cursor.chain = 0,
            SenderKind::Ai => cursor.chain = cursor.chain.saturating_add(1),
        }
        let chain = cursor.chain;
        if item.sender_id == self.persona_id {
            // The persona's own answer (written before a crash, heard again by a catch-up):
            // what it answers is answered.
            if let Some(answered) = reply_to {
                self.withdraw(&answered);
            }
            return Hearing::Own;
        }
        if sender == SenderKind::Ai && chain >= self.config.max_chain {
            self.counters.chain_silenced += 1;
            return Hearing::ChainSilenced;
        }
        Hearing::Offered(self.offer(item))
    }

    /// Take a message out of the inbox (it was answered); true when it was there.
    pub fn withdraw(&mut self, message_id: &str) -> bool {
        let key = self
            .inbox
            .iter()
            .find(|(_, it)| it.message_id == message_id)
            .map(|(k, _)| *k);
        let found = key.and_then(|k| self.inbox.remove(&k)).is_some();
        if found {
            self.update_mood();
        }
        found
    }

    /// Persona messages in a row in `room_id` as heard so far (0 when not following).
    pub fn chain(&self, room_id: &str) -> u32 {
        self.rooms.get(room_id).map_or(0, |c| c.chain)
    }

    /// Offer a message. On overflow the lowest-priority item (the newcomer, if it is the lowest)
    /// is dropped and counted.
    pub fn offer(&mut self, mut item: InboxItem) -> Offered {
        if !self.rooms.contains_key(&item.room_id) {
            return Offered::NotFollowing;
        }
        if self.inbox.values().any(|i| i.message_id == item.message_id) {
            return Offered::Duplicate;
        }
        truncate_utf8(&mut item.text, self.config.max_text_bytes);
        let capacity = self.config.inbox_capacity.max(1);
        let mut displaced = None;
        if self.inbox.len() >= capacity {
            let lowest = self.inbox.keys().next().copied();
            match lowest {
                Some(key) if key.0 < item.priority => {
                    displaced = self.inbox.remove(&key);
                }
                _ => {
                    self.counters.dropped_overflow += 1;
                    return Offered::Rejected;
                }
            }
            self.counters.dropped_overflow += 1;
        }
        self.seq += 1;
        self.inbox
            .insert((item.priority, std::cmp::Reverse(self.seq)), item);
        self.counters.received += 1;
        self.update_mood();
        match displaced {
            Some(d) => Offered::Displaced(d),
            None => Offered::Accepted,
        }
    }

    /// Record generation time spent on a reply (counts against the compute budget).
    pub fn record_compute(&mut self, now: Millis, ms: u64) {
        self.recent_compute.push_back((now, ms));
        // The window is pruned at every tick; this bound holds even if ticks stop.
        while self.recent_compute.len() > self.config.max_replies.max(1) * 4 {
            self.recent_compute.pop_front();
        }
    }

    /// Decide what to do now. Pure: the result depends only on `self` and `now`.
    pub fn tick(&mut self, now: Millis) -> Vec<Action> {
        self.tick_with(now, |_| 0)
    }

    /// [`PersonaState::tick`], where `pending(room)` persona replies are being written in a
    /// room and not heard yet (they count toward its chain, so personas replying at once do
    /// not overrun the limit together).
    pub fn tick_with(&mut self, now: Millis, pending: impl Fn(&str) -> u32) -> Vec<Action> {
        let elapsed = now.saturating_sub(self.last_tick);
        self.last_tick = now.max(self.last_tick);
        self.energy = (self.energy
            + self.config.energy_recovery_per_sec * (elapsed as f32 / 1000.0))
            .min(1.0);
        self.prune_windows(now);
        self.drop_stale(now);

        if let Some(until) = self.resting_until {
            if now < until || self.energy < self.config.rested_above {
                self.update_mood();
                self.counters.rests += 1;
                return vec![Action::Rest {
                    until: until.max(now + self.config.tick_tired_ms),
                }];
            }
            self.resting_until = None;
        }
        self.update_mood();
        if self.mood == Mood::Tired {
            let until = now + self.config.tick_tired_ms;
            self.resting_until = Some(until);
            self.counters.rests += 1;
            return vec![Action::Rest { until }];
        }
        if self.inbox.is_empty() {
            return vec![Action::Idle];
        }
        let per_tick = if self.mood == Mood::Overwhelmed {
            self.config.overwhelmed_replies_per_tick.max(1)
        } else {
            1
        };
        let mut actions = Vec::new();
        while actions.len() < per_tick {
            // A second reply in the same tick that is not due yet is not "held back": only a
            // tick that replies to nothing counts.
            if self.recent_replies.len() >= self.config.max_replies {
                if actions.is_empty() {
                    self.counters.rate_limited += 1;
                }
                break;
            }
            if self.pace_gate().is_some_and(|gate| now < gate) {
                if actions.is_empty() {
                    self.counters.paced += 1;
                }
                break;
            }
            if self.energy < self.config.energy_per_reply {
                break;
            }
            let Some((_, item)) = self.inbox.pop_last() else {
                break;
            };
            // The room's chain is full: the message goes unanswered (not a reply, no energy).
            if !item.direct
                && self
                    .chain(&item.room_id)
                    .saturating_add(pending(&item.room_id))
                    >= self.config.max_chain
            {
                self.counters.chain_silenced += 1;
                continue;
            }
            self.energy = (self.energy - self.config.energy_per_reply).max(0.0);
            self.recent_replies.push_back(now);
            self.counters.replies += 1;
            actions.push(Action::Reply { item });
        }
        self.update_mood();
        if actions.is_empty() {
            actions.push(Action::Idle);
        }
        actions
    }

    /// How long until the next tick, following the mood.
    pub fn next_tick_in(&self) -> u64 {
        match self.mood {
            Mood::Idle => self.config.tick_idle_ms,
            Mood::Active => self.config.tick_active_ms,
            Mood::Tired => self.config.tick_tired_ms,
            Mood::Overwhelmed => self.config.tick_overwhelmed_ms,
        }
    }

    /// When to tick next, seen at `now`: after the mood's cadence, or, when a waiting reply is
    /// held back by pacing or the window, exactly when it may go (no ticks that can only say
    /// "not yet", and each persona's replies land on its own instants, not on a shared beat).
    pub fn next_tick_at(&self, now: Millis) -> Millis {
        let cadence = now + self.next_tick_in();
        if self.inbox.is_empty() || !matches!(self.mood, Mood::Active | Mood::Overwhelmed) {
            return cadence;
        }
        match self.reply_gate() {
            Some(gate) if gate > now => gate,
            _ => cadence,
        }
    }

    /// The earliest time the next reply may go, if pacing or the window holds it back.
    pub fn reply_gate(&self) -> Option<Millis> {
        let window = (self.recent_replies.len() >= self.config.max_replies)
            .then(|| {
                self.recent_replies
                    .front()
                    .map(|t| t + self.config.rate_window_ms + 1)
            })
            .flatten();
        match (self.pace_gate(), window) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pacing: the last reply plus this reply's gap (see [`PersonaConfig::pace_replies`]).
    fn pace_gate(&self) -> Option<Millis> {
        if !self.config.pace_replies || self.config.max_replies == 0 {
            return None;
        }
        let last = *self.recent_replies.back()?;
        Some(last + self.pace_gap())
    }

    /// The gap after the reply counted as `counters.replies`: the window's mean spacing, varied by ± `pace_jitter` from a sequence seeded by the persona id and
    /// the reply count (pure: the same state gives the same gap, also after a restore).
    fn pace_gap(&self) -> u64 {
        // Not faster when overwhelmed: any pace above the window's mean spends the allowance
        // early, and then the window (the first reply + 60 s) sets everyone's next reply
        // again: personas that became overwhelmed together were back in lockstep.
        let mean = self.config.rate_window_ms as f64 / self.config.max_replies.max(1) as f64;
        let jitter = f64::from(self.config.pace_jitter.clamp(0.0, 1.0));
        let unit =
            (splitmix64(self.pace_seed ^ self.counters.replies) >> 11) as f64 / (1u64 << 53) as f64;
        (mean * (1.0 - jitter + 2.0 * jitter * unit)) as u64
    }

    fn prune_windows(&mut self, now: Millis) {
        let start = now.saturating_sub(self.config.rate_window_ms);
        while self.recent_replies.front().is_some_and(|t| *t < start) {
            self.recent_replies.pop_front();
        }
        while self.recent_compute.front().is_some_and(|(t, _)| *t < start) {
            self.recent_compute.pop_front();
        }
    }

    fn drop_stale(&mut self, now: Millis) {
        let max_age = self.config.max_item_age_ms;
        let before = self.inbox.len();
        self.inbox
            .retain(|_, it| now.saturating_sub(it.received_at) <= max_age);
        self.counters.dropped_stale += (before - self.inbox.len()) as u64;
    }

    fn compute_spent(&self) -> u64 {
        self.recent_compute.iter().map(|(_, ms)| ms).sum()
    }

    fn update_mood(&mut self) {
        let load = self.inbox.len() as f32 / self.config.inbox_capacity.max(1) as f32;
        self.attention = (self.energy * (1.0 - load * 0.5)).clamp(0.0, 1.0);
        self.mood = if self.energy < self.config.tired_below
            || self.compute_spent() > self.config.compute_budget_ms
            || self.resting_until.is_some()
        {
            Mood::Tired
        } else if load >= self.config.overwhelmed_load {
            Mood::Overwhelmed
        } else if self.inbox.is_empty() {
            Mood::Idle
        } else {
            Mood::Active
        };
    }

    /// The serialisable form.
    pub fn snapshot(&self) -> PersonaSnapshot {
        PersonaSnapshot {
            persona_id: self.persona_id.clone(),
            inbox: self.inbox.values().rev().cloned().collect(),
            energy: self.energy,
            attention: self.attention,
            mood: self.mood,
            rooms: self.rooms.keys().cloned().collect(),
            cursors: self.rooms.clone(),
            recent_replies: self.recent_replies.iter().copied().collect(),
            recent_compute: self.recent_compute.iter().copied().collect(),
            resting_until: self.resting_until,
            last_tick: self.last_tick,
            counters: self.counters.clone(),
        }
    }

    /// Rebuild from a snapshot, re-applying today's bounds (a snapshot from a larger config
    /// is cut down, lowest priority first).
    pub fn restore(snapshot: PersonaSnapshot, config: PersonaConfig) -> Self {
        let mut s = PersonaState::new(snapshot.persona_id, config, snapshot.last_tick);
        if snapshot.cursors.is_empty() {
            // A snapshot from before cursors: the rooms, heard up to the last tick.
            for room in snapshot.rooms {
                s.follow(&room, snapshot.last_tick);
            }
        } else {
            let cap = s.config.seen_ids.max(1);
            for (room, mut cursor) in snapshot.cursors {
                if s.rooms.len() >= s.config.max_rooms {
                    break;
                }
                while cursor.seen.len() > cap {
                    cursor.seen.pop_front();
                }
                s.rooms.insert(room, cursor);
            }
        }
        // The snapshot lists highest priority first, oldest first among equals. Re-offer lowest
        // priority first (a stable sort keeps oldest first among equals), so arrival order
        // survives and a smaller bound drops the least important.
        let mut counters = snapshot.counters;
        let mut items = snapshot.inbox;
        items.sort_by_key(|i| i.priority);
        for item in items {
            if matches!(s.offer(item), Offered::Rejected | Offered::Displaced(_)) {
                counters.dropped_overflow += 1;
            }
        }
        s.energy = snapshot.energy.clamp(0.0, 1.0);
        s.recent_replies = snapshot.recent_replies.into();
        s.recent_compute = snapshot.recent_compute.into();
        s.resting_until = snapshot.resting_until;
        s.counters = counters;
        s.update_mood();
        s
    }
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases, and the pacing
/// sequence should survive an upgrade with the snapshot).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One step of splitmix64: spreads consecutive inputs over the whole range.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Cut `s` to at most `max` bytes on a character boundary, releasing the memory cut off (a
/// truncated `String` keeps its capacity otherwise).
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, priority: u8, at: Millis) -> InboxItem {
        InboxItem {
            message_id: id.into(),
            room_id: "general".into(),
            sender_id: "joel".into(),
            text: format!("message {id}"),
            priority,
            received_at: at,
            direct: false,
        }
    }

    fn heard(id: &str, sender: &str, kind: SenderKind, at: Millis) -> Heard {
        let mut it = item(id, if kind == SenderKind::Ai { 20 } else { 100 }, at);
        it.sender_id = sender.into();
        Heard {
            item: it,
            at,
            sender: kind,
            reply_to: None,
        }
    }

    #[test]
    fn a_message_heard_by_two_paths_is_taken_once_and_own_messages_only_count_in_the_chain() {
        let mut p = persona(PersonaConfig::default());
        let m = heard("m1", "joel", SenderKind::Human, 10);
        assert_eq!(p.hear(m.clone()), Hearing::Offered(Offered::Accepted));
        assert_eq!(p.hear(m), Hearing::Seen, "a catch-up re-reading m1");
        // Answered (left the inbox), then heard again: still seen, not queued again.
        assert!(matches!(p.tick(1_000)[0], Action::Reply { .. }));
        assert_eq!(
            p.hear(heard("m1", "joel", SenderKind::Human, 10)),
            Hearing::Seen
        );
        assert_eq!(p.hear(heard("r1", "p1", SenderKind::Ai, 20)), Hearing::Own);
        assert_eq!(p.chain("general"), 1);
        assert_eq!(p.inbox_len(), 0);
        assert_eq!(p.counters().received, 1);
        // Not a member, or written before joining: not for this persona.
        let mut elsewhere = heard("x", "joel", SenderKind::Human, 10);
        elsewhere.item.room_id = "dev".into();
        assert_eq!(p.hear(elsewhere.clone()), Hearing::NotFollowing);
        p.follow("dev", 100);
        assert_eq!(p.hear(elsewhere), Hearing::BeforeJoin);
    }

    #[test]
    fn seen_ids_are_bounded_per_room() {
        let mut p = persona(PersonaConfig {
            seen_ids: 4,
            ..Default::default()
        });
        for i in 0..10 {
            p.hear(heard(&format!("m{i}"), "joel", SenderKind::Human, i));
        }
        let c = p.cursor("general").expect("following");
        assert_eq!(c.seen.len(), 4);
        assert_eq!(c.seen.front().map(String::as_str), Some("m6"));
        assert_eq!(c.newest, 9);
    }

    #[test]
    fn persona_messages_past_the_chain_limit_are_not_queued_and_a_human_message_resets_it() {
        let mut p = persona(PersonaConfig::default());
        assert_eq!(p.config().max_chain, 2);
        p.hear(heard("h1", "joel", SenderKind::Human, 1));
        // First persona answer: chain 1, worth hearing.
        assert_eq!(
            p.hear(heard("a1", "p2", SenderKind::Ai, 2)),
            Hearing::Offered(Offered::Accepted)
        );
        // Second: chain 2, the limit: answering it would make a third.
        assert_eq!(
            p.hear(heard("b1", "p3", SenderKind::Ai, 3)),
            Hearing::ChainSilenced
        );
        assert_eq!(p.counters().chain_silenced, 1);
        // The queued items of a full chain go unanswered at the tick, without spending energy.
        let energy = p.energy();
        assert_eq!(p.tick(1_000), vec![Action::Idle]);
        assert_eq!(p.inbox_len(), 0);
        assert_eq!(p.counters().chain_silenced, 3, "h1 and a1 at the tick");
        assert_eq!(p.counters().replies, 0);
        assert!(p.energy() >= energy);
        // A human writes again: the chain starts over.
        p.hear(heard("h2", "joel", SenderKind::Human, 4));
        assert_eq!(p.chain("general"), 0);
        assert!(matches!(p.tick(2_000)[0], Action::Reply { .. }));
    }

    #[test]
    fn a_humans_direct_mention_is_answered_whatever_the_chain() {
        let mut p = persona(PersonaConfig::default());
        let mut m = heard("h1", "joel", SenderKind::Human, 1);
        m.item.direct = true;
        m.item.priority = 200;
        p.hear(m);
        p.hear(heard("a1", "p2", SenderKind::Ai, 2));
        p.hear(heard("b1", "p3", SenderKind::Ai, 3));
        assert_eq!(p.chain("general"), 2);
        let acts = p.tick(1_000);
        assert!(
            matches!(&acts[0], Action::Reply { item } if item.message_id == "h1"),
            "{acts:?}"
        );
    }

    #[test]
    fn replies_being_written_count_toward_the_chain() {
        let mut p = persona(PersonaConfig::default());
        p.hear(heard("h1", "joel", SenderKind::Human, 1));
        // Two other personas are writing their answers to h1 now.
        assert_eq!(p.tick_with(1_000, |_| 2), vec![Action::Idle]);
        assert_eq!(p.counters().chain_silenced, 1);
        p.hear(heard("h2", "joel", SenderKind::Human, 2));
        assert!(matches!(p.tick_with(2_000, |_| 1)[0], Action::Reply { .. }));
    }

    /// Personas hearing one room, the way the daemon drives them: every reply is heard by all
    /// (the writer included), replies in flight count toward the chain.
    fn room_of_personas(
        n: usize,
        config: &PersonaConfig,
        humans: &[Millis],
        until: Millis,
    ) -> Vec<(Millis, String)> {
        let mut ps: Vec<PersonaState> = (0..n)
            .map(|i| {
                let mut p = PersonaState::new(format!("p{i}"), config.clone(), 0);
                p.follow("general", 0);
                p
            })
            .collect();
        let mut next: Vec<Millis> = ps.iter().map(|p| p.next_tick_at(0)).collect();
        let mut posted = Vec::new();
        let mut seq = 0;
        let mut human = humans.iter().peekable();
        // 100 ms steps of paused time; a reply takes one step to write.
        let mut writing: Vec<(usize, InboxItem)> = Vec::new();
        for now in (0..=until).step_by(100) {
            for (who, item) in std::mem::take(&mut writing) {
                seq += 1;
                let reply = Heard {
                    item: InboxItem {
                        message_id: format!("r{seq}"),
                        room_id: item.room_id,
                        sender_id: format!("p{who}"),
                        text: "reply".into(),
                        priority: 20,
                        received_at: now,
                        direct: false,
                    },
                    at: now,
                    sender: SenderKind::Ai,
                    reply_to: None,
                };
                posted.push((now, reply.item.sender_id.clone()));
                for (p, n) in ps.iter_mut().zip(&mut next) {
                    p.hear(reply.clone());
                    *n = (*n).min(p.next_tick_at(now));
                }
            }
            while human.peek().is_some_and(|t| **t <= now) {
                human.next();
                seq += 1;
                let h = heard(&format!("h{seq}"), "joel", SenderKind::Human, now);
                posted.push((now, "joel".into()));
                for (p, n) in ps.iter_mut().zip(&mut next) {
                    p.hear(h.clone());
                    *n = (*n).min(p.next_tick_at(now));
                }
            }
            for (i, p) in ps.iter_mut().enumerate() {
                if next[i] > now {
                    continue;
                }
                let pending = writing.len() as u32;
                for a in p.tick_with(now, |_| pending) {
                    if let Action::Reply { item } = a {
                        writing.push((i, item));
                    }
                }
                next[i] = p.next_tick_at(now);
            }
        }
        posted
    }

    #[test]
    fn after_humans_stop_writing_a_room_of_personas_goes_quiet_within_the_chain_limit() {
        let config = PersonaConfig::default();
        // Four personas, three human messages a minute apart, then ten minutes of nobody.
        let posted = room_of_personas(4, &config, &[0, 60_000, 120_000], 12 * 60_000);
        let mut run = 0;
        let mut longest = 0;
        let mut after_last_human = 0;
        for (t, who) in &posted {
            if who == "joel" {
                run = 0;
            } else {
                run += 1;
                longest = longest.max(run);
                if *t > 120_000 {
                    after_last_human += 1;
                }
            }
        }
        assert!(
            posted.iter().any(|(_, w)| w != "joel"),
            "personas answer: {posted:?}"
        );
        assert!(
            longest <= config.max_chain as usize,
            "a chain of {longest} persona messages: {posted:?}"
        );
        assert!(after_last_human <= config.max_chain as usize, "{posted:?}");
        let last = posted.last().map_or(0, |(t, _)| *t);
        assert!(
            last < 130_000,
            "the room kept talking until {last} ms: {posted:?}"
        );
    }

    fn persona(config: PersonaConfig) -> PersonaState {
        let mut p = PersonaState::new("p1", config, 0);
        p.follow("general", 0);
        p
    }

    #[test]
    fn inbox_overflow_drops_the_lowest_priority_and_counts_it() {
        let mut p = persona(PersonaConfig {
            inbox_capacity: 3,
            ..Default::default()
        });
        assert_eq!(p.offer(item("a", 5, 0)), Offered::Accepted);
        assert_eq!(p.offer(item("b", 1, 0)), Offered::Accepted);
        assert_eq!(p.offer(item("c", 3, 0)), Offered::Accepted);
        // A higher priority item displaces the lowest (b).
        match p.offer(item("d", 9, 0)) {
            Offered::Displaced(d) => assert_eq!(d.message_id, "b"),
            other => panic!("{other:?}"),
        }
        // A newcomer lower than everything is itself the one dropped.
        assert_eq!(p.offer(item("e", 2, 0)), Offered::Rejected);
        assert_eq!(p.inbox_len(), 3);
        assert_eq!(p.counters().dropped_overflow, 2);
        assert_eq!(p.counters().received, 4);
        assert_eq!(p.offer(item("d", 9, 0)), Offered::Duplicate);
        let mut other_room = item("z", 9, 0);
        other_room.room_id = "elsewhere".into();
        assert_eq!(p.offer(other_room), Offered::NotFollowing);
    }

    #[test]
    fn tick_replies_to_the_highest_priority_first_fifo_among_equals() {
        let mut p = persona(PersonaConfig::default());
        p.offer(item("low", 1, 0));
        p.offer(item("hi-1", 7, 0));
        p.offer(item("hi-2", 7, 0));
        // Ticks 20 s apart: pacing (10 s on average) lets each one reply.
        let ids: Vec<String> = (1..=3)
            .flat_map(|t| p.tick(t * 20_000))
            .filter_map(|a| match a {
                Action::Reply { item } => Some(item.message_id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec!["hi-1", "hi-2", "low"]);
        assert_eq!(p.tick(80_000), vec![Action::Idle]);
        assert_eq!(p.mood(), Mood::Idle);
    }

    #[test]
    fn mood_follows_inbox_load_and_cadence_follows_mood() {
        // Unpaced, so that the triage rule shows on its own (paced: see
        // `an_overwhelmed_persona_paces_faster`).
        let mut p = persona(PersonaConfig {
            inbox_capacity: 4,
            pace_replies: false,
            ..Default::default()
        });
        assert_eq!(p.mood(), Mood::Idle);
        assert_eq!(p.next_tick_in(), 5_000);
        p.offer(item("a", 1, 0));
        assert_eq!(p.mood(), Mood::Active);
        assert_eq!(p.next_tick_in(), 1_000);
        p.offer(item("b", 1, 0));
        p.offer(item("c", 1, 0));
        assert_eq!(p.mood(), Mood::Overwhelmed);
        assert_eq!(p.next_tick_in(), 500);
        // Overwhelmed: triage two replies in one tick.
        let replies = p
            .tick(100)
            .into_iter()
            .filter(|a| matches!(a, Action::Reply { .. }))
            .count();
        assert_eq!(replies, 2);
        assert_eq!(p.mood(), Mood::Active);
    }

    #[test]
    fn energy_drains_per_reply_then_the_persona_rests_and_recovers() {
        let mut p = persona(PersonaConfig {
            energy_per_reply: 0.3,
            tired_below: 0.2,
            rested_above: 0.5,
            energy_recovery_per_sec: 0.1,
            max_replies: 100,
            pace_replies: false,
            ..Default::default()
        });
        for i in 0..5 {
            p.offer(item(&format!("m{i}"), 1, 0));
        }
        // 1.0 -> 0.7 -> 0.4 -> 0.1 (tired)
        for t in 0..3 {
            assert!(matches!(p.tick(t)[0], Action::Reply { .. }));
        }
        assert!((p.energy() - 0.1).abs() < 1e-3, "{}", p.energy());
        assert_eq!(p.mood(), Mood::Tired);
        assert_eq!(p.next_tick_in(), 10_000);
        let rest = p.tick(3);
        assert!(matches!(rest[0], Action::Rest { .. }), "{rest:?}");
        // 2 s later energy is 0.3: still below rested_above, keeps resting.
        assert!(matches!(p.tick(2_003)[0], Action::Rest { .. }));
        // 10 s after the rest began energy is 1.0 (capped) and resting is over.
        let after = p.tick(12_003);
        assert!(matches!(after[0], Action::Reply { .. }), "{after:?}");
        assert!(p.counters().rests >= 2);
    }

    #[test]
    fn reply_rate_limit_holds_replies_back_within_the_window() {
        let mut p = persona(PersonaConfig {
            max_replies: 2,
            rate_window_ms: 10_000,
            energy_per_reply: 0.0,
            // The window on its own (pacing is the next test).
            pace_replies: false,
            ..Default::default()
        });
        for i in 0..4 {
            p.offer(item(&format!("m{i}"), 1, 0));
        }
        assert!(matches!(p.tick(1)[0], Action::Reply { .. }));
        assert!(matches!(p.tick(2)[0], Action::Reply { .. }));
        assert_eq!(p.tick(3), vec![Action::Idle]);
        assert_eq!(p.counters().rate_limited, 1);
        assert_eq!(p.inbox_len(), 2);
        // The window slides: after 10 s the first reply no longer counts.
        assert!(matches!(p.tick(10_002)[0], Action::Reply { .. }));
    }

    /// Reply instants of one persona driven the way the daemon drives it: tick when
    /// `next_tick_at` says, a new message every `every` ms (the soak's load).
    fn drive(p: &mut PersonaState, until: Millis, every: Millis) -> Vec<Millis> {
        let mut replies = Vec::new();
        let mut next_msg = 0;
        let mut next_tick = p.next_tick_at(0);
        let mut seq = 0;
        loop {
            let now = next_msg.min(next_tick);
            if now > until {
                return replies;
            }
            if now == next_msg {
                seq += 1;
                p.offer(item(&format!("m{seq}"), 100, now));
                next_msg += every;
                next_tick = next_tick.min(p.next_tick_at(now));
            }
            if now >= next_tick {
                let acts = p.tick(now);
                replies.extend(
                    acts.iter()
                        .filter(|a| matches!(a, Action::Reply { .. }))
                        .map(|_| now),
                );
                next_tick = p.next_tick_at(now);
            }
        }
    }

    #[test]
    fn replies_are_paced_across_the_window_not_spent_in_a_burst() {
        let config = PersonaConfig::default();
        let mean = config.rate_window_ms / config.max_replies as u64;
        let mut p = persona(config.clone());
        let replies = drive(&mut p, 10 * 60_000, 200);
        // The first message is answered at the next tick; every later reply waits 0.75-1.25 ×
        // the mean, or longer when the window is full: then it goes the moment the window's
        // oldest reply leaves it.
        let max = config.max_replies;
        assert_eq!(replies[0], config.tick_active_ms);
        for i in 1..replies.len() {
            let gap = replies[i] - replies[i - 1];
            let window_gate = (i >= max).then(|| replies[i - max] + config.rate_window_ms + 1);
            assert!(
                gap >= mean * 3 / 4 && (gap <= mean * 5 / 4 + 1 || Some(replies[i]) == window_gate),
                "gap {gap} before reply {i} in {replies:?}"
            );
        }
        // The window still caps the count: never more than max_replies in any 60 s.
        for (i, t) in replies.iter().enumerate() {
            let in_window = replies[i..]
                .iter()
                .take_while(|u| **u <= t + config.rate_window_ms)
                .count();
            assert!(
                in_window <= config.max_replies,
                "{in_window} replies after {t}"
            );
        }
        // ...and pacing costs (almost) none of the allowance: ~6 a minute over ten minutes.
        assert!(
            (55..=61).contains(&replies.len()),
            "{} replies",
            replies.len()
        );
        // Ticks come when a reply may go, not every second to say "not yet".
        assert_eq!(p.counters().paced, 0, "{:?}", p.counters());
        assert_eq!(p.counters().rate_limited, 0, "{:?}", p.counters());

        // Unpaced, the same load spends the window's six replies in six seconds.
        let mut burst = persona(PersonaConfig {
            pace_replies: false,
            ..config
        });
        let replies = drive(&mut burst, 60_000, 200);
        assert_eq!(&replies[..6], &[1_000, 2_000, 3_000, 4_000, 5_000, 6_000]);
    }

    #[test]
    fn personas_hearing_the_same_room_drift_out_of_lockstep() {
        // 20 personas, one room, the same messages: how many replies share the busiest second
        // in the tenth minute?
        let busiest = |config: PersonaConfig| {
            let mut seconds = BTreeMap::<u64, usize>::new();
            for n in 0..20 {
                let mut p = PersonaState::new(format!("persona-{n}"), config.clone(), 0);
                p.follow("general", 0);
                for t in drive(&mut p, 10 * 60_000, 200) {
                    if t >= 9 * 60_000 {
                        *seconds.entry(t / 1000).or_default() += 1;
                    }
                }
            }
            seconds.values().copied().max().unwrap_or(0)
        };
        let unpaced = busiest(PersonaConfig {
            pace_replies: false,
            ..Default::default()
        });
        let lockstep = busiest(PersonaConfig {
            pace_jitter: 0.0,
            ..Default::default()
        });
        let paced = busiest(PersonaConfig::default());
        assert_eq!(unpaced, 20, "all personas answer in the same seconds");
        assert_eq!(lockstep, 20, "equal gaps keep them together");
        assert!(
            paced <= 6,
            "jittered gaps spread them: busiest second had {paced}"
        );
    }

    #[test]
    fn a_paced_persona_replies_once_per_gap_even_when_overwhelmed() {
        let config = PersonaConfig {
            inbox_capacity: 4,
            ..Default::default()
        };
        let mut p = persona(config.clone());
        for i in 0..4 {
            p.offer(item(&format!("m{i}"), 1, 0));
        }
        assert_eq!(p.mood(), Mood::Overwhelmed);
        let first = p.tick(0);
        assert_eq!(
            first.len(),
            1,
            "paced: one reply per tick even when overwhelmed"
        );
        assert_eq!(p.mood(), Mood::Overwhelmed);
        // The window's mean gap (10 s) ± 25 %, overwhelmed or not.
        let gate = p.reply_gate().expect("paced");
        assert!((7_500..=12_500).contains(&gate), "{gate}");
        // The daemon is told to come back exactly then; a tick before it replies to nothing.
        assert_eq!(p.next_tick_at(1), gate);
        assert_eq!(p.tick(gate - 1), vec![Action::Idle]);
        assert_eq!(p.counters().paced, 1);
        // The gap is a function of the state: a restored persona waits the same.
        let restored = PersonaState::restore(p.snapshot(), config);
        assert_eq!(restored.reply_gate(), Some(gate));
        assert!(matches!(p.tick(gate)[0], Action::Reply { .. }));
    }

    #[test]
    fn compute_budget_overrun_makes_the_persona_tired() {
        let mut p = persona(PersonaConfig {
            compute_budget_ms: 1_000,
            ..Default::default()
        });
        p.offer(item("a", 1, 0));
        p.record_compute(0, 1_500);
        let a = p.tick(10);
        assert!(matches!(a[0], Action::Rest { .. }), "{a:?}");
        assert_eq!(p.mood(), Mood::Tired);
    }

    #[test]
    fn stale_items_are_dropped_and_counted() {
        let mut p = persona(PersonaConfig {
            max_item_age_ms: 1_000,
            ..Default::default()
        });
        p.offer(item("old", 9, 0));
        p.offer(item("new", 1, 1_500));
        let a = p.tick(1_600);
        match &a[0] {
            Action::Reply { item } => assert_eq!(item.message_id, "new"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.counters().dropped_stale, 1);
    }

    #[test]
    fn snapshot_restore_round_trips_and_reapplies_bounds() {
        let mut p = persona(PersonaConfig::default());
        p.follow("dev", 0);
        for i in 0..10 {
            p.offer(item(&format!("m{i}"), (i % 3) as u8, i));
        }
        p.tick(100);
        let snap = p.snapshot();
        let json = serde_json::to_string(&snap).expect("serialize");
        let back: PersonaSnapshot = serde_json::from_str(&json).expect("deserialize");
        let q = PersonaState::restore(back.clone(), PersonaConfig::default());
        assert_eq!(q.snapshot(), snap);
        // Restored under a smaller bound: keeps the 4 most important.
        let small = PersonaState::restore(
            back,
            PersonaConfig {
                inbox_capacity: 4,
                ..Default::default()
            },
        );
        assert_eq!(small.inbox_len(), 4);
        assert!(small.snapshot().inbox.iter().all(|i| i.priority >= 1));
    }

    #[test]
    fn text_is_truncated_on_a_char_boundary() {
        let mut p = persona(PersonaConfig {
            max_text_bytes: 5,
            ..Default::default()
        });
        let mut it = item("a", 1, 0);
        it.text = "héllo wörld".into();
        p.offer(it);
        assert_eq!(p.snapshot().inbox[0].text, "héll");
    }

    #[test]
    fn truncation_cuts_on_a_char_boundary_and_releases_the_rest() {
        let mut s = "é".repeat(1000);
        truncate_utf8(&mut s, 5);
        assert_eq!(s, "éé");
        // The copy kept per persona must not carry the whole message's allocation.
        assert!(s.capacity() < 64, "capacity {}", s.capacity());
        let mut short = String::from("hi");
        truncate_utf8(&mut short, 5);
        assert_eq!(short, "hi");
    }
}
