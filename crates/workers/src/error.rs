//! Errors of the worker side (not of individual commands: those are `ErrorBody`s).

use std::io;
use std::path::PathBuf;

/// Why a worker (or one of its services) could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// `run_worker` was asked for a kind it does not know.
    #[error("unknown worker kind '{kind}' (known kinds: {})", known.join(", "))]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// Every kind this build can run.
        known: Vec<&'static str>,
    },
    /// Connecting to the host's socket failed.
    #[error("cannot connect to the host at {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A service thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The connection to the host failed mid-way.
    #[error("connection to the host failed while {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The host broke framing (e.g. an oversized frame); the connection was closed.
    #[error("protocol violation by the host: {message}")]
    Protocol {
        /// What went wrong.
        message: String,
    },
}
