//! Data daemon integration tests through the router: field rules, CRUD and versions, events
//! after commit, filters/order/pagination against a reference, injection attempts, index use,
//! startup queueing, persona handles, schema files, and archiving.

mod common;

use common::{archive_config, assert_conserved, ids, logs_schema};
use daemonhost_data::archive::CrashPoint;
use daemonhost_data::{ArchiveDaemon, DataStore, Handle, ListParams, StoreSlot};
use daemonhost_runtime::bus::Delivery;
use daemonhost_runtime::{ErrorCode, Runtime};
use daemonhost_testkit::data::write_schema;
use daemonhost_testkit::{quiet_config, within};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

async fn boot(dir: &Path) -> (Runtime, StoreSlot) {
    daemonhost_testkit::data::boot(dir, quiet_config(), |_, _| {}).await
}

async fn ask(rt: &Runtime, cmd: &str, p: Value) -> Result<Value, daemonhost_runtime::DaemonError> {
    rt.router().ask(cmd, p).await
}

async fn ok(rt: &Runtime, cmd: &str, p: Value) -> Value {
    match ask(rt, cmd, p.clone()).await {
        Ok(v) => v,
        Err(e) => panic!("{cmd} {p}: {e}"),
    }
}

async fn user(rt: &Runtime, name: &str) -> String {
    let u = ok(
        rt,
        "data/create",
        json!({"collection": "users", "data": {"type": "human", "displayName": name, "uniqueId": name}}),
    )
    .await;
    u["id"].as_str().expect("id").to_owned()
}

async fn room(rt: &Runtime, owner: &str, name: &str) -> String {
    let r = ok(
        rt,
        "data/create",
        json!({"collection": "rooms", "data": {"name": name, "ownerId": owner, "uniqueId": name}}),
    )
    .await;
    r["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn data_field_rules_reject_bad_data_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, _) = boot(dir.path()).await;
    let owner = user(&rt, "alice").await;
    let room_id = room(&rt, &owner, "general").await;
    let good_msg = json!({"roomId": room_id, "senderId": owner, "content": {"text": "hi"},
                          "timestamp": "2026-01-01T00:00:00Z"});
    ok(
        &rt,
        "data/create",
        json!({"collection": "chat_messages", "data": good_msg}),
    )
    .await;

    let mut cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "users",
            json!({"type": "human"}),
            "displayName",
            "is required",
        ),
        (
            "users",
            json!({"type": "robot", "displayName": "x"}),
            "type",
            "not one of",
        ),
        (
            "users",
            json!({"type": "human", "displayName": "x".repeat(101)}),
            "displayName",
            "maxLength 100",
        ),
        (
            "users",
            json!({"type": "human", "displayName": 5}),
            "displayName",
            "expected string",
        ),
        (
            "users",
            json!({"type": "human", "displayName": null}),
            "displayName",
            "must not be null",
        ),
        (
            "users",
            json!({"type": "human", "displayName": "x", "intelligenceLevel": 1.5}),
            "intelligenceLevel",
            "expected integer",
        ),
        (
            "users",
            json!({"type": "human", "displayName": "x", "lastActiveAt": "yesterday"}),
            "lastActiveAt",
            "RFC 3339",
        ),
        (
            "users",
            json!({"type": "human", "displayName": "x", "uniqueId": "alice"}),
            "uniqueId",
            "must be unique",
        ),
        (
            "users",
            json!({"type": "human", "displayName": "x", "colour": "red"}),
            "colour",
            "unknown field",
        ),
        (
            "users",
            json!({"type": "human", "displayName": "x", "version": 7}),
            "version",
            "set by the store",
        ),
        (
            "rooms",
            json!({"name": "r", "ownerId": "nobody"}),
            "ownerId",
            "does not exist",
        ),
        (
            "sessions",
            json!({"shared": "yes"}),
            "shared",
            "expected boolean",
        ),
        (
            "training_examples",
            json!({"messages": [], "quality": "high"}),
            "quality",
            "expected number",
        ),
    ];
    let mut bad_msg = good_msg.clone();
    bad_msg["timestamp"] = json!("2026-02-30T00:00:00Z");
    cases.push(("chat_messages", bad_msg, "timestamp", "RFC 3339"));
    for (coll, data, field, rule) in cases {
        let e = ask(
            &rt,
            "data/create",
            json!({"collection": coll, "data": data}),
        )
        .await
        .expect_err("must be rejected");
        assert_eq!(e.code, ErrorCode::Validation, "{coll} {field}: {e}");
        assert!(
            e.message.contains(&format!("{coll}.{field}")) && e.message.contains(rule),
            "{coll} {field}: message '{}' should name the field and '{rule}'",
            e.message
        );
    }
    // A uuid field (from an extra schema) and a duplicate id.
    let e = ask(
        &rt,
        "data/create",
        json!({"collection": "users", "id": owner, "data": {"type": "human", "displayName": "y"}}),
    )
    .await
    .expect_err("dup id");
    assert!(e.message.contains("already exists"), "{e}");
    rt.shutdown().await;
}

#[tokio::test]
async fn data_crud_versions_and_defaults() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, _) = boot(dir.path()).await;
    let u = ok(
        &rt,
        "data/create",
        json!({"collection": "users", "data": {"type": "persona", "displayName": "Helper"}}),
    )
    .await;
    let id = u["id"].as_str().expect("id").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok_and(|x| x.get_version_num() == 7));
    assert_eq!(u["version"], 1);
    assert_eq!(u["status"], "offline", "default applied");
    assert_eq!(u["createdAt"], u["updatedAt"]);
    let r = ok(&rt, "data/read", json!({"collection": "users", "id": id})).await;
    assert_eq!(r, u);
    let up = ok(
        &rt,
        "data/update",
        json!({"collection": "users", "id": id, "version": 1, "data": {"status": "online"}}),
    )
    .await;
    assert_eq!(up["version"], 2);
    assert_eq!(up["status"], "online");
    let e = ask(
        &rt,
        "data/update",
        json!({"collection": "users", "id": id, "version": 1, "data": {"status": "away"}}),
    )
    .await
    .expect_err("stale version");
    assert_eq!(e.code, ErrorCode::Validation);
    assert!(e.message.contains("version conflict"), "{e}");
    let e = ask(
        &rt,
        "data/update",
        json!({"collection": "users", "id": id, "data": {"displayName": null}}),
    )
    .await
    .expect_err("required null");
    assert!(e.message.contains("displayName"), "{e}");
    let d = ok(&rt, "data/delete", json!({"collection": "users", "id": id})).await;
    assert_eq!(d["version"], 2);
    let e = ask(&rt, "data/read", json!({"collection": "users", "id": id}))
        .await
        .expect_err("gone");
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = ask(&rt, "data/delete", json!({"collection": "users", "id": id}))
        .await
        .expect_err("gone");
    assert_eq!(e.code, ErrorCode::NotFound);
    // Count and truncate.
    for i in 0..5 {
        user(&rt, &format!("u{i}")).await;
    }
    assert_eq!(
        ok(&rt, "data/count", json!({"collection": "users"})).await["count"],
        5
    );
    assert_eq!(
        ok(&rt, "data/truncate", json!({"collection": "users"})).await["deleted"],
        5
    );
    assert_eq!(
        ok(&rt, "data/count", json!({"collection": "users"})).await["count"],
        0
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn data_events_only_after_commit_and_never_for_rolled_back_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, slot) = boot(dir.path()).await;
    let store = slot.get().expect("store");
    let mut sub = rt.bus().subscribe("data:*").expect("sub");
    let id = user(&rt, "bob").await;
    // The event arrives, and when it does the record is already readable (committed).
    let ev = within("bob's event", sub.recv()).await.expect("open");
    let Delivery::Event(ev) = ev else {
        panic!("lagged")
    };
    assert_eq!(ev.topic(), "data:users:created");
    assert_eq!(ev.data()["id"], id.as_str());
    store
        .read(&Handle::Primary, "users", &id)
        .await
        .expect("visible at event time");

    // A batch whose last op fails: nothing committed, no events.
    let e = ask(&rt, "data/batch", json!({"operations": [
        {"operation": "create", "collection": "users", "data": {"type": "human", "displayName": "c1", "uniqueId": "c1"}},
        {"operation": "update", "collection": "users", "id": id, "data": {"status": "busy"}},
        {"operation": "create", "collection": "users", "data": {"type": "human", "displayName": "dup", "uniqueId": "bob"}}
    ]})).await.expect_err("batch fails");
    assert!(e.message.contains("operations[2]"), "{e}");
    assert_eq!(
        ok(&rt, "data/count", json!({"collection": "users"})).await["count"],
        1
    );
    assert_eq!(
        ok(&rt, "data/read", json!({"collection": "users", "id": id})).await["status"],
        "offline"
    );
    assert!(sub.try_recv().is_err(), "no event for a rolled-back batch");

    // A good batch: one event per op, in order, after commit.
    let r = ok(&rt, "data/batch", json!({"operations": [
        {"operation": "create", "collection": "users", "data": {"type": "human", "displayName": "c1", "uniqueId": "c1"}},
        {"operation": "update", "collection": "users", "id": id, "data": {"status": "busy"}},
        {"operation": "delete", "collection": "users", "id": id}
    ]})).await;
    assert_eq!(r["results"].as_array().map(Vec::len), Some(3));
    let mut topics = Vec::new();
    for _ in 0..3 {
        match within("the batch's events", sub.recv()).await {
            Some(Delivery::Event(e)) => topics.push(e.topic().to_owned()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        topics,
        [
            "data:users:created",
            "data:users:updated",
            "data:users:deleted"
        ]
    );
    // Events are filtered at publish time: a narrower subscriber sees only its topic.
    let mut rooms_only = rt.bus().subscribe("data:rooms:*").expect("sub");
    let carol = user(&rt, "carol").await;
    // One publish reaches every matching subscriber: once the wide one has carol's event, the
    // narrow one would have it too.
    match within("carol's event", sub.recv()).await {
        Some(Delivery::Event(e)) => assert_eq!(e.data()["id"], carol.as_str()),
        other => panic!("{other:?}"),
    }
    assert!(
        rooms_only.try_recv().is_err(),
        "a users event reached data:rooms:*"
    );
    rt.shutdown().await;
}

fn items_schema(dir: &Path) {
    write_schema(
        dir,
        "items.json",
        &json!({"collection": "items", "fields": [
            {"name": "a", "type": "integer", "indexed": true},
            {"name": "s", "type": "string"},
            {"name": "tag", "type": "enum", "values": ["red", "green", "blue"], "indexed": true},
            {"name": "tags", "type": "json"}
        ]}),
    );
}

#[derive(Debug, Clone)]
struct Item {
    id: String,
    a: Option<i64>,
    s: String,
    tag: &'static str,
}

#[tokio::test]
async fn data_list_filters_order_and_pages_match_a_reference() {
    let dir = tempfile::tempdir().expect("tmp");
    items_schema(dir.path());
    let (rt, _) = boot(dir.path()).await;
    let tags = ["red", "green", "blue"];
    let mut items = Vec::new();
    let mut ops = Vec::new();
    for i in 0..120i64 {
        let a = if i % 11 == 0 {
            None
        } else {
            Some((i * 37) % 23)
        };
        let it = Item {
            id: format!("it{i:03}"),
            a,
            s: format!("name-{}", (i * 7) % 13),
            tag: tags[(i % 3) as usize],
        };
        ops.push(
            json!({"operation": "create", "collection": "items", "id": it.id,
            "data": {"a": it.a, "s": it.s, "tag": it.tag, "tags": [it.tag, "all"]}}),
        );
        items.push(it);
    }
    ok(&rt, "data/batch", json!({"operations": ops})).await;

    type Pred = fn(&Item) -> bool;
    let cases: Vec<(Value, Pred)> = vec![
        (json!({}), |_| true),
        (json!({"a": 5}), |i| i.a == Some(5)),
        (json!({"a": null}), |i| i.a.is_none()),
        (json!({"a": {"$ne": 5}}), |i| i.a != Some(5)),
        (json!({"a": {"$gt": 10, "$lte": 20}}), |i| {
            i.a.is_some_and(|a| a > 10 && a <= 20)
        }),
        (json!({"a": {"$gte": 3}, "tag": "red"}), |i| {
            i.a.is_some_and(|a| a >= 3) && i.tag == "red"
        }),
        (json!({"a": {"$lt": 4}}), |i| i.a.is_some_and(|a| a < 4)),
        (json!({"tag": {"$in": ["red", "blue"]}}), |i| {
            i.tag != "green"
        }),
        (json!({"tag": {"$nin": ["red"]}}), |i| i.tag != "red"),
        (json!({"a": {"$exists": false}}), |i| i.a.is_none()),
        (json!({"s": {"$contains": "-1"}}), |i| i.s.contains("-1")),
        (json!({"tags": {"$contains": "green"}}), |i| {
            i.tag == "green"
        }),
    ];
    type Cmp = fn(&Item, &Item) -> std::cmp::Ordering;
    let orders: Vec<(Value, Cmp)> = vec![
        (json!([{"field": "a", "direction": "asc"}]), |x, y| {
            x.a.cmp(&y.a).then(x.id.cmp(&y.id))
        }),
        (json!([{"field": "a", "direction": "desc"}]), |x, y| {
            y.a.cmp(&x.a).then(y.id.cmp(&x.id))
        }),
        (
            json!([{"field": "tag", "direction": "asc"}, {"field": "s", "direction": "desc"}]),
            |x, y| x.tag.cmp(y.tag).then(y.s.cmp(&x.s)).then(y.id.cmp(&x.id)),
        ),
    ];
    for (filter, pred) in &cases {
        for (order, cmp) in &orders {
            let mut want: Vec<&Item> = items.iter().filter(|i| pred(i)).collect();
            want.sort_by(|x, y| cmp(x, y));
            let want: Vec<String> = want.iter().map(|i| i.id.clone()).collect();
            let mut got = Vec::new();
            let mut cursor = Value::Null;
            for _ in 0..200 {
                let page = ok(
                    &rt,
                    "data/list",
                    json!({"collection": "items", "filter": filter,
                    "orderBy": order, "limit": 7, "cursor": cursor, "fields": ["a"]}),
                )
                .await;
                for it in page["items"].as_array().expect("items") {
                    assert!(it.get("s").is_none(), "projection");
                    got.push(it["id"].as_str().expect("id").to_owned());
                }
                assert_eq!(
                    page["count"].as_u64(),
                    page["items"].as_array().map(|a| a.len() as u64)
                );
                cursor = page["nextCursor"].clone();
                if cursor.is_null() {
                    break;
                }
            }
            assert_eq!(got, want, "filter {filter} order {order}");
            let n = ok(
                &rt,
                "data/count",
                json!({"collection": "items", "filter": filter}),
            )
            .await;
            assert_eq!(n["count"].as_u64(), Some(want.len() as u64));
        }
    }
    // A cursor from one ordering is refused for another.
    let p = ok(
        &rt,
        "data/list",
        json!({"collection": "items", "limit": 1, "orderBy": "a"}),
    )
    .await;
    let e = ask(
        &rt,
        "data/list",
        json!({"collection": "items", "limit": 1, "orderBy": "-a", "cursor": p["nextCursor"]}),
    )
    .await
    .expect_err("wrong cursor");
    assert_eq!(e.code, ErrorCode::BadRequest);
    rt.shutdown().await;
}

#[tokio::test]
async fn data_injection_through_every_identifier_position_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    items_schema(dir.path());
    let (rt, _) = boot(dir.path()).await;
    ok(
        &rt,
        "data/create",
        json!({"collection": "items", "data": {"a": 1}}),
    )
    .await;
    let evil = "a\" = 1; DROP TABLE items; --";
    let attempts = vec![
        (
            "data/create",
            json!({"collection": "items; DROP TABLE items", "data": {"a": 1}}),
        ),
        (
            "data/create",
            json!({"collection": "items", "data": {evil: 1}}),
        ),
        (
            "data/update",
            json!({"collection": "items", "id": "x", "data": {evil: 1}}),
        ),
        (
            "data/read",
            json!({"collection": "sqlite_master", "id": "x"}),
        ),
        ("data/list", json!({"collection": "_schemas"})),
        (
            "data/list",
            json!({"collection": "items", "filter": {evil: 1}}),
        ),
        (
            "data/list",
            json!({"collection": "items", "filter": {"a": {"$eq); DROP TABLE items; --": 1}}}),
        ),
        (
            "data/list",
            json!({"collection": "items", "orderBy": [{"field": evil}]}),
        ),
        (
            "data/list",
            json!({"collection": "items", "orderBy": [{"field": "a", "direction": "asc; DROP TABLE items"}]}),
        ),
        ("data/list", json!({"collection": "items", "orderBy": evil})),
        (
            "data/list",
            json!({"collection": "items", "fields": [evil]}),
        ),
        (
            "data/list",
            json!({"collection": "items", "cursor": "5b2261222c315d3b2044524f50"}),
        ),
        (
            "data/list",
            json!({"collection": "items", "handle": "persona:../../etc"}),
        ),
        (
            "data/list",
            json!({"collection": "items", "handle": "/tmp/evil.sqlite"}),
        ),
        (
            "data/count",
            json!({"collection": "items", "filter": {"a": {"$in": "1) OR (1=1"}}}),
        ),
        ("data/truncate", json!({"collection": "items\" --"})),
        (
            "data/batch",
            json!({"operations": [{"operation": "create", "collection": "x\"y", "data": {}}]}),
        ),
    ];
    for (cmd, p) in attempts {
        let e = ask(&rt, cmd, p.clone()).await.expect_err("must be refused");
        assert!(
            matches!(e.code, ErrorCode::Validation | ErrorCode::BadRequest),
            "{cmd} {p}: {e}"
        );
    }
    // Values are parameters: an evil value is stored verbatim and harms nothing.
    let r = ok(
        &rt,
        "data/create",
        json!({"collection": "items", "data": {"s": "'); DROP TABLE items; --"}}),
    )
    .await;
    let back = ok(
        &rt,
        "data/list",
        json!({"collection": "items", "filter": {"s": "'); DROP TABLE items; --"}}),
    )
    .await;
    assert_eq!(back["items"][0]["id"], r["id"]);
    assert_eq!(
        ok(&rt, "data/count", json!({"collection": "items"})).await["count"],
        2
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn data_filters_on_indexed_fields_use_the_index() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, slot) = boot(dir.path()).await;
    let store: DataStore = slot.get().expect("store");
    let plan = store
        .explain_list(
            "chat_messages",
            ListParams {
                filter: Some(json!({"roomId": "r1"})),
                order_by: Some(json!([{"field": "timestamp", "direction": "desc"}])),
                ..Default::default()
            },
        )
        .await
        .expect("explain");
    let text = plan.join(" | ");
    assert!(
        text.contains("idx_chat_messages_roomId_timestamp"),
        "{text}"
    );
    assert!(!text.contains("TEMP B-TREE"), "no sort step: {text}");
    let plan = store
        .explain_list(
            "users",
            ListParams {
                filter: Some(json!({"status": "online"})),
                ..Default::default()
            },
        )
        .await
        .expect("explain");
    assert!(plan.join(" ").contains("USING INDEX"), "{plan:?}");
    rt.shutdown().await;
}

#[tokio::test]
async fn data_requests_before_ready_queue_and_are_answered() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, _) = daemonhost_testkit::data::build(dir.path(), quiet_config(), |_, _| {});
    let router = rt.router();
    let early = tokio::spawn(async move {
        router
            .ask(
                "data/create",
                json!({"collection": "system_config", "id": "default", "data": {"name": "x"}}),
            )
            .await
    });
    daemonhost_testkit::eventually("the early request in the startup queue", async || {
        rt.reports()[0].queue_depth == 1
    })
    .await;
    rt.start_all().await;
    let r = early.await.expect("join").expect("answered after READY");
    assert_eq!(r["id"], "default");
    let rep = rt.reports();
    let data = rep.iter().find(|r| r.name == "data").expect("report");
    assert_eq!(data.queued_before_ready, 1);
    assert!(
        data.longest_poll_ms < 50.0,
        "longest poll {}",
        data.longest_poll_ms
    );
    rt.shutdown().await;
}

/// Tables of a persona database, read after the store closed it (snapshots close it at once).
fn persona_tables(dir: &std::path::Path, id: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join(format!("personas/{id}/state.sqlite")))
        .expect("open persona db");
    let mut st = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .expect("prepare");
    st.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test]
async fn a_persona_database_holds_only_its_snapshot_and_the_collections_written_through_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, _) = boot(dir.path()).await;
    ok(
        &rt,
        "data/snapshot-write",
        json!({"persona": "p-1", "snapshot": {"personaId": "p-1"}}),
    )
    .await;
    let tables = persona_tables(dir.path(), "p-1");
    assert!(
        tables.contains(&"persona_snapshot".to_owned()),
        "{tables:?}"
    );
    for platform in [
        "users",
        "chat_messages",
        "rooms",
        "sessions",
        "system_config",
    ] {
        assert!(
            !tables.contains(&platform.to_owned()),
            "{platform} in {tables:?}"
        );
    }
    // A collection used through the handle gets its table then, and only that one.
    ok(
        &rt,
        "data/create",
        json!({"collection": "system_config", "handle": "persona:p-1", "data": {"name": "mine"}}),
    )
    .await;
    let page = ok(
        &rt,
        "data/list",
        json!({"collection": "system_config", "handle": "persona:p-1"}),
    )
    .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    rt.shutdown().await;
    let tables = persona_tables(dir.path(), "p-1");
    assert!(tables.contains(&"system_config".to_owned()), "{tables:?}");
    assert!(!tables.contains(&"chat_messages".to_owned()), "{tables:?}");
    assert!(!tables.contains(&"users".to_owned()), "{tables:?}");
}

#[tokio::test]
async fn data_persona_handles_are_separate_and_path_safe() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, _) = boot(dir.path()).await;
    let mut sub = rt.bus().subscribe("data:*").expect("sub");
    let r = ok(
        &rt,
        "data/create",
        json!({"collection": "system_config", "handle": "persona:p-1", "data": {"name": "mine"}}),
    )
    .await;
    assert!(dir.path().join("personas/p-1/state.sqlite").exists());
    ok(
        &rt,
        "data/read",
        json!({"collection": "system_config", "handle": "persona:p-1", "id": r["id"]}),
    )
    .await;
    let e = ask(
        &rt,
        "data/read",
        json!({"collection": "system_config", "id": r["id"]}),
    )
    .await
    .expect_err("not in primary");
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(sub.try_recv().is_err(), "persona writes publish no events");
    let e = ask(
        &rt,
        "data/create",
        json!({"collection": "system_config", "handle": "archive", "data": {}}),
    )
    .await
    .expect_err("archive is read-only");
    assert_eq!(e.code, ErrorCode::BadRequest);
    rt.shutdown().await;
}

#[tokio::test]
async fn data_schema_files_load_and_bad_ones_are_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    items_schema(dir.path());
    write_schema(
        dir.path(),
        "broken.json",
        &json!({"collection": "broken", "fields": [{"name": "x", "type": "blob"}]}),
    );
    std::fs::write(
        dir.path().join("schemas/notes.toml"),
        "collection = \"notes\"\n[[fields]]\nname = \"body\"\ntype = \"string\"\nrequired = true\n",
    )
    .expect("toml");
    let (rt, _) = boot(dir.path()).await;
    let s = ok(&rt, "data/schema", json!({})).await;
    let problems = s["problems"].as_array().expect("problems");
    assert!(
        problems.iter().any(|p| p["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("broken.json"))
            && p["field"] == "x"
            && p["reason"]
                .as_str()
                .is_some_and(|r| r.contains("unknown type"))),
        "{problems:?}"
    );
    let cols = ok(&rt, "data/collections", json!({})).await;
    let names: BTreeSet<&str> = cols["collections"]
        .as_array()
        .expect("c")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains("items")
            && names.contains("notes")
            && names.contains("users")
            && !names.contains("broken")
    );
    let one = ok(&rt, "data/schema", json!({"collection": "notes"})).await;
    assert_eq!(one["fields"][0]["required"], true);
    let e = ask(
        &rt,
        "data/create",
        json!({"collection": "notes", "data": {}}),
    )
    .await
    .expect_err("required");
    assert!(e.message.contains("notes.body"), "{e}");
    rt.shutdown().await;
}

#[tokio::test]
async fn data_restart_applies_additive_schema_changes() {
    let dir = tempfile::tempdir().expect("tmp");
    items_schema(dir.path());
    let (rt, _) = boot(dir.path()).await;
    ok(
        &rt,
        "data/create",
        json!({"collection": "items", "id": "one", "data": {"a": 1}}),
    )
    .await;
    rt.shutdown().await;
    write_schema(
        dir.path(),
        "items.json",
        &json!({"collection": "items", "fields": [
            {"name": "a", "type": "integer", "indexed": true},
            {"name": "s", "type": "string"},
            {"name": "tag", "type": "enum", "values": ["red", "green", "blue"], "indexed": true},
            {"name": "tags", "type": "json"},
            {"name": "weight", "type": "number", "indexed": true}
        ]}),
    );
    let (rt, _) = boot(dir.path()).await;
    let st = ok(&rt, "data/stats", json!({})).await;
    assert!(
        st["migrations"]["addedColumns"]
            .as_array()
            .expect("a")
            .iter()
            .any(|c| c == "items.weight"),
        "{st}"
    );
    let r = ok(
        &rt,
        "data/update",
        json!({"collection": "items", "id": "one", "data": {"weight": 2.5}}),
    )
    .await;
    assert_eq!(r["weight"], 2.5);
    assert_eq!(r["a"], 1);
    rt.shutdown().await;
}

async fn boot_with_archive(dir: &Path, crash: CrashPoint) -> (Runtime, StoreSlot) {
    daemonhost_testkit::data::boot(dir, quiet_config(), |b, slots| {
        b.register(ArchiveDaemon::new(archive_config(&slots.store, crash)));
    })
    .await
}

#[tokio::test]
async fn archive_moves_exactly_the_oldest_rows_and_rotates_files() {
    let dir = tempfile::tempdir().expect("tmp");
    logs_schema(dir.path());
    let (rt, slot) = boot_with_archive(dir.path(), Default::default()).await;
    let ops: Vec<Value> = (0..230)
        .map(|i| json!({"operation": "create", "collection": "logs", "id": format!("l{i:04}"), "data": {"seq": i}}))
        .collect();
    ok(&rt, "data/batch", json!({"operations": ops})).await;
    let mut progress = rt.bus().subscribe("archive:progress").expect("sub");
    let r = ok(&rt, "archive/run", json!({})).await;
    assert_eq!(r["moved"]["logs"], 180, "{r}");
    assert!(matches!(
        within("archive:progress", progress.recv()).await,
        Some(Delivery::Event(_))
    ));
    let store = slot.get().expect("store");
    let hot = ids(&store, &Handle::Primary).await;
    let cold = ids(&store, &Handle::Archive).await;
    let want_hot: Vec<String> = (180..230).map(|i| format!("l{i:04}")).collect();
    let want_cold: Vec<String> = (0..180).map(|i| format!("l{i:04}")).collect();
    assert_eq!(hot, want_hot);
    assert_eq!(
        cold, want_cold,
        "archived rows read back in order across files"
    );
    let st = ok(&rt, "archive/status", json!({})).await;
    assert_eq!(st["movedTotal"], 180);
    assert_eq!(
        st["files"].as_array().map(Vec::len),
        Some(3),
        "rotated at 60 rows: {st}"
    );
    assert_eq!(
        ok(
            &rt,
            "data/count",
            json!({"collection": "logs", "handle": "archive"})
        )
        .await["count"],
        180
    );
    let one = ok(
        &rt,
        "data/read",
        json!({"collection": "logs", "handle": "archive", "id": "l0042"}),
    )
    .await;
    assert_eq!(one["seq"], 42);
    let f = ok(&rt, "data/list", json!({"collection": "logs", "handle": "archive", "filter": {"seq": {"$gte": 100, "$lt": 110}}, "orderBy": "-seq"})).await;
    let seqs: Vec<i64> = f["items"]
        .as_array()
        .expect("i")
        .iter()
        .filter_map(|i| i["seq"].as_i64())
        .collect();
    assert_eq!(seqs, (100..110).rev().collect::<Vec<_>>());
    // Below the threshold nothing moves.
    let r = ok(&rt, "archive/run", json!({})).await;
    assert_eq!(r["moved"], json!({}));
    assert_eq!(assert_conserved(&store, 230).await, (50, 180));
    rt.shutdown().await;
}

#[tokio::test]
async fn data_large_batch_is_one_transaction() {
    let dir = tempfile::tempdir().expect("tmp");
    items_schema(dir.path());
    let (rt, _) = boot(dir.path()).await;
    let mut ops: Vec<Value> = (0..600)
        .map(|i| json!({"operation": "create", "collection": "items", "data": {"a": i}}))
        .collect();
    ops.push(json!({"operation": "create", "collection": "items", "data": {"a": "not a number"}}));
    let e = ask(&rt, "data/batch", json!({"operations": ops}))
        .await
        .expect_err("last op invalid");
    assert!(e.message.contains("operations[600]"), "{e}");
    assert_eq!(
        ok(&rt, "data/count", json!({"collection": "items"})).await["count"],
        0
    );
    ops.pop();
    let r = ok(&rt, "data/batch", json!({"operations": ops})).await;
    assert_eq!(r["results"].as_array().map(Vec::len), Some(600));
    assert_eq!(
        ok(&rt, "data/count", json!({"collection": "items"})).await["count"],
        600
    );
    let e = ask(
        &rt,
        "data/batch",
        json!({"operations": [{"operation": "upsert", "collection": "items"}]}),
    )
    .await
    .expect_err("bad op");
    assert_eq!(e.code, ErrorCode::Validation);
    assert_eq!(
        e.message,
        "operations[0].operation: must be create, update or delete"
    );
    rt.shutdown().await;
}

fn typed_schema(dir: &Path) {
    write_schema(
        dir,
        "typed.json",
        &json!({"collection": "typed", "fields": [
            {"name": "s", "type": "string", "required": true, "maxLength": 20},
            {"name": "e", "type": "enum", "values": ["x", "y"], "default": "y"},
            {"name": "n", "type": "number"},
            {"name": "i", "type": "integer", "default": 7},
            {"name": "b", "type": "boolean"},
            {"name": "d", "type": "date", "indexed": true},
            {"name": "u", "type": "uuid"},
            {"name": "j", "type": "json"},
            {"name": "jd", "type": "json", "default": {"k": [1, 2.5, "z"]}},
            {"name": "ownerId", "type": "string", "references": "users"}
        ]}),
    );
}

/// The records `data/batch` answers with are exactly what a read returns (every type, defaults,
/// normalised dates and uuids, nulls); `return: "ids"`/`"none"` answer short while events still
/// carry the full records.
#[tokio::test]
async fn data_batch_records_match_reads_and_short_returns_keep_full_events() {
    let dir = tempfile::tempdir().expect("tmp");
    typed_schema(dir.path());
    let (rt, _) = boot(dir.path()).await;
    let owner = user(&rt, "owner").await;
    let rows = |tag: &str| -> Vec<Value> {
        vec![
            json!({"operation": "create", "collection": "typed", "data": {
                "s": format!("{tag}-full"), "e": "x", "n": 3, "i": -4, "b": true,
                "d": "2024-02-29T12:34:56.789+02:00",
                "u": "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
                "j": {"text": "hi", "list": [1, null, {"a": false}]},
                "jd": null, "ownerId": owner}}),
            json!({"operation": "create", "collection": "typed", "data": {
                "s": format!("{tag}-min"), "d": 1_700_000_000_123_i64, "n": 2.5}}),
            json!({"operation": "create", "collection": "typed", "id": format!("{tag}-given"),
                "data": {"s": format!("{tag}-given"), "b": false, "ownerId": owner}}),
        ]
    };
    let r = ok(&rt, "data/batch", json!({"operations": rows("r")})).await;
    let recs = r["results"].as_array().expect("results").clone();
    assert_eq!(recs.len(), 3);
    for rec in &recs {
        let read = ok(
            &rt,
            "data/read",
            json!({"collection": "typed", "id": rec["id"]}),
        )
        .await;
        assert_eq!(&read, rec, "answered record = stored record");
        assert_eq!(rec.as_object().map(|m| m.len()), Some(14), "{rec}");
    }
    assert_eq!(recs[0]["d"], "2024-02-29T10:34:56.789Z");
    assert_eq!(recs[0]["u"], "6ba7b810-9dad-11d1-80b4-00c04fd430c8");
    assert_eq!(recs[0]["n"], json!(3.0));
    assert_eq!(recs[0]["jd"], Value::Null);
    assert_eq!(recs[1]["d"], "2023-11-14T22:13:20.123Z");
    assert_eq!(recs[1]["e"], "y");
    assert_eq!(recs[1]["i"], 7);
    assert_eq!(recs[1]["jd"], json!({"k": [1, 2.5, "z"]}));
    assert_eq!(recs[1]["b"], Value::Null);
    assert_eq!(recs[2]["id"], "r-given");
    assert_eq!(recs[2]["version"], 1);
    assert_eq!(recs[2]["createdAt"], recs[2]["updatedAt"]);
    // New ids are UUID v7, increasing in operation order.
    let id0 = recs[0]["id"].as_str().expect("id");
    let id1 = recs[1]["id"].as_str().expect("id");
    assert!(id0 < id1);
    assert_eq!(
        uuid::Uuid::parse_str(id0).expect("uuid").get_version_num(),
        7
    );

    // return: ids, with a subscriber: short answer, full records in the events.
    let mut sub = rt.bus().subscribe("data:typed:*").expect("sub");
    let r = ok(
        &rt,
        "data/batch",
        json!({"operations": rows("i"), "return": "ids"}),
    )
    .await;
    assert_eq!(r["count"], 3);
    assert!(r.get("results").is_none());
    let ids: Vec<String> = r["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], "i-given");
    for (n, id) in ids.iter().enumerate() {
        let ev = match within("a created event", sub.recv()).await {
            Some(Delivery::Event(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(ev.topic(), "data:typed:created");
        let read = ok(&rt, "data/read", json!({"collection": "typed", "id": id})).await;
        assert_eq!(ev.data(), &read, "event {n} carries the full record");
        // Same content as the records answer, apart from id and clock.
        let mut a = read.clone();
        let mut b = recs[n].clone();
        for m in [&mut a, &mut b] {
            let m = m.as_object_mut().expect("obj");
            for k in ["id", "createdAt", "updatedAt", "s"] {
                m.remove(k);
            }
        }
        assert_eq!(a, b);
    }
    drop(sub);

    // return: none, and updates/deletes with ids.
    let r = ok(
        &rt,
        "data/batch",
        json!({"operations": rows("n"), "return": "none"}),
    )
    .await;
    assert_eq!(r, json!({"count": 3}));
    let r = ok(
        &rt,
        "data/batch",
        json!({"return": "ids", "operations": [
            {"operation": "update", "collection": "typed", "id": "n-given", "data": {"i": 9}},
            {"operation": "delete", "collection": "typed", "id": "i-given"}
        ]}),
    )
    .await;
    assert_eq!(r, json!({"count": 2, "ids": ["n-given", "i-given"]}));
    let got = ok(
        &rt,
        "data/read",
        json!({"collection": "typed", "id": "n-given"}),
    )
    .await;
    assert_eq!(
        (got["i"].clone(), got["version"].clone()),
        (json!(9), json!(2))
    );
    assert_eq!(
        ok(&rt, "data/count", json!({"collection": "typed"})).await["count"],
        8
    );
    // Validation is unchanged with a short answer, and a bad `return` is refused.
    let e = ask(
        &rt,
        "data/batch",
        json!({"return": "ids", "operations": [
            {"operation": "create", "collection": "typed", "data": {"s": "ok"}},
            {"operation": "create", "collection": "typed", "data": {"s": "bad", "ownerId": "nobody"}}
        ]}),
    )
    .await
    .expect_err("dangling reference");
    assert!(e.message.contains("operations[1]"), "{e}");
    assert!(e.message.contains("does not exist"), "{e}");
    let e = ask(
        &rt,
        "data/batch",
        json!({"return": "everything", "operations": []}),
    )
    .await
    .expect_err("bad return");
    assert_eq!(e.code, ErrorCode::Validation);
    assert_eq!(e.message, "return: must be records, ids or none");
    assert_eq!(
        ok(&rt, "data/count", json!({"collection": "typed"})).await["count"],
        8
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn count_upper_bound_bounds_the_count_in_two_seeks() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, slot) = boot(dir.path()).await;
    let store: DataStore = slot.get().expect("store");
    let h = Handle::Primary;
    assert_eq!(
        store.count_upper_bound(&h, "users").await.expect("bound"),
        0
    );
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(user(&rt, &format!("u{i}")).await);
    }
    let bound = |store: DataStore| async move {
        let b = store
            .count_upper_bound(&Handle::Primary, "users")
            .await
            .expect("bound");
        let n = store
            .count(&Handle::Primary, "users", None)
            .await
            .expect("count");
        (b, n)
    };
    // Exact with no hole.
    assert_eq!(bound(store.clone()).await, (10, 10));
    // A hole in the middle: the bound stays above the count.
    ok(
        &rt,
        "data/delete",
        json!({"collection": "users", "id": ids[4]}),
    )
    .await;
    assert_eq!(bound(store.clone()).await, (10, 9));
    // The oldest row leaving (what archiving does) lowers it.
    ok(
        &rt,
        "data/delete",
        json!({"collection": "users", "id": ids[0]}),
    )
    .await;
    assert_eq!(bound(store.clone()).await, (9, 8));
    assert!(
        store
            .count_upper_bound(&Handle::Archive, "users")
            .await
            .is_err()
    );
    assert!(store.count_upper_bound(&h, "nope").await.is_err());
    rt.shutdown().await;
}

/// The data daemon reads params with the protocol's one reader: a missing required param is
/// `validation` "<name>: required", a wrong-typed one `bad_request` "<name>: must be <type>", a
/// rejected value `validation` naming it; a batch operation's errors name its index.
#[tokio::test]
async fn data_params_errors_follow_the_protocol_contract() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rt, _slot) = boot(dir.path()).await;
    let op = |o: Value| {
        let fine = json!({"operation": "delete", "collection": "users", "id": "x"});
        json!({"operations": [fine, fine, fine, o]})
    };
    let cases = [
        (
            "data/create",
            json!({}),
            ErrorCode::Validation,
            "collection: required",
        ),
        (
            "data/create",
            Value::Null,
            ErrorCode::Validation,
            "collection: required",
        ),
        (
            "data/create",
            json!({"collection": "users"}),
            ErrorCode::Validation,
            "data: required",
        ),
        (
            "data/create",
            json!({"collection": "users", "data": [1]}),
            ErrorCode::BadRequest,
            "data: must be an object",
        ),
        (
            "data/create",
            json!({"collection": 7, "data": {}}),
            ErrorCode::BadRequest,
            "collection: must be a string",
        ),
        (
            "data/create",
            json!("users"),
            ErrorCode::BadRequest,
            "params must be an object",
        ),
        (
            "data/read",
            json!({"collection": "users"}),
            ErrorCode::Validation,
            "id: required",
        ),
        (
            "data/update",
            json!({"collection": "users", "id": "x", "data": {}, "version": "3"}),
            ErrorCode::BadRequest,
            "version: must be an integer",
        ),
        (
            "data/list",
            json!({"collection": "users", "cursor": 5}),
            ErrorCode::BadRequest,
            "cursor: must be a string",
        ),
        (
            "data/list",
            json!({"collection": "users", "filter": [1]}),
            ErrorCode::BadRequest,
            "filter: must be an object",
        ),
        (
            "data/list",
            json!({"collection": "users", "limit": "10"}),
            ErrorCode::BadRequest,
            "limit: must be a non-negative integer",
        ),
        (
            "data/list",
            json!({"collection": "users", "limit": 10_001}),
            ErrorCode::Validation,
            "limit: at most 10000 (got 10001)",
        ),
        (
            "data/count",
            json!({"collection": "users", "handle": 1}),
            ErrorCode::BadRequest,
            "handle: must be a string",
        ),
        (
            "data/batch",
            json!({}),
            ErrorCode::Validation,
            "operations: required",
        ),
        (
            "data/batch",
            json!({"operations": {}}),
            ErrorCode::BadRequest,
            "operations: must be an array",
        ),
        (
            "data/batch",
            op(json!({"operation": "create", "data": {}})),
            ErrorCode::Validation,
            "operations[3].collection: required",
        ),
        (
            "data/batch",
            op(json!({"operation": "create", "collection": "users", "data": "x"})),
            ErrorCode::BadRequest,
            "operations[3].data: must be an object",
        ),
        (
            "data/batch",
            op(json!({"operation": "update", "collection": "users", "data": {}})),
            ErrorCode::Validation,
            "operations[3].id: required",
        ),
        (
            "data/batch",
            op(json!({"collection": "users"})),
            ErrorCode::Validation,
            "operations[3].operation: required",
        ),
        (
            "data/batch",
            op(json!(5)),
            ErrorCode::BadRequest,
            "operations[3]: must be an object",
        ),
    ];
    for (cmd, params, code, message) in cases {
        let e = ask(&rt, cmd, params.clone()).await.expect_err("refused");
        assert_eq!(
            (e.code, e.message.as_str()),
            (code, message),
            "{cmd} {params}"
        );
    }
    rt.shutdown().await;
}

// ---- Under a full disk: the quota of primary and of the archive files ----

/// `blobs`: records of one big string, to fill a database quickly.
fn blobs_schema(dir: &Path) {
    write_schema(
        dir,
        "blobs.json",
        &json!({"collection": "blobs", "fields": [{"name": "body", "type": "string"}]}),
    );
}

async fn blob(rt: &Runtime, size: usize) -> Result<String, daemonhost_runtime::DaemonError> {
    let r = ask(
        rt,
        "data/create",
        json!({"collection": "blobs", "data": {"body": "x".repeat(size)}}),
    )
    .await?;
    Ok(r["id"].as_str().expect("id").to_owned())
}

/// Create 8 KiB records until one answers `storage_full`; returns the acknowledged ids.
async fn fill(rt: &Runtime, acked: &mut Vec<String>) -> daemonhost_runtime::DaemonError {
    for _ in 0..10_000 {
        match blob(rt, 8192).await {
            Ok(id) => acked.push(id),
            Err(e) => return e,
        }
    }
    panic!("the quota never filled");
}

fn data_state(rt: &Runtime) -> (daemonhost_runtime::LifecycleState, Value) {
    let r = rt
        .reports()
        .into_iter()
        .find(|r| r.name == "data")
        .expect("data report");
    (r.state, r.details.unwrap_or(Value::Null))
}

async fn all_readable(rt: &Runtime, acked: &[String]) {
    for id in acked {
        ok(rt, "data/read", json!({"collection": "blobs", "id": id})).await;
    }
    let n = ok(rt, "data/count", json!({"collection": "blobs"})).await;
    assert_eq!(
        n["count"],
        acked.len(),
        "every acknowledged record is stored"
    );
}

#[tokio::test]
async fn a_full_primary_answers_storage_full_keeps_every_acknowledged_write_and_keeps_serving_reads()
 {
    let dir = tempfile::tempdir().expect("tmp");
    blobs_schema(dir.path());
    let (rt, _) = boot(dir.path()).await;
    let q = ok(&rt, "data/quota", json!({"maxDbMb": 2})).await;
    assert_eq!(q["maxDbMb"], 2, "{q}");
    let mut acked = Vec::new();
    let e = fill(&rt, &mut acked).await;
    assert_eq!(e.code, ErrorCode::StorageFull, "{e}");
    assert!(e.message.contains("'primary' is full"), "{e}");
    assert!(!acked.is_empty());
    // Reads keep working and find every acknowledged record; the daemon stays READY and says
    // it is full.
    all_readable(&rt, &acked).await;
    let page = ok(&rt, "data/list", json!({"collection": "blobs", "limit": 5})).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(5));
    let (state, details) = data_state(&rt);
    assert_eq!(state, daemonhost_runtime::LifecycleState::Ready);
    assert_eq!(details["storage"]["full"], true, "{details}");
    assert_eq!(details["storage"]["maxDbMb"], 2, "{details}");
    let stats = ok(&rt, "data/stats", json!({})).await;
    assert_eq!(stats["primary"]["full"], true, "{stats}");
    assert!(
        stats["primary"]["storageFull"].as_u64() >= Some(1),
        "{stats}"
    );
    // Still full for the next write of the same size; the host answers it the same way.
    assert_eq!(
        blob(&rt, 8192).await.expect_err("full").code,
        ErrorCode::StorageFull
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_delete_frees_room_in_a_full_primary_and_writes_resume_without_vacuum() {
    let dir = tempfile::tempdir().expect("tmp");
    blobs_schema(dir.path());
    let (rt, _) = boot(dir.path()).await;
    ok(&rt, "data/quota", json!({"maxDbMb": 2})).await;
    let mut acked = Vec::new();
    fill(&rt, &mut acked).await;
    let before = ok(&rt, "data/quota", json!({})).await;
    // Delete 40 records: their pages go to SQLite's free list, and new rows reuse them (the
    // file does not shrink: no VACUUM).
    for id in acked.drain(..40) {
        ok(&rt, "data/delete", json!({"collection": "blobs", "id": id})).await;
    }
    let freed = ok(&rt, "data/quota", json!({})).await;
    assert!(
        freed["primary"]["freePages"].as_u64() > before["primary"]["freePages"].as_u64(),
        "{before} -> {freed}"
    );
    assert_eq!(
        freed["primary"]["pages"], before["primary"]["pages"],
        "same file size"
    );
    assert_eq!(freed["full"], false, "a committed delete clears the state");
    for i in 0..20 {
        let id = blob(&rt, 8192)
            .await
            .unwrap_or_else(|e| panic!("write {i} after the delete: {e}"));
        acked.push(id);
    }
    let after = ok(&rt, "data/quota", json!({})).await;
    assert!(
        after["primary"]["freePages"].as_u64() < freed["primary"]["freePages"].as_u64(),
        "the new rows took freed pages: {freed} -> {after}"
    );
    assert_eq!(after["primary"]["pages"], before["primary"]["pages"]);
    all_readable(&rt, &acked).await;
    rt.shutdown().await;
}

#[tokio::test]
async fn a_raised_quota_at_run_time_lets_the_refused_write_in() {
    let dir = tempfile::tempdir().expect("tmp");
    blobs_schema(dir.path());
    let (rt, _) = boot(dir.path()).await;
    ok(&rt, "data/quota", json!({"maxDbMb": 2})).await;
    let mut acked = Vec::new();
    fill(&rt, &mut acked).await;
    let q = ok(&rt, "data/quota", json!({"maxDbMb": 8})).await;
    assert_eq!(
        (q["maxDbMb"].as_u64(), q["full"].as_bool()),
        (Some(8), Some(false)),
        "{q}"
    );
    assert_eq!(data_state(&rt).1["storage"]["maxDbMb"], 8);
    for _ in 0..50 {
        acked.push(blob(&rt, 8192).await.expect("room under the raised quota"));
    }
    // Back to unlimited.
    let q = ok(&rt, "data/quota", json!({"maxDbMb": 0})).await;
    assert_eq!(q["primary"]["maxPages"], Value::Null, "{q}");
    acked.push(blob(&rt, 4 * 1024 * 1024).await.expect("no quota"));
    all_readable(&rt, &acked).await;
    // Out of range is refused and changes nothing.
    let e = ask(&rt, "data/quota", json!({"maxDbMb": 1u64 << 40}))
        .await
        .expect_err("range");
    assert_eq!(e.code, ErrorCode::Validation, "{e}");
    rt.shutdown().await;
}

/// 130 `logs` rows of about 1.5 KiB each (two to a 4 KiB page): archiving moves the 80 oldest.
async fn big_logs(rt: &Runtime) {
    let ops: Vec<Value> = (0..130)
        .map(|i| {
            json!({"operation": "create", "collection": "logs", "id": format!("l{i:04}"),
                        "data": {"seq": i, "msg": "m".repeat(1500)}})
        })
        .collect();
    ok(rt, "data/batch", json!({"operations": ops})).await;
}

#[tokio::test]
async fn archiving_into_a_full_archive_file_fails_cleanly_loses_no_row_and_succeeds_once_there_is_room()
 {
    let dir = tempfile::tempdir().expect("tmp");
    logs_schema(dir.path());
    let (rt, slot) = boot_with_archive(dir.path(), Default::default()).await;
    big_logs(&rt).await;
    let store = slot.get().expect("store");
    // A cap an empty archive file cannot take a batch under (its tables alone fill it).
    store.set_quota(None, Some(16 * 1024)).await.expect("cap");
    let r = ok(&rt, "archive/run", json!({})).await;
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("full")),
        "{r}"
    );
    let st = ok(&rt, "archive/status", json!({})).await;
    assert_eq!(st["lastErrorCode"], "storage_full", "{st}");
    assert_eq!(st["failedRuns"], 1, "{st}");
    assert_eq!(
        assert_conserved(&store, 130).await,
        (130, 0),
        "nothing moved"
    );
    // Retried: a second run fails the same way and still loses nothing.
    ok(&rt, "archive/run", json!({})).await;
    assert_eq!(assert_conserved(&store, 130).await, (130, 0));
    // Room again (the cap lifted at run time): the next run moves the rows.
    ok(&rt, "data/quota", json!({"maxArchiveFileMb": 0})).await;
    let r = ok(&rt, "archive/run", json!({})).await;
    assert_eq!(r["moved"]["logs"], 80, "{r}");
    assert_eq!(assert_conserved(&store, 130).await, (50, 80));
    let st = ok(&rt, "archive/status", json!({})).await;
    assert!(st.get("lastErrorCode").is_none(), "{st}");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_full_archive_file_is_followed_by_the_next_and_no_row_is_lost() {
    let dir = tempfile::tempdir().expect("tmp");
    logs_schema(dir.path());
    let (rt, slot) = boot_with_archive(dir.path(), Default::default()).await;
    big_logs(&rt).await;
    let store = slot.get().expect("store");
    // Room for one batch of 20 rows per file (an archive file's tables take 9 pages, a batch
    // about 11 more: 28 pages hold one batch, not two); by rows alone (60 per file) 80 rows
    // would need two files.
    let cap = 112 * 1024;
    store.set_quota(None, Some(cap)).await.expect("cap");
    let r = ok(&rt, "archive/run", json!({})).await;
    assert_eq!(r["moved"]["logs"], 80, "{r}");
    assert_eq!(assert_conserved(&store, 130).await, (50, 80));
    let files = store.archive_files().list();
    assert!(files.len() >= 3, "rotated when full: {files:?}");
    for f in &files {
        let len = std::fs::metadata(f).expect("archive file").len();
        assert!(len <= cap, "{} is {len} bytes, above the cap", f.display());
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn archiving_frees_room_in_a_full_primary_and_writes_resume() {
    let dir = tempfile::tempdir().expect("tmp");
    logs_schema(dir.path());
    let (rt, slot) = boot_with_archive(dir.path(), Default::default()).await;
    ok(&rt, "data/quota", json!({"maxDbMb": 2})).await;
    let log = |seq: usize| {
        json!({"collection": "logs", "id": format!("l{seq:05}"),
               "data": {"seq": seq, "msg": "m".repeat(8192)}})
    };
    let mut seq = 0;
    let err = loop {
        match ask(&rt, "data/create", log(seq)).await {
            Ok(_) => seq += 1,
            Err(e) => break e,
        }
        assert!(seq < 10_000, "the quota never filled");
    };
    assert_eq!(err.code, ErrorCode::StorageFull, "{err}");
    assert!(seq > 100, "past the archive rule: {seq} rows");
    // The archive moves rows out (it only deletes in primary, so it runs on a full one) ...
    let store = slot.get().expect("store");
    let mut moved = 0;
    while assert_conserved(&store, seq).await.0 > 50 {
        let r = ok(&rt, "archive/run", json!({})).await;
        moved += r["moved"]["logs"].as_u64().unwrap_or_else(|| panic!("{r}"));
    }
    assert!(moved > 0);
    // ... and the refused write fits now, with more after it.
    for _ in 0..20 {
        ok(&rt, "data/create", log(seq)).await;
        seq += 1;
    }
    assert_conserved(&store, seq).await;
    rt.shutdown().await;
}
