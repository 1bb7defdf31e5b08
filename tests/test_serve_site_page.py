"""serve.py --site's camera view and the event stream it updates from (``GET /api/events``, Server-Sent Events).
Real parts on 127.0.0.1: serve.py with a token and a site of two cameras (a looping file with a zone and an
alert that fires, and an MJPEG stream that is stopped mid-run), and the page in headless Chromium (marker
``browser``), which is given the token in its form. Screenshots go to ``$DEHAZE_P2PNET_SCREENSHOTS`` when it
is set."""
import asyncio
import http.client
import json
import os
import re
import time
from pathlib import Path

import pytest

from sites import write_still_site
from streams import MjpegServer, scene_jpegs
from tools.service_client import Service

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, counting_model):
    """serve.py with ``TOKEN`` watching two cameras, each counted every second and showing one still scene:
    ``lobby``, a looping file with the zone ``left`` and an alert raised when more than 1 person stays in it
    for 1 s, and ``street``, an MJPEG stream; ``(service, stream)``."""
    folder = tmp_path_factory.mktemp("site")
    stream = MjpegServer(scene_jpegs(1, seed=4), fps=5, lifetime_s=600).start()
    write_still_site(folder, stream.url)
    service = Service(["--weight_path", str(counting_model), "--site", str(folder / "site.toml"), "--token", TOKEN])
    try:
        yield service, stream
    finally:
        stream.stop()
        # A page's event stream held open does not hold up the stop (it ends when the stop begins).
        held = EventStream(service, headers=BEARER)
        started = time.monotonic()
        assert held.status == 200 and service.stop() == 0, service.output
        assert time.monotonic() - started < 4, "the stop waited for the event stream"
        assert "Traceback" not in service.output


def cameras(service) -> dict:
    return {camera["name"]: camera for camera in service.json("GET", "/api/cameras", headers=BEARER)[2]}


def wait_for_counts(service, frames: int, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = cameras(service)
        if all(camera["frames_counted"] >= frames for camera in listed.values()):
            return listed
        time.sleep(0.2)
    raise AssertionError(f"not counted {frames} times within {timeout_s} s: {listed}\n{service.output[-3000:]}")


class EventStream:
    """``GET /api/events`` on a connection of its own; ``status``, and ``event()`` reads the next event."""

    def __init__(self, service, query: str = "", headers: dict = None):
        self.connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        self.connection.request("GET", "/api/events" + query, headers=headers or {})
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def event(self) -> tuple:
        """``(name, data as JSON)`` of the next event (comments and the retry field are passed over)."""
        name, data = None, None
        while True:
            line = self.response.readline().decode().rstrip("\r\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
            elif not line and name is not None:
                return name, data

    def close(self) -> None:
        self.connection.close()


def test_the_event_stream_tells_of_counts_and_keeps_its_limits(site):
    service, _ = site
    before = wait_for_counts(service, frames=1)

    assert service.request("GET", "/api/events")[0] == 401
    assert service.request("GET", "/api/events?token=wrong")[0] == 401
    assert service.request("GET", "/api/events", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert service.request("GET", f"/api/cameras?token={TOKEN}")[0] == 401, "?token= is for /api/events only"

    opened = time.monotonic()
    first = EventStream(service, query=f"?token={TOKEN}")
    assert first.status == 200 and first.response.getheader("Content-Type").startswith("text/event-stream")
    name, camera = first.event()
    assert name == "camera" and time.monotonic() - opened < 8, "an event within a few seconds of a count"
    assert camera["frames_counted"] > before[camera["name"]]["frames_counted"]
    assert set(camera) == set(before[camera["name"]]) and camera["state"] == "live"

    # 32 streams at once (the first included, the header works as well as ?token=), then 503.
    streams = [first] + [EventStream(service, headers=BEARER) for _ in range(31)]
    assert [stream.status for stream in streams] == [200] * 32
    refused = EventStream(service, headers=BEARER)
    assert refused.status == 503 and int(refused.response.getheader("Retry-After")) > 0
    assert "event streams" in json.loads(refused.response.read())["error"]
    refused.close()
    # A stream that is left gives its place back.
    for stream in streams:
        stream.close()
    deadline = time.monotonic() + 10
    while (again := EventStream(service, headers=BEARER)).status != 200 and time.monotonic() < deadline:
        again.close()
        time.sleep(0.2)
    assert again.status == 200 and again.event()[0] in ("camera", "alert")
    again.close()


def test_a_stream_ends_at_its_lifetime_and_keeps_alive_meanwhile(monkeypatch):
    from serving.routes import events as routes

    monkeypatch.setattr(routes, "KEEP_ALIVE_S", 0.05)

    async def read_all(queue, ends_at):
        return [text async for text in routes.event_lines(queue, routes.EventHub(watcher=None), ends_at)]

    async def run():
        queue = routes.EventQueue()
        # The newest event of a camera replaces one not yet sent: a slow reader is owed one per camera.
        queue.put({("camera", "a"): "event: camera\ndata: 1\n\n"})
        queue.put({("camera", "a"): "event: camera\ndata: 2\n\n", ("camera", "b"): "event: camera\ndata: 3\n\n"})
        started = time.monotonic()
        texts = await read_all(queue, started + 0.3)
        return texts, time.monotonic() - started

    texts, seconds = asyncio.run(run())
    assert texts[0].startswith("retry: ") and texts[1] == "event: camera\ndata: 2\n\nevent: camera\ndata: 3\n\n"
    assert len(texts) >= 4 and set(texts[2:]) == {": keep-alive\n\n"} and 0.3 <= seconds < 2


class SitePage:
    """The page in a fresh browser context, the token given in its form; any script error, refused load (a
    Content-Security-Policy violation reaches the console as an error) or refused request fails the test,
    but for console errors matching ``expected_errors``."""

    def __init__(self, browser, service, shots: Path, expected_errors: re.Pattern = None):
        from playwright.sync_api import expect

        self.expect = expect
        self.context = browser.new_context(viewport={"width": 1100, "height": 900})
        self.page = self.context.new_page()
        self.problems = []
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on("console", lambda message: self.problems.append(message.text) if message.type == "error" and not
                     (expected_errors and expected_errors.search(message.text)) else None)
        self.shots = shots
        self.page.goto(service.url + "/")
        expect(self.page.locator("#token-row")).to_be_visible()
        self.page.fill("#token", TOKEN)
        self.page.click("#token-row button[type=submit]")

    def tile(self, name: str):
        return self.page.locator(f"[data-testid=camera-tile][data-camera={name}]")

    def number(self, name: str, testid: str) -> int:
        return int(self.tile(name).locator(f"[data-testid={testid}]").text_content())

    def wait(self, script: str, argument=None, timeout_s: float = 30) -> None:
        self.page.wait_for_function(script, arg=argument, timeout=timeout_s * 1000)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.problems == []


# Whether a chart was drawn again for its width (after a resize).
CHART_FITS = "(canvas) => canvas.width === Math.round(canvas.clientWidth * (window.devicePixelRatio || 1))"
# Whether the overlay of a 320 x 240 frame draws the zone "left" (x up to 160) alerted: its right edge red
# (drawn over the points) and every pixel inside tinted (between the points the canvas is clear elsewhere).
ZONE_IS_RED = """(canvas) => {
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const at = (x, y) => pixels.slice(4 * (y * canvas.width + x), 4 * (y * canvas.width + x) + 4);
  const edge = Array.from({ length: 19 }, (_, index) => at(160, 40 + 10 * index));
  const inside = Array.from({ length: 60 }, (_, index) => at(5 + 2 * index, 60 + index * 2));
  return edge.every(([r, g, , a]) => r > 200 && g < 90 && a > 200) && inside.every(([r, , , a]) => r > 200 && a > 0);
}"""


@pytest.mark.browser
def test_the_page_reads_every_few_seconds_while_the_event_streams_are_all_taken(site, browser, tmp_path):
    service, _ = site
    taken = [EventStream(service, headers=BEARER) for _ in range(32)]
    try:
        assert [stream.status for stream in taken] == [200] * 32
        page = SitePage(browser, service, tmp_path, expected_errors=re.compile(r"status of 503"))
        page.expect(page.page.locator("[data-testid=updates]")).to_have_text("updates every 5 s")
        frames_text = page.tile("lobby").locator("[data-testid=frames-counted]")
        page.expect(frames_text).not_to_have_text("0")
        frames = int(frames_text.text_content())
        page.wait("([tile, frames]) => Number(tile.querySelector('[data-testid=frames-counted]').textContent) > frames",
                  [page.tile("lobby").element_handle(), frames], timeout_s=15)
        page.close()
    finally:
        for stream in taken:
            stream.close()


@pytest.mark.browser
def test_the_site_view_follows_the_cameras_live(site, browser, tmp_path):
    service, stream = site
    shots = Path(os.environ.get("DEHAZE_P2PNET_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page = SitePage(browser, service, shots)
    page.expect(page.page.locator("[data-testid=camera-tile]")).to_have_count(2)
    page.expect(page.page.locator("#site-view")).to_be_visible()
    page.expect(page.page.locator("[data-testid=tab-site]")).to_have_attribute("aria-selected", "true")
    for name in ("lobby", "street"):
        page.expect(page.tile(name).locator("[data-testid=camera-state]")).to_have_text("live", timeout=60_000)
        page.wait("(image) => image.complete && image.naturalWidth === 320",
                  page.tile(name).locator("[data-testid=camera-frame]").element_handle())
    page.expect(page.page.locator("[data-testid=updates]")).to_have_text("live updates")

    # The counts follow without a reload: the frames counted, and the chart's points.
    frames = page.number("lobby", "frames-counted")
    chart = page.tile("lobby").locator("[data-testid=camera-chart]")
    page.expect(chart).to_have_attribute("data-points", re.compile(r"^[1-9]"))
    plotted = int(chart.get_attribute("data-points"))
    page.wait("([tile, frames]) => Number(tile.querySelector('[data-testid=frames-counted]').textContent) > frames",
              [page.tile("lobby").element_handle(), frames])
    page.wait("([chart, plotted]) => Number(chart.dataset.points) >= plotted + 2",
              [chart.element_handle(), plotted])
    assert "people" in chart.get_attribute("aria-label")

    # The alert: the banner, and the zone drawn red on the lobby's tile only.
    page.expect(page.page.locator("[data-testid=alert-banner]")).to_contain_text("lobby · left above 1",
                                                                               timeout=30_000)
    overlay = page.tile("lobby").locator("[data-testid=camera-overlay]")
    page.expect(overlay).to_have_attribute("data-alerted", "left")
    page.wait(ZONE_IS_RED, overlay.element_handle(), timeout_s=10)
    page.expect(page.page.locator("[data-testid=alert-table] tbody tr")).to_have_count(1)
    page.shot("site_alert")

    # On a phone the tiles stack and nothing is wider than the screen.
    page.page.set_viewport_size({"width": 390, "height": 844})
    page.wait(CHART_FITS, chart.element_handle(), timeout_s=5)
    lobby, street = (page.tile(name).bounding_box() for name in ("lobby", "street"))
    assert street["y"] >= lobby["y"] + lobby["height"] and lobby["width"] <= 390
    assert page.page.evaluate("document.documentElement.scrollWidth") <= 390
    page.shot("site_phone")

    # Zoom: the last hour, then a drag across the chart's last minutes (the run so far).
    page.page.set_viewport_size({"width": 1100, "height": 900})
    page.wait(CHART_FITS, chart.element_handle(), timeout_s=5)
    page.page.click("#site-controls [data-hours='1']")
    page.expect(page.page.locator("[data-testid=range-text]")).to_contain_text("the last 1 h")
    box = chart.bounding_box()
    page.page.mouse.move(box["x"] + box["width"] * 0.96, box["y"] + box["height"] / 2)
    page.page.mouse.down()
    page.page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2, steps=5)
    page.page.mouse.up()
    page.expect(page.page.locator("[data-testid=range-text]")).to_contain_text(" to ")
    page.expect(page.page.locator("#site-controls [aria-pressed=true]")).to_have_count(0)
    page.wait("([chart, plotted]) => Number(chart.dataset.points) >= plotted", [chart.element_handle(), plotted + 2])
    page.shot("site_zoomed")
    page.page.click("#site-controls [data-hours='6']")

    # The stream stops: its tile says reconnecting while the lobby goes on.
    stream.stop()
    page.expect(page.tile("street").locator("[data-testid=camera-state]")).to_have_text(
        re.compile(r"^reconnecting since \d\d:\d\d:\d\d"), timeout=30_000)
    page.shot("site_reconnecting")

    # The uploads still work, in their tab.
    page.page.click("[data-testid=tab-uploads]")
    page.expect(page.page.locator("#site-view")).to_be_hidden()
    (tmp_path / "square.jpg").write_bytes(scene_jpegs(1, seed=5)[0])
    page.page.set_input_files("[data-testid=files]", str(tmp_path / "square.jpg"))
    page.expect(page.page.locator("[data-testid=count]")).to_have_text(re.compile(r"^\d+$"), timeout=60_000)
    page.shot("site_uploads_tab")
    page.close()
