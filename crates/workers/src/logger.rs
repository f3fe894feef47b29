//! The logger service: one file per category under `DIR/logs/`, written by one owned thread.
//!
//! Flow: `log/write` / `log/write-batch` (any task) → validate every entry → reserve room in the
//! bounded queue → per-category rate limit → format the lines on the caller's task, grouped per
//! category → one message on a bounded channel → the writer thread appends each group to its
//! file's `BufWriter` and flushes every `batch_lines` lines or `flush_interval`.
//!
//! `log/write-batch` also takes batch-level `category` / `level` / `component` (entries may omit
//! them) and bare message strings as entries: the compact shape for a per-daemon forwarder, about
//! 5× cheaper to decode than one JSON object per line.
//!
//! Decisions:
//! - **Queue full → the call is answered `overloaded`** (all-or-nothing for a batch; nothing of it
//!   is written) and counted in `droppedQueue`. The caller knows, so nothing is lost silently.
//!   A batch larger than the whole queue is a `validation` error.
//! - **Rate limit**: a GCRA keyed limiter (governor) per category, `rate_per_sec` with `burst`.
//!   Dropped lines are counted per category; when the burst ends (the category's next admitted
//!   line, or 1 s without drops, whichever is first; at shutdown at the latest) the category's
//!   file gets `… WARN [logger] [rate limited: dropped N lines in the last X.Ys]`. The limiter is
//!   pruned every second (`retain_recent`) and tracks at most `max_categories` categories: past
//!   that, calls are answered `overloaded`. `rate_per_sec = 0` disables rate limiting.
//! - **Lines are single lines**: `\n` and `\r` in component and message are escaped as `\\n`,
//!   `\\r`; `args` is compact JSON. All entries of one call share one timestamp.
//! - **Files**: `<root>/<category>.log`, parent directories created, categories validated by
//!   [`validate_category`] (no traversal possible). An LRU keeps at most `max_open_files` open.
//!   Deleted or rotated files are reopened (by the writer thread); lines flushed to a file between its
//!   deletion and the next identity check (≤ one flush interval) go to the deleted inode.
//! - **No room → lines are dropped and counted, nobody waits.** A write failing for lack of
//!   space (ENOSPC, EDQUOT, EFBIG), or one that would take the directory past `max_bytes`
//!   (`[workers] max_log_mb`, 0 = no quota), drops its lines in the writer thread and counts them
//!   in `droppedFull`; `full` says it is happening (`log/stats`, and `health/status` through the
//!   logger daemon). Callers are not told per line (their lines were accepted; the queue and its
//!   `overloaded` are unchanged), so a full disk never blocks or fails the host's code that
//!   logs. Writing resumes by itself once there is room, with a notice of the count in each
//!   category's file (see `writer`).
//! - Why a thread and not tokio::fs: one owner of all handles means no locks on files, ordered
//!   appends per file, and blocking `write` calls never touch the async workers.

mod format;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

use daemonhost_protocol::params::{ParamError, ParamType, Params};
use daemonhost_protocol::{ErrorBody, ErrorCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

pub use format::{Level, MAX_CATEGORY_DEPTH, MAX_CATEGORY_LEN, rfc3339_millis, validate_category};
pub use writer::{BURST_QUIET, RESCAN, RESCAN_FULL};

use crate::WorkerError;
use crate::service::{ServiceCommand, WorkerService, bad_request, unknown_command, validation};
use writer::{Chunk, Msg, Writer};

/// Control messages that may wait in the channel beyond the line budget.
const CONTROL_SLACK: usize = 64;

/// Configuration of a [`Logger`].
#[derive(Debug, Clone)]
pub struct LoggerConfig {
    /// Directory of the files (`DIR/logs`).
    pub root: PathBuf,
    /// Lines accepted but not yet written, at most (default 65 536).
    pub queue: usize,
    /// Flush after this many lines (default 4096).
    pub batch_lines: usize,
    /// Flush at least this often (default 100 ms); also the file-identity check period.
    pub flush_interval: Duration,
    /// Files kept open at once, least recently used closed first (default 256).
    pub max_open_files: usize,
    /// Lines per second per category (default 10 000); 0 = no rate limit.
    pub rate_per_sec: u32,
    /// Lines a category may write at once above its rate (default 20 000).
    pub burst: u32,
    /// Categories tracked by the rate limiter and counted in stats (default 10 000).
    pub max_categories: usize,
    /// Quota of the directory (every file under `root`), bytes; 0 = none (the default: the
    /// disk is the limit). Lines that would take it past are dropped and counted.
    pub max_bytes: u64,
}

impl LoggerConfig {
    /// Defaults with `root` as the directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LoggerConfig {
            root: root.into(),
            queue: 65_536,
            batch_lines: 4096,
            flush_interval: Duration::from_millis(100),
            max_open_files: 256,
            rate_per_sec: 10_000,
            burst: 20_000,
            max_categories: 10_000,
            max_bytes: 0,
        }
    }
}

/// One line to log (borrowed from the request).
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    /// File category, e.g. `daemons/chat`.
    pub category: &'a str,
    /// Level.
    pub level: Level,
    /// Component shown in brackets.
    pub component: &'a str,
    /// The message.
    pub message: &'a str,
    /// Structured arguments, appended as compact JSON (omitted when `None` or null).
    pub args: Option<&'a Value>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Entries accepted (they will be written).
    pub queued: usize,
    /// Entries dropped by the rate limit (reported later in the file).
    pub rate_limited: usize,
    /// Bytes of the accepted lines (including any drop notice written before them).
    pub bytes: usize,
}

/// Counters of `log/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggerStats {
    /// Lines handed to files (including drop notices).
    pub lines_written: u64,
    /// Bytes handed to files.
    pub bytes_written: u64,
    /// Lines refused with `overloaded` because the queue was full.
    pub dropped_queue: u64,
    /// Lines dropped by the per-category rate limit.
    pub dropped_rate: u64,
    /// Lines lost to file errors other than a lack of room (open or write failures).
    pub write_errors: u64,
    /// Lines dropped because there was no room: the disk (ENOSPC, EDQUOT, EFBIG) or the
    /// directory's quota (`max_bytes`).
    pub dropped_full: u64,
    /// Whether lines are being dropped for lack of room now.
    pub full: bool,
    /// With a quota: the directory's size as last measured plus what was written since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
    /// Files open now.
    pub open_files: usize,
    /// Distinct categories written since start (saturates at `max_categories`).
    pub categories: usize,
    /// Lines accepted and not yet written.
    pub queued: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Burst {
    dropped: u64,
    first: Instant,
    last: Instant,
}

pub(crate) struct Shared {
    cfg: LoggerConfig,
    queued: AtomicUsize,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    bursts: Mutex<HashMap<Arc<str>, Burst>>,
    lines_written: AtomicU64,
    bytes_written: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_rate: AtomicU64,
    write_errors: AtomicU64,
    dropped_full: AtomicU64,
    full: AtomicBool,
    log_bytes: AtomicU64,
    open_files: AtomicUsize,
    categories: AtomicUsize,
    closed: AtomicBool,
    /// Control messages (flush, shutdown) sent and not yet answered; at most `CONTROL_SLACK`.
    controls: AtomicUsize,
}

impl Shared {
    fn take_burst(&self, category: &str) -> Option<Burst> {
        let mut bursts = self.bursts.lock();
        if bursts.is_empty() {
            return None;
        }
        bursts.remove(category)
    }

    pub(crate) fn take_ended_bursts(&self, all: bool) -> Vec<(Arc<str>, Burst)> {
        let mut bursts = self.bursts.lock();
        if bursts.is_empty() {
            return Vec::new();
        }
        let ended: Vec<Arc<str>> = bursts
            .iter()
            .filter(|(_, b)| all || b.last.elapsed() >= BURST_QUIET)
            .map(|(k, _)| Arc::clone(k))
            .collect();
        ended
            .into_iter()
            .filter_map(|k| bursts.remove(&k).map(|b| (k, b)))
            .collect()
    }
}

/// `TS WARN [logger] [rate limited: dropped N lines in the last X.Ys]\n`
pub(crate) fn push_notice(out: &mut Vec<u8>, burst: &Burst) {
    let ts = rfc3339_millis(daemonhost_protocol::time::now_ms());
    let secs = burst.first.elapsed().as_secs_f64();
    let msg = format!(
        "[rate limited: dropped {} lines in the last {secs:.1}s]",
        burst.dropped
    );
    format::format_line(out, &ts, Level::Warn, "logger", &msg, None);
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(ErrorCode::ShuttingDown, "the logger is shutting down")
}

/// The batched per-category file logger (see the module docs). Usable in-process (the host's
/// fallback and its own daemons) and behind [`LoggerService`] in a worker process.
pub struct Logger {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("config", &self.shared.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Group<'a> {
    category: &'a str,
    bytes: Vec<u8>,
    lines: usize,
    admitted: usize,
    dropped: u64,
}

/// FNV-1a: grouping a batch by category hashes every entry's category, and SipHash's DoS
/// resistance buys nothing for a map that lives for one call.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type BuildFnv = std::hash::BuildHasherDefault<Fnv>;

impl Logger {
    /// Start the writer thread.
    pub fn new(cfg: LoggerConfig) -> Result<Logger, WorkerError> {
        let limiter = NonZeroU32::new(cfg.rate_per_sec).map(|rate| {
            let burst = NonZeroU32::new(cfg.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let queue = cfg.queue.max(1);
        let shared = Arc::new(Shared {
            cfg: LoggerConfig { queue, ..cfg },
            queued: AtomicUsize::new(0),
            limiter,
            bursts: Mutex::new(HashMap::new()),
            lines_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            dropped_queue: AtomicU64::new(0),
            dropped_rate: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            full: AtomicBool::new(false),
            log_bytes: AtomicU64::new(0),
            open_files: AtomicUsize::new(0),
            categories: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            controls: AtomicUsize::new(0),
        });
        // Unbounded in type only: a batch is sent only after its lines were admitted against
        // the `queued` line budget (each batch carries at least one line, released once
        // written), and a control message only within `controls` ≤ CONTROL_SLACK, so at most
        // `queue + CONTROL_SLACK` messages ever wait. Unlike a `sync_channel` of that size,
        // which allocates all 65,600 slots (2.6 MB) up front, this one allocates as it fills.
        let (tx, rx) = channel();
        let writer = Writer::new(Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("dh-logger".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| WorkerError::Spawn {
                what: "logger writer",
                source,
            })?;
        Ok(Logger {
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &LoggerConfig {
        &self.shared.cfg
    }

    /// Queue entries for writing. Never blocks. Errors: `validation` (a bad category, or more
    /// entries than the queue holds; nothing is written), `overloaded` (queue full or too many
    /// categories; nothing is written), `shutting_down`.
    pub fn write(&self, entries: &[LogEntry<'_>]) -> Result<WriteOutcome, ErrorBody> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        for (i, e) in entries.iter().enumerate() {
            validate_category(e.category).map_err(|m| {
                if entries.len() > 1 {
                    validation(format!("entries[{i}]: {m}"))
                } else {
                    validation(m)
                }
            })?;
        }
        let n = entries.len();
        if n == 0 {
            return Ok(WriteOutcome::default());
        }
        let cap = shared.cfg.queue;
        if n > cap {
            return Err(validation(format!(
                "a batch of {n} entries exceeds the log queue of {cap} lines; split it"
            )));
        }
        let prev = shared.queued.fetch_add(n, Ordering::AcqRel);
        if prev + n > cap {
            shared.queued.fetch_sub(n, Ordering::AcqRel);
            shared.dropped_queue.fetch_add(n as u64, Ordering::Relaxed);
            return Err(ErrorBody::new(
                ErrorCode::Overloaded,
                format!("log queue full ({prev} of {cap} lines waiting); retry later"),
            ));
        }
        if let Some(l) = &shared.limiter
            && l.len() >= shared.cfg.max_categories
        {
            l.retain_recent();
            if l.len() >= shared.cfg.max_categories {
                shared.queued.fetch_sub(n, Ordering::AcqRel);
                shared.dropped_queue.fetch_add(n as u64, Ordering::Relaxed);
                return Err(ErrorBody::new(
                    ErrorCode::Overloaded,
                    format!(
                        "more than {} log categories active at once; retry later",
                        shared.cfg.max_categories
                    ),
                ));
            }
        }

        let ts = rfc3339_millis(daemonhost_protocol::time::now_ms());
        // Group entries per category, keeping their order within each group.
        let mut index: HashMap<&str, usize, BuildFnv> = HashMap::default();
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let gi = *index.entry(e.category).or_insert_with(|| {
                groups.push(Group {
                    category: e.category,
                    bytes: Vec::new(),
                    lines: 0,
                    admitted: 0,
                    dropped: 0,
                });
                members.push(Vec::new());
                groups.len() - 1
            });
            members[gi].push(i as u32);
        }
        for (g, idx) in groups.iter_mut().zip(&members) {
            // Rate limit: one check for the whole group when it fits, else line by line.
            let mut admit = vec![true; idx.len()];
            if let Some(l) = &shared.limiter {
                let key = g.category.to_owned();
                let all = NonZeroU32::new(idx.len() as u32)
                    .is_some_and(|n| matches!(l.check_key_n(&key, n), Ok(Ok(_))));
                if !all {
                    for a in &mut admit {
                        *a = l.check_key(&key).is_ok();
                    }
                }
            }
            let admitted = admit.iter().filter(|a| **a).count();
            g.dropped = (idx.len() - admitted) as u64;
            if admitted == 0 {
                continue;
            }
            g.bytes.reserve(admitted * 128);
            // The category's first admitted line ends a previous burst: its notice goes first.
            if let Some(b) = shared.take_burst(g.category) {
                push_notice(&mut g.bytes, &b);
                g.lines += 1;
            }
            for (&i, _) in idx.iter().zip(&admit).filter(|(_, a)| **a) {
                let e = &entries[i as usize];
                format::format_line(&mut g.bytes, &ts, e.level, e.component, e.message, e.args);
            }
            g.lines += admitted;
            g.admitted = admitted;
        }

        let now = Instant::now();
        let mut out = WriteOutcome::default();
        let mut total = 0;
        let mut chunks = Vec::with_capacity(groups.len());
        for g in groups {
            if g.dropped > 0 {
                out.rate_limited += g.dropped as usize;
                shared.dropped_rate.fetch_add(g.dropped, Ordering::Relaxed);
                let mut bursts = shared.bursts.lock();
                if let Some(b) = bursts.get_mut(g.category) {
                    b.dropped += g.dropped;
                    b.last = now;
                } else if bursts.len() < shared.cfg.max_categories {
                    bursts.insert(
                        Arc::from(g.category),
                        Burst {
                            dropped: g.dropped,
                            first: now,
                            last: now,
                        },
                    );
                }
            }
            if g.lines > 0 {
                out.queued += g.admitted;
                out.bytes += g.bytes.len();
                total += g.lines;
                chunks.push(Chunk {
                    category: Arc::from(g.category),
                    bytes: g.bytes,
                    lines: g.lines,
                });
            }
        }
        // Trade the reservation of `n` for the `total` lines actually sent.
        if total >= n {
            shared.queued.fetch_add(total - n, Ordering::AcqRel);
        } else {
            shared.queued.fetch_sub(n - total, Ordering::AcqRel);
        }
        if total == 0 {
            return Ok(out);
        }
        match self.tx.send(Msg::Batch {
            chunks,
            lines: total,
        }) {
            Ok(()) => Ok(out),
            Err(_) => {
                shared.queued.fetch_sub(total, Ordering::AcqRel);
                Err(shutting_down())
            }
        }
    }

    /// Send a control message made around a reply channel and wait for the writer's answer.
    /// At most `CONTROL_SLACK` wait at once; beyond that the call is refused `overloaded`.
    async fn control<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Msg,
    ) -> Result<T, ErrorBody> {
        let controls = &self.shared.controls;
        if controls.fetch_add(1, Ordering::AcqRel) >= CONTROL_SLACK {
            controls.fetch_sub(1, Ordering::AcqRel);
            return Err(ErrorBody::new(
                ErrorCode::Overloaded,
                format!("{CONTROL_SLACK} log flushes already waiting; retry later"),
            ));
        }
        // Released when this call ends, also when its future is dropped mid-wait.
        struct Slot<'a>(&'a AtomicUsize);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _slot = Slot(controls);
        let (tx, rx) = oneshot::channel();
        match self.tx.send(make(tx)) {
            Ok(()) => rx.await.map_err(|_| shutting_down()),
            Err(_) => Err(shutting_down()),
        }
    }

    /// Wait until every line accepted before this call is written to its file (flushed to the
    /// OS), with file identities re-checked.
    pub async fn flush(&self) -> Result<(), ErrorBody> {
        self.control(Msg::Flush).await
    }

    /// Stop accepting lines, write everything queued and any pending drop notices, flush, and
    /// stop the writer thread. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        // Not counted against CONTROL_SLACK: shutdown must never be refused, and it runs once
        // per caller of an idempotent stop.
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// Current counters.
    pub fn stats(&self) -> LoggerStats {
        let s = &*self.shared;
        LoggerStats {
            lines_written: s.lines_written.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            dropped_queue: s.dropped_queue.load(Ordering::Relaxed),
            dropped_rate: s.dropped_rate.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            dropped_full: s.dropped_full.load(Ordering::Relaxed),
            full: s.full.load(Ordering::Relaxed),
            log_bytes: (s.cfg.max_bytes > 0).then(|| s.log_bytes.load(Ordering::Relaxed)),
            open_files: s.open_files.load(Ordering::Relaxed),
            categories: s.categories.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
        }
    }
}

/// The logger as a [`WorkerService`] (kind `"logger"`).
#[derive(Debug, Clone)]
pub struct LoggerService {
    logger: Arc<Logger>,
}

const COMMANDS: &[ServiceCommand] = &[
    ServiceCommand::new(
        "log/write",
        "append one line {category, level: debug|info|warn|error, component, message, args?} -> {queued, rateLimited, bytesWritten}",
        false,
    ),
    ServiceCommand::new(
        "log/write-batch",
        "append many lines {category?, level?, component?, entries[{category, level, component, message, args?} | message]} -> {queued, rateLimited, bytesWritten}",
        false,
    ),
    ServiceCommand::new(
        "log/flush",
        "wait until every accepted line is written -> {}",
        true,
    ),
    ServiceCommand::new(
        "log/stats",
        "counters -> {linesWritten, bytesWritten, droppedQueue, droppedRate, writeErrors, droppedFull, full, logBytes?, openFiles, categories, queued}",
        true,
    ),
];

/// One entry. The param errors are the protocol reader's (`category: required`, `level: must be
/// a string`); the caller names a batch entry (`entries[3].category: required`). Scanned in one
/// pass rather than read through [`Params`]: the same answers, without a map lookup per field.
fn parse_entry<'a>(
    m: &'a Map<String, Value>,
    defaults: &Defaults<'a>,
) -> Result<LogEntry<'a>, ParamError> {
    // One pass over the object (the five keys have distinct lengths, so each key costs one
    // comparison) instead of a map lookup per field: this is the hot path of `log/write-batch`.
    let (mut category, mut level, mut component, mut message, mut args) = (
        defaults.category,
        defaults.level,
        defaults.component,
        None,
        None,
    );
    for (k, v) in m {
        match k.as_str() {
            "category" => category = Some(v),
            "level" => level = Some(v),
            "component" => component = Some(v),
            "message" => message = Some(v),
            "args" => args = Some(v),
            _ => {}
        }
    }
    Ok(LogEntry {
        category: str_field("category", category)?,
        level: level_field(level)?,
        component: str_field("component", component)?,
        message: str_field("message", message)?,
        args,
    })
}

fn compact_entry<'a>(message: &'a str, d: &Defaults<'a>) -> Result<LogEntry<'a>, ParamError> {
    Ok(LogEntry {
        category: str_field("category", d.category)?,
        level: level_field(d.level)?,
        component: str_field("component", d.component)?,
        message,
        args: None,
    })
}

fn str_field<'a>(name: &str, v: Option<&'a Value>) -> Result<&'a str, ParamError> {
    match v {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ParamError::missing(name)),
        Some(_) => Err(ParamError::wrong_type(name, ParamType::String)),
    }
}

fn level_field(v: Option<&Value>) -> Result<Level, ParamError> {
    let s = str_field("level", v)?;
    Level::parse(s).ok_or_else(|| {
        ParamError::invalid(
            "level",
            format!(
                "must be debug, info, warn or error (got '{}')",
                s.chars().take(32).collect::<String>()
            ),
        )
    })
}

/// Batch-level `category`, `level` and `component` of `log/write-batch`, used by entries that
/// leave them out (and by entries given as a bare message string).
#[derive(Default)]
struct Defaults<'a> {
    category: Option<&'a Value>,
    level: Option<&'a Value>,
    component: Option<&'a Value>,
}

fn outcome_json(o: WriteOutcome, single: bool) -> Value {
    if single {
        json!({"queued": o.queued == 1, "rateLimited": o.rate_limited == 1, "bytesWritten": o.bytes})
    } else {
        json!({"queued": o.queued, "rateLimited": o.rate_limited, "bytesWritten": o.bytes})
    }
}

impl LoggerService {
    /// Start a logger with `cfg`.
    pub fn new(cfg: LoggerConfig) -> Result<Self, WorkerError> {
        Ok(LoggerService {
            logger: Arc::new(Logger::new(cfg)?),
        })
    }

    /// Wrap an existing logger.
    pub fn from_logger(logger: Arc<Logger>) -> Self {
        LoggerService { logger }
    }

    /// The logger behind the service.
    pub fn logger(&self) -> &Arc<Logger> {
        &self.logger
    }
}

impl WorkerService for LoggerService {
    fn kind(&self) -> &'static str {
        "logger"
    }

    fn commands(&self) -> Vec<ServiceCommand> {
        COMMANDS.to_vec()
    }

    async fn handle(&self, command: &str, params: Value) -> Result<Value, ErrorBody> {
        match command {
            "log/write" => {
                let p = Params::new(params)?;
                let entry = parse_entry(p.as_map(), &Defaults::default())?;
                let o = self.logger.write(&[entry])?;
                Ok(outcome_json(o, true))
            }
            "log/write-batch" => {
                let mut p = Params::new(params)?;
                let list = p.array("entries")?;
                let defaults = Defaults {
                    category: p.get("category"),
                    level: p.get("level"),
                    component: p.get("component"),
                };
                let entries = list
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let at = || format!("entries[{i}]");
                        match v {
                            Value::Object(m) => parse_entry(m, &defaults),
                            // The compact form: a bare message with the batch's fields.
                            Value::String(message) => compact_entry(message, &defaults),
                            _ => {
                                return Err(bad_request(format!(
                                    "{}: must be an object or a message string",
                                    at()
                                )));
                            }
                        }
                        .map_err(|e| e.within(&at()).into())
                    })
                    .collect::<Result<Vec<_>, ErrorBody>>()?;
                let o = self.logger.write(&entries)?;
                Ok(outcome_json(o, false))
            }
            "log/flush" => {
                self.logger.flush().await?;
                Ok(json!({}))
            }
            "log/stats" => Ok(serde_json::to_value(self.logger.stats()).unwrap_or(Value::Null)),
            other => Err(unknown_command("logger", other)),
        }
    }

    async fn shutdown(&self) {
        self.logger.shutdown().await;
    }
}
