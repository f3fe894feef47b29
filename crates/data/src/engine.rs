//! The storage engine: one writer thread per database file owning its `Connection`, plus a small
//! pool of reader threads with read-only connections. Async code talks to them only through
//! bounded channels and a oneshot reply, so no SQLite call ever runs on an async worker.
//!
//! Why this shape (and not the original's one `Mutex<Connection>` per `dbPath`):
//! - SQLite allows one writer at a time anyway; a dedicated thread makes that explicit, keeps
//!   the prepared-statement cache warm, and never parks an async worker on a lock.
//! - In WAL mode readers do not block the writer nor each other, so reads go to separate
//!   read-only connections and scale with the reader pool.
//! - **Group commit**: the writer drains whatever write jobs are queued (up to
//!   [`DbOptions::max_group`]) and runs them in *one* transaction, each inside its own
//!   savepoint, so a failing job rolls back alone while the fsync/commit cost is shared. Replies
//!   are sent only after `COMMIT` returns, which is what lets callers publish events "after
//!   commit, never for a rolled-back write".
//! - Queues are bounded: a full queue answers `overloaded` at once instead of growing.
//! - **A full database fails only the write that does not fit.** `SQLITE_FULL` (the quota
//!   [`DbOptions::max_bytes`], applied as `PRAGMA max_page_count`, or a full disk) in a
//!   statement without a statement journal (a one-row `INSERT`/`UPDATE`) makes SQLite roll back
//!   the *whole* transaction, not just the job's savepoint. The writer notices (the connection
//!   is back in autocommit), answers that job `storage_full`, and runs the jobs that had
//!   succeeded in the lost transaction again in a new one, with the jobs not run yet: job
//!   closures are `FnMut` for this, and each run starts from the same database state. Nothing
//!   was acknowledged before COMMIT, so nothing acknowledged is lost.
//!
//! Pragmas: `journal_mode=WAL`, `synchronous=NORMAL` (a committed transaction survives a process
//! crash; an OS crash may lose the last few), `foreign_keys=ON`, `busy_timeout=5000`. On close the
//! writer runs `wal_checkpoint(TRUNCATE)`.
//!
//! Checkpoints: SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold,
//! so the write that happens to cross it pays for copying everyone's pages. Here a
//! **checkpointer thread** with its own connection runs `wal_checkpoint(PASSIVE)` after commits,
//! at most once per [`IDLE_CHECKPOINT`]: a PASSIVE checkpoint takes no lock a writer needs, so
//! it copies pages into the main file on the other core while the writer goes on (measured on
//! 1000-row batches: an idle checkpoint on the writer took 15–18 ms, stalling the next batch
//! that long). Databases opened with `background_checkpoint: false` (persona state: small,
//! open for a moment) checkpoint on the writer instead, when it is idle. Either way
//! `wal_autocheckpoint` is raised to [`AUTOCHECKPOINT_PAGES`] as the backstop. Durability is
//! unchanged: a write is acknowledged once its COMMIT is in the WAL; checkpoints only move
//! committed pages into the main file.

use crate::error::DataError;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use daemonhost_runtime::EventBus;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Least time between two idle checkpoints of the writer.
pub const IDLE_CHECKPOINT: Duration = Duration::from_millis(100);

/// `wal_autocheckpoint` (pages): the in-COMMIT checkpoint for a writer that is never idle.
pub const AUTOCHECKPOINT_PAGES: u32 = 8192;

/// WAL size (pages) past which the checkpointer thread restarts the log (see `checkpoint_loop`).
pub const RESTART_PAGES: u32 = 2048;

/// Tuning for one database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Reader threads (read-only connections). 0 sends reads to the writer.
    pub readers: usize,
    /// Bound of the writer queue (a full queue answers `overloaded`).
    pub writer_queue: usize,
    /// Bound of the reader queue.
    pub reader_queue: usize,
    /// Most write jobs committed together in one transaction.
    pub max_group: usize,
    /// Where [`Db::write_events`] publishes after commit (`None`: events are dropped).
    pub bus: Option<EventBus>,
    /// Page cache of the writer connection, KiB (bounds the host's memory per database).
    pub cache_kib: u32,
    /// Page cache of each reader connection, KiB.
    pub reader_cache_kib: u32,
    /// Run checkpoints on a thread of their own (with its own connection) instead of on the
    /// writer between groups. Off for small, briefly-open databases (persona state), where the
    /// extra thread and connection cost more than the checkpoints.
    pub background_checkpoint: bool,
    /// Quota of the file in bytes (`PRAGMA max_page_count` = this / page size, set after `init`
    /// so schema application is never refused); 0 = unlimited. A write that would grow the file
    /// past it fails with [`DataError::StorageFull`]. Changed at run time by
    /// [`Db::set_max_bytes`]. A quota below the file's size keeps the file at its size: freed
    /// pages are reused, nothing more is allocated.
    pub max_bytes: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            readers: 2,
            writer_queue: 1024,
            reader_queue: 1024,
            max_group: 256,
            bus: None,
            cache_kib: 4 * 1024,
            reader_cache_kib: 2 * 1024,
            background_checkpoint: true,
            max_bytes: 0,
        }
    }
}

/// `max_page_count` meaning "no quota" (SQLite's own upper bound).
const UNLIMITED_PAGES: u64 = 0xffff_fffe;

/// The quota and the space used, for `data/stats`, `data/quota` and `health/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The quota asked for, bytes (0 = unlimited).
    pub max_bytes: u64,
    /// `PRAGMA page_size`.
    pub page_size: u64,
    /// Pages in the file (committed), including free ones.
    pub pages: u64,
    /// Of those, free pages (left by deletes; reused by new rows without VACUUM).
    pub free_pages: u64,
    /// The page limit in force (`max_page_count`; at least the file's size when the quota was
    /// set). `None` when unlimited.
    pub max_pages: Option<u64>,
}

/// Set the quota of schema `schema` (`main`, or an attached `arc`) on `conn`: `max_bytes` / page
/// size pages, or unlimited for 0. Returns the limit in force (SQLite never sets it below the
/// file's current size).
pub fn apply_max_bytes(
    conn: &Connection,
    handle: &str,
    schema: &str,
    max_bytes: u64,
) -> Result<u64, DataError> {
    let page_size: i64 = conn
        .query_row(&format!("PRAGMA {schema}.page_size"), [], |r| r.get(0))
        .map_err(|e| DataError::sqlite(handle, "page_size", &e))?;
    let page_size = u64::try_from(page_size).unwrap_or(4096).max(512);
    let pages = if max_bytes == 0 {
        UNLIMITED_PAGES
    } else {
        (max_bytes / page_size).clamp(1, UNLIMITED_PAGES)
    };
    let set: i64 = conn
        .query_row(
            &format!("PRAGMA {schema}.max_page_count = {pages}"),
            [],
            |r| r.get(0),
        )
        .map_err(|e| DataError::sqlite(handle, "max_page_count", &e))?;
    Ok(u64::try_from(set).unwrap_or(0))
}

fn read_usage(conn: &Connection, handle: &str) -> Result<(u64, u64, u64), DataError> {
    let get = |pragma: &str| -> Result<u64, DataError> {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| DataError::sqlite(handle, pragma, &e))
    };
    Ok((
        get("page_size")?,
        get("page_count")?,
        get("freelist_count")?,
    ))
}

/// A write job run inside the group transaction.
trait GroupJob: Send {
    /// Run; return whether the job's own work succeeded (else its savepoint is rolled back).
    /// May be called again, in a new transaction from the same database state, when the one it
    /// ran in was rolled back by another job's failure (see the module docs); the last run's
    /// result is the one delivered.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Replace the result with `e` (the job's work was lost with its transaction).
    fn fail(&mut self, e: DataError);
    /// Deliver the outcome once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), DataError>);
}

struct Job<F, R> {
    f: F,
    result: Option<Result<R, DataError>>,
    reply: oneshot::Sender<Result<R, DataError>>,
}

impl<F, R> GroupJob for Job<F, R>
where
    F: FnMut(&Connection) -> Result<R, DataError> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let r = (self.f)(conn);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn fail(&mut self, e: DataError) {
        self.result = Some(Err(e));
    }

    fn finish(self: Box<Self>, commit: Result<(), DataError>) {
        let out = match (self.result, commit) {
            (Some(Err(e)), _) | (_, Err(e)) => Err(e),
            (Some(Ok(r)), Ok(())) => Ok(r),
            (None, Ok(())) => Err(DataError::BadRequest("write job did not run".into())),
        };
        let _ = self.reply.send(out);
    }
}

/// Events to publish once the transaction commits: (topic, data).
pub type PendingEvents = Vec<(String, Value)>;

struct EvJob<F, R> {
    f: F,
    result: Option<Result<(R, PendingEvents), DataError>>,
    reply: oneshot::Sender<Result<R, DataError>>,
    bus: Option<EventBus>,
}

impl<F, R> GroupJob for EvJob<F, R>
where
    F: FnMut(&Connection) -> Result<(R, PendingEvents), DataError> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let r = (self.f)(conn);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn fail(&mut self, e: DataError) {
        self.result = Some(Err(e));
    }

    fn finish(self: Box<Self>, commit: Result<(), DataError>) {
        let out = match (self.result, commit) {
            (Some(Err(e)), _) | (_, Err(e)) => Err(e),
            (Some(Ok((r, events))), Ok(())) => {
                // Committed: publish in commit order, before the caller hears back.
                if let Some(bus) = &self.bus {
                    for (topic, data) in events {
                        if let Err(e) = bus.publish(&topic, data) {
                            tracing::warn!(topic, error = %e, "data event not published");
                        }
                    }
                }
                Ok(r)
            }
            (None, Ok(())) => Err(DataError::BadRequest("write job did not run".into())),
        };
        let _ = self.reply.send(out);
    }
}

type Exclusive = Box<dyn FnOnce(&mut Connection) + Send>;

enum WriterMsg {
    Group(Box<dyn GroupJob>),
    /// Runs alone, outside any transaction (ATTACH, DDL with its own transactions, checkpoints).
    Exclusive(Exclusive),
    /// Checkpoint and close.
    Close(oneshot::Sender<()>),
}

/// Read-only connections of one reader thread, opened lazily per file.
#[derive(Debug)]
pub struct ReadConns {
    handle: String,
    conns: HashMap<PathBuf, Connection>,
    cache_kib: u32,
}

impl ReadConns {
    /// A read-only connection to `path`, opened on first use and kept.
    pub fn get(&mut self, path: &Path) -> Result<&Connection, DataError> {
        if !self.conns.contains_key(path) {
            let conn = open_read_only(&self.handle, path, self.cache_kib)?;
            self.conns.insert(path.to_owned(), conn);
        }
        self.conns
            .get(path)
            .ok_or_else(|| DataError::Closed(self.handle.clone()))
    }

    /// Forget a connection (e.g. the file is being replaced).
    pub fn drop_conn(&mut self, path: &Path) {
        self.conns.remove(path);
    }
}

fn open_read_only(handle: &str, path: &Path, cache_kib: u32) -> Result<Connection, DataError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| DataError::sqlite(handle, format!("open read-only {}", path.display()), &e))?;
    conn.busy_timeout(std::time::Duration::from_millis(5000))
        .map_err(|e| DataError::sqlite(handle, "busy_timeout", &e))?;
    // Bounded memory: the configured page cache and no mmap (mapped pages count in the host's
    // RSS and would grow with the database).
    conn.execute_batch(&format!(
        "PRAGMA cache_size=-{}; PRAGMA mmap_size=0;",
        cache_kib.max(64)
    ))
    .map_err(|e| DataError::sqlite(handle, "reader pragmas", &e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

type ReadJob = Box<dyn FnOnce(&mut ReadConns) + Send>;

enum ReaderMsg {
    Job(ReadJob),
    Close,
}

/// Counters for `data/stats` and `health/status`.
#[derive(Debug, Default)]
pub struct DbStats {
    /// Write jobs committed.
    pub writes: AtomicU64,
    /// Write jobs that failed (their savepoint rolled back).
    pub write_failures: AtomicU64,
    /// Read jobs run.
    pub reads: AtomicU64,
    /// Requests refused because a queue was full.
    pub overloaded: AtomicU64,
    /// Groups (transactions) the writer ran.
    pub groups: AtomicU64,
    /// Microseconds the writer spent running groups, from `BEGIN` to the last reply.
    pub writer_busy_us: AtomicU64,
    /// Of that, microseconds spent in `COMMIT`.
    pub commit_us: AtomicU64,
    /// Checkpoints run (by the checkpointer thread, or by the writer when idle).
    pub checkpoints: AtomicU64,
    /// Microseconds those checkpoints took.
    pub checkpoint_us: AtomicU64,
    /// Write jobs refused because the file is full (its quota, or the disk): `storage_full`.
    pub storage_full: AtomicU64,
    /// Group transactions SQLite rolled back whole under a failing job (`SQLITE_FULL` without a
    /// statement journal), whose other jobs were run again in a new transaction.
    pub group_reruns: AtomicU64,
}

fn add_us(c: &AtomicU64, since: Instant) {
    c.fetch_add(
        u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// A `PASSIVE` checkpoint, counted and timed in `stats`; the WAL's size in pages afterwards
/// (`None` when it failed, which is logged).
fn passive_checkpoint(conn: &Connection, handle: &str, stats: &DbStats) -> Option<i64> {
    let t = Instant::now();
    let log = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
        .map_err(|e| tracing::warn!(handle, error = %e, "checkpoint failed"))
        .ok();
    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    add_us(&stats.checkpoint_us, t);
    log
}

#[derive(Debug)]
struct DbInner {
    name: String,
    path: PathBuf,
    writer: Sender<WriterMsg>,
    readers: Option<Sender<ReaderMsg>>,
    reader_threads: usize,
    closed: AtomicBool,
    stats: Arc<DbStats>,
    bus: Option<EventBus>,
    /// The quota asked for, bytes (0 = unlimited).
    max_bytes: AtomicU64,
    /// The page limit in force (0 = unlimited).
    max_pages: AtomicU64,
    /// Whether the latest write was refused for lack of space (cleared by the next write that
    /// commits, and by a quota change).
    full: watch::Sender<bool>,
}

impl std::fmt::Debug for WriterMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriterMsg::Group(_) => "Group",
            WriterMsg::Exclusive(_) => "Exclusive",
            WriterMsg::Close(_) => "Close",
        })
    }
}

impl std::fmt::Debug for ReaderMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReaderMsg::Job(_) => "Job",
            ReaderMsg::Close => "Close",
        })
    }
}

/// A handle to one database file's threads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

/// Open a read-write connection with the standard pragmas.
pub fn open_rw(handle: &str, path: &Path) -> Result<Connection, DataError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, &e))?;
    }
    let conn = Connection::open(path)
        .map_err(|e| DataError::sqlite(handle, format!("open {}", path.display()), &e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| DataError::sqlite(handle, "journal_mode=WAL", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DataError::Sqlite {
            handle: handle.to_owned(),
            op: "journal_mode=WAL".into(),
            message: format!("journal mode is {mode}"),
        });
    }
    // The page cache size is set per database from `DbOptions::cache_kib` right after open:
    // large enough that indexes do not thrash, bounded so the host's memory does not follow the
    // database's size.
    conn.execute_batch(&format!(
        "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;
         PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES};"
    ))
    .map_err(|e| DataError::sqlite(handle, "pragmas", &e))?;
    conn.busy_timeout(std::time::Duration::from_millis(5000))
        .map_err(|e| DataError::sqlite(handle, "busy_timeout", &e))?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl Db {
    /// Start the threads for `path`. `init` runs first on the writer thread (pragmas are set,
    /// no transaction open): migrations and schema application go there. Awaiting this never
    /// blocks an async worker.
    pub async fn open<T, I>(
        name: &str,
        path: &Path,
        opts: &DbOptions,
        init: I,
    ) -> Result<(Db, T), DataError>
    where
        T: Send + 'static,
        I: FnOnce(&mut Connection) -> Result<T, DataError> + Send + 'static,
    {
        let (wtx, wrx) = bounded::<WriterMsg>(opts.writer_queue.max(1));
        let (ready_tx, ready_rx) = oneshot::channel();
        let handle = name.to_owned();
        let p = path.to_owned();
        let max_group = opts.max_group.max(1);
        let cache_kib = opts.cache_kib.max(64);
        let stats = Arc::new(DbStats::default());
        let wstats = Arc::clone(&stats);
        let background = opts.background_checkpoint;
        let max_bytes = opts.max_bytes;
        std::thread::Builder::new()
            .name(format!("db-w-{}", short(name)))
            .spawn(move || {
                let mut conn = match open_rw(&handle, &p).and_then(|c| {
                    c.execute_batch(&format!("PRAGMA cache_size=-{cache_kib}"))
                        .map_err(|e| DataError::sqlite(&handle, "cache_size", &e))?;
                    Ok(c)
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // The quota applies to writes, not to schema application: a host whose
                // database is full still starts (and can then free space).
                let quota = |conn: &Connection| match max_bytes {
                    0 => Ok(0),
                    b => apply_max_bytes(conn, &handle, "main", b),
                };
                match init(&mut conn).and_then(|t| Ok((t, quota(&conn)?))) {
                    Ok((t, pages)) => {
                        if ready_tx.send(Ok((t, pages))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                let ckpt = if background {
                    match Checkpointer::start(&handle, &p, Arc::clone(&wstats)) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            // Not fatal: the writer checkpoints when idle instead.
                            tracing::warn!(handle, error = %e, "checkpointer did not start");
                            None
                        }
                    }
                } else {
                    None
                };
                writer_loop(&handle, conn, &wrx, max_group, &wstats, ckpt);
            })
            .map_err(|e| DataError::io(path, &e))?;
        let (t, max_pages) = ready_rx
            .await
            .map_err(|_| DataError::Closed(name.to_owned()))??;
        let readers = if opts.readers > 0 {
            let (rtx, rrx) = bounded::<ReaderMsg>(opts.reader_queue.max(1));
            for i in 0..opts.readers {
                let rrx = rrx.clone();
                let handle = name.to_owned();
                let cache_kib = opts.reader_cache_kib;
                std::thread::Builder::new()
                    .name(format!("db-r{i}-{}", short(name)))
                    .spawn(move || reader_loop(handle, &rrx, cache_kib))
                    .map_err(|e| DataError::io(path, &e))?;
            }
            Some(rtx)
        } else {
            None
        };
        Ok((
            Db {
                inner: Arc::new(DbInner {
                    name: name.to_owned(),
                    path: path.to_owned(),
                    writer: wtx,
                    readers,
                    reader_threads: opts.readers,
                    closed: AtomicBool::new(false),
                    stats,
                    bus: opts.bus.clone(),
                    max_bytes: AtomicU64::new(max_bytes),
                    max_pages: AtomicU64::new(if max_bytes == 0 { 0 } else { max_pages }),
                    full: watch::Sender::new(false),
                }),
            },
            t,
        ))
    }

    /// The handle name (`primary`, `archive`, `persona:<id>`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether anyone is subscribed to the bus events are published on.
    pub fn has_subscribers(&self) -> bool {
        self.inner
            .bus
            .as_ref()
            .is_some_and(|b| b.subscription_count() > 0)
    }

    /// Counters.
    pub fn stats(&self) -> &DbStats {
        &self.inner.stats
    }

    /// Run `f` on the writer inside the group transaction. The reply arrives after COMMIT, so
    /// `Ok` means durable (to the WAL) and visible to new reads.
    ///
    /// `f` may run more than once: when another job makes SQLite roll the group's transaction
    /// back whole, the jobs that had succeeded run again in a new transaction (module docs).
    /// Each run starts from the same database state and only the committed run counts, so `f`
    /// must not consume what it captured, and must stop at its first SQLite error.
    pub async fn write<R, F>(&self, f: F) -> Result<R, DataError>
    where
        R: Send + 'static,
        F: FnMut(&Connection) -> Result<R, DataError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            f,
            result: None,
            reply: tx,
        };
        self.send_writer(WriterMsg::Group(Box::new(job)))?;
        let r = rx
            .await
            .map_err(|_| DataError::Closed(self.inner.name.clone()))?;
        self.count_write(r.as_ref().err());
        r
    }

    /// Like [`Db::write`], and the events `f` returns are published after COMMIT (and before
    /// the reply), in commit order; a rolled-back job publishes nothing.
    pub async fn write_events<R, F>(&self, f: F) -> Result<R, DataError>
    where
        R: Send + 'static,
        F: FnMut(&Connection) -> Result<(R, PendingEvents), DataError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = EvJob {
            f,
            result: None,
            reply: tx,
            bus: self.inner.bus.clone(),
        };
        self.send_writer(WriterMsg::Group(Box::new(job)))?;
        let r = rx
            .await
            .map_err(|_| DataError::Closed(self.inner.name.clone()))?;
        self.count_write(r.as_ref().err());
        r
    }

    /// Count a write's outcome and keep the `full` state: set by a write refused for lack of
    /// space, cleared by one that committed.
    fn count_write(&self, err: Option<&DataError>) {
        let stats = &self.inner.stats;
        match err {
            None => {
                stats.writes.fetch_add(1, Ordering::Relaxed);
                self.inner
                    .full
                    .send_if_modified(|f| std::mem::replace(f, false));
            }
            Some(e) => {
                stats.write_failures.fetch_add(1, Ordering::Relaxed);
                if e.is_storage_full() {
                    stats.storage_full.fetch_add(1, Ordering::Relaxed);
                    self.inner
                        .full
                        .send_if_modified(|f| !std::mem::replace(f, true));
                }
            }
        }
    }

    /// Whether the latest write was refused for lack of space (and no write committed since,
    /// nor was the quota changed).
    pub fn is_full(&self) -> bool {
        *self.inner.full.borrow()
    }

    /// Follows [`Db::is_full`]: changes when it flips.
    pub fn full_watch(&self) -> watch::Receiver<bool> {
        self.inner.full.subscribe()
    }

    /// The quota asked for, bytes (0 = unlimited).
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes.load(Ordering::Relaxed)
    }

    /// Change the quota at run time (0 = unlimited); applies to the next write. Runs on the
    /// writer between groups. Returns the space used and the limit now in force.
    pub async fn set_max_bytes(&self, max_bytes: u64) -> Result<Usage, DataError> {
        let handle = self.inner.name.clone();
        let pages = self
            .exclusive(move |conn| apply_max_bytes(conn, &handle, "main", max_bytes))
            .await?;
        self.inner.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.inner
            .max_pages
            .store(if max_bytes == 0 { 0 } else { pages }, Ordering::Relaxed);
        // Re-evaluated by the next write.
        self.inner
            .full
            .send_if_modified(|f| std::mem::replace(f, false));
        self.usage().await
    }

    /// The quota and the space used (read on a reader: committed state; not counted in
    /// `reads`, so `data/stats` does not count itself).
    pub async fn usage(&self) -> Result<Usage, DataError> {
        let path = self.inner.path.clone();
        let handle = self.inner.name.clone();
        let (page_size, pages, free_pages) = self
            .read_uncounted(move |rc| read_usage(rc.get(&path)?, &handle))
            .await?;
        let max_pages = self.inner.max_pages.load(Ordering::Relaxed);
        Ok(Usage {
            max_bytes: self.max_bytes(),
            page_size,
            pages,
            free_pages,
            max_pages: (max_pages > 0).then_some(max_pages),
        })
    }

    /// Run `f` alone on the writer thread, outside any transaction: it manages its own
    /// transactions (used for ATTACH-based archiving, index builds, checkpoints).
    pub async fn exclusive<R, F>(&self, f: F) -> Result<R, DataError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, DataError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Exclusive = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.send_writer(WriterMsg::Exclusive(job))?;
        rx.await
            .map_err(|_| DataError::Closed(self.inner.name.clone()))?
    }

    /// Run `f` on a reader thread (or the writer when there are no readers).
    pub async fn read<R, F>(&self, f: F) -> Result<R, DataError>
    where
        R: Send + 'static,
        F: FnOnce(&mut ReadConns) -> Result<R, DataError> + Send + 'static,
    {
        self.inner.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.read_uncounted(f).await
    }

    /// [`Db::read`] for the engine's own bookkeeping (quota usage), not counted in `reads`.
    async fn read_uncounted<R, F>(&self, f: F) -> Result<R, DataError>
    where
        R: Send + 'static,
        F: FnOnce(&mut ReadConns) -> Result<R, DataError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        match &self.inner.readers {
            Some(readers) => {
                let job: ReadJob = Box::new(move |conns| {
                    let _ = tx.send(f(conns));
                });
                readers
                    .try_send(ReaderMsg::Job(job))
                    .map_err(|e| self.send_error(e, "reader"))?;
            }
            None => {
                let handle = self.inner.name.clone();
                let job: Exclusive = Box::new(move |_conn| {
                    let mut conns = ReadConns {
                        handle,
                        conns: HashMap::new(),
                        cache_kib: 256,
                    };
                    let _ = tx.send(f(&mut conns));
                });
                self.send_writer(WriterMsg::Exclusive(job))?;
            }
        }
        rx.await
            .map_err(|_| DataError::Closed(self.inner.name.clone()))?
    }

    fn send_writer(&self, msg: WriterMsg) -> Result<(), DataError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(DataError::Closed(self.inner.name.clone()));
        }
        self.inner
            .writer
            .try_send(msg)
            .map_err(|e| self.send_error(e, "writer"))
    }

    fn send_error<T>(&self, e: TrySendError<T>, queue: &'static str) -> DataError {
        match e {
            TrySendError::Full(_) => {
                self.inner.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                DataError::Overloaded {
                    handle: self.inner.name.clone(),
                    queue,
                }
            }
            TrySendError::Disconnected(_) => DataError::Closed(self.inner.name.clone()),
        }
    }

    /// Stop the readers, checkpoint (`wal_checkpoint(TRUNCATE)`) and close the writer. Queued
    /// writes ahead of the close still run. Idempotent.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(readers) = self.inner.readers.clone() {
            let n = self.inner.reader_threads;
            // A blocking send (the queue may be full); off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                for _ in 0..n {
                    let _ = readers.send(ReaderMsg::Close);
                }
            })
            .await;
        }
        let (tx, rx) = oneshot::channel();
        let writer = self.inner.writer.clone();
        let _ = tokio::task::spawn_blocking(move || writer.send(WriterMsg::Close(tx))).await;
        let _ = rx.await;
    }
}

fn short(name: &str) -> String {
    name.chars().take(10).collect()
}

/// The thread that checkpoints a database off the writer's path (see the module docs).
struct Checkpointer {
    /// "Commits happened": capacity 1, so signals coalesce and the writer never waits.
    signal: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(handle: &str, path: &Path, stats: Arc<DbStats>) -> Result<Checkpointer, DataError> {
        let conn = open_rw(handle, path)?;
        // It reads WAL frames and writes the main file; it needs no page cache to speak of.
        conn.execute_batch("PRAGMA cache_size=-64")
            .map_err(|e| DataError::sqlite(handle, "cache_size", &e))?;
        // Never wait for a lock: a RESTART that would have to wait for the writer (and, while
        // pending, would hold off the next write) gives up at once and is tried again later.
        conn.busy_timeout(Duration::ZERO)
            .map_err(|e| DataError::sqlite(handle, "busy_timeout", &e))?;
        let (signal, rx) = bounded::<()>(1);
        let h = handle.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("db-c-{}", short(handle)))
            .spawn(move || checkpoint_loop(&h, conn, &rx, &stats))
            .map_err(|e| DataError::io(path, &e))?;
        Ok(Checkpointer { signal, thread })
    }

    /// Ask for a checkpoint soon (never blocks).
    fn poke(&self) {
        let _ = self.signal.try_send(());
    }

    /// Stop the thread once its current checkpoint (if any) is done.
    fn stop(self) {
        drop(self.signal);
        let _ = self.thread.join();
    }
}

fn checkpoint_loop(handle: &str, conn: Connection, rx: &Receiver<()>, stats: &DbStats) {
    let mut last = Instant::now();
    'signals: while rx.recv().is_ok() {
        // At most one checkpoint per IDLE_CHECKPOINT: commits in between are folded into it.
        // Waiting on the channel (not sleeping) lets a closing writer stop this at once; its
        // own TRUNCATE checkpoint at close does the last one.
        loop {
            let rest = IDLE_CHECKPOINT.saturating_sub(last.elapsed());
            if rest.is_zero() {
                break;
            }
            if let Err(RecvTimeoutError::Disconnected) = rx.recv_timeout(rest) {
                break 'signals;
            }
        }
        // Under steady writes a PASSIVE checkpoint never catches up with the log's end, so the
        // log is never restarted and grows to the writer's autocheckpoint, which then runs in
        // somebody's COMMIT. Past RESTART_PAGES, try a RESTART here: between two writes it
        // copies the few frames PASSIVE left and makes the next writer start the log from the
        // beginning; during a write it answers busy at once (no busy timeout on this
        // connection) and the next round tries again.
        if passive_checkpoint(&conn, handle, stats)
            .is_some_and(|log| log >= i64::from(RESTART_PAGES))
            && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
        {
            tracing::warn!(handle, error = %e, "background checkpoint restart failed");
        }
        last = Instant::now();
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(handle, error = %e, "checkpointer close failed");
    }
}

fn writer_loop(
    handle: &str,
    mut conn: Connection,
    rx: &Receiver<WriterMsg>,
    max_group: usize,
    stats: &DbStats,
    mut ckpt: Option<Checkpointer>,
) {
    let mut next: Option<WriterMsg> = None;
    // Whether groups committed since the last checkpoint, and when that was (used only when
    // the writer checkpoints itself).
    let mut dirty = false;
    let mut last_checkpoint = Instant::now();
    loop {
        let msg = match next.take() {
            Some(m) => m,
            None if dirty && ckpt.is_none() => {
                let wait = IDLE_CHECKPOINT.saturating_sub(last_checkpoint.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        // Idle: move committed pages into the main file now, off every
                        // write's path.
                        passive_checkpoint(&conn, handle, stats);
                        dirty = false;
                        last_checkpoint = Instant::now();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        match msg {
            WriterMsg::Exclusive(job) => job(&mut conn),
            WriterMsg::Close(reply) => {
                if let Some(c) = ckpt.take() {
                    c.stop();
                }
                close_conn(handle, conn);
                let _ = reply.send(());
                return;
            }
            WriterMsg::Group(job) => {
                let mut batch = vec![job];
                while batch.len() < max_group {
                    match rx.try_recv() {
                        Ok(WriterMsg::Group(j)) => batch.push(j),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let t = Instant::now();
                run_group(handle, &conn, batch, stats);
                stats.groups.fetch_add(1, Ordering::Relaxed);
                add_us(&stats.writer_busy_us, t);
                match &ckpt {
                    Some(c) => c.poke(),
                    None => dirty = true,
                }
            }
        }
    }
    if let Some(c) = ckpt.take() {
        c.stop();
    }
    close_conn(handle, conn);
}

fn close_conn(handle: &str, conn: Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(handle, error = %e, "checkpoint on close failed");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(handle, error = %e, "close failed");
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_group(handle: &str, conn: &Connection, batch: Vec<Box<dyn GroupJob>>, stats: &DbStats) {
    // Jobs that failed: final whatever the commit does (each answers its own error).
    let mut failed: Vec<Box<dyn GroupJob>> = Vec::new();
    let mut pending = batch;
    // Each pass either commits or moves at least the job that lost it into `failed`.
    loop {
        if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
            let err = DataError::sqlite(handle, "begin", &e);
            for job in pending {
                job.finish(Err(err.clone()));
            }
            for job in failed {
                job.finish(Ok(()));
            }
            return;
        }
        let single = pending.len() == 1;
        let mut ok: Vec<Box<dyn GroupJob>> = Vec::with_capacity(pending.len());
        let mut jobs = pending.into_iter();
        let mut lost = false;
        for mut job in jobs.by_ref() {
            if !single && let Err(e) = exec(conn, "SAVEPOINT job") {
                tracing::warn!(handle, error = %e, "savepoint failed");
                job.fail(DataError::sqlite(handle, "savepoint", &e));
                failed.push(job);
                continue;
            }
            let good = job.run(conn);
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back under this job (SQLITE_FULL, IOERR
                // or NOMEM in a statement without a statement journal): the job failed with
                // that error, and the work of the jobs before it is gone with the transaction.
                if good {
                    job.fail(DataError::Sqlite {
                        handle: handle.to_owned(),
                        op: "write".into(),
                        message: "the transaction was rolled back under the write".into(),
                    });
                }
                failed.push(job);
                lost = true;
                break;
            }
            if single {
                if good {
                    ok.push(job);
                } else {
                    failed.push(job);
                }
                continue;
            }
            if good {
                let _ = exec(conn, "RELEASE job");
                ok.push(job);
            } else {
                let _ = exec(conn, "ROLLBACK TO job");
                let _ = exec(conn, "RELEASE job");
                failed.push(job);
            }
        }
        if lost {
            // Nothing of this pass was acknowledged: run the jobs that had succeeded again, in
            // their order, followed by those not run yet.
            stats.group_reruns.fetch_add(1, Ordering::Relaxed);
            pending = ok.into_iter().chain(jobs).collect();
            if pending.is_empty() {
                break;
            }
            continue;
        }
        let commit = if ok.is_empty() {
            let _ = exec(conn, "ROLLBACK");
            Ok(())
        } else {
            let t = Instant::now();
            let r = exec(conn, "COMMIT").map_err(|e| {
                if !conn.is_autocommit() {
                    let _ = exec(conn, "ROLLBACK");
                }
                DataError::sqlite(handle, "commit", &e)
            });
            add_us(&stats.commit_us, t);
            r
        };
        for job in ok {
            job.finish(commit.clone());
        }
        break;
    }
    for job in failed {
        job.finish(Ok(()));
    }
}

fn reader_loop(handle: String, rx: &Receiver<ReaderMsg>, cache_kib: u32) {
    let mut conns = ReadConns {
        handle,
        conns: HashMap::new(),
        cache_kib,
    };
    while let Ok(msg) = rx.recv() {
        match msg {
            ReaderMsg::Job(job) => job(&mut conns),
            ReaderMsg::Close => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_tmp(readers: usize) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.sqlite");
        let opts = DbOptions {
            readers,
            ..DbOptions::default()
        };
        let (db, ()) = Db::open("t", &path, &opts, |c| {
            c.execute_batch("CREATE TABLE IF NOT EXISTS t(x INTEGER UNIQUE)")
                .map_err(|e| DataError::sqlite("t", "init", &e))
        })
        .await
        .expect("open");
        (dir, db)
    }

    #[tokio::test]
    async fn group_commit_isolates_a_failing_job() {
        let (_dir, db) = open_tmp(1).await;
        let mut tasks = Vec::new();
        for i in 0..200_i64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |c| {
                    // Every 10th job inserts a duplicate and must fail alone.
                    let x = if i % 10 == 9 { i - 1 } else { i };
                    c.prepare_cached("INSERT INTO t(x) VALUES (?1)")
                        .and_then(|mut s| s.execute([x]))
                        .map_err(|e| DataError::sqlite("t", "insert", &e))
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.expect("join").is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 180);
        let unknown_path_refused = db
            .read(|c| Ok(c.get(Path::new("/nonexistent")).is_err()))
            .await
            .expect("read");
        assert!(
            unknown_path_refused,
            "opening a missing file read-only must fail"
        );
        let path = db.path().to_owned();
        let count: i64 = db
            .read(move |c| {
                c.get(&path)?
                    .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .map_err(|e| DataError::sqlite("t", "count", &e))
            })
            .await
            .expect("count");
        assert_eq!(count, 180);
        db.close().await;
        assert!(matches!(
            db.write(|_| Ok(())).await,
            Err(DataError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn full_writer_queue_answers_overloaded() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let dir = tempfile::tempdir().expect("tmp");
        let opts = DbOptions {
            readers: 0,
            writer_queue: 2,
            ..DbOptions::default()
        };
        let (db, ()) = Db::open("t", &dir.path().join("o.sqlite"), &opts, |_| Ok(()))
            .await
            .expect("open");
        let (parked_tx, parked_rx) = oneshot::channel::<()>();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        // Park the writer on a job that says so, then waits for the gate.
        let blocker = {
            let db = db.clone();
            tokio::spawn(async move {
                db.exclusive(move |_| {
                    let _ = parked_tx.send(());
                    let _ = gate_rx.recv();
                    Ok(())
                })
                .await
            })
        };
        parked_rx.await.expect("the writer runs the blocking job");
        // A write is queued (or refused) on its first poll: poll each once. With the writer
        // parked, the queue of 2 takes two and the other three are refused at once.
        let mut cx = Context::from_waker(Waker::noop());
        let (mut queued, mut overloaded) = (Vec::new(), 0);
        for _ in 0..5 {
            let mut w = Box::pin(db.write(|_| Ok(())));
            match w.as_mut().poll(&mut cx) {
                Poll::Pending => queued.push(w),
                Poll::Ready(Err(DataError::Overloaded { .. })) => overloaded += 1,
                Poll::Ready(other) => panic!("neither queued nor overloaded: {other:?}"),
            }
        }
        assert_eq!((queued.len(), overloaded), (2, 3));
        assert_eq!(db.stats().overloaded.load(Ordering::Relaxed), 3);
        let _ = gate_tx.send(());
        blocker.await.expect("join").expect("blocker");
        for w in queued {
            w.await
                .expect("a queued write runs once the writer is free");
        }
    }

    /// One row of `x` and `pad` bytes (queued on the future's first poll).
    fn insert(
        db: &Db,
        x: i64,
        pad: i64,
    ) -> impl std::future::Future<Output = Result<(), DataError>> {
        let db = db.clone();
        async move {
            db.write(move |c| {
                c.prepare_cached("INSERT INTO t(x, pad) VALUES (?1, zeroblob(?2))")
                    .and_then(|mut s| s.execute([x, pad]))
                    .map(|_| ())
                    .map_err(|e| DataError::sqlite("t", "insert", &e))
            })
            .await
        }
    }

    async fn count_rows(db: &Db) -> i64 {
        let path = db.path().to_owned();
        db.read(move |c| {
            c.get(&path)?
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .map_err(|e| DataError::sqlite("t", "count", &e))
        })
        .await
        .expect("count")
    }

    async fn open_pad(dir: &Path) -> Db {
        let opts = DbOptions {
            readers: 1,
            ..DbOptions::default()
        };
        let (db, ()) = Db::open("t", &dir.join("f.sqlite"), &opts, |c| {
            c.execute_batch("CREATE TABLE t(x INTEGER UNIQUE, pad BLOB)")
                .map_err(|e| DataError::sqlite("t", "init", &e))
        })
        .await
        .expect("open");
        db
    }

    #[tokio::test]
    async fn group_commit_under_a_full_database_fails_only_the_write_that_does_not_fit() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let dir = tempfile::tempdir().expect("tmp");
        let db = open_pad(dir.path()).await;
        // 200 acknowledged rows, then half of them deleted: the freed pages are room for new
        // small rows, and the quota freezes the file at its size.
        for x in 0..200 {
            insert(&db, x, 400).await.expect("acknowledged write");
        }
        db.write(|c| {
            c.execute("DELETE FROM t WHERE x % 2 = 1", [])
                .map(|_| ())
                .map_err(|e| DataError::sqlite("t", "delete", &e))
        })
        .await
        .expect("delete");
        let before = db.set_max_bytes(1).await.expect("quota");
        assert!(before.free_pages > 0, "{before:?}");
        assert_eq!(before.max_pages, Some(before.pages), "frozen at its size");

        // One group: small writes around one that cannot fit. Park the writer so that all of
        // them are queued before it runs any, then let it take them as one group.
        let (parked_tx, parked_rx) = oneshot::channel::<()>();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let db = db.clone();
            tokio::spawn(async move {
                db.exclusive(move |_| {
                    let _ = parked_tx.send(());
                    let _ = gate_rx.recv();
                    Ok(())
                })
                .await
            })
        };
        parked_rx.await.expect("parked");
        let mut cx = Context::from_waker(Waker::noop());
        let mut writes = Vec::new();
        for (x, pad) in [
            (1001, 100),
            (1002, 100),
            (1003, 1_000_000),
            (1004, 100),
            (1005, 100),
        ] {
            let mut w = Box::pin(insert(&db, x, pad));
            assert!(w.as_mut().poll(&mut cx).is_pending(), "queued");
            writes.push((x, w));
        }
        let _ = gate_tx.send(());
        blocker.await.expect("join").expect("blocker");
        for (x, w) in writes {
            let r = w.await;
            if x == 1003 {
                assert!(matches!(r, Err(DataError::StorageFull { .. })), "{r:?}");
            } else {
                r.unwrap_or_else(|e| panic!("write {x} fits and must commit: {e}"));
            }
        }
        assert!(
            db.stats().group_reruns.load(Ordering::Relaxed) >= 1,
            "SQLite rolled the group back whole and the writer ran the others again"
        );
        assert_eq!(db.stats().storage_full.load(Ordering::Relaxed), 1);
        // Every acknowledged row is there: the 100 kept and the four small ones.
        assert_eq!(count_rows(&db).await, 104);
        // The small write committed last, so the database no longer reports itself full.
        assert!(!db.is_full());
        db.close().await;
    }

    #[tokio::test]
    async fn a_write_that_does_not_fit_answers_storage_full_and_a_raised_quota_lets_it_in() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = open_pad(dir.path()).await;
        for x in 0..20 {
            insert(&db, x, 400).await.expect("acknowledged write");
        }
        let mut full = db.full_watch();
        db.set_max_bytes(1).await.expect("quota");
        let e = insert(&db, 100, 200_000).await.expect_err("does not fit");
        assert!(e.is_storage_full(), "{e:?}");
        assert!(e.to_string().contains("'t' is full"), "{e}");
        assert!(db.is_full() && *full.borrow_and_update());
        // Reads still work, and every acknowledged row is there.
        assert_eq!(count_rows(&db).await, 20);
        let u = db.set_max_bytes(64 * 1024 * 1024).await.expect("raise");
        assert_eq!(u.max_bytes, 64 * 1024 * 1024);
        assert!(!db.is_full(), "a changed quota clears the state");
        insert(&db, 100, 200_000)
            .await
            .expect("fits under the raised quota");
        db.set_max_bytes(0).await.expect("unlimited");
        assert_eq!(db.usage().await.expect("usage").max_pages, None);
        insert(&db, 101, 2_000_000).await.expect("no quota");
        assert_eq!(count_rows(&db).await, 22);
        db.close().await;
    }

    /// Pages of the WAL not yet copied into the main file, read with a fresh connection.
    fn wal_backlog(path: &Path) -> (i64, i64) {
        let c = Connection::open(path).expect("open");
        // PASSIVE with nothing to do reports (busy, log frames, checkpointed frames).
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .expect("checkpoint")
    }

    async fn checkpoints_happen(background: bool) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.sqlite");
        let opts = DbOptions {
            readers: 0,
            background_checkpoint: background,
            ..DbOptions::default()
        };
        let (db, ()) = Db::open("c", &path, &opts, |c| {
            c.execute_batch("CREATE TABLE t(x INTEGER, pad TEXT)")
                .map_err(|e| DataError::sqlite("c", "init", &e))
        })
        .await
        .expect("open");
        for i in 0..50_i64 {
            db.write(move |c| {
                c.execute("INSERT INTO t VALUES (?1, printf('%.500c', 'x'))", [i])
                    .map(|_| ())
                    .map_err(|e| DataError::sqlite("c", "insert", &e))
            })
            .await
            .expect("write");
        }
        // The checkpoint comes after the writes without any further request.
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.stats().checkpoints.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no checkpoint within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let writes_before = db.stats().writes.load(Ordering::Relaxed);
        db.close().await;
        assert_eq!(writes_before, 50);
        // Closed: the WAL was checkpointed and truncated, every row is in the main file.
        let (log, done) = wal_backlog(&path);
        assert_eq!(log, done, "frames left behind");
        let n: i64 = Connection::open(&path)
            .expect("open")
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 50);
    }

    #[tokio::test]
    async fn background_checkpointer_runs_after_commits_and_stops_at_close() {
        checkpoints_happen(true).await;
    }

    #[tokio::test]
    async fn writer_checkpoints_when_idle_without_a_checkpointer() {
        checkpoints_happen(false).await;
    }
}
