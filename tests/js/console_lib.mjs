// console_lib.mjs -- what the console's browser scenarios share: Debian's
// chromium driven headless by puppeteer-core (nothing downloads a browser),
// a watch on everything the page reports (console messages, uncaught
// errors, CSP violations, failed and refused requests), waits on what the
// page shows (never fixed sleeps), screenshots, and a line protocol with
// the pytest test that runs the scenario:
//
//   stdin   one JSON object: the scenario's inputs (ports, tokens, out_dir)
//   stdout  {"ask": NAME, …}   the test does NAME and answers one JSON line
//           {"done": RESULT}   the scenario's result (the test asserts on it)
//   stderr  progress, and the failure if there is one (exit status 1)
//
// Nothing here prints a credential: failures name selectors and counts.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import puppeteer from "puppeteer-core";

const lines = readline.createInterface({ input: process.stdin, terminal: false });
const waiting = [];
const queued = [];
lines.on("line", (l) => {
  if (!l.trim()) return;
  const v = JSON.parse(l);
  if (waiting.length) waiting.shift()(v);
  else queued.push(v);
});
function nextLine() {
  return queued.length ? Promise.resolve(queued.shift()) : new Promise((r) => waiting.push(r));
}

export const log = (...a) => process.stderr.write(`${a.join(" ")}\n`);

// Asks the pytest side to do something (make usage, expire a session, …).
export async function ask(what, data = {}) {
  process.stdout.write(`${JSON.stringify({ ask: what, ...data })}\n`);
  const r = await nextLine();
  if (!r || r.error) throw new Error(`the test could not ${what}: ${r && r.error}`);
  return r;
}

export class CheckFailed extends Error {}

let nchecks = 0;
export function check(cond, what) {
  nchecks++;
  if (!cond) throw new CheckFailed(what);
}

// Runs a scenario: main(env, t) with t = the browser toolkit below.
export async function scenario(main) {
  const env = await nextLine();
  const t = new Toolkit(env);
  let code = 0;
  try {
    await t.start();
    const extra = await main(env, t);
    process.stdout.write(`${JSON.stringify({ done: { checks: nchecks, ...t.report(), ...(extra || {}) } })}\n`);
  } catch (e) {
    code = 1;
    log(`FAILED: ${e instanceof CheckFailed ? "check: " : ""}${e && e.message ? e.message.split("\n")[0] : e}`);
    if (t.page) {
      try {
        await t.shot("failure", t.page, { html: false });
        log(`at ${await t.page.evaluate(() => location.hash)}; page state ${await t.page.evaluate(() => document.getElementById("app").dataset.state)}`);
      } catch (e2) { /* the browser may be gone */ }
    }
    log(`report: ${JSON.stringify(t.report())}`);
  } finally {
    await t.close();
    lines.close();
  }
  process.exit(code);
}

class Toolkit {
  constructor(env) {
    this.env = env;
    this.base = env.admin_url; // http://127.0.0.1:PORT
    this.out = env.out_dir;
    this.consoleMessages = []; // {type, text, url}
    this.pageErrors = [];
    this.failedRequests = [];
    this.refusals = []; // {method, path, status}: 4xx/5xx answers the page got
    this.screenshots = [];
    this.pages = []; // each screenshot's page, as HTML
    this.csp = [];
    this.glitches = []; // "[object …]", "undefined", "null" or "NaN" on a page
    this.contexts = [];
  }

  async start() {
    const profile = fs.mkdtempSync(path.join(this.out, "chromium-profile-"));
    this.browser = await puppeteer.launch({
      executablePath: this.env.chromium || "/usr/bin/chromium",
      headless: true,
      args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        `--user-data-dir=${profile}`],
      defaultViewport: { width: 1280, height: 900 },
      protocolTimeout: 60000,
    });
    this.page = await this.newPage(this.browser.defaultBrowserContext(), "main");
  }

  // A page with every report it makes recorded (label: which page said it).
  async newPage(context, label) {
    const page = await context.newPage();
    page.setDefaultTimeout(20000);
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warn" || m.type() === "warning")
        this.consoleMessages.push({ page: label, type: m.type(), text: m.text().slice(0, 300), url: (m.location() || {}).url || "" });
    });
    page.on("pageerror", (e) => this.pageErrors.push({ page: label, text: String(e && e.message ? e.message : e).slice(0, 300) }));
    page.on("requestfailed", (r) => this.failedRequests.push({ page: label, url: new URL(r.url()).pathname, error: (r.failure() || {}).errorText || "" }));
    page.on("response", (r) => {
      if (r.status() >= 400) {
        const u = new URL(r.url());
        this.refusals.push({ page: label, method: r.request().method(), path: u.pathname, status: r.status() });
      }
    });
    page.on("dialog", (d) => d.accept()); // confirm() before revoke / unset
    // CSP violations, seen by the page itself (the listener is installed by
    // the browser, not by a script the CSP governs)
    await page.evaluateOnNewDocument(() => {
      window.__cspViolations = [];
      document.addEventListener("securitypolicyviolation", (e) => {
        window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
      });
    });
    page.__label = label;
    return page;
  }

  async isolatedPage(label) {
    const ctx = await this.browser.createBrowserContext();
    this.contexts.push(ctx);
    return { ctx, page: await this.newPage(ctx, label) };
  }

  // CSP violations the page has seen so far (kept across reloads here).
  async collectCsp(page = this.page) {
    const v = await page.evaluate(() => window.__cspViolations || []);
    for (const x of v) this.csp.push({ page: page.__label, violation: x });
    await page.evaluate(() => { window.__cspViolations = []; });
  }

  // ---- waiting on what the page shows ----

  // The current render number of the console (main[data-gen]).
  async gen(page = this.page) {
    return page.evaluate(() => Number(document.getElementById("app").dataset.gen || 0));
  }

  // Waits until a render newer than `after` has finished (ready or error).
  async settled(after, page = this.page) {
    await page.waitForFunction((a) => {
      const m = document.getElementById("app");
      return Number(m.dataset.gen || 0) > a && m.dataset.state !== "loading";
    }, {}, after);
    await this.glitchCheck(page);
    return page.evaluate(() => document.getElementById("app").dataset.state);
  }

  // Text a page must never show: a JavaScript value rendered by mistake.
  async glitchCheck(page = this.page) {
    const g = await page.evaluate(() => {
      const t = document.body.innerText;
      const m = /\[object [A-Za-z]+\]|\bundefined\b|\bNaN\b|\bnull\b/.exec(t);
      return m ? `${location.hash}: "${m[0]}"` : null;
    });
    if (g) this.glitches.push(g);
  }

  // Does act() and waits for the page it leads to.
  async navigate(act, page = this.page) {
    const g = await this.gen(page);
    await act();
    return this.settled(g, page);
  }

  // Goes to a console route (#/…) and waits for its page.
  async go(hash, page = this.page) {
    if ((await page.evaluate(() => location.hash)) === hash) throw new Error(`already at ${hash}`);
    return this.navigate(() => page.evaluate((hh) => { location.hash = hh; }, hash), page);
  }

  async text(selector, page = this.page) {
    return page.$eval(selector, (el) => el.textContent);
  }

  async waitText(selector, text, page = this.page) {
    await page.waitForFunction((sel, tx) => {
      const el = document.querySelector(sel);
      return el && el.textContent.includes(tx);
    }, {}, selector, text);
  }

  async fill(selector, value, page = this.page) {
    await page.$eval(selector, (el) => { el.value = ""; });
    await page.type(selector, value);
  }

  // Submits a form by pressing its submit button (keyboard-reachable), and
  // waits until the form is no longer busy.
  async submit(formSel, page = this.page) {
    await page.click(`${formSel} button[type=submit]`);
    await page.waitForFunction((sel) => {
      const f = document.querySelector(sel);
      return !f || f.getAttribute("aria-busy") === "false";
    }, {}, formSel);
  }

  // A request from the page itself (its cookie, its origin), as a script on
  // the page would make it: {status, body}.
  async pageFetch(method, p, { body, headers } = {}, page = this.page) {
    return page.evaluate(async (m, pp, b, hh) => {
      const r = await fetch(pp, { method: m, credentials: "same-origin", headers: { ...(b ? { "content-type": "application/json" } : {}), ...(hh || {}) },
                                  body: b ? JSON.stringify(b) : undefined });
      let j = null;
      try { j = await r.json(); } catch (e) { j = null; }
      return { status: r.status, body: j };
    }, method, p, body || null, headers || null);
  }

  // Everything the page holds: its markup, its text and its fields' values.
  async html(page = this.page) {
    return page.evaluate(() => [document.documentElement.outerHTML, document.body.innerText,
      ...[...document.querySelectorAll("input, textarea, select")].map((i) => i.value)].join("\n"));
  }

  // A full-page screenshot, and the page as HTML beside it in pages_dir
  // (tests/hygiene.sh scans those for credentials). shownOnce: a token the
  // page shows once by design, replaced in the saved HTML by a marker.
  async shot(name, page = this.page, { shownOnce, html = true } = {}) {
    await this.glitchCheck(page);
    const file = path.join(this.out, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    this.screenshots.push(file);
    if (html && this.env.pages_dir) {
      let doc = await page.content();
      if (shownOnce) doc = doc.split(shownOnce).join("[the token shown once]");
      const hf = path.join(this.env.pages_dir, `${this.env.scenario}-${name}.html`);
      fs.writeFileSync(hf, doc);
      this.pages.push(hf);
    }
    return file;
  }

  report() {
    return {
      screenshots: this.screenshots,
      pages: this.pages,
      console: this.consoleMessages,
      page_errors: this.pageErrors,
      failed_requests: this.failedRequests,
      refusals: this.refusals,
      csp: this.csp,
      glitches: this.glitches,
    };
  }

  async close() {
    try {
      if (this.page) await this.collectCsp(this.page);
    } catch (e) { /* gone */ }
    if (this.browser) await this.browser.close();
  }
}
