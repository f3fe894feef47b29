//! AI personas: users whose replies are generated, with bounded long-running state.
//!
//! The original gave every persona its own client connection, polling loop, event subscriptions
//! and caches, and those were where memory grew for days. Here one `persona` daemon hosts all
//! personas:
//!
//! - **State is a pure value** ([`state::PersonaState`]): bounded inbox, energy, mood, rate limit.
//! - **No per-persona subscriptions or timers.** The daemon declares three event patterns
//!   (`data:users:*`, `data:chat_messages:created`, `data:rooms:*`) and fans messages out to the
//!   personas that follow the room; one scheduler task ticks each persona when its mood-dependent
//!   cadence says so; one interval snapshots dirty states. Stopping the daemon therefore leaves
//!   nothing behind by construction, whatever the number of personas.
//! - **Every message once** (ADR 0007): each followed room has a cursor in the snapshot; every
//!   path a message comes by (event, catch-up, the daemon's own reply) goes through
//!   [`state::PersonaState::hear`]. A catch-up reads the rooms back after a load (a restart), after
//!   lost events (`Lagged`) and after a join.
//! - **Membership is the truth**: a persona follows exactly the rooms whose member list holds it.
//! - **Chains end**: at most `max_chain` persona messages in a row per room after a human's.
//! - **Replies are chat messages like any other**: context is the last N messages of the room in
//!   one query, the text comes from `ai/generate`, and the reply goes through `chat/send`.
//! - **Priorities**: a message from a person or the system that names the persona (display
//!   name or unique id) 200, other messages from people 100, from the system 50, from personas
//!   and agents 20 — mentions inside AI-written text do not escalate, or personas quoting each
//!   other would keep each other busy. The inbox keeps a preview of each message
//!   (`max_text_bytes`, 256), cut once before it is copied to every persona.
//! - **State survives restarts**: snapshots go to each persona's own database handle
//!   (`DIR/personas/<id>/state.sqlite`) on an interval and at stop, and are restored when the
//!   persona is loaded.

mod config;
mod daemon;
mod personas;
mod scheduler;
pub mod state;

pub use config::{AfterSnapshots, PersonasConfig};
pub use daemon::PersonaDaemon;
pub use personas::Personas;
