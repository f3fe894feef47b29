//! Reading request params: the one typed reader every daemon and worker uses.
//!
//! Why one reader: a client cannot tell which daemon or worker process serves a command, so the
//! same mistake must get the same answer everywhere. Before this module there were five copies
//! of param-reading code and they disagreed (a missing required param was `validation` in some
//! and `bad_request` in most). The answers below are the contract in `docs/PROTOCOL.md`; every
//! message starts with the param's name.
//!
//! | Problem | Code | Message |
//! |---|---|---|
//! | params neither an object nor `null` | `bad_request` | `params must be an object` |
//! | a required param is absent | `validation` | `<name>: required` |
//! | a param of the wrong JSON type | `bad_request` | `<name>: must be a string` (`an integer`, `a non-negative integer`, `a number`, `a boolean`, `an object`, `an array`) |
//! | right type, rejected value (empty, too long, out of range) | `validation` | `<name>: must not be empty`, `<name>: at most 200 characters`, `limit: at most 500 (got 900)` |
//!
//! Params `null` mean `{}`, and a param whose value is `null` counts as absent.
//!
//! - [`Params`]: owns the params object; typed accessors return [`ParamError`], which converts
//!   into the [`ErrorBody`] to answer. An object nested in the params (an array's element) is
//!   read with its own [`Params`], its errors named by path with [`ParamError::within`].
//! - [`check_declared`]: the cheap generic check a router runs before the handler, against the
//!   `(name, type, required)` a command declares; it reports exactly what the accessors would.
//! - [`ParamType`]: the type words of command specs (`"string"`, `"integer"`, …).

use crate::error::{ErrorBody, ErrorCode};
use serde_json::{Map, Value};
use std::fmt;

/// The JSON type a param must have, as declared in a command spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// A JSON string.
    String,
    /// A JSON number without a fractional part or exponent (`-3`, `7`).
    Integer,
    /// An integer that is at least 0 and fits a `u64`.
    UnsignedInteger,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// Anything: what a spec declares with a word we do not classify (`"string|array"`, …).
    Any,
}

impl ParamType {
    /// Every type, in declaration order.
    pub const ALL: [ParamType; 8] = [
        ParamType::String,
        ParamType::Integer,
        ParamType::UnsignedInteger,
        ParamType::Number,
        ParamType::Boolean,
        ParamType::Object,
        ParamType::Array,
        ParamType::Any,
    ];

    /// The type a spec's type word names: `string`, `integer`, `non-negative integer`, `number`,
    /// `boolean`, `object`, `array` (ASCII case and surrounding blanks ignored). Any other word,
    /// compound ones such as `string|array` or `string[]` included, is [`ParamType::Any`]: a
    /// router must never reject what it cannot classify; the handler still checks.
    pub fn parse(spec: &str) -> ParamType {
        let word = spec.trim();
        ParamType::ALL
            .into_iter()
            .find(|t| *t != ParamType::Any && word.eq_ignore_ascii_case(t.as_str()))
            .unwrap_or(ParamType::Any)
    }

    /// The type word, as a spec writes it; [`ParamType::parse`] reads it back.
    pub fn as_str(&self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::UnsignedInteger => "non-negative integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Object => "object",
            ParamType::Array => "array",
            ParamType::Any => "any",
        }
    }

    /// Whether `v` is of this type. `null` is only [`ParamType::Any`]; readers treat a `null`
    /// param as absent before asking.
    pub fn matches(&self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Integer => v.is_i64() || v.is_u64(),
            ParamType::UnsignedInteger => v.is_u64(),
            ParamType::Number => v.is_number(),
            ParamType::Boolean => v.is_boolean(),
            ParamType::Object => v.is_object(),
            ParamType::Array => v.is_array(),
            ParamType::Any => true,
        }
    }

    /// The type with its article, for messages: `"a string"`, `"an integer"`, ….
    pub fn describe(&self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::UnsignedInteger => "a non-negative integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "a boolean",
            ParamType::Object => "an object",
            ParamType::Array => "an array",
            ParamType::Any => "any JSON value",
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why params were refused. [`ParamError::code`] is the wire code, `Display` the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The params are neither an object nor `null` (`bad_request`).
    #[error("params must be an object")]
    NotAnObject,
    /// A required param is absent or `null` (`validation`).
    #[error("{name}: required")]
    Missing {
        /// The param's name.
        name: String,
    },
    /// A param has the wrong JSON type (`bad_request`).
    #[error("{name}: must be {}", .expected.describe())]
    WrongType {
        /// The param's name.
        name: String,
        /// The type it must have.
        expected: ParamType,
    },
    /// A param has the right type but its value is rejected (`validation`).
    #[error("{name}: {reason}")]
    Invalid {
        /// The param's name.
        name: String,
        /// Why, e.g. `must not be empty`, `at most 200 characters`, `at most 500 (got 900)`.
        reason: String,
    },
}

impl ParamError {
    /// `name` is required and absent.
    pub fn missing(name: impl Into<String>) -> Self {
        ParamError::Missing { name: name.into() }
    }

    /// `name` must be of type `expected`.
    pub fn wrong_type(name: impl Into<String>, expected: ParamType) -> Self {
        ParamError::WrongType {
            name: name.into(),
            expected,
        }
    }

    /// `name` has the right type but is rejected for `reason` (the message is `name: reason`).
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        ParamError::Invalid {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// The wire code: `bad_request` for shape and type, `validation` for absent or rejected.
    pub fn code(&self) -> ErrorCode {
        match self {
            ParamError::NotAnObject | ParamError::WrongType { .. } => ErrorCode::BadRequest,
            ParamError::Missing { .. } | ParamError::Invalid { .. } => ErrorCode::Validation,
        }
    }

    /// The param the error is about (`None` for [`ParamError::NotAnObject`]).
    pub fn name(&self) -> Option<&str> {
        match self {
            ParamError::NotAnObject => None,
            ParamError::Missing { name }
            | ParamError::WrongType { name, .. }
            | ParamError::Invalid { name, .. } => Some(name),
        }
    }
}

impl ParamError {
    /// The same error about a param inside the object `parent` (an array element such as
    /// `operations[3]`, or an object param): the name becomes `parent.name`, so the message
    /// names the path (`operations[3].collection: required`); params that are not an object
    /// become `parent: must be an object`. The code does not change.
    pub fn within(self, parent: &str) -> Self {
        let path = |name: String| format!("{parent}.{name}");
        match self {
            ParamError::NotAnObject => ParamError::wrong_type(parent, ParamType::Object),
            ParamError::Missing { name } => ParamError::Missing { name: path(name) },
            ParamError::WrongType { name, expected } => ParamError::WrongType {
                name: path(name),
                expected,
            },
            ParamError::Invalid { name, reason } => ParamError::Invalid {
                name: path(name),
                reason,
            },
        }
    }
}

impl From<ParamError> for ErrorBody {
    fn from(e: ParamError) -> Self {
        ErrorBody::new(e.code(), e.to_string())
    }
}

/// A request's params object, with accessors whose errors name the param.
///
/// Readers borrow (`str`, `u64`, …); `string`, `object`, `array` and `take` move the value out
/// of the map, leaving it in place when it has the wrong type. `null` values count as absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    map: Map<String, Value>,
}

impl From<Map<String, Value>> for Params {
    fn from(map: Map<String, Value>) -> Self {
        Params { map }
    }
}

impl Params {
    /// The params of a request: an object, or `null` for `{}`; anything else is
    /// [`ParamError::NotAnObject`].
    pub fn new(v: Value) -> Result<Params, ParamError> {
        match v {
            Value::Object(map) => Ok(Params { map }),
            Value::Null => Ok(Params::default()),
            _ => Err(ParamError::NotAnObject),
        }
    }

    /// A raw value; absent and `null` are `None`.
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.map.get(k).filter(|v| !v.is_null())
    }

    /// Take a raw value out; absent and `null` are `None` (a `null` is removed too).
    pub fn take(&mut self, k: &str) -> Option<Value> {
        self.map.remove(k).filter(|v| !v.is_null())
    }

    /// Whether `k` is present and not `null`.
    pub fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    /// The params object as it stands (values already taken out are gone).
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The params object as it stands, e.g. to pass the rest on after taking some out.
    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }

    /// A required string.
    pub fn str(&self, k: &str) -> Result<&str, ParamError> {
        required(k, self.opt_str(k))
    }

    /// An optional string.
    pub fn opt_str(&self, k: &str) -> Result<Option<&str>, ParamError> {
        self.read(k, ParamType::String, Value::as_str)
    }

    /// A required string that is not blank (non-empty after trimming) and has at most `max`
    /// characters; returned as sent, untrimmed.
    pub fn str_max(&self, k: &str, max: usize) -> Result<&str, ParamError> {
        required(k, self.opt_str_max(k, max))
    }

    /// An optional string, checked as [`Params::str_max`] checks it when present.
    pub fn opt_str_max(&self, k: &str, max: usize) -> Result<Option<&str>, ParamError> {
        let Some(s) = self.opt_str(k)? else {
            return Ok(None);
        };
        check_text(k, s, max)?;
        Ok(Some(s))
    }

    /// The first present one of several names for one string param (e.g. `["type", "kind"]`),
    /// checked as [`Params::str_max`] checks it; names after the first present one are ignored.
    pub fn opt_str_any(&self, keys: &[&str], max: usize) -> Result<Option<&str>, ParamError> {
        for k in keys {
            if let Some(s) = self.opt_str_max(k, max)? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// A required string, taken out of the map.
    pub fn string(&mut self, k: &str) -> Result<String, ParamError> {
        required(k, self.opt_string(k))
    }

    /// An optional string, taken out of the map.
    pub fn opt_string(&mut self, k: &str) -> Result<Option<String>, ParamError> {
        self.take_typed(k, ParamType::String, |v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
    }

    /// A required non-negative integer.
    pub fn u64(&self, k: &str) -> Result<u64, ParamError> {
        required(k, self.opt_u64(k))
    }

    /// An optional non-negative integer (a negative one has the wrong type).
    pub fn opt_u64(&self, k: &str) -> Result<Option<u64>, ParamError> {
        self.read(k, ParamType::UnsignedInteger, Value::as_u64)
    }

    /// An optional non-negative integer within `min..=max` (outside it: `validation`).
    pub fn opt_u64_range(&self, k: &str, min: u64, max: u64) -> Result<Option<u64>, ParamError> {
        match self.opt_u64(k)? {
            Some(n) if n < min => Err(ParamError::invalid(k, format!("at least {min} (got {n})"))),
            Some(n) if n > max => Err(ParamError::invalid(k, format!("at most {max} (got {n})"))),
            n => Ok(n),
        }
    }

    /// A required integer.
    pub fn i64(&self, k: &str) -> Result<i64, ParamError> {
        required(k, self.opt_i64(k))
    }

    /// An optional integer; one above `i64::MAX` is out of range (`validation`).
    pub fn opt_i64(&self, k: &str) -> Result<Option<i64>, ParamError> {
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        match v.as_i64() {
            Some(n) => Ok(Some(n)),
            None if v.is_u64() => Err(ParamError::invalid(
                k,
                format!("at most {} (got {v})", i64::MAX),
            )),
            None => Err(ParamError::wrong_type(k, ParamType::Integer)),
        }
    }

    /// A required number (integers included).
    pub fn f64(&self, k: &str) -> Result<f64, ParamError> {
        required(k, self.opt_f64(k))
    }

    /// An optional number (integers included).
    pub fn opt_f64(&self, k: &str) -> Result<Option<f64>, ParamError> {
        self.read(k, ParamType::Number, Value::as_f64)
    }

    /// A required boolean.
    pub fn bool(&self, k: &str) -> Result<bool, ParamError> {
        required(k, self.opt_bool(k))
    }

    /// An optional boolean.
    pub fn opt_bool(&self, k: &str) -> Result<Option<bool>, ParamError> {
        self.read(k, ParamType::Boolean, Value::as_bool)
    }

    /// A required object, taken out of the map.
    pub fn object(&mut self, k: &str) -> Result<Map<String, Value>, ParamError> {
        required(k, self.opt_object(k))
    }

    /// An optional object, taken out of the map.
    pub fn opt_object(&mut self, k: &str) -> Result<Option<Map<String, Value>>, ParamError> {
        self.take_typed(k, ParamType::Object, |v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
    }

    /// A required array, taken out of the map.
    pub fn array(&mut self, k: &str) -> Result<Vec<Value>, ParamError> {
        required(k, self.opt_array(k))
    }

    /// An optional array, taken out of the map.
    pub fn opt_array(&mut self, k: &str) -> Result<Option<Vec<Value>>, ParamError> {
        self.take_typed(k, ParamType::Array, |v| match v {
            Value::Array(a) => Some(a),
            _ => None,
        })
    }

    /// A page size from the param `limit`: `default` when absent; 0 is `validation`
    /// (`limit: must be at least 1`), and so is more than `max` (`limit: at most 500 (got 900)`).
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ParamError> {
        const K: &str = "limit";
        match self.opt_u64(K)? {
            None => Ok(default),
            Some(0) => Err(ParamError::invalid(K, "must be at least 1")),
            Some(n) => match usize::try_from(n) {
                Ok(size) if size <= max => Ok(size),
                _ => Err(ParamError::invalid(K, format!("at most {max} (got {n})"))),
            },
        }
    }

    /// Read `k` with `extract`, which must succeed exactly when `ty` matches.
    fn read<'a, T>(
        &'a self,
        k: &str,
        ty: ParamType,
        extract: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, ParamError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => extract(v)
                .map(Some)
                .ok_or_else(|| ParamError::wrong_type(k, ty)),
        }
    }

    /// Take `k` out with `extract` when it has type `ty`; a wrong type stays in the map.
    fn take_typed<T>(
        &mut self,
        k: &str,
        ty: ParamType,
        extract: impl FnOnce(Value) -> Option<T>,
    ) -> Result<Option<T>, ParamError> {
        if let Some(v) = self.get(k)
            && !ty.matches(v)
        {
            return Err(ParamError::wrong_type(k, ty));
        }
        match self.take(k) {
            None => Ok(None),
            Some(v) => extract(v)
                .map(Some)
                .ok_or_else(|| ParamError::wrong_type(k, ty)),
        }
    }
}

/// An optional reading made required.
fn required<T>(k: &str, read: Result<Option<T>, ParamError>) -> Result<T, ParamError> {
    read?.ok_or_else(|| ParamError::missing(k))
}

/// Not blank, and at most `max` characters (not bytes).
fn check_text(k: &str, s: &str, max: usize) -> Result<(), ParamError> {
    if s.trim().is_empty() {
        return Err(ParamError::invalid(k, "must not be empty"));
    }
    // A string of at most `max` bytes has at most `max` characters: skip the count.
    if s.len() > max && s.chars().count() > max {
        return Err(ParamError::invalid(k, format!("at most {max} characters")));
    }
    Ok(())
}

/// The router's check before a handler runs: `params` must be an object or `null`; each declared
/// `(name, type, required)` must be present (not `null`) when required, and of its type when
/// present. Reports the first problem in declaration order, with the code and message the
/// [`Params`] accessors give; params not declared are not looked at. Allocates nothing unless it
/// fails.
pub fn check_declared(
    params: &Value,
    declared: &[(&str, ParamType, bool)],
) -> Result<(), ParamError> {
    check_declared_iter(params, declared.iter().copied())
}

/// [`check_declared`] over any sequence of `(name, type, required)`, for a router that keeps its
/// declarations in another shape (e.g. `decls.iter().map(|d| (d.name.as_str(), d.ty, d.required))`).
pub fn check_declared_iter<'a, I>(params: &Value, declared: I) -> Result<(), ParamError>
where
    I: IntoIterator<Item = (&'a str, ParamType, bool)>,
{
    let map = match params {
        Value::Object(m) => Some(m),
        Value::Null => None,
        _ => return Err(ParamError::NotAnObject),
    };
    for (name, ty, required) in declared {
        match map.and_then(|m| m.get(name)).filter(|v| !v.is_null()) {
            None if required => return Err(ParamError::missing(name)),
            Some(v) if !ty.matches(v) => return Err(ParamError::wrong_type(name, ty)),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Params {
        Params::new(v).expect("params object")
    }

    #[test]
    fn missing_required_param_is_validation_and_names_it() {
        let mut p = params(json!({"other": 1}));
        let errors = [
            p.str("name").map(drop),
            p.str_max("name", 10).map(drop),
            p.u64("name").map(drop),
            p.i64("name").map(drop),
            p.f64("name").map(drop),
            p.bool("name").map(drop),
            p.string("name").map(drop),
            p.object("name").map(drop),
            p.array("name").map(drop),
        ];
        for e in errors {
            let e = e.expect_err("missing");
            assert_eq!(e, ParamError::missing("name"));
            assert_eq!(e.code(), ErrorCode::Validation);
            assert_eq!(e.to_string(), "name: required");
            assert_eq!(e.name(), Some("name"));
        }
        assert_eq!(
            check_declared(&json!({}), &[("name", ParamType::String, true)]),
            Err(ParamError::missing("name"))
        );
    }

    #[test]
    fn wrong_type_is_bad_request_and_names_the_type_wanted() {
        let mut p = params(json!({"k": [1], "s": "x", "neg": -1, "f": 1.5}));
        let cases: Vec<(Result<(), ParamError>, &str)> = vec![
            (p.str("k").map(drop), "k: must be a string"),
            (p.opt_str_max("k", 9).map(drop), "k: must be a string"),
            (p.u64("s").map(drop), "s: must be a non-negative integer"),
            (
                p.u64("neg").map(drop),
                "neg: must be a non-negative integer",
            ),
            (p.u64("f").map(drop), "f: must be a non-negative integer"),
            (p.i64("f").map(drop), "f: must be an integer"),
            (p.f64("s").map(drop), "s: must be a number"),
            (p.bool("s").map(drop), "s: must be a boolean"),
            (p.object("s").map(drop), "s: must be an object"),
            (p.string("k").map(drop), "k: must be a string"),
            (p.opt_object("k").map(drop), "k: must be an object"),
            (p.opt_array("s").map(drop), "s: must be an array"),
        ];
        for (got, want) in cases {
            let e = got.expect_err(want);
            assert_eq!(e.code(), ErrorCode::BadRequest, "{want}");
            assert_eq!(e.to_string(), want);
            assert!(matches!(e, ParamError::WrongType { .. }), "{want}");
        }
        let e = params(json!({"limit": "9"}))
            .limit(10, 20)
            .expect_err("type");
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(e.to_string(), "limit: must be a non-negative integer");
    }

    #[test]
    fn wrong_type_leaves_the_value_in_the_map() {
        let mut p = params(json!({"k": 1}));
        assert!(p.string("k").is_err());
        assert!(p.opt_object("k").is_err());
        assert!(p.opt_array("k").is_err());
        assert_eq!(p.get("k"), Some(&json!(1)));
    }

    #[test]
    fn null_param_counts_as_absent() {
        let mut p = params(json!({"a": null}));
        assert_eq!(p.get("a"), None);
        assert!(!p.has("a"));
        assert_eq!(p.opt_str("a"), Ok(None));
        assert_eq!(p.opt_u64("a"), Ok(None));
        assert_eq!(p.opt_bool("a"), Ok(None));
        assert_eq!(p.limit(7, 9), Ok(7));
        assert_eq!(p.str("a"), Err(ParamError::missing("a")));
        assert_eq!(p.opt_object("a"), Ok(None));
        assert_eq!(
            check_declared(&json!({"a": null}), &[("a", ParamType::String, false)]),
            Ok(())
        );
        assert_eq!(
            check_declared(&json!({"a": null}), &[("a", ParamType::String, true)]),
            Err(ParamError::missing("a"))
        );
    }

    #[test]
    fn null_params_mean_an_empty_object() {
        let p = params(Value::Null);
        assert_eq!(p.as_map(), &Map::new());
        assert_eq!(p.opt_str("x"), Ok(None));
        assert_eq!(
            check_declared(&Value::Null, &[("x", ParamType::Integer, false)]),
            Ok(())
        );
        assert_eq!(
            check_declared(&Value::Null, &[("x", ParamType::Integer, true)]),
            Err(ParamError::missing("x"))
        );
    }

    #[test]
    fn params_that_are_not_an_object_are_bad_request() {
        for v in [json!([]), json!("x"), json!(1), json!(true)] {
            let e = Params::new(v.clone()).expect_err("not an object");
            assert_eq!(e, ParamError::NotAnObject);
            assert_eq!(e.code(), ErrorCode::BadRequest);
            assert_eq!(e.to_string(), "params must be an object");
            assert_eq!(e.name(), None);
            assert_eq!(check_declared(&v, &[]), Err(ParamError::NotAnObject));
        }
    }

    #[test]
    fn blank_string_is_validation_and_names_it() {
        let p = params(json!({"a": "", "b": "  \t"}));
        for k in ["a", "b"] {
            let e = p.str_max(k, 10).expect_err("blank");
            assert_eq!(e.code(), ErrorCode::Validation);
            assert_eq!(e.to_string(), format!("{k}: must not be empty"));
        }
        // Without a max, an empty string is a string.
        assert_eq!(p.str("a"), Ok(""));
    }

    #[test]
    fn too_long_string_is_validation_counting_characters_not_bytes() {
        let p = params(json!({"name": "é".repeat(200), "long": "x".repeat(201), "pad": " a "}));
        assert_eq!(p.str_max("name", 200).map(str::len), Ok(400));
        let e = p.str_max("long", 200).expect_err("long");
        assert_eq!(e.code(), ErrorCode::Validation);
        assert_eq!(e.to_string(), "long: at most 200 characters");
        // Returned as sent.
        assert_eq!(p.opt_str_max("pad", 3), Ok(Some(" a ")));
    }

    #[test]
    fn limit_defaults_when_absent_and_rejects_zero_and_above_max_as_validation() {
        assert_eq!(params(json!({})).limit(50, 500), Ok(50));
        assert_eq!(params(json!({"limit": 500})).limit(50, 500), Ok(500));
        let e = params(json!({"limit": 0}))
            .limit(50, 500)
            .expect_err("zero");
        assert_eq!(e.code(), ErrorCode::Validation);
        assert_eq!(e.to_string(), "limit: must be at least 1");
        let e = params(json!({"limit": 900}))
            .limit(50, 500)
            .expect_err("max");
        assert_eq!(e.code(), ErrorCode::Validation);
        assert_eq!(e.to_string(), "limit: at most 500 (got 900)");
        let e = params(json!({"limit": u64::MAX}))
            .limit(50, 500)
            .expect_err("huge");
        assert_eq!(
            e.to_string(),
            format!("limit: at most 500 (got {})", u64::MAX)
        );
        assert_eq!(
            params(json!({"limit": -1}))
                .limit(50, 500)
                .map_err(|e| e.code()),
            Err(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn out_of_range_integer_is_validation_and_names_it() {
        let p = params(json!({"n": 5, "big": u64::MAX}));
        assert_eq!(p.opt_u64_range("n", 1, 5), Ok(Some(5)));
        assert_eq!(p.opt_u64_range("absent", 1, 5), Ok(None));
        let e = p.opt_u64_range("n", 6, 9).expect_err("low");
        assert_eq!(
            (e.code(), e.to_string()),
            (ErrorCode::Validation, "n: at least 6 (got 5)".into())
        );
        let e = p.opt_u64_range("n", 0, 4).expect_err("high");
        assert_eq!(
            (e.code(), e.to_string()),
            (ErrorCode::Validation, "n: at most 4 (got 5)".into())
        );
        let e = p.i64("big").expect_err("beyond i64");
        assert_eq!(e.code(), ErrorCode::Validation);
        assert_eq!(
            e.to_string(),
            format!("big: at most {} (got {})", i64::MAX, u64::MAX)
        );
    }

    #[test]
    fn typed_readers_return_the_values_sent() {
        let mut p = params(json!({
            "s": "text", "u": 7, "i": -7, "f": 2.5, "fi": 3, "b": true,
            "o": {"x": 1}, "a": [1, 2], "rest": "kept"
        }));
        assert_eq!(p.str("s"), Ok("text"));
        assert_eq!(p.u64("u"), Ok(7));
        assert_eq!(p.i64("i"), Ok(-7));
        assert_eq!(p.i64("u"), Ok(7));
        assert_eq!(p.f64("f"), Ok(2.5));
        assert_eq!(p.f64("fi"), Ok(3.0));
        assert_eq!(p.bool("b"), Ok(true));
        assert_eq!(p.string("s"), Ok("text".to_owned()));
        assert_eq!(p.object("o").map(Value::Object), Ok(json!({"x": 1})));
        assert_eq!(p.array("a"), Ok(vec![json!(1), json!(2)]));
        assert_eq!(p.take("i"), Some(json!(-7)));
        for taken in ["s", "o", "a", "i"] {
            assert!(!p.has(taken), "{taken} taken out");
        }
        assert!(p.has("rest"));
        let rest = p.into_map();
        assert_eq!(rest.get("rest"), Some(&json!("kept")));
        assert_eq!(rest.len(), 5); // u, f, fi, b, rest
    }

    #[test]
    fn opt_str_any_reads_the_first_alias_present() {
        let p = params(json!({"kind": "b", "type": null}));
        assert_eq!(p.opt_str_any(&["type", "kind"], 10), Ok(Some("b")));
        assert_eq!(p.opt_str_any(&["x", "y"], 10), Ok(None));
        let p = params(json!({"type": "", "kind": "b"}));
        let e = p.opt_str_any(&["type", "kind"], 10).expect_err("blank");
        assert_eq!(e.to_string(), "type: must not be empty");
    }

    #[test]
    fn within_names_the_path_and_keeps_the_code() {
        let cases = [
            (
                ParamError::missing("collection"),
                ErrorCode::Validation,
                "operations[3].collection: required",
            ),
            (
                ParamError::wrong_type("data", ParamType::Object),
                ErrorCode::BadRequest,
                "operations[3].data: must be an object",
            ),
            (
                ParamError::invalid("id", "must not be empty"),
                ErrorCode::Validation,
                "operations[3].id: must not be empty",
            ),
            (
                ParamError::NotAnObject,
                ErrorCode::BadRequest,
                "operations[3]: must be an object",
            ),
        ];
        for (e, code, message) in cases {
            let e = e.within("operations[3]");
            assert_eq!((e.code(), e.to_string().as_str()), (code, message));
        }
        assert_eq!(
            ParamError::NotAnObject.within("o").name(),
            Some("o"),
            "the parent is the param in question"
        );
    }

    #[test]
    fn error_body_carries_the_code_and_the_message() {
        let body: ErrorBody = ParamError::wrong_type("room", ParamType::String).into();
        assert_eq!(
            body,
            ErrorBody::new(ErrorCode::BadRequest, "room: must be a string")
        );
        let body: ErrorBody = ParamError::missing("room").into();
        assert_eq!(
            body,
            ErrorBody::new(ErrorCode::Validation, "room: required")
        );
        let body: ErrorBody = ParamError::invalid("limit", "at most 500 (got 900)").into();
        assert_eq!(
            body,
            ErrorBody::new(ErrorCode::Validation, "limit: at most 500 (got 900)")
        );
        let body: ErrorBody = ParamError::NotAnObject.into();
        assert_eq!(
            body,
            ErrorBody::new(ErrorCode::BadRequest, "params must be an object")
        );
    }

    #[test]
    fn every_type_word_in_use_parses_and_unknown_or_compound_words_are_any() {
        let words = [
            ("string", ParamType::String),
            ("integer", ParamType::Integer),
            ("number", ParamType::Number),
            ("boolean", ParamType::Boolean),
            ("object", ParamType::Object),
            ("array", ParamType::Array),
            ("non-negative integer", ParamType::UnsignedInteger),
            (" String ", ParamType::String),
            ("string|array", ParamType::Any),
            ("string[]", ParamType::Any),
            ("json", ParamType::Any),
            ("", ParamType::Any),
            ("any", ParamType::Any),
        ];
        for (word, ty) in words {
            assert_eq!(ParamType::parse(word), ty, "{word:?}");
        }
        for ty in ParamType::ALL {
            assert_eq!(ParamType::parse(ty.as_str()), ty);
            assert_eq!(ty.to_string(), ty.as_str());
        }
    }

    #[test]
    fn types_match_json_kinds() {
        use ParamType as T;
        let cases = [
            (json!("s"), vec![T::String]),
            (json!(3), vec![T::Integer, T::UnsignedInteger, T::Number]),
            (json!(-3), vec![T::Integer, T::Number]),
            (
                json!(u64::MAX),
                vec![T::Integer, T::UnsignedInteger, T::Number],
            ),
            (json!(1.5), vec![T::Number]),
            (json!(true), vec![T::Boolean]),
            (json!({}), vec![T::Object]),
            (json!([]), vec![T::Array]),
            (Value::Null, vec![]),
        ];
        for (v, yes) in cases {
            assert!(T::Any.matches(&v));
            for ty in T::ALL.into_iter().filter(|t| *t != T::Any) {
                assert_eq!(ty.matches(&v), yes.contains(&ty), "{ty:?} on {v}");
            }
        }
        assert_eq!(T::UnsignedInteger.describe(), "a non-negative integer");
        assert_eq!(T::Object.describe(), "an object");
    }

    #[test]
    fn check_declared_reports_the_first_problem_in_declaration_order() {
        let decl = [
            ("a", ParamType::String, true),
            ("b", ParamType::Integer, false),
            ("c", ParamType::Object, true),
        ];
        let v = json!({"b": "x"});
        assert_eq!(check_declared(&v, &decl), Err(ParamError::missing("a")));
        let v = json!({"a": "x", "b": "x"});
        assert_eq!(
            check_declared(&v, &decl),
            Err(ParamError::wrong_type("b", ParamType::Integer))
        );
        let v = json!({"a": "x", "b": 1});
        assert_eq!(check_declared(&v, &decl), Err(ParamError::missing("c")));
        let v = json!({"a": "x", "c": {}, "undeclared": [1]});
        assert_eq!(check_declared(&v, &decl), Ok(()));
        let v = json!({"a": 1, "c": {}});
        assert_eq!(
            check_declared_iter(&v, decl.iter().map(|d| (d.0, d.1, d.2))),
            Err(ParamError::wrong_type("a", ParamType::String))
        );
    }

    #[test]
    fn check_declared_agrees_with_the_readers() {
        let v = json!({"s": 1, "n": "x", "o": [], "ok": "y"});
        let p = params(v.clone());
        let mut q = p.clone();
        let pairs: [(&str, ParamType, Result<(), ParamError>); 4] = [
            ("s", ParamType::String, p.opt_str("s").map(drop)),
            ("n", ParamType::UnsignedInteger, p.opt_u64("n").map(drop)),
            ("o", ParamType::Object, q.opt_object("o").map(drop)),
            ("ok", ParamType::String, p.str("ok").map(drop)),
        ];
        for (k, ty, read) in pairs {
            assert_eq!(check_declared(&v, &[(k, ty, true)]), read, "{k}");
        }
        assert_eq!(
            check_declared(&v, &[("m", ParamType::Any, true)]),
            p.str("m").map(drop)
        );
    }
}
