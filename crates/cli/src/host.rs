//! `daemonhost run`: the host process.
//!
//! Order matters, and each step is here for a reason:
//!
//! 1. **Data dir** created with mode 0700: the socket's protection is the directory's.
//! 2. **Lock** `DIR/daemonhost.lock` with an exclusive `flock` (non-blocking). Holding it is what
//!    makes this host *the* host of the dir: a second one fails to take it and refuses with a
//!    clear message. The kernel drops the lock when the process dies however it dies, so a
//!    `kill -9` leaves no stale lock, only a stale socket file.
//! 3. **Socket** `DIR/daemonhost.sock`: holding the lock, any socket file there is stale (its
//!    host is dead), so it is unlinked and bound anew, mode 0600. This happens *before* any
//!    daemon starts, so a client may connect and send at once: requests wait in startup queues.
//! 4. **Web bridge** (`[web] listen`, `run --web-listen`; default `127.0.0.1:9000`, `off`
//!    for none): bound right after the socket, so a port in use is a startup error naming the
//!    address, before any daemon starts (nothing falls back to another port). Then
//!    `DIR/web.url` (mode 0600) gets `http://ADDR/?token=…` with the data dir's token
//!    (`DIR/web.token`); a `web.url` left by an earlier host is removed first, also under
//!    `off`. See `web/mod.rs`.
//! 5. **Daemons** start through the runtime's orchestrator; a short summary is printed (daemons
//!    READY, time to the first answered command, time to all READY) and, under systemd
//!    (`NOTIFY_SOCKET`), `READY=1` is sent once every daemon's core init has settled. With
//!    `WATCHDOG_USEC` (systemd's `WatchdogSec=`) a thread sends `WATCHDOG=1` every half
//!    interval from the runtime's start, withheld while the coordinator is stalled
//!    ([`crate::watchdog`]); it stops when shutdown begins.
//! 6. **SIGINT/SIGTERM**: stop accepting (socket and web), answer new requests with
//!    `shutting_down`, let requests in flight finish (bounded by `shutdown_grace_ms`), close
//!    connections of both transports, stop the daemons in reverse dependency order, remove the
//!    socket file and `web.url`, exit 0. A second signal during shutdown
//!    exits at once (socket still removed).

use crate::config::Config;
use crate::server::{self, ServerConfig};
use crate::web;
use anyhow::{Context as _, bail};
use daemonhost_runtime::{Runtime, RuntimeBuilder, StartupReport};
use daemonhost_system::{HostCounters, HostStartup};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The socket's file name inside the data dir.
pub const SOCKET_NAME: &str = "daemonhost.sock";
/// The lock's file name inside the data dir.
pub const LOCK_NAME: &str = "daemonhost.lock";

/// What `daemonhost run` was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The data dir (created if missing).
    pub data_dir: PathBuf,
    /// A TOML config file, if any.
    pub config: Option<PathBuf>,
    /// `--web-listen`: overrides `[web] listen`.
    pub web_listen: Option<String>,
}

/// Exit code when another host holds the data dir.
pub const EXIT_ALREADY_RUNNING: u8 = 3;

/// Run the host until a signal stops it.
pub fn run(opts: &RunOptions, process_start: Instant) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(opts.config.as_deref())?;
    if let Some(listen) = &opts.web_listen {
        crate::config::parse_listen(listen).context("--web-listen")?;
        cfg.web.listen.clone_from(listen);
    }
    let trimmer = if cfg.host.trim_interval_ms > 0 {
        crate::trim::spawn(Duration::from_millis(cfg.host.trim_interval_ms))
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads())
        .enable_all()
        .thread_name("daemonhost")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(opts, cfg, trimmer, process_start))
}

/// The data dir, its lock, and the socket path.
#[derive(Debug)]
struct DataDir {
    dir: PathBuf,
    socket: PathBuf,
    /// Held for the life of the host: the exclusive lock lives as long as this handle.
    _lock: File,
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<Result<DataDir, String>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot inspect data dir {}", dir.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set mode 0700 on data dir {}", dir.display()))?;
        tracing::debug!(dir = %dir.display(), from = format!("{mode:o}"), "Set the data dir's mode to 0700");
    }
    let lock_path = dir.join(LOCK_NAME);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("cannot open lock file {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            return Ok(Err(format!(
                "another daemonhost is already running on data dir {}{who}; stop it first, or use another --data-dir",
                dir.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
        }
    }
    // Best effort: the pid is only for the message a second host prints.
    let _ = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| writeln!(lock, "{}", std::process::id()));
    Ok(Ok(DataDir {
        dir: dir.to_path_buf(),
        socket: dir.join(SOCKET_NAME),
        _lock: lock,
    }))
}

/// Bind the socket, replacing a stale file (the caller holds the lock, so its host is dead).
fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(socket) {
        Ok(_) => {
            tracing::info!(socket = %socket.display(), "Replacing a stale socket left by a host that did not stop cleanly");
            std::fs::remove_file(socket)
                .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect {}", socket.display()));
        }
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set mode 0600 on {}", socket.display()))?;
    Ok(listener)
}

struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run_async(
    opts: &RunOptions,
    cfg: Config,
    trimmer: Option<crate::trim::Trimmer>,
    process_start: Instant,
) -> anyhow::Result<ExitCode> {
    // Signals first: a SIGTERM during startup must still remove the socket.
    let mut signals = Signals::new()?;
    let data = match prepare_data_dir(&opts.data_dir)? {
        Ok(d) => d,
        Err(refusal) => {
            eprintln!("error: {refusal}");
            return Ok(ExitCode::from(EXIT_ALREADY_RUNNING));
        }
    };
    let listener = bind(&data.socket)?;
    let bound_at = process_start.elapsed();
    let web = match start_web_listener(&data, &cfg).await {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&data.socket);
            return Err(e);
        }
    };

    let counters = Arc::new(HostCounters::default());
    let web_clients = Arc::new(web::Clients::default());
    let mut builder = RuntimeBuilder::new(cfg.runtime_config());
    crate::registry::register_all(
        &mut builder,
        crate::registry::Catalog {
            config: &cfg,
            data_dir: &opts.data_dir,
            counters: Arc::clone(&counters),
            after_snapshots: trimmer
                .map(|t| Box::new(move || t.poke()) as Box<dyn Fn() + Send + Sync>),
            web_clients: Arc::clone(&web_clients),
        },
    );
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = std::fs::remove_file(&data.socket);
            let _ = std::fs::remove_file(data.dir.join(web::URL_FILE));
            bail!("{e}");
        }
    };
    let mut server = server::spawn(
        listener,
        runtime.router(),
        runtime.bus(),
        ServerConfig {
            max_frame_len: cfg.host.max_frame_bytes,
            max_in_flight: cfg.host.max_in_flight_per_connection,
            max_subscriptions: cfg.host.max_subscriptions_per_connection,
            event_buffer: cfg.host.event_buffer,
            max_connections: cfg.server.max_connections,
            frame_timeout: Duration::from_millis(cfg.server.frame_timeout_ms),
        },
        Arc::clone(&counters),
    );
    let startup_counters = Arc::clone(&counters);
    tracing::info!(socket = %data.socket.display(), pid = std::process::id(), "Listening");
    let web_url = web.map(|w| {
        let opts = web::WebOptions {
            max_connections: cfg.web.max_connections,
            max_inflight: cfg.web_max_inflight(),
            allowed_hosts: cfg.web.allowed_hosts.clone(),
        };
        tracing::info!(
            addr = %w.bound.addr,
            assets_bytes = web::assets::total_bytes(),
            "Web bridge listening"
        );
        // The hook for more endpoints (e.g. `/metrics`) is the last argument: see `web::router`.
        let metrics =
            crate::metrics::HostView::new(runtime.handle(), Arc::clone(&counters)).renderer();
        let extra = web::routes::extra(runtime.router(), metrics);
        web::spawn(
            w.bound,
            server.core(),
            w.token,
            &opts,
            web_clients,
            Some(extra),
        );
        w.url
    });

    runtime.start();
    // Under systemd with `WatchdogSec=`: WATCHDOG=1 every half interval unless stalled.
    let mut watchdog = crate::watchdog::Watchdog::from_env(runtime.handle());
    let router = runtime.router();
    let startup = async {
        let first = async {
            let r = router.ask("ping", Value::Null).await;
            (process_start.elapsed(), r.is_ok())
        };
        tokio::join!(runtime.wait_settled(), first)
    };
    let stopped_by = tokio::select! {
        (report, first) = startup => {
            let all_at = process_start.elapsed();
            let _ = startup_counters.startup.set(HostStartup {
                socket_bound_ms: ms(bound_at),
                first_command_ms: ms(first.0),
                all_ready_ms: ms(all_at),
            });
            print_summary(&data, web_url.as_deref(), &report, bound_at, first, all_at);
            if let Err(e) = sd_notify::notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&format!("{} daemons ready, {} failed", report.ready.len(), report.failed.len())),
            ]) {
                tracing::warn!(error = %e, "Cannot notify systemd");
            }
            signals.recv().await
        }
        sig = signals.recv() => sig,
    };

    tracing::info!(signal = stopped_by, "Shutting down");
    // Pings end first (the thread is joined), so no WATCHDOG=1 follows STOPPING=1.
    if let Some(w) = watchdog.as_mut() {
        w.stop();
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let shutdown = shutdown(&runtime, &mut server, &cfg);
    tokio::pin!(shutdown);
    let clean = tokio::select! {
        () = &mut shutdown => true,
        sig = signals.recv() => {
            tracing::warn!(signal = sig, "Second signal: exiting without waiting");
            false
        }
    };
    if let Err(e) = std::fs::remove_file(&data.socket)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, socket = %data.socket.display(), "Cannot remove the socket");
    }
    if web_url.is_some() {
        let _ = std::fs::remove_file(data.dir.join(web::URL_FILE));
    }
    drop(data);
    if clean {
        eprintln!("daemonhost stopped ({stopped_by})");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// The web bridge's listener, bound, with its token and the URL written to `DIR/web.url`.
struct WebListener {
    bound: web::Bound,
    token: web::auth::Token,
    url: String,
}

/// Bind the web bridge if `[web] listen` is not `off` (see the module docs, step 4).
async fn start_web_listener(data: &DataDir, cfg: &Config) -> anyhow::Result<Option<WebListener>> {
    let url_file = data.dir.join(web::URL_FILE);
    match std::fs::remove_file(&url_file) {
        Ok(()) => {
            tracing::debug!(file = %url_file.display(), "Removed a web.url left by an earlier host")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove {}", url_file.display()));
        }
    }
    let Some(addr) = cfg.web_listen()? else {
        return Ok(None);
    };
    let bound = web::bind(addr).await?;
    let token = web::auth::Token::load_or_create(&data.dir)?;
    let url = web::url(bound.addr, &token);
    web::write_url_file(&data.dir, &url)?;
    Ok(Some(WebListener { bound, token, url }))
}

async fn shutdown(runtime: &Runtime, server: &mut server::ServerHandle, cfg: &Config) {
    let t0 = Instant::now();
    server.begin_shutdown();
    let grace = Duration::from_millis(cfg.host.shutdown_grace_ms);
    if !server.drained(grace).await {
        tracing::warn!(
            grace_ms = cfg.host.shutdown_grace_ms,
            "Requests still in flight after the grace period; the daemons will answer them shutting_down"
        );
    }
    // Connections end first so their bus subscriptions are gone before the runtime checks.
    let left = server.close(Duration::from_secs(1)).await;
    if left > 0 {
        tracing::warn!(tasks = left, "Connection tasks still running after close");
    }
    let report = runtime.shutdown().await;
    tracing::info!(
        stop_order = ?report.stop_order,
        live_tasks = report.live_tasks,
        live_subscriptions = report.live_subscriptions,
        elapsed_ms = report.elapsed_ms,
        "Daemons stopped"
    );
    tracing::debug!(elapsed_ms = ms(t0.elapsed()), "Shutdown complete");
}

fn print_summary(
    data: &DataDir,
    web_url: Option<&str>,
    report: &StartupReport,
    bound_at: Duration,
    (first_at, first_ok): (Duration, bool),
    all_at: Duration,
) {
    let mut out = String::new();
    out.push_str(&format!(
        "daemonhost {} · pid {} · listening on {}\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        data.socket.display()
    ));
    out.push_str(&format!(
        "  {} daemons READY: {}\n",
        report.ready.len(),
        report.ready.join(", ")
    ));
    for f in &report.failed {
        out.push_str(&format!("  FAILED {}: {}\n", f.daemon, f.cause));
    }
    out.push_str(&format!(
        "  socket bound {:.2} ms · first command answered {:.2} ms{} · all READY {:.2} ms (after process start; orchestration {:.2} ms)\n",
        ms(bound_at),
        ms(first_at),
        if first_ok { "" } else { " (with an error)" },
        ms(all_at),
        report.all_settled_ms,
    ));
    out.push_str(&format!("  data dir {}\n", data.dir.display()));
    match web_url {
        Some(url) => out.push_str(&format!("  web {url} (also in {})\n", web::URL_FILE)),
        None => out.push_str("  web off\n"),
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn data_dir_is_0700_and_second_lock_is_refused() {
        let tmp = tempfile::Builder::new()
            .prefix("dh")
            .tempdir_in("/tmp")
            .expect("tmp");
        let dir = tmp.path().join("data");
        let first = prepare_data_dir(&dir).expect("io").expect("first");
        let mode = std::fs::metadata(&dir).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o700);
        let second = prepare_data_dir(&dir).expect("io").expect_err("second");
        assert!(second.contains("already running"), "{second}");
        assert!(second.contains(&dir.display().to_string()), "{second}");
        assert!(
            second.contains(&format!("pid {}", std::process::id())),
            "{second}"
        );
        drop(first);
        assert!(prepare_data_dir(&dir).expect("io").is_ok());
    }

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_with_mode_0600() {
        let tmp = tempfile::Builder::new()
            .prefix("dh")
            .tempdir_in("/tmp")
            .expect("tmp");
        let sock = tmp.path().join(SOCKET_NAME);
        drop(std::os::unix::net::UnixListener::bind(&sock).expect("stale"));
        assert!(sock.exists());
        let _l = bind(&sock).expect("bind over stale");
        let mode = std::fs::metadata(&sock).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
