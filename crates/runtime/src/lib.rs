//! The in-process daemon runtime of daemonhost. It knows no application daemon: the binary
//! registers them.
//!
//! - [`Daemon`] and [`DaemonSpec`]: what a daemon is and declares.
//! - [`lifecycle`]: the state machine and its one transition table.
//! - [`RuntimeBuilder`] / [`Runtime`]: plan validation, dependency-driven start, ordered stop.
//! - [`Router`]: command routing with deadlines and exactly one answer per request; each
//!   daemon's address is a bounded queue that is its startup queue before READY.
//! - [`bus`]: the event bus with publish-time filtering.
//! - [`supervisor`]: worker processes, restarted with backoff and a start limit.
//! - [`pool`], [`timers`], [`limits`], [`cache`], [`lag`]: the CPU pool, named timers, rate
//!   limits, bounded caches and the coordinator lag probe.
//!
//! The guarantees and the tests that prove them are in `docs/SEMANTICS.md`.
#![forbid(unsafe_code)]

pub mod bus;
pub mod cache;
mod daemon;
mod error;
pub mod lag;
pub mod lifecycle;
pub mod limits;
mod mailbox;
mod metrics;
mod plan;
pub mod pool;
mod router;
mod runtime;
mod spec;
pub mod supervisor;
pub mod timers;

pub use bus::{BusConfig, BusError, BusStats, Delivery, Event, EventBus, Subscription};
pub use daemon::{Context, Daemon};
pub use error::{BoxError, DaemonError, PlanError, PlanErrors};
pub use lifecycle::{DeferredState, LifecycleState, Status};
pub use mailbox::Request;
pub use metrics::{DaemonMetrics, DaemonReport, InitReport, PollTimed, WorkCounts, WorkPlace};
pub use router::{CommandInfo, Router};
pub use runtime::{
    FailedDaemon, Runtime, RuntimeBuilder, RuntimeConfig, RuntimeHandle, ShutdownReport,
    StartupReport,
};
pub use spec::{CommandSpec, DaemonSpec, OverflowPolicy, ParamSpec, RestartPolicy};

pub use cache::{BoundedCache, CacheStats};
/// The protocol's error codes, re-exported for daemon authors.
pub use daemonhost_protocol::ErrorCode;
pub use lag::{LagProbe, LagSnapshot};
pub use limits::{
    KeyedRateLimitError, KeyedRateLimiter, Quota, RateLimited, RateLimiter, Semaphore,
};
pub use pool::{CpuPool, Placement, PoolConfig, PoolError, PoolStats, PoolTask};
pub use timers::{Spawner, TimerError, Timers, live_timer_tasks};
