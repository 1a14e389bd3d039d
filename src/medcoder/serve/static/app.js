// The coder's workbench: paste a note, code it, see each code's evidence, accept / reject / add, export.
// Plain JavaScript, no build step, no network beyond this service.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("medcoder-token") || "",
  version: "",
  text: "",          // the note as coded (the evidence offsets point into it)
  note: null,        // the /v1/code result of that note
  selected: -1,      // index into the listed codes
  listed: [],        // codes shown: suggested, then never-seen-in-training ones
  decisions: new Map(), // code -> {action, description, probability}
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function setStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, { ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  const isJson = (response.headers.get("content-type") || "").includes("application/json");
  const payload = isJson ? await response.json() : await response.text();
  if (response.status === 401) {
    $("token-dialog").showModal();
  }
  if (!response.ok) {
    const message = isJson && payload.error ? payload.error : `HTTP ${response.status}`;
    const retry = response.headers.get("Retry-After");
    const error = new Error(retry ? `${message} (retry in ${retry} s)` : message);
    error.status = response.status;
    error.retryAfter = retry ? Number(retry) : null;
    throw error;
  }
  return payload;
}

// Offsets from the service count Unicode code points (Python); JavaScript strings count UTF-16 units.
function utf16Offsets(text) {
  const map = [0];
  let unit = 0;
  for (const ch of text) { unit += ch.length; map.push(unit); }
  return (point) => map[Math.min(point, map.length - 1)];
}

// ------------------------------------------------------------------ coding
async function codeNote() {
  const text = $("note-text").value;
  if (!text.trim()) { setStatus("Paste or open a note first.", true); return; }
  setStatus("Coding…");
  $("code-btn").disabled = true;
  try {
    const body = { text, explain: true, top_k: 15 };
    const id = $("note-id").value.trim();
    if (id) body.id = id;
    const result = await api("/v1/code", { method: "POST", body });
    state.version = result.model_version;
    state.text = text;
    state.note = result.notes[0];
    state.listed = [...state.note.codes, ...(state.note.new_codes || [])];
    state.decisions = new Map();
    renderCodes();
    renderDecisions();
    showNoteView();
    const predicted = state.note.codes.filter((c) => c.predicted).length;
    setStatus(`${predicted} code(s) predicted, ${state.listed.length} listed` + (result.explained ? "" : " (this model gives no evidence spans)"));
    if (state.listed.length) select(0);
    $("export-btn").disabled = false;
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    $("code-btn").disabled = false;
  }
}

function codeItem(code, index) {
  const decision = state.decisions.get(code.code);
  const li = el("li", {
    class: [code.predicted ? "predicted" : "", decision ? decision.action : "", index === state.selected ? "selected" : ""].join(" ").trim(),
    "data-code": code.code,
    "data-index": index,
  });
  const percent = (100 * code.probability).toFixed(code.probability < 0.1 ? 1 : 0) + "%";
  const main = el("button", { class: "code-main", type: "button", "aria-pressed": index === state.selected ? "true" : "false",
    title: code.description || "", onclick: () => select(index) },
    el("span", { class: "c" }, code.code),
    el("span", { class: "d" }, code.description || "(no description)", code.predicted ? el("span", { class: "sr-only" }, " (predicted)") : ""),
    el("span", { class: "p" }, percent));
  const bar = el("div", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${Math.max(1, 100 * code.probability)}%` }));
  const actions = el("div", { class: "actions" },
    el("button", { type: "button", class: "acc", "aria-label": `Accept ${code.code}`, title: "Accept (a)", onclick: () => decide(code.code, "accept") }, "✓"),
    el("button", { type: "button", class: "rej", "aria-label": `Reject ${code.code}`, title: "Reject (r)", onclick: () => decide(code.code, "reject") }, "✗"));
  li.append(main, actions, bar);
  return li;
}

function renderCodes() {
  const list = $("codes");
  const newList = $("new-codes");
  list.replaceChildren();
  newList.replaceChildren();
  if (!state.note) return;
  const nSuggested = state.note.codes.length;
  state.listed.forEach((code, i) => (i < nSuggested ? list : newList).append(codeItem(code, i)));
  $("new-codes-title").hidden = state.listed.length === nSuggested;
}

function select(index) {
  if (index < 0 || index >= state.listed.length) return;
  state.selected = index;
  for (const li of document.querySelectorAll("ol.codes li")) {
    const on = Number(li.dataset.index) === index;
    li.classList.toggle("selected", on);
    li.querySelector(".code-main").setAttribute("aria-pressed", on ? "true" : "false");
  }
  const code = state.listed[index];
  const item = document.querySelector(`ol.codes li[data-index="${index}"]`);
  if (item) item.scrollIntoView({ block: "nearest" });
  highlight(code);
}

function highlight(code) {
  const view = $("note-view");
  const toUnits = utf16Offsets(state.text);
  const spans = (code.evidence || [])
    .map((e, rank) => ({ start: toUnits(e.start), end: toUnits(e.end), rank, weight: e.weight, source: e.source }))
    .filter((s) => s.end > s.start)
    .sort((a, b) => a.start - b.start);
  const pieces = [];
  let at = 0;
  for (const span of spans) {
    if (span.start < at) continue; // overlapping spans: the first one drawn wins
    if (span.start > at) pieces.push(state.text.slice(at, span.start));
    const mark = el("mark", { class: span.rank === 0 ? "strongest" : "", "data-rank": span.rank,
      title: `evidence ${span.rank + 1} for ${code.code}, weight ${span.weight}` + (span.source ? ` (${span.source})` : "") },
      state.text.slice(span.start, span.end));
    pieces.push(mark);
    at = span.end;
  }
  pieces.push(state.text.slice(at));
  view.replaceChildren(...pieces);
  const caption = $("evidence-caption");
  if (!spans.length) {
    caption.textContent = `${code.code}: no span of this note raised it`;
  } else {
    const sources = [...new Set(spans.map((s) => s.source).filter(Boolean))];
    caption.textContent = `${code.code} ${code.description || ""}: ${spans.length} evidence span(s), the first outlined` +
      (sources.length ? ` (from ${sources.join(", ")})` : "");
    const strongest = view.querySelector("mark.strongest");
    if (strongest) strongest.scrollIntoView({ block: "center" });
  }
}

function showNoteView() {
  $("note-text").hidden = true;
  $("note-view").hidden = false;
  $("edit-btn").hidden = false;
}

function editNote() {
  $("note-view").hidden = true;
  $("note-text").hidden = false;
  $("edit-btn").hidden = true;
  $("note-text").focus();
}

// ------------------------------------------------------------------ decisions
async function decide(code, action, description = null) {
  if (!state.note) { setStatus("Code a note first.", true); return; }
  const body = { text: state.text, keep_text: $("keep-text").checked, decisions: [{ code, action }] };
  const id = state.note.id || $("note-id").value.trim();
  if (id) body.note_id = id;
  try {
    const result = await api("/v1/decisions", { method: "POST", body });
    const row = result.stored[0];
    const listed = state.listed.find((c) => c.code === row.code);
    state.decisions.set(row.code, {
      action: row.action,
      description: description || (listed && listed.description) || "",
      probability: row.probability,
    });
    renderCodes();
    renderDecisions();
    setStatus(`${row.code}: ${row.action} recorded`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

function renderDecisions() {
  const list = $("decisions");
  list.replaceChildren();
  for (const [code, d] of state.decisions) {
    list.append(el("li", { "data-code": code, "data-action": d.action },
      el("span", { class: `act ${d.action}` }, d.action), el("span", { class: "c" }, code), el("span", { class: "d" }, d.description)));
  }
}

async function search(event) {
  event.preventDefault();
  const q = $("search-q").value.trim();
  const results = $("search-results");
  if (!q) return;
  try {
    const found = await api("/v1/codes/search?" + new URLSearchParams({ q, limit: "15" }));
    results.replaceChildren();
    if (!found.hits.length) results.append(el("li", {}, `nothing found for “${q}”`));
    for (const hit of found.hits) {
      results.append(el("li", { "data-code": hit.code },
        el("span", { class: "c" }, hit.code), el("span", { class: "d" }, hit.description),
        hit.in_model ? "" : el("span", { class: "in", title: "the model never scores this code" }, "catalog"),
        el("button", { type: "button", "aria-label": `Add ${hit.code}`, onclick: () => decide(hit.code, "add", hit.description) }, "+ Add")));
    }
  } catch (error) {
    setStatus(error.message, true);
  }
}

function exportNote() {
  if (!state.note) return;
  const codes = [];
  for (const c of state.listed) {
    const d = state.decisions.get(c.code);
    codes.push({ code: c.code, description: c.description, probability: c.probability, predicted: c.predicted, decision: d ? d.action : null });
  }
  for (const [code, d] of state.decisions) {
    if (d.action === "add") codes.push({ code, description: d.description, probability: d.probability, predicted: false, decision: "add" });
  }
  const kept = codes.filter((c) => c.decision === "accept" || c.decision === "add").map((c) => c.code);
  const record = {
    id: state.note.id || $("note-id").value.trim() || null,
    note_hash: state.note.note_hash,
    model_version: state.version,
    coder: $("coder").textContent,
    exported_at: new Date().toISOString(),
    labels: kept,
    text: state.text,
    codes,
  };
  const blob = new Blob([JSON.stringify(record, null, 2) + "\n"], { type: "application/json" });
  const link = el("a", { href: URL.createObjectURL(blob), download: `${record.id || state.note.note_hash.slice(0, 12)}.coded.json` });
  document.body.append(link);
  link.click();
  link.remove();
  setStatus(`exported ${kept.length} code(s)`);
}

// ------------------------------------------------------------------ opening a file
function openFile(event) {
  const file = event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    let text = String(reader.result);
    let id = file.name.replace(/\.[^.]+$/, "");
    if (/\.jsonl?$/i.test(file.name)) {
      try {
        const record = JSON.parse(text.split("\n").find((line) => line.trim()) || "{}");
        if (typeof record.text !== "string") throw new Error("no text field");
        text = record.text;
        if (record.id !== undefined && record.id !== null) id = String(record.id);
      } catch (error) {
        setStatus(`${file.name}: expected a JSON object with a "text" field (${error.message})`, true);
        return;
      }
    }
    $("note-text").value = text;
    $("note-id").value = id;
    editNote();
    setStatus(`opened ${file.name}`);
  };
  reader.onerror = () => setStatus(`${file.name}: could not be read`, true);
  reader.readAsText(file);
  event.target.value = "";
}

// ------------------------------------------------------------------ model tab
async function showModel() {
  const summary = $("model-summary");
  try {
    const info = await api("/v1/model");
    const keys = ["map", "micro_f1", "micro_precision", "micro_recall", "macro_f1", "p_at_8", "accuracy"];
    const sections = Object.entries(info.metrics || {}).filter(([, v]) => typeof v === "object" && v !== null);
    const shown = keys.filter((k) => sections.some(([, v]) => typeof v[k] === "number"));
    const rows = sections.map(([section, values]) =>
      el("tr", {}, el("td", {}, section), ...shown.map((k) => el("td", {}, typeof values[k] === "number" ? values[k].toFixed(3) : "—"))));
    if (rows.length) rows.unshift(el("tr", {}, el("th", {}, "metrics"), ...shown.map((k) => el("th", {}, k.replace(/_/g, " ")))));
    summary.replaceChildren(
      el("h2", {}, "Served model"),
      el("p", {}, `${info.name || info.kind} · ${info.model_type || info.kind} · ${info.n_codes} codes (${info.label_system}) · version ${info.version}`),
      labelLine(info.label_space || {}),
      rows.length ? el("table", {}, ...rows) : "",
      info.card ? el("details", {}, el("summary", {}, "Model card"), el("pre", {}, info.card)) : "",
    );
    const frame = $("report-frame");
    if (info.report) {
      const response = await fetch("/v1/model/report", { headers: state.token ? { Authorization: "Bearer " + state.token } : {} });
      frame.srcdoc = await response.text();
      frame.hidden = false;
    } else {
      frame.hidden = true;
      summary.append(el("p", { class: "hint" }, "No report in this bundle: `medcoder report MODEL_DIR` writes one."));
    }
  } catch (error) {
    summary.replaceChildren(el("p", { class: "status error" }, error.message));
  }
}

function labelLine(space) {
  if (!space.codes_by_train_notes) return "";
  const bins = Object.entries(space.codes_by_train_notes).map(([bin, n]) => `${n} with ${bin}`).join(", ");
  const frequent = (space.most_frequent || []).slice(0, 5).map((c) => `${c.code} (${c.train_notes})`).join(", ");
  return el("p", { class: "labels" },
    `Label space: ${space.n_codes} ${space.system || ""} codes (${space.level || "?"} level), learned from ` +
    `${space.n_train_notes ?? "?"} training notes. Codes by training notes: ${bins}. Most frequent: ${frequent}.`);
}

function showTab(name) {
  for (const tab of ["code", "model"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", tab === name ? "true" : "false");
    $(`panel-${tab}`).hidden = tab !== name;
  }
  if (name === "model") showModel();
}

// ------------------------------------------------------------------ sign-in and keys
async function whoAmI() {
  try {
    const info = await api("/v1/model");
    $("coder").textContent = info.coder;
    $("model-version").textContent = info.version;
    state.version = info.version;
    if ($("status").textContent.startsWith("Loading the model")) setStatus("Model loaded: paste a note.");
  } catch (error) {
    if (error.status === 503 && error.retryAfter) {  // still loading: ask again
      setStatus("Loading the model…");
      setTimeout(whoAmI, Math.min(error.retryAfter, 2) * 1000);
    } else {
      setStatus(error.message, true);
    }
  }
}

function onKey(event) {
  const typing = ["INPUT", "TEXTAREA"].includes(event.target.tagName);
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.id === "note-text") {
    event.preventDefault();
    codeNote();
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey || !state.note) {
    if (!typing && event.key === "/") { event.preventDefault(); $("search-q").focus(); }
    return;
  }
  const code = state.listed[state.selected];
  if (event.key === "j" || event.key === "ArrowDown") { event.preventDefault(); select(Math.min(state.selected + 1, state.listed.length - 1)); }
  else if (event.key === "k" || event.key === "ArrowUp") { event.preventDefault(); select(Math.max(state.selected - 1, 0)); }
  else if (event.key === "a" && code) decide(code.code, "accept");
  else if (event.key === "r" && code) decide(code.code, "reject");
  else if (event.key === "/") { event.preventDefault(); $("search-q").focus(); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("code-btn").addEventListener("click", codeNote);
  $("edit-btn").addEventListener("click", editNote);
  $("search-form").addEventListener("submit", search);
  $("export-btn").addEventListener("click", exportNote);
  $("note-file").addEventListener("change", openFile);
  $("tab-code").addEventListener("click", () => showTab("code"));
  $("tab-model").addEventListener("click", () => showTab("model"));
  $("token-btn").addEventListener("click", () => $("token-dialog").showModal());
  $("token-dialog").addEventListener("close", () => {
    if ($("token-dialog").returnValue === "ok") {
      state.token = $("token-input").value.trim();
      sessionStorage.setItem("medcoder-token", state.token);
      whoAmI();
    }
  });
  document.addEventListener("keydown", onKey);
  whoAmI();
});
