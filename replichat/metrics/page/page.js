// The live cluster page: polls this replica's /api/cluster once a second and redraws.
// Plain DOM, no framework, nothing loaded from elsewhere.
"use strict";

const POLL_MS = 1000;
let token = null;        // the cluster controls' token, when this replica offers them
let pages = {};          // other replicas' pages, for when this one goes down
let busy = false;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

function renderLeader(data) {
  const leader = document.getElementById("leader");
  leader.dataset.leader = String(data.leader);
  leader.textContent = data.leader ? `Leader: replica ${data.leader} (term ${data.term})` : `Leader: none (term ${data.term})`;
  leader.className = data.leader ? "" : "none";
  const counts = [];
  if (data.users !== null && data.users !== undefined) counts.push(`${data.users} users`);
  if (data.queued !== null && data.queued !== undefined) counts.push(`${data.queued} messages queued`);
  document.getElementById("counts").textContent = counts.join(", ");
}

function controlButtons(id) {
  const cell = el("td", {class: "controls-only"});
  for (const [action, label] of [["kill", "kill -9"], ["pause", "pause"], ["resume", "resume"], ["restart", "restart"]]) {
    const button = el("button", {"data-action": action, "data-replica": String(id), type: "button"}, label);
    button.addEventListener("click", () => control(action, id));
    cell.appendChild(button);
  }
  return cell;
}

function renderReplicas(data) {
  const body = document.querySelector("#replicas tbody");
  body.replaceChildren();
  for (const r of data.replicas) {
    const row = el("tr", {"data-replica": String(r.id)});
    if (r.reachable && r.role === "leader") row.classList.add("leader");
    if (!r.reachable) row.classList.add("down");
    if (r.self) row.classList.add("self");
    row.appendChild(el("td", {}, String(r.id)));
    if (r.reachable) {
      row.appendChild(el("td", {class: `role ${r.role}`}, r.role));
      for (const value of [r.term, r.leader || "—", r.commit, r.applied, r.lag]) row.appendChild(el("td", {}, String(value)));
      row.appendChild(el("td", {}, r.self ? "this replica" : `yes, ${r.rtt_ms} ms`));
    } else {
      row.appendChild(el("td", {class: "role"}, "—"));
      for (let i = 0; i < 5; i++) row.appendChild(el("td", {}, "—"));
      row.appendChild(el("td", {class: "unreachable"}, "unreachable"));
    }
    row.appendChild(controlButtons(r.id));
    body.appendChild(row);
  }
}

function renderRates(history) {
  const writes = [], deliveries = [];
  for (let i = 1; i < history.length; i++) {
    const dt = history[i][0] - history[i - 1][0];
    if (dt <= 0) continue;
    writes.push([history[i][0], Math.max(0, (history[i][1] - history[i - 1][1]) / dt)]);
    deliveries.push([history[i][0], Math.max(0, (history[i][2] - history[i - 1][2]) / dt)]);
  }
  const now = history.length ? history[history.length - 1][0] : 0;
  const top = Math.max(1, ...writes.map(p => p[1]), ...deliveries.map(p => p[1]));
  const points = series => series.map(([t, v]) =>
    `${(600 - (now - t) * 2).toFixed(1)},${(155 - v / top * 150).toFixed(1)}`).join(" ");
  document.getElementById("writes-line").setAttribute("points", points(writes));
  document.getElementById("deliveries-line").setAttribute("points", points(deliveries));
  document.getElementById("chart-top").textContent = `${top.toFixed(0)}/s`;
  const last = series => series.length ? `${series[series.length - 1][1].toFixed(0)}/s` : "";
  document.getElementById("writes-rate").textContent = last(writes);
  document.getElementById("deliveries-rate").textContent = last(deliveries);
}

function renderTimeline(events) {
  const list = document.getElementById("timeline");
  list.replaceChildren();
  for (const e of events.slice().reverse()) {
    const item = el("li");
    item.appendChild(el("span", {class: "when"}, clock(e.t)));
    item.appendChild(document.createTextNode(`term ${e.term}: ${e.what}`));
    list.appendChild(item);
  }
}

function render(data) {
  token = data.control ? data.control.token : null;
  pages = data.pages || pages;
  document.body.classList.toggle("controls", token !== null);
  const source = document.getElementById("source");
  source.className = "";
  source.textContent = `served by replica ${data.self}, updated ${clock(data.time)}`;
  renderLeader(data);
  renderReplicas(data);
  renderRates(data.history);
  renderTimeline(data.timeline);
}

function showDown(error) {
  const source = document.getElementById("source");
  source.className = "down";
  const others = Object.entries(pages).map(([id, url]) => `${id}: ${url}`).join("  ");
  source.textContent = `this replica is not answering (${error}).` + (others ? ` Other replicas' pages: ${others}` : "");
}

async function control(action, id) {
  const result = document.getElementById("control-result");
  result.textContent = `${action} replica ${id}…`;
  try {
    const answer = await fetch(`/api/control/${action}/${id}`, {method: "POST", headers: {"X-Replichat-Control": token}});
    const body = await answer.json();
    result.textContent = body.message || `${action}: ${answer.status}`;
  } catch (error) {
    result.textContent = `${action} replica ${id}: ${error}`;
  }
  poll();
}

async function poll() {
  if (busy) return;
  busy = true;
  try {
    const answer = await fetch("/api/cluster", {cache: "no-store"});
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    render(await answer.json());
  } catch (error) {
    showDown(error.message || String(error));
  } finally {
    busy = false;
  }
}

poll();
setInterval(poll, POLL_MS);
