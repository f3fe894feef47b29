//! Observability through the real binary: the Prometheus text (`daemonhost metrics`, checked by
//! `promtool` when it is installed, and always under CI), `daemonhost analyze`, and the systemd
//! watchdog over a notify socket the test binds.

use crate::harness::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const T: Option<Duration> = Some(Duration::from_secs(10));

/// A host whose every daemon is READY with its deferred init over, and its startup settled.
async fn settled_host() -> (Host, Value) {
    let host = Host::start(BIN);
    let c = host.client().await;
    let startup = eventually("every daemon READY, deferred init done", async || {
        let s = c
            .call("system/startup", Value::Null, T)
            .await
            .expect("startup");
        let done = s["daemons"].as_array().is_some_and(|d| {
            d.iter()
                .all(|d| d["state"] == "ready" && d["deferred"] != "running")
        });
        (done && !s["host"].is_null()).then_some(s)
    })
    .await;
    (host, startup)
}

/// `name{labels}` → value, per family name (from the TYPE lines), and each family's type.
#[derive(Debug, Default)]
struct Text {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

fn parse(text: &str) -> Text {
    let mut t = Text::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            t.types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, v) = line.rsplit_once(' ').expect("series value");
            t.samples
                .insert(series.to_owned(), v.parse().expect("a numeric value"));
        }
    }
    t
}

impl Text {
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series}"))
    }

    fn family(&self, name: &str) -> Vec<(&str, f64)> {
        self.samples
            .iter()
            .filter(|(s, _)| s.split('{').next() == Some(name))
            .map(|(s, v)| (s.as_str(), *v))
            .collect()
    }
}

/// `promtool check metrics` on `text`, when promtool is on PATH (under CI=true it must be).
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is not on PATH under CI (the prometheus package: .ci/run installs it)"
            );
            eprintln!("promtool not on PATH: the lint check of the metrics text is left out");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_of_the_real_binary_have_every_family_with_sane_values_and_pass_promtool()
 {
    let (host, startup) = settled_host().await;
    let c = host.client().await;
    for _ in 0..3 {
        c.call("ping", Value::Null, T).await.expect("ping");
    }
    let out = host.cli(&["metrics"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let m = parse(&text);

    // Every family is daemonhost_-prefixed; counters and only counters end in _total.
    for (name, kind) in &m.types {
        assert!(name.starts_with("daemonhost_"), "{name}");
        assert_eq!(name.ends_with("_total"), kind == "counter", "{name} {kind}");
    }
    let daemons: Vec<&str> = startup["daemons"]
        .as_array()
        .expect("daemons")
        .iter()
        .filter_map(|d| d["daemon"].as_str())
        .collect();
    // One-hot state: every daemon READY and in exactly one state.
    let states = m.family("daemonhost_daemon_state");
    assert_eq!(states.len(), daemons.len() * 6);
    for d in &daemons {
        assert_eq!(
            m.get(&format!(
                "daemonhost_daemon_state{{daemon=\"{d}\",state=\"ready\"}}"
            )),
            1.0,
            "{d}"
        );
        for fam in [
            "daemonhost_daemon_requests_handled_total",
            "daemonhost_daemon_requests_failed_total",
            "daemonhost_daemon_panics_total",
            "daemonhost_daemon_queue_depth",
            "daemonhost_daemon_longest_poll_seconds",
            "daemonhost_daemon_core_init_seconds",
            "daemonhost_daemon_deferred_init_seconds",
        ] {
            let v = m.get(&format!("{fam}{{daemon=\"{d}\"}}"));
            assert!(v >= 0.0 && v.is_finite(), "{fam} {d} = {v}");
        }
        assert_eq!(
            m.get(&format!("daemonhost_daemon_panics_total{{daemon=\"{d}\"}}")),
            0.0
        );
    }
    assert_eq!(
        states.iter().map(|(_, v)| v).sum::<f64>(),
        daemons.len() as f64
    );
    assert!(m.get(r#"daemonhost_daemon_requests_handled_total{daemon="system"}"#) >= 3.0);
    // Init times in seconds, as system/startup gives them in ms.
    let data_ms = startup["daemons"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["daemon"] == "data"))
        .and_then(|d| d["core_init_ms"].as_f64())
        .expect("data's core init");
    let data_s = m.get(r#"daemonhost_daemon_core_init_seconds{daemon="data"}"#);
    assert!(
        (data_s - data_ms / 1000.0).abs() < 1e-6,
        "{data_s} s vs {data_ms} ms"
    );
    assert!(data_s > 0.0 && data_s < 60.0);

    assert!(m.get("daemonhost_bus_events_published_total") > 0.0);
    assert!(m.get("daemonhost_bus_events_lagged_total") >= 0.0);
    assert!(m.get("daemonhost_cpu_pool_threads") >= 1.0);
    assert!(m.get("daemonhost_cpu_pool_jobs_queued") >= 0.0);
    assert!(
        !m.family("daemonhost_cpu_pool_jobs_completed_total")
            .is_empty()
    );
    let lag = m.get("daemonhost_coordinator_lag_seconds");
    assert!((0.0..10.0).contains(&lag), "lag {lag} s");
    assert!(
        m.get("daemonhost_coordinator_lag_max_seconds")
            >= m.get("daemonhost_coordinator_lag_p50_seconds")
    );
    assert!(m.get("daemonhost_server_connections_open") >= 1.0);
    assert!(m.get("daemonhost_server_requests_total") >= 4.0);
    let all_ready = m.get("daemonhost_startup_all_ready_seconds");
    assert!(all_ready > 0.0 && all_ready < 60.0, "{all_ready}");

    // The process, checked against /proc/PID from outside.
    let pid = host.pid().as_raw();
    let rss = m.get("daemonhost_process_resident_memory_bytes");
    assert!(rss > 4.0 * 1024.0 * 1024.0 && rss < 4e9, "rss {rss}");
    let fds = m.get("daemonhost_process_open_fds");
    let outside = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the host's fds")
        .count() as f64;
    assert!(
        (fds - outside).abs() <= 8.0,
        "fds {fds} vs {outside} seen from outside"
    );
    assert!(m.get("daemonhost_process_max_fds") >= fds);
    let cpu = m.get("daemonhost_process_cpu_seconds_total");
    assert!((0.0..3600.0).contains(&cpu), "cpu {cpu}");
    assert!(m.get("daemonhost_process_threads") >= 2.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = m.get("daemonhost_process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "start {started}, now {now}"
    );

    // The same text over the command, for scripts: {contentType, text}.
    let v = c
        .call("health/prometheus", Value::Null, T)
        .await
        .expect("health/prometheus");
    assert_eq!(v["contentType"], "text/plain; version=0.0.4; charset=utf-8");
    let again = parse(v["text"].as_str().expect("text"));
    assert_eq!(
        again.types.keys().collect::<Vec<_>>(),
        m.types.keys().collect::<Vec<_>>()
    );

    promtool_check(&text);
}

/// A systemd-analyze duration (`1.203s`, `12.3ms`, `450us`) in ms.
fn ms(text: &str) -> f64 {
    let text = text.trim_start_matches(['@', '+']);
    let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        panic!("not a duration: {text}")
    };
    num.parse::<f64>().expect("a number") * scale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_blame_critical_chain_and_plot_read_the_real_host() {
    let (host, startup) = settled_host().await;
    let daemons = startup["daemons"].as_array().expect("daemons");
    let deps: BTreeMap<&str, BTreeSet<&str>> = daemons
        .iter()
        .map(|d| {
            let of = |k: &str| {
                d[k].as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let name = d["daemon"].as_str().expect("name");
            (
                name,
                of("requires").into_iter().chain(of("wants")).collect(),
            )
        })
        .collect();

    // blame: a header, one row per daemon, slowest (core + deferred) first.
    let out = host.cli(&["analyze", "blame"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.contains("TOTAL") && h.trim_end().ends_with("DAEMON")),
        "{text}"
    );
    assert_eq!(rows.len(), daemons.len(), "{text}");
    let totals: Vec<f64> = rows.iter().map(|r| ms(r[0])).collect();
    assert!(
        totals.windows(2).all(|w| w[0] >= w[1]),
        "not slowest first:\n{text}"
    );
    let named: BTreeSet<&str> = rows.iter().map(|r| r[3]).collect();
    assert_eq!(named, deps.keys().copied().collect(), "{text}");

    // critical-chain: each link is a dependency of the one above, READY no later than it.
    let out = host.cli(&["analyze", "critical-chain"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let all = text
        .lines()
        .find(|l| l.starts_with("all READY @"))
        .unwrap_or_else(|| panic!("{text}"));
    let links: Vec<(String, f64, f64)> = text
        .lines()
        .filter(|l| l.contains("└─"))
        .map(|l| {
            let parts: Vec<&str> = l.trim_start_matches([' ', '└', '─']).split(' ').collect();
            (parts[0].to_owned(), ms(parts[1]), ms(parts[2]))
        })
        .collect();
    assert!(!links.is_empty(), "{text}");
    assert_eq!(
        ms(all.trim_start_matches("all READY ")),
        links[0].1,
        "{text}"
    );
    for w in links.windows(2) {
        let (above, below) = (&w[0], &w[1]);
        assert!(
            deps[above.0.as_str()].contains(below.0.as_str()),
            "{} is not a dependency of {}:\n{text}",
            below.0,
            above.0
        );
        assert!(below.1 <= above.1, "{text}");
    }
    // The latest READY of all is the chain's head.
    let latest = daemons
        .iter()
        .filter_map(|d| d["ready_at_ms"].as_f64())
        .fold(0.0, f64::max);
    assert!(
        (links[0].1 - latest).abs() <= latest * 0.01 + 0.01,
        "{text} vs {latest}"
    );
    let out = host.cli(&["analyze", "critical-chain", "chat"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let chat = stdout(&out);
    assert!(chat.contains("\nchat @"), "{chat}");
    assert!(
        chat.contains("└─data @") || chat.contains("└─room @"),
        "{chat}"
    );
    let out = host.cli(&["analyze", "critical-chain", "nosuchdaemon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no daemon 'nosuchdaemon'"),
        "{}",
        stderr(&out)
    );

    // plot: an SVG document, one daemon group with one core bar each.
    let out = host.cli(&["analyze", "plot"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let svg = stdout(&out);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let groups: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("daemon"))
        .filter_map(|n| n.attribute("data-name"))
        .collect();
    assert_eq!(
        groups.iter().copied().collect::<BTreeSet<_>>(),
        deps.keys().copied().collect(),
    );
    let cores = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("rect")
                && n.attribute("class")
                    .is_some_and(|c| c.split(' ').any(|c| c == "core"))
        })
        .count();
    assert_eq!(cores, daemons.len());
    // Dependency order: each daemon's row below its dependencies'.
    let row = |n: &str| groups.iter().position(|g| *g == n).expect("row");
    for (d, ds) in &deps {
        for dep in ds {
            assert!(row(dep) < row(d), "{dep} drawn after {d}");
        }
    }
}

/// Datagrams to a notify socket, one `KEY=VALUE…` text each.
async fn next_datagram(sock: &tokio::net::UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("a notify datagram in time")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watchdog_usec_the_host_sends_ready_then_watchdog_pings_and_none_after_stopping() {
    let dir = tempdir();
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    let notify = path.display().to_string();
    // 300 ms: a ping every 150 ms.
    let mut host = Host::start_with(
        BIN,
        &[],
        &[
            ("NOTIFY_SOCKET", notify.as_str()),
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let mut seen = Vec::new();
    // Until READY=1, and then two pings after it.
    let mut after_ready = 0;
    while after_ready < 2 {
        let d = next_datagram(&sock).await;
        let ready = seen.iter().any(|s: &String| s.contains("READY=1"));
        if ready && d.lines().any(|l| l == "WATCHDOG=1") {
            after_ready += 1;
        }
        seen.push(d);
        assert!(seen.len() < 1000, "{seen:?}");
    }
    let ready_at = seen
        .iter()
        .position(|s| s.lines().any(|l| l == "READY=1"))
        .expect("READY=1");
    assert!(seen[ready_at].contains("STATUS="), "{seen:?}");
    assert!(
        host.log().contains("systemd watchdog: pinging"),
        "{}",
        host.log()
    );
    let status = host.terminate().await;
    assert_eq!(code(status), 0, "{}", host.log());
    // Everything the host sent is queued on the socket: STOPPING=1 came, no ping after it.
    let mut rest = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = sock.try_recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let stopping = rest
        .iter()
        .position(|s| s.lines().any(|l| l == "STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1 in {rest:?}"));
    assert!(
        rest[stopping..]
            .iter()
            .all(|s| !s.lines().any(|l| l == "WATCHDOG=1")),
        "a ping after STOPPING=1: {rest:?}"
    );
}
