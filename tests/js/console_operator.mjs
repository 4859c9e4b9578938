// console_operator.mjs -- the console in a real browser, as an operator:
// sign in, create an org and a workspace, explain it, mint a token (shown
// once), make usage with it through the proxy, set and unset secrets, add
// credits and limits, read the usage charts and the audit log; then the
// refusals: a change without the CSRF token, an expired session, sign-out.
// Run by tests/integration/test_console.py (see console_lib.mjs).
import { ask, check, log, scenario } from "./console_lib.mjs";

const TOKEN_RE = /^krws_[A-Za-z0-9_-]{43}$/;

scenario(async (env, t) => {
  const page = t.page;

  // ---- sign in ----
  log("sign-in page");
  const resp = await page.goto(`${t.base}/console/`);
  check(resp.status() === 200, "GET /console/ answers 200");
  const csp = resp.headers()["content-security-policy"] || "";
  check(csp.includes("script-src 'self'") && csp.includes("style-src 'self'") && !csp.includes("unsafe"),
    "the console page carries the strict CSP");
  await page.waitForSelector("#signin-form");
  await t.shot("01-signin");

  // an unknown admin token: the API's message and request id are shown
  await t.fill("#signin-token", `kradm_${"Q".repeat(43)}`);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#signin-form .error");
  check((await t.text("#signin-form .error-msg")).includes("unknown admin token"), "an unknown admin token is refused with the API's message");
  check(/^req_[0-9a-f]+$/.test(await t.text("#signin-form .request-id")), "the refusal shows its request id");
  check((await page.$eval("#signin-token", (el) => el.value)) === "", "the token field is emptied after submitting");

  await t.fill("#signin-token", env.operator_token);
  await t.navigate(() => page.click("#signin-form button[type=submit]"));
  await page.waitForSelector("#whoami");
  check((await t.text("#whoami")).includes("operator"), "signed in as an operator");
  check((await page.evaluate(() => location.hash)) === "#/orgs", "an operator starts on the orgs page");
  const kept = await page.evaluate(() => ({
    storage: localStorage.length + sessionStorage.length,
    cookie: document.cookie,
  }));
  check(kept.storage === 0, "nothing is kept in web storage");
  check(!(await t.html()).includes(env.operator_token), "the admin token is not in the page");
  check(!kept.cookie.includes("kr_session"), "the session cookie is not readable by scripts");
  const cookies = await page.browserContext().cookies();
  const sc = cookies.find((c) => c.name === "kr_session");
  check(sc && sc.httpOnly && sc.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");

  // ---- orgs ----
  log("orgs");
  await t.fill("#org-create input[name=org]", "acme");
  await t.fill("#org-create input[name=name]", "Acme <b>Rockets</b>");
  await t.submit("#org-create");
  await t.waitText("#org-list", "acme");
  check((await t.text("#org-list")).includes("Acme <b>Rockets</b>"), "a name with markup is shown as text");
  check((await page.$$("#org-list b")).length === 0, "no markup from the API reaches the DOM");
  await t.navigate(() => page.click("#org-list a[href='#/orgs/acme/workspaces']"));
  check((await page.evaluate(() => location.hash)) === "#/orgs/acme/workspaces", "an org opens on its workspaces");

  // ---- credits first: the org needs some to make calls ----
  log("credits");
  await t.go("#/orgs/acme/credits");
  await page.waitForSelector("#credits-add");
  await t.fill("#credits-add input[name=amount]", "50");
  await t.fill("#credits-add input[name=reason]", "first topup");
  await t.submit("#credits-add");
  await t.waitText("#credits-balance", "50.000000");
  await t.waitText("#ledger", "first topup");
  await t.fill("#credits-cap input[name=cap]", "5");
  await t.submit("#credits-cap");
  await t.waitText("#credits-now", "55.000000"); // available = balance + cap

  // ---- a budget alert: its secret shown once, listed, deleted ----
  log("alerts");
  await t.fill("#alert-create input[name=amount]", "10");
  await t.fill("#alert-create input[name=percents]", "50,100");
  await t.fill("#alert-create input[name=url]", "https://hooks.example/keyrail");
  await t.submit("#alert-create");
  await t.waitText("#alert-secret", "whsec_");
  await t.waitText("#alert-list", "10.000000 per month");
  check((await t.text("#alert-list")).includes("50 %, 100 %"), "the alert's percents are listed");
  check(!(await t.text("#alert-list")).includes("whsec_"), "the list never shows the secret");
  await page.click("#alert-list .alert-delete");
  await t.waitText("#alert-list", "No alerts.");

  // ---- workspaces ----
  log("workspaces");
  await t.go("#/orgs/acme/workspaces");
  // a refusal shows the API's code, message and request id
  await t.fill("#ws-create input[name=ws]", "nomodel");
  await t.submit("#ws-create");
  await page.waitForSelector("#ws-create .error");
  check((await t.text("#ws-create .error")).includes("MISSING_MODEL"), "a workspace without a model is refused with MISSING_MODEL");
  check(/^req_/.test(await t.text("#ws-create .request-id")), "with its request id");
  await t.fill("#ws-create input[name=ws]", "dev");
  await t.fill("#ws-create input[name=model]", "claude-sonnet-4-5");
  await t.submit("#ws-create");
  await t.waitText("#ws-list", "dev");
  check((await t.text("#ws-create .ok")).includes("route platform"), "the create result names the route");

  // ---- explain ----
  log("explain");
  await t.navigate(() => page.click("#ws-list a[href='#/orgs/acme/workspaces/dev']"));
  await page.waitForSelector("#explain-trace li");
  const ex = await page.evaluate(() => ({
    trace: [...document.querySelectorAll("#explain-trace li")].map((li) => li.textContent),
    runtimes: [...document.querySelectorAll("#explain-runtimes tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    env: [...document.querySelectorAll("#explain-env tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    upstream: [...document.querySelectorAll("#explain-upstream tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    facts: document.querySelector("#explain dl").textContent,
  }));
  check(ex.facts.includes("platform") && ex.facts.includes("claude-sonnet-4-5"), "explain shows the route and model");
  check(ex.trace.length >= 2 && ex.trace.some((x) => x.includes("claude-sonnet-4-5")), "explain shows the resolution trace");
  const cc = ex.runtimes.find((r) => r[0] === "claude-code");
  check(cc && cc[2] === env.proxy_url && cc[3] === "yes" && cc[6] === "workspace-token" && cc[7] === "settings.json",
    "the claude-code profile calls keyrail's proxy with a workspace token, from settings.json");
  check(ex.runtimes.some((r) => r[0] === "codex" && r[1] === "openai"), "every runtime profile is listed");
  const base = ex.env.find((r) => r[0] === "ANTHROPIC_BASE_URL");
  check(base && base[1] === "provisioner", "environment variables show their origin");
  const cred = ex.env.find((r) => r[0] === "ANTHROPIC_AUTH_TOKEN");
  check(cred && cred[2] === "workspace-token" && cred[3] === "filled in at launch", "the credential variable is a workspace token placeholder");
  const up = ex.upstream.find((r) => r[0] === "anthropic");
  check(up && up[2] === env.vendor_url && up[3] === "KEYRAIL_ANTHROPIC_KEY" && up[4] === "anthropic-api-key" && /^[0-9a-f]{8}$/.test(up[5]),
    "the platform upstream shows its host, key variable, key class and fingerprint");
  await t.shot("02-explain");
  // the environment a container gets: values, the token as the placeholder
  await page.click("#ws-env-build");
  await page.waitForSelector("#ws-env-result tbody tr");
  const envRows = await page.evaluate(() =>
    [...document.querySelectorAll("#ws-env-result tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent)));
  const tokRow = envRows.find((r) => r[0] === "ANTHROPIC_AUTH_TOKEN");
  check(tokRow && tokRow[3] === "${KEYRAIL_WORKSPACE_TOKEN}", "the environment carries the workspace token placeholder");
  const baseRow = envRows.find((r) => r[0] === "ANTHROPIC_BASE_URL");
  check(baseRow && baseRow[3].startsWith(env.proxy_url), "the environment points at keyrail's proxy");
  // a workspace's limits: editable by anyone who administers the org
  check((await page.$("#ws-limits form")) !== null, "workspace limits can be changed here");

  // ---- a token, shown once ----
  log("token");
  await t.submit("#token-mint");
  await page.waitForSelector("#token-once");
  const token = await page.$eval("#token-once", (el) => el.value);
  check(TOKEN_RE.test(token), "the minted token is shown in a copyable field");
  check((await page.$eval("#token-once", (el) => el.readOnly)), "the field is read-only");
  check((await t.text("#token-once-note")).includes("Shown once"), "with a clear shown-once note");
  await t.waitText("#token-list", "active");
  await t.shot("03-token-shown-once", page, { shownOnce: token });
  // leaving the page drops it
  await t.go("#/orgs/acme/secrets");
  await t.go("#/orgs/acme/workspaces/dev");
  await page.waitForSelector("#token-list table");
  check((await page.$("#token-once")) === null, "the token is gone after navigating away");
  check(!(await t.html()).includes(token), "and is nowhere in the page");

  // ---- usage: real calls through the proxy with that token ----
  log("usage calls");
  const rids = [];
  for (const [p, body, fake, auth] of [
    ["/anthropic/v1/messages", { model: "claude-sonnet-4-5", max_tokens: 1000, messages: [{ role: "user", content: "hi" }] },
      "in=1200 out=300", { "x-api-key": token }],
    ["/openai/v1/chat/completions", { model: "gpt-4o", max_tokens: 1000, messages: [{ role: "user", content: "hi" }] },
      "in=800 out=200", { authorization: `Bearer ${token}` }],
  ]) {
    const r = await fetch(`${env.proxy_url}${p}`, { method: "POST", headers: { "content-type": "application/json", "x-fake": fake, ...auth },
                                                   body: JSON.stringify(body) });
    await r.arrayBuffer();
    check(r.status === 200, `a call through the proxy answers 200 (${p}: ${r.status})`);
    rids.push(r.headers.get("x-keyrail-request-id"));
  }
  await ask("wait_usage", { request_ids: rids });

  log("usage charts");
  await t.navigate(() => page.click("nav.tabs a[href='#/usage?org=acme']"));
  await page.waitForSelector("#chart-tokens-day rect");
  const chart = await page.evaluate(() => {
    const sum = (sel) => [...document.querySelectorAll(sel)].reduce((a, r) => a + Number(r.dataset.value), 0);
    return {
      series: [...new Set([...document.querySelectorAll("#chart-tokens-day rect[data-series]")].map((r) => r.dataset.series))].sort(),
      tokens: sum("#chart-tokens-day rect[data-series]"),
      costDay: sum("#chart-cost-day rect[data-series]"),
      perModel: sum("#chart-tokens-model rect[data-series]"),
      legend: document.querySelector(".legend").textContent,
      total: document.getElementById("usage-cost-total").textContent,
      title: document.querySelector("#chart-tokens-day title").textContent,
    };
  });
  check(JSON.stringify(chart.series) === JSON.stringify(["claude-sonnet-4-5", "gpt-4o"]), "the chart has a series per model");
  check(chart.tokens === 2500 && chart.perModel === 2500, "the bars add up to the tokens used (1200+300+800+200)");
  check(chart.legend.includes("gpt-4o") && chart.title.startsWith("Tokens per day"), "the chart has a legend and a title");
  // the cost total is the API's, to the micro-unit
  const api = await t.pageFetch("GET", "/admin/v1/usage?org=acme&by=model");
  const micros = api.body.rows.reduce((a, r) => a + Math.round(Number(r.cost) * 1e6), 0);
  check(chart.total === `${Math.floor(micros / 1e6)}.${String(micros % 1e6).padStart(6, "0")}`, "the cost total matches the API");
  check(Math.abs(chart.costDay - micros / 1e6) < 1e-9, "the cost bars add up to the cost");
  // a workspace filter
  await t.navigate(async () => {
    await page.select("#usage-workspace", "acme/dev");
    await page.click("#usage-filters button[type=submit]");
  });
  check((await page.evaluate(() => location.hash)).includes("workspace=acme%2Fdev"), "the filters go into the address");
  await page.waitForSelector("#chart-cost-day rect[data-series]");
  await t.shot("04-usage");
  // a day with nothing in it
  await t.go("#/usage?org=acme&from=2001-01-01&to=2001-01-02");
  await page.waitForSelector("#usage-empty");

  // ---- secrets ----
  log("secrets");
  await t.go("#/orgs/acme/secrets?workspace=dev");
  await page.waitForSelector("#secret-set");
  check((await page.$eval("#secret-set input[name=value]", (el) => el.type)) === "password", "a value is typed into a password field");
  await t.fill("#secret-set input[name=key]", "OPENAI_API_KEY");
  await t.fill("#secret-set input[name=value]", env.secret_value);
  await t.submit("#secret-set");
  await t.waitText("#secret-set .ok", "OPENAI_API_KEY");
  await t.waitText("#secret-list", "OPENAI_API_KEY");
  const row = await page.evaluate(() => [...document.querySelectorAll("#secret-list tbody tr")]
    .map((tr) => [...tr.cells].map((c) => c.textContent)).find((r) => r[0] === "OPENAI_API_KEY"));
  check(row[1] === "ok" && row[2] === "openai-api-key" && /^[0-9a-f]{8}$/.test(row[3]), "the secret's state, class and fingerprint are listed");
  check((await page.$eval("#secret-set input[name=value]", (el) => el.value)) === "", "the value field is emptied");
  check(!(await t.html()).includes(env.secret_value), "the value is nowhere in the page");
  // a forbidden variable: refused, with the API's code
  await t.fill("#secret-set input[name=key]", "GITHUB_TOKEN");
  await t.fill("#secret-set input[name=value]", "not-a-real-token");
  await t.submit("#secret-set");
  await page.waitForSelector("#secret-set .error");
  check((await t.text("#secret-set .error")).includes("FORBIDDEN_KEY"), "a forbidden variable is refused with FORBIDDEN_KEY");
  // set and unset an org secret
  await t.go("#/orgs/acme/secrets");
  await t.fill("#secret-set input[name=key]", "TEAM_NOTE");
  await t.fill("#secret-set input[name=value]", "remember the milk");
  await t.submit("#secret-set");
  await t.waitText("#secret-list", "TEAM_NOTE");
  await t.shot("05-secrets");
  await page.click("#secret-list button[data-unset='TEAM_NOTE']");
  await page.waitForFunction(() => !document.querySelector("#secret-list").textContent.includes("TEAM_NOTE"));

  // ---- limits ----
  log("limits");
  await t.go("#/orgs/acme/credits");
  await page.waitForSelector("#org-limits form");
  await t.fill("#org-limits input[name=rpm]", "600");
  await t.fill("#org-limits input[name=models]", "sonnet, gpt-4o");
  await t.submit("#org-limits form");
  await t.waitText("#org-limits .limits-now", "600");
  await t.waitText("#org-limits .limits-now", "claude-sonnet-4-5, gpt-4o"); // aliases resolve
  check((await t.text("#ledger")).includes("usage"), "the ledger shows the usage debits");

  // ---- revoke the token ----
  log("revoke");
  await t.go("#/orgs/acme/workspaces/dev");
  await page.waitForSelector("#token-list button[data-token-id]");
  await page.click("#token-list button[data-token-id]");
  await t.waitText("#token-list", "revoked");
  const after = await fetch(`${env.proxy_url}/anthropic/v1/messages`, {
    method: "POST", headers: { "content-type": "application/json", "x-api-key": token },
    body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }) });
  await after.arrayBuffer();
  check(after.status === 401, "the revoked token is refused by the proxy");

  // ---- audit log ----
  log("audit");
  await t.navigate(() => page.click("nav.tabs a[href='#/audit?org=acme']"));
  await page.waitForSelector("#audit-list table");
  const actions = await page.$$eval("#audit-list code.action", (els) => els.map((e) => e.textContent));
  for (const a of ["ws.create", "token.mint", "secret.set", "secret.unset", "credits.add", "credits.cap", "limits.set", "token.revoke"])
    check(actions.includes(a), `the audit log lists ${a}`);
  await t.fill("#audit-filters input[name=action]", "secret.set");
  await t.navigate(() => page.click("#audit-filters button[type=submit]"));
  const filtered = await page.$$eval("#audit-list tbody tr", (trs) => trs.map((tr) => [tr.cells[3].textContent, tr.cells[5].textContent]));
  check(filtered.length === 3 && filtered.every((r) => r[0] === "secret.set"), "the action filter keeps secret.set only");
  check(filtered.some((r) => r[1] === "FORBIDDEN_KEY"), "a refused change is in the audit log with its outcome");
  await t.shot("06-audit");
  // pages: 3 entries at a time
  await t.go("#/audit?org=acme&limit=3");
  const first = await page.$$eval("#audit-list tbody tr", (trs) => trs.map((tr) => tr.cells[7].textContent));
  check(first.length === 3, "a page holds `limit` entries");
  await t.navigate(() => page.click(".pager a.next-page"));
  const second = await page.$$eval("#audit-list tbody tr", (trs) => trs.map((tr) => tr.cells[7].textContent));
  check(second.length === 3 && !second.some((x) => first.includes(x)), "the next page holds the next entries");
  check((await page.$(".pager a.first-page")) !== null, "and a way back to the first");

  // ---- admin tokens (operator only) ----
  log("admin tokens");
  await t.navigate(() => page.click("#nav a[data-nav='Admin tokens']"));
  await page.waitForSelector("#admin-token-mint");
  await page.select("#admin-token-mint select[name=org]", "acme");
  await t.fill("#admin-token-mint input[name=name]", "acme's admin");
  await t.submit("#admin-token-mint");
  await page.waitForSelector("#token-once");
  check((await page.$eval("#token-once", (el) => el.value)).startsWith("kradm_"), "a minted admin token is shown once");
  await t.waitText("#admin-token-list", "acme's admin");

  // ---- refusals ----
  log("csrf");
  const noCsrf = await t.pageFetch("POST", "/admin/v1/orgs", { body: { org: "csrf-test" } });
  check(noCsrf.status === 403 && noCsrf.body.error.code === "CSRF", "a change without the CSRF token is refused (403 CSRF)");
  const badCsrf = await t.pageFetch("POST", "/admin/v1/orgs", { body: { org: "csrf-test" }, headers: { "x-csrf-token": "0".repeat(64) } });
  check(badCsrf.status === 403 && badCsrf.body.error.code === "CSRF", "a change with a wrong CSRF token is refused (403 CSRF)");
  const orgs = await t.pageFetch("GET", "/admin/v1/orgs");
  check(orgs.status === 200 && !orgs.body.items.some((o) => o.slug === "csrf-test"), "and nothing was created");

  log("expiry");
  await ask("expire_sessions");
  await t.navigate(() => page.click("#nav a[data-nav='Orgs']"));
  await page.waitForSelector("#signin-notice");
  check((await t.text("#signin-notice")).includes("expired"), "an expired session returns to sign-in, saying so");
  check(await page.$eval("#nav", (n) => n.hidden), "the navigation is gone");
  await t.shot("07-expired");

  log("sign-out");
  await t.fill("#signin-token", env.operator_token);
  await t.navigate(() => page.keyboard.press("Enter")); // the keyboard works
  check((await page.evaluate(() => location.hash)) === "#/orgs", "signing in again returns to the page asked for");
  const live = (await page.browserContext().cookies()).find((c) => c.name === "kr_session");
  await t.navigate(() => page.click("#signout"));
  await page.waitForSelector("#signin-notice");
  check((await t.text("#signin-notice")).includes("signed out"), "sign-out says so");
  check(!(await page.browserContext().cookies()).some((c) => c.name === "kr_session"), "sign-out clears the cookie");
  await page.browserContext().setCookie({ name: live.name, value: live.value, domain: live.domain, path: "/", httpOnly: true, sameSite: "Strict" }); // the old cookie, replayed
  const replay = await t.pageFetch("GET", "/admin/v1/session");
  check(replay.status === 401, "the ended session's cookie is refused (401)");
  await page.browserContext().deleteMatchingCookies({ name: "kr_session" });

  log("revoked admin token");
  await t.fill("#signin-token", env.operator_token);
  await t.navigate(() => page.click("#signin-form button[type=submit]"));
  await page.waitForSelector("#whoami");
  await ask("revoke_admin_token");
  await t.navigate(() => page.click("#nav a[data-nav='Usage']"));
  await page.waitForSelector("#signin-notice");
  // revoking a token deletes its sessions: the server says the session was ended
  check((await t.text("#signin-notice")).includes("was ended"), "a revoked admin token ends its session");
  await t.fill("#signin-token", env.operator_token);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#signin-form .error");
  check((await t.text("#signin-form .error-msg")).includes("revoked"), "and cannot sign in again");
  await t.collectCsp();
});
