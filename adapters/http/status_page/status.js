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

// A list that may be unknown (null: the source does not carry it) or empty (none), with its total
// when the list shows only the latest entries.
function section(tableId, rows, total, emptyText, render) {
  fill(tableId, rows || [], render);
  const shown = (rows || []).length;
  document.getElementById(tableId + "-empty").textContent =
    rows == null ? "not available" : shown === 0 ? emptyText : "";
  const count = document.getElementById(tableId + "-total");
  if (!count) return;
  if (total == null || rows == null) count.textContent = "";
  else count.textContent = total > shown ? "(" + shown + " of " + total + ")" : "(" + total + ")";
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
  section("incidents", view.incidents, view.incidentsTotal, "no open incidents", (tr, i) => {
    tr.dataset.incident = i.id;
    cell(tr, i.openedAt || "–", "when");
    cell(tr, i.severity, i.severity);
    cell(tr, i.title || i.id);
    cell(tr, i.kind);
    cell(tr, i.source);
    cell(tr, i.state, i.state);
  });
  section("actions", view.actions, view.actionsTotal, "no active actions", (tr, a) => {
    tr.dataset.action = a.action;
    cell(tr, a.action);
    cell(tr, a.target);
    cell(tr, a.until || "no expiry", "when");
    cell(tr, a.incidentId || "–");
  });
  section("alerts", view.alerts, null, "no recent alerts", (tr, a) => {
    tr.dataset.alert = a.alertname;
    cell(tr, a.startsAt || "–", "when");
    cell(tr, a.alertname);
    cell(tr, a.severity, a.severity);
    cell(tr, a.service);
    cell(tr, a.summary);
    cell(tr, a.state, a.state);
  });
  document.getElementById("alerts-firing").textContent =
    view.alertsFiring == null ? "" : "(" + view.alertsFiring + " firing)";
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
