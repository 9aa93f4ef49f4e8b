//! Issue 14 item 7: anyone could open a chat with anyone and so learn their
//! presence. Blocks, and presence only between people who accepted the
//! chat: real chat replicas, real Redis and MongoDB, the official JS client.

mod support;

use std::time::Duration;

use parley_testkit::socketio::{JsClient, Transport};
use reqwest::Method;
use serde_json::json;
use support::{Stack, T, call, lists, open_chat, open_chat_one_sided, send_text, socket_url};

async fn client(url: &str, token: &str) -> anyhow::Result<JsClient> {
    let mut c = JsClient::start(url, Some(token), &[], Transport::WebSocket).await?;
    c.connected(T).await?;
    Ok(c)
}

/// How long a "nothing more arrived" check listens once a later event
/// (the barrier) has already arrived: anything sent before it is queued.
const DRAIN: Duration = Duration::from_millis(200);

/// A stranger who opens a chat learns nothing of the other's presence, nor
/// the other of theirs, until the other replies (or accepts).
#[tokio::test]
async fn strangers_see_no_presence_until_the_chat_is_answered() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let eve = stack.user("eve").await?;
    let bob = stack.user("bob").await?;
    let chat = open_chat_one_sided(&a, &eve, &bob).await?;
    // Eve may even write: that accepts it for her, not for Bob.
    let (status, body) = send_text(&a, &eve, &chat, "hi, it's the bank").await?;
    assert_eq!(status, 201, "{body}");

    let mut bo = client(&socket_url(&a), &bob.token).await?;
    assert_eq!(bo.event("getOnlineUser", T).await?, json!([]));
    let mut ev = client(&socket_url(&a), &eve.token).await?;
    let eves = ev.event("getOnlineUser", T).await?;
    assert!(!lists(&eves, &bob), "eve learnt bob is online: {eves}");
    // Barrier: Eve's typing reaches Bob after anything her connect sent him.
    ev.emit_ack("typing", json!({"chatId": chat}), T).await?;
    bo.event("userTyping", T).await?;
    assert!(
        bo.quiet("presence", DRAIN).await?,
        "bob was told eve's presence"
    );

    // Bob answers: now both see each other, at once.
    let (status, body) = send_text(&a, &bob, &chat, "who is this?").await?;
    assert_eq!(status, 201, "{body}");
    ev.event_where("getOnlineUser", T, |l| lists(l, &bob))
        .await?;
    bo.event_where("getOnlineUser", T, |l| lists(l, &eve))
        .await?;
    bo.disconnect().await?;
    let gone = ev
        .event_where("presence", T, |d| d["online"] == false)
        .await?;
    assert_eq!(gone["userId"], bob.id.to_hex());
    Ok(())
}

/// The explicit accept works like a reply.
#[tokio::test]
async fn accepting_a_chat_lets_presence_flow() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let ann = stack.user("ann").await?;
    let bob = stack.user("bob").await?;
    let carol = stack.user("carol").await?;
    let chat = open_chat_one_sided(&a, &ann, &bob).await?;
    let mut an = client(&socket_url(&a), &ann.token).await?;
    assert_eq!(an.event("getOnlineUser", T).await?, json!([]));
    let mut bo = client(&socket_url(&a), &bob.token).await?;
    assert_eq!(bo.event("getOnlineUser", T).await?, json!([]));
    // Carol may not accept a chat she is not in.
    let path = format!("/api/v1/chat/{chat}/accept");
    let (status, body) = call(&a, Method::POST, &path, Some(&carol.token), None).await?;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(&a, Method::POST, &path, Some(&bob.token), None).await?;
    assert_eq!(status, 200, "{body}");
    an.event_where("getOnlineUser", T, |l| lists(l, &bob))
        .await?;
    bo.event_where("getOnlineUser", T, |l| lists(l, &ann))
        .await?;
    Ok(())
}

/// Alice blocks Bob (their sockets on two replicas): he can no longer open
/// a chat with her, write to her over REST or the socket, type to her, or
/// see her presence; nor she his. Unblocking lets him write again.
#[tokio::test]
async fn blocked_users_cannot_open_write_type_or_see_presence() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (a, b) = (stack.replica().await?, stack.replica().await?);
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let carol = stack.user("carol").await?;
    let chat = open_chat(&a, &alice, &bob).await?;
    open_chat(&a, &alice, &carol).await?;

    let mut al = client(&socket_url(&a), &alice.token).await?;
    let mut bo = client(&socket_url(&b), &bob.token).await?;
    al.event_where("getOnlineUser", T, |l| lists(l, &bob))
        .await?;
    al.event_where("presence", T, |d| d["userId"] == bob.id.to_hex())
        .await?;
    // Bob's socket has passed its check for the chat (typing is cached).
    bo.emit_ack("joinChat", json!(chat), T).await?;
    let ok = bo.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(ok["ok"], true, "{ok}");
    al.event("userTyping", T).await?;
    let (status, body) = send_text(&b, &bob, &chat, "before").await?;
    assert_eq!(status, 201, "{body}");

    let block = format!("/api/v1/block/{}", bob.id.to_hex());
    let (status, body) = call(&a, Method::POST, &block, Some(&alice.token), None).await?;
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(&a, Method::POST, &block, Some(&alice.token), None).await?;
    assert_eq!(status, 200, "blocking twice changes nothing");
    let (status, list) = call(&a, Method::GET, "/api/v1/block", Some(&alice.token), None).await?;
    assert_eq!(status, 200);
    assert_eq!(list["blocked"][0]["userId"], bob.id.to_hex(), "{list}");

    // Both lists are sent again without the other.
    bo.event_where("getOnlineUser", T, |l| !lists(l, &alice))
        .await?;
    al.event_where("getOnlineUser", T, |l| !lists(l, &bob))
        .await?;

    // A new chat: the same answer as for someone who does not exist.
    let (status, body) = call(
        &b,
        Method::POST,
        "/api/v1/chat/new",
        Some(&bob.token),
        Some(json!({"otherUserId": alice.id.to_hex()})),
    )
    .await?;
    assert_eq!((status, &body["message"]), (404, &json!("no such user")));
    // Sends, REST and socket.
    let (status, body) = send_text(&b, &bob, &chat, "let me in").await?;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].is_string(), "{body}");
    let sent = bo
        .emit_ack(
            "sendMessage",
            json!({"chatId": chat, "text": "let me in"}),
            T,
        )
        .await?;
    assert_eq!(sent["error"]["code"], "forbidden", "{sent}");
    // Typing from his live socket on the other replica: refused once the
    // announcement reached it (at once here: it is published before the
    // block route answers, and his socket's check is redone).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let answer = bo.emit_ack("typing", json!({"chatId": chat}), T).await?;
        if answer["error"]["code"] == "forbidden" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's socket still relays typing: {answer}"
        );
        tokio::task::yield_now().await;
    }
    // Alice's side too: she cannot type at him.
    let mine = al.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(mine["error"]["code"], "forbidden", "{mine}");

    // Presence: Bob reconnects; his list lacks Alice, and Alice hears
    // nothing of him. Barrier: Carol connects after him on the same replica.
    bo.disconnect().await?;
    bo.connect().await?;
    bo.connected(T).await?;
    // (A list that named Alice would never match: the wait would fail.)
    bo.event_where("getOnlineUser", T, |l| !lists(l, &alice))
        .await?;
    let _ca = client(&socket_url(&b), &carol.token).await?;
    al.event_where("presence", T, |d| d["userId"] == carol.id.to_hex())
        .await?;
    assert!(
        al.quiet("presence", DRAIN).await?,
        "alice was told bob's presence"
    );

    // Alice reads the chat (Bob's earlier message): no messagesSeen for him.
    // Barrier: his own send after the unblock reaches him as newMessage.
    let (status, _) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(status, 200);

    // Unblocked: he may write again.
    let (status, body) = call(&a, Method::DELETE, &block, Some(&alice.token), None).await?;
    assert_eq!(status, 200, "{body}");
    // (Through Alice's replica, as her read was: one ordered relay to his.)
    let (status, body) = send_text(&a, &bob, &chat, "thanks").await?;
    assert_eq!(status, 201, "{body}");
    bo.event_where("newMessage", T, |m| m["text"] == "thanks")
        .await?;
    assert!(
        bo.quiet("messagesSeen", DRAIN).await?,
        "bob learnt alice read the chat while he was blocked"
    );
    let (_, list) = call(&a, Method::GET, "/api/v1/block", Some(&alice.token), None).await?;
    assert_eq!(list["blocked"], json!([]));
    Ok(())
}
