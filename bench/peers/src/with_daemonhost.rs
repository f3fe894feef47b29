//! daemonhost's in-process runtime: echo daemons with the default spec (only a prefix added),
//! asked through the router.

use crate::Scenario;
use crate::common::{self, Counts, EchoClient, Exec};
use daemonhost_runtime::{
    BoxError, Context, Daemon, DaemonError, DaemonSpec, Request, Router, RuntimeBuilder,
    RuntimeConfig,
};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Answers every request with its params. `start` asks each of `deps` (a command each) once.
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
        let v = common::payload();
        for command in &self.deps {
            ctx.router().ask(command, v.clone()).await?;
        }
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

fn echo_unit(name: &str) -> Unit {
    Unit {
        spec: DaemonSpec::new(name).prefix(format!("{name}/")),
        deps: Vec::new(),
    }
}

#[derive(Clone)]
pub struct Client(pub Router);

impl EchoClient for Client {
    async fn ask(&self, v: Value) -> Value {
        self.0.ask("echo/x", v).await.expect("echo answered")
    }
}

/// The runtime with one echo daemon, started.
pub async fn ask(scenario: Scenario, k: Counts) -> Value {
    let mut b = RuntimeBuilder::new(config());
    b.register(echo_unit("echo"));
    let runtime = b.build().expect("plan");
    let report = runtime.start_all().await;
    assert_eq!(report.ready.len(), 1, "echo not ready: {:?}", report.failed);
    let result = crate::ask_scenario(scenario, Client(runtime.router()), k, Exec::Tokio).await;
    runtime.shutdown().await;
    result
}

async fn startup_once() -> Duration {
    let graph = common::graph15();
    let mut b = RuntimeBuilder::new(config());
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

pub async fn startup(k: Counts) -> Value {
    common::startup(k, startup_once).await
}

pub async fn idle(k: Counts) -> Value {
    common::idle(
        k,
        Exec::Tokio,
        async |units| {
            let mut b = RuntimeBuilder::new(config());
            for i in 0..units {
                b.register(echo_unit(&format!("echo{i}")));
            }
            let runtime = b.build().expect("plan");
            let report = runtime.start_all().await;
            assert_eq!(
                report.ready.len(),
                units,
                "not all ready: {:?}",
                report.failed
            );
            runtime
        },
        async |runtime| {
            let report = runtime.shutdown().await;
            assert_eq!(report.live_tasks, 0);
            drop(runtime);
        },
    )
    .await
}
