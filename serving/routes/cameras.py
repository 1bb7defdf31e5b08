"""Cameras of the site file (``serve.py --site``): ``GET /api/cameras`` lists them, ``GET /api/cameras/{name}``
gives one with its newest counted frame (``.../frame.jpg``), ``GET /api/cameras/{name}/history`` what was
counted over a time range, ``GET /api/alerts`` the alerts, ``GET /metrics`` everything for Prometheus (the
page's event stream: ``events.py``)."""
from datetime import datetime, timedelta, timezone
from typing import Annotated

import cv2
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from watching.history import history_csv, iso

from ..answers import answer_fields, json_bytes, json_text, point_fields
from ..models import AlertAnswer, CameraAnswer, CameraDetail, HistoryAnswer, HistoryQuery, HistoryRow, documented
from ..state import Service, ServiceState, authorised
from ..uploads import ApiError, shown_name

# A history request without from= covers the last this many hours.
DEFAULT_HISTORY_HOURS = 6
# Alerts GET /api/alerts lists at most (newest first).
MAX_ALERTS_LISTED = 1000
JPEG_QUALITY = 85

router = APIRouter(dependencies=[Depends(authorised)])


@router.get("/api/cameras", summary="The cameras and their newest counts",
            responses={200: documented(CameraAnswer, "a list of these")})
async def cameras(state: Service):
    """Each camera of the site file: its state (``live``, ``reconnecting``, ``failed``) and since when, its newest
    count and each zone's, and how often it was counted lately. Empty without ``serve.py --site``."""
    views = state.watcher.views.values() if state.watcher is not None else ()
    return Response(json_text([answer_fields(camera_answer(CameraAnswer, view)) for view in views]).encode(),
                    media_type="application/json")


@router.get("/api/cameras/{name}", summary="A camera and its newest counted frame",
            responses={200: documented(CameraDetail)})
async def camera(name: str, request: Request, state: Service):
    """The camera as ``/api/cameras`` lists it, with the points of its newest counted frame, its zones and
    exclusions, and where that frame is as a JPEG."""
    view = find_camera(state, name)
    answer = await state.run(state.cpu, lambda: json_bytes(camera_detail(view)), request=request)
    return Response(answer, media_type="application/json")


@router.get("/api/cameras/{name}/frame.jpg", summary="A camera's newest counted frame", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
async def camera_frame(name: str, request: Request, state: Service):
    """The frame the newest count was made on, as a JPEG (404 before the first count)."""
    view = find_camera(state, name)
    frame = view.frame
    if frame is None:
        raise ApiError(404, f"camera {name!r} has not been counted yet")
    encoded = await state.run(state.cpu, jpeg, frame, request=request)
    return Response(encoded, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/api/cameras/{name}/history", summary="What a camera counted over a time range",
            responses={200: documented(HistoryAnswer)})
async def camera_history(name: str, request: Request, state: Service, query: Annotated[HistoryQuery, Query()]):
    """The stored counts of ``from`` (ISO 8601; default 6 hours ago) to ``to`` (default now), in time order;
    with ``every`` (seconds), the means of buckets that wide; long ranges are put into buckets on their own
    (``every_s`` says how wide). ``format=csv`` gives ``time,count,<zone>...`` instead."""
    view = find_camera(state, name)
    start, end = history_range(query.start, query.end)
    if query.format not in ("json", "csv"):
        raise ApiError(400, f"format: expected json or csv, got {shown_name(query.format)!r}")
    if query.every is not None and not query.every > 0:
        raise ApiError(400, f"every: expected a positive number of seconds, got {query.every:g}")
    try:
        page = await state.run(state.cpu, state.history.history_page, name, start, end, query.every,
                               request=request)
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    if query.format == "csv":
        text = history_csv(page.rows, list(view.spec.zones))
        return Response(text, media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}-history.csv"'})
    answer = HistoryAnswer.model_construct(camera=name, every_s=page.every_s, rows=[
        HistoryRow.model_construct(time=iso(row["time"]), count=row["count"], zones=row["zones"])
        for row in page.rows])
    return Response(json_bytes(answer), media_type="application/json")


@router.get("/api/alerts", summary="The alerts, newest first", responses={200: documented(AlertAnswer, "a list")})
async def alerts(request: Request, state: Service):
    """Every stored alert (at most the newest 1000): the camera, the zone (``total`` for the whole view), the
    count it stayed above, when it was raised and cleared (``null`` while it lasts), and its peak."""
    if state.history is None:
        return Response(b"[]", media_type="application/json")
    stored = await state.run(state.cpu, state.history.alerts, None, False, MAX_ALERTS_LISTED, request=request)
    listed = [answer_fields(AlertAnswer.model_construct(
        camera=alert["camera"], zone=alert["zone"] or "total", above=alert["above"], raised=iso(alert["raised"]),
        cleared=iso(alert["cleared"]) if alert["cleared"] is not None else None, peak=alert["peak"]))
        for alert in stored]
    return Response(json_text(listed).encode(), media_type="application/json")


@router.get("/metrics", summary="The service's metrics for Prometheus", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request, state: Service):
    """Prometheus' text format: ``crowd_count{camera,zone}`` (zone ``total``: the whole view),
    ``crowd_camera_up{camera}``, ``crowd_frames_counted_total``, ``crowd_camera_reconnects_total``,
    ``crowd_count_seconds`` (a histogram), ``crowd_alerts_active``, ``crowd_queue_length{lane}``."""
    text = await state.run(state.cpu, state.metrics.text, request=request)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def find_camera(state: ServiceState, name: str):
    view = state.watcher.views.get(name) if state.watcher is not None else None
    if view is None:
        raise ApiError(404, f"no camera {shown_name(name)!r}" + ("" if state.watcher is not None else
                                                                 " (serve.py was started without --site)"))
    return view


def camera_answer(model, view, **extra):
    """``model`` (``CameraAnswer`` or ``CameraDetail``) of ``view``, with ``extra`` fields."""
    state, since, reason = view.state
    result = view.result
    return model.model_construct(
        name=view.spec.name, state=state, since=iso(since), reason=reason,
        last_counted=iso(view.counted_at) if view.counted_at is not None else None,
        count=result.count if result is not None else None, zones=result.zones if result is not None else {},
        every_s=view.spec.every_s, interval_s=round(view.interval_s, 3) if view.interval_s is not None else None,
        frames_counted=view.counted, **extra)


def camera_detail(view) -> CameraDetail:
    """On the CPU worker: ``view`` with its newest frame's points, zones and exclusions."""
    result = view.result
    points = point_fields(result.points, result.scores) if result is not None else {"points": [],
                                                                                   "points_truncated": False}
    return camera_answer(
        CameraDetail, view, width=result.width if result is not None else None,
        height=result.height if result is not None else None, **points,
        polygons={zone: polygon.tolist() for zone, polygon in view.spec.zones.items()},
        exclusions={zone: polygon.tolist() for zone, polygon in view.spec.exclusions.items()},
        frame=f"/api/cameras/{view.spec.name}/frame.jpg" if result is not None else None)


def history_range(start: str, end: str) -> tuple:
    """``(start, end)`` aware UTC datetimes of the ``from`` and ``to`` parameters (ISO 8601; a time without a
    zone is UTC), by default the last ``DEFAULT_HISTORY_HOURS`` hours."""
    now = datetime.now(timezone.utc)
    end_time = parse_time(end, "to") if end else now
    start_time = parse_time(start, "from") if start else end_time - timedelta(hours=DEFAULT_HISTORY_HOURS)
    if start_time >= end_time:
        raise ApiError(400, f"from: {iso(start_time)} is not before to: {iso(end_time)}")
    return start_time, end_time


def parse_time(text: str, field: str) -> datetime:
    try:
        time = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{field}: expected an ISO 8601 time such as 2026-12-07T18:00:00Z, got "
                            f"{shown_name(text)!r}") from None
    return time.replace(tzinfo=timezone.utc) if time.tzinfo is None else time.astimezone(timezone.utc)


def jpeg(rgb) -> bytes:
    """``rgb`` (``H x W x 3`` uint8) as JPEG bytes."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return encoded.tobytes()


# Left out of /openapi.json (an event stream has no answer model there); docs/serving.md documents it.
