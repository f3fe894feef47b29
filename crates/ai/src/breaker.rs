//! A per-provider circuit breaker as a pure state machine.
//!
//! The original registered one (with `maxConsecutiveFailures = 999999`, so it never opened) and
//! kept hammering dead providers. This one opens after `failure_threshold` consecutive failures,
//! fails fast with the cause for `open_for`, then lets `half_open_probes` calls through: a
//! success closes it, a failure reopens it. Time is passed in (`now`), never read, so every
//! transition is unit-tested without sleeping.
//!
//! Health checks feed the same machine ([`CircuitBreaker::record_health`]): a failed check
//! counts like a failed call, and a passing check while open ends the wait early, so the next
//! call is a probe instead of waiting out `open_for` for a provider that is already back.

use crate::config::BreakerConfig;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// The state as reported by `ai/providers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// A limited number of probe calls go through.
    HalfOpen,
}

impl CircuitState {
    /// The name in `ai/providers`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32 },
}

/// Permission to make one call; hand it back through `on_success`, `on_failure` or `on_abandon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a ticket must be returned to the breaker"]
pub enum Ticket {
    /// A call while closed.
    Normal,
    /// A half-open probe.
    Probe,
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// How long until a probe may go through (zero while a probe is already in flight).
    pub retry_in: Duration,
    /// The last failure, the reason the circuit is open.
    pub cause: String,
}

/// One provider's breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Inner,
    consecutive_failures: u32,
    last_error: Option<String>,
    opened: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        CircuitBreaker {
            cfg,
            inner: Inner::Closed,
            consecutive_failures: 0,
            last_error: None,
            opened: 0,
        }
    }

    /// The state at `now` (an open circuit whose wait is over reports `half_open`).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.inner {
            Inner::Closed => CircuitState::Closed,
            Inner::Open { until } if now < until => CircuitState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// The last failure recorded (cleared by a success).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Consecutive failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How many times the circuit has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened
    }

    fn cause(&self) -> String {
        self.last_error
            .clone()
            .unwrap_or_else(|| "earlier failures".to_owned())
    }

    /// Ask to make a call at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Ticket, Rejected> {
        match self.inner {
            Inner::Closed => Ok(Ticket::Normal),
            Inner::Open { until } if now < until => Err(Rejected {
                retry_in: until.saturating_duration_since(now),
                cause: self.cause(),
            }),
            Inner::Open { .. } => {
                self.inner = Inner::HalfOpen {
                    probes_in_flight: 1,
                };
                Ok(Ticket::Probe)
            }
            Inner::HalfOpen { probes_in_flight } => {
                if probes_in_flight < self.cfg.half_open_probes {
                    self.inner = Inner::HalfOpen {
                        probes_in_flight: probes_in_flight.saturating_add(1),
                    };
                    Ok(Ticket::Probe)
                } else {
                    Err(Rejected {
                        retry_in: Duration::ZERO,
                        cause: format!("half-open, probe in flight; last error: {}", self.cause()),
                    })
                }
            }
        }
    }

    /// The call succeeded.
    pub fn on_success(&mut self, ticket: Ticket) {
        match (self.inner, ticket) {
            // A straggler that started before the circuit opened does not cut the wait short.
            (Inner::Open { .. }, Ticket::Normal) => {}
            _ => self.close(),
        }
    }

    /// The call failed with `cause`.
    pub fn on_failure(&mut self, ticket: Ticket, now: Instant, cause: &str) {
        self.last_error = Some(cause.to_owned());
        match (self.inner, ticket) {
            (Inner::HalfOpen { .. }, Ticket::Probe) => self.open(now),
            (Inner::HalfOpen { probes_in_flight }, Ticket::Normal) => {
                self.inner = Inner::HalfOpen { probes_in_flight };
            }
            (Inner::Closed, _) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= self.cfg.failure_threshold {
                    self.open(now);
                }
            }
            (Inner::Open { .. }, _) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            }
        }
    }

    /// The call was dropped before it finished (deadline, cancellation, a full semaphore): it
    /// says nothing about the provider, but a probe slot must be given back.
    pub fn on_abandon(&mut self, ticket: Ticket) {
        if let (Inner::HalfOpen { probes_in_flight }, Ticket::Probe) = (self.inner, ticket) {
            self.inner = Inner::HalfOpen {
                probes_in_flight: probes_in_flight.saturating_sub(1),
            };
        }
    }

    /// A health check finished.
    pub fn record_health(&mut self, now: Instant, result: Result<(), &str>) {
        match result {
            Ok(()) => match self.inner {
                Inner::Closed => self.consecutive_failures = 0,
                // The provider answers again: end the wait so the next call probes.
                Inner::Open { .. } => self.inner = Inner::Open { until: now },
                Inner::HalfOpen { .. } => {}
            },
            Err(cause) => {
                self.last_error = Some(cause.to_owned());
                match self.inner {
                    Inner::Closed => {
                        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                        if self.consecutive_failures >= self.cfg.failure_threshold {
                            self.open(now);
                        }
                    }
                    // Still down: keep failing fast (probes in flight decide for themselves).
                    Inner::Open { until } if now >= until => self.open(now),
                    Inner::Open { .. } | Inner::HalfOpen { .. } => {}
                }
            }
        }
    }

    fn open(&mut self, now: Instant) {
        self.inner = Inner::Open {
            until: now + self.cfg.open_for,
        };
        self.opened = self.opened.saturating_add(1);
    }

    fn close(&mut self) {
        self.inner = Inner::Closed;
        self.consecutive_failures = 0;
        self.last_error = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }

    fn fail(b: &mut CircuitBreaker, now: Instant) {
        let t = b.try_acquire(now).expect("let through");
        b.on_failure(t, now, "connection refused");
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg());
        fail(&mut b, now);
        fail(&mut b, now);
        assert_eq!(b.state(now), CircuitState::Closed);
        fail(&mut b, now);
        assert_eq!(b.state(now), CircuitState::Open);
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn a_success_resets_the_count() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg());
        fail(&mut b, now);
        fail(&mut b, now);
        let t = b.try_acquire(now).expect("closed");
        b.on_success(t);
        fail(&mut b, now);
        fail(&mut b, now);
        assert_eq!(b.state(now), CircuitState::Closed);
    }

    #[test]
    fn open_fails_fast_with_the_cause_until_open_for_passes() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg());
        for _ in 0..3 {
            fail(&mut b, now);
        }
        let later = now + Duration::from_secs(10);
        let r = b.try_acquire(later).expect_err("open fails fast");
        assert_eq!(r.retry_in, Duration::from_secs(20));
        assert!(r.cause.contains("connection refused"));
        assert_eq!(
            b.state(now + Duration::from_secs(30)),
            CircuitState::HalfOpen
        );
    }

    #[test]
    fn half_open_probe_success_closes() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg());
        for _ in 0..3 {
            fail(&mut b, now);
        }
        let t1 = now + Duration::from_secs(31);
        let probe = b.try_acquire(t1).expect("probe");
        assert_eq!(probe, Ticket::Probe);
        // Only one probe at a time.
        assert!(b.try_acquire(t1).is_err());
        b.on_success(probe);
        assert_eq!(b.state(t1), CircuitState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        assert!(b.last_error().is_none());
    }

    #[test]
    fn half_open_probe_failure_reopens_for_another_period() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg());
        for _ in 0..3 {
            fail(&mut b, now);
        }
        let t1 = now + Duration::from_secs(31);
        let probe = b.try_acquire(t1).expect("probe");
        b.on_failure(probe, t1, "still down");
        assert_eq!(b.state(t1), CircuitState::Open);
        let r = b
            .try_acquire(t1 + Duration::from_secs(29))
            .expect_err("open again");
        assert!(r.cause.contains("still down"));
        assert_eq!(b.times_opened(), 2);
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg());
        for _ in 0..3 {
            fail(&mut b, now);
        }
        let t1 = now + Duration::from_secs(31);
        let probe = b.try_acquire(t1).expect("probe");
        b.on_abandon(probe);
        assert_eq!(b.try_acquire(t1), Ok(Ticket::Probe));
    }

    #[test]
    fn health_checks_feed_the_breaker() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg());
        for _ in 0..3 {
            b.record_health(now, Err("GET /models: connection refused"));
        }
        assert_eq!(b.state(now), CircuitState::Open);
        // A passing check ends the wait: the next call is a probe.
        let t1 = now + Duration::from_secs(1);
        b.record_health(t1, Ok(()));
        assert_eq!(b.try_acquire(t1), Ok(Ticket::Probe));
    }

    #[test]
    fn a_straggler_success_does_not_close_an_open_circuit() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg());
        let straggler = b.try_acquire(now).expect("closed");
        for _ in 0..3 {
            fail(&mut b, now);
        }
        b.on_success(straggler);
        assert_eq!(b.state(now), CircuitState::Open);
    }
}
