//! The `system`, `health` and `events` daemons.

use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request, RuntimeHandle,
};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::counters::HostCounters;
use crate::params_of;

/// Queue bound of the `system` daemon. `ping` is the command benchmarks and health checks
/// Queue bound of the `system` daemon. `ping` is the command benchmarks and health checks
/// hammer from many pipelining connections at once (each may have 1024 requests in flight), so
/// its queue is deeper than the runtime default; it is still a bound.
const SYSTEM_QUEUE: usize = 16 * 1024;
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
                let p = params_of(req.params)?;
                match p.opt_str("command")? {
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
    // The router's own answer: the same message, a huge name cut, the search bounded.
    Err(router.unknown_command(name))
}

// ---------------------------------------------------------------------------------------------
// health: status, metrics
// ---------------------------------------------------------------------------------------------

/// Renders the host's metrics as Prometheus text from the runtime's live state (the binary's
/// `metrics::render`; this crate knows no exposition format).
pub type PrometheusRender = Arc<dyn Fn(&RuntimeHandle) -> String + Send + Sync>;

/// The `Content-Type` of the text `health/prometheus` answers (Prometheus text format 0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `health/status` and `health/metrics`; `health/prometheus` when given a renderer.
#[derive(Clone, Default)]
pub struct HealthDaemon {
    /// The socket server's counters.
    pub host: Arc<HostCounters>,
    /// Serves `health/prometheus` (`{contentType, text}`) when set.
    pub prometheus: Option<PrometheusRender>,
}

impl std::fmt::Debug for HealthDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthDaemon")
            .field("host", &self.host)
            .field("prometheus", &self.prometheus.is_some())
            .finish()
    }
}

impl Daemon for HealthDaemon {
    type State = ();

    fn spec(&self) -> DaemonSpec {
        let spec = DaemonSpec::new("health")
            .command(CommandSpec::new(
                "health/status",
                "Every daemon with its state, init times, queue depth and longest poll",
            ))
            .command(CommandSpec::new(
                "health/metrics",
                "Process RSS, coordinator lag, pool/bus/socket counters and per-daemon counters",
            ));
        if self.prometheus.is_none() {
            return spec;
        }
        spec.command(CommandSpec::new(
            "health/prometheus",
            "The host's metrics in the Prometheus text format: {contentType, text} (what /metrics serves)",
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
            "health/prometheus" if self.prometheus.is_some() => {
                let text = self.prometheus.as_ref().map(|r| r(rt)).unwrap_or_default();
                Ok(json!({ "contentType": PROMETHEUS_CONTENT_TYPE, "text": text }))
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

    /// The host's own daemons, and `data`, which the session daemon stores through.
    async fn runtime(dir: &std::path::Path) -> daemonhost_runtime::Runtime {
        daemonhost_testkit::data::boot(dir, RuntimeConfig::default(), |b, slots| {
            b.register(SystemDaemon::default())
                .register(HealthDaemon::default())
                .register(EventsDaemon)
                .register(crate::SessionDaemon::new(
                    slots.client(),
                    crate::SessionConfig::default(),
                ));
        })
        .await
        .0
    }

    #[tokio::test]
    async fn health_prometheus_is_served_only_with_a_renderer_and_answers_its_text() {
        let mut b = daemonhost_runtime::RuntimeBuilder::new(RuntimeConfig::default());
        b.register(HealthDaemon::default());
        let plain = b.build().expect("plan");
        plain.start_all().await;
        let e = plain
            .router()
            .ask("health/prometheus", json!({}))
            .await
            .expect_err("not declared without a renderer");
        assert_eq!(e.code, ErrorCode::UnknownCommand);
        plain.shutdown().await;

        let render: PrometheusRender =
            Arc::new(|rt: &RuntimeHandle| format!("daemons {}\n", rt.reports().len()));
        let mut b = daemonhost_runtime::RuntimeBuilder::new(RuntimeConfig::default());
        b.register(HealthDaemon {
            prometheus: Some(render),
            ..HealthDaemon::default()
        });
        let rt = b.build().expect("plan");
        rt.start_all().await;
        let v = rt
            .router()
            .ask("health/prometheus", json!({}))
            .await
            .expect("served");
        assert_eq!(v["text"], "daemons 1\n");
        assert_eq!(v["contentType"], PROMETHEUS_CONTENT_TYPE);
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn ping_list_help_health_and_startup_answer_and_subscribe_needs_a_connection() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = runtime(dir.path()).await;
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
        assert_eq!(st["count"], 5);
        assert_eq!(st["ready"], 5);
        assert_eq!(st["healthy"], true);

        let m = r.ask("health/metrics", json!({})).await.expect("metrics");
        assert!(m["process"]["rss_bytes"].as_u64().unwrap_or(0) > 0, "{m}");
        assert!(m["daemons"]["system"]["handled"].as_u64().unwrap_or(0) >= 1);
        assert_eq!(m["host"]["connections_open"], 0);

        let s = r.ask("system/startup", json!({})).await.expect("startup");
        assert_eq!(s["count"], 5);
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
