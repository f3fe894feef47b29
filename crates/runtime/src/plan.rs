//! Validating the startup plan before anything starts.
//!
//! The whole graph is checked at once and every problem is returned together (unknown
//! dependencies, duplicate names and routes, invalid specs, and each dependency cycle as a path
//! `a -> b -> a`), so an operator fixes them in one pass. Only a clean plan starts anything.
//! The result is index-based: each daemon knows what it waits for and who waits for it, which is
//! all the start (dependencies READY) and stop (dependents stopped) rules need.

use crate::error::{PlanError, PlanErrors};
use crate::spec::DaemonSpec;
use std::collections::{HashMap, VecDeque};

/// The validated graph.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Per daemon: indices it requires.
    pub(crate) requires: Vec<Vec<usize>>,
    /// Per daemon: indices it wants (only those that exist).
    pub(crate) wants: Vec<Vec<usize>>,
    /// Per daemon: indices that require or want it (they stop first).
    pub(crate) dependents: Vec<Vec<usize>>,
}

/// Check specs and build the graph. Unknown `wants` are ignored (the daemon is optional).
pub(crate) fn validate(specs: &[&DaemonSpec]) -> Result<Plan, PlanErrors> {
    let mut errors = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        if index.insert(s.name.as_str(), i).is_some() {
            errors.push(PlanError::DuplicateName {
                name: s.name.clone(),
            });
        }
        for reason in s.problems() {
            errors.push(PlanError::InvalidSpec {
                daemon: s.name.clone(),
                reason,
            });
        }
    }
    // Routes: exact commands and prefixes are separate namespaces; each may be claimed once.
    let mut routes: HashMap<&str, &str> = HashMap::new();
    for s in specs {
        let claims = s
            .commands
            .iter()
            .map(|c| c.name.as_str())
            .chain(s.prefixes.iter().map(String::as_str));
        for route in claims {
            if let Some(first) = routes.insert(route, s.name.as_str())
                && first != s.name
            {
                errors.push(PlanError::DuplicateRoute {
                    route: route.to_owned(),
                    first: first.to_owned(),
                    second: s.name.clone(),
                });
            }
        }
    }

    let n = specs.len();
    let mut requires = vec![Vec::new(); n];
    let mut wants = vec![Vec::new(); n];
    let mut dependents = vec![Vec::new(); n];
    for (i, s) in specs.iter().enumerate() {
        for r in &s.requires {
            match index.get(r.as_str()) {
                Some(&j) => {
                    if !requires[i].contains(&j) {
                        requires[i].push(j);
                    }
                }
                None => errors.push(PlanError::UnknownDependency {
                    daemon: s.name.clone(),
                    missing: r.clone(),
                }),
            }
        }
        for w in &s.wants {
            if let Some(&j) = index.get(w.as_str())
                && !wants[i].contains(&j)
                && !requires[i].contains(&j)
            {
                wants[i].push(j);
            }
        }
    }
    for i in 0..n {
        for &j in requires[i].iter().chain(&wants[i]) {
            if !dependents[j].contains(&i) {
                dependents[j].push(i);
            }
        }
    }
    let edges: Vec<Vec<usize>> = (0..n)
        .map(|i| requires[i].iter().chain(&wants[i]).copied().collect())
        .collect();
    for cycle in cycles(&edges) {
        errors.push(PlanError::Cycle {
            path: cycle.iter().map(|&i| specs[i].name.clone()).collect(),
        });
    }
    if errors.is_empty() {
        Ok(Plan {
            requires,
            wants,
            dependents,
        })
    } else {
        Err(PlanErrors { errors })
    }
}

/// One cycle per strongly connected component that has one, as a closed path of indices
/// (first repeated at the end). Edges point from a daemon to what it waits for.
pub(crate) fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let sccs = tarjan(edges);
    let mut out = Vec::new();
    for comp in sccs {
        let is_cycle = comp.len() > 1 || edges[comp[0]].contains(&comp[0]);
        if !is_cycle {
            continue;
        }
        let mut in_comp = vec![false; edges.len()];
        for &v in &comp {
            in_comp[v] = true;
        }
        let start = *comp.iter().min().unwrap_or(&comp[0]);
        // Shortest path from start back to start inside the component (BFS).
        let mut prev: Vec<Option<usize>> = vec![None; edges.len()];
        let mut queue = VecDeque::from([start]);
        let mut seen = vec![false; edges.len()];
        seen[start] = true;
        let mut last = None;
        'bfs: while let Some(v) = queue.pop_front() {
            for &w in &edges[v] {
                if !in_comp[w] {
                    continue;
                }
                if w == start {
                    last = Some(v);
                    break 'bfs;
                }
                if !seen[w] {
                    seen[w] = true;
                    prev[w] = Some(v);
                    queue.push_back(w);
                }
            }
        }
        let Some(mut v) = last else { continue };
        let mut path = vec![start];
        let mut back = vec![v];
        while let Some(p) = prev[v] {
            back.push(p);
            v = p;
        }
        // `back` runs from the last hop to the node right after start (or start itself).
        back.retain(|&x| x != start);
        back.reverse();
        path.extend(back);
        path.push(start);
        out.push(path);
    }
    out.sort();
    out
}

/// Tarjan's strongly connected components, iterative (no recursion depth limit).
fn tarjan(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut ei)) = work.last_mut() {
            if *ei == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if *ei < edges[v].len() {
                let w = edges[v][*ei];
                *ei += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                comp.sort_unstable();
                out.push(comp);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::CommandSpec;

    fn spec(name: &str, requires: &[&str]) -> DaemonSpec {
        requires
            .iter()
            .fold(DaemonSpec::new(name), |s, r| s.requires(*r))
    }

    #[test]
    fn plan_reports_cycle_and_unknown_dependency_together() {
        let specs = [
            spec("a", &["b"]),
            spec("b", &["c"]),
            spec("c", &["a"]),
            spec("d", &["nope"]),
            spec("e", &["e"]),
        ];
        let refs: Vec<_> = specs.iter().collect();
        let err = validate(&refs).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("dependency cycle: a -> b -> c -> a"),
            "{text}"
        );
        assert!(text.contains("dependency cycle: e -> e"), "{text}");
        assert!(
            text.contains("daemon 'd' requires unknown daemon 'nope'"),
            "{text}"
        );
        assert_eq!(err.errors.len(), 3);
    }

    #[test]
    fn plan_reports_duplicates() {
        let specs = [
            DaemonSpec::new("a").prefix("x/"),
            DaemonSpec::new("a"),
            DaemonSpec::new("b")
                .prefix("x/")
                .command(CommandSpec::new("ping", "")),
            DaemonSpec::new("c").command(CommandSpec::new("ping", "")),
        ];
        let refs: Vec<_> = specs.iter().collect();
        let err = validate(&refs).expect_err("invalid");
        assert_eq!(err.errors.len(), 3, "{err}");
    }

    #[test]
    fn plan_unknown_wants_are_ignored() {
        let specs = [DaemonSpec::new("a").wants("search")];
        let refs: Vec<_> = specs.iter().collect();
        let plan = validate(&refs).expect("valid");
        assert!(plan.wants[0].is_empty());
    }

    #[test]
    fn plan_two_separate_cycles_are_both_reported() {
        let edges = vec![vec![1], vec![0], vec![3], vec![2], vec![]];
        assert_eq!(cycles(&edges), vec![vec![0, 1, 0], vec![2, 3, 2]]);
    }
}
