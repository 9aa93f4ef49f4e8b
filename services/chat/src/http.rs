//! REST routes (prefix `/api/v1`), all behind a bearer token. Handlers
//! only translate: requests into service calls, [`ChatError`] into statuses.

mod groups;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{
    DefaultBodyLimit, FromRef, FromRequest, Multipart, Path, Query, Request, State,
};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use mongodb::bson::oid::ObjectId;
use parley_common::api_error::{ApiError, JsonBody};
use parley_common::auth::{Authenticated, bearer};
use parley_common::revocation::Revocations;
use parley_common::token::TokenVerifier;
use serde::Deserialize;
use serde_json::json;

use crate::changes::{self, rules, rules::Change};
use crate::domain;
use crate::error::ChatError;
use crate::service::{self, SendInput, caller};
use crate::state::AppState;

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.config.verifier.clone()
    }
}

impl FromRef<AppState> for Revocations {
    fn from_ref(state: &AppState) -> Self {
        state.revocations.clone()
    }
}

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        let retry_after = error.retry_after_secs();
        let status = match &error {
            ChatError::Invalid(_) => StatusCode::BAD_REQUEST,
            ChatError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ChatError::NotFound(_) => StatusCode::NOT_FOUND,
            ChatError::Forbidden(_) => StatusCode::FORBIDDEN,
            ChatError::Conflict(_) => StatusCode::CONFLICT,
            ChatError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ChatError::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ChatError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ChatError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ChatError::Unavailable { dependency, detail } => {
                return ApiError::unavailable(dependency, detail);
            }
            ChatError::Internal(detail) => return ApiError::internal(detail),
        };
        ApiError {
            retry_after,
            ..ApiError::new(status, error.public_message())
        }
    }
}

/// The REST routes.
pub fn routes(state: AppState) -> Router {
    let upload_limit = state.config.media_max_bytes + 64 * 1024;
    Router::new()
        .route("/api/v1/chat/new", post(new_chat))
        .route("/api/v1/chat/all", get(all_chats))
        .route("/api/v1/chat/{chat_id}/accept", post(accept_chat))
        .route(
            "/api/v1/chat/{chat_id}/mute",
            post(mute_chat).delete(unmute_chat),
        )
        .route("/api/v1/block", get(list_blocks))
        .route(
            "/api/v1/block/{user_id}",
            post(block_user).delete(unblock_user),
        )
        .route(
            "/api/v1/message",
            post(send_message).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/v1/message/{chat_id}", get(read_messages))
        .route("/api/v1/message/{chat_id}/changes", get(message_changes))
        .route(
            "/api/v1/message/{chat_id}/{message_id}",
            patch(edit_message).delete(delete_message),
        )
        .route(
            "/api/v1/message/{chat_id}/{message_id}/reactions/{emoji}",
            put(add_reaction).delete(remove_reaction),
        )
        .route("/api/v1/media/{media_id}", get(media))
        .merge(groups::routes())
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

fn token_of(headers: &HeaderMap) -> String {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .unwrap_or_default()
        .to_owned()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewChat {
    other_user_id: String,
}

async fn new_chat(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    JsonBody(body): JsonBody<NewChat>,
) -> Result<Response, ApiError> {
    let me = caller(&claims)?;
    let other = domain::parse_id("otherUserId", &body.other_user_id)?;
    let opened = service::open_chat(&state, &me, &other).await?;
    let (status, message) = if opened.created {
        (StatusCode::CREATED, "New chat created")
    } else {
        (StatusCode::OK, "Chat already exists")
    };
    Ok((
        status,
        Json(json!({ "message": message, "chatId": opened.chat.id.to_hex() })),
    )
        .into_response())
}

/// `POST /chat/{chatId}/accept`: the caller accepts a chat someone opened
/// with them (writing in it does too); once both have, they see each
/// other's presence.
async fn accept_chat(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&claims)?;
    let chat_id = domain::parse_id("chatId", &chat_id)?;
    let chat = service::accept(&state, &chat_id, &me).await?;
    Ok(Json(
        json!({ "message": "Chat accepted", "chatId": chat.id.to_hex() }),
    ))
}

/// `POST /chat/{chatId}/mute`: no more mail notifications about the chat
/// for the caller (idempotent).
async fn mute_chat(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    mute(&state, &claims, &chat_id, true).await
}

/// `DELETE /chat/{chatId}/mute`: notifications again (idempotent).
async fn unmute_chat(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    mute(&state, &claims, &chat_id, false).await
}

async fn mute(
    state: &AppState,
    claims: &parley_common::token::Claims,
    chat_id: &str,
    on: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(claims)?;
    let chat_id = domain::parse_id("chatId", chat_id)?;
    let chat = service::set_mute(state, &chat_id, &me, on).await?;
    let message = if on { "Chat muted" } else { "Chat unmuted" };
    Ok(Json(
        json!({ "message": message, "chatId": chat.id.to_hex(), "muted": on }),
    ))
}

/// The user id in a block route: valid, and not the caller.
fn block_target(me: &ObjectId, raw: &str) -> Result<ObjectId, ChatError> {
    let other = domain::parse_id("userId", raw)?;
    if other == *me {
        return Err(ChatError::invalid("cannot block yourself"));
    }
    Ok(other)
}

/// `POST /block/{userId}`: the user can no longer open a chat with the
/// caller, write to them, or see their presence (nor the caller theirs).
async fn block_user(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let me = caller(&claims)?;
    let other = block_target(&me, &user_id)?;
    if !state.store.user_exists(&other).await? {
        return Err(ApiError::not_found("no such user"));
    }
    let created = service::set_block(&state, &me, &other, true).await?;
    let (status, message) = if created {
        (StatusCode::CREATED, "User blocked")
    } else {
        (StatusCode::OK, "User already blocked")
    };
    Ok((
        status,
        Json(json!({ "message": message, "userId": other.to_hex() })),
    )
        .into_response())
}

/// `DELETE /block/{userId}`: lifts the caller's block (idempotent).
async fn unblock_user(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&claims)?;
    let other = block_target(&me, &user_id)?;
    let removed = service::set_block(&state, &me, &other, false).await?;
    let message = if removed {
        "User unblocked"
    } else {
        "User was not blocked"
    };
    Ok(Json(
        json!({ "message": message, "userId": other.to_hex() }),
    ))
}

/// `GET /block`: whom the caller blocked, newest first.
async fn list_blocks(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&claims)?;
    let blocks = state.store.blocks_of(&me).await?;
    let items: Vec<serde_json::Value> = blocks
        .iter()
        .map(|b| {
            json!({
                "userId": b.blocked.to_hex(),
                "blockedAt": b.at.try_to_rfc3339_string().unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "blocked": items })))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn all_chats(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(claims): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let me = caller(&claims)?;
    let page = service::list_chats(
        &state,
        &me,
        query.cursor.as_deref(),
        query.limit,
        &token_of(&headers),
    )
    .await?;
    Ok(Json(
        json!({ "chats": page.items, "nextCursor": page.next_cursor }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    chat_id: String,
    text: Option<String>,
    client_message_id: Option<String>,
    reply_to: Option<String>,
}

async fn send_message(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    request: Request,
) -> Result<Response, ApiError> {
    let is_multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let me = caller(&claims)?;
    match state
        .config
        .rest_limits
        .take(&state.redis, &me, is_multipart)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(exceeded)) => {
            metrics::counter!("chat_rest_sends_refused_total").increment(1);
            return Err(ApiError::too_many(
                exceeded.to_string(),
                exceeded.retry_after_secs(),
            ));
        }
        // A limit is protection, not a dependency: without Redis, let it through.
        Err(error) => tracing::warn!(%error, "per-user send limit unavailable"),
    }
    let input = if is_multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        read_multipart(multipart).await?
    } else {
        let JsonBody(body) = JsonBody::<SendBody>::from_request(request, &state).await?;
        SendInput {
            chat_id: body.chat_id,
            text: body.text,
            client_message_id: body.client_message_id,
            image: None,
            reply_to: body.reply_to,
        }
    };
    let (message, created) = match service::send(&state, &claims, input).await {
        Ok(sent) => sent,
        Err(error) => {
            if error.is_server_side()
                && let Err(refund) = state
                    .config
                    .rest_limits
                    .refund(&state.redis, &me, is_multipart)
                    .await
            {
                tracing::warn!(error = %refund, "send budget not refunded");
            }
            return Err(error.into());
        }
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let sender = message.sender.clone();
    Ok((
        status,
        Json(json!({ "message": message, "sender": sender })),
    )
        .into_response())
}

async fn read_multipart(mut multipart: Multipart) -> Result<SendInput, ApiError> {
    let field_error =
        |e: axum::extract::multipart::MultipartError| ApiError::new(e.status(), e.body_text());
    let mut input = SendInput {
        chat_id: String::new(),
        text: None,
        client_message_id: None,
        image: None,
        reply_to: None,
    };
    while let Some(field) = multipart.next_field().await.map_err(field_error)? {
        match field.name().unwrap_or_default() {
            "chatId" => input.chat_id = field.text().await.map_err(field_error)?,
            "text" => input.text = Some(field.text().await.map_err(field_error)?),
            "clientMessageId" => {
                input.client_message_id = Some(field.text().await.map_err(field_error)?)
            }
            "image" => input.image = Some(field.bytes().await.map_err(field_error)?.to_vec()),
            "replyTo" => input.reply_to = Some(field.text().await.map_err(field_error)?),
            other => return Err(ApiError::bad_request(format!("unexpected field {other:?}"))),
        }
    }
    if input.chat_id.is_empty() {
        return Err(ApiError::bad_request("chatId is required"));
    }
    Ok(input)
}

#[derive(Deserialize)]
struct HistoryQuery {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

async fn read_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let window = domain::window(query.before, query.after)?;
    let limit = domain::page_size(query.limit)?;
    let me = caller(&claims)?;
    let (chat, messages) = service::read(&state, &claims, &chat_id, window, limit).await?;
    let user = service::partner_profile(&state, &chat, &me, &token_of(&headers)).await;
    Ok(Json(json!({ "messages": messages, "user": user })))
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: Option<i64>,
    after: Option<String>,
    limit: Option<i64>,
}

/// `GET /message/{chatId}/changes?since=N`: what changed in the chat after
/// change number N (new, edited, deleted, reacted-to and hidden messages).
async fn message_changes(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<changes::ChangePage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (cursor, limit) = changes::feed_query(query.since, query.after.as_deref(), query.limit)?;
    Ok(Json(
        changes::since(&state, &claims, &chat_id, cursor, limit).await?,
    ))
}

#[derive(Deserialize)]
struct EditBody {
    text: String,
}

/// `PATCH /message/{chatId}/{messageId}` `{text}`: the sender edits.
async fn edit_message(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path((chat_id, message_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<EditBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let message = changes::change(
        &state,
        &claims,
        &chat_id,
        &message_id,
        Change::Edit(body.text),
    )
    .await?;
    Ok(Json(json!({ "message": message })))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(rename = "for")]
    scope: Option<String>,
}

/// `DELETE /message/{chatId}/{messageId}?for=everyone|me`.
async fn delete_message(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path((chat_id, message_id)): Path<(String, String)>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let change = rules::delete_scope(query.scope.as_deref())?;
    let message = changes::change(&state, &claims, &chat_id, &message_id, change).await?;
    Ok(Json(json!({ "message": message })))
}

async fn react(
    state: &AppState,
    claims: &parley_common::token::Claims,
    (chat_id, message_id, emoji): (String, String, String),
    on: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let emoji = rules::validate_emoji(&emoji)?;
    let message = changes::change(
        state,
        claims,
        &chat_id,
        &message_id,
        Change::React { emoji, on },
    )
    .await?;
    Ok(Json(json!({ "message": message })))
}

/// `PUT /message/{chatId}/{messageId}/reactions/{emoji}`: the caller reacts.
async fn add_reaction(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    react(&state, &claims, path, true).await
}

/// `DELETE /message/{chatId}/{messageId}/reactions/{emoji}`: the caller takes it back.
async fn remove_reaction(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    react(&state, &claims, path, false).await
}

/// `GET /api/v1/media/{id}`: the image, streamed, for a member of its
/// chat (`Content-Length` from the file document; an error mid-stream ends
/// the response early).
async fn media(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(media_id): Path<String>,
) -> Result<Response, ApiError> {
    let me = caller(&claims)?;
    let download = crate::media::open(&state, &me, &media_id).await?;
    Ok((
        [
            (CONTENT_TYPE, download.file.content_type),
            (CONTENT_LENGTH, download.file.length.to_string()),
            (CACHE_CONTROL, "private, max-age=86400".to_owned()),
            // Shown, never run: a file opened on its own is a sandboxed
            // document that may load nothing.
            (
                CONTENT_DISPOSITION,
                format!("inline; filename=\"{}\"", download.file_name),
            ),
            (
                CONTENT_SECURITY_POLICY,
                "default-src 'none'; img-src 'self'; sandbox; frame-ancestors 'none'".to_owned(),
            ),
        ],
        Body::from_stream(download.chunks),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_map_to_statuses_once() {
        let cases = [
            (ChatError::invalid("x"), 400),
            (ChatError::Unauthenticated("x"), 401),
            (ChatError::Forbidden("x"), 403),
            (ChatError::NotFound("x"), 404),
            (ChatError::Conflict("x"), 409),
            (ChatError::TooLarge("x".into()), 413),
            (ChatError::UnsupportedType("x"), 415),
            (
                ChatError::RateLimited {
                    message: "x".into(),
                    retry_after_secs: 4,
                },
                429,
            ),
            (
                ChatError::Busy {
                    message: "x",
                    retry_after_secs: 1,
                },
                503,
            ),
            (ChatError::unavailable("mongodb", "down"), 503),
            (ChatError::internal("bug"), 500),
        ];
        for (error, status) in cases {
            let answer = ApiError::from(error.clone());
            assert_eq!(answer.status.as_u16(), status, "{error:?}");
            assert_eq!(answer.retry_after, error.retry_after_secs(), "{error:?}");
            assert_eq!(answer.message, error.public_message(), "{error:?}");
        }
    }
}
