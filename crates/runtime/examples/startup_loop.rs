//! A plain-binary loop for the 15-daemon startup graph (3 roots, 5 that each need one root, 7
//! that each need two of those 5; each `start` asks its dependencies), timed from the start
//! signal to all READY, as `bench/peers` times it, but without the other libraries: the quick
//! check (and the profiler's target) while working on startup.
//!
//! `cargo run --release -p daemonhost-runtime --example startup_loop [REPEATS]`
//!
//! `STARTUP_LOOP_RT=current` runs on a current-thread runtime; `STARTUP_LOOP_POOL=0` builds each
//! runtime without CPU pool threads (so a profile shows the start, not thread creation).

use daemonhost_runtime::{
    BoxError, Context, Daemon, DaemonError, DaemonSpec, PoolConfig, Request, RuntimeBuilder,
    RuntimeConfig,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Unit {
    spec: DaemonSpec,
    deps: Vec<String>,
}

impl Daemon for Unit {
    type State = ();
    fn spec(&self) -> DaemonSpec {
        self.spec.clone()
    }
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        for command in &self.deps {
            ctx.router()
                .ask(
                    command,
                    json!({"collection": "users", "limit": 10, "id": 42}),
                )
                .await?;
        }
        Ok(())
    }
    async fn handle(&self, _: &Context, _: &(), req: Request) -> Result<Value, DaemonError> {
        Ok(req.params)
    }
}

fn graph15() -> Vec<(String, Vec<usize>)> {
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

async fn once(no_pool: bool) -> Duration {
    let graph = graph15();
    let mut config = RuntimeConfig {
        lag_probe: None,
        ..RuntimeConfig::default()
    };
    if no_pool {
        config.pool = PoolConfig::with_threads(0);
    }
    let mut b = RuntimeBuilder::new(config);
    for (name, deps) in &graph {
        let mut spec = DaemonSpec::new(name.as_str()).prefix(format!("{name}/"));
        for &d in deps {
            spec = spec.requires(graph[d].0.as_str());
        }
        b.register(Unit {
            spec,
            deps: deps.iter().map(|&d| format!("{}/x", graph[d].0)).collect(),
        });
    }
    let runtime = b.build().expect("plan");
    let t0 = Instant::now();
    let report = runtime.start_all().await;
    let elapsed = t0.elapsed();
    assert_eq!(report.ready.len(), 15, "not all ready: {:?}", report.failed);
    runtime.shutdown().await;
    elapsed
}

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let no_pool = std::env::var("STARTUP_LOOP_POOL").as_deref() == Ok("0");
    let rt = if std::env::var("STARTUP_LOOP_RT").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio")
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio")
    };
    let mut us: Vec<f64> = rt.block_on(async move {
        tokio::spawn(async move {
            for _ in 0..(repeats / 10).max(1) {
                once(no_pool).await;
            }
            let mut us = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                us.push(once(no_pool).await.as_secs_f64() * 1e6);
            }
            us
        })
        .await
        .expect("loop")
    });
    us.sort_by(f64::total_cmp);
    println!(
        "startup15: p50 {:.1} us, min {:.1} us, p90 {:.1} us over {repeats}",
        us[(us.len() - 1) / 2],
        us[0],
        us[(us.len() - 1) * 9 / 10]
    );
}
