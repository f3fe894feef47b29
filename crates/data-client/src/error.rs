//! What a data call can answer besides a result. The variants are the outcomes callers act on
//! (a missing record, a lost optimistic race, a rule broken by a field); everything else keeps
//! its protocol code and message.
//!
//! Both paths give the same variant for the same failure: the in-process path converts the
//! store's typed error (`From<DataError>` in the data crate); the routed path reads the code and
//! the data daemon's message, whose shapes are fixed by that same error's `Display`
//! (`collection.field: reason`, `collection/id: version conflict: …`).

use daemonhost_protocol::ErrorCode;
use daemonhost_runtime::DaemonError;

/// A failed data call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataClientError {
    /// No record with this id (`not_found`).
    #[error("{message}")]
    NotFound {
        /// The data daemon's message.
        message: String,
    },
    /// The record changed since the caller read it (`validation`).
    #[error("{message}")]
    VersionConflict {
        /// The data daemon's message.
        message: String,
    },
    /// A value broke a schema rule (`validation`).
    #[error("{message}")]
    Validation {
        /// The field that broke it, when known.
        field: Option<String>,
        /// The data daemon's message.
        message: String,
    },
    /// Anything else, with its protocol code.
    #[error("{0}")]
    Other(DaemonError),
}

impl DataClientError {
    /// The protocol code.
    pub fn code(&self) -> ErrorCode {
        match self {
            DataClientError::NotFound { .. } => ErrorCode::NotFound,
            DataClientError::VersionConflict { .. } | DataClientError::Validation { .. } => {
                ErrorCode::Validation
            }
            DataClientError::Other(e) => e.code,
        }
    }

    /// The answer a daemon sends for this error.
    pub fn to_daemon_error(&self) -> DaemonError {
        match self {
            DataClientError::Other(e) => e.clone(),
            other => DaemonError::new(other.code(), other.to_string()),
        }
    }

    /// Whether no record had the id.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DataClientError::NotFound { .. })
    }

    /// Whether an optimistic update lost a race.
    pub fn is_version_conflict(&self) -> bool {
        matches!(self, DataClientError::VersionConflict { .. })
    }

    /// Whether the write was refused for lack of space (`storage_full`: retry once space is
    /// freed). Kept as [`DataClientError::Other`] with its code: callers do not act on it beyond
    /// answering it on or retrying later.
    pub fn is_storage_full(&self) -> bool {
        self.code() == ErrorCode::StorageFull
    }

    /// Whether a unique-key rule on `field` refused the write.
    pub fn is_unique_conflict(&self, field: &str) -> bool {
        matches!(self, DataClientError::Validation { field: Some(f), message } if f == field && message.contains("unique"))
    }

    /// Classify a routed answer by its code and the data daemon's message.
    pub fn from_routed(e: DaemonError) -> Self {
        match e.code {
            ErrorCode::NotFound => DataClientError::NotFound { message: e.message },
            ErrorCode::Validation if e.message.contains(": version conflict: ") => {
                DataClientError::VersionConflict { message: e.message }
            }
            ErrorCode::Validation => DataClientError::Validation {
                field: field_of(&e.message),
                message: e.message,
            },
            _ => DataClientError::Other(e),
        }
    }
}

impl From<DataClientError> for DaemonError {
    fn from(e: DataClientError) -> Self {
        e.to_daemon_error()
    }
}

/// `field` of a `collection.field: reason` message.
fn field_of(message: &str) -> Option<String> {
    let (head, _) = message.split_once(": ")?;
    let (_, field) = head.split_once('.')?;
    (!field.is_empty() && !field.contains(' ')).then(|| field.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_errors_are_classified_like_the_store_s() {
        let nf =
            DataClientError::from_routed(DaemonError::not_found("rooms: no record with id 'x'"));
        assert!(nf.is_not_found());
        let vc = DataClientError::from_routed(DaemonError::validation(
            "rooms/x: version conflict: expected 1, found 2",
        ));
        assert!(vc.is_version_conflict());
        let uq = DataClientError::from_routed(DaemonError::validation(
            "users.uniqueId: must be unique ('a' exists)",
        ));
        assert!(uq.is_unique_conflict("uniqueId"));
        assert!(!uq.is_unique_conflict("name"));
        let full = DataClientError::from_routed(DaemonError::new(
            ErrorCode::StorageFull,
            "database 'primary' is full during write: the write did not fit",
        ));
        assert!(full.is_storage_full() && matches!(full, DataClientError::Other(_)));
        let other = DataClientError::from_routed(DaemonError::overloaded("full"));
        assert_eq!(other.code(), ErrorCode::Overloaded);
        assert_eq!(other.to_daemon_error(), DaemonError::overloaded("full"));
    }
}
