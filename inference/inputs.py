"""What ``run_test.py --input`` names: the files of a folder (or one file), their output names, why a
file is skipped, pictures decoded in loader workers, and video sources (files, cameras, streams)."""
import re
from pathlib import Path

from torch.utils.data import Dataset

from crowd_datasets.image_io import ImageReadError, is_image_file, printable, read_rgb, unique_names

from .video_io import is_live_source, is_video_file


def list_inputs(path: Path) -> list:
    """An image or video file, or the non-hidden entries of a folder (sorted by name; sub-folders and broken
    links too, so that they are reported as skipped rather than passed over)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith("."))
    raise FileNotFoundError(f"--input {path}: no such file or folder (expected an image, a video, a folder of "
                            "them, a camera index or a stream URL)")


def output_stems(files: list) -> dict:
    """File -> the name its outputs go by, unique among ``files`` (``image_io.unique_names``, the rule
    datasets name their images by), so that no picture's outputs overwrite another's."""
    return dict(zip(files, unique_names(files)))


def skip_reason(path: Path):
    """Why ``path`` from ``--input`` is not counted, or ``None`` for an image or video file."""
    if path.is_dir():
        return "a folder (sub-folders are not searched)"
    if not path.exists():
        return "a broken link" if path.is_symlink() else "no such file"
    if not is_image_file(path) and not is_video_file(path):
        return f"not an image or video file (suffix {path.suffix or 'none'})"
    return None


class PictureFiles(Dataset):
    """Files of ``--input`` (those at ``indices`` of ``files``), decoded in the loader's workers while
    the network runs: item ``i`` is ``(indices[i], H x W x 3 uint8 RGB array or None, None or why the
    file is skipped)``; a video file is ``(indices[i], None, None)``, left to ``count_video``."""

    def __init__(self, files: list, indices: list, max_pixels: int):
        self.files, self.indices, self.max_pixels = files, indices, max_pixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple:
        index = self.indices[position]
        path = self.files[index]
        reason = skip_reason(path)
        if reason is not None or is_video_file(path):
            return index, None, reason
        try:
            return index, read_rgb(path, self.max_pixels), None
        except ImageReadError as error:
            return index, None, error.reason


def as_read(item):
    """The loader's collate function: items pass through unchanged (arrays stay arrays)."""
    return item


def video_source(text: str):
    """``--input`` as a video: a camera index or stream URL (``str``), a video file (``Path``), or
    ``None`` for a picture or a folder. A file or folder of that name comes before a camera or URL."""
    path = Path(text)
    if is_live_source(text) and not path.exists():
        return text
    return path if is_video_file(path) and not path.is_dir() else None


def source_name(source) -> str:
    """How a video source is named in printouts: a file's name, ``camera N``, or a URL without the
    user name and password it may carry."""
    if isinstance(source, Path):
        return printable(source.name)
    return f"camera {source}" if source.isdigit() else re.sub(r"//[^/@]*@", "//", source)
