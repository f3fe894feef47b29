//! The socket server's guards through the real binary (`[server]` of the config): a connection
//! over `max_connections` is told why and closed while the others work on; a frame begun and
//! not finished within `frame_timeout_ms` closes its connection, an idle one does not; and a
//! flood of connections opened and dropped leaves the host's descriptors and memory where they
//! were.

use crate::harness::*;
use daemonhost_protocol::{Client, ErrorCode, Frame, Request, Response, write_frame};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const T: Option<Duration> = Some(Duration::from_secs(20));

fn ping_frame(id: u64) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    write_frame(
        &mut b,
        &Frame::Request(Request::new(id, "ping", Value::Null)),
        usize::MAX,
    )
    .expect("encode");
    b.to_vec()
}

fn error_of(r: &Response) -> (Option<u64>, ErrorCode, String) {
    let e = r.outcome.as_ref().expect_err("an error response");
    (r.id, e.code, e.message.clone())
}

async fn metrics(c: &Client) -> Value {
    c.call("health/metrics", Value::Null, T)
        .await
        .expect("health/metrics")["host"]
        .clone()
}

/// Wait until the host holds exactly `n` connections (the harness's readiness probe is one
/// too, and closes asynchronously).
async fn open_connections_reach(c: &Client, n: u64) {
    eventually(&format!("{n} open connections"), async || {
        metrics(c).await["connections_open"].as_u64() == Some(n)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_max_connections_gets_overloaded_naming_the_limit_and_the_others_keep_working()
 {
    const MAX: usize = 8;
    const REFUSED: u64 = 20;
    let host = Host::start_with_config(BIN, &format!("[server]\nmax_connections = {MAX}\n"));
    let first = host.client().await;
    open_connections_reach(&first, 1).await;
    let mut clients = vec![first];
    for _ in 1..MAX {
        let c = Client::connect(&host.socket).await.expect("connect");
        c.call("ping", Value::Null, T)
            .await
            .expect("within the limit");
        clients.push(c);
    }
    open_connections_reach(&clients[0], MAX as u64).await;

    // Every connection within the limit pings in a loop while the refusals happen.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for c in &clients {
        let (c, stop) = (c.clone(), Arc::clone(&stop));
        load.spawn(async move {
            let mut answered = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.call("ping", Value::Null, T)
                    .await
                    .expect("a connection within the limit keeps working");
                answered += 1;
            }
            answered
        });
    }
    let before = metrics(&clients[0]).await["requests"].as_u64().unwrap_or(0);
    for i in 0..REFUSED {
        let (mut r, mut w) = split(UnixStream::connect(&host.socket).await.expect("connect"));
        if i % 2 == 0 {
            // A client that sends at once still reads why it was refused.
            let _ = w.write_all(&ping_frame(1)).await;
        }
        let (id, code, message) = error_of(&r.response().await);
        assert_eq!((id, code), (None, ErrorCode::Overloaded), "{message}");
        assert!(
            message.contains(&format!("max_connections = {MAX}")),
            "{message}"
        );
        assert!(
            r.next_body().await.is_none(),
            "a refused connection is closed"
        );
        // The connections within the limit answer between two refusals, not only after.
        clients[i as usize % MAX]
            .call("ping", Value::Null, T)
            .await
            .expect("during the refusals");
    }
    // The load went on during the refusals, then stops; nothing failed.
    eventually("the load to go on during the refusals", async || {
        metrics(&clients[0]).await["requests"].as_u64().unwrap_or(0) > before + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while let Some(answered) = load.join_next().await {
        assert!(answered.expect("a load task") > 0);
    }
    let m = metrics(&clients[0]).await;
    assert_eq!(m["connections_refused"], REFUSED);
    assert_eq!(m["connections_open"], MAX as u64);
    // After: every connection still works, and a closed one frees its place.
    for c in &clients {
        c.call("ping", Value::Null, T)
            .await
            .expect("after the refusals");
    }
    drop(clients.pop());
    open_connections_reach(&clients[0], MAX as u64 - 1).await;
    let again = Client::connect(&host.socket).await.expect("connect");
    again
        .call("ping", Value::Null, T)
        .await
        .expect("a freed place is taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partial_frame_is_closed_after_frame_timeout_and_an_idle_connection_is_not() {
    const TIMEOUT_MS: u64 = 300;
    let host =
        Host::start_with_config(BIN, &format!("[server]\nframe_timeout_ms = {TIMEOUT_MS}\n"));
    let metrics_client = host.client().await;
    // An idle connection: one request, then nothing for longer than the timeout.
    let (mut idle_r, mut idle_w) = split(host.raw().await);
    send(&mut idle_w, &ping_frame(1)).await;
    assert!(idle_r.response().await.outcome.is_ok());
    let idle_since = Instant::now();

    let ping = ping_frame(2);
    let half_body = ping[..ping.len() / 2 + 2].to_vec();
    let half_header = ping[..2].to_vec();
    let mut stalled = Vec::new();
    for part in [half_body, half_header] {
        let (r, mut w) = split(host.raw().await);
        send(&mut w, &part).await;
        stalled.push((Instant::now(), r, Some(w)));
    }
    // A slow client sending its frame a byte every 100 ms: progress, but the frame as a whole
    // is not done within the timeout.
    let (slow_r, mut slow_w) = split(host.raw().await);
    let slow_at = Instant::now();
    let slow_bytes = ping.clone();
    let slow = tokio::spawn(async move {
        for b in slow_bytes.iter().take(slow_bytes.len() - 1) {
            if slow_w.write_all(&[*b]).await.is_err() {
                break; // closed by the host: what this test expects
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // the slow client itself
        }
    });
    stalled.push((slow_at, slow_r, None));
    for (at, mut r, _w) in stalled {
        let (id, code, message) = error_of(&r.response().await);
        let waited = at.elapsed();
        assert_eq!((id, code), (None, ErrorCode::Timeout), "{message}");
        assert!(
            message.contains(&format!("frame_timeout_ms = {TIMEOUT_MS}")),
            "{message}"
        );
        assert!(
            waited >= Duration::from_millis(TIMEOUT_MS),
            "closed after {waited:?}"
        );
        assert!(
            r.next_body().await.is_none(),
            "a stalled connection is closed"
        );
    }
    slow.await.expect("the slow writer");

    // A frame split in two with a pause shorter than the timeout is answered normally.
    let (mut r, mut w) = split(host.raw().await);
    send(&mut w, &ping[..5]).await;
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS / 3)).await; // the pause under test
    send(&mut w, &ping[5..]).await;
    assert!(r.response().await.outcome.is_ok());

    // The idle connection was idle for longer than the timeout and still works.
    assert!(idle_since.elapsed() > Duration::from_millis(TIMEOUT_MS));
    send(&mut idle_w, &ping_frame(3)).await;
    let resp = idle_r.response().await;
    assert_eq!(resp.id, Some(3));
    assert!(resp.outcome.is_ok());
    let m = metrics(&metrics_client).await;
    assert_eq!(m["frames_timed_out"], 3);
}

/// The host's open descriptors, from /proc.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the host's /proc/PID/fd")
        .count()
}

/// The host's resident set, bytes, from /proc.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// `n` connections, `parallel` at a time; each one either answers a ping, sends half a frame,
/// subscribes, or connects and goes. All of them are dropped by the client.
async fn churn(socket: &std::path::Path, n: u64, parallel: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let (next, socket) = (Arc::clone(&next), socket.to_owned());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let (mut r, mut w) = split(UnixStream::connect(&socket).await.expect("connect"));
                match i % 4 {
                    0 => {
                        send(&mut w, &ping_frame(i)).await;
                        assert!(r.response().await.outcome.is_ok());
                    }
                    1 => send(&mut w, &ping_frame(i)[..7]).await,
                    2 => {
                        let mut b = bytes::BytesMut::new();
                        let sub = Request::new(1, "events/subscribe", json!({"pattern": "x:*"}));
                        write_frame(&mut b, &Frame::Request(sub), usize::MAX).expect("encode");
                        send(&mut w, &b).await;
                        assert!(r.response().await.outcome.is_ok());
                    }
                    _ => {}
                }
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("a churn task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_opened_and_dropped_leave_fds_and_rss_at_their_baseline() {
    const N: u64 = 10_000;
    /// Allowed RSS above the baseline after a trim: allocator pages still held in partly used
    /// arenas and the tokio I/O driver's grown slab.
    const RSS_SLACK: u64 = 2 << 20;
    let host = Host::start_with_config(BIN, "[host]\ntrim_interval_ms = 200\n");
    let pid = host.pid().as_raw();
    let c = host.client().await;
    eventually("every daemon READY", async || {
        let s = c
            .call("health/status", Value::Null, T)
            .await
            .expect("status");
        s["ready"] == s["count"]
    })
    .await;
    // Warm up (first-use allocations of the tokio driver, the allocator's arenas), then take
    // the baseline with only this client connected.
    churn(&host.socket, 400, 32).await;
    open_connections_reach(&c, 1).await;
    let fds_before = fds(pid);
    // The baseline is the RSS once a trim has run: two readings a trim period apart, the
    // second no higher (the sleep is the measurement window, not a wait for an event).
    let rss_before = eventually("the RSS to settle after the warm-up", async || {
        let a = rss(pid);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let b = rss(pid);
        (b <= a).then_some(b)
    })
    .await;
    let accepted_before = metrics(&c).await["connections_accepted"]
        .as_u64()
        .unwrap_or(0);

    let t0 = Instant::now();
    churn(&host.socket, N, 32).await;
    let took = t0.elapsed();
    open_connections_reach(&c, 1).await;
    let m = metrics(&c).await;
    assert!(
        m["connections_accepted"].as_u64().unwrap_or(0) >= accepted_before + N,
        "{m}"
    );
    assert_eq!(m["subscriptions_open"], 0, "{m}");
    let peak = rss(pid);
    let fds_after = eventually("the descriptors back at their baseline", async || {
        let n = fds(pid);
        (n == fds_before).then_some(n)
    })
    .await;
    let rss_after = eventually("the RSS back within 2 MiB of its baseline", async || {
        let r = rss(pid);
        (r <= rss_before + RSS_SLACK).then_some(r)
    })
    .await;
    eprintln!(
        "{N} connections in {took:?}: fds {fds_before} -> {fds_after}; RSS {} KiB -> {} KiB \
         right after -> {} KiB after a trim (slack {} KiB)",
        rss_before / 1024,
        peak / 1024,
        rss_after / 1024,
        RSS_SLACK / 1024
    );
    c.call("ping", Value::Null, T)
        .await
        .expect("the host serves on");
}
