//! Why a daemon failed, as a value callers can match on.
//!
//! A [`Cause`] is what [`Status::cause`](crate::Status) and
//! [`FailedDaemon::cause`](crate::FailedDaemon) carry. Its `Display` is the human text the runtime
//! has always logged and put into `unavailable` answers ("start failed: …", "requires 'data',
//! which failed: …"), so messages read the same; [`Cause::kind`] is the stable machine name
//! (`start_failed`, …) published as `causeKind` in `system:daemon:state` events. Serialized on its
//! own, a cause is an object tagged by `kind` with the variant's fields.

use serde::Serialize;
use std::fmt;

/// Where in a daemon's code a panic happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// `Daemon::start` (core init).
    Start,
    /// `Daemon::start_deferred`.
    DeferredInit,
    /// `Daemon::handle` (one request).
    Handle,
    /// `Daemon::on_event` (one event).
    Event,
    /// Work started through `Context::spawn` or a `TaskSet`.
    Background,
    /// One tick of a named timer.
    Timer,
    /// `Daemon::stop`.
    Stop,
}

impl Phase {
    /// The words used in human messages ("deferred init", "background task", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::DeferredInit => "deferred init",
            Phase::Handle => "request handler",
            Phase::Event => "event handler",
            Phase::Background => "background task",
            Phase::Timer => "timer tick",
            Phase::Stop => "stop",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a daemon (or its deferred init) failed.
///
/// `Display` is the human text the runtime has always logged and put into `unavailable`
/// answers; [`Cause::kind`] is the stable machine name (`causeKind` in `system:daemon:state`).
/// Serialized on its own, a cause is an object tagged by `kind` with the variant's fields
/// (status reports show the human text instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Cause {
    /// `start` returned an error (after every retry the restart policy allows).
    #[error("start failed: {error}")]
    StartFailed {
        /// The error `start` returned, as text.
        error: String,
    },
    /// `start` did not finish within the spec's `start_timeout`.
    #[error("start timed out after {after_ms} ms")]
    StartTimedOut {
        /// The timeout that passed, in milliseconds.
        after_ms: u64,
    },
    /// Daemon code panicked; the panic was caught at the daemon boundary.
    #[error("{phase} panicked: {message}")]
    Panicked {
        /// Where it panicked.
        phase: Phase,
        /// The panic payload if it was a string, otherwise a placeholder.
        message: String,
    },
    /// A daemon this one `requires` failed (or stopped) before it was READY.
    #[error("requires '{dependency}', which failed: {cause}")]
    DependencyFailed {
        /// The required daemon.
        dependency: String,
        /// Why it failed.
        cause: Box<Cause>,
    },
    /// Stopped before it was READY: the host shut down while it waited to (re)try its start,
    /// or a required daemon stopped without failing.
    #[error("stopped before it was ready")]
    Stopped,
    /// Subscribing to one of the spec's event patterns failed.
    #[error("cannot subscribe to '{pattern}': {error}")]
    SubscribeFailed {
        /// The pattern from the spec.
        pattern: String,
        /// The bus's refusal, as text.
        error: String,
    },
    /// `start_deferred` returned an error (the daemon stays READY; this is the deferred cause).
    #[error("deferred init failed: {error}")]
    DeferredInitFailed {
        /// The error `start_deferred` returned, as text.
        error: String,
    },
}

impl Cause {
    /// The stable machine name of the variant (`start_failed`, `start_timed_out`, `panicked`,
    /// `dependency_failed`, `stopped`, `subscribe_failed`, `deferred_init_failed`): the `kind`
    /// tag of the serialized form and `causeKind` of `system:daemon:state`.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::StartFailed { .. } => "start_failed",
            Cause::StartTimedOut { .. } => "start_timed_out",
            Cause::Panicked { .. } => "panicked",
            Cause::DependencyFailed { .. } => "dependency_failed",
            Cause::Stopped => "stopped",
            Cause::SubscribeFailed { .. } => "subscribe_failed",
            Cause::DeferredInitFailed { .. } => "deferred_init_failed",
        }
    }

    /// The cause at the end of a chain of failed dependencies (the daemon that really failed
    /// is named by the innermost `DependencyFailed`).
    pub fn root(&self) -> &Cause {
        let mut c = self;
        while let Cause::DependencyFailed { cause, .. } = c {
            c = cause;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Cause> {
        vec![
            Cause::StartFailed {
                error: "disk on fire".into(),
            },
            Cause::StartTimedOut { after_ms: 300 },
            Cause::Panicked {
                phase: Phase::DeferredInit,
                message: "boom".into(),
            },
            Cause::DependencyFailed {
                dependency: "data".into(),
                cause: Box::new(Cause::StartTimedOut { after_ms: 5 }),
            },
            Cause::Stopped,
            Cause::SubscribeFailed {
                pattern: "x:*".into(),
                error: "too many".into(),
            },
            Cause::DeferredInitFailed {
                error: "index corrupt".into(),
            },
        ]
    }

    #[test]
    fn cause_display_keeps_the_human_text_of_string_causes() {
        let text: Vec<String> = all().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "start failed: disk on fire",
                "start timed out after 300 ms",
                "deferred init panicked: boom",
                "requires 'data', which failed: start timed out after 5 ms",
                "stopped before it was ready",
                "cannot subscribe to 'x:*': too many",
                "deferred init failed: index corrupt",
            ]
        );
    }

    #[test]
    fn cause_kind_is_the_serialized_tag() {
        for c in all() {
            let v = serde_json::to_value(&c).expect("serializes");
            assert_eq!(v["kind"], c.kind(), "{v}");
        }
        let v = serde_json::to_value(&all()[3]).expect("serializes");
        assert_eq!(v["cause"]["kind"], "start_timed_out");
        assert_eq!(v["dependency"], "data");
        assert_eq!(
            all()[3].root(),
            &Cause::StartTimedOut { after_ms: 5 },
            "root follows the chain"
        );
    }
}
