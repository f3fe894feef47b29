//! [`DataClient`] and its bound form [`Data`].
//!
//! A daemon that stores through the data daemon holds a `DataClient` from the catalog and
//! binds it to its router in `start`. Each call then takes one of two paths:
//!
//! - **in-process**, when the data daemon runs in this host and has published its store in the
//!   [`LocalSlot`]: a direct, typed call on the store (no JSON params built and parsed again, no
//!   hop through the data daemon's mailbox) — what the platform daemons did before there was a
//!   client;
//! - **routed**, otherwise: the same operation as a `data/*` request through the router, so the
//!   caller can run in a worker process or on another host, and the data daemon's queue, deadline
//!   and answer rules apply.
//!
//! The path is chosen per call (one uncontended read lock), so a daemon keeps working while the
//! data daemon restarts, and the same daemon code runs unchanged on a host without `data`.

use crate::error::DataClientError;
use crate::types::{BatchOp, Handle, ListParams, Page};
use daemonhost_runtime::Router;
use parking_lot::RwLock;
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future of a local data call.
pub type DataFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DataClientError>> + Send + 'a>>;

/// The store's operations as the in-process path calls them. Implemented by the data crate's
/// store; a test may implement it too.
pub trait LocalData: Send + Sync + 'static {
    /// Create a record.
    fn create<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        id: Option<String>,
        data: Map<String, Value>,
    ) -> DataFuture<'a, Value>;
    /// Read one record.
    fn read<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        id: &'a str,
    ) -> DataFuture<'a, Value>;
    /// Update fields of a record, optionally only from `version`.
    fn update<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        id: &'a str,
        data: Map<String, Value>,
        version: Option<i64>,
    ) -> DataFuture<'a, Value>;
    /// Delete a record; answers it.
    fn delete<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        id: &'a str,
    ) -> DataFuture<'a, Value>;
    /// A page of records.
    fn list<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        params: ListParams,
    ) -> DataFuture<'a, Page>;
    /// Count records matching a filter.
    fn count<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        filter: Option<Value>,
    ) -> DataFuture<'a, u64>;
    /// Several writes in one transaction; answers every record.
    fn batch<'a>(&'a self, handle: &'a Handle, ops: Vec<BatchOp>) -> DataFuture<'a, Vec<Value>>;
    /// A persona's snapshot, if one was saved.
    fn snapshot_read<'a>(&'a self, persona: &'a str) -> DataFuture<'a, Option<Value>>;
    /// Save a persona's snapshot, replacing the previous one.
    fn snapshot_write<'a>(&'a self, persona: &'a str, snapshot: Value) -> DataFuture<'a, ()>;
}

/// Where an in-process data daemon publishes its store while it runs. Cheap to clone.
#[derive(Clone, Default)]
pub struct LocalSlot(Arc<RwLock<Option<Arc<dyn LocalData>>>>);

impl std::fmt::Debug for LocalSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSlot")
            .field("published", &self.0.read().is_some())
            .finish()
    }
}

impl LocalSlot {
    /// An empty slot.
    pub fn new() -> Self {
        LocalSlot::default()
    }
    /// Publish (or, with `None`, withdraw) the store.
    pub fn set(&self, store: Option<Arc<dyn LocalData>>) {
        *self.0.write() = store;
    }
    /// The store, when published.
    pub fn get(&self) -> Option<Arc<dyn LocalData>> {
        self.0.read().clone()
    }
}

/// Which path calls take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// In-process when the local store is published, routed otherwise (the default).
    Auto,
    /// Always through the router (`data/*`), as on a host without `data`.
    Routed,
}

/// The client a daemon is configured with. Bind it to a router in `start`.
#[derive(Debug, Clone)]
pub struct DataClient {
    slot: LocalSlot,
    path: DataPath,
}

impl DataClient {
    /// A client that calls the store in `slot` when it is published, the router otherwise.
    pub fn new(slot: LocalSlot) -> Self {
        DataClient {
            slot,
            path: DataPath::Auto,
        }
    }

    /// A client that always routes (a host without a local data daemon).
    pub fn routed() -> Self {
        DataClient {
            slot: LocalSlot::new(),
            path: DataPath::Routed,
        }
    }

    /// Force a path (benchmarks and tests compare both).
    pub fn with_path(mut self, path: DataPath) -> Self {
        self.path = path;
        self
    }

    /// Bind to the router the routed path asks through.
    pub fn bind(&self, router: &Router) -> Data {
        Data {
            slot: self.slot.clone(),
            path: self.path,
            router: router.clone(),
        }
    }
}

/// A bound client: the calls a daemon makes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Data {
    slot: LocalSlot,
    path: DataPath,
    router: Router,
}

fn base(handle: &Handle, collection: &str) -> Map<String, Value> {
    let mut o = Map::new();
    if *handle != Handle::Primary {
        o.insert("handle".into(), handle.as_string().into());
    }
    o.insert("collection".into(), collection.into());
    o
}

impl Data {
    fn local(&self) -> Option<Arc<dyn LocalData>> {
        match self.path {
            DataPath::Auto => self.slot.get(),
            DataPath::Routed => None,
        }
    }

    async fn ask(
        &self,
        command: &str,
        params: Map<String, Value>,
    ) -> Result<Value, DataClientError> {
        self.router
            .ask(command, Value::Object(params))
            .await
            .map_err(DataClientError::from_routed)
    }

    /// Whether calls take the in-process path now.
    pub fn is_local(&self) -> bool {
        self.local().is_some()
    }

    /// Create a record; answers it with `id`, `createdAt`, `updatedAt`, `version`.
    pub async fn create(
        &self,
        handle: &Handle,
        collection: &str,
        id: Option<String>,
        data: Map<String, Value>,
    ) -> Result<Value, DataClientError> {
        if let Some(l) = self.local() {
            return l.create(handle, collection, id, data).await;
        }
        let mut o = base(handle, collection);
        if let Some(id) = id {
            o.insert("id".into(), id.into());
        }
        o.insert("data".into(), Value::Object(data));
        self.ask("data/create", o).await
    }

    /// Read one record (`NotFound` if absent).
    pub async fn read(
        &self,
        handle: &Handle,
        collection: &str,
        id: &str,
    ) -> Result<Value, DataClientError> {
        if let Some(l) = self.local() {
            return l.read(handle, collection, id).await;
        }
        let mut o = base(handle, collection);
        o.insert("id".into(), id.into());
        self.ask("data/read", o).await
    }

    /// Update fields of a record; with `version`, only if it is still that version.
    pub async fn update(
        &self,
        handle: &Handle,
        collection: &str,
        id: &str,
        data: Map<String, Value>,
        version: Option<i64>,
    ) -> Result<Value, DataClientError> {
        if let Some(l) = self.local() {
            return l.update(handle, collection, id, data, version).await;
        }
        let mut o = base(handle, collection);
        o.insert("id".into(), id.into());
        o.insert("data".into(), Value::Object(data));
        if let Some(v) = version {
            o.insert("version".into(), v.into());
        }
        self.ask("data/update", o).await
    }

    /// Delete a record; answers it.
    pub async fn delete(
        &self,
        handle: &Handle,
        collection: &str,
        id: &str,
    ) -> Result<Value, DataClientError> {
        if let Some(l) = self.local() {
            return l.delete(handle, collection, id).await;
        }
        let mut o = base(handle, collection);
        o.insert("id".into(), id.into());
        self.ask("data/delete", o).await
    }

    /// A page of records.
    pub async fn list(
        &self,
        handle: &Handle,
        collection: &str,
        params: ListParams,
    ) -> Result<Page, DataClientError> {
        if let Some(l) = self.local() {
            return l.list(handle, collection, params).await;
        }
        let mut o = base(handle, collection);
        params.write_wire(&mut o);
        let mut v = self.ask("data/list", o).await?;
        let items = match v.get_mut("items").map(Value::take) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        Ok(Page {
            count: v
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(items.len() as u64),
            next_cursor: v
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned),
            items,
        })
    }

    /// Count records matching a filter.
    pub async fn count(
        &self,
        handle: &Handle,
        collection: &str,
        filter: Option<Value>,
    ) -> Result<u64, DataClientError> {
        if let Some(l) = self.local() {
            return l.count(handle, collection, filter).await;
        }
        let mut o = base(handle, collection);
        if let Some(f) = filter {
            o.insert("filter".into(), f);
        }
        let v = self.ask("data/count", o).await?;
        Ok(v.get("count").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Several writes in one transaction; answers every record, in operation order.
    pub async fn batch(
        &self,
        handle: &Handle,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<Value>, DataClientError> {
        if let Some(l) = self.local() {
            return l.batch(handle, ops).await;
        }
        let mut o = Map::new();
        if *handle != Handle::Primary {
            o.insert("handle".into(), handle.as_string().into());
        }
        o.insert(
            "operations".into(),
            Value::Array(ops.iter().map(BatchOp::to_wire).collect()),
        );
        let mut v = self.ask("data/batch", o).await?;
        match v.get_mut("results").map(Value::take) {
            Some(Value::Array(a)) => Ok(a),
            _ => Ok(Vec::new()),
        }
    }

    /// A persona's snapshot (`None` if it never saved one).
    pub async fn snapshot_read(&self, persona: &str) -> Result<Option<Value>, DataClientError> {
        if let Some(l) = self.local() {
            return l.snapshot_read(persona).await;
        }
        let mut o = Map::new();
        o.insert("persona".into(), persona.into());
        let mut v = self.ask("data/snapshot-read", o).await?;
        Ok(match v.get_mut("snapshot").map(Value::take) {
            None | Some(Value::Null) => None,
            Some(s) => Some(s),
        })
    }

    /// Save a persona's snapshot, replacing the previous one.
    pub async fn snapshot_write(
        &self,
        persona: &str,
        snapshot: Value,
    ) -> Result<(), DataClientError> {
        if let Some(l) = self.local() {
            return l.snapshot_write(persona, snapshot).await;
        }
        let mut o = Map::new();
        o.insert("persona".into(), persona.into());
        o.insert("snapshot".into(), snapshot);
        self.ask("data/snapshot-write", o).await.map(|_| ())
    }
}
