"""The service's scratch folder for uploaded videos: one per process, in the system's temporary folder,
locked for the life of the process. A process that is killed (SIGKILL, a power cut) cannot remove its
own; the next ``serve.py`` to start removes every such folder whose lock nobody holds any more, and
leaves those of other running instances alone."""
import os
import shutil
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: there a killed process's folder stays until the system cleans it
    fcntl = None

PREFIX = "dehaze-p2pnet-serve-"
LOCK_NAME = "lock"


class ScratchFolder:
    """A new locked folder (``path``); creating one first removes the folders of dead processes
    (``removed`` lists them)."""

    def __init__(self, parent=None):
        parent = Path(parent or tempfile.gettempdir())
        self.removed = remove_abandoned(parent)
        # Made and locked under another name, then renamed: no other instance ever sees it unlocked.
        making = Path(tempfile.mkdtemp(prefix="." + PREFIX, dir=parent))
        self.lock = open(making / LOCK_NAME, "w")
        if fcntl is not None:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = parent / making.name[1:]
        making.rename(self.path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock.close()


def remove_abandoned(parent: Path) -> list:
    """Remove the scratch folders in ``parent`` whose lock no process holds; the folders removed."""
    if fcntl is None:
        return []
    removed = []
    for folder in parent.glob(PREFIX + "*"):
        try:
            if folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue  # another user's, or not a folder this project made
            with open(folder / LOCK_NAME, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:  # BlockingIOError: a running instance's; others: gone meanwhile, or not ours to read
            continue
    return removed
