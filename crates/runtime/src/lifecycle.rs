//! The daemon lifecycle as an explicit state machine with one transition table.
//!
//! ```text
//! Created ──► Starting ──► Ready ──► Stopping ──► Stopped
//!    │           │  ▲        │
//!    │           ▼  │        ▼
//!    └────────► Failed ◄─────┘        (Failed ──► Starting: restart)
//! ```
//!
//! Every change goes through [`Lifecycle::transition`], which consults [`allowed`]; an illegal
//! transition is rejected there and nowhere else. The current [`Status`] is published on a
//! `watch` channel so dependents, the router and operators observe it without polling.

use crate::cause::Cause;
use serde::Serialize;
use std::fmt;
use tokio::sync::watch;

/// Where a daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// Registered; its address accepts requests into the startup queue.
    Created,
    /// Core init (`start`) is running.
    Starting,
    /// Serving requests.
    Ready,
    /// Draining and running `stop`.
    Stopping,
    /// Stopped cleanly.
    Stopped,
    /// Failed to start, or crashed; the status carries the cause.
    Failed,
}

impl LifecycleState {
    /// The lowercase name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Created => "created",
            LifecycleState::Starting => "starting",
            LifecycleState::Ready => "ready",
            LifecycleState::Stopping => "stopping",
            LifecycleState::Stopped => "stopped",
            LifecycleState::Failed => "failed",
        }
    }

    /// `Stopped` or `Failed`: nothing more will happen without a restart.
    pub fn is_terminal(self) -> bool {
        matches!(self, LifecycleState::Stopped | LifecycleState::Failed)
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Deferred init, a sub-state of `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferredState {
    /// Not begun (the daemon is not READY yet).
    Pending,
    /// `start_deferred` is running in the background.
    Running,
    /// `start_deferred` finished.
    Done,
    /// `start_deferred` failed; the daemon stays READY and the cause is reported.
    Failed,
}

/// The single transition table. `from == to` is never a transition.
pub fn allowed(from: LifecycleState, to: LifecycleState) -> bool {
    use LifecycleState::*;
    matches!(
        (from, to),
        (Created, Starting)
            | (Created, Failed) // a required dependency failed
            | (Created, Stopped) // stopped before it was started
            | (Starting, Ready)
            | (Starting, Failed)
            | (Starting, Stopping) // shutdown arrived during start
            | (Ready, Stopping)
            | (Ready, Failed) // crashed after READY
            | (Failed, Starting) // restart
            | (Stopping, Stopped)
    )
}

/// A rejected transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("daemon '{daemon}': illegal lifecycle transition {from} -> {to}")]
pub struct IllegalTransition {
    /// The daemon.
    pub daemon: String,
    /// State it was in.
    pub from: LifecycleState,
    /// State that was asked for.
    pub to: LifecycleState,
}

/// A snapshot of a daemon's lifecycle, as observed through its watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Main state.
    pub state: LifecycleState,
    /// Deferred-init sub-state.
    pub deferred: DeferredState,
    /// Why it failed (start, dependency or crash), if it did; while `Starting` after a failed
    /// attempt, why that attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Why deferred init failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_cause: Option<Cause>,
    /// Start attempts so far (1 after the first).
    pub attempts: u32,
}

impl Status {
    fn initial() -> Self {
        Status {
            state: LifecycleState::Created,
            deferred: DeferredState::Pending,
            cause: None,
            deferred_cause: None,
            attempts: 0,
        }
    }
}

/// The owner side of a daemon's lifecycle. Only the daemon's own task holds it.
#[derive(Debug)]
pub struct Lifecycle {
    daemon: String,
    tx: watch::Sender<Status>,
}

impl Lifecycle {
    /// A lifecycle in `Created`.
    pub fn new(daemon: impl Into<String>) -> Self {
        let (tx, _) = watch::channel(Status::initial());
        Lifecycle {
            daemon: daemon.into(),
            tx,
        }
    }

    /// Observe the lifecycle.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> LifecycleState {
        self.tx.borrow().state
    }

    /// Move to `to`, recording `cause` (kept for `Failed`; cleared on `Starting`).
    pub fn transition(
        &self,
        to: LifecycleState,
        cause: Option<Cause>,
    ) -> Result<(), IllegalTransition> {
        let mut result = Ok(());
        self.tx.send_if_modified(|s| {
            if !allowed(s.state, to) {
                result = Err(IllegalTransition {
                    daemon: self.daemon.clone(),
                    from: s.state,
                    to,
                });
                return false;
            }
            s.state = to;
            match to {
                LifecycleState::Starting => {
                    s.attempts += 1;
                    s.cause = None;
                }
                LifecycleState::Failed => s.cause = cause.clone(),
                _ => {}
            }
            true
        });
        result
    }

    /// A start attempt failed and another will follow: stay `Starting`, count the attempt and
    /// keep the cause visible. Dependents keep waiting; only the final failure fails them.
    pub fn retrying(&self, cause: Cause) {
        self.tx.send_modify(|s| {
            s.attempts += 1;
            s.cause = Some(cause);
        });
    }

    /// Record the deferred-init sub-state (only meaningful while READY).
    pub fn set_deferred(&self, deferred: DeferredState, cause: Option<Cause>) {
        self.tx.send_modify(|s| {
            s.deferred = deferred;
            s.deferred_cause = cause;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState::*;

    const ALL: [LifecycleState; 6] = [Created, Starting, Ready, Stopping, Stopped, Failed];

    #[test]
    fn lifecycle_table_allows_only_documented_transitions() {
        let legal: Vec<_> = ALL
            .iter()
            .flat_map(|a| ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| allowed(*a, *b))
            .collect();
        assert_eq!(legal.len(), 10);
        assert!(!allowed(Stopped, Starting));
        assert!(!allowed(Ready, Starting));
        assert!(!allowed(Created, Ready));
        for s in ALL {
            assert!(!allowed(s, s), "{s} -> {s} must not be a transition");
        }
    }

    #[test]
    fn lifecycle_illegal_transition_is_rejected_and_state_kept() {
        let l = Lifecycle::new("x");
        let err = l
            .transition(Ready, None)
            .expect_err("created -> ready is illegal");
        assert_eq!(err.from, Created);
        assert_eq!(l.state(), Created);
        l.transition(Starting, None).expect("legal");
        let boom = Cause::StartFailed {
            error: "boom".into(),
        };
        l.transition(Failed, Some(boom.clone())).expect("legal");
        let rx = l.subscribe();
        assert_eq!(rx.borrow().cause, Some(boom));
        l.transition(Starting, None).expect("restart");
        assert_eq!(rx.borrow().attempts, 2);
        assert_eq!(rx.borrow().cause, None);
    }
}
