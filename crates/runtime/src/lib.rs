//! The in-process daemon runtime. It knows no application daemon: the binary registers them.
//!
//! Support modules, each a guard against a failure of the Node.js system this replaces (a
//! blocked event loop and 6.88 GB leaked through unbounded caches and untracked timers):
//!
//! * [`pool`]: a small dedicated CPU pool ([`CpuPool`]) instead of bare `spawn_blocking`, which
//!   grows to 512 threads and oversubscribes a 2-core host; falls back to `spawn_blocking` when
//!   saturated, and turns job panics into errors instead of process aborts.
//! * [`timers`]: per-daemon named intervals/timeouts ([`Timers`]) that are bounded, replaced by
//!   name, cancelled on drop and counted process-wide ([`live_timer_tasks`]).
//! * [`limits`]: rate limiters (the keyed one with a hard key cap) and a semaphore.
//! * [`cache`]: the only sanctioned cache, a capacity-bounded LRU with metrics ([`BoundedCache`]).
//! * [`lag`]: an event-loop lag probe ([`LagProbe`]) so a blocked runtime is visible.
#![forbid(unsafe_code)]

pub mod cache;
pub mod lag;
pub mod limits;
pub mod pool;
pub mod timers;

pub use cache::{BoundedCache, CacheStats};
pub use lag::{LagProbe, LagSnapshot};
pub use limits::{
    KeyedRateLimitError, KeyedRateLimiter, Quota, RateLimited, RateLimiter, Semaphore,
};
pub use pool::{CpuPool, Placement, PoolConfig, PoolError, PoolStats, PoolTask};
pub use timers::{Spawner, TimerError, Timers, live_timer_tasks};
