//! Runtime benchmarks, each with its baseline in the same run:
//! - `ask`: a round trip through the router to an echo daemon carrying a small JSON object,
//!   against raw tokio mpsc + oneshot to an echo task carrying the same value, sequential and
//!   with a window of 1,024 in flight, each timed as one long loop inside one spawned task
//!   (`iter_custom`; target: ≥ 0.6× the baseline's throughput). `scripts/bench_peers.sh`
//!   runs the same scenarios against ractor, kameo and actix;
//! - `startup`: all READY for a 15-daemon graph shaped like the seed's (target: < 1 ms).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use daemonhost_runtime::{
    BoxError, Context, Daemon, DaemonError, DaemonSpec, Request, Runtime, RuntimeBuilder,
    RuntimeConfig,
};
use serde_json::{Value, json};
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

struct Echo {
    spec: DaemonSpec,
}

impl Daemon for Echo {
    type State = ();
    fn spec(&self) -> DaemonSpec {
        self.spec.clone()
    }
    async fn start(&self, _: &Context) -> Result<(), BoxError> {
        Ok(())
    }
    async fn handle(&self, _: &Context, _: &(), req: Request) -> Result<Value, DaemonError> {
        Ok(req.params)
    }
}

fn config() -> RuntimeConfig {
    RuntimeConfig {
        lag_probe: None,
        ..RuntimeConfig::default()
    }
}

fn echo_runtime() -> Runtime {
    let mut b = RuntimeBuilder::new(config());
    b.register(Echo {
        spec: DaemonSpec::new("echo").prefix("echo/").concurrency(256),
    });
    b.build().expect("plan")
}

type RawMsg = (Value, oneshot::Sender<Value>);

fn raw_echo(rt: &tokio::runtime::Runtime) -> mpsc::Sender<RawMsg> {
    let (tx, mut rx) = mpsc::channel::<RawMsg>(1024);
    rt.spawn(async move {
        while let Some((v, reply)) = rx.recv().await {
            let _ = reply.send(v);
        }
    });
    tx
}

fn small() -> Value {
    json!({"collection": "users", "limit": 10, "id": 42})
}

/// Runs `timed` as one spawned task (so it polls on a worker, as a client task would) and returns
/// the time it measured around its own loop.
fn in_one_task(
    rt: &tokio::runtime::Runtime,
    timed: impl Future<Output = Duration> + Send + 'static,
) -> Duration {
    rt.block_on(rt.spawn(timed)).expect("task")
}

/// `iters` asks one after the other, timed around the loop.
async fn sequential<F, Fut>(iters: u64, ask: F) -> Duration
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Value>,
{
    let v = small();
    let t0 = Instant::now();
    for _ in 0..iters {
        black_box(ask(v.clone()).await);
    }
    t0.elapsed()
}

/// Requests kept in flight by [`pipelined`].
const WINDOW: u64 = 1024;

/// `iters` asks with a window of [`WINDOW`] in flight, a new one sent as each is answered.
async fn pipelined<F, Fut>(iters: u64, ask: F) -> Duration
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Value>,
{
    let v = small();
    let t0 = Instant::now();
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    let mut sent = 0;
    while sent < iters.min(WINDOW) {
        inflight.push(ask(v.clone()));
        sent += 1;
    }
    while let Some(r) = futures_util::StreamExt::next(&mut inflight).await {
        black_box(r);
        if sent < iters {
            inflight.push(ask(v.clone()));
            sent += 1;
        }
    }
    t0.elapsed()
}

fn bench_ask(c: &mut Criterion) {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let runtime = echo_runtime();
    tokio_rt.block_on(runtime.start_all());
    let router = runtime.router();
    let raw = raw_echo(&tokio_rt);

    // Each measurement is one long loop inside one spawned task, timed around the loop
    // (`iter_custom`): criterion's `to_async` adds tens of µs to every iteration of both
    // sides, which hid a 4x difference between them.
    let mut g = c.benchmark_group("ask");
    g.throughput(Throughput::Elements(1));
    // Each closure owns its handle (the task it runs in is 'static) and is cloned per sample.
    let raw_ask = move |v: Value| {
        let raw = raw.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            raw.send((v, tx)).await.expect("send");
            rx.await.expect("reply")
        }
    };
    let router_ask = move |v: Value| {
        let router = router.clone();
        async move { router.ask("echo/x", v).await.expect("ok") }
    };
    g.bench_function("raw_mpsc_oneshot/sequential", |b| {
        b.iter_custom(|iters| in_one_task(&tokio_rt, sequential(iters, raw_ask.clone())))
    });
    g.bench_function("router/sequential", |b| {
        b.iter_custom(|iters| in_one_task(&tokio_rt, sequential(iters, router_ask.clone())))
    });
    g.bench_function("raw_mpsc_oneshot/pipelined_1024", |b| {
        b.iter_custom(|iters| in_one_task(&tokio_rt, pipelined(iters, raw_ask.clone())))
    });
    g.bench_function("router/pipelined_1024", |b| {
        b.iter_custom(|iters| in_one_task(&tokio_rt, pipelined(iters, router_ask.clone())))
    });
    g.finish();
    tokio_rt.block_on(runtime.shutdown());
}

/// The seed's Phase 4 graph: 3 critical roots, integration daemons after `data`, lightweight
/// independents, `console` after `logger`.
fn seed_graph() -> Vec<DaemonSpec> {
    let s = |n: &str| DaemonSpec::new(n).prefix(format!("{n}/"));
    vec![
        s("data"),
        s("command"),
        s("events"),
        s("user").requires("data"),
        s("room-membership").requires("data"),
        s("training").requires("data"),
        s("archive").requires("data"),
        s("ai-provider"),
        s("health"),
        s("widget"),
        s("proxy"),
        s("governance").requires("data"),
        s("logger"),
        s("console").requires("logger"),
        s("session"),
    ]
}

fn bench_startup(c: &mut Criterion) {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let mut g = c.benchmark_group("startup");
    g.bench_function("seed_graph_15_daemons_all_ready", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut builder = RuntimeBuilder::new(config());
                for spec in seed_graph() {
                    builder.register(Echo { spec });
                }
                let rt = builder.build().expect("plan");
                let t0 = Instant::now();
                let report = tokio_rt.block_on(rt.start_all());
                total += t0.elapsed();
                assert_eq!(report.ready.len(), 15);
                tokio_rt.block_on(rt.shutdown());
            }
            total
        })
    });
    // Baseline: spawning 15 tokio tasks that each signal a oneshot, awaited in order.
    g.bench_function("baseline_15_tokio_tasks_signal_ready", |b| {
        b.to_async(&tokio_rt).iter(|| async {
            let mut rxs = Vec::with_capacity(15);
            for _ in 0..15 {
                let (tx, rx) = oneshot::channel::<()>();
                tokio::spawn(async move {
                    let _ = tx.send(());
                });
                rxs.push(rx);
            }
            for rx in rxs {
                rx.await.expect("ready");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_ask, bench_startup);
criterion_main!(benches);
