//! Routing and correlation: a command name to the daemon that serves it, one answer per request.
//!
//! The routing table is built once from every daemon's spec and never changes while the runtime
//! runs, so lookups take no lock: an exact-name map first, then the longest registered prefix
//! (`data/` serves `data/list` unless someone registered `data/list` itself).
//!
//! **Unknown commands under a prefix.** A prefix claims a namespace; it does not make every name
//! in it a command. A name that reaches a prefix (it is nobody's declared command) is answered
//! `unknown_command` with near matches, exactly like a name no prefix covers, and never reaches
//! the daemon, when the daemon behind the longest matching prefix declares commands. Only a
//! daemon that declares no commands, or opts out with [`DaemonSpec::open_prefix`], receives the
//! undeclared names under its prefixes (it then answers them itself). So `data/lsit` gets
//! "did you mean 'data/list'?" from here, not `bad_request` from the data daemon.
//!
//! **Declared params are checked here, before enqueueing.** Each [`CommandSpec`]'s params
//! (`ParamSpec { name, ty, required }`) are compiled once, when the router is built, into a
//! slice of `(name, ParamType, required)` kept next to the exact route; the lookup that finds the
//! daemon finds the declaration with it. Before the request is queued, [`check_declared_iter`]
//! runs against it: params that are not an object (or `null`) are `bad_request` `params must be
//! an object`, a missing required param is `validation` `<name>: required`, a present one of the
//! wrong JSON type is `bad_request` `<name>: must be <type>` (the first problem in declaration
//! order; the messages are [`ParamError`]'s, the same every daemon's own reader gives). Why here
//! and not in the daemon's serve loop: the route lookup already has the spec at hand, and a
//! request that can only fail never takes a queue slot, never waits for a starting daemon and
//! never costs the daemon a poll. The check allocates nothing when it passes, and it is skipped
//! entirely for a command that declares nothing checkable (`ping`): a declared type word that
//! [`ParamType::parse`] reads as `Any` (`string|array`) is not type-checked, and an optional
//! param of such a type is not compiled at all. Params the spec does not declare are not looked
//! at, and commands served only by a prefix have no declaration to check: the handler still
//! validates values (lengths, ranges, enums). Refusals are counted per daemon as
//! `rejected_params` in its report; they are not `handled` or `failed`, since the daemon never
//! saw them.
//!
//! "Correlation" is one answer cell per request plus a deadline: [`Router::ask`] returns exactly
//! once, with the daemon's answer, `timeout` when the deadline passes, `overloaded` when the
//! queue is full, `unavailable` naming the cause when the daemon failed, or `shutting_down`. The
//! deadline costs no timer entry: the router's one sweeper (`sweep.rs`) answers `timeout` at
//! it, whether the request is still queued or the daemon is running it (even stuck in a poll).
//! Nothing leaks: a caller that goes away marks its cell, and the daemon skips the request at
//! dequeue; answered cells leave the daemon's in-flight list (bounded by twice its
//! concurrency).

use crate::cause::Cause;
use crate::error::DaemonError;
use crate::lifecycle::{LifecycleState, Status};
use crate::mailbox::{CommandName, Envelope, Mailbox, Request};
use crate::metrics::{DaemonMetrics, DaemonReport, InitReport, us_to_ms, work_counts};
use crate::reply::{Cell, Outcome};
use crate::spec::{CommandSpec, DaemonSpec};
use crate::sweep::Sweep;
#[cfg(doc)]
use daemonhost_protocol::params::ParamError;
use daemonhost_protocol::params::{ParamType, check_declared_iter};
use foldhash::HashMap;
use foldhash::HashMapExt;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest command name a request carries inline (no allocation).
const MAX_INLINE_NAME: usize = std::mem::size_of::<String>();

/// One registered daemon as the router sees it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: Arc<str>,
    pub(crate) spec: DaemonSpec,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) metrics: Arc<DaemonMetrics>,
}

/// One declared param as the router checks it: name, type, required.
type Decl = (Box<str>, ParamType, bool);

/// An exact command's route, with its compiled param declaration.
#[derive(Debug)]
struct Route {
    slot: usize,
    timeout: Option<Duration>,
    /// What [`check_declared_iter`] checks before enqueueing; empty = no check at all.
    params: Box<[Decl]>,
}

/// A prefix's route.
#[derive(Debug)]
struct PrefixRoute {
    slot: usize,
    /// Whether names under the prefix that nobody declares reach the daemon: its spec declares
    /// no commands, or says [`DaemonSpec::open_prefix`]. Otherwise they are `unknown_command`.
    open: bool,
}

/// Where a command goes: its daemon, default deadline and declared params.
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    slot: usize,
    timeout: Option<Duration>,
    params: &'a [Decl],
}

#[derive(Debug)]
struct Inner {
    slots: Vec<Slot>,
    exact: HashMap<Box<str>, Route>,
    prefixes: HashMap<Box<str>, PrefixRoute>,
    /// Answers `timeout` at every request's deadline (no timer entry per request).
    sweep: Arc<Sweep>,
    /// The longest registered prefix, in bytes: a name's slashes past it are never looked up.
    longest_prefix: usize,
    default_timeout: Duration,
    max_timeout: Duration,
    shutting_down: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sweep.close();
    }
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
                        params: declared(c),
                    },
                );
            }
            let open = s.spec.open_prefix || s.spec.commands.is_empty();
            for p in &s.spec.prefixes {
                prefixes.insert(p.clone().into_boxed_str(), PrefixRoute { slot: i, open });
            }
        }
        let sweep = Arc::new(Sweep::new(
            slots
                .iter()
                .map(|s| (s.mailbox.clone(), s.status.clone()))
                .collect(),
        ));
        Router {
            inner: Arc::new(Inner {
                slots,
                exact,
                longest_prefix: prefixes.keys().map(|p| p.len()).max().unwrap_or(0),
                prefixes,
                sweep,
                default_timeout,
                max_timeout,
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// Exact name first, then the longest prefix; `None` also for an undeclared name under a
    /// prefix that is not open (the longest matching prefix decides, no shorter one is tried).
    fn route(&self, command: &str) -> Option<Target<'_>> {
        if let Some(r) = self.inner.exact.get(command) {
            return Some(Target {
                slot: r.slot,
                timeout: r.timeout,
                params: &r.params,
            });
        }
        // Longest prefix first: "a/b/c" tries "a/b/" then "a/". Only slashes within the
        // longest registered prefix are tried: a name of many slashes costs no more than a
        // short one (each try hashes the name up to its slash).
        let bytes = command.as_bytes();
        let mut end = bytes.len().min(self.inner.longest_prefix);
        while let Some(pos) = bytes[..end].iter().rposition(|b| *b == b'/') {
            // `pos` is a '/', so a character boundary.
            if let Some(p) = self.inner.prefixes.get(&command[..=pos]) {
                return p.open.then_some(Target {
                    slot: p.slot,
                    timeout: None,
                    params: &[],
                });
            }
            end = pos;
        }
        None
    }

    /// The name of the daemon serving `command`, if any (`None` for a name that would be
    /// answered `unknown_command`).
    pub fn daemon_for(&self, command: &str) -> Option<&str> {
        self.route(command).map(|t| &*self.inner.slots[t.slot].name)
    }

    /// The deadline a request for `command` gets when the caller names none.
    pub fn default_timeout(&self, command: &str) -> Duration {
        self.route(command)
            .and_then(|t| t.timeout)
            .unwrap_or(self.inner.default_timeout)
    }

    /// Send `command` with the command's default deadline.
    pub async fn ask(&self, command: &str, params: Value) -> Result<Value, DaemonError> {
        self.ask_named(CommandName::new(command), params, None)
            .await
    }

    /// Send `command` with an explicit deadline.
    pub async fn ask_timeout(
        &self,
        command: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, DaemonError> {
        self.ask_named(CommandName::new(command), params, Some(timeout))
            .await
    }

    /// Send a request the caller already owns (the socket server's path: no copy of the name).
    /// `timeout` of `None` uses the command's default; every deadline is capped by the
    /// runtime's maximum so nothing waits forever. Params that break the command's declaration
    /// are answered here, before the request is queued (see the module docs).
    pub async fn ask_owned(
        &self,
        command: String,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, DaemonError> {
        // A short name moves inline (the `String`'s buffer is freed); a long one keeps its
        // buffer.
        let command = if command.len() <= MAX_INLINE_NAME {
            CommandName::new(&command)
        } else {
            CommandName::from(command)
        };
        self.ask_named(command, params, timeout).await
    }

    /// [`Router::ask_owned`] for a name already in a request's form.
    pub async fn ask_named(
        &self,
        command: CommandName,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, DaemonError> {
        let inner = &*self.inner;
        if inner.shutting_down.load(Ordering::Acquire) {
            return Err(DaemonError::shutting_down(
                "the host is shutting down and accepts no new requests",
            ));
        }
        let Some(target) = self.route(&command) else {
            return Err(self.unknown(&command));
        };
        let slot = &inner.slots[target.slot];
        check(slot, target.params, &params)?;
        let timeout = timeout
            .or(target.timeout)
            .unwrap_or(inner.default_timeout)
            .min(inner.max_timeout);
        let now = Instant::now();
        let deadline = now + timeout;
        let (reply, answered) = Cell::pair(deadline, timeout);
        let queued = slot.mailbox.push(Envelope {
            request: Request {
                command,
                params,
                deadline,
            },
            reply,
            enqueued: now,
        });
        if queued {
            inner.sweep.note(deadline);
        }
        match answered.await {
            // Includes the sweeper's `timeout` at the deadline.
            Outcome::Answer(answer) => answer,
            Outcome::Dropped => {
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
        }
    }

    /// Have the sweeper keep `cell`'s deadline (a daemon's start attempt; see `sweep.rs`).
    pub(crate) fn watch_deadline(&self, cell: Arc<Cell>) {
        self.inner.sweep.watch(cell);
    }

    /// Sweeps the deadline sweeper has run (see `sweep.rs`).
    pub fn deadline_sweeps(&self) -> u64 {
        self.inner.sweep.sweeps()
    }

    /// Check `params` against what `command` declares, as [`Router::ask_owned`] does before
    /// queueing, for a caller that answers a declared command itself (the socket server's
    /// `events/subscribe`). `Ok` when they pass, and for a command nobody declares (a refusal is
    /// counted in the daemon's `rejected_params`).
    pub fn check_params(&self, command: &str, params: &Value) -> Result<(), DaemonError> {
        match self.inner.exact.get(command) {
            Some(r) => check(&self.inner.slots[r.slot], &r.params, params),
            None => Ok(()),
        }
    }

    fn unknown(&self, command: &str) -> DaemonError {
        self.unknown_command(command)
    }

    /// The `unknown_command` answer for `command`, as [`Router::ask`] gives it: the name (at
    /// most [`MAX_ECHOED_NAME_CHARS`] characters of it, so a huge name never makes an answer too
    /// large to send) and the close matches, if any (see [`Router::near_matches`]). For a caller
    /// that answers an unknown name itself (`help`).
    pub fn unknown_command(&self, command: &str) -> DaemonError {
        let near = self.near_matches(command, 3);
        let name = echoed_name(command);
        if near.is_empty() {
            DaemonError::unknown_command(format!("no daemon serves '{name}' (try 'list')"))
        } else {
            DaemonError::unknown_command(format!(
                "no daemon serves '{name}'; did you mean {}?",
                near.iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// Up to `max` known commands closest to `command` by edit distance (within a third of its
    /// length, at least 2), and those it is a prefix of or that are a prefix of it.
    ///
    /// Bounded work whatever the name: a name longer than [`MAX_SUGGESTED_NAME_LEN`] bytes gets
    /// no suggestion at all, and a known command whose length differs from the name's by more
    /// than the distance allowed is skipped before any distance is computed (the length
    /// difference is a lower bound of the edit distance).
    pub fn near_matches(&self, command: &str, max: usize) -> Vec<String> {
        if command.len() > MAX_SUGGESTED_NAME_LEN {
            return Vec::new();
        }
        let limit = (command.len() / 3).max(2);
        let mut scored: Vec<(usize, &str)> = self
            .inner
            .exact
            .keys()
            .filter_map(|k| {
                let prefix = k.starts_with(command) || command.starts_with(&**k);
                if prefix {
                    // One is the other plus a tail: the distance is the tail's length.
                    return Some((k.len().abs_diff(command.len()), &**k));
                }
                if k.len().abs_diff(command.len()) > limit {
                    return None;
                }
                let d = edit_distance(command, k);
                (d <= limit).then_some((d, &**k))
            })
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
        rejected_params: c.rejected_params.load(Relaxed),
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
        requires: s.spec.requires.clone(),
        wants: s.spec.wants.clone(),
        waited_ms: us_to_ms(m.waited_us.load(Relaxed)),
        ready_at_ms: us_to_ms(m.ready_at_us.load(Relaxed)),
        core_init_ms: us_to_ms(m.core_init_us.load(Relaxed)),
        deferred_init_ms: us_to_ms(m.deferred_init_us.load(Relaxed)),
        total_ms: us_to_ms(m.total_us.load(Relaxed)),
        queued_before_ready: s.mailbox.counters.queued_before_ready.load(Relaxed),
        longest_poll_ms: us_to_ms(m.longest_poll_us()),
        work: work_counts(m),
    }
}

/// The declared-params check: nothing to do for an empty declaration; a refusal is counted.
fn check(slot: &Slot, decls: &[Decl], params: &Value) -> Result<(), DaemonError> {
    if decls.is_empty() {
        return Ok(());
    }
    check_declared_iter(params, decls.iter().map(|(n, t, r)| (&**n, *t, *r))).map_err(|e| {
        slot.mailbox
            .counters
            .rejected_params
            .fetch_add(1, Ordering::Relaxed);
        e.into()
    })
}

/// A command's declared params as the router checks them: every required one, and every
/// optional one whose type word names a type (an optional `Any` can never fail, so it is left out).
fn declared(c: &CommandSpec) -> Box<[Decl]> {
    c.params
        .iter()
        .filter_map(|p| {
            let ty = ParamType::parse(&p.ty);
            (p.required || ty != ParamType::Any).then(|| (p.name.as_str().into(), ty, p.required))
        })
        .collect()
}

/// Names longer than this (in bytes) get no "did you mean": no command is nearly that long.
pub const MAX_SUGGESTED_NAME_LEN: usize = 256;

/// Characters of an unknown command name echoed in its `unknown_command` message; a longer
/// name is cut there and marked with its length.
pub const MAX_ECHOED_NAME_CHARS: usize = 128;

/// `name` as an error message echoes it: whole up to [`MAX_ECHOED_NAME_CHARS`] characters,
/// else its beginning, `…` and its length in bytes.
fn echoed_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(MAX_ECHOED_NAME_CHARS) {
        None => name.into(),
        Some((cut, _)) => format!("{}… ({} bytes)", &name[..cut], name.len()).into(),
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
    use daemonhost_protocol::ErrorCode;
    use proptest::prelude::*;
    use serde_json::json;

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

    fn router(specs: Vec<DaemonSpec>) -> (Router, Vec<Lifecycle>) {
        let (slots, lcs) = specs.into_iter().map(slot).unzip();
        (
            Router::new(slots, Duration::from_secs(1), Duration::from_secs(60)),
            lcs,
        )
    }

    /// Ask `command`; if the router queues it, answer it `"served"` as the daemon would.
    async fn ask_through(r: &Router, command: &str, params: Value) -> Result<Value, DaemonError> {
        let (r2, cmd) = (r.clone(), command.to_owned());
        let ask = tokio::spawn(async move { r2.ask(&cmd, params).await });
        loop {
            if ask.is_finished() {
                return ask.await.expect("join");
            }
            if let Some(env) = r.slots().iter().find_map(|s| s.mailbox.try_recv()) {
                env.reply.send(Ok(Value::from("served")));
                return ask.await.expect("join");
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn dropping_the_router_frees_its_mailboxes_at_once_even_with_the_sweeper_running() {
        let (r, _lcs) = router(vec![DaemonSpec::new("a").prefix("a/")]);
        // A queued request notes its deadline, which spawns the sweeper.
        assert_eq!(
            ask_through(&r, "a/x", Value::Null).await.expect("served"),
            Value::from("served")
        );
        let weak = Arc::downgrade(&r.slots()[0].mailbox);
        drop(r);
        assert!(
            weak.upgrade().is_none(),
            "the sweeper's task must not keep the daemons alive until it next runs"
        );
    }

    fn rejected(r: &Router, daemon: &str) -> u64 {
        r.reports()
            .into_iter()
            .find(|d| d.name == daemon)
            .expect("daemon")
            .rejected_params
    }

    fn data_spec() -> DaemonSpec {
        DaemonSpec::new("data")
            .prefix("data/")
            .command(
                CommandSpec::new("data/list", "a page")
                    .param("collection", "string", true, "name")
                    .param("limit", "integer", false, "page size")
                    .param("cursor", "string|null", false, "not classified"),
            )
            .alias("data/query", "data/list")
            .command(CommandSpec::new("data/stats", "counters"))
    }

    #[tokio::test]
    async fn undeclared_name_under_a_prefix_is_unknown_command_and_never_reaches_the_daemon() {
        let (r, _l) = router(vec![data_spec()]);
        assert_eq!(r.daemon_for("data/lsit"), None);
        assert_eq!(r.daemon_for("data/list"), Some("data"));
        let e = ask_through(&r, "data/lsit", json!({"collection": "c"}))
            .await
            .expect_err("unknown");
        assert_eq!(e.code, ErrorCode::UnknownCommand);
        assert!(e.message.contains("'data/list'"), "{}", e.message);
        // The same answer as a name no prefix covers.
        let other = r.ask("dtaa/list", Value::Null).await.expect_err("unknown");
        assert_eq!(other.code, ErrorCode::UnknownCommand);
        assert!(other.message.contains("'data/list'"), "{}", other.message);
        // Declared names and declared aliases are served.
        for cmd in ["data/list", "data/query"] {
            assert_eq!(
                ask_through(&r, cmd, json!({"collection": "c"})).await,
                Ok(Value::from("served")),
                "{cmd}"
            );
        }
        let s = r.slot("data").expect("slot");
        assert_eq!(s.metrics.handled.load(Ordering::Relaxed), 0);
        assert_eq!(s.mailbox.counters.peak_depth.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn open_prefix_and_a_daemon_without_commands_receive_undeclared_names() {
        let (r, _l) = router(vec![
            DaemonSpec::new("kv")
                .prefix("kv/")
                .command(CommandSpec::new("kv/get", "g"))
                .open_prefix(),
            DaemonSpec::new("bare").prefix("bare/"),
        ]);
        assert_eq!(r.daemon_for("kv/anything"), Some("kv"));
        assert_eq!(r.daemon_for("bare/anything"), Some("bare"));
        for cmd in ["kv/anything", "bare/anything"] {
            assert_eq!(
                ask_through(&r, cmd, json!({})).await,
                Ok(Value::from("served")),
                "{cmd}"
            );
        }
    }

    #[tokio::test]
    async fn the_longest_prefix_decides_and_a_closed_one_does_not_fall_back_to_a_shorter() {
        let (r, _l) = router(vec![
            DaemonSpec::new("data").prefix("data/"),
            DaemonSpec::new("archive")
                .prefix("data/archive/")
                .command(CommandSpec::new("data/archive/run", "r")),
        ]);
        assert_eq!(r.daemon_for("data/other"), Some("data"));
        assert_eq!(r.daemon_for("data/archive/run"), Some("archive"));
        assert_eq!(r.daemon_for("data/archive/rnu"), None);
        let e = r
            .ask("data/archive/rnu", Value::Null)
            .await
            .expect_err("unknown");
        assert_eq!(e.code, ErrorCode::UnknownCommand);
        assert!(e.message.contains("'data/archive/run'"), "{}", e.message);
    }

    #[tokio::test]
    async fn declared_params_are_checked_before_enqueueing_with_the_param_readers_answers() {
        let (r, _l) = router(vec![data_spec()]);
        let cases = [
            (json!({}), ErrorCode::Validation, "collection: required"),
            (Value::Null, ErrorCode::Validation, "collection: required"),
            (
                json!({"collection": null}),
                ErrorCode::Validation,
                "collection: required",
            ),
            (
                json!({"collection": 7}),
                ErrorCode::BadRequest,
                "collection: must be a string",
            ),
            (
                json!({"collection": "c", "limit": "9"}),
                ErrorCode::BadRequest,
                "limit: must be an integer",
            ),
            (
                json!([1]),
                ErrorCode::BadRequest,
                "params must be an object",
            ),
        ];
        for (i, (params, code, msg)) in cases.into_iter().enumerate() {
            for cmd in ["data/list", "data/query"] {
                let e = ask_through(&r, cmd, params.clone()).await.expect_err(msg);
                assert_eq!((e.code, e.message.as_str()), (code, msg), "{cmd} {params}");
            }
            assert_eq!(rejected(&r, "data"), 2 * (i as u64 + 1));
        }
        // Nothing refused ever took a queue slot.
        let s = r.slot("data").expect("slot");
        assert_eq!(s.mailbox.counters.peak_depth.load(Ordering::Relaxed), 0);
        // What the declaration allows reaches the daemon: undeclared params are not looked at,
        // and an unclassified type word ("string|null") is not type-checked.
        let ok = json!({"collection": "c", "limit": 5, "cursor": 3, "extra": [1]});
        assert_eq!(
            ask_through(&r, "data/list", ok).await,
            Ok(Value::from("served"))
        );
        assert_eq!(rejected(&r, "data"), 12);
    }

    #[tokio::test]
    async fn a_command_declaring_nothing_checkable_is_not_checked() {
        let (r, _l) = router(vec![
            DaemonSpec::new("sys")
                .command(CommandSpec::new("ping", "p"))
                .command(CommandSpec::new("echo", "e").param("x", "json", false, "any")),
        ]);
        let route = |c: &str| r.inner.exact.get(c).expect("route").params.len();
        assert_eq!((route("ping"), route("echo")), (0, 0));
        // Not even the params' shape: the handler sees whatever was sent.
        for cmd in ["ping", "echo"] {
            assert_eq!(
                ask_through(&r, cmd, json!([1])).await,
                Ok(Value::from("served"))
            );
        }
        assert_eq!(rejected(&r, "sys"), 0);
    }

    #[test]
    fn check_params_is_the_same_check_for_callers_that_answer_a_command_themselves() {
        let (r, _l) = router(vec![data_spec()]);
        assert_eq!(
            r.check_params("data/list", &json!({})),
            Err(DaemonError::validation("collection: required"))
        );
        assert_eq!(
            r.check_params("data/list", &json!({"collection": "c"})),
            Ok(())
        );
        assert_eq!(r.check_params("data/stats", &json!([1])), Ok(()));
        assert_eq!(r.check_params("nobody/declares", &json!([1])), Ok(()));
        assert_eq!(rejected(&r, "data"), 1);
    }

    #[test]
    fn param_errors_become_daemon_errors_with_their_code_and_message() {
        use daemonhost_protocol::params::ParamError;
        let e: DaemonError = ParamError::missing("room").into();
        assert_eq!(e, DaemonError::validation("room: required"));
        let e: DaemonError = ParamError::wrong_type("room", ParamType::Object).into();
        assert_eq!(e, DaemonError::bad_request("room: must be an object"));
        let e: DaemonError = ParamError::NotAnObject.into();
        assert_eq!(e, DaemonError::bad_request("params must be an object"));
    }

    /// A router declaring `names`, one daemon each.
    fn router_of(names: &[&str]) -> (Router, Vec<Lifecycle>) {
        let specs = names
            .iter()
            .enumerate()
            .map(|(i, n)| DaemonSpec::new(format!("d{i}")).command(CommandSpec::new(*n, "c")))
            .collect();
        router(specs)
    }

    /// Command names like the host's (the search must prune among similar ones).
    const HOST_LIKE: [&str; 16] = [
        "ping",
        "list",
        "help",
        "data/list",
        "data/query",
        "data/create",
        "data/read",
        "data/list-collections",
        "chat/send",
        "chat/history",
        "health/status",
        "health/metrics",
        "log/write",
        "log/write-batch",
        "search/messages",
        "session/get",
    ];

    /// The search before it was bounded: every known command's full distance.
    fn near_matches_unbounded(r: &Router, command: &str, max: usize) -> Vec<String> {
        let limit = (command.len() / 3).max(2);
        let mut scored: Vec<(usize, &str)> = r
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

    #[tokio::test]
    async fn a_huge_unknown_name_is_answered_at_once_unknown_command_with_the_name_cut() {
        let mut specs: Vec<DaemonSpec> = HOST_LIKE
            .iter()
            .enumerate()
            .map(|(i, n)| DaemonSpec::new(format!("d{i}")).command(CommandSpec::new(*n, "c")))
            .collect();
        // Closed prefixes: names under them that nobody declares are unknown too.
        specs.push(
            DaemonSpec::new("prefixed")
                .prefix("data/")
                .prefix("data/archive/")
                .command(CommandSpec::new("data/archive/run", "r")),
        );
        let (r, _l) = router(specs);
        // 100 KiB held the `system` daemon ~4.7 s when every distance was computed in full;
        // 16 MiB (the largest frame) took minutes, and its echo made the answer too large to
        // send (`internal`).
        for len in [100 << 10, 16 << 20] {
            // Without a slash, with a prefix's, with nothing but slashes (each one was a prefix
            // lookup hashing the name up to it: quadratic).
            for name in [
                "x".repeat(len),
                format!("data/list{}", "é".repeat(len / 2)),
                "/".repeat(len),
                "data/".repeat(len / 5),
            ] {
                let started = std::time::Instant::now();
                let e = r.ask(&name, Value::Null).await.expect_err("unknown");
                let took = started.elapsed();
                assert_eq!(e.code, ErrorCode::UnknownCommand, "{len}");
                assert!(
                    took < Duration::from_secs(1),
                    "{len} bytes took {took:?}: the search is not bounded"
                );
                assert!(
                    e.message.len() < MAX_ECHOED_NAME_CHARS * 2 + 100,
                    "{} bytes echoed",
                    e.message.len()
                );
                assert!(
                    e.message.contains(&format!("… ({} bytes)", name.len())),
                    "{}",
                    &e.message[..e.message.len().min(300)]
                );
                assert!(
                    e.message.ends_with("(try 'list')"),
                    "no suggestion past the cap"
                );
                assert_eq!(r.unknown_command(&name), e, "help answers the same");
            }
        }
        // At the cap, the echo is whole and a suggestion is still made.
        let name = format!("data/list{}", "z".repeat(MAX_ECHOED_NAME_CHARS - 9));
        let e = r.unknown_command(&name);
        assert!(e.message.contains(&format!("'{name}'")), "{}", e.message);
        assert!(
            e.message.contains("did you mean 'data/list'"),
            "{}",
            e.message
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Pruning by length and the length cap change no suggestion: below the cap the bounded
        /// search answers what the full one answered.
        #[test]
        fn the_bounded_near_match_search_suggests_what_the_full_search_suggests(
            name in prop_oneof![
                "[a-z/-]{0,24}",
                prop::sample::select(HOST_LIKE.to_vec()).prop_flat_map(|k| {
                    ("[a-z/]{0,3}", 0..=k.len(), "[a-z/]{0,40}").prop_map(move |(ins, at, tail)| {
                        let mut s = k.to_owned();
                        s.insert_str(at, &ins);
                        if at % 3 == 0 { s.push_str(&tail); }
                        s
                    })
                }),
                "\\PC{0,80}",
            ],
            max in 1usize..5,
        ) {
            let (r, _l) = router_of(&HOST_LIKE);
            prop_assume!(name.len() <= MAX_SUGGESTED_NAME_LEN);
            prop_assert_eq!(
                r.near_matches(&name, max),
                near_matches_unbounded(&r, &name, max)
            );
        }
    }

    #[test]
    fn echoed_name_is_whole_up_to_the_limit_and_cut_on_a_character_boundary_past_it() {
        let at_limit = "é".repeat(MAX_ECHOED_NAME_CHARS);
        assert_eq!(echoed_name(&at_limit), at_limit);
        let past = "é".repeat(MAX_ECHOED_NAME_CHARS + 1);
        assert_eq!(
            echoed_name(&past),
            format!("{at_limit}… ({} bytes)", past.len())
        );
        assert_eq!(echoed_name(""), "");
    }

    #[test]
    fn edit_distance_is_zero_for_equal_strings_and_counts_each_edit() {
        assert_eq!(edit_distance("ping", "ping"), 0);
        assert_eq!(edit_distance("pnig", "ping"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
