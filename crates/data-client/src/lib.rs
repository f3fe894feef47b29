//! The data daemon's typed client, for every daemon that stores records.
//!
//! Daemons reach each other only through the router, so that any of them can move to a worker
//! process or another host. Storing is the exception that proves the rule: the platform daemons
//! store on every request, and a routed call costs JSON params built and parsed again plus a hop
//! through the data daemon's mailbox. [`DataClient`] keeps both: the in-process path when the data
//! daemon is local, the routed path (`data/*`) when it is not, chosen per call, with the same
//! types and the same errors on both ([`DataClientError`]).
//!
//! - [`types`] holds [`Handle`], [`ListParams`], [`Page`] and [`BatchOp`], shared with the store;
//! - [`client`] holds [`DataClient`] / [`Data`] and the [`LocalData`] seam the store implements;
//! - [`error`] holds [`DataClientError`].
//!
//! This crate has no SQLite: a daemon that stores through it builds without the engine.
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod types;

pub use client::{Data, DataClient, DataFuture, DataPath, LocalData, LocalSlot};
pub use error::DataClientError;
pub use types::{BatchOp, Handle, InvalidHandle, ListParams, Page, is_persona_id};
