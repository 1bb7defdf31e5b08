"""tools/reproduce.py: the paper's table in one command, end to end. Two stand-in datasets in the real layouts
(Hazy_JHU with upstream's list file, Hazy_SHARGBD as a plain folder) under a temporary --data_root, and two
stand-in released checkpoints (random weights) served from 127.0.0.1 through the mirror variable into an empty
cache: the table gives what run_test.py prints for each pair, missing datasets are named with their links,
a second run downloads nothing."""
import contextlib
import http.server
import importlib
import io
import json
import re
import shutil
import threading
from types import SimpleNamespace

import pytest
import torch

import run_test
from crowd_datasets.demo import generate_split
from helpers import ROOT
from models import ModelSettings, PointCounter, save_checkpoint
from util.script import EXIT_FAILED, EXIT_SKIPPED

# Checkpoint name -> the seed of its stand-in's random weights (different, so that a wrong pairing shows).
STANDINS = {"Hazy_JHU": 3, "Hazy_SHTRGBD": 4}
# Dataset -> its stand-in test images; tiny pictures keep an evaluation well under a second.
TEST_IMAGES = {"Hazy_JHU": 3, "Hazy_SHARGBD": 2}
PICTURE_SIZE = (128, 96)  # (width, height) in pixels
CPU = ["--device", "cpu", "--num_workers", "0"]


class Mirror(http.server.ThreadingHTTPServer):
    """Serves the files of ``folder`` by name (404 for others) and lists the paths asked for in ``requests``."""

    daemon_threads = True

    def __init__(self, folder):
        self.folder = folder
        self.requests = []
        super().__init__(("127.0.0.1", 0), MirrorHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        path = self.server.folder / self.path.lstrip("/")
        if "/" in self.path.lstrip("/") or not path.is_file():
            self.send_error(404)
            return
        content = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args):
        pass  # the tests' output shows only what the project prints


def standin_checkpoint(path, seed: int) -> None:
    """Random weights whose person scores spread around 0.5 (as helpers.counting_checkpoint), from ``seed``."""
    torch.manual_seed(seed)
    model = PointCounter(ModelSettings()).eval()
    with torch.no_grad():
        model.classification.output.weight.mul_(30)
    save_checkpoint(path, model, model.settings)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirror")
    for name, seed in STANDINS.items():
        standin_checkpoint(folder / f"{name}_best.pth", seed)
    server = Mirror(folder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
    shutil.rmtree(folder)  # 2 x 72 MB


@pytest.fixture(scope="module")
def reproduce(tmp_path_factory, mirror):
    """The tool, with an empty cache folder and the mirror in place of Google Drive for the whole module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEHAZE_P2PNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", mirror.url)
        patch.syspath_prepend(str(ROOT / "tools"))
        yield importlib.import_module("reproduce")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Hazy_JHU as the authors ship it (images under datasets/, annotations and test.list under
    crowd_datasets/) and Hazy_SHARGBD in the plain layout (each annotation beside its image)."""
    root = tmp_path_factory.mktemp("data")
    jhu = root / "datasets" / "Hazy_JHU" / "test_data"
    generate_split(jhu, TEST_IMAGES["Hazy_JHU"], "haze", seed=7, size=PICTURE_SIZE)
    annotations = root / "crowd_datasets" / "Hazy_JHU" / "test_data"
    annotations.mkdir(parents=True)
    lines = []
    for annotation in sorted((jhu / "images").glob("*.txt")):
        annotation.rename(annotations / annotation.name)
        lines.append(f"datasets/Hazy_JHU/test_data/images/{annotation.stem}.jpg "
                     f"crowd_datasets/Hazy_JHU/test_data/{annotation.name}")
    (annotations.parent / "test.list").write_text("\n".join(lines) + "\n")
    generate_split(root / "datasets" / "Hazy_ShanghaiTechRGBD" / "test_data", TEST_IMAGES["Hazy_SHARGBD"], "haze",
                   seed=8, size=PICTURE_SIZE)
    return root


def run(reproduce, argv) -> SimpleNamespace:
    """The tool's exit code, stdout and stderr lines for ``argv``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = reproduce.main(argv)
    return SimpleNamespace(code=code, out=out.getvalue().splitlines(), err=err.getvalue().splitlines())


@pytest.fixture(scope="module")
def first_run(reproduce, mirror, data_root, tmp_path_factory):
    """Every dataset, from an empty cache, with --json and --output_dir."""
    folder = tmp_path_factory.mktemp("first")
    result = run(reproduce, ["--data_root", str(data_root), *CPU, "--json", str(folder / "table.json"),
                             "--output_dir", str(folder / "out")])
    result.table = json.loads((folder / "table.json").read_text())
    result.rows = {row["dataset"]: row for row in result.table["rows"]}
    result.output_dir = folder / "out"
    result.requests = list(mirror.requests)
    return result


def evaluated(first_run) -> dict:
    return {name: row for name, row in first_run.rows.items() if row["status"] == "evaluated"}


def test_the_table_gives_what_run_test_prints_for_each_pair(first_run, mirror, data_root, capsys):
    assert first_run.code == 0, first_run.err
    before = len(mirror.requests)
    assert set(evaluated(first_run)) == set(TEST_IMAGES)
    printed = {line.split()[0]: line.split() for line in first_run.out[1:]}
    for dataset, row in evaluated(first_run).items():
        code = run_test.main(["--dataset_file", dataset, "--weight_path", row["checkpoint"],
                              "--data_root", str(data_root), *CPU])
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert code == 0 and last == f"mae: {row['mae']:.4f} mse: {row['mse']:.4f}", (dataset, last)
        assert row["images"] == TEST_IMAGES[dataset]
        assert printed[dataset][1:6] == [row["checkpoint"], str(row["images"]), f"{row['mae']:.2f}",
                                         f"{row['mse']:.2f}", f"{row['paper_mae']:.2f}"]
    assert evaluated(first_run)["Hazy_SHARGBD"]["checkpoint"] == "Hazy_SHTRGBD"
    assert len(mirror.requests) == before  # run_test.py found both in the cache the tool filled


def test_missing_datasets_are_named_with_their_links_and_the_others_are_evaluated(reproduce, first_run):
    missing = [name for name in reproduce.PAPER_TABLE if name not in TEST_IMAGES]
    assert [first_run.rows[name]["status"] for name in missing] == ["missing"] * len(missing)
    for name in missing:
        lines = [line for line in first_run.err if line.startswith(f"{name}: ")]
        assert len(lines) == 1 and lines[0].startswith(f"{name}: not found under --data_root "), lines
        for _, url in reproduce.PAPER_TABLE[name].downloads:
            assert url in lines[0]
        assert first_run.rows[name]["note"] == lines[0]
    table = {line.split()[0]: line for line in first_run.out[1:]}
    assert first_run.out[0].split()[:3] == ["dataset", "checkpoint", "images"]
    assert list(table) == list(reproduce.PAPER_TABLE)
    assert all(" missing " in table[name] for name in missing)


def test_the_json_holds_the_table_with_every_metric(reproduce, first_run):
    assert first_run.table["device"] == "cpu" and first_run.table["amp"] is False
    for name, row in first_run.rows.items():
        paper = reproduce.PAPER_TABLE[name]
        assert (row["checkpoint"], row["paper_mae"], row["paper_mse"]) == (paper.checkpoint, paper.mae, paper.mse)
    for row in evaluated(first_run).values():
        assert row["mae_diff"] == pytest.approx(row["mae"] - row["paper_mae"])
        assert row["mse_diff"] == pytest.approx(row["mse"] - row["paper_mse"])
        assert row["note"] is None and {"nap", "f1_s4", "game0"} <= set(row["metrics"])
        assert row["metrics"]["mae"] == row["mae"]


def test_the_output_dir_keeps_what_run_test_writes_per_dataset(first_run):
    assert sorted(path.name for path in first_run.output_dir.iterdir()) == sorted(TEST_IMAGES)
    for dataset, row in evaluated(first_run).items():
        folder = first_run.output_dir / dataset
        assert json.loads((folder / "metrics.json").read_text()) == row["metrics"]
        assert len((folder / "per_image.csv").read_text().splitlines()) == 1 + row["images"]
        assert len(list((folder / "predictions").glob("*.csv"))) == row["images"]
        assert len(list((folder / "truth").glob("*.csv"))) == row["images"]


def test_a_second_run_downloads_nothing_and_takes_a_subset_in_markdown(reproduce, mirror, data_root, first_run):
    assert sorted(first_run.requests) == sorted(f"/{name}_best.pth" for name in STANDINS)
    before = len(mirror.requests)
    second = run(reproduce, ["--data_root", str(data_root), *CPU, "--datasets", "Hazy_SHTRGBD", "--markdown"])
    assert second.code == 0 and len(mirror.requests) == before, second.err
    row = first_run.rows["Hazy_SHARGBD"]
    assert second.out == ["| " + " | ".join(reproduce.COLUMNS) + " |", "| " + " | ".join(["---"] * 9) + " |",
                          f"| Hazy_SHARGBD | Hazy_SHTRGBD | {row['images']} | {row['mae']:.2f} | {row['mse']:.2f} | "
                          f"8.48 | 12.61 | {row['mae_diff']:+.2f} | {row['mse_diff']:+.2f} |"]


def test_a_checkpoint_that_cannot_be_downloaded_is_one_line(reproduce, mirror, tmp_path):
    generate_split(tmp_path / "datasets" / "Hazy_ShanghaiTech" / "part_B" / "test_data", 1, "haze", seed=9,
                   size=PICTURE_SIZE)
    result = run(reproduce, ["--data_root", str(tmp_path), *CPU, "--datasets", "Hazy_SHTB", "Hazy_JHU",
                             "--json", str(tmp_path / "table.json")])
    rows = {row["dataset"]: row for row in json.loads((tmp_path / "table.json").read_text())["rows"]}
    assert result.code == EXIT_FAILED  # nothing could be evaluated
    assert list(rows) == ["Hazy_SHTB", "Hazy_JHU"]  # in the order asked
    assert (rows["Hazy_SHTB"]["status"], rows["Hazy_JHU"]["status"]) == ("no checkpoint", "missing")
    lines = [line for line in result.err if line.startswith("Hazy_SHTB: ")]
    assert lines == [rows["Hazy_SHTB"]["note"]]
    assert re.match(r"Hazy_SHTB: cannot download DH_SHTB from http://127\.0\.0\.1:\d+/DH_SHTB_best\.pth "
                    r"\(HTTP 404 .*\): download it from https://drive\.google\.com/", lines[0]), lines[0]
    assert mirror.requests[-1] == "/DH_SHTB_best.pth"


@pytest.mark.parametrize("argv,message", [
    (["--datasets", "Hazy_XYZ"], "argument --datasets: invalid choice: 'Hazy_XYZ' (choose from "),
    (["--data_root", "no/such/folder"], "--data_root no/such/folder: no such folder"),
    (["--json", "."], "--json . is a folder; expected a file name"),
])
def test_bad_arguments_are_one_usage_line(reproduce, data_root, argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["--data_root", str(data_root), *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and f": error: {message}" in lines[-1], lines
    assert not any(": error: " in line for line in lines[:-1])


def test_the_links_pairs_and_numbers_are_those_of_the_docs(reproduce):
    docs = (ROOT / "docs" / "datasets.md").read_text()
    for dataset, paper in reproduce.PAPER_TABLE.items():
        row = next(line for line in docs.splitlines() if line.startswith("| `") and f"`{dataset}`" in line)
        assert all(url in row for _, url in paper.downloads), dataset
    pairs = dict(re.findall(r"--dataset_file (\S+) +--weight_path (\S+) +--data_root /data/dehaze", docs))
    assert pairs == {dataset: paper.checkpoint for dataset, paper in reproduce.PAPER_TABLE.items()}
    published = docs[docs.index("Published results (MAE / MSE):"):].split("\n\n")[0]
    numbers = {(float(mae), float(mse)) for mae, mse in re.findall(r"(\d+\.\d+) / (\d+\.\d+)", published)}
    assert numbers == {(paper.mae, paper.mse) for paper in reproduce.PAPER_TABLE.values()}


def test_a_broken_list_is_one_line_and_downloads_nothing(reproduce, mirror, tmp_path):
    listed = tmp_path / "crowd_datasets" / "Hazy_ShanghaiTech" / "part_B" / "test.list"
    listed.parent.mkdir(parents=True)
    listed.write_text("datasets/Hazy_ShanghaiTech/part_B/test_data/images/IMG_1.jpg part_B/IMG_1.txt\n")
    before = len(mirror.requests)
    result = run(reproduce, ["--data_root", str(tmp_path), *CPU, "--datasets", "Hazy_SHTB"])
    assert result.code == EXIT_FAILED and len(mirror.requests) == before
    assert [line for line in result.err if line.startswith("Hazy_SHTB: ")] == [
        f"Hazy_SHTB: {listed}, line 1: image not found: "
        f"{tmp_path / 'datasets/Hazy_ShanghaiTech/part_B/test_data/images/IMG_1.jpg'}"]
    assert result.out[1].split()[:3] == ["Hazy_SHTB", "DH_SHTB", "failed"]


@pytest.mark.parametrize("statuses,code", [
    (["evaluated", "missing"], 0),
    (["evaluated", "no checkpoint", "missing"], EXIT_SKIPPED),
    (["evaluated", "failed"], EXIT_SKIPPED),
    (["failed", "missing"], EXIT_FAILED),
    (["missing", "missing"], EXIT_FAILED),
])
def test_the_exit_code_says_whether_every_dataset_found_was_evaluated(reproduce, statuses, code):
    paper = reproduce.PAPER_TABLE["Hazy_JHU"]
    assert reproduce.exit_code([reproduce.Outcome(paper, status) for status in statuses]) == code
