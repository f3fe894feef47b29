//! Crash tests with a real process death: the test binary re-runs itself as a child (selected
//! by an environment variable), the child is killed with SIGKILL or aborts at a chosen point,
//! and the parent reopens the same directory and checks what survived.
//!
//! These are the in-process stand-ins for the host-level end-to-end tests (which need the host
//! binary): the data daemon and the archive daemon run in a real runtime inside the child.

use daemonhost_data::archive::CrashPoint;
use daemonhost_data::{
    ArchiveConfig, ArchiveDaemon, DataConfig, DataDaemon, DataStore, Handle, ListParams, StoreSlot,
};
use daemonhost_runtime::{Runtime, RuntimeBuilder, RuntimeConfig};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "DH_DATA_CRASH_CHILD";
const DIR_ENV: &str = "DH_DATA_CRASH_DIR";

fn spawn_child(test: &str, dir: &Path, extra: &[(&str, &str)]) -> std::process::Child {
    let exe = std::env::current_exe().expect("exe");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

fn child_dir(test: &str) -> Option<std::path::PathBuf> {
    (std::env::var(CHILD_ENV).ok()? == test).then(|| std::env::var(DIR_ENV).ok().map(Into::into))?
}

fn runtime(dir: &Path, archive: Option<CrashPoint>) -> (Runtime, StoreSlot) {
    let mut b = RuntimeBuilder::new(RuntimeConfig {
        lag_probe: None,
        ..Default::default()
    });
    let d = DataDaemon::new(DataConfig::new(dir));
    let slot = d.store_slot();
    b.register(d);
    if let Some(crash) = archive {
        let mut cfg = ArchiveConfig::new(slot.clone());
        cfg.interval = Duration::from_secs(3600);
        cfg.batch_size = 20;
        cfg.max_file_rows = 60;
        cfg.crash = crash;
        b.register(ArchiveDaemon::new(cfg));
    }
    (b.build().expect("plan"), slot)
}

fn logs_schema(dir: &Path) {
    let d = dir.join("schemas");
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(
        d.join("logs.json"),
        json!({"collection": "logs", "fields": [
            {"name": "seq", "type": "integer", "required": true, "indexed": true},
            {"name": "msg", "type": "string"}
        ], "archive": {"maxRows": 100, "rowsPerArchive": 50, "orderBy": "seq"}})
        .to_string(),
    )
    .expect("schema");
}

// ---------------------------------------------------------------------------------------------
// Durability: acknowledged writes survive SIGKILL.

/// Child: write records from 8 concurrent tasks forever, printing each acknowledged id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_write_forever() {
    let Some(dir) = child_dir("child_write_forever") else {
        return;
    };
    let (rt, _) = runtime(&dir, None);
    rt.start_all().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    for t in 0..8 {
        let router = rt.router();
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let r = router
                    .ask(
                        "data/create",
                        json!({"collection": "system_config", "id": format!("t{t}-{i}"), "data": {"name": "x"}}),
                    )
                    .await;
                if let Ok(v) = r {
                    let _ = tx
                        .send(v["id"].as_str().unwrap_or_default().to_owned())
                        .await;
                }
            }
        });
    }
    drop(tx);
    let mut out = std::io::stdout();
    while let Some(id) = rx.recv().await {
        let _ = writeln!(out, "ACK {id}");
        let _ = out.flush();
    }
}

#[test]
fn data_acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = spawn_child("child_write_forever", dir.path(), &[]);
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while acked.len() < 3000 {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some((_, id)) = l.split_once("ACK ") {
                    acked.push(id.to_owned());
                }
            }
            _ => break,
        }
    }
    child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix.
    // Lines already in the pipe were acknowledged before the kill too.
    for l in lines.map_while(Result::ok) {
        if let Some((_, id)) = l.split_once("ACK ") {
            acked.push(id.to_owned());
        }
    }
    let _ = child.wait();
    assert!(
        acked.len() >= 3000,
        "child acknowledged only {}",
        acked.len()
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let (rt, slot) = runtime(dir.path(), None);
        rt.start_all().await;
        let store = slot.get().expect("store");
        let n = store
            .count(&Handle::Primary, "system_config", None)
            .await
            .expect("count");
        assert!(n as usize >= acked.len());
        let mut missing = Vec::new();
        for id in &acked {
            if store
                .read(&Handle::Primary, "system_config", id)
                .await
                .is_err()
            {
                missing.push(id.clone());
            }
        }
        assert!(
            missing.is_empty(),
            "{} acknowledged records lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        rt.shutdown().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Archive: a process death at any point of a batch loses and duplicates nothing.

async fn ids(store: &DataStore, h: &Handle) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let p = store
            .list(
                h,
                "logs",
                ListParams {
                    order_by: Some(json!("seq")),
                    limit: Some(json!(1000)),
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        out.extend(
            p.items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned)),
        );
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

async fn conserved(store: &DataStore, total: usize) -> (usize, usize) {
    let hot = ids(store, &Handle::Primary).await;
    let cold = ids(store, &Handle::Archive).await;
    let h: HashSet<&String> = hot.iter().collect();
    let c: HashSet<&String> = cold.iter().collect();
    assert_eq!(h.len(), hot.len(), "duplicates in hot");
    assert_eq!(c.len(), cold.len(), "duplicates in archive");
    assert!(h.is_disjoint(&c), "rows in both places");
    assert_eq!(
        hot.len() + cold.len(),
        total,
        "count before = hot + archived after"
    );
    (hot.len(), cold.len())
}

/// Child: fill `logs` with 230 rows (unless present) and archive with a crash point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_archive_and_crash() {
    let Some(dir) = child_dir("child_archive_and_crash") else {
        return;
    };
    let point = match std::env::var("DH_CRASH_POINT").as_deref() {
        Ok("copy") => CrashPoint::AfterCopy,
        Ok("delete") => CrashPoint::AfterDelete,
        _ => CrashPoint::None,
    };
    let (rt, _) = runtime(&dir, Some(point));
    rt.start_all().await;
    let ops: Vec<Value> = (0..230)
        .map(|i| json!({"operation": "create", "collection": "logs", "id": format!("l{i:04}"), "data": {"seq": i}}))
        .collect();
    let _ = rt
        .router()
        .ask("data/batch", json!({"operations": ops}))
        .await;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "FILLED");
    let _ = out.flush();
    // Dies inside the first batch.
    let _ = rt.router().ask("archive/run", json!({})).await;
    let _ = writeln!(out, "SURVIVED");
    let _ = out.flush();
}

fn archive_crash_at(point: &str, sigkill_mid_run: bool) {
    let dir = tempfile::tempdir().expect("tmp");
    logs_schema(dir.path());
    let mut child = spawn_child(
        "child_archive_and_crash",
        dir.path(),
        &[("DH_CRASH_POINT", point)],
    );
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut filled = false;
    let mut seen = Vec::new();
    for l in lines.by_ref().map_while(Result::ok) {
        seen.push(l.clone());
        if l.ends_with("FILLED") {
            filled = true;
            if sigkill_mid_run {
                std::thread::sleep(Duration::from_millis(3));
                let _ = child.kill();
            }
            break;
        }
    }
    assert!(filled, "child did not fill the table: {seen:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    if !sigkill_mid_run {
        assert!(
            !status.success() && !rest.iter().any(|l| l.contains("SURVIVED")),
            "child should have died at {point}"
        );
    }
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        // Reopen: core init completes the interrupted batch before serving.
        let (rt, slot) = runtime(dir.path(), Some(CrashPoint::None));
        rt.start_all().await;
        let store = slot.get().expect("store");
        if point == "copy" {
            // The copy of the first batch (20 rows) was durable; the hot delete was replayed.
            assert_eq!(store.recovered_archive_rows(), 20);
        }
        conserved(&store, 230).await;
        // And archiving finishes the job with nothing lost or duplicated.
        let r = rt
            .router()
            .ask("archive/run", json!({}))
            .await
            .expect("run");
        assert!(r.get("moved").is_some(), "{r}");
        let (hot, cold) = conserved(&store, 230).await;
        assert_eq!((hot, cold), (50, 180));
        rt.shutdown().await;
    });
}

#[test]
fn archive_crash_after_copy_loses_and_duplicates_nothing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    archive_crash_at("copy", false);
}

#[test]
fn archive_crash_after_delete_loses_and_duplicates_nothing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    archive_crash_at("delete", false);
}

#[test]
fn archive_sigkill_mid_run_loses_and_duplicates_nothing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for _ in 0..3 {
        archive_crash_at("none", true);
    }
}
