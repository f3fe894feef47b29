//! The priority list: each adapter wrapped with its circuit breaker, its concurrency limit,
//! its health and its counters, and the walk that falls through it.
//!
//! The walk never waits on a provider that cannot help: an open circuit fails fast with its
//! cause, and a provider already at `max_concurrency` is skipped (that is load, not a fault, so
//! it does not count against the breaker). Only a call that was made and failed counts. A call
//! dropped half-way (the caller's deadline) gives its half-open probe slot back through the
//! guard's `Drop`, so a cancelled probe cannot wedge a circuit half-open.

use crate::breaker::{CircuitBreaker, CircuitState, Ticket};
use crate::config::{BreakerConfig, ProviderConfig, ProviderKind};
use crate::error::{AdapterError, AiError, Attempt, Outcome};
use crate::providers::adapter::{Adapter, GenerateRequest, GenerateResponse};
use daemonhost_runtime::{ErrorCode, Semaphore};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// The last health check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The check passed.
    Healthy,
    /// The check failed (or the provider is unusable as configured).
    Unhealthy,
    /// Not checked yet.
    Unknown,
}

#[derive(Debug)]
struct Status {
    breaker: CircuitBreaker,
    health: Health,
    last_error: Option<String>,
    checked_at_ms: Option<u64>,
}

/// One provider of the list.
#[derive(Debug)]
pub struct Provider {
    config: ProviderConfig,
    adapter: Box<dyn Adapter>,
    /// Why it cannot be used at all (e.g. its key is missing); such a provider is skipped.
    disabled: Option<String>,
    status: Mutex<Status>,
    permits: Semaphore,
    calls: AtomicU64,
    failures: AtomicU64,
}

/// [`daemonhost_protocol::time::now_ms`] as the unsigned milliseconds of `checkedAtMs`.
fn now_ms_u64() -> u64 {
    u64::try_from(daemonhost_protocol::time::now_ms()).unwrap_or(0)
}

impl Provider {
    /// Wrap `adapter`; `disabled` marks it unusable with a cause.
    pub fn new(
        config: ProviderConfig,
        adapter: Box<dyn Adapter>,
        disabled: Option<String>,
        breaker: BreakerConfig,
    ) -> Self {
        let health = if disabled.is_some() {
            Health::Unhealthy
        } else {
            Health::Unknown
        };
        Provider {
            permits: Semaphore::new(config.max_concurrency.max(1)),
            status: Mutex::new(Status {
                breaker: CircuitBreaker::new(breaker),
                health,
                last_error: disabled.clone(),
                checked_at_ms: None,
            }),
            config,
            adapter,
            disabled,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The circuit state now.
    pub fn circuit(&self) -> CircuitState {
        self.status.lock().breaker.state(Instant::now())
    }

    /// The last health verdict.
    pub fn health(&self) -> Health {
        self.status.lock().health
    }

    /// Calls made (not counting skips).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn attempt(&self, outcome: Outcome, reason: Option<String>) -> Attempt {
        Attempt {
            provider: self.config.name.clone(),
            outcome,
            reason,
        }
    }

    /// Take a breaker ticket and a permit, or say why not (without waiting).
    fn acquire(&self) -> Result<Call<'_>, Attempt> {
        if let Some(cause) = &self.disabled {
            return Err(self.attempt(Outcome::Disabled, Some(cause.clone())));
        }
        let mut st = self.status.lock();
        let ticket = st.breaker.try_acquire(Instant::now()).map_err(|r| {
            let reason = if r.retry_in.is_zero() {
                r.cause
            } else {
                format!("{}; next probe in {} ms", r.cause, r.retry_in.as_millis())
            };
            self.attempt(Outcome::CircuitOpen, Some(reason))
        })?;
        match self.permits.try_acquire() {
            Ok(permit) => Ok(Call {
                provider: self,
                ticket: Some(ticket),
                _permit: permit,
            }),
            Err(_) => {
                st.breaker.on_abandon(ticket);
                Err(self.attempt(
                    Outcome::Busy,
                    Some(format!(
                        "{} of {} calls in flight",
                        self.permits.in_use(),
                        self.permits.capacity()
                    )),
                ))
            }
        }
    }

    /// Run the health check (bounded by `timeout`) and feed the verdict to the breaker.
    pub async fn check(&self, timeout: Duration) -> Health {
        if let Some(cause) = &self.disabled {
            let mut st = self.status.lock();
            st.health = Health::Unhealthy;
            st.last_error = Some(cause.clone());
            st.checked_at_ms = Some(now_ms_u64());
            return Health::Unhealthy;
        }
        let result = match tokio::time::timeout(timeout, self.adapter.health()).await {
            Ok(r) => r,
            Err(_) => Err(AdapterError::Timeout {
                provider: self.config.name.clone(),
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        let mut st = self.status.lock();
        st.checked_at_ms = Some(now_ms_u64());
        match result {
            Ok(()) => {
                st.breaker.record_health(Instant::now(), Ok(()));
                st.health = Health::Healthy;
            }
            Err(e) => {
                let msg = format!("health check: {e}");
                st.breaker.record_health(Instant::now(), Err(&msg));
                st.health = Health::Unhealthy;
                st.last_error = Some(msg);
            }
        }
        st.health
    }

    /// The `ai/providers` entry (never the key).
    pub fn snapshot(&self) -> Value {
        let st = self.status.lock();
        let base_url = match self.config.kind {
            ProviderKind::Anthropic => Some(
                self.config
                    .base_url
                    .clone()
                    .unwrap_or_else(|| crate::providers::anthropic::DEFAULT_BASE_URL.to_owned()),
            ),
            ProviderKind::Openai => self.config.base_url.clone(),
            ProviderKind::Retrieval => None,
        };
        let model = match self.config.kind {
            ProviderKind::Retrieval => {
                Some(crate::providers::retrieval::RETRIEVAL_MODEL.to_owned())
            }
            _ => self.config.model.clone(),
        };
        json!({
            "name": self.config.name,
            "kind": self.config.kind.as_str(),
            "model": model,
            "baseUrl": base_url,
            "priority": self.config.priority,
            "isLanguageModel": self.config.kind != ProviderKind::Retrieval,
            "health": st.health,
            "circuit": st.breaker.state(Instant::now()).as_str(),
            "consecutiveFailures": st.breaker.consecutive_failures(),
            "timesOpened": st.breaker.times_opened(),
            "lastError": st.last_error.clone().or_else(|| st.breaker.last_error().map(str::to_owned)),
            "checkedAtMs": st.checked_at_ms,
            "inFlight": self.permits.in_use(),
            "maxConcurrency": self.permits.capacity(),
            "calls": self.calls.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
        })
    }
}

/// One admitted call: holds the permit, and gives an unreturned probe ticket back on drop.
struct Call<'a> {
    provider: &'a Provider,
    ticket: Option<Ticket>,
    _permit: OwnedSemaphorePermit,
}

impl Call<'_> {
    async fn run(
        mut self,
        req: &GenerateRequest,
        budget: Duration,
    ) -> Result<GenerateResponse, AdapterError> {
        let p = self.provider;
        p.calls.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(budget, p.adapter.generate(req)).await {
            Ok(r) => r,
            Err(_) => Err(AdapterError::Timeout {
                provider: p.config.name.clone(),
                after_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        let mut st = p.status.lock();
        if let Some(ticket) = self.ticket.take() {
            match &result {
                Ok(_) => {
                    st.breaker.on_success(ticket);
                    st.last_error = None;
                }
                Err(e) => {
                    p.failures.fetch_add(1, Ordering::Relaxed);
                    let msg = e.to_string();
                    if e.counts_against_provider() {
                        st.breaker.on_failure(ticket, Instant::now(), &msg);
                    } else {
                        // The provider answered: it is up, this request was refused.
                        st.breaker.on_success(ticket);
                    }
                    st.last_error = Some(msg);
                }
            }
        }
        result
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.provider.status.lock().breaker.on_abandon(ticket);
        }
    }
}

/// Stands in for a provider that cannot be built as configured (its key is missing or was
/// refused, its client could not be built): every call fails with the cause.
#[derive(Debug)]
pub struct DisabledAdapter {
    name: String,
    kind: ProviderKind,
    reason: String,
}

impl DisabledAdapter {
    /// An adapter that always fails with `reason`.
    pub fn new(name: &str, kind: ProviderKind, reason: impl Into<String>) -> Self {
        DisabledAdapter {
            name: name.to_owned(),
            kind,
            reason: reason.into(),
        }
    }

    fn err(&self) -> AdapterError {
        AdapterError::Config {
            provider: self.name.clone(),
            reason: self.reason.clone(),
        }
    }
}

impl Adapter for DisabledAdapter {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> ProviderKind {
        self.kind
    }
    fn generate<'a>(
        &'a self,
        _req: &'a GenerateRequest,
    ) -> crate::providers::adapter::BoxFuture<'a, Result<GenerateResponse, AdapterError>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn health(&self) -> crate::providers::adapter::BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move { Err(self.err()) })
    }
}

/// The answer of a walk: the reply and what happened to each provider tried.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The reply.
    pub response: GenerateResponse,
    /// Every provider tried or skipped, in order, ending with the one that answered.
    pub attempts: Vec<Attempt>,
}

/// The providers in priority order.
#[derive(Debug, Clone)]
pub struct Registry {
    providers: Arc<Vec<Arc<Provider>>>,
}

impl Registry {
    /// Sort by descending priority (config order breaks ties).
    pub fn new(mut providers: Vec<Provider>) -> Self {
        providers.sort_by_key(|p| std::cmp::Reverse(p.config.priority));
        Registry {
            providers: Arc::new(providers.into_iter().map(Arc::new).collect()),
        }
    }

    /// The providers, in the order they are tried.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Every provider's `ai/providers` entry.
    pub fn snapshot(&self) -> Vec<Value> {
        self.providers.iter().map(|p| p.snapshot()).collect()
    }

    /// Check every provider at once, each bounded by `timeout`.
    pub async fn check_all(&self, timeout: Duration) {
        futures_util::future::join_all(self.providers.iter().map(|p| p.check(timeout))).await;
    }

    /// Generate with `only` that provider, or walk the list: skip open circuits, full and
    /// disabled providers, fall through failures. Each call is bounded by `per_call` and by
    /// what is left until `deadline`.
    pub async fn generate(
        &self,
        req: &GenerateRequest,
        only: Option<&str>,
        per_call: Duration,
        deadline: Instant,
    ) -> Result<Answer, AiError> {
        let budget = || {
            per_call
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1))
        };
        if let Some(name) = only {
            let Some(p) = self.get(name) else {
                return Err(AiError::UnknownProvider {
                    name: name.to_owned(),
                    known: self
                        .providers
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let call = p.acquire().map_err(|a| {
                let code = match a.outcome {
                    Outcome::Busy => ErrorCode::Overloaded,
                    _ => ErrorCode::Unavailable,
                };
                AiError::ProviderFailed(a, code)
            })?;
            return match call.run(req, budget()).await {
                Ok(response) => Ok(Answer {
                    response,
                    attempts: vec![p.attempt(Outcome::Answered, None)],
                }),
                Err(e) => Err(AiError::ProviderFailed(
                    p.attempt(Outcome::Failed, Some(e.to_string())),
                    e.code(),
                )),
            };
        }
        let mut attempts = Vec::with_capacity(self.providers.len());
        for p in self.providers.iter() {
            let call = match p.acquire() {
                Ok(c) => c,
                Err(skipped) => {
                    attempts.push(skipped);
                    continue;
                }
            };
            match call.run(req, budget()).await {
                Ok(response) => {
                    attempts.push(p.attempt(Outcome::Answered, None));
                    return Ok(Answer { response, attempts });
                }
                Err(e) => {
                    tracing::debug!(provider = p.name(), error = %e, "AI provider failed; falling through");
                    attempts.push(p.attempt(Outcome::Failed, Some(e.to_string())));
                }
            }
        }
        Err(AiError::AllFailed { attempts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::adapter::{BoxFuture, ChatMessage, Role};
    use std::sync::atomic::AtomicBool;

    /// A scripted adapter: fails while `down`, optionally waits on `gate` before answering.
    #[derive(Debug)]
    struct Fake {
        name: String,
        down: Arc<AtomicBool>,
        calls: Arc<AtomicU64>,
        gate: Option<Arc<tokio::sync::Notify>>,
    }

    impl Adapter for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        fn kind(&self) -> ProviderKind {
            ProviderKind::Openai
        }
        fn generate<'a>(
            &'a self,
            _req: &'a GenerateRequest,
        ) -> BoxFuture<'a, Result<GenerateResponse, AdapterError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if let Some(g) = &self.gate {
                    g.notified().await;
                }
                if self.down.load(Ordering::SeqCst) {
                    return Err(AdapterError::Connect {
                        provider: self.name.clone(),
                        reason: "connection refused".into(),
                    });
                }
                Ok(GenerateResponse {
                    text: format!("hello from {}", self.name),
                    provider: self.name.clone(),
                    model: "m".into(),
                    usage: None,
                    is_language_model: true,
                    latency_ms: 0,
                })
            })
        }
        fn health(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    Err(AdapterError::Connect {
                        provider: self.name.clone(),
                        reason: "connection refused".into(),
                    })
                } else {
                    Ok(())
                }
            })
        }
    }

    struct Handle {
        down: Arc<AtomicBool>,
        calls: Arc<AtomicU64>,
    }

    fn fake(
        name: &str,
        priority: i32,
        max: usize,
        gate: Option<Arc<tokio::sync::Notify>>,
    ) -> (Provider, Handle) {
        let down = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let adapter = Fake {
            name: name.into(),
            down: down.clone(),
            calls: calls.clone(),
            gate,
        };
        let cfg = ProviderConfig::openai(name, "http://127.0.0.1:1/v1", "m")
            .priority(priority)
            .max_concurrency(max);
        (
            Provider::new(cfg, Box::new(adapter), None, BreakerConfig::default()),
            Handle { down, calls },
        )
    }

    fn req() -> GenerateRequest {
        GenerateRequest::new(vec![ChatMessage::new(Role::User, "hi")])
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    const CALL: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn priority_order_and_fall_through_on_failure() {
        let (low, _l) = fake("low", 1, 4, None);
        let (high, h) = fake("high", 10, 4, None);
        let reg = Registry::new(vec![low, high]);
        let names: Vec<&str> = reg.providers().iter().map(|p| p.name()).collect();
        assert_eq!(names, ["high", "low"]);

        let a = reg
            .generate(&req(), None, CALL, far())
            .await
            .expect("answer");
        assert_eq!(a.response.provider, "high");

        h.down.store(true, Ordering::SeqCst);
        let a = reg
            .generate(&req(), None, CALL, far())
            .await
            .expect("answer");
        assert_eq!(a.response.provider, "low");
        assert_eq!(a.attempts.len(), 2);
        assert_eq!(a.attempts[0].outcome, Outcome::Failed);
        assert!(
            a.attempts[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("connection refused"))
        );
        assert_eq!(a.attempts[1].outcome, Outcome::Answered);
    }

    #[tokio::test]
    async fn an_open_circuit_is_skipped_without_calling() {
        let (high, h) = fake("high", 10, 4, None);
        let (low, _l) = fake("low", 1, 4, None);
        let reg = Registry::new(vec![high, low]);
        h.down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            reg.generate(&req(), None, CALL, far()).await.expect("low");
        }
        assert_eq!(h.calls.load(Ordering::SeqCst), 3);
        assert_eq!(reg.providers()[0].circuit(), CircuitState::Open);
        let a = reg.generate(&req(), None, CALL, far()).await.expect("low");
        assert_eq!(a.attempts[0].outcome, Outcome::CircuitOpen);
        assert_eq!(h.calls.load(Ordering::SeqCst), 3, "no call while open");
        // Asking for it explicitly fails fast too.
        let e = reg
            .generate(&req(), Some("high"), CALL, far())
            .await
            .expect_err("open");
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.to_string().contains("circuit open"), "{e}");
    }

    #[tokio::test]
    async fn a_full_provider_is_skipped_and_not_counted_as_failure() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let (high, h) = fake("high", 10, 1, Some(gate.clone()));
        let (low, _l) = fake("low", 1, 4, None);
        let reg = Registry::new(vec![high, low]);
        let reg2 = reg.clone();
        let held = tokio::spawn(async move { reg2.generate(&req(), None, CALL, far()).await });
        // Wait until the first call holds the only permit.
        tokio::time::timeout(Duration::from_secs(5), async {
            while h.calls.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("first call started");
        let a = reg.generate(&req(), None, CALL, far()).await.expect("low");
        assert_eq!(a.attempts[0].outcome, Outcome::Busy);
        assert_eq!(a.response.provider, "low");
        let e = reg
            .generate(&req(), Some("high"), CALL, far())
            .await
            .expect_err("busy");
        assert_eq!(e.code(), ErrorCode::Overloaded);
        gate.notify_one();
        let first = held.await.expect("joined").expect("answered");
        assert_eq!(first.response.provider, "high");
        assert_eq!(reg.providers()[0].snapshot()["failures"], 0);
    }

    #[tokio::test]
    async fn all_failing_lists_every_cause() {
        let (a, ha) = fake("a", 2, 4, None);
        let (b, hb) = fake("b", 1, 4, None);
        ha.down.store(true, Ordering::SeqCst);
        hb.down.store(true, Ordering::SeqCst);
        let reg = Registry::new(vec![a, b]);
        let e = reg
            .generate(&req(), None, CALL, far())
            .await
            .expect_err("all down");
        assert_eq!(e.code(), ErrorCode::Unavailable);
        let msg = e.to_string();
        assert!(
            msg.contains("a: failed") && msg.contains("b: failed"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn unknown_and_disabled_providers() {
        let (a, _) = fake("a", 1, 4, None);
        let cfg = ProviderConfig::anthropic("claude", "c", "ANTHROPIC_KEY").priority(5);
        let dis = Provider::new(
            cfg,
            Box::new(DisabledAdapter::new(
                "claude",
                ProviderKind::Anthropic,
                "key ANTHROPIC_KEY not found",
            )),
            Some("key ANTHROPIC_KEY not found".into()),
            BreakerConfig::default(),
        );
        let reg = Registry::new(vec![dis, a]);
        let e = reg
            .generate(&req(), Some("nope"), CALL, far())
            .await
            .expect_err("unknown");
        assert_eq!(e.code(), ErrorCode::Validation);
        assert!(e.to_string().contains("claude, a"), "{e}");
        let ans = reg.generate(&req(), None, CALL, far()).await.expect("a");
        assert_eq!(ans.attempts[0].outcome, Outcome::Disabled);
        assert_eq!(reg.providers()[0].snapshot()["health"], "unhealthy");
    }

    #[tokio::test]
    async fn health_checks_open_the_circuit_of_a_dead_provider() {
        let (a, h) = fake("a", 1, 4, None);
        let reg = Registry::new(vec![a]);
        h.down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            reg.check_all(CALL).await;
        }
        let s = &reg.snapshot()[0];
        assert_eq!(s["health"], "unhealthy");
        assert_eq!(s["circuit"], "open");
        h.down.store(false, Ordering::SeqCst);
        reg.check_all(CALL).await;
        assert_eq!(reg.providers()[0].circuit(), CircuitState::HalfOpen);
        let ans = reg
            .generate(&req(), None, CALL, far())
            .await
            .expect("probe");
        assert_eq!(ans.response.provider, "a");
        assert_eq!(reg.providers()[0].circuit(), CircuitState::Closed);
    }
}
