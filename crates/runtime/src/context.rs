//! The [`Context`] the runtime hands to daemon code: what a daemon can reach.
//!
//! # The daemon boundary covers background work
//!
//! A panic in daemon code is caught at the boundary of the unit it belongs to, counted in the
//! daemon's `panics` and logged with the daemon's name and the panic message. What happens next
//! depends on what the unit is:
//!
//! | work | on panic |
//! |---|---|
//! | a request (`handle`) | that request is answered `internal`; the daemon keeps serving |
//! | an event (`on_event`) | that event is dropped; the daemon keeps serving |
//! | a timer tick ([`Context::timers`]) | the timer keeps running: the next tick fires as scheduled (a tick is a unit of work) |
//! | a task of a [`TaskSet`] ([`Context::task_set`]) | [`TaskSet::join_next`] returns [`TaskError::Panicked`](crate::TaskError) for it; the daemon keeps serving |
//! | a background loop ([`Context::spawn`]) | **the daemon fails** with [`Cause::Panicked`] `{ phase: Background, .. }`: its mailbox answers `unavailable` naming the cause, requests in flight are answered the same, dependents still waiting for it fail as usual. A loop that died silently would leave a READY daemon that no longer does its job. (While the daemon is already stopping, the panic is only counted and logged.) |
//!
//! Everything started here is tracked by the runtime, timed into the daemon's `longest_poll` and
//! cancelled when the daemon stops.

use crate::bus::{BusError, EventBus, Subscription};
use crate::cause::{Cause, Phase};
use crate::error::{DaemonError, panic_message};
use crate::fault::Fault;
use crate::handle::RuntimeHandle;
use crate::metrics::{DaemonMetrics, PollTimed, WorkPlace, mark_request};
use crate::pool::{CpuPool, Placement, PoolError};
use crate::router::Router;
use crate::task_set::TaskSet;
use crate::timers::{Spawner, TickPanicHook, Timers};
use futures_util::FutureExt;
use serde_json::Value;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug)]
struct Inner {
    name: Arc<str>,
    router: Router,
    bus: EventBus,
    pool: CpuPool,
    timers: Timers,
    metrics: Arc<DaemonMetrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    fault: Arc<Fault>,
    runtime: RuntimeHandle,
}

/// What a daemon can reach: the router, the bus, the CPU pool, its timers and metrics.
/// Cheap to clone.
///
/// A panic in the daemon's code is caught, counted in its `panics` and logged with its name;
/// then, per kind of work: a request is answered `internal` and an event dropped (the daemon
/// keeps serving); a [timer](Context::timers) tick is skipped (the timer keeps running); a
/// [`TaskSet`] task yields [`TaskError::Panicked`](crate::TaskError) (the daemon keeps
/// serving); a background loop started with [`Context::spawn`] **fails the daemon** with
/// `Cause::Panicked { phase: Background, .. }`.
#[derive(Debug, Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

impl Context {
    pub(crate) fn new(
        name: Arc<str>,
        metrics: Arc<DaemonMetrics>,
        cancel: CancellationToken,
        runtime: RuntimeHandle,
    ) -> Self {
        let router = runtime.router().clone();
        let bus = runtime.bus().clone();
        let pool = runtime.pool().clone();
        let tracker = runtime.tracker().clone();
        let fault = Arc::new(Fault::new(runtime.stop_token()));
        let spawner: Spawner = {
            let metrics = metrics.clone();
            let tracker = tracker.clone();
            let cancel = cancel.clone();
            Arc::new(move |fut| {
                let cancel = cancel.clone();
                tracker.spawn(PollTimed::new(
                    async move {
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = fut => {}
                        }
                    },
                    metrics.clone(),
                ))
            })
        };
        let on_tick_panic: TickPanicHook = {
            let metrics = metrics.clone();
            let name = name.clone();
            Arc::new(move |timer, msg| {
                metrics.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(daemon = %name, timer, panic = %msg, "Daemon panicked in a timer tick; the timer keeps running");
            })
        };
        Context {
            inner: Arc::new(Inner {
                name,
                router,
                bus,
                pool,
                timers: Timers::with_spawner(spawner).on_tick_panic(on_tick_panic),
                metrics,
                cancel,
                tracker,
                fault,
                runtime,
            }),
        }
    }

    /// This daemon's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A read-only view of the whole runtime (reports, lag, pool and bus statistics).
    pub fn runtime(&self) -> &RuntimeHandle {
        &self.inner.runtime
    }

    /// The router, to ask other daemons.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// The event bus.
    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// Publish an event; returns how many subscribers received it. An invalid topic is a bug in
    /// the daemon and is logged rather than returned.
    pub fn publish(&self, topic: &str, data: Value) -> usize {
        match self.inner.bus.publish(topic, data) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(daemon = %self.inner.name, topic, error = %e, "Invalid event topic");
                0
            }
        }
    }

    /// Subscribe to a pattern. Drop the handle to unsubscribe.
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        self.inner.bus.subscribe(pattern)
    }

    /// The daemon's named timers; all are cancelled when the daemon stops. A panicking tick is
    /// counted and logged, and the timer keeps running.
    pub fn timers(&self) -> &Timers {
        &self.inner.timers
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &Arc<DaemonMetrics> {
        &self.inner.metrics
    }

    /// Say where the request being handled was served: `Worker` when a worker process answered
    /// it, `Inline` when the daemon's own code did (the default). Each request is counted once,
    /// at the place reported last, when its handler ends; up to `concurrency` handlers may run
    /// at once and each keeps its own placement. Called outside a request handler (background
    /// work), it counts one unit of work at `place` at once.
    pub fn served_at(&self, place: WorkPlace) {
        if !mark_request(place) {
            self.inner.metrics.count_work(place);
        }
    }

    /// Publish daemon-specific status (archive progress, worker placement, ...) shown in this
    /// daemon's report (`health/status`). Replaces what was set before; keep it small.
    pub fn set_details(&self, details: Value) {
        *self.inner.metrics.details.lock() = Some(details);
    }

    /// The shared CPU pool.
    pub fn pool(&self) -> &CpuPool {
        &self.inner.pool
    }

    /// Run CPU-heavy work on the pool (or, when it is saturated, a blocking thread) and await
    /// it; counted in this daemon's work placement.
    pub async fn spawn_cpu<F, R>(&self, f: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let task = self.inner.pool.spawn(f);
        self.inner.metrics.record_work(match task.placement() {
            Placement::Pool => WorkPlace::Pool,
            Placement::Blocking => WorkPlace::Blocking,
        });
        task.await
    }

    /// Run blocking I/O on a blocking thread and await it; counted as `blocking`.
    pub async fn spawn_blocking<F, R>(&self, f: F) -> Result<R, DaemonError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.inner.metrics.record_work(WorkPlace::Blocking);
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| DaemonError::internal(format!("blocking task failed: {e}")))
    }

    /// Spawn a background loop owned by this daemon: tracked, its polls count toward this
    /// daemon's `longest_poll`, cancelled when the daemon stops. If it panics, the panic is
    /// counted and logged and **the daemon fails** with `Panicked { phase: Background, .. }`
    /// (its mailbox and requests in flight are answered `unavailable` naming the cause, and
    /// dependents still waiting for it fail); for many short tasks whose panics the daemon handles
    /// itself, use [`Context::task_set`].
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.inner.cancel.clone();
        let name = self.inner.name.clone();
        let metrics = self.inner.metrics.clone();
        let fault = self.inner.fault.clone();
        self.inner.tracker.spawn(PollTimed::new(
            async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    r = AssertUnwindSafe(fut).catch_unwind() => if let Err(p) = r {
                        let message = panic_message(&*p);
                        metrics.panics.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(daemon = %name, panic = %message, "Daemon panicked in a background task");
                        fault.report(Cause::Panicked { phase: Phase::Background, message });
                    },
                }
            },
            self.inner.metrics.clone(),
        ))
    }

    /// A new, empty set of short tasks of this daemon (tracked, timed, cancelled at stop, panics
    /// caught and returned as errors). The caller bounds how many it holds; see [`TaskSet`].
    pub fn task_set<T: Send + 'static>(&self) -> TaskSet<T> {
        TaskSet::new(
            self.inner.name.clone(),
            self.inner.metrics.clone(),
            self.inner.cancel.clone(),
            self.inner.tracker.clone(),
        )
    }

    /// Cancelled when this daemon begins to stop (for loops in spawned tasks).
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// Whether this daemon is stopping.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    pub(crate) fn cancel(&self) {
        self.inner.cancel.cancel();
    }

    /// The daemon's fault line (background work that died reports here).
    pub(crate) fn fault(&self) -> &Fault {
        &self.inner.fault
    }
}
