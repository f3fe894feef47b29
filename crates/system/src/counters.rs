//! Counters of the host's socket server and its startup timings, shared between the server
//! (which writes them) and `health/metrics` / `system/startup` (which read them).

use serde::Serialize;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the host's socket server, shared with `health/metrics`. Relaxed atomics: they
/// are read for display, never for synchronisation.
#[derive(Debug, Default)]
pub struct HostCounters {
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Request frames received (including those answered with an error).
    pub requests: AtomicU64,
    /// Frames answered with `bad_request` (undecodable bodies).
    pub bad_frames: AtomicU64,
    /// Connections closed for a `frame_too_large` header.
    pub frames_too_large: AtomicU64,
    /// Connections refused at `max_connections` (answered `overloaded` and closed).
    pub connections_refused: AtomicU64,
    /// Connections closed because a frame was not completed within `frame_timeout_ms`.
    pub frames_timed_out: AtomicU64,
    /// Event subscriptions held by connections now.
    pub subscriptions_open: AtomicU64,
    /// Events (and lag markers) written to connections.
    pub events_forwarded: AtomicU64,
    /// The host's own startup timings, set once when startup has settled; reported by
    /// `system/startup`.
    pub startup: OnceLock<HostStartup>,
}

/// How long the host took to become useful, measured from process start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HostStartup {
    /// The socket was bound (clients could connect and queue requests).
    pub socket_bound_ms: f64,
    /// The first command (an in-process `ping` through the router) was answered.
    pub first_command_ms: f64,
    /// Every daemon was READY or failed.
    pub all_ready_ms: f64,
}

/// A point-in-time copy of [`HostCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostCountersSnapshot {
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Request frames received.
    pub requests: u64,
    /// Frames answered with `bad_request`.
    pub bad_frames: u64,
    /// Connections closed for an oversized frame.
    pub frames_too_large: u64,
    /// Connections refused at `max_connections`.
    pub connections_refused: u64,
    /// Connections closed for a frame not completed in time.
    pub frames_timed_out: u64,
    /// Event subscriptions held by connections now.
    pub subscriptions_open: u64,
    /// Events written to connections.
    pub events_forwarded: u64,
}

impl HostCounters {
    /// Add one to `counter`.
    #[inline]
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtract one from `counter` (saturating at zero).
    #[inline]
    pub fn decr(counter: &AtomicU64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }

    /// Copy every counter.
    pub fn snapshot(&self) -> HostCountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HostCountersSnapshot {
            connections_accepted: g(&self.connections_accepted),
            connections_open: g(&self.connections_open),
            requests: g(&self.requests),
            bad_frames: g(&self.bad_frames),
            frames_too_large: g(&self.frames_too_large),
            connections_refused: g(&self.connections_refused),
            frames_timed_out: g(&self.frames_timed_out),
            subscriptions_open: g(&self.subscriptions_open),
            events_forwarded: g(&self.events_forwarded),
        }
    }
}
