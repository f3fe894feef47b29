//! Errors at the runtime's seams.
//!
//! A request's failure travels as a [`DaemonError`]: a stable [`ErrorCode`] plus a message for
//! people, the same pair the wire protocol carries, so the host maps it to a frame without
//! guessing. Everything that fails while starting (a daemon's `start`, its dependencies, the plan
//! itself) is typed separately so callers can match on the condition, not on text.

use daemonhost_protocol::params::ParamError;
use daemonhost_protocol::{ErrorBody, ErrorCode};
use std::fmt;

/// An opaque error returned by daemon code (`start`, `start_deferred`). The runtime adds the
/// daemon's name and the phase before reporting it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The answer to a failed request: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonError {
    /// Stable machine-readable code (see `docs/PROTOCOL.md`).
    pub code: ErrorCode,
    /// Human-readable explanation; names the cause where there is one.
    pub message: String,
}

impl DaemonError {
    /// An error with an explicit code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DaemonError {
            code,
            message: message.into(),
        }
    }
    /// `bad_request`: params of the wrong shape.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    /// `validation`: params well-formed but rejected.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Validation, message)
    }
    /// `not_found`: the addressed entity does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// `forbidden`: understood, and refused by a policy of the host (the message names it).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    /// `unknown_command`: nothing serves this command.
    pub fn unknown_command(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnknownCommand, message)
    }
    /// `timeout`: the deadline passed.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Timeout, message)
    }
    /// `unavailable`: the serving daemon failed or stopped.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// `overloaded`: a bounded queue is full.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Overloaded, message)
    }
    /// `shutting_down`: the host is stopping.
    pub fn shutting_down(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ShuttingDown, message)
    }
    /// `internal`: a bug.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DaemonError {}

impl From<DaemonError> for ErrorBody {
    fn from(e: DaemonError) -> Self {
        ErrorBody {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<ErrorBody> for DaemonError {
    fn from(e: ErrorBody) -> Self {
        DaemonError {
            code: e.code,
            message: e.message,
        }
    }
}

/// A params problem answers with its own code (`bad_request` for shape and type, `validation` for
/// absent or rejected) and its message (`<name>: required`, …): what the router's declared-params
/// check answers, and what a handler reading with [`daemonhost_protocol::params::Params`] gets
/// from `?`.
impl From<ParamError> for DaemonError {
    fn from(e: ParamError) -> Self {
        DaemonError::new(e.code(), e.to_string())
    }
}

/// One problem found while validating the startup plan. Validation reports all of them at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Two daemons registered under one name.
    #[error("duplicate daemon name '{name}'")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A daemon `requires` a name nobody registered.
    #[error("daemon '{daemon}' requires unknown daemon '{missing}'")]
    UnknownDependency {
        /// The daemon declaring the dependency.
        daemon: String,
        /// The name that was not found.
        missing: String,
    },
    /// A dependency cycle, as a path that ends where it began (`a -> b -> a`).
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle {
        /// The daemons on the cycle; the first is repeated at the end.
        path: Vec<String>,
    },
    /// Two daemons claim the same command or command prefix.
    #[error("command route '{route}' is claimed by both '{first}' and '{second}'")]
    DuplicateRoute {
        /// The contested route.
        route: String,
        /// The daemon that claimed it first.
        first: String,
        /// The daemon that claimed it again.
        second: String,
    },
    /// A spec value that cannot work (empty name, zero capacity, malformed route or pattern).
    #[error("daemon '{daemon}': invalid spec: {reason}")]
    InvalidSpec {
        /// The daemon with the bad spec.
        daemon: String,
        /// What is wrong.
        reason: String,
    },
}

/// Every problem in a plan, reported together; nothing starts while there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid startup plan ({} problem{}): {}", errors.len(), if errors.len() == 1 { "" } else { "s" }, errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct PlanErrors {
    /// The problems, in a stable order.
    pub errors: Vec<PlanError>,
}

/// The text of a caught panic: its payload if that was a string, otherwise a placeholder.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
