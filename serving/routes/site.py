"""What needs no token: the page (``/``; ``/static`` is mounted by ``serving.app``), the API docs (``/docs``)
and ``/api/health``."""
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from .. import api_docs
from ..answers import json_bytes
from ..models import HealthAnswer, documented
from ..state import Service

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page():
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@router.get("/docs", include_in_schema=False)
async def docs(request: Request):
    return HTMLResponse(api_docs.render(request.app.openapi()))


@router.get("/api/health", summary="Whether the model is loaded, and the queue",
            responses={200: documented(HealthAnswer)})
async def health(state: Service):
    """The model and its settings, how many requests wait for the network and whether it is busy, how many
    pictures it counted since it started, the limits, and whether the API needs a token. Needs no token
    itself."""
    counter, settings = state.counter, state.settings
    answer = HealthAnswer.model_construct(
        status="ok", model=settings.shown_name, device=str(counter.device),
        mode="fast" if counter.network.amp else "exact", restoration=counter.has_restoration,
        threshold=counter.threshold, queue=state.network.waiting_in("pictures"), busy=state.network.busy,
        max_queue=settings.max_queue, max_upload_mb=settings.max_upload_mb, max_megapixels=counter.max_pixels / 1e6,
        pictures_counted=state.statistics.pictures, videos_active=state.videos.active,
        max_videos=settings.videos.active, max_video_s=settings.videos.max_seconds, auth=settings.token is not None)
    return Response(json_bytes(answer), media_type="application/json")
