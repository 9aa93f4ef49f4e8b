//! Muting a chat (issue 16 item 6): a member who muted a chat is left out
//! of the `chat.message_created.v1` recipients the mail service notifies,
//! and sees the chat as muted. A real chat replica, RabbitMQ, Redis and
//! the MongoDB-protocol server.

mod support;

use futures::StreamExt;
use lapin::options::BasicAckOptions;
use parley_common::events::{Envelope, Event, MessageCreated};
use reqwest::Method;
use serde_json::json;
use support::{Stack, T, call, send_text};

#[tokio::test]
async fn a_muted_chat_notifies_nobody_who_muted_it() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (_conn, channel) = parley_testkit::events::channel(&stack.ns.amqp_url()).await?;
    let mut events = parley_testkit::events::tap(&channel, "", &[MessageCreated::TYPE]).await?;
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let carol = stack.user("carol").await?;
    let mut recipients_of_next = async |text: &str| -> anyhow::Result<Vec<String>> {
        let (status, body) = send_text(&a, &bob, &chat, text).await?;
        anyhow::ensure!(status == 201, "{status} {body}");
        let delivery = tokio::time::timeout(T, events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no event"))??;
        delivery.ack(BasicAckOptions::default()).await?;
        let event: Envelope<MessageCreated> = serde_json::from_slice(&delivery.data)?;
        Ok(event.data.recipient_ids)
    };
    assert_eq!(recipients_of_next("one").await?, vec![alice.id.to_hex()]);

    let path = format!("/api/v1/chat/{chat}/mute");
    let (status, body) = call(&a, Method::POST, &path, Some(&alice.token), None).await?;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"message": "Chat muted", "chatId": chat, "muted": true})
        )
    );
    let (_, list) = call(
        &a,
        Method::GET,
        "/api/v1/chat/all",
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(list["chats"][0]["chat"]["muted"], true, "{list}");
    let (_, list) = call(&a, Method::GET, "/api/v1/chat/all", Some(&bob.token), None).await?;
    assert_eq!(
        list["chats"][0]["chat"]["muted"], false,
        "muting is Alice's own"
    );
    assert_eq!(
        recipients_of_next("two").await?,
        Vec::<String>::new(),
        "nobody to notify"
    );

    let (status, _) = call(&a, Method::DELETE, &path, Some(&alice.token), None).await?;
    assert_eq!(status, 200);
    assert_eq!(recipients_of_next("three").await?, vec![alice.id.to_hex()]);

    // Only members; ids are checked.
    let (status, body) = call(&a, Method::POST, &path, Some(&carol.token), None).await?;
    assert_eq!(
        (status, body),
        (403, json!({"message": "you are not a member of this chat"}))
    );
    let (status, body) = call(
        &a,
        Method::POST,
        "/api/v1/chat/nope/mute",
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    Ok(())
}
