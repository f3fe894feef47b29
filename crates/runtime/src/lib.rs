//! The in-process daemon runtime of daemonhost. It knows no application daemon: the binary
//! registers them.
//!
//! - [`Daemon`] and [`DaemonSpec`]: what a daemon is and declares.
//! - [`lifecycle`]: the state machine and its one transition table; [`Cause`]: why a daemon
//!   failed, as a value.
//! - [`RuntimeBuilder`] / [`Runtime`]: plan validation, dependency-driven start, ordered stop.
//! - [`Context`]: what daemon code reaches; the daemon boundary (caught panics) covers its
//!   requests, events, timers, background loops and [`TaskSet`]s.
//! - [`Router`]: command routing with deadlines and exactly one answer per request; each
//!   daemon's address is a bounded queue that is its startup queue before READY.
//! - [`bus`]: the event bus with publish-time filtering.
//! - [`supervisor`]: worker processes, restarted with backoff and a start limit.
//! - [`pool`], [`timers`], [`limits`], [`cache`], [`lag`]: the CPU pool, named timers, rate
//!   limits, bounded caches and the coordinator lag probe.
//!
//! # Files
//!
//! Imports between these files form no cycle: each
//! file below uses only files listed above it, or its own submodules.
//!
//! | file | what |
//! |---|---|
//! | `error.rs` | `DaemonError` (code + message), `PlanError(s)`, `BoxError`, panic payload text |
//! | `cause.rs` | `Cause` and `Phase`: why a daemon failed |
//! | `spec.rs` | `DaemonSpec`, `CommandSpec`, `RestartPolicy`, `OverflowPolicy` |
//! | `lifecycle.rs` | the state machine, its transition table, the `Status` watch |
//! | `metrics.rs` | `DaemonMetrics`, `PollTimed`, reports, per-request work placement |
//! | `reply.rs` | one request's answer cell: exactly one answer from the daemon, the sweeper or a dropped reply |
//! | `mailbox.rs` | a daemon's address: one bounded FIFO (startup queue, then mailbox) and its in-flight answer cells |
//! | `plan.rs` | plan validation (every problem at once, cycles as paths) |
//! | `bus.rs`, `bus/` | the event bus |
//! | `pool.rs`, `timers.rs`, `limits.rs`, `cache.rs`, `lag.rs`, `supervisor.rs` | CPU pool, named timers, rate limits, bounded caches, lag probe, worker processes |
//! | `sweep.rs` | the deadline sweeper: `timeout` at every deadline, queued or in flight, with no timer per request |
//! | `router.rs` | routing table (unknown names under a closed prefix refused), `ask` (declared params checked before enqueueing), per-daemon slots and their reports |
//! | `fault.rs` | a daemon's crash signal: how dead background work fails the daemon |
//! | `task_set.rs` | `TaskSet`: tracked, timed, guarded short tasks of a daemon |
//! | `shared.rs` | the state the runtime, its handles and its daemon tasks share |
//! | `handle.rs` | `RuntimeHandle`: the read-only view of the runtime `Context` exposes |
//! | `context.rs` | `Context`; the table of what a panic does per kind of work |
//! | `daemon.rs` | the `Daemon` trait |
//! | `task/` | one daemon's task: `mod.rs` drives the phases `deps.rs` (await dependencies), `start.rs` (start with timeout, retries, backoff; READY), `serve.rs` (serve loop, one request / event, deferred init), `drain.rs` (stop gate, drain within budget), `finish.rs` (stop, final transition) |
//! | `runtime.rs` | `Runtime`: start, settle, reports, shutdown |
//! | `builder.rs` | `RuntimeBuilder`, `RuntimeConfig` |
//!
//! The guarantees and the tests that prove them are in `docs/SEMANTICS.md`.
#![forbid(unsafe_code)]

mod builder;
pub mod bus;
pub mod cache;
mod cause;
mod context;
mod daemon;
mod error;
mod fault;
mod handle;
pub mod lag;
pub mod lifecycle;
pub mod limits;
mod mailbox;
mod metrics;
mod plan;
pub mod pool;
mod reply;
mod router;
mod runtime;
mod shared;
mod spec;
pub mod supervisor;
mod sweep;
mod task;
mod task_set;
pub mod timers;

pub use builder::{RuntimeBuilder, RuntimeConfig};
pub use bus::{BusConfig, BusError, BusStats, Delivery, Event, EventBus, Subscription};
pub use cause::{Cause, Phase};
pub use context::Context;
pub use daemon::Daemon;
pub use error::{BoxError, DaemonError, PlanError, PlanErrors};
pub use handle::RuntimeHandle;
pub use lifecycle::{DeferredState, LifecycleState, Status};
pub use mailbox::{CommandName, Request};
pub use metrics::{DaemonMetrics, DaemonReport, InitReport, PollTimed, WorkCounts, WorkPlace};
pub use router::{CommandInfo, MAX_ECHOED_NAME_CHARS, MAX_SUGGESTED_NAME_LEN, Router};
pub use runtime::{FailedDaemon, Runtime, ShutdownReport, StartupReport};
pub use spec::{CommandSpec, DaemonSpec, OverflowPolicy, ParamSpec, RestartPolicy};
pub use task_set::{TaskError, TaskSet};

pub use cache::{BoundedCache, CacheStats};
/// The protocol's error codes, re-exported for daemon authors.
pub use daemonhost_protocol::ErrorCode;
pub use lag::{LagProbe, LagSnapshot};
pub use limits::{
    KeyedRateLimitError, KeyedRateLimiter, Quota, RateLimited, RateLimiter, Semaphore,
};
pub use pool::{CpuPool, Placement, PoolConfig, PoolError, PoolStats, PoolTask};
pub use timers::{Spawner, TickPanicHook, TimerError, Timers, live_timer_tasks};
