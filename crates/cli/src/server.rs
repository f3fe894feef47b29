//! The server: the one core both transports share (`Core`, `ServerHandle`), and the Unix
//! socket transport (the accept loop and, per connection, one reader task and one writer task).
//!
//! **One core, two transports** (ADR 0008). The per-connection protocol logic lives in
//! [`session`] and knows no transport: decode a body, answer bad input, check params and route
//! (with [`Router::ask_owned`]), answer `events/subscribe` / `events/unsubscribe` itself, keep
//! at most `max_in_flight` requests in flight. This file gives it the socket's ends
//! (`SocketInput`: length-prefixed frames and the frame timeout; `Outbox`: the socket's
//! output); `web/ws.rs` gives it a WebSocket's. Both run under the same [`Core`], so the same
//! input gets the same answer on either, and shutdown drains and closes both.
//!
//! **Reader** (`connection` → [`session::serve`]): request futures live in the connection's
//! own `FuturesUnordered`, so a request costs no task spawn and responses go out in completion
//! order, not request order. At `max_in_flight` unanswered requests the reader stops reading
//! the socket until answers drain: backpressure through the kernel's socket buffer, nothing
//! dropped. Every response and event is encoded by this one task into one output buffer, in
//! the order it handles them: that is what makes "the `events/subscribe` response goes out
//! before any event of that subscription" true by construction.
//!
//! **Writer** (`write_loop`): output goes through one per-connection *outbox* buffer. The reader
//! writes straight to the socket with a non-blocking `try_write` while the outbox is empty (the
//! common case: no task hop, one `write` per batch of answers); whatever the socket does not
//! take is appended to the outbox, and the writer task waits for the socket to become writable
//! and drains it. The outbox is the single ordering point, so bytes leave in the order the reader
//! produced them. Above `OUTBOX_HIGH` bytes the reader stops reading requests and stops taking
//! events (the bus then counts them as lag), so a client that does not read cannot make the host
//! buffer without bound. Measured: the earlier design (every chunk through a channel to the
//! writer task) cost one extra task wake-up per batch: 4.3 µs of host CPU per pipelined `ping`
//! against 3.25 µs now.
//!
//! **Floods and stalls** (`[server]` of the config). At `max_connections` open connections, one
//! more is answered at once from the accept loop (one non-blocking write of an `overloaded`
//! frame naming the limit into the new socket's empty buffer, then close): no task, no buffer and
//! no permit for it, so a flood of refused connections costs the open ones nothing. A frame
//! whose first byte has arrived must be complete within `frame_timeout` (counted while the
//! reader is reading; a reader paused by backpressure restarts the count when it reads again);
//! otherwise the connection gets a `timeout` frame with id null and is closed, like a
//! `frame_too_large` one. A connection idle *between* frames is never timed out: it costs one
//! parked task and its fd, and is bounded by `max_connections`.
//!
//! **The end of the peer's stream** (it closed or shut down its write side, or a read failed)
//! stops the reading, not the answering: every request already read is answered, then the
//! connection is closed. Part of a frame left unfinished at the end is discarded unanswered.
//!
//! Malformed input follows `docs/PROTOCOL.md`: an undecodable body is answered `bad_request`
//! (with the id it could recover) and the connection goes on; a declared length above the
//! maximum is answered `frame_too_large` with id null and the connection is closed (answers
//! already encoded go out before it; requests still in flight on that connection are abandoned,
//! since the peer's framing can no longer be trusted); invalid
//! responses/events from the peer are never answered (that could ping-pong between two buggy
//! peers) but are logged and counted.
//!
//! `events/subscribe` / `events/unsubscribe` are answered by the core, not by a daemon: a subscription
//! belongs to its connection, is bounded per connection, and is dropped (unsubscribing from the
//! bus) when the connection ends.
//!
//! Shutdown has two steps driven by the host: [`ServerHandle::begin_shutdown`] stops accepting
//! and answers every *new* request with `shutting_down` while requests already in flight finish
//! ([`ServerHandle::drained`] waits for that, bounded); [`ServerHandle::close`] then ends every
//! connection after flushing what is already encoded.

mod session;

pub(crate) use session::{Incoming, Input, Limits, OUTBOX_HIGH, Outgoing, bodies, serve};

use bytes::{Buf, BytesMut};
use daemonhost_protocol::{
    CodecError, ErrorCode, Frame, HEADER_LEN, RawFrameCodec, Response, write_frame,
};
use daemonhost_runtime::{EventBus, Router};
use daemonhost_system::HostCounters;
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a writer may still flush after the server is told to close.
pub(crate) const CLOSE_FLUSH_GRACE: Duration = Duration::from_millis(200);

/// The socket server's bounds (from `[host]` and `[server]` of the config).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest frame body accepted or sent.
    pub max_frame_len: usize,
    /// Requests in flight per connection before the reader stops reading.
    pub max_in_flight: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Per-subscription event buffer.
    pub event_buffer: usize,
    /// Connections open at once; one more is answered `overloaded` and closed.
    pub max_connections: usize,
    /// Time from a frame's first byte to its last; a connection that takes longer is answered
    /// `timeout` (id null) and closed.
    pub frame_timeout: Duration,
}

/// What every connection of every transport shares: the router and bus it serves, the bounds,
/// the counters, and the shutdown steps. The WebSocket transport (`web/`) takes it from
/// [`ServerHandle::core`], so both transports drain and close together.
pub(crate) struct Core {
    pub(crate) router: Router,
    pub(crate) bus: EventBus,
    pub(crate) cfg: ServerConfig,
    pub(crate) counters: Arc<HostCounters>,
    /// Stop accepting; answer new requests with `shutting_down`.
    pub(crate) shutdown: CancellationToken,
    /// End every connection now.
    pub(crate) close: CancellationToken,
    /// Every accept loop, connection and writer task of both transports.
    pub(crate) tracker: TaskTracker,
    /// Socket connections open (the WebSocket transport has its own bound).
    connections: Arc<Semaphore>,
    /// Handed to each connection ([`Core::drain_sender`]); taken at `begin_shutdown`, so the
    /// receiver ends once no connection holds a clone (none has requests in flight).
    drain: Mutex<Option<mpsc::Sender<()>>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// What a new connection holds while it may have requests in flight during a shutdown;
    /// `None` once the shutdown began (such a connection answers everything `shutting_down`).
    pub(crate) fn drain_sender(&self) -> Option<mpsc::Sender<()>> {
        self.drain.lock().clone()
    }
}

/// Controls a running server.
#[derive(Debug)]
pub struct ServerHandle {
    core: Arc<Core>,
    /// Ends (`recv` → `None`) once every connection has released its sender: they do so when
    /// shutting down with nothing in flight.
    drained: mpsc::Receiver<()>,
}

/// Start accepting on `listener`. Requests are routed through `router` (which accepts them
/// before the runtime has started: they wait in startup queues).
pub fn spawn(
    listener: UnixListener,
    router: Router,
    bus: EventBus,
    cfg: ServerConfig,
    counters: Arc<HostCounters>,
) -> ServerHandle {
    // Nothing is ever sent on this channel; only its senders being dropped matters.
    let (drain_tx, drained) = mpsc::channel(1);
    let core = Arc::new(Core {
        router,
        bus,
        connections: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
        cfg,
        counters,
        shutdown: CancellationToken::new(),
        close: CancellationToken::new(),
        tracker: TaskTracker::new(),
        drain: Mutex::new(Some(drain_tx)),
    });
    core.tracker.spawn(accept_loop(listener, Arc::clone(&core)));
    ServerHandle { core, drained }
}

impl ServerHandle {
    /// The core the connections share, for another transport (the WebSocket listener).
    pub(crate) fn core(&self) -> Arc<Core> {
        Arc::clone(&self.core)
    }

    /// Stop accepting; from now on every new request is answered `shutting_down`.
    pub fn begin_shutdown(&self) {
        self.core.shutdown.cancel();
        self.core.drain.lock().take();
    }

    /// Wait until no request is in flight on any connection, at most `grace`. `true` if drained.
    pub async fn drained(&mut self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.drained.recv())
            .await
            .is_ok()
    }

    /// End every connection (after flushing what is encoded) and wait for their tasks, at most
    /// `grace`. Returns the number of tasks still running (0 normally).
    pub async fn close(&self, grace: Duration) -> usize {
        self.begin_shutdown();
        self.core.close.cancel();
        self.core.tracker.close();
        let _ = tokio::time::timeout(grace, self.core.tracker.wait()).await;
        self.core.tracker.len()
    }
}

async fn accept_loop(listener: UnixListener, core: Arc<Core>) {
    let stop = core.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _addr)) => {
                HostCounters::incr(&core.counters.connections_accepted);
                match Arc::clone(&core.connections).try_acquire_owned() {
                    Ok(permit) => {
                        let c = Arc::clone(&core);
                        core.tracker.spawn(connection(stream, c, permit));
                    }
                    Err(_) => refuse(stream, &core),
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!(error = %e, "Accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tracing::debug!("Stopped accepting connections");
}

/// Past `max_connections`: say why, then close. Inline in the accept loop: one non-blocking
/// write into the new socket's empty send buffer (a frame of ~150 bytes always fits), then the
/// socket is dropped. A peer that already sent a request still reads this frame first (then the
/// close, which the kernel reports as a reset because its request was never read).
fn refuse(stream: UnixStream, core: &Core) {
    HostCounters::incr(&core.counters.connections_refused);
    let max = core.cfg.max_connections;
    let mut out = BytesMut::new();
    let frame = Frame::Response(Response::err(
        None,
        ErrorCode::Overloaded,
        format!(
            "the host serves at most {max} connections at once ([server] max_connections = {max}) and all are in use; closing this one, retry later"
        ),
    ));
    if write_frame(&mut out, &frame, core.cfg.max_frame_len).is_ok()
        && let Err(e) = stream.try_write(&out)
    {
        tracing::debug!(error = %e, "Could not tell a refused connection why");
    }
    tracing::debug!(max, "Refused a connection over max_connections");
}

/// Whether `buf`, what the reader holds of the stream, begins with an incomplete frame (part of
/// a header, or a header and part of its body). The codec keeps the header in the buffer until
/// the whole frame is there.
fn incomplete_frame(buf: &[u8]) -> bool {
    match buf.get(..HEADER_LEN) {
        None => !buf.is_empty(),
        Some(h) => {
            let declared = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            buf.len() < HEADER_LEN.saturating_add(declared)
        }
    }
}

/// One socket connection: its writer task, then the shared per-connection loop.
async fn connection(stream: UnixStream, core: Arc<Core>, _permit: OwnedSemaphorePermit) {
    let (rd, wr) = stream.into_split();
    let outbox = Arc::new(Outbox {
        wr,
        state: Mutex::new(OutState::default()),
        more: Notify::new(),
        space: Notify::new(),
    });
    core.tracker
        .spawn(write_loop(Arc::clone(&outbox), core.close.clone()));
    let cfg = &core.cfg;
    let input = SocketInput {
        frames: FramedRead::with_capacity(
            rd,
            RawFrameCodec::with_max_frame_len(cfg.max_frame_len),
            64 * 1024,
        ),
        stall: Box::pin(tokio::time::sleep(cfg.frame_timeout)),
        frame_begun: false,
        frame_timeout: cfg.frame_timeout,
        counters: &core.counters,
    };
    let limits = Limits {
        max_in_flight: cfg.max_in_flight,
        requests: None,
    };
    serve(&core, input, &*outbox, limits).await;
}

/// The socket's reading end: length-prefixed frames, and the frame timeout.
struct SocketInput<'a> {
    frames: FramedRead<OwnedReadHalf, RawFrameCodec>,
    /// Armed (reset to `frame_timeout` from now) when a frame begins.
    stall: Pin<Box<Sleep>>,
    frame_begun: bool,
    frame_timeout: Duration,
    counters: &'a HostCounters,
}

impl Incoming for SocketInput<'_> {
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Input> {
        match self.frames.poll_next_unpin(cx) {
            Poll::Ready(None) => Poll::Ready(Input::End),
            Poll::Ready(Some(Ok(body))) => {
                self.frame_begun = false;
                Poll::Ready(Input::Body(body))
            }
            Poll::Ready(Some(Err(CodecError::FrameTooLarge { declared, max }))) => {
                HostCounters::incr(&self.counters.frames_too_large);
                tracing::debug!(declared, max, "Closing a connection: frame too large");
                Poll::Ready(Input::Fatal(Response::err(
                    None,
                    ErrorCode::FrameTooLarge,
                    format!(
                        "frame of {declared} bytes exceeds the maximum of {max} bytes; closing the connection"
                    ),
                )))
            }
            Poll::Ready(Some(Err(e))) => {
                // The end of the stream inside a frame (a half-close with part of a frame
                // buffered; the part is discarded), or a failed read: nothing more can be
                // read, but the answers to the requests in flight are still written, as after
                // a clean end of the stream. A write that fails ends the connection.
                tracing::debug!(error = %e, "Connection read ended");
                Poll::Ready(Input::End)
            }
            Poll::Pending => {
                if !self.frame_begun && incomplete_frame(self.frames.read_buffer()) {
                    // A frame has begun: its time starts now.
                    self.frame_begun = true;
                    let at = tokio::time::Instant::now() + self.frame_timeout;
                    self.stall.as_mut().reset(at);
                }
                // Polled after the frames: bytes that completed the frame are decoded first.
                if self.frame_begun && self.stall.as_mut().poll(cx).is_ready() {
                    HostCounters::incr(&self.counters.frames_timed_out);
                    let ms = self.frame_timeout.as_millis();
                    tracing::debug!(
                        timeout_ms = ms,
                        "Closing a connection: frame not completed in time"
                    );
                    return Poll::Ready(Input::Fatal(Response::err(
                        None,
                        ErrorCode::Timeout,
                        format!(
                            "a frame was begun and not completed within {ms} ms ([server] frame_timeout_ms = {ms}); closing the connection"
                        ),
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn pause(&mut self) {
        // Not reading: the rest of the frame may wait in the kernel; not the peer's stall.
        self.frame_begun = false;
    }
}

/// A socket connection's output: see the module docs.
struct Outbox {
    wr: OwnedWriteHalf,
    state: Mutex<OutState>,
    /// The reader appended to the buffer (or finished).
    more: Notify,
    /// The buffer went below `OUTBOX_HIGH`.
    space: Notify,
}

#[derive(Default)]
struct OutState {
    buf: BytesMut,
    /// The reader is done; the writer exits once the buffer is empty.
    finished: bool,
    /// A write failed; nothing more can be sent.
    dead: bool,
}

impl Outgoing for Outbox {
    fn backlog(&self) -> usize {
        self.state.lock().buf.len()
    }

    fn space(&self) -> Notified<'_> {
        self.space.notified()
    }

    /// Send `out` (emptied): directly while nothing is queued, else behind what is queued.
    /// `false` once the socket has failed.
    fn send(&self, out: &mut BytesMut) -> bool {
        let mut st = self.state.lock();
        if st.dead {
            out.clear();
            return false;
        }
        if st.buf.is_empty() {
            // Holding the lock keeps the writer task from interleaving its bytes.
            while !out.is_empty() {
                match self.wr.try_write(out) {
                    Ok(n) => out.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "Connection write failed");
                        st.dead = true;
                        out.clear();
                        return false;
                    }
                }
            }
            if out.is_empty() {
                return true;
            }
        }
        st.buf.extend_from_slice(out);
        out.clear();
        drop(st);
        self.more.notify_one();
        true
    }

    fn finish(&self) {
        self.state.lock().finished = true;
        self.more.notify_one();
    }
}

/// One socket connection's writer: drains the outbox whenever the socket can take more. The
/// last handle's drop (this task's, after the loop's) shuts the write half down.
async fn write_loop(outbox: Arc<Outbox>, close: CancellationToken) {
    let run = async {
        loop {
            // Write what is queued; wait for writability when the socket is full.
            let wait_writable = {
                let mut st = outbox.state.lock();
                if st.dead {
                    return;
                }
                if st.buf.is_empty() {
                    if st.finished {
                        return;
                    }
                    false
                } else {
                    let was_high = st.buf.len() > OUTBOX_HIGH;
                    match outbox.wr.try_write(&st.buf) {
                        Ok(n) => {
                            st.buf.advance(n);
                            if was_high && st.buf.len() <= OUTBOX_HIGH {
                                outbox.space.notify_one();
                            }
                            continue;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::debug!(error = %e, "Connection write failed");
                            st.dead = true;
                            st.buf.clear();
                            drop(st);
                            // Wake a reader waiting for space: it will see `dead`.
                            outbox.space.notify_one();
                            return;
                        }
                    }
                }
            };
            if wait_writable {
                if outbox.wr.writable().await.is_err() {
                    outbox.state.lock().dead = true;
                    outbox.space.notify_one();
                    return;
                }
            } else {
                outbox.more.notified().await;
            }
        }
    };
    // After `close`, the writer still gets a short grace to flush the last answers.
    tokio::select! {
        () = run => {}
        () = async {
            close.cancelled().await;
            tokio::time::sleep(CLOSE_FLUSH_GRACE).await;
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemonhost_protocol::Request;
    use daemonhost_runtime::{CommandSpec, DaemonSpec, Runtime, RuntimeBuilder};
    use daemonhost_testkit::fake::Fake;
    use daemonhost_testkit::host::Reader;
    use daemonhost_testkit::{eventually, within};
    use serde_json::json;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;

    fn config() -> ServerConfig {
        ServerConfig {
            max_frame_len: daemonhost_protocol::DEFAULT_MAX_FRAME,
            max_in_flight: 1024,
            max_subscriptions: 64,
            event_buffer: 256,
            max_connections: 16,
            frame_timeout: Duration::from_secs(10),
        }
    }

    /// A runtime (not started) whose one daemon echoes `later/echo`.
    fn runtime() -> Runtime {
        let mut b = RuntimeBuilder::new(daemonhost_testkit::quiet_config());
        b.register(Fake::echo(
            DaemonSpec::new("later").command(CommandSpec::new("later/echo", "echoes its params")),
        ));
        b.build().expect("a valid plan")
    }

    fn request(id: u64) -> Vec<u8> {
        let mut b = BytesMut::new();
        let req = Request::new(id, "later/echo", json!({ "n": id }));
        write_frame(&mut b, &Frame::Request(req), usize::MAX).expect("encode");
        b.to_vec()
    }

    // Current-thread runtime: once the test task runs again after the server read both
    // requests, the server's connection task has also read the end of the stream behind them
    // (it was in the socket before the server accepted), so the order below is exact.
    #[tokio::test]
    async fn a_half_close_with_a_partial_frame_buffered_still_answers_every_request_in_flight() {
        let rt = runtime();
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let counters = Arc::new(HostCounters::default());

        // Two requests, the first 7 bytes of a third, then the write side shut down: all of it
        // waits in the socket before the server accepts.
        let mut client = UnixStream::connect(&path).await.expect("connect");
        let mut bytes = [request(1), request(2)].concat();
        bytes.extend_from_slice(&request(3)[..7]);
        client.write_all(&bytes).await.expect("write");
        client.shutdown().await.expect("shut down the write side");
        let server = spawn(
            listener,
            rt.router(),
            rt.bus(),
            config(),
            Arc::clone(&counters),
        );

        // The daemon has not started: both requests wait in its startup queue, in flight on
        // the connection, while the server reads the end of the stream behind them.
        let queued = || rt.reports()[0].queue_depth;
        eventually("both requests queued", async || queued() == 2).await;
        assert_eq!(counters.requests.load(Ordering::Relaxed), 2);
        assert_eq!(
            counters.connections_open.load(Ordering::Relaxed),
            1,
            "the connection was closed with two requests in flight"
        );

        // Once the daemon is up, both are answered, then the connection ends.
        rt.start();
        let (rd, _wr) = client.into_split();
        let mut reader = Reader::new(rd);
        let mut answered = Vec::new();
        while let Some(frame) = reader.next_frame().await {
            match frame {
                Frame::Response(r) => answered.push((r.id, r.outcome)),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        answered.sort_by_key(|(id, _)| *id);
        assert_eq!(
            answered,
            vec![
                (Some(1), Ok(json!({"n": 1}))),
                (Some(2), Ok(json!({"n": 2}))),
            ],
            "each request read is answered once, the unfinished frame is not"
        );
        eventually("the connection closed", async || {
            counters.connections_open.load(Ordering::Relaxed) == 0
        })
        .await;
        within("the server to close", server.close(Duration::from_secs(5))).await;
        within("shutdown", rt.shutdown()).await;
    }

    #[test]
    fn incomplete_frame_is_part_of_a_header_or_a_header_and_part_of_its_body() {
        let frame = [&5u32.to_be_bytes()[..], b"hello"].concat();
        assert!(!incomplete_frame(&[]), "nothing begun between frames");
        for cut in 1..frame.len() {
            assert!(incomplete_frame(&frame[..cut]), "{cut} bytes");
        }
        assert!(!incomplete_frame(&frame));
        // A complete frame first (then the start of the next) is no stall: it is decoded next.
        assert!(!incomplete_frame(&[&frame[..], &frame[..2]].concat()));
        assert!(!incomplete_frame(&0u32.to_be_bytes()), "an empty body");
    }

    #[tokio::test]
    async fn an_error_too_large_to_send_keeps_its_code_with_its_message_cut_and_a_result_is_internal()
     {
        const MAX: usize = 4096;
        let mut b = RuntimeBuilder::new(daemonhost_testkit::quiet_config());
        b.register(Fake::answering(
            DaemonSpec::new("big")
                .command(CommandSpec::new("big/error", "e"))
                .command(CommandSpec::new("big/result", "r")),
            |r| match r.command.as_str() {
                "big/error" => Err(daemonhost_runtime::DaemonError::not_found(format!(
                    "no '{}'",
                    "é".repeat(MAX)
                ))),
                _ => Ok(serde_json::Value::from("x".repeat(MAX))),
            },
        ));
        let rt = b.build().expect("a valid plan");
        within("start", rt.start_all()).await;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = spawn(
            listener,
            rt.router(),
            rt.bus(),
            ServerConfig {
                max_frame_len: MAX,
                ..config()
            },
            Arc::new(HostCounters::default()),
        );
        let (rd, mut wr) = UnixStream::connect(&path)
            .await
            .expect("connect")
            .into_split();
        let mut reader = Reader::new(rd);
        for (id, command) in [(1, "big/error"), (2, "big/result")] {
            let mut b = BytesMut::new();
            let req = Request::new(id, command, serde_json::Value::Null);
            write_frame(&mut b, &Frame::Request(req), MAX).expect("encode");
            wr.write_all(&b).await.expect("write");
            let r = reader.response().await;
            assert_eq!(r.id, Some(id));
            let e = r.outcome.expect_err("an error");
            if id == 1 {
                assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
                let full = format!("no '{}'", "é".repeat(MAX)).len();
                assert!(
                    e.message
                        .ends_with(&format!("… (message cut: {full} bytes)")),
                    "{}",
                    e.message
                );
                assert!(e.message.starts_with("no 'éé"), "{}", e.message);
                assert!(
                    e.message.len() <= super::session::MAX_CUT_MESSAGE + 64,
                    "{}",
                    e.message.len()
                );
            } else {
                assert_eq!(e.code, ErrorCode::Internal, "{e:?}");
                assert!(e.message.starts_with("the response could not be sent"));
            }
        }
        drop(wr);
        within("the server to close", server.close(Duration::from_secs(5))).await;
        within("shutdown", rt.shutdown()).await;
    }
}
