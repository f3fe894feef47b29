//! One connection's protocol logic, whatever carries its bytes: the one server core behind
//! both transports (the Unix socket, `server.rs`, and the WebSocket, `web/ws.rs`; ADR 0008).
//!
//! [`serve`] is the whole per-connection loop: decode a body, answer what the host answers
//! itself (bad frames, `events/subscribe`, `events/unsubscribe`, `shutting_down`), route the
//! rest with [`Router::ask_owned`] (which checks declared params first), keep at most
//! `max_in_flight` requests in flight (then stop reading: backpressure), forward the
//! connection's subscriptions, and encode every answer and event into one buffer in the order
//! it handles them. That order is what makes "the `events/subscribe` response goes out before
//! any event of that subscription" true by construction (the subscription is only polled after
//! its response is encoded).
//!
//! A transport supplies the two ends:
//!
//! - [`Incoming`]: the next body (one length-prefixed frame of the socket, one WebSocket
//!   message), the end of the peer's stream, or a broken framing to answer once and close on
//!   (`frame_too_large`, the socket's frame `timeout`);
//! - [`Outgoing`]: takes the encoded output, says how much the peer has not taken yet (above
//!   [`OUTBOX_HIGH`] the loop reads no requests and takes no events), and closes after a flush.
//!
//! Output is always encoded as the socket's frames (4-byte length, then the JSON body, by
//! [`write_frame`]): the socket writes those bytes as they are, the WebSocket sends each body
//! as one text message. So every answer is produced once, by this code, for both.

use bytes::{Bytes, BytesMut};
use daemonhost_protocol::params::Params;
use daemonhost_protocol::{
    ErrorBody, ErrorCode, EventFrame, Frame, FrameType, Response, write_frame,
};
use daemonhost_runtime::{BusError, DaemonError, Delivery, Subscription};
use daemonhost_system::HostCounters;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::{Map, Value};
use std::future::poll_fn;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::futures::Notified;

use super::Core;

/// Bytes of an error message kept when the answer it is in is too large to send (an error that
/// echoes a param of nearly the frame's size: `events/subscribe` quotes its pattern).
pub(crate) const MAX_CUT_MESSAGE: usize = 1024;

/// The first `max` bytes of `s`, or a little less: cut on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut at = max.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    &s[..at]
}

/// Bytes waiting in a connection's output above which the loop pauses (backpressure): it reads
/// no requests and takes no events until the transport has drained below it. The output is
/// thus bounded by this plus the answers to requests already in flight (at most
/// `max_in_flight`).
pub(crate) const OUTBOX_HIGH: usize = 4 << 20;
/// Events encoded per wake-up before the loop looks at its other work again.
const EVENT_BATCH: usize = 64;

/// What the transport read.
pub(crate) enum Input {
    /// One body (not yet decoded).
    Body(Bytes),
    /// Nothing to handle (the transport made progress of its own, e.g. answered a WebSocket
    /// ping); poll again.
    Progress,
    /// The peer's stream ended (closed, shut down its write side, or a read failed): stop
    /// reading, answer every request in flight, then close.
    End,
    /// The framing is broken: send this answer (id null), then close; requests in flight are
    /// abandoned, since the peer's framing can no longer be trusted.
    Fatal(Response),
}

/// The reading end of a transport.
pub(crate) trait Incoming {
    /// The next input. Only polled while the loop reads.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Input>;
    /// The loop does not read now (backpressure, the in-flight limit): a clock that measures
    /// the peer (the socket's frame timeout) must not run meanwhile.
    fn pause(&mut self) {}
}

/// The writing end of a transport. Shared (`&self`) between the loop and the transport's own
/// writer task, so it uses interior mutability.
pub(crate) trait Outgoing {
    /// Bytes handed over and not yet taken by the peer.
    fn backlog(&self) -> usize;
    /// Resolves once the backlog dropped to [`OUTBOX_HIGH`] or below, or the transport died.
    fn space(&self) -> Notified<'_>;
    /// Hand over `out` (length-prefixed frames; emptied). `false` once the peer is gone.
    fn send(&self, out: &mut BytesMut) -> bool;
    /// Nothing more will be sent: flush what is queued, then close.
    fn finish(&self);
}

/// Per-connection bounds and counters the transport chooses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits<'a> {
    /// Requests in flight before the loop stops reading.
    pub max_in_flight: usize,
    /// Counts this connection's request frames, if the transport reports them (the WebSocket
    /// transport does, for `widget/clients`).
    pub requests: Option<&'a AtomicU64>,
}

/// The outcome of one routed request.
type Answer = (u64, Result<Value, DaemonError>);

/// Serve one connection until its peer is done and answered, its framing breaks, its output
/// fails, or the server closes. See the module docs.
pub(crate) async fn serve(
    core: &Core,
    mut input: impl Incoming,
    out: &impl Outgoing,
    limits: Limits<'_>,
) {
    let counters = &*core.counters;
    HostCounters::incr(&counters.connections_open);
    // Held while this connection may still have requests in flight during a shutdown.
    let mut drain = core.drain_sender();
    let router = &core.router;
    let mut conn = Conn {
        core,
        out: BytesMut::with_capacity(16 * 1024),
        subs: Subs::default(),
        next_sub: 1,
        draining: false,
        requests: limits.requests,
    };
    let mut inflight = FuturesUnordered::new();
    let mut reading = true;
    let close = core.close.cancelled();
    let shutdown = core.shutdown.cancelled();
    tokio::pin!(close, shutdown);

    loop {
        if conn.draining && inflight.is_empty() {
            drain.take();
        }
        if !reading && inflight.is_empty() {
            break; // the peer finished sending and everything is answered
        }
        let mut close_after_flush = false;
        let backlogged = out.backlog() > OUTBOX_HIGH;
        let read_now = !backlogged && reading && inflight.len() < limits.max_in_flight;
        if !read_now {
            input.pause();
        }
        tokio::select! {
            biased;
            () = &mut close => break,
            () = &mut shutdown, if !conn.draining => conn.draining = true,
            () = out.space(), if backlogged => {}
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
            got = poll_fn(|cx| input.poll_input(cx)), if read_now => match got {
                Input::Progress => {}
                Input::End => reading = false,
                Input::Body(body) => {
                    if let Some((id, command, params, timeout)) = conn.on_body(&body) {
                        inflight.push(async move {
                            let answer: Answer = (id, router.ask_owned(command, params, timeout).await);
                            answer
                        });
                    }
                }
                Input::Fatal(answer) => {
                    conn.push(&Frame::Response(answer));
                    close_after_flush = true;
                }
            },
        }
        if !conn.out.is_empty() && !out.send(&mut conn.out) {
            break; // the transport failed: the peer went away
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
    out.finish();
}

/// Per-connection state the loop mutates.
struct Conn<'a> {
    core: &'a Core,
    out: BytesMut,
    subs: Subs,
    next_sub: u64,
    draining: bool,
    requests: Option<&'a AtomicU64>,
}

impl Conn<'_> {
    /// Handle one body. Returns a request to route; everything else is answered here.
    fn on_body(&mut self, body: &[u8]) -> Option<(u64, String, Value, Option<Duration>)> {
        let counters = &*self.core.counters;
        match Frame::decode(body) {
            Ok(Frame::Request(req)) => {
                HostCounters::incr(&counters.requests);
                if let Some(n) = self.requests {
                    HostCounters::incr(n);
                }
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
        self.core.router.check_params("events/subscribe", &params)?;
        let params = Params::new(params)?;
        let pattern = params.str("pattern")?;
        let max = self.core.cfg.max_subscriptions;
        if self.subs.list.len() >= max {
            return Err(DaemonError::overloaded(format!(
                "this connection already has {max} subscriptions (the limit); unsubscribe first"
            )));
        }
        let sub = self
            .core
            .bus
            .subscribe_with_capacity(pattern, self.core.cfg.event_buffer)
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
        self.core
            .router
            .check_params("events/unsubscribe", &params)?;
        let sid = Params::new(params)?.u64("subscription")?;
        match self.subs.list.iter().position(|(id, _)| *id == sid) {
            Some(i) => {
                // Dropping the handle unsubscribes from the bus at once.
                self.subs.list.swap_remove(i);
                HostCounters::decr(&self.core.counters.subscriptions_open);
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
        let Err(e) = write_frame(&mut self.out, &frame, self.core.cfg.max_frame_len) else {
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
        if let Err(e) = write_frame(&mut self.out, frame, self.core.cfg.max_frame_len) {
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
        HostCounters::incr(&self.core.counters.events_forwarded);
        if let Err(e) = write_frame(
            &mut self.out,
            &Frame::Event(frame),
            self.core.cfg.max_frame_len,
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

/// The bodies of the length-prefixed frames in `out` (which [`serve`] encoded, so they are
/// whole), split off without copying; `out` is left empty. For a transport that sends each
/// body as a message of its own.
pub(crate) fn bodies(out: &mut BytesMut) -> impl Iterator<Item = Bytes> {
    use bytes::Buf;
    let mut all = out.split().freeze();
    std::iter::from_fn(move || {
        let h = all.get(..daemonhost_protocol::HEADER_LEN)?;
        let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        all.advance(daemonhost_protocol::HEADER_LEN);
        Some(all.split_to(n.min(all.len())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemonhost_protocol::Request;

    #[test]
    fn bodies_splits_encoded_frames_back_into_their_json_bodies() {
        let mut out = BytesMut::new();
        let frames = [
            Frame::Request(Request::new(1, "ping", Value::Null)),
            Frame::Response(Response::err(None, ErrorCode::BadRequest, "x")),
            Frame::Response(Response::ok(7, serde_json::json!({"a": [1, 2]}))),
        ];
        for f in &frames {
            write_frame(&mut out, f, usize::MAX).expect("encode");
        }
        let got: Vec<Bytes> = bodies(&mut out).collect();
        assert!(out.is_empty());
        assert_eq!(got.len(), frames.len());
        for (body, frame) in got.iter().zip(&frames) {
            assert_eq!(&body[..], &frame.to_vec()[..]);
        }
        assert_eq!(bodies(&mut BytesMut::new()).count(), 0);
    }
}
