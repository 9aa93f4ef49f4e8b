//! Relay benchmark: the realtime targets of issue 12 with the project's own
//! Rust load generator (raw Socket.IO v4 over websocket, loopback only).
//!
//! Run with the local stack up (`source scripts/lib/deps.sh && parley_deps_up`):
//!
//! ```text
//! cargo bench -p parley-chat --bench relay -- <scenario>
//! ```
//!
//! Scenarios (knobs are environment variables, defaults in brackets):
//!
//! - `typing`: paired sockets, every socket sends `typing` to its partner at
//!   an open-loop rate; the partner's `userTyping` is timed.
//!   PARLEY_BENCH_SOCKETS [1000], PARLEY_BENCH_RATE [5000 events/s in total],
//!   PARLEY_BENCH_SECONDS [10], PARLEY_BENCH_PODS [1] (2: partners on different pods),
//!   PARLEY_BENCH_MESSAGE_RATE [0 messages/s sent alongside, over the socket].
//!   PARLEY_BENCH_ACK [1]: 0 sends typing without acknowledgements.
//! - `max`: closed loop, each socket keeps PARLEY_BENCH_WINDOW [8] typing
//!   events in flight; reports the best delivery rate and its latency.
//! - `idle`: PARLEY_BENCH_SOCKETS [10000] idle sockets; RSS per socket.
//! - `overload`: warm-up at PARLEY_BENCH_WARM_RATE [5000]/s for 5 s (the loaded
//!   level), then PARLEY_BENCH_RATE [200000]/s offered for PARLEY_BENCH_SECONDS [30],
//!   then idle: RSS through it, refusals (acks, `chatError`, metric), ack latency.
//! - `messages`: PARLEY_BENCH_SENDERS [32] sockets send `sendMessage` at
//!   PARLEY_BENCH_RATE [300]/s in total for PARLEY_BENCH_SECONDS [15]; the
//!   recipient times `newMessage` and answers `messageDelivered`.
//! - `smoke`: a short `typing` run (200 sockets, 500/s, 3 s, two pods) plus
//!   10 messages/s; prints its figures and fails only on lost deliveries or
//!   errors, never on timing (CI: `cargo bench --profile dev -p parley-chat
//!   --bench relay --locked -- smoke`).
//!
//! The benchmark raises `PARLEY_SOCKET_EVENTS_PER_SEC`/`_BURST` (the per-socket
//! limit, 10/s by default) to 1,000,000 so that it measures the relay, not the
//! limit; `overload` keeps the server's admission limits at their defaults.
//! Chat CPU is the chat process's user+system time over the measured window.
//! `PARLEY_BENCH_CHAT_BIN` points the benchmark at another build of the service;
//! `PARLEY_SOCKET_*` variables in the benchmark's environment are passed to
//! the service (except in `overload`); `PARLEY_BENCH_MONGO_URI_OPTIONS` is
//! appended to the service's MongoDB connection string.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use mongodb::bson::{DateTime, doc, oid::ObjectId};
use parley_testkit::ServiceProcess;
use parley_testkit::procfs::{cpu_secs, knob, rss_kib};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Shared counters and histograms of one run.
#[derive(Default)]
struct Stats {
    typing_sent: AtomicU64,
    typing_delivered: AtomicU64,
    acked_ok: AtomicU64,
    acked_error: AtomicU64,
    chat_errors: AtomicU64,
    messages_sent: AtomicU64,
    messages_acked: AtomicU64,
    messages_delivered: AtomicU64,
    /// Send-queue overflows in the generator itself (not the server's fault).
    generator_overflow: AtomicU64,
    /// Error answers by status and message (first 60 characters).
    errors: std::sync::Mutex<HashMap<String, u64>>,
    typing_latency: std::sync::Mutex<Option<Histogram<u64>>>,
    ack_latency: std::sync::Mutex<Option<Histogram<u64>>>,
    message_latency: std::sync::Mutex<Option<Histogram<u64>>>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, up to 120 s.
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

impl Stats {
    fn new() -> Arc<Self> {
        let s = Self::default();
        for h in [&s.typing_latency, &s.ack_latency, &s.message_latency] {
            if let Ok(mut h) = h.lock() {
                *h = Some(histogram());
            }
        }
        Arc::new(s)
    }

    fn record(h: &std::sync::Mutex<Option<Histogram<u64>>>, micros: u64) {
        if let Ok(mut h) = h.lock()
            && let Some(h) = h.as_mut()
        {
            let _ = h.record(micros.max(1));
        }
    }

    fn note_error(&self, body: &str) {
        let key: String = body
            .split("\"message\":")
            .nth(1)
            .unwrap_or(body)
            .chars()
            .take(60)
            .collect();
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(key).or_default() += 1;
        }
    }

    fn error_summary(&self) -> String {
        self.errors
            .lock()
            .map(|e| {
                e.iter()
                    .map(|(k, n)| format!("{n}× {}", k.replace('|', "/")))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    fn reset_latency(&self) {
        for h in [
            &self.typing_latency,
            &self.ack_latency,
            &self.message_latency,
        ] {
            if let Ok(mut h) = h.lock()
                && let Some(h) = h.as_mut()
            {
                h.reset();
            }
        }
    }

    fn quantiles(h: &std::sync::Mutex<Option<Histogram<u64>>>) -> String {
        let Ok(h) = h.lock() else {
            return "-".into();
        };
        match h.as_ref() {
            Some(h) if !h.is_empty() => format!(
                "{:.2} / {:.2} / {:.2} / {:.2} ms",
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.value_at_quantile(0.999) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            ),
            _ => "-".into(),
        }
    }

    fn p99_ms(h: &std::sync::Mutex<Option<Histogram<u64>>>) -> f64 {
        h.lock()
            .ok()
            .and_then(|h| {
                h.as_ref()
                    .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0)
            })
            .unwrap_or(0.0)
    }
}

/// Typing events one socket sent and its partner has not yet received.
type Fifo = Arc<std::sync::Mutex<VecDeque<(u64, Instant)>>>;

/// One connected benchmark socket.
struct Client {
    out: mpsc::Sender<String>,
    acks: Arc<std::sync::Mutex<HashMap<u64, (Instant, AckKind)>>>,
    next_ack: AtomicU64,
    /// Flow-control permits for closed-loop mode (returned on delivery or refusal).
    window: Arc<Semaphore>,
    /// The reader and writer tasks: aborted on drop, which closes the socket.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Clone, Copy)]
enum AckKind {
    Typing,
    Message,
}

impl Client {
    fn send(&self, stats: &Stats, packet: String) -> bool {
        match self.out.try_send(packet) {
            Ok(()) => true,
            Err(_) => {
                stats.generator_overflow.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn ack_id(&self, kind: AckKind) -> u64 {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut acks) = self.acks.lock() {
            acks.insert(id, (Instant::now(), kind));
        }
        id
    }
}

/// What a socket does with what it receives.
struct Wiring {
    stats: Arc<Stats>,
    /// FIFO of typing sent *to* this socket (by its partner).
    inbound: Fifo,
    /// The partner's window, released when this socket receives its typing.
    partner_window: Option<Arc<Semaphore>>,
    /// This socket's own window, released when one of its events is refused.
    own_window: Arc<Semaphore>,
    /// FIFO of typing sent *by* this socket (a refused one is taken out).
    outbound: Fifo,
    /// Send a receipt for each `newMessage` from the partner (recipient side).
    receipts: Option<(String, String)>,
    epoch: Instant,
}

async fn connect(port: u16, token: &str, wiring: Wiring) -> anyhow::Result<Client> {
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    // TCP_NODELAY: small frames are not held back by Nagle's algorithm.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let (mut sink, mut stream) = ws.split();
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
    let (tx, mut rx) = mpsc::channel::<String>(4096);
    let pong = tx.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            if sink.feed(Message::text(out)).await.is_err() {
                return;
            }
            // Batch what is already queued into one flush.
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let acks: Arc<std::sync::Mutex<HashMap<u64, (Instant, AckKind)>>> = Arc::default();
    let window = wiring.own_window.clone();
    let mut client = Client {
        out: tx.clone(),
        acks: acks.clone(),
        next_ack: AtomicU64::new(0),
        window: window.clone(),
        tasks: vec![writer.abort_handle()],
    };
    let receipt_out = tx;
    let reader = tokio::spawn(async move {
        let Wiring {
            stats,
            inbound,
            partner_window,
            receipts,
            epoch,
            outbound,
            ..
        } = wiring;
        while let Some(Ok(frame)) = stream.next().await {
            let Ok(text) = frame.to_text() else { continue };
            if text == "2" {
                let _ = pong.try_send("3".to_owned());
            } else if let Some(rest) = text.strip_prefix("43") {
                let split = rest.find('[').unwrap_or(rest.len());
                let (id, body) = rest.split_at(split);
                let Ok(id) = id.parse::<u64>() else { continue };
                let entry = acks.lock().ok().and_then(|mut a| a.remove(&id));
                let is_error = body.contains("\"error\"");
                match entry {
                    Some((at, AckKind::Typing)) => {
                        if is_error {
                            stats.acked_error.fetch_add(1, Ordering::Relaxed);
                            stats.note_error(body);
                            // Refused: it will never arrive; take it out of
                            // the partner's FIFO and free the window.
                            if let Ok(mut f) = outbound.lock()
                                && let Some(pos) = f.iter().position(|(a, _)| *a == id)
                            {
                                f.remove(pos);
                            }
                            window.add_permits(1);
                        } else {
                            stats.acked_ok.fetch_add(1, Ordering::Relaxed);
                            Stats::record(&stats.ack_latency, at.elapsed().as_micros() as u64);
                        }
                    }
                    Some((at, AckKind::Message)) => {
                        if is_error {
                            stats.acked_error.fetch_add(1, Ordering::Relaxed);
                            stats.note_error(body);
                        } else {
                            stats.messages_acked.fetch_add(1, Ordering::Relaxed);
                            Stats::record(&stats.ack_latency, at.elapsed().as_micros() as u64);
                        }
                    }
                    None => {}
                }
            } else if text.starts_with("42[\"userTyping\"") {
                let sent = inbound.lock().ok().and_then(|mut f| f.pop_front());
                if let Some((_, sent)) = sent {
                    stats.typing_delivered.fetch_add(1, Ordering::Relaxed);
                    Stats::record(&stats.typing_latency, sent.elapsed().as_micros() as u64);
                    if let Some(w) = &partner_window {
                        w.add_permits(1);
                    }
                }
            } else if text.starts_with("42[\"chatError\"") {
                stats.chat_errors.fetch_add(1, Ordering::Relaxed);
            } else if let Some(rest) = text.strip_prefix("42[\"newMessage\",") {
                let Some((chat, sender)) = &receipts else {
                    continue;
                };
                let Ok(m) = serde_json::from_str::<Value>(rest.trim_end_matches(']')) else {
                    continue;
                };
                if m["sender"].as_str() != Some(sender.as_str()) {
                    continue;
                }
                if let Some(sent_us) = m["text"].as_str().and_then(|t| t.parse::<u64>().ok()) {
                    let now = epoch.elapsed().as_micros() as u64;
                    stats.messages_delivered.fetch_add(1, Ordering::Relaxed);
                    Stats::record(&stats.message_latency, now.saturating_sub(sent_us));
                }
                let receipt = format!(
                    "42{}",
                    json!(["messageDelivered", {"chatId": chat, "messageIds": [m["_id"]]}])
                );
                let _ = receipt_out.try_send(receipt);
            }
        }
    });
    client.tasks.push(reader.abort_handle());
    Ok(client)
}

/// Users, tokens and chats for `pairs` pairs, written straight to MongoDB.
struct World {
    ids: Vec<ObjectId>,
    tokens: Vec<String>,
    chats: Vec<String>,
}

async fn world(stack: &support::Stack, sockets: usize, with_chats: bool) -> anyhow::Result<World> {
    let now = DateTime::now();
    let ids: Vec<ObjectId> = (0..sockets).map(|_| ObjectId::new()).collect();
    let users: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| doc! {"_id": id, "name": format!("u{i}"), "email": format!("u{i}@bench"), "createdAt": now, "updatedAt": now})
        .collect();
    for chunk in users.chunks(1000) {
        stack
            .db
            .collection("users")
            .insert_many(chunk.to_vec())
            .await?;
    }
    let tokens = ids
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
        .collect::<Result<Vec<_>, _>>()?;
    let mut chats = Vec::new();
    if with_chats {
        let docs: Vec<_> = ids
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| {
                let id = ObjectId::new();
                chats.push(id.to_hex());
                doc! {"_id": id, "members": [p[0], p[1]], "pairKey": parley_chat::domain::pair_key(&p[0], &p[1]), "lastSeq": 0_i64, "createdAt": now, "updatedAt": now}
            })
            .collect();
        for chunk in docs.chunks(1000) {
            stack
                .db
                .collection("chats")
                .insert_many(chunk.to_vec())
                .await?;
        }
    }
    Ok(World { ids, tokens, chats })
}

/// The pods of a run and their process ids.
struct Pods {
    replicas: Vec<ServiceProcess>,
}

impl Pods {
    fn pids(&self) -> Vec<u32> {
        self.replicas
            .iter()
            .filter_map(ServiceProcess::pid)
            .collect()
    }
    fn rss_kib(&self) -> u64 {
        self.pids().iter().map(|p| rss_kib(*p)).sum()
    }
    fn cpu(&self) -> f64 {
        self.pids().iter().map(|p| cpu_secs(*p)).sum()
    }
    /// The cumulative buckets (`le` → count, `+Inf` last) of a histogram
    /// with `labels` (e.g. `class="relay"`), summed over every pod.
    async fn buckets(&self, name: &str, labels: &str) -> Vec<(f64, f64)> {
        let mut sums: Vec<(f64, f64)> = Vec::new();
        let prefix = format!("{name}_bucket{{");
        for r in &self.replicas {
            let Ok(resp) = r.http().get(r.url("/metrics")).send().await else {
                continue;
            };
            let Ok(body) = resp.text().await else {
                continue;
            };
            for line in body
                .lines()
                .filter(|l| l.starts_with(&prefix) && l.contains(labels))
            {
                let le = line
                    .split("le=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .map(|v| {
                        if v == "+Inf" {
                            f64::INFINITY
                        } else {
                            v.parse().unwrap_or(f64::NAN)
                        }
                    });
                let count = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
                if let (Some(le), Some(count)) = (le, count) {
                    match sums.iter_mut().find(|(l, _)| *l == le) {
                        Some((_, c)) => *c += count,
                        None => sums.push((le, count)),
                    }
                }
            }
        }
        sums.sort_by(|a, b| a.0.total_cmp(&b.0));
        sums
    }

    /// A counter summed over every pod's `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let mut total = 0.0;
        for r in &self.replicas {
            let Ok(resp) = r.http().get(r.url("/metrics")).send().await else {
                continue;
            };
            let Ok(body) = resp.text().await else {
                continue;
            };
            total += body
                .lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum::<f64>();
        }
        total
    }
}

async fn stack(pods: usize, admission_defaults: bool) -> anyhow::Result<(support::Stack, Pods)> {
    let mut stack = support::Stack::new()
        .await?
        .with("PARLEY_SOCKET_EVENTS_PER_SEC", "1000000")
        .with("PARLEY_SOCKET_EVENT_BURST", "1000000")
        .with("PARLEY_LOG", "warn");
    // Options for the stand-in MongoDB's connection string (e.g. a smaller pool).
    if let Ok(options) = std::env::var("PARLEY_BENCH_MONGO_URI_OPTIONS") {
        let uri = stack
            .env()
            .into_iter()
            .find(|(k, _)| k == "PARLEY_MONGODB_URI")
            .map(|(_, v)| v)
            .unwrap_or_default();
        stack = stack.with("PARLEY_MONGODB_URI", format!("{uri}{options}"));
    }
    for (k, v) in std::env::vars() {
        if k.starts_with("MIMALLOC_") || k.starts_with("MALLOC_") {
            stack = stack.with(&k, v);
        }
    }
    if !admission_defaults {
        for (k, v) in std::env::vars() {
            if k.starts_with("PARLEY_SOCKET_") && k != "PARLEY_SOCKET_EVENTS_PER_SEC" {
                stack = stack.with(&k, v);
            }
        }
    }
    // PARLEY_BENCH_CHAT_BIN runs another build of the service (the "before" figures).
    let bin = std::env::var("PARLEY_BENCH_CHAT_BIN").unwrap_or_else(|_| support::BIN.to_owned());
    let mut replicas = Vec::new();
    for _ in 0..pods {
        let replica = ServiceProcess::spawn(&bin, &stack.env())?;
        replica.wait_ready(Duration::from_secs(30)).await?;
        replicas.push(replica);
    }
    Ok((stack, Pods { replicas }))
}

/// Connected pairs: socket 2k and 2k+1 share chat k.
struct Pairs {
    clients: Vec<Arc<Client>>,
    /// Per socket: the FIFO its partner reads from (typing sent by this socket).
    outbound: Vec<Fifo>,
    chats: Vec<String>,
    connect_secs: f64,
}

async fn connect_pairs(
    world: &World,
    pods: &Pods,
    stats: &Arc<Stats>,
    epoch: Instant,
    closed_loop: bool,
) -> anyhow::Result<Pairs> {
    let n = world.ids.len();
    let fifos: Vec<Fifo> = (0..n).map(|_| Fifo::default()).collect();
    let windows: Vec<Arc<Semaphore>> = (0..n).map(|_| Arc::new(Semaphore::new(0))).collect();
    let ports: Vec<u16> = pods.replicas.iter().map(ServiceProcess::port).collect();
    let started = Instant::now();
    let mut pending = futures::stream::iter((0..n).map(|i| {
        let partner = i ^ 1;
        // With two pods, partners always sit on different pods.
        let port = ports[i % ports.len()];
        let token = world.tokens[i].clone();
        let wiring = Wiring {
            stats: stats.clone(),
            inbound: fifos[partner].clone(),
            partner_window: closed_loop.then(|| windows[partner].clone()),
            own_window: windows[i].clone(),
            outbound: fifos[i].clone(),
            receipts: world
                .chats
                .get(i / 2)
                .map(|c| (c.clone(), world.ids[partner].to_hex())),
            epoch,
        };
        async move { connect(port, &token, wiring).await }
    }))
    .buffered(100);
    let mut clients = Vec::with_capacity(n);
    while let Some(client) = pending.next().await {
        clients.push(Arc::new(client?));
    }
    drop(pending);
    Ok(Pairs {
        clients,
        outbound: fifos,
        chats: world.chats.clone(),
        connect_secs: started.elapsed().as_secs_f64(),
    })
}

/// A typing packet with an ack id, recorded in the sender's FIFO first.
/// Without an ack (`PARLEY_BENCH_ACK=0`, as the original's load test), a
/// refusal comes back as `chatError` and cannot be matched to its event.
fn typing_packet(client: &Client, fifo: &Fifo, chat: &str) -> String {
    static WITH_ACK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*WITH_ACK.get_or_init(|| knob("PARLEY_BENCH_ACK", 1) != 0) {
        if let Ok(mut f) = fifo.lock() {
            f.push_back((u64::MAX, Instant::now()));
        }
        return format!("42[\"typing\",{{\"chatId\":\"{chat}\"}}]");
    }
    let id = client.ack_id(AckKind::Typing);
    if let Ok(mut f) = fifo.lock() {
        f.push_back((id, Instant::now()));
    }
    format!("42{id}[\"typing\",{{\"chatId\":\"{chat}\"}}]")
}

/// Open-loop typing from every socket at `rate` events/s in total until `stop`.
fn drive_typing(
    pairs: &Pairs,
    stats: &Arc<Stats>,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    let n = pairs.clients.len();
    let per_socket = rate / n as f64;
    // Each socket ticks at most 1,000 times a second and sends a share per tick.
    let ticks = per_socket.clamp(0.1, 1000.0);
    let per_tick = per_socket / ticks;
    let period = Duration::from_secs_f64(1.0 / ticks);
    for i in 0..n {
        let client = pairs.clients[i].clone();
        let fifo = pairs.outbound[i].clone();
        let chat = pairs.chats[i / 2].clone();
        let stats = stats.clone();
        let stop = stop.clone();
        let offset = period.mul_f64(i as f64 / n as f64);
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut owed = 0.0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let packet = typing_packet(&client, &fifo, &chat);
                    if client.send(&stats, packet) {
                        stats.typing_sent.fetch_add(1, Ordering::Relaxed);
                    } else if let Ok(mut f) = fifo.lock() {
                        f.pop_back();
                    }
                }
            }
        }));
    }
    handles
}

/// Closed-loop typing: each socket keeps `window` events in flight.
fn drive_closed(
    pairs: &Pairs,
    stats: &Arc<Stats>,
    window: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for (i, client) in pairs.clients.iter().enumerate() {
        let client = client.clone();
        client.window.add_permits(window);
        let fifo = pairs.outbound[i].clone();
        let chat = pairs.chats[i / 2].clone();
        let stats = stats.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok(permit)) =
                    tokio::time::timeout(Duration::from_secs(2), client.window.acquire()).await
                else {
                    // Nothing came back for 2 s: give the window back and go on.
                    client.window.add_permits(1);
                    continue;
                };
                permit.forget();
                let packet = typing_packet(&client, &fifo, &chat);
                if client.send(&stats, packet) {
                    stats.typing_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    if let Ok(mut f) = fifo.lock() {
                        f.pop_back();
                    }
                    client.window.add_permits(1);
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    handles
}

/// Open-loop `sendMessage` from the first `senders` pairs' even sockets.
fn drive_messages(
    pairs: &Pairs,
    stats: &Arc<Stats>,
    senders: usize,
    rate: f64,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    let senders = senders.min(pairs.chats.len()).max(1);
    let period = Duration::from_secs_f64(senders as f64 / rate.max(0.001));
    for pair in 0..senders {
        let client = pairs.clients[2 * pair].clone();
        let chat = pairs.chats[pair].clone();
        let stats = stats.clone();
        let stop = stop.clone();
        let offset = period.mul_f64(pair as f64 / senders as f64);
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let id = client.ack_id(AckKind::Message);
                let text = epoch.elapsed().as_micros().to_string();
                let packet = format!(
                    "42{id}{}",
                    json!(["sendMessage", {"chatId": chat, "text": text}])
                );
                if client.send(&stats, packet) {
                    stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    handles
}

/// Waits for stopped drivers to send their last event (each may be asleep
/// until its next tick when the stop comes), so that nothing is sent after
/// the counts are read; a driver stuck past 15 s is aborted.
async fn finish(drivers: Vec<tokio::task::JoinHandle<()>>) {
    for driver in drivers {
        let abort = driver.abort_handle();
        if tokio::time::timeout(Duration::from_secs(15), driver)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// Waits until every typing event and message is accounted for, or
/// `limit`: what has not arrived by then is lost (a late arrival shows in
/// the latency figures instead). Gives up early only after 5 s without any
/// change, when nothing more is coming.
async fn drain(stats: &Stats, limit: Duration) {
    let until = Instant::now() + limit;
    let mut last = (u64::MAX, u64::MAX, u64::MAX);
    let mut unchanged = 0;
    while Instant::now() < until && unchanged < 20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = (
            stats.typing_delivered.load(Ordering::Relaxed),
            stats.messages_delivered.load(Ordering::Relaxed),
            stats.acked_error.load(Ordering::Relaxed),
        );
        let typing_done = now.0 + now.2 >= stats.typing_sent.load(Ordering::Relaxed);
        let messages_done = now.1 >= stats.messages_acked.load(Ordering::Relaxed)
            && stats.messages_acked.load(Ordering::Relaxed) + now.2
                >= stats.messages_sent.load(Ordering::Relaxed);
        if typing_done && messages_done {
            return;
        }
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
    }
}

/// Pure: the service's own latency over a window, from the histogram's
/// cumulative buckets before and after it: the events, the share answered
/// within 100 ms, and the bucket bound under which 99 % were answered.
fn server_latency(before: &[(f64, f64)], after: &[(f64, f64)]) -> String {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return "-".into();
    }
    let within_100ms = delta
        .iter()
        .filter(|(le, _)| *le <= 0.1)
        .map(|(_, n)| *n)
        .fold(0.0, f64::max);
    let p99 = delta
        .iter()
        .find(|(_, n)| *n >= 0.99 * total)
        .map_or(f64::INFINITY, |(le, _)| *le);
    format!(
        "{total:.0} events, {:.2} % within 100 ms, p99 ≤ {} ms",
        within_100ms * 100.0 / total,
        if p99.is_finite() {
            format!("{:.1}", p99 * 1000.0)
        } else {
            "∞".into()
        }
    )
}

fn row(name: &str, value: impl std::fmt::Display) {
    println!("| {name} | {value} |");
}

fn header(title: &str) {
    println!("\n## {title}\n");
    println!("| figure | value |\n|---|---|");
}

/// The outcome a CI smoke run checks.
struct Outcome {
    lost_typing: u64,
    lost_messages: u64,
    errors: u64,
}

async fn typing(scenario: &str) -> anyhow::Result<Outcome> {
    let smoke = scenario == "smoke";
    let closed = scenario == "max";
    let sockets =
        knob("PARLEY_BENCH_SOCKETS", if smoke { 200 } else { 1000 }).max(2) as usize / 2 * 2;
    let rate = knob("PARLEY_BENCH_RATE", if smoke { 500 } else { 5000 }) as f64;
    let seconds = knob("PARLEY_BENCH_SECONDS", if smoke { 3 } else { 10 });
    let pods = knob("PARLEY_BENCH_PODS", if smoke { 2 } else { 1 }).clamp(1, 2) as usize;
    let message_rate = knob("PARLEY_BENCH_MESSAGE_RATE", if smoke { 10 } else { 0 }) as f64;
    let window = knob("PARLEY_BENCH_WINDOW", 8) as usize;
    let (stack, pods_) = stack(pods, false).await?;
    let world = world(&stack, sockets, true).await?;
    let stats = Stats::new();
    let epoch = Instant::now();
    let rss0 = pods_.rss_kib();
    let pairs = connect_pairs(&world, &pods_, &stats, epoch, closed).await?;
    // Warm-up: one typing per socket (its one membership check), 128 sockets
    // at a time, so first-use work is neither refused nor in the figures.
    for chunk in (0..pairs.clients.len()).collect::<Vec<_>>().chunks(128) {
        for &i in chunk {
            let c = &pairs.clients[i];
            let packet = typing_packet(c, &pairs.outbound[i], &pairs.chats[i / 2]);
            c.send(&stats, packet);
            stats.typing_sent.fetch_add(1, Ordering::Relaxed);
        }
        drain(&stats, Duration::from_secs(30)).await;
    }
    let warm_refused = stats.acked_error.load(Ordering::Relaxed);
    let warm_lost = stats.typing_sent.load(Ordering::Relaxed)
        - stats.typing_delivered.load(Ordering::Relaxed)
        - stats.acked_error.load(Ordering::Relaxed);
    // Start the window from clean counters.
    for f in &pairs.outbound {
        if let Ok(mut f) = f.lock() {
            f.clear();
        }
    }
    if let Ok(mut e) = stats.errors.lock() {
        e.clear();
    }
    for c in [
        &stats.typing_sent,
        &stats.typing_delivered,
        &stats.acked_ok,
        &stats.acked_error,
        &stats.chat_errors,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    stats.reset_latency();
    let rss_loaded0 = pods_.rss_kib();
    let cpu0 = pods_.cpu();
    let served0 = pods_
        .buckets("chat_socket_event_seconds", "class=\"relay\"")
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut drivers = if closed {
        drive_closed(&pairs, &stats, window, stop.clone())
    } else {
        drive_typing(&pairs, &stats, rate, stop.clone())
    };
    if message_rate > 0.0 {
        let senders = knob("PARLEY_BENCH_SENDERS", 16) as usize;
        drivers.extend(drive_messages(
            &pairs,
            &stats,
            senders,
            message_rate,
            epoch,
            stop.clone(),
        ));
    }
    let mut rss_peak = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(pods_.rss_kib());
    }
    stop.store(true, Ordering::Relaxed);
    let window_secs = t0.elapsed().as_secs_f64();
    let cpu_window = pods_.cpu() - cpu0;
    finish(drivers).await;
    drain(&stats, Duration::from_secs(10)).await;
    let served = pods_
        .buckets("chat_socket_event_seconds", "class=\"relay\"")
        .await;
    let sent = stats.typing_sent.load(Ordering::Relaxed);
    let delivered = stats.typing_delivered.load(Ordering::Relaxed);
    let refused =
        stats.acked_error.load(Ordering::Relaxed) + stats.chat_errors.load(Ordering::Relaxed);
    let lost = sent.saturating_sub(delivered + refused);
    let m_sent = stats.messages_sent.load(Ordering::Relaxed);
    let m_acked = stats.messages_acked.load(Ordering::Relaxed);
    let m_delivered = stats.messages_delivered.load(Ordering::Relaxed);
    let deliveries = delivered + m_delivered;
    let diagnosis = if lost > 0 || m_acked > m_delivered {
        Some(diagnose(&pairs, &pods_).await)
    } else {
        None
    };

    header(&format!(
        "relay `{scenario}`: {sockets} sockets, {pods} pod(s){}",
        if closed {
            format!(", closed loop, window {window}")
        } else {
            format!(", {rate:.0} typing/s offered")
        }
    ));
    row(
        "connect all sockets",
        format!(
            "{:.1} s ({:.0}/s)",
            pairs.connect_secs,
            sockets as f64 / pairs.connect_secs
        ),
    );
    row(
        "RSS before sockets / connected and warm / peak in window",
        format!(
            "{} / {} / {} MiB",
            rss0 / 1024,
            rss_loaded0 / 1024,
            rss_peak / 1024
        ),
    );
    row(
        "warm-up typing lost / refused",
        format!("{warm_lost} / {warm_refused}"),
    );
    row(
        "typing sent / delivered / refused / lost",
        format!("{sent} / {delivered} / {refused} / {lost}"),
    );
    row(
        "typing delivered per second",
        format!("{:.0}", delivered as f64 / window_secs),
    );
    row(
        "typing latency p50 / p99 / p99.9 / max",
        Stats::quantiles(&stats.typing_latency),
    );
    row(
        "ack latency p50 / p99 / p99.9 / max",
        Stats::quantiles(&stats.ack_latency),
    );
    row(
        "typing, read to answer in the service",
        server_latency(&served0, &served),
    );
    if message_rate > 0.0 {
        row(
            "messages sent / acked / delivered",
            format!("{m_sent} / {m_acked} / {m_delivered}"),
        );
        row(
            "message latency p50 / p99 / p99.9 / max",
            Stats::quantiles(&stats.message_latency),
        );
    }
    row(
        "chatError events",
        stats.chat_errors.load(Ordering::Relaxed),
    );
    row("error answers", stats.error_summary());
    row(
        "generator overflow (client side)",
        stats.generator_overflow.load(Ordering::Relaxed),
    );
    row(
        "chat CPU in window / per delivery",
        format!(
            "{:.2} s / {:.1} µs",
            cpu_window,
            cpu_window * 1e6 / deliveries.max(1) as f64
        ),
    );
    row(
        "chat CPU share of the window",
        format!("{:.0} %", cpu_window * 100.0 / window_secs),
    );
    if let Some(diagnosis) = diagnosis {
        println!("\n{diagnosis}");
    }
    drop(pairs);
    drop(stack);
    Ok(Outcome {
        lost_typing: lost + warm_lost,
        lost_messages: m_acked.saturating_sub(m_delivered),
        errors: refused + m_sent.saturating_sub(m_acked),
    })
}

/// Where undelivered events may have gone: the generator's unanswered
/// acknowledgements, the partners still waiting, the pods' drop counters and
/// their warnings. Printed only when something was lost.
async fn diagnose(pairs: &Pairs, pods: &Pods) -> String {
    let mut out = String::from("### Loss diagnosis\n\n");
    let (mut typing_unacked, mut messages_unacked) = (0, 0);
    for client in &pairs.clients {
        if let Ok(acks) = client.acks.lock() {
            for (_, kind) in acks.values() {
                match kind {
                    AckKind::Typing => typing_unacked += 1,
                    AckKind::Message => messages_unacked += 1,
                }
            }
        }
    }
    out.push_str(&format!(
        "- acknowledgements never received: {typing_unacked} typing, {messages_unacked} messages\n"
    ));
    for (i, fifo) in pairs.outbound.iter().enumerate() {
        let Ok(f) = fifo.lock() else { continue };
        if f.is_empty() {
            continue;
        }
        let acked = pairs.clients[i]
            .acks
            .lock()
            .map(|a| f.iter().filter(|(id, _)| !a.contains_key(id)).count())
            .unwrap_or(0);
        let oldest = f
            .front()
            .map(|(_, at)| at.elapsed().as_millis())
            .unwrap_or(0);
        out.push_str(&format!(
            "- socket {i} (pod {}) → socket {} (pod {}): {} undelivered ({acked} of them acknowledged), the oldest sent {oldest} ms ago\n",
            i % pods.replicas.len(),
            i ^ 1,
            (i ^ 1) % pods.replicas.len(),
            f.len(),
        ));
    }
    for name in [
        "chat_socket_relays_dropped_total",
        "socketio_adapter_dropped_total",
        "socketio_adapter_publish_failed_total",
        "chat_socket_events_refused_total",
    ] {
        out.push_str(&format!("- {name}: {}\n", pods.metric(name).await));
    }
    for (i, pod) in pods.replicas.iter().enumerate() {
        for line in pod
            .output()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
        {
            out.push_str(&format!("- pod {i}: {line}\n"));
        }
    }
    out
}

async fn idle() -> anyhow::Result<()> {
    let sockets = knob("PARLEY_BENCH_SOCKETS", 10_000) as usize;
    let (stack, pods) = stack(1, false).await?;
    let world = world(&stack, sockets, false).await?;
    // Let the fresh process settle (index creation, first connections).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = pods.rss_kib();
    let stats = Stats::new();
    let epoch = Instant::now();
    let ports: Vec<u16> = pods.replicas.iter().map(ServiceProcess::port).collect();
    let started = Instant::now();
    let mut pending = futures::stream::iter((0..sockets).map(|i| {
        let wiring = Wiring {
            stats: stats.clone(),
            inbound: Fifo::default(),
            partner_window: None,
            own_window: Arc::new(Semaphore::new(0)),
            outbound: Fifo::default(),
            receipts: None,
            epoch,
        };
        let token = world.tokens[i].clone();
        let port = ports[0];
        async move { connect(port, &token, wiring).await }
    }))
    .buffered(100);
    let mut clients = Vec::with_capacity(sockets);
    while let Some(c) = pending.next().await {
        clients.push(c?);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Wait until connection work has drained: RSS stable for 2 s.
    let mut last = 0;
    let mut stable = 0;
    let settle = Instant::now();
    while stable < 4 && settle.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = pods.rss_kib();
        stable = if now.abs_diff(last) < 256 {
            stable + 1
        } else {
            0
        };
        last = now;
    }
    let rss1 = pods.rss_kib();
    header(&format!("idle memory: {sockets} sockets, one pod"));
    row(
        "connect",
        format!(
            "{connect_secs:.1} s ({:.0}/s)",
            sockets as f64 / connect_secs
        ),
    );
    row(
        "RSS fresh process / with idle sockets",
        format!(
            "{:.1} / {:.1} MiB",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0
        ),
    );
    row(
        "memory per idle socket",
        format!(
            "{:.1} KiB",
            rss1.saturating_sub(rss0) as f64 / sockets as f64
        ),
    );
    drop(clients);
    // Memory after every socket has gone.
    let gone = Instant::now();
    while pods.metric("chat_sockets_connected").await > 0.0
        && gone.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The lowest RSS within 15 s (the runtime gives freed heap back every
    // 10 s).
    let mut rss_gone = pods.rss_kib();
    let closed_at = Instant::now();
    while closed_at.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_gone = rss_gone.min(pods.rss_kib());
    }
    row(
        "RSS after every socket closed (lowest in 15 s)",
        format!("{:.1} MiB", rss_gone as f64 / 1024.0),
    );
    drop(stack);
    Ok(())
}

async fn overload() -> anyhow::Result<()> {
    let sockets = knob("PARLEY_BENCH_SOCKETS", 1000) as usize / 2 * 2;
    let warm_rate = knob("PARLEY_BENCH_WARM_RATE", 5000) as f64;
    let rate = knob("PARLEY_BENCH_RATE", 200_000) as f64;
    let seconds = knob("PARLEY_BENCH_SECONDS", 30);
    let (stack, pods) = stack(1, true).await?;
    let world = world(&stack, sockets, true).await?;
    let stats = Stats::new();
    let epoch = Instant::now();
    let pairs = connect_pairs(&world, &pods, &stats, epoch, false).await?;
    let rss0 = pods.rss_kib();
    // Loaded level: the normal load for 5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let drivers = drive_typing(&pairs, &stats, warm_rate, stop.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    finish(drivers).await;
    drain(&stats, Duration::from_secs(10)).await;
    let rss_loaded = pods.rss_kib();
    let warm = (
        stats.typing_sent.load(Ordering::Relaxed),
        stats.typing_delivered.load(Ordering::Relaxed),
    );
    stats.reset_latency();
    let refused_metric0 = pods.metric("chat_socket_events_refused_total").await;
    let base = (
        stats.typing_sent.load(Ordering::Relaxed),
        stats.typing_delivered.load(Ordering::Relaxed),
        stats.acked_error.load(Ordering::Relaxed),
        stats.chat_errors.load(Ordering::Relaxed),
        stats.acked_ok.load(Ordering::Relaxed),
    );
    let cpu0 = pods.cpu();
    let served0 = pods
        .buckets("chat_socket_event_seconds", "class=\"relay\"")
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let drivers = drive_typing(&pairs, &stats, rate, stop.clone());
    let mut rss_peak = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(pods.rss_kib());
    }
    stop.store(true, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    let cpu = pods.cpu() - cpu0;
    finish(drivers).await;
    drain(&stats, Duration::from_secs(20)).await;
    let served = pods
        .buckets("chat_socket_event_seconds", "class=\"relay\"")
        .await;
    let after_stop = Instant::now();
    let mut rss_after = pods.rss_kib();
    // Memory returned: the lowest RSS within 15 s after the load (the
    // runtime gives freed heap back every 10 s).
    while after_stop.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_after = rss_after.min(pods.rss_kib());
    }
    let refused_metric = pods.metric("chat_socket_events_refused_total").await - refused_metric0;
    let sent = stats.typing_sent.load(Ordering::Relaxed) - base.0;
    let delivered = stats.typing_delivered.load(Ordering::Relaxed) - base.1;
    let refused = stats.acked_error.load(Ordering::Relaxed) - base.2;
    let chat_errors = stats.chat_errors.load(Ordering::Relaxed) - base.3;
    let acked = stats.acked_ok.load(Ordering::Relaxed) - base.4;
    header(&format!(
        "overload: {sockets} sockets, {rate:.0} typing/s offered for {seconds} s, default admission limits"
    ));
    row(
        "warm-up at normal load (sent / delivered)",
        format!("{} / {} at {warm_rate:.0}/s", warm.0, warm.1),
    );
    row(
        "RSS connected / loaded / peak under overload / lowest in 15 s after",
        format!(
            "{} / {} / {} / {} MiB",
            rss0 / 1024,
            rss_loaded / 1024,
            rss_peak / 1024,
            rss_after / 1024
        ),
    );
    row(
        "typing sent (reached the generator's socket) per second",
        format!("{:.0}", sent as f64 / window),
    );
    row(
        "admitted (acked ok) / delivered / refused (ack errors)",
        format!("{acked} / {delivered} / {refused}"),
    );
    row(
        "unanswered (neither acked nor refused)",
        sent.saturating_sub(acked + refused),
    );
    row("chatError events", chat_errors);
    row("error answers", stats.error_summary());
    row("refused, server metric", format!("{refused_metric:.0}"));
    row(
        "admitted ack latency p50 / p99 / p99.9 / max (generator clock)",
        Stats::quantiles(&stats.ack_latency),
    );
    row(
        "admitted, read to answer in the service (chat_socket_event_seconds)",
        server_latency(&served0, &served),
    );
    row(
        "delivery latency p50 / p99 / p99.9 / max",
        Stats::quantiles(&stats.typing_latency),
    );
    row(
        "generator overflow (client side)",
        stats.generator_overflow.load(Ordering::Relaxed),
    );
    row(
        "chat CPU share of the window",
        format!("{:.0} %", cpu * 100.0 / window),
    );
    row(
        "admitted p99 ≤ 100 ms",
        Stats::p99_ms(&stats.ack_latency) <= 100.0,
    );
    drop(pairs);
    drop(stack);
    Ok(())
}

async fn messages() -> anyhow::Result<Outcome> {
    let senders = knob("PARLEY_BENCH_SENDERS", 32) as usize;
    let rate = knob("PARLEY_BENCH_RATE", 300) as f64;
    let seconds = knob("PARLEY_BENCH_SECONDS", 15);
    let pods_n = knob("PARLEY_BENCH_PODS", 1).clamp(1, 2) as usize;
    let (stack, pods) = stack(pods_n, false).await?;
    let world = world(&stack, senders * 2, true).await?;
    let stats = Stats::new();
    let epoch = Instant::now();
    let pairs = connect_pairs(&world, &pods, &stats, epoch, false).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = pods.cpu();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let drivers = drive_messages(&pairs, &stats, senders, rate, epoch, stop.clone());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    finish(drivers).await;
    // Wait for the queue to empty: every sent message acked or refused.
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until
        && stats.messages_acked.load(Ordering::Relaxed) + stats.acked_error.load(Ordering::Relaxed)
            < stats.messages_sent.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = t0.elapsed().as_secs_f64();
    drain(&stats, Duration::from_secs(5)).await;
    let cpu = pods.cpu() - cpu0;
    let sent = stats.messages_sent.load(Ordering::Relaxed);
    let acked = stats.messages_acked.load(Ordering::Relaxed);
    let delivered = stats.messages_delivered.load(Ordering::Relaxed);
    let errors = stats.acked_error.load(Ordering::Relaxed);
    header(&format!(
        "messages: {senders} senders, {rate:.0} sendMessage/s offered for {seconds} s, {pods_n} pod(s)"
    ));
    row(
        "sent / acked (stored) / delivered / errors",
        format!("{sent} / {acked} / {delivered} / {errors}"),
    );
    row(
        "stored per second (acked ÷ time until the last ack)",
        format!("{:.0}", acked as f64 / drained),
    );
    row(
        "offered window / last ack at",
        format!("{window:.1} s / {drained:.1} s"),
    );
    row(
        "send → recipient newMessage p50 / p99 / p99.9 / max",
        Stats::quantiles(&stats.message_latency),
    );
    row(
        "send → ack p50 / p99 / p99.9 / max",
        Stats::quantiles(&stats.ack_latency),
    );
    row("error answers", stats.error_summary());
    row(
        "chat CPU per stored message (receipt included)",
        format!("{:.2} ms", cpu * 1000.0 / acked.max(1) as f64),
    );
    drop(pairs);
    drop(stack);
    Ok(Outcome {
        lost_typing: 0,
        lost_messages: acked.saturating_sub(delivered),
        errors: errors + sent.saturating_sub(acked + errors),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scenario = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("PARLEY_BENCH_SCENARIO").ok())
        .unwrap_or_else(|| "typing".to_owned());
    println!("# parley-chat relay benchmark: `{scenario}`");
    match scenario.as_str() {
        "typing" | "max" => {
            typing(&scenario).await?;
        }
        "idle" => idle().await?,
        "overload" => overload().await?,
        "messages" => {
            messages().await?;
        }
        "smoke" => {
            let outcome = typing("smoke").await?;
            println!();
            anyhow::ensure!(
                outcome.lost_typing == 0 && outcome.lost_messages == 0 && outcome.errors == 0,
                "smoke: {} typing lost, {} messages lost, {} errors",
                outcome.lost_typing,
                outcome.lost_messages,
                outcome.errors
            );
            println!("smoke: nothing lost, no errors");
        }
        other => anyhow::bail!(
            "unknown scenario {other}: typing, max, idle, overload, messages or smoke"
        ),
    }
    Ok(())
}
