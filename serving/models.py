"""The API's requests and answers, declared once: the request models parse and check what a client sent
(after ``uploads.read_form`` or ``read_body`` read it within bounds) and give ``/docs`` its request
schemas; the answer models give ``/docs`` its answer schemas and examples, and the routes build their
answers with them (``serving.answers`` encodes them, keys in declaration order).

A request model declares its fields in the order they are checked, so that the first problem Pydantic
lists is the one answered (``fields.parse_fields``). Answers are built with ``model_construct``: an
answer of 100,000 points is not validated again."""
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from inference.job import CountingOptions

from . import fields
from .fields import parse_fields

# Each field type: how a value is checked (serving.fields) and the type /docs shows for it.
Upload = Annotated[bytes, PlainValidator(fields.uploaded_file, json_schema_input_type=bytes)]
Threshold = Annotated[float, PlainValidator(fields.threshold_value, json_schema_input_type=float)]
# In a multipart form, polygons are JSON text; in a JSON body, an object (or JSON text).
PolygonsText = Annotated[dict, PlainValidator(fields.polygons_value, json_schema_input_type=str)]
ExclusionsText = Annotated[dict, PlainValidator(fields.exclusions_value, json_schema_input_type=str)]
Polygons = Annotated[dict, PlainValidator(fields.polygons_value, json_schema_input_type=dict[str, list[list[float]]])]
Exclusions = Annotated[dict, PlainValidator(fields.exclusions_value,
                                            json_schema_input_type=dict[str, list[list[float]]])]
Flag = Annotated[bool, PlainValidator(fields.flag_value, json_schema_input_type=bool)]
WholeNumber = Annotated[int, PlainValidator(fields.whole_number, json_schema_input_type=int)]
Truthy = Annotated[bool, PlainValidator(fields.truthy, json_schema_input_type=bool)]
DensitySide = Annotated[int, PlainValidator(fields.density_side, json_schema_input_type=int)]
Points = Annotated[np.ndarray, PlainValidator(fields.points_value, json_schema_input_type=list[list[float]])]

ZONES_HELP = ('JSON of named polygons in the picture\'s pixels, as run_test.py --zones: '
              '{"gate": [[x, y], [x, y], [x, y]], ...}')


class RequestFields(BaseModel):
    """A request's fields; ``parse`` reads them (``ApiError`` naming the first problem)."""

    @classmethod
    def parse(cls, data: dict, context: dict = None) -> "RequestFields":
        return parse_fields(cls, data, context=context)

    @classmethod
    def text_fields(cls) -> tuple:
        """The names of a form's text fields, in order (all but ``file``)."""
        return tuple(name for name in cls.model_fields if name != "file")

    @classmethod
    def openapi_body(cls, media_type: str) -> dict:
        """``openapi_extra`` of a route that reads this request as ``media_type`` itself."""
        return {"requestBody": {"required": True, "content": {media_type: {"schema": cls.model_json_schema()}}}}


class CountForm(RequestFields):
    """``POST /api/count``: a multipart form."""

    file: Upload = Field(description="the picture (JPEG, PNG, BMP, TIFF, WebP, ...)")
    threshold: Threshold = Field(None, description="a point counts when its score exceeds this (default: "
                                                   "serve.py --threshold)")
    zones: PolygonsText = Field(None, description=ZONES_HELP + "; the answer's zones gives each one's count")
    # Checked when absent too: that check counts the corners of all the polygons.
    exclude: ExclusionsText = Field(None, validate_default=True, description="the same form: points inside any of "
                                                                             "these polygons are dropped first")
    restore: Flag = Field(False, description="also return the restored view (checkpoints with the restoration "
                                             "module)")

    def options(self, default_threshold: float) -> CountingOptions:
        """How to count the picture; ``default_threshold`` when the form gives none."""
        return CountingOptions(threshold=default_threshold if self.threshold is None else self.threshold,
                               zones=self.zones, exclusions=self.exclude, restore=self.restore)


class VideoForm(RequestFields):
    """``POST /api/videos``: a multipart form."""

    file: Upload = Field(description="the video (mp4, avi, mkv, mov, webm, ...)")
    threshold: Threshold = Field(None, description="as for /api/count")
    zones: PolygonsText = Field(None, description=ZONES_HELP)
    exclude: ExclusionsText = Field(None, validate_default=True, description="as for /api/count")  # as CountForm's
    frame_stride: WholeNumber = Field(1, description="count every N-th frame (default 1)")

    def options(self, default_threshold: float) -> CountingOptions:
        """How to count the video's frames; ``default_threshold`` when the form gives none."""
        return CountingOptions(threshold=default_threshold if self.threshold is None else self.threshold,
                               zones=self.zones, exclusions=self.exclude, frame_stride=self.frame_stride)


class RecountBody(RequestFields):
    """``POST /api/recount``: a JSON object."""

    # parse() needs the context {"max_pixels": the picture limit} (fields.density_side). A recount without
    # points counts none, but a client has no other reason to call it: the docs ask for them.
    model_config = ConfigDict(json_schema_extra={"required": ["points"]})

    points: Points = Field([], validate_default=True, description="[[x, y, score], ...]: the points of an "
                                                                  "/api/count answer made at a lower threshold")
    density: Truthy = Field(False, description="also return the density heatmap layer (needs width and height)")
    width: DensitySide = Field(None, validate_default=True, description="the picture's width in pixels (for "
                                                                        "density)")
    height: DensitySide = Field(None, validate_default=True, description="the picture's height in pixels (for "
                                                                         "density)")
    zones: Polygons = Field(None, description='{"gate": [[x, y], [x, y], [x, y]], ...}')
    exclude: Exclusions = Field(None, validate_default=True,  # as CountForm's
                                description="the same form: points inside are dropped first")
    threshold: Threshold = Field(None, description="keep the points scoring above this (default: serve.py "
                                                   "--threshold)")

    def options(self, default_threshold: float) -> CountingOptions:
        """How to count the points again; ``default_threshold`` when the body gives none."""
        return CountingOptions(threshold=default_threshold if self.threshold is None else self.threshold,
                               zones=self.zones, exclusions=self.exclude)


def examples(*values: dict) -> ConfigDict:
    """An answer model's configuration with its example answers (the first is shown at ``/docs``)."""
    return ConfigDict(json_schema_extra={"examples": list(values)})


POINTS_HELP = ("[[x, y, score], ...]: pixels of the picture and person scores, above the threshold and outside "
               "the exclusions; at most 100,000, the highest scoring, in their usual order")


class CountAnswer(BaseModel):
    """``POST /api/count``'s answer."""

    model_config = examples({"count": 2, "points": [[412.5, 233.1, 0.93], [430.2, 240.8, 0.71]],
                             "points_truncated": False, "zones": {"gate": 1}, "width": 1024, "height": 768,
                             "threshold": 0.5, "milliseconds": 812.4})

    count: int = Field(description="people counted: every point, also when points lists only some")
    points: list[list[float]] = Field(description=POINTS_HELP)
    points_truncated: bool = Field(description="true when there were more points than points lists")
    zones: dict[str, int] = Field(description="each zone's count of the points (after the exclusions)")
    width: int = Field(description="the picture's width in pixels")
    height: int = Field(description="the picture's height in pixels")
    threshold: float = Field(description="the threshold counted with")
    milliseconds: float = Field(description="milliseconds the picture took to decode and count")
    restored: str = Field(None, description="with restore only: the scene without the weather, a JPEG data: URL")


class DensityLayer(BaseModel):
    """A recount's density heatmap."""

    image: str = Field(description="a transparent PNG layer of the heatmap (data: URL), at most 1024 pixels a side")
    peak: float = Field(description="people per pixel at the top of its colour scale")


class RecountAnswer(BaseModel):
    """``POST /api/recount``'s answer."""

    model_config = examples({"count": 1, "points": [[412.5, 233.1, 0.93]], "points_truncated": False,
                             "zones": {"gate": 1}, "threshold": 0.8,
                             "density": {"image": "data:image/png;base64,...", "peak": 0.0021}})

    count: int = Field(description="people counted: every point kept, also when points lists only some")
    points: list[list[float]] = Field(description=POINTS_HELP)
    points_truncated: bool = Field(description="true when there were more points than points lists")
    zones: dict[str, int] = Field(description="each zone's count of the points (after the exclusions)")
    threshold: float = Field(description="the threshold counted with")
    density: DensityLayer = Field(None, description="with density only: the heatmap")


class FrameCountAnswer(BaseModel):
    """One counted frame of a video."""

    frame: int = Field(description="the frame's index in the video, from 0")
    time_s: float = Field(description="its time from the start in seconds, rounded to milliseconds")
    count: int = Field(description="people counted in it")
    zones: dict[str, int] = Field(description="each zone's count (after the exclusions)")


class VideoJobAnswer(BaseModel):
    """A video job, as ``POST /api/videos`` and ``GET /api/videos/{id}`` give it."""

    model_config = examples({
        "id": "k3J9aQ0xZm1q", "name": "street.mp4", "state": "counting", "error": None, "frames_done": 2,
        "frames_total": 250, "fps": 25.0, "threshold": 0.5, "zones": ["gate"], "since": 0,
        "counts": [{"frame": 0, "time_s": 0.0, "count": 41, "zones": {"gate": 12}},
                   {"frame": 1, "time_s": 0.04, "count": 43, "zones": {"gate": 12}}]})

    id: str = Field(description="the job's id, for GET and DELETE /api/videos/{id}")
    name: str = Field(description="the uploaded file's name (at most 100 characters)")
    state: str = Field(description="waiting, counting, done, failed or cancelled")
    error: str | None = Field(description="why it failed or stopped early, or what was left out; null if nothing")
    frames_done: int = Field(description="frames counted so far")
    frames_total: int | None = Field(description="frames it will count, as the file declares; null if unknown")
    fps: float | None = Field(description="frames per second the file declares")
    threshold: float = Field(description="the threshold counted with")
    zones: list[str] = Field(description="the zones' names, in order")
    since: int = Field(description="the index in the counted frames of the first of counts (?since=N)")
    counts: list[FrameCountAnswer] = Field(description="the counted frames from the since-th on")


class JobStopped(BaseModel):
    """``DELETE /api/videos/{id}``'s answer."""

    model_config = examples({"id": "k3J9aQ0xZm1q", "state": "cancelled"})

    id: str = Field(description="the job's id")
    state: str = Field(description="cancelled, or the state it had already ended in (done, failed)")


class HealthAnswer(BaseModel):
    """``GET /api/health``'s answer."""

    model_config = examples({"status": "ok", "model": "Hazy_JHU", "device": "cpu", "mode": "exact",
                             "restoration": False, "threshold": 0.5, "queue": 0, "busy": False, "max_queue": 16,
                             "max_upload_mb": 50.0, "max_megapixels": 50.0, "pictures_counted": 12,
                             "videos_active": 0, "max_videos": 2, "max_video_s": 600.0, "auth": False})

    status: str = Field(description="ok")
    model: str = Field(description="the checkpoint's file name")
    device: str = Field(description="where the network runs (cpu, cuda, ...)")
    mode: str = Field(description="exact, or fast (serve.py --amp)")
    restoration: bool = Field(description="whether the checkpoint has the restoration module (restore)")
    threshold: float = Field(description="the default threshold (serve.py --threshold)")
    queue: int = Field(description="pictures waiting for the network")
    busy: bool = Field(description="whether the network is counting a picture or frame now")
    max_queue: int = Field(description="pictures that may wait (serve.py --max_queue)")
    max_upload_mb: float = Field(description="the largest upload in MB (serve.py --max_upload_mb)")
    max_megapixels: float = Field(description="the largest picture in megapixels (serve.py --max_megapixels)")
    pictures_counted: int = Field(description="pictures counted since the server started")
    videos_active: int = Field(description="video jobs waiting or counting")
    max_videos: int = Field(description="video jobs that may wait or count at once (serve.py --max_videos)")
    max_video_s: float = Field(description="the longest video counted in seconds (serve.py --max_video_s)")
    auth: bool = Field(description="whether the API needs the token")


class CameraAnswer(BaseModel):
    """A camera of the site file, as ``GET /api/cameras`` lists it."""

    model_config = examples({"name": "north", "state": "live", "since": "2026-12-07T18:00:02.113Z",
                             "reason": "", "last_counted": "2026-12-07T21:14:05.020Z", "count": 87,
                             "zones": {"gate": 31}, "every_s": 5.0, "interval_s": 5.1, "frames_counted": 2291})

    name: str = Field(description="the camera's name in the site file")
    state: str = Field(description="live, reconnecting (also while first connecting) or failed")
    since: str = Field(description="when it entered that state, ISO 8601 UTC")
    reason: str = Field(description="why it is reconnecting or failed; empty while live")
    last_counted: str | None = Field(description="when its newest counted frame arrived, ISO 8601 UTC; null before")
    count: int | None = Field(description="people in the newest counted frame; null before the first")
    zones: dict[str, int] = Field(description="each zone's count in that frame (after the exclusions)")
    every_s: float = Field(description="how often it should be counted (site file), seconds")
    interval_s: float | None = Field(description="how often it was counted lately (a moving average), seconds: "
                                                 "above every_s when the machine cannot keep up")
    frames_counted: int = Field(description="frames counted since the server started")


class CameraDetail(CameraAnswer):
    """``GET /api/cameras/{name}``: the camera and its newest counted frame."""

    model_config = examples({**CameraAnswer.model_config["json_schema_extra"]["examples"][0], "width": 1280,
                             "height": 720, "points": [[412.5, 233.1, 0.93]], "points_truncated": False,
                             "polygons": {"gate": [[0, 0], [400, 0], [400, 300]]}, "exclusions": {},
                             "frame": "/api/cameras/north/frame.jpg"})

    width: int | None = Field(description="the counted frame's width in pixels")
    height: int | None = Field(description="the counted frame's height in pixels")
    points: list[list[float]] = Field(description=POINTS_HELP)
    points_truncated: bool = Field(description="true when there were more points than points lists")
    polygons: dict[str, list[list[float]]] = Field(description="the camera's zones, in pixels of the frame")
    exclusions: dict[str, list[list[float]]] = Field(description="the camera's exclusions, in pixels")
    frame: str | None = Field(description="where the counted frame is, as a JPEG; null before the first")


class HistoryRow(BaseModel):
    """One stored count, or the mean of a bucket of them."""

    time: str = Field(description="ISO 8601 UTC: the count's time, or the start of its bucket")
    count: float = Field(description="people counted (a bucket's mean)")
    zones: dict[str, float] = Field(description="each zone's count (a bucket's mean)")


class HistoryAnswer(BaseModel):
    """``GET /api/cameras/{name}/history``."""

    model_config = examples({"camera": "north", "every_s": 60, "rows": [
        {"time": "2026-12-07T18:00:00.000Z", "count": 41.5, "zones": {"gate": 12.25}}]})

    camera: str = Field(description="the camera's name")
    every_s: float | None = Field(description="the width of the buckets rows are means of; null: every count")
    rows: list[HistoryRow] = Field(description="the counts in time order")


class AlertAnswer(BaseModel):
    """An alert, as ``GET /api/alerts`` lists it (newest first)."""

    model_config = examples({"camera": "north", "zone": "gate", "above": 50, "raised": "2026-12-07T20:01:10.000Z",
                             "cleared": None, "peak": 64})

    camera: str = Field(description="the camera's name")
    zone: str = Field(description="the zone, or total for the whole view")
    above: float = Field(description="the count it stayed above (site file)")
    raised: str = Field(description="when it was raised, ISO 8601 UTC")
    cleared: str | None = Field(description="when it cleared, ISO 8601 UTC; null while it lasts")
    peak: float = Field(description="the highest count while it lasted")


class HistoryQuery(BaseModel):
    """``GET /api/cameras/{name}/history``'s query parameters."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: str = Field(None, alias="from", description="ISO 8601 (a time without a zone is UTC); default 6 hours "
                                                        "before to")
    end: str = Field(None, alias="to", description="ISO 8601; default now")
    every: float = Field(None, description="the width of the buckets rows are means of, seconds (default: every "
                                           "count, or buckets of their own for long ranges)")
    format: str = Field("json", description="json or csv")


class ErrorAnswer(BaseModel):
    """Every refusal's answer, with a 4xx status (5xx for a failure of the server)."""

    model_config = examples({"error": "a line naming the problem"})

    error: str = Field(description="one line naming the problem")


def documented(model: type[BaseModel], description: str = "an example") -> dict:
    """A ``responses=`` entry of a route answering ``model``, with its first example."""
    example = model.model_config["json_schema_extra"]["examples"][0]
    return {"model": model, "description": description, "content": {"application/json": {"example": example}}}
