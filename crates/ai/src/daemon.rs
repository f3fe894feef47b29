//! The `ai` daemon itself: its spec, params and dispatch over the [`Registry`].

use crate::*;

use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Longest `name` of a message, `model`, `provider` or `roomId`.
const MAX_SHORT_STRING: usize = 256;
/// Largest `maxTokens`.
const MAX_TOKENS: u64 = 1_000_000;

/// The AI provider daemon. Its fields are its configuration.
#[derive(Debug, Clone)]
pub struct AiDaemon {
    config: AiConfig,
}

impl AiDaemon {
    /// A daemon serving `config` (validated in `start`).
    pub fn new(config: AiConfig) -> Self {
        AiDaemon { config }
    }

    /// The configuration.
    pub fn config(&self) -> &AiConfig {
        &self.config
    }
}

/// What `start` built.
#[derive(Debug)]
pub struct AiState {
    registry: Registry,
    /// How `secrets.env` went, for `ai/providers` (never values).
    secrets: Value,
}

impl AiState {
    /// The priority list.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Build the priority list from config, with `secrets` loaded (or refused with a cause).
fn build_registry(
    cfg: &AiConfig,
    secrets: &Secrets,
    refused: Option<&str>,
    router: Option<daemonhost_runtime::Router>,
) -> Registry {
    let providers = cfg
        .providers
        .iter()
        .map(|p| {
            let key = match (&p.api_key_env, refused) {
                (None, _) => Ok(None),
                (Some(_), Some(cause)) => Err(format!("secrets.env was refused: {cause}")),
                (Some(name), None) => secrets
                    .get(name)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| format!("key {name} not found in secrets.env")),
            };
            let built: Result<Box<dyn Adapter>, String> = key.and_then(|key| match p.kind {
                ProviderKind::Openai => crate::providers::openai::OpenAiAdapter::new(p, key, cfg)
                    .map(|a| Box::new(a) as Box<dyn Adapter>)
                    .map_err(|e| e.to_string()),
                ProviderKind::Anthropic => {
                    crate::providers::anthropic::AnthropicAdapter::new(p, key, cfg)
                        .map(|a| Box::new(a) as Box<dyn Adapter>)
                        .map_err(|e| e.to_string())
                }
                ProviderKind::Retrieval => Ok(Box::new(
                    crate::providers::retrieval::RetrievalAdapter::new(
                        &p.name,
                        router.clone(),
                        cfg.health_timeout,
                    ),
                )),
            });
            match built {
                Ok(adapter) => Provider::new(p.clone(), adapter, None, cfg.breaker),
                Err(cause) => Provider::new(
                    p.clone(),
                    Box::new(registry::DisabledAdapter::new(
                        &p.name,
                        p.kind,
                        cause.clone(),
                    )),
                    Some(cause),
                    cfg.breaker,
                ),
            }
        })
        .collect();
    Registry::new(providers)
}

/// Parse `ai/generate` params into a request and the optional provider name.
pub fn parse_generate(
    params: &Value,
    cfg: &AiConfig,
) -> Result<(GenerateRequest, Option<String>), AiError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let p = match params {
        Value::Object(m) => m,
        Value::Null => EMPTY.get_or_init(Map::new),
        other => {
            return Err(AiError::bad_request(
                "params",
                format!("must be an object (found {})", kind(other)),
            ));
        }
    };
    let messages = match p.get("messages") {
        None | Some(Value::Null) => return Err(AiError::validation("messages", "is required")),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(AiError::bad_request(
                "messages",
                format!("must be an array (found {})", kind(other)),
            ));
        }
    };
    if messages.is_empty() {
        return Err(AiError::validation("messages", "must not be empty"));
    }
    if messages.len() > cfg.max_messages {
        return Err(AiError::validation(
            "messages",
            format!("at most {} messages are accepted", cfg.max_messages),
        ));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(AiError::bad_request(
                &format!("messages[{i}]"),
                format!("must be an object (found {})", kind(m)),
            ));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => Role::parse(r).ok_or_else(|| {
                AiError::validation(
                    &format!("messages[{i}].role"),
                    "must be system, user or assistant",
                )
            })?,
            None | Some(Value::Null) => {
                return Err(AiError::validation(
                    &format!("messages[{i}].role"),
                    "is required",
                ));
            }
            Some(other) => {
                return Err(AiError::bad_request(
                    &format!("messages[{i}].role"),
                    format!("must be a string (found {})", kind(other)),
                ));
            }
        };
        let content = match m.get("content") {
            Some(Value::String(c)) => c.clone(),
            None | Some(Value::Null) => {
                return Err(AiError::validation(
                    &format!("messages[{i}].content"),
                    "is required",
                ));
            }
            Some(other) => {
                return Err(AiError::bad_request(
                    &format!("messages[{i}].content"),
                    format!("must be a string (found {})", kind(other)),
                ));
            }
        };
        total = total.saturating_add(content.len());
        let name = short_str(m, "name", &format!("messages[{i}].name"))?;
        out.push(ChatMessage {
            role,
            content,
            name,
        });
    }
    if total > cfg.max_input_bytes {
        return Err(AiError::validation(
            "messages",
            format!(
                "content totals {total} bytes; at most {} are accepted",
                cfg.max_input_bytes
            ),
        ));
    }
    let provider = short_str(p, "provider", "provider")?;
    let model = short_str(p, "model", "model")?;
    let room_id = short_str(p, "roomId", "roomId")?;
    let max_tokens = match p.get("maxTokens") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_TOKENS).contains(&n) => u32::try_from(n).ok(),
            Some(_) => {
                return Err(AiError::validation(
                    "maxTokens",
                    format!("must be 1..={MAX_TOKENS}"),
                ));
            }
            None => {
                return Err(AiError::bad_request(
                    "maxTokens",
                    format!("must be a positive integer (found {})", kind(v)),
                ));
            }
        },
    };
    let temperature = match p.get("temperature") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => Some(t),
            Some(_) => return Err(AiError::validation("temperature", "must be 0..=2")),
            None => {
                return Err(AiError::bad_request(
                    "temperature",
                    format!("must be a number (found {})", kind(v)),
                ));
            }
        },
    };
    Ok((
        GenerateRequest {
            messages: out,
            model,
            max_tokens,
            temperature,
            room_id,
        },
        provider,
    ))
}

/// An optional non-empty string of at most [`MAX_SHORT_STRING`] bytes.
fn short_str(p: &Map<String, Value>, key: &str, field: &str) -> Result<Option<String>, AiError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(AiError::validation(field, "must not be empty"))
        }
        Some(Value::String(s)) if s.len() > MAX_SHORT_STRING => Err(AiError::validation(
            field,
            format!("at most {MAX_SHORT_STRING} bytes"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(AiError::bad_request(
            field,
            format!("must be a string (found {})", kind(other)),
        )),
    }
}

impl AiState {
    fn providers_answer(&self) -> Value {
        json!({"providers": self.registry.snapshot(), "secrets": self.secrets})
    }
}

impl Daemon for AiDaemon {
    type State = AiState;

    fn spec(&self) -> DaemonSpec {
        // Enough for one slow provider to time out and the fallback still to answer.
        let generate_timeout = self
            .config
            .request_timeout
            .saturating_add(Duration::from_secs(10));
        DaemonSpec::new("ai")
            .command(
                CommandSpec::new(
                    "ai/generate",
                    "Generate a reply, falling through the provider priority list",
                )
                .param(
                    "messages",
                    "array",
                    true,
                    "[{role: system|user|assistant, content, name?}]",
                )
                .param("provider", "string", false, "use only this provider")
                .param("model", "string", false, "override the provider's model")
                .param(
                    "maxTokens",
                    "integer",
                    false,
                    "upper bound of generated tokens",
                )
                .param(
                    "temperature",
                    "number",
                    false,
                    "sampling temperature, 0..=2",
                )
                .param(
                    "roomId",
                    "string",
                    false,
                    "room the conversation is in (retrieval searches it)",
                )
                .timeout(generate_timeout),
            )
            .command(CommandSpec::new(
                "ai/providers",
                "List the providers with health, circuit state and load (never keys)",
            ))
            .command(
                CommandSpec::new(
                    "ai/health",
                    "Run every provider's health check now, then list them",
                )
                .timeout(
                    self.config
                        .health_timeout
                        .saturating_add(Duration::from_secs(5)),
                ),
            )
    }

    async fn start(&self, ctx: &Context) -> Result<AiState, BoxError> {
        self.config.validate()?;
        // Reading secrets.env and building the HTTP clients (which load the system's CA
        // bundle from disk) is blocking file work: all of it runs on the CPU pool.
        let config = self.config.clone();
        let router = ctx.router().clone();
        let (registry, secrets) = ctx
            .spawn_cpu(move || {
                let (secrets, refused, status) = match secrets::load_secrets(&config.secrets_path())
                {
                    Ok(s) => {
                        let status = json!({"status": "loaded", "count": s.len()});
                        (s, None, status)
                    }
                    Err(e) => {
                        let cause = e.to_string();
                        tracing::warn!(error = %cause, "AI secrets refused; providers needing a key are disabled");
                        let status = json!({"status": "refused", "reason": cause});
                        (Secrets::default(), Some(cause), status)
                    }
                };
                let registry = build_registry(&config, &secrets, refused.as_deref(), Some(router));
                (registry, status)
            })
            .await
            .map_err(|e| format!("building the provider list on the CPU pool failed: {e}"))?;
        tracing::info!(
            providers = %registry.providers().iter().map(|p| p.name()).collect::<Vec<_>>().join(","),
            "AI providers registered"
        );
        Ok(AiState { registry, secrets })
    }

    async fn start_deferred(&self, ctx: &Context, state: &AiState) -> Result<(), BoxError> {
        let timeout = self.config.health_timeout;
        let registry = state.registry.clone();
        ctx.timers()
            .register_interval("health", self.config.health_interval, move || {
                let registry = registry.clone();
                async move { registry.check_all(timeout).await }
            })
            .map_err(|e| format!("cannot register the health interval: {e}"))?;
        state.registry.check_all(timeout).await;
        Ok(())
    }

    async fn handle(
        &self,
        _ctx: &Context,
        state: &AiState,
        request: Request,
    ) -> Result<Value, DaemonError> {
        match request.command.as_str() {
            "ai/generate" => {
                let (req, provider) = parse_generate(&request.params, &self.config)?;
                let answer = state
                    .registry
                    .generate(
                        &req,
                        provider.as_deref(),
                        self.config.request_timeout,
                        request.deadline,
                    )
                    .await?;
                let mut v = serde_json::to_value(&answer.response)
                    .map_err(|e| DaemonError::internal(format!("serializing the reply: {e}")))?;
                v["attempts"] = serde_json::to_value(&answer.attempts)
                    .map_err(|e| DaemonError::internal(format!("serializing attempts: {e}")))?;
                Ok(v)
            }
            "ai/providers" => Ok(state.providers_answer()),
            "ai/health" => {
                state.registry.check_all(self.config.health_timeout).await;
                Ok(state.providers_answer())
            }
            other => Err(DaemonError::unknown_command(format!(
                "the ai daemon does not serve '{other}'"
            ))),
        }
    }
}

/// The JSON kind of a value, for messages ("a string", "an array", ...).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AiConfig {
        AiConfig::default()
    }

    fn field_of(e: &AiError) -> String {
        e.to_string()
    }

    #[test]
    fn generate_params_are_validated_by_field() {
        let c = cfg();
        let cases = [
            (json!({}), "field 'messages': is required"),
            (
                json!({"messages": "hi"}),
                "field 'messages': must be an array",
            ),
            (
                json!({"messages": []}),
                "field 'messages': must not be empty",
            ),
            (json!({"messages": [1]}), "field 'messages[0]'"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "field 'messages[0].role'",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "field 'messages[0].content': is required",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "maxTokens": 0}),
                "field 'maxTokens'",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": 3}),
                "field 'temperature'",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "provider": ""}),
                "field 'provider'",
            ),
            (json!([1]), "field 'params'"),
        ];
        for (params, want) in cases {
            let e = parse_generate(&params, &c).expect_err("rejected");
            assert!(field_of(&e).starts_with(want), "{params}: {e}");
        }
        let big = "x".repeat(c.max_input_bytes + 1);
        let e = parse_generate(&json!({"messages": [{"role": "user", "content": big}]}), &c)
            .expect_err("too big");
        assert_eq!(e.code(), daemonhost_runtime::ErrorCode::Validation);
    }

    #[test]
    fn generate_params_parse() {
        let (req, provider) = parse_generate(
            &json!({
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi", "name": "ann"}
                ],
                "provider": "local", "model": "m", "maxTokens": 64, "temperature": 0.2,
                "roomId": "r1"
            }),
            &cfg(),
        )
        .expect("valid");
        assert_eq!(provider.as_deref(), Some("local"));
        assert_eq!(req.messages.len(), 2);
        assert_eq!(req.messages[1].name.as_deref(), Some("ann"));
        assert_eq!(req.max_tokens, Some(64));
        assert_eq!(req.room_id.as_deref(), Some("r1"));
    }

    #[test]
    fn keys_never_appear_in_providers_or_debug() {
        let mut secrets = Secrets::default();
        secrets.insert("OPENAI_KEY", Secret::new("sk-top-secret"));
        secrets.insert("ANTHROPIC_KEY", Secret::new("sk-ant-secret"));
        let c = AiConfig {
            providers: vec![
                ProviderConfig::openai("openai", "https://api.openai.com/v1", "gpt")
                    .api_key_env("OPENAI_KEY"),
                ProviderConfig::anthropic("claude", "claude-x", "ANTHROPIC_KEY"),
                ProviderConfig::openai("nokey", "https://x.invalid/v1", "m")
                    .api_key_env("MISSING_KEY"),
                ProviderConfig::retrieval(),
            ],
            ..AiConfig::default()
        };
        let reg = build_registry(&c, &secrets, None, None);
        let shown = format!(
            "{} {:?} {:?}",
            serde_json::to_string(&reg.snapshot()).expect("json"),
            reg,
            secrets
        );
        assert!(!shown.contains("sk-"), "{shown}");
        let snap = reg.snapshot();
        assert_eq!(snap[2]["name"], "nokey");
        assert_eq!(snap[2]["health"], "unhealthy");
        assert!(
            snap[2]["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("MISSING_KEY not found")),
            "{snap:?}"
        );
        assert_eq!(
            snap[1]["baseUrl"],
            crate::providers::anthropic::DEFAULT_BASE_URL
        );
    }

    #[test]
    fn refused_secrets_disable_only_providers_that_need_a_key() {
        let c = AiConfig {
            providers: vec![
                ProviderConfig::openai("openai", "https://api.openai.com/v1", "gpt")
                    .api_key_env("OPENAI_KEY"),
                ProviderConfig::openai("local", "http://127.0.0.1:1/v1", "m"),
                ProviderConfig::retrieval(),
            ],
            ..AiConfig::default()
        };
        let reg = build_registry(&c, &Secrets::default(), Some("mode 644"), None);
        let snap = reg.snapshot();
        assert_eq!(snap[0]["health"], "unhealthy");
        assert!(
            snap[0]["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("refused")),
            "{snap:?}"
        );
        assert_eq!(snap[1]["health"], "unknown");
        assert_eq!(snap[2]["health"], "unknown");
    }
}
