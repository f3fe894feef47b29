//! The in-process daemon runtime. It knows no application daemon: the binary registers them.
#![forbid(unsafe_code)]

pub mod pool;

pub use pool::{CpuPool, Placement, PoolConfig, PoolError, PoolStats, PoolTask};
