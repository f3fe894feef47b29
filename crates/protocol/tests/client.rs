//! Client tests against a tiny in-test server on a temporary socket path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use daemonhost_protocol::{
    CallError, Client, ClientConfig, ClientError, ErrorCode, EventFrame, Frame, FrameCodec,
    Request, Response, write_frame,
};
use daemonhost_testkit::eventually;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::time::timeout;
use tokio_util::codec::Framed;

/// Generous bound for "this must happen" waits; never a bare sleep.
const LIMIT: Duration = Duration::from_secs(10);

struct TempSock {
    path: PathBuf,
}

impl Drop for TempSock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn temp_sock(name: &str) -> TempSock {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "dhp-{}-{}-{}.sock",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    assert!(
        path.as_os_str().len() < 100,
        "socket path too long: {path:?}"
    );
    let _ = std::fs::remove_file(&path);
    TempSock { path }
}

type ServerConn = Framed<UnixStream, FrameCodec>;

async fn listen_and_connect(name: &str, config: ClientConfig) -> (TempSock, Client, ServerConn) {
    let sock = temp_sock(name);
    let listener = UnixListener::bind(&sock.path).expect("bind");
    let client = Client::connect_with(&sock.path, config)
        .await
        .expect("connect");
    let (stream, _) = timeout(LIMIT, listener.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    (sock, client, Framed::new(stream, FrameCodec::new()))
}

async fn next_frame(server: &mut ServerConn) -> Frame {
    timeout(LIMIT, server.next())
        .await
        .expect("frame in time")
        .expect("stream open")
        .expect("codec ok")
        .expect("valid frame")
}

async fn next_request(server: &mut ServerConn) -> Request {
    match next_frame(server).await {
        Frame::Request(r) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// One call round trip: the reader handles frames in order, so everything the server sent
/// before its answer has been processed when this returns.
async fn sync(client: &Client, server: &mut ServerConn) {
    let c = client.clone();
    let call = tokio::spawn(async move { c.call("sync", json!({}), None).await });
    let p = next_request(server).await;
    server
        .send(Frame::Response(Response::ok(p.id, Value::Null)))
        .await
        .expect("send");
    timeout(LIMIT, call)
        .await
        .expect("in time")
        .expect("join")
        .expect("ok");
}

#[tokio::test]
async fn pipelined_out_of_order_responses_match_by_id() {
    let (_sock, client, mut server) = listen_and_connect("pipe", ClientConfig::default()).await;
    const N: usize = 50;
    let mut calls = Vec::new();
    for i in 0..N {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.call(&format!("echo/{i}"), json!({ "i": i }), None).await
        }));
    }
    let mut reqs = Vec::new();
    for _ in 0..N {
        reqs.push(next_request(&mut server).await);
    }
    let mut ids: Vec<u64> = reqs.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), N, "ids are unique");
    assert!(ids[0] >= 1);
    // Answer in reverse order, some as errors.
    for r in reqs.iter().rev() {
        let i = r.params["i"].as_u64().expect("i");
        let resp = if i % 7 == 3 {
            Response::err(Some(r.id), ErrorCode::Validation, format!("bad {i}"))
        } else {
            Response::ok(r.id, json!({ "cmd": r.command, "i": i }))
        };
        server.send(Frame::Response(resp)).await.expect("send");
    }
    for (i, call) in calls.into_iter().enumerate() {
        let result = timeout(LIMIT, call).await.expect("in time").expect("join");
        if i % 7 == 3 {
            match result {
                Err(CallError::Remote(body)) => {
                    assert_eq!(body.code, ErrorCode::Validation);
                    assert_eq!(body.message, format!("bad {i}"));
                }
                other => panic!("expected remote error, got {other:?}"),
            }
        } else {
            assert_eq!(
                result.expect("ok"),
                json!({ "cmd": format!("echo/{i}"), "i": i })
            );
        }
    }
    assert_eq!(client.pending(), 0);
}

#[tokio::test]
async fn null_params_are_omitted_and_bad_params_refused_locally() {
    let (_sock, client, mut server) = listen_and_connect("params", ClientConfig::default()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.call("ping", Value::Null, None).await });
    let r = next_request(&mut server).await;
    assert_eq!(r.command, "ping");
    assert_eq!(r.params, json!({}));
    assert_eq!(r.timeout_ms, None);
    server
        .send(Frame::Response(Response::ok(r.id, json!("pong"))))
        .await
        .expect("send");
    assert_eq!(call.await.expect("join").expect("ok"), json!("pong"));

    let err = client
        .call("ping", json!([1]), None)
        .await
        .expect_err("array params");
    assert!(matches!(
        err,
        CallError::InvalidParams {
            found: "found an array"
        }
    ));
}

#[tokio::test]
async fn timeout_sends_timeout_ms_and_removes_pending() {
    let (_sock, client, mut server) = listen_and_connect("timeout", ClientConfig::default()).await;
    let c = client.clone();
    let call = tokio::spawn(async move {
        c.call("slow", json!({}), Some(Duration::from_millis(50)))
            .await
    });
    let r = next_request(&mut server).await;
    assert_eq!(r.timeout_ms, Some(50));
    let err = timeout(LIMIT, call)
        .await
        .expect("in time")
        .expect("join")
        .expect_err("timeout");
    assert!(matches!(err, CallError::Timeout { after } if after == Duration::from_millis(50)));
    assert!(err.is_timeout());
    assert_eq!(client.pending(), 0);
    // A late answer is ignored and the connection keeps working.
    server
        .send(Frame::Response(Response::ok(r.id, json!(1))))
        .await
        .expect("send");
    let c = client.clone();
    let call = tokio::spawn(async move { c.call("fast", json!({}), None).await });
    let r2 = next_request(&mut server).await;
    server
        .send(Frame::Response(Response::ok(r2.id, json!(2))))
        .await
        .expect("send");
    assert_eq!(call.await.expect("join").expect("ok"), json!(2));
}

#[tokio::test]
async fn disconnect_answers_every_pending_call() {
    let (_sock, client, mut server) = listen_and_connect("disc", ClientConfig::default()).await;
    let mut calls = Vec::new();
    for _ in 0..5 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.call("hang", json!({}), None).await
        }));
    }
    for _ in 0..5 {
        next_request(&mut server).await;
    }
    drop(server);
    for call in calls {
        let r = timeout(LIMIT, call).await.expect("in time").expect("join");
        assert!(matches!(r, Err(CallError::Disconnected)), "{r:?}");
    }
    eventually("the client to see the disconnect", async || {
        client.is_closed()
    })
    .await;
    assert!(matches!(
        client.call("again", json!({}), None).await,
        Err(CallError::Disconnected)
    ));
}

#[tokio::test]
async fn subscribe_loses_no_event_sent_with_the_response() {
    let (_sock, client, mut server) = listen_and_connect("sub", ClientConfig::default()).await;
    let c = client.clone();
    let sub = tokio::spawn(async move { c.subscribe("data:*:created").await });
    let r = next_request(&mut server).await;
    assert_eq!(r.command, "events/subscribe");
    assert_eq!(r.params, json!({"pattern": "data:*:created"}));
    // Response and 200 events in one write.
    let mut buf = BytesMut::new();
    write_frame(
        &mut buf,
        &Frame::Response(Response::ok(r.id, json!({"subscription": 3}))),
        usize::MAX,
    )
    .expect("encode");
    for i in 0..200 {
        let e = EventFrame {
            subscription: 3,
            topic: "data:users:created".into(),
            data: json!({ "n": i }),
        };
        write_frame(&mut buf, &Frame::Event(e), usize::MAX).expect("encode");
    }
    server.get_mut().write_all(&buf).await.expect("write");
    let mut stream = timeout(LIMIT, sub)
        .await
        .expect("in time")
        .expect("join")
        .expect("subscribed");
    assert_eq!(stream.subscription(), 3);
    for i in 0..200 {
        let e = timeout(LIMIT, stream.next_event())
            .await
            .expect("in time")
            .expect("event");
        assert_eq!(e.data, json!({ "n": i }));
    }
    // Also usable as a Stream; ends when the connection does.
    drop(server);
    assert_eq!(timeout(LIMIT, stream.next()).await.expect("in time"), None);
}

#[tokio::test]
async fn dropping_the_stream_unsubscribes() {
    let (_sock, client, mut server) = listen_and_connect("unsub", ClientConfig::default()).await;
    let c = client.clone();
    let sub = tokio::spawn(async move { c.subscribe("chat:*").await });
    let r = next_request(&mut server).await;
    server
        .send(Frame::Response(Response::ok(
            r.id,
            json!({"subscription": 41}),
        )))
        .await
        .expect("send");
    let stream = sub.await.expect("join").expect("subscribed");
    assert_eq!(client.subscriptions(), 1);
    drop(stream);
    assert_eq!(client.subscriptions(), 0);
    let u = next_request(&mut server).await;
    assert_eq!(u.command, "events/unsubscribe");
    assert_eq!(u.params, json!({"subscription": 41}));
    // Its answer and late events are ignored; the connection keeps working.
    server
        .send(Frame::Response(Response::ok(u.id, json!({}))))
        .await
        .expect("send");
    server
        .send(Frame::Event(EventFrame {
            subscription: 41,
            topic: "chat:x".into(),
            data: Value::Null,
        }))
        .await
        .expect("send");
    let c = client.clone();
    let call = tokio::spawn(async move { c.call("ping", json!({}), None).await });
    let p = next_request(&mut server).await;
    server
        .send(Frame::Response(Response::ok(p.id, json!("pong"))))
        .await
        .expect("send");
    assert_eq!(call.await.expect("join").expect("ok"), json!("pong"));
}

#[tokio::test]
async fn slow_consumer_gets_a_lagged_marker_and_never_blocks_the_connection() {
    let config = ClientConfig {
        event_buffer: 4,
        ..ClientConfig::default()
    };
    let (_sock, client, mut server) = listen_and_connect("lag", config).await;
    let c = client.clone();
    let sub = tokio::spawn(async move { c.subscribe("t:*").await });
    let r = next_request(&mut server).await;
    server
        .send(Frame::Response(Response::ok(
            r.id,
            json!({"subscription": 7}),
        )))
        .await
        .expect("send");
    let mut stream = sub.await.expect("join").expect("subscribed");
    let event = |n: u64| {
        Frame::Event(EventFrame {
            subscription: 7,
            topic: "t:x".into(),
            data: json!({ "n": n }),
        })
    };
    for n in 0..10 {
        server.send(event(n)).await.expect("send");
    }
    // A call still completes while the stream is full: the reader never blocks on it.
    let c = client.clone();
    let call = tokio::spawn(async move { c.call("ping", json!({}), None).await });
    let p = next_request(&mut server).await;
    server
        .send(Frame::Response(Response::ok(p.id, json!("pong"))))
        .await
        .expect("send");
    assert_eq!(
        timeout(LIMIT, call)
            .await
            .expect("in time")
            .expect("join")
            .expect("ok"),
        json!("pong")
    );
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(
            timeout(LIMIT, stream.next_event())
                .await
                .expect("in time")
                .expect("event"),
        );
    }
    let ns: Vec<Option<u64>> = got[..4].iter().map(|e| e.data["n"].as_u64()).collect();
    assert_eq!(ns, vec![Some(0), Some(1), Some(2), Some(3)]);
    assert_eq!(got[4].topic, "system:lagged");
    assert_eq!(got[4].subscription, 7);
    assert_eq!(got[4].data, json!({"missed": 6}));
    // Delivery resumes.
    server.send(event(10)).await.expect("send");
    let e = timeout(LIMIT, stream.next_event())
        .await
        .expect("in time")
        .expect("event");
    assert_eq!(e.data, json!({"n": 10}));
}

#[tokio::test]
async fn lagged_marker_precedes_the_next_event_that_fits() {
    let config = ClientConfig {
        event_buffer: 2,
        ..ClientConfig::default()
    };
    let (_sock, client, mut server) = listen_and_connect("lag2", config).await;
    let c = client.clone();
    let sub = tokio::spawn(async move { c.subscribe("t:*").await });
    let r = next_request(&mut server).await;
    server
        .send(Frame::Response(Response::ok(
            r.id,
            json!({"subscription": 1}),
        )))
        .await
        .expect("send");
    let mut stream = sub.await.expect("join").expect("subscribed");
    let event = |n: u64| {
        Frame::Event(EventFrame {
            subscription: 1,
            topic: "t:x".into(),
            data: json!({ "n": n }),
        })
    };
    for n in 0..5 {
        server.send(event(n)).await.expect("send");
    }
    sync(&client, &mut server).await;
    let first = timeout(LIMIT, stream.next_event()).await.expect("in time");
    assert_eq!(first.expect("event").data, json!({"n": 0}));
    // Now one slot is free: the marker takes it before event 5, which is dropped again.
    server.send(event(5)).await.expect("send");
    sync(&client, &mut server).await;
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(
            timeout(LIMIT, stream.next_event())
                .await
                .expect("in time")
                .expect("event"),
        );
    }
    assert_eq!(rest[0].data, json!({"n": 1}));
    assert_eq!(rest[1].lagged_count(), Some(3));
    assert_eq!(rest[2].lagged_count(), Some(1));
}

#[tokio::test]
async fn peer_requests_and_bad_frames_are_answered() {
    let (_sock, _client, mut server) = listen_and_connect("peer", ClientConfig::default()).await;
    server
        .send(Frame::Request(Request::new(99, "do/thing", json!({}))))
        .await
        .expect("send");
    match next_frame(&mut server).await {
        Frame::Response(r) => {
            assert_eq!(r.id, Some(99));
            assert_eq!(
                r.outcome.expect_err("error").code,
                ErrorCode::UnknownCommand
            );
        }
        other => panic!("expected response, got {other:?}"),
    }
    server
        .send(bytes::Bytes::from_static(b"not json"))
        .await
        .expect("send");
    match next_frame(&mut server).await {
        Frame::Response(r) => {
            assert_eq!(r.id, None);
            assert_eq!(r.outcome.expect_err("error").code, ErrorCode::BadRequest);
        }
        other => panic!("expected response, got {other:?}"),
    }
    server
        .send(bytes::Bytes::from_static(br#"{"type":"request","id":5}"#))
        .await
        .expect("send");
    match next_frame(&mut server).await {
        Frame::Response(r) => {
            assert_eq!(r.id, Some(5));
            let e = r.outcome.expect_err("error");
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert_eq!(
                e.message,
                "field 'command' is required and must be a string (it is missing)"
            );
        }
        other => panic!("expected response, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_response_fails_its_call() {
    let (_sock, client, mut server) =
        listen_and_connect("malformed", ClientConfig::default()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.call("x", json!({}), None).await });
    let r = next_request(&mut server).await;
    let body = format!(r#"{{"type":"response","id":{},"success":"maybe"}}"#, r.id);
    server.send(bytes::Bytes::from(body)).await.expect("send");
    let err = timeout(LIMIT, call)
        .await
        .expect("in time")
        .expect("join")
        .expect_err("protocol");
    assert!(matches!(err, CallError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn in_flight_calls_are_bounded() {
    let config = ClientConfig {
        max_in_flight: 2,
        ..ClientConfig::default()
    };
    let (_sock, client, mut server) = listen_and_connect("bound", config).await;
    let mut calls = Vec::new();
    for i in 0..3 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.call("n", json!({ "i": i }), None).await
        }));
    }
    let a = next_request(&mut server).await;
    let b = next_request(&mut server).await;
    eventually("two calls pending", async || client.pending() == 2).await;
    // The third is waiting for a slot, not on the wire: answering one lets it through.
    server
        .send(Frame::Response(Response::ok(a.id, json!(0))))
        .await
        .expect("send");
    let c = next_request(&mut server).await;
    assert!(c.id > b.id);
    for r in [b, c] {
        server
            .send(Frame::Response(Response::ok(r.id, json!(0))))
            .await
            .expect("send");
    }
    for call in calls {
        timeout(LIMIT, call)
            .await
            .expect("in time")
            .expect("join")
            .expect("ok");
    }
}

#[tokio::test]
async fn connect_to_nothing_is_not_running() {
    let sock = temp_sock("absent");
    match Client::connect(&sock.path).await {
        Err(ClientError::NotRunning { path, .. }) => assert_eq!(path, sock.path),
        other => panic!("expected NotRunning, got {other:?}"),
    }
    // A stale socket file (listener gone) refuses connections: also "not running".
    let listener = std::os::unix::net::UnixListener::bind(&sock.path).expect("bind");
    drop(listener);
    assert!(sock.path.exists());
    match Client::connect(&sock.path).await {
        Err(e @ ClientError::NotRunning { .. }) => {
            assert!(e.to_string().starts_with("no daemonhost is listening on "));
        }
        other => panic!("expected NotRunning, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_every_handle_closes_the_socket() {
    let (_sock, client, mut server) = listen_and_connect("drop", ClientConfig::default()).await;
    drop(client);
    let end = timeout(LIMIT, server.next()).await.expect("in time");
    assert!(end.is_none(), "{end:?}");
}
