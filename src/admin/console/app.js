// keyrail console: a small client of the admin API (/admin/v1). Plain ES
// module, no framework. Every string from the server goes into the page as
// text (textContent), never as markup; the admin token is sent once, to sign
// in, and never kept; the CSRF token lives in memory only.

const API = "/admin/v1";
const state = { session: null, csrf: null };

// ---- DOM ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $app = () => document.getElementById("app");

function show(...nodes) {
  const app = $app();
  app.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  app.focus({ preventScroll: true });
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 2500);
}

function errorBox(e) {
  return h("div", { class: "error", role: "alert" },
    e.code ? `${e.code}: ` : "", e.message || String(e),
    e.requestId ? h("span", { class: "rid" }, `request ${e.requestId}`) : null);
}

function table(columns, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing yet.");
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.label)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) =>
      h("td", { class: c.num ? "num" : null }, c.cell ? c.cell(r) : (r[c.key] ?? "—")))))));
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET" && state.csrf) opts.headers["x-csrf-token"] = state.csrf;
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, opts);
  let data = null;
  try { data = await r.json(); } catch { data = null; }
  if (r.status === 401 && path !== "/session") {
    state.session = null;
    state.csrf = null;
    renderWho();
    location.hash = "#/signin";
  }
  if (!r.ok) {
    throw new ApiError(r.status, data?.error?.code, data?.error?.message || `HTTP ${r.status}`,
      data?.request_id || r.headers.get("x-keyrail-request-id"));
  }
  return data;
}

const enc = encodeURIComponent;
const isOperator = () => state.session && state.session.scope === "operator";

// ---- chrome ----

function renderWho() {
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  if (!state.session) {
    who.replaceChildren();
    nav.replaceChildren();
    return;
  }
  const s = state.session;
  who.replaceChildren(
    h("span", {}, `${s.scope === "operator" ? "operator" : "admin of " + s.org}`, s.name ? ` · ${s.name}` : ""),
    h("button", { class: "secondary", id: "signout", onclick: signOut }, "Sign out"));
  const links = [["#/orgs", "Orgs"], ["#/usage", "Usage"], ["#/audit", "Audit log"]];
  if (isOperator()) links.push(["#/admin-tokens", "Admin tokens"]);
  nav.replaceChildren(...links.map(([href, label]) => h("a", { href }, label)));
  for (const a of nav.querySelectorAll("a"))
    a.classList.toggle("active", location.hash.startsWith(a.getAttribute("href")));
}

async function signOut() {
  try { await api("DELETE", "/session"); } catch { /* signed out either way */ }
  state.session = null;
  state.csrf = null;
  renderWho();
  location.hash = "#/signin";
}

// ---- pages ----

function signinPage() {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true,
    placeholder: "kradm_…", "aria-label": "admin token" });
  const msg = h("div");
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      msg.replaceChildren();
      try {
        const s = await api("POST", "/session", { token: input.value.trim() });
        input.value = "";
        state.session = s;
        state.csrf = s.csrf;
        renderWho();
        location.hash = s.scope === "operator" ? "#/orgs" : `#/org/${enc(s.org)}`;
      } catch (e) {
        input.value = "";
        msg.replaceChildren(errorBox(e));
      }
    },
  },
  h("label", {}, "Admin token", input),
  h("p", { class: "muted" }, "Mint one with `keyrail admin-token mint --scope operator` (or --scope org --org ORG). It is sent once to sign in and not kept by this page."),
  h("button", { type: "submit", id: "signin" }, "Sign in"));
  show(h("div", { class: "card signin" }, h("h1", {}, "Sign in"), form, msg));
  input.focus();
}

async function orgsPage() {
  const data = await api("GET", "/orgs?limit=1000");
  const parts = [h("h1", {}, "Orgs"),
    table([
      { label: "Slug", cell: (o) => h("a", { href: `#/org/${enc(o.slug)}` }, o.slug) },
      { label: "Name", key: "name" }, { label: "Status", key: "status" },
      { label: "Created", key: "created_at" }], data.items, "No orgs yet.")];
  if (isOperator()) {
    const slug = h("input", { name: "org", id: "new-org", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}" });
    const name = h("input", { name: "name", id: "new-org-name" });
    const msg = h("div");
    parts.push(h("h2", {}, "New org"), h("form", {
      class: "inline", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api("POST", "/orgs", { org: slug.value, name: name.value || undefined });
          toast(`org ${slug.value} created`);
          route();
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, h("label", {}, "Slug", slug), h("label", {}, "Display name", name),
    h("button", { type: "submit", id: "create-org" }, "Create")), msg);
  }
  show(...parts);
}

function orgTabs(org, active) {
  const tabs = [["workspaces", `#/org/${enc(org)}`, "Workspaces"],
    ["secrets", `#/org/${enc(org)}/secrets`, "Secrets"],
    ["billing", `#/org/${enc(org)}/billing`, "Credits & limits"],
    ["usage", `#/usage?org=${enc(org)}`, "Usage"]];
  return h("div", { class: "tabs" }, tabs.map(([k, href, label]) =>
    h("a", { href, class: k === active ? "active" : null }, label)));
}

async function workspacesPage(org) {
  const data = await api("GET", `/orgs/${enc(org)}/workspaces?limit=1000`);
  const name = h("input", { id: "new-ws", required: true });
  const model = h("input", { id: "new-ws-model", placeholder: "empty: platform default" });
  const runtime = h("select", { id: "new-ws-runtime" },
    ["claude-code", "codex", "anthropic-sdk", "openai-sdk"].map((r) => h("option", { value: r }, r)));
  const concierge = h("input", { type: "checkbox", id: "new-ws-concierge" });
  const msg = h("div");
  show(h("div", { class: "crumbs" }, h("a", { href: "#/orgs" }, "Orgs"), " / ", org),
    h("h1", {}, org), orgTabs(org, "workspaces"),
    table([
      { label: "Name", cell: (w) => h("a", { href: `#/org/${enc(org)}/ws/${enc(w.name)}` }, w.name) },
      { label: "Kind", key: "kind" }, { label: "Runtime", key: "runtime" },
      { label: "Created", key: "created_at" }], data.items, "No workspaces yet."),
    h("h2", {}, "New workspace"),
    h("form", {
      class: "inline", onsubmit: async (ev) => {
        ev.preventDefault();
        msg.replaceChildren();
        try {
          const r = await api("POST", `/orgs/${enc(org)}/workspaces`, {
            ws: name.value, runtime: runtime.value, model: model.value || undefined,
            concierge: concierge.checked || undefined,
          });
          toast(`workspace ${r.workspace.name}: route ${r.route}, provider ${r.provider}`);
          location.hash = `#/org/${enc(org)}/ws/${enc(r.workspace.name)}`;
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, h("label", {}, "Name", name), h("label", {}, "Runtime", runtime), h("label", {}, "Model", model),
    h("label", { class: "check" }, concierge, " concierge"),
    h("button", { type: "submit", id: "create-ws" }, "Create")), msg);
}

function explainView(x) {
  if (x.error) return h("div", { class: "card" }, errorBox({ code: x.error, message: x.message }));
  const summary = h("p", {}, "Route ", h("b", {}, x.route), ", provider ", h("b", {}, x.provider),
    ", protocol ", x.protocol, ", model ", x.model || "(the agent's default)");
  const trace = h("table", { class: "trace" }, h("tbody", {}, (x.trace || []).map((t) =>
    h("tr", {}, h("td", {}, t.rule), h("td", {}, t.text)))));
  const runtimes = table([
    { label: "Runtime", key: "runtime" }, { label: "Protocol", key: "protocol" },
    { label: "Calls", cell: (r) => [r.host, r.proxy ? " (keyrail proxy)" : ""] },
    { label: "Credential", cell: (r) => r.credential_var ? [r.class, " in ", h("code", {}, r.credential_var)] : "none" },
    { label: "Config file", cell: (r) => r.file ? [r.file, r.dir_env ? ` in ${r.dir_env}` : "", r.args ? " (argument)" : ""] : "—" },
  ], x.runtimes || []);
  const env = table([
    { label: "Variable", cell: (v) => h("code", {}, v.key) }, { label: "Origin", key: "origin" },
    { label: "Class", key: "class" },
    { label: "Fingerprint", cell: (v) => v.placeholder ? "(the token the launcher holds)" : (v.fingerprint || "—") },
  ], x.env || []);
  const up = Object.entries(x.upstream || {});
  return h("div", { class: "card", id: "explain" },
    h("h2", {}, "Explain"), summary,
    h("h2", {}, "What each agent runtime calls"), runtimes,
    up.length ? [h("h2", {}, "Upstream (the proxy forwards with the platform's key)"),
      table([{ label: "Protocol", cell: (u) => u[0] }, { label: "Host", cell: (u) => u[1].host },
        { label: "Provider", cell: (u) => u[1].provider }, { label: "Key", cell: (u) => [u[1].key_env, ": ", u[1].class] }], up)] : null,
    h("h2", {}, "Resolution"), trace,
    h("h2", {}, "Environment"), env);
}

async function workspacePage(org, ws) {
  const base = `/orgs/${enc(org)}/workspaces/${enc(ws)}`;
  const [x, tokens, limits] = await Promise.all([
    api("GET", `${base}/explain`), api("GET", `${base}/tokens?limit=1000`), api("GET", `${base}/limits`)]);
  const once = h("div");
  const msg = h("div");
  const ttl = h("input", { id: "token-ttl", placeholder: "e.g. 30d (empty: no expiry)" });
  const tokenTable = table([
    { label: "Id", key: "id", num: true }, { label: "Prefix", cell: (t) => h("code", {}, t.prefix) },
    { label: "State", cell: (t) => h("span", { class: `pill ${t.state === "active" ? "ok" : "bad"}` }, t.state) },
    { label: "Created", key: "created_at" }, { label: "Expires", key: "expires_at" },
    { label: "", cell: (t) => t.state === "active" ? h("button", {
      class: "danger", onclick: async () => {
        try { await api("DELETE", `${base}/tokens/${t.id}`); toast(`token ${t.id} revoked`); route(); }
        catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, "Revoke") : "" }], tokens.items, "No tokens.");
  const mint = h("form", {
    class: "inline", onsubmit: async (ev) => {
      ev.preventDefault();
      msg.replaceChildren();
      try {
        const t = await api("POST", `${base}/tokens`, ttl.value ? { ttl: ttl.value } : {});
        const field = h("input", { readonly: true, id: "minted-token", value: t.token, "aria-label": "the new token" });
        once.replaceChildren(h("div", { class: "secret-once" },
          h("p", {}, h("b", {}, "Shown once."), " Copy it now: keyrail keeps only its hash. Give it to the workspace as KEYRAIL_WORKSPACE_TOKEN."),
          field));
        field.select();
        t.token = null;
      } catch (e) { msg.replaceChildren(errorBox(e)); }
    },
  }, h("label", {}, "Lifetime", ttl), h("button", { type: "submit", id: "mint-token" }, "Mint token"));
  show(h("div", { class: "crumbs" }, h("a", { href: "#/orgs" }, "Orgs"), " / ",
      h("a", { href: `#/org/${enc(org)}` }, org), " / ", ws),
    h("h1", {}, `${org}/${ws}`),
    h("p", {}, h("a", { href: `#/org/${enc(org)}/secrets?workspace=${enc(ws)}` }, "Workspace secrets"),
      " · ", h("a", { href: `#/usage?org=${enc(org)}&workspace=${enc(org + "/" + ws)}` }, "Usage")),
    h("div", { class: "card" }, h("h2", {}, "Tokens"), tokenTable, mint, once, msg),
    limitsCard(`${base}/limits`, limits, true),
    explainView(x));
}

function limitsCard(path, l, editable) {
  const rpm = h("input", { id: "limit-rpm", type: "number", min: 0, value: l.rpm });
  const tpm = h("input", { id: "limit-tpm", type: "number", min: 0, value: l.tpm });
  const models = h("input", { id: "limit-models", value: (l.models || []).join(", "), placeholder: "every priced platform model" });
  const msg = h("div");
  const parts = [h("h2", {}, "Limits"),
    h("p", {}, `rpm ${l.rpm || "unlimited"}, tpm ${l.tpm || "unlimited"}, models `,
      (l.models || []).length ? l.models.join(", ") : "(every priced platform model)")];
  if (editable)
    parts.push(h("form", {
      class: "inline", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api("PUT", path, { rpm: Number(rpm.value || 0), tpm: Number(tpm.value || 0),
            models: models.value.split(",").map((s) => s.trim()).filter(Boolean) });
          toast("limits saved");
          route();
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, h("label", {}, "rpm", rpm), h("label", {}, "tpm", tpm), h("label", {}, "Models", models),
    h("button", { type: "submit", id: "save-limits" }, "Save")), msg);
  return h("div", { class: "card" }, parts);
}

async function secretsPage(org, params) {
  const ws = params.get("workspace");
  const q = ws ? `?workspace=${enc(ws)}&limit=1000` : "?limit=1000";
  const data = await api("GET", `/orgs/${enc(org)}/secrets${q}`);
  const key = h("input", { id: "secret-key", required: true, placeholder: "MINIMAX_API_KEY" });
  const value = h("input", { id: "secret-value", type: "password", required: true, autocomplete: "off" });
  const msg = h("div");
  const scope = ws ? { workspace: ws } : {};
  show(h("div", { class: "crumbs" }, h("a", { href: "#/orgs" }, "Orgs"), " / ",
      h("a", { href: `#/org/${enc(org)}` }, org), ws ? ` / ${ws}` : ""),
    h("h1", {}, ws ? `Secrets of ${org}/${ws}` : `Secrets of ${org}`), orgTabs(org, "secrets"),
    h("p", { class: "muted" }, "Values are encrypted at rest and never shown: each key's state, credential class and fingerprint."),
    table([
      { label: "Key", cell: (s) => h("code", {}, s.key) },
      { label: "State", cell: (s) => h("span", { class: `pill ${s.state === "ok" ? "ok" : "bad"}` }, s.state) },
      { label: "Class", key: "class" }, { label: "Fingerprint", cell: (s) => s.fingerprint || "—" },
      { label: "Updated", key: "updated_at" },
      { label: "", cell: (s) => h("button", {
        class: "danger", onclick: async () => {
          try {
            await api("DELETE", `/orgs/${enc(org)}/secrets/${enc(s.key)}${ws ? `?workspace=${enc(ws)}` : ""}`);
            toast(`${s.key} removed`);
            route();
          } catch (e) { msg.replaceChildren(errorBox(e)); }
        },
      }, "Unset") }], data.items, "No secrets."),
    h("h2", {}, "Set a secret"),
    h("form", {
      class: "inline", onsubmit: async (ev) => {
        ev.preventDefault();
        msg.replaceChildren();
        const v = value.value;
        value.value = "";
        try {
          const r = await api("PUT", `/orgs/${enc(org)}/secrets/${enc(key.value)}`, { value: v, ...scope });
          toast(`${r.key} set (${r.class})`);
          route();
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, h("label", {}, "Key", key), h("label", {}, "Value", value),
    h("button", { type: "submit", id: "set-secret" }, "Set")), msg);
}

async function billingPage(org) {
  const [credits, ledger, limits] = await Promise.all([
    api("GET", `/orgs/${enc(org)}/credits`), api("GET", `/orgs/${enc(org)}/credits/ledger?limit=100`),
    api("GET", `/orgs/${enc(org)}/limits`)]);
  const msg = h("div");
  const parts = [h("div", { class: "crumbs" }, h("a", { href: "#/orgs" }, "Orgs"), " / ",
      h("a", { href: `#/org/${enc(org)}` }, org)),
    h("h1", {}, `Credits & limits of ${org}`), orgTabs(org, "billing"),
    h("div", { class: "card", id: "credits" },
      h("p", {}, "Balance ", h("b", {}, credits.balance), ", overage cap ", credits.overage_cap,
        ", available ", h("b", {}, credits.available)),
      credits.refusing ? h("p", { class: "error" }, "Requests are refused with 402 until it is topped up.") : null)];
  if (isOperator()) {
    const amount = h("input", { id: "credit-amount", required: true, placeholder: "100" });
    const cap = h("input", { id: "credit-cap", placeholder: credits.overage_cap });
    parts.push(h("form", {
      class: "inline", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api("POST", `/orgs/${enc(org)}/credits`, { amount: amount.value, reason: "console" });
          if (cap.value) await api("PUT", `/orgs/${enc(org)}/credits/cap`, { amount: cap.value });
          toast("credits updated");
          route();
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, h("label", {}, "Add", amount), h("label", {}, "Overage cap", cap),
    h("button", { type: "submit", id: "add-credits" }, "Apply")), msg);
  }
  parts.push(h("h2", {}, "Ledger"), table([
    { label: "When", key: "at" }, { label: "Amount", key: "amount", num: true },
    { label: "Reason", key: "reason" }, { label: "Request", cell: (r) => r.request_id || "—" }],
  ledger.items, "No entries."), limitsCard(`/orgs/${enc(org)}/limits`, limits, isOperator()));
  show(...parts);
}

// ---- usage charts ----

function barChart(title, days, series, value, id) {
  // stacked bars: one per day, one colour per model
  const W = 760, H = 220, L = 60, B = 30, T = 20;
  const totals = days.map((d) => series.reduce((s, m) => s + (value(d, m) || 0), 0));
  const max = Math.max(...totals) || 1;
  const bw = Math.max(4, Math.min(40, (W - L - 10) / Math.max(1, days.length) - 6));
  const g = [svg("line", { x1: L, y1: H - B, x2: W - 5, y2: H - B, class: "axis" }),
    svg("text", { x: 4, y: T - 6 }, title),
    svg("text", { x: 4, y: T + 10 }, fmt(max)), svg("text", { x: 4, y: H - B }, "0")];
  days.forEach((d, i) => {
    const x = L + 6 + i * (bw + 6);
    let y = H - B;
    series.forEach((m, k) => {
      const v = value(d, m) || 0;
      const hgt = ((H - B - T) * v) / max;
      if (hgt > 0) {
        y -= hgt;
        g.push(svg("rect", { x, y, width: bw, height: hgt, class: `c${k % 8}` },
          svg("title", {}, `${d} ${m}: ${fmt(v)}`)));
      }
    });
    if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0)
      g.push(svg("text", { x, y: H - 10 }, d.slice(5)));
  });
  return svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, id }, g);
}

function fmt(n) {
  return Number.isInteger(n) ? n.toLocaleString("en") : n.toFixed(4);
}

async function usagePage(params) {
  const org = params.get("org") || (state.session.scope === "org" ? state.session.org : "");
  const ws = params.get("workspace") || "";
  const from = params.get("from") || "";
  const q = new URLSearchParams({ by: "day,model" });
  if (org) q.set("org", org);
  if (ws) q.set("workspace", ws);
  if (from) q.set("from", from);
  const data = await api("GET", `/usage?${q}`);
  const rows = data.rows || [];
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const at = (d, m, f) => rows.filter((r) => r.day === d && r.model === m)
    .reduce((s, r) => s + (f === "cost" ? Number(r.cost) : r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_write_tokens), 0);
  const fOrg = h("input", { id: "usage-org", value: org, placeholder: "every org" });
  const fWs = h("input", { id: "usage-ws", value: ws, placeholder: "ORG/NAME" });
  const fFrom = h("input", { id: "usage-from", value: from, placeholder: "YYYY-MM-DD" });
  const filters = h("form", {
    class: "inline", onsubmit: (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      if (fOrg.value) p.set("org", fOrg.value);
      if (fWs.value) p.set("workspace", fWs.value);
      if (fFrom.value) p.set("from", fFrom.value);
      location.hash = `#/usage?${p}`;
    },
  }, h("label", {}, "Org", fOrg), h("label", {}, "Workspace", fWs), h("label", {}, "From", fFrom),
  h("button", { type: "submit" }, "Show"));
  const legend = h("div", { class: "legend" }, models.map((m, k) => h("span", { class: `c${k % 8}` }, m)));
  show(h("h1", {}, `Usage${org ? " of " + (ws || org) : ""}`), filters,
    rows.length ? [legend,
      barChart("tokens per day and model", days, models, (d, m) => at(d, m, "tokens"), "chart-tokens"),
      barChart("cost per day and model", days, models, (d, m) => at(d, m, "cost"), "chart-cost"),
      table([{ label: "Day", key: "day" }, { label: "Model", key: "model" },
        { label: "Requests", key: "requests", num: true }, { label: "Input", key: "input_tokens", num: true },
        { label: "Output", key: "output_tokens", num: true }, { label: "Cache read", key: "cache_read_tokens", num: true },
        { label: "Cost", key: "cost", num: true }], rows)]
      : h("p", { class: "muted", id: "no-usage" }, "No usage in this range."));
}

// ---- audit log and admin tokens ----

async function auditPage(params) {
  const q = new URLSearchParams({ limit: "50" });
  for (const k of ["org", "action", "actor", "cursor"]) if (params.get(k)) q.set(k, params.get(k));
  const data = await api("GET", `/audit?${q}`);
  const fAction = h("input", { id: "audit-action", value: params.get("action") || "", placeholder: "secret.set" });
  const fOrg = h("input", { id: "audit-org", value: params.get("org") || "" });
  const next = data.next_cursor;
  show(h("h1", {}, "Audit log"),
    h("form", {
      class: "inline", onsubmit: (ev) => {
        ev.preventDefault();
        const p = new URLSearchParams();
        if (fOrg.value) p.set("org", fOrg.value);
        if (fAction.value) p.set("action", fAction.value);
        location.hash = `#/audit?${p}`;
      },
    }, h("label", {}, "Org", fOrg), h("label", {}, "Operation", fAction), h("button", { type: "submit" }, "Filter")),
    table([{ label: "When", key: "at" }, { label: "Actor", key: "actor" }, { label: "Operation", key: "action" },
      { label: "Target", key: "target" },
      { label: "Outcome", cell: (r) => h("span", { class: `pill ${r.outcome === "ok" ? "ok" : "bad"}` }, r.outcome) },
      { label: "Detail", key: "detail" }, { label: "Request", cell: (r) => h("code", {}, r.request_id) }],
    data.items, "No entries."),
    next ? h("p", {}, h("a", { href: `#/audit?${new URLSearchParams({ ...Object.fromEntries(q), cursor: next })}`, id: "audit-next" }, "Older →")) : null);
}

async function adminTokensPage() {
  const data = await api("GET", "/admin-tokens?limit=1000");
  const msg = h("div"), once = h("div");
  const scope = h("select", { id: "adm-scope" }, h("option", { value: "org" }, "org"), h("option", { value: "operator" }, "operator"));
  const org = h("input", { id: "adm-org", placeholder: "org slug (org scope)" });
  const name = h("input", { id: "adm-name" });
  show(h("h1", {}, "Admin tokens"),
    table([{ label: "Id", key: "id", num: true }, { label: "Prefix", cell: (t) => h("code", {}, t.prefix) },
      { label: "Scope", cell: (t) => t.scope === "org" ? `org ${t.org}` : "operator" },
      { label: "Name", key: "name" },
      { label: "State", cell: (t) => h("span", { class: `pill ${t.state === "active" ? "ok" : "bad"}` }, t.state) },
      { label: "", cell: (t) => t.state === "active" ? h("button", {
        class: "danger", onclick: async () => {
          try { await api("DELETE", `/admin-tokens/${t.id}`); toast(`admin token ${t.id} revoked`); route(); }
          catch (e) { msg.replaceChildren(errorBox(e)); }
        },
      }, "Revoke") : "" }], data.items),
    h("h2", {}, "Mint an admin token"),
    h("form", {
      class: "inline", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const t = await api("POST", "/admin-tokens", { scope: scope.value, org: scope.value === "org" ? org.value : undefined, name: name.value || undefined });
          once.replaceChildren(h("div", { class: "secret-once" }, h("p", {}, h("b", {}, "Shown once."), " Copy it now."),
            h("input", { readonly: true, value: t.token, "aria-label": "the new admin token" })));
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, h("label", {}, "Scope", scope), h("label", {}, "Org", org), h("label", {}, "Name", name),
    h("button", { type: "submit" }, "Mint")), once, msg);
}

// ---- the router ----

async function route() {
  const hash = location.hash || "#/orgs";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (!state.session && parts[0] !== "signin") {
    try {
      const s = await api("GET", "/session");
      state.session = s;
      state.csrf = s.csrf;
    } catch {
      return signinPage();
    }
  }
  renderWho();
  try {
    if (parts[0] === "signin") return signinPage();
    if (parts[0] === "orgs" || !parts.length) {
      if (!isOperator()) { location.hash = `#/org/${enc(state.session.org)}`; return; }
      return await orgsPage();
    }
    if (parts[0] === "org" && parts[1]) {
      if (parts[2] === "ws" && parts[3]) return await workspacePage(parts[1], parts[3]);
      if (parts[2] === "secrets") return await secretsPage(parts[1], params);
      if (parts[2] === "billing") return await billingPage(parts[1]);
      return await workspacesPage(parts[1]);
    }
    if (parts[0] === "usage") return await usagePage(params);
    if (parts[0] === "audit") return await auditPage(params);
    if (parts[0] === "admin-tokens") return await adminTokensPage();
    show(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/orgs" }, "Back")));
  } catch (e) {
    if (e.status === 401) return signinPage();
    show(h("h1", {}, "Something went wrong"), errorBox(e));
  }
}

window.addEventListener("hashchange", route);
route();
