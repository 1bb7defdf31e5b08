// What the camera view's modules share: requests with the page's token (page.js keeps it in sessionStorage)
// and times as people read them (the browser's time zone; the API speaks UTC).

export const $ = (id) => document.getElementById(id);

export function token() {
  return sessionStorage.getItem("token") || "";
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function get(path) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) $("token-row").hidden = false;
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (ignored) { /* not JSON */ }
    throw new HttpError(response.status, message);
  }
  return response;
}

export async function getJson(path) {
  return (await get(path)).json();
}

const TIME = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
const MINUTES = { hour: "2-digit", minute: "2-digit", hour12: false };

// An ISO 8601 time (or milliseconds since 1970) as the hour, minute and second of this browser's clock.
export function clock(time) {
  return new Date(time).toLocaleTimeString([], TIME);
}

export function clockMinutes(ms) {
  return new Date(ms).toLocaleTimeString([], MINUTES);
}

// Milliseconds since 1970 as the day of the week, hour and minute.
export function minutesOfDay(ms) {
  return `${new Date(ms).toLocaleDateString([], { weekday: "short" })} ${clockMinutes(ms)}`;
}

// Hour and minute, with the day of the week when it is not today.
export function minutes(ms) {
  return new Date(ms).toDateString() === new Date().toDateString() ? clockMinutes(ms) : minutesOfDay(ms);
}

export function isoTime(ms) {
  return new Date(ms).toISOString();
}
