//! The worker side of the protocol: an in-test "host" binds a socket, the "worker" connects and
//! runs `serve_connection` (or `run_worker`), and the host speaks raw frames or the reference
//! client to it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use daemonhost_protocol::{
    Client, ClientConfig, ErrorBody, ErrorCode, Frame, FrameCodec, Request, Response,
};
use daemonhost_workers::{
    KNOWN_KINDS, ServeConfig, ServiceCommand, WorkerError, WorkerService, run_worker,
    serve_connection, serve_connection_with,
};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

const LIMIT: Duration = Duration::from_secs(10);

/// A service whose `test/wait {key}` blocks until `release(key)` (or `test/release {key}`).
#[derive(Default)]
struct TestService {
    gates: Mutex<HashMap<String, Arc<Notify>>>,
    shut_down: AtomicBool,
}

impl TestService {
    fn gate(&self, key: &str) -> Arc<Notify> {
        Arc::clone(self.gates.lock().entry(key.to_owned()).or_default())
    }

    fn release(&self, key: &str) {
        self.gate(key).notify_one();
    }
}

impl WorkerService for TestService {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn commands(&self) -> Vec<ServiceCommand> {
        vec![
            ServiceCommand::new("test/echo", "echo params", true),
            ServiceCommand::new("test/wait", "block until released", true),
            ServiceCommand::new("test/release", "release a waiter", false),
            ServiceCommand::new("test/panic", "panic", false),
        ]
    }

    async fn handle(&self, command: &str, params: Value) -> Result<Value, ErrorBody> {
        let key = params["key"].as_str().unwrap_or("").to_owned();
        match command {
            "test/echo" => Ok(params),
            "test/wait" => {
                self.gate(&key).notified().await;
                Ok(json!({"waited": key}))
            }
            "test/release" => {
                self.release(&key);
                Ok(json!({"released": key}))
            }
            "test/panic" => panic!("boom on purpose"),
            _ => Err(ErrorBody::new(ErrorCode::UnknownCommand, command)),
        }
    }

    async fn shutdown(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
    }
}

fn socket_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let p = PathBuf::from(format!(
        "/tmp/dhw-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// Bind a socket, connect a "worker" serving `svc`, return the host's end.
async fn pair(
    svc: Arc<TestService>,
    cfg: ServeConfig,
) -> (UnixStream, JoinHandle<Result<(), WorkerError>>) {
    let path = socket_path();
    let listener = UnixListener::bind(&path).expect("bind");
    let p2 = path.clone();
    let worker = tokio::spawn(async move {
        let stream = UnixStream::connect(&p2).await.expect("connect");
        serve_connection_with(svc, stream, "9.9.9", cfg).await
    });
    let (host, _) = listener.accept().await.expect("accept");
    let _ = std::fs::remove_file(&path);
    (host, worker)
}

type Raw = Framed<UnixStream, FrameCodec>;

async fn next_response(raw: &mut Raw) -> Response {
    match tokio::time::timeout(LIMIT, raw.next()).await {
        Ok(Some(Ok(Ok(Frame::Response(r))))) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

async fn send_req(raw: &mut Raw, id: u64, command: &str, params: Value) {
    raw.send(Frame::Request(Request::new(id, command, params)))
        .await
        .expect("send");
}

async fn send_body(raw: &mut Raw, body: &[u8]) {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    raw.get_mut().write_all(&buf).await.expect("write");
}

#[tokio::test]
async fn hello_describes_the_worker_ping_and_echo_answer_and_host_eof_ends_it() {
    let (host, worker) = pair(Arc::default(), ServeConfig::default()).await;
    let client = Client::from_stream(host, ClientConfig::default());
    let hello = client
        .call("worker/hello", json!({}), Some(LIMIT))
        .await
        .expect("hello");
    assert_eq!(hello["kind"], "test");
    assert_eq!(hello["version"], "9.9.9");
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["pid"], std::process::id());
    assert_eq!(hello["commands"].as_array().expect("commands").len(), 4);
    assert_eq!(
        hello["commands"][0],
        json!({"name": "test/echo", "description": "echo params", "idempotent": true})
    );
    assert_eq!(hello["commands"][2]["idempotent"], false);
    let pong = client
        .call("worker/ping", json!({}), Some(LIMIT))
        .await
        .expect("ping");
    assert_eq!(pong["pong"], true);
    assert!(pong["uptime_ms"].is_u64());
    let echo = client
        .call("test/echo", json!({"a": [1, 2]}), Some(LIMIT))
        .await
        .expect("echo");
    assert_eq!(echo, json!({"a": [1, 2]}));
    let e = client
        .call("test/nope", json!({}), Some(LIMIT))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Some(ErrorCode::UnknownCommand));
    drop(client);
    // EOF from the host: the worker returns Ok.
    tokio::time::timeout(LIMIT, worker)
        .await
        .expect("worker ends")
        .expect("join")
        .expect("ok");
}

#[tokio::test]
async fn pipelined_requests_are_answered_out_of_order() {
    let (host, worker) = pair(Arc::default(), ServeConfig::default()).await;
    let mut raw = Framed::new(host, FrameCodec::new());
    // Without waiting: a request that blocks, then the one that unblocks it, then an echo.
    send_req(&mut raw, 1, "test/wait", json!({"key": "k"})).await;
    send_req(&mut raw, 2, "test/echo", json!({"n": 2})).await;
    send_req(&mut raw, 3, "test/release", json!({"key": "k"})).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let r = next_response(&mut raw).await;
        assert!(r.is_success(), "{r:?}");
        order.push(r.id.expect("id"));
    }
    // 1 can only finish after 3 was handled: it is answered last.
    assert_eq!(order.last(), Some(&1), "{order:?}");
    assert!(order.contains(&2) && order.contains(&3));
    drop(raw);
    worker.await.expect("join").expect("ok");
}

#[tokio::test]
async fn bad_frames_are_answered_like_the_host_does() {
    let (host, worker) = pair(Arc::default(), ServeConfig::default()).await;
    let mut raw = Framed::new(host, FrameCodec::new());

    send_body(&mut raw, b"not json").await;
    let r = next_response(&mut raw).await;
    assert_eq!(r.id, None);
    let e = r.outcome.expect_err("bad");
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(
        e.message.starts_with("body is not valid JSON"),
        "{}",
        e.message
    );

    send_body(&mut raw, br#"{"type":"request","id":5}"#).await;
    let r = next_response(&mut raw).await;
    assert_eq!(r.id, Some(5));
    assert_eq!(r.outcome.expect_err("bad").code, ErrorCode::BadRequest);

    send_body(&mut raw, b"[1,2]").await;
    assert_eq!(next_response(&mut raw).await.id, None);
    send_body(&mut raw, b"").await;
    assert_eq!(next_response(&mut raw).await.id, None);
    send_body(&mut raw, &[0xff, 0xfe]).await;
    assert_eq!(next_response(&mut raw).await.id, None);

    // Invalid responses and events, and stray valid responses, are never answered: the next
    // frame we get is the answer to the ping that follows them.
    send_body(&mut raw, br#"{"type":"response","success":true}"#).await;
    send_body(&mut raw, br#"{"type":"event","topic":1}"#).await;
    send_body(
        &mut raw,
        br#"{"type":"response","id":77,"success":true,"result":1}"#,
    )
    .await;
    send_req(&mut raw, 6, "worker/ping", json!({})).await;
    let r = next_response(&mut raw).await;
    assert_eq!(r.id, Some(6));
    assert!(r.is_success());

    // A panicking handler is answered `internal` and the connection survives.
    send_req(&mut raw, 7, "test/panic", json!({})).await;
    let r = next_response(&mut raw).await;
    assert_eq!(r.id, Some(7));
    let e = r.outcome.expect_err("panic");
    assert_eq!(e.code, ErrorCode::Internal);
    assert!(e.message.contains("boom on purpose"), "{}", e.message);

    // timeout_ms is honoured.
    raw.send(Frame::Request(
        Request::new(8, "test/wait", json!({"key": "never"})).with_timeout_ms(50),
    ))
    .await
    .expect("send");
    let r = next_response(&mut raw).await;
    assert_eq!(r.id, Some(8));
    assert_eq!(r.outcome.expect_err("timeout").code, ErrorCode::Timeout);

    // A declared length above the maximum: frame_too_large with id null, then the worker closes.
    raw.get_mut()
        .write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write");
    let r = next_response(&mut raw).await;
    assert_eq!(r.id, None);
    assert_eq!(r.outcome.expect_err("big").code, ErrorCode::FrameTooLarge);
    let end = tokio::time::timeout(LIMIT, raw.next()).await.expect("eof");
    assert!(end.is_none(), "{end:?}");
    let res = worker.await.expect("join");
    assert!(matches!(res, Err(WorkerError::Protocol { .. })), "{res:?}");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_then_exits() {
    let svc = Arc::new(TestService::default());
    let (host, worker) = pair(Arc::clone(&svc), ServeConfig::default()).await;
    let mut raw = Framed::new(host, FrameCodec::new());
    send_req(&mut raw, 1, "test/wait", json!({"key": "k"})).await;
    send_req(&mut raw, 2, "worker/shutdown", json!({})).await;
    // Anything sent after the shutdown is not read.
    send_req(&mut raw, 3, "test/echo", json!({})).await;
    svc.release("k");
    let r = next_response(&mut raw).await;
    assert_eq!(r.id, Some(1));
    assert_eq!(r.outcome.expect("ok"), json!({"waited": "k"}));
    let r = next_response(&mut raw).await;
    assert_eq!(r.id, Some(2));
    assert_eq!(r.outcome.expect("ok"), json!({"ok": true}));
    let end = tokio::time::timeout(LIMIT, raw.next()).await.expect("eof");
    assert!(end.is_none(), "{end:?}");
    worker.await.expect("join").expect("clean exit");
    assert!(svc.shut_down.load(Ordering::SeqCst));
}

#[tokio::test]
async fn in_flight_is_bounded_by_not_reading() {
    // With 2 slots, two blocked requests stop the worker from reading the third frame until one
    // finishes: the echo sent third is answered only after the release.
    let svc = Arc::new(TestService::default());
    let cfg = ServeConfig {
        max_in_flight: 2,
        ..ServeConfig::default()
    };
    let (host, worker) = pair(Arc::clone(&svc), cfg).await;
    let mut raw = Framed::new(host, FrameCodec::new());
    send_req(&mut raw, 1, "test/wait", json!({"key": "a"})).await;
    send_req(&mut raw, 2, "test/wait", json!({"key": "b"})).await;
    send_req(&mut raw, 3, "test/echo", json!({})).await;
    svc.release("a");
    let first = next_response(&mut raw).await;
    assert_eq!(first.id, Some(1));
    let second = next_response(&mut raw).await;
    assert_eq!(second.id, Some(3));
    svc.release("b");
    assert_eq!(next_response(&mut raw).await.id, Some(2));
    drop(raw);
    worker.await.expect("join").expect("ok");
}

#[tokio::test]
async fn run_worker_serves_search_and_logger_kinds() {
    let e = run_worker(
        "nope",
        PathBuf::from("/tmp/x.sock").as_path(),
        PathBuf::from("/tmp").as_path(),
    )
    .await
    .expect_err("unknown kind");
    let msg = e.to_string();
    assert!(
        msg.contains("nope") && msg.contains("logger, search"),
        "{msg}"
    );
    assert_eq!(KNOWN_KINDS, ["logger", "search"]);

    // search
    let path = socket_path();
    let listener = UnixListener::bind(&path).expect("bind");
    let data = tempfile::tempdir().expect("tempdir");
    let (p2, d2) = (path.clone(), data.path().to_path_buf());
    let worker = tokio::spawn(async move { run_worker("search", &p2, &d2).await });
    let (host, _) = listener.accept().await.expect("accept");
    let client = Client::from_stream(host, ClientConfig::default());
    let hello = client
        .call("worker/hello", json!({}), Some(LIMIT))
        .await
        .expect("hello");
    assert_eq!(hello["kind"], "search");
    let names: Vec<&str> = hello["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"search/messages") && names.contains(&"search/execute"));
    let r = client
        .call(
            "search/execute",
            json!({"query": "rust", "corpus": ["rust is fast", "go"]}),
            Some(LIMIT),
        )
        .await
        .expect("execute");
    assert_eq!(r["rankedIndices"], json!([0, 1]));
    client
        .call("worker/shutdown", json!({}), Some(LIMIT))
        .await
        .expect("shutdown");
    tokio::time::timeout(LIMIT, worker)
        .await
        .expect("exits")
        .expect("join")
        .expect("ok");

    // logger: lines land under DATA/logs and are flushed by the shutdown.
    let p3 = path.clone();
    let d3 = data.path().to_path_buf();
    let worker = tokio::spawn(async move { run_worker("logger", &p3, &d3).await });
    let (host, _) = listener.accept().await.expect("accept");
    let client = Client::from_stream(host, ClientConfig::default());
    client
        .call(
            "log/write",
            json!({"category": "daemons/chat", "level": "info", "component": "c", "message": "hi"}),
            Some(LIMIT),
        )
        .await
        .expect("write");
    client
        .call("worker/shutdown", json!({}), Some(LIMIT))
        .await
        .expect("shutdown");
    tokio::time::timeout(LIMIT, worker)
        .await
        .expect("exits")
        .expect("join")
        .expect("ok");
    let text = std::fs::read_to_string(data.path().join("logs/daemons/chat.log")).expect("file");
    assert!(text.ends_with(" INFO [c] hi\n"), "{text}");
    let _ = std::fs::remove_file(&path);

    // Nobody listening: a connect error naming the path.
    let e = run_worker("search", &path, data.path())
        .await
        .expect_err("no host");
    assert!(matches!(e, WorkerError::Connect { .. }), "{e:?}");
}

#[tokio::test]
async fn serve_connection_answers_200_pipelined_calls_each_with_its_own_result() {
    let path = socket_path();
    let listener = UnixListener::bind(&path).expect("bind");
    let p2 = path.clone();
    let svc = Arc::new(TestService::default());
    let worker = tokio::spawn(async move {
        let stream = UnixStream::connect(&p2).await.expect("connect");
        serve_connection(svc, stream, "1").await
    });
    let (host, _) = listener.accept().await.expect("accept");
    let _ = std::fs::remove_file(&path);
    let client = Client::from_stream(host, ClientConfig::default());
    // Many pipelined calls at once.
    let calls = (0..200).map(|i| {
        let c = client.clone();
        async move { c.call("test/echo", json!({"i": i}), Some(LIMIT)).await }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("echo")["i"], i);
    }
    drop(client);
    worker.await.expect("join").expect("ok");
}

/// Placement transparency: the same service value answers identically in-process and through a
/// worker connection (results and error codes).
#[tokio::test]
async fn same_answers_in_process_and_through_a_worker() {
    use daemonhost_workers::SearchService;
    let svc = Arc::new(SearchService::default());
    let (a, b) = UnixStream::pair().expect("pair");
    let worker = tokio::spawn(serve_connection(Arc::clone(&svc), a, "1"));
    let client = Client::from_stream(b, ClientConfig::default());
    let msgs: Vec<Value> = (0..50)
        .map(|i| {
            json!({"id": format!("01900000-0000-7000-8000-{i:012x}"), "roomId": format!("r{}", i % 3),
                   "text": format!("message {i} about rust {} and tokio", i % 7), "createdAt": i})
        })
        .collect();
    client
        .call("search/index-add", json!({"messages": msgs}), Some(LIMIT))
        .await
        .expect("add");
    let cases = [
        (
            "search/messages",
            json!({"query": "rust tokio", "limit": 5}),
        ),
        (
            "search/messages",
            json!({"query": "message 3", "roomId": "r1"}),
        ),
        (
            "search/execute",
            json!({"query": "rust", "corpus": ["rust rust", "go", "a rust b"]}),
        ),
        (
            "search/execute",
            json!({"algorithm": "bow", "query": "the rust", "corpus": ["rust"]}),
        ),
        ("search/list", json!({})),
        ("search/params", json!({"algorithm": "cosine"})),
        ("search/stats", json!({})),
    ];
    for (command, params) in cases {
        let direct = svc.handle(command, params.clone()).await.expect(command);
        let remote = client
            .call(command, params, Some(LIMIT))
            .await
            .expect(command);
        assert_eq!(direct, remote, "{command}");
    }
    let bad = json!({"algorithm": "nope", "query": "x", "corpus": []});
    let direct = svc
        .handle("search/execute", bad.clone())
        .await
        .expect_err("bad");
    let remote = client
        .call("search/execute", bad, Some(LIMIT))
        .await
        .expect_err("bad");
    assert_eq!(remote.code(), Some(direct.code));
    drop(client);
    worker.await.expect("join").expect("ok");
}
