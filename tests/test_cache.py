"""util/cache.py: the one cache folder of the demo datasets and the released checkpoints."""
from util.cache import default_cache_dir


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DEHAZE_P2PNET_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("DEHAZE_P2PNET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "dehaze-p2pnet"
