#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn bus() -> EventBus {
    EventBus::new(BusConfig::default())
}

fn events(sub: &mut Subscription) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(d) = sub.try_recv() {
        match d {
            Delivery::Event(e) => out.push(e.topic().to_owned()),
            Delivery::Lagged { missed } => out.push(format!("lagged:{missed}")),
        }
    }
    out
}

/// Does `pattern` match `topic`, according to the bus (index walk)?
fn bus_matches(pattern: &str, topic: &str) -> bool {
    let bus = bus();
    let mut sub = bus.subscribe(pattern).unwrap();
    let n = bus.publish(topic, json!(null)).unwrap();
    let got = !events(&mut sub).is_empty();
    assert_eq!(got, n == 1);
    assert_eq!(
        got,
        Pattern::parse(pattern).unwrap().matches(topic),
        "{pattern} vs {topic}"
    );
    got
}

/// Independent reference matcher on raw strings, recursive over segment slices.
fn ref_match(pat: &[&str], topic: &[&str]) -> bool {
    match (pat, topic) {
        ([], []) => true,
        (["*"], [_, ..]) => true,
        ([], _) | (_, []) => false,
        ([p, pt @ ..], [t, tt @ ..]) => {
            let hit = if *p == "*" {
                true
            } else if let Some(inner) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                inner.split(',').any(|a| a == *t)
            } else {
                p == t
            };
            hit && ref_match(pt, tt)
        }
    }
}

fn ref_match_str(pattern: &str, topic: &str) -> bool {
    let p: Vec<&str> = pattern.split(':').collect();
    let t: Vec<&str> = topic.split(':').collect();
    ref_match(&p, &t)
}

// ---------------------------------------------------------------- matching

#[test]
fn bus_literal_matches_only_itself() {
    assert!(bus_matches("data:users:created", "data:users:created"));
    assert!(!bus_matches("data:users:created", "data:users:updated"));
    assert!(!bus_matches("data:users:created", "data:users"));
    assert!(!bus_matches("data:users", "data:users:created"));
    assert!(!bus_matches("data", "data:users"));
}

#[test]
fn bus_middle_star_matches_exactly_one_segment() {
    assert!(bus_matches("data:*:created", "data:users:created"));
    assert!(!bus_matches("data:*:created", "data:users:x:created"));
    assert!(!bus_matches("data:*:created", "data:created"));
    assert!(!bus_matches("data:*:created", "data:users:updated"));
    assert!(bus_matches("*:users:created", "data:users:created"));
    assert!(!bus_matches("*:users:created", "users:created"));
}

#[test]
fn bus_trailing_star_matches_one_or_more() {
    assert!(bus_matches("data:*", "data:users"));
    assert!(bus_matches("data:*", "data:users:created"));
    assert!(bus_matches("data:*", "data:a:b:c:d"));
    assert!(!bus_matches("data:*", "data"));
    assert!(!bus_matches("data:*", "users:data"));
    assert!(bus_matches("data:*:*", "data:users:created"));
    assert!(bus_matches("data:*:*", "data:users:created:more"));
    assert!(!bus_matches("data:*:*", "data:users"));
}

#[test]
fn bus_lone_star_matches_everything() {
    assert!(bus_matches("*", "data"));
    assert!(bus_matches("*", "data:users:created"));
    assert!(bus_matches("*", "system:daemon:init-complete"));
}

#[test]
fn bus_brace_group_matches_alternatives() {
    assert!(bus_matches(
        "data:users:{created,updated}",
        "data:users:created"
    ));
    assert!(bus_matches(
        "data:users:{created,updated}",
        "data:users:updated"
    ));
    assert!(!bus_matches(
        "data:users:{created,updated}",
        "data:users:deleted"
    ));
    assert!(bus_matches("data:{users,rooms}:*", "data:rooms:created:x"));
    assert!(!bus_matches("data:{users,rooms}:*", "data:rooms"));
    assert!(bus_matches("{a,b}:{c,d}", "b:c"));
    assert!(!bus_matches("{a,b}:{c,d}", "c:a"));
    // A single alternative is a literal; duplicates are removed (still one delivery).
    assert!(bus_matches("data:{users}", "data:users"));
    let bus = bus();
    let mut sub = bus.subscribe("x:{a,a,b}").unwrap();
    assert_eq!(bus.publish("x:a", json!(1)).unwrap(), 1);
    assert_eq!(events(&mut sub), vec!["x:a"]);
}

#[test]
fn bus_several_subscribers_each_get_the_same_event_once() {
    let bus = bus();
    let mut a = bus.subscribe("data:*").unwrap();
    let mut b = bus.subscribe("data:users:{created,deleted}").unwrap();
    let mut c = bus.subscribe("data:*:created").unwrap();
    let mut d = bus.subscribe("room:*").unwrap();
    assert_eq!(
        bus.publish("data:users:created", json!({"id": 7})).unwrap(),
        3
    );
    let take = |s: &mut Subscription| match s.try_recv().unwrap() {
        Delivery::Event(e) => e,
        Delivery::Lagged { .. } => panic!("unexpected lag"),
    };
    let (ea, eb, ec) = (take(&mut a), take(&mut b), take(&mut c));
    assert!(Event::ptr_eq(&ea, &eb) && Event::ptr_eq(&eb, &ec));
    assert_eq!(ea.data()["id"], 7);
    assert_eq!(ea.topic(), "data:users:created");
    for s in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(s.try_recv().unwrap_err(), TryRecvError::Empty);
    }
    assert_eq!(
        serde_json::to_value(&ea).unwrap(),
        json!({"topic": "data:users:created", "data": {"id": 7}})
    );
}

#[test]
fn bus_publish_event_prebuilt() {
    let bus = bus();
    let mut sub = bus.subscribe("a:*").unwrap();
    let ev = Event::new("a:b", json!("x")).unwrap();
    assert_eq!(bus.publish_event(ev.clone()), 1);
    match sub.try_recv().unwrap() {
        Delivery::Event(e) => assert!(Event::ptr_eq(&e, &ev)),
        Delivery::Lagged { .. } => panic!(),
    }
    assert!(Event::new("a:*", json!(null)).is_err());
}

#[test]
fn bus_publish_with_builds_the_data_only_when_someone_listens() {
    let bus = bus();
    let built = std::cell::Cell::new(0);
    let data = || {
        built.set(built.get() + 1);
        json!({"n": 1})
    };
    assert_eq!(bus.publish_with("a:b", data).unwrap(), 0);
    assert_eq!(built.get(), 0, "nobody subscribed: nothing built");
    let mut s1 = bus.subscribe("a:*").unwrap();
    let mut s2 = bus.subscribe("a:b").unwrap();
    assert_eq!(bus.publish_with("a:b", data).unwrap(), 2);
    assert_eq!(built.get(), 1, "built once for both subscribers");
    for s in [&mut s1, &mut s2] {
        match s.try_recv().unwrap() {
            Delivery::Event(e) => assert_eq!(e.data(), &json!({"n": 1})),
            Delivery::Lagged { .. } => panic!(),
        }
    }
    assert!(bus.publish_with("a:*", data).is_err());
}

// ---------------------------------------------------------------- validation

#[test]
fn bus_topic_validation() {
    for ok in [
        "data",
        "data:users:created",
        "a:b c:d",
        "system:daemon:init-complete",
    ] {
        validate_topic(ok).unwrap();
    }
    let reason = |t: &str| validate_topic(t).unwrap_err().reason;
    assert_eq!(reason(""), SyntaxReason::Empty);
    assert_eq!(reason("a::b"), SyntaxReason::EmptySegment);
    assert_eq!(reason(":a"), SyntaxReason::EmptySegment);
    assert_eq!(reason("a:"), SyntaxReason::EmptySegment);
    assert_eq!(reason("a:  :b"), SyntaxReason::BlankSegment);
    assert_eq!(reason("a:*"), SyntaxReason::ReservedChar('*'));
    assert_eq!(reason("a:{b}"), SyntaxReason::ReservedChar('{'));
    assert_eq!(reason("a:b}"), SyntaxReason::ReservedChar('}'));
    assert_eq!(reason("a:b,c"), SyntaxReason::ReservedChar(','));
    assert_eq!(
        reason(&"x".repeat(1025)),
        SyntaxReason::TooLong {
            len: 1025,
            max: 1024
        }
    );
    validate_topic(&"x".repeat(1024)).unwrap();
    assert_eq!(
        reason(&vec!["a"; 33].join(":")),
        SyntaxReason::TooManySegments { max: 32 }
    );
    validate_topic(&vec!["a"; 32].join(":")).unwrap();

    let err = validate_topic("data::x").unwrap_err();
    assert_eq!((err.segment, err.position), (1, 5));
    assert_eq!(
        err.to_string(),
        "invalid topic \"data::x\" at segment 1 (byte 5): segment is empty"
    );
    // Long input is shortened in the error.
    assert!(validate_topic(&"y".repeat(5000)).unwrap_err().topic.len() < 100);

    let bus = bus();
    assert!(matches!(
        bus.publish("a::b", json!(null)),
        Err(BusError::Topic(_))
    ));
}

#[test]
fn bus_pattern_validation() {
    for ok in ["*", "a", "a:*", "*:b", "a:*:c", "{a,b}", "a:{b,c}:*", "*:*"] {
        Pattern::parse(ok).unwrap();
    }
    let reason = |p: &str| Pattern::parse(p).unwrap_err().reason;
    assert_eq!(reason(""), SyntaxReason::Empty);
    assert_eq!(reason("foo*"), SyntaxReason::PartialWildcard);
    assert_eq!(reason("a:*b"), SyntaxReason::PartialWildcard);
    assert_eq!(reason("a:**"), SyntaxReason::PartialWildcard);
    assert_eq!(reason("{}"), SyntaxReason::EmptyBraces);
    assert_eq!(reason("{a,}"), SyntaxReason::EmptyAlternative);
    assert_eq!(reason("{,a}"), SyntaxReason::EmptyAlternative);
    assert_eq!(reason("a::b"), SyntaxReason::EmptySegment);
    assert_eq!(reason("a:"), SyntaxReason::EmptySegment);
    assert_eq!(reason("a: "), SyntaxReason::BlankSegment);
    assert_eq!(reason("{a, }"), SyntaxReason::BlankSegment);
    assert_eq!(reason("a{b,c}"), SyntaxReason::PartialBrace);
    assert_eq!(reason("{b,c}d"), SyntaxReason::PartialBrace);
    assert_eq!(reason("{b,c"), SyntaxReason::PartialBrace);
    assert_eq!(reason("b}"), SyntaxReason::PartialBrace);
    assert_eq!(reason("a,b"), SyntaxReason::PartialBrace);
    assert_eq!(reason("{a,*}"), SyntaxReason::NonLiteralAlternative);
    assert_eq!(reason("{a,{b}}"), SyntaxReason::NonLiteralAlternative);
    assert_eq!(
        reason(&"x".repeat(1025)),
        SyntaxReason::TooLong {
            len: 1025,
            max: 1024
        }
    );
    assert_eq!(
        reason(&vec!["*"; 33].join(":")),
        SyntaxReason::TooManySegments { max: 32 }
    );
    Pattern::parse(&vec!["*"; 32].join(":")).unwrap();
    // 4 * 4 * 4 * 4 = 256 is allowed, a fifth group is not.
    let g = "{a,b,c,d}";
    Pattern::parse(&[g, g, g, g].join(":")).unwrap();
    assert_eq!(
        reason(&[g, g, g, g, g].join(":")),
        SyntaxReason::TooManyExpansions {
            max: MAX_EXPANSIONS
        }
    );

    let err = Pattern::parse("data:x*:y").unwrap_err();
    assert_eq!((err.segment, err.position), (1, 5));
    assert_eq!(
        err.to_string(),
        "invalid pattern \"data:x*:y\" at segment 1 (byte 5): a wildcard `*` must be the whole segment"
    );
    let bus = bus();
    assert!(matches!(bus.subscribe("a:{}"), Err(BusError::Pattern(_))));
    assert_eq!(bus.subscription_count(), 0);
    assert_eq!(bus.index_node_count(), 1);
}

// ---------------------------------------------------------------- lag

#[test]
fn bus_lag_is_reported_with_exact_count() {
    let bus = bus();
    let mut sub = bus.subscribe_with_capacity("t:*", 4).unwrap();
    for i in 0..10 {
        bus.publish(&format!("t:{i}"), json!(i)).unwrap();
    }
    assert_eq!(
        events(&mut sub),
        vec!["t:0", "t:1", "t:2", "t:3", "lagged:6"]
    );
    bus.publish("t:10", json!(10)).unwrap();
    assert_eq!(events(&mut sub), vec!["t:10"]);
    let stats = bus.stats();
    assert_eq!(stats.published, 11);
    assert_eq!(stats.delivered, 5);
    assert_eq!(stats.lagged, 6);
    assert_eq!(stats.subscriptions, 1);
}

#[test]
fn bus_lag_marker_is_in_order_before_later_events() {
    let bus = bus();
    let mut sub = bus.subscribe_with_capacity("t:*", 2).unwrap();
    for i in 0..5 {
        bus.publish(&format!("t:{i}"), json!(i)).unwrap();
    }
    // Queue: t:0 t:1, missed 3. Free one slot: the next publish queues the marker, the one after is lost
    // (queue full again) ...
    assert!(matches!(sub.try_recv().unwrap(), Delivery::Event(e) if e.topic() == "t:0"));
    bus.publish("t:5", json!(5)).unwrap();
    assert_eq!(events(&mut sub), vec!["t:1", "lagged:3", "lagged:1"]);
    bus.publish("t:6", json!(6)).unwrap();
    assert_eq!(events(&mut sub), vec!["t:6"]);
}

#[tokio::test]
async fn bus_lag_reported_to_waiting_recv() {
    let bus = bus();
    let mut sub = bus.subscribe_with_capacity("t", 1).unwrap();
    bus.publish("t", json!(1)).unwrap();
    bus.publish("t", json!(2)).unwrap();
    assert!(matches!(sub.recv().await, Some(Delivery::Event(_))));
    assert!(matches!(
        sub.recv().await,
        Some(Delivery::Lagged { missed: 1 })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bus_lag_exact_under_concurrent_publish_and_consume() {
    const PUBLISHERS: u64 = 3;
    const PER_PUBLISHER: u64 = 20_000;
    let bus = bus();
    let mut subs: Vec<Subscription> = (0..4)
        .map(|i| bus.subscribe_with_capacity("load:*", 1 + i * 7).unwrap())
        .collect();
    let mut consumers = Vec::new();
    for mut sub in subs.drain(..) {
        consumers.push(tokio::spawn(async move {
            let (mut received, mut missed) = (0u64, 0u64);
            while received + missed < PUBLISHERS * PER_PUBLISHER {
                match sub.recv().await.unwrap() {
                    Delivery::Event(_) => received += 1,
                    Delivery::Lagged { missed: m } => {
                        assert!(m > 0);
                        missed += m;
                    }
                }
                if received % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);
            (received, missed)
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let bus = bus.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                bus.publish(&format!("load:{p}:{i}"), json!(i)).unwrap();
                if i % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let mut total_received = 0;
    let mut total_missed = 0;
    for c in consumers {
        let (r, m) = c.await.unwrap();
        assert_eq!(r + m, PUBLISHERS * PER_PUBLISHER);
        total_received += r;
        total_missed += m;
    }
    let stats = bus.stats();
    assert_eq!(stats.published, PUBLISHERS * PER_PUBLISHER);
    assert_eq!(stats.delivered, total_received);
    assert_eq!(stats.lagged, total_missed);
    assert_eq!(stats.subscriptions, 0);
}

proptest! {
    /// Any interleaving of publishes and receives: received + sum(missed) == published, exactly, and a
    /// pending lag is always reported once the queue is empty.
    #[test]
    fn bus_prop_lag_accounting_exact(cap in 1usize..6, ops in proptest::collection::vec(0u8..3, 0..200)) {
        let bus = bus();
        let mut sub = bus.subscribe_with_capacity("p", cap).unwrap();
        let (mut published, mut received, mut missed) = (0u64, 0u64, 0u64);
        for op in ops {
            if op < 2 {
                bus.publish("p", json!(published)).unwrap();
                published += 1;
            } else if let Ok(d) = sub.try_recv() {
                match d {
                    Delivery::Event(_) => received += 1,
                    Delivery::Lagged { missed: m } => { prop_assert!(m > 0); missed += m }
                }
            }
        }
        loop {
            match sub.try_recv() {
                Ok(Delivery::Event(_)) => received += 1,
                Ok(Delivery::Lagged { missed: m }) => missed += m,
                Err(e) => { prop_assert_eq!(e, TryRecvError::Empty); break; }
            }
        }
        prop_assert_eq!(received + missed, published);
        prop_assert_eq!(bus.stats().lagged, missed);
        prop_assert_eq!(bus.stats().delivered, received);
    }
}

// ---------------------------------------------------------------- lifecycle

#[test]
fn bus_drop_unsubscribes_eagerly() {
    let bus = bus();
    let sub = bus.subscribe("data:{users,rooms}:*").unwrap();
    let other = bus.subscribe("data:users:created").unwrap();
    assert_eq!(bus.subscription_count(), 2);
    assert!(bus.index_node_count() > 1);
    drop(sub);
    drop(other);
    assert_eq!(bus.subscription_count(), 0);
    assert_eq!(bus.index_node_count(), 1);
    assert_eq!(bus.publish("data:users:created", json!(null)).unwrap(), 0);
}

#[test]
fn bus_ids_unique_and_increasing() {
    let bus = bus();
    let a = bus.subscribe("a").unwrap();
    let b = bus.subscribe("a").unwrap();
    drop(a);
    let c = bus.subscribe("a").unwrap();
    assert!(b.id() < c.id());
    assert_eq!(c.pattern(), "a");
    assert!(format!("{c:?}").contains("pattern"));
}

#[test]
fn bus_max_subscriptions_enforced() {
    let bus = EventBus::new(BusConfig {
        default_capacity: 8,
        max_subscriptions: 3,
    });
    let subs: Vec<_> = (0..3).map(|_| bus.subscribe("a:*").unwrap()).collect();
    assert_eq!(
        bus.subscribe("b").unwrap_err(),
        BusError::TooManySubscriptions { limit: 3 }
    );
    drop(subs);
    bus.subscribe("b").unwrap();
}

#[test]
fn bus_million_subscribe_drop_cycles_return_to_baseline() {
    let bus = bus();
    let baseline = bus.index_node_count();
    // A long-lived subscriber so the trie is not empty while cycling.
    let _keep = bus.subscribe("data:users:created").unwrap();
    let with_keep = bus.index_node_count();
    let patterns = [
        "data:{users,rooms}:created",
        "data:*:created",
        "data:*",
        "*",
        "room:*:members:{joined,left}",
        "data:users:created",
    ];
    let started = std::time::Instant::now();
    for i in 0..1_000_000usize {
        let sub = bus.subscribe(patterns[i % patterns.len()]).unwrap();
        drop(sub);
    }
    let elapsed = started.elapsed();
    assert_eq!(bus.subscription_count(), 1);
    assert_eq!(bus.index_node_count(), with_keep);
    assert_eq!(bus.index_node_count_slow(), with_keep);
    drop(_keep);
    assert_eq!(bus.subscription_count(), 0);
    assert_eq!(bus.index_node_count(), baseline);
    eprintln!("1,000,000 subscribe/drop cycles: {elapsed:?}");
}

#[tokio::test]
async fn bus_close_ends_streams_after_drain() {
    let bus = bus();
    let mut sub = bus.subscribe("a").unwrap();
    let mut waiting = bus.subscribe("b").unwrap();
    bus.publish("a", json!(1)).unwrap();
    let pending = tokio::spawn(async move { waiting.recv().await.is_none() });
    tokio::task::yield_now().await;
    bus.close();
    assert!(pending.await.unwrap());
    assert!(matches!(sub.recv().await, Some(Delivery::Event(_))));
    assert!(sub.recv().await.is_none());
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Closed);
    assert_eq!(bus.publish("a", json!(2)).unwrap(), 0);
    assert_eq!(bus.subscribe("a").unwrap_err(), BusError::Closed);
    assert!(bus.is_closed());
    assert_eq!(bus.subscription_count(), 0);
    assert_eq!(bus.index_node_count(), 1);
    drop(sub);
    assert_eq!(bus.subscription_count(), 0);
}

#[tokio::test]
async fn bus_dropping_last_handle_closes() {
    let bus = bus();
    let mut sub = bus.subscribe("a").unwrap();
    let clone = bus.clone();
    drop(bus);
    clone.publish("a", json!(1)).unwrap();
    drop(clone);
    assert!(matches!(sub.recv().await, Some(Delivery::Event(_))));
    assert!(sub.recv().await.is_none());
}

#[tokio::test]
async fn bus_subscription_is_a_stream() {
    use futures_util::StreamExt;
    let bus = bus();
    let sub = bus.subscribe("s:*").unwrap();
    for i in 0..3 {
        bus.publish(&format!("s:{i}"), json!(i)).unwrap();
    }
    bus.close();
    let got: Vec<_> = sub
        .map(|d| match d {
            Delivery::Event(e) => e.topic().to_owned(),
            Delivery::Lagged { .. } => "lag".into(),
        })
        .collect()
        .await;
    assert_eq!(got, vec!["s:0", "s:1", "s:2"]);
}

#[test]
fn bus_concurrent_publish_and_drop_across_threads() {
    let bus = bus();
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        for t in 0..2 {
            let bus = bus.clone();
            let stop = Arc::clone(&stop);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    bus.publish(&format!("x:{t}:{}", i % 3), json!(i)).unwrap();
                    i += 1;
                }
            });
        }
        for _ in 0..2 {
            let bus = bus.clone();
            s.spawn(move || {
                for i in 0..20_000 {
                    let mut sub = bus
                        .subscribe_with_capacity(["x:*", "x:{0,1}:*", "x:*:2"][i % 3], 2)
                        .unwrap();
                    let _ = sub.try_recv();
                }
            });
        }
        // Let the churn threads finish, then stop publishers.
        s.spawn({
            let bus = bus.clone();
            let stop = Arc::clone(&stop);
            move || {
                while bus.stats().published < 1_000 {
                    std::thread::yield_now();
                }
                stop.store(true, Ordering::Relaxed);
            }
        });
    });
    assert_eq!(bus.subscription_count(), 0);
    assert_eq!(bus.index_node_count(), 1);
}

// ---------------------------------------------------------------- index vs reference (proptest)

fn pattern_strategy() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("*".to_owned()),
        Just("{a,b}".to_owned()),
        Just("{b,c}".to_owned()),
        Just("{c,a,c}".to_owned()),
    ];
    proptest::collection::vec(seg, 1..5).prop_map(|v| v.join(":"))
}

fn topic_strategy() -> impl Strategy<Value = String> {
    let seg = prop_oneof![Just("a"), Just("b"), Just("c")];
    proptest::collection::vec(seg, 1..6).prop_map(|v| v.join(":"))
}

/// Expected trie nodes for a set of live patterns: every distinct prefix of every brace expansion (the
/// trailing `*` adds no node), plus the root.
fn expected_nodes(patterns: &[&str]) -> usize {
    let mut prefixes: BTreeSet<Vec<String>> = BTreeSet::new();
    prefixes.insert(Vec::new());
    for p in patterns {
        let mut segs: Vec<&str> = p.split(':').collect();
        if segs.last() == Some(&"*") {
            segs.pop();
        }
        let mut paths: Vec<Vec<String>> = vec![Vec::new()];
        for s in segs {
            let alts: Vec<String> = match s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                Some(inner) => inner.split(',').map(str::to_owned).collect(),
                None => vec![s.to_owned()],
            };
            paths = paths
                .into_iter()
                .flat_map(|p| {
                    alts.iter().map(move |a| {
                        let mut q = p.clone();
                        q.push(a.clone());
                        q
                    })
                })
                .collect();
            prefixes.extend(paths.iter().cloned());
        }
    }
    prefixes.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bus_prop_index_matches_reference(
        patterns in proptest::collection::vec(pattern_strategy(), 1..24),
        topics in proptest::collection::vec(topic_strategy(), 1..24),
    ) {
        let bus = bus();
        let mut subs: Vec<Subscription> =
            patterns.iter().map(|p| bus.subscribe_with_capacity(p, 64).unwrap()).collect();
        for topic in &topics {
            let expected: Vec<usize> =
                (0..patterns.len()).filter(|&i| ref_match_str(&patterns[i], topic)).collect();
            let n = bus.publish(topic, json!(null)).unwrap();
            prop_assert_eq!(n, expected.len());
            let mut got = Vec::new();
            for (i, sub) in subs.iter_mut().enumerate() {
                let mut count = 0;
                while let Ok(d) = sub.try_recv() {
                    prop_assert!(matches!(d, Delivery::Event(ref e) if e.topic() == topic));
                    count += 1;
                }
                prop_assert!(count <= 1, "delivered twice to {}", patterns[i]);
                if count == 1 {
                    got.push(i);
                }
                let parsed = Pattern::parse(&patterns[i]).unwrap();
                prop_assert_eq!(parsed.matches(topic), ref_match_str(&patterns[i], topic));
            }
            prop_assert_eq!(got, expected, "topic {}", topic);
        }
    }

    #[test]
    fn bus_prop_subscribe_drop_keeps_index_consistent(
        ops in proptest::collection::vec((any::<bool>(), pattern_strategy(), any::<prop::sample::Index>()), 1..80),
    ) {
        let bus = bus();
        let mut live: Vec<(String, Subscription)> = Vec::new();
        for (subscribe, pattern, pick) in ops {
            if subscribe || live.is_empty() {
                let sub = bus.subscribe(&pattern).unwrap();
                live.push((pattern, sub));
            } else {
                let i = pick.index(live.len());
                drop(live.swap_remove(i));
            }
            prop_assert_eq!(bus.subscription_count(), live.len());
            let pats: Vec<&str> = live.iter().map(|(p, _)| p.as_str()).collect();
            prop_assert_eq!(bus.index_node_count(), expected_nodes(&pats));
            prop_assert_eq!(bus.index_node_count(), bus.index_node_count_slow());
        }
        drop(live);
        prop_assert_eq!(bus.subscription_count(), 0);
        prop_assert_eq!(bus.index_node_count(), 1);
    }
}
