//! A stand-in daemon: any spec, answers from a closure, records every request. Replaces the
//! hand-written `FakeLogger`, `FakeSearch`, `FakeData`, `FakeUser`, `FakeRoom` of the tests.

use daemonhost_runtime::{BoxError, Context, Daemon, DaemonError, DaemonSpec, Request};
use parking_lot::Mutex;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

type Answer = dyn Fn(&Request) -> Result<Value, DaemonError> + Send + Sync;

/// A daemon with a given spec that answers every request with a closure and records it.
/// Clones share the record: register one, keep another to read [`Fake::requests`].
///
/// ```
/// # use daemonhost_runtime::DaemonSpec;
/// # use serde_json::json;
/// let logger = daemonhost_testkit::fake::Fake::answering(
///     DaemonSpec::new("logger").prefix("log/"),
///     |_| Ok(json!({"queued": 1})),
/// );
/// assert!(logger.requests().is_empty());
/// ```
#[derive(Clone)]
pub struct Fake {
    spec: DaemonSpec,
    answer: Arc<Answer>,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl fmt::Debug for Fake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fake")
            .field("name", &self.spec.name)
            .field("requests", &self.seen.lock().len())
            .finish_non_exhaustive()
    }
}

impl Fake {
    /// A daemon that only exists (for the ordering of its dependents): every request is
    /// answered `unknown_command`.
    pub fn new(spec: DaemonSpec) -> Fake {
        Fake::answering(spec, |r| {
            Err(DaemonError::unknown_command(format!(
                "{}: the fake daemon answers nothing",
                r.command
            )))
        })
    }

    /// A daemon answering each request with `answer(&request)`.
    pub fn answering(
        spec: DaemonSpec,
        answer: impl Fn(&Request) -> Result<Value, DaemonError> + Send + Sync + 'static,
    ) -> Fake {
        Fake {
            spec,
            answer: Arc::new(answer),
            seen: Arc::default(),
        }
    }

    /// A daemon answering each request with its params.
    pub fn echo(spec: DaemonSpec) -> Fake {
        Fake::answering(spec, |r| Ok(r.params.clone()))
    }

    /// Every request so far, as (command, params), in arrival order.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.seen.lock().clone()
    }
}

impl Daemon for Fake {
    type State = ();

    fn spec(&self) -> DaemonSpec {
        self.spec.clone()
    }

    async fn start(&self, _: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn handle(&self, _: &Context, _: &(), request: Request) -> Result<Value, DaemonError> {
        let answer = (self.answer)(&request);
        self.seen
            .lock()
            .push((request.command.into_string(), request.params));
        answer
    }
}
