//! The system daemons: what makes a host useful before any application daemon exists.
//!
//! | daemon    | commands                                   |
//! |-----------|--------------------------------------------|
//! | `system`  | `ping`, `list`, `help`, `system/startup`   |
//! | `health`  | `health/status`, `health/metrics`          |
//! | `events`  | `events/subscribe`, `events/unsubscribe`   |
//! | `session` | `session/create/get/list/destroy` (see [`crate::session`]) |
//!
//! `system`, `health` and `events` have no dependency and a trivial `start`, so they are READY
//! within microseconds of the runtime's start signal: a client that connects the instant the
//! socket exists gets `ping` answered before heavier daemons finish their init. `session`
//! stores its sessions through the data client, so it requires `data` (see [`crate::session`]). They only *read* the runtime (through
//! [`daemonhost_runtime::RuntimeHandle`]); nothing here can stall the coordinator.
//!
//! Why `events/*` is a daemon that refuses: subscriptions belong to a client connection (they
//! end with it, and their events go down that socket), so the socket server answers those two
//! commands itself. The `events` daemon exists so that `list` and `help` document them, and so
//! that a daemon calling them through the router gets a clear `bad_request` instead of
//! `unknown_command`.
#![forbid(unsafe_code)]

pub mod counters;
pub mod logging;
pub mod placed;
pub mod search;
pub mod session;
pub mod system;

pub use counters::{HostCounters, HostCountersSnapshot, HostStartup};
pub use logging::LoggerDaemon;
pub use placed::{Placed, Placement, WorkerOptions, WorkersConfig};
pub use search::SearchDaemon;
pub use session::{Clock, ManualClock, SessionConfig, SessionDaemon, SessionError};
pub use system::{
    EventsDaemon, HealthDaemon, PROMETHEUS_CONTENT_TYPE, PrometheusRender, SystemDaemon,
};

use daemonhost_protocol::params::Params;
use daemonhost_runtime::DaemonError;
use std::sync::Arc;

/// The params of a request (`null` is `{}`), or the `bad_request` for params that are not an
/// object.
pub(crate) fn params_of(v: serde_json::Value) -> Result<Params, DaemonError> {
    Params::new(v).map_err(DaemonError::from)
}

/// Everything the system daemons are configured with.
#[derive(Debug, Clone, Default)]
pub struct SystemConfig {
    /// The session store's bounds.
    pub sessions: SessionConfig,
    /// Counters kept by the socket server, reported by `health/metrics`.
    pub host: Arc<HostCounters>,
}
