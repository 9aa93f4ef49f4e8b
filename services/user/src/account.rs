//! A user's own account as a whole: deleting it and exporting what the
//! deployment holds of them.

use futures::{Stream, StreamExt, TryStreamExt, stream};
use mongodb::bson::oid::ObjectId;
use parley_common::events::UserDeleted;
use serde_json::json;

use crate::error::DomainError;
use crate::profiles;
use crate::state::AppState;
use crate::store::UserView;

/// Deletes the caller's account. First every token of theirs is revoked
/// (their sockets close, nothing more can be written in their name), then
/// the deletion is announced (a confirmed, durable event: the chat service
/// turns their messages into tombstones, removes their images and forgets
/// them), then their document goes. When the event cannot be confirmed
/// the account stays (503): the user logs in again and retries.
pub async fn delete(state: &AppState, user: &ObjectId) -> Result<(), DomainError> {
    profiles::me(state, user).await?;
    let sub = user.to_hex();
    state
        .revocations
        .revoke(&sub, state.config.signer.lifetime())
        .await?;
    state
        .amqp
        .publish(UserDeleted {
            user_id: sub.clone(),
        })
        .await
        .map_err(|error| DomainError::Unavailable {
            dependency: "rabbitmq",
            detail: error.to_string(),
        })?;
    state.users.delete(user).await?;
    metrics::counter!("user_accounts_deleted_total").increment(1);
    Ok(())
}

/// The caller's data as one JSON document, streamed: `{exportedAt,
/// profile, chats: [{_id, members, createdAt}], messages: [{_id, chatId,
/// seq, text, image?, sentAt, editedAt?}]}` with every message they sent
/// and did not delete. An error midway ends the body early (the JSON is
/// then incomplete, never silently short).
pub async fn export(
    state: &AppState,
    user: &ObjectId,
) -> Result<impl Stream<Item = std::io::Result<String>> + use<>, DomainError> {
    let me = profiles::me(state, user).await?;
    let chats = state.users.chats_of(user).await?;
    let messages = state.users.messages_by(user).await?;
    let chats: Vec<serde_json::Value> = chats
        .iter()
        .map(|c| {
            json!({
                "_id": c.id.to_hex(),
                "members": c.members.iter().map(|m| m.to_hex()).collect::<Vec<_>>(),
                "createdAt": c.created_at.try_to_rfc3339_string().unwrap_or_default(),
            })
        })
        .collect();
    let head = format!(
        "{{\"exportedAt\":{},\"profile\":{},\"chats\":{},\"messages\":[",
        json!(chrono::Utc::now().to_rfc3339()),
        serde_json::to_string(&UserView::from(&me)).map_err(internal)?,
        serde_json::Value::Array(chats),
    );
    let body = messages
        .map_err(std::io::Error::other)
        .enumerate()
        .map(|(i, message)| {
            let message = message?;
            let mut view = json!({
                "_id": message.id.to_hex(),
                "chatId": message.chat_id.to_hex(),
                "seq": message.seq,
                "text": message.text,
                "sentAt": message.sent_at.try_to_rfc3339_string().unwrap_or_default(),
            });
            if let Some(image) = &message.image {
                view["image"] = json!({
                    "mediaId": image.media_id.to_hex(),
                    "contentType": image.content_type,
                    "size": image.size,
                });
            }
            if let Some(at) = message
                .edited_at
                .and_then(|t| t.try_to_rfc3339_string().ok())
            {
                view["editedAt"] = json!(at);
            }
            Ok(if i == 0 {
                view.to_string()
            } else {
                format!(",{view}")
            })
        });
    metrics::counter!("user_exports_total").increment(1);
    Ok(stream::once(async move { Ok(head) })
        .chain(body)
        .chain(stream::once(async { Ok("]}".to_owned()) })))
}

fn internal(error: serde_json::Error) -> DomainError {
    DomainError::Internal(error.to_string())
}
