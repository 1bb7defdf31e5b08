"""Released checkpoints by name: ``--weight_path Hazy_JHU`` downloads the authors' file once into the
cache folder (``<cache>/weights/``) and later uses read it from there.

The authors publish their checkpoints on Google Drive (weights/README.md). ``$DEHAZE_P2PNET_WEIGHTS_URL``
replaces Drive with a mirror that serves ``<url>/<file name>``: https, or plain http to this machine only, with
optional ``user:password@`` credentials that are sent but never shown. A download becomes the cached file only
once it is complete, within ``MAX_DOWNLOAD_BYTES`` and reads as a checkpoint, so a cut connection or an HTML page
from Drive never leaves a file that looks usable. Its SHA-256 is recorded beside it (``<file>.sha256``, as
``sha256sum`` writes it) and every later use checks the file against that record.
"""
import base64
import contextlib
import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from util.addresses import is_loopback
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
# Name -> SHA-256 (hex) of the authors' file, checked on the first download too. None: not known yet, as the
# files could not be downloaded where this was written; the first download's hash is what later uses are held to.
KNOWN_SHA256 = {
    "Hazy_JHU": None,
    "DH_SHTA": None,
    "DH_SHTB": None,
    "Hazy_SHTRGBD": None,
    "Rainy_SHTRGBD": None,
}
FILE_SUFFIX = "_best.pth"
SHA256_SUFFIX = ".sha256"
WEIGHTS_URL_ENV_VAR = "DEHAZE_P2PNET_WEIGHTS_URL"
# confirm=t skips the page on which Drive warns that it cannot scan a large file for viruses.
DRIVE_DOWNLOAD_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
DRIVE_VIEW_URL = "https://drive.google.com/file/d/{id}/view"
# Seconds a connection attempt or a single read may wait before the download fails.
TIMEOUT_S = 30
CHUNK_BYTES = 1 << 20
# Bytes a download may have: the released files are 85-200 MB, so anything past this is not one of them.
MAX_DOWNLOAD_BYTES = 1 << 30
# What a download may use (is_allowed_url), as its refusals say it.
ALLOWED_URLS = "https://, or plain http:// to this machine only (localhost, 127.0.0.0/8, ::1)"
# "scheme://" and the userinfo before the host's "@" (the last "@" before the path, as urllib.parse splits it).
USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)([^/?#]*)@", re.IGNORECASE)


class DownloadError(CheckpointError):
    """A released checkpoint that could not be downloaded; the one-line message says what failed and
    how to place the file by hand."""


class ChecksumError(CheckpointError):
    """A cached released checkpoint whose SHA-256 is not the one it was downloaded with (or the released
    file's); the one-line message names the file and both hashes."""


class Refused(OSError):
    """A download this module will not make (an insecure URL, a file over the size limit); the message is
    the reason in a few words."""


def release_name(path_or_name) -> str | None:
    """The released checkpoint that ``path_or_name`` names (``Hazy_JHU`` or ``Hazy_JHU_best.pth``), or
    ``None``. Only a bare name counts: anything with a folder in it is a path."""
    text = os.fspath(path_or_name)
    name = text[:-len(FILE_SUFFIX)] if text.endswith(FILE_SUFFIX) else text
    return name if name in RELEASED_CHECKPOINTS else None


def cached_path(name: str) -> Path:
    """Where the released checkpoint ``name`` is kept: ``<cache>/weights/<name>_best.pth``."""
    return default_cache_dir() / "weights" / f"{name}{FILE_SUFFIX}"


def sha256_path(target: Path) -> Path:
    """Where the SHA-256 of the cached file ``target`` is recorded: ``<target>.sha256``."""
    return target.with_name(target.name + SHA256_SUFFIX)


def download_url(name: str) -> str:
    """``$DEHAZE_P2PNET_WEIGHTS_URL/<file name>`` when that is set, else the authors' Drive download."""
    mirror = os.environ.get(WEIGHTS_URL_ENV_VAR)
    if mirror:
        return f"{mirror.rstrip('/')}/{name}{FILE_SUFFIX}"
    return DRIVE_DOWNLOAD_URL.format(id=RELEASED_CHECKPOINTS[name])


def printable_url(url: str) -> str:
    """``url`` as every message shows it: ``https://***@host/...`` for ``https://user:password@host/...``."""
    return USERINFO.sub(r"\1***@", url, count=1)


def is_allowed_url(url: str) -> bool:
    """Whether a download may use ``url``: https, or plain http to a loopback host, which nobody between
    this machine and the server can read or change."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # a malformed host, such as an unclosed "[" of an IPv6 address
        return False
    if parts.scheme.lower() == "https":
        return True
    return parts.scheme.lower() == "http" and is_loopback(parts.hostname)


def resolve_checkpoint(path_or_name, log=None) -> Path:
    """The checkpoint file that ``path_or_name`` stands for.

    An existing file is returned as it is, even when it is named like a release. A released
    checkpoint's name gives its cached copy, downloaded first when missing (one line through ``log``,
    a progress bar on stderr) and checked against its recorded SHA-256 when present. Raises
    ``FileNotFoundError`` for neither a file nor a name (listing the names), ``DownloadError`` when the
    download fails and ``ChecksumError`` when the cached file changed.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    name = release_name(path_or_name)
    if name is None:
        raise FileNotFoundError(f"checkpoint not found: {path} (released checkpoints can also be given by name: "
                                f"{', '.join(RELEASED_CHECKPOINTS)})")
    target = cached_path(name)
    if target.is_file():
        check_cached(name, target)
    else:
        download(name, target, log or (lambda message: print(message, file=sys.stderr)))
    return target


def check_cached(name: str, target: Path) -> None:
    """Raise ``ChecksumError`` unless the cached ``target`` has the released file's SHA-256 (when known)
    or else the one recorded when it was downloaded. A file without a record, placed by hand, gets one.

    The whole file is hashed on every use: 85 MB take about 0.06 s on one AMD EPYC Zen 4 core, little
    beside loading it, so a size-and-mtime shortcut would only add a way to miss a change.
    """
    actual = file_sha256(target)
    recorded = recorded_sha256(target)
    known = KNOWN_SHA256.get(name)
    if known:
        expected, source = known, "the released file's"
    else:
        expected, source = recorded, f"recorded in {sha256_path(target)} at its first use"
    if expected is not None and actual != expected:
        raise ChecksumError(f"{target}: its SHA-256 is {actual}, not {expected} ({source}); the file changed, "
                            "delete it to download it again")
    if recorded != actual:
        # A cache that is read-only here (shared between users) still serves a file placed by hand, unrecorded.
        with contextlib.suppress(OSError):
            write_sha256(target, actual)


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, in hex."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def recorded_sha256(target: Path) -> str | None:
    """The SHA-256 recorded for ``target`` (the first field of ``<target>.sha256``, lower case), ``""`` for
    an empty record, ``None`` when there is none."""
    try:
        fields = sha256_path(target).read_text(errors="replace").split()
    except FileNotFoundError:
        return None
    return fields[0].lower() if fields else ""


def write_sha256(target: Path, digest: str) -> None:
    """Record ``digest`` for ``target`` atomically, in ``sha256sum``'s format: ``sha256sum -c`` checks it
    from ``target``'s folder."""
    record = sha256_path(target)
    handle, temporary = tempfile.mkstemp(prefix=f".{record.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(f"{digest}  {target.name}\n")
        os.replace(temporary, record)
    finally:
        Path(temporary).unlink(missing_ok=True)


def download(name: str, target: Path, log) -> None:
    """Download the released checkpoint ``name`` into ``target``, atomically, and record its SHA-256.

    Each process writes its own temporary ``.part`` file in ``target``'s folder and renames it onto
    ``target`` only when the byte count matches Content-Length, the SHA-256 matches the released file's
    (when known) and the file reads as a checkpoint; on any failure (Ctrl-C included) the temporary file
    is removed. A URL other than https (or http to this machine) is refused before anything is created or
    connected. Processes that download at the same time (torchrun) take turns, and those that come later
    use the file the first one wrote.
    """
    url = download_url(name)
    shown = printable_url(url)
    manual = (f"download it from {DRIVE_VIEW_URL.format(id=RELEASED_CHECKPOINTS[name])} and save it as {target}, "
              "or give its path instead of the name")
    try:
        if not is_allowed_url(url):
            raise Refused(f"${WEIGHTS_URL_ENV_VAR} must be {ALLOWED_URLS}")
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
                    received, expected, digest = fetch(url, file, target, log)
                if expected is not None and received != expected:
                    raise DownloadError(f"cannot download {name} from {shown} (the connection ended after "
                                        f"{received} of {expected} bytes): {manual}")
                known = KNOWN_SHA256.get(name)
                if known and digest != known:
                    raise DownloadError(f"cannot download {name} from {shown} (it sent a file whose SHA-256 is "
                                        f"{digest}, not the released file's {known}); nothing was kept: {manual}")
                check_checkpoint(temporary, shown, manual)
                write_sha256(target, digest)  # first: a cached file never lacks the record its download made
                os.replace(temporary, target)
            finally:
                Path(temporary).unlink(missing_ok=True)
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(f"cannot download {name} from {shown} ({failure_reason(error)}): {manual}") from None


def fetch(url: str, file, target: Path, log) -> tuple[int, int | None, str]:
    """Stream ``url`` into the open binary ``file`` in chunks, with a progress bar on stderr (shown on a
    terminal only). Returns ``(bytes received, Content-Length or None, SHA-256 in hex)``; raises ``Refused``
    as soon as the announced or the received size is over ``MAX_DOWNLOAD_BYTES``.

    The line saying what is downloaded comes once the server has answered, with the size it announced,
    so that a machine without network prints the error alone.
    """
    limit = f"the {MAX_DOWNLOAD_BYTES / 2**20:.0f} MiB limit for a checkpoint (MAX_DOWNLOAD_BYTES)"
    with open_url(url) as response:
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        if expected is not None and expected > MAX_DOWNLOAD_BYTES:
            raise Refused(f"it announced {expected / 2**20:.1f} MiB, over {limit}")
        size = f" ({expected / 1e6:.1f} MB)" if expected is not None else ""
        log(f"downloading {target.name}{size} from {printable_url(url)} into {target}")
        digest = hashlib.sha256()
        received = 0
        with tqdm(total=expected, desc=target.name, unit="B", unit_scale=True, unit_divisor=1024, disable=None,
                  file=sys.stderr) as progress:
            # Asking for one byte past the limit at most tells an oversized body from one of exactly the limit.
            while chunk := response.read(min(CHUNK_BYTES, MAX_DOWNLOAD_BYTES + 1 - received)):
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise Refused(f"it sent more than {limit}")
                file.write(chunk)
                digest.update(chunk)
                progress.update(len(chunk))
    return received, expected, digest.hexdigest()


def open_url(url: str):
    """Open ``url`` for reading (``TIMEOUT_S`` seconds per connection attempt and read), following redirects
    only to allowed URLs. Credentials in ``url`` go in an Authorization header that no redirect carries, so
    that they never reach another host (urllib would otherwise take them for part of the host name)."""
    match = USERINFO.match(url)
    request = urllib.request.Request(USERINFO.sub(r"\1", url, count=1), headers={"User-Agent": "dehaze-p2pnet"})
    if match:
        user, _, password = match.group(2).partition(":")
        credentials = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    return urllib.request.build_opener(AllowedRedirects).open(request, timeout=TIMEOUT_S)


class AllowedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an allowed URL, refusing before it connects there: an https mirror or
    Drive must not hand the download to plain http on another machine."""

    def redirect_request(self, request, response, code, message, headers, new_url):
        """The request for ``new_url``, or ``Refused`` when it is not allowed. Its credentials are dropped:
        urllib would take them for part of the host name and show them in its error."""
        if not is_allowed_url(new_url):
            response.close()
            raise Refused(f"redirected to {printable_url(new_url)}, refused: a download must use {ALLOWED_URLS}")
        new_url = USERINFO.sub(r"\1", new_url, count=1)
        return super().redirect_request(request, response, code, message, headers, new_url)


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
