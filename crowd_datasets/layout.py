"""Where a dataset's files are: upstream's list files, the plain folder layout (images with annotations
found by stem, ShanghaiTech's ``ground-truth/``), clean ``HR/`` pairs, and generated demo data.
``find_samples`` is the one walk from a dataset name to its ``SampleFiles``."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .demo import ensure_demo
from .image_io import IMAGE_SUFFIXES, is_image_file
from .registry import SPLITS, DatasetEntry, get_entry


@dataclass(frozen=True)
class SampleFiles:
    """The files of one image: the (degraded) image, its annotation, and its clean pair if any."""

    image: Path
    annotation: Path
    clean: Optional[Path] = None


def clean_pair(image: Path) -> Optional[Path]:
    """The haze-free image with the same file name in the sibling ``HR/`` folder, if it exists."""
    candidate = image.parent.parent / "HR" / image.name
    return candidate if candidate.is_file() else None


def samples_from_list(list_path: Path, data_root: Path) -> list:
    """Read an upstream list file: one ``image_path annotation_path`` pair per line, both relative to
    ``data_root`` (or absolute). Every named file must exist; errors give the list's line number."""
    if not list_path.is_file():
        raise FileNotFoundError(f"list file not found: {list_path} (expected lines 'image_path annotation_path')")
    samples = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{list_path}, line {number}: expected 'image_path annotation_path', got {line!r}")
        image, annotation = (data_root / field for field in fields)
        for path, what in ((image, "image"), (annotation, "annotation")):
            if not path.is_file():
                raise FileNotFoundError(f"{list_path}, line {number}: {what} not found: {path}")
        samples.append(SampleFiles(image, annotation, clean_pair(image)))
    if not samples:
        raise ValueError(f"list file {list_path} names no images")
    return samples


def samples_from_folder(image_dir: Path, data_root: Path = None, entry=None) -> list:
    """Every image in ``image_dir`` (sorted by name), each with the annotation found by its stem."""
    images = sorted(p for p in image_dir.iterdir() if is_image_file(p))
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    samples = []
    for image in images:
        candidates = annotation_candidates(image, data_root, entry)
        annotation = next((path for path in candidates if path.is_file()), None)
        if annotation is None:
            raise FileNotFoundError(f"no annotation for image {image}; looked for "
                                    + ", ".join(str(path) for path in candidates))
        samples.append(SampleFiles(image, annotation, clean_pair(image)))
    return samples


def count_clean_pairs(samples: list) -> int:
    """How many of ``samples`` (``SampleFiles``) have a clean pair."""
    return sum(sample.clean is not None for sample in samples)


def list_file(data_root: Path, entry: DatasetEntry, split: str) -> Path:
    """Upstream's list file for ``split``: ``crowd_datasets/<folder>/<split>.list``."""
    return data_root / "crowd_datasets" / entry.folder / f"{split}.list"


def image_folder_candidates(data_root: Path, entry: DatasetEntry, split: str) -> list:
    """Folders that may hold ``split``'s images in the plain layout, most specific first."""
    return [data_root / "datasets" / entry.folder / f"{split}_data" / "images",
            data_root / entry.folder / f"{split}_data" / "images"]


def annotation_candidates(image: Path, data_root: Path = None, entry: DatasetEntry = None) -> list:
    """Where the annotation of ``image`` may be in the plain layout (found by the image's stem):
    beside it, in ``<split>_data/``, in ShanghaiTech's ``ground-truth/`` (``.txt`` or
    ``GT_<stem>.mat``), or in upstream's ``crowd_datasets/<folder>/<split>_data/``."""
    stem, split_dir = image.stem, image.parent.parent
    candidates = [image.with_suffix(".txt"), split_dir / f"{stem}.txt"]
    for name in ("ground-truth", "ground_truth", "annotations"):
        candidates += [split_dir / name / f"{stem}.txt", split_dir / name / f"GT_{stem}.mat"]
    if data_root is not None and entry is not None and entry.folder:
        candidates.append(data_root / "crowd_datasets" / entry.folder / split_dir.name / f"{stem}.txt")
    return candidates


UPSTREAM_LISTS_HINT = ("upstream's list and annotation files ship in the upstream code repository "
                       "(lizhangray/Dehaze-P2PNet, folder crowd_datasets/), not in the image downloads")


def find_samples(name: str, split: str, data_root, list_path=None, cache_dir=None) -> list:
    """The files of ``split`` ("train" or "test") of dataset ``name``.

    Registry datasets use upstream's list file when ``data_root`` has it, else the plain folder layout
    (``[datasets/]<folder>/<split>_data/images`` with annotations found by stem). ``Custom`` needs
    ``list_path``. Demo datasets are generated into ``cache_dir`` on first use. A combined entry
    (``parts``) holds its parts' files one after the other.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    entry = get_entry(name)
    if entry.parts:
        return [sample for part in entry.parts for sample in find_samples(part, split, data_root, list_path, cache_dir)]
    if entry.demo:
        root = ensure_demo(cache_dir, name)
        return samples_from_folder(root / f"{split}_data" / "images")
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"--data_root {data_root}: no such folder")
    if entry.folder is None:
        if list_path is None:
            raise ValueError(f"dataset {name} needs --{split}_list (lines 'image_path annotation_path', "
                             f"relative to --data_root)")
        return samples_from_list(data_root / list_path, data_root)
    upstream_list = list_file(data_root, entry, split)
    if upstream_list.is_file():
        return samples_from_list(upstream_list, data_root)
    folders = image_folder_candidates(data_root, entry, split)
    for folder in folders:
        if folder.is_dir():
            return samples_from_folder(folder, data_root, entry)
    raise FileNotFoundError(
        f"{name} {split} split not found under --data_root {data_root}: expected the list file {upstream_list} "
        f"beside the images in {folders[0]} ({UPSTREAM_LISTS_HINT}), or a plain folder {folders[0]} with one "
        "annotation per image (<stem>.txt beside it or in ../ground-truth/)")
