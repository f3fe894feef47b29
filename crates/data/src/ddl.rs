//! Tables, indexes and migrations.
//!
//! Two layers, both additive only:
//! - **Engine migrations** ([`META_MIGRATIONS`]) numbered by `PRAGMA user_version`: the data
//!   layer's own tables (`_schemas`). Each runs in its own transaction with the version bump.
//! - **Collection schemas**: a table per collection with real columns (so indexes work), plus
//!   `id`, `createdAt`, `updatedAt`, `version`. `_schemas` records the storage fingerprint each
//!   collection was applied with; an unchanged fingerprint costs one lookup at startup. A changed
//!   one adds the missing columns (`ALTER TABLE ADD COLUMN` is O(1) in SQLite) and indexes.
//!   Building an index on a table that already has rows is heavy, so it is *deferred* (returned
//!   to the caller, built after READY) instead of delaying core init.
//!
//! Identifiers reaching this module were checked by the schema loader; they are quoted anyway.

use crate::error::DataError;
use crate::schema::{CollectionSchema, IndexDef, SchemaSet};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Engine migrations, applied in order; `user_version` = how many have run.
pub const META_MIGRATIONS: &[&str] = &["CREATE TABLE IF NOT EXISTS _schemas (
        collection TEXT PRIMARY KEY NOT NULL,
        fingerprint TEXT NOT NULL,
        schema TEXT NOT NULL,
        appliedAt TEXT NOT NULL)"];

/// Quote an identifier for SQL (identifiers are whitelisted before they get here).
pub fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// What applying the schemas did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// Tables created.
    pub created: Vec<String>,
    /// Columns added, as `collection.field`.
    pub added_columns: Vec<String>,
    /// Indexes left for deferred init (their table already had rows).
    pub deferred_indexes: Vec<(String, IndexDef)>,
    /// Things that could not be migrated additively (e.g. a type change).
    pub warnings: Vec<String>,
}

fn sq(handle: &str, op: &str) -> impl Fn(rusqlite::Error) -> DataError + use<> {
    let (handle, op) = (handle.to_owned(), op.to_owned());
    move |e| DataError::sqlite(&handle, op.clone(), &e)
}

/// Run the engine migrations not yet applied.
pub fn migrate_meta(conn: &Connection, handle: &str) -> Result<(), DataError> {
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sq(handle, "user_version"))?;
    for (i, sql) in META_MIGRATIONS.iter().enumerate() {
        let n = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if n <= v {
            continue;
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {n}; COMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            DataError::sqlite(handle, format!("migration {n}"), &e)
        })?;
    }
    Ok(())
}

/// `CREATE TABLE` for a collection. `schema` is `main` or an attached name.
pub fn create_table_sql(schema: &str, table: &str, cols: &[(String, String)]) -> String {
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (\"id\" TEXT PRIMARY KEY NOT NULL, \"createdAt\" TEXT NOT NULL, \"updatedAt\" TEXT NOT NULL, \"version\" INTEGER NOT NULL DEFAULT 1",
        q(schema),
        q(table)
    );
    for (name, ty) in cols {
        if crate::schema::SYSTEM_FIELDS.contains(&name.as_str()) {
            continue;
        }
        sql.push_str(&format!(", {} {}", q(name), ty));
    }
    sql.push(')');
    sql
}

/// `CREATE INDEX` for `ix` on `table`. Non-unique indexes end with `id`, the tie-breaker every
/// ordering uses, so "filter by field, order by field, page by cursor" is served by the index.
/// `force_plain` drops uniqueness (archive copies).
pub fn create_index_sql(schema: &str, table: &str, ix: &IndexDef, force_plain: bool) -> String {
    let unique = ix.unique && !force_plain;
    let mut cols: Vec<String> = ix.fields.iter().map(|f| q(f)).collect();
    if !unique && !ix.fields.iter().any(|f| f == "id") {
        cols.push(q("id"));
    }
    format!(
        "CREATE {}INDEX IF NOT EXISTS {}.{} ON {} ({})",
        if unique { "UNIQUE " } else { "" },
        q(schema),
        q(&ix.name),
        q(table),
        cols.join(", ")
    )
}

/// Columns of `schema.table` as (name, declared type); empty if the table does not exist.
pub fn table_columns(
    conn: &Connection,
    handle: &str,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>, DataError> {
    let mut st = conn
        .prepare(&format!("PRAGMA {}.table_info({})", q(schema), q(table)))
        .map_err(sq(handle, "table_info"))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
        .map_err(sq(handle, "table_info"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(sq(handle, "table_info"))
}

fn existing_indexes(conn: &Connection, handle: &str) -> Result<HashSet<String>, DataError> {
    let mut st = conn
        .prepare("SELECT name FROM main.sqlite_master WHERE type = 'index'")
        .map_err(sq(handle, "list indexes"))?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(sq(handle, "list indexes"))?;
    rows.collect::<Result<HashSet<_>, _>>()
        .map_err(sq(handle, "list indexes"))
}

fn schema_cols(s: &CollectionSchema) -> Vec<(String, String)> {
    s.fields
        .iter()
        .map(|f| (f.name.clone(), f.ty.sql_type().to_owned()))
        .collect()
}

/// Bring every collection's table in line with `set`. Fast when nothing changed (one query).
/// When `defer_indexes` is set, indexes missing on non-empty tables are returned instead of
/// built.
pub fn apply_schemas(
    conn: &Connection,
    handle: &str,
    set: &SchemaSet,
    defer_indexes: bool,
) -> Result<ApplyReport, DataError> {
    migrate_meta(conn, handle)?;
    let mut report = ApplyReport::default();
    let applied: HashMap<String, String> = {
        let mut st = conn
            .prepare("SELECT collection, fingerprint FROM _schemas")
            .map_err(sq(handle, "read _schemas"))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sq(handle, "read _schemas"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sq(handle, "read _schemas"))?
    };
    let mut indexes: Option<HashSet<String>> = None;
    for s in set.collections.values() {
        let fp = s.storage_fingerprint();
        if applied.get(&s.collection) == Some(&fp) {
            continue;
        }
        let existing = match &indexes {
            Some(i) => i,
            None => indexes.insert(existing_indexes(conn, handle)?),
        };
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(sq(handle, "begin"))?;
        let r = apply_one(conn, handle, s, existing, defer_indexes, &mut report, &fp);
        match r {
            Ok(()) => conn.execute_batch("COMMIT").map_err(sq(handle, "commit"))?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(report)
}

fn apply_one(
    conn: &Connection,
    handle: &str,
    s: &CollectionSchema,
    existing_ix: &HashSet<String>,
    defer_indexes: bool,
    report: &mut ApplyReport,
    fp: &str,
) -> Result<(), DataError> {
    let cols = table_columns(conn, handle, "main", &s.collection)?;
    let mut empty = true;
    if cols.is_empty() {
        conn.execute_batch(&create_table_sql("main", &s.collection, &schema_cols(s)))
            .map_err(sq(handle, "create table"))?;
        report.created.push(s.collection.clone());
    } else {
        let have: HashMap<&str, &str> =
            cols.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        for f in &s.fields {
            match have.get(f.name.as_str()) {
                None => {
                    conn.execute_batch(&format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        q(&s.collection),
                        q(&f.name),
                        f.ty.sql_type()
                    ))
                    .map_err(sq(handle, "add column"))?;
                    report
                        .added_columns
                        .push(format!("{}.{}", s.collection, f.name));
                }
                Some(t) if !t.eq_ignore_ascii_case(f.ty.sql_type()) => {
                    report.warnings.push(format!(
                        "{}.{}: stored as {t} but declared {} (type changes are not migrated)",
                        s.collection,
                        f.name,
                        f.ty.as_str()
                    ));
                }
                Some(_) => {}
            }
        }
        empty = conn
            .query_row(
                &format!("SELECT 1 FROM {} LIMIT 1", q(&s.collection)),
                [],
                |_| Ok(()),
            )
            .optional()
            .map_err(sq(handle, "probe rows"))?
            .is_none();
    }
    let mut complete = true;
    for ix in &s.indexes {
        if existing_ix.contains(&ix.name) {
            continue;
        }
        if defer_indexes && !empty {
            report
                .deferred_indexes
                .push((s.collection.clone(), ix.clone()));
            complete = false;
        } else {
            conn.execute_batch(&create_index_sql("main", &s.collection, ix, false))
                .map_err(sq(handle, "create index"))?;
        }
    }
    if complete {
        record_applied(conn, handle, s, fp)?;
    }
    Ok(())
}

/// Record that `s` is fully applied.
pub fn record_applied(
    conn: &Connection,
    handle: &str,
    s: &CollectionSchema,
    fp: &str,
) -> Result<(), DataError> {
    let json = serde_json::to_string(s).unwrap_or_default();
    conn.execute(
        "INSERT INTO _schemas(collection, fingerprint, schema, appliedAt) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(collection) DO UPDATE SET fingerprint = excluded.fingerprint,
           schema = excluded.schema, appliedAt = excluded.appliedAt",
        params![
            s.collection,
            fp,
            json,
            daemonhost_protocol::time::now_text()
        ],
    )
    .map_err(sq(handle, "record schema"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::scan;

    #[test]
    fn apply_is_idempotent_and_additive() {
        let conn = Connection::open_in_memory().expect("mem");
        let set = scan(None);
        let r = apply_schemas(&conn, "t", &set, true).expect("apply");
        assert_eq!(r.created.len(), set.collections.len());
        assert!(r.deferred_indexes.is_empty());
        let again = apply_schemas(&conn, "t", &set, true).expect("again");
        assert!(again.created.is_empty() && again.added_columns.is_empty());
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("v");
        assert_eq!(v, 1);

        // A new indexed field on a non-empty table: column now, index deferred.
        conn.execute(
            "INSERT INTO system_config(id, createdAt, updatedAt, version) VALUES ('default','x','x',1)",
            [],
        )
        .expect("row");
        let mut set2 = set.clone();
        let text = serde_json::json!({"collection": "system_config", "fields": [
            {"name": "name", "type": "string"}, {"name": "settings", "type": "json"},
            {"name": "tier", "type": "integer", "indexed": true}]});
        let s = crate::schema::parse_schema("t", &text).expect("schema");
        set2.collections
            .insert("system_config".into(), std::sync::Arc::new(s));
        let r = apply_schemas(&conn, "t", &set2, true).expect("apply2");
        assert_eq!(r.added_columns, vec!["system_config.tier".to_owned()]);
        assert_eq!(r.deferred_indexes.len(), 1);
    }

    #[test]
    fn index_sql_appends_id_tiebreaker() {
        let ix = IndexDef {
            name: "idx_c_a".into(),
            fields: vec!["a".into()],
            unique: false,
        };
        assert_eq!(
            create_index_sql("main", "c", &ix, false),
            "CREATE INDEX IF NOT EXISTS \"main\".\"idx_c_a\" ON \"c\" (\"a\", \"id\")"
        );
        assert_eq!(q("a\"b"), "\"a\"\"b\"");
    }
}
