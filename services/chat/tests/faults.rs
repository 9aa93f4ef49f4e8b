//! The chat service through dependency outages and replica crashes, and the
//! events it exchanges over RabbitMQ.

mod support;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::BasicAckOptions;
use parley_common::events::{Envelope, Event, MessageCreated, UserUpdated};
use parley_testkit::socketio::{JsClient, Transport};
use parley_testkit::tcp_proxy::TcpProxy;
use parley_testkit::{MongoServer, RedisServer, wait_until};
use reqwest::Method;
use serde_json::json;
use support::{Stack, T, call, open_chat, send_text, socket_url};

async fn client(url: &str, token: &str) -> anyhow::Result<JsClient> {
    let mut c = JsClient::start(url, Some(token), &[], Transport::WebSocket).await?;
    c.connected(T).await?;
    Ok(c)
}

#[tokio::test]
async fn mongodb_outage_fails_sends_loses_nothing_and_recovers() -> anyhow::Result<()> {
    let mut mongo = MongoServer::start().await?;
    let stack = Stack::new().await?.with("PARLEY_MONGODB_URI", mongo.uri());
    let a = stack.replica().await?;
    // Users live in the private server for this test.
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
    let mut al = client(&socket_url(&a), &alice.token).await?;
    let before = al
        .emit_ack("sendMessage", json!({"chatId": chat, "text": "kept"}), T)
        .await?;
    assert_eq!(before["message"]["text"], "kept", "{before}");

    mongo.stop().await?;
    // Answered after the driver's server-selection timeout (and one retry).
    let failed = al
        .emit_ack(
            "sendMessage",
            json!({"chatId": chat, "text": "lost?"}),
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(failed["error"]["code"], "unavailable", "{failed}");
    let (status, body) = send_text(&a, &alice, &chat, "x").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].is_string());

    mongo.restart().await?;
    wait_until("sends work again", Duration::from_secs(15), || {
        let al_chat = chat.clone();
        let a = &a;
        let token = alice.token.clone();
        async move {
            matches!(
                call(
                    a,
                    Method::POST,
                    "/api/v1/message",
                    Some(&token),
                    Some(json!({"chatId": al_chat, "text": "back"}))
                )
                .await,
                Ok((201, _))
            )
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
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        texts.first(),
        Some(&"kept"),
        "acknowledged before the outage: {texts:?}"
    );
    assert!(
        !texts.contains(&"lost?"),
        "a failed send was stored: {texts:?}"
    );
    Ok(())
}

#[tokio::test]
async fn redis_outage_keeps_one_replica_messaging_and_presence_recovers() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let stack = Stack::new()
        .await?
        .with("PARLEY_REDIS_URL", redis.url())
        .with("PARLEY_PRESENCE_TTL_SECS", "3");
    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let mut al = client(&socket_url(&a), &alice.token).await?;
    let mut bo = client(&socket_url(&a), &bob.token).await?;

    redis.stop().await?;
    let sent = al
        .emit_ack(
            "sendMessage",
            json!({"chatId": chat, "text": "no redis"}),
            T,
        )
        .await?;
    assert_eq!(sent["message"]["text"], "no redis", "{sent}");
    bo.event_where("newMessage", T, |m| m["text"] == "no redis")
        .await?;

    redis.restart().await?;
    a.wait_ready(Duration::from_secs(10)).await?;
    // The heartbeat puts both back; a new socket of Alice sees Bob online.
    wait_until("presence restored", Duration::from_secs(15), || {
        let url = socket_url(&a);
        let token = alice.token.clone();
        let bob_id = bob.id.to_hex();
        async move {
            let Ok(mut probe) = client(&url, &token).await else {
                return false;
            };
            let listed = probe
                .event("getOnlineUser", Duration::from_secs(2))
                .await
                .is_ok_and(|l| l.as_array().is_some_and(|ids| ids.contains(&json!(bob_id))));
            probe.stop().await;
            listed
        }
    })
    .await?;
    Ok(())
}

/// Redis vanishes without closing its connections (its pod deleted, the IP
/// gone): every command on them times out, and redis-rs' manager does not
/// reconnect on a timeout. Before the watchdog, the replicas published into
/// the dead connection forever and cross-replica delivery never came back.
#[tokio::test]
async fn a_redis_connection_that_stops_answering_is_replaced() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let front = TcpProxy::start(redis.port()).await?;
    let stack = Stack::new().await?.with(
        "PARLEY_REDIS_URL",
        format!("redis://127.0.0.1:{}", front.port()),
    );
    let a = stack.replica().await?;
    let b = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let mut al = client(&socket_url(&a), &alice.token).await?;
    let mut bo = client(&socket_url(&b), &bob.token).await?;
    // Bob's replica subscribed once Alice's message crosses.
    until_crossed(&mut al, &mut bo, &chat, "before", T).await?;

    front.freeze_open_connections();
    let took = until_crossed(&mut al, &mut bo, &chat, "after", Duration::from_secs(30)).await?;
    eprintln!("cross-replica delivery back {took:?} after the freeze");
    Ok(())
}

/// Alice sends `prefix` with a fresh suffix until Bob, on another replica,
/// gets one within a second; how long that took.
async fn until_crossed(
    al: &mut JsClient,
    bo: &mut JsClient,
    chat: &str,
    prefix: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = std::time::Instant::now();
    loop {
        let text = format!("{prefix}-{}", uuid::Uuid::new_v4());
        let sent = al
            .emit_ack("sendMessage", json!({"chatId": chat, "text": &text}), T)
            .await;
        if sent.is_ok_and(|ack| ack["message"]["text"] == text.as_str())
            && bo
                .event_where("newMessage", Duration::from_secs(1), |m| {
                    m["text"] == text.as_str()
                })
                .await
                .is_ok()
        {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "{prefix}: Alice's messages did not reach Bob's replica within {timeout:?}"
        );
    }
}

#[tokio::test]
async fn a_crashed_replicas_users_fall_offline_by_expiry() -> anyhow::Result<()> {
    let stack = Stack::new().await?.with("PARLEY_PRESENCE_TTL_SECS", "3");
    let a = stack.replica().await?;
    let mut b = stack.replica().await?;
    let (alice, bob, _) = stack.pair_on(&a, "alice", "bob").await?;
    let _bo = client(&socket_url(&b), &bob.token).await?;
    let mut al = client(&socket_url(&a), &alice.token).await?;
    assert_eq!(
        al.event("getOnlineUser", T).await?,
        json!([bob.id.to_hex()])
    );
    b.kill().await?;
    let took = wait_until(
        "bob offline after the crash",
        Duration::from_secs(10),
        || {
            let url = socket_url(&a);
            let token = alice.token.clone();
            async move {
                let Ok(mut probe) = client(&url, &token).await else {
                    return false;
                };
                let empty = probe
                    .event("getOnlineUser", Duration::from_secs(2))
                    .await
                    .is_ok_and(|l| l == json!([]));
                probe.stop().await;
                empty
            }
        },
    )
    .await?;
    eprintln!("crashed replica's user offline after {took:?}");
    Ok(())
}

#[tokio::test]
async fn stored_messages_publish_events_and_user_updates_drop_cached_profiles() -> anyhow::Result<()>
{
    let stack = Stack::new().await?;
    let (_conn, channel) = parley_testkit::events::channel(&stack.ns.amqp_url()).await?;
    let mut consumer =
        parley_testkit::events::tap(&channel, "test.messages", &[MessageCreated::TYPE]).await?;

    let a = stack.replica().await?;
    let (alice, bob, chat) = stack.pair_on(&a, "alice", "bob").await?;
    let (status, sent) = send_text(&a, &alice, &chat, "notify me").await?;
    assert_eq!(status, 201);
    let delivery = tokio::time::timeout(T, consumer.next())
        .await?
        .expect("an event")?;
    delivery.ack(BasicAckOptions::default()).await?;
    let event: Envelope<MessageCreated> = serde_json::from_slice(&delivery.data)?;
    assert_eq!(event.kind, MessageCreated::TYPE);
    assert_eq!(
        event.data.message_id,
        sent["message"]["_id"].as_str().unwrap_or_default()
    );
    assert_eq!(event.data.recipient_ids, vec![bob.id.to_hex()]);
    assert_eq!(event.data.sender_name, "alice");
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        Some(event.id.to_string())
    );

    // A cached profile is dropped when the user service announces a change.
    let mut redis = stack.ns.redis().await?;
    let key = format!("{}profile:{}", stack.ns.redis_prefix, bob.id.to_hex());
    redis::cmd("SET")
        .arg(&key)
        .arg(r#"{"_id":"x","name":"old"}"#)
        .query_async::<()>(&mut redis)
        .await?;
    let update = Envelope::new(UserUpdated {
        user_id: bob.id.to_hex(),
        name: "Bobby".into(),
        email: "bob@example.com".into(),
    });
    let body = serde_json::to_vec(&update)?;
    parley_testkit::events::publish(&channel, UserUpdated::TYPE, &update.id.to_string(), &body)
        .await?;
    wait_until("cached profile dropped", T, || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move {
            matches!(
                redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async::<i64>(&mut redis)
                    .await,
                Ok(0)
            )
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_disconnects_sockets_and_exits_cleanly() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let mut al = client(&socket_url(&a), &alice.token).await?;
    let code = a.terminate(Duration::from_secs(20)).await?;
    assert_eq!(code, Some(0), "{}", a.output());
    al.wait_for("disconnect", T, |l| l["type"] == "disconnect")
        .await?;
    Ok(())
}
