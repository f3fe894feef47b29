//! Collection schemas ("entity scanning"): what a collection's records may contain.
//!
//! A schema file (JSON or TOML) declares one collection:
//!
//! ```json
//! { "collection": "chat_messages",
//!   "fields": [ {"name": "roomId", "type": "string", "required": true, "indexed": true,
//!                "references": "rooms"}, ... ],
//!   "indexes": [ {"fields": ["roomId", "timestamp"], "unique": false} ],
//!   "archive": {"maxRows": 500000, "rowsPerArchive": 50000, "orderBy": "timestamp"} }
//! ```
//!
//! Field keys: `name`, `type` (`string number integer boolean date json uuid enum`),
//! `required`, `nullable` (default `true` unless required), `maxLength` (string, enum, uuid),
//! `values` (enum), `unique`, `indexed`, `default`, `references` (a collection whose record id
//! the value must be), `description`.
//!
//! Built-in schemas ship inside the binary; extra ones come from a folder. Scanning is pure
//! parsing and checking, so [`scan`] is meant to run on the CPU pool. A bad file (or a bad field
//! in it) is reported as a [`SchemaProblem`] naming the file, the field and the reason; the other
//! files still load. Every identifier (collection, field, index) must match
//! `^[A-Za-z_][A-Za-z0-9_]{0,63}$`: this is the first of the two guards that keep identifiers
//! out of SQL unchecked (the second is that queries only accept names found in a schema).

pub use crate::field::{FieldDef, FieldType};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Columns every record has; schemas may not declare them.
pub const SYSTEM_FIELDS: [&str; 4] = ["id", "createdAt", "updatedAt", "version"];

/// The built-in schema files: (file name, contents).
pub const BUILTIN: [(&str, &str); 8] = [
    ("users.json", include_str!("schemas/users.json")),
    ("rooms.json", include_str!("schemas/rooms.json")),
    (
        "chat_messages.json",
        include_str!("schemas/chat_messages.json"),
    ),
    ("user_states.json", include_str!("schemas/user_states.json")),
    ("sessions.json", include_str!("schemas/sessions.json")),
    (
        "training_examples.json",
        include_str!("schemas/training_examples.json"),
    ),
    (
        "decision_proposals.json",
        include_str!("schemas/decision_proposals.json"),
    ),
    (
        "system_config.json",
        include_str!("schemas/system_config.json"),
    ),
];

/// Whether `s` is a safe SQL identifier: `^[A-Za-z_][A-Za-z0-9_]{0,63}$`.
pub fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A declared (possibly compound) index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexDef {
    /// SQL index name (derived from the collection and fields).
    pub name: String,
    /// Indexed fields, in order (`id` is appended in SQL as the tie-breaker).
    pub fields: Vec<String>,
    /// Unique index (then `id` is not appended).
    pub unique: bool,
}

/// When and how a collection's oldest rows move to the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRule {
    /// Archive when the hot table holds more than this many rows.
    pub max_rows: u64,
    /// Then move rows until `maxRows - rowsPerArchive` remain.
    pub rows_per_archive: u64,
    /// Oldest first by this field (then by id).
    pub order_by: String,
}

/// A collection's schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionSchema {
    /// Collection (and table) name.
    pub collection: String,
    /// For people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Declared fields in file order.
    pub fields: Vec<FieldDef>,
    /// All indexes: one per `indexed`/`unique` field plus declared compound ones.
    pub indexes: Vec<IndexDef>,
    /// Archive rule, if the collection is archived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveRule>,
    /// Where it came from (`builtin:users.json` or a path).
    pub source: String,
    #[serde(skip)]
    by_name: HashMap<String, usize>,
}

impl CollectionSchema {
    /// The declared field named `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.by_name.get(name).map(|&i| &self.fields[i])
    }

    /// Whether `name` is a declared field or a system column.
    pub fn has_column(&self, name: &str) -> bool {
        SYSTEM_FIELDS.contains(&name) || self.by_name.contains_key(name)
    }

    /// All column names: system columns first, then fields.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        SYSTEM_FIELDS
            .iter()
            .copied()
            .chain(self.fields.iter().map(|f| f.name.as_str()))
    }

    /// A stable fingerprint of what the storage depends on (columns and indexes).
    pub fn storage_fingerprint(&self) -> String {
        let mut s = String::new();
        for f in &self.fields {
            s.push_str(&f.name);
            s.push(':');
            s.push_str(f.ty.sql_type());
            s.push(';');
        }
        for i in &self.indexes {
            s.push_str(&i.name);
            s.push(';');
        }
        s
    }
}

/// One problem found while scanning schema files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaProblem {
    /// File (or `builtin:<name>`).
    pub file: String,
    /// Field (or top-level key) at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// The loaded schemas and the problems met while loading them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SchemaSet {
    /// By collection name.
    pub collections: BTreeMap<String, Arc<CollectionSchema>>,
    /// Files or fields that were rejected.
    pub problems: Vec<SchemaProblem>,
}

impl SchemaSet {
    /// The schema of `collection`.
    pub fn get(&self, collection: &str) -> Option<&Arc<CollectionSchema>> {
        self.collections.get(collection)
    }
}

/// Load the built-in schemas plus every `*.json` / `*.toml` file in `dir` (if given and
/// present). Files in `dir` may replace a built-in collection; two files in `dir` declaring the
/// same collection keep the first (by file name) and report the second. Blocking file reads:
/// run on the CPU pool.
pub fn scan(dir: Option<&Path>) -> SchemaSet {
    let mut set = SchemaSet::default();
    for (name, text) in BUILTIN {
        let file = format!("builtin:{name}");
        match parse_text(&file, text, false) {
            Ok(v) => {
                add(&mut set, &file, &v, false);
            }
            Err(p) => set.problems.push(p),
        }
    }
    let Some(dir) = dir else { return set };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json" | "toml")
                )
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return set,
        Err(e) => {
            set.problems.push(SchemaProblem {
                file: dir.display().to_string(),
                field: None,
                reason: format!("cannot list schema folder: {e}"),
            });
            return set;
        }
    };
    files.sort();
    let mut from_dir: Vec<String> = Vec::new();
    for path in files {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                set.problems.push(SchemaProblem {
                    file,
                    field: None,
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let toml = path.extension().and_then(|e| e.to_str()) == Some("toml");
        match parse_text(&file, &text, toml) {
            Ok(v) => {
                let coll = v
                    .get("collection")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(c) = &coll
                    && from_dir.contains(c)
                {
                    set.problems.push(SchemaProblem {
                        file,
                        field: Some("collection".into()),
                        reason: format!("collection '{c}' is already declared by another file"),
                    });
                    continue;
                }
                if add(&mut set, &file, &v, true)
                    && let Some(c) = coll
                {
                    from_dir.push(c);
                }
            }
            Err(p) => set.problems.push(p),
        }
    }
    // References must name a loaded collection; the archive order field must exist.
    let names: Vec<String> = set.collections.keys().cloned().collect();
    let mut dangling = Vec::new();
    for s in set.collections.values() {
        for f in &s.fields {
            if let Some(r) = &f.references
                && !names.contains(r)
            {
                dangling.push((
                    s.collection.clone(),
                    s.source.clone(),
                    f.name.clone(),
                    r.clone(),
                ));
            }
        }
    }
    for (coll, file, field, r) in dangling {
        set.problems.push(SchemaProblem {
            file,
            field: Some(field),
            reason: format!("references unknown collection '{r}'; collection '{coll}' not loaded"),
        });
        set.collections.remove(&coll);
    }
    set
}

fn parse_text(file: &str, text: &str, toml: bool) -> Result<Value, SchemaProblem> {
    let parsed = if toml {
        toml::from_str::<Value>(text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|reason| SchemaProblem {
        file: file.to_owned(),
        field: None,
        reason: format!("not valid {}: {reason}", if toml { "TOML" } else { "JSON" }),
    })
}

/// Validate and insert one parsed file; returns whether it was accepted.
fn add(set: &mut SchemaSet, file: &str, v: &Value, replace: bool) -> bool {
    match parse_schema(file, v) {
        Ok(s) => {
            if !replace && set.collections.contains_key(&s.collection) {
                set.problems.push(SchemaProblem {
                    file: file.to_owned(),
                    field: Some("collection".into()),
                    reason: format!("duplicate collection '{}'", s.collection),
                });
                return false;
            }
            set.collections.insert(s.collection.clone(), Arc::new(s));
            true
        }
        Err(mut problems) => {
            set.problems.append(&mut problems);
            false
        }
    }
}

/// Parse and check one schema document. All problems in the file are returned together.
pub fn parse_schema(file: &str, v: &Value) -> Result<CollectionSchema, Vec<SchemaProblem>> {
    let mut problems = Vec::new();
    let mut problem = |field: Option<&str>, reason: String| {
        problems.push(SchemaProblem {
            file: file.to_owned(),
            field: field.map(str::to_owned),
            reason,
        });
    };
    let Some(obj) = v.as_object() else {
        problem(None, "a schema must be an object".into());
        return Err(problems);
    };
    for k in obj.keys() {
        if !["collection", "description", "fields", "indexes", "archive"].contains(&k.as_str()) {
            problem(Some(k), format!("unknown key '{k}'"));
        }
    }
    let collection = match obj.get("collection").and_then(Value::as_str) {
        Some(c) if is_identifier(c) && !c.starts_with('_') && !c.starts_with("sqlite_") => {
            c.to_owned()
        }
        Some(c) => {
            problem(
                Some("collection"),
                format!(
                    "'{c}' is not a valid collection name (^[A-Za-z][A-Za-z0-9_]{{0,63}}$, no 'sqlite_' prefix)"
                ),
            );
            String::new()
        }
        None => {
            problem(Some("collection"), "missing string 'collection'".into());
            String::new()
        }
    };
    let description = obj
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut fields: Vec<FieldDef> = Vec::new();
    match obj.get("fields") {
        Some(Value::Array(list)) => {
            for (i, f) in list.iter().enumerate() {
                match parse_field(f) {
                    Ok(fd) => {
                        if fields.iter().any(|x| x.name == fd.name) {
                            problem(Some(&fd.name), "declared twice".into());
                        } else {
                            fields.push(fd);
                        }
                    }
                    Err((name, reason)) => {
                        let name = name.unwrap_or_else(|| format!("fields[{i}]"));
                        problem(Some(&name), reason);
                    }
                }
            }
        }
        _ => problem(Some("fields"), "missing array 'fields'".into()),
    }
    let by_name: HashMap<String, usize> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i))
        .collect();
    let mut indexes: Vec<IndexDef> = Vec::new();
    // A declared compound index whose first field is `f` already serves filters on `f`.
    let led_by_compound = |f: &str| -> bool {
        obj.get("indexes")
            .and_then(Value::as_array)
            .is_some_and(|l| {
                l.iter().any(|d| {
                    d.get("fields")
                        .and_then(Value::as_array)
                        .and_then(|a| a.first())
                        .and_then(Value::as_str)
                        == Some(f)
                })
            })
    };
    for f in &fields {
        if f.unique {
            indexes.push(IndexDef {
                name: format!("uq_{collection}_{}", f.name),
                fields: vec![f.name.clone()],
                unique: true,
            });
        } else if f.indexed && !led_by_compound(&f.name) {
            indexes.push(IndexDef {
                name: format!("idx_{collection}_{}", f.name),
                fields: vec![f.name.clone()],
                unique: false,
            });
        }
    }
    if let Some(ix) = obj.get("indexes") {
        match ix.as_array() {
            Some(list) => {
                for (i, def) in list.iter().enumerate() {
                    let at = format!("indexes[{i}]");
                    let unique = def.get("unique").and_then(Value::as_bool).unwrap_or(false);
                    let Some(names) = def.get("fields").and_then(Value::as_array) else {
                        problem(Some(&at), "needs an array 'fields'".into());
                        continue;
                    };
                    let mut cols = Vec::new();
                    for n in names {
                        match n.as_str() {
                            Some(n) if by_name.contains_key(n) || SYSTEM_FIELDS.contains(&n) => {
                                cols.push(n.to_owned());
                            }
                            _ => problem(Some(&at), format!("unknown field {n} in index")),
                        }
                    }
                    if cols.is_empty() || cols.len() != names.len() {
                        continue;
                    }
                    let kind = if unique { "uq" } else { "idx" };
                    indexes.push(IndexDef {
                        name: format!("{kind}_{collection}_{}", cols.join("_")),
                        fields: cols,
                        unique,
                    });
                }
            }
            None => problem(Some("indexes"), "must be an array".into()),
        }
    }
    // Every table is listed newest-first by default.
    indexes.push(IndexDef {
        name: format!("idx_{collection}_createdAt"),
        fields: vec!["createdAt".into()],
        unique: false,
    });
    indexes.dedup_by(|a, b| a.name == b.name);
    let archive = match obj.get("archive") {
        None | Some(Value::Null) => None,
        Some(a) => {
            let max_rows = a.get("maxRows").and_then(Value::as_u64);
            let per = a.get("rowsPerArchive").and_then(Value::as_u64);
            let order = a.get("orderBy").and_then(Value::as_str);
            match (max_rows, per, order) {
                (Some(m), Some(p), Some(o))
                    if m > 0
                        && p > 0
                        && p <= m
                        && (by_name.contains_key(o) || SYSTEM_FIELDS.contains(&o)) =>
                {
                    Some(ArchiveRule {
                        max_rows: m,
                        rows_per_archive: p,
                        order_by: o.to_owned(),
                    })
                }
                _ => {
                    problem(
                        Some("archive"),
                        "needs maxRows > 0, 0 < rowsPerArchive <= maxRows and orderBy naming a field"
                            .into(),
                    );
                    None
                }
            }
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CollectionSchema {
        source: file.to_owned(),
        collection,
        description,
        fields,
        indexes,
        archive,
        by_name,
    })
}

type FieldErr = (Option<String>, String);

fn parse_field(v: &Value) -> Result<FieldDef, FieldErr> {
    let obj: &Map<String, Value> = v
        .as_object()
        .ok_or((None, "a field must be an object".to_owned()))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or((None, "missing string 'name'".to_owned()))?
        .to_owned();
    let err = |reason: String| (Some(name.clone()), reason);
    if !is_identifier(&name) {
        return Err(err(
            "not a valid field name (^[A-Za-z_][A-Za-z0-9_]{0,63}$)".into(),
        ));
    }
    if SYSTEM_FIELDS.contains(&name.as_str()) {
        return Err(err("is a system column and cannot be declared".into()));
    }
    for k in obj.keys() {
        if ![
            "name",
            "type",
            "required",
            "nullable",
            "maxLength",
            "values",
            "unique",
            "indexed",
            "default",
            "references",
            "description",
        ]
        .contains(&k.as_str())
        {
            return Err(err(format!("unknown key '{k}'")));
        }
    }
    let ty_s = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing string 'type'".into()))?;
    let ty = FieldType::parse(ty_s).ok_or_else(|| {
        err(format!(
            "unknown type '{ty_s}' (string, number, integer, boolean, date, json, uuid, enum)"
        ))
    })?;
    let flag = |k: &str| -> Result<Option<bool>, FieldErr> {
        match obj.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(err(format!("'{k}' must be a boolean"))),
        }
    };
    let required = flag("required")?.unwrap_or(false);
    let nullable = flag("nullable")?.unwrap_or(!required);
    if required && nullable {
        return Err(err("cannot be both required and nullable".into()));
    }
    let unique = flag("unique")?.unwrap_or(false);
    let indexed = flag("indexed")?.unwrap_or(false);
    let max_length = match obj.get("maxLength") {
        None => None,
        Some(n) => match n.as_u64() {
            Some(n)
                if n > 0 && matches!(ty, FieldType::String | FieldType::Enum | FieldType::Uuid) =>
            {
                Some(usize::try_from(n).unwrap_or(usize::MAX))
            }
            _ => {
                return Err(err(
                    "'maxLength' must be a positive integer on a string field".into(),
                ));
            }
        },
    };
    let values: Vec<String> = match obj.get("values") {
        None => Vec::new(),
        Some(Value::Array(a)) if ty == FieldType::Enum => {
            let vals: Option<Vec<String>> =
                a.iter().map(|x| x.as_str().map(str::to_owned)).collect();
            vals.ok_or_else(|| err("'values' must be strings".into()))?
        }
        Some(_) => return Err(err("'values' is only for enum fields, as an array".into())),
    };
    if ty == FieldType::Enum && values.is_empty() {
        return Err(err("an enum needs a non-empty 'values' list".into()));
    }
    if ty == FieldType::Json && (unique || indexed) {
        return Err(err("json fields cannot be indexed or unique".into()));
    }
    let references = match obj.get("references") {
        None => None,
        Some(Value::String(r)) if is_identifier(r) => Some(r.clone()),
        Some(_) => return Err(err("'references' must name a collection".into())),
    };
    if references.is_some() && !matches!(ty, FieldType::String | FieldType::Uuid) {
        return Err(err("'references' needs a string or uuid field".into()));
    }
    let description = obj
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut def = FieldDef {
        name: name.clone(),
        ty,
        required,
        nullable,
        max_length,
        values,
        unique,
        // Foreign keys are looked up by id on every write of the referencing row.
        indexed: indexed || references.is_some(),
        default: None,
        references,
        description,
    };
    if let Some(d) = obj.get("default") {
        match crate::value::coerce(&def, d) {
            Ok(_) => def.default = Some(d.clone()),
            Err(reason) => return Err(err(format!("invalid default: {reason}"))),
        }
    }
    Ok(def)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_are_checked() {
        assert!(is_identifier("chat_messages"));
        assert!(is_identifier("_x1"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("1abc"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier("a\"; DROP TABLE users; --"));
        assert!(!is_identifier(&"a".repeat(65)));
        assert!(is_identifier(&"a".repeat(64)));
    }

    #[test]
    fn builtins_all_load_without_problems() {
        let set = scan(None);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        for c in [
            "users",
            "rooms",
            "chat_messages",
            "user_states",
            "sessions",
            "training_examples",
            "decision_proposals",
            "system_config",
        ] {
            assert!(set.get(c).is_some(), "missing {c}");
        }
        let chat = set.get("chat_messages").expect("chat");
        assert!(chat.archive.is_some());
        assert!(
            chat.indexes
                .iter()
                .any(|i| i.fields == ["roomId", "timestamp"])
        );
    }

    #[test]
    fn bad_files_report_file_field_and_reason_and_the_rest_load() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("a_bad.json"), "{ not json").expect("w");
        std::fs::write(
            dir.path().join("b_badfield.json"),
            json!({"collection": "notes", "fields": [
                {"name": "title", "type": "strin"},
                {"name": "x; DROP", "type": "string"}
            ]})
            .to_string(),
        )
        .expect("w");
        std::fs::write(
            dir.path().join("c_good.toml"),
            "collection = \"notes2\"\n[[fields]]\nname = \"title\"\ntype = \"string\"\nmaxLength = 10\nindexed = true\n",
        )
        .expect("w");
        let set = scan(Some(dir.path()));
        assert!(set.get("notes2").is_some());
        assert!(set.get("notes").is_none());
        assert!(set.get("users").is_some());
        let p: Vec<_> = set.problems.iter().collect();
        assert!(
            p.iter()
                .any(|p| p.file.ends_with("a_bad.json") && p.field.is_none())
        );
        assert!(p.iter().any(|p| p.file.ends_with("b_badfield.json")
            && p.field.as_deref() == Some("title")
            && p.reason.contains("unknown type")));
        assert!(p.iter().any(|p| p.field.as_deref() == Some("x; DROP")));
    }

    #[test]
    fn field_rules_are_checked() {
        let bad = [
            json!({"name": "id", "type": "string"}),
            json!({"name": "e", "type": "enum"}),
            json!({"name": "j", "type": "json", "indexed": true}),
            json!({"name": "n", "type": "integer", "maxLength": 3}),
            json!({"name": "r", "type": "string", "required": true, "nullable": true}),
            json!({"name": "d", "type": "integer", "default": "x"}),
            json!({"name": "q", "type": "string", "colour": "red"}),
        ];
        for f in bad {
            assert!(parse_field(&f).is_err(), "{f} should be rejected");
        }
        let ok = parse_field(&json!({"name": "n", "type": "integer", "default": 3})).expect("ok");
        assert_eq!(ok.default, Some(json!(3)));
    }

    #[test]
    fn dangling_reference_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("x.json"),
            json!({"collection": "x", "fields": [{"name": "p", "type": "string", "references": "nope"}]})
                .to_string(),
        )
        .expect("w");
        let set = scan(Some(dir.path()));
        assert!(set.get("x").is_none());
        assert!(set.problems.iter().any(|p| p.reason.contains("nope")));
    }
}
