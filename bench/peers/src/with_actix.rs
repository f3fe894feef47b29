//! actix: an `Actor` with a `Handler<Echo>`, asked with `Addr::send`, on actix's own System
//! (one arbiter: the current thread). Default mailbox (16).
//!
//! `Actor::start` returns the address before `started` has run, so a unit says it is ready on a
//! oneshot at the end of its start; and since actix has no "wait for this actor to stop", each
//! unit holds a clone of a `done` sender that is dropped with it, so dropping the addresses and
//! then waiting for the `done` channel to close waits for every unit to be gone.

use crate::Scenario;
use crate::common::{self, Counts, EchoClient, Exec};
use actix::prelude::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub struct Echo(Value);

impl Message for Echo {
    type Result = Value;
}

/// Answers every `Echo` with its value. `started` asks each dependency once (the actor takes no
/// message until that is done), then signals `ready`.
struct Unit {
    deps: Vec<Addr<Unit>>,
    ready: Option<oneshot::Sender<()>>,
    _done: Option<mpsc::Sender<()>>,
}

impl Unit {
    fn new(deps: Vec<Addr<Unit>>, ready: oneshot::Sender<()>, done: mpsc::Sender<()>) -> Self {
        Unit {
            deps,
            ready: Some(ready),
            _done: Some(done),
        }
    }
}

impl Actor for Unit {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let deps = std::mem::take(&mut self.deps);
        let ready = self.ready.take();
        ctx.wait(
            async move {
                let v = common::payload();
                for d in deps {
                    d.send(Echo(v.clone())).await.expect("dependency answered");
                }
                if let Some(ready) = ready {
                    let _ = ready.send(());
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Echo> for Unit {
    type Result = MessageResult<Echo>;

    fn handle(&mut self, Echo(v): Echo, _: &mut Context<Self>) -> MessageResult<Echo> {
        MessageResult(v)
    }
}

#[derive(Clone)]
pub struct Client(Addr<Unit>);

impl EchoClient for Client {
    async fn ask(&self, v: Value) -> Value {
        self.0.send(Echo(v)).await.expect("echo answered")
    }
}

/// Units started one after another (dependencies first); they become ready when their
/// `started` work is done.
struct Units {
    addrs: Vec<Addr<Unit>>,
    readies: Vec<oneshot::Receiver<()>>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

impl Units {
    fn new(capacity: usize) -> Self {
        let (done_tx, done_rx) = mpsc::channel(1);
        Units {
            addrs: Vec::with_capacity(capacity),
            readies: Vec::with_capacity(capacity),
            done_tx,
            done_rx,
        }
    }

    fn start(&mut self, deps: Vec<Addr<Unit>>) {
        let (ready_tx, ready_rx) = oneshot::channel();
        self.addrs
            .push(Unit::new(deps, ready_tx, self.done_tx.clone()).start());
        self.readies.push(ready_rx);
    }

    async fn all_ready(&mut self) {
        for r in self.readies.drain(..) {
            r.await.expect("unit ready");
        }
    }

    /// Drop every address, then wait until every unit has stopped and been dropped.
    async fn stop_all(self) {
        let Units {
            addrs,
            done_tx,
            mut done_rx,
            ..
        } = self;
        drop(addrs);
        drop(done_tx);
        assert!(done_rx.recv().await.is_none());
    }
}

pub async fn ask(scenario: Scenario, k: Counts) -> Value {
    let mut units = Units::new(1);
    units.start(Vec::new());
    units.all_ready().await;
    let client = Client(units.addrs[0].clone());
    let result = crate::ask_scenario(scenario, client, k, Exec::Actix).await;
    units.stop_all().await;
    result
}

async fn startup_once() -> Duration {
    let graph = common::graph15();
    let mut units = Units::new(graph.len());
    let t0 = Instant::now();
    for (_, deps) in &graph {
        let deps = deps.iter().map(|&d| units.addrs[d].clone()).collect();
        units.start(deps);
    }
    units.all_ready().await;
    let elapsed = t0.elapsed();
    units.stop_all().await;
    elapsed
}

pub async fn startup(k: Counts) -> Value {
    common::startup(k, startup_once).await
}

pub async fn idle(k: Counts) -> Value {
    common::idle(
        k,
        Exec::Actix,
        async |n| {
            let mut units = Units::new(n);
            for _ in 0..n {
                units.start(Vec::new());
            }
            units.all_ready().await;
            units
        },
        async |units| units.stop_all().await,
    )
    .await
}
