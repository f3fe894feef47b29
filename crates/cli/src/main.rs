//! The `daemonhost` binary.
#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    Ok(())
}
