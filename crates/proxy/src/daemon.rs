//! The `proxy` daemon: `proxy/fetch`, `proxy/url`, `proxy/status`.

use crate::allow::Allowlist;
use crate::config::{MAX_CONCURRENT_LIMIT, ProxyConfig};
use crate::error::ProxyError;
use crate::fetch::{self, Fetched, Method};
use crate::path::encode_path;
use crate::resolve::Resolver;
use crate::target::Target;
use base64::Engine as _;
use daemonhost_protocol::params::Params;
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request, Semaphore,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the command deadline of `proxy/fetch` adds to `[proxy] timeout_ms`, so the proxy's own
/// `timeout` (naming the host and the key) answers before the router's.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// The `proxy` daemon.
#[derive(Debug, Clone)]
pub struct ProxyDaemon {
    cfg: ProxyConfig,
    resolver: Resolver,
}

impl ProxyDaemon {
    /// A proxy with these settings, resolving through the system.
    pub fn new(cfg: ProxyConfig) -> Self {
        ProxyDaemon {
            cfg,
            resolver: Resolver::System,
        }
    }

    /// Resolve names through `resolver` instead of the system (tests).
    pub fn with_resolver(mut self, resolver: impl Into<Resolver>) -> Self {
        self.resolver = resolver.into();
        self
    }

    fn max_concurrent(&self) -> usize {
        self.cfg.max_concurrent.clamp(1, MAX_CONCURRENT_LIMIT)
    }
}

#[derive(Debug, Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    failed: AtomicU64,
    answered: AtomicU64,
    busy: AtomicU64,
    bytes: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The shared TLS configuration, once built, and what went wrong building it.
type Tls = (Arc<rustls::ClientConfig>, Option<String>);

/// The daemon's state.
#[derive(Debug)]
pub struct ProxyState {
    allow: Allowlist,
    permits: Semaphore,
    tls: tokio::sync::OnceCell<Tls>,
    counters: Counters,
}

impl ProxyDaemon {
    fn status(&self, s: &ProxyState) -> Value {
        let c = &s.counters;
        json!({
            "allowed": read(&c.allowed),
            "denied": read(&c.denied),
            "failed": read(&c.failed),
            "answered": read(&c.answered),
            "busy": read(&c.busy),
            "bytes": read(&c.bytes),
            "inFlight": s.permits.in_use(),
            "maxConcurrent": s.permits.capacity(),
            "maxBytes": self.cfg.max_bytes,
            "timeoutMs": u64::try_from(self.cfg.timeout.as_millis()).unwrap_or(u64::MAX),
            "allow": s.allow.entries(),
            "tls": match s.tls.get() {
                None => "not loaded".to_owned(),
                Some((_, None)) => "platform roots".to_owned(),
                Some((_, Some(problem))) => problem.clone(),
            },
        })
    }

    async fn tls<'a>(&self, ctx: &Context, s: &'a ProxyState) -> Result<&'a Tls, ProxyError> {
        s.tls
            .get_or_try_init(|| async {
                let (config, problem) =
                    ctx.spawn_cpu(fetch::tls_config)
                        .await
                        .map_err(|e| ProxyError::Client {
                            reason: e.to_string(),
                        })??;
                if let Some(p) = &problem {
                    tracing::warn!(daemon = "proxy", problem = %p, "TLS without roots");
                }
                Ok((Arc::new(config), problem))
            })
            .await
    }

    /// Everything after the allowlist, bounded by `[proxy] timeout_ms`.
    async fn fetch(
        &self,
        ctx: &Context,
        s: &ProxyState,
        target: &Target,
        how: crate::Match,
        method: Method,
    ) -> Result<Fetched, ProxyError> {
        let work = async {
            let (tls, _) = self.tls(ctx, s).await?;
            let addrs = fetch::pin(target, how, &self.resolver).await?;
            bump(&s.counters.allowed, 1);
            fetch::send(
                target,
                method,
                &addrs,
                tls,
                self.cfg.max_bytes,
                self.cfg.timeout,
            )
            .await
        };
        match tokio::time::timeout(self.cfg.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::Timeout {
                host: target.host.to_string(),
                after_ms: u64::try_from(self.cfg.timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    async fn handle_fetch(
        &self,
        ctx: &Context,
        s: &ProxyState,
        url: &str,
        method: Option<&str>,
    ) -> Result<Value, ProxyError> {
        let method = method.map_or(Ok(Method::Get), Method::parse)?;
        let target = Target::parse(url)?;
        let how = s.allow.require(&target).inspect_err(|_| {
            bump(&s.counters.denied, 1);
        })?;
        let Ok(_permit) = s.permits.try_acquire() else {
            bump(&s.counters.busy, 1);
            return Err(ProxyError::Busy {
                max: s.permits.capacity(),
            });
        };
        let fetched = self.fetch(ctx, s, &target, how, method).await;
        ctx.set_details(self.status(s));
        let f = fetched.inspect_err(|e| {
            bump(
                if e.is_denied() {
                    &s.counters.denied
                } else {
                    &s.counters.failed
                },
                1,
            );
        })?;
        bump(&s.counters.answered, 1);
        bump(&s.counters.bytes, f.body.len() as u64);
        Ok(json!({
            "url": target.url.as_str(),
            "status": f.status,
            "contentType": f.content_type,
            "headers": f.headers,
            "bytes": f.body.len(),
            "body": base64::engine::general_purpose::STANDARD.encode(&f.body),
            "truncated": false,
        }))
    }
}

impl Daemon for ProxyDaemon {
    type State = ProxyState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("proxy")
            // More handlers than permits: a fetch past `max_concurrent` is answered
            // `overloaded` at once instead of waiting in the mailbox, and status answers
            // while every permit is taken.
            .concurrency(self.max_concurrent().saturating_add(16))
            .command(
                CommandSpec::new(
                    "proxy/fetch",
                    "Fetch an allowed http(s) URL: {url, status, contentType, headers, body (base64), bytes, truncated}",
                )
                .param(
                    "url",
                    "string",
                    true,
                    "absolute http or https URL whose host is in [proxy] allow",
                )
                .param("method", "string", false, "GET (default) or HEAD")
                .timeout(self.cfg.timeout.saturating_add(DEADLINE_MARGIN)),
            )
            .command(
                CommandSpec::new(
                    "proxy/url",
                    "The same-origin path of a URL: {path: \"/proxy/<percent-encoded-url>\", allowed}",
                )
                .param("url", "string", true, "absolute http or https URL"),
            )
            .command(CommandSpec::new(
                "proxy/status",
                "Fetches allowed, denied, failed, answered, busy; bytes answered; the limits and the allowlist",
            ))
    }

    async fn start(&self, ctx: &Context) -> Result<ProxyState, BoxError> {
        let allow = Allowlist::parse(&self.cfg.allow)
            .map_err(|e| -> BoxError { format!("[proxy] allow: {e}").into() })?;
        let state = ProxyState {
            allow,
            permits: Semaphore::new(self.max_concurrent()),
            tls: tokio::sync::OnceCell::new(),
            counters: Counters::default(),
        };
        ctx.set_details(self.status(&state));
        Ok(state)
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &ProxyState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let p = Params::new(req.params)?;
        match req.command.as_str() {
            "proxy/fetch" => {
                let (url, method) = (p.str("url")?, p.opt_str("method")?);
                Ok(self.handle_fetch(ctx, state, url, method).await?)
            }
            "proxy/url" => {
                let t = Target::parse(p.str("url")?)?;
                let mut path = encode_path(t.url.as_str());
                if let Some(f) = &t.fragment {
                    path.push('#');
                    path.push_str(f);
                }
                Ok(json!({"path": path, "allowed": state.allow.check(&t).is_some()}))
            }
            "proxy/status" => Ok(self.status(state)),
            other => Err(DaemonError::unknown_command(format!(
                "the proxy daemon does not serve '{other}'"
            ))),
        }
    }
}
