//! Garbage through the real binary: every declared command sent arbitrary params, pipelined,
//! and arbitrary bytes on raw connections. Every request gets exactly one answer, nothing
//! panics, the host stays up and the other connections are unharmed.
//!
//! The property tests draw their cases with proptest against one host each (a manual
//! [`TestRunner`], so `PROPTEST_CASES` applies: CI sets 128; `scripts/garbage.sh` runs them in
//! release with enough cases for 100,000 requests and more). Each prints what it saw (cases,
//! requests, answers by code) on stderr, `garbage:` first, for the script.

use crate::commands::{Declared, EXCLUDED, declared};
use crate::harness::*;
use bytes::BytesMut;
use daemonhost_protocol::{
    BadFrame, Client, CodecError, DEFAULT_MAX_FRAME, ErrorCode, Frame, FrameCodec, FrameType,
    Request, Response, write_frame,
};
use daemonhost_testkit::host::Reader;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner, contextualize_config};
use serde_json::{Map, Value, json};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Decoder;

const T: Option<Duration> = Some(Duration::from_secs(20));

/// Commands not sent garbage, with why (besides `commands.rs`'s `EXCLUDED`, skipped too). None
/// today: no declared command stops the host, ends the connection it came on or blocks past the
/// deadline each request here carries. `data/quota` may set a tiny quota and `data/truncate`
/// may empty a collection: both only make later writes and reads answer differently (each
/// still once), so they are sent garbage like the rest.
const SKIPPED: &[(&str, &str)] = &[];

/// A command whose name has one of these words may stop the host or a connection: it must be
/// listed in `SKIPPED` (with why) or shown harmless there, or this test refuses to run.
const SUSPECT_WORDS: &[&str] = &[
    "shutdown", "stop", "exit", "kill", "restart", "quit", "halt", "reload",
];

/// The longest deadline a garbage request carries: a command's own default when it is at most
/// this, else this (`ai/generate` would wait 70 s, `archive/run` 300 s).
const MAX_DEADLINE_MS: u64 = 10_000;

/// How long one batch may take to be answered in full: the longest deadline, and slack for a
/// loaded 2-core machine.
const BATCH_LIMIT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Hostile values
// ---------------------------------------------------------------------------------------------

/// Strings that mean something somewhere: collection and room names, paths, patterns, SQL,
/// format strings, dates, numbers as text, control and invisible characters.
const WORDS: &[&str] = &[
    "",
    " ",
    "\t\n",
    "users",
    "chat_messages",
    "sessions",
    "rooms",
    "general",
    "ping",
    "data/list",
    "../../etc/passwd",
    "..",
    "/",
    "logs/../../x",
    "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q",
    "data:*",
    "*",
    "{a,b}",
    ":",
    "null",
    "true",
    "0",
    "-1",
    "1e309",
    "NaN",
    "\u{0}",
    "\u{feff}",
    "\u{202e}gnp.exe",
    "🦀🦀",
    "'; DROP TABLE users; --",
    "\" OR 1=1 --",
    "%s%n%x",
    "{{template}}",
    "$gt",
    "2024-02-30T25:61:61Z",
    "0190c6a2-7d1e-7cc0-9d4e-0c5a3f1b2a11",
    "user",
    "persona",
    "system",
    "debug",
    "error",
    "bm25",
];

/// Keys of objects nested in params (and extra params): what handlers look for inside
/// `operations[]`, `entries[]`, `messages[]`, `filter`, …, and operators.
const KEYS: &[&str] = &[
    "id",
    "op",
    "type",
    "name",
    "collection",
    "data",
    "filter",
    "role",
    "content",
    "text",
    "level",
    "message",
    "category",
    "component",
    "roomId",
    "userId",
    "createdAt",
    "query",
    "corpus",
    "algorithm",
    "vectors",
    "messages",
    "ids",
    "params",
    "$eq",
    "$gt",
    "$in",
    "$exists",
    "__proto__",
    "",
];

fn arb_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        3 => any::<String>(),
        2 => "\\PC{0,40}",
        1 => (any::<char>(), 200usize..4000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
        1 => (prop::sample::select(WORDS), 1usize..400).prop_map(|(w, n)| w.repeat(n)),
    ]
    .boxed()
}

fn arb_integer() -> BoxedStrategy<i64> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(1),
        Just(i64::MIN),
        Just(i64::MAX),
        -1000i64..1000,
        any::<i64>(),
    ]
    .boxed()
}

fn arb_unsigned() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(1u64 << 53),
        0u64..1000,
        any::<u64>()
    ]
    .boxed()
}

fn arb_number() -> BoxedStrategy<Value> {
    prop_oneof![
        arb_integer().prop_map(Value::from),
        arb_unsigned().prop_map(Value::from),
        Just(Value::from(1e308)),
        Just(Value::from(-0.0)),
        Just(Value::from(0.5)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
    .boxed()
}

fn arb_key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => arb_string(),
    ]
    .boxed()
}

/// Any JSON value, nested up to 4 deep.
fn arb_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
    .boxed()
}

/// A value of the type a param declares (any content), for the handler to chew on.
fn arb_typed(ty: &str) -> BoxedStrategy<Value> {
    match ty.trim() {
        "string" => arb_string().prop_map(Value::String).boxed(),
        "integer" => arb_integer().prop_map(Value::from).boxed(),
        "non-negative integer" => arb_unsigned().prop_map(Value::from).boxed(),
        "number" => arb_number(),
        "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
        "object" => prop::collection::vec((arb_key(), arb_value()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
            .boxed(),
        // Arrays of objects mostly: operations, entries, messages.
        "array" => prop_oneof![
            prop::collection::vec(arb_value(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                prop::collection::vec((arb_key(), arb_value()), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                0..6
            )
            .prop_map(Value::Array),
        ]
        .boxed(),
        _ => arb_value(),
    }
}

/// Params for one command: mostly an object with each declared param present with its type,
/// with another type, or absent, plus extra keys; sometimes `null`, sometimes not an object.
fn arb_params(params: &[(String, String, bool)]) -> BoxedStrategy<Value> {
    let declared: Vec<BoxedStrategy<Option<(String, Value)>>> = params
        .iter()
        .map(|(name, ty, _)| {
            let name = name.clone();
            prop_oneof![
                4 => arb_typed(ty).prop_map(Some),
                2 => arb_value().prop_map(Some),
                1 => Just(None),
            ]
            .prop_map(move |v| v.map(|v| (name.clone(), v)))
            .boxed()
        })
        .collect();
    let object = (
        declared,
        prop::collection::vec((arb_key(), arb_value()), 0..4),
    )
        .prop_map(|(declared, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in declared.into_iter().flatten() {
                m.insert(k, v);
            }
            Value::Object(m)
        });
    prop_oneof![
        12 => object,
        1 => Just(Value::Null),
        1 => prop_oneof![
            prop::collection::vec(arb_value(), 0..4).prop_map(Value::Array),
            arb_string().prop_map(Value::String),
            arb_number(),
            any::<bool>().prop_map(Value::Bool),
        ],
    ]
    .boxed()
}

/// A deadline for a request: mostly the command's default (when it is short), else anything up
/// to [`MAX_DEADLINE_MS`], 0 included.
fn arb_deadline(default_ms: u64) -> BoxedStrategy<Option<u64>> {
    let short = prop_oneof![Just(0u64), Just(1), 0..=MAX_DEADLINE_MS].prop_map(Some);
    if default_ms <= MAX_DEADLINE_MS {
        prop_oneof![4 => Just(None), 1 => short].boxed()
    } else {
        short.boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Against the host
// ---------------------------------------------------------------------------------------------

/// What counts as the host having panicked or crashed somewhere: caught panics of every daemon,
/// of the CPU pool, and restarts of worker processes.
async fn crash_counters(c: &Client) -> BTreeMap<String, u64> {
    let m = c
        .call("health/metrics", Value::Null, T)
        .await
        .expect("health/metrics");
    let mut out = BTreeMap::new();
    for (name, d) in m["daemons"].as_object().expect("daemons") {
        out.insert(format!("{name}.panics"), d["panics"].as_u64().unwrap_or(0));
    }
    out.insert(
        "pool.panics".into(),
        m["pool"]["panics"].as_u64().unwrap_or(0),
    );
    let s = c
        .call("health/status", Value::Null, T)
        .await
        .expect("health/status");
    for d in s["daemons"].as_array().expect("daemons") {
        if let Some(r) = d["details"]["worker"]["restarts"].as_u64() {
            let name = d["name"].as_str().unwrap_or("?");
            out.insert(format!("{name}.worker.restarts"), r);
        }
    }
    // A worker not up yet reports nothing: compare what is not zero.
    out.retain(|_, n| *n > 0);
    out
}

/// Every command the catalog lists, less the skipped ones (checked to exist and to cover every
/// suspect name).
async fn catalog(c: &Client) -> (Vec<Declared>, Vec<String>) {
    let all = declared(c).await;
    let names: HashSet<&str> = all.iter().map(|d| d.name.as_str()).collect();
    let skipped: Vec<(&str, &str)> = SKIPPED.iter().chain(EXCLUDED).copied().collect();
    for (name, why) in &skipped {
        assert!(
            names.contains(name),
            "skipped {name} ({why}) is not declared"
        );
    }
    for d in &all {
        let suspect = SUSPECT_WORDS.iter().find(|w| d.name.contains(*w));
        if let Some(w) = suspect {
            assert!(
                skipped.iter().any(|(n, _)| *n == d.name),
                "{} has '{w}' in its name: list it in SKIPPED with why, or show it harmless",
                d.name
            );
        }
    }
    let skipped_names = skipped
        .iter()
        .map(|(n, why)| format!("{n} ({why})"))
        .collect();
    let kept = all
        .into_iter()
        .filter(|d| !skipped.iter().any(|(n, _)| *n == d.name))
        .collect();
    (kept, skipped_names)
}

/// One drawn batch: params and deadline for each command, and the order to send them in.
type Batch = (Vec<(Value, Option<u64>)>, Vec<usize>);

#[derive(Debug, Default)]
struct Seen {
    cases: u64,
    requests: u64,
    answers: u64,
    events: u64,
    bytes: u64,
    codes: BTreeMap<String, u64>,
    /// The longest a command took to be answered (from the batch's first byte), ms.
    slowest: BTreeMap<String, u128>,
}

impl Seen {
    fn slowest(&self, n: usize) -> String {
        let mut v: Vec<_> = self.slowest.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter()
            .take(n)
            .map(|(c, ms)| format!("{c} {ms} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn codes(&self) -> String {
        self.codes
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Send one batch pipelined on a fresh connection and check its answers.
async fn run_batch(
    host: &Host,
    commands: &[Declared],
    (params, order): Batch,
    next_id: &mut u64,
    seen: &mut Seen,
) -> Result<(), TestCaseError> {
    let (mut r, mut w) = split(host.raw().await);
    let mut out = BytesMut::new();
    let mut sent: HashMap<u64, (usize, Value)> = HashMap::with_capacity(order.len());
    for i in order {
        let (p, timeout_ms) = &params[i];
        let id = *next_id;
        *next_id += 1;
        let req = Request {
            id,
            command: commands[i].name.clone(),
            params: p.clone(),
            timeout_ms: *timeout_ms,
        };
        write_frame(&mut out, &Frame::Request(req), DEFAULT_MAX_FRAME).expect("a frame that fits");
        sent.insert(id, (i, p.clone()));
    }
    // A ping sent once every answer is in: an answer given twice would show up before its.
    let sentinel = *next_id;
    *next_id += 1;
    let writer = tokio::spawn(async move { w.write_all(&out).await.map(|()| (w, out.len())) });

    let mut answered: HashSet<u64> = HashSet::with_capacity(sent.len());
    let mut internal = Vec::new();
    let started = Instant::now();
    let read_all = async {
        while answered.len() < sent.len() {
            let Some(frame) = r.next_frame().await else {
                return Err(format!(
                    "the connection closed with {} of {} requests unanswered",
                    sent.len() - answered.len(),
                    sent.len()
                ));
            };
            match frame {
                Frame::Event(_) => seen.events += 1,
                Frame::Response(resp) => {
                    let name = resp
                        .id
                        .and_then(|id| sent.get(&id))
                        .map(|(i, _)| &commands[*i].name);
                    if let Some(name) = name {
                        let ms = started.elapsed().as_millis();
                        let slowest = seen.slowest.entry(name.clone()).or_default();
                        *slowest = (*slowest).max(ms);
                    }
                    check_answer(resp, &sent, &mut answered, &mut internal, seen)?
                }
                Frame::Request(req) => return Err(format!("the host sent a request: {req:?}")),
            }
        }
        Ok(())
    };
    let read = tokio::time::timeout(BATCH_LIMIT, read_all).await;
    let (mut w, len) = match writer.await.expect("the writer task") {
        Ok(v) => v,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "writing the batch failed: {e}"
            )));
        }
    };
    seen.bytes += len as u64;
    match read {
        Err(_) => {
            let missing: Vec<&str> = sent
                .iter()
                .filter(|(id, _)| !answered.contains(id))
                .map(|(_, (i, _))| commands[*i].name.as_str())
                .collect();
            return Err(TestCaseError::fail(format!(
                "not every request answered within {BATCH_LIMIT:?}: {missing:?}"
            )));
        }
        Ok(Err(e)) => return Err(TestCaseError::fail(e)),
        Ok(Ok(())) => {}
    }
    // No answer twice: nothing but events comes before the sentinel's answer.
    let mut b = BytesMut::new();
    let ping = Request::new(sentinel, "ping", Value::Null);
    write_frame(&mut b, &Frame::Request(ping), DEFAULT_MAX_FRAME).expect("encode");
    send(&mut w, &b).await;
    loop {
        match r.next_frame().await {
            Some(Frame::Event(_)) => seen.events += 1,
            Some(Frame::Response(resp)) if resp.id == Some(sentinel) => break,
            other => {
                return Err(TestCaseError::fail(format!(
                    "after every answer, before the sentinel's: {other:?}"
                )));
            }
        }
    }
    seen.cases += 1;
    seen.requests += sent.len() as u64;
    if !internal.is_empty() {
        return Err(TestCaseError::fail(format!(
            "{} answers were `internal` (a bug in the host): {internal:#?}",
            internal.len()
        )));
    }
    Ok(())
}

fn check_answer(
    resp: Response,
    sent: &HashMap<u64, (usize, Value)>,
    answered: &mut HashSet<u64>,
    internal: &mut Vec<String>,
    seen: &mut Seen,
) -> Result<(), String> {
    let Some(id) = resp.id else {
        return Err(format!("an answer without an id: {resp:?}"));
    };
    let Some((_, params)) = sent.get(&id) else {
        return Err(format!("an answer to id {id}, never sent: {resp:?}"));
    };
    if !answered.insert(id) {
        return Err(format!("id {id} answered twice: {resp:?}"));
    }
    seen.answers += 1;
    let code = match &resp.outcome {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code.as_str().to_owned(),
    };
    if let Err(e) = &resp.outcome
        && e.code == ErrorCode::Internal
    {
        let p = params.to_string();
        internal.push(format!("{}: params {}", e.message, cut(&p, 400)));
    }
    *seen.codes.entry(code).or_default() += 1;
    Ok(())
}

/// The test runner for the e2e properties: `PROPTEST_CASES` applies, nothing is persisted
/// (a failure prints its minimal case), shrinking is short (each step runs against the host).
fn runner() -> TestRunner {
    TestRunner::new(contextualize_config(Config {
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    }))
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The host is up: its process has not exited, and a connection open since before the garbage
/// still answers.
fn assert_up(host: &mut Host, rt: &tokio::runtime::Runtime, witness: &Client) {
    let child = host.child.as_mut().expect("the host process");
    let exited = child.try_wait().expect("try_wait");
    assert!(
        exited.is_none(),
        "the host exited ({exited:?}); log:\n{}",
        host.log()
    );
    rt.block_on(witness.call("ping", Value::Null, T))
        .expect("a connection opened before the garbage still answers");
}

#[test]
fn every_declared_command_answers_arbitrary_params_exactly_once_without_a_panic_and_the_host_stays_up()
 {
    let rt = tokio_rt();
    let mut host = Host::start(BIN);
    let witness = rt.block_on(host.client());
    let (commands, skipped) = rt.block_on(catalog(&witness));
    let before = rt.block_on(crash_counters(&witness));

    let batch = (
        commands
            .iter()
            .map(|d| (arb_params(&d.params), arb_deadline(d.default_timeout_ms)))
            .collect::<Vec<_>>(),
        Just((0..commands.len()).collect::<Vec<_>>()).prop_shuffle(),
    );
    let seen = RefCell::new(Seen::default());
    let next_id = Cell::new(1u64);
    let started = Instant::now();
    let mut runner = runner();
    let result = runner.run(&batch, |b| {
        rt.block_on(async {
            let mut id = next_id.get();
            let mut s = seen.take();
            let ran = run_batch(&host, &commands, b, &mut id, &mut s).await;
            next_id.set(id);
            seen.replace(s);
            ran?;
            // Nothing panicked, no worker crashed, after each batch.
            let now = crash_counters(&witness).await;
            prop_assert_eq!(&now, &before, "a panic or a worker crash");
            Ok(())
        })
    });
    let seen = seen.into_inner();
    eprintln!(
        "garbage: commands: {} cases, {} requests to {} commands, {} answers ({}), {} events, \
         {} KiB sent, in {:?}; slowest: {}; skipped: {skipped:?}",
        seen.cases,
        seen.requests,
        commands.len(),
        seen.answers,
        seen.codes(),
        seen.events,
        seen.bytes / 1024,
        started.elapsed(),
        seen.slowest(6),
    );
    if let Err(e) = result {
        panic!("{e}\nhost log (tail):\n{}", tail(&host.log(), 4000));
    }
    assert_eq!(seen.answers, seen.requests);
    assert_up(&mut host, &rt, &witness);
}

/// The last `n` bytes of `s` or a little less (on a character boundary).
fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// The first `n` bytes of `s` or a little less (on a character boundary).
fn cut(s: &str, n: usize) -> &str {
    let mut at = n.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    &s[..at]
}

// ---------------------------------------------------------------------------------------------
// Raw garbage on a connection
// ---------------------------------------------------------------------------------------------

/// One stretch of the bytes a raw connection sends.
#[derive(Debug, Clone)]
enum Piece {
    /// A `ping` request (its id is given when the bytes are made).
    Ping,
    /// A correct header around any body.
    Body(Vec<u8>),
    /// A `ping` frame, its body cut short or with bytes flipped, with a header that fits.
    Mangled(Vec<(prop::sample::Index, u8)>, prop::sample::Index),
    /// A header declaring more than the maximum, and whatever follows.
    Oversize(u32, Vec<u8>),
    /// Bytes with no framing at all.
    Raw(Vec<u8>),
}

fn arb_piece() -> impl Strategy<Value = Piece> {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        arb_value().prop_map(|v| serde_json::to_vec(&v).expect("json")),
        // A request envelope with fields of any type, and one more key.
        (arb_key(), arb_value(), arb_value()).prop_map(|(k, id, command)| {
            let mut m = Map::new();
            m.insert("type".into(), Value::from("request"));
            m.insert("id".into(), id);
            m.insert("command".into(), command);
            m.insert(k, Value::from(1));
            serde_json::to_vec(&Value::Object(m)).expect("json")
        }),
    ];
    prop_oneof![
        4 => Just(Piece::Ping),
        4 => body.prop_map(Piece::Body),
        2 => (
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            any::<prop::sample::Index>()
        )
            .prop_map(|(flips, cut)| Piece::Mangled(flips, cut)),
        1 => ((DEFAULT_MAX_FRAME as u32 + 1)..=u32::MAX, prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(n, rest)| Piece::Oversize(n, rest)),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Piece::Raw),
    ]
}

fn ping_body(id: u64) -> Vec<u8> {
    Frame::Request(Request::new(id, "ping", Value::Null)).to_vec()
}

fn bytes_of(pieces: &[Piece], next_id: &mut u64) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Ping => {
                out.extend(framed(&ping_body(*next_id)));
                *next_id += 1;
            }
            Piece::Body(b) => out.extend(framed(b)),
            Piece::Mangled(flips, cut) => {
                let mut b = ping_body(*next_id);
                *next_id += 1;
                for (at, byte) in flips {
                    let i = at.index(b.len());
                    b[i] = *byte;
                }
                b.truncate(cut.index(b.len() + 1).max(b.len() / 2));
                out.extend(framed(&b));
            }
            Piece::Oversize(n, rest) => {
                out.extend(n.to_be_bytes());
                out.extend(rest);
            }
            Piece::Raw(r) => out.extend(r),
        }
    }
    out
}

/// What the host must answer to a stream, read as it reads it: one answer per request (any
/// outcome) and per undecodable body that is not a response or event (`bad_request`, with the
/// id it could recover); and whether the stream stops at an oversize header.
fn expected_answers(bytes: &[u8]) -> (Vec<(Option<u64>, bool)>, bool) {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(Ok(Frame::Request(r)))) => out.push((Some(r.id), false)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(BadFrame {
                frame_type: Some(FrameType::Response | FrameType::Event),
                ..
            }))) => {}
            Ok(Some(Err(bad))) => out.push((bad.id, true)),
            Ok(None) => return (out, false),
            Err(CodecError::FrameTooLarge { .. }) => return (out, true),
            Err(e) => panic!("decoding in memory: {e}"),
        }
    }
}

async fn run_raw(
    host: &Host,
    pieces: &[Piece],
    next_id: &mut u64,
    seen: &mut Seen,
) -> Result<(), TestCaseError> {
    let bytes = bytes_of(pieces, next_id);
    let (mut expected, too_large) = expected_answers(&bytes);
    let stream = host.raw().await;
    let (rd, mut w) = stream.into_split();
    let mut r = Reader::new(rd);
    // The whole stream, then the end of it (the write side shut down): the host answers what it
    // read and closes. A write may fail once the host has closed on an oversize header.
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&bytes).await;
        let _ = w.shutdown().await;
        bytes.len()
    });
    let mut answers = Vec::new();
    let read_all = async {
        while let Some(frame) = r.next_frame().await {
            answers.push(frame);
        }
    };
    if tokio::time::timeout(BATCH_LIMIT, read_all).await.is_err() {
        return Err(TestCaseError::fail(format!(
            "the connection was not closed within {BATCH_LIMIT:?} of its end; answers so far: {answers:?}"
        )));
    }
    seen.bytes += writer.await.expect("the writer task") as u64;
    // An oversize header is answered `frame_too_large` (id null), last; the requests before it
    // may have been abandoned (documented).
    if too_large {
        match answers.pop() {
            Some(Frame::Response(Response {
                id: None,
                outcome: Err(e),
            })) if e.code == ErrorCode::FrameTooLarge => {
                *seen.codes.entry("frame_too_large".into()).or_default() += 1;
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "expected frame_too_large last, got {other:?}"
                )));
            }
        }
    }
    for frame in answers {
        let Frame::Response(resp) = frame else {
            return Err(TestCaseError::fail(format!("not a response: {frame:?}")));
        };
        let bad = matches!(&resp.outcome, Err(e) if e.code == ErrorCode::BadRequest);
        // Match it with one expected answer of its id: a `bad_request` one with a refused body
        // first (a request may be answered `bad_request` too, a refused body only so).
        let refused_first = expected
            .iter()
            .position(|(id, refused)| bad && *refused && *id == resp.id);
        let Some(at) = refused_first.or_else(|| {
            expected
                .iter()
                .position(|(id, refused)| !refused && *id == resp.id)
        }) else {
            return Err(TestCaseError::fail(format!(
                "an answer nothing asked for (or twice): {resp:?}; still expected: {expected:?}"
            )));
        };
        expected.swap_remove(at);
        seen.answers += 1;
        let code = match &resp.outcome {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code.as_str().to_owned(),
        };
        prop_assert_ne!(code.as_str(), "internal", "{:?}", resp);
        *seen.codes.entry(code).or_default() += 1;
    }
    if !too_large {
        prop_assert!(expected.is_empty(), "never answered: {:?}", expected);
    }
    seen.cases += 1;
    Ok(())
}

#[test]
fn raw_garbage_bytes_are_answered_or_close_their_connection_and_other_connections_are_unharmed() {
    let rt = tokio_rt();
    let mut host = Host::start(BIN);
    let witness = rt.block_on(host.client());
    let before = rt.block_on(crash_counters(&witness));
    let seen = RefCell::new(Seen::default());
    let next_id = Cell::new(1u64);
    let started = Instant::now();
    let mut runner = runner();
    let result = runner.run(&prop::collection::vec(arb_piece(), 0..16), |pieces| {
        rt.block_on(async {
            let mut id = next_id.get();
            let mut s = seen.take();
            let ran = run_raw(&host, &pieces, &mut id, &mut s).await;
            next_id.set(id);
            seen.replace(s);
            ran?;
            // The connection open all along answers between two garbage connections.
            let pong = witness.call("ping", Value::Null, T).await;
            prop_assert!(pong.is_ok(), "{:?}", pong);
            Ok(())
        })
    });
    let after = rt.block_on(crash_counters(&witness));
    let seen = seen.into_inner();
    eprintln!(
        "garbage: raw: {} cases (connections), {} KiB sent, {} answers ({}), in {:?}",
        seen.cases,
        seen.bytes / 1024,
        seen.answers,
        seen.codes(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}\nhost log (tail):\n{}", tail(&host.log(), 4000));
    }
    assert_eq!(after, before, "a panic or a worker crash");
    assert_up(&mut host, &rt, &witness);
}

// ---------------------------------------------------------------------------------------------
// The bugs the garbage found, as fixed cases
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_mid_frame_still_answers_every_request_read_then_closes() {
    const N: u64 = 2000;
    let host = Host::start(BIN);
    let (mut r, mut w) = split(host.raw().await);
    let mut bytes = Vec::new();
    for id in 1..=N {
        // Pings, and requests the data daemon and the logger's worker take longer to answer.
        let (command, params) = match id % 4 {
            0 => ("data/count", json!({"collection": "users"})),
            1 => ("log/flush", Value::Null),
            _ => ("ping", Value::Null),
        };
        let mut b = BytesMut::new();
        let req = Request::new(id, command, params);
        write_frame(&mut b, &Frame::Request(req), usize::MAX).expect("encode");
        bytes.extend_from_slice(&b);
    }
    // The header and part of the body of one more request, then the end of the stream.
    bytes.extend_from_slice(&framed(&ping_body(N + 1))[..9]);
    send(&mut w, &bytes).await;
    w.shutdown().await.expect("shut down the write side");
    let mut answered = HashSet::new();
    while let Some(frame) = r.next_frame().await {
        let Frame::Response(resp) = frame else {
            panic!("not a response: {frame:?}");
        };
        let id = resp.id.expect("an id");
        assert!(resp.outcome.is_ok(), "{id}: {:?}", resp.outcome);
        assert!(answered.insert(id), "{id} answered twice");
    }
    assert_eq!(
        answered,
        (1..=N).collect::<HashSet<_>>(),
        "every request read is answered once before the close; the unfinished one is not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_unknown_command_name_is_answered_unknown_command_at_once_with_the_name_cut() {
    let host = Host::start(BIN);
    let c = host.client().await;
    // Nearly the largest body that fits in a frame (the client adds its id and deadline), nearly
    // all of it the name.
    let envelope = Request::new(u64::MAX, "", Value::Null).with_timeout_ms(u64::MAX);
    let envelope = Frame::Request(envelope).to_vec().len();
    let huge = "x".repeat(DEFAULT_MAX_FRAME - envelope);
    for (what, command, params) in [
        ("a 100 KiB name", "y".repeat(100 << 10), Value::Null),
        ("a 16 MiB name", huge.clone(), Value::Null),
        // Each slash was a prefix lookup hashing the name up to it: quadratic.
        (
            "a 16 MiB name of slashes",
            "/".repeat(huge.len()),
            Value::Null,
        ),
        (
            "help of a 100 KiB name",
            "help".into(),
            json!({"command": "data/list".repeat(100 << 10 >> 3)}),
        ),
        (
            "help of a 1 MiB name of slashes",
            "help".into(),
            json!({"command": "/".repeat(1 << 20)}),
        ),
    ] {
        let started = Instant::now();
        let e = c
            .call(&command, params, T)
            .await
            .expect_err("an unknown name");
        let took = started.elapsed();
        let e = match e {
            daemonhost_protocol::CallError::Remote(b) => b,
            other => panic!("{what}: {other:?}"),
        };
        assert_eq!(e.code, ErrorCode::UnknownCommand, "{what}: {e:?}");
        assert!(
            e.message.len() < 400,
            "{what}: {} bytes echoed",
            e.message.len()
        );
        assert!(e.message.contains(" bytes)"), "{what}: {}", e.message);
        // Before: ~4.7 s for 100 KiB, minutes for 16 MiB (then `internal`), 13 s for 100 KiB
        // of slashes. Now the name's transfer and parse dominate.
        assert!(took < Duration::from_secs(10), "{what} took {took:?}");
        eprintln!("{what}: answered in {took:?}");
    }
    c.call("ping", Value::Null, T)
        .await
        .expect("the host serves on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_echoing_a_param_of_the_frame_s_size_keeps_its_code_with_its_message_cut() {
    let host = Host::start(BIN);
    let (mut r, mut w) = split(host.raw().await);
    // Each param as long as a frame allows: the error message quoting it (with its own words)
    // did not fit in an answer, which was then `internal`.
    for (id, command, key, code) in [
        (1, "events/subscribe", "pattern", ErrorCode::Validation),
        (2, "persona/status", "id", ErrorCode::NotFound),
    ] {
        let mut params = Map::new();
        params.insert(key.to_owned(), Value::from(""));
        let empty = Frame::Request(Request::new(id, command, Value::Object(params.clone())));
        let room = DEFAULT_MAX_FRAME - empty.to_vec().len();
        // Not a valid pattern (`,` outside braces), not a persona.
        params.insert(key.to_owned(), Value::from(",".repeat(room)));
        let body = Frame::Request(Request::new(id, command, Value::Object(params))).to_vec();
        assert_eq!(body.len(), DEFAULT_MAX_FRAME);
        send(&mut w, &framed(&body)).await;
        let resp = r.response().await;
        assert_eq!(resp.id, Some(id));
        let e = resp.outcome.expect_err("an error");
        assert_eq!(e.code, code, "{command}: {}", cut(&e.message, 300));
        // Cut by the server (`… (message cut: N bytes)`), or short already at the daemon
        // (`persona/status` quotes at most 64 characters of the id).
        assert!(
            e.message.len() < 2048,
            "{command}: {} bytes: {}",
            e.message.len(),
            cut(&e.message, 300)
        );
    }
}
