//! `[proxy] allow`: which URLs the proxy may fetch. Empty (the default) allows none.
//!
//! An entry is `[scheme://]host[:port]`:
//!
//! - `host` is a DNS name (`docs.rs`), an IPv4 address (`127.0.0.1`) or an IPv6 address in
//!   brackets (`[::1]`), matched exactly (after the URL parser's normalisation: lowercase,
//!   IDNA, numeric IPv4 forms), or `*.domain`, which matches every name below `domain`
//!   (`a.domain`, `a.b.domain`) but not `domain` itself. A wildcard names a domain, never an
//!   address.
//! - Without a port, an entry matches the scheme's default port only (80 for http, 443 for
//!   https): `example.com` does not allow `example.com:8080`.
//! - Without a scheme, both `http` and `https`; with one, only it.
//!
//! How a URL matched matters for the address rule ([`Match`]): a host listed exactly may
//! resolve to any address (an operator who lists `127.0.0.1:8080` or `intranet.lan` means it);
//! a host allowed through a wildcard may only resolve to public addresses.

use crate::error::ProxyError;
use crate::target::{HostName, Scheme, Target};
use std::fmt;
use url::Url;

/// How a URL matched the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// An entry names the URL's host itself: it may resolve to any address.
    Exact,
    /// Only a `*.domain` entry matches: the host must resolve to public addresses only.
    Wildcard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// The host itself.
    Exact(HostName),
    /// Any name ending in `.{0}`.
    Below(String),
}

/// One entry of the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    scheme: Option<Scheme>,
    pattern: Pattern,
    port: Option<u16>,
}

impl Entry {
    /// Parse one entry (see the module docs).
    pub fn parse(text: &str) -> Result<Entry, ProxyError> {
        let bad = |reason: &str| ProxyError::BadEntry {
            entry: text.to_owned(),
            reason: reason.to_owned(),
        };
        let raw = text.trim();
        if raw.is_empty() {
            return Err(bad("empty"));
        }
        let (scheme, rest) = match raw.split_once("://") {
            Some((s, rest)) => (
                Some(Scheme::parse(s).ok_or_else(|| bad("the scheme must be http or https"))?),
                rest,
            ),
            None => (None, raw),
        };
        if rest
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace())
        {
            return Err(bad(
                "a host with an optional port, nothing else (no path, query or user)",
            ));
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (host, port) = split_port(rest).map_err(|r| bad(&r))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains('*') {
            return Err(bad(
                "'*' only as a whole first label: '*.example.com' matches every name below example.com",
            ));
        }
        let url = Url::parse(&format!("http://{host}/"))
            .map_err(|e| bad(&format!("not a host name or address: {e}")))?;
        let name = HostName::of(&url).ok_or_else(|| bad("no host"))?;
        let pattern = match name {
            HostName::Domain(d) if d.is_empty() => return Err(bad("no host")),
            HostName::Domain(d) if wildcard => Pattern::Below(d),
            HostName::Ip(_) if wildcard => {
                return Err(bad(
                    "a wildcard names a domain, not an address: list the address itself",
                ));
            }
            other => Pattern::Exact(other),
        };
        Ok(Entry {
            scheme,
            pattern,
            port,
        })
    }

    /// How this entry matches `t`, if it does.
    fn matches(&self, t: &Target) -> Option<Match> {
        if self.scheme.is_some_and(|s| s != t.scheme) {
            return None;
        }
        if self.port.unwrap_or(t.scheme.default_port()) != t.port {
            return None;
        }
        match (&self.pattern, &t.host) {
            (Pattern::Exact(h), host) if h == host => Some(Match::Exact),
            (Pattern::Below(domain), HostName::Domain(name))
                if name.len() > domain.len() + 1
                    && name.ends_with(domain.as_str())
                    && name.as_bytes()[name.len() - domain.len() - 1] == b'.' =>
            {
                Some(Match::Wildcard)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.scheme {
            write!(f, "{}://", s.as_str())?;
        }
        match &self.pattern {
            Pattern::Exact(h) => write!(f, "{h}")?,
            Pattern::Below(d) => write!(f, "*.{d}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// `host[:port]` → the host and the port; an IPv6 host must be in brackets.
fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if s.starts_with('[') {
        let end = s
            .find(']')
            .ok_or_else(|| "an IPv6 address needs its closing ']'".to_owned())?;
        let (host, after) = s.split_at(end + 1);
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("'{p}' after the address"))?,
                ),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("an IPv6 address goes in brackets: '[::1]:8080'".into());
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("port '{p}' is not a number from 1 to 65535")),
            Ok(n) => Some(n),
        },
    };
    Ok((host, port))
}

/// The parsed `[proxy] allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

impl Allowlist {
    /// Parse every entry; the first bad one is the error (it names the entry).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Allowlist, ProxyError> {
        let entries = entries
            .iter()
            .map(|e| Entry::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist { entries })
    }

    /// Whether it allows nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How `t` matches: [`Match::Exact`] if any entry names its host, else [`Match::Wildcard`]
    /// if a wildcard covers it; `None` if no entry allows it.
    pub fn check(&self, t: &Target) -> Option<Match> {
        let mut found = None;
        for e in &self.entries {
            match e.matches(t) {
                Some(Match::Exact) => return Some(Match::Exact),
                Some(Match::Wildcard) => found = Some(Match::Wildcard),
                None => {}
            }
        }
        found
    }

    /// [`Allowlist::check`], or the `forbidden` error naming the host and what to add.
    pub fn require(&self, t: &Target) -> Result<Match, ProxyError> {
        self.check(t).ok_or_else(|| ProxyError::NotAllowed {
            host: t.host.to_string(),
            port: t.port,
            suggest: suggestion(t),
        })
    }

    /// The entries, normalised, as `proxy/status` shows them.
    pub fn entries(&self) -> Vec<String> {
        self.entries.iter().map(Entry::to_string).collect()
    }
}

/// The entry that would allow exactly `t`'s host and port.
fn suggestion(t: &Target) -> String {
    if t.port == t.scheme.default_port() {
        t.host.to_string()
    } else {
        format!("{}:{}", t.host, t.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(entries).unwrap_or_else(|e| panic!("{entries:?}: {e}"))
    }

    #[test]
    fn an_empty_allowlist_allows_nothing() {
        let l = Allowlist::default();
        assert!(l.is_empty());
        for url in [
            "http://127.0.0.1/",
            "https://example.com/",
            "http://localhost:8080/",
        ] {
            let e = l.require(&target(url)).expect_err(url);
            assert!(e.is_denied(), "{e}");
            assert!(e.to_string().contains("[proxy] allow"), "{e}");
        }
    }

    #[test]
    fn an_exact_entry_matches_its_host_and_port_only() {
        let l = list(&["example.com", "127.0.0.1:8080", "[::1]:9000"]);
        for (url, want) in [
            ("http://example.com/", Some(Match::Exact)),
            ("https://example.com/a?b", Some(Match::Exact)),
            ("https://EXAMPLE.COM./", Some(Match::Exact)),
            ("http://example.com:8080/", None),
            ("http://www.example.com/", None),
            ("http://example.com.evil.net/", None),
            ("http://127.0.0.1:8080/", Some(Match::Exact)),
            ("http://2130706433:8080/", Some(Match::Exact)),
            ("http://127.0.0.1/", None),
            ("http://127.0.0.1:8081/", None),
            ("http://[::1]:9000/", Some(Match::Exact)),
            ("http://[::ffff:127.0.0.1]:8080/", None),
            ("http://localhost:8080/", None),
        ] {
            assert_eq!(l.check(&target(url)), want, "{url}");
        }
    }

    #[test]
    fn a_wildcard_matches_names_below_its_domain_but_not_the_domain() {
        let l = list(&["*.example.com"]);
        for (url, want) in [
            ("https://a.example.com/", Some(Match::Wildcard)),
            ("https://a.b.example.com/", Some(Match::Wildcard)),
            ("https://example.com/", None),
            ("https://aexample.com/", None),
            ("https://a.example.com.evil.net/", None),
            ("https://a.example.com:444/", None),
        ] {
            assert_eq!(l.check(&target(url)), want, "{url}");
        }
        // An exact entry beside a wildcard wins: its host may then reach any address.
        let l = list(&["*.example.com", "app.example.com"]);
        assert_eq!(
            l.check(&target("http://app.example.com/")),
            Some(Match::Exact)
        );
        assert_eq!(
            l.check(&target("http://cdn.example.com/")),
            Some(Match::Wildcard)
        );
    }

    #[test]
    fn a_scheme_in_an_entry_restricts_it_to_that_scheme() {
        let l = list(&["https://docs.rs"]);
        assert_eq!(l.check(&target("https://docs.rs/")), Some(Match::Exact));
        assert_eq!(l.check(&target("http://docs.rs/")), None);
        let l = list(&["http://127.0.0.1:3000"]);
        assert_eq!(l.check(&target("https://127.0.0.1:3000/")), None);
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry() {
        for (entry, why) in [
            ("", "empty"),
            ("ftp://example.com", "scheme"),
            ("example.com/path", "nothing else"),
            ("user@example.com", "nothing else"),
            ("*.127.0.0.1", "wildcard names a domain"),
            ("*", "'*' only"),
            ("a.*.com", "'*' only"),
            ("example.com:0", "port"),
            ("example.com:99999", "port"),
            ("example.com:http", "port"),
            ("::1", "brackets"),
            ("[::1", "closing"),
            ("[::1]x", "after the address"),
            ("exa mple.com", "nothing else"),
        ] {
            let e = Entry::parse(entry).expect_err(entry);
            let text = e.to_string();
            assert!(
                text.contains(why) && text.contains(&format!("'{entry}'")),
                "{entry}: {text}"
            );
        }
    }

    #[test]
    fn entries_print_normalised() {
        let l = list(&[
            "Example.COM",
            "*.Example.com:8443",
            "HTTPS://docs.rs",
            "[0::1]:80",
        ]);
        assert_eq!(
            l.entries(),
            [
                "example.com",
                "*.example.com:8443",
                "https://docs.rs",
                "[::1]:80"
            ]
        );
    }

    #[test]
    fn the_refusal_in_docs_protocol_md_is_the_real_one() {
        let e = Allowlist::default()
            .require(&target("https://example.com/"))
            .expect_err("empty");
        assert_eq!(
            e.to_string(),
            "host 'example.com' (port 443) is not in [proxy] allow; add \"example.com\" to that list to let proxy/fetch reach it"
        );
    }

    #[test]
    fn a_refusal_suggests_the_entry_that_would_allow_the_url() {
        let l = list(&["other.org"]);
        let e = l
            .require(&target("http://127.0.0.1:5173/app"))
            .expect_err("not listed");
        assert!(e.to_string().contains("\"127.0.0.1:5173\""), "{e}");
        let e = l
            .require(&target("https://docs.rs/x"))
            .expect_err("not listed");
        assert!(
            e.to_string().contains("\"docs.rs\"") && e.to_string().contains("'docs.rs'"),
            "{e}"
        );
    }
}
