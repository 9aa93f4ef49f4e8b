//! Realtime behaviour with the official JavaScript Socket.IO client against
//! two real chat replicas sharing Redis, RabbitMQ and MongoDB.

mod support;

use std::time::Duration;

use parley_testkit::socketio::{JsClient, Transport};
use parley_testkit::tcp_proxy::TcpProxy;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Stack, T, call, open_chat, send_text, socket_url};

async fn client(url: &str, token: &str, transport: Transport) -> anyhow::Result<JsClient> {
    let mut c = JsClient::start(url, Some(token), &[], transport).await?;
    c.connected(T).await?;
    Ok(c)
}

async fn two_replica_scenario(transport: Transport) -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (a, b) = (stack.replica().await?, stack.replica().await?);
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;

    let mut al = client(&socket_url(&a), &alice.token, transport).await?;
    let mut bo = client(&socket_url(&b), &bob.token, transport).await?;

    // Presence across replicas: Alice (on A) learns Bob (on B) came online.
    let online = al
        .event_where("getOnlineUser", T, |d| {
            d.as_array()
                .is_some_and(|l| l.contains(&json!(bob.id.to_hex())))
        })
        .await?;
    assert_eq!(
        online,
        json!([bob.id.to_hex()]),
        "only chat partners are listed"
    );

    let joined = al.emit_ack("joinChat", json!(chat), T).await?;
    assert_eq!(joined["ok"], true, "{joined}");

    // A message sent through replica A reaches Bob's socket on replica B.
    let sent = al
        .emit_ack(
            "sendMessage",
            json!({"chatId": chat, "text": "hello bob", "clientMessageId": "m-1"}),
            T,
        )
        .await?;
    let message = sent["message"].clone();
    assert_eq!(message["text"], "hello bob", "{sent}");
    assert_eq!(message["status"], "sent");
    let received = bo.event("newMessage", T).await?;
    assert_eq!(received["_id"], message["_id"]);
    assert_eq!(received["sender"], alice.id.to_hex());
    // Alice's own devices get it too.
    let echo = al.event("newMessage", T).await?;
    assert_eq!(echo["_id"], message["_id"]);

    // Typing: the sender comes from the token, whatever the payload claims.
    bo.emit(
        "typing",
        json!({"chatId": chat, "userId": alice.id.to_hex()}),
    )
    .await?;
    let typing = al.event("userTyping", T).await?;
    assert_eq!(typing, json!({"chatId": chat, "userId": bob.id.to_hex()}));
    bo.emit("stopTyping", json!({"chatId": chat})).await?;
    assert_eq!(
        al.event("userStoppedTyping", T).await?["userId"],
        bob.id.to_hex()
    );

    // Delivered receipt from Bob's device reaches Alice.
    let ack = bo
        .emit_ack(
            "messageDelivered",
            json!({"chatId": chat, "messageIds": [message["_id"]]}),
            T,
        )
        .await?;
    assert_eq!(ack["ok"], true, "{ack}");
    let delivered = al.event("messagesDelivered", T).await?;
    assert_eq!(delivered["deliveredTo"], bob.id.to_hex());

    // Bob opens the chat over REST on B: Alice is told it was seen.
    let (status, history) = call(
        &b,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        Some(&bob.token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(1));
    let seen = al.event("messagesSeen", T).await?;
    assert_eq!(seen["seenBy"], bob.id.to_hex());
    assert_eq!(seen["messageIds"], json!([message["_id"]]));
    let (_, again) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(again["messages"][0]["status"], "seen");
    assert!(again["messages"][0]["seenAt"].is_string());
    assert!(again["messages"][0]["deliveredAt"].is_string());

    // Bob leaves: Alice sees him go offline.
    bo.disconnect().await?;
    let gone = al
        .event_where("presence", T, |d| d["online"] == false)
        .await?;
    assert_eq!(gone["userId"], bob.id.to_hex());
    let users = stack.db.collection::<mongodb::bson::Document>("users");
    let stored = users
        .find_one(mongodb::bson::doc! {"_id": bob.id})
        .await?
        .expect("bob exists");
    assert!(
        stored.get_datetime("lastSeenAt").is_ok(),
        "lastSeenAt stored: {stored}"
    );
    Ok(())
}

#[tokio::test]
async fn websocket_clients_across_two_replicas() -> anyhow::Result<()> {
    two_replica_scenario(Transport::WebSocket).await
}

#[tokio::test]
async fn polling_clients_across_two_replicas() -> anyhow::Result<()> {
    two_replica_scenario(Transport::Polling).await
}

#[tokio::test]
async fn every_device_of_every_member_gets_new_messages() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let (a, b) = (stack.replica().await?, stack.replica().await?);
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let mut phone = client(&socket_url(&a), &bob.token, Transport::WebSocket).await?;
    let mut laptop = client(&socket_url(&b), &bob.token, Transport::Polling).await?;
    let (status, body) = send_text(&a, &alice, &chat, "to all your devices").await?;
    assert_eq!(status, 201, "{body}");
    for device in [&mut phone, &mut laptop] {
        assert_eq!(
            device.event("newMessage", T).await?["text"],
            "to all your devices"
        );
    }
    Ok(())
}

#[tokio::test]
async fn killed_replica_clients_reconnect_elsewhere_and_catch_up() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut a = stack.replica().await?;
    let b = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&b, "alice", "bob").await?;
    // Bob reaches the chat service through one address, like a Kubernetes Service.
    let front = TcpProxy::start(a.port()).await?;
    let mut bo = client(
        &format!("http://127.0.0.1:{}", front.port()),
        &bob.token,
        Transport::WebSocket,
    )
    .await?;
    let mut acked = Vec::new();
    for i in 0..3 {
        let (status, body) = call(
            &b,
            Method::POST,
            "/api/v1/message",
            Some(&alice.token),
            Some(json!({"chatId": chat, "text": format!("before {i}")})),
        )
        .await?;
        assert_eq!(status, 201);
        acked.push(body["message"]["seq"].as_i64().unwrap_or_default());
        bo.event("newMessage", T).await?;
    }
    let last_seen_seq = *acked.last().unwrap_or(&0);

    front.switch_to(b.port());
    a.kill().await?;
    bo.wait_for("disconnect", T, |l| l["type"] == "disconnect")
        .await?;
    // Messages sent while Bob is between replicas.
    for i in 0..2 {
        let (status, body) = call(
            &b,
            Method::POST,
            "/api/v1/message",
            Some(&alice.token),
            Some(json!({"chatId": chat, "text": format!("while away {i}")})),
        )
        .await?;
        assert_eq!(status, 201);
        acked.push(body["message"]["seq"].as_i64().unwrap_or_default());
    }
    bo.connected(Duration::from_secs(15)).await?;
    let (status, missed) = call(
        &b,
        Method::GET,
        &format!("/api/v1/message/{chat}?after={last_seen_seq}"),
        Some(&bob.token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{missed}");
    let texts: Vec<&str> = missed["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, vec!["while away 0", "while away 1"]);
    // Nothing acknowledged is missing from the full history.
    let (_, all) = call(
        &b,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        Some(&bob.token),
        None,
    )
    .await?;
    let seqs: Vec<i64> = all["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["seq"].as_i64()).collect())
        .unwrap_or_default();
    for seq in &acked {
        assert!(
            seqs.contains(seq),
            "acknowledged seq {seq} missing from {seqs:?}"
        );
    }
    // And live delivery works on the new replica.
    send_text(&b, &alice, &chat, "after failover").await?;
    bo.event_where("newMessage", T, |m| m["text"] == "after failover")
        .await?;
    Ok(())
}

#[tokio::test]
async fn handshakes_need_a_valid_token() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let url = socket_url(&a);

    // The original trusted a userId in the query: that no longer works.
    let mut posing = JsClient::start(
        &url,
        None,
        &[("userId", &alice.id.to_hex())],
        Transport::WebSocket,
    )
    .await?;
    assert!(posing.refused(T).await?.contains("authentication required"));
    let mut forged = JsClient::start(&url, Some("not.a.token"), &[], Transport::Polling).await?;
    assert_eq!(forged.refused(T).await?, "invalid token");
    let expired = stack.expired_token(&alice)?;
    let mut late = JsClient::start(&url, Some(&expired), &[], Transport::WebSocket).await?;
    assert_eq!(late.refused(T).await?, "token expired");
    // A token in the query string is refused unless enabled (see
    // sockets::tokens_in_urls_are_refused_unless_enabled).
    let mut by_query =
        JsClient::start(&url, None, &[("token", &alice.token)], Transport::WebSocket).await?;
    assert!(
        by_query
            .refused(T)
            .await?
            .contains("authentication required")
    );

    // An expired token is refused at reconnect.
    let mut c = client(&url, &alice.token, Transport::WebSocket).await?;
    c.disconnect().await?;
    c.wait_for("disconnect", T, |l| l["type"] == "disconnect")
        .await?;
    c.set_token(&expired).await?;
    c.connect().await?;
    assert_eq!(c.refused(T).await?, "token expired");
    Ok(())
}

#[tokio::test]
async fn outsiders_cannot_join_read_or_send() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let eve = stack.user("eve").await?;
    let chat = open_chat(&a, &alice, &bob).await?;
    let mut ev = client(&socket_url(&a), &eve.token, Transport::WebSocket).await?;
    let mut bo = client(&socket_url(&a), &bob.token, Transport::WebSocket).await?;

    let join = ev.emit_ack("joinChat", json!({"chatId": chat}), T).await?;
    assert_eq!(join["error"]["code"], "forbidden", "{join}");
    let send = ev
        .emit_ack("sendMessage", json!({"chatId": chat, "text": "hi"}), T)
        .await?;
    assert_eq!(send["error"]["code"], "forbidden", "{send}");
    let typed = ev.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(typed["error"]["code"], "forbidden", "{typed}");
    // The barrier: a relay of eve's typing would have been queued on bob's
    // socket before eve's ack, so before the answer to bob's own event;
    // whatever arrived until then has been read.
    let barrier = bo.emit_ack("typing", json!({"chatId": chat}), T).await?;
    assert_eq!(barrier["ok"], true, "{barrier}");
    assert!(
        bo.quiet("userTyping", Duration::ZERO).await?,
        "typing leaked from a non-member"
    );
    let (status, body) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        Some(&eve.token),
        None,
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    let (status, _) = send_text(&a, &eve, &chat, "x").await?;
    assert_eq!(status, 403);
    let (status, _) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}"),
        None,
        None,
    )
    .await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn bad_socket_input_gets_errors_and_harms_no_one() -> anyhow::Result<()> {
    // One event a second after a burst of ten: the checks below spend six.
    let stack = Stack::new()
        .await?
        .with("PARLEY_SOCKET_EVENTS_PER_SEC", "1")
        .with("PARLEY_SOCKET_EVENT_BURST", "10");
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let mut al = client(&socket_url(&a), &alice.token, Transport::WebSocket).await?;
    let mut bo = client(&socket_url(&a), &bob.token, Transport::WebSocket).await?;

    for (event, payload) in [
        ("sendMessage", json!(42)),
        ("sendMessage", json!({"chatId": chat})),
        ("sendMessage", json!({"chatId": "nope", "text": "x"})),
        ("sendMessage", json!({"chatId": chat, "text": "   "})),
    ] {
        let answer = al.emit_ack(event, payload.clone(), T).await?;
        assert_eq!(
            answer["error"]["code"], "invalid",
            "{event} {payload}: {answer}"
        );
    }
    let long = al
        .emit_ack(
            "sendMessage",
            json!({"chatId": chat, "text": "x".repeat(4001)}),
            T,
        )
        .await?;
    assert_eq!(long["error"]["code"], "invalid");
    // Old clients without acknowledgements get a chatError event.
    al.emit("joinChat", json!({"chatId": 7})).await?;
    al.event_where("chatError", T, |e| {
        e["event"] == "joinChat" && e["code"] == "invalid"
    })
    .await?;

    // A flood is cut by the per-socket limit.
    let mut limited = 0;
    for i in 0..15 {
        let answer = al
            .emit_ack(
                "sendMessage",
                json!({"chatId": chat, "text": format!("flood {i}")}),
                T,
            )
            .await?;
        if answer["error"]["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited > 0, "no send was rate limited");

    // A huge packet closes only that socket; Bob is unaffected.
    al.emit(
        "sendMessage",
        json!({"chatId": chat, "text": "y".repeat(200_000)}),
    )
    .await?;
    al.wait_for("disconnect", T, |l| l["type"] == "disconnect")
        .await?;
    let (status, _) = send_text(&a, &alice, &chat, "still fine").await?;
    assert_eq!(status, 201);
    bo.event_where("newMessage", T, |m| m["text"] == "still fine")
        .await?;
    Ok(())
}

fn png() -> Vec<u8> {
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    bytes.extend_from_slice(&[0u8; 64]);
    bytes
}

#[tokio::test]
async fn rest_edges_ids_idempotency_and_images() -> anyhow::Result<()> {
    let stack = Stack::new().await?.with("PARLEY_MEDIA_MAX_BYTES", "4096");
    let a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let eve = stack.user("eve").await?;

    // One chat per pair, whoever opens it and however often.
    let first = open_chat(&a, &alice, &bob).await?;
    let (status, body) = call(
        &a,
        Method::POST,
        "/api/v1/chat/new",
        Some(&bob.token),
        Some(json!({"otherUserId": alice.id.to_hex()})),
    )
    .await?;
    assert_eq!(
        (status, body["chatId"].as_str()),
        (200, Some(first.as_str()))
    );
    let chat = first;
    for (body, want) in [
        (json!({"otherUserId": "xyz"}), 400),
        (
            json!({"otherUserId": mongodb::bson::oid::ObjectId::new().to_hex()}),
            404,
        ),
        (json!({"otherUserId": alice.id.to_hex()}), 400),
        (json!({"other": 1}), 400),
    ] {
        let (status, answer) = call(
            &a,
            Method::POST,
            "/api/v1/chat/new",
            Some(&alice.token),
            Some(body.clone()),
        )
        .await?;
        assert_eq!(status, want, "{body}: {answer}");
        assert!(answer["message"].is_string());
    }
    let (status, _) = call(
        &a,
        Method::GET,
        "/api/v1/message/not-an-id",
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(status, 400);
    let (status, _) = call(
        &a,
        Method::GET,
        &format!(
            "/api/v1/message/{}",
            mongodb::bson::oid::ObjectId::new().to_hex()
        ),
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(status, 404);
    let (status, _) = call(
        &a,
        Method::GET,
        &format!("/api/v1/message/{chat}?before=1&after=2"),
        Some(&alice.token),
        None,
    )
    .await?;
    assert_eq!(status, 400);

    // A repeated clientMessageId returns the first message.
    let body = json!({"chatId": chat, "text": "once", "clientMessageId": "c-42"});
    let (s1, m1) = call(
        &a,
        Method::POST,
        "/api/v1/message",
        Some(&alice.token),
        Some(body.clone()),
    )
    .await?;
    let (s2, m2) = call(
        &a,
        Method::POST,
        "/api/v1/message",
        Some(&alice.token),
        Some(body),
    )
    .await?;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(m1["message"]["_id"], m2["message"]["_id"]);

    // Images: type by bytes, size limit, members-only download.
    let upload = |bytes: Vec<u8>, token: String| {
        let form = reqwest::multipart::Form::new()
            .text("chatId", chat.clone())
            .text("text", "look")
            .part(
                "image",
                reqwest::multipart::Part::bytes(bytes).file_name("x.png"),
            );
        a.http()
            .post(a.url("/api/v1/message"))
            .bearer_auth(token)
            .multipart(form)
            .send()
    };
    let ok = upload(png(), alice.token.clone()).await?;
    assert_eq!(ok.status(), 201);
    let stored: Value = ok.json().await?;
    assert_eq!(stored["message"]["messageType"], "image");
    let url = stored["message"]["image"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fetched = a
        .http()
        .get(a.url(&url))
        .bearer_auth(&bob.token)
        .send()
        .await?;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["content-type"], "image/png");
    // Shown inline under a name of ours, never sniffed, run or framed.
    let media_id = url.rsplit('/').next().unwrap_or_default();
    assert_eq!(
        fetched.headers()["content-disposition"],
        format!("inline; filename=\"{media_id}.png\"").as_str()
    );
    assert_eq!(fetched.headers()["x-content-type-options"], "nosniff");
    let csp = fetched.headers()["content-security-policy"].to_str()?;
    assert!(
        csp.contains("default-src 'none'") && csp.contains("sandbox"),
        "{csp}"
    );
    assert_eq!(fetched.bytes().await?.to_vec(), png());
    assert_eq!(
        a.http()
            .get(a.url(&url))
            .bearer_auth(&eve.token)
            .send()
            .await?
            .status(),
        // The answer for a missing image: nobody learns which ids exist.
        404
    );
    assert_eq!(
        upload(
            b"%PDF-1.4 definitely not an image".to_vec(),
            alice.token.clone()
        )
        .await?
        .status(),
        415
    );
    let mut big = png();
    big.resize(10_000, 0);
    let too_big = upload(big, alice.token.clone()).await?;
    assert_eq!(too_big.status(), 413);

    // The chat list: newest first, unseen counts, placeholder profile while
    // the user service is unreachable.
    let (status, list) = call(&a, Method::GET, "/api/v1/chat/all", Some(&bob.token), None).await?;
    assert_eq!(status, 200, "{list}");
    let entry = &list["chats"][0];
    assert_eq!(entry["chat"]["_id"], chat);
    assert_eq!(entry["chat"]["unseenCount"], 2);
    assert_eq!(entry["user"]["_id"], alice.id.to_hex());
    assert_eq!(entry["user"]["name"], "Unknown user");
    Ok(())
}
