//! The `console` daemon: clients ship their console lines into the logger.
//!
//! The seed patched `console.*` in the browser, buffered ≤ 1000 entries and drained them every
//! 500 ms to a server side that wrote files itself. Here the client does the buffering and sends
//! a batch; this daemon validates it and forwards it to the `logger` daemon as **one
//! `log/write-batch` per source** (category `console/<source>`, component `console`), so lines go
//! through the logger's bounded queue, rate limit and per-category files like every other log
//! line. The logger's answer (`overloaded` when its queue is full) is passed back to the client,
//! so a dropped batch is never silent.
//!
//! - `console/write {level, message, source?, args?}` → the logger's answer
//! - `console/write-batch {entries: [{level, message, source?, args?}] (≤ max_batch), source?}` →
//!   `{forwarded, batches, results}`
//!
//! `level`: `log` | `info` | `debug` | `warn` | `warning` | `error` (`log` is written as `info`).
//! `source`: `[A-Za-z0-9_-]{1,64}`, default `client`.

use crate::util::{ParamError, ParamType, Params, params_of, short};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Settings of the [`ConsoleDaemon`].
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Most entries in one `console/write-batch`.
    pub max_batch: usize,
    /// Longest message, in characters.
    pub max_message_chars: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            max_batch: 1000,
            max_message_chars: 16_384,
        }
    }
}

/// The console daemon (name `console`, requires `logger`).
#[derive(Debug, Clone)]
pub struct ConsoleDaemon {
    cfg: ConsoleConfig,
}

impl ConsoleDaemon {
    /// A console daemon.
    pub fn new(cfg: ConsoleConfig) -> Self {
        ConsoleDaemon { cfg }
    }
}

/// The running console daemon's counters.
#[derive(Debug, Default)]
pub struct ConsoleState {
    lines: AtomicU64,
    rejected: AtomicU64,
}

fn level(p: &Params) -> Result<&'static str, ParamError> {
    let Some(s) = p.opt_str("level")? else {
        return Ok("info");
    };
    Ok(match s.to_ascii_lowercase().as_str() {
        "log" | "info" => "info",
        "debug" | "trace" => "debug",
        "warn" | "warning" => "warn",
        "error" => "error",
        _ => {
            return Err(ParamError::invalid(
                "level",
                format!(
                    "must be log, info, debug, warn or error (got '{}')",
                    short(s)
                ),
            ));
        }
    })
}

fn source(p: &Params, default: &str) -> Result<String, ParamError> {
    let Some(s) = p.opt_str("source")? else {
        return Ok(default.to_owned());
    };
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ParamError::invalid(
            "source",
            format!("1-64 characters of A-Z a-z 0-9 - _ (got '{}')", short(s)),
        ));
    }
    Ok(s.to_owned())
}

impl ConsoleDaemon {
    /// One entry as (source, logger entry).
    fn entry(&self, p: &Params, default_source: &str) -> Result<(String, Value), ParamError> {
        let message = p.str("message")?;
        if message.chars().count() > self.cfg.max_message_chars {
            return Err(ParamError::invalid(
                "message",
                format!("at most {} characters", self.cfg.max_message_chars),
            ));
        }
        let mut out = json!({ "level": level(p)?, "message": message });
        if let Some(a) = p.get("args") {
            out["args"] = a.clone();
        }
        Ok((source(p, default_source)?, out))
    }

    /// Entry `i` of a batch; its errors name it (`entries[3].message: required`).
    fn batch_entry(
        &self,
        i: usize,
        e: Value,
        default_source: &str,
    ) -> Result<(String, Value), ParamError> {
        let at = format!("entries[{i}]");
        match e {
            Value::Object(m) => self
                .entry(&Params::from(m), default_source)
                .map_err(|e| e.within(&at)),
            _ => Err(ParamError::wrong_type(at, ParamType::Object)),
        }
    }

    async fn forward(
        &self,
        ctx: &Context,
        state: &ConsoleState,
        entries: Vec<(String, Value)>,
    ) -> Result<Value, DaemonError> {
        let n = entries.len() as u64;
        let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (s, e) in entries {
            groups.entry(s).or_default().push(e);
        }
        let batches = groups.len();
        let mut results = Vec::with_capacity(batches);
        for (src, entries) in groups {
            let r = ctx
                .router()
                .ask(
                    "log/write-batch",
                    json!({ "category": format!("console/{src}"), "component": "console", "entries": entries }),
                )
                .await;
            match r {
                Ok(v) => results.push(json!({ "source": src, "result": v })),
                Err(e) => {
                    state.rejected.fetch_add(n, Ordering::Relaxed);
                    return Err(DaemonError::new(
                        e.code,
                        format!("logger refused console/{src}: {}", e.message),
                    ));
                }
            }
        }
        state.lines.fetch_add(n, Ordering::Relaxed);
        ctx.set_details(json!({
            "lines": state.lines.load(Ordering::Relaxed),
            "rejected": state.rejected.load(Ordering::Relaxed),
        }));
        Ok(json!({ "forwarded": n, "batches": batches, "results": results }))
    }
}

impl Daemon for ConsoleDaemon {
    type State = ConsoleState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("console")
            .requires("logger")
            .command(
                CommandSpec::new(
                    "console/write",
                    "Write one client console line to the logger (console/<source>)",
                )
                .param("level", "string", true, "log | info | debug | warn | error")
                .param("message", "string", true, "the line")
                .param(
                    "source",
                    "string",
                    false,
                    "client name, [A-Za-z0-9_-]{1,64} (default client)",
                )
                .param(
                    "args",
                    "array",
                    false,
                    "extra console arguments (written as JSON)",
                ),
            )
            .command(
                CommandSpec::new(
                    "console/write-batch",
                    "Write many client console lines to the logger",
                )
                .param(
                    "entries",
                    "array",
                    true,
                    "[{level, message, source?, args?}]",
                )
                .param(
                    "source",
                    "string",
                    false,
                    "default source for entries without one",
                ),
            )
    }

    async fn start(&self, _ctx: &Context) -> Result<ConsoleState, BoxError> {
        Ok(ConsoleState::default())
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &ConsoleState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        match req.command.as_str() {
            "console/write" => {
                let p = params_of(req.params)?;
                let one = self.entry(&p, "client")?;
                self.forward(ctx, state, vec![one]).await
            }
            "console/write-batch" => {
                let mut p = params_of(req.params)?;
                let default = source(&p, "client")?;
                let list = p.array("entries")?;
                if list.is_empty() || list.len() > self.cfg.max_batch {
                    return Err(DaemonError::validation(format!(
                        "entries: 1 to {} entries (got {})",
                        self.cfg.max_batch,
                        list.len()
                    )));
                }
                let entries = list
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| self.batch_entry(i, e, &default))
                    .collect::<Result<Vec<_>, _>>()?;
                self.forward(ctx, state, entries).await
            }
            other => Err(DaemonError::unknown_command(format!(
                "console daemon has no command '{}'",
                short(other)
            ))),
        }
    }
}
