//! Worker supervision scenarios. The "worker" is this very test binary re-executed to run its
//! ignored test `fake_worker_main` (below), which speaks the protocol, so the tests exercise real
//! processes, real signals and real sockets.

use daemonhost_protocol::{ErrorCode, Frame, FrameCodec, Response};
use daemonhost_runtime::supervisor::{WorkerCallError, WorkerSpec, WorkerState, WorkerSupervisor};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::codec::Framed;

/// Entry point of the fake worker, run only as the child of the tests below (`--ignored
/// --exact fake_worker_main`): ignored, so that it never counts as a passing test itself.
#[test]
#[ignore = "child process of the supervisor tests; run by them"]
fn fake_worker_main() {
    let mode = std::env::var("DH_FAKE_WORKER")
        .expect("DH_FAKE_WORKER unset: this is the fake worker of the supervisor tests; run those");
    let socket = std::env::var("DH_FAKE_SOCKET").expect("socket path");
    if mode == "crash_at_start" {
        std::process::exit(3);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let stream = tokio::net::UnixStream::connect(&socket).await.expect("connect");
        let mut framed = Framed::new(stream, FrameCodec::new());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(64);
        loop {
            tokio::select! {
                Some(out) = rx.recv() => { framed.send(&out).await.expect("send"); }
                frame = framed.next() => {
                    let Some(Ok(Ok(Frame::Request(req)))) = frame else { std::process::exit(0) };
                    let tx = tx.clone();
                    let mode = mode.clone();
                    tokio::spawn(async move {
                        let answer = match req.command.as_str() {
                            "worker/hello" => Response::ok(req.id, json!({"kind": "fake", "version": "1", "commands": [{"name": "echo", "idempotent": true}]})),
                            "worker/ping" if mode == "noping" => return,
                            "worker/ping" => Response::ok(req.id, json!({"pong": true})),
                            "worker/shutdown" => std::process::exit(0),
                            "echo" => Response::ok(req.id, req.params.clone()),
                            "sleep" => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                Response::ok(req.id, json!({}))
                            }
                            "crash" => std::process::exit(7),
                            _ => Response::err(Some(req.id), ErrorCode::UnknownCommand, "no"),
                        };
                        let _ = tx.send(Frame::Response(answer)).await;
                    });
                }
            }
        }
    });
}

fn spec(mode: &str, tag: &str) -> WorkerSpec {
    let exe = std::env::current_exe().expect("exe");
    let socket = PathBuf::from(format!("/tmp/dh-sup-{}-{tag}.sock", std::process::id()));
    let mut s = WorkerSpec::new(format!("fake-{tag}"), "fake", "/bin/sh", socket).args([
        "-c".to_owned(),
        "DH_FAKE_SOCKET=\"$2\" exec \"$0\" --ignored --exact fake_worker_main --nocapture --test-threads=1"
            .to_owned(),
        exe.display().to_string(),
    ]);
    s.env.push(("DH_FAKE_WORKER".into(), mode.into()));
    s.ping_interval = Duration::from_millis(100);
    s.ping_timeout = Duration::from_millis(100);
    s.backoff = Duration::from_millis(10);
    s.max_backoff = Duration::from_millis(100);
    s.stop_grace = Duration::from_millis(500);
    s
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_comes_up_answers_and_shutdown_reaps_it_and_removes_the_socket() {
    let sup = WorkerSupervisor::spawn(spec("normal", "up"));
    assert!(
        sup.wait_up(Duration::from_secs(10)).await,
        "{:?}",
        sup.status()
    );
    let st = sup.status();
    assert_eq!(st.commands, vec!["echo"]);
    let pid = st.pid.expect("pid");
    let v = sup
        .call("echo", json!({"x": 1}), Duration::from_secs(5))
        .await
        .expect("echo");
    assert_eq!(v, json!({"x": 1}));
    assert_eq!(sup.status().served, 1);
    sup.shutdown().await;
    assert_eq!(sup.status().state, WorkerState::Stopped);
    assert!(!alive(pid), "worker {pid} still alive");
    assert!(!std::path::Path::new(&format!("/tmp/dh-sup-{}-up.sock", std::process::id())).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_fails_in_flight_call_with_cause_and_comes_back() {
    let sup = WorkerSupervisor::spawn(spec("normal", "kill"));
    assert!(sup.wait_up(Duration::from_secs(10)).await);
    let pid = sup.status().pid.expect("pid");
    let gen1 = sup.status().generation;
    let call = tokio::spawn({
        let sup = sup.clone();
        async move { sup.call("sleep", json!({}), Duration::from_secs(20)).await }
    });
    daemonhost_testkit::eventually("the sleep call in flight", async || {
        sup.status().in_flight > 0
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let err = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered")
        .expect("join")
        .expect_err("crashed");
    match &err {
        WorkerCallError::Crashed { cause, .. } => assert!(cause.contains("SIGKILL"), "{cause}"),
        other => panic!("expected Crashed, got {other:?}"),
    }
    assert!(
        sup.wait_up(Duration::from_secs(5)).await,
        "{:?}",
        sup.status()
    );
    let st = sup.status();
    assert!(st.generation > gen1);
    assert_eq!(st.restarts, 1);
    assert_ne!(st.pid, Some(pid));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_crashing_at_start_hits_the_start_limit_and_fails_with_the_cause() {
    let sup = WorkerSupervisor::spawn(spec("crash_at_start", "limit"));
    let mut rx = sup.watch();
    let st = tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| s.state == WorkerState::Failed),
    )
    .await
    .expect("failed in time")
    .expect("watch")
    .clone();
    let cause = st.last_cause.unwrap_or_default();
    assert!(cause.contains("start limit hit: 5 starts"), "{cause}");
    assert!(cause.contains("exited with status 3"), "{cause}");
    assert_eq!(st.starts, 5);
    let err = sup
        .call("echo", json!({}), Duration::from_secs(1))
        .await
        .expect_err("down");
    assert!(
        matches!(
            err,
            WorkerCallError::Down {
                state: WorkerState::Failed,
                ..
            }
        ),
        "{err:?}"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_worker_is_killed_after_missed_pings_and_restarted() {
    let sup = WorkerSupervisor::spawn(spec("noping", "ping"));
    let mut rx = sup.watch();
    let st = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| s.restarts >= 1))
        .await
        .expect("restarted")
        .expect("watch")
        .clone();
    assert!(
        st.last_cause
            .as_deref()
            .unwrap_or("")
            .contains("missed 3 health pings"),
        "{st:?}"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_errors_pass_through_unchanged() {
    let sup = WorkerSupervisor::spawn(spec("normal", "remote"));
    assert!(sup.wait_up(Duration::from_secs(10)).await);
    let err = sup
        .call("nope", Value::Null, Duration::from_secs(5))
        .await
        .expect_err("remote");
    match err {
        WorkerCallError::Remote(e) => assert_eq!(e.code, ErrorCode::UnknownCommand),
        other => panic!("{other:?}"),
    }
    sup.shutdown().await;
}
