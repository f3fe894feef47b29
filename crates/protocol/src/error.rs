//! Stable error codes. The `code` string is the contract with clients written elsewhere; the
//! `message` is for people. Adding a code is a protocol change: update `docs/PROTOCOL.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error a peer can receive, as listed in `docs/PROTOCOL.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a valid frame body, or params of the wrong shape.
    BadRequest,
    /// No daemon serves this command.
    UnknownCommand,
    /// Params well-formed but rejected by the schema.
    Validation,
    /// The addressed entity does not exist.
    NotFound,
    /// Understood, and refused by a policy of the host (e.g. a URL outside `[proxy] allow`);
    /// the message names the rule. The same request gets the same answer until the policy
    /// changes.
    Forbidden,
    /// The deadline passed before the daemon answered.
    Timeout,
    /// The serving daemon failed or stopped; the message names the cause.
    Unavailable,
    /// A bounded queue is full; retry later.
    Overloaded,
    /// A write did not fit: the database (or disk) is full. Nothing acknowledged is lost;
    /// retry once space is freed.
    StorageFull,
    /// The host is stopping.
    ShuttingDown,
    /// A frame declared a length above the maximum.
    FrameTooLarge,
    /// A bug; the host logs the details and keeps running.
    Internal,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownCommand,
        ErrorCode::Validation,
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Overloaded,
        ErrorCode::StorageFull,
        ErrorCode::ShuttingDown,
        ErrorCode::FrameTooLarge,
        ErrorCode::Internal,
    ];

    /// The wire spelling, e.g. `"bad_request"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::Validation => "validation",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed response: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    /// Build an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

/// An error and its sources on one line (`outer: inner: …`, a source already quoted by the one
/// above it left out, at most 8 deep): an HTTP client's own message alone is terse.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    let mut depth = 0;
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
        depth += 1;
        if depth > 8 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_documented() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, code);
        }
    }
}
