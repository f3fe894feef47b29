//! Test helpers shared by daemonhost's crates.
#![forbid(unsafe_code)]
