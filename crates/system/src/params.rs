//! Param helpers of the system daemons.

use daemonhost_runtime::{DaemonError, Request};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Param helpers shared by the system daemons.
// ---------------------------------------------------------------------------------------------

/// The params object (`{}` when the caller sent none).
pub(crate) fn params_object(req: &Request) -> Result<&Map<String, Value>, DaemonError> {
    match &req.params {
        Value::Object(m) => Ok(m),
        Value::Null => {
            static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
            Ok(EMPTY.get_or_init(Map::new))
        }
        other => Err(DaemonError::bad_request(format!(
            "params must be an object, found {}",
            kind(other)
        ))),
    }
}

/// An optional string param: missing or null → `None`; a non-string → `bad_request`.
pub(crate) fn opt_str<'a>(
    p: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, DaemonError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(DaemonError::bad_request(format!(
            "field '{name}' must be a string (found {})",
            kind(other)
        ))),
    }
}

/// A required string param: missing → `validation`; a non-string → `bad_request`.
pub(crate) fn req_str<'a>(p: &'a Map<String, Value>, name: &str) -> Result<&'a str, DaemonError> {
    opt_str(p, name)?.ok_or_else(|| DaemonError::validation(format!("field '{name}' is required")))
}

/// An optional non-negative integer param.
pub(crate) fn opt_u64(p: &Map<String, Value>, name: &str) -> Result<Option<u64>, DaemonError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            DaemonError::bad_request(format!(
                "field '{name}' must be a non-negative integer (found {})",
                kind(v)
            ))
        }),
    }
}

/// The JSON kind of a value, for messages ("a string", "an array", …).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
