//! The session daemon: `session/create`, `session/get`, `session/list`, `session/destroy`.
//!
//! Sessions are records of the `sessions` collection (`crates/data/src/schemas/sessions.json`),
//! stored through the [`DataClient`] the catalog hands the daemon (in-process while `data` runs
//! in this host, routed through `data/*` otherwise), so they survive a restart of the host. The
//! daemon therefore `requires("data")`. A session is `{id (UUID v4), userId, createdAt,
//! expiresAt, metadata}`; its record also carries `status: "active"`.
//!
//! **Users.** `session/create` may name a `userId`; it must be a record of the `users`
//! collection, read through the same data client (not `user/get`: the session daemon must not
//! depend on the `user` daemon, which a host or a test may not run, and the collection is the
//! truth the user daemon's cache follows). An unknown id, or a user whose `status` is
//! `deleted`, is answered `not_found` naming it. The schema's `references: "users"` on
//! `userId` makes the data daemon check it again inside the write's transaction, so a user
//! deleted between the read and the write is refused the same way. Without `userId` the
//! session is anonymous.
//!
//! **Expiry.** `expiresAt` is stored; a session is live while `expiresAt` is after the daemon's
//! clock ([`Clock`], the wall clock unless a test sets one). Every read checks it, so an
//! expired session is never returned, listed or destroyed, also before the sweep has removed
//! it. ONE interval timer (`session-sweep`, every `sweep_interval`, and once in deferred init
//! for what expired while the host was down) deletes expired records in pages of
//! [`SWEEP_PAGE`], at most [`SWEEP_MAX_PAGES`] pages per tick (the next tick goes on), each
//! page one `data/batch`. Sessions do not slide: `session/get` does not extend them.
//!
//! **Bounds.** At most `max_sessions` records (live, or expired and not yet swept) are created
//! through `session/create`, each with at most `max_metadata_bytes` of metadata. The count is
//! kept in memory (read at start, then followed by this daemon's own writes) and resynchronised
//! with a `data/count` after each sweep; at the bound, `session/create` first sweeps (at most
//! once a second) and then answers `overloaded` rather than evicting someone else's live
//! session: losing a session silently would surprise its owner, while a refused create is
//! visible and retryable. Records written past the daemon (`data/create` into `sessions`) are
//! counted at the next resync.
//!
//! **Cache.** `session/get` answers from a bounded LRU (`sessions`, `cache_capacity` entries)
//! when it can: a cached session costs a map lookup instead of a read by id through the data
//! client (21 µs in-process, 25 µs routed: the table in `docs/ARCHITECTURE.md`). Every removal (destroy, sweep, a `data:sessions:updated|deleted`
//! event for writes made past the daemon, `truncated`, a lost event) bumps an epoch under the
//! cache's lock, and a read from the database is cached only if no removal happened while it
//! ran, so a destroyed session can never be put back by a read that raced its destroy.
//!
//! Events: `session:created` (data: the session) and `session:destroyed` (data: `{id}`).

use crate::params_of;
use daemonhost_data_client::{BatchOp, Data, DataClient, DataClientError, Handle, ListParams};
use daemonhost_protocol::params::{ParamError, Params};
use daemonhost_protocol::time::{format_ms, now_ms, parse_date_ms};
use daemonhost_runtime::{
    BoundedCache, BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Delivery,
    Request,
};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// The collection sessions are stored in.
pub const COLLECTION: &str = "sessions";
/// Expired records deleted per page (one `data/batch`) by the sweep.
pub const SWEEP_PAGE: usize = 500;
/// Pages one sweep deletes at most; what is left waits for the next tick.
pub const SWEEP_MAX_PAGES: usize = 20;
/// Longest accepted `userId`.
const MAX_USER_ID: usize = 128;
/// At the bound, `session/create` sweeps at most this often before refusing.
const FULL_SWEEP_EVERY_MS: i64 = 1000;

/// Bounds and defaults of the session store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Sessions at most (live, or expired and not yet swept); one more `session/create`
    /// answers `overloaded`.
    pub max_sessions: usize,
    /// Lifetime of a session created without `ttl_secs`.
    pub ttl: Duration,
    /// Upper bound for `ttl_secs`.
    pub max_ttl: Duration,
    /// Largest accepted `metadata`, serialized as JSON.
    pub max_metadata_bytes: usize,
    /// Period of the sweep that deletes expired records.
    pub sweep_interval: Duration,
    /// Sessions kept in the `session/get` cache.
    pub cache_capacity: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_sessions: 10_000,
            ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            max_metadata_bytes: 64 * 1024,
            sweep_interval: Duration::from_secs(60),
            cache_capacity: 4096,
        }
    }
}

/// The clock sessions expire by: the wall clock, or one a test moves by hand.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock (`expiresAt` must mean the same after a restart).
    #[default]
    System,
    /// A clock that moves only when told to.
    Manual(ManualClock),
}

impl Clock {
    /// Milliseconds since the epoch, now.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => now_ms(),
            Clock::Manual(m) => m.now_ms(),
        }
    }
}

/// A clock for tests: starts where it is told and moves only with [`ManualClock::advance`].
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start_ms` (milliseconds since the epoch).
    pub fn new(start_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start_ms)))
    }
    /// What it reads.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }
    /// Move it forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(ms))
            });
    }
}

impl From<ManualClock> for Clock {
    fn from(m: ManualClock) -> Self {
        Clock::Manual(m)
    }
}

/// Why a session operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// `userId` names no record of `users` (`not_found`).
    #[error("userId: no user with id '{0}'")]
    UnknownUser(String),
    /// `userId` names a user whose status is `deleted` (`not_found`).
    #[error("userId: user '{0}' is deleted")]
    DeletedUser(String),
    /// No live session has this id (`not_found`).
    #[error("no live session '{0}' (it never existed, expired or was destroyed)")]
    NotFound(Uuid),
    /// The store holds `max` sessions (`overloaded`).
    #[error("the session store is full ({max} sessions); destroy some or retry after they expire")]
    Full {
        /// The bound.
        max: usize,
    },
    /// The data daemon refused or failed (its own code).
    #[error(transparent)]
    Data(#[from] DataClientError),
}

impl From<SessionError> for DaemonError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Data(d) => d.into(),
            SessionError::Full { .. } => DaemonError::overloaded(e.to_string()),
            SessionError::UnknownUser(_)
            | SessionError::DeletedUser(_)
            | SessionError::NotFound(_) => DaemonError::not_found(e.to_string()),
        }
    }
}

/// One session, as answered.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    id: Uuid,
    user_id: Option<String>,
    created_at: String,
    expires_ms: i64,
    metadata: Value,
}

impl Session {
    /// A session from its record; `None` for a record that is not one (an id that is not a
    /// UUID, no `expiresAt`): such a record was not written by this daemon and is never live.
    fn from_record(r: &Value) -> Option<Session> {
        let id = Uuid::parse_str(r.get("id")?.as_str()?).ok()?;
        let expires_ms = parse_date_ms(r.get("expiresAt")?.as_str()?)?;
        Some(Session {
            id,
            user_id: r.get("userId").and_then(Value::as_str).map(str::to_owned),
            created_at: r
                .get("createdAt")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            expires_ms,
            metadata: match r.get("metadata") {
                Some(m @ Value::Object(_)) => m.clone(),
                _ => Value::Object(Map::new()),
            },
        })
    }

    fn live_at(&self, now_ms: i64) -> bool {
        self.expires_ms > now_ms
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "userId": self.user_id,
            "createdAt": self.created_at,
            "expiresAt": format_ms(self.expires_ms),
            "metadata": self.metadata,
        })
    }
}

/// The `session/get` cache: a bounded LRU and the epoch of its removals (see the module docs).
#[derive(Debug)]
struct SessionCache {
    map: BoundedCache<Uuid, Arc<Session>>,
    /// Bumped on every removal, under this lock; the map only changes with it held.
    epoch: Mutex<u64>,
}

impl SessionCache {
    fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        SessionCache {
            map: BoundedCache::with_name("sessions", capacity),
            epoch: Mutex::new(0),
        }
    }

    fn get(&self, id: &Uuid) -> Option<Arc<Session>> {
        self.map.get(id)
    }

    /// Read before a database read whose result may be cached.
    fn epoch(&self) -> u64 {
        *self.epoch.lock()
    }

    fn remove(&self, id: &Uuid) {
        let mut e = self.epoch.lock();
        *e += 1;
        self.map.remove(id);
    }

    fn clear(&self) {
        let mut e = self.epoch.lock();
        *e += 1;
        self.map.clear();
    }

    /// Cache `s` unless something was removed since `epoch` was read: a read that raced a
    /// removal may hold what was removed.
    fn insert_if_unchanged(&self, epoch: u64, s: &Arc<Session>) -> bool {
        let e = self.epoch.lock();
        let unchanged = *e == epoch;
        if unchanged {
            self.map.insert(s.id, Arc::clone(s));
        }
        unchanged
    }
}

/// What the handlers, the event handler and the sweep timer share.
#[derive(Debug)]
struct Sessions {
    store: Data,
    cfg: SessionConfig,
    clock: Clock,
    cache: SessionCache,
    /// Records in the collection as far as this daemon knows (live or expired), including
    /// creates reserved and not yet answered.
    stored: AtomicU64,
    /// Creates reserved and not yet committed or failed (for the resync).
    pending: AtomicU64,
    /// Sweeps run one at a time (the timer's and a full store's).
    sweeping: tokio::sync::Mutex<()>,
    /// Held by a recount (pending read, count, store) and by each reservation, so a create
    /// reserved after the recount read `pending` is not overwritten by its result.
    counting: tokio::sync::Mutex<()>,
    /// When (clock ms) a full store last swept.
    last_full_sweep: AtomicI64,
    /// Expired records deleted since start.
    swept: AtomicU64,
}

impl Sessions {
    async fn reserve(&self) -> bool {
        let _c = self.counting.lock().await;
        let max = self.cfg.max_sessions as u64;
        let ok = self
            .stored
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if ok {
            self.pending.fetch_add(1, Ordering::AcqRel);
        }
        ok
    }

    fn forget(&self, n: u64) {
        let _ = self
            .stored
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }

    fn settle_pending(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(1))
            });
    }

    async fn check_user(&self, id: &str) -> Result<(), SessionError> {
        match self.store.read(&Handle::Primary, "users", id).await {
            Ok(u) if u.get("status").and_then(Value::as_str) == Some("deleted") => {
                Err(SessionError::DeletedUser(id.to_owned()))
            }
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(SessionError::UnknownUser(id.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    async fn create(
        &self,
        user_id: Option<String>,
        ttl: Duration,
        metadata: Map<String, Value>,
    ) -> Result<Arc<Session>, SessionError> {
        if let Some(u) = &user_id {
            self.check_user(u).await?;
        }
        if !self.reserve().await {
            // Full as far as this daemon knows: free what has expired (at most once a second,
            // so a flood of creates at the bound costs no flood of sweeps), then count again.
            let now = self.clock.now_ms();
            let last = self.last_full_sweep.load(Ordering::Acquire);
            if now.saturating_sub(last) >= FULL_SWEEP_EVERY_MS
                && self
                    .last_full_sweep
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.sweep().await?;
            }
            if !self.reserve().await {
                return Err(SessionError::Full {
                    max: self.cfg.max_sessions,
                });
            }
        }
        let created = self.write_new(user_id, ttl, metadata).await;
        self.settle_pending();
        if created.is_err() {
            self.forget(1);
        }
        created
    }

    async fn write_new(
        &self,
        user_id: Option<String>,
        ttl: Duration,
        metadata: Map<String, Value>,
    ) -> Result<Arc<Session>, SessionError> {
        let id = Uuid::new_v4();
        let now = self.clock.now_ms();
        let expires_ms = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut data = Map::new();
        if let Some(u) = &user_id {
            data.insert("userId".into(), Value::String(u.clone()));
        }
        data.insert("status".into(), "active".into());
        data.insert("expiresAt".into(), format_ms(expires_ms).into());
        data.insert("metadata".into(), Value::Object(metadata.clone()));
        let rec = match self
            .store
            .create(&Handle::Primary, COLLECTION, Some(id.to_string()), data)
            .await
        {
            Ok(r) => r,
            // `references: users`: the user went away between the check and the write.
            Err(DataClientError::Validation {
                field: Some(f),
                message,
            }) if f == "userId" && message.contains("does not exist") => {
                return Err(SessionError::UnknownUser(user_id.unwrap_or_default()));
            }
            Err(e) => return Err(e.into()),
        };
        let s = Arc::new(Session::from_record(&rec).unwrap_or(Session {
            id,
            user_id,
            created_at: format_ms(now),
            expires_ms,
            metadata: Value::Object(metadata),
        }));
        // A new id: nothing can have removed it yet.
        self.cache.insert_if_unchanged(self.cache.epoch(), &s);
        Ok(s)
    }

    async fn get(&self, id: Uuid) -> Result<Arc<Session>, SessionError> {
        if let Some(s) = self.cache.get(&id) {
            if s.live_at(self.clock.now_ms()) {
                return Ok(s);
            }
            self.cache.remove(&id);
            return Err(SessionError::NotFound(id));
        }
        let epoch = self.cache.epoch();
        let rec = match self
            .store
            .read(&Handle::Primary, COLLECTION, &id.to_string())
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Err(SessionError::NotFound(id)),
            Err(e) => return Err(e.into()),
        };
        match Session::from_record(&rec) {
            Some(s) if s.live_at(self.clock.now_ms()) => {
                let s = Arc::new(s);
                self.cache.insert_if_unchanged(epoch, &s);
                Ok(s)
            }
            _ => Err(SessionError::NotFound(id)),
        }
    }

    /// Delete the session; `NotFound` also when it had expired (its record is deleted anyway).
    async fn destroy(&self, id: Uuid) -> Result<(), SessionError> {
        let now = self.clock.now_ms();
        let deleted = self
            .store
            .delete(&Handle::Primary, COLLECTION, &id.to_string())
            .await;
        self.cache.remove(&id);
        match deleted {
            Ok(rec) => {
                self.forget(1);
                match Session::from_record(&rec) {
                    Some(s) if s.live_at(now) => Ok(()),
                    _ => Err(SessionError::NotFound(id)),
                }
            }
            Err(e) if e.is_not_found() => Err(SessionError::NotFound(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Up to `limit` live sessions, oldest first, and how many are live.
    async fn list(&self, limit: usize) -> Result<(Vec<Session>, u64), SessionError> {
        let filter = json!({"expiresAt": {"$gt": format_ms(self.clock.now_ms())}});
        let count = self
            .store
            .count(&Handle::Primary, COLLECTION, Some(filter.clone()))
            .await?;
        if limit == 0 {
            return Ok((Vec::new(), count));
        }
        let page = self
            .store
            .list(
                &Handle::Primary,
                COLLECTION,
                ListParams {
                    filter: Some(filter),
                    order_by: Some(json!("createdAt")),
                    limit: Some(json!(limit)),
                    ..ListParams::default()
                },
            )
            .await?;
        Ok((
            page.items.iter().filter_map(Session::from_record).collect(),
            count,
        ))
    }

    /// Delete expired records, [`SWEEP_PAGE`] per batch, at most [`SWEEP_MAX_PAGES`] batches;
    /// then count the collection again. Returns how many were deleted.
    async fn sweep(&self) -> Result<u64, SessionError> {
        let _one = self.sweeping.lock().await;
        let mut total = 0;
        for _ in 0..SWEEP_MAX_PAGES {
            let page = self
                .store
                .list(
                    &Handle::Primary,
                    COLLECTION,
                    ListParams {
                        filter: Some(
                            json!({"expiresAt": {"$lte": format_ms(self.clock.now_ms())}}),
                        ),
                        order_by: Some(json!("expiresAt")),
                        limit: Some(json!(SWEEP_PAGE)),
                        fields: Some(json!(["id"])),
                        cursor: None,
                    },
                )
                .await?;
            let ids: Vec<String> = page
                .items
                .iter()
                .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
                .collect();
            if ids.is_empty() {
                break;
            }
            total += self.delete_all(&ids).await?;
            for id in &ids {
                if let Ok(u) = Uuid::parse_str(id) {
                    self.cache.remove(&u);
                }
            }
            if ids.len() < SWEEP_PAGE {
                break;
            }
        }
        self.swept.fetch_add(total, Ordering::Relaxed);
        // Pending is read before the count: a create that commits in between is counted twice
        // (safe: one too many until the next sweep), never missed; no reservation can slip in
        // between the read and the store (`counting`).
        let _c = self.counting.lock().await;
        let pending = self.pending.load(Ordering::Acquire);
        let stored = self.store.count(&Handle::Primary, COLLECTION, None).await?;
        self.stored
            .store(stored.saturating_add(pending), Ordering::Release);
        Ok(total)
    }

    /// Delete `ids` in one transaction; if one of them is gone already (a destroy raced the
    /// sweep), one by one. Returns how many were deleted.
    async fn delete_all(&self, ids: &[String]) -> Result<u64, SessionError> {
        let ops = ids
            .iter()
            .map(|id| BatchOp::Delete {
                collection: COLLECTION.into(),
                id: id.clone(),
            })
            .collect();
        match self.store.batch(&Handle::Primary, ops).await {
            Ok(done) => Ok(done.len() as u64),
            Err(e) if e.is_not_found() => {
                let mut n = 0;
                for id in ids {
                    match self.store.delete(&Handle::Primary, COLLECTION, id).await {
                        Ok(_) => n += 1,
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(n)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn details(&self) -> Value {
        let c = self.cache.map.stats();
        json!({
            "stored": self.stored.load(Ordering::Relaxed),
            "maxSessions": self.cfg.max_sessions,
            "swept": self.swept.load(Ordering::Relaxed),
            "dataPath": if self.store.is_local() { "in-process" } else { "routed" },
            "caches": {"sessions": {
                "capacity": c.capacity, "len": c.len, "hits": c.hits, "misses": c.misses,
                "evictions": c.evictions,
            }},
        })
    }
}

/// The `session` daemon.
#[derive(Debug, Clone)]
pub struct SessionDaemon {
    store: DataClient,
    cfg: SessionConfig,
    clock: Clock,
}

impl SessionDaemon {
    /// A session daemon storing through `store`, with these bounds, on the wall clock.
    pub fn new(store: DataClient, cfg: SessionConfig) -> Self {
        SessionDaemon {
            store,
            cfg,
            clock: Clock::System,
        }
    }

    /// Expire sessions by `clock` instead of the wall clock (tests).
    pub fn with_clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }
}

/// The daemon's state: shared with its sweep timer.
#[derive(Debug)]
pub struct SessionState {
    sessions: Arc<Sessions>,
}

const DEFAULT_LIST_LIMIT: u64 = 100;
const MAX_LIST_LIMIT: u64 = 1000;

impl Daemon for SessionDaemon {
    type State = SessionState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("session")
            .requires("data")
            // Writes past the daemon (data/update, data/delete, data/truncate) leave the cache.
            .events("data:sessions:updated")
            .events("data:sessions:deleted")
            .events("data:sessions:truncated")
            .command(
                CommandSpec::new(
                    "session/create",
                    "Create a stored session; answers {id, userId, createdAt, expiresAt, metadata}",
                )
                .param(
                    "userId",
                    "string",
                    false,
                    "the user it belongs to (a users record; unknown: not_found)",
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
        let store = self.store.bind(ctx.router());
        let stored = store.count(&Handle::Primary, COLLECTION, None).await?;
        let sessions = Arc::new(Sessions {
            store,
            cfg: self.cfg.clone(),
            clock: self.clock.clone(),
            cache: SessionCache::new(self.cfg.cache_capacity),
            stored: AtomicU64::new(stored),
            pending: AtomicU64::new(0),
            counting: tokio::sync::Mutex::new(()),
            sweeping: tokio::sync::Mutex::new(()),
            last_full_sweep: AtomicI64::new(i64::MIN),
            swept: AtomicU64::new(0),
        });
        let (tick, tick_ctx) = (Arc::clone(&sessions), ctx.clone());
        ctx.timers()
            .register_interval("session-sweep", self.cfg.sweep_interval, move || {
                let (s, ctx) = (Arc::clone(&tick), tick_ctx.clone());
                async move {
                    match s.sweep().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(expired = n, "Swept expired sessions"),
                        Err(e) => tracing::warn!(error = %e, "Sweeping expired sessions failed"),
                    }
                    ctx.set_details(s.details());
                }
            })?;
        ctx.set_details(sessions.details());
        Ok(SessionState { sessions })
    }

    async fn start_deferred(&self, ctx: &Context, state: &SessionState) -> Result<(), BoxError> {
        // What expired while the host was down.
        let n = state.sessions.sweep().await?;
        if n > 0 {
            tracing::debug!(
                expired = n,
                "Swept sessions that expired while the host was down"
            );
        }
        ctx.set_details(state.sessions.details());
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &SessionState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let s = &state.sessions;
        let mut p = params_of(req.params)?;
        match req.command.as_str() {
            "session/create" => {
                let user_id = p.opt_str_max("userId", MAX_USER_ID)?.map(str::to_owned);
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
                let ttl = p
                    .opt_u64_range("ttl_secs", 1, self.cfg.max_ttl.as_secs())?
                    .map_or(self.cfg.ttl, Duration::from_secs);
                let session = s.create(user_id, ttl, metadata).await?;
                let v = session.to_json();
                ctx.publish("session:created", v.clone());
                Ok(v)
            }
            "session/get" => {
                let id = parse_id(&p)?;
                Ok(s.get(id).await?.to_json())
            }
            "session/destroy" => {
                let id = parse_id(&p)?;
                s.destroy(id).await?;
                ctx.publish("session:destroyed", json!({"id": id.to_string()}));
                Ok(json!({"id": id.to_string(), "destroyed": true}))
            }
            "session/list" => {
                let limit = p
                    .opt_u64_range("limit", 0, MAX_LIST_LIMIT)?
                    .unwrap_or(DEFAULT_LIST_LIMIT);
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let (sessions, total) = s.list(limit).await?;
                let sessions: Vec<Value> = sessions.iter().map(Session::to_json).collect();
                Ok(json!({"count": total, "sessions": sessions}))
            }
            other => Err(DaemonError::unknown_command(format!(
                "daemon 'session' does not serve '{other}'"
            ))),
        }
    }

    async fn on_event(&self, _ctx: &Context, state: &SessionState, d: Delivery) {
        let s = &state.sessions;
        let Delivery::Event(ev) = d else {
            // Lost events: drop the whole cache rather than risk serving a stale session.
            s.cache.clear();
            return;
        };
        if ev.topic().ends_with(":truncated") {
            s.cache.clear();
            return;
        }
        match ev
            .data()
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
        {
            Some(id) => s.cache.remove(&id),
            None => s.cache.clear(),
        }
    }

    async fn stop(&self, _ctx: &Context, state: SessionState) {
        let n = state.sessions.cache.map.len();
        tracing::debug!(cached = n, "Session cache dropped");
    }
}

fn parse_id(p: &Params) -> Result<Uuid, DaemonError> {
    let raw = p.str("id")?;
    Uuid::parse_str(raw).map_err(|_| {
        DaemonError::from(ParamError::invalid(
            "id",
            format!(
                "must be a UUID (got '{}')",
                raw.chars().take(64).collect::<String>()
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemonhost_runtime::{ErrorCode, Runtime};
    use daemonhost_testkit::{data, eventually, quiet_config};
    use std::path::Path;

    /// 2025-01-01T00:00:00.000Z: where the manual clocks start.
    const T0: i64 = 1_735_689_600_000;

    fn cfg() -> SessionConfig {
        SessionConfig {
            // Sweeps only when a test asks for them.
            sweep_interval: Duration::from_secs(3600),
            ..SessionConfig::default()
        }
    }

    async fn boot(dir: &Path, cfg: SessionConfig, clock: Clock) -> Runtime {
        data::boot(dir, quiet_config(), |b, slots| {
            b.register(SessionDaemon::new(slots.client(), cfg).with_clock(clock));
        })
        .await
        .0
    }

    async fn stored(rt: &Runtime) -> u64 {
        rt.router()
            .ask("data/count", json!({"collection": COLLECTION}))
            .await
            .expect("count")["count"]
            .as_u64()
            .expect("a count")
    }

    fn session(id: Uuid, expires_ms: i64) -> Arc<Session> {
        Arc::new(Session {
            id,
            user_id: None,
            created_at: format_ms(T0),
            expires_ms,
            metadata: json!({}),
        })
    }

    #[test]
    fn a_read_that_raced_a_removal_is_not_cached_back() {
        let c = SessionCache::new(8);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // A read starts, the session is destroyed meanwhile, the read ends: not cached.
        let before = c.epoch();
        c.remove(&a);
        assert!(!c.insert_if_unchanged(before, &session(a, T0 + 1)));
        assert!(c.get(&a).is_none());
        // A read nothing raced is cached; a clear (truncate, lost events) also counts.
        let e = c.epoch();
        assert!(c.insert_if_unchanged(e, &session(b, T0 + 1)));
        assert!(c.get(&b).is_some());
        let e = c.epoch();
        c.clear();
        assert!(!c.insert_if_unchanged(e, &session(a, T0 + 1)));
        assert_eq!(c.map.len(), 0);
    }

    #[test]
    fn a_record_not_written_by_the_daemon_is_never_a_live_session() {
        let id = Uuid::new_v4().to_string();
        let ok = json!({"id": id, "createdAt": "2025-01-01T00:00:00.000Z",
                        "expiresAt": "2025-01-01T01:00:00.000Z", "metadata": null});
        let s = Session::from_record(&ok).expect("a session");
        assert_eq!(s.metadata, json!({}));
        assert!(s.live_at(T0) && !s.live_at(T0 + 3_600_000));
        assert!(Session::from_record(&json!({"id": id})).is_none());
        assert!(
            Session::from_record(&json!({"id": "x", "expiresAt": "2025-01-01T01:00:00Z"}))
                .is_none()
        );
    }

    #[tokio::test]
    async fn sessions_are_stored_and_survive_a_restart_on_the_same_dir() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = boot(dir.path(), cfg(), Clock::System).await;
        let r = rt.router();
        let s = r
            .ask(
                "session/create",
                json!({"metadata": {"user": "joel"}, "ttl_secs": 600}),
            )
            .await
            .expect("create");
        let gone = r.ask("session/create", json!({})).await.expect("create");
        r.ask("session/destroy", json!({"id": gone["id"]}))
            .await
            .expect("destroy");
        assert_eq!(s["metadata"]["user"], "joel");
        assert_eq!(s["userId"], Value::Null);
        assert!(s["createdAt"].as_str().expect("createdAt").ends_with('Z'));
        let record = r
            .ask(
                "data/read",
                json!({"collection": COLLECTION, "id": s["id"]}),
            )
            .await
            .expect("the record");
        assert_eq!(record["expiresAt"], s["expiresAt"]);
        assert_eq!(record["status"], "active");
        rt.shutdown().await;

        let rt = boot(dir.path(), cfg(), Clock::System).await;
        let r = rt.router();
        let got = r
            .ask("session/get", json!({"id": s["id"]}))
            .await
            .expect("get after restart");
        assert_eq!(got, s);
        let l = r.ask("session/list", json!({})).await.expect("list");
        assert_eq!(l["count"], 1);
        assert_eq!(l["sessions"][0], s);
        let e = r
            .ask("session/get", json!({"id": gone["id"]}))
            .await
            .expect_err("destroyed before the restart");
        assert_eq!(e.code, ErrorCode::NotFound);
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn an_expired_session_is_never_returned_even_before_the_sweep() {
        let dir = tempfile::tempdir().expect("tmp");
        let clock = ManualClock::new(T0);
        let rt = boot(dir.path(), cfg(), clock.clone().into()).await;
        let r = rt.router();
        let short = r
            .ask("session/create", json!({"ttl_secs": 10}))
            .await
            .expect("short");
        let long = r
            .ask("session/create", json!({"ttl_secs": 60}))
            .await
            .expect("long");
        assert_eq!(short["expiresAt"], "2025-01-01T00:00:10.000Z");
        clock.advance(Duration::from_millis(9_999));
        r.ask("session/get", json!({"id": short["id"]}))
            .await
            .expect("live until its expiry");
        // At its expiry instant the session is gone: from the cache, from a fresh read, from
        // the list, and for destroy, while its record is still stored (no sweep ran).
        clock.advance(Duration::from_millis(1));
        for _ in 0..2 {
            let e = r
                .ask("session/get", json!({"id": short["id"]}))
                .await
                .expect_err("expired");
            assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
        }
        let l = r.ask("session/list", json!({})).await.expect("list");
        assert_eq!(l["count"], 1);
        assert_eq!(l["sessions"][0]["id"], long["id"]);
        assert_eq!(stored(&rt).await, 2, "the sweep has not run");
        let e = r
            .ask("session/destroy", json!({"id": short["id"]}))
            .await
            .expect_err("expired");
        assert_eq!(e.code, ErrorCode::NotFound);
        r.ask("session/get", json!({"id": long["id"]}))
            .await
            .expect("the other one lives on");
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn the_sweep_timer_deletes_expired_records_in_pages_unasked() {
        const EXPIRING: usize = SWEEP_PAGE + 100; // two pages in one sweep
        let dir = tempfile::tempdir().expect("tmp");
        let clock = ManualClock::new(T0);
        let rt = boot(
            dir.path(),
            SessionConfig {
                sweep_interval: Duration::from_millis(20),
                ..cfg()
            },
            clock.clone().into(),
        )
        .await;
        let r = rt.router();
        let mut creates = tokio::task::JoinSet::new();
        for _ in 0..EXPIRING {
            let r = r.clone();
            creates.spawn(async move { r.ask("session/create", json!({"ttl_secs": 5})).await });
        }
        while let Some(c) = creates.join_next().await {
            c.expect("joined").expect("create");
        }
        let live = r
            .ask("session/create", json!({"ttl_secs": 600}))
            .await
            .expect("live");
        clock.advance(Duration::from_secs(5));
        // Nobody asks: the timer alone deletes them, in pages of SWEEP_PAGE.
        eventually("the sweep to delete every expired record", async || {
            stored(&rt).await == 1
        })
        .await;
        r.ask("session/get", json!({"id": live["id"]}))
            .await
            .expect("a live session is never swept");
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_store_answers_overloaded_until_sessions_expire() {
        let dir = tempfile::tempdir().expect("tmp");
        let clock = ManualClock::new(T0);
        let rt = boot(
            dir.path(),
            SessionConfig {
                max_sessions: 2,
                ..cfg()
            },
            clock.clone().into(),
        )
        .await;
        let r = rt.router();
        r.ask("session/create", json!({"ttl_secs": 5}))
            .await
            .expect("first");
        let keep = r
            .ask("session/create", json!({"ttl_secs": 60}))
            .await
            .expect("second");
        let e = r.ask("session/create", json!({})).await.expect_err("full");
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(e.message.contains("2 sessions"), "{}", e.message);
        // Destroying frees a place; so does expiry (the full store sweeps before refusing).
        r.ask("session/destroy", json!({"id": keep["id"]}))
            .await
            .expect("destroy");
        r.ask("session/create", json!({"ttl_secs": 60}))
            .await
            .expect("a freed place");
        clock.advance(Duration::from_secs(5));
        r.ask("session/create", json!({}))
            .await
            .expect("an expired session's place");
        assert_eq!(stored(&rt).await, 2);
        let e = r.ask("session/create", json!({})).await.expect_err("full");
        assert_eq!(e.code, ErrorCode::Overloaded);
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn create_refuses_an_unknown_or_deleted_user_with_not_found_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = boot(dir.path(), cfg(), Clock::System).await;
        let r = rt.router();
        let user = |status: &str| {
            r.ask(
                "data/create",
                json!({"collection": "users",
                       "data": {"type": "human", "displayName": "Joel", "status": status}}),
            )
        };
        let joel = user("online").await.expect("a user");
        let gone = user("deleted").await.expect("a deleted user");
        let s = r
            .ask("session/create", json!({"userId": joel["id"]}))
            .await
            .expect("a known user");
        assert_eq!(s["userId"], joel["id"]);
        assert_eq!(
            r.ask("session/get", json!({"id": s["id"]}))
                .await
                .expect("get")["userId"],
            joel["id"]
        );
        let answer = |e: DaemonError| (e.code, e.message);
        assert_eq!(
            r.ask("session/create", json!({"userId": "nobody-1"}))
                .await
                .map_err(answer),
            Err((
                ErrorCode::NotFound,
                "userId: no user with id 'nobody-1'".to_owned()
            ))
        );
        let deleted_id = gone["id"].as_str().expect("id");
        assert_eq!(
            r.ask("session/create", json!({"userId": deleted_id}))
                .await
                .map_err(answer),
            Err((
                ErrorCode::NotFound,
                format!("userId: user '{deleted_id}' is deleted")
            ))
        );
        // Nothing was stored for the refused ones, and the store itself refuses a session of
        // an unknown user (`references: users`): a user deleted between the daemon's check
        // and its write is refused in the write's transaction.
        assert_eq!(stored(&rt).await, 1);
        let e = r
            .ask(
                "data/create",
                json!({"collection": COLLECTION, "data": {"userId": "nobody-1"}}),
            )
            .await
            .expect_err("a dangling userId");
        assert_eq!(e.code, ErrorCode::Validation);
        assert!(e.message.contains("does not exist"), "{}", e.message);
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn a_session_deleted_past_the_daemon_is_not_served_from_its_cache() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = boot(dir.path(), cfg(), Clock::System).await;
        let r = rt.router();
        let s = r.ask("session/create", json!({})).await.expect("create");
        r.ask("session/get", json!({"id": s["id"]}))
            .await
            .expect("cached");
        r.ask(
            "data/delete",
            json!({"collection": COLLECTION, "id": s["id"]}),
        )
        .await
        .expect("deleted with data/delete");
        eventually("the deletion event to reach the cache", async || {
            r.ask("session/get", json!({"id": s["id"]}))
                .await
                .is_err_and(|e| e.code == ErrorCode::NotFound)
        })
        .await;
        let t = r.ask("session/create", json!({})).await.expect("create");
        r.ask("data/truncate", json!({"collection": COLLECTION}))
            .await
            .expect("truncate");
        eventually("the truncation event to empty the cache", async || {
            r.ask("session/get", json!({"id": t["id"]}))
                .await
                .is_err_and(|e| e.code == ErrorCode::NotFound)
        })
        .await;
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn session_params_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = boot(dir.path(), cfg(), Clock::System).await;
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
            r.ask("session/create", json!({"userId": 7}))
                .await
                .map_err(answer),
            Err((ErrorCode::BadRequest, "userId: must be a string".to_owned()))
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
            r.ask("session/create", json!({"userId": "x".repeat(200)}))
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
        assert_eq!(stored(&rt).await, 0);
        rt.shutdown().await;
    }
}
