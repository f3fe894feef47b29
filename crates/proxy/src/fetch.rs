//! One fetch: the address check, the pinned HTTP client, the bounded body.
//!
//! 1. [`pin`]: the target's addresses, checked. An IP literal is itself; a name is resolved
//!    once ([`Resolver`]). Every address must be public ([`classify`]) unless the allowlist
//!    names the host exactly ([`Match::Exact`]); an empty answer is `unavailable`.
//! 2. [`send`]: a reqwest client built for this fetch alone, whose resolver knows only the
//!    checked addresses (`resolve_to_addrs`) and refuses every other name ([`NoDns`]), with
//!    no proxy from the environment (a proxy would resolve the name itself), no redirects
//!    followed (a 3xx is answered as it is, its `location` made absolute; the caller decides
//!    whether to ask for it, and that fetch is checked like any other), no retries, HTTP/1.1,
//!    no cookies, no credentials, `Accept-Encoding: identity`. A DNS answer that changes
//!    between the check and the connection (rebinding) therefore cannot be used: the client
//!    never asks DNS. One client per fetch costs a TCP (and TLS) handshake per fetch, no
//!    connection is reused across fetches; the TLS configuration (the platform's roots, read
//!    from disk) is built once and shared.
//! 3. The body is read chunk by chunk and refused the moment it passes `max_bytes` (or at once
//!    when `content-length` says it will): never truncated, never buffered past the limit.
//!    `HEAD` reads no body.
//!
//! The caller bounds the whole of it (resolution, connection, answer, body) by
//! `[proxy] timeout_ms`.

use crate::address::classify;
use crate::allow::Match;
use crate::error::ProxyError;
use crate::resolve::Resolver;
use crate::target::{HostName, Target};
use daemonhost_protocol::error_chain as chain;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Response headers answered (lowercase), when the server sent them. Everything else is
/// dropped: `set-cookie` (the page would set cookies on the host's origin), security headers
/// (`content-security-policy`, `x-frame-options`, `strict-transport-security`: the listener
/// serving the path sets its own), CORS and hop-by-hop headers.
pub const FORWARDED_HEADERS: [&str; 9] = [
    "cache-control",
    "content-encoding",
    "content-language",
    "content-length",
    "content-type",
    "etag",
    "expires",
    "last-modified",
    "location",
];

/// A header value longer than this is not answered.
const MAX_HEADER_VALUE: usize = 2048;

/// The methods `proxy/fetch` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET` (the default).
    Get,
    /// `HEAD`: status and headers, no body.
    Head,
}

impl Method {
    /// `GET` or `HEAD` (ASCII case ignored); anything else is `validation`.
    pub fn parse(s: &str) -> Result<Method, ProxyError> {
        if s.eq_ignore_ascii_case("GET") {
            Ok(Method::Get)
        } else if s.eq_ignore_ascii_case("HEAD") {
            Ok(Method::Head)
        } else {
            Err(ProxyError::Method {
                method: s.chars().take(32).collect(),
            })
        }
    }

    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
        }
    }
}

/// What a fetch answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The HTTP status.
    pub status: u16,
    /// `content-type`, if sent.
    pub content_type: Option<String>,
    /// The [`FORWARDED_HEADERS`] the server sent.
    pub headers: Map<String, Value>,
    /// The body (empty for `HEAD`), at most `max_bytes`.
    pub body: Vec<u8>,
}

/// The addresses to connect to, every one checked (see the module docs).
pub(crate) async fn pin(
    target: &Target,
    how: Match,
    resolver: &Resolver,
) -> Result<Vec<SocketAddr>, ProxyError> {
    let addrs = match &target.host {
        HostName::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        HostName::Domain(_) => resolver
            .lookup(target.url_host(), target.port)
            .await
            .map_err(|e| ProxyError::Resolve {
                host: target.host.to_string(),
                reason: e.to_string(),
            })?,
    };
    if addrs.is_empty() {
        return Err(ProxyError::Resolve {
            host: target.host.to_string(),
            reason: "no address".into(),
        });
    }
    if how == Match::Wildcard
        && let Some(bad) = addrs.iter().find(|a| !classify(a.ip()).is_public())
    {
        return Err(ProxyError::NonPublicAddress {
            host: target.host.to_string(),
            addr: bad.ip(),
            class: classify(bad.ip()),
        });
    }
    Ok(addrs)
}

/// The resolver of every fetch's client: it resolves nothing. Names the proxy checked are
/// answered by reqwest's overrides before this is asked.
#[derive(Debug)]
struct NoDns;

impl reqwest::dns::Resolve for NoDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let msg = format!(
            "'{}' was not resolved and checked by the proxy, and its HTTP client resolves nothing itself",
            name.as_str()
        );
        Box::pin(std::future::ready(Err(msg.into())))
    }
}

/// The TLS configuration every fetch shares: rustls with `ring`, the platform's roots, HTTP/1.1
/// by ALPN. Reads the roots from disk: build it off the daemon's task. If the platform has no
/// roots, an empty store (every HTTPS fetch then fails verification) and the reason.
pub(crate) fn tls_config() -> Result<(rustls::ClientConfig, Option<String>), ProxyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Client {
            reason: e.to_string(),
        })?;
    let (mut config, problem) = match rustls_platform_verifier::Verifier::new(provider) {
        Ok(v) => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(v))
                .with_no_client_auth(),
            None,
        ),
        Err(e) => (
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            Some(format!(
                "no platform certificates, HTTPS fetches will fail: {e}"
            )),
        ),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, problem))
}

/// Fetch `target` from `addrs` (already checked), the body bounded by `max_bytes`.
pub(crate) async fn send(
    target: &Target,
    method: Method,
    addrs: &[SocketAddr],
    tls: &rustls::ClientConfig,
    max_bytes: usize,
    connect_timeout: Duration,
) -> Result<Fetched, ProxyError> {
    let host = || target.host.to_string();
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .dns_resolver(NoDns)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .http1_only()
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(0)
        .user_agent(concat!("daemonhost-proxy/", env!("CARGO_PKG_VERSION")));
    if let HostName::Domain(_) = target.host {
        b = b.resolve_to_addrs(target.url_host(), addrs);
    }
    let client = b
        .build()
        .map_err(|e| ProxyError::Client { reason: chain(&e) })?;
    let mut resp = client
        .request(method.as_reqwest(), target.url.clone())
        .header(reqwest::header::ACCEPT, "*/*")
        .header(reqwest::header::ACCEPT_ENCODING, "identity")
        .send()
        .await
        .map_err(|e| transport(&e, host()))?;
    let status = resp.status().as_u16();
    let headers = forwarded(target, resp.headers());
    let content_type = headers
        .get("content-type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut body = Vec::new();
    if method == Method::Get {
        if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(ProxyError::TooLarge { limit: max_bytes });
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e, host()))? {
            if body.len().saturating_add(chunk.len()) > max_bytes {
                return Err(ProxyError::TooLarge { limit: max_bytes });
            }
            body.extend_from_slice(&chunk);
        }
    }
    Ok(Fetched {
        status,
        content_type,
        headers,
        body,
    })
}

fn transport(e: &reqwest::Error, host: String) -> ProxyError {
    if e.is_connect() {
        ProxyError::Connect {
            host,
            reason: chain(e),
        }
    } else {
        ProxyError::Transport {
            host,
            reason: chain(e),
        }
    }
}

/// The [`FORWARDED_HEADERS`] of `headers`: values joined with `, ` when repeated, only visible
/// ASCII, at most [`MAX_HEADER_VALUE`] bytes; `location` made absolute against the URL.
fn forwarded(target: &Target, headers: &reqwest::header::HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in FORWARDED_HEADERS {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        let mut value = values.join(", ");
        if name == "location"
            && let Ok(abs) = target.url.join(&value)
        {
            value = abs.to_string();
        }
        if value.len() <= MAX_HEADER_VALUE {
            out.insert(name.to_owned(), Value::String(value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::StaticResolver;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn only_get_and_head_are_methods() {
        assert_eq!(Method::parse("GET"), Ok(Method::Get));
        assert_eq!(Method::parse("head"), Ok(Method::Head));
        for m in [
            "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH", "",
        ] {
            let e = Method::parse(m).expect_err(m);
            assert!(e.to_string().contains("GET or HEAD only"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_wildcard_match_refuses_a_name_with_any_non_public_address() {
        let r = Resolver::from(
            StaticResolver::new()
                .with("app.example.com", &[ip("8.8.8.8"), ip("127.0.0.1")])
                .with("v6.example.com", &[ip("::ffff:10.0.0.1")])
                .with(
                    "ok.example.com",
                    &[ip("8.8.8.8"), ip("2001:4860:4860::8888")],
                ),
        );
        let t = Target::parse("http://app.example.com/").expect("url");
        let e = pin(&t, Match::Wildcard, &r).await.expect_err("loopback");
        assert!(e.is_denied(), "{e}");
        assert!(
            e.to_string().contains("127.0.0.1") && e.to_string().contains("loopback"),
            "{e}"
        );
        // Listed exactly, the same name may reach it.
        assert_eq!(pin(&t, Match::Exact, &r).await.expect("exact").len(), 2);
        let t = Target::parse("http://v6.example.com/").expect("url");
        let e = pin(&t, Match::Wildcard, &r).await.expect_err("mapped");
        assert!(e.to_string().contains("private"), "{e}");
        let t = Target::parse("https://ok.example.com/").expect("url");
        let a = pin(&t, Match::Wildcard, &r).await.expect("public");
        assert!(a.iter().all(|a| a.port() == 443), "{a:?}");
        let t = Target::parse("https://unknown.example.com/").expect("url");
        let e = pin(&t, Match::Wildcard, &r).await.expect_err("unknown");
        assert!(matches!(e, ProxyError::Resolve { .. }), "{e}");
    }

    #[test]
    fn the_tls_configuration_builds_and_speaks_http_1_1() {
        let (c, _problem) = tls_config().expect("tls");
        assert_eq!(c.alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
