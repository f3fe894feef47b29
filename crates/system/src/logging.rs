//! The logger daemon (`log/*`) and per-daemon logs.
//!
//! [`LoggerDaemon`] is a thin wrapper over [`Placed`]`<`[`LoggerService`]`>`: files under
//! `DIR/logs/<category>.log`, written by a worker process by default, by the in-process fallback
//! while it is down.
//!
//! **Per-daemon logs.** The host's own daemons log with `tracing`, and the runtime tags its
//! events with a `daemon` field. [`DaemonLogLayer`] (installed by `daemonhost run` next to the
//! stderr formatter) copies every event carrying a `daemon` field into a bounded channel, never
//! blocking the caller: when the channel is full the line is dropped and counted. The logger
//! daemon drains it and writes `log/write-batch` batches to category `daemons/<name>`. Events of
//! the logger daemon itself (`daemon = "logger"`) are skipped, so writing a log line can never
//! produce another one. Daemons that want a line in their file without going through `tracing`
//! call [`log`].
//!
//! **A full disk.** The logger drops and counts lines it has no room for (ENOSPC, or the
//! directory's quota `[workers] max_log_mb`) and resumes by itself when there is room
//! (`daemonhost_workers::logger`); callers are never held up. Every second this daemon reads
//! both placements' counters (the worker's with a direct supervisor call, not counted as a
//! served request) into its `health/status` details: `logFiles {full, droppedFull,
//! writeErrors}`, summed over the placements (each counts only the lines it was given).

use crate::placed::{Placed, Placement, WorkerOptions};
use daemonhost_runtime::supervisor::WorkerState;
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use daemonhost_workers::{LoggerConfig, LoggerService};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, Layer};

/// Lines buffered between the tracing layer and the logger daemon.
pub const DAEMON_LOG_QUEUE: usize = 8192;
/// Most lines sent in one `log/write-batch`.
const DRAIN_BATCH: usize = 512;

/// One tracing event of a daemon, on its way to the logger.
#[derive(Debug)]
struct DaemonLine {
    daemon: String,
    level: &'static str,
    component: String,
    message: String,
    args: Map<String, Value>,
}

/// The receiving end of the layer's channel and its counters. Process-global because the
/// tracing subscriber it is fed by is process-global.
struct Channel {
    rx: Mutex<Option<mpsc::Receiver<DaemonLine>>>,
    dropped: AtomicU64,
    forwarded: AtomicU64,
    failed: AtomicU64,
}

static CHANNEL: OnceLock<(mpsc::Sender<DaemonLine>, Channel)> = OnceLock::new();

fn channel() -> &'static (mpsc::Sender<DaemonLine>, Channel) {
    CHANNEL.get_or_init(|| {
        let (tx, rx) = mpsc::channel(DAEMON_LOG_QUEUE);
        (
            tx,
            Channel {
                rx: Mutex::new(Some(rx)),
                dropped: AtomicU64::new(0),
                forwarded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            },
        )
    })
}

/// A `tracing_subscriber` layer forwarding events that carry a `daemon` field to the logger
/// daemon (see the module docs).
#[derive(Debug, Clone)]
pub struct DaemonLogLayer {
    tx: mpsc::Sender<DaemonLine>,
}

impl DaemonLogLayer {
    /// The layer; every instance feeds the one logger daemon of the process.
    pub fn new() -> Self {
        DaemonLogLayer {
            tx: channel().0.clone(),
        }
    }
}

impl Default for DaemonLogLayer {
    fn default() -> Self {
        DaemonLogLayer::new()
    }
}

#[derive(Default)]
struct Visitor {
    daemon: Option<String>,
    message: String,
    args: Map<String, Value>,
}

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "daemon" => self.daemon = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            name => {
                self.args.insert(name.to_owned(), Value::from(value));
            }
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.args
            .insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.args
            .insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.args
            .insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        _ => "debug",
    }
}

impl<S: tracing::Subscriber> Layer<S> for DaemonLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        if meta.fields().field("daemon").is_none() {
            return;
        }
        let mut v = Visitor::default();
        event.record(&mut v);
        let Some(daemon) = v.daemon else { return };
        // The logger's own events would feed back into the logger.
        if daemon == "logger" {
            return;
        }
        let line = DaemonLine {
            daemon,
            level: level_name(meta.level()),
            component: meta.target().to_owned(),
            message: v.message,
            args: v.args,
        };
        if self.tx.try_send(line).is_err() {
            channel().1.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A daemon name as a log category segment (`[A-Za-z0-9_.-]`).
fn category_for(daemon: &str) -> String {
    let seg: String = daemon
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("daemons/{}", if seg.is_empty() { "_" } else { &seg })
}

/// Write one line to the calling daemon's log (`DIR/logs/daemons/<name>.log`) through the logger
/// daemon, whichever placement serves it.
pub async fn log(
    ctx: &Context,
    level: &str,
    message: &str,
    args: Option<Value>,
) -> Result<Value, DaemonError> {
    let mut p = json!({
        "category": category_for(ctx.name()),
        "level": level,
        "component": ctx.name(),
        "message": message,
    });
    if let (Some(args), Value::Object(m)) = (args, &mut p) {
        m.insert("args".into(), args);
    }
    ctx.router().ask("log/write", p).await
}

/// The logger daemon (name `logger`, prefix `log/`).
#[derive(Debug, Clone)]
pub struct LoggerDaemon {
    placement: Placement,
    options: WorkerOptions,
    max_log_bytes: u64,
}

impl LoggerDaemon {
    /// A logger daemon writing under `options.data_dir/logs`.
    pub fn new(placement: Placement, options: WorkerOptions) -> Self {
        LoggerDaemon {
            placement,
            options,
            max_log_bytes: 0,
        }
    }

    /// Cap `DIR/logs` at `bytes` (0 = none, the default): lines past it are dropped and
    /// counted, in both placements.
    pub fn with_max_log_bytes(mut self, bytes: u64) -> Self {
        self.max_log_bytes = bytes;
        self
    }
}

/// How often the files' counters are read into the details.
const FILES_STATS_EVERY: Duration = Duration::from_secs(1);

/// The daemon-specific details: the per-daemon log counters, and the files' counters as last
/// read (`files`).
fn counters_json(files: &Mutex<Value>) -> Value {
    let c = &channel().1;
    json!({"daemonLogs": {
        "forwarded": c.forwarded.load(Ordering::Relaxed),
        "dropped": c.dropped.load(Ordering::Relaxed),
        "failedBatches": c.failed.load(Ordering::Relaxed),
    }, "logFiles": files.lock().clone()})
}

/// `{full, droppedFull, writeErrors}` of both placements.
async fn files_stats(placed: &Placed<LoggerService>) -> Value {
    let local = placed.fallback().logger().stats();
    let (mut full, mut dropped, mut errors) = (local.full, local.dropped_full, local.write_errors);
    if let Some(sup) = placed.supervisor()
        && sup.status().state == WorkerState::Up
        && let Ok(w) = sup.call("log/stats", json!({}), FILES_STATS_EVERY).await
    {
        full |= w["full"].as_bool().unwrap_or(false);
        dropped += w["droppedFull"].as_u64().unwrap_or(0);
        errors += w["writeErrors"].as_u64().unwrap_or(0);
    }
    json!({"full": full, "droppedFull": dropped, "writeErrors": errors})
}

/// Drain the layer's channel into `log/write-batch` calls until the daemon stops.
fn spawn_drain(ctx: &Context, placed: &Arc<Placed<LoggerService>>, files: &Arc<Mutex<Value>>) {
    let Some(mut rx) = channel().1.rx.lock().take() else {
        return;
    };
    let (ctx2, placed, files) = (ctx.clone(), Arc::clone(placed), Arc::clone(files));
    ctx.spawn(async move {
        let mut buf = Vec::with_capacity(DRAIN_BATCH);
        while rx.recv_many(&mut buf, DRAIN_BATCH).await > 0 {
            let n = buf.len() as u64;
            let entries: Vec<Value> = buf
                .drain(..)
                .map(|l| {
                    let mut e = json!({
                        "category": category_for(&l.daemon),
                        "level": l.level,
                        "component": l.component,
                        "message": l.message,
                    });
                    if !l.args.is_empty()
                        && let Value::Object(m) = &mut e
                    {
                        m.insert("args".into(), Value::Object(l.args));
                    }
                    e
                })
                .collect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let c = &channel().1;
            match placed
                .call(
                    &ctx2,
                    "log/write-batch",
                    json!({"entries": entries}),
                    deadline,
                )
                .await
            {
                Ok(_) => c.forwarded.fetch_add(n, Ordering::Relaxed),
                Err(_) => c.failed.fetch_add(1, Ordering::Relaxed),
            };
            placed.set_extra(counters_json(&files));
        }
    });
}

impl Daemon for LoggerDaemon {
    type State = Arc<Placed<LoggerService>>;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("logger")
            .prefix("log/")
            .command(
                CommandSpec::new("log/write", "Append one line to DIR/logs/<category>.log")
                    .param(
                        "category",
                        "string",
                        true,
                        "a/b/c segments of [A-Za-z0-9_.-]",
                    )
                    .param("level", "string", true, "debug | info | warn | error")
                    .param("component", "string", true, "who logs")
                    .param("message", "string", true, "the line")
                    .param("args", "object", false, "extra JSON"),
            )
            .command(
                CommandSpec::new("log/write-batch", "Append many lines").param(
                    "entries",
                    "array",
                    true,
                    "[{category?, level?, component?, message, args?} | message]",
                ),
            )
            .command(CommandSpec::new(
                "log/flush",
                "Wait until every accepted line is written",
            ))
            .command(CommandSpec::new("log/stats", "Logger counters"))
    }

    async fn start(&self, ctx: &Context) -> Result<Self::State, BoxError> {
        // Creating the log directory and the writer thread is blocking I/O: off the async workers.
        let root = self.options.data_dir.join("logs");
        let max_bytes = self.max_log_bytes;
        let service = ctx
            .spawn_blocking(move || {
                LoggerService::new(LoggerConfig {
                    max_bytes,
                    ..LoggerConfig::new(root)
                })
            })
            .await??;
        let mut options = self.options.clone();
        if max_bytes > 0 {
            options
                .extra_args
                .extend(["--max-log-bytes".to_owned(), max_bytes.to_string()]);
        }
        let placed = Placed::start(ctx, "logger", self.placement, &options, service, false)?;
        let files = Arc::new(Mutex::new(
            json!({"full": false, "droppedFull": 0, "writeErrors": 0}),
        ));
        placed.set_extra(counters_json(&files));
        spawn_drain(ctx, &placed, &files);
        let (p2, f2) = (Arc::clone(&placed), files);
        ctx.timers()
            .register_interval("log-files", FILES_STATS_EVERY, move || {
                let (placed, files) = (Arc::clone(&p2), Arc::clone(&f2));
                async move {
                    let v = files_stats(&placed).await;
                    *files.lock() = v;
                    placed.set_extra(counters_json(&files));
                }
            })?;
        Ok(placed)
    }

    async fn handle(
        &self,
        ctx: &Context,
        placed: &Self::State,
        req: Request,
    ) -> Result<Value, DaemonError> {
        placed
            .call(ctx, &req.command, req.params, req.deadline)
            .await
    }

    async fn stop(&self, _ctx: &Context, placed: Self::State) {
        placed.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_forwards_daemon_events_but_not_the_loggers_own() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(DaemonLogLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(daemon = "search", docs = 3_u64, "Index loaded");
            tracing::info!(daemon = "logger", "Not forwarded: would recurse");
            tracing::info!("Not forwarded: no daemon");
        });
        let mut rx = channel().1.rx.lock().take().expect("receiver");
        let line = rx.try_recv().expect("one line");
        assert_eq!(line.daemon, "search");
        assert_eq!(line.level, "info");
        assert_eq!(line.message, "Index loaded");
        assert_eq!(line.args["docs"], 3);
        assert!(rx.try_recv().is_err(), "only the search line");
    }

    #[test]
    fn categories_are_valid_segments() {
        assert_eq!(category_for("search"), "daemons/search");
        assert_eq!(category_for("a/b c"), "daemons/a_b_c");
        assert_eq!(category_for(""), "daemons/_");
    }
}
