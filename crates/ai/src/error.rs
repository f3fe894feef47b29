//! Typed failures of the AI daemon and how each maps to a protocol error code.
//!
//! [`AdapterError`] is one provider's failure, with the provider's name in it so a message read
//! out of context still says who failed. [`AiError`] is the daemon's answer; it carries every
//! attempt when the whole list failed, because "unavailable" alone tells an operator nothing.

use daemonhost_protocol::params::ParamError;
use daemonhost_runtime::{DaemonError, ErrorCode};
use serde::Serialize;

/// One provider call (or health check) that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// No connection (refused, DNS, TLS).
    #[error("{provider}: cannot connect: {reason}")]
    Connect {
        /// The provider.
        provider: String,
        /// What the client said.
        reason: String,
    },
    /// The call took longer than its bound.
    #[error("{provider}: no answer within {after_ms} ms")]
    Timeout {
        /// The provider.
        provider: String,
        /// The bound that passed.
        after_ms: u64,
    },
    /// A non-2xx answer.
    #[error("{provider}: HTTP {status}: {body}")]
    Status {
        /// The provider.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body (at most 300 characters).
        body: String,
    },
    /// A 2xx answer that is not what the API promises.
    #[error("{provider}: unexpected response: {reason}")]
    BadResponse {
        /// The provider.
        provider: String,
        /// What was wrong.
        reason: String,
    },
    /// The body was larger than `max_response_bytes`.
    #[error("{provider}: response larger than {limit} bytes")]
    TooLarge {
        /// The provider.
        provider: String,
        /// The limit.
        limit: usize,
    },
    /// The provider cannot work as configured (e.g. its key is missing or was refused).
    #[error("{provider}: not usable: {reason}")]
    Config {
        /// The provider.
        provider: String,
        /// Why.
        reason: String,
    },
    /// Any other transport failure.
    #[error("{provider}: request failed: {reason}")]
    Transport {
        /// The provider.
        provider: String,
        /// What the client said.
        reason: String,
    },
}

impl AdapterError {
    /// Whether this failure says something about the provider's health. A 400/413/422 means
    /// the provider is up and refused this particular request (an unknown `model`, too many
    /// tokens): the walk still falls through, but the breaker does not count it, so one bad
    /// request cannot open a healthy provider's circuit for everybody.
    pub fn counts_against_provider(&self) -> bool {
        !matches!(
            self,
            AdapterError::Status {
                status: 400 | 413 | 422,
                ..
            }
        )
    }

    /// The protocol code for this failure when it is the whole answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            AdapterError::Timeout { .. } => ErrorCode::Timeout,
            _ => ErrorCode::Unavailable,
        }
    }
}

/// What happened to one provider during one `ai/generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It answered.
    Answered,
    /// It was called and failed.
    Failed,
    /// Skipped: its circuit is open.
    CircuitOpen,
    /// Skipped: `max_concurrency` calls already in flight.
    Busy,
    /// Skipped: it cannot work as configured.
    Disabled,
}

/// One entry of `attempts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The provider.
    pub provider: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why, unless it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = match self.outcome {
            Outcome::Answered => "answered",
            Outcome::Failed => "failed",
            Outcome::CircuitOpen => "circuit open",
            Outcome::Busy => "busy",
            Outcome::Disabled => "disabled",
        };
        match &self.reason {
            Some(r) => write!(f, "{}: {outcome} ({r})", self.provider),
            None => write!(f, "{}: {outcome}", self.provider),
        }
    }
}

/// A failed AI daemon operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AiError {
    /// Params refused by the protocol's one reader, with its code and message: a required param
    /// absent (`validation`, `messages: required`), one of the wrong type (`bad_request`,
    /// `maxTokens: must be a non-negative integer`), or rejected (`validation`,
    /// `temperature: at most 2 (got 3)`).
    #[error(transparent)]
    Param(#[from] ParamError),
    /// `provider` names no configured provider.
    #[error("provider: unknown provider '{name}' (configured: {known})")]
    UnknownProvider {
        /// The name given.
        name: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// The one provider asked for was skipped or failed.
    #[error("{0}")]
    ProviderFailed(Attempt, ErrorCode),
    /// Every provider in the list was skipped or failed.
    #[error("no AI provider could answer: {}", attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllFailed {
        /// Each provider with its cause.
        attempts: Vec<Attempt>,
    },
    /// The configuration cannot work.
    #[error("invalid AI config: {}", problems.join("; "))]
    Config {
        /// Every problem.
        problems: Vec<String>,
    },
}

impl AiError {
    /// The protocol code.
    pub fn code(&self) -> ErrorCode {
        match self {
            AiError::Param(e) => e.code(),
            AiError::UnknownProvider { .. } => ErrorCode::Validation,
            AiError::ProviderFailed(_, code) => *code,
            AiError::AllFailed { .. } => ErrorCode::Unavailable,
            AiError::Config { .. } => ErrorCode::Internal,
        }
    }
}

impl From<AiError> for DaemonError {
    fn from(e: AiError) -> Self {
        DaemonError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_requests_do_not_count_against_the_provider() {
        let status = |status| AdapterError::Status {
            provider: "p".into(),
            status,
            body: String::new(),
        };
        assert!(!status(400).counts_against_provider());
        assert!(!status(422).counts_against_provider());
        assert!(status(401).counts_against_provider());
        assert!(status(500).counts_against_provider());
        assert!(status(429).counts_against_provider());
        let t = AdapterError::Timeout {
            provider: "p".into(),
            after_ms: 5,
        };
        assert_eq!(t.code(), ErrorCode::Timeout);
        assert!(t.counts_against_provider());
    }

    #[test]
    fn errors_map_to_protocol_codes() {
        let e = DaemonError::from(AiError::from(ParamError::missing("messages")));
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::Validation, "messages: required")
        );
        let all = AiError::AllFailed {
            attempts: vec![Attempt {
                provider: "a".into(),
                outcome: Outcome::CircuitOpen,
                reason: Some("refused".into()),
            }],
        };
        let e = DaemonError::from(all);
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("a: circuit open (refused)"), "{e}");
    }
}
