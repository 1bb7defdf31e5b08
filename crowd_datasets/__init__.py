"""Datasets: a registry of entries (data), where their files are (``layout``), one dataset class and
``build_dataset``, which takes explicit values (the scripts turn their arguments into them, see
``options``)."""
import os

from .decoding_limit import OPENCV_LIMIT_VARIABLE, opencv_pixel_limit

# OpenCV reads its pixel limit once, when the library loads: set here, before any module of the package imports
# cv2, it holds in every script that imports the package first (train.py, run_test.py, serve.py through
# inference) and in their subprocesses (DataLoader workers), which inherit the environment.
os.environ[OPENCV_LIMIT_VARIABLE] = opencv_pixel_limit(os.environ.get(OPENCV_LIMIT_VARIABLE))

from .dataset import CrowdDataset, EpochSampler, collate_crops, collate_images
from .layout import count_clean_pairs, find_samples
from .registry import DATASETS, get_entry
from .transforms import TrainTransform


def build_dataset(name: str, split: str, *, data_root=".", list_path=None, cache_dir=None, samples=None,
                  crop_size: int = None, num_crops: int = 4, seed: int = 42, use_clean: bool = False) -> CrowdDataset:
    """Dataset ``name``'s ``split``: whole images for "test", augmented crops for "train".

    ``samples`` (from :func:`find_samples`) skips the file search. Training takes ``num_crops`` crops
    of ``crop_size`` pixels per image (default: the registry entry's), augmented from ``seed`` (see
    ``CrowdDataset``), and the clean crops too when ``use_clean`` (the caller decides whether the
    restoration module trains; every image then needs a clean pair).
    """
    entry = get_entry(name)
    if samples is None:
        samples = find_samples(name, split, data_root, list_path, cache_dir)
    if split == "test":
        return CrowdDataset(samples)
    transform = TrainTransform(crop_size or entry.crop_size, num_crops=num_crops)
    return CrowdDataset(samples, transform=transform, use_clean=use_clean, seed=seed)


__all__ = ["CrowdDataset", "DATASETS", "EpochSampler", "build_dataset", "collate_crops", "collate_images",
           "count_clean_pairs", "find_samples", "get_entry"]
