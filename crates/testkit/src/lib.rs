//! Test helpers shared by daemonhost's crates: one way to wait ([`eventually`], [`within`]),
//! runtimes with the real data daemon on a temp dir ([`data::boot`]), stand-in daemons
//! ([`fake::Fake`]), a fake AI provider over HTTP ([`http::ProviderServer`]), a tiny website
//! for the proxy ([`pages::PageServer`]) and the real binary in a temp dir ([`host::Host`]).
//!
//! A crate this one depends on (protocol, runtime, data) may use it from its `tests/` only:
//! its unit tests would link a second copy of itself through this crate.
#![forbid(unsafe_code)]

pub mod data;
pub mod fake;
pub mod host;
pub mod http;
pub mod pages;
mod wait;

pub use wait::{
    POLL, Probe, TIMEOUT, eventually, eventually_for, eventually_on, try_eventually_for, within,
    within_for,
};

use daemonhost_runtime::{Runtime, RuntimeBuilder, RuntimeConfig};

/// The runtime's defaults without the lag probe (a 10 ms timer per runtime is noise in a test).
pub fn quiet_config() -> RuntimeConfig {
    RuntimeConfig {
        lag_probe: None,
        ..RuntimeConfig::default()
    }
}

/// Build a runtime with `config` and what `register` adds, start it, and return once every
/// daemon is READY (within [`TIMEOUT`]).
///
/// # Panics
/// If the plan is invalid, a daemon fails to start (naming them and their causes), or the start
/// takes longer than [`TIMEOUT`].
pub async fn boot(config: RuntimeConfig, register: impl FnOnce(&mut RuntimeBuilder)) -> Runtime {
    let mut b = RuntimeBuilder::new(config);
    register(&mut b);
    let rt = b.build().expect("a valid plan");
    let report = within("every daemon to start", rt.start_all()).await;
    assert!(
        report.failed.is_empty(),
        "daemons failed to start: {:?}",
        report.failed
    );
    rt
}
