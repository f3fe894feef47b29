//! The persona daemon in a real runtime: the data daemon on a temp dir, the AI daemon with its
//! offline `retrieval` adapter, and small stand-ins for the `user`, `room` and `chat` daemons (their
//! real versions live in the platform module; this test pins the persona's contract with them).

use daemonhost_ai::AiConfig;
use daemonhost_ai::AiDaemon;
use daemonhost_data_client::DataPath;
use daemonhost_platform::persona::state::PersonaConfig;
use daemonhost_platform::persona::{PersonaDaemon, PersonasConfig};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request, Runtime,
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

/// Not started: the test starts it and checks the report itself. `rounds` counts the rounds of
/// snapshots that wrote something, as told to the `after_snapshots` hook.
fn runtime(dir: &Path, path: DataPath, rounds: Arc<AtomicUsize>) -> Runtime {
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
            PersonaDaemon::new(
                slots.client().with_path(path),
                PersonasConfig {
                    persona: PersonaConfig {
                        tick_idle_ms: 50,
                        tick_active_ms: 20,
                        tick_overwhelmed_ms: 10,
                        ..PersonaConfig::default()
                    },
                    snapshot_interval_ms: 100,
                    ..PersonasConfig::default()
                },
            )
            .after_snapshots(move || {
                rounds.fetch_add(1, Ordering::Relaxed);
            }),
        );
    });
    rt
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
    let report = rt.start_all().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let r = rt.router();
    let human = r
        .ask(
            "data/create",
            json!({"collection": "users", "data": {"type": "human", "displayName": "Joel"}}),
        )
        .await
        .expect("human");
    let persona = r
        .ask("data/create", json!({"collection": "users", "data": {"type": "persona", "displayName": "Sage", "uniqueId": "sage"}}))
        .await
        .expect("persona");
    let pid = persona["id"].as_str().expect("id").to_owned();
    let room = r
        .ask(
            "data/create",
            json!({"collection": "rooms", "data": {"name": "general", "ownerId": human["id"]}}),
        )
        .await
        .expect("room");
    eventually("persona loaded from its creation event", || {
        let r = r.clone();
        async move {
            let l = r.ask("persona/list", json!({})).await.ok()?;
            (l["count"] == 1).then_some(())
        }
    })
    .await;
    r.ask(
        "chat/send",
        json!({"room": room["id"], "message": "Hello Sage, what is new?", "sender": human["id"]}),
    )
    .await
    .expect("send");
    let reply = eventually("the persona replies", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move {
            let page = r
                .ask(
                    "data/list",
                    json!({"collection": "chat_messages", "filter": {"senderId": pid}}),
                )
                .await
                .ok()?;
            page["items"].as_array()?.first().cloned()
        }
    })
    .await;
    let text = reply["content"]["text"].as_str().unwrap_or_default();
    assert!(text.contains("not a language model"), "{text}");
    assert_eq!(reply["roomId"], room["id"]);
    let status = r
        .ask("persona/status", json!({"id": pid}))
        .await
        .expect("status");
    assert_eq!(status["counters"]["replies"], 1, "{status}");
    // The persona's own reply is not offered back to it.
    assert_eq!(status["counters"]["received"], 1, "{status}");
    // Its state changed, so an interval's round of snapshots wrote it and told the hook.
    eventually("a snapshot round reported", || async {
        (rounds.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;

    let down = rt.shutdown().await;
    assert_eq!(down.live_tasks, 0);
    assert_eq!(down.live_subscriptions, 0);

    // Restart on the same dir: the snapshot is restored.
    let rt = runtime(dir.path(), path, Arc::new(AtomicUsize::new(0)));
    let report = rt.start_all().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let r = rt.router();
    let status = eventually("persona restored", || {
        let (r, pid) = (r.clone(), pid.clone());
        async move { r.ask("persona/status", json!({"id": pid})).await }
    })
    .await;
    assert_eq!(status["counters"]["replies"], 1, "{status}");
    assert_eq!(status["counters"]["received"], 1, "{status}");
    rt.shutdown().await;
}
