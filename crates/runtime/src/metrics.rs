//! Per-daemon metrics, including the "blocked the coordinator" signal.
//!
//! `longest_poll` is measured by wrapping every future the runtime runs for a daemon (its task,
//! its timers) in [`PollTimed`], which times each individual `poll`. A daemon that does blocking
//! or CPU-heavy work on an async worker shows it here, whatever else it reports. Counters are
//! relaxed atomics: they are read for display, never for synchronisation.
//!
//! Work counts count each request once, where it was served. The runtime polls every request
//! handler inside a [`RequestScope`], a thread-local marker swapped in for the duration of each
//! poll (no allocation, no lock), so code running in the handler can say where *this* request
//! was served ([`DaemonMetrics::record_work`] with `Inline` or `Worker`, or
//! `Context::served_at`) even when `concurrency` handlers of the daemon interleave on its task.
//! When the handler ends, the runtime counts the request at the place reported last, `Inline`
//! if none was.

use crate::cause::Cause;
use crate::lifecycle::{DeferredState, LifecycleState};
use pin_project_lite::pin_project;
use serde::Serialize;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// Where a piece of a daemon's work ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkPlace {
    /// On the daemon's own task, on the async runtime.
    Inline,
    /// On the CPU pool.
    Pool,
    /// On a blocking thread (the pool's fallback, or dedicated I/O).
    Blocking,
    /// In a worker process.
    Worker,
}

/// Live counters for one daemon.
#[derive(Debug, Default)]
pub struct DaemonMetrics {
    pub(crate) waited_us: AtomicU64,
    pub(crate) ready_at_us: AtomicU64,
    pub(crate) core_init_us: AtomicU64,
    pub(crate) deferred_init_us: AtomicU64,
    pub(crate) total_us: AtomicU64,
    pub(crate) longest_poll_us: AtomicU64,
    pub(crate) handled: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) work_inline: AtomicU64,
    pub(crate) work_pool: AtomicU64,
    pub(crate) work_blocking: AtomicU64,
    pub(crate) work_worker: AtomicU64,
    /// Daemon-specific status (archive progress, worker placement, ...), set by the daemon.
    pub(crate) details: parking_lot::Mutex<Option<serde_json::Value>>,
}

impl DaemonMetrics {
    /// Record one poll's duration.
    #[inline]
    pub(crate) fn record_poll(&self, micros: u64) {
        // Most polls are not the longest: a load, and the read-modify-write only when it is.
        if micros > self.longest_poll_us.load(Ordering::Relaxed) {
            self.longest_poll_us.fetch_max(micros, Ordering::Relaxed);
        }
    }

    /// Count a unit of work done at `place`.
    ///
    /// `Pool` and `Blocking` count a job (what [`Context::spawn_cpu`](crate::Context) does).
    /// `Inline` and `Worker` describe a request: called while a request handler runs, they set
    /// where *that* request was served (it is counted once, when the handler ends, at the
    /// place reported last; concurrent handlers each keep their own); called outside a
    /// handler (background work), they count at once. Prefer `Context::served_at`.
    pub fn record_work(&self, place: WorkPlace) {
        if matches!(place, WorkPlace::Inline | WorkPlace::Worker) && mark_request(place) {
            return;
        }
        self.count_work(place);
    }

    /// Count one unit at `place` now, whatever is being polled.
    pub(crate) fn count_work(&self, place: WorkPlace) {
        let c = match place {
            WorkPlace::Inline => &self.work_inline,
            WorkPlace::Pool => &self.work_pool,
            WorkPlace::Blocking => &self.work_blocking,
            WorkPlace::Worker => &self.work_worker,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Longest single poll seen so far, in microseconds.
    pub fn longest_poll_us(&self) -> u64 {
        self.longest_poll_us.load(Ordering::Relaxed)
    }
}

/// What the current thread is polling: a request handler (with the placement it reported so far)
/// or anything else.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Outside,
    Request(Option<WorkPlace>),
}

thread_local! {
    static SCOPE: Cell<Scope> = const { Cell::new(Scope::Outside) };
}

/// Set where the request being handled on this thread was served; `false` if no request
/// handler is being polled here.
pub(crate) fn mark_request(place: WorkPlace) -> bool {
    SCOPE.with(|s| match s.get() {
        Scope::Request(_) => {
            s.set(Scope::Request(Some(place)));
            true
        }
        Scope::Outside => false,
    })
}

/// One request's placement, kept by the runtime next to the handler's future (one byte, on the
/// serving future's frame: no allocation).
#[derive(Debug, Default)]
pub(crate) struct RequestPlace(AtomicU8);

impl RequestPlace {
    const PLACES: [WorkPlace; 4] = [
        WorkPlace::Inline,
        WorkPlace::Pool,
        WorkPlace::Blocking,
        WorkPlace::Worker,
    ];

    /// Where the request was served, if the handler said so.
    pub(crate) fn get(&self) -> Option<WorkPlace> {
        let v = self.0.load(Ordering::Relaxed);
        Self::PLACES.get(usize::from(v).checked_sub(1)?).copied()
    }

    fn set(&self, place: Option<WorkPlace>) {
        let v = match place {
            None => 0,
            Some(p) => Self::PLACES
                .iter()
                .position(|q| *q == p)
                .map_or(0, |i| i as u8 + 1),
        };
        self.0.store(v, Ordering::Relaxed);
    }
}

pin_project! {
    /// A request handler's future, polled with its request's [`RequestPlace`] in scope.
    pub(crate) struct RequestScope<'a, F> {
        #[pin]
        inner: F,
        place: &'a RequestPlace,
    }
}

impl<'a, F> RequestScope<'a, F> {
    /// Poll `inner` as the handler of the request whose placement is `place`.
    pub(crate) fn new(inner: F, place: &'a RequestPlace) -> Self {
        RequestScope { inner, place }
    }
}

/// Puts the outer scope back after a poll (also when the poll unwinds) and keeps what the
/// handler reported.
struct Restore<'a> {
    prev: Scope,
    place: &'a RequestPlace,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Scope::Request(p) = SCOPE.with(|s| s.replace(self.prev)) {
            self.place.set(p);
        }
    }
}

impl<F: Future> Future for RequestScope<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let prev = SCOPE.with(|s| s.replace(Scope::Request(this.place.get())));
        let _restore = Restore {
            prev,
            place: this.place,
        };
        this.inner.poll(cx)
    }
}

/// Work placement counts, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WorkCounts {
    /// Requests served by the daemon's own code (every request not reported elsewhere).
    pub inline: u64,
    /// Jobs run on the CPU pool.
    pub pool: u64,
    /// Jobs run on blocking threads.
    pub blocking: u64,
    /// Requests served by a worker process (as the handler reported).
    pub worker: u64,
}

/// The per-daemon init metrics of one boot (the seed's `DaemonInitMetrics`), emitted as the
/// event `system:daemon:init-complete` once deferred init ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitReport {
    /// Daemon name.
    pub daemon: String,
    /// State when the report was taken.
    pub state: LifecycleState,
    /// Deferred-init sub-state.
    pub deferred: DeferredState,
    /// What it requires (it waited for each to be READY).
    pub requires: Vec<String>,
    /// What it wants (it waited for each to be READY or failed).
    pub wants: Vec<String>,
    /// Milliseconds from the runtime's start signal until this daemon's dependencies were READY
    /// (when its core init began).
    pub waited_ms: f64,
    /// Milliseconds from the runtime's start signal until it was READY (0 while not yet).
    pub ready_at_ms: f64,
    /// Core init (`start`) duration.
    pub core_init_ms: f64,
    /// Deferred init duration (0 until it ends).
    pub deferred_init_ms: f64,
    /// From the runtime's start signal to the end of deferred init (or READY if still running).
    pub total_ms: f64,
    /// Requests that waited in the startup queue.
    pub queued_before_ready: u64,
    /// Longest single poll of this daemon's code on the async runtime.
    pub longest_poll_ms: f64,
    /// Where its work ran so far.
    pub work: WorkCounts,
}

/// A live view of one daemon for `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonReport {
    /// Daemon name.
    pub name: String,
    /// Lifecycle state.
    pub state: LifecycleState,
    /// Deferred-init sub-state.
    pub deferred: DeferredState,
    /// Failure cause, if any (in JSON: its human text).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "cause_text")]
    pub cause: Option<Cause>,
    /// The machine name of `cause` ([`Cause::kind`]), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause_kind: Option<&'static str>,
    /// Deferred-init failure cause, if any (in JSON: its human text).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "cause_text")]
    pub deferred_cause: Option<Cause>,
    /// Start attempts.
    pub attempts: u32,
    /// Required dependencies.
    pub requires: Vec<String>,
    /// Optional dependencies.
    pub wants: Vec<String>,
    /// Core init duration.
    pub core_init_ms: f64,
    /// Deferred init duration.
    pub deferred_init_ms: f64,
    /// Start signal to fully ready.
    pub total_ms: f64,
    /// Requests that waited in the startup queue.
    pub queued_before_ready: u64,
    /// Requests waiting now.
    pub queue_depth: usize,
    /// Deepest the queue has been.
    pub peak_queue_depth: u64,
    /// Age of the oldest waiting request.
    pub oldest_queued_ms: f64,
    /// Requests refused or evicted by the overflow policy.
    pub overflowed: u64,
    /// Requests whose deadline passed while queued.
    pub expired: u64,
    /// Requests the router answered itself because their params broke the command's
    /// declaration (missing required param, wrong type, not an object); never queued, so not
    /// counted in `handled` or `failed`.
    pub rejected_params: u64,
    /// Requests answered.
    pub handled: u64,
    /// Requests answered with an error.
    pub failed: u64,
    /// Panics caught in this daemon's code.
    pub panics: u64,
    /// Requests being handled now.
    pub in_flight: u64,
    /// Events delivered to `on_event`.
    pub events: u64,
    /// Longest single poll of this daemon's code.
    pub longest_poll_ms: f64,
    /// Where its work ran.
    pub work: WorkCounts,
    /// Daemon-specific status the daemon published with `Context::set_details`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// A cause as the human string status readers have always seen.
fn cause_text<S: serde::Serializer>(c: &Option<Cause>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.collect_str(c),
        None => s.serialize_none(),
    }
}

pub(crate) fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) fn work_counts(m: &DaemonMetrics) -> WorkCounts {
    WorkCounts {
        inline: m.work_inline.load(Ordering::Relaxed),
        pool: m.work_pool.load(Ordering::Relaxed),
        blocking: m.work_blocking.load(Ordering::Relaxed),
        worker: m.work_worker.load(Ordering::Relaxed),
    }
}

pin_project! {
    /// A future whose every poll is timed into a daemon's `longest_poll`.
    #[derive(Debug)]
    pub struct PollTimed<F> {
        #[pin]
        inner: F,
        metrics: Arc<DaemonMetrics>,
    }
}

impl<F> PollTimed<F> {
    /// Wrap `inner`.
    pub fn new(inner: F, metrics: Arc<DaemonMetrics>) -> Self {
        PollTimed { inner, metrics }
    }
}

/// The clock that times polls: the CPU's time-stamp counter through `quanta` (two reads cost
/// about a third of two `clock_gettime` calls, and a daemon's task pays them on every poll).
/// `quanta` calibrates it against the OS clock once per process, which keeps a core busy for
/// about a millisecond and needs a thread of its own, so it is done only once a thread has timed
/// [`CALIBRATE_AFTER_POLLS`] polls: a busy runtime gets the cheap clock within milliseconds, and
/// a starting host (a few thousand polls) never pays for it. Until then polls are timed with
/// [`Instant`].
static POLL_CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();

/// Polls one thread times with [`Instant`] before the poll clock is calibrated.
const CALIBRATE_AFTER_POLLS: u32 = 50_000;

thread_local! {
    /// Polls this thread timed with [`Instant`] (counts up to [`CALIBRATE_AFTER_POLLS`]).
    static UNCALIBRATED_POLLS: Cell<u32> = const { Cell::new(0) };
}

fn calibrate_poll_clock() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("poll-clock".into())
            .spawn(|| {
                let _ = POLL_CLOCK.set(quanta::Clock::new());
            });
        if spawned.is_err() {
            // No thread: polls stay timed with `Instant`, which is correct, only dearer.
            tracing::debug!("Poll clock calibration thread not started; using Instant");
        }
    });
}

impl<F: Future> Future for PollTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let (out, us) = match POLL_CLOCK.get() {
            Some(clock) => {
                let t0 = clock.raw();
                let out = this.inner.poll(cx);
                let d = clock.delta(t0, clock.raw());
                (out, d.as_micros())
            }
            None => {
                let t0 = Instant::now();
                let out = this.inner.poll(cx);
                let us = t0.elapsed().as_micros();
                let n = UNCALIBRATED_POLLS.get() + 1;
                UNCALIBRATED_POLLS.set(n);
                if n == CALIBRATE_AFTER_POLLS {
                    calibrate_poll_clock();
                }
                (out, us)
            }
        };
        this.metrics
            .record_poll(u64::try_from(us).unwrap_or(u64::MAX));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest poll `PollTimed` records for one poll that blocks for 20 ms.
    async fn longest_of_a_20ms_blocking_poll() -> u64 {
        let m = Arc::new(DaemonMetrics::default());
        PollTimed::new(
            async {
                // The blocking call is the thing under measurement.
                std::thread::sleep(std::time::Duration::from_millis(20));
            },
            m.clone(),
        )
        .await;
        m.longest_poll_us()
    }

    #[tokio::test]
    async fn poll_timed_records_a_blocking_poll() {
        let us = longest_of_a_20ms_blocking_poll().await;
        assert!(us >= 20_000, "{us}");
    }

    #[tokio::test]
    async fn poll_timed_records_a_blocking_poll_with_the_calibrated_clock_too() {
        calibrate_poll_clock();
        let t0 = Instant::now();
        while POLL_CLOCK.get().is_none() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "never calibrated"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let us = longest_of_a_20ms_blocking_poll().await;
        assert!((20_000..2_000_000).contains(&us), "{us}");
    }

    #[tokio::test]
    async fn request_scope_keeps_each_interleaved_requests_placement_apart() {
        let m = Arc::new(DaemonMetrics::default());
        let (a, b) = (RequestPlace::default(), RequestPlace::default());
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        // `a` reports Worker, then waits while `b` (polled on the same task, in between) reports
        // nothing; each keeps its own placement.
        let fa = RequestScope::new(
            async {
                m.record_work(WorkPlace::Worker);
                let _ = gate_rx.await;
            },
            &a,
        );
        let fb = RequestScope::new(
            async {
                tokio::task::yield_now().await;
                let _ = gate_tx.send(());
            },
            &b,
        );
        futures_util::future::join(fa, fb).await;
        assert_eq!(a.get(), Some(WorkPlace::Worker));
        assert_eq!(b.get(), None);
        assert_eq!(
            work_counts(&m),
            WorkCounts::default(),
            "marked, not counted"
        );
        // Outside any handler it counts at once, and pool jobs always do.
        m.record_work(WorkPlace::Worker);
        let c = RequestPlace::default();
        RequestScope::new(async { m.record_work(WorkPlace::Pool) }, &c).await;
        assert_eq!(c.get(), None);
        assert_eq!(
            work_counts(&m),
            WorkCounts {
                worker: 1,
                pool: 1,
                ..WorkCounts::default()
            }
        );
    }

    #[test]
    fn request_scope_is_restored_when_the_handler_panics() {
        let place = RequestPlace::default();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures_util::FutureExt::now_or_never(RequestScope::new(
                async {
                    assert!(mark_request(WorkPlace::Worker));
                    panic!("handler exploded");
                },
                &place,
            ))
        }));
        assert!(caught.is_err());
        assert_eq!(place.get(), Some(WorkPlace::Worker));
        assert!(
            !mark_request(WorkPlace::Inline),
            "outside again after the unwind"
        );
    }
}
