"""Two serve.py instances writing one history in PostgreSQL (``--database``): instance A watches an RTSP camera
and a looping file, instance B another looping file. Both are counted and stored; the RTSP server is killed
and started again while A's other camera goes on counting; A is killed with SIGKILL and started again, and
the shared history keeps everything but its down time. Real parts on 127.0.0.1 only: serve.py twice, a
throw-away PostgreSQL server (``tests/postgres.py``), GStreamer's RTSP server (``tests/streams.py``)."""
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pytest

from postgres import postgres_url  # noqa: F401  (a module-scoped fixture, asked for by name below)
from streams import RtspServer, require_rtsp, scene_jpegs
from test_serve_cameras import cameras, metric_values, wait_for
from tools.service_client import Service
from watching.history import open_history

EVERY_S = 2
# A gap between two stored counts of a camera that counts all along: a few every_s (a busy 2-core machine
# runs two services and three cameras, so a count may start late).
SLACK_S = 3 * EVERY_S
# How long the RTSP server stays dead at least: its reader notices after stall_s (10 s) without a frame.
OUTAGE_S = 10


def write_still_video(path, seed: int) -> None:
    """A Motion JPEG file of one scene: each frame is the same JPEG, so every frame decodes to the same
    pixels and every count of the camera that plays it is the same."""
    scene = cv2.imdecode(np.frombuffer(scene_jpegs(1, seed=seed)[0], np.uint8), cv2.IMREAD_COLOR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    for _ in range(10):
        writer.write(scene)
    writer.release()


def write_site(folder, sources: list) -> str:
    """A site file of ``(name, source)`` cameras counted every ``EVERY_S`` in ``folder``; its path."""
    folder.mkdir()
    text = "".join(f'[[camera]]\nname = "{name}"\nsource = "{source}"\nevery_s = {EVERY_S}\n\n'
                   for name, source in sources)
    (folder / "site.toml").write_text(text)
    return str(folder / "site.toml")


def start_together(argument_lists: list, running: list) -> list:
    """A ``Service`` per list of arguments, started at once (so that both create the history's tables at
    about the same time, as after a power cut). Those that started are added to ``running`` before the
    first failure, if any, is raised, so that the caller's finally block stops them."""
    with ThreadPoolExecutor(max_workers=len(argument_lists)) as pool:
        starts = [pool.submit(Service, arguments) for arguments in argument_lists]
    running.extend(start.result() for start in starts if start.exception() is None)
    return [start.result() for start in starts]


def stored(url: str, camera: str, since: datetime) -> list:
    """The rows of ``camera`` in the shared history from ``since`` to now, read from the database itself."""
    with open_history(url) as history:
        return history.history(camera=camera, start=since, end=datetime.now(timezone.utc) + timedelta(seconds=1))


def gaps(rows: list) -> list:
    """``(seconds, time before, time after)`` of each gap between consecutive rows, the widest first."""
    return sorted((((after["time"] - before["time"]).total_seconds(), before["time"], after["time"])
                   for before, after in zip(rows, rows[1:])), reverse=True)


def assert_metrics_match(service, still: str) -> dict:
    """/metrics parses, and the still camera's crowd_count is the count the API shows (it never changes)."""
    listed = cameras(service)[still]  # read first: the metrics read after have counted at least as many frames
    metrics = metric_values(service)
    assert metrics[("crowd_count", (("camera", still), ("zone", "total")))] == listed["count"]
    assert metrics[("crowd_frames_counted_total", (("camera", still),))] >= listed["frames_counted"]
    return metrics


def api_rows(service, camera: str) -> list:
    status, _, answer = service.json("GET", f"/api/cameras/{camera}/history")
    assert status == 200 and answer["camera"] == camera
    return answer["rows"]


@pytest.mark.slow
def test_two_services_share_one_postgresql_history_across_a_dropped_rtsp_camera_and_a_killed_server(
        request, tmp_path, counting_model):
    require_rtsp()
    url = request.getfixturevalue("postgres_url")
    began = datetime.now(timezone.utc)
    write_still_video(tmp_path / "lobby.avi", seed=2)
    write_still_video(tmp_path / "hall.avi", seed=3)
    common = ["--weight_path", str(counting_model), "--database", url]
    running = []  # every Service started, stopped again in the finally block whatever happened
    with RtspServer(scene_jpegs(1, seed=4), fps=5, lifetime_s=300) as rtsp:
        site_a = write_site(tmp_path / "a", [("gate", rtsp.url), ("lobby", tmp_path / "lobby.avi")])
        site_b = write_site(tmp_path / "b", [("hall", tmp_path / "hall.avi")])
        try:
            service_a, service_b = start_together([[*common, "--site", site_a], [*common, "--site", site_b]],
                                                  running=running)

            # Both services count their cameras and store the counts; each API shows its own camera's rows.
            listed_a = wait_for(service_a, lambda cams: all(cam["frames_counted"] >= 2 for cam in cams.values()))
            listed_b = wait_for(service_b, lambda cams: cams["hall"]["frames_counted"] >= 2)
            assert {name: cam["state"] for name, cam in listed_a.items()} == {"gate": "live", "lobby": "live"}
            assert listed_b["hall"]["state"] == "live" and listed_b["hall"]["count"] > 0
            lobby_count, hall_count = listed_a["lobby"]["count"], listed_b["hall"]["count"]
            assert lobby_count > 0
            assert {row["count"] for row in api_rows(service_a, "lobby")} == {lobby_count}
            assert {row["count"] for row in api_rows(service_b, "hall")} == {hall_count}
            assert service_b.json("GET", "/api/cameras/lobby/history")[0] == 404, "B serves its own cameras only"
            # The database itself holds the cameras of both services: one history.
            with open_history(url) as history:
                assert history.cameras() == ["gate", "hall", "lobby"]
            for camera in ("gate", "hall", "lobby"):
                assert len(stored(url, camera, began)) >= 2, camera
            assert_metrics_match(service_a, "lobby")
            assert_metrics_match(service_b, "hall")

            # The RTSP server dies for OUTAGE_S at least: gate goes reconnecting, lobby goes on counting.
            killed = time.monotonic()
            rtsp.stop()
            lobby_before = cameras(service_a)["lobby"]["frames_counted"]
            down = wait_for(service_a, lambda cams: cams["gate"]["state"] == "reconnecting", timeout_s=30)
            assert down["gate"]["reason"] and down["gate"]["since"] > listed_a["gate"]["since"]
            assert metric_values(service_a)[("crowd_camera_up", (("camera", "gate"),))] == 0.0
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed)))
            during = wait_for(service_a, lambda cams: cams["lobby"]["frames_counted"] >= lobby_before + 2,
                              timeout_s=30)
            assert during["gate"]["state"] == "reconnecting", "the outage lasted until lobby counted twice more"
            rtsp.start()
            back = wait_for(service_a, lambda cams: cams["gate"]["state"] == "live", timeout_s=60)
            assert back["lobby"]["frames_counted"] > during["lobby"]["frames_counted"] >= lobby_before + 2
            metrics_a = assert_metrics_match(service_a, "lobby")
            assert metrics_a[("crowd_camera_reconnects_total", (("camera", "gate"),))] >= 1
            assert metrics_a[("crowd_camera_up", (("camera", "gate"),))] == 1.0
            wait_for(service_a, lambda cams: cams["gate"]["frames_counted"] > back["gate"]["frames_counted"])

            # A is killed outright; B goes on storing while A is away; A comes back on the same history.
            before_kill = stored(url, "lobby", began)
            api_before_kill = api_rows(service_a, "lobby")
            hall_at_kill = len(stored(url, "hall", began))
            killed, killed_at = time.monotonic(), datetime.now(timezone.utc)
            assert service_a.stop(signal.SIGKILL) == -signal.SIGKILL
            service_a = Service([*common, "--site", site_a])
            running.append(service_a)
            wait_for(service_a, lambda cams: cams["lobby"]["frames_counted"] >= 1, timeout_s=60)
            down_s = time.monotonic() - killed
            wait_for(service_a, lambda cams: cams["gate"]["state"] == "live"
                     and all(cam["frames_counted"] >= 2 for cam in cams.values()), timeout_s=60)
            assert len(stored(url, "hall", began)) > hall_at_kill, "B stored counts while A was down"

            # Everything stored before the kill is still there, in PostgreSQL and through the restarted API.
            after = stored(url, "lobby", began)
            assert after[:len(before_kill)] == before_kill and len(after) > len(before_kill)
            api_after = api_rows(service_a, "lobby")
            assert api_after[:len(api_before_kill)] == api_before_kill
            assert {row["count"] for row in after} == {lobby_count}
            # No gap in lobby's history but A's down time (the RTSP outage left lobby counting): the widest gap
            # spans the kill and is no longer than it, every other is a few every_s at most.
            widest, second = gaps(after)[:2]
            assert widest[1] < killed_at < widest[2] and widest[0] < down_s + SLACK_S, (
                f"the widest gap, {widest[0]:.1f} s from {widest[1]} to {widest[2]}; A was down {down_s:.1f} s")
            assert second[0] < SLACK_S, f"a gap of {second[0]:.1f} s from {second[1]} to {second[2]}"
            assert gaps(stored(url, "hall", began))[0][0] < SLACK_S, "hall was counted all along"
            # gate: stored before the outage, and again after both the outage and A's restart.
            assert stored(url, "gate", began)[-1]["time"] > killed_at

            assert_metrics_match(service_a, "lobby")
            assert_metrics_match(service_b, "hall")
            for service in (service_a, service_b):
                assert service.stop() == 0
        finally:
            for service in running:
                service.stop(signal.SIGKILL)
