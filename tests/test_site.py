"""The site file of ``serve.py --site`` (``watching.site``): a good file parses with its paths resolved
against its folder; every kind of mistake fails as one line naming the file, the camera and the field."""
import json

import numpy as np
import pytest

from watching.site import MAX_CAMERAS, MAX_SITE_BYTES, AlertRule, CameraSpec, Site, read_site

ZONES = {"gate": [[0, 0], [100, 0], [100, 100], [0, 100]], "stage": [[200, 0], [300, 0], [250, 90]]}

GOOD = """
[[camera]]
name = "north"
source = "rtsp://127.0.0.1:8554/north"
every_s = 5
zones_file = "zones/north.json"
exclude_file = "zones/signs.json"
[[camera.alert]]
zone = "gate"
above = 50
for_s = 10
[[camera.alert]]
zone = "total"
above = 200.5

[[camera]]
name = "lobby_2"
source = "clips/lobby.mp4"

[[camera]]
name = "desk-cam"
source = "0"
every_s = 0.5
"""


@pytest.fixture
def site_dir(tmp_path):
    """A folder with the files GOOD names: zones/north.json, zones/signs.json and clips/lobby.mp4."""
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "north.json").write_text(json.dumps(ZONES))
    (tmp_path / "zones" / "signs.json").write_text(json.dumps({"sign": [[5, 5], [9, 5], [9, 9]]}))
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "lobby.mp4").write_bytes(b"not decoded by the site reader")
    return tmp_path


def write_site(folder, text: str):
    path = folder / "site.toml"
    path.write_text(text)
    return path


def test_a_good_site_file_parses_with_paths_relative_to_its_folder(site_dir, monkeypatch):
    monkeypatch.chdir(site_dir.parent)  # paths resolve against the site file's folder, not the working one
    site = read_site(write_site(site_dir, GOOD))
    assert isinstance(site, Site) and [camera.name for camera in site.cameras] == ["north", "lobby_2", "desk-cam"]
    north, lobby, desk = site.cameras
    assert isinstance(north, CameraSpec)
    assert north.source == "rtsp://127.0.0.1:8554/north" and north.every_s == 5.0
    assert list(north.zones) == ["gate", "stage"] and north.zones["gate"].dtype == np.float64
    assert north.zones["gate"].tolist() == ZONES["gate"] and list(north.exclusions) == ["sign"]
    assert north.alerts == (AlertRule(zone="gate", above=50.0, for_s=10.0), AlertRule(zone="total", above=200.5,
                                                                                      for_s=0.0))
    assert lobby.source == str((site_dir / "clips" / "lobby.mp4").resolve())
    assert lobby.every_s == 10.0 and lobby.zones == {} and lobby.exclusions == {} and lobby.alerts == ()
    assert desk.source == "0" and desk.every_s == 0.5
    assert site.camera("lobby_2") is lobby
    with pytest.raises(AttributeError):
        north.every_s = 1  # frozen


def test_an_alert_on_total_needs_no_zones(tmp_path):
    site = read_site(write_site(tmp_path, '[[camera]]\nname = "a"\nsource = "http://127.0.0.1/a.mjpg"\n'
                                          '[[camera.alert]]\nzone = "total"\nabove = 0\n'))
    assert site.cameras[0].alerts == (AlertRule(zone="total", above=0.0, for_s=0.0),)


CAMERA = '[[camera]]\nname = "north"\nsource = "rtsp://127.0.0.1:8554/north"\n'
ALERT = '[[camera.alert]]\nzone = "gate"\nabove = 5\n'

# (site file text, words its error names): each case's message also names the file (checked below).
BAD_SITES = {
    "not TOML": ('[[camera]]\nname = "north"\nsource = \n', ["not TOML", "line 3"]),
    "top-level typo": ('[[cameras]]\nname = "a"\nsource = "0"\n', ["unknown key 'cameras'"]),
    "no cameras": ("", ["no [[camera]] tables"]),
    "unknown key": (CAMERA + "evry_s = 5\n", ["camera 'north'", "unknown key 'evry_s'"]),
    "unknown key before name": ('[[camera]]\nnam = "north"\nsource = "0"\n', ["camera 1", "unknown key 'nam'"]),
    "missing name": ('[[camera]]\nsource = "0"\n', ["camera 1", "name: missing"]),
    "missing source": (CAMERA + "[[camera]]\nname = \"south\"\n", ["camera 'south'", "source: missing"]),
    "bad name": (CAMERA + '[[camera]]\nname = "north gate"\nsource = "0"\n', ["camera 2", "name: 'north gate'"]),
    "name not a string": ('[[camera]]\nname = 7\nsource = "0"\n', ["camera 1", "name: 7"]),
    "duplicate name": (CAMERA + CAMERA, ["camera 2", "name: 'north' is also the name of camera 1"]),
    "every_s negative": (CAMERA + "every_s = -1\n", ["camera 'north'", "every_s: -1 is out of range"]),
    "every_s zero": (CAMERA + "every_s = 0\n", ["camera 'north'", "every_s: 0 is out of range"]),
    "every_s too small": (CAMERA + "every_s = 0.1\n", ["every_s: 0.1 is out of range"]),
    "every_s too large": (CAMERA + "every_s = 100000\n", ["every_s: 100000 is out of range"]),
    "every_s a string": (CAMERA + 'every_s = "5"\n', ["camera 'north'", "every_s: '5' is not a number"]),
    "every_s a boolean": (CAMERA + "every_s = true\n", ["every_s: True is not a number"]),
    "every_s nan": (CAMERA + "every_s = nan\n", ["every_s: nan is not a number"]),
    "zones_file missing": (CAMERA + 'zones_file = "nowhere.json"\n', ["camera 'north'", "zones_file",
                                                                      "nowhere.json is not a file"]),
    "zones_file a folder": (CAMERA + 'zones_file = "."\n', ["zones_file", "is not a file"]),
    "zones_file bad": (CAMERA + 'zones_file = "bad.json"\n', ["camera 'north'", "zones_file", "bad.json",
                                                             "has 2 points"]),
    "zones_file not JSON": (CAMERA + 'zones_file = "text.json"\n', ["zones_file", "text.json: not JSON"]),
    "zones_file with total": (CAMERA + 'zones_file = "total.json"\n', ["zones_file", "may not be called 'total'"]),
    "exclude_file bad": (CAMERA + 'exclude_file = "bad.json"\n', ["camera 'north'", "exclude_file", "has 2 points"]),
    "alert zone unknown": (CAMERA + 'zones_file = "zones.json"\n' + ALERT.replace("gate", "gaet"),
                           ["camera 'north'", "alert 1", "zone: 'gaet' is neither 'total' nor a zone", "'gate'"]),
    "alert zone without zones": (CAMERA + ALERT, ["alert 1", "zone: 'gate'", "its zones: none"]),
    "alert above negative": (CAMERA + '[[camera.alert]]\nzone = "total"\nabove = -1\n',
                             ["camera 'north'", "alert 1", "above: -1 is out of range"]),
    "alert above a string": (CAMERA + '[[camera.alert]]\nzone = "total"\nabove = "50"\n',
                             ["alert 1", "above: '50' is not a number"]),
    "alert above missing": (CAMERA + '[[camera.alert]]\nzone = "total"\n', ["alert 1", "above: missing"]),
    "alert for_s negative": (CAMERA + '[[camera.alert]]\nzone = "total"\nabove = 3\nfor_s = -2\n',
                             ["camera 'north'", "alert 1", "for_s: -2 is out of range"]),
    "alert typo": (CAMERA + '[[camera.alert]]\nzone = "total"\nabove = 3\nfor = 2\n',
                   ["alert 1", "unknown key 'for'"]),
    "alert not a table": (CAMERA + 'alert = 5\n', ["camera 'north'", "alert: expected [[camera.alert]]"]),
    "file source missing": (CAMERA.replace("rtsp://127.0.0.1:8554/north", "clips/gone.mp4"),
                            ["camera 'north'", "source: no video file", "gone.mp4"]),
    "unknown scheme": (CAMERA.replace("rtsp://", "ftp://"), ["camera 'north'", "source: unknown URL scheme 'ftp'"]),
    "URL without host": (CAMERA.replace("127.0.0.1:8554", ""), ["source: the URL names no host"]),
    "source an integer": (CAMERA.replace('"rtsp://127.0.0.1:8554/north"', "0"),
                          ["camera 'north'", "source: 0 is not", 'written as a string: "0"']),
    "source empty": (CAMERA.replace("rtsp://127.0.0.1:8554/north", ""), ["source: '' is not"]),
    "too many cameras": ("".join(f'[[camera]]\nname = "c{index}"\nsource = "0"\n' for index in range(MAX_CAMERAS + 1)),
                         [f"{MAX_CAMERAS + 1} cameras; at most {MAX_CAMERAS}"]),
    "huge file": ("# " + "x" * MAX_SITE_BYTES + "\n" + CAMERA, [f"over {MAX_SITE_BYTES} bytes"]),
    "not UTF-8": (None, ["not UTF-8"]),
}


@pytest.mark.parametrize("case", list(BAD_SITES))
def test_a_bad_site_file_fails_in_one_line_naming_file_camera_and_field(tmp_path, case):
    text, words = BAD_SITES[case]
    (tmp_path / "zones.json").write_text(json.dumps(ZONES))
    (tmp_path / "bad.json").write_text(json.dumps({"strip": [[0, 0], [1, 1]]}))
    (tmp_path / "text.json").write_text("gate: 0 0 1 1")
    (tmp_path / "total.json").write_text(json.dumps({"total": ZONES["gate"]}))
    path = tmp_path / "site.toml"
    if text is None:
        path.write_bytes(CAMERA.encode() + b'# caf\xe9\n')
    else:
        path.write_text(text)
    with pytest.raises(ValueError) as raised:
        read_site(path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for word in words:
        assert word in message, (word, message)


def test_a_missing_site_file_is_a_value_error_too(tmp_path):
    with pytest.raises(ValueError, match="site.toml: cannot read the site file"):
        read_site(tmp_path / "site.toml")
