//! The Redis connector against a Redis that stops answering on its open
//! connections without closing them (a deleted pod, a partition): commands
//! time out, and the watchdog must replace the connection by itself.

use std::time::Duration;

use parley_common::redis::{Redis, RedisConfig};
use parley_testkit::tcp_proxy::TcpProxy;
use parley_testkit::{RedisServer, wait_until};

#[tokio::test]
async fn a_connection_that_stops_answering_is_replaced_by_the_watchdog() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let front = TcpProxy::start(server.port()).await?;
    let redis = Redis::connect(&RedisConfig {
        url: format!("redis://127.0.0.1:{}", front.port()),
        prefix: "healing:".to_owned(),
        ca: None,
    })?;
    redis
        .ping()
        .await
        .map_err(|e| anyhow::anyhow!("ping before: {e}"))?;

    front.freeze_open_connections();
    let stuck = redis.ping().await;
    assert!(
        stuck.as_ref().is_err_and(|e| e.contains("timed out")),
        "the frozen connection answered: {stuck:?}"
    );
    let took = wait_until("PING answered again", Duration::from_secs(15), || {
        let redis = redis.clone();
        async move { redis.ping().await.is_ok() }
    })
    .await?;
    eprintln!("answering again {took:?} after the first timeout");
    Ok(())
}
