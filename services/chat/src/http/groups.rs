//! The group routes (`/api/v1/group…`): they translate requests into
//! [`crate::groups`] calls and answer with the group as it is after.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use parley_common::api_error::{ApiError, JsonBody};
use parley_common::auth::Authenticated;
use serde::Deserialize;
use serde_json::json;

use crate::domain;
use crate::error::ChatError;
use crate::groups::rules::Action;
use crate::groups::{self, GroupView};
use crate::model::{ChatDoc, Role};
use crate::service::caller;
use crate::state::AppState;

/// The group routes (merged into the REST router, which adds its limits).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/group", post(create))
        .route("/api/v1/group/{chat_id}", get(show).patch(rename))
        .route("/api/v1/group/{chat_id}/members", post(add))
        .route(
            "/api/v1/group/{chat_id}/members/{user_id}",
            axum::routing::delete(remove),
        )
        .route(
            "/api/v1/group/{chat_id}/members/{user_id}/role",
            put(set_role),
        )
        .route("/api/v1/group/{chat_id}/owner", post(transfer))
        .route("/api/v1/group/{chat_id}/leave", post(leave))
}

fn answer(chat: &ChatDoc) -> Json<serde_json::Value> {
    Json(json!({ "chatId": chat.id.to_hex(), "group": GroupView::from(chat) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    name: String,
    member_ids: Vec<String>,
}

/// `POST /group` `{name, memberIds}`: 201 with the group.
async fn create(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    let chat = groups::create(&state, &claims, &body.name, &body.member_ids).await?;
    let Json(mut value) = answer(&chat);
    value["message"] = json!("Group created");
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// `GET /group/{chatId}`: members, roles and watermarks.
async fn show(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&claims)?;
    let chat_id = domain::parse_id("chatId", &chat_id)?;
    Ok(answer(&groups::member_group(&state, &chat_id, &me).await?))
}

async fn act(
    state: &AppState,
    claims: &parley_common::token::Claims,
    chat_id: &str,
    action: Action,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(answer(&groups::act(state, claims, chat_id, action).await?))
}

#[derive(Deserialize)]
struct RenameBody {
    name: String,
}

/// `PATCH /group/{chatId}` `{name}` (owner and admins).
async fn rename(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
    JsonBody(body): JsonBody<RenameBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(&state, &claims, &chat_id, Action::Rename(body.name)).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddBody {
    user_ids: Vec<String>,
}

/// `POST /group/{chatId}/members` `{userIds}` (owner and admins).
async fn add(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
    JsonBody(body): JsonBody<AddBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let users = groups::parse_ids("userIds", &body.user_ids)?;
    if users.is_empty() {
        return Err(ChatError::invalid("userIds must name at least one user").into());
    }
    act(&state, &claims, &chat_id, Action::Add(users)).await
}

/// `DELETE /group/{chatId}/members/{userId}` (owner, or admins for members).
async fn remove(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path((chat_id, user_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = domain::parse_id("userId", &user_id)?;
    act(&state, &claims, &chat_id, Action::Remove(user)).await
}

#[derive(Deserialize)]
struct RoleBody {
    role: String,
}

/// `PUT /group/{chatId}/members/{userId}/role` `{role: "admin"|"member"}` (owner).
async fn set_role(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path((chat_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<RoleBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = domain::parse_id("userId", &user_id)?;
    let role = match body.role.as_str() {
        "admin" => Role::Admin,
        "member" => Role::Member,
        _ => return Err(ChatError::invalid("role must be admin or member").into()),
    };
    act(&state, &claims, &chat_id, Action::SetRole(user, role)).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerBody {
    user_id: String,
}

/// `POST /group/{chatId}/owner` `{userId}`: hands the group over (owner).
async fn transfer(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
    JsonBody(body): JsonBody<OwnerBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = domain::parse_id("userId", &body.user_id)?;
    act(&state, &claims, &chat_id, Action::TransferOwnership(user)).await
}

/// `POST /group/{chatId}/leave`: the caller leaves (anyone).
async fn leave(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(chat_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = groups::act(&state, &claims, &chat_id, Action::Leave).await?;
    Ok(Json(
        json!({ "message": "You left the group", "chatId": chat.id.to_hex() }),
    ))
}
