//! `peers <library> <scenario>`: one measurement of one library, printed as one line of JSON.
//!
//! Libraries: `raw` (tokio mpsc + oneshot), `daemonhost`, `ractor`, `kameo`, `actix`.
//! Scenarios: `ask-seq`, `ask-pipe`, `ask-fan8`, `startup15`, `idle10k` (see README.md).
//! `PEERS_N` shrinks every count proportionally (default 200000 requests) for smoke runs.

mod common;
mod with_actix;
mod with_daemonhost;
mod with_kameo;
mod with_ractor;
mod with_raw;

use common::{Counts, EchoClient, Exec};
use serde_json::Value;
use std::future::Future;
use std::process::ExitCode;

const LIBS: [&str; 5] = ["raw", "daemonhost", "ractor", "kameo", "actix"];
const SCENARIOS: [&str; 5] = ["ask-seq", "ask-pipe", "ask-fan8", "startup15", "idle10k"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    AskSeq,
    AskPipe,
    AskFan8,
    Startup15,
    Idle10k,
}

impl Scenario {
    fn parse(s: &str) -> Option<Scenario> {
        Some(match s {
            "ask-seq" => Scenario::AskSeq,
            "ask-pipe" => Scenario::AskPipe,
            "ask-fan8" => Scenario::AskFan8,
            "startup15" => Scenario::Startup15,
            "idle10k" => Scenario::Idle10k,
            _ => return None,
        })
    }
}

/// Run one of the three ask scenarios against an echo unit the library has started. Called by
/// each library's `ask`, inside the client task.
pub async fn ask_scenario<C: EchoClient>(
    scenario: Scenario,
    client: C,
    k: Counts,
    exec: Exec,
) -> Value {
    match scenario {
        Scenario::AskSeq => common::ask_seq(client, k).await,
        Scenario::AskPipe => common::ask_pipe(client, k).await,
        Scenario::AskFan8 => common::ask_fan(client, k, exec).await,
        Scenario::Startup15 | Scenario::Idle10k => unreachable!("not an ask scenario"),
    }
}

/// The 2-worker multi-thread tokio runtime of raw, daemonhost, ractor and kameo; the body runs
/// in a task spawned on it (a worker thread), not on the thread that blocks.
fn on_tokio<F>(body: F) -> Value
where
    F: Future<Output = Value> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async { tokio::spawn(body).await.expect("client task") });
    rt.shutdown_background();
    result
}

/// actix's own System (a current-thread tokio runtime with the system arbiter); the body runs
/// in a task spawned on the arbiter.
fn on_actix<F>(body: F) -> Value
where
    F: Future<Output = Value> + Send + 'static,
{
    let system = actix_rt::System::new();
    system.block_on(async { actix_rt::spawn(body).await.expect("client task") })
}

fn run(lib: &str, scenario: Scenario, k: Counts) -> Value {
    use Scenario::*;
    match (lib, scenario) {
        ("raw", AskSeq | AskPipe | AskFan8) => on_tokio(with_raw::ask(scenario, k)),
        ("raw", Startup15) => on_tokio(with_raw::startup(k)),
        ("raw", Idle10k) => on_tokio(with_raw::idle(k)),
        ("daemonhost", AskSeq | AskPipe | AskFan8) => on_tokio(with_daemonhost::ask(scenario, k)),
        ("daemonhost", Startup15) => on_tokio(with_daemonhost::startup(k)),
        ("daemonhost", Idle10k) => on_tokio(with_daemonhost::idle(k)),
        ("ractor", AskSeq | AskPipe | AskFan8) => on_tokio(with_ractor::ask(scenario, k)),
        ("ractor", Startup15) => on_tokio(with_ractor::startup(k)),
        ("ractor", Idle10k) => on_tokio(with_ractor::idle(k)),
        ("kameo", AskSeq | AskPipe | AskFan8) => on_tokio(with_kameo::ask(scenario, k)),
        ("kameo", Startup15) => on_tokio(with_kameo::startup(k)),
        ("kameo", Idle10k) => on_tokio(with_kameo::idle(k)),
        ("actix", AskSeq | AskPipe | AskFan8) => on_actix(with_actix::ask(scenario, k)),
        ("actix", Startup15) => on_actix(with_actix::startup(k)),
        ("actix", Idle10k) => on_actix(with_actix::idle(k)),
        _ => unreachable!("library checked by main"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (lib, scenario) = match args.as_slice() {
        [lib, scenario] if LIBS.contains(&lib.as_str()) => match Scenario::parse(scenario) {
            Some(s) => (lib.clone(), (scenario.clone(), s)),
            None => return usage(),
        },
        _ => return usage(),
    };
    let result = run(&lib, scenario.1, Counts::from_env());
    // `lib` and `scenario` first, then the measurements (serde_json's map is sorted).
    let mut line = format!(
        "{{\"lib\":{},\"scenario\":{}",
        Value::from(lib),
        Value::from(scenario.0)
    );
    if let Value::Object(fields) = result {
        for (key, value) in fields {
            line.push_str(&format!(",{}:{}", Value::from(key), value));
        }
    }
    line.push('}');
    println!("{line}");
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: peers <library> <scenario>\n  library:  {}\n  scenario: {}\n  env PEERS_N: requests per ask scenario (default {}); other counts scale with it",
        LIBS.join(" | "),
        SCENARIOS.join(" | "),
        Counts::FULL_N,
    );
    ExitCode::from(2)
}
