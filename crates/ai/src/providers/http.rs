//! The HTTP plumbing shared by the network adapters.
//!
//! reqwest with rustls and the `ring` provider: HTTP/1.1 (no h2, nothing to negotiate with
//! local servers), HTTPS with the platform's certificates, and no aws-lc-rs (whose build needs
//! cmake). The `ring` provider is installed as the process default the first time a client is
//! built; if the host already installed one, that one is kept.
//!
//! Every request is bounded: a connect timeout, a total timeout (also enforced around body
//! reading), and a body-size cap read chunk by chunk, so a slow or hostile server can cost
//! neither unbounded time nor unbounded memory. Loopback base URLs bypass proxies from the
//! environment, so a local Ollama keeps working behind a corporate `HTTPS_PROXY`.

use crate::error::AdapterError;
use crate::secrets::Secret;
use daemonhost_protocol::error_chain as chain;
use serde_json::Value;
use std::time::Duration;

/// Install `ring` as rustls' process-wide provider unless one is already installed.
pub(crate) fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing the race to another installer is fine: some provider is then installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// Whether `base_url` names a loopback host.
pub(crate) fn is_loopback(base_url: &str) -> bool {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
                || h.trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

/// A client for one provider, with its bounds.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    provider: String,
    max_body: usize,
    /// Redacted from error bodies, in case a server echoes it.
    key: Option<Secret>,
}

/// The start of an error body kept in messages.
const ERROR_BODY_CHARS: usize = 300;

impl Http {
    pub(crate) fn new(
        provider: &str,
        base_url: &str,
        connect_timeout: Duration,
        max_body: usize,
        key: Option<Secret>,
    ) -> Result<Self, AdapterError> {
        ensure_crypto_provider();
        let mut b = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(8)
            .user_agent(concat!("daemonhost/", env!("CARGO_PKG_VERSION")));
        if is_loopback(base_url) {
            b = b.no_proxy();
        }
        let client = b.build().map_err(|e| AdapterError::Config {
            provider: provider.to_owned(),
            reason: format!("cannot build the HTTP client: {}", chain(&e)),
        })?;
        Ok(Http {
            client,
            provider: provider.to_owned(),
            max_body,
            key,
        })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A POST of `body` as JSON.
    pub(crate) fn post_json(&self, url: String, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }

    /// Send `req` within `timeout`; a 2xx answer's body parsed as JSON, anything else an error.
    pub(crate) async fn json(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, AdapterError> {
        let body = self.send(req, timeout).await?;
        serde_json::from_slice(&body).map_err(|e| AdapterError::BadResponse {
            provider: self.provider.clone(),
            reason: format!("body is not JSON: {e}"),
        })
    }

    /// Send `req` within `timeout`; the 2xx body, size-capped.
    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Vec<u8>, AdapterError> {
        let after_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let work = async {
            let mut resp = req
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| self.map_err(&e, after_ms))?;
            let status = resp.status();
            if resp
                .content_length()
                .is_some_and(|n| n > self.max_body as u64)
            {
                return Err(AdapterError::TooLarge {
                    provider: self.provider.clone(),
                    limit: self.max_body,
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| self.map_err(&e, after_ms))? {
                if body.len().saturating_add(chunk.len()) > self.max_body {
                    return Err(AdapterError::TooLarge {
                        provider: self.provider.clone(),
                        limit: self.max_body,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            if !status.is_success() {
                return Err(AdapterError::Status {
                    provider: self.provider.clone(),
                    status: status.as_u16(),
                    body: self.snippet(&body),
                });
            }
            Ok(body)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(AdapterError::Timeout {
                provider: self.provider.clone(),
                after_ms,
            }),
        }
    }

    fn snippet(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let mut s: String = text.chars().take(ERROR_BODY_CHARS).collect();
        if let Some(k) = &self.key
            && !k.expose().is_empty()
        {
            s = s.replace(k.expose(), "***");
        }
        s
    }

    fn map_err(&self, e: &reqwest::Error, after_ms: u64) -> AdapterError {
        let provider = self.provider.clone();
        if e.is_timeout() {
            AdapterError::Timeout { provider, after_ms }
        } else if e.is_connect() {
            AdapterError::Connect {
                provider,
                reason: chain(e),
            }
        } else {
            AdapterError::Transport {
                provider,
                reason: chain(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("http://127.0.0.1:11434/v1"));
        assert!(is_loopback("http://localhost:8080/v1"));
        assert!(is_loopback("http://[::1]:8080/v1"));
        assert!(!is_loopback("https://api.openai.com/v1"));
        assert!(!is_loopback("not a url"));
    }

    #[test]
    fn a_client_builds_with_the_ring_provider() {
        let h = Http::new(
            "p",
            "https://example.invalid/v1",
            Duration::from_secs(1),
            1024,
            None,
        );
        assert!(h.is_ok(), "{h:?}");
    }
}
