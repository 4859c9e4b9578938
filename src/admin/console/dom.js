// dom.js -- building the DOM without markup strings. Every string from the
// API goes in as a text node (textContent), never through innerHTML; the
// page's Content-Security-Policy forbids inline script and style anyway, so
// there are no style attributes either: classes and the hidden attribute.

// h("tag", {attr: value, class: "x", onclick: fn}, child, …): an element.
// Children are nodes, strings (text), numbers, or arrays of those; null and
// false are skipped.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

// The same for SVG elements (charts): geometry goes in attributes.
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value" && "value" in el && el.namespaceURI !== SVG_NS) el.value = String(v);
    else if (k === "checked") el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// A data table: columns [{label, get(row) -> string | Node, num?, nowrap?}].
export function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty || "Nothing here yet.");
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => {
        const v = c.get(r);
        const cls = [c.num ? "num" : "", c.nowrap ? "nowrap" : ""].join(" ").trim() || null;
        return h("td", { class: cls }, v === null || v === undefined || v === "" ? "—" : v);
      }))))));
}

// A labelled form field. input: the control element (its id is set here).
let fieldSeq = 0;
export function field(label, input, hint) {
  const id = input.id || `f${++fieldSeq}`;
  input.id = id;
  const hintEl = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: input.type === "checkbox" ? "field check" : "field" },
    h("label", { for: id }, label), input, hintEl);
}

// An API error as the page shows it: the server's message, its code and the
// request id (what an operator quotes when asking about it).
export function errorBox(err) {
  const e = err || {};
  return h("div", { class: "error", role: "alert" },
    h("p", { class: "error-msg" }, e.message || String(err)),
    h("p", { class: "error-meta" },
      e.status ? `HTTP ${e.status}` : null,
      e.code ? h("span", { class: "code" }, e.code) : null,
      e.requestId ? ["request id ", h("code", { class: "request-id" }, e.requestId)] : null));
}

// A form's outcome line: replaced on each submit.
export function statusArea() {
  const el = h("div", { class: "form-status", "aria-live": "polite" });
  return {
    el,
    clear() { el.replaceChildren(); },
    ok(...content) { el.replaceChildren(h("p", { class: "ok", role: "status" }, content)); },
    error(err) { el.replaceChildren(errorBox(err)); },
  };
}

// Runs submit(form) on submit with the button disabled meanwhile; errors go
// to the form's status area.
export function onSubmit(form, status, submit) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    status.clear();
    form.setAttribute("aria-busy", "true");
    try {
      await submit(form);
    } catch (err) {
      status.error(err);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      form.setAttribute("aria-busy", "false");
    }
  });
}

// "2026-12-04T07:06:31Z" -> "2026-12-04 07:06:31 UTC"
export function when(iso) {
  return iso ? String(iso).replace("T", " ").replace("Z", " UTC") : "";
}

export const fmtInt = (n) => new Intl.NumberFormat("en").format(n);

// href of a console route: route("orgs", org, "workspaces") -> "#/orgs/acme/workspaces"
export function route(...parts) {
  let q = "";
  if (parts.length && typeof parts[parts.length - 1] === "object") {
    const sp = new URLSearchParams();
    for (const [k, v] of Object.entries(parts.pop())) if (v !== undefined && v !== null && v !== "") sp.set(k, v);
    const t = sp.toString();
    if (t) q = `?${t}`;
  }
  return `#/${parts.map((p) => encodeURIComponent(p)).join("/")}${q}`;
}
