//! Per-daemon registry of named intervals and timeouts.
//!
//! Why: the original system leaked memory and CPU through `setInterval`s nobody remembered to
//! clear. Here every timer belongs to a [`Timers`] registry owned by one daemon, has a name
//! (re-registering a name replaces the old timer instead of stacking a second one), is bounded in
//! number, and is cancelled when the registry is dropped. [`live_timer_tasks`] counts timer tasks
//! process-wide so shutdown tests can prove nothing is left running.
//!
//! Semantics the runtime relies on:
//! * the first tick of an interval fires after one `period`, **not** immediately (unlike
//!   `tokio::time::interval`);
//! * missed ticks are skipped ([`MissedTickBehavior::Skip`]): a slow tick never causes a burst of
//!   catch-up ticks;
//! * ticks of one timer never overlap: the next tick waits for the previous tick future;
//! * cancelling (by name, [`Timers::cancel_all`], [`Timers::shutdown`] or drop) aborts the task,
//!   dropping an in-progress tick future at its next await point;
//! * a tick is a unit of work: a tick that panics is caught at the tick (a one-shot timeout's
//!   future likewise), reported to the registry's [`TickPanicHook`] (the runtime's counts it in
//!   the daemon's `panics` and logs it with the daemon's name; without a hook it is logged with
//!   the timer's name), and the timer keeps running: the next tick fires as scheduled. No other
//!   timer is affected. The registry forgets finished timers lazily.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Spawns a timer future; lets the runtime wrap it (e.g. to measure poll time per daemon).
pub type Spawner =
    Arc<dyn Fn(Pin<Box<dyn Future<Output = ()> + Send>>) -> JoinHandle<()> + Send + Sync>;

/// Called with the timer's name and the panic message when a tick panics (the tick's panic is
/// caught; the timer keeps running).
pub type TickPanicHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Default bound on timers per registry.
pub const DEFAULT_MAX_TIMERS: usize = 1024;

static LIVE_TIMER_TASKS: AtomicUsize = AtomicUsize::new(0);

/// Number of timer tasks alive in the process (all registries). A task counts from its
/// registration until its future is dropped (finished, cancelled or its runtime shut down).
pub fn live_timer_tasks() -> usize {
    LIVE_TIMER_TASKS.load(Ordering::Acquire)
}

struct LiveGuard;

impl LiveGuard {
    fn new() -> Self {
        LIVE_TIMER_TASKS.fetch_add(1, Ordering::AcqRel);
        LiveGuard
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        LIVE_TIMER_TASKS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Errors of [`Timers`] registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimerError {
    /// The registry already holds `max` timers (replacing an existing name is always allowed).
    #[error("too many timers: cannot register {name:?}, limit is {max}")]
    TooMany {
        /// The timer that was refused.
        name: String,
        /// The registry's limit.
        max: usize,
    },
    /// An interval period of zero was requested.
    #[error("timer {name:?} has a zero period")]
    ZeroPeriod {
        /// The timer that was refused.
        name: String,
    },
}

struct Entry {
    id: u64,
    handle: JoinHandle<()>,
}

type Map = Mutex<HashMap<String, Entry>>;

/// A per-owner registry of named timers. See the [module docs](self).
pub struct Timers {
    map: Arc<Map>,
    spawner: Option<Spawner>,
    on_panic: Option<TickPanicHook>,
    max: usize,
    next_id: AtomicU64,
}

impl fmt::Debug for Timers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("names", &self.names())
            .field("max", &self.max)
            .field("custom_spawner", &self.spawner.is_some())
            .field("panic_hook", &self.on_panic.is_some())
            .finish()
    }
}

impl Default for Timers {
    fn default() -> Self {
        Self::new()
    }
}

impl Timers {
    /// A registry spawning with `tokio::spawn` (must be used inside a tokio runtime).
    pub fn new() -> Self {
        Self {
            map: Arc::new(Mutex::new(HashMap::new())),
            spawner: None,
            on_panic: None,
            max: DEFAULT_MAX_TIMERS,
            next_id: AtomicU64::new(0),
        }
    }

    /// A registry spawning timer futures through `spawner`.
    ///
    /// The spawner is called with the registry's lock held: it must only spawn, never call
    /// back into this `Timers`.
    pub fn with_spawner(spawner: Spawner) -> Self {
        let mut timers = Self::new();
        timers.spawner = Some(spawner);
        timers
    }

    /// Reports every panicking tick to `hook` (see the [module docs](self)).
    #[must_use]
    pub fn on_tick_panic(mut self, hook: TickPanicHook) -> Self {
        self.on_panic = Some(hook);
        self
    }

    /// Sets the maximum number of timers (default [`DEFAULT_MAX_TIMERS`]).
    #[must_use]
    pub fn with_max_timers(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Registers (or replaces) interval `name`: `tick` runs every `period`, first after one
    /// `period`; missed ticks are skipped; ticks never overlap; a panicking tick is reported
    /// and the next one still fires.
    pub fn register_interval<F, Fut>(
        &self,
        name: impl Into<String>,
        period: Duration,
        mut tick: F,
    ) -> Result<(), TimerError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        if period.is_zero() {
            return Err(TimerError::ZeroPeriod { name });
        }
        let guard = self.tick_guard(&name);
        self.register(name, move |_| async move {
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                // Calling `tick` happens inside the guarded future too: a panicking closure is
                // a panicking tick.
                guard.run(async { tick().await }).await;
            }
        })
    }

    /// Registers (or replaces) one-shot timeout `name`: `fut` runs once after `delay`, then the
    /// timer is removed from the registry (also when `fut` panics, which is reported like a
    /// panicking tick).
    pub fn register_timeout<Fut>(
        &self,
        name: impl Into<String>,
        delay: Duration,
        fut: Fut,
    ) -> Result<(), TimerError>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let guard = self.tick_guard(&name);
        self.register(name, move |remove| async move {
            tokio::time::sleep(delay).await;
            guard.run(fut).await;
            remove.run();
        })
    }

    fn tick_guard(&self, name: &str) -> TickGuard {
        TickGuard {
            timer: name.to_owned(),
            hook: self.on_panic.clone(),
        }
    }

    fn register<M, Fut>(&self, name: String, make: M) -> Result<(), TimerError>
    where
        M: FnOnce(SelfRemove) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut map = self.map.lock();
        map.retain(|_, e| !e.handle.is_finished());
        if !map.contains_key(&name) && map.len() >= self.max {
            return Err(TimerError::TooMany {
                name,
                max: self.max,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let remove = SelfRemove {
            map: Arc::downgrade(&self.map),
            name: name.clone(),
            id,
        };
        let guard = LiveGuard::new();
        let body = make(remove);
        let fut: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            let _guard = guard;
            body.await;
        });
        // Spawned while holding the lock so a fast timeout cannot try to remove itself
        // before it is inserted.
        let handle = match &self.spawner {
            Some(spawn) => spawn(fut),
            None => tokio::spawn(fut),
        };
        if let Some(old) = map.insert(name, Entry { id, handle }) {
            old.handle.abort();
        }
        Ok(())
    }

    /// Cancels timer `name`; returns whether it existed (and had not finished).
    pub fn cancel(&self, name: &str) -> bool {
        match self.map.lock().remove(name) {
            Some(e) => {
                let live = !e.handle.is_finished();
                e.handle.abort();
                live
            }
            None => false,
        }
    }

    /// Cancels every timer without waiting for the tasks to end.
    pub fn cancel_all(&self) {
        for (_, e) in self.map.lock().drain() {
            e.handle.abort();
        }
    }

    /// Cancels every timer and waits until all their tasks have ended.
    pub async fn shutdown(&self) {
        let entries: Vec<Entry> = self.map.lock().drain().map(|(_, e)| e).collect();
        for e in &entries {
            e.handle.abort();
        }
        for e in entries {
            // Cancelled (or panicked) is the expected outcome; nothing to report.
            let _ = e.handle.await;
        }
    }

    /// Names of the registered, still-running timers (sorted).
    pub fn names(&self) -> Vec<String> {
        let mut map = self.map.lock();
        map.retain(|_, e| !e.handle.is_finished());
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        names
    }

    /// Number of registered, still-running timers.
    pub fn len(&self) -> usize {
        let mut map = self.map.lock();
        map.retain(|_, e| !e.handle.is_finished());
        map.len()
    }

    /// Whether no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// Runs one tick with its panic caught and reported.
struct TickGuard {
    timer: String,
    hook: Option<TickPanicHook>,
}

impl TickGuard {
    async fn run<F: Future<Output = ()>>(&self, tick: F) {
        if let Err(p) = AssertUnwindSafe(tick).catch_unwind().await {
            let msg = crate::error::panic_message(&*p);
            match &self.hook {
                Some(hook) => hook(&self.timer, &msg),
                None => {
                    tracing::error!(timer = %self.timer, panic = %msg, "Timer tick panicked; the timer keeps running");
                }
            }
        }
    }
}

/// Lets a finished timeout remove its own entry (only if it was not replaced meanwhile).
struct SelfRemove {
    map: Weak<Map>,
    name: String,
    id: u64,
}

impl SelfRemove {
    fn run(self) {
        if let Some(map) = self.map.upgrade() {
            let mut map = map.lock();
            if map.get(&self.name).is_some_and(|e| e.id == self.id) {
                map.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The unbounded channels below only record tick instants of timers these tests stop after
    //! a handful of ticks (paused time), so they cannot grow.
    use super::*;
    use tokio::sync::mpsc;

    /// Tests run in parallel threads and share the global live-task counter, so every test
    /// that creates timers holds this lock (crate-wide: other modules' tests create none).
    pub(crate) static COUNTER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ticker(tx: mpsc::UnboundedSender<Instant>) -> impl FnMut() -> std::future::Ready<()> {
        move || {
            let _ = tx.send(Instant::now());
            std::future::ready(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_at_the_period_first_after_one_period() {
        let _l = COUNTER_LOCK.lock().await;
        let t = Timers::new();
        let start = Instant::now();
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx, mut rx) = mpsc::unbounded_channel();
        t.register_interval("tick", ms(100), ticker(tx))
            .expect("register");
        for i in 1..=5u32 {
            let at = rx.recv().await.expect("tick");
            assert_eq!(at - start, ms(100) * i);
        }
        assert_eq!(t.names(), vec!["tick".to_owned()]);
        assert_eq!(t.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn replace_by_name_cancels_the_old_timer() {
        let _l = COUNTER_LOCK.lock().await;
        let base = live_timer_tasks();
        let t = Timers::new();
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx_a, mut rx_a) = mpsc::unbounded_channel();
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx_b, mut rx_b) = mpsc::unbounded_channel();
        t.register_interval("x", ms(10), ticker(tx_a))
            .expect("register");
        rx_a.recv().await.expect("first a tick");
        t.register_interval("x", ms(10), ticker(tx_b))
            .expect("replace");
        assert_eq!(t.len(), 1);
        rx_b.recv().await.expect("b ticks");
        rx_b.recv().await.expect("b ticks again");
        // The old timer's task was aborted, so its sender is dropped and no tick was queued.
        assert_eq!(rx_a.recv().await, None);
        assert_eq!(live_timer_tasks(), base + 1);
        t.shutdown().await;
        assert_eq!(live_timer_tasks(), base);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_a_timer() {
        let _l = COUNTER_LOCK.lock().await;
        let t = Timers::new();
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx, mut rx) = mpsc::unbounded_channel();
        t.register_interval("x", ms(10), ticker(tx))
            .expect("register");
        rx.recv().await.expect("tick");
        assert!(t.cancel("x"));
        assert!(!t.cancel("x"));
        assert!(!t.cancel("never"));
        assert_eq!(rx.recv().await, None);
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn missed_ticks_are_skipped_and_ticks_never_overlap() {
        let _l = COUNTER_LOCK.lock().await;
        let t = Timers::new();
        let start = Instant::now();
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicUsize::new(0));
        let mut n = 0u32;
        t.register_interval("slow", ms(10), move || {
            n += 1;
            let slow = n == 1;
            let tx = tx.clone();
            let running = Arc::clone(&running);
            async move {
                assert_eq!(
                    running.fetch_add(1, Ordering::SeqCst),
                    0,
                    "ticks overlapped"
                );
                let _ = tx.send(Instant::now() - start);
                if slow {
                    tokio::time::sleep(ms(25)).await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .expect("register");
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(rx.recv().await.expect("tick"));
        }
        // Tick 1 at 10ms runs until 35ms; the 20ms and 30ms deadlines were missed: one late
        // tick fires at 35ms (not a burst of two), then the schedule realigns to 40ms, 50ms.
        assert_eq!(got, vec![ms(10), ms(35), ms(40), ms(50)]);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_fires_once_and_removes_itself() {
        let _l = COUNTER_LOCK.lock().await;
        let base = live_timer_tasks();
        let t = Timers::new();
        let start = Instant::now();
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx, mut rx) = mpsc::unbounded_channel();
        t.register_timeout("once", ms(50), async move {
            let _ = tx.send(Instant::now());
        })
        .expect("register");
        assert_eq!(t.names(), vec!["once".to_owned()]);
        let at = rx.recv().await.expect("fired");
        assert_eq!(at - start, ms(50));
        // The task ends (and drops the sender) right after sending.
        assert_eq!(rx.recv().await, None);
        tokio::time::timeout(Duration::from_secs(5), async {
            while live_timer_tasks() != base {
                tokio::time::sleep(ms(1)).await;
            }
        })
        .await
        .expect("task ended");
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn drop_cancels_everything_and_live_count_returns() {
        let _l = COUNTER_LOCK.lock().await;
        let base = live_timer_tasks();
        let t = Timers::new();
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..10 {
            t.register_interval(format!("i{i}"), ms(10 + i), ticker(tx.clone()))
                .expect("register");
        }
        t.register_timeout("t", Duration::from_secs(3600), std::future::pending())
            .expect("register");
        drop(tx);
        assert_eq!(t.len(), 11);
        assert_eq!(live_timer_tasks(), base + 11);
        rx.recv().await.expect("some tick");
        drop(t);
        // All tasks are aborted: every sender clone is dropped eventually.
        while rx.recv().await.is_some() {}
        tokio::time::timeout(Duration::from_secs(5), async {
            while live_timer_tasks() != base {
                tokio::time::sleep(ms(1)).await;
            }
        })
        .await
        .expect("all timer tasks ended");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_tasks() {
        let _l = COUNTER_LOCK.lock().await;
        let base = live_timer_tasks();
        let t = Timers::new();
        for i in 0..5 {
            t.register_interval(format!("i{i}"), ms(5), || async {})
                .expect("register");
        }
        assert_eq!(live_timer_tasks(), base + 5);
        t.shutdown().await;
        assert_eq!(live_timer_tasks(), base);
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn registering_past_the_cap_or_with_a_zero_period_is_refused() {
        let _l = COUNTER_LOCK.lock().await;
        let t = Timers::new().with_max_timers(2);
        t.register_interval("a", ms(10), || async {}).expect("a");
        t.register_interval("b", ms(10), || async {}).expect("b");
        assert_eq!(
            t.register_interval("c", ms(10), || async {}),
            Err(TimerError::TooMany {
                name: "c".into(),
                max: 2
            })
        );
        // Replacing an existing name is fine at the cap.
        t.register_interval("a", ms(20), || async {})
            .expect("replace a");
        assert_eq!(
            t.register_interval("z", Duration::ZERO, || async {}),
            Err(TimerError::ZeroPeriod { name: "z".into() })
        );
        t.cancel("b");
        t.register_timeout("c", ms(1), async {})
            .expect("c fits now");
    }

    #[tokio::test(start_paused = true)]
    async fn custom_spawner_is_used() {
        let _l = COUNTER_LOCK.lock().await;
        let spawned = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&spawned);
        let spawner: Spawner = Arc::new(move |fut| {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(fut)
        });
        let t = Timers::with_spawner(spawner);
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx, mut rx) = mpsc::unbounded_channel();
        t.register_interval("x", ms(10), ticker(tx))
            .expect("register");
        rx.recv().await.expect("tick");
        assert_eq!(spawned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn panicking_tick_is_reported_and_the_timer_keeps_ticking_and_no_other_is_affected() {
        let _l = COUNTER_LOCK.lock().await;
        // Unbounded is fine here: it records a handful of reports of a timer this test stops; it cannot grow.
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let hook: TickPanicHook = Arc::new(move |timer, msg| {
            let _ = ptx.send((timer.to_owned(), msg.to_owned(), Instant::now()));
        });
        let t = Timers::new().on_tick_panic(hook);
        let start = Instant::now();
        // Unbounded is fine here: it records a handful of ticks of a timer this test stops; it cannot grow.
        let (tx, mut rx) = mpsc::unbounded_channel();
        t.register_interval("bad", ms(10), || async { panic!("tick failed") })
            .expect("register");
        t.register_interval("good", ms(10), ticker(tx))
            .expect("register");
        t.register_timeout("once", ms(15), async { panic!("timeout failed") })
            .expect("register");
        let mut reports = Vec::new();
        for _ in 0..4 {
            reports.push(prx.recv().await.expect("reported"));
        }
        let at = |name: &str| -> Vec<Duration> {
            reports
                .iter()
                .filter(|r| r.0 == name)
                .map(|r| r.2 - start)
                .collect()
        };
        // The bad interval panicked at 10, 20 and 30 ms: every tick ran, on schedule.
        assert_eq!(at("bad"), vec![ms(10), ms(20), ms(30)]);
        assert_eq!(at("once"), vec![ms(15)]);
        assert!(reports.iter().any(|r| r.1 == "tick failed"));
        assert!(reports.iter().any(|r| r.1 == "timeout failed"));
        rx.recv().await.expect("good ticks");
        // The panicking timeout still removed itself; both intervals are alive.
        assert_eq!(t.names(), vec!["bad".to_owned(), "good".to_owned()]);
        t.shutdown().await;
    }
}
