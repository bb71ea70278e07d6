"use strict";
const fmt = (v, digits = 1) => v === null || v === undefined ? "-" : (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(digits) : String(v));
const pct = (v) => v === null || v === undefined ? "-" : (v * 100).toFixed(0) + "%";
const secs = (v) => v === null || v === undefined ? "-" : v.toFixed(1) + " s";

function row(cells, tag = "td") {
  const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement(tag); td.textContent = c; tr.append(td); }
  return tr;
}

async function refresh() {
  const r = await fetch("/api/stats", { credentials: "same-origin" });
  const err = document.querySelector("#audit-error");
  if (r.status === 401) { err.textContent = "Sign in on the queue page first."; return; }
  if (!r.ok) { err.textContent = "Could not load the statistics: " + r.status; return; }
  err.textContent = "";
  const s = await r.json();
  const totals = document.querySelector("#totals"); totals.replaceChildren();
  for (const [k, v] of [["requests received", s.requests], ["queue depth", s.queue_depth], ["open claims", s.open_claims],
    ["answers", s.answers], ["expired unanswered", s.expired], ["claims abandoned", s.claims_abandoned],
    ["labels sent to the engine", s.labels_sent], ["labels waiting to be sent", s.outbox_backlog],
    ["items by status", Object.entries(s.items).map(([k2, v2]) => `${k2} ${v2}`).join(", ") || "-"]]) totals.append(row([k, fmt(v)]));
  const body = document.querySelector("#analysts tbody"); body.replaceChildren();
  for (const a of s.analysts) {
    body.append(row([a.analyst, a.answers, a.labels, a.cant_tell, a.skips, a.amendments, secs(a.median_time_to_answer),
      secs(a.median_latency), a.agreement_items, pct(a.agreement)].map((v) => fmt(v))));
  }
  const ag = document.querySelector("#agreement"); ag.replaceChildren();
  ag.append(row(["items answered twice", fmt(s.agreement.items)]), row(["agreed", fmt(s.agreement.agreed)]),
    row(["agreement rate", pct(s.agreement.rate)]), row(["Cohen's kappa", fmt(s.agreement.kappa, 3)]));
}
refresh();
setInterval(refresh, 5000);
