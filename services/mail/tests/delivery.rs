//! Mail delivery against a real SMTP server process, real RabbitMQ, Redis and
//! the MongoDB-protocol server, through the real binaries.

use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};
use parley_common::events::{Envelope, Event, MessageCreated, OtpRequested};
use parley_testkit::{Namespace, RabbitServer, ServiceProcess, SmtpSink, wait_until};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parley-mail");
const T: Duration = Duration::from_secs(15);

fn env(ns: &Namespace, smtp: &SmtpSink, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = ns.env();
    env.extend(smtp.env());
    env.extend([
        (
            "PARLEY_MAIL_RETRY_DELAYS_MS".to_owned(),
            "300,600,1000".to_owned(),
        ),
        ("PARLEY_MAIL_MAX_ATTEMPTS".to_owned(), "40".to_owned()),
        ("PARLEY_NOTIFY_GRACE_SECS".to_owned(), "1".to_owned()),
    ]);
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

async fn mail_service(env: &[(String, String)]) -> anyhow::Result<ServiceProcess> {
    let service = ServiceProcess::spawn(BIN, env)?;
    service.wait_ready(Duration::from_secs(30)).await?;
    Ok(service)
}

async fn channel(url: &str) -> anyhow::Result<(lapin::Connection, Channel)> {
    parley_testkit::events::channel(url).await
}

async fn publish_bytes(
    channel: &Channel,
    routing_key: &str,
    id: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    parley_testkit::events::publish(channel, routing_key, id, body).await
}

fn otp_event(email: &str, code: &str) -> Envelope<OtpRequested> {
    Envelope::new(OtpRequested {
        email: email.to_owned(),
        code: code.to_owned(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
    })
}

async fn publish<E: Event>(channel: &Channel, event: &Envelope<E>) -> anyhow::Result<()> {
    publish_bytes(
        channel,
        E::TYPE,
        &event.id.to_string(),
        &serde_json::to_vec(event)?,
    )
    .await
}

/// Messages waiting in the OTP work queue and its retry queues.
async fn pending(channel: &Channel) -> anyhow::Result<u32> {
    let mut total = 0;
    for queue in [
        "mail.otp",
        "mail.otp.retry.1",
        "mail.otp.retry.2",
        "mail.otp.retry.3",
    ] {
        total += depth(channel, queue).await?;
    }
    Ok(total)
}

/// Messages in `queue` right now.
async fn depth(channel: &Channel, queue: &str) -> anyhow::Result<u32> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}

/// `mail.otp.dead` as an earlier version declared it: no bounds.
async fn legacy_parking_queue(channel: &Channel) -> anyhow::Result<()> {
    channel
        .queue_declare(
            "mail.otp.dead".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

fn mails_to(sink: &SmtpSink, address: &str) -> usize {
    sink.messages()
        .unwrap_or_default()
        .iter()
        .filter(|m| m.contains(&format!("To: {address}")))
        .count()
}

async fn settled_with(
    sink: &SmtpSink,
    channel: &Channel,
    address: &str,
    want: usize,
) -> anyhow::Result<()> {
    wait_until(
        &format!("{want} mail(s) to {address} and nothing pending"),
        T,
        || async {
            mails_to(sink, address) >= want && pending(channel).await.is_ok_and(|n| n == 0)
        },
    )
    .await?;
    assert_eq!(
        mails_to(sink, address),
        want,
        "exactly {want} mail(s) to {address}"
    );
    Ok(())
}

#[tokio::test]
async fn a_code_from_the_user_service_arrives_and_works() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let _mail = mail_service(&env(&ns, &sink, &[])).await?;
    // The real user service, same namespace.
    let (private, _) = parley_common::token::generate_ed25519_pem()?;
    let key = std::env::temp_dir().join(format!("parley-mail-test-{}.pem", ns.id));
    std::fs::write(&key, private)?;
    let mut user_env = ns.env();
    user_env.push((
        "PARLEY_JWT_PRIVATE_KEY_FILE".into(),
        key.to_string_lossy().into_owned(),
    ));
    user_env.push((
        "PARLEY_OTP_SECRET".into(),
        "mail-test-secret-mail-test-secret-0000".into(),
    ));
    let user_bin = parley_testkit::workspace_binary("parley-user")?;
    let user = ServiceProcess::spawn(&user_bin.to_string_lossy(), &user_env)?;
    user.wait_ready(Duration::from_secs(30)).await?;

    let email = "reader@example.com";
    let answer = user
        .http()
        .post(user.url("/api/v1/login"))
        .json(&json!({"email": email}))
        .send()
        .await?;
    assert_eq!(answer.status(), 200);
    wait_until("the code mail", T, || async { mails_to(&sink, email) == 1 }).await?;
    let mail = sink
        .messages()?
        .into_iter()
        .find(|m| m.contains(&format!("To: {email}")))
        .unwrap_or_default();
    let code: String = mail
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_default()
        .trim()
        .to_owned();
    // PARLEY_OTP_DIGITS' default
    assert!(
        code.len() == 8 && code.chars().all(|c| c.is_ascii_digit()),
        "code in the subject: {mail}"
    );
    let verify = user
        .http()
        .post(user.url("/api/v1/verify"))
        .json(&json!({"email": email, "otp": code}))
        .send()
        .await?;
    assert_eq!(verify.status(), 200, "the mailed code logs in");
    let _ = std::fs::remove_file(key);
    Ok(())
}

#[tokio::test]
async fn smtp_outage_delays_but_delivers_exactly_once() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let mut sink = SmtpSink::start().await?;
    let _mail = mail_service(&env(&ns, &sink, &[])).await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    sink.stop().await?;
    let event = otp_event("patient@example.com", "424242");
    publish(&channel, &event).await?;
    // The outage lasts while several retries fail.
    wait_until("a retry happened", T, || async {
        channel
            .queue_declare(
                "mail.otp.retry.2".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok_and(|q| q.message_count() > 0)
    })
    .await?;
    sink.restart().await?;
    settled_with(&sink, &channel, "patient@example.com", 1).await?;
    assert!(sink.messages()?.iter().any(|m| m.contains("424242")));
    Ok(())
}

#[tokio::test]
async fn redelivered_events_send_one_mail() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let _mail = mail_service(&env(&ns, &sink, &[])).await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    let event = otp_event("once@example.com", "111111");
    publish(&channel, &event).await?;
    settled_with(&sink, &channel, "once@example.com", 1).await?;
    publish(&channel, &event).await?;
    publish(&channel, &event).await?;
    wait_until("republished copies consumed", T, || async {
        pending(&channel).await.is_ok_and(|n| n == 0)
    })
    .await?;
    // A second mail would have been sent before the queue emptied (ack after send).
    assert_eq!(mails_to(&sink, "once@example.com"), 1);
    Ok(())
}

#[tokio::test]
async fn bad_events_are_parked_with_a_reason() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let _mail = mail_service(&env(&ns, &sink, &[])).await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    publish_bytes(&channel, OtpRequested::TYPE, "bad-1", b"{not json").await?;
    publish_bytes(&channel, OtpRequested::TYPE, "bad-2", &serde_json::to_vec(&json!({"id": uuid::Uuid::new_v4(), "type": "something.else.v1", "occurredAt": chrono::Utc::now(), "data": {}}))?).await?;
    publish(&channel, &otp_event("not an address", "123123")).await?;
    let reasons = std::sync::Mutex::new(Vec::new());
    wait_until("three parked", T, || async {
        if let Ok(Some(message)) = channel
            .basic_get("mail.otp.dead".into(), BasicGetOptions { no_ack: true })
            .await
        {
            let reason = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| match h.inner().get("x-parley-reason") {
                    Some(lapin::types::AMQPValue::LongString(text)) => {
                        Some(String::from_utf8_lossy(text.as_bytes()).into_owned())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            if let Ok(mut r) = reasons.lock() {
                r.push(reason);
            }
        }
        reasons.lock().is_ok_and(|r| r.len() == 3)
    })
    .await?;
    let all = reasons.lock().map(|r| r.join(" | ")).unwrap_or_default();
    assert!(all.contains("unreadable event"), "{all}");
    assert!(all.contains("unexpected event type"), "{all}");
    assert!(all.contains("bad recipient address"), "{all}");
    // And the service is still consuming.
    publish(&channel, &otp_event("fine@example.com", "222222")).await?;
    settled_with(&sink, &channel, "fine@example.com", 1).await?;
    Ok(())
}

async fn parked(mail: &ServiceProcess, want: f64) -> anyhow::Result<()> {
    wait_until(&format!("{want} mail(s) parked"), T, || async {
        mail.metric("mail_parked_total{queue=\"mail.otp\"}")
            .await
            .is_ok_and(|n| n >= want)
    })
    .await
    .map(drop)
    .map_err(|e| e.context(mail.output()))
}

#[tokio::test]
async fn ready_means_every_queue_is_declared_and_bound() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let _mail = mail_service(&env(&ns, &sink, &[])).await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    // At once after /readyz: a missing queue would close this channel (404).
    for queue in [
        "mail.otp",
        "mail.otp.dead",
        "mail.otp.retry.1",
        "mail.notifications",
        "mail.notifications.dead",
        "mail.notifications.grace",
        "mail.notifications.due",
        "mail.notifications.due.dead",
    ] {
        depth(&channel, queue)
            .await
            .map_err(|e| anyhow::anyhow!("{queue} after ready: {e}"))?;
    }
    // and an event published now is not lost
    publish(&channel, &otp_event("early@example.com", "313131")).await?;
    settled_with(&sink, &channel, "early@example.com", 1).await?;
    Ok(())
}

#[tokio::test]
async fn parked_login_mail_holds_no_code_and_is_bounded() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    legacy_parking_queue(&channel).await?;
    let mail = mail_service(&env(&ns, &sink, &[("PARLEY_MAIL_PARK_MAX", "2")])).await?;
    for code in ["987651", "987652", "987653"] {
        publish(&channel, &otp_event("not an address", code)).await?;
    }
    parked(&mail, 3.0).await?;
    assert_eq!(
        depth(&channel, "mail.otp.dead").await?,
        2,
        "the oldest is dropped"
    );
    for _ in 0..2 {
        let message = channel
            .basic_get("mail.otp.dead".into(), BasicGetOptions { no_ack: true })
            .await?
            .ok_or_else(|| anyhow::anyhow!("a parked mail"))?;
        let body = String::from_utf8_lossy(&message.delivery.data).into_owned();
        assert!(
            !body.contains("98765"),
            "a parked login mail keeps no code: {body}"
        );
        assert!(body.contains("not an address"), "{body}");
    }
    Ok(())
}

#[tokio::test]
async fn parked_mail_expires() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let mail = mail_service(&env(&ns, &sink, &[("PARLEY_MAIL_PARK_TTL_SECS", "1")])).await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    publish(&channel, &otp_event("not an address", "123123")).await?;
    parked(&mail, 1.0).await?;
    wait_until("the parked mail expired", T, || async {
        depth(&channel, "mail.otp.dead").await.is_ok_and(|n| n == 0)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_full_legacy_parking_queue_is_kept_and_parking_goes_on() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    legacy_parking_queue(&channel).await?;
    channel
        .basic_publish(
            "".into(),
            "mail.otp.dead".into(),
            Default::default(),
            b"parked by an earlier version",
            BasicProperties::default(),
        )
        .await?
        .await?;
    let mail = mail_service(&env(&ns, &sink, &[])).await?;
    publish(&channel, &otp_event("not an address", "555111")).await?;
    parked(&mail, 1.0).await?;
    assert_eq!(
        depth(&channel, "mail.otp.dead").await?,
        2,
        "nothing was deleted"
    );
    publish(&channel, &otp_event("fine@example.com", "222222")).await?;
    settled_with(&sink, &channel, "fine@example.com", 1).await?;
    Ok(())
}

#[tokio::test]
async fn rabbitmq_restart_is_survived_and_nothing_queued_is_lost() -> anyhow::Result<()> {
    let mut rabbit = RabbitServer::start().await?;
    let sink = SmtpSink::start().await?;
    let ns = Namespace::new().await?;
    let mail = mail_service(&env(&ns, &sink, &[("PARLEY_AMQP_URL", &rabbit.url())])).await?;
    {
        let (_conn, channel) = channel(&rabbit.url()).await?;
        publish(&channel, &otp_event("before@example.com", "333333")).await?;
        settled_with(&sink, &channel, "before@example.com", 1).await?;
    }
    rabbit.stop().await?;
    mail.wait_readyz(503, Duration::from_secs(5)).await?;
    rabbit.restart().await?;
    mail.wait_ready(Duration::from_secs(20)).await?;
    let (_conn, channel) = channel(&rabbit.url()).await?;
    for i in 0..5 {
        publish(
            &channel,
            &otp_event(&format!("after{i}@example.com"), "444444"),
        )
        .await?;
    }
    for i in 0..5 {
        settled_with(&sink, &channel, &format!("after{i}@example.com"), 1).await?;
    }
    Ok(())
}

/// Waits until every notification event has passed its grace period and
/// been handled.
async fn notifications_drained(channel: &Channel) -> anyhow::Result<()> {
    wait_until("notification queues drained", T, || async {
        let mut total = 0;
        for q in [
            "mail.notifications",
            "mail.notifications.grace",
            "mail.notifications.due",
        ] {
            match depth(channel, q).await {
                Ok(n) => total += n,
                Err(_) => return false,
            }
        }
        total == 0
    })
    .await
    .map(drop)
}

/// The one mail to `address` (empty when there is none).
fn mail_to(sink: &SmtpSink, address: &str) -> String {
    sink.messages()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.contains(&format!("To: {address}")))
        .unwrap_or_default()
}

async fn add_users(db: &mongodb::Database, users: &[(ObjectId, &str)]) -> anyhow::Result<()> {
    for (id, name) in users {
        db.collection::<mongodb::bson::Document>("users")
            .insert_one(doc! {"_id": id, "name": name, "email": format!("{name}@example.com")})
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn offline_unseen_recipients_get_one_summary() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let _mail = mail_service(&env(&ns, &sink, &[])).await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    let db = ns.mongo().await?;
    let mut redis = ns.redis().await?;
    let (alice, bob, carol) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    add_users(&db, &[(alice, "alice"), (bob, "bob"), (carol, "carol")]).await?;
    // Carol is online (a live socket somewhere).
    redis::cmd("SET")
        .arg(format!("{}presence:{}", ns.redis_prefix, carol.to_hex()))
        .arg(1)
        .query_async::<()>(&mut redis)
        .await?;
    let messages = db.collection::<mongodb::bson::Document>("messages");
    let send = |chat: ObjectId, to: ObjectId, seen: bool| {
        let id = ObjectId::new();
        let messages = messages.clone();
        let channel = channel.clone();
        async move {
            messages.insert_one(doc! {"_id": id, "chatId": chat, "sender": alice, "text": "hi", "seen": seen, "sentAt": DateTime::now()}).await?;
            let event = Envelope::new(MessageCreated {
                message_id: id.to_hex(),
                chat_id: chat.to_hex(),
                sender_id: alice.to_hex(),
                // Anyone can message anyone: both are attacker-chosen.
                sender_name: "PayPal Security Team".into(),
                recipient_ids: vec![to.to_hex()],
                preview: "Your account is locked, verify at http://evil.example/x".into(),
                sent_at: chrono::Utc::now(),
            });
            publish(&channel, &event).await
        }
    };
    let (chat_ab, chat_ac, chat_seen) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    for (chat, other) in [(chat_ab, bob), (chat_ac, carol), (chat_seen, bob)] {
        db.collection::<mongodb::bson::Document>("chats")
            .insert_one(doc! {"_id": chat, "members": [alice, other]})
            .await?;
    }
    for _ in 0..3 {
        send(chat_ab, bob, false).await?;
    }
    send(chat_ac, carol, false).await?;
    send(chat_seen, bob, true).await?;
    wait_until("bob's summary", T, || async {
        mails_to(&sink, "bob@example.com") >= 1
    })
    .await?;
    notifications_drained(&channel).await?;
    assert_eq!(
        mails_to(&sink, "bob@example.com"),
        1,
        "one mail per chat per window, however many messages"
    );
    assert_eq!(
        mails_to(&sink, "carol@example.com"),
        0,
        "online recipients get no mail"
    );
    let summary = mail_to(&sink, "bob@example.com");
    assert!(summary.contains("new message"), "{summary}");
    // Nothing the sender chose reaches the inbox: not their name, not the text.
    for chosen in ["PayPal", "Security Team", "evil.example", "locked"] {
        assert!(!summary.contains(chosen), "{chosen:?} in {summary}");
    }
    Ok(())
}

#[tokio::test]
async fn group_notifications_go_to_members_who_have_not_read_or_muted() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let _mail = mail_service(&env(&ns, &sink, &[])).await?;
    let (_conn, channel) = channel(&ns.amqp_url()).await?;
    let db = ns.mongo().await?;
    // Alice writes; Mona muted the group after the send, Rita read it,
    // Oscar is offline and has not; Dave was removed from the group.
    let (alice, mona, rita, oscar, dave) = (
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
    );
    add_users(
        &db,
        &[
            (alice, "alice"),
            (mona, "mona"),
            (rita, "rita"),
            (oscar, "oscar"),
            (dave, "dave"),
        ],
    )
    .await?;
    let group = ObjectId::new();
    let entry = |user: ObjectId, role: &str, joined: i64| {
        doc! {"user": user, "role": role, "joinedSeq": joined, "joinedAt": DateTime::now()}
    };
    db.collection::<mongodb::bson::Document>("chats")
        .insert_one(doc! {
            "_id": group,
            "kind": "group",
            "name": "Design team",
            "members": [alice, mona, rita, oscar],
            "mutedBy": [mona],
            // Who created it, wrote in it or accepted it: the group's name
            // is shown only to them.
            "acceptedBy": [alice, mona, oscar],
            "roster": [
                entry(alice, "owner", 0),
                entry(mona, "admin", 0),
                entry(rita, "member", 0),
                entry(oscar, "member", 2),
            ],
            // Oscar read seq 1, before he joined at 2: what counts is 2.
            "reads": {rita.to_hex(): 8_i64, oscar.to_hex(): 1_i64, alice.to_hex(): 8_i64},
        })
        .await?;
    let mut last = ObjectId::new();
    for (seq, sender, kind, deleted) in [
        (1_i64, alice, "text", false),
        (2, alice, "system", false), // Oscar joined
        (3, oscar, "text", false),   // his own
        (4, rita, "deleted", true),
        (5, rita, "text", false), // new to Oscar
        (6, alice, "system", false),
        (7, alice, "image", false), // new to Oscar
        (8, alice, "text", false),  // new to Oscar: the event's
    ] {
        last = ObjectId::new();
        let mut message = doc! {"_id": last, "chatId": group, "seq": seq, "sender": sender, "messageType": kind, "text": "hi", "seen": false, "sentAt": DateTime::now()};
        if deleted {
            message.insert("deletedAt", DateTime::now());
        }
        db.collection::<mongodb::bson::Document>("messages")
            .insert_one(message)
            .await?;
    }
    let event = Envelope::new(MessageCreated {
        message_id: last.to_hex(),
        chat_id: group.to_hex(),
        sender_id: alice.to_hex(),
        sender_name: "alice".into(),
        // As the chat service saw the group when the message was sent.
        recipient_ids: [mona, rita, oscar, dave]
            .into_iter()
            .map(ObjectId::to_hex)
            .collect(),
        preview: "the secret plan".into(),
        sent_at: chrono::Utc::now(),
    });
    publish(&channel, &event).await?;
    wait_until("oscar's summary", T, || async {
        mails_to(&sink, "oscar@example.com") >= 1
    })
    .await?;
    notifications_drained(&channel).await?;
    assert_eq!(mails_to(&sink, "oscar@example.com"), 1);
    for (who, why) in [
        ("mona@example.com", "muted"),
        ("rita@example.com", "read it"),
        ("dave@example.com", "removed"),
        ("alice@example.com", "the sender"),
    ] {
        assert_eq!(mails_to(&sink, who), 0, "{who} {why}: no mail");
    }
    assert_eq!(sink.messages()?.len(), 1, "one mail in all");
    let summary = mail_to(&sink, "oscar@example.com");
    assert!(
        summary.contains("Subject: You have 3 new messages in \"Design team\" on parley"),
        "{summary}"
    );
    assert!(
        summary.contains("You have 3 new messages in \"Design team\" on parley."),
        "the text body names the group: {summary}"
    );
    for chosen in ["alice", "secret plan"] {
        assert!(!summary.contains(chosen), "{chosen:?} in {summary}");
    }
    Ok(())
}
