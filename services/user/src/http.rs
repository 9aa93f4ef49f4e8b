//! REST routes (prefix `/api/v1`) and the public key set.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mongodb::bson::oid::ObjectId;
use parley_common::amqp::Amqp;
use parley_common::api_error::ApiError;
use parley_common::auth::Authenticated;
use parley_common::events::{OtpRequested, UserUpdated};
use parley_common::revocation::Revocations;
use parley_common::token::{Claims, TokenVerifier};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::codes::Codes;
use crate::config::Config;
use crate::domain::{self, CodeHasher};
use crate::error::DomainError;
use crate::sessions::sign;
use crate::store::{PublicView, UserView, Users};

/// Shared handles; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<Config>,
    /// Users.
    pub users: Users,
    /// Codes and limits.
    pub codes: Codes,
    /// Keyed code hashing.
    pub hasher: CodeHasher,
    /// Events.
    pub amqp: Amqp,
    /// Token generations (logout).
    pub revocations: Revocations,
}

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
        .route("/api/v1/me", get(me))
        .route("/api/v1/user/all", get(all_users))
        .route("/api/v1/user/{id}", get(one_user))
        .route("/api/v1/update/user", post(update_user))
        .route("/api/v1/users/lookup", post(lookup))
        .route("/.well-known/jwks.json", get(jwks))
        .merge(crate::sessions::routes())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A JSON string field, or a 400 naming it.
fn string_field<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::bad_request(format!("{field} is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a string"))),
    }
}

fn object(body: Result<Json<Value>, JsonRejection>) -> Result<Value, ApiError> {
    let Json(body) = body?;
    if body.is_object() {
        Ok(body)
    } else {
        Err(ApiError::bad_request("expected a JSON object"))
    }
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
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = object(body)?;
    let email = domain::normalize_email(string_field(&body, "email")?)?;
    let group = client_group(&state, peer, &headers);
    let admission = state
        .codes
        .admit(&domain::inbox_key(&email), &group)
        .await?;
    let limits = state.codes.limits();
    let code = domain::generate_code(limits.digits).map_err(ApiError::internal)?;
    let login_id = domain::generate_login_id().map_err(ApiError::internal)?;
    let login_key = state.hasher.login_key(&login_id);
    let hash = state.hasher.hash(&email, &code);
    state.codes.store(&email, &login_key, &hash).await?;
    let ttl =
        chrono::Duration::from_std(limits.otp_ttl).unwrap_or_else(|_| chrono::Duration::minutes(5));
    let event = OtpRequested {
        email: email.clone(),
        code,
        expires_at: chrono::Utc::now() + ttl,
    };
    if let Err(error) = state.amqp.publish(event).await {
        // Nothing half-done: a code nobody can receive must not stay usable.
        if let Err(cleanup) = state
            .codes
            .withdraw(&email, &login_key, &hash, &admission)
            .await
        {
            tracing::error!(error = %cleanup, "could not withdraw an unsent code");
        }
        return Err(ApiError::unavailable("rabbitmq", error));
    }
    metrics::counter!("user_codes_issued_total").increment(1);
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
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = object(body)?;
    let email = domain::normalize_email(string_field(&body, "email")?)?;
    let digits = state.codes.limits().digits;
    let otp = match body.get("otp") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) => domain::code_from_number(n, digits),
            None => n.to_string(),
        },
        _ => string_field(&body, "otp")?.to_owned(),
    };
    let otp = domain::validate_code(&otp, digits)?;
    let login_key = match body.get("loginId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(state.hasher.login_key(domain::validate_login_id(id)?)),
        Some(_) => return Err(ApiError::bad_request("loginId must be a string")),
    };
    let group = client_group(&state, peer, &headers);
    let attempt = match state
        .codes
        .reserve(&email, login_key.as_deref(), &group)
        .await
    {
        Err(DomainError::Burned) => {
            metrics::counter!("user_codes_burned_total").increment(1);
            return Err(DomainError::Burned.into());
        }
        other => other?,
    };
    if !state.hasher.matches(&email, otp, &attempt.hash) {
        metrics::counter!("user_code_failures_total").increment(1);
        return Err(DomainError::WrongCode.into());
    }
    if !state.codes.settle(&email, &attempt).await? {
        return Err(DomainError::WrongCode.into());
    }
    let user = state
        .users
        .find_or_create(&email, &domain::default_name(&email))
        .await?;
    let token = sign(&state, &user.id.to_hex(), &user.email, &user.name).await?;
    Ok(Json(
        json!({ "message": "Logged in", "user": UserView::from(&user), "token": token }),
    ))
}

fn caller(claims: &Claims) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(&claims.sub)
        .map_err(|_| ApiError::unauthorized("token subject is not a user id"))
}

async fn me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<UserView>, ApiError> {
    let id = caller(&claims)?;
    let user = state
        .users
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
    Ok(Json(UserView::from(&user)))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Other users as `caller` may see them: no emails, `lastSeenAt` only for
/// those who share a chat with the caller.
async fn public_views(
    state: &AppState,
    caller: &ObjectId,
    users: &[crate::store::UserDoc],
) -> Result<Vec<PublicView>, ApiError> {
    let ids: Vec<ObjectId> = users.iter().map(|u| u.id).collect();
    let partners = state.users.chat_partners(caller, &ids).await?;
    Ok(users
        .iter()
        .map(|u| PublicView::of(u, partners.contains(&u.id)))
        .collect())
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
    let users = state.users.page(cursor, limit).await?;
    let views = public_views(&state, &me, &users).await?;
    let mut response = Json(views).into_response();
    if users.len() as i64 == limit
        && let Some(last) = users.last()
        && let Ok(value) = HeaderValue::from_str(&last.id.to_hex())
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
    let user = state
        .users
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    let mut views = public_views(&state, &me, std::slice::from_ref(&user)).await?;
    views
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::internal("no view of a found user"))
}

async fn update_user(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = object(body)?;
    let name = domain::validate_name(string_field(&body, "name")?)?;
    let id = caller(&claims)?;
    let user = state
        .users
        .rename(&id, &name)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
    let event = UserUpdated {
        user_id: user.id.to_hex(),
        name: user.name.clone(),
        email: user.email.clone(),
    };
    if let Err(error) = state.amqp.publish(event).await {
        // The rename is stored; caches expire on their own.
        metrics::counter!("user_event_publish_failed_total").increment(1);
        tracing::error!(%error, user = %user.id, "user.updated.v1 not published");
    }
    let token = sign(&state, &user.id.to_hex(), &user.email, &user.name).await?;
    Ok(Json(
        json!({ "message": "User updated", "user": UserView::from(&user), "token": token }),
    ))
}

async fn lookup(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = object(body)?;
    let ids = body
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("ids must be an array of user ids"))?;
    if ids.len() > 100 {
        return Err(ApiError::bad_request("at most 100 ids per lookup"));
    }
    let ids = ids
        .iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| ObjectId::parse_str(s).ok())
                .ok_or_else(|| ApiError::bad_request("ids must be user ids"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let me = caller(&claims)?;
    let users = state.users.many(&ids).await?;
    Ok(Json(
        json!({ "users": public_views(&state, &me, &users).await? }),
    ))
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({ "keys": state.config.jwks })),
    )
}
