//! The mail binary on real RabbitMQ, Redis and a real SMTP server: ready
//! when all three answer, 503 naming smtp while the SMTP server is down,
//! bad configuration named.

use std::time::Duration;

use parley_testkit::{Namespace, ServiceProcess, SmtpSink, assert_config_error};

const BIN: &str = env!("CARGO_BIN_EXE_parley-mail");

fn env(ns: &Namespace, smtp: &SmtpSink) -> Vec<(String, String)> {
    let mut env = ns.env();
    env.extend(smtp.env());
    env
}

#[tokio::test]
async fn readiness_follows_the_smtp_server() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let mut smtp = SmtpSink::start().await?;
    let service = ServiceProcess::spawn(BIN, &env(&ns, &smtp))?;
    service.wait_ready(Duration::from_secs(30)).await?;
    smtp.stop().await?;
    service.wait_readyz(503, Duration::from_secs(5)).await?;
    let (_, body) = service.readyz().await.expect("readyz answers");
    assert_eq!(body["failing"], serde_json::json!(["smtp"]), "{body}");
    smtp.restart().await?;
    service.wait_ready(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test]
async fn configuration_errors_name_the_variable() -> anyhow::Result<()> {
    let ns = Namespace::new().await?;
    let smtp = SmtpSink::start().await?;
    for (var, value) in [
        ("PARLEY_SMTP_PORT", "abc"),
        ("PARLEY_SMTP_TLS", "maybe"),
        ("PARLEY_MAIL_FROM", "nobody"),
    ] {
        let mut env = env(&ns, &smtp);
        env.retain(|(k, _)| k != var);
        env.push((var.to_owned(), value.to_owned()));
        assert_config_error(BIN, &env, var).await?;
    }
    let env: Vec<(String, String)> = env(&ns, &smtp)
        .into_iter()
        .filter(|(k, _)| k != "PARLEY_SMTP_HOST")
        .collect();
    assert_config_error(BIN, &env, "PARLEY_SMTP_HOST").await
}
