// Polls /status.json every second and redraws the tables. Every value is set as text (never as
// HTML): service and component names come from the platform's traffic, which anyone may publish.
"use strict";

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function fill(tableId, rows, render) {
  const body = document.querySelector("#" + tableId + " tbody");
  const fresh = document.createElement("tbody");
  for (const item of rows) {
    const tr = document.createElement("tr");
    render(tr, item);
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function percent(fraction) { return (100 * (fraction || 0)).toFixed(1) + " %"; }

function draw(view) {
  document.getElementById("cluster").textContent = view.cluster || "…";
  const overall = document.getElementById("overall");
  overall.textContent = view.status;
  overall.className = view.status;
  document.getElementById("updated").textContent = view.timestamp || "never";
  document.getElementById("stale").textContent = view.ready ? "" : "(stale: the supervisor is not answering)";
  fill("services", view.services, (tr, s) => {
    tr.dataset.service = s.service;
    cell(tr, s.service);
    cell(tr, s.status, s.status);
    cell(tr, s.breaker, s.breaker);
    cell(tr, percent(s.errorRate), "num");
    cell(tr, s.p95Ms == null ? "–" : s.p95Ms.toFixed(1) + " ms", "num");
    cell(tr, (s.callsPerSecond || 0).toFixed(1), "num");
  });
  fill("infrastructure", view.infrastructure, (tr, c) => {
    cell(tr, c.component);
    cell(tr, c.status, c.status);
  });
  fill("observed", Object.entries(view.observed), (tr, [name, n]) => {
    cell(tr, name);
    cell(tr, String(n), "num");
  });
}

async function poll() {
  try {
    const response = await fetch("/status.json", { cache: "no-store" });
    if (response.ok) draw(await response.json());
  } catch (e) {
    document.getElementById("stale").textContent = "(sfa-ops is not answering)";
  }
  setTimeout(poll, 1000);
}

poll();
