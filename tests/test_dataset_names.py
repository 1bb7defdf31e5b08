"""Dataset names: the released checkpoints' spelling of a dataset (ALIASES) names the same registry entry."""
import pytest

from crowd_datasets import build_dataset, find_samples
from crowd_datasets.registry import ALIASES, DATASETS, canonical_name, get_entry
from helpers import upstream_root
from models.releases import RELEASED_CHECKPOINTS


def test_aliases_name_registry_entries_and_never_shadow_one():
    assert ALIASES["Hazy_SHTRGBD"] == "Hazy_SHARGBD"
    for alias, target in ALIASES.items():
        assert alias not in DATASETS and target in DATASETS
        assert get_entry(alias) is get_entry(target) and canonical_name(alias) == target
    assert canonical_name("Hazy_SHARGBD") == "Hazy_SHARGBD"


def test_released_shanghaitech_rgbd_checkpoints_name_a_dataset():
    for name in ("Hazy_SHTRGBD", "Rainy_SHTRGBD"):
        assert name in RELEASED_CHECKPOINTS
        assert canonical_name(name) in DATASETS


def test_alias_builds_the_same_dataset(tmp_path):
    root = upstream_root(tmp_path, folder="Hazy_ShanghaiTechRGBD")
    by_alias = build_dataset("Hazy_SHTRGBD", "test", data_root=root)
    by_name = build_dataset("Hazy_SHARGBD", "test", data_root=root)
    assert len(by_alias) == len(by_name) == 2
    assert find_samples("Hazy_SHTRGBD", "test", root) == find_samples("Hazy_SHARGBD", "test", root)


def test_unknown_name_lists_names_and_aliases():
    with pytest.raises(KeyError, match="Hazy_SHTRGBD \\(= Hazy_SHARGBD\\)"):
        get_entry("Hazy_SHTRGBDX")
