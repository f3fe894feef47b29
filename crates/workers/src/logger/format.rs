//! Category validation and line formatting. Timestamps are the protocol's canonical time text
//! (`daemonhost_protocol::time`), formatted once per write, not per line.

use daemonhost_protocol::time::{MAX_MS, MIN_MS, format_ms};

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

/// RFC 3339 UTC with milliseconds, `2026-11-27T21:12:58.123Z` (24 bytes), of `ms` since the epoch:
/// the protocol's canonical time text ([`format_ms`], the one formatter of the workspace) as the
/// fixed-width bytes a line starts with. Instants outside years 0000–9999 are clamped to them.
pub fn rfc3339_millis(ms: i64) -> [u8; 24] {
    let mut out = *b"0000-01-01T00:00:00.000Z";
    let text = format_ms(ms.clamp(MIN_MS, MAX_MS));
    if let Some(b) = text.as_bytes().get(..24) {
        out.copy_from_slice(b);
    }
    out
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
        assert_eq!(&rfc3339_millis(i64::MAX), b"9999-12-31T23:59:59.999Z");
        assert_eq!(&rfc3339_millis(i64::MIN), b"0000-01-01T00:00:00.000Z");
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
