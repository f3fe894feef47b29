//! The AI daemon's configuration: the provider priority list and the bounds around it.
//!
//! Serde-deserializable with unknown fields refused, so the host's TOML file can carry it under
//! one section. Durations are plain milliseconds on the wire (`health_interval_ms = 30000`), like
//! the rest of the host's config, and `Duration` in Rust.

use crate::error::AiError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// Most providers a config may list.
pub const MAX_PROVIDERS: usize = 64;
/// Largest `max_concurrency` of one provider.
pub const MAX_PROVIDER_CONCURRENCY: usize = 1024;

/// What speaks behind a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// `POST {base_url}/chat/completions`: Ollama, llama.cpp server, vLLM, OpenAI and similar.
    Openai,
    /// Anthropic's `POST {base_url}/v1/messages`.
    Anthropic,
    /// The built-in offline adapter: a summary of the most relevant earlier messages, found
    /// through the search daemon. Not a language model.
    Retrieval,
}

impl ProviderKind {
    /// The name used in config and in `ai/providers`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Retrieval => "retrieval",
        }
    }
}

/// One entry of the priority list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name (`[a-z0-9_.-]`, at most 64 bytes); what `ai/generate {provider}` names.
    pub name: String,
    /// Which adapter serves it.
    pub kind: ProviderKind,
    /// `http(s)://host:port/v1` for `openai`; `https://api.anthropic.com` (default) for
    /// `anthropic`; unused by `retrieval`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Default model (a request's `model` overrides it). Required for `openai` and `anthropic`.
    #[serde(default)]
    pub model: Option<String>,
    /// The NAME of the key in `secrets.env` (never the key itself). Without it no key is sent,
    /// which suits local servers.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Calls in flight at most; one more skips to the next provider (it is not a failure).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Higher is tried first; equal priorities keep their config order.
    #[serde(default)]
    pub priority: i32,
}

fn default_max_concurrency() -> usize {
    4
}

impl ProviderConfig {
    fn new(name: &str, kind: ProviderKind) -> Self {
        ProviderConfig {
            name: name.to_owned(),
            kind,
            base_url: None,
            model: None,
            api_key_env: None,
            max_concurrency: default_max_concurrency(),
            priority: 0,
        }
    }

    /// An OpenAI-compatible provider at `base_url` (e.g. `http://127.0.0.1:11434/v1`).
    pub fn openai(name: &str, base_url: &str, model: &str) -> Self {
        ProviderConfig {
            base_url: Some(base_url.to_owned()),
            model: Some(model.to_owned()),
            ..Self::new(name, ProviderKind::Openai)
        }
    }

    /// An Anthropic provider; `api_key_env` names its key in `secrets.env`.
    pub fn anthropic(name: &str, model: &str, api_key_env: &str) -> Self {
        ProviderConfig {
            model: Some(model.to_owned()),
            api_key_env: Some(api_key_env.to_owned()),
            ..Self::new(name, ProviderKind::Anthropic)
        }
    }

    /// The offline `retrieval` adapter.
    pub fn retrieval() -> Self {
        ProviderConfig {
            max_concurrency: 16,
            ..Self::new("retrieval", ProviderKind::Retrieval)
        }
    }

    /// Set the priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Set the name of the key in `secrets.env`.
    pub fn api_key_env(mut self, name: &str) -> Self {
        self.api_key_env = Some(name.to_owned());
        self
    }

    /// Set the in-flight bound.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// Set the base URL.
    pub fn base_url(mut self, url: &str) -> Self {
        self.base_url = Some(url.to_owned());
        self
    }
}

/// When a provider's circuit opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures (calls or health checks) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before letting a probe through.
    #[serde(rename = "open_for_ms", with = "ms")]
    pub open_for: Duration,
    /// Calls let through at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

/// The whole AI daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiConfig {
    /// Directory holding `secrets.env`.
    pub data_dir: PathBuf,
    /// The providers; tried by descending `priority`.
    pub providers: Vec<ProviderConfig>,
    /// Period of the health interval (the first checks run in deferred init).
    #[serde(rename = "health_interval_ms", with = "ms")]
    pub health_interval: Duration,
    /// Bound of one health check.
    #[serde(rename = "health_timeout_ms", with = "ms")]
    pub health_timeout: Duration,
    /// Circuit breaker settings, shared by every provider.
    pub breaker: BreakerConfig,
    /// Bound of one provider call (connect + response).
    #[serde(rename = "request_timeout_ms", with = "ms")]
    pub request_timeout: Duration,
    /// Bound of establishing a connection.
    #[serde(rename = "connect_timeout_ms", with = "ms")]
    pub connect_timeout: Duration,
    /// Largest response body read from a provider; more is an error, not an allocation.
    pub max_response_bytes: usize,
    /// Most messages in one `ai/generate`.
    pub max_messages: usize,
    /// Most bytes of message content in one `ai/generate`.
    pub max_input_bytes: usize,
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            data_dir: PathBuf::from("."),
            providers: vec![ProviderConfig::retrieval()],
            health_interval: Duration::from_secs(30),
            health_timeout: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_response_bytes: 8 * 1024 * 1024,
            max_messages: 256,
            max_input_bytes: 1024 * 1024,
        }
    }
}

impl AiConfig {
    /// Where the secrets are read from.
    pub fn secrets_path(&self) -> PathBuf {
        self.data_dir.join("secrets.env")
    }

    /// Every problem with this config, reported together.
    pub fn validate(&self) -> Result<(), AiError> {
        let mut problems = Vec::new();
        if self.providers.is_empty() {
            problems.push("providers: at least one provider is required".to_owned());
        }
        if self.providers.len() > MAX_PROVIDERS {
            problems.push(format!("providers: at most {MAX_PROVIDERS} are allowed"));
        }
        let mut names = HashSet::new();
        for p in &self.providers {
            let n = &p.name;
            if n.is_empty()
                || n.len() > 64
                || !n.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
                })
            {
                problems.push(format!(
                    "provider '{n}': name must be 1-64 bytes of [a-z0-9_.-]"
                ));
            }
            if !names.insert(n.as_str()) {
                problems.push(format!("provider '{n}': duplicate name"));
            }
            if p.max_concurrency == 0 || p.max_concurrency > MAX_PROVIDER_CONCURRENCY {
                problems.push(format!(
                    "provider '{n}': max_concurrency must be 1..={MAX_PROVIDER_CONCURRENCY}"
                ));
            }
            match p.kind {
                ProviderKind::Openai | ProviderKind::Anthropic => {
                    if p.model.as_deref().is_none_or(str::is_empty) {
                        problems.push(format!("provider '{n}': model is required"));
                    }
                    match (&p.base_url, p.kind) {
                        (None, ProviderKind::Openai) => {
                            problems.push(format!("provider '{n}': base_url is required"));
                        }
                        (Some(u), _)
                            if !(u.starts_with("http://") || u.starts_with("https://")) =>
                        {
                            problems.push(format!(
                                "provider '{n}': base_url must start with http:// or https://"
                            ));
                        }
                        _ => {}
                    }
                }
                ProviderKind::Retrieval => {}
            }
            if let Some(k) = &p.api_key_env
                && !crate::secrets::valid_key_name(k)
            {
                problems.push(format!(
                    "provider '{n}': api_key_env must be a variable name ([A-Za-z_][A-Za-z0-9_]*)"
                ));
            }
        }
        for (field, d) in [
            ("health_interval_ms", self.health_interval),
            ("health_timeout_ms", self.health_timeout),
            ("request_timeout_ms", self.request_timeout),
            ("connect_timeout_ms", self.connect_timeout),
            ("breaker.open_for_ms", self.breaker.open_for),
        ] {
            if d.is_zero() {
                problems.push(format!("{field} must be positive"));
            }
        }
        if self.breaker.failure_threshold == 0 {
            problems.push("breaker.failure_threshold must be at least 1".to_owned());
        }
        if self.breaker.half_open_probes == 0 {
            problems.push("breaker.half_open_probes must be at least 1".to_owned());
        }
        for (field, n) in [
            ("max_response_bytes", self.max_response_bytes),
            ("max_messages", self.max_messages),
            ("max_input_bytes", self.max_input_bytes),
        ] {
            if n == 0 {
                problems.push(format!("{field} must be positive"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AiError::Config { problems })
        }
    }
}

/// `Duration` as integer milliseconds.
mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_offline() {
        let c = AiConfig::default();
        c.validate().expect("default config is valid");
        assert_eq!(c.providers.len(), 1);
        assert_eq!(c.providers[0].kind, ProviderKind::Retrieval);
    }

    #[test]
    fn config_deserializes_from_json_and_refuses_unknown_fields() {
        let c: AiConfig = serde_json::from_value(serde_json::json!({
            "health_interval_ms": 1000,
            "breaker": {"failure_threshold": 2},
            "providers": [
                {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:1/v1",
                 "model": "m", "priority": 10},
                {"name": "retrieval", "kind": "retrieval"}
            ]
        }))
        .expect("parses");
        assert_eq!(c.health_interval, Duration::from_millis(1000));
        assert_eq!(c.breaker.failure_threshold, 2);
        assert_eq!(c.breaker.open_for, Duration::from_secs(30));
        assert_eq!(c.providers[0].max_concurrency, 4);
        c.validate().expect("valid");
        let bad = serde_json::from_value::<AiConfig>(serde_json::json!({"nope": 1}));
        assert!(bad.is_err());
    }

    #[test]
    fn validation_reports_every_problem() {
        let c = AiConfig {
            providers: vec![
                ProviderConfig::openai("A", "ftp://x", ""),
                ProviderConfig::retrieval().max_concurrency(0),
                ProviderConfig::retrieval(),
            ],
            request_timeout: Duration::ZERO,
            ..AiConfig::default()
        };
        let Err(AiError::Config { problems }) = c.validate() else {
            panic!("expected a config error");
        };
        assert_eq!(problems.len(), 6, "{problems:?}");
    }
}
