// A camera's tile: its state, counts and newest counted frame with the points found, the zones with their
// counts and the exclusions drawn over it. A zone whose alert is raised is drawn red (the whole frame's
// border for an alert on the total), so the points are yellow here rather than red as on the upload view.
import { $, clock } from "./site-api.js";

const ZONE_COLOUR = "#00c8ff";
const ALERT_COLOUR = "#ff2a2a";
const ALERT_FILL = "rgba(255, 42, 42, 0.25)";
const POINT_COLOUR = "#ffe11a";
const EXCLUSION_FILL = "rgba(40, 40, 40, 0.45)";

export function makeTile(name) {
  const element = $("camera-tile").content.firstElementChild.cloneNode(true);
  element.dataset.camera = name;
  element.querySelector(".name").textContent = name;
  element.querySelector(".frame").alt = `newest counted frame of ${name}`;
  element.querySelector(".overlay").setAttribute("aria-hidden", "true");
  $("tiles").append(element);
  return { name, element, camera: null, detail: null, frameUrl: null, alerted: new Set(), history: null,
           loading: false, again: false, historySequence: 0 };
}

function stateText(camera) {
  if (camera.state === "live") return "live";
  if (camera.state === "failed") return `failed: ${camera.reason}`;
  return `reconnecting since ${clock(camera.since)}` + (camera.reason ? `: ${camera.reason}` : "");
}

// The figures of /api/cameras (or of an event) on the tile.
export function showCamera(tile, camera) {
  tile.camera = camera;
  const element = tile.element;
  const state = element.querySelector(".state");
  state.textContent = stateText(camera);
  state.className = `state ${camera.state}`;
  element.dataset.state = camera.state;
  element.querySelector(".count").textContent = camera.count ?? "…";
  element.querySelector(".zones").replaceChildren(...Object.entries(camera.zones).map(([zone, count]) => {
    const item = document.createElement("span");
    item.textContent = `${zone}: ${count}`;
    item.dataset.zone = zone;
    item.classList.toggle("alerted", tile.alerted.has(zone));
    return item;
  }));
  const last = element.querySelector(".last");
  last.textContent = camera.last_counted ? clock(camera.last_counted) : "never";
  last.dateTime = camera.last_counted || "";
  const achieved = camera.interval_s === null ? "" : `, achieved ${camera.interval_s.toFixed(1)} s`;
  element.querySelector(".interval").textContent = `every ${camera.every_s} s${achieved}`;
  element.querySelector(".frames").textContent = camera.frames_counted;
}

// The newest counted frame (a JPEG blob) and its points and zones (/api/cameras/{name}).
export function showDetail(tile, detail, jpeg) {
  tile.detail = detail;
  const image = tile.element.querySelector(".frame");
  const previous = tile.frameUrl;
  tile.frameUrl = URL.createObjectURL(jpeg);
  // The frame shown stays until the next one is decoded (or fails to be); then its blob is let go.
  image.onload = image.onerror = () => { if (previous) URL.revokeObjectURL(previous); };
  image.src = tile.frameUrl;
  const overlay = tile.element.querySelector(".overlay");
  overlay.width = detail.width;
  overlay.height = detail.height;
  tile.element.querySelector(".stack").style.aspectRatio = `${detail.width} / ${detail.height}`;
  tile.element.querySelector(".waiting").hidden = true;
  tile.element.querySelector(".stack").hidden = false;
  drawOverlay(tile);
}

// Which zones (or "total") of this camera have an alert raised now.
export function showAlerted(tile, zones) {
  tile.alerted = new Set(zones);
  tile.element.classList.toggle("alerted", tile.alerted.size > 0);
  tile.element.querySelector(".overlay").dataset.alerted = [...tile.alerted].join(",");
  for (const item of tile.element.querySelectorAll(".zones span")) {
    item.classList.toggle("alerted", tile.alerted.has(item.dataset.zone));
  }
  drawOverlay(tile);
}

export function drawOverlay(tile) {
  const detail = tile.detail;
  if (!detail) return;
  const canvas = tile.element.querySelector(".overlay");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  // Lines and letters keep their size on screen whatever the frame's size (it is shown about 500 px wide).
  const scale = Math.max(detail.width, detail.height) / 500;
  for (const polygon of Object.values(detail.exclusions)) {
    outline(context, polygon);
    context.fillStyle = EXCLUSION_FILL;
    context.fill();
  }
  context.fillStyle = POINT_COLOUR;
  const radius = Math.max(1.5, 2.5 * scale);
  for (const [x, y] of detail.points) {
    context.beginPath();
    context.arc(x, y, radius, 0, 2 * Math.PI);
    context.fill();
  }
  context.lineWidth = Math.max(2, 2.5 * scale);
  for (const [zone, polygon] of Object.entries(detail.polygons)) drawZone(tile, context, zone, polygon, scale);
  if (tile.alerted.has("total")) {
    context.strokeStyle = ALERT_COLOUR;
    context.lineWidth = 6 * scale;
    context.strokeRect(0, 0, canvas.width, canvas.height);
  }
}

function drawZone(tile, context, zone, polygon, scale) {
  const alerted = tile.alerted.has(zone);
  outline(context, polygon);
  if (alerted) {
    context.fillStyle = ALERT_FILL;
    context.fill();
  }
  context.strokeStyle = alerted ? ALERT_COLOUR : ZONE_COLOUR;
  context.stroke();
  const size = Math.round(15 * Math.max(0.6, scale));
  context.font = `${size}px system-ui, sans-serif`;
  const label = `${zone}: ${tile.detail.zones[zone] ?? "…"}`;
  // The label sits above the first corner, or below it when that is at the top of the frame.
  const [x, y] = polygon[0];
  const top = Math.max(0, y - size - 4);
  context.fillStyle = alerted ? ALERT_COLOUR : "rgba(0, 0, 0, 0.7)";
  context.fillRect(x, top, context.measureText(label).width + 8, size + 4);
  context.fillStyle = "white";
  context.fillText(label, x + 4, top + size);
}

function outline(context, vertices) {
  context.beginPath();
  vertices.forEach(([x, y], index) => (index ? context.lineTo(x, y) : context.moveTo(x, y)));
  context.closePath();
}
