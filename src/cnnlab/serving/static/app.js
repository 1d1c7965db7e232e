// cnnlab page: upload or drop an image (any image network), or draw a digit (networks trained
// on MNIST digits: the server leaves the pad out of the page otherwise), and watch the
// network predict. While drawing, one request is in flight at a time; strokes made
// meanwhile are sent as soon as it returns, so the prediction follows the pen without
// flooding the server. The bars (the classes, by name) and the feature-map grids (one per
// conv layer) follow the network that api/model describes; names only ever go into the
// page as text.
"use strict";

const pad = document.getElementById("pad"); // null: the network takes no drawn digits
const ctx = pad ? pad.getContext("2d") : null;
const dropEl = document.getElementById("drop");
const original = document.getElementById("original");
const statusLine = document.getElementById("status");
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const inputImg = document.getElementById("input");
const inputCaption = document.getElementById("input-caption");
const barsEl = document.getElementById("bars");
const resultCard = document.querySelector(".result");
const mapsEl = document.getElementById("maps");
const MAP_WIDTH = 720; // px: the widest layer's grid at most this wide on a wide page
const INPUT_SIDE = 168; // px for the longer side of the input as shown
const MAX_BARS = 10; // more classes than this: the most probable ones, by name

let model = null; // api/model's answer
let hint = "";

const bars = []; // one per class shown
function ensureBars(n) {
  while (bars.length < n) {
    const row = document.createElement("div");
    row.className = "bar";
    row.innerHTML = '<span class="label"></span><div class="track"><div class="fill"></div>' +
      '</div><span class="val">–</span>';
    row.querySelector(".label").textContent = className(bars.length);
    barsEl.appendChild(row);
    bars.push({ row, label: row.querySelector(".label"), fill: row.querySelector(".fill"),
      val: row.querySelector(".val") });
  }
}

function className(k) {
  return model && model.class_names[k] !== undefined ? model.class_names[k] : String(k);
}

const maps = new Map(); // layer name -> {img, cap}, in the network's order
function ensureMap(layer) {
  let m = maps.get(layer);
  if (!m) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.id = `map-${layer}`;
    img.alt = `feature maps of ${layer}`;
    const cap = document.createElement("figcaption");
    cap.id = `cap-${layer}`;
    cap.textContent = `${layer} feature maps`;
    const wrap = document.createElement("div"); // detail.js marks the clicked unit in it
    wrap.className = "map-wrap";
    wrap.append(img);
    fig.append(wrap, cap);
    mapsEl.appendChild(fig);
    m = { img, cap };
    maps.set(layer, m);
  }
  return m;
}

// One scale for every layer: a map cell is the same number of screen pixels on every layer,
// so a 28x28 map is drawn larger than a 12x12 one (a scale per layer had drawn the 12x12
// maps larger). Whole pixels keep the cells crisp; a page narrower than the widest grid
// shrinks every layer by the same factor.
let shownMaps = []; // the last answer's feature_maps
function mapScale(grids) {
  const cs = getComputedStyle(mapsEl), main = mapsEl.parentElement;
  const ms = getComputedStyle(main);
  const room = main.clientWidth - parseFloat(ms.paddingLeft) - parseFloat(ms.paddingRight) -
    parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const widest = Math.max(...grids.map((m) => m.columns * (m.width + 1) - 1));
  const fit = Math.min(MAP_WIDTH, room) / widest;
  return fit >= 1 ? Math.floor(fit) : fit;
}

function layoutMaps() {
  if (!shownMaps.length) return;
  const scale = mapScale(shownMaps);
  for (const m of shownMaps) {
    const { img, cap } = ensureMap(m.layer);
    const rows = Math.ceil(m.channels / m.columns);
    img.width = Math.round((m.columns * (m.width + 1) - 1) * scale);
    img.height = Math.round((rows * (m.height + 1) - 1) * scale);
    cap.textContent = `${m.layer}: ${m.channels} feature maps of ${m.height}×${m.width} ` +
      `(${activationText(m.activation)})`;
  }
  const px = Number.isInteger(scale) ? String(scale) : scale.toFixed(2);
  scaleNote().textContent = `Every layer at one scale: a map cell is ${px}×${px} screen ` +
    "pixels, so larger maps are drawn larger.";
}

function scaleNote() {
  let note = document.getElementById("maps-scale");
  if (!note) {
    note = document.createElement("p");
    note.id = "maps-scale";
    note.className = "muted small";
    mapsEl.prepend(note);
  }
  return note;
}
window.addEventListener("resize", layoutMaps);

function activationText(name) {
  return name === "linear" ? "no activation" : `after ${name}`;
}

let drawing = false;
let last = null;
let dirty = false;
let inFlight = false;
let seq = 0; // requests are numbered; answers older than the newest shown are dropped
let shown = 0;
let pending = 0; // requests without an answer yet

function updateBusy() { // aria-busy: an answer for the newest image is still coming
  resultCard.setAttribute("aria-busy", String(dirty || inFlight || pending > 0));
}

function resetPad() {
  if (!ctx) return;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#000";
  ctx.fillStyle = "#000";
  ctx.lineWidth = 20;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
}

function resetResult(message) {
  digitEl.textContent = "–";
  digitEl.classList.remove("long");
  confidenceEl.textContent = "";
  for (const b of bars) {
    b.fill.style.width = "0";
    b.val.textContent = "–";
    b.row.classList.remove("top");
  }
  inputImg.removeAttribute("src");
  for (const m of maps.values()) m.img.removeAttribute("src");
  setStatus(message, false);
  document.dispatchEvent(new CustomEvent("cnnlab:cleared"));
}

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function point(e) {
  const r = pad.getBoundingClientRect();
  return { x: (e.clientX - r.left) * (pad.width / r.width), y: (e.clientY - r.top) * (pad.height / r.height) };
}

if (pad) {
  pad.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    drawing = true;
    last = point(e);
    ctx.beginPath();
    ctx.arc(last.x, last.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
    changed();
  });

  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    for (const ev of events.length ? events : [e]) {
      last = point(ev);
      ctx.lineTo(last.x, last.y);
    }
    ctx.stroke();
    changed();
  });

  for (const type of ["pointerup", "pointercancel"]) {
    pad.addEventListener(type, () => {
      if (drawing) changed();
      drawing = false;
    });
  }

  document.getElementById("clear").addEventListener("click", () => {
    seq++;
    shown = seq;
    dirty = false;
    updateBusy();
    resetPad();
    resetResult(hint);
  });
  dropEl.hidden = true; // the pad is the place to drop on
}

// An image file from the picker or a drop: shown as given, sent to the server as it is.
async function upload(file) {
  dirty = false;
  if (pad) {
    resetPad();
    try { // on the pad too, so one can draw over it (formats the browser can show)
      const bitmap = await createImageBitmap(file);
      const s = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
      const w = bitmap.width * s, h = bitmap.height * s;
      ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    } catch (err) { /* the server may still read it */ }
  } else {
    if (original.src) URL.revokeObjectURL(original.src);
    original.src = URL.createObjectURL(file); // a TIFF the browser cannot show stays blank
    dropEl.classList.add("filled");
  }
  const form = new FormData();
  form.append("file", file, file.name);
  setStatus(`uploading ${file.name}…`, false);
  await send(form);
}

document.getElementById("file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (file) await upload(file);
});

// Dropping works anywhere on the page: a browser would otherwise open the file itself.
const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
document.addEventListener("dragover", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = "copy";
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", (e) => {
  if (e.relatedTarget === null) document.body.classList.remove("dragging");
});
document.addEventListener("drop", async (e) => {
  document.body.classList.remove("dragging");
  if (!hasFiles(e)) return;
  e.preventDefault();
  const file = e.dataTransfer.files[0];
  if (file) await upload(file);
});

function changed() {
  dirty = true;
  updateBusy();
  pump();
}

async function pump() {
  if (inFlight || !dirty) return;
  dirty = false;
  inFlight = true;
  try {
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    await send(blob, "image/png");
  } finally {
    inFlight = false;
    updateBusy();
    if (dirty) setTimeout(pump, 0);
  }
}

async function send(body, type) {
  const id = ++seq;
  const opts = { method: "POST", body };
  if (type) opts.headers = { "Content-Type": type };
  let reply, data;
  pending++;
  updateBusy();
  try {
    reply = await fetch("api/predict", opts);
    data = await reply.json();
  } catch (err) {
    if (id > shown) { shown = id; setStatus(`no answer from the server (${err})`, true); }
    return;
  } finally {
    pending--;
    updateBusy();
  }
  if (id < shown) return;
  shown = id;
  if (!reply.ok) {
    resetResult(data.detail || `error ${reply.status}`);
    setStatus(data.detail || `error ${reply.status}`, true);
    return;
  }
  show(data, body instanceof FormData ? body.get("file") : body);
}

function showBars(r) {
  const n = r.probabilities.length;
  // Few classes: every one, in the classes' order (bars stay put while one draws).
  // Many: the most probable, most probable first.
  const order = n <= MAX_BARS ? [...Array(n).keys()]
    : [...Array(n).keys()].sort((a, b) => r.probabilities[b] - r.probabilities[a]).slice(0, MAX_BARS);
  ensureBars(order.length);
  order.forEach((k, i) => {
    const p = r.probabilities[k];
    bars[i].label.textContent = className(k);
    bars[i].label.title = className(k);
    bars[i].fill.style.width = `${(100 * p).toFixed(1)}%`;
    bars[i].val.textContent = p.toFixed(3);
    bars[i].row.classList.toggle("top", k === r.class_index);
  });
}

function show(r, image) {
  digitEl.textContent = r.label;
  digitEl.classList.toggle("long", r.label.length > 3);
  confidenceEl.textContent = `${(100 * r.probabilities[r.class_index]).toFixed(1)}%`;
  showBars(r);
  inputImg.src = r.input_png;
  shownMaps = r.feature_maps;
  layoutMaps();
  for (const m of r.feature_maps) ensureMap(m.layer).img.src = m.png;
  setStatus(`${r.inverted ? "inverted, " : ""}predicted ${r.label} in ${r.milliseconds.toFixed(1)} ms`, false);
  // detail.js: the answer and the image it is for (the detail view asks about that image)
  document.dispatchEvent(new CustomEvent("cnnlab:prediction", { detail: { answer: r, image } }));
}

function describeModel(m, h) {
  const [ih, iw, ic] = m.input_shape;
  const side = INPUT_SIDE / Math.max(ih, iw);
  inputImg.width = Math.round(iw * side);
  inputImg.height = Math.round(ih * side);
  inputImg.alt = `the ${ih}×${iw} input the network saw`;
  inputCaption.textContent = `what the network saw: ${m.preprocessing.replace(/(\d+)x(\d+)/, "$1×$2")}`;
  ensureBars(Math.min(m.classes, MAX_BARS));
  for (const f of m.feature_maps) {
    ensureMap(f.layer).cap.textContent = `${f.layer}: ${f.channels} feature maps of ` +
      `${f.height}×${f.width} (${activationText(f.activation)})`;
  }
  const convs = m.feature_maps.length;
  const names = m.class_names.slice(0, 5).join(", ") + (m.classes > 5 ? ", …" : "");
  document.getElementById("model").textContent =
    `model ${m.name} · ${m.classes} classes (${names}) · input ${ih}×${iw}×${ic} · ` +
    `${convs} conv layer${convs === 1 ? "" : "s"}, ${m.params.toLocaleString("en")} parameters · ` +
    `uploads up to ${(h.max_bytes / 1048576).toFixed(0)} MiB, ` +
    `${(h.max_pixels / 1e6).toFixed(0)} Mpixels`;
  hint = m.drawing ? "Draw a digit (0–9) with mouse, pen or finger, or drop an image."
    : "Drop an image anywhere on the page, or choose a file (PNG, JPEG, BMP, GIF, WebP, TIFF).";
  if (!statusLine.classList.contains("error") && pending === 0 && shown === 0) setStatus(hint, false);
}

Promise.all(["api/model", "api/health"].map((u) => fetch(u).then((r) => r.json())))
  .then(([m, h]) => {
    model = m;
    describeModel(m, h);
  }).catch(() => {
    document.getElementById("model").textContent = "model information unavailable";
  });

resetPad();
resetResult("Loading…");
