//! Images: stored within each uploader's storage quota, shown only to the
//! members of their chat, and streamed out chunk by chunk.

use futures::{Stream, TryStreamExt};
use mongodb::bson::oid::ObjectId;

use crate::domain;
use crate::error::ChatError;
use crate::membership::member_chat;
use crate::model::ImageRef;
use crate::state::AppState;
use crate::store::{Appended, MediaFile};

/// The message of an upload refused for the uploader's storage quota.
pub const QUOTA_EXCEEDED: &str = "storage quota exceeded";

/// The one answer for an image the caller may not see, whether it is
/// missing or in a chat they are not in: nobody learns which ids exist.
fn no_such_media() -> ChatError {
    metrics::counter!("chat_media_downloads_refused_total").increment(1);
    ChatError::NotFound("no such media")
}

/// Stores an image sent by `uploader`, counted against their quota first:
/// over it, [`ChatError::TooLarge`] ([`QUOTA_EXCEEDED`]) and nothing is stored; when storing
/// fails, the bytes are given back.
pub async fn store(
    state: &AppState,
    uploader: &ObjectId,
    chat: &ObjectId,
    content_type: &str,
    bytes: &[u8],
) -> Result<ImageRef, ChatError> {
    let size = bytes.len() as u64;
    let reserved = state
        .store
        .reserve_media_bytes(uploader, size, state.config.media_quota_bytes)
        .await?;
    if !reserved {
        metrics::counter!("chat_media_quota_refused_total").increment(1);
        return Err(ChatError::TooLarge(QUOTA_EXCEEDED.to_owned()));
    }
    match state
        .store
        .put_media(chat, uploader, content_type, bytes)
        .await
    {
        Ok(image) => {
            metrics::counter!("chat_media_stored_bytes_total").increment(size);
            Ok(image)
        }
        Err(error) => {
            release(state, uploader, size).await;
            Err(error)
        }
    }
}

/// Gives bytes back to `uploader`'s quota; a failure leaves them counted
/// (the user loses that much room) and is logged and counted.
pub async fn release(state: &AppState, uploader: &ObjectId, size: u64) {
    if let Err(error) = state.store.release_media_bytes(uploader, size).await {
        metrics::counter!("chat_media_quota_release_failed_total").increment(1);
        tracing::warn!(%error, user = %uploader, size, "image bytes not given back to the quota");
    }
}

/// Removes a stored image that no message holds (any more), and gives its
/// bytes back.
pub async fn discard(state: &AppState, uploader: &ObjectId, image: &ImageRef) {
    if let Err(error) = remove(state, uploader, image).await {
        tracing::warn!(%error, media_id = %image.media_id, "unused image not removed; its bytes stay counted");
    }
}

/// Removes a stored image and gives its bytes back to `uploader`'s quota
/// (only the caller that removed the file does: a file already gone gives
/// nothing back twice).
pub async fn remove(
    state: &AppState,
    uploader: &ObjectId,
    image: &ImageRef,
) -> Result<(), ChatError> {
    if state.store.delete_media(&image.media_id).await? {
        release(state, uploader, u64::try_from(image.size).unwrap_or(0)).await;
    }
    Ok(())
}

/// Called after a message carrying a freshly stored `image` was appended:
/// when no message was stored after all (the idempotency key was taken by
/// a parallel send, or the sender left the chat meanwhile), the image is
/// removed and its bytes given back. (When the append fails outright the
/// image is kept and stays counted: the message may have been written
/// before the error.)
pub async fn keep_if_sent(
    state: &AppState,
    uploader: &ObjectId,
    image: Option<&ImageRef>,
    appended: &Appended,
) {
    if let Some(image) = image
        && !matches!(appended, Appended::Created(..))
    {
        discard(state, uploader, image).await;
    }
}

/// An image's bytes, chunk by chunk.
pub type Chunks = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Vec<u8>>> + Send>>;

/// An image the caller may see: its file document and its bytes.
pub struct Download {
    /// The file document (type and length).
    pub file: MediaFile,
    /// The name it is served under: its id and the extension of its type.
    pub file_name: String,
    /// The bytes, chunk by chunk; an error mid-stream is logged and counted.
    pub chunks: Chunks,
}

/// Opens an image for `me`: reads the file document only, checks that
/// `me` is a member of its chat, and only then opens the chunks. Missing
/// and not allowed give the same [`ChatError::NotFound`].
pub async fn open(state: &AppState, me: &ObjectId, media_id: &str) -> Result<Download, ChatError> {
    let id = domain::parse_id("mediaId", media_id)?;
    let file = state
        .store
        .media_file(&id)
        .await?
        .ok_or_else(no_such_media)?;
    let chat = match member_chat(&state.store, &file.chat, me).await {
        Ok(chat) => chat,
        // Not a member, or the chat is gone: the answer for a missing id.
        Err(error) if !error.is_server_side() => return Err(no_such_media()),
        Err(error) => return Err(error),
    };
    // A group member who joined late sees no image from before.
    let floor = chat.visible_after(me);
    if floor > 0
        && state
            .store
            .media_seq(&file.chat, &id)
            .await?
            .is_none_or(|seq| seq <= floor)
    {
        return Err(no_such_media());
    }
    let chunks = state.store.media_chunks(&file).await?;
    metrics::counter!("chat_media_downloads_total").increment(1);
    let chunks = chunks
        .inspect_ok(|chunk| {
            metrics::counter!("chat_media_download_bytes_total").increment(chunk.len() as u64);
        })
        .inspect_err(move |error| {
            metrics::counter!("chat_media_download_errors_total").increment(1);
            tracing::warn!(%error, media_id = %id, "image download broken off");
        });
    Ok(Download {
        file_name: domain::media_file_name(&id, &file.content_type),
        file,
        chunks: Box::pin(chunks),
    })
}
