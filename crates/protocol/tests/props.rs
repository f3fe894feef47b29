//! Property tests: encode/decode round trips, framing at arbitrary split points, and robustness
//! against arbitrary input; the params reader on arbitrary JSON; the time text round trip.

use bytes::BytesMut;
use daemonhost_protocol::time::{MAX_MS, MIN_MS, format_ms, parse_date_ms};
use daemonhost_protocol::{
    CodecError, ErrorBody, ErrorCode, EventFrame, Frame, FrameCodec, ParamError, ParamType, Params,
    RawFrameCodec, Request, Response, check_declared,
};
use proptest::prelude::*;
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Floats that print and parse back exactly (serde_json's default float parser is not
        // always correctly rounded for arbitrary values).
        (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        any::<String>().prop_map(Value::String),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(any::<String>(), arb_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>()))
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u64>(),
            any::<String>(),
            arb_object(),
            any::<Option<u64>>()
        )
            .prop_map(|(id, command, params, timeout_ms)| Frame::Request(Request {
                id,
                command,
                params,
                timeout_ms
            })),
        (any::<Option<u64>>(), arb_value())
            .prop_map(|(id, v)| Frame::Response(Response { id, outcome: Ok(v) })),
        (any::<Option<u64>>(), arb_code(), any::<String>()).prop_map(|(id, code, message)| {
            Frame::Response(Response {
                id,
                outcome: Err(ErrorBody::new(code, message)),
            })
        }),
        (any::<u64>(), any::<String>(), arb_value()).prop_map(|(subscription, topic, data)| {
            Frame::Event(EventFrame {
                subscription,
                topic,
                data,
            })
        }),
    ]
}

/// Objects made of the known field names with values of any type: exercises every
/// classification branch.
fn arb_envelope() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "type",
        "id",
        "command",
        "params",
        "timeout_ms",
        "success",
        "result",
        "error",
        "subscription",
        "topic",
        "data",
        "other",
    ]);
    let ty = prop::sample::select(vec!["request", "response", "event", "bogus"])
        .prop_map(|s| Value::String(s.to_owned()));
    let code = prop::sample::select(vec!["validation", "internal", "nope"]).prop_map(|c| {
        let mut m = Map::new();
        m.insert("code".into(), Value::String(c.to_owned()));
        m.insert("message".into(), Value::String("m".into()));
        Value::Object(m)
    });
    let value = prop_oneof![arb_value(), ty, code];
    prop::collection::vec((key, value), 0..8).prop_map(|fields| {
        let mut m = Map::new();
        for (k, v) in fields {
            m.insert(k.to_owned(), v);
        }
        serde_json::to_vec(&Value::Object(m)).expect("serialize")
    })
}

/// Param names shared by generated params and declarations, so declared params are often present.
const NAMES: [&str; 5] = ["a", "b", "limit", "type", "kind"];

fn arb_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(NAMES.to_vec())
}

/// Any JSON value as params, but mostly objects keyed by [`NAMES`].
fn arb_params() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => arb_value(),
        3 => prop::collection::btree_map(arb_name(), arb_value(), 0..6).prop_map(|m| {
            Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }),
    ]
}

fn arb_declared() -> impl Strategy<Value = Vec<(&'static str, ParamType, bool)>> {
    prop::collection::vec(
        (
            arb_name(),
            prop::sample::select(ParamType::ALL.to_vec()),
            any::<bool>(),
        ),
        0..6,
    )
}

/// Every reader on one name, as `Result<(), ParamError>`.
fn read_all(p: &Params, k: &str, max: usize) -> Vec<Result<(), ParamError>> {
    let mut owned = p.clone();
    vec![
        p.str(k).map(drop),
        p.opt_str(k).map(drop),
        p.str_max(k, max).map(drop),
        p.opt_str_max(k, max).map(drop),
        p.opt_str_any(&[k, "kind"], max).map(drop),
        p.u64(k).map(drop),
        p.opt_u64(k).map(drop),
        p.opt_u64_range(k, 1, max as u64).map(drop),
        p.i64(k).map(drop),
        p.opt_i64(k).map(drop),
        p.f64(k).map(drop),
        p.opt_f64(k).map(drop),
        p.bool(k).map(drop),
        p.opt_bool(k).map(drop),
        p.limit(10, max.max(10)).map(drop),
        owned.clone().string(k).map(drop),
        owned.clone().opt_string(k).map(drop),
        owned.clone().object(k).map(drop),
        owned.clone().opt_object(k).map(drop),
        owned.clone().array(k).map(drop),
        owned.opt_array(k).map(drop),
    ]
}

fn assert_param_error(e: &ParamError) -> Result<(), TestCaseError> {
    let code = e.code();
    prop_assert!(
        code == ErrorCode::BadRequest || code == ErrorCode::Validation,
        "{code:?}"
    );
    let body = ErrorBody::from(e.clone());
    prop_assert_eq!(body.code, code);
    prop_assert_eq!(&body.message, &e.to_string());
    match e.name() {
        Some(name) => {
            let prefix = format!("{name}: ");
            prop_assert!(body.message.starts_with(&prefix), "{}", body.message);
        }
        None => prop_assert_eq!(body.message.as_str(), "params must be an object"),
    }
    Ok(())
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    for f in frames {
        codec.encode(f, &mut buf).expect("encode");
    }
    buf.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frame_round_trips(frame in arb_frame()) {
        let body = frame.encode();
        let back = Frame::decode(&body);
        prop_assert_eq!(back, Ok(frame.clone()));
        // The body is a JSON object whose `type` comes first, as documented.
        let text = std::str::from_utf8(&body).expect("utf8");
        prop_assert!(text.starts_with("{\"type\":\""), "{}", text);
        prop_assert_eq!(frame.to_vec(), body.to_vec());
    }

    #[test]
    fn stream_split_anywhere_yields_the_same_frames(
        frames in prop::collection::vec(arb_frame(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let bytes = encode_all(&frames);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort_unstable();
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut start = 0;
        for p in points {
            buf.extend_from_slice(&bytes[start..p]);
            start = p;
            while let Some(item) = codec.decode(&mut buf).expect("no stream error") {
                out.push(item.expect("valid frame"));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut codec = FrameCodec::with_max_frame_len(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(CodecError::FrameTooLarge { declared, max }) => {
                    prop_assert!(declared > max);
                    break;
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            }
        }
        let mut raw = RawFrameCodec::with_max_frame_len(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = raw.decode(&mut buf) {}
        // As a body, too.
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn arbitrary_envelopes_classify_without_panicking(body in arb_envelope()) {
        match Frame::decode(&body) {
            Ok(frame) => {
                // Whatever decodes re-encodes to something that decodes to the same frame.
                prop_assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
            }
            Err(bad) => {
                prop_assert!(!bad.message.is_empty());
                let v: Value = serde_json::from_slice(&body).expect("json");
                // An echoed id is always the body's own u64 id.
                if let Some(id) = bad.id {
                    prop_assert_eq!(v.get("id").and_then(Value::as_u64), Some(id));
                }
            }
        }
    }

    #[test]
    fn params_readers_never_panic_and_answer_only_bad_request_or_validation(
        v in arb_params(),
        declared in arb_declared(),
        max in 0usize..8,
    ) {
        let checked = check_declared(&v, &declared);
        if let Err(e) = &checked {
            assert_param_error(e)?;
        }
        match Params::new(v.clone()) {
            Err(e) => {
                prop_assert!(!v.is_object() && !v.is_null());
                prop_assert_eq!(&e, &ParamError::NotAnObject);
                prop_assert_eq!(checked, Err(ParamError::NotAnObject));
            }
            Ok(p) => {
                for k in NAMES.iter().chain(&["absent"]) {
                    for r in read_all(&p, k, max) {
                        if let Err(e) = r {
                            assert_param_error(&e)?;
                            // Named after the param read (`kind` is the alias, `limit` the page size).
                            let name = e.name();
                            prop_assert!(
                                name == Some(*k) || name == Some("kind") || name == Some("limit"),
                                "{:?} reading {}", name, k
                            );
                        }
                    }
                }
                prop_assert_eq!(p.into_map().len(), v.as_object().map_or(0, |m| m.len()));
            }
        }
    }

    #[test]
    fn check_declared_answers_what_the_readers_answer(
        v in arb_params(),
        (k, ty, required) in (arb_name(), prop::sample::select(ParamType::ALL.to_vec()), any::<bool>()),
    ) {
        let checked = check_declared(&v, &[(k, ty, required)]);
        let Ok(p) = Params::new(v) else {
            prop_assert_eq!(checked, Err(ParamError::NotAnObject));
            return Ok(());
        };
        let mut owned = p.clone();
        let read = match (ty, required) {
            (ParamType::String, true) => p.str(k).map(drop),
            (ParamType::String, false) => p.opt_str(k).map(drop),
            (ParamType::UnsignedInteger, true) => p.u64(k).map(drop),
            (ParamType::UnsignedInteger, false) => p.opt_u64(k).map(drop),
            // An integer above i64::MAX has the right type but is out of an i64's range.
            (ParamType::Integer, true) => p.i64(k).map(drop).or_else(|e| match e {
                ParamError::Invalid { .. } => Ok(()),
                e => Err(e),
            }),
            (ParamType::Integer, false) => p.opt_i64(k).map(drop).or_else(|e| match e {
                ParamError::Invalid { .. } => Ok(()),
                e => Err(e),
            }),
            (ParamType::Number, true) => p.f64(k).map(drop),
            (ParamType::Number, false) => p.opt_f64(k).map(drop),
            (ParamType::Boolean, true) => p.bool(k).map(drop),
            (ParamType::Boolean, false) => p.opt_bool(k).map(drop),
            (ParamType::Object, true) => owned.object(k).map(drop),
            (ParamType::Object, false) => owned.opt_object(k).map(drop),
            (ParamType::Array, true) => owned.array(k).map(drop),
            (ParamType::Array, false) => owned.opt_array(k).map(drop),
            (ParamType::Any, true) => p.get(k).map(drop).ok_or_else(|| ParamError::missing(k)),
            (ParamType::Any, false) => Ok(()),
        };
        prop_assert_eq!(checked, read);
    }

    #[test]
    fn time_text_round_trips_over_years_0000_to_9999(ms in MIN_MS..=MAX_MS) {
        let text = format_ms(ms);
        prop_assert_eq!(text.len(), 24, "{}", text);
        prop_assert!(text.ends_with('Z'));
        prop_assert_eq!(parse_date_ms(&text), Some(ms), "{}", text);
    }

    #[test]
    fn time_text_order_is_time_order(a in MIN_MS..=MAX_MS, b in MIN_MS..=MAX_MS) {
        prop_assert_eq!(format_ms(a).cmp(&format_ms(b)), a.cmp(&b));
    }
}
