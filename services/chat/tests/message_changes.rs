//! A message's life after it was sent (edits, deletion for everyone and
//! for oneself, reactions, replies, the change feed) through REST and the
//! official JavaScript Socket.IO client, against two real chat replicas
//! sharing Redis, RabbitMQ and the MongoDB-protocol server.

mod support;

use std::time::Duration;

use parley_testkit::ServiceProcess;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Stack, T, User, call, connect, send_text};

/// The change feed of `chat` after `since`, as `user` sees it.
async fn changes(
    replica: &ServiceProcess,
    user: &User,
    chat: &str,
    since: i64,
) -> anyhow::Result<Value> {
    let (status, page) = call(
        replica,
        Method::GET,
        &format!("/api/v1/message/{chat}/changes?since={since}"),
        Some(&user.token),
        None,
    )
    .await?;
    anyhow::ensure!(status == 200, "changes: {status} {page}");
    Ok(page)
}

fn ids(page: &Value) -> Vec<String> {
    page["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["_id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `emoji` percent-encoded for a path segment.
fn path_emoji(emoji: &str) -> String {
    emoji.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Alice on replica A and Bob on replica B: edits, reactions, replies and
/// deletions reach both, the rules hold (only the sender edits or deletes
/// for everyone, a deleted message takes no edit or reaction), and the
/// change feed gives a reconnecting client exactly what changed.
#[tokio::test]
async fn edits_reactions_replies_and_deletions_reach_both_members_across_replicas()
-> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (a, b) = (stack.replica().await?, stack.replica().await?);
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let carol = stack.user("carol").await?;
    let mut al = connect(&a, &alice).await?;
    let mut bo = connect(&b, &bob).await?;

    let sent = al
        .emit_ack("sendMessage", json!({"chatId": chat, "text": "helo"}), T)
        .await?;
    let m1 = sent["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let first_change = sent["message"]["changeSeq"].as_i64().unwrap_or_default();
    assert!(
        first_change > 0,
        "a new message takes a change number: {sent}"
    );
    bo.event("newMessage", T).await?;

    // Alice fixes her typo over Socket.IO; Bob (on B) sees the edit.
    let edited = al
        .emit_ack(
            "editMessage",
            json!({"chatId": chat, "messageId": m1, "text": "hello"}),
            T,
        )
        .await?;
    assert_eq!(edited["message"]["text"], "hello", "{edited}");
    assert!(edited["message"]["editedAt"].is_string(), "{edited}");
    let seen = bo
        .event_where("messageEdited", T, |m| m["_id"] == m1.as_str())
        .await?;
    assert_eq!(seen["text"], "hello");

    // Only the sender edits; a stranger is not told the message exists.
    let path = format!("/api/v1/message/{chat}/{m1}");
    let (status, body) = call(
        &b,
        Method::PATCH,
        &path,
        Some(&bob.token),
        Some(json!({"text": "mine now"})),
    )
    .await?;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"message": "only the sender can edit a message"})
        )
    );
    let (status, body) = call(
        &b,
        Method::PATCH,
        &path,
        Some(&carol.token),
        Some(json!({"text": "x"})),
    )
    .await?;
    assert_eq!(
        (status, body),
        (403, json!({"message": "you are not a member of this chat"}))
    );
    let (status, _) = call(
        &b,
        Method::GET,
        &format!("/api/v1/message/{chat}/changes"),
        Some(&carol.token),
        None,
    )
    .await?;
    assert_eq!(status, 403);

    // Bob answers over REST, quoting Alice.
    let (status, reply) = call(
        &b,
        Method::POST,
        "/api/v1/message",
        Some(&bob.token),
        Some(json!({"chatId": chat, "text": "hi!", "replyTo": m1})),
    )
    .await?;
    assert_eq!(status, 201, "{reply}");
    let r1 = reply["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        reply["message"]["replyTo"],
        json!({"messageId": m1, "seq": sent["message"]["seq"], "sender": alice.id.to_hex(), "preview": "hello", "deleted": false})
    );
    let (status, body) = call(
        &b,
        Method::POST,
        "/api/v1/message",
        Some(&bob.token),
        Some(json!({"chatId": chat, "text": "?", "replyTo": bson_id()})),
    )
    .await?;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"message": "replyTo names no message of this chat"})
        )
    );

    // Reactions: Bob over Socket.IO, Alice over REST, then Bob takes his back.
    let reacted = bo
        .emit_ack(
            "reactMessage",
            json!({"chatId": chat, "messageId": m1, "emoji": "👍"}),
            T,
        )
        .await?;
    assert_eq!(
        reacted["message"]["reactions"],
        json!([{"emoji": "👍", "count": 1, "users": [bob.id.to_hex()]}])
    );
    let told = al
        .event_where("messageReactions", T, |m| m["_id"] == m1.as_str())
        .await?;
    assert_eq!(told["reactions"][0]["count"], 1);
    let reaction_path = format!("{path}/reactions/{}", path_emoji("👍"));
    let (status, both) = call(&a, Method::PUT, &reaction_path, Some(&alice.token), None).await?;
    assert_eq!(status, 200, "{both}");
    assert_eq!(both["message"]["reactions"][0]["count"], 2);
    let (status, again) = call(&a, Method::PUT, &reaction_path, Some(&alice.token), None).await?;
    assert_eq!(
        (status, again["message"]["reactions"][0]["count"].clone()),
        (200, json!(2)),
        "reacting twice counts once"
    );
    let (_, back) = call(&b, Method::DELETE, &reaction_path, Some(&bob.token), None).await?;
    assert_eq!(
        back["message"]["reactions"],
        json!([{"emoji": "👍", "count": 1, "users": [alice.id.to_hex()]}])
    );
    let (status, body) = call(
        &b,
        Method::PUT,
        &format!("{path}/reactions/lol"),
        Some(&bob.token),
        None,
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("emoji"))
    );

    // The feed from the start holds both messages, each once, in its
    // latest state, in the order of their last change (the reactions made
    // Alice's message the later one).
    let all = changes(&b, &bob, &chat, 0).await?;
    assert_eq!(ids(&all), vec![r1.clone(), m1.clone()], "{all}");
    assert_eq!(all["changes"][1]["text"], "hello");
    assert_eq!(all["changes"][1]["reactions"][0]["count"], 1);
    assert_eq!(all["more"], false);
    let cursor = all["nextSince"].as_i64().unwrap_or_default();
    assert!(cursor > first_change, "{all}");
    assert_eq!(
        changes(&b, &bob, &chat, cursor).await?["changes"],
        json!([]),
        "nothing changed since"
    );

    // Alice edits again: the quote in Bob's reply follows.
    al.emit_ack(
        "editMessage",
        json!({"chatId": chat, "messageId": m1, "text": "hello there"}),
        T,
    )
    .await?;
    let page = changes(&b, &bob, &chat, cursor).await?;
    let mut changed = ids(&page);
    changed.sort();
    let mut expected = vec![m1.clone(), r1.clone()];
    expected.sort();
    assert_eq!(changed, expected, "{page}");
    let quoted = page["changes"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["_id"] == r1.as_str()).cloned())
        .unwrap_or_default();
    assert_eq!(quoted["replyTo"]["preview"], "hello there", "{page}");
    let cursor = page["nextSince"].as_i64().unwrap_or_default();

    // Only the sender deletes for everyone; then a tombstone stays.
    let (status, _) = call(&b, Method::DELETE, &path, Some(&bob.token), None).await?;
    assert_eq!(status, 403);
    let (status, gone) = call(&a, Method::DELETE, &path, Some(&alice.token), None).await?;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["message"]["messageType"], "deleted");
    assert_eq!(gone["message"]["text"], "");
    assert!(gone["message"]["deletedAt"].is_string());
    assert!(gone["message"].get("reactions").is_none(), "{gone}");
    let told = bo
        .event_where("messageDeleted", T, |m| m["_id"] == m1.as_str())
        .await?;
    assert_eq!(told["text"], "");
    let page = changes(&b, &bob, &chat, cursor).await?;
    let quoted = page["changes"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["_id"] == r1.as_str()).cloned())
        .unwrap_or_default();
    assert_eq!(
        (&quoted["replyTo"]["deleted"], &quoted["replyTo"]["preview"]),
        (&json!(true), &json!("")),
        "a deleted original leaves no words in its quotes: {page}"
    );
    let refused = al
        .emit_ack(
            "editMessage",
            json!({"chatId": chat, "messageId": m1, "text": "back"}),
            T,
        )
        .await?;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    let (status, _) = call(&b, Method::PUT, &reaction_path, Some(&bob.token), None).await?;
    assert_eq!(status, 409);
    let (status, body) = call(
        &a,
        Method::DELETE,
        &format!("{path}?for=them"),
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(
        (status, body),
        (400, json!({"message": "for must be everyone or me"}))
    );

    // Bob deletes his reply for himself: his other device is told, Alice
    // still has it, his history no longer does.
    let mut bo2 = connect(&a, &bob).await?;
    let hidden = bo
        .emit_ack(
            "deleteMessage",
            json!({"chatId": chat, "messageId": r1, "for": "me"}),
            T,
        )
        .await?;
    assert_eq!(hidden["message"]["hidden"], true, "{hidden}");
    assert_eq!(hidden["message"]["text"], "");
    let other_device = bo2
        .event_where("messageHidden", T, |m| m["_id"] == r1.as_str())
        .await?;
    assert_eq!(other_device["hidden"], true);
    let history = |user: &User| {
        let token = user.token.clone();
        let chat = chat.clone();
        let a = &a;
        async move {
            let (_, h) = call(
                a,
                Method::GET,
                &format!("/api/v1/message/{chat}"),
                Some(&token),
                None,
            )
            .await?;
            anyhow::Ok(
                h["messages"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .map(|m| m["_id"].as_str().unwrap_or_default().to_owned())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            )
        }
    };
    assert_eq!(history(&bob).await?, vec![m1.clone()]);
    assert_eq!(history(&alice).await?, vec![m1.clone(), r1.clone()]);
    assert!(
        al.quiet("messageHidden", Duration::from_millis(500))
            .await?,
        "hiding is nobody else's business"
    );

    // The chat list's preview follows an edit and a deletion of the latest message.
    let (_, latest) = send_text(&a, &alice, &chat, "tpyo").await?;
    let m3 = latest["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let preview = |user: &User| {
        let token = user.token.clone();
        let a = &a;
        async move {
            let (_, list) = call(a, Method::GET, "/api/v1/chat/all", Some(&token), None).await?;
            anyhow::Ok(list["chats"][0]["chat"]["latestMessage"]["text"].clone())
        }
    };
    let m3_path = format!("/api/v1/message/{chat}/{m3}");
    call(
        &a,
        Method::PATCH,
        &m3_path,
        Some(&alice.token),
        Some(json!({"text": "typo"})),
    )
    .await?;
    assert_eq!(preview(&bob).await?, "typo");
    call(&a, Method::DELETE, &m3_path, Some(&alice.token), None).await?;
    assert_eq!(preview(&bob).await?, "Message deleted");

    for c in [al, bo, bo2] {
        c.stop().await;
    }
    Ok(())
}

fn bson_id() -> String {
    mongodb::bson::oid::ObjectId::new().to_hex()
}

/// Both members react at once, many times: no reaction is lost (each write
/// is conditional on the message being as it was read; the loser decides
/// again), and the answers and the stored state agree.
#[tokio::test]
async fn reactions_at_once_lose_nothing() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let (_, sent) = send_text(&a, &alice, &chat, "vote").await?;
    let m = sent["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let emoji = ["😀", "😁", "😂", "🤣", "😃", "😄"];
    let mut tasks = tokio::task::JoinSet::new();
    for user in [&alice, &bob] {
        for e in emoji {
            let url = a.url(&format!(
                "/api/v1/message/{chat}/{m}/reactions/{}",
                path_emoji(e)
            ));
            let token = user.token.clone();
            let http = a.http().clone();
            tasks.spawn(async move {
                // A 409 says "try again"; a client does.
                for _ in 0..20 {
                    let status = http.put(&url).bearer_auth(&token).send().await?.status();
                    if status != 409 {
                        return anyhow::Ok(status.as_u16());
                    }
                }
                anyhow::bail!("still 409 after 20 tries")
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done??, 200);
    }
    let (_, page) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}/changes"),
        Some(&bob.token),
        None,
    )
    .await?;
    let reactions = page["changes"][0]["reactions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(reactions.len(), emoji.len(), "{page}");
    for r in reactions {
        assert_eq!(r["count"], 2, "{r}");
    }
    Ok(())
}

/// An edit gives the original and every reply quoting it one change
/// number; a page of the feed that ends inside that group continues with
/// the rest of it (`nextSince` with `nextAfter`), losing none.
#[tokio::test]
async fn a_feed_page_that_ends_inside_one_change_continues_with_the_rest() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let send = |user: &User, body: Value| {
        let token = user.token.clone();
        let a = &a;
        async move {
            let (status, sent) =
                call(a, Method::POST, "/api/v1/message", Some(&token), Some(body)).await?;
            anyhow::ensure!(status == 201, "{status} {sent}");
            anyhow::Ok(
                sent["message"]["_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    let original = send(&alice, json!({"chatId": chat, "text": "plan A"})).await?;
    let mut replies = Vec::new();
    for n in 0..3 {
        replies.push(
            send(
                &bob,
                json!({"chatId": chat, "text": format!("re {n}"), "replyTo": original}),
            )
            .await?,
        );
    }
    let before = changes(&a, &bob, &chat, 0).await?["nextSince"]
        .as_i64()
        .unwrap_or_default();
    let (status, _) = call(
        &a,
        Method::PATCH,
        &format!("/api/v1/message/{chat}/{original}"),
        Some(&alice.token),
        Some(json!({"text": "plan B"})),
    )
    .await?;
    assert_eq!(status, 200);

    let mut seen = Vec::new();
    let mut query = format!("since={before}&limit=2");
    for _ in 0..4 {
        let (status, page) = call(
            &a,
            Method::GET,
            &format!("/api/v1/message/{chat}/changes?{query}"),
            Some(&bob.token),
            None,
        )
        .await?;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        if page["more"] != true {
            break;
        }
        query = format!(
            "since={}&after={}&limit=2",
            page["nextSince"],
            page["nextAfter"].as_str().unwrap_or_default()
        );
    }
    let mut expected = replies.clone();
    expected.push(original);
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "every message of the edit, once");
    let (status, body) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}/changes?after=nope"),
        Some(&bob.token),
        None,
    )
    .await?;
    assert_eq!(
        (status, body),
        (400, json!({"message": "after is not a valid id"}))
    );
    Ok(())
}
