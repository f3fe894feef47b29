//! Garbage in: property tests feeding arbitrary bytes to the frame decoder and arbitrary JSON to
//! the params reader. Nothing panics; what can be decoded decodes, whatever the reads it came
//! in; everything else is a typed error (`BadFrame` for a body, `FrameTooLarge` for a header, a
//! `ParamError` for a param), and an oversize header allocates nothing.
//!
//! CI runs these with `PROPTEST_CASES=128`; `scripts/garbage.sh` runs them in release with many
//! more.

use bytes::{BufMut, BytesMut};
use daemonhost_protocol::{
    BadFrame, CodecError, ErrorCode, EventFrame, Frame, FrameCodec, HEADER_LEN, ParamError,
    ParamType, Params, RawFrameCodec, Request, Response, check_declared,
};
use proptest::prelude::*;
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};

/// The decoders' maximum in these tests: small, so that generated headers exceed it often.
const MAX: usize = 512;

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// Strings a hostile client sends: empty, ASCII, any Unicode (controls, surrogates' neighbours,
/// astral planes), long runs.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z/_:-]{0,12}",
        3 => any::<String>(),
        1 => "\\PC{0,64}",
        1 => (any::<char>(), 0usize..300).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(i64::MIN)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(-1)),
        Just(Value::from(0)),
        // Floats that print and parse back exactly: serde_json's default float parser (without
        // its `float_roundtrip` feature) is not correctly rounded, it reads some 17-digit ones
        // (1024871.3525390625) one unit in the last place off; frames must round-trip here.
        (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        arb_text().prop_map(Value::String),
    ]
}

/// Any JSON value, up to 4 levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((arb_text(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A valid frame of any kind.
fn arb_frame() -> impl Strategy<Value = Frame> {
    let object = prop::collection::vec((arb_text(), arb_json()), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    prop_oneof![
        (any::<u64>(), arb_text(), object, any::<Option<u64>>()).prop_map(
            |(id, command, params, timeout_ms)| Frame::Request(Request {
                id,
                command,
                params,
                timeout_ms,
            })
        ),
        (any::<Option<u64>>(), arb_json())
            .prop_map(|(id, v)| Frame::Response(Response { id, outcome: Ok(v) })),
        (
            any::<Option<u64>>(),
            prop::sample::select(ErrorCode::ALL.to_vec()),
            arb_text()
        )
            .prop_map(|(id, code, m)| Frame::Response(Response::err(id, code, m))),
        (any::<u64>(), arb_text(), arb_json()).prop_map(|(subscription, topic, data)| {
            Frame::Event(EventFrame {
                subscription,
                topic,
                data,
            })
        }),
    ]
}

/// A body that is almost a frame: a valid one cut short, with bytes flipped, with garbage
/// around it; or JSON of any shape; or any bytes at all.
fn arb_bad_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        arb_json().prop_map(|v| serde_json::to_vec(&v).expect("json")),
        (arb_frame(), any::<prop::sample::Index>()).prop_map(|(f, at)| {
            let b = f.to_vec();
            b[..at.index(b.len() + 1)].to_vec()
        }),
        (
            arb_frame(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|(f, flips)| {
                let mut b = f.to_vec();
                for (at, byte) in flips {
                    let i = at.index(b.len());
                    b[i] = byte;
                }
                b
            }),
        (arb_frame(), "[ \\]}x,0\"]{1,3}").prop_map(|(f, tail)| {
            let mut b = f.to_vec();
            b.extend_from_slice(tail.as_bytes());
            b
        }),
    ]
}

/// One stretch of a byte stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A well-formed frame.
    Frame(Frame),
    /// A correct header around a body that may not be a frame.
    Body(Vec<u8>),
    /// A header declaring more than [`MAX`], and whatever follows.
    Oversize(u32, Vec<u8>),
    /// Bytes with no framing at all (they break the stream from here on).
    Raw(Vec<u8>),
}

fn arb_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => arb_frame().prop_map(Piece::Frame),
        4 => arb_bad_body().prop_map(Piece::Body),
        1 => ((MAX as u32 + 1)..=u32::MAX, prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(n, rest)| Piece::Oversize(n, rest)),
        1 => prop::collection::vec(any::<u8>(), 0..32).prop_map(Piece::Raw),
    ]
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(body.len())
        .expect("a small body")
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(body);
    v
}

fn encode(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Frame(f) => {
                let body = f.to_vec();
                if body.len() > MAX {
                    // Too long for this decoder: send it as what it is, an oversize header.
                    out.extend_from_slice(&framed(&body));
                } else {
                    let mut b = BytesMut::new();
                    FrameCodec::with_max_frame_len(MAX)
                        .encode(f, &mut b)
                        .expect("encode");
                    out.extend_from_slice(&b);
                }
            }
            Piece::Body(b) => out.extend_from_slice(&framed(b)),
            Piece::Oversize(n, rest) => {
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(rest);
            }
            Piece::Raw(r) => out.extend_from_slice(r),
        }
    }
    out
}

/// Split `bytes` at the given cut points (any order, duplicates allowed).
fn chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut start = 0;
    let mut out = Vec::new();
    for p in points {
        out.push(bytes[start..p].to_vec());
        start = p;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The reference: what a stream means, by hand
// ---------------------------------------------------------------------------------------------

/// What decoding a whole stream gives.
#[derive(Debug, PartialEq)]
struct Decoded {
    items: Vec<Result<Frame, BadFrame>>,
    /// `Some((declared, max))` when it ended at an oversize header.
    too_large: Option<(usize, usize)>,
    /// Bytes left over: an unfinished frame.
    rest: usize,
}

fn reference(bytes: &[u8]) -> Decoded {
    let mut items = Vec::new();
    let mut at = 0;
    while let Some(h) = bytes.get(at..at + HEADER_LEN) {
        let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if n > MAX {
            return Decoded {
                items,
                too_large: Some((n, MAX)),
                rest: bytes.len() - at,
            };
        }
        let Some(body) = bytes.get(at + HEADER_LEN..at + HEADER_LEN + n) else {
            break;
        };
        items.push(Frame::decode(body));
        at += HEADER_LEN + n;
    }
    Decoded {
        items,
        too_large: None,
        rest: bytes.len() - at,
    }
}

/// Decode `chunks` as reads arriving one after another.
fn decode_in_reads(chunks: &[Vec<u8>]) -> Result<Decoded, TestCaseError> {
    let mut codec = FrameCodec::with_max_frame_len(MAX);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(CodecError::FrameTooLarge { declared, max }) => {
                    // The stream ends here: what is buffered and what has not been read yet.
                    let unread: usize = chunks[i + 1..].iter().map(Vec::len).sum();
                    return Ok(Decoded {
                        items,
                        too_large: Some((declared, max)),
                        rest: buf.len() + unread,
                    });
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            }
        }
    }
    Ok(Decoded {
        items,
        too_large: None,
        rest: buf.len(),
    })
}

/// A body's refusal is what the host answers: `bad_request`, the body's own id or none.
fn check_refusal(bad: &BadFrame) -> Result<(), TestCaseError> {
    prop_assert!(!bad.message.is_empty());
    let r = bad.to_response();
    prop_assert_eq!(r.id, bad.id);
    let e = r.outcome.expect_err("a refusal");
    prop_assert_eq!(e.code, ErrorCode::BadRequest);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_in_arbitrary_reads_decode_exactly_as_the_whole_stream_and_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let got = decode_in_reads(&chunks(&bytes, &cuts))?;
        prop_assert_eq!(&got, &reference(&bytes));
        for bad in got.items.iter().filter_map(|i| i.as_ref().err()) {
            check_refusal(bad)?;
        }
        // The raw codec splits the same bodies.
        let mut raw = RawFrameCodec::with_max_frame_len(MAX);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut bodies = 0;
        while let Ok(Some(_)) = raw.decode(&mut buf) {
            bodies += 1;
        }
        prop_assert_eq!(bodies, got.items.len());
    }

    #[test]
    fn every_complete_valid_frame_among_garbage_decodes_to_itself_whatever_the_reads(
        pieces in prop::collection::vec(arb_piece(), 0..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let bytes = encode(&pieces);
        let got = decode_in_reads(&chunks(&bytes, &cuts))?;
        prop_assert_eq!(&got, &reference(&bytes));
        // Piece by piece, until the first one that breaks the framing: a frame decodes to
        // itself, a body to what `Frame::decode` makes of it, an oversize header ends it.
        let mut items = got.items.iter();
        for p in &pieces {
            match p {
                Piece::Frame(f) if f.to_vec().len() <= MAX => {
                    prop_assert_eq!(items.next(), Some(&Ok(f.clone())));
                }
                Piece::Body(b) if b.len() <= MAX => {
                    let item = items.next();
                    prop_assert_eq!(item, Some(&Frame::decode(b)));
                    if let Some(Err(bad)) = item {
                        check_refusal(bad)?;
                    }
                }
                Piece::Frame(_) | Piece::Body(_) | Piece::Oversize(..) => {
                    prop_assert!(got.too_large.is_some(), "an oversize header ends the stream");
                    break;
                }
                Piece::Raw(_) => break, // the framing is lost from here on
            }
        }
    }

    #[test]
    fn an_oversize_length_prefix_is_refused_without_allocating_the_claimed_size(
        before in prop::collection::vec(arb_frame(), 0..4),
        max in 0usize..=4096,
        excess in 1u64..=u64::from(u32::MAX),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let declared = (max as u64 + excess).min(u64::from(u32::MAX)) as usize;
        prop_assume!(declared > max);
        let mut codec = FrameCodec::with_max_frame_len(usize::MAX);
        let mut stream = BytesMut::new();
        let mut fitting = Vec::new();
        for f in before {
            if f.to_vec().len() <= max {
                codec.encode(&f, &mut stream).expect("encode");
                fitting.push(f);
            }
        }
        stream.put_u32(declared as u32);
        stream.extend_from_slice(&after);
        // A buffer of exactly the bytes that arrived.
        let mut buf = BytesMut::with_capacity(stream.len());
        buf.extend_from_slice(&stream);
        let cap = buf.capacity();
        let mut codec = FrameCodec::with_max_frame_len(max);
        for f in &fitting {
            prop_assert_eq!(codec.decode(&mut buf).expect("a frame"), Some(Ok(f.clone())));
        }
        match codec.decode(&mut buf) {
            Err(CodecError::FrameTooLarge { declared: d, max: m }) => {
                prop_assert_eq!((d, m), (declared, max));
            }
            other => return Err(TestCaseError::fail(format!("expected FrameTooLarge, got {other:?}"))),
        }
        prop_assert!(buf.capacity() <= cap, "{} reserved for a refused header", buf.capacity());
        // And again: a refused header stays refused, nothing reserved the second time either.
        prop_assert!(
            matches!(codec.decode(&mut buf), Err(CodecError::FrameTooLarge { .. })),
            "refused again"
        );
        prop_assert!(buf.capacity() <= cap);
        let mut raw = RawFrameCodec::with_max_frame_len(max);
        let mut buf = BytesMut::from(&stream[stream.len() - HEADER_LEN - after.len()..]);
        let cap = buf.capacity();
        prop_assert!(
            matches!(raw.decode(&mut buf), Err(CodecError::FrameTooLarge { .. })),
            "the raw codec refuses it too"
        );
        prop_assert!(buf.capacity() <= cap);
    }
}

// ---------------------------------------------------------------------------------------------
// The params reader
// ---------------------------------------------------------------------------------------------

/// What reading `v` (`None` = absent) as `ty` must give: the value's presence, or the
/// documented error. `Integer` above `i64::MAX` has the right type but is out of range.
fn expected(k: &str, v: Option<&Value>, ty: ParamType, required: bool) -> Result<bool, ParamError> {
    match v.filter(|v| !v.is_null()) {
        None if required => Err(ParamError::missing(k)),
        None => Ok(false),
        Some(v) if ty == ParamType::Integer && v.is_u64() && v.as_i64().is_none() => Err(
            ParamError::invalid(k, format!("at most {} (got {v})", i64::MAX)),
        ),
        Some(v) if ty.matches(v) => Ok(true),
        Some(_) => Err(ParamError::wrong_type(k, ty)),
    }
}

/// Read `k` from `p` as `ty`: `Ok(true)` with the value (checked to be the one sent), `Ok(false)`
/// when absent.
fn read(p: &Params, k: &str, ty: ParamType, required: bool) -> Result<bool, ParamError> {
    let sent = p.get(k).cloned();
    let same = |got: Value| {
        assert_eq!(Some(&got), sent.as_ref(), "{k} as {ty:?}");
        true
    };
    let mut owned = p.clone();
    let opt = |r: Option<bool>| r.unwrap_or(false);
    match (ty, required) {
        (ParamType::String, true) => p.str(k).map(|s| same(s.into())),
        (ParamType::String, false) => p.opt_str(k).map(|s| opt(s.map(|s| same(s.into())))),
        (ParamType::UnsignedInteger, true) => p.u64(k).map(|n| same(n.into())),
        (ParamType::UnsignedInteger, false) => p.opt_u64(k).map(|n| opt(n.map(|n| same(n.into())))),
        (ParamType::Integer, true) => p.i64(k).map(|n| same(n.into())),
        (ParamType::Integer, false) => p.opt_i64(k).map(|n| opt(n.map(|n| same(n.into())))),
        // A float read back as f64 is the same number (an integer beyond 2^53 is not exact).
        (ParamType::Number, true) => p.f64(k).map(|_| true),
        (ParamType::Number, false) => p.opt_f64(k).map(|n| n.is_some()),
        (ParamType::Boolean, true) => p.bool(k).map(|b| same(b.into())),
        (ParamType::Boolean, false) => p.opt_bool(k).map(|b| opt(b.map(|b| same(b.into())))),
        (ParamType::Object, true) => owned.object(k).map(|m| same(Value::Object(m))),
        (ParamType::Object, false) => owned
            .opt_object(k)
            .map(|m| opt(m.map(|m| same(Value::Object(m))))),
        (ParamType::Array, true) => owned.array(k).map(|a| same(Value::Array(a))),
        (ParamType::Array, false) => owned
            .opt_array(k)
            .map(|a| opt(a.map(|a| same(Value::Array(a))))),
        (ParamType::Any, true) => p
            .get(k)
            .cloned()
            .map(same)
            .ok_or_else(|| ParamError::missing(k)),
        (ParamType::Any, false) => Ok(p.get(k).cloned().map(same).unwrap_or(false)),
    }
}

/// The error's wire code is the documented one for its kind, and its message names the param.
fn check_param_error(e: &ParamError, k: &str) -> Result<(), TestCaseError> {
    let want = match e {
        ParamError::Missing { .. } | ParamError::Invalid { .. } => ErrorCode::Validation,
        ParamError::WrongType { .. } | ParamError::NotAnObject => ErrorCode::BadRequest,
    };
    prop_assert_eq!(e.code(), want);
    prop_assert_eq!(e.name(), Some(k));
    prop_assert!(e.to_string().starts_with(&format!("{k}: ")), "{}", e);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn each_param_type_reads_arbitrary_json_as_the_value_sent_or_exactly_the_documented_error(
        k in arb_text(),
        v in prop::option::of(arb_json()),
        others in prop::collection::vec((arb_text(), arb_json()), 0..6),
    ) {
        let mut map: Map<String, Value> = others.into_iter().filter(|(o, _)| *o != k).collect();
        if let Some(v) = &v {
            map.insert(k.clone(), v.clone());
        }
        let params = Value::Object(map);
        let p = Params::new(params.clone()).expect("an object");
        for ty in ParamType::ALL {
            for required in [true, false] {
                let want = expected(&k, v.as_ref(), ty, required);
                let got = read(&p, &k, ty, required);
                prop_assert_eq!(&got, &want, "{} as {:?}, required {}", k, ty, required);
                // The router's check before the handler answers the same, with `Invalid`
                // (a type it cannot judge the range of) passing.
                let checked = check_declared(&params, &[(k.as_str(), ty, required)]);
                match &want {
                    Err(ParamError::Invalid { .. }) => prop_assert_eq!(checked, Ok(())),
                    Err(e) => prop_assert_eq!(checked, Err(e.clone())),
                    Ok(_) => prop_assert_eq!(checked, Ok(())),
                }
                if let Err(e) = got {
                    check_param_error(&e, &k)?;
                }
            }
        }
    }

    #[test]
    fn params_that_are_not_an_object_are_bad_request_for_every_reader_and_declaration(
        v in arb_json().prop_filter("not an object or null", |v| !v.is_object() && !v.is_null()),
        k in arb_text(),
        ty in prop::sample::select(ParamType::ALL.to_vec()),
        required in any::<bool>(),
    ) {
        let e = Params::new(v.clone()).expect_err("not an object");
        prop_assert_eq!(&e, &ParamError::NotAnObject);
        prop_assert_eq!(e.code(), ErrorCode::BadRequest);
        prop_assert_eq!(e.to_string(), "params must be an object");
        prop_assert_eq!(check_declared(&v, &[(k.as_str(), ty, required)]), Err(ParamError::NotAnObject));
        // Nested, it names its parent.
        let nested = e.within(&k);
        prop_assert_eq!(nested.code(), ErrorCode::BadRequest);
        prop_assert_eq!(nested.to_string(), format!("{k}: must be an object"));
    }

    #[test]
    fn str_max_on_arbitrary_text_returns_it_as_sent_or_is_validation_naming_the_param(
        k in arb_text(),
        s in arb_text(),
        max in 0usize..400,
    ) {
        let mut m = Map::new();
        m.insert(k.clone(), Value::String(s.clone()));
        let p = Params::new(Value::Object(m)).expect("object");
        match p.str_max(&k, max) {
            Ok(got) => {
                prop_assert_eq!(got, s.as_str());
                prop_assert!(!s.trim().is_empty() && s.chars().count() <= max);
            }
            Err(e) => {
                prop_assert_eq!(e.code(), ErrorCode::Validation);
                check_param_error(&e, &k)?;
                prop_assert!(s.trim().is_empty() || s.chars().count() > max, "{}", e);
            }
        }
    }
}
