// chart.js -- small SVG bar charts built with DOM calls: geometry in
// attributes, colours from classes in app.css (s0…s7), a <title> on every
// bar for its exact number, and a legend. No library.
import { h, s } from "./dom.js";

const W = 720;

// A round upper bound for an axis of four steps: 1, 2, 4 or 8 times a
// power of ten (each quarter is round too).
function niceMax(v) {
  if (!(v > 0)) return 1;
  const e = 10 ** Math.floor(Math.log10(v));
  const f = v / e;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 4 ? 4 : f <= 8 ? 8 : 10) * e;
}

const r2 = (x) => Math.round(x * 100) / 100;

export function legend(names) {
  return h("ul", { class: "legend" }, names.map((n, j) =>
    h("li", {}, s("svg", { width: "12", height: "12", viewBox: "0 0 12 12", "aria-hidden": "true" },
      s("rect", { width: "12", height: "12", class: `s${j % 8}` })), n)));
}

// Stacked vertical bars: one bar per x, one segment per series.
//   {id, title, xs, series, value(xi, si) -> number, fmt(n) exact, tick(n) short,
//    label(x) for the x axis (optional)}
export function stackedBars(o) {
  const H = 280, ml = 70, mr = 12, mt = 14, mb = 44;
  const pw = W - ml - mr, ph = H - mt - mb;
  const totals = o.xs.map((_, i) => o.series.reduce((a, _s, j) => a + o.value(i, j), 0));
  const max = niceMax(Math.max(0, ...totals));
  const slot = pw / Math.max(1, o.xs.length);
  const bw = Math.max(2, Math.min(56, slot * 0.7));
  const grand = totals.reduce((a, b) => a + b, 0);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", id: o.id,
                         "aria-labelledby": `${o.id}-t ${o.id}-d`, preserveAspectRatio: "xMidYMid meet" },
    s("title", { id: `${o.id}-t` }, o.title),
    s("desc", { id: `${o.id}-d` }, `${o.xs.length} bars from ${o.xs[0] || "-"} to ${o.xs[o.xs.length - 1] || "-"}; total ${o.fmt(grand)}.`));
  for (let k = 0; k <= 4; k++) {
    const y = r2(mt + ph - (ph * k) / 4);
    svg.append(s("line", { x1: ml, x2: W - mr, y1: y, y2: y, class: k ? "grid" : "axis" }),
      s("text", { x: ml - 6, y: r2(y + 4), "text-anchor": "end", class: "tick" }, o.tick((max * k) / 4)));
  }
  const every = Math.max(1, Math.ceil(o.xs.length / 10)); // at most ~10 x labels
  o.xs.forEach((x, i) => {
    const x0 = r2(ml + slot * i + (slot - bw) / 2);
    const g = s("g", { class: "bar", "data-x": x });
    let y = mt + ph;
    o.series.forEach((name, j) => {
      const v = o.value(i, j);
      if (!v) return;
      const hh = (ph * v) / max;
      y -= hh;
      g.append(s("rect", { x: x0, y: r2(y), width: r2(bw), height: r2(Math.max(hh, 1)), class: `s${j % 8}`,
                           "data-series": name, "data-value": String(v) },
        s("title", {}, `${x} · ${name}: ${o.fmt(v)}`)));
    });
    svg.append(g);
    if (i % every === 0)
      svg.append(s("text", { x: r2(x0 + bw / 2), y: H - mb + 18, "text-anchor": "middle", class: "tick" }, o.label ? o.label(x) : x));
  });
  return h("figure", { class: "chart-box" }, h("figcaption", {}, o.title), svg, legend(o.series));
}

// Horizontal bars: one per label.   {id, title, labels, values, fmt}
export function hBars(o) {
  const row = 28, ml = 170, mr = 110, mt = 6;
  const H = mt * 2 + row * Math.max(1, o.labels.length);
  const pw = W - ml - mr;
  const max = niceMax(Math.max(0, ...o.values));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart hbars", role: "img", id: o.id,
                         "aria-labelledby": `${o.id}-t` },
    s("title", { id: `${o.id}-t` }, o.title));
  o.labels.forEach((label, j) => {
    const y = mt + row * j;
    const w = r2((pw * o.values[j]) / max);
    svg.append(
      s("text", { x: ml - 8, y: y + row / 2 + 4, "text-anchor": "end", class: "tick" }, label),
      s("rect", { x: ml, y: y + 4, width: Math.max(w, 1), height: row - 8, class: `s${j % 8}`,
                  "data-series": label, "data-value": String(o.values[j]) },
        s("title", {}, `${label}: ${o.fmt(o.values[j])}`)),
      s("text", { x: r2(ml + Math.max(w, 1) + 6), y: y + row / 2 + 4, class: "tick value" }, o.fmt(o.values[j])));
  });
  return h("figure", { class: "chart-box" }, h("figcaption", {}, o.title), svg);
}
