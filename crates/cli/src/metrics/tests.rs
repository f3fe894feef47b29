use super::*;
use daemonhost_runtime::WorkCounts;
use std::collections::BTreeMap;

fn report(name: &str, state: LifecycleState) -> DaemonReport {
    DaemonReport {
        name: name.to_owned(),
        state,
        deferred: DeferredState::Done,
        cause: None,
        cause_kind: None,
        deferred_cause: None,
        attempts: 1,
        requires: vec![],
        wants: vec![],
        core_init_ms: 1500.0,
        deferred_init_ms: 20.0,
        total_ms: 1520.0,
        queued_before_ready: 2,
        queue_depth: 3,
        peak_queue_depth: 7,
        oldest_queued_ms: 4.0,
        overflowed: 0,
        expired: 1,
        rejected_params: 0,
        handled: 42,
        failed: 5,
        panics: 1,
        in_flight: 2,
        events: 9,
        longest_poll_ms: 12.5,
        work: WorkCounts {
            inline: 40,
            pool: 2,
            blocking: 0,
            worker: 0,
        },
        details: None,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        daemons: vec![
            report("data", LifecycleState::Ready),
            report("ai", LifecycleState::Failed),
        ],
        bus: BusStats {
            subscriptions: 4,
            published: 100,
            delivered: 250,
            lagged: 3,
        },
        pool: Some(PoolStats {
            threads: 2,
            pending: 5,
            running: 2,
            completed_pool: 10,
            completed_blocking: 1,
            fallbacks_saturated: 1,
            fallbacks_unavailable: 0,
            panics: 0,
        }),
        lag: Some(LagSnapshot {
            samples: 500,
            window_samples: 500,
            p50_us: 100,
            p99_us: 2_000,
            max_us: 80_000,
            window_max_us: 3_000,
            last_us: 150,
            current_us: 250_000,
        }),
        live_tasks: 33,
        server: Some(HostCounters::default().snapshot()),
        startup: Some(HostStartup {
            socket_bound_ms: 1.0,
            first_command_ms: 2.0,
            all_ready_ms: 30.0,
        }),
        process: ProcessStats {
            cpu_seconds: Some(1.25),
            resident_bytes: Some(10 << 20),
            virtual_bytes: Some(100 << 20),
            open_fds: Some(12),
            max_fds: Some(1024),
            threads: Some(8),
            start_time_seconds: Some(1.7e9),
        },
    }
}

/// One family of the text: its TYPE and its samples (`name{labels}` → value).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    samples: BTreeMap<String, f64>,
}

/// A strict reader of the 0.0.4 text: HELP then TYPE before a family's samples, every sample
/// in a declared family, every value a number.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            let f = fams.entry(name.to_owned()).or_default();
            assert!(!f.help, "second HELP for {name}");
            f.help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            let f = fams.get_mut(name).expect("HELP before TYPE");
            assert!(f.kind.is_empty(), "second TYPE for {name}");
            f.kind = kind.to_owned();
            current = Some(name.to_owned());
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("sample: series value");
            let name = series.split('{').next().expect("name");
            let fam = current.as_deref().expect("a sample after a TYPE");
            assert_eq!(name, fam, "sample {line} outside its family");
            let v: f64 = value.parse().expect("numeric value");
            let f = fams.get_mut(fam).expect("family");
            assert!(
                f.samples.insert(series.to_owned(), v).is_none(),
                "duplicate series {series}"
            );
        }
    }
    fams
}

#[test]
fn every_family_has_help_and_type_the_daemonhost_prefix_and_counters_end_in_total() {
    let fams = parse(&encode(&snapshot()));
    assert!(fams.len() >= 40, "{} families", fams.len());
    for (name, f) in &fams {
        assert!(name.starts_with("daemonhost_"), "{name}");
        assert!(f.help, "{name} has no HELP");
        assert!(!f.samples.is_empty(), "{name} has no sample");
        match f.kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name}"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name}"),
            other => panic!("{name}: unexpected type {other}"),
        }
        // Base units only.
        for bad in ["_ms", "_us", "_millis", "_kb", "_mb", "milliseconds"] {
            assert!(!name.contains(bad), "{name}: not a base unit");
        }
    }
}

#[test]
fn a_snapshot_renders_its_values_in_seconds_bytes_and_one_hot_states() {
    let fams = parse(&encode(&snapshot()));
    let get = |fam: &str, series: &str| -> f64 {
        let f = fams.get(fam).unwrap_or_else(|| panic!("no family {fam}"));
        *f.samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in {:?}", f.samples.keys()))
    };
    let d = |fam: &str, daemon: &str| get(fam, &format!("{fam}{{daemon=\"{daemon}\"}}"));
    assert_eq!(
        get(
            "daemonhost_daemon_state",
            r#"daemonhost_daemon_state{daemon="data",state="ready"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            "daemonhost_daemon_state",
            r#"daemonhost_daemon_state{daemon="data",state="failed"}"#
        ),
        0.0
    );
    assert_eq!(
        get(
            "daemonhost_daemon_state",
            r#"daemonhost_daemon_state{daemon="ai",state="failed"}"#
        ),
        1.0
    );
    // One state per daemon, of six.
    let states = &fams["daemonhost_daemon_state"].samples;
    assert_eq!(states.len(), 12);
    assert_eq!(states.values().sum::<f64>(), 2.0);
    assert_eq!(d("daemonhost_daemon_requests_handled_total", "data"), 42.0);
    assert_eq!(d("daemonhost_daemon_requests_failed_total", "data"), 5.0);
    assert_eq!(d("daemonhost_daemon_panics_total", "ai"), 1.0);
    assert_eq!(d("daemonhost_daemon_queue_depth", "data"), 3.0);
    assert_eq!(d("daemonhost_daemon_longest_poll_seconds", "data"), 0.0125);
    assert_eq!(d("daemonhost_daemon_core_init_seconds", "data"), 1.5);
    assert_eq!(d("daemonhost_daemon_deferred_init_seconds", "data"), 0.02);
    assert_eq!(
        get(
            "daemonhost_daemon_work_total",
            r#"daemonhost_daemon_work_total{daemon="data",place="pool"}"#
        ),
        2.0
    );
    let one = |fam: &str| get(fam, fam);
    assert_eq!(one("daemonhost_bus_events_published_total"), 100.0);
    assert_eq!(one("daemonhost_bus_events_lagged_total"), 3.0);
    assert_eq!(one("daemonhost_cpu_pool_jobs_queued"), 3.0);
    assert_eq!(one("daemonhost_cpu_pool_jobs_running"), 2.0);
    assert_eq!(
        get(
            "daemonhost_cpu_pool_jobs_completed_total",
            r#"daemonhost_cpu_pool_jobs_completed_total{path="pool"}"#
        ),
        10.0
    );
    assert_eq!(one("daemonhost_coordinator_lag_seconds"), 0.25);
    assert_eq!(one("daemonhost_coordinator_lag_max_seconds"), 0.08);
    assert_eq!(one("daemonhost_process_cpu_seconds_total"), 1.25);
    assert_eq!(
        one("daemonhost_process_resident_memory_bytes"),
        (10 << 20) as f64
    );
    assert_eq!(one("daemonhost_process_open_fds"), 12.0);
    assert_eq!(one("daemonhost_startup_all_ready_seconds"), 0.03);
    assert_eq!(one("daemonhost_runtime_tasks"), 33.0);
}

#[test]
fn families_without_a_source_are_left_out_not_reported_as_zero() {
    let s = Snapshot {
        lag: None,
        startup: None,
        process: ProcessStats::default(),
        ..snapshot()
    };
    let fams = parse(&encode(&s));
    for gone in [
        "daemonhost_coordinator_lag_seconds",
        "daemonhost_startup_all_ready_seconds",
        "daemonhost_process_cpu_seconds_total",
        "daemonhost_process_open_fds",
    ] {
        assert!(!fams.contains_key(gone), "{gone}");
    }
    assert!(fams.contains_key("daemonhost_daemon_state"));
}

#[test]
fn proc_stat_fields_are_counted_after_the_last_parenthesis_of_the_name() {
    // pid (comm) state ppid ... with a command name holding spaces and parentheses.
    let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
    fields[0] = "S".into(); // field 3
    fields[14 - 3] = "250".into(); // utime
    fields[15 - 3] = "50".into(); // stime
    fields[20 - 3] = "9".into(); // num_threads
    fields[22 - 3] = "1000".into(); // starttime
    fields[23 - 3] = "4096".into(); // vsize
    let text = format!("123 (dh (x) y) {}", fields.join(" "));
    let p = parse_stat(&text, 100.0, Some(1_700_000_000));
    assert_eq!(p.cpu_seconds, Some(3.0));
    assert_eq!(p.threads, Some(9));
    assert_eq!(p.start_time_seconds, Some(1_700_000_010.0));
    assert_eq!(p.virtual_bytes, Some(4096));
    assert_eq!(parse_stat("garbage", 100.0, None), ProcessStats::default());
    assert_eq!(
        parse_btime("cpu 1 2\nbtime 1700000000\n"),
        Some(1_700_000_000)
    );
    assert_eq!(
        parse_vm_rss("Name: x\nVmRSS:\t  2048 kB\n"),
        Some(2048 * 1024)
    );
    assert_eq!(
        parse_max_open_files(
            "Limit Soft Limit Hard Limit Units\nMax open files            1024                 524288               files\n"
        ),
        Some(1024)
    );
    assert_eq!(
        parse_max_open_files("Max open files unlimited unlimited files\n"),
        None
    );
}

#[test]
fn this_process_reads_sane_cpu_memory_fds_and_start_time() {
    let p = ProcessStats::read();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(p.cpu_seconds.expect("cpu") >= 0.0, "{p:?}");
    assert!(p.resident_bytes.expect("rss") > 1 << 20, "{p:?}");
    assert!(p.virtual_bytes.expect("vsize") >= p.resident_bytes.unwrap_or(0));
    assert!(p.open_fds.expect("fds") >= 3, "{p:?}");
    assert!(p.threads.expect("threads") >= 1, "{p:?}");
    let started = p.start_time_seconds.expect("start time");
    // Started in the last day, and not in the future (CLK_TCK rounding: 10 ms).
    assert!(started <= now + 1.0 && started > now - 86_400.0, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_renderer_and_health_prometheus_render_the_same_live_families() {
    use daemonhost_runtime::{RuntimeBuilder, RuntimeConfig};
    use daemonhost_system::{HealthDaemon, SystemDaemon};
    let counters = Arc::new(HostCounters::default());
    let mut b = RuntimeBuilder::new(RuntimeConfig::default());
    b.register(SystemDaemon {
        host: Arc::clone(&counters),
    })
    .register(HealthDaemon {
        host: Arc::clone(&counters),
        prometheus: Some(HostView::health_renderer(Arc::clone(&counters))),
    });
    let rt = b.build().expect("plan");
    rt.start_all().await;
    rt.router()
        .ask("ping", serde_json::Value::Null)
        .await
        .expect("ping");
    // What the web listener mounts: a closure, called per scrape.
    let web = HostView::new(rt.handle(), Arc::clone(&counters)).renderer();
    let text = web();
    let fams = parse(&text);
    let served = rt
        .router()
        .ask("health/prometheus", serde_json::Value::Null)
        .await
        .expect("health/prometheus");
    assert_eq!(served["contentType"], CONTENT_TYPE);
    let over_command = parse(served["text"].as_str().expect("text"));
    assert_eq!(
        fams.keys().collect::<Vec<_>>(),
        over_command.keys().collect::<Vec<_>>()
    );
    let handled = &fams["daemonhost_daemon_requests_handled_total"].samples;
    assert!(
        handled[r#"daemonhost_daemon_requests_handled_total{daemon="system"}"#] >= 1.0,
        "{handled:?}"
    );
    let ready = &fams["daemonhost_daemon_state"].samples;
    assert_eq!(
        ready[r#"daemonhost_daemon_state{daemon="health",state="ready"}"#],
        1.0
    );
    assert!(fams.contains_key("daemonhost_coordinator_lag_seconds"));
    assert!(
        fams["daemonhost_process_resident_memory_bytes"]
            .samples
            .values()
            .all(|v| *v > 0.0)
    );
    rt.shutdown().await;
}
