"""tools/: every tool loads (none is imported by the code the other tests run), and the benchmark writes its
report into a Markdown page under the machine and the date."""
import datetime
import importlib
import subprocess
import sys

import pytest

from helpers import ROOT

TOOLS = sorted(path.stem for path in (ROOT / "tools").glob("*.py"))


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_loads(name, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    importlib.import_module(name)


@pytest.mark.slow
def test_the_benchmark_appends_its_report_to_a_page_under_the_machine_and_the_date(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n")
    subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--only", "irm", "--markdown", str(page)],
                   cwd=tmp_path, check=True, capture_output=True, timeout=600)
    text = page.read_text()
    today = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"
    assert text.startswith("# Performance\n\n## ") and f", {today}\n" in text.splitlines()[2] + "\n"
    assert "| IRM parameters " in text and "| extra training FLOPs " in text
    assert "\n- convolution peaks (GFLOP/s, direct 3x3): float32 " in text


def test_the_snapshot_names_every_output_that_changed_appeared_or_disappeared(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    snapshot = importlib.import_module("snapshot")
    before = {"pictures": {"counts.csv": "a", "vis/x.jpg": "b"}, "video": {"counts.csv": "c"}}
    after = {"pictures": {"counts.csv": "a", "vis/x.jpg": "B", "vis/y.jpg": "d"}, "api": {"answer": "e"}}
    assert snapshot.differences(before, after) == ["api: answer", "pictures: vis/x.jpg", "pictures: vis/y.jpg",
                                                   "video: counts.csv"]
    assert snapshot.differences(before, before) == []
