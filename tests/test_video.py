"""Video input of ``run_test.py``: per-frame counts equal the frames counted as pictures, vis.mp4 holds
every counted frame, strides, folders that mix pictures and videos, broken videos, Ctrl-C."""
import csv
import time
from datetime import datetime

import cv2
import numpy as np
import pytest

import run_test
from util.script import EXIT_INTERRUPTED, EXIT_SKIPPED
import inference.video
from inference.inputs import source_name
from inference import Counter
from crowd_datasets.demo import make_scene
from inference.video_io import VideoSource, VideoWriter
from helpers import counting_checkpoint

FPS = 8.0


def write_clip(path, size=(320, 240)):
    """A short mp4 of six demo scenes, its last two frames repeated; returns the number of frames."""
    rng = np.random.default_rng(0)
    frames = [make_scene(rng, size).image for _ in range(6)]
    frames += frames[-2:]
    writer = VideoWriter(path, FPS)
    for frame in frames:
        writer.write(frame)
    writer.close()
    return len(frames)


def decoded_frames(path) -> list:
    """Every frame of the video at ``path`` as OpenCV decodes it (BGR)."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def read_csv(path) -> list:
    with open(path) as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A folder with ``clip.mp4``, its frames as pictures (``frames/``) and ``model.pth`` to count them."""
    folder = tmp_path_factory.mktemp("video")
    counting_checkpoint(folder / "model.pth")
    frames = write_clip(folder / "clip.mp4")
    # The decoded frames, losslessly, to count as pictures.
    pictures = folder / "frames"
    pictures.mkdir()
    decoded = decoded_frames(folder / "clip.mp4")
    assert len(decoded) == frames
    for index, frame in enumerate(decoded):
        cv2.imwrite(str(pictures / f"{index:06d}.png"), frame)
    return folder


@pytest.fixture(scope="module")
def picture_counts(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("pictures")
    assert run_test.main(["--weight_path", str(clip / "model.pth"), "--input", str(clip / "frames"),
                          "--output_dir", str(out)]) == 0
    return [int(row["count"]) for row in read_csv(out / "counts.csv")]


def test_video_counts_equal_the_frames_counted_as_pictures(clip, picture_counts, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_test.main(["--weight_path", str(clip / "model.pth"), "--input", str(clip / "clip.mp4"),
                          "--output_dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    rows = read_csv(out / "counts.csv")
    assert [int(row["frame"]) for row in rows] == list(range(len(picture_counts)))
    assert [int(row["count"]) for row in rows] == picture_counts
    assert len(set(picture_counts)) > 2
    assert [float(row["time_s"]) for row in rows] == [round(index / FPS, 3) for index in range(len(rows))]
    assert f"frame 5 ({5 / FPS:.2f} s): {picture_counts[5]}" in printed
    vis = decoded_frames(out / "vis.mp4")
    assert len(vis) == len(picture_counts) and vis[0].shape == (240, 320, 3)
    assert cv2.VideoCapture(str(out / "vis.mp4")).get(cv2.CAP_PROP_FPS) == FPS
    assert not (out / "points").exists()


def test_frame_stride_counts_every_nth_frame_and_writes_their_points(clip, picture_counts, tmp_path):
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(clip / "model.pth"), "--input", str(clip / "clip.mp4"),
                          "--output_dir", str(out), "--frame_stride", "3", "--save_frame_points"]) == 0
    rows = read_csv(out / "counts.csv")
    assert [int(row["frame"]) for row in rows] == [0, 3, 6]
    assert [int(row["count"]) for row in rows] == picture_counts[::3]
    assert len(decoded_frames(out / "vis.mp4")) == 3
    assert cv2.VideoCapture(str(out / "vis.mp4")).get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 3, abs=1e-3)
    for row in rows:
        points = read_csv(out / "points" / f"{int(row['frame']):06d}.csv")
        assert len(points) == int(row["count"])


def test_a_folder_mixing_pictures_and_videos_counts_both_and_names_broken_videos(clip, picture_counts, tmp_path,
                                                                                   capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes((clip / "clip.mp4").read_bytes())
    (folder / "clip.png").write_bytes((clip / "frames" / "000004.png").read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    writer = cv2.VideoWriter(str(folder / "cut.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 128))
    for _ in range(10):
        writer.write(np.random.default_rng(0).integers(0, 256, (128, 160, 3), dtype=np.uint8))
    writer.release()
    data = (folder / "cut.avi").read_bytes()
    (folder / "cut.avi").write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    code = run_test.main(["--weight_path", str(clip / "model.pth"), "--input", str(folder), "--output_dir", str(out)])
    printed = capsys.readouterr()
    assert code == EXIT_SKIPPED
    assert "skipped broken.mp4: cannot be opened as a video" in printed.err
    assert "cut.avi: the video ended after 5 of the 10 frames its file declares" in printed.err
    assert read_csv(out / "counts.csv") == [{"image": "clip.png", "count": str(picture_counts[4])}]
    assert [int(row["count"]) for row in read_csv(out / "clip_mp4" / "counts.csv")] == picture_counts
    assert len(decoded_frames(out / "clip_mp4" / "vis.mp4")) == len(picture_counts)
    assert len(read_csv(out / "cut" / "counts.csv")) == 5
    assert "counted 1 images" in printed.out and "3 videos" in printed.out and "2 files skipped" in printed.out


class Stream(VideoSource):
    """The clip read as a stream would be, as fast as it arrives (``is_live_source`` needs a network).
    ``opened`` holds the streams made, for tests that wait for a reader thread."""

    opened = []

    def __init__(self, source, stride=1, max_pixels=None, **keywords):
        super().__init__(source, stride, max_pixels, **keywords)
        self.live, self.frame_count = True, None
        Stream.opened.append(self)


class LoopingCapture:
    """A video file played in a loop at 50 frames per second: a camera's frames, which never end. The pace
    only keeps the reader from spinning; no assertion depends on which frame is the newest when asked."""

    def __init__(self, path):
        self.path, self.capture = str(path), cv2.VideoCapture(str(path))

    def grab(self) -> bool:
        time.sleep(0.02)
        if self.capture.grab():
            return True
        self.capture.release()
        self.capture = cv2.VideoCapture(self.path)
        return self.capture.grab()

    def retrieve(self):
        return self.capture.retrieve()

    def release(self):
        self.capture.release()


class Camera(Stream):
    def __init__(self, source, stride=1, max_pixels=None, **keywords):
        super().__init__(source, stride, max_pixels, **keywords)
        self.capture.release()
        self.capture = LoopingCapture(source)


def test_ctrl_c_keeps_the_frames_counted_so_far(clip, picture_counts, tmp_path, monkeypatch, capsys):
    predict = Counter.predict
    calls = []

    def interrupted_at_the_fourth_frame(self, image, *options):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return predict(self, image, *options)

    monkeypatch.setattr(Counter, "predict", interrupted_at_the_fourth_frame)
    out = tmp_path / "file"
    args = ["--weight_path", str(clip / "model.pth"), "--input", str(clip / "clip.mp4"), "--output_dir"]
    assert run_test.main(args + [str(out)]) == EXIT_INTERRUPTED
    assert "stopped by Ctrl-C; what was counted so far is written" in capsys.readouterr().err
    assert [int(row["count"]) for row in read_csv(out / "counts.csv")] == picture_counts[:3]
    assert len(decoded_frames(out / "vis.mp4")) == 3

    # A camera or stream has no end: Ctrl-C is how it stops, and the run ends normally.
    monkeypatch.setattr(inference.video, "VideoSource", Camera)
    calls.clear()
    out = tmp_path / "camera"
    assert run_test.main(args + [str(out)]) == 0
    rows = read_csv(out / "counts.csv")
    assert f"clip.mp4: stopped by Ctrl-C after frame {rows[-1]['frame']}" in capsys.readouterr().out
    # A camera's runs may follow each other into one folder: each run's video is named by its UTC start.
    (vis,) = out.glob("vis-*.mp4")
    assert len(rows) == 3 and len(decoded_frames(vis)) == 3
    assert [int(row["count"]) for row in rows] == [picture_counts[int(row["frame"]) % len(picture_counts)]
                                                    for row in rows]


def test_a_cameras_runs_into_one_folder_append_and_a_video_files_run_rewrites(clip, tmp_path, monkeypatch, capsys):
    predict, calls = Counter.predict, []

    def interrupted_at_each_third_frame(self, image, *options):
        calls.append(1)
        if len(calls) % 3 == 0:
            raise KeyboardInterrupt
        return predict(self, image, *options)

    monkeypatch.setattr(Counter, "predict", interrupted_at_each_third_frame)
    monkeypatch.setattr(inference.video, "VideoSource", Camera)
    # The clip stands for a camera from the command line on: its name as a str, as a URL's would be.
    monkeypatch.setattr(run_test, "video_source", str)
    out = tmp_path / "out"
    args = ["--weight_path", str(clip / "model.pth"), "--input", str(clip / "clip.mp4"), "--output_dir", str(out),
            "--save_frame_points", "--frame_stride", "4"]
    assert run_test.main(args) == 0
    first = sorted((out / "points").iterdir())
    kept = {path.name: path.read_bytes() for path in first}
    assert run_test.main(args) == 0
    text = (out / "counts.csv").read_text()
    rows = read_csv(out / "counts.csv")
    assert text.count("frame,time_s,time,count") == 1 and len(rows) == 4
    frames = [int(row["frame"]) for row in rows]
    assert frames == sorted(set(frames)), "the second run numbers its frames on from the first's last"
    assert sorted(path.name for path in (out / "points").iterdir()) == [f"{frame:06d}.csv" for frame in frames]
    assert {path.name: path.read_bytes() for path in first} == kept, "no earlier points file was replaced"
    assert len(list(out.glob("vis-*.mp4"))) == 2 and not (out / "vis.mp4").exists()
    assert f"frame {frames[2]} (" in capsys.readouterr().out

    # A video file's run writes its outputs anew, as before, whatever the folder held.
    monkeypatch.undo()
    assert run_test.main(args) == 0
    assert list(read_csv(out / "counts.csv")[0]) == ["frame", "time_s", "count"]
    assert int(read_csv(out / "counts.csv")[0]["frame"]) == 0 and (out / "vis.mp4").is_file()


@pytest.mark.parametrize("stride", [1, 3])
def test_a_stream_faster_than_the_network_is_counted_at_its_newest_frames(clip, picture_counts, tmp_path, monkeypatch,
                                                                          capsys, stride):
    predict = Counter.predict

    def slow(self, image, *options):
        # A network slower than the stream, deterministically: it returns only once the reader thread has
        # taken every frame of the clip, so the next frame counted must be the newest, the last one.
        Stream.opened[-1].reader.join(timeout=120)
        assert not Stream.opened[-1].reader.is_alive()
        return predict(self, image, *options)

    monkeypatch.setattr(Counter, "predict", slow)
    monkeypatch.setattr(inference.video, "VideoSource", Stream)
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(clip / "model.pth"), "--input", str(clip / "clip.mp4"),
                          "--output_dir", str(out), "--frame_stride", str(stride)]) == 0
    rows = read_csv(out / "counts.csv")
    frames = [int(row["frame"]) for row in rows]
    assert list(rows[0]) == ["frame", "time_s", "time", "count"]
    arrived = [datetime.strptime(row["time"], "%Y-%m-%dT%H:%M:%S.%fZ") for row in rows]
    assert arrived == sorted(arrived) and all(len(row["time"]) == len("2026-12-07T23:40:05.123Z") for row in rows)
    assert all(later - earlier >= stride for earlier, later in zip(frames, frames[1:]))
    assert frames[-1] >= len(picture_counts) - stride and len(frames) < len(picture_counts)
    assert [int(row["count"]) for row in rows] == [picture_counts[frame] for frame in frames]
    assert f"; {len(picture_counts)} read)" in capsys.readouterr().out


def test_video_mistakes_are_one_line(tmp_path, monkeypatch, capsys):
    import inference.video_io
    from helpers import random_checkpoint

    opened = []

    class Unanswered:
        """A camera that does not answer, whatever cameras this machine has."""

        def __init__(self, source):
            opened.append(source)

        def isOpened(self):
            return False

    monkeypatch.setattr(inference.video_io.cv2, "VideoCapture", Unanswered)
    random_checkpoint(tmp_path / "model.pth")
    args = ["--weight_path", str(tmp_path / "model.pth"), "--input"]
    assert run_test.main(args + ["9"]) == EXIT_SKIPPED
    assert opened == [9], "a digit is a camera index"
    monkeypatch.undo()
    assert "skipped camera 9: cannot be opened as a video" in capsys.readouterr().err
    assert run_test.main(args + [str(tmp_path / "missing.mp4")]) == 1
    assert "missing.mp4: no such file" in capsys.readouterr().err
    for flags, message in ((["--frame_stride", "0"], "argument --frame_stride: must be at least 1, got 0"),
                           (["--save_restored", "--output_dir", str(tmp_path)], "--save_restored writes restored")):
        with pytest.raises(SystemExit) as stop:
            run_test.main(args + [str(tmp_path / "clip.mp4")] + flags)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_cameras_and_stream_urls_are_told_from_files_and_printed_without_credentials():
    from pathlib import Path

    from inference.video_io import is_live_source

    for live in ("0", "12", "rtsp://cam.local/stream", "RTSP://cam.local/s", "http://host:8080/video.mjpg",
                 "rtmp://host/live", "udp://239.0.0.1:1234"):
        assert is_live_source(live), live
    for file in ("clip.mp4", "0.mp4", "videos/rtsp.mkv", "-1", "file:///tmp/clip.mp4"):
        assert not is_live_source(file), file
    assert source_name("rtsp://admin:s3cret@cam.local:554/stream") == "rtsp://cam.local:554/stream"
    assert source_name("http://user@host/video") == "http://host/video"
    assert source_name("rtsp://cam.local/a@b") == "rtsp://cam.local/a@b", "an @ in the path is kept"
    assert source_name("3") == "camera 3"
    assert source_name(Path("videos/clip.mp4")) == "clip.mp4"


def test_zones_of_a_video_get_a_column_each_counted_from_the_frame_points(clip, tmp_path, capsys):
    from inference.zones import inside, read_polygons

    (tmp_path / "zones.json").write_text('{"left": [[0, 0], [160, 0], [160, 240], [0, 240]], '
                                         '"middle": [[100, 60], [220, 60], [220, 180], [100, 180]], '
                                         '"away": [[900, 900], [990, 900], [990, 990]]}')
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(clip / "model.pth"), "--input", str(clip / "clip.mp4"),
                          "--output_dir", str(out), "--zones", str(tmp_path / "zones.json"),
                          "--save_frame_points"]) == 0
    rows = read_csv(out / "counts.csv")
    assert list(rows[0]) == ["frame", "time_s", "count", "left", "middle", "away"]
    assert capsys.readouterr().err.count("warning: zone 'away' lies wholly outside clip.mp4's frames") == 1
    zones = read_polygons(tmp_path / "zones.json")
    for row in rows:
        points = np.array([[float(p["x"]), float(p["y"])] for p in read_csv(out / "points" /
                                                                            f"{int(row['frame']):06d}.csv")])
        assert int(row["count"]) == len(points)
        for name, polygon in zones.items():
            assert int(row[name]) == int(inside(points.reshape(-1, 2), polygon).sum())
    assert sum(int(row["left"]) for row in rows) > 0 and sum(int(row["middle"]) for row in rows) > 0


def test_a_videos_heatmap_and_count_chart_are_written_at_the_end_and_on_ctrl_c(clip, tmp_path, monkeypatch, capsys):
    out = tmp_path / "whole"
    args = ["--weight_path", str(clip / "model.pth"), "--input", str(clip / "clip.mp4"), "--save_density"]
    assert run_test.main(args + ["--output_dir", str(out)]) == 0
    assert cv2.imread(str(out / "heatmap.jpg")).shape == (240, 320, 3)
    assert cv2.imread(str(out / "counts.png")) is not None
    assert "heatmap.jpg" in capsys.readouterr().out
    predict, calls = Counter.predict, []

    def interrupted_at_the_third_frame(self, image, *options):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return predict(self, image, *options)

    monkeypatch.setattr(Counter, "predict", interrupted_at_the_third_frame)
    assert run_test.main(args + ["--output_dir", str(tmp_path / "cut")]) == EXIT_INTERRUPTED
    assert (tmp_path / "cut" / "heatmap.jpg").is_file() and (tmp_path / "cut" / "counts.png").is_file()


class GrowingFrames(VideoSource):
    """A video whose frames from the fourth on are larger than the limit (a stream may change its size)."""

    def decode(self):
        if self.frames_read > 3:
            self.max_pixels = 1000
        return super().decode()


def test_a_frame_over_the_pixel_limit_midway_stops_the_video_in_one_line(clip, picture_counts, tmp_path,
                                                                         monkeypatch, capsys):
    monkeypatch.setattr(inference.video, "VideoSource", GrowingFrames)
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(clip / "model.pth"), "--input", str(clip / "clip.mp4"),
                          "--output_dir", str(out)]) == EXIT_SKIPPED
    error = capsys.readouterr().err
    assert "skipped the rest of clip.mp4: frame 3 has 320 x 240 pixels, over the limit of 0.001 MP" in error
    assert "Traceback" not in error
    assert [int(row["count"]) for row in read_csv(out / "counts.csv")] == picture_counts[:3]
