//! Images against a real chat replica with Redis, RabbitMQ and the
//! MongoDB-protocol server: members-only streaming downloads and the
//! per-user storage quota.

mod support;

use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use parley_testkit::{ServiceProcess, assert_config_error};
use reqwest::Method;
use serde_json::{Value, json};
use support::{BIN, Stack, User, call, create_group, open_chat, send_text};

/// A PNG signature and `len - 8` bytes that differ all along (xorshift),
/// so a chunk out of place or repeated would show.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut x = seed | 1;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

async fn upload(
    service: &ServiceProcess,
    user: &User,
    chat: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let form = reqwest::multipart::Form::new()
        .text("chatId", chat.to_owned())
        .part(
            "image",
            reqwest::multipart::Part::bytes(bytes).file_name("x.png"),
        );
    let response = service
        .http()
        .post(service.url("/api/v1/message"))
        .bearer_auth(&user.token)
        .multipart(form)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

fn media_url(sent: &Value) -> String {
    sent["message"]["image"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn counter(service: &ServiceProcess, name: &str) -> anyhow::Result<f64> {
    Ok(service.metric_named(name).await?.unwrap_or(0.0))
}

/// Images `user` has stored (GridFS file documents).
async fn files_of(stack: &Stack, user: &User) -> anyhow::Result<u64> {
    Ok(stack
        .db
        .collection::<Document>("media.files")
        .count_documents(doc! {"metadata.uploader": user.id})
        .await?)
}

/// The bytes counted against `user`'s quota.
async fn usage_of(stack: &Stack, user: &User) -> anyhow::Result<i64> {
    let usage = stack
        .db
        .collection::<Document>("mediaUsage")
        .find_one(doc! {"_id": user.id})
        .await?;
    Ok(usage.and_then(|d| d.get_i64("bytes").ok()).unwrap_or(0))
}

/// A member downloads an image near the size limit byte for byte, with
/// its length announced; a non-member gets exactly the answer for an id
/// that does not exist, and not one chunk is read for them.
#[tokio::test]
async fn members_stream_images_and_others_cannot_tell_them_from_missing() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let eve = stack.user("eve").await?;
    let chat = open_chat(&a, &alice, &bob).await?;
    // Eve has chats of her own; just not this one.
    open_chat(&a, &eve, &alice).await?;

    // 5 MiB is the default limit: this spans 21 GridFS chunks.
    let big = image(5 * 1024 * 1024 - 4096, 7);
    let (status, sent) = upload(&a, &alice, &chat, big.clone()).await?;
    assert_eq!(status, 201, "{sent}");
    let url = media_url(&sent);

    let opened = counter(&a, "chat_media_downloads_total").await?;
    let read = counter(&a, "chat_media_download_bytes_total").await?;
    let refused = counter(&a, "chat_media_downloads_refused_total").await?;

    let (eve_status, eve_body) = call(&a, Method::GET, &url, Some(&eve.token), None).await?;
    let missing = format!(
        "/api/v1/media/{}",
        mongodb::bson::oid::ObjectId::new().to_hex()
    );
    let (missing_status, missing_body) =
        call(&a, Method::GET, &missing, Some(&eve.token), None).await?;
    assert_eq!(
        (eve_status, &eve_body),
        (404, &json!({"message": "no such media"}))
    );
    assert_eq!(
        (missing_status, &missing_body),
        (eve_status, &eve_body),
        "no existence oracle"
    );
    let (status, body) = call(
        &a,
        Method::GET,
        "/api/v1/media/nope",
        Some(&eve.token),
        None,
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].is_string(), "{body}");
    let (status, body) = call(&a, Method::GET, &url, None, None).await?;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].is_string(), "{body}");
    // Refused before a single chunk was opened or read.
    assert_eq!(counter(&a, "chat_media_downloads_total").await?, opened);
    assert_eq!(counter(&a, "chat_media_download_bytes_total").await?, read);
    assert_eq!(
        counter(&a, "chat_media_downloads_refused_total").await?,
        refused + 2.0
    );

    let response = a
        .http()
        .get(a.url(&url))
        .bearer_auth(&bob.token)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(
        response.headers()["content-length"],
        big.len().to_string().as_str()
    );
    assert!(
        response.headers().get("transfer-encoding").is_none(),
        "a known length, not chunked"
    );
    let got = response.bytes().await?;
    assert!(got.as_ref() == big.as_slice(), "the bytes differ");
    assert_eq!(
        counter(&a, "chat_media_downloads_total").await?,
        opened + 1.0
    );
    assert_eq!(
        counter(&a, "chat_media_download_bytes_total").await?,
        read + big.len() as f64
    );
    Ok(())
}

/// A chunk lost in storage breaks that one download off after the chunks
/// before it; the replica goes on serving.
#[tokio::test]
async fn a_broken_image_ends_its_download_early_and_nothing_else() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let broken = image(1024 * 1024, 11);
    let (status, sent) = upload(&a, &alice, &chat, broken.clone()).await?;
    assert_eq!(status, 201, "{sent}");
    let broken_url = media_url(&sent);
    let whole = image(300_000, 13);
    let (status, sent) = upload(&a, &alice, &chat, whole.clone()).await?;
    assert_eq!(status, 201, "{sent}");
    let whole_url = media_url(&sent);

    let media_id = broken_url.rsplit('/').next().unwrap_or_default();
    let files_id = mongodb::bson::oid::ObjectId::parse_str(media_id)?;
    let deleted = stack
        .db
        .collection::<Document>("media.chunks")
        .delete_one(doc! {"files_id": files_id, "n": 2})
        .await?;
    assert_eq!(deleted.deleted_count, 1);

    let errors = counter(&a, "chat_media_download_errors_total").await?;
    let response = a
        .http()
        .get(a.url(&broken_url))
        .bearer_auth(&bob.token)
        .send()
        .await?;
    // The status went out before the gap was found; the body cannot complete.
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err(), "a short body must fail");
    assert_eq!(
        counter(&a, "chat_media_download_errors_total").await?,
        errors + 1.0
    );

    let (status, _) = call(&a, Method::GET, "/healthz", None, None).await?;
    assert_eq!(status, 200);
    let response = a
        .http()
        .get(a.url(&whole_url))
        .bearer_auth(&bob.token)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await?.as_ref() == whole.as_slice());
    Ok(())
}

fn quota_stack(stack: Stack, quota: u64) -> Stack {
    stack
        .with("PARLEY_MEDIA_QUOTA_BYTES", quota.to_string())
        .with("PARLEY_UPLOADS_PER_HOUR", "1000")
        .with("PARLEY_REST_SENDS_PER_MINUTE", "1000")
}

/// Uploads fit until the user's stored bytes reach the quota; the next is
/// refused (413, JSON, counted) and leaves nothing behind. The quota is
/// the uploader's own.
#[tokio::test]
async fn uploads_stop_at_the_quota_and_a_refused_one_stores_nothing() -> anyhow::Result<()> {
    const SIZE: usize = 10_000;
    let stack = quota_stack(Stack::new().await?, 3 * SIZE as u64);
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;

    for seed in 0..3 {
        let (status, sent) = upload(&a, &alice, &chat, image(SIZE, seed)).await?;
        assert_eq!(status, 201, "upload {seed}: {sent}");
    }
    assert_eq!(usage_of(&stack, &alice).await?, 3 * SIZE as i64);
    let (status, body) = upload(&a, &alice, &chat, image(SIZE, 3)).await?;
    assert_eq!(
        (status, body),
        (413, json!({"message": "storage quota exceeded"}))
    );
    // Even the smallest image is over now.
    let (status, _) = upload(&a, &alice, &chat, image(16, 4)).await?;
    assert_eq!(status, 413);
    assert_eq!(counter(&a, "chat_media_quota_refused_total").await?, 2.0);
    assert_eq!(files_of(&stack, &alice).await?, 3);
    assert_eq!(usage_of(&stack, &alice).await?, 3 * SIZE as i64);
    let images = stack
        .db
        .collection::<Document>("messages")
        .count_documents(doc! {"sender": alice.id, "messageType": "image"})
        .await?;
    assert_eq!(images, 3);

    // Text still goes; Bob's quota is his own.
    let (status, body) = send_text(&a, &alice, &chat, "no more pictures").await?;
    assert_eq!(status, 201, "{body}");
    let (status, sent) = upload(&a, &bob, &chat, image(SIZE, 5)).await?;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(usage_of(&stack, &bob).await?, SIZE as i64);
    Ok(())
}

/// Parallel uploads of one user, from the very first: exactly as many as
/// fit are stored, never one more.
#[tokio::test]
async fn parallel_uploads_never_overshoot_the_quota() -> anyhow::Result<()> {
    const SIZE: usize = 10_000;
    let stack = quota_stack(Stack::new().await?, 5 * SIZE as u64);
    let a = stack.replica().await?;
    let (carol, _dan, chat) = stack.pair_on(&a, "carol", "dan").await?;

    let attempts = (0..12).map(|seed| upload(&a, &carol, &chat, image(SIZE, seed)));
    let mut statuses: Vec<u16> = futures::future::try_join_all(attempts)
        .await?
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [[201; 5].as_slice(), &[413; 7]].concat());
    assert_eq!(files_of(&stack, &carol).await?, 5);
    assert_eq!(usage_of(&stack, &carol).await?, 5 * SIZE as i64);
    Ok(())
}

/// Parallel sends of one image under one `clientMessageId` keep one image
/// and count it once: a send that stored its image and then found the key
/// taken removes the image and gives its bytes back.
#[tokio::test]
async fn a_repeated_send_keeps_one_image_and_counts_it_once() -> anyhow::Result<()> {
    const SIZE: usize = 10_000;
    let stack = quota_stack(Stack::new().await?, 10 * SIZE as u64);
    let a = stack.replica().await?;
    let (alice, _bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let send = || {
        let form = reqwest::multipart::Form::new()
            .text("chatId", chat.clone())
            .text("clientMessageId", "photo-1")
            .part(
                "image",
                reqwest::multipart::Part::bytes(image(SIZE, 1)).file_name("x.png"),
            );
        a.http()
            .post(a.url("/api/v1/message"))
            .bearer_auth(&alice.token)
            .multipart(form)
            .send()
    };
    let mut statuses: Vec<u16> = futures::future::try_join_all((0..6).map(|_| send()))
        .await?
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 201]);
    assert_eq!(files_of(&stack, &alice).await?, 1);
    assert_eq!(usage_of(&stack, &alice).await?, SIZE as i64);
    Ok(())
}

/// An upload MongoDB refuses after its bytes were counted (here: a unique
/// index on file names, so a second image in the chat cannot be filed)
/// gives them back and leaves no chunks.
#[tokio::test]
async fn a_failed_upload_uses_no_quota() -> anyhow::Result<()> {
    const SIZE: usize = 10_000;
    let stack = quota_stack(Stack::new().await?, 3 * SIZE as u64);
    let a = stack.replica().await?;
    let (alice, _bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let (status, sent) = upload(&a, &alice, &chat, image(SIZE, 1)).await?;
    assert_eq!(status, 201, "{sent}");

    let files = stack.db.collection::<Document>("media.files");
    let index = files
        .create_index(
            IndexModel::builder()
                .keys(doc! {"filename": 1})
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await?
        .index_name;
    for seed in 2..4 {
        let (status, body) = upload(&a, &alice, &chat, image(SIZE, seed)).await?;
        assert!(status >= 500, "{status} {body}");
        assert!(body["message"].is_string(), "{body}");
    }
    assert_eq!(usage_of(&stack, &alice).await?, SIZE as i64);
    assert_eq!(files_of(&stack, &alice).await?, 1);
    let chunks = stack
        .db
        .collection::<Document>("media.chunks")
        .count_documents(doc! {})
        .await?;
    assert_eq!(chunks, 1, "no chunks of failed uploads are left");

    // Storage works again: the whole quota minus the one image is there.
    files.drop_index(index).await?;
    for seed in 4..6 {
        let (status, sent) = upload(&a, &alice, &chat, image(SIZE, seed)).await?;
        assert_eq!(status, 201, "{sent}");
    }
    let (status, _) = upload(&a, &alice, &chat, image(SIZE, 6)).await?;
    assert_eq!(status, 413);
    assert_eq!(usage_of(&stack, &alice).await?, 3 * SIZE as i64);
    Ok(())
}

#[tokio::test]
async fn the_quota_setting_names_its_variable() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    for value in ["-1", "1GiB", "9223372036854775808"] {
        let mut env = stack.env();
        env.push(("PARLEY_MEDIA_QUOTA_BYTES".into(), value.into()));
        assert_config_error(BIN, &env, "PARLEY_MEDIA_QUOTA_BYTES").await?;
    }
    Ok(())
}

/// A message with an image deleted for everyone takes its image with it:
/// the download is gone for both members, the file and its chunks are
/// removed, and the bytes go back to the sender's quota.
#[tokio::test]
async fn an_image_deleted_for_everyone_is_removed_and_its_bytes_given_back() -> anyhow::Result<()> {
    const SIZE: usize = 300 * 1024;
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let chat = open_chat(&a, &alice, &bob).await?;
    let (status, sent) = upload(&a, &alice, &chat, image(SIZE, 3)).await?;
    assert_eq!(status, 201, "{sent}");
    let url = media_url(&sent);
    assert_eq!(usage_of(&stack, &alice).await?, SIZE as i64);
    assert_eq!(files_of(&stack, &alice).await?, 1);
    let id = sent["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let (status, gone) = call(
        &a,
        Method::DELETE,
        &format!("/api/v1/message/{chat}/{id}"),
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{gone}");
    assert!(gone["message"].get("image").is_none(), "{gone}");
    for user in [&alice, &bob] {
        let (status, _) = call(&a, Method::GET, &url, Some(&user.token), None).await?;
        assert_eq!(status, 404);
    }
    assert_eq!(files_of(&stack, &alice).await?, 0);
    let chunks = stack
        .db
        .collection::<Document>("media.chunks")
        .count_documents(doc! {})
        .await?;
    assert_eq!(chunks, 0);
    assert_eq!(usage_of(&stack, &alice).await?, 0);
    Ok(())
}

/// A group member added late gets no image sent before they joined (the
/// same 404 as for a stranger), and every image sent after.
#[tokio::test]
async fn a_late_group_member_gets_no_image_from_before_they_joined() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let owner = stack.user("owner").await?;
    let m1 = stack.user("m1").await?;
    let m2 = stack.user("m2").await?;
    let late = stack.user("late").await?;
    let group = create_group(&a, &owner, &[&m1, &m2], "Photos").await?;
    let (status, before) = upload(&a, &m1, &group, image(4096, 3)).await?;
    assert_eq!(status, 201, "{before}");
    let (status, body) = call(
        &a,
        Method::POST,
        &format!("/api/v1/group/{group}/members"),
        Some(&owner.token),
        Some(json!({"userIds": [late.id.to_hex()]})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, after) = upload(&a, &m1, &group, image(4096, 4)).await?;
    assert_eq!(status, 201, "{after}");
    let fetch = |user: &User, sent: &Value| {
        let request = a
            .http()
            .get(a.url(&media_url(sent)))
            .bearer_auth(&user.token);
        async move { anyhow::Ok(request.send().await?.status().as_u16()) }
    };
    assert_eq!(fetch(&m2, &before).await?, 200);
    assert_eq!(fetch(&late, &before).await?, 404, "from before they joined");
    assert_eq!(fetch(&late, &after).await?, 200);
    Ok(())
}
