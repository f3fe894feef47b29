//! Phase 2: core init, then READY.

use super::{Task, micros_since};
use crate::bus::Subscription;
use crate::cause::{Cause, Phase};
use crate::daemon::Daemon;
use crate::error::panic_message;
use crate::lifecycle::LifecycleState;
use crate::reply::{Cell, UntilAnswered};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// Enters `Starting`, subscribes to the spec's event patterns, and runs `start` until it
/// succeeds. Guarantees: each attempt is bounded by `start_timeout` (kept by the router's
/// deadline sweeper, not a timer of its own) and its panic is caught
/// (counted in `panics`); a failed attempt is retried after the restart policy's backoff while
/// the daemon stays `Starting` (requests keep waiting in the startup queue, the attempt's cause
/// is visible in the status); `Err` is the final cause: the last attempt's, `SubscribeFailed`,
/// [`Cause::Stopped`] when the host stops during a backoff, or the background panic when work
/// the daemon spawned during start died (not retried: the dead task cannot be undone).
pub(super) async fn start<D: Daemon>(
    daemon: &D,
    t: &Task<'_>,
) -> Result<(D::State, Vec<Subscription>), Cause> {
    let spec = t.spec();
    let slot = t.slot;
    let fault = t.ctx().fault();
    // What it required is READY (and what it wants has settled): the wait ends here.
    slot.metrics
        .waited_us
        .store(micros_since(t.started_at), Ordering::Relaxed);
    t.enter(LifecycleState::Starting);
    let mut subs = Vec::with_capacity(spec.events.len());
    for p in &spec.events {
        let sub = t
            .rt()
            .bus
            .subscribe_with_capacity(p, spec.event_queue)
            .map_err(|e| Cause::SubscribeFailed {
                pattern: p.clone(),
                error: e.to_string(),
            })?;
        subs.push(sub);
    }
    let core_t0 = Instant::now();
    let mut attempt = 0u32;
    let state = loop {
        attempt += 1;
        // The attempt's deadline is kept by the router's sweeper, not by a tokio timer of its
        // own: a timer entry per start unparked the worker parked on the time driver, tens of
        // µs of a 15-daemon startup.
        let deadline = Cell::deadline(Instant::now() + spec.start_timeout, spec.start_timeout);
        t.rt().router.watch_deadline(deadline.clone());
        let started = tokio::select! {
            biased;
            cause = fault.crash() => {
                deadline.settle();
                return Err(cause);
            }
            r = AssertUnwindSafe(UntilAnswered::new(daemon.start(t.ctx()), &deadline))
                .catch_unwind() => r,
        };
        deadline.settle();
        let cause = match started {
            Ok(Some(Ok(state))) => break state,
            Ok(Some(Err(e))) => Cause::StartFailed {
                error: e.to_string(),
            },
            Ok(None) => Cause::StartTimedOut {
                after_ms: u64::try_from(spec.start_timeout.as_millis()).unwrap_or(u64::MAX),
            },
            Err(p) => {
                slot.metrics.panics.fetch_add(1, Ordering::Relaxed);
                Cause::Panicked {
                    phase: Phase::Start,
                    message: panic_message(&*p),
                }
            }
        };
        if attempt > spec.restart.max_restarts {
            return Err(cause);
        }
        let delay = spec.restart.delay(attempt);
        tracing::warn!(daemon = %t.name(), %cause, attempt, retry_in_ms = delay.as_millis() as u64, "Daemon start failed; retrying");
        t.l.lifecycle.retrying(cause);
        tokio::select! {
            () = t.rt().stop.cancelled() => return Err(Cause::Stopped),
            cause = fault.crash() => return Err(cause),
            () = tokio::time::sleep(delay) => {}
        }
    };
    // Work spawned by the successful attempt may have died as it returned.
    if let Some(cause) = fault.cause() {
        return Err(cause.clone());
    }
    slot.metrics
        .core_init_us
        .store(micros_since(core_t0), Ordering::Relaxed);
    Ok((state, subs))
}

/// READY: the startup queue becomes the mailbox (what waited is served first, FIFO), the
/// status says `Ready`, and `system:daemon:state` announces it.
pub(super) fn become_ready(t: &Task<'_>) {
    let m = &t.slot.metrics;
    m.ready_at_us
        .store(micros_since(t.started_at), Ordering::Relaxed);
    m.total_us
        .store(micros_since(t.started_at), Ordering::Relaxed);
    t.slot.mailbox.mark_ready();
    t.enter(LifecycleState::Ready);
}
