"""train.py as users run it (default two loader workers): its flags and P2PNet's defaults, new crops every
epoch, torchrun agreeing with one process, mixed precision, and failures that keep the checkpoints."""
import json
import os
import subprocess
import sys

import pytest
import numpy as np
import torch
from torch.utils.data import DataLoader

import engine
import run_test
import train
from crowd_datasets import build_dataset, collate_crops, collate_images
from inference import Counter
from models import ModelSettings, PointCounter, build_criterion, build_from_checkpoint
from models.precision import autocast_dtype
from util.distributed import DistributedState
from options import criterion_options, dataset_options
from helpers import ROOT, SMALL_RUN, random_checkpoint, tiny_dataset


def quiet(*args, **kwargs):
    pass


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
    argv = data + SMALL_RUN + ["--epochs", "3", "--output_dir", str(tmp_path / "run")]
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert "at epoch 1, step 0" in err and "latest.pth" in err
    model, _, content = build_from_checkpoint(tmp_path / "run" / "latest.pth", log=quiet)
    assert content["epoch"] == 0
    assert all(torch.isfinite(value).all() for value in model.state_dict().values() if value.is_floating_point())


@pytest.mark.slow
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


@pytest.mark.slow
def test_torchrun_two_processes_match_each_other_and_single_process_evaluation(tmp_path):
    data = tiny_dataset(tmp_path / "data", num_train=4, num_test=3)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "distributed_worker.py"), str(out)] + data + SMALL_RUN + ["--threshold", "0.1"]
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
    args = train.build_parser().parse_args(data + SMALL_RUN)
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
    args = train.build_parser().parse_args(tiny_dataset(tmp_path, num_train=4, size=(96, 80)) + SMALL_RUN)
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


@pytest.mark.cpu_kernels
def test_amp_trains_in_reduced_precision_with_fp32_losses_and_is_kept_on_resume(tmp_path, capsys):
    args = train.build_parser().parse_args(tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN)
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

    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN + ["--num_workers", "0"]
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
    data = (tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN
            + ["--num_workers", "0", "--epochs", "2"])
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
    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=1) + SMALL_RUN + ["--num_workers", "0", "--amp",
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


@pytest.mark.slow
def test_bad_files_read_in_loader_workers_give_the_one_line_error_of_the_main_process(tmp_path, capsys):
    import cv2
    import numpy as np


    data = tiny_dataset(tmp_path / "data", num_train=2, num_test=2) + SMALL_RUN + ["--epochs", "1"]
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


@pytest.mark.slow
def test_a_few_labelled_frames_of_ones_own_camera_fine_tune_a_released_checkpoint(tmp_path, capsys):
    """docs/datasets.md's path: label frames in LabelMe, convert them, start from a checkpoint."""
    from crowd_datasets.demo import make_scene
    from crowd_datasets.image_io import write_rgb

    frames = tmp_path / "camera"
    frames.mkdir()
    rng = np.random.default_rng(5)
    for index in range(6):
        scene = make_scene(rng, (160, 128))
        write_rgb(frames / f"frame_{index:03d}.jpg", scene.image)
        shapes = [{"label": "head", "points": [[float(x), float(y)]], "group_id": None, "description": "",
                   "shape_type": "point", "flags": {}, "mask": None} for x, y in scene.points]
        (frames / f"frame_{index:03d}.json").write_text(json.dumps({
            "version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"frame_{index:03d}.jpg",
            "imageData": None, "imageHeight": 128, "imageWidth": 160}))
    site = tmp_path / "site"
    subprocess.run([sys.executable, str(ROOT / "tools" / "prepare_dataset.py"), "--format", "labelme", "--src",
                    str(frames), "--dst", str(site), "--split", "train", "--test_every", "3"], check=True,
                   capture_output=True)
    random_checkpoint(tmp_path / "released.pth")
    assert train.main(["--init_weights", str(tmp_path / "released.pth"), "--dataset_file", "Custom", "--data_root",
                       str(site), "--train_list", "train.list", "--test_list", "test.list", "--epochs", "1",
                       "--output_dir", str(tmp_path / "run")] + SMALL_RUN) == 0
    printed = capsys.readouterr().out
    assert f"network: weights from {tmp_path / 'released.pth'}" in printed
    assert (tmp_path / "run" / "best_mae.pth").is_file()
