"""Datasets: a registry of entries (data), one dataset class and ``build_dataset``, which takes explicit
values (the scripts turn their arguments into them, see ``util.options``)."""
from pathlib import Path

from .dataset import CrowdDataset, EpochSampler, count_clean_pairs, samples_from_folder, samples_from_list
from .registry import DATASETS, SPLITS, get_entry, image_folder_candidates, list_file
from .transforms import TrainTransform

UPSTREAM_LISTS_HINT = ("upstream's list and annotation files ship in the upstream code repository "
                       "(lizhangray/Dehaze-P2PNet, folder crowd_datasets/), not in the image downloads")


def find_samples(name: str, split: str, data_root, list_path=None, cache_dir=None) -> list:
    """The files of ``split`` ("train" or "test") of dataset ``name``.

    Registry datasets use upstream's list file when ``data_root`` has it, else the plain folder layout
    (``[datasets/]<folder>/<split>_data/images`` with annotations found by stem). ``Custom`` needs
    ``list_path``. Demo datasets are generated into ``cache_dir`` on first use.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    entry = get_entry(name)
    if entry.demo:
        from .demo import ensure_demo

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


__all__ = ["CrowdDataset", "DATASETS", "EpochSampler", "build_dataset", "count_clean_pairs", "find_samples",
           "get_entry"]
