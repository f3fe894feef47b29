//! The system daemons: what makes a host useful before any application daemon exists.
//!
//! | daemon    | commands                                   |
//! |-----------|--------------------------------------------|
//! | `system`  | `ping`, `list`, `help`, `system/startup`   |
//! | `health`  | `health/status`, `health/metrics`          |
//! | `events`  | `events/subscribe`, `events/unsubscribe`   |
//! | `session` | `session/create/get/list/destroy` (see [`crate::session`]) |
//!
//! None has a dependency and every `start` is trivial, so they are READY within microseconds of
//! the runtime's start signal: a client that connects the instant the socket exists gets `ping`
//! answered before heavier daemons finish their init. They only *read* the runtime (through
//! [`daemonhost_runtime::RuntimeHandle`]); nothing here can stall the coordinator.
//!
//! Why `events/*` is a daemon that refuses: subscriptions belong to a client connection (they
//! end with it, and their events go down that socket), so the socket server answers those two
//! commands itself. The `events` daemon exists so that `list` and `help` document them, and so
//! that a daemon calling them through the router gets a clear `bad_request` instead of
//! `unknown_command`.

use crate::session::{SessionConfig, SessionDaemon};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request, RuntimeBuilder,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Queue bound of the `system` daemon. `ping` is the command benchmarks and health checks
/// hammer from many pipelining connections at once (each may have 1024 requests in flight), so
/// its queue is deeper than the runtime default; it is still a bound.
const SYSTEM_QUEUE: usize = 16 * 1024;

/// Everything the system daemons are configured with.
#[derive(Debug, Clone, Default)]
pub struct SystemConfig {
    /// The session store's bounds.
    pub sessions: SessionConfig,
    /// Counters kept by the socket server, reported by `health/metrics`.
    pub host: Arc<HostCounters>,
}

/// Counters of the host's socket server, shared with `health/metrics`. Relaxed atomics: they
/// are read for display, never for synchronisation.
#[derive(Debug, Default)]
pub struct HostCounters {
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Request frames received (including those answered with an error).
    pub requests: AtomicU64,
    /// Frames answered with `bad_request` (undecodable bodies).
    pub bad_frames: AtomicU64,
    /// Connections closed for a `frame_too_large` header.
    pub frames_too_large: AtomicU64,
    /// Event subscriptions held by connections now.
    pub subscriptions_open: AtomicU64,
    /// Events (and lag markers) written to connections.
    pub events_forwarded: AtomicU64,
    /// The host's own startup timings, set once when startup has settled; reported by
    /// `system/startup`.
    pub startup: OnceLock<HostStartup>,
}

/// How long the host took to become useful, measured from process start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HostStartup {
    /// The socket was bound (clients could connect and queue requests).
    pub socket_bound_ms: f64,
    /// The first command (an in-process `ping` through the router) was answered.
    pub first_command_ms: f64,
    /// Every daemon was READY or failed.
    pub all_ready_ms: f64,
}

/// A point-in-time copy of [`HostCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostCountersSnapshot {
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Request frames received.
    pub requests: u64,
    /// Frames answered with `bad_request`.
    pub bad_frames: u64,
    /// Connections closed for an oversized frame.
    pub frames_too_large: u64,
    /// Event subscriptions held by connections now.
    pub subscriptions_open: u64,
    /// Events written to connections.
    pub events_forwarded: u64,
}

impl HostCounters {
    /// Add one to `counter`.
    #[inline]
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtract one from `counter` (saturating at zero).
    #[inline]
    pub fn decr(counter: &AtomicU64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }

    /// Copy every counter.
    pub fn snapshot(&self) -> HostCountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HostCountersSnapshot {
            connections_accepted: g(&self.connections_accepted),
            connections_open: g(&self.connections_open),
            requests: g(&self.requests),
            bad_frames: g(&self.bad_frames),
            frames_too_large: g(&self.frames_too_large),
            subscriptions_open: g(&self.subscriptions_open),
            events_forwarded: g(&self.events_forwarded),
        }
    }
}

/// Register every system daemon. The one place the binary (and tests) add them.
pub fn register_system(builder: &mut RuntimeBuilder, cfg: &SystemConfig) {
    builder
        .register(SystemDaemon {
            host: Arc::clone(&cfg.host),
        })
        .register(HealthDaemon {
            host: Arc::clone(&cfg.host),
        })
        .register(EventsDaemon)
        .register(SessionDaemon::new(cfg.sessions.clone()));
}

// ---------------------------------------------------------------------------------------------
// Param helpers shared by the system daemons.
// ---------------------------------------------------------------------------------------------

/// The params object (`{}` when the caller sent none).
pub(crate) fn params_object(req: &Request) -> Result<&Map<String, Value>, DaemonError> {
    match &req.params {
        Value::Object(m) => Ok(m),
        Value::Null => {
            static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
            Ok(EMPTY.get_or_init(Map::new))
        }
        other => Err(DaemonError::bad_request(format!(
            "params must be an object, found {}",
            kind(other)
        ))),
    }
}

/// An optional string param: missing or null → `None`; a non-string → `bad_request`.
pub(crate) fn opt_str<'a>(
    p: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, DaemonError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(DaemonError::bad_request(format!(
            "field '{name}' must be a string (found {})",
            kind(other)
        ))),
    }
}

/// A required string param: missing → `validation`; a non-string → `bad_request`.
pub(crate) fn req_str<'a>(p: &'a Map<String, Value>, name: &str) -> Result<&'a str, DaemonError> {
    opt_str(p, name)?.ok_or_else(|| DaemonError::validation(format!("field '{name}' is required")))
}

/// An optional non-negative integer param.
pub(crate) fn opt_u64(p: &Map<String, Value>, name: &str) -> Result<Option<u64>, DaemonError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            DaemonError::bad_request(format!(
                "field '{name}' must be a non-negative integer (found {})",
                kind(v)
            ))
        }),
    }
}

/// The JSON kind of a value, for messages ("a string", "an array", …).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// system: ping, list, help, system/startup
// ---------------------------------------------------------------------------------------------

/// `ping`, `list`, `help` and `system/startup`.
#[derive(Debug, Clone, Default)]
pub struct SystemDaemon {
    /// The socket server's counters and the host's startup timings.
    pub host: Arc<HostCounters>,
}

impl Daemon for SystemDaemon {
    type State = ();

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("system")
            .command(CommandSpec::new(
                "ping",
                "Answer {pong: true, uptime_ms}: is the host alive and answering?",
            ))
            .command(CommandSpec::new(
                "list",
                "Every command with its serving daemon and a one-line description",
            ))
            .command(
                CommandSpec::new(
                    "help",
                    "A command's description, parameters and default timeout",
                )
                .param(
                    "command",
                    "string",
                    false,
                    "the command to describe; omitted = the same as 'list'",
                ),
            )
            .command(CommandSpec::new(
                "system/startup",
                "The per-daemon init metrics of this boot (core/deferred init, queued before READY)",
            ))
            .startup_queue(SYSTEM_QUEUE)
            .mailbox(SYSTEM_QUEUE)
            .concurrency(256)
    }

    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn handle(&self, ctx: &Context, _: &(), req: Request) -> Result<Value, DaemonError> {
        match req.command.as_str() {
            "ping" => Ok(json!({
                "pong": true,
                "uptime_ms": millis(ctx.runtime().uptime()),
            })),
            "list" => Ok(list(ctx)),
            "help" => {
                let p = params_object(&req)?;
                match opt_str(p, "command")? {
                    None => Ok(list(ctx)),
                    Some(name) => help(ctx, name),
                }
            }
            "system/startup" => {
                let reports = ctx.runtime().init_reports();
                let slowest = reports
                    .iter()
                    .max_by(|a, b| a.total_ms.total_cmp(&b.total_ms))
                    .map(|r| r.daemon.clone());
                Ok(json!({
                    "uptime_ms": millis(ctx.runtime().uptime()),
                    "host": self.host.startup.get(),
                    "count": reports.len(),
                    "slowest": slowest,
                    "daemons": reports,
                }))
            }
            other => Err(DaemonError::unknown_command(format!(
                "daemon 'system' does not serve '{other}'"
            ))),
        }
    }
}

fn list(ctx: &Context) -> Value {
    let commands: Vec<Value> = ctx
        .router()
        .commands()
        .into_iter()
        .map(|c| json!({"name": c.name, "daemon": c.daemon, "description": c.spec.description}))
        .collect();
    json!({ "count": commands.len(), "commands": commands })
}

fn help(ctx: &Context, name: &str) -> Result<Value, DaemonError> {
    let router = ctx.router();
    let default_timeout_ms = millis(router.default_timeout(name));
    if let Some(info) = router.command(name) {
        return Ok(json!({
            "name": info.name,
            "daemon": info.daemon,
            "description": info.spec.description,
            "params": info.spec.params,
            "default_timeout_ms": default_timeout_ms,
        }));
    }
    if let Some(daemon) = router.daemon_for(name) {
        // Served by a prefix: the daemon documents it no further.
        return Ok(json!({
            "name": name,
            "daemon": daemon,
            "description": format!("served by daemon '{daemon}' under a command prefix; it documents no parameters"),
            "params": [],
            "default_timeout_ms": default_timeout_ms,
        }));
    }
    let near = router.near_matches(name, 3);
    Err(DaemonError::unknown_command(if near.is_empty() {
        format!("no daemon serves '{name}' (try 'list')")
    } else {
        format!(
            "no daemon serves '{name}'; did you mean {}?",
            near.iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }))
}

// ---------------------------------------------------------------------------------------------
// health: status, metrics
// ---------------------------------------------------------------------------------------------

/// `health/status` and `health/metrics`.
#[derive(Debug, Clone, Default)]
pub struct HealthDaemon {
    /// The socket server's counters.
    pub host: Arc<HostCounters>,
}

impl Daemon for HealthDaemon {
    type State = ();

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("health")
            .command(CommandSpec::new(
                "health/status",
                "Every daemon with its state, init times, queue depth and longest poll",
            ))
            .command(CommandSpec::new(
                "health/metrics",
                "Process RSS, coordinator lag, pool/bus/socket counters and per-daemon counters",
            ))
    }

    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn handle(&self, ctx: &Context, _: &(), req: Request) -> Result<Value, DaemonError> {
        let rt = ctx.runtime();
        match req.command.as_str() {
            "health/status" => {
                let daemons = rt.reports();
                let ready = daemons
                    .iter()
                    .filter(|d| d.state == daemonhost_runtime::LifecycleState::Ready)
                    .count();
                let failed = daemons
                    .iter()
                    .filter(|d| d.state == daemonhost_runtime::LifecycleState::Failed)
                    .count();
                Ok(json!({
                    "healthy": failed == 0,
                    "uptime_ms": millis(rt.uptime()),
                    "count": daemons.len(),
                    "ready": ready,
                    "failed": failed,
                    "daemons": daemons,
                }))
            }
            "health/metrics" => {
                let proc_status = ProcStatus::read();
                let reports = rt.reports();
                // Every bounded cache a daemon publishes under `details.caches.<name>`, merged
                // (cache names are unique across daemons).
                let mut caches = Map::new();
                for d in &reports {
                    if let Some(Value::Object(c)) = d.details.as_ref().and_then(|v| v.get("caches"))
                    {
                        for (name, stats) in c {
                            caches.insert(name.clone(), stats.clone());
                        }
                    }
                }
                let daemons: Map<String, Value> = reports
                    .into_iter()
                    .map(|d| {
                        (
                            d.name.clone(),
                            json!({
                                "state": d.state,
                                "handled": d.handled,
                                "failed": d.failed,
                                "panics": d.panics,
                                "in_flight": d.in_flight,
                                "queue_depth": d.queue_depth,
                                "peak_queue_depth": d.peak_queue_depth,
                                "overflowed": d.overflowed,
                                "expired": d.expired,
                                "events": d.events,
                                "longest_poll_ms": d.longest_poll_ms,
                                "work": d.work,
                            }),
                        )
                    })
                    .collect();
                Ok(json!({
                    "uptime_ms": millis(rt.uptime()),
                    "process": {
                        "pid": std::process::id(),
                        "rss_bytes": proc_status.rss_bytes,
                        "peak_rss_bytes": proc_status.peak_rss_bytes,
                        "threads": proc_status.threads,
                    },
                    "lag": rt.lag(),
                    "pool": rt.pool_stats(),
                    "bus": rt.bus_stats(),
                    "live_tasks": rt.live_tasks(),
                    "caches": caches,
                    "host": self.host.snapshot(),
                    "daemons": daemons,
                }))
            }
            other => Err(DaemonError::unknown_command(format!(
                "daemon 'health' does not serve '{other}'"
            ))),
        }
    }
}

/// What `/proc/self/status` says about memory and threads (`None` where unavailable, e.g. not
/// on Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ProcStatus {
    rss_bytes: Option<u64>,
    peak_rss_bytes: Option<u64>,
    threads: Option<u64>,
}

impl ProcStatus {
    fn read() -> Self {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    fn parse(text: &str) -> Self {
        let mut out = ProcStatus::default();
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let num = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok());
            match key {
                "VmRSS" => out.rss_bytes = num.map(|kb| kb.saturating_mul(1024)),
                "VmHWM" => out.peak_rss_bytes = num.map(|kb| kb.saturating_mul(1024)),
                "Threads" => out.threads = num,
                _ => {}
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// events: documented here, served by the socket server
// ---------------------------------------------------------------------------------------------

/// Documents `events/subscribe` and `events/unsubscribe`, which the socket server answers per
/// connection; called through the router (from another daemon) they answer `bad_request`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventsDaemon;

impl Daemon for EventsDaemon {
    type State = ();

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("events")
            .command(
                CommandSpec::new(
                    "events/subscribe",
                    "Stream events whose topic matches a pattern to this connection; answers {subscription}",
                )
                .param(
                    "pattern",
                    "string",
                    true,
                    "topic pattern: ':'-separated, '*' = one segment, trailing '*' = the rest, {a,b} = alternatives",
                ),
            )
            .command(
                CommandSpec::new(
                    "events/unsubscribe",
                    "End a subscription of this connection",
                )
                .param(
                    "subscription",
                    "integer",
                    true,
                    "the id returned by events/subscribe",
                ),
            )
    }

    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn handle(&self, _ctx: &Context, _: &(), req: Request) -> Result<Value, DaemonError> {
        Err(DaemonError::bad_request(format!(
            "'{}' works only over a client connection (subscriptions belong to a connection); \
             inside the host, subscribe on the event bus instead",
            req.command
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemonhost_runtime::{ErrorCode, RuntimeConfig};

    async fn runtime() -> daemonhost_runtime::Runtime {
        let mut b = RuntimeBuilder::new(RuntimeConfig::default());
        register_system(&mut b, &SystemConfig::default());
        let rt = b.build().expect("valid plan");
        let report = rt.start_all().await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        rt
    }

    #[tokio::test]
    async fn system_commands_answer() {
        let rt = runtime().await;
        let r = rt.router();
        let pong = r.ask("ping", Value::Null).await.expect("ping");
        assert_eq!(pong["pong"], true);
        assert!(pong["uptime_ms"].is_u64());

        let list = r.ask("list", json!({})).await.expect("list");
        let names: Vec<&str> = list["commands"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        for want in [
            "ping",
            "list",
            "help",
            "health/status",
            "health/metrics",
            "system/startup",
            "events/subscribe",
            "events/unsubscribe",
            "session/create",
            "session/get",
            "session/list",
            "session/destroy",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }

        let h = r
            .ask("help", json!({"command": "events/subscribe"}))
            .await
            .expect("help");
        assert_eq!(h["daemon"], "events");
        assert_eq!(h["params"][0]["name"], "pattern");
        assert_eq!(h["default_timeout_ms"], 10_000);

        let e = r
            .ask("help", json!({"command": "pnig"}))
            .await
            .expect_err("unknown");
        assert_eq!(e.code, ErrorCode::UnknownCommand);
        assert!(e.message.contains("'ping'"), "{}", e.message);

        let e = r.ask("help", json!({"command": 3})).await.expect_err("bad");
        assert_eq!(e.code, ErrorCode::BadRequest);

        let st = r.ask("health/status", json!({})).await.expect("status");
        assert_eq!(st["count"], 4);
        assert_eq!(st["ready"], 4);
        assert_eq!(st["healthy"], true);

        let m = r.ask("health/metrics", json!({})).await.expect("metrics");
        assert!(m["process"]["rss_bytes"].as_u64().unwrap_or(0) > 0, "{m}");
        assert!(m["daemons"]["system"]["handled"].as_u64().unwrap_or(0) >= 1);
        assert_eq!(m["host"]["connections_open"], 0);

        let s = r.ask("system/startup", json!({})).await.expect("startup");
        assert_eq!(s["count"], 4);
        assert!(s["daemons"][0]["core_init_ms"].is_number());

        let e = r
            .ask("events/subscribe", json!({"pattern": "x:*"}))
            .await
            .expect_err("only over a connection");
        assert_eq!(e.code, ErrorCode::BadRequest);
        rt.shutdown().await;
    }

    #[test]
    fn proc_status_parses_kb_lines() {
        let s = ProcStatus::parse("Name:\tx\nVmHWM:\t  200 kB\nVmRSS:\t  100 kB\nThreads:\t3\n");
        assert_eq!(
            s,
            ProcStatus {
                rss_bytes: Some(102_400),
                peak_rss_bytes: Some(204_800),
                threads: Some(3)
            }
        );
        assert_eq!(ProcStatus::parse("garbage"), ProcStatus::default());
    }

    #[test]
    fn host_counters_decrement_saturates() {
        let c = HostCounters::default();
        HostCounters::decr(&c.connections_open);
        HostCounters::incr(&c.connections_open);
        HostCounters::add(&c.requests, 5);
        let s = c.snapshot();
        assert_eq!((s.connections_open, s.requests), (1, 5));
    }
}
