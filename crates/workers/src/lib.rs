//! daemonhost worker services.
#![forbid(unsafe_code)]

mod error;
pub mod logger;
pub mod search;
pub mod service;

pub use error::WorkerError;
pub use service::{ServiceCommand, WorkerService};
