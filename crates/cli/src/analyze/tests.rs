use super::*;
use serde_json::json;

fn d(
    name: &str,
    requires: &[&str],
    waited: f64,
    core: f64,
    ready: f64,
    deferred: f64,
    total: f64,
) -> Value {
    json!({
        "daemon": name, "state": "ready",
        "deferred": if deferred > 0.0 { "done" } else { "pending" },
        "requires": requires, "wants": [],
        "waited_ms": waited, "ready_at_ms": ready, "core_init_ms": core,
        "deferred_init_ms": deferred, "total_ms": total,
        "queued_before_ready": 0, "longest_poll_ms": 0.1,
    })
}

/// A small DAG: `ai` (no dependency) is slow, so it decides when `persona`, and with it the
/// whole host, is READY; `chat` waits on `room`, which waits on `user`, which waits on `data`.
fn startup() -> Value {
    let mut daemons = vec![
        d("system", &[], 0.0, 0.01, 0.02, 0.0, 0.02),
        d("data", &[], 0.0, 10.0, 10.2, 30.0, 45.0),
        d("user", &["data"], 10.3, 2.0, 12.4, 0.0, 12.4),
        d("room", &["user"], 12.5, 1.0, 13.6, 0.0, 13.6),
        d("ai", &[], 0.0, 20.0, 20.1, 0.0, 20.1),
        d("chat", &["data", "room"], 13.7, 1.0, 14.8, 0.0, 14.8),
        d(
            "persona",
            &["data", "user", "room", "ai", "chat"],
            20.2,
            0.5,
            20.8,
            0.0,
            20.8,
        ),
    ];
    let mut failed = d("search", &["data"], 10.3, 3.0, 0.0, 0.0, 0.0);
    failed["state"] = json!("failed");
    daemons.push(failed);
    // `search` is wanted by persona: a failed want is not waited for.
    daemons[6]["wants"] = json!(["search"]);
    json!({
        "uptime_ms": 5000, "count": daemons.len(), "slowest": "data",
        "host": {"socket_bound_ms": 1.0, "first_command_ms": 2.5, "all_ready_ms": 23.0},
        "daemons": daemons,
    })
}

fn chain_names(target: Option<&str>) -> Vec<String> {
    chain(&boots(&startup()), target)
        .expect("chain")
        .into_iter()
        .map(|l| l.name)
        .collect()
}

#[test]
fn the_critical_chain_follows_the_dependency_that_became_ready_last() {
    // persona became READY last; of its dependencies ai was READY last; ai needs nothing.
    assert_eq!(chain_names(None), ["persona", "ai"]);
    // chat waited for room (13.6) rather than data (10.2); room for user, user for data.
    assert_eq!(chain_names(Some("chat")), ["chat", "room", "user", "data"]);
    assert_eq!(chain_names(Some("data")), ["data"]);
    let e = chain(&boots(&startup()), Some("search")).expect_err("not ready");
    assert!(e.contains("failed, not READY"), "{e}");
    let e = chain(&boots(&startup()), Some("ghost")).expect_err("unknown");
    assert!(e.contains("no daemon 'ghost'"), "{e}");
}

#[test]
fn critical_chain_text_uses_systemd_at_and_plus_notation() {
    let text = critical_chain(&startup(), None).expect("text");
    let tail: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("all READY"))
        .collect();
    assert_eq!(tail[0], "all READY @20.8ms");
    assert_eq!(tail[1], "└─persona @20.8ms +500us");
    assert_eq!(tail[2], "  └─ai @20.1ms +20.0ms");
    assert!(text.contains("not READY (left out): search"), "{text}");
    assert!(
        text.contains("all READY @23.0ms"),
        "host line from process start: {text}"
    );
    let text = critical_chain(&startup(), Some("chat")).expect("text");
    let tail: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("chat"))
        .collect();
    assert_eq!(
        &tail[..4],
        [
            "chat @14.8ms +1.00ms",
            "└─room @13.6ms +1.00ms",
            "  └─user @12.4ms +2.00ms",
            "    └─data @10.2ms +10.0ms",
        ]
    );
}

#[test]
fn blame_lists_the_slowest_init_first_core_plus_deferred() {
    let text = blame(&startup());
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).expect("name"))
        .collect();
    // data: 10 + 30 deferred beats ai's 20 of core init alone; chat and room tie on 1 ms.
    assert_eq!(
        names,
        [
            "data", "ai", "search", "user", "chat", "room", "persona", "system"
        ]
    );
    let first = text.lines().nth(1).expect("row");
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        ["40.0ms", "10.0ms", "30.0ms", "data"]
    );
    assert!(text.contains("search (failed)"), "{text}");
}

#[test]
fn durations_read_like_systemd_analyze() {
    assert_eq!(fmt_ms(1203.4), "1.203s");
    assert_eq!(fmt_ms(12.34), "12.3ms");
    assert_eq!(fmt_ms(1.234), "1.23ms");
    assert_eq!(fmt_ms(0.45), "450us");
    assert_eq!(fmt_ms(0.0), "0us");
}

#[test]
fn dependency_order_puts_each_daemon_after_what_it_waits_for() {
    let b = boots(&startup());
    let order: Vec<&str> = dependency_order(&b)
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    let pos = |n: &str| order.iter().position(|x| *x == n).expect("placed");
    for boot in &b {
        for dep in boot.requires.iter().chain(&boot.wants) {
            assert!(
                pos(dep) < pos(&boot.name),
                "{dep} after {}: {order:?}",
                boot.name
            );
        }
    }
    assert_eq!(order.len(), b.len());
}

#[test]
fn plot_is_well_formed_svg_with_one_core_bar_per_daemon_in_dependency_order() {
    let svg = plot_svg(&startup());
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let groups: Vec<roxmltree::Node<'_, '_>> = root
        .descendants()
        .filter(|n| n.attribute("class") == Some("daemon"))
        .collect();
    let names: Vec<&str> = groups
        .iter()
        .filter_map(|g| g.attribute("data-name"))
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    let pos = |n: &str| names.iter().position(|x| *x == n).expect("row");
    assert!(pos("data") < pos("user") && pos("user") < pos("room"));
    assert!(pos("room") < pos("chat") && pos("chat") < pos("persona"));
    assert!(pos("ai") < pos("persona") && pos("search") < pos("persona"));
    let class_of =
        |n: &roxmltree::Node<'_, '_>| n.attribute("class").unwrap_or_default().to_owned();
    for g in &groups {
        let rects: Vec<String> = g
            .children()
            .filter(|c| c.has_tag_name("rect"))
            .map(|c| class_of(&c))
            .collect();
        let core = rects.iter().filter(|c| c.starts_with("core")).count();
        assert_eq!(core, 1, "{:?}: {rects:?}", g.attribute("data-name"));
        let label = g
            .children()
            .find(|c| c.attribute("class") == Some("label"))
            .and_then(|t| t.text());
        assert_eq!(label, g.attribute("data-name"), "readable name label");
    }
    let all_core = root
        .descendants()
        .filter(|n| n.has_tag_name("rect") && class_of(n).starts_with("core"))
        .count();
    assert_eq!(all_core, 8);
    // data has a deferred bar after its core bar; the critical chain is outlined.
    let data = groups[pos("data")];
    let bar = |g: &roxmltree::Node<'_, '_>, cls: &str| -> (f64, f64) {
        let r = g
            .children()
            .find(|c| c.has_tag_name("rect") && class_of(c).starts_with(cls))
            .expect("bar");
        let x: f64 = r.attribute("x").and_then(|v| v.parse().ok()).expect("x");
        let w: f64 = r
            .attribute("width")
            .and_then(|v| v.parse().ok())
            .expect("w");
        (x, x + w)
    };
    let (core0, core1) = bar(&data, "core");
    let (def0, def1) = bar(&data, "deferred");
    assert!(
        core0 < core1 && core1 <= def0 + 0.01 && def0 < def1,
        "{core0} {core1} {def0} {def1}"
    );
    let outlined: Vec<&str> = groups
        .iter()
        .filter(|g| {
            g.children()
                .any(|c| c.has_tag_name("rect") && class_of(&c).contains("critical"))
        })
        .filter_map(|g| g.attribute("data-name"))
        .collect();
    assert_eq!(outlined, ["ai", "persona"]);
    // A time axis with labelled ticks.
    let ticks = root
        .descendants()
        .filter(|n| n.attribute("class") == Some("axis") && n.has_tag_name("text"))
        .count();
    assert!(ticks >= 3, "{ticks} tick labels");
}

#[test]
fn plot_escapes_names_and_survives_an_empty_or_odd_startup() {
    let odd = json!({"daemons": [
        {"daemon": "a<b>&\"c\"", "state": "starting", "waited_ms": 1.0},
        {"state": "ready"},
        "not an object",
    ]});
    let svg = plot_svg(&odd);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed");
    assert!(
        doc.descendants()
            .any(|n| n.attribute("data-name") == Some("a<b>&\"c\""))
    );
    for empty in [json!({}), json!({"daemons": []}), Value::Null] {
        roxmltree::Document::parse(&plot_svg(&empty)).expect("well-formed when empty");
        assert!(blame(&empty).starts_with("TOTAL"));
        let cc = critical_chain(&empty, None).expect("text");
        assert!(cc.contains("no daemon is READY"), "{cc}");
    }
}
