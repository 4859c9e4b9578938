// pages_admin.js -- the audit log (filters, pages) and, for operators, the
// admin tokens.
import { all, api, path } from "./api.js";
import { field, h, onSubmit, route, statusArea, table, when } from "./dom.js";
import { pager } from "./pages_billing.js";
import { orgTabs, shownOnce, title } from "./pages_org.js";

export async function auditPage(view, ctx) {
  const q = ctx.query;
  const org = ctx.operator ? q.get("org") || "" : ctx.session.org;
  const f = { org, action: q.get("action") || "", actor: q.get("actor") || "", limit: q.get("limit") || "50" };
  const cursor = q.get("cursor") || "";
  if (org) view.append(orgTabs(org, "audit"));
  view.append(title(org ? `Audit log of ${org}` : "Audit log"),
    h("p", { class: "hint" }, "Every change made through the admin API, the console or the command line: who, what, on what, and the outcome. Never a value."));

  const orgIn = h("input", { name: "org", value: org, autocomplete: "off", placeholder: "any" });
  if (!ctx.operator) orgIn.disabled = true;
  const action = h("input", { name: "action", value: f.action, autocomplete: "off", placeholder: "e.g. secret.set" });
  const actor = h("input", { name: "actor", value: f.actor, autocomplete: "off", placeholder: "e.g. admin:kradm_AbCd12" });
  const sizes = ["25", "50", "100", "500"];
  if (!sizes.includes(f.limit)) sizes.unshift(f.limit);
  const limit = h("select", { name: "limit" }, sizes.map((n) => h("option", { value: n }, n)));
  limit.value = f.limit;
  const form = h("form", { id: "audit-filters", class: "card filters" },
    field("Org", orgIn), field("Action", action), field("Actor", actor), field("Per page", limit),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.assign(route("audit", { org: ctx.operator ? orgIn.value.trim() : org, action: action.value.trim(),
                                     actor: actor.value.trim(), limit: limit.value === "50" ? "" : limit.value }));
  });
  view.append(form);

  const page = await api("GET", path("audit"), { query: { ...f, cursor } });
  view.append(h("div", { id: "audit-list" }, table(null, [
    { label: "When", get: (e) => when(e.at), nowrap: true },
    { label: "Actor", get: (e) => e.actor },
    { label: "Scope", get: (e) => e.actor_scope },
    { label: "Action", get: (e) => h("code", { class: "action" }, e.action) },
    { label: "Target", get: (e) => e.target },
    { label: "Outcome", get: (e) => h("span", { class: e.outcome === "ok" ? "state state-active" : "state state-refused" }, e.outcome) },
    { label: "Detail", get: (e) => e.detail },
    { label: "Request id", get: (e) => h("code", { class: "rid" }, e.request_id) },
  ], page.items, "No entries match.")),
  pager(cursor, page.next_cursor, (c) => route("audit", { org, action: f.action, actor: f.actor,
                                                          limit: f.limit === "50" ? "" : f.limit, cursor: c })));
}

// ---- admin tokens (operators) ----

export async function adminTokensPage(view, ctx) {
  view.append(title("Admin tokens"),
    h("p", { class: "hint" }, "Admin tokens open the admin API and this console: an operator token all orgs, an org token one org."));
  if (!ctx.operator) {
    view.append(h("p", { class: "empty" }, "Only operators manage admin tokens."));
    return;
  }
  const list = h("div", { id: "admin-token-list" });
  const once = h("div", { id: "admin-once-slot" });
  const load = async () => {
    const items = await all(path("admin-tokens"));
    list.replaceChildren(table(null, [
      { label: "Id", get: (t) => String(t.id), num: true },
      { label: "Prefix", get: (t) => h("code", {}, t.prefix) },
      { label: "Scope", get: (t) => (t.scope === "org" ? `org ${t.org}` : t.scope) },
      { label: "Name", get: (t) => t.name },
      { label: "State", get: (t) => h("span", { class: `state state-${t.state}` }, t.state) },
      { label: "Created", get: (t) => when(t.created_at), nowrap: true },
      { label: "Expires", get: (t) => when(t.expires_at) || "never", nowrap: true },
      { label: "", get: (t) => (t.state === "active" ? revoke(t) : "") },
    ], items, "No admin tokens."));
  };
  const revoke = (t) => {
    const st = statusArea();
    const b = h("button", { type: "button", class: "danger small", "aria-label": `Revoke admin token ${t.id} (${t.prefix}…)` }, "Revoke");
    b.addEventListener("click", async () => {
      const self = t.prefix === ctx.session.actor;
      if (!window.confirm(`Revoke admin token ${t.prefix}…?${self ? " It is the one you signed in with: this ends your session." : ""}`)) return;
      b.disabled = true;
      try {
        await api("DELETE", path("admin-tokens", t.id));
        await load();
      } catch (e) {
        b.disabled = false;
        st.error(e);
        b.after(st.el);
      }
    });
    return b;
  };
  const orgs = await all(path("orgs"));
  const st = statusArea();
  const scope = h("select", { name: "scope" }, h("option", { value: "org" }, "org admin (one org)"), h("option", { value: "operator" }, "operator (all orgs)"));
  const org = h("select", { name: "org" }, orgs.map((o) => h("option", { value: o.slug }, o.slug)));
  const name = h("input", { name: "name", autocomplete: "off", maxlength: "100" });
  const ttl = h("input", { name: "ttl", autocomplete: "off", placeholder: "30d" });
  scope.addEventListener("change", () => { org.disabled = scope.value !== "org"; });
  const form = h("form", { id: "admin-token-mint", class: "card" },
    h("h2", {}, "Mint an admin token"),
    field("Scope", scope), field("Org", org), field("What it is for (optional)", name),
    field("Lifetime (optional)", ttl, "90m, 12h, 30d; empty: no expiry"),
    h("button", { type: "submit" }, "Mint admin token"), st.el);
  onSubmit(form, st, async () => {
    const body = { scope: scope.value };
    if (scope.value === "org") body.org = org.value;
    if (name.value) body.name = name.value;
    if (ttl.value) body.ttl = ttl.value;
    const r = await api("POST", path("admin-tokens"), { body });
    form.reset();
    org.disabled = false;
    once.replaceChildren(shownOnce("New admin token", r.token, r, r.scope === "org" ? `org ${r.org}` : "all orgs"));
    await load();
  });
  view.append(list, once, form);
  await load();
}
