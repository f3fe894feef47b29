//! Values between JSON and SQLite, checked against a field's rules.
//!
//! [`coerce`] is the single place a JSON value becomes a bound SQL parameter, for writes and for
//! filter operands alike, so a filter compares like with like (a date filter is normalised the
//! same way as the stored date). Dates are stored as canonical UTC text
//! (`YYYY-MM-DDTHH:MM:SS.mmmZ`), which sorts chronologically as text; the text and its parser
//! are the protocol's ([`daemonhost_protocol::time`]), shared with every daemon and worker.

use crate::field::{FieldDef, FieldType};
use daemonhost_protocol::time::{MAX_MS, MIN_MS, format_ms, parse_date_ms};
use rusqlite::types::{ToSqlOutput, Value as Sql, ValueRef};
use serde_json::Value;

/// Convert `v` for `field`, or say which rule it breaks (the caller adds collection and field).
pub fn coerce(field: &FieldDef, v: &Value) -> Result<Sql, String> {
    coerce_ref(field, v).map(Coerced::into_sql)
}

/// A value converted for a field, borrowing the given text when it is stored unchanged (the
/// write path binds it without a copy of its own). [`coerce`] is this, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Coerced<'a> {
    /// SQL NULL.
    Null,
    /// An integer (also booleans, 0/1).
    Integer(i64),
    /// A finite float.
    Real(f64),
    /// Text stored as given.
    Borrowed(&'a str),
    /// Text normalised or serialised (dates, uuids, JSON).
    Owned(String),
}

impl Coerced<'_> {
    /// The owned SQL value.
    pub fn into_sql(self) -> Sql {
        match self {
            Coerced::Null => Sql::Null,
            Coerced::Integer(i) => Sql::Integer(i),
            Coerced::Real(f) => Sql::Real(f),
            Coerced::Borrowed(s) => Sql::Text(s.to_owned()),
            Coerced::Owned(s) => Sql::Text(s),
        }
    }

    /// The text, for text values.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Coerced::Borrowed(s) => Some(s),
            Coerced::Owned(s) => Some(s),
            _ => None,
        }
    }
}

impl rusqlite::ToSql for Coerced<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Coerced::Null => ValueRef::Null,
            Coerced::Integer(i) => ValueRef::Integer(*i),
            Coerced::Real(f) => ValueRef::Real(*f),
            Coerced::Borrowed(s) => ValueRef::Text(s.as_bytes()),
            Coerced::Owned(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// [`coerce`] without copying text that is stored as given.
pub fn coerce_ref<'a>(field: &FieldDef, v: &'a Value) -> Result<Coerced<'a>, String> {
    if v.is_null() {
        return if field.nullable {
            Ok(Coerced::Null)
        } else {
            Err("must not be null".into())
        };
    }
    let ty = field.ty.as_str();
    let wrong = || format!("expected {ty}, got {}", json_kind(v));
    match field.ty {
        FieldType::String | FieldType::Enum | FieldType::Uuid => {
            let s = v.as_str().ok_or_else(wrong)?;
            if let Some(max) = field.max_length
                // Bytes bound characters from above: only long strings need counting.
                && s.len() > max
            {
                let n = s.chars().count();
                if n > max {
                    return Err(format!("longer than maxLength {max} ({n} characters)"));
                }
            }
            match field.ty {
                FieldType::Enum if !field.values.iter().any(|x| x == s) => Err(format!(
                    "'{}' is not one of [{}]",
                    truncate(s),
                    field.values.join(", ")
                )),
                FieldType::Uuid => uuid::Uuid::parse_str(s)
                    .map(|u| Coerced::Owned(u.hyphenated().to_string()))
                    .map_err(|_| format!("'{}' is not a valid uuid", truncate(s))),
                _ => Ok(Coerced::Borrowed(s)),
            }
        }
        FieldType::Number => match v.as_f64() {
            Some(f) if f.is_finite() => Ok(Coerced::Real(f)),
            _ => Err(wrong()),
        },
        FieldType::Integer => v.as_i64().map(Coerced::Integer).ok_or_else(wrong),
        FieldType::Boolean => v
            .as_bool()
            .map(|b| Coerced::Integer(i64::from(b)))
            .ok_or_else(wrong),
        FieldType::Date => match v {
            Value::String(s) => parse_date_ms(s)
                .map(|ms| Coerced::Owned(format_ms(ms)))
                .ok_or_else(|| format!("'{}' is not an RFC 3339 date", truncate(s))),
            Value::Number(n) => n
                .as_i64()
                .filter(|ms| (MIN_MS..=MAX_MS).contains(ms))
                .map(|ms| Coerced::Owned(format_ms(ms)))
                .ok_or_else(|| "epoch milliseconds out of range".to_owned()),
            _ => Err(wrong()),
        },
        // `to_string` straight into a buffer (`Display` goes through the formatter, slower).
        FieldType::Json => serde_json::to_string(v)
            .map(Coerced::Owned)
            .map_err(|e| format!("cannot be stored as JSON: {e}")),
    }
}

/// A stored value back to JSON, by the field's type.
pub fn to_json(ty: FieldType, v: Sql) -> Value {
    match (ty, v) {
        (_, Sql::Null) => Value::Null,
        (FieldType::Boolean, Sql::Integer(i)) => Value::Bool(i != 0),
        (FieldType::Json, Sql::Text(t)) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
        (_, Sql::Integer(i)) => Value::from(i),
        (_, Sql::Real(f)) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        (_, Sql::Text(t)) => Value::String(t),
        (_, Sql::Blob(b)) => Value::from(b),
    }
}

/// The JSON type of a value, for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 {
        let mut t: String = s.chars().take(40).collect();
        t.push('…');
        t
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(ty: FieldType) -> FieldDef {
        FieldDef {
            name: "f".into(),
            ty,
            required: false,
            nullable: true,
            max_length: None,
            values: vec![],
            unique: false,
            indexed: false,
            default: None,
            references: None,
            description: None,
        }
    }

    #[test]
    fn each_type_rejects_wrong_values_with_a_reason() {
        let cases = [
            (FieldType::String, json!(1), "expected string"),
            (FieldType::Number, json!("1"), "expected number"),
            (FieldType::Integer, json!(1.5), "expected integer"),
            (FieldType::Boolean, json!(0), "expected boolean"),
            (FieldType::Date, json!("soon"), "RFC 3339"),
            (FieldType::Uuid, json!("abc"), "valid uuid"),
        ];
        for (ty, v, msg) in cases {
            let e = coerce(&field(ty), &v).expect_err("reject");
            assert!(e.contains(msg), "{ty:?}: {e}");
        }
        let mut en = field(FieldType::Enum);
        en.values = vec!["a".into(), "b".into()];
        assert!(
            coerce(&en, &json!("c"))
                .expect_err("enum")
                .contains("not one of")
        );
        let mut s = field(FieldType::String);
        s.max_length = Some(3);
        assert!(
            coerce(&s, &json!("abcd"))
                .expect_err("len")
                .contains("maxLength 3")
        );
        assert_eq!(coerce(&s, &json!("abc")), Ok(Sql::Text("abc".into())));
        s.nullable = false;
        assert!(coerce(&s, &Value::Null).expect_err("null").contains("null"));
    }

    #[test]
    fn values_come_back_as_json() {
        assert_eq!(to_json(FieldType::Boolean, Sql::Integer(1)), json!(true));
        assert_eq!(
            to_json(FieldType::Json, Sql::Text("{\"a\":[1]}".into())),
            json!({"a": [1]})
        );
        assert_eq!(to_json(FieldType::Integer, Sql::Integer(7)), json!(7));
    }
}
