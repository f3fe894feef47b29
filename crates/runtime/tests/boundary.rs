//! The daemon boundary around background work (background loops, timer ticks, task sets) and
//! per-request work counts. Each test is named after what it proves.

use daemonhost_runtime::bus::Delivery;
use daemonhost_runtime::{
    BoxError, Cause, Context, Daemon, DaemonError, DaemonSpec, ErrorCode, LifecycleState, Phase,
    Request, Runtime, RuntimeBuilder, TaskError, TaskSet, WorkCounts, WorkPlace,
};
use daemonhost_testkit::{eventually, quiet_config, within};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the test daemon does in `start`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Spawns a background loop that panics when `bg/arm` is asked.
    ArmedLoop,
    /// Spawns a background task that panics at once, then never finishes `start`.
    PanicWhileStarting,
    /// Registers a 100 ms interval whose first tick panics.
    PanickyTimer,
    /// Holds a task set with a task that never ends (cancelled at stop), plus a timer and a
    /// loop.
    HoldsTasks,
    /// Nothing.
    Plain,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().push(s.into());
    }
    fn entries(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

struct Bd {
    spec: DaemonSpec,
    mode: Mode,
    log: Log,
    ticks: Arc<Mutex<Vec<Instant>>>,
}

fn bd(spec: DaemonSpec, mode: Mode) -> Bd {
    Bd {
        spec,
        mode,
        log: Log::default(),
        ticks: Arc::default(),
    }
}

struct BdState {
    arm: Option<mpsc::Sender<()>>,
    held: tokio::sync::Mutex<Option<TaskSet<()>>>,
}

impl Daemon for Bd {
    type State = BdState;

    fn spec(&self) -> DaemonSpec {
        self.spec.clone()
    }

    async fn start(&self, ctx: &Context) -> Result<BdState, BoxError> {
        let mut state = BdState {
            arm: None,
            held: tokio::sync::Mutex::new(None),
        };
        match self.mode {
            Mode::ArmedLoop => {
                let (tx, mut rx) = mpsc::channel::<()>(1);
                ctx.spawn(async move {
                    if rx.recv().await.is_some() {
                        explode("loop died").await;
                    }
                });
                state.arm = Some(tx);
            }
            Mode::PanicWhileStarting => {
                ctx.spawn(explode("died while starting"));
                std::future::pending::<()>().await;
            }
            Mode::PanickyTimer => {
                let ticks = self.ticks.clone();
                ctx.timers()
                    .register_interval("flaky", Duration::from_millis(100), move || {
                        let ticks = ticks.clone();
                        async move {
                            let n = {
                                let mut t = ticks.lock();
                                t.push(Instant::now());
                                t.len()
                            };
                            if n == 1 {
                                panic!("first tick exploded");
                            }
                        }
                    })?;
            }
            Mode::HoldsTasks => {
                let mut set = ctx.task_set::<()>();
                set.spawn(std::future::pending());
                *state.held.get_mut() = Some(set);
                ctx.timers()
                    .register_interval("idle", Duration::from_millis(5), || async {})?;
                let c = ctx.clone();
                ctx.spawn(async move {
                    let mut inner = c.task_set::<()>();
                    inner.spawn(std::future::pending());
                    c.cancelled().await;
                    drop(inner);
                });
            }
            Mode::Plain => {}
        }
        Ok(state)
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &BdState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let op = req.command.rsplit('/').next().unwrap_or_default();
        match op {
            "echo" => Ok(req.params),
            "arm" => {
                if let Some(tx) = &state.arm {
                    let _ = tx.send(()).await;
                }
                Ok(json!("armed"))
            }
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(json!("slept"))
            }
            "tasks" => {
                let mut set = ctx.task_set::<u64>();
                set.spawn(async { 1 });
                set.spawn(explode_with::<u64>("task exploded"));
                set.spawn(async {
                    // Blocking on purpose: the task set's polls must count toward longest_poll.
                    std::thread::sleep(Duration::from_millis(30));
                    2
                });
                assert_eq!(set.len(), 3);
                let (mut ok, mut errors) = (Vec::new(), Vec::new());
                while let Some(r) = set.join_next().await {
                    match r {
                        Ok(v) => ok.push(v),
                        Err(e) => errors.push(e),
                    }
                }
                ok.sort_unstable();
                let panicked = errors.iter().any(|e| {
                    matches!(e, TaskError::Panicked { daemon, message }
                        if daemon == "ts" && message == "task exploded")
                        && e.cause()
                            == Some(Cause::Panicked {
                                phase: Phase::Background,
                                message: "task exploded".into(),
                            })
                });
                Ok(json!({"ok": ok, "errors": errors.len(), "panicked": panicked}))
            }
            "worker" => {
                ctx.served_at(WorkPlace::Worker);
                // Other handlers of this daemon run in between: the placement is per request.
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(json!("worker"))
            }
            "legacy" => {
                // What placed daemons did before `served_at`: still counted once.
                ctx.metrics().record_work(WorkPlace::Worker);
                Ok(json!("legacy"))
            }
            "fallback" => {
                ctx.served_at(WorkPlace::Worker);
                tokio::time::sleep(Duration::from_millis(1)).await;
                // The worker went away; the fallback served it: the last report wins.
                ctx.served_at(WorkPlace::Inline);
                Ok(json!("fallback"))
            }
            "plain" => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(json!("plain"))
            }
            _ => Err(DaemonError::bad_request(format!("unknown op {op}"))),
        }
    }

    async fn on_event(&self, _ctx: &Context, _state: &BdState, _event: Delivery) {}

    async fn stop(&self, _ctx: &Context, state: BdState) {
        if let Some(mut set) = state.held.into_inner() {
            match set.join_next().await {
                Some(Err(TaskError::Cancelled { .. })) => self.log.push("held task cancelled"),
                other => self.log.push(format!("held task: {other:?}")),
            }
        }
    }
}

async fn explode(message: &'static str) {
    panic!("{message}");
}

async fn explode_with<T>(message: &'static str) -> T {
    panic!("{message}");
}

fn build(daemons: Vec<Bd>) -> Runtime {
    let mut b = RuntimeBuilder::new(quiet_config());
    for d in daemons {
        b.register(d);
    }
    b.build().expect("valid plan")
}

fn report(rt: &Runtime, name: &str) -> daemonhost_runtime::DaemonReport {
    rt.reports()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no daemon {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_loop_panic_is_counted_and_fails_the_daemon_with_the_background_cause() {
    let rt = build(vec![bd(
        DaemonSpec::new("bg").prefix("bg/").concurrency(4),
        Mode::ArmedLoop,
    )]);
    let mut states = rt.bus().subscribe("system:daemon:state").expect("sub");
    let report0 = within("start", rt.start_all()).await;
    assert!(report0.failed.is_empty(), "{:?}", report0.failed);
    let router = rt.router();
    // A request in flight when the loop dies is answered too, naming the cause.
    let in_flight = tokio::spawn({
        let r = router.clone();
        async move { r.ask("bg/slow", json!({})).await }
    });
    eventually("bg/slow in flight", async || {
        report(&rt, "bg").in_flight > 0
    })
    .await;
    router.ask("bg/arm", json!({})).await.expect("armed");
    let expected = Cause::Panicked {
        phase: Phase::Background,
        message: "loop died".into(),
    };
    eventually("bg to fail", async || {
        report(&rt, "bg").state == LifecycleState::Failed
    })
    .await;
    let r = report(&rt, "bg");
    assert_eq!(r.cause, Some(expected.clone()));
    assert_eq!(r.cause_kind, Some("panicked"));
    assert_eq!(r.panics, 1);
    let err = within("in-flight answer", in_flight)
        .await
        .expect("join")
        .expect_err("failed daemon");
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(
        err.message.contains("background task panicked: loop died"),
        "{err}"
    );
    let err = router.ask("bg/echo", json!(1)).await.expect_err("failed");
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(
        err.message.contains("background task panicked: loop died"),
        "{err}"
    );
    // The state event carries the human cause and its machine kind.
    let failed = within("state event", async {
        loop {
            if let Some(Delivery::Event(e)) = states.recv().await
                && e.data()["state"] == "failed"
            {
                break e.data().clone();
            }
        }
    })
    .await;
    assert_eq!(failed["daemon"], "bg");
    assert_eq!(failed["cause"], "background task panicked: loop died");
    assert_eq!(failed["causeKind"], "panicked");
    let down = within("shutdown", rt.shutdown()).await;
    assert_eq!(down.live_tasks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_panic_during_start_fails_the_daemon_and_its_dependents_with_the_cause() {
    let rt = build(vec![
        bd(
            DaemonSpec::new("bg").prefix("bg/"),
            Mode::PanicWhileStarting,
        ),
        bd(
            DaemonSpec::new("top").prefix("top/").requires("bg"),
            Mode::Plain,
        ),
    ]);
    let report = within("start", rt.start_all()).await;
    let cause_of = |name: &str| {
        report
            .failed
            .iter()
            .find(|f| f.daemon == name)
            .map(|f| f.cause.clone())
    };
    let bg = Cause::Panicked {
        phase: Phase::Background,
        message: "died while starting".into(),
    };
    assert_eq!(cause_of("bg"), Some(bg.clone()));
    assert_eq!(
        cause_of("top"),
        Some(Cause::DependencyFailed {
            dependency: "bg".into(),
            cause: Box::new(bg),
        })
    );
    assert_eq!(self::report(&rt, "bg").panics, 1);
    let down = within("shutdown", rt.shutdown()).await;
    assert_eq!(down.live_tasks, 0);
}

#[tokio::test(start_paused = true)]
async fn panicking_timer_tick_is_counted_and_the_next_tick_still_runs() {
    let d = bd(DaemonSpec::new("tick").prefix("tick/"), Mode::PanickyTimer);
    let ticks = d.ticks.clone();
    let rt = build(vec![d]);
    let settled = rt.start_all().await;
    assert!(settled.failed.is_empty());
    let t0 = Instant::now();
    // Paused time: this advances the clock, it does not wait.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let at: Vec<Duration> = ticks.lock().iter().map(|t| *t - t0).collect();
    assert_eq!(
        at,
        vec![
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_millis(300)
        ],
        "the ticks after the panicking one fire on schedule"
    );
    let r = report(&rt, "tick");
    assert_eq!(r.panics, 1);
    assert_eq!(r.state, LifecycleState::Ready);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_task_set_task_is_counted_and_yields_an_error_while_the_daemon_stays_ready() {
    let rt = build(vec![bd(DaemonSpec::new("ts").prefix("ts/"), Mode::Plain)]);
    within("start", rt.start_all()).await;
    let out = within("tasks", rt.router().ask("ts/tasks", json!({})))
        .await
        .expect("answered");
    assert_eq!(out, json!({"ok": [1, 2], "errors": 1, "panicked": true}));
    let r = report(&rt, "ts");
    assert_eq!(r.panics, 1);
    assert_eq!(r.state, LifecycleState::Ready);
    assert!(
        r.longest_poll_ms >= 30.0,
        "task set polls are timed: {}",
        r.longest_poll_ms
    );
    assert_eq!(
        rt.router().ask("ts/echo", json!(7)).await.expect("serves"),
        json!(7)
    );
    let down = within("shutdown", rt.shutdown()).await;
    assert_eq!(down.live_tasks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_no_background_loop_timer_or_task_set_task_is_live() {
    let timers_before = daemonhost_runtime::timers::live_timer_tasks();
    let d = bd(DaemonSpec::new("held").prefix("held/"), Mode::HoldsTasks);
    let log = d.log.clone();
    let rt = build(vec![d]);
    within("start", rt.start_all()).await;
    // The daemon task, the loop, its task set's task, the held task set's task, the timer.
    eventually("5 live tasks", async || rt.live_tasks() >= 5).await;
    let down = within("shutdown", rt.shutdown()).await;
    assert_eq!(down.live_tasks, 0);
    assert_eq!(rt.live_tasks(), 0);
    assert_eq!(
        daemonhost_runtime::timers::live_timer_tasks(),
        timers_before
    );
    assert_eq!(log.entries(), vec!["held task cancelled"]);
}

#[tokio::test(start_paused = true)]
async fn each_request_is_counted_once_where_the_handler_said_it_was_served() {
    const N: usize = 24;
    let rt = build(vec![
        bd(
            DaemonSpec::new("placed").prefix("placed/").concurrency(8),
            Mode::Plain,
        ),
        bd(
            DaemonSpec::new("plain").prefix("plain/").concurrency(8),
            Mode::Plain,
        ),
        bd(
            DaemonSpec::new("mixed").prefix("mixed/").concurrency(8),
            Mode::Plain,
        ),
    ]);
    rt.start_all().await;
    let router = rt.router();
    let asks = |cmds: Vec<&'static str>| {
        let r = router.clone();
        futures_util::future::join_all(cmds.into_iter().map(move |c| {
            let r = r.clone();
            async move { r.ask(c, json!({})).await.expect("answered") }
        }))
    };
    asks(vec!["placed/worker"; N]).await;
    asks(vec!["plain/plain"; N]).await;
    // Interleaved on one task: handlers that report Worker, report nothing, report through the
    // metrics (as placed daemons did), or report Worker then fall back to Inline.
    let mixed: Vec<&'static str> = [
        "mixed/worker",
        "mixed/plain",
        "mixed/legacy",
        "mixed/fallback",
    ]
    .into_iter()
    .cycle()
    .take(4 * N)
    .collect();
    asks(mixed).await;
    let n = N as u64;
    let placed = report(&rt, "placed");
    assert_eq!(placed.handled, n);
    assert_eq!(
        placed.work,
        WorkCounts {
            worker: n,
            ..WorkCounts::default()
        }
    );
    let plain = report(&rt, "plain");
    assert_eq!(plain.handled, n);
    assert_eq!(
        plain.work,
        WorkCounts {
            inline: n,
            ..WorkCounts::default()
        }
    );
    let mixed = report(&rt, "mixed");
    assert_eq!(mixed.handled, 4 * n);
    assert_eq!(
        mixed.work,
        WorkCounts {
            worker: 2 * n,
            inline: 2 * n,
            ..WorkCounts::default()
        }
    );
    rt.shutdown().await;
}
