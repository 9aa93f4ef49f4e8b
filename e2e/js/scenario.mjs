// One real client scenario, end to end: what a chat front end does, played by
// two users against running parley services, with the official
// socket.io-client over the websocket transport.
//
//   USER_URL=http://127.0.0.1:7101 \
//   CHAT_URLS=http://127.0.0.1:7102,http://127.0.0.1:7202 \
//   CODES_FROM=dir:/var/tmp/parley/mail \
//   node e2e/js/scenario.mjs
//
// Environment:
//   USER_URL         base URL of the user service (required)
//   CHAT_URLS        comma-separated base URLs of chat replicas (required);
//                    user A uses the first, user B the last, so with two
//                    entries the two users sit on different replicas
//   CODES_FROM       where login-code mails are read (required):
//                      dir:/path               a folder of .eml files, as
//                                              scripts/smtp_sink.py (and the
//                                              test harness's SmtpSink) write
//                      http:http://h:8025      scripts/smtp_sink.py's HTTP API
//                                              (the sink image in e2e/run.sh)
//                      mailpit:http://h:8025   Mailpit's HTTP API
//   STEP_TIMEOUT_MS  bound of each step (default 20000)
//   TRANSPORTS       websocket (default) or default (long-polling, then upgrade)
//   EMAIL_DOMAIN     domain of the two throwaway addresses (default example.com)
//   RUN_ID           makes the addresses unique (default: random), so codes
//                    left in the sink by earlier runs are never read
//
// stdout: one JSON line per step, {"step","ok":true,"ms"} when it passed; the
// first failing step prints {"step","ok":false,"ms","error"} and ends the run.
// Exit status 0 only when every step passed (1 failed step, 2 bad usage).
import { io } from "socket.io-client";
import { randomBytes } from "node:crypto";
import { StepError, codeSource, http, limits, trimSlash } from "./lib.mjs";

// ---------------------------------------------------------------- settings

const usage = (message) => {
  process.stderr.write(`scenario: ${message}\n`);
  process.exit(2);
};
const USER_URL = trimSlash(process.env.USER_URL ?? usage("USER_URL is required"));
const CHAT_URLS = (process.env.CHAT_URLS ?? usage("CHAT_URLS is required"))
  .split(",")
  .map((u) => trimSlash(u.trim()))
  .filter(Boolean);
if (CHAT_URLS.length === 0) usage("CHAT_URLS holds no URL");
const CODES_FROM = process.env.CODES_FROM ?? usage("CODES_FROM is required (dir:/path or mailpit:http://host:8025)");
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS ?? 20000);
if (!Number.isFinite(STEP_TIMEOUT_MS) || STEP_TIMEOUT_MS <= 0) usage("STEP_TIMEOUT_MS must be a positive number");
limits.httpTimeoutMs = STEP_TIMEOUT_MS;
// websocket (default): straight to the websocket transport. default: the
// official client's own defaults, HTTP long-polling first and then an
// upgrade, which is how browsers connect and which needs every request of a
// session to reach the same chat pod.
const TRANSPORTS = process.env.TRANSPORTS ?? "websocket";
if (!["websocket", "default"].includes(TRANSPORTS)) usage("TRANSPORTS must be websocket or default");
const RUN_ID = process.env.RUN_ID ?? randomBytes(4).toString("hex");
const DOMAIN = process.env.EMAIL_DOMAIN ?? "example.com";
const POLL_MS = 200;

// ---------------------------------------------------------------- steps

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const sockets = [];
// What the running step waits for, named in its timeout message.
let waitingFor = "";


// Runs one step under the step timeout; prints its line; a failure ends the run.
async function step(name, body) {
  const started = performance.now();
  waitingFor = "";
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const seen = sockets.map((c) => `${c.label} saw ${c.seen()}`).join("; ");
      reject(
        new StepError(
          `timed out after ${STEP_TIMEOUT_MS} ms${waitingFor ? ` waiting for ${waitingFor}` : ""}${seen ? ` (${seen})` : ""}`,
        ),
      );
    }, STEP_TIMEOUT_MS);
  });
  try {
    const detail = await Promise.race([body(), timeout]);
    out({ step: name, ok: true, ms: Math.round(performance.now() - started), ...(detail ?? {}) });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    out({ step: name, ok: false, ms: Math.round(performance.now() - started), error: message });
    process.stderr.write(`scenario: step "${name}" failed: ${message}\n`);
    for (const client of sockets) client.close();
    process.exit(1);
  } finally {
    clearTimeout(timer);
  }
}

function check(condition, message) {
  if (!condition) throw new StepError(message);
}

// Calls `what` every POLL_MS until it returns something other than undefined
// (the step timeout bounds it); `description` names it in a timeout.
async function poll(description, what) {
  waitingFor = description;
  for (;;) {
    const value = await what();
    if (value !== undefined) return value;
    await sleep(POLL_MS);
  }
}

// ---------------------------------------------------------------- HTTP

async function expectStatus(method, url, expected, options) {
  const answer = await http(method, url, options);
  const wanted = Array.isArray(expected) ? expected : [expected];
  check(
    wanted.includes(answer.status),
    `${method} ${url}: expected ${wanted.join(" or ")}, got ${answer.status} ${answer.text.slice(0, 300)}`,
  );
  return answer;
}

// ---------------------------------------------------------------- login codes

const readCode =
  codeSource(CODES_FROM) ??
  usage(`CODES_FROM must be dir:/path, http:http://host:8025 or mailpit:http://host:8025, not ${JSON.stringify(CODES_FROM)}`);

// ---------------------------------------------------------------- Socket.IO

// One connected user: every event is kept, so a wait also finds what arrived
// before it started.
class Client {
  constructor(label, url, token) {
    this.label = label;
    this.url = url;
    this.events = [];
    this.waiters = new Set();
    this.socket = io(url, {
      ...(TRANSPORTS === "websocket" ? { transports: ["websocket"] } : {}),
      auth: { token },
      reconnection: false,
      timeout: STEP_TIMEOUT_MS,
    });
    this.socket.onAny((event, ...args) => this.record(event, args.length <= 1 ? args[0] : args));
    this.socket.on("connect", () => this.record("connect", this.socket.id));
    this.socket.on("connect_error", (error) => this.record("connect_error", error?.message ?? String(error)));
    this.socket.on("disconnect", (reason) => this.record("disconnect", reason));
    sockets.push(this);
  }

  record(event, data) {
    this.events.push({ event, data });
    for (const waiter of this.waiters) waiter();
  }

  // The first event `event` (from index `since` on) whose data satisfies `pred`.
  waitFor(event, pred = () => true, since = 0) {
    waitingFor = `${this.label} to receive ${event}`;
    return new Promise((resolve) => {
      const look = () => {
        for (let i = since; i < this.events.length; i++) {
          const e = this.events[i];
          if (e.event === event && pred(e.data)) {
            this.waiters.delete(look);
            resolve(e.data);
            return true;
          }
        }
        return false;
      };
      if (!look()) this.waiters.add(look);
    });
  }

  mark() {
    return this.events.length;
  }

  // What was seen, for failure messages.
  seen() {
    return JSON.stringify(this.events.map((e) => e.event)).slice(0, 500);
  }

  async connected() {
    const first = await Promise.race([this.waitFor("connect"), this.waitFor("connect_error")]);
    check(this.socket.connected, `${this.label} could not connect to ${this.url}: ${first}`);
  }

  async ack(event, data) {
    waitingFor = `${this.label}: the acknowledgement of ${event}`;
    let answer;
    try {
      answer = await this.socket.timeout(STEP_TIMEOUT_MS).emitWithAck(event, data);
    } catch {
      throw new StepError(`${this.label}: no acknowledgement for ${event}`);
    }
    check(answer && !answer.error, `${this.label}: ${event} refused: ${JSON.stringify(answer)}`);
    return answer;
  }

  close() {
    this.socket.disconnect();
  }
}

// ---------------------------------------------------------------- the scenario

const alice = { label: "A", email: `alice-${RUN_ID}@${DOMAIN}`.toLowerCase(), name: `Alice ${RUN_ID}`, chatUrl: CHAT_URLS[0] };
const bob = { label: "B", email: `bob-${RUN_ID}@${DOMAIN}`.toLowerCase(), name: `Bob ${RUN_ID}`, chatUrl: CHAT_URLS[CHAT_URLS.length - 1] };
// Carol joins A and B in a group (on A's replica: the group spans both).
const carol = { label: "C", email: `carol-${RUN_ID}@${DOMAIN}`.toLowerCase(), name: `Carol ${RUN_ID}`, chatUrl: CHAT_URLS[0] };
const users = [alice, bob];
const everyone = [alice, bob, carol];
const api = (base, path) => `${base}/api/v1${path}`;
let chatId;

// Port-forwards and fresh pods may take a moment: wait until each answers.
await step("services.ready", async () => {
  for (const base of [USER_URL, ...new Set(CHAT_URLS)]) {
    await poll(`${base}/readyz to answer 200`, async () => {
      const answer = await http("GET", `${base}/readyz`).catch((e) => ({ status: 0, text: e.message }));
      // The last answer (503 names the dependencies that do not answer) goes into a timeout message.
      waitingFor = `${base}/readyz to answer 200 (last: ${answer.status} ${answer.text.slice(0, 200)})`;
      return answer.status === 200 ? true : undefined;
    });
  }
});

await step("login.request", async () => {
  for (const u of everyone) {
    const answer = await expectStatus("POST", api(USER_URL, "/login"), 200, { body: { email: u.email } });
    check(typeof answer.json?.message === "string", `login for ${u.email}: no message in ${answer.text}`);
  }
});

await step("login.code_mailed", async () => {
  for (const u of everyone) {
    u.code = await poll(`a login-code mail to ${u.email} in ${CODES_FROM}`, () => readCode(u.email));
  }
});

await step("login.verify", async () => {
  for (const u of everyone) {
    const answer = await expectStatus("POST", api(USER_URL, "/verify"), 200, {
      body: { email: u.email, otp: u.code },
    });
    const { token, user } = answer.json ?? {};
    check(typeof token === "string" && token.length > 0, `verify for ${u.email}: no token`);
    check(typeof user?._id === "string", `verify for ${u.email}: no user._id in ${answer.text}`);
    check(user.email === u.email, `verify for ${u.email}: user.email is ${user.email}`);
    Object.assign(u, { token, id: user._id });
  }
});

await step("profile.update", async () => {
  for (const u of everyone) {
    const answer = await expectStatus("POST", api(USER_URL, "/update/user"), 200, {
      token: u.token,
      body: { name: u.name },
    });
    check(answer.json?.user?.name === u.name, `rename of ${u.label}: ${answer.text}`);
    check(typeof answer.json?.token === "string", `rename of ${u.label}: no fresh token`);
    u.token = answer.json.token;
    const me = await expectStatus("GET", api(USER_URL, "/me"), 200, { token: u.token });
    check(me.json?.name === u.name && me.json?._id === u.id, `/me of ${u.label}: ${me.text}`);
  }
});

await step("chat.open", async () => {
  const created = await expectStatus("POST", api(alice.chatUrl, "/chat/new"), [200, 201], {
    token: alice.token,
    body: { otherUserId: bob.id },
  });
  chatId = created.json?.chatId;
  check(typeof chatId === "string" && chatId.length > 0, `chat/new: no chatId in ${created.text}`);
  // B opening the same 1:1 chat finds it (200, same id), on the other replica.
  const again = await expectStatus("POST", api(bob.chatUrl, "/chat/new"), 200, {
    token: bob.token,
    body: { otherUserId: alice.id },
  });
  check(again.json?.chatId === chatId, `B's chat/new gave ${again.json?.chatId}, not ${chatId}`);
  return { chatId };
});

await step("chat.list", async () => {
  const list = await expectStatus("GET", api(bob.chatUrl, "/chat/all"), 200, { token: bob.token });
  const entry = (list.json?.chats ?? []).find((c) => c.chat?._id === chatId);
  check(entry, `B's chat/all does not list ${chatId}: ${list.text.slice(0, 300)}`);
  check(entry.user?._id === alice.id, `chat/all: other member is ${entry.user?._id}, not A`);
  check(entry.user?.name === alice.name, `chat/all: A's profile name is ${JSON.stringify(entry.user?.name)}, not ${JSON.stringify(alice.name)}`);
});

await step("socket.connect", async () => {
  alice.socket = new Client("A", alice.chatUrl, alice.token);
  await alice.socket.connected();
  bob.socket = new Client("B", bob.chatUrl, bob.token);
  await bob.socket.connected();
});

// Online either way the service says it: the getOnlineUser list (the
// original's event) or a presence change.
const online = (client, other) =>
  Promise.race([
    client.waitFor("getOnlineUser", (list) => Array.isArray(list) && list.includes(other.id)),
    client.waitFor("presence", (p) => p?.userId === other.id && p?.online === true),
  ]);

await step("presence.online", async () => {
  await online(alice.socket, bob);
  await online(bob.socket, alice);
});

await step("chat.join", async () => {
  for (const u of users) {
    const answer = await u.socket.ack("joinChat", chatId);
    check(answer.ok === true, `${u.label} joinChat: ${JSON.stringify(answer)}`);
  }
});

await step("typing", async () => {
  const since = bob.socket.mark();
  await alice.socket.ack("typing", { chatId });
  const typing = await bob.socket.waitFor("userTyping", (d) => d?.chatId === chatId, since);
  check(typing.userId === alice.id, `userTyping names ${typing.userId}, not A`);
  await alice.socket.ack("stopTyping", { chatId });
  const stopped = await bob.socket.waitFor("userStoppedTyping", (d) => d?.chatId === chatId, since);
  check(stopped.userId === alice.id, `userStoppedTyping names ${stopped.userId}, not A`);
});

const firstText = `hello bob (${RUN_ID})`;
let first;
await step("message.send", async () => {
  const answer = await alice.socket.ack("sendMessage", { chatId, text: firstText, clientMessageId: `a-${RUN_ID}-1` });
  first = answer.message;
  check(first?._id && first.text === firstText, `sendMessage ack: ${JSON.stringify(answer)}`);
  check(first.sender === alice.id && first.chatId === chatId, `sendMessage ack: ${JSON.stringify(first)}`);
  check(typeof first.sentAt === "string", `sendMessage ack has no sentAt: ${JSON.stringify(first)}`);
});

await step("message.live", async () => {
  const live = await bob.socket.waitFor("newMessage", (m) => m?._id === first._id);
  check(live.text === firstText && live.sender === alice.id, `B got ${JSON.stringify(live)}`);
});

await step("message.history", async () => {
  const history = await expectStatus("GET", api(alice.chatUrl, `/message/${chatId}`), 200, { token: alice.token });
  const stored = (history.json?.messages ?? []).find((m) => m._id === first._id);
  check(stored, `history lacks ${first._id}: ${history.text.slice(0, 300)}`);
  check(stored.text === firstText && stored.sentAt === first.sentAt, `history holds ${JSON.stringify(stored)}`);
  check(history.json?.user?._id === bob.id, `history's user is ${JSON.stringify(history.json?.user)}, not B`);
});

const replyText = `hi alice (${RUN_ID})`;
let reply;
await step("message.reply", async () => {
  const answer = await bob.socket.ack("sendMessage", { chatId, text: replyText, clientMessageId: `b-${RUN_ID}-1` });
  reply = answer.message;
  check(reply?._id && reply.text === replyText, `B's sendMessage ack: ${JSON.stringify(answer)}`);
  const live = await alice.socket.waitFor("newMessage", (m) => m?._id === reply._id);
  check(live.sender === bob.id && live.text === replyText, `A got ${JSON.stringify(live)}`);
});

await step("receipt.delivered", async () => {
  const answer = await bob.socket.ack("messageDelivered", { chatId, messageIds: [first._id] });
  check(answer.ok === true, `messageDelivered: ${JSON.stringify(answer)}`);
  const receipt = await alice.socket.waitFor(
    "messagesDelivered",
    (d) => d?.chatId === chatId && (d.messageIds ?? []).includes(first._id),
  );
  check(receipt.deliveredTo === bob.id, `messagesDelivered names ${receipt.deliveredTo}, not B`);
  check(typeof receipt.deliveredAt === "string" && receipt.deliveredAt, `no deliveredAt: ${JSON.stringify(receipt)}`);
});

// Opening the chat (reading its history) is what marks messages seen.
await step("receipt.seen", async () => {
  const opened = await expectStatus("GET", api(bob.chatUrl, `/message/${chatId}`), 200, { token: bob.token });
  const ids = (opened.json?.messages ?? []).map((m) => m._id);
  check(ids.includes(first._id) && ids.includes(reply._id), `B's history lacks a message: ${JSON.stringify(ids)}`);
  const receipt = await alice.socket.waitFor(
    "messagesSeen",
    (d) => d?.chatId === chatId && (d.messageIds ?? []).includes(first._id),
  );
  check(receipt.seenBy === bob.id, `messagesSeen names ${receipt.seenBy}, not B`);
  check(typeof receipt.seenAt === "string" && receipt.seenAt, `no seenAt: ${JSON.stringify(receipt)}`);
  // A's view of her message: sent, delivered and seen, with the three times.
  const mine = await expectStatus("GET", api(alice.chatUrl, `/message/${chatId}`), 200, { token: alice.token });
  const stored = (mine.json?.messages ?? []).find((m) => m._id === first._id);
  check(stored?.status === "seen" && stored.seen === true, `A's message is ${JSON.stringify(stored)}`);
  for (const field of ["sentAt", "deliveredAt", "seenAt"]) {
    check(typeof stored[field] === "string" && stored[field], `A's message has no ${field}: ${JSON.stringify(stored)}`);
  }
  // A opening the chat marks B's reply seen in turn.
  const back = await bob.socket.waitFor(
    "messagesSeen",
    (d) => d?.chatId === chatId && (d.messageIds ?? []).includes(reply._id),
  );
  check(back.seenBy === alice.id, `messagesSeen to B names ${back.seenBy}, not A`);
});

// ---------------------------------------------------------------- a group

let groupId;
await step("group.create", async () => {
  carol.socket = new Client("C", carol.chatUrl, carol.token);
  await carol.socket.connected();
  const created = await expectStatus("POST", api(alice.chatUrl, "/group"), 201, {
    token: alice.token,
    body: { name: `Crew ${RUN_ID}`, memberIds: [bob.id, carol.id] },
  });
  groupId = created.json?.chatId;
  check(typeof groupId === "string" && groupId.length > 0, `group: no chatId in ${created.text}`);
  for (const u of everyone) {
    const told = await u.socket.waitFor("groupUpdated", (d) => d?.chatId === groupId && d.action === "created");
    check(told.group?.members?.length === 3, `${u.label}'s groupUpdated: ${JSON.stringify(told).slice(0, 300)}`);
  }
  return { groupId };
});

await step("group.message", async () => {
  const text = `hello crew (${RUN_ID})`;
  const answer = await bob.socket.ack("sendMessage", { chatId: groupId, text });
  for (const u of [alice, carol]) {
    const live = await u.socket.waitFor("newMessage", (m) => m?._id === answer.message._id);
    check(live.text === text && live.sender === bob.id, `${u.label} got ${JSON.stringify(live)}`);
  }
});

await step("group.typing", async () => {
  const since = [alice.socket.mark(), bob.socket.mark()];
  await carol.socket.ack("typing", { chatId: groupId });
  for (const [i, u] of [alice, bob].entries()) {
    const typing = await u.socket.waitFor("userTyping", (d) => d?.chatId === groupId, since[i]);
    check(typing.userId === carol.id, `${u.label}: userTyping names ${typing.userId}, not C`);
  }
});

await step("group.receipts", async () => {
  const opened = await expectStatus("GET", api(carol.chatUrl, `/message/${groupId}`), 200, { token: carol.token });
  check((opened.json?.messages ?? []).length >= 2, `C's group history: ${opened.text.slice(0, 300)}`);
  const read = await bob.socket.waitFor("memberRead", (d) => d?.chatId === groupId && d.userId === carol.id);
  check(read.readUpTo >= 2, `memberRead: ${JSON.stringify(read)}`);
  const mine = await expectStatus("GET", api(bob.chatUrl, `/message/${groupId}`), 200, { token: bob.token });
  const sent = (mine.json?.messages ?? []).find((m) => m.sender === bob.id);
  check(sent?.receipts?.of === 2 && sent.receipts.seen === 1, `B's message: ${JSON.stringify(sent)}`);
});

await step("group.remove", async () => {
  await expectStatus("DELETE", api(alice.chatUrl, `/group/${groupId}/members/${carol.id}`), 200, { token: alice.token });
  await carol.socket.waitFor("groupUpdated", (d) => d?.chatId === groupId && d.action === "removed");
  await expectStatus("GET", api(carol.chatUrl, `/message/${groupId}`), 403, { token: carol.token });
  // Every replica's sockets learn it: C's typing is refused from now on.
  await poll("C's typing in the group to be refused", async () => {
    const answer = await carol.socket.socket.timeout(STEP_TIMEOUT_MS).emitWithAck("typing", { chatId: groupId });
    return answer?.error?.code === "forbidden" ? true : undefined;
  });
});

await step("group.add", async () => {
  await expectStatus("POST", api(bob.chatUrl, `/group/${groupId}/members`), 403, {
    token: bob.token,
    body: { userIds: [carol.id] },
  });
  await expectStatus("POST", api(alice.chatUrl, `/group/${groupId}/members`), 200, {
    token: alice.token,
    body: { userIds: [carol.id] },
  });
  // At once, from her socket on the other replica than B's.
  const since = bob.socket.mark();
  await carol.socket.ack("typing", { chatId: groupId });
  const typing = await bob.socket.waitFor("userTyping", (d) => d?.chatId === groupId && d.userId === carol.id, since);
  check(typing.userId === carol.id, `userTyping: ${JSON.stringify(typing)}`);
  carol.socket.close();
});

await step("presence.offline", async () => {
  const since = alice.socket.mark();
  bob.socket.close();
  await Promise.race([
    alice.socket.waitFor("presence", (p) => p?.userId === bob.id && p?.online === false, since),
    alice.socket.waitFor("getOnlineUser", (list) => Array.isArray(list) && !list.includes(bob.id), since),
  ]);
  alice.socket.close();
  check(!alice.socket.socket.connected && !bob.socket.socket.connected, "a socket is still connected");
});

process.exit(0);
