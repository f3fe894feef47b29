//! Why a proxy operation failed, and the protocol code each failure answers with.
//!
//! Every message names what it is about (the URL's host, the address it resolved to, the
//! limit) and, where a setting decides, the config key (`[proxy] allow`, `[proxy] max_bytes`,
//! …), so an operator reading it knows what to change.

use daemonhost_protocol::ErrorCode;
use daemonhost_runtime::DaemonError;
use std::net::IpAddr;

use crate::address::AddressClass;

/// One failure of the proxy: a refused request, a refused target, or a fetch that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The URL does not parse, or has no host (`validation`).
    #[error("url: not an absolute http(s) URL: {reason}")]
    InvalidUrl {
        /// What the parser said.
        reason: String,
    },
    /// The URL is longer than [`crate::MAX_URL_BYTES`] (`validation`).
    #[error("url: at most {max} bytes (got {len})")]
    UrlTooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A scheme other than `http` or `https` (`validation`).
    #[error("url: the scheme must be http or https (got '{scheme}')")]
    Scheme {
        /// The scheme given.
        scheme: String,
    },
    /// The URL carries a user name or password (`validation`): the proxy sends no credentials.
    #[error("url: must not carry a user name or password (the proxy sends no credentials)")]
    Credentials,
    /// A method other than GET or HEAD (`validation`).
    #[error("method: GET or HEAD only (got '{method}')")]
    Method {
        /// The method given.
        method: String,
    },
    /// The URL's host (with its scheme and port) matches no entry of the allowlist
    /// (`forbidden`).
    #[error(
        "host '{host}' (port {port}) is not in [proxy] allow; add \"{suggest}\" to that list to let proxy/fetch reach it"
    )]
    NotAllowed {
        /// The URL's host.
        host: String,
        /// The URL's port (explicit or the scheme's default).
        port: u16,
        /// The entry that would allow it.
        suggest: String,
    },
    /// The host resolved to a loopback, private, link-local or otherwise non-public address,
    /// and the entry that allowed it is a wildcard (`forbidden`).
    #[error(
        "host '{host}' resolves to {addr}, a {class} address; only a host listed exactly (not through a wildcard) in [proxy] allow may reach loopback, private or link-local addresses"
    )]
    NonPublicAddress {
        /// The URL's host.
        host: String,
        /// The first non-public address it resolved to.
        addr: IpAddr,
        /// What kind of address that is.
        class: AddressClass,
    },
    /// DNS failed or gave no address (`unavailable`).
    #[error("cannot resolve host '{host}': {reason}")]
    Resolve {
        /// The URL's host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// No connection to the host (refused, reset, TLS) (`unavailable`).
    #[error("cannot connect to '{host}': {reason}")]
    Connect {
        /// The URL's host.
        host: String,
        /// What the client said.
        reason: String,
    },
    /// The connection broke, or the answer is not HTTP (`unavailable`).
    #[error("fetching from '{host}' failed: {reason}")]
    Transport {
        /// The URL's host.
        host: String,
        /// What the client said.
        reason: String,
    },
    /// The whole fetch took longer than `[proxy] timeout_ms` (`timeout`).
    #[error("no complete answer from '{host}' within {after_ms} ms ([proxy] timeout_ms)")]
    Timeout {
        /// The URL's host.
        host: String,
        /// The bound.
        after_ms: u64,
    },
    /// The body is larger than `[proxy] max_bytes` (`validation`). Never truncated.
    #[error("response larger than {limit} bytes ([proxy] max_bytes); nothing is answered in part")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// `[proxy] max_concurrent` fetches are running (`overloaded`).
    #[error("{max} fetches are in flight ([proxy] max_concurrent = {max}); retry later")]
    Busy {
        /// The bound.
        max: usize,
    },
    /// An allowlist entry that is not `[scheme://]host[:port]` or `[scheme://]*.domain[:port]`.
    #[error("entry '{entry}': {reason}")]
    BadEntry {
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path given to [`crate::decode_path`] that [`crate::encode_path`] cannot have made
    /// (`validation`).
    #[error("path: {reason}")]
    BadPath {
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (`internal`).
    #[error("the HTTP client cannot be built: {reason}")]
    Client {
        /// Why.
        reason: String,
    },
}

impl ProxyError {
    /// The protocol code this failure answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProxyError::InvalidUrl { .. }
            | ProxyError::UrlTooLong { .. }
            | ProxyError::Scheme { .. }
            | ProxyError::Credentials
            | ProxyError::Method { .. }
            | ProxyError::TooLarge { .. }
            | ProxyError::BadEntry { .. }
            | ProxyError::BadPath { .. } => ErrorCode::Validation,
            ProxyError::NotAllowed { .. } | ProxyError::NonPublicAddress { .. } => {
                ErrorCode::Forbidden
            }
            ProxyError::Resolve { .. }
            | ProxyError::Connect { .. }
            | ProxyError::Transport { .. } => ErrorCode::Unavailable,
            ProxyError::Timeout { .. } => ErrorCode::Timeout,
            ProxyError::Busy { .. } => ErrorCode::Overloaded,
            ProxyError::Client { .. } => ErrorCode::Internal,
        }
    }

    /// Whether the policy refused it (the allowlist or the address rule): counted as denied.
    pub fn is_denied(&self) -> bool {
        self.code() == ErrorCode::Forbidden
    }
}

impl From<ProxyError> for DaemonError {
    fn from(e: ProxyError) -> Self {
        DaemonError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_host_and_the_config_key_and_is_forbidden() {
        let e = ProxyError::NotAllowed {
            host: "example.com".into(),
            port: 443,
            suggest: "example.com".into(),
        };
        assert_eq!(e.code(), ErrorCode::Forbidden);
        assert!(e.is_denied());
        let text = e.to_string();
        assert!(
            text.contains("'example.com'") && text.contains("[proxy] allow"),
            "{text}"
        );
        let e = ProxyError::NonPublicAddress {
            host: "intranet".into(),
            addr: "10.1.2.3".parse().expect("ip"),
            class: AddressClass::Private,
        };
        let d = DaemonError::from(e);
        assert_eq!(d.code, ErrorCode::Forbidden);
        assert!(
            d.message.contains("'intranet'")
                && d.message.contains("10.1.2.3")
                && d.message.contains("private")
                && d.message.contains("[proxy] allow"),
            "{d}"
        );
    }

    #[test]
    fn limits_answer_their_codes() {
        assert_eq!(
            ProxyError::TooLarge { limit: 5 }.code(),
            ErrorCode::Validation
        );
        assert!(
            ProxyError::TooLarge { limit: 5 }
                .to_string()
                .starts_with("response larger than 5 bytes")
        );
        let t = ProxyError::Timeout {
            host: "h".into(),
            after_ms: 10,
        };
        assert_eq!(t.code(), ErrorCode::Timeout);
        assert_eq!(ProxyError::Busy { max: 1 }.code(), ErrorCode::Overloaded);
        assert!(!ProxyError::Busy { max: 1 }.is_denied());
    }
}
