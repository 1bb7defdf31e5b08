"""``serve.py``'s web page in headless Chromium (Playwright), as a user works it: drop a picture and read the
count run_test.py gives, move the threshold, draw a zone by clicks, count a video to the end, download
counts.csv. The page's Content-Security-Policy stays on, so nothing it loads may come from elsewhere.
Screenshots of each state go to ``$DEHAZE_P2PNET_SCREENSHOTS`` when it is set."""
import csv
import io
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from crowd_datasets.demo import make_scene
from helpers import REAL_SAMPLES, REFERENCE_CHECKPOINT
from tools.service_client import Service
from test_serve import run_test_counts
from test_video import write_clip
from util.script import EXIT_SKIPPED

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def service(counting_model):
    service = Service(["--weight_path", str(counting_model)])
    yield service
    assert service.stop() == 0, service.output


class Page:
    """A page of the service in a fresh browser context, failing the test on any script error or
    refused load (a Content-Security-Policy violation reaches the console as an error)."""

    def __init__(self, browser, service, tmp_path, viewport=(1100, 900)):
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.problems = []
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on("console", lambda message: self.problems.append(message.text) if message.type == "error" else None)
        self.shots = Path(os.environ.get("DEHAZE_P2PNET_SCREENSHOTS") or tmp_path)
        self.shots.mkdir(parents=True, exist_ok=True)
        self.page.goto(service.url + "/")
        self.expect(self.page.locator("#model")).to_contain_text("exact mode")

    @staticmethod
    def expect(locator):
        from playwright.sync_api import expect

        return expect(locator)

    def drop(self, *paths):
        self.page.set_input_files("[data-testid=files]", [str(path) for path in paths])

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.problems == []


def count_of(page, index: int = 0) -> int:
    counts = page.page.locator("[data-testid=count]")
    page.expect(counts.nth(index)).to_have_text(re.compile(r"^\d+$"), timeout=120_000)
    return int(counts.nth(index).text_content())


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    rgb = make_scene(np.random.default_rng(11), (320, 240)).image
    cv2.imwrite(str(folder / "square.jpg"), rgb[:, :, ::-1])
    return folder


@pytest.mark.slow
@pytest.mark.reference_fixtures
def test_real_samples_show_the_counts_of_run_test(browser, tmp_path):
    expected = run_test_counts(REFERENCE_CHECKPOINT, REAL_SAMPLES, tmp_path, code=EXIT_SKIPPED)
    service = Service(["--weight_path", str(REFERENCE_CHECKPOINT)])
    try:
        page = Page(browser, service, tmp_path)
        # Rain_IMG_0045.jpg is a PNG with an alpha channel named .jpg.
        for index, name in enumerate(["A_IMG_160.jpg", "Rain_IMG_0045.jpg"]):
            page.drop(REAL_SAMPLES / name)
            # Each new picture's card comes first.
            assert count_of(page, 0) == int(expected[name]["count"])
            page.expect(page.page.locator(".card .name").first).to_have_text(name)
            page.shot(f"real_sample_{index}")
        page.close()
    finally:
        assert service.stop() == 0


def test_the_threshold_slider_recounts_and_zones_are_drawn_by_clicks(browser, service, pictures, tmp_path):
    expected = run_test_counts(service_checkpoint(service), pictures, tmp_path)
    page = Page(browser, service, tmp_path)
    page.drop(pictures / "square.jpg")
    assert count_of(page) == int(expected["square.jpg"]["count"])
    page.shot("picture")
    data = (pictures / "square.jpg").read_bytes()
    # The random checkpoint's scores lie between about 0.44 and 0.55.
    page.page.fill("[data-testid=threshold]", "0.52")
    raised = service.upload("/api/count", data, "square.jpg", {"threshold": "0.52"})[2]["count"]
    assert raised < int(expected["square.jpg"]["count"])
    page.expect(page.page.locator("[data-testid=count]")).to_have_text(str(raised))
    page.shot("threshold_0.52")
    page.page.click("[data-testid=draw-zone]")
    box = page.page.locator("[data-testid=overlay]").bounding_box()
    corners = [(0.1, 0.15), (0.55, 0.1), (0.6, 0.8), (0.15, 0.7), (0.1, 0.15)]  # the last click closes it
    for x, y in corners:
        page.page.mouse.click(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
    zone = page.page.locator("[data-testid=zone-counts] span").first
    page.expect(zone).to_have_text(re.compile(r"^zone 1: \d+$"))
    polygon = json.loads(zone.get_attribute("data-polygon"))
    assert len(polygon) == 4 and 0.09 * 320 < polygon[0][0] < 0.11 * 320
    fields = {"threshold": "0.52", "zones": json.dumps({"z": polygon})}
    answer = service.upload("/api/count", data, "square.jpg", fields)[2]
    assert zone.text_content() == f"zone 1: {answer['zones']['z']}" and 0 < answer["zones"]["z"] < raised
    page.page.check("[data-testid=show-density]")
    page.expect(page.page.locator(".density")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    page.shot("zone_and_density")
    with page.page.expect_download() as download:
        page.page.click("[data-testid=download-counts]")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows == [["image", "count", "zone 1"], ["square.jpg", str(raised), str(answer["zones"]["z"])]]
    page.page.set_viewport_size({"width": 390, "height": 844})
    page.shot("phone")
    assert page.page.evaluate("document.documentElement.scrollWidth") <= 390
    page.close()


def test_a_video_shows_its_progress_to_the_end(browser, service, tmp_path):
    clip = tmp_path / "clip.mp4"
    frames = write_clip(clip, size=(160, 128))
    page = Page(browser, service, tmp_path)
    page.drop(clip)
    frames_text = page.page.locator("[data-testid=video-frames]")
    page.expect(frames_text).to_have_text(re.compile(rf"^done: {frames} of {frames} frames"), timeout=120_000)
    page.expect(page.page.locator("[data-testid=video-progress]")).to_have_attribute("value", "1")
    page.shot("video_done")
    page.close()


def service_checkpoint(service) -> Path:
    return Path(service.process.args[service.process.args.index("--weight_path") + 1])
