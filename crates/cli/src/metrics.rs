//! The host's metrics in the Prometheus text exposition format (version 0.0.4).
//!
//! Nothing here counts anything: every scrape takes a [`Snapshot`] of the live state the host
//! already keeps (the runtime's per-daemon reports, bus, CPU pool and lag probe, the socket
//! server's counters, `/proc/self`) and encodes it with `prometheus-client` into a registry
//! built for that one scrape, families and samples in a fixed order (ADR 0009). So the numbers are the ones `health/metrics` and
//! `daemonhost status` show, there is no second set of counters to keep in step, and a daemon
//! added to the catalog appears without a line of code here.
//!
//! Two ways to reach it:
//!
//! - `daemonhost call health/prometheus` / `daemonhost metrics` (the command the catalog gives
//!   the `health` daemon through [`HostView::health_renderer`]);
//! - in process, from the web listener: [`HostView::renderer`] is an
//!   `Arc<dyn Fn() -> String + Send + Sync>` to mount as an axum handler:
//!
//! ```ignore
//! // host.rs, after `let runtime = builder.build()?` and `let counters = Arc::new(...)`:
//! let metrics = crate::metrics::HostView::new(runtime.handle(), Arc::clone(&counters)).renderer();
//! // web/mod.rs:
//! let app = axum::Router::new().route(
//!     "/metrics",
//!     axum::routing::get(move || {
//!         let metrics = metrics.clone();
//!         async move {
//!             ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], metrics())
//!         }
//!     }),
//! );
//! ```
//!
//! A render reads five `/proc` files and walks ~20 daemons: `health/prometheus` answers in
//! 2.1 ms (p50, one connection, debug build; `ping` 0.09 ms), about 42 KB of text. Fine to call
//! on the async runtime at scrape intervals (no `spawn_blocking` needed).
//!
//! Naming follows the Prometheus conventions: every family starts with `daemonhost_`, values
//! are in base units (seconds, bytes), counters end in `_total`, and each family has its HELP
//! and TYPE lines. `promtool check metrics` accepts the output (`.ci/run` checks it, and the
//! e2e test `prometheus_metrics_of_the_real_binary_pass_promtool` too).

use daemonhost_runtime::bus::BusStats;
use daemonhost_runtime::lag::LagSnapshot;
use daemonhost_runtime::pool::PoolStats;
use daemonhost_runtime::{DaemonReport, DeferredState, LifecycleState, RuntimeHandle};
use daemonhost_system::{HostCounters, HostCountersSnapshot, HostStartup, PrometheusRender};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The `Content-Type` of [`render`]'s text.
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "for the web listener's /metrics")
)]
pub const CONTENT_TYPE: &str = daemonhost_system::PROMETHEUS_CONTENT_TYPE;

/// What a scrape reads: the runtime and the socket server's counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HostView {
    /// The running runtime (`Runtime::handle`, or `Context::runtime` inside a daemon).
    pub runtime: RuntimeHandle,
    /// The socket server's counters and the host's startup timings.
    pub counters: Arc<HostCounters>,
}

/// A scrape as a closure, for the web listener (`/metrics`).
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "for the web listener's /metrics")
)]
pub type Renderer = Arc<dyn Fn() -> String + Send + Sync>;

impl HostView {
    /// A view of `runtime` and `counters`.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "for the web listener's /metrics")
    )]
    pub fn new(runtime: RuntimeHandle, counters: Arc<HostCounters>) -> Self {
        HostView { runtime, counters }
    }

    /// [`render`] of this view as a closure: what `/metrics` mounts.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "for the web listener's /metrics")
    )]
    pub fn renderer(self) -> Renderer {
        Arc::new(move || render(&self))
    }

    /// The `health` daemon's `health/prometheus` renderer (it passes its own runtime handle).
    pub fn health_renderer(counters: Arc<HostCounters>) -> PrometheusRender {
        Arc::new(move |runtime: &RuntimeHandle| {
            render(&HostView {
                runtime: runtime.clone(),
                counters: Arc::clone(&counters),
            })
        })
    }
}

/// The host's metrics now, as Prometheus text (format 0.0.4, [`CONTENT_TYPE`]).
pub fn render(view: &HostView) -> String {
    encode(&Snapshot::take(view))
}

/// Everything one scrape reports, read once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every daemon, in registration order.
    pub daemons: Vec<DaemonReport>,
    /// The event bus.
    pub bus: BusStats,
    /// The CPU pool (`None` only in tests that leave it out).
    pub pool: Option<PoolStats>,
    /// The coordinator lag probe, if it runs.
    pub lag: Option<LagSnapshot>,
    /// Tasks the runtime tracks.
    pub live_tasks: usize,
    /// The socket server's counters.
    pub server: Option<HostCountersSnapshot>,
    /// The host's startup timings, once startup has settled.
    pub startup: Option<HostStartup>,
    /// The process, from `/proc/self`.
    pub process: ProcessStats,
}

impl Snapshot {
    /// Read `view` and `/proc/self` now.
    pub fn take(view: &HostView) -> Self {
        let rt = &view.runtime;
        Snapshot {
            daemons: rt.reports(),
            bus: rt.bus_stats(),
            pool: Some(rt.pool_stats()),
            lag: rt.lag(),
            live_tasks: rt.live_tasks(),
            server: Some(view.counters.snapshot()),
            startup: view.counters.startup.get().copied(),
            process: ProcessStats::read(),
        }
    }
}

/// What `/proc/self` says about the process (`None` where unreadable, e.g. not on Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds (`/proc/self/stat` utime + stime over `CLK_TCK`).
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes (`/proc/self/status` VmRSS).
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes (`/proc/self/stat` vsize).
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors (entries of `/proc/self/fd`, less the one that lists them).
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (`/proc/self/limits`).
    pub max_fds: Option<u64>,
    /// Threads (`/proc/self/stat` num_threads).
    pub threads: Option<u64>,
    /// Start time, seconds since the Unix epoch (`/proc/stat` btime + starttime).
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc/*/stat` times (`sysconf(_SC_CLK_TCK)`; 100 on Linux).
pub(crate) fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

impl ProcessStats {
    /// Read `/proc/self` now.
    pub fn read() -> Self {
        let ticks = clock_ticks();
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_btime(&s));
        let mut out = stat
            .as_deref()
            .map(|s| parse_stat(s, ticks, btime))
            .unwrap_or_default();
        out.resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_vm_rss(&s));
        out.open_fds = std::fs::read_dir("/proc/self/fd")
            // The directory being read is itself an open fd, listed among the others.
            .map(|d| (d.count() as u64).saturating_sub(1))
            .ok();
        out.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| parse_max_open_files(&s));
        out
    }
}

/// `/proc/self/stat`: utime, stime, num_threads, starttime, vsize. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub(crate) fn parse_stat(text: &str, ticks: f64, btime: Option<u64>) -> ProcessStats {
    let Some((_, rest)) = text.rsplit_once(')') else {
        return ProcessStats::default();
    };
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    ProcessStats {
        cpu_seconds: match (num(14), num(15)) {
            (Some(u), Some(s)) => Some((u + s) as f64 / ticks),
            _ => None,
        },
        threads: num(20),
        start_time_seconds: match (btime, num(22)) {
            (Some(b), Some(st)) => Some(b as f64 + st as f64 / ticks),
            _ => None,
        },
        virtual_bytes: num(23),
        ..ProcessStats::default()
    }
}

/// `btime` of `/proc/stat`: boot time, seconds since the epoch.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS:  1234 kB` of `/proc/self/status`, in bytes.
fn parse_vm_rss(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`None` when unlimited).
fn parse_max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

type Labels = Vec<(&'static str, String)>;

/// One family's samples in the order given (prometheus-client's `Family` keeps a hash map, so
/// its order changes from scrape to scrape; a scrape here is built once and read once).
#[derive(Debug)]
struct Series<M> {
    samples: Vec<(Labels, M)>,
}

impl<M: EncodeMetric + TypedMetric> EncodeMetric for Series<M> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (labels, m) in &self.samples {
            m.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// One registry per scrape, filled from a snapshot. Names are given without the
/// `daemonhost_` prefix (the registry adds it) and, for counters, without `_total` (the
/// encoder adds it).
struct Scrape {
    registry: Registry,
}

impl Scrape {
    fn new() -> Self {
        Scrape {
            registry: Registry::with_prefix("daemonhost"),
        }
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.registry.register(name, help, ConstGauge::new(v));
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.registry.register(name, help, ConstCounter::new(v));
    }

    fn gauges(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, f64)>) {
        let samples = samples
            .into_iter()
            .map(|(l, v)| (l, ConstGauge::new(v)))
            .collect();
        self.registry.register(name, help, Series { samples });
    }

    fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let samples = samples
            .into_iter()
            .map(|(l, v)| (l, ConstCounter::new(v)))
            .collect();
        self.registry.register(name, help, Series { samples });
    }

    fn finish(self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "Cannot encode the Prometheus metrics");
        }
        out
    }
}

const LIFECYCLE: [LifecycleState; 6] = [
    LifecycleState::Created,
    LifecycleState::Starting,
    LifecycleState::Ready,
    LifecycleState::Stopping,
    LifecycleState::Stopped,
    LifecycleState::Failed,
];

const DEFERRED: [(DeferredState, &str); 4] = [
    (DeferredState::Pending, "pending"),
    (DeferredState::Running, "running"),
    (DeferredState::Done, "done"),
    (DeferredState::Failed, "failed"),
];

/// Milliseconds (as the runtime reports them, whole microseconds) in seconds, without the
/// binary noise of a double division (`1.05 ms` is `0.00105`, not `0.0010500000000000002`).
fn secs(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1e6
}

fn us_secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The Prometheus text of `s`.
pub fn encode(s: &Snapshot) -> String {
    let mut m = Scrape::new();
    m.gauges(
        "build_info",
        "The daemonhost version running (always 1)",
        [(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0)],
    );
    daemon_families(&mut m, &s.daemons);
    bus_families(&mut m, &s.bus);
    if let Some(p) = &s.pool {
        pool_families(&mut m, p);
    }
    if let Some(lag) = &s.lag {
        lag_families(&mut m, lag);
    }
    m.gauge(
        "runtime_tasks",
        "Tasks the runtime tracks now (daemon tasks, timers, spawned work)",
        s.live_tasks as f64,
    );
    if let Some(c) = &s.server {
        server_families(&mut m, c);
    }
    if let Some(st) = &s.startup {
        m.gauge(
            "startup_socket_bound_seconds",
            "From process start until the socket was bound",
            secs(st.socket_bound_ms),
        );
        m.gauge(
            "startup_first_command_seconds",
            "From process start until the first command was answered",
            secs(st.first_command_ms),
        );
        m.gauge(
            "startup_all_ready_seconds",
            "From process start until every daemon was READY or failed",
            secs(st.all_ready_ms),
        );
    }
    process_families(&mut m, &s.process);
    m.finish()
}

fn per_daemon<T>(ds: &[DaemonReport], f: impl Fn(&DaemonReport) -> T) -> Vec<(Labels, T)> {
    ds.iter()
        .map(|d| (vec![("daemon", d.name.clone())], f(d)))
        .collect()
}

fn daemon_families(m: &mut Scrape, ds: &[DaemonReport]) {
    m.gauges(
        "daemon_state",
        "Lifecycle state of each daemon, one-hot: 1 for the state it is in, 0 for the others",
        ds.iter().flat_map(|d| {
            LIFECYCLE.iter().map(move |st| {
                (
                    vec![
                        ("daemon", d.name.clone()),
                        ("state", st.as_str().to_owned()),
                    ],
                    f64::from(u8::from(d.state == *st)),
                )
            })
        }),
    );
    m.gauges(
        "daemon_deferred_init_state",
        "Deferred-init state of each daemon, one-hot (pending, running, done, failed)",
        ds.iter().flat_map(|d| {
            DEFERRED.iter().map(move |(st, name)| {
                (
                    vec![("daemon", d.name.clone()), ("state", (*name).to_owned())],
                    f64::from(u8::from(d.deferred == *st)),
                )
            })
        }),
    );
    m.counters(
        "daemon_start_attempts",
        "Start attempts of each daemon (more than one: its start failed and was retried)",
        per_daemon(ds, |d| u64::from(d.attempts)),
    );
    m.counters(
        "daemon_requests_handled",
        "Requests each daemon answered (errors included)",
        per_daemon(ds, |d| d.handled),
    );
    m.counters(
        "daemon_requests_failed",
        "Requests each daemon answered with an error",
        per_daemon(ds, |d| d.failed),
    );
    m.counters(
        "daemon_panics",
        "Panics caught in each daemon's code (requests, events, init, background work)",
        per_daemon(ds, |d| d.panics),
    );
    m.counters(
        "daemon_requests_overflowed",
        "Requests each daemon's overflow policy refused or evicted",
        per_daemon(ds, |d| d.overflowed),
    );
    m.counters(
        "daemon_requests_expired",
        "Requests whose deadline passed while they waited in a daemon's queue",
        per_daemon(ds, |d| d.expired),
    );
    m.counters(
        "daemon_requests_rejected_params",
        "Requests the router refused for params breaking the command's declaration",
        per_daemon(ds, |d| d.rejected_params),
    );
    m.counters(
        "daemon_requests_queued_before_ready",
        "Requests that waited in each daemon's startup queue",
        per_daemon(ds, |d| d.queued_before_ready),
    );
    m.counters(
        "daemon_events",
        "Bus events delivered to each daemon",
        per_daemon(ds, |d| d.events),
    );
    m.counters(
        "daemon_work",
        "Units of work each daemon ran, by place (inline, pool, blocking, worker)",
        ds.iter().flat_map(|d| {
            [
                ("inline", d.work.inline),
                ("pool", d.work.pool),
                ("blocking", d.work.blocking),
                ("worker", d.work.worker),
            ]
            .into_iter()
            .map(|(place, v)| {
                (
                    vec![("daemon", d.name.clone()), ("place", place.to_owned())],
                    v,
                )
            })
        }),
    );
    m.gauges(
        "daemon_requests_in_flight",
        "Requests each daemon is handling now",
        per_daemon(ds, |d| d.in_flight as f64),
    );
    m.gauges(
        "daemon_queue_depth",
        "Requests waiting in each daemon's queue now",
        per_daemon(ds, |d| d.queue_depth as f64),
    );
    m.gauges(
        "daemon_queue_peak_depth",
        "Deepest each daemon's queue has been since start",
        per_daemon(ds, |d| d.peak_queue_depth as f64),
    );
    m.gauges(
        "daemon_queue_oldest_age_seconds",
        "Age of the oldest request waiting in each daemon's queue (0 when empty)",
        per_daemon(ds, |d| secs(d.oldest_queued_ms)),
    );
    m.gauges(
        "daemon_longest_poll_seconds",
        "Longest single poll of each daemon's code on the async runtime since start",
        per_daemon(ds, |d| secs(d.longest_poll_ms)),
    );
    m.gauges(
        "daemon_core_init_seconds",
        "Duration of each daemon's core init (start, retries included)",
        per_daemon(ds, |d| secs(d.core_init_ms)),
    );
    m.gauges(
        "daemon_deferred_init_seconds",
        "Duration of each daemon's deferred init (0 until it ends)",
        per_daemon(ds, |d| secs(d.deferred_init_ms)),
    );
}

fn bus_families(m: &mut Scrape, b: &BusStats) {
    m.counter(
        "bus_events_published",
        "Events published on the bus",
        b.published,
    );
    m.counter(
        "bus_events_delivered",
        "Events queued to subscribers (one event to three subscribers counts three)",
        b.delivered,
    );
    m.counter(
        "bus_events_lagged",
        "Events subscribers missed because their queue was full (reported to them as lag)",
        b.lagged,
    );
    m.gauge(
        "bus_subscriptions",
        "Live bus subscriptions",
        b.subscriptions as f64,
    );
}

fn pool_families(m: &mut Scrape, p: &PoolStats) {
    m.gauge(
        "cpu_pool_threads",
        "Worker threads of the CPU pool",
        p.threads as f64,
    );
    m.gauge(
        "cpu_pool_jobs_queued",
        "CPU pool jobs waiting for a thread",
        p.pending.saturating_sub(p.running) as f64,
    );
    m.gauge(
        "cpu_pool_jobs_running",
        "CPU pool jobs running now",
        p.running.min(p.pending) as f64,
    );
    m.counters(
        "cpu_pool_jobs_completed",
        "CPU jobs finished, by where they ran (pool, or the blocking fallback)",
        [
            (vec![("path", "pool".to_owned())], p.completed_pool),
            (vec![("path", "blocking".to_owned())], p.completed_blocking),
        ],
    );
    m.counters(
        "cpu_pool_fallbacks",
        "CPU jobs sent to the blocking fallback, by reason (saturated, unavailable)",
        [
            (
                vec![("reason", "saturated".to_owned())],
                p.fallbacks_saturated,
            ),
            (
                vec![("reason", "unavailable".to_owned())],
                p.fallbacks_unavailable,
            ),
        ],
    );
    m.counter("cpu_pool_panics", "CPU jobs that panicked", p.panics);
}

fn lag_families(m: &mut Scrape, l: &LagSnapshot) {
    m.gauge(
        "coordinator_lag_seconds",
        "Event-loop lag now: the probe's last lateness, or how overdue it is while stalled",
        us_secs(l.current_us),
    );
    m.gauge(
        "coordinator_lag_max_seconds",
        "Largest event-loop lag since start",
        us_secs(l.max_us),
    );
    m.gauge(
        "coordinator_lag_p50_seconds",
        "Median event-loop lag over the probe's last 1024 samples",
        us_secs(l.p50_us),
    );
    m.gauge(
        "coordinator_lag_p99_seconds",
        "99th percentile event-loop lag over the probe's last 1024 samples",
        us_secs(l.p99_us),
    );
    m.counter(
        "coordinator_lag_samples",
        "Samples the lag probe has taken",
        l.samples,
    );
}

fn server_families(m: &mut Scrape, c: &HostCountersSnapshot) {
    m.counter(
        "server_connections_accepted",
        "Socket connections accepted",
        c.connections_accepted,
    );
    m.gauge(
        "server_connections_open",
        "Socket connections open now",
        c.connections_open as f64,
    );
    m.counter(
        "server_connections_refused",
        "Socket connections refused at [server] max_connections",
        c.connections_refused,
    );
    m.counter(
        "server_requests",
        "Request frames received (those answered with an error included)",
        c.requests,
    );
    m.counter(
        "server_bad_frames",
        "Frames answered bad_request (undecodable bodies)",
        c.bad_frames,
    );
    m.counter(
        "server_frames_too_large",
        "Connections closed for a frame over the size limit",
        c.frames_too_large,
    );
    m.counter(
        "server_frames_timed_out",
        "Connections closed for a frame not completed within [server] frame_timeout_ms",
        c.frames_timed_out,
    );
    m.gauge(
        "server_subscriptions_open",
        "Event subscriptions held by connections now",
        c.subscriptions_open as f64,
    );
    m.counter(
        "server_events_forwarded",
        "Events (and lag markers) written to connections",
        c.events_forwarded,
    );
}

fn process_families(m: &mut Scrape, p: &ProcessStats) {
    if let Some(v) = p.cpu_seconds {
        m.registry.register(
            "process_cpu_seconds",
            "User and system CPU time the process has used",
            ConstCounter::new(v),
        );
    }
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size",
            p.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size",
            p.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_open_fds",
            "Open file descriptors",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "The soft limit on open file descriptors",
            p.max_fds.map(|v| v as f64),
        ),
        (
            "process_threads",
            "Threads of the process",
            p.threads.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process, seconds since the Unix epoch",
            p.start_time_seconds,
        ),
    ];
    for (name, help, v) in gauges {
        if let Some(v) = v {
            m.gauge(name, help, v);
        }
    }
}

/// `daemonhost metrics`: a running host's `health/prometheus` text on stdout, as a scraper
/// would get it (exit 0; 1 when the command fails; 2 when no host runs).
pub async fn print(socket: &std::path::Path) -> std::process::ExitCode {
    use std::io::Write as _;
    let client = match crate::call::connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client
        .call(
            "health/prometheus",
            serde_json::Value::Null,
            Some(std::time::Duration::from_secs(10)),
        )
        .await
    {
        Ok(v) => {
            let text = v
                .get("text")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return std::process::ExitCode::from(crate::call::EXIT_FAILED);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => crate::call::report_error(&e, false),
    }
}

#[cfg(test)]
mod tests;
