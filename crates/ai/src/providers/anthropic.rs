//! The Anthropic messages adapter.
//!
//! `POST {base_url}/v1/messages` with `x-api-key` and `anthropic-version: 2023-06-01`. The API
//! takes system text separately, so system messages are joined into `system`; it requires
//! `max_tokens`, so 1024 is sent when the caller gave none. The reply is the concatenated
//! `text` blocks of `content`. Health is `GET {base_url}/v1/models`: free, and it proves both
//! the connection and the key, without spending tokens on a probe completion.

use super::adapter::{Adapter, BoxFuture, GenerateRequest, GenerateResponse, Role, Usage};
use super::http::Http;
use crate::config::{AiConfig, ProviderConfig, ProviderKind};
use crate::error::AdapterError;
use crate::secrets::Secret;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// The API version sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Base URL when the config gives none.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// `max_tokens` when the caller gives none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// An Anthropic provider.
#[derive(Debug)]
pub struct AnthropicAdapter {
    name: String,
    base_url: String,
    model: String,
    key: Option<Secret>,
    http: Http,
    request_timeout: Duration,
    health_timeout: Duration,
}

impl AnthropicAdapter {
    /// Build from config (no network).
    pub fn new(
        cfg: &ProviderConfig,
        key: Option<Secret>,
        ai: &AiConfig,
    ) -> Result<Self, AdapterError> {
        let base_url = cfg
            .base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
            .to_owned();
        let http = Http::new(
            &cfg.name,
            &base_url,
            ai.connect_timeout,
            ai.max_response_bytes,
            key.clone(),
        )?;
        Ok(AnthropicAdapter {
            name: cfg.name.clone(),
            model: cfg.model.clone().unwrap_or_default(),
            base_url,
            key,
            http,
            request_timeout: ai.request_timeout,
            health_timeout: ai.health_timeout,
        })
    }

    fn headers(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let rb = rb.header("anthropic-version", ANTHROPIC_VERSION);
        match &self.key {
            Some(k) => rb.header("x-api-key", k.expose()),
            None => rb,
        }
    }

    /// The request body for `req`.
    fn body(&self, req: &GenerateRequest) -> Value {
        let model = req.model.clone().unwrap_or_else(|| self.model.clone());
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<Value> = req
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| {
                // Names do not exist in this API; keep who spoke in a multi-party room.
                let content = match &m.name {
                    Some(n) if m.role == Role::User => format!("{n}: {}", m.content),
                    _ => m.content.clone(),
                };
                json!({"role": m.role.as_str(), "content": content})
            })
            .collect();
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert("messages".into(), json!(messages));
        body.insert(
            "max_tokens".into(),
            json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        );
        if !system.is_empty() {
            body.insert("system".into(), json!(system.join("\n\n")));
        }
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), json!(t));
        }
        Value::Object(body)
    }

    async fn call(&self, req: &GenerateRequest) -> Result<GenerateResponse, AdapterError> {
        let started = Instant::now();
        let body = self.body(req);
        let rb = self
            .http
            .post_json(format!("{}/v1/messages", self.base_url), &body);
        let v = self
            .http
            .json(self.headers(rb), self.request_timeout)
            .await?;
        let blocks = v.get("content").and_then(Value::as_array).ok_or_else(|| {
            AdapterError::BadResponse {
                provider: self.name.clone(),
                reason: "no content array".into(),
            }
        })?;
        let text: String = blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        let usage = v.get("usage").and_then(|u| {
            let p = u.get("input_tokens")?.as_u64()?;
            let c = u.get("output_tokens")?.as_u64()?;
            Some(Usage {
                prompt_tokens: p,
                completion_tokens: c,
                total_tokens: p.saturating_add(c),
            })
        });
        Ok(GenerateResponse {
            text,
            provider: self.name.clone(),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| body["model"].as_str().unwrap_or_default().to_owned()),
            usage,
            is_language_model: true,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

impl Adapter for AnthropicAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn generate<'a>(
        &'a self,
        req: &'a GenerateRequest,
    ) -> BoxFuture<'a, Result<GenerateResponse, AdapterError>> {
        Box::pin(self.call(req))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            let rb = self
                .http
                .client()
                .get(format!("{}/v1/models", self.base_url));
            self.http
                .send(self.headers(rb), self.health_timeout)
                .await
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::adapter::ChatMessage;

    #[test]
    fn system_messages_are_split_out() {
        let cfg = ProviderConfig::anthropic("claude", "claude-x", "ANTHROPIC_KEY");
        let a = AnthropicAdapter::new(&cfg, None, &AiConfig::default()).expect("builds");
        let mut req = GenerateRequest::new(vec![
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage {
                role: Role::User,
                content: "hi".into(),
                name: Some("ann".into()),
            },
            ChatMessage::new(Role::System, "be kind"),
        ]);
        req.temperature = Some(0.5);
        let b = a.body(&req);
        assert_eq!(b["system"], "be brief\n\nbe kind");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            b["messages"],
            json!([{"role": "user", "content": "ann: hi"}])
        );
        assert_eq!(b["model"], "claude-x");
    }
}
