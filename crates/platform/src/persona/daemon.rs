//! The `persona` daemon: every persona's state, the scheduler, snapshots and replies.

use crate::persona::config::{AfterSnapshots, PersonasConfig};
use crate::persona::personas::{Personas, data_err};
use crate::persona::scheduler::schedule;
use crate::util::params_of;
use daemonhost_data_client::DataClient;
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Delivery, Request, Semaphore,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The persona daemon (`persona`).
#[derive(Clone)]
pub struct PersonaDaemon {
    store: DataClient,
    config: PersonasConfig,
    after_snapshots: Option<AfterSnapshots>,
}

impl std::fmt::Debug for PersonaDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonaDaemon")
            .field("config", &self.config)
            .field("after_snapshots", &self.after_snapshots.is_some())
            .finish_non_exhaustive()
    }
}

impl PersonaDaemon {
    /// A persona daemon reading and writing through the data daemon's store.
    pub fn new(store: DataClient, config: PersonasConfig) -> Self {
        PersonaDaemon {
            store,
            config,
            after_snapshots: None,
        }
    }

    /// Run `f` after each interval's round of snapshots that wrote at least one (the host uses
    /// it to hand the memory of those database opens back to the OS at once).
    #[must_use]
    pub fn after_snapshots(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.after_snapshots = Some(Arc::new(f));
        self
    }
}

impl Daemon for PersonaDaemon {
    type State = Arc<Personas>;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("persona")
            .requires("data")
            .requires("user")
            .requires("ai")
            .requires("chat")
            .requires("room")
            .wants("search")
            .events("data:users:{created,updated,deleted}")
            .events("data:chat_messages:created")
            .events("data:rooms:{created,updated,deleted}")
            .command(
                CommandSpec::new(
                    "persona/status",
                    "Every persona's mood, energy, inbox and counters (or one with id)",
                )
                .param("id", "string", false, "persona user id"),
            )
            .command(CommandSpec::new(
                "persona/list",
                "Ids and names of the personas hosted",
            ))
            .command(CommandSpec::new(
                "persona/snapshot",
                "Write every persona's state to its database now",
            ))
            .event_queue(self.config.event_queue.max(1))
    }

    async fn start(&self, ctx: &Context) -> Result<Arc<Personas>, BoxError> {
        let store = self.store.bind(ctx.router());
        let p = Arc::new(Personas {
            store,
            config: self.config.clone(),
            map: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            replies: Semaphore::new(self.config.max_concurrent_replies.max(1)),
            not_loaded: Mutex::new(0),
            lost_events: Mutex::new(0),
            resyncs: Mutex::new(0),
            reply_failures: Mutex::new(0),
            pending: Mutex::new(HashMap::new()),
        });
        ctx.spawn(schedule(ctx.clone(), p.clone()));
        let p2 = p.clone();
        let after = self.after_snapshots.clone();
        ctx.timers().register_interval(
            "snapshot",
            Duration::from_millis(self.config.snapshot_interval_ms.max(100)),
            move || {
                let p = p2.clone();
                let after = after.clone();
                async move {
                    if p.snapshot_dirty().await > 0
                        && let Some(f) = after
                    {
                        f();
                    }
                }
            },
        )?;
        Ok(p)
    }

    async fn start_deferred(&self, _ctx: &Context, p: &Arc<Personas>) -> Result<(), BoxError> {
        // Every persona user (bounded by max_personas) with its snapshot, following exactly
        // its rooms, and each room caught up from its cursor: what was said while the host
        // was down reaches the personas now.
        p.resync().await.map_err(data_err)
    }

    async fn handle(
        &self,
        _ctx: &Context,
        p: &Arc<Personas>,
        req: Request,
    ) -> Result<Value, DaemonError> {
        match req.command.as_str() {
            "persona/status" => {
                let params = params_of(req.params)?;
                let id = params.opt_str("id")?;
                let v = p.status(id);
                if v.is_null() {
                    return Err(DaemonError::not_found(format!(
                        "no persona '{}' is hosted",
                        crate::util::short(id.unwrap_or_default())
                    )));
                }
                Ok(v)
            }
            "persona/list" => {
                let map = p.map.lock();
                let mut list: Vec<Value> = map
                    .iter()
                    .map(|(id, e)| json!({ "id": id, "name": e.name }))
                    .collect();
                list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
                Ok(json!({ "personas": list, "count": map.len() }))
            }
            "persona/snapshot" => {
                for e in p.map.lock().values_mut() {
                    e.dirty = true;
                }
                p.snapshot_dirty().await;
                Ok(json!({ "snapshotted": p.map.lock().len() }))
            }
            other => Err(DaemonError::unknown_command(format!(
                "the persona daemon does not serve '{other}'"
            ))),
        }
    }

    async fn on_event(&self, _ctx: &Context, p: &Arc<Personas>, event: Delivery) {
        let ev = match event {
            Delivery::Event(ev) => ev,
            Delivery::Lagged { missed } => {
                // Events were lost (messages, joins, new personas): read the truth back.
                *p.lost_events.lock() += missed;
                if let Err(e) = p.resync().await {
                    tracing::warn!(error = %e, missed, "Persona catch-up after lost events failed");
                }
                return;
            }
        };
        let data = ev.data();
        match ev.topic() {
            "data:users:created" | "data:users:updated" => {
                if data.get("type").and_then(Value::as_str) == Some("persona") {
                    p.add(data).await;
                } else if let Some(id) = data.get("id").and_then(Value::as_str) {
                    // A user that stopped being a persona.
                    if p.map.lock().contains_key(id) {
                        p.remove(id).await;
                    }
                }
            }
            "data:users:deleted" => {
                if let Some(id) = data.get("id").and_then(Value::as_str) {
                    p.remove(id).await;
                }
            }
            "data:chat_messages:created" => {
                p.hear_message(data);
            }
            "data:rooms:created" | "data:rooms:updated" | "data:rooms:deleted" => {
                let deleted = ev.topic() == "data:rooms:deleted";
                let joined = p.room_changed(data, deleted);
                let Some(room) = data.get("id").and_then(Value::as_str) else {
                    return;
                };
                // A join: what was said in the room since (the join window included) but
                // before this event is read back.
                for pid in joined {
                    if let Err(e) = p.catch_up(&pid, Some(vec![room.to_owned()])).await {
                        tracing::warn!(persona = %pid, room, error = %e, "Catch-up after a join failed");
                    }
                }
            }
            _ => {}
        }
    }

    async fn stop(&self, _ctx: &Context, p: Arc<Personas>) {
        for e in p.map.lock().values_mut() {
            e.dirty = true;
        }
        p.snapshot_dirty().await;
        p.map.lock().clear();
    }
}
