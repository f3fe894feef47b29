//! kameo: an `Actor` with a `Message<Echo>` handler, asked with `ActorRef::ask`. Spawned with
//! the default (bounded, 64) mailbox.

use crate::Scenario;
use crate::common::{self, Counts, EchoClient, Exec};
use kameo::Actor;
use kameo::actor::{ActorRef, Spawn};
use kameo::error::{Infallible, SendError};
use kameo::message::{Context, Message};
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Echo(Value);

/// Answers every `Echo` with its value. `on_start` asks each dependency once.
struct Unit;

impl Actor for Unit {
    type Args = Vec<ActorRef<Unit>>;
    type Error = SendError<Echo, Infallible>;

    async fn on_start(deps: Self::Args, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        let v = common::payload();
        for d in deps {
            d.ask(Echo(v.clone())).await?;
        }
        Ok(Unit)
    }
}

impl Message<Echo> for Unit {
    type Reply = Result<Value, Infallible>;

    async fn handle(&mut self, Echo(v): Echo, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        Ok(v)
    }
}

#[derive(Clone)]
pub struct Client(ActorRef<Unit>);

impl EchoClient for Client {
    async fn ask(&self, v: Value) -> Value {
        self.0.ask(Echo(v)).await.expect("echo answered")
    }
}

async fn stop_all(units: Vec<ActorRef<Unit>>) {
    for u in &units {
        u.stop_gracefully().await.expect("stop");
    }
    for u in &units {
        u.wait_for_shutdown().await;
    }
}

pub async fn ask(scenario: Scenario, k: Counts) -> Value {
    let unit = Unit::spawn(Vec::new());
    unit.wait_for_startup().await;
    let result = crate::ask_scenario(scenario, Client(unit.clone()), k, Exec::Tokio).await;
    stop_all(vec![unit]).await;
    result
}

/// Spawned in dependency order (`spawn` returns at once; an ask to a unit still starting waits
/// in its mailbox), then every unit's startup awaited.
async fn startup_once() -> Duration {
    let graph = common::graph15();
    let mut units: Vec<ActorRef<Unit>> = Vec::with_capacity(graph.len());
    let t0 = Instant::now();
    for (_, deps) in &graph {
        let deps = deps.iter().map(|&d| units[d].clone()).collect();
        units.push(Unit::spawn(deps));
    }
    for u in &units {
        u.wait_for_startup().await;
    }
    let elapsed = t0.elapsed();
    stop_all(units).await;
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
            let units: Vec<ActorRef<Unit>> = (0..units).map(|_| Unit::spawn(Vec::new())).collect();
            for u in &units {
                u.wait_for_startup().await;
            }
            units
        },
        async |units| stop_all(units).await,
    )
    .await
}
