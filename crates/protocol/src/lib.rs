//! The daemonhost wire protocol, version 1: length-prefixed JSON frames over a Unix stream socket,
//! spoken by clients ↔ host and host ↔ worker processes alike. See `docs/PROTOCOL.md`.
//!
//! Why one crate for it: the host, the CLI, worker processes and the tests must agree on every
//! byte, and clients in other languages are written against `docs/PROTOCOL.md`. Keeping frames,
//! error codes, framing and the reference async client together (with a test that round-trips
//! the document's examples) keeps the code and the document in agreement.
//!
//! - [`Frame`] and its parts: the three message shapes and their exact JSON encoding; decoding
//!   classifies malformed bodies into a [`BadFrame`] carrying the id to echo, if any.
//! - [`FrameCodec`] / [`RawFrameCodec`]: tokio-util codecs for the 4-byte big-endian length prefix.
//! - [`Client`]: a pipelining async client with subscriptions.
//! - [`params`]: the one typed reader of request params ([`Params`], [`check_declared`]), so
//!   every daemon and worker answers a bad param with the same code and message.
//! - [`time`]: epoch milliseconds and their canonical RFC 3339 UTC text.
#![forbid(unsafe_code)]

mod client;
mod codec;
mod error;
mod frame;
pub mod params;
pub mod time;

pub use client::{CallError, Client, ClientConfig, ClientError, EventStream, answer_peer_request};
pub use codec::{
    CodecError, DEFAULT_MAX_FRAME, FrameCodec, HEADER_LEN, RawFrameCodec, write_body, write_frame,
};
pub use error::{ErrorBody, ErrorCode, error_chain};
pub use frame::{BadFrame, EventFrame, Frame, FrameType, LAGGED_TOPIC, Request, Response};
pub use params::{ParamError, ParamType, Params, check_declared, check_declared_iter};
