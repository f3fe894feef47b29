//! Event bus publish cost: the indexed bus against a naive broadcast-then-filter baseline.
//!
//! Each case has N subscribers of which exactly one matches the published topic; the others are distinct
//! literal and wildcard patterns that do not. The indexed bus should cost about the same for 1, 10 and
//! 1,000 subscribers; the baseline checks every pattern on every publish, as the original system did.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use daemonhost_runtime::bus::{BusConfig, Delivery, Event, EventBus, Pattern};
use serde_json::json;
use tokio::sync::mpsc;

const TOPIC: &str = "data:chat_messages:created";
const MATCHING: &str = "data:*:created";
const SIZES: [usize; 3] = [1, 10, 1_000];

/// `n - 1` distinct patterns that do not match [`TOPIC`], cycling through literal and wildcard shapes.
fn non_matching(n: usize) -> Vec<String> {
    (0..n.saturating_sub(1))
        .map(|i| match i % 5 {
            0 => format!("data:coll{i}:created"),
            1 => format!("data:coll{i}:*"),
            2 => format!("room{i}:*"),
            3 => format!("data:*:evt{i}"),
            _ => format!("users:{i}:{{created,deleted}}"),
        })
        .collect()
}

/// The baseline: every publish walks every subscriber and runs the matcher.
struct NaiveBus {
    subs: Vec<(Pattern, mpsc::Sender<Event>)>,
}

impl NaiveBus {
    fn publish(&self, topic: &str, data: serde_json::Value) -> usize {
        let event = match Event::new(topic, data) {
            Ok(e) => e,
            Err(_) => return 0,
        };
        let mut delivered = 0;
        for (pattern, tx) in &self.subs {
            if pattern.matches(topic) && tx.try_send(event.clone()).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

fn bench_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("bus_publish_one_match");
    for n in SIZES {
        let others = non_matching(n);

        let bus = EventBus::new(BusConfig::default());
        let mut hit = bus.subscribe(MATCHING).expect("valid pattern");
        let _rest: Vec<_> = others
            .iter()
            .map(|p| bus.subscribe(p).expect("valid pattern"))
            .collect();
        assert_eq!(bus.publish(TOPIC, json!(null)).expect("valid topic"), 1);
        let _ = hit.try_recv();
        group.bench_with_input(BenchmarkId::new("indexed", n), &n, |b, _| {
            b.iter(|| {
                let n = bus
                    .publish(black_box(TOPIC), json!({"id": 1}))
                    .expect("valid topic");
                match hit.try_recv() {
                    Ok(Delivery::Event(e)) => black_box(e),
                    other => panic!("expected one event, got {other:?}"),
                };
                n
            });
        });

        let (tx, mut rx) = mpsc::channel(256);
        let mut subs = vec![(Pattern::parse(MATCHING).expect("valid pattern"), tx)];
        let mut _rxs = Vec::new();
        for p in &others {
            let (tx, rx) = mpsc::channel(256);
            subs.push((Pattern::parse(p).expect("valid pattern"), tx));
            _rxs.push(rx);
        }
        let naive = NaiveBus { subs };
        assert_eq!(naive.publish(TOPIC, json!(null)), 1);
        let _ = rx.try_recv();
        group.bench_with_input(BenchmarkId::new("broadcast_filter", n), &n, |b, _| {
            b.iter(|| {
                let n = naive.publish(black_box(TOPIC), json!({"id": 1}));
                black_box(rx.try_recv().expect("one event"));
                n
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_publish);
criterion_main!(benches);
