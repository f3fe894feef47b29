//! The session daemon through the real binary: sessions are stored, so they survive a restart
//! (SIGTERM and SIGKILL); they belong to users that exist; and they expire on time.

use crate::harness::*;
use daemonhost_protocol::{Client, ErrorCode};
use serde_json::{Value, json};
use std::time::Duration;

const T: Option<Duration> = Some(Duration::from_secs(20));

/// The sweep every 100 ms, so a test sees expired records go in well under a second.
const CONFIG: &str = "[sessions]\nsweep_interval_ms = 100\n";

fn spawn(host: &mut Host) {
    let cfg = host.tmp.path().join("host.toml").display().to_string();
    host.spawn(&["--config", &cfg], &[]);
}

async fn stored(c: &Client) -> u64 {
    c.call("data/count", json!({"collection": "sessions"}), T)
        .await
        .expect("data/count")["count"]
        .as_u64()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_host_restart_and_sigkill_and_expires_on_time() {
    let mut host = Host::start_with_config(BIN, CONFIG);
    let c = host.client().await;
    let joel = c
        .call(
            "user/create",
            json!({"displayName": "Joel", "type": "human"}),
            T,
        )
        .await
        .expect("a user");
    let s = c
        .call(
            "session/create",
            json!({"userId": joel["id"], "metadata": {"device": "laptop"}, "ttl_secs": 3600}),
            T,
        )
        .await
        .expect("create");
    assert_eq!(s["userId"], joel["id"]);
    let short = c
        .call("session/create", json!({"ttl_secs": 1}), T)
        .await
        .expect("a short session");
    // A user that does not exist gets no session, and the answer names it.
    let e = c
        .call("session/create", json!({"userId": "no-such-user"}), T)
        .await
        .expect_err("unknown user");
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("'no-such-user'"), "{e}");

    // A clean restart, then a SIGKILL: the session is there after both, unchanged.
    assert_eq!(code(host.terminate().await), 0, "{}", host.log());
    spawn(&mut host);
    let c = host.client().await;
    let got = c
        .call("session/get", json!({"id": s["id"]}), T)
        .await
        .expect("after SIGTERM and a restart");
    assert_eq!(got, s);
    host.kill().await;
    spawn(&mut host);
    let c = host.client().await;
    let got = c
        .call("session/get", json!({"id": s["id"]}), T)
        .await
        .expect("after SIGKILL and a restart");
    assert_eq!(got, s);

    // The one-second session is gone by now (it is never answered after its expiry) and the
    // sweep deletes its record; the other stays.
    eventually("the short session to expire", async || {
        c.call("session/get", json!({"id": short["id"]}), T)
            .await
            .is_err_and(|e| e.code() == Some(ErrorCode::NotFound))
    })
    .await;
    eventually("the sweep to delete the expired record", async || {
        stored(&c).await == 1
    })
    .await;
    let l = c.call("session/list", Value::Null, T).await.expect("list");
    assert_eq!(l["count"], 1);
    assert_eq!(l["sessions"][0], s);
}
