//! The baseline: a tokio task serving a bounded mpsc (1024), one oneshot per request.

use crate::Scenario;
use crate::common::{self, Counts, EchoClient, Exec};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

type Msg = (Value, oneshot::Sender<Value>);

#[derive(Clone)]
pub struct Client(mpsc::Sender<Msg>);

impl EchoClient for Client {
    async fn ask(&self, v: Value) -> Value {
        let (tx, rx) = oneshot::channel();
        self.0.send((v, tx)).await.expect("echo task alive");
        rx.await.expect("echo answered")
    }
}

async fn serve(mut rx: mpsc::Receiver<Msg>) {
    while let Some((v, reply)) = rx.recv().await {
        let _ = reply.send(v);
    }
}

/// An echo task; its loop ends when every sender is dropped.
pub async fn ask(scenario: Scenario, k: Counts) -> Value {
    let (tx, rx) = mpsc::channel::<Msg>(1024);
    let task: JoinHandle<()> = tokio::spawn(serve(rx));
    let result = crate::ask_scenario(scenario, Client(tx), k, Exec::Tokio).await;
    task.await.expect("echo task");
    result
}

/// One unit of the graph: its address exists before it runs; its task asks each dependency
/// once, says it is ready, then serves.
async fn startup_once() -> Duration {
    let graph = common::graph15();
    let (txs, rxs): (Vec<_>, Vec<_>) = graph.iter().map(|_| mpsc::channel::<Msg>(1024)).unzip();
    let mut handles = Vec::with_capacity(graph.len());
    let mut readies = Vec::with_capacity(graph.len());
    let t0 = Instant::now();
    for ((_, deps), rx) in graph.iter().zip(rxs) {
        let deps: Vec<Client> = deps.iter().map(|&d| Client(txs[d].clone())).collect();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        readies.push(ready_rx);
        handles.push(tokio::spawn(async move {
            let v = common::payload();
            for d in deps {
                d.ask(v.clone()).await;
            }
            let _ = ready_tx.send(());
            serve(rx).await;
        }));
    }
    for r in readies {
        r.await.expect("unit ready");
    }
    let elapsed = t0.elapsed();
    drop(txs);
    for h in handles {
        h.await.expect("unit task");
    }
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
            let mut txs = Vec::with_capacity(units);
            let mut handles = Vec::with_capacity(units);
            let mut readies = Vec::with_capacity(units);
            for _ in 0..units {
                let (tx, rx) = mpsc::channel::<Msg>(1024);
                let (ready_tx, ready_rx) = oneshot::channel::<()>();
                handles.push(tokio::spawn(async move {
                    let _ = ready_tx.send(());
                    serve(rx).await;
                }));
                txs.push(tx);
                readies.push(ready_rx);
            }
            for r in readies {
                r.await.expect("unit ready");
            }
            (txs, handles)
        },
        async |(txs, handles)| {
            drop(txs);
            for h in handles {
                h.await.expect("unit task");
            }
        },
    )
    .await
}
