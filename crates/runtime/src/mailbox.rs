//! A daemon's address: one bounded FIFO that is the startup queue before READY and the mailbox
//! after it.
//!
//! One queue for both phases is what makes "flushed FIFO on READY, before anything newer" true by
//! construction: a request that arrives during the flush lands behind the ones already waiting.
//! The queue is a `VecDeque` under a short mutex (never held across an await) so that both
//! overflow policies work, including *drop oldest*, which a channel cannot do from the sending
//! side, and so its depth and oldest age are readable at any time.
//!
//! Every envelope that enters is answered exactly once: by the daemon, by a deadline check at
//! dequeue, by the overflow policy, or by [`Mailbox::close`], which hands back everything still
//! queued so the caller can answer it with the cause.

use crate::error::DaemonError;
use crate::reply::{Cell, Reply};
use crate::spec::{DEFAULT_CONCURRENCY, OverflowPolicy};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use tokio::time::Instant;

/// A command name as a request carries it: a string that keeps names of up to 24 bytes inline,
/// so routing a request allocates nothing for its name. Derefs to `str`.
pub type CommandName = compact_str::CompactString;

/// A request as a daemon sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Full command name, e.g. `data/list`.
    pub command: CommandName,
    /// Parameters (an object; `{}` when none were given).
    pub params: Value,
    /// When the caller stops waiting. The runtime drops the handler's future at this instant.
    pub deadline: Instant,
}

/// A queued request and its reply slot.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) request: Request,
    pub(crate) reply: Reply,
    pub(crate) enqueued: Instant,
}

impl Envelope {
    /// Answer with an error (the caller may be gone; that is fine).
    pub(crate) fn fail(self, err: DaemonError) {
        self.reply.send(Err(err));
    }
}

/// What [`Mailbox::sweep`] found past its deadline, for the sweeper to answer outside the lock.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Requests still queued at their deadline (taken out of the queue).
    pub(crate) queued: Vec<Envelope>,
    /// Requests the daemon took and has not answered by their deadline.
    pub(crate) in_flight: Vec<Arc<Cell>>,
    /// The earliest deadline among what is still unanswered.
    pub(crate) next: Option<Instant>,
    /// Requests that were queued when the sweep began (those it took out included).
    pub(crate) depth: usize,
}

/// Answer every envelope with `err` (`shutting_down` when none is given).
pub(crate) fn answer_all(envs: Vec<Envelope>, err: Option<&DaemonError>) {
    for env in envs {
        let e = err
            .cloned()
            .unwrap_or_else(|| DaemonError::shutting_down("the host is shutting down"));
        env.fail(e);
    }
}

#[derive(Debug)]
enum Gate {
    /// Accepting; `ready` picks the bound.
    Open { ready: bool },
    /// Accepting nothing new; queued envelopes may still be drained by the daemon.
    Draining(DaemonError),
    /// Accepting nothing; the queue is empty.
    Closed(DaemonError),
}

#[derive(Debug)]
struct Inner {
    queue: VecDeque<Envelope>,
    /// The answer cells of requests the daemon took from the queue: what the sweeper answers
    /// `timeout` if the daemon's task does not (e.g. it is stuck in a poll). Answered cells are
    /// dropped from it when it reaches `collect_at` (at most `concurrency` are unanswered, so
    /// that frees at least half of it, one pass per `concurrency` requests) and by every sweep;
    /// it never holds more than `collect_at` cells.
    in_flight: Vec<Arc<Cell>>,
    gate: Gate,
    /// The receiver (the daemon's task) waiting for a request; taken and woken by the next
    /// push. One receiver at a time, so one waker instead of a waiter list.
    receiver: Option<Waker>,
}

/// Counters kept by a mailbox.
#[derive(Debug, Default)]
pub(crate) struct MailboxCounters {
    pub(crate) queued_before_ready: AtomicU64,
    pub(crate) overflowed: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) peak_depth: AtomicU64,
    /// Requests the router refused for breaking the command's declared params; they never
    /// entered the queue (counted here because this is the daemon's address).
    pub(crate) rejected_params: AtomicU64,
}

/// The bounded queue behind a daemon's address.
#[derive(Debug)]
pub(crate) struct Mailbox {
    daemon: String,
    inner: Mutex<Inner>,
    startup_cap: usize,
    ready_cap: usize,
    overflow: OverflowPolicy,
    /// When `in_flight` is pruned of answered cells: twice the daemon's concurrency.
    collect_at: usize,
    pub(crate) counters: MailboxCounters,
}

impl Mailbox {
    pub(crate) fn new(
        daemon: impl Into<String>,
        startup_cap: usize,
        ready_cap: usize,
        overflow: OverflowPolicy,
    ) -> Self {
        Mailbox {
            daemon: daemon.into(),
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                in_flight: Vec::new(),
                gate: Gate::Open { ready: false },
                receiver: None,
            }),
            startup_cap,
            ready_cap,
            overflow,
            collect_at: 2 * DEFAULT_CONCURRENCY,
            counters: MailboxCounters::default(),
        }
    }

    /// The daemon serves at most `n` requests at once (sizes the in-flight list).
    pub(crate) fn with_concurrency(mut self, n: usize) -> Self {
        self.collect_at = 2 * n.max(1);
        self
    }

    /// Queue an envelope. On refusal the envelope has already been answered.
    pub(crate) fn push(&self, env: Envelope) -> bool {
        let mut evicted = None;
        let receiver;
        {
            let mut inner = self.inner.lock();
            let ready = match &inner.gate {
                Gate::Open { ready } => *ready,
                Gate::Draining(err) | Gate::Closed(err) => {
                    let err = err.clone();
                    drop(inner);
                    env.fail(err);
                    return false;
                }
            };
            let cap = if ready {
                self.ready_cap
            } else {
                self.startup_cap
            };
            if inner.queue.len() >= cap {
                self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
                match self.overflow {
                    OverflowPolicy::RejectNewest => {
                        drop(inner);
                        env.fail(self.overloaded(ready, cap, "rejected"));
                        return false;
                    }
                    OverflowPolicy::DropOldest => evicted = inner.queue.pop_front(),
                }
            }
            inner.queue.push_back(env);
            if !ready {
                self.counters
                    .queued_before_ready
                    .fetch_add(1, Ordering::Relaxed);
            }
            let depth = inner.queue.len() as u64;
            if depth > self.counters.peak_depth.load(Ordering::Relaxed) {
                self.counters.peak_depth.fetch_max(depth, Ordering::Relaxed);
            }
            receiver = inner.receiver.take();
            if let Some(old) = evicted {
                drop(inner);
                old.fail(self.overloaded(ready, cap, "dropped as the oldest"));
            }
        }
        if let Some(w) = receiver {
            w.wake();
        }
        true
    }

    fn overloaded(&self, ready: bool, cap: usize, what: &str) -> DaemonError {
        let queue = if ready { "mailbox" } else { "startup queue" };
        DaemonError::overloaded(format!(
            "daemon '{}': {queue} full ({cap} requests); request {what}",
            self.daemon
        ))
    }

    /// Take the next envelope, waiting for one. `None` once closed (or draining) and empty.
    #[cfg(test)]
    pub(crate) async fn recv(&self) -> Option<Envelope> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Take the next envelope, or register `cx` to be woken by the next push (or by the gate
    /// closing). `Ready(None)` once closed (or draining) and empty. The taken request's answer
    /// cell joins the in-flight list, where the sweeper finds it.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        let mut inner = self.inner.lock();
        if let Some(env) = inner.queue.pop_front() {
            if inner.in_flight.len() >= self.collect_at {
                inner.in_flight.retain(|c| !c.is_done());
            }
            inner.in_flight.push(env.reply.cell().clone());
            return Poll::Ready(Some(env));
        }
        match &inner.gate {
            Gate::Open { .. } => {}
            Gate::Draining(e) => {
                let e = e.clone();
                inner.gate = Gate::Closed(e);
                return Poll::Ready(None);
            }
            Gate::Closed(_) => return Poll::Ready(None),
        }
        match &inner.receiver {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.receiver = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Take the next envelope without waiting.
    #[cfg(test)]
    pub(crate) fn try_recv(&self) -> Option<Envelope> {
        self.inner.lock().queue.pop_front()
    }

    /// Switch from the startup bound to the mailbox bound.
    pub(crate) fn mark_ready(&self) {
        let mut inner = self.inner.lock();
        if let Gate::Open { ready } = &mut inner.gate {
            *ready = true;
        }
    }

    /// Refuse new requests with `err`; those already queued stay for the daemon to drain.
    pub(crate) fn start_draining(&self, err: DaemonError) {
        let mut inner = self.inner.lock();
        if matches!(inner.gate, Gate::Open { .. }) {
            inner.gate = Gate::Draining(err);
        }
        let receiver = inner.receiver.take();
        drop(inner);
        // Wake a waiting receiver so it sees the gate.
        if let Some(w) = receiver {
            w.wake();
        }
    }

    /// Refuse everything with `err` and return what was queued, for the caller to answer.
    pub(crate) fn close(&self, err: DaemonError) -> Vec<Envelope> {
        let mut inner = self.inner.lock();
        inner.gate = Gate::Closed(err);
        let drained: Vec<Envelope> = inner.queue.drain(..).collect();
        inner.in_flight.retain(|c| !c.is_done());
        if inner.in_flight.is_empty() {
            inner.in_flight = Vec::new();
        }
        let receiver = inner.receiver.take();
        drop(inner);
        if let Some(w) = receiver {
            w.wake();
        }
        drained
    }

    /// Take out what is past its deadline at `now` (queued or in flight and unanswered), drop
    /// answered cells, and find the earliest deadline left. The sweeper answers what it returns.
    pub(crate) fn sweep(&self, now: Instant) -> Swept {
        let mut out = Swept::default();
        let mut inner = self.inner.lock();
        let mut next: Option<Instant> = None;
        out.depth = inner.queue.len();
        if inner.queue.iter().any(|e| e.request.deadline <= now) {
            let mut kept = VecDeque::with_capacity(inner.queue.len());
            for env in inner.queue.drain(..) {
                if env.request.deadline <= now {
                    out.queued.push(env);
                } else {
                    kept.push_back(env);
                }
            }
            inner.queue = kept;
        }
        for env in &inner.queue {
            let d = env.request.deadline;
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        inner.in_flight.retain(|c| {
            if c.is_done() {
                false
            } else if c.deadline <= now {
                out.in_flight.push(c.clone());
                false
            } else {
                next = Some(next.map_or(c.deadline, |n| n.min(c.deadline)));
                true
            }
        });
        if inner.in_flight.is_empty() && inner.in_flight.capacity() > 0 {
            inner.in_flight = Vec::new();
        }
        out.next = next;
        drop(inner);
        self.counters
            .expired
            .fetch_add(out.queued.len() as u64, Ordering::Relaxed);
        out
    }

    /// The daemon's name.
    pub(crate) fn daemon(&self) -> &str {
        &self.daemon
    }

    /// Requests waiting now.
    pub(crate) fn depth(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Age of the oldest waiting request.
    pub(crate) fn oldest_age(&self) -> Option<std::time::Duration> {
        self.inner
            .lock()
            .queue
            .front()
            .map(|e| Instant::now().saturating_duration_since(e.enqueued))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Outcome;
    use daemonhost_protocol::ErrorCode;
    use std::time::Duration;

    /// The caller's side in these tests: the answer, `Err(())` if the daemon dropped it.
    struct Rx(crate::reply::Answered);

    impl Rx {
        async fn get(self) -> Result<Result<Value, DaemonError>, ()> {
            match self.0.await {
                Outcome::Answer(a) => Ok(a),
                Outcome::Dropped => Err(()),
            }
        }
    }

    fn env_at(n: u64, deadline: Instant) -> (Envelope, Rx) {
        let (reply, answered) = Cell::pair(deadline, Duration::from_secs(10));
        (
            Envelope {
                request: Request {
                    command: "t".into(),
                    params: Value::from(n),
                    deadline,
                },
                reply,
                enqueued: Instant::now(),
            },
            Rx(answered),
        )
    }

    fn env(n: u64) -> (Envelope, Rx) {
        env_at(n, Instant::now() + Duration::from_secs(10))
    }

    #[tokio::test]
    async fn mailbox_reject_newest_answers_overloaded() {
        let mb = Mailbox::new("d", 2, 4, OverflowPolicy::RejectNewest);
        let (a, _ra) = env(1);
        let (b, _rb) = env(2);
        let (c, rc) = env(3);
        assert!(mb.push(a));
        assert!(mb.push(b));
        assert!(!mb.push(c));
        let err = rc.get().await.expect("answered").expect_err("overloaded");
        assert_eq!(err.code, ErrorCode::Overloaded);
        assert!(
            err.message.contains("startup queue full"),
            "{}",
            err.message
        );
        assert_eq!(mb.depth(), 2);
        assert_eq!(mb.counters.queued_before_ready.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn mailbox_drop_oldest_answers_the_evicted_one() {
        let mb = Mailbox::new("d", 2, 4, OverflowPolicy::DropOldest);
        let (a, ra) = env(1);
        let (b, _rb) = env(2);
        let (c, _rc) = env(3);
        mb.push(a);
        mb.push(b);
        assert!(mb.push(c));
        let err = ra.get().await.expect("answered").expect_err("evicted");
        assert_eq!(err.code, ErrorCode::Overloaded);
        let order: Vec<_> = std::iter::from_fn(|| mb.try_recv())
            .map(|e| e.request.params.clone())
            .collect();
        assert_eq!(order, vec![Value::from(2), Value::from(3)]);
    }

    #[tokio::test]
    async fn mailbox_ready_bound_differs_from_startup_bound() {
        let mb = Mailbox::new("d", 1, 3, OverflowPolicy::RejectNewest);
        mb.mark_ready();
        for n in 0..3 {
            let (e, _r) = env(n);
            assert!(mb.push(e));
        }
        let (e, _r) = env(9);
        assert!(!mb.push(e));
    }

    #[tokio::test]
    async fn mailbox_close_hands_back_everything_and_refuses_more() {
        let mb = Mailbox::new("d", 8, 8, OverflowPolicy::RejectNewest);
        for n in 0..3 {
            let (e, _r) = env(n);
            mb.push(e);
        }
        let drained = mb.close(DaemonError::unavailable("gone"));
        assert_eq!(drained.len(), 3);
        let (e, r) = env(4);
        assert!(!mb.push(e));
        assert_eq!(
            r.get().await.expect("answered").expect_err("closed").code,
            ErrorCode::Unavailable
        );
        assert!(mb.recv().await.is_none());
    }

    #[tokio::test]
    async fn mailbox_draining_serves_queued_then_ends() {
        let mb = Mailbox::new("d", 8, 8, OverflowPolicy::RejectNewest);
        let (e, _r) = env(1);
        mb.push(e);
        mb.start_draining(DaemonError::shutting_down("stopping"));
        let (late, rl) = env(2);
        assert!(!mb.push(late));
        assert_eq!(
            rl.get()
                .await
                .expect("answered")
                .expect_err("draining")
                .code,
            ErrorCode::ShuttingDown
        );
        assert!(mb.recv().await.is_some());
        assert!(mb.recv().await.is_none());
    }

    #[tokio::test]
    async fn mailbox_sweep_takes_out_what_is_past_its_deadline_and_finds_the_next() {
        let mb = Mailbox::new("d", 8, 8, OverflowPolicy::RejectNewest).with_concurrency(1);
        let t0 = Instant::now();
        let (late, _rl) = env_at(1, t0 + Duration::from_millis(5));
        let (taken, _rt) = env_at(2, t0 + Duration::from_millis(7));
        let (answered, _ra) = env_at(3, t0 + Duration::from_millis(1));
        let (later, _rr) = env_at(4, t0 + Duration::from_millis(20));
        mb.push(taken);
        mb.push(answered);
        mb.push(late);
        mb.push(later);
        let taken = mb.recv().await.expect("taken");
        mb.recv()
            .await
            .expect("answered")
            .reply
            .send(Ok(Value::Null));
        let s = mb.sweep(t0 + Duration::from_millis(10));
        assert_eq!(s.queued.len(), 1, "the queued request past its deadline");
        assert_eq!(s.queued[0].request.params, Value::from(1));
        assert_eq!(s.in_flight.len(), 1, "the taken, unanswered request");
        assert!(Arc::ptr_eq(&s.in_flight[0], taken.reply.cell()));
        assert_eq!(s.next, Some(t0 + Duration::from_millis(20)));
        assert_eq!(s.depth, 2);
        assert_eq!(mb.counters.expired.load(Ordering::Relaxed), 1);
        let again = mb.sweep(t0 + Duration::from_millis(10));
        assert!(again.queued.is_empty() && again.in_flight.is_empty());
    }

    #[tokio::test]
    async fn mailbox_in_flight_list_stays_bounded_by_twice_the_concurrency() {
        let mb = Mailbox::new("d", 8, 8, OverflowPolicy::RejectNewest).with_concurrency(2);
        for n in 0..100 {
            let (e, _r) = env(n);
            mb.push(e);
            mb.recv().await.expect("one").reply.send(Ok(Value::Null));
            assert!(mb.inner.lock().in_flight.len() <= 4);
        }
    }

    #[tokio::test]
    async fn mailbox_recv_wakes_on_push() {
        let mb = std::sync::Arc::new(Mailbox::new("d", 8, 8, OverflowPolicy::RejectNewest));
        let m2 = mb.clone();
        let t = tokio::spawn(async move { m2.recv().await.map(|e| e.request.params) });
        tokio::task::yield_now().await;
        let (e, _r) = env(7);
        mb.push(e);
        assert_eq!(t.await.expect("join"), Some(Value::from(7)));
    }
}
