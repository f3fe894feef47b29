//! The writer thread: the only code that touches log files.
//!
//! It takes batches from a bounded channel, appends each chunk to its category's `BufWriter`
//! (an LRU of open files), and flushes every `batch_lines` lines or every `flush_interval`.
//! At most once per flush interval per file (and on every explicit flush) it compares the path's
//! `(dev, inode)` with the open handle's: when the file was deleted or rotated away it reopens the
//! path, moving the still-buffered lines into the new file. It also writes the rate limiter's
//! drop notices once a burst has been quiet for [`BURST_QUIET`], and prunes the keyed limiter.

use std::collections::HashSet;
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
        }
    }

    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
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
        self.files.clear();
        self.shared.open_files.store(0, Ordering::Relaxed);
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
        let Some(file) = self.file(&chunk.category) else {
            self.shared
                .write_errors
                .fetch_add(chunk.lines as u64, Ordering::Relaxed);
            return;
        };
        match file.writer.write_all(&chunk.bytes) {
            Ok(()) => {
                file.dirty = true;
                self.shared
                    .lines_written
                    .fetch_add(chunk.lines as u64, Ordering::Relaxed);
                self.shared
                    .bytes_written
                    .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(path = %file.path.display(), error = %e, "log write failed");
                self.shared
                    .write_errors
                    .fetch_add(chunk.lines as u64, Ordering::Relaxed);
            }
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
            }
            self.shared
                .open_files
                .store(self.files.len(), Ordering::Relaxed);
        }
        self.files.get_mut(category)
    }

    /// Reopen `f`'s path if the file there is not the one we hold (deleted or rotated).
    fn check_identity(f: &mut OpenFile) {
        f.last_check = Instant::now();
        let same = match std::fs::metadata(&f.path) {
            Ok(m) => m.dev() == f.dev && m.ino() == f.ino,
            Err(_) => false,
        };
        if same {
            return;
        }
        let (new_file, dev, ino) = match open(&f.path) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(path = %f.path.display(), error = %e, "cannot reopen log file");
                return;
            }
        };
        let old = std::mem::replace(
            &mut f.writer,
            BufWriter::with_capacity(FILE_BUFFER, new_file),
        );
        // Lines still buffered belong to the new file.
        let (_, buffered) = old.into_parts();
        if let Ok(buf) = buffered
            && let Err(e) = f.writer.write_all(&buf)
        {
            tracing::warn!(path = %f.path.display(), error = %e, "log write failed");
        }
        f.dev = dev;
        f.ino = ino;
        f.dirty = true;
    }

    fn flush_all(&mut self, force_check: bool) {
        let interval = self.shared.cfg.flush_interval;
        for (_, f) in self.files.iter_mut() {
            if !f.dirty && !force_check {
                continue;
            }
            if force_check || f.last_check.elapsed() >= interval {
                Self::check_identity(f);
            }
            if f.dirty {
                if let Err(e) = f.writer.flush() {
                    tracing::warn!(path = %f.path.display(), error = %e, "log flush failed");
                }
                f.dirty = false;
            }
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
