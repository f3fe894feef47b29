//! `daemonhost analyze`: systemd-analyze for the daemons of one host, read from a running
//! host's `system/startup`.
//!
//! - `blame`: every daemon by init time (core + deferred), slowest first.
//! - `critical-chain [DAEMON]`: the chain of dependencies that decided when every daemon was
//!   READY (or when DAEMON was): from the last daemon to become READY, each link is the
//!   dependency it waited for last. `@` is when a daemon became READY, `+` how long its core
//!   init took, both in the runtime's clock (from its start signal), as in systemd-analyze.
//! - `plot`: an SVG waterfall on stdout, one bar per daemon in dependency order ([`plot_svg`],
//!   which the web UI serves as it is).
//!
//! Times come from the runtime's init reports: `waited_ms` (its dependencies settled, core init
//! began), `ready_at_ms` (READY), `core_init_ms`, and `deferred_init_ms` ending at `total_ms`
//! (deferred init runs after READY and holds nothing up, so it is in blame and the plot, not in
//! the chain).

use crate::call::{connect, report_error};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// What `daemonhost analyze` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Daemons by init time, slowest first.
    Blame,
    /// The chain that decided all-READY, or DAEMON's READY.
    CriticalChain(Option<String>),
    /// The SVG waterfall.
    Plot,
}

/// `daemonhost analyze VIEW`: read `system/startup` and print the view.
pub async fn run(socket: &Path, view: View) -> ExitCode {
    let client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let startup = match client
        .call("system/startup", Value::Null, Some(Duration::from_secs(10)))
        .await
    {
        Ok(v) => v,
        Err(e) => return report_error(&e, false),
    };
    let out = match &view {
        View::Blame => blame(&startup),
        View::CriticalChain(target) => match critical_chain(&startup, target.as_deref()) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(crate::call::EXIT_FAILED);
            }
        },
        View::Plot => plot_svg(&startup),
    };
    print!("{out}");
    ExitCode::SUCCESS
}

/// One daemon's boot, as `system/startup` reports it (absent fields read as 0 / empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    /// Daemon name.
    pub name: String,
    /// Lifecycle state when the report was taken.
    pub state: String,
    /// Deferred-init state.
    pub deferred: String,
    /// Required dependencies.
    pub requires: Vec<String>,
    /// Optional dependencies.
    pub wants: Vec<String>,
    /// Start signal → core init began (its dependencies had settled).
    pub start_ms: f64,
    /// Start signal → READY (`None` when it is not READY).
    pub ready_ms: Option<f64>,
    /// Core init duration.
    pub core_ms: f64,
    /// Deferred init duration (0 until it ends).
    pub deferred_ms: f64,
    /// Start signal → deferred init ended (READY while it has not).
    pub total_ms: f64,
}

impl Boot {
    /// Core + deferred: what `blame` sorts by.
    pub fn init_ms(&self) -> f64 {
        self.core_ms + self.deferred_ms
    }

    /// When deferred init began (it ends at `total_ms`).
    fn deferred_start_ms(&self) -> f64 {
        (self.total_ms - self.deferred_ms).max(self.ready_ms.unwrap_or(0.0))
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0).max(0.0)
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The daemons of a `system/startup` result, in its order.
pub fn boots(startup: &Value) -> Vec<Boot> {
    let Some(list) = startup.get("daemons").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|d| {
            let name = s(d, "daemon");
            if name.is_empty() {
                return None;
            }
            let state = s(d, "state");
            let core_ms = f(d, "core_init_ms");
            let start_ms = f(d, "waited_ms");
            let ready = state == "ready" || state == "stopping";
            // Hosts before `ready_at_ms` was reported: core init ends at READY.
            let ready_ms = ready.then(|| match f(d, "ready_at_ms") {
                0.0 => start_ms + core_ms,
                at => at,
            });
            Some(Boot {
                name,
                deferred: s(d, "deferred"),
                requires: names(d, "requires"),
                wants: names(d, "wants"),
                start_ms,
                ready_ms,
                core_ms,
                deferred_ms: f(d, "deferred_init_ms"),
                total_ms: f(d, "total_ms").max(ready_ms.unwrap_or(0.0)),
                state,
            })
        })
        .collect()
}

/// A duration as systemd-analyze writes them: `1.203s`, `12.3ms`, `1.25ms`, `450us`.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.3}s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.1}ms")
    } else if ms >= 1.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{:.0}us", ms * 1000.0)
    }
}

/// `analyze blame`: slowest first (core + deferred), ties by name.
pub fn blame(startup: &Value) -> String {
    let mut b = boots(startup);
    b.sort_by(|x, y| {
        y.init_ms()
            .total_cmp(&x.init_ms())
            .then_with(|| x.name.cmp(&y.name))
    });
    let rows: Vec<[String; 4]> = b
        .iter()
        .map(|d| {
            let note = match d.state.as_str() {
                "ready" | "stopping" => match d.deferred.as_str() {
                    "running" => " (deferred init running)".to_owned(),
                    "failed" => " (deferred init failed)".to_owned(),
                    _ => String::new(),
                },
                other => format!(" ({other})"),
            };
            [
                fmt_ms(d.init_ms()),
                fmt_ms(d.core_ms),
                fmt_ms(d.deferred_ms),
                format!("{}{note}", d.name),
            ]
        })
        .collect();
    let head = ["TOTAL", "CORE", "DEFERRED", "DAEMON"].map(str::to_owned);
    let mut w = [0usize; 3];
    for r in rows.iter().chain([&head]) {
        for (wi, c) in w.iter_mut().zip(r.iter()) {
            *wi = (*wi).max(c.len());
        }
    }
    let mut out = String::new();
    for r in [&head].into_iter().chain(rows.iter()) {
        let _ = writeln!(
            out,
            "{:>w0$}  {:>w1$}  {:>w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        );
    }
    out
}

/// One link of a critical chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Daemon name.
    pub name: String,
    /// When it became READY (start signal → READY).
    pub ready_ms: f64,
    /// Its core init.
    pub core_ms: f64,
}

/// The chain that decided when `target` (or, with `None`, the last daemon) became READY,
/// target first: each next link is the dependency (required or wanted) that became READY
/// last, the one the link before waited for. Empty when no daemon is READY.
pub fn chain(boots: &[Boot], target: Option<&str>) -> Result<Vec<Link>, String> {
    let by: BTreeMap<&str, &Boot> = boots.iter().map(|b| (b.name.as_str(), b)).collect();
    let start = match target {
        Some(t) => {
            let b = by
                .get(t)
                .ok_or_else(|| format!("no daemon '{t}' in this host's startup"))?;
            if b.ready_ms.is_none() {
                return Err(format!("daemon '{t}' is {}, not READY", b.state));
            }
            Some(*b)
        }
        None => boots
            .iter()
            .filter(|b| b.ready_ms.is_some())
            .max_by(|x, y| {
                x.ready_ms
                    .unwrap_or(0.0)
                    .total_cmp(&y.ready_ms.unwrap_or(0.0))
            }),
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut cur = start;
    while let Some(b) = cur {
        if !seen.insert(b.name.as_str()) {
            break; // a cycle cannot pass plan validation; never loop on bad input anyway
        }
        out.push(Link {
            name: b.name.clone(),
            ready_ms: b.ready_ms.unwrap_or(0.0),
            core_ms: b.core_ms,
        });
        cur = b
            .requires
            .iter()
            .chain(&b.wants)
            .filter_map(|d| by.get(d.as_str()).copied())
            .filter(|d| d.ready_ms.is_some())
            .max_by(|x, y| {
                x.ready_ms
                    .unwrap_or(0.0)
                    .total_cmp(&y.ready_ms.unwrap_or(0.0))
            });
    }
    Ok(out)
}

/// `analyze critical-chain [DAEMON]`, drawn as systemd-analyze draws it.
pub fn critical_chain(startup: &Value, target: Option<&str>) -> Result<String, String> {
    let b = boots(startup);
    let links = chain(&b, target)?;
    let mut out = String::from(
        "The time when a daemon became READY is printed after the \"@\" character.\n\
         The time its core init took is printed after the \"+\" character.\n\
         (times from the runtime's start signal)\n\n",
    );
    let Some(first) = links.first() else {
        out.push_str("no daemon is READY\n");
        return Ok(out);
    };
    let mut indent = String::new();
    if target.is_none() {
        let _ = writeln!(out, "all READY @{}", fmt_ms(first.ready_ms));
        indent.push_str("└─");
    }
    for (i, l) in links.iter().enumerate() {
        let _ = writeln!(
            out,
            "{indent}{} @{} +{}",
            l.name,
            fmt_ms(l.ready_ms),
            fmt_ms(l.core_ms)
        );
        indent = format!("{}└─", "  ".repeat(i + usize::from(target.is_none())));
    }
    let failed: Vec<&str> = b
        .iter()
        .filter(|d| d.ready_ms.is_none())
        .map(|d| d.name.as_str())
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nnot READY (left out): {}", failed.join(", "));
    }
    if let Some(h) = startup.get("host").filter(|h| h.is_object()) {
        let _ = writeln!(
            out,
            "\nhost, from process start: socket bound @{} · first command @{} · all READY @{}",
            fmt_ms(f(h, "socket_bound_ms")),
            fmt_ms(f(h, "first_command_ms")),
            fmt_ms(f(h, "all_ready_ms")),
        );
    }
    Ok(out)
}

/// Dependency order: a daemon after everything it requires or wants (that is in the list),
/// among those free to go the one that began first, ties by name.
pub fn dependency_order(boots: &[Boot]) -> Vec<&Boot> {
    let known: BTreeSet<&str> = boots.iter().map(|b| b.name.as_str()).collect();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut left: Vec<&Boot> = boots.iter().collect();
    let mut out = Vec::with_capacity(boots.len());
    while !left.is_empty() {
        let free = left
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                b.requires
                    .iter()
                    .chain(&b.wants)
                    .all(|d| placed.contains(d.as_str()) || !known.contains(d.as_str()))
            })
            .min_by(|(_, x), (_, y)| {
                x.start_ms
                    .total_cmp(&y.start_ms)
                    .then_with(|| x.name.cmp(&y.name))
            })
            .map(|(i, _)| i);
        // A cycle (impossible after plan validation): take the rest by start time.
        let i = free.unwrap_or(0);
        let b = left.remove(i);
        placed.insert(b.name.as_str());
        out.push(b);
    }
    out
}

/// Text for XML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A tick step of 1, 2 or 5 × 10^k giving at most ~10 ticks over `span` ms.
fn tick_step(span: f64) -> f64 {
    let raw = (span / 10.0).max(1e-3);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The SVG waterfall of a `system/startup` result: one row per daemon in dependency order,
/// its core init bar from when it began to READY, its deferred init bar after, the critical
/// chain outlined, a time axis in the runtime's clock, and a label with the durations.
pub fn plot_svg(startup: &Value) -> String {
    const LEFT: f64 = 170.0;
    const PLOT_W: f64 = 760.0;
    const RIGHT: f64 = 230.0;
    const TOP: f64 = 64.0;
    const ROW: f64 = 22.0;
    const BAR: f64 = 14.0;
    let all = boots(startup);
    let order = dependency_order(&all);
    let critical: BTreeSet<String> = chain(&all, None)
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.name)
        .collect();
    let end = all
        .iter()
        .map(|b| b.total_ms.max(b.ready_ms.unwrap_or(0.0)).max(b.start_ms))
        .fold(0.0, f64::max);
    let step = tick_step(end.max(0.01));
    let span = ((end / step).ceil() * step).max(step);
    let x = |ms: f64| LEFT + ms / span * PLOT_W;
    let width = LEFT + PLOT_W + RIGHT;
    let axis_y = TOP + ROW * order.len() as f64 + 6.0;
    let height = axis_y + 62.0;

    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        "<style>.core{{fill:#d9534f}}.deferred{{fill:#5b9bd5}}.wait{{stroke:#bbb;stroke-dasharray:2 3}}\
         .critical{{stroke:#222;stroke-width:1.5}}.grid{{stroke:#e4e4e4}}.label{{fill:#222}}\
         .dur{{fill:#555;font-size:11px}}.axis{{fill:#555;font-size:11px}}</style>"
    );
    let _ = writeln!(
        o,
        r##"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="#ffffff"/>"##
    );
    let ready = all.iter().filter(|b| b.ready_ms.is_some()).count();
    let title = match startup.get("host").filter(|h| h.is_object()) {
        Some(h) => format!(
            "daemonhost startup: {} daemons, {ready} READY · all READY {} after process start",
            all.len(),
            fmt_ms(f(h, "all_ready_ms"))
        ),
        None => format!("daemonhost startup: {} daemons, {ready} READY", all.len()),
    };
    let _ = writeln!(
        o,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let _ = writeln!(
        o,
        r##"<text x="10" y="42" class="axis">time from the runtime's start signal · <tspan fill="#d9534f">■</tspan> core init (start → READY) · <tspan fill="#5b9bd5">■</tspan> deferred init · outlined: the critical chain</text>"##
    );
    // Time grid and axis.
    let _ = writeln!(o, r#"<g class="time-axis">"#);
    let mut t = 0.0;
    while t <= span + step * 1e-6 {
        let _ = writeln!(
            o,
            r#"<line class="grid" x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}"/><text class="axis" x="{0:.1}" y="{3:.1}" text-anchor="middle">{4}</text>"#,
            x(t),
            TOP - 6.0,
            axis_y,
            axis_y + 16.0,
            if t == 0.0 {
                "0".to_owned()
            } else {
                esc(&fmt_ms(t))
            }
        );
        t += step;
    }
    let _ = writeln!(
        o,
        r##"<line x1="{:.1}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#555"/>"##,
        x(0.0),
        x(span)
    );
    let _ = writeln!(o, "</g>");
    for (row, b) in order.iter().enumerate() {
        let y = TOP + ROW * row as f64;
        let bar_y = y + (ROW - BAR) / 2.0;
        let mid = y + ROW / 2.0 + 4.0;
        let crit = critical.contains(&b.name);
        let _ = writeln!(
            o,
            r#"<g class="daemon" data-name="{}" data-state="{}">"#,
            esc(&b.name),
            esc(&b.state)
        );
        let _ = writeln!(
            o,
            r#"<text class="label" x="{:.1}" y="{mid:.1}" text-anchor="end"{}>{}</text>"#,
            LEFT - 8.0,
            if crit { r#" font-weight="bold""# } else { "" },
            esc(&b.name)
        );
        if b.start_ms > 0.0 {
            let _ = writeln!(
                o,
                r#"<line class="wait" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#,
                x(0.0),
                y + ROW / 2.0,
                x(b.start_ms),
                y + ROW / 2.0
            );
        }
        let core_end = b.ready_ms.unwrap_or(b.start_ms + b.core_ms);
        let _ = writeln!(
            o,
            r#"<rect class="core{}" x="{:.2}" y="{bar_y:.1}" width="{:.2}" height="{BAR:.1}"><title>{}: core init {} (began @{}, READY @{})</title></rect>"#,
            if crit { " critical" } else { "" },
            x(b.start_ms),
            (x(core_end) - x(b.start_ms)).max(1.0),
            esc(&b.name),
            fmt_ms(b.core_ms),
            fmt_ms(b.start_ms),
            b.ready_ms.map(fmt_ms).unwrap_or_else(|| b.state.clone()),
        );
        let mut label_x = x(core_end).max(x(b.start_ms) + 1.0);
        if b.deferred_ms > 0.0 || b.deferred == "running" {
            let d0 = b.deferred_start_ms();
            let d1 = if b.deferred == "running" {
                end
            } else {
                b.total_ms
            };
            let _ = writeln!(
                o,
                r#"<rect class="deferred" x="{:.2}" y="{bar_y:.1}" width="{:.2}" height="{BAR:.1}"{}><title>{}: deferred init {}</title></rect>"#,
                x(d0),
                (x(d1) - x(d0)).max(1.0),
                if b.deferred == "running" {
                    r#" fill-opacity="0.5""#
                } else {
                    ""
                },
                esc(&b.name),
                if b.deferred == "running" {
                    "running".to_owned()
                } else {
                    fmt_ms(b.deferred_ms)
                },
            );
            label_x = label_x.max(x(d1));
        }
        let state = match b.state.as_str() {
            "ready" | "stopping" => String::new(),
            other => format!(" ({other})"),
        };
        let deferred = if b.deferred_ms > 0.0 {
            format!(" + {}", fmt_ms(b.deferred_ms))
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            r#"<text class="dur" x="{:.1}" y="{mid:.1}">{}{}{}</text>"#,
            label_x + 5.0,
            esc(&fmt_ms(b.core_ms)),
            esc(&deferred),
            esc(&state)
        );
        let _ = writeln!(o, "</g>");
    }
    let _ = writeln!(o, "</svg>");
    o
}

#[cfg(test)]
mod tests;
