"use strict";
// The asiarch dashboard page: plain DOM and inline SVG, no libraries (the machine may be offline).
// Every string from the campaign (names, code, LLM text) is set with textContent, never parsed as HTML.

const STATUS_COLORS = {
  proposed: "#9aa5b1", validated: "#5b8def", rejected: "#d9534f", training: "#f0ad4e", stopped: "#b08b5b",
  finished: "#3a9d5d", failed: "#8b1a1a", promoted: "#7e57c2",
};
const SEED_COLOR = "#222";
const SEED_DASH_COLORS = ["#555", "#888", "#aaa", "#777", "#999", "#666"];
const TEXT_KEYS = new Set(["name", "status", "stage", "id"]);
const LOWER_IS_BETTER = new Set(["explore_eval_loss", "verify_eval_loss"]);
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  sort: "fitness", order: "desc", offset: 0, limit: 50, status: "", stage: "", q: "", baselines: true,
  selected: null, version: null, lineageTop: 150, total: 0,
};

// ------------------------------------------------------------------ helpers

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function fmt(x, digits = 3) {
  return x === null || x === undefined || Number.isNaN(x) ? "—" : Number(x).toFixed(digits);
}

function fmtInt(x) {
  return x === null || x === undefined ? "—" : Number(x).toLocaleString("en-US");
}

function fmtSeconds(sec) {
  if (sec === null || sec === undefined) return "—";
  if (sec < 90) return `${sec.toFixed(0)} s`;
  if (sec < 5400) return `${(sec / 60).toFixed(1)} min`;
  return `${(sec / 3600).toFixed(2)} h`;
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace("T", " ").slice(0, 16);
}

function fmtShort(iso) {  // "11-22 07:34": enough for a table column
  const full = fmtTime(iso);
  return full.length === 16 ? full.slice(5) : full;
}

function relTime(iso) {
  if (!iso) return "";
  const sec = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!Number.isFinite(sec)) return "";
  if (sec < 60) return "just now";
  if (sec < 3600) return `${Math.round(sec / 60)} min ago`;
  if (sec < 86400) return `${(sec / 3600).toFixed(1)} h ago`;
  return `${(sec / 86400).toFixed(1)} days ago`;
}

function statusDot(status) {
  return h("span", { class: "dot", style: `background:${STATUS_COLORS[status] || "#999"}` });
}

function badge(el, status) {
  el.textContent = status || "—";
  el.style.background = STATUS_COLORS[status] || "#888";
}

function candidateLink(c) {
  return h("a", { href: `#/c/${encodeURIComponent(c.id)}`, title: c.id, dataset: { id: c.id } }, c.name);
}

// ------------------------------------------------------------------ API

const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const token = (() => {
  const params = new URLSearchParams(location.search);
  const given = params.get("token");
  if (given) {
    sessionStorage.setItem("asiarch-token", given);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
  return given || sessionStorage.getItem("asiarch-token");
})();

class ApiError extends Error {}

async function api(path, params) {
  const query = params ? "?" + new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null)) : "";
  const response = await fetch(base + path + query, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new ApiError((body && body.detail) || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

// ------------------------------------------------------------------ charts (inline SVG)

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => (hi - lo) / st <= count) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function tickLabel(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

// series: [{kind: line|step|points|hline, points: [[x, y, id?, title?]], y (hline), color, dash, label, r}]
function lineChart(container, { series, xLabel, yLabel, height = 260, empty = "no data yet", onPick }) {
  container.replaceChildren();
  const W = Math.max(container.clientWidth || 0, 360), H = height;
  const legend = series.filter((x) => x.label);
  const m = { l: 56, r: 14, t: legend.length ? 26 : 10, b: 38 };
  const xs = [], ys = [];
  for (const se of series) {
    if (se.kind === "hline") ys.push(se.y);
    else for (const p of se.points) { xs.push(p[0]); ys.push(p[1]); }
  }
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  container.append(svg);
  if (!xs.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis-label" }, empty));
    return svg;
  }
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.06;
  y0 -= pad; y1 += pad;
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const grid = s("g", { class: "grid" }), axis = s("g", { class: "axis" });
  for (const t of niceTicks(y0, y1, 5)) {
    grid.append(s("line", { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }));
    axis.append(s("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, tickLabel(t)));
  }
  for (const t of niceTicks(x0, x1, 6)) {
    axis.append(s("line", { x1: sx(t), x2: sx(t), y1: H - m.b, y2: H - m.b + 4 }));
    axis.append(s("text", { x: sx(t), y: H - m.b + 16, "text-anchor": "middle" }, tickLabel(t)));
  }
  axis.append(s("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
  axis.append(s("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
  axis.append(s("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle", class: "axis-label" }, xLabel || ""));
  axis.append(s("text", { x: 12, y: (m.t + H - m.b) / 2, "text-anchor": "middle", class: "axis-label",
                         transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})` }, yLabel || ""));
  svg.append(grid, axis);
  for (const se of series) {
    const color = se.color || "#2f6fdb";
    if (se.kind === "hline") {
      svg.append(s("line", { x1: m.l, x2: W - m.r, y1: sy(se.y), y2: sy(se.y), stroke: color, "stroke-dasharray": se.dash || "4 3" }));
      continue;
    }
    if (se.kind === "points") {
      const g = s("g", { fill: color, "fill-opacity": se.opacity || 0.75 });
      const titled = se.points.length <= 1500;
      for (const p of se.points) {
        const c = s("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: se.r || 3, class: "point" });
        if (p[2]) c.dataset.id = p[2];
        if (titled && p[3]) c.append(s("title", {}, p[3]));
        g.append(c);
      }
      svg.append(g);
      continue;
    }
    let d = "";
    se.points.forEach((p, i) => {
      const X = sx(p[0]).toFixed(1), Y = sy(p[1]).toFixed(1);
      if (i === 0) d += `M${X},${Y}`;
      else if (se.kind === "step") d += `H${X}V${Y}`;
      else d += `L${X},${Y}`;
    });
    if (se.kind === "step" && se.extendTo !== undefined) d += `H${sx(se.extendTo).toFixed(1)}`;
    svg.append(s("path", { d, fill: "none", stroke: color, "stroke-width": se.width || 1.8, "stroke-dasharray": se.dash || null,
                           "data-series": se.label || se.kind }));
  }
  let lx = m.l;
  for (const se of legend) {
    svg.append(s("line", { x1: lx, x2: lx + 16, y1: 12, y2: 12, stroke: se.color || "#2f6fdb", "stroke-width": 2.5,
                           "stroke-dasharray": se.dash || null }));
    const t = s("text", { x: lx + 20, y: 16 }, se.label);
    svg.append(t);
    const width = t.getComputedTextLength ? t.getComputedTextLength() : 0;
    lx += 32 + (width || 6.5 * se.label.length);
  }
  if (onPick) svg.addEventListener("click", (ev) => { const el = ev.target.closest("[data-id]"); if (el) onPick(el.dataset.id); });
  return svg;
}

function drawTree(container, data, { selected = null, labels = true } = {}) {
  container.replaceChildren();
  if (!data.nodes.length) { container.append(h("div", { class: "muted", text: "no candidates yet" })); return; }
  const colW = labels ? 170 : 46, rowH = labels ? 20 : 14;
  const maxDepth = Math.max(...data.nodes.map((n) => n.depth)), maxRow = Math.max(...data.nodes.map((n) => n.row));
  const W = 24 + maxDepth * colW + (labels ? 170 : 30), H = 24 + maxRow * rowH;
  const pos = new Map(data.nodes.map((n) => [n.id, [14 + n.depth * colW, 12 + n.row * rowH]]));
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  const edges = s("g");
  for (const e of data.edges) {
    const [x1, y1] = pos.get(e.source), [x2, y2] = pos.get(e.target);
    const mx = (x1 + x2) / 2;
    edges.append(s("path", { class: "edge", d: `M${x1},${y1}C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
  }
  svg.append(edges);
  const nodes = s("g");
  for (const n of data.nodes) {
    const [x, y] = pos.get(n.id);
    const cls = ["node", n.id === selected ? "selected" : "", n.breakthrough ? "breakthrough" : ""].join(" ").trim();
    const fill = n.baseline ? SEED_COLOR : STATUS_COLORS[n.status] || "#999";
    const shape = n.baseline
      ? s("rect", { x: x - 5, y: y - 5, width: 10, height: 10, fill, class: cls, "data-id": n.id })
      : s("circle", { cx: x, cy: y, r: n.breakthrough ? 6 : 5, fill, class: cls, "data-id": n.id });
    shape.append(s("title", {}, `${n.name} · ${n.status} · fitness ${fmt(n.fitness)}`));
    nodes.append(shape);
    if (labels) {
      const label = n.name.length > 22 ? n.name.slice(0, 21) + "…" : n.name;
      nodes.append(s("text", { x: x + 8, y: y + 4, "data-id": n.id, class: "point" }, label));
    }
  }
  svg.append(nodes);
  svg.addEventListener("click", (ev) => { const el = ev.target.closest("[data-id]"); if (el) go(el.dataset.id); });
  container.append(svg);
}

// ------------------------------------------------------------------ overview

function renderSummary(sum) {
  document.title = `asiarch · ${sum.name}`;
  $("campaign-name").textContent = sum.name;
  const statusEl = $("campaign-status");
  statusEl.textContent = sum.status || "no campaign.json";
  statusEl.style.background = { running: "#2f6fdb", finished: "#3a9d5d", failed: "#d9534f", interrupted: "#f0ad4e" }[sum.status] || "#888";
  $("campaign-meta").textContent = [sum.phase && `phase ${sum.phase}`, sum.scale && `scale ${sum.scale}`,
    sum.started_at && `started ${fmtTime(sum.started_at)}`].filter(Boolean).join(" · ");
  $("last-update").textContent = sum.updated_at ? `updated ${relTime(sum.updated_at)}` : "";

  const counts = $("status-counts");
  counts.replaceChildren(...Object.entries(sum.counts).map(([status, n]) =>
    h("span", { class: "chip", "data-status": status, title: `show only ${status}`,
                onclick: () => { $("filter-status").value = status; setFilter(); } },
      statusDot(status), status, h("b", { text: fmtInt(n) }))));
  counts.append(h("span", { class: "chip", "data-status": "", onclick: () => { $("filter-status").value = ""; setFilter(); } },
    "total", h("b", { id: "count-total", text: fmtInt(sum.total) })));

  const budget = sum.budget || {}, used = sum.used || {};
  const rows = [
    ["candidates", used.candidates, budget.max_candidates, fmtInt],
    ["device hours", used.device_hours, budget.device_hours, (x) => fmt(x, 2)],
    ["LLM USD", used.usd, budget.usd, (x) => fmt(x, 2)],
    ["wall time", used.wall_seconds, budget.wall_seconds, fmtSeconds],
  ];
  $("budget").replaceChildren(...rows.map(([label, u, cap, f]) => {
    const frac = cap ? Math.min(1, (u || 0) / cap) : 0;
    return h("div", { class: "bar-row", "data-budget": label },
      h("span", { class: "muted", text: label }),
      h("div", { class: "bar" + ((u || 0) > (cap || Infinity) ? " over" : "") }, h("span", { style: `width:${(frac * 100).toFixed(1)}%` })),
      h("span", { class: "num", text: `${u === undefined || u === null ? "—" : f(u)} / ${cap ? f(cap) : "no limit"}` }));
  }));

  $("best-fitness").textContent = sum.best ? fmt(sum.best.fitness) : "—";
  $("best-name").replaceChildren(sum.best ? candidateLink(sum.best) : "no scored candidate yet");
  $("headline").textContent = `${fmtInt(sum.breakthroughs)} breakthroughs · ${fmtInt(sum.verified)} verified · ` +
    `${fmtInt(sum.insights)} insights · ${sum.baselines.length} seeds`;

  const select = $("filter-status");
  if (select.options.length === 1) {
    for (const status of Object.keys(sum.counts)) select.append(h("option", { value: status, text: status }));
  }
}

// ------------------------------------------------------------------ candidate table

function defaultOrder(key) {
  return TEXT_KEYS.has(key) || LOWER_IS_BETTER.has(key) ? "asc" : "desc";
}

async function loadTable() {
  const page = await api("api/candidates", {
    sort: state.sort, order: state.order, offset: state.offset, limit: state.limit,
    status: state.status, stage: state.stage, q: state.q, baselines: state.baselines ? "true" : "false",
  });
  state.total = page.total;
  const body = document.querySelector("#candidate-table tbody");
  body.replaceChildren(...page.items.map((r) => h("tr", {
    "data-id": r.id, "data-status": r.status, class: r.id === state.selected ? "selected" : null,
    onclick: () => go(r.id),
  },
    h("td", { class: "name", title: r.id }, r.name, r.baseline ? h("span", { class: "tag", text: "seed" }) : null,
      r.breakthrough ? h("span", { class: "tag star", text: "★ breakthrough" }) : null),
    h("td", {}, statusDot(r.status), " ", r.status),
    h("td", { text: r.stage }),
    h("td", { class: "num", text: r.generation }),
    h("td", { class: "num", "data-col": "fitness", text: fmt(r.fitness) }),
    h("td", { class: "num", "data-col": "verify_fitness", text: fmt(r.verify_fitness) }),
    h("td", { class: "num", text: fmt(r.explore_eval_loss) }),
    h("td", { class: "num", text: fmt(r.explore_benchmark) }),
    h("td", { class: "num", text: fmt(r.verify_eval_loss) }),
    h("td", { class: "num", text: fmt(r.judge, 2) }),
    h("td", { class: "num", text: fmtSeconds(r.device_seconds) }),
    h("td", { class: "muted", title: r.created_at || "", text: fmtShort(r.created_at) }),
  )));
  if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 12, class: "muted", text: "no candidates match" })));
  for (const th of document.querySelectorAll("#candidate-table th[data-sort]")) {
    th.setAttribute("aria-sort", th.dataset.sort === state.sort ? (state.order === "asc" ? "ascending" : "descending") : "none");
  }
  const last = Math.min(page.total, state.offset + page.items.length);
  $("page-info").textContent = page.total ? `${fmtInt(state.offset + 1)}–${fmtInt(last)} of ${fmtInt(page.total)}` : "0 of 0";
  $("table-total").textContent = `(${fmtInt(page.total)})`;
  $("page-prev").disabled = state.offset === 0;
  $("page-next").disabled = last >= page.total;
  if (document.body.dataset.ready !== "1") performance.mark("asiarch:table");  // first rows on screen
  document.body.dataset.ready = "1";
}

function setFilter() {
  state.status = $("filter-status").value;
  state.stage = $("filter-stage").value;
  state.q = $("filter-q").value.trim();
  state.baselines = $("filter-baselines").checked;
  state.offset = 0;
  loadTable().catch((e) => showError(e.message));
}

// ------------------------------------------------------------------ candidate view

function go(id) {
  const target = `#/c/${encodeURIComponent(id)}`;
  if (location.hash === target) openCandidate(id);
  else location.hash = target;
}

function renderCode(tab, c) {
  const pre = $("cv-code");
  for (const b of document.querySelectorAll("#cv-code-tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  pre.dataset.tab = tab;
  let lines;
  if (tab === "diff") {
    if (c.diff === null) lines = [["", "no parent: this is a seed or a first design, so there is nothing to diff against"]];
    else if (c.diff === "") lines = [["", "identical to its parent"]];
    else lines = c.diff.split("\n").map((line) => {
      const cls = line.startsWith("+++") || line.startsWith("---") ? "diff-file" : line.startsWith("@@") ? "diff-hunk"
        : line.startsWith("+") ? "diff-add" : line.startsWith("-") ? "diff-del" : "";
      return [cls, line];
    });
  } else {
    const text = tab === "parent" ? (c.parent ? c.parent.code : "no parent") : c.code;
    lines = text.split("\n").map((line) => ["", line]);
  }
  pre.replaceChildren(...lines.map(([cls, line]) => h("span", { class: cls || null, text: line || " " })));
}

function curveSeries(c, stage) {
  const own = c[stage].loss_curve || [];
  const series = c.baseline_curves.filter((b) => (b[`${stage}_loss_curve`] || []).length).map((b, i) => ({
    kind: "line", points: b[`${stage}_loss_curve`].map((y, x) => [x, y]), color: SEED_DASH_COLORS[i % SEED_DASH_COLORS.length],
    dash: "5 3", width: 1.2, label: b.name,
  }));
  if (own.length) series.push({ kind: "line", points: own.map((y, x) => [x, y]), color: STATUS_COLORS[c.status] || "#2f6fdb",
                                width: 2.6, label: c.name });
  return { series, hasOwn: own.length > 0 };
}

function renderCandidate(c, lineage) {
  const view = $("candidate-view");
  $("cv-empty").hidden = true;
  $("cv-body").hidden = false;
  $("cv-name").textContent = c.name;
  badge($("cv-status"), c.status);
  $("cv-flags").replaceChildren(...[
    h("span", { class: "tag", text: c.stage }),
    c.baseline ? h("span", { class: "tag", text: "seed baseline" }) : null,
    c.verified && !c.breakthrough ? h("span", { class: "tag", text: "verified" }) : null,
    c.breakthrough ? h("span", { class: "tag star", text: "★ breakthrough" }) : null].filter(Boolean));
  $("cv-sub").textContent = [c.id, `generation ${c.generation}`, c.number ? `proposal #${c.number}` : null,
    `created ${fmtTime(c.created_at)}`, `updated ${relTime(c.updated_at)}`].filter(Boolean).join(" · ");
  const numbers = [
    ["fitness", fmt(c.explore.fitness)], ["verify fitness", fmt(c.verify.fitness)], ["explore loss", fmt(c.explore.eval_loss)], ["explore bench", fmt(c.explore.benchmark)],
    ["verify loss", fmt(c.verify.eval_loss)], ["verify bench", fmt(c.verify.benchmark)],
    ["device", fmtSeconds(c.device_seconds)], ["tokens", fmtInt(c.tokens_trained)], ["LLM", `$${fmt(c.llm_usd, 3)}`],
  ];
  $("cv-numbers").replaceChildren(...numbers.map(([k, v]) => h("span", { class: "muted" }, `${k} `, h("b", { text: v }))));
  $("cv-motivation").textContent = c.motivation || "—";
  $("cv-status-reason").textContent = c.status_reason ? `status: ${c.status_reason}` : "";

  const rel = $("cv-relatives");
  rel.replaceChildren(
    h("div", {}, h("span", { class: "muted", text: "parents: " }),
      ...(c.parents.length ? c.parents.flatMap((p, i) => [i ? ", " : "", candidateLink(p)]) : ["none"])),
    h("div", {}, h("span", { class: "muted", text: `children (${c.children.length}): ` }),
      ...(c.children.length ? c.children.slice(0, 30).flatMap((p, i) => [i ? ", " : "", candidateLink(p)]) : ["none"]),
      c.children.length > 30 ? ` … and ${c.children.length - 30} more` : ""));

  const tabs = $("cv-code-tabs");
  tabs.onclick = (ev) => { const b = ev.target.closest("button[data-tab]"); if (b) renderCode(b.dataset.tab, c); };
  tabs.querySelector('[data-tab="parent"]').disabled = !c.parent;
  tabs.querySelector('[data-tab="diff"]').disabled = !c.parent;
  renderCode(c.parent ? "diff" : "code", c);

  const curves = $("cv-curves");
  curves.replaceChildren();
  for (const stage of ["explore", "verify"]) {
    const { series, hasOwn } = curveSeries(c, stage);
    if (!hasOwn && stage === "verify") continue;
    const box = h("div", { class: "chart", id: `cv-curve-${stage}`, "data-stage": stage });
    curves.append(h("div", { class: "muted", text: `${stage} loss curve${hasOwn ? "" : " (none recorded for this candidate)"}` }), box);
    lineChart(box, { series, xLabel: "evaluation", yLabel: "eval loss", height: 200 });
  }
  const best = (stage, key) => {
    const values = c.baseline_curves.map((b) => b[`${stage}_${key}`]).filter((v) => v !== null && v !== undefined);
    if (!values.length) return null;
    return key === "eval_loss" ? Math.min(...values) : Math.max(...values);
  };
  $("cv-metrics").replaceChildren(
    h("thead", {}, h("tr", {}, h("th", { text: "" }), h("th", { class: "num", text: "eval loss" }), h("th", { class: "num", text: "benchmark" }),
      h("th", { class: "num", text: "MQAR" }), h("th", { class: "num", text: "best seed loss" }), h("th", { class: "num", text: "best seed bench" }))),
    h("tbody", {}, ...["explore", "verify"].map((stage) => h("tr", {},
      h("td", { text: stage }), h("td", { class: "num", text: fmt(c[stage].eval_loss) }), h("td", { class: "num", text: fmt(c[stage].benchmark) }),
      h("td", { class: "num", text: fmt(c[stage].mqar_accuracy) }), h("td", { class: "num", text: fmt(best(stage, "eval_loss")) }),
      h("td", { class: "num", text: fmt(best(stage, "benchmark")) })))));

  const report = c.check_report || {};
  const results = report.results || [];
  $("cv-check-summary").textContent = results.length
    ? `${results.filter((r) => r.passed).length}/${results.length} checks passed` + (report.seconds ? ` in ${fmt(report.seconds, 1)} s` : "") +
      ((report.sandbox_gaps || []).length ? ` · sandbox gaps: ${report.sandbox_gaps.join(", ")}` : "")
    : "no check report yet";
  document.querySelector("#cv-checks tbody").replaceChildren(...results.map((r) => h("tr", { "data-check": r.check },
    h("td", { text: r.check }), h("td", { class: r.passed ? "pass" : "fail", text: r.passed ? "✓ pass" : "✗ fail" }),
    h("td", { text: r.reason || "" }),
    h("td", { class: "muted", text: Object.entries(r.measurements || {}).map(([k, v]) => `${k}=${typeof v === "number" ? fmt(v, 3) : JSON.stringify(v)}`).join(", ") }),
    h("td", { class: "num", text: fmt(r.seconds, 2) }))));
  $("cv-repairs").textContent = c.repairs.length
    ? `${c.repairs.length} repair attempt(s): ` + c.repairs.map((r) => (r.failures || []).map((f) => f.check).join("+") + (r.fixed ? " (fixed)" : "")).join("; ")
    : "";

  const judge = c.judge || {};
  $("cv-judge").replaceChildren(...["performance", "innovation", "complexity"].filter((k) => judge[k] !== undefined).map((k) =>
    h("div", { class: "score", "data-score": k }, h("span", { class: "muted", text: k }),
      h("div", { class: "bar" }, h("span", { style: `width:${Math.max(0, Math.min(10, judge[k])) * 10}%` })),
      h("span", { class: "num", text: `${judge[k]}/10` }))),
    judge.overall !== undefined ? h("div", { class: "score", "data-score": "overall" }, h("span", { class: "muted", text: "overall" }),
      h("div", { class: "bar" }, h("span", { style: `width:${Math.max(0, Math.min(1, judge.overall)) * 100}%` })),
      h("span", { class: "num", text: fmt(judge.overall, 2) })) : h("div", { class: "muted", text: "not judged yet" }));
  $("cv-judge-rationale").textContent = c.judge_rationale || "";

  const describeParts = (parts) => {
    const terms = Object.entries(parts.terms || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ");
    const missing = Object.entries(parts.missing || {}).map(([k, v]) => `${k}: ${v}`).join("; ");
    return [parts.formula && `formula ${parts.formula}`, terms && `terms: ${terms}`, missing && `missing: ${missing}`]
      .filter(Boolean).join(" — ");
  };
  $("cv-fitness-parts").textContent = ["explore", "verify"]
    .filter((stage) => c[stage].fitness !== null && c[stage].fitness !== undefined)
    .map((stage) => `${stage}: ${describeParts(c[stage].fitness_parts || {}) || fmt(c[stage].fitness)}`)
    .join(" | ") || "no fitness yet";
  // verify: each seed, tested one-sided over the independent training runs (difference, 95 % interval, p);
  // runs PBT made share weights are one sample: "n=2 of 3 runs"
  const sample = (t) => (t.n && t.runs && (t.n[0] !== t.runs[0] || t.n[1] !== t.runs[1]))
    ? `, n=${t.n[0]} of ${t.runs[0]} runs vs ${t.n[1]} of ${t.runs[1]}` : "";
  const interval = (t) => (t.diff === null || t.diff === undefined) ? "—"
    : `${t.diff >= 0 ? "+" : ""}${t.diff.toFixed(4)}` + (t.ci ? ` [${t.ci[0].toFixed(4)}, ${t.ci[1].toFixed(4)}]` : "")
      + (t.p === null || t.p === undefined ? ` (no test: ${t.why_no_test || "?"}${sample(t)})` : ` p=${t.p.toFixed(3)}${sample(t)}`);
  const tests = (c.verify.fitness_parts || {}).tests || {};
  $("cv-tests").replaceChildren(...Object.entries(tests).map(([seed, t]) => h("div", {
    class: t.beats ? "" : "muted",
    text: `vs ${seed}: loss ${interval(t.loss)}; bench ${interval(t.benchmark)} — ${t.beats ? "beats it" : "not significantly better"}`,
  })));
  $("cv-analysis").textContent = c.analysis || "no analysis yet";
  drawTree($("cv-lineage"), lineage, { selected: c.id, labels: true });
  if (lineage.truncated) $("cv-lineage").append(h("div", { class: "muted", text: "descendants truncated to the nearest ones" }));

  view.dataset.id = c.id;
  view.dataset.state = "ready";
  for (const tr of document.querySelectorAll("#candidate-table tbody tr")) tr.classList.toggle("selected", tr.dataset.id === c.id);
  for (const n of document.querySelectorAll("#lineage .node")) n.classList.toggle("selected", n.dataset.id === c.id);
}

async function openCandidate(id) {
  const view = $("candidate-view");
  state.selected = id;
  view.dataset.state = "loading";
  view.dataset.id = id;
  try {
    const [c, lineage] = await Promise.all([
      api(`api/candidates/${encodeURIComponent(id)}`),
      api(`api/candidates/${encodeURIComponent(id)}/lineage`),
    ]);
    if (state.selected !== id) return;  // another candidate was clicked meanwhile
    renderCandidate(c, lineage);
    view.scrollTop = 0;
  } catch (e) {
    view.dataset.state = "error";
    showError(e.message);
  }
}

function closeCandidate() {
  state.selected = null;
  history.replaceState(null, "", location.pathname + location.search);
  const view = $("candidate-view");
  view.dataset.state = "empty";
  view.dataset.id = "";
  $("cv-body").hidden = true;
  $("cv-empty").hidden = false;
  for (const tr of document.querySelectorAll("#candidate-table tbody tr.selected")) tr.classList.remove("selected");
}

function route() {
  const match = location.hash.match(/^#\/c\/(.+)$/);
  if (match) openCandidate(decodeURIComponent(match[1]));
}

// ------------------------------------------------------------------ campaign charts

async function loadFitness() {
  const data = await api("api/fitness");
  const pick = (verified) => data.points.filter((p) => p.verified === verified)
    .map((p) => [p.number, p.fitness, p.id, `#${p.number} ${p.name}: ${fmt(p.fitness)} (${p.status}, ${p.stage})`]);
  const series = [
    ...data.baselines.slice(0, 1).map((b) => ({ kind: "hline", y: b.fitness, color: "#888", label: "seed fitness" })),
    { kind: "points", points: pick(false), color: "#5b8def", r: data.points.length > 2000 ? 1.6 : 3, label: "explore" },
    { kind: "points", points: pick(true), color: "#7e57c2", r: 4, label: "verified" },
    { kind: "step", points: data.points.map((p) => [p.number, p.best]), color: "#e0a100", width: 2.2, label: "best so far",
      extendTo: data.proposals },
  ];
  lineChart($("fitness-chart"), { series, xLabel: "proposal number", yLabel: "fitness", height: 280, onPick: go,
                                  empty: "no scored candidates yet" });
}

async function loadDiscovery() {
  const data = await api("api/discovery");
  const pts = data.points.map((p) => [p.device_hours, p.breakthroughs, p.candidate_id, `${p.name || p.candidate_id}: ${p.breakthroughs} at ${fmt(p.device_hours, 2)} h`]);
  const series = [];
  if (pts.length) {
    series.push({ kind: "step", points: [[0, 0], ...pts], color: "#e0a100", width: 2.4, label: "breakthroughs", extendTo: Math.max(data.device_hours, pts[pts.length - 1][0]) });
    series.push({ kind: "points", points: pts, color: "#e0a100", r: 4 });
  }
  lineChart($("discovery-chart"), { series, xLabel: "device-hours", yLabel: "cumulative breakthroughs", height: 280, onPick: go,
    empty: `no verified candidate yet (${fmt(data.device_hours, 2)} device-hours spent)` });
  const chart = $("discovery-chart");
  chart.dataset.source = data.source;
  chart.dataset.breakthroughs = data.breakthroughs;
}

async function loadLineage() {
  const data = await api("api/lineage", { top: state.lineageTop });
  drawTree($("lineage"), data, { selected: state.selected, labels: data.nodes.length <= 600 });
  $("lineage-info").textContent =
    `${fmtInt(data.shown_candidates)} of ${fmtInt(data.total)} candidates, plus ${fmtInt(data.shown_seeds)} seed(s)`;
  $("legend").replaceChildren(...Object.entries(STATUS_COLORS).map(([st, color]) =>
    h("span", { class: "chip" }, h("span", { class: "dot", style: `background:${color}` }), st)),
    h("span", { class: "chip" }, h("span", { class: "dot", style: `background:${SEED_COLOR};border-radius:0` }), "seed"),
    h("span", { class: "chip" }, h("span", { class: "dot", style: "border:2px solid #e0a100" }), "breakthrough"));
}

async function loadInsights() {
  const q = $("insight-q").value.trim();
  const data = await api("api/insights", { q, k: 10 });
  $("insight-mode").textContent = q ? `${data.items.length} matches (${data.mode} search)` : "newest";
  $("insight-list").replaceChildren(...data.items.map((i) => h("li", { "data-id": i.id },
    h("div", { text: i.design_insight }),
    h("div", { class: "src muted" }, i.kind === "paper" ? `${i.title || i.source}${i.year ? ` (${i.year})` : ""}` : "experiment: ",
      i.kind === "experiment" ? h("a", { href: `#/c/${encodeURIComponent(i.source)}`, text: i.source }) : null,
      i.trigger_patterns.length ? ` · when: ${i.trigger_patterns.join("; ")}` : ""))));
}

// ------------------------------------------------------------------ wiring

async function refresh(full) {
  const sum = await api("api/summary");
  const changed = sum.version !== state.version;
  state.version = sum.version;
  renderSummary(sum);
  if (!changed && !full) return;
  await loadTable();
  const rest = [loadFitness(), loadDiscovery(), loadLineage()];
  if (full) rest.push(loadInsights());
  await Promise.all(rest);
  if (full) {
    performance.mark("asiarch:complete");  // every section drawn
    document.body.dataset.complete = "1";
  }
}

function wire() {
  for (const th of document.querySelectorAll("#candidate-table th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      if (state.sort === key) state.order = state.order === "asc" ? "desc" : "asc";
      else { state.sort = key; state.order = defaultOrder(key); }
      state.offset = 0;
      loadTable().catch((e) => showError(e.message));
    });
  }
  $("page-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); loadTable().catch((e) => showError(e.message)); });
  $("page-next").addEventListener("click", () => { state.offset += state.limit; loadTable().catch((e) => showError(e.message)); });
  $("page-size").addEventListener("change", (ev) => { state.limit = Number(ev.target.value); state.offset = 0; loadTable().catch((e) => showError(e.message)); });
  for (const id of ["filter-status", "filter-stage", "filter-baselines"]) $(id).addEventListener("change", setFilter);
  let timer = null;
  $("filter-q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(setFilter, 250); });
  let itimer = null;
  $("insight-q").addEventListener("input", () => { clearTimeout(itimer); itimer = setTimeout(() => loadInsights().catch((e) => showError(e.message)), 300); });
  $("lineage-top").addEventListener("change", (ev) => { state.lineageTop = Number(ev.target.value); loadLineage().catch((e) => showError(e.message)); });
  $("cv-close").addEventListener("click", closeCandidate);
  $("error").addEventListener("click", clearError);
  window.addEventListener("hashchange", route);
  document.addEventListener("click", (ev) => {  // links to candidates inside the page
    const a = ev.target.closest("a[data-id]");
    if (a) { ev.preventDefault(); go(a.dataset.id); }
  });
  setInterval(() => {
    if (!$("live").checked || document.visibilityState !== "visible") return;
    refresh(false).catch((e) => showError(e.message));
  }, 5000);
}

wire();
refresh(true).catch((e) => showError(e.message));
route();
