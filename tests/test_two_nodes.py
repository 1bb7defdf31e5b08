"""docs/training.md's two-machine command, run as two torchrun "nodes" on this machine (gloo on the CPU, the
output folder shared as a shared filesystem would be): the run trains, checkpoints and resumes as one
process computing the same steps would.

What "as one process would" can mean here. ``train.py`` shards each epoch with a ``DistributedSampler``:
rank r takes every second image of the epoch's shuffled order, so step k of 2 ranks x ``--batch_size B``
covers exactly the images (and crops: they depend on the seed, the epoch and the image only) of step k of
1 process x 2B, and each epoch takes the same number of steps. The weights still cannot be those of the
1 x 2B run by construction: in training mode BatchNorm normalises with the statistics of the batch it sees,
and each rank sees its own B images (``train.py`` does not convert to SyncBatchNorm); the class-weighted
cross entropy is also a mean per rank. So the test compares three things:

- with the 1 x 2B run of ``train.py``: the number of steps and epochs, the learning rates, and that the
  sampler gives every image exactly once per epoch with the same global batches (exact);
- with ``emulate_two_ranks``, one process that computes what the two ranks compute (each half of the global
  batch through the network on its own, BatchNorm statistics per half, gradients averaged, rank 0's
  BatchNorm running statistics kept), for 3 epochs without a break: the checkpoint's weights, buffers and
  optimizer state, the logged losses and test metrics, after two epochs and after the third, resumed with
  ``--resume auto``;
- that only rank 0 writes: one line per epoch in log.txt and one tensorboard file per run.

The tolerance of the second comparison is zero, by this argument. Each rank runs in a fresh process with
one thread (``OMP_NUM_THREADS=1``), and so does the emulation, so the forward and backward passes of a half
are the same kernels over the same data, summing in the same order, in both. DDP multiplies each
gradient by 1/world_size = 1/2 (exact: a power of two) and gloo's all-reduce of two ranks adds the two
halves once per element; IEEE addition of two numbers is commutative, so there is no order to differ in:
0.5 * g0 + 0.5 * g1 bit for bit, whichever rank adds. The loss-normalising point count is an all-reduced
sum of integers, the logged losses one addition and a halving. The evaluation counts each test image alone
and gathers the records, so the metrics are one process's on the same weights. (A reduction over 3 or
more ranks would sum in an order of its own and need a rounding bound; the sums inside one large batch of
2B images, as the 1 x 2B run computes them, are partitioned differently from two batches of B, which is
what a tolerance against that run would have to bound, had BatchNorm not ruled it out.)
"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import models.criterion
import train
from crowd_datasets import build_dataset, count_clean_pairs, find_samples
from engine import compute_losses, evaluate
from inference import Counter
from models import ModelSettings, build_criterion, build_model
from options import criterion_options, dataset_options, network_flags
from util.distributed import DistributedState
from util.training_run import decide_restoration
from helpers import ROOT, tiny_dataset

BATCH_SIZE = 2  # per process; the single-process run takes twice as many
NUM_TRAIN = 8  # a multiple of the global batch (2 x 2): no padded or short step on any rank
PHASE_TIMEOUT_S = 75  # one torchrun phase (both nodes); about 20 s on 2 idle cores


def quiet(*args, **kwargs):
    pass


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it); node 0's agent binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_tree(pid: int) -> list:
    """``pid`` and every process it started, from /proc (Linux). torchrun starts each worker in a session of
    its own, so ending the agent's process group would leave the worker running."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:  # it ended while being listed
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (command) state"
            children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        tree.append(pending.pop())
        pending.extend(children.get(tree[-1], []))
    return tree


def run_two_nodes(train_args: list, tmp_path, name: str) -> list:
    """docs/training.md's several-machines command on both "nodes" at once (``--node_rank`` 0 and 1, the
    static rendezvous on 127.0.0.1); returns ``(exit code, stdout, stderr)`` per node. Both are killed,
    with everything they started, when either fails or the phase outlasts ``PHASE_TIMEOUT_S``."""
    port = free_port()
    # One thread per process: the same kernels as the emulation (torchrun sets it only for several
    # processes per node). gloo binds to the loopback interface, so nothing leaves 127.0.0.1.
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    nodes, finished = [], False
    try:
        for node_rank in (0, 1):
            # python -m torch.distributed.run is the torchrun of the docs, from this venv.
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node_rank),
                       "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                       str(ROOT / "train.py")] + train_args
            with open(tmp_path / f"{name}_node{node_rank}.out", "w") as stdout, \
                    open(tmp_path / f"{name}_node{node_rank}.err", "w") as stderr:
                nodes.append(subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=ROOT, env=env))
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        # A node that fails leaves the other waiting for it in a collective: stop at the first failure.
        while time.monotonic() < deadline and not any(node.poll() not in (None, 0) for node in nodes):
            if all(node.poll() == 0 for node in nodes):
                finished = True
                break
            time.sleep(0.2)
    finally:
        for node in nodes:
            if node.poll() is None:  # a torchrun agent that ended has ended its worker itself
                for pid in process_tree(node.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:  # it ended meanwhile
                        pass
                node.wait(timeout=10)
    results = [(node.returncode, (tmp_path / f"{name}_node{rank}.out").read_text(),
                (tmp_path / f"{name}_node{rank}.err").read_text()) for rank, node in enumerate(nodes)]
    if not finished:
        pytest.fail(f"{name}: the nodes did not both exit with 0 within {PHASE_TIMEOUT_S} s (a running one is killed "
                    "when the other fails or time is up): "
                    + "; ".join(f"node {rank}: exit code {code}, stderr ...{err[-1500:]}"
                                for rank, (code, _, err) in enumerate(results)), pytrace=False)
    return results


def epoch_batches(args, rank: int, world_size: int, epoch: int) -> list:
    """The ``(epoch, image index)`` keys of each step of ``rank``, from the loaders ``train.py`` builds."""
    state = DistributedState(rank=rank, world_size=world_size)
    sampler, loader, _ = train.make_loaders(args, state, [None] * NUM_TRAIN, [None])
    sampler.set_epoch(epoch)
    return list(loader.batch_sampler)


def emulate_two_ranks(argv: list, evaluated: tuple) -> list:
    """What ``train.py`` under torchrun with 2 ranks computes, in one process: the same start (seeds,
    then the datasets and the network in ``train.train``'s order), each rank's batches from its own loader,
    each half through the network alone (BatchNorm statistics per half), the loss normalised by the mean
    point count over the ranks, gradients 0.5 * g0 + 0.5 * g1, rank 0's BatchNorm running statistics.
    Runs ``argv``'s ``--epochs`` without a break and evaluates after the epochs numbered in ``evaluated``
    (counted from 1), where each run of ``train.py`` ends. Returns one dict per epoch: ``model`` and
    ``optimizer`` state, the logged train losses, and the test metrics where evaluated. Run it in a process
    of its own with one thread (``emulate_in_fresh_process``), as each rank runs."""
    own_count = models.criterion.distributed_mean_count
    try:
        return emulated_history(train.build_parser().parse_args(argv), evaluated)
    finally:
        models.criterion.distributed_mean_count = own_count


def emulated_history(args, evaluated: tuple) -> list:
    """``emulate_two_ranks``' work, on parsed ``train.py`` arguments."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    samples = find_samples(args.dataset_file, "train", args.data_root, args.train_list)
    restoration, _ = decide_restoration(args.restoration, count_clean_pairs(samples), len(samples))
    dataset_train = build_dataset(args.dataset_file, "train", samples=samples, use_clean=restoration,
                                  **dataset_options(args, "train"))
    dataset_test = build_dataset(args.dataset_file, "test", **dataset_options(args, "test"))
    model = build_model(ModelSettings(**network_flags(args), restoration=restoration), args.backbone_weights,
                        log=quiet)
    model.to(memory_format=torch.channels_last)
    criterion = build_criterion(**criterion_options(args))
    optimizer, lr_scheduler = train.build_optimizer(model, args)
    ranks = [train.make_loaders(args, DistributedState(rank=rank, world_size=2), dataset_train, dataset_test)
             for rank in (0, 1)]
    # The ranks evaluate half the test split each and gather the records: here the whole split at once.
    _, _, loader_test = train.make_loaders(args, DistributedState(), dataset_train, dataset_test)
    history = []
    for epoch in range(args.epochs):
        for sampler, _, _ in ranks:
            sampler.set_epoch(epoch)
        model.train()
        criterion.train()
        sums, steps = {}, 0
        for halves in zip(*(loader for _, loader, _ in ranks)):
            count = sum(len(target["points"]) for _, targets in halves for target in targets)
            # distributed_mean_count all-reduces each rank's count and divides by the world size.
            models.criterion.distributed_mean_count = lambda own, device, mean=max(count / 2, 1.0): mean
            gradients, logged = [], []
            rank0_buffers = None
            for rank, (images, targets) in enumerate(halves):
                if rank == 1:  # rank 1's forward pass updates rank 1's running statistics, not rank 0's
                    rank0_buffers = {name: value.clone() for name, value in model.named_buffers()}
                optimizer.zero_grad(set_to_none=True)
                losses = compute_losses(model, criterion, images.contiguous(memory_format=torch.channels_last),
                                        targets)
                total = criterion.total(losses)
                values = {**losses, "loss": total}
                logged.append(torch.stack([values[name].detach().float() for name in sorted(values)]))
                total.backward()
                gradients.append([parameter.grad for parameter in model.parameters()])
            with torch.no_grad():
                for name, value in model.named_buffers():
                    value.copy_(rank0_buffers[name])
            for parameter, grad0, grad1 in zip(model.parameters(), *gradients):
                parameter.grad = grad0 * 0.5 + grad1 * 0.5  # DDP's 1/world_size, then gloo's sum of two
            if args.clip_max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_max_norm)
            optimizer.step()
            reduced = (logged[0] + logged[1]) / 2  # engine's mean_across_ranks
            for name, value in zip(sorted(values), reduced.tolist()):
                sums[name] = sums.get(name, 0.0) + value
            steps += 1
        lr_scheduler.step()
        record = {"model": {name: value.clone() for name, value in model.state_dict().items()},
                  "optimizer": optimizer.state_dict(), "steps": steps,
                  "log": {f"train_{name}": value / steps for name, value in sums.items()}}
        if epoch + 1 in evaluated:
            summary = evaluate(Counter(model, device="cpu", threshold=args.threshold), loader_test, progress=False)
            record["log"].update({f"test_{name}": value for name, value in summary.items() if name != "records"})
        record["optimizer"] = {"state": {key: {name: value.clone() for name, value in state.items()}
                                         for key, state in record["optimizer"]["state"].items()}}
        history.append(record)
    return history


def emulate_in_fresh_process(argv: list, evaluated: tuple, path) -> list:
    """``emulate_two_ranks`` in a new Python process with ``OMP_NUM_THREADS=1``: the conditions of each rank's
    process (one thread, a fresh interpreter), so that the same kernels compute the same sums."""
    paths = [str(ROOT), str(ROOT / "tests")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(paths))
    code = ("import sys, torch, test_two_nodes; torch.save(test_two_nodes.emulate_two_ranks(sys.argv[3:], "
            "tuple(int(epoch) for epoch in sys.argv[2].split(','))), sys.argv[1])")
    finished = subprocess.run([sys.executable, "-c", code, str(path), ",".join(map(str, evaluated))] + argv,
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=PHASE_TIMEOUT_S)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return torch.load(path, weights_only=True)


def assert_same_training_state(checkpoint: dict, emulated: dict, what: str) -> None:
    assert checkpoint["model"].keys() == emulated["model"].keys()
    for name, value in checkpoint["model"].items():
        assert torch.equal(value, emulated["model"][name]), f"{what}: {name} differs"
    saved = checkpoint["optimizer"]["state"]
    assert saved.keys() == emulated["optimizer"]["state"].keys()
    for key, state in saved.items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(emulated["optimizer"]["state"][key][name])), (
                f"{what}: optimizer state {key}/{name} differs")


def read_log(path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_nodes_train_checkpoint_and_resume_as_one_process_computing_their_steps(tmp_path):
    data = tiny_dataset(tmp_path / "data", num_train=NUM_TRAIN, num_test=2)
    shared = tmp_path / "shared_run"  # both nodes write here, as to a shared filesystem
    # The smallest run that still has every part: restoration pairs, 2 steps per epoch, an evaluation at the
    # end of each phase (a low threshold so that it counts someone), no loader workers on 2 cores.
    common = data + ["--backbone_weights", "none", "--crop_size", "64", "--num_crops", "2", "--device", "cpu",
                     "--num_workers", "0", "--threshold", "0.1"]
    two_nodes = common + ["--batch_size", str(BATCH_SIZE), "--output_dir", str(shared), "--resume", "auto"]

    first = run_two_nodes(two_nodes + ["--epochs", "2"], tmp_path, "first")
    assert "2 process(es) on cpu" in first[0][1] and "epochs 0..1" in first[0][1]
    assert first[1][1].strip() == "", "rank 1 prints nothing"
    after_two = torch.load(shared / "latest.pth", weights_only=True)
    assert after_two["epoch"] == 1
    log = read_log(shared / "log.txt")
    assert [line["epoch"] for line in log] == [0, 1], "one line per epoch: rank 1 never appends"
    assert len(list((shared / "tensorboard").glob("events.out.tfevents.*"))) == 1, "rank 1 opens no writer"
    assert (shared / "best_mae.pth").is_file()

    resumed = run_two_nodes(two_nodes + ["--epochs", "3"], tmp_path, "resumed")
    assert f"resumed from {shared / 'latest.pth'} at epoch 2" in resumed[0][1]
    assert "epochs 2..2" in resumed[0][1] and resumed[1][1].strip() == ""
    after_three = torch.load(shared / "latest.pth", weights_only=True)
    assert after_three["epoch"] == 2 and after_three["lr_scheduler"]["last_epoch"] == 3
    log = read_log(shared / "log.txt")
    assert [line["epoch"] for line in log] == [0, 1, 2]
    assert len(list((shared / "tensorboard").glob("events.out.tfevents.*"))) == 2, "one writer per run, rank 0's"

    # Exact comparison with one process computing the two ranks' steps, uninterrupted for 3 epochs and
    # evaluating where both runs did (module docstring: why the tolerance is zero).
    emulated = emulate_in_fresh_process(two_nodes + ["--epochs", "3"], (2, 3), tmp_path / "emulated.pth")
    assert_same_training_state(after_two, emulated[1], "after 2 epochs")
    assert_same_training_state(after_three, emulated[2], "after the resumed third epoch")
    steps_per_epoch = NUM_TRAIN // (2 * BATCH_SIZE)
    assert all(record["steps"] == steps_per_epoch for record in emulated)
    assert all(int(state["step"]) == 3 * steps_per_epoch for state in after_three["optimizer"]["state"].values())
    for line, record in zip(log, emulated):
        assert {name: line[name] for name in record["log"]} == record["log"], f"epoch {line['epoch']}"
    assert log[1]["test_images"] == 2 and log[1]["test_tp_s8"] + log[1]["test_fp_s8"] > 0, (
        "an evaluation that counts nobody proves little")

    # 1 process x 2B: the same global batches, hence the same steps, epochs and learning rates, but not the
    # same weights (BatchNorm statistics over 2B images, not B per rank).
    args = train.build_parser().parse_args(two_nodes)
    for epoch in range(3):
        ranks = [epoch_batches(args, rank, 2, epoch) for rank in (0, 1)]
        args.batch_size = 2 * BATCH_SIZE
        single = epoch_batches(args, 0, 1, epoch)
        args.batch_size = BATCH_SIZE
        assert len(single) == len(ranks[0]) == len(ranks[1]) == steps_per_epoch
        for step, keys in enumerate(single):
            assert sorted(ranks[0][step] + ranks[1][step]) == sorted(keys), (epoch, step)
        assert sorted(index for _, index in sum(single, [])) == list(range(NUM_TRAIN)), "each image once"
    one = tmp_path / "one_process"
    assert train.main(common + ["--batch_size", str(2 * BATCH_SIZE), "--output_dir", str(one),
                                "--epochs", "3"]) == 0
    single_checkpoint = torch.load(one / "latest.pth", weights_only=True)
    assert single_checkpoint["epoch"] == after_three["epoch"]
    assert [int(state["step"]) for state in single_checkpoint["optimizer"]["state"].values()] == [
        int(state["step"]) for state in after_three["optimizer"]["state"].values()]
    single_log = read_log(one / "log.txt")
    assert [(line["epoch"], line["lr"], line["lr_backbone"]) for line in single_log] == [
        (line["epoch"], line["lr"], line["lr_backbone"]) for line in log]
