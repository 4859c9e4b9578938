// pages_org.js -- orgs, workspaces (with the explain view and the
// workspace's tokens and limits) and secrets.
import { all, api, path } from "./api.js";
import { field, h, onSubmit, route, statusArea, table, when } from "./dom.js";

// The tabs of an org's pages.
export function orgTabs(org, current) {
  const tabs = [
    ["workspaces", "Workspaces", route("orgs", org, "workspaces")],
    ["secrets", "Secrets", route("orgs", org, "secrets")],
    ["credits", "Credits and limits", route("orgs", org, "credits")],
    ["usage", "Usage", route("usage", { org })],
    ["audit", "Audit log", route("audit", { org })],
  ];
  return h("nav", { class: "tabs", "aria-label": `Org ${org}` },
    h("ul", {}, tabs.map(([k, label, href]) =>
      h("li", {}, h("a", { href, "aria-current": k === current ? "page" : null }, label)))));
}

export function title(text, ...more) {
  return h("h1", { tabindex: "-1" }, text, more);
}

// ---- orgs ----

export async function orgsPage(view, ctx) {
  const list = h("div", { id: "org-list" });
  view.append(title("Orgs"), list);
  const load = async () => {
    const items = await all(path("orgs"));
    list.replaceChildren(table(null, [
      { label: "Org", get: (o) => h("a", { href: route("orgs", o.slug, "workspaces") }, o.slug) },
      { label: "Name", get: (o) => o.name },
      { label: "Status", get: (o) => o.status },
      { label: "Created", get: (o) => when(o.created_at), nowrap: true },
    ], items, "No orgs yet."));
  };
  if (ctx.operator) {
    const st = statusArea();
    const slug = h("input", { name: "org", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", autocomplete: "off" });
    const name = h("input", { name: "name", autocomplete: "off" });
    const form = h("form", { id: "org-create", class: "card" },
      h("h2", {}, "Create an org"),
      field("Slug", slug, "1-63 of a-z, 0-9 and -, not starting with -"),
      field("Display name (optional)", name),
      h("button", { type: "submit" }, "Create org"), st.el);
    onSubmit(form, st, async () => {
      const r = await api("POST", path("orgs"), { body: { org: slug.value, name: name.value || undefined } });
      form.reset();
      st.ok("Created org ", h("a", { href: route("orgs", r.org.slug, "workspaces") }, r.org.slug), ".");
      await load();
    });
    view.append(form);
  }
  await load();
}

// ---- workspaces ----

export async function workspacesPage(view, ctx) {
  const org = ctx.params[0];
  const list = h("div", { id: "ws-list" });
  view.append(orgTabs(org, "workspaces"), title(`Workspaces of ${org}`), list);
  const load = async () => {
    const items = await all(path("orgs", org, "workspaces"));
    list.replaceChildren(table(null, [
      { label: "Workspace", get: (w) => h("a", { href: route("orgs", org, "workspaces", w.name) }, w.name) },
      { label: "Kind", get: (w) => w.kind },
      { label: "Runtime", get: (w) => w.runtime },
      { label: "Parent", get: (w) => (w.parent_id === null ? "" : String(w.parent_id)) },
      { label: "Created", get: (w) => when(w.created_at), nowrap: true },
    ], items, "No workspaces yet."));
  };
  await load();
  const st = statusArea();
  const name = h("input", { name: "ws", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", autocomplete: "off" });
  const model = h("input", { name: "model", autocomplete: "off", placeholder: "claude-sonnet-4-5" });
  const runtime = h("input", { name: "runtime", autocomplete: "off", placeholder: "the server's default" });
  const concierge = h("input", { type: "checkbox", name: "concierge" });
  const form = h("form", { id: "ws-create", class: "card" },
    h("h2", {}, "Create a workspace"),
    field("Name", name, "1-63 of a-z, 0-9 and -"),
    field("Model", model, "MODEL of the workspace; a concierge may leave it empty"),
    field("Runtime profile (optional)", runtime),
    field("The org's concierge", concierge),
    h("button", { type: "submit" }, "Create workspace"), st.el);
  onSubmit(form, st, async () => {
    const body = { ws: name.value };
    if (model.value) body.model = model.value;
    if (runtime.value) body.runtime = runtime.value;
    if (concierge.checked) body.concierge = true;
    const r = await api("POST", path("orgs", org, "workspaces"), { body });
    form.reset();
    st.ok("Created ", h("a", { href: route("orgs", org, "workspaces", r.workspace.name) }, r.workspace.name),
      `: route ${r.route}, provider ${r.provider}, protocol ${r.protocol}${r.model ? `, model ${r.model}` : ""}.`);
    await load();
  });
  view.append(form);
}

// One workspace: explain, its environment, tokens, limits.
export async function workspacePage(view, ctx) {
  const [org, ws] = ctx.params;
  view.append(orgTabs(org, "workspaces"), title(`Workspace ${org}/${ws}`),
    h("p", { class: "links" },
      h("a", { href: route("orgs", org, "secrets", { workspace: ws }) }, "Secrets of this workspace"), " · ",
      h("a", { href: route("usage", { org, workspace: `${org}/${ws}` }) }, "Usage of this workspace")));
  const explain = h("section", { id: "explain", "aria-labelledby": "explain-h" }, h("h2", { id: "explain-h" }, "Explain"));
  const tokens = h("section", { id: "tokens", "aria-labelledby": "tokens-h" }, h("h2", { id: "tokens-h" }, "Tokens"));
  const limits = h("section", { id: "ws-limits", "aria-labelledby": "limits-h" }, h("h2", { id: "limits-h" }, "Limits"));
  const envBox = h("section", { id: "ws-env", "aria-labelledby": "env-h" }, h("h2", { id: "env-h" }, "Environment"));
  view.append(explain, envBox, tokens, limits);
  const x = await api("GET", path("orgs", org, "workspaces", ws, "explain"));
  renderExplain(explain, x);
  envSection(envBox, org, ws);
  await tokensSection(tokens, org, ws);
  await limitsSection(limits, path("orgs", org, "workspaces", ws, "limits"), true);
}

// The environment a workspace container gets (POST …/provision, rebuilt from
// the store): values as the platform would use them, the workspace token as
// the launcher's placeholder, a credential withheld (its name and class only).
function envSection(box, org, ws) {
  const out = h("div", { id: "ws-env-result" });
  const btn = h("button", { type: "button", id: "ws-env-build" }, "Build the environment");
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      const r = await api("POST", path("orgs", org, "workspaces", ws, "provision"), { body: { rebuild: true } });
      out.replaceChildren(
        (r.withheld || []).length
          ? h("div", { class: "warning", role: "status", id: "ws-env-withheld" },
            h("p", {}, "Withheld (credentials are never returned over HTTP): ",
              r.withheld.map((w) => `${w.key} (${w.class})`).join(", ")))
          : h("p", { class: "hint" }, "No credential value in it: the workspace token is filled in by keyrail run."),
        table(null, [
          { label: "Variable", get: (v) => h("code", {}, v.key) },
          { label: "Origin", get: (v) => v.origin },
          { label: "Class", get: (v) => h("span", { class: `cls cls-${v.class}` }, v.class) },
          { label: "Value", get: (v) => (v.withheld ? h("em", {}, "withheld") : h("code", {}, v.value)) },
        ], r.env || [], "No variables."));
    } finally {
      btn.disabled = false;
    }
  });
  box.append(h("p", { class: "hint" }, "What a workspace container gets, rebuilt from the store."), btn, out);
}

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) =>
    [h("dt", {}, k), h("dd", {}, v === null || v === "" ? "—" : v)]));
}

const yesno = (b) => (b ? "yes" : "no");

export function renderExplain(box, x) {
  box.append(dl([
    ["Kind", x.kind], ["Runtime", x.runtime], ["Route", x.route], ["Provider", x.provider],
    ["Protocol", x.protocol], ["Model", x.model],
  ]));
  if (x.error)
    box.append(h("div", { class: "warning", role: "status" },
      h("p", {}, "This workspace does not resolve: ", h("span", { class: "code" }, x.error)), h("p", {}, x.message || "")));
  box.append(h("h3", {}, "Resolution trace"),
    x.trace && x.trace.length
      ? h("ol", { class: "trace", id: "explain-trace" }, x.trace.map((t) => h("li", {}, h("span", { class: "rule" }, t.rule), " ", t.text)))
      : h("p", { class: "empty" }, "No trace."));
  box.append(h("h3", {}, "Runtime profiles"),
    h("p", { class: "hint" }, "What each agent runtime calls with this environment: the host, and the class of the credential it presents."),
    h("div", { id: "explain-runtimes" }, table(null, [
      { label: "Runtime", get: (r) => r.runtime },
      { label: "Protocol", get: (r) => r.protocol },
      { label: "Host", get: (r) => h("code", {}, r.host) },
      { label: "Via keyrail", get: (r) => yesno(r.proxy) },
      { label: "Base URL set", get: (r) => yesno(r.configured) },
      { label: "Credential variable", get: (r) => r.credential_var },
      { label: "Credential class", get: (r) => h("span", { class: `cls cls-${r.class}` }, r.class) },
      { label: "Settings file", get: (r) => r.file },
      { label: "Directory variable", get: (r) => r.dir_env },
    ], x.runtimes || [], "No runtime profile applies (the workspace does not resolve).")));
  box.append(h("h3", {}, "Environment variables"),
    h("p", { class: "hint" }, "Names, where each comes from and its credential class; values are never shown."),
    h("div", { id: "explain-env" }, table(null, [
      { label: "Variable", get: (v) => h("code", {}, v.key) },
      { label: "Origin", get: (v) => v.origin },
      { label: "Class", get: (v) => h("span", { class: `cls cls-${v.class}` }, v.class) },
      { label: "Fingerprint", get: (v) => (v.placeholder ? "filled in at launch" : v.fingerprint ? h("code", {}, v.fingerprint) : "") },
    ], x.env || [], "No variables.")));
  const up = Object.entries(x.upstream || {});
  const org_key = up.length && up[0][1].key_owner === "org";
  box.append(h("h3", {}, org_key ? "Upstream (BYOK: the proxy forwards with the org's key)" : "Platform upstream"),
    up.length
      ? h("div", { id: "explain-upstream" }, table(null, [
        { label: "Protocol", get: ([p]) => p },
        { label: "Provider", get: ([, u]) => u.provider },
        { label: "Host", get: ([, u]) => h("code", {}, u.host) },
        { label: "Key variable", get: ([, u]) => h("code", {}, u.key_env) },
        { label: "Key class", get: ([, u]) => h("span", { class: `cls cls-${u.class}` }, u.class) },
        { label: "Fingerprint", get: ([, u]) => (u.fingerprint ? h("code", {}, u.fingerprint) : "") },
      ], up))
      : h("p", { class: "empty", id: "explain-upstream" },
        x.route ? `The ${x.route} route: keyrail forwards nothing for this workspace with a platform key.` : "No upstream."));
}

// ---- tokens ----

async function tokensSection(box, org, ws) {
  const list = h("div", { id: "token-list" });
  const once = h("div", { id: "token-once-slot" });
  const load = async () => {
    const items = await all(path("orgs", org, "workspaces", ws, "tokens"));
    list.replaceChildren(table(null, [
      { label: "Id", get: (t) => String(t.id), num: true },
      { label: "Prefix", get: (t) => h("code", {}, t.prefix) },
      { label: "State", get: (t) => h("span", { class: `state state-${t.state}` }, t.state) },
      { label: "Created", get: (t) => when(t.created_at), nowrap: true },
      { label: "Expires", get: (t) => when(t.expires_at) || "never", nowrap: true },
      { label: "Revoked", get: (t) => when(t.revoked_at), nowrap: true },
      { label: "", get: (t) => (t.state === "active" ? revokeButton(t) : "") },
    ], items, "No tokens yet."));
  };
  const revokeButton = (t) => {
    const st = statusArea();
    const b = h("button", { type: "button", class: "danger small", "data-token-id": String(t.id),
                            "aria-label": `Revoke token ${t.id} (${t.prefix}…)` }, "Revoke");
    b.addEventListener("click", async () => {
      if (!window.confirm(`Revoke token ${t.prefix}… of ${org}/${ws}? Agents using it are refused from now on.`)) return;
      b.disabled = true;
      try {
        await api("DELETE", path("orgs", org, "workspaces", ws, "tokens", t.id));
        await load();
      } catch (e) {
        b.disabled = false;
        st.error(e);
        b.after(st.el);
      }
    });
    return b;
  };
  const st = statusArea();
  const ttl = h("input", { name: "ttl", autocomplete: "off", placeholder: "30d" });
  const form = h("form", { id: "token-mint", class: "card" },
    h("h3", {}, "Mint a token"),
    field("Lifetime (optional)", ttl, "90m, 12h, 30d; empty: no expiry"),
    h("button", { type: "submit" }, "Mint token"), st.el);
  onSubmit(form, st, async () => {
    const r = await api("POST", path("orgs", org, "workspaces", ws, "tokens"), { body: ttl.value ? { ttl: ttl.value } : {} });
    form.reset();
    once.replaceChildren(shownOnce("New workspace token", r.token, r, `${org}/${ws}`));
    await load();
  });
  box.append(list, once, form);
  await load();
}

// A credential shown once: a read-only field to copy from, with a plain
// note. It lives only in this element: leaving the page drops it.
export function shownOnce(heading, token, meta, what) {
  const st = h("p", { class: "hint", "aria-live": "polite" });
  const input = h("input", { type: "text", readonly: true, id: "token-once", class: "once-value", spellcheck: "false",
                             autocomplete: "off", "aria-label": `${heading}, shown once` });
  input.value = token || "";
  const copy = h("button", { type: "button", class: "secondary" }, "Copy");
  copy.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      st.textContent = "Copied.";
    } catch (e) {
      st.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
    }
  });
  const dismiss = h("button", { type: "button", class: "secondary" }, "Done");
  const box = h("div", { class: "once", role: "region", "aria-labelledby": "token-once-h" },
    h("h3", { id: "token-once-h" }, `${heading} for ${what}`),
    h("p", { class: "once-note", id: "token-once-note" },
      h("strong", {}, "Shown once."), " Copy it now: keyrail keeps only its hash and cannot show it again. It disappears when you leave this page."),
    token ? h("div", { class: "copy-row" }, input, copy, dismiss)
      : h("p", {}, meta.token_note || "This response was a replay: the token was shown in the first one."),
    h("p", { class: "hint" }, `id ${meta.id} · prefix `, h("code", {}, meta.prefix), " · fingerprint ", h("code", {}, meta.fingerprint || "")),
    st);
  dismiss.addEventListener("click", () => {
    input.value = "";
    box.remove();
  });
  queueMicrotask(() => input.select());
  return box;
}

// ---- limits (an org's or a workspace's) ----

export async function limitsSection(box, p, editable) {
  const show = h("div", { class: "limits-now" });
  const load = async () => {
    const l = await api("GET", p);
    show.replaceChildren(dl([
      ["Requests per minute", l.rpm ? String(l.rpm) : "unlimited"],
      ["Tokens per minute", l.tpm ? String(l.tpm) : "unlimited"],
      ["Models allowed", l.models.length ? l.models.join(", ") : "any"],
    ]));
    return l;
  };
  const cur = await load();
  box.append(show);
  if (!editable) return;
  const st = statusArea();
  const rpm = h("input", { type: "number", min: "0", step: "1", name: "rpm", value: String(cur.rpm) });
  const tpm = h("input", { type: "number", min: "0", step: "1", name: "tpm", value: String(cur.tpm) });
  const models = h("input", { name: "models", autocomplete: "off", value: cur.models.join(", ") });
  const form = h("form", { class: "card limits-form" },
    h("h3", {}, "Change limits"),
    field("Requests per minute", rpm, "0 = unlimited"),
    field("Tokens per minute", tpm, "0 = unlimited"),
    field("Models allowed", models, "comma-separated models or aliases; empty = any"),
    h("button", { type: "submit" }, "Save limits"), st.el);
  onSubmit(form, st, async () => {
    const body = {
      rpm: Number(rpm.value || 0),
      tpm: Number(tpm.value || 0),
      models: models.value.split(",").map((m) => m.trim()).filter(Boolean),
    };
    await api("PUT", p, { body });
    await load();
    st.ok("Limits saved.");
  });
  box.append(form);
}

// ---- secrets ----

export async function secretsPage(view, ctx) {
  const org = ctx.params[0];
  const ws = ctx.query.get("workspace") || "";
  const scopeName = ws ? `${org}/${ws}` : org;
  view.append(orgTabs(org, "secrets"), title(`Secrets of ${scopeName}`),
    h("p", { class: "hint" }, "Values are write-only: keyrail never returns one, and the console neither shows nor keeps them."));
  // the scope: the org's, or one workspace's
  const workspaces = await all(path("orgs", org, "workspaces"));
  const pick = h("select", { name: "scope", id: "secret-scope" },
    h("option", { value: "" }, `The org (${org})`),
    workspaces.map((w) => h("option", { value: w.name }, `Workspace ${w.name}`)));
  pick.value = ws;
  pick.addEventListener("change", () => location.assign(route("orgs", org, "secrets", { workspace: pick.value })));
  view.append(h("div", { class: "toolbar" }, field("Scope", pick)));
  const list = h("div", { id: "secret-list" });
  view.append(list);
  const query = ws ? { workspace: ws } : {};
  const load = async () => {
    const items = await all(path("orgs", org, "secrets"), query);
    list.replaceChildren(table(null, [
      { label: "Variable", get: (x) => h("code", {}, x.key) },
      { label: "State", get: (x) => h("span", { class: `state state-${x.state}` }, x.state) },
      { label: "Class", get: (x) => h("span", { class: `cls cls-${x.class}` }, x.class) },
      { label: "Fingerprint", get: (x) => (x.fingerprint ? h("code", {}, x.fingerprint) : "") },
      { label: "Updated", get: (x) => when(x.updated_at), nowrap: true },
      { label: "", get: (x) => unsetButton(x) },
    ], items, "No secrets in this scope."));
  };
  const unsetButton = (x) => {
    const st = statusArea();
    const b = h("button", { type: "button", class: "danger small", "data-unset": x.key, "aria-label": `Unset ${x.key}` }, "Unset");
    b.addEventListener("click", async () => {
      if (!window.confirm(`Remove ${x.key} from ${scopeName}?`)) return;
      b.disabled = true;
      try {
        await api("DELETE", path("orgs", org, "secrets", x.key), { query });
        await load();
      } catch (e) {
        b.disabled = false;
        st.error(e);
        b.after(st.el);
      }
    });
    return b;
  };
  await load();
  const st = statusArea();
  const key = h("input", { name: "key", required: true, autocomplete: "off", spellcheck: "false", placeholder: "ANTHROPIC_API_KEY" });
  const value = h("input", { type: "password", name: "value", required: true, autocomplete: "new-password", spellcheck: "false" });
  const form = h("form", { id: "secret-set", class: "card" },
    h("h2", {}, `Set a secret in ${scopeName}`),
    field("Variable", key),
    field("Value", value, "write-only: sent once, never shown again"),
    h("button", { type: "submit" }, "Set secret"), st.el);
  onSubmit(form, st, async () => {
    const body = { value: value.value };
    value.value = ""; // not kept in the page
    if (ws) body.workspace = ws;
    let r;
    try {
      r = await api("PUT", path("orgs", org, "secrets", key.value), { body });
    } finally {
      body.value = "";
    }
    form.reset();
    st.ok("Set ", h("code", {}, r.key), ` (${r.scope} scope): class ${r.class}${r.fingerprint ? `, fingerprint ${r.fingerprint}` : ""}.`);
    await load();
  });
  view.append(form);
}

