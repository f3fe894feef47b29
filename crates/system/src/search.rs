//! The search daemon (`search/*`): a thin wrapper over [`Placed`]`<`[`SearchService`]`>` that
//! keeps an incremental index over `chat_messages` in both placements.
//!
//! # Feeding and consistency
//!
//! - **Bulk load** in deferred init: `chat_messages` from `primary` (read-only, pages of
//!   [`PAGE`] ordered by `createdAt`, cursor pagination) into the in-process index directly and
//!   into the worker as `search/index-add` chunks. A page is turned into index input on the CPU
//!   pool, and the in-process index takes it in chunks of [`FALLBACK_CHUNK`], each inserted on a
//!   blocking thread (more than 64 messages go there), so the daemon's task never holds its
//!   worker for long (with 1,000,000 messages its longest poll during the load went from 24 ms
//!   to a few ms, the rest being preemption while both cores load).
//! - **Events**: `data:chat_messages:created|updated|deleted` are applied to both indexes as
//!   they arrive. Events arriving *during* a load are also recorded (latest per id, bounded) and
//!   replayed once the load finishes, so a page read before a change cannot leave a stale entry.
//! - **Worker restart**: a restarted worker starts empty. Until it is re-loaded (in the
//!   background, cancelled with the daemon, retried if the worker dies again) the in-process
//!   index answers; `health/status` shows `index.syncedGeneration` against `worker.generation`.
//! - **Lag**: if the event queue overflowed, both indexes are re-loaded (updates and creates
//!   are repaired; a delete lost in the overflow stays until `search/reindex` or a restart).
//!
//! So the in-process index is always current (up to event delivery), the worker's index is
//! eventually consistent, and a worker that is not known to be current never answers.
//! - **Truncation** (`data:chat_messages:truncated`) and `search/reindex`: the sync loop empties
//!   both indexes, after any load in progress, then loads them again (searches meanwhile miss
//!   what is not loaded yet; `search/reindex` is also the repair for a delete lost to lag).
//!
//! Not followed: archiving (archived messages stay searchable).

use crate::params_of;
use crate::placed::{Placed, Placement, WorkerOptions};
use daemonhost_data_client::{Data, DataClient, Handle, ListParams};
use daemonhost_protocol::params::{ParamError, ParamType};
use daemonhost_protocol::time::parse_date_ms;
use daemonhost_runtime::supervisor::WorkerState;
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Delivery, Request,
};
use daemonhost_workers::{MessageIndexConfig, SearchConfig, SearchService, WorkerService};

/// Messages the host's in-process fallback index keeps (most recent first) while the search
/// daemon runs in a worker process.
pub const FALLBACK_MAX_DOCS: usize = 10_000;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Records read per page of the bulk load (also the worker's `search/index-add` chunk).
pub const PAGE: usize = 2000;
/// Messages per in-process `search/index-add` during a load: reading a chunk's params runs on the
/// daemon's task, so a page is fed in pieces small enough to keep each poll short.
pub const FALLBACK_CHUNK: usize = 250;
/// Changes recorded during one load before it gives up and starts over.
const MAX_PENDING: usize = 100_000;
const COLLECTION: &str = "chat_messages";

/// The search daemon (name `search`, prefix `search/`, requires `data`).
#[derive(Debug, Clone)]
pub struct SearchDaemon {
    placement: Placement,
    options: WorkerOptions,
    store: DataClient,
}

impl SearchDaemon {
    /// A search daemon reading `chat_messages` from the store in `store`.
    pub fn new(placement: Placement, options: WorkerOptions, store: DataClient) -> Self {
        SearchDaemon {
            placement,
            options,
            store,
        }
    }
}

/// A change to apply: `Some(message)` = add/replace, `None` = remove.
type Change = Option<Value>;

#[derive(Default)]
struct Sync {
    /// Changes seen while a load runs (`None`: no load running).
    pending: Mutex<Option<HashMap<String, Change>>>,
    overflowed: AtomicBool,
    fallback_loaded: AtomicBool,
    /// A full reload of both indexes was asked for (lag).
    full_wanted: AtomicBool,
    /// Both indexes are to be emptied before that reload (truncation, `search/reindex`).
    clear_wanted: AtomicBool,
    reindexes: AtomicU64,
    wake: Notify,
    loads: AtomicU64,
    loaded: AtomicU64,
    skipped: AtomicU64,
    worker_feed_errors: AtomicU64,
    last_load_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The running search daemon.
pub struct SearchState {
    placed: Arc<Placed<SearchService>>,
    store: Data,
    sync: Arc<Sync>,
    /// The daemon's context: the load turns pages into index input on its CPU pool.
    ctx: Context,
}

/// One page of the bulk load, made ready off the daemon's task ([`prepare_page`]).
#[derive(Debug, Default)]
struct Prepared {
    /// Records without text or a UUID id.
    skipped: usize,
    /// Messages for the in-process index, as `search/index-add` params of [`FALLBACK_CHUNK`].
    fallback: Vec<Value>,
    /// The same messages for the worker, as one `search/index-add` params value.
    worker: Option<Value>,
    /// Messages in the page that can be indexed.
    count: usize,
}

/// Turn a page of records into index input (on the CPU pool: for a page of 2,000 records this
/// is milliseconds of JSON work, which used to run on the daemon's task).
fn prepare_page(items: &[Value], to_fallback: bool, to_worker: bool) -> Prepared {
    let msgs: Vec<Value> = items.iter().filter_map(message_of).collect();
    let mut out = Prepared {
        skipped: items.len() - msgs.len(),
        count: msgs.len(),
        ..Prepared::default()
    };
    if msgs.is_empty() {
        return out;
    }
    if to_fallback {
        out.fallback = msgs
            .chunks(FALLBACK_CHUNK)
            .map(|c| json!({"messages": c}))
            .collect();
    }
    if to_worker {
        out.worker = Some(json!({"messages": msgs}));
    }
    out
}

impl std::fmt::Debug for SearchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchState").finish_non_exhaustive()
    }
}

/// `{id, roomId, text, createdAt}` for the index, from a `chat_messages` record; `None` when it
/// has no text or its id is not a UUID (the index keys on UUIDs).
fn message_of(rec: &Value) -> Option<Value> {
    let id = rec.get("id")?.as_str()?;
    uuid::Uuid::parse_str(id).ok()?;
    let room = rec.get("roomId")?.as_str()?;
    let text = match rec.get("content")? {
        Value::Object(o) => o.get("text")?.as_str()?,
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    let created = rec
        .get("createdAt")
        .and_then(Value::as_str)
        .and_then(parse_date_ms)
        .unwrap_or(0);
    Some(json!({"id": id, "roomId": room, "text": text, "createdAt": created}))
}

fn split(changes: HashMap<String, Change>) -> (Vec<Value>, Vec<String>) {
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for (id, c) in changes {
        match c {
            Some(m) => adds.push(m),
            None => removes.push(id),
        }
    }
    (adds, removes)
}

impl SearchState {
    fn refresh_extra(&self) {
        let s = &self.sync;
        self.placed.set_extra(json!({"index": {
            "fallbackLoaded": s.fallback_loaded.load(Ordering::Relaxed),
            "syncedGeneration": self.placed.synced_generation(),
            "loads": s.loads.load(Ordering::Relaxed),
            "reindexes": s.reindexes.load(Ordering::Relaxed),
            "loadedMessages": s.loaded.load(Ordering::Relaxed),
            "skippedMessages": s.skipped.load(Ordering::Relaxed),
            "workerFeedErrors": s.worker_feed_errors.load(Ordering::Relaxed),
            "lastLoadMs": s.last_load_ms.load(Ordering::Relaxed),
            "lastError": s.last_error.lock().clone(),
        }}));
    }

    /// The worker's generation when it is up (it receives live changes then).
    fn worker_up(&self) -> Option<u64> {
        let sup = self.placed.supervisor()?;
        let st = sup.status();
        (st.state == WorkerState::Up).then_some(st.generation)
    }

    /// Apply changes to both indexes (the fallback's answer is returned). A failed worker feed
    /// marks the worker out of sync, so it stops answering until re-loaded.
    async fn apply(&self, adds: Vec<Value>, removes: Vec<String>) -> Result<Value, DaemonError> {
        {
            let mut pending = self.sync.pending.lock();
            if let Some(map) = pending.as_mut() {
                for m in &adds {
                    if let Some(id) = m.get("id").and_then(Value::as_str) {
                        map.insert(id.to_owned(), Some(m.clone()));
                    }
                }
                for id in &removes {
                    map.insert(id.clone(), None);
                }
                if map.len() > MAX_PENDING {
                    *pending = None;
                    self.sync.overflowed.store(true, Ordering::Relaxed);
                }
            }
        }
        let mut calls = Vec::with_capacity(2);
        if !adds.is_empty() {
            calls.push(("search/index-add", json!({"messages": adds})));
        }
        if !removes.is_empty() {
            calls.push(("search/index-remove", json!({"ids": removes})));
        }
        let mut last = json!({});
        for (command, params) in calls {
            last = self
                .placed
                .fallback()
                .handle(command, params.clone())
                .await
                .map_err(DaemonError::from)?;
            if let (Some(generation), Some(sup)) = (self.worker_up(), self.placed.supervisor())
                && sup
                    .call(command, params, Duration::from_secs(10))
                    .await
                    .is_err()
            {
                self.sync.worker_feed_errors.fetch_add(1, Ordering::Relaxed);
                if self.placed.synced_generation() == generation {
                    self.placed.mark_synced(0);
                }
                self.sync.wake.notify_one();
            }
        }
        Ok(last)
    }

    /// Ask the sync loop to empty both indexes and load them again from `chat_messages`. Runs
    /// in the loop, after any load in progress, so a page read before a truncation cannot
    /// come back after the indexes were emptied.
    fn request_reindex(&self) {
        self.sync.clear_wanted.store(true, Ordering::Relaxed);
        self.sync.full_wanted.store(true, Ordering::Relaxed);
        self.sync.wake.notify_one();
    }

    /// Empty both indexes. A worker that cannot be emptied is marked out of sync (it stops
    /// answering until the reload that follows has been fed to it).
    async fn clear(&self) -> Result<(), String> {
        self.sync.reindexes.fetch_add(1, Ordering::Relaxed);
        self.placed
            .fallback()
            .handle("search/index-clear", json!({}))
            .await
            .map_err(|e| format!("clearing the in-process index: {}", e.message))?;
        if let (Some(generation), Some(sup)) = (self.worker_up(), self.placed.supervisor())
            && sup
                .call("search/index-clear", json!({}), Duration::from_secs(10))
                .await
                .is_err()
            && self.placed.synced_generation() == generation
        {
            self.placed.mark_synced(0);
        }
        Ok(())
    }

    /// Load every message into the fallback (when `to_fallback`) and/or the worker of
    /// `worker` generation; then replay the changes seen meanwhile. Returns whether the worker
    /// part succeeded.
    async fn load(&self, to_fallback: bool, worker: Option<u64>) -> Result<bool, String> {
        let t0 = Instant::now();
        self.sync.loads.fetch_add(1, Ordering::Relaxed);
        self.sync.overflowed.store(false, Ordering::Relaxed);
        *self.sync.pending.lock() = Some(HashMap::new());
        let sup = self.placed.supervisor();
        let mut worker_ok = worker.is_some() && sup.is_some();
        let mut cursor = None;
        let result = loop {
            let page = match self
                .store
                .list(
                    &Handle::Primary,
                    COLLECTION,
                    ListParams {
                        order_by: Some(json!([{"field": "createdAt", "direction": "asc"}])),
                        limit: Some(json!(PAGE)),
                        cursor: cursor.take(),
                        ..ListParams::default()
                    },
                )
                .await
            {
                Ok(p) => p,
                Err(e) => break Err(format!("reading {COLLECTION}: {e}")),
            };
            let items = page.items;
            let to_worker = worker_ok;
            let prepared = match self
                .ctx
                .spawn_cpu(move || prepare_page(&items, to_fallback, to_worker))
                .await
            {
                Ok(p) => p,
                Err(e) => break Err(format!("preparing a page of {COLLECTION}: {e}")),
            };
            self.sync
                .skipped
                .fetch_add(prepared.skipped as u64, Ordering::Relaxed);
            let mut failed = None;
            for params in prepared.fallback {
                if let Err(e) = self
                    .placed
                    .fallback()
                    .handle("search/index-add", params)
                    .await
                {
                    failed = Some(format!("indexing in-process: {}", e.message));
                    break;
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
            if let (Some(params), Some(sup)) = (prepared.worker, sup)
                && let Err(e) = sup
                    .call("search/index-add", params, Duration::from_secs(30))
                    .await
            {
                tracing::info!(daemon = "search", error = %e, "Worker load interrupted");
                worker_ok = false;
            }
            if to_fallback {
                self.sync
                    .loaded
                    .fetch_add(prepared.count as u64, Ordering::Relaxed);
            }
            if !to_fallback && !worker_ok {
                break Ok(());
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break Ok(()),
            }
            tokio::task::yield_now().await;
        };
        let pending = self.sync.pending.lock().take();
        result?;
        let Some(pending) = pending else {
            return Err(format!(
                "more than {MAX_PENDING} changes arrived during the load; starting over"
            ));
        };
        let (adds, removes) = split(pending);
        for (command, params, empty) in [
            (
                "search/index-add",
                json!({"messages": adds}),
                adds.is_empty(),
            ),
            (
                "search/index-remove",
                json!({"ids": removes}),
                removes.is_empty(),
            ),
        ] {
            if empty {
                continue;
            }
            if to_fallback {
                self.placed
                    .fallback()
                    .handle(command, params.clone())
                    .await
                    .map_err(|e| format!("replaying changes in-process: {}", e.message))?;
            }
            if worker_ok
                && let Some(sup) = sup
                && sup
                    .call(command, params, Duration::from_secs(30))
                    .await
                    .is_err()
            {
                worker_ok = false;
            }
        }
        if to_fallback {
            self.sync.fallback_loaded.store(true, Ordering::Relaxed);
        }
        if let (true, Some(generation), Some(sup)) = (worker_ok, worker, sup) {
            // Only if that instance is still the one running.
            worker_ok = sup.status().generation == generation && sup.is_up();
            if worker_ok {
                self.placed.mark_synced(generation);
            }
        }
        self.sync.last_load_ms.store(
            u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(worker_ok)
    }

    async fn run_load(&self, to_fallback: bool, worker: Option<u64>) -> bool {
        let ok = match self.load(to_fallback, worker).await {
            Ok(worker_ok) => {
                *self.sync.last_error.lock() = None;
                worker.is_none() || worker_ok
            }
            Err(e) => {
                tracing::warn!(daemon = "search", error = %e, "Index load failed");
                *self.sync.last_error.lock() = Some(e);
                false
            }
        };
        self.refresh_extra();
        ok
    }
}

/// Keep the worker's index loaded across restarts, and reload both on lag.
fn spawn_sync_loop(ctx: &Context, state: &Arc<SearchState>) {
    let state = Arc::clone(state);
    ctx.spawn(async move {
        let mut rx = state.placed.supervisor().map(|s| s.watch());
        loop {
            if state.sync.clear_wanted.swap(false, Ordering::Relaxed)
                && let Err(e) = state.clear().await
            {
                tracing::warn!(daemon = "search", error = %e, "Index clear failed");
                *state.sync.last_error.lock() = Some(e);
            }
            let full = state.sync.full_wanted.swap(false, Ordering::Relaxed)
                || !state.sync.fallback_loaded.load(Ordering::Relaxed);
            let worker = state
                .worker_up()
                .filter(|g| *g != state.placed.synced_generation());
            if full || worker.is_some() {
                let worker = if full { state.worker_up() } else { worker };
                if !state.run_load(full, worker).await {
                    // Retry later (the worker may be restarting meanwhile).
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            }
            let changed = async {
                match rx.as_mut() {
                    Some(r) => r.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ok = changed => if !ok { rx = None; },
                () = state.sync.wake.notified() => {}
            }
        }
    });
}

impl Daemon for SearchDaemon {
    type State = Arc<SearchState>;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("search")
            .requires("data")
            .prefix("search/")
            .events("data:chat_messages:*")
            .event_queue(4096)
            .command(
                CommandSpec::new(
                    "search/messages",
                    "BM25 over chat messages -> {hits[{id, roomId, score, createdAt}], matched}",
                )
                .param("query", "string", true, "words to find")
                .param("roomId", "string", false, "only this room")
                .param("limit", "non-negative integer", false, "default 20, max 1000"),
            )
            .command(CommandSpec::new(
                "search/execute",
                "Stateless text search {algorithm?, query, corpus[], params?}",
            ))
            .command(CommandSpec::new(
                "search/vector",
                "Cosine similarity of vectors",
            ))
            .command(CommandSpec::new("search/list", "The algorithms"))
            .command(CommandSpec::new(
                "search/params",
                "An algorithm's parameters",
            ))
            .command(CommandSpec::new(
                "search/index-add",
                "Index (or replace) messages {messages[{id, roomId, text, createdAt?}]}",
            ))
            .command(CommandSpec::new(
                "search/index-remove",
                "Remove messages from the index {ids[]}",
            ))
            .command(CommandSpec::new(
                "search/reindex",
                "Empty the message index and load it again from chat_messages (answers miss messages until the load ends; health/status shows index.reindexes and lastLoadMs) -> {scheduled}",
            ))
            .command(CommandSpec::new(
                "search/index-clear",
                "Refused through the router (the index follows chat_messages): use search/reindex",
            ))
            .command(CommandSpec::new("search/stats", "Index counters"))
    }

    async fn start(&self, ctx: &Context) -> Result<Self::State, BoxError> {
        let store = self.store.bind(ctx.router());
        // With a worker, the host's copy is only the fallback: it keeps the most recent
        // FALLBACK_MAX_DOCS messages so the host's memory stays flat however long it runs (the
        // worker process holds the full index). In-process, this copy is the index itself.
        let service = match self.placement {
            Placement::Process => SearchService::new(SearchConfig {
                index: MessageIndexConfig {
                    max_docs: FALLBACK_MAX_DOCS,
                    ..MessageIndexConfig::default()
                },
            }),
            Placement::InProcess => SearchService::default(),
        };
        let placed = Placed::start(ctx, "search", self.placement, &self.options, service, true)?;
        let state = Arc::new(SearchState {
            placed,
            store,
            sync: Arc::new(Sync::default()),
            ctx: ctx.clone(),
        });
        state.refresh_extra();
        Ok(state)
    }

    async fn start_deferred(&self, ctx: &Context, state: &Self::State) -> Result<(), BoxError> {
        // The in-process index first (and the worker's if it is already up), then the loop
        // that follows worker restarts.
        let worker = state.worker_up();
        let ok = state.run_load(true, worker).await;
        spawn_sync_loop(ctx, state);
        if ok {
            Ok(())
        } else {
            Err(state
                .sync
                .last_error
                .lock()
                .clone()
                .unwrap_or_else(|| "the initial index load failed".into())
                .into())
        }
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &Self::State,
        req: Request,
    ) -> Result<Value, DaemonError> {
        match req.command.as_str() {
            // Index changes go to both placements, like the data events.
            "search/index-add" => {
                let list = params_of(req.params)?.array("messages")?;
                state.apply(list, Vec::new()).await
            }
            "search/index-remove" => {
                let ids = params_of(req.params)?
                    .array("ids")?
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(DaemonError::from(ParamError::wrong_type(
                            format!("ids[{i}]"),
                            ParamType::String,
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                state.apply(Vec::new(), ids).await
            }
            "search/reindex" => {
                state.request_reindex();
                Ok(json!({ "scheduled": true }))
            }
            // The index mirrors chat_messages: emptying only one placement, or emptying it
            // while the collection still holds messages, would make it lie.
            "search/index-clear" => Err(DaemonError::bad_request(
                "the message index follows chat_messages; use search/reindex to rebuild it \
                 (it is emptied on its own when the collection is truncated)",
            )),
            command => {
                state
                    .placed
                    .call(ctx, command, req.params, req.deadline)
                    .await
            }
        }
    }

    async fn on_event(&self, _ctx: &Context, state: &Self::State, event: Delivery) {
        let event = match event {
            Delivery::Event(e) => e,
            Delivery::Lagged { missed } => {
                tracing::warn!(
                    daemon = "search",
                    missed,
                    "Missed chat message events; reloading the index"
                );
                state.sync.full_wanted.store(true, Ordering::Relaxed);
                state.sync.wake.notify_one();
                return;
            }
        };
        let topic = event.topic();
        let data = event.data();
        let result = if topic.ends_with(":created") || topic.ends_with(":updated") {
            match message_of(data) {
                Some(m) => state.apply(vec![m], Vec::new()).await,
                // An update that removed the text: nothing left to find.
                None => match data.get("id").and_then(Value::as_str) {
                    Some(id) => state.apply(Vec::new(), vec![id.to_owned()]).await,
                    None => Ok(Value::Null),
                },
            }
        } else if topic.ends_with(":deleted") {
            match data.get("id").and_then(Value::as_str) {
                Some(id) => state.apply(Vec::new(), vec![id.to_owned()]).await,
                None => Ok(Value::Null),
            }
        } else {
            if topic.ends_with(":truncated") {
                tracing::info!(
                    daemon = "search",
                    "chat_messages was truncated; emptying and reloading the index"
                );
                state.request_reindex();
            }
            Ok(Value::Null)
        };
        if let Err(e) = result {
            tracing::warn!(daemon = "search", topic, error = %e, "Cannot index a chat message");
        }
    }

    async fn stop(&self, _ctx: &Context, state: Self::State) {
        state.placed.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_taken_from_records() {
        let id = "0190f6d0-0000-7000-8000-000000000001";
        let m = message_of(&json!({
            "id": id, "roomId": "r", "content": {"text": "hello"},
            "createdAt": "2026-01-01T00:00:00.000Z"
        }))
        .expect("message");
        assert_eq!(m["text"], "hello");
        assert!(m["createdAt"].as_i64().unwrap_or(0) > 0);
        assert!(message_of(&json!({"id": "x", "roomId": "r", "content": "t"})).is_none());
        assert!(message_of(&json!({"id": id, "roomId": "r", "content": {"n": 1}})).is_none());
    }

    #[test]
    fn a_load_page_is_cut_into_fallback_chunks_and_one_worker_batch() {
        let rec = |i: usize| {
            json!({
                "id": format!("0190f6d0-0000-7000-8000-{i:012}"), "roomId": "r",
                "content": {"text": format!("message {i}")},
                "createdAt": "2026-01-01T00:00:00.000Z"
            })
        };
        let mut items: Vec<Value> = (0..FALLBACK_CHUNK * 2 + 7).map(rec).collect();
        items.push(json!({"id": "not-a-uuid", "roomId": "r", "content": "t"}));
        let p = prepare_page(&items, true, true);
        assert_eq!(p.skipped, 1);
        assert_eq!(p.count, FALLBACK_CHUNK * 2 + 7);
        let sizes: Vec<usize> = p
            .fallback
            .iter()
            .map(|c| c["messages"].as_array().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, vec![FALLBACK_CHUNK, FALLBACK_CHUNK, 7]);
        let worker = p.worker.expect("worker batch");
        assert_eq!(
            worker["messages"].as_array().map(Vec::len),
            Some(FALLBACK_CHUNK * 2 + 7)
        );
        let only_worker = prepare_page(&items, false, true);
        assert!(only_worker.fallback.is_empty() && only_worker.worker.is_some());
        let nothing = prepare_page(&items[FALLBACK_CHUNK * 2 + 7..], true, true);
        assert_eq!((nothing.count, nothing.skipped), (0, 1));
        assert!(nothing.fallback.is_empty() && nothing.worker.is_none());
    }
}
