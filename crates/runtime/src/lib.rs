//! The in-process daemon runtime. It knows no application daemon: the binary registers them.
#![forbid(unsafe_code)]

pub mod cache;
pub mod limits;
pub mod pool;
pub mod timers;

pub use cache::{BoundedCache, CacheStats};
pub use limits::{
    KeyedRateLimitError, KeyedRateLimiter, Quota, RateLimited, RateLimiter, Semaphore,
};
pub use pool::{CpuPool, Placement, PoolConfig, PoolError, PoolStats, PoolTask};
pub use timers::{Spawner, TimerError, Timers, live_timer_tasks};
