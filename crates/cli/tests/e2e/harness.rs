//! This crate's binary under testkit's end-to-end host ([`daemonhost_testkit::host`]), which
//! starts it in a temp dir and talks to it. No bare sleeps: everything that waits polls a
//! condition with a deadline.

pub use daemonhost_testkit::host::{Host, code, framed, send, split, stderr, stdout, tempdir};
pub use daemonhost_testkit::{TIMEOUT as WAIT, eventually, eventually_for};
use std::path::Path;
use std::process::Output;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_daemonhost");

/// Run `daemonhost --data-dir DATA ARGS…` to completion.
pub fn cli(data: &Path, args: &[&str]) -> Output {
    daemonhost_testkit::host::cli(BIN, data, args)
}
