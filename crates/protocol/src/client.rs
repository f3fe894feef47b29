//! Async pipelining client over a Unix stream socket.
//!
//! One writer task drains a bounded queue of encoded frames into the socket (batching whatever is
//! queued into one write); one reader task decodes frames and routes them: responses to the
//! pending call with the same id, events to the subscription's bounded queue, peer requests to
//! [`answer_peer_request`]. The number of calls in flight is bounded by a semaphore, so the pending
//! map is bounded too. When the connection ends, every pending call is answered with the reason
//! and every event stream ends: nothing hangs.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::codec::{CodecError, DEFAULT_MAX_FRAME, FrameCodec, write_body, write_frame};
use crate::error::{ErrorBody, ErrorCode};
use crate::frame::{BadFrame, EventFrame, Frame, FrameType, Request, Response};

/// Tuning knobs of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Maximum calls awaiting a response at once (the pending map's bound). Default 1024.
    pub max_in_flight: usize,
    /// Per-subscription event buffer; past it events are dropped and counted, then reported as a
    /// `system:lagged` marker. Default 1024.
    pub event_buffer: usize,
    /// Encoded frames queued for the writer task. Default 1024.
    pub write_queue: usize,
    /// Maximum frame body length, both directions. Default 16 MiB.
    pub max_frame_len: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_in_flight: 1024,
            event_buffer: 1024,
            write_queue: 1024,
            max_frame_len: DEFAULT_MAX_FRAME,
        }
    }
}

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (it does not exist, or the connection was refused): the host
    /// is not running. The CLI exits 2 with a hint on this one.
    #[error("no daemonhost is listening on {}", path.display())]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
        /// The underlying error (ENOENT or ECONNREFUSED).
        source: io::Error,
    },
    /// Any other connection failure (permissions, path too long, …).
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// One call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The peer answered with an error response.
    #[error("remote error: {0}")]
    Remote(ErrorBody),
    /// No response arrived within the caller's timeout (the pending entry was removed).
    #[error("no response within {after:?}")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The connection ended (closed by the peer, reset, or this client's writer failed).
    #[error("connection to the host was lost")]
    Disconnected,
    /// The connection failed with an unexpected i/o error.
    #[error("i/o error on the connection: {0}")]
    Io(Arc<io::Error>),
    /// The peer broke the protocol (malformed response, oversized frame, …).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// `params` was neither an object nor null.
    #[error("params must be a JSON object, {found}")]
    InvalidParams {
        /// What was passed instead.
        found: &'static str,
    },
    /// The encoded request is longer than the maximum frame.
    #[error("request of {len} bytes exceeds the maximum frame of {max} bytes")]
    TooLarge {
        /// Encoded body length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
}

impl CallError {
    /// `true` for a client-side timeout or a remote `timeout` error.
    pub fn is_timeout(&self) -> bool {
        match self {
            CallError::Timeout { .. } => true,
            CallError::Remote(body) => body.code == ErrorCode::Timeout,
            _ => false,
        }
    }

    /// The remote error code, if the peer answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Remote(body) => Some(body.code),
            _ => None,
        }
    }

    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected => CallError::Disconnected,
            _ => CallError::Io(Arc::new(e)),
        }
    }

    fn from_codec(e: CodecError) -> Self {
        match e {
            CodecError::Io(e) => CallError::from_io(e),
            CodecError::BodyTooLarge { len, max } => CallError::TooLarge { len, max },
            e @ CodecError::FrameTooLarge { .. } => CallError::Protocol(e.to_string()),
        }
    }
}

fn describe_non_object(v: &Value) -> &'static str {
    match v {
        Value::Null => "found null",
        Value::Bool(_) => "found a boolean",
        Value::Number(_) => "found a number",
        Value::String(_) => "found a string",
        Value::Array(_) => "found an array",
        Value::Object(_) => "found an object",
    }
}

/// `null` → `{}`; objects pass; anything else is refused before sending.
fn normalize_params(params: Value) -> Result<Value, CallError> {
    match params {
        Value::Null => Ok(Value::Object(Map::new())),
        p @ Value::Object(_) => Ok(p),
        other => Err(CallError::InvalidParams {
            found: describe_non_object(&other),
        }),
    }
}

/// How this client answers a request sent to it by the peer: it serves no commands, so every
/// request gets `unknown_command`. One function so a handler can be plugged in later.
pub fn answer_peer_request(request: &Request) -> Response {
    Response::err(
        Some(request.id),
        ErrorCode::UnknownCommand,
        format!("this client serves no commands (got '{}')", request.command),
    )
}

// ---------------------------------------------------------------------------------------------
// Event queue: bounded, never blocks the reader, counts drops
// ---------------------------------------------------------------------------------------------

/// A subscription's bounded buffer. The reader never waits on it: when it is full the event is
/// dropped and counted; the count is surfaced as one `system:lagged` marker at the position of the
/// gap (before the next event that fits, or when the consumer has drained everything before it).
/// It holds at most `capacity` entries, the marker included.
struct EventQueue {
    capacity: usize,
    state: Mutex<QueueState>,
}

struct QueueState {
    items: VecDeque<EventFrame>,
    subscription: u64,
    missed: u64,
    closed: bool,
    waker: Option<Waker>,
}

impl fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("EventQueue")
            .field("capacity", &self.capacity)
            .field("queued", &st.items.len())
            .field("missed", &st.missed)
            .field("closed", &st.closed)
            .finish()
    }
}

impl EventQueue {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        EventQueue {
            capacity,
            state: Mutex::new(QueueState {
                items: VecDeque::with_capacity(capacity.min(64)),
                subscription: 0,
                missed: 0,
                closed: false,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // No code panics while holding this lock; recover the data rather than propagate.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_subscription(&self, subscription: u64) {
        self.lock().subscription = subscription;
    }

    fn push(&self, event: EventFrame) {
        let waker = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            if st.missed > 0 {
                if st.items.len() < self.capacity {
                    let marker = EventFrame::lagged(st.subscription, st.missed);
                    st.items.push_back(marker);
                    st.missed = 0;
                } else {
                    st.missed += 1;
                    return;
                }
            }
            if st.items.len() < self.capacity {
                st.items.push_back(event);
            } else {
                st.missed += 1;
            }
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut st = self.lock();
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<EventFrame>> {
        let mut st = self.lock();
        if let Some(e) = st.items.pop_front() {
            return Poll::Ready(Some(e));
        }
        if st.missed > 0 {
            let missed = std::mem::take(&mut st.missed);
            return Poll::Ready(Some(EventFrame::lagged(st.subscription, missed)));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

// ---------------------------------------------------------------------------------------------
// Shared connection state
// ---------------------------------------------------------------------------------------------

enum Pending {
    Call(oneshot::Sender<Result<Value, CallError>>),
    /// The sink travels with the pending entry so the reader can register it while processing the
    /// subscribe response, before it reads the next frame (which may be the first event).
    Subscribe {
        reply: oneshot::Sender<Result<u64, CallError>>,
        sink: Arc<EventQueue>,
    },
}

impl Pending {
    fn fail(self, error: CallError) {
        // A dropped receiver means the caller gave up; nothing to do.
        match self {
            Pending::Call(tx) => {
                let _ = tx.send(Err(error));
            }
            Pending::Subscribe { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

struct State {
    pending: HashMap<u64, Pending>,
    subs: HashMap<u64, Arc<EventQueue>>,
    /// Set once, when the connection ends; new calls fail with it.
    closed: Option<CallError>,
}

struct Shared {
    state: Mutex<State>,
    next_id: AtomicU64,
    permits: Semaphore,
    config: ClientConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding this lock; recover the data rather than propagate.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Insert a pending entry under a fresh id, unless the connection already ended.
    fn register(&self, pending: Pending) -> Result<u64, CallError> {
        let mut st = self.lock();
        if let Some(reason) = &st.closed {
            return Err(reason.clone());
        }
        let id = self.next_id();
        st.pending.insert(id, pending);
        Ok(id)
    }

    fn closed_reason(&self) -> CallError {
        self.lock()
            .closed
            .clone()
            .unwrap_or(CallError::Disconnected)
    }

    /// End the connection: answer every pending call with `reason`, end every event stream.
    fn close(&self, reason: CallError) {
        let (pending, subs) = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason.clone());
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.subs),
            )
        };
        for (_, p) in pending {
            p.fail(reason.clone());
        }
        for (_, q) in subs {
            q.close();
        }
    }

    fn encode(&self, frame: &Frame) -> Result<Bytes, CallError> {
        let mut buf = BytesMut::with_capacity(128);
        write_frame(&mut buf, frame, self.config.max_frame_len).map_err(CallError::from_codec)?;
        Ok(buf.freeze())
    }
}

/// Removes a pending entry when a call is abandoned (timeout or the caller's future dropped).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.lock().pending.remove(&self.id);
        }
    }
}

/// What the clients and event streams of one connection share; dropping the last one stops the
/// reader and lets the writer flush and half-close the socket.
struct Conn {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Bytes>,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Conn")
            .field("pending", &st.pending.len())
            .field("subscriptions", &st.subs.len())
            .field("closed", &st.closed)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// A connection to a daemonhost (or any peer speaking the protocol). Cheap to clone; all clones
/// share one socket and pipeline their calls on it.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Arc<Conn>,
}

impl Client {
    /// Connect with the default configuration.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with(path, ClientConfig::default()).await
    }

    /// Connect with a custom configuration.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let path = path.as_ref();
        match UnixStream::connect(path).await {
            Ok(stream) => Ok(Client::from_stream(stream, config)),
            Err(source) => {
                let path = path.to_path_buf();
                Err(match source.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                        ClientError::NotRunning { path, source }
                    }
                    _ => ClientError::Connect { path, source },
                })
            }
        }
    }

    /// Wrap an already connected stream (e.g. a socketpair to a worker). Must be called inside a
    /// tokio runtime: it spawns the reader and writer tasks.
    pub fn from_stream(stream: UnixStream, config: ClientConfig) -> Client {
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: HashMap::new(),
                subs: HashMap::new(),
                closed: None,
            }),
            next_id: AtomicU64::new(1),
            permits: Semaphore::new(config.max_in_flight.max(1)),
            config,
        });
        let (tx, rx) = mpsc::channel(shared.config.write_queue.max(1));
        tokio::spawn(write_loop(Arc::clone(&shared), rx, write));
        let frames = FramedRead::new(
            read,
            FrameCodec::with_max_frame_len(shared.config.max_frame_len),
        );
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), tx.downgrade(), frames));
        Client {
            conn: Arc::new(Conn { shared, tx, reader }),
        }
    }

    /// Call `command` with `params` (an object, or null for `{}`). With a timeout, `timeout_ms` is
    /// sent to the peer and the call gives up locally after the same duration (covering the wait
    /// for an in-flight slot and for the writer queue too).
    pub async fn call(
        &self,
        command: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, CallError> {
        let params = normalize_params(params)?;
        let timeout_ms = timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let fut = async {
            let shared = &*self.conn.shared;
            let _permit = shared
                .permits
                .acquire()
                .await
                .map_err(|_| CallError::Disconnected)?;
            let (tx, rx) = oneshot::channel();
            let id = shared.register(Pending::Call(tx))?;
            let mut guard = PendingGuard {
                shared,
                id,
                armed: true,
            };
            let frame = Frame::Request(Request {
                id,
                command: command.to_owned(),
                params,
                timeout_ms,
            });
            let bytes = shared.encode(&frame)?;
            if self.conn.tx.send(bytes).await.is_err() {
                return Err(shared.closed_reason());
            }
            let result = rx.await;
            // Answered (or failed by `close`), so the entry is gone already.
            guard.armed = false;
            result.unwrap_or_else(|_| Err(shared.closed_reason()))
        };
        match timeout {
            None => fut.await,
            Some(after) => tokio::time::timeout(after, fut)
                .await
                .unwrap_or(Err(CallError::Timeout { after })),
        }
    }

    /// Subscribe to events whose topic matches `pattern` (e.g. `data:*:created`). Every event of
    /// the subscription is delivered, in order, from the first one after the response.
    pub async fn subscribe(&self, pattern: &str) -> Result<EventStream, CallError> {
        let shared = &*self.conn.shared;
        let _permit = shared
            .permits
            .acquire()
            .await
            .map_err(|_| CallError::Disconnected)?;
        let sink = Arc::new(EventQueue::new(shared.config.event_buffer));
        let (reply, rx) = oneshot::channel();
        let id = shared.register(Pending::Subscribe {
            reply,
            sink: Arc::clone(&sink),
        })?;
        let mut guard = PendingGuard {
            shared,
            id,
            armed: true,
        };
        let mut params = Map::with_capacity(1);
        params.insert("pattern".to_owned(), Value::from(pattern));
        let frame = Frame::Request(Request {
            id,
            command: "events/subscribe".to_owned(),
            params: Value::Object(params),
            timeout_ms: None,
        });
        let bytes = shared.encode(&frame)?;
        if self.conn.tx.send(bytes).await.is_err() {
            return Err(shared.closed_reason());
        }
        let result = rx.await;
        guard.armed = false;
        let subscription = result.unwrap_or_else(|_| Err(shared.closed_reason()))?;
        Ok(EventStream {
            conn: Arc::clone(&self.conn),
            queue: sink,
            subscription,
        })
    }

    /// Send one frame body as is (length prefix added), e.g. malformed JSON in tests.
    pub async fn send_raw_body(&self, body: impl AsRef<[u8]>) -> Result<(), CallError> {
        let mut buf = BytesMut::new();
        write_body(
            &mut buf,
            body.as_ref(),
            self.conn.shared.config.max_frame_len,
        )
        .map_err(CallError::from_codec)?;
        self.send_raw_bytes(buf.freeze()).await
    }

    /// Send bytes verbatim, framing included (e.g. a broken length prefix in tests).
    pub async fn send_raw_bytes(&self, bytes: Bytes) -> Result<(), CallError> {
        self.conn
            .tx
            .send(bytes)
            .await
            .map_err(|_| self.conn.shared.closed_reason())
    }

    /// Calls currently awaiting a response.
    pub fn pending(&self) -> usize {
        self.conn.shared.lock().pending.len()
    }

    /// Subscriptions currently receiving events.
    pub fn subscriptions(&self) -> usize {
        self.conn.shared.lock().subs.len()
    }

    /// `true` once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.conn.shared.lock().closed.is_some()
    }
}

/// Events of one subscription, in order. Ends (`None`) when the connection ends. Dropping it
/// unsubscribes (best effort).
pub struct EventStream {
    conn: Arc<Conn>,
    queue: Arc<EventQueue>,
    subscription: u64,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("subscription", &self.subscription)
            .field("queue", &self.queue)
            .finish()
    }
}

impl EventStream {
    /// The id the host assigned.
    pub fn subscription(&self) -> u64 {
        self.subscription
    }

    /// The next event, or `None` once the connection has ended and the buffer is drained.
    pub async fn next_event(&mut self) -> Option<EventFrame> {
        poll_fn(|cx| self.queue.poll_next(cx)).await
    }
}

impl Stream for EventStream {
    type Item = EventFrame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EventFrame>> {
        self.queue.poll_next(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let shared = &self.conn.shared;
        let removed = shared.lock().subs.remove(&self.subscription).is_some();
        self.queue.close();
        if removed {
            send_unsubscribe(shared, &self.conn.tx, self.subscription);
        }
    }
}

/// Best effort: queue `events/unsubscribe` without waiting. Its response matches no pending entry
/// and is ignored.
fn send_unsubscribe(shared: &Shared, tx: &mpsc::Sender<Bytes>, subscription: u64) {
    let mut params = Map::with_capacity(1);
    params.insert("subscription".to_owned(), Value::from(subscription));
    let frame = Frame::Request(Request {
        id: shared.next_id(),
        command: "events/unsubscribe".to_owned(),
        params: Value::Object(params),
        timeout_ms: None,
    });
    let Ok(bytes) = shared.encode(&frame) else {
        return;
    };
    if let Err(mpsc::error::TrySendError::Full(bytes)) = tx.try_send(bytes)
        && let Ok(handle) = tokio::runtime::Handle::try_current()
    {
        let tx = tx.clone();
        handle.spawn(async move {
            let _ = tx.send(bytes).await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

const WRITE_BATCH: usize = 64 * 1024;

async fn write_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Bytes>, mut w: OwnedWriteHalf) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(first) = rx.recv().await {
        let result = if first.len() >= WRITE_BATCH {
            w.write_all(&first).await
        } else {
            buf.extend_from_slice(&first);
            while buf.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(more) => buf.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            let r = w.write_all(&buf).await;
            buf.clear();
            r
        };
        if let Err(e) = result {
            shared.close(CallError::from_io(e));
            return;
        }
    }
    // Every sender is gone: no client or stream is left. Half-close so the peer sees EOF.
    let _ = w.shutdown().await;
}

async fn read_loop(
    shared: Arc<Shared>,
    tx: mpsc::WeakSender<Bytes>,
    mut frames: FramedRead<OwnedReadHalf, FrameCodec>,
) {
    let reason = loop {
        match frames.next().await {
            None => break CallError::Disconnected,
            Some(Err(e)) => break CallError::from_codec(e),
            Some(Ok(Ok(frame))) => handle_frame(&shared, &tx, frame).await,
            Some(Ok(Err(bad))) => handle_bad_frame(&shared, &tx, bad).await,
        }
    };
    shared.close(reason);
}

async fn send_from_reader(shared: &Shared, tx: &mpsc::WeakSender<Bytes>, frame: &Frame) {
    let Some(tx) = tx.upgrade() else { return };
    if let Ok(bytes) = shared.encode(frame) {
        // Waiting here is backpressure on the peer, which is what the protocol asks for.
        let _ = tx.send(bytes).await;
    }
}

async fn handle_frame(shared: &Shared, tx: &mpsc::WeakSender<Bytes>, frame: Frame) {
    match frame {
        Frame::Response(Response {
            id: Some(id),
            outcome,
        }) => {
            let mut st = shared.lock();
            let Some(pending) = st.pending.remove(&id) else {
                // Abandoned call, unsubscribe answer, or a peer bug: nothing waits for it.
                return;
            };
            match pending {
                Pending::Call(reply) => {
                    drop(st);
                    let _ = reply.send(outcome.map_err(CallError::Remote));
                }
                Pending::Subscribe { reply, sink } => {
                    let result = match outcome {
                        Ok(v) => match v.get("subscription").and_then(Value::as_u64) {
                            Some(n) => {
                                // Registered before the next frame is read: no event is lost.
                                sink.set_subscription(n);
                                st.subs.insert(n, sink);
                                Ok(n)
                            }
                            None => Err(CallError::Protocol(format!(
                                "events/subscribe answered without a 'subscription' id: {v}"
                            ))),
                        },
                        Err(e) => Err(CallError::Remote(e)),
                    };
                    drop(st);
                    if let Err(Ok(n)) = reply.send(result) {
                        // The caller gave up meanwhile: undo the subscription.
                        if let Some(q) = shared.lock().subs.remove(&n) {
                            q.close();
                        }
                        if let Some(tx) = tx.upgrade() {
                            send_unsubscribe(shared, &tx, n);
                        }
                    }
                }
            }
        }
        // An error about something the peer could not attribute (e.g. a bad frame of ours).
        Frame::Response(Response { id: None, .. }) => {}
        Frame::Event(event) => {
            let sink = shared.lock().subs.get(&event.subscription).cloned();
            if let Some(sink) = sink {
                sink.push(event);
            }
        }
        Frame::Request(request) => {
            let response = Frame::Response(answer_peer_request(&request));
            send_from_reader(shared, tx, &response).await;
        }
    }
}

async fn handle_bad_frame(shared: &Shared, tx: &mpsc::WeakSender<Bytes>, bad: BadFrame) {
    match (bad.frame_type, bad.id) {
        // A malformed answer to one of our calls: fail that call rather than let it hang.
        (Some(FrameType::Response), Some(id)) => {
            let pending = shared.lock().pending.remove(&id);
            if let Some(p) = pending {
                p.fail(CallError::Protocol(bad.message));
            }
        }
        // Responses and events are never answered.
        (Some(FrameType::Response | FrameType::Event), _) => {}
        _ => send_from_reader(shared, tx, &Frame::Response(bad.to_response())).await,
    }
}
