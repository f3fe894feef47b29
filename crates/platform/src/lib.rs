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
#![forbid(unsafe_code)]

pub mod chat;
pub mod console;
pub mod governance;
pub mod persona;
pub mod rooms;
pub mod training;
pub mod users;
mod util;

pub use chat::{ChatConfig, ChatDaemon};
pub use console::{ConsoleConfig, ConsoleDaemon};
pub use governance::{GovernanceConfig, GovernanceDaemon};
pub use persona::{PersonaDaemon, PersonasConfig};
pub use rooms::{MembershipConfig, RoomConfig, RoomDaemon, RoomMembershipDaemon};
pub use training::{TrainingConfig, TrainingDaemon};
pub use users::{UserConfig, UserDaemon};
pub use util::PlatformError;

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
