//! The in-process event bus: topics such as `data:chat_messages:created`, pattern subscriptions,
//! bounded per-subscriber queues.
//!
//! # Why it looks like this
//!
//! The system this replaces broadcast every event to every listener and let each one filter, and kept its
//! subscriptions in unbounded maps that were cleaned up only if someone remembered to call the unsubscribe
//! closure. With many daemons and personas in one process that is a publish storm and a leak. So:
//!
//! - **Filtering happens at publish time, through an index.** Subscriptions live in a trie keyed by pattern
//!   segments (see [`index`](self::index)). A publish walks the trie along the topic, so its cost is the
//!   topic depth plus the number of matching subscribers; subscribers that do not match are never looked at.
//! - **A subscription is an RAII handle.** Dropping a [`Subscription`] removes it from the index right away,
//!   in `Drop`, under the write lock — not lazily at the next publish — and empty trie nodes are pruned, so
//!   memory returns to its baseline. The number of subscriptions is capped by
//!   [`BusConfig::max_subscriptions`].
//! - **Queues are bounded and losses are reported.** Each subscriber has its own queue
//!   ([`BusConfig::default_capacity`]). A publisher never waits for a slow subscriber: when the queue is
//!   full the event is counted as missed, and the subscriber receives [`Delivery::Lagged`] with the exact
//!   count before its next event (or as soon as its queue is empty). For every subscriber, events received
//!   plus the sum of `missed` equals events published to it.
//! - **Events are shared, not copied.** An [`Event`] is an `Arc`; every matching subscriber gets the same one.
//!
//! # Syntax
//!
//! Topics are `:`-separated non-empty segments without `*`, `{`, `}` or `,`. Pattern segments are
//! literals, `*` (exactly one segment), or a brace group `{created,updated}` spanning the whole segment;
//! a `*` in last position matches one or more remaining segments (`data:*` matches `data:users` and
//! `data:users:created`, not `data`). See [`Pattern`].

mod index;
mod pattern;
mod queue;
#[cfg(test)]
mod tests;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use parking_lot::RwLock;
use serde::Serialize;
use serde::ser::SerializeStruct;

pub use pattern::{
    MAX_EXPANSIONS, MAX_SEGMENTS, MAX_TOPIC_LEN, Pattern, PatternError, SyntaxReason, TopicError,
    validate_topic,
};

use index::Index;
use queue::{Offer, SubShared};

/// Per-subscriber queue length used by [`EventBus::subscribe`].
pub const DEFAULT_CAPACITY: usize = 256;
/// Default cap on live subscriptions.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100_000;

/// Bus settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusConfig {
    /// Queue length of each subscription made with [`EventBus::subscribe`] (at least 1 is used).
    pub default_capacity: usize,
    /// Live subscriptions allowed; one more gets [`BusError::TooManySubscriptions`].
    pub max_subscriptions: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            default_capacity: DEFAULT_CAPACITY,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
        }
    }
}

/// Errors from the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The topic is malformed.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The pattern is malformed.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// [`BusConfig::max_subscriptions`] reached.
    #[error("too many subscriptions: the limit is {limit}")]
    TooManySubscriptions {
        /// The configured limit.
        limit: usize,
    },
    /// The bus was closed.
    #[error("the event bus is closed")]
    Closed,
}

#[derive(Debug)]
struct EventInner {
    topic: String,
    data: serde_json::Value,
}

/// A published event. Cloning is an `Arc` increment; all subscribers share one allocation.
#[derive(Debug, Clone)]
pub struct Event(Arc<EventInner>);

impl Event {
    /// Builds an event after validating the topic.
    pub fn new(topic: impl Into<String>, data: serde_json::Value) -> Result<Self, TopicError> {
        let topic = topic.into();
        validate_topic(&topic)?;
        Ok(Self(Arc::new(EventInner { topic, data })))
    }

    /// The topic, e.g. `data:chat_messages:created`.
    pub fn topic(&self) -> &str {
        &self.0.topic
    }

    /// The payload.
    pub fn data(&self) -> &serde_json::Value {
        &self.0.data
    }

    /// Whether both handles point at the same event (no copy was made).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Event", 2)?;
        s.serialize_field("topic", self.topic())?;
        s.serialize_field("data", self.data())?;
        s.end()
    }
}

/// What a subscription receives.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A matching event.
    Event(Event),
    /// This many events were lost because the queue was full. Comes in order: before the events
    /// published after the loss.
    Lagged {
        /// Number of lost events.
        missed: u64,
    },
}

/// Error from [`Subscription::try_recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing queued right now.
    #[error("no event queued")]
    Empty,
    /// The bus is closed and everything queued has been received.
    #[error("the event bus is closed")]
    Closed,
}

/// Counters, readable at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BusStats {
    /// Live subscriptions.
    pub subscriptions: usize,
    /// Events published while the bus was open.
    pub published: u64,
    /// Events queued to subscribers (one event to three subscribers counts three).
    pub delivered: u64,
    /// Events lost to full subscriber queues.
    pub lagged: u64,
}

struct BusInner {
    config: BusConfig,
    index: RwLock<Index>,
    closed: AtomicBool,
    next_id: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    lagged: AtomicU64,
}

impl fmt::Debug for BusInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusInner")
            .field("config", &self.config)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl BusInner {
    fn close(&self) {
        let subs = {
            let mut index = self.index.write();
            self.closed.store(true, Ordering::Release);
            index.take_all()
        };
        for sub in subs {
            sub.close();
        }
    }
}

/// Closes the bus when the last [`EventBus`] clone goes away, so subscribers see end-of-stream instead of
/// waiting forever on a bus nobody can publish to. Subscriptions hold [`BusInner`] directly, not this.
#[derive(Debug)]
struct BusHandle(Arc<BusInner>);

impl Drop for BusHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The event bus. Cheap to clone; all clones are one bus. Dropping the last clone closes it.
#[derive(Debug, Clone)]
pub struct EventBus {
    handle: Arc<BusHandle>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(BusConfig::default())
    }
}

impl EventBus {
    /// A new, open bus.
    pub fn new(config: BusConfig) -> Self {
        let inner = BusInner {
            config,
            index: RwLock::new(Index::default()),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
        };
        Self {
            handle: Arc::new(BusHandle(Arc::new(inner))),
        }
    }

    fn inner(&self) -> &Arc<BusInner> {
        &self.handle.0
    }

    /// The configuration the bus was built with.
    pub fn config(&self) -> BusConfig {
        self.inner().config
    }

    /// Subscribes with [`BusConfig::default_capacity`].
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        self.subscribe_with_capacity(pattern, self.inner().config.default_capacity)
    }

    /// Subscribes with a queue of `capacity` entries (at least 1).
    pub fn subscribe_with_capacity(
        &self,
        pattern: &str,
        capacity: usize,
    ) -> Result<Subscription, BusError> {
        let pattern = Pattern::parse(pattern)?;
        let inner = self.inner();
        let shared = {
            let mut index = inner.index.write();
            if inner.closed.load(Ordering::Acquire) {
                return Err(BusError::Closed);
            }
            let limit = inner.config.max_subscriptions;
            if index.subscriptions() >= limit {
                return Err(BusError::TooManySubscriptions { limit });
            }
            let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::new(SubShared::new(id, capacity));
            index.insert(&pattern, &shared);
            shared
        };
        Ok(Subscription {
            bus: Arc::clone(inner),
            shared,
            pattern,
        })
    }

    /// Validates `topic` and publishes `data` under it. Returns how many subscribers queued it (subscribers
    /// whose queue was full are not counted: they get a lag marker instead). After [`close`](Self::close)
    /// this delivers nothing and returns `Ok(0)`.
    pub fn publish(&self, topic: &str, data: serde_json::Value) -> Result<usize, BusError> {
        self.publish_with(topic, move || data)
    }

    /// [`EventBus::publish`] with the data built by `data` only when a subscriber matches:
    /// publishing to nobody builds nothing (the runtime's own lifecycle events use this, so a
    /// host nobody watches pays no JSON per transition).
    pub fn publish_with(
        &self,
        topic: &str,
        data: impl FnOnce() -> serde_json::Value,
    ) -> Result<usize, BusError> {
        validate_topic(topic)?;
        let mut data = Some(data);
        // `dispatch` calls this at most once, and only when a subscriber matches: publishing to
        // nobody allocates nothing.
        Ok(self.dispatch(topic, || {
            Event(Arc::new(EventInner {
                topic: topic.to_owned(),
                data: data.take().map(|f| f()).unwrap_or_default(),
            }))
        }))
    }

    /// Publishes a pre-built (already validated) event. Returns how many subscribers queued it.
    pub fn publish_event(&self, event: Event) -> usize {
        let topic = event.0.topic.as_str();
        self.dispatch(topic, || event.clone())
    }

    fn dispatch(&self, topic: &str, mut event: impl FnMut() -> Event) -> usize {
        let inner = self.inner();
        let index = inner.index.read();
        if inner.closed.load(Ordering::Acquire) {
            return 0;
        }
        let mut delivered = 0usize;
        let mut missed = 0u64;
        let mut shared_event: Option<Event> = None;
        index.for_each_match(topic, |sub| {
            let ev = shared_event.get_or_insert_with(&mut event);
            match sub.offer(ev) {
                Offer::Queued => delivered += 1,
                Offer::Missed => missed += 1,
                Offer::Closed => {}
            }
        });
        drop(index);
        inner.published.fetch_add(1, Ordering::Relaxed);
        if delivered > 0 {
            inner
                .delivered
                .fetch_add(delivered as u64, Ordering::Relaxed);
        }
        if missed > 0 {
            inner.lagged.fetch_add(missed, Ordering::Relaxed);
        }
        delivered
    }

    /// Live subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.inner().index.read().subscriptions()
    }

    /// Counters.
    pub fn stats(&self) -> BusStats {
        let inner = self.inner();
        BusStats {
            subscriptions: self.subscription_count(),
            published: inner.published.load(Ordering::Relaxed),
            delivered: inner.delivered.load(Ordering::Relaxed),
            lagged: inner.lagged.load(Ordering::Relaxed),
        }
    }

    /// Closes the bus: every subscription receives what is already queued (and any pending lag marker),
    /// then end-of-stream. Later publishes deliver nothing; later subscribes fail with [`BusError::Closed`].
    pub fn close(&self) {
        self.inner().close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner().closed.load(Ordering::Acquire)
    }

    /// Nodes in the subscription index, root included (so 1 when there are no subscriptions).
    /// Diagnostic: shows that dropped subscriptions leave nothing behind.
    pub fn index_node_count(&self) -> usize {
        self.inner().index.read().nodes()
    }

    #[cfg(test)]
    fn index_node_count_slow(&self) -> usize {
        self.inner().index.read().count_nodes_slow()
    }
}

/// A live subscription. Dropping it unsubscribes immediately.
///
/// Receive with [`recv`](Self::recv), [`try_recv`](Self::try_recv), or as a `Stream`.
pub struct Subscription {
    bus: Arc<BusInner>,
    shared: Arc<SubShared>,
    pattern: Pattern,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.shared.id())
            .field("pattern", &self.pattern.as_str())
            .finish()
    }
}

impl Subscription {
    /// Unique per bus, increasing in subscription order.
    pub fn id(&self) -> u64 {
        self.shared.id()
    }

    /// The pattern as given to `subscribe`.
    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }

    /// The next event or lag marker; `None` once the bus is closed and everything queued was received.
    pub async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.shared.poll_take(cx)).await
    }

    /// The next event or lag marker without waiting.
    pub fn try_recv(&mut self) -> Result<Delivery, TryRecvError> {
        match self.shared.try_take() {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(TryRecvError::Empty),
            Err(()) => Err(TryRecvError::Closed),
        }
    }

    /// Poll form of [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.shared.poll_take(cx)
    }
}

impl futures_util::Stream for Subscription {
    type Item = Delivery;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.shared.poll_take(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Eager: the index forgets this subscriber before `drop` returns.
        self.bus
            .index
            .write()
            .remove(&self.pattern, self.shared.id());
        self.shared.close();
    }
}
