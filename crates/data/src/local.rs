//! The store as the data client's in-process path ([`LocalData`]): each call is the store's own
//! typed call, its [`DataError`](crate::DataError) converted once at the end.

use crate::store::DataStore;
use daemonhost_data_client::{BatchOp, DataFuture, Handle, ListParams, LocalData, Page};
use serde_json::{Map, Value};

impl LocalData for DataStore {
    fn create<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        id: Option<String>,
        data: Map<String, Value>,
    ) -> DataFuture<'a, Value> {
        Box::pin(async move { Ok(DataStore::create(self, handle, collection, id, data).await?) })
    }

    fn read<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        id: &'a str,
    ) -> DataFuture<'a, Value> {
        Box::pin(async move { Ok(DataStore::read(self, handle, collection, id).await?) })
    }

    fn update<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        id: &'a str,
        data: Map<String, Value>,
        version: Option<i64>,
    ) -> DataFuture<'a, Value> {
        Box::pin(async move {
            Ok(DataStore::update(self, handle, collection, id, data, version).await?)
        })
    }

    fn delete<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        id: &'a str,
    ) -> DataFuture<'a, Value> {
        Box::pin(async move { Ok(DataStore::delete(self, handle, collection, id).await?) })
    }

    fn list<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        params: ListParams,
    ) -> DataFuture<'a, Page> {
        Box::pin(async move { Ok(DataStore::list(self, handle, collection, params).await?) })
    }

    fn count<'a>(
        &'a self,
        handle: &'a Handle,
        collection: &'a str,
        filter: Option<Value>,
    ) -> DataFuture<'a, u64> {
        Box::pin(async move { Ok(DataStore::count(self, handle, collection, filter).await?) })
    }

    fn batch<'a>(&'a self, handle: &'a Handle, ops: Vec<BatchOp>) -> DataFuture<'a, Vec<Value>> {
        Box::pin(async move { Ok(DataStore::batch(self, handle, ops).await?) })
    }

    fn snapshot_read<'a>(&'a self, persona: &'a str) -> DataFuture<'a, Option<Value>> {
        Box::pin(async move { Ok(DataStore::snapshot_read(self, persona).await?) })
    }

    fn snapshot_write<'a>(&'a self, persona: &'a str, snapshot: Value) -> DataFuture<'a, ()> {
        Box::pin(async move { Ok(DataStore::snapshot_write(self, persona, &snapshot).await?) })
    }
}
