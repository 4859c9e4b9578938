// pages_billing.js -- an org's credits, its ledger and its limits. Adding
// credits, the overage cap and the org's limits are operator actions: an
// org admin sees them, and is not offered the forms.
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

  const limits = h("section", { id: "org-limits", "aria-labelledby": "org-limits-h" }, h("h2", { id: "org-limits-h" }, "Limits of the org"));
  view.append(limits);
  await limitsSection(limits, path("orgs", org, "limits"), ctx.operator);
  if (!ctx.operator)
    limits.append(h("p", { class: "hint" }, "An operator sets the org's limits; you can set each workspace's on its page."));
}

// "First page" / "Next page" links of a list with cursors (nothing when
// the list fits one page).
export function pager(cursor, next, href) {
  if (!cursor && !next) return document.createDocumentFragment();
  return h("nav", { class: "pager", "aria-label": "Pages" },
    cursor ? h("a", { href: href(""), class: "first-page" }, "← First page") : null,
    next ? h("a", { href: href(next), class: "next-page", rel: "next" }, "Next page →") : null);
}
