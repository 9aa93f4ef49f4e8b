// Logins while the broker goes away: POST /login for fresh addresses at a
// steady rate for DURATION_MS (e2e/run.sh deletes the RabbitMQ pod
// meanwhile), then checks the promise the user service makes: every /login
// that answered 200 got its code mailed, and every other answer was 503
// (the code was not handed to a broker that could lose it).
//
//   USER_URL=http://... CODES_FROM=http:http://... DURATION_MS=25000 node e2e/js/logins.mjs
//
// Environment: USER_URL, CODES_FROM (as for scenario.mjs), DURATION_MS
// (default 25000), RATE logins per second (default 5), MAIL_WAIT_MS bound on
// the wait for each accepted login's mail (default 90000), ONLY_ACCEPTED=1
// to require that every login is accepted (after the fault).
// stdout: one summary line. Exit 0 only when the promise held and at least
// one login was accepted.
import { randomBytes } from "node:crypto";
import { codeSource, http, limits, trimSlash } from "./lib.mjs";

const fail = (message) => {
  process.stderr.write(`logins: ${message}\n`);
  process.exit(2);
};
const USER_URL = trimSlash(process.env.USER_URL ?? fail("USER_URL is required"));
const readCode = codeSource(process.env.CODES_FROM ?? "") ?? fail("CODES_FROM is required");
const DURATION_MS = Number(process.env.DURATION_MS ?? 25000);
const RATE = Number(process.env.RATE ?? 5);
const MAIL_WAIT_MS = Number(process.env.MAIL_WAIT_MS ?? 90000);
limits.httpTimeoutMs = 15000;
const RUN_ID = randomBytes(4).toString("hex");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const results = [];
async function attempt(n) {
  const email = `login-${RUN_ID}-${n}@example.com`;
  let status;
  try {
    status = (await http("POST", `${USER_URL}/api/v1/login`, { body: { email } })).status;
  } catch (error) {
    status = `error: ${error.message}`;
  }
  results.push({ email, status });
}

const started = Date.now();
const pending = [];
for (let n = 1; Date.now() - started < DURATION_MS; n++) {
  pending.push(attempt(n));
  await sleep(1000 / RATE);
}
await Promise.all(pending);

const accepted = results.filter((r) => r.status === 200);
const refused = results.filter((r) => r.status === 503);
const other = results.filter((r) => r.status !== 200 && r.status !== 503);
const unmailed = [];
const deadline = Date.now() + MAIL_WAIT_MS;
for (const r of accepted) {
  for (;;) {
    let code;
    try {
      code = await readCode(r.email);
    } catch {
      code = undefined;
    }
    if (code) break;
    if (Date.now() > deadline) {
      unmailed.push(r.email);
      break;
    }
    await sleep(250);
  }
}
const summary = {
  logins: results.length,
  accepted: accepted.length,
  refused503: refused.length,
  other: other.length,
  otherStatuses: [...new Set(other.map((r) => String(r.status)))].slice(0, 5),
  acceptedButNotMailed: unmailed.length,
  seconds: Math.round((Date.now() - started) / 1000),
};
process.stdout.write(JSON.stringify(summary) + "\n");
const onlyAccepted = process.env.ONLY_ACCEPTED === "1";
const held = other.length === 0 && unmailed.length === 0 && accepted.length > 0;
process.exit(held && (!onlyAccepted || refused.length === 0) ? 0 : 1);
