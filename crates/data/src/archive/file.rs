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
//! **A full archive file.** Each file the archive writes may be capped
//! (`[data] max_archive_file_mb`, applied as `PRAGMA arc.max_page_count` at every attach; a full
//! disk fails the same way). A copy that does not fit fails with `storage_full` and its
//! transaction rolls back whole, intent list included: no row has moved, and the file's
//! `_archive_pending` is empty again. If the file already holds rows, archiving starts the next
//! file (the pending list is empty, so rotating is safe) and copies there; a copy that does not
//! fit an empty file either (a full disk, or a cap below one batch) fails the batch cleanly, the
//! rows stay hot, and the next run tries again.
//!
//! Archive files use `journal_mode=DELETE` so read-only connections can open them without
//! creating WAL side files. Archive tables carry the hot table's columns and its (non-unique)
//! indexes, and no foreign keys (the rows they point at stay in `primary`).

use crate::ddl::{self, q};
use crate::error::DataError;
use crate::schema::{ArchiveRule, CollectionSchema};
use parking_lot::RwLock;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const ARC: &str = "arc";

fn sq(op: &'static str) -> impl Fn(rusqlite::Error) -> DataError {
    move |e| DataError::sqlite("archive", op, &e)
}

/// Attach `file` as `arc`, create its bookkeeping tables and apply the cap `max_bytes` (0 =
/// none) to what is written after that.
fn attach_capped(conn: &Connection, file: &Path, max_bytes: u64) -> Result<(), DataError> {
    attach(conn, file)?;
    if let Err(e) = crate::engine::apply_max_bytes(conn, "archive", ARC, max_bytes) {
        detach(conn);
        return Err(e);
    }
    Ok(())
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
            if !crate::schema::is_identifier(c)
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
    // One transaction: a file too full for the indexes keeps no table without them.
    in_txn(conn, "prepare archive table", || {
        create_or_extend(conn, schema, &hot, &have)
    })?;
    Ok(hot.into_iter().map(|(n, _)| n).collect())
}

fn create_or_extend(
    conn: &Connection,
    schema: &CollectionSchema,
    hot: &[(String, String)],
    have: &[(String, String)],
) -> Result<(), DataError> {
    if have.is_empty() {
        conn.execute_batch(&ddl::create_table_sql(ARC, &schema.collection, hot))
            .map_err(sq("create archive table"))?;
        for ix in &schema.indexes {
            conn.execute_batch(&ddl::create_index_sql(ARC, &schema.collection, ix, true))
                .map_err(sq("create archive index"))?;
        }
    } else {
        for (name, ty) in hot {
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
    Ok(())
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
    let cap = files.max_file_bytes();
    let mut file = files.current().unwrap_or_else(|| files.path_for(1));
    attach_capped(conn, &file, cap)?;
    let res = (|| -> Result<(), DataError> {
        out.recovered = replay_pending(conn)?;
        let rows = file_rows(conn)?;
        if rows >= max_file_rows {
            detach(conn);
            file = files.path_for(files.current_number() + 1);
            out.rotated = true;
            attach_capped(conn, &file, cap)?;
        }
        files.push(file.clone());
        let t = q(&schema.collection);
        // 1. copy + intent list, durable in the archive file.
        let copy = |conn: &Connection| -> Result<(), DataError> {
            let room = max_file_rows.saturating_sub(file_rows(conn)?).max(1);
            let n_i = i64::try_from(limit.min(room)).unwrap_or(i64::MAX);
            let cols = ensure_archive_table(conn, schema)?;
            let cols_sql = cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
            copy_rows(conn, schema, rule, &t, &cols_sql, n_i)
        };
        match copy(conn) {
            // The file is full (its cap): nothing moved and its intent list is empty again, so
            // the next file can take the batch. An empty file that cannot take it fails it.
            Err(e) if e.is_storage_full() && !out.rotated && file_rows(conn)? > 0 => {
                tracing::warn!(file = %file.display(), error = %e, "archive file full: rotating");
                detach(conn);
                file = files.path_for(files.current_number() + 1);
                out.rotated = true;
                attach_capped(conn, &file, cap)?;
                files.push(file.clone());
                copy(conn)?;
            }
            r => r?,
        }
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

/// Step 1 of a batch: record up to `n` ids of the oldest rows in the intent list and copy those
/// rows, in one transaction of the archive file.
fn copy_rows(
    conn: &Connection,
    schema: &CollectionSchema,
    rule: &ArchiveRule,
    t: &str,
    cols_sql: &str,
    n_i: i64,
) -> Result<(), DataError> {
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
    })
}

/// The rotating archive files (`archive-NNNNNN.sqlite`), oldest first.
#[derive(Debug)]
pub struct ArchiveFiles {
    dir: PathBuf,
    files: RwLock<Vec<PathBuf>>,
    /// Cap of each file, bytes (0 = none): `[data] max_archive_file_mb`.
    max_file_bytes: AtomicU64,
}

impl ArchiveFiles {
    /// The files of `dir`, as scanned (oldest first).
    pub fn new(dir: PathBuf, files: Vec<PathBuf>) -> Self {
        ArchiveFiles {
            dir,
            files: RwLock::new(files),
            max_file_bytes: AtomicU64::new(0),
        }
    }

    /// The cap of each archive file, bytes (0 = none).
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes.load(Ordering::Relaxed)
    }

    /// Change the cap (0 = none); the next batch applies it.
    pub fn set_max_file_bytes(&self, bytes: u64) {
        self.max_file_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// All files, oldest first.
    pub fn list(&self) -> Vec<PathBuf> {
        self.files.read().clone()
    }
    /// The file archiving writes to now (the newest), if any.
    pub fn current(&self) -> Option<PathBuf> {
        self.files.read().last().cloned()
    }
    /// The path of file number `n`.
    pub fn path_for(&self, n: u32) -> PathBuf {
        self.dir.join(format!("archive-{n:06}.sqlite"))
    }
    /// Record a new newest file.
    pub fn push(&self, p: PathBuf) {
        let mut f = self.files.write();
        if !f.contains(&p) {
            f.push(p);
        }
    }
    /// Number of the newest file (0 if none).
    pub fn current_number(&self) -> u32 {
        self.current().as_deref().and_then(file_number).unwrap_or(0)
    }
}

pub(crate) fn file_number(p: &Path) -> Option<u32> {
    p.file_name()?
        .to_str()?
        .strip_prefix("archive-")?
        .strip_suffix(".sqlite")?
        .parse()
        .ok()
}

/// List `archive-*.sqlite` in `dir`, oldest first (blocking; call from a DB thread).
pub fn scan_archive_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out: Vec<(u32, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| file_number(&p).map(|n| (n, p)))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(DataError::io(dir, &e)),
    };
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}
