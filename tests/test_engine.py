"""engine.py: the training loop lowers the loss; evaluation does not depend on the loader's batch size."""
import torch
from torch.utils.data import DataLoader

import train
from crowd_datasets import CrowdDataset, build_dataset, collate_crops, collate_images, find_samples
from engine import evaluate
from inference import Counter
from models import ModelSettings, PointCounter, build_criterion
from options import criterion_options, dataset_options
from helpers import SMALL_RUN, tiny_dataset, trained_looking_model, upstream_root, write_image


def test_a_few_steps_on_a_fixed_batch_lower_the_total_loss(tmp_path):
    args = train.build_parser().parse_args(tiny_dataset(tmp_path) + SMALL_RUN)
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


def test_evaluation_does_not_depend_on_batch_size(tmp_path):
    model = trained_looking_model()
    root = upstream_root(tmp_path, annotations={f"IMG_{i}": f"{i} {2 * i}\n" * i for i in range(1, 6)})
    for i in range(1, 6):  # pictures of their own content and size, as a padded batch holds them
        write_image(root / "datasets" / "Hazy_JHU" / "test_data" / "images" / f"IMG_{i}.jpg", 40 + 8 * i, 90 - 6 * i, i)
    dataset = CrowdDataset(find_samples("Hazy_JHU", "test", root))
    results = [evaluate(Counter(model), DataLoader(dataset, batch_size=size, collate_fn=collate_images), progress=False)
               for size in (1, 4)]
    assert results[0] == results[1]
    assert results[0]["images"] == 5 and len(results[0]["records"]) == 5
    assert all(record["pred"] > 0 for record in results[0]["records"]), "a comparison of empty outputs proves little"
    assert len({record["pred"] for record in results[0]["records"]}) > 1, "nor does one of equal pictures"
