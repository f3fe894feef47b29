//! What every library shares: the counts, the payload, the echo client trait, the scenario
//! loops (written once, generic over the client), the 15-unit graph, and the RSS probe.

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// How much work each scenario does. The defaults are the benchmark's; `PEERS_N` (the request
/// count of the ask scenarios) scales every count down proportionally for smoke runs.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Requests of `ask-seq` (each pass), `ask-pipe` and `ask-fan8` (in total).
    pub n: usize,
    /// Requests sent before anything is timed.
    pub warmup: usize,
    /// Requests in flight at once in `ask-pipe`.
    pub window: usize,
    /// Producer tasks of `ask-fan8`.
    pub producers: usize,
    /// Timed repetitions of `startup15`.
    pub repeats: usize,
    /// Units of `idle10k`.
    pub units: usize,
}

impl Counts {
    pub const FULL_N: usize = 200_000;

    pub fn from_env() -> Counts {
        let n = std::env::var("PEERS_N")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(Self::FULL_N);
        let scale = |full: usize, min: usize| (full * n / Self::FULL_N).max(min);
        Counts {
            n,
            warmup: scale(20_000, 1),
            window: 1024,
            producers: 8,
            repeats: scale(2_000, 10),
            units: scale(10_000, 100),
        }
    }
}

/// The value every request carries and every echo returns.
pub fn payload() -> Value {
    json!({"collection": "users", "limit": 10, "id": 42})
}

/// A handle that asks an echo unit for its answer. Cheap to clone; one per producer task.
pub trait EchoClient: Clone + Send + Sync + 'static {
    /// One request/reply carrying `v`; returns the echoed value (panics on a library error:
    /// an echo that fails is a broken benchmark, not a data point).
    fn ask(&self, v: Value) -> impl Future<Output = Value> + Send;
}

/// Where the scenario's client tasks run: tokio's multi-thread runtime, or actix's arbiter
/// (a tokio `LocalSet` on the current thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    Tokio,
    Actix,
}

impl Exec {
    pub fn spawn<F>(self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Exec::Tokio => tokio::spawn(f),
            Exec::Actix => actix_rt::spawn(f),
        }
    }
}

fn check_echo(answer: &Value, sent: &Value) {
    assert_eq!(answer, sent, "the echo answered something else");
}

async fn warm<C: EchoClient>(c: &C, v: &Value, count: usize) {
    for _ in 0..count {
        let answer = c.ask(v.clone()).await;
        check_echo(&answer, v);
    }
}

fn percentile_us(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_ns.len() - 1) as f64 * q).round() as usize;
    sorted_ns[idx] as f64 / 1000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `ask-seq`: one client, sequential request/reply. A throughput pass with no clock call per
/// iteration, then a separate latency pass timing each request.
pub async fn ask_seq<C: EchoClient>(c: C, k: Counts) -> Value {
    let v = payload();
    warm(&c, &v, k.warmup).await;

    let t0 = Instant::now();
    for _ in 0..k.n {
        black_box(c.ask(v.clone()).await);
    }
    let secs = t0.elapsed().as_secs_f64();

    let mut lat = Vec::with_capacity(k.n);
    for _ in 0..k.n {
        let t = Instant::now();
        black_box(c.ask(v.clone()).await);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    json!({
        "n": k.n,
        "req_s": (k.n as f64 / secs).round(),
        "p50_us": round2(percentile_us(&lat, 0.50)),
        "p99_us": round2(percentile_us(&lat, 0.99)),
    })
}

async fn pipelined<C: EchoClient>(c: &C, v: &Value, total: usize, window: usize) {
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0;
    while sent < total.min(window) {
        inflight.push(c.ask(v.clone()));
        sent += 1;
    }
    while let Some(answer) = inflight.next().await {
        black_box(answer);
        if sent < total {
            inflight.push(c.ask(v.clone()));
            sent += 1;
        }
    }
}

/// `ask-pipe`: one client keeping `window` requests in flight, refilled as each completes.
pub async fn ask_pipe<C: EchoClient>(c: C, k: Counts) -> Value {
    let v = payload();
    warm(&c, &v, 1).await;
    pipelined(&c, &v, k.warmup, k.window).await;
    let t0 = Instant::now();
    pipelined(&c, &v, k.n, k.window).await;
    let secs = t0.elapsed().as_secs_f64();
    json!({
        "n": k.n,
        "window": k.window,
        "req_s": (k.n as f64 / secs).round(),
    })
}

/// `ask-fan8`: `producers` tasks, each sending `n / producers` sequential asks to the same echo.
pub async fn ask_fan<C: EchoClient>(c: C, k: Counts, exec: Exec) -> Value {
    let v = payload();
    warm(&c, &v, k.warmup).await;
    let per = k.n / k.producers;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..k.producers)
        .map(|_| {
            let c = c.clone();
            let v = v.clone();
            exec.spawn(async move {
                for _ in 0..per {
                    black_box(c.ask(v.clone()).await);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("producer task");
    }
    let secs = t0.elapsed().as_secs_f64();
    let total = per * k.producers;
    json!({
        "n": total,
        "producers": k.producers,
        "req_s": (total as f64 / secs).round(),
    })
}

/// The 15-unit graph, in dependency order (every unit's dependencies come before it):
/// 3 roots; 5 mids, mid `i` needing root `i % 3`; 7 leaves, leaf `j` needing mids `j % 5` and
/// `(j + 1) % 5`. Each entry is (name, indices of its dependencies).
pub fn graph15() -> Vec<(String, Vec<usize>)> {
    let mut g = Vec::with_capacity(15);
    for i in 0..3 {
        g.push((format!("root{i}"), vec![]));
    }
    for i in 0..5 {
        g.push((format!("mid{i}"), vec![i % 3]));
    }
    for j in 0..7 {
        g.push((format!("leaf{j}"), vec![3 + j % 5, 3 + (j + 1) % 5]));
    }
    g
}

/// `startup15`: run `once` (which builds a fresh graph, times start signal → all 15 ready, and
/// tears it down outside the timed region) `repeats` times after a few untimed ones.
pub async fn startup<F: AsyncFnMut() -> Duration>(k: Counts, mut once: F) -> Value {
    for _ in 0..(k.repeats / 10).max(1) {
        once().await;
    }
    let mut us: Vec<f64> = Vec::with_capacity(k.repeats);
    for _ in 0..k.repeats {
        us.push(once().await.as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    json!({
        "repeats": k.repeats,
        "units": 15,
        "p50_us": round2(us[(us.len() - 1) / 2]),
        "min_us": round2(us[0]),
    })
}

/// The resident set size: resident pages (`/proc/self/statm`, second field) × the page size.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident pages in /proc/self/statm");
    pages * page_size()
}

/// The page size, from the auxiliary vector the kernel handed the process (`AT_PAGESZ`), so no
/// `unsafe` call is needed; 4096 if it cannot be read.
fn page_size() -> u64 {
    const AT_PAGESZ: u64 = 6;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 4096;
    };
    auxv.chunks_exact(16)
        .map(|pair| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
            (word(&pair[..8]), word(&pair[8..]))
        })
        .find(|&(key, _)| key == AT_PAGESZ)
        .map_or(4096, |(_, value)| value)
}

/// Give freed heap memory back to the kernel.
///
/// glibc keeps freed memory in its arenas (per-thread arenas especially) instead of returning
/// it to the kernel, so without this the "RSS kept after stop" figure would measure the
/// allocator's free lists rather than what the library still holds. It is called the same way,
/// at the same points, for every library.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no pointer
    // from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `idle10k`: RSS before, spawn `units` idle echo units and wait until every one is ready to
/// serve (timed), RSS after; then stop them all, drop the library's runtime, trim the heap and
/// read RSS again. The executor (tokio runtime or actix system) is up and warmed by the caller's
/// [`warm_executor`] before the first reading, so its own threads are not counted.
pub async fn idle<T>(
    k: Counts,
    exec: Exec,
    spawn: impl AsyncFnOnce(usize) -> T,
    stop: impl AsyncFnOnce(T),
) -> Value {
    warm_executor(exec).await;
    trim_heap();
    let before = rss_bytes();
    let t0 = Instant::now();
    let held = spawn(k.units).await;
    let ready = t0.elapsed();
    let after = rss_bytes();
    stop(held).await;
    trim_heap();
    let after_drop = rss_bytes();
    let delta = after as i64 - before as i64;
    json!({
        "units": k.units,
        "ready_ms": round2(ready.as_secs_f64() * 1000.0),
        "bytes_per_unit": (delta as f64 / k.units as f64).round(),
        "rss_kept_kib": (after_drop as i64 - before as i64) / 1024,
        "rss_before_kib": before / 1024,
        "rss_after_kib": after / 1024,
    })
}

/// Spin up the executor's threads and first allocations: a few trivial tasks, joined.
pub async fn warm_executor(exec: Exec) {
    for _ in 0..4 {
        let tasks: Vec<_> = (0..64u64)
            .map(|i| exec.spawn(async move { black_box(vec![i; 64]).len() }))
            .collect();
        for t in tasks {
            t.await.expect("warm-up task");
        }
        tokio::task::yield_now().await;
    }
}
