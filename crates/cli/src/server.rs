//! The socket server: the accept loop and, per connection, one reader task and one writer task.
//!
//! **Reader** (`connection`): decodes frames and answers them. Requests are routed with
//! [`Router::ask_owned`]; their futures live in the connection's own `FuturesUnordered`, so a
//! request costs no task spawn and responses go out in completion order, not request order.
//! At `max_in_flight` unanswered requests the reader stops reading the socket until answers
//! drain: backpressure through the kernel's socket buffer, nothing dropped. Every response and
//! event is encoded by this one task into one output buffer, in the order it handles them:
//! that is what makes "the `events/subscribe` response goes out before any event of that
//! subscription" true by construction (the subscription is only polled after its response is
//! encoded).
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
//! An answer too large to send (above `max_frame_len`) is an error message that echoes a param
//! of nearly the frame's size (`events/subscribe` quotes its pattern, `persona/status` its id):
//! it keeps its code and its message is cut to 1 KiB. A *result* too large is `internal`.
//!
//! Malformed input follows `docs/PROTOCOL.md`: an undecodable body is answered `bad_request`
//! (with the id it could recover) and the connection goes on; a declared length above the
//! maximum is answered `frame_too_large` with id null and the connection is closed (answers
//! already encoded go out before it; requests still in flight on that connection are abandoned,
//! since the peer's framing can no longer be trusted); invalid
//! responses/events from the peer are never answered (that could ping-pong between two buggy
//! peers) but are logged and counted.
//!
//! `events/subscribe` / `events/unsubscribe` are answered here, not by a daemon: a subscription
//! belongs to its connection, is bounded per connection, and is dropped (unsubscribing from the
//! bus) when the connection ends.
//!
//! Shutdown has two steps driven by the host: [`ServerHandle::begin_shutdown`] stops accepting
//! and answers every *new* request with `shutting_down` while requests already in flight finish
//! ([`ServerHandle::drained`] waits for that, bounded); [`ServerHandle::close`] then ends every
//! connection after flushing what is already encoded.

use bytes::{Buf, BytesMut};
use daemonhost_protocol::params::Params;
use daemonhost_protocol::{
    CodecError, ErrorBody, ErrorCode, EventFrame, Frame, FrameType, HEADER_LEN, RawFrameCodec,
    Response, write_frame,
};
use daemonhost_runtime::{BusError, DaemonError, Delivery, EventBus, Router, Subscription};
use daemonhost_system::HostCounters;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bytes waiting in a connection's outbox above which the reader pauses (backpressure): it reads
/// no requests and takes no events until the writer has drained below it. The outbox is thus
/// bounded by this plus the answers to requests already in flight (at most `max_in_flight`).
const OUTBOX_HIGH: usize = 4 << 20;
/// Events encoded per wake-up before the reader looks at its other work again.
const EVENT_BATCH: usize = 64;
/// Bytes of an error message kept when the answer it is in is too large to send.
const MAX_CUT_MESSAGE: usize = 1024;
/// How long a writer may still flush after the server is told to close.
const CLOSE_FLUSH_GRACE: Duration = Duration::from_millis(200);

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

struct Shared {
    router: Router,
    bus: EventBus,
    cfg: ServerConfig,
    counters: Arc<HostCounters>,
    /// Stop accepting; answer new requests with `shutting_down`.
    shutdown: CancellationToken,
    /// End every connection now.
    close: CancellationToken,
    tracker: TaskTracker,
    connections: Arc<Semaphore>,
}

/// Controls a running server.
#[derive(Debug)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    /// Ends (`recv` → `None`) once the accept loop and every connection have released their
    /// sender: they do so when shutting down with nothing in flight.
    drained: mpsc::Receiver<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
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
    let shared = Arc::new(Shared {
        router,
        bus,
        connections: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
        cfg,
        counters,
        shutdown: CancellationToken::new(),
        close: CancellationToken::new(),
        tracker: TaskTracker::new(),
    });
    // Nothing is ever sent on this channel; only its senders being dropped matters.
    let (drain_tx, drained) = mpsc::channel(1);
    shared
        .tracker
        .spawn(accept_loop(listener, Arc::clone(&shared), drain_tx));
    ServerHandle { shared, drained }
}

impl ServerHandle {
    /// Stop accepting; from now on every new request is answered `shutting_down`.
    pub fn begin_shutdown(&self) {
        self.shared.shutdown.cancel();
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
        self.shared.shutdown.cancel();
        self.shared.close.cancel();
        self.shared.tracker.close();
        let _ = tokio::time::timeout(grace, self.shared.tracker.wait()).await;
        self.shared.tracker.len()
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>, drain: mpsc::Sender<()>) {
    let stop = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _addr)) => {
                HostCounters::incr(&shared.counters.connections_accepted);
                match Arc::clone(&shared.connections).try_acquire_owned() {
                    Ok(permit) => {
                        let s = Arc::clone(&shared);
                        shared
                            .tracker
                            .spawn(connection(stream, s, drain.clone(), permit));
                    }
                    Err(_) => refuse(stream, &shared),
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
fn refuse(stream: UnixStream, shared: &Shared) {
    HostCounters::incr(&shared.counters.connections_refused);
    let max = shared.cfg.max_connections;
    let mut out = BytesMut::new();
    let frame = Frame::Response(Response::err(
        None,
        ErrorCode::Overloaded,
        format!(
            "the host serves at most {max} connections at once ([server] max_connections = {max}) and all are in use; closing this one, retry later"
        ),
    ));
    if write_frame(&mut out, &frame, shared.cfg.max_frame_len).is_ok()
        && let Err(e) = stream.try_write(&out)
    {
        tracing::debug!(error = %e, "Could not tell a refused connection why");
    }
    tracing::debug!(max, "Refused a connection over max_connections");
}

/// The first `max` bytes of `s`, or a little less: cut on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut at = max.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    &s[..at]
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

/// What polling the frame stream gave.
enum Read {
    /// A frame, a framing error or the end of the stream.
    Item(Option<Result<bytes::Bytes, CodecError>>),
    /// Nothing yet, but a frame has begun: its time starts now.
    Begun,
}

/// The outcome of one routed request.
type Answer = (u64, Result<Value, DaemonError>);

/// One connection's reader: see the module docs.
async fn connection(
    stream: UnixStream,
    shared: Arc<Shared>,
    drain: mpsc::Sender<()>,
    _permit: OwnedSemaphorePermit,
) {
    let counters = &*shared.counters;
    HostCounters::incr(&counters.connections_open);
    let (rd, wr) = stream.into_split();
    let outbox = Arc::new(Outbox {
        wr,
        state: Mutex::new(OutState::default()),
        more: Notify::new(),
        space: Notify::new(),
    });
    shared
        .tracker
        .spawn(write_loop(Arc::clone(&outbox), shared.close.clone()));

    let cfg = &shared.cfg;
    let router = &shared.router;
    let mut conn = Conn {
        shared: &shared,
        out: BytesMut::with_capacity(16 * 1024),
        subs: Subs::default(),
        next_sub: 1,
        draining: false,
    };
    let mut frames = FramedRead::with_capacity(
        rd,
        RawFrameCodec::with_max_frame_len(cfg.max_frame_len),
        64 * 1024,
    );
    let mut inflight = FuturesUnordered::new();
    let mut reading = true;
    let mut drain = Some(drain);
    let close = shared.close.cancelled();
    let shutdown = shared.shutdown.cancelled();
    // Armed (reset to `frame_timeout` from now) when a frame begins; see `Read::Begun`.
    let stall = tokio::time::sleep(cfg.frame_timeout);
    let mut frame_begun = false;
    tokio::pin!(close, shutdown, stall);

    loop {
        if conn.draining && inflight.is_empty() {
            drain.take();
        }
        if !reading && inflight.is_empty() {
            break; // the peer finished sending and everything is answered
        }
        let mut close_after_flush = false;
        let backlogged = outbox.backlog() > OUTBOX_HIGH;
        let read_now = !backlogged && reading && inflight.len() < cfg.max_in_flight;
        if !read_now {
            // Not reading: the rest of the frame may wait in the kernel; not the peer's stall.
            frame_begun = false;
        }
        tokio::select! {
            biased;
            () = &mut close => break,
            () = &mut shutdown, if !conn.draining => conn.draining = true,
            () = outbox.space.notified(), if backlogged => {}
            Some((id, answer)) = inflight.next(), if !inflight.is_empty() => {
                conn.respond(id, answer);
                // Everything else already answered goes into the same write.
                while let Some(Some((id, answer))) = inflight.next().now_or_never() {
                    conn.respond(id, answer);
                }
            }
            Some((sub, delivery)) = poll_fn(|cx| conn.subs.poll_next(cx)), if !backlogged && !conn.subs.is_empty() => {
                conn.forward(sub, delivery);
                for _ in 1..EVENT_BATCH {
                    match poll_fn(|cx| conn.subs.poll_next(cx)).now_or_never() {
                        Some(Some((sub, d))) => conn.forward(sub, d),
                        _ => break,
                    }
                }
            }
            read = poll_fn(|cx| match frames.poll_next_unpin(cx) {
                Poll::Ready(item) => Poll::Ready(Read::Item(item)),
                Poll::Pending if !frame_begun && incomplete_frame(frames.read_buffer()) => {
                    Poll::Ready(Read::Begun)
                }
                Poll::Pending => Poll::Pending,
            }), if read_now => match read {
                Read::Begun => {
                    frame_begun = true;
                    stall.as_mut().reset(tokio::time::Instant::now() + cfg.frame_timeout);
                }
                Read::Item(None) => reading = false,
                Read::Item(Some(Ok(body))) => {
                    frame_begun = false;
                    if let Some((id, command, params, timeout)) = conn.on_body(&body) {
                        inflight.push(async move {
                            let answer: Answer = (id, router.ask_owned(command, params, timeout).await);
                            answer
                        });
                    }
                }
                Read::Item(Some(Err(CodecError::FrameTooLarge { declared, max }))) => {
                    HostCounters::incr(&counters.frames_too_large);
                    tracing::debug!(declared, max, "Closing a connection: frame too large");
                    conn.error(None, ErrorCode::FrameTooLarge, format!(
                        "frame of {declared} bytes exceeds the maximum of {max} bytes; closing the connection"
                    ));
                    close_after_flush = true;
                }
                Read::Item(Some(Err(e))) => {
                    // The end of the stream inside a frame (a half-close with part of a frame
                    // buffered; the part is discarded), or a failed read: nothing more can be
                    // read, but the answers to the requests in flight are still written, as
                    // after a clean end of the stream. A write that fails ends the connection.
                    tracing::debug!(error = %e, in_flight = inflight.len(), "Connection read ended");
                    reading = false;
                }
            },
            // After the read arm: bytes that completed the frame are decoded first.
            () = &mut stall, if read_now && frame_begun => {
                HostCounters::incr(&counters.frames_timed_out);
                let ms = cfg.frame_timeout.as_millis();
                tracing::debug!(timeout_ms = ms, "Closing a connection: frame not completed in time");
                conn.error(None, ErrorCode::Timeout, format!(
                    "a frame was begun and not completed within {ms} ms ([server] frame_timeout_ms = {ms}); closing the connection"
                ));
                close_after_flush = true;
            }
        }
        if !conn.out.is_empty() && !outbox.send(&mut conn.out) {
            break; // the socket failed: the peer went away
        }
        if close_after_flush {
            break;
        }
    }
    let subs = conn.subs.list.len() as u64;
    drop(conn);
    for _ in 0..subs {
        HostCounters::decr(&counters.subscriptions_open);
    }
    HostCounters::decr(&counters.connections_open);
    // The writer flushes what is left, then the last handle's drop shuts the write half down.
    outbox.finish();
}

/// A connection's output: see the module docs.
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

impl Outbox {
    fn backlog(&self) -> usize {
        self.state.lock().buf.len()
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

/// Per-connection state the reader mutates.
struct Conn<'a> {
    shared: &'a Shared,
    out: BytesMut,
    subs: Subs,
    next_sub: u64,
    draining: bool,
}

impl Conn<'_> {
    /// Handle one frame body. Returns a request to route; everything else is answered here.
    fn on_body(&mut self, body: &[u8]) -> Option<(u64, String, Value, Option<Duration>)> {
        let counters = &*self.shared.counters;
        match Frame::decode(body) {
            Ok(Frame::Request(req)) => {
                HostCounters::incr(&counters.requests);
                if self.draining {
                    self.error(
                        Some(req.id),
                        ErrorCode::ShuttingDown,
                        "the host is shutting down and accepts no new requests".into(),
                    );
                    return None;
                }
                match req.command.as_str() {
                    "events/subscribe" => {
                        match self.subscribe(req.params) {
                            // The response is encoded before the subscription is polled.
                            Ok((sid, sub)) => {
                                let mut m = Map::with_capacity(1);
                                m.insert("subscription".to_owned(), Value::from(sid));
                                self.respond(req.id, Ok(Value::Object(m)));
                                self.subs.list.push((sid, sub));
                                HostCounters::incr(&counters.subscriptions_open);
                            }
                            Err(e) => self.respond(req.id, Err(e)),
                        }
                        None
                    }
                    "events/unsubscribe" => {
                        let answer = self.unsubscribe(req.params);
                        self.respond(req.id, answer);
                        None
                    }
                    _ => Some((
                        req.id,
                        req.command,
                        req.params,
                        req.timeout_ms.map(Duration::from_millis),
                    )),
                }
            }
            Ok(frame @ (Frame::Response(_) | Frame::Event(_))) => {
                // The host sends no requests and takes no events from clients.
                tracing::debug!(
                    frame_type = %frame.frame_type(),
                    "Ignoring a frame the host did not ask for"
                );
                None
            }
            Err(bad) => {
                HostCounters::incr(&counters.bad_frames);
                match bad.frame_type {
                    Some(FrameType::Response | FrameType::Event) => {
                        tracing::debug!(error = %bad, "Ignoring an invalid response/event frame");
                    }
                    _ => self.push(&Frame::Response(bad.to_response())),
                }
                None
            }
        }
    }

    fn subscribe(&mut self, params: Value) -> Result<(u64, Subscription), DaemonError> {
        self.shared
            .router
            .check_params("events/subscribe", &params)?;
        let params = Params::new(params)?;
        let pattern = params.str("pattern")?;
        let max = self.shared.cfg.max_subscriptions;
        if self.subs.list.len() >= max {
            return Err(DaemonError::overloaded(format!(
                "this connection already has {max} subscriptions (the limit); unsubscribe first"
            )));
        }
        let sub = self
            .shared
            .bus
            .subscribe_with_capacity(pattern, self.shared.cfg.event_buffer)
            .map_err(|e| match e {
                BusError::Pattern(_) | BusError::Topic(_) => {
                    DaemonError::validation(format!("pattern: '{pattern}' is not valid: {e}"))
                }
                BusError::TooManySubscriptions { .. } => DaemonError::overloaded(e.to_string()),
                BusError::Closed => DaemonError::shutting_down(e.to_string()),
                other => DaemonError::internal(other.to_string()),
            })?;
        let sid = self.next_sub;
        self.next_sub += 1;
        Ok((sid, sub))
    }

    fn unsubscribe(&mut self, params: Value) -> Result<Value, DaemonError> {
        self.shared
            .router
            .check_params("events/unsubscribe", &params)?;
        let sid = Params::new(params)?.u64("subscription")?;
        match self.subs.list.iter().position(|(id, _)| *id == sid) {
            Some(i) => {
                // Dropping the handle unsubscribes from the bus at once.
                self.subs.list.swap_remove(i);
                HostCounters::decr(&self.shared.counters.subscriptions_open);
                Ok(Value::Object(Map::new()))
            }
            None => Err(DaemonError::not_found(format!(
                "this connection has no subscription {sid}"
            ))),
        }
    }

    fn respond(&mut self, id: u64, answer: Result<Value, DaemonError>) {
        let frame = Frame::Response(Response {
            id: Some(id),
            outcome: answer.map_err(ErrorBody::from),
        });
        let Err(e) = write_frame(&mut self.out, &frame, self.shared.cfg.max_frame_len) else {
            return;
        };
        tracing::warn!(id, error = %e, "Response too large to send");
        match frame {
            // An error too large is one whose message echoes what was sent (a param of nearly
            // the frame's size): its code stands, its message is cut.
            Frame::Response(Response {
                outcome: Err(mut body),
                ..
            }) => {
                let len = body.message.len();
                body.message = format!(
                    "{}… (message cut: {len} bytes)",
                    cut(&body.message, MAX_CUT_MESSAGE)
                );
                self.push(&Frame::Response(Response::from_error(Some(id), body)));
            }
            _ => self.error(
                Some(id),
                ErrorCode::Internal,
                format!("the response could not be sent: {e}"),
            ),
        }
    }

    fn error(&mut self, id: Option<u64>, code: ErrorCode, message: String) {
        self.push(&Frame::Response(Response::err(id, code, message)));
    }

    fn push(&mut self, frame: &Frame) {
        // Error frames are small; a failure here would mean a maximum below a few hundred bytes.
        if let Err(e) = write_frame(&mut self.out, frame, self.shared.cfg.max_frame_len) {
            tracing::warn!(error = %e, "Frame too large to send");
        }
    }

    fn forward(&mut self, sub: u64, delivery: Delivery) {
        let frame = match delivery {
            Delivery::Event(e) => EventFrame {
                subscription: sub,
                topic: e.topic().to_owned(),
                data: e.data().clone(),
            },
            Delivery::Lagged { missed } => EventFrame::lagged(sub, missed),
        };
        HostCounters::incr(&self.shared.counters.events_forwarded);
        if let Err(e) = write_frame(
            &mut self.out,
            &Frame::Event(frame),
            self.shared.cfg.max_frame_len,
        ) {
            tracing::warn!(subscription = sub, error = %e, "Event too large to forward; dropped");
        }
    }
}

/// A connection's subscriptions, polled fairly (round robin from where the last one left off).
#[derive(Default)]
struct Subs {
    list: Vec<(u64, Subscription)>,
    next: usize,
}

impl Subs {
    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u64, Delivery)>> {
        let mut k = 0;
        while k < self.list.len() {
            let n = self.list.len();
            let i = (self.next + k) % n;
            match self.list[i].1.poll_recv(cx) {
                Poll::Ready(Some(d)) => {
                    self.next = (i + 1) % n;
                    return Poll::Ready(Some((self.list[i].0, d)));
                }
                Poll::Ready(None) => {
                    // The bus closed (host stopping): this subscription is over.
                    self.list.swap_remove(i);
                }
                Poll::Pending => k += 1,
            }
        }
        Poll::Pending
    }
}

/// One connection's writer: drains the outbox whenever the socket can take more.
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
                "big/error" => Err(DaemonError::not_found(format!("no '{}'", "é".repeat(MAX)))),
                _ => Ok(Value::from("x".repeat(MAX))),
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
            let req = Request::new(id, command, Value::Null);
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
                    e.message.len() <= MAX_CUT_MESSAGE + 64,
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
}
