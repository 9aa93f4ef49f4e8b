//! The ephemeral relay path: authorised from the socket's own state, and
//! bounded (excess refused, counted and told), with a real chat process, a
//! private MongoDB server that the tests stop, and the official JS client.

mod support;

use parley_testkit::MongoServer;
use parley_testkit::socketio::{JsClient, Transport};
use serde_json::{Value, json};
use support::{Stack, T, User, open_chat, socket_url};

async fn client(url: &str, token: &str) -> anyhow::Result<JsClient> {
    let mut c = JsClient::start(url, Some(token), &[], Transport::WebSocket).await?;
    c.connected(T).await?;
    Ok(c)
}

/// A stack whose MongoDB is a private server the test can stop, with two
/// users and their chat stored in it.
async fn private_world(
    mongo: &MongoServer,
    uri_options: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Stack, parley_testkit::ServiceProcess, User, User, String)> {
    let uri = format!("{}{uri_options}", mongo.uri());
    let mut stack = Stack::new().await?.with("PARLEY_MONGODB_URI", uri);
    for (k, v) in env {
        stack = stack.with(k, *v);
    }
    let a = stack.replica().await?;
    let users = mongodb::Client::with_uri_str(mongo.uri())
        .await?
        .database(&stack.ns.database);
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    for u in [&alice, &bob] {
        users
            .collection::<mongodb::bson::Document>("users")
            .insert_one(mongodb::bson::doc! {"_id": u.id, "name": &u.name, "email": format!("{}@example.com", u.name)})
            .await?;
    }
    let chat = open_chat(&a, &alice, &bob).await?;
    Ok((stack, a, alice, bob, chat))
}

#[tokio::test]
async fn typing_and_joins_need_no_database_after_one_check() -> anyhow::Result<()> {
    let mut mongo = MongoServer::start().await?;
    let (_stack, a, alice, bob, chat) = private_world(&mongo, "", &[]).await?;
    let mut al = client(&socket_url(&a), &alice.token).await?;
    let mut bo = client(&socket_url(&a), &bob.token).await?;
    // One membership check (MongoDB is up), and one stored message.
    let joined = bo.emit_ack("joinChat", json!(chat), T).await?;
    assert_eq!(joined["ok"], true, "{joined}");
    let sent = al
        .emit_ack("sendMessage", json!({"chatId": chat, "text": "hi"}), T)
        .await?;
    let message_id = sent["message"]["_id"].clone();
    assert!(message_id.is_string(), "{sent}");
    // A receipt waits for its (batched) write, which tells what it marked.
    let receipt = bo
        .emit_ack(
            "messageDelivered",
            json!({"chatId": chat, "messageIds": [message_id]}),
            T,
        )
        .await?;
    assert_eq!(receipt["ok"], true, "{receipt}");
    assert_eq!(receipt["count"], 1, "{receipt}");
    let delivered = al.event("messagesDelivered", T).await?;
    assert_eq!(delivered["deliveredTo"], bob.id.to_hex());
    assert_eq!(delivered["messageIds"], json!([message_id]));

    // From here on, MongoDB does not answer: the ephemeral path must not ask it.
    mongo.stop().await?;
    bo.emit("typing", json!({"chatId": chat})).await?;
    let typing = al.event("userTyping", T).await?;
    assert_eq!(typing, json!({"chatId": chat, "userId": bob.id.to_hex()}));
    let again = bo.emit_ack("joinChat", json!({"chatId": chat}), T).await?;
    assert_eq!(again["ok"], true, "{again}");
    let stop = bo
        .emit_ack("stopTyping", json!({"chatId": chat}), T)
        .await?;
    assert_eq!(stop["ok"], true, "{stop}");
    assert_eq!(
        al.event("userStoppedTyping", T).await?["userId"],
        bob.id.to_hex()
    );
    Ok(())
}

#[tokio::test]
async fn receipts_are_stored_after_the_acknowledgement() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let mut al = client(&socket_url(&a), &alice.token).await?;
    let mut bo = client(&socket_url(&a), &bob.token).await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let sent = al
            .emit_ack(
                "sendMessage",
                json!({"chatId": chat, "text": format!("m{i}")}),
                T,
            )
            .await?;
        ids.push(sent["message"]["_id"].clone());
    }
    let own = bo
        .emit_ack("sendMessage", json!({"chatId": chat, "text": "mine"}), T)
        .await?;
    let own_id: Value = own["message"]["_id"].clone();
    // Bob's receipt for his own message comes first: one writer, in order,
    // so it has been written (or skipped) once the others are stored.
    let ack = bo
        .emit_ack(
            "messageDelivered",
            json!({"chatId": chat, "messageIds": [own_id]}),
            T,
        )
        .await?;
    assert_eq!(ack["ok"], true, "{ack}");
    // Three receipts in a row for one chat: coalesced, all stored.
    for id in &ids {
        let ack = bo
            .emit_ack(
                "messageDelivered",
                json!({"chatId": chat, "messageIds": [id]}),
                T,
            )
            .await?;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let messages = stack.db.collection::<mongodb::bson::Document>("messages");
    parley_testkit::wait_until("deliveredAt stored", T, || {
        let messages = messages.clone();
        async move {
            messages
                .count_documents(
                    mongodb::bson::doc! {"sender": alice.id, "deliveredAt": {"$type": "date"}},
                )
                .await
                .map(|n| n == 3)
                .unwrap_or(false)
        }
    })
    .await?;
    let oid = mongodb::bson::oid::ObjectId::parse_str(own_id.as_str().unwrap_or_default())?;
    let mine = messages
        .find_one(mongodb::bson::doc! {"_id": oid})
        .await?
        .ok_or_else(|| anyhow::anyhow!("own message missing"))?;
    assert!(
        matches!(
            mine.get("deliveredAt"),
            None | Some(mongodb::bson::Bson::Null)
        ),
        "a sender's own message was marked delivered: {mine}"
    );
    Ok(())
}

#[tokio::test]
async fn excess_work_is_refused_counted_and_told() -> anyhow::Result<()> {
    let mut mongo = MongoServer::start().await?;
    // One MongoDB-bound event in flight per pod, one event per socket.
    // A long server-selection timeout keeps the stuck send stuck for the test.
    let (_stack, a, alice, bob, chat) = private_world(
        &mongo,
        "&serverSelectionTimeoutMS=120000",
        &[
            ("PARLEY_SOCKET_STORE_IN_FLIGHT", "1"),
            ("PARLEY_SOCKET_IN_FLIGHT", "1"),
        ],
    )
    .await?;
    let mut al = client(&socket_url(&a), &alice.token).await?;
    let mut bo = client(&socket_url(&a), &bob.token).await?;
    let joined = bo.emit_ack("joinChat", json!(chat), T).await?;
    assert_eq!(joined["ok"], true, "{joined}");
    mongo.stop().await?;
    // Alice's send now waits for MongoDB, holding the pod's only store ticket
    // and Alice's only slot (it is answered after the driver's timeout).
    al.emit("sendMessage", json!({"chatId": chat, "text": "stuck"}))
        .await?;
    let busy = parley_testkit::wait_until("the store ticket is taken", T, || {
        let a = &a;
        async move {
            a.metric("chat_socket_events_total{event=\"sendMessage\"}")
                .await
                .map(|n| n >= 1.0)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(busy.is_ok(), "{busy:?}");
    // Alice's own next event is refused by her socket's bound (rate_limited)...
    let own = al
        .emit_ack("sendMessage", json!({"chatId": chat, "text": "more"}), T)
        .await?;
    assert_eq!(own["error"]["code"], "rate_limited", "{own}");
    // ...Bob's send by the pod's bound (busy), through the ack...
    let refused = bo
        .emit_ack("sendMessage", json!({"chatId": chat, "text": "also"}), T)
        .await?;
    assert_eq!(refused["error"]["code"], "busy", "{refused}");
    // ...or, without an ack, through chatError.
    bo.emit("sendMessage", json!({"chatId": chat, "text": "no ack"}))
        .await?;
    let told = bo
        .event_where("chatError", T, |e| e["event"] == "sendMessage")
        .await?;
    assert_eq!(told["code"], "busy", "{told}");
    // Relays have their own pool: Bob's typing still reaches Alice.
    bo.emit("typing", json!({"chatId": chat})).await?;
    assert_eq!(al.event("userTyping", T).await?["userId"], bob.id.to_hex());
    let socket_refusals = a
        .metric("chat_socket_events_refused_total{event=\"sendMessage\",reason=\"socket\"}")
        .await?;
    let pod_refusals = a
        .metric("chat_socket_events_refused_total{event=\"sendMessage\",reason=\"pod\"}")
        .await?;
    assert_eq!(socket_refusals, 1.0);
    assert_eq!(pod_refusals, 2.0);
    Ok(())
}

/// Issue 14 item 11: a receipt naming messages it cannot mark (another
/// chat's, the recipient's own, already delivered, or none at all) is
/// neither acknowledged nor broadcast for them.
#[tokio::test]
async fn fake_receipts_are_neither_acknowledged_nor_broadcast() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let carol = stack.user("carol").await?;
    let chat = open_chat(&a, &alice, &bob).await?;
    let other_chat = open_chat(&a, &alice, &carol).await?;
    let mut al = client(&socket_url(&a), &alice.token).await?;
    let mut bo = client(&socket_url(&a), &bob.token).await?;
    let send = |text: &'static str, chat: String| json!({"chatId": chat, "text": text});
    let real = al
        .emit_ack("sendMessage", send("real", chat.clone()), T)
        .await?["message"]["_id"]
        .clone();
    let elsewhere = al
        .emit_ack("sendMessage", send("to carol", other_chat.clone()), T)
        .await?["message"]["_id"]
        .clone();
    let own = bo
        .emit_ack("sendMessage", send("bob's", chat.clone()), T)
        .await?["message"]["_id"]
        .clone();
    let nothing = json!(mongodb::bson::oid::ObjectId::new().to_hex());
    for id in [&real, &elsewhere, &own] {
        assert!(id.is_string(), "a send failed: {id}");
    }

    // Bob names all four: only Alice's message in his chat is his to mark.
    let ack = bo
        .emit_ack(
            "messageDelivered",
            json!({"chatId": chat, "messageIds": [real, elsewhere, own, nothing]}),
            T,
        )
        .await?;
    assert_eq!(ack["count"], 1, "{ack}");
    assert_eq!(ack["messageIds"], json!([real]), "{ack}");
    let told = al.event("messagesDelivered", T).await?;
    assert_eq!(told["messageIds"], json!([real]), "{told}");

    // Again, and only fakes: nothing marked, nothing told.
    let again = bo
        .emit_ack(
            "messageDelivered",
            json!({"chatId": chat, "messageIds": [real, nothing]}),
            T,
        )
        .await?;
    assert_eq!(again["count"], 0, "{again}");
    assert_eq!(again["messageIds"], json!([]), "{again}");
    assert!(
        al.quiet("messagesDelivered", std::time::Duration::from_secs(1))
            .await?,
        "a receipt that marked nothing was broadcast"
    );
    // Carol's message stayed undelivered.
    let oid = mongodb::bson::oid::ObjectId::parse_str(elsewhere.as_str().unwrap_or_default())?;
    let doc = stack
        .db
        .collection::<mongodb::bson::Document>("messages")
        .find_one(mongodb::bson::doc! {"_id": oid})
        .await?
        .ok_or_else(|| anyhow::anyhow!("message missing"))?;
    assert!(
        matches!(
            doc.get("deliveredAt"),
            None | Some(mongodb::bson::Bson::Null)
        ),
        "another chat's message was marked: {doc}"
    );
    Ok(())
}
