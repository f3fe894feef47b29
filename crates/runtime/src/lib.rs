//! The in-process daemon runtime. It knows no application daemon: the binary registers them.
#![forbid(unsafe_code)]

pub mod bus;

pub use bus::{BusConfig, BusError, BusStats, Delivery, Event, EventBus, Subscription};
