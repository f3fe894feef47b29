//! Endpoints served over the daemons' commands, merged into the bridge through
//! [`super::router`]'s `extra` (so behind the same `Host` and token checks):
//!
//! | path | what |
//! |---|---|
//! | `/proxy/<percent-encoded-url>` | the `proxy` daemon's `proxy/fetch`, answered as the page itself (same origin, for iframes) |
//! | `/metrics` | the Prometheus text of the host (`crate::metrics`), rendered per scrape |
//! | `/startup.svg` | the startup waterfall of `daemonhost analyze plot` (`system/startup`) |
//!
//! A command's error becomes an HTTP status by its code ([`status_of`]); the body is its message.

use axum::Router;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, HeaderName, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use daemonhost_protocol::ErrorCode;
use serde_json::{Value, json};

/// The routes, on the host's command router; `metrics` renders `/metrics`.
pub(crate) fn extra(
    router: daemonhost_runtime::Router,
    metrics: crate::metrics::Renderer,
) -> Router {
    Router::new()
        .route("/proxy/{*rest}", get(proxy))
        .route("/startup.svg", get(startup_svg))
        .with_state(router)
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    // A render reads the runtime's counters (~2 ms): off the async workers.
                    let text = tokio::task::spawn_blocking(move || metrics())
                        .await
                        .unwrap_or_default();
                    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
                }
            }),
        )
}

/// `GET /startup.svg`: the same SVG as `daemonhost analyze plot`.
async fn startup_svg(State(router): State<daemonhost_runtime::Router>) -> Response {
    match router.ask("system/startup", Value::Null).await {
        Ok(v) => (
            [(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"))],
            crate::analyze::plot_svg(&v),
        )
            .into_response(),
        Err(e) => (status_of(e.code), format!("{}\n", e.message)).into_response(),
    }
}

/// The HTTP status for a command's error code.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::BadRequest | ErrorCode::Validation | ErrorCode::FrameTooLarge => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::NotFound | ErrorCode::UnknownCommand => StatusCode::NOT_FOUND,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable => StatusCode::BAD_GATEWAY,
        ErrorCode::Overloaded | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageFull | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `GET|HEAD /proxy/<encoded-url>`: the raw (still percent-encoded) path is decoded once by
/// the proxy's own rule, fetched by `proxy/fetch` (which applies the allowlist, the address
/// rule and the limits), and answered with the fetched status, type, forwarded headers and body.
async fn proxy(
    State(router): State<daemonhost_runtime::Router>,
    method: Method,
    uri: Uri,
) -> Response {
    let url = match daemonhost_proxy::decode_path(uri.path()) {
        Ok(u) => u,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let m = if method == Method::HEAD {
        "HEAD"
    } else {
        "GET"
    };
    let answer = match router
        .ask("proxy/fetch", json!({ "url": url, "method": m }))
        .await
    {
        Ok(v) => v,
        Err(e) => return (status_of(e.code), format!("{}\n", e.message)).into_response(),
    };
    let body = answer
        .get("body")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let status = answer
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    if let Some(obj) = answer.get("headers").and_then(Value::as_object) {
        for (k, v) in obj {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                h.insert(name, value);
            }
        }
    }
    if let Some(Ok(ct)) = answer
        .get("contentType")
        .and_then(Value::as_str)
        .map(HeaderValue::from_str)
    {
        h.insert(CONTENT_TYPE, ct);
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_an_http_status_and_forbidden_is_403() {
        for code in ErrorCode::ALL {
            let s = status_of(code);
            assert!(s.is_client_error() || s.is_server_error(), "{code:?} → {s}");
        }
        assert_eq!(status_of(ErrorCode::Forbidden), StatusCode::FORBIDDEN);
        assert_eq!(status_of(ErrorCode::Timeout), StatusCode::GATEWAY_TIMEOUT);
    }
}
