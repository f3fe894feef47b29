//! [`TaskSet`]: many short tasks of one daemon whose results the daemon awaits.
//!
//! The replacement for a bare `tokio::task::JoinSet` in daemon code (one task per persona reply,
//! per fan-out call, ...). Each task
//! * runs on the runtime's task tracker, so it counts in `live_tasks` and shutdown waits for it;
//! * is cancelled when the daemon stops (it then yields [`TaskError::Cancelled`]) and aborted
//!   when the set is dropped;
//! * is polled through [`PollTimed`], so its polls count toward the daemon's `longest_poll`;
//! * has its panic caught at the daemon boundary: counted in the daemon's `panics`, logged with
//!   the daemon's name, and returned from [`TaskSet::join_next`] as [`TaskError::Panicked`]
//!   (phase `Background`). Unlike a `Context::spawn` loop, a panicking task does **not** fail the
//!   daemon: it is one unit of work whose result the daemon handles.
//!
//! Bound: the set has no capacity of its own; **the caller bounds it** (the persona daemon holds
//! a semaphore permit per reply task, so at most `max_concurrent_replies` are ever in the set).

use crate::cause::{Cause, Phase};
use crate::error::panic_message;
use crate::metrics::{DaemonMetrics, PollTimed};
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a [`TaskSet`] task produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the panic was caught, counted and logged.
    #[error("a task of daemon '{daemon}' panicked: {message}")]
    Panicked {
        /// The daemon owning the set.
        daemon: String,
        /// The panic payload if it was a string, otherwise a placeholder.
        message: String,
    },
    /// The daemon began to stop (or the set was aborted) before the task finished.
    #[error("a task of daemon '{daemon}' was cancelled before it finished")]
    Cancelled {
        /// The daemon owning the set.
        daemon: String,
    },
}

impl TaskError {
    /// The panic as a [`Cause`] (`Panicked { phase: Background, .. }`), if the task panicked.
    pub fn cause(&self) -> Option<Cause> {
        match self {
            TaskError::Panicked { message, .. } => Some(Cause::Panicked {
                phase: Phase::Background,
                message: message.clone(),
            }),
            TaskError::Cancelled { .. } => None,
        }
    }
}

/// A set of a daemon's short tasks yielding `T`, made by `Context::task_set`.
///
/// Each task runs on the runtime's task tracker (shutdown waits for it), is cancelled when
/// the daemon stops ([`TaskError::Cancelled`]) and aborted when the set is dropped, is timed into
/// the daemon's `longest_poll`, and has its panic caught, counted in the daemon's `panics`,
/// logged with the daemon's name and returned as [`TaskError::Panicked`]; the daemon keeps
/// serving. The set has no capacity of its own: **the caller bounds it** (e.g. a semaphore
/// permit held by each task).
#[derive(Debug)]
pub struct TaskSet<T> {
    set: JoinSet<Result<T, TaskError>>,
    daemon: Arc<str>,
    metrics: Arc<DaemonMetrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl<T: Send + 'static> TaskSet<T> {
    pub(crate) fn new(
        daemon: Arc<str>,
        metrics: Arc<DaemonMetrics>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        TaskSet {
            set: JoinSet::new(),
            daemon,
            metrics,
            cancel,
            tracker,
        }
    }

    /// Start `fut` as a task of this set (tracked, timed, cancelled at stop, panic caught).
    pub fn spawn<F>(&mut self, fut: F)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let daemon = self.daemon.clone();
        let metrics = self.metrics.clone();
        let cancel = self.cancel.clone();
        let task = async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => Err(TaskError::Cancelled { daemon: daemon.to_string() }),
                r = AssertUnwindSafe(fut).catch_unwind() => r.map_err(|p| {
                    let message = panic_message(&*p);
                    metrics.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(daemon = %daemon, panic = %message, "Daemon panicked in a task of a task set");
                    TaskError::Panicked { daemon: daemon.to_string(), message }
                }),
            }
        };
        self.set.spawn(
            self.tracker
                .track_future(PollTimed::new(task, self.metrics.clone())),
        );
    }

    /// The result of the next task to finish; `None` when the set is empty.
    pub async fn join_next(&mut self) -> Option<Result<T, TaskError>> {
        let r = self.set.join_next().await?;
        Some(self.flatten(r))
    }

    /// The result of a task that has already finished, without waiting.
    pub fn try_join_next(&mut self) -> Option<Result<T, TaskError>> {
        let r = self.set.try_join_next()?;
        Some(self.flatten(r))
    }

    /// Tasks not yet joined (running or finished).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no task is left to join.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Abort every task; they are joined as [`TaskError::Cancelled`]. Dropping the set does
    /// the same.
    pub fn abort_all(&mut self) {
        self.set.abort_all();
    }

    fn flatten(&self, r: Result<Result<T, TaskError>, JoinError>) -> Result<T, TaskError> {
        match r {
            Ok(r) => r,
            // Panics are caught inside the task; one here escaped the wrapper itself.
            Err(e) if e.is_panic() => Err(TaskError::Panicked {
                daemon: self.daemon.to_string(),
                message: panic_message(&*e.into_panic()),
            }),
            Err(_) => Err(TaskError::Cancelled {
                daemon: self.daemon.to_string(),
            }),
        }
    }
}
