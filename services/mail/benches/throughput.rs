//! Throughput: N login codes queued on RabbitMQ, all delivered to a real
//! SMTP server (aiosmtpd) by the real mail binary.
//!
//! Run: `cargo bench -p parley-mail --bench throughput` (local stack up).
//! Knob: PARLEY_BENCH_CODES (1000), PARLEY_MAIL_PREFETCH passed through (16).

use std::time::{Duration, Instant};

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use parley_common::events::{Envelope, Event, OtpRequested};
use parley_testkit::{Namespace, ServiceProcess, SmtpSink, wait_until};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("PARLEY_BENCH_CODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let prefetch = std::env::var("PARLEY_MAIL_PREFETCH").unwrap_or_else(|_| "16".into());
    let ns = Namespace::new().await?;
    let sink = SmtpSink::start().await?;
    let (_conn, channel) = parley_testkit::events::channel(&ns.amqp_url()).await?;
    channel
        .queue_declare(
            "mail.otp".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            "mail.otp".into(),
            parley_common::events::EXCHANGE.into(),
            OtpRequested::TYPE.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let queued = Instant::now();
    for i in 0..n {
        let event = Envelope::new(OtpRequested {
            email: format!("u{i}@bench.example.com"),
            code: format!("{:06}", i % 1_000_000),
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
        });
        let body = serde_json::to_vec(&event)?;
        parley_testkit::events::publish(&channel, OtpRequested::TYPE, &event.id.to_string(), &body)
            .await?;
    }
    let queue_secs = queued.elapsed().as_secs_f64();

    let mut env = ns.env();
    env.extend(sink.env());
    env.extend([
        ("PARLEY_MAIL_PREFETCH".to_owned(), prefetch.clone()),
        ("PARLEY_LOG".to_owned(), "warn".to_owned()),
    ]);
    let service = ServiceProcess::spawn(env!("CARGO_BIN_EXE_parley-mail"), &env)?;
    let started = Instant::now();
    service.wait_ready(Duration::from_secs(30)).await?;
    let took = wait_until(
        "all codes at the SMTP server",
        Duration::from_secs(600),
        || async { sink.messages().map(|m| m.len()).unwrap_or(0) >= n },
    )
    .await?;
    let total = started.elapsed().as_secs_f64();
    let delivered = sink.messages()?.len();
    println!("## parley-mail throughput\n");
    println!("| figure | value |\n|---|---|");
    println!("| codes queued before the service started | {n} (in {queue_secs:.1} s) |");
    println!("| prefetch | {prefetch} |");
    println!("| delivered to the SMTP server | {delivered} |");
    println!(
        "| time from start to last delivery | {total:.1} s (ready in {:.1} s) |",
        total - took.as_secs_f64()
    );
    println!(
        "| throughput | {:.0} mails/s |",
        delivered as f64 / took.as_secs_f64().max(0.001)
    );
    Ok(())
}
