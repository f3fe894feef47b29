//! The proxy daemon inside a real runtime, fetching from testkit's `PageServer` on 127.0.0.1.
//!
//! Nothing leaves the loopback interface: names other than `localhost` come from a
//! `StaticResolver`, and every refused URL is refused before anything is sent (each test
//! checks what the page server saw). No test sleeps: stalls are servers that never answer, and
//! waits poll a condition with a deadline.

use base64::Engine as _;
use daemonhost_proxy::{ProxyConfig, ProxyDaemon, StaticResolver, decode_path};
use daemonhost_runtime::{DaemonError, ErrorCode, Router, Runtime, RuntimeBuilder};
use daemonhost_testkit::pages::{HELLO, PageServer};
use daemonhost_testkit::{eventually, quiet_config, within};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn config(allow: &[String]) -> ProxyConfig {
    ProxyConfig {
        allow: allow.to_vec(),
        ..ProxyConfig::default()
    }
}

async fn runtime(daemon: ProxyDaemon) -> Runtime {
    daemonhost_testkit::boot(quiet_config(), |b| {
        b.register(daemon);
    })
    .await
}

async fn fetch(router: &Router, params: Value) -> Result<Value, DaemonError> {
    within("proxy/fetch", router.ask("proxy/fetch", params)).await
}

async fn status(router: &Router) -> Value {
    router
        .ask("proxy/status", Value::Null)
        .await
        .expect("proxy/status")
}

fn body(answer: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(answer["body"].as_str().expect("a base64 body"))
        .expect("valid base64")
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[tokio::test]
async fn an_empty_allowlist_denies_every_url_with_forbidden_naming_the_host_and_the_key() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(ProxyConfig::default())).await;
    let router = rt.router();
    for url in [
        pages.url("/hello"),
        format!("http://localhost:{}/hello", pages.port),
        "https://example.com/".to_owned(),
    ] {
        let e = fetch(&router, json!({"url": url}))
            .await
            .expect_err("denied");
        assert_eq!(e.code, ErrorCode::Forbidden, "{e}");
        assert!(e.message.contains("[proxy] allow"), "{e}");
    }
    let e = fetch(&router, json!({"url": pages.url("/hello")}))
        .await
        .expect_err("denied");
    assert!(e.message.contains("'127.0.0.1'"), "{e}");
    assert!(
        e.message.contains(&format!("\"127.0.0.1:{}\"", pages.port)),
        "{e}"
    );
    assert!(pages.request_lines().is_empty(), "nothing was sent");
    let s = status(&router).await;
    assert_eq!(
        (s["denied"].as_u64(), s["allowed"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(s["allow"], json!([]));
    rt.shutdown().await;
}

#[tokio::test]
async fn an_allowed_loopback_host_is_fetched_with_its_status_type_and_only_allowed_headers() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(config(&[format!(
        "127.0.0.1:{}",
        pages.port
    )])))
    .await;
    let router = rt.router();
    let a = fetch(&router, json!({"url": pages.url("/hello#top")}))
        .await
        .expect("an answer");
    assert_eq!(a["status"], 200);
    assert_eq!(a["contentType"], "text/html; charset=utf-8");
    assert_eq!(body(&a), HELLO.as_bytes());
    assert_eq!(a["bytes"], HELLO.len());
    assert_eq!(a["truncated"], false);
    assert_eq!(a["url"], pages.url("/hello"), "the fragment is not fetched");
    let headers = a["headers"].as_object().expect("headers");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["etag"], "\"v1\"");
    assert_eq!(headers["content-length"], HELLO.len().to_string());
    for dropped in ["set-cookie", "x-frame-options", "connection"] {
        assert!(!headers.contains_key(dropped), "{dropped} in {a}");
    }
    // What was sent: GET, no cookie, no credentials, identity encoding.
    let heads = pages.heads.lock().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(head.starts_with("get /hello http/1.1\r\n"), "{head}");
    assert!(head.contains("accept-encoding: identity"), "{head}");
    assert!(
        !head.contains("cookie") && !head.contains("authorization"),
        "{head}"
    );
    // Any status is an answer.
    let a = fetch(&router, json!({"url": pages.url("/status/404")}))
        .await
        .expect("a 404 is an answer");
    assert_eq!(a["status"], 404);
    assert_eq!(body(&a), b"status 404");
    let s = status(&router).await;
    assert_eq!(
        (
            s["allowed"].as_u64(),
            s["answered"].as_u64(),
            s["denied"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert_eq!(s["bytes"].as_u64(), Some((HELLO.len() + 10) as u64));
    assert_eq!(s["allow"], json!([format!("127.0.0.1:{}", pages.port)]));
    rt.shutdown().await;
}

#[tokio::test]
async fn a_loopback_target_is_denied_when_only_a_wildcard_or_another_spelling_is_listed() {
    let pages = PageServer::start().await;
    let port = pages.port;
    let names = StaticResolver::new()
        .with("app.example.test", &[loopback()])
        .with(
            "mixed.example.test",
            &["8.8.8.8".parse().expect("ip"), loopback()],
        )
        .with(
            "v6.example.test",
            &["::ffff:127.0.0.1".parse().expect("ip")],
        );
    let rt = runtime(
        ProxyDaemon::new(config(&[
            format!("*.example.test:{port}"),
            format!("127.0.0.1:{port}"),
        ]))
        .with_resolver(names.clone()),
    )
    .await;
    let router = rt.router();
    for (host, addr) in [
        ("app.example.test", "127.0.0.1"),
        ("mixed.example.test", "127.0.0.1"),
        ("v6.example.test", "::ffff:127.0.0.1"),
    ] {
        let e = fetch(
            &router,
            json!({"url": format!("http://{host}:{port}/hello")}),
        )
        .await
        .expect_err("a wildcard does not reach loopback");
        assert_eq!(e.code, ErrorCode::Forbidden, "{e}");
        assert!(
            e.message.contains(&format!("'{host}'"))
                && e.message.contains(addr)
                && e.message.contains("loopback")
                && e.message.contains("[proxy] allow"),
            "{e}"
        );
    }
    // Listing the address does not allow other names of it, nor other spellings of the URL.
    for url in [
        format!("http://localhost:{port}/hello"),
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
        format!("http://[::1]:{port}/hello"),
    ] {
        let e = fetch(&router, json!({"url": url}))
            .await
            .expect_err("not listed");
        assert_eq!(e.code, ErrorCode::Forbidden, "{url}: {e}");
    }
    assert!(pages.request_lines().is_empty(), "nothing was sent");
    // The spellings the URL parser turns into the listed address are that address.
    let a = fetch(
        &router,
        json!({"url": format!("http://2130706433:{port}/hello")}),
    )
    .await
    .expect("the listed address, spelt as a number");
    assert_eq!(a["status"], 200);
    assert_eq!(status(&router).await["denied"], 6);
    rt.shutdown().await;
}

#[tokio::test]
async fn the_client_connects_only_to_the_checked_address_and_never_resolves_a_name_itself() {
    let pages = PageServer::start().await;
    let port = pages.port;
    // `.test` names do not resolve on any system: only the checked answer can be used.
    let names = StaticResolver::new().with("app.example.test", &[loopback()]);
    let rt = runtime(
        ProxyDaemon::new(config(&[format!("app.example.test:{port}")]))
            .with_resolver(names.clone()),
    )
    .await;
    let router = rt.router();
    for n in 1..=3u64 {
        let a = fetch(
            &router,
            json!({"url": format!("http://app.example.test:{port}/hello")}),
        )
        .await
        .expect("listed exactly, so it may reach loopback");
        assert_eq!(body(&a), HELLO.as_bytes());
        assert_eq!(names.lookups(), n, "one resolution per fetch, by the proxy");
    }
    let heads = pages.heads.lock().clone();
    assert!(
        heads
            .iter()
            .all(|h| h.contains(&format!("host: app.example.test:{port}"))),
        "{heads:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn localhost_listed_exactly_is_fetched_through_the_system_resolver() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(config(&[format!(
        "http://localhost:{}",
        pages.port
    )])))
    .await;
    let router = rt.router();
    let a = fetch(
        &router,
        json!({"url": format!("http://localhost:{}/hello", pages.port)}),
    )
    .await
    .expect("an answer");
    assert_eq!(body(&a), HELLO.as_bytes());
    let e = fetch(
        &router,
        json!({"url": format!("https://localhost:{}/hello", pages.port)}),
    )
    .await
    .expect_err("the entry names http only");
    assert_eq!(e.code, ErrorCode::Forbidden, "{e}");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_body_over_max_bytes_fails_whole_naming_the_limit_and_one_at_the_limit_is_answered() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(ProxyConfig {
        max_bytes: 4096,
        ..config(&[format!("127.0.0.1:{}", pages.port)])
    }))
    .await;
    let router = rt.router();
    for path in ["/bytes/4096", "/chunked/4096"] {
        let a = fetch(&router, json!({"url": pages.url(path)}))
            .await
            .expect("at the limit");
        assert_eq!(
            (a["bytes"].as_u64(), body(&a).len()),
            (Some(4096), 4096),
            "{path}"
        );
    }
    // Declared too long (refused from its content-length), and streamed too long.
    for path in [
        "/bytes/4097",
        "/bytes/3000000",
        "/chunked/4097",
        "/chunked/10000000",
    ] {
        let e = fetch(&router, json!({"url": pages.url(path)}))
            .await
            .expect_err("over the limit");
        assert_eq!(e.code, ErrorCode::Validation, "{path}: {e}");
        assert!(
            e.message.starts_with("response larger than 4096 bytes")
                && e.message.contains("[proxy] max_bytes"),
            "{path}: {e}"
        );
    }
    let s = status(&router).await;
    assert_eq!(
        (s["answered"].as_u64(), s["failed"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(s["bytes"].as_u64(), Some(8192));
    rt.shutdown().await;
}

#[tokio::test]
async fn a_stalling_server_is_cut_off_at_timeout_ms_with_timeout() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(ProxyConfig {
        timeout: Duration::from_millis(300),
        ..config(&[format!("127.0.0.1:{}", pages.port)])
    }))
    .await;
    let router = rt.router();
    // No answer at all, and headers then a body that stops.
    for path in ["/stall", "/stall-body"] {
        let t0 = Instant::now();
        let e = fetch(&router, json!({"url": pages.url(path)}))
            .await
            .expect_err("stalled");
        let took = t0.elapsed();
        assert_eq!(e.code, ErrorCode::Timeout, "{path}: {e}");
        assert!(
            e.message.contains("within 300 ms") && e.message.contains("[proxy] timeout_ms"),
            "{e}"
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{path}: {took:?}"
        );
    }
    assert_eq!(status(&router).await["failed"], 2);
    rt.shutdown().await;
}

#[tokio::test]
async fn head_answers_the_status_and_headers_without_reading_a_body() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(ProxyConfig {
        max_bytes: 4096,
        ..config(&[format!("127.0.0.1:{}", pages.port)])
    }))
    .await;
    let router = rt.router();
    // Far larger than max_bytes: HEAD reads no body, so it is answered.
    let a = fetch(
        &router,
        json!({"url": pages.url("/bytes/5000000"), "method": "HEAD"}),
    )
    .await
    .expect("HEAD");
    assert_eq!(a["status"], 200);
    assert_eq!(a["headers"]["content-length"], "5000000");
    assert_eq!(a["contentType"], "application/octet-stream");
    assert_eq!(
        (a["bytes"].as_u64(), a["body"].as_str()),
        (Some(0), Some(""))
    );
    let a = fetch(
        &router,
        json!({"url": pages.url("/hello"), "method": "head"}),
    )
    .await
    .expect("head, any case");
    assert_eq!(a["bytes"], 0);
    assert_eq!(
        pages.request_lines(),
        ["HEAD /bytes/5000000 HTTP/1.1", "HEAD /hello HTTP/1.1"]
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn methods_other_than_get_and_head_are_refused_before_anything_is_sent() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(config(&[format!(
        "127.0.0.1:{}",
        pages.port
    )])))
    .await;
    let router = rt.router();
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ] {
        let e = fetch(
            &router,
            json!({"url": pages.url("/hello"), "method": method}),
        )
        .await
        .expect_err(method);
        assert_eq!(e.code, ErrorCode::Validation, "{method}: {e}");
        assert_eq!(
            e.message,
            format!("method: GET or HEAD only (got '{method}')")
        );
    }
    let e = fetch(&router, json!({"url": pages.url("/hello"), "method": 7}))
        .await
        .expect_err("not a string");
    assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
    assert!(pages.request_lines().is_empty());
    rt.shutdown().await;
}

#[tokio::test]
async fn a_redirect_is_answered_with_an_absolute_location_and_not_followed() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(config(&[format!(
        "127.0.0.1:{}",
        pages.port
    )])))
    .await;
    let router = rt.router();
    let a = fetch(&router, json!({"url": pages.url("/redirect")}))
        .await
        .expect("the 302 itself");
    assert_eq!(a["status"], 302);
    assert_eq!(a["headers"]["location"], pages.url("/hello"));
    assert_eq!(pages.request_lines(), ["GET /redirect HTTP/1.1"]);
    rt.shutdown().await;
}

#[tokio::test]
async fn https_to_a_server_that_speaks_no_tls_is_unavailable_naming_the_host() {
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(config(&[format!(
        "127.0.0.1:{}",
        pages.port
    )])))
    .await;
    let router = rt.router();
    let e = fetch(
        &router,
        json!({"url": format!("https://127.0.0.1:{}/hello", pages.port)}),
    )
    .await
    .expect_err("no TLS there");
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    assert!(e.message.contains("'127.0.0.1'"), "{e}");
    assert_eq!(pages.request_lines(), ["(a TLS ClientHello)"]);
    let s = status(&router).await;
    assert_ne!(
        s["tls"], "not loaded",
        "the TLS configuration was built: {s}"
    );
    assert_eq!(s["failed"], 1);
    rt.shutdown().await;
}

#[tokio::test]
async fn fetches_past_max_concurrent_are_answered_overloaded_at_once() {
    let stalling = PageServer::start().await;
    let pages = PageServer::start().await;
    let rt = runtime(ProxyDaemon::new(ProxyConfig {
        max_concurrent: 1,
        ..config(&[
            format!("127.0.0.1:{}", stalling.port),
            format!("127.0.0.1:{}", pages.port),
        ])
    }))
    .await;
    let router = rt.router();
    let first = tokio::spawn({
        let router = router.clone();
        let url = stalling.url("/stall");
        async move { router.ask("proxy/fetch", json!({"url": url})).await }
    });
    eventually("the first fetch to hold the only permit", async || {
        status(&router).await["inFlight"] == 1
    })
    .await;
    let t0 = Instant::now();
    let e = fetch(&router, json!({"url": pages.url("/hello")}))
        .await
        .expect_err("the one permit is taken");
    assert_eq!(e.code, ErrorCode::Overloaded, "{e}");
    assert!(e.message.contains("[proxy] max_concurrent = 1"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2), "answered at once");
    assert!(pages.request_lines().is_empty());
    // The stalled fetch ends when its server goes away; its permit comes back.
    stalling.stop().await;
    let e = within("the stalled fetch to fail", first)
        .await
        .expect("joined")
        .expect_err("its server closed");
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    let a = fetch(&router, json!({"url": pages.url("/hello")}))
        .await
        .expect("a permit is free again");
    assert_eq!(a["status"], 200);
    let s = status(&router).await;
    assert_eq!(
        (s["busy"].as_u64(), s["inFlight"].as_u64()),
        (Some(1), Some(0))
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn proxy_url_answers_the_path_that_decode_path_reads_back() {
    let rt = runtime(ProxyDaemon::new(config(&["docs.rs".to_owned()]))).await;
    let router = rt.router();
    let a = router
        .ask(
            "proxy/url",
            json!({"url": "https://DOCS.rs/tokio/latest/tokio/?search=a b&x=%2F#section"}),
        )
        .await
        .expect("a path");
    let path = a["path"].as_str().expect("path");
    let (encoded, fragment) = path.split_once('#').expect("the fragment stays a fragment");
    assert_eq!(fragment, "section");
    assert!(
        encoded.starts_with("/proxy/https%3A%2F%2Fdocs.rs%2F"),
        "{path}"
    );
    assert_eq!(
        decode_path(encoded).expect("decodes"),
        "https://docs.rs/tokio/latest/tokio/?search=a%20b&x=%2F"
    );
    assert_eq!(a["allowed"], true);
    let a = router
        .ask("proxy/url", json!({"url": "https://example.com/"}))
        .await
        .expect("a path");
    assert_eq!(a["allowed"], false);
    // The example of docs/PROTOCOL.md.
    let a = router
        .ask("proxy/url", json!({"url": "https://docs.rs/tokio?x=1#top"}))
        .await
        .expect("a path");
    assert_eq!(
        a["path"],
        "/proxy/https%3A%2F%2Fdocs.rs%2Ftokio%3Fx%3D1#top"
    );
    for url in [
        "ftp://docs.rs/",
        "/relative",
        "https://user:pw@docs.rs/",
        "not a url",
    ] {
        let e = router
            .ask("proxy/url", json!({"url": url}))
            .await
            .expect_err(url);
        assert_eq!(e.code, ErrorCode::Validation, "{url}: {e}");
        assert!(e.message.starts_with("url: "), "{e}");
    }
    let e = router
        .ask("proxy/fetch", json!({}))
        .await
        .expect_err("no url");
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::Validation, "url: required")
    );
    let long = format!("https://docs.rs/{}", "a".repeat(9000));
    let e = router
        .ask("proxy/fetch", json!({"url": long}))
        .await
        .expect_err("too long");
    assert_eq!(e.code, ErrorCode::Validation, "{e}");
    assert!(e.message.contains("at most 8192 bytes"), "{e}");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_bad_allowlist_entry_fails_the_daemon_naming_the_entry_and_the_key() {
    let mut b = RuntimeBuilder::new(quiet_config());
    b.register(ProxyDaemon::new(config(&[
        "docs.rs".to_owned(),
        "*.10.0.0.1".to_owned(),
    ])));
    let rt = b.build().expect("a valid plan");
    let report = within("the start", rt.start_all()).await;
    let failed = report
        .failed
        .iter()
        .find(|f| f.daemon == "proxy")
        .expect("the proxy failed");
    let cause = failed.cause.to_string();
    assert!(
        cause.contains("[proxy] allow") && cause.contains("'*.10.0.0.1'"),
        "{cause}"
    );
    rt.shutdown().await;
}
