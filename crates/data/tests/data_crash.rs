//! Crash tests with a real process death: the test binary re-runs one of its own ignored tests
//! as a child (`--ignored --exact NAME`), the child is killed with SIGKILL or aborts at a chosen
//! point, and the parent reopens the same directory and checks what survived.
//!
//! These are the in-process stand-ins for the host-level end-to-end tests (which need the host
//! binary): the data daemon and the archive daemon run in a real runtime inside the child.
//! The children are `#[ignore]`d so that they never count as passing tests on their own: they
//! run only when their parent starts them.

mod common;

use common::{archive_config, assert_conserved, logs_schema};
use daemonhost_data::archive::CrashPoint;
use daemonhost_data::{ArchiveDaemon, Handle, StoreSlot};
use daemonhost_runtime::Runtime;
use daemonhost_testkit::{eventually, quiet_config};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

const DIR_ENV: &str = "DH_DATA_CRASH_DIR";
const POINT_ENV: &str = "DH_CRASH_POINT";
const ROWS_ENV: &str = "DH_CRASH_ROWS";

/// Run the ignored test `child` of this binary in a new process on `dir`, its stdout piped.
fn spawn_child(child: &str, dir: &Path, extra: &[(&str, &str)]) -> Child {
    let exe = std::env::current_exe().expect("exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        child,
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DIR_ENV, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

/// The child's data dir, set by its parent.
fn child_dir(parent: &str) -> PathBuf {
    std::env::var_os(DIR_ENV)
        .unwrap_or_else(|| panic!("{DIR_ENV} unset: this is a child process of {parent}; run that"))
        .into()
}

/// A line to the parent, flushed at once.
fn tell(line: &str) {
    let mut out = std::io::stdout();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

async fn boot(dir: &Path, archive: Option<CrashPoint>) -> (Runtime, StoreSlot) {
    daemonhost_testkit::data::boot(dir, quiet_config(), |b, slots| {
        if let Some(crash) = archive {
            b.register(ArchiveDaemon::new(archive_config(&slots.store, crash)));
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Durability: acknowledged writes survive SIGKILL.

/// Child of `data_acknowledged_writes_survive_sigkill`: write records from 8 concurrent tasks
/// forever, printing each acknowledged id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of data_acknowledged_writes_survive_sigkill; run by it"]
async fn child_write_forever() {
    let dir = child_dir("data_acknowledged_writes_survive_sigkill");
    let (rt, _) = boot(&dir, None).await;
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
    while let Some(id) = rx.recv().await {
        tell(&format!("ACK {id}"));
    }
}

#[test]
fn data_acknowledged_writes_survive_sigkill() {
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
        let (rt, slot) = boot(dir.path(), None).await;
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

const ARCHIVE_PARENTS: &str = "archive_crash_after_copy_loses_and_duplicates_nothing, \
     archive_crash_after_delete_loses_and_duplicates_nothing and \
     archive_sigkill_mid_run_loses_and_duplicates_nothing";

/// Child of the `archive_*` tests: fill `logs` with `DH_CRASH_ROWS` rows, print `FILLED`, start
/// an archive run with the crash point `DH_CRASH_POINT`, print `MOVING` once its first batch
/// has committed, and `SURVIVED` if the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the archive_* crash tests; run by them"]
async fn child_archive_and_crash() {
    let dir = child_dir(ARCHIVE_PARENTS);
    let point = match std::env::var(POINT_ENV).as_deref() {
        Ok("copy") => CrashPoint::AfterCopy,
        Ok("delete") => CrashPoint::AfterDelete,
        _ => CrashPoint::None,
    };
    let rows: usize = std::env::var(ROWS_ENV)
        .expect("DH_CRASH_ROWS")
        .parse()
        .expect("a row count");
    let (rt, _) = boot(&dir, Some(point)).await;
    let ops: Vec<Value> = (0..rows)
        .map(|i| json!({"operation": "create", "collection": "logs", "id": format!("l{i:05}"), "data": {"seq": i}}))
        .collect();
    rt.router()
        .ask("data/batch", json!({"operations": ops}))
        .await
        .expect("fill");
    tell("FILLED");
    // With a crash point the process dies inside the first batch.
    let run = tokio::spawn({
        let r = rt.router();
        async move { r.ask("archive/run", json!({})).await }
    });
    eventually("the first archive batch to commit", async || {
        let s = rt
            .router()
            .ask("archive/status", json!({}))
            .await
            .expect("status");
        s["movedTotal"].as_u64().unwrap_or(0) > 0
    })
    .await;
    tell("MOVING");
    run.await.expect("join").expect("archive run");
    tell("SURVIVED");
}

/// Lines up to and including the first that ends with `marker`; panics if the child ends first.
fn read_until(lines: &mut Lines<BufReader<ChildStdout>>, marker: &str) {
    let mut seen = Vec::new();
    for l in lines.by_ref().map_while(Result::ok) {
        let done = l.ends_with(marker);
        seen.push(l);
        if done {
            return;
        }
    }
    panic!("the child ended before printing {marker}: {seen:?}");
}

/// Run the child with crash point `point` (`copy`, `delete`, or `none` with a SIGKILL once the
/// first batch committed) over `rows` rows, reopen, and check nothing was lost or duplicated,
/// before and after finishing the archiving. Returns whether the child was still running its
/// archive run when it died.
fn archive_crash_at(point: &str, sigkill_mid_run: bool, rows: usize) -> bool {
    let dir = tempfile::tempdir().expect("tmp");
    logs_schema(dir.path());
    let rows_env = rows.to_string();
    let mut child = spawn_child(
        "child_archive_and_crash",
        dir.path(),
        &[(POINT_ENV, point), (ROWS_ENV, &rows_env)],
    );
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    read_until(&mut lines, "FILLED");
    if sigkill_mid_run {
        read_until(&mut lines, "MOVING");
        child.kill().expect("SIGKILL");
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    let survived = rest.iter().any(|l| l.contains("SURVIVED"));
    if !sigkill_mid_run {
        assert!(
            !status.success() && !survived,
            "child should have died at {point}"
        );
    }
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        // Reopen: core init completes the interrupted batch before serving.
        let (rt, slot) = boot(dir.path(), Some(CrashPoint::None)).await;
        let store = slot.get().expect("store");
        if point == "copy" {
            // The copy of the first batch (20 rows) was durable; the hot delete was replayed.
            assert_eq!(store.recovered_archive_rows(), 20);
        }
        let (_, cold) = assert_conserved(&store, rows).await;
        if sigkill_mid_run {
            assert!(cold >= 20, "the kill came after a committed batch: {cold}");
        }
        // And archiving finishes the job with nothing lost or duplicated.
        let r = rt
            .router()
            .ask("archive/run", json!({}))
            .await
            .expect("run");
        assert!(r.get("moved").is_some(), "{r}");
        assert_eq!(assert_conserved(&store, rows).await, (50, rows - 50));
        rt.shutdown().await;
    });
    !survived
}

#[test]
fn archive_crash_after_copy_loses_and_duplicates_nothing() {
    assert!(archive_crash_at("copy", false, 230));
}

#[test]
fn archive_crash_after_delete_loses_and_duplicates_nothing() {
    assert!(archive_crash_at("delete", false, 230));
}

#[test]
fn archive_sigkill_mid_run_loses_and_duplicates_nothing() {
    // 2030 rows: 99 batches of 20 in one run (the run's cap is 100), so the kill that follows
    // the first committed batch lands inside the run; at least one of three must.
    let mid_run = (0..3)
        .filter(|_| archive_crash_at("none", true, 2030))
        .count();
    assert!(mid_run >= 1, "every kill came after the run had ended");
}
