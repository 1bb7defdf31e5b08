"""Released checkpoints by name: ``--weight_path Hazy_JHU`` downloads the authors' file once into the
cache folder (``<cache>/weights/``) and later uses read it from there.

The authors publish their checkpoints on Google Drive (weights/README.md). ``$DEHAZE_P2PNET_WEIGHTS_URL``
replaces Drive with a mirror that serves ``<url>/<file name>``. A download becomes the cached file only
once it is complete and reads as a checkpoint, so a cut connection or an HTML page from Drive never
leaves a file that looks usable.
"""
import contextlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from util.cache import default_cache_dir

from .checkpoint import CheckpointError, read_checkpoint

try:
    import fcntl
except ImportError:  # not on Windows: concurrent downloads then each write their own temporary file
    fcntl = None

# Name -> the authors' Google Drive file id (weights/README.md); the file is "<name>_best.pth".
RELEASED_CHECKPOINTS = {
    "Hazy_JHU": "18saECAlz6mc7_neo8_uLeBrc7xs5UKVf",
    "DH_SHTA": "1DrVEb2exzgO17ZbtoaJZctgTiqRaiuMo",
    "DH_SHTB": "1Tu9VH0FmWyMTTwe8rqQt3gq_U2mUZGY3",
    "Hazy_SHTRGBD": "1jQv0Kj8aT_PGUi4LzWppiGPpXQtq15uG",
    "Rainy_SHTRGBD": "1Fqr7RqSJk-fSUw9YMpCg2MZnsBhynFWJ",
}
FILE_SUFFIX = "_best.pth"
WEIGHTS_URL_ENV_VAR = "DEHAZE_P2PNET_WEIGHTS_URL"
# confirm=t skips the page on which Drive warns that it cannot scan a large file for viruses.
DRIVE_DOWNLOAD_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
DRIVE_VIEW_URL = "https://drive.google.com/file/d/{id}/view"
# Seconds a connection attempt or a single read may wait before the download fails.
TIMEOUT_S = 30
CHUNK_BYTES = 1 << 20


class DownloadError(CheckpointError):
    """A released checkpoint that could not be downloaded; the one-line message says what failed and
    how to place the file by hand."""


def release_name(path_or_name) -> str | None:
    """The released checkpoint that ``path_or_name`` names (``Hazy_JHU`` or ``Hazy_JHU_best.pth``), or
    ``None``. Only a bare name counts: anything with a folder in it is a path."""
    text = os.fspath(path_or_name)
    name = text[:-len(FILE_SUFFIX)] if text.endswith(FILE_SUFFIX) else text
    return name if name in RELEASED_CHECKPOINTS else None


def cached_path(name: str) -> Path:
    """Where the released checkpoint ``name`` is kept: ``<cache>/weights/<name>_best.pth``."""
    return default_cache_dir() / "weights" / f"{name}{FILE_SUFFIX}"


def download_url(name: str) -> str:
    """``$DEHAZE_P2PNET_WEIGHTS_URL/<file name>`` when that is set, else the authors' Drive download."""
    mirror = os.environ.get(WEIGHTS_URL_ENV_VAR)
    if mirror:
        return f"{mirror.rstrip('/')}/{name}{FILE_SUFFIX}"
    return DRIVE_DOWNLOAD_URL.format(id=RELEASED_CHECKPOINTS[name])


def resolve_checkpoint(path_or_name, log=None) -> Path:
    """The checkpoint file that ``path_or_name`` stands for.

    An existing file is returned as it is, even when it is named like a release. A released
    checkpoint's name gives its cached copy, downloaded first when missing (one line through ``log``,
    a progress bar on stderr). Raises ``FileNotFoundError`` for neither a file nor a name (listing the
    names) and ``DownloadError`` when the download fails.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    name = release_name(path_or_name)
    if name is None:
        raise FileNotFoundError(f"checkpoint not found: {path} (released checkpoints can also be given by name: "
                                f"{', '.join(RELEASED_CHECKPOINTS)})")
    target = cached_path(name)
    if not target.is_file():
        download(name, target, log or (lambda message: print(message, file=sys.stderr)))
    return target


def download(name: str, target: Path, log) -> None:
    """Download the released checkpoint ``name`` into ``target``, atomically.

    Each process writes its own temporary ``.part`` file in ``target``'s folder and renames it onto
    ``target`` only when the byte count matches Content-Length and the file reads as a checkpoint; on
    any failure (Ctrl-C included) the temporary file is removed. Processes that download at the same
    time (torchrun) take turns, and those that come later use the file the first one wrote.
    """
    url = download_url(name)
    manual = (f"download it from {DRIVE_VIEW_URL.format(id=RELEASED_CHECKPOINTS[name])} and save it as {target}, "
              "or give its path instead of the name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with folder_locked(target.parent):
            if target.is_file():
                return  # another process finished it while this one waited
            if fcntl is not None:
                # Holding the lock, any temporary file is one a killed process could not remove.
                for leftover in target.parent.glob(f".{target.name}.*.part"):
                    leftover.unlink(missing_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            try:
                with os.fdopen(handle, "wb") as file:
                    received, expected = fetch(url, file, target, log)
                if expected is not None and received != expected:
                    raise DownloadError(f"cannot download {name} from {url} (the connection ended after {received} "
                                        f"of {expected} bytes): {manual}")
                check_checkpoint(temporary, url, manual)
                os.replace(temporary, target)
            finally:
                Path(temporary).unlink(missing_ok=True)
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(f"cannot download {name} from {url} ({failure_reason(error)}): {manual}") from None


def fetch(url: str, file, target: Path, log) -> tuple[int, int | None]:
    """Stream ``url`` into the open binary ``file`` in chunks, with a progress bar on stderr (shown on a
    terminal only). Returns ``(bytes received, Content-Length or None)``.

    The line saying what is downloaded comes once the server has answered, with the size it announced,
    so that a machine without network prints the error alone.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "dehaze-p2pnet"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        size = f" ({expected / 1e6:.1f} MB)" if expected is not None else ""
        log(f"downloading {target.name}{size} from {url} into {target}")
        received = 0
        with tqdm(total=expected, desc=target.name, unit="B", unit_scale=True, unit_divisor=1024, disable=None,
                  file=sys.stderr) as progress:
            while chunk := response.read(CHUNK_BYTES):
                file.write(chunk)
                received += len(chunk)
                progress.update(len(chunk))
    return received, expected


def check_checkpoint(path: str, url: str, manual: str) -> None:
    """Raise ``DownloadError`` unless the downloaded file at ``path`` reads as a checkpoint."""
    with open(path, "rb") as file:
        start = file.read(512).lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        what = "an HTML page, as Google Drive sends when a file is over its download quota or needs signing in"
    else:
        try:
            read_checkpoint(path)
            return
        except CheckpointError as error:
            what = str(error).splitlines()[0].removeprefix(f"{path}: ")
    raise DownloadError(f"{url} did not send a checkpoint ({what}); nothing was kept: {manual}")


@contextlib.contextmanager
def folder_locked(folder: Path):
    """Hold an exclusive lock on ``folder`` (a no-op where ``fcntl`` is missing). Locking the folder
    itself, not a lock file, leaves nothing behind in it."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def failure_reason(error: BaseException) -> str:
    """What went wrong in a download, in a few words: ``HTTP 404 Not Found``, ``timed out``, ..."""
    if isinstance(error, urllib.error.HTTPError):
        error.close()
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        text = str(error)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__
