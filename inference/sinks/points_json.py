"""``points/<stem>.json`` (``--save_points_json``): a picture's count, zones, size and points in one JSON
file, in the form of ``serve.py``'s ``/api/count`` answer, for tools that read JSON rather than CSV."""
import json

from .base import CountedPicture, Sink


class PointsJson(Sink):
    """``points/<stem>.json``: ``{"image", "count", "zones", "width", "height", "points": [[x, y, score],
    ...]}``, pixels of the picture; points and scores are the float32 values as computed."""

    folders = ("points",)

    def add(self, counted: CountedPicture) -> None:
        result = counted.result
        points = [[x, y, score] for (x, y), score in zip(result.points.tolist(), result.scores.tolist())]
        content = {"image": counted.name, "count": result.count, "zones": result.zones, "width": result.width,
                   "height": result.height, "points": points}
        path = self.folder / "points" / f"{counted.stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
