//! Placement: a daemon whose implementation (a [`WorkerService`]) runs in a worker process or in
//! the host, chosen per daemon in config.
//!
//! [`Placed`] holds both placements of one service:
//!
//! - the **in-process service**, always built: it is the whole implementation under
//!   [`Placement::InProcess`], and the **fallback** under [`Placement::Process`];
//! - under [`Placement::Process`], a [`WorkerSupervisor`] running `daemonhost worker KIND` from
//!   the host's own executable (see `daemonhost_runtime::supervisor` for spawn, handshake, pings,
//!   restarts and the start limit).
//!
//! Routing of one request ([`Placed::call`]):
//!
//! | worker | answer |
//! |---|---|
//! | up (and, for a stateful service, re-synced) | the worker's, counted `worker` |
//! | starting / restarting / failed | the fallback's, counted `inline` |
//! | died with the request in flight | idempotent command: retried once on the fallback; otherwise `unavailable` naming the crash |
//! | no answer within the deadline | `timeout` |
//! | answered with an error, or a reply that breaks the protocol | that error, for that request only |
//!
//! Callers see the same commands, results and error codes either way; only the metrics
//! (`worker_used`, the `worker`/`inline` work counts) and `health/status` (`details`) say which
//! placement answered.
//!
//! **Failed workers.** When the supervisor gives up (start limit), the daemon stays READY and
//! keeps serving from the fallback: its `details` say `worker.state = "failed"` with the cause
//! and `degraded: true`, and `worker:<kind>:failed` is published. The runtime's lifecycle has no
//! "degraded" state, and failing the daemon would make every caller lose a service that still
//! answers correctly, which is what the fallback exists for.

use daemonhost_runtime::supervisor::{
    WorkerCallError, WorkerSpec, WorkerState, WorkerStatus, WorkerSupervisor,
};
use daemonhost_runtime::{BoxError, Context, DaemonError, WorkPlace};
use daemonhost_workers::WorkerService;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Where a worker-backed daemon's implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// In a supervised worker process, with the in-process service as the fallback.
    Process,
    /// In the host only.
    InProcess,
}

impl Placement {
    /// `"process"` or `"in_process"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Process => "process",
            Placement::InProcess => "in_process",
        }
    }
}

/// How worker processes are run and supervised (the `[workers]` config section).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerOptions {
    /// Executable to run as `PROGRAM worker KIND …`; `None` = the host's own executable.
    pub program: Option<PathBuf>,
    /// The host's data dir: workers get `--data-dir DIR`; sockets go in `DIR/run/`.
    pub data_dir: PathBuf,
    /// Health ping period.
    pub ping_interval: Duration,
    /// A ping slower than this counts as missed.
    pub ping_timeout: Duration,
    /// Consecutive missed pings before the worker is killed and restarted.
    pub max_missed_pings: u32,
    /// Spawn → connected and handshake done.
    pub start_timeout: Duration,
    /// At most this many starts ...
    pub start_limit_burst: u32,
    /// ... within this interval, then the worker is failed.
    pub start_limit_interval: Duration,
    /// First restart delay (doubles per consecutive failure).
    pub backoff: Duration,
    /// Largest restart delay.
    pub max_backoff: Duration,
    /// Graceful stop budget before SIGTERM, then SIGKILL.
    pub stop_grace: Duration,
    /// How often `health/status` details are refreshed besides on every state change.
    pub status_interval: Duration,
    /// Arguments appended to the worker's command line (a daemon's own settings, e.g. the
    /// logger's `--max-log-bytes N`).
    pub extra_args: Vec<String>,
}

impl WorkerOptions {
    /// The supervisor's documented defaults for workers of the host at `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let d = WorkerSpec::new("", "", "", "");
        WorkerOptions {
            program: None,
            data_dir: data_dir.into(),
            ping_interval: d.ping_interval,
            ping_timeout: d.ping_timeout,
            max_missed_pings: d.max_missed_pings,
            start_timeout: d.start_timeout,
            start_limit_burst: d.start_limit_burst,
            start_limit_interval: d.start_limit_interval,
            backoff: d.backoff,
            max_backoff: d.max_backoff,
            stop_grace: d.stop_grace,
            status_interval: Duration::from_millis(500),
            extra_args: Vec::new(),
        }
    }

    /// The socket a worker of `kind` connects to: `DIR/run/<kind>.sock`, or
    /// `/tmp/dh-<pid>-<kind>.sock` when that path would be too long for `sun_path`.
    pub fn socket_path(&self, kind: &str) -> Result<PathBuf, std::io::Error> {
        let dir = std::path::absolute(&self.data_dir)?.join("run");
        let path = dir.join(format!("{kind}.sock"));
        if path.as_os_str().len() < 100 {
            create_private_dir(&dir)?;
            Ok(path)
        } else {
            Ok(PathBuf::from(format!(
                "/tmp/dh-{}-{kind}.sock",
                std::process::id()
            )))
        }
    }

    /// The supervisor spec for a worker of `kind`.
    pub fn spec(&self, kind: &str) -> Result<WorkerSpec, std::io::Error> {
        let program = match &self.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let data_dir = std::path::absolute(&self.data_dir)?;
        let mut spec = WorkerSpec::new(kind, kind, program, self.socket_path(kind)?).args(
            [
                "worker".to_owned(),
                kind.to_owned(),
                "--data-dir".to_owned(),
                data_dir.to_string_lossy().into_owned(),
            ]
            .into_iter()
            .chain(self.extra_args.iter().cloned()),
        );
        spec.ping_interval = self.ping_interval;
        spec.ping_timeout = self.ping_timeout;
        spec.max_missed_pings = self.max_missed_pings.max(1);
        spec.start_timeout = self.start_timeout;
        spec.start_limit_burst = self.start_limit_burst.max(1);
        spec.start_limit_interval = self.start_limit_interval;
        spec.backoff = self.backoff;
        spec.max_backoff = self.max_backoff.max(self.backoff);
        spec.stop_grace = self.stop_grace;
        Ok(spec)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), std::io::Error> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Settings of the worker-backed daemons (logger, search).
#[derive(Debug, Clone)]
pub struct WorkersConfig {
    /// Placement of the logger daemon (default: process).
    pub logger: Placement,
    /// Placement of the search daemon (default: process).
    pub search: Placement,
    /// How workers run.
    pub options: WorkerOptions,
    /// Where the search daemon reads `chat_messages` (the data daemon's slot).
    pub store: daemonhost_data_client::DataClient,
    /// The logger's quota of `DIR/logs`, bytes (0 = none): `[workers] max_log_mb`.
    pub max_log_bytes: u64,
}

const ANSWERED_NONE: u8 = 0;
const ANSWERED_WORKER: u8 = 1;
const ANSWERED_FALLBACK: u8 = 2;

/// Both placements of one service, and the routing between them (see the module docs).
pub struct Placed<S: WorkerService> {
    kind: &'static str,
    placement: Placement,
    fallback: Arc<S>,
    supervisor: Option<WorkerSupervisor>,
    /// The worker's socket, removed by the supervisor; its directory is removed at stop when
    /// empty (the last worker to stop takes it).
    socket: Option<PathBuf>,
    /// Served commands → idempotent.
    commands: HashMap<&'static str, bool>,
    /// Whether the worker's state must be loaded after each (re)start before it answers.
    needs_sync: bool,
    /// The worker generation whose state is loaded (meaningful when `needs_sync`).
    synced_generation: AtomicU64,
    worker_served: AtomicU64,
    fallback_served: AtomicU64,
    retried: AtomicU64,
    unavailable: AtomicU64,
    last_answered: AtomicU8,
    /// Daemon-specific status merged into the details (e.g. the index sync).
    extra: Mutex<Value>,
}

impl<S: WorkerService> std::fmt::Debug for Placed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placed")
            .field("kind", &self.kind)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl<S: WorkerService> Placed<S> {
    /// Core init: keep `fallback`, spawn the worker under [`Placement::Process`] (without waiting
    /// for it: the fallback serves meanwhile) and keep `health/status` details fresh.
    /// `needs_sync`: the worker starts empty and answers only once [`Placed::mark_synced`] was
    /// called for its generation (the search index); until then the fallback answers.
    pub fn start(
        ctx: &Context,
        kind: &'static str,
        placement: Placement,
        options: &WorkerOptions,
        fallback: S,
        needs_sync: bool,
    ) -> Result<Arc<Self>, BoxError> {
        let commands = fallback
            .commands()
            .into_iter()
            .map(|c| (c.name, c.idempotent))
            .collect();
        let (supervisor, socket) = match placement {
            Placement::Process => {
                let spec = options
                    .spec(kind)
                    .map_err(|e| format!("cannot prepare the {kind} worker: {e}"))?;
                let socket = spec.socket_path.clone();
                (Some(WorkerSupervisor::spawn(spec)), Some(socket))
            }
            Placement::InProcess => (None, None),
        };
        let placed = Arc::new(Placed {
            kind,
            placement,
            fallback: Arc::new(fallback),
            supervisor,
            socket,
            commands,
            needs_sync,
            synced_generation: AtomicU64::new(0),
            worker_served: AtomicU64::new(0),
            fallback_served: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            last_answered: AtomicU8::new(ANSWERED_NONE),
            extra: Mutex::new(Value::Null),
        });
        ctx.set_details(placed.details());
        spawn_status_task(ctx, &placed, options.status_interval);
        Ok(placed)
    }

    /// The worker kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The in-process service (the fallback under [`Placement::Process`]).
    pub fn fallback(&self) -> &Arc<S> {
        &self.fallback
    }

    /// The supervisor, under [`Placement::Process`].
    pub fn supervisor(&self) -> Option<&WorkerSupervisor> {
        self.supervisor.as_ref()
    }

    /// Whether `command` is served.
    pub fn serves(&self, command: &str) -> bool {
        self.commands.contains_key(command)
    }

    /// Record that the worker of `generation` has its state loaded.
    pub fn mark_synced(&self, generation: u64) {
        self.synced_generation.store(generation, Ordering::Release);
    }

    /// The worker generation whose state is loaded.
    pub fn synced_generation(&self) -> u64 {
        self.synced_generation.load(Ordering::Acquire)
    }

    /// Replace the daemon-specific part of the details.
    pub fn set_extra(&self, extra: Value) {
        *self.extra.lock() = extra;
    }

    /// The worker answers client requests now.
    fn worker_serves(&self, sup: &WorkerSupervisor) -> bool {
        let st = sup.status();
        st.state == WorkerState::Up
            && (!self.needs_sync || st.generation == self.synced_generation())
    }

    /// What `health/status` shows for this daemon.
    pub fn details(&self) -> Value {
        let worker: Option<WorkerStatus> = self.supervisor.as_ref().map(WorkerSupervisor::status);
        let degraded = worker
            .as_ref()
            .is_some_and(|w| w.state == WorkerState::Failed);
        let serving = match &self.supervisor {
            Some(sup) if self.worker_serves(sup) => "worker",
            _ => "fallback",
        };
        let last = match self.last_answered.load(Ordering::Relaxed) {
            ANSWERED_WORKER => Value::from("worker"),
            ANSWERED_FALLBACK => Value::from("fallback"),
            _ => Value::Null,
        };
        let mut d = json!({
            "placement": self.placement.as_str(),
            "worker": worker,
            "servingFrom": serving,
            "degraded": degraded,
            "lastAnsweredBy": last,
            "workerServed": self.worker_served.load(Ordering::Relaxed),
            "fallbackServed": self.fallback_served.load(Ordering::Relaxed),
            "retriedOnFallback": self.retried.load(Ordering::Relaxed),
            "unavailable": self.unavailable.load(Ordering::Relaxed),
        });
        let extra = self.extra.lock().clone();
        if let (Value::Object(d), Value::Object(extra)) = (&mut d, extra) {
            d.extend(extra);
        }
        d
    }

    async fn on_fallback(
        &self,
        ctx: &Context,
        command: &str,
        params: Value,
    ) -> Result<Value, DaemonError> {
        ctx.served_at(WorkPlace::Inline);
        self.fallback_served.fetch_add(1, Ordering::Relaxed);
        self.answered(ctx, ANSWERED_FALLBACK);
        self.fallback
            .handle(command, params)
            .await
            .map_err(DaemonError::from)
    }

    /// Answer one request from the worker or the fallback (see the module docs). The caller's
    /// deadline bounds the worker call; every outcome is an answer.
    pub async fn call(
        &self,
        ctx: &Context,
        command: &str,
        params: Value,
        deadline: Instant,
    ) -> Result<Value, DaemonError> {
        let Some(&idempotent) = self.commands.get(command) else {
            return Err(DaemonError::unknown_command(format!(
                "the {} daemon does not serve '{command}'",
                self.kind
            )));
        };
        let sup = match &self.supervisor {
            Some(sup) if self.worker_serves(sup) => sup,
            _ => return self.on_fallback(ctx, command, params).await,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(DaemonError::timeout(format!(
                "'{command}' reached its deadline before it was sent to the {} worker",
                self.kind
            )));
        }
        // For the fallback when the worker went down meanwhile (nothing was sent) or, for an
        // idempotent command, died with the request in flight.
        let backup = params.clone();
        match sup.call(command, params, remaining).await {
            Ok(v) => {
                self.answered_by_worker(ctx);
                Ok(v)
            }
            Err(WorkerCallError::Remote(e)) => {
                self.answered_by_worker(ctx);
                Err(e.into())
            }
            Err(WorkerCallError::Down { .. }) => {
                // Down before anything was sent: not a retry, the fallback simply serves.
                self.on_fallback(ctx, command, backup).await
            }
            Err(WorkerCallError::Timeout { after, .. }) => Err(DaemonError::timeout(format!(
                "the {} worker did not answer '{command}' within {} ms",
                self.kind,
                after.as_millis()
            ))),
            Err(WorkerCallError::Crashed { cause, .. }) => match idempotent.then_some(backup) {
                Some(params) => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(daemon = self.kind, command, %cause, "Worker crashed mid-call; retrying on the fallback");
                    self.on_fallback(ctx, command, params).await
                }
                None => {
                    self.unavailable.fetch_add(1, Ordering::Relaxed);
                    Err(DaemonError::unavailable(format!(
                        "the {} worker crashed while handling '{command}' ({cause}); not retried because '{command}' is not idempotent",
                        self.kind
                    )))
                }
            },
        }
    }

    fn answered_by_worker(&self, ctx: &Context) {
        ctx.served_at(WorkPlace::Worker);
        self.worker_served.fetch_add(1, Ordering::Relaxed);
        self.answered(ctx, ANSWERED_WORKER);
    }

    /// Record which placement answered; a change of placement refreshes the details at once
    /// (the counters are refreshed by the status task).
    fn answered(&self, ctx: &Context, by: u8) {
        if self.last_answered.swap(by, Ordering::Relaxed) != by {
            ctx.set_details(self.details());
        }
    }

    /// Stop the worker (graceful, reaped, socket removed) and shut the fallback down.
    pub async fn shutdown(&self) {
        if let Some(sup) = &self.supervisor {
            sup.shutdown().await;
        }
        if let Some(socket) = &self.socket {
            // The supervisor leaves it behind when the worker hit its start limit.
            let _ = std::fs::remove_file(socket);
        }
        if let Some(dir) = self.socket.as_deref().and_then(Path::parent)
            && dir.ends_with("run")
        {
            // Fails while another worker's socket is still there: that one removes it.
            let _ = std::fs::remove_dir(dir);
        }
        self.fallback.shutdown().await;
    }
}

/// Refresh the details on every supervisor state change and every `period`; publish
/// `worker:<kind>:up` / `worker:<kind>:failed` on those transitions.
fn spawn_status_task<S: WorkerService>(ctx: &Context, placed: &Arc<Placed<S>>, period: Duration) {
    let placed = Arc::clone(placed);
    let ctx2 = ctx.clone();
    ctx.spawn(async move {
        let mut rx = placed.supervisor.as_ref().map(WorkerSupervisor::watch);
        let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<(WorkerState, u64)> = None;
        loop {
            let changed = async {
                match rx.as_mut() {
                    Some(r) => r.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ok = changed => if !ok { rx = None; },
                _ = tick.tick() => {}
            }
            if let Some(sup) = &placed.supervisor {
                let st = sup.status();
                let now = (st.state, st.generation);
                if last != Some(now) {
                    match st.state {
                        WorkerState::Up => {
                            ctx2.publish(
                                &format!("worker:{}:up", placed.kind),
                                json!({"worker": placed.kind, "pid": st.pid, "generation": st.generation, "restarts": st.restarts}),
                            );
                        }
                        WorkerState::Failed => {
                            tracing::error!(daemon = placed.kind, cause = st.last_cause.as_deref().unwrap_or(""), "Worker failed; the in-process fallback keeps serving");
                            ctx2.publish(
                                &format!("worker:{}:failed", placed.kind),
                                json!({"worker": placed.kind, "cause": st.last_cause, "restarts": st.restarts}),
                            );
                        }
                        _ => {}
                    }
                    last = Some(now);
                }
            }
            ctx2.set_details(placed.details());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_short_or_falls_back_to_tmp() {
        let tmp = tempfile::Builder::new()
            .prefix("dh")
            .tempdir_in("/tmp")
            .expect("tmp");
        let o = WorkerOptions::new(tmp.path());
        let p = o.socket_path("search").expect("path");
        assert_eq!(p, tmp.path().join("run").join("search.sock"));
        assert!(tmp.path().join("run").is_dir());
        let long = tmp.path().join("x".repeat(120));
        let p = WorkerOptions::new(&long)
            .socket_path("logger")
            .expect("path");
        assert_eq!(
            p,
            PathBuf::from(format!("/tmp/dh-{}-logger.sock", std::process::id()))
        );
        let spec = o.spec("search").expect("spec");
        assert_eq!(spec.args[..2], ["worker".to_owned(), "search".to_owned()]);
        assert_eq!(spec.start_limit_burst, 5);
        assert_eq!(spec.start_limit_interval, Duration::from_secs(10));
    }
}
