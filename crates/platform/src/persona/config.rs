//! The persona daemon's settings.

use crate::persona::state::PersonaConfig;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Settings of the persona daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonasConfig {
    /// Tunables of every persona's state.
    pub persona: PersonaConfig,
    /// Most personas hosted at once; more persona users are reported and not loaded.
    pub max_personas: usize,
    /// How often dirty states are snapshotted to their databases.
    pub snapshot_interval_ms: u64,
    /// Messages of context fetched (in one query) for each reply.
    pub context_messages: usize,
    /// Replies being generated at once, across all personas.
    pub max_concurrent_replies: usize,
    /// Deadline for one `ai/generate` call.
    pub reply_timeout_ms: u64,
    /// Oldest message a catch-up (after a load, a lag or a join) still reads: older ones are
    /// passed over and counted (a question from yesterday is not answered today).
    pub catch_up_max_age_ms: u64,
    /// A persona hears the messages of a room from this long before it joined it (never from
    /// before the persona existed): covers a message sent in the instant between creating a
    /// persona and its automatic join.
    pub join_window_ms: u64,
    /// Rooms read per page when memberships are loaded.
    pub rooms_page: usize,
    /// Events queued for the daemon; past it events are lost, counted, and repaired by a
    /// resync (memberships and messages read back from the store).
    pub event_queue: usize,
}

impl Default for PersonasConfig {
    fn default() -> Self {
        PersonasConfig {
            persona: PersonaConfig::default(),
            max_personas: 1000,
            snapshot_interval_ms: 30_000,
            context_messages: 10,
            max_concurrent_replies: 4,
            reply_timeout_ms: 60_000,
            catch_up_max_age_ms: 60 * 60 * 1000,
            join_window_ms: 10_000,
            rooms_page: 500,
            event_queue: 4096,
        }
    }
}

/// Called after each round of snapshots that wrote something.
pub type AfterSnapshots = Arc<dyn Fn() + Send + Sync>;
