// The cameras' history charts: one time range for all (the last 1, 6 or 24 hours, following the clock, or a
// fixed stretch picked by dragging across a chart), each camera's counts in it from
// /api/cameras/{name}/history, and the counts that events bring added as they come.
import { $, clock, getJson, isoTime, minutes } from "./site-api.js";
import { COLOURS, attachZoom, drawChart } from "./chart.js";

const MIN_ZOOM_MS = 60e3;
// Counts further apart than this many of the camera's intervals (and at least GAP_MIN_MS) are not joined.
const GAP_INTERVALS = 3;
const GAP_MIN_MS = 30e3;
const view = { range: { hours: 6 }, reload: () => {} };

export function following() {
  return Boolean(view.range.hours);
}

export function currentRange() {
  if (!following()) return { from: view.range.from, to: view.range.to };
  const to = Date.now();
  return { from: to - view.range.hours * 3600e3, to };
}

// The range buttons; reload() reads every chart again when the range changes.
export function wireRangeControls(reload) {
  view.reload = reload;
  for (const button of document.querySelectorAll("#site-controls [data-hours]")) {
    button.addEventListener("click", () => {
      view.range = { hours: Number(button.dataset.hours) };
      showRange();
      view.reload();
    });
  }
  showRange();
}

function zoomTo(from, to) {
  const middle = (from + to) / 2;
  const half = Math.max(to - from, MIN_ZOOM_MS) / 2;
  view.range = { from: middle - half, to: Math.min(Date.now(), middle + half) };
  showRange();
  view.reload();
}

function showRange() {
  for (const button of document.querySelectorAll("#site-controls [data-hours]")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.hours) === view.range.hours));
  }
  $("range-text").textContent = following()
    ? `the last ${view.range.hours} h; drag across a chart to zoom`
    : `${shown(view.range.from)} to ${shown(view.range.to)}; pick 1 h, 6 h or 24 h to follow the clock again`;
}

// A time of the zoomed range: to the second when the range is short.
function shown(ms) {
  return view.range.to - view.range.from < 600e3 ? clock(ms) : minutes(ms);
}

export function setUpChart(tile) {
  const canvas = tile.element.querySelector(".history");
  canvas.setAttribute("aria-label", `${tile.name}: history loading`);
  attachZoom(canvas, { range: currentRange, onDrag: (selection) => drawHistory(tile, selection), onZoom: zoomTo });
}

export async function loadHistory(tile) {
  const sequence = ++tile.historySequence;
  const range = currentRange();
  const answer = await getJson(`/api/cameras/${encodeURIComponent(tile.name)}/history` +
                               `?from=${isoTime(range.from)}&to=${isoTime(range.to)}`);
  if (sequence !== tile.historySequence) return;  // the range changed meanwhile: a newer read is coming
  tile.history = { rows: answer.rows.map((row) => ({ t: Date.parse(row.time), count: row.count, zones: row.zones })),
                   everyS: answer.every_s };
  drawHistory(tile);
}

// A count an event (or a poll) brought, added to a chart that follows the clock and holds every count.
export function addCount(tile, camera) {
  const history = tile.history;
  if (!history || !following() || history.everyS !== null || !camera.last_counted) return;
  const t = Date.parse(camera.last_counted);
  const rows = history.rows;
  if (rows.length && t <= rows[rows.length - 1].t) return;
  rows.push({ t, count: camera.count, zones: camera.zones });
  const from = currentRange().from;
  const old = rows.findIndex((row) => row.t >= from);
  if (old > 0) rows.splice(0, old);
  drawHistory(tile);
}

export function drawHistory(tile, selection = null) {
  if (!tile.history) return;
  const canvas = tile.element.querySelector(".history");
  const { rows, everyS } = tile.history;
  const zones = Object.keys((tile.camera && tile.camera.zones) || (rows.length ? rows[0].zones : {}));
  const camera = tile.camera || {};
  const interval = Math.max(everyS || 0, camera.every_s || 0, camera.interval_s || 0) * 1000;
  const range = currentRange();
  const plotted = drawChart(canvas, { rows, zones, range, selection,
                                      gapMs: Math.max(GAP_MIN_MS, GAP_INTERVALS * interval) });
  canvas.dataset.points = plotted;
  const counts = rows.filter((row) => row.t >= range.from && row.t <= range.to).map((row) => row.count);
  canvas.setAttribute("aria-label", counts.length
    ? `${tile.name}: ${counts.length} counts from ${minutes(range.from)} to ${minutes(range.to)}, the total ` +
      `between ${Math.min(...counts)} and ${Math.max(...counts)} people`
    : `${tile.name}: no counts from ${minutes(range.from)} to ${minutes(range.to)}`);
  showLegend(tile, zones, everyS);
}

function showLegend(tile, zones, everyS) {
  const legend = tile.element.querySelector(".legend");
  const key = JSON.stringify([zones, everyS]);
  if (legend.dataset.key === key) return;
  legend.dataset.key = key;
  legend.replaceChildren(...["total", ...zones].map((name, index) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLOURS[index % COLOURS.length];
    item.append(swatch, name);
    return item;
  }));
  if (everyS) legend.append(`(means of ${everyS} s)`);
}
