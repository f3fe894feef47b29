//! The data client's two paths side by side, in the same run: the in-process path (a typed
//! call on the store, as the platform daemons made before the client existed) against the
//! routed path (the same call as a `data/*` request through the router and the data daemon's
//! mailbox, as on a host without `data`).
//!
//! - `data_client/read/*`: one record read by id, sequentially.
//! - `data_client/create/*`: one small record created, sequentially (each waits for its commit).
//!
//! Each iteration batch runs as one long loop inside one spawned task, timed with
//! `iter_custom`, so the harness adds nothing per call.
//! Run: `cargo bench -p daemonhost-benches --bench data_client -- --warm-up-time 1 --measurement-time 5`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use daemonhost_data_client::{Data, DataPath, Handle};
use daemonhost_runtime::Runtime;
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

struct Env {
    _dir: tempfile::TempDir,
    rt: Runtime,
    local: Data,
    routed: Data,
    user: String,
}

async fn boot() -> Env {
    let dir = tempfile::tempdir().expect("tmp");
    let mut client = None;
    let (rt, _) =
        daemonhost_testkit::data::boot(dir.path(), daemonhost_testkit::quiet_config(), |_, s| {
            client = Some(s.client());
        })
        .await;
    let client = client.expect("the data daemon's client");
    let local = client.bind(&rt.router());
    let routed = client.with_path(DataPath::Routed).bind(&rt.router());
    assert!(local.is_local() && !routed.is_local());
    let mut data = Map::new();
    data.insert("type".into(), json!("human"));
    data.insert("displayName".into(), json!("bench"));
    let u = local
        .create(&Handle::Primary, "users", None, data)
        .await
        .expect("user");
    let user = u["id"].as_str().expect("id").to_owned();
    Env {
        _dir: dir,
        rt,
        local,
        routed,
        user,
    }
}

fn time_reads(trt: &tokio::runtime::Runtime, data: &Data, user: &str, iters: u64) -> Duration {
    let (data, user) = (data.clone(), user.to_owned());
    trt.block_on(async move {
        tokio::spawn(async move {
            let t0 = Instant::now();
            for _ in 0..iters {
                let r = data.read(&Handle::Primary, "users", &user).await;
                black_box(r.expect("read"));
            }
            t0.elapsed()
        })
        .await
        .expect("task")
    })
}

fn time_creates(trt: &tokio::runtime::Runtime, data: &Data, iters: u64) -> Duration {
    let data = data.clone();
    trt.block_on(async move {
        tokio::spawn(async move {
            let t0 = Instant::now();
            for i in 0..iters {
                let mut m = Map::new();
                m.insert("type".into(), json!("human"));
                m.insert("displayName".into(), Value::from(format!("u{i}")));
                black_box(
                    data.create(&Handle::Primary, "users", None, m)
                        .await
                        .expect("create"),
                );
            }
            t0.elapsed()
        })
        .await
        .expect("task")
    })
}

fn bench(c: &mut Criterion) {
    let trt = tokio_rt();
    let env = trt.block_on(boot());
    let mut g = c.benchmark_group("data_client/read");
    g.throughput(Throughput::Elements(1));
    g.bench_function("in_process", |b| {
        b.iter_custom(|n| time_reads(&trt, &env.local, &env.user, n));
    });
    g.bench_function("routed", |b| {
        b.iter_custom(|n| time_reads(&trt, &env.routed, &env.user, n));
    });
    g.finish();
    let mut g = c.benchmark_group("data_client/create");
    g.throughput(Throughput::Elements(1));
    g.bench_function("in_process", |b| {
        b.iter_custom(|n| time_creates(&trt, &env.local, n));
    });
    g.bench_function("routed", |b| {
        b.iter_custom(|n| time_creates(&trt, &env.routed, n));
    });
    g.finish();
    trt.block_on(env.rt.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
