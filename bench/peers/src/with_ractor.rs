//! ractor: an `Actor` whose message carries an `RpcReplyPort`, asked with `call!`.

use crate::Scenario;
use crate::common::{self, Counts, EchoClient, Exec};
use futures_util::future::join_all;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, call};
use serde_json::Value;
use std::time::{Duration, Instant};

pub struct EchoMsg(Value, RpcReplyPort<Value>);

/// Answers every message with its value. `pre_start` asks each dependency once.
struct Unit;

impl Actor for Unit {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = Vec<ActorRef<EchoMsg>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<EchoMsg>,
        deps: Vec<ActorRef<EchoMsg>>,
    ) -> Result<(), ActorProcessingErr> {
        let v = common::payload();
        for d in deps {
            call!(d, EchoMsg, v.clone())?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<EchoMsg>,
        EchoMsg(v, reply): EchoMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let _ = reply.send(v);
        Ok(())
    }
}

#[derive(Clone)]
pub struct Client(ActorRef<EchoMsg>);

impl EchoClient for Client {
    async fn ask(&self, v: Value) -> Value {
        call!(self.0, EchoMsg, v).expect("echo answered")
    }
}

async fn spawn(deps: Vec<ActorRef<EchoMsg>>) -> (ActorRef<EchoMsg>, JoinHandle<()>) {
    Actor::spawn(None, Unit, deps).await.expect("spawn")
}

async fn stop_all(units: Vec<(ActorRef<EchoMsg>, JoinHandle<()>)>) {
    let mut handles = Vec::with_capacity(units.len());
    for (actor, handle) in units {
        actor.stop(None);
        handles.push(handle);
    }
    for h in handles {
        h.await.expect("actor task");
    }
}

pub async fn ask(scenario: Scenario, k: Counts) -> Value {
    let unit = spawn(Vec::new()).await;
    let result = crate::ask_scenario(scenario, Client(unit.0.clone()), k, Exec::Tokio).await;
    stop_all(vec![unit]).await;
    result
}

/// Spawned in dependency order, each spawn awaited (it returns once `pre_start` is done).
async fn startup_once() -> Duration {
    let graph = common::graph15();
    let mut units: Vec<(ActorRef<EchoMsg>, JoinHandle<()>)> = Vec::with_capacity(graph.len());
    let t0 = Instant::now();
    for (_, deps) in &graph {
        let deps = deps.iter().map(|&d| units[d].0.clone()).collect();
        units.push(spawn(deps).await);
    }
    let elapsed = t0.elapsed();
    stop_all(units).await;
    elapsed
}

pub async fn startup(k: Counts) -> Value {
    common::startup(k, startup_once).await
}

/// No dependencies, so all spawns are awaited at once.
pub async fn idle(k: Counts) -> Value {
    common::idle(
        k,
        Exec::Tokio,
        async |units| join_all((0..units).map(|_| spawn(Vec::new()))).await,
        async |units| stop_all(units).await,
    )
    .await
}
