// pages_usage.js -- usage charts: tokens and cost per day and per model, for
// all orgs (operators), an org or a workspace, from GET /usage?by=day,model.
import { all, api, micros, money, path } from "./api.js";
import { hBars, stackedBars } from "./chart.js";
import { field, fmtInt, h, route, table } from "./dom.js";
import { orgTabs, title } from "./pages_org.js";

const DAY = 86400000;

// Every day from a to b ("YYYY-MM-DD", UTC), at most `cap` of them.
function days(a, b, cap = 400) {
  const out = [];
  for (let t = Date.parse(`${a}T00:00:00Z`), e = Date.parse(`${b}T00:00:00Z`); t <= e && out.length < cap; t += DAY)
    out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}

const shortNum = (n) => {
  if (n >= 1e9) return `${+(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
  return String(+n.toFixed(n < 10 ? 2 : 0));
};
const shortMoney = (n) => (n >= 1000 ? shortNum(n) : String(+n.toPrecision(3)));

export async function usagePage(view, ctx) {
  const q = ctx.query;
  const org = ctx.operator ? q.get("org") || "" : ctx.session.org;
  const f = { org, workspace: q.get("workspace") || "", model: q.get("model") || "", from: q.get("from") || "", to: q.get("to") || "" };
  if (org) view.append(orgTabs(org, "usage"));
  view.append(title(f.workspace ? `Usage of ${f.workspace}` : org ? `Usage of ${org}` : "Usage of all orgs"));

  // filters: they go into the address (#/usage?org=…), so a view can be shared
  const orgSel = h("select", { name: "org", id: "usage-org" });
  if (ctx.operator) {
    const orgs = await all(path("orgs"));
    orgSel.append(h("option", { value: "" }, "All orgs"), ...orgs.map((o) => h("option", { value: o.slug }, o.slug)));
  } else {
    orgSel.append(h("option", { value: org }, org));
    orgSel.disabled = true;
  }
  orgSel.value = org;
  const wsSel = h("select", { name: "workspace", id: "usage-workspace" }, h("option", { value: "" }, "All workspaces"));
  if (org) {
    const ws = await all(path("orgs", org, "workspaces"));
    wsSel.append(...ws.map((w) => h("option", { value: `${org}/${w.name}` }, w.name)));
  } else {
    wsSel.disabled = true;
  }
  wsSel.value = f.workspace;
  const model = h("input", { name: "model", value: f.model, autocomplete: "off", placeholder: "any" });
  const from = h("input", { type: "date", name: "from", value: f.from });
  const to = h("input", { type: "date", name: "to", value: f.to });
  const form = h("form", { id: "usage-filters", class: "card filters" },
    field("Org", orgSel), field("Workspace", wsSel, org ? null : "choose an org first"), field("Model", model),
    field("From (UTC)", from), field("To (UTC)", to),
    h("button", { type: "submit" }, "Show"));
  orgSel.addEventListener("change", () => { wsSel.value = ""; wsSel.disabled = true; form.requestSubmit(); });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.assign(route("usage", { org: ctx.operator ? orgSel.value : undefined, workspace: wsSel.disabled ? "" : wsSel.value,
                                     model: model.value.trim(), from: from.value, to: to.value }));
  });
  view.append(form);

  const u = await api("GET", path("usage"), { query: { by: "day,model,route", org: f.org, workspace: f.workspace,
                                                       model: f.model, from: f.from, to: f.to } });
  // BYOK through the proxy is metered beside the platform route: its rows are a
  // series of their own ("model (BYOK)"), priced at list price and never debited
  const rows = (u.rows || []).map((r) => ({ ...r, series: r.route === "byok" ? `${r.model} (BYOK)` : r.model }));
  const out = h("div", { id: "usage-result" });
  view.append(out);
  if (!rows.length) {
    out.append(h("p", { class: "empty", id: "usage-empty" }, "No usage recorded for these filters."));
    return;
  }
  const models = [...new Set(rows.map((r) => r.series))].sort();
  const seen = rows.map((r) => r.day).sort();
  const xs = days(f.from || seen[0], f.to || seen[seen.length - 1]);
  const at = new Map(rows.map((r) => [`${r.day}\u0000${r.series}`, r]));
  const cell = (i, j) => at.get(`${xs[i]}\u0000${models[j]}`);
  const tokens = (r) => (r ? r.input_tokens + r.output_tokens : 0);
  // x labels: MM-DD when every day is in one year (the bars' titles keep the year)
  const label = xs.length && xs[0].slice(0, 4) === xs[xs.length - 1].slice(0, 4) ? (d) => d.slice(5) : (d) => d;

  // per model totals (cost exact, in micro-units)
  const per = models.map((m) => {
    const t = { model: m, requests: 0, input: 0, output: 0, cache_read: 0, cache_write: 0, cost: 0n,
                byok: false };
    for (const r of rows) if (r.series === m) {
      t.byok = r.route === "byok";
      t.requests += r.requests; t.input += r.input_tokens; t.output += r.output_tokens;
      t.cache_read += r.cache_read_tokens; t.cache_write += r.cache_write_tokens; t.cost += micros(r.cost);
    }
    return t;
  });
  const sum = (k, pick = () => true) => per.filter(pick).reduce((a, t) => a + t[k], k === "cost" ? 0n : 0);
  const byok = per.some((t) => t.byok);
  out.append(h("dl", { class: "facts totals", id: "usage-totals" },
    h("dt", {}, "Requests"), h("dd", {}, fmtInt(sum("requests"))),
    h("dt", {}, "Input + output tokens"), h("dd", {}, fmtInt(sum("input") + sum("output"))),
    h("dt", {}, byok ? "Cost (platform, debited)" : "Cost"),
    h("dd", { id: "usage-cost-total" }, money(sum("cost", (t) => !t.byok))),
    ...(byok ? [h("dt", {}, "BYOK at list price (the org's own key, not debited)"),
                h("dd", { id: "usage-byok-total" }, money(sum("cost", (t) => t.byok)))] : [])));

  out.append(h("div", { class: "charts" },
    stackedBars({ id: "chart-tokens-day", title: "Tokens per day (input + output), by model", xs, series: models,
                  value: (i, j) => tokens(cell(i, j)), fmt: (n) => `${fmtInt(n)} tokens`, tick: shortNum, label }),
    stackedBars({ id: "chart-cost-day", title: "Cost per day, by model", xs, series: models,
                  value: (i, j) => { const r = cell(i, j); return r ? Number(micros(r.cost)) / 1e6 : 0; },
                  fmt: (n) => n.toFixed(6), tick: shortMoney, label }),
    hBars({ id: "chart-tokens-model", title: "Tokens per model (input + output)", labels: models,
            values: per.map((t) => t.input + t.output), fmt: (n) => fmtInt(n) }),
    hBars({ id: "chart-cost-model", title: "Cost per model", labels: models,
            values: per.map((t) => Number(t.cost) / 1e6), fmt: (n) => n.toFixed(6) })));

  out.append(h("h2", {}, "Per model"), h("div", { id: "usage-models" }, table(null, [
    { label: "Model", get: (t) => t.model },
    { label: "Requests", get: (t) => fmtInt(t.requests), num: true },
    { label: "Input tokens", get: (t) => fmtInt(t.input), num: true },
    { label: "Output tokens", get: (t) => fmtInt(t.output), num: true },
    { label: "Cache read", get: (t) => fmtInt(t.cache_read), num: true },
    { label: "Cache write", get: (t) => fmtInt(t.cache_write), num: true },
    { label: "Cost", get: (t) => money(t.cost), num: true },
  ], per)));
  out.append(h("details", { class: "daily" }, h("summary", {}, "Daily numbers"), table(null, [
    { label: "Day", get: (r) => r.day },
    { label: "Model", get: (r) => r.model },
    { label: "Route", get: (r) => r.route },
    { label: "Requests", get: (r) => fmtInt(r.requests), num: true },
    { label: "Input tokens", get: (r) => fmtInt(r.input_tokens), num: true },
    { label: "Output tokens", get: (r) => fmtInt(r.output_tokens), num: true },
    { label: "Cost", get: (r) => r.cost, num: true },
  ], [...rows].sort((a, b) => (a.day + a.series < b.day + b.series ? -1 : 1)))));
}
