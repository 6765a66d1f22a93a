// The virtbus dashboard: plain JavaScript, no build step, every asset served by virtbus.
"use strict";

const ACTIONS = ["start", "shutdown", "destroy", "reboot", "suspend", "resume", "autostart", "undefine"];
const FEED_MAX = 2000;
const state = { session: null, hosts: new Map(), domains: new Map(), events: [], offsets: new Set(), stream: null, chart: [] };

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}
function showError(message) { $("error").textContent = message; $("error").classList.toggle("hidden", !message); }
function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : new Date(iso).toLocaleString();
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": state.session ? state.session.csrf : "" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, { credentials: "same-origin", ...init });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) { const e = new Error(data.error || response.statusText); e.status = response.status; throw e; }
  return data;
}

// ---------------------------------------------------------------- session --
async function boot() {
  try { state.session = await api("/api/session"); } catch (e) { if (e.status === 401) return showLogin(); throw e; }
  $("login").classList.add("hidden");
  $("main").classList.remove("hidden");
  $("who").textContent = `${state.session.user} (${state.session.role})`;
  $("logout").classList.toggle("hidden", !state.session.login);
  document.body.classList.toggle("read-only", !state.session.may_act);
  document.body.classList.toggle("no-stats", !state.session.stats);
  connect();
  route();
}
function showLogin() { $("login").classList.remove("hidden"); $("main").classList.add("hidden"); }
$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { await api("/api/login", { user: $("login-user").value, password: $("login-password").value }); showError(""); boot(); }
  catch (e) { showError(e.message); }
});
$("logout").addEventListener("click", async () => { await api("/api/logout", {}); location.reload(); });

// ------------------------------------------------------------ live stream --
function connect() {
  if (state.stream) state.stream.close();
  const stream = new EventSource("/api/stream");
  state.stream = stream;
  stream.onmessage = (message) => apply(JSON.parse(message.data));
  stream.onerror = () => banner("The dashboard is out of reach; reconnecting…", false);
}
function banner(text, ok) {
  $("banner").textContent = text; $("banner").classList.toggle("hidden", !text); $("banner").classList.toggle("ok", !!ok);
}
function brokerBadge(broker) {
  $("broker").textContent = broker.connected ? "broker: connected" : "broker: reconnecting";
  $("broker").className = "badge " + (broker.connected ? "alive" : "missing");
}
function apply(message) {
  switch (message.type) {
    case "snapshot":
      state.hosts = new Map(message.hosts.map((h) => [h.host, h]));
      for (const event of message.events) addEvent(event, false);
      brokerBadge(message.broker);
      if (!$("banner").classList.contains("ok")) banner("", false);
      break;
    case "broker":
      brokerBadge(message);
      banner(message.connected ? "Reconnected to the broker; the feed resumed where it stopped." : `Broker connection lost: ${message.message}`, message.connected);
      break;
    case "host": state.hosts.set(message.host.host, message.host); break;
    case "domains":
      state.hosts.set(message.host.host, message.host);
      state.domains.set(message.host.host, new Map(message.domains.map((d) => [d.uuid, d])));
      break;
    case "domain":
      state.hosts.set(message.host.host, message.host);
      if (!state.domains.has(message.host.host)) state.domains.set(message.host.host, new Map());
      state.domains.get(message.host.host).set(message.domain.uuid, message.domain);
      break;
    case "removed":
      state.hosts.set(message.host.host, message.host);
      state.domains.get(message.host.host)?.delete(message.uuid);
      break;
    case "event": addEvent(message.event, true); break;
  }
  render();
}
function addEvent(event, live) {
  if (state.offsets.has(event.offset)) return;
  state.offsets.add(event.offset);
  state.events.push(event);
  if (state.events.length > FEED_MAX) state.offsets.delete(state.events.shift().offset);
}

// ----------------------------------------------------------------- routes --
let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; draw(); });
}
function route() {
  for (const id of ["fleet-view", "host-view", "domain-view", "events-view"]) $(id).classList.add("hidden");
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  state.route = parts;
  if (parts[0] === "host" && parts[2] === "domain") { $("domain-view").classList.remove("hidden"); loadDomain(parts[1], parts[3]); }
  else if (parts[0] === "host") { $("host-view").classList.remove("hidden"); loadHost(parts[1]); }
  else if (parts[0] === "events") $("events-view").classList.remove("hidden");
  else $("fleet-view").classList.remove("hidden");
  draw();
}
window.addEventListener("hashchange", route);
function draw() {
  const [page] = state.route || [""];
  if (page === "host" && state.route[2] === "domain") drawDomain();
  else if (page === "host") drawHost();
  else if (page === "events") drawFeed();
  else drawFleet();
}

// ------------------------------------------------------------------ fleet --
function drawFleet() {
  const groups = new Set();
  for (const h of state.hosts.values()) h.groups.forEach((g) => groups.add(g));
  for (const id of ["filter-group", "bc-group"]) {
    const select = $(id), have = new Set([...select.options].map((o) => o.value));
    for (const g of [...groups].sort()) if (!have.has(g)) select.append(el("option", { value: g }, g));
  }
  const group = $("filter-group").value, presence = $("filter-presence").value;
  const wanted = $("filter-state").value, name = $("filter-host").value;
  const rows = [];
  for (const h of [...state.hosts.values()].sort((a, b) => a.host.localeCompare(b.host))) {
    if (group && !h.groups.includes(group)) continue;
    if (presence && h.presence !== presence) continue;
    if (wanted && !h.states[wanted]) continue;
    if (name && !h.host.includes(name)) continue;
    const counts = Object.entries(h.states).map(([s, n]) => el("span", { class: `badge ${s}` }, `${s} ${n}`));
    rows.push(el("tr", { "data-host": h.host },
      el("td", {}, el("a", { href: `#/host/${encodeURIComponent(h.host)}` }, h.host)),
      el("td", {}, el("span", { class: `badge presence ${h.presence}` }, h.presence)),
      el("td", { class: "seen" }, ago(h.last_seen)),
      el("td", {}, h.groups.join(", ")),
      el("td", {}, h.engine_version), el("td", {}, h.agent_version),
      el("td", { class: "count" }, h.domains),
      el("td", {}, ...counts)));
  }
  $("fleet").tBodies[0].replaceChildren(...rows);
  // ms from navigation to the first drawn fleet, for the benchmark (bench/b9_dashboard.py)
  if (rows.length && window.fleetDrawnAt === undefined) window.fleetDrawnAt = performance.now();
  $("fleet-count").textContent = `${rows.length} of ${state.hosts.size} hosts`;
}
for (const id of ["filter-group", "filter-presence", "filter-state", "filter-host"]) $(id).addEventListener("input", render);

$("bc-run").addEventListener("click", () => {
  const action = $("bc-action").value, domain = $("bc-domain").value.trim(), group = $("bc-group").value;
  if (!domain) return showError("Name the domain to broadcast to.");
  const scope = group ? `every host of group ${group}` : "every host of the fleet";
  confirmThen(`${action} domain ${domain} on ${scope}?`, async () => {
    const body = { action, domain, ...(group ? { group } : { all: true }) };
    if (action === "autostart") body.autostart = true;
    const data = await api("/api/action", body);
    showReport(action, domain, data.report);
  });
});
function showReport(action, domain, report) {
  const list = (items, attr, text) => el("ul", {}, ...items.map((h) => el("li", { [attr]: h }, text(h))));
  $("report").replaceChildren(
    el("strong", {}, `${action} ${domain}: ${report.answered.length} answered, ${Object.keys(report.failed).length} failed, ${report.missing.length} missing (${report.elapsed_s} s)`),
    list(report.answered, "data-answered", (h) => `${h}: done`),
    list(Object.keys(report.failed), "data-failed", (h) => `${h}: ${report.failed[h]}`),
    list(report.missing, "data-missing", (h) => `${h}: missing (no answer)`));
  $("report").classList.remove("hidden");
}

// ------------------------------------------------------------------- host --
async function loadHost(host) {
  try { const data = await api(`/api/hosts/${encodeURIComponent(host)}`);
    state.hosts.set(host, data.host); state.domains.set(host, new Map(data.domains.map((d) => [d.uuid, d]))); render();
    if (state.session.stats) await loadHostStats(host, data.domains); }
  catch (e) { showError(e.message); }
}
// The statistics of the host's running domains, once per visit (the statistics call).
state.hostStats = new Map();
async function loadHostStats(host, domains) {
  for (const d of domains.filter((d) => d.state_name === "running")) {
    try { const data = await api(`/api/hosts/${encodeURIComponent(host)}/domains/${d.uuid}/stats`);
      state.hostStats.set(d.uuid, data.stats); render(); }
    catch (e) { return; }
  }
}
function statText(host, domain, what) {
  const stats = state.hostStats.get(domain.uuid);
  if (!stats) return "";
  if (what === "cpu") return stats["cpu.time"] !== undefined ? `${(stats["cpu.time"] / 1e9).toFixed(1)} s` : "";
  const kib = stats["balloon.rss"] ?? stats["balloon.current"];
  return kib !== undefined ? `${(kib / 1024).toFixed(1)} MiB` : "";
}
function actionButtons(host, domain) {
  return ACTIONS.map((action) => el("button", { type: "button", "data-action": action, onclick: () => act(host, domain, action) },
    action === "autostart" ? (domain.autostart ? "no autostart" : "autostart") : action));
}
function act(host, domain, action) {
  confirmThen(`${action} domain ${domain.name} on host ${host}?`, async () => {
    const body = { action, host, uuid: domain.uuid };
    if (action === "autostart") body.autostart = !domain.autostart;
    await api("/api/action", body);
    if (action === "autostart" || action === "undefine") loadHost(host);
  });
}
function drawHost() {
  const host = state.route[1], h = state.hosts.get(host);
  $("host-name").textContent = host;
  if (h) { $("host-presence").textContent = h.presence; $("host-presence").className = `badge ${h.presence}`;
    $("host-facts").textContent = `groups: ${h.groups.join(", ") || "none"} · engine ${h.engine_version} · agent ${h.agent_version} · last seen ${ago(h.last_seen)}`; }
  const domains = [...(state.domains.get(host) || new Map()).values()].sort((a, b) => a.name.localeCompare(b.name));
  $("domains").tBodies[0].replaceChildren(...domains.map((d) => el("tr", { "data-domain": d.name },
    el("td", {}, el("a", { href: `#/host/${encodeURIComponent(host)}/domain/${d.uuid}` }, d.name)),
    el("td", {}, el("span", { class: `badge state ${d.state_name}` }, d.state_name)),
    el("td", {}, d.reason), el("td", {}, d.id < 0 ? "-" : d.id),
    el("td", {}, d.autostart ? "yes" : "no"), el("td", {}, d.persistent ? "yes" : "no"),
    el("td", { class: "stats-only" }, statText(host, d, "cpu")), el("td", { class: "stats-only" }, statText(host, d, "mem")),
    el("td", { class: "acts actions-only" }, ...actionButtons(host, d)))));
}

// ----------------------------------------------------------------- domain --
async function loadDomain(host, uuid) {
  state.detail = null; state.chart = [];
  try { state.detail = await api(`/api/hosts/${encodeURIComponent(host)}/domains/${uuid}`); render(); }
  catch (e) { showError(e.message); }
  if (state.session.stats) sampleStats(host, uuid);
}
async function sampleStats(host, uuid) {
  while (state.route[3] === uuid) {
    try { const data = await api(`/api/hosts/${encodeURIComponent(host)}/domains/${uuid}/stats`);
      state.chart.push({ t: Date.now(), stats: data.stats }); if (state.chart.length > 120) state.chart.shift(); drawStats(); }
    catch (e) { document.body.classList.add("no-stats"); return; }
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
}
function drawStats() {
  const last = state.chart[state.chart.length - 1];
  if (!last) return;
  $("domain-stats").replaceChildren(...Object.entries(last.stats).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  const cpu = [], mem = [];
  for (let i = 1; i < state.chart.length; i++) {
    const a = state.chart[i - 1], b = state.chart[i];
    const dt = (b.t - a.t) * 1e6;
    cpu.push(dt > 0 ? Math.min(1, ((b.stats["cpu.time"] || 0) - (a.stats["cpu.time"] || 0)) / dt) : 0);
    mem.push(b.stats["balloon.rss"] || b.stats["balloon.current"] || 0);
  }
  const top = Math.max(1, ...mem);
  const line = (values, scale) => values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * 300},${100 - (v / scale) * 95}`).join(" ");
  const svg = $("chart"); svg.replaceChildren();
  for (const [values, scale, cls] of [[cpu, 1, "cpu"], [mem, top, "mem"]]) {
    const p = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    p.setAttribute("points", line(values, scale)); p.setAttribute("class", cls); svg.append(p);
  }
}
function drawDomain() {
  const [, host, , uuid] = state.route, detail = state.detail;
  const record = state.domains.get(host)?.get(uuid) || detail?.record;
  $("domain-host").textContent = host; $("domain-host").href = `#/host/${encodeURIComponent(host)}`;
  if (record) { $("domain-name").textContent = record.name; $("domain-state").textContent = record.state_name;
    $("domain-state").className = `badge state ${record.state_name}`; $("domain-actions").replaceChildren(...actionButtons(host, record)); }
  if (!detail) return;
  const info = { ...(record || {}), ...(detail.info || {}) };
  $("domain-info").replaceChildren(...Object.entries(info).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  $("domain-xml").textContent = detail.xml || "";
  const events = state.events.filter((e) => e.host === host && e.domain && e.domain.uuid === uuid);
  $("domain-events").replaceChildren(...events.slice(-100).reverse().map(feedLine));
}

// ------------------------------------------------------------------- feed --
function feedLine(e) {
  const what = e.domain ? `${e.domain.name}` : "";
  const extra = e.kind === "lifecycle" ? ` ${e.detail}` : e.kind === "tunable" ? ` ${JSON.stringify(e.params)}` : "";
  return el("li", { "data-offset": e.offset, "data-type": e.type, "data-domain": e.domain ? e.domain.name : "" }, `#${e.offset} ${e.time} ${e.host} ${e.type} ${what}${extra}`);
}
function drawFeed() {
  const host = $("feed-host").value, group = $("feed-group").value, domain = $("feed-domain").value, type = $("feed-type").value;
  const shown = state.events.filter((e) =>
    (!host || e.host.includes(host)) && (!domain || (e.domain && e.domain.name.includes(domain))) &&
    (!type || e.type.includes(type)) && (!group || (state.hosts.get(e.host)?.groups || []).includes(group)));
  $("feed").replaceChildren(...shown.slice(-500).reverse().map(feedLine));
}
for (const id of ["feed-host", "feed-group", "feed-domain", "feed-type"]) $(id).addEventListener("input", render);

// ---------------------------------------------------------------- confirm --
function confirmThen(text, work) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  const ok = $("confirm-ok").cloneNode(true); $("confirm-ok").replaceWith(ok);
  ok.addEventListener("click", async () => {
    dialog.close(); showError("");
    try { await work(); } catch (e) { showError(e.message); }
  });
  $("confirm-cancel").onclick = () => dialog.close();
  dialog.showModal();
}

setInterval(() => { if (!state.route || !state.route[0]) render(); }, 5000);
boot().catch((e) => showError(e.message));
