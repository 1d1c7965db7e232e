// cnnlab page, the detail view: click a feature-map pixel to see its receptive field on the
// input the network saw (a box over it, any size) and the weighted sum behind it (every
// input channel of it, for a colour input), as api/detail
// computes it (the NumPy engine, the network's own weights) for the image on show. app.js
// says what is on show with "cnnlab:prediction" and "cnnlab:cleared" events.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const card = $("detail");
  const rf = $("rf");
  const inputImg = $("input");
  let image = null; // the image the shown prediction is for (a Blob or File)
  let layers = new Map(); // layer name -> its grid's geometry, from the last answer
  let selected = null; // {layer, channel, y, x}
  let chosen = null; // the input channel shown, for layers with several
  let last = null; // the last detail answer
  let seq = 0;

  function fmt(v) {
    if (Number.isInteger(v)) return String(v).replace("-", "−");
    const digits = Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
    return v.toFixed(digits).replace("-", "−");
  }
  const paren = (v) => (v < 0 ? `(${fmt(v)})` : fmt(v));

  function grid(id, values, isPad = () => false) {
    const el = $(id);
    el.replaceChildren();
    el.style.setProperty("--cols", String(values[0].length));
    el.style.setProperty("--cell", values[0].length > 5 ? "38px" : "46px");
    values.forEach((row, a) => row.forEach((v, b) => {
      const div = document.createElement("div");
      div.className = isPad(a, b) ? "cell pad" : "cell";
      div.textContent = fmt(v);
      el.appendChild(div);
    }));
  }

  function clear() {
    selected = null;
    last = null;
    seq++;
    card.hidden = true;
    rf.hidden = true;
    for (const m of document.querySelectorAll(".map-wrap .marker")) m.remove();
  }

  // The unit under a click on a layer's grid image: maps of h x w with 1-pixel gaps.
  function unitAt(img, g, e) {
    const px = Math.floor((e.offsetX * img.naturalWidth) / img.clientWidth);
    const py = Math.floor((e.offsetY * img.naturalHeight) / img.clientHeight);
    const col = Math.floor(px / (g.width + 1)), x = px % (g.width + 1);
    const row = Math.floor(py / (g.height + 1)), y = py % (g.height + 1);
    const channel = row * g.columns + col;
    if (x >= g.width || y >= g.height || col >= g.columns || channel >= g.channels) return null;
    return { channel, y, x };
  }

  function mark(layer, unit) {
    for (const m of document.querySelectorAll(".map-wrap .marker")) m.remove();
    const img = $(`map-${layer}`), g = layers.get(layer);
    if (!img || !g) return;
    const s = img.clientWidth / img.naturalWidth;
    const marker = document.createElement("div");
    marker.className = "marker";
    const col = unit.channel % g.columns, row = Math.floor(unit.channel / g.columns);
    marker.style.left = `${(col * (g.width + 1) + unit.x) * s}px`;
    marker.style.top = `${(row * (g.height + 1) + unit.y) * s}px`;
    marker.style.width = marker.style.height = `${s}px`;
    img.parentElement.appendChild(marker);
  }

  async function load() {
    if (!selected || !image) return;
    const id = ++seq;
    const q = new URLSearchParams(Object.entries(selected).map(([k, v]) => [k, String(v)]));
    card.hidden = false;
    card.setAttribute("aria-busy", "true");
    let reply, body;
    try {
      reply = await fetch(`api/detail?${q}`, {
        method: "POST", body: image,
        headers: { "Content-Type": image.type || "application/octet-stream" },
      });
      body = await reply.json();
    } catch (err) {
      body = { detail: `no answer from the server (${err})` };
    }
    if (id !== seq) return; // a newer click or drawing
    card.setAttribute("aria-busy", "false");
    if (!reply || !reply.ok) {
      $("detail-title").textContent = "no detail";
      $("detail-sum").textContent = body.detail || `error ${reply.status}`;
      return;
    }
    last = body;
    if (chosen === null || chosen >= body.channels.length) chosen = strongest(body);
    show(body);
  }

  function strongest(d) { // the input channel that contributes most, to show first
    let best = 0;
    d.channels.forEach((c, i) => { if (Math.abs(c.sum) > Math.abs(d.channels[best].sum)) best = i; });
    return best;
  }

  // The input's own channels are colours for a colour network; later ones are numbered maps.
  const COLOURS = ["red", "green", "blue", "alpha"];
  function channelName(d, c) {
    return d.source === "input" && d.channels.length >= 3 ? COLOURS[c] : `channel ${c}`;
  }

  function show(d) {
    const f = d.receptive_field;
    $("detail-title").textContent = `${d.layer} · map ${d.channel} · unit (y ${d.y}, x ${d.x})`;
    $("detail-label").textContent = d.label;
    const clipped = f.rows[0] < 0 || f.cols[0] < 0 || f.bottom < f.rows[1] || f.right < f.cols[1];
    $("detail-field").textContent = `Receptive field: ${f.size.join("×")} input pixels, rows ` +
      `${f.rows[0]}–${f.rows[1]}, columns ${f.cols[0]}–${f.cols[1]}` +
      (clipped ? " (it reaches past the border, into the padding)" : "") +
      " — the yellow box on the input.";
    const sx = inputImg.clientWidth / (inputImg.naturalWidth || 28);
    const sy = inputImg.clientHeight / (inputImg.naturalHeight || 28);
    rf.style.left = `${f.left * sx}px`;
    rf.style.top = `${f.top * sy}px`;
    rf.style.width = `${(f.right - f.left + 1) * sx}px`;
    rf.style.height = `${(f.bottom - f.top + 1) * sy}px`;
    rf.hidden = false;
    const many = d.channels.length > 1;
    const chips = $("detail-channels");
    chips.hidden = !many;
    chips.replaceChildren();
    if (many) {
      const lead = document.createElement("span");
      lead.className = "muted small";
      lead.textContent = `${d.channels.length} input channels (Σ of each):`;
      chips.appendChild(lead);
      d.channels.forEach((c, i) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = `chip${i === chosen ? " on" : ""}`;
        const name = channelName(d, c.channel);
        b.textContent = `${name.startsWith("channel") ? c.channel : name}: ${fmt(c.sum)}`;
        b.addEventListener("click", () => { chosen = i; show(last); });
        chips.appendChild(b);
      });
    }
    const c = d.channels[chosen];
    const src = d.source === "input" ? "input" : `${d.source}'s output`;
    const where = `rows ${d.rows[0]}–${d.rows.at(-1)}, columns ${d.cols[0]}–${d.cols.at(-1)}`;
    const cname = channelName(d, c.channel);
    $("cap-window").textContent = `${src} window${many ? `, ${cname}` : ""}`;
    $("cap-weights").textContent = `kernel of map ${d.channel}` + (many ? `, ${cname}` : "");
    $("detail-where").textContent = `The window: ${src}, ${where}` +
      (d.pads.some((p) => p[0] || p[1]) ? " (dashed: zero padding)." : ".");
    const [h, w] = d.source_shape;
    const outside = (a, b) => d.rows[a] < 0 || d.rows[a] >= h || d.cols[b] < 0 || d.cols[b] >= w;
    grid("detail-window", c.inputs, outside);
    grid("detail-weights", c.weights);
    grid("detail-products", c.products);
    const terms = c.inputs.flatMap((row, a) => row.map((v, b) => `${paren(v)}·${paren(c.weights[a][b])}`));
    $("detail-partial").textContent = `${many ? `${cname}: ` : ""}` +
      `${terms.join(" + ")} = ${fmt(c.sum)}`;
    const act = d.activation === "linear" ? "" : ` → ${d.activation} → ${fmt(d.value)}`;
    $("detail-sum").textContent = `Σ products${many ? ` over ${d.channels.length} channels` : ""}` +
      ` = ${fmt(d.weighted_sum)}, + bias ${paren(d.bias)} = ${fmt(d.pre_activation)}${act}` +
      ` = the map's value ${fmt(d.map_value)}`;
    $("detail-sum").dataset.value = String(d.value);
    $("detail-sum").dataset.map = String(d.map_value);
  }

  document.getElementById("maps").addEventListener("click", (e) => {
    const img = e.target;
    if (!(img instanceof HTMLImageElement) || !img.id.startsWith("map-") || !img.src) return;
    const layer = img.id.slice(4), g = layers.get(layer);
    const unit = g && unitAt(img, g, e);
    if (!unit) return;
    if (!selected || selected.layer !== layer) chosen = null;
    selected = { layer, ...unit };
    mark(layer, unit);
    load();
  });

  document.addEventListener("cnnlab:prediction", (e) => {
    image = e.detail.image;
    layers = new Map(e.detail.answer.feature_maps.map((m) => [m.layer, m]));
    if (selected && layers.has(selected.layer)) load(); // follow the pen
  });
  document.addEventListener("cnnlab:cleared", clear);
})();
