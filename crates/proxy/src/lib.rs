//! The `proxy` daemon: a same-origin HTTP(S) fetch for UI iframes.
//!
//! A page served by the host cannot frame another site that forbids it, nor read what it
//! frames; the web listener serves `/proxy/<percent-encoded-url>` on the host's own origin by
//! calling `proxy/fetch`. Because that turns the host into a client on the operator's network,
//! every fetch passes three checks before a byte is sent, and is bounded while it runs:
//!
//! 1. **The allowlist** (`[proxy] allow`, [`allow`]): empty by default, so nothing is fetched
//!    until the operator lists hosts. A URL whose scheme, host and port no entry matches is
//!    `forbidden`, and the message names the host and the key.
//! 2. **The address rule** ([`address`]): the host is resolved once and every address is
//!    classified; a loopback, private, link-local, unspecified, multicast, CGNAT, unique-local
//!    or reserved one (IPv4 or IPv6, IPv4-mapped included) is `forbidden` unless the allowlist
//!    names that host (or IP) exactly, not through a wildcard.
//! 3. **Pinning** ([`fetch`]): the HTTP client connects only to the addresses that were
//!    checked (`resolve_to_addrs`; its own resolver refuses every name, environment proxies
//!    are off), so a DNS answer that changes between the check and the connection is never
//!    used. Redirects are not followed: a 3xx is answered with its `location` (absolute), and
//!    following it is another `proxy/fetch`, checked like the first.
//!
//! Bounds: the whole fetch within `[proxy] timeout_ms` (default 10 s, `timeout`); the body
//! read in chunks and refused past `[proxy] max_bytes` (default 2 MiB, `validation`
//! "response larger than N bytes", never truncated); at most `[proxy] max_concurrent` fetches
//! at once (default 16, one more is `overloaded` at once); URLs of at most [`MAX_URL_BYTES`]
//! (8 KiB). Only `GET` and `HEAD`; no request headers are passed on (no cookies, no
//! credentials: a URL with a user name is refused); response headers are cut to
//! [`FORWARDED_HEADERS`].
//!
//! Commands:
//! - `proxy/fetch {url, method?: GET|HEAD}` → `{url, status, contentType, headers, body
//!   (base64), bytes, truncated: false}`. Any HTTP status is an answer (a 404 page is shown
//!   like any other); only a fetch that got no complete answer is an error.
//! - `proxy/url {url}` → `{path: "/proxy/<percent-encoded-url>", allowed}`: the same-origin
//!   path ([`encode_path`]; [`decode_path`] is its inverse, for the listener), the fragment
//!   appended as a real fragment; `allowed` says whether the allowlist matches (the address
//!   rule is checked at fetch time).
//! - `proxy/status` → `{allowed, denied, failed, answered, busy, bytes, inFlight,
//!   maxConcurrent, maxBytes, timeoutMs, allow, tls}`: `denied` counts refusals by the
//!   allowlist or the address rule, `allowed` fetches that passed both, `failed` fetches not
//!   denied that got no answer (DNS, connection, TLS, timeout, too large), `busy` refusals at
//!   `max_concurrent`, `bytes` the body bytes answered.
//!
//! # Files
//!
//! | file | what |
//! |---|---|
//! | `error.rs` | [`ProxyError`] and the code of each failure |
//! | `address.rs` | [`classify`]: what kind of address an IP is |
//! | `target.rs` | [`Target`]: a URL parsed and checked for shape |
//! | `allow.rs` | [`Allowlist`]: the entries and how a URL matches them |
//! | `path.rs` | [`encode_path`] / [`decode_path`] |
//! | `resolve.rs` | [`Resolver`]: the system's, or a table for tests |
//! | `fetch.rs` | the address check, the pinned client, the bounded body |
//! | `config.rs` | [`ProxyConfig`] and the defaults |
//! | `daemon.rs` | [`ProxyDaemon`]: commands and counters |
#![forbid(unsafe_code)]

pub mod address;
pub mod allow;
pub mod config;
mod daemon;
pub mod error;
pub mod fetch;
pub mod path;
pub mod resolve;
pub mod target;

pub use address::{AddressClass, classify};
pub use allow::{Allowlist, Match};
pub use config::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_CONCURRENT, DEFAULT_TIMEOUT, MAX_CONCURRENT_LIMIT, ProxyConfig,
    answer_bound, max_bytes_for_frame,
};
pub use daemon::{ProxyDaemon, ProxyState};
pub use error::ProxyError;
pub use fetch::{FORWARDED_HEADERS, Fetched, Method};
pub use path::{PATH_PREFIX, decode_path, encode_path};
pub use resolve::{Resolver, StaticResolver};
pub use target::{MAX_URL_BYTES, Scheme, Target};
