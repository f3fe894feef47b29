//! Keeps `docs/PROTOCOL.md` and the code in agreement: every line of every ```json block is a
//! frame that must decode and re-encode to the same JSON value. Blocks that are not frames use
//! ```jsonc (or ```text). The Python example is run against an in-test server when `python3` is
//! available.

use std::path::PathBuf;

use daemonhost_protocol::{ErrorCode, Frame};
use serde_json::Value;

fn doc() -> String {
    // The directory at run time (cargo sets it for every test run), not the one baked in at
    // compile time: a build directory shared between clones may hold a binary compiled in
    // another checkout.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = dir.join("../../docs/PROTOCOL.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The contents of every fenced block whose info string is exactly `lang`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None => {
                if let Some(info) = trimmed.strip_prefix("```")
                    && info.trim() == lang
                {
                    current = Some(String::new());
                }
            }
            Some(buf) => {
                if trimmed.starts_with("```") {
                    out.push(std::mem::take(buf));
                    current = None;
                } else {
                    buf.push_str(line);
                    buf.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated ```{lang} block");
    out
}

#[test]
fn every_json_example_is_a_frame_that_round_trips() {
    let text = doc();
    let mut count = 0;
    let mut types = std::collections::HashSet::new();
    for block in blocks(&text, "json") {
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let frame = Frame::decode(line.as_bytes())
                .unwrap_or_else(|bad| panic!("doc example is not a frame: {line}\n  {bad}"));
            types.insert(frame.frame_type());
            let original: Value = serde_json::from_str(line).expect("json");
            let encoded: Value = serde_json::from_slice(&frame.encode()).expect("json");
            assert_eq!(encoded, original, "re-encoding changed the example: {line}");
            count += 1;
        }
    }
    assert!(count >= 10, "only {count} frame examples found");
    assert_eq!(types.len(), 3, "examples must show all three frame types");
}

#[test]
fn every_error_code_is_documented() {
    let text = doc();
    for code in ErrorCode::ALL {
        assert!(
            text.contains(&format!("| `{}` |", code.as_str())),
            "error code {code} missing from the table"
        );
    }
}

#[test]
fn bad_request_messages_in_the_doc_are_the_real_ones() {
    let text = doc();
    for (body, id) in [
        (r#"{"type":"request","id":5}"#, Some(5)),
        (r#"{"type":"request","id":"5","command":"x"}"#, None),
        (r#"[1]"#, None),
        (r#"{"type":"ping","id":3}"#, Some(3)),
        (
            r#"{"type":"request","id":1,"command":"x","params":[]}"#,
            Some(1),
        ),
        (
            r#"{"type":"request","id":1,"command":"x","timeout_ms":-1}"#,
            Some(1),
        ),
        (r#"{"id":1}"#, Some(1)),
    ] {
        let bad = Frame::decode(body.as_bytes()).expect_err("bad");
        assert_eq!(bad.id, id, "{body}");
        assert!(
            text.contains(&bad.message),
            "doc does not show the message {:?} for {body}",
            bad.message
        );
    }
}

#[test]
fn python_example_runs_against_a_server() {
    let Some(script) = blocks(&doc(), "python").into_iter().next() else {
        panic!("no python example");
    };
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 not available; skipping the run of the Python example");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run_python(script));
}

async fn run_python(script: String) {
    use daemonhost_protocol::{EventFrame, FrameCodec, Response};
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;

    let dir = std::env::temp_dir().join(format!("dhp-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let sock = dir.join("d.sock");
    let _ = std::fs::remove_file(&sock);
    let script_path = dir.join("dh.py");
    std::fs::write(&script_path, script).expect("write script");
    let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
    let child = tokio::process::Command::new("python3")
        .arg(&script_path)
        .arg("ping")
        .arg(&sock)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3");
    let limit = std::time::Duration::from_secs(20);
    let (stream, _) = tokio::time::timeout(limit, listener.accept())
        .await
        .expect("python connects in time")
        .expect("accept");
    let mut framed = Framed::new(stream, FrameCodec::new());
    let req = match tokio::time::timeout(limit, framed.next()).await {
        Ok(Some(Ok(Ok(Frame::Request(r))))) => r,
        other => panic!("expected a request from python, got {other:?}"),
    };
    assert_eq!(req.command, "ping");
    // An event first: the example must skip it.
    framed
        .send(Frame::Event(EventFrame {
            subscription: 1,
            topic: "t".into(),
            data: Value::Null,
        }))
        .await
        .expect("send");
    framed
        .send(Frame::Response(Response::ok(
            req.id,
            serde_json::json!("pong"),
        )))
        .await
        .expect("send");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("python exits in time")
        .expect("output");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "python failed: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"pong\"");
}
