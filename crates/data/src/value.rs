//! Values between JSON and SQLite, checked against a field's rules.
//!
//! [`coerce`] is the single place a JSON value becomes a bound SQL parameter, for writes and for
//! filter operands alike, so a filter compares like with like (a date filter is normalised the
//! same way as the stored date). Dates are stored as canonical UTC text
//! (`YYYY-MM-DDTHH:MM:SS.mmmZ`), which sorts chronologically as text.

use crate::field::{FieldDef, FieldType};
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

const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01
const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The canonical text of now.
pub fn now_text() -> String {
    format_ms(now_ms())
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Canonical UTC text for epoch milliseconds.
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, sec, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{milli:03}Z");
    }
    // The common case without the formatting machinery (every write formats one or more).
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, mi);
    put(17, 2, sec);
    put(20, 3, milli);
    String::from_utf8_lossy(&b).into_owned()
}

/// Parse `YYYY-MM-DD`, or `YYYY-MM-DD[T ]HH:MM[:SS[.fff…]](Z|±HH:MM)` into epoch milliseconds.
pub fn parse_date_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let day_ms = days_from_civil(y, mo, d) * 86_400_000;
    if b.len() == 10 {
        return Some(day_ms);
    }
    if b[10] != b'T' && b[10] != b't' && b[10] != b' ' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    if b.get(13) != Some(&b':') {
        return None;
    }
    let mut i = 16;
    let mut sec = 0;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b':') {
        sec = num(17..19)?;
        i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return None;
            }
            let digits = &s[start..i.min(start + 3)];
            let scale = 10_i64.pow(u32::try_from(3 - digits.len()).ok()?);
            frac_ms = digits.parse::<i64>().ok()? * scale;
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let offset_ms = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = (oh * 60 + om) * 60_000;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let ms = day_ms + ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms - offset_ms;
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
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
    fn dates_round_trip_and_normalise() {
        assert_eq!(parse_date_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        let ms = parse_date_ms("2024-02-29T12:34:56.789+02:00").expect("date");
        assert_eq!(format_ms(ms), "2024-02-29T10:34:56.789Z");
        assert_eq!(
            parse_date_ms("2024-02-29"),
            parse_date_ms("2024-02-29T00:00Z")
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-01-01T25:00Z",
            "yesterday",
            "2024-01-01T10:00",
        ] {
            assert_eq!(parse_date_ms(bad), None, "{bad}");
        }
        for ms in [-86_400_001, 0, 1_700_000_000_123, MAX_MS, MIN_MS] {
            assert_eq!(parse_date_ms(&format_ms(ms)), Some(ms));
        }
        assert_eq!(format_ms(MIN_MS), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_ms(MAX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(MIN_MS - 1), "-001-12-31T23:59:59.999Z");
        assert_eq!(format_ms(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
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
