//! A daemon's fault line: how background work that died tells the daemon's task to fail.
//!
//! A future started with `Context::spawn` runs on its own task, but the daemon's lifecycle is
//! owned by the daemon's task. When such a future panics, its wrapper records the cause here
//! (the first one wins) and cancels two tokens: `crashed`, which the start phase waits on, and
//! `halt`, a child of the runtime's stop token. The serve loop waits on `halt` alone, the branch it
//! already had for the stop signal, so watching for a crash costs the request path nothing.

use crate::cause::Cause;
use std::sync::OnceLock;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// One daemon's crash signal (see the module docs).
#[derive(Debug)]
pub(crate) struct Fault {
    cause: OnceLock<Cause>,
    crashed: CancellationToken,
    halt: CancellationToken,
}

impl Fault {
    /// A fault line whose `halt` also fires when `stop` (the runtime's stop token) does.
    pub(crate) fn new(stop: &CancellationToken) -> Self {
        Fault {
            cause: OnceLock::new(),
            crashed: CancellationToken::new(),
            halt: stop.child_token(),
        }
    }

    /// Record that the daemon must fail with `cause` (ignored if a cause is already recorded).
    pub(crate) fn report(&self, cause: Cause) {
        if self.cause.set(cause).is_ok() {
            self.crashed.cancel();
            self.halt.cancel();
        }
    }

    /// The recorded cause, if background work died.
    pub(crate) fn cause(&self) -> Option<&Cause> {
        self.cause.get()
    }

    /// Waits for a crash and returns its cause.
    pub(crate) async fn crash(&self) -> Cause {
        self.crashed.cancelled().await;
        // The cause is set before the token is cancelled; the fallback is unreachable.
        self.cause.get().cloned().unwrap_or(Cause::Stopped)
    }

    /// Fires when a cause is recorded or the runtime begins to stop, whichever is first.
    pub(crate) fn halted(&self) -> WaitForCancellationFuture<'_> {
        self.halt.cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cause::Phase;

    #[tokio::test]
    async fn fault_first_cause_wins_and_fires_both_signals() {
        let stop = CancellationToken::new();
        let f = Fault::new(&stop);
        assert!(f.cause().is_none());
        let first = Cause::Panicked {
            phase: Phase::Background,
            message: "one".into(),
        };
        f.report(first.clone());
        f.report(Cause::Stopped);
        assert_eq!(f.crash().await, first);
        f.halted().await;
        assert_eq!(f.cause(), Some(&first));
        assert!(!stop.is_cancelled(), "a crash does not stop the runtime");
    }

    #[tokio::test]
    async fn fault_halt_follows_the_runtime_stop_without_a_cause() {
        let stop = CancellationToken::new();
        let f = Fault::new(&stop);
        stop.cancel();
        f.halted().await;
        assert!(f.cause().is_none());
    }
}
