"""util/training_run.py, the run-folder and resume rules of train.py: --resume continues exactly (one process
and torchrun) and lists changed settings, --init_weights starts a new run from a checkpoint's network, a
used folder is never silently replaced, the one restoration decision, and a stop (Ctrl-C, SIGTERM) says
where it stopped and how to continue."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import run_test
import train
from models import ModelSettings
from util.script import EXIT_SKIPPED
from util.training_run import decide_restoration
from helpers import ROOT, SMALL_RUN, random_checkpoint, tiny_dataset


@pytest.fixture
def finished_run(tmp_path, capsys):
    """Arguments of a tiny dataset, and a folder holding a one-epoch run on it."""
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN
    assert train.main(data + ["--epochs", "1", "--output_dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    return data, tmp_path / "run"


def test_a_checkpoint_of_another_dataset_is_refused_with_the_way_to_fine_tune(finished_run, tmp_path, capsys):
    data, run = finished_run
    content = torch.load(run / "latest.pth", weights_only=True)
    content["args"]["dataset_file"] = "Hazy_SHTA"
    torch.save(content, run / "latest.pth")
    before = (run / "latest.pth").read_bytes()
    assert train.main(data + ["--epochs", "2", "--output_dir", str(run), "--resume", "auto"]) == 1
    error = capsys.readouterr().err.strip()
    assert "--dataset_file Hazy_SHTA, not Custom" in error and "--init_weights" in error
    assert len(error.splitlines()) == 1 and (run / "latest.pth").read_bytes() == before


def test_changed_learning_rates_are_used_and_listed_and_network_flags_are_refused(finished_run, capsys):
    data, run = finished_run
    assert train.main(data + ["--epochs", "2", "--output_dir", str(run), "--resume", "auto", "--row", "3"]) == 1
    assert "--row 3: the resumed network has row 2" in capsys.readouterr().err
    faster = [arg if arg != "1e-4" else "3e-4" for arg in data]
    assert train.main(faster + ["--epochs", "2", "--output_dir", str(run), "--resume", "auto", "--lr_drop", "1"]) == 0
    printed = capsys.readouterr().out
    assert "--lr 0.0003 (was 0.0001)" in printed and "--lr_backbone 0.0003 (was 0.0001)" in printed
    assert "--lr_drop 1 (was 3500)" in printed
    # With --lr_drop 1 the new rates are divided by 10 once when epoch 1 starts and again after it.
    content = torch.load(run / "latest.pth", weights_only=True)
    assert [group["lr"] for group in content["optimizer"]["param_groups"]] == pytest.approx([3e-6, 3e-6])
    assert content["lr_scheduler"]["step_size"] == 1
    epochs = [json.loads(line) for line in (run / "log.txt").read_text().splitlines()]
    assert epochs[0]["lr"] == pytest.approx(1e-4) and epochs[1]["lr"] == pytest.approx(3e-6)


def test_resuming_into_another_folder_writes_best_mae_there(finished_run, tmp_path, capsys):
    data, run = finished_run
    other = tmp_path / "other"
    assert train.main(data + ["--epochs", "2", "--output_dir", str(other), "--resume", str(run / "latest.pth")]) == 0
    printed = capsys.readouterr().out
    assert "the best MAE is tracked afresh here" in printed
    assert (other / "best_mae.pth").is_file() and (other / "latest.pth").is_file()
    assert torch.load(other / "best_mae.pth", weights_only=True)["epoch"] == 1


@pytest.mark.slow
def test_init_weights_starts_a_new_run_from_best_mae_or_released_weights(finished_run, tmp_path, capsys):
    data, run = finished_run
    best = run / "best_mae.pth"
    assert train.main(data + ["--epochs", "1", "--output_dir", str(tmp_path / "a"), "--resume", str(best)]) == 1
    assert f"--init_weights {best}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        train.main(data + ["--epochs", "1", "--output_dir", str(tmp_path / "b"), "--resume", "auto",
                           "--init_weights", str(best)])
    assert stop.value.code == 2 and "give one of them" in capsys.readouterr().err
    assert train.main(data + ["--epochs", "1", "--output_dir", str(tmp_path / "c"), "--init_weights", str(best)]) == 0
    printed = capsys.readouterr().out
    assert f"network: weights from {best} (epoch 0)" in printed and "epochs 0..0" in printed
    # A checkpoint with other anchors and no restoration module (as released weights are): its anchors are
    # kept, the module starts afresh, and a --row that contradicts the heads is named.
    released = tmp_path / "released.pth"
    weights = random_checkpoint(released, ModelSettings(row=3, line=3), seed=5).state_dict()
    assert train.main(data + ["--epochs", "1", "--output_dir", str(tmp_path / "d"), "--init_weights", str(released),
                              "--row", "2"]) == 1
    assert "--row 2: --init_weights" in capsys.readouterr().err
    assert train.main(data + ["--epochs", "1", "--output_dir", str(tmp_path / "e"), "--init_weights", str(released),
                              "--lr", "0", "--lr_backbone", "0"]) == 0
    assert "carries no restoration module; it starts afresh" in capsys.readouterr().out
    started = torch.load(tmp_path / "e" / "latest.pth", weights_only=True)
    assert started["settings"]["row"] == 3 and started["settings"]["restoration"] is True
    for key, value in weights.items():
        if value.is_floating_point() and "running" not in key:
            assert torch.equal(started["model"][key], value), key


def train_command(data, output_dir, epochs):
    return [sys.executable, str(ROOT / "train.py")] + data + ["--epochs", str(epochs), "--output_dir", str(output_dir)]


@pytest.mark.slow
def test_sigterm_stops_with_where_and_how_to_resume_and_leaves_no_temporary_file(tmp_path):
    """As a job scheduler stops a job; with the default two loader workers."""
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN
    run = tmp_path / "run"
    process = subprocess.Popen(train_command(data, run, 1000), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    # latest.pth appears by an atomic rename once epoch 0 is saved; the signal then reaches the run at
    # whatever point of the next epochs it is in, and wherever that is, the stop must say the same.
    deadline = time.monotonic() + 240
    while not (run / "latest.pth").is_file():
        assert process.poll() is None, f"train.py ended before saving epoch 0: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no latest.pth within 240 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM in epoch ") and "latest.pth holds epoch" in last, last
    assert last.endswith("continue with the same command and --resume auto")
    assert not [path for path in run.iterdir() if path.name.endswith(".tmp")]
    saved = torch.load(run / "latest.pth", weights_only=True)["epoch"]
    assert f"holds epoch {saved}:" in last
    finished = subprocess.run(train_command(data, run, saved + 2) + ["--resume", "auto"], capture_output=True,
                              text=True, cwd=ROOT, timeout=240)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"resumed from {run / 'latest.pth'} at epoch {saved + 1}" in finished.stdout


def test_a_sigterm_during_a_checkpoint_write_takes_effect_once_the_file_is_complete(tmp_path, monkeypatch, capsys):
    """The signal arrives while latest.pth of epoch 0 is being written (deterministically, from inside the
    write): the write finishes, the file loads, and only then does the run stop, saying it holds epoch 0."""
    import models.checkpoint

    previous = signal.getsignal(signal.SIGTERM)
    real_save = models.checkpoint.torch.save
    writes = []

    def save_with_sigterm(content, file, *args, **kwargs):
        writes.append(content.get("epoch"))
        if "optimizer" in content:  # latest.pth, not best_mae.pth
            signal.raise_signal(signal.SIGTERM)
            writes.append("signalled")
        return real_save(content, file, *args, **kwargs)

    monkeypatch.setattr(models.checkpoint.torch, "save", save_with_sigterm)
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN + ["--num_workers", "0"]
    try:
        code = train.main(data + ["--epochs", "3", "--output_dir", str(tmp_path / "run")])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143
    assert writes[-2:] == [0, "signalled"], "the signal came in the middle of the write and the write went on"
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM in epoch 0; ") and "latest.pth holds epoch 0" in last, last
    assert torch.load(tmp_path / "run" / "latest.pth", weights_only=True)["epoch"] == 0
    assert not [path for path in (tmp_path / "run").iterdir() if path.name.endswith(".tmp")]


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = (torch.load(path, weights_only=True) for path in (first, second))
    assert a["epoch"] == b["epoch"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["best"] == b["best"]


def torchrun(args: list) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "train.py")] + args
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-3000:]


@pytest.mark.slow
def test_resume_under_torchrun_with_two_ranks_equals_an_uninterrupted_run(tmp_path):
    common = tiny_dataset(tmp_path / "data", num_train=4, num_test=2) + SMALL_RUN + ["--eval_freq", "2"]
    torchrun(common + ["--epochs", "4", "--output_dir", str(tmp_path / "straight")])
    torchrun(common + ["--epochs", "2", "--output_dir", str(tmp_path / "resumed")])
    torchrun(common + ["--epochs", "4", "--output_dir", str(tmp_path / "resumed"), "--resume", "auto"])
    assert_same_weights(tmp_path / "straight" / "latest.pth", tmp_path / "resumed" / "latest.pth")


def snapshot(folder: Path) -> dict:
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_a_used_output_dir_stops_a_new_run_and_resume_auto_goes_both_ways(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN + ["--num_workers", "0"]
    run = tmp_path / "run"
    assert train.main(data + ["--epochs", "1", "--output_dir", str(run), "--resume", "auto"]) == 0
    assert "resumed" not in capsys.readouterr().out, "--resume auto without latest.pth starts afresh"
    before = snapshot(run)
    assert {"latest.pth", "best_mae.pth", "log.txt"} <= {str(path) for path in before}
    for extra in ([], ["--resume", str(tmp_path / "elsewhere" / "latest.pth")]):
        assert train.main(data + ["--epochs", "2", "--output_dir", str(run)] + extra) == 1
        error = capsys.readouterr().err
        assert f"--output_dir {run} already holds a run" in error and "--resume auto" in error
        assert "--overwrite" in error and error.count("\n") == 1
        assert snapshot(run) == before, "a refused run must not touch the earlier run's files"
    assert train.main(data + ["--epochs", "2", "--output_dir", str(run), "--resume", "auto"]) == 0
    assert f"resumed from {run / 'latest.pth'} at epoch 1" in capsys.readouterr().out
    assert torch.load(run / "latest.pth", weights_only=True)["epoch"] == 1
    assert len((run / "log.txt").read_text().splitlines()) == 2
    assert train.main(data + ["--epochs", "1", "--output_dir", str(run), "--overwrite"]) == 0
    assert torch.load(run / "latest.pth", weights_only=True)["epoch"] == 0
    assert len((run / "log.txt").read_text().splitlines()) == 1
    (tmp_path / "file").write_text("")
    assert train.main(data + ["--epochs", "1", "--output_dir", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_without_training_state(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN + ["--num_workers", "0"]
    assert train.main(data + ["--epochs", "1", "--output_dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    best = str(tmp_path / "run" / "best_mae.pth")
    assert train.main(data + ["--epochs", "2", "--output_dir", str(tmp_path / "more"), "--resume", best]) == 1
    assert "not a training checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("requested,pairs,resumed,expected", [
    (None, 4, None, True), (None, 3, None, False), (None, 0, None, False),
    (True, 4, None, True), (True, 3, None, "needs a clean pair"),
    (False, 4, None, False), (False, 0, None, False),
    (None, 4, True, True), (None, 4, False, False), (None, 3, False, False),
    (None, 3, True, "needs a clean pair"), (True, 4, False, "keeps that"), (False, 4, True, "keeps that"),
    (True, 4, True, True), (False, 3, False, False),
])
def test_restoration_decision_table(requested, pairs, resumed, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            decide_restoration(requested, pairs, 4, resumed)
    else:
        on, line = decide_restoration(requested, pairs, 4, resumed)
        assert on is expected and line.startswith(f"restoration module {'on' if on else 'off'}")


def test_the_decision_reaches_dataset_and_model_and_resume_keeps_it(tmp_path, capsys):
    data = (tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN
            + ["--num_workers", "0", "--epochs", "1"])
    (tmp_path / "data" / "train_data" / "HR" / "IMG_1.png").unlink()
    assert train.main(data + ["--output_dir", str(tmp_path / "auto")]) == 0
    assert "restoration module off: 1 of 2 training images have a clean HR/ pair" in capsys.readouterr().out
    assert torch.load(tmp_path / "auto" / "latest.pth", weights_only=True)["settings"]["restoration"] is False
    assert train.main(data + ["--output_dir", str(tmp_path / "forced"), "--restoration"]) == 1
    assert "--restoration needs a clean pair" in capsys.readouterr().err
    assert not (tmp_path / "forced").exists(), "nothing is written before the decision"
    assert train.main(data[:-1] + ["2", "--output_dir", str(tmp_path / "auto"), "--resume", "auto",
                                   "--restoration"]) == 1
    assert "trained without the restoration module" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run_and_run_test_needs_no_flags(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    common = data + SMALL_RUN + ["--eval_freq", "2", "--seed", "3"]
    assert train.main(common + ["--epochs", "4", "--output_dir", str(tmp_path / "straight")]) == 0
    assert train.main(common + ["--epochs", "2", "--output_dir", str(tmp_path / "resumed")]) == 0
    assert train.main(common + ["--epochs", "4", "--output_dir", str(tmp_path / "resumed"), "--resume", "auto"]) == 0
    assert "resumed from" in capsys.readouterr().out
    straight = torch.load(tmp_path / "straight" / "latest.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "latest.pth", weights_only=True)
    assert straight["epoch"] == resumed["epoch"] == 3
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert straight["best"] == resumed["best"]
    assert straight["settings"]["restoration"] is True
    logged = [json.loads(line) for line in (tmp_path / "straight" / "log.txt").read_text().splitlines()]
    assert [entry["epoch"] for entry in logged] == [0, 1, 2, 3] and "test_mae" in logged[1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "straight" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/loss_sr", "lr", "lr/backbone", "test/mae", "test/mse"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"], "restored test images are logged"

    capsys.readouterr()
    best = tmp_path / "straight" / "best_mae.pth"
    assert run_test.main(["--dataset_file", "Custom", "--data_root", str(tmp_path / "data"), "--test_list",
                          "test.list", "--weight_path", str(best), "--num_workers", "0"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    best_content = torch.load(best, weights_only=True)
    assert last == f"mae: {best_content['best']['mae']:.4f} mse: {best_content['best']['mse']:.4f}"
    out = tmp_path / "counted"
    assert run_test.main(["--weight_path", str(best), "--input", str(tmp_path / "data" / "test_data" / "images"),
                          "--output_dir", str(out), "--save_restored"]) == EXIT_SKIPPED  # the .txt files
    restored = sorted(os.listdir(out / "restored"))
    assert restored == ["IMG_0.jpg", "IMG_1.jpg", "IMG_2.jpg"]
