//! Worker processes end to end: the logger and search daemons placed in `daemonhost worker`
//! processes, supervised by the real host binary.

use crate::harness::*;
use daemonhost_protocol::{CallError, Client, ErrorCode};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const T: Option<Duration> = Some(Duration::from_secs(10));

/// `details` of daemon `name` in `health/status`.
async fn details(c: &Client, name: &str) -> Value {
    let s = c
        .call("health/status", Value::Null, T)
        .await
        .expect("health/status");
    s["daemons"]
        .as_array()
        .expect("daemons")
        .iter()
        .find(|d| d["name"] == name)
        .map(|d| d["details"].clone())
        .unwrap_or(Value::Null)
}

/// Poll until the worker of `name` is up and answers (for search: its index is loaded).
async fn serving_from_worker(c: &Client, name: &str) -> Value {
    eventually(&format!("{name} to serve from its worker"), async || {
        let d = details(c, name).await;
        if d["servingFrom"] == "worker" && d["worker"]["state"] == "up" {
            Ok(d)
        } else {
            Err(d)
        }
    })
    .await
}

/// A user, a room and a message with `text`; returns the message id and the room id.
async fn create_message(c: &Client, text: &str) -> (String, String) {
    let user = c
        .call(
            "data/create",
            json!({"collection": "users", "data": {"type": "human", "displayName": "Joel"}}),
            T,
        )
        .await
        .expect("user");
    let room = c
        .call(
            "data/create",
            json!({"collection": "rooms", "data": {"name": "general", "ownerId": user["id"]}}),
            T,
        )
        .await
        .expect("room");
    let msg = c
        .call(
            "data/create",
            json!({"collection": "chat_messages", "data": {
                "roomId": room["id"], "senderId": user["id"],
                "content": {"text": text}, "timestamp": "2026-01-01T00:00:00Z"
            }}),
            T,
        )
        .await
        .expect("message");
    (
        msg["id"].as_str().expect("id").to_owned(),
        room["id"].as_str().expect("room id").to_owned(),
    )
}

/// Poll `search/messages` until `id` is a hit.
async fn wait_found(c: &Client, query: &str, id: &str) -> Value {
    eventually(&format!("{id} found by '{query}'"), async || {
        let r = c
            .call("search/messages", json!({"query": query}), T)
            .await
            .expect("search");
        if r["hits"]
            .as_array()
            .is_some_and(|h| h.iter().any(|x| x["id"] == id))
        {
            Ok(r)
        } else {
            Err(r)
        }
    })
    .await
}

fn pid_of(d: &Value) -> u32 {
    d["worker"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .expect("worker pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_logger_and_search_run_as_processes_and_serve() {
    let host = Host::start(BIN);
    let c = host.client().await;
    for name in ["logger", "search"] {
        let d = serving_from_worker(&c, name).await;
        assert_eq!(d["placement"], "process", "{d}");
        let pid = pid_of(&d);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("worker cmdline");
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains(&format!("worker {name}")), "{cmdline}");
    }

    let w = c
        .call(
            "log/write",
            json!({"category": "e2e/workers", "level": "info", "component": "test", "message": "hello from e2e"}),
            T,
        )
        .await
        .expect("log/write");
    assert_eq!(w["queued"], true);
    c.call("log/flush", json!({}), T).await.expect("flush");
    let file = host.data.join("logs/e2e/workers.log");
    let text = std::fs::read_to_string(&file).expect("log file");
    assert!(text.contains("INFO [test] hello from e2e"), "{text}");

    let (id, room) = create_message(&c, "the quokka smiles at dawn").await;
    let r = wait_found(&c, "quokka", &id).await;
    assert_eq!(r["hits"][0]["roomId"], room.as_str());
    let d = details(&c, "search").await;
    assert_eq!(d["lastAnsweredBy"], "worker", "{d}");
    // A delete reaches the index too.
    c.call(
        "data/delete",
        json!({"collection": "chat_messages", "id": id}),
        T,
    )
    .await
    .expect("delete");
    eventually("the deleted message to leave the index", || async {
        let r = c
            .call("search/messages", json!({"query": "quokka"}), T)
            .await
            .expect("search");
        r["matched"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_chat_messages_empties_the_search_index_and_it_follows_new_messages() {
    let host = Host::start(BIN);
    let c = host.client().await;
    serving_from_worker(&c, "search").await;
    let (id, room) = create_message(&c, "the numbat digs").await;
    wait_found(&c, "numbat", &id).await;
    let t = c
        .call("data/truncate", json!({"collection": "chat_messages"}), T)
        .await
        .expect("truncate");
    assert_eq!(t["deleted"], 1, "{t}");
    eventually("the truncated message to leave the index", || async {
        let r = c
            .call("search/messages", json!({"query": "numbat"}), T)
            .await
            .expect("search");
        let d = details(&c, "search").await;
        r["matched"] == 0 && d["index"]["reindexes"] == 1 && d["lastAnsweredBy"] == "worker"
    })
    .await;
    // Both placements were emptied, not only the one answering: the worker's own counters
    // and the reload that followed (which found nothing to load) say so.
    let st = c.call("search/stats", json!({}), T).await.expect("stats");
    assert_eq!(st["docs"], 0, "{st}");
    let d = details(&c, "search").await;
    assert_eq!(d["index"]["lastError"], Value::Null, "{d}");
    // A message written after the truncation is found again.
    let users = c
        .call("data/list", json!({"collection": "users"}), T)
        .await
        .expect("users");
    let sender = users["items"][0]["id"].clone();
    let after = c
        .call(
            "data/create",
            json!({"collection": "chat_messages", "data": {
                "roomId": room, "senderId": sender,
                "content": {"text": "a numbat returns"}, "timestamp": "2026-01-01T00:00:01Z"
            }}),
            T,
        )
        .await
        .expect("message after truncate");
    let r = wait_found(&c, "numbat", after["id"].as_str().expect("id")).await;
    assert_eq!(r["matched"], 1, "{r}");
    // Clearing by hand would make the index lie about chat_messages; rebuilding is the tool.
    let e = c
        .call("search/index-clear", json!({}), T)
        .await
        .expect_err("refused");
    match e {
        CallError::Remote(b) => {
            assert_eq!(b.code, ErrorCode::BadRequest);
            assert!(b.message.contains("search/reindex"), "{}", b.message);
        }
        other => panic!("{other:?}"),
    }
    let r = c
        .call("search/reindex", json!({}), T)
        .await
        .expect("reindex");
    assert_eq!(r["scheduled"], true);
    eventually("the rebuild to run and keep the message", || async {
        let d = details(&c, "search").await;
        let r = c
            .call("search/messages", json!({"query": "numbat"}), T)
            .await
            .expect("search");
        d["index"]["reindexes"] == 2 && r["matched"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sigkill_under_load_every_request_is_answered_and_the_worker_returns() {
    let host = Host::start(BIN);
    let c = host.client().await;
    let (id, _) = create_message(&c, "pipelined wombat").await;
    serving_from_worker(&c, "search").await;
    wait_found(&c, "wombat", &id).await;
    let old = pid_of(&details(&c, "search").await);

    // Load: 32 callers sending search/messages back to back, each with a 2 s deadline.
    let deadline = Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..32 {
        let (c, stop, answered) = (c.clone(), stop.clone(), answered.clone());
        callers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = c
                    .call(
                        "search/messages",
                        json!({"query": "wombat"}),
                        Some(deadline),
                    )
                    .await;
                let took = t0.elapsed();
                answered.fetch_add(1, Ordering::Relaxed);
                outcomes.push((r, took));
            }
            outcomes
        }));
    }
    let a = answered.clone();
    eventually("load to be running", || {
        let a = a.clone();
        async move { a.load(Ordering::Relaxed) >= 200 }
    })
    .await;
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(old).expect("pid")),
        Signal::SIGKILL,
    )
    .expect("kill worker");
    // Back (new pid, up) within a second.
    let back = eventually_for(
        Duration::from_secs(1),
        "the worker back with a new pid",
        async || {
            let d = details(&c, "search").await;
            if d["worker"]["state"] == "up" && pid_of(&d) != old {
                Ok(d)
            } else {
                Err(d)
            }
        },
    )
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(1));
    assert_eq!(back["worker"]["restarts"], 1, "{back}");
    let cause = back["worker"]["last_cause"].as_str().unwrap_or_default();
    assert!(cause.contains("SIGKILL"), "{back}");
    // Keep the load on until the new worker is loaded and answering again.
    serving_from_worker(&c, "search").await;
    stop.store(true, Ordering::Relaxed);

    let (mut ok, mut unavailable) = (0, 0);
    for caller in callers {
        for (r, took) in caller.await.expect("caller") {
            assert!(
                took < deadline + Duration::from_millis(500),
                "an answer took {took:?}"
            );
            match r {
                Ok(v) => {
                    assert!(v["hits"].is_array(), "{v}");
                    ok += 1;
                }
                Err(CallError::Remote(e)) if e.code == ErrorCode::Unavailable => unavailable += 1,
                Err(CallError::Remote(e)) if e.code == ErrorCode::Timeout => unavailable += 1,
                Err(e) => panic!("unexpected outcome: {e:?}"),
            }
        }
    }
    assert!(ok > 0);
    // search/messages is idempotent: the ones in flight were retried on the fallback.
    assert_eq!(unavailable, 0, "ok {ok}, unavailable {unavailable}");
    // While the worker was down and reloading, the fallback served. (Requests in flight in the
    // worker at the kill were retried there too, counted in `retriedOnFallback`; how many were
    // in flight at that instant is a race, so it is not asserted.)
    eventually("the fallback to have served", || async {
        let d = details(&c, "search").await;
        d["fallbackServed"].as_u64().unwrap_or(0) > 0
    })
    .await;
    wait_found(&c, "wombat", &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_crash_at_start_fails_the_worker_and_the_fallback_serves() {
    let host = Host::start_with(
        BIN,
        &[],
        &[("DAEMONHOST_WORKER_FAULT", "crash_at_start:search")],
    );
    let c = host.client().await;
    let d = eventually("the search worker to fail for good", async || {
        let d = details(&c, "search").await;
        if d["worker"]["state"] == "failed" {
            Ok(d)
        } else {
            Err(d)
        }
    })
    .await;
    assert_eq!(d["degraded"], true, "{d}");
    assert_eq!(d["worker"]["starts"], 5, "{d}");
    let cause = d["worker"]["last_cause"].as_str().unwrap_or_default();
    assert!(cause.contains("start limit"), "{d}");
    assert!(cause.contains("exited with status 70"), "{d}");
    assert!(host.log().contains("injected crash at start"));
    // The daemon stays READY and answers from the in-process fallback.
    let (id, _) = create_message(&c, "resilient platypus").await;
    wait_found(&c, "platypus", &id).await;
    let d = details(&c, "search").await;
    assert_eq!(d["servingFrom"], "fallback", "{d}");
    assert_eq!(d["lastAnsweredBy"], "fallback", "{d}");
    // The logger's worker was not affected, and the search daemon's own log lines (through the
    // tracing layer) landed in its file.
    serving_from_worker(&c, "logger").await;
    let file = host.data.join("logs/daemons/search.log");
    eventually("the search daemon's log to record the failure", || async {
        c.call("log/flush", json!({}), T).await.expect("flush");
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("Worker failed"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_garbage_reply_fails_only_that_request() {
    let host = Host::start_with(
        BIN,
        &[],
        &[("DAEMONHOST_WORKER_FAULT", "garbage_reply_on:search/stats")],
    );
    let c = host.client().await;
    let before = serving_from_worker(&c, "search").await;
    let e = c
        .call("search/stats", json!({}), T)
        .await
        .expect_err("garbage");
    match e {
        CallError::Remote(e) => {
            assert_eq!(e.code, ErrorCode::Internal, "{e:?}");
            assert!(e.message.contains("protocol"), "{e:?}");
        }
        other => panic!("unexpected: {other:?}"),
    }
    let ok = c
        .call("search/stats", json!({}), T)
        .await
        .expect("the next request succeeds");
    assert!(ok["docs"].is_u64(), "{ok}");
    let after = details(&c, "search").await;
    assert_eq!(pid_of(&after), pid_of(&before), "{after}");
    assert_eq!(after["worker"]["restarts"], 0, "{after}");
}

/// Processes whose parent is `ppid` or whose command line mentions `needle`, with their state.
fn related_processes(ppid: i32, needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may contain spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("?").to_owned();
        let parent: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if parent == ppid || cmdline.contains(needle) {
            out.push((pid, format!("{state} {cmdline}")));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_none_and_no_zombie_remain_after_host_sigterm() {
    let mut host = Host::start(BIN);
    let c = host.client().await;
    serving_from_worker(&c, "logger").await;
    serving_from_worker(&c, "search").await;
    let host_pid = host.pid().as_raw();
    let needle = host.data.to_string_lossy().into_owned();
    let workers = related_processes(host_pid, &needle);
    assert!(
        workers
            .iter()
            .filter(|(_, s)| s.contains(" worker "))
            .count()
            >= 2,
        "{workers:?}"
    );
    drop(c);
    let st = host.terminate().await;
    assert_eq!(code(st), 0, "{}", host.log());
    let left = related_processes(host_pid, &needle);
    assert_eq!(left.len(), 0, "left behind: {left:?}");
    let run = host.data.join("run");
    let sockets: Vec<_> = std::fs::read_dir(&run)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(sockets.is_empty(), "sockets left: {sockets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logger_worker_under_its_log_quota_drops_and_counts_lines_and_health_says_so() {
    let host = Host::start_with_config(BIN, "[workers]\nmax_log_mb = 1\n");
    let c = host.client().await;
    serving_from_worker(&c, "logger").await;
    // 3 MiB of lines into a 1 MiB directory: every call is answered at once, none refused.
    for b in 0..3 {
        let entries: Vec<Value> = (0..1000)
            .map(|i| Value::from(format!("b{b} l{i:04} {}", "x".repeat(1000))))
            .collect();
        let r = c
            .call(
                "log/write-batch",
                json!({"category": "bulk", "level": "info", "component": "e2e", "entries": entries}),
                T,
            )
            .await
            .expect("queued, not refused");
        assert_eq!(r["queued"], 1000, "{r}");
    }
    c.call("log/flush", json!({}), T).await.expect("flush");
    let st = c.call("log/stats", json!({}), T).await.expect("stats");
    assert_eq!(st["full"], true, "the worker got the quota: {st}");
    let dropped = st["droppedFull"].as_u64().expect("droppedFull");
    assert!(dropped > 0, "{st}");
    assert!(
        st["logBytes"].as_u64().is_some_and(|b| b <= 1024 * 1024),
        "{st}"
    );
    let path = host.data.join("logs/bulk.log");
    let len = std::fs::metadata(&path).expect("bulk.log").len();
    assert!(len <= 1024 * 1024, "{len}");
    // health/status shows it (refreshed every second), and the host goes on answering.
    eventually("logFiles.full in the logger's details", async || {
        let d = details(&c, "logger").await;
        d["logFiles"]["full"] == true && d["logFiles"]["droppedFull"].as_u64() >= Some(dropped)
    })
    .await;
    c.call("ping", json!({}), T).await.expect("ping");
    // Room again: the file removed, writing resumes by itself.
    std::fs::remove_file(&path).expect("rm");
    eventually("the logger has room again", async || {
        let st = c.call("log/stats", json!({}), T).await.expect("stats");
        st["full"] == false
    })
    .await;
    c.call(
        "log/write",
        json!({"category": "bulk", "level": "info", "component": "e2e", "message": "after"}),
        T,
    )
    .await
    .expect("write");
    c.call("log/flush", json!({}), T).await.expect("flush");
    let text = std::fs::read_to_string(&path).expect("bulk.log again");
    assert!(text.contains("[log directory full: dropped "), "{text}");
    assert!(text.contains(" INFO [e2e] after"), "{text}");
}
