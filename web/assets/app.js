// labctl's browser UI: one page, routes in the URL's fragment (#/lab,
// #/jobs, #/job/ID, #/console/NODE, #/device/NODE). Everything it shows
// comes from the daemon's API (/api/v1), with the session cookie; every
// request that changes something carries the session's CSRF token. The
// API decides what the role may do; the pages only hide what it would
// refuse.
"use strict";

const ROLES = ["viewer", "submitter", "operator", "admin"];
// live: the lab's event stream said hello and has not failed since.
const state = { session: null, listeners: new Set(), cleanup: null, live: false };

function can(role) {
  return state.session && ROLES.indexOf(state.session.role) >= ROLES.indexOf(role);
}

// api calls the daemon's API and returns the decoded JSON (or the
// Response for raw=true). An error carries the daemon's message.
async function api(method, path, body, raw) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") {
    opts.headers["X-Labctl-Csrf"] = state.session.csrf;
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("not logged in");
  }
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return raw ? r : r.json();
}

// el builds an element: attributes (on* are listeners), then children
// (strings become text: nothing from the lab is ever parsed as HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function fmtDur(ms) {
  if (ms < 0 || !isFinite(ms)) return "";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m" + String(s % 60).padStart(2, "0") + "s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h" + String(m % 60).padStart(2, "0") + "m";
  return Math.floor(h / 24) + "d" + (h % 24) + "h";
}
function ago(t) { return t ? fmtDur(Date.now() - Date.parse(t)) + " ago" : ""; }
function since(t) { return t ? fmtDur(Date.now() - Date.parse(t)) : ""; }
function when(t) { return t ? new Date(t).toLocaleString() : ""; }
function jobLink(id, text) { return el("a", { href: "#/job/" + id }, text || "#" + id); }
function devLink(name) { return name ? el("a", { href: "#/device/" + encodeURIComponent(name) }, name) : ""; }

function banner(text) {
  const b = document.getElementById("banner");
  b.textContent = text;
  b.hidden = !text;
}

function failBox(err) { return el("p", { class: "error" }, String(err.message || err)); }

// act runs a state-changing request and shows what it said.
async function act(what, f) {
  try {
    await f();
    banner("");
  } catch (e) {
    banner(what + ": " + e.message);
  }
}

// ---- live stream: the lab's events, server-sent ----

// A browser keeps at most 6 HTTP/1.1 connections to one daemon across
// all its tabs, so a tab holds one long-lived stream at most: the lab's
// events on the pages that show the lab; a job page follows its job's
// events instead, a console page its WebSocket.
let liveSource = null;
function stopLive() {
  if (!liveSource) return;
  liveSource.close();
  liveSource = null;
  state.live = false;
  const ind = document.getElementById("live");
  ind.textContent = "";
  ind.className = "live";
}
function startLive() {
  if (liveSource) return;
  const ind = document.getElementById("live");
  ind.textContent = "○ connecting";
  liveSource = new EventSource("/api/v1/stream");
  liveSource.addEventListener("hello", () => {
    ind.textContent = "● live";
    ind.className = "live on";
    state.live = true;
    emit({ kind: "resync" });
  });
  liveSource.addEventListener("change", (m) => emit(JSON.parse(m.data)));
  liveSource.addEventListener("missed", (m) => {
    const n = JSON.parse(m.data).missed;
    banner("This tab missed " + n + " live updates (it fell behind); what it shows was reloaded.");
    emit({ kind: "resync" });
  });
  liveSource.onerror = async () => {
    ind.textContent = "○ reconnecting";
    ind.className = "live";
    state.live = false;
    emit({ kind: "down" });
    // A session that ended (expired, logged out elsewhere) goes back to the login.
    try {
      const r = await fetch("/ui/session", { credentials: "same-origin" });
      if (r.status === 401) location.href = "/login";
    } catch (e) { /* the daemon is away: EventSource tries again */ }
  };
}
function emit(e) { for (const f of state.listeners) f(e); }
// onLive calls f for each event until the page changes; returns nothing.
// Besides the stream's changes, f hears "resync" (the stream said hello
// or missed events: read again what the page shows) and "down" (the
// stream failed; it tries again).
function onLive(f) { state.listeners.add(f); }

// debounce runs f at most once per ms, after the last call.
function debounce(f, ms) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(f, ms); };
}

// ---- pages ----

// Each route: the page, the menu entry it belongs to, whether it needs
// the lab's live events.
const routes = [
  [/^#\/lab$/, labPage, "lab", true],
  [/^#\/jobs$/, jobsPage, "jobs", true],
  [/^#\/job\/(\d+)$/, jobPage, "jobs", false],
  [/^#\/console\/([^/]+)$/, consolePage, "lab", false],
  [/^#\/device\/([^/]+)$/, devicePage, "lab", true],
];

// routeOf is the route of a location's fragment and its match.
function routeOf(hash) {
  for (const r of routes) {
    const m = hash.match(r[0]);
    if (m) return [r, m];
  }
  return [null, null];
}

function route() {
  if (state.cleanup) state.cleanup();
  state.cleanup = null;
  state.listeners.clear();
  banner("");
  const hash = location.hash || "#/lab";
  const main = document.getElementById("page");
  main.replaceChildren();
  const [r, m] = routeOf(hash);
  if (!r) {
    location.hash = "#/lab";
    return;
  }
  const [, page, nav, live] = r;
  if (live) startLive(); else stopLive();
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  const cleanup = page(main, ...m.slice(1).map(decodeURIComponent));
  state.cleanup = typeof cleanup === "function" ? cleanup : null;
}

// listTable is a long table: its columns' widths are fixed (parts of
// the table's width), so laying out hundreds of rows measures no cell
// first, and a row off the screen is neither laid out nor painted until
// it scrolls into view (style.css: table.list).
function listTable(cols, body) {
  return el("table", { class: "list", style: "--cols: " + cols.map(([, part]) => "minmax(0, " + part + "fr)").join(" ") },
    el("thead", {}, el("tr", {}, cols.map(([h]) => el("th", {}, h)))), body);
}

// keyedRows makes body's rows one per item, in order, built by row(item)
// and kept while the item's key (its data) stays the same: a reload that
// changed nothing changes nothing on the page, one that changed a device
// replaces its row alone. It returns the rows by id, for the next call.
function keyedRows(body, cache, items, id, key, row) {
  const next = new Map();
  const trs = items.map((it) => {
    const k = key(it);
    let r = cache.get(id(it));
    if (!r || r.key !== k) {
      const tr = row(it);
      if (r) r.tr.replaceWith(tr);
      r = { key: k, tr };
    }
    next.set(id(it), r);
    return r.tr;
  });
  const cur = body.children;
  if (cur.length !== trs.length || trs.some((tr, i) => cur[i] !== tr)) body.replaceChildren(...trs);
  return next;
}

// liveList keeps a list page current. read() reads the list as the page
// shows it, apply(e) takes one live event into it (false: the list must be
// read again to show it) and draw() shows it; fail(err) shows a failed
// read. Events that come while the list is read are held and applied
// after it, in order; events redraw together, at most every 50 ms; reads
// asked for meanwhile come together after wait ms. In a lab of several
// hosts (several()) this daemon's stream tells only of its own part, so
// the list is read again every 30 s; the ages under ticks tick every
// second (a text that did not change is not written: a write lays the
// table out again), and a hidden tab does neither. Returns the list's
// load and the page's cleanup.
function liveList({ read, apply, draw, fail, wait, ticks, several }) {
  let loading = false, loaded = false, again = false, held = [];
  async function load() {
    if (loading) { again = true; return; }
    loading = true;
    try {
      await read();
      loaded = true;
      // What happened while the list was read, in order.
      if (held.some((e) => !apply(e))) again = true;
      held = [];
      draw();
    } catch (e) {
      fail(e);
    } finally {
      loading = false;
      held = [];
      if (again) { again = false; reload(); }
    }
  }
  const reload = debounce(load, wait);
  let drawTimer = null;
  function redraw() { if (!drawTimer) drawTimer = setTimeout(() => { drawTimer = null; draw(); }, 50); }
  onLive((e) => {
    if (e.kind === "resync") {
      if (loaded) reload(); else load();
    } else if (e.kind === "down") {
      // No live stream (yet): the list as it is, at least.
      if (!loaded) load();
    } else if (loading) {
      held.push(e);
    } else if (!loaded) {
      // Not read yet (or the read failed): the next read shows it.
    } else if (apply(e)) {
      redraw();
    } else {
      reload();
    }
  });
  // On a stream already live the first read is now; on a new one, its hello.
  if (state.live) load();
  const others = setInterval(() => { if (!document.hidden && several()) reload(); }, 30000);
  const tick = setInterval(() => {
    if (document.hidden) return;
    for (const t of ticks.querySelectorAll(".tick")) {
      const s = since(t.dataset.since);
      if (t.textContent !== s) t.textContent = s;
    }
  }, 1000);
  return { load, cleanup: () => { clearInterval(tick); clearInterval(others); clearTimeout(drawTimer); } };
}

// labPage: every device, its state, job, health and reservation; counts
// by state; filters by type and tag; live. It reads the whole lab when
// its live stream says hello (and when it missed events); in between,
// each event brings the device it changed as it is now (and a job's
// start, phase and end), and only that device's row is drawn again.
function labPage(main) {
  const typeSel = el("select", { id: "type-filter" }, el("option", { value: "" }, "all types"));
  const tagIn = el("input", { id: "tag-filter", placeholder: "tag", size: 10 });
  const counts = el("div", { class: "counts", id: "counts" });
  const body = el("tbody", { id: "devices" });
  main.append(el("h1", {}, "Lab"), counts,
    el("div", { class: "filters" }, "Filter:", typeSel, tagIn),
    listTable([["Device", 9], ["Type", 9], ["Tags", 10], ["State", 12], ["For", 6], ["Job", 20], ["Health", 12], ["Reservation", 14], ["", 8]], body));
  let devices = [], index = new Map(), running = new Map(), rows = new Map();
  const filters = new URLSearchParams((location.hash.split("?")[1]) || "");
  function draw() {
    performance.mark("lab draw");
    const types = [...new Set(devices.map((d) => d.device_type))].sort();
    if (typeSel.options.length !== types.length + 1) {
      const cur = typeSel.value;
      typeSel.replaceChildren(el("option", { value: "" }, "all types"), ...types.map((t) => el("option", { value: t }, t)));
      typeSel.value = cur;
    }
    const ty = typeSel.value, tag = tagIn.value.trim();
    const shown = devices.filter((d) => (!ty || d.device_type === ty) && (!tag || (d.tags || []).includes(tag)));
    const by = {};
    for (const d of shown) by[d.state] = (by[d.state] || 0) + 1;
    counts.replaceChildren(el("span", {}, shown.length + " devices"),
      ...Object.keys(by).sort().map((s) => el("span", { class: "state-" + s, "data-state": s }, s + ": " + by[s])));
    rows = keyedRows(body, rows, shown, (d) => d.name, (d) => JSON.stringify([d, running.get(d.name) || null]), (d) => deviceRow(d, running.get(d.name)));
    performance.measure("lab draw", "lab draw");
  }
  // apply takes one event into what the page knows; false if the page
  // must read the whole lab again to show it.
  function apply(e) {
    const j = running.get(e.device);
    switch (e.kind) {
      case "job.start":
        running.set(e.device, { id: e.job, name: e.name, started: e.at, phase: "", phase_since: e.at });
        break;
      case "job.phase":
        if (!j || j.id !== e.job) return false;
        running.set(e.device, { ...j, phase: e.state, phase_since: e.at });
        break;
      case "job.end":
        if (j && j.id === e.job) running.delete(e.device);
        break;
      case "console":
        return true;
    }
    if (!e.device) return true;
    const i = index.get(e.device);
    if (!e.view || i === undefined) return false;
    devices[i] = e.view;
    return true;
  }
  // read reads the lab: its devices and the jobs running on them.
  async function read() {
    const [devs, jobs] = await Promise.all([api("GET", "/api/v1/devices"), api("GET", "/api/v1/jobs?state=running&limit=100000")]);
    devices = devs;
    index = new Map(devs.map((d, i) => [d.name, i]));
    running = new Map(jobs.map((j) => [j.device, j]));
  }
  function fail(e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 9 }, failBox(e))));
    rows = new Map();
  }
  if (filters.get("type")) typeSel.append(el("option", { value: filters.get("type") }, filters.get("type")));
  typeSel.value = filters.get("type") || "";
  tagIn.value = filters.get("tag") || "";
  typeSel.onchange = draw;
  tagIn.oninput = draw;
  // A lab of several hosts: this daemon's stream tells only of its own
  // devices; the others' rows are read again now and then.
  return liveList({ read, apply, draw, fail, wait: 150, ticks: main,
    several: () => new Set(devices.map((d) => d.host || "")).size > 1 }).cleanup;
}

// deviceRow is a device's row on the lab page; j is the job running on
// it, if the page knows it.
function deviceRow(d, j) {
  const h = d.health;
  const r = d.reservation;
  return el("tr", { "data-device": d.name },
    el("td", {}, devLink(d.name)),
    el("td", {}, d.device_type),
    el("td", {}, (d.tags || []).join(", ")),
    el("td", { class: "state state-" + d.state }, d.state, d.maintenance && d.state !== "maintenance" ? " (maintenance next)" : "",
      d.reason ? el("div", { class: "muted" }, d.reason) : ""),
    el("td", { class: "tick", "data-since": d.since }, since(d.since)),
    el("td", {}, d.job ? [jobLink(d.job, j ? j.name + " #" + d.job : "#" + d.job),
      j && j.phase ? el("div", { class: "muted", "data-phase": j.phase }, j.phase + " for ", el("span", { class: "tick", "data-since": j.phase_since || j.started }, since(j.phase_since || j.started)),
        ", job ", el("span", { class: "tick", "data-since": j.started }, since(j.started))) : ""] : ""),
    el("td", { class: h ? (h.ok ? "ok" : "bad") : "muted", title: h ? h.detail : "" }, h ? [h.ok ? "ok " : "failed ", el("span", { class: "tick", "data-since": h.at }, since(h.at)), " ago"] : "not checked"),
    el("td", {}, r ? r.owner + " until " + when(r.until) : ""),
    el("td", {}, el("a", { href: "#/console/" + encodeURIComponent(d.name) }, "console")));
}

// jobsPage: queued (position, why it waits), running, finished; filters;
// paged by job ID (before=) so it stays fast with any number of jobs.
// It reads its page when its live stream says hello (and when it missed
// events); in between, each job event brings the job as it is now, and
// only that job's row is drawn again. It reads its page again (at most
// every 300 ms) only for an event it cannot place: a job that joins an
// older page or leaves a filtered one, or a change in the queue or the
// lab that may move the queued jobs it shows or change why they wait.
function jobsPage(main) {
  const PAGE = 100;
  const f = {
    state: el("select", { id: "f-state" }, ["", "queued", "running", "finished"].map((s) => el("option", { value: s }, s || "any state"))),
    device: el("input", { id: "f-device", placeholder: "device", size: 10 }),
    type: el("input", { id: "f-type", placeholder: "device type", size: 12 }),
    outcome: el("select", { id: "f-outcome" }, ["", "complete", "failed", "incomplete", "canceled"].map((s) => el("option", { value: s }, s || "any outcome"))),
    submitter: el("input", { id: "f-submitter", placeholder: "submitter", size: 10 }),
    date: el("input", { id: "f-date", type: "date", title: "submitted on or after" }),
  };
  const body = el("tbody", { id: "jobs" });
  const info = el("span", { class: "muted" });
  const newer = el("button", { type: "button", id: "newer" }, "◀ newer");
  const older = el("button", { type: "button", id: "older" }, "older ▶");
  main.append(el("h1", {}, "Jobs"),
    el("div", { class: "filters" }, Object.values(f)),
    el("p", { class: "hint" }, "State and device are asked of the daemon; the other filters apply to the page shown."),
    // The pager above the list: below it, its place would move while
    // the rows off the screen are laid out (content-visibility).
    el("div", { class: "pager" }, newer, older, info),
    listTable([["ID", 6], ["Name", 16], ["State", 12], ["Waiting", 16], ["Device", 9], ["Type", 9], ["Submitter", 9], ["Submitted", 14], ["Took", 9]], body));
  const stack = []; // the before= of the pages before this one
  let before = 0, last = [], rows = new Map();
  // The daemon's filters, as the page was last read with them.
  let asked = { state: "", device: "" };
  // read reads the page of jobs the daemon's filters and the pager ask for.
  async function read() {
    const q = new URLSearchParams({ limit: PAGE });
    const want = { state: f.state.value, device: f.device.value.trim() };
    if (want.state) q.set("state", want.state);
    if (want.device) q.set("device", want.device);
    if (before) q.set("before", before);
    last = (await api("GET", "/api/v1/jobs?" + q)).reverse(); // newest first
    asked = want;
  }
  function fail(e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 9 }, failBox(e))));
    rows = new Map();
  }
  // apply takes one event into the page; false if the page must be read
  // again to show it.
  function apply(e) {
    // The other queued jobs shown: a job that joins or leaves the queue,
    // or a change in the lab, may move them or change why they wait.
    const queued = last.filter((j) => j.state === "queued" && j.id !== e.job);
    if (!e.kind.startsWith("job.")) return !(e.kind.startsWith("device.") && queued.length);
    const v = e.job_view;
    if (!v) return false;
    const i = last.findIndex((j) => j.id === v.id);
    const was = i >= 0 ? last[i] : null;
    // Only a job behind all of them, joining or leaving, moves none.
    const behind = (p) => p > 0 && queued.every((j) => j.position > 0 && j.position < p);
    if (queued.length) {
      if (e.kind === "job.queued" && !behind(v.position)) return false;
      if (e.kind === "job.end" && !(was && was.state === "queued" && behind(was.position))) return false;
      if (e.kind === "job.start") return false;
    }
    const fits = (!asked.state || v.state === asked.state) && (!asked.device || v.device === asked.device);
    if (was) {
      if (!fits) return false; // the page is one job short
      last[i] = v;
      return true;
    }
    if (!fits) return true;
    // A new job on the first page goes on top; anywhere else the page
    // must be read to know where it goes.
    if (before || (last.length && v.id < last[0].id)) return false;
    last.unshift(v);
    if (last.length > PAGE) last.pop();
    return true;
  }
  function draw() {
    const ty = f.type.value.trim(), oc = f.outcome.value, su = f.submitter.value.trim();
    const from = f.date.value ? Date.parse(f.date.value) : 0;
    const shown = last.filter((j) => (!ty || j.device_type === ty) && (!oc || j.outcome === oc) &&
      (!su || j.submitter === su) && (!from || Date.parse(j.submitted) >= from));
    rows = keyedRows(body, rows, shown, (j) => j.id, (j) => JSON.stringify(j), jobRow);
    newer.disabled = stack.length === 0;
    older.disabled = last.length < PAGE;
    info.textContent = last.length ? "jobs #" + last[last.length - 1].id + " to #" + last[0].id : "no jobs";
  }
  // A lab of several hosts: this daemon's stream tells only of the jobs
  // it queues and runs; the page is read again now and then.
  const list = liveList({ read, apply, draw, fail, wait: 300, ticks: body,
    several: () => new Set(last.map((j) => j.host).filter(Boolean)).size > 1 });
  const load = list.load;
  older.onclick = () => { stack.push(before); before = last[last.length - 1].id; load(); };
  newer.onclick = () => { before = stack.pop() || 0; load(); };
  for (const k of ["state", "device"]) f[k].onchange = () => { stack.length = 0; before = 0; load(); };
  for (const k of ["type", "outcome", "submitter", "date"]) { f[k].oninput = draw; f[k].onchange = draw; }
  return list.cleanup;
}

// jobRow is a job's row on the jobs page.
function jobRow(j) {
  return el("tr", { "data-job": j.id },
    el("td", {}, jobLink(j.id)),
    el("td", {}, j.name),
    el("td", { class: "state-" + j.state + (j.outcome ? " outcome-" + j.outcome : "") }, j.outcome || j.state, j.phase ? " (" + j.phase + ")" : ""),
    el("td", {}, j.state === "queued" ? [j.position ? "#" + j.position + " " : "", el("span", { class: "muted" }, j.reason || "")] : ""),
    el("td", {}, devLink(j.device)),
    el("td", {}, j.device_type || ""),
    el("td", {}, j.submitter),
    el("td", {}, when(j.submitted)),
    el("td", {}, !j.started ? "" : j.finished ? fmtDur(Date.parse(j.finished) - Date.parse(j.started)) :
      el("span", { class: "tick", "data-since": j.started }, since(j.started))));
}

// ---- job log rendering: transcript records, ANSI colours ----

// unescape turns a transcript record's escapes (\r \n \t \e \xNN \\) back
// into the characters.
function unescapeRecord(s) {
  return s.replace(/\\(x[0-9a-fA-F]{2}|[rnte\\])/g, (_, c) => {
    switch (c[0]) {
      case "r": return "\r";
      case "n": return "\n";
      case "t": return "\t";
      case "e": return "\x1b";
      case "\\": return "\\";
      default: return String.fromCharCode(parseInt(c.slice(1), 16));
    }
  });
}

const ANSI_COLORS = ["#1d1f21", "#cc6666", "#b5bd68", "#f0c674", "#81a2be", "#b294bb", "#8abeb7", "#c5c8c6"];
const ANSI_BRIGHT = ["#666666", "#ff7b72", "#7ee787", "#ffd866", "#79c0ff", "#d2a8ff", "#a5f3fc", "#ffffff"];

// Ansi renders console text with SGR colours into spans; other escape
// sequences and control characters are dropped. It keeps its colours
// from one record to the next, as a terminal would.
class Ansi {
  constructor() { this.reset(); this.pending = ""; }
  reset() { this.fg = null; this.bg = null; this.bold = false; }
  sgr(params) {
    const ps = params === "" ? [0] : params.split(";").map((p) => parseInt(p || "0", 10));
    for (let i = 0; i < ps.length; i++) {
      const p = ps[i];
      if (p === 0) this.reset();
      else if (p === 1) this.bold = true;
      else if (p === 22) this.bold = false;
      else if (p >= 30 && p <= 37) this.fg = ANSI_COLORS[p - 30];
      else if (p >= 90 && p <= 97) this.fg = ANSI_BRIGHT[p - 90];
      else if (p === 39) this.fg = null;
      else if (p >= 40 && p <= 47) this.bg = ANSI_COLORS[p - 40];
      else if (p === 49) this.bg = null;
      else if ((p === 38 || p === 48) && ps[i + 1] === 5) i += 2;
      else if ((p === 38 || p === 48) && ps[i + 1] === 2) i += 4;
    }
  }
  span(text) {
    if (!text) return null;
    if (!this.fg && !this.bg && !this.bold) return document.createTextNode(text);
    const s = document.createElement("span");
    if (this.fg) s.style.color = this.fg;
    if (this.bg) s.style.background = this.bg;
    if (this.bold) s.style.fontWeight = "bold";
    s.textContent = text;
    return s;
  }
  // render appends text to parent, colours applied. An escape sequence
  // cut at the end of text (console output arrives in pieces) is held and
  // finished by the next call's text.
  render(parent, text) {
    text = this.pending + text;
    this.pending = "";
    const cut = text.match(/\x1b(?:\[[0-9;?]*|[()])?$/);
    if (cut && cut[0].length <= 32) {
      this.pending = cut[0];
      text = text.slice(0, cut.index);
    }
    const re = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b[()][A-Za-z0-9]|\x1b[A-Za-z=>]|[\x00-\x08\x0b-\x1f\x7f]/g;
    let last = 0, m;
    while ((m = re.exec(text)) !== null) {
      const n = this.span(text.slice(last, m.index));
      if (n) parent.append(n);
      if (m[2] === "m" && !m[1].startsWith("?")) this.sgr(m[1]);
      last = re.lastIndex;
    }
    const n = this.span(text.slice(last));
    if (n) parent.append(n);
  }
}

// JobLog shows a job log as it grows: console output as text (colours
// rendered), typed text and events marked. It keeps the newest maxLines
// lines on the page.
class JobLog {
  constructor(pre, maxLines) {
    this.pre = pre;
    this.max = maxLines;
    this.ansi = new Ansi();
    this.line = null; // the console line being written
    this.partial = "";
  }
  newLine(cls) {
    const d = document.createElement("div");
    if (cls) d.className = cls;
    this.pre.append(d);
    while (this.pre.childElementCount > this.max) this.pre.firstElementChild.remove();
    return d;
  }
  // add takes whole lines of the log file.
  add(text) {
    const stick = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 20;
    for (const rec of text.split("\n")) {
      if (!rec) continue;
      const m = rec.match(/^(\S+) (.) ?(.*)$/);
      if (!m) { this.newLine().textContent = rec; continue; }
      const [, , kind, body] = m;
      if (kind === "<") {
        this.console(unescapeRecord(body));
      } else {
        this.line = null;
        const cls = kind === ">" ? "typed" : kind === "#" ? "note" : "ev";
        const d = this.newLine(cls);
        d.textContent = (kind === ">" ? "> " : kind + " ") + (kind === ">" ? unescapeRecord(body).replace(/[\r\n]+$/, "") : body);
      }
    }
    if (stick) this.pre.scrollTop = this.pre.scrollHeight;
  }
  console(text) {
    const parts = text.split("\n");
    parts.forEach((p, i) => {
      if (i > 0 || !this.line) this.line = this.newLine();
      // A carriage return starts the line over.
      const cr = p.lastIndexOf("\r");
      if (cr >= 0 && cr < p.length - 1) { this.line.replaceChildren(); p = p.slice(cr + 1); }
      this.ansi.render(this.line, p.replace(/\r/g, ""));
    });
    if (text.endsWith("\n")) this.line = null;
  }
}

// jobPage: one job: phases, steps, live log, downloads, cancel, resubmit.
function jobPage(main, id) {
  const head = el("div", { id: "job-head" });
  const timeline = el("div", { class: "timeline", id: "timeline" });
  const steps = el("tbody", { id: "steps" });
  const pre = el("div", { class: "log", id: "log" });
  main.append(head, el("h2", {}, "Phases"), timeline,
    el("h2", {}, "Steps"), el("table", {}, el("thead", {}, el("tr", {}, ["Step", "Result", "Exit", "Took", "Output"].map((h) => el("th", {}, h)))), steps),
    el("h2", {}, "Log ", el("a", { href: "/api/v1/jobs/" + id + "/log", target: "_blank" }, "(whole file)")), pre);
  const log = new JobLog(pre, 5000);
  let job = null, phase = "";
  const ctl = new AbortController();
  function drawHead() {
    const j = job;
    const outcome = j.outcome || j.state;
    const buttons = [];
    // A submitter cancels its own jobs; an operator anyone's (the API decides).
    if (j.state !== "finished" && (can("operator") || (can("submitter") && j.submitter === state.session.name))) {
      buttons.push(el("button", { type: "button", id: "cancel", onclick: () => {
        if (confirm("Cancel job " + j.id + "?")) act("cancel", () => api("POST", "/api/v1/jobs/" + j.id + "/cancel"));
      } }, "Cancel"));
    }
    if (can("submitter")) {
      buttons.push(el("button", { type: "button", id: "resubmit", onclick: () => act("resubmit", async () => {
        const n = await api("POST", "/api/v1/jobs/" + j.id + "/resubmit");
        location.hash = "#/job/" + n.id;
      }) }, "Resubmit"));
    }
    if (j.state === "finished") {
      buttons.push(el("a", { href: "/api/v1/jobs/" + j.id + "/junit", download: "job-" + j.id + "-junit.xml" }, "JUnit XML"));
      for (const a of (j.result && j.result.artifacts) || []) {
        buttons.push(el("a", { href: "/api/v1/jobs/" + j.id + "/artifacts/" + a.split("/").map(encodeURIComponent).join("/"), download: a.split("/").pop() }, a));
      }
    }
    head.replaceChildren(
      el("h1", {}, j.name + " #" + j.id + " ", el("span", { id: "outcome", class: "outcome-" + outcome + " state-" + j.state }, outcome),
        j.state === "running" && phase ? el("span", { class: "muted", id: "phase" }, " " + phase) : ""),
      j.reason ? el("p", { id: "reason" }, (j.state === "queued" && j.position ? "#" + j.position + " in the queue: " : ""), j.reason) : "",
      el("p", { class: "muted" }, "device ", devLink(j.device) || j.device_type || "", ", submitted by ", j.submitter, " ", when(j.submitted),
        j.started ? ", started " + when(j.started) : "", j.finished ? ", took " + fmtDur(Date.parse(j.finished) - Date.parse(j.started || j.submitted)) : "",
        j.retry_of ? [", retries ", jobLink(j.retry_of)] : "", j.retried_as ? [", retried as ", jobLink(j.retried_as)] : ""),
      el("div", { class: "actions" }, buttons));
    const r = j.result;
    const phases = (r && r.phases) || [];
    const total = phases.reduce((a, p) => a + p.duration_ns, 0) || 1;
    timeline.replaceChildren(...phases.map((p) => el("div", {
      class: p.error ? "err" : "", style: "flex:" + Math.max(p.duration_ns / total, 0.02), title: p.name + " " + fmtDur(p.duration_ns / 1e6) + (p.error ? ": " + p.error : ""),
    }, p.name + " " + fmtDur(p.duration_ns / 1e6))));
    if (!phases.length) timeline.append(el("div", { class: "muted", style: "background:none;color:#666" }, j.state === "running" ? "running: " + (phase || "starting") : j.state));
    steps.replaceChildren(...((r && r.steps) || []).map((s) => el("tr", { "data-step": s.name },
      el("td", {}, s.name), el("td", { class: "result-" + s.result }, s.result), el("td", {}, s.exit_code),
      el("td", {}, fmtDur(s.duration_ns / 1e6)), el("td", {}, s.output ? el("pre", { class: "out" }, s.output) : (s.failed_command || "")))));
  }
  async function follow() {
    let offset = 0;
    for (let tries = 0; tries < 100 && !ctl.signal.aborted; tries++) {
      try {
        const r = await api("GET", "/api/v1/jobs/" + id + "/events?offset=" + offset, null, true);
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (!line) continue;
            const e = JSON.parse(line);
            if (e.log) { log.add(e.log); offset = e.offset + new TextEncoder().encode(e.log).length; }
            if (e.progress) { phase = e.progress.phase; if (job) { job.state = "running"; drawHead(); } }
            // The end is the finished job, as GET /api/v1/jobs/ID gives it.
            if (e.end) { job = e.end; drawHead(); return; }
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        banner("live log: " + e.message + " (trying again)");
      }
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
  (async () => {
    try {
      job = await api("GET", "/api/v1/jobs/" + id);
      drawHead();
      follow();
    } catch (e) {
      head.replaceChildren(failBox(e));
    }
  })();
  return () => ctl.abort();
}

// xterm.js, its fit addon and its styles are loaded by the console page
// only: the other pages need neither its half megabyte nor the time to
// compile it, nor wait for its stylesheet before their first frame.
let xtermLoaded = null;
function loadXterm() {
  const script = (src) => new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error("could not load " + src));
    document.head.append(s);
  });
  const style = (href) => new Promise((resolve, reject) => {
    const l = document.createElement("link");
    l.rel = "stylesheet";
    l.href = href;
    l.onload = resolve;
    l.onerror = () => reject(new Error("could not load " + href));
    document.head.append(l);
  });
  if (!xtermLoaded) {
    xtermLoaded = Promise.all([style("/vendor/xterm.css"), script("/vendor/xterm.js").then(() => script("/vendor/addon-fit.js"))]);
    xtermLoaded.catch(() => { xtermLoaded = null; });
  }
  return xtermLoaded;
}

// consolePage: the node's console in a terminal, through the daemon's
// broker: one writer, everyone else read-only; a job is the writer while
// it runs.
function consolePage(main, node) {
  let cleanup = null, left = false;
  loadXterm().then(() => { if (!left) cleanup = consoleTerminal(main, node); },
    (e) => { if (!left) main.append(failBox(e)); });
  return () => { left = true; if (cleanup) cleanup(); };
}

// consoleTerminal builds the console page once xterm.js is loaded.
function consoleTerminal(main, node) {
  const status = el("div", { id: "console-state", class: "muted" }, "connecting…");
  const notices = el("div", { id: "notices", class: "log", style: "max-height:8em" });
  const box = el("div", { class: "term", id: "term" });
  const buttons = el("div", { class: "actions" });
  main.append(el("h1", {}, "Console ", devLink(node)), status, buttons, box, el("h2", {}, "Notices"), notices);
  const term = new Terminal({ convertEol: false, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const readOnly = !can("operator");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ replay: 200, rows: term.rows, cols: term.cols });
  if (readOnly) q.set("read_only", "true");
  const ws = new WebSocket(proto + "//" + location.host + "/api/v1/devices/" + encodeURIComponent(node) + "/console/ws?" + q);
  ws.binaryType = "arraybuffer";
  const send = (o) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(o)); };
  if (can("operator")) {
    buttons.append(
      el("button", { type: "button", id: "break", onclick: () => send({ break: true }) }, "Send break"),
      el("button", { type: "button", id: "power-cycle", onclick: () => {
        if (confirm("Power-cycle " + node + "? Whatever runs on it stops.")) send({ power_cycle: true });
      } }, "Power-cycle"));
  }
  const enc = new TextEncoder();
  term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
  term.onResize((s) => send({ resize: { rows: s.rows, cols: s.cols } }));
  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);
  ws.onmessage = (m) => {
    if (typeof m.data !== "string") { term.write(new Uint8Array(m.data)); return; }
    const msg = JSON.parse(m.data);
    if (msg.state) {
      const s = msg.state;
      status.replaceChildren(
        el("span", { class: "state-" + (s.state === "open" ? "idle" : "offline"), "data-console": s.state }, s.state), " — ",
        s.target, s.error ? el("span", { class: "error" }, " " + s.error) : "", " · writer: ", s.writer || "nobody",
        " · you: ", s.you, s.write ? " (you have write)" : " (read-only)", " · viewers: ", s.viewers);
      status.dataset.write = s.write ? "yes" : "no";
    }
    if (msg.notice) {
      notices.append(el("div", { class: "ev" }, when(msg.notice.at) + " " + msg.notice.kind + ": " + msg.notice.text));
      notices.scrollTop = notices.scrollHeight;
    }
  };
  ws.onclose = (e) => { status.prepend(el("span", { class: "error" }, "disconnected" + (e.reason ? ": " + e.reason : "") + " — ")); };
  term.focus();
  return () => { window.removeEventListener("resize", onResize); ws.close(); term.dispose(); };
}

// devicePage: one device: state, health, recent jobs, console tail,
// maintenance, reservation and power controls.
function devicePage(main, name) {
  const info = el("div", { id: "device-info" });
  const controls = el("div", { class: "actions", id: "controls" });
  const jobsBody = el("tbody", { id: "device-jobs" });
  const tail = el("div", { class: "log", id: "console-tail", style: "max-height:20em" });
  const healthBody = el("tbody", { id: "health-history" });
  main.append(info, controls, el("h2", {}, "Health checks"),
    el("table", {}, el("thead", {}, el("tr", {}, ["When", "Result", "Took", "Detail"].map((h) => el("th", {}, h)))), healthBody),
    el("h2", {}, "Recent jobs"),
    el("table", {}, el("thead", {}, el("tr", {}, ["ID", "Name", "Outcome", "Submitter", "Finished"].map((h) => el("th", {}, h)))), jobsBody),
    el("h2", {}, "Console log ", el("a", { href: "#/console/" + encodeURIComponent(name) }, "(open the console)")), tail);
  const post = (path, body) => act(path, async () => { await api("POST", "/api/v1/devices/" + encodeURIComponent(name) + "/" + path, body); load(); });
  function drawControls(d) {
    const b = [];
    if (can("operator")) {
      if (d.state === "maintenance" || d.maintenance || d.state === "offline") b.push(el("button", { type: "button", id: "online", onclick: () => post("online") }, "Put online"));
      else b.push(el("button", { type: "button", id: "maintenance", onclick: () => { const r = prompt("Why take " + name + " out?"); if (r !== null) post("maintenance", { reason: r }); } }, "Maintenance"));
      b.push(el("button", { type: "button", id: "health", onclick: () => post("health") }, "Check health"));
      for (const op of ["on", "off", "cycle"]) {
        b.push(el("button", { type: "button", id: "power-" + op, onclick: () => { if (confirm("Power " + op + " " + name + "?")) post("power", { op }); } }, "Power " + op));
      }
    }
    if (can("submitter")) {
      if (d.reservation) b.push(el("button", { type: "button", id: "release", onclick: () => post("release") }, "Release"));
      b.push(el("button", { type: "button", id: "reserve", onclick: () => {
        const h = prompt("Reserve " + name + " for how many hours?", "2");
        if (h !== null && +h > 0) post("reserve", { for_ns: Math.round(+h * 3600e9), reason: "" });
      } }, d.reservation ? "Renew reservation" : "Reserve"));
    }
    controls.replaceChildren(...b);
  }
  async function load() {
    try {
      const [d, jobs, con] = await Promise.all([
        api("GET", "/api/v1/devices/" + encodeURIComponent(name)),
        api("GET", "/api/v1/jobs?limit=20&device=" + encodeURIComponent(name)),
        api("GET", "/api/v1/devices/" + encodeURIComponent(name) + "/console").catch(() => null)]);
      const h = d.health;
      info.replaceChildren(el("h1", {}, d.name, " ", el("span", { class: "state-" + d.state, id: "device-state" }, d.state)),
        el("p", {}, d.device_type, (d.tags || []).length ? " · tags " + d.tags.join(", ") : "", " · ", d.state, " for ", since(d.since), d.reason ? " · " + d.reason : ""),
        el("p", {}, "Health: ", h ? el("span", { class: h.ok ? "ok" : "bad" }, (h.ok ? "ok" : "failed") + " " + ago(h.at) + " (" + fmtDur(h.duration_ns / 1e6) + "): " + h.detail) : "not checked since the daemon started"),
        el("p", {}, "Reservation: ", d.reservation ? d.reservation.owner + " until " + when(d.reservation.until) + (d.reservation.reason ? " (" + d.reservation.reason + ")" : "") : "none"),
        con ? el("p", {}, "Console: ", con.state, con.writer ? " · writer " + con.writer : "", " · viewers ", (con.viewers || []).length) : "",
        d.job ? el("p", {}, "Running ", jobLink(d.job)) : "");
      drawControls(d);
      healthBody.replaceChildren(...(d.health_history || []).map((h) => el("tr", {},
        el("td", {}, when(h.at)), el("td", { class: h.ok ? "ok" : "bad" }, h.ok ? "passed" : "failed"),
        el("td", {}, fmtDur(h.duration_ns / 1e6)), el("td", {}, h.detail))));
      if (!healthBody.childElementCount) healthBody.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "none since the daemon started")));
      jobsBody.replaceChildren(...jobs.reverse().map((j) => el("tr", {}, el("td", {}, jobLink(j.id)), el("td", {}, j.name),
        el("td", { class: "outcome-" + (j.outcome || j.state) }, j.outcome || j.state), el("td", {}, j.submitter), el("td", {}, when(j.finished)))));
    } catch (e) {
      info.replaceChildren(failBox(e));
    }
  }
  // The console's recent lines, read-only, as text.
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/api/v1/devices/" + encodeURIComponent(name) + "/console/ws?read_only=true&replay=50&who=device-page");
  ws.binaryType = "arraybuffer";
  const ansi = new JobLog(tail, 200);
  const dec = new TextDecoder();
  ws.onmessage = (m) => { if (typeof m.data !== "string") ansi.console(dec.decode(new Uint8Array(m.data), { stream: true })); };
  const reload = debounce(load, 150);
  onLive((e) => { if (!e.device || e.device === name || e.kind === "resync") reload(); });
  load();
  return () => ws.close();
}

// ---- start ----

async function start() {
  // A page that shows the lab connects its stream while the session is
  // asked for: its hello often arrives first, and the page reads the lab
  // once, then.
  const [r0] = routeOf(location.hash || "#/lab");
  if (r0 && r0[3]) startLive();
  const r = await fetch("/ui/session", { credentials: "same-origin" });
  if (!r.ok) { location.href = "/login"; return; }
  state.session = await r.json();
  document.getElementById("who").textContent = state.session.name + " (" + state.session.role + ")";
  document.getElementById("logout").onclick = async () => {
    await fetch("/logout", { method: "POST", headers: { "X-Labctl-Csrf": state.session.csrf }, credentials: "same-origin" });
    location.href = "/login";
  };
  window.addEventListener("hashchange", route);
  route();
}
start();
