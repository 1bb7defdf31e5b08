"""``serve.py``'s API, as clients use it over HTTP on 127.0.0.1: counts equal ``run_test.py``'s, every bad
input is a 4xx naming it and the server keeps serving, the upload limit holds while the body streams, the
queue is bounded, disconnected clients cost nothing, the token rule, video jobs, and a clean stop."""
import csv
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

import run_test
from crowd_datasets.demo import make_scene
from helpers import REAL_SAMPLES, REFERENCE_CHECKPOINT, ROOT
from tools.service_client import Service, multipart, png_declaring
from test_video import write_clip

ZONES = {"left half": [[0, 0], [40, 0], [40, 72], [0, 72]], "corner": [[50, 5], [90, 5], [90, 40]]}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Pictures as users have them: JPEGs of two sizes and a PNG with an alpha channel named .jpg."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(5)
    for index, size in enumerate([(96, 72), (160, 128), (128, 96)]):
        rgb = make_scene(rng, size).image
        if index == 2:
            bgra = np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 200, np.uint8)])
            cv2.imwrite(str(folder / "alpha_png.jpg"), bgra)
        else:
            cv2.imwrite(str(folder / f"scene_{index}.jpg"), rgb[:, :, ::-1])
    return folder


def run_test_counts(checkpoint, folder, tmp_path, extra=(), code=0) -> dict:
    """file name -> the counts.csv row run_test.py writes for it."""
    out = tmp_path / "run_test"
    assert run_test.main(["--weight_path", str(checkpoint), "--input", str(folder), "--output_dir", str(out),
                          *extra]) == code
    with open(out / "counts.csv", newline="") as file:
        return {row["image"]: row for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def service(counting_model):
    service = Service(["--weight_path", str(counting_model), "--max_upload_mb", "1"])
    yield service
    assert service.stop() == 0, service.output


def test_counts_and_zones_equal_run_test_for_the_same_files(service, counting_model, pictures, tmp_path):
    (tmp_path / "zones.json").write_text(json.dumps(ZONES))
    expected = run_test_counts(counting_model, pictures, tmp_path, ["--zones", str(tmp_path / "zones.json")])
    assert len(expected) == 3
    for path in sorted(pictures.iterdir()):
        status, _, answer = service.upload("/api/count", path.read_bytes(), path.name, {"zones": json.dumps(ZONES)})
        assert status == 200, answer
        row = expected[path.name]
        assert answer["count"] == int(row["count"]) > 0
        assert answer["zones"] == {name: int(row[name]) for name in ZONES}
        assert len(answer["points"]) == answer["count"] and all(score > 0.5 for _, _, score in answer["points"])
        height, width = cv2.imread(str(path)).shape[:2]
        assert (answer["width"], answer["height"]) == (width, height) and answer["milliseconds"] > 0


def test_recount_applies_the_same_rules_as_counting_without_the_network(service, pictures):
    data = (pictures / "scene_1.jpg").read_bytes()
    candidates = service.upload("/api/count", data, fields={"threshold": "0.05"})[2]
    scores = sorted(score for _, _, score in candidates["points"])
    # Thresholds equal to a score (float32) are where a float64 comparison would differ.
    for threshold in [0.3, 0.5, 0.62, scores[len(scores) // 2], scores[-5]]:
        exclude = {"x": ZONES["corner"]}
        fields = {"threshold": repr(threshold), "zones": json.dumps(ZONES), "exclude": json.dumps(exclude)}
        counted = service.upload("/api/count", data, fields=fields)[2]
        body = {"points": candidates["points"], "threshold": threshold, "zones": ZONES, "exclude": exclude}
        status, _, recounted = service.json("POST", "/api/recount", json.dumps(body).encode(),
                                            {"Content-Type": "application/json"})
        assert status == 200, recounted
        assert recounted["points"] == counted["points"] and recounted["zones"] == counted["zones"]
        assert recounted["count"] == counted["count"] and recounted["zones"]["corner"] == 0
    body = {"points": candidates["points"], "density": True, "width": 160, "height": 128}
    density = service.json("POST", "/api/recount", json.dumps(body).encode(), {"Content-Type": "application/json"})[2]
    assert density["density"]["image"].startswith("data:image/png;base64,") and density["density"]["peak"] > 0


def bad_requests(pictures, tmp_path) -> list:
    """(what, method, path, body, headers, expected status, words the error must contain)."""
    good = (pictures / "scene_0.jpg").read_bytes()
    png_declaring(tmp_path / "huge.png", 10_000, 8_000)

    def form(data, name="p.jpg", **fields):
        body, kind = multipart(data, name, fields)
        return body, {"Content-Type": kind}

    json_type = {"Content-Type": "application/json"}
    return [
        ("not a picture", "POST", "/api/count", *form(b"hello, not a picture", "notes.txt"), 400,
         "notes.txt: not a readable image"),
        ("truncated JPEG", "POST", "/api/count", *form(good[:len(good) // 2]), 400, "truncated JPEG"),
        ("over the pixel limit", "POST", "/api/count", *form((tmp_path / "huge.png").read_bytes(), "huge.png"), 413,
         "declares 10000 x 8000 pixels (80 MP), over the limit of 50 MP"),
        ("zones not JSON", "POST", "/api/count", *form(good, zones="{gate"), 400, "zones: not JSON"),
        ("zone of 2 points", "POST", "/api/count", *form(good, zones='{"gate": [[0, 0], [1, 1]]}'), 400,
         "polygon 'gate' has 2 points"),
        ("exclusion not numbers", "POST", "/api/count", *form(good, exclude='{"roof": [["a", 0], [1, 1], [2, 2]]}'),
         400, "exclude: polygon 'roof' has a coordinate that is not a number"),
        ("threshold out of range", "POST", "/api/count", *form(good, threshold="1.5"), 400,
         "threshold: expected a number in [0, 1]"),
        ("restore without the module", "POST", "/api/count", *form(good, restore="true"), 400, "no restoration module"),
        ("unknown field", "POST", "/api/count", *form(good, treshold="0.4"), 400, "unknown form field 'treshold'"),
        ("no file", "POST", "/api/count", b"--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}, 400,
         "no file"),
        ("not multipart", "POST", "/api/count", good, {"Content-Type": "image/jpeg"}, 415, "multipart/form-data"),
        ("recount of bad points", "POST", "/api/recount", b'{"points": [[1, 2]]}', json_type, 400, "points: expected"),
        ("recount not JSON", "POST", "/api/recount", b"points", json_type, 400, "expected a JSON body"),
        ("a picture as a video", "POST", "/api/videos", *form(good), 400, "is a picture, not a video"),
        ("not a video", "POST", "/api/videos", *form(b"\0" * 5000, "clip.mp4"), 400,
         "clip.mp4: cannot be opened as a video"),
        ("unknown video job", "GET", "/api/videos/nope", None, {}, 404, "no video job 'nope'"),
        ("unknown route", "GET", "/api/counts", None, {}, 404, "Not Found"),
    ]


def test_every_bad_input_is_a_4xx_naming_it_and_the_next_request_succeeds(service, pictures, tmp_path):
    good = (pictures / "scene_0.jpg").read_bytes()
    reference = service.upload("/api/count", good)[2]["count"]
    for what, method, path, body, headers, status, words in bad_requests(pictures, tmp_path):
        got, _, answer = service.json(method, path, body, headers)
        assert (got, words in answer["error"]) == (status, True), (what, answer)
        assert service.upload("/api/count", good)[2]["count"] == reference, what


def raw_request(port: int, head: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(head)
    return connection


def read_until_closed(connection: socket.socket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


def test_uploads_over_the_limit_are_refused_while_they_stream(service):
    boundary = "b"
    start = f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n\r\n".encode()
    declared = raw_request(service.port, b"POST /api/count HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 600000000\r\n"
                           b"Expect: 100-continue\r\n\r\n")
    # Refused on the declared length, before the client sends any of its 600 MB (curl waits for 100 Continue).
    answer = read_until_closed(declared)
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 1 MB (serve.py --max_upload_mb)" in answer
    declared.close()
    chunked = raw_request(service.port, b"POST /api/count HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"\0" * 65536
    sent, answer = 0, b""
    chunked.settimeout(0.05)
    while not answer and sent < 50 << 20:
        piece = start + chunk if sent == 0 else chunk
        try:
            chunked.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(chunk)
            answer = chunked.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
    chunked.settimeout(5)
    answer = answer or chunked.recv(4096)
    chunked.close()
    assert answer.startswith(b"HTTP/1.1 413") and sent < 3 << 20, (answer[:100], sent)
    picture = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    assert service.upload("/api/count", picture)[0] == 200


@pytest.mark.slow
def test_token_is_required_beyond_this_machine_and_checked(counting_model, capsys):
    import serve

    with pytest.raises(SystemExit) as stopped:
        serve.main(["--weight_path", str(counting_model), "--host", "0.0.0.0"])
    assert stopped.value.code == 2 and "--token SECRET" in capsys.readouterr().err
    service = Service(["--weight_path", str(counting_model), "--host", "0.0.0.0", "--token", "s3cret"])
    try:
        assert "the API needs the token" in service.output
        picture = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, response_headers, answer = service.upload("/api/count", picture, headers=headers)
            assert status == 401 and "Authorization: Bearer" in answer["error"]
            assert response_headers["www-authenticate"] == "Bearer"
        assert service.upload("/api/count", picture, headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert service.json("GET", "/api/health")[2]["auth"] is True
    finally:
        assert service.stop() == 0
    open_service = Service(["--weight_path", str(counting_model), "--host", "0.0.0.0", "--no_auth"])
    assert "WARNING: no token (--no_auth)" in open_service.output
    assert open_service.stop() == 0


@pytest.mark.slow
def test_a_full_queue_answers_503_and_clients_that_leave_cost_nothing(counting_model, tmp_path):
    service = Service(["--weight_path", str(counting_model), "--max_queue", "1"])
    try:
        big = cv2.imencode(".jpg", make_scene(np.random.default_rng(1), (1024, 768)).image)[1].tobytes()
        small = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
        answers = {}
        running = threading.Thread(target=lambda: answers.setdefault("first", service.upload("/api/count", big)))
        running.start()
        assert service.wait_until(lambda health: health["busy"])["busy"]
        body, kind = multipart(small, "small.jpg", {})
        waiting = raw_request(service.port, f"POST /api/count HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
                                            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        health = service.wait_until(lambda health: health["queue"] == 1)
        assert health["queue"] == 1 and health["busy"]
        status, headers, answer = service.upload("/api/count", small)
        assert status == 503 and int(headers["retry-after"]) >= 1 and "--max_queue" in answer["error"]
        waiting.close()  # the waiting client leaves before its turn
        health = service.wait_until(lambda health: health["queue"] == 0, timeout=10)
        assert health["queue"] == 0 and health["busy"], "the waiter should leave while the first still runs"
        # A client that leaves in the middle of its upload.
        cut = raw_request(service.port, f"POST /api/count HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
                                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
        cut.close()
        running.join(120)
        assert answers["first"][0] == 200
        assert service.upload("/api/count", small)[0] == 200
        # Only the first picture and the last ran on the network.
        assert service.health()["pictures_counted"] == 2
    finally:
        assert service.stop() == 0


def test_a_video_job_counts_as_run_test_does_and_its_folder_is_removed(counting_model, tmp_path):
    clip = tmp_path / "videos" / "clip.mp4"
    clip.parent.mkdir()
    frames = write_clip(clip, size=(128, 96))
    (tmp_path / "zones.json").write_text(json.dumps(ZONES))
    out = tmp_path / "run_test"
    assert run_test.main(["--weight_path", str(counting_model), "--input", str(clip), "--output_dir", str(out),
                          "--frame_stride", "2", "--zones", str(tmp_path / "zones.json")]) == 0
    temporary = tmp_path / "server_tmp"
    temporary.mkdir()
    service = Service(["--weight_path", str(counting_model)], environment={"TMPDIR": str(temporary)})
    try:
        status, _, job = service.upload("/api/videos", clip.read_bytes(), "clip.mp4",
                                        {"frame_stride": "2", "zones": json.dumps(ZONES)})
        assert status == 202 and job["frames_total"] == frames // 2, job
        deadline = time.monotonic() + 120
        while job["state"] in ("waiting", "counting") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = service.json("GET", f"/api/videos/{job['id']}")[2]
        assert job["state"] == "done" and job["frames_done"] == frames // 2 and job["error"] is None
        status, headers, text = service.request("GET", f"/api/videos/{job['id']}/counts.csv")
        assert status == 200 and headers["content-type"].startswith("text/csv")
        assert text == (out / "counts.csv").read_bytes()
        assert service.json("GET", f"/api/videos/{job['id']}?since=3")[2]["counts"] == job["counts"][3:]
    finally:
        assert service.stop() == 0
    assert "stopped" in service.output and list(temporary.iterdir()) == []


def test_the_page_and_docs_are_served_from_here_and_document_every_route(service):
    status, headers, page = service.request("GET", "/")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    assert b'data-testid="files"' in page
    for asset in ("/static/page.js", "/static/page.css"):
        status, _, content = service.request("GET", asset)
        assert status == 200 and b"http://" not in content and b"https://" not in content
    status, _, docs = service.request("GET", "/docs")
    assert status == 200 and b"https://" not in docs
    schema = service.json("GET", "/openapi.json")[2]
    routes = {(path, method) for path, methods in schema["paths"].items() for method in methods}
    assert routes == {("/api/health", "get"), ("/api/count", "post"), ("/api/recount", "post"),
                      ("/api/videos", "post"), ("/api/videos/{job_id}", "get"), ("/api/videos/{job_id}", "delete"),
                      ("/api/videos/{job_id}/counts.csv", "get"), ("/api/cameras", "get"),
                      ("/api/cameras/{name}", "get"), ("/api/cameras/{name}/frame.jpg", "get"),
                      ("/api/cameras/{name}/history", "get"),
                      ("/api/alerts", "get"), ("/metrics", "get")}
    for path, _ in routes:
        assert path.encode() in docs
    for field in (b"threshold", b"zones", b"exclude", b"frame_stride", b"Retry-After"):
        assert field in docs


def test_the_scripts_do_not_load_the_web_framework():
    code = ("import sys, run_test, train; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'fastapi', 'uvicorn', 'starlette', 'serving', 'multipart', 'python_multipart', 'pydantic'}))")
    finished = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.stdout.strip() == "[]", finished.stderr


@pytest.mark.reference_fixtures
def test_a_real_sample_counts_as_run_test_with_the_reference_checkpoint(tmp_path):
    # The other real sample, a 1920 x 1080 PNG with alpha named .jpg, goes through the page's test.
    expected = run_test_counts(REFERENCE_CHECKPOINT, REAL_SAMPLES / "A_IMG_160.jpg", tmp_path)
    service = Service(["--weight_path", str(REFERENCE_CHECKPOINT)])
    try:
        for name in ("A_IMG_160.jpg",):
            status, _, answer = service.upload("/api/count", (REAL_SAMPLES / name).read_bytes(), name)
            assert status == 200 and answer["count"] == int(expected[name]["count"]), answer.get("error")
    finally:
        assert service.stop() == 0


def test_a_port_in_use_is_one_line(counting_model, capsys):
    import serve

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert serve.main(["--weight_path", str(counting_model), "--port", str(port)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"--port {port}: cannot listen there" in error


@pytest.mark.slow
def test_the_load_test_checks_every_answer_and_reports_the_figures(counting_model, pictures):
    finished = subprocess.run([sys.executable, "tools/load_test.py", "--weight_path", str(counting_model), "--pictures",
                               str(pictures), "--requests", "24", "--clients", "4", "--bad", "0.25",
                               "--disconnect", "0.15", "--seed", "3"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = finished.stdout
    assert "24 requests from 4 clients" in report and "server exit code 0" in report
    assert "refused as it must" in report and "left" in report and " equal" in report
    assert "wrong" not in report and "95th percentile" in report and "peak resident memory" in report


def test_a_released_name_without_network_is_one_line_saying_where_to_put_the_file(tmp_path, monkeypatch, capsys):
    import serve

    monkeypatch.setattr(serve, "stop_on_sigterm", lambda: None)
    monkeypatch.setenv("DEHAZE_P2PNET_CACHE", str(tmp_path / "cache"))
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", f"http://127.0.0.1:{port}")
    assert serve.main(["--weight_path", "Hazy_JHU", "--port", "0"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: cannot download Hazy_JHU")
    assert str(tmp_path / "cache" / "weights" / "Hazy_JHU_best.pth") in error and "drive.google.com" in error


@pytest.mark.slow
def test_a_checkpoint_with_the_restoration_module_returns_the_restored_view_run_test_writes(pictures, tmp_path):
    import base64

    from helpers import trained_looking_model
    from models import save_checkpoint

    model = trained_looking_model(restoration=True)
    save_checkpoint(tmp_path / "restoring.pth", model, model.settings)
    out = tmp_path / "run_test"
    assert run_test.main(["--weight_path", str(tmp_path / "restoring.pth"), "--input", str(pictures / "scene_1.jpg"),
                          "--output_dir", str(out), "--save_restored"]) == 0
    service = Service(["--weight_path", str(tmp_path / "restoring.pth")], environment={"TMPDIR": str(tmp_path)})
    try:
        assert service.health()["restoration"] is True
        status, _, answer = service.upload("/api/count", (pictures / "scene_1.jpg").read_bytes(), "scene_1.jpg",
                                           {"restore": "true"})
        assert status == 200 and answer["restored"].startswith("data:image/jpeg;base64,")
        restored = cv2.imdecode(np.frombuffer(base64.b64decode(answer["restored"].split(",", 1)[1]), np.uint8),
                                cv2.IMREAD_COLOR)
        assert restored.shape == (128, 160, 3)
        assert np.array_equal(restored, cv2.imread(str(out / "restored" / "scene_1.jpg")))
        assert "restored" not in service.upload("/api/count", (pictures / "scene_1.jpg").read_bytes())[2]
    finally:
        assert service.stop(signal.SIGINT) == 0  # Ctrl-C stops it as cleanly as SIGTERM
