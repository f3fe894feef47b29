//! The chat platform against the real binary: a user created over the socket is auto-joined to
//! `general`, a message sent there is in its history, and a subscribed client gets the
//! `data:chat_messages:created` event.

use crate::harness::*;
use daemonhost_testkit::http::ProviderServer;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_user_joins_general_and_chat_reaches_history_and_subscribers() {
    let host = Host::start(BIN);
    let c = host.client().await;
    let t = Some(Duration::from_secs(10));

    let u = c
        .call(
            "user/create",
            json!({"displayName": "Joel", "type": "human"}),
            t,
        )
        .await
        .expect("user/create");
    let uid = u["id"].as_str().expect("id").to_owned();
    assert_eq!(u["type"], "human");

    eventually("the new user in general", || async {
        let m = c
            .call("room/members", json!({"room": "general"}), t)
            .await
            .expect("room/members");
        m["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["userId"] == json!(uid))
    })
    .await;

    let mut events = c
        .subscribe("data:chat_messages:created")
        .await
        .expect("subscribe");
    let sent = c
        .call(
            "chat/send",
            json!({"room": "general", "message": "hello from e2e", "sender": uid, "clientMessageId": "e2e-1"}),
            t,
        )
        .await
        .expect("chat/send");
    assert_eq!(sent["deduplicated"], false);
    let ev = tokio::time::timeout(WAIT, events.next_event())
        .await
        .expect("event in time")
        .expect("event");
    assert_eq!(ev.topic, "data:chat_messages:created");
    assert_eq!(ev.data["id"], sent["id"]);
    assert_eq!(ev.data["senderId"], json!(uid));

    let again = c
        .call(
            "chat/send",
            json!({"room": "general", "message": "hello from e2e", "sender": uid, "clientMessageId": "e2e-1"}),
            t,
        )
        .await
        .expect("resend");
    assert_eq!(again["id"], sent["id"]);
    assert_eq!(again["deduplicated"], true);

    let h = c
        .call("chat/history", json!({"room": "general", "limit": 10}), t)
        .await
        .expect("chat/history");
    let msgs = h["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["content"]["text"], "hello from e2e");

    // The platform daemons are in the graph with their dependencies and cache counters.
    let st = c
        .call("health/status", Value::Null, t)
        .await
        .expect("status");
    let daemons = st["daemons"].as_array().expect("daemons");
    let find = |n: &str| {
        daemons
            .iter()
            .find(|d| d["name"] == n)
            .unwrap_or_else(|| panic!("daemon {n} in {st}"))
    };
    assert_eq!(find("chat")["requires"], json!(["data", "room", "user"]));
    assert_eq!(find("room-membership")["requires"], json!(["data", "room"]));
    assert!(find("user")["details"]["caches"]["users"]["capacity"].is_u64());
    assert!(find("chat")["details"]["caches"]["message-dedup"]["hits"].is_u64());
    for n in [
        "user",
        "room",
        "room-membership",
        "chat",
        "training",
        "governance",
    ] {
        assert_eq!(find(n)["state"], "ready", "{n}");
    }
}

/// A persona created over the socket answers a message in `general` through the offline
/// `retrieval` adapter, and its reply is an ordinary chat message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_answers_in_general_through_retrieval_over_the_real_binary() {
    let host = Host::start(BIN);
    let c = host.client().await;
    let t = Some(Duration::from_secs(10));
    let human = c
        .call(
            "user/create",
            json!({"displayName": "Joel", "type": "human"}),
            t,
        )
        .await
        .expect("human");
    let persona = c
        .call(
            "user/create",
            json!({"displayName": "Sage", "type": "persona", "uniqueId": "sage"}),
            t,
        )
        .await
        .expect("persona");
    let (hid, pid) = (
        human["id"].as_str().expect("id").to_owned(),
        persona["id"].as_str().expect("id").to_owned(),
    );
    eventually("both in general and the persona hosted", || async {
        let m = c
            .call("room/members", json!({"room": "general"}), t)
            .await
            .expect("members");
        let members = m["members"].as_array().cloned().unwrap_or_default();
        let both = [&hid, &pid]
            .iter()
            .all(|id| members.iter().any(|m| m["userId"] == json!(id)));
        let hosted = c
            .call("persona/list", json!({}), t)
            .await
            .map(|l| l["count"] == 1)
            .unwrap_or(false);
        both && hosted
    })
    .await;
    c.call(
        "chat/send",
        json!({"room": "general", "message": "Sage, how is the rust daemon host doing?", "sender": hid}),
        t,
    )
    .await
    .expect("send");
    let reply = std::sync::Arc::new(parking_lot::Mutex::new(Value::Null));
    eventually("the persona's reply in the history", || {
        let (c, pid, reply) = (c.clone(), pid.clone(), reply.clone());
        async move {
            let h = c
                .call("chat/history", json!({"room": "general", "limit": 50}), t)
                .await
                .expect("history");
            let found = h["messages"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["senderId"] == json!(pid)).cloned());
            match found {
                Some(m) => {
                    *reply.lock() = m;
                    true
                }
                None => false,
            }
        }
    })
    .await;
    let reply = reply.lock().clone();
    let text = reply["content"]["text"]
        .as_str()
        .or_else(|| reply["content"].as_str())
        .unwrap_or_default();
    assert!(text.contains("not a language model"), "{reply}");
    let status = c
        .call("persona/status", json!({"id": pid}), t)
        .await
        .expect("status");
    assert_eq!(status["counters"]["replies"], 1, "{status}");
}

/// With a local OpenAI-compatible server configured, the persona's reply comes from it; with the
/// server gone, its circuit opens and the `retrieval` fallback answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_reply_comes_from_the_configured_server_then_the_fallback_when_it_is_down() {
    let server = ProviderServer::start().await;
    let base_url = server.base_url.clone();
    let tmp = tempdir();
    let cfg = tmp.path().join("host.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ai.breaker]\nfailure_threshold = 1\nopen_for_ms = 600000\n\n\
             [[ai.providers]]\nname = \"local\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\
             model = \"test-model\"\npriority = 10\n\n\
             [[ai.providers]]\nname = \"retrieval\"\nkind = \"retrieval\"\npriority = 0\n"
        ),
    )
    .expect("config");
    let host = Host::start_with(BIN, &["--config", &cfg.display().to_string()], &[]);
    let c = host.client().await;
    let t = Some(Duration::from_secs(10));
    let human = c
        .call(
            "user/create",
            json!({"displayName": "Joel", "type": "human"}),
            t,
        )
        .await
        .expect("human");
    let persona = c
        .call(
            "user/create",
            json!({"displayName": "Sage", "type": "persona"}),
            t,
        )
        .await
        .expect("persona");
    let (hid, pid) = (
        human["id"].as_str().expect("id").to_owned(),
        persona["id"].as_str().expect("id").to_owned(),
    );
    eventually("persona hosted and in general", || async {
        let hosted = c
            .call("persona/list", json!({}), t)
            .await
            .map(|l| l["count"] == 1)
            .unwrap_or(false);
        let member = c
            .call("room/check", json!({"room": "general", "userId": pid}), t)
            .await
            .map(|r| r["member"] == true)
            .unwrap_or(false);
        hosted && member
    })
    .await;
    // Replies of the persona, oldest first.
    let replies = |c: daemonhost_protocol::Client, pid: String| async move {
        let h = c
            .call("chat/history", json!({"room": "general", "limit": 100}), t)
            .await
            .expect("history");
        h["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m["senderId"] == json!(pid))
            .map(|m| {
                m["content"]["text"]
                    .as_str()
                    .or_else(|| m["content"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    c.call(
        "chat/send",
        json!({"room": "general", "message": "Sage, are you there?", "sender": hid}),
        t,
    )
    .await
    .expect("send");
    eventually("a reply from the configured server", || {
        let (c, pid) = (c.clone(), pid.clone());
        async move {
            replies(c, pid)
                .await
                .iter()
                .any(|r| r.starts_with("pong from test server: "))
        }
    })
    .await;

    // The server goes away: the next reply comes from retrieval and the circuit is open.
    server.stop().await;
    c.call(
        "chat/send",
        json!({"room": "general", "message": "Sage, still there?", "sender": hid}),
        t,
    )
    .await
    .expect("send");
    eventually("a reply from the retrieval fallback", || {
        let (c, pid) = (c.clone(), pid.clone());
        async move {
            replies(c, pid)
                .await
                .iter()
                .any(|r| r.contains("not a language model"))
        }
    })
    .await;
    let providers = c
        .call("ai/providers", json!({}), t)
        .await
        .expect("providers");
    let local = providers["providers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "local"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(local["circuit"], "open", "{providers}");
}

/// A persona created a moment before a message (no waiting for it to be loaded or to join
/// `general`) answers that message: the join window and the catch-up after the join cover the
/// instant between them. Three personas, three messages, each answered by its persona.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_created_a_millisecond_before_a_message_answers_that_message() {
    let host = Host::start(BIN);
    let c = host.client().await;
    let t = Some(Duration::from_secs(10));
    let human = c
        .call(
            "user/create",
            json!({"displayName": "Joel", "type": "human"}),
            t,
        )
        .await
        .expect("human");
    let hid = human["id"].as_str().expect("id").to_owned();
    eventually("the human in general", || async {
        let m = c
            .call("room/check", json!({"room": "general", "userId": hid}), t)
            .await
            .expect("check");
        m["member"] == json!(true)
    })
    .await;
    let mut asked = Vec::new();
    for name in ["Sage", "Ada", "Kai"] {
        let persona = c
            .call(
                "user/create",
                json!({"displayName": name, "type": "persona"}),
                t,
            )
            .await
            .expect("persona");
        let sent = c
            .call(
                "chat/send",
                json!({"room": "general", "message": format!("{name}, are you there?"), "sender": hid}),
                t,
            )
            .await
            .expect("send");
        asked.push((
            persona["id"].as_str().expect("id").to_owned(),
            sent["id"].as_str().expect("id").to_owned(),
        ));
    }
    for (pid, mid) in &asked {
        eventually("the persona answers the message sent right after it was created", || async {
            let page = c
                .call(
                    "data/list",
                    json!({"collection": "chat_messages", "filter": {"senderId": pid, "replyToId": mid}}),
                    t,
                )
                .await
                .expect("list");
            page["items"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    }
}
