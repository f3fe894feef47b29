//! A tiny website over real HTTP/1.1 on 127.0.0.1, for the proxy: fixed pages, bodies of any
//! size, a redirect, a server that stalls, recording every request head it was sent. One
//! request per connection (`Connection: close`).
//!
//! | path | answer |
//! |---|---|
//! | `/hello` | 200 `text/html; charset=utf-8` [`HELLO`], with `set-cookie`, `x-frame-options`, `cache-control` and `etag` |
//! | `/bytes/N` | 200 `application/octet-stream`, N bytes of `x`, with `content-length` |
//! | `/chunked/N` | 200, N bytes of `x` in chunks of at most 1 KiB, no `content-length` |
//! | `/redirect` | 302 to `/hello` (relative `location`) |
//! | `/status/N` | status N, a short text body |
//! | `/stall` | reads the request and never answers |
//! | `/stall-body` | headers (`content-length: 1000`) and 10 bytes, then nothing |
//! | anything else | 404 |
//!
//! `HEAD` gets the headers of `GET` and no body. A TLS ClientHello is answered with a plain-text
//! 400, as a plain HTTP server answers one (recorded as the head `(a TLS ClientHello)`). A stalled connection stays open until the
//! server is stopped or dropped; nothing here sleeps.

use parking_lot::Mutex;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The body of `/hello`.
pub const HELLO: &str = "<!doctype html><h1>hello from the page server</h1>";

/// The running server; dropped or [`PageServer::stop`]ped, it closes every connection.
#[derive(Debug)]
pub struct PageServer {
    /// `http://127.0.0.1:PORT`.
    pub root: String,
    /// Its port.
    pub port: u16,
    /// The head (request line and headers) of every request, in arrival order.
    pub heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl PageServer {
    /// Listen on an ephemeral port of 127.0.0.1.
    pub async fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                conns.spawn(serve(sock, Arc::clone(&seen)));
            }
        });
        PageServer {
            root: format!("http://127.0.0.1:{port}"),
            port,
            heads,
            task,
        }
    }

    /// `root` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    /// The request lines received so far (`GET /hello HTTP/1.1`, …).
    pub fn request_lines(&self) -> Vec<String> {
        self.heads
            .lock()
            .iter()
            .map(|h| h.lines().next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Stop accepting and close every connection.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut sock: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
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
        if buf.first() == Some(&0x16) {
            // A TLS handshake record: answered in plain text, as a plain HTTP server does.
            heads.lock().push("(a TLS ClientHello)".to_owned());
            let _ = sock
                .write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                .await;
            return;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    heads.lock().push(head.clone());
    let line = head.lines().next().unwrap_or_default().to_owned();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let head_only = method == "HEAD";
    let plain = |status: &str, extra: &str, body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        if !head_only {
            r.extend_from_slice(body);
        }
        r
    };
    let number = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
    };
    let resp = if path == "/hello" {
        plain(
            "200 OK",
            "content-type: text/html; charset=utf-8\r\nset-cookie: session=secret; Path=/\r\n\
             x-frame-options: DENY\r\ncache-control: no-cache\r\netag: \"v1\"\r\n",
            HELLO.as_bytes(),
        )
    } else if let Some(n) = number("/bytes/") {
        plain(
            "200 OK",
            "content-type: application/octet-stream\r\n",
            &vec![b'x'; n],
        )
    } else if let Some(n) = number("/chunked/") {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                      transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
        if sock.write_all(&r).await.is_err() || head_only {
            return;
        }
        let mut left = n;
        while left > 0 {
            let k = left.min(1024);
            r = format!("{k:x}\r\n").into_bytes();
            r.extend(std::iter::repeat_n(b'x', k));
            r.extend_from_slice(b"\r\n");
            if sock.write_all(&r).await.is_err() {
                return;
            }
            left -= k;
        }
        b"0\r\n\r\n".to_vec()
    } else if path == "/redirect" {
        plain("302 Found", "location: /hello\r\n", b"")
    } else if let Some(n) = number("/status/") {
        plain(
            &format!("{n} Status"),
            "content-type: text/plain\r\n",
            format!("status {n}").as_bytes(),
        )
    } else if path == "/stall" {
        std::future::pending::<()>().await;
        return;
    } else if path == "/stall-body" {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\nxxxxxxxxxx";
        if sock.write_all(r).await.is_ok() {
            std::future::pending::<()>().await;
        }
        return;
    } else {
        plain(
            "404 Not Found",
            "content-type: text/plain\r\n",
            b"no such page",
        )
    };
    let _ = sock.write_all(&resp).await;
    let _ = sock.shutdown().await;
}
