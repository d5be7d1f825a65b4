// dashboard.js: fetches /api/rlhf/jobs, a job's /metrics and /api/rlhf/feedback/stats with the
// reader token kept in localStorage, fills the tables, and draws the curves with a small canvas
// line chart written here (no library).
"use strict";

const state = { token: localStorage.getItem("n3rlhf-token") || "", selected: null };
const COLORS = ["#1a6ed8", "#c62828", "#1a8a3a", "#8a6d1a", "#7b1fa2", "#00838f"];

async function api(path) {
  const response = await fetch(path, { headers: state.token ? { Authorization: "Bearer " + state.token } : {} });
  if (!response.ok) {
    let reason = response.statusText;
    try { reason = (await response.json()).error.reason; } catch (e) { /* not JSON */ }
    throw new Error(response.status + " " + reason);
  }
  return response.json();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
}

function renderJobs(jobs) {
  const body = document.querySelector("#jobs tbody");
  body.innerHTML = "";
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.className = "job" + (job.id === state.selected ? " selected" : "");
    row.dataset.jobId = job.id;
    cell(row, job.id);
    cell(row, job.job_name);
    cell(row, job.algorithm);
    cell(row, job.status, "status status-" + job.status);
    cell(row, job.started_at);
    cell(row, job.finished_at);
    cell(row, job.latest_metrics && job.latest_metrics.loss !== undefined ? Number(job.latest_metrics.loss).toFixed(4) : "");
    row.addEventListener("click", () => { state.selected = job.id; refresh(); });
    body.appendChild(row);
  }
  if (state.selected === null && jobs.length > 0) state.selected = jobs[0].id;
}

function renderAgents(stats) {
  const body = document.querySelector("#agents tbody");
  body.innerHTML = "";
  for (const agent of stats.agents) {
    const row = document.createElement("tr");
    row.className = "agent";
    cell(row, agent.agent_id);
    cell(row, agent.count);
    body.appendChild(row);
  }
  document.getElementById("feedback-total").textContent = String(stats.total);
}

// The series worth plotting: loss and every reward-like scalar present in the records.
function seriesOf(points) {
  const names = new Set();
  for (const p of points) {
    for (const key of Object.keys(p)) {
      if (key === "loss" || key.indexOf("reward") >= 0) {
        if (typeof p[key] === "number") names.add(key);
      }
    }
  }
  const series = [];
  for (const name of names) {
    const xy = points.filter((p) => typeof p[name] === "number" && typeof p.step === "number").map((p) => [p.step, p[name]]);
    if (xy.length > 0) series.push({ name, xy });
  }
  return series;
}

function drawChart(canvas, series) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 40;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad, 10, w - pad - 10, h - pad - 10);
  canvas.dataset.series = series.map((s) => s.name).join(",");
  canvas.dataset.points = String(series.reduce((n, s) => n + s.xy.length, 0));
  if (series.length === 0) {
    ctx.fillStyle = "#666";
    ctx.fillText("no metrics yet", w / 2 - 30, h / 2);
    return;
  }
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of series) for (const [x, y] of s.xy) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
  const sx = (x) => pad + (x - x0) / (x1 - x0) * (w - pad - 10);
  const sy = (y) => 10 + (1 - (y - y0) / (y1 - y0)) * (h - pad - 10);
  ctx.fillStyle = "#333";
  ctx.fillText(y1.toPrecision(3), 2, 16);
  ctx.fillText(y0.toPrecision(3), 2, h - pad);
  ctx.fillText(String(x0), pad, h - pad + 14);
  ctx.fillText(String(x1), w - 40, h - pad + 14);
  ctx.fillText("step", w / 2, h - 8);
  const legend = document.getElementById("legend");
  legend.innerHTML = "";
  series.forEach((s, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    s.xy.forEach(([x, y], k) => (k === 0 ? ctx.moveTo(sx(x), sy(y)) : ctx.lineTo(sx(x), sy(y))));
    ctx.stroke();
    const label = document.createElement("span");
    label.className = "series";
    label.style.color = COLORS[i % COLORS.length];
    label.textContent = s.name;
    legend.appendChild(label);
  });
}

async function refresh() {
  const line = document.getElementById("status-line");
  if (!state.token) {
    line.textContent = "enter a reader token";
    return;
  }
  try {
    const [jobs, stats] = await Promise.all([api("/api/rlhf/jobs?limit=50"), api("/api/rlhf/feedback/stats")]);
    renderJobs(jobs.jobs);
    renderAgents(stats);
    if (state.selected !== null) {
      const metrics = await api("/api/rlhf/jobs/" + state.selected + "/metrics?max_points=500");
      document.getElementById("chart-title").textContent = "(job " + state.selected + ")";
      drawChart(document.getElementById("chart"), seriesOf(metrics.points));
    }
    line.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (error) {
    line.textContent = "error: " + error.message;
    document.body.dataset.loaded = "error";
  }
}

document.getElementById("token").value = state.token;
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  localStorage.setItem("n3rlhf-token", state.token);
  refresh();
});
refresh();
setInterval(refresh, 5000);
