//! The seam shared by both placements of a worker-backed daemon.
//!
//! A [`WorkerService`] is a plain value holding all of its state. The worker process serves it
//! over a socket ([`crate::serve_connection`]); the host wraps *the very same type* in-process as
//! the fallback while the worker is down. So a service must not assume it owns its process: no
//! globals, no `std::process::exit`, no signal handlers, and no blocking on the async workers
//! (CPU-heavy work goes to `spawn_blocking` or an owned thread).

use std::future::Future;

use daemonhost_protocol::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde_json::Value;

/// One command a service answers, as announced by `worker/hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceCommand {
    /// Full slash path, e.g. `search/messages`.
    pub name: &'static str,
    /// One line for `list` / `help`.
    pub description: &'static str,
    /// Running it twice has the same effect as running it once. The host retries an idempotent
    /// request once (after a restart or on the fallback) when the worker dies with it in flight;
    /// a non-idempotent one is answered `unavailable` instead.
    pub idempotent: bool,
}

impl ServiceCommand {
    /// A command description.
    pub const fn new(name: &'static str, description: &'static str, idempotent: bool) -> Self {
        ServiceCommand {
            name,
            description,
            idempotent,
        }
    }
}

/// A daemon implementation that can run in a worker process or in the host.
pub trait WorkerService: Send + Sync + 'static {
    /// The worker kind, e.g. `"search"`: what `daemonhost worker KIND` names.
    fn kind(&self) -> &'static str;

    /// Every command served, with its idempotency.
    fn commands(&self) -> Vec<ServiceCommand>;

    /// Run one command. `params` is always a JSON object. Errors use the protocol's codes
    /// (`validation`, `bad_request`, `overloaded`, …).
    fn handle(
        &self,
        command: &str,
        params: Value,
    ) -> impl Future<Output = Result<Value, ErrorBody>> + Send;

    /// Finish outstanding work (flush files, stop threads). Called once the last request is
    /// answered, by the worker process before it exits and by the host when it stops the daemon.
    /// Must be idempotent. The default does nothing.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

// ---------------------------------------------------------------------------------------------
// Error answers that are not about reading params. Params are read with the protocol's one
// reader (`daemonhost_protocol::params::Params`), whose `ParamError` converts into the
// `ErrorBody` to answer, so `?` works in a handler and a worker answers exactly what an
// in-host daemon answers.
// ---------------------------------------------------------------------------------------------

pub(crate) fn bad_request(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, message)
}

pub(crate) fn validation(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::Validation, message)
}

pub(crate) fn unknown_command(kind: &str, command: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::UnknownCommand,
        format!("the {kind} service does not serve '{command}'"),
    )
}
