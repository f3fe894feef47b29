//! The `Daemon` trait and the `Context` the runtime hands to daemon code.
//!
//! A daemon's fields are its configuration; its state is built in [`Daemon::start`] and owned by
//! the runtime, which lends it to `handle`, `on_event` and `start_deferred`. Handlers borrow the
//! state instead of locking it: all of a daemon's futures run on its own task (up to
//! `spec.concurrency` at once), which is also what lets the runtime time every poll of that
//! daemon's code. Work that would block goes to [`Context::spawn_cpu`] (the CPU pool) or a
//! dedicated thread, never inline.

use crate::bus::{Delivery, EventBus, Subscription};
use crate::error::{BoxError, DaemonError};
use crate::mailbox::Request;
use crate::metrics::{DaemonMetrics, PollTimed, WorkPlace};
use crate::pool::{CpuPool, Placement, PoolError};
use crate::router::Router;
use crate::spec::DaemonSpec;
use crate::timers::Timers;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A long-lived service hosted by the runtime.
///
/// Implement the methods with `async fn`; the returned futures must be `Send`.
pub trait Daemon: Send + Sync + Sized + 'static {
    /// What changes while the daemon runs (connections, caches, counters). Shared by
    /// concurrent handlers, so it uses interior mutability where it changes.
    type State: Send + Sync + 'static;

    /// The static description: name, dependencies, commands, limits.
    fn spec(&self) -> DaemonSpec;

    /// Core init: only what is needed to answer requests. Requests arriving meanwhile wait in
    /// the startup queue. An error (or panic, or exceeding `start_timeout`) fails the daemon,
    /// subject to its restart policy.
    fn start(&self, ctx: &Context) -> impl Future<Output = Result<Self::State, BoxError>> + Send;

    /// Heavy init after READY, concurrently with serving. A failure is reported and the daemon
    /// stays READY.
    fn start_deferred(
        &self,
        ctx: &Context,
        state: &Self::State,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (ctx, state);
        async { Ok(()) }
    }

    /// Answer one request. The future is dropped at the request's deadline.
    fn handle(
        &self,
        ctx: &Context,
        state: &Self::State,
        request: Request,
    ) -> impl Future<Output = Result<Value, DaemonError>> + Send;

    /// React to an event matching one of `spec.events` (or a lag marker).
    fn on_event(
        &self,
        ctx: &Context,
        state: &Self::State,
        event: Delivery,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, state, event);
        async {}
    }

    /// Release what `start` built. Runs after the queue is drained; timers, subscriptions and
    /// tasks spawned through the context are cleaned up by the runtime afterwards regardless.
    fn stop(&self, ctx: &Context, state: Self::State) -> impl Future<Output = ()> + Send {
        let _ = (ctx, state);
        async {}
    }
}

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
    runtime: crate::runtime::RuntimeHandle,
}

/// What a daemon can reach: the router, the bus, the CPU pool, its timers and metrics.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

impl Context {
    pub(crate) fn new(
        name: Arc<str>,
        metrics: Arc<DaemonMetrics>,
        cancel: CancellationToken,
        runtime: crate::runtime::RuntimeHandle,
    ) -> Self {
        let router = runtime.router().clone();
        let bus = runtime.bus().clone();
        let pool = runtime.pool().clone();
        let tracker = runtime.tracker().clone();
        let spawner = {
            let metrics = metrics.clone();
            let tracker = tracker.clone();
            let cancel = cancel.clone();
            let spawner: crate::timers::Spawner = Arc::new(move |fut| {
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
            });
            spawner
        };
        Context {
            inner: Arc::new(Inner {
                name,
                router,
                bus,
                pool,
                timers: Timers::with_spawner(spawner),
                metrics,
                cancel,
                tracker,
                runtime,
            }),
        }
    }

    /// This daemon's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A read-only view of the whole runtime (reports, lag, pool and bus statistics).
    pub fn runtime(&self) -> &crate::runtime::RuntimeHandle {
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
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription, crate::bus::BusError> {
        self.inner.bus.subscribe(pattern)
    }

    /// The daemon's named timers; all are cancelled when the daemon stops.
    pub fn timers(&self) -> &Timers {
        &self.inner.timers
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &Arc<DaemonMetrics> {
        &self.inner.metrics
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

    /// Spawn a background task owned by this daemon: its polls count toward this daemon's
    /// `longest_poll`, and it is cancelled when the daemon stops.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.inner.cancel.clone();
        self.inner.tracker.spawn(PollTimed::new(
            async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = fut => {}
                }
            },
            self.inner.metrics.clone(),
        ))
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
}
