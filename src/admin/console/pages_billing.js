// pages_billing.js -- an org's credits, its ledger, its budget alerts and
// its limits. Adding credits, the overage cap and the org's limits are
// operator actions: an org admin sees them, and is not offered the forms;
// alerts are the org's own (an org admin sets them too).
import { api, path } from "./api.js";
import { field, h, onSubmit, route, statusArea, table, when } from "./dom.js";
import { limitsSection, orgTabs, title } from "./pages_org.js";

export async function creditsPage(view, ctx) {
  const org = ctx.params[0];
  const cursor = ctx.query.get("cursor") || "";
  view.append(orgTabs(org, "credits"), title(`Credits and limits of ${org}`));

  const credits = h("section", { id: "credits", "aria-labelledby": "credits-h" }, h("h2", { id: "credits-h" }, "Credits"));
  const now = h("div", { id: "credits-now" });
  credits.append(now);
  const show = (c) => {
    now.replaceChildren(h("dl", { class: "facts" },
      h("dt", {}, "Balance"), h("dd", { id: "credits-balance" }, c.balance),
      h("dt", {}, "Overage cap"), h("dd", {}, c.overage_cap),
      h("dt", {}, "Available"), h("dd", {}, c.available),
      h("dt", {}, "State"), h("dd", {}, h("span", { class: c.refusing ? "state state-refusing" : "state state-active" },
        c.refusing ? "refusing calls: nothing available" : "serving"))));
  };
  show(await api("GET", path("orgs", org, "credits")));
  view.append(credits);

  const ledger = h("section", { id: "ledger", "aria-labelledby": "ledger-h" }, h("h2", { id: "ledger-h" }, "Ledger"));
  const loadLedger = async () => {
    const page = await api("GET", path("orgs", org, "credits", "ledger"), { query: { limit: 50, cursor } });
    ledger.replaceChildren(h("h2", { id: "ledger-h" }, "Ledger"), table(null, [
      { label: "When", get: (e) => when(e.at), nowrap: true },
      { label: "Amount", get: (e) => e.amount, num: true },
      { label: "Reason", get: (e) => e.reason },
      { label: "Request id", get: (e) => (e.request_id ? h("code", { class: "rid" }, e.request_id) : "") },
    ], page.items, "No ledger entries."),
    pager(cursor, page.next_cursor, (c) => route("orgs", org, "credits", { cursor: c })));
  };

  if (ctx.operator) {
    const st = statusArea();
    const amount = h("input", { name: "amount", required: true, inputmode: "decimal", pattern: "-?[0-9]+(\\.[0-9]{1,6})?", autocomplete: "off" });
    const reason = h("input", { name: "reason", autocomplete: "off", placeholder: "topup", maxlength: "60" });
    const form = h("form", { id: "credits-add", class: "card" },
      h("h3", {}, "Add credits"),
      field("Amount", amount, "currency units, e.g. 25 or 12.50; negative takes credits away"),
      field("Reason (optional)", reason),
      h("button", { type: "submit" }, "Add credits"), st.el);
    onSubmit(form, st, async () => {
      const body = { amount: amount.value };
      if (reason.value) body.reason = reason.value;
      show(await api("POST", path("orgs", org, "credits"), { body }));
      form.reset();
      st.ok("Credits added.");
      await loadLedger();
    });
    const cst = statusArea();
    const cap = h("input", { name: "cap", required: true, inputmode: "decimal", pattern: "[0-9]+(\\.[0-9]{1,6})?", autocomplete: "off" });
    const capForm = h("form", { id: "credits-cap", class: "card" },
      h("h3", {}, "Overage cap"),
      field("Allowed below zero", cap, "e.g. 5; 0 refuses calls once the balance is used up"),
      h("button", { type: "submit" }, "Set cap"), cst.el);
    onSubmit(capForm, cst, async () => {
      show(await api("PUT", path("orgs", org, "credits", "cap"), { body: { amount: cap.value } }));
      capForm.reset();
      cst.ok("Overage cap set.");
    });
    credits.append(h("div", { class: "cards" }, form, capForm));
  }
  view.append(ledger);
  await loadLedger();

  const alerts = h("section", { id: "alerts", "aria-labelledby": "alerts-h" });
  view.append(alerts);
  await alertsSection(alerts, org);

  const limits = h("section", { id: "org-limits", "aria-labelledby": "org-limits-h" }, h("h2", { id: "org-limits-h" }, "Limits of the org"));
  view.append(limits);
  await limitsSection(limits, path("orgs", org, "limits"), ctx.operator);
  if (!ctx.operator)
    limits.append(h("p", { class: "hint" }, "An operator sets the org's limits; you can set each workspace's on its page."));
}

// Budget and balance alerts: the list, a form to add one (its webhook
// secret is shown once), delete, and the delivery log.
async function alertsSection(sec, org) {
  const list = h("div", { id: "alert-list" });
  const log = h("div", { id: "alert-deliveries" });
  const load = async () => {
    const a = await api("GET", path("orgs", org, "alerts"));
    list.replaceChildren(table(null, [
      { label: "Id", get: (x) => x.id, num: true },
      { label: "Kind", get: (x) => x.kind },
      { label: "Scope", get: (x) => x.workspace || "org" },
      { label: "Amount", get: (x) => (x.kind === "budget" ? `${x.budget} per ${x.period}` : `below ${x.threshold}`) },
      { label: "Alerts at", get: (x) => (x.kind === "budget" ? x.percents.map((p) => `${p} %`).join(", ") : (x.armed ? "armed" : "below now")) },
      { label: "Webhook", get: (x) => h("code", {}, x.url) },
      { label: "", get: (x) => h("button", { type: "button", class: "alert-delete", "data-id": String(x.id),
          onclick: async () => { await api("DELETE", path("orgs", org, "alerts", String(x.id))); await load(); } }, "Delete") },
    ], a.items, "No alerts."));
    const d = await api("GET", path("orgs", org, "alert-deliveries"), { query: { limit: 50 } });
    log.replaceChildren(h("h3", {}, "Deliveries"), table(null, [
      { label: "When", get: (x) => when(x.created_at), nowrap: true },
      { label: "Alert", get: (x) => x.alert_id, num: true },
      { label: "Crossing", get: (x) => x.crossing },
      { label: "Status", get: (x) => x.status },
      { label: "Attempts", get: (x) => x.attempts, num: true },
      { label: "Last error", get: (x) => x.last_error },
    ], d.items, "No deliveries yet."));
  };
  const st = statusArea();
  const kind = h("select", { name: "kind" }, h("option", { value: "budget" }, "budget"), h("option", { value: "balance" }, "balance"));
  const amount = h("input", { name: "amount", required: true, inputmode: "decimal", pattern: "[0-9]+(\\.[0-9]{1,6})?", autocomplete: "off" });
  const period = h("select", { name: "period" }, h("option", { value: "month" }, "month"), h("option", { value: "day" }, "day"));
  const percents = h("input", { name: "percents", autocomplete: "off", placeholder: "50,80,100" });
  const url = h("input", { name: "url", required: true, type: "url", autocomplete: "off", placeholder: "https://hooks.example/keyrail" });
  const secret = h("p", { id: "alert-secret", hidden: true });
  const form = h("form", { id: "alert-create", class: "card" },
    h("h3", {}, "Add an alert"),
    field("Kind", kind, "budget: spend per period against a budget; balance: the balance below a threshold"),
    field("Amount", amount, "budget: the budget per period; balance: the threshold"),
    field("Period (budget)", period),
    field("Percents (budget)", percents, "default 100"),
    field("Webhook URL", url, "POSTed once per crossing, signed with the alert's secret"),
    h("button", { type: "submit" }, "Add alert"), st.el, secret);
  onSubmit(form, st, async () => {
    const body = { kind: kind.value, url: url.value };
    if (kind.value === "budget") {
      body.budget = amount.value;
      body.period = period.value;
      if (percents.value) body.percents = percents.value;
    } else {
      body.threshold = amount.value;
    }
    const r = await api("POST", path("orgs", org, "alerts"), { body });
    form.reset();
    secret.replaceChildren("Webhook secret (shown once): ", h("code", {}, r.secret));
    secret.hidden = false;
    st.ok(`Alert ${r.id} added.`);
    await load();
  });
  sec.replaceChildren(h("h2", { id: "alerts-h" }, "Budget alerts"), list, h("div", { class: "cards" }, form), log);
  await load();
}

// "First page" / "Next page" links of a list with cursors (nothing when
// the list fits one page).
export function pager(cursor, next, href) {
  if (!cursor && !next) return document.createDocumentFragment();
  return h("nav", { class: "pager", "aria-label": "Pages" },
    cursor ? h("a", { href: href(""), class: "first-page" }, "← First page") : null,
    next ? h("a", { href: href(next), class: "next-page", rel: "next" }, "Next page →") : null);
}
