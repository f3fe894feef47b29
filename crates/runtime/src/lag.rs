//! Event-loop lag probe for the coordinator runtime.
//!
//! Why: the original system's worst failure mode was a blocked event loop that nobody saw. A
//! [`LagProbe`] task asks to wake every `interval` and records how late it actually woke up
//! (`actual - scheduled`). If anything hogs the runtime thread (a CPU-heavy handler that should
//! have gone to the [`CpuPool`](crate::pool::CpuPool), a blocking syscall) the lag shows it.
//!
//! Memory is bounded: the last [`WINDOW`] samples in a ring buffer plus an all-time maximum.
//! Missed wakeups are skipped ([`MissedTickBehavior::Skip`]), so one long stall yields one large
//! sample rather than a burst of catch-up samples.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Number of samples kept for percentiles.
pub const WINDOW: usize = 1024;

/// Default probe interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(10);

/// Lag statistics, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LagSnapshot {
    /// Samples recorded since the probe started (all time).
    pub samples: u64,
    /// Samples currently in the window (at most [`WINDOW`]).
    pub window_samples: usize,
    /// Median lag over the window.
    pub p50_us: u64,
    /// 99th percentile lag over the window (nearest rank).
    pub p99_us: u64,
    /// Largest lag ever recorded.
    pub max_us: u64,
    /// Largest lag in the window.
    pub window_max_us: u64,
    /// The most recent sample.
    pub last_us: u64,
    /// The lag *now*: the most recent sample, or, when the probe is overdue, how far past its
    /// due time it is (a wholly stalled runtime records no sample, yet this grows). What the
    /// systemd watchdog judges a stall by.
    pub current_us: u64,
}

#[derive(Debug, Default)]
struct Window {
    recent: VecDeque<u64>,
    samples: u64,
    max_us: u64,
    /// When the next wakeup is due (set by the probe after each sample; `None` before the
    /// first one is scheduled).
    next_due: Option<Instant>,
}

impl Window {
    fn record(&mut self, lag: Duration) {
        let us = micros(lag);
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(us);
        self.samples += 1;
        self.max_us = self.max_us.max(us);
    }

    fn snapshot(&self, now: Instant) -> LagSnapshot {
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        let last_us = self.recent.back().copied().unwrap_or(0);
        let overdue_us = self
            .next_due
            .map(|due| micros(now.saturating_duration_since(due)))
            .unwrap_or(0);
        LagSnapshot {
            samples: self.samples,
            window_samples: sorted.len(),
            p50_us: nearest_rank(&sorted, 50),
            p99_us: nearest_rank(&sorted, 99),
            max_us: self.max_us,
            window_max_us: sorted.last().copied().unwrap_or(0),
            last_us,
            current_us: last_us.max(overdue_us),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of an ascending slice (0 when empty).
fn nearest_rank(sorted: &[u64], pct: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// A running lag probe. Stops when [`stop`](LagProbe::stop)ped or dropped.
#[derive(Debug)]
pub struct LagProbe {
    window: Arc<Mutex<Window>>,
    task: JoinHandle<()>,
    interval: Duration,
}

impl LagProbe {
    /// Starts probing on the current tokio runtime, waking every `interval` (first wakeup one
    /// `interval` from now). A zero interval is raised to 1ms.
    pub fn spawn(interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let window = Arc::new(Mutex::new(Window::default()));
        let w = Arc::clone(&window);
        let first = Instant::now() + interval;
        window.lock().next_due = Some(first);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(first, interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                let scheduled = ticker.tick().await;
                let now = Instant::now();
                let lag = now.saturating_duration_since(scheduled);
                let mut w = w.lock();
                w.record(lag);
                // Skip: the next tick is one interval from now at the latest.
                w.next_due = Some(now.max(scheduled) + interval);
            }
        });
        Self {
            window,
            task,
            interval,
        }
    }

    /// Starts a probe with [`DEFAULT_INTERVAL`].
    pub fn spawn_default() -> Self {
        Self::spawn(DEFAULT_INTERVAL)
    }

    /// The probe interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Current statistics.
    pub fn snapshot(&self) -> LagSnapshot {
        let now = Instant::now();
        self.window.lock().snapshot(now)
    }

    /// Stops the probe task (idempotent). Snapshots remain available; `current_us` no longer
    /// grows (a stopped probe is not a stalled runtime).
    pub fn stop(&self) {
        self.task.abort();
        self.window.lock().next_due = None;
    }

    /// Whether the probe task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for LagProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wait_until(mut cond: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("condition within timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn no_lag_on_an_idle_paused_runtime() {
        let probe = LagProbe::spawn(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(1005)).await;
        let s = probe.snapshot();
        assert_eq!(s.samples, 100);
        assert_eq!(s.window_samples, 100);
        assert_eq!(
            (s.p50_us, s.p99_us, s.max_us, s.window_max_us),
            (0, 0, 0, 0)
        );
    }

    #[tokio::test]
    async fn sees_a_blocked_runtime() {
        // Current-thread runtime: a task that blocks the thread delays the probe.
        let probe = LagProbe::spawn(Duration::from_millis(10));
        wait_until(|| probe.snapshot().samples >= 1).await;
        let block = Duration::from_millis(100);
        // The code under test here is the misbehaving task; its blocking is what we measure.
        let hog = tokio::spawn(async move { std::thread::sleep(block) });
        hog.await.expect("hog");
        wait_until(|| probe.snapshot().samples >= 3).await;
        let s = probe.snapshot();
        // The probe's next wakeup was due at most one interval after the hog started.
        let at_least = u64::try_from((block - probe.interval()).as_micros()).expect("fits");
        assert!(s.max_us >= at_least, "{s:?}");
        assert_eq!(s.window_max_us, s.max_us);
        assert!(
            s.p50_us < at_least,
            "one stall must not move the median: {s:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_and_drop_end_the_task() {
        let probe = LagProbe::spawn_default();
        tokio::time::sleep(Duration::from_millis(35)).await;
        probe.stop();
        wait_until(|| !probe.is_running()).await;
        let before = probe.snapshot();
        assert_eq!(before.samples, 3);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(probe.snapshot(), before);
        drop(probe);
    }

    #[test]
    fn window_is_bounded_and_percentiles_are_nearest_rank() {
        let mut w = Window::default();
        for i in 1..=(WINDOW as u64 + 100) {
            w.record(Duration::from_micros(i));
        }
        let s = w.snapshot(Instant::now());
        assert_eq!(s.samples, WINDOW as u64 + 100);
        assert_eq!(s.window_samples, WINDOW);
        assert_eq!(w.recent.len(), WINDOW);
        // Window holds 101..=1124.
        assert_eq!(s.window_max_us, 1124);
        assert_eq!(s.p50_us, 100 + 512);
        assert_eq!(s.p99_us, 100 + (99 * 1024_u64).div_ceil(100));
        w.record(Duration::from_secs(1));
        for _ in 0..WINDOW {
            w.record(Duration::ZERO);
        }
        let s = w.snapshot(Instant::now());
        assert_eq!(s.max_us, 1_000_000);
        assert_eq!(s.window_max_us, 0);
        assert_eq!(nearest_rank(&[], 50), 0);
        assert_eq!(nearest_rank(&[7], 99), 7);
        let json = serde_json::to_value(s).expect("serialize");
        assert_eq!(json["max_us"], 1_000_000);
    }

    #[test]
    fn current_lag_is_the_last_sample_or_how_overdue_the_probe_is() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert_eq!(
            w.snapshot(t0).current_us,
            0,
            "nothing scheduled, nothing late"
        );
        w.record(Duration::from_micros(300));
        w.next_due = Some(t0 + Duration::from_millis(10));
        let s = w.snapshot(t0);
        assert_eq!(
            (s.last_us, s.current_us),
            (300, 300),
            "not due yet: the last sample"
        );
        // A stalled runtime records nothing; the lag now is how far past due the probe is.
        let s = w.snapshot(t0 + Duration::from_millis(510));
        assert_eq!(s.last_us, 300);
        assert_eq!(s.current_us, 500_000);
        // A stopped probe is not late.
        w.next_due = None;
        assert_eq!(w.snapshot(t0 + Duration::from_secs(60)).current_us, 300);
    }
}
