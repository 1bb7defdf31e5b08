"""Pictures: ``POST /api/count`` counts one on the network, ``POST /api/recount`` counts the points of an
earlier answer again (another threshold, other zones) without it."""
import json
import time

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from crowd_datasets.image_io import ImageReadError, check_encoded, decode_checked
from inference.job import CountingOptions
from inference.zones import count_points

from ..answers import CLIENT_CLOSED, count_answer, density_answer, json_bytes, point_fields
from ..models import CountAnswer, CountForm, ErrorAnswer, RecountAnswer, RecountBody, documented
from ..state import Service, ServiceState, authorised
from ..uploads import ApiError, read_body, read_form
from ..work import ClientGone

# A recount's JSON body at most (bytes): MAX_ANSWER_POINTS points with room to spare.
MAX_RECOUNT_BYTES = 16 * 2 ** 20

COUNT_RESPONSES = {
    200: documented(CountAnswer, "the count"),
    400: documented(ErrorAnswer, "not a picture, a format outside the list, a truncated file, bad zone JSON or a "
                                 "bad field"),
    401: documented(ErrorAnswer, "the token is missing or wrong"),
    403: documented(ErrorAnswer, "the request comes from another site's page"),
    408: documented(ErrorAnswer, "the upload stalled (serve.py --client_timeout_s)"),
    413: documented(ErrorAnswer, "the upload is over --max_upload_mb, or the picture over --max_megapixels"),
    503: documented(ErrorAnswer, "the queue is full: try again after Retry-After seconds"),
}

router = APIRouter(dependencies=[Depends(authorised)])


@router.post("/api/count", summary="Count the people in a picture",
             openapi_extra=CountForm.openapi_body("multipart/form-data"), responses=COUNT_RESPONSES)
async def count(request: Request, state: Service):
    """The picture's count, its points (``[x, y, score]`` in pixels of the picture, scores above the
    threshold; at most 100,000, the highest scoring, with ``points_truncated`` true when there were
    more), each zone's count (after the exclusions), its size and the time it took on the network.
    With ``restore`` (checkpoints with the restoration module) also ``restored``: the scene without the
    weather as a JPEG data URL."""
    if state.network.full("pictures"):
        raise state.busy(state.network, "pictures")  # before the upload is read
    try:
        data, name, fields = await read_form(request, CountForm.text_fields())
        options = picture_options(state, CountForm.parse({"file": data, **fields}))
        try:
            # Its format and declared size, before it waits: it is decoded in its turn.
            check_encoded(data, name, state.counter.max_pixels)
        except ImageReadError as error:
            raise ApiError(413 if "over the limit" in error.reason else 400, str(error)) from None
        answer = await state.run(state.network, count_picture, state, data, name, options, request=request,
                                 lane="pictures")
    except (ClientDisconnect, ClientGone):
        return Response(status_code=CLIENT_CLOSED)
    return Response(answer, media_type="application/json")


def picture_options(state: ServiceState, form: CountForm) -> CountingOptions:
    """How to count the picture of ``form``; 400 when it asks for a restoration the checkpoint cannot make."""
    if form.restore and not state.counter.has_restoration:
        raise ApiError(400, f"restore: {state.settings.shown_name} has no restoration module, so it cannot "
                            "restore pictures")
    return form.options(state.counter.threshold)


def count_picture(state: ServiceState, data: bytes, name: str, options: CountingOptions) -> bytes:
    """On the network's thread: decode the picture ``data`` (file ``name``), count it and encode the answer
    (thousands of points take a while: off the event loop)."""
    started = time.perf_counter()
    try:
        rgb = decode_checked(data, name, state.counter.max_pixels)  # check_encoded ran before it queued
    except ImageReadError as error:
        raise ApiError(400, str(error)) from None
    result = state.counter.predict(rgb, options)
    seconds = time.perf_counter() - started
    state.statistics.record(seconds)
    return json_bytes(count_answer(result, threshold=options.threshold, seconds=seconds))


@router.post("/api/recount", summary="Count again at another threshold or with other zones",
             openapi_extra=RecountBody.openapi_body("application/json"), responses={200: documented(RecountAnswer)})
async def recount(request: Request, state: Service):
    """Without the network: the points of an earlier answer (counted at a lower threshold; at most
    100,000) kept above ``threshold``, outside ``exclude``, and counted per zone, by the same rules as
    ``/api/count``. With ``density`` also the density heatmap as a transparent PNG layer (data URL) and
    its ``peak`` (people per pixel at the top of its colour scale)."""
    if state.cpu.full("default"):
        raise state.busy(state.cpu, "default")
    try:
        body = await read_body(request, MAX_RECOUNT_BYTES)
        answer = await state.run(state.cpu, recount_picture, state, body, request=request)
    except (ClientDisconnect, ClientGone):
        return Response(status_code=CLIENT_CLOSED)
    return Response(answer, media_type="application/json")


def recount_picture(state: ServiceState, body: bytes) -> bytes:
    """On the CPU worker: ``/api/recount``'s answer to the JSON ``body``, encoded."""
    try:
        fields = json.loads(body)
    except ValueError:
        raise ApiError(400, "expected a JSON body") from None
    if not isinstance(fields, dict):
        raise ApiError(400, "expected a JSON object")
    request = RecountBody.parse(fields, context={"max_pixels": state.counter.max_pixels})
    options = request.options(state.counter.threshold)
    scores = request.points[:, 2].astype(np.float32)
    # The network's rule: a float32 score above the threshold in float32 (Counter.select).
    keep = scores > np.float32(options.threshold)
    points, scores, zones = count_points(request.points[keep, :2], scores[keep], options.zones, options.exclusions)
    density = {}  # "density" only when asked for: absent, not null, otherwise
    if request.density:
        density["density"] = density_answer(points, height=request.height, width=request.width)
    return json_bytes(RecountAnswer.model_construct(count=int(points.shape[0]), **point_fields(points, scores),
                                                    zones=zones, threshold=options.threshold, **density))
