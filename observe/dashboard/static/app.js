// Strata dashboard: fetches the JSON API and the server-drawn SVG charts,
// and re-fetches whenever the event stream announces a change.
"use strict";

const $ = (id) => document.getElementById(id);
const CHARTS = ["epsilon", "metric", "loss", "participation", "rejections"];

function fmt(v, digits) {
  if (v === "inf") return "∞";
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits === undefined ? 4 : digits);
  return String(v);
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function getText(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.text();
}

function rows(tbody, list, cells) {
  tbody.replaceChildren();
  for (const item of list) {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells(item)) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

function renderStatus(s) {
  $("job").textContent = s.job ? "job " + s.job.name : "(no job yet)";
  $("committed").textContent = s.rounds.committed;
  $("planned").textContent = s.rounds.planned;
  let note = s.rounds.open ? "round " + s.rounds.open + " open" : "";
  if (s.rounds.aborted) note += (note ? ", " : "") + s.rounds.aborted + " aborted";
  if (s.finished) note = "finished: " + s.finish_reason;
  $("round-note").textContent = note;
  $("eps-public").textContent = fmt(s.epsilon.public);
  $("budget").textContent = fmt(s.budget, 3);
  $("budget-remaining").textContent = fmt(s.budget_remaining);
  $("metric-name").textContent = s.metric || "metric";
  $("metric").textContent = fmt(s.value);
  $("loss").textContent = fmt(s.loss);
  $("serving").textContent = s.serving_version;
  $("clients-active").textContent = fmt(s.clients.active || 0);
  $("clients-retired").textContent = fmt(s.clients.retired || 0);
  $("clients-withdrawn").textContent = fmt(s.clients.withdrawn || 0);
  $("noise-edge").textContent = fmt(s.noise.edge);
  $("noise-regional").textContent = fmt(s.noise.regional);
  $("noise-global").textContent = fmt(s.noise.global);
  $("clip").textContent = fmt(s.clip_norm);
  rows($("members").tBodies[0], s.members, (m) => [[m.id], [m.addr], [m.leader ? "leader" : "", m.leader ? "ok" : ""]]);
  $("node").textContent = s.node;
  $("raft-state").textContent = s.raft.state;
  $("raft-term").textContent = s.raft.term;
  $("raft-commit").textContent = s.raft.commit_index;
  $("raft-applied").textContent = s.raft.applied_index;
  $("audit-head").textContent = s.audit_head || "(empty)";
  $("audit-records").textContent = s.audit_records;
  const live = $("live");
  live.textContent = s.finished ? "job finished" : "live";
  live.className = "pill " + (s.finished ? "done" : "live");
  document.body.dataset.committed = s.rounds.committed;
  document.body.dataset.version = s.version;
}

function renderAlerts(list) {
  rows($("alerts").tBodies[0], list, (a) => [
    [a.name], [fmt(a.value), "num"], [fmt(a.threshold), "num"],
    [a.firing ? "FIRING" : "ok", a.firing ? "firing" : "ok"],
  ]);
  for (const [i, a] of list.entries()) $("alerts").tBodies[0].rows[i].title = a.detail;
}

function renderPolicy(p, s) {
  const res = $("policy-result");
  if (p.error) {
    res.textContent = "check failed: " + p.error;
    res.className = "firing";
  } else if (p.ok) {
    res.textContent = "the plan meets its policy (projected over " + p.rounds + " rounds, δ = " + p.delta + ")";
    res.className = "ok";
  } else {
    res.textContent = "policy broken: " + p.violations.map((v) => v.Rule + ": " + v.Detail).join("; ");
    res.className = "firing";
  }
  const obs = ["public", "global_operator", "regional_operator"];
  rows($("policy").tBodies[0], obs, (o) => [[o], [fmt(s.epsilon[o]), "num"], [fmt(p.projected_epsilon[o]), "num"], [fmt(p.sigma[o], 3), "num"]]);
}

async function renderCharts() {
  const svgs = await Promise.all(CHARTS.map((c) => getText("/api/v1/charts/" + c + ".svg")));
  CHARTS.forEach((c, i) => { $("chart-" + c).innerHTML = svgs[i]; });
}

async function refresh() {
  const [s, alerts, policy] = await Promise.all([getJSON("/api/v1/status"), getJSON("/api/v1/alerts"), getJSON("/api/v1/policy")]);
  await renderCharts();
  renderStatus(s);
  renderAlerts(alerts);
  renderPolicy(policy, s);
  $("updated").textContent = new Date().toLocaleTimeString();
  $("error").hidden = true;
}

let running = false;
let again = false;
function schedule() {
  if (running) { again = true; return; }
  running = true;
  refresh().catch((e) => {
    $("error").textContent = String(e.message || e);
    $("error").hidden = false;
    console.error("dashboard refresh:", e);
  }).finally(() => {
    running = false;
    if (again) { again = false; schedule(); }
  });
}

const events = new EventSource("/api/v1/events");
events.addEventListener("update", schedule);
events.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "pill"; };
schedule();
