//! Phase 5: stop, and the final transition.

use super::{Ended, Task};
use crate::cause::Cause;
use crate::daemon::Daemon;
use crate::error::{DaemonError, panic_message};
use crate::lifecycle::LifecycleState;
use crate::mailbox::answer_all;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

/// The host stopped before the daemon's dependencies were READY. Guarantees: `Stopped`, every
/// queued request answered `shutting_down`, the daemon listed in the stop order.
pub(super) fn stopped_before_start(t: &Task<'_>) {
    t.rt().stop_order.lock().push(t.name().to_owned());
    let _ = t.l.lifecycle.transition(LifecycleState::Stopped, None);
    answer_all(
        t.slot.mailbox.close(DaemonError::shutting_down(format!(
            "daemon '{}' stopped before it started",
            t.name()
        ))),
        None,
    );
}

/// The daemon failed before READY (a dependency, its start, a background panic during start).
/// Guarantees: `Failed` with `cause` (queued requests answered `unavailable` naming it), its
/// background work cancelled and its timers ended before the task ends.
pub(super) async fn fail_before_ready(t: &Task<'_>, cause: Cause) {
    t.fail(cause);
    t.ctx().timers().shutdown().await;
}

/// After serving. Guarantees: whatever is still queued is answered (`shutting_down`, or the
/// failure's `unavailable`); background work is cancelled and timers ended **before** `stop`
/// runs; `stop` is bounded by the drain budget and its panic caught; a drained daemon ends
/// `Stopped` and is listed in the stop order, a failed one stays `Failed`.
pub(super) async fn finish<D: Daemon>(daemon: &D, t: &Task<'_>, state: D::State, ended: Ended) {
    let name = t.name();
    if let Ended::Drained = ended {
        // A failed daemon's address keeps answering with its cause.
        answer_all(
            t.slot.mailbox.close(DaemonError::shutting_down(format!(
                "daemon '{name}' stopped"
            ))),
            None,
        );
    }
    t.ctx().cancel();
    t.ctx().timers().shutdown().await;
    let stopped = AssertUnwindSafe(tokio::time::timeout(
        t.spec().drain_budget,
        daemon.stop(t.ctx(), state),
    ))
    .catch_unwind()
    .await;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::warn!(daemon = %name, "Daemon stop exceeded its budget"),
        Err(p) => {
            t.slot.metrics.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(daemon = %name, panic = %panic_message(&*p), "Daemon panicked in stop");
        }
    }
    match ended {
        Ended::Drained => {
            // Listed before the transition: a dependency's stop gate wakes on `Stopped`, and its
            // own entry must come after this one.
            t.rt().stop_order.lock().push(name.to_owned());
            t.enter(LifecycleState::Stopped);
        }
        Ended::Failed => {}
    }
}
