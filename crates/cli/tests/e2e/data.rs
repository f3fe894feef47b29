//! The data and archive daemons through the real binary: durability across SIGKILL, and an
//! archive run killed half-way that loses and duplicates nothing.

use crate::harness::*;
use daemonhost_protocol::Client;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const T: Option<Duration> = Some(Duration::from_secs(20));

/// A host whose data dir has extra schema files (and optionally a config) before it starts.
fn host_with_schemas(schemas: &[(&str, Value)], config: Option<&str>) -> Host {
    let mut h = Host::new(BIN);
    let dir = h.data.join("schemas");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, schema) in schemas {
        std::fs::write(dir.join(format!("{name}.json")), schema.to_string()).expect("schema");
    }
    match config {
        Some(cfg) => {
            let path = h.write_config(cfg).display().to_string();
            h.spawn(&["--config", &path], &[]);
        }
        None => h.spawn(&[], &[]),
    }
    h
}

/// Connect and wait until the data daemon answers.
async fn ready_client(host: &Host, collection: &str) -> Client {
    let c = host.client().await;
    eventually("data daemon ready", || {
        let c = c.clone();
        async move {
            c.call("data/count", json!({"collection": collection}), T)
                .await
                .is_ok()
        }
    })
    .await;
    c
}

fn notes_schema() -> Value {
    json!({"collection": "notes", "fields": [
        {"name": "text", "type": "string", "required": true, "maxLength": 200},
        {"name": "writer", "type": "integer", "indexed": true}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_every_acknowledged_record_survives_sigkill_mid_stream() {
    let mut host = host_with_schemas(&[("notes", notes_schema())], None);
    let c = ready_client(&host, "notes").await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (c, acked, stop, count) = (c.clone(), acked.clone(), stop.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = c
                    .call(
                        "data/create",
                        json!({"collection": "notes", "data": {"text": format!("w{w} n{i}"), "writer": w}}),
                        T,
                    )
                    .await;
                match r {
                    Ok(rec) => {
                        let id = rec["id"].as_str().expect("id").to_owned();
                        acked.lock().push(id);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    // The host died under us: stop writing.
                    Err(_) => break,
                }
            }
        }));
    }
    eventually("2000 acknowledged writes", || {
        let n = count.load(Ordering::Relaxed);
        async move { n >= 2000 }
    })
    .await;
    // Kill while the writers are still sending.
    host.kill().await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked: Vec<String> = acked.lock().clone();
    assert!(acked.len() >= 2000);

    host.spawn(&[], &[]);
    let c = ready_client(&host, "notes").await;
    let mut found = HashSet::new();
    for chunk in acked.chunks(500) {
        let page = c
            .call(
                "data/list",
                json!({"collection": "notes", "filter": {"id": {"$in": chunk}}, "fields": ["id"], "limit": 1000}),
                T,
            )
            .await
            .expect("list");
        for item in page["items"].as_array().expect("items") {
            found.insert(item["id"].as_str().expect("id").to_owned());
        }
    }
    let missing: Vec<_> = acked.iter().filter(|id| !found.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

fn logs_schema() -> Value {
    json!({"collection": "logs", "fields": [
        {"name": "seq", "type": "integer", "required": true, "indexed": true},
        {"name": "msg", "type": "string"}
    ], "archive": {"maxRows": 100, "rowsPerArchive": 50, "orderBy": "seq"}})
}

async fn ids(c: &Client, handle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = json!({"collection": "logs", "handle": handle, "fields": ["id"], "orderBy": "seq", "limit": 1000});
        if let Some(cur) = &cursor {
            params["cursor"] = json!(cur);
        }
        let page = c.call("data/list", params, T).await.expect("list");
        for item in page["items"].as_array().expect("items") {
            out.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    out
}

async fn assert_nothing_lost_or_duplicated(c: &Client, total: usize) -> (usize, usize) {
    let hot = ids(c, "primary").await;
    let cold = ids(c, "archive").await;
    let hot_set: HashSet<_> = hot.iter().collect();
    let cold_set: HashSet<_> = cold.iter().collect();
    assert_eq!(hot_set.len(), hot.len(), "duplicates in primary");
    assert_eq!(cold_set.len(), cold.len(), "duplicates in archive");
    assert!(
        hot_set.is_disjoint(&cold_set),
        "a row is both hot and archived"
    );
    assert_eq!(
        hot.len() + cold.len(),
        total,
        "count before = hot + archived after"
    );
    (hot.len(), cold.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_killed_mid_run_loses_and_duplicates_nothing_after_restart() {
    const TOTAL: usize = 3000;
    // A long interval so only explicit runs archive; small batches so a run takes a while.
    let config = "[archive]\ninterval_ms = 3600000\nbatch_size = 25\nmax_file_rows = 1000\nmax_batches_per_run = 1000\n";
    let mut host = host_with_schemas(&[("logs", logs_schema())], Some(config));
    let c = ready_client(&host, "logs").await;
    for start in (0..TOTAL).step_by(1000) {
        let ops: Vec<Value> = (start..start + 1000)
            .map(|i| json!({"operation": "create", "collection": "logs", "id": format!("l{i:05}"), "data": {"seq": i}}))
            .collect();
        c.call("data/batch", json!({"operations": ops}), T)
            .await
            .expect("batch");
    }
    // Start a run and kill the host once it has moved some rows but not all.
    let runner = tokio::spawn({
        let c = c.clone();
        async move { c.call("archive/run", json!({}), T).await }
    });
    eventually("archive run under way", || {
        let c = c.clone();
        async move {
            let s = c
                .call("archive/status", json!({}), T)
                .await
                .unwrap_or_default();
            s["movedTotal"].as_u64().unwrap_or(0) > 0
        }
    })
    .await;
    host.kill().await;
    let _ = runner.await;

    host.spawn(&[], &[]);
    let c = ready_client(&host, "logs").await;
    let (hot, cold) = assert_nothing_lost_or_duplicated(&c, TOTAL).await;
    eprintln!("after the kill: {hot} hot, {cold} archived");
    assert!(cold > 0, "the kill came after a committed batch");
    // Finish archiving and check again.
    c.call("archive/run", json!({}), T).await.expect("run");
    let (hot, _) = assert_nothing_lost_or_duplicated(&c, TOTAL).await;
    assert!(hot <= 100, "{hot} rows still hot");
    let status = c.call("health/status", json!({}), T).await.expect("status");
    let archive = status["daemons"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "archive"))
        .cloned()
        .unwrap_or_default();
    assert!(archive["details"]["archive"].is_object(), "{archive}");
}

/// The `data` entry of `health/status`.
async fn data_health(c: &Client) -> Value {
    let status = c.call("health/status", json!({}), T).await.expect("status");
    status["daemons"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "data"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_answers_storage_full_over_the_socket_and_writes_resume_after_a_delete_or_a_raised_quota()
 {
    let blobs = json!({"collection": "blobs", "fields": [{"name": "body", "type": "string"}]});
    let mut host = host_with_schemas(&[("blobs", blobs)], Some("[data]\nmax_db_mb = 2\n"));
    let c = ready_client(&host, "blobs").await;
    let create = |c: Client| async move {
        c.call(
            "data/create",
            json!({"collection": "blobs", "data": {"body": "b".repeat(8192)}}),
            T,
        )
        .await
    };
    // Fill the 2 MiB quota: every write is acknowledged until one answers storage_full.
    let mut acked = Vec::new();
    let err = loop {
        match create(c.clone()).await {
            Ok(r) => acked.push(r["id"].as_str().expect("id").to_owned()),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the quota never filled");
    };
    let daemonhost_protocol::CallError::Remote(body) = &err else {
        panic!("not an error answer: {err}");
    };
    assert_eq!(body.code.as_str(), "storage_full", "{body}");
    // The host is up, reads work, every acknowledged record is there, and the data daemon is
    // READY and says it is full.
    c.call("ping", json!({}), T).await.expect("ping");
    let n = c
        .call("data/count", json!({"collection": "blobs"}), T)
        .await
        .expect("count");
    assert_eq!(n["count"], acked.len());
    let first = c
        .call(
            "data/read",
            json!({"collection": "blobs", "id": acked[0]}),
            T,
        )
        .await
        .expect("read");
    assert_eq!(first["body"].as_str().map(str::len), Some(8192));
    let d = data_health(&c).await;
    assert_eq!(d["state"], "ready", "{d}");
    assert_eq!(d["details"]["storage"]["full"], true, "{d}");
    assert_eq!(d["details"]["storage"]["maxDbMb"], 2, "{d}");

    // A delete frees room: the next write fits.
    c.call(
        "data/delete",
        json!({"collection": "blobs", "id": acked.remove(0)}),
        T,
    )
    .await
    .expect("delete");
    acked.push(
        create(c.clone()).await.expect("room after the delete")["id"]
            .as_str()
            .expect("id")
            .to_owned(),
    );
    // Full again; a raised quota lets writes in, without a restart.
    while let Ok(r) = create(c.clone()).await {
        acked.push(r["id"].as_str().expect("id").to_owned());
    }
    let q = c
        .call("data/quota", json!({"maxDbMb": 16}), T)
        .await
        .expect("raise");
    assert_eq!(q["maxDbMb"], 16, "{q}");
    for _ in 0..20 {
        acked.push(
            create(c.clone())
                .await
                .expect("room under the raised quota")["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let d = data_health(&c).await;
    assert_eq!(d["details"]["storage"]["full"], false, "{d}");
    // Every record acknowledged along the way survives a restart.
    host.terminate().await;
    host.spawn(&[], &[]);
    let c = ready_client(&host, "blobs").await;
    let n = c
        .call("data/count", json!({"collection": "blobs"}), T)
        .await
        .expect("count");
    assert_eq!(n["count"], acked.len());
}
