//! The web bridge through the real binary (`crates/cli/src/web`): the token on every endpoint
//! but `/healthz`, the `Host` rule, same-origin WebSocket upgrades, `/ws` answering exactly as
//! the socket does (one server core), events over `/ws`, the WebSocket connection bound,
//! `web.url`, `--web-listen off`, a port in use. And the WebSocket ping round trip against the
//! socket's, measured in one run.
//!
//! HTTP is spoken raw (one request per connection, `Connection: close`), so a test sees exactly
//! the status and headers the host sent.

use crate::harness::*;
use daemonhost_protocol::{ErrorCode, Frame};
use daemonhost_testkit::within;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const T: Option<Duration> = Some(Duration::from_secs(20));

/// Where a host's web bridge is, from its `web.url`.
struct WebAddr {
    url: String,
    /// `127.0.0.1:PORT`
    addr: String,
    token: String,
}

async fn web_of(host: &Host) -> WebAddr {
    let url = host.web_url().await;
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, query) = rest.split_once('/').expect("a path");
    let token = query.strip_prefix("?token=").expect("the token").to_owned();
    WebAddr {
        addr: addr.to_owned(),
        url: url.clone(),
        token,
    }
}

/// One HTTP answer.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr` with `headers` (a `Host` of `addr` unless given).
async fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Http {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    within("the HTTP answer", s.read_to_end(&mut buf))
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Http {
        status,
        headers,
        body: body.to_owned(),
    }
}

type Ws = WebSocketStream<TcpStream>;

/// Open `/ws` with `query` and extra `headers`; the handshake's answer on failure.
async fn try_ws(
    addr: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .expect("a request");
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let tcp = TcpStream::connect(addr).await.expect("connect");
    within(
        "the WebSocket handshake",
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    .map(|(ws, _)| ws)
}

async fn ws(web: &WebAddr) -> Ws {
    try_ws(&web.addr, &format!("?token={}", web.token), &[])
        .await
        .expect("the WebSocket opens")
}

/// The status a refused handshake was answered with.
fn refused_status(r: Result<Ws, tungstenite::Error>) -> (u16, String) {
    match r {
        Err(tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        ),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the WebSocket opened"),
    }
}

/// The next data message's bytes (control messages skipped); `None` when the connection ends.
async fn next_body(ws: &mut Ws) -> Option<Vec<u8>> {
    loop {
        match within("the next WebSocket message", ws.next()).await {
            Some(Ok(Message::Text(t))) => return Some(t.as_bytes().to_vec()),
            Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
            Some(Ok(Message::Close(_))) | None => return None,
            Some(Ok(_)) => {}
            Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::Protocol(_))) => {
                return None;
            }
            Some(Err(e)) => panic!("WebSocket read failed: {e}"),
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    let body = next_body(ws).await.expect("a message");
    serde_json::from_slice(&body).expect("JSON")
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Call over `/ws`; the response (success or not).
async fn ws_call(ws: &mut Ws, id: u64, command: &str, params: Value) -> Value {
    let req = json!({"type": "request", "id": id, "command": command, "params": params});
    send_text(ws, &req.to_string()).await;
    loop {
        let v = next_json(ws).await;
        if v["type"] == "response" && v["id"] == id {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_healthz_needs_the_token_by_query_cookie_or_bearer() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let a = web.addr.as_str();

    // Without it, or with a wrong one: 401, on the page, the assets, unknown paths and /ws.
    for path in ["/", "/app.js", "/nope", "/?token=wrong"] {
        let r = get(a, path, &[]).await;
        assert_eq!(r.status, 401, "{path}: {r:?}");
        assert!(r.body.contains("web.url"), "{path}: {}", r.body);
    }
    let wrong = get(a, "/", &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(wrong.status, 401);
    let (status, _) = refused_status(try_ws(a, "", &[]).await);
    assert_eq!(status, 401, "/ws without the token");
    // /healthz answers without it.
    let h = get(a, "/healthz", &[]).await;
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));

    // ?token= serves the page and sets the cookie, HttpOnly and SameSite=Strict.
    let page = get(a, &format!("/?token={}", web.token), &[]).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("/app.js"), "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let cookie = page.header("set-cookie").expect("a cookie");
    assert!(cookie.contains(&web.token), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value");
    // The cookie alone, then a bearer header alone.
    let js = get(a, "/app.js", &[("Cookie", pair)]).await;
    assert_eq!(js.status, 200, "{js:?}");
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.header("set-cookie").is_none(), "already has it");
    let bearer = format!("Bearer {}", web.token);
    let js = get(a, "/app.js", &[("Authorization", &bearer)]).await;
    assert_eq!(js.status, 200, "{js:?}");
    let missing = get(a, "/nope", &[("Cookie", pair)]).await;
    assert_eq!(missing.status, 404, "authorised, no such page");
    // The same three ways open /ws.
    let mut by_cookie = try_ws(a, "", &[("Cookie", pair)]).await.expect("cookie");
    let mut by_bearer = try_ws(a, "", &[("Authorization", &bearer)])
        .await
        .expect("bearer");
    let mut by_query = ws(&web).await;
    for (i, w) in [&mut by_cookie, &mut by_bearer, &mut by_query]
        .into_iter()
        .enumerate()
    {
        let r = ws_call(w, i as u64 + 1, "ping", json!({})).await;
        assert_eq!(r["result"]["pong"], true, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_another_host_is_refused_403_on_every_endpoint() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let a = web.addr.as_str();
    let port = a.rsplit_once(':').expect("port").1;
    let with_token = format!("/?token={}", web.token);
    // A DNS-rebound name, the right name on another port, no port at all: refused, token or not.
    for bad in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        "127.0.0.1:1".to_owned(),
        "localhost".to_owned(),
    ] {
        for path in [with_token.as_str(), "/healthz"] {
            let r = get(a, path, &[("Host", &bad)]).await;
            assert_eq!(r.status, 403, "Host {bad} {path}: {r:?}");
        }
        let (status, _) =
            refused_status(try_ws(a, &format!("?token={}", web.token), &[("Host", &bad)]).await);
        assert_eq!(status, 403, "/ws with Host {bad}");
    }
    // The loopback names with the port are this host.
    for good in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let r = get(a, &with_token, &[("Host", &good)]).await;
        assert_eq!(r.status, 200, "Host {good}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_websocket_upgrade_is_refused_403_and_a_same_origin_one_is_served() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let q = format!("?token={}", web.token);
    let port = web.addr.rsplit_once(':').expect("port").1;
    for other in [
        "http://evil.example".to_owned(),
        format!("http://localhost:{port}"), // another origin, though the same machine
        "null".to_owned(),
    ] {
        let (status, body) = refused_status(try_ws(&web.addr, &q, &[("Origin", &other)]).await);
        assert_eq!(status, 403, "Origin {other}");
        assert!(body.contains("Origin"), "{body}");
    }
    let own = format!("http://{}", web.addr);
    let mut w = try_ws(&web.addr, &q, &[("Origin", &own)])
        .await
        .expect("the page's own origin");
    let r = ws_call(&mut w, 1, "ping", json!({})).await;
    assert_eq!(r["result"]["pong"], true, "{r}");
    // The same page through a loopback name is its own origin there.
    let mut w = try_ws(
        &web.addr,
        &q,
        &[
            ("Host", &format!("localhost:{port}")),
            ("Origin", &format!("http://localhost:{port}")),
        ],
    )
    .await
    .expect("localhost page, localhost origin");
    let r = ws_call(&mut w, 2, "ping", json!({})).await;
    assert_eq!(r["result"]["pong"], true, "{r}");
}

/// Send each body over the socket and over `/ws`, one at a time; the answers, in order, from
/// each. A body that gets no answer is followed by a ping whose answer stands in for it.
async fn both_transports(host: &Host, web: &WebAddr, bodies: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (mut r, mut w) = split(host.raw().await);
    let mut s = ws(web).await;
    let mut out = Vec::new();
    for body in bodies {
        send(&mut w, &framed(body)).await;
        let over_socket = r.next_body().await.expect("a socket answer").to_vec();
        match std::str::from_utf8(body) {
            Ok(text) => send_text(&mut s, text).await,
            Err(_) => s.send(Message::binary(body.to_vec())).await.expect("send"),
        }
        let over_ws = next_body(&mut s).await.expect("a WebSocket answer");
        out.push((over_socket, over_ws));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_ws_gets_the_same_answer_as_over_the_socket() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let bodies: &[&[u8]] = &[
        br#"{"type":"request","id":1,"command":"help","params":{"command":"data/list"}}"#,
        br#"{"type":"request","id":2,"command":"data/lsit"}"#,
        br#"{"type":"request","id":3,"command":"chat/send","params":{"message":"hi"}}"#,
        br#"{"type":"request","id":4,"command":"chat/send","params":{"room":7,"message":"hi"}}"#,
        br#"{"type":"request","id":5,"command":"events/unsubscribe","params":{"subscription":9}}"#,
        br#"{"type":"request","id":6,"command":"session/get","params":{"id":"none"}}"#,
        br#"{"type":"request","id":7,"command":"events/subscribe","params":{"pattern":"a::b"}}"#,
    ];
    for (i, (sock, ws)) in both_transports(&host, &web, bodies)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            String::from_utf8_lossy(&sock),
            String::from_utf8_lossy(&ws),
            "body {i}: {}",
            String::from_utf8_lossy(bodies[i])
        );
    }
    // ping: the same answer but for the uptime.
    let ping: &[&[u8]] = &[br#"{"type":"request","id":8,"command":"ping"}"#];
    let (sock, ws) = both_transports(&host, &web, ping).await.remove(0);
    let strip = |b: &[u8]| {
        let mut v: Value = serde_json::from_slice(b).expect("json");
        v["result"]["uptime_ms"].take();
        v
    };
    assert_eq!(strip(&sock), strip(&ws));
    assert_eq!(strip(&ws)["result"]["pong"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_ws_gets_the_same_error_as_on_the_socket_and_the_connection_goes_on() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let bodies: &[&[u8]] = &[
        b"{not json",
        b"",
        b"[1,2]",
        b"\xff\xfe not utf-8",
        br#"{"id":3}"#,
        br#"{"type":"ping","id":4}"#,
        br#"{"type":"request","id":"5","command":"ping"}"#,
        br#"{"type":"request","id":6}"#,
        br#"{"type":"request","id":7,"command":"ping","params":[1]}"#,
        br#"{"type":"request","id":8,"command":"ping","timeout_ms":-1}"#,
        br#"{"type":"request","id":9,"command":"ping"} trailing"#,
    ];
    let answers = both_transports(&host, &web, bodies).await;
    for (i, (sock, ws)) in answers.iter().enumerate() {
        let what = String::from_utf8_lossy(bodies[i]);
        assert_eq!(
            String::from_utf8_lossy(sock),
            String::from_utf8_lossy(ws),
            "body {i}: {what}"
        );
        let frame = Frame::decode(ws).expect("a valid answer");
        let Frame::Response(r) = frame else {
            panic!("{what}: not a response");
        };
        assert_eq!(
            r.outcome.expect_err("an error").code,
            ErrorCode::BadRequest,
            "{what}"
        );
    }
    // A response or an event from the client is never answered; the next request is.
    let ignored: &[&[u8]] = &[br#"{"type":"response","id":1,"success":true,"result":1}"#];
    let mut s = ws(&web).await;
    send_text(&mut s, std::str::from_utf8(ignored[0]).expect("utf8")).await;
    let r = ws_call(&mut s, 10, "ping", json!({})).await;
    assert_eq!(
        r["result"]["pong"], true,
        "the ping's answer is the next message: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_frame_limit_on_ws_gets_frame_too_large_and_the_connection_closes() {
    let host = Host::start_with_config(BIN, "[host]\nmax_frame_bytes = 1024\n");
    let web = web_of(&host).await;
    let mut s = ws(&web).await;
    let small =
        json!({"type": "request", "id": 1, "command": "ping", "params": {"pad": "x".repeat(900)}});
    send_text(&mut s, &small.to_string()).await;
    assert_eq!(next_json(&mut s).await["result"]["pong"], true);
    let big =
        json!({"type": "request", "id": 2, "command": "ping", "params": {"pad": "x".repeat(1100)}});
    send_text(&mut s, &big.to_string()).await;
    let v = next_json(&mut s).await;
    assert_eq!(v["id"], Value::Null, "{v}");
    assert_eq!(v["error"]["code"], "frame_too_large", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("exceeds the maximum of 1024 bytes"),
        "{v}"
    );
    assert!(
        next_body(&mut s).await.is_none(),
        "then the connection closes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_subscription_over_ws_receives_its_events_after_its_answer() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let mut s = ws(&web).await;
    let sub = ws_call(
        &mut s,
        1,
        "events/subscribe",
        json!({"pattern": "session:*"}),
    )
    .await;
    let sid = sub["result"]["subscription"].as_u64().expect("an id");
    // Created over the socket: the event reaches the WebSocket.
    let c = host.client().await;
    let created = c
        .call("session/create", Value::Null, T)
        .await
        .expect("create");
    let ev = loop {
        let v = next_json(&mut s).await;
        if v["type"] == "event" {
            break v;
        }
    };
    assert_eq!(ev["subscription"], sid, "{ev}");
    assert_eq!(ev["topic"], "session:created", "{ev}");
    assert_eq!(ev["data"]["id"], created["id"], "{ev}");
    let un = ws_call(
        &mut s,
        2,
        "events/unsubscribe",
        json!({"subscription": sid}),
    )
    .await;
    assert_eq!(un["success"], true, "{un}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_web_max_connections_are_refused_503_and_the_open_ones_keep_working() {
    let host = Host::start_with_config(BIN, "[web]\nmax_connections = 2\n");
    let web = web_of(&host).await;
    let mut first = ws(&web).await;
    let mut second = ws(&web).await;
    let (status, body) =
        refused_status(try_ws(&web.addr, &format!("?token={}", web.token), &[]).await);
    assert_eq!(status, 503);
    assert!(body.contains("[web] max_connections = 2"), "{body}");
    for (i, w) in [&mut first, &mut second].into_iter().enumerate() {
        let r = ws_call(w, i as u64 + 1, "ping", json!({})).await;
        assert_eq!(r["result"]["pong"], true, "{r}");
    }
    // widget/clients lists both, with what each sent.
    let clients = ws_call(&mut first, 3, "widget/clients", json!({})).await;
    let list = &clients["result"];
    assert_eq!(
        (list["count"].as_u64(), list["max"].as_u64()),
        (Some(2), Some(2)),
        "{list}"
    );
    assert!(
        list["clients"][0]["remoteAddr"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{list}"
    );
    assert!(list["clients"][0]["connectedAt"].is_string(), "{list}");
    assert!(list["clients"][0]["requests"].as_u64() >= Some(1), "{list}");
    // A closed one frees its place.
    drop(second);
    let q = format!("?token={}", web.token);
    let mut third = eventually("a place after a close", async || {
        try_ws(&web.addr, &q, &[]).await.ok()
    })
    .await;
    let r = ws_call(&mut third, 1, "ping", json!({})).await;
    assert_eq!(r["result"]["pong"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_past_web_max_inflight_are_all_answered() {
    const N: u64 = 2_000;
    let host = Host::start_with_config(BIN, "[web]\nmax_inflight = 4\n");
    let web = web_of(&host).await;
    let s = ws(&web).await;
    let (mut tx, mut rx) = s.split();
    let writer = tokio::spawn(async move {
        for id in 1..=N {
            let req = json!({"type": "request", "id": id, "command": "ping"}).to_string();
            tx.send(Message::text(req)).await.expect("send");
        }
        tx
    });
    let mut seen = std::collections::HashSet::new();
    while (seen.len() as u64) < N {
        match within("an answer", rx.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                assert_eq!(v["result"]["pong"], true, "{v}");
                assert!(
                    seen.insert(v["id"].as_u64().expect("id")),
                    "answered twice: {v}"
                );
            }
            Some(Ok(_)) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
    let _sink = within("the writer", writer).await.expect("writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_url_is_written_mode_0600_printed_at_startup_and_serves_the_page() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let path = host.data.join("web.url");
    let mode = std::fs::metadata(&path)
        .expect("web.url")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let token_mode = std::fs::metadata(host.data.join("web.token"))
        .expect("web.token")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(token_mode, 0o600);
    assert!(web.url.starts_with("http://127.0.0.1:"), "{}", web.url);
    assert!(web.token.len() >= 32, "{}", web.token);
    eventually("the startup summary names the URL", async || {
        host.log().contains(&format!("web {}", web.url))
    })
    .await;
    let page = get(
        &web.addr,
        web.url.trim_start_matches(&format!("http://{}", web.addr)),
        &[],
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("<title>daemonhost</title>"),
        "{}",
        page.body
    );
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_kept_across_restarts_and_a_clean_stop_removes_web_url() {
    let mut host = Host::start(BIN);
    let before = web_of(&host).await;
    assert_eq!(code(host.terminate().await), 0);
    assert!(
        !host.data.join("web.url").exists(),
        "removed at a clean stop"
    );
    host.spawn(&[], &[]);
    let after = web_of(&host).await;
    assert_eq!(before.token, after.token, "one token per data dir");
}

/// The inodes of the TCP sockets `pid` listens on.
fn listening_tcp_inodes(pid: i32) -> Vec<String> {
    let mut own = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                own.push(inode.to_owned());
            }
        }
    }
    let mut listening = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st = 0A is LISTEN; the inode is column 9.
            if cols.len() > 9 && cols[3] == "0A" && own.iter().any(|i| i == cols[9]) {
                listening.push(cols[9].to_owned());
            }
        }
    }
    listening
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_listen_off_binds_nothing_and_writes_no_url() {
    let host = Host::start_with(BIN, &["--web-listen", "off"], &[]);
    let c = host.client().await;
    eventually("the startup summary", async || {
        host.log().contains("web off")
    })
    .await;
    assert!(!host.data.join("web.url").exists());
    let pid = host.pid().as_raw();
    assert_eq!(
        listening_tcp_inodes(pid),
        Vec::<String>::new(),
        "no TCP listener"
    );
    let clients = c
        .call("widget/clients", Value::Null, T)
        .await
        .expect("widget/clients");
    assert_eq!(clients["listen"], Value::Null, "{clients}");
    // The same check sees a listener when there is one.
    let on = Host::start(BIN);
    web_of(&on).await;
    assert_eq!(listening_tcp_inodes(on.pid().as_raw()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_port_in_use_is_a_startup_error_naming_the_address() {
    let first = Host::start(BIN);
    let web = web_of(&first).await;
    // A second host on the first one's fixed port.
    let mut second = Host::new(BIN);
    second.spawn(&["--web-listen", &web.addr], &[]);
    let st = second.wait_exit().await;
    assert_eq!(code(st), 1, "{}", second.log());
    let log = second.log();
    assert!(
        log.contains(&format!("cannot listen for the web bridge on {}", web.addr)),
        "{log}"
    );
    assert!(!second.socket.exists(), "no socket left behind");
    assert!(!second.data.join("web.url").exists());
    // The first host is untouched.
    assert_eq!(get(&web.addr, "/healthz", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_console_lines_go_through_widget_console_into_the_console_log() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let mut s = ws(&web).await;
    let r = ws_call(
        &mut s,
        1,
        "widget/console",
        json!({"level": "warn", "message": "the page says hello"}),
    )
    .await;
    assert_eq!(r["success"], true, "{r}");
    let r = ws_call(
        &mut s,
        2,
        "widget/console",
        json!({"level": "loud", "message": "x"}),
    )
    .await;
    assert_eq!(r["error"]["code"], "validation", "{r}");
    // Written by the logger (its worker, or its in-process fallback while the worker starts,
    // which flushes on its own interval): flushed and read until it is there.
    let c = host.client().await;
    let log = host.data.join("logs").join("console").join("widget.log");
    let text = eventually("the line in logs/console/widget.log", async || {
        c.call("log/flush", Value::Null, T).await.expect("flush");
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("the page says hello"))
    })
    .await;
    assert!(text.contains("WARN"), "{text}");
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Not a guarantee: a measurement, printed (run with `--nocapture` to see it). Both transports
/// in the same run, sequential pings, the socket raw (no client library) as the WebSocket is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_ping_round_trip_is_measured_against_the_socket_in_one_run() {
    const N: usize = 2_000;
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let ping = br#"{"type":"request","id":1,"command":"ping"}"#;
    let (mut r, mut w) = split(host.raw().await);
    let mut s = ws(&web).await;
    // Warm both up.
    for _ in 0..200 {
        send(&mut w, &framed(ping)).await;
        r.next_body().await.expect("answer");
        send_text(&mut s, std::str::from_utf8(ping).expect("utf8")).await;
        next_body(&mut s).await.expect("answer");
    }
    let mut sock = Vec::with_capacity(N);
    let mut over_ws = Vec::with_capacity(N);
    let frame = framed(ping);
    let text = std::str::from_utf8(ping).expect("utf8");
    for _ in 0..N {
        let t0 = Instant::now();
        send(&mut w, &frame).await;
        r.next_body().await.expect("answer");
        sock.push(t0.elapsed());
        let t0 = Instant::now();
        send_text(&mut s, text).await;
        next_body(&mut s).await.expect("answer");
        over_ws.push(t0.elapsed());
    }
    sock.sort();
    over_ws.sort();
    println!(
        "ping round trip, {N} sequential each: socket p50 {:?} p99 {:?} · websocket p50 {:?} p99 {:?}",
        p(&sock, 0.5),
        p(&sock, 0.99),
        p(&over_ws, 0.5),
        p(&over_ws, 0.99)
    );
    assert_eq!((sock.len(), over_ws.len()), (N, N));
}

/// `/proxy/<encoded-url>` answers an allowed page as its own (same origin for an iframe), behind
/// the token like every endpoint; a URL the allowlist does not hold is `403` with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_route_serves_an_allowed_page_same_origin_and_refuses_the_rest_403() {
    let pages = daemonhost_testkit::pages::PageServer::start().await;
    let host = Host::start_with_config(
        BIN,
        &format!("[proxy]\nallow = [\"127.0.0.1:{}\"]\n", pages.port),
    );
    let web = web_of(&host).await;
    let path = daemonhost_proxy::encode_path(&pages.url("/hello"));
    let auth = format!("Bearer {}", web.token);
    let ok = get(&web.addr, &path, &[("Authorization", &auth)]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, daemonhost_testkit::pages::HELLO);
    assert_eq!(ok.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        ok.header("set-cookie")
            .is_none_or(|c| c.starts_with("dh_token_")),
        "{ok:?}"
    );
    // No token: refused before anything is fetched.
    assert_eq!(get(&web.addr, &path, &[]).await.status, 401);
    let denied = daemonhost_proxy::encode_path(&format!("http://localhost:{}/hello", pages.port));
    let no = get(&web.addr, &denied, &[("Authorization", &auth)]).await;
    assert_eq!(no.status, 403, "{no:?}");
    assert!(no.body.contains("proxy"), "{no:?}");
    let bad = get(&web.addr, "/proxy/%zz", &[("Authorization", &auth)]).await;
    assert_eq!(bad.status, 400, "{bad:?}");
}

/// `/metrics` serves the Prometheus text and `/startup.svg` the `analyze plot` waterfall, both
/// behind the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_startup_waterfall_are_served_behind_the_token() {
    let host = Host::start(BIN);
    let web = web_of(&host).await;
    let auth = format!("Bearer {}", web.token);
    assert_eq!(get(&web.addr, "/metrics", &[]).await.status, 401);
    let m = get(&web.addr, "/metrics", &[("Authorization", &auth)]).await;
    assert_eq!(m.status, 200, "{m:?}");
    assert!(
        m.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{m:?}"
    );
    assert!(
        m.body.contains("# TYPE daemonhost_daemon_state"),
        "{}",
        &m.body[..m.body.len().min(500)]
    );
    let svg = get(&web.addr, "/startup.svg", &[("Authorization", &auth)]).await;
    assert_eq!(svg.status, 200, "{svg:?}");
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(
        svg.body.contains("<svg") && svg.body.contains("persona"),
        "{}",
        &svg.body[..svg.body.len().min(300)]
    );
}
