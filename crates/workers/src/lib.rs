//! daemonhost worker services.
#![forbid(unsafe_code)]

pub mod search;
pub mod service;

pub use service::{ServiceCommand, WorkerService};
