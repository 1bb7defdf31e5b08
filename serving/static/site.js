// The camera view of serve.py --site: a tile per camera (tiles.js) with its history chart (history.js), the
// alerts, and a banner while any is raised. It keeps itself up to date from the server's events
// (GET /api/events, Server-Sent Events); while those are refused or down it reads /api/cameras every few
// seconds instead. Without --site, /api/cameras is empty and the page stays the upload page.
import { $, clock, get, getJson, token } from "./site-api.js";
import { makeTile, showAlerted, showCamera, showDetail } from "./tiles.js";
import { addCount, drawHistory, following, loadHistory, setUpChart, wireRangeControls } from "./history.js";

const POLL_MS = 5000;  // reading /api/cameras while there are no events
const STREAM_RETRY_MS = 30000;  // a refused event stream is asked for again after this
const RESYNC_MS = 60000;  // charts and alerts are read whole again this often
const FRAME_EVERY_MS = 1000;  // a tile's frame is fetched at most this often
const ALERTS_LISTED = 100;
const site = { tiles: new Map(), source: null, pollTimer: null, retryTimer: null, started: false };

async function start() {
  let cameras;
  try {
    // A token is needed and none was given yet: page.js shows its form, and submitting it starts again.
    const health = await getJson("/api/health");
    if (health.auth && !token()) return;
    cameras = await getJson("/api/cameras");
  } catch (error) {
    return;  // page.js says when the server cannot be reached; a 401 shows the token form
  }
  if (!cameras.length || site.started) return;
  site.started = true;
  enableTabs();
  wireRangeControls(() => site.tiles.forEach((tile) => loadHistory(tile).catch(showProblem)));
  for (const camera of cameras) {
    const tile = makeTile(camera.name);
    site.tiles.set(camera.name, tile);
    setUpChart(tile);
    showCamera(tile, camera);
  }
  connect();
  setInterval(resync, RESYNC_MS);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshAll(); });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => site.tiles.forEach((tile) => drawHistory(tile)), 150);
  });
}

function enableTabs() {
  $("views").hidden = false;
  $("uploads-view").setAttribute("role", "tabpanel");
  $("uploads-view").setAttribute("aria-labelledby", "tab-uploads");
  $("tab-site").addEventListener("click", () => showView("site"));
  $("tab-uploads").addEventListener("click", () => showView("uploads"));
  $("views").addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    const next = $("tab-site").getAttribute("aria-selected") === "true" ? "uploads" : "site";
    showView(next);
    $(`tab-${next}`).focus();
  });
  showView(location.hash === "#uploads" ? "uploads" : "site");
}

function showView(name) {
  for (const [view, tab] of [["site", "tab-site"], ["uploads", "tab-uploads"]]) {
    $(`${view}-view`).hidden = view !== name;
    $(tab).setAttribute("aria-selected", String(view === name));
    $(tab).tabIndex = view === name ? 0 : -1;
  }
  history.replaceState(null, "", `#${name}`);
  // A chart drawn while hidden had no width.
  if (name === "site") site.tiles.forEach((tile) => drawHistory(tile));
}

function connect() {
  clearTimeout(site.retryTimer);
  if (site.source) site.source.close();
  // EventSource cannot send headers: the token goes in the query, which this route alone accepts.
  const source = new EventSource("/api/events" + (token() ? `?token=${encodeURIComponent(token())}` : ""));
  site.source = source;
  source.addEventListener("open", () => {
    stopPolling();
    showUpdates();
    refreshAll();
  });
  source.addEventListener("camera", (event) => onCamera(JSON.parse(event.data)));
  source.addEventListener("alert", () => refreshAlerts().catch(showProblem));
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.CLOSED) {
      showUpdates();
      return;  // the browser reconnects by itself (a stream ends after an hour, or the server restarted)
    }
    // Refused (401, 503 when too many pages are open) or not an event stream: read every few seconds.
    startPolling();
    site.retryTimer = setTimeout(connect, STREAM_RETRY_MS);
  });
}

function startPolling() {
  if (site.pollTimer !== null) return;
  site.pollTimer = setInterval(() => poll().catch(showProblem), POLL_MS);
  refreshAll();
}

function stopPolling() {
  clearInterval(site.pollTimer);
  site.pollTimer = null;
}

async function poll() {
  for (const camera of await getJson("/api/cameras")) onCamera(camera);
  await refreshAlerts();
  showUpdates();
}

function showUpdates() {
  const live = site.source && site.source.readyState === EventSource.OPEN;
  $("updates").textContent = live ? "live updates"
    : site.pollTimer !== null ? `updates every ${POLL_MS / 1000} s` : "reconnecting to the server…";
}

// A camera's figures from an event or a poll: shown at once; a new count brings its frame and a chart point.
function onCamera(camera) {
  const tile = site.tiles.get(camera.name);
  if (!tile) return;
  const counted = !tile.camera || camera.frames_counted !== tile.camera.frames_counted;
  showCamera(tile, camera);
  if (counted && camera.last_counted) {
    addCount(tile, camera);
    loadFrame(tile);
  }
}

// The newest frame and its points, at most every FRAME_EVERY_MS per tile and not while the page is hidden.
async function loadFrame(tile) {
  if (tile.loading || document.hidden) {
    tile.again = true;
    return;
  }
  tile.loading = true;
  tile.again = false;
  try {
    const detail = await getJson(`/api/cameras/${encodeURIComponent(tile.name)}`);
    if (detail.frame) showDetail(tile, detail, await (await get(detail.frame)).blob());
  } catch (error) {
    showProblem(error);
  } finally {
    setTimeout(() => {
      tile.loading = false;
      if (tile.again) loadFrame(tile);
    }, FRAME_EVERY_MS);
  }
}

function refreshAll() {
  poll().catch(showProblem);
  site.tiles.forEach((tile) => {
    loadFrame(tile);
    loadHistory(tile).catch(showProblem);
  });
}

function resync() {
  if (document.hidden) return;
  refreshAlerts().catch(showProblem);
  if (following()) site.tiles.forEach((tile) => loadHistory(tile).catch(showProblem));
}

async function refreshAlerts() {
  const alerts = await getJson("/api/alerts");
  const raised = alerts.filter((alert) => alert.cleared === null);
  const banner = $("alert-banner");
  banner.hidden = raised.length === 0;
  banner.textContent = raised.length ? "Alert: " + raised.map((alert) =>
    `${alert.camera} · ${alert.zone} above ${alert.above} since ${clock(alert.raised)} (peak ${alert.peak})`)
    .join("; ") : "";
  for (const tile of site.tiles.values()) {
    showAlerted(tile, raised.filter((alert) => alert.camera === tile.name).map((alert) => alert.zone));
  }
  showAlertTable(alerts.slice(0, ALERTS_LISTED));
}

function showAlertTable(alerts) {
  $("no-alerts").hidden = alerts.length > 0;
  $("alert-table").hidden = alerts.length === 0;
  $("alert-table").querySelector("tbody").replaceChildren(...alerts.map((alert) => {
    const row = document.createElement("tr");
    row.classList.toggle("raised", alert.cleared === null);
    const cells = [alert.camera, alert.zone, alert.above, clock(alert.raised),
                   alert.cleared === null ? "raised now" : clock(alert.cleared), alert.peak];
    row.replaceChildren(...cells.map((value) => {
      const cell = document.createElement("td");
      cell.textContent = value;
      return cell;
    }));
    return row;
  }));
}

function showProblem(error) {
  $("updates").textContent = `cannot reach the server: ${error.message}`;
}

$("token-row").addEventListener("submit", () => (site.started ? connect() : start()));
start();
