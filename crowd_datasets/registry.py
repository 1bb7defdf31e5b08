"""Registry of datasets: each entry is data (where the files are, crop size, weather), never code."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetEntry:
    """Where a dataset lives and how it trains.

    ``folder`` is the dataset's path below ``datasets/`` (images) and ``crowd_datasets/`` (upstream's
    list and annotation files) under ``--data_root``; ``crop_size`` is the training crop in pixels;
    ``weather`` is ``"haze"``, ``"rain"`` or ``"clear"``; ``clean_pairs`` says whether haze-free
    ``HR/`` images exist for training the restoration module.
    """

    folder: Optional[str]
    crop_size: int = 128
    weather: str = "haze"
    clean_pairs: bool = True
    demo: bool = False
    test_images: Optional[int] = None


DATASETS = {
    "Hazy_JHU": DatasetEntry("Hazy_JHU", crop_size=96, test_images=50),
    "Hazy_SHTA": DatasetEntry("Hazy_ShanghaiTech/part_A", test_images=182),
    "Hazy_SHTB": DatasetEntry("Hazy_ShanghaiTech/part_B", test_images=316),
    "Hazy_SHARGBD": DatasetEntry("Hazy_ShanghaiTechRGBD", test_images=999),
    "Rainy_SHARGBD": DatasetEntry("Rainy_ShanghaiTechRGBD", weather="rain", test_images=999),
    "SHHA": DatasetEntry("ShanghaiTech/part_A", weather="clear", clean_pairs=False, test_images=182),
    "SHHB": DatasetEntry("ShanghaiTech/part_B", weather="clear", clean_pairs=False, test_images=316),
    "Custom": DatasetEntry(None, clean_pairs=False),
    "Demo_Hazy": DatasetEntry("Demo_Hazy", demo=True),
    "Demo_Rainy": DatasetEntry("Demo_Rainy", weather="rain", demo=True),
}


def get_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


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
