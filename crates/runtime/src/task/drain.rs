//! Phase 4: the stop gate, then draining within the budget.

use super::inflight::InFlight;
use super::{Task, Work};
use crate::bus::Subscription;
use crate::cause::Cause;
use crate::error::DaemonError;
use crate::lifecycle::LifecycleState;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Opens when the runtime stops **and** every daemon that requires or wants this one has
/// stopped (so dependents can still call it while they drain, and the stop order is the
/// reverse of the dependency order). Guarantees: `Err(cause)` as soon as a background task of
/// the daemon died, before or while waiting for dependents; costs the serve loop one
/// cancellation future (the daemon's `halt`, which a crash also fires).
pub(super) async fn stop_gate(t: &Task<'_>) -> Result<(), Cause> {
    let fault = t.ctx().fault();
    fault.halted().await;
    if let Some(cause) = fault.cause() {
        return Err(cause.clone());
    }
    let rt = t.rt();
    let dependents = async {
        for &d in &rt.plan.dependents[t.l.me] {
            let mut rx = rt.router.slots()[d].status.clone();
            let _ = rx.wait_for(|st| st.state.is_terminal()).await;
        }
    };
    tokio::select! {
        biased;
        cause = fault.crash() => Err(cause),
        () = dependents => Ok(()),
    }
}

/// Stopping: enters `Stopping`, unsubscribes, refuses new requests with `shutting_down`, and
/// serves what is queued and in flight (up to `concurrency` at once). Guarantees: returns within
/// `drain_budget`; whatever is left then is answered `shutting_down` by the finish phase.
pub(super) async fn drain<F, W>(
    t: &Task<'_>,
    subs: Vec<Subscription>,
    mut inflight: Pin<&mut InFlight<F>>,
    work: &W,
) where
    F: Future<Output = ()>,
    W: Fn(Work) -> F,
{
    t.enter(LifecycleState::Stopping);
    drop(subs);
    let mailbox = &t.slot.mailbox;
    mailbox.start_draining(DaemonError::shutting_down(format!(
        "daemon '{}' is stopping",
        t.name()
    )));
    let limit = t.spec().concurrency;
    let budget = t.spec().drain_budget;
    let mut open = true;
    let drained = std::future::poll_fn(|cx| {
        loop {
            inflight.as_mut().drive(cx);
            if open && inflight.len() < limit {
                match mailbox.poll_recv(cx) {
                    Poll::Ready(Some(env)) => {
                        inflight.as_mut().admit(work(Work::Request(env)), cx);
                        continue;
                    }
                    Poll::Ready(None) => open = false,
                    Poll::Pending => {}
                }
            }
            return if !open && inflight.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
    });
    if tokio::time::timeout(budget, drained).await.is_err() {
        tracing::warn!(daemon = %t.name(), budget_ms = budget.as_millis() as u64, "Drain budget exceeded; answering the rest with shutting_down");
    }
}
