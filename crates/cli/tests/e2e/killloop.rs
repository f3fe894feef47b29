//! The kill loop: the host (and its worker processes) SIGKILLed at random moments under mixed
//! load, restarted on the same data dir, over and over. After every restart:
//!
//! - every acknowledged write is there (chat messages and data records whose answer arrived);
//! - no `clientMessageId` made two messages, although every send whose answer was lost is sent
//!   again after the restart, as a client would;
//! - every persona is restored and answers `persona/status`;
//! - a question acknowledged just before a SIGKILL is answered by every persona after the
//!   restart (caught up from its cursor), and no persona answers any message twice.
//!
//! CI runs `DAEMONHOST_KILL_CYCLES` cycles (20 by default); `scripts/kill_loop.sh` runs many more.
//! The moments are drawn from a seeded sequence (`DAEMONHOST_KILL_SEED`, printed), so a failing
//! run can be replayed.

use crate::harness::*;
use daemonhost_protocol::{CallError, Client};
use daemonhost_testkit::try_eventually_for;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

const T: Option<Duration> = Some(Duration::from_secs(10));

/// A small deterministic generator (xorshift64*), so the kill moments replay from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the load learned: acknowledged writes, and sends whose answer never came.
#[derive(Default)]
struct Ledger {
    /// clientMessageId → the id of the message the host acknowledged.
    acked_messages: BTreeMap<String, String>,
    /// clientMessageIds sent whose answer was lost (the host died first).
    unanswered: BTreeSet<String>,
    /// Ids of acknowledged `data/create`s.
    acked_records: BTreeSet<String>,
}

/// The pids of `pid`'s children (the worker processes of a host).
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

async fn send(c: &Client, sender: &str, cid: &str, text: &str) -> Result<Value, CallError> {
    c.call(
        "chat/send",
        json!({ "room": "general", "sender": sender, "message": text, "clientMessageId": cid }),
        T,
    )
    .await
}

/// One stream of load until the connection dies: chat sends and data creates, recorded.
async fn load(c: Client, human: String, tag: String, ledger: Arc<Mutex<Ledger>>) {
    for n in 0u64.. {
        let cid = format!("{tag}-{n}");
        ledger.lock().await.unanswered.insert(cid.clone());
        match send(&c, &human, &cid, &format!("message {cid}")).await {
            Ok(msg) => {
                let mut l = ledger.lock().await;
                l.unanswered.remove(&cid);
                if let Some(id) = msg["id"].as_str() {
                    l.acked_messages.insert(cid.clone(), id.to_owned());
                }
            }
            // The host died with the send in flight: the client does not know whether it was
            // stored, and will send it again.
            Err(_) => return,
        }
        match c
            .call(
                "data/create",
                json!({ "collection": "system_config", "data": { "name": cid } }),
                T,
            )
            .await
        {
            Ok(rec) => {
                if let Some(id) = rec["id"].as_str() {
                    ledger.lock().await.acked_records.insert(id.to_owned());
                }
            }
            Err(_) => return,
        }
    }
}

/// Every message in the store: (clientMessageId, sender) → ids.
async fn messages_by_key(c: &Client) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut cursor = Value::Null;
    loop {
        let page = c
            .call(
                "data/list",
                json!({ "collection": "chat_messages", "limit": 1000, "cursor": cursor,
                        "orderBy": [{"field": "createdAt", "direction": "asc"}] }),
                T,
            )
            .await
            .expect("list messages");
        for m in page["items"].as_array().expect("items") {
            let Some(cid) = m["content"]["clientMessageId"].as_str() else {
                continue;
            };
            let sender = m["senderId"].as_str().unwrap_or_default().to_owned();
            let id = m["id"].as_str().unwrap_or_default().to_owned();
            out.entry((cid.to_owned(), sender)).or_default().push(id);
        }
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_loses_no_acknowledged_write_and_no_client_message_id_makes_two_messages() {
    let cycles = env_u64("DAEMONHOST_KILL_CYCLES", 20);
    let seed = env_u64("DAEMONHOST_KILL_SEED", 0x5eed_1234_abcd_0001).max(1);
    println!("kill loop: {cycles} cycles, seed {seed:#x} (DAEMONHOST_KILL_SEED replays it)");
    let mut rng = Rng(seed);
    let mut host = Host::start(BIN);
    let c = host.client().await;
    let human = c
        .call(
            "user/create",
            json!({ "displayName": "Joel", "type": "human" }),
            T,
        )
        .await
        .expect("human")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut personas = Vec::new();
    for name in ["Sage", "Iris"] {
        let p = c
            .call(
                "user/create",
                json!({ "displayName": name, "type": "persona" }),
                T,
            )
            .await
            .expect("persona");
        personas.push(p["id"].as_str().expect("id").to_owned());
    }
    drop(c);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut killed_workers = 0usize;

    for cycle in 0..cycles {
        let c = host.client().await;
        // The client's retries first: every send whose answer was lost goes again, with the
        // same clientMessageId.
        let retry: Vec<String> = ledger.lock().await.unanswered.iter().cloned().collect();
        for cid in retry {
            let msg = send(&c, &human, &cid, &format!("message {cid}"))
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: resend {cid}: {e}"));
            let mut l = ledger.lock().await;
            l.unanswered.remove(&cid);
            l.acked_messages
                .insert(cid, msg["id"].as_str().expect("id").to_owned());
        }
        // Every persona came back.
        for p in &personas {
            eventually(
                &format!("cycle {cycle}: persona {p} restored"),
                async || {
                    c.call("persona/status", json!({ "id": p }), T)
                        .await
                        .is_ok()
                },
            )
            .await;
        }
        // Load on two connections, then a SIGKILL at a random moment; sometimes a worker
        // process first, sometimes the host with its workers at once.
        let loads: Vec<_> = (0..2)
            .map(|k| {
                let ledger = Arc::clone(&ledger);
                let human = human.clone();
                let tag = format!("c{cycle}k{k}");
                let socket = host.socket.clone();
                tokio::spawn(async move {
                    let c = Client::connect(&socket).await.expect("connect");
                    load(c, human, tag, ledger).await;
                })
            })
            .collect();
        let run_ms = 20 + rng.below(300);
        tokio::time::sleep(Duration::from_millis(run_ms)).await; // the kill's moment is the subject
        let pid = host.pid().as_raw();
        let workers = children(pid);
        if !workers.is_empty() && rng.below(3) == 0 {
            let w = workers[usize::try_from(rng.below(workers.len() as u64)).unwrap_or(0)];
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(w), Signal::SIGKILL);
            killed_workers += 1;
            tokio::time::sleep(Duration::from_millis(rng.below(100))).await; // the subject, too
        }
        let workers = children(pid);
        host.kill().await;
        for w in workers {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(w), Signal::SIGKILL);
        }
        for l in loads {
            let _ = l.await;
        }
        host.spawn(&[], &[]);
    }

    // The last check, on a host that is left running.
    let c = host.client().await;
    let retry: Vec<String> = ledger.lock().await.unanswered.iter().cloned().collect();
    for cid in retry {
        let msg = send(&c, &human, &cid, &format!("message {cid}"))
            .await
            .expect("final resend");
        let mut l = ledger.lock().await;
        l.unanswered.remove(&cid);
        l.acked_messages
            .insert(cid, msg["id"].as_str().expect("id").to_owned());
    }
    let l = ledger.lock().await;
    let by_key = messages_by_key(&c).await;
    // No key made two messages.
    let doubled: Vec<_> = by_key.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(doubled.is_empty(), "keys with two messages: {doubled:?}");
    // Every acknowledged message is there, under its key and with the acknowledged id.
    for (cid, id) in &l.acked_messages {
        let ids = by_key
            .get(&(cid.clone(), human.clone()))
            .unwrap_or_else(|| panic!("acknowledged message {cid} ({id}) is missing"));
        assert_eq!(ids, &vec![id.clone()], "message {cid}");
    }
    // Every acknowledged record is there.
    for id in &l.acked_records {
        c.call(
            "data/read",
            json!({ "collection": "system_config", "id": id }),
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("acknowledged record {id} is missing: {e}"));
    }
    for p in &personas {
        c.call("persona/status", json!({ "id": p }), T)
            .await
            .expect("persona restored");
    }
    // A question to both personas, acknowledged, then a SIGKILL before they can have answered
    // it: the restarted host catches up from the personas' cursors and both answer it.
    let question = send(
        &c,
        &human,
        "last-question",
        "Sage and Iris, what did you hear?",
    )
    .await
    .expect("last question")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    drop(c);
    host.kill().await;
    host.spawn(&[], &[]);
    let c = host.client().await;
    for p in &personas {
        let answered = try_eventually_for(Duration::from_secs(90), async || {
            let page = c
                .call(
                    "data/list",
                    json!({ "collection": "chat_messages", "filter": { "senderId": p, "replyToId": question } }),
                    T,
                )
                .await;
            page.is_ok_and(|pg| pg["items"].as_array().is_some_and(|a| a.len() == 1))
        })
        .await;
        if answered.is_err() {
            let st = c.call("persona/status", json!({ "id": p }), T).await;
            let mine = c
                .call(
                    "data/list",
                    json!({ "collection": "chat_messages", "filter": { "senderId": p }, "orderBy": "-timestamp", "limit": 20, "fields": ["replyToId", "timestamp"] }),
                    T,
                )
                .await;
            let newest = c
                .call(
                    "data/list",
                    json!({ "collection": "chat_messages", "orderBy": "-timestamp", "limit": 30, "fields": ["senderId", "timestamp", "replyToId"] }),
                    T,
                )
                .await;
            panic!(
                "persona {p} did not answer the question {question} asked just before the kill; status {st:?}; its messages {mine:?}; newest {newest:?}"
            );
        }
        // No message was answered twice by one persona, across every kill.
        let page = c
            .call(
                "data/list",
                json!({ "collection": "chat_messages", "filter": { "senderId": p }, "limit": 1000 }),
                T,
            )
            .await
            .expect("persona messages");
        let mut answered = BTreeSet::new();
        for m in page["items"].as_array().into_iter().flatten() {
            if let Some(to) = m["replyToId"].as_str() {
                assert!(
                    answered.insert(to.to_owned()),
                    "persona {p} answered {to} twice"
                );
            }
        }
    }
    println!(
        "kill loop: {cycles} cycles, {} messages and {} records acknowledged, {killed_workers} worker kills",
        l.acked_messages.len(),
        l.acked_records.len()
    );
    assert!(
        l.acked_messages.len() as u64 >= cycles,
        "the load made too little progress to prove anything: {} messages in {cycles} cycles",
        l.acked_messages.len()
    );
    drop(c);
    host.terminate().await;
}
