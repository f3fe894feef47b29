//! AI daemon end to end, inside a real runtime, against a real HTTP server on 127.0.0.1.
//!
//! The server is testkit's `ProviderServer`, a tiny HTTP/1.1 responder (one request per
//! connection, `Connection: close`) speaking the OpenAI-compatible and Anthropic endpoints the
//! adapters use. Nothing leaves the loopback interface; synchronisation is by polling with a
//! timeout.

use daemonhost_ai::{AiConfig, AiDaemon, BreakerConfig, ProviderConfig};
use daemonhost_runtime::{
    CommandSpec, DaemonError, DaemonSpec, ErrorCode, Runtime, RuntimeBuilder,
};
use daemonhost_testkit::fake::Fake;
use daemonhost_testkit::http::ProviderServer;
use daemonhost_testkit::{eventually, quiet_config, within};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "sk-test-0123456789";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn write_secrets(dir: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("secrets.env");
    std::fs::write(&path, format!("# test keys\nLOCAL_KEY={KEY}\n")).expect("write secrets");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

async fn runtime_with(daemons: impl FnOnce(&mut RuntimeBuilder)) -> Runtime {
    daemonhost_testkit::boot(quiet_config(), daemons).await
}

fn provider<'a>(providers: &'a Value, name: &str) -> &'a Value {
    providers["providers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no provider {name} in {providers}"))
}

fn ask_generate(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_openai_server_answers_then_its_circuit_opens_and_retrieval_answers() {
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_secrets(dir.path(), 0o600);
    let config = AiConfig {
        data_dir: dir.path().to_owned(),
        providers: vec![
            ProviderConfig::openai("local", &server.base_url, "test-model")
                .api_key_env("LOCAL_KEY")
                .priority(10),
            ProviderConfig::retrieval(),
        ],
        // Only the deferred check runs during the test.
        health_interval: Duration::from_secs(3600),
        health_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        breaker: BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(300),
            half_open_probes: 1,
        },
        ..AiConfig::default()
    };
    let rt = runtime_with(|b| {
        b.register(AiDaemon::new(config));
    })
    .await;
    let router = rt.router();

    // Deferred init checks health through GET /models.
    let providers = eventually("the first health check", || async {
        let v = router.ask("ai/providers", json!({})).await.ok()?;
        (provider(&v, "local")["health"] == "healthy").then_some(v)
    })
    .await;
    assert_eq!(provider(&providers, "local")["circuit"], "closed");
    assert_eq!(providers["secrets"]["status"], "loaded");
    assert!(server.seen.models.load(Ordering::SeqCst) >= 1);
    // Core init did no network and no blocking work on the daemon's task.
    let init = rt
        .init_reports()
        .into_iter()
        .find(|r| r.daemon == "ai")
        .expect("ai init report");
    assert!(init.core_init_ms < 1000.0, "{init:?}");
    assert!(init.work.pool + init.work.blocking >= 1, "{init:?}");

    // The reply comes from the server.
    let r = within("generate", router.ask("ai/generate", ask_generate("ping")))
        .await
        .expect("answer");
    assert_eq!(r["text"], "pong from test server: ping", "{r}");
    assert_eq!(r["provider"], "local");
    assert_eq!(r["model"], "test-model");
    assert_eq!(r["isLanguageModel"], true);
    assert_eq!(r["usage"]["totalTokens"], 8);
    assert_eq!(
        r["attempts"],
        json!([{"provider": "local", "outcome": "answered"}])
    );
    assert_eq!(
        server.seen.authorization.lock().last().map(String::as_str),
        Some(format!("Bearer {KEY}").as_str()),
        "the key from secrets.env is sent"
    );
    let sent = server.seen.bodies.lock().last().cloned().expect("a body");
    assert_eq!(sent["stream"], false);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "ping"}])
    );

    // Server down: each call fails, falls through to retrieval, and counts toward the breaker.
    let seen = server.stop().await;
    let completions_before = seen.completions.load(Ordering::SeqCst);
    for i in 0..3 {
        let r = within("fallback", router.ask("ai/generate", ask_generate("ping")))
            .await
            .expect("retrieval answers");
        assert_eq!(r["provider"], "retrieval", "call {i}: {r}");
        assert_eq!(r["isLanguageModel"], false);
        assert_eq!(r["attempts"][0]["provider"], "local");
        assert_eq!(r["attempts"][0]["outcome"], "failed", "{r}");
        assert_eq!(r["attempts"][1]["outcome"], "answered");
    }
    let providers = router.ask("ai/providers", json!({})).await.expect("list");
    let local = provider(&providers, "local");
    assert_eq!(local["circuit"], "open", "{local}");
    assert_eq!(local["calls"], 4);
    assert_eq!(local["failures"], 3);
    assert!(
        local["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect")),
        "{local}"
    );

    // Open: the dead server is not called at all; retrieval answers at once.
    let started = std::time::Instant::now();
    let r = within("fail fast", router.ask("ai/generate", ask_generate("ping")))
        .await
        .expect("retrieval answers");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r["provider"], "retrieval");
    assert_eq!(r["isLanguageModel"], false);
    assert!(
        r["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Retrieval summary (not a language model)")),
        "{r}"
    );
    assert_eq!(r["attempts"][0]["outcome"], "circuit_open", "{r}");
    let providers = router.ask("ai/providers", json!({})).await.expect("list");
    assert_eq!(
        provider(&providers, "local")["calls"],
        4,
        "no call while open"
    );
    assert_eq!(seen.completions.load(Ordering::SeqCst), completions_before);

    // Asking for the open provider by name fails fast with the cause.
    let mut only = ask_generate("ping");
    only["provider"] = json!("local");
    let e = router
        .ask("ai/generate", only)
        .await
        .expect_err("circuit open");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("circuit open"), "{e}");

    // The key never appears in what the daemon says about itself.
    assert!(!providers.to_string().contains(KEY));
    within("shutdown", rt.shutdown()).await;
}

/// A stand-in search daemon: hits without text, like the real index.
fn fake_search() -> Fake {
    Fake::answering(
        DaemonSpec::new("search").command(CommandSpec::new("search/messages", "fake")),
        |_| {
            Ok(json!({"hits": [
                {"id": "m1", "roomId": "general", "score": 2.5, "createdAt": "2026-01-01T00:00:00Z"},
                {"id": "m2", "roomId": "general", "score": 1.5, "createdAt": "2026-01-01T00:01:00Z"},
                {"id": "gone", "roomId": "general", "score": 0.5, "createdAt": "2026-01-01T00:02:00Z"}
            ], "matched": 3}))
        },
    )
}

/// A stand-in data daemon serving `data/read` for chat messages.
fn fake_data() -> Fake {
    Fake::answering(
        DaemonSpec::new("data").command(CommandSpec::new("data/read", "fake")),
        |req| match req.params["id"].as_str() {
            Some("m1") => Ok(json!({"id": "m1", "senderName": "ann",
                                    "content": {"text": "The release is on Friday."}})),
            Some("m2") => Ok(json!({"id": "m2", "senderName": "bo",
                                    "content": {"text": "Release notes are in the wiki."}})),
            _ => Err(DaemonError::not_found("no such message")),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieval_composes_its_reply_from_search_hits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let search = fake_search();
    let rt = runtime_with(|b| {
        b.register(AiDaemon::new(AiConfig {
            data_dir: dir.path().to_owned(),
            ..AiConfig::default()
        }));
        b.register(search.clone());
        b.register(fake_data());
    })
    .await;
    let router = rt.router();
    let mut params = ask_generate("when is the release?");
    params["roomId"] = json!("general");
    let r = within("generate", router.ask("ai/generate", params))
        .await
        .expect("answer");
    assert_eq!(r["provider"], "retrieval");
    assert_eq!(r["isLanguageModel"], false);
    let text = r["text"].as_str().expect("text");
    assert!(
        text.starts_with("Retrieval summary (not a language model)"),
        "{text}"
    );
    assert!(text.contains("1. ann: The release is on Friday."), "{text}");
    assert!(
        text.contains("2. bo: Release notes are in the wiki."),
        "{text}"
    );
    assert!(
        !text.contains("3."),
        "a hit that cannot be read is left out: {text}"
    );
    assert_eq!(
        search.requests().first().map(|(_, params)| params.clone()),
        Some(json!({"query": "when is the release?", "roomId": "general", "limit": 5}))
    );
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_readable_secrets_file_is_refused_and_the_daemon_still_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_secrets(dir.path(), 0o644);
    let rt = runtime_with(|b| {
        b.register(AiDaemon::new(AiConfig {
            data_dir: dir.path().to_owned(),
            providers: vec![
                ProviderConfig::openai("keyed", "http://127.0.0.1:9/v1", "m")
                    .api_key_env("LOCAL_KEY")
                    .priority(1),
                ProviderConfig::retrieval(),
            ],
            ..AiConfig::default()
        }));
    })
    .await;
    let router = rt.router();
    let v = router.ask("ai/providers", json!({})).await.expect("list");
    assert_eq!(v["secrets"]["status"], "refused", "{v}");
    assert!(
        v["secrets"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("644")),
        "{v}"
    );
    let keyed = provider(&v, "keyed");
    assert_eq!(keyed["health"], "unhealthy");
    assert!(
        keyed["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{keyed}"
    );
    let r = router
        .ask("ai/generate", ask_generate("hello"))
        .await
        .expect("retrieval answers");
    assert_eq!(r["provider"], "retrieval");
    assert_eq!(r["attempts"][0]["outcome"], "disabled", "{r}");
    assert!(!v.to_string().contains(KEY));
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_rejects_bad_params_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime_with(|b| {
        b.register(AiDaemon::new(AiConfig {
            data_dir: dir.path().to_owned(),
            ..AiConfig::default()
        }));
    })
    .await;
    let router = rt.router();
    let e = router
        .ask(
            "ai/generate",
            json!({"messages": [{"role": "robot", "content": "x"}]}),
        )
        .await
        .expect_err("bad role");
    assert_eq!(e.code, ErrorCode::Validation);
    assert!(e.message.contains("messages[0].role"), "{e}");
    let mut p = ask_generate("x");
    p["provider"] = json!("nope");
    let e = router.ask("ai/generate", p).await.expect_err("unknown");
    assert_eq!(e.code, ErrorCode::Validation);
    assert!(e.message.contains("unknown provider 'nope'"), "{e}");
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_adapter_speaks_the_messages_api() {
    let server = ProviderServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_secrets(dir.path(), 0o600);
    let rt = runtime_with(|b| {
        b.register(AiDaemon::new(AiConfig {
            data_dir: dir.path().to_owned(),
            providers: vec![
                ProviderConfig::anthropic("claude", "claude-test", "LOCAL_KEY")
                    .base_url(&server.root)
                    .priority(5),
                ProviderConfig::retrieval(),
            ],
            health_interval: Duration::from_secs(3600),
            ..AiConfig::default()
        }));
    })
    .await;
    let router = rt.router();
    let r = within(
        "generate",
        router.ask(
            "ai/generate",
            json!({"messages": [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hi"}],
                   "maxTokens": 32}),
        ),
    )
    .await
    .expect("answer");
    assert_eq!(r["provider"], "claude", "{r}");
    assert_eq!(r["text"], "claude-ish: system was 'be brief'");
    assert_eq!(r["model"], "claude-test");
    assert_eq!(r["usage"]["totalTokens"], 10);
    assert_eq!(
        server.seen.anthropic_headers.lock().last().cloned(),
        Some((KEY.to_owned(), "2023-06-01".to_owned()))
    );
    let sent = server.seen.bodies.lock().last().cloned().expect("a body");
    assert_eq!(sent["max_tokens"], 32);
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "hi"}]));
    server.stop().await;
    within("shutdown", rt.shutdown()).await;
}

/// A server that accepts and then misbehaves: `stream` sends an endless body (no length),
/// otherwise it never answers. Returns the base URL; the task ends with the test's runtime.
async fn hostile_server(stream: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            if stream {
                tokio::spawn(async move {
                    // Answer only once the request's head arrived: a response sent before the
                    // request is a protocol error to hyper ("unexpected message"), which is a
                    // different failure from the endless body this server exists to send.
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let block = [b'x'; 4096];
                    while sock.write_all(&block).await.is_ok() {}
                });
            } else {
                held.push(sock);
            }
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_silent_servers_cost_bounded_memory_and_time() {
    let endless = hostile_server(true).await;
    let silent = hostile_server(false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime_with(|b| {
        b.register(AiDaemon::new(AiConfig {
            data_dir: dir.path().to_owned(),
            providers: vec![
                ProviderConfig::openai("endless", &endless, "m").priority(2),
                ProviderConfig::openai("silent", &silent, "m").priority(1),
                ProviderConfig::retrieval(),
            ],
            max_response_bytes: 64 * 1024,
            request_timeout: Duration::from_millis(500),
            health_timeout: Duration::from_millis(500),
            health_interval: Duration::from_secs(3600),
            ..AiConfig::default()
        }));
    })
    .await;
    let router = rt.router();
    let started = std::time::Instant::now();
    let r = within("generate", router.ask("ai/generate", ask_generate("hi")))
        .await
        .expect("retrieval answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r["provider"], "retrieval", "{r}");
    let attempts = r["attempts"].as_array().expect("attempts");
    assert_eq!(attempts[0]["provider"], "endless");
    assert!(
        attempts[0]["reason"]
            .as_str()
            .is_some_and(|e| e.contains("larger than 65536 bytes")),
        "{r}"
    );
    assert_eq!(attempts[1]["provider"], "silent");
    assert!(
        attempts[1]["reason"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within 500 ms")),
        "{r}"
    );
    within("shutdown", rt.shutdown()).await;
}
