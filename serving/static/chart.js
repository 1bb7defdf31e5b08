// A camera's history chart on a canvas: the total and each zone over the chosen time range, time across
// (this browser's clock), people up. Dragging across it picks a narrower range (zoom).
import { clock, clockMinutes, minutesOfDay } from "./site-api.js";

export const COLOURS = ["#0b62d6", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#666666"];
const HEIGHT = 180;  // CSS pixels
const MARGIN = { left: 40, right: 10, top: 10, bottom: 24 };
// Tick spacings, milliseconds: the first giving at most 6 ticks across the range, each TICK_PX wide, is used.
const TICKS_MS = [10e3, 20e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3];
const TICK_PX = 80;
// Rows drawn as dots too when there are at most this many (a line needs two rows to show).
const DOTS_UP_TO = 150;

// Where the plot lies in CSS pixels of a canvas this wide.
function plotArea(width) {
  return { left: MARGIN.left, top: MARGIN.top, width: Math.max(1, width - MARGIN.left - MARGIN.right),
           height: HEIGHT - MARGIN.top - MARGIN.bottom };
}

// The time (ms) under clientX on the canvas, for a chart of range {from, to}.
export function timeAt(canvas, range, clientX) {
  const box = canvas.getBoundingClientRect();
  const area = plotArea(box.width);
  const share = Math.min(1, Math.max(0, (clientX - box.left - area.left) / area.width));
  return range.from + share * (range.to - range.from);
}

// The series of a history: "total" and each zone, as [[time ms, people], ...] within the range.
export function seriesOf(rows, zones) {
  return [["total", rows.map((row) => [row.t, row.count])],
          ...zones.map((zone) => [zone, rows.filter((row) => zone in row.zones).map((row) => [row.t, row.zones[zone]])])];
}

function niceTop(value) {
  const step = 10 ** Math.floor(Math.log10(Math.max(1, value)));
  return [1, 2, 2.5, 5, 10].map((factor) => factor * step).find((top) => top >= value) || value;
}

// Draws rows ({t, count, zones}) of zones over range {from, to}; selection {from, to} is shaded (a drag in
// progress); gapMs: rows further apart are not joined (the camera was down). Returns the rows plotted.
export function drawChart(canvas, { rows, zones, range, selection = null, gapMs = Infinity }) {
  const width = canvas.clientWidth || 600;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(HEIGHT * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, HEIGHT);
  const area = plotArea(width);
  const shown = rows.filter((row) => row.t >= range.from && row.t <= range.to);
  const top = niceTop(Math.max(1, ...shown.map((row) => row.count)));
  const x = (t) => area.left + area.width * (t - range.from) / (range.to - range.from);
  const y = (people) => area.top + area.height * (1 - people / top);
  drawAxes(context, area, range, top, x);
  if (selection) {
    context.fillStyle = "rgba(11, 98, 214, 0.15)";
    const [start, end] = [Math.min(selection.from, selection.to), Math.max(selection.from, selection.to)];
    context.fillRect(x(start), area.top, x(end) - x(start), area.height);
  }
  seriesOf(shown, zones).forEach(([, points], index) => {
    drawLine(context, points.map(([t, people]) => [x(t), y(people), t]), COLOURS[index % COLOURS.length],
             index === 0 ? 2 : 1.5, gapMs, points.length <= DOTS_UP_TO);
  });
  return shown.length;
}

function drawAxes(context, area, range, top, x) {
  context.strokeStyle = "#b0b0b0";
  context.lineWidth = 1;
  context.strokeRect(area.left, area.top, area.width, area.height);
  context.fillStyle = "#333";
  context.font = "12px system-ui, sans-serif";
  context.textAlign = "right";
  context.fillText(String(top), area.left - 4, area.top + 9);
  context.fillText(String(top / 2), area.left - 4, area.top + area.height / 2 + 4);
  context.fillText("0", area.left - 4, area.top + area.height + 4);
  const most = Math.max(2, Math.min(6, Math.floor(area.width / TICK_PX)));
  const step = TICKS_MS.find((spacing) => (range.to - range.from) / spacing <= most) || 86400e3;
  context.textAlign = "center";
  context.strokeStyle = "#e4e4e4";
  let day = new Date().toDateString();
  // Whole steps of the local clock (a time zone an odd number of minutes from UTC too).
  const offset = new Date(range.from).getTimezoneOffset() * 60e3;
  for (let tick = Math.ceil((range.from - offset) / step) * step + offset; tick <= range.to; tick += step) {
    context.beginPath();
    context.moveTo(x(tick), area.top);
    context.lineTo(x(tick), area.top + area.height);
    context.stroke();
    // The day is written where it changes (and at the first tick when that is not today).
    const tickDay = new Date(tick).toDateString();
    const label = step < 60e3 ? clock(tick) : tickDay === day ? clockMinutes(tick) : minutesOfDay(tick);
    day = tickDay;
    // A label at either end is moved inside the canvas rather than cut.
    const half = context.measureText(label).width / 2;
    const middle = Math.min(Math.max(x(tick), half + 2), area.left + area.width + MARGIN.right - half - 2);
    context.fillText(label, middle, area.top + area.height + 16);
  }
  context.textAlign = "start";
}

function drawLine(context, points, colour, width, gapMs, dots) {
  context.strokeStyle = colour;
  context.fillStyle = colour;
  context.lineWidth = width;
  context.beginPath();
  points.forEach(([px, py, t], index) => {
    if (index && t - points[index - 1][2] <= gapMs) context.lineTo(px, py); else context.moveTo(px, py);
  });
  context.stroke();
  if (!dots) return;
  for (const [px, py] of points) {
    context.beginPath();
    context.arc(px, py, width, 0, 2 * Math.PI);
    context.fill();
  }
}

// Dragging across the canvas: onDrag(selection) while it moves, onZoom(from, to) when let go over at least
// 8 CSS pixels (a click zooms nothing). range() gives the range the chart shows now.
export function attachZoom(canvas, { range, onDrag, onZoom }) {
  let start = null;
  canvas.addEventListener("pointerdown", (event) => {
    start = { clientX: event.clientX, time: timeAt(canvas, range(), event.clientX) };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (start) onDrag({ from: start.time, to: timeAt(canvas, range(), event.clientX) });
  });
  const finish = (event) => {
    if (!start) return;
    const begun = start;
    start = null;
    onDrag(null);
    if (event.type === "pointerup" && Math.abs(event.clientX - begun.clientX) >= 8) {
      const end = timeAt(canvas, range(), event.clientX);
      onZoom(Math.min(begun.time, end), Math.max(begun.time, end));
    }
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
}
