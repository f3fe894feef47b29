//! Data daemon benchmarks, each next to a raw-rusqlite baseline measured in the same run.
//!
//! - `data_create/*`: rows/s for `data/create` one at a time, 64 in flight (group commit), and
//!   `data/batch` of 1000 (answering the records, and with `return: "ids"`; the caller's own
//!   work of building the request and dropping the answer outside the timer, and once more
//!   with it inside: `batch_1000_with_client_work`); baseline: the same rows inserted by raw
//!   rusqlite in one transaction on the calling thread (target: batched ≥ 50k rows/s). Each
//!   batch benchmark also prints the writer thread's own time per batch (from `data/stats`'
//!   counters) and the checkpoints run meanwhile.
//! - `data_list_indexed/*`: one page (20 rows) of a room's messages, newest first, from a
//!   1,000,000-row `chat_messages` table; baseline: the same prepared SELECT on a raw
//!   connection (target: p50 ≤ 1 ms in-process; criterion's median is the p50).
//! - `data_startup/*`: runtime start to data READY on that 1M-row database (target ≤ 100 ms),
//!   printing the data daemon's `longest_poll_ms` (target < 5 ms).
//!
//! The 1M-row database is generated once per run into a temp dir with a raw fast insert.
//! Run: `cargo bench -p daemonhost-benches --bench data -- --warm-up-time 1 --measurement-time 5`
//! (the 1M-row database is only generated when a `data_list_indexed` or `data_startup` benchmark runs).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use daemonhost_data::{DataStore, Handle, ListParams, StoreConfig, StoreSlot};
use daemonhost_runtime::Runtime;
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
    daemonhost_testkit::data::boot(dir, daemonhost_testkit::quiet_config(), |_, _| {}).await
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

/// Build a JSON object taking its values by move (`json!` copies every non-literal value it is
/// given, which for nested values doubles the work a client does to build a request).
fn obj<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn message(uid: &str, rid: &str) -> Value {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    obj([
        ("roomId", Value::String(rid.to_owned())),
        ("senderId", Value::String(uid.to_owned())),
        ("senderName", Value::String("bench".to_owned())),
        ("senderType", Value::String("human".to_owned())),
        (
            "content",
            obj([(
                "text",
                Value::String(format!(
                    "message number {n} with some ordinary chat text in it"
                )),
            )]),
        ),
        ("timestamp", Value::from(1_700_000_000_000_i64 + n as i64)),
    ])
}

/// One `create` operation of a `data/batch`.
fn create_op(uid: &str, rid: &str) -> Value {
    obj([
        ("operation", Value::String("create".to_owned())),
        ("collection", Value::String("chat_messages".to_owned())),
        ("data", message(uid, rid)),
    ])
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
                            obj([
                                ("collection", Value::String("chat_messages".into())),
                                ("data", m),
                            ]),
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
                            obj([
                                ("collection", Value::String("chat_messages".into())),
                                ("data", m),
                            ]),
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
    let store = slot.get().expect("store");
    let batch_ops =
        |uid: &str, rid: &str| -> Vec<Value> { (0..BATCH).map(|_| create_op(uid, rid)).collect() };
    g.throughput(Throughput::Elements(BATCH as u64));
    // The data daemon's work on a 1000-row `data/batch`: routed, parsed, validated, written in
    // one transaction and answered with the 1000 records. What a caller does on its side —
    // building the request's JSON before, dropping the answer's after — is outside the timer
    // (criterion's `iter_batched` times the routine only); `batch_1000_with_client_work`
    // below keeps both inside.
    let req = |ret: &str| {
        let mut r = vec![("operations", Value::Array(batch_ops(&uid, &rid)))];
        if !ret.is_empty() {
            r.push(("return", Value::String(ret.to_owned())));
        }
        Value::Object(r.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    };
    for (name, ret) in [("batch_1000", ""), ("batch_1000_return_ids", "ids")] {
        let before = WriterTime::now(&store);
        g.bench_function(name, |b| {
            b.to_async(&trt).iter_batched(
                || req(ret),
                |req| {
                    let router = router.clone();
                    async move { router.ask("data/batch", req).await.expect("batch") }
                },
                criterion::BatchSize::PerIteration,
            );
        });
        before.report(name, &store);
    }

    // All in: the caller builds its 1000-operation request and drops the 1000-record answer
    // inside the timed loop, on the same two cores.
    let before = WriterTime::now(&store);
    g.bench_function("batch_1000_with_client_work", |b| {
        b.to_async(&trt).iter(|| {
            let router = router.clone();
            let ops = batch_ops(&uid, &rid);
            async move {
                black_box(
                    router
                        .ask("data/batch", obj([("operations", Value::Array(ops))]))
                        .await
                        .expect("batch"),
                )
            }
        });
    });
    before.report("batch_1000_with_client_work", &store);

    // Baseline: the same rows, raw rusqlite, one transaction, on this thread.
    let raw_dir = tempfile::tempdir().expect("tmp");
    let raw_path = raw_dir.path().join("data").join("primary.sqlite");
    trt.block_on(async {
        let s = DataStore::open(
            StoreConfig::new(raw_dir.path()),
            daemonhost_data::schema::scan(None),
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
    trt.block_on(async {
        let n = store
            .count(&Handle::Primary, "chat_messages", None)
            .await
            .expect("count");
        eprintln!("data_create: {n} rows written through the daemon");
        rt.shutdown().await;
    });
}

/// The writer thread's own clock (from `DbStats`) around one benchmark: how much of each
/// batch's time the single writer spent, and in COMMIT and idle checkpoints.
struct WriterTime {
    groups: u64,
    busy_us: u64,
    commit_us: u64,
    checkpoints: u64,
    checkpoint_us: u64,
}

impl WriterTime {
    fn now(store: &DataStore) -> WriterTime {
        let s = store.primary().stats();
        WriterTime {
            groups: s.groups.load(Ordering::Relaxed),
            busy_us: s.writer_busy_us.load(Ordering::Relaxed),
            commit_us: s.commit_us.load(Ordering::Relaxed),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
            checkpoint_us: s.checkpoint_us.load(Ordering::Relaxed),
        }
    }

    fn report(&self, name: &str, store: &DataStore) {
        let n = WriterTime::now(store);
        let groups = (n.groups - self.groups).max(1) as f64;
        eprintln!(
            "{name}: writer per batch {:.2} ms (commit {:.2} ms); checkpoints {} taking {:.2} ms each (on the checkpointer thread)",
            (n.busy_us - self.busy_us) as f64 / groups / 1000.0,
            (n.commit_us - self.commit_us) as f64 / groups / 1000.0,
            n.checkpoints - self.checkpoints,
            (n.checkpoint_us - self.checkpoint_us) as f64
                / (n.checkpoints - self.checkpoints).max(1) as f64
                / 1000.0,
        );
    }
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
    daemonhost_protocol::time::format_ms(ms)
}

fn raw_insert(st: &mut rusqlite::CachedStatement<'_>, n: u64, uid: &str, rid: &str) {
    let ts = fmt_ms(1_700_000_000_000 + n as i64);
    let id = format!("{:016x}-{n:012}", 1_700_000_000_000_u64 + n);
    let content = format!("{{\"text\":\"message number {n} with some ordinary chat text in it\"}}");
    st.execute(rusqlite::params![id, ts, rid, uid, content, ts])
        .expect("insert");
}

/// The 1M-row database, generated once: (dir, room ids).
fn big_db() -> (&'static tempfile::TempDir, &'static [String]) {
    static DB: OnceLock<(tempfile::TempDir, Vec<String>)> = OnceLock::new();
    let (dir, rooms) = DB.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let t = Instant::now();
        // Let the store create the tables and indexes, then bulk-load raw.
        tokio_rt().block_on(async {
            let s = DataStore::open(
                StoreConfig::new(dir.path()),
                daemonhost_data::schema::scan(None),
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
    });
    (dir, rooms)
}

/// The list benchmarks' fixture: the 1M-row database booted in a runtime. Built on first use,
/// so a run filtered to other groups does not pay for generating the database.
struct ListEnv {
    rooms: &'static [String],
    rt: Runtime,
    store: DataStore,
}

impl ListEnv {
    fn boot(trt: &tokio::runtime::Runtime) -> ListEnv {
        let (dir, rooms) = big_db();
        let (rt, slot) = trt.block_on(boot(dir.path()));
        let store = slot.get().expect("store");
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
        ListEnv { rooms, rt, store }
    }
}

fn bench_list(c: &mut Criterion) {
    let trt = tokio_rt();
    let mut env: Option<ListEnv> = None;
    let mut g = c.benchmark_group("data_list_indexed");
    let mut i = 0usize;
    g.bench_function("store_list_room_page20", |b| {
        let e = env.get_or_insert_with(|| ListEnv::boot(&trt));
        let (rooms, store) = (e.rooms, e.store.clone());
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
        let e = env.get_or_insert_with(|| ListEnv::boot(&trt));
        let (rooms, router) = (e.rooms, e.rt.router());
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
    let sql = "SELECT id, createdAt, updatedAt, version, roomId, senderId, senderName, senderType, content, status, priority, timestamp, editedAt, reactions, thread, replyToId FROM chat_messages WHERE roomId = ?1 ORDER BY timestamp DESC, id DESC LIMIT 21";
    g.bench_function("baseline_raw_prepared_select", |b| {
        let (dir, rooms) = big_db();
        let raw = rusqlite::Connection::open_with_flags(
            dir.path().join("data").join("primary.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("raw");
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
    if let Some(e) = env {
        trt.block_on(e.rt.shutdown());
    }
}

fn bench_startup(c: &mut Criterion) {
    let trt = tokio_rt();
    let mut g = c.benchmark_group("data_startup");
    g.sample_size(10);
    let mut worst_poll = 0f64;
    g.bench_function(
        BenchmarkId::new("start_to_ready", "1M_chat_messages"),
        |b| {
            let root: PathBuf = big_db().0.path().to_owned();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (elapsed, poll) = trt.block_on(async {
                        let (rt, _) = daemonhost_testkit::data::build(
                            &root,
                            daemonhost_testkit::quiet_config(),
                            |_, _| {},
                        );
                        let mut init = rt
                            .bus()
                            .subscribe("system:daemon:init-complete")
                            .expect("subscribe");
                        let t = Instant::now();
                        let rep = rt.start_all().await;
                        let elapsed = t.elapsed();
                        assert!(rep.failed.is_empty());
                        // Deferred init (ANALYZE, quick_check) runs after READY: once it has
                        // ended, read the worst poll.
                        daemonhost_testkit::within("the data daemon's deferred init", init.recv())
                            .await
                            .expect("init-complete");
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
