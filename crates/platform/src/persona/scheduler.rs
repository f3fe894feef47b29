//! The persona scheduler: one task that ticks each persona exactly when it is due.

use crate::persona::personas::{Personas, now_ms_u64};
use daemonhost_runtime::Context;
use std::sync::Arc;
use std::time::Duration;

/// The scheduler: one task ticking every persona when it is due. Replies run as tasks of the
/// daemon's context ([`Context::task_set`]): tracked, timed toward this daemon's longest poll,
/// cancelled at its stop, and a panicking reply is counted in its `panics` and logged, without
/// taking the scheduler down.
pub(super) async fn schedule(ctx: Context, p: Arc<Personas>) {
    let mut inflight = ctx.task_set::<()>();
    loop {
        let now = now_ms_u64();
        let (replies, next) = p.tick_due(now);
        for (pid, name, item) in replies {
            // Bounded: at most `max_concurrent_replies` generations at once; the rest wait here,
            // which also delays further ticks (back-pressure instead of a growing queue).
            let Ok(permit) = p.replies.acquire().await else {
                return;
            };
            let (ctx2, p2) = (ctx.clone(), p.clone());
            inflight.spawn(async move {
                p2.reply(&ctx2, &pid, &name, item).await;
                drop(permit);
            });
        }
        while let Some(done) = inflight.try_join_next() {
            note_reply(&p, done);
        }
        let wait = next
            .map(|n| Duration::from_millis(n.saturating_sub(now_ms_u64()).max(1)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            () = ctx.cancelled() => break,
            () = p.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            Some(done) = inflight.join_next(), if !inflight.is_empty() => note_reply(&p, done),
        }
    }
    inflight.abort_all();
}

/// A finished reply task: a panic (already counted and logged by the runtime) is a failed reply.
fn note_reply(p: &Personas, done: Result<(), daemonhost_runtime::TaskError>) {
    if done.is_err() {
        *p.reply_failures.lock() += 1;
    }
}
