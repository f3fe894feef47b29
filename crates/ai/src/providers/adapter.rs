//! The adapter seam: one trait every provider implements, and the request/response shapes.
//!
//! The trait is object-safe (boxed futures) so the priority list is a plain
//! `Vec<Box<dyn Adapter>>` built from config, and tests can put fakes in it. Adapters know
//! nothing of breakers, semaphores or fall-through: the registry wraps them.

use crate::config::ProviderKind;
use crate::error::AdapterError;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future borrowing the adapter.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// A person (or another persona) speaking to the model.
    User,
    /// The model's earlier turns.
    Assistant,
}

impl Role {
    /// Parse `system|user|assistant`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// The speaker's name, for multi-party rooms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message without a name.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            name: None,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Overrides the provider's configured model.
    pub model: Option<String>,
    /// Upper bound of generated tokens.
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0..=2).
    pub temperature: Option<f64>,
    /// The room the conversation is in (the retrieval adapter searches it).
    pub room_id: Option<String>,
}

impl GenerateRequest {
    /// A request with only messages.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        GenerateRequest {
            messages,
            model: None,
            max_tokens: None,
            temperature: None,
            room_id: None,
        }
    }

    /// The last user message (or the last message of any role).
    pub fn last_user_text(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .or_else(|| self.messages.last())
            .map(|m| m.content.as_str())
    }
}

/// Token counts, when the provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Tokens read.
    pub prompt_tokens: u64,
    /// Tokens written.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

/// A generated reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponse {
    /// The reply.
    pub text: String,
    /// The provider that answered (its configured name).
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// Token counts, when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// False for the retrieval adapter: its text is a summary of earlier messages.
    pub is_language_model: bool,
    /// Time spent in the provider call.
    pub latency_ms: u64,
}

/// A provider behind the daemon.
pub trait Adapter: Send + Sync + std::fmt::Debug {
    /// The configured name.
    fn name(&self) -> &str;
    /// Which kind of API it speaks.
    fn kind(&self) -> ProviderKind;
    /// Generate one reply.
    fn generate<'a>(
        &'a self,
        req: &'a GenerateRequest,
    ) -> BoxFuture<'a, Result<GenerateResponse, AdapterError>>;
    /// A cheap check that the provider answers.
    fn health(&self) -> BoxFuture<'_, Result<(), AdapterError>>;
}
