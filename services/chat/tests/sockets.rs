//! Socket lifecycles under attack (issue 14, items 8 to 10): sockets that
//! leave at once, tokens that expire or are revoked, handshake checks. A
//! real chat process, real Redis and MongoDB, the official JS client.

mod support;

use std::time::Duration;

use parley_testkit::ServiceProcess;
use parley_testkit::socketio::{JsClient, Transport};
use support::{Stack, T, User, open_chat, socket_url};

async fn client(url: &str, token: &str) -> anyhow::Result<JsClient> {
    let mut c = JsClient::start(url, Some(token), &[], Transport::WebSocket).await?;
    c.connected(T).await?;
    Ok(c)
}

/// Metric lines of `/metrics` named exactly `name` (with or without
/// labels), summed; `None` when the metric is not exported at all.
async fn metric(service: &ServiceProcess, name: &str) -> anyhow::Result<Option<f64>> {
    let body = service
        .http()
        .get(service.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .collect();
    Ok((!values.is_empty()).then(|| values.iter().sum()))
}

/// Live presence entries of `user` in Redis (what every replica reads).
async fn live_sockets(stack: &Stack, user: &User) -> anyhow::Result<i64> {
    let client = redis::Client::open(parley_testkit::shared::redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let key = format!(
        "{}presence:sockets:{}",
        stack.ns.redis_prefix,
        user.id.to_hex()
    );
    let now = chrono::Utc::now().timestamp_millis();
    let n: i64 = redis::cmd("ZCOUNT")
        .arg(&key)
        .arg(now)
        .arg("+inf")
        .query_async(&mut conn)
        .await?;
    Ok(n)
}

/// Issue 14 item 10: thousands of sockets that disconnect the moment they
/// connect. Each one's disconnect may be handled before its connect
/// finished; the user must still end offline, and every entry the replica
/// tracks must be freed.
#[tokio::test]
async fn thousands_of_immediate_disconnects_leave_nobody_online() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let a = stack.replica().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    open_chat(&a, &alice, &bob).await?;
    // Alice stays connected throughout: the one socket that must remain.
    let _al = client(&socket_url(&a), &alice.token).await?;
    let mut bo =
        JsClient::start(&socket_url(&a), Some(&bob.token), &[], Transport::WebSocket).await?;
    bo.connected(T).await?;
    bo.disconnect().await?;
    let (connected, refused) = bo.churn(2000, 64, Duration::from_secs(300)).await?;
    assert_eq!(refused, 0, "handshakes refused");
    assert_eq!(connected, 2000);

    let offline = parley_testkit::wait_until("bob offline in Redis", T, || {
        let (stack, bob) = (&stack, &bob);
        async move {
            live_sockets(stack, bob)
                .await
                .map(|n| n == 0)
                .unwrap_or(false)
        }
    })
    .await;
    let left = live_sockets(&stack, &bob).await?;
    assert!(
        offline.is_ok(),
        "bob still has {left} live presence entries after every socket left"
    );
    let freed = parley_testkit::wait_until("tracked entries freed", T, || {
        let a = &a;
        async move {
            let sockets = metric(a, "chat_presence_tracked_sockets")
                .await
                .ok()
                .flatten();
            let users = metric(a, "chat_presence_tracked_users")
                .await
                .ok()
                .flatten();
            sockets == Some(1.0) && users == Some(1.0)
        }
    })
    .await;
    assert!(
        freed.is_ok(),
        "tracked sockets {:?}, users {:?} (only alice's one socket should remain)",
        metric(&a, "chat_presence_tracked_sockets").await?,
        metric(&a, "chat_presence_tracked_users").await?
    );
    assert_eq!(live_sockets(&stack, &alice).await?, 1);
    assert_eq!(metric(&a, "chat_sockets_connected").await?, Some(1.0));
    Ok(())
}
