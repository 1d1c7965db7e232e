// cnnlab mechanism page: one convolution (and pooling) on small grids. Every grid and the
// output-size formula come from api/mechanism, i.e. from cnnlab.ops on the server; the page
// only lays them out, steps the window across them and multiplies what it shows.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("params");
const stage = document.querySelector(".stage");
const grids = $("grids");
let data = null; // the last good answer
let pos = 0; // the output cell in focus (row-major)
let poolPos = null; // the pooled cell in focus, if one was clicked
let timer = null;
let seed = 0;
let seq = 0;
let shown = 0;

function fmt(v, digits = 2) {
  if (Number.isInteger(v)) return String(v).replace("-", "−");
  return String(Number(v.toFixed(digits))).replace("-", "−");
}
const paren = (v) => (v < 0 ? `(${fmt(v)})` : fmt(v));
const rows2d = (g) => (Array.isArray(g[0]) ? g : [g]); // a 1-D grid is one row
const win2d = (w) => (w.length === 1 ? [[0], w[0]] : w); // per-axis windows as (rows, cols)
const shapeText = (shape) => shape.join("×");

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// ------------------------------------------------------------ the request

function query() {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v !== "") q.set(k, v);
  q.set("seed", String(seed));
  return q;
}

function syncPooling() {
  const on = $("pool").value !== "none";
  for (const el of document.querySelectorAll(".pooling input, .pooling select")) el.disabled = !on;
  for (const el of document.querySelectorAll(".pooling")) el.classList.toggle("off", !on);
}

let debounce = null;
let lastQuery = "";
function changed() {
  syncPooling();
  clearTimeout(debounce);
  if (query().toString() === lastQuery) {
    // Back to what was asked last (the change event when a field blurs, or a value cleared
    // and typed again): no new request, and the one a moment ago is cancelled. Idle again
    // unless that last request is still on its way.
    if (seq === shown) stage.setAttribute("aria-busy", "false");
    return;
  }
  stage.setAttribute("aria-busy", "true");
  debounce = setTimeout(load, 120);
}

async function load() {
  const id = ++seq;
  lastQuery = query().toString();
  stage.setAttribute("aria-busy", "true");
  let reply, body;
  try {
    reply = await fetch(`api/mechanism?${lastQuery}`);
    body = await reply.json();
  } catch (err) {
    if (id === seq) { setStatus(`no answer from the server (${err})`, true); stage.setAttribute("aria-busy", "false"); }
    return;
  }
  if (id !== seq || id < shown) return; // a newer request is on its way
  shown = id;
  stage.setAttribute("aria-busy", "false");
  if (!reply.ok) {
    const d = body.detail;
    const text = Array.isArray(d) ? d.map((e) => `${e.loc.at(-1)}: ${e.msg}`).join("; ") : d;
    setStatus(text || `error ${reply.status}`, true);
    stage.classList.add("stale");
    document.querySelector(".formula").classList.add("stale");
    $("out-size").textContent = "–";
    return;
  }
  stage.classList.remove("stale");
  document.querySelector(".formula").classList.remove("stale");
  setStatus("", false);
  data = body;
  pos = Math.min(pos, body.windows.length - 1);
  poolPos = null;
  render();
}

// ------------------------------------------------------------ drawing

function makeGrid(el, grid, cellPx, classFor) {
  const g = rows2d(grid);
  const decimals = g.some((row) => row.some((v) => !Number.isInteger(v)));
  el.replaceChildren();
  el.style.setProperty("--cols", String(g[0].length));
  el.style.setProperty("--cell", `${decimals ? Math.max(cellPx, 34) : cellPx}px`);
  const cells = g.map((row, r) => row.map((v, c) => {
    const div = document.createElement("div");
    div.className = "cell";
    div.textContent = fmt(v);
    div.dataset.cell = data.dims === 1 ? String(c) : `${r},${c}`;
    if (classFor) { const extra = classFor(r, c); if (extra) div.classList.add(extra); }
    el.appendChild(div);
    return div;
  }));
  return cells;
}

let cells = {};

function axisLine(f, what) {
  const div = document.createElement("div");
  div.className = "axis";
  const head = document.createElement("div");
  head.innerHTML = "<b></b> <code></code>";
  head.querySelector("b").textContent = `${what}${f.axis}: o =`;
  head.querySelector("code").textContent = `${f.general}`;
  const val = document.createElement("div");
  val.className = "evaluated";
  val.textContent = `= ${f.evaluated}`;
  const pad = document.createElement("div");
  pad.className = "muted small";
  pad.textContent = `n = ${f.n}, k = ${f.k}, s = ${f.stride}` +
    (what ? "" : `, d = ${f.dilation}`) + ` · ${f.padding_text}`;
  div.append(head, val, pad);
  return div;
}

function renderFormula() {
  const box = $("formula");
  box.replaceChildren();
  const same = (fs) => fs.length === 2 && fs[0].evaluated === fs[1].evaluated &&
    fs[0].padding_text === fs[1].padding_text;
  const lines = (fs, what) => (same(fs) ? [{ ...fs[0], axis: "height = width" }] : fs)
    .forEach((f) => box.appendChild(axisLine(f, what)));
  lines(data.formula, "");
  let size = shapeText(data.output_shape);
  if (data.pooled) {
    const pooled = shapeText(data.pooled.formula.map((f) => f.size));
    const h = document.createElement("h3");
    h.textContent = `pooled: ${pooled}`;
    box.appendChild(h);
    lines(data.pooled.formula, "pool ");
    size += ` → ${pooled}`;
  }
  $("out-size").textContent = size;
}

function padText(pads) {
  if (!pads.some((p) => p[0] || p[1])) return " (no padding)";
  if (pads.every((p) => p[0] === p[1] && p[0] === pads[0][0])) {
    return ` + ${pads[0][0]} zero${pads[0][0] > 1 ? "s" : ""} of padding on each side`;
  }
  const names = pads.length === 1 ? [["before", "after"]] : [["above", "below"], ["left", "right"]];
  return " + zero padding " + pads.map((p, i) => `${p[0]} ${names[i][0]}, ${p[1]} ${names[i][1]}`)
    .join(", ");
}

function render() {
  const d = data;
  const padded = rows2d(d.padded_input);
  const [pr, pc] = d.dims === 1 ? [[0, 0], d.pads[0]] : d.pads;
  const inRows = padded.length - pr[0] - pr[1], inCols = padded[0].length - pc[0] - pc[1];
  const cols = [padded[0].length, rows2d(d.kernel)[0].length, rows2d(d.output)[0].length];
  if (d.pooled) cols.push(rows2d(d.pooled.output)[0].length);
  const room = (grids.clientWidth || 800) - 60 * cols.length; // the operators between grids
  const widest = d.dims === 1 ? Math.max(...cols) : cols.reduce((a, b) => a + b, 0);
  const fit = Math.min(Math.floor(room / widest), Math.floor(grids.clientWidth / Math.max(...cols)));
  const cellPx = Math.max(12, Math.min(34, fit - 2));
  const isPad = (r, c) => r < pr[0] || r >= pr[0] + inRows || c < pc[0] || c >= pc[0] + inCols;
  grids.classList.toggle("one-d", d.dims === 1);
  cells.input = makeGrid($("grid-input"), d.padded_input, cellPx, (r, c) => (isPad(r, c) ? "pad" : ""));
  cells.kernel = makeGrid($("grid-kernel"), d.kernel, cellPx);
  const flipped = d.operation === "convolution";
  $("op-symbol").textContent = flipped ? "∗" : "⋆";
  $("op-symbol").classList.toggle("star", !flipped);
  $("op-symbol").title = flipped ? "convolution: flip the kernel, then slide, multiply, add"
    : "cross-correlation: slide the kernel, multiply, add (no flip)";
  $("cap-mini-kernel").textContent = flipped ? "kernel weights, flipped" : "kernel weights";
  cells.output = makeGrid($("grid-output"), d.output, cellPx);
  $("cap-input").textContent = shapeText(d.formula.map((f) => f.n)) + padText(d.pads);
  const kShape = shapeText(d.formula.map((f) => f.k));
  $("cap-kernel").textContent = kShape +
    (d.dilation > 1 ? `, dilation ${d.dilation} (spans ${shapeText(d.effective_kernel)})` : "") +
    (flipped ? ", flipped in each window" : "");
  $("cap-output").textContent = `${shapeText(d.output_shape)}, stride ${d.stride}`;
  for (const el of document.querySelectorAll(".pooling-op")) el.classList.toggle("off", !d.pooled);
  if (d.pooled) {
    cells.pooled = makeGrid($("grid-pooled"), d.pooled.output, cellPx);
    $("cap-pooled").textContent = `${d.pooled.kind} ${shapeText(d.pooled.size)}, ` +
      `stride ${d.pooled.stride[0]}`;
    cells.pooled.flat().forEach((div, i) => clickable(div, () => focusPool(i)));
  } else {
    $("grid-pooled").replaceChildren();
  }
  cells.output.flat().forEach((div, i) => clickable(div, () => { stop(); focus(i); }));
  renderFormula();
  focus(pos);
}

function clickable(div, fn) {
  div.tabIndex = 0;
  div.classList.add("pick");
  div.addEventListener("click", fn);
  div.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fn(); } });
}

function clearMarks() {
  for (const el of document.querySelectorAll(".cell.tap, .cell.span, .cell.cur, .cell.pooled-win")) {
    el.classList.remove("tap", "span", "cur", "pooled-win");
  }
}

function miniGrid(id, values) {
  const el = $(id);
  el.replaceChildren();
  el.style.setProperty("--cols", String(values[0].length));
  for (const row of values) for (const v of row) {
    const div = document.createElement("div");
    div.className = "cell";
    div.textContent = fmt(v);
    el.appendChild(div);
  }
}

function focus(i) {
  const d = data;
  pos = i;
  poolPos = null;
  clearMarks();
  const [rows, cols] = win2d(d.windows[i]);
  // the weights each tap meets: the kernel, or for true convolution the kernel flipped
  const padded = rows2d(d.padded_input), kernel = rows2d(d.window_kernel);
  for (let r = rows[0]; r <= rows.at(-1); r++) {
    for (let c = cols[0]; c <= cols.at(-1); c++) cells.input[r][c].classList.add("span");
  }
  for (const r of rows) for (const c of cols) cells.input[r][c].classList.replace("span", "tap");
  const outCell = cells.output.flat()[i];
  outCell.classList.add("cur");
  const value = rows2d(d.output).flat()[i];
  const win = rows.map((r) => cols.map((c) => padded[r][c]));
  const prods = win.map((row, a) => row.map((v, b) => v * kernel[a][b]));
  miniGrid("mini-window", win);
  miniGrid("mini-kernel", kernel);
  miniGrid("mini-products", prods);
  const terms = win.flatMap((row, a) => row.map((v, b) => `${paren(v)}·${paren(kernel[a][b])}`));
  $("cell-sum").textContent = `output (${outCell.dataset.cell.replace(",", ", ")}) = ` +
    `${terms.join(" + ")} = ${fmt(value)}`;
  $("cell-sum").dataset.value = String(value);
  const where = d.dims === 1 ? `positions ${cols[0]}–${cols.at(-1)}`
    : `rows ${rows[0]}–${rows.at(-1)}, columns ${cols[0]}–${cols.at(-1)}`;
  $("where").textContent = `output cell ${i + 1} of ${d.windows.length}: window on the padded ` +
    `input at ${where}`;
  $("cell-detail").classList.remove("pool-mode");
}

function focusPool(i) {
  stop();
  const p = data.pooled;
  clearMarks();
  poolPos = i;
  const [rows, cols] = win2d(p.windows[i]);
  const out = rows2d(data.output);
  const values = rows.map((r) => cols.map((c) => out[r][c]));
  for (const r of rows) for (const c of cols) cells.output[r][c].classList.add("pooled-win");
  const cell = cells.pooled.flat()[i];
  cell.classList.add("cur");
  const value = rows2d(p.output).flat()[i];
  const flat = values.flat();
  const how = p.kind === "max" ? `max(${flat.map((v) => fmt(v)).join(", ")})`
    : `(${flat.map(paren).join(" + ")}) / ${flat.length}`;
  $("cell-sum").textContent =
    `pooled (${cell.dataset.cell.replace(",", ", ")}) = ${how} = ${fmt(value, 4)}`;
  $("cell-sum").dataset.value = String(value);
  $("where").textContent = `pooled cell ${i + 1} of ${p.windows.length}: ${flat.length} output ` +
    "cells (padding never counts)";
  $("cell-detail").classList.add("pool-mode");
}

// ------------------------------------------------------------ stepping

function step(delta) {
  if (!data) return;
  const n = data.windows.length;
  focus((pos + delta + n) % n);
}
function stop() {
  clearInterval(timer);
  timer = null;
  $("play").textContent = "▶ play";
}
$("prev").addEventListener("click", () => { stop(); step(-1); });
$("next").addEventListener("click", () => { stop(); step(1); });
$("play").addEventListener("click", () => {
  if (timer) { stop(); return; }
  $("play").textContent = "❚❚ pause";
  step(1);
  timer = setInterval(() => step(1), 700);
});
$("reshuffle").addEventListener("click", () => { seed = (seed + 1) % 10000; changed(); });
form.addEventListener("input", changed);
form.addEventListener("change", changed);
form.addEventListener("submit", (e) => e.preventDefault());

syncPooling();
load();
