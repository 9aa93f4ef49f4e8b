//! The chat binary starts on real dependencies, reports them in `/readyz`,
//! names bad configuration and exits cleanly on SIGTERM.

mod support;

use std::time::Duration;

use parley_testkit::assert_config_error;
use support::{BIN, Stack};

#[tokio::test]
async fn ready_on_real_dependencies_and_clean_exit() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut service = stack.replica().await?;
    let (_, body) = service.readyz().await.expect("readyz answers");
    for dep in ["mongodb", "redis", "rabbitmq"] {
        assert_eq!(body["checks"][dep], "ok", "{body}");
    }
    assert_eq!(service.terminate(Duration::from_secs(15)).await?, Some(0));
    Ok(())
}

#[tokio::test]
async fn configuration_errors_name_the_variable() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    for var in [
        "PARLEY_REDIS_URL",
        "PARLEY_JWT_PUBLIC_KEYS_FILE",
        "PARLEY_USER_SERVICE_URL",
    ] {
        let env: Vec<(String, String)> =
            stack.env().into_iter().filter(|(k, _)| k != var).collect();
        assert_config_error(BIN, &env, var).await?;
    }
    for (var, value) in [
        ("PARLEY_HTTP_ADDR", "abc"),
        ("PARLEY_JWT_PUBLIC_KEYS_FILE", "/nonexistent/keys.pem"),
        ("PARLEY_MEDIA_MAX_BYTES", "lots"),
        ("PARLEY_USER_SERVICE_URL", "ftp://x"),
    ] {
        let mut env = stack.env();
        env.retain(|(k, _)| k != var);
        env.push((var.into(), value.into()));
        assert_config_error(BIN, &env, var).await?;
    }
    Ok(())
}

#[tokio::test]
async fn admission_limits_must_be_positive_whole_numbers() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    for (var, value) in [
        ("PARLEY_SOCKET_IN_FLIGHT", "0"),
        ("PARLEY_SOCKET_RELAY_IN_FLIGHT", "0"),
        ("PARLEY_SOCKET_STORE_IN_FLIGHT", "many"),
    ] {
        let mut env = stack.env();
        env.retain(|(k, _)| k != var);
        env.push((var.into(), value.into()));
        assert_config_error(BIN, &env, var).await?;
    }
    Ok(())
}
