//! The writer thread: the only code that touches log files.
//!
//! It takes batches from a bounded channel, appends each chunk to its category's `BufWriter`
//! (an LRU of open files), and flushes every `batch_lines` lines or every `flush_interval`.
//! At most once per flush interval per file (and on every explicit flush) it compares the path's
//! `(dev, inode)` with the open handle's: when the file was deleted or rotated away it reopens the
//! path, moving the still-buffered lines into the new file. It also writes the rate limiter's
//! drop notices once a burst has been quiet for [`BURST_QUIET`], and prunes the keyed limiter.
//!
//! **A full disk, or the directory's quota.** A write that fails for lack of space (ENOSPC,
//! EDQUOT, EFBIG) or that would take the directory past `max_bytes` drops its lines and counts
//! them in `droppedFull`; nothing waits or retries, so callers are never held up (they only
//! queue lines; this thread only drops them). Lines go into a file's buffer in whole-line pieces
//! of at most a buffer, so a failed write never leaves half a line behind; what is already
//! buffered stays there (bounded by the buffer) and goes out once a flush succeeds. The
//! directory's size is measured when the thread starts and again every [`RESCAN_FULL`] while
//! the quota is reached ([`RESCAN`] otherwise), so space freed by deleting or rotating files is
//! seen. Once the quota is reached every line is dropped until the directory measures at most
//! 15/16 of it, so a full directory does not flap between dropping and writing as small lines
//! fill its last bytes. A full disk ends with the first flush that goes through. When writes
//! go through again, each category that lost lines gets
//! `… WARN [logger] [log directory full: dropped N lines]` in its file.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::oneshot;

use super::Shared;

/// A burst of rate-limited lines ends (and its notice is written) after this long without drops
/// for the category, or at the category's next admitted line, whichever comes first.
pub const BURST_QUIET: Duration = Duration::from_secs(1);
/// How often the keyed rate limiter is pruned (`retain_recent`).
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Buffer size of each file's `BufWriter`.
const FILE_BUFFER: usize = 64 * 1024;
/// How often the log directory is measured while its quota is reached.
pub const RESCAN_FULL: Duration = Duration::from_secs(1);
/// How often it is measured otherwise (another process, e.g. the host's in-process fallback,
/// writes there too).
pub const RESCAN: Duration = Duration::from_secs(10);
/// Most directory entries one measurement looks at.
const MAX_SCAN_ENTRIES: usize = 100_000;

/// Whether `e` says there is no room: a full disk (ENOSPC), a user's disk quota (EDQUOT), or the
/// file size limit (EFBIG).
fn is_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

fn newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// The longest prefix of `rest` made of whole lines and at most `max` bytes; a single line
/// longer than `max` whole.
fn whole_lines(rest: &[u8], max: usize) -> &[u8] {
    if rest.len() <= max {
        return rest;
    }
    let end = match rest[..max].iter().rposition(|&c| c == b'\n') {
        Some(i) => i + 1,
        None => rest
            .iter()
            .position(|&c| c == b'\n')
            .map_or(rest.len(), |i| i + 1),
    };
    &rest[..end]
}

/// Bytes of the regular files under `root` (symlinks not followed), looking at no more than
/// [`MAX_SCAN_ENTRIES`] entries.
fn dir_bytes(root: &std::path::Path) -> u64 {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_SCAN_ENTRIES {
                return total;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Why lines are being dropped for lack of room.
#[derive(Debug, Clone, Copy)]
enum Full {
    /// `max_bytes` of the directory reached.
    Quota,
    /// The disk said so.
    Disk,
}

/// Lines for one category file, already formatted.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub category: Arc<str>,
    pub bytes: Vec<u8>,
    pub lines: usize,
}

/// What goes through the channel.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Lines to write; `lines` is the total of the chunks (released from the queue count).
    Batch { chunks: Vec<Chunk>, lines: usize },
    /// Write out every buffer (and check file identity), then answer.
    Flush(oneshot::Sender<()>),
    /// Drain what is queued, write pending notices, flush, answer and exit.
    Shutdown(oneshot::Sender<()>),
}

struct OpenFile {
    writer: BufWriter<File>,
    path: PathBuf,
    dev: u64,
    ino: u64,
    dirty: bool,
    last_check: Instant,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    files: LruCache<Arc<str>, OpenFile>,
    categories: HashSet<Arc<str>>,
    lines_since_flush: usize,
    /// With a quota: bytes under the root at the last measurement plus what was handed to
    /// files since.
    used: u64,
    next_scan: Instant,
    quota_full: bool,
    disk_full: bool,
    /// Lines dropped for lack of room per category since writes last went through (at most
    /// `max_categories` entries; the rest are counted in stats only).
    full_drops: HashMap<Arc<str>, u64>,
}

fn open(path: &PathBuf) -> io::Result<(File, u64, u64)> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta.dev(), meta.ino()))
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let cap = std::num::NonZeroUsize::new(shared.cfg.max_open_files.max(1))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        Writer {
            shared,
            files: LruCache::new(cap),
            categories: HashSet::new(),
            lines_since_flush: 0,
            used: 0,
            next_scan: Instant::now(),
            quota_full: false,
            disk_full: false,
            full_drops: HashMap::new(),
        }
    }

    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        if self.shared.cfg.max_bytes > 0 {
            self.rescan();
        }
        let interval = self.shared.cfg.flush_interval.max(Duration::from_millis(1));
        let mut next_tick = Instant::now() + interval;
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Batch { chunks, lines }) => self.batch(chunks, lines),
                Ok(Msg::Flush(reply)) => {
                    self.flush_all(true);
                    let _ = reply.send(());
                }
                Ok(Msg::Shutdown(reply)) => {
                    let mut replies = vec![reply];
                    while let Ok(msg) = rx.try_recv() {
                        match msg {
                            Msg::Batch { chunks, lines } => self.batch(chunks, lines),
                            Msg::Flush(r) | Msg::Shutdown(r) => replies.push(r),
                        }
                    }
                    self.finish();
                    for r in replies {
                        let _ = r.send(());
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.notices(false);
                self.flush_all(false);
                next_tick = now + interval;
            }
            if self.shared.cfg.max_bytes > 0 && now >= self.next_scan {
                self.rescan();
            }
            if now >= next_prune {
                if let Some(l) = &self.shared.limiter {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
                next_prune = now + PRUNE_EVERY;
            }
        }
    }

    fn finish(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.notices(true);
        self.flush_all(true);
        // What a last flush could not write is lost now: count it.
        while let Some((_, f)) = self.files.pop_lru() {
            let (_, buffered) = f.writer.into_parts();
            if let Ok(buf) = buffered {
                self.lost(newlines(&buf), self.disk_full);
            }
        }
        self.shared.open_files.store(0, Ordering::Relaxed);
    }

    /// Count `lines` lost: to a lack of room (`droppedFull`) or another file error.
    fn lost(&self, lines: u64, space: bool) {
        if lines == 0 {
            return;
        }
        let c = if space {
            &self.shared.dropped_full
        } else {
            &self.shared.write_errors
        };
        c.fetch_add(lines, Ordering::Relaxed);
    }

    /// Measure the directory again (with a quota): room freed elsewhere ends a full spell.
    fn rescan(&mut self) {
        let buffered: u64 = self
            .files
            .iter()
            .map(|(_, f)| f.writer.buffer().len() as u64)
            .sum();
        self.used = dir_bytes(&self.shared.cfg.root) + buffered;
        self.shared.log_bytes.store(self.used, Ordering::Relaxed);
        let max = self.shared.cfg.max_bytes;
        if self.quota_full && self.used <= max - max / 16 {
            self.quota_full = false;
            self.resumed();
        }
        self.next_scan = Instant::now() + if self.quota_full { RESCAN_FULL } else { RESCAN };
    }

    /// Drop `lines` of `category` for lack of room.
    fn drop_full(&mut self, category: &Arc<str>, lines: u64, why: Full) {
        if lines == 0 {
            return;
        }
        self.shared.dropped_full.fetch_add(lines, Ordering::Relaxed);
        if let Some(n) = self.full_drops.get_mut(category) {
            *n += lines;
        } else if self.full_drops.len() < self.shared.cfg.max_categories {
            self.full_drops.insert(Arc::clone(category), lines);
        }
        match why {
            Full::Quota => {
                self.quota_full = true;
                self.next_scan = self.next_scan.min(Instant::now() + RESCAN_FULL);
            }
            Full::Disk => self.disk_full = true,
        }
        if !self.shared.full.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                root = %self.shared.cfg.root.display(),
                reason = match why { Full::Quota => "the log directory's quota", Full::Disk => "the disk" },
                "log directory full: dropping lines (counted in droppedFull) until there is room"
            );
        }
    }

    /// Writes go through again: say so, and write each category's drop notice.
    fn resumed(&mut self) {
        if self.quota_full || self.disk_full || !self.shared.full.swap(false, Ordering::AcqRel) {
            return;
        }
        let drops = std::mem::take(&mut self.full_drops);
        let total: u64 = drops.values().sum();
        tracing::info!(
            root = %self.shared.cfg.root.display(),
            dropped = total,
            "log directory has room again: writing resumed"
        );
        let ts = super::rfc3339_millis(daemonhost_protocol::time::now_ms());
        for (category, n) in drops {
            let mut bytes = Vec::with_capacity(96);
            super::format::format_line(
                &mut bytes,
                &ts,
                super::Level::Warn,
                "logger",
                &format!("[log directory full: dropped {n} lines]"),
                None,
            );
            self.write_chunk(&Chunk {
                category,
                bytes,
                lines: 1,
            });
        }
    }

    fn batch(&mut self, chunks: Vec<Chunk>, lines: usize) {
        for chunk in chunks {
            self.write_chunk(&chunk);
        }
        self.shared.queued.fetch_sub(lines, Ordering::AcqRel);
        self.lines_since_flush += lines;
        if self.lines_since_flush >= self.shared.cfg.batch_lines {
            self.flush_all(false);
        }
    }

    fn write_chunk(&mut self, chunk: &Chunk) {
        if !self.categories.contains(&chunk.category)
            && self.categories.len() < self.shared.cfg.max_categories
        {
            self.categories.insert(Arc::clone(&chunk.category));
            self.shared
                .categories
                .store(self.categories.len(), Ordering::Relaxed);
        }
        let max = self.shared.cfg.max_bytes;
        if max > 0 && self.quota_full {
            self.drop_full(&chunk.category, chunk.lines as u64, Full::Quota);
            return;
        }
        // Room left under the quota (none: unbounded).
        let mut room = if max > 0 {
            max.saturating_sub(self.used)
        } else {
            u64::MAX
        };
        let disk_full = self.disk_full;
        let Some(file) = self.file(&chunk.category) else {
            self.shared
                .write_errors
                .fetch_add(chunk.lines as u64, Ordering::Relaxed);
            return;
        };
        // Whole lines, a buffer's worth at a time (and no more than the room): each piece is
        // buffered whole or not at all.
        let mut rest = &chunk.bytes[..];
        let (mut lines, mut bytes) = (0u64, 0usize);
        let mut failed = None;
        while !rest.is_empty() {
            let limit = usize::try_from(room)
                .unwrap_or(usize::MAX)
                .min(FILE_BUFFER - 1);
            let piece = whole_lines(rest, limit);
            if piece.len() as u64 > room {
                // Not even its next line fits under the quota.
                failed = Some((Some(Full::Quota), newlines(rest)));
                break;
            }
            match file.writer.write_all(piece) {
                Ok(()) => {
                    lines += newlines(piece);
                    bytes += piece.len();
                    room -= piece.len() as u64;
                    rest = &rest[piece.len()..];
                }
                Err(e) => {
                    let space = is_space(&e);
                    if !(disk_full && space) {
                        tracing::warn!(path = %file.path.display(), error = %e, "log write failed");
                    }
                    failed = Some((space.then_some(Full::Disk), newlines(rest)));
                    break;
                }
            }
        }
        if bytes > 0 {
            file.dirty = true;
            self.shared
                .lines_written
                .fetch_add(lines, Ordering::Relaxed);
            self.shared
                .bytes_written
                .fetch_add(bytes as u64, Ordering::Relaxed);
            self.used = self.used.saturating_add(bytes as u64);
            if max > 0 {
                self.shared.log_bytes.store(self.used, Ordering::Relaxed);
            }
        }
        match failed {
            Some((Some(why), n)) => self.drop_full(&chunk.category, n, why),
            Some((None, n)) => self.lost(n, false),
            None => {}
        }
    }

    fn file(&mut self, category: &Arc<str>) -> Option<&mut OpenFile> {
        if !self.files.contains(category) {
            let path = self.shared.cfg.root.join(format!("{category}.log"));
            let (f, dev, ino) = match open(&path) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open log file");
                    return None;
                }
            };
            let entry = OpenFile {
                writer: BufWriter::with_capacity(FILE_BUFFER, f),
                path,
                dev,
                ino,
                dirty: false,
                last_check: Instant::now(),
            };
            if let Some((_, mut evicted)) = self.files.push(Arc::clone(category), entry)
                && let Err(e) = evicted.writer.flush()
            {
                tracing::warn!(path = %evicted.path.display(), error = %e, "log flush failed");
                // Closed with lines it could not write: they are lost.
                let (_, buffered) = evicted.writer.into_parts();
                if let Ok(buf) = buffered {
                    self.lost(newlines(&buf), is_space(&e));
                }
            }
            self.shared
                .open_files
                .store(self.files.len(), Ordering::Relaxed);
        }
        self.files.get_mut(category)
    }

    /// Reopen `f`'s path if the file there is not the one we hold (deleted or rotated).
    /// Returns the lines lost on the way (buffered lines the new file did not take) and
    /// whether for lack of room.
    fn check_identity(f: &mut OpenFile) -> Option<(u64, bool)> {
        f.last_check = Instant::now();
        let same = match std::fs::metadata(&f.path) {
            Ok(m) => m.dev() == f.dev && m.ino() == f.ino,
            Err(_) => false,
        };
        if same {
            return None;
        }
        let (new_file, dev, ino) = match open(&f.path) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(path = %f.path.display(), error = %e, "cannot reopen log file");
                return None;
            }
        };
        let old = std::mem::replace(
            &mut f.writer,
            BufWriter::with_capacity(FILE_BUFFER, new_file),
        );
        // Lines still buffered belong to the new file.
        let (_, buffered) = old.into_parts();
        let mut lost = None;
        if let Ok(buf) = buffered
            && let Err(e) = f.writer.write_all(&buf)
        {
            tracing::warn!(path = %f.path.display(), error = %e, "log write failed");
            lost = Some((newlines(&buf), is_space(&e)));
        }
        f.dev = dev;
        f.ino = ino;
        f.dirty = true;
        lost
    }

    fn flush_all(&mut self, force_check: bool) {
        let interval = self.shared.cfg.flush_interval;
        let disk_full = self.disk_full;
        let (mut flushed, mut no_room) = (false, false);
        let mut lost = Vec::new();
        for (_, f) in self.files.iter_mut() {
            if !f.dirty && !force_check {
                continue;
            }
            if (force_check || f.last_check.elapsed() >= interval)
                && let Some(l) = Self::check_identity(f)
            {
                lost.push(l);
            }
            if f.dirty {
                match f.writer.flush() {
                    Ok(()) => {
                        flushed = true;
                        f.dirty = false;
                    }
                    // The lines stay buffered (bounded by the buffer) for the next flush.
                    Err(e) if is_space(&e) => {
                        if !disk_full {
                            tracing::warn!(path = %f.path.display(), error = %e, "log flush failed");
                        }
                        no_room = true;
                    }
                    Err(e) => {
                        tracing::warn!(path = %f.path.display(), error = %e, "log flush failed");
                        f.dirty = false;
                    }
                }
            }
        }
        for (n, space) in lost {
            self.lost(n, space);
        }
        if no_room && !self.disk_full {
            self.disk_full = true;
            if !self.shared.full.swap(true, Ordering::AcqRel) {
                tracing::warn!(root = %self.shared.cfg.root.display(), "log directory full: dropping lines (counted in droppedFull) until there is room");
            }
        } else if flushed && !no_room && self.disk_full {
            self.disk_full = false;
            self.resumed();
        }
        self.lines_since_flush = 0;
    }

    /// Write the drop notices of bursts that ended (all of them when `all`).
    fn notices(&mut self, all: bool) {
        let ended = self.shared.take_ended_bursts(all);
        for (category, burst) in ended {
            let mut bytes = Vec::with_capacity(128);
            super::push_notice(&mut bytes, &burst);
            self.write_chunk(&Chunk {
                category,
                bytes,
                lines: 1,
            });
        }
    }
}
