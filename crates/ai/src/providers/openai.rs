//! The OpenAI-compatible adapter: Ollama, llama.cpp server, vLLM, OpenAI and the many servers
//! that copied its API.
//!
//! `POST {base_url}/chat/completions` with `{model, messages, max_tokens?, temperature?,
//! stream: false}` and `Authorization: Bearer <key>` when a key is configured; the reply is
//! `choices[0].message.content`, with `usage` when the server reports it. Health is
//! `GET {base_url}/models`: every such server answers it, it costs no tokens, and it checks the
//! key as well as the connection.

use super::adapter::{Adapter, BoxFuture, GenerateRequest, GenerateResponse, Usage};
use super::http::Http;
use crate::config::{AiConfig, ProviderConfig, ProviderKind};
use crate::error::AdapterError;
use crate::secrets::Secret;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// An OpenAI-compatible provider.
#[derive(Debug)]
pub struct OpenAiAdapter {
    name: String,
    base_url: String,
    model: String,
    key: Option<Secret>,
    http: Http,
    request_timeout: Duration,
    health_timeout: Duration,
}

impl OpenAiAdapter {
    /// Build from config (no network). `key` is the resolved secret, if any.
    pub fn new(
        cfg: &ProviderConfig,
        key: Option<Secret>,
        ai: &AiConfig,
    ) -> Result<Self, AdapterError> {
        let base_url = cfg
            .base_url
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let http = Http::new(
            &cfg.name,
            &base_url,
            ai.connect_timeout,
            ai.max_response_bytes,
            key.clone(),
        )?;
        Ok(OpenAiAdapter {
            name: cfg.name.clone(),
            model: cfg.model.clone().unwrap_or_default(),
            base_url,
            key,
            http,
            request_timeout: ai.request_timeout,
            health_timeout: ai.health_timeout,
        })
    }

    fn authorize(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => rb.bearer_auth(k.expose()),
            None => rb,
        }
    }

    fn bad(&self, reason: impl Into<String>) -> AdapterError {
        AdapterError::BadResponse {
            provider: self.name.clone(),
            reason: reason.into(),
        }
    }

    async fn call(&self, req: &GenerateRequest) -> Result<GenerateResponse, AdapterError> {
        let started = Instant::now();
        let model = req.model.clone().unwrap_or_else(|| self.model.clone());
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert("messages".into(), json!(req.messages));
        body.insert("stream".into(), json!(false));
        if let Some(n) = req.max_tokens {
            body.insert("max_tokens".into(), json!(n));
        }
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), json!(t));
        }
        let rb = self.http.post_json(
            format!("{}/chat/completions", self.base_url),
            &Value::Object(body),
        );
        let v = self
            .http
            .json(self.authorize(rb), self.request_timeout)
            .await?;
        let text = v
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| self.bad("no choices[0].message.content"))?
            .to_owned();
        let usage = v.get("usage").and_then(|u| {
            let p = u.get("prompt_tokens")?.as_u64()?;
            let c = u.get("completion_tokens")?.as_u64()?;
            Some(Usage {
                prompt_tokens: p,
                completion_tokens: c,
                total_tokens: u
                    .get("total_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(p.saturating_add(c)),
            })
        });
        Ok(GenerateResponse {
            text,
            provider: self.name.clone(),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .map_or(model, str::to_owned),
            usage,
            is_language_model: true,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

impl Adapter for OpenAiAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Openai
    }

    fn generate<'a>(
        &'a self,
        req: &'a GenerateRequest,
    ) -> BoxFuture<'a, Result<GenerateResponse, AdapterError>> {
        Box::pin(self.call(req))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            let rb = self.http.client().get(format!("{}/models", self.base_url));
            self.http
                .send(self.authorize(rb), self.health_timeout)
                .await
                .map(|_| ())
        })
    }
}
