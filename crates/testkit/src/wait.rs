//! Waiting for a condition: the one polling helper ([`eventually`]), its bus-driven variant
//! ([`eventually_on`]) and a deadline around a single future ([`within`]).
//!
//! Every wait has a limit and panics when it passes, naming what was awaited and for how long
//! (and, for a probe answering `Result`, the last error seen). The clock is tokio's: under
//! paused time (`start_paused = true`) the limit is virtual, and each poll advances the clock by
//! [`POLL`], so a condition reached through tokio timers or tasks is awaited in virtual time. A
//! condition that depends on an OS thread (SQLite's writer, a child process) needs real time:
//! do not wait for one under paused time.

use daemonhost_runtime::EventBus;
use std::fmt::Debug;
use std::future::IntoFuture;
use std::time::Duration;
use tokio::time::Instant;

/// The default limit of every wait: generous, because a 2-core machine running three test
/// suites at once is slow, and a wait that holds returns as soon as it does.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How often [`eventually`] re-checks its condition.
pub const POLL: Duration = Duration::from_millis(5);

/// What a probe answers: `true`, `Some(v)` or `Ok(v)` end the wait (with `()`, `v`, `v`);
/// `false`, `None` or `Err(e)` mean "not yet" (an `Err` is reported if the wait times out).
pub trait Probe {
    /// What the wait returns once the condition holds.
    type Output;
    /// `Ok` when the condition holds; otherwise what to report about the last attempt.
    fn check(self) -> Result<Self::Output, Option<String>>;
}

impl Probe for bool {
    type Output = ();
    fn check(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Probe for Option<T> {
    type Output = T;
    fn check(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Probe for Result<T, E> {
    type Output = T;
    fn check(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:?}")))
    }
}

fn timed_out(what: &str, limit: Duration, last: Option<String>) -> ! {
    match last {
        Some(last) => panic!("timed out after {limit:?} waiting for {what}; last: {last}"),
        None => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Poll `probe` every [`POLL`] until it holds, for at most [`TIMEOUT`]; returns what it
/// answered. A synchronous condition is an `async` closure that does not await:
/// `eventually("the queue to fill", async || q.len() == 10).await`.
///
/// # Panics
/// When the limit passes, naming `what`, the limit and the probe's last error.
pub async fn eventually<P: Probe>(what: &str, probe: impl AsyncFnMut() -> P) -> P::Output {
    eventually_for(TIMEOUT, what, probe).await
}

/// [`eventually`] with another limit (for a wait whose bound is itself the promise under
/// test, e.g. "back within 1 s").
///
/// # Panics
/// When `limit` passes, naming `what`, the limit and the probe's last error.
pub async fn eventually_for<P: Probe>(
    limit: Duration,
    what: &str,
    probe: impl AsyncFnMut() -> P,
) -> P::Output {
    match try_eventually_for(limit, probe).await {
        Ok(v) => v,
        Err(last) => timed_out(what, limit, last),
    }
}

/// The wait behind [`eventually_for`], without its panic: `Err(last error)` once `limit` has
/// passed (for a caller whose panic message needs more, e.g. a process's log).
pub async fn try_eventually_for<P: Probe>(
    limit: Duration,
    mut probe: impl AsyncFnMut() -> P,
) -> Result<P::Output, Option<String>> {
    let start = Instant::now();
    let mut last = None;
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, probe()).await {
            Ok(answer) => match answer.check() {
                Ok(v) => return Ok(v),
                Err(e) => last = e.or(last),
            },
            Err(_) => return Err(Some("the probe itself did not finish".into())),
        }
        if start.elapsed() >= limit {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`eventually`], but re-checks after every event matching `pattern` on `bus` (the
/// subscription is taken before the first check, so no event in between is missed), and on a
/// 20 ms tick for effects that publish nothing afterwards (a counter).
///
/// # Panics
/// When [`TIMEOUT`] passes, or when the bus closes first.
pub async fn eventually_on<P: Probe>(
    bus: &EventBus,
    pattern: &str,
    what: &str,
    mut probe: impl AsyncFnMut() -> P,
) -> P::Output {
    let mut sub = bus
        .subscribe(pattern)
        .unwrap_or_else(|e| panic!("subscribe to {pattern} while waiting for {what}: {e}"));
    let mut tick = tokio::time::interval(POLL * 4);
    let deadline = Instant::now() + TIMEOUT;
    let mut last = None;
    loop {
        match probe().await.check() {
            Ok(v) => return v,
            Err(e) => last = e.or(last),
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => timed_out(what, TIMEOUT, last),
            d = sub.recv() => assert!(d.is_some(), "the bus closed while waiting for {what}"),
            _ = tick.tick() => {}
        }
    }
}

/// Await `f` for at most [`TIMEOUT`].
///
/// # Panics
/// When the limit passes first, naming `what`.
pub async fn within<F: IntoFuture>(what: &str, f: F) -> F::Output {
    within_for(TIMEOUT, what, f).await
}

/// Await `f` for at most `limit`.
///
/// # Panics
/// When the limit passes first, naming `what`.
pub async fn within_for<F: IntoFuture>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => timed_out(what, limit, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_what_the_probe_answered_once_it_holds() {
        let n = AtomicU32::new(0);
        let got = eventually("the third poll", async || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            (i == 2).then_some(i)
        })
        .await;
        assert_eq!(got, 2);
        eventually("a sync condition", async || n.load(Ordering::SeqCst) == 3).await;
        let ok: u32 = eventually("an Ok", async || Ok::<_, String>(7)).await;
        assert_eq!(ok, 7);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for the impossible; last: \"nope 2")]
    async fn eventually_panics_with_what_it_awaited_its_limit_and_the_last_error() {
        let n = AtomicU32::new(0);
        eventually_for(Duration::from_secs(1), "the impossible", async || {
            Err::<(), _>(format!("nope {}", n.fetch_add(1, Ordering::SeqCst).min(2)))
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 20s waiting for a probe that hangs")]
    async fn eventually_panics_when_the_probe_itself_hangs() {
        eventually("a probe that hangs", async || {
            std::future::pending::<()>().await;
            true
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 20s waiting for forever")]
    async fn within_panics_naming_the_future_and_the_limit() {
        within("forever", std::future::pending::<()>()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_on_rechecks_on_each_event_without_waiting_for_the_tick() {
        let bus = EventBus::new(daemonhost_runtime::BusConfig::default());
        let checks = AtomicU32::new(0);
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..3 {
                    tokio::task::yield_now().await;
                    bus.publish("t:x", serde_json::json!(i)).expect("publish");
                }
            })
        };
        let start = Instant::now();
        eventually_on(&bus, "t:*", "four checks", async || {
            checks.fetch_add(1, Ordering::SeqCst) >= 3
        })
        .await;
        // The first check, the interval's immediate first tick, then the events: no virtual
        // time passed, so no later tick caused a check.
        assert_eq!(start.elapsed(), Duration::ZERO);
        publisher.await.expect("publisher");
    }
}
