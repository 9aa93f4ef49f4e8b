//! Logout (issue 14 item 8): `POST /api/v1/logout` revokes every token of
//! the user on every service, and closes their sockets on every chat
//! replica. The real user service and two real chat replicas, real Redis,
//! RabbitMQ and MongoDB-protocol server, the official Socket.IO client.

mod support;

use std::io::Write;
use std::time::Duration;

use parley_testkit::socketio::{JsClient, Transport};
use reqwest::Method;
use support::{Stack, T, call, chat_replica, login, socket};

#[tokio::test]
async fn logout_revokes_tokens_everywhere_and_closes_sockets() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let user = stack.service().await?;
    let mut keys = tempfile::NamedTempFile::new()?;
    keys.write_all(stack.public_pem.as_bytes())?;
    let (chat_a, chat_b) = tokio::try_join!(
        chat_replica(&stack, &user, keys.path()),
        chat_replica(&stack, &user, keys.path())
    )?;
    let mut mailbox = stack.mailbox().await?;
    let (_, token) = login(&user, &mut mailbox, "alice@example.com").await?;
    // A second device of the same user, and someone else.
    let (_, other_device) = login(&user, &mut mailbox, "alice@example.com").await?;
    let (_, bob) = login(&user, &mut mailbox, "bob@example.com").await?;

    let mut on_a = socket(&chat_a, &token).await?;
    let mut on_b = socket(&chat_b, &other_device).await?;
    let mut bobs = socket(&chat_b, &bob).await?;
    for (service, path) in [(&user, "/api/v1/me"), (&chat_a, "/api/v1/chat/all")] {
        let (status, body) = call(service, Method::GET, path, Some(&token), None).await?;
        assert_eq!(status, 200, "{path} before logout: {body}");
    }

    // Logging out needs a token, then ends every session of the user.
    let (status, _) = call(&user, Method::POST, "/api/v1/logout", None, None).await?;
    assert_eq!(status, 401);
    let (status, body) = call(&user, Method::POST, "/api/v1/logout", Some(&token), None).await?;
    assert_eq!(status, 200, "logout: {body}");

    // Both of Alice's sockets hear why and are closed, on both replicas.
    for (name, client) in [("replica A", &mut on_a), ("replica B", &mut on_b)] {
        let told = client.event("authError", T).await?;
        assert_eq!(told["code"], "token_revoked", "{name}: {told}");
        let closed = client
            .wait_for("disconnect", T, |l| l["type"] == "disconnect")
            .await?;
        assert_eq!(closed["reason"], "io server disconnect", "{name}");
    }
    // Bob is not affected.
    assert!(bobs.quiet("authError", Duration::from_millis(500)).await?);
    let (status, _) = call(&chat_b, Method::GET, "/api/v1/chat/all", Some(&bob), None).await?;
    assert_eq!(status, 200);

    // Every old token of Alice is refused by REST on both services and at
    // the handshake.
    for old in [&token, &other_device] {
        for (service, path) in [
            (&user, "/api/v1/me"),
            (&chat_a, "/api/v1/chat/all"),
            (&chat_b, "/api/v1/chat/all"),
        ] {
            let (status, body) = call(service, Method::GET, path, Some(old), None).await?;
            assert_eq!(status, 401, "{path} after logout: {body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("revoked"),
                "{body}"
            );
        }
        let mut again =
            JsClient::start(&chat_a.url(""), Some(old), &[], Transport::WebSocket).await?;
        assert_eq!(again.refused(T).await?, "token revoked");
    }

    // Logging in again gives a token that works everywhere.
    let (_, fresh) = login(&user, &mut mailbox, "alice@example.com").await?;
    for (service, path) in [(&user, "/api/v1/me"), (&chat_b, "/api/v1/chat/all")] {
        let (status, body) = call(service, Method::GET, path, Some(&fresh), None).await?;
        assert_eq!(status, 200, "{path} with a fresh token: {body}");
    }
    socket(&chat_a, &fresh).await?;
    Ok(())
}
