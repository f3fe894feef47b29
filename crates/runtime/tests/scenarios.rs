//! Runtime scenario tests: startup order, startup queues, failures, overflow, deadlines,
//! deferred init, blocking detection and shutdown. Each test is named after what it proves.

use daemonhost_runtime::bus::Delivery;
use daemonhost_runtime::{
    BoxError, Cause, Context, Daemon, DaemonError, DaemonSpec, DeferredState, ErrorCode,
    LifecycleState, OverflowPolicy, Phase, Request, RestartPolicy, Runtime, RuntimeBuilder,
};
use daemonhost_testkit::{eventually, quiet_config, within};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Barrier, watch};

/// A shared log of what happened, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().push(s.into());
    }
    fn entries(&self) -> Vec<String> {
        self.0.lock().clone()
    }
    fn position(&self, s: &str) -> usize {
        self.entries()
            .iter()
            .position(|e| e == s)
            .unwrap_or_else(|| panic!("'{s}' not in log {:?}", self.entries()))
    }
}

/// Configurable behaviour for a test daemon.
#[derive(Clone, Default)]
struct Behavior {
    log: Log,
    /// `start` waits until this is true.
    gate: Option<watch::Receiver<bool>>,
    /// `start` waits at this barrier (proves concurrent starts).
    barrier: Option<Arc<Barrier>>,
    /// `start` fails this many times before succeeding (u32::MAX = always).
    fail_starts: Option<Arc<AtomicU32>>,
    panic_in_start: bool,
    /// `start` blocks its thread this long (what the poll timer must catch).
    block_in_start: Option<Duration>,
    /// `start` never finishes.
    hang_in_start: bool,
    deferred_fails: bool,
    /// In `start`, assert these daemons are READY.
    expect_ready: Vec<String>,
    /// Register a timer, a spawned task and a subscription in `start`.
    allocate_resources: bool,
}

struct Td {
    spec: DaemonSpec,
    b: Behavior,
}

#[derive(Default)]
struct TdState {
    seen: Mutex<Vec<Value>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    events: Mutex<Vec<String>>,
    _held: Mutex<Vec<daemonhost_runtime::bus::Subscription>>,
}

fn td(name: &str) -> DaemonSpec {
    DaemonSpec::new(name).prefix(format!("{name}/"))
}

impl Daemon for Td {
    type State = TdState;

    fn spec(&self) -> DaemonSpec {
        self.spec.clone()
    }

    async fn start(&self, ctx: &Context) -> Result<TdState, BoxError> {
        let name = ctx.name().to_owned();
        self.b.log.push(format!("start:{name}"));
        for dep in &self.b.expect_ready {
            let st = ctx
                .router()
                .watch(dep)
                .map(|w| w.borrow().state)
                .ok_or("no such dependency")?;
            if st != LifecycleState::Ready {
                return Err(format!("dependency {dep} is {st}, not ready").into());
            }
        }
        if let Some(b) = &self.b.barrier {
            b.wait().await;
        }
        if let Some(g) = &self.b.gate {
            let mut g = g.clone();
            g.wait_for(|open| *open).await.map_err(|_| "gate dropped")?;
        }
        if let Some(d) = self.b.block_in_start {
            // Deliberately blocking: this is what longest_poll must expose.
            std::thread::sleep(d);
        }
        if self.b.panic_in_start {
            panic!("boom in start of {name}");
        }
        if self.b.hang_in_start {
            std::future::pending::<()>().await;
        }
        if let Some(n) = &self.b.fail_starts {
            let left = n.load(Ordering::SeqCst);
            if left > 0 {
                n.store(left.saturating_sub(1), Ordering::SeqCst);
                return Err(format!("disk on fire ({left} left)").into());
            }
        }
        let state = TdState::default();
        if self.b.allocate_resources {
            ctx.timers()
                .register_interval("tick", Duration::from_millis(5), || async {})
                .map_err(|e| e.to_string())?;
            let c2 = ctx.clone();
            ctx.spawn(async move {
                c2.cancelled().await;
            });
            state
                ._held
                .lock()
                .push(ctx.subscribe("held:*").map_err(|e| e.to_string())?);
        }
        self.b.log.push(format!("ready:{name}"));
        Ok(state)
    }

    async fn start_deferred(&self, ctx: &Context, _state: &TdState) -> Result<(), BoxError> {
        let st = ctx.router().watch(ctx.name()).map(|w| w.borrow().state);
        self.b.log.push(format!("deferred:{}:{:?}", ctx.name(), st));
        if self.b.deferred_fails {
            return Err("index corrupt".into());
        }
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &TdState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let now = state.running.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_running.fetch_max(now, Ordering::SeqCst);
        let _dec = Dec(&state.running);
        let op = req.command.rsplit('/').next().unwrap_or_default();
        match op {
            "echo" => {
                state.seen.lock().push(req.params.clone());
                Ok(req.params)
            }
            "panic" => panic!("handler exploded"),
            "slow" => {
                let ms = req.params.get("ms").and_then(Value::as_u64).unwrap_or(10);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!({"slept": ms}))
            }
            "block" => {
                // Deliberately blocking the worker: the caller must still get its `timeout`.
                let ms = req.params.get("ms").and_then(Value::as_u64).unwrap_or(10);
                std::thread::sleep(Duration::from_millis(ms));
                Ok(json!({"blocked": ms}))
            }
            "seen" => Ok(Value::from(state.seen.lock().len())),
            "max_running" => Ok(Value::from(state.max_running.load(Ordering::SeqCst))),
            "events" => Ok(json!(state.events.lock().clone())),
            "slowcall" => {
                let ms = req.params.get("ms").and_then(Value::as_u64).unwrap_or(10);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let target = req.params["target"].as_str().unwrap_or_default().to_owned();
                ctx.router().ask(&target, json!({})).await
            }
            "call" => {
                let target = req.params["target"].as_str().unwrap_or_default().to_owned();
                ctx.router().ask(&target, json!({})).await
            }
            _ => Err(DaemonError::bad_request(format!("unknown op {op}"))),
        }
    }

    async fn on_event(&self, _ctx: &Context, state: &TdState, event: Delivery) {
        if let Delivery::Event(e) = event {
            state.events.lock().push(e.topic().to_owned());
        }
    }

    async fn stop(&self, ctx: &Context, _state: TdState) {
        self.b.log.push(format!("stop:{}", ctx.name()));
    }
}

struct Dec<'a>(&'a AtomicUsize);
impl Drop for Dec<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn build(daemons: Vec<Td>) -> Runtime {
    let mut b = RuntimeBuilder::new(quiet_config());
    for d in daemons {
        b.register(d);
    }
    b.build().expect("valid plan")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_order_respects_requires_while_independent_daemons_start_concurrently() {
    let log = Log::default();
    // a and b meet at a barrier inside `start`: if they did not start concurrently, neither
    // would finish and the test would time out.
    let barrier = Arc::new(Barrier::new(2));
    let b_a = Behavior {
        log: log.clone(),
        barrier: Some(barrier.clone()),
        ..Default::default()
    };
    let b_b = Behavior {
        log: log.clone(),
        barrier: Some(barrier),
        ..Default::default()
    };
    let b_c = Behavior {
        log: log.clone(),
        expect_ready: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let rt = build(vec![
        Td {
            spec: td("c").requires("a").requires("b"),
            b: b_c,
        },
        Td {
            spec: td("a"),
            b: b_a,
        },
        Td {
            spec: td("b"),
            b: b_b,
        },
    ]);
    let report = within("start", rt.start_all()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.ready.last().map(String::as_str), Some("c"));
    assert!(log.position("start:c") > log.position("ready:a"));
    assert!(log.position("start:c") > log.position("ready:b"));
    // Overlap: each of a, b started before the other became ready.
    assert!(log.position("start:a") < log.position("ready:b"));
    assert!(log.position("start:b") < log.position("ready:a"));
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_queue_answers_10000_early_requests_in_fifo_order() {
    let (open, gate) = watch::channel(false);
    let rt = build(vec![Td {
        spec: td("q").startup_queue(10_000).concurrency(1),
        b: Behavior {
            gate: Some(gate),
            ..Default::default()
        },
    }]);
    rt.start();
    let router = rt.router();
    // join_all polls in order, so requests enter the startup queue as 0, 1, 2, ...
    let asks = (0..10_000u64).map(|i| {
        let r = router.clone();
        async move { r.ask("q/echo", json!(i)).await }
    });
    let all = tokio::spawn(futures_util::future::join_all(asks));
    // Wait until every request is queued, then let the daemon become READY.
    eventually("10000 requests in the startup queue", async || {
        rt.reports()[0].queue_depth == 10_000
    })
    .await;
    assert_eq!(rt.reports()[0].state, LifecycleState::Starting);
    open.send(true).expect("gate");
    let answers = within("answers", all).await.expect("join");
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.as_ref().expect("ok"), &json!(i));
    }
    let seen = router.ask("q/echo", json!("after")).await.expect("ok");
    assert_eq!(seen, json!("after"));
    let report = &rt.reports()[0];
    assert_eq!(report.queued_before_ready, 10_000);
    let init = &rt.init_reports()[0];
    assert_eq!(init.queued_before_ready, 10_000);
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failure_answers_every_queued_request_unavailable_with_cause_and_fails_dependents() {
    let (open, gate) = watch::channel(false);
    let rt = build(vec![
        Td {
            spec: td("data"),
            b: Behavior {
                gate: Some(gate),
                fail_starts: Some(Arc::new(AtomicU32::new(u32::MAX))),
                ..Default::default()
            },
        },
        Td {
            spec: td("user").requires("data"),
            b: Behavior::default(),
        },
        Td {
            spec: td("room").requires("user"),
            b: Behavior::default(),
        },
    ]);
    rt.start();
    let router = rt.router();
    let asks: Vec<_> = (0..100)
        .map(|i| {
            let r = router.clone();
            let cmd = if i % 2 == 0 { "data/echo" } else { "room/echo" };
            tokio::spawn(async move { r.ask(cmd, json!(i)).await })
        })
        .collect();
    eventually("100 requests queued", async || {
        rt.reports().iter().map(|r| r.queue_depth).sum::<usize>() == 100
    })
    .await;
    open.send(true).expect("gate");
    for a in asks {
        let err = within("answer", a)
            .await
            .expect("join")
            .expect_err("must fail");
        assert_eq!(err.code, ErrorCode::Unavailable);
        assert!(err.message.contains("disk on fire"), "{}", err.message);
    }
    let reports = rt.reports();
    let room = reports.iter().find(|r| r.name == "room").expect("room");
    assert_eq!(room.state, LifecycleState::Failed);
    // The cause chains transitively: room <- user <- data's own start failure.
    let cause = room.cause.clone().expect("room has a cause");
    let Cause::DependencyFailed {
        dependency,
        cause: via,
    } = &cause
    else {
        panic!("{cause:?}")
    };
    assert_eq!(dependency, "user");
    assert!(
        matches!(&**via, Cause::DependencyFailed { dependency, .. } if dependency == "data"),
        "{via:?}"
    );
    assert!(
        matches!(cause.root(), Cause::StartFailed { error } if error.contains("disk on fire")),
        "{cause:?}"
    );
    assert_eq!(room.cause_kind, Some("dependency_failed"));
    // The human text reads as it always did.
    assert!(
        cause
            .to_string()
            .starts_with("requires 'user', which failed: requires 'data'"),
        "{cause}"
    );
    // Requests after the failure are answered at once with the same cause.
    let err = router.ask("data/echo", json!(1)).await.expect_err("failed");
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(err.message.contains("disk on fire"));
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_queue_overflow_answers_overloaded_under_both_policies() {
    for policy in [OverflowPolicy::RejectNewest, OverflowPolicy::DropOldest] {
        let (open, gate) = watch::channel(false);
        let rt = build(vec![Td {
            spec: td("q").startup_queue(10).overflow(policy).concurrency(1),
            b: Behavior {
                gate: Some(gate),
                ..Default::default()
            },
        }]);
        rt.start();
        let router = rt.router();
        let asks = (0..15u64).map(|i| {
            let r = router.clone();
            async move { r.ask("q/echo", json!(i)).await }
        });
        let all = tokio::spawn(futures_util::future::join_all(asks));
        eventually("5 requests overflowed", async || {
            rt.reports()[0].overflowed == 5
        })
        .await;
        open.send(true).expect("gate");
        let answers = within("answers", all).await.expect("join");
        let (ok, overloaded): (Vec<_>, Vec<_>) =
            answers.iter().enumerate().partition(|(_, a)| a.is_ok());
        assert_eq!(ok.len(), 10, "{policy:?}");
        assert_eq!(overloaded.len(), 5);
        for (_, a) in &overloaded {
            let e = a.as_ref().expect_err("overloaded");
            assert_eq!(e.code, ErrorCode::Overloaded, "{e}");
        }
        let ok_ids: Vec<usize> = ok.iter().map(|(i, _)| *i).collect();
        match policy {
            OverflowPolicy::RejectNewest => assert_eq!(ok_ids, (0..10).collect::<Vec<_>>()),
            OverflowPolicy::DropOldest => assert_eq!(ok_ids, (5..15).collect::<Vec<_>>()),
        }
        within("shutdown", rt.shutdown()).await;
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_expires_with_timeout_while_daemon_is_starting() {
    let (_open, gate) = watch::channel(false);
    let rt = build(vec![Td {
        spec: td("slow"),
        b: Behavior {
            gate: Some(gate),
            ..Default::default()
        },
    }]);
    rt.start();
    let err = rt
        .router()
        .ask_timeout("slow/echo", json!(1), Duration::from_millis(250))
        .await
        .expect_err("timeout");
    assert_eq!(err.code, ErrorCode::Timeout);
    assert!(err.message.contains("starting"), "{}", err.message);
}

#[tokio::test(start_paused = true)]
async fn deadline_expires_with_timeout_while_handler_runs() {
    let rt = build(vec![Td {
        spec: td("s"),
        b: Behavior::default(),
    }]);
    within("start", rt.start_all()).await;
    let err = rt
        .router()
        .ask_timeout("s/slow", json!({"ms": 60_000}), Duration::from_millis(100))
        .await
        .expect_err("timeout");
    assert_eq!(err.code, ErrorCode::Timeout);
    // The handler's future was dropped at the deadline: nothing is left in flight.
    eventually("nothing in flight", async || rt.reports()[0].in_flight == 0).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_answers_the_caller_even_while_the_daemon_task_is_stuck_in_a_poll() {
    let rt = build(vec![Td {
        spec: td("s"),
        b: Behavior::default(),
    }]);
    within("start", rt.start_all()).await;
    let router = rt.router();
    let t0 = std::time::Instant::now();
    let blocked = tokio::spawn({
        let router = router.clone();
        async move {
            router
                .ask_timeout("s/block", json!({"ms": 1_500}), Duration::from_millis(300))
                .await
        }
    });
    // Wait until the daemon is inside the blocking handler, then ask behind it.
    eventually("handler running", async || rt.reports()[0].in_flight == 1).await;
    let queued = router
        .ask_timeout("s/echo", json!(1), Duration::from_millis(100))
        .await
        .expect_err("timeout");
    assert_eq!(queued.code, ErrorCode::Timeout, "{}", queued.message);
    assert!(queued.message.contains("1 queued"), "{}", queued.message);
    let in_flight = blocked.await.expect("join").expect_err("timeout");
    assert_eq!(in_flight.code, ErrorCode::Timeout, "{}", in_flight.message);
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_millis(1_200),
        "both answered at their deadlines, not when the daemon woke: {waited:?}"
    );
    // The daemon comes back and serves on.
    assert_eq!(
        router.ask("s/echo", json!(2)).await.expect("served"),
        json!(2)
    );
    rt.shutdown().await;
}

#[test]
fn plan_with_cycle_and_unknown_dependency_reports_both_and_starts_nothing() {
    let log = Log::default();
    let mut b = RuntimeBuilder::new(quiet_config());
    for (name, req) in [("a", "b"), ("b", "a"), ("c", "ghost")] {
        b.register(Td {
            spec: td(name).requires(req),
            b: Behavior {
                log: log.clone(),
                ..Default::default()
            },
        });
    }
    let err = b.build().expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("dependency cycle: a -> b -> a"), "{text}");
    assert!(
        text.contains("'c' requires unknown daemon 'ghost'"),
        "{text}"
    );
    assert!(log.entries().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_init_runs_after_ready_and_its_failure_is_reported_while_serving() {
    let log = Log::default();
    let rt = build(vec![Td {
        spec: td("d"),
        b: Behavior {
            log: log.clone(),
            deferred_fails: true,
            ..Default::default()
        },
    }]);
    let mut sub = rt
        .bus()
        .subscribe("system:daemon:init-complete")
        .expect("sub");
    within("start", rt.start_all()).await;
    let ev = within("init-complete", sub.recv()).await.expect("event");
    let Delivery::Event(ev) = ev else {
        panic!("lagged")
    };
    assert_eq!(ev.data()["daemon"], "d");
    assert_eq!(ev.data()["deferred"], "failed");
    assert!(
        log.entries().contains(&"deferred:d:Some(Ready)".to_owned()),
        "{:?}",
        log.entries()
    );
    let r = &rt.reports()[0];
    assert_eq!(r.state, LifecycleState::Ready);
    assert_eq!(r.deferred, DeferredState::Failed);
    assert_eq!(
        r.deferred_cause,
        Some(Cause::DeferredInitFailed {
            error: "index corrupt".into()
        })
    );
    assert_eq!(
        rt.router().ask("d/echo", json!(5)).await.expect("serves"),
        json!(5)
    );
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_reports_give_dependencies_and_when_each_daemon_began_and_became_ready() {
    let rt = build(vec![
        Td {
            spec: td("base"),
            b: Behavior {
                // The subject: a core init that takes 20 ms.
                block_in_start: Some(Duration::from_millis(20)),
                ..Default::default()
            },
        },
        Td {
            spec: td("top").requires("base").wants("extra"),
            b: Behavior::default(),
        },
        Td {
            spec: td("extra"),
            b: Behavior::default(),
        },
    ]);
    within("start", rt.start_all()).await;
    let reports = rt.init_reports();
    let by = |n: &str| {
        reports
            .iter()
            .find(|r| r.daemon == n)
            .cloned()
            .expect("report")
    };
    let (base, top) = (by("base"), by("top"));
    assert_eq!(top.requires, vec!["base".to_owned()]);
    assert_eq!(top.wants, vec!["extra".to_owned()]);
    assert!(base.requires.is_empty() && base.wants.is_empty());
    assert!(base.core_init_ms >= 20.0, "{base:?}");
    // Start signal → wait → core init → READY, in that order, on one clock.
    assert!(
        base.waited_ms + base.core_init_ms <= base.ready_at_ms + 1e-9,
        "{base:?}"
    );
    assert!(
        top.waited_ms >= base.ready_at_ms,
        "{top:?} began before {base:?} was READY"
    );
    assert!(
        top.ready_at_ms >= top.waited_ms + top.core_init_ms - 1e-9,
        "{top:?}"
    );
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_start_shows_longest_poll_at_least_100ms() {
    let rt = build(vec![
        Td {
            spec: td("blocker"),
            b: Behavior {
                block_in_start: Some(Duration::from_millis(100)),
                ..Default::default()
            },
        },
        Td {
            spec: td("polite"),
            b: Behavior::default(),
        },
    ]);
    within("start", rt.start_all()).await;
    // The poll is recorded when it returns, which is just after READY is published.
    eventually("the blocking poll recorded", async || {
        rt.init_reports()[0].longest_poll_ms >= 100.0
    })
    .await;
    let init = rt.init_reports();
    assert!(init[0].longest_poll_ms >= 100.0, "{:?}", init[0]);
    assert!(init[1].longest_poll_ms < 100.0, "{:?}", init[1]);
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_order_is_exact_reverse_and_leaves_no_task_timer_or_subscription() {
    let log = Log::default();
    let timers_before = daemonhost_runtime::timers::live_timer_tasks();
    let b = || Behavior {
        log: log.clone(),
        allocate_resources: true,
        ..Default::default()
    };
    let rt = build(vec![
        Td {
            spec: td("c").requires("b").events("x:*"),
            b: b(),
        },
        Td {
            spec: td("a").events("x:*"),
            b: b(),
        },
        Td {
            spec: td("b").requires("a").events("x:*"),
            b: b(),
        },
    ]);
    let report = within("start", rt.start_all()).await;
    assert_eq!(report.ready, vec!["a", "b", "c"]);
    assert!(rt.bus().subscription_count() >= 6);
    assert!(rt.live_tasks() >= 9);
    let down = within("shutdown", rt.shutdown()).await;
    assert_eq!(down.stop_order, vec!["c", "b", "a"]);
    let stops: Vec<_> = log
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("stop:"))
        .collect();
    assert_eq!(stops, vec!["stop:c", "stop:b", "stop:a"]);
    assert_eq!(down.live_tasks, 0);
    assert_eq!(down.live_subscriptions, 0);
    assert_eq!(rt.bus().subscription_count(), 0);
    assert_eq!(
        daemonhost_runtime::timers::live_timer_tasks(),
        timers_before
    );
    let err = rt
        .router()
        .ask("a/echo", json!(1))
        .await
        .expect_err("stopped");
    assert_eq!(err.code, ErrorCode::ShuttingDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_can_still_call_dependencies_while_they_drain() {
    let rt = build(vec![
        Td {
            spec: td("base"),
            b: Behavior::default(),
        },
        Td {
            spec: td("top").requires("base"),
            b: Behavior::default(),
        },
    ]);
    within("start", rt.start_all()).await;
    // A request into `top` that sleeps, then calls `base`; shutdown begins while it sleeps.
    let call = tokio::spawn({
        let r = rt.router();
        async move {
            r.ask("top/slowcall", json!({"ms": 50, "target": "base/echo"}))
                .await
        }
    });
    eventually("top's request in flight", async || {
        rt.reports()[1].in_flight > 0
    })
    .await;
    let down = within("shutdown", rt.shutdown()).await;
    assert_eq!(down.stop_order, vec!["top", "base"]);
    let answer = within("call", call).await.expect("join");
    assert_eq!(answer.expect("base answered while top drained"), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_is_an_internal_error_and_the_daemon_keeps_serving() {
    let rt = build(vec![Td {
        spec: td("p"),
        b: Behavior::default(),
    }]);
    within("start", rt.start_all()).await;
    let err = rt
        .router()
        .ask("p/panic", json!({}))
        .await
        .expect_err("panic");
    assert_eq!(err.code, ErrorCode::Internal);
    assert!(err.message.contains("handler exploded"), "{}", err.message);
    assert_eq!(
        rt.router().ask("p/echo", json!(2)).await.expect("ok"),
        json!(2)
    );
    assert_eq!(rt.reports()[0].panics, 1);
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_panic_fails_the_daemon_with_the_panic_message() {
    let rt = build(vec![Td {
        spec: td("p"),
        b: Behavior {
            panic_in_start: true,
            ..Default::default()
        },
    }]);
    let report = within("start", rt.start_all()).await;
    assert_eq!(report.failed.len(), 1);
    assert!(
        matches!(
            &report.failed[0].cause,
            Cause::Panicked { phase: Phase::Start, message } if message.contains("boom in start")
        ),
        "{:?}",
        report.failed
    );
    assert_eq!(rt.reports()[0].panics, 1);
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(start_paused = true)]
async fn start_timeout_fails_the_daemon() {
    let rt = build(vec![Td {
        spec: td("h").start_timeout(Duration::from_millis(300)),
        b: Behavior {
            hang_in_start: true,
            ..Default::default()
        },
    }]);
    let report = rt.start_all().await;
    assert_eq!(
        report.failed[0].cause,
        Cause::StartTimedOut { after_ms: 300 },
        "{:?}",
        report.failed
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_policy_retries_a_failed_start_and_queued_requests_survive() {
    let rt = build(vec![Td {
        spec: td("r").restart(RestartPolicy::retry(2, Duration::from_millis(100))),
        b: Behavior {
            fail_starts: Some(Arc::new(AtomicU32::new(2))),
            ..Default::default()
        },
    }]);
    rt.start();
    let ask = tokio::spawn({
        let r = rt.router();
        async move { r.ask("r/echo", json!("queued")).await }
    });
    let report = rt.wait_settled().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(rt.reports()[0].attempts, 3);
    assert_eq!(ask.await.expect("join").expect("ok"), json!("queued"));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_one_is_strictly_sequential_and_more_allows_overlap() {
    for (limit, expect_overlap) in [(1usize, false), (4, true)] {
        let rt = build(vec![Td {
            spec: td("c").concurrency(limit),
            b: Behavior::default(),
        }]);
        within("start", rt.start_all()).await;
        let router = rt.router();
        let asks = (0..8).map(|_| {
            let r = router.clone();
            async move { r.ask("c/slow", json!({"ms": 20})).await }
        });
        for a in within("asks", futures_util::future::join_all(asks)).await {
            a.expect("ok");
        }
        let max = router.ask("c/max_running", json!({})).await.expect("ok");
        let max = max.as_u64().unwrap_or(0);
        if expect_overlap {
            assert!(max > 1, "limit {limit}: max {max}");
            assert!(max <= 4);
        } else {
            assert_eq!(max, 1);
        }
        within("shutdown", rt.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_receive_declared_events_in_on_event() {
    let rt = build(vec![Td {
        spec: td("e").events("data:*:created"),
        b: Behavior::default(),
    }]);
    within("start", rt.start_all()).await;
    let bus = rt.bus();
    bus.publish("data:users:created", json!({}))
        .expect("publish");
    bus.publish("data:users:deleted", json!({}))
        .expect("publish");
    bus.publish("data:rooms:created", json!({}))
        .expect("publish");
    let events = eventually("two events handled", async || {
        let v = rt.router().ask("e/events", json!({})).await.expect("ok");
        (v.as_array().map(Vec::len) == Some(2)).then_some(v)
    })
    .await;
    assert_eq!(events, json!(["data:users:created", "data:rooms:created"]));
    within("shutdown", rt.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_an_unknown_command_get_unknown_command() {
    let rt = build(vec![Td {
        spec: td("x"),
        b: Behavior::default(),
    }]);
    within("start", rt.start_all()).await;
    let err = rt
        .router()
        .ask("nope/thing", json!({}))
        .await
        .expect_err("unknown");
    assert_eq!(err.code, ErrorCode::UnknownCommand);
    within("shutdown", rt.shutdown()).await;
}
