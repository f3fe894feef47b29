//! The values both paths speak: handles, list parameters, pages and batch operations. Plain
//! data, no SQLite: the data daemon's store and every client share these types.

use serde::Serialize;
use serde_json::{Map, Value};

/// A database handle name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Handle {
    /// The main database.
    Primary,
    /// The archive files (read-only to callers).
    Archive,
    /// One persona's private database.
    Persona(String),
}

/// A handle name that is none of `primary`, `archive` or `persona:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown handle '{name}' (primary, archive, persona:<id> with id [A-Za-z0-9_-]{{1,64}})")]
pub struct InvalidHandle {
    /// The name given, shortened to 80 characters.
    pub name: String,
}

impl Handle {
    /// Parse `primary` (or empty), `archive` or `persona:<id>`.
    pub fn parse(s: &str) -> Result<Handle, InvalidHandle> {
        match s {
            "primary" | "" => Ok(Handle::Primary),
            "archive" => Ok(Handle::Archive),
            _ => match s.strip_prefix("persona:") {
                Some(id) if is_persona_id(id) => Ok(Handle::Persona(id.to_owned())),
                _ => Err(InvalidHandle {
                    name: s.chars().take(80).collect(),
                }),
            },
        }
    }

    /// The handle's name.
    pub fn as_string(&self) -> String {
        match self {
            Handle::Primary => "primary".into(),
            Handle::Archive => "archive".into(),
            Handle::Persona(id) => format!("persona:{id}"),
        }
    }
}

/// Whether `id` may name a persona database: 1–64 of `[A-Za-z0-9_-]`.
pub fn is_persona_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One operation of a batch (`data/batch`), all in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    /// Create a record.
    Create {
        /// Collection.
        collection: String,
        /// Id (UUID v7 if absent).
        id: Option<String>,
        /// Fields.
        data: Map<String, Value>,
    },
    /// Update a record.
    Update {
        /// Collection.
        collection: String,
        /// Id.
        id: String,
        /// Fields to change.
        data: Map<String, Value>,
        /// Optimistic check.
        version: Option<i64>,
    },
    /// Delete a record.
    Delete {
        /// Collection.
        collection: String,
        /// Id.
        id: String,
    },
}

impl BatchOp {
    /// The operation as `data/batch` takes it on the wire.
    pub fn to_wire(&self) -> Value {
        let mut o = Map::new();
        match self {
            BatchOp::Create {
                collection,
                id,
                data,
            } => {
                o.insert("operation".into(), "create".into());
                o.insert("collection".into(), collection.clone().into());
                if let Some(id) = id {
                    o.insert("id".into(), id.clone().into());
                }
                o.insert("data".into(), Value::Object(data.clone()));
            }
            BatchOp::Update {
                collection,
                id,
                data,
                version,
            } => {
                o.insert("operation".into(), "update".into());
                o.insert("collection".into(), collection.clone().into());
                o.insert("id".into(), id.clone().into());
                o.insert("data".into(), Value::Object(data.clone()));
                if let Some(v) = version {
                    o.insert("version".into(), (*v).into());
                }
            }
            BatchOp::Delete { collection, id } => {
                o.insert("operation".into(), "delete".into());
                o.insert("collection".into(), collection.clone().into());
                o.insert("id".into(), id.clone().into());
            }
        }
        Value::Object(o)
    }
}

/// A page of `list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// Records in order.
    pub items: Vec<Value>,
    /// Number of items (or, with `limit: 0`, the number of matching records).
    pub count: u64,
    /// Pass back as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Parameters of `list` beyond the collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListParams {
    /// Filter object.
    pub filter: Option<Value>,
    /// orderBy value.
    pub order_by: Option<Value>,
    /// Page size (0 = count only).
    pub limit: Option<Value>,
    /// Cursor from a previous page.
    pub cursor: Option<String>,
    /// Projection.
    pub fields: Option<Value>,
}

impl ListParams {
    /// Add these parameters to a `data/list` request object.
    pub fn write_wire(&self, o: &mut Map<String, Value>) {
        if let Some(f) = &self.filter {
            o.insert("filter".into(), f.clone());
        }
        if let Some(v) = &self.order_by {
            o.insert("orderBy".into(), v.clone());
        }
        if let Some(v) = &self.limit {
            o.insert("limit".into(), v.clone());
        }
        if let Some(c) = &self.cursor {
            o.insert("cursor".into(), c.clone().into());
        }
        if let Some(v) = &self.fields {
            o.insert("fields".into(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_names_round_trip_and_bad_names_are_refused() {
        for h in [
            Handle::Primary,
            Handle::Archive,
            Handle::Persona("p-1_x".into()),
        ] {
            assert_eq!(Handle::parse(&h.as_string()), Ok(h));
        }
        assert!(Handle::parse("persona:").is_err());
        assert!(Handle::parse("persona:a/b").is_err());
        assert!(Handle::parse("other").is_err());
    }
}
