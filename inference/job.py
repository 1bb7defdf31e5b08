"""What a count is asked for and what it gives: ``CountingOptions`` (decided once, from the command line or
from an API request) and ``CountResult`` (what ``Counter.predict`` returns for one picture or frame)."""
from dataclasses import dataclass, field

import numpy as np

from .zones import check_polygons


@dataclass(frozen=True)
class CountingOptions:
    """How pictures and videos are counted and what is kept of them.

    ``threshold``: a point counts when its softmax score exceeds it (``None``: the counter's own).
    ``zones`` and ``exclusions``: name -> polygon ``[[x, y], ...]`` in the picture's pixels
    (``inference.zones``); checked here once, held as float64 ``[V, 2]`` arrays. ``restore``: also give
    the restoration module's view of the scene. ``density``: also write density maps, Gaussians of
    ``density_sigma`` pixels (``None``: adaptive). ``frame_stride``: count every N-th frame of a video.
    ``frame_points``: write each counted frame's points. ``points_json``: write each picture's points as
    ``points/<stem>.json`` too. ``reconnect``: reopen a camera or stream that drops or stalls, with backoff,
    rather than ending (``inference.video_io.VideoSource``).
    """

    threshold: float = None
    zones: dict = field(default_factory=dict)
    exclusions: dict = field(default_factory=dict)
    restore: bool = False
    density: bool = False
    density_sigma: float = None
    frame_stride: int = 1
    frame_points: bool = False
    points_json: bool = False
    reconnect: bool = False

    def __post_init__(self):
        # Checked once here rather than on every frame; a checked dict passes through unchanged.
        object.__setattr__(self, "zones", check_polygons(self.zones or {}, "zones"))
        object.__setattr__(self, "exclusions", check_polygons(self.exclusions or {}, "exclude"))
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be at least 1, got {self.frame_stride}")


@dataclass
class CountResult:
    """One counted picture or frame.

    ``points``: float32 ``[N, 2]`` ``(x, y)`` pixels of the picture (not clipped to it, as upstream);
    ``scores``: float32 ``[N]`` softmax person scores, each above the threshold; both after the
    exclusions. ``zones``: name -> how many of the points lie inside that zone (``{}`` without zones).
    ``height`` x ``width``: the picture's size in pixels. ``restored``: the restoration module's view,
    ``H x W x 3`` uint8 RGB, when it was asked for.
    """

    points: np.ndarray
    scores: np.ndarray
    zones: dict
    height: int
    width: int
    restored: np.ndarray = None

    @property
    def count(self) -> int:
        """How many people: the number of points."""
        return int(self.points.shape[0])


@dataclass(frozen=True)
class FrameCount:
    """The counts of one counted frame of a video: its ``frame`` index in the source, ``time_s`` (seconds
    from the start), ``count`` and ``zones`` (name -> count), as ``counts.csv`` and the service list them."""

    frame: int
    time_s: float
    count: int
    zones: dict

    @classmethod
    def of(cls, frame: int, time_s: float, result: CountResult) -> "FrameCount":
        return cls(frame=frame, time_s=time_s, count=result.count, zones=result.zones)
