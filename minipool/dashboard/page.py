"""The dashboard's one page: HTML, CSS, plain JavaScript and inline SVG charts in one string.

Technique: *a page with no build step and no external assets*. It works offline and behind
any firewall, and a student can read all of it: one WebSocket (``/ws``) brings the sections
that changed (:mod:`minipool.dashboard.feed`), and ``render`` merges them and redraws the panels. Every value from the
coordinator is written with ``textContent`` (never ``innerHTML``), so a task whose result is
``<script>`` shows the text ``<script>``. Control buttons POST to the API with the token taken
from the page's own URL (``?token=``), which the coordinator prints once.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>minipool dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1f2937;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header h1{font-size:16px;margin:0}#conn{margin-left:auto;font-size:12px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:12px;padding:12px}
section{background:#fff;border-radius:6px;padding:10px 12px;box-shadow:0 1px 2px #0002;overflow:auto;max-height:420px}
h2{font-size:14px;margin:0 0 6px}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:2px 6px;border-bottom:1px solid #eee;white-space:nowrap}
th{font-weight:600;color:#555}.tiles{display:flex;gap:10px;flex-wrap:wrap}
.tile{background:#eef2ff;border-radius:4px;padding:4px 8px}.tile b{display:block;font-size:18px}
.done{color:#15803d}.failed,.terminated{color:#b91c1c}.running{color:#1d4ed8}.reserved{color:#b45309}.cancelled{color:#6b7280}
pre{white-space:pre-wrap;word-break:break-all;background:#f8f8f8;padding:6px;margin:4px 0}
button{font-size:11px;padding:1px 6px}svg{background:#fafafa;border:1px solid #eee}
.muted{color:#888}#err{color:#b91c1c}
</style></head><body>
<header><h1>minipool</h1><span id="urls" class="muted"></span><span id="err"></span><span id="conn">connecting…</span></header>
<main>
<section id="overview"><h2>Overview</h2><div class="tiles" id="tiles"></div>
<div class="muted">tasks per second</div><svg id="rate" width="430" height="70"></svg>
<div class="muted">queue depth</div><svg id="depth" width="430" height="70"></svg>
<div id="autoscale"></div></section>
<section><h2>Workers</h2><table id="workers"><thead><tr><th>name</th><th>id</th><th>slots</th><th>running</th><th>done</th><th>avg run</th><th>pid</th><th></th></tr></thead><tbody></tbody></table></section>
<section><h2>Tasks</h2>
<div><select id="fstate"><option value="">any state</option><option>queued</option><option>reserved</option><option>running</option><option>done</option><option>failed</option><option>cancelled</option><option>terminated</option></select>
<input id="fname" placeholder="name contains" size="16"> <span class="muted">click a row for details</span></div>
<table id="tasks"><thead><tr><th>id</th><th>name</th><th>state</th><th>worker</th><th title="from its start (its worker free) to its outcome">run time</th><th></th></tr></thead><tbody></tbody></table>
<pre id="detail" class="muted">no task selected</pre></section>
<section><h2>Events</h2><table id="events"><tbody></tbody></table></section>
<section><h2>Topics and consumer groups</h2><div id="topics"></div></section>
<section><h2>Pipe sets</h2><div id="pipesets"></div><h2>Chaos proxies</h2><div id="chaos"></div><h2>Journal</h2><div id="journal"></div></section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
let last = null, events = [], series = [], selected = null;
const view = {};  // the sections as last sent: a message carries only those that changed
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
function row(cells, attrs) { const tr = el("tr"); for (const c of cells) { const td = el("td"); if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c); tr.appendChild(td); } for (const k in attrs || {}) tr.setAttribute(k, attrs[k]); return tr; }
function fill(id, rows) { const body = document.querySelector("#" + id + " tbody"); body.replaceChildren(...rows); }
function secs(x) { return x === null || x === undefined ? "" : (x < 1 ? (x * 1000).toFixed(1) + " ms" : x.toFixed(2) + " s"); }
async function control(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"}, body: body ? JSON.stringify(body) : ""});
  const answer = await r.json();
  document.getElementById("err").textContent = r.ok ? "" : (r.status + ": " + answer.error + (token ? "" : " (open the URL with ?token= that the coordinator printed)"));
  return answer;
}
function button(text, path) { const b = el("button", text); b.onclick = (ev) => { ev.stopPropagation(); control(path); }; return b; }
function chart(id, values, color) {
  const svg = document.getElementById(id), w = 430, h = 70, ns = "http://www.w3.org/2000/svg";
  const max = Math.max(1, ...values), n = Math.max(2, values.length);
  const pts = values.map((v, i) => (i * (w - 40) / (n - 1)).toFixed(1) + "," + (h - 4 - v * (h - 14) / max).toFixed(1)).join(" ");
  const line = document.createElementNS(ns, "polyline"); line.setAttribute("points", pts); line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "1.5");
  const label = document.createElementNS(ns, "text"); label.setAttribute("x", w - 36); label.setAttribute("y", 12); label.setAttribute("font-size", "10"); label.textContent = String(Math.round(max));
  svg.replaceChildren(line, label);
}
function render(message) {
  for (const k of ["overview", "workers", "tasks", "queued", "topics", "pipesets", "chaos", "journal"]) if (k in message) view[k] = message[k];
  series = series.concat(message.series || []).slice(-300);
  const u = view;
  last = u;
  const o = u.overview || {};
  document.getElementById("urls").textContent = (o.urls || []).join(" ");
  const tiles = [["workers", o.workers], ["slots", o.slots], ["queued", o.queued], ["reserved", o.reserved], ["running", o.running], ["done", o.done], ["failed", o.failed], ["requeued", o.requeued], ["clients", o.clients]];
  document.getElementById("tiles").replaceChildren(...tiles.map(([k, v]) => { const t = el("div", null, "tile"); t.appendChild(el("b", v === undefined ? "" : v)); t.appendChild(el("span", k)); t.id = "tile-" + k; return t; }));
  const conns = o.connections || {};
  document.getElementById("tiles").appendChild(el("div", "connections: " + Object.keys(conns).map(k => conns[k] + " " + k).join(", "), "muted"));
  const s = series;
  const rate = s.slice(1).map((p, i) => Math.max(0, (p.done + p.failed - s[i].done - s[i].failed) / Math.max(0.001, p.time - s[i].time)));
  chart("rate", rate.slice(-120), "#15803d"); chart("depth", s.map(p => p.queued).slice(-120), "#1d4ed8");
  const a = o.autoscale, as = document.getElementById("autoscale"); as.replaceChildren();
  if (a) { as.appendChild(el("span", "autoscale " + a.min_workers + "–" + a.max_workers + " workers ")); const lo = el("input"); lo.size = 2; lo.value = a.min_workers; const hi = el("input"); hi.size = 2; hi.value = a.max_workers; const b = el("button", "set"); b.onclick = () => control("/api/autoscale", {min_workers: +lo.value, max_workers: +hi.value}); as.append(lo, hi, b); }
  fill("workers", (u.workers || []).map(w => { const c = el("span"); c.append(button("restart", "/api/workers/" + encodeURIComponent(w.id) + "/restart"), button("stop", "/api/workers/" + encodeURIComponent(w.id) + "/stop")); return row([w.name, w.id, w.slots, w.inflight, w.done, secs(w.avg_run), w.pid, c], {"data-worker": w.name}); }));
  renderTasks();
  for (const e of message.events || []) events.push(e);
  events = events.slice(-200);
  fill("events", events.slice().reverse().map(e => { const rest = Object.assign({}, e); delete rest.seq; delete rest.time; delete rest.kind; return row([new Date(e.time * 1000).toLocaleTimeString(), e.kind, JSON.stringify(rest)], {"data-event": e.kind}); }));
  const tp = document.getElementById("topics"); tp.replaceChildren();
  if (!(u.topics || []).length) tp.appendChild(el("p", "no topics", "muted"));
  for (const t of u.topics || []) {
    tp.appendChild(el("h3", t.name));
    const tb = el("table"); tb.appendChild(row(["partition", "start", "end"]));
    for (const p of t.partitions || []) tb.appendChild(row([p.partition, p.start, p.end]));
    for (const g of t.groups || []) tb.appendChild(row(["group " + g.name, "members " + (g.members || []).length, "lag " + JSON.stringify(g.lag)]));
    tp.appendChild(tb);
  }
  const ps = document.getElementById("pipesets"); ps.replaceChildren();
  if (!(u.pipesets || []).length) ps.appendChild(el("p", "no pipe sets", "muted"));
  for (const p of u.pipesets || []) ps.appendChild(el("pre", p.key + " " + JSON.stringify(p.meta)));
  const cp = document.getElementById("chaos"); cp.replaceChildren();
  if (!(u.chaos || []).length) cp.appendChild(el("p", "no chaos proxy reporting", "muted"));
  for (const c of u.chaos || []) cp.appendChild(el("pre", c.address + " -> " + c.meta.target + "  " + c.meta.faults + "\nconnections " + c.meta.connections + " (open " + c.meta.open + ")  cut " + c.meta.cut + "  refused " + c.meta.refused + "  corrupted " + c.meta.corrupted + "  stalls " + c.meta.stalls + "  bytes up " + c.meta.bytes_up + "  down " + c.meta.bytes_down));
  const j = document.getElementById("journal"); j.replaceChildren(el("p", u.journal ? (u.journal.directory + ": " + u.journal.bytes + " bytes in " + u.journal.files + " files, fsync " + u.journal.fsync + ", last written " + (u.journal.last_write ? new Date(u.journal.last_write * 1000).toLocaleTimeString() : "never") + ", last snapshot " + (u.journal.last_snapshot ? new Date(u.journal.last_snapshot * 1000).toLocaleTimeString() : "none yet")) : "no journal (state in memory only)", "muted"));
}
function renderTasks() {
  if (!last) return;
  const state = document.getElementById("fstate").value, name = document.getElementById("fname").value;
  const all = (last.queued || []).concat(last.tasks || []);
  fill("tasks", all.filter(t => (!state || t.state === state) && (!name || (t.name || "").includes(name))).map(t => {
    const c = el("span"); if (t.state === "queued") c.appendChild(button("cancel", "/api/tasks/" + t.id + "/cancel")); if (t.state === "running" || t.state === "reserved") c.appendChild(button("terminate", "/api/tasks/" + t.id + "/terminate"));
    const tr = row([t.id, t.name || "", el("span", t.state, t.state), t.worker || "", secs(t.runtime), c], {"data-task": t.id, "data-state": t.state});
    tr.onclick = () => { selected = t.id; showDetail(); }; return tr; }));
}
async function showDetail() {
  if (!selected) return;
  const r = await fetch("/api/tasks/" + encodeURIComponent(selected) + (token ? "?token=" + token : ""));
  document.getElementById("detail").textContent = JSON.stringify(await r.json(), null, 2);
}
document.getElementById("fstate").onchange = renderTasks; document.getElementById("fname").oninput = renderTasks;
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + (token ? "?token=" + token : ""));
  const conn = document.getElementById("conn");
  ws.onopen = () => { conn.textContent = "live"; events = []; series = []; };  // the feed starts over
  ws.onmessage = (m) => render(JSON.parse(m.data));
  ws.onclose = () => { conn.textContent = "reconnecting…"; setTimeout(connect, 1000); };
}
connect();
</script></body></html>
"""
