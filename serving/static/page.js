"use strict";
// The counting page: pictures are counted once by the network at the slider's lowest threshold; moving the
// slider, drawing zones or showing the density asks /api/recount, which applies the same rules to those
// points without running the network again.

const FLOOR = 0.05;
const VIDEO_SUFFIXES = ["mp4", "m4v", "avi", "mkv", "mov", "webm", "mpg", "mpeg", "wmv", "flv", "ts"];
const state = { health: null, token: sessionStorage.getItem("token") || "", pictures: [], selected: null,
                drawing: null, recountTimer: null };
const $ = (id) => document.getElementById(id);

function say(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers);
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) $("token-row").hidden = false;
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (ignored) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function loadHealth() {
  const health = await (await fetch("/api/health")).json();
  state.health = health;
  $("model").textContent = `${health.model} · ${health.device} · ${health.mode} mode` +
    (health.restoration ? " · restoration module" : "");
  $("limits").textContent = `pictures up to ${health.max_megapixels} MP, uploads up to ${health.max_upload_mb} MB`;
  $("threshold").value = health.threshold;
  $("threshold-value").textContent = Number(health.threshold).toFixed(2);
  $("show-restored").disabled = !health.restoration;
  if (health.auth && !state.token) $("token-row").hidden = false;
}

function threshold() { return Number($("threshold").value); }

function isVideo(file) {
  const suffix = file.name.split(".").pop().toLowerCase();
  return file.type.startsWith("video/") || VIDEO_SUFFIXES.includes(suffix);
}

async function addFiles(files) {
  for (const file of files) {
    if (file.size > state.health.max_upload_mb * 1048576) {
      say(`${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over this server's upload limit of ` +
          `${state.health.max_upload_mb} MB`, true);
      continue;
    }
    try {
      await (isVideo(file) ? addVideo(file) : addPicture(file));
    } catch (error) {
      say(`${file.name}: ${error.message}`, true);
    }
  }
}

function card(templateId, name) {
  const element = $(templateId).content.firstElementChild.cloneNode(true);
  element.querySelector(".name").textContent = name;
  $("results").prepend(element);
  return element;
}

async function addPicture(file) {
  const element = card("picture-card", file.name);
  const picture = { name: file.name, element, candidates: [], kept: [], zones: {}, exclude: {}, zoneCounts: {},
                    width: 0, height: 0, url: URL.createObjectURL(file), restored: null, sequence: 0 };
  element.querySelector(".photo").src = picture.url;
  element.querySelector(".overlay").addEventListener("click", (event) => clickPicture(picture, event));
  element.querySelector(".overlay").addEventListener("dblclick", () => closeArea(true));
  element.querySelector(".points-csv").addEventListener("click", () => downloadPoints(picture));
  state.pictures.push(picture);
  select(picture);
  say(`counting ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  form.append("threshold", String(FLOOR));
  if (state.health.restoration) form.append("restore", "true");
  let answer;
  try {
    answer = await (await api("/api/count", { method: "POST", body: form })).json();
  } catch (error) {
    element.querySelector(".count").textContent = "—";
    element.querySelector(".meta").textContent = "not counted: " + error.message;
    throw error;
  }
  Object.assign(picture, { candidates: answer.points, width: answer.width, height: answer.height,
                           restored: answer.restored || null });
  const overlay = element.querySelector(".overlay");
  overlay.width = answer.width;
  overlay.height = answer.height;
  element.querySelector(".stack").style.aspectRatio = `${answer.width} / ${answer.height}`;
  element.querySelector(".meta").textContent =
    `${answer.width} x ${answer.height} px, ${answer.milliseconds} ms on the network`;
  showRestored(picture);
  await recount(picture);
  $("download-counts").disabled = false;
  say(`${file.name}: ${picture.count} people`);
}

async function recount(picture) {
  const sequence = ++picture.sequence;
  const body = { points: picture.candidates, threshold: threshold(), zones: picture.zones, exclude: picture.exclude,
                 density: $("show-density").checked, width: picture.width, height: picture.height };
  const answer = await (await api("/api/recount", { method: "POST", headers: { "Content-Type": "application/json" },
                                                    body: JSON.stringify(body) })).json();
  if (sequence !== picture.sequence) return;  // a newer recount has been asked for
  Object.assign(picture, { kept: answer.points, count: answer.count, zoneCounts: answer.zones });
  const density = picture.element.querySelector(".density");
  density.hidden = !answer.density;
  if (answer.density) {
    density.src = answer.density.image;
    density.title = `top of the colour scale: ${answer.density.peak.toPrecision(3)} people per pixel`;
  }
  picture.element.querySelector(".count").textContent = answer.count;
  const zones = picture.element.querySelector(".zones");
  zones.replaceChildren(...Object.entries(answer.zones).map(([name, count]) => {
    const item = document.createElement("span");
    item.textContent = `${name}: ${count}`;
    item.dataset.polygon = JSON.stringify(picture.zones[name]);
    return item;
  }), ...Object.keys(picture.exclude).map((name) => {
    const item = document.createElement("span");
    item.className = "excluded";
    item.textContent = `${name}: left out`;
    return item;
  }));
  draw(picture);
}

function recountAll() {
  clearTimeout(state.recountTimer);
  state.recountTimer = setTimeout(() => {
    for (const picture of state.pictures) {
      if (picture.width) recount(picture).catch((error) => say(error.message, true));
    }
  }, 120);
}

function select(picture) {
  state.selected = picture;
  for (const other of state.pictures) other.element.classList.toggle("selected", other === picture);
}

function draw(picture) {
  const canvas = picture.element.querySelector(".overlay");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const scale = Math.max(picture.width, picture.height) / 800;
  context.lineWidth = Math.max(1.5, 2 * scale);
  for (const polygon of Object.values(picture.exclude)) {
    path(context, polygon, true);
    context.fillStyle = "rgba(40, 40, 40, 0.45)";
    context.fill();
  }
  if ($("show-points").checked) {
    context.fillStyle = "#ff1a1a";
    const radius = Math.max(2, 2.5 * scale);
    for (const [x, y] of picture.kept) {
      context.beginPath();
      context.arc(x, y, radius, 0, 2 * Math.PI);
      context.fill();
    }
  }
  context.font = `${Math.round(16 * Math.max(1, scale))}px system-ui, sans-serif`;
  for (const [name, polygon] of Object.entries(picture.zones)) {
    path(context, polygon, true);
    context.strokeStyle = "#00c8ff";
    context.stroke();
    const [x, y] = polygon[0];
    const label = `${name}: ${picture.zoneCounts[name] ?? "…"}`;
    context.fillStyle = "rgba(0, 0, 0, 0.7)";
    context.fillRect(x, y - 20 * Math.max(1, scale), context.measureText(label).width + 8, 20 * Math.max(1, scale));
    context.fillStyle = "white";
    context.fillText(label, x + 4, y - 5 * Math.max(1, scale));
  }
  const drawing = state.drawing;
  if (drawing && drawing.picture === picture && drawing.vertices.length) {
    path(context, drawing.vertices, false);
    context.setLineDash([6 * scale, 4 * scale]);
    context.strokeStyle = drawing.kind === "zone" ? "#00c8ff" : "#444";
    context.stroke();
    context.setLineDash([]);
    for (const [x, y] of drawing.vertices) context.fillRect(x - 3 * scale, y - 3 * scale, 6 * scale, 6 * scale);
  }
}

function path(context, vertices, closed) {
  context.beginPath();
  vertices.forEach(([x, y], index) => (index ? context.lineTo(x, y) : context.moveTo(x, y)));
  if (closed) context.closePath();
}

function startArea(kind) {
  state.drawing = { kind, picture: null, vertices: [] };
  $("draw-zone").classList.toggle("active", kind === "zone");
  $("draw-exclusion").classList.toggle("active", kind === "exclusion");
  $("hint").hidden = false;
}

function endDrawing() {
  const picture = state.drawing && state.drawing.picture;
  state.drawing = null;
  $("draw-zone").classList.remove("active");
  $("draw-exclusion").classList.remove("active");
  $("hint").hidden = true;
  if (picture) draw(picture);
}

function clickPicture(picture, event) {
  const drawing = state.drawing;
  select(picture);
  if (!drawing || !picture.width) return;
  if (drawing.picture !== picture) Object.assign(drawing, { picture, vertices: [] });
  const canvas = picture.element.querySelector(".overlay");
  const box = canvas.getBoundingClientRect();
  const ratio = canvas.width / box.width;
  const point = [(event.clientX - box.left) * ratio, (event.clientY - box.top) * ratio];
  const first = drawing.vertices[0];
  if (drawing.vertices.length >= 3 && Math.hypot(point[0] - first[0], point[1] - first[1]) < 12 * ratio) {
    closeArea(false);
    return;
  }
  drawing.vertices.push(point);
  draw(picture);
}

function closeArea(fromDoubleClick) {
  const drawing = state.drawing;
  if (!drawing || !drawing.picture) return;
  const vertices = drawing.vertices;
  // A double-click is also two clicks on one spot: drop the repeated corner.
  if (fromDoubleClick && vertices.length > 1) {
    const [a, b] = vertices.slice(-2);
    if (Math.hypot(a[0] - b[0], a[1] - b[1]) < 1e-6) vertices.pop();
  }
  if (vertices.length < 3) {
    say("an area needs at least 3 corners", true);
    return;
  }
  const picture = drawing.picture;
  const areas = drawing.kind === "zone" ? picture.zones : picture.exclude;
  let number = Object.keys(areas).length + 1;
  while (`${drawing.kind} ${number}` in areas) number += 1;
  areas[`${drawing.kind} ${number}`] = vertices.map(([x, y]) => [Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
  endDrawing();
  recount(picture).catch((error) => say(error.message, true));
}

function showRestored(picture) {
  const restored = $("show-restored").checked && picture.restored;
  picture.element.querySelector(".photo").src = restored ? picture.restored : picture.url;
}

function download(name, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function csvField(value) {
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// A name that a spreadsheet would run as a formula (not a number such as -5) goes behind a quote, as
// run_test.py writes it (inference/outputs.py: csv_text).
function csvName(name) {
  return /^[=+\-@\t\r]/.test(name) && !/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(name) ? "'" + name : name;
}

function downloadCounts() {
  const counted = state.pictures.filter((picture) => picture.count !== undefined).reverse();
  const zones = [...new Set(counted.flatMap((picture) => Object.keys(picture.zoneCounts)))];
  const rows = [["image", "count", ...zones.map(csvName)]].concat(counted.map((picture) =>
    [csvName(picture.name), picture.count, ...zones.map((zone) => picture.zoneCounts[zone] ?? "")]));
  download("counts.csv", rows.map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n");
}

function downloadPoints(picture) {
  const rows = [["x", "y", "score"]].concat(picture.kept.map(([x, y, score]) =>
    [x.toFixed(4), y.toFixed(4), score.toFixed(6)]));
  download(picture.name.replace(/\.[^.]*$/, "") + ".csv", rows.map((row) => row.join(",")).join("\r\n") + "\r\n");
}

async function addVideo(file) {
  const element = card("video-card", file.name);
  const form = new FormData();
  form.append("file", file);
  form.append("threshold", String(threshold()));
  say(`uploading ${file.name}…`);
  let job;
  try {
    job = await (await api("/api/videos", { method: "POST", body: form })).json();
  } catch (error) {
    element.querySelector(".frames").textContent = "not counted: " + error.message;
    throw error;
  }
  say(`counting ${file.name} (${job.frames_total ?? "?"} frames)…`);
  const counts = [];
  element.querySelector(".counts-csv").addEventListener("click", async () => {
    const response = await api(`/api/videos/${job.id}/counts.csv`);
    download(file.name.replace(/\.[^.]*$/, "") + "_counts.csv", await response.text());
  });
  poll(job, element, counts);
}

async function poll(job, element, counts) {
  while (true) {
    let progress;
    try {
      progress = await (await api(`/api/videos/${job.id}?since=${counts.length}`)).json();
    } catch (error) {
      element.querySelector(".frames").textContent = "lost the job: " + error.message;
      return;
    }
    counts.push(...progress.counts);
    const total = progress.frames_total;
    const bar = element.querySelector(".progress");
    if (total) bar.value = progress.frames_done / total;
    const finished = ["done", "failed", "cancelled"].includes(progress.state);
    if (finished && progress.state === "done") bar.value = 1;
    const last = counts.length ? `, ${counts[counts.length - 1].count} people in the last` : "";
    element.querySelector(".frames").textContent =
      `${progress.state}: ${progress.frames_done}${total ? " of " + total : ""} frames${last}` +
      (progress.error ? ` (${progress.error})` : "");
    drawChart(element.querySelector(".chart"), counts);
    if (finished) {
      element.querySelector(".counts-csv").disabled = counts.length === 0;
      say(`${job.name}: ${progress.state}, ${counts.length} frames counted`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

function drawChart(canvas, counts) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const margin = 36;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#999";
  context.strokeRect(margin, 8, width - margin - 8, height - margin);
  if (!counts.length) return;
  const end = Math.max(counts[counts.length - 1].time_s, 1e-3);
  const top = Math.max(1, ...counts.map((row) => row.count));
  context.fillStyle = "#333";
  context.font = "13px system-ui, sans-serif";
  context.fillText(String(top), 4, 18);
  context.fillText("0", 4, height - margin + 4);
  context.fillText(`${end.toFixed(1)} s`, width - 56, height - 10);
  context.beginPath();
  counts.forEach((row, index) => {
    const x = margin + (width - margin - 8) * row.time_s / end;
    const y = height - margin - (height - margin - 8) * row.count / top;
    if (index) context.lineTo(x, y); else context.moveTo(x, y);
  });
  context.strokeStyle = "#0b62d6";
  context.lineWidth = 2;
  context.stroke();
}

function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles([...event.dataTransfer.files]);
  });
  $("files").addEventListener("change", (event) => { addFiles([...event.target.files]); event.target.value = ""; });
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = threshold().toFixed(2);
    recountAll();
  });
  $("show-points").addEventListener("change", () => state.pictures.forEach(draw));
  $("show-density").addEventListener("change", recountAll);
  $("show-restored").addEventListener("change", () => state.pictures.forEach(showRestored));
  $("draw-zone").addEventListener("click", () => startArea("zone"));
  $("draw-exclusion").addEventListener("click", () => startArea("exclusion"));
  $("clear-zones").addEventListener("click", () => {
    const picture = state.selected;
    if (!picture) return;
    picture.zones = {};
    picture.exclude = {};
    recount(picture).catch((error) => say(error.message, true));
  });
  $("download-counts").addEventListener("click", downloadCounts);
  $("token-row").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("token", state.token);
    $("token-row").hidden = true;
    say("token set; drop the files again");
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.drawing) endDrawing();
    if (event.key === "Enter" && state.drawing) closeArea(false);
  });
}

wire();
loadHealth().catch((error) => say("cannot reach the server: " + error.message, true));
