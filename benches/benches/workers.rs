//! Worker benchmarks, each with its baseline in the same run:
//! - `logger`: lines/s end-to-end to files through `LoggerService::handle("log/write-batch")`
//!   (1000 entries per call over 16 categories, flushed at the end of each sample), against one
//!   `BufWriter` writing the same formatted lines to one file (target: ≥ 1 000 000 lines/s); also
//!   the same batches through the in-process `Logger::write` API (no request `Value` to build);
//! - `search`: `search/messages` over 1 000 000 indexed synthetic messages (Zipf vocabulary of
//!   50 000 words, 5–30 words per message, 100 rooms); the p50/p90/p99 of 1000 distinct queries are
//!   printed, criterion times the same queries in rotation (target: p50 ≤ 10 ms);
//! - `roundtrip`: a trivial command through a worker connection (`serve_connection` on one end of
//!   a `UnixStream::pair`, the protocol `Client` on the other) against calling `handle` directly.
//!
//! `DHW_SKIP_SEARCH=1` skips the search group (its 1M-message setup takes seconds), e.g. when
//! profiling the others.

use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use daemonhost_protocol::{Client, ClientConfig, ErrorCode};
use daemonhost_workers::logger::{Level, LogEntry, rfc3339_millis};
use daemonhost_workers::search::NewMessage;
use daemonhost_workers::{
    LoggerConfig, LoggerService, MessageIndexConfig, SearchConfig, SearchService, WorkerService,
    serve_connection,
};
use serde_json::{Value, json};

const BATCH: usize = 1000;
const CATEGORIES: usize = 16;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn bench_logger(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let entries: Vec<Value> = (0..BATCH)
        .map(|i| {
            json!({
                "category": format!("daemons/d{}", i % CATEGORIES),
                "level": "info",
                "component": "bench",
                "message": format!("request {i} handled in 42 us by worker"),
                "args": {"i": i},
            })
        })
        .collect();
    let params = json!({ "entries": entries });

    let mut g = c.benchmark_group("logger");
    g.throughput(Throughput::Elements(BATCH as u64));

    // Baseline: the same lines, formatted the same way, through one BufWriter to one file.
    g.bench_function("baseline_single_bufwriter", |b| {
        let file = std::fs::File::create(dir.path().join("baseline.log")).expect("file");
        let mut w = BufWriter::with_capacity(64 * 1024, file);
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let ts = rfc3339_millis(0);
                for e in &entries {
                    w.write_all(&ts).expect("write");
                    write!(w, " INFO [bench] {} ", e["message"].as_str().unwrap_or(""))
                        .expect("write");
                    serde_json::to_writer(&mut w, &e["args"]).expect("write");
                    w.write_all(b"\n").expect("write");
                }
            }
            w.flush().expect("flush");
            start.elapsed()
        })
    });

    // Reference: what building and dropping the request `Value` alone costs (the service row
    // below pays it on every call, as a worker does when it decodes a frame).
    g.bench_function("reference_request_value_clone_drop", |b| {
        b.iter(|| black_box(params.clone()))
    });

    let svc = LoggerService::new(LoggerConfig {
        rate_per_sec: 100_000_000,
        burst: 100_000_000,
        ..LoggerConfig::new(dir.path().join("logs"))
    })
    .expect("logger");
    let overloaded = std::cell::Cell::new(0u64);
    g.bench_function("service_write_batch_to_files", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    loop {
                        match svc.handle("log/write-batch", params.clone()).await {
                            Ok(v) => {
                                black_box(v);
                                break;
                            }
                            Err(e) if e.code == ErrorCode::Overloaded => {
                                overloaded.set(overloaded.get() + 1);
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                svc.logger().flush().await.expect("flush");
                start.elapsed()
            })
        })
    });
    // The same service calls with the request values built outside the timed sections (the
    // handler still parses and drops each one): the service's own cost, end-to-end to files.
    g.bench_function("service_write_batch_prebuilt_requests", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(16);
                    left -= n;
                    let reqs: Vec<Value> = (0..n).map(|_| params.clone()).collect();
                    let start = Instant::now();
                    for p in reqs {
                        let mut p = Some(p);
                        while let Some(req) = p.take() {
                            match svc.handle("log/write-batch", req).await {
                                Ok(v) => {
                                    black_box(v);
                                }
                                Err(e) if e.code == ErrorCode::Overloaded => {
                                    overloaded.set(overloaded.get() + 1);
                                    tokio::task::yield_now().await;
                                    p = Some(params.clone());
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    timed += start.elapsed();
                }
                let start = Instant::now();
                svc.logger().flush().await.expect("flush");
                timed + start.elapsed()
            })
        })
    });

    // The compact batch shape a per-daemon forwarder would send: one category per call with
    // batch-level fields and bare message strings (calls rotate over the 16 categories).
    let compact: Vec<Value> = (0..CATEGORIES)
        .map(|c| {
            json!({"category": format!("daemons/d{c}"), "level": "info", "component": "bench",
                   "entries": (0..BATCH)
                       .map(|i| Value::String(format!("request {i} handled in 42 us by worker")))
                       .collect::<Vec<_>>()})
        })
        .collect();
    g.bench_function("service_write_batch_compact_to_files", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for it in 0..iters {
                    let req = &compact[it as usize % CATEGORIES];
                    loop {
                        match svc.handle("log/write-batch", req.clone()).await {
                            Ok(v) => {
                                black_box(v);
                                break;
                            }
                            Err(e) if e.code == ErrorCode::Overloaded => {
                                overloaded.set(overloaded.get() + 1);
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                svc.logger().flush().await.expect("flush");
                start.elapsed()
            })
        })
    });

    // The same lines through the in-process API (`Logger::write` with borrowed entries), which
    // is what the host's own daemons use: no JSON request value to build or drop.
    let args: Vec<Value> = (0..BATCH).map(|i| json!({"i": i})).collect();
    let cats: Vec<String> = (0..BATCH)
        .map(|i| format!("daemons/d{}", i % CATEGORIES))
        .collect();
    let msgs: Vec<String> = (0..BATCH)
        .map(|i| format!("request {i} handled in 42 us by worker"))
        .collect();
    let api_entries: Vec<LogEntry<'_>> = (0..BATCH)
        .map(|i| LogEntry {
            category: &cats[i],
            level: Level::Info,
            component: "bench",
            message: &msgs[i],
            args: Some(&args[i]),
        })
        .collect();
    g.bench_function("api_write_batch_to_files", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    loop {
                        match svc.logger().write(&api_entries) {
                            Ok(o) => {
                                black_box(o);
                                break;
                            }
                            Err(e) if e.code == ErrorCode::Overloaded => {
                                overloaded.set(overloaded.get() + 1);
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                svc.logger().flush().await.expect("flush");
                start.elapsed()
            })
        })
    });
    g.finish();
    let stats = svc.logger().stats();
    println!(
        "logger: {} lines / {} bytes written, {} overloaded retries, {} open files",
        stats.lines_written,
        stats.bytes_written,
        overloaded.get(),
        stats.open_files
    );
    rt.block_on(svc.shutdown());
}

const VOCAB: usize = 50_000;
const MESSAGES: usize = 1_000_000;
const ROOMS: usize = 100;

fn word(rank: usize) -> String {
    // Distinct alphanumeric words of 3+ chars: base-26 letters of the rank behind a 'w'.
    let mut s = String::from("w");
    let mut n = rank;
    loop {
        s.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    s
}

fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|k| {
            acc += 1.0 / k as f64;
            acc
        })
        .collect();
    for x in &mut cdf {
        *x /= acc;
    }
    cdf
}

fn sample(cdf: &[f64], rng: &mut Rng) -> usize {
    let u = rng.unit();
    cdf.partition_point(|&x| x < u).min(cdf.len() - 1)
}

fn bench_search(c: &mut Criterion) {
    // Building the 1M-message index takes seconds; skip it when profiling the other groups.
    if std::env::var_os("DHW_SKIP_SEARCH").is_some() {
        return;
    }
    let rt = runtime();
    let words: Vec<String> = (0..VOCAB).map(word).collect();
    let cdf = zipf_cdf(VOCAB);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let ids: Vec<String> = (0..MESSAGES)
        .map(|i| format!("01900000-0000-7000-8000-{i:012x}"))
        .collect();
    let rooms: Vec<String> = (0..ROOMS).map(|r| format!("room-{r}")).collect();
    let texts: Vec<String> = (0..MESSAGES)
        .map(|_| {
            let n = 5 + rng.below(26) as usize;
            (0..n)
                .map(|_| words[sample(&cdf, &mut rng)].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let svc = SearchService::new(SearchConfig {
        index: MessageIndexConfig {
            max_docs: MESSAGES,
            ..MessageIndexConfig::default()
        },
    });
    let start = Instant::now();
    {
        let mut ix = svc.index().write();
        for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(10_000) {
            let batch: Vec<NewMessage<'_>> = chunk
                .iter()
                .map(|&i| NewMessage {
                    id: &ids[i],
                    room_id: &rooms[i % ROOMS],
                    text: &texts[i],
                    created_at: i as i64,
                })
                .collect();
            ix.add_many(&batch).expect("add");
        }
    }
    let build = start.elapsed();
    let stats = svc.index().read().stats();
    println!(
        "search: indexed {} messages in {build:?} ({:.0} msg/s); {} terms, {} postings, ~{} MB",
        stats.docs,
        stats.docs as f64 / build.as_secs_f64(),
        stats.terms,
        stats.postings,
        stats.approx_bytes / (1 << 20)
    );
    drop(texts);

    // Queries: 1–3 words drawn from the same Zipf distribution (so common words do occur).
    let queries: Vec<Value> = (0..1000)
        .map(|i| {
            let n = 1 + rng.below(3) as usize;
            let q = (0..n)
                .map(|_| words[sample(&cdf, &mut rng)].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            if i % 4 == 0 {
                json!({"query": q, "roomId": rooms[i % ROOMS], "limit": 20})
            } else {
                json!({"query": q, "limit": 20})
            }
        })
        .collect();
    let mut lat: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            black_box(
                svc.handle("search/messages", q.clone())
                    .await
                    .expect("search"),
            );
            v.push(t.elapsed());
        }
        v
    });
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!(
        "search/messages over {} messages: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        stats.docs,
        pct(50),
        pct(90),
        pct(99),
        lat[lat.len() - 1]
    );

    let mut g = c.benchmark_group("search");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("messages_1m_rotating_queries", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % queries.len();
            let q = queries[i].clone();
            let svc = &svc;
            async move { black_box(svc.handle("search/messages", q).await.expect("search")) }
        })
    });
    g.finish();
}

fn bench_roundtrip(c: &mut Criterion) {
    let rt = runtime();
    let svc = Arc::new(SearchService::default());
    let client = rt.block_on(async {
        let (a, b) = tokio::net::UnixStream::pair().expect("pair");
        let worker_svc = Arc::clone(&svc);
        tokio::spawn(async move { serve_connection(worker_svc, a, "bench").await });
        Client::from_stream(b, ClientConfig::default())
    });
    let mut g = c.benchmark_group("roundtrip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_in_process_handle_search_list", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(svc.handle("search/list", json!({})).await.expect("ok")) })
    });
    g.bench_function("worker_connection_search_list", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                client
                    .call("search/list", json!({}), None)
                    .await
                    .expect("ok"),
            )
        })
    });
    g.bench_function("worker_connection_ping", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                client
                    .call("worker/ping", json!({}), None)
                    .await
                    .expect("ok"),
            )
        })
    });

    // The same on a current-thread runtime: no cross-thread wake-ups, so this is closer to the
    // intrinsic cost (two socket crossings, encode/decode, four task hops) on a loaded machine.
    let rt1 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client1 = rt1.block_on(async {
        let (a, b) = tokio::net::UnixStream::pair().expect("pair");
        let worker_svc = Arc::clone(&svc);
        tokio::spawn(async move { serve_connection(worker_svc, a, "bench").await });
        Client::from_stream(b, ClientConfig::default())
    });
    g.bench_function("worker_connection_ping_current_thread", |b| {
        b.to_async(&rt1).iter(|| async {
            black_box(
                client1
                    .call("worker/ping", json!({}), None)
                    .await
                    .expect("ok"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench_roundtrip, bench_logger, bench_search);
criterion_main!(benches);
