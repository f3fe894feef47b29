//! The systemd watchdog: with `WATCHDOG_USEC` set (systemd's `WatchdogSec=`), `WATCHDOG=1` goes
//! to `NOTIFY_SOCKET` every half interval, and is withheld while the coordinator is stalled.
//!
//! **Stalled** means the lag probe's *current* lag ([`LagSnapshot::current_us`]: its last
//! lateness, or how long past due it is when it has not woken at all) is over half the watchdog
//! interval. Why half: pings go every half interval, and systemd acts when none came for a whole
//! one; a stall shorter than half the interval never withholds a ping (no false restart for a
//! slow moment), while a runtime stuck for longer withholds every ping from then on, so systemd
//! restarts the service between 1× and 1.5× `WatchdogSec` after the stall began.
//!
//! The pings come from a thread of their own, not from a task on the async runtime: what is
//! watched is the runtime, and a task on it would say nothing about *which* part stalled (a
//! blocked worker thread may leave the pinging task running on the other). The probe is the
//! runtime's own measure, and the thread only reads it. The lag probe always runs in the host
//! (`RuntimeConfig::lag_probe`); without one there is nothing to judge by and the pings go.
//!
//! Pings stop when shutdown begins, before `STOPPING=1` is sent (so none follows it): from
//! then on systemd's stop timeout governs, and the runtime stops its probe while it stops.

use daemonhost_runtime::{LagSnapshot, RuntimeHandle};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What to do at a ping time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send `WATCHDOG=1`.
    Ping,
    /// The coordinator is stalled: send nothing. `lag` is the current lag.
    Withhold {
        /// The current lag that withheld the ping.
        lag: Duration,
    },
}

/// The stall threshold for a watchdog interval: half of it.
pub fn threshold(interval: Duration) -> Duration {
    interval / 2
}

/// Ping unless the probe's current lag is over `threshold` (no probe: ping).
pub fn decide(lag: Option<&LagSnapshot>, threshold: Duration) -> Decision {
    match lag {
        Some(l) if Duration::from_micros(l.current_us) > threshold => Decision::Withhold {
            lag: Duration::from_micros(l.current_us),
        },
        _ => Decision::Ping,
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this pid when `WATCHDOG_PID`
/// is set); `None` when unset or zero.
pub fn interval_from_env() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// The pinging thread; stopped (and joined) by [`Watchdog::stop`] or on drop.
#[derive(Debug)]
pub struct Watchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Start pinging if systemd asked for a watchdog (`None` otherwise).
    pub fn from_env(runtime: RuntimeHandle) -> Option<Watchdog> {
        let interval = interval_from_env()?;
        Some(Watchdog::spawn(
            interval,
            move || runtime.lag(),
            |d| {
                if d == Decision::Ping
                    && let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog])
                {
                    tracing::warn!(error = %e, "Cannot send WATCHDOG=1 to systemd");
                }
            },
        ))
    }

    /// Every `interval / 2`, the first at once: [`decide`] on `lag()` and hand the decision to
    /// `act` (which pings on [`Decision::Ping`]). Logs the start and the end of each stall.
    pub fn spawn(
        interval: Duration,
        lag: impl Fn() -> Option<LagSnapshot> + Send + 'static,
        act: impl Fn(Decision) + Send + 'static,
    ) -> Watchdog {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let period = (interval / 2).max(Duration::from_millis(1));
        let limit = threshold(interval);
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("dh-watchdog".into())
            .spawn(move || {
                tracing::info!(
                    interval_ms = interval.as_millis() as u64,
                    every_ms = period.as_millis() as u64,
                    stall_threshold_ms = limit.as_millis() as u64,
                    "systemd watchdog: pinging"
                );
                let mut stalled = false;
                loop {
                    let decision = decide(lag().as_ref(), limit);
                    match decision {
                        Decision::Ping => {
                            if stalled {
                                tracing::info!(
                                    "Coordinator no longer stalled: watchdog pings resume"
                                );
                                stalled = false;
                            }
                        }
                        Decision::Withhold { lag } => {
                            if !stalled {
                                tracing::error!(
                                    lag_ms = lag.as_millis() as u64,
                                    threshold_ms = limit.as_millis() as u64,
                                    "Coordinator stalled: withholding the systemd watchdog ping"
                                );
                                stalled = true;
                            }
                        }
                    }
                    act(decision);
                    let (lock, cv) = &*stop2;
                    let mut stopped = lock.lock();
                    if !*stopped {
                        let _ = cv.wait_for(&mut stopped, period);
                    }
                    if *stopped {
                        return;
                    }
                }
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "Cannot start the systemd watchdog thread");
                None
            }
        };
        Watchdog { stop, thread }
    }

    /// Stop pinging and join the thread (idempotent).
    pub fn stop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock() = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn lag(last_us: u64, current_us: u64) -> LagSnapshot {
        LagSnapshot {
            samples: 10,
            window_samples: 10,
            last_us,
            current_us,
            ..LagSnapshot::default()
        }
    }

    #[test]
    fn a_ping_is_withheld_exactly_while_the_current_lag_exceeds_half_the_interval() {
        let interval = Duration::from_secs(10);
        let t = threshold(interval);
        assert_eq!(t, Duration::from_secs(5));
        assert_eq!(decide(Some(&lag(200, 200)), t), Decision::Ping);
        // At the threshold: still pinging; a stall must be longer.
        assert_eq!(decide(Some(&lag(0, 5_000_000)), t), Decision::Ping);
        assert_eq!(
            decide(Some(&lag(0, 5_000_001)), t),
            Decision::Withhold {
                lag: Duration::from_micros(5_000_001)
            }
        );
        // A probe that has not woken (a wholly stalled runtime) withholds through current_us,
        // whatever its last sample said.
        assert_eq!(
            decide(Some(&lag(100, 7_000_000)), t),
            Decision::Withhold {
                lag: Duration::from_secs(7)
            }
        );
        // A past spike that is over does not (max and percentiles are history).
        let spike = LagSnapshot {
            max_us: 60_000_000,
            p99_us: 60_000_000,
            ..lag(300, 300)
        };
        assert_eq!(decide(Some(&spike), t), Decision::Ping);
        // No probe: nothing to judge by.
        assert_eq!(decide(None, t), Decision::Ping);
    }

    #[test]
    fn the_thread_pings_at_once_withholds_while_stalled_and_stops_when_asked() {
        let state = Arc::new(Mutex::new(lag(0, 0)));
        let (tx, rx) = mpsc::channel();
        let s2 = Arc::clone(&state);
        let mut w = Watchdog::spawn(
            Duration::from_millis(20),
            move || Some(*s2.lock()),
            move |d| {
                let _ = tx.send(d);
            },
        );
        let within = Duration::from_secs(10);
        let next = || rx.recv_timeout(within).expect("a decision every 10 ms");
        assert_eq!(next(), Decision::Ping, "the first decision is at once");
        // Stalled (500 ms > 10 ms): once the thread sees it, every decision withholds.
        *state.lock() = lag(0, 500_000);
        // (A decision taken before the change may still arrive: at most a few.)
        let mut first = next();
        for _ in 0..100 {
            if first != Decision::Ping {
                break;
            }
            first = next();
        }
        assert!(
            matches!(first, Decision::Withhold { .. }),
            "the stall is seen"
        );
        for _ in 0..3 {
            assert!(
                matches!(next(), Decision::Withhold { .. }),
                "no ping while stalled"
            );
        }
        *state.lock() = lag(0, 0);
        assert!(
            (0..100).any(|_| next() == Decision::Ping),
            "pings resume once the stall is over"
        );
        w.stop();
        // Stopped and joined: the thread and its sender are gone.
        while rx.try_recv().is_ok() {}
        assert_eq!(
            rx.recv_timeout(within),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
