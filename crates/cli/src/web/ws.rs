//! `/ws`: the socket protocol over a WebSocket. Each message (text, or binary holding the same
//! bytes) is one JSON body of docs/PROTOCOL.md; every answer and event goes out as one text
//! message. The per-connection logic is the socket's own ([`crate::server::serve`]): this file
//! only supplies a WebSocket's two ends.
//!
//! - **Before the upgrade** (the token and `Host` were checked by the router's guard): an
//!   `Origin` that is not the page's own is `403`; at `[web] max_connections` open WebSockets
//!   one more is `503` naming the limit (the open ones are not affected).
//! - **Message size** is the socket's frame limit (`[host] max_frame_bytes`), enforced by the
//!   WebSocket reader on each frame header and on the message: a message above it is answered
//!   `frame_too_large` (id null), as on the socket, and the connection is closed.
//! - **In flight**: at `[web] max_inflight` unanswered requests the connection stops reading
//!   (backpressure through TCP), as the socket does.
//! - **Output**: `WsOutbox` queues messages for this connection's writer task (above
//!   `OUTBOX_HIGH` bytes queued the loop pauses, as on the socket); the writer feeds them to
//!   the WebSocket and flushes once per batch.
//! - A WebSocket ping is answered by the WebSocket layer itself; a close from the peer ends the
//!   reading (answers still in flight cannot be sent after it).

use super::WebState;
use super::widget::ClientGuard;
use crate::server::{
    self, CLOSE_FLUSH_GRACE, Core, Incoming, Input, Limits, OUTBOX_HIGH, Outgoing,
};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::header::{HOST, ORIGIN, RETRY_AFTER, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use daemonhost_protocol::{ErrorCode, Response as Answer};
use daemonhost_system::HostCounters;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

/// WebSocket control messages (ping, pong) handled per poll before the loop looks at its other
/// work again.
const CONTROL_BATCH: usize = 64;

fn header(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `/ws` handler: checks the origin and the connection bound, then upgrades.
pub(crate) async fn upgrade(
    State(st): State<Arc<WebState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = header(&headers, ORIGIN);
    if !super::auth::same_origin(origin, header(&headers, HOST)) {
        tracing::debug!(?origin, "Refused a cross-origin WebSocket upgrade");
        return (
            StatusCode::FORBIDDEN,
            "a WebSocket upgrade must come from this host's own pages (Origin is another site)\n",
        )
            .into_response();
    }
    let core = Arc::clone(&st.core);
    let Ok(permit) = Arc::clone(&st.ws_permits).try_acquire_owned() else {
        HostCounters::incr(&core.counters.connections_refused);
        let max = st.max_connections;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, HeaderValue::from_static("1"))],
            format!(
                "the host serves at most {max} WebSocket connections at once ([web] max_connections = {max}) and all are in use; retry later\n"
            ),
        )
            .into_response();
    };
    HostCounters::incr(&core.counters.connections_accepted);
    let client = st.clients.add(
        remote.to_string(),
        header(&headers, USER_AGENT).unwrap_or(""),
        origin,
    );
    let max = core.cfg.max_frame_len;
    let max_in_flight = st.max_inflight;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let tracker = core.tracker.clone();
            tracker.track_future(session(socket, core, max_in_flight, permit, client))
        })
}

/// One WebSocket connection: its writer task, then the shared per-connection loop.
async fn session(
    socket: WebSocket,
    core: Arc<Core>,
    max_in_flight: usize,
    _permit: OwnedSemaphorePermit,
    client: ClientGuard,
) {
    let (sink, stream) = socket.split();
    let outbox = Arc::new(WsOutbox::default());
    core.tracker
        .spawn(write_loop(sink, Arc::clone(&outbox), core.close.clone()));
    let input = WsInput {
        stream,
        counters: &core.counters,
    };
    let limits = Limits {
        max_in_flight,
        requests: Some(&client.requests),
    };
    server::serve(&core, input, &*outbox, limits).await;
}

/// A WebSocket's reading end.
struct WsInput<'a> {
    stream: SplitStream<WebSocket>,
    counters: &'a HostCounters,
}

/// The size and limit of a message the WebSocket layer refused as too long, if that is what
/// `e` is.
fn too_long(e: &axum::Error) -> Option<(usize, usize)> {
    use std::error::Error as _;
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong { size, max_size },
        )) = c.downcast_ref::<tungstenite::Error>()
        {
            return Some((*size, *max_size));
        }
        cause = c.source();
    }
    None
}

impl Incoming for WsInput<'_> {
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Input> {
        for _ in 0..CONTROL_BATCH {
            let msg = match self.stream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(m) => m,
            };
            return Poll::Ready(match msg {
                None | Some(Ok(Message::Close(_))) => Input::End,
                Some(Ok(Message::Text(t))) => Input::Body(Bytes::from(t)),
                Some(Ok(Message::Binary(b))) => Input::Body(b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Err(e)) => match too_long(&e) {
                    Some((declared, max)) => {
                        HostCounters::incr(&self.counters.frames_too_large);
                        tracing::debug!(declared, max, "Closing a WebSocket: message too large");
                        Input::Fatal(Answer::err(
                            None,
                            ErrorCode::FrameTooLarge,
                            format!(
                                "frame of {declared} bytes exceeds the maximum of {max} bytes; closing the connection"
                            ),
                        ))
                    }
                    None => {
                        tracing::debug!(error = %e, "WebSocket read ended");
                        Input::End
                    }
                },
            });
        }
        Poll::Ready(Input::Progress)
    }
}

/// A WebSocket's output: messages queued for its writer task.
#[derive(Default)]
struct WsOutbox {
    state: Mutex<WsOut>,
    /// Messages were queued (or the loop finished).
    more: Notify,
    /// The queue went to `OUTBOX_HIGH` bytes or below (or the connection died).
    space: Notify,
}

#[derive(Default)]
struct WsOut {
    /// Bounded by `OUTBOX_HIGH` bytes plus the answers to the requests in flight: above it the
    /// loop takes no more work until the writer has drained it.
    queue: VecDeque<Message>,
    /// Bytes queued or being written.
    bytes: usize,
    finished: bool,
    dead: bool,
}

impl Outgoing for WsOutbox {
    fn backlog(&self) -> usize {
        self.state.lock().bytes
    }

    fn space(&self) -> Notified<'_> {
        self.space.notified()
    }

    fn send(&self, out: &mut BytesMut) -> bool {
        let mut st = self.state.lock();
        if st.dead {
            out.clear();
            return false;
        }
        for body in server::bodies(out) {
            let len = body.len();
            match Utf8Bytes::try_from(body) {
                Ok(text) => {
                    st.bytes += len;
                    st.queue.push_back(Message::Text(text));
                }
                // The encoder writes JSON, which is UTF-8: not reached.
                Err(e) => tracing::warn!(error = %e, "Dropped an answer that is not UTF-8"),
            }
        }
        drop(st);
        self.more.notify_one();
        true
    }

    fn finish(&self) {
        self.state.lock().finished = true;
        self.more.notify_one();
    }
}

impl WsOutbox {
    fn die(&self) {
        let mut st = self.state.lock();
        st.dead = true;
        st.queue.clear();
        st.bytes = 0;
        drop(st);
        self.space.notify_one();
    }
}

/// One WebSocket's writer: sends what is queued, one flush per batch; once the loop finished and
/// the queue is empty, closes the WebSocket (a close frame).
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: Arc<WsOutbox>,
    close: CancellationToken,
) {
    let run = async {
        loop {
            let batch = {
                let mut st = outbox.state.lock();
                if st.dead {
                    return;
                }
                if st.queue.is_empty() && st.finished {
                    break;
                }
                std::mem::take(&mut st.queue)
            };
            if batch.is_empty() {
                outbox.more.notified().await;
                continue;
            }
            let mut sent = 0;
            for msg in batch {
                if let Message::Text(t) = &msg {
                    sent += t.len();
                }
                if let Err(e) = sink.feed(msg).await {
                    tracing::debug!(error = %e, "WebSocket write failed");
                    outbox.die();
                    return;
                }
            }
            if let Err(e) = sink.flush().await {
                tracing::debug!(error = %e, "WebSocket write failed");
                outbox.die();
                return;
            }
            let mut st = outbox.state.lock();
            let was_high = st.bytes > OUTBOX_HIGH;
            st.bytes = st.bytes.saturating_sub(sent);
            if was_high && st.bytes <= OUTBOX_HIGH {
                outbox.space.notify_one();
            }
        }
        if let Err(e) = sink.close().await {
            tracing::debug!(error = %e, "WebSocket close failed");
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
