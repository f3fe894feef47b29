//! A runtime with the real data daemon on a temp dir: the fixture of the data, archive,
//! platform and persona tests and of the data benchmarks.
//!
//! Only for `tests/` and `benches/`: a unit test inside `crates/data/src` would see two
//! different copies of `daemonhost-data` (its own and the one this crate links).

use daemonhost_data::{DataConfig, DataDaemon, StoreSlot};
use daemonhost_data_client::{DataClient, LocalSlot};
use daemonhost_runtime::{Runtime, RuntimeBuilder, RuntimeConfig};
use serde_json::Value;
use std::path::Path;

/// The data daemon's handles, for the daemons `register` adds.
#[derive(Debug, Clone)]
pub struct Slots {
    /// Where the store appears once the daemon has started (the archive daemon, tests).
    pub store: StoreSlot,
    /// What the data client's in-process path reads.
    pub local: LocalSlot,
}

impl Slots {
    /// A data client on the in-process path while the daemon runs (`DataPath::Auto`).
    pub fn client(&self) -> DataClient {
        DataClient::new(self.local.clone())
    }
}

/// Build (not start) a runtime with `config`: the data daemon on `dir` (`DataConfig::new(dir)`),
/// then whatever `register` adds, given the data daemon's slots. Returns the runtime and the
/// store slot.
pub fn build(
    dir: &Path,
    config: RuntimeConfig,
    register: impl FnOnce(&mut RuntimeBuilder, &Slots),
) -> (Runtime, StoreSlot) {
    let mut b = RuntimeBuilder::new(config);
    let data = DataDaemon::new(DataConfig::new(dir));
    let slots = Slots {
        store: data.store_slot(),
        local: data.local_slot(),
    };
    b.register(data);
    register(&mut b, &slots);
    (b.build().expect("a valid plan"), slots.store)
}

/// [`build`], then start everything; returns once all daemons are READY.
///
/// # Panics
/// If the plan is invalid or any daemon fails to start (naming them and their causes).
pub async fn boot(
    dir: &Path,
    config: RuntimeConfig,
    register: impl FnOnce(&mut RuntimeBuilder, &Slots),
) -> (Runtime, StoreSlot) {
    let (rt, slot) = build(dir, config, register);
    let report = rt.start_all().await;
    assert!(
        report.failed.is_empty(),
        "daemons failed to start: {:?}",
        report.failed
    );
    (rt, slot)
}

/// Write `schema` as `DIR/schemas/NAME` (where the data daemon reads extra schemas), creating
/// the directory.
pub fn write_schema(dir: &Path, name: &str, schema: &Value) {
    let d = dir.join("schemas");
    std::fs::create_dir_all(&d).expect("create the schemas dir");
    std::fs::write(d.join(name), schema.to_string()).expect("write the schema file");
}
