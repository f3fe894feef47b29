//! A coarse throughput probe for profiling (`cargo test --release --test data_perf -- --ignored
//! --nocapture`); the real numbers come from `benches/benches/data.rs`.

use daemonhost_data::{BatchOp, DataStore, Handle, StoreConfig, schema};
use serde_json::{Map, Value, json};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "profiling probe"]
async fn data_perf_batch_create_rows_per_second() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = DataStore::open(StoreConfig::new(dir.path()), schema::scan(None), None)
        .await
        .expect("open");
    let h = Handle::Primary;
    let u = store
        .create(
            &h,
            "users",
            None,
            obj(json!({"type": "human", "displayName": "p"})),
        )
        .await
        .expect("user");
    let uid = u["id"].as_str().expect("id").to_owned();
    let r = store
        .create(&h, "rooms", None, obj(json!({"name": "r", "ownerId": uid})))
        .await
        .expect("room");
    let rid = r["id"].as_str().expect("id").to_owned();
    let t = Instant::now();
    let mut n = 0u64;
    for b in 0..100 {
        let ops: Vec<BatchOp> = (0..1000)
            .map(|i| BatchOp::Create {
                collection: "chat_messages".into(),
                id: None,
                data: obj(json!({"roomId": rid, "senderId": uid, "senderName": "bench",
                    "content": {"text": format!("message {b}-{i} with some ordinary chat text in it")},
                    "timestamp": 1_700_000_000_000_i64 + b * 1000 + i})),
            })
            .collect();
        n += store.batch(&h, ops).await.expect("batch").len() as u64;
    }
    let s = t.elapsed().as_secs_f64();
    eprintln!("{n} rows in {s:.2} s = {:.0} rows/s", n as f64 / s);
    store.close().await;
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
