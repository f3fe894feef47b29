//! The chat platform against the real binary: a user created over the socket is auto-joined to
//! `general`, a message sent there is in its history, and a subscribed client gets the
//! `data:chat_messages:created` event.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_user_joins_general_and_chat_reaches_history_and_subscribers() {
    let host = Host::start();
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
