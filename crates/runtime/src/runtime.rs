//! The runtime: registration, the start orchestration, each daemon's task, and shutdown.
//!
//! Orchestration is decentralised. Every daemon gets one task at [`Runtime::start`]; the task
//! waits on the lifecycle watches of what it `requires` and `wants`, and starts the moment they
//! are READY: no waves, no central loop to stall. A failed requirement fails the waiter with the
//! cause. Stopping mirrors it: each task keeps serving until everything that depends on it has
//! stopped, then drains within its budget, so the stop order is the reverse of the dependency
//! order and dependents can still call their dependencies while they drain.
//!
//! Everything the runtime spawns (daemon tasks, timers, `Context::spawn`) is tracked, so after
//! [`Runtime::shutdown`] the count of live tasks is provably zero.

use crate::bus::{BusConfig, Delivery, EventBus, Subscription};
use crate::daemon::{Context, Daemon};
use crate::error::{DaemonError, PlanErrors};
use crate::lag::{LagProbe, LagSnapshot};
use crate::lifecycle::{DeferredState, Lifecycle, LifecycleState};
use crate::mailbox::{Envelope, Mailbox};
use crate::metrics::{DaemonMetrics, DaemonReport, InitReport, PollTimed, us_to_ms, work_counts};
use crate::plan::{self, Plan};
use crate::pool::{CpuPool, PoolConfig};
use crate::router::{Router, Slot};
use crate::spec::DaemonSpec;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
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

type LaunchFn = Box<dyn FnOnce(Launch) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Entry {
    spec: DaemonSpec,
    launch: LaunchFn,
}

/// What a daemon task needs from the runtime.
struct Launch {
    me: usize,
    lifecycle: Lifecycle,
    ctx: Context,
    rt: Arc<Shared>,
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
        let launch: LaunchFn = Box::new(move |l: Launch| Box::pin(run_daemon(daemon, l)));
        self.entries.push(Entry { spec, launch });
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
            let mailbox = Arc::new(Mailbox::new(
                e.spec.name.clone(),
                e.spec.startup_queue,
                e.spec.mailbox,
                e.spec.overflow,
            ));
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
        Ok(Runtime {
            shared,
            pending: Mutex::new(Some(pending)),
            lag_interval: self.config.lag_probe,
        })
    }
}

struct Shared {
    router: Router,
    bus: EventBus,
    pool: CpuPool,
    plan: Plan,
    tracker: TaskTracker,
    stop: CancellationToken,
    started_at: OnceLock<Instant>,
    stop_order: Mutex<Vec<String>>,
    lag: Mutex<Option<LagProbe>>,
}

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
#[derive(Debug, Clone, Serialize)]
pub struct FailedDaemon {
    /// Name.
    pub daemon: String,
    /// Why.
    pub cause: String,
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
            let cancel = CancellationToken::new();
            let ctx = Context::new(
                slot.name.clone(),
                slot.metrics.clone(),
                cancel,
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
                    cause: st.cause.unwrap_or_else(|| st.state.to_string()),
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
        RuntimeHandle {
            shared: self.shared.clone(),
        }
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

    /// Tasks the runtime tracks right now (daemon tasks, timers, spawned work).
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

/// A read-only view of a running runtime: daemon reports, init metrics, lag, pool and bus
/// statistics. Cheap to clone; handed to daemons through [`Context::runtime`].
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
    pub fn pool_stats(&self) -> crate::pool::PoolStats {
        self.shared.pool.stats()
    }

    /// Event bus statistics.
    pub fn bus_stats(&self) -> crate::bus::BusStats {
        self.shared.bus.stats()
    }

    /// Tasks the runtime tracks right now.
    pub fn live_tasks(&self) -> usize {
        self.shared.tracker.len()
    }

    /// Time since [`Runtime::start`] (zero before it).
    pub fn uptime(&self) -> Duration {
        self.shared
            .started_at
            .get()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }
}

fn init_report(s: &Slot) -> InitReport {
    let st = s.status.borrow().clone();
    let m = &s.metrics;
    InitReport {
        daemon: s.name.to_string(),
        state: st.state,
        deferred: st.deferred,
        waited_ms: us_to_ms(m.waited_us.load(Ordering::Relaxed)),
        core_init_ms: us_to_ms(m.core_init_us.load(Ordering::Relaxed)),
        deferred_init_ms: us_to_ms(m.deferred_init_us.load(Ordering::Relaxed)),
        total_ms: us_to_ms(m.total_us.load(Ordering::Relaxed)),
        queued_before_ready: s
            .mailbox
            .counters
            .queued_before_ready
            .load(Ordering::Relaxed),
        longest_poll_ms: us_to_ms(m.longest_poll_us()),
        work: work_counts(m),
    }
}

fn answer_all(envs: Vec<Envelope>, err: Option<&DaemonError>) {
    for env in envs {
        let e = err
            .cloned()
            .unwrap_or_else(|| DaemonError::shutting_down("the host is shutting down"));
        env.fail(e);
    }
}

fn micros_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

enum Waited {
    Go,
    Failed(String),
    Stop,
}

/// Wait for the daemon's requirements (READY or failed) and wants (READY or settled).
async fn wait_dependencies(l: &Launch) -> Waited {
    let slots = l.rt.router.slots();
    for (&dep, required) in l.rt.plan.requires[l.me]
        .iter()
        .map(|d| (d, true))
        .chain(l.rt.plan.wants[l.me].iter().map(|d| (d, false)))
    {
        let mut rx = slots[dep].status.clone();
        let outcome = tokio::select! {
            biased;
            () = l.rt.stop.cancelled() => return Waited::Stop,
            r = rx.wait_for(|s| s.state == LifecycleState::Ready || s.state.is_terminal()) => {
                r.map(|s| (s.state, s.cause.clone())).unwrap_or((LifecycleState::Stopped, None))
            }
        };
        if required && outcome.0 != LifecycleState::Ready {
            let why = outcome.1.unwrap_or_else(|| outcome.0.to_string());
            return Waited::Failed(format!(
                "requires '{}', which failed: {why}",
                slots[dep].name
            ));
        }
    }
    Waited::Go
}

/// Everything `serve` needs that does not change per request.
struct Serving<'a, D: Daemon> {
    daemon: &'a D,
    ctx: &'a Context,
    state: &'a D::State,
    slot: &'a Slot,
}

struct InFlight<'a>(&'a DaemonMetrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve<D: Daemon>(s: &Serving<'_, D>, env: Envelope) {
    let Envelope { request, reply, .. } = env;
    let counters = &s.slot.mailbox.counters;
    if reply.is_closed() {
        counters.expired.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let deadline = request.deadline;
    if Instant::now() >= deadline {
        counters.expired.fetch_add(1, Ordering::Relaxed);
        let _ = reply.send(Err(DaemonError::timeout(format!(
            "deadline passed while queued for daemon '{}'",
            s.slot.name
        ))));
        return;
    }
    let m = &s.slot.metrics;
    m.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(m);
    m.work_inline.fetch_add(1, Ordering::Relaxed);
    let handled = AssertUnwindSafe(s.daemon.handle(s.ctx, s.state, request)).catch_unwind();
    let out = match tokio::time::timeout_at(deadline, handled).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(panic)) => {
            m.panics.fetch_add(1, Ordering::Relaxed);
            let msg = panic_message(&*panic);
            tracing::error!(daemon = %s.slot.name, panic = %msg, "Daemon panicked while handling a request");
            Err(DaemonError::internal(format!(
                "daemon '{}' panicked while handling the request: {msg}",
                s.slot.name
            )))
        }
        Err(_) => Err(DaemonError::timeout(format!(
            "daemon '{}' did not answer before the deadline",
            s.slot.name
        ))),
    };
    m.handled.fetch_add(1, Ordering::Relaxed);
    if out.is_err() {
        m.failed.fetch_add(1, Ordering::Relaxed);
    }
    let _ = reply.send(out);
}

async fn deliver<D: Daemon>(s: &Serving<'_, D>, d: Delivery) {
    s.slot.metrics.events.fetch_add(1, Ordering::Relaxed);
    if let Err(panic) = AssertUnwindSafe(s.daemon.on_event(s.ctx, s.state, d))
        .catch_unwind()
        .await
    {
        s.slot.metrics.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(daemon = %s.slot.name, panic = %panic_message(&*panic), "Daemon panicked in on_event");
    }
}

/// The next delivery from any of the daemon's subscriptions (pending forever if none).
async fn next_delivery(subs: &mut [Subscription]) -> Option<Delivery> {
    match subs {
        [] => std::future::pending().await,
        [one] => one.recv().await,
        many => {
            let futs = many.iter_mut().map(|s| Box::pin(s.recv()));
            futures_util::future::select_all(futs).await.0
        }
    }
}

fn publish_state(rt: &Shared, name: &str, state: LifecycleState, cause: Option<&str>) {
    let _ = rt.bus.publish(
        "system:daemon:state",
        json!({ "daemon": name, "state": state, "cause": cause }),
    );
}

async fn run_daemon<D: Daemon>(daemon: D, l: Launch) {
    let slot = &l.rt.router.slots()[l.me];
    let name = slot.name.clone();
    let spec = &slot.spec;
    let started_at = l.rt.started_at.get().copied().unwrap_or_else(Instant::now);
    let fail = |cause: String| {
        let _ = l
            .lifecycle
            .transition(LifecycleState::Failed, Some(cause.clone()));
        let err = DaemonError::unavailable(format!("daemon '{name}' failed: {cause}"));
        answer_all(slot.mailbox.close(err.clone()), Some(&err));
        tracing::error!(daemon = %name, %cause, "Daemon failed");
        publish_state(&l.rt, &name, LifecycleState::Failed, Some(&cause));
        l.ctx.cancel();
    };

    // 1. Dependencies.
    match wait_dependencies(&l).await {
        Waited::Go => {}
        Waited::Failed(cause) => {
            fail(cause);
            l.ctx.timers().shutdown().await;
            return;
        }
        Waited::Stop => {
            let _ = l.lifecycle.transition(LifecycleState::Stopped, None);
            answer_all(
                slot.mailbox.close(DaemonError::shutting_down(format!(
                    "daemon '{name}' stopped before it started"
                ))),
                None,
            );
            l.rt.stop_order.lock().push(name.to_string());
            return;
        }
    }
    slot.metrics
        .waited_us
        .store(micros_since(started_at), Ordering::Relaxed);

    // 2. Core init, with retries per the restart policy.
    if let Err(e) = l.lifecycle.transition(LifecycleState::Starting, None) {
        tracing::error!(error = %e, "Lifecycle");
    }
    publish_state(&l.rt, &name, LifecycleState::Starting, None);
    let mut subs = Vec::with_capacity(spec.events.len());
    for p in &spec.events {
        match l.rt.bus.subscribe_with_capacity(p, spec.event_queue) {
            Ok(s) => subs.push(s),
            Err(e) => {
                fail(format!("cannot subscribe to '{p}': {e}"));
                return;
            }
        }
    }
    let core_t0 = Instant::now();
    let mut attempt = 0u32;
    let state = loop {
        attempt += 1;
        let started = AssertUnwindSafe(tokio::time::timeout(
            spec.start_timeout,
            daemon.start(&l.ctx),
        ))
        .catch_unwind()
        .await;
        let cause = match started {
            Ok(Ok(Ok(state))) => break state,
            Ok(Ok(Err(e))) => format!("start failed: {e}"),
            Ok(Err(_)) => format!(
                "start timed out after {} ms",
                spec.start_timeout.as_millis()
            ),
            Err(p) => {
                slot.metrics.panics.fetch_add(1, Ordering::Relaxed);
                format!("start panicked: {}", panic_message(&*p))
            }
        };
        if attempt > spec.restart.max_restarts {
            drop(subs);
            fail(cause);
            l.ctx.timers().shutdown().await;
            return;
        }
        let delay = spec.restart.delay(attempt);
        tracing::warn!(daemon = %name, %cause, attempt, retry_in_ms = delay.as_millis() as u64, "Daemon start failed; retrying");
        l.lifecycle.retrying(cause);
        tokio::select! {
            () = l.rt.stop.cancelled() => {
                drop(subs);
                fail("stopped while waiting to retry start".into());
                l.ctx.timers().shutdown().await;
                return;
            }
            () = tokio::time::sleep(delay) => {}
        }
    };
    slot.metrics
        .core_init_us
        .store(micros_since(core_t0), Ordering::Relaxed);
    slot.metrics
        .ready_at_us
        .store(micros_since(started_at), Ordering::Relaxed);
    slot.metrics
        .total_us
        .store(micros_since(started_at), Ordering::Relaxed);
    slot.mailbox.mark_ready();
    if let Err(e) = l.lifecycle.transition(LifecycleState::Ready, None) {
        tracing::error!(error = %e, "Lifecycle");
    }
    publish_state(&l.rt, &name, LifecycleState::Ready, None);

    // 3. Serve until every dependent has stopped, then drain.
    {
        let s = Serving {
            daemon: &daemon,
            ctx: &l.ctx,
            state: &state,
            slot,
        };
        let deferred = async {
            l.lifecycle.set_deferred(DeferredState::Running, None);
            let t0 = Instant::now();
            let r = AssertUnwindSafe(daemon.start_deferred(&l.ctx, &state))
                .catch_unwind()
                .await;
            slot.metrics
                .deferred_init_us
                .store(micros_since(t0), Ordering::Relaxed);
            slot.metrics
                .total_us
                .store(micros_since(started_at), Ordering::Relaxed);
            let cause = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("deferred init failed: {e}")),
                Err(p) => {
                    slot.metrics.panics.fetch_add(1, Ordering::Relaxed);
                    Some(format!("deferred init panicked: {}", panic_message(&*p)))
                }
            };
            if let Some(c) = &cause {
                tracing::error!(daemon = %name, cause = %c, "Deferred init failed; daemon stays READY");
            }
            l.lifecycle.set_deferred(
                if cause.is_some() {
                    DeferredState::Failed
                } else {
                    DeferredState::Done
                },
                cause,
            );
            let report = init_report(slot);
            let _ = l.rt.bus.publish(
                "system:daemon:init-complete",
                serde_json::to_value(&report).unwrap_or_default(),
            );
        };
        let stop_gate = async {
            l.rt.stop.cancelled().await;
            for &d in &l.rt.plan.dependents[l.me] {
                let mut rx = l.rt.router.slots()[d].status.clone();
                let _ = rx.wait_for(|st| st.state.is_terminal()).await;
            }
        };
        tokio::pin!(deferred, stop_gate);
        let mut deferred_done = false;
        let mut mailbox_open = true;
        let mut events_open = true;
        let mut inflight = FuturesUnordered::new();
        let limit = spec.concurrency;
        loop {
            tokio::select! {
                biased;
                () = &mut stop_gate => break,
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
                () = &mut deferred, if !deferred_done => deferred_done = true,
                env = slot.mailbox.recv(), if mailbox_open && inflight.len() < limit => match env {
                    Some(env) => inflight.push(futures_util::future::Either::Left(serve(&s, env))),
                    None => mailbox_open = false,
                },
                d = next_delivery(&mut subs), if events_open && inflight.len() < limit => match d {
                    Some(d) => inflight.push(futures_util::future::Either::Right(deliver(&s, d))),
                    None => events_open = false,
                },
            }
        }

        // Stopping: refuse new work, finish what is queued and in flight within the budget.
        if let Err(e) = l.lifecycle.transition(LifecycleState::Stopping, None) {
            tracing::error!(error = %e, "Lifecycle");
        }
        publish_state(&l.rt, &name, LifecycleState::Stopping, None);
        drop(subs);
        slot.mailbox
            .start_draining(DaemonError::shutting_down(format!(
                "daemon '{name}' is stopping"
            )));
        let drain = async {
            let mut open = true;
            loop {
                tokio::select! {
                    Some(()) = inflight.next(), if !inflight.is_empty() => {}
                    env = slot.mailbox.recv(), if open && inflight.len() < limit => match env {
                        Some(env) => inflight.push(futures_util::future::Either::Left(serve(&s, env))),
                        None => open = false,
                    },
                    else => break,
                }
            }
        };
        if tokio::time::timeout(spec.drain_budget, drain)
            .await
            .is_err()
        {
            tracing::warn!(daemon = %name, budget_ms = spec.drain_budget.as_millis() as u64, "Drain budget exceeded; answering the rest with shutting_down");
        }
    }
    answer_all(
        slot.mailbox.close(DaemonError::shutting_down(format!(
            "daemon '{name}' stopped"
        ))),
        None,
    );
    l.ctx.cancel();
    l.ctx.timers().shutdown().await;
    let stopped = AssertUnwindSafe(tokio::time::timeout(
        spec.drain_budget,
        daemon.stop(&l.ctx, state),
    ))
    .catch_unwind()
    .await;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::warn!(daemon = %name, "Daemon stop exceeded its budget"),
        Err(p) => {
            slot.metrics.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(daemon = %name, panic = %panic_message(&*p), "Daemon panicked in stop");
        }
    }
    if let Err(e) = l.lifecycle.transition(LifecycleState::Stopped, None) {
        tracing::error!(error = %e, "Lifecycle");
    }
    publish_state(&l.rt, &name, LifecycleState::Stopped, None);
    l.rt.stop_order.lock().push(name.to_string());
}
