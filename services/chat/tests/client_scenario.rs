//! The front-end scenario of `e2e/js/scenario.mjs`, played here against the
//! whole stack on private servers: Redis, RabbitMQ, the MongoDB-protocol
//! server and an SMTP sink on spare ports, the real user and mail services,
//! and two chat replicas (the two users sit on different ones). Login codes
//! travel user → RabbitMQ → mail → SMTP and the script reads them from the
//! sink's folder, as `e2e/kind.sh` reads them from Mailpit in a cluster.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use parley_common::token::generate_ed25519_pem;
use parley_testkit::socketio::ensure_npm;
use parley_testkit::{
    MongoServer, RabbitServer, RedisServer, ServiceProcess, SmtpSink, workspace_binary,
    workspace_root,
};
use serde_json::Value;
use support::BIN;

/// Every step the script reports, in order.
const STEPS: &[&str] = &[
    "services.ready",
    "login.request",
    "login.code_mailed",
    "login.verify",
    "profile.update",
    "chat.open",
    "chat.list",
    "socket.connect",
    "presence.online",
    "chat.join",
    "typing",
    "message.send",
    "message.live",
    "message.history",
    "message.reply",
    "receipt.delivered",
    "receipt.seen",
    "group.create",
    "group.message",
    "group.typing",
    "group.receipts",
    "group.remove",
    "group.add",
    "presence.offline",
];

/// Bound of each step inside the script.
const STEP_TIMEOUT_MS: u64 = 20_000;
/// Bound of the whole script (every step at its bound, plus start-up).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(STEPS.len() as u64 * 20 + 30);
const READY: Duration = Duration::from_secs(60);

fn pem_file(pem: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(pem.as_bytes())?;
    Ok(file)
}

fn with(base: &[(String, String)], extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

async fn started(binary: &str, env: &[(String, String)]) -> anyhow::Result<ServiceProcess> {
    let service = ServiceProcess::spawn(binary, env)?;
    service.wait_ready(READY).await?;
    Ok(service)
}

/// The script's JSON lines (anything else it printed is ignored here and
/// shown on failure).
fn step_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("step").is_some())
        .collect()
}

#[tokio::test]
async fn the_front_end_scenario_passes_across_two_chat_replicas() -> anyhow::Result<()> {
    let start = Instant::now();
    ensure_npm()?;
    let user_bin = workspace_binary("parley-user")?;
    let mail_bin = workspace_binary("parley-mail")?;
    println!("binaries built in {:?}", start.elapsed());
    let servers_start = Instant::now();
    let (redis, mongo, rabbit, smtp) = tokio::try_join!(
        RedisServer::start(),
        MongoServer::start(),
        RabbitServer::start(),
        SmtpSink::start(),
    )?;

    println!(
        "redis, mongodb, rabbitmq, smtp up in {:?}",
        servers_start.elapsed()
    );
    let services_start = Instant::now();
    let (private_pem, public_pem) = generate_ed25519_pem()?;
    let private_key = pem_file(&private_pem)?;
    let public_keys = pem_file(&public_pem)?;
    let path = |f: &tempfile::NamedTempFile| f.path().to_string_lossy().into_owned();
    let shared = vec![
        ("PARLEY_MONGODB_URI".to_owned(), mongo.uri()),
        ("PARLEY_MONGODB_DATABASE".to_owned(), "parley".to_owned()),
        ("PARLEY_REDIS_URL".to_owned(), redis.url()),
        ("PARLEY_AMQP_URL".to_owned(), rabbit.url()),
    ];
    let user = started(
        &user_bin.to_string_lossy(),
        &with(
            &shared,
            &[
                ("PARLEY_JWT_PRIVATE_KEY_FILE", path(&private_key)),
                (
                    "PARLEY_OTP_SECRET",
                    "client-scenario-secret-client-scenario".to_owned(),
                ),
            ],
        ),
    )
    .await?;
    let mail = started(
        &mail_bin.to_string_lossy(),
        &[shared.clone(), smtp.env()].concat(),
    )
    .await?;
    let chat_env = with(
        &shared,
        &[
            ("PARLEY_JWT_PUBLIC_KEYS_FILE", path(&public_keys)),
            ("PARLEY_USER_SERVICE_URL", user.url("")),
        ],
    );
    let (chat_a, chat_b) = tokio::try_join!(started(BIN, &chat_env), started(BIN, &chat_env))?;

    println!(
        "user, mail and two chat replicas ready in {:?}",
        services_start.elapsed()
    );
    let script_start = Instant::now();
    let script = workspace_root().join("e2e/js/scenario.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("USER_URL", user.url(""))
        .env(
            "CHAT_URLS",
            format!("{},{}", chat_a.url(""), chat_b.url("")),
        )
        .env(
            "CODES_FROM",
            format!("dir:{}", smtp.mail_dir().to_string_lossy()),
        )
        .env("STEP_TIMEOUT_MS", STEP_TIMEOUT_MS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .map_err(|_| anyhow::anyhow!("scenario.mjs still running after {SCRIPT_TIMEOUT:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "scenario.mjs ran {:?}; stdout:\n{stdout}",
        script_start.elapsed()
    );

    let lines = step_lines(&stdout);
    let passed: Vec<&str> = lines
        .iter()
        .filter(|l| l["ok"] == true)
        .filter_map(|l| l["step"].as_str())
        .collect();
    let report = || {
        format!(
            "exit status {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- user log\n{}\n--- mail log\n{}\n--- chat A log\n{}\n--- chat B log\n{}",
            output.status.code(),
            user.output(),
            mail.output(),
            chat_a.output(),
            chat_b.output(),
        )
    };
    assert!(output.status.success(), "scenario failed: {}", report());
    assert_eq!(passed, STEPS, "steps passed, in order: {}", report());
    for line in &lines {
        assert!(
            line["ms"].as_u64().is_some_and(|ms| ms <= STEP_TIMEOUT_MS),
            "every step line carries its duration: {line}"
        );
    }
    Ok(())
}
