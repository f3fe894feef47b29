//! Per-daemon metrics, including the "blocked the coordinator" signal.
//!
//! `longest_poll` is measured by wrapping every future the runtime runs for a daemon (its task,
//! its timers) in [`PollTimed`], which times each individual `poll`. A daemon that does blocking
//! or CPU-heavy work on an async worker shows it here, whatever else it reports. Counters are
//! relaxed atomics: they are read for display, never for synchronisation.

use crate::cause::Cause;
use crate::lifecycle::{DeferredState, LifecycleState};
use pin_project_lite::pin_project;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
        self.longest_poll_us.fetch_max(micros, Ordering::Relaxed);
    }

    /// Count a unit of work done at `place`.
    pub fn record_work(&self, place: WorkPlace) {
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

/// Work placement counts, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WorkCounts {
    /// Requests handled on the daemon's task.
    pub inline: u64,
    /// Jobs run on the CPU pool.
    pub pool: u64,
    /// Jobs run on blocking threads.
    pub blocking: u64,
    /// Requests served by a worker process.
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
    /// Milliseconds from the runtime's start signal until this daemon's dependencies were READY.
    pub waited_ms: f64,
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

impl<F: Future> Future for PollTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let t0 = Instant::now();
        let out = this.inner.poll(cx);
        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        this.metrics.record_poll(us);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn poll_timed_records_a_blocking_poll() {
        let m = Arc::new(DaemonMetrics::default());
        PollTimed::new(
            async {
                // The blocking call is the thing under measurement.
                std::thread::sleep(std::time::Duration::from_millis(20));
            },
            m.clone(),
        )
        .await;
        assert!(m.longest_poll_us() >= 20_000, "{}", m.longest_poll_us());
    }
}
