"""Registry of datasets: each entry is data (where the files are, crop size, weather), never code."""
from dataclasses import dataclass
from typing import Optional

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetEntry:
    """Where a dataset lives and how it trains: ``folder`` is its path below ``datasets/`` (images) and
    ``crowd_datasets/`` (upstream's list and annotation files) under ``--data_root`` (``None``: lists
    given on the command line); ``crop_size`` is the training crop in pixels; ``demo`` datasets are
    generated on first use; ``parts`` names the entries whose images a combined dataset holds, in
    that order."""

    folder: Optional[str]
    crop_size: int = 128
    demo: bool = False
    parts: tuple = ()


DATASETS = {
    "Hazy_JHU": DatasetEntry("Hazy_JHU", crop_size=96),
    "Hazy_SHTA": DatasetEntry("Hazy_ShanghaiTech/part_A"),
    "Hazy_SHTB": DatasetEntry("Hazy_ShanghaiTech/part_B"),
    "Hazy_SHARGBD": DatasetEntry("Hazy_ShanghaiTechRGBD"),
    "Rainy_SHARGBD": DatasetEntry("Rainy_ShanghaiTechRGBD"),
    "SHHA": DatasetEntry("ShanghaiTech/part_A"),
    "SHHB": DatasetEntry("ShanghaiTech/part_B"),
    "Custom": DatasetEntry(None),
    "Demo_Hazy": DatasetEntry("Demo_Hazy", demo=True),
    "Demo_Rainy": DatasetEntry("Demo_Rainy", demo=True),
    "Demo_Weather": DatasetEntry(None, demo=True, parts=("Demo_Hazy", "Demo_Rainy")),
}


# Other names of registry datasets -> their registry name. The authors' released checkpoints spell the
# ShanghaiTechRGBD datasets "SHTRGBD" (models/releases.py) where the registry has always said "SHARGBD";
# the registry names stay canonical, so existing runs and commands keep working.
ALIASES = {
    "Hazy_SHTRGBD": "Hazy_SHARGBD",
    "Rainy_SHTRGBD": "Rainy_SHARGBD",
}


def canonical_name(name: str) -> str:
    """The registry name of dataset ``name`` (itself, or what the alias stands for); unknown names pass through."""
    return ALIASES.get(name, name)


def get_entry(name: str) -> DatasetEntry:
    """The registry entry of dataset ``name``, a registry name or one of ``ALIASES``; KeyError if neither."""
    entry = DATASETS.get(canonical_name(name))
    if entry is None:
        aliases = ", ".join(f"{alias} (= {target})" for alias, target in ALIASES.items())
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}; aliases: {aliases}")
    return entry
