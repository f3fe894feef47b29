//! Every declared command, through the real binary: it is listed and documented, it is routed,
//! and its declared params are enforced before its handler runs.

use crate::harness::*;
use daemonhost_protocol::{CallError, ErrorCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

const T: Option<Duration> = Some(Duration::from_secs(20));

/// Commands this test does not call with `{}`, each with the reason. Every one must still be
/// listed (so this list cannot go stale), and is still asked `help`. The garbage test
/// (`garbage.rs`) skips them too.
pub(crate) const EXCLUDED: &[(&str, &str)] = &[
    // None today: no declared command shuts the host down or blocks longer than a call's
    // deadline when sent `{}`. Add one here, with its reason, rather than skipping it in the
    // loop below.
];

/// Declared (by the `events` daemon, for `list` and `help`) but answered by the socket server
/// per connection, never routed; the server runs the same declared-params check
/// (`Router::check_params`), so they answer like every other command.
const SERVED_BY_THE_SOCKET_SERVER: &[&str] = &["events/subscribe", "events/unsubscribe"];

/// One declared command as `list` and `help` describe it.
pub(crate) struct Declared {
    pub(crate) name: String,
    pub(crate) daemon: String,
    /// The first param `help` marks required, in declaration order.
    pub(crate) first_required: Option<String>,
    /// Every declared param: name, type word, required.
    pub(crate) params: Vec<(String, String, bool)>,
    /// `help`'s `default_timeout_ms`.
    pub(crate) default_timeout_ms: u64,
}

/// Every command the host's catalog lists (`list`), each with what `help` says of it.
pub(crate) async fn declared(c: &daemonhost_protocol::Client) -> Vec<Declared> {
    let list = c.call("list", json!({}), T).await.expect("list");
    let commands = list["commands"].as_array().expect("commands");
    assert_eq!(
        list["count"].as_u64(),
        Some(commands.len() as u64),
        "{list}"
    );
    let mut out = Vec::with_capacity(commands.len());
    for entry in commands {
        let name = entry["name"].as_str().expect("name").to_owned();
        let daemon = entry["daemon"].as_str().expect("daemon").to_owned();
        let help = c
            .call("help", json!({ "command": name }), T)
            .await
            .unwrap_or_else(|e| panic!("help {name}: {e}"));
        assert_eq!(help["name"], entry["name"], "{help}");
        assert_eq!(help["daemon"], entry["daemon"], "{help}");
        assert_eq!(help["description"], entry["description"], "{help}");
        assert!(
            help["default_timeout_ms"].as_u64().unwrap_or(0) > 0,
            "{help}"
        );
        let params = help["params"].as_array().expect("params");
        for p in params {
            assert!(p["name"].is_string(), "{name}: {p}");
            assert!(p["type"].is_string(), "{name}: {p}");
            assert!(p["required"].is_boolean(), "{name}: {p}");
        }
        let first_required = params
            .iter()
            .find(|p| p["required"] == true)
            .map(|p| p["name"].as_str().expect("param name").to_owned());
        let default_timeout_ms = help["default_timeout_ms"].as_u64().unwrap_or(0);
        let params = params
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_owned(),
                    p["type"].as_str().unwrap_or_default().to_owned(),
                    p["required"] == true,
                )
            })
            .collect();
        out.push(Declared {
            name,
            daemon,
            first_required,
            params,
            default_timeout_ms,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_command_is_routed_and_its_required_params_are_enforced_before_the_handler()
{
    let host = Host::start(BIN);
    let c = host.client().await;
    let commands = declared(&c).await;
    let names: HashSet<&str> = commands.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names.len(), commands.len(), "a command is listed twice");
    // The host's own, the data daemon's aliases and a refusal declared so it is routed.
    for want in [
        "ping",
        "list",
        "help",
        "data/list",
        "data/query",
        "data/list-collections",
        "search/index-clear",
        "log/write",
    ] {
        assert!(names.contains(want), "{want} not listed: {names:?}");
    }
    for (name, why) in EXCLUDED {
        assert!(
            names.contains(name),
            "excluded {name} ({why}) is not declared"
        );
    }
    for name in SERVED_BY_THE_SOCKET_SERVER {
        assert!(names.contains(name), "{name} is not declared");
    }

    let mut checked_required = 0;
    for d in &commands {
        if EXCLUDED.iter().any(|(n, _)| *n == d.name) {
            continue;
        }
        let answer = c.call(&d.name, json!({}), T).await;
        let what = format!("{} (daemon {}) with {{}}: {answer:?}", d.name, d.daemon);
        if let Err(CallError::Remote(e)) = &answer {
            assert_ne!(e.code, ErrorCode::UnknownCommand, "not routed: {what}");
        }
        // Any other answer (a result, not_found, unavailable, a timeout, ...) means it was
        // routed; a required param makes it the router's own answer, whatever the handler does.
        let Some(first) = &d.first_required else {
            continue;
        };
        let Err(CallError::Remote(e)) = &answer else {
            panic!("expected validation naming {first}: {what}");
        };
        assert_eq!(e.code, ErrorCode::Validation, "{what}");
        assert!(
            e.message.starts_with(&format!("{first}: required")),
            "{what}"
        );
        checked_required += 1;
    }
    assert!(
        checked_required >= 10,
        "only {checked_required} commands declare a required param"
    );

    // The router answered those itself: the daemons report them as rejected, not handled.
    let status = c.call("health/status", json!({}), T).await.expect("status");
    let rejected: u64 = status["daemons"]
        .as_array()
        .expect("daemons")
        .iter()
        .map(|d| d["rejected_params"].as_u64().expect("rejected_params"))
        .sum();
    assert_eq!(rejected, checked_required, "{status}");

    // A wrong type is the router's `bad_request`, before the handler too.
    let e = c
        .call("data/list", json!({"collection": 7}), T)
        .await
        .expect_err("wrong type");
    let e = match e {
        CallError::Remote(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::BadRequest, "collection: must be a string")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_command_under_a_prefix_is_unknown_command_with_near_matches() {
    let host = Host::start(BIN);
    let c = host.client().await;
    for (typo, near) in [
        ("data/lsit", "'data/list'"),
        ("log/wirte", "'log/write'"),
        ("search/mesages", "'search/messages'"),
    ] {
        let e = c
            .call(typo, json!({"collection": "users"}), T)
            .await
            .expect_err("unknown");
        let e = match e {
            CallError::Remote(b) => b,
            other => panic!("{typo}: {other:?}"),
        };
        assert_eq!(e.code, ErrorCode::UnknownCommand, "{typo}: {e:?}");
        assert!(e.message.contains(near), "{typo}: {}", e.message);
        // `help` agrees: nobody serves it.
        let e = c
            .call("help", json!({ "command": typo }), T)
            .await
            .expect_err("help of an unknown command");
        assert_eq!(e.code(), Some(ErrorCode::UnknownCommand), "{typo}: {e:?}");
    }
    // The aliases are served, with their target's params.
    let page = c
        .call("data/query", json!({"collection": "users"}), T)
        .await
        .expect("data/query");
    assert_eq!(page["collection"], "users", "{page}");
    let all = c
        .call("data/list-collections", Value::Null, T)
        .await
        .expect("data/list-collections");
    assert!(all["collections"].is_array(), "{all}");
}
