//! Per-user limits on REST sends and uploads, against a real chat replica
//! with Redis, RabbitMQ and the MongoDB-protocol server.

mod support;

use reqwest::Method;
use serde_json::json;
use support::{Stack, call, send_text};

fn png() -> Vec<u8> {
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    bytes.extend_from_slice(&[0u8; 64]);
    bytes
}

/// One user flooding `POST /message` is refused after the per-minute
/// budget; uploads have a budget of their own; others are not affected.
#[tokio::test]
async fn attack_one_user_cannot_flood_sends_or_uploads() -> anyhow::Result<()> {
    let stack = Stack::new()
        .await?
        .with("PARLEY_REST_SENDS_PER_MINUTE", "8")
        .with("PARLEY_UPLOADS_PER_HOUR", "2");
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;

    let upload = |token: String| {
        let form = reqwest::multipart::Form::new()
            .text("chatId", chat.clone())
            .part(
                "image",
                reqwest::multipart::Part::bytes(png()).file_name("x.png"),
            );
        a.http()
            .post(a.url("/api/v1/message"))
            .bearer_auth(token)
            .multipart(form)
            .send()
    };
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let response = upload(alice.token.clone()).await?;
        uploads.push(response.status().as_u16());
    }
    assert_eq!(uploads, [201, 201, 429, 429], "uploads per hour");

    let mut sends = Vec::new();
    for i in 0..12 {
        let (status, body) = call(
            &a,
            Method::POST,
            "/api/v1/message",
            Some(&alice.token),
            Some(json!({"chatId": chat, "text": format!("flood {i}")})),
        )
        .await?;
        if status == 429 {
            assert!(body["message"].is_string(), "{body}");
        }
        sends.push(status);
    }
    // Two of the 8 a minute went to the uploads; a refused upload costs nothing.
    let accepted = sends.iter().filter(|s| **s == 201).count();
    assert_eq!(accepted, 6, "sends per minute: {sends:?}");
    assert!(sends.iter().all(|s| *s == 201 || *s == 429), "{sends:?}");

    // The limit is per user.
    let (status, body) = send_text(&a, &bob, &chat, "still here").await?;
    assert_eq!(status, 201, "{body}");
    Ok(())
}
