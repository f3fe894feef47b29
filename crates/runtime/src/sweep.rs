//! The deadline sweeper: one task per router answers `timeout` to every request whose deadline
//! passes unanswered, queued or in flight, with no timer entry per request (ADR 0011). It also
//! keeps the deadlines of daemons' start attempts ([`Sweep::watch`]).
//!
//! It sleeps until the earliest deadline it knows of (`hint`), then sweeps every mailbox:
//! what is past its deadline is answered (a running handler is woken and dropped by its
//! daemon's serve loop), and the earliest deadline left becomes the new `hint`. A caller that
//! queues a request reads `hint` once: a deadline at or after it needs nothing, because the
//! sweeper wakes by then and sweeps again; only an earlier deadline takes the `gate` and wakes
//! the sweeper. With the usual deadlines (seconds, all alike) a new deadline is later than the
//! pending ones, so the ask path costs one atomic load here.
//!
//! Why nothing is missed: the sweeper sets `hint` to "never" under the `gate` before it
//! locks the first mailbox, and publishes the new `hint` under the `gate` after the last. A
//! request queued in a mailbox already swept was pushed after the sweeper released that
//! mailbox's lock, so its caller reads "never" or the new `hint`: either way it takes the
//! slow path (or its deadline is not before the new `hint`), and under the `gate`, which
//! waits for the sweep to finish, lowers `hint` and wakes the sweeper.
//!
//! The sweeper is a tokio task of the runtime the router is first used in, so paused time in
//! tests moves it like any timer. It ends when the router is dropped ([`Sweep::close`]).

use crate::error::DaemonError;
use crate::lifecycle::Status;
use crate::mailbox::Mailbox;
use crate::reply::Cell;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// `hint` when nothing is pending.
const NEVER: u64 = u64::MAX;

/// The sweeper's shared state (the router holds one).
#[derive(Debug)]
pub(crate) struct Sweep {
    /// What `hint` counts from.
    base: Instant,
    /// Nanoseconds after `base` of the earliest deadline the sweeper will wake for.
    hint: AtomicU64,
    /// Held by the sweeper through a sweep and by a caller that lowers `hint`.
    gate: Mutex<()>,
    notify: Notify,
    spawned: AtomicBool,
    closed: AtomicBool,
    /// Sweeps so far (for tests and reports).
    sweeps: AtomicU64,
    /// Every daemon's address and status, in slot order. Emptied by [`Sweep::close`], so a
    /// dropped router frees its daemons at once, not when the sweeper's task next runs.
    mailboxes: Mutex<Vec<(Arc<Mailbox>, watch::Receiver<Status>)>>,
    /// Deadlines of work outside any mailbox (daemons' start attempts), see [`Sweep::watch`].
    extra: Mutex<Extra>,
}

/// Deadline cells outside the mailboxes. Settled cells are dropped by every sweep and, when the
/// list reaches `collect_at`, by the next [`Sweep::watch`] (then `collect_at` becomes twice what
/// is left, at least 64: amortised O(1) per watch, however many daemons start at once).
#[derive(Debug)]
struct Extra {
    cells: Vec<Arc<Cell>>,
    collect_at: usize,
}

impl Sweep {
    pub(crate) fn new(mailboxes: Vec<(Arc<Mailbox>, watch::Receiver<Status>)>) -> Self {
        Sweep {
            mailboxes: Mutex::new(mailboxes),
            base: Instant::now(),
            hint: AtomicU64::new(NEVER),
            gate: Mutex::new(()),
            notify: Notify::new(),
            spawned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            sweeps: AtomicU64::new(0),
            extra: Mutex::new(Extra {
                cells: Vec::new(),
                collect_at: 64,
            }),
        }
    }

    /// Keep `cell`'s deadline too: at it the sweeper expires the cell with `timeout`, which ends
    /// an [`UntilAnswered`](crate::reply::UntilAnswered) around the work (a daemon's start uses
    /// this instead of a tokio timer of its own).
    pub(crate) fn watch(self: &Arc<Self>, cell: Arc<Cell>) {
        let deadline = cell.deadline;
        {
            let mut x = self.extra.lock();
            if x.cells.len() >= x.collect_at {
                x.cells.retain(|c| !c.is_done());
                x.collect_at = (x.cells.len() * 2).max(64);
            }
            x.cells.push(cell);
        }
        self.note(deadline);
    }

    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(NEVER - 1)
            .min(NEVER - 1)
    }

    fn at(&self, ns: u64) -> Instant {
        self.base + std::time::Duration::from_nanos(ns)
    }

    /// A request with `deadline` was queued (call after it is in the mailbox).
    pub(crate) fn note(self: &Arc<Self>, deadline: Instant) {
        let d = self.ns(deadline);
        if d >= self.hint.load(Ordering::Acquire) {
            return;
        }
        let _gate = self.gate.lock();
        if !self.spawned.load(Ordering::Relaxed) {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                // No runtime, so no caller can be waiting either.
                return;
            };
            rt.spawn(run(self.clone()));
            self.spawned.store(true, Ordering::Relaxed);
        }
        if d < self.hint.load(Ordering::Acquire) {
            self.hint.store(d, Ordering::Release);
            self.notify.notify_one();
        }
    }

    /// The router is going away: the sweeper ends, and what it held is dropped now (every
    /// mailbox and status watch, the start deadlines).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mailboxes = std::mem::take(&mut *self.mailboxes.lock());
        let cells = std::mem::take(&mut self.extra.lock().cells);
        drop((mailboxes, cells));
        self.notify.notify_one();
    }

    /// How many sweeps ran.
    pub(crate) fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::Relaxed)
    }
}

async fn run(sweep: Arc<Sweep>) {
    loop {
        let notified = sweep.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if sweep.closed.load(Ordering::Acquire) {
            return;
        }
        let hint = sweep.hint.load(Ordering::Acquire);
        if hint == NEVER {
            notified.await;
            continue;
        }
        let at = sweep.at(hint);
        if Instant::now() < at {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = &mut notified => continue,
            }
        }
        sweep_all(&sweep);
    }
}

/// One sweep over every mailbox (see the module docs for why it misses nothing).
fn sweep_all(sweep: &Sweep) {
    let _gate = sweep.gate.lock();
    sweep.hint.store(NEVER, Ordering::Release);
    let now = Instant::now();
    let mut next = NEVER;
    let mailboxes = sweep.mailboxes.lock();
    for (mailbox, status) in mailboxes.iter() {
        let swept = mailbox.sweep(now);
        if let Some(n) = swept.next {
            next = next.min(sweep.ns(n));
        }
        if swept.queued.is_empty() && swept.in_flight.is_empty() {
            continue;
        }
        let state = status.borrow().state;
        let timeout = |ms: u128| {
            DaemonError::timeout(format!(
                "no answer from daemon '{}' within {ms} ms (state: {state}, {} queued)",
                mailbox.daemon(),
                swept.depth
            ))
        };
        for env in swept.queued {
            let ms = env.reply.cell().timeout.as_millis();
            env.fail(timeout(ms));
        }
        for cell in swept.in_flight {
            cell.expire(timeout(cell.timeout.as_millis()));
        }
    }
    drop(mailboxes);
    let mut expired = Vec::new();
    sweep.extra.lock().cells.retain(|c| {
        if c.is_done() {
            false
        } else if c.deadline <= now {
            expired.push(c.clone());
            false
        } else {
            next = next.min(sweep.ns(c.deadline));
            true
        }
    });
    for cell in expired {
        cell.expire(DaemonError::timeout(format!(
            "deadline of {} ms passed",
            cell.timeout.as_millis()
        )));
    }
    sweep.hint.store(next, Ordering::Release);
    sweep.sweeps.fetch_add(1, Ordering::Relaxed);
}
