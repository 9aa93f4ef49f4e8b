//! Issue 16 items 1 and 2: groups across two chat replicas (real Redis,
//! MongoDB-protocol server and RabbitMQ), with the official JS client:
//! everything reaches exactly the current members, removed members get
//! nothing new and 403, added ones can type at once on another replica,
//! roles and ownership, and receipts as per-member watermarks.

mod support;

use std::time::{Duration, Instant};

use parley_testkit::ServiceProcess;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Stack, T, User, connect, create_group, lists, rest, send_text};

/// How long a "nothing more arrived" check listens once a later event
/// (the barrier) has already arrived: anything sent before it is queued.
const DRAIN: Duration = Duration::from_millis(200);

async fn history(
    replica: &ServiceProcess,
    user: &User,
    chat: &str,
    query: &str,
) -> anyhow::Result<(u16, Value)> {
    rest(
        replica,
        user,
        Method::GET,
        &format!("/api/v1/message/{chat}{query}"),
        None,
    )
    .await
}

fn is_chat(chat: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v: &Value| v["chatId"] == chat
}

/// A group of five across two replicas: messages, typing, edits,
/// deletions, reactions and receipts reach exactly the current members;
/// a stranger gets nothing and 403 everywhere.
#[tokio::test]
async fn a_group_of_five_across_two_replicas_reaches_exactly_its_members() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (a, b) = (stack.replica().await?, stack.replica().await?);
    let owner = stack.user("owner").await?;
    let m: Vec<User> =
        futures::future::try_join_all(["m1", "m2", "m3", "m4"].map(|n| stack.user(n))).await?;
    let stranger = stack.user("stranger").await?;
    // Owner, m2 and m4 on replica A; m1, m3 and the stranger on B.
    let mut o = connect(&a, &owner).await?;
    let mut c1 = connect(&b, &m[0]).await?;
    let mut c2 = connect(&a, &m[1]).await?;
    let mut c3 = connect(&b, &m[2]).await?;
    let mut c4 = connect(&a, &m[3]).await?;
    let mut x = connect(&b, &stranger).await?;
    let members: Vec<&User> = m.iter().collect();
    let chat = create_group(&a, &owner, &members, "Launch crew").await?;
    for c in [&mut o, &mut c1, &mut c2, &mut c3, &mut c4] {
        let created = c.event_where("groupUpdated", T, is_chat(&chat)).await?;
        assert_eq!(created["action"], "created");
        assert_eq!(created["group"]["name"], "Launch crew");
        assert_eq!(
            created["group"]["members"].as_array().map(Vec::len),
            Some(5)
        );
        assert_eq!(created["message"]["messageType"], "system");
    }

    // A message from m1 on B reaches all five.
    let sent = c1
        .emit_ack(
            "sendMessage",
            json!({"chatId": chat, "text": "hello crew"}),
            T,
        )
        .await?;
    let message_id = sent["message"]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!message_id.is_empty(), "{sent}");
    for c in [&mut o, &mut c1, &mut c2, &mut c3, &mut c4] {
        let got = c.event_where("newMessage", T, is_chat(&chat)).await?;
        assert_eq!(got["text"], "hello crew");
    }

    // Typing from m2 on A reaches the four others on both replicas.
    let ack = c2.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(ack["ok"], true, "{ack}");
    for c in [&mut o, &mut c1, &mut c3, &mut c4] {
        let typing = c.event_where("userTyping", T, is_chat(&chat)).await?;
        assert_eq!(typing["userId"], m[1].id.to_hex());
    }

    // An edit by the sender, a reaction by m3, then the owner (an admin)
    // deletes m1's message for everyone.
    let edited = c1
        .emit_ack(
            "editMessage",
            json!({"chatId": chat, "messageId": message_id, "text": "hello, crew"}),
            T,
        )
        .await?;
    assert_eq!(edited["message"]["text"], "hello, crew", "{edited}");
    let reacted = c3
        .emit_ack(
            "reactMessage",
            json!({"chatId": chat, "messageId": message_id, "emoji": "🚀"}),
            T,
        )
        .await?;
    assert_eq!(reacted["message"]["reactions"][0]["count"], 1, "{reacted}");
    // Receipts: m2's device received it, m3 read the chat.
    let delivered = c2
        .emit_ack(
            "messageDelivered",
            json!({"chatId": chat, "messageIds": [message_id]}),
            T,
        )
        .await?;
    assert_eq!(delivered["deliveredUpTo"], 2, "{delivered}");
    let (status, page) = history(&b, &m[2], &chat, "").await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["user"]["name"], "Launch crew");
    for c in [&mut o, &mut c1, &mut c2, &mut c3, &mut c4] {
        let e = c.event_where("messageEdited", T, is_chat(&chat)).await?;
        assert_eq!(e["text"], "hello, crew");
        c.event_where("messageReactions", T, is_chat(&chat)).await?;
    }
    for c in [&mut o, &mut c1, &mut c3, &mut c4] {
        let e = c.event_where("memberDelivered", T, is_chat(&chat)).await?;
        assert_eq!(
            (e["userId"].clone(), e["deliveredUpTo"].clone()),
            (json!(m[1].id.to_hex()), json!(2))
        );
    }
    for c in [&mut o, &mut c1, &mut c2, &mut c4] {
        let e = c.event_where("memberRead", T, is_chat(&chat)).await?;
        assert_eq!(e["userId"], m[2].id.to_hex());
    }
    c3.event_where("chatRead", T, is_chat(&chat)).await?;
    // The sender sees "seen by 1 of 4", "delivered to 2 of 4".
    let (status, mine) = history(&b, &m[0], &chat, "").await?;
    assert_eq!(status, 200, "{mine}");
    let theirs = mine["messages"]
        .as_array()
        .and_then(|l| l.iter().find(|v| v["_id"] == message_id.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(theirs["receipts"]["of"], 4, "{theirs}");
    assert_eq!(theirs["receipts"]["seen"], 1, "{theirs}");
    assert_eq!(theirs["receipts"]["seenBy"], json!([m[2].id.to_hex()]));
    assert_eq!(
        theirs["receipts"]["delivered"], 2,
        "m2's device and m3's read: {theirs}"
    );
    assert_eq!(theirs["status"], "sent");

    let deleted = o
        .emit_ack(
            "deleteMessage",
            json!({"chatId": chat, "messageId": message_id}),
            T,
        )
        .await?;
    assert_eq!(deleted["message"]["messageType"], "deleted", "{deleted}");
    for c in [&mut o, &mut c1, &mut c2, &mut c3, &mut c4] {
        c.event_where("messageDeleted", T, is_chat(&chat)).await?;
    }

    // The stranger: nothing arrived, and 403 everywhere.
    assert!(x.quiet("newMessage", DRAIN).await?);
    assert!(x.quiet("userTyping", DRAIN).await?);
    assert!(x.quiet("groupUpdated", DRAIN).await?);
    let (status, _) = history(&b, &stranger, &chat, "").await?;
    assert_eq!(status, 403);
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/group/{chat}"), None),
        (
            Method::PATCH,
            format!("/api/v1/group/{chat}"),
            Some(json!({"name": "mine"})),
        ),
        (Method::POST, format!("/api/v1/group/{chat}/leave"), None),
        (Method::GET, format!("/api/v1/message/{chat}/changes"), None),
        (
            Method::POST,
            format!("/api/v1/group/{chat}/members"),
            Some(json!({"userIds": [stranger.id.to_hex()]})),
        ),
    ] {
        let (status, body) = rest(&b, &stranger, method, &path, body).await?;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
    let refused = x.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    let refused = x
        .emit_ack(
            "sendMessage",
            json!({"chatId": chat, "text": "let me in"}),
            T,
        )
        .await?;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    Ok(())
}

/// A removed member hears of the removal, then nothing new; their socket
/// on the other replica may no longer type there; history is 403.
#[tokio::test]
async fn a_removed_member_receives_nothing_new_and_gets_403() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (a, b) = (stack.replica().await?, stack.replica().await?);
    let owner = stack.user("owner").await?;
    let stay = stack.user("stay").await?;
    let gone = stack.user("gone").await?;
    let chat = create_group(&a, &owner, &[&stay, &gone], "Crew").await?;
    let mut s = connect(&a, &stay).await?;
    let mut g = connect(&b, &gone).await?;
    // Gone's socket on B passed its membership check (and remembers it).
    let ack = g.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(ack["ok"], true, "{ack}");
    s.event_where("userTyping", T, is_chat(&chat)).await?;

    let (status, body) = rest(
        &a,
        &owner,
        Method::DELETE,
        &format!("/api/v1/group/{chat}/members/{}", gone.id.to_hex()),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["group"]["members"].as_array().map(Vec::len), Some(2));
    let removed = g.event_where("groupUpdated", T, is_chat(&chat)).await?;
    assert_eq!(removed["action"], "removed");
    assert_eq!(removed["users"], json!([gone.id.to_hex()]));

    // B's sockets learn it through Redis: gone's next typing is refused.
    let deadline = Instant::now() + T;
    loop {
        let ack = g.emit_ack("typing", json!({"chatId": chat}), T).await?;
        if ack["error"]["code"] == "forbidden" {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "typing still allowed: {ack}");
    }
    let (status, _) = history(&b, &gone, &chat, "").await?;
    assert_eq!(status, 403);
    let (status, _) = history(&b, &gone, &chat, "?before=2").await?;
    assert_eq!(status, 403);
    let refused = g
        .emit_ack(
            "sendMessage",
            json!({"chatId": chat, "text": "still here?"}),
            T,
        )
        .await?;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    // A new message reaches the members, not the removed one.
    let (status, body) = send_text(&a, &owner, &chat, "after you left").await?;
    assert_eq!(status, 201, "{body}");
    s.event_where("newMessage", T, |m| m["text"] == "after you left")
        .await?;
    assert!(
        g.quiet("newMessage", DRAIN).await?,
        "a removed member heard a new message"
    );
    Ok(())
}

/// Added on replica A, a member types at once into the group from a
/// socket on replica B (connected before they were added), and sees only
/// what was written after they joined.
#[tokio::test]
async fn a_member_added_on_one_replica_types_at_once_on_the_other() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (a, b) = (stack.replica().await?, stack.replica().await?);
    let owner = stack.user("owner").await?;
    let m1 = stack.user("m1").await?;
    let m2 = stack.user("m2").await?;
    let new = stack.user("new").await?;
    let chat = create_group(&a, &owner, &[&m1, &m2], "Crew").await?;
    let (status, body) = send_text(&a, &m1, &chat, "before you came").await?;
    assert_eq!(status, 201, "{body}");
    let mut o = connect(&a, &owner).await?;
    let mut c1 = connect(&b, &m1).await?;
    let mut n = connect(&b, &new).await?;
    // m1's socket on B remembers the group as it was (without "new").
    c1.emit_ack("typing", json!({"chatId": chat}), T).await?;
    o.event_where("userTyping", T, is_chat(&chat)).await?;
    let refused = n.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    let (status, body) = rest(
        &a,
        &owner,
        Method::POST,
        &format!("/api/v1/group/{chat}/members"),
        Some(json!({"userIds": [new.id.to_hex()]})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    // At once: the new member's typing on B reaches the owner on A and m1 on B.
    let ack = n.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(ack["ok"], true, "{ack}");
    for c in [&mut o, &mut c1] {
        c.event_where("userTyping", T, |t| t["userId"] == new.id.to_hex())
            .await?;
    }
    // m1's socket on B learns of the new member: its typing reaches them.
    let deadline = Instant::now() + T;
    loop {
        c1.emit_ack("typing", json!({"chatId": chat}), T).await?;
        if !n.quiet("userTyping", Duration::from_millis(100)).await? {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "m1's typing never reached the new member"
        );
    }

    // History from before joining is not theirs: they see the notice of
    // their own arrival and what followed.
    let (status, page) = history(&b, &new, &chat, "").await?;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<Value> = page["messages"]
        .as_array()
        .map(|l| l.iter().map(|v| v["messageType"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(texts, vec![json!("system")], "{page}");
    assert_eq!(page["messages"][0]["system"]["action"], "added");
    let (status, body) = history(&b, &new, &chat, "?before=3").await?;
    assert_eq!(status, 403, "{body}");
    let (status, feed) = rest(
        &b,
        &new,
        Method::GET,
        &format!("/api/v1/message/{chat}/changes"),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{feed}");
    assert!(
        feed["changes"]
            .as_array()
            .is_some_and(|l| l.iter().all(|v| v["text"] != "before you came")),
        "{feed}"
    );
    let (status, list) = rest(&b, &new, Method::GET, "/api/v1/chat/all", None).await?;
    assert_eq!(status, 200, "{list}");
    let item = &list["chats"][0];
    assert_eq!(item["chat"]["kind"], "group", "{list}");
    assert_eq!(item["chat"]["name"], "Crew");
    assert_eq!(item["chat"]["role"], "member");
    assert_eq!(
        item["chat"]["unseenCount"], 0,
        "notices are not unread messages"
    );
    Ok(())
}

/// Roles: only managers rename and add, admins remove plain members only,
/// the owner promotes and hands over, and an owner who leaves passes the
/// group to the oldest admin. Each change is a system message in history.
#[tokio::test]
async fn roles_ownership_and_system_messages() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let owner = stack.user("owner").await?;
    let m1 = stack.user("m1").await?;
    let m2 = stack.user("m2").await?;
    let m3 = stack.user("m3").await?;
    let chat = create_group(&a, &owner, &[&m1, &m2, &m3], "Crew").await?;
    let path = |tail: &str| format!("/api/v1/group/{chat}{tail}");

    let (status, _) = rest(
        &a,
        &m1,
        Method::PATCH,
        &path(""),
        Some(json!({"name": "Mine"})),
    )
    .await?;
    assert_eq!(status, 403, "a member renames");
    let (status, body) = rest(
        &a,
        &owner,
        Method::PUT,
        &path(&format!("/members/{}/role", m2.id.to_hex())),
        Some(json!({"role": "admin"})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest(
        &a,
        &m2,
        Method::PATCH,
        &path(""),
        Some(json!({"name": " Crew  two "})),
    )
    .await?;
    assert_eq!(
        (status, body["group"]["name"].clone()),
        (200, json!("Crew two")),
        "{body}"
    );
    let (status, _) = rest(
        &a,
        &m2,
        Method::PUT,
        &path(&format!("/members/{}/role", m1.id.to_hex())),
        Some(json!({"role": "admin"})),
    )
    .await?;
    assert_eq!(status, 403, "an admin promotes");
    let (status, body) = rest(
        &a,
        &owner,
        Method::PATCH,
        &path(""),
        Some(json!({"name": "a\u{202E}b"})),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = rest(
        &a,
        &owner,
        Method::POST,
        &path("/members"),
        Some(json!({"userIds": [mongodb::bson::oid::ObjectId::new().to_hex()]})),
    )
    .await?;
    assert_eq!(status, 404, "an unknown user: {body}");

    // The owner leaves: the admin (m2), though younger than m1, inherits.
    let (status, body) = rest(&a, &owner, Method::POST, &path("/leave"), None).await?;
    assert_eq!(status, 200, "{body}");
    let (status, group) = rest(&a, &m1, Method::GET, &path(""), None).await?;
    assert_eq!(status, 200, "{group}");
    let roles: Vec<(Value, Value)> = group["group"]["members"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| (e["userId"].clone(), e["role"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        roles,
        vec![
            (json!(m1.id.to_hex()), json!("member")),
            (json!(m2.id.to_hex()), json!("owner")),
            (json!(m3.id.to_hex()), json!("member")),
        ]
    );
    // The new owner hands it to m3 and becomes an admin.
    let (status, body) = rest(
        &a,
        &m2,
        Method::POST,
        &path("/owner"),
        Some(json!({"userId": m3.id.to_hex()})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = rest(
        &a,
        &m2,
        Method::DELETE,
        &path(&format!("/members/{}", m3.id.to_hex())),
        None,
    )
    .await?;
    assert_eq!(status, 403, "an admin removes the owner");
    let (status, _) = rest(
        &a,
        &m2,
        Method::DELETE,
        &path(&format!("/members/{}", m1.id.to_hex())),
        None,
    )
    .await?;
    assert_eq!(status, 200, "an admin removes a member");

    let (status, page) = history(&a, &m3, &chat, "").await?;
    assert_eq!(status, 200, "{page}");
    let actions: Vec<Value> = page["messages"]
        .as_array()
        .map(|l| l.iter().map(|v| v["system"]["action"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        actions,
        [
            "created",
            "roleChanged",
            "renamed",
            "left",
            "ownerChanged",
            "removed"
        ]
        .map(|a| json!(a)),
        "{page}"
    );
    // Notices cannot be edited or deleted for everyone.
    let notice = page["messages"][0]["_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, _) = rest(
        &a,
        &m3,
        Method::DELETE,
        &format!("/api/v1/message/{chat}/{notice}"),
        None,
    )
    .await?;
    assert_eq!(status, 403);
    // A 1:1 chat is no group.
    let direct = support::open_chat(&a, &m2, &m3).await?;
    let (status, _) = rest(
        &a,
        &m2,
        Method::GET,
        &format!("/api/v1/group/{direct}"),
        None,
    )
    .await?;
    assert_eq!(status, 400);
    // Creating needs 2 others.
    let (status, body) = rest(
        &a,
        &m2,
        Method::POST,
        "/api/v1/group",
        Some(json!({"name": "Duo", "memberIds": [m3.id.to_hex()]})),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    Ok(())
}

/// Presence flows between members who accepted the group, never to one
/// who did not; unread counts follow each member's read watermark, and a
/// read clears the badge on the reader's other devices.
#[tokio::test]
async fn presence_and_unread_counts_in_a_group() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let owner = stack.user("owner").await?;
    let m1 = stack.user("m1").await?;
    let lurker = stack.user("lurker").await?;
    let chat = create_group(&a, &owner, &[&m1, &lurker], "Crew").await?;
    let mut o = connect(&a, &owner).await?;
    assert_eq!(o.event("getOnlineUser", T).await?, json!([]));
    let (status, body) = rest(
        &a,
        &m1,
        Method::POST,
        &format!("/api/v1/chat/{chat}/accept"),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let mut c1 = connect(&a, &m1).await?;
    let mut c1_phone = connect(&a, &m1).await?;
    c1.event_where("getOnlineUser", T, |l| lists(l, &owner))
        .await?;
    o.event_where("getOnlineUser", T, |l| lists(l, &m1)).await?;
    // The lurker never accepted: nobody sees them, they see nobody.
    let mut l = connect(&a, &lurker).await?;
    assert_eq!(l.event("getOnlineUser", T).await?, json!([]));
    let barrier = c1.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(barrier["ok"], true);
    o.event_where("userTyping", T, is_chat(&chat)).await?;
    while let Ok(presence) = o.event("presence", DRAIN).await {
        assert_ne!(
            presence["userId"],
            lurker.id.to_hex(),
            "the owner heard of the lurker"
        );
    }

    for text in ["one", "two"] {
        let (status, body) = send_text(&a, &owner, &chat, text).await?;
        assert_eq!(status, 201, "{body}");
    }
    let unseen = |list: &Value| list["chats"][0]["chat"]["unseenCount"].clone();
    let (_, list) = rest(&a, &m1, Method::GET, "/api/v1/chat/all", None).await?;
    assert_eq!(unseen(&list), 2, "{list}");
    let (_, list) = rest(&a, &owner, Method::GET, "/api/v1/chat/all", None).await?;
    assert_eq!(unseen(&list), 0, "own messages and notices: {list}");
    let (status, _) = history(&a, &m1, &chat, "").await?;
    assert_eq!(status, 200);
    let read = c1_phone.event_where("chatRead", T, is_chat(&chat)).await?;
    assert_eq!(
        (read["unseenCount"].clone(), read["readUpTo"].clone()),
        (json!(0), json!(3))
    );
    let (_, list) = rest(&a, &m1, Method::GET, "/api/v1/chat/all", None).await?;
    assert_eq!(unseen(&list), 0, "{list}");
    let (_, list) = rest(&a, &lurker, Method::GET, "/api/v1/chat/all", None).await?;
    assert_eq!(unseen(&list), 2, "the lurker still has both: {list}");
    let seen = o.event_where("memberRead", T, is_chat(&chat)).await?;
    assert_eq!(seen["userId"], m1.id.to_hex());
    Ok(())
}
