//! Rate limiters and a concurrency semaphore for daemons.
//!
//! Thin wrappers: [`RateLimiter`] and [`KeyedRateLimiter`] sit on `governor` (GCRA, lock-free),
//! [`Semaphore`] on `tokio::sync::Semaphore`. What they add is what we got burnt by:
//!
//! * errors carry a `retry_after` instead of governor's clock-specific `NotUntil`;
//! * the keyed limiter is **bounded**. governor keeps one state per key forever unless
//!   `retain_recent()` runs, so a stream of distinct keys (IPs, client ids) grows memory without
//!   bound. [`KeyedRateLimiter`] has a hard `max_keys` cap: when a *new* key arrives at the cap it
//!   first runs `retain_recent()` (dropping keys whose state is indistinguishable from fresh) and,
//!   if the map is still full, **denies the new key** with [`KeyedRateLimitError::TooManyKeys`].
//!   Keys already tracked keep being served normally. We deliberately do not "reset" at the cap:
//!   a reset would let anyone who can mint keys wipe everyone's limits (fail-open). Denial is
//!   fail-closed and self-healing: a key becomes evictable at most
//!   `quota.burst_size_replenished_in() + quota.replenish_interval()` after its last use. Call [`KeyedRateLimiter::retain_recent`] periodically (e.g. from a
//!   [`Timers`](crate::timers::Timers) interval) to keep the map small.
//!
//! governor uses its own clock, not tokio's (paused) time; tests use
//! [`FakeRelativeClock`] through the `with_clock` constructors.

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use parking_lot::RwLock;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, TryAcquireError};

pub use governor::Quota;
pub use governor::clock::{DefaultClock, FakeRelativeClock};

/// A request was rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited, retry after {retry_after:?}")]
pub struct RateLimited {
    /// Minimum wait before a request can conform.
    pub retry_after: Duration,
}

/// A keyed rate-limit check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyedRateLimitError {
    /// The key is over its quota.
    #[error("rate limited, retry after {retry_after:?}")]
    Limited {
        /// Minimum wait before a request for this key can conform.
        retry_after: Duration,
    },
    /// The key is new and the limiter already tracks `max_keys` active keys.
    #[error("rate limiter tracks too many keys (limit {max_keys}); new key denied")]
    TooManyKeys {
        /// The configured cap.
        max_keys: usize,
    },
}

type Direct<C> =
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A single (unkeyed) GCRA rate limiter.
pub struct RateLimiter<C: Clock = DefaultClock> {
    inner: Direct<C>,
    quota: Quota,
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Allows `n` requests per second, with a burst of `n`.
    pub fn per_second(n: NonZeroU32) -> Self {
        Self::new(Quota::per_second(n))
    }

    /// A limiter with `quota` on the default (monotonic, real-time) clock.
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, DefaultClock::default())
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A limiter on a custom clock (e.g. [`FakeRelativeClock`] in tests).
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        Self {
            inner: governor::RateLimiter::direct_with_clock(quota, clock),
            quota,
        }
    }

    /// The configured quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes one cell if the quota allows it now.
    pub fn check(&self) -> Result<(), RateLimited> {
        self.inner.check().map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(self.inner.clock().now()),
        })
    }

    /// Waits (with `tokio::time::sleep`) until a cell is available, then takes it.
    ///
    /// Meant for real clocks: with a [`FakeRelativeClock`] nobody advances, this never returns.
    pub async fn until_ready(&self) {
        while let Err(RateLimited { retry_after }) = self.check() {
            tokio::time::sleep(retry_after).await;
        }
    }
}

/// governor state store sharing its map with the wrapper, so the wrapper can ask whether a key
/// is already tracked (governor exposes no such query).
struct SharedStore<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        <DashMapStateStore<K> as StateStore>::measure_and_replace(&self.0, key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        <DashMapStateStore<K> as ShrinkableKeyedStateStore<K>>::retain_recent(&self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        <DashMapStateStore<K> as ShrinkableKeyedStateStore<K>>::shrink_to_fit(&self.0);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Keyed<K, C> =
    governor::RateLimiter<K, SharedStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One GCRA limiter per key, with a hard cap on tracked keys. See the [module docs](self) for
/// the cap policy (new keys are denied at the cap after an eviction attempt).
pub struct KeyedRateLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    inner: Keyed<K, C>,
    keys: Arc<DashMapStateStore<K>>,
    /// Readers: checks of already-tracked keys. Writer: admitting new keys and eviction, so the
    /// cap is exact even under concurrency.
    admission: RwLock<()>,
    quota: Quota,
    max_keys: usize,
    denied_new_keys: AtomicU64,
}

impl<K: Hash + Eq + Clone, C: Clock> fmt::Debug for KeyedRateLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("quota", &self.quota)
            .field("keys", &self.keys.len())
            .field("max_keys", &self.max_keys)
            .field("denied_new_keys", &self.denied_new_keys())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// A keyed limiter on the default clock tracking at most `max_keys` keys.
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        Self::with_clock(quota, max_keys, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedRateLimiter<K, C> {
    /// A keyed limiter on a custom clock.
    pub fn with_clock(quota: Quota, max_keys: usize, clock: C) -> Self {
        let keys = Arc::new(DashMapStateStore::<K>::default());
        Self {
            inner: governor::RateLimiter::new(quota, SharedStore(Arc::clone(&keys)), clock),
            keys,
            admission: RwLock::new(()),
            quota,
            max_keys,
            denied_new_keys: AtomicU64::new(0),
        }
    }

    /// Takes one cell for `key`. A new key at the cap triggers eviction of stale keys and is
    /// denied with [`KeyedRateLimitError::TooManyKeys`] if none could be evicted.
    pub fn check_key(&self, key: &K) -> Result<(), KeyedRateLimitError> {
        {
            let _tracked = self.admission.read();
            if self.keys.contains_key(key) {
                return self.limit(key);
            }
        }
        let _admit = self.admission.write();
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_keys {
            self.inner.retain_recent();
            if self.keys.len() >= self.max_keys {
                self.denied_new_keys.fetch_add(1, Ordering::Relaxed);
                return Err(KeyedRateLimitError::TooManyKeys {
                    max_keys: self.max_keys,
                });
            }
        }
        self.limit(key)
    }

    fn limit(&self, key: &K) -> Result<(), KeyedRateLimitError> {
        self.inner
            .check_key(key)
            .map_err(|not_until| KeyedRateLimitError::Limited {
                retry_after: not_until.wait_time_from(self.inner.clock().now()),
            })
    }

    /// Drops keys whose state is indistinguishable from a fresh key. Run it periodically.
    pub fn retain_recent(&self) {
        let _evict = self.admission.write();
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The hard cap on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How many checks were denied because a new key arrived at the cap.
    pub fn denied_new_keys(&self) -> u64 {
        self.denied_new_keys.load(Ordering::Relaxed)
    }

    /// The configured per-key quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }
}

/// A cloneable counting semaphore (`tokio::sync::Semaphore` behind an `Arc`) that remembers its
/// capacity so it can report permits in use. Permits are owned (`'static`), so they can move
/// into spawned tasks.
#[derive(Debug, Clone)]
pub struct Semaphore {
    inner: Arc<tokio::sync::Semaphore>,
    capacity: usize,
}

impl Semaphore {
    /// A semaphore with `permits` permits (at most `tokio::sync::Semaphore::MAX_PERMITS`).
    pub fn new(permits: usize) -> Self {
        Self {
            inner: Arc::new(tokio::sync::Semaphore::new(permits)),
            capacity: permits,
        }
    }

    /// Waits for a permit (fair, FIFO). Fails only if the semaphore was closed.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        Arc::clone(&self.inner).acquire_owned().await
    }

    /// Takes a permit if one is free right now.
    pub fn try_acquire(&self) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        Arc::clone(&self.inner).try_acquire_owned()
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.inner.available_permits()
    }

    /// Permits held right now (`capacity - available`; forgotten permits count as held).
    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.available())
    }

    /// The number of permits the semaphore was created with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Closes the semaphore: pending and future acquires fail.
    pub fn close(&self) {
        self.inner.close();
    }

    /// The underlying tokio semaphore.
    pub fn as_tokio(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn direct_limiter_allows_burst_then_denies_with_retry_after() {
        let clock = FakeRelativeClock::default();
        let rl = RateLimiter::with_clock(Quota::per_second(nz(2)), clock.clone());
        assert_eq!(rl.check(), Ok(()));
        assert_eq!(rl.check(), Ok(()));
        let err = rl.check().expect_err("third is limited");
        assert_eq!(err.retry_after, Duration::from_millis(500));
        clock.advance(Duration::from_millis(499));
        assert!(rl.check().is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(rl.check(), Ok(()));
        assert!(rl.check().is_err());
        clock.advance(Duration::from_secs(10));
        // Burst is capped at 2 no matter how long we waited.
        assert_eq!(rl.check(), Ok(()));
        assert_eq!(rl.check(), Ok(()));
        assert!(rl.check().is_err());
        assert_eq!(
            err.to_string(),
            "rate limited, retry after 500ms".to_owned()
        );
    }

    #[tokio::test]
    async fn until_ready_waits_on_real_clock() {
        // One cell per 5 ms, burst 1: the first is free, the next two each wait for their cell.
        let rl = RateLimiter::new(Quota::with_period(Duration::from_millis(5)).expect("quota"));
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..3 {
                rl.until_ready().await;
            }
        })
        .await
        .expect("three cells within 5s");
        assert!(
            started.elapsed() >= Duration::from_millis(10),
            "three cells in {:?}: until_ready did not wait",
            started.elapsed()
        );
        assert!(
            rl.check().is_err(),
            "until_ready took the cell it waited for"
        );
        assert_eq!(RateLimiter::per_second(nz(10)).check(), Ok(()));
    }

    #[test]
    fn keyed_limits_per_key() {
        let clock = FakeRelativeClock::default();
        let rl = KeyedRateLimiter::with_clock(Quota::per_second(nz(1)), 10, clock.clone());
        assert_eq!(rl.check_key(&"a"), Ok(()));
        assert_eq!(rl.check_key(&"b"), Ok(()));
        assert_eq!(
            rl.check_key(&"a"),
            Err(KeyedRateLimitError::Limited {
                retry_after: Duration::from_secs(1)
            })
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(rl.check_key(&"a"), Ok(()));
        assert_eq!(rl.len(), 2);
    }

    #[test]
    fn keyed_cap_denies_new_keys_until_old_ones_are_stale() {
        let clock = FakeRelativeClock::default();
        let rl = KeyedRateLimiter::with_clock(Quota::per_second(nz(1)), 2, clock.clone());
        assert_eq!(rl.check_key(&1), Ok(()));
        assert_eq!(rl.check_key(&2), Ok(()));
        assert_eq!(
            rl.check_key(&3),
            Err(KeyedRateLimitError::TooManyKeys { max_keys: 2 })
        );
        assert_eq!(rl.denied_new_keys(), 1);
        assert_eq!(rl.len(), 2);
        // Tracked keys keep their normal limiting at the cap.
        assert!(matches!(
            rl.check_key(&1),
            Err(KeyedRateLimitError::Limited { .. })
        ));
        clock.advance(Duration::from_millis(500));
        assert_eq!(
            rl.check_key(&3),
            Err(KeyedRateLimitError::TooManyKeys { max_keys: 2 })
        );
        clock.advance(Duration::from_millis(1499));
        assert_eq!(
            rl.check_key(&3),
            Err(KeyedRateLimitError::TooManyKeys { max_keys: 2 })
        );
        // At last use + burst replenish time (1s) + one cell interval (1s) the old keys are
        // indistinguishable from fresh ones and get evicted.
        clock.advance(Duration::from_millis(1));
        assert_eq!(rl.check_key(&3), Ok(()));
        assert!(rl.len() <= 2);
        assert_eq!(rl.denied_new_keys(), 3);
    }

    #[test]
    fn keyed_len_never_exceeds_cap_under_key_flood() {
        let clock = FakeRelativeClock::default();
        let rl = KeyedRateLimiter::with_clock(Quota::per_second(nz(5)), 100, clock.clone());
        for i in 0..10_000u32 {
            let _ = rl.check_key(&i);
            assert!(rl.len() <= 100);
            if i % 1000 == 0 {
                clock.advance(Duration::from_millis(300));
            }
        }
        clock.advance(Duration::from_secs(5));
        rl.retain_recent();
        assert!(rl.is_empty());
    }

    #[test]
    fn keyed_cap_is_exact_under_concurrency() {
        let rl = Arc::new(KeyedRateLimiter::<u64>::new(Quota::per_hour(nz(1)), 64));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let rl = Arc::clone(&rl);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let _ = rl.check_key(&(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(rl.len(), 64);
        assert_eq!(rl.denied_new_keys(), 4000 - 64);
    }

    #[tokio::test]
    async fn semaphore_reports_usage() {
        let s = Semaphore::new(2);
        assert_eq!((s.available(), s.in_use(), s.capacity()), (2, 0, 2));
        let p1 = s.acquire().await.expect("permit");
        let p2 = s.try_acquire().expect("permit");
        assert_eq!((s.available(), s.in_use()), (0, 2));
        assert!(matches!(s.try_acquire(), Err(TryAcquireError::NoPermits)));
        drop(p1);
        assert_eq!(s.in_use(), 1);
        let s2 = s.clone();
        drop(p2);
        assert_eq!(s2.available(), 2);
        s.close();
        assert!(s2.acquire().await.is_err());
    }
}
