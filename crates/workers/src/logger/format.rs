//! Category validation and line formatting (no dependencies: a civil-date conversion is ~15
//! lines, and it keeps the per-line cost to a few dozen nanoseconds).

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest category accepted, in bytes.
pub const MAX_CATEGORY_LEN: usize = 200;
/// Deepest category accepted, in segments.
pub const MAX_CATEGORY_DEPTH: usize = 8;

/// Check a category: segments of `[A-Za-z0-9_.-]+` separated by `/`, none of them `.` or `..`,
/// no empty segment (so no leading, trailing or doubled `/`), at most [`MAX_CATEGORY_LEN`] bytes
/// and [`MAX_CATEGORY_DEPTH`] segments. Its file is `<root>/<category>.log`. The rules make the
/// path relative and free of traversal by construction: no byte outside the set can appear, so
/// no `\0`, `\`, or absolute path either.
pub fn validate_category(category: &str) -> Result<(), String> {
    if category.is_empty() {
        return Err("category must not be empty".into());
    }
    if category.len() > MAX_CATEGORY_LEN {
        return Err(format!(
            "category is {} bytes long (at most {MAX_CATEGORY_LEN})",
            category.len()
        ));
    }
    let mut depth = 0;
    for seg in category.split('/') {
        depth += 1;
        if seg.is_empty() {
            return Err(format!("category '{category}' has an empty segment"));
        }
        if seg == "." || seg == ".." {
            return Err(format!("category '{category}' contains a '{seg}' segment"));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "category '{}' contains {c:?}; segments may only use A-Z a-z 0-9 _ . -",
                category.escape_debug()
            ));
        }
    }
    if depth > MAX_CATEGORY_DEPTH {
        return Err(format!(
            "category '{category}' has {depth} segments (at most {MAX_CATEGORY_DEPTH})"
        ));
    }
    Ok(())
}

/// Log levels of `log/write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl Level {
    /// Parse `debug|info|warn|error` (any case; `warning` too).
    pub fn parse(s: &str) -> Option<Level> {
        [
            ("debug", Level::Debug),
            ("info", Level::Info),
            ("warn", Level::Warn),
            ("warning", Level::Warn),
            ("error", Level::Error),
        ]
        .into_iter()
        .find(|(name, _)| s.eq_ignore_ascii_case(name))
        .map(|(_, level)| level)
    }

    /// Upper-case name written in lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// `(year, month, day)` of days since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 UTC with milliseconds, `2026-11-27T21:12:58.123Z` (24 bytes), of `ms` since the epoch.
pub fn rfc3339_millis(ms: i64) -> [u8; 24] {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000) as u32;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    let y = y.clamp(0, 9999) as u32;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let put = |out: &mut [u8; 24], at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut out, 0, y, 4);
    put(&mut out, 5, mo, 2);
    put(&mut out, 8, d, 2);
    put(&mut out, 11, h, 2);
    put(&mut out, 14, mi, 2);
    put(&mut out, 17, s, 2);
    put(&mut out, 20, milli, 3);
    out
}

/// Milliseconds since the epoch now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Append `s` with `\n` and `\r` escaped, so one entry is always one line (no forged lines).
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Append one line: `TS LEVEL [component] message {args-json}\n`. `args` is omitted when absent
/// or null; it is compact JSON (which never contains a raw newline).
pub fn format_line(
    out: &mut Vec<u8>,
    ts: &[u8; 24],
    level: Level,
    component: &str,
    message: &str,
    args: Option<&serde_json::Value>,
) {
    out.extend_from_slice(ts);
    out.push(b' ');
    out.extend_from_slice(level.as_str().as_bytes());
    out.extend_from_slice(b" [");
    push_escaped(out, component);
    out.extend_from_slice(b"] ");
    push_escaped(out, message);
    if let Some(args) = args
        && !args.is_null()
    {
        out.push(b' ');
        // Writing a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, args);
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn categories_are_relative_segment_paths_and_traversal_is_refused() {
        for ok in [
            "daemons/chat",
            "personas/0190c6a2-7d1e/cognition",
            "system",
            "a.b_c-d/E9",
            ".hidden",
        ] {
            assert_eq!(validate_category(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "daemons/../../x",
            "/etc/passwd",
            "daemons/",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a b",
            "a\0b",
            "ü",
            "a/b/c/d/e/f/g/h/i",
        ] {
            assert!(validate_category(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_category(&"x".repeat(201)).is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds_also_before_1970() {
        assert_eq!(&rfc3339_millis(0), b"1970-01-01T00:00:00.000Z");
        // 2026-11-27T21:12:58.123Z
        assert_eq!(
            &rfc3339_millis(1_795_813_978_123),
            b"2026-11-27T21:12:58.123Z"
        );
        assert_eq!(
            &rfc3339_millis(951_782_400_000),
            b"2000-02-29T00:00:00.000Z"
        );
        assert_eq!(&rfc3339_millis(-1), b"1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn lines_escape_newlines_append_args_and_omit_null_args() {
        let mut out = Vec::new();
        let ts = rfc3339_millis(1_795_813_978_123);
        format_line(
            &mut out,
            &ts,
            Level::Info,
            "chat",
            "hello\nworld",
            Some(&json!({"a": 1})),
        );
        format_line(
            &mut out,
            &ts,
            Level::Error,
            "x",
            "plain",
            Some(&json!(null)),
        );
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "2026-11-27T21:12:58.123Z INFO [chat] hello\\nworld {\"a\":1}\n\
             2026-11-27T21:12:58.123Z ERROR [x] plain\n"
        );
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("trace"), None);
    }
}
