// The review queue page: plain JavaScript, no build. Live updates arrive by EventSource (/api/stream).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { me: null, card: null, amending: null, renewTimer: null, es: null, seen: new Set(), recent: [], view: null, busy: false };

const REASONS = {
  uncertainty: ["uncertainty", "The model was unsure: its top probability was below the sampler's threshold."],
  random: ["random audit", "Picked at random (the audit share): keeps an unbiased estimate of live accuracy."],
  drift_boost: ["drift boost", "Asked for more labels while drift was detected."],
  cold_start: ["cold start", "The model had not yet learned any class."],
};

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  if (r.status === 204) return null;
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || r.statusText);
    const err = new Error(detail); err.status = r.status; throw err;
  }
  return data;
}

let toastTimer = null;
function toast(msg, error = false) {
  const t = $("#toast"); t.textContent = msg; t.className = "show" + (error ? " error" : "");
  clearTimeout(toastTimer); toastTimer = setTimeout(() => { t.className = ""; }, error ? 4000 : 1800);
}

function fmtAge(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  return (seconds / 3600).toFixed(1) + " h";
}
const now = () => Date.now() / 1000;
let skew = 0; // server clock minus ours
const serverNow = () => now() + skew;

// -- sign in -------------------------------------------------------------------------------------

async function start() {
  try { state.me = await api("GET", "/api/me"); } catch (e) { if (e.status === 401) return showSignIn(); throw e; }
  $("#signin").hidden = true; $("#main").hidden = false; $("#chips").hidden = false; $("#who").hidden = false;
  $("#analyst").textContent = state.me.analyst;
  const buttons = $("#class-buttons"); buttons.replaceChildren();
  state.me.classes.forEach((c, i) => buttons.append(h("button", { id: "btn-label-" + (i + 1), "data-label": c, onclick: () => answer({ label: c }) }, c + " ", h("kbd", {}, String(i + 1)))));
  connect();
  loadRecent();
}

function showSignIn() {
  $("#signin").hidden = false; $("#main").hidden = true; $("#chips").hidden = true; $("#who").hidden = true;
  $("#token").focus();
}

$("#signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { await api("POST", "/api/session", { token: $("#token").value }); $("#token").value = ""; $("#signin-error").textContent = ""; start(); }
  catch (e) { $("#signin-error").textContent = e.status === 401 ? "Unknown token." : e.message; }
});
$("#signout").addEventListener("click", async (ev) => {
  ev.preventDefault(); await release(); if (state.es) state.es.close(); await api("DELETE", "/api/session"); location.reload();
});

// -- the live queue ------------------------------------------------------------------------------

function connect() {
  if (state.es) state.es.close();
  const es = new EventSource("/api/stream");
  state.es = es;
  es.addEventListener("queue", (ev) => renderQueue(JSON.parse(ev.data)));
  es.onopen = () => { const l = $("#live"); l.textContent = "live"; l.className = "dot"; };
  es.onerror = () => { const l = $("#live"); l.textContent = "reconnecting"; l.className = "dot off"; };
}

function renderQueue(view) {
  state.view = view;
  skew = view.server_time - now();
  $("#depth").textContent = view.queue_depth; $("#available").textContent = view.available;
  $("#claims").textContent = view.open_claims; $("#expired").textContent = view.expired; $("#answers").textContent = view.answers;
  const list = $("#queue-list"); list.replaceChildren();
  for (const item of view.items) {
    const fresh = !state.seen.has(item.request_id); state.seen.add(item.request_id);
    const reason = REASONS[item.reason] ? REASONS[item.reason][0] : item.reason;
    list.append(h("li", {
      class: "queue-row" + (item.mine ? " mine" : "") + (fresh && state.seen.size > view.items.length ? " new" : ""),
      dataset: { requestId: item.request_id }, title: "open this item", onclick: () => open(item.request_id),
    },
      h("span", { class: "mono" }, item.event_id),
      h("span", {}, h("span", { class: "badge " + item.reason }, reason), item.double ? h("span", { class: "badge double", title: "two analysts answer this item" }, "2×") : null),
      h("span", { class: "meta" }, `score ${item.score.toFixed(2)} · priority ${item.priority.toFixed(2)} · age ${fmtAge(serverNow() - item.created_at)}`)));
  }
  $("#queue-empty").hidden = view.items.length > 0;
  if (state.card && !state.amending && view.my_claim !== state.card.request_id) {
    toast("Your claim on this item ended (it expired or was answered elsewhere).", true);
    clearCard();
  }
}

// -- the card ------------------------------------------------------------------------------------

function showCard(card, amending = null) {
  state.card = card; state.amending = amending;
  $("#empty-card").hidden = true; $("#card").hidden = false;
  $("#card").dataset.requestId = card.request_id;
  $("#amend-banner").hidden = !amending;
  if (amending) $("#amend-old").textContent = amending.label === null ? "can't tell" : amending.label;
  $("#event-id").textContent = card.event_id;
  const [reason, why] = REASONS[card.reason] || [card.reason, ""];
  $("#why").replaceChildren(h("div", { class: "muted" }, "why it was asked"), h("span", { class: "badge " + card.reason }, reason),
    card.double ? h("span", { class: "badge double" }, `two analysts answer this item (${card.answers_so_far} so far)`) : "", h("div", {}, why),
    h("div", { class: "muted" }, `p(query) ${card.p_query === null || card.p_query === undefined ? "-" : card.p_query.toFixed(3)} · priority ${card.priority.toFixed(2)}`));
  $("#model-version").textContent = card.model_version;
  $("#predicted").textContent = card.predicted === null ? "-" : card.predicted;
  $("#uncertainty").textContent = card.uncertainty.toFixed(3);
  const scores = $("#scores"); scores.replaceChildren();
  for (const [cls, p] of Object.entries(card.scores)) {
    scores.append(h("div", { class: "bar" }, h("span", {}, cls), h("span", { class: "track" }, h("span", { class: "fill", style: `left:0;width:${(p * 100).toFixed(1)}%` })), h("span", { class: "num" }, p.toFixed(3))));
  }
  const contrib = $("#contributions"); contrib.replaceChildren();
  const entries = Object.entries(card.contributions || {});
  $("#contrib-kind").textContent = card.contributions_kind === "linear"
    ? `(weight × scaled value; positive pushes towards ${state.me.positive_class || card.predicted})`
    : "(approximation: the model is not linear; z-score of each feature against the requests seen)";
  const top = Math.max(1e-9, ...entries.map(([, v]) => Math.abs(v)));
  for (const [name, v] of entries) {
    const width = (Math.abs(v) / top) * 50;
    const style = v >= 0 ? `left:50%;width:${width}%` : `left:${50 - width}%;width:${width}%`;
    contrib.append(h("div", { class: "bar" }, h("span", { class: "mono", title: name }, name), h("span", { class: "track" }, h("span", { class: "fill " + (v >= 0 ? "pos" : "neg"), style })), h("span", { class: "num" }, (v >= 0 ? "+" : "") + v.toFixed(3))));
  }
  if (!entries.length) contrib.append(h("div", { class: "muted" }, "not available yet"));
  const table = $("#features"); table.replaceChildren();
  for (const [name, v] of Object.entries(card.features)) table.append(h("tr", {}, h("td", { class: "mono" }, name), h("td", {}, Number.isInteger(v) ? v : v.toFixed(4))));
  $("#note").value = amending && amending.note ? amending.note : "";
  tickTimers();
  clearInterval(state.renewTimer);
  if (!amending) state.renewTimer = setInterval(renew, Math.max(1000, state.me.claim_ttl_seconds * 1000 / 3));
}

function clearCard() {
  clearInterval(state.renewTimer); state.card = null; state.amending = null;
  $("#card").hidden = true; $("#empty-card").hidden = false; delete $("#card").dataset.requestId;
}

function tickTimers() {
  const c = state.card; if (!c) return;
  $("#age").textContent = fmtAge(serverNow() - c.created_at);
  $("#expires").textContent = c.expires_at > serverNow() ? fmtAge(c.expires_at - serverNow()) : "expired (late answers still count)";
  $("#claim-left").textContent = c.claim_expires_at ? fmtAge(c.claim_expires_at - serverNow()) : "-";
}
setInterval(tickTimers, 1000);

async function guarded(fn) {
  if (state.busy) return; state.busy = true;
  try { await fn(); } catch (e) { toast(e.message, true); } finally { state.busy = false; }
}

function next() {
  return guarded(async () => {
    const card = await api("POST", "/api/next");
    if (card) showCard(card); else { clearCard(); toast("Nothing left for you in the queue."); }
  });
}

function open(requestId) {
  return guarded(async () => showCard(await api("POST", `/api/items/${encodeURIComponent(requestId)}/claim`)));
}

async function renew() {
  const c = state.card; if (!c || state.amending) return;
  try { c.claim_expires_at = (await api("POST", `/api/items/${encodeURIComponent(c.request_id)}/renew`)).claim_expires_at; }
  catch (e) { if (e.status === 409) { toast(e.message, true); clearCard(); } }
}

async function release() {
  const c = state.card; if (!c || state.amending) return;
  try { await api("POST", `/api/items/${encodeURIComponent(c.request_id)}/release`); } catch (e) { /* best effort */ }
}

function answer(choice) {
  return guarded(async () => {
    const c = state.card; if (!c) return toast("Open an item first (N).", true);
    const body = { ...choice, note: $("#note").value.trim() || null };
    if (state.amending) {
      const r = await api("POST", `/api/answers/${encodeURIComponent(state.amending.answer_id)}/amend`, body);
      toast(r.warning ? r.warning : `Amended to ${r.label === null ? "can't tell" : r.label}` + (r.sent ? " — correction sent" : ""), !!r.warning);
      clearCard(); loadRecent(); return;
    }
    const r = await api("POST", `/api/items/${encodeURIComponent(c.request_id)}/answer`, body);
    toast(r.label === null ? "Can't tell — closed without a label" : `${r.label}` + (r.sent ? " — sent to the model" : " — recorded for agreement"));
    clearCard(); loadRecent();
    const card = await api("POST", "/api/next"); if (card) showCard(card);
  });
}

function skip() {
  return guarded(async () => {
    const c = state.card; if (!c || state.amending) return;
    await api("POST", `/api/items/${encodeURIComponent(c.request_id)}/skip`);
    toast("Skipped: back to the queue for the others");
    clearCard();
    const card = await api("POST", "/api/next"); if (card) showCard(card);
  });
}

async function loadRecent() {
  try { state.recent = await api("GET", "/api/answers/recent"); } catch (e) { return; }
  const list = $("#recent"); list.replaceChildren();
  for (const a of state.recent) {
    list.append(h("li", { dataset: { answerId: a.answer_id } }, h("span", { class: "mono" }, a.event_id),
      h("b", {}, a.label === null ? "can't tell" : a.label), h("button", { onclick: () => amendAnswer(a.answer_id) }, "amend")));
  }
  if (!state.recent.length) list.append(h("li", { class: "muted" }, "none yet"));
}

function amendAnswer(answerId) {
  return guarded(async () => {
    await release();
    const card = await api("GET", `/api/answers/${encodeURIComponent(answerId)}`);
    showCard(card, card.answer);
  });
}

function undo() {
  if (!state.recent.length) return toast("No recent answer to undo.", true);
  return amendAnswer(state.recent[0].answer_id);
}

for (const [id, fn] of [["#btn-next", next], ["#btn-cant-tell", () => answer({ cant_tell: true })], ["#btn-skip", skip], ["#btn-undo", undo]]) {
  $(id).addEventListener("click", fn);
}

document.addEventListener("keydown", (ev) => {
  if (!state.me || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (typing) { if (ev.key === "Escape") document.activeElement.blur(); return; }
  const k = ev.key.toLowerCase();
  if (/^[1-9]$/.test(k)) {
    const cls = state.me.classes[Number(k) - 1];
    if (cls !== undefined) { ev.preventDefault(); answer({ label: cls }); }
  } else if (k === "0" || k === "c") { ev.preventDefault(); answer({ cant_tell: true }); }
  else if (k === "n" || k === "enter") { ev.preventDefault(); if (!state.card || state.amending) next(); }
  else if (k === "s") { ev.preventDefault(); skip(); }
  else if (k === "u") { ev.preventDefault(); undo(); }
  else if (k === "e") { ev.preventDefault(); $("#note").focus(); }
  else if (k === "?") { const d = $("#help"); d.open = !d.open; }
  else if (k === "escape") { if (state.amending) clearCard(); else if (state.card) { release(); clearCard(); } }
});

window.addEventListener("pagehide", () => {
  const c = state.card;
  if (c && !state.amending) navigator.sendBeacon(`/api/items/${encodeURIComponent(c.request_id)}/release`);
});

start();
