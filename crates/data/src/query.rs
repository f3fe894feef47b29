//! `data/list` queries: Mongo-style filters, `orderBy`, cursor pagination, projections, all
//! compiled to one parameterised SQL statement.
//!
//! Injection safety rests on two rules applied here: every identifier (filter field, orderBy
//! field, projected field) must be a column of the collection's schema, found by exact lookup
//! (so it also matched the identifier regex when the schema loaded), and is then quoted; every
//! value is a bound parameter, converted by [`crate::value::coerce`] like a write would be.
//!
//! Filter semantics (documented in `data/list`'s help and mirrored by the reference evaluator in
//! the tests): fields are ANDed; a bare value means `$eq`; `null` means "is null/missing";
//! `$ne` and `$nin` also match null; comparisons never match null; `$in: []` matches nothing;
//! `$contains` is a substring test on text fields and an element test on JSON arrays.
//!
//! Ordering always ends with `id` so the order is total, which is what makes keyset cursors
//! exact: the cursor holds the last row's order values plus its id, and the next page is
//! "strictly after" that tuple in the same order (NULLs first ascending, last descending, as
//! SQLite sorts them).

use crate::ddl::q;
use crate::error::DataError;
use crate::schema::{CollectionSchema, FieldDef, FieldType};
use crate::value::{coerce, json_kind};
use daemonhost_protocol::params::{ParamError, ParamType};
use rusqlite::types::Value as Sql;
use serde_json::{Map, Value, json};

/// Most rows one page may return.
pub const MAX_LIMIT: usize = 10_000;
/// Page size when none is given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most elements in one `$in` / `$nin` list.
pub const MAX_IN: usize = 1000;

/// One ordering key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    /// Column.
    pub field: String,
    /// Descending.
    pub desc: bool,
}

/// A compiled SQL fragment with its parameters in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fragment {
    /// SQL text with `?` placeholders (`1` when empty).
    pub sql: String,
    /// Values for the placeholders.
    pub params: Vec<Sql>,
}

/// The field definition for a column, including the system columns.
pub fn column_def(schema: &CollectionSchema, name: &str) -> Option<FieldDef> {
    let sys = |ty| FieldDef {
        name: name.to_owned(),
        ty,
        required: true,
        nullable: false,
        max_length: None,
        values: vec![],
        unique: false,
        indexed: true,
        default: None,
        references: None,
        description: None,
    };
    match name {
        "id" => Some(sys(FieldType::String)),
        "createdAt" | "updatedAt" => Some(sys(FieldType::Date)),
        "version" => Some(sys(FieldType::Integer)),
        _ => schema.field(name).cloned(),
    }
}

fn bad(msg: String) -> DataError {
    DataError::BadRequest(msg)
}

/// Look up a column named by the caller; anything not in the schema is refused.
fn checked_column(
    schema: &CollectionSchema,
    name: &str,
    what: &str,
) -> Result<FieldDef, DataError> {
    column_def(schema, name).ok_or_else(|| {
        let shown: String = name.chars().take(64).collect();
        DataError::validation(
            &schema.collection,
            shown,
            format!("unknown field in {what}"),
        )
    })
}

/// Convert a filter operand: like a write, but null is always allowed and length limits do not
/// apply (a too-long operand simply matches nothing).
fn operand(schema: &CollectionSchema, f: &FieldDef, v: &Value) -> Result<Sql, DataError> {
    let mut f = f.clone();
    f.nullable = true;
    f.max_length = None;
    if f.ty == FieldType::Json {
        return Err(bad(format!(
            "{}.{}: json fields support only $exists and $contains",
            schema.collection, f.name
        )));
    }
    coerce(&f, v).map_err(|reason| DataError::validation(&schema.collection, &f.name, reason))
}

/// Compile a filter object into a WHERE fragment.
pub fn compile_filter(
    schema: &CollectionSchema,
    filter: Option<&Value>,
) -> Result<Fragment, DataError> {
    let mut parts: Vec<String> = Vec::new();
    let mut params = Vec::new();
    let obj = match filter {
        None | Some(Value::Null) => {
            return Ok(Fragment {
                sql: "1".into(),
                params,
            });
        }
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ParamError::wrong_type("filter", ParamType::Object).into()),
    };
    for (name, cond) in obj {
        let f = checked_column(schema, name, "filter")?;
        let col = q(&f.name);
        match cond {
            Value::Object(ops) if ops.keys().next().is_some_and(|k| k.starts_with('$')) => {
                for (op, v) in ops {
                    parts.push(compile_op(schema, &f, &col, op, v, &mut params)?);
                }
            }
            Value::Object(_) | Value::Array(_) => {
                return Err(bad(format!(
                    "{}.{name}: use an operator object like {{\"$eq\": …}} (got {})",
                    schema.collection,
                    json_kind(cond)
                )));
            }
            v => parts.push(compile_op(schema, &f, &col, "$eq", v, &mut params)?),
        }
    }
    if parts.is_empty() {
        parts.push("1".into());
    }
    Ok(Fragment {
        sql: parts.join(" AND "),
        params,
    })
}

fn compile_op(
    schema: &CollectionSchema,
    f: &FieldDef,
    col: &str,
    op: &str,
    v: &Value,
    params: &mut Vec<Sql>,
) -> Result<String, DataError> {
    let cmp = |sym: &str, params: &mut Vec<Sql>| -> Result<String, DataError> {
        if v.is_null() {
            return Err(bad(format!(
                "{}.{}: {op} needs a non-null value",
                schema.collection, f.name
            )));
        }
        params.push(operand(schema, f, v)?);
        Ok(format!("{col} {sym} ?"))
    };
    match op {
        "$eq" => match operand(schema, f, v)? {
            Sql::Null => Ok(format!("{col} IS NULL")),
            s => {
                params.push(s);
                Ok(format!("{col} = ?"))
            }
        },
        "$ne" => match operand(schema, f, v)? {
            Sql::Null => Ok(format!("{col} IS NOT NULL")),
            s => {
                params.push(s);
                Ok(format!("({col} IS NULL OR {col} <> ?)"))
            }
        },
        "$gt" => cmp(">", params),
        "$gte" => cmp(">=", params),
        "$lt" => cmp("<", params),
        "$lte" => cmp("<=", params),
        "$in" | "$nin" => {
            let list = v.as_array().ok_or_else(|| {
                bad(format!(
                    "{}.{}: {op} needs an array",
                    schema.collection, f.name
                ))
            })?;
            if list.len() > MAX_IN {
                return Err(bad(format!("{op} accepts at most {MAX_IN} values")));
            }
            let mut has_null = false;
            let mut n = 0;
            for x in list {
                match operand(schema, f, x)? {
                    Sql::Null => has_null = true,
                    s => {
                        params.push(s);
                        n += 1;
                    }
                }
            }
            let marks = vec!["?"; n].join(", ");
            Ok(match (op, n, has_null) {
                ("$in", 0, false) => "0".into(),
                ("$in", 0, true) => format!("{col} IS NULL"),
                ("$in", _, false) => format!("{col} IN ({marks})"),
                ("$in", _, true) => format!("({col} IS NULL OR {col} IN ({marks}))"),
                (_, 0, false) => "1".into(),
                (_, 0, true) => format!("{col} IS NOT NULL"),
                (_, _, false) => format!("({col} IS NULL OR {col} NOT IN ({marks}))"),
                (_, _, true) => format!("({col} IS NOT NULL AND {col} NOT IN ({marks}))"),
            })
        }
        "$exists" => match v {
            Value::Bool(true) => Ok(format!("{col} IS NOT NULL")),
            Value::Bool(false) => Ok(format!("{col} IS NULL")),
            _ => Err(bad(format!(
                "{}.{}: $exists needs true or false",
                schema.collection, f.name
            ))),
        },
        "$contains" => match f.ty {
            FieldType::String | FieldType::Enum | FieldType::Uuid => {
                let s = v.as_str().ok_or_else(|| {
                    bad(format!(
                        "{}.{}: $contains needs a string",
                        schema.collection, f.name
                    ))
                })?;
                params.push(Sql::Text(s.to_owned()));
                Ok(format!("instr({col}, ?) > 0"))
            }
            FieldType::Json => {
                let p = match v {
                    Value::String(s) => Sql::Text(s.clone()),
                    Value::Bool(b) => Sql::Integer(i64::from(*b)),
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => Sql::Integer(i),
                        None => Sql::Real(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    _ => {
                        return Err(bad(format!(
                            "{}.{}: $contains on json needs a scalar",
                            schema.collection, f.name
                        )));
                    }
                };
                params.push(p);
                Ok(format!(
                    "(json_valid({col}) AND json_type({col}) = 'array' AND EXISTS (SELECT 1 FROM json_each({col}) AS je WHERE je.value = ?))"
                ))
            }
            _ => Err(bad(format!(
                "{}.{}: $contains works on text and json fields",
                schema.collection, f.name
            ))),
        },
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(bad(format!(
                "{}.{}: unknown operator '{shown}' (use $eq $ne $gt $gte $lt $lte $in $nin $exists $contains)",
                schema.collection, f.name
            )))
        }
    }
}

/// Parse `orderBy`: `[{field, direction}]`, a single such object, `"field"` or `"-field"`.
/// Defaults to `createdAt desc`. `id` is appended as the tie-breaker unless present.
pub fn parse_order(
    schema: &CollectionSchema,
    v: Option<&Value>,
) -> Result<Vec<OrderKey>, DataError> {
    let mut keys = Vec::new();
    let one = |x: &Value| -> Result<OrderKey, DataError> {
        let (field, desc) = match x {
            Value::String(s) => match s.strip_prefix('-') {
                Some(f) => (f.to_owned(), true),
                None => (s.clone(), false),
            },
            Value::Object(o) => {
                let field = o
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("orderBy entries need a string 'field'".into()))?;
                let desc = match o.get("direction").and_then(Value::as_str) {
                    None | Some("asc" | "ASC") => false,
                    Some("desc" | "DESC") => true,
                    Some(d) => {
                        let d: String = d.chars().take(16).collect();
                        return Err(bad(format!(
                            "orderBy direction must be asc or desc, got '{d}'"
                        )));
                    }
                };
                (field.to_owned(), desc)
            }
            other => return Err(bad(format!("orderBy entry cannot be {}", json_kind(other)))),
        };
        let f = checked_column(schema, &field, "orderBy")?;
        if f.ty == FieldType::Json {
            return Err(bad(format!(
                "{}.{field}: cannot order by a json field",
                schema.collection
            )));
        }
        Ok(OrderKey { field, desc })
    };
    match v {
        None | Some(Value::Null) => keys.push(OrderKey {
            field: "createdAt".into(),
            desc: true,
        }),
        Some(Value::Array(a)) => {
            if a.len() > 8 {
                return Err(bad("orderBy accepts at most 8 keys".into()));
            }
            for x in a {
                keys.push(one(x)?);
            }
        }
        Some(x) => keys.push(one(x)?),
    }
    if keys.is_empty() {
        keys.push(OrderKey {
            field: "createdAt".into(),
            desc: true,
        });
    }
    if !keys.iter().any(|k| k.field == "id") {
        let desc = keys.last().is_some_and(|k| k.desc);
        keys.push(OrderKey {
            field: "id".into(),
            desc,
        });
    }
    Ok(keys)
}

/// `ORDER BY` text for keys.
pub fn order_sql(keys: &[OrderKey]) -> String {
    keys.iter()
        .map(|k| format!("{} {}", q(&k.field), if k.desc { "DESC" } else { "ASC" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn order_tag(keys: &[OrderKey]) -> Vec<String> {
    keys.iter()
        .map(|k| format!("{}:{}", k.field, if k.desc { "desc" } else { "asc" }))
        .collect()
}

/// Encode the position after a row whose order values are `values` (one per key, id last).
pub fn encode_cursor(keys: &[OrderKey], values: &[Sql]) -> String {
    let vals: Vec<Value> = values
        .iter()
        .map(|v| match v {
            Sql::Null => Value::Null,
            Sql::Integer(i) => json!(i),
            Sql::Real(f) => json!({ "r": f }),
            Sql::Text(t) => json!(t),
            Sql::Blob(_) => Value::Null,
        })
        .collect();
    let doc = json!({ "o": order_tag(keys), "v": vals });
    let bytes = doc.to_string().into_bytes();
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Decode a cursor for these keys; a cursor from another ordering is refused.
pub fn decode_cursor(keys: &[OrderKey], cursor: &str) -> Result<Vec<Sql>, DataError> {
    let invalid = || bad("invalid cursor".into());
    if !cursor.len().is_multiple_of(2) || cursor.len() > 16_384 {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let tag: Vec<String> = doc
        .get("o")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .ok_or_else(invalid)?;
    if tag != order_tag(keys) {
        return Err(bad("cursor was made for a different orderBy".into()));
    }
    let vals = doc.get("v").and_then(Value::as_array).ok_or_else(invalid)?;
    if vals.len() != keys.len() {
        return Err(invalid());
    }
    vals.iter()
        .map(|v| match v {
            Value::Null => Ok(Sql::Null),
            Value::String(s) => Ok(Sql::Text(s.clone())),
            Value::Number(n) => n.as_i64().map(Sql::Integer).ok_or_else(invalid),
            Value::Object(o) => o
                .get("r")
                .and_then(Value::as_f64)
                .map(Sql::Real)
                .ok_or_else(invalid),
            _ => Err(invalid()),
        })
        .collect()
}

/// The "strictly after this position" predicate for keyset pagination.
///
/// When every key is ascending and no cursor value is NULL it is one row-value comparison,
/// `(k1, k2, …) > (?, ?, …)`, which SQLite answers by seeking the `(k1, …, id)` index straight to
/// the position. The expanded form below (`k1 > ? OR (k1 = ? AND …)`) makes SQLite scan from the
/// first row equal to the cursor's `k1`, so a page deep inside a run of equal `k1` values (rows
/// written in one batch share `createdAt`) cost time proportional to its depth in the run. The
/// two mean the same here: NULLs sort first, so no row after a non-NULL position has a NULL
/// first key, and a row value with a NULL later element compares as not after, exactly where
/// the order puts it before.
pub fn cursor_predicate(keys: &[OrderKey], values: &[Sql]) -> Fragment {
    if !keys.is_empty()
        && keys.len() == values.len()
        && keys.iter().all(|k| !k.desc)
        && values.iter().all(|v| !matches!(v, Sql::Null))
    {
        let cols: Vec<String> = keys.iter().map(|k| q(&k.field)).collect();
        let marks = vec!["?"; keys.len()].join(", ");
        return Fragment {
            sql: format!("({}) > ({marks})", cols.join(", ")),
            params: values.to_vec(),
        };
    }
    let mut sql = String::new();
    let mut params: Vec<Sql> = Vec::new();
    for (i, (k, v)) in keys.iter().zip(values).enumerate().rev() {
        let col = q(&k.field);
        let last = i + 1 == keys.len();
        let (s, p) = match (k.desc, v, last) {
            (false, Sql::Null, true) => (format!("{col} IS NOT NULL"), vec![]),
            (true, Sql::Null, true) => ("0".to_owned(), vec![]),
            (false, v, true) => (format!("{col} > ?"), vec![v.clone()]),
            (true, v, true) => (format!("({col} < ? OR {col} IS NULL)"), vec![v.clone()]),
            (false, Sql::Null, false) => (
                format!("({col} IS NOT NULL OR ({col} IS NULL AND {sql}))"),
                vec![],
            ),
            (true, Sql::Null, false) => (format!("({col} IS NULL AND {sql})"), vec![]),
            (false, v, false) => (
                format!("({col} > ? OR ({col} = ? AND {sql}))"),
                vec![v.clone(), v.clone()],
            ),
            (true, v, false) => (
                format!("({col} < ? OR {col} IS NULL OR ({col} = ? AND {sql}))"),
                vec![v.clone(), v.clone()],
            ),
        };
        let mut all = p;
        all.append(&mut params);
        params = all;
        sql = s;
    }
    Fragment { sql, params }
}

/// Which columns to select: `fields` (validated) plus `id` and the order keys; all columns
/// when `fields` is absent. Returns (select list, projected names or None for all).
pub fn projection(
    schema: &CollectionSchema,
    fields: Option<&Value>,
    keys: &[OrderKey],
) -> Result<(Vec<FieldDef>, Option<Vec<String>>), DataError> {
    let mut cols: Vec<FieldDef> = Vec::new();
    let wanted: Option<Vec<String>> = match fields {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            let mut names = vec!["id".to_owned()];
            for (i, x) in a.iter().enumerate() {
                let n = x.as_str().ok_or_else(|| {
                    ParamError::wrong_type(format!("fields[{i}]"), ParamType::String)
                })?;
                checked_column(schema, n, "fields")?;
                if !names.iter().any(|m| m == n) {
                    names.push(n.to_owned());
                }
            }
            Some(names)
        }
        Some(_) => return Err(ParamError::wrong_type("fields", ParamType::Array).into()),
    };
    match &wanted {
        None => {
            for c in schema.columns() {
                if let Some(d) = column_def(schema, c) {
                    cols.push(d);
                }
            }
        }
        Some(names) => {
            for n in names
                .iter()
                .map(String::as_str)
                .chain(keys.iter().map(|k| k.field.as_str()))
            {
                if !cols.iter().any(|c| c.name == n)
                    && let Some(d) = column_def(schema, n)
                {
                    cols.push(d);
                }
            }
        }
    }
    Ok((cols, wanted))
}

/// Parse `limit`: a non-negative integer (`bad_request` otherwise) of at most [`MAX_LIMIT`]
/// (`validation` above), as the protocol's params reader words it.
pub fn parse_limit(v: Option<&Value>) -> Result<usize, DataError> {
    match v {
        None | Some(Value::Null) => Ok(DEFAULT_LIMIT),
        Some(x) => {
            let n = x
                .as_u64()
                .ok_or_else(|| ParamError::wrong_type("limit", ParamType::UnsignedInteger))?;
            usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_LIMIT)
                .ok_or_else(|| {
                    ParamError::invalid("limit", format!("at most {MAX_LIMIT} (got {n})")).into()
                })
        }
    }
}

/// Strip a record to the projected names.
pub fn project(record: Map<String, Value>, wanted: Option<&[String]>) -> Map<String, Value> {
    match wanted {
        None => record,
        Some(names) => record
            .into_iter()
            .filter(|(k, _)| names.iter().any(|n| n == k))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
