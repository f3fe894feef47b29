//! daemonhost worker services: the logger and search daemons' implementations, and the
//! worker-process side of the protocol that serves them out of the host's process.
//!
//! # Why
//!
//! **Placement transparency.** A daemon's implementation can run in the host or in a worker
//! process, chosen per daemon in config. Both placements run the *same value* through the same
//! [`WorkerService`] trait: in a worker, [`serve_connection`] maps protocol requests onto
//! [`WorkerService::handle`]; in the host, a daemon calls `handle` directly — as the normal
//! placement or as the fallback while the worker is down. Callers see the same commands, params,
//! results and error codes either way; only metrics (`worker_used`) and `health/status` say which
//! placement answered. That is why services keep all state in their struct (no globals), never
//! assume they own the process, and keep blocking work off the async workers.
//!
//! **The worker connects to the host**, not the other way round. The host binds a fresh socket,
//! then spawns `daemonhost worker KIND --socket PATH`. So there is no race on "is the worker
//! listening yet" (the host's `accept` simply completes), no stale socket left by a crashed
//! worker, and no way for an unrelated process to impersonate the worker on a well-known path
//! (the original used fixed `/tmp/*.sock` paths and `pkill`/sleep loops). Once connected, the
//! same protocol as every client is spoken (`docs/PROTOCOL.md`), starting with `worker/hello`.
//!
//! **The logger owns its files on one thread.** Appends to many files from many tasks would need
//! a lock per file (the original had 21 `.lock().unwrap()`s) and would put blocking `write(2)`
//! calls on the async workers. One thread that owns every handle needs no locks, keeps each
//! file's lines in order, batches writes through a `BufWriter` per file, and is the one place
//! that notices a deleted or rotated file. Callers only format lines and hand over a batch on a
//! bounded channel; a full queue is answered `overloaded`, never dropped silently. A full disk
//! (or the directory's quota) is the writer's problem alone: it drops and counts the lines it
//! has no room for, and callers never wait for it.
//!
//! # Modules
//! - [`service`]: the [`WorkerService`] trait and [`ServiceCommand`] (with `idempotent`, which
//!   drives the host's retry-on-crash).
//! - [`search`]: the original's stateless BM25/BoW/cosine (`search/execute`) and an incremental
//!   BM25 [`search::MessageIndex`] over chat messages (`search/messages`).
//! - [`logger`]: the batched per-category file [`logger::Logger`] (`log/write`, …).
//! - [`process`]: [`serve_connection`] and [`run_worker`].
#![forbid(unsafe_code)]

mod error;
pub mod logger;
pub mod process;
pub mod search;
pub mod service;

pub use error::WorkerError;
pub use logger::{Logger, LoggerConfig, LoggerService};
pub use process::{
    KNOWN_KINDS, PROTOCOL_VERSION, ServeConfig, WORKER_VERSION, run_worker, run_worker_with,
    serve_connection, serve_connection_with,
};
pub use search::{MessageIndex, MessageIndexConfig, SearchConfig, SearchService};
pub use service::{ServiceCommand, WorkerService};
