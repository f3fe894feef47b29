//! Property tests: encode/decode round trips, framing at arbitrary split points, and robustness
//! against arbitrary input.

use bytes::BytesMut;
use daemonhost_protocol::{
    CodecError, ErrorBody, ErrorCode, EventFrame, Frame, FrameCodec, RawFrameCodec, Request,
    Response,
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
}
