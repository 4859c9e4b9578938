// app.js -- the console's entry point: who is signed in, the navigation and
// a small hash router (#/orgs/acme/workspaces?…). Pages are in pages_*.js;
// each renders into a fresh element, so a page left behind (and anything it
// showed once, like a minted token) is gone with it.
import { api, onUnauthenticated, setCsrf } from "./api.js";
import { errorBox, h, route } from "./dom.js";
import * as admin from "./pages_admin.js";
import * as billing from "./pages_billing.js";
import * as org from "./pages_org.js";
import * as usage from "./pages_usage.js";

const main = document.getElementById("app");
const nav = document.getElementById("nav");

let session = null; // {actor, scope, org, name, expires_at}: who is signed in
let notice = null; // a line for the sign-in page ("signed out", "expired")
let after = null; // the page asked for before signing in
let expiryTimer = null;
let generation = 0;

const routes = [
  { re: /^signin$/, page: signinPage, open: true },
  { re: /^orgs$/, page: org.orgsPage },
  { re: /^orgs\/([^/]+)$/, page: (view, ctx) => redirect(route("orgs", ctx.params[0], "workspaces")) },
  { re: /^orgs\/([^/]+)\/workspaces$/, page: org.workspacesPage },
  { re: /^orgs\/([^/]+)\/workspaces\/([^/]+)$/, page: org.workspacePage },
  { re: /^orgs\/([^/]+)\/secrets$/, page: org.secretsPage },
  { re: /^orgs\/([^/]+)\/credits$/, page: billing.creditsPage },
  { re: /^usage$/, page: usage.usagePage },
  { re: /^audit$/, page: admin.auditPage },
  { re: /^admin-tokens$/, page: admin.adminTokensPage },
];

function home() {
  if (!session) return "#/signin";
  return session.scope === "operator" ? "#/orgs" : route("orgs", session.org, "workspaces");
}

function redirect(hash) {
  location.replace(hash);
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  return { path: q < 0 ? raw : raw.slice(0, q), query: new URLSearchParams(q < 0 ? "" : raw.slice(q + 1)) };
}

// ---- session ----

function signedIn(me) {
  session = { actor: me.actor, scope: me.scope, org: me.org, name: me.name, expires_at: me.expires_at };
  setCsrf(me.csrf);
  notice = null;
  clearTimeout(expiryTimer);
  const ms = me.expires_at ? Date.parse(me.expires_at) - Date.now() : 0;
  // at the end of the session, ask the server: a 401 brings the sign-in page
  if (ms > 0 && ms < 2 ** 31 - 1) expiryTimer = setTimeout(() => api("GET", "/session").catch(() => {}), ms + 1000);
  drawNav();
}

function signedOut(message) {
  session = null;
  setCsrf(null);
  clearTimeout(expiryTimer);
  notice = message;
  drawNav();
}

onUnauthenticated((err) => {
  if (!session) return;
  const here = location.hash;
  signedOut(`You were signed out: ${err.message}`);
  after = here;
  location.assign("#/signin");
});

async function signOut() {
  try {
    await api("DELETE", "/session");
  } catch (e) {
    // already ended on the server: signed out all the same
  }
  signedOut("You have signed out.");
  after = null;
  location.assign("#/signin");
}

function drawNav() {
  if (!session) {
    nav.replaceChildren();
    nav.hidden = true;
    return;
  }
  const op = session.scope === "operator";
  const links = [
    op ? ["Orgs", "#/orgs"] : [`Org ${session.org}`, route("orgs", session.org, "workspaces")],
    ["Usage", op ? "#/usage" : route("usage", { org: session.org })],
    ["Audit log", op ? "#/audit" : route("audit", { org: session.org })],
    op ? ["Admin tokens", "#/admin-tokens"] : null,
  ].filter(Boolean);
  const until = session.expires_at ? ` · session until ${session.expires_at.replace("T", " ").replace("Z", " UTC")}` : "";
  nav.replaceChildren(
    h("ul", { class: "nav-links" }, links.map(([label, href]) => h("li", {}, h("a", { href, "data-nav": label }, label)))),
    h("div", { class: "who" },
      h("span", { id: "whoami" }, `${session.actor}… · ${session.scope === "operator" ? "operator" : `org admin of ${session.org}`}${until}`),
      h("button", { type: "button", id: "signout", class: "secondary", onclick: signOut }, "Sign out")));
  nav.hidden = false;
  markNav();
}

function markNav() {
  const cur = location.hash.split("?")[0];
  for (const a of nav.querySelectorAll("a")) {
    const target = a.getAttribute("href").split("?")[0];
    if (cur === target || (target !== "#/" && cur.startsWith(`${target}/`))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// ---- the sign-in page ----

async function signinPage(view) {
  const input = h("input", { type: "password", name: "token", autocomplete: "off", spellcheck: "false",
                             required: true, placeholder: "kradm_…" });
  const status = h("div", { class: "form-status", "aria-live": "polite" });
  const form = h("form", { id: "signin-form", class: "card narrow" },
    h("div", { class: "field" }, h("label", { for: "signin-token" }, "Admin token"), input),
    h("p", { class: "hint" }, "An operator makes one with ", h("code", {}, "keyrail admin-token mint --scope operator"),
      " (or --scope org --org ORG). The console exchanges it for a session cookie and does not keep it."),
    h("button", { type: "submit" }, "Sign in"),
    status);
  input.id = "signin-token";
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    input.value = ""; // not kept, not even in the field
    status.replaceChildren();
    const btn = form.querySelector("button");
    btn.disabled = true;
    try {
      const me = await api("POST", "/session", { body: { token }, signingIn: true });
      signedIn(me);
      const to = after && after !== "#/signin" ? after : home();
      after = null;
      location.assign(to);
    } catch (e) {
      status.replaceChildren(errorBox(e));
    } finally {
      btn.disabled = false;
    }
  });
  view.append(h("h1", { tabindex: "-1" }, "Sign in to keyrail"));
  if (notice) view.append(h("p", { class: "notice", role: "status", id: "signin-notice" }, notice));
  view.append(form);
  input.focus();
}

// ---- routing ----

async function render() {
  const gen = ++generation;
  const { path, query } = parseHash();
  if (path === "") return redirect(home());
  const r = routes.find((x) => x.re.test(path));
  if (r && !r.open && !session) {
    after = location.hash;
    return redirect("#/signin");
  }
  if (r && r.open && session) return redirect(home());
  markNav();
  const view = h("div", { class: "view" });
  main.replaceChildren(view);
  main.setAttribute("aria-busy", "true");
  main.dataset.state = "loading";
  main.dataset.gen = String(gen); // tests wait for a render by its number
  main.dataset.route = path.split("/")[0] || "";
  const ctx = {
    params: r ? path.match(r.re).slice(1).map(decodeURIComponent) : [],
    query,
    session,
    operator: session && session.scope === "operator",
    // re-render the current page (after a change)
    reload: () => render(),
  };
  try {
    if (!r) {
      view.append(h("h1", { tabindex: "-1" }, "No such page"), h("p", {}, h("a", { href: home() }, "Back to the start")));
    } else {
      await r.page(view, ctx);
    }
    if (gen !== generation) return;
    main.dataset.state = "ready";
  } catch (e) {
    if (gen !== generation) return;
    if (e.status === 401 && !session) return; // signed out: the sign-in page follows
    view.append(errorBox(e));
    main.dataset.state = "error";
  } finally {
    if (gen === generation) main.setAttribute("aria-busy", "false");
  }
  if (gen === generation) {
    const h1 = view.querySelector("h1");
    if (h1 && !view.contains(document.activeElement)) h1.focus({ preventScroll: true });
  }
}

async function boot() {
  try {
    signedIn(await api("GET", "/session", { signingIn: true }));
  } catch (e) {
    if (e.status !== 401) notice = `keyrail could not tell who is signed in: ${e.message}`;
  }
  window.addEventListener("hashchange", render);
  render();
}

boot();
