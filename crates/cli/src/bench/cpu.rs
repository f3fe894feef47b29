//! CPU time of a process over the measured window, from `/proc`: what `daemonhost bench`
//! reports as `server_cpu_us_per_req` (the host, `/proc/PID`) and `client_cpu_us_per_req`
//! (itself, `/proc/self`).
//!
//! The preferred source is each thread's `/proc/PID/task/TID/schedstat`, whose first field is
//! the nanoseconds that thread has run: exact. A thread's schedstat goes with the thread, so
//! when a thread seen at the start of the window is gone (or its counter went backwards: its
//! id was reused) at the end, the window's CPU comes from `/proc/PID/stat` instead: utime +
//! stime (fields 14 and 15) of the whole process, exited threads included, in clock ticks
//! (`sysconf(_SC_CLK_TCK)`, 100 on Linux: 10 ms, 0.1 % of one core over a 10 s window). Threads
//! that start inside the window count from zero. Which source was used is reported.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// One look at a process's CPU time.
#[derive(Debug, Clone)]
pub struct CpuReading {
    at: Instant,
    /// Nanoseconds on CPU per thread id (`None`: no readable task dir).
    threads: Option<HashMap<u32, u64>>,
    /// utime + stime of the whole process, nanoseconds at clock-tick resolution.
    stat_ns: Option<u64>,
}

/// Where a [`CpuDelta`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSource {
    /// Per-thread `schedstat`, nanoseconds.
    Schedstat,
    /// The process's `stat` utime + stime, clock ticks.
    Stat,
}

impl CpuSource {
    /// The name printed and put in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            CpuSource::Schedstat => "schedstat",
            CpuSource::Stat => "stat",
        }
    }
}

/// CPU time spent between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuDelta {
    /// Nanoseconds on CPU, all threads.
    pub cpu_ns: u64,
    /// Wall time between the readings.
    pub wall: Duration,
    /// Where `cpu_ns` came from.
    pub source: CpuSource,
}

impl CpuDelta {
    /// Average CPUs busy over the interval (1.0 = one core all the time).
    pub fn cores(&self) -> f64 {
        self.cpu_ns as f64 / (self.wall.as_nanos().max(1) as f64)
    }

    /// Microseconds of CPU per request for `requests` answered in a window of `window`: the
    /// CPU rate between the readings times the window, so a reading that came a little late
    /// (its timer, a busy machine) does not skew the figure. `None` without requests.
    pub fn us_per_request(&self, window: Duration, requests: u64) -> Option<f64> {
        if requests == 0 {
            return None;
        }
        let cpu_in_window_ns = self.cores() * window.as_nanos() as f64;
        Some(cpu_in_window_ns / requests as f64 / 1000.0)
    }
}

impl CpuReading {
    /// Read `proc_dir` (`/proc/self` or `/proc/PID`) now; `None` when neither source is
    /// readable (no such process, not Linux, no permission).
    pub fn read(proc_dir: &Path) -> Option<CpuReading> {
        let threads = std::fs::read_dir(proc_dir.join("task")).ok().map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                let tid = e.file_name().to_str()?.parse::<u32>().ok()?;
                // A thread may exit between the listing and the read: it is then absent.
                let text = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
                Some((tid, parse_schedstat(&text)?))
            })
            .collect::<HashMap<_, _>>()
        });
        let threads = threads.filter(|t| !t.is_empty());
        let stat_ns = std::fs::read_to_string(proc_dir.join("stat"))
            .ok()
            .and_then(|s| parse_stat_cpu_ns(&s, crate::metrics::clock_ticks()));
        let at = Instant::now();
        (threads.is_some() || stat_ns.is_some()).then_some(CpuReading {
            at,
            threads,
            stat_ns,
        })
    }

    /// The CPU spent from `self` to `later` (a later reading of the same process).
    pub fn delta(&self, later: &CpuReading) -> Option<CpuDelta> {
        let wall = later.at.saturating_duration_since(self.at);
        if let (Some(a), Some(b)) = (&self.threads, &later.threads) {
            // Every thread of the first reading is still there, none went backwards.
            let kept = a
                .iter()
                .all(|(tid, &ns)| b.get(tid).is_some_and(|&e| e >= ns));
            if kept {
                let cpu_ns = b
                    .iter()
                    .map(|(tid, &ns)| ns - a.get(tid).copied().unwrap_or(0))
                    .sum();
                return Some(CpuDelta {
                    cpu_ns,
                    wall,
                    source: CpuSource::Schedstat,
                });
            }
        }
        match (self.stat_ns, later.stat_ns) {
            (Some(a), Some(b)) => Some(CpuDelta {
                cpu_ns: b.saturating_sub(a),
                wall,
                source: CpuSource::Stat,
            }),
            _ => None,
        }
    }
}

/// The first field of `/proc/PID/task/TID/schedstat`: nanoseconds on CPU (then the wait time
/// on a run queue and the number of time slices).
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// utime + stime of `/proc/PID/stat` (fields 14 and 15, clock ticks) in nanoseconds.
fn parse_stat_cpu_ns(text: &str, ticks_per_s: f64) -> Option<u64> {
    let secs = crate::metrics::parse_stat(text, ticks_per_s, None).cpu_seconds?;
    Some((secs * 1e9).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/PID/stat` line (a `daemonhost run`), with a command name that has a space
    /// and parentheses to show fields are counted after the last `)`.
    const STAT: &str = "4242 (daemon (host) x) S 4241 4242 4200 34816 4242 4194560 2917 0 0 0 \
        1234 567 0 0 20 0 12 0 25953 1162067968 9830 18446744073709551615 94502105706496 \
        94502105726377 140733763476448 0 0 0 0 4096 17415 0 0 0 17 1 0 0 0 0 0 94502105742384 \
        94502105744000 94502127919104 140733763484190 140733763484210 140733763484210 \
        140733763485675 0\n";

    #[test]
    fn schedstat_first_field_is_nanoseconds_on_cpu() {
        assert_eq!(
            parse_schedstat("12776512345 3217108 2093\n"),
            Some(12_776_512_345)
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn stat_utime_plus_stime_in_nanoseconds() {
        // utime 1234 + stime 567 ticks at 100/s = 18.01 s.
        assert_eq!(parse_stat_cpu_ns(STAT, 100.0), Some(18_010_000_000));
        assert_eq!(parse_stat_cpu_ns(STAT, 1000.0), Some(1_801_000_000));
        assert_eq!(parse_stat_cpu_ns("garbage", 100.0), None);
    }

    fn reading(at: Instant, threads: &[(u32, u64)], stat_ns: u64) -> CpuReading {
        CpuReading {
            at,
            threads: Some(threads.iter().copied().collect()),
            stat_ns: Some(stat_ns),
        }
    }

    #[test]
    fn the_delta_sums_threads_and_counts_new_ones_from_zero() {
        let t0 = Instant::now();
        let a = reading(t0, &[(1, 1_000), (2, 5_000)], 10_000_000);
        let b = reading(
            t0 + Duration::from_secs(2),
            &[(1, 3_000), (2, 5_500), (3, 700)],
            20_000_000,
        );
        let d = a.delta(&b).expect("delta");
        assert_eq!(d.source, CpuSource::Schedstat);
        assert_eq!(d.cpu_ns, 2_000 + 500 + 700);
        assert_eq!(d.wall, Duration::from_secs(2));
    }

    #[test]
    fn an_exited_or_reused_thread_falls_back_to_stat() {
        let t0 = Instant::now();
        let a = reading(t0, &[(1, 1_000), (2, 5_000)], 10_000_000);
        let exited = reading(t0, &[(1, 3_000)], 30_000_000);
        let d = a.delta(&exited).expect("delta");
        assert_eq!((d.source, d.cpu_ns), (CpuSource::Stat, 20_000_000));
        let reused = reading(t0, &[(1, 3_000), (2, 10)], 30_000_000);
        assert_eq!(a.delta(&reused).map(|d| d.source), Some(CpuSource::Stat));
        let blind = CpuReading {
            at: t0,
            threads: None,
            stat_ns: None,
        };
        assert_eq!(a.delta(&blind), None);
    }

    #[test]
    fn per_request_figures_scale_to_the_window() {
        // 1.5 s of CPU over 3 s of readings = 0.5 cores; 0.5 × 2 s window / 100,000 requests.
        let d = CpuDelta {
            cpu_ns: 1_500_000_000,
            wall: Duration::from_secs(3),
            source: CpuSource::Schedstat,
        };
        assert!((d.cores() - 0.5).abs() < 1e-12);
        let us = d
            .us_per_request(Duration::from_secs(2), 100_000)
            .expect("requests");
        assert!((us - 10.0).abs() < 1e-9, "{us}");
        assert_eq!(d.us_per_request(Duration::from_secs(2), 0), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let Some(a) = CpuReading::read(Path::new("/proc/self")) else {
            return; // not Linux
        };
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = CpuReading::read(Path::new("/proc/self")).expect("read again");
        let d = a.delta(&b).expect("delta");
        assert!(d.wall > Duration::ZERO);
        assert!(CpuReading::read(Path::new("/proc/0")).is_none());
    }
}
