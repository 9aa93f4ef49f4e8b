//! The deployment's message retention against a real chat replica, Redis
//! and the MongoDB-protocol server: messages past the period go, with
//! their images and the previews that showed them; newer ones stay.

mod support;

use std::time::Duration;

use mongodb::bson::{DateTime, Document, doc, oid::ObjectId};
use parley_testkit::{assert_config_error, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use support::{BIN, Stack, User, call, open_chat, send_text};

/// A small PNG-looking image (the service sniffs the signature only).
fn png() -> Vec<u8> {
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    bytes.extend((0..4096_u32).map(|i| (i * 7 % 251) as u8));
    bytes
}

async fn send(
    replica: &parley_testkit::ServiceProcess,
    user: &User,
    chat: &str,
    text: &str,
) -> anyhow::Result<String> {
    let (status, body) = send_text(replica, user, chat, text).await?;
    anyhow::ensure!(status == 201, "send: {status} {body}");
    Ok(body["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn messages_past_the_retention_period_go_with_their_images() -> anyhow::Result<()> {
    let stack = Stack::new()
        .await?
        .with("PARLEY_MESSAGE_RETENTION_DAYS", "1")
        .with("PARLEY_RETENTION_SWEEP_SECS", "1");
    let a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let carol = stack.user("carol").await?;
    let chat = open_chat(&a, &alice, &bob).await?;
    let quiet_chat = open_chat(&a, &alice, &carol).await?;

    let old = send(&a, &alice, &chat, "from last week").await?;
    let form = reqwest::multipart::Form::new()
        .text("chatId", chat.clone())
        .part(
            "image",
            reqwest::multipart::Part::bytes(png()).file_name("x.png"),
        );
    let sent: Value = a
        .http()
        .post(a.url("/api/v1/message"))
        .bearer_auth(&alice.token)
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let old_image = sent["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let image_url = sent["message"]["image"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fresh = send(&a, &bob, &chat, "today").await?;
    let (status, reply) = call(
        &a,
        Method::POST,
        "/api/v1/message",
        Some(&bob.token),
        Some(json!({"chatId": chat, "text": "about last week", "replyTo": old})),
    )
    .await?;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["message"]["replyTo"]["preview"], "from last week");
    let reply = reply["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let lonely = send(&a, &carol, &quiet_chat, "anyone?").await?;

    // Back-date three of them (and the preview of the chat whose latest
    // message is among them) by two days.
    let two_days_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 2 * 86_400_000);
    let messages = stack.db.collection::<Document>("messages");
    let ids: Vec<ObjectId> = [&old, &old_image, &lonely]
        .iter()
        .map(ObjectId::parse_str)
        .collect::<Result<_, _>>()?;
    messages
        .update_many(
            doc! {"_id": {"$in": &ids}},
            doc! {"$set": {"sentAt": two_days_ago}},
        )
        .await?;
    stack
        .db
        .collection::<Document>("chats")
        .update_one(
            doc! {"_id": ObjectId::parse_str(&quiet_chat)?},
            doc! {"$set": {"latestMessage.sentAt": two_days_ago}},
        )
        .await?;

    let messages_probe = messages.clone();
    wait_until("old messages deleted", Duration::from_secs(30), || {
        let messages = messages_probe.clone();
        let ids = ids.clone();
        async move {
            messages
                .count_documents(doc! {"_id": {"$in": ids}})
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await?;

    let (_, history) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        Some(&bob.token),
        None,
    )
    .await?;
    let left: Vec<&str> = history["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(left, vec![fresh.as_str(), reply.as_str()], "{history}");
    assert_eq!(
        history["messages"][1]["replyTo"]["preview"], "",
        "no words of an expired message stay in quotes: {history}"
    );
    assert_eq!(history["messages"][1]["replyTo"]["deleted"], true);
    let (status, _) = call(&a, Method::GET, &image_url, Some(&bob.token), None).await?;
    assert_eq!(status, 404, "the image went with its message");
    let files = stack
        .db
        .collection::<Document>("media.files")
        .count_documents(doc! {})
        .await?;
    assert_eq!(files, 0);
    wait_until("image bytes given back", Duration::from_secs(10), || {
        let usage = stack.db.collection::<Document>("mediaUsage");
        let alice = alice.id;
        async move {
            usage
                .find_one(doc! {"_id": alice})
                .await
                .ok()
                .flatten()
                .and_then(|d| d.get_i64("bytes").ok())
                == Some(0)
        }
    })
    .await?;
    wait_until("the stale preview cleared", Duration::from_secs(10), || {
        let chats = stack.db.collection::<Document>("chats");
        let id = ObjectId::parse_str(&quiet_chat);
        async move {
            let Ok(id) = id else { return false };
            chats
                .find_one(doc! {"_id": id})
                .await
                .ok()
                .flatten()
                .is_some_and(|c| matches!(c.get("latestMessage"), Some(mongodb::bson::Bson::Null)))
        }
    })
    .await?;
    // The other chat's preview is its fresh message.
    let (_, list) = call(&a, Method::GET, "/api/v1/chat/all", Some(&bob.token), None).await?;
    assert_eq!(
        list["chats"][0]["chat"]["latestMessage"]["text"],
        "about last week"
    );
    assert_eq!(
        a.metric_named("chat_messages_expired_total").await?,
        Some(3.0)
    );
    Ok(())
}

#[tokio::test]
async fn the_retention_settings_name_their_variables() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    for (var, value) in [
        ("PARLEY_MESSAGE_RETENTION_DAYS", "-1"),
        ("PARLEY_MESSAGE_RETENTION_DAYS", "a week"),
        ("PARLEY_MESSAGE_RETENTION_DAYS", "36501"),
        ("PARLEY_RETENTION_SWEEP_SECS", "0"),
    ] {
        let mut env = stack.env();
        env.push((var.into(), value.into()));
        assert_config_error(BIN, &env, var).await?;
    }
    Ok(())
}
