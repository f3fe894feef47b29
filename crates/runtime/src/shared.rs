//! The state every part of a running runtime shares: built once by the builder, owned by the
//! [`Runtime`](crate::Runtime), read through [`RuntimeHandle`](crate::RuntimeHandle), and used by
//! each daemon's task.

use crate::bus::EventBus;
use crate::lag::LagProbe;
use crate::plan::Plan;
use crate::pool::CpuPool;
use crate::router::Router;
use parking_lot::Mutex;
use std::sync::OnceLock;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the runtime, its handles and its daemon tasks share.
pub(crate) struct Shared {
    /// Routing table and every daemon's slot (mailbox, status watch, metrics).
    pub(crate) router: Router,
    pub(crate) bus: EventBus,
    pub(crate) pool: CpuPool,
    /// The validated dependency graph, by slot index.
    pub(crate) plan: Plan,
    /// Every task the runtime spawns, so shutdown can prove none is left.
    pub(crate) tracker: TaskTracker,
    /// Cancelled when shutdown begins.
    pub(crate) stop: CancellationToken,
    /// Set by `Runtime::start`.
    pub(crate) started_at: OnceLock<Instant>,
    /// Daemons in the order they finished stopping.
    pub(crate) stop_order: Mutex<Vec<String>>,
    pub(crate) lag: Mutex<Option<LagProbe>>,
}
