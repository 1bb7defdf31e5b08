"""What a dataset evaluation keeps (``run_test.py --dataset_file X --output_dir D``): each test image's
predicted points ``D/predictions/<stem>.csv`` (``x,y,score``) and true points ``D/truth/<stem>.csv``
(``x,y``), so that results can be compared and plotted later without running the network again; and from
them the result files NWPU-Crowd's benchmark takes (``--nwpu_submission``)."""
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..job import CountResult
from ..outputs import write_points_csv
from .base import Sink


@dataclass(frozen=True)
class EvaluatedPicture:
    """A test image of a dataset: its ``stem`` (the image id), what was counted (``result``) and its true
    head points (``truth``, float ``[G, 2]`` ``(x, y)`` pixels)."""

    stem: str
    result: CountResult
    truth: np.ndarray


class PredictionFiles(Sink):
    """``predictions/<stem>.csv`` and ``truth/<stem>.csv`` of every evaluated image."""

    folders = ("predictions", "truth")

    def add(self, evaluated: EvaluatedPicture) -> None:
        result = evaluated.result
        write_points_csv(self.folder / "predictions" / f"{evaluated.stem}.csv", result.points, result.scores)
        path = self.folder / "truth" / f"{evaluated.stem}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["x", "y"])
            writer.writerows((f"{x:.4f}", f"{y:.4f}") for x, y in np.asarray(evaluated.truth).tolist())

    def written(self) -> list:
        return [f"{self.folder / 'predictions'}/", f"{self.folder / 'truth'}/"]


def write_nwpu_submission(folder: Path) -> list:
    """NWPU-Crowd's two result files from ``folder/predictions/``: ``nwpu_counting.txt`` (a line
    ``<image id> <count>`` per image, the count with 4 decimals) and ``nwpu_localization.txt`` (``<image id>
    <N> x1 y1 ... xN yN``, whole pixels), images in the order of their ids. Returns the paths written."""
    lines_counts, lines_points = [], []
    for path in sorted((folder / "predictions").glob("*.csv"), key=image_id_order):
        with open(path, newline="") as file:
            points = [(float(row["x"]), float(row["y"])) for row in csv.DictReader(file)]
        lines_counts.append(f"{path.stem} {len(points):.4f}")
        lines_points.append(" ".join([path.stem, str(len(points)), *(f"{round(x)} {round(y)}" for x, y in points)]))
    written = []
    for name, lines in (("nwpu_counting.txt", lines_counts), ("nwpu_localization.txt", lines_points)):
        (folder / name).write_text("".join(line + "\n" for line in lines))
        written.append(folder / name)
    return written


def image_id_order(path: Path) -> tuple:
    """Ids that are numbers (NWPU's ``3610``) in numeric order, others after them by name."""
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)
