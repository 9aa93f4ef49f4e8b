//! Token sessions: tokens are issued at the user's current generation, and
//! `POST /api/v1/logout` moves the generation on, which revokes every token
//! the user holds (all devices) on every service at once: REST answers 401
//! and the chat service closes the user's sockets (it follows the
//! announcement, see [`parley_common::revocation`]).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use parley_common::api_error::ApiError;
use parley_common::auth::{Authenticated, revocation_refusal};
use serde_json::{Value, json};

use crate::http::AppState;

/// The session routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/logout", post(logout))
}

/// Issues a token for the user at their current generation.
pub async fn sign(
    state: &AppState,
    sub: &str,
    email: &str,
    name: &str,
) -> Result<String, ApiError> {
    let generation = state
        .revocations
        .current(sub)
        .await
        .map_err(|e| revocation_refusal(&e))?;
    state
        .config
        .signer
        .sign_at(sub, email, name, generation, chrono::Utc::now().timestamp())
        .map_err(ApiError::internal)
}

/// Ends every session of the caller: their tokens stop working everywhere
/// and their sockets are closed.
async fn logout(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<Value>, ApiError> {
    state
        .revocations
        .revoke(&claims.sub, state.config.signer.lifetime())
        .await
        .map_err(|e| revocation_refusal(&e))?;
    metrics::counter!("user_logouts_total").increment(1);
    Ok(Json(json!({ "message": "Logged out" })))
}
