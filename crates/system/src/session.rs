//! The session daemon: `session/create`, `session/get`, `session/list`, `session/destroy`.
//!
//! Sessions live in memory only: `{id (UUID v4), createdAt, expiresAt, metadata}`. The store is
//! bounded twice: at most `max_sessions` sessions, each with at most `max_metadata_bytes` of
//! metadata. At capacity, `session/create` answers `overloaded` (after sweeping what has
//! expired) rather than evicting someone else's live session: losing a session silently would
//! surprise its owner, while a refused create is visible and retryable.
//!
//! Expiry without a timer per session: an ordered index `(expires_at, id)` next to the map. Every
//! access first pops the expired front of that index (so an expired session is never returned),
//! and ONE interval timer registered with the daemon's timers sweeps the same way, so memory is
//! given back even when nobody calls. Sessions do not slide: `session/get` does not extend them.
//!
//! Events: `session:created` (data: the session) and `session:destroyed` (data: `{id}`).

use crate::params_of;
use daemonhost_protocol::params::{ParamError, Params};
use daemonhost_protocol::time::format_ms;
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use uuid::Uuid;

/// Bounds and defaults of the session store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Live sessions at most; one more `session/create` answers `overloaded`.
    pub max_sessions: usize,
    /// Lifetime of a session created without `ttl_secs`.
    pub ttl: Duration,
    /// Upper bound for `ttl_secs`.
    pub max_ttl: Duration,
    /// Largest accepted `metadata`, serialized as JSON.
    pub max_metadata_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_sessions: 10_000,
            ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            max_metadata_bytes: 64 * 1024,
        }
    }
}

impl SessionConfig {
    /// How often the one sweep timer runs: a quarter of the default TTL, within 1–60 s.
    pub fn sweep_period(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// One session.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    id: Uuid,
    created: SystemTime,
    expires_wall: SystemTime,
    expires: Instant,
    metadata: Value,
}

impl Session {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "createdAt": rfc3339(self.created),
            "expiresAt": rfc3339(self.expires_wall),
            "metadata": self.metadata,
        })
    }
}

/// Why a create was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CreateError {
    Full { max: usize },
}

/// The bounded, expiring map. Pure: every operation takes `now`, so expiry is testable without
/// waiting.
#[derive(Debug, Default)]
struct Store {
    by_id: HashMap<Uuid, Session>,
    by_expiry: BTreeSet<(Instant, Uuid)>,
}

impl Store {
    /// Drop every session whose expiry is at or before `now`; returns how many.
    fn sweep(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(at, id)) = self.by_expiry.first() {
            if at > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_id.remove(&id);
            n += 1;
        }
        n
    }

    fn create(
        &mut self,
        now: Instant,
        wall: SystemTime,
        ttl: Duration,
        metadata: Value,
        max: usize,
    ) -> Result<Session, CreateError> {
        self.sweep(now);
        if self.by_id.len() >= max {
            return Err(CreateError::Full { max });
        }
        let id = Uuid::new_v4();
        let s = Session {
            id,
            created: wall,
            expires_wall: wall + ttl,
            expires: now + ttl,
            metadata,
        };
        self.by_expiry.insert((s.expires, id));
        self.by_id.insert(id, s.clone());
        Ok(s)
    }

    fn get(&mut self, now: Instant, id: &Uuid) -> Option<&Session> {
        self.sweep(now);
        self.by_id.get(id)
    }

    fn destroy(&mut self, now: Instant, id: &Uuid) -> bool {
        self.sweep(now);
        match self.by_id.remove(id) {
            Some(s) => {
                self.by_expiry.remove(&(s.expires, s.id));
                true
            }
            None => false,
        }
    }

    /// Up to `limit` sessions, oldest first, and the total count.
    fn list(&mut self, now: Instant, limit: usize) -> (Vec<&Session>, usize) {
        self.sweep(now);
        let mut all: Vec<&Session> = self.by_id.values().collect();
        all.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        let total = all.len();
        all.truncate(limit);
        (all, total)
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// The `session` daemon.
#[derive(Debug, Clone, Default)]
pub struct SessionDaemon {
    cfg: SessionConfig,
}

impl SessionDaemon {
    /// A session daemon with these bounds.
    pub fn new(cfg: SessionConfig) -> Self {
        SessionDaemon { cfg }
    }
}

/// The daemon's state: the store behind a short mutex (never held across an await).
#[derive(Debug, Default)]
pub struct SessionState {
    store: Arc<Mutex<Store>>,
}

const DEFAULT_LIST_LIMIT: u64 = 100;
const MAX_LIST_LIMIT: u64 = 1000;

impl Daemon for SessionDaemon {
    type State = SessionState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("session")
            .command(
                CommandSpec::new(
                    "session/create",
                    "Create an in-memory session; answers {id, createdAt, expiresAt, metadata}",
                )
                .param(
                    "metadata",
                    "object",
                    false,
                    "free-form data kept with the session",
                )
                .param(
                    "ttl_secs",
                    "integer",
                    false,
                    "lifetime in seconds (default from the host config)",
                ),
            )
            .command(
                CommandSpec::new("session/get", "One live session by id").param(
                    "id",
                    "string",
                    true,
                    "the session's UUID",
                ),
            )
            .command(
                CommandSpec::new(
                    "session/list",
                    "Live sessions, oldest first: {count, sessions}",
                )
                .param(
                    "limit",
                    "integer",
                    false,
                    "at most this many sessions (default 100, max 1000)",
                ),
            )
            .command(
                CommandSpec::new("session/destroy", "End a session now").param(
                    "id",
                    "string",
                    true,
                    "the session's UUID",
                ),
            )
    }

    async fn start(&self, ctx: &Context) -> Result<SessionState, BoxError> {
        let state = SessionState::default();
        let store = Arc::clone(&state.store);
        ctx.timers()
            .register_interval("session-sweep", self.cfg.sweep_period(), move || {
                let store = Arc::clone(&store);
                async move {
                    let n = store.lock().sweep(Instant::now());
                    if n > 0 {
                        tracing::debug!(expired = n, "Swept expired sessions");
                    }
                }
            })?;
        Ok(state)
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &SessionState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let mut p = params_of(req.params)?;
        let now = Instant::now();
        match req.command.as_str() {
            "session/create" => {
                let metadata = p.opt_object("metadata")?.unwrap_or_default();
                let size = serde_json::to_vec(&metadata)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > self.cfg.max_metadata_bytes {
                    return Err(DaemonError::from(ParamError::invalid(
                        "metadata",
                        format!(
                            "at most {} bytes of JSON (got {size})",
                            self.cfg.max_metadata_bytes
                        ),
                    )));
                }
                let metadata = Value::Object(metadata);
                let ttl = p
                    .opt_u64_range("ttl_secs", 1, self.cfg.max_ttl.as_secs())?
                    .map_or(self.cfg.ttl, Duration::from_secs);
                let created = state.store.lock().create(
                    now,
                    SystemTime::now(),
                    ttl,
                    metadata,
                    self.cfg.max_sessions,
                );
                match created {
                    Ok(s) => {
                        let v = s.to_json();
                        ctx.publish("session:created", v.clone());
                        Ok(v)
                    }
                    Err(CreateError::Full { max }) => Err(DaemonError::overloaded(format!(
                        "the session store is full ({max} live sessions); destroy some or retry after they expire"
                    ))),
                }
            }
            "session/get" => {
                let id = parse_id(&p)?;
                let mut store = state.store.lock();
                store
                    .get(now, &id)
                    .map(Session::to_json)
                    .ok_or_else(|| not_found(&id))
            }
            "session/destroy" => {
                let id = parse_id(&p)?;
                let destroyed = state.store.lock().destroy(now, &id);
                if destroyed {
                    ctx.publish("session:destroyed", json!({"id": id.to_string()}));
                    Ok(json!({"id": id.to_string(), "destroyed": true}))
                } else {
                    Err(not_found(&id))
                }
            }
            "session/list" => {
                let limit = p
                    .opt_u64_range("limit", 0, MAX_LIST_LIMIT)?
                    .unwrap_or(DEFAULT_LIST_LIMIT);
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let mut store = state.store.lock();
                let (sessions, total) = store.list(now, limit);
                let sessions: Vec<Value> = sessions.into_iter().map(Session::to_json).collect();
                Ok(json!({"count": total, "sessions": sessions}))
            }
            other => Err(DaemonError::unknown_command(format!(
                "daemon 'session' does not serve '{other}'"
            ))),
        }
    }

    async fn stop(&self, _ctx: &Context, state: SessionState) {
        let n = state.store.lock().len();
        tracing::debug!(sessions = n, "Session store dropped");
    }
}

fn parse_id(p: &Params) -> Result<Uuid, DaemonError> {
    let raw = p.str("id")?;
    Uuid::parse_str(raw).map_err(|_| {
        DaemonError::from(ParamError::invalid(
            "id",
            format!("must be a UUID (got '{raw}')"),
        ))
    })
}

fn not_found(id: &Uuid) -> DaemonError {
    DaemonError::not_found(format!(
        "no live session '{id}' (it never existed, expired or was destroyed)"
    ))
}

/// `2025-01-31T12:00:00.123Z`: the protocol's canonical time text of a wall-clock instant.
fn rfc3339(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    format_ms(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemonhost_runtime::ErrorCode;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // last second of 2024
        assert_eq!(rfc3339(t), "2024-12-31T23:59:59.000Z");
    }

    #[test]
    fn store_expires_in_order_and_is_bounded() {
        let mut s = Store::default();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let a = s
            .create(t0, wall, Duration::from_secs(10), json!({}), 2)
            .expect("a");
        let b = s
            .create(t0, wall, Duration::from_secs(20), json!({}), 2)
            .expect("b");
        assert_eq!(
            s.create(t0, wall, Duration::from_secs(5), json!({}), 2),
            Err(CreateError::Full { max: 2 })
        );
        assert!(s.get(t0 + Duration::from_secs(9), &a.id).is_some());
        // At its expiry instant the session is gone.
        assert!(s.get(t0 + Duration::from_secs(10), &a.id).is_none());
        assert!(s.get(t0 + Duration::from_secs(10), &b.id).is_some());
        // Expired sessions free capacity for new ones.
        assert!(
            s.create(
                t0 + Duration::from_secs(10),
                wall,
                Duration::from_secs(1),
                json!({}),
                2
            )
            .is_ok()
        );
        assert_eq!(s.sweep(t0 + Duration::from_secs(60)), 2);
        assert_eq!((s.len(), s.by_expiry.len()), (0, 0));
    }

    #[test]
    fn store_destroy_removes_from_both_indexes() {
        let mut s = Store::default();
        let t0 = Instant::now();
        let a = s
            .create(
                t0,
                SystemTime::now(),
                Duration::from_secs(10),
                json!({"k": 1}),
                8,
            )
            .expect("a");
        assert!(s.destroy(t0, &a.id));
        assert!(!s.destroy(t0, &a.id));
        assert_eq!((s.len(), s.by_expiry.len()), (0, 0));
    }

    async fn runtime(cfg: SessionConfig) -> daemonhost_runtime::Runtime {
        daemonhost_testkit::boot(daemonhost_testkit::quiet_config(), |b| {
            b.register(SessionDaemon::new(cfg));
        })
        .await
    }

    /// What the `fmt` subscriber wrote, shared with the writer it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock()).into_owned()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_at_their_ttl_and_the_sweep_timer_frees_them_unasked() {
        // The sweep timer says what it swept (at debug); the test runtime is current-thread, so
        // the timer's task logs through this thread's subscriber.
        let logs = Captured::default();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer({
                    let logs = logs.clone();
                    move || logs.clone()
                })
                .finish(),
        );
        let rt = runtime(SessionConfig {
            max_sessions: 2,
            ttl: Duration::from_secs(30),
            ..SessionConfig::default()
        })
        .await;
        let r = rt.router();
        let s = r
            .ask("session/create", json!({"metadata": {"user": "joel"}}))
            .await
            .expect("create");
        let id = s["id"].as_str().expect("id").to_owned();
        assert_eq!(s["metadata"]["user"], "joel");
        assert!(s["createdAt"].as_str().expect("createdAt").ends_with('Z'));
        let got = r.ask("session/get", json!({"id": id})).await.expect("get");
        assert_eq!(got, s);
        let short = r
            .ask("session/create", json!({"ttl_secs": 5}))
            .await
            .expect("short");
        let e = r.ask("session/create", json!({})).await.expect_err("full");
        assert_eq!(e.code, ErrorCode::Overloaded);
        let l = r.ask("session/list", json!({})).await.expect("list");
        assert_eq!(l["count"], 2);

        tokio::time::advance(Duration::from_secs(6)).await;
        let e = r
            .ask("session/get", json!({"id": short["id"]}))
            .await
            .expect_err("expired");
        assert_eq!(e.code, ErrorCode::NotFound);
        let l = r
            .ask("session/list", json!({"limit": 10}))
            .await
            .expect("list");
        assert_eq!(l["count"], 1);

        // The sweep timer alone (no access) frees expired sessions.
        assert!(
            !logs.text().contains("Swept expired sessions"),
            "{}",
            logs.text()
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        daemonhost_testkit::eventually("the sweep timer to free the expired session", async || {
            logs.text().contains("Swept expired sessions expired=1")
        })
        .await;
        let e = r
            .ask("session/destroy", json!({"id": id}))
            .await
            .expect_err("expired");
        assert_eq!(e.code, ErrorCode::NotFound);
        rt.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn session_params_are_checked() {
        let rt = runtime(SessionConfig::default()).await;
        let r = rt.router();
        let code = |e: DaemonError| e.code;
        let answer = |e: DaemonError| (e.code, e.message);
        // The protocol's contract: missing → validation naming it, wrong type → bad_request
        // naming the type, params not an object → bad_request.
        assert_eq!(
            r.ask("session/get", json!({})).await.map_err(answer),
            Err((ErrorCode::Validation, "id: required".to_owned()))
        );
        assert_eq!(
            r.ask("session/get", json!({"id": null}))
                .await
                .map_err(answer),
            Err((ErrorCode::Validation, "id: required".to_owned()))
        );
        assert_eq!(
            r.ask("session/get", json!({"id": 7})).await.map_err(answer),
            Err((ErrorCode::BadRequest, "id: must be a string".to_owned()))
        );
        assert_eq!(
            r.ask("session/destroy", json!([1])).await.map_err(answer),
            Err((ErrorCode::BadRequest, "params must be an object".to_owned()))
        );
        assert_eq!(
            r.ask("session/list", json!({"limit": -1}))
                .await
                .map_err(answer),
            Err((
                ErrorCode::BadRequest,
                "limit: must be a non-negative integer".to_owned()
            ))
        );
        assert_eq!(
            r.ask("session/create", json!({"ttl_secs": 0}))
                .await
                .map_err(answer),
            Err((
                ErrorCode::Validation,
                "ttl_secs: at least 1 (got 0)".to_owned()
            ))
        );
        assert_eq!(
            r.ask("session/get", json!({"id": "nope"}))
                .await
                .map_err(code),
            Err(ErrorCode::Validation)
        );
        assert_eq!(
            r.ask("session/get", json!({"id": Uuid::new_v4().to_string()}))
                .await
                .map_err(code),
            Err(ErrorCode::NotFound)
        );
        assert_eq!(
            r.ask("session/create", json!({"metadata": [1]}))
                .await
                .map_err(code),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            r.ask("session/create", json!({"ttl_secs": 0}))
                .await
                .map_err(code),
            Err(ErrorCode::Validation)
        );
        let big = "x".repeat(70_000);
        assert_eq!(
            r.ask("session/create", json!({"metadata": {"big": big}}))
                .await
                .map_err(code),
            Err(ErrorCode::Validation)
        );
        assert_eq!(
            r.ask("session/list", json!({"limit": 5000}))
                .await
                .map_err(code),
            Err(ErrorCode::Validation)
        );
        rt.shutdown().await;
    }
}
