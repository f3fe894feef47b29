//! A plain-binary loop for the in-process ask, against raw tokio mpsc + oneshot in the same
//! process (the quick check used while working on the hot path; `scripts/bench_peers.sh` runs
//! the full side-by-side with the actor crates). No harness: each figure is one long loop inside
//! one spawned task, timed with `Instant` around the loop.
//!
//! `cargo run --release -p daemonhost-runtime --example ask_loop [N] [ROUNDS] [seq]`
//!
//! With `seq` it runs only the sequential daemonhost loop, with `raw` only the raw tokio one
//! (for a profiler).

use daemonhost_runtime::{
    BoxError, Context, Daemon, DaemonError, DaemonSpec, Request, Router, RuntimeBuilder,
    RuntimeConfig,
};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

struct Echo;

impl Daemon for Echo {
    type State = ();
    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("echo").prefix("echo/")
    }
    async fn start(&self, _: &Context) -> Result<(), BoxError> {
        Ok(())
    }
    async fn handle(&self, _: &Context, _: &(), req: Request) -> Result<Value, DaemonError> {
        Ok(req.params)
    }
}

fn small() -> Value {
    json!({"collection": "users", "limit": 10, "id": 42})
}

type RawMsg = (Value, oneshot::Sender<Value>);

/// `n` sequential raw round trips (mpsc + oneshot) from one spawned task, timed inside it.
async fn raw_seq(tx: mpsc::Sender<RawMsg>, v: Value, n: u64) -> Duration {
    tokio::spawn(async move {
        let t0 = Instant::now();
        for _ in 0..n {
            let (otx, orx) = oneshot::channel();
            tx.send((v.clone(), otx)).await.expect("send");
            black_box(orx.await.expect("reply"));
        }
        t0.elapsed()
    })
    .await
    .expect("raw")
}

/// `n` sequential `Router::ask`s from one spawned task, timed inside it.
async fn daemonhost_seq(router: Router, v: Value, n: u64) -> Duration {
    tokio::spawn(async move {
        let t0 = Instant::now();
        for _ in 0..n {
            black_box(router.ask("echo/x", v.clone()).await.expect("ask"));
        }
        t0.elapsed()
    })
    .await
    .expect("dh")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let only = args.next();
    let only_seq = only.as_deref() == Some("seq");
    let only_raw = only.as_deref() == Some("raw");
    // ASK_LOOP_RT=current runs everything on a current-thread runtime (as actix does).
    let rt = if std::env::var("ASK_LOOP_RT").as_deref() == Ok("current") {
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
    rt.block_on(async move {
        let mut b = RuntimeBuilder::new(RuntimeConfig {
            lag_probe: None,
            ..RuntimeConfig::default()
        });
        b.register(Echo);
        let runtime = b.build().expect("plan");
        runtime.start_all().await;
        let router = runtime.router();
        let (tx, mut rx) = mpsc::channel::<RawMsg>(1024);
        tokio::spawn(async move {
            while let Some((v, reply)) = rx.recv().await {
                let _ = reply.send(v);
            }
        });
        let v = small();
        for round in 0..rounds {
            let rate = |d: Duration| n as f64 / d.as_secs_f64() / 1000.0;
            if only_raw {
                let raw = raw_seq(tx.clone(), v.clone(), n).await;
                println!("round {round}: seq raw {:.0} k/s", rate(raw));
                continue;
            }
            if only_seq {
                let dh = daemonhost_seq(router.clone(), v.clone(), n).await;
                println!("round {round}: seq daemonhost {:.0} k/s", rate(dh));
                continue;
            }
            let raw = raw_seq(tx.clone(), v.clone(), n).await;
            let dh = daemonhost_seq(router.clone(), v.clone(), n).await;
            let (r2, v2) = (router.clone(), v.clone());
            let pipe = tokio::spawn(async move {
                use futures_util::stream::{FuturesUnordered, StreamExt};
                let t0 = Instant::now();
                let mut inflight = FuturesUnordered::new();
                let mut sent = 0;
                while sent < n.min(1024) {
                    inflight.push(r2.ask("echo/x", v2.clone()));
                    sent += 1;
                }
                while let Some(r) = inflight.next().await {
                    black_box(r.expect("ask"));
                    if sent < n {
                        inflight.push(r2.ask("echo/x", v2.clone()));
                        sent += 1;
                    }
                }
                t0.elapsed()
            })
            .await
            .expect("pipe");
            let t0 = Instant::now();
            let mut hs = Vec::new();
            for _ in 0..8 {
                let (r2, v2) = (router.clone(), v.clone());
                hs.push(tokio::spawn(async move {
                    for _ in 0..n / 8 {
                        black_box(r2.ask("echo/x", v2.clone()).await.expect("ask"));
                    }
                }));
            }
            for h in hs {
                h.await.expect("fan");
            }
            let fan = t0.elapsed();
            println!(
                "round {round}: seq raw {:.0} k/s, daemonhost {:.0} k/s ({:.2}x); pipelined 1024 {:.0} k/s; fan-in 8 {:.0} k/s",
                rate(raw),
                rate(dh),
                raw.as_secs_f64() / dh.as_secs_f64(),
                rate(pipe),
                rate(fan)
            );
        }
        runtime.shutdown().await;
    });
}
