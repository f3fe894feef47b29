//! The `daemonhost` binary: one executable, several roles.
//!
//! - `daemonhost run` — the host: data dir, lock, socket, web bridge, every daemon ([`host`],
//!   [`server`], [`web`]).
//! - `daemonhost call COMMAND [--key=value …]` — one command, pretty JSON ([`call`]).
//! - `daemonhost status` / `daemonhost events PATTERN` — operator views ([`status`], [`events`]).
//! - `daemonhost bench` — load and startup measurements ([`bench`]).
//! - `daemonhost metrics` — the host's metrics in the Prometheus text format ([`metrics`]).
//! - `daemonhost analyze blame|critical-chain|plot` — systemd-analyze for the daemons
//!   ([`analyze`]).
//! - `daemonhost worker KIND --socket PATH [--data-dir DIR]` — the out-of-process worker role,
//!   spawned by the host's supervisor from its own executable ([`worker`]).
//!
//! Exit codes: 0 success; 1 the command failed; 2 no host is running; 3 another host already
//! runs on the data dir; 64 bad command-line usage.
#![deny(unsafe_code)] // one `allow`: the `malloc_trim` call in `trim.rs`

mod analyze;
mod bench;
mod call;
mod config;
mod events;
mod host;
mod metrics;
mod registry;
mod server;
mod status;
mod trim;
mod watchdog;
mod web;
mod worker;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit code for bad command-line usage (BSD `EX_USAGE`), distinct from 2 = "no host running".
pub const EXIT_USAGE: u8 = 64;

/// Run many long-lived daemons in one process and talk to them over a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "daemonhost", version, about, propagate_version = true)]
struct Cli {
    /// The data dir: holds the socket `daemonhost.sock` and the lock.
    #[arg(long, global = true, default_value = ".daemonhost", value_name = "DIR")]
    data_dir: PathBuf,
    /// Connect to this socket instead of DIR/daemonhost.sock (client commands).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Log level or filter (e.g. `debug`, `info,daemonhost=trace`); default: RUST_LOG, else
    /// `info` for `run` and `warn` for the others.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host in the foreground until SIGINT/SIGTERM.
    Run {
        /// A TOML config file (every setting has a default).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where the web bridge (HTTP + WebSocket) listens, overriding `[web] listen`: IP:PORT
        /// (port 0 = any free port; the URL is written to DIR/web.url), or `off`.
        #[arg(long, value_name = "ADDR")]
        web_listen: Option<String>,
    },
    /// Print the configuration `run` would use, as a complete TOML file: every key with its
    /// default, or the value FILE sets (checked as `run` checks it; exit 1 if invalid).
    Config {
        /// A TOML config file to merge over the defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Call one command and print its result as JSON (exit 0 ok, 1 error, 2 no host).
    #[command(
        after_help = "PARAMS: --key=value or --key value (numbers, booleans and values \
        starting with { or [ are JSON), a bare --flag is true, --params '{...}' merges an object; \
        the last occurrence of a key wins. --json and --timeout are understood after COMMAND too; \
        after a lone -- every flag is a parameter.\n\nExample: daemonhost call session/create \
        --metadata '{\"user\":\"joel\"}' --ttl_secs 60"
    )]
    Call {
        /// Print one compact JSON line instead of pretty JSON.
        #[arg(long)]
        json: bool,
        /// Deadline (e.g. 30s, 500ms); default 10 s, 60 s for ai/*, 300 s for genome/*.
        #[arg(long, value_parser = call::parse_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
        /// The command, e.g. `ping`, `health/status`, `help`.
        command: String,
        /// Parameters.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PARAMS"
        )]
        params: Vec<String>,
    },
    /// Show every daemon: state, init times, queue depth, longest poll.
    Status {
        /// Print the raw health/status JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the host's metrics in the Prometheus text format (what /metrics serves; the
    /// command `health/prometheus`).
    Metrics,
    /// Analyze the host's startup, as systemd-analyze does for units (from `system/startup`).
    Analyze {
        #[command(subcommand)]
        view: AnalyzeView,
    },
    /// Stream events whose topic matches PATTERN as JSON lines until Ctrl-C.
    Events {
        /// Topic pattern, e.g. `system:daemon:*` or `data:*:created`.
        pattern: String,
        /// Exit after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Measure a running host (req/s and latency), or with --startup the time to first ping.
    Bench {
        /// Command to send.
        #[arg(long, default_value = "ping")]
        command: String,
        /// Its params as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Connections.
        #[arg(long, short = 'c', default_value_t = 4)]
        connections: usize,
        /// Requests in flight per connection (1 = sequential round trips).
        #[arg(long, short = 'd', default_value_t = 64)]
        depth: usize,
        /// Measured duration.
        #[arg(long, value_parser = call::parse_duration, default_value = "5s")]
        duration: Duration,
        /// Unmeasured warmup before it.
        #[arg(long, value_parser = call::parse_duration, default_value = "1s")]
        warmup: Duration,
        /// Instead: spawn `daemonhost run` in a temp dir and time spawn → first ping answered.
        #[arg(long)]
        startup: bool,
        /// Repetitions for --startup.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a worker process (logger or search) serving the host on --socket PATH. Started by
    /// the host itself; exits when the host closes the connection.
    #[command(hide = true)]
    Worker {
        /// `logger` or `search`.
        kind: String,
        /// The logger's quota of DIR/logs, bytes (0 = none); the host passes `[workers]
        /// max_log_mb`.
        #[arg(long, default_value_t = 0)]
        max_log_bytes: u64,
    },
}

/// What `daemonhost analyze` shows.
#[derive(Debug, Subcommand)]
enum AnalyzeView {
    /// Every daemon by init time (core + deferred), slowest first.
    Blame,
    /// The dependency chain that decided when every daemon (or DAEMON) was READY: `@` when
    /// each link became READY, `+` how long its core init took.
    CriticalChain {
        /// Follow this daemon's chain instead of the last one to become READY.
        daemon: Option<String>,
    },
    /// An SVG waterfall of the startup on stdout (one bar per daemon, dependency order).
    Plot,
}

/// Log to stderr; for `run` (`daemon_logs`), also copy daemons' events to the logger daemon.
fn init_logging(level: Option<&str>, default: &str, daemon_logs: bool) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = match level {
        Some(l) => {
            EnvFilter::try_new(l).map_err(|e| anyhow::anyhow!("bad --log-level '{l}': {e}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let daemons = daemon_logs.then(daemonhost_system::logging::DaemonLogLayer::new);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(daemons)
        .init();
    Ok(())
}

fn socket_path(cli: &Cli) -> PathBuf {
    cli.socket
        .clone()
        .unwrap_or_else(|| cli.data_dir.join(host::SOCKET_NAME))
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    let process_start = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    if matches!(cli.command, Command::Run { .. }) {
        bound_malloc_arenas();
    }
    match dispatch(&cli, process_start) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(call::EXIT_FAILED)
        }
    }
}

/// The host runs with `MALLOC_ARENA_MAX=2` unless the environment says otherwise.
///
/// glibc gives threads their own allocator arenas (up to eight per core) and keeps memory
/// freed in one arena for that arena. The host's threads come and go (a persona database's
/// writer lives for one snapshot) and hand data to each other (requests parsed on the async
/// workers are freed on the SQLite writer), so under a steady load the sum of those arenas kept
/// creeping up while the live heap stayed flat (measured with heaptrack against the RSS in
/// `scripts/soak.py`). Two arenas share that free memory. The variable is read when the
/// process starts, before `main`, so the host re-executes itself once with it set (same pid);
/// setting `MALLOC_ARENA_MAX` yourself, to any value, skips this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_ARENA_MAX";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, "2")
        .exec();
    // `exec` returns only when it failed: go on with glibc's defaults.
    eprintln!("warning: could not re-execute with {VAR}=2 ({err}); continuing without it");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_arenas() {}

fn dispatch(cli: &Cli, process_start: Instant) -> anyhow::Result<ExitCode> {
    let is_run = matches!(cli.command, Command::Run { .. });
    init_logging(
        cli.log_level.as_deref(),
        if is_run { "info" } else { "warn" },
        is_run,
    )?;
    let socket = socket_path(cli);
    match &cli.command {
        Command::Run { config, web_listen } => host::run(
            &host::RunOptions {
                data_dir: cli.data_dir.clone(),
                config: config.clone(),
                web_listen: web_listen.clone(),
            },
            process_start,
        ),
        Command::Call {
            json,
            timeout,
            command,
            params,
        } => Ok(client_runtime()?.block_on(call::run(&socket, command, params, *json, *timeout))),
        Command::Config { config } => {
            let cfg = config::Config::load(config.as_deref())?;
            print!("{}", cfg.to_toml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            kind,
            max_log_bytes,
        } => worker::run(kind, cli.socket.as_deref(), &cli.data_dir, *max_log_bytes),
        Command::Status { json } => Ok(client_runtime()?.block_on(status::run(&socket, *json))),
        Command::Metrics => Ok(client_runtime()?.block_on(metrics::print(&socket))),
        Command::Analyze { view } => {
            let view = match view {
                AnalyzeView::Blame => analyze::View::Blame,
                AnalyzeView::CriticalChain { daemon } => {
                    analyze::View::CriticalChain(daemon.clone())
                }
                AnalyzeView::Plot => analyze::View::Plot,
            };
            Ok(client_runtime()?.block_on(analyze::run(&socket, view)))
        }
        Command::Events { pattern, count } => {
            Ok(client_runtime()?.block_on(events::run(&socket, pattern, *count)))
        }
        Command::Bench {
            command,
            params,
            connections,
            depth,
            duration,
            warmup,
            startup,
            runs,
            json,
        } => {
            if *startup {
                return bench::run_startup(*runs, *json);
            }
            let params = match serde_json::from_str::<serde_json::Value>(params) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                _ => {
                    eprintln!("error: --params must be a JSON object");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            };
            let opts = bench::LoadOptions {
                command: command.clone(),
                params,
                connections: *connections,
                depth: *depth,
                duration: *duration,
                warmup: *warmup,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(bench::run_load(&socket, opts, *json))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn call_keeps_params_after_the_command() {
        let cli = Cli::try_parse_from([
            "daemonhost",
            "--data-dir",
            "/tmp/x",
            "call",
            "data/list",
            "--limit",
            "5",
            "--json",
        ])
        .expect("parse");
        let Command::Call {
            command,
            params,
            json,
            ..
        } = &cli.command
        else {
            panic!("not call: {cli:?}");
        };
        assert_eq!(command, "data/list");
        assert_eq!(params, &["--limit", "5", "--json"]);
        assert!(!json, "--json after COMMAND is handled by call.rs");
        assert_eq!(socket_path(&cli), Path::new("/tmp/x/daemonhost.sock"));
    }
}
