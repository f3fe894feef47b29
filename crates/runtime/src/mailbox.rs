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
use crate::spec::OverflowPolicy;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// A request as a daemon sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Full command name, e.g. `data/list`.
    pub command: String,
    /// Parameters (an object; `{}` when none were given).
    pub params: Value,
    /// When the caller stops waiting. The runtime drops the handler's future at this instant.
    pub deadline: Instant,
}

/// Where the answer goes.
pub(crate) type ReplyTx = oneshot::Sender<Result<Value, DaemonError>>;

/// A queued request and its reply slot.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) request: Request,
    pub(crate) reply: ReplyTx,
    pub(crate) enqueued: Instant,
}

impl Envelope {
    /// Answer with an error (the caller may be gone; that is fine).
    pub(crate) fn fail(self, err: DaemonError) {
        let _ = self.reply.send(Err(err));
    }
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
    gate: Gate,
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
    notify: Notify,
    startup_cap: usize,
    ready_cap: usize,
    overflow: OverflowPolicy,
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
                gate: Gate::Open { ready: false },
            }),
            notify: Notify::new(),
            startup_cap,
            ready_cap,
            overflow,
            counters: MailboxCounters::default(),
        }
    }

    /// Queue an envelope. On refusal the envelope has already been answered.
    pub(crate) fn push(&self, env: Envelope) -> bool {
        let mut evicted = None;
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
            self.counters.peak_depth.fetch_max(depth, Ordering::Relaxed);
            if let Some(old) = evicted {
                drop(inner);
                old.fail(self.overloaded(ready, cap, "dropped as the oldest"));
            }
        }
        self.notify.notify_one();
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
    pub(crate) async fn recv(&self) -> Option<Envelope> {
        loop {
            // Register interest before checking, so a push between the check and the await
            // is not missed.
            let notified = self.notify.notified();
            {
                let mut inner = self.inner.lock();
                if let Some(env) = inner.queue.pop_front() {
                    return Some(env);
                }
                match &inner.gate {
                    Gate::Open { .. } => {}
                    Gate::Draining(e) => {
                        let e = e.clone();
                        inner.gate = Gate::Closed(e);
                        return None;
                    }
                    Gate::Closed(_) => return None,
                }
            }
            notified.await;
        }
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
        drop(inner);
        // Wake a waiting receiver so it sees the gate.
        self.notify.notify_one();
    }

    /// Refuse everything with `err` and return what was queued, for the caller to answer.
    pub(crate) fn close(&self, err: DaemonError) -> Vec<Envelope> {
        let mut inner = self.inner.lock();
        inner.gate = Gate::Closed(err);
        let drained: Vec<Envelope> = inner.queue.drain(..).collect();
        drop(inner);
        self.notify.notify_one();
        drained
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
    use daemonhost_protocol::ErrorCode;
    use std::time::Duration;

    fn env(n: u64) -> (Envelope, oneshot::Receiver<Result<Value, DaemonError>>) {
        let (tx, rx) = oneshot::channel();
        (
            Envelope {
                request: Request {
                    command: "t".into(),
                    params: Value::from(n),
                    deadline: Instant::now() + Duration::from_secs(10),
                },
                reply: tx,
                enqueued: Instant::now(),
            },
            rx,
        )
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
        let err = rc.await.expect("answered").expect_err("overloaded");
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
        let err = ra.await.expect("answered").expect_err("evicted");
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
            r.await.expect("answered").expect_err("closed").code,
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
            rl.await.expect("answered").expect_err("draining").code,
            ErrorCode::ShuttingDown
        );
        assert!(mb.recv().await.is_some());
        assert!(mb.recv().await.is_none());
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
