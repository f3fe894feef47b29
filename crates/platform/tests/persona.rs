//! The persona daemon in a real runtime: the data daemon on a temp dir, the AI daemon with its
//! offline `retrieval` adapter, and small stand-ins for the `user`, `room` and `chat` daemons (their
//! real versions live in the platform module; this test pins the persona's contract with them).

use daemonhost_ai::AiConfig;
use daemonhost_ai::AiDaemon;
use daemonhost_data_client::DataPath;
use daemonhost_platform::persona::state::PersonaConfig;
use daemonhost_platform::persona::{PersonaDaemon, PersonasConfig};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request, Router, Runtime,
};
use daemonhost_testkit::fake::Fake;
use daemonhost_testkit::{eventually, quiet_config};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Stand-in for the chat daemon: `chat/send` stores a `chat_messages` record.
struct FakeChat;
impl Daemon for FakeChat {
    type State = ();
    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("chat")
            .requires("data")
            .command(CommandSpec::new("chat/send", "send"))
            .command(CommandSpec::new("room/check", "membership"))
    }
    async fn start(&self, _: &Context) -> Result<(), BoxError> {
        Ok(())
    }
    async fn handle(&self, ctx: &Context, _: &(), req: Request) -> Result<Value, DaemonError> {
        if req.command == "room/check" {
            return Ok(json!({"member": true}));
        }
        let p = &req.params;
        let sender = p["sender"].as_str().unwrap_or_default().to_owned();
        let user = ctx
            .router()
            .ask("data/read", json!({"collection": "users", "id": sender}))
            .await?;
        ctx.router()
            .ask(
                "data/create",
                json!({"collection": "chat_messages", "data": {
                    "roomId": p["room"], "senderId": sender, "senderType": user["type"],
                    "senderName": user["displayName"],
                    "content": {"text": p["message"]}, "timestamp": now_rfc3339(),
                    "replyToId": p.get("replyTo").cloned().unwrap_or(Value::Null),
                }}),
            )
            .await
    }
}

fn now_rfc3339() -> Value {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    json!(ms)
}

/// Fast ticks, frequent snapshots; `tune` changes the rest.
fn config(tune: impl FnOnce(&mut PersonasConfig)) -> PersonasConfig {
    let mut c = PersonasConfig {
        persona: PersonaConfig {
            tick_idle_ms: 50,
            tick_active_ms: 20,
            tick_overwhelmed_ms: 10,
            ..PersonaConfig::default()
        },
        snapshot_interval_ms: 100,
        ..PersonasConfig::default()
    };
    tune(&mut c);
    c
}

/// Not started: the test starts it and checks the report itself. `rounds` counts the rounds of
/// snapshots that wrote something, as told to the `after_snapshots` hook.
fn runtime(dir: &Path, path: DataPath, rounds: Arc<AtomicUsize>) -> Runtime {
    runtime_with(dir, path, rounds, config(|_| {}))
}

fn runtime_with(
    dir: &Path,
    path: DataPath,
    rounds: Arc<AtomicUsize>,
    personas: PersonasConfig,
) -> Runtime {
    let (rt, _) = daemonhost_testkit::data::build(dir, quiet_config(), |b, slots| {
        b.register(AiDaemon::new(AiConfig {
            data_dir: dir.to_path_buf(),
            ..AiConfig::default()
        }));
        // The persona daemon only needs `user` and `room` to exist (ordering).
        b.register(Fake::new(DaemonSpec::new("user").requires("data")));
        b.register(Fake::new(DaemonSpec::new("room").requires("data")));
        b.register(FakeChat);
        b.register(
            PersonaDaemon::new(slots.client().with_path(path), personas).after_snapshots(
                move || {
                    rounds.fetch_add(1, Ordering::Relaxed);
                },
            ),
        );
    });
    rt
}

async fn start(rt: &Runtime) -> Router {
    let report = rt.start_all().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    rt.router()
}

async fn ask(r: &Router, command: &str, params: Value) -> Value {
    r.ask(command, params.clone())
        .await
        .unwrap_or_else(|e| panic!("{command} {params}: {e}"))
}

async fn user(r: &Router, kind: &str, name: &str) -> String {
    let u = ask(
        r,
        "data/create",
        json!({"collection": "users", "data": {"type": kind, "displayName": name, "uniqueId": name.to_lowercase()}}),
    )
    .await;
    u["id"].as_str().expect("id").to_owned()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A room whose members are `members` (joined now); returns its id.
async fn room(r: &Router, owner: &str, members: &[&str]) -> String {
    let list: Vec<Value> = members
        .iter()
        .map(|m| json!({"userId": m, "role": "member", "joinedAt": now_ms()}))
        .collect();
    let room = ask(
        r,
        "data/create",
        json!({"collection": "rooms", "data": {"name": "general", "ownerId": owner, "members": list}}),
    )
    .await;
    room["id"].as_str().expect("id").to_owned()
}

async fn send(r: &Router, room: &str, sender: &str, text: &str) -> Value {
    ask(
        r,
        "chat/send",
        json!({"room": room, "message": text, "sender": sender}),
    )
    .await
}

async fn messages_of(r: &Router, sender: &str) -> Vec<Value> {
    let page = ask(
        r,
        "data/list",
        json!({"collection": "chat_messages", "filter": {"senderId": sender}, "limit": 1000}),
    )
    .await;
    page["items"].as_array().cloned().unwrap_or_default()
}

async fn status(r: &Router, pid: &str) -> Value {
    ask(r, "persona/status", json!({"id": pid})).await
}

/// The persona's status, or None while it is not loaded yet.
async fn try_status(r: &Router, pid: &str) -> Option<Value> {
    r.ask("persona/status", json!({"id": pid})).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_answers_a_message_through_retrieval_and_its_state_survives_a_restart() {
    persona_answers_and_survives_a_restart(DataPath::Auto).await;
}

/// The same guarantee with the persona daemon reaching data only through `data/*` requests,
/// as on a host that does not run `data`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_on_the_routed_data_path_answers_and_its_state_survives_a_restart() {
    persona_answers_and_survives_a_restart(DataPath::Routed).await;
}

async fn persona_answers_and_survives_a_restart(path: DataPath) {
    let dir = tempfile::tempdir().expect("tmp");
    let rounds = Arc::new(AtomicUsize::new(0));
    let rt = runtime(dir.path(), path, Arc::clone(&rounds));
    let r = start(&rt).await;
    let human = user(&r, "human", "Joel").await;
    let pid = user(&r, "persona", "Sage").await;
    let room = room(&r, &human, &[&human, &pid]).await;
    // No waiting for the persona to be loaded: a message sent at once is still heard.
    send(&r, &room, &human, "Hello Sage, what is new?").await;
    let reply = eventually("the persona replies", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move { messages_of(&r, &pid).await.first().cloned() }
    })
    .await;
    let text = reply["content"]["text"].as_str().unwrap_or_default();
    assert!(text.contains("not a language model"), "{text}");
    assert_eq!(reply["roomId"], room.as_str());
    let st = status(&r, &pid).await;
    assert_eq!(st["counters"]["replies"], 1, "{st}");
    // The persona's own reply is not offered back to it.
    assert_eq!(st["counters"]["received"], 1, "{st}");
    // Its state changed, so an interval's round of snapshots wrote it and told the hook.
    eventually("a snapshot round reported", || async {
        (rounds.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;

    let down = rt.shutdown().await;
    assert_eq!(down.live_tasks, 0);
    assert_eq!(down.live_subscriptions, 0);

    // Restart on the same dir: the snapshot is restored, and re-reading the room from its
    // cursor hears nothing twice.
    let rt = runtime(dir.path(), path, Arc::new(AtomicUsize::new(0)));
    let r = start(&rt).await;
    let st = eventually("persona restored", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move { r.ask("persona/status", json!({"id": pid})).await }
    })
    .await;
    assert_eq!(st["counters"]["replies"], 1, "{st}");
    assert_eq!(st["counters"]["received"], 1, "{st}");
    assert_eq!(st["inbox"], 0, "{st}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_while_the_host_was_down_is_answered_once_after_the_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let rt = runtime(dir.path(), DataPath::Auto, Arc::new(AtomicUsize::new(0)));
    let r = start(&rt).await;
    let human = user(&r, "human", "Joel").await;
    let pid = user(&r, "persona", "Sage").await;
    let room = room(&r, &human, &[&human, &pid]).await;
    eventually("the persona follows the room", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move { (try_status(&r, &pid).await?["rooms"] == 1).then_some(()) }
    })
    .await;
    rt.shutdown().await;

    // The host is down; only the store runs, and a message is written to the room.
    let (data_only, _) =
        daemonhost_testkit::data::boot(dir.path(), quiet_config(), |_, _| {}).await;
    ask(
        &data_only.router(),
        "data/create",
        json!({"collection": "chat_messages", "data": {
            "roomId": room, "senderId": human, "senderType": "human",
            "content": {"text": "Are you there, Sage?"}, "timestamp": now_ms(),
        }}),
    )
    .await;
    data_only.shutdown().await;

    for round in 0..2 {
        let rt = runtime(dir.path(), DataPath::Auto, Arc::new(AtomicUsize::new(0)));
        let r = start(&rt).await;
        eventually("the personas are loaded and caught up", || {
            let r = r.clone();
            async move {
                let all = r.ask("persona/status", json!({})).await.ok()?;
                (all["resyncs"].as_u64() >= Some(1)).then_some(())
            }
        })
        .await;
        let replies = eventually("the persona answers what it missed", || {
            let (r, pid) = (r.clone(), pid.clone());
            async move {
                let m = messages_of(&r, &pid).await;
                (!m.is_empty()).then_some(m)
            }
        })
        .await;
        assert_eq!(replies.len(), 1, "round {round}: {replies:?}");
        let st = status(&r, &pid).await;
        assert_eq!(st["counters"]["received"], 1, "round {round}: {st}");
        assert_eq!(st["counters"]["replies"], 1, "round {round}: {st}");
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_from_a_full_queue_are_read_back_and_every_message_is_heard_once() {
    let dir = tempfile::tempdir().expect("tmp");
    // A queue of one event: a batch of 120 messages overflows it at once.
    let rt = runtime_with(
        dir.path(),
        DataPath::Auto,
        Arc::new(AtomicUsize::new(0)),
        config(|c| {
            c.event_queue = 1;
            // Heard, not answered: the inbox is what is checked.
            c.persona.max_replies = 0;
        }),
    );
    let r = start(&rt).await;
    let human = user(&r, "human", "Joel").await;
    let pid = user(&r, "persona", "Sage").await;
    let room = room(&r, &human, &[&human, &pid]).await;
    eventually("the persona follows the room", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move { (try_status(&r, &pid).await?["rooms"] == 1).then_some(()) }
    })
    .await;
    let ops: Vec<Value> = (0..120)
        .map(|i| {
            json!({"operation": "create", "collection": "chat_messages", "data": {
                "roomId": room, "senderId": human, "senderType": "human",
                "content": {"text": format!("message {i}")}, "timestamp": now_ms(),
            }})
        })
        .collect();
    ask(
        &r,
        "data/batch",
        json!({"operations": ops, "return": "none"}),
    )
    .await;
    let st = eventually("every message heard", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move {
            let st = status(&r, &pid).await;
            (st["counters"]["received"] == 120).then_some(st)
        }
    })
    .await;
    assert_eq!(st["inbox"], 120, "{st}");
    let all = ask(&r, "persona/status", json!({})).await;
    assert!(
        all["lostEvents"].as_u64() > Some(0),
        "the queue overflowed: {all}"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_follows_exactly_the_rooms_it_is_a_member_of() {
    let dir = tempfile::tempdir().expect("tmp");
    let rt = runtime_with(
        dir.path(),
        DataPath::Auto,
        Arc::new(AtomicUsize::new(0)),
        config(|c| c.persona.max_replies = 0),
    );
    let r = start(&rt).await;
    let human = user(&r, "human", "Joel").await;
    let pid = user(&r, "persona", "Sage").await;
    let member = room(&r, &human, &[&human, &pid]).await;
    let other = room(&r, &human, &[&human]).await;
    send(&r, &other, &human, "not for the persona").await;
    send(&r, &member, &human, "for the persona").await;
    let st = eventually("the member room's message heard", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move {
            let st = try_status(&r, &pid).await?;
            (st["counters"]["received"] == 1).then_some(st)
        }
    })
    .await;
    assert_eq!(st["rooms"], 1, "{st}");
    // Leaving: unfollowed, and its waiting message dropped.
    ask(
        &r,
        "data/update",
        json!({"collection": "rooms", "id": member, "data": {"members": [{"userId": human}]}}),
    )
    .await;
    eventually("the room is left", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move {
            let st = status(&r, &pid).await;
            (st["rooms"] == 0 && st["inbox"] == 0).then_some(())
        }
    })
    .await;
    // Joining the other room: heard from the join on (its older message was before the join
    // window's start only if older than the persona; here it is within it, so it is heard).
    ask(
        &r,
        "data/update",
        json!({"collection": "rooms", "id": other, "data": {"members": [
            {"userId": human}, {"userId": pid, "joinedAt": now_ms()}
        ]}}),
    )
    .await;
    send(&r, &other, &human, "now for the persona").await;
    let st = eventually("the joined room's messages heard", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move {
            let st = status(&r, &pid).await;
            (st["counters"]["received"] == 3).then_some(st)
        }
    })
    .await;
    assert_eq!(st["rooms"], 1, "{st}");
    assert_eq!(st["inbox"], 2, "{st}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personas_answering_each_other_stop_at_the_chain_limit_until_a_human_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let rt = runtime_with(
        dir.path(),
        DataPath::Auto,
        Arc::new(AtomicUsize::new(0)),
        config(|c| c.persona.pace_replies = false),
    );
    let r = start(&rt).await;
    let human = user(&r, "human", "Joel").await;
    let mut ids = Vec::new();
    for name in ["Sage", "Ada", "Kai", "Mo"] {
        ids.push(user(&r, "persona", name).await);
    }
    let mut members: Vec<&str> = ids.iter().map(String::as_str).collect();
    members.push(&human);
    let room = room(&r, &human, &members).await;
    eventually("every persona follows the room", || {
        let (r, ids) = (r.clone(), ids.clone());
        async move {
            for id in &ids {
                if try_status(&r, id).await?["rooms"] != 1 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let persona_messages = async |r: &Router| {
        let mut n = 0;
        for id in &ids {
            n += messages_of(r, id).await.len();
        }
        n
    };
    for round in 1..=2 {
        send(&r, &room, &human, "What does everyone think?").await;
        // Quiet: every inbox empty, and every reply decided has landed in the room.
        eventually("the room goes quiet", || {
            let (r, ids) = (r.clone(), ids.clone());
            async move {
                let mut decided = 0;
                let mut landed = 0;
                for id in &ids {
                    let st = status(&r, id).await;
                    if st["inbox"] != 0 {
                        return None;
                    }
                    decided += st["counters"]["replies"].as_u64()?;
                    landed += messages_of(&r, id).await.len() as u64;
                }
                (decided == landed).then_some(())
            }
        })
        .await;
        let max_chain = PersonaConfig::default().max_chain as usize;
        let n = persona_messages(&r).await;
        assert!(
            n >= round && n <= round * max_chain,
            "round {round}: {n} persona messages"
        );
        let all = ask(&r, "persona/status", json!({})).await;
        let silenced: u64 = all["personas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["counters"]["chainSilenced"].as_u64())
            .sum();
        assert!(silenced > 0, "round {round}: {all}");
    }
    rt.shutdown().await;
}
