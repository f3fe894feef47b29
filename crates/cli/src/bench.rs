//! `daemonhost bench`: load a running host the way `redis-benchmark` / `nats bench` do.
//!
//! **Load mode** (default): N connections, each keeping `depth` requests in flight
//! (pipelining), for a duration after a warmup; reports req/s and latency percentiles.
//! `--connections 1 --depth 1` is the sequential round trip. The load generator does not use
//! the reference [`Client`](daemonhost_protocol::Client): one task per connection writes
//! requests and reads responses itself with no locks, channels or per-call tasks, so on a small
//! machine the client costs as little CPU as possible and the numbers describe the host. Frames
//! are still encoded and decoded with the protocol crate, so every answer is checked.
//!
//! Load mode also reports the CPU time per request of the host (`server_cpu_us_per_req`) and
//! of the bench itself (`client_cpu_us_per_req`), from `/proc` at the start and the end of the
//! measured window ([`cpu`]: per-thread `schedstat`, else `stat`). The host's pid comes from
//! `health/metrics` (`process.pid`) and must match the socket's peer credentials: a host in
//! another pid namespace or behind a relay to another machine, or a `/proc/PID` that cannot be
//! read, makes the figure "unavailable" (null in `--json`), never a guess. It is the host
//! process alone: its worker processes (`daemonhost worker logger|search`) are not counted.
//!
//! **Startup mode** (`--startup`): spawns `daemonhost run` from this executable in a fresh temp
//! data dir, tries to connect in a tight loop from the instant of spawning, sends `ping` and
//! measures spawn → socket accepting → first `ping` answered; then SIGTERMs the host and
//! checks it exits 0. Repeated `--runs` times; min / p50 / max are reported.
//!
//! Latencies go into a log-linear histogram (32 buckets per power of two, about 3 % precision)
//! of fixed size: memory does not grow with the number of requests.

mod cpu;

use crate::call::EXIT_FAILED;
use anyhow::{Context as _, bail};
use bytes::{Buf, BytesMut};
use cpu::{CpuDelta, CpuReading};
use daemonhost_protocol::{Client, Frame, HEADER_LEN, Request, write_frame};
use parking_lot::{Condvar, Mutex};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Load-mode settings.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Command to send.
    pub command: String,
    /// Its params.
    pub params: Value,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    /// Measured duration.
    pub duration: Duration,
    /// Unmeasured warmup before it.
    pub warmup: Duration,
}

// ---------------------------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------------------------

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A fixed-size log-linear histogram of nanosecond values.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    min: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            min: u64::MAX,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = e - SUB_BITS;
    let sub = (v >> shift) as usize & (SUB - 1);
    ((shift as usize + 1) << SUB_BITS) | sub
}

/// The lowest value of bucket `i` and its width.
fn bucket_range(i: usize) -> (u64, u64) {
    let row = i >> SUB_BITS;
    let sub = (i & (SUB - 1)) as u64;
    if row == 0 {
        (sub, 1)
    } else {
        let shift = row as u32 - 1;
        ((SUB as u64 | sub) << shift, 1u64 << shift)
    }
}

impl Histogram {
    /// Record one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.min = self.min.min(v);
    }

    /// Add another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.min = self.min.min(other.min);
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1): the middle of its bucket, clamped to the observed
    /// range. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bucket_range(i);
                return (lo + width / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }
}

// ---------------------------------------------------------------------------------------------
// Load mode
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ConnResult {
    hist: Histogram,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Slot bits in a request id: the low bits say which in-flight slot it used.
const SLOT_BITS: u32 = 20;

async fn drive(
    socket: PathBuf,
    opts: LoadOptions,
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<ConnResult> {
    let mut stream = UnixStream::connect(&socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let depth = opts.depth;
    let mut sent_at = vec![start; depth];
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut seq: u64 = 0;
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut rbuf = BytesMut::with_capacity(256 * 1024);
    let mut res = ConnResult::default();
    let mut frame = Frame::Request(Request::new(0, opts.command.clone(), opts.params.clone()));
    let drain_deadline = stop_at + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        let issuing = now < stop_at;
        if issuing {
            while let Some(slot) = free.pop() {
                seq += 1;
                if let Frame::Request(r) = &mut frame {
                    r.id = (seq << SLOT_BITS) | slot as u64;
                }
                write_frame(&mut wbuf, &frame, usize::MAX)?;
                sent_at[slot] = Instant::now();
            }
            stream.write_all(&wbuf).await?;
            wbuf.clear();
        } else if free.len() == depth || now > drain_deadline {
            break;
        }
        let n = stream.read_buf(&mut rbuf).await?;
        if n == 0 {
            bail!("the host closed the connection");
        }
        let got = Instant::now();
        while rbuf.len() >= HEADER_LEN {
            let len = u32::from_be_bytes([rbuf[0], rbuf[1], rbuf[2], rbuf[3]]) as usize;
            if rbuf.len() < HEADER_LEN + len {
                rbuf.reserve(HEADER_LEN + len - rbuf.len());
                break;
            }
            rbuf.advance(HEADER_LEN);
            let body = rbuf.split_to(len);
            let resp = match Frame::decode(&body) {
                Ok(Frame::Response(r)) => r,
                Ok(other) => bail!("unexpected frame from the host: {other:?}"),
                Err(bad) => bail!("undecodable frame from the host: {bad}"),
            };
            let Some(id) = resp.id else {
                bail!("the host answered with id null: {:?}", resp.outcome);
            };
            let slot = (id & ((1 << SLOT_BITS) - 1)) as usize;
            if slot >= depth {
                bail!("response id {id} matches no request");
            }
            if sent_at[slot] >= measure_from {
                let ns = got.duration_since(sent_at[slot]).as_nanos();
                res.hist.record(u64::try_from(ns).unwrap_or(u64::MAX));
                match &resp.outcome {
                    Ok(_) => res.ok += 1,
                    Err(e) => {
                        res.errors += 1;
                        res.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            free.push(slot);
        }
    }
    Ok(res)
}

/// Run load mode against `socket` and print the result.
pub async fn run_load(
    socket: &Path,
    opts: LoadOptions,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if opts.connections == 0 || opts.depth == 0 || opts.depth >= (1 << SLOT_BITS) {
        bail!(
            "--connections must be at least 1 and --depth between 1 and {}",
            (1 << SLOT_BITS) - 1
        );
    }
    // Fail fast, with the standard message and exit code, when no host is running.
    let client = match crate::call::connect(socket).await {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let host_pid = host_pid(&client, socket).await;
    drop(client);
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let stop_at = measure_from + opts.duration;
    // The CPU of the host and of this process at the start and the end of the measured window,
    // read by a task of the main runtime while the connections run (each read takes well under
    // a millisecond; /proc is not a disk).
    let host_proc = host_pid
        .as_ref()
        .ok()
        .map(|pid| PathBuf::from(format!("/proc/{pid}")));
    // A connection thread that has drained stays alive until the last reading: /proc lists
    // live threads only, and a thread's schedstat goes with it.
    let gate = Arc::new(Gate::default());
    let cpu_task = tokio::spawn({
        let gate = Arc::clone(&gate);
        async move {
            let read = |proc_dir: Option<&Path>| proc_dir.map(CpuReading::read);
            let own = Path::new("/proc/self");
            tokio::time::sleep_until(measure_from.into()).await;
            let first = (read(host_proc.as_deref()), CpuReading::read(own));
            tokio::time::sleep_until(stop_at.into()).await;
            let last = (read(host_proc.as_deref()), CpuReading::read(own));
            gate.open();
            (first, last)
        }
    });
    // One OS thread with a single-threaded runtime per connection: no work stealing and no
    // cross-thread wake-ups on the client side, so its overhead stays small and stable.
    let mut threads = Vec::with_capacity(opts.connections);
    for i in 0..opts.connections {
        let socket = socket.to_path_buf();
        let opts = opts.clone();
        let gate = Arc::clone(&gate);
        let t = std::thread::Builder::new()
            .name(format!("bench-{i}"))
            .spawn(move || -> anyhow::Result<ConnResult> {
                let res = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(drive(socket, opts, start, measure_from, stop_at))?;
                // After the drain deadline of `drive`, in case the readings' task is gone.
                gate.wait(stop_at + Duration::from_secs(15));
                Ok(res)
            })
            .context("cannot start a benchmark thread")?;
        threads.push(t);
    }
    let mut total = ConnResult::default();
    for t in threads {
        let r = tokio::task::spawn_blocking(move || t.join())
            .await
            .context("joining a benchmark thread")?
            .map_err(|_| anyhow::anyhow!("a benchmark connection panicked"))??;
        total.hist.merge(&r.hist);
        total.ok += r.ok;
        total.errors += r.errors;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    let ((host_a, self_a), (host_b, self_b)) =
        cpu_task.await.context("the CPU readings' task failed")?;
    let requests = total.hist.len();
    let server_cpu = host_pid.and_then(|pid| {
        let unreadable = || format!("cannot read /proc/{pid} (not this machine's process?)");
        let a = host_a.flatten().ok_or_else(unreadable)?;
        let b = host_b.flatten().ok_or_else(unreadable)?;
        Ok((pid, cpu_figure(a.delta(&b), opts.duration, requests)?))
    });
    let client_cpu = match (self_a, self_b) {
        (Some(a), Some(b)) => cpu_figure(a.delta(&b), opts.duration, requests),
        _ => Err("cannot read /proc/self".to_owned()),
    };
    let secs = opts.duration.as_secs_f64();
    let rate = total.hist.len() as f64 / secs;
    let us = |ns: u64| ns as f64 / 1000.0;
    let h = &total.hist;
    if json_out {
        println!(
            "{}",
            json!({
                "command": opts.command,
                "connections": opts.connections,
                "depth": opts.depth,
                "duration_s": secs,
                "requests": h.len(),
                "errors": total.errors,
                "req_per_s": rate.round(),
                "p50_us": us(h.quantile(0.50)),
                "p99_us": us(h.quantile(0.99)),
                "p999_us": us(h.quantile(0.999)),
                "max_us": us(h.max()),
                "server_pid": server_cpu.as_ref().ok().map(|(pid, _)| pid),
                "server_cpu_us_per_req": server_cpu.as_ref().ok().map(|(_, f)| round3(f.us_per_req)),
                "server_cpu_cores": server_cpu.as_ref().ok().map(|(_, f)| round3(f.delta.cores())),
                "server_cpu_source": server_cpu.as_ref().ok().map(|(_, f)| f.delta.source.name()),
                "server_cpu_unavailable": server_cpu.as_ref().err(),
                "client_cpu_us_per_req": client_cpu.as_ref().ok().map(|f| round3(f.us_per_req)),
                "client_cpu_cores": client_cpu.as_ref().ok().map(|f| round3(f.delta.cores())),
                "client_cpu_source": client_cpu.as_ref().ok().map(|f| f.delta.source.name()),
                "client_cpu_unavailable": client_cpu.as_ref().err(),
            })
        );
    } else {
        println!(
            "bench {}: {} connection{} × depth {}, {:.1} s measured after {:.1} s warmup",
            opts.command,
            opts.connections,
            if opts.connections == 1 { "" } else { "s" },
            opts.depth,
            secs,
            opts.warmup.as_secs_f64()
        );
        println!(
            "  {} requests ({} errors) · {:.0} req/s",
            h.len(),
            total.errors,
            rate
        );
        println!(
            "  latency p50 {:.1} µs · p99 {:.1} µs · p99.9 {:.1} µs · max {:.1} µs",
            us(h.quantile(0.50)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(h.max())
        );
        match &server_cpu {
            Ok((pid, f)) => println!(
                "  server CPU {:.2} µs/req · {:.2} cores (pid {pid}, {})",
                f.us_per_req,
                f.delta.cores(),
                f.delta.source.name()
            ),
            Err(why) => println!("  server CPU unavailable: {why}"),
        }
        match &client_cpu {
            Ok(f) => println!(
                "  client CPU {:.2} µs/req · {:.2} cores (this process, {})",
                f.us_per_req,
                f.delta.cores(),
                f.delta.source.name()
            ),
            Err(why) => println!("  client CPU unavailable: {why}"),
        }
        if let Some(e) = &total.first_error {
            println!("  first error: {e}");
        }
    }
    Ok(if total.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// Closed until the measured window's last CPU reading is taken.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock() = true;
        self.opened.notify_all();
    }

    /// Until the gate opens, or `deadline`.
    fn wait(&self, deadline: Instant) {
        let mut open = self.open.lock();
        while !*open {
            if self.opened.wait_until(&mut open, deadline).timed_out() {
                return;
            }
        }
    }
}

/// A process's CPU over the measured window.
#[derive(Debug, Clone, Copy)]
struct CpuFigure {
    delta: CpuDelta,
    us_per_req: f64,
}

fn cpu_figure(
    delta: Option<CpuDelta>,
    window: Duration,
    requests: u64,
) -> Result<CpuFigure, String> {
    let delta = delta.ok_or("no CPU source was readable at both ends of the window")?;
    let us_per_req = delta
        .us_per_request(window, requests)
        .ok_or("no request was answered in the window")?;
    Ok(CpuFigure { delta, us_per_req })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The host's pid as this machine sees it, or why there is none.
///
/// The host says its pid in `health/metrics` (`process.pid`), in its own pid namespace. The
/// kernel gives the socket's peer pid in ours: the two differ when the host runs in another
/// namespace (a container) or the socket is a relay (e.g. socat to another machine), and then
/// `/proc/PID` here is some other process or none.
async fn host_pid(client: &Client, socket: &Path) -> Result<u32, String> {
    let v = client
        .call("health/metrics", Value::Null, Some(Duration::from_secs(10)))
        .await
        .map_err(|e| format!("health/metrics failed: {e}"))?;
    let pid = v["process"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or("health/metrics gave no process.pid")?;
    let peer = UnixStream::connect(socket)
        .await
        .and_then(|s| s.peer_cred())
        .ok()
        .and_then(|c| c.pid());
    match peer {
        Some(p) if i64::from(p) != i64::from(pid) => Err(format!(
            "the host says it is pid {pid} but the socket's peer is pid {p} here \
             (another pid namespace or machine)"
        )),
        _ => Ok(pid),
    }
}

// ---------------------------------------------------------------------------------------------
// Startup mode
// ---------------------------------------------------------------------------------------------

/// One spawn → first ping measurement.
#[derive(Debug, Clone, Copy)]
struct StartupSample {
    connected: Duration,
    first_ping: Duration,
}

fn ping_frame() -> anyhow::Result<BytesMut> {
    let mut buf = BytesMut::new();
    write_frame(
        &mut buf,
        &Frame::Request(Request::new(1, "ping", Value::Null)),
        usize::MAX,
    )?;
    Ok(buf)
}

fn startup_once(exe: &Path) -> anyhow::Result<StartupSample> {
    let tmp = tempfile::Builder::new()
        .prefix("dhb")
        .tempdir_in("/tmp")
        .context("cannot create a temp dir")?;
    let sock = tmp.path().join(crate::host::SOCKET_NAME);
    let ping = ping_frame()?;
    let t0 = Instant::now();
    let mut child = std::process::Command::new(exe)
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["--log-level", "warn", "run"])
        // Any free port: runs must not collide with each other or with a host on 9000.
        .args(["--web-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot spawn {}", exe.display()))?;
    let result = (|| -> anyhow::Result<StartupSample> {
        let mut s = loop {
            match std::os::unix::net::UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if t0.elapsed() < Duration::from_secs(10) => std::thread::yield_now(),
                Err(e) => return Err(e).context("the host did not accept within 10 s"),
            }
        };
        let connected = t0.elapsed();
        s.write_all(&ping)?;
        let mut header = [0u8; HEADER_LEN];
        s.read_exact(&mut header)?;
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        s.read_exact(&mut body)?;
        let first_ping = t0.elapsed();
        match Frame::decode(&body) {
            Ok(Frame::Response(r)) if r.is_success() => {}
            other => bail!("unexpected answer to ping: {other:?}"),
        }
        Ok(StartupSample {
            connected,
            first_ping,
        })
    })();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().context("waiting for the host")?;
    let sample = result?;
    if !status.success() {
        bail!("the host exited with {status} after SIGTERM");
    }
    if sock.exists() {
        bail!("the host left its socket behind after SIGTERM");
    }
    Ok(sample)
}

/// Run startup mode `runs` times and print min / p50 / max.
pub fn run_startup(runs: usize, json_out: bool) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        samples.push(startup_once(&exe)?);
    }
    let stats = |f: fn(&StartupSample) -> Duration| {
        let mut v: Vec<f64> = samples
            .iter()
            .map(|s| f(s).as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let c = stats(|s| s.connected);
    let p = stats(|s| s.first_ping);
    if json_out {
        println!(
            "{}",
            json!({
                "runs": samples.len(),
                "connect_ms": {"min": c.0, "p50": c.1, "max": c.2},
                "first_ping_ms": {"min": p.0, "p50": p.1, "max": p.2},
            })
        );
    } else {
        println!(
            "startup: {} runs (spawn `daemonhost run` in a fresh data dir, connect in a tight loop, ping)",
            samples.len()
        );
        println!(
            "  spawn → socket accepts:  min {:.2} ms · p50 {:.2} ms · max {:.2} ms",
            c.0, c.1, c.2
        );
        println!(
            "  spawn → first ping:      min {:.2} ms · p50 {:.2} ms · max {:.2} ms",
            p.0, p.1, p.2
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_roundtrip() {
        for v in [0u64, 1, 31, 32, 33, 63, 64, 65, 1000, 123_456, u64::MAX / 3] {
            let (lo, width) = bucket_range(bucket(v));
            assert!(
                lo <= v && v < lo.saturating_add(width),
                "{v}: [{lo}, +{width})"
            );
            assert!(width <= (v / 16).max(1), "{v}: width {width} is too coarse");
        }
        assert!(bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.04, "{p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.04, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max(), 1_000_000);
        let mut other = Histogram::default();
        other.record(5);
        h.merge(&other);
        assert_eq!(h.len(), 1001);
        assert_eq!(h.quantile(0.0), 5);
    }
}
