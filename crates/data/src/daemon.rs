//! The `data` daemon: the command surface over the [`DataStore`], and the slot where the store
//! is published for in-process clients.

use crate::{
    BatchOp, BatchOutput, BatchReturn, DataError, DataStore, DbOptions, DeferredReport, Handle,
    ListParams, StoreConfig, schema,
};
use daemonhost_data_client::LocalSlot;

use daemonhost_protocol::params::{ParamError, ParamType, Params};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
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
    /// Quota of `primary.sqlite`, MiB (0 = unlimited, the default): a write that would grow the
    /// file past it answers `storage_full`. `data/quota` changes it at run time.
    pub max_db_mb: u64,
    /// Cap of each archive file, MiB (0 = none, the default); a full file is followed by the
    /// next one. `data/quota` changes it at run time.
    pub max_archive_file_mb: u64,
}

/// Largest quota accepted, MiB (16 TiB: SQLite's page limit at the default page size).
pub const MAX_QUOTA_MB: u64 = 16 * 1024 * 1024;

fn mb_to_bytes(mb: u64) -> u64 {
    mb.min(MAX_QUOTA_MB).saturating_mul(1024 * 1024)
}

fn bytes_to_mb(b: u64) -> u64 {
    b / (1024 * 1024)
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
            max_db_mb: bytes_to_mb(d.max_bytes),
            max_archive_file_mb: 0,
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
                    .param("limit", "non-negative integer", false, "page size, default 100, max 10000; 0 = count only")
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
            .command(
                CommandSpec::new("data/quota", "Storage quotas and the space primary uses; a param changes that quota until the host stops")
                    .param("maxDbMb", "non-negative integer", false, "quota of primary.sqlite, MiB (0 = unlimited)")
                    .param("maxArchiveFileMb", "non-negative integer", false, "cap of each archive file, MiB (0 = none)"),
            )
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
        sc.primary.max_bytes = mb_to_bytes(self.config.max_db_mb);
        sc.archive_max_file_bytes = mb_to_bytes(self.config.max_archive_file_mb);
        let store = DataStore::open(sc, schemas, Some(ctx.bus().clone())).await?;
        self.slot.set(Some(store.clone()));
        self.local.set(Some(Arc::new(store.clone())));
        // `health/status` details follow `primary`'s full state (whoever wrote: in-process
        // clients write without this daemon's handler).
        ctx.set_details(storage_details(&store));
        let (c2, s2) = (ctx.clone(), store.clone());
        let mut full = store.primary().full_watch();
        ctx.spawn(async move {
            while full.changed().await.is_ok() {
                c2.set_details(storage_details(&s2));
            }
        });
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

/// The data daemon's `health/status` details: `{storage: {full, maxDbMb, maxArchiveFileMb}}`.
fn storage_details(store: &DataStore) -> Value {
    json!({"storage": {
        "full": store.primary().is_full(),
        "maxDbMb": bytes_to_mb(store.primary().max_bytes()),
        "maxArchiveFileMb": bytes_to_mb(store.archive_files().max_file_bytes()),
    }})
}

fn quota_json(q: &crate::QuotaReport) -> Value {
    let u = &q.primary;
    json!({
        "maxDbMb": bytes_to_mb(u.max_bytes),
        "maxArchiveFileMb": bytes_to_mb(q.max_archive_file_bytes),
        "full": q.full,
        "primary": {
            "pageSize": u.page_size,
            "pages": u.pages,
            "freePages": u.free_pages,
            "maxPages": u.max_pages,
            "fileBytes": u.pages * u.page_size,
            "usedBytes": u.pages.saturating_sub(u.free_pages) * u.page_size,
        },
    })
}

/// The store handle a request names (`handle`, alias `dbHandle`; default `primary`).
fn handle_of(p: &Params) -> Result<Handle, DataError> {
    let named = match p.opt_str("handle")? {
        Some(h) => Some(("handle", h)),
        None => p.opt_str("dbHandle")?.map(|h| ("dbHandle", h)),
    };
    match named {
        None => Ok(Handle::Primary),
        // A string naming no handle is a rejected value: `validation`, naming the param.
        Some((k, h)) => Handle::parse(h).map_err(|e| ParamError::invalid(k, e.to_string()).into()),
    }
}

/// Operation `i` of a `data/batch`; its errors name it (`operations[3].collection: required`).
fn batch_op(i: usize, v: Value) -> Result<BatchOp, DataError> {
    let at = || format!("operations[{i}]");
    match v {
        Value::Object(m) => op_of(Params::from(m)).map_err(|e| e.within(&at()).into()),
        _ => Err(ParamError::wrong_type(at(), ParamType::Object).into()),
    }
}

fn op_of(mut o: Params) -> Result<BatchOp, ParamError> {
    let kind = match o.opt_str("operation")? {
        Some(k) => k,
        None => o
            .opt_str("operationType")?
            .ok_or_else(|| ParamError::missing("operation"))?,
    };
    #[derive(Clone, Copy)]
    enum Kind {
        Create,
        Update,
        Delete,
    }
    let kind = match kind {
        "create" => Kind::Create,
        "update" => Kind::Update,
        "delete" => Kind::Delete,
        _ => {
            return Err(ParamError::invalid(
                "operation",
                "must be create, update or delete",
            ));
        }
    };
    let collection = o.string("collection")?;
    Ok(match kind {
        Kind::Create => BatchOp::Create {
            id: o.opt_string("id")?,
            data: o.object("data")?,
            collection,
        },
        Kind::Update => BatchOp::Update {
            id: o.string("id")?,
            version: o.opt_i64("version")?,
            data: o.object("data")?,
            collection,
        },
        Kind::Delete => BatchOp::Delete {
            id: o.string("id")?,
            collection,
        },
    })
}

/// The `persona` param of the snapshot commands: a valid persona id.
fn persona_of(p: &Params) -> Result<String, DataError> {
    let id = p.str("persona")?;
    if daemonhost_data_client::is_persona_id(id) {
        Ok(id.to_owned())
    } else {
        Err(ParamError::invalid("persona", "must be 1-64 of [A-Za-z0-9_-]").into())
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
    let mut p = Params::new(params)?;
    let handle = handle_of(&p)?;
    match command {
        "data/create" => {
            let c = p.string("collection")?;
            let id = p.opt_string("id")?;
            let data = p.object("data")?;
            store.create(&handle, &c, id, data).await
        }
        "data/read" => {
            let c = p.str("collection")?;
            store.read(&handle, c, p.str("id")?).await
        }
        "data/update" => {
            let c = p.string("collection")?;
            let id = p.string("id")?;
            let version = p.opt_i64("version")?;
            let data = p.object("data")?;
            store.update(&handle, &c, &id, data, version).await
        }
        "data/delete" => {
            let c = p.str("collection")?;
            store.delete(&handle, c, p.str("id")?).await
        }
        "data/list" | "data/query" => {
            let c = p.string("collection")?;
            let order_by = match p.take("orderBy") {
                Some(o) => Some(o),
                None => p.take("sort"),
            };
            let lp = ListParams {
                filter: p.take("filter"),
                order_by,
                limit: p.take("limit"),
                cursor: p.opt_string("cursor")?,
                fields: p.take("fields"),
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
            let c = p.string("collection")?;
            let n = store.count(&handle, &c, p.take("filter")).await?;
            Ok(json!({ "collection": c, "count": n }))
        }
        "data/batch" => {
            let ret = match p.opt_str("return")? {
                None | Some("records") => BatchReturn::Records,
                Some("ids") => BatchReturn::Ids,
                Some("none") => BatchReturn::None,
                Some(_) => {
                    return Err(
                        ParamError::invalid("return", "must be records, ids or none").into(),
                    );
                }
            };
            let ops = p.array("operations")?;
            if ops.len() > MAX_BATCH {
                return Err(ParamError::invalid(
                    "operations",
                    format!("at most {MAX_BATCH} operations (got {})", ops.len()),
                )
                .into());
            }
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
            let c = p.string("collection")?;
            let n = store.truncate(&handle, &c).await?;
            Ok(json!({ "collection": c, "deleted": n }))
        }
        "data/schema" => {
            let set = store.schemas();
            match p.opt_str("collection")? {
                Some(c) => {
                    let s = set.get(c).ok_or_else(|| {
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
            let snapshot = Value::Object(p.object("snapshot")?);
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
                    "storageFull": s.storage_full.load(Ordering::Relaxed),
                    "groupReruns": s.group_reruns.load(Ordering::Relaxed),
                    "full": store.primary().is_full(),
                },
                "quota": quota_json(&store.quota().await?),
                "personasOpen": store.open_personas().await,
                "archiveFiles": store.archive_files().list().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "migrations": store.apply_report(),
                "recoveredArchiveRows": store.recovered_archive_rows(),
                "deferred": state.deferred.lock().clone(),
            }))
        }
        "data/quota" => {
            let db = p.opt_u64_range("maxDbMb", 0, MAX_QUOTA_MB)?;
            let arc = p.opt_u64_range("maxArchiveFileMb", 0, MAX_QUOTA_MB)?;
            let q = if db.is_none() && arc.is_none() {
                store.quota().await?
            } else {
                let q = store
                    .set_quota(db.map(mb_to_bytes), arc.map(mb_to_bytes))
                    .await?;
                tracing::info!(?db, ?arc, "storage quota changed (MiB)");
                ctx.set_details(storage_details(store));
                q
            };
            Ok(quota_json(&q))
        }
        other => Err(DataError::BadRequest(format!(
            "unknown data command '{}'",
            other.chars().take(64).collect::<String>()
        ))),
    }
}
