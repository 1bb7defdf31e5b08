"""How each request field the API takes is read and checked: the validators of the request models
(``serving.models``). Each refuses a value with ``FieldError``, a ``ValueError`` (so that Pydantic collects
it) that carries the one-line message the client gets and its HTTP status; ``parse_fields`` turns the
first one into the ``ApiError`` answered."""
import json
from argparse import ArgumentTypeError

import numpy as np
from pydantic import BaseModel, ValidationError, ValidationInfo

from inference.zones import check_polygons
from util.values import at_least, probability

from .uploads import ApiError

# Corners of all the zones and exclusions of one request: each counted point is tested against each
# polygon's edges, so this bounds that work (the caps per polygon are inference.zones').
MAX_REQUEST_CORNERS = 4000
# An answer lists at most this many points (the highest scoring, flagged "points_truncated"; the counts
# count them all), and a recount takes at most as many: a picture at threshold 0 has millions of anchors.
MAX_ANSWER_POINTS = 100_000
# A client's value is echoed in its error cut to this many characters.
SHOWN_VALUE_CHARS = 40


class FieldError(ValueError):
    """A field's value refused: the one-line message answered, and the HTTP ``status`` (400; 413 for a value
    over a size limit)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_fields(model: type[BaseModel], data: dict, context: dict = None) -> BaseModel:
    """``data`` (field name -> value as sent) as a ``model``, or the ``ApiError`` of its first problem. A
    model declares its fields in the order they are checked, and Pydantic lists problems in that order."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        first = error.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            raise ApiError(cause.status, str(cause)) from None
        # Only the validators here check fields, so this is a safety net, in the form of RequestValidationError's.
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise ApiError(400, f"{where or 'request'}: {first.get('msg', 'invalid')}") from None


def shown_value(value) -> str:
    """A client's value as its error quotes it: the start of its text, in ``repr``'s quotes."""
    return repr(str(value)[:SHOWN_VALUE_CHARS])


def uploaded_file(value: bytes) -> bytes:
    """The ``file`` part, as ``uploads.read_form`` read it (it refuses a missing or empty one)."""
    if not isinstance(value, bytes):
        raise FieldError("no file: send the picture or video as a file part named 'file'")
    return value


def threshold_value(value) -> float | None:
    """A threshold: a number in [0, 1] (the rule of ``--threshold``); ``None`` (the counter's) when null."""
    if value is None:
        return None
    try:
        return probability(str(value))
    except (ArgumentTypeError, ValueError):
        raise FieldError(f"threshold: expected a number in [0, 1], got {shown_value(value)}") from None


def polygons_value(value, info: ValidationInfo) -> dict:
    """A ``zones`` or ``exclude`` field (JSON text, or an already parsed object; null: none) as checked
    polygons, name -> float64 ``[V, 2]``."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise FieldError(f"{info.field_name}: not JSON ({error}); expected "
                             "{\"name\": [[x, y], [x, y], [x, y]]}") from None
    try:
        return check_polygons(value, info.field_name)
    except ValueError as error:
        raise FieldError(str(error)) from None


def exclusions_value(value, info: ValidationInfo) -> dict:
    """``polygons_value`` of ``exclude``, declared after ``zones``: with them, at most ``MAX_REQUEST_CORNERS``
    corners in all."""
    exclusions = polygons_value(value, info)
    zones = info.data.get("zones") or {}
    corners = sum(len(polygon) for polygon in (*zones.values(), *exclusions.values()))
    if corners > MAX_REQUEST_CORNERS:
        raise FieldError(f"zones and exclude: {corners} corners in all, over the limit of {MAX_REQUEST_CORNERS} "
                         "a request may give")
    return exclusions


def flag_value(value, info: ValidationInfo) -> bool:
    """A form's true or false (1/0, yes/no, on/off too, in any case)."""
    if value is None:
        return False
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise FieldError(f"{info.field_name}: expected true or false, got {shown_value(value)}")


def whole_number(value, info: ValidationInfo) -> int:
    """A whole number of at least 1 (the rule of ``--frame_stride``)."""
    try:
        return at_least(1)(str(value))
    except (ArgumentTypeError, ValueError):
        raise FieldError(f"{info.field_name}: expected a whole number of at least 1, got {shown_value(value)}") \
            from None


def density_side(value, info: ValidationInfo) -> int | None:
    """A recount's ``width`` or ``height`` in pixels, declared after ``density``: needed with it (a missing
    one is an empty value), ignored without it. With ``height``, ``width x height`` is checked against the
    picture limit, ``info.context["max_pixels"]`` (413 past it)."""
    if not info.data.get("density"):
        return None
    side = whole_number("" if value is None else value, info)
    width = info.data.get("width")
    if info.field_name == "height" and width is not None and width * side > info.context["max_pixels"]:
        raise FieldError(f"width x height: {width} x {side} is over the picture limit", 413)
    return side


def points_value(value) -> np.ndarray:
    """A recount's ``points``, ``[[x, y, score], ...]`` of an earlier answer, as float64 ``[N, 3]``: at most
    ``MAX_ANSWER_POINTS`` (413 past it, told before they are read), each a finite number."""
    if isinstance(value, list) and len(value) > MAX_ANSWER_POINTS:
        raise FieldError(f"points: {len(value)} points, over the limit of {MAX_ANSWER_POINTS} a recount takes", 413)
    try:
        points = np.asarray(value, dtype=np.float64) if isinstance(value, list) and value else np.zeros((0, 3))
    except (TypeError, ValueError):
        points = None
    if points is None or not isinstance(value, list) or points.ndim != 2 or points.shape[1] != 3 \
            or not np.isfinite(points).all():
        raise FieldError("points: expected a list of [x, y, score] numbers (an earlier answer's points)")
    return points


def truthy(value) -> bool:
    """A JSON value as a yes or no, as JavaScript and Python read it (``"no"`` is yes)."""
    return bool(value)
