//! The `Daemon` trait: what a daemon is. (The [`Context`] the runtime hands to its code is in
//! `context.rs`.)
//!
//! A daemon's fields are its configuration; its state is built in [`Daemon::start`] and owned by
//! the runtime, which lends it to `handle`, `on_event` and `start_deferred`. Handlers borrow the
//! state instead of locking it: all of a daemon's futures run on its own task (up to
//! `spec.concurrency` at once), which is also what lets the runtime time every poll of that
//! daemon's code. Work that would block goes to [`Context::spawn_cpu`] (the CPU pool) or a
//! dedicated thread, never inline.

use crate::bus::Delivery;
use crate::context::Context;
use crate::error::{BoxError, DaemonError};
use crate::mailbox::Request;
use crate::spec::DaemonSpec;
use serde_json::Value;
use std::future::Future;

/// A long-lived service hosted by the runtime.
///
/// Implement the methods with `async fn`; the returned futures must be `Send`.
pub trait Daemon: Send + Sync + Sized + 'static {
    /// What changes while the daemon runs (connections, caches, counters). Shared by
    /// concurrent handlers, so it uses interior mutability where it changes.
    type State: Send + Sync + 'static;

    /// The static description: name, dependencies, commands, limits.
    fn spec(&self) -> DaemonSpec;

    /// Core init: only what is needed to answer requests. Requests arriving meanwhile wait in
    /// the startup queue. An error (or panic, or exceeding `start_timeout`) fails the daemon,
    /// subject to its restart policy.
    fn start(&self, ctx: &Context) -> impl Future<Output = Result<Self::State, BoxError>> + Send;

    /// Heavy init after READY, concurrently with serving. A failure is reported and the daemon
    /// stays READY.
    fn start_deferred(
        &self,
        ctx: &Context,
        state: &Self::State,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (ctx, state);
        async { Ok(()) }
    }

    /// Answer one request. The future is dropped at the request's deadline. The request is
    /// counted once in the daemon's work counts: `inline`, unless the handler reports another
    /// place with [`Context::served_at`] (e.g. `Worker` when a worker process answered it).
    fn handle(
        &self,
        ctx: &Context,
        state: &Self::State,
        request: Request,
    ) -> impl Future<Output = Result<Value, DaemonError>> + Send;

    /// React to an event matching one of `spec.events` (or a lag marker).
    fn on_event(
        &self,
        ctx: &Context,
        state: &Self::State,
        event: Delivery,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, state, event);
        async {}
    }

    /// Release what `start` built. Runs after the queue is drained; timers, subscriptions and
    /// tasks spawned through the context are cleaned up by the runtime afterwards regardless.
    fn stop(&self, ctx: &Context, state: Self::State) -> impl Future<Output = ()> + Send {
        let _ = (ctx, state);
        async {}
    }
}
