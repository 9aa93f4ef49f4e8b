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
//!   PARLEY_BENCH_GROUP_SIZE [2]: chats of this many members instead of
//!   pairs (groups made through `POST /api/v1/group`, members alternating
//!   between pods); every typing event is then timed at each of the other
//!   members, so one event is `size - 1` deliveries; a refused event counts
//!   as refused for the members it had not reached when the refusal came
//!   (a relay dropped for one member's full buffer still reached the
//!   others). Applies to `typing`, `max`, `overload`, `messages` and `smoke`.
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

use futures::{SinkExt, StreamExt, TryStreamExt};
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
    /// Recipients of each typing event and each message (a chat's other
    /// members): every sent one is this many deliveries.
    fanout: u64,
    typing_sent: AtomicU64,
    typing_delivered: AtomicU64,
    /// Deliveries of refused typing events still awaited when the refusal
    /// came (taken out of the recipients' FIFOs). In a group a refusal can
    /// be partial: the relay reached some members, not all.
    typing_withdrawn: AtomicU64,
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
    fn new(fanout: u64) -> Arc<Self> {
        let s = Self {
            fanout,
            ..Self::default()
        };
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

/// Typing events one socket sent that one recipient has not yet received.
type Fifo = Arc<std::sync::Mutex<VecDeque<(u64, Instant)>>>;

/// Acknowledgements a socket waits for, by ack id.
type Acks = Arc<std::sync::Mutex<HashMap<u64, (Instant, AckKind)>>>;

/// One connected benchmark socket.
struct Client {
    out: mpsc::Sender<String>,
    acks: Acks,
    next_ack: AtomicU64,
    /// Flow-control permits for closed-loop mode, one per expected delivery
    /// (returned on delivery or refusal).
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

/// What one socket expects from one other member of its chat.
struct Inbound {
    /// The sender's user id (hex), as `userTyping` names it.
    from: String,
    /// Typing the sender sent to this socket, not yet received.
    fifo: Fifo,
    /// The sender's window (closed loop), released when this socket
    /// receives its typing.
    window: Option<Arc<Semaphore>>,
}

/// What a socket does with what it receives.
struct Wiring {
    stats: Arc<Stats>,
    /// One entry per other member of the socket's chat.
    inbound: Vec<Inbound>,
    /// This socket's own window, released when one of its events is refused.
    own_window: Arc<Semaphore>,
    /// Typing sent *by* this socket, one FIFO per recipient (a refused
    /// event is taken out of each).
    outbound: Vec<Fifo>,
    /// Send a receipt for each `newMessage` from this sender (chat id,
    /// sender id), on the recipients' side.
    receipts: Option<(String, String)>,
    epoch: Instant,
}

/// The member whose `userTyping` this is: the only other one in a pair
/// (no parsing), else the one its `userId` names.
fn sender_of<'a>(inbound: &'a [Inbound], text: &str) -> Option<&'a Inbound> {
    if let [only] = inbound {
        return Some(only);
    }
    let id = text.split("\"userId\":\"").nth(1)?.split('"').next()?;
    inbound.iter().find(|i| i.from == id)
}

/// Takes a refused event (`id`) out of the FIFO of every recipient still
/// waiting for it; returns how many were.
fn withdraw(fifos: &[Fifo], id: u64) -> usize {
    let mut withdrawn = 0;
    for fifo in fifos {
        if let Ok(mut f) = fifo.lock()
            && let Some(pos) = f.iter().position(|(a, _)| *a == id)
        {
            f.remove(pos);
            withdrawn += 1;
        }
    }
    withdrawn
}

/// Opens the websocket and completes the Socket.IO connect with `token`.
async fn handshake(
    port: u16,
    token: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    // TCP_NODELAY: small frames are not held back by Nagle's algorithm.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let open = ws
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no open packet"))??;
    anyhow::ensure!(
        open.to_text().unwrap_or_default().starts_with('0'),
        "unexpected {open:?}"
    );
    ws.send(Message::text(format!("40{}", json!({"token": token}))))
        .await?;
    loop {
        let frame = ws
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("closed during connect"))??;
        let text = frame.to_text().unwrap_or_default().to_owned();
        if text.starts_with("40") {
            return Ok(ws);
        }
        anyhow::ensure!(!text.starts_with("44"), "refused: {text}");
    }
}

/// Writes what is queued for the socket, batching what is already there
/// into one flush.
async fn write_loop(mut sink: impl futures::Sink<Message> + Unpin, mut rx: mpsc::Receiver<String>) {
    while let Some(out) = rx.recv().await {
        if sink.feed(Message::text(out)).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(Message::text(more)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

async fn connect(port: u16, token: &str, wiring: Wiring) -> anyhow::Result<Client> {
    let (sink, stream) = handshake(port, token).await?.split();
    let (tx, rx) = mpsc::channel::<String>(4096);
    let writer = tokio::spawn(write_loop(sink, rx));
    let acks = Acks::default();
    let window = wiring.own_window.clone();
    let reader = Reader {
        wiring,
        acks: acks.clone(),
        out: tx.clone(),
    };
    let reader = tokio::spawn(reader.run(stream));
    Ok(Client {
        out: tx,
        acks,
        next_ack: AtomicU64::new(0),
        window,
        tasks: vec![writer.abort_handle(), reader.abort_handle()],
    })
}

/// A socket's read side: times and counts what arrives, answers pings
/// and sends receipts.
struct Reader {
    wiring: Wiring,
    acks: Acks,
    /// The socket's outgoing queue (pongs and receipts).
    out: mpsc::Sender<String>,
}

impl Reader {
    async fn run(
        self,
        mut stream: impl futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
    ) {
        while let Some(Ok(frame)) = stream.next().await {
            if let Ok(text) = frame.to_text() {
                self.on_frame(text);
            }
        }
    }

    fn on_frame(&self, text: &str) {
        if text == "2" {
            let _ = self.out.try_send("3".to_owned());
        } else if let Some(rest) = text.strip_prefix("43") {
            self.on_ack(rest);
        } else if text.starts_with("42[\"userTyping\"") {
            self.on_typing(text);
        } else if text.starts_with("42[\"chatError\"") {
            self.wiring
                .stats
                .chat_errors
                .fetch_add(1, Ordering::Relaxed);
        } else if let Some(rest) = text.strip_prefix("42[\"newMessage\",") {
            self.on_message(rest);
        }
    }

    fn on_ack(&self, rest: &str) {
        let stats = &self.wiring.stats;
        let split = rest.find('[').unwrap_or(rest.len());
        let (id, body) = rest.split_at(split);
        let Ok(id) = id.parse::<u64>() else { return };
        let Some((at, kind)) = self.acks.lock().ok().and_then(|mut a| a.remove(&id)) else {
            return;
        };
        if body.contains("\"error\"") {
            stats.acked_error.fetch_add(1, Ordering::Relaxed);
            stats.note_error(body);
            if let AckKind::Typing = kind {
                // Refused: it will not arrive where it has not yet; take
                // it out of those recipients' FIFOs and free their share
                // of the window.
                let withdrawn = withdraw(&self.wiring.outbound, id);
                stats
                    .typing_withdrawn
                    .fetch_add(withdrawn as u64, Ordering::Relaxed);
                self.wiring.own_window.add_permits(withdrawn);
            }
            return;
        }
        match kind {
            AckKind::Typing => stats.acked_ok.fetch_add(1, Ordering::Relaxed),
            AckKind::Message => stats.messages_acked.fetch_add(1, Ordering::Relaxed),
        };
        Stats::record(&stats.ack_latency, at.elapsed().as_micros() as u64);
    }

    fn on_typing(&self, text: &str) {
        let Some(from) = sender_of(&self.wiring.inbound, text) else {
            return;
        };
        let sent = from.fifo.lock().ok().and_then(|mut f| f.pop_front());
        if let Some((_, sent)) = sent {
            let stats = &self.wiring.stats;
            stats.typing_delivered.fetch_add(1, Ordering::Relaxed);
            Stats::record(&stats.typing_latency, sent.elapsed().as_micros() as u64);
            if let Some(w) = &from.window {
                w.add_permits(1);
            }
        }
    }

    fn on_message(&self, rest: &str) {
        let Some((chat, sender)) = &self.wiring.receipts else {
            return;
        };
        let Ok(m) = serde_json::from_str::<Value>(rest.trim_end_matches(']')) else {
            return;
        };
        if m["sender"].as_str() != Some(sender.as_str()) {
            return;
        }
        if let Some(sent_us) = m["text"].as_str().and_then(|t| t.parse::<u64>().ok()) {
            let stats = &self.wiring.stats;
            let now = self.wiring.epoch.elapsed().as_micros() as u64;
            stats.messages_delivered.fetch_add(1, Ordering::Relaxed);
            Stats::record(&stats.message_latency, now.saturating_sub(sent_us));
        }
        let receipt = format!(
            "42{}",
            json!(["messageDelivered", {"chatId": chat, "messageIds": [m["_id"]]}])
        );
        let _ = self.out.try_send(receipt);
    }
}

/// Users and their tokens, and the chats of consecutive sockets: socket
/// `i` is a member of chat `i / group`.
struct World {
    ids: Vec<ObjectId>,
    tokens: Vec<String>,
    chats: Vec<String>,
    /// Members per chat.
    group: usize,
}

/// Members per chat: `PARLEY_BENCH_GROUP_SIZE` [2, a 1:1 pair], at most
/// the owner and 256 others.
fn group_size() -> usize {
    knob("PARLEY_BENCH_GROUP_SIZE", 2).clamp(2, 257) as usize
}

/// How a title names the chats: nothing for pairs.
fn in_groups(group: usize) -> String {
    if group == 2 {
        String::new()
    } else {
        format!(" in groups of {group}")
    }
}

/// `sockets` rounded down to whole chats of `group` (at least one).
fn whole_chats(sockets: usize, group: usize) -> usize {
    sockets.max(group) / group * group
}

/// The users (and, with `group`, their chats) of a run: pairs are written
/// straight to MongoDB, groups are made through the REST API.
async fn world(
    stack: &support::Stack,
    pods: &Pods,
    sockets: usize,
    group: Option<usize>,
) -> anyhow::Result<World> {
    let (ids, tokens) = users(stack, sockets).await?;
    let chats = match group {
        None => Vec::new(),
        Some(2) => pair_chats(stack, &ids).await?,
        Some(size) => group_chats(pods, &ids, &tokens, size).await?,
    };
    Ok(World {
        ids,
        tokens,
        chats,
        group: group.unwrap_or(2),
    })
}

/// `sockets` users written straight to MongoDB, with their tokens.
async fn users(
    stack: &support::Stack,
    sockets: usize,
) -> anyhow::Result<(Vec<ObjectId>, Vec<String>)> {
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
    Ok((ids, tokens))
}

/// A 1:1 chat for each two consecutive users, written straight to MongoDB.
async fn pair_chats(stack: &support::Stack, ids: &[ObjectId]) -> anyhow::Result<Vec<String>> {
    let now = DateTime::now();
    let mut chats = Vec::new();
    let docs: Vec<_> = ids
        .chunks_exact(2)
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
    Ok(chats)
}

/// A group of each `size` consecutive users, made by its first one through
/// `POST /api/v1/group` on the first pod (8 requests at a time, before any
/// socket connects); the chat ids in order.
async fn group_chats(
    pods: &Pods,
    ids: &[ObjectId],
    tokens: &[String],
    size: usize,
) -> anyhow::Result<Vec<String>> {
    let pod = pods
        .replicas
        .first()
        .ok_or_else(|| anyhow::anyhow!("no pod to make groups on"))?;
    let requests = ids
        .chunks_exact(size)
        .zip(tokens.chunks_exact(size))
        .enumerate()
        .map(|(k, (members, tokens))| create_group(pod, k, members, tokens));
    futures::stream::iter(requests)
        .buffered(8)
        .try_collect()
        .await
}

/// `POST /api/v1/group` by the first of `members` with the others; the chat id.
async fn create_group(
    pod: &ServiceProcess,
    k: usize,
    members: &[ObjectId],
    tokens: &[String],
) -> anyhow::Result<String> {
    let (Some((_, others)), Some(owner)) = (members.split_first(), tokens.first()) else {
        anyhow::bail!("group {k} has no members");
    };
    let body = json!({
        "name": format!("bench group {k}"),
        "memberIds": others.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
    });
    let (status, answer) = pod
        .call(
            reqwest::Method::POST,
            "/api/v1/group",
            Some(owner),
            Some(body),
        )
        .await?;
    anyhow::ensure!(status == 201, "create group {k}: {status} {answer}");
    answer["chatId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("create group {k}: no chatId in {answer}"))
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

/// Connected sockets: socket `i` is a member of chat `i / group` with the
/// other sockets of its block of `group` (a pair: `2k` and `2k + 1`).
struct Sockets {
    clients: Vec<Arc<Client>>,
    /// Per socket: the typing it sent, one FIFO per other member of its
    /// chat (in the order of [`others`]), which that member reads from.
    outbound: Vec<Vec<Fifo>>,
    chats: Vec<String>,
    group: usize,
    connect_secs: f64,
}

impl Sockets {
    /// The chat of socket `i`.
    fn chat(&self, i: usize) -> &str {
        self.chats.get(i / self.group).map_or("", String::as_str)
    }

    /// Recipients of each typing event (and each message).
    fn fanout(&self) -> usize {
        self.group - 1
    }
}

/// The other members of socket `i`'s chat, in member order.
fn others(i: usize, group: usize) -> impl Iterator<Item = usize> {
    let first = i / group * group;
    (first..first + group).filter(move |&j| j != i)
}

/// What socket `i` expects from each other member of its chat.
fn inbound_of(
    i: usize,
    world: &World,
    outbound: &[Vec<Fifo>],
    windows: &[Arc<Semaphore>],
    closed_loop: bool,
) -> Vec<Inbound> {
    others(i, world.group)
        .map(|s| Inbound {
            from: world.ids[s].to_hex(),
            fifo: others(s, world.group)
                .zip(&outbound[s])
                .find(|(r, _)| *r == i)
                .map(|(_, f)| f.clone())
                .unwrap_or_default(),
            window: closed_loop.then(|| windows[s].clone()),
        })
        .collect()
}

async fn connect_sockets(
    world: &World,
    pods: &Pods,
    stats: &Arc<Stats>,
    epoch: Instant,
    closed_loop: bool,
) -> anyhow::Result<Sockets> {
    let (n, group) = (world.ids.len(), world.group);
    let outbound: Vec<Vec<Fifo>> = (0..n)
        .map(|i| others(i, group).map(|_| Fifo::default()).collect())
        .collect();
    let windows: Vec<Arc<Semaphore>> = (0..n).map(|_| Arc::new(Semaphore::new(0))).collect();
    let ports: Vec<u16> = pods.replicas.iter().map(ServiceProcess::port).collect();
    let started = Instant::now();
    let mut pending = futures::stream::iter((0..n).map(|i| {
        // With two pods, members alternate (partners always sit on
        // different pods).
        let port = ports[i % ports.len()];
        let token = world.tokens[i].clone();
        let sender = i / group * group;
        let wiring = Wiring {
            stats: stats.clone(),
            inbound: inbound_of(i, world, &outbound, &windows, closed_loop),
            own_window: windows[i].clone(),
            outbound: outbound[i].clone(),
            // Messages come from each chat's first member.
            receipts: world
                .chats
                .get(i / group)
                .filter(|_| i != sender)
                .map(|c| (c.clone(), world.ids[sender].to_hex())),
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
    Ok(Sockets {
        clients,
        outbound,
        chats: world.chats.clone(),
        group,
        connect_secs: started.elapsed().as_secs_f64(),
    })
}

/// Typing asks for acknowledgements (`PARLEY_BENCH_ACK`, on unless 0).
fn with_ack() -> bool {
    static WITH_ACK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WITH_ACK.get_or_init(|| knob("PARLEY_BENCH_ACK", 1) != 0)
}

/// A typing packet with an ack id, recorded in the FIFO of each recipient
/// first. Without an ack (`PARLEY_BENCH_ACK=0`, as the original's load
/// test), a refusal comes back as `chatError` and cannot be matched to its
/// event.
fn typing_packet(client: &Client, fifos: &[Fifo], chat: &str) -> String {
    let with_ack = with_ack();
    let id = if with_ack {
        client.ack_id(AckKind::Typing)
    } else {
        u64::MAX
    };
    let now = Instant::now();
    for fifo in fifos {
        if let Ok(mut f) = fifo.lock() {
            f.push_back((id, now));
        }
    }
    if with_ack {
        format!("42{id}[\"typing\",{{\"chatId\":\"{chat}\"}}]")
    } else {
        format!("42[\"typing\",{{\"chatId\":\"{chat}\"}}]")
    }
}

/// Takes back the last event recorded for every recipient (it could not
/// be handed to the socket).
fn unsend(fifos: &[Fifo]) {
    for fifo in fifos {
        if let Ok(mut f) = fifo.lock() {
            f.pop_back();
        }
    }
}

/// Open-loop typing from every socket at `rate` events/s in total until `stop`.
fn drive_typing(
    sockets: &Sockets,
    stats: &Arc<Stats>,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    let n = sockets.clients.len();
    let per_socket = rate / n as f64;
    // Each socket ticks at most 1,000 times a second and sends a share per tick.
    let ticks = per_socket.clamp(0.1, 1000.0);
    let per_tick = per_socket / ticks;
    let period = Duration::from_secs_f64(1.0 / ticks);
    for i in 0..n {
        let client = sockets.clients[i].clone();
        let fifos = sockets.outbound[i].clone();
        let chat = sockets.chat(i).to_owned();
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
                    let packet = typing_packet(&client, &fifos, &chat);
                    if client.send(&stats, packet) {
                        stats.typing_sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        unsend(&fifos);
                    }
                }
            }
        }));
    }
    handles
}

/// Closed-loop typing: each socket keeps `window` events in flight (its
/// window counts deliveries: an event takes one permit per recipient).
fn drive_closed(
    sockets: &Sockets,
    stats: &Arc<Stats>,
    window: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    let fanout = sockets.fanout();
    let per_event = u32::try_from(fanout).unwrap_or(u32::MAX);
    for (i, client) in sockets.clients.iter().enumerate() {
        let client = client.clone();
        client.window.add_permits(window * fanout);
        let fifos = sockets.outbound[i].clone();
        let chat = sockets.chat(i).to_owned();
        let stats = stats.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok(permit)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    client.window.acquire_many(per_event),
                )
                .await
                else {
                    // Nothing came back for 2 s: give the window back and go on.
                    client.window.add_permits(fanout);
                    continue;
                };
                permit.forget();
                let packet = typing_packet(&client, &fifos, &chat);
                if client.send(&stats, packet) {
                    stats.typing_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    unsend(&fifos);
                    client.window.add_permits(fanout);
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    handles
}

/// Open-loop `sendMessage` from the first member of each of the first
/// `senders` chats.
fn drive_messages(
    sockets: &Sockets,
    stats: &Arc<Stats>,
    senders: usize,
    rate: f64,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    let senders = senders.min(sockets.chats.len()).max(1);
    let period = Duration::from_secs_f64(senders as f64 / rate.max(0.001));
    for (k, chat) in sockets.chats.iter().take(senders).enumerate() {
        let Some(client) = sockets.clients.get(k * sockets.group).cloned() else {
            continue;
        };
        let chat = chat.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        let offset = period.mul_f64(k as f64 / senders as f64);
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
        let fanout = stats.fanout;
        let typing_done = now.0 + stats.typing_withdrawn.load(Ordering::Relaxed)
            >= stats.typing_sent.load(Ordering::Relaxed) * fanout;
        let messages_done = now.1 >= stats.messages_acked.load(Ordering::Relaxed) * fanout
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

/// The knobs of a `typing`, `max` or `smoke` run.
struct TypingRun {
    scenario: String,
    closed: bool,
    sockets: usize,
    group: usize,
    rate: f64,
    seconds: u64,
    pods: usize,
    message_rate: f64,
    window: usize,
}

impl TypingRun {
    fn from_env(scenario: &str) -> Self {
        let smoke = scenario == "smoke";
        let group = group_size();
        let sockets = knob("PARLEY_BENCH_SOCKETS", if smoke { 200 } else { 1000 }) as usize;
        Self {
            scenario: scenario.to_owned(),
            closed: scenario == "max",
            sockets: whole_chats(sockets, group),
            group,
            rate: knob("PARLEY_BENCH_RATE", if smoke { 500 } else { 5000 }) as f64,
            seconds: knob("PARLEY_BENCH_SECONDS", if smoke { 3 } else { 10 }),
            pods: knob("PARLEY_BENCH_PODS", if smoke { 2 } else { 1 }).clamp(1, 2) as usize,
            message_rate: knob("PARLEY_BENCH_MESSAGE_RATE", if smoke { 10 } else { 0 }) as f64,
            window: knob("PARLEY_BENCH_WINDOW", 8) as usize,
        }
    }

    fn title(&self) -> String {
        let chats = in_groups(self.group);
        let load = if self.closed {
            format!("closed loop, window {}", self.window)
        } else {
            format!("{:.0} typing/s offered", self.rate)
        };
        format!(
            "relay `{}`: {} sockets{chats}, {} pod(s), {load}",
            self.scenario, self.sockets, self.pods
        )
    }
}

/// Pure: the `expected` deliveries that neither arrived nor were refused
/// (the sender told).
fn lost_deliveries(expected: u64, delivered: u64, refused: u64) -> u64 {
    expected.saturating_sub(delivered + refused)
}

/// Typing events refused, the sender told: by their acknowledgement, or
/// without acks by `chatError` (with acks, the service sends a
/// `chatError` beside some refusing acknowledgements, not instead).
fn refused_events(stats: &Stats) -> u64 {
    if with_ack() {
        stats.acked_error.load(Ordering::Relaxed)
    } else {
        stats.chat_errors.load(Ordering::Relaxed)
    }
}

/// Typing deliveries refused, the sender told: those still awaited when
/// an acknowledgement refused their event, or without acks every
/// recipient's of an event refused through `chatError` (it cannot be
/// matched to its event).
fn refused_deliveries(stats: &Stats) -> u64 {
    if with_ack() {
        stats.typing_withdrawn.load(Ordering::Relaxed)
    } else {
        stats.chat_errors.load(Ordering::Relaxed) * stats.fanout
    }
}

/// The counts of a window: typing events and messages sent, and what
/// arrived (deliveries: each event or message is `fanout` of them).
struct Tally {
    sent: u64,
    delivered: u64,
    /// Events refused.
    refused: u64,
    /// Deliveries refused.
    refused_deliveries: u64,
    lost: u64,
    m_sent: u64,
    m_acked: u64,
    m_delivered: u64,
    m_lost: u64,
}

impl Tally {
    fn read(stats: &Stats) -> Self {
        let sent = stats.typing_sent.load(Ordering::Relaxed);
        let delivered = stats.typing_delivered.load(Ordering::Relaxed);
        let refused = refused_events(stats);
        let refused_deliveries = refused_deliveries(stats);
        let m_acked = stats.messages_acked.load(Ordering::Relaxed);
        let m_delivered = stats.messages_delivered.load(Ordering::Relaxed);
        Self {
            sent,
            delivered,
            refused,
            refused_deliveries,
            lost: lost_deliveries(sent * stats.fanout, delivered, refused_deliveries),
            m_sent: stats.messages_sent.load(Ordering::Relaxed),
            m_acked,
            m_delivered,
            m_lost: lost_deliveries(m_acked * stats.fanout, m_delivered, 0),
        }
    }
}

/// Warm-up: one typing per socket (its one membership check), 128 sockets
/// at a time, so first-use work is neither refused nor in the figures.
/// Returns the deliveries lost and the events refused.
async fn warm_up(sockets: &Sockets, stats: &Stats) -> (u64, u64) {
    for chunk in (0..sockets.clients.len()).collect::<Vec<_>>().chunks(128) {
        for &i in chunk {
            let c = &sockets.clients[i];
            let packet = typing_packet(c, &sockets.outbound[i], sockets.chat(i));
            c.send(stats, packet);
            stats.typing_sent.fetch_add(1, Ordering::Relaxed);
        }
        drain(stats, Duration::from_secs(30)).await;
    }
    let lost = lost_deliveries(
        stats.typing_sent.load(Ordering::Relaxed) * stats.fanout,
        stats.typing_delivered.load(Ordering::Relaxed),
        refused_deliveries(stats),
    );
    (lost, refused_events(stats))
}

/// Starts the window from clean counters and empty FIFOs.
fn reset_typing(sockets: &Sockets, stats: &Stats) {
    for f in sockets.outbound.iter().flatten() {
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
        &stats.typing_withdrawn,
        &stats.acked_ok,
        &stats.acked_error,
        &stats.chat_errors,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    stats.reset_latency();
}

/// What the pods did over a measured window.
struct Measured {
    secs: f64,
    cpu: f64,
    rss_before: u64,
    rss_warm: u64,
    rss_peak: u64,
    served: String,
}

/// Drives typing (and messages) for the run's window, then waits for what
/// is still on its way.
async fn measure(
    run: &TypingRun,
    sockets: &Sockets,
    pods: &Pods,
    stats: &Arc<Stats>,
    epoch: Instant,
    rss_before: u64,
) -> Measured {
    let rss_warm = pods.rss_kib();
    let cpu0 = pods.cpu();
    let served0 = pods
        .buckets("chat_socket_event_seconds", "class=\"relay\"")
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut drivers = if run.closed {
        drive_closed(sockets, stats, run.window, stop.clone())
    } else {
        drive_typing(sockets, stats, run.rate, stop.clone())
    };
    if run.message_rate > 0.0 {
        let senders = knob("PARLEY_BENCH_SENDERS", 16) as usize;
        drivers.extend(drive_messages(
            sockets,
            stats,
            senders,
            run.message_rate,
            epoch,
            stop.clone(),
        ));
    }
    let mut rss_peak = 0;
    while t0.elapsed() < Duration::from_secs(run.seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(pods.rss_kib());
    }
    stop.store(true, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = pods.cpu() - cpu0;
    finish(drivers).await;
    drain(stats, Duration::from_secs(10)).await;
    let served = pods
        .buckets("chat_socket_event_seconds", "class=\"relay\"")
        .await;
    Measured {
        secs,
        cpu,
        rss_before,
        rss_warm,
        rss_peak,
        served: server_latency(&served0, &served),
    }
}

async fn typing(scenario: &str) -> anyhow::Result<Outcome> {
    let run = TypingRun::from_env(scenario);
    let (stack, pods) = stack(run.pods, false).await?;
    let world = world(&stack, &pods, run.sockets, Some(run.group)).await?;
    let stats = Stats::new(run.group as u64 - 1);
    let epoch = Instant::now();
    let rss_before = pods.rss_kib();
    let sockets = connect_sockets(&world, &pods, &stats, epoch, run.closed).await?;
    let warm = warm_up(&sockets, &stats).await;
    reset_typing(&sockets, &stats);
    let measured = measure(&run, &sockets, &pods, &stats, epoch, rss_before).await;
    let tally = Tally::read(&stats);
    let diagnosis = if tally.lost > 0 || tally.m_lost > 0 {
        Some(diagnose(&sockets, &pods).await)
    } else {
        None
    };
    report(&run, &sockets, &stats, &measured, &tally, warm);
    if let Some(diagnosis) = diagnosis {
        println!("\n{diagnosis}");
    }
    drop(sockets);
    drop(stack);
    Ok(Outcome {
        lost_typing: tally.lost + warm.0,
        lost_messages: tally.m_lost,
        errors: tally.refused + tally.m_sent.saturating_sub(tally.m_acked),
    })
}

/// The typing counts: as events for pairs (one delivery each, the rows of
/// earlier sessions), as events and deliveries for groups.
fn typing_rows(run: &TypingRun, tally: &Tally, warm: (u64, u64), secs: f64) {
    if run.group == 2 {
        row(
            "warm-up typing lost / refused",
            format!("{} / {}", warm.0, warm.1),
        );
        row(
            "typing sent / delivered / refused / lost",
            format!(
                "{} / {} / {} / {}",
                tally.sent, tally.delivered, tally.refused, tally.lost
            ),
        );
    } else {
        let fanout = run.group - 1;
        row(
            "warm-up deliveries lost / typing refused",
            format!("{} / {}", warm.0, warm.1),
        );
        row(
            "typing events sent / refused (per second sent)",
            format!(
                "{} / {} ({:.0}/s)",
                tally.sent,
                tally.refused,
                tally.sent as f64 / secs
            ),
        );
        row(
            &format!("deliveries expected ({fanout} per event) / delivered / refused / lost"),
            format!(
                "{} / {} / {} / {}",
                tally.sent * fanout as u64,
                tally.delivered,
                tally.refused_deliveries,
                tally.lost
            ),
        );
    }
    row(
        "typing delivered per second",
        format!("{:.0}", tally.delivered as f64 / secs),
    );
}

fn report(
    run: &TypingRun,
    sockets: &Sockets,
    stats: &Stats,
    measured: &Measured,
    tally: &Tally,
    warm: (u64, u64),
) {
    header(&run.title());
    row(
        "connect all sockets",
        format!(
            "{:.1} s ({:.0}/s)",
            sockets.connect_secs,
            run.sockets as f64 / sockets.connect_secs
        ),
    );
    row(
        "RSS before sockets / connected and warm / peak in window",
        format!(
            "{} / {} / {} MiB",
            measured.rss_before / 1024,
            measured.rss_warm / 1024,
            measured.rss_peak / 1024
        ),
    );
    typing_rows(run, tally, warm, measured.secs);
    row(
        "typing latency p50 / p99 / p99.9 / max",
        Stats::quantiles(&stats.typing_latency),
    );
    row(
        "ack latency p50 / p99 / p99.9 / max",
        Stats::quantiles(&stats.ack_latency),
    );
    row("typing, read to answer in the service", &measured.served);
    if run.message_rate > 0.0 {
        let delivered = if run.group == 2 {
            "delivered"
        } else {
            "delivered (to each recipient)"
        };
        row(
            &format!("messages sent / acked / {delivered}"),
            format!(
                "{} / {} / {}",
                tally.m_sent, tally.m_acked, tally.m_delivered
            ),
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
    let deliveries = tally.delivered + tally.m_delivered;
    row(
        "chat CPU in window / per delivery",
        format!(
            "{:.2} s / {:.1} µs",
            measured.cpu,
            measured.cpu * 1e6 / deliveries.max(1) as f64
        ),
    );
    row(
        "chat CPU share of the window",
        format!("{:.0} %", measured.cpu * 100.0 / measured.secs),
    );
}

/// Where undelivered events may have gone: the generator's unanswered
/// acknowledgements, the partners still waiting, the pods' drop counters and
/// their warnings. Printed only when something was lost.
async fn diagnose(sockets: &Sockets, pods: &Pods) -> String {
    let mut out = String::from("### Loss diagnosis\n\n");
    let (mut typing_unacked, mut messages_unacked) = (0, 0);
    for client in &sockets.clients {
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
    let pod_count = pods.replicas.len();
    for (i, fifos) in sockets.outbound.iter().enumerate() {
        for (to, fifo) in others(i, sockets.group).zip(fifos) {
            let Ok(f) = fifo.lock() else { continue };
            if f.is_empty() {
                continue;
            }
            let acked = sockets.clients[i]
                .acks
                .lock()
                .map(|a| f.iter().filter(|(id, _)| !a.contains_key(id)).count())
                .unwrap_or(0);
            let oldest = f
                .front()
                .map(|(_, at)| at.elapsed().as_millis())
                .unwrap_or(0);
            out.push_str(&format!(
                "- socket {i} (pod {}) → socket {to} (pod {}): {} undelivered ({acked} of them acknowledged), the oldest sent {oldest} ms ago\n",
                i % pod_count,
                to % pod_count,
                f.len(),
            ));
        }
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
    let world = world(&stack, &pods, sockets, None).await?;
    // Let the fresh process settle (index creation, first connections).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = pods.rss_kib();
    let stats = Stats::new(1);
    let epoch = Instant::now();
    let ports: Vec<u16> = pods.replicas.iter().map(ServiceProcess::port).collect();
    let started = Instant::now();
    let mut pending = futures::stream::iter((0..sockets).map(|i| {
        let wiring = Wiring {
            stats: stats.clone(),
            inbound: Vec::new(),
            own_window: Arc::new(Semaphore::new(0)),
            outbound: Vec::new(),
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
    let group = group_size();
    let sockets = whole_chats(knob("PARLEY_BENCH_SOCKETS", 1000) as usize, group);
    let warm_rate = knob("PARLEY_BENCH_WARM_RATE", 5000) as f64;
    let rate = knob("PARLEY_BENCH_RATE", 200_000) as f64;
    let seconds = knob("PARLEY_BENCH_SECONDS", 30);
    let (stack, pods) = stack(1, true).await?;
    let world = world(&stack, &pods, sockets, Some(group)).await?;
    let stats = Stats::new(group as u64 - 1);
    let epoch = Instant::now();
    let connected = connect_sockets(&world, &pods, &stats, epoch, false).await?;
    let rss0 = pods.rss_kib();
    // Loaded level: the normal load for 5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let drivers = drive_typing(&connected, &stats, warm_rate, stop.clone());
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
    let drivers = drive_typing(&connected, &stats, rate, stop.clone());
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
        "overload: {sockets} sockets{}, {rate:.0} typing/s offered for {seconds} s, default admission limits",
        in_groups(group)
    ));
    row(
        "warm-up at normal load (sent / deliveries)",
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
    drop(connected);
    drop(stack);
    Ok(())
}

async fn messages() -> anyhow::Result<Outcome> {
    let senders = knob("PARLEY_BENCH_SENDERS", 32) as usize;
    let rate = knob("PARLEY_BENCH_RATE", 300) as f64;
    let seconds = knob("PARLEY_BENCH_SECONDS", 15);
    let pods_n = knob("PARLEY_BENCH_PODS", 1).clamp(1, 2) as usize;
    let group = group_size();
    let (stack, pods) = stack(pods_n, false).await?;
    let world = world(&stack, &pods, senders * group, Some(group)).await?;
    let stats = Stats::new(group as u64 - 1);
    let epoch = Instant::now();
    let connected = connect_sockets(&world, &pods, &stats, epoch, false).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = pods.cpu();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let drivers = drive_messages(&connected, &stats, senders, rate, epoch, stop.clone());
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
        "messages: {senders} senders{}, {rate:.0} sendMessage/s offered for {seconds} s, {pods_n} pod(s)",
        in_groups(group)
    ));
    row(
        "sent / acked (stored) / delivered (to each recipient) / errors",
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
    drop(connected);
    drop(stack);
    Ok(Outcome {
        lost_typing: 0,
        lost_messages: lost_deliveries(acked * stats.fanout, delivered, 0),
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
