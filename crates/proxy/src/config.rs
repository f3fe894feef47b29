//! The proxy's settings (`[proxy]` of the host's config) and their defaults.

use std::time::Duration;

/// Largest body answered by default: 2 MiB (a page or an image, not a download).
pub const DEFAULT_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Default bound of one whole fetch.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of fetches at once.
pub const DEFAULT_MAX_CONCURRENT: usize = 16;
/// The most `max_concurrent` may be (each fetch may hold a blocking thread for DNS).
pub const MAX_CONCURRENT_LIMIT: usize = 1024;

/// What a `proxy/fetch` answer holds besides its base64 body, at most (status, content type,
/// headers of at most 2 KiB each, field names).
const ANSWER_OVERHEAD: usize = 32 * 1024;

/// The largest frame body a `proxy/fetch` answer can need with `max_bytes`: the body in base64
/// plus the rest of the answer. The host's `max_frame_bytes` must be at least this.
pub fn answer_bound(max_bytes: usize) -> usize {
    max_bytes
        .div_ceil(3)
        .saturating_mul(4)
        .saturating_add(ANSWER_OVERHEAD)
}

/// The largest `max_bytes` whose answers fit in frames of `max_frame_bytes`.
pub fn max_bytes_for_frame(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_sub(ANSWER_OVERHEAD) / 4 * 3
}

/// The proxy daemon's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Allowlist entries (`crate::allow`); empty allows nothing.
    pub allow: Vec<String>,
    /// A larger body fails the fetch (`validation`, "response larger than N bytes").
    pub max_bytes: usize,
    /// Bound of one whole fetch: resolution, connection, answer and body.
    pub timeout: Duration,
    /// Fetches at once; one more is `overloaded`.
    pub max_concurrent: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            allow: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
            timeout: DEFAULT_TIMEOUT,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_answer_fits_the_default_frame_and_the_bound_is_tight() {
        let frame = 16 * 1024 * 1024;
        assert!(answer_bound(DEFAULT_MAX_BYTES) <= frame);
        let most = max_bytes_for_frame(frame);
        assert!(answer_bound(most) <= frame);
        assert!(answer_bound(most + 3) > frame);
        assert_eq!(answer_bound(0), ANSWER_OVERHEAD);
        assert_eq!(max_bytes_for_frame(10), 0);
    }
}
