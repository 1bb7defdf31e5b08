"""Training: losses go down, DDP agrees with one process, resume is exact, failures keep checkpoints."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

import engine
import run_test
from util.script import EXIT_SKIPPED
import train
from crowd_datasets import build_dataset
from inference import Counter
from models import ModelSettings, PointCounter, build_criterion, build_from_checkpoint
from crowd_datasets import collate_crops, collate_images
from util.options import criterion_options, dataset_options
from helpers import ROOT, tiny_dataset

# Small and quick, with the default --num_workers (2).
FAST = ["--backbone_weights", "none", "--crop_size", "64", "--batch_size", "2", "--num_crops", "2",
        "--device", "cpu", "--lr", "1e-4", "--lr_backbone", "1e-4"]


def quiet(*args, **kwargs):
    pass


def test_a_few_steps_on_a_fixed_batch_lower_the_total_loss(tmp_path):
    args = train.build_parser().parse_args(tiny_dataset(tmp_path) + FAST)
    dataset = build_dataset(args.dataset_file, "train", use_clean=True, **dataset_options(args, "train"))
    images, targets = collate_crops([dataset[0], dataset[1]])
    assert all("clean" in target for target in targets)
    torch.manual_seed(0)
    model = PointCounter(ModelSettings(restoration=True)).train()
    criterion = build_criterion(**criterion_options(args))
    optimizer, _ = train.build_optimizer(model, args)
    totals = []
    for _ in range(8):
        losses = criterion(model(images), targets)
        assert set(losses) == {"loss_ce", "loss_points", "loss_sr"}
        total = criterion.total(losses)
        totals.append(total.item())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert totals[-1] < 0.8 * totals[0], totals


def run_train(argv):
    return train.main(argv)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run_and_run_test_needs_no_flags(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    common = data + FAST + ["--eval_freq", "2", "--seed", "3"]
    assert run_train(common + ["--epochs", "4", "--output_dir", str(tmp_path / "straight")]) == 0
    assert run_train(common + ["--epochs", "2", "--output_dir", str(tmp_path / "resumed")]) == 0
    assert run_train(common + ["--epochs", "4", "--output_dir", str(tmp_path / "resumed"), "--resume", "auto"]) == 0
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


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    data = tiny_dataset(tmp_path / "data")
    real_build = train.build_criterion

    class Poisoned(torch.nn.Module):
        def __init__(self, criterion):
            super().__init__()
            self.criterion, self.calls = criterion, 0

        def forward(self, outputs, targets):
            self.calls += 1
            losses = self.criterion(outputs, targets)
            if self.calls == 3:  # two steps per epoch: epoch 1, step 0
                losses["loss_ce"] = losses["loss_ce"] * float("nan")
            return losses

        def total(self, losses):
            return self.criterion.total(losses)

    monkeypatch.setattr(train, "build_criterion", lambda **options: Poisoned(real_build(**options)))
    argv = data + FAST + ["--epochs", "3", "--output_dir", str(tmp_path / "run")]
    assert run_train(argv) == 1
    err = capsys.readouterr().err
    assert "at epoch 1, step 0" in err and "latest.pth" in err
    model, _, content = build_from_checkpoint(tmp_path / "run" / "latest.pth", log=quiet)
    assert content["epoch"] == 0
    assert all(torch.isfinite(value).all() for value in model.state_dict().values() if value.is_floating_point())


def test_backbone_weights_from_file_and_a_clear_message_when_missing(tmp_path, monkeypatch):
    from torchvision.models import vgg16_bn

    from models.backbone import imagenet_weights_path

    reference = vgg16_bn(weights=None)
    torch.save(reference.state_dict(), tmp_path / "vgg16_bn.pth")
    model = PointCounter()
    model.backbone.load_imagenet_weights(tmp_path / "vgg16_bn.pth")
    assert torch.equal(model.backbone.body3[1].weight, reference.features[24].weight)
    assert torch.equal(model.backbone.body4[8].running_var, reference.features[41].running_var)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        imagenet_weights_path(str(tmp_path / "nope.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="--backbone_weights none") as error:
        imagenet_weights_path("imagenet")
    assert "vgg16_bn-6c64b313.pth" in str(error.value) and "network is unreachable" in str(error.value)


def test_torchrun_two_processes_match_each_other_and_single_process_evaluation(tmp_path):
    data = tiny_dataset(tmp_path / "data", num_train=4, num_test=3)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "distributed_worker.py"), str(out)] + data + FAST + ["--threshold", "0.1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    parameters = [torch.load(out / f"parameters{rank}.pth", weights_only=True) for rank in (0, 1)]
    assert len(parameters[0]) > 0
    for key in parameters[0]:
        assert torch.equal(parameters[0][key], parameters[1][key]), key
    # After evaluation every rank also holds rank 0's BatchNorm statistics.
    rank0 = torch.load(out / "rank0.pth", weights_only=True)
    rank1 = torch.load(out / "rank1.pth", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    evaluations = [json.loads((out / f"eval{rank}.json").read_text()) for rank in (0, 1)]
    assert evaluations[0] == evaluations[1] and evaluations[0]["images"] == 3
    model = PointCounter(ModelSettings(restoration=True))
    model.load_state_dict(rank0)
    args = train.build_parser().parse_args(data + FAST)
    dataset = build_dataset(args.dataset_file, "test", **dataset_options(args, "test"))
    # The ranks ran with one thread each and the comparison is exact: one thread here too, so that the same
    # kernels with the same partition of the work compute both sides.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = engine.evaluate(Counter(model, threshold=0.1), DataLoader(dataset, collate_fn=collate_images),
                                 progress=False)
    finally:
        torch.set_num_threads(threads)
    assert json.loads(json.dumps(single)) == evaluations[0]
    assert sum(record["pred"] for record in single["records"]) > 0, "a test that predicts nobody proves little"


@pytest.mark.parametrize("flag,value,message", [
    ("--eval_freq", "0", "must be at least 1, got 0"), ("--batch_size", "0", "must be at least 1, got 0"),
    ("--crop_size", "100", "must be a positive multiple of 16 (the network's stride), got 100"),
    ("--num_workers", "-1", "must be at least 0, got -1"), ("--epochs", "two", "invalid int value: 'two'")])
def test_bad_training_flags_are_one_usage_line_naming_the_flag(flag, value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["--dataset_file", "Demo_Hazy", flag, value])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and error.endswith(f"error: argument {flag}: {message}"), error


def test_p2pnet_training_defaults_hold_and_gradients_are_clipped_to_them(tmp_path, monkeypatch):
    args = train.build_parser().parse_args(["--dataset_file", "Hazy_SHTA"])
    p2pnet = dict(lr=1e-4, lr_backbone=1e-5, weight_decay=1e-4, clip_max_norm=0.1, batch_size=8, num_crops=4,
                  epochs=3500, eval_freq=5, set_cost_class=1.0, set_cost_point=0.05, eos_coef=0.5,
                  point_loss_coef=0.0002, num_workers=2, threshold=0.5, amp=None)
    assert {name: getattr(args, name) for name in p2pnet} == p2pnet
    assert ModelSettings().row == ModelSettings().line == 2
    norms = []
    original = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *rest, **options):
        total = original(parameters, max_norm, *rest, **options)  # the norm before clipping
        norms.append((max_norm, float(total)))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1)
    assert train.main(data + ["--epochs", "1", "--batch_size", "1", "--num_crops", "1", "--crop_size", "32",
                              "--backbone_weights", "none", "--num_workers", "0",
                              "--output_dir", str(tmp_path / "run")]) == 0
    assert len(norms) == 2 and all(max_norm == 0.1 for max_norm, _ in norms)
    assert any(total > 0.1 for _, total in norms), "the gradients were small enough to need no clipping"
