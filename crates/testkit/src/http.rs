//! A fake AI provider over real HTTP on 127.0.0.1: the OpenAI-compatible endpoints
//! (`POST /v1/chat/completions`, `GET /v1/models`) and Anthropic's `POST /v1/messages`, one
//! request per connection (`Connection: close`), recording what it was sent.
//!
//! Replies: a completion is `pong from test server: <the last message's content>`; Anthropic's
//! is `claude-ish: system was '<system>'` (two text blocks); the model list holds `test-model`.

use parking_lot::Mutex;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the server was sent.
#[derive(Debug, Default)]
pub struct Seen {
    /// `POST /v1/chat/completions` requests.
    pub completions: AtomicUsize,
    /// `GET /v1/models` requests.
    pub models: AtomicUsize,
    /// `Authorization` headers, in arrival order.
    pub authorization: Mutex<Vec<String>>,
    /// `x-api-key` and `anthropic-version` of each Anthropic request.
    pub anthropic_headers: Mutex<Vec<(String, String)>>,
    /// Request bodies of completions and messages, in arrival order.
    pub bodies: Mutex<Vec<Value>>,
}

/// The running server; [`ProviderServer::stop`] closes it (connections are refused after).
#[derive(Debug)]
pub struct ProviderServer {
    /// `http://127.0.0.1:PORT` (Anthropic's base URL).
    pub root: String,
    /// `{root}/v1`, the OpenAI-compatible base URL.
    pub base_url: String,
    /// What it was sent.
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl ProviderServer {
    /// Listen on an ephemeral port of 127.0.0.1.
    pub async fn start() -> ProviderServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                conns.spawn(serve(sock, s.clone()));
            }
        });
        ProviderServer {
            root: format!("http://{addr}"),
            base_url: format!("http://{addr}/v1"),
            seen,
            task,
        }
    }

    /// Stop accepting and close the listening socket and every connection; returns what it saw.
    pub async fn stop(self) -> Arc<Seen> {
        self.task.abort();
        let _ = self.task.await;
        self.seen
    }
}

async fn serve(mut sock: TcpStream, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut content_length = 0usize;
    let (mut api_key, mut version) = (String::new(), String::new());
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = v.trim().parse().unwrap_or(0),
            "authorization" => seen.authorization.lock().push(v.trim().to_owned()),
            "x-api-key" => api_key = v.trim().to_owned(),
            "anthropic-version" => version = v.trim().to_owned(),
            _ => {}
        }
    }
    while buf.len() < head_end + content_length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Value =
        serde_json::from_slice(&buf[head_end..head_end + content_length]).unwrap_or(Value::Null);
    let (status, reply) = if request_line.starts_with("POST /v1/chat/completions ") {
        seen.completions.fetch_add(1, Ordering::SeqCst);
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        let model = body["model"].clone();
        seen.bodies.lock().push(body);
        (
            "200 OK",
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant",
                                         "content": format!("pong from test server: {last}")}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
            }),
        )
    } else if request_line.starts_with("POST /v1/messages ") {
        seen.anthropic_headers.lock().push((api_key, version));
        let model = body["model"].clone();
        let system = body["system"].as_str().unwrap_or_default().to_owned();
        seen.bodies.lock().push(body);
        (
            "200 OK",
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "claude-ish: "},
                            {"type": "text", "text": format!("system was '{system}'")}],
                "usage": {"input_tokens": 4, "output_tokens": 6}
            }),
        )
    } else if request_line.starts_with("GET /v1/models ") {
        seen.models.fetch_add(1, Ordering::SeqCst);
        (
            "200 OK",
            json!({"object": "list", "data": [{"id": "test-model", "object": "model"}]}),
        )
    } else {
        ("404 Not Found", json!({"error": "no such route"}))
    };
    let text = reply.to_string();
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}
