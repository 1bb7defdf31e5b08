"""Training as users run it (default two loader workers): new crops every epoch, exact resume on one
process and under torchrun, mixed precision, runs that are never silently replaced, and the one
restoration decision."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine
import train
from crowd_datasets import build_dataset
from models import ModelSettings, PointCounter, build_criterion
from models.precision import autocast_dtype
from util.distributed import DistributedState
from crowd_datasets import collate_crops
from util.options import criterion_options, dataset_options
from util.training_run import decide_restoration
from helpers import ROOT, random_checkpoint, tiny_dataset

# Small and quick, but with the default --num_workers (2).
SMALL = ["--backbone_weights", "none", "--crop_size", "64", "--batch_size", "2", "--num_crops", "2",
         "--device", "cpu", "--lr", "1e-4", "--lr_backbone", "1e-4"]


def crops_per_epoch(args, dataset, epochs=(0, 1)) -> dict:
    """``{epoch: {image_id: crops [K, 3, c, c]}}`` read through the loaders ``train.py`` builds."""
    sampler, loader, _ = train.make_loaders(args, DistributedState(), dataset, dataset)
    seen = {}
    for epoch in epochs:
        sampler.set_epoch(epoch)
        seen[epoch] = {}
        for images, targets in loader:
            for k in range(0, len(targets), args.num_crops):
                seen[epoch][targets[k]["image_id"]] = images[k:k + args.num_crops]
    return seen


def test_loader_workers_draw_new_crops_every_epoch_the_same_as_the_main_process(tmp_path):
    args = train.build_parser().parse_args(tiny_dataset(tmp_path, num_train=4, size=(96, 80)) + SMALL)
    assert args.num_workers == 2, "the default this test is about"
    dataset = build_dataset(args.dataset_file, "train", use_clean=True, **dataset_options(args, "train"))
    with_workers = crops_per_epoch(args, dataset)
    args.num_workers = 0
    in_process = crops_per_epoch(args, dataset)
    assert sorted(with_workers[0]) == sorted(with_workers[1]) == ["IMG_0", "IMG_1", "IMG_2", "IMG_3"]
    for image_id in with_workers[0]:
        assert not torch.equal(with_workers[0][image_id], with_workers[1][image_id]), image_id
        for epoch in (0, 1):
            assert torch.equal(with_workers[epoch][image_id], in_process[epoch][image_id]), (epoch, image_id)
            index = dataset.ids.index(image_id)
            assert torch.equal(with_workers[epoch][image_id], dataset[(epoch, index)][0])


def test_the_augmentation_seed_is_a_fixed_function_of_seed_epoch_and_index():
    from crowd_datasets.dataset import augmentation_seed

    # Pinned (computed on 2026-12-04): a run resumed by a later version of the code must draw the crops an
    # uninterrupted run drew, so the function may never change; nor may it depend on the interpreter
    # (str/tuple hashing) or the process.
    seeds = [augmentation_seed(42, epoch, index) for epoch, index in ((0, 0), (0, 1), (1, 0))]
    assert seeds == [2242280713608235703, 6793198372087542132, 6434997491148346548]
    code = "from crowd_datasets.dataset import augmentation_seed; print(augmentation_seed(42, 0, 0))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONHASHSEED="123"), check=True)
    assert int(other.stdout) == seeds[0]


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


def test_resume_under_torchrun_with_two_ranks_equals_an_uninterrupted_run(tmp_path):
    common = tiny_dataset(tmp_path / "data", num_train=4, num_test=2) + SMALL + ["--eval_freq", "2"]
    torchrun(common + ["--epochs", "4", "--output_dir", str(tmp_path / "straight")])
    torchrun(common + ["--epochs", "2", "--output_dir", str(tmp_path / "resumed")])
    torchrun(common + ["--epochs", "4", "--output_dir", str(tmp_path / "resumed"), "--resume", "auto"])
    assert_same_weights(tmp_path / "straight" / "latest.pth", tmp_path / "resumed" / "latest.pth")


def snapshot(folder: Path) -> dict:
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_used_output_dir_stops_a_new_run_and_resume_auto_goes_both_ways(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL + ["--num_workers", "0"]
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
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL + ["--num_workers", "0"]
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
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL + ["--num_workers", "0", "--epochs", "1"]
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


@pytest.mark.cpu_kernels
def test_amp_trains_in_reduced_precision_with_fp32_losses_and_is_kept_on_resume(tmp_path, capsys):
    args = train.build_parser().parse_args(tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL)
    assert args.amp is None, "off for a new run unless asked for"
    dataset = build_dataset(args.dataset_file, "train", use_clean=True, **dataset_options(args, "train"))
    images, targets = collate_crops([dataset[0], dataset[1]])
    torch.manual_seed(0)
    model = PointCounter(ModelSettings(restoration=True)).train()
    criterion = build_criterion(**criterion_options(args))
    dtype = autocast_dtype("cpu")
    full = engine.compute_losses(model, criterion, images, targets)
    reduced = engine.compute_losses(model, criterion, images, targets, dtype)
    assert set(full) == set(reduced) == {"loss_ce", "loss_points", "loss_sr"}
    # The bound, from bf16's precision and the network's depth: on the longest path from the pixels to an
    # output lie 18 convolutions (13 in VGG16-BN, 2 in the FPN, 3 in a head). Under autocast each rounds
    # its input, its weights and its output to bf16's 8 significant bits (relative error 2^-8 each), so
    # to first order an output is within 18 * 3 * 2^-8 = 21 % of its fp32 value, and a loss, at most
    # quadratic in the outputs (squared errors), within twice that.
    relative_bound = 2 * 18 * 3 * 2.0 ** -8
    for name in full:
        assert reduced[name].dtype == torch.float32
        assert torch.isfinite(reduced[name]) and full[name] > 0, name
        assert (reduced[name] - full[name]).abs() <= relative_bound * full[name], name
    if dtype == torch.float32:  # no native bf16 (the AVX2 pass of .ci/run): --amp is fp32, the same compute
        assert all(torch.equal(reduced[name], full[name]) for name in full)
    else:
        assert any(not torch.equal(reduced[name], full[name]) for name in full), "autocast must change the compute"

    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL + ["--num_workers", "0"]
    run = str(tmp_path / "run")
    assert train.main(data + ["--epochs", "1", "--output_dir", run, "--amp"]) == 0
    printed = capsys.readouterr().out
    assert f"process(es) on cpu, {str(dtype).replace('torch.', '')}," in printed
    no_bf16_line = "--amp: this CPU has no native bf16 instructions, where bf16 would be slower than fp32; training in"
    assert (f"{no_bf16_line} fp32" in printed) == (dtype == torch.float32)
    assert torch.load(tmp_path / "run" / "latest.pth", weights_only=True)["amp"] is True
    assert train.main(data + ["--epochs", "2", "--output_dir", run, "--resume", "auto"]) == 0
    assert f"{str(dtype).replace('torch.', '')}, restoration on, epochs 1..1" in capsys.readouterr().out
    content = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    assert content["amp"] is True and content["epoch"] == 1
    assert all(torch.isfinite(value).all() for value in content["model"].values() if value.is_floating_point())


def test_output_dir_under_a_file_and_ctrl_c_give_one_line_each(tmp_path, monkeypatch, capsys):
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL + ["--num_workers", "0", "--epochs", "2"]
    (tmp_path / "file").write_text("")
    assert train.main(data + ["--output_dir", str(tmp_path / "file" / "run")]) == 1
    assert f"lies under {tmp_path / 'file'}, which is a file" in capsys.readouterr().err
    real_epoch = train.train_one_epoch

    def interrupted(*args, **kwargs):
        if args[5] == 1:  # the epoch
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    assert train.main(data + ["--output_dir", str(tmp_path / "run")]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("interrupted in epoch 1; ") and "latest.pth holds epoch 0: " in last
    assert last.endswith("--resume auto")
    assert torch.load(tmp_path / "run" / "latest.pth", weights_only=True)["epoch"] == 0


@pytest.mark.cpu_kernels
def test_fp16_training_scales_the_loss_and_resumes_the_scaler(tmp_path, monkeypatch, capsys):
    """The path GPUs without bf16 take (fp16 autocast with a GradScaler), exercised on the CPU."""
    monkeypatch.setattr(train, "autocast_dtype", lambda device: torch.float16)
    # fp16 convolutions are emulated on a CPU, hence the smallest crops.
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL + ["--num_workers", "0", "--amp",
                                                                               "--crop_size", "32", "--num_crops", "1"]
    run = str(tmp_path / "run")
    assert train.main(data + ["--epochs", "1", "--output_dir", run]) == 0
    assert "float16" in capsys.readouterr().out
    first = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    assert first["scaler"]["scale"] > 0 and first["scaler"]["_growth_tracker"] > 0, "the scaler counted no step"
    loaded = []
    original = torch.amp.GradScaler.load_state_dict
    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict",
                        lambda self, state: (loaded.append(dict(state)), original(self, state))[1])
    assert train.main(data + ["--epochs", "2", "--output_dir", run, "--resume", "auto"]) == 0
    second = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    assert second["epoch"] == 1
    assert loaded == [first["scaler"]], "the resumed run must continue with the saved scaler"
    if second["scaler"]["scale"] == first["scaler"]["scale"]:  # no overflow step reset the count
        assert second["scaler"]["_growth_tracker"] == 2 * first["scaler"]["_growth_tracker"]
    assert all(torch.isfinite(value).all() for value in second["model"].values() if value.is_floating_point())


def test_bad_files_read_in_loader_workers_give_the_one_line_error_of_the_main_process(tmp_path, capsys):
    import cv2
    import numpy as np

    import run_test

    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=2) + SMALL + ["--epochs", "1"]
    cv2.imwrite(str(tmp_path / "data" / "train_data" / "HR" / "IMG_1.png"), np.zeros((10, 12, 3), np.uint8))
    assert train.main(data + ["--output_dir", str(tmp_path / "run")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: clean image ") and "must have the same size" in error
    assert len(error.splitlines()) == 1, error
    (tmp_path / "data" / "test_data" / "images" / "IMG_1.png").write_bytes(b"not an image")
    checkpoint = tmp_path / "model.pth"
    random_checkpoint(checkpoint)
    assert run_test.main(["--dataset_file", "Custom", "--data_root", str(tmp_path / "data"), "--test_list",
                          "test.list", "--weight_path", str(checkpoint)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "IMG_1.png" in error[0], error
