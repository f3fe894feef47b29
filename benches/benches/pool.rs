//! `CpuPool::spawn` vs the `tokio::task::spawn_blocking` baseline, both awaited from tokio.
//!
//! `single`: submit one tiny closure and await it (round-trip latency).
//! `batch64`: submit 64 tiny closures, then await them all (throughput under a burst).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use daemonhost_runtime::{CpuPool, PoolConfig};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn tiny(x: u64) -> u64 {
    black_box(x).wrapping_mul(31).rotate_left(7)
}

fn bench_pool(c: &mut Criterion) {
    let rt = runtime();
    let pool = CpuPool::new(PoolConfig::default());

    let mut single = c.benchmark_group("offload_single");
    single.bench_function("cpu_pool_spawn", |b| {
        b.to_async(&rt).iter(|| {
            let pool = pool.clone();
            async move { pool.spawn(|| tiny(3)).await.expect("job") }
        })
    });
    single.bench_function("spawn_blocking_baseline", |b| {
        b.to_async(&rt)
            .iter(|| async { tokio::task::spawn_blocking(|| tiny(3)).await.expect("job") })
    });
    single.finish();

    let mut batch = c.benchmark_group("offload_batch64");
    batch.bench_function("cpu_pool_spawn", |b| {
        b.to_async(&rt).iter(|| {
            let pool = pool.clone();
            async move {
                let tasks: Vec<_> = (0..64).map(|i| pool.spawn(move || tiny(i))).collect();
                let mut acc = 0u64;
                for t in tasks {
                    acc = acc.wrapping_add(t.await.expect("job"));
                }
                acc
            }
        })
    });
    batch.bench_function("spawn_blocking_baseline", |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = (0..64)
                .map(|i| tokio::task::spawn_blocking(move || tiny(i)))
                .collect();
            let mut acc = 0u64;
            for t in tasks {
                acc = acc.wrapping_add(t.await.expect("job"));
            }
            acc
        })
    });
    batch.finish();

    let stats = pool.stats();
    eprintln!("cpu pool stats after bench: {stats:?}");
}

criterion_group!(benches, bench_pool);
criterion_main!(benches);
