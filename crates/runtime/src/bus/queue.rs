//! One subscriber's bounded queue with its lag counter.
//!
//! The queue, the count of missed events and the closed flag sit under one small mutex, so "was this
//! event queued or counted as missed" and "report the missed count" can never race: every event
//! published to a subscriber is either received or included in exactly one `Lagged { missed }`.

use std::collections::VecDeque;
use std::fmt;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::{Delivery, Event};

/// What happened to one event offered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued.
    Queued,
    /// Lost to a full queue (counted in the subscriber's lag).
    Missed,
    /// The subscription is closed; nothing was counted.
    Closed,
}

#[derive(Debug)]
struct State {
    /// Events and lag markers, at most `capacity` of them. Grows on demand: an idle subscriber costs no
    /// queue memory.
    items: VecDeque<Delivery>,
    /// Events lost since the last lag marker was queued or handed out.
    missed: u64,
    closed: bool,
    waker: Option<Waker>,
}

/// The part of a subscription shared between the index (publishers) and the handle (receiver).
pub(crate) struct SubShared {
    id: u64,
    capacity: usize,
    state: Mutex<State>,
}

impl fmt::Debug for SubShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubShared")
            .field("id", &self.id)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl SubShared {
    /// `capacity` is clamped to at least 1.
    pub(crate) fn new(id: u64, capacity: usize) -> Self {
        Self {
            id,
            capacity: capacity.max(1),
            state: Mutex::new(State {
                items: VecDeque::new(),
                missed: 0,
                closed: false,
                waker: None,
            }),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Offers one event. A pending lag is queued first (as a marker, in order); if there is no room for
    /// the marker the event joins the lag instead.
    pub(crate) fn offer(&self, event: &Event) -> Offer {
        let waker;
        let outcome;
        {
            let mut st = self.state.lock();
            if st.closed {
                return Offer::Closed;
            }
            if st.missed > 0 {
                if st.items.len() < self.capacity {
                    let missed = std::mem::take(&mut st.missed);
                    st.items.push_back(Delivery::Lagged { missed });
                } else {
                    st.missed += 1;
                    return Offer::Missed;
                }
            }
            if st.items.len() < self.capacity {
                st.items.push_back(Delivery::Event(event.clone()));
                outcome = Offer::Queued;
            } else {
                st.missed += 1;
                outcome = Offer::Missed;
            }
            waker = st.waker.take();
        }
        // Wake outside the subscriber's mutex.
        if let Some(w) = waker {
            w.wake();
        }
        outcome
    }

    /// Marks the subscription closed: the receiver drains what is queued, then sees end-of-stream.
    pub(crate) fn close(&self) {
        let waker = {
            let mut st = self.state.lock();
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Takes the next delivery without waiting. `Ok(None)` = empty but open; `Err(())` = closed and drained.
    pub(crate) fn try_take(&self) -> Result<Option<Delivery>, ()> {
        let mut st = self.state.lock();
        Self::take_locked(&mut st)
    }

    fn take_locked(st: &mut State) -> Result<Option<Delivery>, ()> {
        if let Some(d) = st.items.pop_front() {
            if st.items.is_empty() && st.items.capacity() > 64 {
                // A burst is over: do not keep its memory around.
                st.items = VecDeque::new();
            }
            return Ok(Some(d));
        }
        if st.missed > 0 {
            // Nothing queued but events were lost: report them now rather than when the next one arrives.
            return Ok(Some(Delivery::Lagged {
                missed: std::mem::take(&mut st.missed),
            }));
        }
        if st.closed { Err(()) } else { Ok(None) }
    }

    /// Poll for the next delivery; `Ready(None)` once closed and drained.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let mut st = self.state.lock();
        match Self::take_locked(&mut st) {
            Ok(Some(d)) => Poll::Ready(Some(d)),
            Err(()) => Poll::Ready(None),
            Ok(None) => {
                match &mut st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}
