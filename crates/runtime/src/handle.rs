//! [`RuntimeHandle`]: the read-only view of a running runtime that [`Context::runtime`]
//! exposes to daemons (and [`Runtime::handle`] to the host).
//!
//! [`Context::runtime`]: crate::Context::runtime
//! [`Runtime::handle`]: crate::Runtime::handle

use crate::bus::{BusStats, EventBus};
use crate::lag::{LagProbe, LagSnapshot};
use crate::metrics::{DaemonReport, InitReport};
use crate::pool::{CpuPool, PoolStats};
use crate::router::{Router, init_report};
use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A read-only view of a running runtime: daemon reports, init metrics, lag, pool and bus
/// statistics. Cheap to clone; handed to daemons through `Context::runtime`.
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle").finish_non_exhaustive()
    }
}

impl RuntimeHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        RuntimeHandle { shared }
    }

    pub(crate) fn router(&self) -> &Router {
        &self.shared.router
    }

    pub(crate) fn bus(&self) -> &EventBus {
        &self.shared.bus
    }

    pub(crate) fn pool(&self) -> &CpuPool {
        &self.shared.pool
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.shared.tracker
    }

    /// Cancelled when the runtime begins to shut down.
    pub(crate) fn stop_token(&self) -> &CancellationToken {
        &self.shared.stop
    }

    /// A live report of every daemon, in registration order.
    pub fn reports(&self) -> Vec<DaemonReport> {
        self.shared.router.reports()
    }

    /// The init metrics of this boot, one per daemon.
    pub fn init_reports(&self) -> Vec<InitReport> {
        self.shared.router.slots().iter().map(init_report).collect()
    }

    /// The coordinator lag probe's view, if it runs.
    pub fn lag(&self) -> Option<LagSnapshot> {
        self.shared.lag.lock().as_ref().map(LagProbe::snapshot)
    }

    /// CPU pool statistics.
    pub fn pool_stats(&self) -> PoolStats {
        self.shared.pool.stats()
    }

    /// Event bus statistics.
    pub fn bus_stats(&self) -> BusStats {
        self.shared.bus.stats()
    }

    /// Tasks the runtime tracks right now.
    pub fn live_tasks(&self) -> usize {
        self.shared.tracker.len()
    }

    /// Time since `Runtime::start` (zero before it).
    pub fn uptime(&self) -> Duration {
        self.shared
            .started_at
            .get()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }
}
