//! The `widget` daemon, the browser bridge's own commands, and the list of browser clients it
//! reports.
//!
//! - `widget/clients` → `{clients: [{id, connectedAt, remoteAddr, userAgent, origin,
//!   requests}], count, max, listen}`: the WebSocket clients connected now.
//! - `widget/console {level, message}` → the answer of `console/write {level, message, source:
//!   "widget"}`: a line the page wrote to its console goes to the host's console daemon
//!   (`crates/platform/src/console.rs`, which writes it through the logger to
//!   `console/widget`). Without a console daemon (`[platform] console = false`): `unavailable`.
//!
//! **Bounded.** A client is listed from its upgrade to the end of its connection, and only
//! while it holds one of the `[web] max_connections` permits, so the list never holds more
//! than that many entries; a user agent is cut to [`MAX_USER_AGENT_CHARS`]. Console lines are
//! bounded by the console daemon (message length) and by the connection's in-flight limit.

use daemonhost_protocol::time::{format_ms, now_ms};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, ErrorCode, Request,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest user agent kept for `widget/clients`.
pub(crate) const MAX_USER_AGENT_CHARS: usize = 256;

/// One connected browser client.
#[derive(Debug)]
struct Entry {
    connected_ms: i64,
    remote: String,
    user_agent: String,
    origin: Option<String>,
    requests: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// One entry per open WebSocket connection: at most `[web] max_connections` (each holds a
    /// permit of that bound while it is listed).
    list: BTreeMap<u64, Entry>,
    max: usize,
    listen: Option<String>,
}

/// The browser clients connected now, shared by the web listener (which adds and removes
/// them) and the `widget` daemon (which lists them).
#[derive(Debug, Default)]
pub struct Clients {
    inner: Mutex<Inner>,
}

impl Clients {
    /// Record where the listener listens and its connection bound (shown by `widget/clients`).
    pub(crate) fn set_listener(&self, listen: String, max: usize) {
        let mut g = self.inner.lock();
        g.listen = Some(listen);
        g.max = max;
    }

    /// List a new client until the returned guard is dropped.
    pub(crate) fn add(
        self: &Arc<Self>,
        remote: String,
        user_agent: &str,
        origin: Option<&str>,
    ) -> ClientGuard {
        let requests = Arc::new(AtomicU64::new(0));
        let mut g = self.inner.lock();
        g.next_id += 1;
        let id = g.next_id;
        g.list.insert(
            id,
            Entry {
                connected_ms: now_ms(),
                remote,
                user_agent: user_agent.chars().take(MAX_USER_AGENT_CHARS).collect(),
                origin: origin.map(|o| o.chars().take(MAX_USER_AGENT_CHARS).collect()),
                requests: Arc::clone(&requests),
            },
        );
        ClientGuard {
            clients: Arc::clone(self),
            id,
            requests,
        }
    }

    /// Clients connected now.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.inner.lock().list.len()
    }

    fn report(&self) -> Value {
        let g = self.inner.lock();
        let clients: Vec<Value> = g
            .list
            .iter()
            .map(|(id, e)| {
                json!({
                    "id": id,
                    "connectedAt": format_ms(e.connected_ms),
                    "remoteAddr": e.remote,
                    "userAgent": e.user_agent,
                    "origin": e.origin,
                    "requests": e.requests.load(Ordering::Relaxed),
                })
            })
            .collect();
        json!({
            "count": clients.len(),
            "clients": clients,
            "max": g.max,
            "listen": g.listen,
        })
    }
}

/// A listed client: counts its requests, and unlists it when dropped.
#[derive(Debug)]
pub(crate) struct ClientGuard {
    clients: Arc<Clients>,
    id: u64,
    /// The client's request frames so far.
    pub requests: Arc<AtomicU64>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.inner.lock().list.remove(&self.id);
    }
}

/// The `widget` daemon (wants `console`).
#[derive(Debug, Clone)]
pub struct WidgetDaemon {
    clients: Arc<Clients>,
}

impl WidgetDaemon {
    /// A widget daemon reporting `clients`.
    pub fn new(clients: Arc<Clients>) -> Self {
        WidgetDaemon { clients }
    }
}

impl Daemon for WidgetDaemon {
    type State = ();

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("widget")
            .wants("console")
            .command(CommandSpec::new(
                "widget/clients",
                "The browser clients connected over the WebSocket: id, connectedAt, remoteAddr, userAgent, origin, requests",
            ))
            .command(
                CommandSpec::new(
                    "widget/console",
                    "Write one line of the page's console to the console daemon (source widget)",
                )
                .param("level", "string", true, "log | info | debug | warn | error")
                .param("message", "string", true, "the line"),
            )
    }

    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn handle(&self, ctx: &Context, _: &(), req: Request) -> Result<Value, DaemonError> {
        match req.command.as_str() {
            "widget/clients" => Ok(self.clients.report()),
            "widget/console" => {
                let p = daemonhost_protocol::Params::new(req.params)?;
                let line = json!({
                    "level": p.str("level")?,
                    "message": p.str("message")?,
                    "source": "widget",
                });
                match ctx.router().ask("console/write", line).await {
                    Err(e) if e.code == ErrorCode::UnknownCommand => Err(DaemonError::unavailable(
                        "no console daemon runs on this host ([platform] console = false)",
                    )),
                    other => other,
                }
            }
            other => Err(DaemonError::unknown_command(format!(
                "widget daemon has no command '{}'",
                other.chars().take(128).collect::<String>()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_listed_while_its_guard_lives_and_its_user_agent_is_cut() {
        let clients = Arc::new(Clients::default());
        clients.set_listener("127.0.0.1:9000".into(), 2);
        let ua = "x".repeat(1000);
        let a = clients.add("127.0.0.1:5000".into(), &ua, Some("http://127.0.0.1:9000"));
        let b = clients.add("127.0.0.1:5001".into(), "curl", None);
        a.requests.fetch_add(3, Ordering::Relaxed);
        let r = clients.report();
        assert_eq!(r["count"], 2);
        assert_eq!(r["max"], 2);
        assert_eq!(r["clients"][0]["requests"], 3);
        assert_eq!(
            r["clients"][0]["userAgent"].as_str().map(str::len),
            Some(MAX_USER_AGENT_CHARS)
        );
        assert_eq!(r["clients"][1]["remoteAddr"], "127.0.0.1:5001");
        drop(a);
        assert_eq!(clients.count(), 1);
        drop(b);
        assert_eq!(clients.report()["clients"], json!([]));
    }
}
