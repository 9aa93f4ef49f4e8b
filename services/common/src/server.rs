//! The HTTP server every binary runs: its own routes plus the operational ones.

use std::future::IntoFuture;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::api_error::{self, ApiError};
use crate::health::Readiness;

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

/// Adds the operational routes, request metrics, tracing, panic safety and a
/// JSON 404 to a service's routes. Probes and scrapes are counted but not
/// logged, so a failing `/readyz` does not flood the logs.
pub fn with_ops(app: Router, readiness: Readiness) -> Router {
    // Install the recorder now, so metrics recorded before the first scrape count.
    if crate::metrics::prometheus().is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will answer 503");
    }
    app.fallback(api_error::not_found)
        .layer(TraceLayer::new_for_http())
        .merge(ops_router(readiness))
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
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
    match crate::metrics::prometheus() {
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
    let server =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
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
