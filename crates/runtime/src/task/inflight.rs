//! The work a daemon's task has in flight: one inline slot, then a `FuturesUnordered`.
//!
//! Most handlers answer on their first poll. Such work is polled the moment it is admitted, in
//! the inline slot, and never reaches the `FuturesUnordered`, whose every push allocates a task
//! node and whose wake-ups go through its own ready queue. Only work that is still pending
//! after its first poll while the slot is taken goes there. Both are polled on the daemon's
//! task, so handlers still borrow the daemon's state.

use futures_util::stream::{FuturesUnordered, Stream};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// A daemon's in-flight requests and events.
    pub(super) struct InFlight<F> {
        #[pin]
        inline: Option<F>,
        rest: FuturesUnordered<F>,
    }
}

impl<F: Future<Output = ()>> InFlight<F> {
    pub(super) fn new() -> Self {
        InFlight {
            inline: None,
            rest: FuturesUnordered::new(),
        }
    }

    /// Work admitted and not finished.
    pub(super) fn len(&self) -> usize {
        usize::from(self.inline.is_some()) + self.rest.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admit `work` and poll it once, now.
    pub(super) fn admit(self: Pin<&mut Self>, work: F, cx: &mut Context<'_>) {
        let mut this = self.project();
        if this.inline.is_some() {
            this.rest.push(work);
            // Its first poll comes with the next `drive`, which the caller runs before it
            // returns `Pending`.
            return;
        }
        this.inline.set(Some(work));
        if let Some(f) = this.inline.as_mut().as_pin_mut()
            && f.poll(cx).is_ready()
        {
            this.inline.set(None);
        }
    }

    /// Poll everything that can make progress; `true` if something finished.
    pub(super) fn drive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let mut this = self.project();
        let mut finished = false;
        if let Some(f) = this.inline.as_mut().as_pin_mut()
            && f.poll(cx).is_ready()
        {
            this.inline.set(None);
            finished = true;
        }
        while !this.rest.is_empty() {
            match Pin::new(&mut *this.rest).poll_next(cx) {
                Poll::Ready(Some(())) => finished = true,
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn inflight_finishes_ready_work_inline_and_pending_work_later() {
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut rx = Some(rx);
        let mut inflight = std::pin::pin!(InFlight::new());
        let d = done.clone();
        std::future::poll_fn(|cx| {
            let waiting = rx.take().map(|rx| {
                let d = d.clone();
                futures_util::future::Either::Left(async move {
                    let _ = rx.await;
                    d.fetch_add(1, Ordering::SeqCst);
                })
            });
            if let Some(w) = waiting {
                inflight.as_mut().admit(w, cx);
            }
            for _ in 0..3 {
                let d = d.clone();
                inflight.as_mut().admit(
                    futures_util::future::Either::Right(async move {
                        d.fetch_add(1, Ordering::SeqCst);
                    }),
                    cx,
                );
            }
            inflight.as_mut().drive(cx);
            Poll::Ready(())
        })
        .await;
        assert_eq!(done.load(Ordering::SeqCst), 3, "the ready ones finished");
        assert_eq!(inflight.len(), 1, "the pending one is still in flight");
        tx.send(()).expect("send");
        std::future::poll_fn(|cx| {
            if inflight.as_mut().drive(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        assert_eq!(done.load(Ordering::SeqCst), 4);
        assert!(inflight.is_empty());
    }
}
