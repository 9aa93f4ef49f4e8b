//! REST routes (prefix `/api/v1`), all behind a bearer token.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mongodb::bson::DateTime;
use mongodb::bson::oid::ObjectId;
use parley_common::api_error::ApiError;
use parley_common::auth::{Authenticated, bearer};
use serde::Deserialize;
use serde_json::json;

use crate::domain;
use crate::model::{ChatView, Profile};
use crate::service::{self, SendInput, caller};
use crate::state::AppState;

/// The REST routes.
pub fn routes(state: AppState) -> Router {
    let upload_limit = state.config.media_max_bytes + 64 * 1024;
    Router::new()
        .route("/api/v1/chat/new", post(new_chat))
        .route("/api/v1/chat/all", get(all_chats))
        .route("/api/v1/chat/{chat_id}/accept", post(accept_chat))
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
        .route("/api/v1/media/{media_id}", get(media))
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
    body: Result<Json<NewChat>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let me = caller(&claims)?;
    let other = domain::parse_id("otherUserId", &body.other_user_id)?;
    if other == me {
        return Err(ApiError::bad_request("cannot open a chat with yourself"));
    }
    if !state.store.user_exists(&other).await? {
        return Err(ApiError::not_found("no such user"));
    }
    let blockers = state.store.blockers_between(&me, &other).await?;
    if blockers.contains(&me) {
        return Err(ApiError::forbidden(
            "you blocked this user: unblock them to open a chat",
        ));
    }
    if !blockers.is_empty() {
        // Blocked: the same answer as for nobody, so the block stays unsaid.
        return Err(ApiError::not_found("no such user"));
    }
    let (chat, created) = state.store.find_or_create_pair(&me, &other).await?;
    // Opening a chat someone else opened with you accepts it.
    if !created && !chat.accepted_by.contains(&me) {
        service::accept(&state, &chat.id, &me).await?;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let message = if created {
        "New chat created"
    } else {
        "Chat already exists"
    };
    Ok((
        status,
        Json(json!({ "message": message, "chatId": chat.id.to_hex() })),
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

/// The user id in a block route: valid, and not the caller.
fn block_target(me: &ObjectId, raw: &str) -> Result<ObjectId, ApiError> {
    let other = domain::parse_id("userId", raw)?;
    if other == *me {
        return Err(ApiError::bad_request("cannot block yourself"));
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

/// Pure: encodes a chat-list cursor.
pub fn encode_cursor(at: DateTime, id: &ObjectId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", at.timestamp_millis(), id.to_hex()))
}

/// Pure: decodes a chat-list cursor.
pub fn decode_cursor(raw: &str) -> Result<(DateTime, ObjectId), ApiError> {
    let bad = || ApiError::bad_request("cursor is not valid");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (millis, id) = text.split_once(':').ok_or_else(bad)?;
    let millis: i64 = millis.parse().map_err(|_| bad())?;
    let id = ObjectId::parse_str(id).map_err(|_| bad())?;
    Ok((DateTime::from_millis(millis), id))
}

async fn all_chats(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(claims): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let me = caller(&claims)?;
    let limit = domain::page_size(query.limit.or(Some(20)))?;
    let cursor = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let chats = state.store.chats_of(&me, cursor, limit).await?;
    let others: Vec<String> = chats
        .iter()
        .filter_map(|c| domain::other_member(&c.members, &me))
        .map(|id| id.to_hex())
        .collect();
    let profiles = state.profiles.get(&others, &token_of(&headers)).await;
    let ids: Vec<ObjectId> = chats.iter().map(|c| c.id).collect();
    let unseen_counts = state.store.unseen_counts(&ids, &me).await?;
    let mut items = Vec::with_capacity(chats.len());
    for chat in &chats {
        let unseen = unseen_counts.get(&chat.id).copied().unwrap_or(0);
        let other = domain::other_member(&chat.members, &me)
            .map(|id| id.to_hex())
            .unwrap_or_default();
        let user = profiles
            .get(&other)
            .cloned()
            .unwrap_or_else(|| Profile::placeholder(&other));
        items.push(json!({ "user": user, "chat": ChatView::new(chat, unseen) }));
    }
    let next_cursor = (chats.len() as i64 == limit)
        .then(|| chats.last().map(|c| encode_cursor(c.updated_at, &c.id)))
        .flatten();
    Ok(Json(json!({ "chats": items, "nextCursor": next_cursor })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    chat_id: String,
    text: Option<String>,
    client_message_id: Option<String>,
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
        let Json(body) = Json::<SendBody>::from_request(request, &state)
            .await
            .map_err(ApiError::from)?;
        SendInput {
            chat_id: body.chat_id,
            text: body.text,
            client_message_id: body.client_message_id,
            image: None,
        }
    };
    let (message, created) = match service::send(&state, &claims, input).await {
        Ok(sent) => sent,
        Err(error) => {
            if error.status.is_server_error()
                && let Err(refund) = state
                    .config
                    .rest_limits
                    .refund(&state.redis, &me, is_multipart)
                    .await
            {
                tracing::warn!(error = %refund, "send budget not refunded");
            }
            return Err(error);
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
    };
    while let Some(field) = multipart.next_field().await.map_err(field_error)? {
        match field.name().unwrap_or_default() {
            "chatId" => input.chat_id = field.text().await.map_err(field_error)?,
            "text" => input.text = Some(field.text().await.map_err(field_error)?),
            "clientMessageId" => {
                input.client_message_id = Some(field.text().await.map_err(field_error)?)
            }
            "image" => input.image = Some(field.bytes().await.map_err(field_error)?.to_vec()),
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
    let other = domain::other_member(&chat.members, &me)
        .map(|id| id.to_hex())
        .unwrap_or_default();
    let profiles = state
        .profiles
        .get(std::slice::from_ref(&other), &token_of(&headers))
        .await;
    let user = profiles
        .get(&other)
        .cloned()
        .unwrap_or_else(|| Profile::placeholder(&other));
    Ok(Json(json!({ "messages": messages, "user": user })))
}

async fn media(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(media_id): Path<String>,
) -> Result<Response, ApiError> {
    let me = caller(&claims)?;
    crate::media::download(&state, &me, &media_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let id = ObjectId::new();
        let at = DateTime::from_millis(1_700_000_000_123);
        assert_eq!(decode_cursor(&encode_cursor(at, &id)).unwrap(), (at, id));
        assert!(decode_cursor("!!!").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("12:nothex")).is_err());
    }
}
