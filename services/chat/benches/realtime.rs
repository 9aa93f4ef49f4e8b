//! Realtime benchmark: N websocket clients through the real path (tokens,
//! REST chat creation, Socket.IO sends with acknowledgements, delivery to
//! the recipient on the other replica, delivered receipts).
//!
//! Run: `cargo bench -p parley-chat --bench realtime` with the local stack up.
//! Knobs: PARLEY_BENCH_SOCKETS (1000), PARLEY_BENCH_SECONDS (15),
//! PARLEY_BENCH_SENDERS (32). Two chat replicas; pairs are split across them.
//!
//! Reports delivered messages/s, end-to-end latency percentiles (send to
//! recipient's `newMessage`), RSS per 1,000 idle sockets and the service's
//! CPU time per delivered message (MongoDB stand-in caps throughput).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use mongodb::bson::{DateTime, doc, oid::ObjectId};
use parley_testkit::ServiceProcess;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Acknowledgement waiters of one socket, indexed by ack id.
type AckWaiters = Arc<Mutex<Vec<Option<tokio::sync::oneshot::Sender<Value>>>>>;

/// A minimal Socket.IO v4 client over websocket: enough for the benchmark.
struct Client {
    tx: mpsc::UnboundedSender<String>,
}

enum Incoming {
    NewMessage {
        chat: String,
        id: String,
        text: String,
    },
}

async fn connect(
    port: u16,
    token: &str,
    events: mpsc::UnboundedSender<(usize, Incoming)>,
    index: usize,
    acks: AckWaiters,
) -> anyhow::Result<Client> {
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio_tungstenite::connect_async(url).await?;
    let (mut sink, mut stream) = ws.split();
    // Open packet, then connect with the token.
    let open = stream
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no open packet"))??;
    anyhow::ensure!(
        open.to_text().unwrap_or_default().starts_with('0'),
        "unexpected {open:?}"
    );
    sink.send(Message::text(format!("40{}", json!({"token": token}))))
        .await?;
    loop {
        let frame = stream
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("closed during connect"))??;
        let text = frame.to_text().unwrap_or_default().to_owned();
        if text.starts_with("40") {
            break;
        }
        anyhow::ensure!(!text.starts_with("44"), "refused: {text}");
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let pong = tx.clone();
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            if sink.send(Message::text(out)).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            let Ok(text) = frame.to_text() else { continue };
            if text == "2" {
                let _ = pong.send("3".to_owned());
            } else if let Some(rest) = text.strip_prefix("43") {
                let split = rest.find('[').unwrap_or(rest.len());
                let (id, body) = rest.split_at(split);
                if let (Ok(id), Ok(body)) =
                    (id.parse::<usize>(), serde_json::from_str::<Value>(body))
                {
                    let waiter = acks.lock().await.get_mut(id).and_then(Option::take);
                    if let Some(w) = waiter {
                        let _ = w.send(body[0].clone());
                    }
                }
            } else if let Some(rest) = text.strip_prefix("42")
                && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(rest)
                && parts.first().and_then(Value::as_str) == Some("newMessage")
            {
                let m = &parts[1];
                let incoming = Incoming::NewMessage {
                    chat: m["chatId"].as_str().unwrap_or_default().to_owned(),
                    id: m["_id"].as_str().unwrap_or_default().to_owned(),
                    text: m["text"].as_str().unwrap_or_default().to_owned(),
                };
                let _ = events.send((index, incoming));
            }
        }
    });
    Ok(Client { tx })
}

use parley_testkit::procfs::{cpu_secs, knob, rss_kib};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sockets = knob("PARLEY_BENCH_SOCKETS", 1000).max(4) as usize / 2 * 2;
    let seconds = knob("PARLEY_BENCH_SECONDS", 15);
    let senders = (knob("PARLEY_BENCH_SENDERS", 32) as usize).min(sockets / 2);
    let stack = support::Stack::new()
        .await?
        .with("PARLEY_SOCKET_EVENTS_PER_SEC", "100000")
        .with("PARLEY_SOCKET_EVENT_BURST", "100000")
        .with("PARLEY_LOG", "warn");
    let replicas: Vec<ServiceProcess> = vec![stack.replica().await?, stack.replica().await?];
    let pids: Vec<u32> = replicas.iter().filter_map(ServiceProcess::pid).collect();

    // Users straight into MongoDB; chats through the REST route.
    let now = DateTime::now();
    let ids: Vec<ObjectId> = (0..sockets).map(|_| ObjectId::new()).collect();
    let docs: Vec<_> = ids.iter().enumerate().map(|(i, id)| doc! {"_id": id, "name": format!("u{i}"), "email": format!("u{i}@bench"), "createdAt": now, "updatedAt": now}).collect();
    for chunk in docs.chunks(1000) {
        stack
            .db
            .collection("users")
            .insert_many(chunk.to_vec())
            .await?;
    }
    let tokens: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            stack.signer.sign(
                &id.to_hex(),
                &format!("u{i}@bench"),
                &format!("u{i}"),
                chrono::Utc::now().timestamp(),
            )
        })
        .collect::<Result<_, _>>()?;
    let chats_started = Instant::now();
    let mut chats = vec![String::new(); sockets / 2];
    for (pair, slot) in chats.iter_mut().enumerate().take(senders) {
        let a = support::User {
            id: ids[2 * pair],
            name: String::new(),
            token: tokens[2 * pair].clone(),
        };
        let b = support::User {
            id: ids[2 * pair + 1],
            name: String::new(),
            token: tokens[2 * pair + 1].clone(),
        };
        *slot = support::open_chat(&replicas[0], &a, &b).await?;
    }
    let chat_secs = chats_started.elapsed().as_secs_f64();

    let rss_before: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let acks: Vec<AckWaiters> = (0..sockets)
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();
    let mut clients = Vec::with_capacity(sockets);
    let connect_started = Instant::now();
    let ports: Vec<u16> = replicas.iter().map(ServiceProcess::port).collect();
    let mut pending = futures::stream::iter((0..sockets).map(|i| {
        // Pair members on different replicas: every message crosses Redis.
        let port = ports[i % 2];
        let token = tokens[i].clone();
        let events = events_tx.clone();
        let ack = acks[i].clone();
        async move { connect(port, &token, events, i, ack).await }
    }))
    .buffered(200);
    while let Some(client) = pending.next().await {
        clients.push(client?);
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    // Idle: wait until connection set-up work (presence look-ups in the
    // MongoDB stand-in) has drained: /readyz (a MongoDB ping) answers fast again.
    let settle = Instant::now();
    let mut fast = 0;
    while fast < 3 && settle.elapsed() < Duration::from_secs(180) {
        let probe = Instant::now();
        let _ = replicas[0].readyz().await;
        fast = if probe.elapsed() < Duration::from_millis(50) {
            fast + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settle_secs = settle.elapsed().as_secs_f64();
    let rss_idle: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    while events_rx.try_recv().is_ok() {}

    // Sending phase: closed loop, each sender waits for its ack before the next send.
    let cpu_before: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let delivered = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let clients = Arc::new(clients);
    let mut handles = Vec::new();
    for pair in 0..senders {
        let (clients, acks, chat) = (clients.clone(), acks[2 * pair].clone(), chats[pair].clone());
        handles.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < stop_at {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let id = {
                    let mut a = acks.lock().await;
                    a.push(Some(tx));
                    a.len() - 1
                };
                let text = format!("{}", started.elapsed().as_micros());
                let packet = format!(
                    "42{id}{}",
                    json!(["sendMessage", {"chatId": chat, "text": text}])
                );
                if clients[2 * pair].tx.send(packet).is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(10), rx).await {
                    Ok(Ok(body)) if body.get("message").is_some() => sent += 1,
                    _ => break,
                }
            }
            sent
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let collector = {
        let delivered = delivered.clone();
        let clients = clients.clone();
        async move {
            let deadline = tokio::time::Instant::from_std(stop_at + Duration::from_secs(3));
            while let Ok(Some((index, Incoming::NewMessage { chat, id, text }))) =
                tokio::time::timeout_at(deadline, events_rx.recv()).await
            {
                if index % 2 == 1 {
                    if let Ok(sent_us) = text.parse::<u64>() {
                        let now = started.elapsed().as_micros() as u64;
                        let _ = latency.record(now.saturating_sub(sent_us).max(1));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    let receipt = format!(
                        "42{}",
                        json!(["messageDelivered", {"chatId": chat, "messageIds": [id]}])
                    );
                    let _ = clients[index].tx.send(receipt);
                }
            }
            latency
        }
    };
    let collector = tokio::spawn(collector);
    let mut sent = 0;
    for h in handles {
        sent += h.await.unwrap_or(0);
    }
    let send_secs = seconds as f64;
    let latency = collector.await?;
    let cpu_after: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let got = delivered.load(Ordering::Relaxed);

    println!("## parley-chat realtime benchmark\n");
    println!("| figure | value |\n|---|---|");
    println!("| sockets (2 replicas, pairs split across them) | {sockets} |");
    println!("| concurrent senders (closed loop) | {senders} |");
    println!("| chats created via REST | {senders} in {chat_secs:.1} s |");
    println!(
        "| connect {sockets} sockets | {connect_secs:.1} s ({:.0}/s) |",
        sockets as f64 / connect_secs
    );
    println!("| set-up drained after connecting | {settle_secs:.1} s |");
    println!(
        "| RSS before sockets / idle with sockets (both replicas) | {} MiB / {} MiB |",
        rss_before / 1024,
        rss_idle / 1024
    );
    println!(
        "| memory per 1,000 idle sockets | {:.1} MiB |",
        (rss_idle.saturating_sub(rss_before)) as f64 / 1024.0 / (sockets as f64 / 1000.0)
    );
    println!("| messages acknowledged | {sent} in {send_secs:.0} s |");
    println!(
        "| delivered to the recipient's socket | {got} ({:.0}/s) |",
        got as f64 / send_secs
    );
    println!(
        "| latency p50 / p99 / p99.9 / max | {:.1} / {:.1} / {:.1} / {:.1} ms |",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.value_at_quantile(0.999) as f64 / 1000.0,
        latency.max() as f64 / 1000.0
    );
    println!(
        "| chat service CPU per delivered message (both replicas) | {:.2} ms |",
        (cpu_after - cpu_before) * 1000.0 / got.max(1) as f64
    );
    drop(clients);
    Ok(())
}
