"""One dataset class for every dataset (its files come from ``layout.find_samples``), and the epoch-aware
sampler that hands loader workers the epoch with every index."""
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .annotations import points_outside, read_points
from .image_io import pixel_tensor, printable, read_rgb, unique_names, unit_float
from .layout import count_clean_pairs


def make_target(points: torch.Tensor, image_id: str) -> dict:
    """``{"points" [N, 2], "labels" int64 [N] (all 1), "image_id"}`` for one image or crop."""
    return {"points": points, "labels": torch.ones(len(points), dtype=torch.int64), "image_id": image_id}


def unique_ids(samples: list) -> list:
    """Each image's id in records and printouts: ``image_io.unique_names`` of the image files, printable."""
    return [printable(name) for name in unique_names([sample.image for sample in samples])]


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one training item's augmentation: a 63-bit integer mixed from ``(seed, epoch, index)``
    by ``numpy.random.SeedSequence``, so it is the same in every process and every Python version."""
    low, high = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return ((int(high) << 32) | int(low)) & (2 ** 63 - 1)


class EpochSampler(Sampler):
    """Wraps an index sampler and yields ``(epoch, index)`` keys for ``CrowdDataset``.

    Loader workers hold their own copies of the dataset, made when they start (and kept for the
    whole run with ``persistent_workers``), so an epoch set on the dataset in the main process never
    reaches them. The epoch travels with each index instead. ``set_epoch`` also reaches the wrapped
    sampler (e.g. ``DistributedSampler``, whose shuffling depends on it).
    """

    def __init__(self, sampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self):
        return len(self.sampler)


class CrowdDataset(Dataset):
    """Images with head points, for training (augmented crops) or evaluation (whole images).

    Evaluation item: ``(image [3, H, W] float32 in [0, 1], target)`` with ``target`` holding
    ``points`` float32 ``[N, 2]`` ``(x, y)`` pixels, ``labels`` int64 ``[N]`` (all 1) and ``image_id``.
    Training item: ``(images [K, 3, c, c], [target] * K)`` from ``transform``; each target also holds
    ``clean [3, c, c]`` when ``use_clean`` and the image has a clean pair.

    Items are looked up by ``index`` or by an ``(epoch, index)`` key (see :class:`EpochSampler`); a bare
    index means epoch 0. Augmentation randomness depends only on ``(seed, epoch, index)``
    (:func:`augmentation_seed`), so every epoch draws new crops, with any number of loader workers,
    and a resumed run sees the crops an uninterrupted one would.
    """

    def __init__(self, samples: list, transform=None, use_clean: bool = False, seed: int = 0):
        self.samples = list(samples)
        self.ids = unique_ids(self.samples)
        self.transform = transform
        self.use_clean = use_clean
        self.seed = seed

    def __len__(self):
        return len(self.samples)

    @property
    def clean_pairs(self) -> int:
        """How many images have a clean pair."""
        return count_clean_pairs(self.samples)

    @property
    def has_clean_pairs(self) -> bool:
        return bool(self.samples) and self.clean_pairs == len(self.samples)

    def load(self, index: int, as_float: bool = True):
        """Decoded image ``[3, H, W]`` and points ``[N, 2]`` of one sample, without augmentation; the
        image as float32 in [0, 1], or with ``as_float=False`` as the decoded uint8 pixels."""
        files = self.samples[index]
        rgb = read_rgb(files.image)
        points = read_points(files.annotation)
        outside = points_outside(points, rgb.shape[1], rgb.shape[0])
        if outside:
            warnings.warn(f"{files.annotation}: {outside} of {len(points)} points lie outside the "
                          f"{rgb.shape[1]}x{rgb.shape[0]} image {files.image.name}; they are kept", stacklevel=2)
        image = pixel_tensor(rgb)
        return (unit_float(image) if as_float else image), torch.from_numpy(points)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        # Training transforms take uint8 pixels and convert only what their crops read.
        image, points = self.load(index, as_float=self.transform is None)
        if self.transform is None:
            return image, make_target(points, self.ids[index])
        files = self.samples[index]
        clean = None
        if self.use_clean and files.clean is not None:
            clean = pixel_tensor(read_rgb(files.clean))
            if clean.shape != image.shape:
                raise ValueError(f"clean image {files.clean} is {tuple(clean.shape[1:])} but {files.image} is "
                                 f"{tuple(image.shape[1:])}; clean pairs must have the same size")
        generator = torch.Generator().manual_seed(augmentation_seed(self.seed, epoch, index))
        crops, crop_points, crop_clean = self.transform(image, points, clean, generator)
        targets = []
        for k, points_k in enumerate(crop_points):
            crop_target = make_target(points_k, self.ids[index])
            if crop_clean is not None:
                crop_target["clean"] = crop_clean[k]
            targets.append(crop_target)
        return crops, targets


def collate_crops(batch):
    """Training batch: items ``(crops [K, 3, c, c], K targets)`` -> ``(images [sum K, 3, c, c], targets)``."""
    images = torch.cat([crops for crops, _ in batch])
    targets = [target for _, crop_targets in batch for target in crop_targets]
    return images, targets


def collate_images(batch):
    """Evaluation batch: whole images of different sizes stay a list -> ``([image [3, H, W]], [target])``."""
    return [image for image, _ in batch], [target for _, target in batch]
