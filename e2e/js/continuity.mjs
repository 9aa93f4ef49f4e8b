// Conversation continuity while the cluster changes under the clients: two
// users chat through one URL (the chat Service) with the official
// socket.io-client and its defaults (long-polling first, then an upgrade;
// reconnection on). A sends at a steady rate and retries each message with
// the same clientMessageId until it is acknowledged; B reads live and, after
// each reconnection, catches up from history with after=<the last seq it
// holds without a gap>.
// Meanwhile e2e/run.sh deletes a pod or rolls the Deployment.
//
//   USER_URL=http://... CHAT_URL=http://... CODES_FROM=http:http://... \
//   STOP_FILE=/tmp/stop node e2e/js/continuity.mjs
//
// Environment:
//   USER_URL, CODES_FROM  as for scenario.mjs
//   CHAT_URL              one chat URL for both users (the Service)
//   STOP_FILE             sending stops once this file exists (required)
//   RATE                  messages per second from A (default 20)
//   MAX_SECONDS           sending stops after this long anyway (default 300)
//   SETTLE_MS             bound on the final catch-up (default 30000)
//   TRANSPORTS            default (default) or websocket
//   MIN_RECONNECTS        each user must have reconnected at least this often
//                         (default 0): proves the disruption reached them
//
// stdout: {"phase":"streaming"} once both users are connected and sending
// has started (the caller acts then), then one summary line. Exit 0 only when
// every message was acknowledged and every acknowledged message reached B
// and history: nothing acknowledged is lost.
import { io } from "socket.io-client";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { codeSource, http, limits, trimSlash } from "./lib.mjs";

const fail = (message, code = 2) => {
  process.stderr.write(`continuity: ${message}\n`);
  process.exit(code);
};
const USER_URL = trimSlash(process.env.USER_URL ?? fail("USER_URL is required"));
const CHAT_URL = trimSlash(process.env.CHAT_URL ?? fail("CHAT_URL is required"));
const readCode = codeSource(process.env.CODES_FROM ?? "") ?? fail("CODES_FROM is required (dir:, http: or mailpit:)");
const STOP_FILE = process.env.STOP_FILE ?? fail("STOP_FILE is required");
const RATE = Number(process.env.RATE ?? 20);
const MAX_SECONDS = Number(process.env.MAX_SECONDS ?? 300);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 30000);
const TRANSPORTS = process.env.TRANSPORTS ?? "default";
const MIN_RECONNECTS = Number(process.env.MIN_RECONNECTS ?? 0);
const ACK_TIMEOUT_MS = 5000;
limits.httpTimeoutMs = 10000;
const RUN_ID = randomBytes(4).toString("hex");
const api = (base, path) => `${base}/api/v1${path}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

async function retrying(what, deadlineMs, body) {
  const deadline = Date.now() + deadlineMs;
  let last = "";
  for (;;) {
    try {
      const value = await body();
      if (value !== undefined) return value;
    } catch (error) {
      last = error.message;
    }
    if (Date.now() > deadline) fail(`${what}: not done within ${deadlineMs} ms ${last}`, 1);
    await sleep(250);
  }
}

async function login(label) {
  const email = `${label}-${RUN_ID}@example.com`;
  await retrying(`login of ${email}`, 30000, async () => {
    const answer = await http("POST", api(USER_URL, "/login"), { body: { email } });
    return answer.status === 200 ? true : undefined;
  });
  const code = await retrying(`the code mailed to ${email}`, 60000, () => readCode(email));
  const answer = await http("POST", api(USER_URL, "/verify"), { body: { email, otp: code } });
  if (answer.status !== 200) fail(`verify of ${email}: ${answer.status} ${answer.text}`, 1);
  return { label, email, token: answer.json.token, id: answer.json.user._id, reconnects: 0 };
}

function connect(user) {
  const socket = io(CHAT_URL, {
    ...(TRANSPORTS === "websocket" ? { transports: ["websocket"] } : {}),
    auth: { token: user.token },
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
  });
  user.socket = socket;
  let first = true;
  socket.on("connect", () => {
    if (!first) user.reconnects += 1;
    first = false;
    // Rooms are per socket: join again after every (re)connection.
    socket.timeout(ACK_TIMEOUT_MS).emit("joinChat", chatId, () => {});
    user.onConnect?.();
  });
  return new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    setTimeout(() => reject(new Error(`${user.label} could not connect to ${CHAT_URL}`)), 30000);
  });
}

const alice = await login("alice");
const bob = await login("bob");
const opened = await http("POST", api(CHAT_URL, "/chat/new"), {
  token: alice.token,
  body: { otherUserId: bob.id },
});
if (![200, 201].includes(opened.status)) fail(`chat/new: ${opened.status} ${opened.text}`, 1);
const chatId = opened.json.chatId;

// B: live messages, and after each reconnection what history holds after
// the last sequence number held without a gap. Live messages of concurrent
// sends may arrive out of sequence (two pods fan them out), so the highest
// seq seen is not a safe cursor: one sent just before a pod died may be
// missing below it.
const received = new Map(); // clientMessageId -> how it arrived
const seenSeqs = new Set();
let contiguousSeq = 0; // every seq up to this one is held
let recoveredByHistory = 0;
function note(message, how) {
  if (message?.chatId !== chatId || !message.clientMessageId) return;
  if (!received.has(message.clientMessageId)) {
    received.set(message.clientMessageId, how);
    if (how === "history") recoveredByHistory += 1;
  }
  if (typeof message.seq === "number") {
    seenSeqs.add(message.seq);
    while (seenSeqs.has(contiguousSeq + 1)) contiguousSeq += 1;
  }
}
async function catchUp() {
  // From the first gap, page forward through everything history holds.
  let after = contiguousSeq;
  for (;;) {
    const page = await http("GET", api(CHAT_URL, `/message/${chatId}?after=${after}`), { token: bob.token });
    if (page.status !== 200) throw new Error(`history after ${after}: ${page.status} ${page.text.slice(0, 200)}`);
    const messages = page.json?.messages ?? [];
    for (const m of messages) note(m, "history");
    const last = Math.max(after, ...messages.map((m) => (typeof m.seq === "number" ? m.seq : 0)));
    if (messages.length === 0 || last === after) return;
    after = last;
  }
}
bob.onConnect = () => {
  catchUp().catch(() => {
    // the next reconnection, or the final catch-up, tries again
  });
};
await connect(bob);
bob.socket.on("newMessage", (m) => note(m, "live"));
await connect(alice);

// A: a steady stream; each message is retried with its clientMessageId
// until acknowledged (a repeated id returns the stored message).
const acked = new Map(); // clientMessageId -> seq
const failed = [];
let sent = 0;
let attempts = 0;
async function send(n) {
  const clientMessageId = `c-${RUN_ID}-${n}`;
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    try {
      if (!alice.socket.connected) {
        await sleep(100);
        continue;
      }
      attempts += 1;
      const answer = await alice.socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck("sendMessage", { chatId, text: `message ${n}`, clientMessageId });
      if (answer?.message?.clientMessageId === clientMessageId || answer?.message?._id) {
        acked.set(clientMessageId, answer.message.seq);
        return;
      }
    } catch {
      // no ack in time: the socket is reconnecting; retry
    }
    await sleep(100);
  }
  failed.push(clientMessageId);
}

out({ phase: "streaming", chatId });
const started = Date.now();
const inflight = [];
while (!existsSync(STOP_FILE) && Date.now() - started < MAX_SECONDS * 1000) {
  sent += 1;
  inflight.push(send(sent));
  await sleep(1000 / RATE);
}
await Promise.all(inflight);

// Everything acknowledged must reach B (live or through history) and be in history.
const settleBy = Date.now() + SETTLE_MS;
let missing = [];
for (;;) {
  try {
    await catchUp();
  } catch {
    // retried until SETTLE_MS
  }
  missing = [...acked.keys()].filter((id) => !received.has(id));
  if (missing.length === 0 || Date.now() > settleBy) break;
  await sleep(250);
}
const summary = {
  phase: "done",
  sent,
  acked: acked.size,
  failedSends: failed.length,
  attempts,
  receivedLive: [...received.values()].filter((how) => how === "live").length,
  recoveredByHistory,
  reconnects: { alice: alice.reconnects, bob: bob.reconnects },
  missing: missing.length,
  missingIds: missing.slice(0, 10),
  seconds: Math.round((Date.now() - started) / 1000),
};
out(summary);
alice.socket.close();
bob.socket.close();
const reconnected = Math.min(alice.reconnects, bob.reconnects) >= MIN_RECONNECTS;
if (!reconnected) process.stderr.write(`continuity: expected at least ${MIN_RECONNECTS} reconnection(s) of each user\n`);
process.exit(failed.length === 0 && missing.length === 0 && acked.size === sent && reconnected ? 0 : 1);
