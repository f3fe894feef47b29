//! Supervision of out-of-process workers.
//!
//! A worker is a child process (normally `daemonhost worker KIND`) speaking the wire protocol over
//! a Unix socket. The supervisor binds the socket, spawns the child (own process group,
//! `NOTIFY_SOCKET` and the watchdog variables removed, killed if the supervisor is dropped), accepts its connection, checks
//! the `worker/hello` handshake, pings it, and restarts it with exponential backoff when it exits
//! or stops answering pings, up to a start limit (default 5 starts in 10 s, as systemd), after
//! which the worker is `failed` with the cause.
//!
//! The worker *connects to* the host rather than listening itself: the host never polls for a
//! socket file to appear, and the worker learns of the host's death from EOF on that connection
//! and exits, so no worker outlives its host even without `PR_SET_PDEATHSIG` (which would need
//! `unsafe` in `pre_exec`).
//!
//! Callers use [`WorkerSupervisor::call`]; every call is answered, and a call in flight when the
//! worker dies fails with [`WorkerCallError::Crashed`] naming the cause, so the caller can retry
//! an idempotent command on its fallback or answer `unavailable`.

use daemonhost_protocol::{CallError, Client, ClientConfig, ErrorBody, ErrorCode};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

/// How to run and supervise one worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Name for logs and status (usually the kind).
    pub name: String,
    /// The kind the worker must report in `worker/hello`.
    pub kind: String,
    /// Executable to run.
    pub program: PathBuf,
    /// Arguments; the supervisor appends `--socket <path>`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Socket path the supervisor binds for this worker (< 108 bytes).
    pub socket_path: PathBuf,
    /// Spawn → connected and handshake done.
    pub start_timeout: Duration,
    /// Health ping period.
    pub ping_interval: Duration,
    /// A ping slower than this counts as missed.
    pub ping_timeout: Duration,
    /// Consecutive missed pings before the worker is killed and restarted.
    pub max_missed_pings: u32,
    /// At most this many starts ...
    pub start_limit_burst: u32,
    /// ... within this interval; past it the worker is `failed`.
    pub start_limit_interval: Duration,
    /// First restart delay; doubles per consecutive failure.
    pub backoff: Duration,
    /// Largest restart delay.
    pub max_backoff: Duration,
    /// Time for a graceful `worker/shutdown` before SIGTERM, then SIGKILL.
    pub stop_grace: Duration,
    /// Protocol limits for the connection.
    pub client: ClientConfig,
}

impl WorkerSpec {
    /// A spec with the documented defaults.
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        program: impl Into<PathBuf>,
        socket_path: impl Into<PathBuf>,
    ) -> Self {
        WorkerSpec {
            name: name.into(),
            kind: kind.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            socket_path: socket_path.into(),
            start_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_millis(500),
            max_missed_pings: 3,
            start_limit_burst: 5,
            start_limit_interval: Duration::from_secs(10),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            stop_grace: Duration::from_secs(2),
            client: ClientConfig::default(),
        }
    }

    /// Set the arguments (before `--socket <path>`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Where a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Spawned, not yet through the handshake.
    Starting,
    /// Connected and answering.
    Up,
    /// Exited or unresponsive; a restart is pending.
    Down,
    /// Hit the start limit; no more restarts.
    Failed,
    /// Stopped by the host.
    Stopped,
}

/// A worker's status for `health/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    /// Worker name.
    pub name: String,
    /// Current state.
    pub state: WorkerState,
    /// Process id while it runs.
    pub pid: Option<u32>,
    /// Version from the handshake.
    pub version: Option<String>,
    /// Commands from the handshake.
    pub commands: Vec<String>,
    /// Starts so far (the first included).
    pub starts: u32,
    /// Restarts after a crash or missed pings.
    pub restarts: u32,
    /// Why the last instance ended (or failed to start).
    pub last_cause: Option<String>,
    /// Calls waiting for the worker now.
    pub in_flight: u64,
    /// Calls answered by the worker.
    pub served: u64,
    /// Increments with each instance; lets callers tell a restart happened.
    pub generation: u64,
}

/// Why a call to a worker did not produce the worker's answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkerCallError {
    /// The worker is not up (starting, restarting or failed).
    #[error("worker '{worker}' is {state:?}: {cause}")]
    Down {
        /// Worker name.
        worker: String,
        /// Its state.
        state: WorkerState,
        /// Last known cause.
        cause: String,
    },
    /// The worker died (or the connection broke) while the call was in flight.
    #[error("worker '{worker}' crashed during the call: {cause}")]
    Crashed {
        /// Worker name.
        worker: String,
        /// What happened to it.
        cause: String,
    },
    /// No answer within the deadline.
    #[error("worker '{worker}' did not answer within {after:?}")]
    Timeout {
        /// Worker name.
        worker: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The worker answered with an error.
    #[error("{0}")]
    Remote(ErrorBody),
}

#[derive(Debug)]
struct Shared {
    spec: WorkerSpec,
    status: watch::Sender<WorkerStatus>,
    client: Mutex<Option<Client>>,
    cancel: CancellationToken,
    in_flight: AtomicU64,
    served: AtomicU64,
}

/// A handle to a supervised worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerSupervisor {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

struct InFlight<'a>(&'a AtomicU64);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WorkerSupervisor {
    /// Start supervising: spawns the worker in the background and returns at once.
    pub fn spawn(spec: WorkerSpec) -> Self {
        let (status, _) = watch::channel(WorkerStatus {
            name: spec.name.clone(),
            state: WorkerState::Starting,
            pid: None,
            version: None,
            commands: Vec::new(),
            starts: 0,
            restarts: 0,
            last_cause: None,
            in_flight: 0,
            served: 0,
            generation: 0,
        });
        let shared = Arc::new(Shared {
            spec,
            status,
            client: Mutex::new(None),
            cancel: CancellationToken::new(),
            in_flight: AtomicU64::new(0),
            served: AtomicU64::new(0),
        });
        let task = tokio::spawn(supervise(shared.clone()));
        WorkerSupervisor {
            shared,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// The worker's status now.
    pub fn status(&self) -> WorkerStatus {
        let mut s = self.shared.status.borrow().clone();
        s.in_flight = self.shared.in_flight.load(Ordering::Relaxed);
        s.served = self.shared.served.load(Ordering::Relaxed);
        s
    }

    /// Watch status changes.
    pub fn watch(&self) -> watch::Receiver<WorkerStatus> {
        self.shared.status.subscribe()
    }

    /// Whether the worker is up now.
    pub fn is_up(&self) -> bool {
        self.shared.status.borrow().state == WorkerState::Up
    }

    /// Wait until the worker is up, or `timeout` passes, or it has failed for good.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.status.subscribe();
        matches!(
            tokio::time::timeout(
                timeout,
                rx.wait_for(|s| matches!(
                    s.state,
                    WorkerState::Up | WorkerState::Failed | WorkerState::Stopped
                ))
            )
            .await,
            Ok(Ok(s)) if s.state == WorkerState::Up
        )
    }

    /// Call `command` on the worker with a deadline.
    pub async fn call(
        &self,
        command: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, WorkerCallError> {
        let name = &self.shared.spec.name;
        let (client, generation) = {
            let guard = self.shared.client.lock();
            let st = self.shared.status.borrow();
            match (&*guard, st.state) {
                (Some(c), WorkerState::Up) => (c.clone(), st.generation),
                (_, state) => {
                    return Err(WorkerCallError::Down {
                        worker: name.clone(),
                        state,
                        cause: st
                            .last_cause
                            .clone()
                            .unwrap_or_else(|| "not started yet".to_owned()),
                    });
                }
            }
        };
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&self.shared.in_flight);
        match client.call(command, params, Some(timeout)).await {
            Ok(v) => {
                self.shared.served.fetch_add(1, Ordering::Relaxed);
                Ok(v)
            }
            Err(CallError::Remote(e)) => {
                self.shared.served.fetch_add(1, Ordering::Relaxed);
                Err(WorkerCallError::Remote(e))
            }
            Err(CallError::Timeout { after }) => Err(WorkerCallError::Timeout {
                worker: name.clone(),
                after,
            }),
            Err(CallError::InvalidParams { found }) => {
                Err(WorkerCallError::Remote(ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!("params must be an object, {found}"),
                )))
            }
            Err(CallError::TooLarge { len, max }) => Err(WorkerCallError::Remote(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("request of {len} bytes exceeds the maximum frame of {max} bytes"),
            ))),
            Err(CallError::Protocol(p)) => Err(WorkerCallError::Remote(ErrorBody::new(
                ErrorCode::Internal,
                format!("worker '{name}' broke the protocol: {p}"),
            ))),
            Err(e @ (CallError::Disconnected | CallError::Io(_))) => {
                // Give the supervisor a moment to record how the process ended.
                let mut rx = self.shared.status.subscribe();
                let cause = tokio::time::timeout(
                    Duration::from_millis(250),
                    rx.wait_for(|s| s.generation != generation || s.state != WorkerState::Up),
                )
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|s| s.last_cause.clone()))
                .unwrap_or_else(|| e.to_string());
                Err(WorkerCallError::Crashed {
                    worker: name.clone(),
                    cause,
                })
            }
        }
    }

    /// Stop the worker (graceful `worker/shutdown`, then SIGTERM, then SIGKILL), reap it and
    /// remove its socket file. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn set(shared: &Shared, f: impl FnOnce(&mut WorkerStatus)) {
    shared.status.send_modify(f);
}

fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => {
                let name = nix::sys::signal::Signal::try_from(sig)
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|_| format!("signal {sig}"));
                format!("killed by {name}")
            }
            (None, None) => "ended".to_owned(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

enum Ended {
    Cancelled,
    Died(String),
}

async fn supervise(shared: Arc<Shared>) {
    let spec = &shared.spec;
    let mut starts: VecDeque<Instant> = VecDeque::new();
    let mut failures = 0u32;
    loop {
        if shared.cancel.is_cancelled() {
            break;
        }
        let now = Instant::now();
        while starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= spec.start_limit_interval)
        {
            starts.pop_front();
        }
        if starts.len() >= spec.start_limit_burst as usize {
            let last = shared
                .status
                .borrow()
                .last_cause
                .clone()
                .unwrap_or_default();
            let cause = format!(
                "start limit hit: {} starts within {} s; last: {last}",
                starts.len(),
                spec.start_limit_interval.as_secs_f64()
            );
            tracing::error!(worker = %spec.name, %cause, "Worker failed");
            set(&shared, |s| {
                s.state = WorkerState::Failed;
                s.pid = None;
                s.last_cause = Some(cause);
            });
            // Leave through the common cleanup (socket file removed, client dropped).
            break;
        }
        starts.push_back(now);
        set(&shared, |s| {
            s.state = WorkerState::Starting;
            s.starts += 1;
        });
        let ended = match start_once(&shared).await {
            Ok((child, client)) => {
                failures = 0;
                let ended = run(&shared, child, client).await;
                *shared.client.lock() = None;
                ended
            }
            Err(cause) => Ended::Died(cause),
        };
        match ended {
            Ended::Cancelled => break,
            Ended::Died(cause) => {
                tracing::warn!(worker = %spec.name, %cause, "Worker down; restarting");
                failures += 1;
                set(&shared, |s| {
                    s.state = WorkerState::Down;
                    s.pid = None;
                    s.restarts += 1;
                    s.last_cause = Some(cause);
                });
            }
        }
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            () = tokio::time::sleep(spec.delay(failures)) => {}
        }
    }
    *shared.client.lock() = None;
    let _ = std::fs::remove_file(&spec.socket_path);
    set(&shared, |s| {
        if s.state != WorkerState::Failed {
            s.state = WorkerState::Stopped;
        }
        s.pid = None;
    });
}

/// Spawn, accept, handshake. On success the worker is `Up`.
async fn start_once(shared: &Shared) -> Result<(Child, Client), String> {
    let spec = &shared.spec;
    let _ = std::fs::remove_file(&spec.socket_path);
    let listener = UnixListener::bind(&spec.socket_path)
        .map_err(|e| format!("cannot bind {}: {e}", spec.socket_path.display()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .arg("--socket")
        .arg(&spec.socket_path)
        .env_remove("NOTIFY_SOCKET")
        // The host's systemd watchdog is the host's: a worker pings nothing.
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", spec.program.display()))?;
    let pid = child.id();
    set(shared, |s| s.pid = pid);
    if let Some(stderr) = child.stderr.take() {
        let name = spec.name.clone();
        tokio::spawn(async move {
            // Bounded lines: a worker cannot make the host buffer without limit.
            let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(16 * 1024));
            while let Some(line) = lines.next().await {
                match line {
                    Ok(line) => tracing::info!(worker = %name, "{line}"),
                    Err(e) => {
                        tracing::warn!(worker = %name, error = %e, "Unreadable worker stderr line")
                    }
                }
            }
        });
    }
    let accepted = tokio::select! {
        r = tokio::time::timeout(spec.start_timeout, listener.accept()) => match r {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(e)) => return Err(kill(child, format!("accept failed: {e}")).await),
            Err(_) => return Err(kill(child, format!("did not connect within {} ms", spec.start_timeout.as_millis())).await),
        },
        status = child.wait() => return Err(format!("{} before connecting", describe_exit(status))),
    };
    drop(listener);
    let _ = std::fs::remove_file(&spec.socket_path);
    let client = Client::from_stream(accepted, spec.client.clone());
    let hello = tokio::select! {
        r = client.call("worker/hello", json!({}), Some(spec.start_timeout)) => r,
        status = child.wait() => return Err(format!("{} during the handshake", describe_exit(status))),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(e) => return Err(kill(child, format!("handshake failed: {e}")).await),
    };
    let kind = hello
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != spec.kind {
        return Err(kill(
            child,
            format!("handshake reported kind '{kind}', expected '{}'", spec.kind),
        )
        .await);
    }
    let version = hello
        .get("version")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let commands: Vec<String> = hello
        .get("commands")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    c.get("name")
                        .and_then(Value::as_str)
                        .or_else(|| c.as_str())
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    *shared.client.lock() = Some(client.clone());
    set(shared, |s| {
        s.state = WorkerState::Up;
        s.version = version;
        s.commands = commands;
        s.generation += 1;
    });
    tracing::info!(worker = %spec.name, pid = pid.unwrap_or(0), "Worker up");
    Ok((child, client))
}

async fn kill(mut child: Child, cause: String) -> String {
    let _ = child.start_kill();
    let _ = child.wait().await;
    cause
}

/// Watch a running worker until it dies or the supervisor is cancelled.
async fn run(shared: &Shared, mut child: Child, client: Client) -> Ended {
    let spec = &shared.spec;
    let mut ticker = tokio::time::interval(spec.ping_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut missed = 0u32;
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => {
                stop_gracefully(spec, &mut child, &client).await;
                return Ended::Cancelled;
            }
            status = child.wait() => return Ended::Died(describe_exit(status)),
            _ = ticker.tick() => {
                match client.call("worker/ping", json!({}), Some(spec.ping_timeout)).await {
                    Ok(_) => missed = 0,
                    Err(_) => {
                        missed += 1;
                        if missed >= spec.max_missed_pings {
                            let _ = child.start_kill();
                            let _ = child.wait().await;
                            return Ended::Died(format!("missed {missed} health pings; killed"));
                        }
                    }
                }
            }
        }
    }
}

async fn stop_gracefully(spec: &WorkerSpec, child: &mut Child, client: &Client) {
    let half = spec.stop_grace / 2;
    let _ = client.call("worker/shutdown", json!({}), Some(half)).await;
    if tokio::time::timeout(half, child.wait()).await.is_ok() {
        return;
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(half, child.wait()).await.is_ok() {
        return;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}
