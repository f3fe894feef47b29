//! The host's TOML configuration (`daemonhost run --config FILE`).
//!
//! Every field has a default embedded here, so the host runs with no file at all; a file only
//! overrides what it names. Unknown keys are an error (`deny_unknown_fields`): a misspelt key
//! that is silently ignored is a setting the operator believes in but does not have.
//!
//! ```toml
//! [host]
//! max_frame_bytes = 16777216
//! max_in_flight_per_connection = 1024
//! max_subscriptions_per_connection = 64
//! event_buffer = 1024
//! shutdown_grace_ms = 5000
//! worker_threads = 0        # 0 = auto: half the cores, at least 1
//! trim_interval_ms = 10000  # malloc_trim period; 0 = never
//! # max_connections: deprecated alias of [server] max_connections (still read, warned about)
//!
//! [server]                  # the socket server's guards against floods and stalled clients
//! max_connections = 4096    # open at once; one more gets `overloaded` naming this, and is closed
//! frame_timeout_ms = 10000  # a frame begun must be complete within this, else `timeout` + close
//!
//! [web]                     # the browser bridge: HTTP + WebSocket (docs/PROTOCOL.md, WebSocket)
//! listen = "127.0.0.1:9000" # IP:PORT (port 0 = any free port), or "off"; `run --web-listen`
//! max_connections = 64      # WebSocket connections at once; one more upgrade is refused (503)
//! max_inflight = 0          # requests in flight per WebSocket; 0 = [host] max_in_flight_per_connection
//! allowed_hosts = []        # extra Host names accepted (a TLS reverse proxy's public name)
//!
//! [runtime]
//! default_timeout_ms = 10000
//! max_timeout_ms = 600000
//!
//! [sessions]                # stored in the `sessions` collection
//! max_sessions = 10000
//! ttl_secs = 3600
//! sweep_interval_ms = 60000 # period of the sweep deleting expired sessions
//! cache_capacity = 4096     # sessions kept in memory for session/get
//!
//! [data]
//! max_db_mb = 0             # quota of DIR/data/primary.sqlite, MiB; 0 = unlimited (default)
//! max_archive_file_mb = 0   # cap of each DIR/data/archive file, MiB; 0 = none (default)
//!
//! [workers]
//! logger = "process"        # or "in_process"
//! search = "process"
//! ping_interval_ms = 1000
//! ping_timeout_ms = 500
//! max_missed_pings = 3
//! start_timeout_ms = 5000
//! start_limit_burst = 5     # starts ...
//! start_limit_interval_ms = 10000   # ... within this, then the worker is failed
//! backoff_ms = 50
//! max_backoff_ms = 2000
//! stop_grace_ms = 2000
//! max_log_mb = 0            # quota of DIR/logs for the logger, MiB; 0 = none (default)
//!
//! [proxy]                   # proxy/fetch: same-origin fetches for UI iframes (docs/adr/0010-proxy.md)
//! allow = []                # what it may fetch; empty (default) = nothing. Entries: "docs.rs",
//!                           # "127.0.0.1:8080", "[::1]:3000", "*.example.com" (names below it),
//!                           # "https://host" (that scheme only); no port = the scheme's default.
//!                           # Loopback/private/link-local addresses only for hosts listed exactly.
//! max_bytes = 2097152       # a larger body fails (validation); never truncated
//! timeout_ms = 10000        # the whole fetch: DNS, connect, answer, body; then `timeout`
//! max_concurrent = 16       # fetches at once; one more is `overloaded`
//!
//! [platform]
//! console = true             # console/write into the logger
//! auto_join = ["general"]
//! training_rooms = []        # e.g. ["general"]
//! training_context = 10
//! governance_interval_ms = 5000
//!
//! [personas]
//! max_personas = 1000
//! snapshot_interval_ms = 30000
//! context_messages = 10
//! max_concurrent_replies = 4
//! reply_timeout_ms = 60000
//! catch_up_max_age_ms = 3600000  # a catch-up (load, lost events, join) reads no older messages
//! join_window_ms = 10000     # a persona hears a room from this long before its join (not before it existed)
//! event_queue = 4096         # events queued for the daemon; a loss is repaired by a resync
//!
//! [personas.persona]         # each persona's state (crates/platform/src/persona/state.rs)
//! max_chain = 2              # persona messages in a row per room after a human's; then silence
//! inbox_capacity = 256
//! max_replies = 6            # per rate_window_ms, a sliding window
//! rate_window_ms = 60000
//! pace_replies = true        # spread them: one per window/max_replies on average
//! pace_jitter = 0.25         # each gap 0.75-1.25 x that, so personas do not answer in lockstep
//! ```

use anyhow::{Context as _, bail};
use daemonhost_ai::AiConfig;
use daemonhost_data::{ArchiveConfig, DataConfig, StoreSlot};
use daemonhost_data_client::DataClient;
use daemonhost_platform::PersonasConfig;
use daemonhost_platform::PlatformConfig;
use daemonhost_protocol::DEFAULT_MAX_FRAME;
use daemonhost_proxy::{Allowlist, ProxyConfig};
use daemonhost_runtime::RuntimeConfig;
use daemonhost_system::SessionConfig;
use daemonhost_system::placed::{Placement, WorkerOptions, WorkersConfig};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The host process and the socket server's per-connection bounds.
    pub host: HostSection,
    /// The socket server's guards: connections at once, time to complete a frame.
    pub server: ServerSection,
    /// The browser bridge: an HTTP + WebSocket listener.
    pub web: WebSection,
    /// The daemon runtime.
    pub runtime: RuntimeSection,
    /// The session daemon.
    pub sessions: SessionsSection,
    /// The data daemon (SQLite).
    pub data: DataSection,
    /// The archive daemon.
    pub archive: ArchiveSection,
    /// The AI provider daemon (`[ai]`, `[[ai.providers]]`); `data_dir` defaults to the host's.
    pub ai: AiConfig,
    /// The same-origin proxy (`proxy/fetch`).
    pub proxy: ProxySection,
    /// Worker processes (logger, search).
    pub workers: WorkersSection,
    /// The chat platform daemons.
    pub platform: PlatformSection,
    /// The persona daemon (`[personas]`, `[personas.persona]` for each persona's state).
    pub personas: PersonasConfig,
}

/// `[workers]`: placement of the logger and search daemons and supervision of their workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSection {
    /// `process` (default) or `in_process`.
    pub logger: Placement,
    /// `process` (default) or `in_process`.
    pub search: Placement,
    /// Health ping period.
    pub ping_interval_ms: u64,
    /// A ping slower than this counts as missed.
    pub ping_timeout_ms: u64,
    /// Consecutive missed pings before a worker is killed and restarted.
    pub max_missed_pings: u32,
    /// Spawn → connected and handshake done.
    pub start_timeout_ms: u64,
    /// At most this many starts ...
    pub start_limit_burst: u32,
    /// ... within this interval; then the worker is failed and the fallback serves.
    pub start_limit_interval_ms: u64,
    /// First restart delay (doubles per consecutive failure).
    pub backoff_ms: u64,
    /// Largest restart delay.
    pub max_backoff_ms: u64,
    /// Graceful stop budget before SIGTERM, then SIGKILL.
    pub stop_grace_ms: u64,
    /// Quota of `DIR/logs` for the logger (both placements), MiB; 0 = none (the default: the
    /// disk is the limit, and a full disk is handled the same). Lines past it are dropped and
    /// counted (`log/stats` `droppedFull`, `health/status` `logFiles`), never blocking.
    pub max_log_mb: u64,
}

fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for WorkersSection {
    fn default() -> Self {
        let d = WorkerOptions::new("");
        WorkersSection {
            logger: Placement::Process,
            search: Placement::Process,
            ping_interval_ms: ms_of(d.ping_interval),
            ping_timeout_ms: ms_of(d.ping_timeout),
            max_missed_pings: d.max_missed_pings,
            start_timeout_ms: ms_of(d.start_timeout),
            start_limit_burst: d.start_limit_burst,
            start_limit_interval_ms: ms_of(d.start_limit_interval),
            backoff_ms: ms_of(d.backoff),
            max_backoff_ms: ms_of(d.max_backoff),
            stop_grace_ms: ms_of(d.stop_grace),
            max_log_mb: 0,
        }
    }
}

/// `[proxy]`: the same-origin proxy for UI iframes (`crates/proxy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Hosts `proxy/fetch` may fetch (`[scheme://]host[:port]`, `*.domain`); empty (the
    /// default) allows nothing. A host that resolves to a loopback, private or link-local
    /// address is fetched only when it is listed exactly (not through a wildcard).
    pub allow: Vec<String>,
    /// A larger response body fails the fetch (`validation`); never truncated.
    pub max_bytes: usize,
    /// Bound of one whole fetch (DNS, connection, answer, body); then `timeout`.
    pub timeout_ms: u64,
    /// Fetches at once; one more is `overloaded`.
    pub max_concurrent: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        let d = ProxyConfig::default();
        ProxySection {
            allow: d.allow,
            max_bytes: d.max_bytes,
            timeout_ms: ms_of(d.timeout),
            max_concurrent: d.max_concurrent,
        }
    }
}

/// `[platform]`: users, rooms, chat, training, governance, console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformSection {
    /// Register the `console` daemon (it requires the `logger` daemon, which the host runs).
    pub console: bool,
    /// Rooms every user joins automatically.
    pub auto_join: Vec<String>,
    /// Rooms ensured at start.
    pub default_rooms: Vec<String>,
    /// Rooms whose messages become training examples (empty: the training daemon idles).
    pub training_rooms: Vec<String>,
    /// Messages of context per training example.
    pub training_context: usize,
    /// Period of the overdue-proposal finaliser.
    pub governance_interval_ms: u64,
    /// Fewer votes than this at finalisation means manual review.
    pub governance_min_votes: usize,
    /// Capacity of the `users` cache.
    pub users_cache: usize,
    /// Capacity of the `room-names` cache.
    pub room_names_cache: usize,
    /// Capacity of the `message-dedup` cache.
    pub dedup_cache: usize,
    /// Most members per room.
    pub max_room_members: usize,
}

impl Default for PlatformSection {
    fn default() -> Self {
        let d = PlatformConfig::default();
        PlatformSection {
            console: true,
            auto_join: d.membership.auto_join,
            default_rooms: d.rooms.default_rooms,
            training_rooms: d.training.rooms,
            training_context: d.training.context,
            governance_interval_ms: u64::try_from(d.governance.interval.as_millis())
                .unwrap_or(u64::MAX),
            governance_min_votes: d.governance.min_votes,
            users_cache: d.users.cache_capacity,
            room_names_cache: d.rooms.names_cache,
            dedup_cache: d.chat.dedup_capacity,
            max_room_members: d.rooms.max_members,
        }
    }
}

/// `[data]`: the SQLite data daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Read-only connections for `primary`.
    pub readers: usize,
    /// Writes queued for the writer thread before `overloaded`.
    pub writer_queue: usize,
    /// Most writes committed in one group transaction.
    pub max_group: usize,
    /// Writer page cache of `primary`, KiB: the memory bound against bulk-write speed.
    pub cache_kib: u32,
    /// Page cache of each `primary` reader, KiB.
    pub reader_cache_kib: u32,
    /// Quota of `primary.sqlite`, MiB; 0 = unlimited (the default: the disk is the limit, and a
    /// full disk answers the same `storage_full`). A write that would grow the file past it
    /// answers `storage_full`; reads go on. `data/quota {maxDbMb}` changes it until the host
    /// stops. Below the file's size it keeps the file at its size (freed pages are reused).
    pub max_db_mb: u64,
    /// Cap of each archive file, MiB; 0 = none (the default). A full file is followed by the
    /// next one; `data/quota {maxArchiveFileMb}` changes it until the host stops.
    pub max_archive_file_mb: u64,
}

impl Default for DataSection {
    fn default() -> Self {
        let d = DataConfig::new("");
        DataSection {
            readers: d.readers,
            writer_queue: d.writer_queue,
            max_group: d.max_group,
            cache_kib: d.cache_kib,
            reader_cache_kib: d.reader_cache_kib,
            max_db_mb: d.max_db_mb,
            max_archive_file_mb: d.max_archive_file_mb,
        }
    }
}

/// `[archive]`: moving old rows of collections with an archive rule to `DIR/data/archive/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// Period of the archive run.
    pub interval_ms: u64,
    /// Rows per batch.
    pub batch_size: u64,
    /// Rotate the archive file at this many rows.
    pub max_file_rows: u64,
    /// Most batches per run.
    pub max_batches_per_run: u32,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        let d = ArchiveConfig::new(StoreSlot::default());
        ArchiveSection {
            interval_ms: u64::try_from(d.interval.as_millis()).unwrap_or(u64::MAX),
            batch_size: d.batch_size,
            max_file_rows: d.max_file_rows,
            max_batches_per_run: d.max_batches_per_run,
        }
    }
}

/// `[host]`: the socket server's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSection {
    /// Largest frame body accepted (and sent); a larger declared length closes the connection.
    pub max_frame_bytes: usize,
    /// Requests in flight per connection before the host stops reading from it.
    pub max_in_flight_per_connection: usize,
    /// Event subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Events buffered per subscription before the oldest are dropped and reported as lag.
    pub event_buffer: usize,
    /// On shutdown, how long requests already in flight may take to finish.
    pub shutdown_grace_ms: u64,
    /// Deprecated alias of `[server] max_connections`: read (with a warning) and moved there by
    /// [`Config::parse`], never printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Async worker threads; 0 = auto, half the cores (at least 1). See [`Config::worker_threads`].
    pub worker_threads: usize,
    /// How often freed allocator memory is handed back to the OS (`malloc_trim`, glibc), in
    /// ms; 0 never.
    pub trim_interval_ms: u64,
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            max_frame_bytes: DEFAULT_MAX_FRAME,
            max_in_flight_per_connection: 1024,
            max_subscriptions_per_connection: 64,
            event_buffer: 1024,
            shutdown_grace_ms: 5000,
            max_connections: None,
            worker_threads: 0,
            trim_interval_ms: 10_000,
        }
    }
}

/// `[server]`: what the socket server does against connection floods and stalled clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Connections open at once; one more receives an `overloaded` error frame naming this
    /// limit and is closed. The connections already open are not affected.
    pub max_connections: usize,
    /// A frame whose first byte has arrived must be complete within this many ms, or the
    /// connection receives a `timeout` error frame (id null) and is closed. Time between
    /// frames is not limited.
    pub frame_timeout_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            max_connections: 4096,
            frame_timeout_ms: 10_000,
        }
    }
}

/// `[web]`: the browser bridge (`crates/cli/src/web`), an HTTP + WebSocket listener on the
/// host's runtime. Loopback only unless configured otherwise; every endpoint but `/healthz`
/// needs the data dir's token (`DIR/web.token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// `IP:PORT` to listen on (`localhost:PORT` is `127.0.0.1:PORT`; port 0 = any free port),
    /// or `off` for no listener at all. `run --web-listen` overrides it.
    pub listen: String,
    /// WebSocket connections open at once; one more upgrade is refused with
    /// `503 Service Unavailable` naming this limit. The connections already open are not
    /// affected.
    pub max_connections: usize,
    /// Requests in flight per WebSocket connection before the host stops reading from it
    /// (backpressure, as on the socket); 0 = `[host] max_in_flight_per_connection`.
    pub max_inflight: usize,
    /// Names accepted in the `Host` header besides the listen address and the loopback names
    /// (`localhost`, `127.0.0.1`, `[::1]`), e.g. the public name a TLS reverse proxy forwards.
    /// Each is `name` (any port) or `name:port`.
    pub allowed_hosts: Vec<String>,
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection {
            listen: "127.0.0.1:9000".to_owned(),
            max_connections: 64,
            max_inflight: 0,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Parse a `[web] listen` value: `None` for `off`.
pub fn parse_listen(text: &str) -> anyhow::Result<Option<SocketAddr>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .with_context(|| format!("web listen address '{t}': bad port"))?;
        return Ok(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    }
    t.parse::<SocketAddr>().map(Some).map_err(|e| {
        anyhow::anyhow!(
            "web listen address '{t}' is not IP:PORT or off ({e}); e.g. 127.0.0.1:9000, [::1]:9000, 127.0.0.1:0"
        )
    })
}

/// `[runtime]`: deadlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Deadline of a request whose caller and command name none.
    pub default_timeout_ms: u64,
    /// Upper bound on any deadline.
    pub max_timeout_ms: u64,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            default_timeout_ms: 10_000,
            max_timeout_ms: 600_000,
        }
    }
}

/// `[sessions]`: the session store's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Sessions at most (live, or expired and not yet swept).
    pub max_sessions: usize,
    /// Default session lifetime.
    pub ttl_secs: u64,
    /// Period of the sweep that deletes expired sessions from the store.
    pub sweep_interval_ms: u64,
    /// Sessions kept in memory for `session/get`.
    pub cache_capacity: usize,
}

impl Default for SessionsSection {
    fn default() -> Self {
        let d = SessionConfig::default();
        SessionsSection {
            max_sessions: d.max_sessions,
            ttl_secs: d.ttl.as_secs(),
            sweep_interval_ms: ms_of(d.sweep_interval),
            cache_capacity: d.cache_capacity,
        }
    }
}

impl Config {
    /// Parse and check a config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let mut cfg: Config = toml::from_str(text)?;
        if let Some(n) = cfg.host.max_connections.take() {
            // The key moved to [server]; the old one still works, once.
            let raw: toml::Table = toml::from_str(text)?;
            let both = raw
                .get("server")
                .and_then(|s| s.get("max_connections"))
                .is_some();
            if both {
                bail!(
                    "host.max_connections is a deprecated alias of server.max_connections; set only server.max_connections"
                );
            }
            tracing::warn!(
                max_connections = n,
                "[host] max_connections is deprecated: write it as [server] max_connections"
            );
            cfg.server.max_connections = n;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration as a complete TOML file (every key, defaults included), for
    /// `daemonhost config`. What it prints parses back to the same configuration.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("cannot render the configuration as TOML")
    }

    /// Read `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                Config::parse(&text).with_context(|| format!("invalid config file {}", p.display()))
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        let h = &self.host;
        let nonzero = [
            ("host.max_frame_bytes", h.max_frame_bytes as u64),
            (
                "host.max_in_flight_per_connection",
                h.max_in_flight_per_connection as u64,
            ),
            (
                "host.max_subscriptions_per_connection",
                h.max_subscriptions_per_connection as u64,
            ),
            ("host.event_buffer", h.event_buffer as u64),
            ("server.max_connections", self.server.max_connections as u64),
            ("server.frame_timeout_ms", self.server.frame_timeout_ms),
            ("web.max_connections", self.web.max_connections as u64),
            (
                "runtime.default_timeout_ms",
                self.runtime.default_timeout_ms,
            ),
            ("runtime.max_timeout_ms", self.runtime.max_timeout_ms),
            ("sessions.max_sessions", self.sessions.max_sessions as u64),
            ("sessions.ttl_secs", self.sessions.ttl_secs),
            (
                "sessions.sweep_interval_ms",
                self.sessions.sweep_interval_ms,
            ),
            (
                "sessions.cache_capacity",
                self.sessions.cache_capacity as u64,
            ),
            ("workers.ping_interval_ms", self.workers.ping_interval_ms),
            ("workers.ping_timeout_ms", self.workers.ping_timeout_ms),
            (
                "workers.max_missed_pings",
                u64::from(self.workers.max_missed_pings),
            ),
            ("workers.start_timeout_ms", self.workers.start_timeout_ms),
            (
                "workers.start_limit_burst",
                u64::from(self.workers.start_limit_burst),
            ),
            (
                "workers.start_limit_interval_ms",
                self.workers.start_limit_interval_ms,
            ),
            ("workers.stop_grace_ms", self.workers.stop_grace_ms),
            ("proxy.max_bytes", self.proxy.max_bytes as u64),
            ("proxy.timeout_ms", self.proxy.timeout_ms),
            ("proxy.max_concurrent", self.proxy.max_concurrent as u64),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if h.max_frame_bytes > u32::MAX as usize {
            bail!(
                "host.max_frame_bytes must be at most {} (the length prefix is a u32)",
                u32::MAX
            );
        }
        for (name, v) in [
            ("data.max_db_mb", self.data.max_db_mb),
            ("data.max_archive_file_mb", self.data.max_archive_file_mb),
            ("workers.max_log_mb", self.workers.max_log_mb),
        ] {
            if v > daemonhost_data::MAX_QUOTA_MB {
                bail!(
                    "{name} must be at most {} (16 TiB)",
                    daemonhost_data::MAX_QUOTA_MB
                );
            }
        }
        parse_listen(&self.web.listen).context("web.listen")?;
        self.validate_proxy()?;
        if self.runtime.default_timeout_ms > self.runtime.max_timeout_ms {
            bail!(
                "runtime.default_timeout_ms ({}) must not exceed runtime.max_timeout_ms ({})",
                self.runtime.default_timeout_ms,
                self.runtime.max_timeout_ms
            );
        }
        Ok(())
    }

    /// `[proxy]`: the entries parse, a fetch's answer fits a frame, the bounds are sane.
    fn validate_proxy(&self) -> anyhow::Result<()> {
        let p = &self.proxy;
        Allowlist::parse(&p.allow).map_err(|e| anyhow::anyhow!("proxy.allow: {e}"))?;
        // Only a proxy that may fetch something needs its answers to fit (a host with small
        // frames and no [proxy] allow stays valid).
        let frame = self.host.max_frame_bytes;
        if !p.allow.is_empty() && daemonhost_proxy::answer_bound(p.max_bytes) > frame {
            bail!(
                "proxy.max_bytes = {} does not fit a frame: its answer (the body in base64) needs up to {} bytes, above host.max_frame_bytes = {frame}; set at most {}",
                p.max_bytes,
                daemonhost_proxy::answer_bound(p.max_bytes),
                daemonhost_proxy::max_bytes_for_frame(frame)
            );
        }
        if p.max_concurrent > daemonhost_proxy::MAX_CONCURRENT_LIMIT {
            bail!(
                "proxy.max_concurrent must be at most {}",
                daemonhost_proxy::MAX_CONCURRENT_LIMIT
            );
        }
        if p.timeout_ms > self.runtime.max_timeout_ms {
            bail!(
                "proxy.timeout_ms ({}) must not exceed runtime.max_timeout_ms ({})",
                p.timeout_ms,
                self.runtime.max_timeout_ms
            );
        }
        Ok(())
    }

    /// Async worker threads for the host.
    ///
    /// Auto is half the cores (at least one), not all of them: async workers only coordinate
    /// (routing, socket I/O, daemon handlers that must not block), while CPU-heavy work runs on
    /// the runtime's CPU pool, which has threads of its own. Measured on the 2-core dev machine:
    /// with 2 async workers every request bounces between them (a task woken on one worker
    /// wakes the other to steal it), which doubled the sequential `ping` round trip (≈40 µs
    /// against ≈22 µs with one worker) and lowered pipelined throughput.
    pub fn worker_threads(&self) -> usize {
        if self.host.worker_threads > 0 {
            return self.host.worker_threads;
        }
        let cores = std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(1);
        (cores / 2).max(1)
    }

    /// Where the web bridge listens (`None`: off). Checked by [`Config::parse`].
    pub fn web_listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        parse_listen(&self.web.listen)
    }

    /// Requests in flight per WebSocket connection (`[web] max_inflight`, 0 = the socket's).
    pub fn web_max_inflight(&self) -> usize {
        match self.web.max_inflight {
            0 => self.host.max_in_flight_per_connection,
            n => n,
        }
    }

    /// The runtime settings this config asks for.
    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            default_timeout: Duration::from_millis(self.runtime.default_timeout_ms),
            max_timeout: Duration::from_millis(self.runtime.max_timeout_ms),
            ..RuntimeConfig::default()
        }
    }

    /// The data daemon's settings for `data_dir`.
    pub fn data_config(&self, data_dir: &Path) -> DataConfig {
        DataConfig {
            readers: self.data.readers.max(1),
            writer_queue: self.data.writer_queue.max(1),
            max_group: self.data.max_group.max(1),
            cache_kib: self.data.cache_kib.max(64),
            reader_cache_kib: self.data.reader_cache_kib.max(64),
            max_db_mb: self.data.max_db_mb,
            max_archive_file_mb: self.data.max_archive_file_mb,
            ..DataConfig::new(data_dir)
        }
    }

    /// The archive daemon's settings, reading the store from `store`.
    pub fn archive_config(&self, store: StoreSlot) -> ArchiveConfig {
        ArchiveConfig {
            interval: Duration::from_millis(self.archive.interval_ms.max(1)),
            batch_size: self.archive.batch_size.max(1),
            max_file_rows: self.archive.max_file_rows.max(1),
            max_batches_per_run: self.archive.max_batches_per_run.max(1),
            ..ArchiveConfig::new(store)
        }
    }

    /// The AI provider daemon's settings; secrets are read from `data_dir/secrets.env` unless
    /// the file names another directory.
    pub fn ai_config(&self, data_dir: &Path) -> AiConfig {
        let mut ai = self.ai.clone();
        if ai.data_dir.as_os_str().is_empty() || ai.data_dir == Path::new(".") {
            ai.data_dir = data_dir.to_path_buf();
        }
        ai
    }

    /// The worker-backed daemons' settings for the host of `data_dir`.
    pub fn workers_config(&self, data_dir: &Path, store: DataClient) -> WorkersConfig {
        let w = &self.workers;
        let options = WorkerOptions {
            ping_interval: Duration::from_millis(w.ping_interval_ms),
            ping_timeout: Duration::from_millis(w.ping_timeout_ms),
            max_missed_pings: w.max_missed_pings,
            start_timeout: Duration::from_millis(w.start_timeout_ms),
            start_limit_burst: w.start_limit_burst,
            start_limit_interval: Duration::from_millis(w.start_limit_interval_ms),
            backoff: Duration::from_millis(w.backoff_ms),
            max_backoff: Duration::from_millis(w.max_backoff_ms.max(w.backoff_ms)),
            stop_grace: Duration::from_millis(w.stop_grace_ms),
            ..WorkerOptions::new(data_dir)
        };
        WorkersConfig {
            logger: w.logger,
            search: w.search,
            options,
            store,
            max_log_bytes: w.max_log_mb.saturating_mul(1024 * 1024),
        }
    }

    /// The platform daemons' settings.
    pub fn platform_config(&self) -> PlatformConfig {
        let p = &self.platform;
        let mut c = PlatformConfig {
            console: p.console,
            ..PlatformConfig::default()
        };
        c.membership.auto_join = p.auto_join.clone();
        c.rooms.default_rooms = p.default_rooms.clone();
        c.rooms.names_cache = p.room_names_cache.max(1);
        c.rooms.max_members = p.max_room_members.max(1);
        c.training.rooms = p.training_rooms.clone();
        c.training.context = p.training_context.clamp(1, 100);
        c.governance.interval = Duration::from_millis(p.governance_interval_ms.max(1));
        c.governance.min_votes = p.governance_min_votes;
        c.users.cache_capacity = p.users_cache.max(1);
        c.chat.dedup_capacity = p.dedup_cache.max(1);
        c
    }

    /// The proxy daemon's settings.
    pub fn proxy_config(&self) -> ProxyConfig {
        let p = &self.proxy;
        ProxyConfig {
            allow: p.allow.clone(),
            max_bytes: p.max_bytes,
            timeout: Duration::from_millis(p.timeout_ms),
            max_concurrent: p.max_concurrent,
        }
    }

    /// The session store settings this config asks for.
    pub fn session_config(&self) -> SessionConfig {
        let ttl = Duration::from_secs(self.sessions.ttl_secs);
        let d = SessionConfig::default();
        SessionConfig {
            max_sessions: self.sessions.max_sessions,
            ttl,
            max_ttl: d.max_ttl.max(ttl),
            sweep_interval: Duration::from_millis(self.sessions.sweep_interval_ms),
            cache_capacity: self.sessions.cache_capacity,
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_empty_text_is_the_defaults() {
        assert_eq!(Config::parse("").expect("empty"), Config::default());
        let d = Config::default();
        assert_eq!(d.host.max_frame_bytes, 16 * 1024 * 1024);
        assert_eq!(d.host.max_in_flight_per_connection, 1024);
        assert_eq!(d.runtime_config().default_timeout, Duration::from_secs(10));
        assert!(d.worker_threads() >= 1);
        let c = Config::parse("[host]\nworker_threads = 3\n").expect("parse");
        assert_eq!(c.worker_threads(), 3);
    }

    #[test]
    fn config_overrides_only_what_it_names() {
        let c = Config::parse(
            "[host]\nmax_frame_bytes = 1024\n[sessions]\nttl_secs = 60\nsweep_interval_ms = 500\n",
        )
        .expect("parse");
        assert_eq!(c.host.max_frame_bytes, 1024);
        assert_eq!(c.host.max_in_flight_per_connection, 1024);
        assert_eq!(c.session_config().ttl, Duration::from_secs(60));
        assert_eq!(
            c.session_config().sweep_interval,
            Duration::from_millis(500)
        );
        assert_eq!(c.session_config().cache_capacity, 4096);
        assert_eq!(c.server, ServerSection::default());
        assert_eq!(c.runtime, RuntimeSection::default());
        let c = Config::parse("[platform]\ntraining_rooms = [\"general\"]\ntraining_context = 5\n")
            .expect("parse");
        let p = c.platform_config();
        assert_eq!(p.training.rooms, ["general"]);
        assert_eq!(p.training.context, 5);
        assert_eq!(p.membership.auto_join, ["general"]);
        assert!(
            p.console,
            "the host runs the logger, so console is on by default"
        );
    }

    #[test]
    fn config_workers_default_to_processes_and_parse() {
        let d = Config::default();
        assert_eq!(d.workers.logger, Placement::Process);
        assert_eq!(d.workers.search, Placement::Process);
        assert_eq!(d.workers.start_limit_burst, 5);
        assert_eq!(d.workers.start_limit_interval_ms, 10_000);
        let c = Config::parse("[workers]\nsearch = \"in_process\"\nping_interval_ms = 200\n")
            .expect("parse");
        assert_eq!(c.workers.search, Placement::InProcess);
        assert_eq!(c.workers.logger, Placement::Process);
        let w = c.workers_config(Path::new("/tmp/x"), DataClient::routed());
        assert_eq!(w.options.ping_interval, Duration::from_millis(200));
        assert_eq!(w.max_log_bytes, 0, "no log quota unless set");
        let c = Config::parse("[workers]\nmax_log_mb = 3\n").expect("parse");
        let w = c.workers_config(Path::new("/tmp/x"), DataClient::routed());
        assert_eq!(w.max_log_bytes, 3 * 1024 * 1024);
        assert!(Config::parse("[workers]\nsearch = \"elsewhere\"\n").is_err());
        assert!(Config::parse("[workers]\nstart_limit_burst = 0\n").is_err());
    }

    #[test]
    fn config_printed_in_full_parses_back_to_the_same_configuration() {
        // The defaults: every section and key is printed, and nothing is lost on the way back.
        let d = Config::default();
        let text = d.to_toml().expect("render");
        for key in [
            "[host]",
            "trim_interval_ms",
            "[personas.persona]",
            "pace_replies = true",
            // The documented page cache of primary's writer (docs/ARCHITECTURE.md).
            "cache_kib = 4096",
            // The storage quota: unlimited unless set (docs/SEMANTICS.md, under a full disk).
            "max_db_mb = 0",
            "max_archive_file_mb = 0",
            "max_log_mb = 0",
            "[archive]",
            "[ai]",
            // The socket server's guards (docs/PROTOCOL.md), not the deprecated alias.
            "[server]\nmax_connections = 4096\nframe_timeout_ms = 10000\n",
            "sweep_interval_ms = 60000",
            "cache_capacity = 4096",
            // The proxy fetches nothing unless told (docs/adr/0010-proxy.md).
            "[proxy]\nallow = []\nmax_bytes = 2097152\ntimeout_ms = 10000\nmax_concurrent = 16\n",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert_eq!(Config::parse(&text).expect("parse back"), d);
        // A file's settings survive the round trip too.
        let c = Config::parse(
            "[personas.persona]\npace_jitter = 0.5\n[workers]\nsearch = \"in_process\"\n\
             [[ai.providers]]\nname = \"local\"\nkind = \"openai\"\n\
             base_url = \"http://127.0.0.1:8080/v1\"\nmodel = \"m\"\n",
        )
        .expect("parse");
        assert_eq!(
            Config::parse(&c.to_toml().expect("render")).expect("back"),
            c
        );
    }

    #[test]
    fn host_max_connections_still_works_as_a_deprecated_alias_of_server_max_connections() {
        let c = Config::parse("[host]\nmax_connections = 7\n").expect("the old key");
        assert_eq!(c.server.max_connections, 7);
        assert_eq!(c.host.max_connections, None, "moved, so it is printed once");
        let text = c.to_toml().expect("render");
        assert!(text.contains("[server]\nmax_connections = 7\n"), "{text}");
        // Once under [server] (and [web] has its own, a WebSocket bound), never under [host].
        assert_eq!(text.matches("max_connections = 7").count(), 1, "{text}");
        assert_eq!(text.matches("max_connections").count(), 2, "{text}");
        assert_eq!(Config::parse(&text).expect("parse back"), c);
        let c = Config::parse("[server]\nmax_connections = 9\nframe_timeout_ms = 250\n")
            .expect("the new keys");
        assert_eq!(
            (c.server.max_connections, c.server.frame_timeout_ms),
            (9, 250)
        );
        let e = Config::parse("[host]\nmax_connections = 7\n[server]\nmax_connections = 9\n")
            .expect_err("both");
        assert!(e.to_string().contains("deprecated alias"), "{e}");
        for zero in [
            "[server]\nmax_connections = 0\n",
            "[server]\nframe_timeout_ms = 0\n",
            "[host]\nmax_connections = 0\n",
        ] {
            let e = Config::parse(zero).expect_err("zero");
            assert!(e.to_string().contains("must be at least 1"), "{zero}: {e}");
        }
    }

    #[test]
    fn web_listens_on_loopback_9000_by_default_and_accepts_a_port_zero_or_off() {
        let d = Config::default();
        assert_eq!(
            d.web_listen().expect("default"),
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9000)))
        );
        assert_eq!(d.web.max_connections, 64);
        assert_eq!(d.web_max_inflight(), d.host.max_in_flight_per_connection);
        let c = Config::parse("[web]\nlisten = \"off\"\nmax_inflight = 8\n").expect("off");
        assert_eq!(c.web_listen().expect("off"), None);
        assert_eq!(c.web_max_inflight(), 8);
        let c = Config::parse("[web]\nlisten = \"localhost:0\"\n").expect("localhost");
        assert_eq!(
            c.web_listen().expect("port 0"),
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        );
        let c = Config::parse("[web]\nlisten = \"[::1]:9001\"\n").expect("v6");
        assert_eq!(c.web_listen().expect("v6").map(|a| a.port()), Some(9001));
        for bad in [
            "[web]\nlisten = \"nine-thousand\"\n",
            "[web]\nlisten = \"127.0.0.1\"\n",
            "[web]\nmax_connections = 0\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
        let e = Config::parse("[web]\nlisten = \"example:1\"\n").expect_err("a name");
        assert!(format!("{e:#}").contains("example:1"), "{e:#}");
    }

    #[test]
    fn config_proxy_allows_nothing_by_default_and_refuses_bad_entries_and_limits() {
        let d = Config::default();
        assert!(d.proxy.allow.is_empty(), "nothing is fetched unless listed");
        let p = d.proxy_config();
        assert_eq!(p.max_bytes, 2 * 1024 * 1024);
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert_eq!(p.max_concurrent, 16);
        let c = Config::parse(
            "[proxy]\nallow = [\"127.0.0.1:8080\", \"*.example.com\"]\nmax_bytes = 4096\ntimeout_ms = 250\n",
        )
        .expect("parse");
        let p = c.proxy_config();
        assert_eq!(p.allow, ["127.0.0.1:8080", "*.example.com"]);
        assert_eq!(
            (p.max_bytes, p.timeout, p.max_concurrent),
            (4096, Duration::from_millis(250), 16)
        );
        for (text, want) in [
            (
                "[proxy]\nallow = [\"*.10.0.0.1\"]\n",
                "proxy.allow: entry '*.10.0.0.1'",
            ),
            ("[proxy]\nallow = [\"ftp://x\"]\n", "proxy.allow"),
            (
                "[proxy]\nmax_bytes = 0\n",
                "proxy.max_bytes must be at least 1",
            ),
            (
                "[proxy]\ntimeout_ms = 0\n",
                "proxy.timeout_ms must be at least 1",
            ),
            (
                "[proxy]\nmax_concurrent = 0\n",
                "proxy.max_concurrent must be at least 1",
            ),
            (
                "[proxy]\nmax_concurrent = 5000\n",
                "proxy.max_concurrent must be at most",
            ),
            (
                "[proxy]\ntimeout_ms = 700000\n",
                "proxy.timeout_ms (700000) must not exceed",
            ),
            (
                "[proxy]\nallow = [\"docs.rs\"]\nmax_bytes = 16777216\n",
                "proxy.max_bytes = 16777216 does not fit a frame",
            ),
            (
                "[host]\nmax_frame_bytes = 65536\n[proxy]\nallow = [\"docs.rs\"]\n",
                "above host.max_frame_bytes = 65536; set at most",
            ),
            ("[proxy]\nallowed = []\n", "allowed"),
        ] {
            let e = Config::parse(text).expect_err(text);
            assert!(format!("{e:#}").contains(want), "{text}: {e:#}");
        }
        // Small frames are fine while the proxy may fetch nothing.
        assert!(Config::parse("[host]\nmax_frame_bytes = 65536\n").is_ok());
    }

    #[test]
    fn config_unknown_keys_are_errors() {
        let e = Config::parse("[host]\nmax_frame_byte = 1\n").expect_err("typo");
        assert!(format!("{e:#}").contains("max_frame_byte"), "{e:#}");
        let e = Config::parse("[hots]\n").expect_err("typo");
        assert!(format!("{e:#}").contains("hots"), "{e:#}");
    }

    #[test]
    fn config_rejects_impossible_values() {
        let e = Config::parse("[host]\nmax_in_flight_per_connection = 0\n").expect_err("zero");
        assert!(e.to_string().contains("max_in_flight"), "{e}");
        let e = Config::parse("[runtime]\ndefault_timeout_ms = 5\nmax_timeout_ms = 1\n")
            .expect_err("order");
        assert!(e.to_string().contains("must not exceed"), "{e}");
        assert!(Config::parse("[host]\nmax_frame_bytes = \"big\"\n").is_err());
        let e = Config::parse("[data]\nmax_db_mb = 99999999999\n").expect_err("too big");
        assert!(e.to_string().contains("data.max_db_mb"), "{e}");
        let c = Config::parse("[data]\nmax_db_mb = 512\n").expect("quota");
        assert_eq!(c.data_config(Path::new("/tmp/x")).max_db_mb, 512);
    }

    #[test]
    fn config_load_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[nope]\n").expect("write");
        let e = Config::load(Some(&p)).expect_err("bad");
        assert!(format!("{e:#}").contains("c.toml"), "{e:#}");
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
        assert_eq!(Config::load(None).expect("none"), Config::default());
    }
}
