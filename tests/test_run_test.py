"""``run_test.py --input``: per-image lines, files written, bad files skipped, cv2-exact decoding."""
import csv

import cv2
import numpy as np
import pytest
import torch

import run_test
from inference import Counter
from util.script import EXIT_SKIPPED
from crowd_datasets.image_io import read_rgb
from inference.parity import DECISIVE_BAND, POINT_TOLERANCE_PX
from helpers import REAL_SAMPLES, REFERENCE, REFERENCE_CHECKPOINT, random_checkpoint
from tools.service_client import png_declaring


def test_folder_with_non_image_files_counts_the_others_and_says_so(tmp_path, capsys):
    random_checkpoint(tmp_path / "model.pth")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.jpg"):
        cv2.imwrite(str(photos / name), rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8))
    (photos / "notes.txt").write_text("not an image")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    code = run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(photos),
                          "--output_dir", str(out), "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == EXIT_SKIPPED
    assert "skipped notes.txt" in printed.err and "skipped broken.jpg" in printed.err
    lines = [line for line in printed.out.splitlines() if line.endswith(tuple("0123456789"))]
    assert [line.split(":")[0] for line in lines[:2]] == ["a.jpg", "b.png"]
    assert "counted 2 images" in printed.out and "2 files skipped" in printed.out
    with open(out / "counts.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["image"] for row in rows] == ["a.jpg", "b.png"]
    for row in rows:
        stem = row["image"].split(".")[0]
        with open(out / "points" / f"{stem}.csv") as file:
            points = list(csv.DictReader(file))
        assert len(points) == int(row["count"])
        assert cv2.imread(str(out / "vis" / f"{stem}.jpg")).shape == (60, 90, 3)


def test_missing_input_and_checkpoint_are_reported(tmp_path, capsys):
    random_checkpoint(tmp_path / "model.pth")
    assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(tmp_path / "none")]) == 1
    assert "none: no such file or folder" in capsys.readouterr().err
    assert run_test.main(["--weight_path", str(tmp_path / "missing.pth"), "--input", str(tmp_path)]) == 1
    assert "missing.pth" in capsys.readouterr().err


@pytest.mark.cpu_kernels
@pytest.mark.reference_fixtures
def test_reference_image_points_csv_matches_upstream(tmp_path):
    out = tmp_path / "out"
    code = run_test.main(["--weight_path", str(REFERENCE_CHECKPOINT), "--input", str(REAL_SAMPLES / "A_IMG_160.jpg"),
                          "--output_dir", str(out), "--device", "cpu"])
    assert code == 0
    reference = np.load(REFERENCE / "A_IMG_160_reference_outputs.npz")
    scores = torch.softmax(torch.from_numpy(reference["pred_logits"]), -1)[:, 1].numpy()
    decisive = reference["pred_points"][scores > 0.5 + DECISIVE_BAND]
    in_band = reference["pred_points"][np.abs(scores - 0.5) <= DECISIVE_BAND]
    rows = np.loadtxt(out / "points" / "A_IMG_160.csv", delimiter=",", skiprows=1, ndmin=2)
    written = rows[:, :2]
    distance = np.abs(written[:, None, :] - decisive[None, :, :]).max(-1)
    assert (distance.min(0) < POINT_TOLERANCE_PX).all(), "a decisive reference point is missing from the CSV"
    # Every other written point must be an anchor inside the undecidable band around 0.5.
    candidates = np.concatenate([decisive, in_band])
    nearest = np.abs(written[:, None, :] - candidates[None, :, :]).max(-1).min(1)
    assert (nearest < POINT_TOLERANCE_PX).all()
    with open(out / "counts.csv") as file:
        assert list(csv.reader(file)) == [["image", "count"], ["A_IMG_160.jpg", str(len(rows))]]


@pytest.mark.slow
def test_demo_dataset_evaluation_prints_metrics_and_mae_last(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEHAZE_P2PNET_CACHE", str(tmp_path / "cache"))
    random_checkpoint(tmp_path / "model.pth")
    code = run_test.main(["--dataset_file", "Demo_Rainy", "--weight_path", str(tmp_path / "model.pth"),
                          "--device", "cpu", "--num_workers", "0", "--output_dir", str(tmp_path / "out")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert lines[-1].startswith("mae: ") and " mse: " in lines[-1]
    assert any(line.startswith("sigma=4: precision") for line in lines)
    assert any(line.startswith("GAME(0..3):") for line in lines)
    assert "images: 24" in lines
    with open(tmp_path / "out" / "per_image.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 24 and set(rows[0]) == {"image", "gt", "pred", "abs_err"}
    errors = np.array([float(row["pred"]) - float(row["gt"]) for row in rows])
    assert np.allclose(np.abs(errors), [float(row["abs_err"]) for row in rows])
    # "mse" is the root of the mean squared error, as the field reports it
    assert lines[-1] == f"mae: {np.abs(errors).mean():.4f} mse: {np.sqrt((errors ** 2).mean()):.4f}"
    assert (tmp_path / "out" / "counts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_input_and_dataset_are_mutually_exclusive(tmp_path):
    with pytest.raises(SystemExit):
        run_test.main(["--weight_path", "w.pth"])
    with pytest.raises(SystemExit):
        run_test.main(["--weight_path", "w.pth", "--input", "x", "--dataset_file", "Demo_Hazy"])


@pytest.mark.cpu_kernels
def test_fast_mode_flag_reaches_the_network_and_counts_as_fast_mode(tmp_path, monkeypatch, capsys):
    from inference.torch_network import TorchNetwork

    random_checkpoint(tmp_path / "model.pth")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 256, size=(50, 70, 3), dtype=np.uint8))
    built = []
    original = TorchNetwork.__init__

    def recording(self, model, device="cpu", amp=False):
        built.append(amp)
        original(self, model, device, amp)

    monkeypatch.setattr(TorchNetwork, "__init__", recording)
    for flags, amp in (([], False), (["--amp"], True)):
        built.clear()
        assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(image)] + flags) == 0
        assert built == [amp], flags
        counter = Counter.from_checkpoint(tmp_path / "model.pth", device="cpu", amp=amp,
                                                   log=lambda message: None)
        assert capsys.readouterr().out.startswith(f"photo.png: {counter(str(image)).count}\n")


def test_output_piped_into_head_ends_without_a_traceback(tmp_path):
    """``run_test.py … | head -1``: the reader goes away after the first line, so a later line hits a
    closed pipe. Unbuffered output makes every line a write of its own, as on a terminal; the reader
    closes the pipe as soon as it has the first line, while 11 pictures are still to be counted."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    random_checkpoint(tmp_path / "model.pth")
    for index in range(12):
        cv2.imwrite(str(tmp_path / f"img{index:02d}.png"), np.full((256, 320, 3), 20 * index, np.uint8))
    command = [sys.executable, "run_test.py", "--weight_path", str(tmp_path / "model.pth"), "--input", str(tmp_path),
               "--device", "cpu", "--num_workers", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.communicate(timeout=300)[1].decode()
    assert first.startswith(b"img00.png: ")
    assert "Traceback" not in stderr and "Broken pipe" not in stderr, stderr
    assert process.returncode == 1


def test_output_dir_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys):
    random_checkpoint(tmp_path / "model.pth")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "file").write_text("")
    (tmp_path / "out" / "vis").parent.mkdir()
    (tmp_path / "out" / "vis").write_text("a file where a folder goes")
    cases = {tmp_path / "file": "is a file", tmp_path / "file" / "sub": "lies under",
             tmp_path / "out": "vis is a file"}
    for output_dir, message in cases.items():
        assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(tmp_path / "a.png"),
                              "--output_dir", str(output_dir)]) == 1
        captured = capsys.readouterr()
        assert message in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
        assert captured.out == "", "nothing is counted before the output folder is known to work"


def test_every_picture_gets_its_own_outputs_and_folders_and_broken_links_are_named(tmp_path, capsys):
    random_checkpoint(tmp_path / "model.pth")
    pictures = tmp_path / "pictures"
    for index, name in enumerate(["a.jpg", "a.png", "a_jpg.png"]):
        pictures.mkdir(exist_ok=True)
        cv2.imwrite(str(pictures / name), np.full((48, 64, 3), 60 * index, np.uint8))
    (pictures / "holiday").mkdir()
    (pictures / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures),
                          "--output_dir", str(out)]) == EXIT_SKIPPED
    err = capsys.readouterr().err
    assert "skipped holiday: a folder (sub-folders are not searched)" in err
    assert "skipped gone.jpg: a broken link" in err
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["a_jpg.jpg", "a_jpg_2.jpg", "a_png.jpg"]
    assert len(list((out / "points").iterdir())) == 3
    with open(out / "counts.csv") as file:
        assert [row["image"] for row in csv.DictReader(file)] == ["a.jpg", "a.png", "a_jpg.png"]


def test_a_file_name_that_is_not_utf8_is_counted_printed_and_written(tmp_path):
    """Old zip archives hold Latin-1 names; OpenCV's path handling crashed the process on them."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    random_checkpoint(tmp_path / "model.pth")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    cv2.imwrite(str(pictures / "plain.png"), np.full((48, 64, 3), 90, np.uint8))
    cv2.imwrite(str(pictures / "tmp.png"), np.full((48, 64, 3), 30, np.uint8))
    os.rename(os.fsencode(pictures / "tmp.png"), os.fsencode(pictures) + b"/caf\xe9.png")
    out = tmp_path / "out"
    finished = subprocess.run([sys.executable, "run_test.py", "--weight_path", str(tmp_path / "model.pth"),
                               "--input", str(pictures), "--output_dir", str(out), "--device", "cpu"],
                              capture_output=True, cwd=ROOT, timeout=120)
    assert finished.returncode == 0, finished.stderr.decode(errors="replace")[-2000:]
    assert b"caf\\xe9.png: " in finished.stdout and b"plain.png: " in finished.stdout
    with open(out / "counts.csv", encoding="utf-8") as file:
        assert [row["image"] for row in csv.DictReader(file)] == ["caf\\xe9.png", "plain.png"]
    assert len(os.listdir(out / "vis")) == len(os.listdir(out / "points")) == 2
    assert read_rgb(pictures / os.fsdecode(b"caf\xe9.png")).shape == (48, 64, 3)


def test_pictures_declaring_too_many_pixels_are_skipped_before_decoding(tmp_path, capsys):
    from crowd_datasets.image_io import ImageReadError
    from inference import Counter

    random_checkpoint(tmp_path / "model.pth")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    png_declaring(pictures / "huge.png", 100_000, 100_000)
    png_declaring(pictures / "large.png", 20_000, 20_000)
    png_declaring(pictures / "medium.png", 10_000, 8_000)
    cv2.imwrite(str(pictures / "small.png"), np.full((48, 64, 3), 90, np.uint8))
    code = run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures)])
    assert code == EXIT_SKIPPED
    captured = capsys.readouterr()
    assert "skipped huge.png: declares more than 179 MP, over the limit of 50 MP" in captured.err
    assert "skipped large.png: declares more than 179 MP" in captured.err
    assert "skipped medium.png: declares 10000 x 8000 pixels (80 MP), over the limit of 50 MP" in captured.err
    assert "--max_megapixels" in captured.err and "small.png: " in captured.out
    counter = Counter.from_checkpoint(tmp_path / "model.pth", device="cpu", max_pixels=1000)
    with pytest.raises(ImageReadError, match="small.png: declares 64 x 48 pixels"):
        counter(pictures / "small.png")
    # --max_megapixels moves the limit both ways: small.png has 3072 pixels
    small = ["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures / "small.png")]
    assert run_test.main(small + ["--max_megapixels", "0.003"]) == EXIT_SKIPPED
    assert "skipped small.png: declares 64 x 48 pixels" in capsys.readouterr().err
    assert run_test.main(small + ["--max_megapixels", "0.0031"]) == 0
    assert capsys.readouterr().out.startswith("small.png: ")


@pytest.mark.reference_fixtures
def test_truncated_pictures_are_skipped_by_name_and_the_rest_counted(tmp_path, capsys):
    random_checkpoint(tmp_path / "model.pth")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    whole = (REAL_SAMPLES / "A_IMG_160.jpg").read_bytes()
    (pictures / "cut.jpg").write_bytes(whole[: len(whole) * 9 // 10])
    (pictures / "whole.jpg").write_bytes(whole)
    png = cv2.imencode(".png", np.full((40, 50, 3), 200, np.uint8))[1].tobytes()
    (pictures / "cut.png").write_bytes(png[:-20])
    code = run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures)])
    captured = capsys.readouterr()
    assert code == EXIT_SKIPPED
    assert "skipped cut.jpg: truncated JPEG" in captured.err
    assert "skipped cut.png: truncated PNG" in captured.err
    assert "whole.jpg: " in captured.out and "counted 1 images" in captured.out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_for_both_scripts(tmp_path, capsys):
    import train

    random_checkpoint(tmp_path / "model.pth")
    assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(tmp_path),
                          "--device", "cuda"]) == 1
    assert capsys.readouterr().err == ("error: --device cuda was requested but PyTorch sees no CUDA device; use "
                                       "--device cpu or auto\n")
    assert train.main(["--dataset_file", "Custom", "--data_root", str(tmp_path), "--train_list", "train.list",
                       "--test_list", "test.list", "--output_dir", str(tmp_path / "run"), "--device", "cuda"]) == 1
    assert capsys.readouterr().err.startswith("error: --device cuda was requested but PyTorch sees no CUDA device")
