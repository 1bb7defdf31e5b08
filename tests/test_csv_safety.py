"""counts.csv opens safely in a spreadsheet: a zone or picture name that would run there as a formula (it
begins with =, +, -, @, a tab or a carriage return; OWASP's CSV injection) is written behind a single quote,
for pictures, videos, torchrun's one-piece file and serve.py's video counts; other names and numbers are as
they were."""
import csv
import json

import cv2
import numpy as np

import run_test
from inference.outputs import CountsCsv, csv_text, video_header
from inference.video_io import VideoWriter

FORMULA = '=HYPERLINK("http://example.com/x","click")'
SQUARE = [[0, 0], [200, 0], [200, 200], [0, 200]]


def read_rows(path) -> list:
    with open(path, newline="") as file:
        return list(csv.reader(file))


def test_text_that_a_spreadsheet_would_run_is_quoted_once_and_nothing_else_is():
    for text in (FORMULA, "+cmd.jpg", "-2+3", "@SUM(A1)", "\tx", "\r=x", "-1.jpg"):
        assert csv_text(text) == "'" + text
        assert csv_text(csv_text(text)) == "'" + text
    for value in ("gate", "a.png", "", "zone 1", "a=b", "'=x", 5, -5, 2.5, -0.04, "0.125", "-0.040", "+1e3", "-5"):
        assert csv_text(value) == value


def test_every_way_counts_csv_is_written_quotes_the_names(tmp_path):
    with CountsCsv(tmp_path / "streamed.csv", ["image", "count", FORMULA, "gate"]) as counts:
        counts.add(["+cmd.jpg", 3, 1, 2])
        counts.add(["a.png", 0, 0, 0])
    CountsCsv(tmp_path / "gathered.csv", ["image", "count", FORMULA, "gate"], streaming=False).write_all(
        [["+cmd.jpg", 3, 1, 2], ["a.png", 0, 0, 0]])
    expected = [["image", "count", "'" + FORMULA, "gate"], ["'+cmd.jpg", "3", "1", "2"], ["a.png", "0", "0", "0"]]
    assert read_rows(tmp_path / "streamed.csv") == read_rows(tmp_path / "gathered.csv") == expected
    assert video_header({FORMULA: None, "gate": None}) == ["frame", "time_s", "count", "'" + FORMULA, "gate"]


def test_run_test_quotes_zone_and_picture_names_for_pictures_and_videos(counting_model, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("+cmd.jpg", "a.png"):
        cv2.imwrite(str(inputs / name), rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8))
    writer = VideoWriter(inputs / "-clip.mp4", 8.0)
    for _ in range(2):
        writer.write(rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8))
    writer.close()
    (tmp_path / "zones.json").write_text(json.dumps({FORMULA: SQUARE, "gate": SQUARE}))
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(counting_model), "--input", str(inputs), "--device", "cpu",
                          "--num_workers", "0", "--zones", str(tmp_path / "zones.json"), "--output_dir", str(out)]) == 0
    pictures = read_rows(out / "counts.csv")
    assert pictures[0] == ["image", "count", "'" + FORMULA, "gate"]
    assert sorted(row[0] for row in pictures[1:]) == ["'+cmd.jpg", "a.png"]
    assert (out / "vis" / "+cmd.jpg").is_file(), "only the cell is quoted, not the picture's own files"
    video = read_rows(out / "-clip" / "counts.csv")
    assert video[0] == ["frame", "time_s", "count", "'" + FORMULA, "gate"]
    assert len(video) == 3
    for row in pictures[1:] + video[1:]:
        assert row[-2] == row[-1] and all(float(cell) >= 0 for cell in row[1:]), "the counts are plain numbers"
