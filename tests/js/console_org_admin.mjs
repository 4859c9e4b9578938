// console_org_admin.mjs -- the console in a real browser as an org admin
// (of acme; globex is another org): sees only its org, is not offered
// operator actions, and is refused elsewhere (403) with the API's message;
// a forged session cookie is refused (401); sign-out ends the session.
// Run by tests/integration/test_console.py (see console_lib.mjs).
import { check, log, scenario } from "./console_lib.mjs";

scenario(async (env, t) => {
  const page = t.page;

  log("sign in as the org admin of acme");
  await page.goto(`${t.base}/console/`);
  await page.waitForSelector("#signin-form");
  await t.fill("#signin-token", env.org_admin_token);
  await t.navigate(() => page.click("#signin-form button[type=submit]"));
  check((await page.evaluate(() => location.hash)) === "#/orgs/acme/workspaces", "an org admin starts on its org's workspaces");
  check((await t.text("#whoami")).includes("org admin of acme"), "the header says whose admin this is");
  const nav = await page.$$eval("#nav a", (as) => as.map((a) => a.textContent));
  check(!nav.includes("Orgs") && !nav.includes("Admin tokens"), "no operator pages in the navigation");
  await t.waitText("#ws-list", "dev");
  check(!(await t.text("#ws-list")).includes("prod"), "only acme's workspaces");
  check((await page.$("#ws-create")) !== null, "an org admin may create workspaces");
  await t.shot("01-org-admin-workspaces");

  log("credits and limits: no operator forms");
  await t.go("#/orgs/acme/credits");
  await page.waitForSelector("#credits-now dl");
  check((await page.$("#credits-add")) === null && (await page.$("#credits-cap")) === null, "adding credits and the cap are not offered");
  check((await page.$("#org-limits form")) === null, "the org's limits are read-only");
  await t.go("#/orgs/acme/workspaces/dev");
  await page.waitForSelector("#explain-trace li");
  check((await page.$("#ws-limits form")) !== null, "a workspace's limits are editable");
  check((await page.$("#token-mint")) !== null, "tokens can be minted");

  log("the org list holds acme only");
  const orgs = await t.pageFetch("GET", "/admin/v1/orgs");
  check(orgs.status === 200 && orgs.body.items.length === 1 && orgs.body.items[0].slug === "acme", "GET /orgs lists the own org only");

  log("another org: 403");
  const state = await t.go("#/orgs/globex/workspaces");
  check(state === "error", "another org's page ends in an error");
  await page.waitForSelector("main .error");
  check((await t.text("main .error-msg")).includes("administers another org"), "with the API's message");
  check((await t.text("main .error-meta")).includes("HTTP 403") && /^req_/.test(await t.text("main .request-id")),
    "its status and request id");
  check(!(await t.text("main")).includes("prod"), "and nothing of globex");
  await t.shot("02-other-org-refused");
  const session = await t.pageFetch("GET", "/admin/v1/session");
  const csrf = session.body.csrf;
  check(session.status === 200 && /^[0-9a-f]{64}$/.test(csrf), "the session tells the page its CSRF token");
  for (const [m, p, body] of [
    ["GET", "/admin/v1/orgs/globex"],
    ["GET", "/admin/v1/orgs/globex/secrets"],
    ["GET", "/admin/v1/orgs/globex/workspaces/prod/explain"],
    ["GET", "/admin/v1/usage?org=globex"],
    ["GET", "/admin/v1/audit?org=globex"],
    ["PUT", "/admin/v1/orgs/globex/secrets/TEAM_NOTE", { value: "x" }],
    ["POST", "/admin/v1/orgs/globex/workspaces/prod/tokens", {}],
    ["POST", "/admin/v1/orgs/acme/credits", { amount: "1000" }], // operator-only, even in its own org
    ["GET", "/admin/v1/admin-tokens"],
  ]) {
    const r = await t.pageFetch(m, p, { body, headers: m === "GET" ? {} : { "x-csrf-token": csrf } });
    check(r.status === 403 && r.body.error.code === "DENIED", `${m} ${p} is refused (403 DENIED), got ${r.status}`);
    check(/^req_/.test(r.body.request_id), `${m} ${p} carries a request id`);
  }
  // the usage page is the own org's, whatever the address says
  await t.go("#/usage?org=globex");
  check((await page.$eval("#usage-org", (s) => s.value)) === "acme", "the usage page stays on the own org");

  log("forged session cookie: 401");
  const { ctx, page: forged } = await t.isolatedPage("forged");
  const u = new URL(t.base);
  await ctx.setCookie({ name: "kr_session", value: "Zm9yZ2VkLXNlc3Npb24tY29va2llLXZhbHVlLTAwMDAwMDA", domain: u.hostname, path: "/",
                        httpOnly: true, sameSite: "Strict" });
  await forged.goto(`${t.base}/console/#/orgs/acme/workspaces`);
  await forged.waitForSelector("#signin-form");
  const r401 = await t.pageFetch("GET", "/admin/v1/orgs/acme", {}, forged);
  check(r401.status === 401 && r401.body.error.code === "UNAUTHENTICATED", "a forged session cookie is refused (401)");
  const w401 = await t.pageFetch("PUT", "/admin/v1/orgs/acme/secrets/TEAM_NOTE", { body: { value: "x" }, headers: { "x-csrf-token": csrf } }, forged);
  check(w401.status === 401, "a forged cookie with a real CSRF token is refused too (401)");
  await t.shot("03-forged-cookie", forged);
  await t.collectCsp(forged);
  await ctx.close();

  log("sign-out ends the session");
  const live = (await page.browserContext().cookies()).find((c) => c.name === "kr_session");
  await t.navigate(() => page.click("#signout"));
  await page.waitForSelector("#signin-notice");
  await page.browserContext().setCookie({ name: live.name, value: live.value, domain: live.domain, path: "/", httpOnly: true, sameSite: "Strict" });
  const ended = await t.pageFetch("GET", "/admin/v1/orgs/acme");
  check(ended.status === 401, "the signed-out session's cookie is refused (401)");
  // the page notices too: reloading shows the sign-in page
  await t.collectCsp();
  await page.reload();
  await page.waitForSelector("#signin-form");
  await t.collectCsp();
});
