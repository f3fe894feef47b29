//! A URL the proxy is asked to fetch, parsed once and checked for shape: absolute, `http` or
//! `https`, a host, no credentials, at most [`MAX_URL_BYTES`].
//!
//! Parsing is the WHATWG URL parser's (the `url` crate, as browsers parse): host names are
//! lowercased and IDNA-encoded, and the numeric forms of an IPv4 address (`http://2130706433/`,
//! `http://0x7f.1/`) become the address itself, so no spelling of a host gets past the
//! allowlist or the address check as something else. The fragment is dropped (it is never sent).

use crate::error::ProxyError;
use std::fmt;
use std::net::IpAddr;
use url::{Host, Url};

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 8192;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `Some` for `http` / `https` (ASCII case ignored).
    pub fn parse(s: &str) -> Option<Scheme> {
        if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }

    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A host as the URL parser normalised it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostName {
    /// A DNS name, lowercase, IDNA-encoded, without a trailing dot.
    Domain(String),
    /// An IP address literal.
    Ip(IpAddr),
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostName::Domain(d) => f.write_str(d),
            HostName::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            HostName::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

impl HostName {
    /// The host of a parsed URL; `None` when it has none.
    pub(crate) fn of(url: &Url) -> Option<HostName> {
        Some(match url.host()? {
            Host::Domain(d) => HostName::Domain(d.trim_end_matches('.').to_owned()),
            Host::Ipv4(a) => HostName::Ip(IpAddr::V4(a)),
            Host::Ipv6(a) => HostName::Ip(IpAddr::V6(a)),
        })
    }
}

/// A URL accepted for fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL, normalised, without its fragment.
    pub url: Url,
    /// Its scheme.
    pub scheme: Scheme,
    /// Its host.
    pub host: HostName,
    /// Its port, explicit or the scheme's default.
    pub port: u16,
    /// The fragment that was dropped, if any.
    pub fragment: Option<String>,
}

impl Target {
    /// Parse and check `raw`.
    pub fn parse(raw: &str) -> Result<Target, ProxyError> {
        if raw.len() > MAX_URL_BYTES {
            return Err(ProxyError::UrlTooLong {
                len: raw.len(),
                max: MAX_URL_BYTES,
            });
        }
        let mut url = Url::parse(raw).map_err(|e| ProxyError::InvalidUrl {
            reason: e.to_string(),
        })?;
        let scheme = Scheme::parse(url.scheme()).ok_or_else(|| ProxyError::Scheme {
            scheme: url.scheme().to_owned(),
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ProxyError::Credentials);
        }
        let host = HostName::of(&url).ok_or_else(|| ProxyError::InvalidUrl {
            reason: "no host".into(),
        })?;
        if matches!(&host, HostName::Domain(d) if d.is_empty()) {
            return Err(ProxyError::InvalidUrl {
                reason: "empty host".into(),
            });
        }
        let port = url.port().unwrap_or(scheme.default_port());
        let fragment = url.fragment().map(str::to_owned);
        url.set_fragment(None);
        // Normalising escapes what it must (a space becomes `%20`): bound what is fetched too.
        if url.as_str().len() > MAX_URL_BYTES {
            return Err(ProxyError::UrlTooLong {
                len: url.as_str().len(),
                max: MAX_URL_BYTES,
            });
        }
        Ok(Target {
            url,
            scheme,
            host,
            port,
            fragment,
        })
    }

    /// The host as the URL spells it, for DNS and for reqwest's resolution override
    /// (a trailing dot kept, IPv6 in brackets).
    pub(crate) fn url_host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_host_is_normalised_before_it_is_checked() {
        for (raw, host, port) in [
            ("http://EXAMPLE.com/x", "example.com", 80),
            ("https://example.com./", "example.com", 443),
            ("http://2130706433/", "127.0.0.1", 80),
            ("http://0x7f.1:8080/", "127.0.0.1", 8080),
            ("http://017700000001/", "127.0.0.1", 80),
            ("http://[0:0:0:0:0:0:0:1]/", "[::1]", 80),
            ("http://[::ffff:7f00:1]/", "[::ffff:127.0.0.1]", 80),
            ("https://bücher.de/", "xn--bcher-kva.de", 443),
            ("  http://example.com:80/  ", "example.com", 80),
        ] {
            let t = Target::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!((t.host.to_string().as_str(), t.port), (host, port), "{raw}");
        }
    }

    #[test]
    fn only_absolute_http_urls_without_credentials_are_accepted() {
        for (raw, want) in [
            ("ftp://example.com/", "scheme must be http or https"),
            ("file:///etc/passwd", "scheme must be http or https"),
            ("javascript:alert(1)", "scheme must be http or https"),
            ("/relative", "not an absolute"),
            ("example.com", "not an absolute"),
            ("http://", "not an absolute"),
            ("http://user:pw@example.com/", "user name or password"),
            ("http://user@example.com/", "user name or password"),
        ] {
            let e = Target::parse(raw).expect_err(raw);
            assert!(e.to_string().contains(want), "{raw}: {e}");
        }
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(matches!(
            Target::parse(&long),
            Err(ProxyError::UrlTooLong { .. })
        ));
        // Short as sent, long once normalised (each space is three bytes as `%20`).
        let spaces = format!("http://example.com/{}x", " ".repeat(MAX_URL_BYTES / 2));
        assert!(spaces.len() <= MAX_URL_BYTES);
        assert!(matches!(
            Target::parse(&spaces),
            Err(ProxyError::UrlTooLong { .. })
        ));
    }

    #[test]
    fn the_fragment_is_kept_aside_and_not_fetched() {
        let t = Target::parse("https://example.com/a?b=1#top").expect("parse");
        assert_eq!(t.url.as_str(), "https://example.com/a?b=1");
        assert_eq!(t.fragment.as_deref(), Some("top"));
    }
}
