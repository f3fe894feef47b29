//! The AI provider daemon: `ai/generate`, `ai/providers`, `ai/health`.
//!
//! Why it looks like this: the original's AIProviderDaemon registered its adapters and ran
//! their health checks inside core init (12 s, later 3.7 s, before anything could be asked),
//! gave every adapter its own 30 s `setInterval`, and disabled its circuit breaker
//! (`maxConsecutiveFailures = 999999`), so a dead Ollama was called on every message. Here:
//!
//! - **Core init** only builds the priority list from config and reads `DIR/secrets.env` on the
//!   CPU pool: no network, microseconds to READY.
//! - **Deferred init** runs the first health checks (all at once, each bounded by
//!   `health_timeout`) and registers ONE `health` interval with the daemon's timers.
//! - Each provider has a **circuit breaker** that really opens ([`breaker`]) and a **concurrency
//!   limit**; `ai/generate` walks the list by priority, skipping open circuits and full
//!   providers and falling through failures, and says which provider answered and why the
//!   others did not ([`registry`]).
//! - Adapters: OpenAI-compatible HTTP ([`providers::openai`]), Anthropic messages ([`providers::anthropic`]) and the
//!   offline `retrieval` adapter ([`providers::retrieval`]), which summarises relevant earlier messages
//!   through the search daemon and says it is not a language model. The default config lists
//!   only `retrieval`, so the platform answers with no network at all.
//! - Keys come from `secrets.env` ([`secrets`]) and never reach a log line or an answer.
//!
//! Commands:
//! - `ai/generate {messages: [{role: system|user|assistant, content, name?}], provider?, model?,
//!   maxTokens?, temperature?, roomId?}` → `{text, provider, model, usage?, isLanguageModel,
//!   latencyMs, attempts: [{provider, outcome: answered|failed|circuit_open|busy|disabled,
//!   reason?}]}`. With `provider`, only that one is used (`validation` if unknown, `unavailable`
//!   if its circuit is open or it fails, `overloaded` if it is full). Without, all failing is
//!   `unavailable` listing every cause.
//!   `model` overrides the configured model of whichever network provider answers, so it is
//!   mostly useful together with `provider`. Every call is bounded by `request_timeout` and by
//!   the request's deadline; the command's default deadline is `request_timeout + 10 s`, so one
//!   provider timing out still leaves the fallback time to answer.
//! - `ai/providers` → `{providers: [{name, kind, model, baseUrl, priority, isLanguageModel,
//!   health: healthy|unhealthy|unknown, circuit: closed|open|half_open, lastError, inFlight,
//!   maxConcurrency, calls, failures, …}], secrets}`. Never a key.
//! - `ai/health` → runs every health check now, then answers like `ai/providers`.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod config;
mod daemon;
pub mod error;
pub mod providers;
pub mod registry;
pub mod secrets;

pub use breaker::{CircuitBreaker, CircuitState};
pub use config::{AiConfig, BreakerConfig, ProviderConfig, ProviderKind};
pub use daemon::AiDaemon;
pub use error::{AdapterError, AiError, Attempt, Outcome};
pub use providers::adapter::{
    Adapter, ChatMessage, GenerateRequest, GenerateResponse, Role, Usage,
};
pub use registry::{Health, Provider, Registry};
pub use secrets::{Secret, Secrets, SecretsError};
