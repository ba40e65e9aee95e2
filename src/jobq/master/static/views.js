// jobq dashboard, part two: the throughput chart (SVG with a time axis, legend and window),
// the tasks, worker and workflow-graph views, and the hash router that shows one view at a time.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const STATES = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"];

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}

// A number of seconds or milliseconds as people read it.
function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1) return ms.toFixed(2) + " ms";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60_000) return (ms / 1000).toFixed(ms < 10_000 ? 2 : 1) + " s";
  if (ms < 3_600_000) return (ms / 60_000).toFixed(1) + " min";
  return (ms / 3_600_000).toFixed(1) + " h";
}
const fmtDuration = (s) => (s === null || s === undefined ? "–" : fmtMs(s * 1000));
const fmtRate = (r) => (r === null || r === undefined ? "–" : r < 10 ? r.toFixed(2) : r.toFixed(1));
const fmtPct = (f) => (f === null || f === undefined ? "–" : (f * 100).toFixed(1) + " %");

// -- throughput chart ----------------------------------------------------------------------

const chart = { window: 300 };

async function loadThroughput() {
  const data = await api("/v1/throughput?window_s=" + chart.window);
  state.points = data.points;
  drawChart();
}

// Round steps for an axis: the smallest of these that keeps the ticks apart.
const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800];
function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function drawChart() {
  const box = $("#chart");
  if (!box || box.offsetParent === null) return;
  const w = Math.max(240, box.clientWidth), h = 190;
  const L = 40, R = 10, T = 10, B = 26, pw = w - L - R, ph = h - T - B;
  const pts = state.points;
  // The chosen window, or less while this master has not sampled that long yet (so a young
  // master's few samples are not squeezed against the right edge).
  const end = pts.length ? pts[pts.length - 1].t : Date.now();
  const shown = pts.filter((p) => p.t >= end - chart.window * 1000);
  const span = Math.max(30_000, Math.min(chart.window * 1000, end - (shown[0]?.t ?? end)));
  const start = end - span;
  $("#chart-span").textContent = span < chart.window * 1000 ?
    "the last " + Math.round(span / 1000) + " s (all sampled so far)" : "";
  const max = niceMax(Math.max(1, ...shown.map((p) => Math.max(p.succeeded_per_s, p.failed_per_s))));
  const x = (t) => L + ((t - start) / span) * pw, y = (v) => T + ph - (v / max) * ph;
  const out = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img",
    "aria-label": "finished jobs per second over the last " + chart.window + " s" });
  for (const f of [0, 0.2, 0.4, 0.6, 0.8, 1]) {
    out.append(svg("line", { x1: L, x2: L + pw, y1: y(max * f), y2: y(max * f), class: "grid" }),
      svg("text", { x: L - 4, y: y(max * f) + 4, class: "tick", "text-anchor": "end" },
        +(max * f).toFixed(2)));
  }
  const step = TIME_STEPS.find((s) => (pw / (span / 1000)) * s >= 75) || 3600;
  const first = Math.ceil(start / (step * 1000)) * step * 1000;
  for (let t = first; t <= end; t += step * 1000) {
    const d = new Date(t);
    const label = step < 60 ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit",
      second: "2-digit" }) : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    out.append(svg("line", { x1: x(t), x2: x(t), y1: T, y2: T + ph, class: "grid" }),
      svg("text", { x: x(t), y: h - 8, class: "tick", "text-anchor": "middle" }, label));
  }
  out.append(svg("line", { x1: L, x2: L + pw, y1: T + ph, y2: T + ph, class: "axis" }));
  for (const [key, cls] of [["succeeded_per_s", "succeeded"], ["failed_per_s", "failed"]]) {
    if (!shown.length) break;
    const d = shown.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p[key]).toFixed(1));
    out.append(svg("path", { d: d.join(" "), class: "series series-" + cls }));
  }
  if (!shown.length)
    out.append(svg("text", { x: L + pw / 2, y: T + ph / 2, class: "tick", "text-anchor": "middle" },
      "collecting samples…"));
  box.replaceChildren(out);
  box.dataset.points = String(shown.length);
}

// -- tasks view ----------------------------------------------------------------------------

async function loadTasks() {
  let data;
  try { data = await api("/v1/tasks"); }
  catch (e) {
    const msg = $("#tasks-msg");
    msg.hidden = false;
    msg.textContent = e.missingRoute ? "Per-task figures need a newer master (no /v1/tasks here)."
      : "Could not load the task figures: " + e.message;
    return;
  }
  $("#tasks-msg").hidden = !!data.tasks.length;
  $("#tasks-msg").textContent = "No task has run yet.";
  $("#tasks tbody").replaceChildren(...data.tasks.map((t) => el("tr",
    { dataset: { task: t.task, queue: t.queue } },
    el("td", {}, t.queue), el("td", {}, el("a", { href: "#/", onclick: (e) => {
      e.preventDefault(); openSearch({ task: t.task, queue: t.queue }); } }, t.task)),
    ...[t.runs, t.succeeded, t.failed, t.retried, t.cancelled].map((v) => el("td", { class: "num" }, v)),
    el("td", { class: "num failure-rate" + (t.failure_rate > 0.1 ? " bad" : "") },
      fmtPct(t.failure_rate)),
    el("td", { class: "num" }, fmtRate(t.succeeded_per_s)),
    el("td", { class: "num" }, fmtRate(t.failed_per_s)),
    ...[t.runtime_p50_ms, t.runtime_p95_ms, t.wait_p50_ms, t.wait_p95_ms]
      .map((v) => el("td", { class: "num" }, fmtMs(v))))));
}

function openSearch(filters) {
  location.hash = "#/";
  const form = $("#filters");
  for (const k of FILTER_KEYS) form.elements[k].value = filters[k] || "";
  applyFilters(filters);
}

// -- worker view ---------------------------------------------------------------------------

async function loadWorker(name) {
  $("#worker-name").textContent = name;
  const msg = $("#worker-msg");
  let w;
  try { w = await api("/v1/workers/" + encodeURIComponent(name)); }
  catch (e) {
    msg.hidden = false;
    msg.textContent = e.missingRoute ? "A worker's history needs a newer master (no " +
      "/v1/workers/{name} here)." : e.status === 404 ? "No worker named " + name +
      " (it stopped more than 15 minutes ago, or never ran)." : "Could not load: " + e.message;
    $("#worker-facts").replaceChildren();
    $("#worker-current").replaceChildren();
    $("#worker-recent tbody").replaceChildren();
    return;
  }
  msg.hidden = true;
  const info = w.info || {};
  const facts = [
    ["status", el("span", { class: w.alive ? "state state-succeeded" : "state state-cancelled" },
      w.alive ? "alive" : "gone")],
    ["last heartbeat", fmtAgo(w.seen_ago_s)],
    ["started", w.started ? new Date(w.started).toLocaleString() : null],
    ["uptime", fmtDuration(w.uptime_s)],
    ["jobs done", w.succeeded ?? info.processed],
    ["failures", w.failed],
    ["slots", w.concurrency !== null && w.concurrency !== undefined ?
      (w.busy ?? "?") + " busy · " + (w.free ?? "?") + " free of " + w.concurrency : null],
    ["queues", info.queues], ["pool", info.pool], ["host", info.host], ["pid", info.pid],
  ];
  $("#worker-facts").replaceChildren(...facts.filter(([, v]) => v !== null && v !== undefined &&
    v !== "").flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { fact: k } }, v)]));
  $("#worker-current").replaceChildren(...(w.jobs.length ? w.jobs.map((id) => jobLink(id))
    : [el("span", { class: "muted" }, "idle")]));
  const recent = w.recent || [];
  $("#worker-recent tbody").replaceChildren(...(recent.length ? recent.map((j) => el("tr",
    { class: "clickable", dataset: { job: j.id }, onclick: () => showJob(j.id) },
    el("td", {}, el("code", {}, j.id)), el("td", {}, j.task), el("td", {}, j.queue),
    stateCell(j.state), el("td", { class: "num" }, j.attempt + "/" + j.max_attempts),
    el("td", { title: j.started || "" }, fmtTime(j.started)),
    el("td", { title: j.finished || "" }, fmtTime(j.finished))))
    : [el("tr", {}, el("td", { colspan: "7", class: "muted" }, "no recent jobs"))]));
}

// -- workflow graph: layers by longest path from a root, ordered by their parents -----------

function layout(nodes, edges) {
  const parents = new Map(nodes.map((n) => [n.id, []]));
  const children = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) {
    if (!parents.has(e.to) || !parents.has(e.from)) continue;
    parents.get(e.to).push(e.from); children.get(e.from).push(e.to);
  }
  // Kahn's order; the layer of a node is one more than its deepest parent's.
  const layer = new Map(), indeg = new Map(nodes.map((n) => [n.id, parents.get(n.id).length]));
  const queue = nodes.filter((n) => !indeg.get(n.id)).map((n) => n.id);
  for (const id of queue) layer.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const c of children.get(id)) {
      layer.set(c, Math.max(layer.get(c) ?? 0, layer.get(id) + 1));
      indeg.set(c, indeg.get(c) - 1);
      if (!indeg.get(c)) queue.push(c);
    }
  }
  for (const n of nodes) if (!layer.has(n.id)) layer.set(n.id, 0);  // (a cycle: never expected)
  const layers = [];
  for (const n of nodes) (layers[layer.get(n.id)] ||= []).push(n.id);
  const pos = new Map();
  layers.forEach((ids) => ids.forEach((id, i) => pos.set(id, i)));
  // Two sweeps down: each layer sorted by the mean position of its parents (fewer crossings).
  for (let sweep = 0; sweep < 2; sweep++) {
    for (let l = 1; l < layers.length; l++) {
      const bary = (id) => {
        const ps = parents.get(id);
        return ps.length ? ps.reduce((s, p) => s + pos.get(p), 0) / ps.length : pos.get(id);
      };
      layers[l].sort((a, b) => bary(a) - bary(b));
      layers[l].forEach((id, i) => pos.set(id, i));
    }
  }
  return { layers, pos, layer };
}

async function loadGraph(id) {
  $("#graph-of").textContent = id;
  const msg = $("#graph-msg");
  let g;
  try { g = await api("/v1/jobs/" + encodeURIComponent(id) + "/graph"); }
  catch (e) {
    msg.hidden = false;
    msg.textContent = e.missingRoute ? "Workflow graphs need a newer master (no " +
      "/v1/jobs/{id}/graph here)." : "Could not load the graph: " + e.message;
    $("#graph").replaceChildren();
    return;
  }
  msg.hidden = !g.truncated;
  msg.textContent = "Only the first " + g.nodes.length + " jobs of this workflow are drawn.";
  $("#graph-info").textContent = g.nodes.length + " job(s) · " + g.edges.length + " edge(s)";
  $("#graph-legend").replaceChildren(...STATES.map((s) => el("span", { class: "key node-" + s }, s)));
  const { layers, pos, layer } = layout(g.nodes, g.edges);
  const NW = 196, NH = 46, GX = 64, GY = 18, PAD = 12;
  const tallest = Math.max(...layers.map((l) => l.length));
  const width = PAD * 2 + layers.length * NW + (layers.length - 1) * GX;
  const height = PAD * 2 + tallest * NH + (tallest - 1) * GY;
  // Each layer centred vertically; layers run left to right (parents left of children).
  const at = (nid) => {
    const l = layer.get(nid), n = layers[l].length;
    const top = PAD + ((tallest - n) * (NH + GY)) / 2;
    return { x: PAD + l * (NW + GX), y: top + pos.get(nid) * (NH + GY) };
  };
  const out = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "graph" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  for (const e of g.edges) {
    if (!byId.has(e.from) || !byId.has(e.to)) continue;
    const a = at(e.from), b = at(e.to);
    const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
    out.append(svg("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
      class: "edge", "data-from": e.from, "data-to": e.to, "marker-end": "url(#arrow)" }));
  }
  for (const n of g.nodes) {
    const p = at(n.id);
    const task = n.task || "(expired)", st = n.state || "expired";  // an expired job: id only
    const short = n.id.length > 16 ? n.id.slice(0, 7) + "…" + n.id.slice(-7) : n.id;
    const node = svg("g", { class: "node node-" + st + (n.id === id ? " current" : ""),
      transform: `translate(${p.x} ${p.y})`, "data-job": n.id, "data-state": st,
      tabindex: "0", role: "button", onclick: () => showJob(n.id),
      onkeydown: (ev) => { if (ev.key === "Enter") showJob(n.id); } },
      svg("title", {}, n.id + " · " + task + " · " + st + (n.queue ? " · queue " + n.queue : "")),
      svg("rect", { width: NW, height: NH, rx: "6" }),
      svg("text", { x: 8, y: 18, class: "task" }, task.length > 24 ? task.slice(0, 23) + "…" : task),
      svg("text", { x: 8, y: 36, class: "id" }, short + " · " + st));
    out.append(node);
  }
  $("#graph").replaceChildren(out);
}

// -- router: #/ overview, #/tasks, #/worker/NAME, #/graph/ID, #/job/ID ----------------------

const VIEWS = ["overview", "tasks", "worker", "graph"];
const route = { view: "overview", arg: null };

function parseHash() {
  const [, view, ...rest] = (location.hash || "#/").slice(1).split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  if (view === "job") return { view: "overview", arg: null, job: arg };
  return { view: VIEWS.includes(view) ? view : "overview", arg };
}

function showRoute() {
  const r = parseHash();
  Object.assign(route, r);
  for (const v of VIEWS) $("#view-" + v).hidden = v !== r.view;
  for (const a of document.querySelectorAll("nav a"))
    a.classList.toggle("active", a.dataset.view === r.view);
  if (r.job) showJob(r.job);
  loadView().catch(() => {});
  if (r.view === "overview") drawChart();
}

async function loadView() {
  if (route.view === "tasks") return loadTasks();
  if (route.view === "worker" && route.arg) return loadWorker(route.arg);
  if (route.view === "graph" && route.arg) return loadGraph(route.arg);
}

// Live events: a shown graph or worker page follows its jobs' transitions (coalesced).
let viewTimer = null;
function onViewEvent() {
  if (route.view === "overview" || viewTimer) return;
  viewTimer = setTimeout(() => { viewTimer = null; loadView().catch(() => {}); }, 700);
}

function refreshAll() {
  loadHealth();
  for (const f of [loadQueues, loadWorkers, loadJobs, loadThroughput, loadPeriodic])
    f().catch(() => {});
  loadView().catch(() => {});
}

$("#chart-window").addEventListener("change", (e) => {
  chart.window = Number(e.target.value);
  loadThroughput().catch(() => {});
});
window.addEventListener("resize", drawChart);
window.addEventListener("hashchange", showRoute);
window.addEventListener("DOMContentLoaded", () => {
  showRoute();
  refreshAll();
  startEvents();
  setInterval(() => {
    loadThroughput().catch(() => {}); loadWorkers().catch(() => {}); loadHealth();
  }, 2000);
  setInterval(() => {
    loadPeriodic().catch(() => {});
    if (route.view === "tasks" || route.view === "worker") loadView().catch(() => {});
  }, 5000);
});
