//! What a user may see of others: public views, with `lastSeenAt` only for
//! those who share an accepted, unblocked chat with them.

use mongodb::bson::oid::ObjectId;

use crate::error::DomainError;
use crate::state::AppState;
use crate::store::{PublicView, UserDoc};

/// The caller's own account.
pub async fn me(state: &AppState, caller: &ObjectId) -> Result<UserDoc, DomainError> {
    state
        .users
        .get(caller)
        .await?
        .ok_or(DomainError::UnknownCaller)
}

/// `users` as `caller` may see them.
pub async fn public_views(
    state: &AppState,
    caller: &ObjectId,
    users: &[UserDoc],
) -> Result<Vec<PublicView>, DomainError> {
    let ids: Vec<ObjectId> = users.iter().map(|u| u.id).collect();
    let partners = state.users.chat_partners(caller, &ids).await?;
    Ok(users
        .iter()
        .map(|u| PublicView::of(u, partners.contains(&u.id)))
        .collect())
}

/// User `id` as `caller` may see them; `None` when there is no such user.
pub async fn one(
    state: &AppState,
    caller: &ObjectId,
    id: &ObjectId,
) -> Result<Option<PublicView>, DomainError> {
    let Some(user) = state.users.get(id).await? else {
        return Ok(None);
    };
    Ok(public_views(state, caller, std::slice::from_ref(&user))
        .await?
        .pop())
}

/// A page of at most `limit` users after `cursor`, as `caller` may see
/// them, and the cursor of the next page when this one is full.
pub async fn page(
    state: &AppState,
    caller: &ObjectId,
    cursor: Option<ObjectId>,
    limit: i64,
) -> Result<(Vec<PublicView>, Option<ObjectId>), DomainError> {
    let users = state.users.page(cursor, limit).await?;
    let next = (users.len() as i64 == limit)
        .then(|| users.last().map(|u| u.id))
        .flatten();
    Ok((public_views(state, caller, &users).await?, next))
}

/// The users among `ids` that exist, as `caller` may see them.
pub async fn many(
    state: &AppState,
    caller: &ObjectId,
    ids: &[ObjectId],
) -> Result<Vec<PublicView>, DomainError> {
    let users = state.users.many(ids).await?;
    public_views(state, caller, &users).await
}
