//! The proxy daemon through the real binary: a config that allows `127.0.0.1:<port>` of a page
//! server run by the test, and `proxy/fetch` over the socket. Nothing leaves the loopback
//! interface; every refusal is checked against what the page server saw.

use crate::harness::*;
use base64::Engine as _;
use daemonhost_protocol::ErrorCode;
use daemonhost_proxy::decode_path;
use daemonhost_testkit::pages::{HELLO, PageServer};
use serde_json::{Value, json};
use std::time::Duration;

const T: Option<Duration> = Some(Duration::from_secs(20));

fn body(answer: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(answer["body"].as_str().expect("a base64 body"))
        .expect("valid base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_fetch_over_the_socket_fetches_an_allowed_loopback_page_and_refuses_the_rest() {
    let pages = PageServer::start().await;
    let port = pages.port;
    let host = Host::start_with_config(
        BIN,
        &format!("[proxy]\nallow = [\"127.0.0.1:{port}\"]\nmax_bytes = 65536\n"),
    );
    let c = host.client().await;

    let a = c
        .call("proxy/fetch", json!({"url": pages.url("/hello")}), T)
        .await
        .expect("an allowed page");
    assert_eq!(a["status"], 200);
    assert_eq!(a["contentType"], "text/html; charset=utf-8");
    assert_eq!(body(&a), HELLO.as_bytes());
    assert_eq!(
        (a["bytes"].as_u64(), &a["truncated"]),
        (Some(HELLO.len() as u64), &json!(false))
    );
    assert!(a["headers"].get("set-cookie").is_none(), "{a}");
    let a = c
        .call(
            "proxy/fetch",
            json!({"url": pages.url("/hello"), "method": "HEAD"}),
            T,
        )
        .await
        .expect("HEAD");
    assert_eq!(
        (a["status"].as_u64(), a["bytes"].as_u64()),
        (Some(200), Some(0))
    );

    // Not listed: another name of the same address, another port; and a body over max_bytes.
    for url in [
        format!("http://localhost:{port}/hello"),
        format!("http://127.0.0.1:{}/hello", port.wrapping_add(1).max(1)),
    ] {
        let e = c
            .call("proxy/fetch", json!({"url": url}), T)
            .await
            .expect_err("not in [proxy] allow");
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{url}: {e}");
        assert!(e.to_string().contains("[proxy] allow"), "{e}");
    }
    let e = c
        .call("proxy/fetch", json!({"url": pages.url("/bytes/70000")}), T)
        .await
        .expect_err("too large");
    assert_eq!(e.code(), Some(ErrorCode::Validation), "{e}");
    assert!(
        e.to_string().contains("response larger than 65536 bytes"),
        "{e}"
    );
    let e = c
        .call(
            "proxy/fetch",
            json!({"url": pages.url("/hello"), "method": "POST"}),
            T,
        )
        .await
        .expect_err("POST");
    assert_eq!(e.code(), Some(ErrorCode::Validation), "{e}");

    // The same-origin path, and the decoder the web listener uses.
    let u = c
        .call("proxy/url", json!({"url": pages.url("/hello?a=1")}), T)
        .await
        .expect("a path");
    let path = u["path"].as_str().expect("path");
    assert_eq!(decode_path(path).expect("decodes"), pages.url("/hello?a=1"));
    assert_eq!(u["allowed"], true);

    let s = c
        .call("proxy/status", Value::Null, T)
        .await
        .expect("status");
    assert_eq!(
        (
            s["allowed"].as_u64(),
            s["answered"].as_u64(),
            s["denied"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(3), Some(2), Some(2), Some(1)),
        "{s}"
    );
    assert_eq!(s["bytes"].as_u64(), Some(HELLO.len() as u64));
    assert_eq!(s["allow"], json!([format!("127.0.0.1:{port}")]));
    assert_eq!(s["maxBytes"], 65536);
    // Only the allowed requests reached the server.
    assert_eq!(
        pages.request_lines(),
        [
            "GET /hello HTTP/1.1",
            "HEAD /hello HTTP/1.1",
            "GET /bytes/70000 HTTP/1.1"
        ]
    );

    // The CLI shows the new code like any other.
    let out = host.cli(&[
        "call",
        "proxy/fetch",
        "--url",
        &format!("http://localhost:{port}/"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e: Value = serde_json::from_str(stderr(&out).trim()).expect("a JSON error");
    assert_eq!(e["error"]["code"], "forbidden", "{e}");
}
