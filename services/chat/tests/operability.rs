//! The chat binary starts on real dependencies, reports them in `/readyz`,
//! names bad configuration and exits cleanly on SIGTERM.

use std::time::Duration;

use parley_testkit::{Namespace, ServiceProcess, assert_config_error};

const BIN: &str = env!("CARGO_BIN_EXE_parley-chat");

#[tokio::test]
async fn ready_on_real_dependencies_and_clean_exit() -> anyhow::Result<()> {
    let ns = Namespace::new()?;
    let mut service = ServiceProcess::spawn(BIN, &ns.env())?;
    service.wait_ready(Duration::from_secs(30)).await?;
    let (_, body) = service.readyz().await.expect("readyz answers");
    for dep in ["mongodb", "redis", "rabbitmq"] {
        assert_eq!(body["checks"][dep], "ok", "{body}");
    }
    assert_eq!(service.terminate(Duration::from_secs(15)).await?, Some(0));
    Ok(())
}

#[tokio::test]
async fn configuration_errors_name_the_variable() -> anyhow::Result<()> {
    let ns = Namespace::new()?;
    let env: Vec<(String, String)> = ns
        .env()
        .into_iter()
        .filter(|(k, _)| k != "PARLEY_REDIS_URL")
        .collect();
    assert_config_error(BIN, &env, "PARLEY_REDIS_URL").await?;
    let mut env = ns.env();
    env.push(("PARLEY_HTTP_ADDR".into(), "abc".into()));
    assert_config_error(BIN, &env, "PARLEY_HTTP_ADDR").await
}
