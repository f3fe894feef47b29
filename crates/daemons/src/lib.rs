//! The daemons daemonhost hosts.
#![forbid(unsafe_code)]
pub mod data;
