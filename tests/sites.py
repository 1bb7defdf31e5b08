"""A site file of two cameras for the tests of ``serve.py --site``: ``lobby``, a looping file with the zone
``left`` and an alert raised when more than 1 person stays in it for 1 s, and ``street``, a stream. Each shows
one still scene, so every count of a camera is the same."""
import json

import cv2
import numpy as np

from streams import scene_jpegs

LEFT = {"left": [[0, 0], [160, 0], [160, 240], [0, 240]]}


def write_still_site(folder, stream_url: str) -> None:
    """``folder/site.toml`` with the two cameras (``street`` reading ``stream_url``), ``lobby.avi`` and
    ``zones.json`` beside it."""
    scene = cv2.imdecode(np.frombuffer(scene_jpegs(1, seed=2)[0], np.uint8), cv2.IMREAD_COLOR)
    # Motion JPEG: every frame is the same JPEG and decodes to the same pixels (an mp4's predicted frames
    # differ a little from its key frames, and so would their counts).
    writer = cv2.VideoWriter(str(folder / "lobby.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    for _ in range(10):
        writer.write(scene)
    writer.release()
    (folder / "zones.json").write_text(json.dumps(LEFT))
    (folder / "site.toml").write_text(f'''
[[camera]]
name = "lobby"
source = "lobby.avi"
every_s = 1
zones_file = "zones.json"
[[camera.alert]]
zone = "left"
above = 1
for_s = 1

[[camera]]
name = "street"
source = "{stream_url}"
every_s = 1
''')
