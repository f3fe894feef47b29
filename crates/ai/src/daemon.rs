//! The `ai` daemon itself: its spec, params and dispatch over the [`Registry`].

use crate::*;

use daemonhost_protocol::params::{ParamError, ParamType, Params};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use serde_json::{Value, json};
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

/// Parse `ai/generate` params into a request and the optional provider name. Errors are the
/// protocol's params reader's (`messages: required`, `maxTokens: must be a non-negative
/// integer`, `messages[2].role: must be system, user or assistant (got 'robot')`).
pub fn parse_generate(
    params: Value,
    cfg: &AiConfig,
) -> Result<(GenerateRequest, Option<String>), AiError> {
    let mut p = Params::new(params)?;
    let messages = p.array("messages")?;
    if messages.is_empty() {
        return Err(ParamError::invalid("messages", "must not be empty").into());
    }
    if messages.len() > cfg.max_messages {
        return Err(ParamError::invalid(
            "messages",
            format!(
                "at most {} messages (got {})",
                cfg.max_messages,
                messages.len()
            ),
        )
        .into());
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let at = || format!("messages[{i}]");
        let Value::Object(m) = m else {
            return Err(ParamError::wrong_type(at(), ParamType::Object).into());
        };
        let m = message(Params::from(m)).map_err(|e| e.within(&at()))?;
        total = total.saturating_add(m.content.len());
        out.push(m);
    }
    if total > cfg.max_input_bytes {
        return Err(ParamError::invalid(
            "messages",
            format!(
                "content totals {total} bytes; at most {} are accepted",
                cfg.max_input_bytes
            ),
        )
        .into());
    }
    let provider = short_str(&mut p, "provider")?;
    let model = short_str(&mut p, "model")?;
    let room_id = short_str(&mut p, "roomId")?;
    let max_tokens = p
        .opt_u64_range("maxTokens", 1, MAX_TOKENS)?
        .and_then(|n| u32::try_from(n).ok());
    let temperature = match p.opt_f64("temperature")? {
        Some(t) if !(0.0..=2.0).contains(&t) => {
            return Err(
                ParamError::invalid("temperature", format!("must be 0..=2 (got {t})")).into(),
            );
        }
        t => t,
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

/// One entry of `messages` (its errors are named inside it; the caller adds `messages[i]`).
fn message(mut m: Params) -> Result<ChatMessage, ParamError> {
    let role = m.str("role")?;
    let role = Role::parse(role).ok_or_else(|| {
        ParamError::invalid(
            "role",
            format!(
                "must be system, user or assistant (got '{}')",
                role.chars().take(32).collect::<String>()
            ),
        )
    })?;
    let content = m.string("content")?;
    let name = short_str(&mut m, "name")?;
    Ok(ChatMessage {
        role,
        content,
        name,
    })
}

/// An optional non-empty string of at most [`MAX_SHORT_STRING`] bytes, taken out of `p`.
fn short_str(p: &mut Params, key: &str) -> Result<Option<String>, ParamError> {
    match p.opt_string(key)? {
        Some(s) if s.is_empty() => Err(ParamError::invalid(key, "must not be empty")),
        Some(s) if s.len() > MAX_SHORT_STRING => Err(ParamError::invalid(
            key,
            format!("at most {MAX_SHORT_STRING} bytes"),
        )),
        s => Ok(s),
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
                let (req, provider) = parse_generate(request.params, &self.config)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AiConfig {
        AiConfig::default()
    }

    #[test]
    fn generate_params_are_validated_by_field() {
        use daemonhost_runtime::ErrorCode::{BadRequest, Validation};
        let c = cfg();
        let cases = [
            (json!({}), Validation, "messages: required"),
            (Value::Null, Validation, "messages: required"),
            (
                json!({"messages": "hi"}),
                BadRequest,
                "messages: must be an array",
            ),
            (
                json!({"messages": []}),
                Validation,
                "messages: must not be empty",
            ),
            (
                json!({"messages": [1]}),
                BadRequest,
                "messages[0]: must be an object",
            ),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                Validation,
                "messages[0].role: must be system, user or assistant (got 'robot')",
            ),
            (
                json!({"messages": [{"content": "x"}]}),
                Validation,
                "messages[0].role: required",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                Validation,
                "messages[0].content: required",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                BadRequest,
                "messages[0].content: must be a string",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "maxTokens": 0}),
                Validation,
                "maxTokens: at least 1 (got 0)",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "maxTokens": "9"}),
                BadRequest,
                "maxTokens: must be a non-negative integer",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": 3}),
                Validation,
                "temperature: must be 0..=2 (got 3)",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
                BadRequest,
                "temperature: must be a number",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "provider": ""}),
                Validation,
                "provider: must not be empty",
            ),
            (json!([1]), BadRequest, "params must be an object"),
        ];
        for (params, code, want) in cases {
            let e = parse_generate(params.clone(), &c).expect_err("rejected");
            assert_eq!((e.code(), e.to_string().as_str()), (code, want), "{params}");
        }
        let big = "x".repeat(c.max_input_bytes + 1);
        let e = parse_generate(json!({"messages": [{"role": "user", "content": big}]}), &c)
            .expect_err("too big");
        assert_eq!(e.code(), Validation);
    }

    #[test]
    fn generate_params_parse() {
        let (req, provider) = parse_generate(
            json!({
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
