//! Read state across one user's devices: when one device reads a chat,
//! the user's other devices (on another replica too) learn the chat's new
//! unread count at once, through the official JavaScript Socket.IO client.

mod support;

use std::time::Duration;

use reqwest::Method;
use support::{Stack, T, call, connect, send_text};

#[tokio::test]
async fn reading_on_one_device_clears_the_unread_count_on_the_others() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (a, b) = (stack.replica().await?, stack.replica().await?);
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    // Alice's phone on A, her laptop on B; Bob on A.
    let mut phone = connect(&a, &alice).await?;
    let mut laptop = connect(&b, &alice).await?;
    let mut bo = connect(&a, &bob).await?;

    for text in ["one", "two"] {
        let (status, body) = send_text(&a, &bob, &chat, text).await?;
        assert_eq!(status, 201, "{body}");
    }
    for _ in 0..2 {
        laptop.event("newMessage", T).await?;
    }
    let (_, list) = call(
        &b,
        Method::GET,
        "/api/v1/chat/all",
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(list["chats"][0]["chat"]["unseenCount"], 2, "{list}");

    // The phone opens the chat: the laptop hears at once.
    let (status, history) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{history}");
    let read = laptop
        .event_where("chatRead", T, |d| d["chatId"] == chat.as_str())
        .await?;
    assert_eq!(read["unseenCount"], 0, "{read}");
    assert_eq!(read["readUpTo"], 2, "the highest seq read: {read}");
    assert!(read["readAt"].is_string(), "{read}");
    phone
        .event_where("chatRead", T, |d| d["chatId"] == chat.as_str())
        .await?;
    let (_, list) = call(
        &b,
        Method::GET,
        "/api/v1/chat/all",
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(list["chats"][0]["chat"]["unseenCount"], 0, "{list}");

    // Reading again marks nothing and tells nobody.
    call(
        &b,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        Some(&alice.token),
        None,
    )
    .await?;
    assert!(laptop.quiet("chatRead", Duration::from_millis(500)).await?);
    // Bob, whose messages these were, hears `messagesSeen`, not `chatRead`.
    bo.event("messagesSeen", T).await?;
    assert!(bo.quiet("chatRead", Duration::from_millis(200)).await?);
    for c in [phone, laptop, bo] {
        c.stop().await;
    }
    Ok(())
}
