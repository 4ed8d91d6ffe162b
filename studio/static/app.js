// artgan studio: talks only to the server that served it, names things by the ids it was given.
"use strict";
const TAB = (self.crypto && crypto.randomUUID) ? crypto.randomUUID()
  : Array.from({length: 4}, () => Math.random().toString(16).slice(2, 10)).join("-");
const $ = (id) => document.getElementById(id);
const PAGE = 32;
let info = null, version = null, nextSeed = 0, selected = null;
let waypoints = [];  // {kind: "seed", seed} | {kind: "latent", id, name}
let styles = [];     // {id, name, weight}
let contentUpload = null;

async function api(path, body, method) {
  const opts = {method: method || (body === undefined ? "GET" : "POST"), headers: {"X-Studio-Tab": TAB}};
  if (body instanceof Blob) opts.body = body;
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  let r;
  try { r = await fetch(path, opts); } catch (e) { throw new Error("the studio server does not answer (is it still running?)"); }
  let data = null;
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error((data && data.error) || `the server answered ${r.status}`);
  return data;
}

function showError(id, err) {
  const el = $(id);
  if (!err) { el.hidden = true; el.textContent = ""; return; }
  el.textContent = err.message || String(err);
  el.hidden = false;
}

function controls() {
  const t = parseFloat($("trunc").value);
  return {trunc: t, cls: info && info.model && info.model.classes.length ? $("class").value : null};
}

function command(el, text) { el.textContent = text || ""; }

// ---------------------------------------------------------------- model info
async function refreshInfo() {
  let next;
  try { next = await api("/api/info"); } catch (e) { showBanner(e.message); return; }
  showBanner(next.error);
  const first = info === null;
  info = next;
  const m = info.model;
  if (!m) { $("model-label").textContent = "no model loaded"; return; }
  $("model-label").textContent = `${m.arch} · ${m.resolution}px · ${m.label}`;
  if (first) setupModel(m);
  if (version !== null && m.version !== version) {
    $("notice").textContent = `new checkpoint loaded: ${m.label}`;
    $("notice").hidden = false;
    version = m.version;
    showSeeds(parseInt($("seed-start").value) || 0, false);
  }
  version = m.version;
  if (info.run && !$("panel-run").hidden) refreshRun();
}

function showBanner(msg) {
  const el = $("model-error");
  el.hidden = !msg;
  el.textContent = msg || "";
}

function setupModel(m) {
  if (m.classes.length) {
    const sel = $("class");
    for (const c of m.classes) { const o = document.createElement("option"); o.value = o.textContent = c; sel.appendChild(o); }
    $("class-box").hidden = false;
  }
  $("tab-mix").hidden = !m.mixing;
  $("tab-run").hidden = !info.run;
  $("walk-mp4").disabled = !info.video;
  showSeeds(0, false);
}

// ---------------------------------------------------------------- seeds
let seedsAsked = 0;  // the newest showSeeds call: an older answer arriving after it is dropped
async function showSeeds(start, append) {
  const ask = ++seedsAsked;
  const {trunc, cls} = controls();
  const seeds = `${start}-${start + PAGE - 1}`;
  showError("seeds-error", null);
  let res;
  try { res = await api("/api/render", {seeds, trunc, cls}); } catch (e) { if (ask === seedsAsked) showError("seeds-error", e); return; }
  // A class, truncation and first seed set in quick succession each ask; answers can come back
  // in any order, and the last control set must win, not the slowest answer.
  if (ask !== seedsAsked) return;
  version = res.version;
  const box = $("thumbs");
  if (!append) box.replaceChildren();
  for (const im of res.images) {
    const fig = document.createElement("figure");
    fig.className = "thumb";
    fig.dataset.seed = im.seed;
    const img = document.createElement("img");
    img.src = im.url; img.alt = `seed ${im.seed}`; img.loading = "eager";
    const cap = document.createElement("figcaption");
    cap.textContent = im.seed;
    fig.append(img, cap);
    fig.addEventListener("click", () => select(im));
    box.appendChild(fig);
    if (selected && selected.seed === im.seed) select(im);
  }
  nextSeed = start + PAGE;
}

function select(im) {
  selected = im;
  $("viewer").hidden = false;
  $("viewer-title").textContent = `seed ${im.seed}`;
  $("viewer-img").src = im.url;
  $("viewer-download").href = im.url + (im.url.includes("?") ? "&" : "?") + "download=1";
  $("viewer-download").setAttribute("download", `seed${String(im.seed).padStart(4, "0")}.png`);
  command($("viewer-cmd"), im.command);
  $("refine-seed").value = im.seed;
}

// ---------------------------------------------------------------- mixing
async function doMix() {
  showError("mix-error", null);
  const layers = $("mix-layers").value === "custom" ? $("mix-range").value : $("mix-layers").value;
  try {
    const res = await api("/api/mix", {rows: $("mix-rows").value, cols: $("mix-cols").value, layers, ...controls()});
    $("mix-img").src = res.file.url;
    $("mix-download").href = res.file.url + "&download=1";
    command($("mix-cmd"), res.command);
    $("mix-result").hidden = false;
  } catch (e) { showError("mix-error", e); }
}

// ---------------------------------------------------------------- walks
function renderWaypoints() {
  const box = $("waypoints");
  box.replaceChildren();
  waypoints.forEach((w, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = w.kind === "seed" ? `seed ${w.seed}` : w.name;
    const x = document.createElement("button");
    x.textContent = "×"; x.title = "remove";
    x.addEventListener("click", () => { waypoints.splice(i, 1); renderWaypoints(); });
    chip.appendChild(x);
    box.appendChild(chip);
  });
}

function addWaypoint(w) {
  if (waypoints.length && waypoints[0].kind !== w.kind) waypoints = [];  // one kind per walk
  waypoints.push(w);
  renderWaypoints();
}

async function doWalk() {
  showError("walk-error", null);
  const body = {frames: parseInt($("walk-frames").value), fps: parseInt($("walk-fps").value),
                loop: $("walk-loop").checked, format: $("walk-format").value, ...controls()};
  if (waypoints.length && waypoints[0].kind === "latent") body.latents = waypoints.map((w) => w.id);
  else body.seeds = waypoints.map((w) => w.seed).join(",");
  $("walk-go").disabled = true;
  try {
    const res = await api("/api/walk", body);
    const video = res.file.name.endsWith(".mp4");
    $("walk-img").hidden = video; $("walk-video").hidden = !video;
    if (video) $("walk-video").src = res.file.url; else $("walk-img").src = res.file.url;
    $("walk-download").href = res.file.url + "&download=1";
    $("walk-download").setAttribute("download", res.file.name);
    command($("walk-cmd"), res.command);
    $("walk-result").hidden = false;
  } catch (e) { showError("walk-error", e); }
  $("walk-go").disabled = false;
}

// ---------------------------------------------------------------- uploads and jobs
async function upload(file) {
  return api(`/api/upload?name=${encodeURIComponent(file.name)}`, file);
}

function fileLinks(box, files) {
  box.replaceChildren();
  for (const f of files) {
    const a = document.createElement("a");
    a.href = f.url + "&download=1"; a.textContent = f.name; a.setAttribute("download", f.name);
    box.appendChild(a);
  }
}

async function runJob(prefix, path, body, onDone) {
  showError(`${prefix}-error`, null);
  $(`${prefix}-result`).hidden = true;
  let job;
  try { job = await api(path, body); } catch (e) { showError(`${prefix}-error`, e); return; }
  $(`${prefix}-job`).dataset.job = job.id;
  const bar = $(`${prefix}-progress`), note = $(`${prefix}-note`);
  $(`${prefix}-job`).hidden = false;
  $(`${prefix}-go`).disabled = true;
  const cancel = $(`${prefix}-cancel`);
  cancel.disabled = false;
  cancel.onclick = async () => { cancel.disabled = true; try { await api(`/api/job/${job.id}/cancel`, {}); } catch (e) { /* gone */ } };
  while (job.state === "queued" || job.state === "running") {
    await new Promise((r) => setTimeout(r, 250));
    try { job = await api(`/api/job/${job.id}`); } catch (e) { showError(`${prefix}-error`, e); break; }
    bar.max = job.total || 1; bar.value = job.done;
    note.textContent = job.state === "queued" ? "waiting for the job before it…" : `${job.done}/${job.total} ${job.note}`;
  }
  $(`${prefix}-go`).disabled = false;
  cancel.disabled = true;
  if (job.state === "done") { $(`${prefix}-job`).hidden = true; onDone(job.result); $(`${prefix}-result`).hidden = false; }
  else if (job.state === "cancelled") note.textContent = "cancelled";
  else if (job.state === "failed") { $(`${prefix}-job`).hidden = true; showError(`${prefix}-error`, new Error(job.error)); }
}

let projectUpload = null, lastProjection = null;

async function takeProjectFile(file) {
  showError("project-error", null);
  $("project-target").textContent = `uploading ${file.name}…`;
  try { projectUpload = await upload(file); } catch (e) { projectUpload = null; showError("project-error", e); }
  $("project-target").textContent = projectUpload ? `${projectUpload.name} (${projectUpload.width}×${projectUpload.height})` : "";
}

async function doProject() {
  if (!projectUpload) { showError("project-error", new Error("drop an image to project first")); return; }
  await runJob("project", "/api/project", {upload: projectUpload.id, steps: parseInt($("project-steps").value),
                                           cls: controls().cls}, (r) => {
    lastProjection = r;
    const strip = r.files.find((f) => f.name.endsWith("_strip.png"));
    $("project-img").src = strip.url;
    $("project-psnr").textContent = `PSNR ${r.psnr} dB`;
    fileLinks($("project-files"), r.files);
    command($("project-cmd"), r.command);
  });
}

async function takeStyles(files) {
  showError("refine-error", null);
  for (const f of files) {
    try { const u = await upload(f); styles.push({id: u.id, name: u.name, weight: 1}); }
    catch (e) { showError("refine-error", e); }
  }
  renderStyles();
}

function renderStyles() {
  const box = $("style-list");
  box.replaceChildren();
  styles.forEach((s, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.append(document.createTextNode(s.name + " weight "));
    const w = document.createElement("input");
    w.type = "number"; w.min = "0"; w.step = "0.1"; w.value = s.weight; w.className = "weight";
    w.addEventListener("change", () => { s.weight = parseFloat(w.value); });
    const x = document.createElement("button");
    x.textContent = "×"; x.title = "remove";
    x.addEventListener("click", () => { styles.splice(i, 1); renderStyles(); });
    chip.append(w, x);
    box.appendChild(chip);
  });
}

async function doRefine() {
  const useUpload = document.querySelector('input[name="content"]:checked').value === "upload";
  if (useUpload && !contentUpload) { showError("refine-error", new Error("choose a content image, or refine a seed")); return; }
  const content = useUpload ? {upload: contentUpload.id} : {seed: parseInt($("refine-seed").value)};
  const finish = Array.from(document.querySelectorAll(".finish:checked")).map((c) => c.value);
  await runJob("refine", "/api/refine", {
    content, styles: styles.map((s) => ({upload: s.id, weight: s.weight})),
    strength: Math.pow(10, parseFloat($("refine-strength").value)), steps: parseInt($("refine-steps").value),
    size: parseInt($("refine-size").value), preserve_color: $("refine-keep-colour").checked, finish, ...controls(),
  }, (r) => {
    const strip = r.files.find((f) => f.name.endsWith("_strip.png"));
    $("refine-img").src = strip.url;
    const drop = 100 * (1 - r.style_end / r.style_start);
    $("refine-summary").textContent = `style loss ${r.style_start.toPrecision(4)} → ${r.style_end.toPrecision(4)} (${drop.toFixed(0)}% lower)`;
    fileLinks($("refine-files"), r.files);
    command($("refine-cmd"), r.command);
  });
}

// ---------------------------------------------------------------- the run
async function refreshRun() {
  let r;
  try { r = await api("/api/run"); } catch (e) { return; }
  if (!r.run) return;
  plot($("run-losses"), r.losses);
  const mt = $("run-metrics");
  mt.replaceChildren();
  if (r.metrics.length) {
    const keys = Object.keys(r.metrics[r.metrics.length - 1]).filter((k) => k !== "num" && k !== "seconds");
    const table = document.createElement("table");
    const head = table.insertRow();
    for (const k of keys) { const th = document.createElement("th"); th.textContent = k; head.appendChild(th); }
    for (const row of r.metrics.slice(-10)) {
      const tr = table.insertRow();
      for (const k of keys) tr.insertCell().textContent = typeof row[k] === "number" ? +row[k].toPrecision(4) : (row[k] ?? "");
    }
    mt.appendChild(table);
  } else mt.textContent = "no metrics yet (train with --metrics)";
  const ev = $("run-events");
  ev.replaceChildren(...r.events.map((e) => { const li = document.createElement("li"); li.textContent = e; return li; }));
}

const SVG = "http://www.w3.org/2000/svg";
function plot(box, rows) {
  box.replaceChildren();
  if (!rows.length) { box.textContent = "no losses logged yet"; return; }
  const keys = Object.keys(rows[0]).filter((k) => k !== "kimg");
  const W = 640, H = 220, P = 32;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "chart");
  const xs = rows.map((r) => r.kimg);
  const vals = rows.flatMap((r) => keys.map((k) => r[k])).filter(Number.isFinite);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...vals), y1 = Math.max(...vals);
  const sx = (x) => P + (W - 2 * P) * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
  const sy = (y) => H - P - (H - 2 * P) * (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5);
  const colours = ["#d1495b", "#00798c", "#edae49", "#30638e", "#66a182"];
  keys.forEach((k, i) => {
    const pts = rows.filter((r) => Number.isFinite(r[k])).map((r) => `${sx(r.kimg).toFixed(1)},${sy(r[k]).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" ")); line.setAttribute("fill", "none");
    line.setAttribute("stroke", colours[i % colours.length]); line.setAttribute("stroke-width", "1.5");
    svg.appendChild(line);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", P + 70 * i); label.setAttribute("y", 14); label.setAttribute("fill", colours[i % colours.length]);
    label.textContent = k;
    svg.appendChild(label);
  });
  for (const [text, x, y] of [[`${x0.toFixed(1)} kimg`, P, H - 8], [`${x1.toFixed(1)} kimg`, W - P - 60, H - 8],
                              [y1.toPrecision(3), 2, P], [y0.toPrecision(3), 2, H - P]]) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("class", "axis"); t.textContent = text;
    svg.appendChild(t);
  }
  box.appendChild(svg);
}

// ---------------------------------------------------------------- wiring
function dropZone(zone, input, take) {
  input.addEventListener("change", () => { if (input.files.length) take(Array.from(input.files)); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); take(Array.from(e.dataTransfer.files)); });
}

document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("#tabs button").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== `panel-${b.dataset.panel}`; });
  if (b.dataset.panel === "run") refreshRun();
}));
$("trunc").addEventListener("input", () => { $("trunc-value").textContent = $("trunc").value; });
$("trunc").addEventListener("change", () => showSeeds(parseInt($("seed-start").value) || 0, false));
$("class").addEventListener("change", () => showSeeds(parseInt($("seed-start").value) || 0, false));
$("seed-show").addEventListener("click", () => showSeeds(parseInt($("seed-start").value) || 0, false));
$("seed-start").addEventListener("keydown", (e) => { if (e.key === "Enter") showSeeds(parseInt($("seed-start").value) || 0, false); });
$("seed-more").addEventListener("click", () => showSeeds(nextSeed, true));
$("viewer-walk").addEventListener("click", () => { if (selected) addWaypoint({kind: "seed", seed: selected.seed}); });
$("viewer-refine").addEventListener("click", () => {
  document.querySelector('input[name="content"][value="seed"]').checked = true;
  document.querySelector('#tabs button[data-panel="refine"]').click();
});
$("mix-layers").addEventListener("change", () => { $("mix-range").hidden = $("mix-layers").value !== "custom"; });
$("mix-go").addEventListener("click", doMix);
$("walk-add-go").addEventListener("click", () => {
  for (const part of $("walk-add").value.split(",")) {
    const s = parseInt(part);
    if (Number.isInteger(s) && s >= 0) addWaypoint({kind: "seed", seed: s});
  }
  $("walk-add").value = "";
});
$("walk-clear").addEventListener("click", () => { waypoints = []; renderWaypoints(); });
$("walk-go").addEventListener("click", doWalk);
dropZone($("project-drop"), $("project-file"), (files) => takeProjectFile(files[0]));
$("project-go").addEventListener("click", doProject);
$("project-waypoint").addEventListener("click", () => {
  if (lastProjection) addWaypoint({kind: "latent", id: lastProjection.latent, name: lastProjection.name});
});
dropZone($("refine-drop"), $("refine-styles"), takeStyles);
$("refine-content").addEventListener("change", async () => {
  const f = $("refine-content").files[0];
  if (!f) return;
  showError("refine-error", null);
  try { contentUpload = await upload(f); document.querySelector('input[name="content"][value="upload"]').checked = true; }
  catch (e) { contentUpload = null; showError("refine-error", e); }
});
$("refine-strength").addEventListener("input", () => {
  $("refine-strength-value").textContent = Math.pow(10, parseFloat($("refine-strength").value)).toExponential(1);
});
$("refine-go").addEventListener("click", doRefine);

refreshInfo();
setInterval(refreshInfo, 2000);
