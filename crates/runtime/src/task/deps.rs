//! Phase 1: wait for the daemon's dependencies.

use super::Task;
use crate::cause::Cause;
use crate::lifecycle::LifecycleState;

/// The outcome of waiting.
pub(super) enum Waited {
    /// Everything required is READY and everything wanted has settled: start.
    Go,
    /// A required daemon failed (or stopped) first.
    Failed(Cause),
    /// The runtime began to stop first.
    Stop,
}

/// Waits for every daemon this one `requires` to be READY and every one it `wants` to be READY
/// or settled. Guarantees: returns `Go` only when every requirement is READY; a requirement that
/// ends anywhere else gives `Failed(DependencyFailed { dependency, cause })` carrying that
/// daemon's own cause (so causes chain transitively); shutdown gives `Stop` at once.
pub(super) async fn await_dependencies(t: &Task<'_>) -> Waited {
    let rt = t.rt();
    let slots = rt.router.slots();
    for (&dep, required) in rt.plan.requires[t.l.me]
        .iter()
        .map(|d| (d, true))
        .chain(rt.plan.wants[t.l.me].iter().map(|d| (d, false)))
    {
        let mut rx = slots[dep].status.clone();
        let (state, cause) = tokio::select! {
            biased;
            () = rt.stop.cancelled() => return Waited::Stop,
            r = rx.wait_for(|s| s.state == LifecycleState::Ready || s.state.is_terminal()) => {
                r.map(|s| (s.state, s.cause.clone())).unwrap_or((LifecycleState::Stopped, None))
            }
        };
        if required && state != LifecycleState::Ready {
            return Waited::Failed(Cause::DependencyFailed {
                dependency: slots[dep].name.to_string(),
                cause: Box::new(cause.unwrap_or(Cause::Stopped)),
            });
        }
    }
    Waited::Go
}
