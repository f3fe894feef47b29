//! `daemonhost events PATTERN`: stream matching events as JSON lines until Ctrl-C.
//!
//! Each line is `{"topic": …, "data": …}`. Lost events show up as the `system:lagged` marker
//! (`{"missed": n}`) in the same stream, never silently. Exit 0 on Ctrl-C (or after `--count`
//! events), 1 if the host goes away, 2 if none is running.

use crate::call::{EXIT_FAILED, connect, report_error};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// `daemonhost events PATTERN [--count N]`.
pub async fn run(socket: &Path, pattern: &str, count: Option<u64>) -> ExitCode {
    let client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut stream = match client.subscribe(pattern).await {
        Ok(s) => s,
        Err(e) => return report_error(&e, false),
    };
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if count.is_some_and(|n| seen >= n) {
            return ExitCode::SUCCESS;
        }
        let event = tokio::select! {
            _ = &mut ctrl_c => return ExitCode::SUCCESS,
            e = stream.next_event() => e,
        };
        let Some(event) = event else {
            eprintln!("error: the host closed the connection");
            return ExitCode::from(EXIT_FAILED);
        };
        let line = json!({"topic": event.topic, "data": event.data});
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // stdout closed (e.g. `| head`): nothing left to do.
            return ExitCode::SUCCESS;
        }
        seen += 1;
    }
}
