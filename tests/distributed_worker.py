"""Run by ``torchrun`` from tests/test_training.py: a few DDP training steps with the project's own
pieces, then each rank saves its parameters and its evaluation of the test split."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from crowd_datasets import build_dataset  # noqa: E402
from engine import evaluate, train_one_epoch  # noqa: E402
from inference import Counter  # noqa: E402
from models import ModelSettings, build_criterion, build_model  # noqa: E402
from util.distributed import broadcast_buffers, cleanup, init_distributed  # noqa: E402
from options import criterion_options, dataset_options  # noqa: E402


def main():
    out = Path(sys.argv[1])
    args = train.build_parser().parse_args(sys.argv[2:])
    state = init_distributed(torch.device("cpu"))
    dataset_train = build_dataset(args.dataset_file, "train", use_clean=True, **dataset_options(args, "train"))
    dataset_test = build_dataset(args.dataset_file, "test", **dataset_options(args, "test"))
    torch.manual_seed(args.seed + state.rank)  # different on purpose: DDP must broadcast rank 0's weights
    model = build_model(ModelSettings(restoration=True), "none", log=lambda message: None)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    criterion = build_criterion(**criterion_options(args))
    optimizer, _ = train.build_optimizer(model, args)
    sampler, loader_train, loader_test = train.make_loaders(args, state, dataset_train, dataset_test)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        train_one_epoch(ddp, criterion, loader_train, optimizer, state.device, epoch, args.clip_max_norm,
                        progress=False)
    parameters = {name: value.detach().clone() for name, value in model.named_parameters()}
    torch.save(parameters, out / f"parameters{state.rank}.pth")
    broadcast_buffers(model)
    summary = evaluate(Counter(model, threshold=args.threshold), loader_test, progress=False)
    torch.save(model.state_dict(), out / f"rank{state.rank}.pth")
    (out / f"eval{state.rank}.json").write_text(json.dumps(summary))
    cleanup()


if __name__ == "__main__":
    main()
