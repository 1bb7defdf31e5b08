"""inference/outputs.py: what counting prints and writes."""
import sys

import cv2
import numpy as np

import run_test
from util.script import EXIT_SKIPPED
from helpers import counting_checkpoint


class WriteRecorder:
    """A text stream that keeps every ``write`` call apart, as an unbuffered pipe hands them to the OS."""

    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def test_each_line_a_process_prints_leaves_in_one_write(tmp_path, monkeypatch):
    """Processes sharing a pipe mix their output at ``write`` boundaries (CI saw ``p1.png: 1168p2.png: 649``
    under ``PYTHONUNBUFFERED=1``): every line of a picture, a skipped file and the summary must be one write
    that ends in its newline."""
    counting_checkpoint(tmp_path / "model.pth")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for index in range(3):
        cv2.imwrite(str(pictures / f"p{index}.png"), np.full((64, 64, 3), 40 * index, np.uint8))
    (pictures / "notes.txt").write_text("not a picture")
    out, err = WriteRecorder(), WriteRecorder()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures),
                          "--device", "cpu", "--num_workers", "0"])
    assert code == EXIT_SKIPPED
    lines = [text for text in out.writes + err.writes if text.strip()]
    assert sum(text.startswith("p") for text in lines) == 3 and any("skipped notes.txt" in t for t in lines)
    assert all(text.endswith("\n") and text.count("\n") == 1 for text in lines), lines
