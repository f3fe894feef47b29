//! Who may talk to the web bridge (ADR 0008, docs/PROTOCOL.md "WebSocket transport"):
//!
//! - **The token.** One per data dir, `DIR/web.token` (mode 0600, created once with 32 random
//!   bytes as 64 hex characters, then reused). Every endpoint but `/healthz` needs it, as
//!   `?token=`, as the cookie the server sets on the first request that presented it another
//!   way (`dh_token_PORT`: cookies are per host name, not per port, so two hosts on one machine
//!   must not share a name; `HttpOnly`, `SameSite=Strict`, `Path=/`), or as
//!   `Authorization: Bearer`. Missing or wrong: `401`. Compared in constant time.
//! - **The `Host` header** must name this listener: its address, or a loopback name
//!   (`localhost`, `127.0.0.1`, `[::1]`) with its port, or one of `[web] allowed_hosts`. Else
//!   `403`, on every endpoint: a page of another site whose name was rebound to 127.0.0.1 (DNS
//!   rebinding) sends its own name, so it never reaches anything.
//! - **The `Origin` of a WebSocket upgrade**, when present, must be the page's own origin
//!   (`http://` or `https://` + the `Host` it was sent to). Else `403`: another site's page
//!   cannot open a WebSocket here even if the browser would send the cookie. Clients that are
//!   not browsers send no `Origin`; they still need the token.

use anyhow::{Context as _, bail};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, Uri};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The token's file name inside the data dir.
pub(crate) const TOKEN_FILE: &str = "web.token";
/// Random bytes in a new token (written as twice as many hex characters).
const TOKEN_BYTES: usize = 32;
/// The shortest token accepted from an existing file.
pub(crate) const MIN_TOKEN_CHARS: usize = 32;

/// The data dir's web token.
#[derive(Clone)]
pub(crate) struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)") // never logged
    }
}

impl Token {
    /// `DIR/web.token`: read if it exists (and set to mode 0600 if it was not), else created
    /// with a new random token. A file whose token is shorter than [`MIN_TOKEN_CHARS`] or holds
    /// characters other than `A-Z a-z 0-9 - _ .` is an error naming it, not silently replaced:
    /// someone wrote it.
    pub(crate) fn load_or_create(dir: &Path) -> anyhow::Result<Token> {
        let path = dir.join(TOKEN_FILE);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                let token = random_hex(TOKEN_BYTES)
                    .context("cannot read random bytes for the web token")?;
                f.write_all(format!("{token}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                return Ok(Token(token));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("cannot inspect {}", path.display()))?;
        if meta.permissions().mode() & 0o777 != 0o600 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
        }
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(4096).read_to_string(&mut text))
            .with_context(|| format!("cannot read {}", path.display()))?;
        let token = text.trim();
        if token.len() < MIN_TOKEN_CHARS
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            bail!(
                "{} must hold one token of at least {MIN_TOKEN_CHARS} characters of A-Z a-z 0-9 - _ . (delete it and a new one is made)",
                path.display()
            );
        }
        Ok(Token(token.to_owned()))
    }

    /// The token's text (for the URL in `web.url`).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the token, in time independent of where they differ.
    pub(crate) fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// `n` bytes from the kernel's random source, as hex.
fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// How a request presented the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented {
    /// `?token=` in the URL.
    Query,
    /// The cookie set earlier.
    Cookie,
    /// `Authorization: Bearer`.
    Bearer,
}

/// Whether the request carries the right token, and how (the first way that matches).
pub(crate) fn check(
    token: &Token,
    cookie: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Presented> {
    if let Some(q) = uri.query()
        && q.split('&')
            .filter_map(|kv| kv.strip_prefix("token="))
            .any(|v| token.matches(v))
    {
        return Some(Presented::Query);
    }
    let cookies = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'));
    for c in cookies {
        if let Some((name, value)) = c.trim().split_once('=')
            && name == cookie
            && token.matches(value)
        {
            return Some(Presented::Cookie);
        }
    }
    let bearer = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .any(|v| token.matches(v));
    bearer.then_some(Presented::Bearer)
}

/// The cookie's name for a listener on `port`.
pub(crate) fn cookie_name(port: u16) -> String {
    format!("dh_token_{port}")
}

/// The `Set-Cookie` value that carries the token from now on.
pub(crate) fn set_cookie(name: &str, token: &Token) -> String {
    format!(
        "{name}={}; Path=/; HttpOnly; SameSite=Strict",
        token.as_str()
    )
}

/// Which `Host` headers name this listener.
#[derive(Debug, Clone)]
pub(crate) struct HostRule {
    port: u16,
    /// Host names (lower case, IPv6 in brackets) accepted with this listener's port.
    names: Vec<String>,
    /// `[web] allowed_hosts` entries without a port: accepted with any port.
    any_port: Vec<String>,
    /// `[web] allowed_hosts` entries with a port: accepted as they are.
    exact: Vec<String>,
}

impl HostRule {
    /// The rule for a listener bound to `addr`, with the configured extra names.
    pub(crate) fn new(addr: SocketAddr, allowed: &[String]) -> HostRule {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let ip = addr.ip();
        if !ip.is_unspecified() {
            let own = match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            };
            if !names.contains(&own) {
                names.push(own);
            }
        }
        let (mut any_port, mut exact) = (Vec::new(), Vec::new());
        for a in allowed {
            let a = a.trim().to_ascii_lowercase();
            match split_host_port(&a) {
                Some((_, Some(_))) => exact.push(a),
                Some((name, None)) => any_port.push(name.to_owned()),
                None => {}
            }
        }
        HostRule {
            port: addr.port(),
            names,
            any_port,
            exact,
        }
    }

    /// Whether a request whose `Host` header is `host` was meant for this listener.
    pub(crate) fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return false;
        };
        let host = host.trim().to_ascii_lowercase();
        if self.exact.contains(&host) {
            return true;
        }
        let Some((name, port)) = split_host_port(&host) else {
            return false;
        };
        if self.any_port.iter().any(|n| n == name) {
            return true;
        }
        // A browser leaves out the port only when it is the scheme's default.
        let port_ok = match port {
            Some(p) => p == self.port,
            None => self.port == 80,
        };
        port_ok && self.names.iter().any(|n| n == name)
    }
}

/// `name[:port]` or `[v6][:port]`; `None` when malformed.
fn split_host_port(host: &str) -> Option<(&str, Option<u16>)> {
    if host.is_empty() {
        return None;
    }
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        match rest {
            "" => (name, None),
            r => (name, Some(r.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty() || name.contains(['/', '@', ' ']) {
        return None;
    }
    match port {
        None => Some((name, None)),
        Some(p) => Some((name, Some(p.parse().ok()?))),
    }
}

/// Whether a WebSocket upgrade's `Origin` (if any) is the page's own origin: the scheme and the
/// `Host` the request was sent to.
pub(crate) fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true; // not a browser: the token is the guard
    };
    let Some(host) = host else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    let host = host.trim().to_ascii_lowercase();
    ["http://", "https://"]
        .iter()
        .any(|scheme| origin.strip_prefix(scheme) == Some(host.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn rule() -> HostRule {
        HostRule::new(
            "127.0.0.1:9000".parse().expect("addr"),
            &["dh.example.org".into(), "proxy.local:8443".into()],
        )
    }

    #[test]
    fn host_rule_accepts_the_listen_address_and_loopback_names_with_its_port_only() {
        let r = rule();
        for ok in [
            "127.0.0.1:9000",
            "localhost:9000",
            "LOCALHOST:9000",
            "[::1]:9000",
            "dh.example.org",
            "dh.example.org:443",
            "proxy.local:8443",
        ] {
            assert!(r.allows(Some(ok)), "{ok}");
        }
        for refused in [
            "evil.example:9000",
            "127.0.0.1:9001",
            "localhost",
            "127.0.0.1",
            "proxy.local",
            "proxy.local:9000",
            "127.0.0.1:9000@evil",
            "",
            "[::1",
            "localhost:notaport",
        ] {
            assert!(!r.allows(Some(refused)), "{refused}");
        }
        assert!(!r.allows(None), "no Host header");
        let v6 = HostRule::new("[::1]:80".parse().expect("addr"), &[]);
        assert!(v6.allows(Some("[::1]")), "port 80 may be left out");
        let any = HostRule::new("0.0.0.0:9000".parse().expect("addr"), &[]);
        assert!(!any.allows(Some("0.0.0.0:9000")), "not a name to browse to");
        assert!(any.allows(Some("localhost:9000")));
    }

    #[test]
    fn same_origin_is_the_scheme_and_the_host_the_request_was_sent_to() {
        let host = Some("127.0.0.1:9000");
        assert!(same_origin(None, host), "no Origin: not a browser");
        assert!(same_origin(Some("http://127.0.0.1:9000"), host));
        assert!(same_origin(Some("https://127.0.0.1:9000"), host));
        for other in [
            "http://evil.example",
            "http://127.0.0.1:9001",
            "http://localhost:9000",
            "null",
            "http://127.0.0.1:9000.evil",
        ] {
            assert!(!same_origin(Some(other), host), "{other}");
        }
        assert!(!same_origin(Some("http://127.0.0.1:9000"), None));
    }

    #[test]
    fn the_token_is_accepted_from_the_query_the_cookie_or_a_bearer_header_only_when_equal() {
        let t = Token("a".repeat(64));
        let name = cookie_name(9000);
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        let none = HeaderMap::new();
        let good = format!("/?x=1&token={}", "a".repeat(64));
        assert_eq!(check(&t, &name, &uri(&good), &none), Some(Presented::Query));
        assert_eq!(check(&t, &name, &uri("/?token=aaa"), &none), None);
        assert_eq!(check(&t, &name, &uri("/"), &none), None);
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {name}={}", "a".repeat(64))).expect("hv"),
        );
        assert_eq!(check(&t, &name, &uri("/"), &h), Some(Presented::Cookie));
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("dh_token_9001={}", "a".repeat(64))).expect("hv"),
        );
        assert_eq!(
            check(&t, &name, &uri("/"), &h),
            None,
            "another port's cookie"
        );
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", "a".repeat(64))).expect("hv"),
        );
        assert_eq!(check(&t, &name, &uri("/"), &h), Some(Presented::Bearer));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert_eq!(check(&t, &name, &uri("/"), &h), None);
        assert!(!t.matches(&"a".repeat(63)));
        assert!(format!("{t:?}").contains('…'), "never printed");
    }

    #[test]
    fn a_token_file_is_created_once_with_mode_0600_and_reused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let first = Token::load_or_create(tmp.path()).expect("create");
        assert!(first.as_str().len() >= MIN_TOKEN_CHARS);
        let path = tmp.path().join(TOKEN_FILE);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Token::load_or_create(tmp.path()).expect("reuse");
        assert_eq!(first.as_str(), again.as_str());
        std::fs::write(&path, "short\n").expect("write");
        let e = Token::load_or_create(tmp.path()).expect_err("too short");
        assert!(format!("{e:#}").contains(TOKEN_FILE), "{e:#}");
    }
}
