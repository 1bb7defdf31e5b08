"""The counting service: the web page, the HTTP API (documented at ``/docs``) and the rules that keep it
safe to leave running (upload limit, bounded queue, token). ``create_app`` wires a loaded ``Counter``
into a FastAPI application; ``serve.py`` runs it."""
import base64
import csv
import hmac
import io
import json
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from crowd_datasets.image_io import ImageReadError, check_encoded, declared_pixels, decode_checked
from inference import Counter
from inference.density import density_map
from inference.visualize import density_layer
from inference.zones import count_points

from . import api_docs
from .guards import RequestGuard, SecurityHeaders
from .uploads import (ApiError, UploadLimit, parse_areas, parse_flag, parse_int, parse_threshold, read_body,
                      read_form)
from .videos import VideoJobs, VideoLimits
from .work import ClientGone, QueueFull, WorkQueue

STATIC = Path(__file__).with_name("static")
# An answer lists at most this many points (the highest scoring, flagged "points_truncated"; the counts
# count them all), and a recount takes at most as many: a picture at threshold 0 has millions of anchors.
MAX_ANSWER_POINTS = 100_000
# Points encoded to JSON per call (json_bytes).
JSON_ROWS_AT_ONCE = 5000
# A recount's JSON body at most (bytes): MAX_ANSWER_POINTS points with room to spare.
MAX_RECOUNT_BYTES = 16 * 2 ** 20
# The density layer a page gets is at most this many pixels per side: it is smooth, and a phone need not
# fetch a 12 MP overlay.
DENSITY_LAYER_SIDE = 1024
# Status of an answer nobody receives (the client disconnected), for the access log.
CLIENT_CLOSED = 499


@dataclass(frozen=True)
class ServiceSettings:
    """What ``serve.py`` decides about the service: the checkpoint's ``name`` as given, the bearer ``token``
    (``None``: none needed), the upload limit in MB, how many requests may wait for the network (and, as
    many, for the CPU's other work), the ``Host`` values answered (``guards.allowed_hosts``; ``None``:
    any), the seconds a client may leave a request's head or body without progress, and the video jobs'
    limits."""

    name: str
    token: str = None
    max_upload_mb: float = 50.0
    max_queue: int = 16
    allowed_hosts: frozenset = None
    client_timeout_s: float = 15.0
    videos: VideoLimits = field(default_factory=VideoLimits)

    @property
    def shown_name(self) -> str:
        """The checkpoint as the API shows it: its file name, never the folders it is in."""
        return Path(self.name).name

    @property
    def upload_budget_bytes(self) -> int:
        """Bytes of request bodies under way at once: each waiting request's upload, and a few arriving."""
        return int((self.max_queue + self.videos.active + 2) * self.max_upload_mb * 2 ** 20)


def create_app(counter: Counter, settings: ServiceSettings, on_ready=None):
    """The ASGI application serving ``counter`` (loaded once; it runs one picture or frame at a time): the
    FastAPI routes inside the request guards. ``on_ready()`` is called once the server is up and will stop
    cleanly on a signal."""
    network = WorkQueue(settings.max_queue, lanes=("pictures", "frames"), name="network")
    # Recounts, density layers and long answers: off the event loop, one at a time, bounded as the network.
    cpu = WorkQueue(settings.max_queue, name="cpu work")
    videos = VideoJobs(counter, network, settings.videos)
    timing = {"seconds": None, "pictures": 0}

    @asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        yield
        await videos.close()
        network.close()
        cpu.close()

    app = FastAPI(title="Dehaze-P2PNet counting service", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, description=api_docs.DESCRIPTION)
    app.add_middleware(UploadLimit, max_bytes=int(settings.max_upload_mb * 2 ** 20),
                       budget_bytes=settings.upload_budget_bytes, client_timeout_s=settings.client_timeout_s)

    @app.exception_handler(ApiError)
    async def refused(request, error: ApiError):
        return JSONResponse({"error": error.message}, error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def failed(request, error: Exception):
        # The reason goes to the server's log (uvicorn logs the traceback), never to the client.
        return JSONResponse({"error": "the server failed on this request; the reason is in its log"}, 500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, 400)

    def authorised(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            raise ApiError(401, "this server needs its token: send the header 'Authorization: Bearer <token>' "
                                "(the --token serve.py was started with)", {"WWW-Authenticate": "Bearer"})

    def busy(queue: WorkQueue, lane: str) -> ApiError:
        seconds = timing["seconds"] or 1.0
        retry_after = max(1, math.ceil(seconds * (queue.waiting_in(lane) + 1)))
        return ApiError(503, f"busy: {queue.waiting_in(lane)} requests are waiting (serve.py --max_queue); try "
                             "again shortly", {"Retry-After": str(retry_after), "Connection": "close"})

    async def on_queue(queue: WorkQueue, function, *args, request: Request, lane: str = "default"):
        try:
            return await queue.run(function, *args, lane=lane, disconnected=request.is_disconnected)
        except QueueFull:
            raise busy(queue, lane) from None

    def count_picture(data: bytes, name: str, threshold: float, zones: dict, exclude: dict, restore: bool) -> bytes:
        started = time.perf_counter()
        try:
            rgb = decode_checked(data, name, counter.max_pixels)  # check_encoded ran before it queued
        except ImageReadError as error:
            raise ApiError(400, str(error)) from None
        result = counter.predict(rgb, restore=restore, zones=zones, exclude=exclude, threshold=threshold)
        seconds = time.perf_counter() - started
        timing["seconds"] = seconds if timing["seconds"] is None else 0.8 * timing["seconds"] + 0.2 * seconds
        timing["pictures"] += 1
        answer = {"count": result["count"], **point_answer(result), "zones": result.get("zones", {}),
                  "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "threshold": threshold,
                  "milliseconds": round(1000 * seconds, 1)}
        if restore:
            answer["restored"] = data_url(result["restored"], ".jpg")
        # Encoded here, off the event loop: thousands of points take a while.
        return json_bytes(answer)

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(api_docs.render(app.openapi()))

    @app.get("/api/health", summary="Whether the model is loaded, and the queue",
             responses={200: api_docs.example(api_docs.HEALTH)})
    async def health():
        """The model and its settings, how many requests wait for the network and whether it is busy, how many
        pictures it counted since it started, the limits, and whether the API needs a token. Needs no token
        itself."""
        return {"status": "ok", "model": settings.shown_name, "device": str(counter.device),
                "mode": "fast" if counter.network.amp else "exact", "restoration": counter.has_restoration,
                "threshold": counter.threshold, "queue": network.waiting_in("pictures"), "busy": network.busy,
                "max_queue": settings.max_queue, "max_upload_mb": settings.max_upload_mb,
                "max_megapixels": counter.max_pixels / 1e6, "pictures_counted": timing["pictures"],
                "videos_active": videos.active, "max_videos": settings.videos.active,
                "max_video_s": settings.videos.max_seconds, "auth": settings.token is not None}

    @app.post("/api/count", summary="Count the people in a picture", dependencies=[Depends(authorised)],
              openapi_extra=api_docs.multipart(api_docs.COUNT_FIELDS), responses=api_docs.COUNT_RESPONSES)
    async def count(request: Request):
        """The picture's count, its points (``[x, y, score]`` in pixels of the picture, scores above the
        threshold; at most 100,000, the highest scoring, with ``points_truncated`` true when there were
        more), each zone's count (after the exclusions), its size and the time it took on the network.
        With ``restore`` (checkpoints with the restoration module) also ``restored``: the scene without the
        weather as a JPEG data URL."""
        if network.full("pictures"):
            raise busy(network, "pictures")  # before the upload is read
        try:
            data, name, fields = await read_form(request, ("threshold", "zones", "exclude", "restore"))
            threshold = parse_threshold(fields.get("threshold"), counter.threshold)
            zones, exclude = parse_areas(fields)
            restore = parse_flag(fields.get("restore"), "restore")
            if restore and not counter.has_restoration:
                raise ApiError(400, f"restore: {settings.shown_name} has no restoration module, so it cannot "
                                    "restore pictures")
            try:
                check_encoded(data, name, counter.max_pixels)
            except ImageReadError as error:
                raise ApiError(413 if "over the limit" in error.reason else 400, str(error)) from None
            answer = await on_queue(network, count_picture, data, name, threshold, zones, exclude, restore,
                                    request=request, lane="pictures")
        except (ClientDisconnect, ClientGone):
            return Response(status_code=CLIENT_CLOSED)
        return Response(answer, media_type="application/json")

    def recount_answer(body: bytes) -> bytes:
        """On the CPU worker: ``/api/recount``'s answer to the JSON ``body``, encoded."""
        request = parse_recount(body)
        points = request["points"]
        scores = points[:, 2].astype(np.float32)
        # The network's rule: a float32 score above the threshold in float32 (Counter.select).
        keep = scores > np.float32(request["threshold"])
        result = count_points(points[keep, :2], scores[keep], request["zones"], request["exclude"])
        answer = {"count": result["count"], **point_answer(result), "zones": result["zones"],
                  "threshold": request["threshold"]}
        if request["density"] is not None:
            answer["density"] = density_answer(result["points"], *request["density"])
        return json_bytes(answer)

    def parse_recount(body: bytes) -> dict:
        try:
            body = json.loads(body)
        except ValueError:
            raise ApiError(400, "expected a JSON body") from None
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object")
        raw = body.get("points", [])
        if isinstance(raw, list) and len(raw) > MAX_ANSWER_POINTS:
            raise ApiError(413, f"points: {len(raw)} points, over the limit of {MAX_ANSWER_POINTS} a recount takes")
        try:
            points = np.asarray(raw, dtype=np.float64) if isinstance(raw, list) and raw else np.zeros((0, 3))
        except (TypeError, ValueError):
            points = None
        if points is None or not isinstance(raw, list) or points.ndim != 2 or points.shape[1] != 3 \
                or not np.isfinite(points).all():
            raise ApiError(400, "points: expected a list of [x, y, score] numbers (an earlier answer's points)")
        density = None
        if body.get("density"):
            width, height = (parse_int(body.get(key, ""), key, 1, None) for key in ("width", "height"))
            if width * height > counter.max_pixels:
                raise ApiError(413, f"width x height: {width} x {height} is over the picture limit")
            density = (height, width)
        zones, exclude = parse_areas(body)
        return {"points": points, "threshold": parse_threshold(body.get("threshold"), counter.threshold),
                "zones": zones, "exclude": exclude, "density": density}

    @app.post("/api/recount", summary="Count again at another threshold or with other zones",
              dependencies=[Depends(authorised)], openapi_extra=api_docs.json_body(api_docs.RECOUNT_FIELDS),
              responses={200: api_docs.example(api_docs.RECOUNT)})
    async def recount(request: Request):
        """Without the network: the points of an earlier answer (counted at a lower threshold; at most
        100,000) kept above ``threshold``, outside ``exclude``, and counted per zone, by the same rules as
        ``/api/count``. With ``density`` also the density heatmap as a transparent PNG layer (data URL) and
        its ``peak`` (people per pixel at the top of its colour scale)."""
        if cpu.full("default"):
            raise busy(cpu, "default")
        try:
            body = await read_body(request, MAX_RECOUNT_BYTES)
            answer = await on_queue(cpu, recount_answer, body, request=request)
        except (ClientDisconnect, ClientGone):
            return Response(status_code=CLIENT_CLOSED)
        return Response(answer, media_type="application/json")

    @app.post("/api/videos", summary="Start counting a video", status_code=202, dependencies=[Depends(authorised)],
              openapi_extra=api_docs.multipart(api_docs.VIDEO_FIELDS),
              responses={202: api_docs.example(api_docs.VIDEO)})
    async def start_video(request: Request):
        """Upload a video (mp4, avi, mkv, mov, webm, ...; at most ``--max_video_s`` long); it is counted in the
        background, frame by frame (every ``frame_stride``-th), taking turns on the network with pictures.
        Returns the job (``id``); poll ``GET /api/videos/{id}``."""
        if videos.full:
            raise videos_busy()  # before the upload is read
        try:
            data, name, fields = await read_form(request, ("threshold", "zones", "exclude", "frame_stride"))
        except ClientDisconnect:
            return Response(status_code=CLIENT_CLOSED)
        threshold = parse_threshold(fields.get("threshold"), counter.threshold)
        zones, exclude = parse_areas(fields)
        stride = parse_int(fields.get("frame_stride"), "frame_stride", 1, 1)
        if declared_pixels(data) is not None:
            raise ApiError(400, f"{name} is a picture, not a video: POST it to /api/count")
        try:
            job = await videos.start(data, name, threshold, zones, exclude, stride)
        except QueueFull:
            raise videos_busy() from None
        return JSONResponse(job.summary(), 202)

    def videos_busy() -> ApiError:
        return ApiError(503, f"busy: {videos.active} videos are being counted (serve.py --max_videos); try again "
                             "later", {"Retry-After": "30", "Connection": "close"})

    @app.get("/api/videos/{job_id}", summary="A video job's progress and counts", dependencies=[Depends(authorised)],
             responses={200: api_docs.example(api_docs.VIDEO)})
    async def video_progress(job_id: str, request: Request, since: int = 0):
        """``state`` (waiting, counting, done, failed, cancelled), ``frames_done`` of ``frames_total``, and the
        counts of the frames from the ``since``-th on (``frame``, ``time_s``, ``count``, ``zones``)."""
        job = videos.get(job_id)
        answer = await on_queue(cpu, lambda: json_bytes(job.summary(max(0, since))), request=request)
        return Response(answer, media_type="application/json")

    @app.get("/api/videos/{job_id}/counts.csv", summary="A video's counts as CSV", dependencies=[Depends(authorised)],
             response_class=Response, responses={200: {"content": {"text/csv": {}}}})
    async def video_csv(job_id: str, request: Request):
        """``frame,time_s,count`` and a column per zone, one row per counted frame, as ``run_test.py`` writes."""
        job = videos.get(job_id)
        text = await on_queue(cpu, csv_text, job.counts_csv_rows, request=request)
        return Response(text, media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="counts.csv"'})

    @app.delete("/api/videos/{job_id}", summary="Stop counting a video", dependencies=[Depends(authorised)])
    async def cancel_video(job_id: str):
        """Stops the job (the frames counted so far stay available)."""
        job = videos.get(job_id)
        videos.cancel(job)
        return {"id": job.id, "state": "cancelled" if job.state in ("waiting", "counting") else job.state}

    return SecurityHeaders(RequestGuard(app, settings.allowed_hosts))


def csv_text(rows) -> str:
    """The CSV text of ``rows()``, a callable giving a list of rows."""
    text = io.StringIO()
    csv.writer(text).writerows(rows())
    return text.getvalue()


def point_answer(result: dict) -> dict:
    """``points`` (``[[x, y, score], ...]``, float32 values exactly as computed) of a result and whether they
    were cut to the ``MAX_ANSWER_POINTS`` highest scoring (kept in their order) as ``points_truncated``."""
    points, scores = result["points"], result["scores"]
    truncated = len(scores) > MAX_ANSWER_POINTS
    if truncated:
        kept = np.sort(np.argsort(-scores, kind="stable")[:MAX_ANSWER_POINTS])
        points, scores = points[kept], scores[kept]
    return {"points": np.column_stack([points, scores]).astype(np.float64), "points_truncated": truncated}


def json_bytes(answer: dict) -> bytes:
    """``answer`` as JSONResponse would encode it; its ``points`` (an ``[N, 3]`` array) in rows of
    ``JSON_ROWS_AT_ONCE``: each encoding call holds the interpreter's lock throughout, and the event loop
    must get it back within milliseconds."""
    points = answer.get("points")
    if not isinstance(points, np.ndarray):
        return json_text(answer).encode()
    head = json_text({**answer, "points": []})
    rows = ",".join(json_text(points[start:start + JSON_ROWS_AT_ONCE].tolist())[1:-1]
                    for start in range(0, len(points), JSON_ROWS_AT_ONCE))
    # "count" (a number) comes first, so the first '"points":[]' is the points' own.
    return head.replace('"points":[]', f'"points":[{rows}]', 1).encode()


def json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def data_url(rgb: np.ndarray, suffix: str) -> str:
    """An RGB(A) picture as a ``data:`` URL (JPEG or PNG by ``suffix``)."""
    code = cv2.COLOR_RGBA2BGRA if rgb.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(rgb, code))
    kind = "jpeg" if suffix == ".jpg" else "png"
    return f"data:image/{kind};base64," + base64.b64encode(encoded.tobytes()).decode()


def density_answer(points: np.ndarray, height: int, width: int) -> dict:
    """The density heatmap of ``points`` over a ``height`` x ``width`` picture as a PNG layer and its peak."""
    layer, peak = density_layer(density_map(points, height, width))
    scale = DENSITY_LAYER_SIDE / max(height, width)
    if scale < 1:
        layer = cv2.resize(layer, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    return {"image": data_url(layer, ".png"), "peak": peak}

