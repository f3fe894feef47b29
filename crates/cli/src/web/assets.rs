//! The browser's files, embedded in the binary from `crates/cli/assets/`: one table of
//! path → (content type, bytes). Replacing the page (the chat and host UI) is adding rows here
//! and files there; nothing else changes. A path not in the table is `404`.
//!
//! Every answer carries `Cache-Control: no-cache` (the files change with the binary),
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` (the first URL holds
//! the token in `?token=`; no link followed from the page may send it on).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../../assets/index.html");
const HTML: &str = "text/html; charset=utf-8";

/// Every file served.
pub(crate) const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        bytes: INDEX,
    },
    Asset {
        path: "/index.html",
        content_type: HTML,
        bytes: INDEX,
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/app.css"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/app.js"),
    },
];

/// The asset at `path`, if any.
pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Bytes of the distinct embedded files (an alias counted once).
pub(crate) fn total_bytes() -> usize {
    let mut seen: Vec<*const u8> = Vec::new();
    ASSETS
        .iter()
        .filter(|a| {
            let p = a.bytes.as_ptr();
            let new = !seen.contains(&p);
            seen.push(p);
            new
        })
        .map(|a| a.bytes.len())
        .sum()
}

/// The router's fallback: the asset at the request's path, or `404`.
pub(crate) async fn serve(uri: Uri) -> Response {
    match find(uri.path()) {
        Some(a) => (
            [
                (CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
                (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            ],
            a.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such page\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_unique_absolute_path_a_content_type_and_bytes() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(a.path.starts_with('/'), "{}", a.path);
            assert!(
                !a.content_type.is_empty() && !a.bytes.is_empty(),
                "{}",
                a.path
            );
            assert!(
                ASSETS[..i].iter().all(|b| b.path != a.path),
                "{} twice",
                a.path
            );
        }
        assert!(find("/").is_some() && find("/nope").is_none());
        assert!(
            std::str::from_utf8(INDEX)
                .expect("utf-8")
                .contains("/app.js"),
            "the page loads its script"
        );
        assert!(total_bytes() < ASSETS.iter().map(|a| a.bytes.len()).sum::<usize>());
    }
}
