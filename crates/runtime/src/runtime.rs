//! [`Runtime`]: a built runtime. Starts every daemon's task, reports on them, and shuts down.
//!
//! Orchestration is decentralised. Every daemon gets one task at [`Runtime::start`] (the driver
//! in `task/`); the task waits on the lifecycle watches of what it `requires` and `wants`, and
//! starts the moment they are READY: no waves, no central loop to stall. A failed requirement
//! fails the waiter with the cause. Stopping mirrors it: each task keeps serving until everything
//! that depends on it has stopped, then drains within its budget, so the stop order is the
//! reverse of the dependency order and dependents can still call their dependencies while they
//! drain.
//!
//! Everything the runtime spawns (daemon tasks, timers, `Context::spawn`, task sets) is tracked,
//! so after [`Runtime::shutdown`] the count of live tasks is provably zero.

use crate::bus::EventBus;
use crate::cause::Cause;
use crate::context::Context;
use crate::error::DaemonError;
use crate::handle::RuntimeHandle;
use crate::lag::{LagProbe, LagSnapshot};
use crate::lifecycle::{Lifecycle, LifecycleState};
use crate::mailbox::answer_all;
use crate::metrics::{DaemonReport, InitReport, PollTimed};
use crate::pool::CpuPool;
use crate::router::Router;
use crate::shared::Shared;
use crate::task::{Launch, LaunchFn};
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The result of starting every daemon.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    /// Daemons READY, in the order they became READY.
    pub ready: Vec<String>,
    /// Daemons that failed, with the cause.
    pub failed: Vec<FailedDaemon>,
    /// From the start signal until every daemon was READY or failed.
    pub all_settled_ms: f64,
}

/// A daemon that did not make it to READY.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedDaemon {
    /// Name.
    pub daemon: String,
    /// Why (`Display` gives the human text). A daemon that stopped before it was READY,
    /// without failing, has [`Cause::Stopped`].
    pub cause: Cause,
}

/// What shutdown did.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// Daemons in the order they finished stopping.
    pub stop_order: Vec<String>,
    /// Tasks still alive afterwards (0 unless something ignored cancellation).
    pub live_tasks: usize,
    /// Bus subscriptions still alive afterwards.
    pub live_subscriptions: usize,
    /// Duration of the shutdown.
    pub elapsed_ms: f64,
}

/// A built runtime: daemons registered, plan valid.
pub struct Runtime {
    shared: Arc<Shared>,
    pending: Mutex<Option<Vec<(Lifecycle, LaunchFn)>>>,
    lag_interval: Option<Duration>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("daemons", &self.shared.router.daemon_names())
            .finish()
    }
}

impl Runtime {
    pub(crate) fn new(
        shared: Arc<Shared>,
        pending: Vec<(Lifecycle, LaunchFn)>,
        lag_interval: Option<Duration>,
    ) -> Self {
        Runtime {
            shared,
            pending: Mutex::new(Some(pending)),
            lag_interval,
        }
    }

    /// The router; valid before start (requests queue).
    pub fn router(&self) -> Router {
        self.shared.router.clone()
    }

    /// The event bus.
    pub fn bus(&self) -> EventBus {
        self.shared.bus.clone()
    }

    /// The CPU pool.
    pub fn pool(&self) -> CpuPool {
        self.shared.pool.clone()
    }

    /// Start every daemon: each begins as soon as what it requires is READY. Returns at once;
    /// see [`Runtime::wait_settled`]. Calling it twice does nothing the second time.
    pub fn start(&self) {
        let Some(pending) = self.pending.lock().take() else {
            return;
        };
        let _ = self.shared.started_at.set(Instant::now());
        if let Some(interval) = self.lag_interval {
            *self.shared.lag.lock() = Some(LagProbe::spawn(interval));
        }
        for (me, (lifecycle, launch)) in pending.into_iter().enumerate() {
            let slot = &self.shared.router.slots()[me];
            let ctx = Context::new(
                slot.name.clone(),
                slot.metrics.clone(),
                CancellationToken::new(),
                self.handle(),
            );
            let fut = launch(Launch {
                me,
                lifecycle,
                ctx,
                rt: self.shared.clone(),
            });
            self.shared
                .tracker
                .spawn(PollTimed::new(fut, slot.metrics.clone()));
        }
    }

    /// Wait until every daemon is READY or has failed (or stopped).
    pub async fn wait_settled(&self) -> StartupReport {
        let mut ready_at: Vec<(Instant, String)> = Vec::new();
        let mut failed = Vec::new();
        for s in self.shared.router.slots() {
            let mut rx = s.status.clone();
            let st = match rx
                .wait_for(|st| st.state == LifecycleState::Ready || st.state.is_terminal())
                .await
            {
                Ok(st) => st.clone(),
                Err(_) => s.status.borrow().clone(),
            };
            if st.state == LifecycleState::Ready {
                let at = self
                    .shared
                    .started_at
                    .get()
                    .copied()
                    .unwrap_or_else(Instant::now)
                    + Duration::from_micros(s.metrics.ready_at_us.load(Ordering::Relaxed));
                ready_at.push((at, s.name.to_string()));
            } else {
                failed.push(FailedDaemon {
                    daemon: s.name.to_string(),
                    cause: st.cause.unwrap_or(Cause::Stopped),
                });
            }
        }
        ready_at.sort();
        let started = self
            .shared
            .started_at
            .get()
            .copied()
            .unwrap_or_else(Instant::now);
        StartupReport {
            ready: ready_at.into_iter().map(|(_, n)| n).collect(),
            failed,
            all_settled_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// [`Runtime::start`] then [`Runtime::wait_settled`].
    pub async fn start_all(&self) -> StartupReport {
        self.start();
        self.wait_settled().await
    }

    /// A cheap handle for reading the runtime's state (what the system daemons use).
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle::new(self.shared.clone())
    }

    /// A live report of every daemon.
    pub fn reports(&self) -> Vec<DaemonReport> {
        self.shared.router.reports()
    }

    /// The init metrics of this boot, one per daemon.
    pub fn init_reports(&self) -> Vec<InitReport> {
        self.handle().init_reports()
    }

    /// The coordinator lag probe's view, if it runs.
    pub fn lag(&self) -> Option<LagSnapshot> {
        self.handle().lag()
    }

    /// Tasks the runtime tracks right now (daemon tasks, timers, spawned work, task sets).
    pub fn live_tasks(&self) -> usize {
        self.shared.tracker.len()
    }

    /// Stop every daemon in reverse dependency order, each draining within its budget, then
    /// wait for every tracked task to end.
    pub async fn shutdown(&self) -> ShutdownReport {
        let t0 = Instant::now();
        // Daemons never started: close their queues so nothing waits.
        if let Some(pending) = self.pending.lock().take() {
            for (i, (lifecycle, _)) in pending.into_iter().enumerate() {
                let slot = &self.shared.router.slots()[i];
                let _ = lifecycle.transition(LifecycleState::Stopped, None);
                answer_all(
                    slot.mailbox.close(DaemonError::shutting_down(format!(
                        "daemon '{}' was never started",
                        slot.name
                    ))),
                    None,
                );
            }
        }
        self.shared.stop.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        self.shared.router.begin_shutdown();
        if let Some(probe) = self.shared.lag.lock().take() {
            probe.stop();
        }
        self.shared.pool.shutdown();
        ShutdownReport {
            stop_order: self.shared.stop_order.lock().clone(),
            live_tasks: self.shared.tracker.len(),
            live_subscriptions: self.shared.bus.subscription_count(),
            elapsed_ms: t0.elapsed().as_secs_f64() * 1000.0,
        }
    }
}
