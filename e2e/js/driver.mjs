// A real socket.io-client (the official JavaScript client), driven line by
// line over stdin/stdout by parley's Rust test harness.
//
//   node driver.mjs <url> [--token T] [--query k=v] [--header k=v] [--transport websocket|polling] [--no-reconnect]
//
// stdin, one JSON object per line:
//   {"op":"emit","event":"e","data":...}            fire and forget
//   {"op":"emit","event":"e","data":...,"ack":7}     with acknowledgement id 7
//                                                   (optional "timeout" in ms, default 10000)
//   {"op":"emit_raw","event":"e","args":[...]}       any arguments, no ack
//   {"op":"disconnect"} / {"op":"connect"} / {"op":"auth","token":"T"}
//   {"op":"churn","count":N,"concurrency":C}        N more sockets with the same token,
//                                                   C at a time, each closed the moment
//                                                   it connects (answers "churn_done")
// stdout, one JSON object per line:
//   {"type":"connect","id":...} {"type":"connect_error","message":...}
//   {"type":"disconnect","reason":...} {"type":"event","event":...,"data":...}
//   {"type":"ack","ack":7,"data":...} {"type":"ack_timeout","ack":7}
//   {"type":"churn_done","connected":n,"refused":m,"reasons":{message:count}}
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const args = process.argv.slice(2);
const url = args[0];
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const token = opt("--token");
const transport = opt("--transport") ?? "websocket";
const query = {};
const extraHeaders = {};
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--query" || args[i] === "--header") {
    const at = args[i + 1].indexOf("=");
    const [k, v] = [args[i + 1].slice(0, at), args[i + 1].slice(at + 1)];
    (args[i] === "--query" ? query : extraHeaders)[k] = v;
  }
}
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const socket = io(url, {
  transports: [transport],
  upgrade: false,
  auth: token ? { token } : {},
  query,
  extraHeaders,
  reconnection: !args.includes("--no-reconnect"),
  reconnectionDelay: 200,
  reconnectionDelayMax: 1000,
  timeout: 5000,
});

socket.on("connect", () => out({ type: "connect", id: socket.id }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: String(err && err.message) }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.onAny((event, ...data) => out({ type: "event", event, data: data.length <= 1 ? data[0] ?? null : data }));

// Sockets that leave as soon as they are in: each closes in its "connect"
// callback, while the server may still be handling that connect.
function churnOne() {
  return new Promise((resolve) => {
    const s = io(url, {
      forceNew: true,
      transports: [transport],
      upgrade: false,
      auth: socket.auth ?? (token ? { token } : {}),
      query,
      extraHeaders,
      reconnection: false,
      // Generous: a loaded CI machine may take seconds per handshake, and
      // a client-side timeout is not a refusal by the server.
      timeout: 30000,
    });
    s.on("connect", () => {
      s.disconnect();
      resolve(["connected"]);
    });
    s.on("connect_error", (err) => {
      s.disconnect();
      resolve(["refused", String(err && err.message)]);
    });
  });
}

async function churn(count, concurrency) {
  let next = 0;
  const tally = { type: "churn_done", connected: 0, refused: 0, reasons: {} };
  const worker = async () => {
    while (next < count) {
      next++;
      const [outcome, reason] = await churnOne();
      tally[outcome]++;
      if (reason !== undefined) tally.reasons[reason] = (tally.reasons[reason] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  return tally;
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    out({ type: "driver_error", message: "bad command line" });
    return;
  }
  switch (cmd.op) {
    case "emit":
      if (cmd.ack !== undefined) {
        socket.timeout(cmd.timeout ?? 10000).emit(cmd.event, cmd.data, (err, response) => {
          if (err) out({ type: "ack_timeout", ack: cmd.ack });
          else out({ type: "ack", ack: cmd.ack, data: response ?? null });
        });
      } else {
        socket.emit(cmd.event, cmd.data);
      }
      break;
    case "emit_raw":
      socket.emit(cmd.event, ...(cmd.args ?? []));
      break;
    case "auth":
      socket.auth = { token: cmd.token };
      break;
    case "disconnect":
      socket.disconnect();
      break;
    case "connect":
      socket.connect();
      break;
    case "churn":
      churn(cmd.count ?? 1000, cmd.concurrency ?? 50).then(out);
      break;
    default:
      out({ type: "driver_error", message: `unknown op ${cmd.op}` });
  }
});
rl.on("close", () => {
  socket.disconnect();
  process.exit(0);
});
