//! The HTTP server every binary runs: its own routes plus the operational ones.

use std::future::IntoFuture;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::health::Readiness;
use crate::http::api_error::{self, ApiError};

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

/// The headers every answer carries unless its handler set its own: no MIME
/// sniffing, no referrer, never framed, and a policy that lets an API
/// answer load nothing should a browser render it.
pub const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (REFERRER_POLICY, "no-referrer"),
    (X_FRAME_OPTIONS, "DENY"),
    (
        CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

/// Adds [`SECURITY_HEADERS`] to every answer of `app` (where absent).
pub fn with_security_headers(mut app: Router) -> Router {
    for (name, value) in SECURITY_HEADERS {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    app
}

/// The operational routes alone, for a binary that serves nothing else.
pub fn ops_only(readiness: Readiness) -> Router {
    with_ops(Router::new(), readiness)
}

/// Adds the operational routes, request metrics, tracing, panic safety,
/// security headers and a JSON 404 to a service's routes. Probes and
/// scrapes are counted but not logged, so a failing `/readyz` does not
/// flood the logs.
pub fn with_ops(app: Router, readiness: Readiness) -> Router {
    // Install the recorder now, so metrics recorded before the first scrape count.
    if crate::http::metrics::prometheus().is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will answer 503");
    }
    let app = app
        .fallback(api_error::not_found)
        .layer(TraceLayer::new_for_http())
        .merge(ops_router(readiness))
        .layer(axum::middleware::from_fn(crate::http::metrics::track_http))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(axum::middleware::from_fn(api_error::log_failures));
    with_security_headers(app)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let report = readiness.report().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn metrics() -> Response {
    match crate::http::metrics::prometheus() {
        Some(handle) => (
            [(CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable",
        )
        .into_response(),
    }
}

/// `listener`, with every accepted connection writing at once
/// (`TCP_NODELAY`): a Socket.IO frame is small and often follows another
/// within the peer's delayed-ACK time, and Nagle's algorithm would hold it
/// back for that long (tens of milliseconds).
pub fn without_delay(
    listener: TcpListener,
) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(no_delay)
}

fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::warn!(%error, "TCP_NODELAY not set on a connection");
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "http server listening");
    let stop = shutdown.clone();
    // Peer addresses reach handlers (`ConnectInfo`) for per-client limits.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(without_delay(listener), app)
        .with_graceful_shutdown(async move { stop.cancelled().await });
    let server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = server => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests outlived the grace period; stopping");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_write_without_delay() {
        use axum::serve::Listener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = without_delay(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap(), "Nagle's algorithm is on");
    }

    #[tokio::test]
    async fn every_answer_gets_the_headers_and_handlers_may_set_their_own() {
        let app =
            with_security_headers(Router::new().route("/plain", get(|| async { "x" })).route(
                "/own",
                get(|| async { ([(CONTENT_SECURITY_POLICY, "sandbox")], "x") }),
            ));
        for (path, csp) in [
            ("/plain", "default-src 'none'; frame-ancestors 'none'"),
            ("/own", "sandbox"),
        ] {
            let response = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let headers = response.headers();
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[X_FRAME_OPTIONS], "DENY");
            assert_eq!(headers[CONTENT_SECURITY_POLICY], csp);
        }
    }

    #[tokio::test]
    async fn failure_details_reach_the_log_layer_and_never_the_client() {
        let app = Router::new()
            .route(
                "/down",
                get(|| async { ApiError::unavailable("mongodb", "refused by 198.18.0.7") }),
            )
            .route(
                "/bug",
                get(|| async { ApiError::internal("index 7 out of range") }),
            );
        for (path, status, message, detail) in [
            (
                "/down",
                503,
                "mongodb is unavailable, try again shortly",
                "refused by 198.18.0.7",
            ),
            ("/bug", 500, "internal error", "index 7 out of range"),
        ] {
            let response = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), status);
            let logged = response
                .extensions()
                .get::<api_error::Logged>()
                .expect("the detail travels to the log layer");
            assert_eq!(logged.detail, detail);
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains(message), "{body}");
            assert!(!body.contains(detail), "the detail leaked: {body}");
        }
    }
}
