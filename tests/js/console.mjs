// The web console in a real browser: Debian's chromium, headless, driven by
// puppeteer-core (which never downloads a browser). One scenario per run,
// chosen by KR_SCENARIO; it clicks and types like a person would and writes
// what it saw to KR_REPORT (JSON). tests/integration/test_console.py starts
// keyrail, runs this and asserts on the report and on keyrail's store.
//
//   KR_CONSOLE    http://127.0.0.1:PORT/console/
//   KR_TOKEN      the admin token to sign in with
//   KR_SHOTS      directory for screenshots
//   KR_PAGES      directory for each screenshot's page as HTML
//   KR_PROFILE    a fresh chromium profile directory
//   KR_REPORT     where the report goes
//   KR_BROWSER    the chromium binary (default /usr/bin/chromium)
import fs from "node:fs";
import path from "node:path";
import puppeteer from "puppeteer-core";

const env = (k, d) => process.env[k] ?? d;
const BASE = env("KR_CONSOLE");
const ORIGIN = new URL(BASE).origin;
const report = { shots: {}, console: [], csp: [], pageErrors: [], failed: [], refused: [], steps: {} };

const browser = await puppeteer.launch({
  executablePath: env("KR_BROWSER", "/usr/bin/chromium"),
  headless: true,
  userDataDir: env("KR_PROFILE"),
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
    "--password-store=basic"],
});

const page = await browser.newPage();
await page.setViewport({ width: 1280, height: 900 });
// every CSP violation the page sees, reported from inside it
await page.exposeFunction("__krCsp", (v) => report.csp.push(v));
await page.evaluateOnNewDocument(() => {
  document.addEventListener("securitypolicyviolation", (e) =>
    window.__krCsp(`${e.violatedDirective} ${e.blockedURI}`));
});
page.on("console", (m) => { if (m.type() === "error" || m.type() === "warn") report.console.push(m.text()); });
// every response keyrail refused: the scenarios provoke some (401, 403) on purpose
page.on("response", (r) => {
  if (r.status() >= 400) report.refused.push(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`);
});
page.on("pageerror", (e) => report.pageErrors.push(String(e)));
page.on("requestfailed", (r) => report.failed.push(`${r.method()} ${r.url()} ${r.failure()?.errorText}`));
page.on("dialog", async (d) => { report.pageErrors.push(`dialog: ${d.message()}`); await d.dismiss(); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function shot(name) {
  const p = path.join(env("KR_SHOTS"), `${name}.png`);
  await page.screenshot({ path: p, fullPage: true });
  report.shots[name] = p;
  // the page as rendered, for the secret-hygiene sweep (tests/hygiene.sh)
  fs.writeFileSync(path.join(env("KR_PAGES"), `${name}.html`), await page.content());
}

async function text(sel) {
  await page.waitForSelector(sel, { timeout: 10000 });
  return page.$eval(sel, (e) => e.textContent);
}

// wait until the page under #app shows `needle` (text), or fail with what it shows
async function waitText(needle, sel = "#app") {
  try {
    await page.waitForFunction((s, n) => document.querySelector(s)?.textContent.includes(n),
      { timeout: 10000 }, sel, needle);
  } catch {
    throw new Error(`waited for "${needle}" in ${sel}; the page shows: ${await text(sel)}`);
  }
}

async function go(hash, needle) {
  await page.goto(`${BASE}${hash}`, { waitUntil: "domcontentloaded" });
  if (needle) await waitText(needle);
}

async function fill(sel, value) {
  await page.waitForSelector(sel, { timeout: 10000 });
  await page.$eval(sel, (e) => { e.value = ""; });
  await page.type(sel, value);
}

async function submit(sel) {
  await page.click(sel);
}

// a request from inside the signed-in page (same origin, the session cookie)
async function fetchIn(method, p, body, headers = {}) {
  return page.evaluate(async (m, u, b, hd) => {
    const r = await fetch(u, { method: m, headers: { "content-type": "application/json", ...hd },
      body: b === null ? undefined : JSON.stringify(b), credentials: "same-origin" });
    return { status: r.status, body: await r.text() };
  }, method, `${ORIGIN}/admin/v1${p}`, body ?? null, headers);
}

async function signIn(token) {
  await go("#/signin");
  await fill("#token", token);
  await submit("#signin");
  await page.waitForSelector("#signout", { timeout: 10000 });
}

const scenarios = {
  // the operator: every page, every form
  async operator() {
    const s = report.steps;
    const mainResp = await page.goto(BASE, { waitUntil: "networkidle0" });
    await waitText("Sign in");
    s.csp_header = mainResp.headers()["content-security-policy"] || "";
    await shot("signin");

    await fill("#token", "kradm_not-a-real-token-at-all-0000000000000000");
    await submit("#signin");
    await page.waitForSelector("#app .error", { timeout: 10000 });
    s.bad_signin = await text("#app .error");
    s.token_field_after_bad = await page.$eval("#token", (e) => e.value);

    await fill("#token", env("KR_TOKEN"));
    await submit("#signin");
    await waitText("acme");
    s.who = await text("#who");
    s.nav = await text("#nav");
    s.cookie = (await page.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }));
    s.token_in_storage = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    s.orgs = await text("#app table");
    await shot("orgs");

    // a new org, a workspace in it, a secret, a token
    await fill("#new-org", "beta");
    await fill("#new-org-name", "<img src=x id=pwned onerror=alert(1)>Beta");
    await submit("#create-org");
    await waitText("beta");
    s.org_name_markup = await page.$("#pwned") !== null;
    s.orgs_after = await text("#app table");

    await go("#/org/beta", "New workspace");
    await fill("#new-ws", "dev");
    await page.select("#new-ws-runtime", "codex");
    await fill("#new-ws-model", "gpt-4o");
    await submit("#create-ws");
    await page.waitForSelector("#explain", { timeout: 10000 });
    s.ws_heading = await text("#app h1");
    s.explain = await text("#explain");
    await shot("workspace");

    await submit("#mint-token");
    await page.waitForSelector("#minted-token", { timeout: 10000 });
    s.minted = await page.$eval("#minted-token", (e) => e.value);
    s.tokens_table = await text("#app .card table");

    await go("#/org/beta/secrets", "Set a secret");
    await fill("#secret-key", "MINIMAX_API_KEY");
    await fill("#secret-value", env("KR_SECRET_VALUE"));
    await submit("#set-secret");
    await waitText("MINIMAX_API_KEY", "#app table");
    s.secrets_table = await text("#app table");
    s.secret_value_field = await page.$eval("#secret-value", (e) => e.value);
    s.secrets_html = await page.content();
    await shot("secrets");

    await go("#/org/beta/billing", "Ledger");
    await fill("#credit-amount", "25");
    await submit("#add-credits");
    await waitText("console", "#app");
    s.credits = await text("#credits");
    await shot("billing");

    // usage of acme: the test made real calls through the proxy before
    await go("#/usage?org=acme", "tokens per day and model");
    s.usage_table = await text("#app table");
    s.chart_tokens_bars = await page.$$eval("#chart-tokens rect", (r) => r.length);
    s.chart_cost_bars = await page.$$eval("#chart-cost rect", (r) => r.length);
    s.chart_tokens_titles = await page.$$eval("#chart-tokens rect title", (t) => t.map((x) => x.textContent));
    await shot("usage");
    await go("#/usage?org=beta", "No usage");
    s.beta_usage = await text("#app");

    await go("#/audit", "Audit log");
    await waitText("token.mint");
    s.audit = await text("#app table");
    await shot("audit");

    // the console's session: CSRF, sign-out
    s.csrf_missing = await fetchIn("POST", "/orgs", { org: "gamma" });
    s.csrf_wrong = await fetchIn("POST", "/orgs", { org: "gamma" }, { "x-csrf-token": "0".repeat(64) });
    s.get_without_csrf = await fetchIn("GET", "/orgs/beta");
    await submit("#signout");
    await page.waitForSelector("#token", { timeout: 10000 });
    s.after_signout = await fetchIn("GET", "/session");
    s.after_signout_orgs = await fetchIn("GET", "/orgs");
    await go("#/orgs");
    await page.waitForSelector("#token", { timeout: 10000 });
    s.after_signout_page = await text("#app h1");
  },

  // an org admin: its own org, nothing else
  async orgadmin() {
    const s = report.steps;
    await signIn(env("KR_TOKEN"));
    await waitText("Workspaces");
    s.landing = page.url();
    s.nav = await text("#nav");
    s.who = await text("#who");
    s.workspaces = await text("#app table");
    await shot("orgadmin");
    await go("#/org/other", "Something went wrong");
    s.other_org = await text("#app");
    await go("#/admin-tokens", "Something went wrong");
    s.admin_tokens = await text("#app");
    await go("#/usage", "Usage");
    s.usage_heading = await text("#app h1");
    s.api_other = await fetchIn("GET", "/orgs/other/workspaces");
    const sess = JSON.parse((await fetchIn("GET", "/session")).body);
    s.credits_add = await fetchIn("POST", "/orgs/acme/credits", { amount: "1000" }, { "x-csrf-token": sess.csrf });
  },

  // a forged session cookie and a revoked token's session
  async forged() {
    const s = report.steps;
    await page.goto(BASE, { waitUntil: "domcontentloaded" });
    await page.setCookie({ name: "kr_session", value: "f".repeat(64), url: ORIGIN });
    s.forged = await fetchIn("GET", "/session");
    await go("#/orgs");
    await page.waitForSelector("#token", { timeout: 10000 });
    s.forged_page = await text("#app h1");
    await signIn(env("KR_TOKEN"));
    s.signed_in = (await fetchIn("GET", "/session")).status;
    fs.writeFileSync(env("KR_SIGNAL"), "signed-in");
    // the test revokes the token now; the session ends with it
    for (let i = 0; i < 100 && fs.existsSync(env("KR_SIGNAL")); i++) await sleep(100);
    s.after_revoke = await fetchIn("GET", "/session");
    await page.reload({ waitUntil: "domcontentloaded" });
    await page.waitForSelector("#token", { timeout: 10000 });
    s.after_revoke_page = await text("#app h1");
  },
};

let failure = null;
try {
  await scenarios[env("KR_SCENARIO")]();
} catch (e) {
  failure = e;
  report.error = String(e && e.stack || e);
  try { await shot("failure"); } catch { /* best effort */ }
}
await browser.close();
fs.writeFileSync(env("KR_REPORT"), JSON.stringify(report, null, 2));
if (failure) {
  console.error(report.error);
  process.exit(1);
}
