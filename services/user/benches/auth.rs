//! Benchmark of the real login path and of `/me`, against the real binary
//! on the local Redis, RabbitMQ and MongoDB-protocol server.
//!
//! Run: `cargo bench -p parley-user --bench auth` (local stack up).
//! Knobs: PARLEY_BENCH_SECONDS (10), PARLEY_BENCH_CONCURRENCY (16).
//! login+verify = POST /login, the code read from the event the mail
//! service would get, POST /verify (a new user each time).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parley_common::events::{Envelope, OtpRequested};
use serde_json::json;
use tokio::sync::{Mutex, oneshot};

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

fn report(name: &str, ops: u64, secs: f64, hist: &Histogram<u64>, cpu: f64) {
    println!(
        "| {name} | {ops} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} |",
        ops as f64 / secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        cpu * 1000.0 / ops.max(1) as f64
    );
}

use parley_testkit::procfs::{cpu_secs, knob};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = knob("PARLEY_BENCH_SECONDS", 10);
    let concurrency = knob("PARLEY_BENCH_CONCURRENCY", 16) as usize;
    let stack = support::Stack::new()
        .await?
        .with("PARLEY_LOGIN_GLOBAL_PER_MINUTE", "1000000")
        .with("PARLEY_LOG", "warn");
    let mut mailbox = stack.mailbox().await?;
    let service = Arc::new(stack.service().await?);
    let pid = service.pid().unwrap_or(0);
    let (_, token) = support::login(&service, &mut mailbox, "bench@example.com").await?;

    // Route mailed codes to whoever waits for that address.
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    {
        let waiters = waiters.clone();
        tokio::spawn(async move {
            loop {
                // `next` gives up after a quiet spell; keep listening.
                let Ok(event) = mailbox.next().await else {
                    continue;
                };
                if let Ok(otp) = serde_json::from_value::<Envelope<OtpRequested>>(event)
                    && let Some(tx) = waiters.lock().await.remove(&otp.data.email)
                {
                    let _ = tx.send(otp.data.code);
                }
            }
        });
    }

    println!("## parley-user benchmark ({concurrency} concurrent clients, {seconds} s each)\n");
    println!(
        "| path | ops | ops/s | p50 ms | p99 ms | max ms | service CPU ms/op |\n|---|---|---|---|---|---|---|"
    );

    // GET /me
    let cpu0 = cpu_secs(pid);
    let stop = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (service, token) = (service.clone(), token.clone());
            tokio::spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
                while Instant::now() < stop {
                    let t = Instant::now();
                    let ok = service
                        .http()
                        .get(service.url("/api/v1/me"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if ok {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                    }
                }
                hist
            })
        })
        .collect();
    let mut me = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        me.add(t.await?)?;
    }
    report(
        "GET /api/v1/me",
        me.len(),
        seconds as f64,
        &me,
        cpu_secs(pid) - cpu0,
    );

    // POST /login + code from the event + POST /verify
    let cpu0 = cpu_secs(pid);
    let stop = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (service, waiters) = (service.clone(), waiters.clone());
            tokio::spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
                let mut n = 0u64;
                while Instant::now() < stop {
                    n += 1;
                    let email = format!("w{worker}-{n}@bench.example.com");
                    let (tx, rx) = oneshot::channel();
                    waiters.lock().await.insert(email.clone(), tx);
                    let t = Instant::now();
                    let login = service
                        .http()
                        .post(service.url("/api/v1/login"))
                        .json(&json!({"email": email}))
                        .send()
                        .await;
                    if !login.is_ok_and(|r| r.status() == 200) {
                        continue;
                    }
                    let Ok(Ok(code)) = tokio::time::timeout(Duration::from_secs(10), rx).await
                    else {
                        continue;
                    };
                    let verify = service
                        .http()
                        .post(service.url("/api/v1/verify"))
                        .json(&json!({"email": email, "otp": code}))
                        .send()
                        .await;
                    if verify.is_ok_and(|r| r.status() == 200) {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                    }
                }
                hist
            })
        })
        .collect();
    let mut flow = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        flow.add(t.await?)?;
    }
    report(
        "login + verify (new user)",
        flow.len(),
        seconds as f64,
        &flow,
        cpu_secs(pid) - cpu0,
    );
    Ok(())
}
