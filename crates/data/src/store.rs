//! [`DataStore`]: typed access to the named database handles, shared by the data daemon and
//! any daemon that needs storage without a router round trip (archive, users, rooms, chat,
//! personas).
//!
//! Callers name a handle, never a path: `primary` (`DIR/data/primary.sqlite`), `archive` (the
//! rotating files under `DIR/data/archive/`, read-only to callers) and `persona:<id>`
//! (`DIR/personas/<id>/state.sqlite`, opened on first use; the id must match
//! `^[A-Za-z0-9_-]{1,64}$`, so it can never climb out of the folder).
//!
//! Every operation runs on the handle's threads (see [`crate::engine`]): validation and
//! the write happen in the writer job, so a rejected write never reaches SQL and a committed one
//! publishes its event from the writer thread right after COMMIT. Events are published for the
//! `primary` handle only (persona state and the archive are private).

pub use crate::archive::file::{ArchiveFiles, scan_archive_dir};
use crate::ddl::{self, ApplyReport, q};
use crate::engine::{Db, DbOptions, PendingEvents, ReadConns};
use crate::error::DataError;
use crate::ids::IdBlock;
use crate::query::{self, OrderKey};
use crate::schema::{CollectionSchema, FieldDef, SYSTEM_FIELDS, SchemaSet};
use crate::value::{Coerced, coerce, coerce_ref, to_json};
pub use daemonhost_data_client::{BatchOp, Handle, ListParams, Page};
use daemonhost_protocol::time::now_text;
use daemonhost_runtime::EventBus;
use parking_lot::Mutex;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the store keeps its files and how its databases are tuned.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The host's state directory (`DIR`).
    pub root: PathBuf,
    /// Tuning of `primary` (its `bus` is set by the store).
    pub primary: DbOptions,
    /// Tuning of each persona database.
    pub persona: DbOptions,
    /// Cap of each archive file, bytes (0 = none); `primary`'s quota is `primary.max_bytes`.
    pub archive_max_file_bytes: u64,
}

impl StoreConfig {
    /// Defaults under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreConfig {
            root: root.into(),
            primary: DbOptions::default(),
            // Persona databases are small and read once at load: no reader threads (reads go
            // to the writer), so a host with many personas does not hold two threads each.
            persona: DbOptions {
                readers: 0,
                cache_kib: 512,
                reader_cache_kib: 256,
                writer_queue: 256,
                reader_queue: 256,
                background_checkpoint: false,
                ..DbOptions::default()
            },
            archive_max_file_bytes: 0,
        }
    }

    /// `DIR/data/primary.sqlite`.
    pub fn primary_path(&self) -> PathBuf {
        self.root.join("data").join("primary.sqlite")
    }

    /// `DIR/data/archive/`.
    pub fn archive_dir(&self) -> PathBuf {
        self.root.join("data").join("archive")
    }
}

/// Precomputed SQL for one collection.
#[derive(Debug)]
struct CollSql {
    schema: Arc<CollectionSchema>,
    /// All columns (system first).
    cols: Vec<FieldDef>,
    insert: String,
    select_by_id: String,
    delete_returning: String,
    /// `SELECT 1 … WHERE id = ?1` (reference checks against this collection).
    exists: String,
}

impl CollSql {
    fn new(schema: Arc<CollectionSchema>) -> Self {
        let cols: Vec<FieldDef> = schema
            .columns()
            .filter_map(|c| query::column_def(&schema, c))
            .collect();
        let names: Vec<String> = cols.iter().map(|c| q(&c.name)).collect();
        let t = q(&schema.collection);
        let marks = vec!["?"; cols.len()].join(", ");
        CollSql {
            insert: format!("INSERT INTO {t} ({}) VALUES ({marks})", names.join(", ")),
            select_by_id: format!("SELECT {} FROM {t} WHERE \"id\" = ?1", names.join(", ")),
            delete_returning: format!(
                "DELETE FROM {t} WHERE \"id\" = ?1 RETURNING {}",
                names.join(", ")
            ),
            exists: format!("SELECT 1 FROM {t} WHERE \"id\" = ?1"),
            cols,
            schema,
        }
    }
}

/// The quotas in force and the space `primary` uses ([`DataStore::quota`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaReport {
    /// `primary`: its quota (`maxBytes`, 0 = unlimited) and pages.
    pub primary: crate::engine::Usage,
    /// Whether `primary`'s latest write was refused for lack of space.
    pub full: bool,
    /// Cap of each archive file, bytes (0 = none).
    pub max_archive_file_bytes: u64,
}

/// What deferred init did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeferredReport {
    /// Indexes built after READY.
    pub indexes_built: usize,
    /// `PRAGMA quick_check` result (`ok` when healthy).
    pub quick_check: String,
    /// Milliseconds spent on each step.
    pub timings_ms: Vec<(String, f64)>,
}

/// An open persona database and the collections whose tables it has been given so far: a
/// persona database holds its snapshot table and only the collections written or read through
/// its handle, not every platform table.
#[derive(Debug)]
struct PersonaDb {
    db: Db,
    tables: std::collections::HashSet<String>,
}

#[derive(Debug)]
struct StoreInner {
    config: StoreConfig,
    schemas: Arc<SchemaSet>,
    colls: HashMap<String, Arc<CollSql>>,
    primary: Db,
    personas: tokio::sync::Mutex<HashMap<String, PersonaDb>>,
    archive: Arc<ArchiveFiles>,
    apply: Mutex<ApplyReport>,
    recovered_archive_rows: u64,
}

/// Typed access to the named handles. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DataStore {
    inner: Arc<StoreInner>,
}

/// What [`DataStore::batch_returning`] answers with (`return` of `data/batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchReturn {
    /// Every record as stored (the default).
    #[default]
    Records,
    /// Only the ids, in operation order.
    Ids,
    /// Only the number of operations.
    None,
}

/// The answer of [`DataStore::batch_returning`].
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutput {
    /// The records, in operation order.
    Records(Vec<Value>),
    /// The ids, in operation order.
    Ids(Vec<String>),
    /// How many operations committed.
    Count(usize),
}

/// The table of a persona's snapshot, in its own database.
const SNAPSHOT_DDL: &str = "CREATE TABLE IF NOT EXISTS persona_snapshot (
    id TEXT PRIMARY KEY, snapshot TEXT NOT NULL, updated_at INTEGER NOT NULL)";

impl DataStore {
    /// Open `primary`, apply `schemas` (indexes on non-empty tables are deferred to
    /// [`DataStore::run_deferred`]) and finish any archive batch a crash interrupted. Nothing
    /// here scans a table, so it stays fast on a large database.
    pub async fn open(
        mut config: StoreConfig,
        schemas: SchemaSet,
        bus: Option<EventBus>,
    ) -> Result<DataStore, DataError> {
        let schemas = Arc::new(schemas);
        let colls: HashMap<String, Arc<CollSql>> = schemas
            .collections
            .iter()
            .map(|(k, s)| (k.clone(), Arc::new(CollSql::new(s.clone()))))
            .collect();
        config.primary.bus = bus;
        let set = schemas.clone();
        let archive_dir = config.archive_dir();
        let (primary, (apply, files, recovered)) = Db::open(
            "primary",
            &config.primary_path(),
            &config.primary,
            move |conn| {
                let apply = ddl::apply_schemas(conn, "primary", &set, true)?;
                let files = scan_archive_dir(&archive_dir)?;
                let recovered = match files.last() {
                    Some(f) => crate::archive::file::recover(conn, f)?,
                    None => 0,
                };
                Ok((apply, files, recovered))
            },
        )
        .await?;
        for w in &apply.warnings {
            tracing::warn!(warning = %w, "schema migration");
        }
        let archive = ArchiveFiles::new(config.archive_dir(), files);
        archive.set_max_file_bytes(config.archive_max_file_bytes);
        Ok(DataStore {
            inner: Arc::new(StoreInner {
                archive: Arc::new(archive),
                config,
                schemas,
                colls,
                primary,
                personas: tokio::sync::Mutex::new(HashMap::new()),
                apply: Mutex::new(apply),
                recovered_archive_rows: recovered,
            }),
        })
    }

    /// The loaded schemas.
    pub fn schemas(&self) -> &Arc<SchemaSet> {
        &self.inner.schemas
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The `primary` database.
    pub fn primary(&self) -> &Db {
        &self.inner.primary
    }

    /// The archive files.
    pub fn archive_files(&self) -> &Arc<ArchiveFiles> {
        &self.inner.archive
    }

    /// The quotas and the space `primary` uses.
    pub async fn quota(&self) -> Result<QuotaReport, DataError> {
        Ok(QuotaReport {
            primary: self.inner.primary.usage().await?,
            full: self.inner.primary.is_full(),
            max_archive_file_bytes: self.inner.archive.max_file_bytes(),
        })
    }

    /// Change the quotas until the store closes (`None` keeps one; 0 = unlimited): `primary`'s
    /// applies to its next write, the archive files' to the next archive batch.
    pub async fn set_quota(
        &self,
        max_db_bytes: Option<u64>,
        max_archive_file_bytes: Option<u64>,
    ) -> Result<QuotaReport, DataError> {
        if let Some(b) = max_db_bytes {
            self.inner.primary.set_max_bytes(b).await?;
        }
        if let Some(b) = max_archive_file_bytes {
            self.inner.archive.set_max_file_bytes(b);
        }
        self.quota().await
    }

    /// What schema application did at open.
    pub fn apply_report(&self) -> ApplyReport {
        self.inner.apply.lock().clone()
    }

    /// Rows whose interrupted archive batch was completed at open.
    pub fn recovered_archive_rows(&self) -> u64 {
        self.inner.recovered_archive_rows
    }

    fn coll(&self, collection: &str) -> Result<Arc<CollSql>, DataError> {
        self.inner
            .colls
            .get(collection)
            .cloned()
            .ok_or_else(|| DataError::UnknownCollection(collection.chars().take(64).collect()))
    }

    /// The database behind a writable handle, opening a persona database on first use.
    pub async fn db(&self, handle: &Handle) -> Result<Db, DataError> {
        match handle {
            Handle::Primary => Ok(self.inner.primary.clone()),
            Handle::Archive => Err(DataError::BadRequest(
                "the archive handle is read-only; rows move there by archiving".into(),
            )),
            Handle::Persona(id) => {
                let mut map = self.inner.personas.lock().await;
                if let Some(p) = map.get(id) {
                    return Ok(p.db.clone());
                }
                let path = self
                    .inner
                    .config
                    .root
                    .join("personas")
                    .join(id)
                    .join("state.sqlite");
                let name = handle.as_string();
                let n2 = name.clone();
                // Only the bookkeeping and the snapshot table: collections get their tables
                // when the handle first touches them (`db_for`).
                let (db, _) = Db::open(&name, &path, &self.inner.config.persona, move |conn| {
                    ddl::migrate_meta(conn, &n2)?;
                    conn.execute(SNAPSHOT_DDL, [])
                        .map_err(|e| DataError::sqlite(&n2, "create snapshot table", &e))?;
                    Ok(ddl::ApplyReport::default())
                })
                .await?;
                map.insert(
                    id.clone(),
                    PersonaDb {
                        db: db.clone(),
                        tables: std::collections::HashSet::new(),
                    },
                );
                Ok(db)
            }
        }
    }

    /// [`DataStore::db`] for an operation on `collections`: on a persona handle, the tables of
    /// those collections are created (or migrated) on first use.
    async fn db_for(&self, handle: &Handle, collections: &[&str]) -> Result<Db, DataError> {
        let db = self.db(handle).await?;
        let Handle::Persona(id) = handle else {
            return Ok(db);
        };
        let missing: Vec<Arc<CollectionSchema>> = {
            let map = self.inner.personas.lock().await;
            let known = map.get(id).map(|p| &p.tables);
            let mut seen = std::collections::HashSet::new();
            collections
                .iter()
                .filter(|c| known.is_none_or(|t| !t.contains(**c)) && seen.insert(**c))
                .filter_map(|c| self.inner.schemas.get(c).cloned())
                .collect()
        };
        if missing.is_empty() {
            return Ok(db);
        }
        let subset = SchemaSet {
            collections: missing
                .iter()
                .map(|s| (s.collection.clone(), s.clone()))
                .collect(),
            problems: Vec::new(),
        };
        let name = handle.as_string();
        db.exclusive(move |conn| ddl::apply_schemas(conn, &name, &subset, false).map(|_| ()))
            .await?;
        if let Some(p) = self.inner.personas.lock().await.get_mut(id) {
            p.tables
                .extend(missing.iter().map(|s| s.collection.clone()));
        }
        Ok(db)
    }

    /// Close a persona's database (checkpointed; its thread ends). The next use reopens it.
    /// Callers that touch persona databases rarely (snapshots) close them after use, so a host
    /// with many personas does not keep a writer thread — and its allocator arena — per persona.
    pub async fn close_persona(&self, id: &str) {
        let db = self.inner.personas.lock().await.remove(id);
        if let Some(p) = db {
            p.db.close().await;
        }
    }

    /// A persona's snapshot, if one was saved. Opens the persona's database, reads, and closes
    /// it again (snapshots are rare: no writer thread is kept per persona).
    pub async fn snapshot_read(&self, persona: &str) -> Result<Option<Value>, DataError> {
        let db = self.db(&Handle::Persona(persona.to_owned())).await?;
        let key = persona.to_owned();
        let text = db
            .write(move |conn| {
                conn.execute(SNAPSHOT_DDL, [])
                    .map_err(|e| DataError::sqlite("persona", "create snapshot table", &e))?;
                conn.query_row(
                    "SELECT snapshot FROM persona_snapshot WHERE id = ?1",
                    [&key],
                    |row| row.get::<_, String>(0),
                )
                .optional()
                .map_err(|e| DataError::sqlite("persona", "read snapshot", &e))
            })
            .await;
        self.close_persona(persona).await;
        match text? {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| DataError::Sqlite {
                    handle: format!("persona:{persona}"),
                    op: "parse snapshot".into(),
                    message: e.to_string(),
                }),
        }
    }

    /// Save a persona's snapshot, replacing the previous one; closes the database after.
    pub async fn snapshot_write(&self, persona: &str, snapshot: &Value) -> Result<(), DataError> {
        let db = self.db(&Handle::Persona(persona.to_owned())).await?;
        let text = snapshot.to_string();
        let id = persona.to_owned();
        let at = daemonhost_protocol::time::now_ms();
        let written = db
            .write(move |conn| {
                conn.execute(SNAPSHOT_DDL, [])
                    .map_err(|e| DataError::sqlite("persona", "create snapshot table", &e))?;
                conn.execute(
                    "INSERT INTO persona_snapshot (id, snapshot, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at",
                    rusqlite::params![id, text, at],
                )
                .map_err(|e| DataError::sqlite("persona", "write snapshot", &e))?;
                Ok(())
            })
            .await;
        self.close_persona(persona).await;
        written
    }

    /// Names of the persona databases open now.
    pub async fn open_personas(&self) -> Vec<String> {
        self.inner.personas.lock().await.keys().cloned().collect()
    }

    /// Create a record; returns it with `id`, `createdAt`, `updatedAt`, `version`.
    pub async fn create(
        &self,
        handle: &Handle,
        collection: &str,
        id: Option<String>,
        data: Map<String, Value>,
    ) -> Result<Value, DataError> {
        let mut out = self
            .batch(
                handle,
                vec![BatchOp::Create {
                    collection: collection.to_owned(),
                    id,
                    data,
                }],
            )
            .await?;
        out.pop()
            .ok_or_else(|| DataError::BadRequest("empty result".into()))
    }

    /// Update fields of a record (partial). With `version`, fails unless it is the stored one.
    pub async fn update(
        &self,
        handle: &Handle,
        collection: &str,
        id: &str,
        data: Map<String, Value>,
        version: Option<i64>,
    ) -> Result<Value, DataError> {
        let mut out = self
            .batch(
                handle,
                vec![BatchOp::Update {
                    collection: collection.to_owned(),
                    id: id.to_owned(),
                    data,
                    version,
                }],
            )
            .await?;
        out.pop()
            .ok_or_else(|| DataError::BadRequest("empty result".into()))
    }

    /// Delete a record; returns what was deleted.
    pub async fn delete(
        &self,
        handle: &Handle,
        collection: &str,
        id: &str,
    ) -> Result<Value, DataError> {
        let mut out = self
            .batch(
                handle,
                vec![BatchOp::Delete {
                    collection: collection.to_owned(),
                    id: id.to_owned(),
                }],
            )
            .await?;
        out.pop()
            .ok_or_else(|| DataError::BadRequest("empty result".into()))
    }

    /// Run operations in one transaction: all commit or none do (and no event is published).
    pub async fn batch(&self, handle: &Handle, ops: Vec<BatchOp>) -> Result<Vec<Value>, DataError> {
        match self
            .batch_returning(handle, ops, BatchReturn::Records)
            .await?
        {
            BatchOutput::Records(r) => Ok(r),
            _ => Err(DataError::BadRequest(
                "batch answered without records".into(),
            )),
        }
    }

    /// [`DataStore::batch`], answering with what `ret` asks for. `Ids` and `None` spare
    /// building (and later dropping) the records when nobody subscribes to the events; events
    /// carry full records either way.
    pub async fn batch_returning(
        &self,
        handle: &Handle,
        ops: Vec<BatchOp>,
        ret: BatchReturn,
    ) -> Result<BatchOutput, DataError> {
        let mut colls = Vec::with_capacity(ops.len());
        let mut new_ids = 0;
        for op in &ops {
            let c = match op {
                BatchOp::Create { collection, id, .. } => {
                    new_ids += usize::from(id.is_none());
                    collection
                }
                BatchOp::Update { collection, .. } | BatchOp::Delete { collection, .. } => {
                    collection
                }
            };
            colls.push(self.coll(c)?);
        }
        let names: Vec<&str> = colls.iter().map(|c| c.schema.collection.as_str()).collect();
        let db = self.db_for(handle, &names).await?;
        let store = self.inner.clone();
        let events = *handle == Handle::Primary;
        let hname = handle.as_string();
        let many = ops.len() > 1;
        let db2 = db.clone();
        db.write_events(move |conn| {
            let n = ops.len();
            let mut records = Vec::with_capacity(if ret == BatchReturn::Records { n } else { 0 });
            let mut ids = Vec::with_capacity(if ret == BatchReturn::Ids { n } else { 0 });
            let mut evs: PendingEvents = Vec::new();
            let mut ctx = JobCtx::new(new_ids);
            // Nobody listening: skip building event payloads.
            let events = events && db2.has_subscribers();
            let build = events || ret == BatchReturn::Records;
            // By reference: the job may run again (engine: a group rolled back whole).
            for (i, (op, c)) in ops.iter().zip(&colls).enumerate() {
                let at = |e: DataError| if many { prefix_op(i, e) } else { e };
                let (topic, id, rec) = match op {
                    BatchOp::Create { id, data, .. } => {
                        let w = insert_record(
                            conn,
                            &hname,
                            &store,
                            c,
                            id.as_deref(),
                            data,
                            &mut ctx,
                            build,
                        )
                        .map_err(at)?;
                        ("created", Cow::Owned(w.id), w.record)
                    }
                    BatchOp::Update {
                        id, data, version, ..
                    } => {
                        let rec =
                            update_record(conn, &hname, &store, c, id, data, *version, &mut ctx)
                                .map_err(at)?;
                        ("updated", Cow::Borrowed(id.as_str()), Some(rec))
                    }
                    BatchOp::Delete { id, .. } => {
                        ctx.seen.clear();
                        let rec = delete_record(conn, &hname, c, id).map_err(at)?;
                        ("deleted", Cow::Borrowed(id.as_str()), Some(rec))
                    }
                };
                if let Some(rec) = rec {
                    let topic = || format!("data:{}:{topic}", c.schema.collection);
                    if ret == BatchReturn::Records {
                        if events {
                            evs.push((topic(), rec.clone()));
                        }
                        records.push(rec);
                    } else if events {
                        evs.push((topic(), rec));
                    }
                }
                if ret == BatchReturn::Ids {
                    ids.push(id.into_owned());
                }
            }
            let out = match ret {
                BatchReturn::Records => BatchOutput::Records(records),
                BatchReturn::Ids => BatchOutput::Ids(ids),
                BatchReturn::None => BatchOutput::Count(n),
            };
            Ok((out, evs))
        })
        .await
    }

    /// Delete every record of a collection; returns how many. Publishes
    /// `data:<collection>:truncated {count}`.
    pub async fn truncate(&self, handle: &Handle, collection: &str) -> Result<u64, DataError> {
        let c = self.coll(collection)?;
        let db = self.db_for(handle, &[collection]).await?;
        let events = *handle == Handle::Primary;
        let hname = handle.as_string();
        db.write_events(move |conn| {
            let n = conn
                .execute(&format!("DELETE FROM {}", q(&c.schema.collection)), [])
                .map_err(|e| DataError::sqlite(&hname, "truncate", &e))?;
            let n = u64::try_from(n).unwrap_or(u64::MAX);
            let evs = if events {
                vec![(
                    format!("data:{}:truncated", c.schema.collection),
                    json!({ "collection": c.schema.collection, "count": n }),
                )]
            } else {
                Vec::new()
            };
            Ok((n, evs))
        })
        .await
    }

    /// Read one record by id.
    pub async fn read(
        &self,
        handle: &Handle,
        collection: &str,
        id: &str,
    ) -> Result<Value, DataError> {
        let c = self.coll(collection)?;
        let id = id.to_owned();
        let hname = handle.as_string();
        let not_found = {
            let collection = collection.to_owned();
            let id = id.clone();
            move || DataError::NotFound { collection, id }
        };
        match handle {
            Handle::Archive => {
                let files = self.inner.archive.list();
                let found = self
                    .inner
                    .primary
                    .read(move |rc| {
                        for f in files.iter().rev() {
                            if let Some(r) = read_in_file(rc, &hname, f, &c, &id)? {
                                return Ok(Some(r));
                            }
                        }
                        Ok(None)
                    })
                    .await?;
                found.ok_or_else(not_found)
            }
            _ => {
                let db = self.db_for(handle, &[collection]).await?;
                let path = db.path().to_owned();
                let found = db
                    .read(move |rc| {
                        let conn = rc.get(&path)?;
                        select_by_id(conn, &hname, &c, &id)
                    })
                    .await?;
                found.ok_or_else(not_found)
            }
        }
    }

    /// A page of records.
    pub async fn list(
        &self,
        handle: &Handle,
        collection: &str,
        p: ListParams,
    ) -> Result<Page, DataError> {
        let c = self.coll(collection)?;
        let plan = ListPlan::new(&c.schema, &p)?;
        let hname = handle.as_string();
        match handle {
            Handle::Archive => {
                let files = self.inner.archive.list();
                self.inner
                    .primary
                    .read(move |rc| {
                        let mut rows: Vec<KeyedRow> = Vec::new();
                        let mut total = 0u64;
                        for f in &files {
                            let conn = rc.get(f)?;
                            let Some(from) = archive_from(conn, &hname, &c)? else {
                                continue;
                            };
                            if plan.limit == 0 {
                                total += count_rows(conn, &hname, &from, &plan.filter)?;
                            } else {
                                rows.extend(plan.fetch(conn, &hname, &from)?);
                            }
                        }
                        if plan.limit == 0 {
                            return Ok(plan.count_page(total));
                        }
                        rows.sort_by(|a, b| cmp_keys(&plan.keys, &a.0, &b.0));
                        Ok(plan.page(rows))
                    })
                    .await
            }
            _ => {
                let db = self.db_for(handle, &[collection]).await?;
                let path = db.path().to_owned();
                db.read(move |rc| {
                    let conn = rc.get(&path)?;
                    let from = q(&c.schema.collection);
                    if plan.limit == 0 {
                        let n = count_rows(conn, &hname, &from, &plan.filter)?;
                        return Ok(plan.count_page(n));
                    }
                    let rows = plan.fetch(conn, &hname, &from)?;
                    Ok(plan.page(rows))
                })
                .await
            }
        }
    }

    /// `EXPLAIN QUERY PLAN` of the list query (one line per plan row), for tests and tuning.
    pub async fn explain_list(
        &self,
        collection: &str,
        p: ListParams,
    ) -> Result<Vec<String>, DataError> {
        let c = self.coll(collection)?;
        let plan = ListPlan::new(&c.schema, &p)?;
        let db = self.inner.primary.clone();
        let path = db.path().to_owned();
        db.read(move |rc| {
            let conn = rc.get(&path)?;
            let (sql, params) = plan.sql(&q(&c.schema.collection));
            let mut st = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .map_err(|e| DataError::sqlite("primary", "explain", &e))?;
            let rows = st
                .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    r.get::<_, String>(3)
                })
                .map_err(|e| DataError::sqlite("primary", "explain", &e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| DataError::sqlite("primary", "explain", &e))
        })
        .await
    }

    /// Count records matching a filter.
    pub async fn count(
        &self,
        handle: &Handle,
        collection: &str,
        filter: Option<Value>,
    ) -> Result<u64, DataError> {
        let page = self
            .list(
                handle,
                collection,
                ListParams {
                    filter,
                    limit: Some(json!(0)),
                    ..ListParams::default()
                },
            )
            .await?;
        Ok(page.count)
    }

    /// An upper bound on the records in a collection, from its rowid range: two B-tree seeks
    /// instead of the scan `count` makes (exact while no record was deleted in the middle).
    /// Periodic checks (archiving, every minute) ask this first and count only past their
    /// threshold: on a large table a COUNT(*) reads every page of an index, and a reader's
    /// page cache filled that way is thrown away at the next write.
    pub async fn count_upper_bound(
        &self,
        handle: &Handle,
        collection: &str,
    ) -> Result<u64, DataError> {
        if matches!(handle, Handle::Archive) {
            return Err(DataError::BadRequest(
                "a row bound is kept for writable handles only".into(),
            ));
        }
        let c = self.coll(collection)?;
        let db = self.db_for(handle, &[collection]).await?;
        let path = db.path().to_owned();
        let hname = handle.as_string();
        db.read(move |rc| {
            let conn = rc.get(&path)?;
            let sql = row_bound_sql(&q(&c.schema.collection));
            conn.prepare_cached(&sql)
                .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(|e| DataError::sqlite(&hname, "count bound", &e))
        })
        .await
    }

    /// Heavy work kept out of core init: build deferred indexes, `ANALYZE` (bounded by
    /// `analysis_limit`), `PRAGMA quick_check`, a passive WAL checkpoint.
    pub async fn run_deferred(&self) -> Result<DeferredReport, DataError> {
        let mut rep = DeferredReport::default();
        let t = std::time::Instant::now();
        let set = self.inner.schemas.clone();
        let pending = self.inner.apply.lock().deferred_indexes.len();
        if pending > 0 {
            let r = self
                .inner
                .primary
                .exclusive(move |conn| ddl::apply_schemas(conn, "primary", &set, false))
                .await?;
            rep.indexes_built = pending;
            let mut a = self.inner.apply.lock();
            a.deferred_indexes.clear();
            a.added_columns.extend(r.added_columns);
        }
        rep.timings_ms.push(("indexes".into(), ms(t)));
        let t = std::time::Instant::now();
        self.inner
            .primary
            .exclusive(|conn| {
                conn.execute_batch("PRAGMA analysis_limit=1000; ANALYZE;")
                    .map_err(|e| DataError::sqlite("primary", "analyze", &e))
            })
            .await?;
        rep.timings_ms.push(("analyze".into(), ms(t)));
        let t = std::time::Instant::now();
        let path = self.inner.primary.path().to_owned();
        rep.quick_check = self
            .inner
            .primary
            .read(move |rc| {
                rc.get(&path)?
                    .query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
                    .map_err(|e| DataError::sqlite("primary", "quick_check", &e))
            })
            .await?;
        if rep.quick_check != "ok" {
            tracing::error!(result = %rep.quick_check, "primary database failed quick_check");
        }
        rep.timings_ms.push(("quick_check".into(), ms(t)));
        let t = std::time::Instant::now();
        self.inner
            .primary
            .exclusive(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    .map_err(|e| DataError::sqlite("primary", "checkpoint", &e))
            })
            .await?;
        rep.timings_ms.push(("checkpoint".into(), ms(t)));
        Ok(rep)
    }

    /// Close every database (checkpointing each).
    pub async fn close(&self) {
        let personas: Vec<Db> = self
            .inner
            .personas
            .lock()
            .await
            .drain()
            .map(|(_, p)| p.db)
            .collect();
        for p in personas {
            p.close().await;
        }
        self.inner.primary.close().await;
    }
}

fn ms(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn prefix_op(i: usize, e: DataError) -> DataError {
    match e {
        DataError::Validation {
            collection,
            field,
            reason,
        } => DataError::Validation {
            collection,
            field,
            reason: format!("{reason} (operations[{i}])"),
        },
        DataError::BadRequest(m) => DataError::BadRequest(format!("operations[{i}]: {m}")),
        other => other,
    }
}

/// Check a record id: 1–128 characters, no control characters.
fn check_id(collection: &str, id: &str) -> Result<(), DataError> {
    if id.is_empty() || id.chars().count() > 128 || id.chars().any(char::is_control) {
        return Err(DataError::validation(
            collection,
            "id",
            "must be 1-128 characters without control characters",
        ));
    }
    Ok(())
}

/// References already confirmed within the current write job, by target collection (cleared
/// by any delete). Looked up by `&str`: a hit allocates nothing.
/// Records known to exist, per referenced collection, within one write job (a batch of 1000
/// messages names the same room and sender 1000 times: one lookup, then memory). foldhash, not
/// SipHash: per-row hashing showed in the writer's profile, and the map lives for one job of
/// at most `MAX_BATCH` operations.
type RefCache =
    HashMap<String, HashSet<String, foldhash::fast::RandomState>, foldhash::fast::RandomState>;

/// What one write job shares across its operations: one clock reading, a block of new ids,
/// the reference cache, and each collection's insert statement (looked up once per job, not
/// once per row: the statement cache hashes the whole SQL text on every lookup).
struct JobCtx<'c> {
    now: String,
    new_ids: usize,
    ids: Option<IdBlock>,
    seen: RefCache,
    inserts: Vec<(Arc<CollSql>, rusqlite::CachedStatement<'c>)>,
}

impl<'c> JobCtx<'c> {
    fn new(new_ids: usize) -> Self {
        JobCtx {
            now: now_text(),
            new_ids,
            ids: None,
            seen: RefCache::default(),
            inserts: Vec::new(),
        }
    }

    /// A new UUID v7 (the job's ids are reserved in one block on first use).
    fn new_id(&mut self) -> String {
        let n = self.new_ids;
        self.ids
            .get_or_insert_with(|| IdBlock::reserve(n))
            .next_id()
    }
}

/// The insert statement of `c` from a job's `inserts`, prepared on first use in the job. (A
/// function of the one field, so records can borrow the job's clock reading meanwhile.)
fn insert_stmt<'s, 'c>(
    inserts: &'s mut Vec<(Arc<CollSql>, rusqlite::CachedStatement<'c>)>,
    conn: &'c Connection,
    c: &Arc<CollSql>,
) -> rusqlite::Result<&'s mut rusqlite::CachedStatement<'c>> {
    let i = match inserts.iter().position(|(k, _)| Arc::ptr_eq(k, c)) {
        Some(i) => i,
        None => {
            let st = conn.prepare_cached(&c.insert)?;
            inserts.push((Arc::clone(c), st));
            inserts.len() - 1
        }
    };
    Ok(&mut inserts[i].1)
}

#[allow(clippy::too_many_arguments)] // the write job's context, passed flat on a hot path
fn check_reference(
    conn: &Connection,
    handle: &str,
    store: &StoreInner,
    c: &CollSql,
    f: &FieldDef,
    v: Option<&str>,
    seen: &mut RefCache,
) -> Result<(), DataError> {
    let (Some(target), Some(id)) = (&f.references, v) else {
        return Ok(());
    };
    if seen.get(target).is_some_and(|s| s.contains(id)) {
        return Ok(());
    }
    // The target was checked to be a loaded collection when the schemas loaded.
    let Some(t) = store.colls.get(target) else {
        return Ok(());
    };
    let found = conn
        .prepare_cached(&t.exists)
        .and_then(|mut st| st.query_row([id], |_| Ok(())).optional())
        .map_err(|e| DataError::sqlite(handle, "foreign key check", &e))?;
    if found.is_none() {
        return Err(DataError::validation(
            &c.schema.collection,
            &f.name,
            format!("references {target} record '{id}', which does not exist"),
        ));
    }
    seen.entry(target.clone())
        .or_default()
        .insert(id.to_owned());
    Ok(())
}

fn map_write_error(handle: &str, c: &CollSql, id: &str, e: &rusqlite::Error) -> DataError {
    if let rusqlite::Error::SqliteFailure(err, Some(msg)) = e
        && err.code == rusqlite::ErrorCode::ConstraintViolation
    {
        let coll = &c.schema.collection;
        if let Some(cols) = msg.strip_prefix("UNIQUE constraint failed: ") {
            let field = cols
                .split(", ")
                .map(|c| c.rsplit('.').next().unwrap_or(c))
                .collect::<Vec<_>>()
                .join(",");
            if field == "id" {
                return DataError::validation(
                    coll,
                    "id",
                    format!("a record with id '{id}' already exists"),
                );
            }
            return DataError::validation(coll, field, "must be unique: the value is already used");
        }
    }
    DataError::sqlite(handle, "write", e)
}

/// Where a column's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// `id`, `createdAt`, `updatedAt`, `version`.
    System,
    /// `data`.
    Given,
    /// The field's default.
    Default,
    /// Neither: NULL.
    Absent,
}

/// One created row: its id, and the record when it was asked for.
struct Created {
    id: String,
    record: Option<Value>,
}

#[allow(clippy::too_many_arguments)] // the write job's context, passed flat on a hot path
fn insert_record<'c>(
    conn: &'c Connection,
    handle: &str,
    store: &StoreInner,
    c: &Arc<CollSql>,
    id: Option<&str>,
    data: &Map<String, Value>,
    ctx: &mut JobCtx<'c>,
    build: bool,
) -> Result<Created, DataError> {
    let coll = &c.schema.collection;
    let mut id = id.map(str::to_owned);
    for (k, v) in data {
        if k == "id" {
            match (v.as_str(), &id) {
                (Some(s), None) => id = Some(s.to_owned()),
                (Some(s), Some(given)) if s == given => {}
                _ => {
                    return Err(DataError::validation(
                        coll,
                        "id",
                        "data.id conflicts with id",
                    ));
                }
            }
        } else if SYSTEM_FIELDS.contains(&k.as_str()) {
            return Err(DataError::validation(
                coll,
                k,
                "is set by the store and cannot be written",
            ));
        } else if c.schema.field(k).is_none() {
            let shown: String = k.chars().take(64).collect();
            return Err(DataError::validation(
                coll,
                shown,
                "unknown field (not in the schema)",
            ));
        }
    }
    let id = match id {
        Some(i) => {
            check_id(coll, &i)?;
            i
        }
        None => ctx.new_id(),
    };
    // Convert every column (validation and reference checks in column order); text stored as
    // given is bound straight from `data`, without a copy.
    let mut cells: Vec<(Coerced<'_>, Src)> = Vec::with_capacity(c.cols.len());
    for col in &c.cols {
        let cell = match col.name.as_str() {
            "id" => (Coerced::Borrowed(&id), Src::System),
            "createdAt" | "updatedAt" => (Coerced::Borrowed(&ctx.now), Src::System),
            "version" => (Coerced::Integer(1), Src::System),
            name => {
                let (given, src) = match data.get(name) {
                    Some(v) => (Some(v), Src::Given),
                    None => (col.default.as_ref(), Src::Default),
                };
                let cell = match given {
                    None if col.required => {
                        return Err(DataError::validation(coll, name, "is required"));
                    }
                    None => (Coerced::Null, Src::Absent),
                    Some(v) => (
                        coerce_ref(col, v).map_err(|r| DataError::validation(coll, name, r))?,
                        src,
                    ),
                };
                check_reference(conn, handle, store, c, col, cell.0.as_text(), &mut ctx.seen)?;
                cell
            }
        };
        cells.push(cell);
    }
    insert_stmt(&mut ctx.inserts, conn, c)
        .and_then(|st| st.execute(rusqlite::params_from_iter(cells.iter().map(|(v, _)| v))))
        .map_err(|e| map_write_error(handle, c, &id, &e))?;
    if !build {
        return Ok(Created { id, record: None });
    }
    // The record is a copy of `data` (the job may run again, so `data` stays as given),
    // completed in place: text and JSON stored as given stay as they are
    // (equal to what was stored; JSON echoes the given value instead of re-parsing it), the
    // rest comes from what was bound. Only keys that came in `data` need a lookup; the others
    // (system fields other than a given `id`, defaults, absent fields) are inserted directly.
    let id_given = data.contains_key("id");
    let sets: Vec<(Option<Value>, bool)> = c
        .cols
        .iter()
        .zip(cells)
        .map(|(col, (v, src))| match (src, col.ty, &v) {
            (Src::Given, crate::schema::FieldType::Json, _)
            | (Src::Given, _, Coerced::Borrowed(_)) => (None, true),
            _ => {
                let present = src == Src::Given || (id_given && col.name == "id");
                (Some(to_json(col.ty, v.into_sql())), present)
            }
        })
        .collect();
    let mut record = data.clone();
    for (col, (set, present)) in c.cols.iter().zip(sets) {
        let Some(v) = set else { continue };
        if present && let Some(slot) = record.get_mut(&col.name) {
            *slot = v;
            continue;
        }
        record.insert(col.name.clone(), v);
    }
    Ok(Created {
        id,
        record: Some(Value::Object(record)),
    })
}

#[allow(clippy::too_many_arguments)] // the write job's context, passed flat on a hot path
fn update_record(
    conn: &Connection,
    handle: &str,
    store: &StoreInner,
    c: &CollSql,
    id: &str,
    data: &Map<String, Value>,
    version: Option<i64>,
    ctx: &mut JobCtx<'_>,
) -> Result<Value, DataError> {
    let coll = &c.schema.collection;
    // Check every given field before touching the table: a bad name never reaches SQL.
    let mut sets = Vec::new();
    let mut params: Vec<Sql> = Vec::new();
    let mut changed: Vec<(&FieldDef, Sql)> = Vec::new();
    for (k, v) in data {
        if k == "id" && v.as_str() == Some(id) {
            continue;
        }
        if SYSTEM_FIELDS.contains(&k.as_str()) {
            return Err(DataError::validation(
                coll,
                k,
                "is set by the store and cannot be written",
            ));
        }
        let Some(f) = c.schema.field(k) else {
            let shown: String = k.chars().take(64).collect();
            return Err(DataError::validation(
                coll,
                shown,
                "unknown field (not in the schema)",
            ));
        };
        let s = coerce(f, v).map_err(|r| DataError::validation(coll, k, r))?;
        sets.push(format!("{} = ?", q(k)));
        params.push(s.clone());
        changed.push((f, s));
    }
    let Some(Value::Object(mut record)) = select_by_id(conn, handle, c, id)? else {
        return Err(DataError::NotFound {
            collection: coll.clone(),
            id: id.to_owned(),
        });
    };
    let found = record.get("version").and_then(Value::as_i64).unwrap_or(0);
    if let Some(expected) = version
        && expected != found
    {
        return Err(DataError::VersionConflict {
            collection: coll.clone(),
            id: id.to_owned(),
            expected,
            found,
        });
    }
    for (f, s) in changed {
        let text = match &s {
            Sql::Text(t) => Some(t.as_str()),
            _ => None,
        };
        check_reference(conn, handle, store, c, f, text, &mut ctx.seen)?;
        record.insert(f.name.clone(), to_json(f.ty, s));
    }
    let now = ctx.now.clone();
    sets.push("\"updatedAt\" = ?".into());
    params.push(Sql::Text(now.clone()));
    sets.push("\"version\" = \"version\" + 1".into());
    params.push(Sql::Text(id.to_owned()));
    let sql = format!(
        "UPDATE {} SET {} WHERE \"id\" = ?",
        q(coll),
        sets.join(", ")
    );
    conn.prepare_cached(&sql)
        .and_then(|mut st| st.execute(rusqlite::params_from_iter(params.iter())))
        .map_err(|e| map_write_error(handle, c, id, &e))?;
    record.insert("updatedAt".into(), Value::String(now));
    record.insert("version".into(), json!(found + 1));
    Ok(Value::Object(record))
}

fn delete_record(
    conn: &Connection,
    handle: &str,
    c: &CollSql,
    id: &str,
) -> Result<Value, DataError> {
    let mut st = conn
        .prepare_cached(&c.delete_returning)
        .map_err(|e| DataError::sqlite(handle, "delete", &e))?;
    let rec = st
        .query_row([id], |r| row_record(r, &c.cols))
        .optional()
        .map_err(|e| DataError::sqlite(handle, "delete", &e))?;
    rec.map(Value::Object).ok_or_else(|| DataError::NotFound {
        collection: c.schema.collection.clone(),
        id: id.to_owned(),
    })
}

fn select_by_id(
    conn: &Connection,
    handle: &str,
    c: &CollSql,
    id: &str,
) -> Result<Option<Value>, DataError> {
    let mut st = conn
        .prepare_cached(&c.select_by_id)
        .map_err(|e| DataError::sqlite(handle, "read", &e))?;
    st.query_row([id], |r| row_record(r, &c.cols))
        .optional()
        .map(|o| o.map(Value::Object))
        .map_err(|e| DataError::sqlite(handle, "read", &e))
}

fn read_in_file(
    rc: &mut ReadConns,
    handle: &str,
    file: &Path,
    c: &CollSql,
    id: &str,
) -> Result<Option<Value>, DataError> {
    let conn = rc.get(file)?;
    let Some(from) = archive_from(conn, handle, c)? else {
        return Ok(None);
    };
    let names: Vec<String> = c.cols.iter().map(|f| q(&f.name)).collect();
    let sql = format!("SELECT {} FROM {from} WHERE \"id\" = ?1", names.join(", "));
    let mut st = conn
        .prepare_cached(&sql)
        .map_err(|e| DataError::sqlite(handle, "read", &e))?;
    st.query_row([id], |r| row_record(r, &c.cols))
        .optional()
        .map(|o| o.map(Value::Object))
        .map_err(|e| DataError::sqlite(handle, "read", &e))
}

/// The FROM clause for a collection inside one archive file: the table itself, or a subquery
/// supplying NULL for columns the file predates; `None` if the file has no such table.
fn archive_from(conn: &Connection, handle: &str, c: &CollSql) -> Result<Option<String>, DataError> {
    let have = ddl::table_columns(conn, handle, "main", &c.schema.collection)?;
    if have.is_empty() {
        return Ok(None);
    }
    let t = q(&c.schema.collection);
    if c.cols
        .iter()
        .all(|f| have.iter().any(|(n, _)| *n == f.name))
    {
        return Ok(Some(t));
    }
    let sel: Vec<String> = c
        .cols
        .iter()
        .map(|f| {
            if have.iter().any(|(n, _)| *n == f.name) {
                q(&f.name)
            } else {
                format!("NULL AS {}", q(&f.name))
            }
        })
        .collect();
    Ok(Some(format!("(SELECT {} FROM {t}) AS {t}", sel.join(", "))))
}

fn row_record(r: &Row<'_>, cols: &[FieldDef]) -> rusqlite::Result<Map<String, Value>> {
    let mut m = Map::with_capacity(cols.len());
    for (i, f) in cols.iter().enumerate() {
        let v: Sql = r.get(i)?;
        m.insert(f.name.clone(), to_json(f.ty, v));
    }
    Ok(m)
}

fn count_rows(
    conn: &Connection,
    handle: &str,
    from: &str,
    filter: &query::Fragment,
) -> Result<u64, DataError> {
    let sql = format!("SELECT count(*) FROM {from} WHERE {}", filter.sql);
    conn.prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_row(rusqlite::params_from_iter(filter.params.iter()), |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(|e| DataError::sqlite(handle, "count", &e))
}

/// `max(rowid) - min(rowid) + 1` of a table, each as its own subquery: SQLite seeks the end of
/// the B-tree for a lone `min()` or `max()`, but an expression using both in one SELECT scans
/// the whole table (`row_bound_is_two_seeks_not_a_scan`).
fn row_bound_sql(table: &str) -> String {
    format!(
        "SELECT coalesce((SELECT max(rowid) FROM {table}) - (SELECT min(rowid) FROM {table}) + 1, 0)"
    )
}

/// A row with its order-key values (for cursors and cross-file merges).
type KeyedRow = (Vec<Sql>, Map<String, Value>);

/// A validated list query.
#[derive(Debug)]
struct ListPlan {
    keys: Vec<OrderKey>,
    filter: query::Fragment,
    after: Option<query::Fragment>,
    cols: Vec<FieldDef>,
    wanted: Option<Vec<String>>,
    limit: usize,
}

impl ListPlan {
    fn new(schema: &CollectionSchema, p: &ListParams) -> Result<ListPlan, DataError> {
        let keys = query::parse_order(schema, p.order_by.as_ref())?;
        let filter = query::compile_filter(schema, p.filter.as_ref())?;
        let limit = query::parse_limit(p.limit.as_ref())?;
        let after = match &p.cursor {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => {
                let vals = query::decode_cursor(&keys, c)?;
                Some(query::cursor_predicate(&keys, &vals))
            }
        };
        let (cols, wanted) = query::projection(schema, p.fields.as_ref(), &keys)?;
        Ok(ListPlan {
            keys,
            filter,
            after,
            cols,
            wanted,
            limit,
        })
    }

    fn sql(&self, from: &str) -> (String, Vec<Sql>) {
        let names: Vec<String> = self.cols.iter().map(|f| q(&f.name)).collect();
        let mut params = self.filter.params.clone();
        let mut wh = self.filter.sql.clone();
        if let Some(a) = &self.after {
            wh = format!("({wh}) AND {}", a.sql);
            params.extend(a.params.iter().cloned());
        }
        let sql = format!(
            "SELECT {} FROM {from} WHERE {wh} ORDER BY {} LIMIT {}",
            names.join(", "),
            query::order_sql(&self.keys),
            self.limit + 1
        );
        (sql, params)
    }

    /// Up to `limit + 1` rows with their order-key values.
    fn fetch(
        &self,
        conn: &Connection,
        handle: &str,
        from: &str,
    ) -> Result<Vec<KeyedRow>, DataError> {
        let (sql, params) = self.sql(from);
        let key_idx: Vec<usize> = self
            .keys
            .iter()
            .map(|k| {
                self.cols
                    .iter()
                    .position(|c| c.name == k.field)
                    .unwrap_or(0)
            })
            .collect();
        let mut st = conn
            .prepare_cached(&sql)
            .map_err(|e| DataError::sqlite(handle, "list", &e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                let mut keys = Vec::with_capacity(key_idx.len());
                for &i in &key_idx {
                    keys.push(r.get::<_, Sql>(i)?);
                }
                Ok((keys, row_record(r, &self.cols)?))
            })
            .map_err(|e| DataError::sqlite(handle, "list", &e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| DataError::sqlite(handle, "list", &e))
    }

    fn page(&self, mut rows: Vec<KeyedRow>) -> Page {
        let more = rows.len() > self.limit;
        rows.truncate(self.limit);
        let next_cursor = if more {
            rows.last()
                .map(|(k, _)| query::encode_cursor(&self.keys, k))
        } else {
            None
        };
        let items: Vec<Value> = rows
            .into_iter()
            .map(|(_, m)| Value::Object(query::project(m, self.wanted.as_deref())))
            .collect();
        Page {
            count: items.len() as u64,
            items,
            next_cursor,
        }
    }

    fn count_page(&self, n: u64) -> Page {
        Page {
            items: Vec::new(),
            count: n,
            next_cursor: None,
        }
    }
}

/// Compare SQL values as SQLite orders them: NULL < numbers < text < blob.
pub fn cmp_sql(a: &Sql, b: &Sql) -> Ordering {
    fn rank(v: &Sql) -> u8 {
        match v {
            Sql::Null => 0,
            Sql::Integer(_) | Sql::Real(_) => 1,
            Sql::Text(_) => 2,
            Sql::Blob(_) => 3,
        }
    }
    match (a, b) {
        (Sql::Integer(x), Sql::Integer(y)) => x.cmp(y),
        (Sql::Integer(x), Sql::Real(y)) => (*x as f64).total_cmp(y),
        (Sql::Real(x), Sql::Integer(y)) => x.total_cmp(&(*y as f64)),
        (Sql::Real(x), Sql::Real(y)) => x.total_cmp(y),
        (Sql::Text(x), Sql::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Sql::Blob(x), Sql::Blob(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Compare two rows' order-key tuples under `keys`.
pub fn cmp_keys(keys: &[OrderKey], a: &[Sql], b: &[Sql]) -> Ordering {
    for (k, (x, y)) in keys.iter().zip(a.iter().zip(b)) {
        let o = cmp_sql(x, y);
        let o = if k.desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_bound_is_two_seeks_not_a_scan() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE \"t\" (\"id\" TEXT PRIMARY KEY NOT NULL, x)")
            .expect("create");
        let sql = row_bound_sql("\"t\"");
        let mut st = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let plan: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(
            plan.iter()
                .all(|l| !l.starts_with("SCAN") || l == "SCAN CONSTANT ROW"),
            "{plan:?}"
        );
        assert_eq!(
            plan.iter().filter(|l| l.starts_with("SEARCH")).count(),
            2,
            "{plan:?}"
        );
        // Empty table: 0, not NULL.
        let n: i64 = conn.query_row(&sql, [], |r| r.get(0)).expect("bound");
        assert_eq!(n, 0);
    }

    #[test]
    fn handles_parse_and_refuse_paths() {
        assert_eq!(Handle::parse("primary").ok(), Some(Handle::Primary));
        assert_eq!(
            Handle::parse("persona:ab-12_C").ok(),
            Some(Handle::Persona("ab-12_C".into()))
        );
        for bad in [
            "persona:../x",
            "persona:",
            "persona:a/b",
            "/etc/passwd",
            "main",
        ] {
            assert!(Handle::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn archive_file_number_is_read_from_the_name_or_none() {
        assert_eq!(
            crate::archive::file::file_number(Path::new("/x/archive-000012.sqlite")),
            Some(12)
        );
        assert_eq!(
            crate::archive::file::file_number(Path::new("/x/archive-x.sqlite")),
            None
        );
    }
}
