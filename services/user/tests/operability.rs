//! The user binary on real dependencies: readiness follows MongoDB and Redis
//! through an outage while a RabbitMQ outage only degrades it, configuration
//! errors name their variable, SIGTERM drains and exits cleanly, `/metrics`
//! speaks Prometheus.

use std::time::Duration;

use parley_testkit::{
    MongoServer, Namespace, RabbitServer, RedisServer, ServiceProcess, assert_config_error,
    wait_until,
};

const BIN: &str = env!("CARGO_BIN_EXE_parley-user");

fn base_env(ns: &Namespace) -> Vec<(String, String)> {
    let dir = std::env::temp_dir().join(format!("parley-user-key-{}", ns.id));
    let _ = std::fs::create_dir_all(&dir);
    let key = dir.join("jwt.pem");
    if !key.exists() {
        let (private, _) = parley_common::token::generate_ed25519_pem().unwrap_or_default();
        let _ = std::fs::write(&key, private);
    }
    let mut env = ns.env();
    env.push((
        "PARLEY_JWT_PRIVATE_KEY_FILE".into(),
        key.to_string_lossy().into_owned(),
    ));
    env.push((
        "PARLEY_OTP_SECRET".into(),
        "operability-secret-operability-secret".into(),
    ));
    env
}

fn env_with(ns: &Namespace, overrides: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = base_env(ns);
    for (key, value) in overrides {
        env.retain(|(k, _)| k != key);
        env.push(((*key).to_owned(), value.clone()));
    }
    env
}

async fn assert_outage_and_recovery(
    service: &ServiceProcess,
    dependency: &str,
    stop: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    stop.await?;
    let took = service.wait_readyz(503, Duration::from_secs(5)).await?;
    let (_, body) = service
        .readyz()
        .await
        .expect("readyz answers during the outage");
    let failing: Vec<String> = serde_json::from_value(body["failing"].clone())?;
    assert_eq!(failing, vec![dependency.to_owned()], "body: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(dependency)
    );
    eprintln!("{dependency} down: /readyz 503 after {took:?}");
    Ok(())
}

#[tokio::test]
async fn readiness_follows_a_redis_outage() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let mut redis = RedisServer::start().await?;
    let service = ServiceProcess::spawn(BIN, &env_with(&ns, &[("PARLEY_REDIS_URL", redis.url())]))?;
    service.wait_ready(Duration::from_secs(30)).await?;
    assert_outage_and_recovery(&service, "redis", redis.stop()).await?;
    redis.restart().await?;
    let took = service.wait_ready(Duration::from_secs(10)).await?;
    eprintln!("redis back: /readyz 200 after {took:?}");
    Ok(())
}

/// RabbitMQ carries only the login codes' mail. Its outage leaves the pod
/// ready, so a Service keeps routing to it (every replica loses RabbitMQ at
/// once: were they all unready, every connection would be refused, /me and
/// profiles included); `/readyz` names it as degraded, `/login` answers 503
/// naming it, and all of it mends itself when RabbitMQ is back.
#[tokio::test]
async fn a_rabbitmq_outage_degrades_logins_and_keeps_the_pod_ready() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let mut rabbit = RabbitServer::start().await?;
    let service = ServiceProcess::spawn(BIN, &env_with(&ns, &[("PARLEY_AMQP_URL", rabbit.url())]))?;
    service.wait_ready(Duration::from_secs(30)).await?;
    rabbit.stop().await?;
    let unready = std::sync::atomic::AtomicBool::new(false);
    wait_until(
        "rabbitmq listed as degraded",
        Duration::from_secs(10),
        || async {
            match service.readyz().await {
                Some((200, body)) => body["degraded"] == serde_json::json!(["rabbitmq"]),
                Some(_) => {
                    unready.store(true, std::sync::atomic::Ordering::Relaxed);
                    false
                }
                None => false,
            }
        },
    )
    .await?;
    assert!(
        !unready.load(std::sync::atomic::Ordering::Relaxed),
        "/readyz answered other than 200 during the RabbitMQ outage"
    );
    let (_, body) = service.readyz().await.expect("readyz answers");
    assert_eq!(body["failing"], serde_json::json!([]), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("degraded: rabbitmq"),
        "{body}"
    );
    assert_eq!(
        service
            .metric(r#"dependency_up{dependency="rabbitmq"}"#)
            .await?,
        0.0
    );
    let (status, body) = service
        .call(
            reqwest::Method::POST,
            "/api/v1/login",
            None,
            Some(serde_json::json!({"email": "degraded@example.com"})),
        )
        .await?;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rabbitmq"),
        "{body}"
    );
    rabbit.restart().await?;
    service.wait_whole(Duration::from_secs(15)).await?;
    Ok(())
}

#[tokio::test]
async fn readiness_follows_a_mongodb_outage() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let mut mongo = MongoServer::start().await?;
    let service =
        ServiceProcess::spawn(BIN, &env_with(&ns, &[("PARLEY_MONGODB_URI", mongo.uri())]))?;
    service.wait_ready(Duration::from_secs(30)).await?;
    assert_outage_and_recovery(&service, "mongodb", mongo.stop()).await?;
    mongo.restart().await?;
    let took = service.wait_ready(Duration::from_secs(10)).await?;
    eprintln!("mongodb back: /readyz 200 after {took:?}");
    Ok(())
}

#[tokio::test]
async fn starts_before_its_dependencies_and_becomes_ready_when_they_come() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let mut redis = RedisServer::start().await?;
    redis.stop().await?;
    let service = ServiceProcess::spawn(BIN, &env_with(&ns, &[("PARLEY_REDIS_URL", redis.url())]))?;
    service.wait_readyz(503, Duration::from_secs(10)).await?;
    let health = service.http().get(service.url("/healthz")).send().await?;
    assert_eq!(health.status(), 200, "alive while redis is missing");
    redis.restart().await?;
    service.wait_ready(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let mut service = ServiceProcess::spawn(BIN, &base_env(&ns))?;
    service.wait_ready(Duration::from_secs(30)).await?;
    let code = service.terminate(Duration::from_secs(15)).await?;
    assert_eq!(code, Some(0), "output:\n{}", service.output());
    assert!(service.output().contains("shutdown requested"));
    Ok(())
}

#[tokio::test]
async fn metrics_and_json_errors() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let service = ServiceProcess::spawn(BIN, &base_env(&ns))?;
    service.wait_ready(Duration::from_secs(30)).await?;
    let missing = service
        .http()
        .get(service.url("/no/such/route"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await?;
    assert!(body["message"].is_string(), "{body}");
    let metrics = service
        .http()
        .get(service.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains(r#"route="/readyz""#), "{metrics}");
    // Every log line is JSON.
    let output = service.output();
    let first = output.lines().next().unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(first)?;
    assert!(parsed["level"].is_string(), "{first}");
    Ok(())
}

#[tokio::test]
async fn configuration_errors_name_the_variable() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let without = |var: &str| -> Vec<(String, String)> {
        base_env(&ns)
            .into_iter()
            .filter(|(k, _)| k != var)
            .collect()
    };
    for var in [
        "PARLEY_MONGODB_URI",
        "PARLEY_REDIS_URL",
        "PARLEY_AMQP_URL",
        "PARLEY_JWT_PRIVATE_KEY_FILE",
        "PARLEY_OTP_SECRET",
    ] {
        assert_config_error(BIN, &without(var), var).await?;
    }
    for (var, value) in [
        ("PARLEY_HTTP_ADDR", "127.0.0.1:abc"),
        ("PARLEY_REDIS_URL", "http://127.0.0.1:6379"),
        ("PARLEY_AMQP_URL", "not a url"),
        ("PARLEY_MONGODB_URI", "mongodb://"),
        ("PARLEY_SHUTDOWN_GRACE_SECS", "soon"),
        ("PARLEY_OTP_SECRET", "too short"),
        ("PARLEY_JWT_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
        ("PARLEY_OTP_MAX_ATTEMPTS", "0"),
        ("PARLEY_LOG", "parley_user=loud"),
    ] {
        assert_config_error(BIN, &env_with(&ns, &[(var, value.to_owned())]), var).await?;
    }
    Ok(())
}
