//! The archive: moving a collection's oldest rows from `primary` into rotating archive files,
//! and the [`ArchiveDaemon`] that does it on an interval.
//!
//! # Why no row can be lost or duplicated
//!
//! SQLite does **not** make a transaction spanning an ATTACHed database atomic across the two
//! files when the main database is in WAL mode (the super-journal is only used in rollback
//! mode; in WAL the files commit one after the other, `main` first). A single
//! `INSERT…SELECT + DELETE` transaction could therefore commit the delete in `primary` and lose
//! the copy in the archive if the process died between the two file commits. So each batch is
//! three small transactions with a write-ahead *intent list* stored in the archive file itself,
//! all run back to back on `primary`'s writer thread (no other write can interleave):
//!
//! 1. **copy** (writes only the archive file, `synchronous=FULL`, rollback journal): record the
//!    batch's ids in `_archive_pending`, `INSERT OR REPLACE` those rows into the archive table,
//!    bump the file's row count. Atomic within that one file, and fsynced before step 2.
//! 2. **delete** (writes only `primary`): delete from the hot table exactly the ids listed in
//!    `_archive_pending`, i.e. rows whose copy is already durable.
//! 3. **clear** (archive file): empty `_archive_pending`.
//!
//! A crash after 1 leaves rows in both places *and* their ids in `_archive_pending`; a crash
//! after 2 leaves only a stale list. [`recover`] runs in the data daemon's core init (before any
//! request is served) and in front of every batch: it replays steps 2 and 3, which are
//! idempotent. Rotation to a new file happens only after recovery, when the newest file's list is
//! empty, so the list that needs replaying is always in the newest file. Hence after recovery
//! every row is in exactly one place, and `hot + archived` is constant.
//!
//! Archive files use `journal_mode=DELETE` so read-only connections can open them without
//! creating WAL side files. Archive tables carry the hot table's columns and its (non-unique)
//! indexes, and no foreign keys (the rows they point at stay in `primary`).

use crate::data::StoreSlot;
use crate::data::ddl::{self, q};
use crate::data::error::DataError;
use crate::data::schema::{ArchiveRule, CollectionSchema};
use crate::data::store::{ArchiveFiles, DataStore, Handle};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ARC: &str = "arc";

fn sq(op: &'static str) -> impl Fn(rusqlite::Error) -> DataError {
    move |e| DataError::sqlite("archive", op, &e)
}

fn attach(conn: &Connection, file: &Path) -> Result<(), DataError> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, &e))?;
    }
    let path = file.to_string_lossy().into_owned();
    conn.execute("ATTACH DATABASE ?1 AS arc", [path])
        .map_err(sq("attach"))?;
    let r = conn.execute_batch(
        "PRAGMA arc.journal_mode=DELETE;
         PRAGMA arc.synchronous=FULL;
         CREATE TABLE IF NOT EXISTS arc._archive_meta (k TEXT PRIMARY KEY NOT NULL, v INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS arc._archive_pending (collection TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (collection, id));",
    );
    if let Err(e) = r {
        detach(conn);
        return Err(DataError::sqlite("archive", "prepare archive file", &e));
    }
    Ok(())
}

fn detach(conn: &Connection) {
    if let Err(e) = conn.execute_batch("DETACH DATABASE arc") {
        tracing::warn!(error = %e, "detach archive failed");
    }
}

fn in_txn<T>(
    conn: &Connection,
    op: &'static str,
    f: impl FnOnce() -> Result<T, DataError>,
) -> Result<T, DataError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sq(op))?;
    match f() {
        Ok(t) => {
            conn.execute_batch("COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                DataError::sqlite("archive", op, &e)
            })?;
            Ok(t)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Replay steps 2 and 3 for whatever `_archive_pending` lists (arc must be attached).
fn replay_pending(conn: &Connection) -> Result<u64, DataError> {
    let colls: Vec<String> = {
        let mut st = conn
            .prepare("SELECT DISTINCT collection FROM arc._archive_pending")
            .map_err(sq("read pending"))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(sq("read pending"))?;
        rows.collect::<Result<_, _>>().map_err(sq("read pending"))?
    };
    if colls.is_empty() {
        return Ok(0);
    }
    let mut deleted = 0u64;
    in_txn(conn, "delete hot rows", || {
        for c in &colls {
            if !crate::data::schema::is_identifier(c)
                || ddl::table_columns(conn, "primary", "main", c)?.is_empty()
            {
                continue;
            }
            let n = conn
                .execute(
                    &format!(
                        "DELETE FROM main.{} WHERE \"id\" IN (SELECT id FROM arc._archive_pending WHERE collection = ?1)",
                        q(c)
                    ),
                    [c],
                )
                .map_err(sq("delete hot rows"))?;
            deleted += n as u64;
        }
        Ok(())
    })?;
    in_txn(conn, "clear pending", || {
        conn.execute("DELETE FROM arc._archive_pending", [])
            .map_err(sq("clear pending"))?;
        Ok(())
    })?;
    Ok(deleted)
}

/// Finish a batch a crash interrupted in archive file `file`; returns hot rows deleted.
/// Runs on `primary`'s writer, outside a transaction.
pub fn recover(conn: &Connection, file: &Path) -> Result<u64, DataError> {
    if !file.exists() {
        return Ok(0);
    }
    attach(conn, file)?;
    let r = replay_pending(conn);
    detach(conn);
    let n = r?;
    if n > 0 {
        tracing::warn!(rows = n, file = %file.display(), "completed an interrupted archive batch");
    }
    Ok(n)
}

fn file_rows(conn: &Connection) -> Result<u64, DataError> {
    let n: Option<i64> = conn
        .query_row(
            "SELECT v FROM arc._archive_meta WHERE k = 'rows'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sq("read file rows"))?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

fn ensure_archive_table(
    conn: &Connection,
    schema: &CollectionSchema,
) -> Result<Vec<String>, DataError> {
    let hot = ddl::table_columns(conn, "primary", "main", &schema.collection)?;
    let have = ddl::table_columns(conn, "archive", ARC, &schema.collection)?;
    if have.is_empty() {
        conn.execute_batch(&ddl::create_table_sql(ARC, &schema.collection, &hot))
            .map_err(sq("create archive table"))?;
        for ix in &schema.indexes {
            conn.execute_batch(&ddl::create_index_sql(ARC, &schema.collection, ix, true))
                .map_err(sq("create archive index"))?;
        }
    } else {
        for (name, ty) in &hot {
            if !have.iter().any(|(n, _)| n == name) {
                conn.execute_batch(&format!(
                    "ALTER TABLE arc.{} ADD COLUMN {} {}",
                    q(&schema.collection),
                    q(name),
                    ty
                ))
                .map_err(sq("add archive column"))?;
            }
        }
    }
    Ok(hot.into_iter().map(|(n, _)| n).collect())
}

/// The result of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchOutcome {
    /// Rows moved (deleted from the hot table with a durable copy).
    pub moved: u64,
    /// Rows recovered from an interrupted batch first.
    pub recovered: u64,
    /// The archive file written.
    pub file: String,
    /// Whether a new file was started.
    pub rotated: bool,
}

/// Test hook: where to abort the process inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrashPoint {
    /// Never.
    #[default]
    None,
    /// After the copy committed, before the hot delete.
    AfterCopy,
    /// After the hot delete, before the intent list is cleared.
    AfterDelete,
}

/// Move up to `limit` of the oldest rows of `schema` (by `rule.order_by`, then id) into the
/// current archive file, rotating first if it holds `max_file_rows` or more. Runs on
/// `primary`'s writer, outside a transaction (it manages three of its own).
pub fn archive_batch(
    conn: &Connection,
    files: &ArchiveFiles,
    schema: &CollectionSchema,
    rule: &ArchiveRule,
    limit: u64,
    max_file_rows: u64,
    crash: CrashPoint,
) -> Result<BatchOutcome, DataError> {
    let mut out = BatchOutcome::default();
    let mut file = files.current().unwrap_or_else(|| files.path_for(1));
    attach(conn, &file)?;
    let res = (|| -> Result<(), DataError> {
        out.recovered = replay_pending(conn)?;
        let rows = file_rows(conn)?;
        if rows >= max_file_rows {
            detach(conn);
            file = files.path_for(files.current_number() + 1);
            out.rotated = true;
            attach(conn, &file)?;
        }
        files.push(file.clone());
        let room = max_file_rows.saturating_sub(file_rows(conn)?).max(1);
        let n = limit.min(room);
        let cols = ensure_archive_table(conn, schema)?;
        let cols_sql = cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        let t = q(&schema.collection);
        let n_i = i64::try_from(n).unwrap_or(i64::MAX);
        // 1. copy + intent list, durable in the archive file.
        in_txn(conn, "copy", || {
            conn.execute(
                &format!(
                    "INSERT OR IGNORE INTO arc._archive_pending(collection, id)
                     SELECT ?1, \"id\" FROM main.{t} ORDER BY {} ASC, \"id\" ASC LIMIT ?2",
                    q(&rule.order_by)
                ),
                params![schema.collection, n_i],
            )
            .map_err(sq("record intent"))?;
            let copied = conn
                .execute(
                    &format!(
                        "INSERT OR REPLACE INTO arc.{t} ({cols_sql}) SELECT {cols_sql} FROM main.{t}
                         WHERE \"id\" IN (SELECT id FROM arc._archive_pending WHERE collection = ?1)"
                    ),
                    [&schema.collection],
                )
                .map_err(sq("copy rows"))?;
            conn.execute(
                "INSERT INTO arc._archive_meta(k, v) VALUES ('rows', ?1)
                 ON CONFLICT(k) DO UPDATE SET v = v + excluded.v",
                [i64::try_from(copied).unwrap_or(i64::MAX)],
            )
            .map_err(sq("count rows"))?;
            Ok(())
        })?;
        if crash == CrashPoint::AfterCopy {
            std::process::abort();
        }
        // 2. + 3.
        let colls: u64 = {
            let deleted = in_txn(conn, "delete hot rows", || {
                conn.execute(
                    &format!(
                        "DELETE FROM main.{t} WHERE \"id\" IN (SELECT id FROM arc._archive_pending WHERE collection = ?1)"
                    ),
                    [&schema.collection],
                )
                .map_err(sq("delete hot rows"))
            })?;
            deleted as u64
        };
        if crash == CrashPoint::AfterDelete {
            std::process::abort();
        }
        in_txn(conn, "clear pending", || {
            conn.execute("DELETE FROM arc._archive_pending", [])
                .map_err(sq("clear pending"))?;
            Ok(())
        })?;
        out.moved = colls;
        Ok(())
    })();
    detach(conn);
    out.file = file.display().to_string();
    res.map(|()| out)
}

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
