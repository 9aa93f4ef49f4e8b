//! Who may read and write a chat: membership, checked in one place.

use mongodb::bson::oid::ObjectId;

use crate::error::ChatError;
use crate::model::ChatDoc;
use crate::store::Store;

/// The chat, when `user` is a member: not found when unknown, forbidden
/// when not a member.
pub async fn member_chat(
    store: &Store,
    chat_id: &ObjectId,
    user: &ObjectId,
) -> Result<ChatDoc, ChatError> {
    let chat = store
        .chat(chat_id)
        .await?
        .ok_or(ChatError::NotFound("no such chat"))?;
    if !chat.has_member(user) {
        return Err(ChatError::Forbidden("you are not a member of this chat"));
    }
    Ok(chat)
}

/// Pure: why a member may not write in `chat`: they blocked the other
/// member, or were blocked (the block the answer names is the caller's own
/// only).
pub fn blocked_error(chat: &ChatDoc, me: &ObjectId) -> ChatError {
    if chat.blocked_by.contains(me) {
        ChatError::Forbidden("you blocked this user: unblock them to write in this chat")
    } else if !chat.blocked_by.is_empty() {
        ChatError::Forbidden("you cannot write in this chat")
    } else {
        // A block lifted between the write and this read.
        ChatError::Conflict("the chat changed meanwhile: try again")
    }
}
