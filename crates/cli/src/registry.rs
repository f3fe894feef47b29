//! The catalog: every daemon the host runs, registered in one function.
//!
//! Crates export daemons and their configs; none registers anything itself. This is the one
//! place that knows the whole set, so adding a daemon, moving one to a worker process or another
//! host, or reading the graph starts here.
//!
//! ```text
//! system  health  events                    (no dependencies: READY in microseconds)
//! logger ── console
//! data ─┬─ archive
//!       ├─ session (sessions stored in `sessions`; users read from `users`, not `user/get`)
//!       ├─ search (placed: worker process + in-process fallback)
//!       ├─ user ─┬─ room ─┬─ room-membership
//!       │        │        └─ chat
//!       ├─ training
//!       └─ governance
//! ai
//! proxy                                     (no dependencies; fetches only what [proxy] allow lists)
//! data, user, room, ai, chat (+ search wanted) ── persona
//! widget (console wanted: the browser bridge's commands, crates/cli/src/web/widget.rs)
//! ```

use crate::config::Config;
use daemonhost_ai::AiDaemon;
use daemonhost_data::{ArchiveDaemon, DataDaemon};
use daemonhost_data_client::DataClient;
use daemonhost_platform::{
    ChatDaemon, ConsoleDaemon, GovernanceDaemon, PersonaDaemon, RoomDaemon, RoomMembershipDaemon,
    TrainingDaemon, UserDaemon,
};
use daemonhost_proxy::ProxyDaemon;
use daemonhost_runtime::RuntimeBuilder;
use daemonhost_system::{
    EventsDaemon, HealthDaemon, HostCounters, LoggerDaemon, SearchDaemon, SessionDaemon,
    SystemDaemon,
};
use std::path::Path;
use std::sync::Arc;

/// What the catalog needs besides the config: the data dir, the socket server's counters, and
/// a hook run after each round of persona snapshots (the allocator trim).
pub struct Catalog<'a> {
    /// The host's configuration.
    pub config: &'a Config,
    /// The data dir.
    pub data_dir: &'a Path,
    /// Counters the socket server keeps, read by `health/metrics` and `system/startup`.
    pub counters: Arc<HostCounters>,
    /// Called after each round of persona snapshots.
    pub after_snapshots: Option<Box<dyn Fn() + Send + Sync>>,
    /// The browser clients the web listener serves, listed by `widget/clients`.
    pub web_clients: Arc<crate::web::Clients>,
}

impl std::fmt::Debug for Catalog<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("data_dir", &self.data_dir)
            .field("after_snapshots", &self.after_snapshots.is_some())
            .finish_non_exhaustive()
    }
}

/// Register every daemon of the host on `builder`.
pub fn register_all(builder: &mut RuntimeBuilder, catalog: Catalog<'_>) {
    let Catalog {
        config: cfg,
        data_dir,
        counters,
        after_snapshots,
        web_clients,
    } = catalog;

    // The host's own daemons.
    builder
        .register(SystemDaemon {
            host: Arc::clone(&counters),
        })
        .register(HealthDaemon {
            host: Arc::clone(&counters),
            prometheus: Some(crate::metrics::HostView::health_renderer(counters)),
        })
        .register(EventsDaemon);

    // Data and what stores through it.
    let data = DataDaemon::new(cfg.data_config(data_dir));
    // The data client of every daemon that stores: in-process while `data` runs here.
    let store = DataClient::new(data.local_slot());
    builder.register(SessionDaemon::new(store.clone(), cfg.session_config()));
    builder.register(ArchiveDaemon::new(cfg.archive_config(data.store_slot())));
    builder.register(data);

    // The worker-placed daemons.
    let workers = cfg.workers_config(data_dir, store.clone());
    builder.register(
        LoggerDaemon::new(workers.logger, workers.options.clone())
            .with_max_log_bytes(workers.max_log_bytes),
    );
    builder.register(SearchDaemon::new(
        workers.search,
        workers.options,
        workers.store,
    ));

    builder.register(AiDaemon::new(cfg.ai_config(data_dir)));
    // The same-origin proxy the web listener's `/proxy/<encoded-url>` calls.
    builder.register(ProxyDaemon::new(cfg.proxy_config()));

    // The chat platform.
    let p = cfg.platform_config();
    builder.register(UserDaemon::new(store.clone(), p.users.clone()));
    builder.register(RoomDaemon::new(store.clone(), p.rooms.clone()));
    builder.register(RoomMembershipDaemon::new(
        store.clone(),
        p.membership.clone(),
    ));
    builder.register(ChatDaemon::new(store.clone(), p.chat.clone()));
    builder.register(TrainingDaemon::new(store.clone(), p.training.clone()));
    builder.register(GovernanceDaemon::new(store.clone(), p.governance.clone()));
    if p.console {
        builder.register(ConsoleDaemon::new(p.console_config.clone()));
    }
    // The browser bridge's commands (the listener itself is the host's, crates/cli/src/web).
    builder.register(crate::web::WidgetDaemon::new(web_clients));

    let mut personas = PersonaDaemon::new(store, cfg.personas.clone());
    if let Some(hook) = after_snapshots {
        personas = personas.after_snapshots(hook);
    }
    builder.register(personas);
}
