//! Data daemon benchmarks, each next to a raw-rusqlite baseline measured in the same run.
//!
//! - `data_create/*`: rows/s for `data/create` one at a time, 64 in flight (group commit), and
//!   `data/batch` of 1000 (answering the records, and with `return: "ids"`); baseline: the
//!   same rows inserted by raw rusqlite in one transaction on the calling thread (target:
//!   batched ≥ 50k rows/s).
//! - `data_list_indexed/*`: one page (20 rows) of a room's messages, newest first, from a
//!   1,000,000-row `chat_messages` table; baseline: the same prepared SELECT on a raw
//!   connection (target: p50 ≤ 1 ms in-process; criterion's median is the p50).
//! - `data_startup/*`: runtime start to data READY on that 1M-row database (target ≤ 100 ms),
//!   printing the data daemon's `longest_poll_ms` (target < 5 ms).
//!
//! The 1M-row database is generated once per run into a temp dir with a raw fast insert.
//! Run: `cargo bench -p daemonhost-benches --bench data -- --warm-up-time 1 --measurement-time 5`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use daemonhost_daemons::data::{
    DataConfig, DataDaemon, DataStore, Handle, ListParams, StoreConfig, StoreSlot,
};
use daemonhost_runtime::{Runtime, RuntimeBuilder, RuntimeConfig};
use serde_json::{Value, json};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROWS: usize = 1_000_000;
const ROOMS: usize = 100;

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

async fn boot(dir: &Path) -> (Runtime, StoreSlot) {
    let mut b = RuntimeBuilder::new(RuntimeConfig {
        lag_probe: None,
        ..Default::default()
    });
    let d = DataDaemon::new(DataConfig::new(dir));
    let slot = d.store_slot();
    b.register(d);
    let rt = b.build().expect("plan");
    let rep = rt.start_all().await;
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
    (rt, slot)
}

/// Create the user and room every message references; returns (user id, room id).
async fn seed(rt: &Runtime) -> (String, String) {
    let u = rt
        .router()
        .ask(
            "data/create",
            json!({"collection": "users", "data": {"type": "human", "displayName": "bench"}}),
        )
        .await
        .expect("user");
    let uid = u["id"].as_str().expect("id").to_owned();
    let r = rt
        .router()
        .ask(
            "data/create",
            json!({"collection": "rooms", "data": {"name": "bench", "ownerId": uid}}),
        )
        .await
        .expect("room");
    (uid, r["id"].as_str().expect("id").to_owned())
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn message(uid: &str, rid: &str) -> Value {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    json!({"roomId": rid, "senderId": uid, "senderName": "bench", "senderType": "human",
           "content": {"text": format!("message number {n} with some ordinary chat text in it")},
           "timestamp": 1_700_000_000_000_i64 + n as i64})
}

fn bench_create(c: &mut Criterion) {
    let trt = tokio_rt();
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, slot) = trt.block_on(boot(dir.path()));
    let (uid, rid) = trt.block_on(seed(&rt));
    let router = rt.router();
    let mut g = c.benchmark_group("data_create");

    g.throughput(Throughput::Elements(1));
    g.bench_function("single_sequential", |b| {
        b.to_async(&trt).iter(|| {
            let router = router.clone();
            let m = message(&uid, &rid);
            async move {
                black_box(
                    router
                        .ask(
                            "data/create",
                            json!({"collection": "chat_messages", "data": m}),
                        )
                        .await
                        .expect("create"),
                )
            }
        });
    });

    g.throughput(Throughput::Elements(64));
    g.bench_function("single_64_in_flight", |b| {
        b.to_async(&trt).iter(|| {
            let router = router.clone();
            let msgs: Vec<Value> = (0..64).map(|_| message(&uid, &rid)).collect();
            async move {
                let mut set = tokio::task::JoinSet::new();
                for m in msgs {
                    let r = router.clone();
                    set.spawn(async move {
                        r.ask(
                            "data/create",
                            json!({"collection": "chat_messages", "data": m}),
                        )
                        .await
                        .expect("create");
                    });
                }
                while set.join_next().await.is_some() {}
            }
        });
    });

    const BATCH: usize = 1000;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("batch_1000", |b| {
        b.to_async(&trt).iter(|| {
            let router = router.clone();
            let ops: Vec<Value> = (0..BATCH)
                .map(|_| json!({"operation": "create", "collection": "chat_messages", "data": message(&uid, &rid)}))
                .collect();
            async move {
                black_box(
                    router
                        .ask("data/batch", json!({"operations": ops}))
                        .await
                        .expect("batch"),
                )
            }
        });
    });

    // The same batch answering only the ids (`return: "ids"`): no records built or dropped.
    g.bench_function("batch_1000_return_ids", |b| {
        b.to_async(&trt).iter(|| {
            let router = router.clone();
            let ops: Vec<Value> = (0..BATCH)
                .map(|_| json!({"operation": "create", "collection": "chat_messages", "data": message(&uid, &rid)}))
                .collect();
            async move {
                black_box(
                    router
                        .ask("data/batch", json!({"operations": ops, "return": "ids"}))
                        .await
                        .expect("batch"),
                )
            }
        });
    });

    // Baseline: the same rows, raw rusqlite, one transaction, on this thread.
    let raw_dir = tempfile::tempdir().expect("tmp");
    let raw_path = raw_dir.path().join("data").join("primary.sqlite");
    trt.block_on(async {
        let s = DataStore::open(
            StoreConfig::new(raw_dir.path()),
            daemonhost_daemons::data::schema::scan(None),
            None,
        )
        .await
        .expect("open");
        s.close().await;
    });
    let mut conn = raw_conn(&raw_path);
    g.bench_function("baseline_raw_rusqlite_txn_1000", |b| {
        b.iter(|| {
            let tx = conn.transaction().expect("tx");
            {
                let mut st = tx.prepare_cached(INSERT).expect("prep");
                for _ in 0..BATCH {
                    let n = SEQ.fetch_add(1, Ordering::Relaxed);
                    raw_insert(&mut st, n, &uid, &rid);
                }
            }
            tx.commit().expect("commit");
        });
    });
    g.finish();
    let store = slot.get().expect("store");
    trt.block_on(async {
        let n = store
            .count(&Handle::Primary, "chat_messages", None)
            .await
            .expect("count");
        eprintln!("data_create: {n} rows written through the daemon");
        rt.shutdown().await;
    });
}

const INSERT: &str = "INSERT INTO chat_messages (id, createdAt, updatedAt, version, roomId, senderId, senderName, senderType, content, status, priority, timestamp) VALUES (?1, ?2, ?2, 1, ?3, ?4, 'bench', 'human', ?5, 'sent', 'normal', ?6)";

fn raw_conn(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    )
    .expect("pragmas");
    conn
}

fn fmt_ms(ms: i64) -> String {
    daemonhost_daemons::data::value::format_ms(ms)
}

fn raw_insert(st: &mut rusqlite::CachedStatement<'_>, n: u64, uid: &str, rid: &str) {
    let ts = fmt_ms(1_700_000_000_000 + n as i64);
    let id = format!("{:016x}-{n:012}", 1_700_000_000_000_u64 + n);
    let content = format!("{{\"text\":\"message number {n} with some ordinary chat text in it\"}}");
    st.execute(rusqlite::params![id, ts, rid, uid, content, ts])
        .expect("insert");
}

/// The 1M-row database, generated once: (dir, room ids).
fn big_db() -> &'static (tempfile::TempDir, Vec<String>) {
    static DB: OnceLock<(tempfile::TempDir, Vec<String>)> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let t = Instant::now();
        // Let the store create the tables and indexes, then bulk-load raw.
        tokio_rt().block_on(async {
            let s = DataStore::open(
                StoreConfig::new(dir.path()),
                daemonhost_daemons::data::schema::scan(None),
                None,
            )
            .await
            .expect("open");
            s.close().await;
        });
        let path = dir.path().join("data").join("primary.sqlite");
        let mut conn = raw_conn(&path);
        conn.execute_batch("PRAGMA foreign_keys=OFF; PRAGMA cache_size=-200000;").expect("p");
        let uid = "u-bench".to_owned();
        let rooms: Vec<String> = (0..ROOMS).map(|i| format!("room-{i:03}")).collect();
        let tx = conn.transaction().expect("tx");
        tx.execute(
            "INSERT INTO users (id, createdAt, updatedAt, version, type, displayName) VALUES (?1, '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z', 1, 'human', 'bench')",
            [&uid],
        )
        .expect("user");
        for r in &rooms {
            tx.execute(
                "INSERT INTO rooms (id, createdAt, updatedAt, version, name, ownerId) VALUES (?1, '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z', 1, ?1, ?2)",
                [r, &uid],
            )
            .expect("room");
        }
        {
            let mut st = tx.prepare_cached(INSERT).expect("prep");
            for n in 0..ROWS as u64 {
                raw_insert(&mut st, n, &uid, &rooms[n as usize % ROOMS]);
            }
        }
        tx.commit().expect("commit");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").expect("ckpt");
        drop(conn);
        eprintln!("generated {ROWS} chat_messages in {:.1} s", t.elapsed().as_secs_f64());
        (dir, rooms)
    })
}

fn bench_list(c: &mut Criterion) {
    let (dir, rooms) = big_db();
    let trt = tokio_rt();
    let (rt, slot) = trt.block_on(boot(dir.path()));
    let store = slot.get().expect("store");
    let router = rt.router();
    let mut g = c.benchmark_group("data_list_indexed");
    let mut i = 0usize;
    let plan = trt
        .block_on(store.explain_list(
            "chat_messages",
            ListParams {
                filter: Some(json!({"roomId": rooms[0]})),
                order_by: Some(json!([{"field": "timestamp", "direction": "desc"}])),
                limit: Some(json!(20)),
                ..Default::default()
            },
        ))
        .expect("explain");
    eprintln!("plan: {plan:?}");
    g.bench_function("store_list_room_page20", |b| {
        b.to_async(&trt).iter(|| {
            i += 1;
            let room = rooms[i % ROOMS].clone();
            let store = store.clone();
            async move {
                let p = store
                    .list(
                        &Handle::Primary,
                        "chat_messages",
                        ListParams {
                            filter: Some(json!({"roomId": room})),
                            order_by: Some(json!([{"field": "timestamp", "direction": "desc"}])),
                            limit: Some(json!(20)),
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("list");
                assert_eq!(p.items.len(), 20);
                black_box(p)
            }
        });
    });
    g.bench_function("router_data_list_room_page20", |b| {
        b.to_async(&trt).iter(|| {
            i += 1;
            let room = rooms[i % ROOMS].clone();
            let router = router.clone();
            async move {
                black_box(
                    router
                        .ask(
                            "data/list",
                            json!({"collection": "chat_messages", "filter": {"roomId": room},
                                   "orderBy": [{"field": "timestamp", "direction": "desc"}], "limit": 20}),
                        )
                        .await
                        .expect("list"),
                )
            }
        });
    });
    // Baseline: the same SELECT, prepared, on a raw read-only connection on this thread.
    let raw = rusqlite::Connection::open_with_flags(
        dir.path().join("data").join("primary.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("raw");
    let sql = "SELECT id, createdAt, updatedAt, version, roomId, senderId, senderName, senderType, content, status, priority, timestamp, editedAt, reactions, thread, replyToId FROM chat_messages WHERE roomId = ?1 ORDER BY timestamp DESC, id DESC LIMIT 21";
    g.bench_function("baseline_raw_prepared_select", |b| {
        b.iter(|| {
            i += 1;
            let mut st = raw.prepare_cached(sql).expect("prep");
            let rows: Vec<(String, String)> = st
                .query_map([&rooms[i % ROOMS]], |r| Ok((r.get(0)?, r.get(8)?)))
                .expect("q")
                .collect::<Result<_, _>>()
                .expect("rows");
            black_box(rows)
        });
    });
    g.finish();
    trt.block_on(rt.shutdown());
}

fn bench_startup(c: &mut Criterion) {
    let (dir, _) = big_db();
    let trt = tokio_rt();
    let mut g = c.benchmark_group("data_startup");
    g.sample_size(10);
    let root: PathBuf = dir.path().to_owned();
    let mut worst_poll = 0f64;
    g.bench_function(
        BenchmarkId::new("start_to_ready", "1M_chat_messages"),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (elapsed, poll) = trt.block_on(async {
                        let mut b = RuntimeBuilder::new(RuntimeConfig {
                            lag_probe: None,
                            ..Default::default()
                        });
                        b.register(DataDaemon::new(DataConfig::new(&root)));
                        let rt = b.build().expect("plan");
                        let t = Instant::now();
                        let rep = rt.start_all().await;
                        let elapsed = t.elapsed();
                        assert!(rep.failed.is_empty());
                        // Let deferred init (ANALYZE, quick_check) run, then read the worst poll.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let poll = rt
                            .reports()
                            .iter()
                            .find(|r| r.name == "data")
                            .map_or(0.0, |r| r.longest_poll_ms);
                        rt.shutdown().await;
                        (elapsed, poll)
                    });
                    worst_poll = worst_poll.max(poll);
                    total += elapsed;
                }
                total
            });
        },
    );
    g.finish();
    eprintln!("data_startup: worst longest_poll_ms of the data daemon = {worst_poll:.3}");
}

criterion_group!(benches, bench_create, bench_list, bench_startup);
criterion_main!(benches);
