//! One request's answer slot, shared by the caller, the daemon and the deadline sweeper.
//!
//! Before this file the caller awaited a `oneshot` under `tokio::time::timeout_at`, and the
//! daemon ran the handler under a second `timeout_at`. Each ask then registered a tokio timer
//! entry; with the worker that holds the time driver parked, each registration unparked it, one
//! thread switch per request (ADR 0011). Now one [`Cell`] per request carries the answer, and
//! the runtime's one [sweeper](crate::sweep) answers `timeout` at the deadline: no timer entry
//! per request, and the caller is answered even when the daemon's task is stuck in a poll.
//!
//! Exactly one answer: the first of the daemon ([`Reply::send`]), the sweeper
//! ([`Cell::expire`]) and a dropped [`Reply`] (the daemon went away with the request) to
//! complete the cell wins; the others do nothing. Completing wakes the caller, and the sweeper's
//! completion also wakes the daemon's [`UntilAnswered`], which drops the handler's future.

use crate::error::DaemonError;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// What a cell holds.
#[derive(Debug)]
enum Answer {
    /// Nobody answered yet.
    Waiting,
    /// The answer, not yet taken by the caller.
    Ready(Result<Value, DaemonError>),
    /// The daemon's side was dropped without an answer; the caller says why from the status.
    Dropped,
    /// The caller took it.
    Taken,
}

/// The shared answer slot of one request.
#[derive(Debug)]
pub(crate) struct Cell {
    answer: Mutex<Answer>,
    /// Set (release) once `answer` left `Waiting`; read without the lock.
    done: AtomicBool,
    /// The caller stopped waiting (its future was dropped).
    caller_gone: AtomicBool,
    caller: AtomicWaker,
    /// The daemon's handler, woken when the sweeper answers first.
    server: AtomicWaker,
    /// When the caller stops waiting.
    pub(crate) deadline: Instant,
    /// How long the caller waits in all (what a `timeout` answer says).
    pub(crate) timeout: Duration,
}

impl Cell {
    /// A new cell and the caller's future on it.
    pub(crate) fn pair(deadline: Instant, timeout: Duration) -> (Reply, Answered) {
        let cell = Arc::new(Cell {
            answer: Mutex::new(Answer::Waiting),
            done: AtomicBool::new(false),
            caller_gone: AtomicBool::new(false),
            caller: AtomicWaker::new(),
            server: AtomicWaker::new(),
            deadline,
            timeout,
        });
        (Reply { cell: cell.clone() }, Answered { cell })
    }

    /// A cell with no caller and no daemon reply: a deadline the sweeper keeps for some other
    /// work (a daemon's start attempt). [`Cell::settle`] it when the work ends;
    /// [`UntilAnswered`] ends the work's future if the sweeper expires it first.
    pub(crate) fn deadline(deadline: Instant, timeout: Duration) -> Arc<Cell> {
        Arc::new(Cell {
            answer: Mutex::new(Answer::Waiting),
            done: AtomicBool::new(false),
            caller_gone: AtomicBool::new(true),
            caller: AtomicWaker::new(),
            server: AtomicWaker::new(),
            deadline,
            timeout,
        })
    }

    /// The work behind a [`Cell::deadline`] ended: the sweeper forgets the cell.
    pub(crate) fn settle(&self) {
        self.complete(Answer::Ready(Ok(Value::Null)));
    }

    /// Whether the cell has its answer (or was abandoned by the daemon).
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Whether the caller stopped waiting.
    pub(crate) fn caller_gone(&self) -> bool {
        self.caller_gone.load(Ordering::Acquire)
    }

    /// Complete with `answer` unless already complete; `true` if this call did it.
    fn complete(&self, answer: Answer) -> bool {
        {
            let mut a = self.answer.lock();
            if !matches!(*a, Answer::Waiting) {
                return false;
            }
            *a = answer;
            self.done.store(true, Ordering::Release);
        }
        self.caller.wake();
        true
    }

    /// The sweeper's answer at the deadline: `err` to the caller, and the daemon's handler (if
    /// it runs) woken so it is dropped. `false` if someone answered first.
    pub(crate) fn expire(&self, err: DaemonError) -> bool {
        let won = self.complete(Answer::Ready(Err(err)));
        if won {
            self.server.wake();
        }
        won
    }
}

/// The daemon's side of a request: answer it once with [`Reply::send`]. Dropping it unanswered
/// tells the caller the daemon dropped the request.
#[derive(Debug)]
pub(crate) struct Reply {
    cell: Arc<Cell>,
}

impl Reply {
    /// The shared cell (for the mailbox's in-flight list and the sweeper).
    pub(crate) fn cell(&self) -> &Arc<Cell> {
        &self.cell
    }

    /// Answer; does nothing when the sweeper (or anything else) answered first.
    pub(crate) fn send(self, answer: Result<Value, DaemonError>) {
        self.cell.complete(Answer::Ready(answer));
    }

    /// Whether the caller stopped waiting.
    pub(crate) fn is_closed(&self) -> bool {
        self.cell().caller_gone()
    }

    /// Whether someone already answered (the sweeper, at the deadline).
    pub(crate) fn is_answered(&self) -> bool {
        self.cell().is_done()
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // After `send` the cell is done: one load, no lock.
        if !self.cell.is_done() {
            self.cell.complete(Answer::Dropped);
        }
    }
}

/// What the caller gets: the answer, or word that the daemon dropped the request.
#[derive(Debug)]
pub(crate) enum Outcome {
    Answer(Result<Value, DaemonError>),
    Dropped,
}

/// The caller's future on a cell. Dropping it marks the caller gone, so the daemon skips the
/// request at dequeue.
#[derive(Debug)]
pub(crate) struct Answered {
    cell: Arc<Cell>,
}

impl Answered {
    fn take(&self) -> Outcome {
        let mut a = self.cell.answer.lock();
        match std::mem::replace(&mut *a, Answer::Taken) {
            Answer::Ready(r) => Outcome::Answer(r),
            Answer::Dropped => Outcome::Dropped,
            // `done` is set only once the answer left `Waiting`, and only this future takes.
            Answer::Waiting | Answer::Taken => Outcome::Dropped,
        }
    }
}

impl Future for Answered {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        if self.cell.is_done() {
            return Poll::Ready(self.take());
        }
        self.cell.caller.register(cx.waker());
        if self.cell.is_done() {
            return Poll::Ready(self.take());
        }
        Poll::Pending
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        self.cell.caller_gone.store(true, Ordering::Release);
    }
}

pin_project_lite::pin_project! {
    /// A handler's future, ended early (`None`) once the cell was answered by someone else, i.e.
    /// the sweeper at the deadline. No timer of its own.
    pub(crate) struct UntilAnswered<'a, F> {
        #[pin]
        fut: F,
        cell: &'a Cell,
    }
}

impl<'a, F> UntilAnswered<'a, F> {
    pub(crate) fn new(fut: F, cell: &'a Cell) -> Self {
        UntilAnswered { fut, cell }
    }
}

impl<F: Future> Future for UntilAnswered<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.cell.is_done() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        this.cell.server.register(cx.waker());
        if this.cell.is_done() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemonhost_protocol::ErrorCode;

    fn cell() -> (Reply, Answered) {
        Cell::pair(
            Instant::now() + Duration::from_secs(10),
            Duration::from_secs(10),
        )
    }

    #[tokio::test]
    async fn reply_first_answer_wins_and_later_ones_do_nothing() {
        let (reply, answered) = cell();
        let c = reply.cell().clone();
        reply.send(Ok(Value::from(1)));
        assert!(!c.expire(DaemonError::timeout("late")));
        match answered.await {
            Outcome::Answer(Ok(v)) => assert_eq!(v, Value::from(1)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn reply_expired_cell_ignores_the_daemon_and_ends_its_handler() {
        let (reply, answered) = cell();
        let c = reply.cell().clone();
        let mut handler = Box::pin(UntilAnswered::new(std::future::pending::<()>(), &c));
        let waker = futures_util::task::noop_waker();
        assert!(
            handler
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert!(c.expire(DaemonError::timeout("deadline")));
        assert!(matches!(
            handler.as_mut().poll(&mut Context::from_waker(&waker)),
            Poll::Ready(None)
        ));
        reply.send(Ok(Value::from(2)));
        match answered.await {
            Outcome::Answer(Err(e)) => assert_eq!(e.code, ErrorCode::Timeout),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn reply_dropped_unanswered_tells_the_caller() {
        let (reply, answered) = cell();
        let waiter = tokio::spawn(answered);
        tokio::task::yield_now().await;
        drop(reply);
        assert!(matches!(waiter.await.expect("join"), Outcome::Dropped));
    }

    #[tokio::test]
    async fn reply_caller_dropping_its_future_marks_it_gone() {
        let (reply, answered) = cell();
        assert!(!reply.is_closed());
        drop(answered);
        assert!(reply.is_closed());
    }
}
