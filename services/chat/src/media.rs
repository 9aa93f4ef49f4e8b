//! Images: stored within each uploader's storage quota, shown only to the
//! members of their chat, and streamed out chunk by chunk.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use parley_common::api_error::ApiError;

use crate::domain;
use crate::model::ImageRef;
use crate::service;
use crate::state::AppState;
use crate::store::Appended;

/// The message of an upload refused for the uploader's storage quota (413).
pub const QUOTA_EXCEEDED: &str = "storage quota exceeded";

/// The one answer for an image the caller may not see, whether it is
/// missing or in a chat they are not in: nobody learns which ids exist.
fn no_such_media() -> ApiError {
    metrics::counter!("chat_media_downloads_refused_total").increment(1);
    ApiError::not_found("no such media")
}

/// Stores an image sent by `uploader`, counted against their quota first:
/// over it, 413 [`QUOTA_EXCEEDED`] and nothing is stored; when storing
/// fails, the bytes are given back.
pub async fn store(
    state: &AppState,
    uploader: &ObjectId,
    chat: &ObjectId,
    content_type: &str,
    bytes: &[u8],
) -> Result<ImageRef, ApiError> {
    let size = bytes.len() as u64;
    let reserved = state
        .store
        .reserve_media_bytes(uploader, size, state.config.media_quota_bytes)
        .await?;
    if !reserved {
        metrics::counter!("chat_media_quota_refused_total").increment(1);
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, QUOTA_EXCEEDED));
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
async fn release(state: &AppState, uploader: &ObjectId, size: u64) {
    if let Err(error) = state.store.release_media_bytes(uploader, size).await {
        metrics::counter!("chat_media_quota_release_failed_total").increment(1);
        tracing::warn!(%error, user = %uploader, size, "image bytes not given back to the quota");
    }
}

/// Removes a stored image that no message holds, and gives its bytes back.
async fn discard(state: &AppState, uploader: &ObjectId, image: &ImageRef) {
    match state.store.delete_media(&image.media_id).await {
        Ok(_) => release(state, uploader, u64::try_from(image.size).unwrap_or(0)).await,
        Err(error) => {
            tracing::warn!(%error, media_id = %image.media_id, "unused image not removed; its bytes stay counted");
        }
    }
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

/// `GET /api/v1/media/{id}`: reads the file document only, checks that
/// `me` is a member of its chat, and only then opens the chunks and
/// streams them (`Content-Length` from the file document). An error
/// mid-stream ends the response early, and is logged and counted.
pub async fn download(
    state: &AppState,
    me: &ObjectId,
    media_id: &str,
) -> Result<Response, ApiError> {
    let id = domain::parse_id("mediaId", media_id)?;
    let file = state
        .store
        .media_file(&id)
        .await?
        .ok_or_else(no_such_media)?;
    match service::member_chat(state, &file.chat, me).await {
        Ok(_) => {}
        // Not a member, or the chat is gone: the answer for a missing id.
        Err(error) if error.status.is_client_error() => return Err(no_such_media()),
        Err(error) => return Err(error),
    }
    let chunks = state.store.media_chunks(&file).await?;
    metrics::counter!("chat_media_downloads_total").increment(1);
    let body = Body::from_stream(
        chunks
            .inspect_ok(|chunk| {
                metrics::counter!("chat_media_download_bytes_total").increment(chunk.len() as u64);
            })
            .inspect_err(move |error| {
                metrics::counter!("chat_media_download_errors_total").increment(1);
                tracing::warn!(%error, media_id = %id, "image download broken off");
            }),
    );
    let file_name = domain::media_file_name(&id, &file.content_type);
    Ok((
        [
            (CONTENT_TYPE, file.content_type),
            (CONTENT_LENGTH, file.length.to_string()),
            (CACHE_CONTROL, "private, max-age=86400".to_owned()),
            // Shown, never run: a file opened on its own is a sandboxed
            // document that may load nothing.
            (
                CONTENT_DISPOSITION,
                format!("inline; filename=\"{file_name}\""),
            ),
            (
                CONTENT_SECURITY_POLICY,
                "default-src 'none'; img-src 'self'; sandbox; frame-ancestors 'none'".to_owned(),
            ),
        ],
        body,
    )
        .into_response())
}
