//! `daemonhost worker KIND --socket PATH [--data-dir DIR] [--max-log-bytes N]`: the
//! worker-process role, started by
//! the host's supervisor (never by hand in normal operation). Runs
//! [`daemonhost_workers::run_worker`]: exit 0 on EOF or `worker/shutdown`, 1 with a message on
//! stderr otherwise.
//!
//! # Test hook
//!
//! `DAEMONHOST_WORKER_FAULT` (read by this subcommand only, never by the host) injects faults
//! for the end-to-end tests; a comma-separated list of:
//!
//! - `crash_at_start` or `crash_at_start:KIND`: exit with status 70 before connecting;
//! - `garbage_reply_on:COMMAND`: answer the first request for `COMMAND` with a response frame
//!   that breaks the protocol (`success` is not a boolean), then serve normally.
//!
//! With the variable unset the worker is exactly `run_worker`.

use anyhow::{Context as _, anyhow};
use bytes::BytesMut;
use daemonhost_protocol::{Frame, RawFrameCodec, write_body};
use daemonhost_workers::{
    LoggerConfig, LoggerService, SearchService, WORKER_VERSION, WorkerService,
};
use futures_util::StreamExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::FramedRead;

/// The fault-injection variable (a test hook; see the module docs).
pub const FAULT_ENV: &str = "DAEMONHOST_WORKER_FAULT";

/// Exit status of an injected crash.
const EXIT_INJECTED: u8 = 70;

#[derive(Debug, Default, PartialEq, Eq)]
struct Faults {
    crash_at_start: bool,
    garbage_reply_on: Option<String>,
}

fn parse_faults(spec: &str, kind: &str) -> anyhow::Result<Faults> {
    let mut f = Faults::default();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once(':') {
            None if item == "crash_at_start" => f.crash_at_start = true,
            Some(("crash_at_start", k)) => f.crash_at_start |= k == kind,
            Some(("garbage_reply_on", c)) if !c.is_empty() => {
                f.garbage_reply_on = Some(c.to_owned());
            }
            _ => return Err(anyhow!("{FAULT_ENV}: unknown fault '{item}'")),
        }
    }
    Ok(f)
}

/// Run the worker role.
pub fn run(
    kind: &str,
    socket: Option<&Path>,
    data_dir: &Path,
    max_log_bytes: u64,
) -> anyhow::Result<ExitCode> {
    let socket = socket.ok_or_else(|| anyhow!("worker: --socket PATH is required"))?;
    let faults = match std::env::var(FAULT_ENV) {
        Ok(spec) => parse_faults(&spec, kind)?,
        Err(_) => Faults::default(),
    };
    if faults.crash_at_start {
        eprintln!("{kind} worker: injected crash at start ({FAULT_ENV})");
        return Ok(ExitCode::from(EXIT_INJECTED));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the worker's async runtime")?;
    let result = rt.block_on(async {
        match &faults.garbage_reply_on {
            None => daemonhost_workers::run_worker_with(kind, socket, data_dir, max_log_bytes)
                .await
                .map_err(anyhow::Error::from),
            Some(command) => {
                serve_with_garbage(kind, socket, data_dir, max_log_bytes, command).await
            }
        }
    });
    result.with_context(|| format!("{kind} worker"))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_with_garbage(
    kind: &str,
    socket: &Path,
    data_dir: &Path,
    max_log_bytes: u64,
    command: &str,
) -> anyhow::Result<()> {
    match kind {
        "search" => garbage_proxy(SearchService::default(), socket, command).await,
        "logger" => {
            let s = LoggerService::new(LoggerConfig {
                max_bytes: max_log_bytes,
                ..LoggerConfig::new(data_dir.join("logs"))
            })?;
            garbage_proxy(s, socket, command).await
        }
        other => Err(anyhow!("unknown worker kind '{other}'")),
    }
}

/// Serve `service` on an in-memory pair and relay frames to the host's socket, replacing the
/// response to the first request for `command` with a frame that breaks the protocol.
async fn garbage_proxy<S: WorkerService>(
    service: S,
    socket: &Path,
    command: &str,
) -> anyhow::Result<()> {
    let host = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let (inner, outer) = UnixStream::pair().context("socketpair")?;
    let service = Arc::new(service);
    let served = tokio::spawn(daemonhost_workers::serve_connection(
        Arc::clone(&service),
        inner,
        WORKER_VERSION,
    ));
    let (host_r, mut host_w) = host.into_split();
    let (outer_r, mut outer_w) = outer.into_split();
    let target: Arc<parking_lot::Mutex<Option<u64>>> = Arc::default();
    let to_service = {
        let target = Arc::clone(&target);
        let command = command.to_owned();
        async move {
            let mut done = false;
            let mut frames = FramedRead::new(host_r, RawFrameCodec::new());
            while let Some(Ok(body)) = frames.next().await {
                if !done
                    && let Ok(Frame::Request(r)) = Frame::decode(&body)
                    && r.command == command
                {
                    *target.lock() = Some(r.id);
                    done = true;
                }
                let mut buf = BytesMut::new();
                if write_body(&mut buf, &body, usize::MAX).is_err()
                    || outer_w.write_all(&buf).await.is_err()
                {
                    break;
                }
            }
            // EOF from the host: pass it on so the service shuts down.
            let _ = outer_w.shutdown().await;
        }
    };
    let to_host = async move {
        let mut frames = FramedRead::new(outer_r, RawFrameCodec::new());
        while let Some(Ok(body)) = frames.next().await {
            let garble = match Frame::decode(&body) {
                Ok(Frame::Response(r)) => {
                    let mut t = target.lock();
                    let hit = r.id.is_some() && r.id == *t;
                    if hit {
                        *t = None;
                    }
                    hit.then_some(r.id)
                }
                _ => None,
            };
            let body: Vec<u8> = match garble {
                Some(Some(id)) => {
                    format!(r#"{{"type":"response","id":{id},"success":"garbage"}}"#).into_bytes()
                }
                _ => body.to_vec(),
            };
            let mut buf = BytesMut::new();
            if write_body(&mut buf, &body, usize::MAX).is_err()
                || host_w.write_all(&buf).await.is_err()
            {
                break;
            }
        }
    };
    tokio::join!(to_service, to_host);
    let result = served.await.context("the service task failed")?;
    service.shutdown().await;
    result.map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!(
            parse_faults("", "search").expect("empty"),
            Faults::default()
        );
        assert!(
            parse_faults("crash_at_start", "x")
                .expect("all")
                .crash_at_start
        );
        assert!(
            parse_faults("crash_at_start:search", "search")
                .expect("kind")
                .crash_at_start
        );
        assert!(
            !parse_faults("crash_at_start:search", "logger")
                .expect("kind")
                .crash_at_start
        );
        assert_eq!(
            parse_faults("garbage_reply_on:search/stats", "search")
                .expect("garbage")
                .garbage_reply_on
                .as_deref(),
            Some("search/stats")
        );
        assert!(parse_faults("explode", "search").is_err());
    }
}
