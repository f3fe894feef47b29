//! One daemon's task: its whole life, phase by phase. [`run`] is the driver; each phase is a
//! small function in its own file that says what it guarantees:
//!
//! 1. [`deps`]: wait until everything the daemon `requires` is READY (and what it `wants` has
//!    settled), or fail with the dependency's cause.
//! 2. [`start`]: subscribe to the declared events, run `start` with timeout, retries and
//!    backoff, then READY (the startup queue becomes the mailbox).
//! 3. [`serve`]: the serve loop (requests and events, up to `concurrency` at once, in
//!    [`inflight`]: an inline slot, then a `FuturesUnordered`) with deferred init alongside,
//!    until the stop gate opens or background work dies.
//! 4. [`drain`]: the stop gate (the runtime stops and every dependent has stopped), then
//!    finish queued and in-flight work within the drain budget.
//! 5. [`finish`]: answer what is left, cancel the daemon's work, run `stop`, final transition.
//!
//! All of it runs on one tokio task per daemon, polled through `PollTimed`, so every poll of the
//! daemon's code is timed and handlers can borrow the daemon's state without locks.

mod deps;
mod drain;
mod finish;
mod inflight;
mod serve;
mod start;

use crate::bus::Delivery;
use crate::cause::Cause;
use crate::context::Context;
use crate::daemon::Daemon;
use crate::error::DaemonError;
use crate::lifecycle::{Lifecycle, LifecycleState};
use crate::mailbox::{Envelope, answer_all};
use crate::router::Slot;
use crate::shared::Shared;
use crate::spec::DaemonSpec;
use futures_util::future::Either;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::time::Instant;

/// Starts a daemon's task; built at registration, called once by `Runtime::start`.
pub(crate) type LaunchFn =
    Box<dyn FnOnce(Launch) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What a daemon task needs from the runtime.
pub(crate) struct Launch {
    /// The daemon's slot index (in the router and the plan).
    pub(crate) me: usize,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) ctx: Context,
    pub(crate) rt: Arc<Shared>,
}

/// The type-erased launcher of `daemon`'s task.
pub(crate) fn launcher<D: Daemon>(daemon: D) -> LaunchFn {
    Box::new(move |l: Launch| Box::pin(run(daemon, l)))
}

/// What every phase reads: the launch and the daemon's slot.
struct Task<'a> {
    l: &'a Launch,
    slot: &'a Slot,
    /// The runtime's start signal (what `waited`, `ready_at` and `total` count from).
    started_at: Instant,
}

impl<'a> Task<'a> {
    fn new(l: &'a Launch) -> Self {
        Task {
            l,
            slot: &l.rt.router.slots()[l.me],
            started_at: l.rt.started_at.get().copied().unwrap_or_else(Instant::now),
        }
    }

    fn name(&self) -> &str {
        &self.slot.name
    }

    fn spec(&self) -> &'a DaemonSpec {
        &self.slot.spec
    }

    fn ctx(&self) -> &'a Context {
        &self.l.ctx
    }

    fn rt(&self) -> &'a Shared {
        &self.l.rt
    }

    /// Move to `to` (no cause) and announce it on `system:daemon:state`. The driver only asks
    /// for legal transitions, so a refusal is a runtime bug: logged, not fatal.
    fn enter(&self, to: LifecycleState) {
        if let Err(e) = self.l.lifecycle.transition(to, None) {
            tracing::error!(error = %e, "Lifecycle");
        }
        self.publish_state(to, None);
    }

    /// Fail with `cause`: `Failed`, every queued request answered `unavailable` naming the
    /// cause (and the address refuses new ones the same way), logged, announced, and the
    /// daemon's background work cancelled.
    fn fail(&self, cause: Cause) {
        let _ = self
            .l
            .lifecycle
            .transition(LifecycleState::Failed, Some(cause.clone()));
        let err = DaemonError::unavailable(format!("daemon '{}' failed: {cause}", self.name()));
        answer_all(self.slot.mailbox.close(err.clone()), Some(&err));
        tracing::error!(daemon = %self.name(), %cause, "Daemon failed");
        self.publish_state(LifecycleState::Failed, Some(&cause));
        self.l.ctx.cancel();
    }

    /// `system:daemon:state`: `cause` is the human text (as it always was), `causeKind` the
    /// machine name ([`Cause::kind`]).
    fn publish_state(&self, state: LifecycleState, cause: Option<&Cause>) {
        let _ = self.rt().bus.publish_with("system:daemon:state", || {
            json!({
                "daemon": self.name(),
                "state": state,
                "cause": cause.map(ToString::to_string),
                "causeKind": cause.map(Cause::kind),
            })
        });
    }
}

/// One unit of work admitted into a daemon's in-flight set (by the serve loop or the drain).
enum Work {
    Request(Envelope),
    Event(Delivery),
}

/// How serving ended.
enum Ended {
    /// The stop gate opened and the daemon drained.
    Drained,
    /// Background work died; the daemon is `Failed`.
    Failed,
}

/// The life of one daemon: the phases in order.
async fn run<D: Daemon>(daemon: D, l: Launch) {
    let t = Task::new(&l);

    // 1. Dependencies.
    match deps::await_dependencies(&t).await {
        deps::Waited::Go => {}
        deps::Waited::Failed(cause) => return finish::fail_before_ready(&t, cause).await,
        deps::Waited::Stop => return finish::stopped_before_start(&t),
    }

    // 2. Core init, with retries per the restart policy; then READY.
    let (state, subs) = match start::start(&daemon, &t).await {
        Ok(started) => started,
        Err(cause) => return finish::fail_before_ready(&t, cause).await,
    };
    start::become_ready(&t);

    // 3 and 4. Serve until every dependent has stopped, then drain; or fail if background
    // work died.
    let ended = {
        let s = serve::Serving {
            daemon: &daemon,
            ctx: t.ctx(),
            state: &state,
            slot: t.slot,
        };
        let work = |w: Work| match w {
            Work::Request(env) => Either::Left(serve::serve(&s, env)),
            Work::Event(d) => Either::Right(serve::deliver(&s, d)),
        };
        let mut inflight = std::pin::pin!(inflight::InFlight::new());
        let mut subs = subs;
        match serve::serve_until_stop(&t, &s, &mut subs, inflight.as_mut(), &work).await {
            serve::Served::Stop => {
                drain::drain(&t, subs, inflight.as_mut(), &work).await;
                Ended::Drained
            }
            serve::Served::Crashed(cause) => {
                // Failed before the requests in flight are dropped, so their callers are
                // answered `unavailable` with this cause.
                t.fail(cause);
                Ended::Failed
            }
        }
    };

    // 5. Stop.
    finish::finish(&daemon, &t, state, ended).await;
}

fn micros_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}
