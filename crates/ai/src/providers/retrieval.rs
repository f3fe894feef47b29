//! The built-in offline adapter `retrieval`: no network, no model.
//!
//! It answers with a short, labelled summary of the most relevant earlier messages, so that a
//! host without any language model still replies something useful (and says what it is). It
//! asks the search daemon `search/messages {query: <last user message>, roomId?, limit: 5}`;
//! hits that carry no text (the search index keeps only ids) are read through
//! `data/read {collection: "chat_messages", id}`. When search is not registered or fails, the
//! reply is a fixed template saying nothing relevant was found: this adapter never fails, which
//! is what makes it the floor of the priority list. Its responses carry
//! `isLanguageModel: false`, and the text itself begins with "Retrieval summary (not a language
//! model)" so nobody mistakes it for generated prose.

use super::adapter::{Adapter, BoxFuture, GenerateRequest, GenerateResponse};
use crate::config::ProviderKind;
use crate::error::AdapterError;
use daemonhost_runtime::Router;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Hits asked of the search daemon.
pub const RETRIEVAL_HITS: usize = 5;
/// The label at the start of every retrieval reply.
pub const RETRIEVAL_LABEL: &str = "Retrieval summary (not a language model)";
/// The `model` reported for retrieval replies.
pub const RETRIEVAL_MODEL: &str = "retrieval-summary";
const QUERY_CHARS: usize = 500;
const QUOTE_CHARS: usize = 80;
const SNIPPET_CHARS: usize = 280;

/// One earlier message used in a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// Who wrote it, when known.
    pub sender: Option<String>,
    /// What they wrote.
    pub text: String,
}

/// The offline adapter.
#[derive(Debug)]
pub struct RetrievalAdapter {
    name: String,
    router: Option<Router>,
    lookup_timeout: Duration,
}

impl RetrievalAdapter {
    /// An adapter asking through `router` (`None`: always the "nothing found" template).
    pub fn new(name: &str, router: Option<Router>, lookup_timeout: Duration) -> Self {
        RetrievalAdapter {
            name: name.to_owned(),
            router,
            lookup_timeout,
        }
    }

    async fn snippets(&self, query: &str, room_id: Option<&str>) -> Vec<Snippet> {
        let Some(router) = &self.router else {
            return Vec::new();
        };
        if router.daemon_for("search/messages").is_none() {
            return Vec::new();
        }
        let mut params = json!({"query": query, "limit": RETRIEVAL_HITS});
        if let Some(r) = room_id {
            params["roomId"] = json!(r);
        }
        let found = match router
            .ask_timeout("search/messages", params, self.lookup_timeout)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "retrieval: search/messages failed");
                return Vec::new();
            }
        };
        let hits: Vec<Value> = match &found {
            Value::Array(a) => a.clone(),
            v => ["hits", "results", "messages"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_array).cloned())
                .unwrap_or_default(),
        };
        let can_read = router.daemon_for("data/read").is_some();
        let lookups = hits.into_iter().take(RETRIEVAL_HITS).map(|hit| async move {
            if let Some(s) = snippet_of(&hit) {
                return Some(s);
            }
            let id = hit.get("id").and_then(Value::as_str)?;
            if !can_read {
                return None;
            }
            let rec = router
                .ask_timeout(
                    "data/read",
                    json!({"collection": "chat_messages", "id": id}),
                    self.lookup_timeout,
                )
                .await
                .ok()?;
            snippet_of(&rec).or_else(|| rec.get("data").and_then(snippet_of))
        });
        let query_norm = query.trim();
        futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            // The message being answered is usually indexed already: do not echo it.
            .filter(|s| s.text.trim() != query_norm)
            .collect()
    }
}

/// The text (and sender) of a hit or record, trying the shapes the platform uses.
fn snippet_of(v: &Value) -> Option<Snippet> {
    let text = v
        .get("text")
        .and_then(Value::as_str)
        .or_else(|| v.get("content").and_then(Value::as_str))
        .or_else(|| v.pointer("/content/text").and_then(Value::as_str))
        .or_else(|| v.get("snippet").and_then(Value::as_str))?
        .trim();
    if text.is_empty() {
        return None;
    }
    let sender = ["senderName", "sender", "author"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .map(str::to_owned);
    Some(Snippet {
        sender,
        text: text.to_owned(),
    })
}

fn clip(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut c: String = one_line.chars().take(max).collect();
        c.push('…');
        c
    }
}

/// The reply for `query` given the snippets found (deterministic).
pub fn compose(query: &str, snippets: &[Snippet]) -> String {
    let q = clip(query, QUOTE_CHARS);
    if snippets.is_empty() {
        return format!(
            "{RETRIEVAL_LABEL}: no relevant earlier messages were found for \"{q}\", and no \
             language model answered."
        );
    }
    let mut out = format!("{RETRIEVAL_LABEL}: earlier messages related to \"{q}\":");
    for (i, s) in snippets.iter().enumerate() {
        out.push('\n');
        out.push_str(&format!("{}. ", i.saturating_add(1)));
        if let Some(who) = &s.sender {
            out.push_str(&clip(who, 40));
            out.push_str(": ");
        }
        out.push_str(&clip(&s.text, SNIPPET_CHARS));
    }
    out
}

impl Adapter for RetrievalAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Retrieval
    }

    fn generate<'a>(
        &'a self,
        req: &'a GenerateRequest,
    ) -> BoxFuture<'a, Result<GenerateResponse, AdapterError>> {
        Box::pin(async move {
            let started = Instant::now();
            let query: String = req
                .last_user_text()
                .unwrap_or_default()
                .chars()
                .take(QUERY_CHARS)
                .collect();
            let snippets = if query.trim().is_empty() {
                Vec::new()
            } else {
                self.snippets(&query, req.room_id.as_deref()).await
            };
            Ok(GenerateResponse {
                text: compose(&query, &snippets),
                provider: self.name.clone(),
                model: RETRIEVAL_MODEL.to_owned(),
                usage: None,
                is_language_model: false,
                latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        // Offline by design: it always answers, with or without a search daemon.
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_labels_and_lists_hits() {
        let text = compose(
            "when is the release?",
            &[
                Snippet {
                    sender: Some("ann".into()),
                    text: "release is on friday".into(),
                },
                Snippet {
                    sender: None,
                    text: "  multi\nline  ".into(),
                },
            ],
        );
        assert!(text.starts_with(RETRIEVAL_LABEL), "{text}");
        assert!(text.contains("1. ann: release is on friday"), "{text}");
        assert!(text.contains("2. multi line"), "{text}");
    }

    #[test]
    fn compose_without_hits_says_so() {
        let text = compose("anything", &[]);
        assert!(text.starts_with(RETRIEVAL_LABEL));
        assert!(text.contains("no relevant earlier messages were found"));
    }

    #[test]
    fn snippets_are_read_from_the_platform_shapes() {
        let rec = json!({"senderName": "bo", "content": {"text": "hello there"}});
        assert_eq!(
            snippet_of(&rec),
            Some(Snippet {
                sender: Some("bo".into()),
                text: "hello there".into()
            })
        );
        assert_eq!(snippet_of(&json!({"id": "x", "score": 1.0})), None);
    }

    #[tokio::test]
    async fn without_a_router_it_answers_the_template() {
        let a = RetrievalAdapter::new("retrieval", None, Duration::from_secs(1));
        let req = GenerateRequest::new(vec![crate::providers::adapter::ChatMessage::new(
            crate::providers::adapter::Role::User,
            "hi",
        )]);
        let r = a.generate(&req).await.expect("never fails");
        assert!(!r.is_language_model);
        assert_eq!(r.provider, "retrieval");
        assert!(r.text.contains("no relevant earlier messages"));
    }
}
