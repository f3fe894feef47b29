//! The archive fixtures of `data.rs` and `data_crash.rs`: the `logs` collection with an archive
//! rule, the archive daemon's test settings, and the invariant every row is in exactly one place.

use daemonhost_data::archive::CrashPoint;
use daemonhost_data::{ArchiveConfig, DataStore, Handle, ListParams, StoreSlot};
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// `logs`: archive once past 100 rows, keeping 50, oldest `seq` first.
pub fn logs_schema(dir: &Path) {
    daemonhost_testkit::data::write_schema(
        dir,
        "logs.json",
        &json!({"collection": "logs", "fields": [
            {"name": "seq", "type": "integer", "required": true, "indexed": true},
            {"name": "msg", "type": "string"}
        ], "archive": {"maxRows": 100, "rowsPerArchive": 50, "orderBy": "seq"}}),
    );
}

/// Only explicit runs archive (the interval is an hour); batches of 20 rows, files of 60.
pub fn archive_config(slot: &StoreSlot, crash: CrashPoint) -> ArchiveConfig {
    let mut cfg = ArchiveConfig::new(slot.clone());
    cfg.interval = Duration::from_secs(3600);
    cfg.batch_size = 20;
    cfg.max_file_rows = 60;
    cfg.crash = crash;
    cfg
}

/// Every id of `logs` under `h`, by `seq`, read in pages of 37 (so pages cross archive files).
pub async fn ids(store: &DataStore, h: &Handle) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let p = store
            .list(
                h,
                "logs",
                ListParams {
                    order_by: Some(json!("seq")),
                    limit: Some(json!(37)),
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        out.extend(
            p.items
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_owned()),
        );
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Every one of `total` rows is in exactly one place, hot or archived; returns (hot, archived).
pub async fn assert_conserved(store: &DataStore, total: usize) -> (usize, usize) {
    let hot = ids(store, &Handle::Primary).await;
    let cold = ids(store, &Handle::Archive).await;
    let h: HashSet<&String> = hot.iter().collect();
    let c: HashSet<&String> = cold.iter().collect();
    assert_eq!(h.len(), hot.len(), "duplicates in hot");
    assert_eq!(c.len(), cold.len(), "duplicates in archive");
    assert!(h.is_disjoint(&c), "rows in both places");
    assert_eq!(
        hot.len() + cold.len(),
        total,
        "count before = hot + archived after"
    );
    (hot.len(), cold.len())
}
