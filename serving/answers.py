"""Answers as bytes: the answer models' fields in declaration order, encoded as Starlette's ``JSONResponse``
would, points in pieces (off the event loop: they are long), pictures as ``data:`` URLs, and CSV text."""
import base64
import csv
import io
import json

import cv2
import numpy as np
from pydantic import BaseModel

from inference.density import density_map
from inference.job import CountResult
from inference.visualize import density_layer

from .fields import MAX_ANSWER_POINTS
from .models import CountAnswer, DensityLayer

# Points encoded to JSON per call (json_bytes).
JSON_ROWS_AT_ONCE = 5000
# The density layer a page gets is at most this many pixels per side: it is smooth, and a phone need not
# fetch a 12 MP overlay.
DENSITY_LAYER_SIDE = 1024
# Status of an answer nobody receives (the client disconnected), for the access log.
CLIENT_CLOSED = 499


def count_answer(result: CountResult, threshold: float, seconds: float) -> CountAnswer:
    """``/api/count``'s answer for a picture counted at ``threshold`` in ``seconds``."""
    # "restored" only when asked for: absent, not null, otherwise.
    restored = {} if result.restored is None else {"restored": data_url(result.restored, ".jpg")}
    return CountAnswer.model_construct(count=result.count, **point_fields(result.points, result.scores),
                                       zones=result.zones, width=result.width, height=result.height,
                                       threshold=threshold, milliseconds=round(1000 * seconds, 1), **restored)


def point_fields(points: np.ndarray, scores: np.ndarray) -> dict:
    """``points`` (float64 ``[N, 3]`` rows ``[x, y, score]``: ``points`` ``[N, 2]`` and ``scores`` ``[N]``,
    float32 values exactly as computed) and whether they were cut to the ``MAX_ANSWER_POINTS`` highest
    scoring (kept in their order), ``points_truncated``."""
    truncated = len(scores) > MAX_ANSWER_POINTS
    if truncated:
        kept = np.sort(np.argsort(-scores, kind="stable")[:MAX_ANSWER_POINTS])
        points, scores = points[kept], scores[kept]
    return {"points": np.column_stack([points, scores]).astype(np.float64), "points_truncated": truncated}


def density_answer(points: np.ndarray, height: int, width: int) -> DensityLayer:
    """The density heatmap of ``points`` (``[N, 2]`` pixels) over a ``height`` x ``width`` picture as a PNG
    layer and its peak."""
    layer, peak = density_layer(density_map(points, height, width))
    scale = DENSITY_LAYER_SIDE / max(height, width)
    if scale < 1:
        layer = cv2.resize(layer, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    return DensityLayer.model_construct(image=data_url(layer, ".png"), peak=peak)


def answer_fields(answer: BaseModel) -> dict:
    """The fields an answer was built with, in its model's order (those left out stay out), nested answers
    likewise: the dict ``json_bytes`` encodes."""
    return {name: plain_value(getattr(answer, name)) for name in type(answer).model_fields
            if name in answer.model_fields_set}


def plain_value(value):
    """A field's value for ``json_bytes``: answers (also in lists) as their fields, the rest as it is."""
    if isinstance(value, BaseModel):
        return answer_fields(value)
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return [answer_fields(item) for item in value]
    return value


def json_bytes(answer: BaseModel | dict) -> bytes:
    """``answer`` as JSONResponse would encode it; its ``points`` (an ``[N, 3]`` array) in rows of
    ``JSON_ROWS_AT_ONCE``: each encoding call holds the interpreter's lock throughout, and the event loop
    must get it back within milliseconds."""
    if isinstance(answer, BaseModel):
        answer = answer_fields(answer)
    points = answer.get("points")
    if not isinstance(points, np.ndarray):
        return json_text(answer).encode()
    head = json_text({**answer, "points": []})
    rows = ",".join(json_text(points[start:start + JSON_ROWS_AT_ONCE].tolist())[1:-1]
                    for start in range(0, len(points), JSON_ROWS_AT_ONCE))
    # "count" (a number) comes first, so the first '"points":[]' is the points' own.
    return head.replace('"points":[]', f'"points":[{rows}]', 1).encode()


def json_text(value) -> str:
    """``value`` as compact JSON, as Starlette's ``JSONResponse`` writes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def data_url(rgb: np.ndarray, suffix: str) -> str:
    """An RGB(A) picture as a ``data:`` URL (JPEG or PNG by ``suffix``)."""
    code = cv2.COLOR_RGBA2BGRA if rgb.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(rgb, code))
    kind = "jpeg" if suffix == ".jpg" else "png"
    return f"data:image/{kind};base64," + base64.b64encode(encoded.tobytes()).decode()


def csv_text(rows) -> str:
    """The CSV text of ``rows()``, a callable giving a list of rows."""
    text = io.StringIO()
    csv.writer(text).writerows(rows())
    return text.getvalue()
