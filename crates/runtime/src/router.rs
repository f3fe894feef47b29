//! Routing and correlation: a command name to the daemon that serves it, one answer per request.
//!
//! The routing table is built once from every daemon's spec and never changes while the runtime
//! runs, so lookups take no lock: an exact-name map first, then the longest registered prefix
//! (`data/` serves `data/list` unless someone registered `data/list` itself).
//!
//! "Correlation" is the caller's oneshot plus a deadline: [`Router::ask`] returns exactly once,
//! with the daemon's answer, `timeout` when the deadline passes, `overloaded` when the queue is
//! full, `unavailable` naming the cause when the daemon failed, or `shutting_down`. There is no
//! shared pending-request table to leak: a caller that goes away drops its receiver and the daemon
//! skips the request at dequeue.

use crate::cause::Cause;
use crate::error::DaemonError;
use crate::lifecycle::{LifecycleState, Status};
use crate::mailbox::{Envelope, Mailbox, Request};
use crate::metrics::{DaemonMetrics, DaemonReport, InitReport, us_to_ms, work_counts};
use crate::spec::{CommandSpec, DaemonSpec};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// One registered daemon as the router sees it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: Arc<str>,
    pub(crate) spec: DaemonSpec,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) metrics: Arc<DaemonMetrics>,
}

#[derive(Debug)]
struct Route {
    slot: usize,
    timeout: Option<Duration>,
}

#[derive(Debug)]
struct Inner {
    slots: Vec<Slot>,
    exact: HashMap<Box<str>, Route>,
    prefixes: HashMap<Box<str>, usize>,
    default_timeout: Duration,
    max_timeout: Duration,
    shutting_down: AtomicBool,
}

/// A command as listed by `list` and `help`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandInfo {
    /// Full name.
    pub name: String,
    /// The daemon serving it.
    pub daemon: String,
    /// The command's documentation.
    #[serde(flatten)]
    pub spec: CommandSpec,
}

/// A cheap, cloneable handle that routes commands to daemons.
#[derive(Debug, Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    pub(crate) fn new(slots: Vec<Slot>, default_timeout: Duration, max_timeout: Duration) -> Self {
        let mut exact = HashMap::new();
        let mut prefixes = HashMap::new();
        for (i, s) in slots.iter().enumerate() {
            for c in &s.spec.commands {
                exact.insert(
                    c.name.clone().into_boxed_str(),
                    Route {
                        slot: i,
                        timeout: c.timeout,
                    },
                );
            }
            for p in &s.spec.prefixes {
                prefixes.insert(p.clone().into_boxed_str(), i);
            }
        }
        Router {
            inner: Arc::new(Inner {
                slots,
                exact,
                prefixes,
                default_timeout,
                max_timeout,
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    fn route(&self, command: &str) -> Option<(usize, Option<Duration>)> {
        if let Some(r) = self.inner.exact.get(command) {
            return Some((r.slot, r.timeout));
        }
        // Longest prefix first: "a/b/c" tries "a/b/" then "a/".
        let mut end = command.len();
        while let Some(pos) = command[..end].rfind('/') {
            if let Some(&slot) = self.inner.prefixes.get(&command[..=pos]) {
                return Some((slot, None));
            }
            end = pos;
        }
        None
    }

    /// The name of the daemon serving `command`, if any.
    pub fn daemon_for(&self, command: &str) -> Option<&str> {
        self.route(command).map(|(i, _)| &*self.inner.slots[i].name)
    }

    /// The deadline a request for `command` gets when the caller names none.
    pub fn default_timeout(&self, command: &str) -> Duration {
        self.route(command)
            .and_then(|(_, t)| t)
            .unwrap_or(self.inner.default_timeout)
    }

    /// Send `command` with the command's default deadline.
    pub async fn ask(&self, command: &str, params: Value) -> Result<Value, DaemonError> {
        self.ask_owned(command.to_owned(), params, None).await
    }

    /// Send `command` with an explicit deadline.
    pub async fn ask_timeout(
        &self,
        command: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, DaemonError> {
        self.ask_owned(command.to_owned(), params, Some(timeout))
            .await
    }

    /// Send a request the caller already owns (the socket server's path: no copy of the name).
    /// `timeout` of `None` uses the command's default; every deadline is capped by the
    /// runtime's maximum so nothing waits forever.
    pub async fn ask_owned(
        &self,
        command: String,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, DaemonError> {
        let inner = &*self.inner;
        if inner.shutting_down.load(Ordering::Acquire) {
            return Err(DaemonError::shutting_down(
                "the host is shutting down and accepts no new requests",
            ));
        }
        let Some((slot_ix, cmd_timeout)) = self.route(&command) else {
            return Err(self.unknown(&command));
        };
        let slot = &inner.slots[slot_ix];
        let timeout = timeout
            .or(cmd_timeout)
            .unwrap_or(inner.default_timeout)
            .min(inner.max_timeout);
        let now = Instant::now();
        let deadline = now + timeout;
        let (tx, rx) = oneshot::channel();
        slot.mailbox.push(Envelope {
            request: Request {
                command,
                params,
                deadline,
            },
            reply: tx,
            enqueued: now,
        });
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_dropped)) => {
                let (st, cause) = {
                    let s = slot.status.borrow();
                    (s.state, s.cause.clone())
                };
                if inner.shutting_down.load(Ordering::Acquire)
                    || matches!(st, LifecycleState::Stopping | LifecycleState::Stopped)
                {
                    Err(DaemonError::shutting_down(format!(
                        "daemon '{}' stopped before answering",
                        slot.name
                    )))
                } else if let (LifecycleState::Failed, Some(cause)) = (st, cause) {
                    // It crashed with the request in flight (e.g. its background loop died).
                    Err(DaemonError::unavailable(format!(
                        "daemon '{}' failed before answering: {cause}",
                        slot.name
                    )))
                } else {
                    Err(DaemonError::unavailable(format!(
                        "daemon '{}' dropped the request (state: {st})",
                        slot.name
                    )))
                }
            }
            Err(_elapsed) => {
                let st = slot.status.borrow().state;
                Err(DaemonError::timeout(format!(
                    "no answer from daemon '{}' within {} ms (state: {st}, {} queued)",
                    slot.name,
                    timeout.as_millis(),
                    slot.mailbox.depth()
                )))
            }
        }
    }

    fn unknown(&self, command: &str) -> DaemonError {
        let near = self.near_matches(command, 3);
        if near.is_empty() {
            DaemonError::unknown_command(format!("no daemon serves '{command}' (try 'list')"))
        } else {
            DaemonError::unknown_command(format!(
                "no daemon serves '{command}'; did you mean {}?",
                near.iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// Up to `max` known commands closest to `command` by edit distance.
    pub fn near_matches(&self, command: &str, max: usize) -> Vec<String> {
        let limit = (command.len() / 3).max(2);
        let mut scored: Vec<(usize, &str)> = self
            .inner
            .exact
            .keys()
            .map(|k| (edit_distance(command, k), &**k))
            .filter(|(d, k)| *d <= limit || k.starts_with(command) || command.starts_with(*k))
            .collect();
        scored.sort();
        scored
            .into_iter()
            .take(max)
            .map(|(_, k)| k.to_owned())
            .collect()
    }

    /// Every exact command, sorted by name.
    pub fn commands(&self) -> Vec<CommandInfo> {
        let mut out: Vec<CommandInfo> = self
            .inner
            .slots
            .iter()
            .flat_map(|s| {
                s.spec.commands.iter().map(|c| CommandInfo {
                    name: c.name.clone(),
                    daemon: s.name.to_string(),
                    spec: c.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Documentation of one command.
    pub fn command(&self, name: &str) -> Option<CommandInfo> {
        let r = self.inner.exact.get(name)?;
        let s = &self.inner.slots[r.slot];
        let spec = s.spec.commands.iter().find(|c| c.name == name)?.clone();
        Some(CommandInfo {
            name: name.to_owned(),
            daemon: s.name.to_string(),
            spec,
        })
    }

    /// Refuse every new request with `shutting_down` from now on.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Names of all registered daemons, in registration order.
    pub fn daemon_names(&self) -> Vec<String> {
        self.inner
            .slots
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    }

    /// A daemon's lifecycle watch.
    pub fn watch(&self, daemon: &str) -> Option<watch::Receiver<Status>> {
        self.slot(daemon).map(|s| s.status.clone())
    }

    pub(crate) fn slot(&self, daemon: &str) -> Option<&Slot> {
        self.inner.slots.iter().find(|s| &*s.name == daemon)
    }

    pub(crate) fn slots(&self) -> &[Slot] {
        &self.inner.slots
    }

    /// A live report of every daemon, in registration order.
    pub fn reports(&self) -> Vec<DaemonReport> {
        self.inner.slots.iter().map(report).collect()
    }
}

pub(crate) fn report(s: &Slot) -> DaemonReport {
    use std::sync::atomic::Ordering::Relaxed;
    let st = s.status.borrow().clone();
    let m = &s.metrics;
    let c = &s.mailbox.counters;
    DaemonReport {
        name: s.name.to_string(),
        state: st.state,
        deferred: st.deferred,
        cause_kind: st.cause.as_ref().map(Cause::kind),
        cause: st.cause,
        deferred_cause: st.deferred_cause,
        attempts: st.attempts,
        requires: s.spec.requires.clone(),
        wants: s.spec.wants.clone(),
        core_init_ms: us_to_ms(m.core_init_us.load(Relaxed)),
        deferred_init_ms: us_to_ms(m.deferred_init_us.load(Relaxed)),
        total_ms: us_to_ms(m.total_us.load(Relaxed)),
        queued_before_ready: c.queued_before_ready.load(Relaxed),
        queue_depth: s.mailbox.depth(),
        peak_queue_depth: c.peak_depth.load(Relaxed),
        oldest_queued_ms: s
            .mailbox
            .oldest_age()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0),
        overflowed: c.overflowed.load(Relaxed),
        expired: c.expired.load(Relaxed),
        handled: m.handled.load(Relaxed),
        failed: m.failed.load(Relaxed),
        panics: m.panics.load(Relaxed),
        in_flight: m.in_flight.load(Relaxed),
        events: m.events.load(Relaxed),
        longest_poll_ms: us_to_ms(m.longest_poll_us()),
        work: work_counts(m),
        details: m.details.lock().clone(),
    }
}

/// The init metrics of one daemon (its `system:daemon:init-complete` event).
pub(crate) fn init_report(s: &Slot) -> InitReport {
    use std::sync::atomic::Ordering::Relaxed;
    let st = s.status.borrow().clone();
    let m = &s.metrics;
    InitReport {
        daemon: s.name.to_string(),
        state: st.state,
        deferred: st.deferred,
        waited_ms: us_to_ms(m.waited_us.load(Relaxed)),
        core_init_ms: us_to_ms(m.core_init_us.load(Relaxed)),
        deferred_init_ms: us_to_ms(m.deferred_init_us.load(Relaxed)),
        total_ms: us_to_ms(m.total_us.load(Relaxed)),
        queued_before_ready: s.mailbox.counters.queued_before_ready.load(Relaxed),
        longest_poll_ms: us_to_ms(m.longest_poll_us()),
        work: work_counts(m),
    }
}

/// Levenshtein distance over bytes (command names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Lifecycle;
    use crate::spec::OverflowPolicy;

    fn slot(spec: DaemonSpec) -> (Slot, Lifecycle) {
        let lc = Lifecycle::new(spec.name.clone());
        (
            Slot {
                name: spec.name.clone().into(),
                mailbox: Arc::new(Mailbox::new(&spec.name, 4, 4, OverflowPolicy::RejectNewest)),
                status: lc.subscribe(),
                metrics: Arc::default(),
                spec,
            },
            lc,
        )
    }

    #[test]
    fn router_longest_prefix_wins_and_exact_beats_prefix() {
        let (a, _la) = slot(DaemonSpec::new("data").prefix("data/"));
        let (b, _lb) = slot(DaemonSpec::new("archive").prefix("data/archive/"));
        let (c, _lc) = slot(DaemonSpec::new("sys").command(CommandSpec::new("data/special", "x")));
        let r = Router::new(
            vec![a, b, c],
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        assert_eq!(r.daemon_for("data/list"), Some("data"));
        assert_eq!(r.daemon_for("data/archive/list"), Some("archive"));
        assert_eq!(r.daemon_for("data/special"), Some("sys"));
        assert_eq!(r.daemon_for("datax/list"), None);
        assert_eq!(r.daemon_for("data"), None);
    }

    #[tokio::test]
    async fn router_unknown_command_lists_near_matches() {
        let (a, _la) = slot(
            DaemonSpec::new("sys")
                .command(CommandSpec::new("ping", "p"))
                .command(CommandSpec::new("health/status", "h")),
        );
        let r = Router::new(vec![a], Duration::from_secs(1), Duration::from_secs(60));
        let err = r.ask("pnig", Value::Null).await.expect_err("unknown");
        assert_eq!(err.code, daemonhost_protocol::ErrorCode::UnknownCommand);
        assert!(err.message.contains("'ping'"), "{}", err.message);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("ping", "ping"), 0);
        assert_eq!(edit_distance("pnig", "ping"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
