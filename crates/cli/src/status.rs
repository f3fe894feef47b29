//! `daemonhost status`: the daemons of a running host as a table (from `health/status`).

use crate::call::{connect, print_result, report_error};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// `daemonhost status [--json]`.
pub async fn run(socket: &Path, json: bool) -> ExitCode {
    let client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client
        .call("health/status", Value::Null, Some(Duration::from_secs(10)))
        .await
    {
        Ok(v) if json => {
            print_result(&v, true);
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", render(&v));
            ExitCode::SUCCESS
        }
        Err(e) => report_error(&e, json),
    }
}

fn num(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Some(Value::String(s)) => s.clone(),
        _ => "-".into(),
    }
}

/// The table for a `health/status` result.
pub fn render(status: &Value) -> String {
    const HEAD: [&str; 9] = [
        "DAEMON",
        "STATE",
        "DEFERRED",
        "CORE_MS",
        "DEFERRED_MS",
        "QUEUE",
        "LONGEST_POLL_MS",
        "HANDLED",
        "FAILED",
    ];
    let daemons = status
        .get("daemons")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<[String; 9]> = daemons
        .iter()
        .map(|d| {
            [
                num(d, "name"),
                num(d, "state"),
                num(d, "deferred"),
                num(d, "core_init_ms"),
                num(d, "deferred_init_ms"),
                num(d, "queue_depth"),
                num(d, "longest_poll_ms"),
                num(d, "handled"),
                num(d, "failed"),
            ]
        })
        .collect();
    let mut width = HEAD.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let uptime_s = status
        .get("uptime_ms")
        .and_then(Value::as_u64)
        .map(|ms| ms as f64 / 1000.0)
        .unwrap_or(0.0);
    let _ = writeln!(
        out,
        "uptime {uptime_s:.1} s · {} daemons · {} ready · {} failed",
        num(status, "count"),
        num(status, "ready"),
        num(status, "failed"),
    );
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            // Names and states left-aligned, numbers right-aligned.
            if i < 3 {
                let _ = write!(s, "{c:<w$}  ");
            } else {
                let _ = write!(s, "{c:>w$}  ");
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&HEAD.map(String::from)));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    for d in &daemons {
        if let Some(cause) = d.get("cause").and_then(Value::as_str) {
            let _ = writeln!(out, "  {}: {cause}", num(d, "name"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_table_aligns_and_shows_causes() {
        let t = render(&json!({
            "uptime_ms": 1500, "count": 2, "ready": 1, "failed": 1,
            "daemons": [
                {"name": "system", "state": "ready", "deferred": "done", "core_init_ms": 0.004,
                 "deferred_init_ms": 0.0, "queue_depth": 0, "longest_poll_ms": 0.012,
                 "handled": 12, "failed": 0},
                {"name": "data", "state": "failed", "deferred": "pending", "core_init_ms": 1.5,
                 "deferred_init_ms": 0.0, "queue_depth": 3, "longest_poll_ms": 0.0,
                 "handled": 0, "failed": 3, "cause": "start failed: disk on fire"}
            ]
        }));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "uptime 1.5 s · 2 daemons · 1 ready · 1 failed");
        assert!(lines[1].starts_with("DAEMON  STATE   DEFERRED"), "{t}");
        assert!(lines[2].starts_with("system  ready   done"), "{t}");
        assert!(lines[2].contains("0.01"), "{t}");
        assert!(lines[3].starts_with("data    failed  pending"), "{t}");
        assert_eq!(lines[4], "  data: start failed: disk on fire");
    }
}
