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
use serde_json::{Map, Value};

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
// Small helpers for reading params with precise `bad_request` / `validation` messages.
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

pub(crate) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `params` as an object (`null` counts as `{}`).
pub(crate) fn object(params: &Value) -> Result<&Map<String, Value>, ErrorBody> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match params {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(EMPTY.get_or_init(Map::new)),
        other => Err(bad_request(format!(
            "params must be an object (found {})",
            describe(other)
        ))),
    }
}

pub(crate) fn req_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a str, ErrorBody> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(bad_request(format!("field '{key}' is required"))),
        Some(other) => Err(bad_request(format!(
            "field '{key}' must be a string (found {})",
            describe(other)
        ))),
    }
}

pub(crate) fn opt_str<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, ErrorBody> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        None | Some(Value::Null) => Ok(None),
        Some(other) => Err(bad_request(format!(
            "field '{key}' must be a string when present (found {})",
            describe(other)
        ))),
    }
}

pub(crate) fn opt_u64(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, ErrorBody> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            bad_request(format!(
                "field '{key}' must be a non-negative integer when present (found {})",
                describe(v)
            ))
        }),
    }
}

pub(crate) fn req_array<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Vec<Value>, ErrorBody> {
    match m.get(key) {
        Some(Value::Array(a)) => Ok(a),
        None | Some(Value::Null) => Err(bad_request(format!("field '{key}' is required"))),
        Some(other) => Err(bad_request(format!(
            "field '{key}' must be an array (found {})",
            describe(other)
        ))),
    }
}
