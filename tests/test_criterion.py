import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from models.criterion import SetCriterion
from models.matcher import HungarianMatcher
from helpers import REFERENCE


@pytest.fixture(scope="module")
def reference():
    with open(REFERENCE / "criterion_reference.json") as f:
        data = json.load(f)
    outputs = {
        "pred_logits": torch.tensor(data["inputs"]["pred_logits"], dtype=torch.float32),
        "pred_points": torch.tensor(data["inputs"]["pred_points"], dtype=torch.float32),
    }
    targets = [
        {
            "points": torch.tensor(points, dtype=torch.float32).reshape(-1, 2),
            "labels": torch.ones(len(points), dtype=torch.int64),
        }
        for points in data["inputs"]["target_points"]
    ]
    return data, outputs, targets


def make_criterion(settings, **kwargs):
    matcher = HungarianMatcher(cost_class=settings["cost_class"], cost_point=settings["cost_point"])
    return SetCriterion(matcher, eos_coef=settings["eos_coef"], **kwargs)


def random_batch(num_points, size=32, anchors=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(len(num_points), anchors, 2, generator=generator),
        "pred_points": torch.rand(len(num_points), anchors, 2, generator=generator) * size,
    }
    targets = [
        {"points": torch.rand(n, 2, generator=generator) * size, "labels": torch.ones(n, dtype=torch.int64)}
        for n in num_points
    ]
    return outputs, targets


def add_restoration(outputs, targets, size=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    restored = torch.rand(len(targets), 3, size, size, generator=generator, requires_grad=True)
    with_clean = [dict(t, clean=torch.rand(3, size, size, generator=generator)) for t in targets]
    return dict(outputs, pred_restored=restored), with_clean


@pytest.mark.reference_fixtures
def test_matching_reproduces_reference_including_empty_crop(reference):
    data, outputs, targets = reference
    settings = data["settings"]
    matcher = HungarianMatcher(cost_class=settings["cost_class"], cost_point=settings["cost_point"])
    indices = matcher(outputs, targets)
    assert len(indices) == len(data["matching"]) == 3
    assert [len(t["points"]) for t in targets] == [9, 0, 23]
    for crop, ((pred_idx, gt_idx), (ref_pred, ref_gt)) in enumerate(zip(indices, data["matching"])):
        assert pred_idx.dtype == torch.int64 and gt_idx.dtype == torch.int64
        assert pred_idx.tolist() == ref_pred, f"crop {crop}: prediction indices differ"
        assert gt_idx.tolist() == ref_gt, f"crop {crop}: target indices differ"


def test_matching_a_batch_equals_matching_each_image_alone():
    # Images are padded to the batch's largest point count and solved in threads; neither may change
    # any image's matches. Counts include none, and more people than the 16 anchors.
    outputs, targets = random_batch([5, 0, 16, 1, 23, 9, 3, 12], seed=3)
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    for b, (pred_idx, gt_idx) in enumerate(batched):
        alone = matcher({key: value[b:b + 1] for key, value in outputs.items()}, targets[b:b + 1])[0]
        assert torch.equal(pred_idx, alone[0]) and torch.equal(gt_idx, alone[1]), f"image {b}"
        assert len(pred_idx) == min(16, len(targets[b]["points"]))
        assert pred_idx.tolist() == sorted(set(pred_idx.tolist())), f"image {b}: anchors unsorted or repeated"


@pytest.mark.reference_fixtures
def test_losses_reproduce_reference(reference):
    data, outputs, targets = reference
    losses = make_criterion(data["settings"])(outputs, targets)
    expected = data["unweighted_losses"]
    assert set(losses) == {"loss_ce", "loss_points"}
    assert losses["loss_ce"].item() == pytest.approx(expected["loss_ce"], abs=1e-5)
    # The reference (upstream) names the point loss "loss_point".
    assert losses["loss_points"].item() == pytest.approx(expected["loss_point"], abs=1e-5)


def test_every_returned_loss_has_a_nonzero_weight():
    criterion = SetCriterion(HungarianMatcher())
    outputs, targets = random_batch([3, 0, 5])
    restored_outputs, clean_targets = add_restoration(outputs, targets)
    without_restoration = criterion(outputs, targets)
    with_restoration = criterion(restored_outputs, clean_targets)
    assert "loss_sr" in with_restoration and "loss_sr" not in without_restoration
    for losses in (without_restoration, with_restoration):
        for name in losses:
            assert name in criterion.weight_dict, name
            assert criterion.weight_dict[name] != 0, name


def test_total_is_the_weighted_sum_and_the_point_loss_drives_gradients():
    criterion = SetCriterion(HungarianMatcher(), point_loss_coef=0.0002, sr_loss_coef=10.0)
    outputs, targets = random_batch([4, 2])
    outputs, targets = add_restoration(outputs, targets)
    outputs["pred_points"].requires_grad_(True)
    losses = criterion(outputs, targets)
    total = criterion.total(losses)
    expected = losses["loss_ce"] + 0.0002 * losses["loss_points"] + 10.0 * losses["loss_sr"]
    assert torch.allclose(total, expected)
    total.backward()
    # Only the point loss reaches pred_points: a nonzero gradient proves it is weighted in.
    assert outputs["pred_points"].grad.abs().sum() > 0


def test_total_rejects_a_loss_without_weight():
    criterion = SetCriterion(HungarianMatcher())
    with pytest.raises(KeyError, match="loss_point"):
        criterion.total({"loss_ce": torch.tensor(1.0), "loss_point": torch.tensor(2.0)})


def test_restoration_loss_only_with_restored_output_and_clean_targets():
    criterion = SetCriterion(HungarianMatcher())
    outputs, targets = random_batch([2, 1])
    restored_outputs, clean_targets = add_restoration(outputs, targets)

    assert "loss_sr" not in criterion(outputs, clean_targets)
    assert "loss_sr" not in criterion(restored_outputs, targets)
    partly_clean = [clean_targets[0], targets[1]]
    assert "loss_sr" not in criterion(restored_outputs, partly_clean)

    clean = torch.stack([t["clean"] for t in clean_targets])
    loss_sr = criterion(restored_outputs, clean_targets)["loss_sr"]
    assert torch.allclose(loss_sr, F.mse_loss(restored_outputs["pred_restored"], clean))
    l1_criterion = SetCriterion(HungarianMatcher(), sr_loss="l1")
    l1_loss = l1_criterion(restored_outputs, clean_targets)["loss_sr"]
    assert torch.allclose(l1_loss, F.l1_loss(restored_outputs["pred_restored"], clean))
    loss_sr.backward()
    assert restored_outputs["pred_restored"].grad.abs().sum() > 0


def test_restoration_shape_mismatch_names_both_shapes():
    criterion = SetCriterion(HungarianMatcher())
    outputs, targets = random_batch([2, 1])
    outputs, targets = add_restoration(outputs, targets, size=32)
    targets[1]["clean"] = torch.rand(3, 32, 24)
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 32\).*\(3, 32, 24\)"):
        criterion(outputs, targets)


def test_unknown_restoration_loss_is_rejected():
    with pytest.raises(ValueError, match="sr_loss"):
        SetCriterion(HungarianMatcher(), sr_loss="ssim")


def test_batch_without_people_gives_finite_losses_and_zero_point_loss():
    criterion = SetCriterion(HungarianMatcher(), eos_coef=0.5)
    outputs, targets = random_batch([0, 0, 0])
    outputs["pred_logits"].requires_grad_(True)
    losses = criterion(outputs, targets)
    assert all(torch.isfinite(value) for value in losses.values())
    assert losses["loss_points"].item() == 0.0
    background = torch.zeros(outputs["pred_logits"].shape[:2], dtype=torch.int64)
    class_weight = torch.tensor([0.5, 1.0])
    expected_ce = F.cross_entropy(outputs["pred_logits"].transpose(1, 2), background, weight=class_weight)
    assert torch.allclose(losses["loss_ce"], expected_ce)
    criterion.total(losses).backward()
    assert torch.isfinite(outputs["pred_logits"].grad).all()


def test_point_loss_divides_by_ground_truth_count():
    criterion = SetCriterion(HungarianMatcher())
    outputs, targets = random_batch([3, 2])
    indices = criterion.matcher(outputs, targets)
    squared_error = sum(
        ((outputs["pred_points"][b, pred] - t["points"][gt]) ** 2).sum()
        for b, (t, (pred, gt)) in enumerate(zip(targets, indices))
    )
    assert torch.allclose(criterion(outputs, targets)["loss_points"], squared_error / 5)


def test_missing_or_misshapen_inputs_are_named():
    criterion = SetCriterion(HungarianMatcher())
    outputs, targets = random_batch([1, 1])
    with pytest.raises(KeyError, match="pred_points"):
        criterion({"pred_logits": outputs["pred_logits"]}, targets)
    with pytest.raises(ValueError, match="2 predictions but 1 target"):
        criterion(outputs, targets[:1])
    with pytest.raises(ValueError, match=r"targets\[1\]\['points'\]"):
        criterion(outputs, [targets[0], {"points": torch.zeros(3)}])


def distributed_point_loss(rank, world_size, store_path, results):
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size)
    try:
        # Rank 0 holds 3 points, rank 1 holds 1: both must divide by the mean count, 2.
        outputs, targets = random_batch([3] if rank == 0 else [1], seed=rank)
        criterion = SetCriterion(HungarianMatcher())
        indices = criterion.matcher(outputs, targets)
        (pred, gt), = indices
        squared_error = ((outputs["pred_points"][0, pred] - targets[0]["points"][gt]) ** 2).sum()
        results[rank] = (criterion(outputs, targets)["loss_points"].item(), squared_error.item())
    finally:
        dist.destroy_process_group()


def test_point_count_is_averaged_over_processes(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(distributed_point_loss, args=(2, str(tmp_path / "store"), results), nprocs=2)
        results = dict(results)
    for rank in range(2):
        loss, squared_error = results[rank]
        assert loss == pytest.approx(squared_error / 2.0, rel=1e-6)
