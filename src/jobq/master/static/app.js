// jobq dashboard: a plain-JS client of the same JSON API everyone else uses. This file holds
// the shared helpers, the overview (queues, workers, jobs with search and bulk actions) and a
// job's detail; views.js the chart, tasks, worker and workflow-graph views and the router.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "jobq.token";
const ACTIVE = new Set(["scheduled", "queued", "running"]);
const FILTER_KEYS = ["q", "state", "queue", "task", "worker"];
const state = { filters: {}, cursors: [null], page: 0, next: null, detail: null, points: [] };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
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

// An API error keeps its HTTP status and body, so a view can tell "no such worker" (a route's
// own 404 says what is missing) from "this master has no such route" (a bare "Not Found", or
// 405 when the path matches another route's pattern): a master older than this page.
class ApiError extends Error {
  constructor(status, body, text) {
    const said = body && (body.error || body.detail);
    super(said || text || "HTTP " + status);
    this.status = status; this.body = body;
    this.missingRoute = status === 405 || (status === 404 && (!said || said === "Not Found"));
  }
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: headers() });
  if (res.status === 401 || res.status === 403) {
    askToken(res.status === 403 ? "That token was refused." : "This master needs a token.");
    throw new ApiError(res.status, null, "unauthorised");
  }
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new ApiError(res.status, body, res.statusText);
  return body;
}

const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body ?? {}) });

function askToken(why) {
  const t = prompt((why ? why + " " : "") + "Bearer token:", localStorage.getItem(TOKEN_KEY) || "");
  if (t !== null) { localStorage.setItem(TOKEN_KEY, t.trim()); refreshAll(); startEvents(); }
}

const fmtTime = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const stateCell = (s) => el("td", { class: "state state-" + s }, s);
const jobLink = (id, label) => el("a", { href: "#/job/" + encodeURIComponent(id), class: "jobid",
  dataset: { job: id }, onclick: (e) => { e.preventDefault(); e.stopPropagation(); showJob(id); } },
  el("code", {}, label || id));
const workerLink = (name) => el("a", { href: "#/worker/" + encodeURIComponent(name),
  class: "worker", onclick: (e) => e.stopPropagation() }, name);

// A message in the page (never alert()): replaces what the same spot said before.
function say(sel, text, bad) {
  const n = $(sel);
  n.textContent = text;
  n.classList.toggle("bad", !!bad);
}

// Each cell of a table that reflows at phone width carries its column's name (style.css shows
// it before the value there); rows are rendered in many places, so one observer labels them.
function labelCells() {
  for (const td of document.querySelectorAll("table.reflow td:not([data-label])")) {
    const th = td.closest("table").tHead?.rows[0]?.cells[td.cellIndex];
    td.dataset.label = th ? th.textContent : "";
  }
}
new MutationObserver(labelCells).observe(document.body, { childList: true, subtree: true });

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
    say("#notice", r.cancelled + " job(s) of " + r.queue + " cancelled");
  } catch (e) { say("#notice", "purge of " + name + " failed: " + e.message, true); }
  refreshAll();
}

async function rerunDead() {
  if (!confirm("Queue every dead-lettered job (up to 100) again?")) return;
  say("#notice", "re-running…");  // the last purge's message is stale from here on
  try {
    const r = await post("/v1/dead/rerun", {});
    say("#notice", r.rerun.length + " dead-lettered job(s) queued again");
  } catch (e) { say("#notice", "re-run failed: " + e.message, true); }
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
      catch (e) { say("#notice", "remove failed: " + e.message, true); }
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

// Each current job its own link (ids used to run together in one cell).
const jobChips = (ids, max) => {
  if (!ids.length) return "";
  const shown = ids.slice(0, max).map((id) => jobLink(id));
  if (ids.length > max) shown.push(el("span", { class: "more" }, "+" + (ids.length - max)));
  return el("span", { class: "chips" }, ...shown);
};

async function loadWorkers() {
  const data = await api("/v1/workers");
  $("#workers tbody").replaceChildren(...data.workers.map((w) => el("tr",
    { dataset: { worker: w.name } },
    el("td", {}, workerLink(w.name)),
    el("td", { class: w.alive ? "state state-succeeded" : "state state-cancelled" },
      w.alive ? "alive" : "gone"),
    el("td", { title: w.last_seen || "" }, fmtAgo(w.seen_ago_s)),
    el("td", {}, w.info.queues || ""),
    el("td", {}, (w.info.pool || "") + " ×" + (w.info.concurrency || "?")),
    el("td", { class: "num" }, w.info.processed || "0"),
    el("td", { class: "current" }, jobChips(w.jobs, 5)))));
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

// -- jobs list: search and filters ---------------------------------------------------------

function activeFilters() {
  const f = {};
  for (const k of FILTER_KEYS) if (state.filters[k]) f[k] = state.filters[k];
  return f;
}

function jobsUrl() {
  const q = new URLSearchParams({ limit: "25", ...activeFilters() });
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
    el("td", {}, job.worker ? workerLink(job.worker) : ""),
    el("td", { title: job.created || "" }, fmtTime(job.created)),
    el("td", { title: job.finished || "" }, fmtTime(job.finished)),
    el("td", { class: "actions" }, ...actionButtons(job)));
}

async function loadJobs() {
  const f = activeFilters();
  const data = await api(jobsUrl());
  $("#jobs tbody").replaceChildren(...data.jobs.map(jobRow));
  state.next = data.next_cursor;
  $("#next").disabled = !state.next;
  const searched = Object.keys(f).length > 0;
  // An older master ignores q= and worker= (its pages carry no "scanned"): say so.
  const unsupported = (f.q || f.worker) && data.scanned === undefined;
  let info = "page " + (state.page + 1) + (data.jobs.length ? "" : " (empty)");
  if (searched && data.scanned !== undefined) info += " · " + data.scanned + " scanned";
  if (data.truncated) info += " · scan bound reached: narrow the search for older jobs";
  if (unsupported) info += " · this master cannot search by text or worker";
  say("#page-info", info, !!unsupported);
  $("#jobs-order").textContent = f.state ? "in state " + f.state : "newest first";
}

function applyFilters(filters) {
  state.filters = filters;
  state.cursors = [null]; state.page = 0;
  say("#bulk-result", "");
  loadJobs().catch((err) => say("#page-info", "search failed: " + err.message, true));
}

async function act(id, action) {
  try { await post("/v1/jobs/" + encodeURIComponent(id) + "/" + action); }
  catch (e) { say("#bulk-result", action + " of " + id + " failed: " + e.message, true); }
  refreshJob(id);
}

async function refreshJob(id) {
  let job;
  try { job = await api("/v1/jobs/" + encodeURIComponent(id)); } catch (e) { return; }
  const row = document.querySelector(`#jobs tr[data-job="${CSS.escape(id)}"]`);
  if (row) row.replaceWith(jobRow(job));
  if (state.detail === id) renderDetail(job);
}

// -- bulk actions: a dry run counts, the user confirms that count, the POST expects it -------

const VERB = { retry: "Retry", cancel: "Cancel", delete: "Delete" };

function describe(filter) {
  const parts = Object.entries(filter).map(([k, v]) => k + (k === "q" ? " ~ " : " = ") + v);
  return parts.length ? parts.join(", ") : "every job (no filter)";
}

function ask(text, note, okLabel) {
  return new Promise((resolve) => {
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = okLabel || "Confirm";
    $("#confirm-note").textContent = note || "";
    $("#confirm").hidden = false;
    const done = (ok) => {
      $("#confirm").hidden = true;
      $("#confirm-ok").onclick = $("#confirm-cancel").onclick = null;
      resolve(ok);
    };
    $("#confirm-ok").onclick = () => done(true);
    $("#confirm-cancel").onclick = () => done(false);
    $("#confirm-ok").focus();
  });
}

async function bulk(action) {
  const filter = activeFilters();
  const body = { action, filter };
  let note = "";
  try {
    for (;;) {
      const dry = await post("/v1/jobs/bulk", { ...body, dry_run: true });
      if (!dry.matched) { say("#bulk-result", "no job matches " + describe(filter)); return; }
      const ok = await ask(VERB[action] + " " + (dry.truncated ? "at least " : "") + dry.matched +
        " job(s) matching " + describe(filter) + "?", note, VERB[action] + " " + dry.matched);
      if (!ok) { say("#bulk-result", VERB[action] + " not done"); return; }
      try {
        const r = await post("/v1/jobs/bulk", { ...body, expect: dry.matched });
        const skipped = r.skipped.length ? " · " + r.skipped.length + " skipped (" +
          r.skipped.slice(0, 3).map((s) => s.id + ": " + s.reason).join("; ") + ")" : "";
        say("#bulk-result", VERB[action] + ": " + r.done + " of " + r.matched + " done" + skipped);
        break;
      } catch (e) {
        if (e.status !== 409) throw e;
        // The set changed between the count and the click: count again, ask again.
        const now = e.body && e.body.matched !== undefined ? e.body.matched + " now" : "";
        note = "The count changed since you looked (" + dry.matched + " then" +
          (now ? ", " + now : "") + "): confirm the new count.";
        say("#bulk-result", "count changed; asking again", true);
      }
    }
  } catch (e) {
    say("#bulk-result", e.missingRoute ? "bulk actions need a newer master (no /v1/jobs/bulk)"
      : VERB[action] + " failed: " + e.message, true);
  }
  loadJobs().catch(() => {});
  loadQueues().catch(() => {});
}

// -- job detail ----------------------------------------------------------------------------

async function showJob(id) {
  state.detail = id;
  try { renderDetail(await api("/v1/jobs/" + encodeURIComponent(id))); }
  catch (e) {
    $("#detail-card").hidden = false;
    $("#detail-id").textContent = id;
    $("#detail-actions").replaceChildren();
    $("#detail").replaceChildren(el("dt", {}, "error"), el("dd", { class: "bad" }, e.message));
  }
  $("#detail-card").scrollIntoView({ block: "nearest" });
}

function renderDetail(job) {
  $("#detail-card").hidden = false;
  $("#detail-id").textContent = job.id;
  $("#detail-actions").replaceChildren(...actionButtons(job),
    el("a", { href: "#/graph/" + encodeURIComponent(job.id), class: "button graph-link" },
      "Workflow graph"));
  const pre = (v) => el("pre", {}, typeof v === "string" ? v : JSON.stringify(v, null, 2));
  const rows = [
    ["task", job.task], ["queue", job.queue],
    ["state", el("span", { class: "state state-" + job.state }, job.state)],
    ["priority", job.priority],
    ["progress", progressView(job)],
    ["dependencies", dependencyView(job)], ["received", receivedView(job)],
    ["unique key", job.unique_key],
    ["attempts", job.attempt + " of " + job.max_attempts],
    ["worker", job.worker ? workerLink(job.worker) : null],
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
    jobLink(d.id), " ", el("span", { class: "state state-" + d.state }, d.state || "expired")));
  const more = job.parents.length - job.dependencies.length;
  if (more > 0) shown.push(el("li", {}, "… and " + more + " more"));
  return el("ul", { id: "detail-deps", class: "deps" }, ...shown);
}

// What the job was handed (pass_results): each parent's result, not the original args.
function receivedView(job) {
  if (!job.received) return null;
  if (!job.received.length) return el("span", { id: "detail-received" }, "nothing yet");
  return el("ul", { id: "detail-received", class: "deps" }, ...job.received.map((r) =>
    el("li", { dataset: { parent: r.parent } }, jobLink(r.parent), " ",
      el("span", { class: "state state-" + r.state }, r.state || "expired"), " → ",
      el("code", { class: "value" }, JSON.stringify(r.result)))));
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
  if (typeof onViewEvent === "function") onViewEvent(ev);
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

// -- wiring of the overview ----------------------------------------------------------------

$("#filters").addEventListener("submit", (e) => {
  e.preventDefault();
  applyFilters(Object.fromEntries(new FormData(e.target)));
});
$("#filters").addEventListener("reset", () => setTimeout(() => applyFilters({}), 0));
$("#next").addEventListener("click", () => {
  if (!state.next) return;
  state.cursors[state.page + 1] = state.next; state.page += 1; loadJobs().catch(() => {});
});
$("#first").addEventListener("click", () => { state.page = 0; loadJobs().catch(() => {}); });
$("#detail-close").addEventListener("click", () => { $("#detail-card").hidden = true; state.detail = null; });
$("#token-btn").addEventListener("click", () => askToken(""));
$("#rerun-dead").addEventListener("click", rerunDead);
for (const b of document.querySelectorAll("button.bulk"))
  b.addEventListener("click", () => bulk(b.dataset.action));
