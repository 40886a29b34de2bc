// attnlab viewer: plain JS + canvas, no framework, no network but this page's own server.
// With an embedded <script id="attnlab-data"> (an exported snapshot) it shows that data read-only, serverless.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null, text: "", analysis: null, heads: null, map: null, steer: null, timeline: null,
  metric: "first_token_mass", layer: 0, head: 0, mean: false, span: null, title: null,
};
let info = null;
let snapshot = false;
let pending = 0;
const rowCache = new Map();
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const MASS_METRICS = new Set(["first_token_mass", "normalized_entropy", "previous_token"]);
const ROLE = "heads:";    // head-role scores: properties of the model (computed once by the server), not of the text
const UNBOUNDED_ROLES = new Set(["heads:mean_distance", "heads:output_norm"]);

function colour(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function fmt(v) { return Number(v).toFixed(4); }

function showMessage(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

function setBusy(delta, what) {
  pending += delta;
  document.body.dataset.busy = pending > 0 ? "1" : "0";
  $("status").textContent = pending > 0 ? `working: ${what}…` : "ready";
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  setBusy(1, path);
  try {
    const response = await fetch("api/" + path, options);
    const kind = response.headers.get("Content-Type") || "";
    if (kind.startsWith("text/html")) {
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      return await response.text();
    }
    let data;
    try { data = await response.json(); } catch (e) { data = { error: `the server answered ${response.status}` }; }
    if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
    return data;
  } finally {
    setBusy(-1, path);
  }
}

// Run fn; show its error (one line from the server, or the network's) on the page instead of throwing.
async function guarded(fn) {
  try {
    showMessage("");
    await fn();
  } catch (e) {
    showMessage(e.message);
  }
}

// ---- text and tokens -------------------------------------------------------------------------------------

function renderTokens() {
  const box = $("tokens");
  box.textContent = "";
  const a = state.analysis;
  if (!a || !a.tokens.length) return;
  const text = state.text;
  let cursor = 0;
  a.tokens.forEach((t, i) => {
    const start = Math.max(t.start, cursor);
    if (start > cursor && !t.special) box.appendChild(piece("gap", text.slice(cursor, start), cursor));
    const el = t.special || t.end <= start ? piece("tok special", t.special ? t.label : "", cursor)
      : piece("tok", text.slice(start, t.end), start);
    el.dataset.i = i;
    el.addEventListener("mouseenter", () => hoverQuery(i));
    box.appendChild(el);
    if (!t.special && t.end > cursor) cursor = t.end;
  });
  if (cursor < text.length) box.appendChild(piece("gap", text.slice(cursor), cursor));
  markSpan();
}

function piece(cls, text, start) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  el.dataset.start = start;
  return el;
}

function charOffset(node, offset) {
  const el = node.nodeType === Node.TEXT_NODE ? node.parentElement : node;
  const holder = el && el.closest("[data-start]");
  if (!holder || !$("tokens").contains(holder)) return null;
  if (holder.classList.contains("special")) return Number(holder.dataset.start);
  return Number(holder.dataset.start) + (node.nodeType === Node.TEXT_NODE ? offset : 0);
}

function onSelect() {
  if (snapshot || !state.analysis) return;
  const sel = window.getSelection();
  if (!sel || sel.isCollapsed || sel.rangeCount === 0) return;
  const range = sel.getRangeAt(0);
  const a = charOffset(range.startContainer, range.startOffset);
  const z = charOffset(range.endContainer, range.endOffset);
  if (a === null || z === null || z <= a) return;
  state.span = [a, z];
  markSpan();
  guarded(async () => {
    state.analysis = await api("analyze", { text: state.text, span: state.span });
    state.metric = "span_mass";
    fillMetrics();
    drawGrid();
  });
}

function markSpan() {
  const s = state.span;
  $("span-info").textContent = s ? `span [${s[0]}, ${s[1]}): “${state.text.slice(s[0], s[1])}”` : "";
  document.querySelectorAll("#tokens .tok").forEach((el) => {
    const t = state.analysis.tokens[el.dataset.i];
    el.classList.toggle("span", !!s && !t.special && t.start < s[1] && t.end > s[0]);
  });
}

// ---- head grid -------------------------------------------------------------------------------------------

const GRID = { left: 34, top: 18 };

// The head-role metrics the page can offer: every one the server lists, or those a snapshot carries.
function roleNames() {
  if (info) return info.model_metrics || {};
  return state.heads ? state.heads.metric_help : {};
}

function fillMetrics() {
  const select = $("metric");
  select.textContent = "";
  const group = (label, names) => {
    const holder = document.createElement("optgroup");
    holder.label = label;
    for (const name of names) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      holder.appendChild(option);
    }
    if (names.length) select.appendChild(holder);
  };
  group("on this text", Object.keys(state.analysis.metrics));
  group("head roles of the model (computed once)", Object.keys(roleNames()));
  if (metricValues(state.metric) === undefined && !(state.metric in roleNames())) {
    state.metric = Object.keys(state.analysis.metrics)[0];
  }
  select.value = state.metric;
  $("grid-help").textContent = metricHelp();
}

// The [layer][head] values of a metric: the text's analysis, or the model's head roles once fetched.
function metricValues(name) {
  if (name.startsWith(ROLE)) return state.heads ? state.heads.metrics[name] : undefined;
  return state.analysis ? state.analysis.metrics[name] : undefined;
}

function metricHelp() {
  if (!state.metric.startsWith(ROLE)) return (state.analysis.metric_help || {})[state.metric] || "";
  if (!state.heads) return `${roleNames()[state.metric] || ""} — a property of the model, computed once on synthetic inputs`;
  const note = state.heads.notes[state.metric];
  return (state.heads.metric_help[state.metric] || "") + (note ? ` — not measured: ${note}` : "") +
    ` — computed once by the server (${state.heads.seconds} s), then kept`;
}

// Choosing a head-role metric fetches the model's scores the first time (slow once; kept by the server).
async function chooseMetric(name) {
  state.metric = name;
  if (name.startsWith(ROLE) && !state.heads && !snapshot) {
    $("grid-help").textContent = "computing the model's head-role scores (once for this server)…";
    state.heads = await api("heads");
  }
  drawGrid();
}

function gridGeometry() {
  const a = state.analysis;
  const cw = Math.max(6, Math.min(40, Math.floor(440 / a.heads)));
  const ch = Math.max(6, Math.min(28, Math.floor(560 / a.layers)));
  return { cw, ch, width: GRID.left + cw * a.heads + 4, height: GRID.top + ch * a.layers + 4 };
}

function metricRange(values) {
  if (MASS_METRICS.has(state.metric) || state.metric.startsWith("span_mass")) return [0, 1];
  if (state.metric.startsWith(ROLE) && !UNBOUNDED_ROLES.has(state.metric)) return [0, 1];
  const flat = values.flat();
  return [Math.min(...flat), Math.max(...flat)];
}

function drawGrid() {
  const a = state.analysis;
  if (!a) return;
  const canvas = $("grid"), g = gridGeometry(), ctx = canvas.getContext("2d");
  canvas.width = g.width;
  canvas.height = g.height;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, g.width, g.height);
  $("grid-help").textContent = metricHelp();
  const values = metricValues(state.metric);
  if (!values) return;
  const [lo, hi] = metricRange(values);
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#333";
  for (let h = 0; h < a.heads; h += Math.ceil(a.heads / 16)) ctx.fillText(`H${h}`, GRID.left + h * g.cw + 1, 12);
  for (let l = 0; l < a.layers; l++) {
    if (l % Math.ceil(a.layers / 24) === 0) { ctx.fillStyle = "#333"; ctx.fillText(`L${l}`, 2, GRID.top + l * g.ch + g.ch - 2); }
    for (let h = 0; h < a.heads; h++) {
      ctx.fillStyle = colour((values[l][h] - lo) / (hi - lo || 1));
      ctx.fillRect(GRID.left + h * g.cw, GRID.top + l * g.ch, g.cw - 1, g.ch - 1);
    }
  }
  if (state.map) {
    ctx.strokeStyle = "#d62728";
    ctx.lineWidth = 2;
    const w = state.mean ? g.cw * a.heads : g.cw;
    ctx.strokeRect(GRID.left + (state.mean ? 0 : state.head * g.cw), GRID.top + state.layer * g.ch, w - 1, g.ch - 1);
  }
}

function gridCell(event) {
  const a = state.analysis;
  if (!a) return null;
  const g = gridGeometry(), r = $("grid").getBoundingClientRect();
  const h = Math.floor((event.clientX - r.left - GRID.left) / g.cw);
  const l = Math.floor((event.clientY - r.top - GRID.top) / g.ch);
  return h >= 0 && h < a.heads && l >= 0 && l < a.layers ? { l, h } : null;
}

function onGridHover(event) {
  const c = gridCell(event), values = metricValues(state.metric);
  $("grid-info").textContent = c && values ? `L${c.l}H${c.h} ${state.metric} = ${fmt(values[c.l][c.h])}` : "";
}

function onGridClick(event) {
  const c = gridCell(event);
  if (!c || snapshot) return;
  state.layer = c.l;
  state.head = c.h;
  state.mean = false;
  $("layer-mean").checked = false;
  guarded(loadMap);
}

// ---- attention map ---------------------------------------------------------------------------------------

const MAP = { left: 60, top: 60, size: 460 };

function mapRequest(rows) {
  const body = { text: state.text, layer: state.layer, head: state.mean ? null : state.head };
  if (rows) body.rows = rows;
  return body;
}

async function loadMap() {
  state.map = await api("map", mapRequest());
  rowCache.clear();
  drawMap();
  drawGrid();
}

function drawMap() {
  const m = state.map, canvas = $("map"), ctx = canvas.getContext("2d");
  $("map-view").hidden = !m;
  if (!m) return;
  $("map-title").textContent = `${m.name}${m.exact ? "" : ` (${m.n_tokens} tokens in ${m.values.length} bins)`}`;
  const bins = m.values.length, cell = MAP.size / bins;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let r = 0; r < bins; r++) {
    for (let c = 0; c < bins; c++) {
      ctx.fillStyle = colour(Math.sqrt(m.values[r][c]));
      ctx.fillRect(MAP.left + c * cell, MAP.top + r * cell, Math.ceil(cell), Math.ceil(cell));
    }
  }
  ctx.fillStyle = "#333";
  ctx.font = "10px sans-serif";
  const tokens = state.analysis ? state.analysis.tokens : [];
  const labelled = m.exact && bins <= 48 && tokens.length === bins;
  const step = labelled ? 1 : Math.ceil(bins / 10);
  for (let b = 0; b < bins; b += step) {
    const text = labelled ? tokens[b].label.replace(/\s/g, "·").slice(0, 8) : String(m.edges[b]);
    ctx.textAlign = "right";
    ctx.fillText(text, MAP.left - 3, MAP.top + (b + 0.7) * cell);
    ctx.save();
    ctx.translate(MAP.left + (b + 0.7) * cell, MAP.top - 3);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    ctx.fillText(text, 0, 0);
    ctx.restore();
  }
  ctx.textAlign = "left";
  ctx.fillText("keys →", MAP.left, 10);
  ctx.fillText("queries ↓", 2, 10);
}

function binLabel(m, b) {
  const a = m.edges[b], z = m.edges[b + 1] - 1;
  return a === z ? `${a}` : `${a}–${z}`;
}

function onMapHover(event) {
  const m = state.map;
  if (!m) return;
  const r = $("map").getBoundingClientRect(), bins = m.values.length, cell = MAP.size / bins;
  const c = Math.floor((event.clientX - r.left - MAP.left) / cell);
  const q = Math.floor((event.clientY - r.top - MAP.top) / cell);
  if (c < 0 || q < 0 || c >= bins || q >= bins) { $("map-info").textContent = ""; return; }
  const tokens = state.analysis ? state.analysis.tokens : [];
  const label = (i) => (tokens[i] ? ` “${tokens[i].label}”` : "");
  $("map-info").textContent = m.exact
    ? `query ${q}${label(q)} → key ${c}${label(c)}: ${fmt(m.values[q][c])}`
    : `queries ${binLabel(m, q)} → keys ${binLabel(m, c)}: ${fmt(m.values[q][c])}`;
  if (m.exact) hoverQuery(q);
}

// The exact attention row of query i in the map's head: from the map when exact, else the rows in view.
async function queryRow(i) {
  const m = state.map;
  if (m.exact) return m.values[i];
  if (snapshot) return null;
  const start = Math.floor(i / info.limits.max_rows) * info.limits.max_rows;
  const key = `${m.layer}/${m.head}/${start}`;
  if (!rowCache.has(key)) {
    const stop = Math.min(m.n_tokens, start + info.limits.max_rows);
    rowCache.set(key, api("map", mapRequest([start, stop])).then((d) => d.rows));
  }
  return (await rowCache.get(key))[i - start];
}

function hoverQuery(i) {
  if (!state.map || !state.analysis) return;
  guarded(async () => {
    const row = await queryRow(i);
    if (!row) return;
    const tokens = state.analysis.tokens;
    document.querySelectorAll("#tokens .tok").forEach((el) => {
      const j = Number(el.dataset.i);
      el.style.backgroundColor = j <= i ? `rgba(255, 127, 14, ${Math.sqrt(row[j] || 0).toFixed(3)})` : "";
      el.classList.toggle("query", j === i);
    });
    const top = row.map((v, j) => [v, j]).sort((x, y) => y[0] - x[0]).slice(0, 3);
    $("token-info").textContent = `token ${i} “${tokens[i].label}” attends most to: ` +
      top.map(([v, j]) => `${j} “${tokens[j].label}” ${fmt(v)}`).join(", ");
  });
}

// ---- steering --------------------------------------------------------------------------------------------

function fillMethods() {
  const select = $("method");
  for (const m of info.methods) {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = m.name;
    select.appendChild(option);
  }
  buildForm();
}

function defaultText(value) {
  if (value === null || value === undefined) return "";
  return Array.isArray(value) ? value.join(",") : String(value);
}

function buildForm() {
  const method = info.methods.find((m) => m.name === $("method").value);
  const form = $("method-form");
  form.textContent = "";
  $("method-summary").textContent = method.summary + (method.span ? ` (acts on the selected span, as its ${method.span})` : "");
  for (const p of method.params) {
    const label = document.createElement("label");
    label.title = p.help;
    const name = document.createElement("span");
    name.textContent = `${p.name} (${p.type}${p.required ? ", required" : ""})`;
    let input;
    if (p.choices.length) {
      input = document.createElement("select");
      for (const c of p.choices) {
        const option = document.createElement("option");
        option.textContent = c;
        input.appendChild(option);
      }
    } else {
      input = document.createElement("input");
      input.type = "text";
      input.size = 10;
    }
    input.name = p.name;
    input.value = defaultText(p.default);
    input.dataset.initial = input.value;
    const help = document.createElement("small");
    const range = p.choices.length ? "" : [p.above !== null ? `> ${p.above}` : "", p.below !== null ? `< ${p.below}` : ""]
      .filter(Boolean).join(", ");
    help.textContent = p.help + (range ? ` (${range})` : "");
    label.append(name, input, help);
    form.appendChild(label);
  }
}

function formSettings() {
  const settings = {};
  for (const input of $("method-form").querySelectorAll("input, select")) {
    if (input.value !== input.dataset.initial) settings[input.name] = input.value;
  }
  return settings;
}

async function runSteer() {
  const body = {
    text: state.text, method: $("method").value, settings: formSettings(), span: state.span,
    max_new_tokens: Number($("steer-tokens").value), chat: $("steer-chat").checked,
  };
  state.steer = await api("steer", body);
  drawSteer();
}

const CHART = { left: 40, top: 16, height: 170 };

function drawSteer() {
  const s = state.steer;
  $("steer-view").hidden = snapshot && !s;
  if (!s) return;
  $("unsteered").textContent = s.unsteered;
  $("steered").textContent = s.steered;
  const canvas = $("steer-chart"), ctx = canvas.getContext("2d"), rows = s.attention_by_layer;
  const slot = (canvas.width - CHART.left - 10) / rows.length;
  const top = Math.max(0.05, ...rows.map((r) => Math.max(r.unsteered, r.steered)));
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  rows.forEach((r, l) => {
    [["unsteered", "#9aa7b8"], ["steered", "#d62728"]].forEach(([key, fill], k) => {
      const h = (r[key] / top) * CHART.height;
      ctx.fillStyle = fill;
      ctx.fillRect(CHART.left + l * slot + k * slot / 2, CHART.top + CHART.height - h, slot / 2 - 1, h);
    });
  });
  ctx.fillStyle = "#333";
  ctx.font = "10px sans-serif";
  const every = Math.ceil(rows.length / 16);
  for (let l = 0; l < rows.length; l += every) ctx.fillText(`L${l}`, CHART.left + l * slot, CHART.top + CHART.height + 12);
  ctx.fillText(fmt(top), 2, CHART.top + 8);
  ctx.fillText("0", 2, CHART.top + CHART.height);
  ctx.fillText(`attention on the ${s.watched} per layer (mean over heads): grey unsteered, red steered — ${s.method}`,
    CHART.left, canvas.height - 8);
}

function onSteerHover(event) {
  const s = state.steer;
  if (!s) return;
  const r = $("steer-chart").getBoundingClientRect(), rows = s.attention_by_layer;
  const slot = ($("steer-chart").width - CHART.left - 10) / rows.length;
  const l = Math.floor((event.clientX - r.left - CHART.left) / slot);
  $("steer-info").textContent = rows[l] ? `layer ${l}: unsteered ${fmt(rows[l].unsteered)}, steered ` +
    `${fmt(rows[l].steered)} (${rows[l].steered >= rows[l].unsteered ? "+" : ""}${fmt(rows[l].steered - rows[l].unsteered)})` : "";
}

// ---- generation timeline ---------------------------------------------------------------------------------

const TL = { left: 34, top: 8 };

// Generate through the streaming endpoint: one JSON line per token, drawn as it arrives.
async function runTimeline() {
  const body = { text: state.text, max_new_tokens: Number($("gen-tokens").value), chat: $("gen-chat").checked };
  if ($("use-sink").checked) body.sink_cache = { sinks: Number($("sinks").value), window: Number($("window").value) };
  state.timeline = null;
  setBusy(1, "timeline");
  try {
    const response = await fetch("api/timeline/stream", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) {
      let data;
      try { data = await response.json(); } catch (e) { data = {}; }
      throw new Error(data.error || `the server answered ${response.status}`);
    }
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 1);
        if (line.trim()) onTimelineEvent(JSON.parse(line), body.max_new_tokens);
      }
    }
  } finally {
    setBusy(-1, "timeline");
  }
}

function onTimelineEvent(event, planned) {
  const { type, ...data } = event;
  if (type === "start") {
    state.timeline = { ...data, steps: [], planned };
  } else if (type === "step") {
    state.timeline.steps.push(data);
    drawTimeline();
    showTimelineStep(state.timeline.steps.length - 1);
  } else if (type === "error") {
    throw new Error(data.error);
  }
}

function timelineGeometry() {
  const t = state.timeline, canvas = $("timeline"), columns = Math.max(1, t.steps.length, t.planned || 0);
  return { cw: (canvas.width - TL.left - 4) / columns, ch: (canvas.height - TL.top - 4) / t.layers };
}

function drawTimeline() {
  const t = state.timeline, canvas = $("timeline"), ctx = canvas.getContext("2d");
  $("timeline-view").hidden = snapshot && !t;
  if (!t) return;
  const g = timelineGeometry(), key = $("tl-metric").value;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  t.steps.forEach((step, s) => step.layers.forEach((v, l) => {
    ctx.fillStyle = colour(v[key]);
    ctx.fillRect(TL.left + s * g.cw, TL.top + l * g.ch, Math.ceil(g.cw), Math.ceil(g.ch));
  }));
  ctx.fillStyle = "#333";
  ctx.font = "10px sans-serif";
  for (let l = 0; l < t.layers; l += Math.ceil(t.layers / 12)) ctx.fillText(`L${l}`, 2, TL.top + (l + 0.8) * g.ch);
}

function onTimelineHover(event) {
  const t = state.timeline;
  if (!t) return;
  const g = timelineGeometry(), r = $("timeline").getBoundingClientRect();
  const s = Math.floor((event.clientX - r.left - TL.left) / g.cw), l = Math.floor((event.clientY - r.top - TL.top) / g.ch);
  if (!t.steps[s] || l < 0 || l >= t.layers) return;
  const v = t.steps[s].layers[l];
  $("timeline-info").textContent = `step ${s} “${t.steps[s].token}” layer ${l}: lookback ratio ${fmt(v.lookback_ratio)}, ` +
    `on the prompt ${fmt(v.prompt)}, on the generated text ${fmt(v.generated)}, on the sink ${fmt(v.sink)}`;
  showTimelineStep(s);
}

// The prompt and generated tokens up to step s; with a sink cache, those the cache no longer keeps struck out.
function showTimelineStep(s) {
  const t = state.timeline, box = $("generated");
  box.textContent = "";
  const kept = t.steps[s].kept ? new Set(t.steps[s].kept) : null;
  const labels = t.prompt_tokens.concat(t.steps.slice(0, s + 1).map((step) => step.token));
  labels.forEach((label, pos) => {
    const el = piece("tok" + (pos >= t.n_prompt ? " generated" : ""), label, pos);
    if (kept && pos < t.n_prompt + s && !kept.has(pos)) el.classList.add("evicted");
    box.appendChild(el);
  });
  if (kept) box.appendChild(piece("gap", `   (step ${s}: the cache keeps ${kept.size} tokens)`, 0));
}

// ---- share, start ----------------------------------------------------------------------------------------

function exportState() {
  return {
    model: state.model, text: state.text, analysis: state.analysis, heads: state.heads, map: state.map, steer: state.steer,
    timeline: state.timeline, metric: state.metric, layer: state.layer, head: state.head, mean: state.mean,
    span: state.span, title: state.title,
  };
}

async function share() {
  const page = await api("export", { state: exportState() });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([page], { type: "text/html" }));
  link.download = "attnlab-view.html";
  document.body.appendChild(link);
  link.click();
  link.remove();
}

async function run() {
  const text = $("text").value;
  state.text = text;
  state.span = null;
  state.analysis = await api("analyze", { text });
  fillMetrics();
  renderTokens();
  drawGrid();
  await loadMap();
}

function renderAll() {
  $("model-name").textContent = state.model ? `${state.model.name} — ${state.model.layers} layers × ` +
    `${state.model.heads} heads${state.title ? ` — ${state.title}` : ""}` : "";
  $("text").value = state.text || "";
  if (state.analysis) { fillMetrics(); renderTokens(); drawGrid(); }
  drawMap();
  drawSteer();
  drawTimeline();
  if (state.timeline && state.timeline.steps.length) showTimelineStep(state.timeline.steps.length - 1);
}

function wire() {
  $("run").addEventListener("click", () => guarded(run));
  $("share").addEventListener("click", () => guarded(share));
  $("sample").addEventListener("change", () => { if ($("sample").value) $("text").value = info.samples[$("sample").value]; });
  $("metric").addEventListener("change", () => guarded(() => chooseMetric($("metric").value)));
  $("grid").addEventListener("mousemove", onGridHover);
  $("grid").addEventListener("click", onGridClick);
  $("map").addEventListener("mousemove", onMapHover);
  $("layer-mean").addEventListener("change", () => { state.mean = $("layer-mean").checked; if (state.analysis) guarded(loadMap); });
  $("tokens").addEventListener("mouseup", onSelect);
  $("method").addEventListener("change", buildForm);
  $("steer").addEventListener("click", () => guarded(runSteer));
  $("steer-chart").addEventListener("mousemove", onSteerHover);
  $("generate").addEventListener("click", () => guarded(runTimeline));
  $("tl-metric").addEventListener("change", drawTimeline);
  $("timeline").addEventListener("mousemove", onTimelineHover);
}

async function start() {
  wire();
  const embedded = $("attnlab-data");
  if (embedded) {
    snapshot = true;
    Object.assign(state, JSON.parse(embedded.textContent));
    for (const id of ["run", "share", "steer", "generate", "sample"]) $(id).hidden = true;
    $("snapshot-note").hidden = false;
    $("text").readOnly = true;
    $("layer-mean").disabled = true;
    $("status").textContent = "snapshot";
    renderAll();
    return;
  }
  await guarded(async () => {
    info = await api("info");
    state.model = info.model;
    for (const name of Object.keys(info.samples)) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      $("sample").appendChild(option);
    }
    $("steer-chat").checked = $("gen-chat").checked = info.model.chat_template;
    if (info.model.can_generate) fillMethods(); else $("steer-view").hidden = $("timeline-view").hidden = true;
    $("map-view").hidden = true;
    renderAll();
  });
}

start();
