// What the e2e clients share: HTTP calls and reading login codes from the
// SMTP sink. Used by scenario.mjs and continuity.mjs.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** A failure with a message worth printing as it is. */
export class StepError extends Error {}

export const trimSlash = (url) => url.replace(/\/+$/, "");

/** Bound of every HTTP call, in milliseconds (set by the client at start). */
export const limits = { httpTimeoutMs: 20000 };

// ---------------------------------------------------------------- HTTP

export async function http(method, url, { token, body } = {}) {
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(limits.httpTimeoutMs),
    });
  } catch (error) {
    throw new StepError(`${method} ${url}: ${error.cause?.message ?? error.message}`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: the status tells
  }
  return { status: response.status, json, text };
}

// ---------------------------------------------------------------- login codes

// The code is in the subject ("Your parley login code: 12345678") and in the
// text ("Your login code is 12345678"), as the mail service writes it; it has
// 6 to 10 digits (PARLEY_OTP_DIGITS).
function codeIn(subject, text) {
  const fromSubject = /login code\D*(\d{6,10})\b/i.exec(subject ?? "");
  if (fromSubject) return fromSubject[1];
  const fromText = /login code is\s*(\d{6,10})\b/i.exec(text ?? "");
  return fromText ? fromText[1] : undefined;
}

// A minimal RFC 5322/MIME reader: unfolded headers, and the text/plain body
// decoded from 7bit, quoted-printable or base64 (multipart walked).
function parseMail(raw) {
  const split = raw.search(/\r?\n\r?\n/);
  const head = split < 0 ? raw : raw.slice(0, split);
  const body = split < 0 ? "" : raw.slice(split).replace(/^\r?\n\r?\n/, "");
  const headers = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { headers, body };
}

function decodeBody(body, encoding) {
  switch ((encoding ?? "").toLowerCase()) {
    case "base64":
      return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
    case "quoted-printable":
      return Buffer.from(
        body
          .replace(/=\r?\n/g, "")
          .replace(/=([0-9A-Fa-f]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16))),
        "latin1",
      ).toString("utf8");
    default:
      return body;
  }
}

function plainText({ headers, body }) {
  const type = headers["content-type"] ?? "text/plain";
  const boundary = /boundary="?([^";]+)"?/i.exec(type);
  if (/^multipart\//i.test(type) && boundary) {
    const parts = body.split(`--${boundary[1]}`).slice(1);
    for (const part of parts) {
      if (part.startsWith("--")) break;
      const text = plainText(parseMail(part.replace(/^\r?\n/, "")));
      if (text) return text;
    }
    return "";
  }
  if (/^text\/plain/i.test(type)) return decodeBody(body, headers["content-transfer-encoding"]);
  return "";
}

// dir:/path: every stored .eml, the code of the newest one addressed to `email`.
async function codeFromDir(dir, email) {
  let names;
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith(".eml") && !n.startsWith(".")).sort();
  } catch (error) {
    throw new StepError(`cannot read the mail folder ${dir}: ${error.message}`);
  }
  for (const name of names.reverse()) {
    const raw = await readFile(join(dir, name), "utf8");
    const mail = parseMail(raw);
    if (!(mail.headers.to ?? "").toLowerCase().includes(email)) continue;
    const code = codeIn(mail.headers.subject, plainText(mail));
    if (code) return code;
  }
  return undefined;
}

// http:http://host:8025: the sink of scripts/smtp_sink.py over HTTP (newest
// message to the address, raw), as the sink image serves it in a pod.
async function codeFromSink(base, email) {
  const found = await http("GET", `${base}/latest?to=${encodeURIComponent(email)}`);
  if (found.status === 404) return undefined;
  if (found.status !== 200) throw new StepError(`the sink answered ${found.status} ${found.text.slice(0, 200)}`);
  const mail = parseMail(found.text);
  return codeIn(mail.headers.subject, plainText(mail));
}

// mailpit:http://host:8025: search by recipient (newest first), then read it.
async function codeFromMailpit(base, email) {
  const query = encodeURIComponent(`to:"${email}"`);
  const found = await http("GET", `${base}/api/v1/search?query=${query}&limit=5`);
  if (found.status !== 200 || !Array.isArray(found.json?.messages)) {
    throw new StepError(`Mailpit search answered ${found.status} ${found.text.slice(0, 200)}`);
  }
  for (const summary of found.json.messages) {
    const to = (summary.To ?? []).map((a) => (a.Address ?? "").toLowerCase());
    if (!to.includes(email)) continue;
    const message = await http("GET", `${base}/api/v1/message/${encodeURIComponent(summary.ID)}`);
    if (message.status !== 200) continue;
    const code = codeIn(message.json?.Subject ?? summary.Subject, message.json?.Text);
    if (code) return code;
  }
  return undefined;
}

/** A function email -> code (or undefined while none arrived), from a CODES_FROM spec; null when the spec is not understood. */
export function codeSource(spec) {
  const colon = spec.indexOf(":");
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const where = colon < 0 ? "" : spec.slice(colon + 1);
  if (kind === "dir" && where) return (email) => codeFromDir(where, email);
  if (kind === "mailpit" && where) return (email) => codeFromMailpit(trimSlash(where), email);
  if (kind === "http" && where) return (email) => codeFromSink(trimSlash(where), email);
  return null;
}
