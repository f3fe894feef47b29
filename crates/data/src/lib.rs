//! The data daemon: records in embedded SQLite behind named handles, validated against
//! declared schemas, with events after commit. The seed's DataDaemon, with its flaws fixed:
//!
//! | Seed | Here |
//! |---|---|
//! | one `Mutex<Connection>` per database, every query serialised | one writer thread per file (group commit) + a read-only reader pool, WAL ([`engine`]) |
//! | `dbPath` on every call | named handles `primary`, `archive`, `persona:<id>` ([`store::Handle`]) |
//! | SQLite opened and schemas registered in core init, blocking READY | core init opens and applies schemas without scanning tables; integrity check, `ANALYZE`, index builds and checkpoints run in deferred init |
//! | receiver-side event filtering | `data:<collection>:created|updated|deleted` published after COMMIT from the writer thread; the bus filters at publish time |
//! | row-by-row archiving through commands | batched, crash-safe moves on the writer thread ([`archive`]) |
//!
//! Module map: [`schema`] (schema files and scanning), [`value`] (JSON ↔ SQL per field rule),
//! [`query`] (filters, order, cursors), [`ddl`] (tables, indexes, migrations), [`engine`]
//! (threads and channels), [`store`] (the [`DataStore`] API other daemons use), [`archive`]
//! (the [`ArchiveDaemon`]).
//!
//! # Commands
//!
//! Every command takes an optional `handle` (`primary` default, `archive` read-only,
//! `persona:<id>`; `dbHandle` is accepted as an alias). Records are flat objects:
//! `{id, createdAt, updatedAt, version, ...fields}`.
//!
//! - `data/create {collection, id?, data}` → the record
//! - `data/read {collection, id}` → the record (`not_found` if absent)
//! - `data/update {collection, id, data, version?}` → the record (`validation` on version conflict)
//! - `data/delete {collection, id}` → the deleted record
//! - `data/list {collection, filter?, orderBy?, limit?, cursor?, fields?}` (alias `data/query`) →
//!   `{collection, items, count, nextCursor}`; `limit: 0` returns the matching count only
//! - `data/count {collection, filter?}` → `{collection, count}`
//! - `data/batch {operations: [{operation: create|update|delete, collection, id?, data?, version?}], return?}`
//!   → `{results: [record…]}`, all in one transaction. `return` picks the answer: `"records"`
//!   (default) as above, `"ids"` → `{ids: [id…], count}` (in operation order), `"none"` →
//!   `{count}`. The short answers spare building 1000s of records the caller does not read;
//!   events still carry the full records.
//! - `data/truncate {collection}` → `{collection, deleted}`
//! - `data/schema {collection?}` → one schema, or `{collections, problems}`
//! - `data/collections` (alias `data/list-collections`) → `{collections: [{name, fields, indexes, archive, source}], problems}`
//! - `data/stats` → per-handle counters (with `storageFull`, `groupReruns`, `full` and the space
//!   used), the schema migration report and deferred-init results
//! - `data/quota {maxDbMb?, maxArchiveFileMb?}` → the quotas and the space `primary` uses;
//!   either param changes that quota until the host stops (0 = unlimited). A write that does not
//!   fit answers `storage_full`; `health/status` details say `storage.full`.
#![forbid(unsafe_code)]

pub mod archive;
mod daemon;
pub mod ddl;
pub mod engine;
pub mod error;
pub mod field;
pub mod ids;
mod local;
pub mod query;
pub mod schema;
pub mod store;
pub mod value;

pub use archive::{ArchiveConfig, ArchiveDaemon, ArchiveStatus};
pub use daemon::{DataConfig, DataDaemon, DataState, MAX_BATCH, MAX_QUOTA_MB, StoreSlot};
pub use engine::{Db, DbOptions, Usage};
pub use error::DataError;
pub use schema::{CollectionSchema, FieldDef, FieldType, SchemaProblem, SchemaSet};
pub use store::{
    BatchOp, BatchOutput, BatchReturn, DataStore, DeferredReport, Handle, ListParams, Page,
    QuotaReport, StoreConfig,
};
