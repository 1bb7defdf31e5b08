"""The files written for a folder of pictures (``run_test.py --input photos/ --output_dir D``): ``counts.csv``,
``points/<stem>.csv``, ``vis/<stem>.jpg``, ``restored/<stem>.jpg`` and ``density/<stem>.npy|jpg``."""
import numpy as np

from crowd_datasets.image_io import write_rgb

from ..density import density_map
from ..outputs import CountsCsv, write_points_csv
from ..visualize import draw_density, draw_points, draw_zones
from .base import CountedPicture, Sink


class CountsTable(Sink):
    """``counts.csv``: ``image,count`` and a column per zone, a row per picture. ``streaming``: each row is
    written as it is counted (an interrupted run keeps them); otherwise (``torchrun``) every process's rows
    at the end, by the first process."""

    def __init__(self, folder, options, streaming: bool = True):
        super().__init__(folder, options, streaming)
        self.table = CountsCsv(folder / "counts.csv", ["image", "count", *options.zones], streaming=streaming)

    def add(self, counted: CountedPicture) -> None:
        self.table.add([counted.name, counted.result.count, *counted.result.zones.values()])

    def finish(self, rows: list) -> None:
        if not self.streaming:
            self.table.write_all([[row.name, row.count, *row.zones.values()] for row in rows])

    def close(self) -> None:
        self.table.close()

    def written(self) -> list:
        return [str(self.folder / "counts.csv")]


class PointFiles(Sink):
    """``points/<stem>.csv``: ``x,y,score`` per counted person, in pixels of the picture."""

    folders = ("points",)

    def add(self, counted: CountedPicture) -> None:
        write_points_csv(self.folder / "points" / f"{counted.stem}.csv", counted.result.points, counted.result.scores)

    def written(self) -> list:
        return [f"{self.folder / 'points'}/"]


class DrawnPictures(Sink):
    """``vis/<stem>.jpg``: the picture with its points drawn, the zones outlined and the exclusions shaded."""

    folders = ("vis",)

    def add(self, counted: CountedPicture) -> None:
        result = counted.result
        vis = draw_zones(draw_points(counted.rgb, result.points), self.options.zones, result.zones,
                         self.options.exclusions)
        write_rgb(self.folder / "vis" / f"{counted.stem}.jpg", vis)

    def written(self) -> list:
        return [f"{self.folder / 'vis'}/"]


class RestoredPictures(Sink):
    """``restored/<stem>.jpg``: the scene as the restoration module sees it without the weather."""

    folders = ("restored",)

    def add(self, counted: CountedPicture) -> None:
        write_rgb(self.folder / "restored" / f"{counted.stem}.jpg", counted.result.restored)


class DensityMaps(Sink):
    """``density/<stem>.npy`` (float32 ``[H, W]``, summing to the count; ``inference.density``) and
    ``density/<stem>.jpg`` (it over the picture)."""

    folders = ("density",)

    def add(self, counted: CountedPicture) -> None:
        result = counted.result
        density = density_map(result.points, result.height, result.width, self.options.density_sigma)
        (self.folder / "density").mkdir(parents=True, exist_ok=True)
        np.save(self.folder / "density" / f"{counted.stem}.npy", density)
        write_rgb(self.folder / "density" / f"{counted.stem}.jpg", draw_density(counted.rgb, density))
