//! The `archive` daemon: moves rows past their collection's archive rule into rotating archive
//! files, in batches, through [`file`] (the crash-safe mechanics).

pub mod file;

pub use file::{BatchOutcome, CrashPoint, archive_batch, recover};

use crate::StoreSlot;
use crate::error::DataError;
use crate::schema::CollectionSchema;
use crate::store::{DataStore, Handle};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Settings of the [`ArchiveDaemon`].
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Where the data daemon publishes its store.
    pub store: StoreSlot,
    /// Period of the archive run (the original used 60 s).
    pub interval: Duration,
    /// Rows per batch (one set of transactions on the writer; other writes run between batches).
    pub batch_size: u64,
    /// Rotate to a new archive file once the current one holds this many rows.
    pub max_file_rows: u64,
    /// Most batches per run, so one run never monopolises the writer for long.
    pub max_batches_per_run: u32,
    /// Test hook: abort the process inside a batch.
    #[doc(hidden)]
    pub crash: CrashPoint,
}

impl ArchiveConfig {
    /// Defaults: every 60 s, batches of 1000, files of 100 000 rows, 100 batches per run.
    pub fn new(store: StoreSlot) -> Self {
        ArchiveConfig {
            store,
            interval: Duration::from_secs(60),
            batch_size: 1000,
            max_file_rows: 100_000,
            max_batches_per_run: 100,
            crash: CrashPoint::None,
        }
    }
}

/// Progress, for `archive/status` and the `archive:progress` event.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    /// Whether a run is in progress.
    pub running: bool,
    /// Completed runs.
    pub runs: u64,
    /// Rows moved since start, total.
    pub moved_total: u64,
    /// Rows moved since start, per collection.
    pub moved: BTreeMap<String, u64>,
    /// Rows completed from interrupted batches.
    pub recovered: u64,
    /// Archive files, oldest first.
    pub files: Vec<String>,
    /// Duration of the last run.
    pub last_run_ms: f64,
    /// Error of the last run, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Its protocol code (`storage_full` when the archive file or the disk is full: the rows
    /// stay in `primary` and the next run tries again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<&'static str>,
    /// Runs that failed.
    pub failed_runs: u64,
}

/// The archiver shared by the timer and the commands.
#[derive(Debug)]
pub struct Archiver {
    store: DataStore,
    config: ArchiveConfig,
    running: AtomicBool,
    status: Mutex<ArchiveStatus>,
}

impl Archiver {
    /// An archiver over `store`.
    pub fn new(store: DataStore, config: ArchiveConfig) -> Self {
        Archiver {
            store,
            config,
            running: AtomicBool::new(false),
            status: Mutex::new(ArchiveStatus::default()),
        }
    }

    /// The current progress.
    pub fn status(&self) -> ArchiveStatus {
        let mut s = self.status.lock().clone();
        s.files = self
            .store
            .archive_files()
            .list()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        s
    }

    /// One run over every collection with an archive rule. Returns `None` if a run is already
    /// in progress (runs never overlap).
    pub async fn run_once(
        &self,
        cancel: Option<&Context>,
    ) -> Option<Result<BTreeMap<String, u64>, DataError>> {
        if self.running.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.status.lock().running = true;
        let t = std::time::Instant::now();
        let r = self.run_inner(cancel).await;
        {
            let mut s = self.status.lock();
            s.running = false;
            s.runs += 1;
            s.last_run_ms = t.elapsed().as_secs_f64() * 1000.0;
            s.last_error = r.as_ref().err().map(ToString::to_string);
            s.last_error_code = r.as_ref().err().map(|e| e.code().as_str());
            s.failed_runs += u64::from(r.is_err());
        }
        self.running.store(false, Ordering::Release);
        Some(r)
    }

    async fn run_inner(
        &self,
        cancel: Option<&Context>,
    ) -> Result<BTreeMap<String, u64>, DataError> {
        let mut moved = BTreeMap::new();
        let mut batches = 0u32;
        let schemas: Vec<Arc<CollectionSchema>> = self
            .store
            .schemas()
            .collections
            .values()
            .filter(|s| s.archive.is_some())
            .cloned()
            .collect();
        for schema in schemas {
            let Some(rule) = schema.archive.clone() else {
                continue;
            };
            // The rowid range bounds the count in two seeks; only a table that may be over
            // its limit is counted (a scan of every index page, each minute, otherwise).
            let bound = self
                .store
                .count_upper_bound(&Handle::Primary, &schema.collection)
                .await?;
            if bound <= rule.max_rows {
                continue;
            }
            let count = self
                .store
                .count(&Handle::Primary, &schema.collection, None)
                .await?;
            if count <= rule.max_rows {
                continue;
            }
            let mut left = count - (rule.max_rows - rule.rows_per_archive);
            while left > 0 && batches < self.config.max_batches_per_run {
                if cancel.is_some_and(Context::is_cancelled) {
                    return Ok(moved);
                }
                let n = left.min(self.config.batch_size.max(1));
                let files = self.store.archive_files().clone();
                let s2 = schema.clone();
                let r2 = rule.clone();
                let max_file = self.config.max_file_rows.max(1);
                let crash = self.config.crash;
                let out = self
                    .store
                    .primary()
                    .exclusive(move |conn| {
                        archive_batch(conn, &files, &s2, &r2, n, max_file, crash)
                    })
                    .await?;
                batches += 1;
                {
                    let mut s = self.status.lock();
                    s.moved_total += out.moved;
                    s.recovered += out.recovered;
                    *s.moved.entry(schema.collection.clone()).or_default() += out.moved;
                }
                *moved.entry(schema.collection.clone()).or_default() += out.moved;
                if out.moved == 0 {
                    break;
                }
                left = left.saturating_sub(out.moved);
                tokio::task::yield_now().await;
            }
        }
        Ok(moved)
    }
}

/// Moves old rows out of `primary` on an interval. Name `archive`, requires `data`.
/// Commands: `archive/status`, `archive/run`. Publishes `archive:progress` after each run.
#[derive(Debug, Clone)]
pub struct ArchiveDaemon {
    config: ArchiveConfig,
}

impl ArchiveDaemon {
    /// An archive daemon.
    pub fn new(config: ArchiveConfig) -> Self {
        ArchiveDaemon { config }
    }
}

async fn run_and_publish(ctx: &Context, a: &Archiver) -> Value {
    let r = match a.run_once(Some(ctx)).await {
        None => json!({ "skipped": "a run is already in progress" }),
        Some(Ok(moved)) => json!({ "moved": moved }),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "archive run failed");
            json!({ "error": e.to_string() })
        }
    };
    let status = a.status();
    ctx.set_details(json!({ "archive": status }));
    ctx.publish("archive:progress", json!({ "run": r, "status": status }));
    r
}

impl Daemon for ArchiveDaemon {
    type State = Arc<Archiver>;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("archive")
            .requires("data")
            .command(CommandSpec::new(
                "archive/status",
                "Archive progress: runs, rows moved per collection, files, last error",
            ))
            .command(
                CommandSpec::new(
                    "archive/run",
                    "Run archiving now (skipped if a run is in progress); returns rows moved",
                )
                .timeout(Duration::from_secs(300)),
            )
    }

    async fn start(&self, ctx: &Context) -> Result<Arc<Archiver>, BoxError> {
        let store = self
            .config
            .store
            .get()
            .ok_or("the data daemon has not published its store")?;
        let a = Arc::new(Archiver::new(store, self.config.clone()));
        ctx.set_details(json!({ "archive": a.status() }));
        let (a2, c2) = (a.clone(), ctx.clone());
        ctx.timers()
            .register_interval("archive", self.config.interval, move || {
                let (a, c) = (a2.clone(), c2.clone());
                async move {
                    run_and_publish(&c, &a).await;
                }
            })?;
        Ok(a)
    }

    async fn handle(
        &self,
        ctx: &Context,
        a: &Arc<Archiver>,
        req: Request,
    ) -> Result<Value, DaemonError> {
        match req.command.as_str() {
            "archive/status" => {
                serde_json::to_value(a.status()).map_err(|e| DaemonError::internal(e.to_string()))
            }
            "archive/run" => Ok(run_and_publish(ctx, a).await),
            other => Err(DaemonError::unknown_command(format!(
                "archive does not serve {other}"
            ))),
        }
    }
}

/// The archive file paths, for tests.
pub fn archive_paths(store: &DataStore) -> Vec<PathBuf> {
    store.archive_files().list()
}
