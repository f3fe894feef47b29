//! Property tests over random dependency graphs: every daemon starts after everything it
//! requires is READY, and stops before anything it depends on stops.

use daemonhost_runtime::{
    BoxError, Context, Daemon, DaemonError, DaemonSpec, Request, RuntimeBuilder, RuntimeConfig,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;

struct Node {
    spec: DaemonSpec,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon for Node {
    type State = ();

    fn spec(&self) -> DaemonSpec {
        self.spec.clone()
    }

    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        // Yield so that independent daemons interleave.
        tokio::task::yield_now().await;
        self.log.lock().push(format!("start:{}", ctx.name()));
        Ok(())
    }

    async fn handle(&self, _: &Context, _: &(), _: Request) -> Result<Value, DaemonError> {
        Ok(Value::Null)
    }

    async fn stop(&self, ctx: &Context, _: ()) {
        tokio::task::yield_now().await;
        self.log.lock().push(format!("stop:{}", ctx.name()));
    }
}

/// A random DAG: node i may require or want any j < i (so it is acyclic by construction).
fn dag() -> impl Strategy<Value = Vec<Vec<(usize, bool)>>> {
    (1usize..14).prop_flat_map(|n| {
        (0..n)
            .map(|i| proptest::collection::vec((0..i.max(1), any::<bool>()), 0..=i.min(4)))
            .collect::<Vec<_>>()
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, mut deps)| {
                        deps.retain(|(j, _)| *j < i);
                        deps.sort();
                        deps.dedup_by_key(|(j, _)| *j);
                        deps
                    })
                    .collect()
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_dag_start_order_respects_edges_and_stop_order_is_reverse(graph in dag(), shuffle in any::<u64>()) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let n = graph.len();
        // Register in a scrambled order so registration order cannot explain the result.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|i| (i.wrapping_mul(2_654_435_761) ^ shuffle as usize) % 1_000_003);
        let mut b = RuntimeBuilder::new(RuntimeConfig { lag_probe: None, ..RuntimeConfig::default() });
        for &i in &order {
            let spec = graph[i].iter().fold(DaemonSpec::new(format!("d{i}")), |s, (j, required)| {
                if *required { s.requires(format!("d{j}")) } else { s.wants(format!("d{j}")) }
            });
            b.register(Node { spec, log: log.clone() });
        }
        let rt = b.build().expect("acyclic plan");
        let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
        let (report, down) = tokio_rt.block_on(async {
            let report = rt.start_all().await;
            let down = rt.shutdown().await;
            (report, down)
        });
        prop_assert!(report.failed.is_empty());
        prop_assert_eq!(down.live_tasks, 0);
        let entries = log.lock().clone();
        let pos = |s: String| entries.iter().position(|e| *e == s).expect("logged");
        for (i, deps) in graph.iter().enumerate() {
            for (j, _) in deps {
                prop_assert!(pos(format!("start:d{j}")) < pos(format!("start:d{i}")), "d{} started before d{}", i, j);
                prop_assert!(pos(format!("stop:d{i}")) < pos(format!("stop:d{j}")), "d{} stopped after d{}", i, j);
            }
        }
    }
}
