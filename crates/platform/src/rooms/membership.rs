//! The `room-membership` daemon: auto-join rules, caught up in deferred init and applied to each
//! new user; every join goes through `room/join`, so the room daemon stays the only writer.

use crate::rooms::room::MAX_JOIN;
use crate::util::{id_of, short};
use daemonhost_data_client::{Data, DataClient, Handle, ListParams};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Delivery, Request,
};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// Settings of the [`RoomMembershipDaemon`].
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Rooms every user joins (Discord-style auto-join rules).
    pub auto_join: Vec<String>,
    /// Users per page in the deferred catch-up.
    pub page: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            auto_join: vec!["general".into()],
            page: 500,
        }
    }
}

/// The membership-rules daemon (name `room-membership`).
#[derive(Debug, Clone)]
pub struct RoomMembershipDaemon {
    store: DataClient,
    cfg: MembershipConfig,
}

impl RoomMembershipDaemon {
    /// A membership daemon reading the store from `store`.
    pub fn new(store: DataClient, cfg: MembershipConfig) -> Self {
        RoomMembershipDaemon { store, cfg }
    }
}

/// The running membership daemon's state.
#[derive(Debug)]
pub struct MembershipState {
    store: Data,
    caught_up: AtomicU64,
    joined_on_create: AtomicU64,
    failures: AtomicU64,
    lost_events: AtomicU64,
}

impl MembershipState {
    fn publish_stats(&self, ctx: &Context, rules: &[String]) {
        ctx.set_details(json!({
            "autoJoin": rules,
            "caughtUp": self.caught_up.load(Ordering::Relaxed),
            "joinedOnCreate": self.joined_on_create.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "lostEvents": self.lost_events.load(Ordering::Relaxed),
        }));
    }
}

impl RoomMembershipDaemon {
    async fn join_all(&self, ctx: &Context, users: &[&str]) -> Result<u64, DaemonError> {
        let mut joined = 0;
        for room in &self.cfg.auto_join {
            let r = ctx
                .router()
                .ask("room/join", json!({ "room": room, "userIds": users }))
                .await?;
            joined += r["joined"].as_array().map_or(0, Vec::len) as u64;
        }
        Ok(joined)
    }

    /// Every existing user into every auto-join room, a page at a time.
    async fn catch_up(&self, ctx: &Context, state: &MembershipState) -> Result<(), BoxError> {
        let page_size = self.cfg.page.clamp(1, MAX_JOIN);
        let mut cursor = None;
        loop {
            let page = state
                .store
                .list(
                    &Handle::Primary,
                    "users",
                    ListParams {
                        fields: Some(json!(["id"])),
                        limit: Some(json!(page_size)),
                        cursor: cursor.take(),
                        ..Default::default()
                    },
                )
                .await?;
            let ids: Vec<&str> = page.items.iter().filter_map(id_of).collect();
            if !ids.is_empty() {
                let n = self.join_all(ctx, &ids).await?;
                state.caught_up.fetch_add(n, Ordering::Relaxed);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }
}

impl Daemon for RoomMembershipDaemon {
    type State = MembershipState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("room-membership")
            .requires("data")
            .requires("room")
            .events("data:users:created")
            .command(CommandSpec::new(
                "room-membership/status",
                "Auto-join rules and counters",
            ))
    }

    async fn start(&self, ctx: &Context) -> Result<MembershipState, BoxError> {
        let state = MembershipState {
            store: self.store.bind(ctx.router()),
            caught_up: AtomicU64::new(0),
            joined_on_create: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            lost_events: AtomicU64::new(0),
        };
        state.publish_stats(ctx, &self.cfg.auto_join);
        Ok(state)
    }

    async fn start_deferred(&self, ctx: &Context, state: &MembershipState) -> Result<(), BoxError> {
        let r = self.catch_up(ctx, state).await;
        state.publish_stats(ctx, &self.cfg.auto_join);
        r
    }

    async fn handle(
        &self,
        _ctx: &Context,
        state: &MembershipState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        match req.command.as_str() {
            "room-membership/status" => Ok(json!({
                "autoJoin": self.cfg.auto_join,
                "caughtUp": state.caught_up.load(Ordering::Relaxed),
                "joinedOnCreate": state.joined_on_create.load(Ordering::Relaxed),
                "failures": state.failures.load(Ordering::Relaxed),
                "lostEvents": state.lost_events.load(Ordering::Relaxed),
            })),
            other => Err(DaemonError::unknown_command(format!(
                "room-membership daemon has no command '{}'",
                short(other)
            ))),
        }
    }

    async fn on_event(&self, ctx: &Context, state: &MembershipState, d: Delivery) {
        match d {
            Delivery::Event(ev) => {
                if let Some(id) = id_of(ev.data()) {
                    match self.join_all(ctx, &[id]).await {
                        Ok(n) => {
                            state.joined_on_create.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            state.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(user = id, error = %e, "auto-join failed");
                        }
                    }
                }
            }
            Delivery::Lagged { missed } => {
                // Lost creation events: a catch-up pass repairs whatever they would have done.
                state.lost_events.fetch_add(missed, Ordering::Relaxed);
                if let Err(e) = self.catch_up(ctx, state).await {
                    state.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "membership catch-up after lost events failed");
                }
            }
        }
        state.publish_stats(ctx, &self.cfg.auto_join);
    }
}
