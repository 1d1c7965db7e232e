// cnnlab draw-a-digit page: pointer drawing (mouse, pen, touch), live predictions.
// One request is in flight at a time; strokes made meanwhile are sent as soon as it
// returns, so the prediction follows the pen without flooding the server. The bars (one
// per class) and the feature-map grids (one per conv layer) follow the network that
// api/model describes; names only ever go into the page as text.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const statusLine = document.getElementById("status");
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const inputImg = document.getElementById("input");
const barsEl = document.getElementById("bars");
const resultCard = document.querySelector(".result");
const mapsEl = document.getElementById("maps");
const MAP_WIDTH = 440; // px available for a feature-map grid

const bars = []; // one per class, made as the model (or the first answer) says
function ensureBars(n) {
  while (bars.length < n) {
    const row = document.createElement("div");
    row.className = "bar";
    row.innerHTML = '<span class="label"></span><div class="track"><div class="fill"></div>' +
      '</div><span class="val">–</span>';
    row.querySelector(".label").textContent = String(bars.length);
    barsEl.appendChild(row);
    bars.push({ row, fill: row.querySelector(".fill"), val: row.querySelector(".val") });
  }
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

function updateBusy() { // aria-busy: an answer for the newest strokes is still coming
  resultCard.setAttribute("aria-busy", String(dirty || inFlight || pending > 0));
}

function resetPad() {
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
  resetResult("Draw a digit (0–9) with mouse, pen or finger.");
});

document.getElementById("file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file) return;
  dirty = false;
  resetPad();
  try { // show it on the pad too, so one can draw over it (formats the browser can show)
    const bitmap = await createImageBitmap(file);
    const s = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const w = bitmap.width * s, h = bitmap.height * s;
    ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  } catch (err) { /* the server may still read it */ }
  const form = new FormData();
  form.append("file", file, file.name);
  setStatus(`uploading ${file.name}…`, false);
  await send(form);
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

function show(r, image) {
  digitEl.textContent = String(r.digit);
  confidenceEl.textContent = `${(100 * r.probabilities[r.digit]).toFixed(1)}%`;
  ensureBars(r.probabilities.length);
  r.probabilities.forEach((p, d) => {
    bars[d].fill.style.width = `${(100 * p).toFixed(1)}%`;
    bars[d].val.textContent = p.toFixed(3);
    bars[d].row.classList.toggle("top", d === r.digit);
  });
  inputImg.src = r.input_png;
  for (const m of r.feature_maps) {
    const { img, cap } = ensureMap(m.layer);
    const rows = Math.ceil(m.channels / m.columns);
    const natural = m.columns * (m.width + 1) - 1;
    const scale = Math.max(1, Math.floor(MAP_WIDTH / natural));
    img.width = natural * scale;
    img.height = (rows * (m.height + 1) - 1) * scale;
    img.src = m.png;
    cap.textContent = `${m.layer}: ${m.channels} feature maps of ${m.height}×${m.width} ` +
      `(${activationText(m.activation)})`;
  }
  setStatus(`${r.inverted ? "inverted, " : ""}predicted in ${r.milliseconds.toFixed(1)} ms`, false);
  // detail.js: the answer and the image it is for (the detail view asks about that image)
  document.dispatchEvent(new CustomEvent("cnnlab:prediction", { detail: { answer: r, image } }));
}

Promise.all(["api/model", "api/health"].map((u) => fetch(u).then((r) => r.json())))
  .then(([model, h]) => {
    ensureBars(model.classes);
    for (const f of model.feature_maps) {
      ensureMap(f.layer).cap.textContent = `${f.layer}: ${f.channels} feature maps of ` +
        `${f.height}×${f.width} (${activationText(f.activation)})`;
    }
    const convs = model.feature_maps.length;
    document.getElementById("model").textContent =
      `model ${model.name} · ${model.classes} classes, ${convs} conv layer` +
      `${convs === 1 ? "" : "s"}, ${model.params.toLocaleString("en")} parameters · ` +
      `uploads up to ${(h.max_bytes / 1048576).toFixed(0)} MiB, ` +
      `${(h.max_pixels / 1e6).toFixed(0)} Mpixels`;
  }).catch(() => {
    document.getElementById("model").textContent = "model information unavailable";
  });

resetPad();
resetResult("Draw a digit (0–9) with mouse, pen or finger.");
