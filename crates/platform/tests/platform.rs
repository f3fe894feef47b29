//! Platform daemons in an in-process runtime with the real data daemon on a temp dir and a fake
//! `logger`: users, rooms and membership rules, chat, training, governance, console, caches.
//! Waiting is event-driven (subscribe, then check, then wait for the next event), never a sleep.

use daemonhost_data_client::DataClient;
use daemonhost_platform::{
    ChatDaemon, ConsoleDaemon, GovernanceDaemon, PlatformConfig, RoomDaemon, RoomMembershipDaemon,
    TrainingDaemon, UserDaemon,
};
use daemonhost_runtime::bus::Delivery;
use daemonhost_runtime::{
    CommandSpec, DaemonError, DaemonSpec, ErrorCode, Runtime, RuntimeBuilder,
};
use daemonhost_testkit::fake::Fake;
use daemonhost_testkit::{eventually_on, quiet_config, within};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The platform daemons, as the binary's catalog registers them.
fn register_platform(b: &mut RuntimeBuilder, store: DataClient, cfg: &PlatformConfig) {
    b.register(UserDaemon::new(store.clone(), cfg.users.clone()));
    b.register(RoomDaemon::new(store.clone(), cfg.rooms.clone()));
    b.register(RoomMembershipDaemon::new(
        store.clone(),
        cfg.membership.clone(),
    ));
    b.register(ChatDaemon::new(store.clone(), cfg.chat.clone()));
    b.register(TrainingDaemon::new(store.clone(), cfg.training.clone()));
    b.register(GovernanceDaemon::new(store, cfg.governance.clone()));
    if cfg.console {
        b.register(ConsoleDaemon::new(cfg.console_config.clone()));
    }
}

/// A stand-in for the logger daemon: answers `log/*` like it and records every request.
fn fake_logger() -> Fake {
    Fake::answering(
        DaemonSpec::new("logger")
            .command(CommandSpec::new("log/write", "fake"))
            .command(CommandSpec::new("log/write-batch", "fake")),
        |r| {
            let n = r.params["entries"].as_array().map_or(1, Vec::len);
            Ok(json!({ "queued": n, "rateLimited": 0 }))
        },
    )
}

struct Host {
    rt: Runtime,
    logger: Fake,
}

async fn boot_with(dir: &Path, cfg: PlatformConfig) -> Host {
    let logger = fake_logger();
    let (rt, _) = daemonhost_testkit::data::boot(dir, quiet_config(), |b, slots| {
        b.register(logger.clone());
        register_platform(b, slots.client(), &cfg);
    })
    .await;
    Host { rt, logger }
}

async fn boot(dir: &Path) -> Host {
    boot_with(dir, PlatformConfig::default()).await
}

impl Host {
    async fn ask(&self, cmd: &str, p: Value) -> Result<Value, DaemonError> {
        self.rt.router().ask(cmd, p).await
    }
    async fn ok(&self, cmd: &str, p: Value) -> Value {
        match self.ask(cmd, p.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{cmd} {p}: {e}"),
        }
    }
    async fn err(&self, cmd: &str, p: Value) -> DaemonError {
        match self.ask(cmd, p.clone()).await {
            Ok(v) => panic!("{cmd} {p} should fail, got {v}"),
            Err(e) => e,
        }
    }
    async fn user(&self, name: &str, kind: &str) -> String {
        let u = self
            .ok(
                "user/create",
                json!({"displayName": name, "type": kind, "uniqueId": name}),
            )
            .await;
        u["id"].as_str().expect("id").to_owned()
    }
    async fn members(&self, room: &str) -> Vec<String> {
        let m = self.ok("room/members", json!({ "room": room })).await;
        m["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|m| m["userId"].as_str().map(str::to_owned))
            .collect()
    }
    fn details(&self, daemon: &str) -> Value {
        self.rt
            .reports()
            .into_iter()
            .find(|r| r.name == daemon)
            .and_then(|r| r.details)
            .unwrap_or(Value::Null)
    }
    /// Wait until `cond` holds, re-checking after each event on `pattern` and, for effects
    /// that publish nothing afterwards (a counter), on a poll tick.
    async fn until(&self, pattern: &str, what: &str, cond: impl AsyncFnMut() -> bool) {
        eventually_on(&self.rt.bus(), pattern, what, cond).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_users_create_get_list_update_with_kind_validation() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = boot(dir.path()).await;
    let alice = h.user("alice", "human").await;
    let bot = h.user("helper", "persona").await;
    let _agent = h
        .ok("user/create", json!({"displayName": "A", "kind": "agent"}))
        .await;

    let e = h
        .err("user/create", json!({"displayName": "x", "type": "robot"}))
        .await;
    assert_eq!(e.code, ErrorCode::Validation);
    assert!(e.message.starts_with("type:"), "{}", e.message);
    let e = h.err("user/create", json!({"type": "human"})).await;
    assert!(e.message.contains("displayName"), "{}", e.message);
    let e = h
        .err(
            "user/create",
            json!({"type": "human", "displayName": "x".repeat(101)}),
        )
        .await;
    assert_eq!(e.code, ErrorCode::Validation);
    assert!(e.message.contains("displayName"), "{}", e.message);

    let got = h.ok("user/get", json!({ "id": alice })).await;
    assert_eq!(got["displayName"], "alice");
    assert_eq!(got["type"], "human");
    let got = h.ok("user/get", json!({ "uniqueId": "helper" })).await;
    assert_eq!(got["id"], json!(bot));
    let e = h.err("user/get", json!({ "id": "nope" })).await;
    assert_eq!(e.code, ErrorCode::NotFound);

    let personas = h.ok("user/list", json!({ "type": "persona" })).await;
    assert_eq!(personas["items"].as_array().expect("items").len(), 1);
    let all = h.ok("user/list", json!({ "limit": 2 })).await;
    assert_eq!(all["items"].as_array().expect("items").len(), 2);
    assert!(all["nextCursor"].is_string());
    let e = h.err("user/list", json!({ "type": "robot" })).await;
    assert!(e.message.starts_with("type:"), "{}", e.message);

    let up = h
        .ok(
            "user/update",
            json!({ "id": alice, "displayName": "Alice", "status": "online" }),
        )
        .await;
    assert_eq!(up["displayName"], "Alice");
    assert_eq!(
        h.ok("user/get", json!({ "id": alice })).await["status"],
        "online"
    );
    let e = h
        .err("user/update", json!({ "id": alice, "type": "robot" }))
        .await;
    assert!(e.message.starts_with("type:"), "{}", e.message);
    let e = h
        .err("user/update", json!({ "id": "nope", "status": "online" }))
        .await;
    assert_eq!(e.code, ErrorCode::NotFound);

    // Every user has its state, including ones created behind the daemon's back.
    let st = h.ok("user/state", json!({ "userId": alice })).await;
    assert_eq!(st["userId"], json!(alice));
    let raw = h
        .ok(
            "data/create",
            json!({"collection": "users", "data": {"type": "agent", "displayName": "raw"}}),
        )
        .await;
    let raw_id = raw["id"].as_str().expect("id").to_owned();
    h.until("data:user_states:created", "raw user's state", || async {
        h.ask("user/state", json!({ "userId": raw_id }))
            .await
            .is_ok()
    })
    .await;
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_general_exists_after_first_start_and_is_not_duplicated() {
    let dir = tempfile::tempdir().expect("tmp");
    for _ in 0..2 {
        let h = boot(dir.path()).await;
        let rooms = h
            .ok(
                "data/list",
                json!({"collection": "rooms", "filter": {"uniqueId": "general"}}),
            )
            .await;
        assert_eq!(rooms["items"].as_array().expect("items").len(), 1);
        let systems = h.ok("user/list", json!({ "type": "system" })).await;
        assert_eq!(systems["items"].as_array().expect("items").len(), 1);
        let g = h.ok("room/get", json!({ "room": "general" })).await;
        assert_eq!(g["ownerId"], systems["items"][0]["id"]);
        h.rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_existing_users_join_general_in_deferred_init_and_new_users_on_creation() {
    let dir = tempfile::tempdir().expect("tmp");
    // Users that exist before the platform daemons ever ran.
    let mut before = Vec::new();
    {
        let (rt, _) = daemonhost_testkit::data::boot(dir.path(), quiet_config(), |_, _| {}).await;
        for i in 0..3 {
            let u = rt
                .router()
                .ask(
                    "data/create",
                    json!({"collection": "users", "data": {"type": "human", "displayName": format!("old{i}")}}),
                )
                .await
                .expect("create");
            before.push(u["id"].as_str().expect("id").to_owned());
        }
        rt.shutdown().await;
    }
    let mut cfg = PlatformConfig::default();
    cfg.membership.page = 2; // several catch-up pages
    let h = boot_with(dir.path(), cfg).await;
    h.until("data:rooms:updated", "catch-up joins", || async {
        let m = h.members("general").await;
        before.iter().all(|u| m.contains(u))
    })
    .await;
    // Their states were reconciled too.
    for u in &before {
        h.until("data:user_states:created", "reconciled state", || async {
            h.ask("user/state", json!({ "userId": u })).await.is_ok()
        })
        .await;
    }
    // A new user joins on its creation event.
    let carol = h.user("carol", "human").await;
    h.until("data:rooms:updated", "carol in general", || async {
        h.members("general").await.contains(&carol)
    })
    .await;
    let m = h.members("general").await;
    let mut uniq = m.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), m.len(), "no duplicate members: {m:?}");
    let st = h.ok("room-membership/status", json!({})).await;
    assert!(st["caughtUp"].as_u64().expect("n") >= 3, "{st}");
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_room_names_are_checked_and_join_leave_and_check_track_membership() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = boot(dir.path()).await;
    let alice = h.user("alice", "human").await;
    let bob = h.user("bob", "human").await;
    let r = h
        .ok(
            "room/create",
            json!({ "name": "Dev-Updates", "ownerId": alice, "topic": "ship it" }),
        )
        .await;
    assert_eq!(r["uniqueId"], "dev-updates");
    let e = h.err("room/create", json!({ "name": "dev-updates" })).await;
    assert!(e.message.starts_with("name:"), "{}", e.message);
    let e = h.err("room/create", json!({ "name": "no spaces" })).await;
    assert!(e.message.starts_with("name:"), "{}", e.message);

    let j = h
        .ok("room/join", json!({ "room": "dev-updates", "userId": bob }))
        .await;
    assert_eq!(j["joined"], json!([bob]));
    assert_eq!(j["memberCount"], 2);
    let again = h
        .ok(
            "room/join",
            json!({ "room": r["id"], "userIds": [bob, alice] }),
        )
        .await;
    assert_eq!(again["joined"], json!([]));
    assert_eq!(again["alreadyMembers"], 2);
    let e = h
        .err(
            "room/join",
            json!({ "room": "dev-updates", "userId": "ghost" }),
        )
        .await;
    assert!(e.message.starts_with("userId:"), "{}", e.message);
    let c = h
        .ok(
            "room/check",
            json!({ "room": "DEV-UPDATES", "userId": bob }),
        )
        .await;
    assert_eq!(c["member"], true);

    let l = h
        .ok(
            "room/leave",
            json!({ "room": "dev-updates", "userId": bob }),
        )
        .await;
    assert_eq!(l["left"], true);
    assert_eq!(l["memberCount"], 1);
    assert!(!h.members("dev-updates").await.contains(&bob));
    let c = h
        .ok(
            "room/check",
            json!({ "room": "dev-updates", "userId": bob }),
        )
        .await;
    assert_eq!(c["member"], false);
    let l = h
        .ok(
            "room/leave",
            json!({ "room": "dev-updates", "userId": bob }),
        )
        .await;
    assert_eq!(l["left"], false);
    let e = h.err("room/get", json!({ "room": "nowhere" })).await;
    assert_eq!(e.code, ErrorCode::NotFound);
    let list = h.ok("room/list", json!({})).await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|r| r.get("members").is_none()));
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_chat_history_pages_back_in_time_order_and_senders_must_be_members() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = boot(dir.path()).await;
    let alice = h.user("alice", "human").await;
    let outsider = h.user("outsider", "human").await;
    h.ok("room/join", json!({ "room": "general", "userId": alice }))
        .await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let m = h
            .ok(
                "chat/send",
                json!({ "room": "general", "message": format!("m{i}"), "sender": alice }),
            )
            .await;
        assert_eq!(m["senderName"], "alice");
        assert_eq!(m["senderType"], "human");
        assert_eq!(m["deduplicated"], false);
        ids.push(m["id"].as_str().expect("id").to_owned());
    }
    // Default sender: the system user, allowed anywhere.
    let sys = h
        .ok("chat/send", json!({ "room": "general", "message": "sys" }))
        .await;
    assert_eq!(sys["senderType"], "system");
    ids.push(sys["id"].as_str().expect("id").to_owned());

    let e = h
        .err(
            "chat/send",
            json!({ "room": "general", "message": "x", "sender": "ghost" }),
        )
        .await;
    assert!(e.message.starts_with("sender:"), "{}", e.message);
    let dm = h
        .ok(
            "room/create",
            json!({ "name": "private-room", "ownerId": alice }),
        )
        .await;
    let e = h
        .err(
            "chat/send",
            json!({ "room": dm["id"], "message": "x", "sender": outsider }),
        )
        .await;
    assert_eq!(e.code, ErrorCode::Validation);
    assert!(e.message.starts_with("sender:"), "{}", e.message);
    let e = h
        .err("chat/send", json!({ "room": "general", "message": "  " }))
        .await;
    assert!(e.message.starts_with("message:"), "{}", e.message);
    let e = h
        .err("chat/send", json!({ "room": "nowhere", "message": "x" }))
        .await;
    assert_eq!(e.code, ErrorCode::NotFound);

    let texts = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["content"]["text"].as_str().expect("text").to_owned())
            .collect()
    };
    let page = h
        .ok("chat/history", json!({ "room": "general", "limit": 3 }))
        .await;
    assert_eq!(texts(&page), ["m5", "m6", "sys"]);
    assert_eq!(page["hasMore"], true);
    assert_eq!(page["nextBefore"], json!(ids[5]));
    let page2 = h
        .ok(
            "chat/history",
            json!({ "room": "general", "limit": 3, "before": page["nextBefore"] }),
        )
        .await;
    assert_eq!(texts(&page2), ["m2", "m3", "m4"]);
    let page3 = h
        .ok(
            "chat/history",
            json!({ "room": "general", "limit": 3, "before": page2["nextBefore"] }),
        )
        .await;
    assert_eq!(texts(&page3), ["m0", "m1"]);
    assert_eq!(page3["hasMore"], false);
    assert!(page3["nextBefore"].is_null());
    let all = h.ok("chat/history", json!({ "room": "general" })).await;
    assert_eq!(all["messages"].as_array().expect("m").len(), 8);
    // `before` as a timestamp far in the future returns the newest page; in the past, nothing.
    let future = h
        .ok(
            "chat/history",
            json!({ "room": "general", "limit": 1, "before": "2999-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(texts(&future), ["sys"]);
    let past = h
        .ok("chat/history", json!({ "room": "general", "before": 1000 }))
        .await;
    assert!(texts(&past).is_empty());
    let e = h
        .err("chat/history", json!({ "room": "general", "limit": 501 }))
        .await;
    assert!(e.message.starts_with("limit:"), "{}", e.message);
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_chat_resend_returns_the_original_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = boot(dir.path()).await;
    let p = json!({ "room": "general", "message": "once", "clientMessageId": "c-1" });
    let first = h.ok("chat/send", p.clone()).await;
    // Concurrent resends too: all answered with the same record.
    let (a, b) = tokio::join!(h.ok("chat/send", p.clone()), h.ok("chat/send", p.clone()));
    for again in [a, b] {
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again["deduplicated"], true);
        // The cache keeps only the id: the answer is the stored record, read back whole.
        assert_eq!(again["content"], first["content"]);
        assert_eq!(again["timestamp"], first["timestamp"]);
        assert_eq!(again["roomId"], first["roomId"]);
    }
    // Deleted since: still deduplicated (nothing stored again), and said so.
    let gone = h
        .ok(
            "chat/send",
            json!({ "room": "general", "message": "gone", "clientMessageId": "c-3" }),
        )
        .await;
    h.ok(
        "data/delete",
        json!({ "collection": "chat_messages", "id": gone["id"] }),
    )
    .await;
    let again = h
        .ok(
            "chat/send",
            json!({ "room": "general", "message": "gone", "clientMessageId": "c-3" }),
        )
        .await;
    assert_eq!(again["id"], gone["id"]);
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["deleted"], true);
    let other = h
        .ok(
            "chat/send",
            json!({ "room": "general", "message": "once", "clientMessageId": "c-2" }),
        )
        .await;
    assert_ne!(other["id"], first["id"]);
    let n = h
        .ok("data/count", json!({"collection": "chat_messages"}))
        .await;
    assert_eq!(n["count"], 2);
    let d = h.details("chat");
    assert_eq!(d["deduplicated"], 3, "{d}");
    assert_eq!(d["caches"]["message-dedup"]["len"], 3, "{d}");
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_chat_resend_after_a_restart_returns_the_original_message_not_a_second_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = json!({ "room": "general", "message": "once", "clientMessageId": "k-1" });
    let first = {
        let h = boot(dir.path()).await;
        let first = h.ok("chat/send", p.clone()).await;
        assert_eq!(first["deduplicated"], false);
        h.rt.shutdown().await;
        first
    };
    // A new host: its dedup cache is empty, the database still knows the key.
    let h = boot(dir.path()).await;
    let again = h.ok("chat/send", p.clone()).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["content"], first["content"]);
    let n = h
        .ok("data/count", json!({"collection": "chat_messages"}))
        .await;
    assert_eq!(n["count"], 1);
    // The same key from another sender is another message.
    let other_user = h
        .ok(
            "user/create",
            json!({ "displayName": "Ada", "type": "human" }),
        )
        .await;
    h.ok(
        "room/join",
        json!({ "room": "general", "userId": other_user["id"] }),
    )
    .await;
    let theirs = h
        .ok(
            "chat/send",
            json!({ "room": "general", "message": "once", "clientMessageId": "k-1", "sender": other_user["id"] }),
        )
        .await;
    assert_ne!(theirs["id"], first["id"]);
    assert_eq!(theirs["deduplicated"], false);
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_training_example_holds_the_last_n_messages_from_one_query() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = PlatformConfig::default();
    cfg.training.rooms = vec!["general".into()];
    cfg.training.context = 3;
    let h = boot_with(dir.path(), cfg).await;
    h.ok("room/create", json!({ "name": "elsewhere" })).await;
    let count = || async {
        h.ok("data/count", json!({"collection": "training_examples"}))
            .await["count"]
            .as_u64()
            .expect("n")
    };
    for i in 0..5 {
        h.ok(
            "chat/send",
            json!({ "room": "general", "message": format!("t{i}") }),
        )
        .await;
    }
    h.until("data:training_examples:created", "5 examples", || async {
        count().await == 5
    })
    .await;
    // Not in a configured room: no example.
    h.ok(
        "chat/send",
        json!({ "room": "elsewhere", "message": "ignored" }),
    )
    .await;
    // Caches are warm now: one more message in general costs exactly one read (the context
    // query): sender and room come from caches, the rest are writes.
    let reads = || async {
        h.ok("data/stats", json!({})).await["primary"]["reads"]
            .as_u64()
            .expect("reads")
    };
    h.until(
        "data:training_examples:created",
        "ignored counted",
        || async { h.ok("training/status", json!({})).await["ignored"] == 1 },
    )
    .await;
    let mut created =
        h.rt.bus()
            .subscribe("data:training_examples:created")
            .expect("sub");
    let r0 = reads().await;
    h.ok("chat/send", json!({ "room": "general", "message": "t5" }))
        .await;
    within("the example's event", created.recv())
        .await
        .expect("event");
    let r1 = reads().await;
    assert_eq!(
        r1 - r0,
        1,
        "one context query per example, nothing else read"
    );
    // The counter moves just after the write that published the event.
    h.until("data:training_examples:created", "counter", || async {
        h.ok("training/status", json!({})).await["examples"] == 6
    })
    .await;
    let st = h.ok("training/status", json!({})).await;
    assert_eq!(st["contextQueries"], 6, "one list per example: {st}");
    let ex = h
        .ok(
            "data/list",
            json!({"collection": "training_examples", "limit": 1}),
        )
        .await;
    let msgs = ex["items"][0]["messages"].as_array().expect("messages");
    let texts: Vec<&str> = msgs.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["t3", "t4", "t5"]);
    assert_eq!(ex["items"][0]["messageCount"], 3);
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_governance_propose_vote_finalize_and_tie_needs_review() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = boot(dir.path()).await;
    let mut review =
        h.rt.bus()
            .subscribe("governance:manual-review-required")
            .expect("sub");
    let p = h
        .ok(
            "decision/propose",
            json!({"title": "Lunch", "options": ["pizza", "sushi"], "proposer": "u1"}),
        )
        .await;
    let id = p["id"].as_str().expect("id").to_owned();
    assert_eq!(p["status"], "voting");
    let e = h
        .err(
            "decision/propose",
            json!({"title": "x", "options": ["a"], "proposer": "u1"}),
        )
        .await;
    assert!(e.message.starts_with("options:"), "{}", e.message);
    let e = h
        .err(
            "decision/propose",
            json!({"title": "x", "options": ["a", "b"], "proposer": "u1", "deadline": "soon"}),
        )
        .await;
    assert!(e.message.starts_with("deadline:"), "{}", e.message);

    h.ok(
        "decision/vote",
        json!({"proposalId": id, "voter": "a", "option": "pizza"}),
    )
    .await;
    h.ok(
        "decision/vote",
        json!({"proposalId": id, "voter": "b", "option": "pizza"}),
    )
    .await;
    // Changing a vote replaces it.
    let v = h
        .ok(
            "decision/vote",
            json!({"proposalId": id, "voter": "b", "option": "sushi"}),
        )
        .await;
    assert_eq!(v["votes"]["b"], "sushi");
    let e = h
        .err(
            "decision/vote",
            json!({"proposalId": id, "voter": "c", "option": "tacos"}),
        )
        .await;
    assert!(e.message.starts_with("option:"), "{}", e.message);
    h.ok(
        "decision/vote",
        json!({"proposalId": id, "voter": "c", "option": "sushi"}),
    )
    .await;
    let done = h.ok("decision/finalize", json!({"proposalId": id})).await;
    assert_eq!(done["status"], "finalized");
    assert_eq!(done["result"]["winner"], "sushi");
    assert_eq!(done["result"]["tally"]["sushi"], 2);
    let e = h
        .err(
            "decision/vote",
            json!({"proposalId": id, "voter": "d", "option": "sushi"}),
        )
        .await;
    assert!(e.message.contains("voting is closed"), "{}", e.message);
    // Finalising again changes nothing.
    let again = h.ok("decision/finalize", json!({"proposalId": id})).await;
    assert_eq!(again["version"], done["version"]);

    // A tie needs review and says so on the bus.
    let t = h
        .ok(
            "decision/propose",
            json!({"title": "Tie", "options": ["a", "b"], "proposer": "u1"}),
        )
        .await;
    let tid = t["id"].as_str().expect("id").to_owned();
    h.ok(
        "decision/vote",
        json!({"proposalId": tid, "voter": "x", "option": "a"}),
    )
    .await;
    h.ok(
        "decision/vote",
        json!({"proposalId": tid, "voter": "y", "option": "b"}),
    )
    .await;
    let r = h.ok("decision/finalize", json!({"proposalId": tid})).await;
    assert_eq!(r["status"], "manual_review");
    let ev = within("the review event", review.recv())
        .await
        .expect("event");
    let Delivery::Event(ev) = ev else {
        panic!("lagged")
    };
    assert_eq!(ev.data()["proposalId"], json!(tid));
    assert!(
        ev.data()["reason"]
            .as_str()
            .expect("reason")
            .contains("tie")
    );

    let listed = h
        .ok("decision/list", json!({"status": "manual_review"}))
        .await;
    assert_eq!(listed["items"].as_array().expect("items").len(), 1);
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_governance_finalizes_overdue_proposals_on_its_interval() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = PlatformConfig::default();
    cfg.governance.interval = Duration::from_millis(50);
    let h = boot_with(dir.path(), cfg).await;
    let mut fin =
        h.rt.bus()
            .subscribe("governance:decision-finalized")
            .expect("sub");
    let mut review =
        h.rt.bus()
            .subscribe("governance:manual-review-required")
            .expect("sub");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let p = h
        .ok(
            "decision/propose",
            json!({"title": "Soon", "options": ["y", "n"], "proposer": "u", "deadline": now + 200}),
        )
        .await;
    let later = h
        .ok(
            "decision/propose",
            json!({"title": "Later", "options": ["y", "n"], "proposer": "u"}),
        )
        .await;
    h.ok(
        "decision/vote",
        json!({"proposalId": p["id"], "voter": "a", "option": "y"}),
    )
    .await;
    let ev = within("the overdue proposal's finalisation", fin.recv())
        .await
        .expect("event");
    let Delivery::Event(ev) = ev else {
        panic!("lagged")
    };
    assert_eq!(ev.data()["proposalId"], p["id"]);
    assert_eq!(ev.data()["winner"], "y");
    let got = h.ok("decision/get", json!({"proposalId": p["id"]})).await;
    assert_eq!(got["status"], "finalized");
    let l = h
        .ok("decision/get", json!({"proposalId": later["id"]}))
        .await;
    assert_eq!(l["status"], "voting");
    assert!(review.try_recv().is_err(), "no review for a clear win");
    // The counter moves after the finalizing write (whose event woke us), so wait for it.
    h.until(
        "system:daemon:*",
        "governance counts the auto-finalized proposal",
        async || h.details("governance")["autoFinalized"] == 1,
    )
    .await;
    assert_eq!(h.details("governance")["autoFinalized"], 1);
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_console_forwards_lines_to_the_logger() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = boot(dir.path()).await;
    let r = h
        .ok(
            "console/write",
            json!({"level": "log", "message": "hello", "source": "widget", "args": [1]}),
        )
        .await;
    assert_eq!(r["forwarded"], 1);
    let r = h
        .ok(
            "console/write-batch",
            json!({"source": "ui", "entries": [
                {"level": "warn", "message": "a"},
                {"level": "error", "message": "b", "source": "other"},
                {"level": "info", "message": "c"},
            ]}),
        )
        .await;
    assert_eq!(r["forwarded"], 3);
    assert_eq!(r["batches"], 2);
    let e = h
        .err("console/write", json!({"level": "loud", "message": "x"}))
        .await;
    assert!(e.message.starts_with("level:"), "{}", e.message);
    let e = h
        .err(
            "console/write",
            json!({"level": "info", "message": "x", "source": "../etc"}),
        )
        .await;
    assert!(e.message.starts_with("source:"), "{}", e.message);
    let seen = h.logger.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(c, _)| c == "log/write-batch"));
    assert_eq!(seen[0].1["category"], "console/widget");
    assert_eq!(seen[0].1["entries"][0]["level"], "info");
    assert_eq!(seen[0].1["entries"][0]["args"], json!([1]));
    let ui = seen
        .iter()
        .find(|(_, p)| p["category"] == "console/ui")
        .expect("ui batch");
    assert_eq!(ui.1["entries"].as_array().expect("e").len(), 2);
    h.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_repeated_reads_hit_the_caches_and_data_events_invalidate_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = boot(dir.path()).await;
    let alice = h.user("alice", "human").await;
    // Let the auto-join of alice (which resolves `general`) finish before counting.
    h.until("data:rooms:updated", "alice in general", || async {
        h.members("general").await.contains(&alice)
    })
    .await;
    let users = |h: &Host| h.details("user")["caches"]["users"].clone();
    let before = users(&h);
    h.ok("user/get", json!({ "id": alice })).await;
    h.ok("user/get", json!({ "id": alice })).await;
    let after = users(&h);
    assert_eq!(
        after["hits"].as_u64().expect("hits") - before["hits"].as_u64().expect("hits"),
        2,
        "{after}"
    );
    // An update through the data daemon (not user/update) invalidates via the event.
    h.ok(
        "data/update",
        json!({"collection": "users", "id": alice, "data": {"displayName": "A2"}}),
    )
    .await;
    h.until("data:users:updated", "fresh user", || async {
        h.ok("user/get", json!({ "id": alice })).await["displayName"] == "A2"
    })
    .await;

    let names = |h: &Host| h.details("room")["caches"]["room-names"].clone();
    let n0 = names(&h);
    h.ok("room/check", json!({ "room": "general" })).await;
    h.ok("room/check", json!({ "room": "general" })).await;
    let n1 = names(&h);
    assert_eq!(
        n1["hits"].as_u64().expect("hits") - n0["hits"].as_u64().expect("hits"),
        2,
        "{n1}"
    );
    assert!(n1["capacity"].as_u64().expect("cap") >= 1);
    let d = h.details("room");
    assert!(
        d["caches"]["room-members"]["len"].as_u64().expect("len") >= 1,
        "{d}"
    );
    h.rt.shutdown().await;
}

/// Every platform daemon reads params with the protocol's one reader: a missing required param is
/// `validation` "<name>: required", a wrong-typed one `bad_request` "<name>: must be <type>", and
/// params that are not an object `bad_request` "params must be an object".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_params_errors_follow_the_protocol_contract() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = boot(dir.path()).await;
    let cases = [
        (
            "chat/send",
            json!({}),
            ErrorCode::Validation,
            "room: required",
        ),
        (
            "chat/send",
            Value::Null,
            ErrorCode::Validation,
            "room: required",
        ),
        (
            "chat/send",
            json!({"room": 5, "message": "x"}),
            ErrorCode::BadRequest,
            "room: must be a string",
        ),
        (
            "chat/send",
            json!({"room": "general", "message": null}),
            ErrorCode::Validation,
            "message: required",
        ),
        (
            "chat/send",
            json!({"room": "general", "message": ["x"]}),
            ErrorCode::BadRequest,
            "message: must be a string",
        ),
        (
            "chat/send",
            json!(["general"]),
            ErrorCode::BadRequest,
            "params must be an object",
        ),
        (
            "chat/history",
            json!({"room": "general", "limit": "9"}),
            ErrorCode::BadRequest,
            "limit: must be a non-negative integer",
        ),
        (
            "user/create",
            json!({"displayName": "x"}),
            ErrorCode::Validation,
            "type: required",
        ),
        (
            "user/create",
            json!({"type": "human"}),
            ErrorCode::Validation,
            "displayName: required",
        ),
        (
            "user/get",
            json!({}),
            ErrorCode::Validation,
            "id: required (or uniqueId)",
        ),
        (
            "user/update",
            json!({"id": "x", "displayName": "y", "version": "1"}),
            ErrorCode::BadRequest,
            "version: must be an integer",
        ),
        (
            "room/get",
            json!({}),
            ErrorCode::Validation,
            "room: required",
        ),
        (
            "room/join",
            json!({"room": "general"}),
            ErrorCode::Validation,
            "userId: required (or userIds)",
        ),
        (
            "room/join",
            json!({"room": "general", "userIds": [7]}),
            ErrorCode::BadRequest,
            "userIds[0]: must be a string",
        ),
        (
            "decision/propose",
            json!({"title": "t", "proposer": "p"}),
            ErrorCode::Validation,
            "options: required",
        ),
        (
            "decision/propose",
            json!({"title": "t", "options": ["a", "b"]}),
            ErrorCode::Validation,
            "proposer: required",
        ),
        (
            "decision/propose",
            json!({"title": "t", "proposer": "p", "options": "a,b"}),
            ErrorCode::BadRequest,
            "options: must be an array",
        ),
        (
            "decision/vote",
            json!({"proposalId": true}),
            ErrorCode::BadRequest,
            "proposalId: must be a string",
        ),
        (
            "console/write",
            json!({}),
            ErrorCode::Validation,
            "level: required",
        ),
        (
            "console/write-batch",
            json!({}),
            ErrorCode::Validation,
            "entries: required",
        ),
        (
            "console/write-batch",
            json!({"entries": [{"message": "a"}, {"level": "info"}]}),
            ErrorCode::Validation,
            "entries[1].message: required",
        ),
        (
            "console/write-batch",
            json!({"entries": ["a"]}),
            ErrorCode::BadRequest,
            "entries[0]: must be an object",
        ),
    ];
    for (cmd, params, code, message) in cases {
        let e = h.err(cmd, params.clone()).await;
        assert_eq!(
            (e.code, e.message.as_str()),
            (code, message),
            "{cmd} {params}"
        );
    }
    h.rt.shutdown().await;
}
