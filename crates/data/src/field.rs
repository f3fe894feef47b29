//! A declared field: its type and rules. Shared by [`crate::schema`] (which parses them) and
//! [`crate::value`] (which converts values by them).

use serde::Serialize;
use serde_json::Value;

/// A field's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// A finite float.
    Number,
    /// A 64-bit integer.
    Integer,
    /// `true` / `false` (stored 0/1).
    Boolean,
    /// An instant: RFC 3339 text or epoch milliseconds in, canonical UTC text out.
    Date,
    /// Any JSON value (stored as text).
    Json,
    /// A UUID in canonical text form.
    Uuid,
    /// One of the declared `values`.
    Enum,
}

impl FieldType {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" | "text" => FieldType::String,
            "number" | "float" | "real" => FieldType::Number,
            "integer" | "int" => FieldType::Integer,
            "boolean" | "bool" => FieldType::Boolean,
            "date" | "datetime" => FieldType::Date,
            "json" => FieldType::Json,
            "uuid" => FieldType::Uuid,
            "enum" => FieldType::Enum,
            _ => return None,
        })
    }

    /// SQLite column type (affinity).
    pub fn sql_type(self) -> &'static str {
        match self {
            FieldType::Number => "REAL",
            FieldType::Integer | FieldType::Boolean => "INTEGER",
            _ => "TEXT",
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Json => "json",
            FieldType::Uuid => "uuid",
            FieldType::Enum => "enum",
        }
    }
}

/// One declared field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDef {
    /// Column name.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Must be present and non-null on create.
    pub required: bool,
    /// Whether null is accepted.
    pub nullable: bool,
    /// Longest text, in characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Enum members.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Enforced by a unique index.
    pub unique: bool,
    /// Gets an index (filters and order on it use it).
    pub indexed: bool,
    /// Applied on create when the field is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Collection whose record id this value must be (checked in the write transaction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// For people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
