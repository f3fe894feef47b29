//! End-to-end tests: the real `daemonhost` binary in a temp dir, driven over its socket and
//! through its CLI. Each test is named after what it proves.

mod browser;
mod commands;
mod data;
mod garbage;
mod harness;
mod killloop;
mod observe;
mod platform;
mod proxy;
mod server;
mod sessions;
mod web;
mod workers;

use daemonhost_protocol::{ErrorCode, Frame, Request, write_frame};
use harness::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

fn request_frame(id: u64, command: &str, params: Value) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    write_frame(
        &mut b,
        &Frame::Request(Request::new(id, command, params)),
        usize::MAX,
    )
    .expect("encode");
    b.to_vec()
}

fn err_code(r: &daemonhost_protocol::Response) -> ErrorCode {
    r.outcome.as_ref().expect_err("an error response").code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_system_command_answers_over_the_socket() {
    let host = Host::start(BIN);
    let c = host.client().await;
    let t = Some(Duration::from_secs(10));

    let pong = c.call("ping", Value::Null, t).await.expect("ping");
    assert_eq!(pong["pong"], true);
    assert!(pong["uptime_ms"].is_u64());

    let list = c.call("list", Value::Null, t).await.expect("list");
    let names: HashSet<&str> = list["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for want in [
        "ping",
        "list",
        "help",
        "health/status",
        "health/metrics",
        "system/startup",
        "events/subscribe",
        "events/unsubscribe",
        "session/create",
        "session/get",
        "session/list",
        "session/destroy",
    ] {
        assert!(names.contains(want), "{want} not listed: {names:?}");
    }
    let help = c
        .call("help", json!({"command": "session/get"}), t)
        .await
        .expect("help");
    assert_eq!(help["params"][0]["name"], "id");
    assert_eq!(
        c.call("help", Value::Null, t).await.expect("help")["count"],
        list["count"]
    );

    // The socket answers before every daemon is READY (data opens SQLite): wait for all.
    let status = eventually("every daemon READY", async || {
        let s = c
            .call("health/status", Value::Null, t)
            .await
            .expect("status");
        (s["ready"] == s["count"]).then_some(s)
    })
    .await;
    assert_eq!(status["failed"], 0);
    assert_eq!(status["ready"], status["count"]);
    let metrics = c
        .call("health/metrics", Value::Null, t)
        .await
        .expect("metrics");
    assert!(metrics["process"]["rss_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(metrics["host"]["connections_open"].as_u64().unwrap_or(0) >= 1);
    assert!(metrics["host"]["requests"].as_u64().unwrap_or(0) >= 4);
    // The host's own timings appear once its startup has settled (microseconds after READY).
    let startup = eventually("the host's own startup timings", async || {
        let s = c
            .call("system/startup", Value::Null, t)
            .await
            .expect("startup");
        (!s["host"].is_null()).then_some(s)
    })
    .await;
    assert_eq!(startup["count"], status["count"]);
    let host_ms = &startup["host"];
    assert!(
        host_ms["socket_bound_ms"].as_f64().unwrap_or(-1.0) >= 0.0,
        "{startup}"
    );
    assert!(host_ms["first_command_ms"].as_f64() >= host_ms["socket_bound_ms"].as_f64());

    let s = c
        .call("session/create", json!({"metadata": {"user": "joel"}}), t)
        .await
        .expect("create");
    let id = s["id"].as_str().expect("id");
    assert_eq!(
        c.call("session/get", json!({"id": id}), t)
            .await
            .expect("get"),
        s
    );
    let l = c.call("session/list", Value::Null, t).await.expect("list");
    assert_eq!(l["count"], 1);
    c.call("session/destroy", json!({"id": id}), t)
        .await
        .expect("destroy");
    let e = c
        .call("session/get", json!({"id": id}), t)
        .await
        .expect_err("gone");
    assert_eq!(e.code(), Some(ErrorCode::NotFound));

    // events/subscribe: the response comes before the event, and the event arrives.
    let mut events = c.subscribe("session:*").await.expect("subscribe");
    let s = c
        .call("session/create", Value::Null, t)
        .await
        .expect("create");
    let ev = tokio::time::timeout(WAIT, events.next_event())
        .await
        .expect("event in time")
        .expect("event");
    assert_eq!(ev.topic, "session:created");
    assert_eq!(ev.data["id"], s["id"]);
    let e = c
        .call("events/unsubscribe", json!({"subscription": 999}), t)
        .await
        .expect_err("unknown subscription");
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = c
        .call("events/subscribe", json!({"pattern": "a::b"}), t)
        .await
        .expect_err("bad pattern");
    assert_eq!(e.code(), Some(ErrorCode::Validation));
    let e = c
        .call("events/subscribe", json!({}), t)
        .await
        .expect_err("no pattern");
    assert_eq!(e.code(), Some(ErrorCode::Validation));
    c.call(
        "events/unsubscribe",
        json!({"subscription": events.subscription()}),
        t,
    )
    .await
    .expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_20000_requests_sent_the_instant_the_socket_accepts_are_all_answered() {
    const N: u64 = 20_000;
    let host = Host::start(BIN);
    // Connect the moment the socket accepts: daemons may still be starting.
    let (mut reader, mut w) = split(host.raw().await);
    let writer = tokio::spawn(async move {
        let mut all = Vec::with_capacity(N as usize * 48);
        for id in 1..=N {
            all.extend_from_slice(&request_frame(id, "ping", Value::Null));
        }
        send(&mut w, &all).await;
        w
    });
    let mut seen = HashSet::with_capacity(N as usize);
    for _ in 0..N {
        let r = reader.response().await;
        let id = r.id.expect("id");
        assert!(r.outcome.is_ok(), "request {id} failed: {:?}", r.outcome);
        assert!(seen.insert(id), "id {id} answered twice");
    }
    assert_eq!(seen.len() as u64, N);
    assert!((1..=N).all(|id| seen.contains(&id)));
    let _w = writer.await.expect("writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_input_gets_its_code_and_the_connection_survives() {
    let host = Host::start(BIN);
    let (mut r, mut w) = split(host.raw().await);
    // (body, expected id, expected message start)
    let cases: Vec<(Vec<u8>, Option<u64>, &str)> = vec![
        (vec![0xff, 0xfe, 0x00], None, "body is not valid UTF-8"),
        (b"not json".to_vec(), None, "body is not valid JSON"),
        (Vec::new(), None, "body is not valid JSON"),
        (
            br#"{"type":"request","id":1,"command":"ping"} x"#.to_vec(),
            None,
            "body is not valid JSON",
        ),
        (
            b"[1,2]".to_vec(),
            None,
            "body must be a JSON object, found an array",
        ),
        (br#""str""#.to_vec(), None, "body must be a JSON object"),
        (br#"{"id":7}"#.to_vec(), Some(7), "field 'type' is required"),
        (
            br#"{"type":"ping","id":8}"#.to_vec(),
            Some(8),
            "unknown frame type 'ping'",
        ),
        (
            br#"{"type":5,"id":"x"}"#.to_vec(),
            None,
            "field 'type' is required",
        ),
        (
            br#"{"type":"request","id":"x","command":"ping"}"#.to_vec(),
            None,
            "field 'id' is required and must be a non-negative integer",
        ),
        (
            br#"{"type":"request","id":-1,"command":"ping"}"#.to_vec(),
            None,
            "field 'id'",
        ),
        (
            br#"{"type":"request","id":1.5,"command":"ping"}"#.to_vec(),
            None,
            "field 'id'",
        ),
        (
            br#"{"type":"request","command":"ping"}"#.to_vec(),
            None,
            "field 'id'",
        ),
        (
            br#"{"type":"request","id":5}"#.to_vec(),
            Some(5),
            "field 'command' is required and must be a string (it is missing)",
        ),
        (
            br#"{"type":"request","id":6,"command":7}"#.to_vec(),
            Some(6),
            "field 'command' is required and must be a string",
        ),
        (
            br#"{"type":"request","id":9,"command":"ping","params":[1]}"#.to_vec(),
            Some(9),
            "field 'params' must be an object when present (found an array)",
        ),
        (
            br#"{"type":"request","id":10,"command":"ping","timeout_ms":-5}"#.to_vec(),
            Some(10),
            "field 'timeout_ms' must be a non-negative integer when present",
        ),
    ];
    for (body, id, msg) in &cases {
        send(&mut w, &framed(body)).await;
        let resp = r.response().await;
        assert_eq!(resp.id, *id, "body {:?}", String::from_utf8_lossy(body));
        let e = resp.outcome.expect_err("bad_request");
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        assert!(
            e.message.starts_with(msg),
            "{:?}: {}",
            String::from_utf8_lossy(body),
            e.message
        );
    }

    // Invalid responses and events are never answered: the next frame is the ping's answer.
    send(&mut w, &framed(br#"{"type":"response","id":3}"#)).await;
    send(&mut w, &framed(br#"{"type":"event","subscription":"x"}"#)).await;
    send(
        &mut w,
        &framed(br#"{"type":"response","id":4,"success":true,"result":1}"#),
    )
    .await;
    send(&mut w, &request_frame(11, "ping", Value::Null)).await;
    let resp = r.response().await;
    assert_eq!(resp.id, Some(11));
    assert!(resp.outcome.is_ok());

    // Errors from daemons keep their codes and ids.
    send(&mut w, &request_frame(12, "pnig", Value::Null)).await;
    let resp = r.response().await;
    assert_eq!(
        (resp.id, err_code(&resp)),
        (Some(12), ErrorCode::UnknownCommand)
    );
    assert!(resp.outcome.expect_err("e").message.contains("'ping'"));
    send(&mut w, &request_frame(13, "session/get", json!({}))).await;
    let resp = r.response().await;
    assert_eq!(
        (resp.id, err_code(&resp)),
        (Some(13), ErrorCode::Validation)
    );
    let mut timed = bytes::BytesMut::new();
    write_frame(
        &mut timed,
        &Frame::Request(Request::new(14, "ping", Value::Null).with_timeout_ms(0)),
        usize::MAX,
    )
    .expect("encode");
    send(&mut w, &timed).await;
    let resp = r.response().await;
    assert_eq!((resp.id, err_code(&resp)), (Some(14), ErrorCode::Timeout));

    // A frame split across writes, then two frames in one write.
    let ping = request_frame(15, "ping", Value::Null);
    send(&mut w, &ping[..3]).await;
    send(&mut w, &ping[3..9]).await;
    send(&mut w, &ping[9..]).await;
    assert_eq!(r.response().await.id, Some(15));
    let mut two = request_frame(16, "ping", Value::Null);
    two.extend(request_frame(17, "ping", Value::Null));
    send(&mut w, &two).await;
    let ids: HashSet<_> = [r.response().await.id, r.response().await.id].into();
    assert_eq!(ids, [Some(16), Some(17)].into());

    // frame_too_large: id null, then the connection is closed; the host serves on.
    send(&mut w, &((16u32 << 20) + 1).to_be_bytes()).await;
    send(&mut w, b"{\"type\":").await;
    let resp = r.response().await;
    assert_eq!(resp.id, None);
    assert_eq!(err_code(&resp), ErrorCode::FrameTooLarge);
    assert!(r.next_body().await.is_none(), "connection must be closed");
    let c = host.client().await;
    c.call("ping", Value::Null, Some(WAIT))
        .await
        .expect("host still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_sets_the_frame_limit_and_unknown_keys_are_refused() {
    let tmp = tempdir();
    let cfg = tmp.path().join("host.toml");
    std::fs::write(&cfg, "[host]\nmax_frame_bytes = 1024\n").expect("write");
    let host = Host::start_with(BIN, &["--config", cfg.to_str().expect("utf8")], &[]);
    let (mut r, mut w) = split(host.raw().await);
    send(
        &mut w,
        &request_frame(1, "ping", json!({"pad": "x".repeat(900)})),
    )
    .await;
    assert!(r.response().await.outcome.is_ok());
    send(
        &mut w,
        &request_frame(2, "ping", json!({"pad": "x".repeat(1100)})),
    )
    .await;
    let resp = r.response().await;
    assert_eq!((resp.id, err_code(&resp)), (None, ErrorCode::FrameTooLarge));

    std::fs::write(&cfg, "[host]\nmax_frame_byte = 1024\n").expect("write");
    let out = cli(
        &tmp.path().join("other"),
        &["run", "--config", cfg.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("max_frame_byte"), "{}", stderr(&out));
    assert!(!tmp.path().join("other").join("daemonhost.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_prints_every_setting_and_a_host_runs_on_what_it_printed() {
    let tmp = tempdir();
    let cfg = tmp.path().join("host.toml");
    std::fs::write(&cfg, "[host]\nmax_frame_bytes = 1024\n").expect("write");
    let out = cli(
        &tmp.path().join("d"),
        &["config", "--config", cfg.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for key in [
        "max_frame_bytes = 1024",
        "[personas.persona]",
        "pace_replies = true",
        "[workers]",
        "[server]\nmax_connections = 4096\nframe_timeout_ms = 10000\n",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    // The printed file is a valid config: a host runs on it, with the file's setting.
    let printed = tmp.path().join("printed.toml");
    std::fs::write(&printed, &text).expect("write");
    let host = Host::start_with(BIN, &["--config", printed.to_str().expect("utf8")], &[]);
    let (mut r, mut w) = split(host.raw().await);
    send(
        &mut w,
        &request_frame(1, "ping", json!({"pad": "x".repeat(1100)})),
    )
    .await;
    let resp = r.response().await;
    assert_eq!(err_code(&resp), ErrorCode::FrameTooLarge);
    // An invalid file is refused the way `run` refuses it, naming the key.
    std::fs::write(&cfg, "[personas.persona]\npace_replys = false\n").expect("write");
    let out = cli(
        &tmp.path().join("d"),
        &["config", "--config", cfg.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pace_replys"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_on_the_same_data_dir_is_refused() {
    let host = Host::start(BIN);
    let c = host.client().await;
    let out = host.cli(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains(&host.data.display().to_string()), "{err}");
    assert!(err.contains(&format!("pid {}", host.pid())), "{err}");
    // The first host is untouched, socket included.
    c.call("ping", Value::Null, Some(WAIT))
        .await
        .expect("first host serves");
    assert!(host.socket.exists());
    host.client().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_replaces_the_stale_socket() {
    let mut host = Host::start(BIN);
    host.client().await;
    let st = host.kill().await;
    assert_eq!(code(st), 128 + 9);
    assert!(host.socket.exists(), "a killed host leaves its socket file");
    host.spawn(&[], &[]);
    let c = host.client().await;
    c.call("ping", Value::Null, Some(WAIT))
        .await
        .expect("restarted host serves");
    assert!(host.log().contains("stale socket"), "{}", host.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_exit_0_and_remove_the_socket() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut host = Host::start(BIN);
        let c = host.client().await;
        let mut events = c.subscribe("session:*").await.expect("subscribe");
        c.call("ping", Value::Null, Some(WAIT)).await.expect("ping");
        host.signal(sig);
        let st = host.wait_exit().await;
        assert_eq!(code(st), 0, "{sig}: log:\n{}", host.log());
        assert!(!host.socket.exists(), "{sig}: socket left behind");
        assert!(host.log().contains("live_tasks=0"), "{}", host.log());
        assert!(
            host.log().contains("live_subscriptions=0"),
            "{}",
            host.log()
        );
        // The connection ended with the host: the event stream ends too.
        assert!(
            tokio::time::timeout(WAIT, events.next_event())
                .await
                .expect("stream ends")
                .is_none()
        );
        // The data dir stays with the lock file, the databases and the web token; the socket
        // and web.url are gone.
        let mut left: Vec<_> = std::fs::read_dir(&host.data)
            .expect("data dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                std::ffi::OsString::from("daemonhost.lock"),
                std::ffi::OsString::from("data"),
                std::ffi::OsString::from("web.token"),
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_request_it_read() {
    const N: u64 = 5_000;
    let mut host = Host::start(BIN);
    let (mut r, mut w) = split(host.raw().await);
    let mut all = Vec::new();
    for id in 1..=N {
        all.extend_from_slice(&request_frame(id, "ping", Value::Null));
    }
    let writer = tokio::spawn(async move {
        // The host may close before reading everything; a failed write is expected then.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut w, &all).await;
    });
    // Let some answers flow, then stop the host mid-stream.
    let first = r.response().await;
    assert!(first.outcome.is_ok());
    host.signal(Signal::SIGTERM);
    let mut seen = HashSet::from([first.id.expect("id")]);
    while let Some(body) = r.next_body().await {
        let Ok(Frame::Response(resp)) = Frame::decode(&body) else {
            panic!("unexpected frame");
        };
        let id = resp.id.expect("every answer carries its id");
        assert!(seen.insert(id), "id {id} answered twice");
        if let Err(e) = &resp.outcome {
            assert_eq!(e.code, ErrorCode::ShuttingDown, "{e:?}");
        }
    }
    assert_eq!(code(host.wait_exit().await), 0, "{}", host.log());
    assert!(!host.socket.exists());
    let _ = writer.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_0600_and_data_dir_is_0700() {
    let host = Host::start(BIN);
    host.client().await;
    let sock = std::fs::metadata(&host.socket).expect("socket");
    assert_eq!(sock.mode() & 0o777, 0o600);
    let dir = std::fs::metadata(&host.data).expect("dir");
    assert_eq!(dir.mode() & 0o777, 0o700);
    let lock = std::fs::metadata(host.data.join("daemonhost.lock")).expect("lock");
    assert_eq!(lock.mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_gets_a_lagged_marker_and_loses_nothing_silently() {
    // ~200 bytes per event: 40,000 events are more than the connection's outbox bound (4 MiB)
    // plus the socket buffers, so a subscriber that reads nothing must lose some.
    const N: u64 = 40_000;
    let tmp = tempdir();
    let cfg = tmp.path().join("host.toml");
    std::fs::write(
        &cfg,
        "[host]\nevent_buffer = 4\n[sessions]\nmax_sessions = 50000\n",
    )
    .expect("write");
    let host = Host::start_with(BIN, &["--config", cfg.to_str().expect("utf8")], &[]);
    let (mut sub_r, mut sub_w) = split(host.raw().await);
    send(
        &mut sub_w,
        &request_frame(1, "events/subscribe", json!({"pattern": "session:created"})),
    )
    .await;
    // The subscribe response comes first.
    let resp = sub_r.response().await;
    assert_eq!(resp.id, Some(1));
    let sid = resp.outcome.expect("subscribed")["subscription"]
        .as_u64()
        .expect("id");
    // Create N sessions from another connection while the subscriber reads nothing.
    let (mut r, mut w) = split(host.raw().await);
    let writer = tokio::spawn(async move {
        let mut all = Vec::new();
        for id in 1..=N {
            all.extend_from_slice(&request_frame(id, "session/create", Value::Null));
        }
        send(&mut w, &all).await;
        w
    });
    for _ in 0..N {
        assert!(r.response().await.outcome.is_ok());
    }
    let _w = writer.await.expect("writer");
    // Now read the subscriber: events + missed must account for every create.
    let (mut events, mut missed, mut markers) = (0u64, 0u64, 0u64);
    while events + missed < N {
        match sub_r.next_frame().await {
            Some(Frame::Event(e)) => {
                assert_eq!(e.subscription, sid);
                match e.lagged_count() {
                    Some(n) => {
                        missed += n;
                        markers += 1;
                    }
                    None => {
                        assert_eq!(e.topic, "session:created");
                        events += 1;
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(events + missed, N);
    assert!(
        markers >= 1 && missed > 0,
        "expected lag with a buffer of 4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_are_bounded() {
    let host = Host::start(BIN);
    let c = host.client().await;
    let mut streams = Vec::new();
    for _ in 0..64 {
        streams.push(c.subscribe("x:*").await.expect("within the bound"));
    }
    let e = c.subscribe("x:*").await.expect_err("65th");
    assert_eq!(e.code(), Some(ErrorCode::Overloaded));
    drop(streams.pop());
    // The drop sends events/unsubscribe; a slot frees up.
    let s = eventually("a subscription slot to free up", async || {
        let r = c.subscribe("x:*").await;
        if let Err(e) = &r {
            assert_eq!(e.code(), Some(ErrorCode::Overloaded), "{e:?}");
        }
        r
    })
    .await;
    streams.push(s);
    assert_eq!(streams.len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_call_status_and_events_follow_the_contract() {
    let host = Host::start(BIN);
    host.client().await;

    let out = host.cli(&["call", "ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["pong"], true);
    assert!(
        stdout(&out).contains("\n  \"pong\": true"),
        "pretty: {}",
        stdout(&out)
    );

    let out = host.cli(&["call", "ping", "--json"]);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));

    let out = host.cli(&[
        "call",
        "session/create",
        "--metadata",
        r#"{"user":"joel"}"#,
        "--ttl_secs=60",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(s["metadata"]["user"], "joel");

    let out = host.cli(&["call", "help", "session/create"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("ttl_secs"));

    let out = host.cli(&["call", "pnig"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: unknown_command:"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("'ping'"), "{}", stderr(&out));
    let out = host.cli(&["call", "session/get", "--id", "nope", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let e: Value = serde_json::from_str(stderr(&out).trim()).expect("json error");
    assert_eq!(e["error"]["code"], "validation");

    let out = host.cli(&["call", "ping", "stray"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));

    let out = host.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("DAEMON") && table.contains("LONGEST_POLL_MS"),
        "{table}"
    );
    for d in ["system", "health", "events", "session"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(d) && l.contains("ready")),
            "{table}"
        );
    }

    // events: a child process streams JSON lines; wait until it is subscribed, then publish.
    let events = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(&host.data)
        .args(["events", "session:*", "--count", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events");
    let c = host.client().await;
    eventually("the events CLI to subscribe", || async {
        c.call("health/metrics", Value::Null, Some(WAIT))
            .await
            .map(|m| m["host"]["subscriptions_open"].as_u64() == Some(1))
            .unwrap_or(false)
    })
    .await;
    let created = c
        .call("session/create", Value::Null, Some(WAIT))
        .await
        .expect("create");
    let out = events
        .wait_with_output()
        .expect("events exits after --count 1");
    assert_eq!(out.status.code(), Some(0));
    let line: Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON line");
    assert_eq!(line["topic"], "session:created");
    assert_eq!(line["data"]["id"], created["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_without_a_host_exits_2_with_a_hint() {
    let tmp = tempdir();
    for args in [
        &["call", "ping"][..],
        &["status"],
        &["events", "x:*"],
        &["bench", "--duration", "1s"],
    ] {
        let out = cli(&tmp.path().join("none"), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no daemonhost is running"),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("daemonhost run --data-dir"),
            "{}",
            stderr(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_1_when_notify_socket_is_set() {
    let tmp = tempdir();
    let notify = tmp.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&notify).expect("bind");
    let host = Host::start_with(
        BIN,
        &[],
        &[("NOTIFY_SOCKET", notify.to_str().expect("utf8"))],
    );
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("notification in time")
        .expect("recv");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    // READY=1 comes after every core init: the host answers at once.
    let c = connect_now(&host).await;
    let st = c
        .call("health/status", Value::Null, Some(WAIT))
        .await
        .expect("status");
    assert_eq!(st["ready"], st["count"]);
}

async fn connect_now(host: &Host) -> daemonhost_protocol::Client {
    daemonhost_protocol::Client::connect(&host.socket)
        .await
        .expect("socket exists once READY=1 was sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_tool_reports_throughput_latency_and_startup() {
    let host = Host::start(BIN);
    host.client().await;
    let out = host.cli(&[
        "bench",
        "--connections",
        "2",
        "--depth",
        "8",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert!(v["requests"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["errors"], 0);
    assert!(v["p50_us"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    assert!(v["p99_us"].as_f64() >= v["p50_us"].as_f64(), "{v}");
    // The host is a process of this machine: its CPU per request is measured, and so is the
    // bench's own.
    assert!(v["server_pid"].as_u64().is_some(), "{v}");
    assert!(v["server_cpu_us_per_req"].as_f64().is_some(), "{v}");
    assert!(v["server_cpu_unavailable"].is_null(), "{v}");
    assert!(v["client_cpu_us_per_req"].as_f64().is_some(), "{v}");

    let out = cli(&host.data, &["bench", "--startup", "--runs", "2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(v["runs"], 2);
    assert!(
        v["first_ping_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_bound_holds_by_not_reading_and_nothing_is_dropped() {
    const N: u64 = 3_000;
    let tmp = tempdir();
    let cfg = tmp.path().join("host.toml");
    std::fs::write(&cfg, "[host]\nmax_in_flight_per_connection = 4\n").expect("write");
    let host = Host::start_with(BIN, &["--config", cfg.to_str().expect("utf8")], &[]);
    let (mut r, mut w) = split(host.raw().await);
    let writer = tokio::spawn(async move {
        let mut all = Vec::new();
        for id in 1..=N {
            all.extend_from_slice(&request_frame(id, "ping", Value::Null));
        }
        send(&mut w, &all).await;
        w
    });
    let mut seen = HashSet::new();
    for _ in 0..N {
        let resp = r.response().await;
        assert!(resp.outcome.is_ok(), "{resp:?}");
        assert!(seen.insert(resp.id.expect("id")));
    }
    let _w = writer.await.expect("writer");
    // Only this connection sent pings: the system daemon never saw more than 4 at once.
    let c = host.client().await;
    let st = c
        .call("health/status", Value::Null, Some(WAIT))
        .await
        .expect("status");
    let system = st["daemons"]
        .as_array()
        .expect("daemons")
        .iter()
        .find(|d| d["name"] == "system")
        .expect("system daemon");
    // The peak also counts what queued before the daemon was READY (the harness's readiness
    // probes and the host's first-command ping race the start); after READY only this
    // connection's pings arrived, at most 4 at once.
    let before_ready = system["queued_before_ready"]
        .as_u64()
        .expect("before ready");
    assert!(
        system["peak_queue_depth"].as_u64().expect("peak") <= 4.max(before_ready),
        "{system}"
    );
    // N socket pings plus the host's own first-command ping at startup.
    assert_eq!(system["handled"].as_u64(), Some(N + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deprecated_host_max_connections_key_still_limits_connections() {
    // `[host] max_connections` is the old name of `[server] max_connections` (the guarantee
    // itself is proved with the new key in `server.rs`); the host warns about it.
    let tmp = tempdir();
    let cfg = tmp.path().join("host.toml");
    std::fs::write(&cfg, "[host]\nmax_connections = 2\n").expect("write");
    let host = Host::start_with(BIN, &["--config", cfg.to_str().expect("utf8")], &[]);
    let a = host.client().await;
    assert!(
        host.log().contains("[host] max_connections is deprecated"),
        "{}",
        host.log()
    );
    // The harness's readiness probe is a connection too: wait until only `a` is open.
    eventually("the probe connection to close", || async {
        a.call("health/metrics", Value::Null, Some(WAIT))
            .await
            .map(|m| m["host"]["connections_open"].as_u64() == Some(1))
            .unwrap_or(false)
    })
    .await;
    let b = daemonhost_protocol::Client::connect(&host.socket)
        .await
        .expect("second connection");
    b.call("ping", Value::Null, Some(WAIT))
        .await
        .expect("within the limit");
    let third = tokio::net::UnixStream::connect(&host.socket)
        .await
        .expect("connect");
    let (mut r, _w) = split(third);
    let resp = r.response().await;
    assert_eq!((resp.id, err_code(&resp)), (None, ErrorCode::Overloaded));
    assert!(
        r.next_body().await.is_none(),
        "refused connection is closed"
    );
    drop(a);
    // A slot frees once the first connection has ended.
    eventually("a connection slot to free up", async || {
        let stream = tokio::net::UnixStream::connect(&host.socket)
            .await
            .expect("connect");
        let (mut r, mut w) = split(stream);
        // A refused connection may already be closed when we write.
        let wrote =
            tokio::io::AsyncWriteExt::write_all(&mut w, &request_frame(1, "ping", Value::Null))
                .await
                .is_ok();
        wrote && r.response().await.outcome.is_ok()
    })
    .await;
}

/// The host re-executes itself in place (same pid) with `MALLOC_ARENA_MAX=2`, and keeps a
/// value the environment already sets.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn the_host_runs_with_two_malloc_arenas_unless_told_otherwise() {
    for (env, want) in [
        (Vec::new(), "MALLOC_ARENA_MAX=2"),
        (vec![("MALLOC_ARENA_MAX", "4")], "MALLOC_ARENA_MAX=4"),
    ] {
        let mut host = Host::start_with(BIN, &[], &env);
        let c = host.client().await;
        c.call("ping", Value::Null, Some(WAIT)).await.expect("ping");
        // The process we spawned is the one serving (exec keeps the pid), and its
        // environment is the one it was re-executed with.
        let environ = std::fs::read(format!("/proc/{}/environ", host.pid())).expect("read environ");
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        assert!(
            vars.contains(&want.as_bytes()),
            "{want} not in the host's environment"
        );
        assert_eq!(
            vars.iter()
                .filter(|v| v.starts_with(b"MALLOC_ARENA_MAX="))
                .count(),
            1
        );
        assert_eq!(code(host.terminate().await), 0, "{}", host.log());
    }
}
