//! Phase 3: serve requests and events, with deferred init alongside.

use super::drain::stop_gate;
use super::inflight::InFlight;
use super::{Task, Work, micros_since};
use crate::bus::{Delivery, Subscription};
use crate::cause::{Cause, Phase};
use crate::context::Context;
use crate::daemon::Daemon;
use crate::error::{DaemonError, panic_message};
use crate::lifecycle::DeferredState;
use crate::mailbox::Envelope;
use crate::metrics::{DaemonMetrics, RequestPlace, RequestScope, WorkPlace};
use crate::reply::UntilAnswered;
use crate::router::{Slot, init_report};
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use tokio::time::Instant;

/// Everything `serve` needs that does not change per request.
pub(super) struct Serving<'a, D: Daemon> {
    pub(super) daemon: &'a D,
    pub(super) ctx: &'a Context,
    pub(super) state: &'a D::State,
    pub(super) slot: &'a Slot,
}

/// How the serve loop ended.
pub(super) enum Served {
    /// The stop gate opened: drain next.
    Stop,
    /// Background work died with this cause: the daemon fails.
    Crashed(Cause),
}

/// Most work a serve loop admits in one poll before it yields to the other tasks of its worker.
pub(super) const ADMIT_PER_POLL: usize = 256;

/// Serves until the stop gate opens. Guarantees: at most `spec.concurrency` requests and
/// events are in flight at once (all on this task, so handlers borrow the state); requests are
/// taken from the mailbox in FIFO order; deferred init runs alongside, once; a background task
/// of the daemon that dies ends the loop at once with its cause. `work` turns an admitted
/// request or event into its future (the driver passes [`serve`] / [`deliver`]). Admitted work
/// is polled at once (see [`InFlight`]); after [`ADMIT_PER_POLL`] admissions in one poll the
/// task yields, so a flooded daemon does not starve its worker.
pub(super) async fn serve_until_stop<D, F, W>(
    t: &Task<'_>,
    s: &Serving<'_, D>,
    subs: &mut [Subscription],
    mut inflight: Pin<&mut InFlight<F>>,
    work: &W,
) -> Served
where
    D: Daemon,
    F: Future<Output = ()>,
    W: Fn(Work) -> F,
{
    let deferred = deferred_init(t, s);
    let gate = stop_gate(t);
    tokio::pin!(deferred, gate);
    let mut deferred_done = false;
    let mut mailbox_open = true;
    let mut events_open = true;
    let limit = t.spec().concurrency;
    let mailbox = &s.slot.mailbox;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = gate.as_mut().poll(cx) {
            return Poll::Ready(match r {
                Ok(()) => Served::Stop,
                Err(cause) => Served::Crashed(cause),
            });
        }
        if !deferred_done && deferred.as_mut().poll(cx).is_ready() {
            deferred_done = true;
        }
        let mut admitted = 0;
        loop {
            inflight.as_mut().drive(cx);
            let mut more = false;
            if mailbox_open && inflight.len() < limit {
                match mailbox.poll_recv(cx) {
                    Poll::Ready(Some(env)) => {
                        inflight.as_mut().admit(work(Work::Request(env)), cx);
                        more = true;
                    }
                    Poll::Ready(None) => mailbox_open = false,
                    Poll::Pending => {}
                }
            }
            if events_open && !subs.is_empty() && inflight.len() < limit {
                let next = next_delivery(subs);
                tokio::pin!(next);
                match next.poll(cx) {
                    Poll::Ready(Some(d)) => {
                        inflight.as_mut().admit(work(Work::Event(d)), cx);
                        more = true;
                    }
                    Poll::Ready(None) => events_open = false,
                    Poll::Pending => {}
                }
            }
            if !more {
                return Poll::Pending;
            }
            admitted += 1;
            if admitted >= ADMIT_PER_POLL {
                inflight.as_mut().drive(cx);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Runs `start_deferred` once, after READY. Guarantees: the deferred sub-state goes
/// `running → done | failed`; a failure (error or caught panic) is logged and kept as the
/// deferred cause while the daemon stays READY; `system:daemon:init-complete` carries the
/// daemon's init report either way.
async fn deferred_init<D: Daemon>(t: &Task<'_>, s: &Serving<'_, D>) {
    let lifecycle = &t.l.lifecycle;
    let m = &s.slot.metrics;
    lifecycle.set_deferred(DeferredState::Running, None);
    let t0 = Instant::now();
    let r = AssertUnwindSafe(s.daemon.start_deferred(s.ctx, s.state))
        .catch_unwind()
        .await;
    m.deferred_init_us
        .store(micros_since(t0), Ordering::Relaxed);
    m.total_us
        .store(micros_since(t.started_at), Ordering::Relaxed);
    let cause = match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(Cause::DeferredInitFailed {
            error: e.to_string(),
        }),
        Err(p) => {
            m.panics.fetch_add(1, Ordering::Relaxed);
            Some(Cause::Panicked {
                phase: Phase::DeferredInit,
                message: panic_message(&*p),
            })
        }
    };
    if let Some(c) = &cause {
        tracing::error!(daemon = %t.name(), cause = %c, "Deferred init failed; daemon stays READY");
    }
    let state = if cause.is_some() {
        DeferredState::Failed
    } else {
        DeferredState::Done
    };
    lifecycle.set_deferred(state, cause);
    let _ = t.rt().bus.publish_with("system:daemon:init-complete", || {
        serde_json::to_value(init_report(s.slot)).unwrap_or_default()
    });
}

/// Add `by` to a counter that only this daemon's task writes (`in_flight`, `handled`,
/// `failed`): a load and a store, no locked read-modify-write. The task is polled by one thread
/// at a time and tokio's hand-over between polls orders them, so no update is lost; readers on
/// other threads see a value at most one request old.
fn bump(c: &AtomicU64, by: i64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add_signed(by),
        Ordering::Relaxed,
    );
}

struct InFlightGuard<'a>(&'a DaemonMetrics);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        bump(&self.0.in_flight, -1);
    }
}

/// Serves one request. Guarantees: exactly one answer (a caller already gone, or a request the
/// sweeper already answered `timeout` at its deadline, is skipped and counted `expired`); the
/// handler's future is dropped at the deadline (when the sweeper answers `timeout`: no timer
/// and no clock read here); a panic is answered `internal` and counted; the request is counted
/// once in the work counts, where the handler said it was served (`Inline` if it said
/// nothing), before the answer is sent. No allocation beyond the handler's own; one
/// uncontended lock, the answer cell's.
pub(super) async fn serve<D: Daemon>(s: &Serving<'_, D>, env: Envelope) {
    let Envelope { request, reply, .. } = env;
    let counters = &s.slot.mailbox.counters;
    if reply.is_closed() || reply.is_answered() {
        counters.expired.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let m = &s.slot.metrics;
    bump(&m.in_flight, 1);
    let _guard = InFlightGuard(m);
    let place = RequestPlace::default();
    let handled = AssertUnwindSafe(RequestScope::new(
        s.daemon.handle(s.ctx, s.state, request),
        &place,
    ))
    .catch_unwind();
    let out = match UntilAnswered::new(handled, reply.cell()).await {
        Some(Ok(answer)) => answer,
        Some(Err(panic)) => {
            m.panics.fetch_add(1, Ordering::Relaxed);
            let msg = panic_message(&*panic);
            tracing::error!(daemon = %s.slot.name, panic = %msg, "Daemon panicked while handling a request");
            Err(DaemonError::internal(format!(
                "daemon '{}' panicked while handling the request: {msg}",
                s.slot.name
            )))
        }
        // The sweeper answered `timeout` at the deadline; this answer goes nowhere.
        None => Err(DaemonError::timeout(format!(
            "daemon '{}' did not answer before the deadline",
            s.slot.name
        ))),
    };
    m.count_work(place.get().unwrap_or(WorkPlace::Inline));
    bump(&m.handled, 1);
    if out.is_err() {
        bump(&m.failed, 1);
    }
    reply.send(out);
}

/// Delivers one event to `on_event`. Guarantees: counted in `events`; a panic is caught,
/// counted and logged, and the daemon keeps serving.
pub(super) async fn deliver<D: Daemon>(s: &Serving<'_, D>, d: Delivery) {
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
