//! [`RuntimeBuilder`] and [`RuntimeConfig`]: register daemons, validate the plan, build the
//! [`Runtime`].

use crate::bus::{BusConfig, EventBus};
use crate::daemon::Daemon;
use crate::error::PlanErrors;
use crate::lifecycle::Lifecycle;
use crate::mailbox::Mailbox;
use crate::metrics::DaemonMetrics;
use crate::plan;
use crate::pool::{CpuPool, PoolConfig};
use crate::router::{Router, Slot};
use crate::runtime::Runtime;
use crate::shared::Shared;
use crate::spec::DaemonSpec;
use crate::task::{LaunchFn, launcher};
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runtime-wide settings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Deadline for a request whose caller and command name none (default 10 s).
    pub default_timeout: Duration,
    /// Upper bound on any deadline (default 10 min): nothing waits forever.
    pub max_timeout: Duration,
    /// Event bus settings.
    pub bus: BusConfig,
    /// CPU pool settings.
    pub pool: PoolConfig,
    /// Coordinator lag probe interval; `None` disables the probe.
    pub lag_probe: Option<Duration>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(600),
            bus: BusConfig::default(),
            pool: PoolConfig::default(),
            lag_probe: Some(Duration::from_millis(10)),
        }
    }
}

struct Entry {
    spec: DaemonSpec,
    launch: LaunchFn,
}

/// Registers daemons, then validates the plan.
pub struct RuntimeBuilder {
    config: RuntimeConfig,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("config", &self.config)
            .field(
                "daemons",
                &self
                    .entries
                    .iter()
                    .map(|e| &e.spec.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RuntimeBuilder {
    /// An empty builder.
    pub fn new(config: RuntimeConfig) -> Self {
        RuntimeBuilder {
            config,
            entries: Vec::new(),
        }
    }

    /// Register a daemon. Its address is valid from [`RuntimeBuilder::build`] on.
    pub fn register<D: Daemon>(&mut self, daemon: D) -> &mut Self {
        let spec = daemon.spec();
        self.entries.push(Entry {
            spec,
            launch: launcher(daemon),
        });
        self
    }

    /// Validate the whole plan (reporting every problem at once) and build the runtime.
    /// Nothing starts yet, but the router accepts requests: they wait in startup queues.
    pub fn build(self) -> Result<Runtime, PlanErrors> {
        let specs: Vec<&DaemonSpec> = self.entries.iter().map(|e| &e.spec).collect();
        let plan = plan::validate(&specs)?;
        let bus = EventBus::new(self.config.bus);
        let pool = CpuPool::new(self.config.pool);
        let tracker = TaskTracker::new();
        let mut slots = Vec::with_capacity(self.entries.len());
        let mut pending = Vec::with_capacity(self.entries.len());
        for e in self.entries {
            let lifecycle = Lifecycle::new(e.spec.name.clone());
            let metrics = Arc::new(DaemonMetrics::default());
            let mailbox = Arc::new(
                Mailbox::new(
                    e.spec.name.clone(),
                    e.spec.startup_queue,
                    e.spec.mailbox,
                    e.spec.overflow,
                )
                .with_concurrency(e.spec.concurrency),
            );
            slots.push(Slot {
                name: e.spec.name.clone().into(),
                status: lifecycle.subscribe(),
                spec: e.spec,
                mailbox,
                metrics,
            });
            pending.push((lifecycle, e.launch));
        }
        let router = Router::new(slots, self.config.default_timeout, self.config.max_timeout);
        let shared = Arc::new(Shared {
            router,
            bus,
            pool,
            plan,
            tracker,
            stop: CancellationToken::new(),
            started_at: OnceLock::new(),
            stop_order: Mutex::new(Vec::new()),
            lag: Mutex::new(None),
        });
        Ok(Runtime::new(shared, pending, self.config.lag_probe))
    }
}
