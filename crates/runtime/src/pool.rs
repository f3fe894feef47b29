//! A dedicated, bounded CPU pool for daemon work that would otherwise block the async runtime.
//!
//! Why not just `tokio::task::spawn_blocking`? The blocking pool grows up to 512 threads: on a
//! 2-core host a burst of CPU-bound work would oversubscribe the cores, starve the async worker
//! threads (the coordinator, timers, I/O) and balloon memory with thread stacks. [`CpuPool`] runs
//! CPU work on a small rayon pool (`available_parallelism - 1` threads by default, leaving one
//! core for the async runtime) with a hard bound on queued + running jobs.
//!
//! Submission never fails: when the pool is saturated (`pending == max_pending`), shut down or
//! unavailable (it could not be built, or was configured with `threads: 0`), the job falls back to
//! `spawn_blocking` and the fallback is counted in [`PoolStats`]. The decision is made at
//! submission time and reported by [`PoolTask::placement`].
//!
//! Panics in jobs are caught on both paths and surface as [`PoolError::Panicked`]: a panic that
//! escaped into a rayon worker with no panic handler would abort the whole process.
//!
//! The pool is built **eagerly** in [`CpuPool::new`] so that thread-creation failures show up at
//! startup (logged, then every job falls back) rather than at the first job under load.

use crate::error::panic_message;
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::oneshot;

/// Sizing of a [`CpuPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Number of rayon worker threads. `0` means "no pool": every job runs via the
    /// `spawn_blocking` fallback (useful in tests).
    pub threads: usize,
    /// Bound on jobs queued + running on the pool; beyond it jobs fall back to `spawn_blocking`.
    pub max_pending: usize,
}

impl PoolConfig {
    /// Config with `threads` workers and the default bound of `64 * threads` pending jobs.
    pub fn with_threads(threads: usize) -> Self {
        Self {
            threads,
            max_pending: 64 * threads,
        }
    }
}

impl Default for PoolConfig {
    /// `threads = max(available_parallelism - 1, 1)`, `max_pending = 64 * threads`.
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(NonZeroUsize::get)
            .unwrap_or(1);
        Self::with_threads(cores.saturating_sub(1).max(1))
    }
}

/// Where a job was placed at submission time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// On the dedicated rayon pool.
    Pool,
    /// On tokio's blocking pool (fallback: saturated, shut down or no pool).
    Blocking,
}

/// Why a pool job produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The job panicked; the panic was caught.
    #[error("cpu job panicked: {message}")]
    Panicked {
        /// The panic payload if it was a string, otherwise a placeholder.
        message: String,
    },
    /// The job was dropped before producing a result (e.g. the runtime shut down).
    #[error("cpu job was cancelled before completing")]
    Cancelled,
}

/// Counters of a [`CpuPool`], cumulative since creation (except `pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Configured worker threads (0 when no pool is available).
    pub threads: usize,
    /// Jobs currently queued or running on the pool.
    pub pending: usize,
    /// Of `pending`, the jobs running now (`pending - running` are queued).
    pub running: usize,
    /// Jobs finished on the pool (including panicked ones).
    pub completed_pool: u64,
    /// Jobs finished on the blocking fallback (including panicked ones).
    pub completed_blocking: u64,
    /// Jobs sent to the fallback because the pool was saturated.
    pub fallbacks_saturated: u64,
    /// Jobs sent to the fallback because the pool was shut down or unavailable.
    pub fallbacks_unavailable: u64,
    /// Jobs that panicked (on either path).
    pub panics: u64,
}

/// A cloneable handle to a bounded CPU pool. See the [module docs](self).
#[derive(Clone)]
pub struct CpuPool {
    inner: Arc<Inner>,
}

struct Inner {
    pool: RwLock<Option<rayon::ThreadPool>>,
    threads: usize,
    max_pending: usize,
    pending: AtomicUsize,
    /// Pool jobs running now (the rest of `pending` is queued).
    running: AtomicUsize,
    completed_pool: AtomicU64,
    completed_blocking: AtomicU64,
    fallbacks_saturated: AtomicU64,
    fallbacks_unavailable: AtomicU64,
    panics: AtomicU64,
}

impl fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuPool")
            .field("max_pending", &self.inner.max_pending)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for CpuPool {
    fn default() -> Self {
        Self::new(PoolConfig::default())
    }
}

impl CpuPool {
    /// Builds the pool eagerly. If the rayon pool cannot be built (or `threads == 0`) the
    /// `CpuPool` still works, with every job on the `spawn_blocking` fallback.
    pub fn new(config: PoolConfig) -> Self {
        let pool = if config.threads == 0 {
            None
        } else {
            match rayon::ThreadPoolBuilder::new()
                .num_threads(config.threads)
                .thread_name(|i| format!("dh-cpu-{i}"))
                // Belt and braces: jobs catch their own panics, this only guards against a
                // panic escaping our wrapper, which would otherwise abort the process.
                .panic_handler(|_| tracing::error!("panic escaped a cpu pool job"))
                .build()
            {
                Ok(pool) => Some(pool),
                Err(error) => {
                    tracing::warn!(%error, threads = config.threads,
                        "cpu pool could not be built; all cpu jobs use spawn_blocking");
                    None
                }
            }
        };
        let threads = if pool.is_some() { config.threads } else { 0 };
        Self {
            inner: Arc::new(Inner {
                pool: RwLock::new(pool),
                threads,
                max_pending: config.max_pending,
                pending: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                completed_pool: AtomicU64::new(0),
                completed_blocking: AtomicU64::new(0),
                fallbacks_saturated: AtomicU64::new(0),
                fallbacks_unavailable: AtomicU64::new(0),
                panics: AtomicU64::new(0),
            }),
        }
    }

    /// Runs `f` on the pool, or on `spawn_blocking` if the pool is saturated or unavailable.
    ///
    /// Dropping the returned [`PoolTask`] does not cancel `f` (CPU work cannot be interrupted);
    /// its result is discarded. Outside a tokio runtime the fallback runs `f` inline on the
    /// calling thread.
    pub fn spawn<F, R>(&self, f: F) -> PoolTask<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let guard = self.inner.pool.read();
        let Some(pool) = guard.as_ref() else {
            drop(guard);
            self.inner
                .fallbacks_unavailable
                .fetch_add(1, Ordering::Relaxed);
            return self.spawn_fallback(f, tx, rx);
        };
        let max = self.inner.max_pending;
        let reserved = self
            .inner
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < max).then_some(p + 1)
            })
            .is_ok();
        if !reserved {
            drop(guard);
            self.inner
                .fallbacks_saturated
                .fetch_add(1, Ordering::Relaxed);
            return self.spawn_fallback(f, tx, rx);
        }
        // Released when the job ends, or if the job were ever dropped without running.
        let slot = PendingSlot(Arc::clone(&self.inner));
        pool.spawn(move || {
            slot.0.running.fetch_add(1, Ordering::AcqRel);
            let result = run_caught(f, &slot.0.panics);
            slot.0.running.fetch_sub(1, Ordering::AcqRel);
            slot.0.completed_pool.fetch_add(1, Ordering::Relaxed);
            drop(slot);
            // The receiver may be gone (task dropped): nothing to do then.
            let _ = tx.send(result);
        });
        PoolTask {
            rx,
            placement: Placement::Pool,
        }
    }

    fn spawn_fallback<F, R>(
        &self,
        f: F,
        tx: oneshot::Sender<Result<R, PoolError>>,
        rx: oneshot::Receiver<Result<R, PoolError>>,
    ) -> PoolTask<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let job = move || {
            let result = run_caught(f, &inner.panics);
            inner.completed_blocking.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(result);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                // Detached: the result travels through the oneshot.
                drop(handle.spawn_blocking(job));
            }
            Err(_) => job(),
        }
        PoolTask {
            rx,
            placement: Placement::Blocking,
        }
    }

    /// Stops accepting pool work: later spawns fall back to `spawn_blocking`. Jobs already
    /// queued still run; the worker threads exit once they are done. Idempotent.
    pub fn shutdown(&self) {
        let pool = self.inner.pool.write().take();
        drop(pool);
    }

    /// Whether the rayon pool is available (not shut down, built, `threads > 0`).
    pub fn is_available(&self) -> bool {
        self.inner.pool.read().is_some()
    }

    /// A snapshot of the pool counters.
    pub fn stats(&self) -> PoolStats {
        let i = &self.inner;
        PoolStats {
            threads: i.threads,
            pending: i.pending.load(Ordering::Acquire),
            running: i.running.load(Ordering::Acquire),
            completed_pool: i.completed_pool.load(Ordering::Relaxed),
            completed_blocking: i.completed_blocking.load(Ordering::Relaxed),
            fallbacks_saturated: i.fallbacks_saturated.load(Ordering::Relaxed),
            fallbacks_unavailable: i.fallbacks_unavailable.load(Ordering::Relaxed),
            panics: i.panics.load(Ordering::Relaxed),
        }
    }
}

/// One reserved unit of `pending`, released on drop.
struct PendingSlot(Arc<Inner>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run_caught<F, R>(f: F, panics: &AtomicU64) -> Result<R, PoolError>
where
    F: FnOnce() -> R,
{
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        panics.fetch_add(1, Ordering::Relaxed);
        PoolError::Panicked {
            message: panic_message(payload.as_ref()),
        }
    })
}

/// The result of a [`CpuPool::spawn`]: a future of the job's output.
#[must_use = "a PoolTask does nothing useful unless awaited (the job runs regardless)"]
pub struct PoolTask<R> {
    rx: oneshot::Receiver<Result<R, PoolError>>,
    placement: Placement,
}

impl<R> fmt::Debug for PoolTask<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolTask")
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl<R> PoolTask<R> {
    /// Where the job was placed, decided at submission.
    pub fn placement(&self) -> Placement {
        self.placement
    }
}

impl<R> Future for PoolTask<R> {
    type Output = Result<R, PoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(PoolError::Cancelled)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn pool(threads: usize, max_pending: usize) -> CpuPool {
        CpuPool::new(PoolConfig {
            threads,
            max_pending,
        })
    }

    #[tokio::test]
    async fn results_come_back_on_pool() {
        let p = pool(2, 16);
        let tasks: Vec<_> = (0..10u64).map(|i| p.spawn(move || i * i)).collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.placement(), Placement::Pool);
            assert_eq!(t.await, Ok((i * i) as u64));
        }
        let s = p.stats();
        assert_eq!(s.completed_pool, 10);
        assert_eq!(s.pending, 0);
        assert_eq!(s.fallbacks_saturated + s.fallbacks_unavailable, 0);
    }

    #[tokio::test]
    async fn runs_on_named_threads() {
        let p = pool(1, 4);
        let name = p
            .spawn(|| std::thread::current().name().map(str::to_owned))
            .await;
        assert_eq!(name, Ok(Some("dh-cpu-0".to_owned())));
    }

    #[tokio::test]
    async fn panics_are_errors_and_pool_keeps_working() {
        let p = pool(1, 4);
        let e = p.spawn(|| -> u32 { panic!("boom") }).await;
        assert_eq!(
            e,
            Err(PoolError::Panicked {
                message: "boom".into()
            })
        );
        let n = 7;
        let e = p.spawn(move || -> u32 { panic!("formatted {n}") }).await;
        assert_eq!(
            e,
            Err(PoolError::Panicked {
                message: "formatted 7".into()
            })
        );
        let e = p.spawn(|| -> u32 { std::panic::panic_any(42_u8) }).await;
        assert!(
            matches!(e, Err(PoolError::Panicked { message }) if message.contains("non-string"))
        );
        assert_eq!(p.spawn(|| 5).await, Ok(5));
        let s = p.stats();
        assert_eq!(s.panics, 3);
        assert_eq!(s.completed_pool, 4);
        assert_eq!(s.pending, 0);
    }

    #[tokio::test]
    async fn panics_on_fallback_are_errors_too() {
        let p = pool(0, 0);
        let t = p.spawn(|| -> u32 { panic!("fallback boom") });
        assert_eq!(t.placement(), Placement::Blocking);
        assert_eq!(
            t.await,
            Err(PoolError::Panicked {
                message: "fallback boom".into()
            })
        );
        assert_eq!(p.stats().panics, 1);
    }

    #[tokio::test]
    async fn saturation_falls_back_and_is_counted() {
        let p = pool(1, 1);
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let busy = p.spawn(move || {
            let _ = started_tx.send(());
            release_rx.recv().is_ok()
        });
        assert_eq!(busy.placement(), Placement::Pool);
        // The slot is reserved at submission; no need to wait for `started`, but check anyway
        // that the job really occupies the only pool thread.
        tokio::task::spawn_blocking(move || started_rx.recv())
            .await
            .expect("join")
            .expect("started");
        let s = p.stats();
        assert_eq!((s.pending, s.running), (1, 1), "the job runs, none queued");

        let over = p.spawn(|| 2 + 2);
        assert_eq!(over.placement(), Placement::Blocking);
        assert_eq!(over.await, Ok(4));
        let s = p.stats();
        assert_eq!(s.fallbacks_saturated, 1);
        assert_eq!(s.completed_blocking, 1);

        release_tx.send(()).expect("release");
        assert_eq!(busy.await, Ok(true));
        let s = p.stats();
        assert_eq!((s.pending, s.running), (0, 0));
        assert_eq!(s.completed_pool, 1);
        // Capacity is available again.
        let again = p.spawn(|| 1);
        assert_eq!(again.placement(), Placement::Pool);
        assert_eq!(again.await, Ok(1));
    }

    #[tokio::test]
    async fn after_shutdown_spawns_fall_back() {
        let p = pool(1, 4);
        assert!(p.is_available());
        p.shutdown();
        p.shutdown();
        assert!(!p.is_available());
        let t = p.clone().spawn(|| "still works");
        assert_eq!(t.placement(), Placement::Blocking);
        assert_eq!(t.await, Ok("still works"));
        let s = p.stats();
        assert_eq!(s.fallbacks_unavailable, 1);
        assert_eq!(s.completed_blocking, 1);
    }

    #[tokio::test]
    async fn shutdown_lets_queued_pool_jobs_finish() {
        let p = pool(1, 4);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let running = p.spawn(move || release_rx.recv().is_ok());
        let queued = p.spawn(|| 9);
        assert_eq!(queued.placement(), Placement::Pool);
        p.shutdown();
        release_tx.send(()).expect("release");
        assert_eq!(running.await, Ok(true));
        assert_eq!(queued.await, Ok(9));
        let s = p.stats();
        assert_eq!((s.completed_pool, s.pending), (2, 0));
    }

    #[tokio::test]
    async fn zero_threads_means_always_blocking() {
        let p = pool(0, 100);
        for i in 0..5 {
            let t = p.spawn(move || i + 1);
            assert_eq!(t.placement(), Placement::Blocking);
            assert_eq!(t.await, Ok(i + 1));
        }
        let s = p.stats();
        assert_eq!(s.threads, 0);
        assert_eq!(s.fallbacks_unavailable, 5);
        assert_eq!(s.completed_blocking, 5);
    }

    #[test]
    fn fallback_outside_runtime_runs_inline() {
        let p = pool(0, 0);
        let t = p.spawn(|| 3);
        assert_eq!(t.placement(), Placement::Blocking);
        let out = futures_util::FutureExt::now_or_never(t);
        assert_eq!(out, Some(Ok(3)));
    }

    #[test]
    fn default_config_leaves_a_core() {
        let c = PoolConfig::default();
        assert!(c.threads >= 1);
        assert_eq!(c.max_pending, 64 * c.threads);
    }

    #[test]
    fn pool_stats_serialize_with_their_counters() {
        let p = pool(0, 0);
        let v = serde_json::to_value(p.stats()).expect("serialize");
        assert_eq!(v["threads"], 0);
        assert_eq!(v["panics"], 0);
    }
}
