"""The site file (``serve.py --site site.toml``): which cameras to watch, how often to count each, its
zones and exclusions, and when to raise an alert. TOML, read with the standard library's ``tomllib``::

    [[camera]]
    name = "north"                            # letters, digits, _ and -
    source = "rtsp://127.0.0.1:8554/north"    # or http(s)://..., rtmp://..., a video file (looped), "0"
    every_s = 5                               # count a frame every 5 s (default 10)
    zones_file = "north_zones.json"           # optional, the --zones format; exclude_file likewise
    [[camera.alert]]
    zone = "gate"                             # a zone of this camera, or "total"
    above = 50                                # raised when the count stays above this ...
    for_s = 10                                # ... for this long (default 0); cleared when it stays at or below

Paths (a file source, ``zones_file``, ``exclude_file``) are relative to the site file's folder. A bad file
fails as one ``ValueError`` line naming the file, the camera (``camera "north"``, or ``camera 2`` by
position when its name is the problem) and the field.
"""
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from inference.zones import read_polygons

# The site file is read whole into memory: a megabyte is hundreds of cameras' worth of settings.
MAX_SITE_BYTES = 1_000_000
MAX_CAMERAS, MAX_ALERTS = 64, 64
DEFAULT_EVERY_S = 10.0
# Below half a second a camera would be counted faster than the network can count on a CPU; above a day
# it is no longer watched.
MIN_EVERY_S, MAX_EVERY_S = 0.5, 86400.0
MAX_FOR_S = 86400.0
URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Alerts name the camera's whole count so; a zone of that name would make an alert ambiguous.
TOTAL = "total"
CAMERA_KEYS = ("name", "source", "every_s", "zones_file", "exclude_file", "alert")
ALERT_KEYS = ("zone", "above", "for_s")


@dataclass(frozen=True)
class AlertRule:
    """Raised when the count of ``zone`` (a zone of the camera, or ``"total"``) stays above ``above``
    people for ``for_s`` seconds; cleared when it stays at or below for as long."""
    zone: str
    above: float
    for_s: float = 0.0


@dataclass(frozen=True)
class CameraSpec:
    """One camera of the site. ``source``: a URL (rtsp, rtsps, http, https, rtmp), the absolute path of a
    video file (played in a loop) or a camera index (a string of digits). ``every_s``: seconds between
    counts. ``zones`` and ``exclusions``: name -> float64 ``[V, 2]`` polygon in the frame's pixels, as
    ``inference.zones.read_polygons`` gives them (``{}`` without a file)."""
    name: str
    source: str
    every_s: float = DEFAULT_EVERY_S
    zones: dict = field(default_factory=dict)
    exclusions: dict = field(default_factory=dict)
    alerts: tuple = ()


@dataclass(frozen=True)
class Site:
    """The cameras of a site file, in the file's order (``tuple[CameraSpec]``)."""
    cameras: tuple

    def camera(self, name: str) -> CameraSpec:
        """The camera called ``name``; ``KeyError`` if there is none."""
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise KeyError(name)


def read_site(path) -> Site:
    """The site file at ``path``, checked (see the module's docstring); ``ValueError`` in one line if bad."""
    path = Path(path)
    tables = site_tables(parse_toml(path), path)
    cameras, names = [], {}
    for position, table in enumerate(tables, start=1):
        camera = parse_camera(table, site=path, position=position)
        if camera.name in names:
            raise ValueError(f"{path}: camera {position}: name: {camera.name!r} is also the name of camera "
                             f"{names[camera.name]}")
        names[camera.name] = position
        cameras.append(camera)
    return Site(cameras=tuple(cameras))


def parse_toml(path: Path) -> dict:
    """The TOML document at ``path``, read up to ``MAX_SITE_BYTES``."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SITE_BYTES + 1)
    except OSError as error:
        raise ValueError(f"{path}: cannot read the site file ({error.strerror or error})") from None
    if len(data) > MAX_SITE_BYTES:
        raise ValueError(f"{path}: over {MAX_SITE_BYTES} bytes; a site file is a short list of cameras")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        # tomllib's message ends with "(at line N, column M)".
        raise ValueError(f"{path}: not TOML: {error}") from None


def site_tables(document: dict, path: Path) -> list:
    """The ``[[camera]]`` tables of a site document."""
    unknown = [key for key in document if key != "camera"]
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r} (a site file holds [[camera]] tables only)")
    tables = document.get("camera")
    if not isinstance(tables, list) or not tables or not all(isinstance(table, dict) for table in tables):
        raise ValueError(f"{path}: no [[camera]] tables (each camera is a [[camera]] table with name and source)")
    if len(tables) > MAX_CAMERAS:
        raise ValueError(f"{path}: {len(tables)} cameras; at most {MAX_CAMERAS}")
    return tables


def parse_camera(table: dict, *, site: Path, position: int) -> CameraSpec:
    """The ``position``-th (from 1) ``[[camera]]`` table of the site file ``site``. Error messages name the
    camera by position (``site.toml: camera 2``) until its name is known, then by name."""
    name, folder = table.get("name"), site.parent
    good_name = isinstance(name, str) and NAME_PATTERN.fullmatch(name)
    where = f"{site}: camera {name!r}" if good_name else f"{site}: camera {position}"
    check_keys(table, CAMERA_KEYS, where)
    for key in ("name", "source"):
        if key not in table:
            raise ValueError(f"{where}: {key}: missing (every camera needs a name and a source)")
    if not good_name:
        raise ValueError(f"{where}: name: {name!r:.70} is not 1 to 64 letters, digits, _ and -")
    every_s = number(table.get("every_s", DEFAULT_EVERY_S), where=f"{where}: every_s", low=MIN_EVERY_S,
                     high=MAX_EVERY_S)
    zones = polygons_file(table.get("zones_file"), where=f"{where}: zones_file", folder=folder)
    if TOTAL in zones:
        raise ValueError(f"{where}: zones_file: a zone may not be called {TOTAL!r} (alerts name the camera's "
                         "whole count so)")
    exclusions = polygons_file(table.get("exclude_file"), where=f"{where}: exclude_file", folder=folder)
    return CameraSpec(name=name, source=parse_source(table["source"], where=f"{where}: source", folder=folder),
                      every_s=every_s, zones=zones, exclusions=exclusions,
                      alerts=parse_alerts(table.get("alert", []), where=where, zones=zones))


def check_keys(table: dict, known: tuple, where: str) -> None:
    """Refuses a key not in ``known`` (a typo such as ``evry_s`` would otherwise be ignored silently)."""
    for key in table:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")


def number(value, *, where: str, low: float, high: float) -> float:
    """``value`` as a float from ``low`` to ``high``; TOML's booleans, nan and inf are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a number (expected {low:g} to {high:g})")
    if not low <= value <= high:
        raise ValueError(f"{where}: {value:g} is out of range (expected {low:g} to {high:g})")
    return float(value)


def polygons_file(name, *, where: str, folder: Path) -> dict:
    """The checked polygons of a ``--zones``-format file named relative to ``folder``; ``{}`` without one."""
    if name is None:
        return {}
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: {name!r} is not a file name")
    path = folder / name
    # read_polygons reads the whole file: a device or a fifo would never end.
    if not path.is_file():
        raise ValueError(f"{where}: {path} is not a file")
    try:
        return read_polygons(path)
    except OSError as error:
        raise ValueError(f"{where}: {path}: {error.strerror}" if error.strerror else f"{where}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def parse_source(source, *, where: str, folder: Path) -> str:
    """A URL as it is, a camera index as its digits, a file as its absolute path (which must exist)."""
    if not isinstance(source, str) or not source.strip():
        hint = f' (a camera index is written as a string: "{source}")' if isinstance(source, int) else ""
        raise ValueError(f"{where}: {source!r} is not a URL, a file or a camera index{hint}")
    if source.isdigit():
        if len(source) > 3:
            raise ValueError(f"{where}: {source!r} is not a camera index (at most 3 digits)")
        return source
    if "://" in source:
        scheme = urlsplit(source).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise ValueError(f"{where}: unknown URL scheme {scheme!r} (known: {', '.join(URL_SCHEMES)})")
        if not urlsplit(source).hostname:
            raise ValueError(f"{where}: the URL names no host")
        return source
    path = (folder / source).resolve()
    if not path.is_file():
        raise ValueError(f"{where}: no video file {path}")
    return str(path)


def parse_alerts(tables, *, where: str, zones: dict) -> tuple:
    """The ``[[camera.alert]]`` tables of a camera as ``AlertRule``s; each names a zone of ``zones`` or
    ``"total"``."""
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ValueError(f"{where}: alert: expected [[camera.alert]] tables")
    if len(tables) > MAX_ALERTS:
        raise ValueError(f"{where}: alert: {len(tables)} alerts; at most {MAX_ALERTS}")
    rules = []
    for position, table in enumerate(tables, start=1):
        at = f"{where}: alert {position}"
        check_keys(table, ALERT_KEYS, at)
        for key in ("zone", "above"):
            if key not in table:
                raise ValueError(f"{at}: {key}: missing (an alert needs a zone and above)")
        zone = table["zone"]
        if zone != TOTAL and (not isinstance(zone, str) or zone not in zones):
            known = ", ".join(repr(name) for name in zones) or "none"
            raise ValueError(f"{at}: zone: {zone!r} is neither {TOTAL!r} nor a zone of this camera (its zones: "
                             f"{known})")
        rules.append(AlertRule(zone=zone, above=number(table["above"], where=f"{at}: above", low=0, high=1e9),
                               for_s=number(table.get("for_s", 0), where=f"{at}: for_s", low=0, high=MAX_FOR_S)))
    return tuple(rules)
