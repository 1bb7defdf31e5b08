"""Video jobs: ``POST /api/videos`` starts counting a video in the background, ``GET /api/videos/{id}`` gives
its progress and counts, ``GET /api/videos/{id}/counts.csv`` its counts as ``run_test.py`` writes them and
``DELETE /api/videos/{id}`` stops it."""
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from crowd_datasets.image_io import declared_pixels

from ..answers import CLIENT_CLOSED, csv_text, json_bytes
from ..models import JobStopped, VideoForm, VideoJobAnswer, documented
from ..state import Service, authorised
from ..uploads import ApiError, read_form
from ..work import QueueFull

router = APIRouter(dependencies=[Depends(authorised)])


@router.post("/api/videos", summary="Start counting a video", status_code=202,
             openapi_extra=VideoForm.openapi_body("multipart/form-data"),
             responses={202: documented(VideoJobAnswer)})
async def start_video(request: Request, state: Service):
    """Upload a video (mp4, avi, mkv, mov, webm, ...; at most ``--max_video_s`` long); it is counted in the
    background, frame by frame (every ``frame_stride``-th), taking turns on the network with pictures.
    Returns the job (``id``); poll ``GET /api/videos/{id}``."""
    if state.videos.full:
        raise state.videos_busy()  # before the upload is read
    try:
        data, name, fields = await read_form(request, VideoForm.text_fields())
    except ClientDisconnect:
        return Response(status_code=CLIENT_CLOSED)
    options = VideoForm.parse({"file": data, **fields}).options(state.counter.threshold)
    if declared_pixels(data) is not None:
        raise ApiError(400, f"{name} is a picture, not a video: POST it to /api/count")
    try:
        job = await state.videos.start(data, filename=name, options=options)
    except QueueFull:
        raise state.videos_busy() from None
    return Response(json_bytes(job.summary()), status_code=202, media_type="application/json")


@router.get("/api/videos/{job_id}", summary="A video job's progress and counts",
            responses={200: documented(VideoJobAnswer)})
async def video_progress(job_id: str, request: Request, state: Service, since: int = 0):
    """``state`` (waiting, counting, done, failed, cancelled), ``frames_done`` of ``frames_total``, and the
    counts of the frames from the ``since``-th on (``frame``, ``time_s``, ``count``, ``zones``)."""
    job = state.videos.get(job_id)
    # A long video's counts take a while to encode: off the event loop.
    answer = await state.run(state.cpu, lambda: json_bytes(job.summary(max(0, since))), request=request)
    return Response(answer, media_type="application/json")


@router.get("/api/videos/{job_id}/counts.csv", summary="A video's counts as CSV", response_class=Response,
            responses={200: {"content": {"text/csv": {}}}})
async def video_csv(job_id: str, request: Request, state: Service):
    """``frame,time_s,count`` and a column per zone, one row per counted frame, as ``run_test.py`` writes."""
    job = state.videos.get(job_id)
    text = await state.run(state.cpu, csv_text, job.counts_csv_rows, request=request)
    return Response(text, media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="counts.csv"'})


@router.delete("/api/videos/{job_id}", summary="Stop counting a video", responses={200: documented(JobStopped)})
async def cancel_video(job_id: str, state: Service):
    """Stops the job (the frames counted so far stay available)."""
    job = state.videos.get(job_id)
    state.videos.cancel(job)
    stopped = JobStopped.model_construct(id=job.id, state="cancelled" if job.state in ("waiting", "counting")
                                         else job.state)
    return Response(json_bytes(stopped), media_type="application/json")
