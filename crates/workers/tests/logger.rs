//! Logger service: files, batching, reopen, rate-limit notices, stats, shutdown, a full disk
//! and the directory's quota.

use std::path::Path;
use std::time::Duration;

use daemonhost_protocol::ErrorCode;
use daemonhost_testkit::eventually;
use daemonhost_workers::WorkerService;
use daemonhost_workers::logger::{Logger, LoggerConfig, LoggerService, LoggerStats};
use serde_json::{Value, json};

fn cfg(root: &Path) -> LoggerConfig {
    LoggerConfig {
        rate_per_sec: 0,
        ..LoggerConfig::new(root)
    }
}

fn entry(category: &str, message: &str) -> Value {
    json!({"category": category, "level": "info", "component": "test", "message": message})
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn path_traversal_attempts_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    let svc = LoggerService::new(cfg(&root)).expect("logger");
    for bad in [
        "../escape",
        "daemons/../../escape",
        "/etc/escape",
        "daemons//x",
        "a/./b",
        "a\\..\\b",
        "",
        "a/",
        "x\0y",
    ] {
        let e = svc
            .handle("log/write", entry(bad, "nope"))
            .await
            .expect_err(bad);
        assert_eq!(e.code, ErrorCode::Validation, "{bad:?}: {e:?}");
    }
    // One bad entry rejects the whole batch, naming it.
    let e = svc
        .handle(
            "log/write-batch",
            json!({"entries": [entry("ok", "a"), entry("../x", "b")]}),
        )
        .await
        .expect_err("batch");
    assert_eq!(e.code, ErrorCode::Validation);
    assert!(e.message.starts_with("entries[1]"), "{}", e.message);
    svc.logger().flush().await.expect("flush");
    assert!(!dir.path().join("escape.log").exists());
    assert!(!root.join("ok.log").exists());
    assert_eq!(svc.logger().stats().lines_written, 0);
    // Shape errors.
    let e = svc
        .handle(
            "log/write",
            json!({"category": "a", "level": "loud", "component": "c", "message": "m"}),
        )
        .await
        .expect_err("level");
    assert_eq!(e.code, ErrorCode::Validation);
    let e = svc
        .handle("log/write", json!({"category": "a", "level": "info"}))
        .await
        .expect_err("missing");
    assert_eq!(e.code, ErrorCode::Validation);
    assert_eq!(e.message, "component: required");
    let e = svc
        .handle(
            "log/write",
            json!({"category": "a", "level": "info", "component": "c", "message": 5}),
        )
        .await
        .expect_err("wrong type");
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(e.message, "message: must be a string");
}

#[tokio::test]
async fn batching_writes_everything_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    let svc = LoggerService::new(LoggerConfig {
        batch_lines: 100,
        max_open_files: 2, // 3 categories: exercises LRU close/reopen too
        ..cfg(&root)
    })
    .expect("logger");
    let cats = ["daemons/chat", "personas/p1/cognition", "system"];
    let mut expected: [Vec<String>; 3] = Default::default();
    for batch in 0..50 {
        let mut entries = Vec::new();
        for i in 0..100 {
            let c = (batch + i) % 3;
            let msg = format!("b{batch} i{i}");
            expected[c].push(msg.clone());
            entries.push(entry(cats[c], &msg));
        }
        let r = svc
            .handle("log/write-batch", json!({"entries": entries}))
            .await
            .expect("write");
        assert_eq!(r["queued"], 100);
        assert_eq!(r["rateLimited"], 0);
    }
    let r = svc
        .handle(
            "log/write",
            json!({"category": "system", "level": "error", "component": "x",
                   "message": "with args", "args": {"k": [1, 2]}}),
        )
        .await
        .expect("write");
    assert_eq!(r["queued"], true);
    expected[2].push("with args {\"k\":[1,2]}".into());
    svc.handle("log/flush", json!({})).await.expect("flush");
    for (c, cat) in cats.iter().enumerate() {
        let text = read(&root.join(format!("{cat}.log")));
        let msgs: Vec<String> = text
            .lines()
            .map(|l| {
                // `TS LEVEL [test] message`
                let rest = l.split_once("] ").expect("line shape").1;
                rest.to_owned()
            })
            .collect();
        assert_eq!(msgs, expected[c], "{cat}");
    }
    let first = read(&root.join("daemons/chat.log"));
    let line = first.lines().next().expect("line");
    assert_eq!(line.len(), 24 + " INFO [test] b0 i0".len(), "{line}");
    assert!(line.as_bytes()[23] == b'Z' && line.contains(" INFO [test] b0 i0"));
    assert!(read(&root.join("system.log")).contains(" ERROR [x] with args {\"k\":[1,2]}\n"));
}

#[tokio::test]
async fn reopens_after_delete_and_after_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    let logger = Logger::new(cfg(&root)).expect("logger");
    let svc = LoggerService::from_logger(std::sync::Arc::new(logger));
    let path = root.join("daemons/chat.log");
    svc.handle("log/write", entry("daemons/chat", "one"))
        .await
        .expect("write");
    svc.logger().flush().await.expect("flush");
    assert!(read(&path).contains("one"));

    // Delete: the next lines go to a new file at the same path.
    std::fs::remove_file(&path).expect("rm");
    svc.handle("log/write", entry("daemons/chat", "two"))
        .await
        .expect("write");
    svc.logger().flush().await.expect("flush");
    let text = read(&path);
    assert!(text.contains("two") && !text.contains("one"), "{text}");

    // Rotate (rename away): old lines stay in the rotated file, new ones in a new file.
    let rotated = root.join("daemons/chat.log.1");
    std::fs::rename(&path, &rotated).expect("mv");
    svc.handle("log/write", entry("daemons/chat", "three"))
        .await
        .expect("write");
    svc.logger().flush().await.expect("flush");
    assert!(read(&rotated).contains("two") && !read(&rotated).contains("three"));
    assert!(read(&path).contains("three") && !read(&path).contains("two"));

    // Deleting the whole directory works too.
    std::fs::remove_dir_all(&root).expect("rm -r");
    svc.handle("log/write", entry("daemons/chat", "four"))
        .await
        .expect("write");
    svc.logger().flush().await.expect("flush");
    assert!(read(&path).contains("four"));
    assert_eq!(svc.logger().stats().lines_written, 4);
}

#[tokio::test]
async fn rate_limit_drop_notice_has_the_exact_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    // 1 line per second with a burst of 3: ten lines at once → 3 written, 7 dropped.
    let svc = LoggerService::new(LoggerConfig {
        rate_per_sec: 1,
        burst: 3,
        ..LoggerConfig::new(&root)
    })
    .expect("logger");
    let entries: Vec<Value> = (0..10).map(|i| entry("noisy", &format!("m{i}"))).collect();
    let r = svc
        .handle("log/write-batch", json!({"entries": entries}))
        .await
        .expect("write");
    assert_eq!(r["queued"], 3);
    assert_eq!(r["rateLimited"], 7);
    // Another category is not affected.
    let r = svc
        .handle("log/write", entry("quiet", "hello"))
        .await
        .expect("write");
    assert_eq!(r["queued"], true);
    let path = root.join("noisy.log");
    let logger = svc.logger();
    eventually("the rate-limit notice in noisy.log", async || {
        logger.flush().await.expect("flush");
        read(&path).contains("[rate limited: dropped 7 lines in the last ")
    })
    .await;
    let text = read(&path);
    assert_eq!(text.matches("rate limited").count(), 1, "{text}");
    assert!(text.contains(" WARN [logger] [rate limited: dropped 7 lines in the last "));
    assert_eq!(text.lines().count(), 4, "{text}");
    let stats = svc.logger().stats();
    assert_eq!(stats.dropped_rate, 7);
    assert_eq!(stats.lines_written, 3 + 1 + 1);
}

#[tokio::test]
async fn stats_are_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    let svc = LoggerService::new(LoggerConfig {
        queue: 100,
        ..cfg(&root)
    })
    .expect("logger");
    let mut bytes = 0u64;
    for i in 0..20 {
        let cat = format!("c{}", i % 4);
        let r = svc
            .handle("log/write", entry(&cat, &format!("message {i}")))
            .await
            .expect("write");
        bytes += r["bytesWritten"].as_u64().expect("bytes");
    }
    // Larger than the queue: refused whole.
    let big: Vec<Value> = (0..101).map(|i| entry("c0", &format!("{i}"))).collect();
    let e = svc
        .handle("log/write-batch", json!({"entries": big}))
        .await
        .expect_err("too big");
    assert_eq!(e.code, ErrorCode::Validation);
    svc.handle("log/flush", json!({})).await.expect("flush");
    let on_disk: u64 = (0..4)
        .map(|c| {
            std::fs::metadata(root.join(format!("c{c}.log")))
                .expect("file")
                .len()
        })
        .sum();
    assert_eq!(on_disk, bytes);
    let stats = svc.handle("log/stats", json!({})).await.expect("stats");
    let expected = LoggerStats {
        lines_written: 20,
        bytes_written: bytes,
        dropped_queue: 0,
        dropped_rate: 0,
        write_errors: 0,
        dropped_full: 0,
        full: false,
        log_bytes: None,
        open_files: 4,
        categories: 4,
        queued: 0,
    };
    assert_eq!(stats, serde_json::to_value(&expected).expect("json"));
    assert_eq!(
        stats,
        json!({"linesWritten": 20, "bytesWritten": bytes, "droppedQueue": 0, "droppedRate": 0,
               "writeErrors": 0, "droppedFull": 0, "full": false, "openFiles": 4,
               "categories": 4, "queued": 0})
    );
}

#[tokio::test]
async fn shutdown_drains_the_queue_and_refuses_later_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    let svc = LoggerService::new(LoggerConfig {
        flush_interval: Duration::from_secs(3600),
        batch_lines: 1_000_000,
        ..cfg(&root)
    })
    .expect("logger");
    for i in 0..1000 {
        svc.handle("log/write", entry("drain", &format!("{i}")))
            .await
            .expect("write");
    }
    svc.shutdown().await;
    assert_eq!(read(&root.join("drain.log")).lines().count(), 1000);
    let e = svc
        .handle("log/write", entry("drain", "late"))
        .await
        .expect_err("closed");
    assert_eq!(e.code, ErrorCode::ShuttingDown);
    svc.shutdown().await; // idempotent
    assert_eq!(svc.logger().stats().open_files, 0);
}

#[tokio::test]
async fn batch_level_fields_and_compact_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    let svc = LoggerService::new(cfg(&root)).expect("logger");
    let r = svc
        .handle(
            "log/write-batch",
            json!({"category": "daemons/chat", "level": "warn", "component": "chat",
                   "entries": ["first", "second", {"message": "third", "level": "error"},
                               {"message": "elsewhere", "category": "other", "args": {"n": 1}}]}),
        )
        .await
        .expect("write");
    assert_eq!(r["queued"], 4);
    svc.logger().flush().await.expect("flush");
    let chat: Vec<String> = read(&root.join("daemons/chat.log"))
        .lines()
        .map(|l| l[25..].to_owned())
        .collect();
    assert_eq!(
        chat,
        [
            "WARN [chat] first",
            "WARN [chat] second",
            "ERROR [chat] third"
        ]
    );
    assert!(read(&root.join("other.log")).ends_with(" WARN [chat] elsewhere {\"n\":1}\n"));
    // A bare message needs the batch-level fields.
    let e = svc
        .handle(
            "log/write-batch",
            json!({"level": "info", "entries": ["x"]}),
        )
        .await
        .expect_err("no category");
    assert_eq!(e.code, ErrorCode::Validation);
    assert_eq!(e.message, "entries[0].category: required");
    let e = svc
        .handle("log/write-batch", json!({"entries": [3]}))
        .await
        .expect_err("number");
    assert_eq!(e.code, ErrorCode::BadRequest);
}

/// `n` lines of about 100 bytes to `category`, each call answered at once (queued): a logger
/// with no room never holds its callers up.
async fn write_lines(svc: &LoggerService, category: &str, n: usize) {
    daemonhost_testkit::within("writes are queued without waiting for the disk", async {
        for i in 0..n {
            let r = svc
                .handle(
                    "log/write",
                    entry(category, &format!("line {i:06} {}", "p".repeat(60))),
                )
                .await
                .expect("write");
            assert_eq!(r["queued"], true);
        }
    })
    .await;
}

/// Every line of `text` is a whole line the logger wrote: a written line or a notice.
fn whole_lines_only(text: &str) {
    for l in text.lines() {
        assert!(
            l.len() > 25
                && l.as_bytes()[23] == b'Z'
                && (l.contains(" INFO [test] line ") || l.contains(" WARN [logger] [")),
            "not a whole line: {l:?}"
        );
    }
}

#[tokio::test]
async fn a_log_directory_at_its_quota_drops_and_counts_lines_without_blocking_and_resumes_when_room_is_freed()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    let svc = LoggerService::new(LoggerConfig {
        max_bytes: 8 * 1024,
        ..cfg(&root)
    })
    .expect("logger");
    write_lines(&svc, "app", 300).await;
    svc.logger().flush().await.expect("flush");
    let st = svc.logger().stats();
    assert!(st.full, "{st:?}");
    assert!(st.dropped_full > 0, "{st:?}");
    assert_eq!(
        st.lines_written + st.dropped_full,
        300,
        "every line written or counted"
    );
    assert_eq!(st.write_errors, 0);
    let path = root.join("app.log");
    let len = std::fs::metadata(&path).expect("app.log").len();
    assert!(len <= 8 * 1024, "{len} bytes: past the quota");
    whole_lines_only(&read(&path));
    // log/stats says the same.
    let j = svc.handle("log/stats", json!({})).await.expect("stats");
    assert_eq!(
        (j["full"].as_bool(), j["droppedFull"].as_u64()),
        (Some(true), Some(st.dropped_full))
    );
    assert!(j["logBytes"].as_u64().is_some_and(|b| b <= 8 * 1024), "{j}");
    // Full stays full: a short line that would fit the last bytes is dropped too, until the
    // directory is well below its quota (no flapping between dropping and writing).
    svc.handle("log/write", entry("app", "s"))
        .await
        .expect("queued");
    svc.logger().flush().await.expect("flush");
    let st = svc.logger().stats();
    assert!(
        st.full && st.lines_written + st.dropped_full == 301,
        "{st:?}"
    );

    // Room again: the file is rotated away (and removed). The logger notices within a
    // measurement period, writes the drop notice and the next lines.
    std::fs::remove_file(&path).expect("rm");
    let logger = svc.logger();
    eventually("the logger has room again", async || !logger.stats().full).await;
    write_lines(&svc, "app", 10).await;
    eventually("the notice and the new lines in app.log", async || {
        logger.flush().await.expect("flush");
        read(&path).matches(" INFO [test] line ").count() == 10
    })
    .await;
    let text = read(&path);
    assert!(
        text.contains(&format!(
            "WARN [logger] [log directory full: dropped {} lines]",
            st.dropped_full
        )),
        "{text}"
    );
    whole_lines_only(&text);
    assert_eq!(
        logger.stats().dropped_full,
        st.dropped_full,
        "nothing dropped since"
    );
}

#[tokio::test]
async fn a_full_disk_drops_and_counts_lines_without_blocking_and_writing_resumes_when_there_is_room()
 {
    // /dev/full answers every write ENOSPC: a log file that points there is a file on a full disk.
    assert!(
        Path::new("/dev/full").exists(),
        "this test needs Linux's /dev/full"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    std::fs::create_dir_all(&root).expect("mkdir");
    let path = root.join("app.log");
    std::os::unix::fs::symlink("/dev/full", &path).expect("symlink");
    let svc = LoggerService::new(cfg(&root)).expect("logger");
    // More than a file's buffer (64 KiB): the buffer keeps what it holds, the rest is dropped.
    write_lines(&svc, "app", 2000).await;
    write_lines(&svc, "other", 5).await;
    let logger = svc.logger();
    eventually("lines dropped for lack of room", async || {
        logger.flush().await.expect("flush");
        let st = logger.stats();
        st.full && st.dropped_full > 0
    })
    .await;
    let st = logger.stats();
    assert_eq!(
        st.lines_written + st.dropped_full,
        2005,
        "every line written or counted: {st:?}"
    );
    assert_eq!(st.write_errors, 0, "{st:?}");
    // The disk has room again (the file is a regular one now): the buffered lines, the notice
    // and new lines land, in whole lines.
    std::fs::remove_file(&path).expect("rm");
    eventually("the logger has room again", async || {
        logger.flush().await.expect("flush");
        !logger.stats().full
    })
    .await;
    write_lines(&svc, "app", 10).await;
    logger.flush().await.expect("flush");
    let text = read(&path);
    whole_lines_only(&text);
    assert!(
        text.contains(&format!(
            "WARN [logger] [log directory full: dropped {} lines]",
            st.dropped_full
        )),
        "{text}"
    );
    let kept = text.matches(" INFO [test] line ").count() as u64;
    assert_eq!(
        kept,
        st.lines_written - 5 + 10,
        "what was buffered was written after all"
    );
    assert!(
        read(&root.join("other.log")).lines().count() == 5,
        "other files unaffected"
    );
    svc.shutdown().await;
}
