//! The browser bridge: an HTTP + WebSocket listener in the host (axum, on the host's own tokio
//! runtime; ADR 0008).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | `[web]` options, binding, `web.url`, the router ([`router`]) and its guard, serving |
//! | `auth.rs` | the token (`DIR/web.token`), the `Host` rule, the WebSocket `Origin` rule |
//! | `ws.rs` | `/ws`: the socket protocol over a WebSocket, through the server's one core |
//! | `assets.rs` | the embedded files (`crates/cli/assets/`): a table of path → (type, bytes) |
//! | `widget.rs` | the `widget` daemon (`widget/clients`, `widget/console`) and the client list |
//!
//! Endpoints: `/ws` (WebSocket), `/healthz` (`ok`, no token), every path of the assets table,
//! and whatever router the host merges in ([`router`]'s `extra`). Every one of them passes the
//! guard first: the `Host` header must name this listener (else `403`), and all but `/healthz`
//! need the token (else `401`); see `auth.rs`.
//!
//! Startup (`host.rs`): [`bind`] right after the socket (a failure is a startup error naming the
//! address; nothing falls back to another port), then [`write_url_file`] writes `DIR/web.url`
//! (mode 0600) with `http://ADDR/?token=…`, which the startup summary prints too. Shutdown is
//! the server's: the listener stops accepting at `begin_shutdown` (axum's graceful shutdown),
//! WebSocket connections drain and close with the socket's.

pub(crate) mod assets;
pub(crate) mod auth;
pub(crate) mod routes;
pub(crate) mod widget;
mod ws;

pub use widget::{Clients, WidgetDaemon};

use crate::server::Core;
use anyhow::Context as _;
use auth::{HostRule, Presented, Token};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{HOST, SET_COOKIE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The URL file's name inside the data dir.
pub const URL_FILE: &str = "web.url";

/// What the listener is configured with (`[web]`, `run --web-listen`).
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// WebSocket connections open at once.
    pub max_connections: usize,
    /// Requests in flight per WebSocket connection.
    pub max_inflight: usize,
    /// Extra names accepted in the `Host` header.
    pub allowed_hosts: Vec<String>,
}

/// A bound listener, not serving yet.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    /// The address really bound (the port chosen, for port 0).
    pub addr: SocketAddr,
}

/// Bind `addr`. The error names the address and where it came from.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<Bound> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for the web bridge on {addr} ([web] listen, or run --web-listen ADDR; `off` disables it)")
    })?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {addr}"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "The web bridge listens beyond loopback, without TLS: put a TLS reverse proxy in front of it (docs/PROTOCOL.md)"
        );
    }
    Ok(Bound { listener, addr })
}

/// The URL a browser opens: the listener's address (loopback for an unspecified one) and the
/// token.
pub fn url(addr: SocketAddr, token: &Token) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/?token={}",
        SocketAddr::new(ip, addr.port()),
        token.as_str()
    )
}

/// Write `DIR/web.url` (mode 0600: it holds the token) atomically: a reader sees the old
/// file or the whole new one.
pub fn write_url_file(dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(URL_FILE);
    let tmp = dir.join(format!("{URL_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(format!("{url}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(path)
}

/// What every request handler shares.
pub(crate) struct WebState {
    core: Arc<Core>,
    token: Token,
    hosts: HostRule,
    cookie: String,
    ws_permits: Arc<Semaphore>,
    max_connections: usize,
    max_inflight: usize,
    clients: Arc<Clients>,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("hosts", &self.hosts)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// The whole HTTP surface: `/ws`, `/healthz`, the assets, and `extra`, all behind the guard.
///
/// **The hook for more endpoints** (e.g. `/metrics`): `extra` is any `axum::Router` with its
/// state already applied (`Router<()>`), merged in before the guard is layered on, so its
/// routes need the token and a right `Host` like every other. It must not set a fallback (the
/// assets are the fallback) nor use a path taken here (`/ws`, `/healthz`, an asset's path):
/// axum panics at startup on either, so a clash cannot go unnoticed.
pub(crate) fn router(state: Arc<WebState>, extra: Option<Router>) -> Router {
    let mut app = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/healthz", get(healthz))
        .fallback(assets::serve)
        .with_state(Arc::clone(&state));
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    app.layer(axum::middleware::from_fn_with_state(state, guard))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Before every handler: the `Host` rule, then the token (except for `/healthz`); a request
/// that presented the token other than by cookie gets the cookie with its answer.
async fn guard(State(st): State<Arc<WebState>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(HOST).and_then(|v| v.to_str().ok());
    if !st.hosts.allows(host) {
        tracing::debug!(?host, "Refused a request for another host name");
        return (
            StatusCode::FORBIDDEN,
            "this host answers only requests addressed to its own address or a loopback name (Host header; [web] allowed_hosts adds names)\n",
        )
            .into_response();
    }
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    match auth::check(&st.token, &st.cookie, req.uri(), req.headers()) {
        None => (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "missing or wrong token: open the URL in the data dir's web.url (or send ?token=, the cookie, or Authorization: Bearer)\n",
        )
            .into_response(),
        Some(Presented::Cookie) => next.run(req).await,
        Some(Presented::Query | Presented::Bearer) => {
            let mut resp = next.run(req).await;
            if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(&st.cookie, &st.token)) {
                resp.headers_mut().append(SET_COOKIE, v);
            }
            resp
        }
    }
}

/// Serve `bound` until the server's shutdown: every connection task joins the core's tracker,
/// so the host's drain and close cover them. `extra`: see [`router`].
pub(crate) fn spawn(
    bound: Bound,
    core: Arc<Core>,
    token: Token,
    opts: &WebOptions,
    clients: Arc<Clients>,
    extra: Option<Router>,
) {
    let max = opts.max_connections.max(1);
    clients.set_listener(bound.addr.to_string(), max);
    let state = Arc::new(WebState {
        hosts: HostRule::new(bound.addr, &opts.allowed_hosts),
        cookie: auth::cookie_name(bound.addr.port()),
        token,
        ws_permits: Arc::new(Semaphore::new(max)),
        max_connections: max,
        max_inflight: opts.max_inflight.max(1),
        clients,
        core: Arc::clone(&core),
    });
    let app = router(state, extra).into_make_service_with_connect_info::<SocketAddr>();
    let stop = core.shutdown.clone();
    let addr = bound.addr;
    core.tracker.spawn(async move {
        let served = axum::serve(bound.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        match served {
            Ok(()) => tracing::debug!(%addr, "The web bridge stopped accepting"),
            Err(e) => tracing::warn!(%addr, error = %e, "The web bridge failed"),
        }
    });
}
