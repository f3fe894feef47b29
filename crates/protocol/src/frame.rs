//! The three message shapes (request, response, event) and their exact JSON encoding.
//!
//! Decoding is done by hand from one pass of the JSON parser into a small envelope of known fields,
//! so that every malformed body is classified precisely (which `id`, if any, can be echoed back and
//! which field is at fault) without parsing the body twice. Encoding writes the fields in a fixed,
//! documented order (`type` first) straight into the output buffer.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ErrorBody, ErrorCode};

/// One protocol message: the JSON object carried by one length-prefixed frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `{"type":"request",...}`: asks the peer to run a command.
    Request(Request),
    /// `{"type":"response",...}`: answers exactly one request.
    Response(Response),
    /// `{"type":"event",...}`: pushed to a connection that subscribed.
    Event(EventFrame),
}

/// A command invocation. Ids are chosen by the sender and scoped to its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Sender-chosen id echoed by the response.
    pub id: u64,
    /// Slash path such as `data/list`.
    pub command: String,
    /// Always a JSON object; an omitted (or `null`) `params` decodes as `{}`. An empty object is
    /// omitted on encode.
    pub params: Value,
    /// Deadline requested by the caller; `None` = the command's default.
    pub timeout_ms: Option<u64>,
}

impl Request {
    /// A request without an explicit timeout. A `null` `params` becomes `{}`.
    pub fn new(id: u64, command: impl Into<String>, params: Value) -> Self {
        Request {
            id,
            command: command.into(),
            params: if params.is_null() {
                Value::Object(Map::new())
            } else {
                params
            },
            timeout_ms: None,
        }
    }

    /// Set the requested deadline.
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }
}

/// The answer to one request: `success` + `result`, or `success: false` + `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request answered; `None` (`null` on the wire) when it could not be known.
    pub id: Option<u64>,
    /// `Ok(result)` or `Err(error)`.
    pub outcome: Result<Value, ErrorBody>,
}

impl Response {
    /// A successful response.
    pub fn ok(id: u64, result: Value) -> Self {
        Response {
            id: Some(id),
            outcome: Ok(result),
        }
    }

    /// A failed response; `id` is `None` when the request id is unknown.
    pub fn err(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Response {
            id,
            outcome: Err(ErrorBody::new(code, message)),
        }
    }

    /// A failed response from an existing error body.
    pub fn from_error(id: Option<u64>, error: ErrorBody) -> Self {
        Response {
            id,
            outcome: Err(error),
        }
    }

    /// `true` for `success: true`.
    pub fn is_success(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// An event pushed for a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFrame {
    /// The id returned by `events/subscribe`.
    pub subscription: u64,
    /// Topic such as `data:users:created`, or `system:lagged`.
    pub topic: String,
    /// Event payload (any JSON value; `null` when omitted).
    pub data: Value,
}

/// Topic of the marker event that reports events dropped for a slow consumer.
pub const LAGGED_TOPIC: &str = "system:lagged";

impl EventFrame {
    /// The `system:lagged` marker: `{"missed": n}` events of this subscription were dropped.
    pub fn lagged(subscription: u64, missed: u64) -> Self {
        let mut data = Map::with_capacity(1);
        data.insert("missed".to_owned(), Value::from(missed));
        EventFrame {
            subscription,
            topic: LAGGED_TOPIC.to_owned(),
            data: Value::Object(data),
        }
    }

    /// If this is a `system:lagged` marker, how many events were missed.
    pub fn lagged_count(&self) -> Option<u64> {
        if self.topic == LAGGED_TOPIC {
            self.data.get("missed").and_then(Value::as_u64)
        } else {
            None
        }
    }
}

/// The three values of the `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// `"request"`
    Request,
    /// `"response"`
    Response,
    /// `"event"`
    Event,
}

impl FrameType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameType::Request => "request",
            FrameType::Response => "response",
            FrameType::Event => "event",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "request" => Some(FrameType::Request),
            "response" => Some(FrameType::Response),
            "event" => Some(FrameType::Event),
            _ => None,
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame body that is not a valid message. Framing is intact, so the connection stays open;
/// the receiver answers `Response::err(bad.id, ErrorCode::BadRequest, bad.message)`
/// (see [`BadFrame::to_response`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadFrame {
    /// The id to echo: only set when the body was an object with a valid `type` of request whose
    /// `id` is a u64, or (for other/unknown types) whose `id` field happens to be a u64.
    pub id: Option<u64>,
    /// The `type` of the frame, when it was a known one.
    pub frame_type: Option<FrameType>,
    /// Human explanation, e.g. `field 'command' is required and must be a string`.
    pub message: String,
}

impl BadFrame {
    fn new(id: Option<u64>, frame_type: Option<FrameType>, message: impl Into<String>) -> Self {
        BadFrame {
            id,
            frame_type,
            message: message.into(),
        }
    }

    /// The `bad_request` error body for this frame.
    pub fn to_error_body(&self) -> ErrorBody {
        ErrorBody::new(ErrorCode::BadRequest, self.message.clone())
    }

    /// The `bad_request` response the receiver sends back.
    pub fn to_response(&self) -> Response {
        Response::from_error(self.id, self.to_error_body())
    }
}

impl From<BadFrame> for Response {
    fn from(bad: BadFrame) -> Self {
        Response {
            id: bad.id,
            outcome: Err(ErrorBody::new(ErrorCode::BadRequest, bad.message)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Frame::Request(r) => {
                let params_empty = r.params.as_object().is_some_and(Map::is_empty);
                let len = 3 + usize::from(!params_empty) + usize::from(r.timeout_ms.is_some());
                let mut map = serializer.serialize_map(Some(len))?;
                map.serialize_entry("type", "request")?;
                map.serialize_entry("id", &r.id)?;
                map.serialize_entry("command", &r.command)?;
                if !params_empty {
                    map.serialize_entry("params", &r.params)?;
                }
                if let Some(t) = r.timeout_ms {
                    map.serialize_entry("timeout_ms", &t)?;
                }
                map.end()
            }
            Frame::Response(r) => {
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry("type", "response")?;
                map.serialize_entry("id", &r.id)?;
                match &r.outcome {
                    Ok(result) => {
                        map.serialize_entry("success", &true)?;
                        map.serialize_entry("result", result)?;
                    }
                    Err(error) => {
                        map.serialize_entry("success", &false)?;
                        map.serialize_entry("error", error)?;
                    }
                }
                map.end()
            }
            Frame::Event(e) => {
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry("type", "event")?;
                map.serialize_entry("subscription", &e.subscription)?;
                map.serialize_entry("topic", &e.topic)?;
                map.serialize_entry("data", &e.data)?;
                map.end()
            }
        }
    }
}

impl Frame {
    /// Append the JSON body (no length prefix) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Infallible: a Vec never fails to write, and every value here is a `serde_json::Value`,
        // `String` or integer (object keys are always strings, numbers are always finite).
        serde_json::to_writer(out, self).expect("serializing a frame into memory cannot fail");
    }

    /// Append the JSON body (no length prefix) to `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        // Infallible for the same reasons as `write_json`.
        serde_json::to_writer(dst.writer(), self)
            .expect("serializing a frame into memory cannot fail");
    }

    /// The JSON body (no length prefix).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_json(&mut out);
        out
    }

    /// The JSON body (no length prefix).
    pub fn encode(&self) -> Bytes {
        Bytes::from(self.to_vec())
    }

    /// Decode one frame body (the bytes after the length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, BadFrame> {
        let text = std::str::from_utf8(body)
            .map_err(|e| BadFrame::new(None, None, format!("body is not valid UTF-8: {e}")))?;
        let parsed: Parsed = serde_json::from_str(text)
            .map_err(|e| BadFrame::new(None, None, format!("body is not valid JSON: {e}")))?;
        match parsed {
            Parsed::NotObject(kind) => Err(BadFrame::new(
                None,
                None,
                format!("body must be a JSON object, found {kind}"),
            )),
            Parsed::Object(env) => env.classify(),
        }
    }

    /// The `type` of this frame.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Request(_) => FrameType::Request,
            Frame::Response(_) => FrameType::Response,
            Frame::Event(_) => FrameType::Event,
        }
    }
}

impl From<Request> for Frame {
    fn from(r: Request) -> Self {
        Frame::Request(r)
    }
}

impl From<Response> for Frame {
    fn from(r: Response) -> Self {
        Frame::Response(r)
    }
}

impl From<EventFrame> for Frame {
    fn from(e: EventFrame) -> Self {
        Frame::Event(e)
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// What a body parsed to: an object's known fields, or the kind of non-object it was.
#[allow(
    clippy::large_enum_variant,
    reason = "a short-lived stack value; boxing would add an allocation per frame"
)]
enum Parsed {
    Object(Envelope),
    NotObject(&'static str),
}

/// The known fields of a frame object, each still a raw JSON value so that its type can be
/// checked with a precise message. Unknown fields are skipped without being materialized.
/// Duplicate keys: the last one wins (as with `serde_json::Value`).
#[derive(Default)]
struct Envelope {
    ty: Option<Value>,
    id: Option<Value>,
    command: Option<Value>,
    params: Option<Value>,
    timeout_ms: Option<Value>,
    success: Option<Value>,
    result: Option<Value>,
    error: Option<Value>,
    subscription: Option<Value>,
    topic: Option<Value>,
    data: Option<Value>,
}

enum Key {
    Type,
    Id,
    Command,
    Params,
    TimeoutMs,
    Success,
    Result,
    Error,
    Subscription,
    Topic,
    Data,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "type" => Key::Type,
                    "id" => Key::Id,
                    "command" => Key::Command,
                    "params" => Key::Params,
                    "timeout_ms" => Key::TimeoutMs,
                    "success" => Key::Success,
                    "result" => Key::Result,
                    "error" => Key::Error,
                    "subscription" => Key::Subscription,
                    "topic" => Key::Topic,
                    "data" => Key::Data,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ParsedVisitor;
        impl<'de> Visitor<'de> for ParsedVisitor {
            type Value = Parsed;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
                let mut env = Envelope::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Type => &mut env.ty,
                        Key::Id => &mut env.id,
                        Key::Command => &mut env.command,
                        Key::Params => &mut env.params,
                        Key::TimeoutMs => &mut env.timeout_ms,
                        Key::Success => &mut env.success,
                        Key::Result => &mut env.result,
                        Key::Error => &mut env.error,
                        Key::Subscription => &mut env.subscription,
                        Key::Topic => &mut env.topic,
                        Key::Data => &mut env.data,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Value>()?);
                }
                Ok(Parsed::Object(env))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Parsed::NotObject("an array"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Parsed, E> {
                Ok(Parsed::NotObject("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Parsed, E> {
                Ok(Parsed::NotObject("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Parsed, E> {
                Ok(Parsed::NotObject("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Parsed, E> {
                Ok(Parsed::NotObject("a number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Parsed, E> {
                Ok(Parsed::NotObject("a string"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Parsed, E> {
                Ok(Parsed::NotObject("null"))
            }
            fn visit_none<E: de::Error>(self) -> Result<Parsed, E> {
                Ok(Parsed::NotObject("null"))
            }
        }
        d.deserialize_any(ParsedVisitor)
    }
}

/// Describe a JSON value's kind for error messages ("found a string").
fn describe(v: Option<&Value>) -> &'static str {
    match v {
        None => "it is missing",
        Some(Value::Null) => "found null",
        Some(Value::Bool(_)) => "found a boolean",
        Some(Value::Number(n)) => {
            if n.is_u64() {
                "found an integer"
            } else if n.is_i64() {
                "found a negative integer"
            } else {
                "found a non-integer number"
            }
        }
        Some(Value::String(_)) => "found a string",
        Some(Value::Array(_)) => "found an array",
        Some(Value::Object(_)) => "found an object",
    }
}

/// `None` and `null` both mean "omitted" for optional fields.
fn present(v: Option<Value>) -> Option<Value> {
    v.filter(|v| !v.is_null())
}

impl Envelope {
    fn classify(self) -> Result<Frame, BadFrame> {
        let loose_id = self.id.as_ref().and_then(Value::as_u64);
        let ty = match &self.ty {
            Some(Value::String(s)) => match FrameType::parse(s) {
                Some(t) => t,
                None => {
                    return Err(BadFrame::new(
                        loose_id,
                        None,
                        format!(
                            "unknown frame type '{s}' (expected 'request', 'response' or 'event')"
                        ),
                    ));
                }
            },
            other => {
                return Err(BadFrame::new(
                    loose_id,
                    None,
                    format!(
                        "field 'type' is required and must be a string ({})",
                        describe(other.as_ref())
                    ),
                ));
            }
        };
        match ty {
            FrameType::Request => self.into_request(),
            FrameType::Response => self.into_response(loose_id),
            FrameType::Event => self.into_event(loose_id),
        }
    }

    fn into_request(self) -> Result<Frame, BadFrame> {
        let t = Some(FrameType::Request);
        let Some(id) = self.id.as_ref().and_then(Value::as_u64) else {
            return Err(BadFrame::new(
                None,
                t,
                format!(
                    "field 'id' is required and must be a non-negative integer ({})",
                    describe(self.id.as_ref())
                ),
            ));
        };
        let bad = |message: String| Err(BadFrame::new(Some(id), t, message));
        let command = match self.command {
            Some(Value::String(s)) => s,
            other => {
                return bad(format!(
                    "field 'command' is required and must be a string ({})",
                    describe(other.as_ref())
                ));
            }
        };
        let params = match present(self.params) {
            None => Value::Object(Map::new()),
            Some(p @ Value::Object(_)) => p,
            Some(other) => {
                return bad(format!(
                    "field 'params' must be an object when present ({})",
                    describe(Some(&other))
                ));
            }
        };
        let timeout_ms = match present(self.timeout_ms) {
            None => None,
            Some(v) => match v.as_u64() {
                Some(ms) => Some(ms),
                None => {
                    return bad(format!(
                        "field 'timeout_ms' must be a non-negative integer when present ({})",
                        describe(Some(&v))
                    ));
                }
            },
        };
        Ok(Frame::Request(Request {
            id,
            command,
            params,
            timeout_ms,
        }))
    }

    fn into_response(self, loose_id: Option<u64>) -> Result<Frame, BadFrame> {
        let t = Some(FrameType::Response);
        let id = match &self.id {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(id) => Some(id),
                None => {
                    return Err(BadFrame::new(
                        None,
                        t,
                        format!(
                            "field 'id' must be a non-negative integer or null ({})",
                            describe(Some(v))
                        ),
                    ));
                }
            },
        };
        let bad = |message: String| Err(BadFrame::new(loose_id, t, message));
        let outcome = match self.success {
            Some(Value::Bool(true)) => Ok(self.result.unwrap_or(Value::Null)),
            Some(Value::Bool(false)) => match self.error {
                Some(Value::Object(mut obj)) => {
                    let code = match obj.get("code") {
                        Some(Value::String(c)) => match parse_code(c) {
                            Some(code) => code,
                            None => return bad(format!("unknown error code '{c}'")),
                        },
                        other => {
                            return bad(format!(
                                "field 'error.code' is required and must be a string ({})",
                                describe(other)
                            ));
                        }
                    };
                    let message = match obj.remove("message") {
                        Some(Value::String(m)) => m,
                        other => {
                            return bad(format!(
                                "field 'error.message' is required and must be a string ({})",
                                describe(other.as_ref())
                            ));
                        }
                    };
                    Err(ErrorBody { code, message })
                }
                other => {
                    return bad(format!(
                        "field 'error' is required and must be an object when 'success' is false ({})",
                        describe(other.as_ref())
                    ));
                }
            },
            other => {
                return bad(format!(
                    "field 'success' is required and must be a boolean ({})",
                    describe(other.as_ref())
                ));
            }
        };
        Ok(Frame::Response(Response { id, outcome }))
    }

    fn into_event(self, loose_id: Option<u64>) -> Result<Frame, BadFrame> {
        let t = Some(FrameType::Event);
        let subscription = match self.subscription.as_ref().and_then(Value::as_u64) {
            Some(s) => s,
            None => {
                return Err(BadFrame::new(
                    loose_id,
                    t,
                    format!(
                        "field 'subscription' is required and must be a non-negative integer ({})",
                        describe(self.subscription.as_ref())
                    ),
                ));
            }
        };
        let topic = match self.topic {
            Some(Value::String(s)) => s,
            other => {
                return Err(BadFrame::new(
                    loose_id,
                    t,
                    format!(
                        "field 'topic' is required and must be a string ({})",
                        describe(other.as_ref())
                    ),
                ));
            }
        };
        Ok(Frame::Event(EventFrame {
            subscription,
            topic,
            data: self.data.unwrap_or(Value::Null),
        }))
    }
}

fn parse_code(s: &str) -> Option<ErrorCode> {
    ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bad(body: &str) -> BadFrame {
        match Frame::decode(body.as_bytes()) {
            Ok(f) => panic!("expected a bad frame for {body}, got {f:?}"),
            Err(b) => b,
        }
    }

    fn good(body: &str) -> Frame {
        match Frame::decode(body.as_bytes()) {
            Ok(f) => f,
            Err(b) => panic!("expected a frame for {body}, got {b:?}"),
        }
    }

    #[test]
    fn invalid_utf8_has_no_id() {
        let b = Frame::decode(b"{\"type\":\"request\",\"id\":1,\"command\":\"\xff\"}")
            .expect_err("bad utf8");
        assert_eq!(b.id, None);
        assert!(
            b.message.starts_with("body is not valid UTF-8"),
            "{}",
            b.message
        );
    }

    #[test]
    fn invalid_json_has_no_id() {
        let b = bad(r#"{"type":"request","id":1,"command":"ping""#);
        assert_eq!(b.id, None);
        assert!(
            b.message.starts_with("body is not valid JSON"),
            "{}",
            b.message
        );
        let b = bad("");
        assert_eq!(b.id, None);
        let b = bad(r#"{"type":"request","id":1,"command":"ping"} trailing"#);
        assert_eq!(b.id, None);
    }

    #[test]
    fn non_object_has_no_id() {
        for (body, kind) in [
            ("[1,2]", "an array"),
            ("17", "a number"),
            ("-1.5", "a number"),
            ("\"request\"", "a string"),
            ("null", "null"),
            ("true", "a boolean"),
        ] {
            let b = bad(body);
            assert_eq!(b.id, None);
            assert_eq!(
                b.message,
                format!("body must be a JSON object, found {kind}")
            );
        }
    }

    #[test]
    fn missing_type_recovers_u64_id() {
        let b = bad(r#"{"id":5,"command":"ping"}"#);
        assert_eq!(b.id, Some(5));
        assert_eq!(
            b.message,
            "field 'type' is required and must be a string (it is missing)"
        );
    }

    #[test]
    fn non_string_type_recovers_u64_id() {
        let b = bad(r#"{"type":1,"id":6}"#);
        assert_eq!(b.id, Some(6));
        assert_eq!(
            b.message,
            "field 'type' is required and must be a string (found an integer)"
        );
        let b = bad(r#"{"type":null,"id":"6"}"#);
        assert_eq!(b.id, None);
    }

    #[test]
    fn unknown_type_recovers_u64_id() {
        let b = bad(r#"{"type":"ping","id":7}"#);
        assert_eq!(b.id, Some(7));
        assert_eq!(
            b.message,
            "unknown frame type 'ping' (expected 'request', 'response' or 'event')"
        );
        let b = bad(r#"{"type":"ping","id":-7}"#);
        assert_eq!(b.id, None);
    }

    #[test]
    fn request_missing_id_has_no_id() {
        let b = bad(r#"{"type":"request","command":"ping"}"#);
        assert_eq!(b.id, None);
        assert_eq!(b.frame_type, Some(FrameType::Request));
        assert_eq!(
            b.message,
            "field 'id' is required and must be a non-negative integer (it is missing)"
        );
    }

    #[test]
    fn request_negative_id_has_no_id() {
        let b = bad(r#"{"type":"request","id":-1,"command":"ping"}"#);
        assert_eq!(b.id, None);
        assert!(
            b.message.contains("found a negative integer"),
            "{}",
            b.message
        );
    }

    #[test]
    fn request_float_id_has_no_id() {
        let b = bad(r#"{"type":"request","id":1.0,"command":"ping"}"#);
        assert_eq!(b.id, None);
        assert!(
            b.message.contains("found a non-integer number"),
            "{}",
            b.message
        );
        let b = bad(r#"{"type":"request","id":1e3,"command":"ping"}"#);
        assert_eq!(b.id, None);
    }

    #[test]
    fn request_string_id_has_no_id() {
        let b = bad(r#"{"type":"request","id":"1","command":"ping"}"#);
        assert_eq!(b.id, None);
        assert!(b.message.contains("found a string"), "{}", b.message);
    }

    #[test]
    fn request_id_above_u64_has_no_id() {
        let b = bad(r#"{"type":"request","id":18446744073709551616,"command":"ping"}"#);
        assert_eq!(b.id, None);
    }

    #[test]
    fn request_missing_command_keeps_id() {
        let b = bad(r#"{"type":"request","id":9}"#);
        assert_eq!(b.id, Some(9));
        assert_eq!(
            b.message,
            "field 'command' is required and must be a string (it is missing)"
        );
    }

    #[test]
    fn request_non_string_command_keeps_id() {
        let b = bad(r#"{"type":"request","id":9,"command":["ping"]}"#);
        assert_eq!(b.id, Some(9));
        assert_eq!(
            b.message,
            "field 'command' is required and must be a string (found an array)"
        );
    }

    #[test]
    fn request_non_object_params_keeps_id() {
        for (p, found) in [
            ("[]", "found an array"),
            ("\"x\"", "found a string"),
            ("3", "found an integer"),
            ("false", "found a boolean"),
        ] {
            let b = bad(&format!(
                r#"{{"type":"request","id":10,"command":"ping","params":{p}}}"#
            ));
            assert_eq!(b.id, Some(10));
            assert_eq!(
                b.message,
                format!("field 'params' must be an object when present ({found})")
            );
        }
    }

    #[test]
    fn request_null_params_is_omitted() {
        let f = good(r#"{"type":"request","id":11,"command":"ping","params":null}"#);
        assert_eq!(f, Frame::Request(Request::new(11, "ping", json!({}))));
        let f = good(r#"{"type":"request","id":11,"command":"ping"}"#);
        assert_eq!(f, Frame::Request(Request::new(11, "ping", json!({}))));
    }

    #[test]
    fn request_bad_timeout_keeps_id() {
        for (t, found) in [
            ("-5", "found a negative integer"),
            ("1.5", "found a non-integer number"),
            ("\"5\"", "found a string"),
        ] {
            let b = bad(&format!(
                r#"{{"type":"request","id":12,"command":"ping","timeout_ms":{t}}}"#
            ));
            assert_eq!(b.id, Some(12));
            assert_eq!(
                b.message,
                format!("field 'timeout_ms' must be a non-negative integer when present ({found})")
            );
        }
        let f = good(r#"{"type":"request","id":12,"command":"ping","timeout_ms":null}"#);
        assert_eq!(f, Frame::Request(Request::new(12, "ping", json!({}))));
    }

    #[test]
    fn request_full_decodes() {
        let f = good(
            r#"{"type":"request","id":17,"command":"data/list","params":{"collection":"users","limit":10},"timeout_ms":5000,"extra":[1,{"a":2}]}"#,
        );
        assert_eq!(
            f,
            Frame::Request(
                Request::new(17, "data/list", json!({"collection":"users","limit":10}))
                    .with_timeout_ms(5000)
            )
        );
    }

    #[test]
    fn response_shapes_encode_exactly() {
        let ok = Frame::Response(Response::ok(17, json!({"count":0})));
        assert_eq!(
            String::from_utf8(ok.to_vec()).expect("utf8"),
            r#"{"type":"response","id":17,"success":true,"result":{"count":0}}"#
        );
        let err = Frame::Response(Response::err(None, ErrorCode::Validation, "nope"));
        assert_eq!(
            String::from_utf8(err.to_vec()).expect("utf8"),
            r#"{"type":"response","id":null,"success":false,"error":{"code":"validation","message":"nope"}}"#
        );
        let req = Frame::Request(Request::new(1, "ping", Value::Null));
        assert_eq!(
            String::from_utf8(req.to_vec()).expect("utf8"),
            r#"{"type":"request","id":1,"command":"ping"}"#
        );
        let ev = Frame::Event(EventFrame::lagged(3, 120));
        assert_eq!(
            String::from_utf8(ev.to_vec()).expect("utf8"),
            r#"{"type":"event","subscription":3,"topic":"system:lagged","data":{"missed":120}}"#
        );
    }

    #[test]
    fn response_frames_decode_and_malformed_ones_name_the_field() {
        assert_eq!(
            good(
                r#"{"type":"response","id":null,"success":false,"error":{"code":"frame_too_large","message":"m"}}"#
            ),
            Frame::Response(Response::err(None, ErrorCode::FrameTooLarge, "m"))
        );
        assert_eq!(
            good(r#"{"type":"response","id":4,"success":true}"#),
            Frame::Response(Response::ok(4, Value::Null))
        );
        let b = bad(r#"{"type":"response","id":4,"success":"yes"}"#);
        assert_eq!(b.id, Some(4));
        assert_eq!(b.frame_type, Some(FrameType::Response));
        let b = bad(
            r#"{"type":"response","id":4,"success":false,"error":{"code":"nope","message":"m"}}"#,
        );
        assert_eq!(b.message, "unknown error code 'nope'");
        let b = bad(r#"{"type":"response","id":4,"success":false,"error":{"code":"internal"}}"#);
        assert_eq!(
            b.message,
            "field 'error.message' is required and must be a string (it is missing)"
        );
        let b = bad(r#"{"type":"response","id":"4","success":true}"#);
        assert_eq!(b.id, None);
    }

    #[test]
    fn event_frames_decode_and_missing_fields_are_named() {
        assert_eq!(
            good(r#"{"type":"event","subscription":3,"topic":"t","data":[1]}"#),
            Frame::Event(EventFrame {
                subscription: 3,
                topic: "t".into(),
                data: json!([1])
            })
        );
        let b = bad(r#"{"type":"event","topic":"t"}"#);
        assert_eq!(
            b.message,
            "field 'subscription' is required and must be a non-negative integer (it is missing)"
        );
        let b = bad(r#"{"type":"event","subscription":1,"topic":2}"#);
        assert_eq!(
            b.message,
            "field 'topic' is required and must be a string (found an integer)"
        );
    }

    #[test]
    fn bad_frame_becomes_bad_request_response() {
        let b = bad(r#"{"type":"request","id":9}"#);
        let r = b.to_response();
        assert_eq!(r.id, Some(9));
        assert_eq!(r.outcome.expect_err("error").code, ErrorCode::BadRequest);
    }

    #[test]
    fn lagged_count_is_read_only_from_a_lagged_marker() {
        let e = EventFrame::lagged(2, 5);
        assert_eq!(e.lagged_count(), Some(5));
        assert_eq!(
            EventFrame {
                subscription: 2,
                topic: "x".into(),
                data: json!({"missed": 1})
            }
            .lagged_count(),
            None
        );
    }
}
