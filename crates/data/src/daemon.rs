//! The `data` daemon: the command surface over the [`DataStore`], and the slot where the store
//! is published for in-process clients.

use crate::{
    BatchOp, BatchOutput, BatchReturn, DataError, DataStore, DbOptions, DeferredReport, Handle,
    ListParams, StoreConfig, schema,
};
use daemonhost_data_client::LocalSlot;

use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Where the data daemon publishes its [`DataStore`] once core init is done, for daemons that
/// `requires("data")` (they read it in their own `start`, when data is READY). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StoreSlot(Arc<RwLock<Option<DataStore>>>);

impl StoreSlot {
    /// An empty slot.
    pub fn new() -> Self {
        StoreSlot::default()
    }
    /// The store, if the data daemon is running.
    pub fn get(&self) -> Option<DataStore> {
        self.0.read().clone()
    }
    fn set(&self, s: Option<DataStore>) {
        *self.0.write() = s;
    }
}

/// Settings of the [`DataDaemon`].
#[derive(Debug, Clone)]
pub struct DataConfig {
    /// The host's state directory (`DIR`): `DIR/data/primary.sqlite`, `DIR/data/archive/`,
    /// `DIR/personas/<id>/state.sqlite`, `DIR/schemas/`.
    pub data_dir: PathBuf,
    /// Reader threads for `primary`.
    pub readers: usize,
    /// Extra schema folder (default `DIR/schemas`).
    pub schema_dir: Option<PathBuf>,
    /// Writer queue bound (full → `overloaded`).
    pub writer_queue: usize,
    /// `primary`'s writer page cache, KiB (default 4 MiB): memory bound vs bulk-write speed.
    pub cache_kib: u32,
    /// `primary`'s page cache per reader, KiB (default 2 MiB).
    pub reader_cache_kib: u32,
    /// Most writes committed in one group transaction.
    pub max_group: usize,
}

impl DataConfig {
    /// Defaults under `data_dir`: 2 readers, queue 1024, groups of 256.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        // One source for the defaults: the engine's (the host's config printed 8 MiB here
        // while the engine and the docs said 4).
        let d = DbOptions::default();
        DataConfig {
            data_dir: data_dir.into(),
            readers: d.readers,
            schema_dir: None,
            writer_queue: d.writer_queue,
            cache_kib: d.cache_kib,
            reader_cache_kib: d.reader_cache_kib,
            max_group: d.max_group,
        }
    }
}

/// The data daemon (name `data`, prefix `data/`).
#[derive(Debug, Clone)]
pub struct DataDaemon {
    config: DataConfig,
    slot: StoreSlot,
    local: LocalSlot,
}

impl DataDaemon {
    /// A data daemon.
    pub fn new(config: DataConfig) -> Self {
        DataDaemon {
            config,
            slot: StoreSlot::new(),
            local: LocalSlot::new(),
        }
    }

    /// The slot the data client's in-process path reads ([`daemonhost_data_client::DataClient`]):
    /// the store while the daemon runs, empty otherwise.
    pub fn local_slot(&self) -> LocalSlot {
        self.local.clone()
    }

    /// The slot where the store appears once the daemon has started.
    pub fn store_slot(&self) -> StoreSlot {
        self.slot.clone()
    }
}

/// The running data daemon's state.
#[derive(Debug)]
pub struct DataState {
    store: DataStore,
    deferred: Mutex<Option<DeferredReport>>,
}

fn cmd(name: &str, desc: &str) -> CommandSpec {
    CommandSpec::new(name, desc).param(
        "handle",
        "string",
        false,
        "primary (default), archive, persona:<id>",
    )
}

impl Daemon for DataDaemon {
    type State = DataState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("data")
            .prefix("data/")
            .start_timeout(Duration::from_secs(30))
            .command(
                cmd("data/create", "Create a record; returns it with id, createdAt, updatedAt, version")
                    .param("collection", "string", true, "collection name")
                    .param("id", "string", false, "record id (UUID v7 if absent)")
                    .param("data", "object", true, "field values"),
            )
            .command(
                cmd("data/read", "Read one record by id")
                    .param("collection", "string", true, "collection name")
                    .param("id", "string", true, "record id"),
            )
            .command(
                cmd("data/update", "Update fields of a record; `version` makes it conditional")
                    .param("collection", "string", true, "collection name")
                    .param("id", "string", true, "record id")
                    .param("data", "object", true, "fields to change")
                    .param("version", "integer", false, "expected current version"),
            )
            .command(
                cmd("data/delete", "Delete a record; returns it")
                    .param("collection", "string", true, "collection name")
                    .param("id", "string", true, "record id"),
            )
            .command(
                cmd("data/list", "A page of records: filter ($eq $ne $gt $gte $lt $lte $in $nin $exists $contains), orderBy, limit, cursor, fields")
                    .param("collection", "string", true, "collection name")
                    .param("filter", "object", false, "{field: value | {$op: value}}")
                    .param("orderBy", "array|object|string", false, "[{field, direction: asc|desc}] (default createdAt desc)")
                    .param("limit", "integer", false, "page size, default 100, max 10000; 0 = count only")
                    .param("cursor", "string", false, "nextCursor of the previous page")
                    .param("fields", "array", false, "fields to return (id always)"),
            )
            .alias("data/query", "data/list")
            .command(
                cmd("data/count", "Count records matching a filter")
                    .param("collection", "string", true, "collection name")
                    .param("filter", "object", false, "as in data/list"),
            )
            .command(
                cmd("data/batch", "Several creates/updates/deletes in one transaction")
                    .param("operations", "array", true, "[{operation: create|update|delete, collection, id?, data?, version?}]")
                    .param("return", "string", false, "records (default: {results}), ids ({ids, count}) or none ({count}); events carry full records either way"),
            )
            .command(
                cmd("data/truncate", "Delete every record of a collection")
                    .param("collection", "string", true, "collection name"),
            )
            .command(
                CommandSpec::new("data/schema", "Loaded schemas and schema-file problems")
                    .param("collection", "string", false, "one collection"),
            )
            .command(
                CommandSpec::new("data/snapshot-read", "A persona's saved snapshot ({persona, snapshot: object|null})")
                    .param("persona", "string", true, "persona id ([A-Za-z0-9_-]{1,64})"),
            )
            .command(
                CommandSpec::new("data/snapshot-write", "Save a persona's snapshot in its own database, replacing the previous one")
                    .param("persona", "string", true, "persona id ([A-Za-z0-9_-]{1,64})")
                    .param("snapshot", "object", true, "the snapshot"),
            )
            .command(CommandSpec::new("data/collections", "Collections with their fields, indexes and archive rules"))
            .alias("data/list-collections", "data/collections")
            .command(CommandSpec::new("data/stats", "Database counters, migrations and deferred-init report"))
    }

    async fn start(&self, ctx: &Context) -> Result<DataState, BoxError> {
        let dir = self
            .config
            .schema_dir
            .clone()
            .unwrap_or_else(|| self.config.data_dir.join("schemas"));
        let schemas = ctx.spawn_cpu(move || schema::scan(Some(&dir))).await?;
        for p in &schemas.problems {
            tracing::warn!(file = %p.file, field = ?p.field, reason = %p.reason, "schema rejected");
        }
        let mut sc = StoreConfig::new(&self.config.data_dir);
        sc.primary.readers = self.config.readers;
        sc.primary.writer_queue = self.config.writer_queue;
        sc.primary.cache_kib = self.config.cache_kib;
        sc.primary.reader_cache_kib = self.config.reader_cache_kib;
        sc.primary.max_group = self.config.max_group;
        let store = DataStore::open(sc, schemas, Some(ctx.bus().clone())).await?;
        self.slot.set(Some(store.clone()));
        self.local.set(Some(Arc::new(store.clone())));
        Ok(DataState {
            store,
            deferred: Mutex::new(None),
        })
    }

    async fn start_deferred(&self, _ctx: &Context, state: &DataState) -> Result<(), BoxError> {
        let rep = state.store.run_deferred().await?;
        tracing::info!(report = ?rep, "data deferred init done");
        *state.deferred.lock() = Some(rep);
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &DataState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        dispatch(ctx, state, &req.command, req.params)
            .await
            .map_err(|e| e.to_daemon_error())
    }

    async fn stop(&self, _ctx: &Context, state: DataState) {
        self.slot.set(None);
        self.local.set(None);
        state.store.close().await;
    }
}

fn params_obj(p: Value) -> Result<Map<String, Value>, DataError> {
    match p {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(DataError::BadRequest("params must be an object".into())),
    }
}

fn req_str(p: &Map<String, Value>, k: &str) -> Result<String, DataError> {
    match p.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(DataError::BadRequest(format!("'{k}' must be a string"))),
        None => Err(DataError::BadRequest(format!("missing '{k}'"))),
    }
}

fn opt_str(p: &Map<String, Value>, k: &str) -> Result<Option<String>, DataError> {
    match p.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DataError::BadRequest(format!("'{k}' must be a string"))),
    }
}

fn data_obj(p: &mut Map<String, Value>) -> Result<Map<String, Value>, DataError> {
    match p.remove("data") {
        Some(Value::Object(m)) => Ok(m),
        None => Err(DataError::BadRequest("missing 'data'".into())),
        Some(_) => Err(DataError::BadRequest("'data' must be an object".into())),
    }
}

fn opt_version(p: &Map<String, Value>) -> Result<Option<i64>, DataError> {
    match p.get("version") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| DataError::BadRequest("'version' must be an integer".into())),
    }
}

fn handle_of(p: &Map<String, Value>) -> Result<Handle, DataError> {
    match opt_str(p, "handle")?.or(opt_str(p, "dbHandle")?) {
        None => Ok(Handle::Primary),
        Some(h) => Ok(Handle::parse(&h)?),
    }
}

fn batch_op(i: usize, v: Value) -> Result<BatchOp, DataError> {
    let mut o = params_obj(v)
        .map_err(|_| DataError::BadRequest(format!("operations[{i}] must be an object")))?;
    let kind = opt_str(&o, "operation")?
        .or(opt_str(&o, "operationType")?)
        .ok_or_else(|| DataError::BadRequest(format!("operations[{i}]: missing 'operation'")))?;
    let collection = req_str(&o, "collection")?;
    Ok(match kind.as_str() {
        "create" => BatchOp::Create {
            id: opt_str(&o, "id")?,
            data: data_obj(&mut o)?,
            collection,
        },
        "update" => BatchOp::Update {
            id: req_str(&o, "id")?,
            version: opt_version(&o)?,
            data: data_obj(&mut o)?,
            collection,
        },
        "delete" => BatchOp::Delete {
            id: req_str(&o, "id")?,
            collection,
        },
        _ => {
            return Err(DataError::BadRequest(format!(
                "operations[{i}]: operation must be create, update or delete"
            )));
        }
    })
}

/// The `persona` param of the snapshot commands: a valid persona id.
fn persona_of(p: &Map<String, Value>) -> Result<String, DataError> {
    match p.get("persona") {
        Some(Value::String(s)) if daemonhost_data_client::is_persona_id(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(DataError::validation(
            "persona_snapshot",
            "persona",
            "must be 1-64 of [A-Za-z0-9_-]",
        )),
        None | Some(Value::Null) => Err(DataError::validation(
            "persona_snapshot",
            "persona",
            "required",
        )),
        Some(_) => Err(DataError::BadRequest("persona: must be a string".into())),
    }
}

/// Most operations in one `data/batch`.
pub const MAX_BATCH: usize = 10_000;

/// Batches larger than this are parsed on the CPU pool (keeps every poll of this daemon short).
const INLINE_BATCH: usize = 256;

fn parse_ops(ops: Vec<Value>) -> Result<Vec<BatchOp>, DataError> {
    ops.into_iter()
        .enumerate()
        .map(|(i, v)| batch_op(i, v))
        .collect()
}

/// A JSON object that takes its values by move. (`json!` serialises every non-literal value
/// into a fresh copy: for 1000 records that copy cost more than writing them.)
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

async fn dispatch(
    ctx: &Context,
    state: &DataState,
    command: &str,
    params: Value,
) -> Result<Value, DataError> {
    let store = &state.store;
    let mut p = params_obj(params)?;
    let handle = handle_of(&p)?;
    match command {
        "data/create" => {
            let c = req_str(&p, "collection")?;
            let id = opt_str(&p, "id")?;
            let data = data_obj(&mut p)?;
            store.create(&handle, &c, id, data).await
        }
        "data/read" => {
            let c = req_str(&p, "collection")?;
            store.read(&handle, &c, &req_str(&p, "id")?).await
        }
        "data/update" => {
            let c = req_str(&p, "collection")?;
            let id = req_str(&p, "id")?;
            let version = opt_version(&p)?;
            let data = data_obj(&mut p)?;
            store.update(&handle, &c, &id, data, version).await
        }
        "data/delete" => {
            let c = req_str(&p, "collection")?;
            store.delete(&handle, &c, &req_str(&p, "id")?).await
        }
        "data/list" | "data/query" => {
            let c = req_str(&p, "collection")?;
            let lp = ListParams {
                filter: p.remove("filter"),
                order_by: p.remove("orderBy").or_else(|| p.remove("sort")),
                limit: p.remove("limit"),
                cursor: opt_str(&p, "cursor")?,
                fields: p.remove("fields"),
            };
            let page = store.list(&handle, &c, lp).await?;
            Ok(object([
                ("collection", Value::String(c)),
                ("items", Value::Array(page.items)),
                ("count", Value::from(page.count)),
                (
                    "nextCursor",
                    page.next_cursor.map_or(Value::Null, Value::String),
                ),
            ]))
        }
        "data/count" => {
            let c = req_str(&p, "collection")?;
            let n = store.count(&handle, &c, p.remove("filter")).await?;
            Ok(json!({ "collection": c, "count": n }))
        }
        "data/batch" => {
            let ret = match opt_str(&p, "return")?.as_deref() {
                None | Some("records") => BatchReturn::Records,
                Some("ids") => BatchReturn::Ids,
                Some("none") => BatchReturn::None,
                Some(_) => {
                    return Err(DataError::BadRequest(
                        "'return' must be records, ids or none".into(),
                    ));
                }
            };
            let ops = match p.remove("operations") {
                Some(Value::Array(a)) if a.len() <= MAX_BATCH => a,
                Some(Value::Array(_)) => {
                    return Err(DataError::BadRequest(format!(
                        "at most {MAX_BATCH} operations"
                    )));
                }
                _ => {
                    return Err(DataError::BadRequest(
                        "'operations' must be an array".into(),
                    ));
                }
            };
            let ops = if ops.len() > INLINE_BATCH {
                ctx.spawn_cpu(move || parse_ops(ops))
                    .await
                    .map_err(|e| DataError::BadRequest(format!("batch parsing failed: {e}")))??
            } else {
                parse_ops(ops)?
            };
            match store.batch_returning(&handle, ops, ret).await? {
                BatchOutput::Records(results) => Ok(object([("results", Value::Array(results))])),
                BatchOutput::Ids(ids) => Ok(object([
                    ("count", Value::from(ids.len())),
                    (
                        "ids",
                        Value::Array(ids.into_iter().map(Value::String).collect()),
                    ),
                ])),
                BatchOutput::Count(n) => Ok(object([("count", Value::from(n))])),
            }
        }
        "data/truncate" => {
            let c = req_str(&p, "collection")?;
            let n = store.truncate(&handle, &c).await?;
            Ok(json!({ "collection": c, "deleted": n }))
        }
        "data/schema" => {
            let set = store.schemas();
            match opt_str(&p, "collection")? {
                Some(c) => {
                    let s = set.get(&c).ok_or_else(|| {
                        DataError::UnknownCollection(c.chars().take(64).collect())
                    })?;
                    Ok(serde_json::to_value(s.as_ref()).unwrap_or_default())
                }
                None => Ok(serde_json::to_value(set.as_ref()).unwrap_or_default()),
            }
        }
        "data/collections" | "data/list-collections" => {
            let set = store.schemas();
            let list: Vec<Value> = set
                .collections
                .values()
                .map(|s| {
                    json!({
                        "name": s.collection,
                        "fields": s.fields.iter().map(|f| &f.name).collect::<Vec<_>>(),
                        "indexes": s.indexes.iter().map(|i| &i.name).collect::<Vec<_>>(),
                        "archive": s.archive,
                        "source": s.source,
                    })
                })
                .collect();
            Ok(json!({ "collections": list, "problems": set.problems }))
        }
        "data/snapshot-read" => {
            let persona = persona_of(&p)?;
            let snapshot = store.snapshot_read(&persona).await?;
            Ok(object([
                ("persona", Value::String(persona)),
                ("snapshot", snapshot.unwrap_or(Value::Null)),
            ]))
        }
        "data/snapshot-write" => {
            let persona = persona_of(&p)?;
            let snapshot = match p.remove("snapshot") {
                Some(v @ Value::Object(_)) => v,
                None | Some(Value::Null) => {
                    return Err(DataError::validation(
                        "persona_snapshot",
                        "snapshot",
                        "required",
                    ));
                }
                Some(_) => {
                    return Err(DataError::BadRequest("snapshot: must be an object".into()));
                }
            };
            store.snapshot_write(&persona, &snapshot).await?;
            Ok(object([("persona", Value::String(persona))]))
        }
        "data/stats" => {
            let s = store.primary().stats();
            Ok(json!({
                "primary": {
                    "path": store.primary().path().display().to_string(),
                    "writes": s.writes.load(Ordering::Relaxed),
                    "writeFailures": s.write_failures.load(Ordering::Relaxed),
                    "reads": s.reads.load(Ordering::Relaxed),
                    "overloaded": s.overloaded.load(Ordering::Relaxed),
                    "groups": s.groups.load(Ordering::Relaxed),
                    "writerBusyMs": s.writer_busy_us.load(Ordering::Relaxed) / 1000,
                    "commitMs": s.commit_us.load(Ordering::Relaxed) / 1000,
                    "checkpoints": s.checkpoints.load(Ordering::Relaxed),
                    "checkpointMs": s.checkpoint_us.load(Ordering::Relaxed) / 1000,
                },
                "personasOpen": store.open_personas().await,
                "archiveFiles": store.archive_files().list().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "migrations": store.apply_report(),
                "recoveredArchiveRows": store.recovered_archive_rows(),
                "deferred": state.deferred.lock().clone(),
            }))
        }
        other => Err(DataError::BadRequest(format!(
            "unknown data command '{}'",
            other.chars().take(64).collect::<String>()
        ))),
    }
}
