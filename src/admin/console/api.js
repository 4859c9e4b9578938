// api.js -- the admin API (/admin/v1) as the console calls it: same-origin
// fetch with the HttpOnly session cookie, and the session's CSRF token in
// X-CSRF-Token on every change. The CSRF token lives in this module's
// memory only; the admin token a person signs in with is sent once
// (POST /session) and never kept.

let csrf = null;
let onSignedOut = null;

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

// What to do when the server says the session is gone (401).
export function onUnauthenticated(fn) { onSignedOut = fn; }

export function setCsrf(token) { csrf = token || null; }

// "/orgs/{org}/workspaces" from ["orgs", org, "workspaces"]: each part encoded.
export function path(...parts) {
  return "/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}

// api("GET", path("orgs"), {query: {limit: 10}}) -> the JSON body, or throws
// ApiError with the server's code, message and request id.
export async function api(method, p, opts = {}) {
  const url = new URL(`/admin/v1${p}`, location.origin);
  for (const [k, v] of Object.entries(opts.query || {}))
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  const headers = { accept: "application/json" };
  let body;
  if (opts.body !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  if (method !== "GET" && method !== "HEAD" && csrf) headers["x-csrf-token"] = csrf;
  let r;
  try {
    r = await fetch(url, { method, headers, body, credentials: "same-origin", cache: "no-store",
                           redirect: "error" });
  } catch (e) {
    throw new ApiError(0, "NETWORK", "keyrail could not be reached; is it running?", "");
  }
  let data = null;
  try {
    data = await r.json();
  } catch (e) {
    data = null;
  }
  if (!r.ok) {
    const e = (data && data.error) || {};
    const err = new ApiError(r.status, e.code || `HTTP_${r.status}`, e.message || r.statusText || "request failed",
                             (data && data.request_id) || r.headers.get("x-keyrail-request-id") || "");
    if (r.status === 401 && !opts.signingIn && onSignedOut) onSignedOut(err);
    throw err;
  }
  return data;
}

// Every page of a list: {items, next_cursor} until next_cursor is null
// (bounded: a console page shows at most `max` rows).
export async function all(p, query = {}, max = 5000) {
  const items = [];
  let cursor = null;
  do {
    const page = await api("GET", p, { query: { ...query, limit: 1000, cursor } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

// Money: the API's decimal strings ("12.500000", "-0.004500") as integer
// micro-units (BigInt), so sums are exact; and back.
export function micros(str) {
  const m = /^(-?)(\d+)(?:\.(\d{1,6}))?$/.exec(String(str || "0"));
  if (!m) return 0n;
  const v = BigInt(m[2]) * 1000000n + BigInt((m[3] || "").padEnd(6, "0") || "0");
  return m[1] ? -v : v;
}

export function money(v) {
  const neg = v < 0n;
  const a = neg ? -v : v;
  return `${neg ? "-" : ""}${a / 1000000n}.${String(a % 1000000n).padStart(6, "0")}`;
}
