//! `DataError`: every failure at the data layer's seam, with the context needed to act on it,
//! mapped onto the protocol's stable error codes by [`DataError::to_daemon_error`].
//!
//! The split that matters to callers: `Validation` / `BadRequest` / `Param` are the caller's
//! fault and name the field and rule; `NotFound` and `VersionConflict` are expected outcomes; `Overloaded`
//! means "retry later" (a bounded queue was full); `StorageFull` means "retry once space is
//! freed" (the database file reached its quota, or the disk is full: SQLite's `SQLITE_FULL`);
//! `Sqlite` / `Closed` are ours.

use daemonhost_protocol::params::ParamError;
use daemonhost_runtime::{DaemonError, ErrorCode};

/// A failure in the data layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A value broke a schema rule.
    #[error("{collection}.{field}: {reason}")]
    Validation {
        /// Collection being written or queried.
        collection: String,
        /// Field that broke the rule.
        field: String,
        /// The rule and the offending value, for people.
        reason: String,
    },
    /// Parameters of the wrong shape (unknown operator, malformed cursor, bad identifier).
    #[error("{0}")]
    BadRequest(String),
    /// Request params refused by the protocol's one reader, with its code and message: a
    /// required param absent (`validation`, `collection: required`), one of the wrong type
    /// (`bad_request`, `data: must be an object`), or rejected (`validation`).
    #[error(transparent)]
    Param(#[from] ParamError),
    /// No such collection in the loaded schemas.
    #[error("unknown collection '{0}'")]
    UnknownCollection(String),
    /// No record with this id.
    #[error("{collection}: no record with id '{id}'")]
    NotFound {
        /// Collection searched.
        collection: String,
        /// Id asked for.
        id: String,
    },
    /// Optimistic concurrency: the record changed since the caller read it.
    #[error("{collection}/{id}: version conflict: expected {expected}, found {found}")]
    VersionConflict {
        /// Collection.
        collection: String,
        /// Record id.
        id: String,
        /// Version the caller said it updated from.
        expected: i64,
        /// Version stored now.
        found: i64,
    },
    /// A bounded queue in front of a database thread is full.
    #[error("database '{handle}' is overloaded: {queue} queue full")]
    Overloaded {
        /// Handle name.
        handle: String,
        /// Which queue (`writer` / `reader`).
        queue: &'static str,
    },
    /// The write did not fit: the database file reached its quota (`PRAGMA max_page_count`,
    /// from `[data] max_db_mb`) or the disk is full (`SQLITE_FULL`). Nothing was written.
    #[error(
        "database '{handle}' is full during {op}: the write did not fit; free space (delete or archive records, or raise the quota) and retry"
    )]
    StorageFull {
        /// Handle name (`primary`, `archive`, `persona:<id>`).
        handle: String,
        /// What we were doing.
        op: String,
    },
    /// The database thread has stopped.
    #[error("database '{0}' is closed")]
    Closed(String),
    /// SQLite reported an error that is not the caller's fault.
    #[error("sqlite error on '{handle}' during {op}: {message}")]
    Sqlite {
        /// Handle name.
        handle: String,
        /// What we were doing.
        op: String,
        /// SQLite's message.
        message: String,
    },
    /// Filesystem trouble (creating directories, listing archive files).
    #[error("io error at {path}: {message}")]
    Io {
        /// Path involved.
        path: String,
        /// The OS message.
        message: String,
    },
}

impl DataError {
    /// A validation error.
    pub fn validation(
        collection: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        DataError::Validation {
            collection: collection.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Wrap a rusqlite error with context. `SQLITE_FULL` becomes [`DataError::StorageFull`].
    pub fn sqlite(handle: &str, op: impl Into<String>, e: &rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return DataError::StorageFull {
                handle: handle.to_owned(),
                op: op.into(),
            };
        }
        DataError::Sqlite {
            handle: handle.to_owned(),
            op: op.into(),
            message: e.to_string(),
        }
    }

    /// Wrap an io error with its path.
    pub fn io(path: &std::path::Path, e: &std::io::Error) -> Self {
        DataError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DataError::Validation { .. } | DataError::VersionConflict { .. } => {
                ErrorCode::Validation
            }
            DataError::BadRequest(_) | DataError::UnknownCollection(_) => ErrorCode::BadRequest,
            DataError::Param(e) => e.code(),
            DataError::NotFound { .. } => ErrorCode::NotFound,
            DataError::Overloaded { .. } => ErrorCode::Overloaded,
            DataError::StorageFull { .. } => ErrorCode::StorageFull,
            DataError::Closed(_) => ErrorCode::Unavailable,
            DataError::Sqlite { .. } | DataError::Io { .. } => ErrorCode::Internal,
        }
    }

    /// Whether the write was refused for lack of space.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, DataError::StorageFull { .. })
    }

    /// The answer a daemon sends for this error.
    pub fn to_daemon_error(&self) -> DaemonError {
        DaemonError::new(self.code(), self.to_string())
    }
}

impl From<daemonhost_data_client::InvalidHandle> for DataError {
    fn from(e: daemonhost_data_client::InvalidHandle) -> Self {
        DataError::BadRequest(e.to_string())
    }
}

impl From<DataError> for daemonhost_data_client::DataClientError {
    fn from(e: DataError) -> Self {
        use daemonhost_data_client::DataClientError as C;
        let message = e.to_string();
        match e {
            DataError::NotFound { .. } => C::NotFound { message },
            DataError::VersionConflict { .. } => C::VersionConflict { message },
            DataError::Validation { field, .. } => C::Validation {
                field: Some(field),
                message,
            },
            other => C::Other(other.to_daemon_error()),
        }
    }
}

impl From<DataError> for DaemonError {
    fn from(e: DataError) -> Self {
        e.to_daemon_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_map_to_the_protocol_code_of_their_fault() {
        assert_eq!(
            DataError::validation("users", "displayName", "required").code(),
            ErrorCode::Validation
        );
        assert_eq!(
            DataError::BadRequest("x".into()).code(),
            ErrorCode::BadRequest
        );
        let d: DaemonError = DataError::NotFound {
            collection: "users".into(),
            id: "u1".into(),
        }
        .into();
        assert_eq!(d.code, ErrorCode::NotFound);
        assert!(d.message.contains("u1"));
    }

    #[test]
    fn sqlite_full_is_storage_full_on_both_paths() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let e = DataError::sqlite("primary", "write", &full);
        assert!(e.is_storage_full(), "{e:?}");
        assert_eq!(e.code(), ErrorCode::StorageFull);
        // The data client keeps the code (no variant of its own: callers do not act on it
        // beyond retrying later), and the routed path classifies the daemon's answer the same.
        let local = daemonhost_data_client::DataClientError::from(e.clone());
        let routed = daemonhost_data_client::DataClientError::from_routed(e.to_daemon_error());
        assert_eq!(local.code(), ErrorCode::StorageFull);
        assert_eq!(local, routed);
        assert!(local.is_storage_full());
        // Any other SQLite failure stays ours.
        let other = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        assert_eq!(
            DataError::sqlite("primary", "write", &other).code(),
            ErrorCode::Internal
        );
    }

    #[test]
    fn param_errors_keep_the_readers_code_and_message() {
        use daemonhost_protocol::params::ParamType;
        let d = DataError::from(ParamError::missing("collection")).to_daemon_error();
        assert_eq!(
            (d.code, d.message.as_str()),
            (ErrorCode::Validation, "collection: required")
        );
        let d =
            DataError::from(ParamError::wrong_type("data", ParamType::Object)).to_daemon_error();
        assert_eq!(
            (d.code, d.message.as_str()),
            (ErrorCode::BadRequest, "data: must be an object")
        );
    }
}
