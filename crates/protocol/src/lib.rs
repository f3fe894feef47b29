//! The daemonhost wire protocol, version 1: length-prefixed JSON frames over a Unix stream socket,
//! spoken by clients ↔ host and host ↔ worker processes alike. See `docs/PROTOCOL.md`.
#![forbid(unsafe_code)]

mod error;

pub use error::{ErrorBody, ErrorCode};
