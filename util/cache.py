"""The one cache folder for what the project makes or downloads on first use (the demo datasets,
released checkpoints), so that every part finds it in the same place."""
import os
from pathlib import Path

CACHE_ENV_VAR = "DEHAZE_P2PNET_CACHE"


def default_cache_dir() -> Path:
    """``$DEHAZE_P2PNET_CACHE`` if set, else ``~/.cache/dehaze-p2pnet``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "dehaze-p2pnet"
