//! A daemon's static description: what it is called, what it needs, what it serves, and the
//! limits it runs under. Spec is not state: the runtime reads it once at registration.

use serde::Serialize;
use std::time::Duration;

/// Requests and events a daemon serves at once unless its spec says otherwise.
pub(crate) const DEFAULT_CONCURRENCY: usize = 64;

/// What happens when a full queue receives one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// The newcomer is answered `overloaded`; queued requests keep their place (default).
    #[default]
    RejectNewest,
    /// The oldest queued request is answered `overloaded` and the newcomer takes a place.
    DropOldest,
}

/// Whether a daemon whose `start` fails (error, panic or timeout) is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RestartPolicy {
    /// Extra attempts after the first failure (0 = never restart).
    pub max_restarts: u32,
    /// Wait before the first retry; doubles each retry, capped at `max_backoff`.
    #[serde(serialize_with = "ser_ms")]
    pub backoff: Duration,
    /// Upper bound of the wait between retries.
    #[serde(serialize_with = "ser_ms")]
    pub max_backoff: Duration,
}

impl RestartPolicy {
    /// Never restart: one failed start fails the daemon.
    pub const NEVER: RestartPolicy = RestartPolicy {
        max_restarts: 0,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
    };

    /// Retry up to `max_restarts` times, starting with `backoff` and doubling.
    pub fn retry(max_restarts: u32, backoff: Duration) -> Self {
        RestartPolicy {
            max_restarts,
            backoff,
            max_backoff: Duration::from_secs(5),
        }
    }

    /// The wait before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::NEVER
    }
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One parameter of a command, for `help`, and the declaration the router checks before the
/// handler runs (see `router.rs`): a `required` one must be present and not `null`, and a present
/// one must have the JSON type `ty` names (`ParamType::parse`; a word it does not classify, such
/// as `string|array`, is not type-checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamSpec {
    /// Parameter name.
    pub name: String,
    /// Type in words (`string`, `number`, `object`, …).
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether a request without it is refused (`validation` `<name>: required`, by the router).
    pub required: bool,
    /// One line for people.
    pub description: String,
}

/// A command a daemon serves: routed by exact name and listed by `list` / `help`. Its `params`
/// are checked by the router before the request is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandSpec {
    /// Full command name, e.g. `data/list` or `ping`.
    pub name: String,
    /// One line for people.
    pub description: String,
    /// Parameters, for `help` and for the router's check.
    pub params: Vec<ParamSpec>,
    /// Default deadline when the caller gives none (falls back to the runtime default).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_ms")]
    pub timeout: Option<Duration>,
    /// The command this one is another name for ([`DaemonSpec::alias`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_ms(d, s),
        None => s.serialize_none(),
    }
}

impl CommandSpec {
    /// A command with a description and no documented params.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        CommandSpec {
            name: name.into(),
            description: description.into(),
            params: Vec::new(),
            timeout: None,
            alias_of: None,
        }
    }

    /// Document a parameter.
    pub fn param(
        mut self,
        name: impl Into<String>,
        ty: impl Into<String>,
        required: bool,
        description: impl Into<String>,
    ) -> Self {
        self.params.push(ParamSpec {
            name: name.into(),
            ty: ty.into(),
            required,
            description: description.into(),
        });
        self
    }

    /// Set this command's default deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A daemon's static description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    /// Unique name (`data`, `user`, …).
    pub name: String,
    /// Daemons that must be READY before this one starts; if one fails, this one fails with the cause.
    pub requires: Vec<String>,
    /// Daemons to wait for if they exist; their failure does not fail this one.
    pub wants: Vec<String>,
    /// Exact commands served (also listed by `list`).
    pub commands: Vec<CommandSpec>,
    /// Command prefixes served, ending in `/` (e.g. `data/`). The longest matching prefix wins
    /// for a name nobody declares exactly; if this daemon declares commands and is not
    /// [`open_prefix`](DaemonSpec::open_prefix), such a name is answered `unknown_command` with
    /// near matches and never reaches it.
    pub prefixes: Vec<String>,
    /// Whether names under `prefixes` that no one declares still reach this daemon (it answers
    /// them itself). Off by default; a daemon that declares no commands is always open.
    pub open_prefix: bool,
    /// Event patterns delivered to the daemon's `on_event`.
    pub events: Vec<String>,
    /// Queue bound before READY (the startup queue).
    pub startup_queue: usize,
    /// Queue bound after READY (the mailbox).
    pub mailbox: usize,
    /// What a full queue does with one more request.
    pub overflow: OverflowPolicy,
    /// Requests handled at once (1 = strictly sequential).
    pub concurrency: usize,
    /// Per-subscriber event queue bound for the daemon's `events`.
    pub event_queue: usize,
    /// Longest `start` may take before it counts as failed.
    pub start_timeout: Duration,
    /// Time allowed at stop to finish queued and in-flight requests.
    pub drain_budget: Duration,
    /// Retry policy for a failed `start`.
    pub restart: RestartPolicy,
}

/// Default startup queue bound.
pub const DEFAULT_STARTUP_QUEUE: usize = 1024;
/// Default mailbox bound after READY.
pub const DEFAULT_MAILBOX: usize = 1024;

impl DaemonSpec {
    /// A spec with defaults: no dependencies, no commands, queues of 1024, concurrency 64,
    /// start timeout 10 s, drain budget 5 s, never restart.
    pub fn new(name: impl Into<String>) -> Self {
        DaemonSpec {
            name: name.into(),
            requires: Vec::new(),
            wants: Vec::new(),
            commands: Vec::new(),
            prefixes: Vec::new(),
            open_prefix: false,
            events: Vec::new(),
            startup_queue: DEFAULT_STARTUP_QUEUE,
            mailbox: DEFAULT_MAILBOX,
            overflow: OverflowPolicy::RejectNewest,
            concurrency: DEFAULT_CONCURRENCY,
            event_queue: 256,
            start_timeout: Duration::from_secs(10),
            drain_budget: Duration::from_secs(5),
            restart: RestartPolicy::NEVER,
        }
    }

    /// Add a required dependency.
    pub fn requires(mut self, name: impl Into<String>) -> Self {
        self.requires.push(name.into());
        self
    }
    /// Add an optional dependency.
    pub fn wants(mut self, name: impl Into<String>) -> Self {
        self.wants.push(name.into());
        self
    }
    /// Serve an exact command.
    pub fn command(mut self, command: CommandSpec) -> Self {
        self.commands.push(command);
        self
    }
    /// Claim a prefix ending in `/`: names under it that nobody declares are routed here if the
    /// daemon declares no commands or is [`open_prefix`](DaemonSpec::open_prefix), and answered
    /// `unknown_command` with near matches otherwise.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }
    /// Let names under this daemon's prefixes that it does not declare reach its `handle`
    /// anyway. Only for a daemon that really serves an open set of names there (its handler
    /// answers an unknown one itself); aliases are better declared with
    /// [`alias`](DaemonSpec::alias), so `list` shows them and their params are checked.
    pub fn open_prefix(mut self) -> Self {
        self.open_prefix = true;
        self
    }
    /// Declare `name` as another name of the command `of`, declared before it: same params and
    /// default timeout, description `alias of <of>`. The handler answers both names. An alias
    /// whose target is not declared before it is a spec problem.
    pub fn alias(mut self, name: impl Into<String>, of: &str) -> Self {
        let mut c = self
            .commands
            .iter()
            .find(|c| c.name == of)
            .cloned()
            .unwrap_or_else(|| CommandSpec::new(of, ""));
        c.name = name.into();
        c.description = format!("alias of {of}");
        c.alias_of = Some(of.to_owned());
        self.commands.push(c);
        self
    }
    /// Receive events matching a pattern.
    pub fn events(mut self, pattern: impl Into<String>) -> Self {
        self.events.push(pattern.into());
        self
    }
    /// Set the startup queue bound.
    pub fn startup_queue(mut self, n: usize) -> Self {
        self.startup_queue = n;
        self
    }
    /// Set the mailbox bound after READY.
    pub fn mailbox(mut self, n: usize) -> Self {
        self.mailbox = n;
        self
    }
    /// Set the overflow policy.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }
    /// Set how many requests run at once (1 = sequential).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }
    /// Set the start timeout.
    pub fn start_timeout(mut self, d: Duration) -> Self {
        self.start_timeout = d;
        self
    }
    /// Set the drain budget at stop.
    pub fn drain_budget(mut self, d: Duration) -> Self {
        self.drain_budget = d;
        self
    }
    /// Set the restart policy for a failed start.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }
    /// Set the per-subscription event queue bound.
    pub fn event_queue(mut self, n: usize) -> Self {
        self.event_queue = n;
        self
    }

    /// Problems with this spec alone (names, bounds, routes).
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !valid_name(&self.name) {
            out.push(format!(
                "name '{}' must be non-empty and use only [a-z0-9_-]",
                self.name
            ));
        }
        if self.startup_queue == 0 {
            out.push("startup_queue must be at least 1".into());
        }
        if self.mailbox == 0 {
            out.push("mailbox must be at least 1".into());
        }
        if self.concurrency == 0 {
            out.push("concurrency must be at least 1".into());
        }
        if self.event_queue == 0 {
            out.push("event_queue must be at least 1".into());
        }
        for c in &self.commands {
            if c.name.is_empty() || c.name.ends_with('/') || c.name.starts_with('/') {
                out.push(format!(
                    "command '{}' must be non-empty and not start or end with '/'",
                    c.name
                ));
            }
        }
        for c in &self.commands {
            let Some(of) = &c.alias_of else { continue };
            match self.commands.iter().find(|t| &t.name == of) {
                Some(t) if t.alias_of.is_some() => out.push(format!(
                    "alias '{}' of '{of}', which is itself an alias",
                    c.name
                )),
                Some(t) if t.params == c.params && t.timeout == c.timeout => {}
                Some(_) => out.push(format!(
                    "alias '{}' of '{of}' must be declared after it (its params differ)",
                    c.name
                )),
                None => out.push(format!(
                    "alias '{}' of '{of}', which this daemon does not declare",
                    c.name
                )),
            }
        }
        if self.open_prefix && self.prefixes.is_empty() {
            out.push("open_prefix without a prefix".into());
        }
        for p in &self.prefixes {
            if p.len() < 2 || !p.ends_with('/') || p.starts_with('/') {
                out.push(format!(
                    "prefix '{p}' must end with '/' and have a name before it"
                ));
            }
        }
        out
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_and_caps() {
        let p = RestartPolicy::retry(10, Duration::from_millis(100));
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(400));
        assert_eq!(p.delay(40), Duration::from_secs(5));
    }

    #[test]
    fn spec_problems_are_reported() {
        let s = DaemonSpec::new("Bad Name")
            .mailbox(0)
            .concurrency(0)
            .prefix("data")
            .command(CommandSpec::new("x/", "bad"));
        let p = s.problems();
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(
            DaemonSpec::new("data")
                .prefix("data/")
                .problems()
                .is_empty()
        );
    }

    #[test]
    fn alias_copies_the_targets_params_and_timeout() {
        let s = DaemonSpec::new("data")
            .prefix("data/")
            .command(
                CommandSpec::new("data/list", "a page")
                    .param("collection", "string", true, "name")
                    .timeout(Duration::from_secs(3)),
            )
            .alias("data/query", "data/list");
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        let a = &s.commands[1];
        assert_eq!(a.name, "data/query");
        assert_eq!(a.description, "alias of data/list");
        assert_eq!(a.alias_of.as_deref(), Some("data/list"));
        assert_eq!(a.params, s.commands[0].params);
        assert_eq!(a.timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn alias_before_or_without_its_target_and_open_prefix_without_prefix_are_problems() {
        let s = DaemonSpec::new("d")
            .alias("d/q", "d/l")
            .command(CommandSpec::new("d/l", "x").param("c", "string", true, "c"))
            .alias("d/r", "d/none")
            .alias("d/s", "d/q")
            .open_prefix();
        let p = s.problems();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(
            p[0].contains("'d/q' of 'd/l' must be declared after it"),
            "{p:?}"
        );
        assert!(p[1].contains("does not declare"), "{p:?}");
        assert!(p[2].contains("itself an alias"), "{p:?}");
        assert_eq!(p[3], "open_prefix without a prefix");
    }
}
