//! The daemons daemonhost hosts.
//!
//! The binary registers every daemon through this crate so that there is one place that knows
//! the whole set: [`register_system`] adds the system daemons (no dependencies, READY in
//! microseconds) that make a host usable on its own: `ping`, `list`, `help`, `health/*`,
//! `system/startup`, `events/*` and `session/*`. Application daemons will register here too.
#![forbid(unsafe_code)]

pub mod ai;
pub mod chat;
pub mod console;
pub mod data;
pub mod governance;
pub mod logging;
pub mod persona;
pub mod placed;
pub mod platform;
pub mod rooms;
pub mod search;
pub mod session;
pub mod system;
pub mod training;
pub mod users;

pub use ai::{AiConfig, AiDaemon};
pub use session::{SessionConfig, SessionDaemon};
pub use system::{
    EventsDaemon, HealthDaemon, HostCounters, HostStartup, SystemConfig, SystemDaemon,
    register_system,
};
