//! REST routes (prefix `/api/v1`) and the public key set.

use std::net::SocketAddr;

use axum::Json;
/// The service's router.
pub use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mongodb::bson::oid::ObjectId;
use parley_common::api_error::{ApiError, JsonBody};
use parley_common::auth::{Authenticated, caller};
use parley_common::revocation::Revocations;
use parley_common::token::TokenVerifier;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain;
use crate::error::DomainError;
pub use crate::state::AppState;
use crate::store::{PublicView, UserView};
use crate::{account, login, profiles};

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.config.verifier.clone()
    }
}

/// The one place domain refusals become HTTP answers.
impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Invalid(message) => ApiError::bad_request(message),
            DomainError::WrongCode | DomainError::Burned => {
                ApiError::bad_request(error.to_string())
            }
            DomainError::Limited {
                message,
                retry_after_secs,
                limit,
            } => {
                metrics::counter!("user_login_refused_total", "limit" => limit.label())
                    .increment(1);
                ApiError::too_many(message, retry_after_secs)
            }
            DomainError::Unavailable { dependency, detail } => {
                ApiError::unavailable(dependency, detail)
            }
            DomainError::UnknownCaller | DomainError::Revoked => {
                ApiError::unauthorized(error.to_string())
            }
            DomainError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

impl FromRef<AppState> for Revocations {
    fn from_ref(state: &AppState) -> Self {
        state.revocations.clone()
    }
}

/// The routes.
pub fn routes(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/verify", post(verify))
        .route("/api/v1/me", get(me).delete(delete_me))
        .route("/api/v1/me/export", get(export_me))
        .route("/api/v1/user/all", get(all_users))
        .route("/api/v1/user/{id}", get(one_user))
        .route("/api/v1/update/user", post(update_user))
        .route("/api/v1/users/lookup", post(lookup))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/v1/logout", post(logout))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `POST /login`.
#[derive(Deserialize)]
struct LoginBody {
    email: String,
}

/// A code as the original's clients send it: a number or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Otp {
    Number(serde_json::Number),
    Text(String),
}

/// `POST /verify`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyBody {
    email: String,
    otp: Otp,
    login_id: Option<String>,
}

/// `PUT /me` and friends: a new display name.
#[derive(Deserialize)]
struct RenameBody {
    name: String,
}

/// `POST /user/lookup`.
#[derive(Deserialize)]
struct LookupBody {
    ids: Vec<String>,
}

/// The client's address group, from the peer and every `X-Forwarded-For` line.
fn client_group(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> String {
    // Lines that are not visible ASCII are read lossily rather than
    // dropped, so their entries keep their positions too.
    let lines: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let client = domain::client_addr(peer, &lines, state.config.trusted_proxy_hops);
    domain::client_group(client, state.codes.limits().ipv6_prefix)
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    let group = client_group(&state, peer, &headers);
    let login_id = login::request_code(&state, &body.email, &group).await?;
    // The same answer whether or not the address belongs to a user.
    Ok(Json(json!({
        "message": "Verification code sent; check your mail",
        "loginId": login_id,
    })))
}

async fn verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<Json<Value>, ApiError> {
    // the original's clients send the code as a number or a string
    let otp = match body.otp {
        Otp::Number(n) => match n.as_u64() {
            Some(n) => domain::code_from_number(n, state.codes.limits().digits),
            None => n.to_string(),
        },
        Otp::Text(text) => text,
    };
    let group = client_group(&state, peer, &headers);
    let session =
        login::verify_code(&state, &body.email, &otp, body.login_id.as_deref(), &group).await?;
    Ok(session_answer("Logged in", &session))
}

/// The answer that hands a client a (new) token: `{message, user, token}`.
fn session_answer(message: &str, session: &login::Session) -> Json<Value> {
    Json(json!({
        "message": message,
        "user": UserView::from(&session.user),
        "token": session.token,
    }))
}

async fn me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<UserView>, ApiError> {
    let user = profiles::me(&state, &caller(&claims)?).await?;
    Ok(Json(UserView::from(&user)))
}

/// `DELETE /me`: deletes the caller's account (see [`account::delete`]).
async fn delete_me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<Value>, ApiError> {
    account::delete(&state, &caller(&claims)?).await?;
    Ok(Json(json!({ "message": "Account deleted" })))
}

/// `GET /me/export`: the caller's data as a JSON download.
async fn export_me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Response, ApiError> {
    let me = caller(&claims)?;
    let body = account::export(&state, &me).await?;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"parley-export-{}.json\"",
                    me.to_hex()
                ),
            ),
            (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// All users, a page at a time: the body stays the original's array (of
/// public views); the next page's cursor is in the `x-next-cursor` header.
async fn all_users(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    if !state.config.directory {
        return Err(ApiError::forbidden(
            "the user directory is turned off on this server",
        ));
    }
    let me = caller(&claims)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = match query.limit {
        None => 50,
        Some(n) if (1..=100).contains(&n) => n,
        Some(_) => return Err(ApiError::bad_request("limit must be between 1 and 100")),
    };
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| ObjectId::parse_str(c).map_err(|_| ApiError::bad_request("cursor is not valid")))
        .transpose()?;
    let (views, next) = profiles::page(&state, &me, cursor, limit).await?;
    let mut response = Json(views).into_response();
    if let Some(next) = next
        && let Ok(value) = HeaderValue::from_str(&next.to_hex())
    {
        response.headers_mut().insert("x-next-cursor", value);
    }
    Ok(response)
}

async fn one_user(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<PublicView>, ApiError> {
    let me = caller(&claims)?;
    let id = ObjectId::parse_str(id.trim())
        .map_err(|_| ApiError::bad_request("id is not a valid user id"))?;
    profiles::one(&state, &me, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such user"))
}

async fn update_user(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    JsonBody(body): JsonBody<RenameBody>,
) -> Result<Json<Value>, ApiError> {
    let id = caller(&claims)?;
    let session = login::rename(&state, &id, &body.name).await?;
    Ok(session_answer("User updated", &session))
}

async fn lookup(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    JsonBody(body): JsonBody<LookupBody>,
) -> Result<Json<Value>, ApiError> {
    if body.ids.len() > 100 {
        return Err(ApiError::bad_request("at most 100 ids per lookup"));
    }
    let ids = body
        .ids
        .iter()
        .map(|s| ObjectId::parse_str(s).map_err(|_| ApiError::bad_request("ids must be user ids")))
        .collect::<Result<Vec<_>, _>>()?;
    let me = caller(&claims)?;
    Ok(Json(
        json!({ "users": profiles::many(&state, &me, &ids).await? }),
    ))
}

/// Ends every session of the caller: their tokens stop working everywhere
/// and their sockets are closed.
async fn logout(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<Value>, ApiError> {
    login::logout(&state, &claims.sub).await?;
    Ok(Json(json!({ "message": "Logged out" })))
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({ "keys": state.config.jwks })),
    )
}
