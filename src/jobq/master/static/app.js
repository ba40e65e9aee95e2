// jobq dashboard: a plain-JS client of the same JSON API everyone else uses.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "jobq.token";
const ACTIVE = new Set(["scheduled", "queued", "running"]);
const state = { filters: {}, cursors: [null], page: 0, next: null, detail: null, points: [] };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}

function headers() {
  const t = localStorage.getItem(TOKEN_KEY);
  const h = { "Content-Type": "application/json" };
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: headers() });
  if (res.status === 401 || res.status === 403) {
    askToken(res.status === 403 ? "That token was refused." : "This master needs a token.");
    throw new Error("unauthorised");
  }
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error((body && body.error) || res.statusText);
  return body;
}

function askToken(why) {
  const t = prompt((why ? why + " " : "") + "Bearer token:", localStorage.getItem(TOKEN_KEY) || "");
  if (t !== null) { localStorage.setItem(TOKEN_KEY, t.trim()); refreshAll(); startEvents(); }
}

const fmtTime = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const stateCell = (s) => el("td", { class: "state state-" + s }, s);

// -- queues, workers, health ---------------------------------------------------------------

async function loadQueues() {
  const data = await api("/v1/queues");
  const body = $("#queues tbody");
  body.replaceChildren(...data.queues.map((q) => el("tr", { dataset: { queue: q.name } },
    el("td", {}, q.name),
    ...["queued", "scheduled", "running", "succeeded", "failed", "cancelled", "retried"]
      .map((k) => el("td", { class: "num" }, q[k])),
    el("td", { class: "num" }, (q.succeeded_per_s + q.failed_per_s).toFixed(1)),
    el("td", {}, el("button", { type: "button", class: "purge", title: "Cancel every queued job",
      onclick: () => purgeQueue(q.name, q.queued) }, "Purge")))));
  $("#dead-count").textContent = data.dead_lettered + " dead-lettered" +
    (data.next_cursor ? " · first " + data.queues.length + " queues shown" : "");
}

async function purgeQueue(name, depth) {
  if (!confirm("Cancel all " + depth + " queued job(s) of queue '" + name + "'?")) return;
  try {
    const r = await api("/v1/queues/" + encodeURIComponent(name) + "/purge", { method: "POST" });
    $("#notice").textContent = r.cancelled + " job(s) of " + r.queue + " cancelled";
  } catch (e) { alert("purge failed: " + e.message); }
  refreshAll();
}

async function loadPeriodic() {
  const data = await api("/v1/periodic");
  $("#periodic tbody").replaceChildren(...data.periodic.map((p) => el("tr",
    { dataset: { periodic: p.name } },
    el("td", {}, p.name), el("td", {}, p.task),
    el("td", {}, el("code", {}, p.cron || "every " + p.every + " s")), el("td", {}, p.queue),
    el("td", {}, p.next_run ? new Date(p.next_run).toLocaleString() : ""),
    el("td", {}, el("button", { type: "button", class: "remove", onclick: async () => {
      if (!confirm("Remove periodic job '" + p.name + "'?")) return;
      try { await api("/v1/periodic/" + encodeURIComponent(p.name), { method: "DELETE" }); }
      catch (e) { alert(e.message); }
      loadPeriodic().catch(() => {});
    } }, "Remove")))));
  $("#periodic-card").hidden = !data.periodic.length;
}

// "4 s ago", "3 min ago": a dead worker's heartbeat visibly ages.
function fmtAgo(s) {
  if (s === undefined || s === null) return "";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

async function loadWorkers() {
  const data = await api("/v1/workers");
  $("#workers tbody").replaceChildren(...data.workers.map((w) => el("tr", {},
    el("td", {}, w.name),
    el("td", { class: w.alive ? "state state-succeeded" : "state state-cancelled" },
      w.alive ? "alive" : "gone"),
    el("td", { title: w.last_seen || "" }, fmtAgo(w.seen_ago_s)),
    el("td", {}, w.info.queues || ""),
    el("td", {}, (w.info.pool || "") + " ×" + (w.info.concurrency || "?")),
    el("td", { class: "num" }, w.info.processed || "0"),
    el("td", {}, ...w.jobs.slice(0, 5).map((id) => el("a", { href: "#", onclick: (e) => {
      e.preventDefault(); showJob(id); } }, id, " "))))));
}

async function loadHealth() {
  const pill = $("#health");
  try {
    const res = await fetch("/healthz");
    const h = await res.json();
    pill.textContent = h.broker === "ok" ? "broker ok · leader " + (h.leader || "none") : "broker down";
    pill.className = "pill " + (h.broker === "ok" ? "ok" : "bad");
  } catch (e) { pill.textContent = "master unreachable"; pill.className = "pill bad"; }
}

// -- throughput chart (canvas) -------------------------------------------------------------

async function loadThroughput() {
  const data = await api("/v1/throughput");
  state.points = data.points;
  drawChart();
}

function drawChart() {
  const cv = $("#chart"), ctx = cv.getContext("2d");
  const w = (cv.width = cv.clientWidth || 640), h = (cv.height = 160);
  ctx.clearRect(0, 0, w, h);
  const pts = state.points.slice(-150);
  const max = Math.max(1, ...pts.map((p) => p.succeeded_per_s + p.failed_per_s));
  ctx.strokeStyle = "#e3e6ec"; ctx.fillStyle = "#6b7385"; ctx.font = "11px sans-serif";
  for (const f of [0, 0.5, 1]) {
    const y = h - 16 - f * (h - 30);
    ctx.beginPath(); ctx.moveTo(36, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText((max * f).toFixed(max < 10 ? 1 : 0), 2, y + 4);
  }
  const line = (key, color) => {
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    pts.forEach((p, i) => {
      const x = 36 + (i / Math.max(1, pts.length - 1)) * (w - 40);
      const y = h - 16 - (p[key] / max) * (h - 30);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  };
  line("succeeded_per_s", "#1f9d55");
  line("failed_per_s", "#d64545");
  if (!pts.length) ctx.fillText("collecting samples…", w / 2 - 50, h / 2);
}

// -- jobs list -----------------------------------------------------------------------------

function jobsUrl() {
  const q = new URLSearchParams({ limit: "25" });
  for (const [k, v] of Object.entries(state.filters)) if (v) q.set(k, v);
  const c = state.cursors[state.page];
  if (c) q.set("cursor", c);
  return "/v1/jobs?" + q;
}

function actionButtons(job) {
  const out = [];
  if (ACTIVE.has(job.state))
    out.push(el("button", { type: "button", class: "cancel", dataset: { job: job.id },
      onclick: (e) => { e.stopPropagation(); act(job.id, "cancel"); } }, "Cancel"));
  if (job.state === "failed")
    out.push(el("button", { type: "button", class: "retry", dataset: { job: job.id },
      onclick: (e) => { e.stopPropagation(); act(job.id, "retry"); } }, "Retry"));
  return out;
}

function jobRow(job) {
  return el("tr", { class: "clickable", dataset: { job: job.id }, onclick: () => showJob(job.id) },
    el("td", {}, el("code", {}, job.id)), el("td", {}, job.task), el("td", {}, job.queue),
    stateCell(job.state), el("td", { class: "num" }, job.attempt + "/" + job.max_attempts),
    el("td", {}, fmtTime(job.created)), el("td", {}, fmtTime(job.finished)),
    el("td", { class: "actions" }, ...actionButtons(job)));
}

async function loadJobs() {
  const data = await api(jobsUrl());
  $("#jobs tbody").replaceChildren(...data.jobs.map(jobRow));
  state.next = data.next_cursor;
  $("#next").disabled = !state.next;
  $("#page-info").textContent = "page " + (state.page + 1) + (data.jobs.length ? "" : " (empty)");
}

async function act(id, action) {
  try {
    await api("/v1/jobs/" + encodeURIComponent(id) + "/" + action, { method: "POST" });
  } catch (e) { alert(action + " failed: " + e.message); }
  refreshJob(id);
}

async function refreshJob(id) {
  let job;
  try { job = await api("/v1/jobs/" + encodeURIComponent(id)); } catch (e) { return; }
  const row = document.querySelector(`#jobs tr[data-job="${CSS.escape(id)}"]`);
  if (row) row.replaceWith(jobRow(job));
  if (state.detail === id) renderDetail(job);
}

// -- job detail ----------------------------------------------------------------------------

async function showJob(id) {
  state.detail = id;
  try { renderDetail(await api("/v1/jobs/" + encodeURIComponent(id))); } catch (e) { alert(e.message); }
}

function renderDetail(job) {
  $("#detail-card").hidden = false;
  $("#detail-id").textContent = job.id;
  $("#detail-actions").replaceChildren(...actionButtons(job));
  const pre = (v) => el("pre", {}, typeof v === "string" ? v : JSON.stringify(v, null, 2));
  const rows = [
    ["task", job.task], ["queue", job.queue], ["state", job.state], ["priority", job.priority],
    ["progress", progressView(job)],
    ["dependencies", dependencyView(job)], ["unique key", job.unique_key],
    ["attempts", job.attempt + " of " + job.max_attempts], ["worker", job.worker],
    ["created", job.created], ["eta", job.eta], ["claimed", job.claimed],
    ["started", job.started],
    ["finished", job.finished], ["timeout", job.timeout && job.timeout + " s"],
    ["args", pre(job.args ?? job.payload)], ["kwargs", pre(job.kwargs)],
  ];
  if (job.result !== null && job.result !== undefined) rows.push(["result", pre(job.result)]);
  if (job.error) {
    rows.push(["error", (job.error.type || "") + ": " + (job.error.message || "")]);
    if (job.error.traceback) rows.push(["traceback", pre(job.error.traceback)]);
  }
  $("#detail").replaceChildren(...rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function progressView(job) {
  if (job.progress === null || job.progress === undefined) return null;
  const pct = Math.round(job.progress * 100);
  return el("span", { id: "detail-progress" },
    el("progress", { max: "100", value: String(pct) }), " " + pct + "%",
    job.progress_message ? " · " + job.progress_message : "");
}

function dependencyView(job) {
  if (!job.parents || !job.parents.length) return null;
  const shown = job.dependencies.map((d) => el("li", { dataset: { parent: d.id } },
    el("a", { href: "#", onclick: (e) => { e.preventDefault(); showJob(d.id); } },
      el("code", {}, d.id)), " ", el("span", { class: "state state-" + d.state }, d.state || "expired")));
  const more = job.parents.length - job.dependencies.length;
  if (more > 0) shown.push(el("li", {}, "… and " + more + " more"));
  return el("ul", { id: "detail-deps", class: "deps" }, ...shown);
}

// -- live updates (SSE over fetch, so the bearer header works; resumes from the last id) ----

let lastEventId = null, eventsAbort = null, reloadTimer = null, queuesTimer = null;

function onEvent(ev) {
  const row = document.querySelector(`#jobs tr[data-job="${CSS.escape(ev.job)}"]`);
  if (row) refreshJob(ev.job);
  else if (state.page === 0 && !reloadTimer)
    reloadTimer = setTimeout(() => { reloadTimer = null; loadJobs().catch(() => {}); }, 500);
  if (state.detail === ev.job && !row) refreshJob(ev.job);
  if (!queuesTimer)
    queuesTimer = setTimeout(() => { queuesTimer = null; loadQueues().catch(() => {}); }, 1000);
}

async function startEvents() {
  if (eventsAbort) eventsAbort.abort();
  eventsAbort = new AbortController();
  const live = $("#live");
  for (;;) {
    try {
      const h = headers();
      if (lastEventId) h["Last-Event-ID"] = lastEventId;
      const res = await fetch("/v1/events", { headers: h, signal: eventsAbort.signal });
      if (!res.ok) throw new Error("events: " + res.status);
      live.textContent = "live: on"; live.className = "pill ok";
      const reader = res.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, i); buf = buf.slice(i + 2);
          let id = null, data = null;
          for (const line of frame.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("data: ")) data = line.slice(6);
          }
          if (id) lastEventId = id;
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (e) {
      if (eventsAbort.signal.aborted) return;
    }
    live.textContent = "live: reconnecting"; live.className = "pill bad";
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// -- wiring --------------------------------------------------------------------------------

function refreshAll() {
  loadHealth();
  for (const f of [loadQueues, loadWorkers, loadJobs, loadThroughput, loadPeriodic])
    f().catch(() => {});
}

$("#filters").addEventListener("submit", (e) => {
  e.preventDefault();
  state.filters = Object.fromEntries(new FormData(e.target));
  state.cursors = [null]; state.page = 0;
  loadJobs().catch((err) => alert(err.message));
});
$("#next").addEventListener("click", () => {
  if (!state.next) return;
  state.cursors[state.page + 1] = state.next; state.page += 1; loadJobs().catch(() => {});
});
$("#first").addEventListener("click", () => { state.page = 0; loadJobs().catch(() => {}); });
$("#detail-close").addEventListener("click", () => { $("#detail-card").hidden = true; state.detail = null; });
$("#token-btn").addEventListener("click", () => askToken(""));
$("#rerun-dead").addEventListener("click", async () => {
  if (!confirm("Queue every dead-lettered job (up to 100) again?")) return;
  try {
    const r = await api("/v1/dead/rerun", { method: "POST", body: "{}" });
    alert(r.rerun.length + " job(s) queued again");
  } catch (e) { alert(e.message); }
  refreshAll();
});
window.addEventListener("resize", drawChart);

refreshAll();
startEvents();
setInterval(() => { loadThroughput().catch(() => {}); loadWorkers().catch(() => {}); loadHealth(); }, 2000);
setInterval(() => { loadPeriodic().catch(() => {}); }, 10000);
