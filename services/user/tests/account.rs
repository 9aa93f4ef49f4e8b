//! A user's own account (issue 16 item 5): `GET /api/v1/me/export` gives
//! exactly their data, and `DELETE /api/v1/me` removes the account: tokens
//! and sockets revoked, messages turned into tombstones, images removed,
//! chats still working for the others. The real user service and a real
//! chat replica, real Redis, RabbitMQ and MongoDB-protocol server, the
//! official Socket.IO client.

mod support;

use std::io::Write;

use mongodb::bson::{Document, doc, oid::ObjectId};
use parley_testkit::ServiceProcess;
use parley_testkit::socketio::{JsClient, Transport};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Stack, T, call, chat_replica, login, socket};

async fn send(
    chat_service: &ServiceProcess,
    token: &str,
    chat: &str,
    text: &str,
) -> anyhow::Result<Value> {
    let (status, body) = call(
        chat_service,
        Method::POST,
        "/api/v1/message",
        Some(token),
        Some(json!({"chatId": chat, "text": text})),
    )
    .await?;
    anyhow::ensure!(status == 201, "send: {status} {body}");
    Ok(body["message"].clone())
}

#[tokio::test]
async fn an_export_holds_exactly_the_users_data_and_a_deleted_account_leaves_tombstones()
-> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let user = stack.service().await?;
    let mut keys = tempfile::NamedTempFile::new()?;
    keys.write_all(stack.public_pem.as_bytes())?;
    let chat_service = chat_replica(&stack, &user, keys.path()).await?;
    let mut mailbox = stack.mailbox().await?;
    let (alice, alice_token) = login(&user, &mut mailbox, "alice@example.com").await?;
    let (bob, bob_token) = login(&user, &mut mailbox, "bob@example.com").await?;
    let (carol, carol_token) = login(&user, &mut mailbox, "carol@example.com").await?;
    let alice_id = alice["_id"].as_str().unwrap_or_default().to_owned();
    let bob_id = bob["_id"].as_str().unwrap_or_default().to_owned();
    let carol_id = carol["_id"].as_str().unwrap_or_default().to_owned();
    let open = |token: String, other: String| {
        let chat_service = &chat_service;
        async move {
            let (status, body) = call(
                chat_service,
                Method::POST,
                "/api/v1/chat/new",
                Some(&token),
                Some(json!({"otherUserId": other})),
            )
            .await?;
            anyhow::ensure!(status == 201 || status == 200, "{status} {body}");
            anyhow::Ok(body["chatId"].as_str().unwrap_or_default().to_owned())
        }
    };
    let with_bob = open(alice_token.clone(), bob_id.clone()).await?;
    let bob_and_carol = open(bob_token.clone(), carol_id.clone()).await?;
    let mine = send(&chat_service, &alice_token, &with_bob, "hi bob").await?;
    let also_mine = send(&chat_service, &alice_token, &with_bob, "it's alice").await?;
    let bobs = send(&chat_service, &bob_token, &with_bob, "hi alice").await?;
    send(
        &chat_service,
        &bob_token,
        &bob_and_carol,
        "not alice's business",
    )
    .await?;
    // Bob answers quoting Alice.
    let (_, quoted) = call(
        &chat_service,
        Method::POST,
        "/api/v1/message",
        Some(&bob_token),
        Some(json!({"chatId": with_bob, "text": "indeed", "replyTo": mine["_id"]})),
    )
    .await?;

    // The export: her profile, her chat, her two messages; nothing of Bob's
    // words or of the chat she is not in.
    let response = user
        .http()
        .get(user.url("/api/v1/me/export"))
        .bearer_auth(&alice_token)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("attachment")),
        "{:?}",
        response.headers()
    );
    let export: Value = response.json().await?;
    assert_eq!(export["profile"]["_id"], alice_id.as_str());
    assert_eq!(export["profile"]["email"], "alice@example.com");
    let chats: Vec<&str> = export["chats"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(chats, vec![with_bob.as_str()], "{export}");
    let texts: Vec<&str> = export["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, vec!["hi bob", "it's alice"], "{export}");
    assert_eq!(export["messages"][0]["_id"], mine["_id"]);
    let (status, _) = call(&user, Method::GET, "/api/v1/me/export", None, None).await?;
    assert_eq!(status, 401);

    // An image of hers, sent after the export.
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend(std::iter::repeat_n(7_u8, 2048));
    let form = reqwest::multipart::Form::new()
        .text("chatId", with_bob.clone())
        .part(
            "image",
            reqwest::multipart::Part::bytes(png).file_name("x.png"),
        );
    let image: Value = chat_service
        .http()
        .post(chat_service.url("/api/v1/message"))
        .bearer_auth(&alice_token)
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let image = image["message"].clone();
    assert_eq!(image["messageType"], "image", "{image}");

    // Bob blocks Alice: the chat is blocked until she is gone.
    let (status, _) = call(
        &chat_service,
        Method::POST,
        &format!("/api/v1/block/{alice_id}"),
        Some(&bob_token),
        None,
    )
    .await?;
    assert_eq!(status, 201);

    // Alice deletes her account while her socket is open.
    let mut alices_socket = socket(&chat_service, &alice_token).await?;
    let mut bobs_socket = socket(&chat_service, &bob_token).await?;
    let (status, body) = call(
        &user,
        Method::DELETE,
        "/api/v1/me",
        Some(&alice_token),
        None,
    )
    .await?;
    assert_eq!((status, body), (200, json!({"message": "Account deleted"})));
    let told = alices_socket.event("authError", T).await?;
    assert_eq!(told["code"], "token_revoked", "{told}");
    alices_socket
        .wait_for("disconnect", T, |l| l["type"] == "disconnect")
        .await?;
    let mut again = JsClient::start(
        &chat_service.url(""),
        Some(&alice_token),
        &[],
        Transport::WebSocket,
    )
    .await?;
    assert_eq!(
        again.refused(T).await?,
        "token revoked",
        "a deleted user cannot reconnect"
    );
    for (service, path) in [(&user, "/api/v1/me"), (&chat_service, "/api/v1/chat/all")] {
        let (status, _) = call(service, Method::GET, path, Some(&alice_token), None).await?;
        assert_eq!(status, 401, "{path}");
    }
    let (status, _) = call(
        &user,
        Method::GET,
        &format!("/api/v1/user/{alice_id}"),
        Some(&bob_token),
        None,
    )
    .await?;
    assert_eq!(status, 404, "the account is gone");

    // Bob's open client is told to catch up with the change feed.
    let hint = bobs_socket
        .event_where("chatChanged", T, |d| d["chatId"] == with_bob.as_str())
        .await?;
    assert!(hint["changeSeq"].as_i64().is_some_and(|s| s > 0), "{hint}");

    // Her messages become tombstones (the chat service hears the event).
    let db = stack.ns.mongo().await?;
    let messages = db.collection::<Document>("messages");
    let her_ids = [&mine, &also_mine, &image]
        .iter()
        .map(|m| ObjectId::parse_str(m["_id"].as_str().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()?;
    parley_testkit::wait_until("her messages are tombstones", T, || {
        let messages = messages.clone();
        let ids = her_ids.clone();
        async move {
            messages
                .count_documents(doc! {"_id": {"$in": ids}, "senderDeleted": true})
                .await
                .is_ok_and(|n| n == 3)
        }
    })
    .await?;
    let (status, history) = call(
        &chat_service,
        Method::GET,
        &format!("/api/v1/message/{with_bob}"),
        Some(&bob_token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{history}");
    let shown: Vec<(String, String, bool)> = history["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["_id"].as_str().unwrap_or_default().to_owned(),
                        m["text"].as_str().unwrap_or_default().to_owned(),
                        m["senderDeleted"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let id = |m: &Value| m["_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        shown,
        vec![
            (id(&mine), String::new(), true),
            (id(&also_mine), String::new(), true),
            (id(&bobs), "hi alice".to_owned(), false),
            (id(&quoted["message"]), "indeed".to_owned(), false),
            (id(&image), String::new(), true),
        ]
    );
    assert!(history["messages"][4].get("image").is_none(), "{history}");
    let files = db
        .collection::<Document>("media.files")
        .count_documents(doc! {})
        .await?;
    assert_eq!(files, 0, "her images are removed");
    let quote = &history["messages"][3]["replyTo"];
    assert_eq!(
        (&quote["deleted"], &quote["preview"]),
        (&json!(true), &json!("")),
        "no words of hers stay in quotes: {quote}"
    );
    // The chat keeps working for Bob (no block of a deleted account stays);
    // Carol's chat was never touched.
    let (_, blocks) = call(
        &chat_service,
        Method::GET,
        "/api/v1/block",
        Some(&bob_token),
        None,
    )
    .await?;
    assert_eq!(blocks["blocked"], json!([]), "{blocks}");
    send(&chat_service, &bob_token, &with_bob, "still here").await?;
    bobs_socket.event("newMessage", T).await?;
    let (_, carols) = call(
        &chat_service,
        Method::GET,
        &format!("/api/v1/message/{bob_and_carol}"),
        Some(&carol_token),
        None,
    )
    .await?;
    assert_eq!(carols["messages"][0]["text"], "not alice's business");

    // Deleting again: the token is revoked.
    let (status, _) = call(
        &user,
        Method::DELETE,
        "/api/v1/me",
        Some(&alice_token),
        None,
    )
    .await?;
    assert_eq!(status, 401);
    Ok(())
}

/// A deleted account leaves its groups: the oldest member inherits the
/// group it owned, the others hear it, and the group keeps working.
#[tokio::test]
async fn a_deleted_owner_leaves_the_group_to_the_oldest_member() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let user = stack.service().await?;
    let mut keys = tempfile::NamedTempFile::new()?;
    keys.write_all(stack.public_pem.as_bytes())?;
    let chat_service = chat_replica(&stack, &user, keys.path()).await?;
    let mut mailbox = stack.mailbox().await?;
    let (_, alice_token) = login(&user, &mut mailbox, "alice@example.com").await?;
    let (bob, bob_token) = login(&user, &mut mailbox, "bob@example.com").await?;
    let (carol, _) = login(&user, &mut mailbox, "carol@example.com").await?;
    let (status, body) = call(
        &chat_service,
        Method::POST,
        "/api/v1/group",
        Some(&alice_token),
        Some(json!({"name": "Book club", "memberIds": [bob["_id"], carol["_id"]]})),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let group = body["chatId"].as_str().unwrap_or_default().to_owned();
    let hers = send(&chat_service, &alice_token, &group, "welcome!").await?;
    let mut bobs_socket = socket(&chat_service, &bob_token).await?;

    let (status, _) = call(
        &user,
        Method::DELETE,
        "/api/v1/me",
        Some(&alice_token),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    let left = bobs_socket
        .event_where("groupUpdated", T, |d| d["action"] == "left")
        .await?;
    assert_eq!(left["users"], json!([bob["_id"]]), "bob inherits: {left}");
    let (status, shown) = call(
        &chat_service,
        Method::GET,
        &format!("/api/v1/group/{group}"),
        Some(&bob_token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{shown}");
    let roles: Vec<(Value, Value)> = shown["group"]["members"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|m| (m["userId"].clone(), m["role"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        roles,
        vec![
            (bob["_id"].clone(), json!("owner")),
            (carol["_id"].clone(), json!("member")),
        ]
    );
    send(&chat_service, &bob_token, &group, "carry on").await?;
    let (_, history) = call(
        &chat_service,
        Method::GET,
        &format!("/api/v1/message/{group}"),
        Some(&bob_token),
        None,
    )
    .await?;
    let welcome = history["messages"]
        .as_array()
        .and_then(|l| l.iter().find(|m| m["_id"] == hers["_id"]))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (welcome["text"].clone(), welcome["senderDeleted"].clone()),
        (json!(""), json!(true)),
        "{history}"
    );
    Ok(())
}
