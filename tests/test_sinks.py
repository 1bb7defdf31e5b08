"""inference/sinks: each output is one sink the counting loops hand every counted picture to;
``--save_points_json`` (``points_json.py``) is one added that way."""
import csv
import json

import cv2
import numpy as np
import pytest

import inference.sinks
import run_test
from helpers import counting_checkpoint
from inference.sinks import Sink

ZONES = {"left": [[0, 0], [40, 0], [40, 64], [0, 64]]}


@pytest.fixture
def pictures(tmp_path):
    counting_checkpoint(tmp_path / "model.pth")
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for index in range(3):
        cv2.imwrite(str(folder / f"p{index}.png"), rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    (tmp_path / "zones.json").write_text(json.dumps(ZONES))
    return folder


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_points_json_holds_what_the_csv_files_hold(pictures, tmp_path):
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures), "--output_dir",
                          str(out), "--zones", str(tmp_path / "zones.json"), "--save_points_json"]) == 0
    counts = {row["image"]: row for row in read_csv(out / "counts.csv")}
    assert sorted(path.name for path in (out / "points").glob("*.json")) == ["p0.json", "p1.json", "p2.json"]
    for stem in ("p0", "p1", "p2"):
        content = json.loads((out / "points" / f"{stem}.json").read_text(encoding="utf-8"))
        rows = read_csv(out / "points" / f"{stem}.csv")
        assert content["image"] == f"{stem}.png" and (content["width"], content["height"]) == (96, 64)
        assert content["count"] == len(content["points"]) == len(rows) == int(counts[f"{stem}.png"]["count"])
        assert content["zones"] == {"left": int(counts[f"{stem}.png"]["left"])}
        # The CSV rounds to 4 and 6 decimals; the JSON keeps the float32 values as computed.
        for (x, y, score), row in zip(content["points"], rows):
            assert (f"{x:.4f}", f"{y:.4f}", f"{score:.6f}") == (row["x"], row["y"], row["score"])
            assert np.float32(x) == x and np.float32(score) == score
    assert sum(1 for content in (out / "points").iterdir()) == 6


@pytest.mark.parametrize("flags, message", [
    (["--input", "clip.mp4", "--output_dir", "out"], "--save_points_json writes a file per picture; for video"),
    (["--input", "pictures"], "--save_points_json writes points/<stem>.json files: give --output_dir"),
    (["--dataset_file", "Custom"], "--save_points_json is for your own pictures (--input)"),
])
def test_points_json_where_it_cannot_apply_is_one_usage_line(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        run_test.main(["--weight_path", "model.pth", "--save_points_json", *flags])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and message in error and "Traceback" not in error


def always(sink) -> tuple:
    """An entry of ``PICTURE_SINKS`` for a sink that every run gets."""
    return ((sink, lambda options: True),)


class Recording(Sink):
    """A sink that notes what it is told, as a user's own output would be."""

    calls = []

    def start(self, source):
        self.calls.append("start")

    def add(self, counted):
        self.calls.append(("add", counted.name, counted.result.count))

    def finish(self, rows):
        self.calls.append(("finish", [(row.name, row.count) for row in rows]))

    def close(self):
        self.calls.append("close")


def test_an_added_sink_gets_every_picture_then_all_rows_then_is_closed(pictures, tmp_path, monkeypatch):
    monkeypatch.setattr(inference.sinks, "PICTURE_SINKS", inference.sinks.PICTURE_SINKS + always(Recording))
    Recording.calls = []
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures), "--output_dir",
                          str(out), "--num_workers", "0"]) == 0
    counts = [(row["image"], int(row["count"])) for row in read_csv(out / "counts.csv")]
    assert Recording.calls == [("add", name, count) for name, count in counts] + [("finish", counts), "close"]


def test_a_sink_is_closed_when_counting_stops_midway(pictures, tmp_path, monkeypatch):
    class Failing(Recording):
        def add(self, counted):
            super().add(counted)
            if len(self.calls) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(inference.sinks, "PICTURE_SINKS", inference.sinks.PICTURE_SINKS + always(Failing))
    Recording.calls = []
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures), "--output_dir",
                          str(out), "--num_workers", "0"]) == run_test.EXIT_INTERRUPTED
    assert [call if call == "close" else call[0] for call in Recording.calls] == ["add", "add", "close"]
    assert len(read_csv(out / "counts.csv")) == 2, "the rows counted before the stop are kept"
