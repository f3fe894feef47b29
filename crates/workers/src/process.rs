//! The worker-process side of the protocol.
//!
//! [`run_worker`] is what `daemonhost worker KIND --socket PATH [--data-dir DIR]` runs: it
//! connects to the socket the host bound for it, builds the service of that kind and serves it
//! with [`serve_connection`] until EOF or `worker/shutdown`.
//!
//! Per connection: one reader (this function's loop), one writer task batching frames into the
//! socket, and one task per request. A semaphore of `max_in_flight` permits is acquired *before*
//! each frame is read, so when that many requests are running the worker stops reading: the
//! host's writes block (backpressure), nothing is dropped. Responses go out in completion order.
//!
//! Built-in commands (answered even while the service is busy):
//! - `worker/hello` → `{kind, version, pid, protocol: 1, commands: [{name, description, idempotent}]}`
//! - `worker/ping` → `{pong: true, uptime_ms}`
//! - `worker/shutdown` → stop reading, wait for every request in flight to be answered, run the
//!   service's `shutdown` (the logger drains its queue), then answer `{ok: true}` and return.
//!
//! Malformed frames follow `docs/PROTOCOL.md`: a bad body is answered `bad_request` (with the id
//! when it can be read) and the connection goes on; an invalid response or event is ignored; a
//! declared length above the maximum is answered `frame_too_large` (id null) and the connection
//! is closed. A panicking handler is answered `internal`; `timeout_ms` is honoured (`timeout`).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemonhost_protocol::{
    CodecError, DEFAULT_MAX_FRAME, ErrorBody, ErrorCode, Frame, FrameCodec, FrameType, Request,
    Response,
};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::WorkerError;
use crate::logger::{LoggerConfig, LoggerService};
use crate::search::SearchService;
use crate::service::WorkerService;

/// Version reported by `worker/hello` from [`run_worker`].
pub const WORKER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Protocol version reported by `worker/hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Kinds [`run_worker`] can run.
pub const KNOWN_KINDS: [&str; 2] = ["logger", "search"];

/// Tuning of [`serve_connection_with`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Requests running at once before the worker stops reading (default 1024).
    pub max_in_flight: usize,
    /// Largest frame body accepted and sent (default 16 MiB).
    pub max_frame_len: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_in_flight: 1024,
            max_frame_len: DEFAULT_MAX_FRAME,
        }
    }
}

/// Serve `service` on `stream` with the default [`ServeConfig`].
pub async fn serve_connection<S: WorkerService>(
    service: Arc<S>,
    stream: UnixStream,
    version: &str,
) -> Result<(), WorkerError> {
    serve_connection_with(service, stream, version, ServeConfig::default()).await
}

async fn write_loop(
    mut sink: FramedWrite<OwnedWriteHalf, FrameCodec>,
    mut rx: mpsc::Receiver<Frame>,
) {
    while let Some(frame) = rx.recv().await {
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if let Err(e) = feed(&mut sink, frame).await {
                tracing::debug!(error = %e, "worker connection: write failed");
                return;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = SinkExt::<Frame>::flush(&mut sink).await {
            tracing::debug!(error = %e, "worker connection: flush failed");
            return;
        }
    }
    let _ = SinkExt::<Frame>::close(&mut sink).await;
}

/// Feed one frame; a response too large to send becomes an `internal` error response.
async fn feed(
    sink: &mut FramedWrite<OwnedWriteHalf, FrameCodec>,
    frame: Frame,
) -> Result<(), CodecError> {
    let id = match &frame {
        Frame::Response(r) => r.id,
        _ => None,
    };
    match sink.feed(frame).await {
        Err(CodecError::BodyTooLarge { len, max }) => {
            let msg = format!("the result of {len} bytes exceeds the maximum frame of {max} bytes");
            sink.feed(Frame::Response(Response::err(id, ErrorCode::Internal, msg)))
                .await
        }
        other => other,
    }
}

/// Serve `service` on `stream` until EOF or `worker/shutdown` (see the module docs). Returns
/// `Ok` on EOF or shutdown, an error when the connection failed or the host broke framing.
pub async fn serve_connection_with<S: WorkerService>(
    service: Arc<S>,
    stream: UnixStream,
    version: &str,
    cfg: ServeConfig,
) -> Result<(), WorkerError> {
    let started = Instant::now();
    let max_in_flight = cfg
        .max_in_flight
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let codec = FrameCodec::with_max_frame_len(cfg.max_frame_len);
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, codec);
    let (out, out_rx) = mpsc::channel::<Frame>(max_in_flight + 16);
    let writer = tokio::spawn(write_loop(FramedWrite::new(write, codec), out_rx));
    let permits = Arc::new(Semaphore::new(max_in_flight));

    let commands = service.commands();
    let served: Arc<HashSet<&'static str>> = Arc::new(commands.iter().map(|c| c.name).collect());
    let hello = json!({
        "kind": service.kind(),
        "version": version,
        "pid": std::process::id(),
        "protocol": PROTOCOL_VERSION,
        "commands": commands,
    });
    let mut names: Vec<&str> = served.iter().copied().collect();
    names.sort_unstable();
    let known = names.join(", ");

    let mut shutdown_id = None;
    let result = loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break Ok(());
        };
        let item = frames.next().await;
        let request = match item {
            None => break Ok(()),
            Some(Err(CodecError::FrameTooLarge { declared, max })) => {
                let msg = format!("frame of {declared} bytes exceeds the maximum of {max} bytes");
                let _ = out
                    .send(Frame::Response(Response::err(
                        None,
                        ErrorCode::FrameTooLarge,
                        msg.clone(),
                    )))
                    .await;
                break Err(WorkerError::Protocol { message: msg });
            }
            Some(Err(CodecError::Io(source))) => {
                break Err(WorkerError::Io {
                    context: "reading a frame",
                    source,
                });
            }
            Some(Err(e)) => {
                break Err(WorkerError::Protocol {
                    message: e.to_string(),
                });
            }
            Some(Ok(Err(bad))) => {
                // Never answer an invalid response or event (no ping-pong between buggy peers).
                if !matches!(bad.frame_type, Some(FrameType::Response | FrameType::Event)) {
                    let _ = out.send(Frame::Response(bad.to_response())).await;
                }
                continue;
            }
            // We send no requests, so responses are stray; events are not used by workers.
            Some(Ok(Ok(Frame::Response(_) | Frame::Event(_)))) => continue,
            Some(Ok(Ok(Frame::Request(r)))) => r,
        };
        let Request {
            id,
            command,
            params,
            timeout_ms,
        } = request;
        match command.as_str() {
            "worker/hello" => {
                let _ = out
                    .send(Frame::Response(Response::ok(id, hello.clone())))
                    .await;
            }
            "worker/ping" => {
                let uptime = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let _ = out
                    .send(Frame::Response(Response::ok(
                        id,
                        json!({"pong": true, "uptime_ms": uptime}),
                    )))
                    .await;
            }
            "worker/shutdown" => {
                shutdown_id = Some(id);
                break Ok(());
            }
            c if served.contains(c) => {
                let service = Arc::clone(&service);
                let out = out.clone();
                tokio::spawn(async move {
                    let outcome = run_one(&*service, &command, params, timeout_ms).await;
                    let _ = out
                        .send(Frame::Response(Response {
                            id: Some(id),
                            outcome,
                        }))
                        .await;
                    drop(permit);
                });
            }
            other => {
                let msg = format!(
                    "the {} worker does not serve '{other}' (it serves: worker/hello, worker/ping, worker/shutdown, {known})",
                    service.kind()
                );
                let _ = out
                    .send(Frame::Response(Response::err(
                        Some(id),
                        ErrorCode::UnknownCommand,
                        msg,
                    )))
                    .await;
            }
        }
    };

    // Drain: every request in flight is answered before we return.
    if let Ok(all) = permits.acquire_many(max_in_flight as u32).await {
        all.forget();
    }
    if let Some(id) = shutdown_id {
        service.shutdown().await;
        let _ = out
            .send(Frame::Response(Response::ok(id, json!({"ok": true}))))
            .await;
    }
    drop(out);
    let _ = writer.await;
    result
}

async fn run_one<S: WorkerService>(
    service: &S,
    command: &str,
    params: Value,
    timeout_ms: Option<u64>,
) -> Result<Value, ErrorBody> {
    let fut = AssertUnwindSafe(service.handle(command, params)).catch_unwind();
    let caught = match timeout_ms {
        None => fut.await,
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), fut).await {
            Ok(r) => r,
            Err(_) => {
                return Err(ErrorBody::new(
                    ErrorCode::Timeout,
                    format!("'{command}' did not finish within {ms} ms"),
                ));
            }
        },
    };
    caught.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(command, panic = %what, "worker command panicked");
        Err(ErrorBody::new(
            ErrorCode::Internal,
            format!("'{command}' failed in the worker: {what}"),
        ))
    })
}

async fn connect_and_serve<S: WorkerService>(service: S, socket: &Path) -> Result<(), WorkerError> {
    let service = Arc::new(service);
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(source) => {
            service.shutdown().await;
            return Err(WorkerError::Connect {
                path: socket.to_path_buf(),
                source,
            });
        }
    };
    let result = serve_connection(Arc::clone(&service), stream, WORKER_VERSION).await;
    service.shutdown().await;
    result
}

/// Run a worker process's main loop: connect to the host's `socket` (the host binds it before
/// spawning us, so only a host we were started by can receive the connection, and a restarted
/// worker needs no socket cleanup), build the service of `kind` (`"logger"`: files under
/// `data_dir/logs`; `"search"`: an empty index the host feeds), serve until EOF or
/// `worker/shutdown`, then shut the service down. An unknown kind fails before connecting.
pub async fn run_worker(kind: &str, socket: &Path, data_dir: &Path) -> Result<(), WorkerError> {
    run_worker_with(kind, socket, data_dir, 0).await
}

/// [`run_worker`] with the logger's quota of `DIR/logs` in bytes (`--max-log-bytes`, 0 = none;
/// see [`LoggerConfig::max_bytes`]).
pub async fn run_worker_with(
    kind: &str,
    socket: &Path,
    data_dir: &Path,
    max_log_bytes: u64,
) -> Result<(), WorkerError> {
    match kind {
        "search" => connect_and_serve(SearchService::default(), socket).await,
        "logger" => {
            let service = LoggerService::new(LoggerConfig {
                max_bytes: max_log_bytes,
                ..LoggerConfig::new(data_dir.join("logs"))
            })?;
            connect_and_serve(service, socket).await
        }
        other => Err(WorkerError::UnknownKind {
            kind: other.to_owned(),
            known: KNOWN_KINDS.to_vec(),
        }),
    }
}
