"""serve.py --site: cameras counted around the clock beside the uploads, their history across a SIGKILL and a
restart, alerts to a webhook, and /metrics equal to the API. Real parts on 127.0.0.1: serve.py, an MJPEG
stream that is stopped and started again, a looping file, a webhook receiver."""
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import counting_checkpoint
from sites import write_still_site
from streams import MjpegServer, scene_jpegs
from tools.service_client import Service

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def site(tmp_path):
    """A site of two still cameras (``sites.write_still_site``) and the stream of the second; the checkpoint."""
    counting_checkpoint(tmp_path / "model.pth")
    stream = MjpegServer(scene_jpegs(1, seed=4), fps=5, lifetime_s=600)
    stream.start()
    write_still_site(tmp_path, stream.url)
    yield tmp_path, stream
    stream.stop()


def cameras(service) -> dict:
    return {camera["name"]: camera for camera in service.json("GET", "/api/cameras")[2]}


def wait_for(service, condition, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = cameras(service)
        if condition(listed):
            return listed
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {listed}\n{service.output[-3000:]}")


def metric_values(service) -> dict:
    status, _, body = service.request("GET", "/metrics")
    assert status == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


@pytest.mark.slow
def test_cameras_are_counted_stored_alerted_and_survive_a_dropped_stream_and_a_killed_server(site, webhook):
    folder, stream = site
    arguments = ["--weight_path", str(folder / "model.pth"), "--site", str(folder / "site.toml"),
                 "--webhook", f"http://127.0.0.1:{webhook.server_port}/alerts"]
    service = Service(arguments)
    try:
        listed = wait_for(service, lambda cams: all(cam["frames_counted"] >= 2 for cam in cams.values()))
        assert {name: cam["state"] for name, cam in listed.items()} == {"lobby": "live", "street": "live"}
        lobby = listed["lobby"]
        assert lobby["count"] > 1 and set(lobby["zones"]) == {"left"} and 1 < lobby["zones"]["left"] < lobby["count"]

        # The alert is raised at the first count 1 s after the first count above.
        deadline = time.monotonic() + 30
        while not webhook.bodies and time.monotonic() < deadline:
            time.sleep(0.1)
        # The metrics say what the API says (each camera shows one still scene: its count never changes).
        metrics = metric_values(service)
        assert metrics[("crowd_count", (("camera", "lobby"), ("zone", "total")))] == lobby["count"]
        assert metrics[("crowd_count", (("camera", "lobby"), ("zone", "left")))] == lobby["zones"]["left"]
        assert metrics[("crowd_count", (("camera", "street"), ("zone", "total")))] == listed["street"]["count"]
        assert metrics[("crowd_camera_up", (("camera", "street"),))] == 1.0
        assert metrics[("crowd_alerts_active", (("camera", "lobby"), ("zone", "left")))] == 1.0
        assert metrics[("crowd_frames_counted_total", (("camera", "lobby"),))] >= lobby["frames_counted"]

        # The alert: raised once, stored, sent.
        assert [body["state"] for body in webhook.bodies] == ["raised"]
        assert set(webhook.bodies[0]) == {"camera", "zone", "count", "above", "state", "time"}
        assert (webhook.bodies[0]["camera"], webhook.bodies[0]["zone"]) == ("lobby", "left")
        stored = service.json("GET", "/api/alerts")[2]
        assert [(alert["camera"], alert["zone"], alert["cleared"]) for alert in stored] == [("lobby", "left", None)]

        # The stream drops: the camera goes reconnecting while the other keeps counting; then it comes back.
        stream.stop()
        before = cameras(service)["lobby"]["frames_counted"]
        down = wait_for(service, lambda cams: cams["street"]["state"] == "reconnecting", timeout_s=30)
        assert down["street"]["reason"] and down["street"]["since"] > listed["street"]["since"]
        wait_for(service, lambda cams: cams["street"]["state"] == "reconnecting"
                 and cams["lobby"]["frames_counted"] >= before + 2, timeout_s=60)
        stream.start()
        wait_for(service, lambda cams: cams["street"]["state"] == "live", timeout_s=60)
        assert metric_values(service)[("crowd_camera_reconnects_total", (("camera", "street"),))] >= 1

        # A picture uploaded beside the cameras is counted too.
        status, _, answer = service.upload("/api/count", scene_jpegs(1)[0], "picture.jpg")
        assert status == 200 and answer["count"] > 0
        history_before = service.json("GET", "/api/cameras/lobby/history")[2]["rows"]
        # The widest ranges a stranger can ask for stay bounded: buckets of their own, or one 400 line.
        widest = "/api/cameras/lobby/history?from=0001-01-01T00:00:00Z&to=9999-12-31T00:00:00Z"
        status, _, answer = service.json("GET", widest)
        assert status == 200 and 0 < len(answer["rows"]) <= 10_000
        status, _, answer = service.json("GET", widest + "&every=0.001")
        assert status == 400 and answer["error"].startswith("every=")
    finally:
        service.stop(signal.SIGKILL)

    service = Service(arguments)
    try:
        wait_for(service, lambda cams: cams["lobby"]["frames_counted"] >= 2)
        rows = service.json("GET", "/api/cameras/lobby/history")[2]["rows"]
        kept = [row for row in rows if row["time"] <= history_before[-1]["time"]]
        assert kept[-len(history_before):] == history_before, "the history before the kill is all there"
        assert len(rows) > len(history_before)
        assert all(row["count"] == lobby["count"] and row["zones"] == lobby["zones"] for row in rows)
        # The open alert was taken over, not raised a second time.
        assert [body["state"] for body in webhook.bodies] == ["raised"]
        assert len(service.json("GET", "/api/alerts")[2]) == 1
        status, _, text = service.request("GET", "/api/cameras/lobby/history?format=csv&every=3600")
        assert status == 200 and text.decode().splitlines()[0] == "time,count,left"
    finally:
        assert service.stop() == 0


def test_a_bad_site_file_stops_the_start_in_one_line_naming_camera_and_field(tmp_path):
    (tmp_path / "site.toml").write_text('[[camera]]\nname = "north"\nsource = "none.mp4"\nevery_s = -1\n')
    service = None
    with pytest.raises(RuntimeError) as failed:
        service = Service(["--weight_path", str(tmp_path / "missing.pth"), "--site", str(tmp_path / "site.toml")],
                          startup_s=60)
    assert service is None
    lines = [line for line in str(failed.value).splitlines()[1:] if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "camera 'north'" in lines[0]
    assert "every_s" in lines[0] and "missing.pth" not in lines[0], "the site file is read before the checkpoint"


def test_camera_options_without_a_site_file_are_one_usage_line(tmp_path):
    import subprocess
    import sys

    from tools.service_client import ROOT

    done = subprocess.run([sys.executable, "serve.py", "--weight_path", "m.pth", "--keep_days", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--database, --webhook and --keep_days are for the cameras" in done.stderr


def test_without_a_site_the_camera_routes_answer_empty_and_metrics_still_work(tmp_path):
    counting_checkpoint(tmp_path / "model.pth")
    service = Service(["--weight_path", str(tmp_path / "model.pth"), "--token", "s3cret"])
    try:
        assert service.request("GET", "/metrics")[0] == 401, "the token rule applies to the metrics"
        token = {"Authorization": "Bearer s3cret"}
        assert service.json("GET", "/api/cameras", headers=token)[2] == []
        assert service.json("GET", "/api/alerts", headers=token)[2] == []
        status, _, answer = service.json("GET", "/api/cameras/north", headers=token)
        assert status == 404 and "without --site" in answer["error"]
        status, _, body = service.request("GET", "/metrics", headers=token)
        names = {family.name for family in text_string_to_metric_families(body.decode())}
        assert status == 200 and {"crowd_queue_length", "crowd_count", "crowd_camera_up"} <= names
    finally:
        assert service.stop() == 0
