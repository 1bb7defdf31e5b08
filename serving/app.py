"""The counting service: the web page, the HTTP API (documented at ``/docs``) and the rules that keep it
safe to leave running (upload limit, bounded queues, token, request guards). ``create_app`` wires a
loaded ``Counter`` into a FastAPI application (its state ``serving.state``, its routes
``serving.routes``); ``serve.py`` runs it."""
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from inference import Counter

from . import api_docs
from .guards import RequestGuard, SecurityHeaders
from .routes import cameras, events, pictures, site, videos
from .state import ServiceSettings, ServiceState
from .uploads import ApiError, UploadLimit

__all__ = ["ServiceSettings", "create_app"]


def create_app(counter: Counter, settings: ServiceSettings, on_ready=None):
    """The ASGI application serving ``counter`` (loaded once; it runs one picture or frame at a time): the
    FastAPI routes inside the request guards. ``on_ready()`` is called once the server is up and will stop
    cleanly on a signal."""
    app = FastAPI(title="Dehaze-P2PNet counting service", version="1", lifespan=partial(lifespan, on_ready=on_ready),
                  docs_url=None, redoc_url=None, description=api_docs.DESCRIPTION)
    app.state.service = ServiceState(counter=counter, settings=settings)
    app.add_middleware(UploadLimit, max_bytes=int(settings.max_upload_mb * 2 ** 20),
                       budget_bytes=settings.upload_budget_bytes, client_timeout_s=settings.client_timeout_s)
    add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=site.STATIC), name="static")
    for router in (site.router, pictures.router, videos.router, cameras.router, events.router):
        app.include_router(router)
    guarded = SecurityHeaders(RequestGuard(app, settings.allowed_hosts))
    # serve.py tells it when a stop begins (ServiceState.begin_stop), before the server waits for connections.
    guarded.service = app.state.service
    return guarded


@asynccontextmanager
async def lifespan(app: FastAPI, on_ready=None):
    """The server's life: the cameras start, ``on_ready()`` once it is up; at its stop, the cameras, the video
    jobs and the queues."""
    app.state.service.start()
    if on_ready is not None:
        on_ready()
    yield
    await app.state.service.close()


def add_error_handlers(app: FastAPI) -> None:
    """Every error is answered ``{"error": "<one line>"}``: refusals with their status, a failure with 500."""
    app.add_exception_handler(ApiError, refused)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, failed)


async def refused(request, error: ApiError):
    return JSONResponse({"error": error.message}, error.status, headers=error.headers)


async def http_error(request, error: HTTPException):
    """Starlette's own refusals: no such route (404), another method (405)."""
    return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)


async def invalid(request, error: RequestValidationError):
    """A parameter FastAPI checks itself (``?since=``), named with where it was."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, 400)


async def failed(request, error: Exception):
    # The reason goes to the server's log (uvicorn logs the traceback), never to the client.
    return JSONResponse({"error": "the server failed on this request; the reason is in its log"}, 500)
