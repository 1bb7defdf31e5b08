"""Make the reference fixtures by running the original P2PNet code, for ``tools/parity.py`` to compare against.

    python tools/make_reference.py --upstream PATH --output DIR [--images PICTURE_OR_FOLDER ...] [--seed 0]

``PATH`` is a checkout of https://github.com/TencentYoutuResearch/CrowdCounting-P2PNet (the code that
Dehaze-P2PNet's counter is; its release leaves out the loss). Its modules are imported from ``PATH`` at run
time, never copied, with a few shims from outside for today's PyTorch on CPU (``install_shims``). Writes
into ``DIR``, in the formats of the maintainers' fixtures (docs/testing.md, "The reference fixtures"):

- ``upstream_format_checkpoint.pth``: ``{'model': state_dict}`` of the upstream network, seeded random
  weights stored in float16, person-class biases shifted so that about 2 % of the first picture's anchors
  score above 0.5; ``upstream_state_dict_keys.json``: key -> shape;
- ``<stem>_reference_outputs.npz`` per picture: ``padded_input_shape``, ``pred_logits``, ``pred_points``;
- ``reference_counts.json``; ``criterion_reference.json`` (the upstream matcher and loss on a fixed batch);
- ``provenance.json``: seeds, the bias shift, the pictures and the library versions.

Pictures: ``--images`` (files or folders), else the real samples of the fixtures (``real_samples/`` in
``$DEHAZE_P2PNET_FIXTURES`` or ``../shared``). ``--seed 0`` on the two real samples gives the maintainers'
fixtures (their outputs byte for byte with AVX2 kernels on 2 threads, else within float32 rounding).
Then: ``python tools/parity.py --reference DIR --images FOLDER_OF_THE_PICTURES``.
"""
import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import cv2
import numpy as np
import torch
import torchvision

# This script imports nothing of this project: the upstream code's top-level packages are named ``models``
# and ``util`` too, and only one of each can be imported in a process. The fixtures' folder is therefore
# found here as inference/parity.py's ``fixtures_dir`` finds it.
ROOT = Path(__file__).resolve().parents[1]
FIXTURES_ENV_VAR = "DEHAZE_P2PNET_FIXTURES"
EXIT_FAILED = 1  # as util/script.py: one line on stderr says what went wrong

UPSTREAM_URL = "https://github.com/TencentYoutuResearch/CrowdCounting-P2PNet"
UPSTREAM_FILES = ("models/__init__.py", "models/p2pnet.py", "models/backbone.py", "models/vgg_.py",
                  "models/matcher.py", "util/misc.py")
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# The recipe of the maintainers' fixtures, recovered by reproducing them bit for bit from seed 0: the network
# is built with the global RNG seeded with --seed, the BatchNorm running statistics drawn from seed + 1, the
# criterion batch from seed + 7.
STATISTICS_SEED_OFFSET = 1
CRITERION_SEED_OFFSET = 7
RUNNING_MEAN_STD = 0.1  # running_mean ~ N(0, 0.1^2)
RUNNING_VAR_RANGE = (0.75, 1.25)  # running_var ~ U(0.75, 1.25)
PERSON_FRACTION = 0.02  # of the first picture's anchors above 0.5 after the person-bias shift
PERSON_CLASS = 1  # column of pred_logits; the head's output channels are anchor * 2 + class

# The criterion batch: three 128 x 128 crops with 16 x 16 cells of 2 x 2 anchors, 9, 0 and 23 people.
CROP_SIZE_PX = 128
CROP_ANCHORS = 256
CROP_PEOPLE = (9, 0, 23)
LOGIT_STD = 2.0
COST_CLASS, COST_POINT, EOS_COEF, POINT_LOSS_COEF = 1.0, 0.05, 0.5, 0.0002


class FixtureError(Exception):
    """A problem the user can fix (a folder that is not a checkout, no pictures); reported in one line."""


def upstream_args() -> SimpleNamespace:
    """The parts of upstream train.py's argument namespace that ``models.build_model`` reads (its defaults,
    the matcher's costs and ``eos_coef`` as the fixtures use them)."""
    return SimpleNamespace(backbone="vgg16_bn", row=2, line=2, set_cost_class=COST_CLASS,
                           set_cost_point=COST_POINT, eos_coef=EOS_COEF, point_loss_coef=POINT_LOSS_COEF)


def check_checkout(upstream: Path) -> None:
    """Raise ``FixtureError`` naming ``upstream`` and what it lacks unless it holds the upstream modules."""
    if not upstream.is_dir():
        raise FixtureError(f"--upstream {upstream}: no such folder (a checkout of {UPSTREAM_URL} is needed)")
    missing = [name for name in UPSTREAM_FILES if not (upstream / name).is_file()]
    if missing:
        raise FixtureError(f"--upstream {upstream} is not a checkout of {UPSTREAM_URL}: "
                              f"{', '.join(missing)} not found")


def check_output(output: Path) -> None:
    """Raise ``FixtureError`` when ``output`` already holds fixtures: never overwrite the maintainers' (or any)."""
    held = [name for name in ("upstream_format_checkpoint.pth", "reference_counts.json") if (output / name).exists()]
    if held:
        raise FixtureError(f"--output {output} already holds {held[0]}; give a new or empty folder")


def install_shims() -> None:
    """Let the 2021 upstream code import on today's torchvision, without editing the checkout.

    util/misc.py tests ``float(torchvision.__version__[:3]) < 0.7``, which reads "0.29" as 0.2 and then
    imports ``_new_empty_tensor`` and ``_output_size``, which torchvision has removed. They serve only its
    ``interpolate`` for empty batches, which P2PNet never calls; placeholders satisfy the import.
    """
    import torchvision.ops.misc

    for module, name in ((torchvision.ops, "_new_empty_tensor"), (torchvision.ops.misc, "_output_size")):
        if not hasattr(module, name):
            setattr(module, name, None)


def import_upstream(upstream: Path) -> SimpleNamespace:
    """Import the upstream ``models`` and ``util.misc`` from ``upstream``; returns them as attributes."""
    install_shims()
    sys.dont_write_bytecode = True  # leave no __pycache__ in the user's checkout
    sys.path.insert(0, str(upstream))
    try:
        import models
        import models.vgg_
        import util.misc
    except ImportError as error:
        raise FixtureError(f"importing the upstream code from {upstream} failed: {error}") from error
    if Path(models.__file__).resolve().parent != (upstream / "models").resolve():
        raise FixtureError(f"another package named models was imported ({models.__file__}), not {upstream}")
    skip_imagenet_weights(models.vgg_)
    return SimpleNamespace(models=models, misc=util.misc)


def skip_imagenet_weights(vgg_module) -> None:
    """Upstream's backbone asks for ``vgg16_bn(pretrained=True)``, which loads ImageNet weights from a
    hard-coded path of the authors' cluster. The fixtures' weights are random, so the backbone is built
    without them; its constructor then draws VGG's own initialisation, a part of the seeded recipe."""
    for name in ("vgg16_bn", "vgg16"):
        original = getattr(vgg_module, name)
        setattr(vgg_module, name, lambda pretrained=False, _original=original, **kwargs: _original(
            pretrained=False, **kwargs))


@contextlib.contextmanager
def upstream_on_cpu():
    """Run upstream code on the CPU: its ``AnchorPoints`` moves the anchors to CUDA whenever a GPU exists,
    while the fixtures are computed on the CPU. Its chatter on stdout is swallowed as well."""
    with mock.patch.object(torch.cuda, "is_available", return_value=False), \
            contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        yield


def build_network(upstream, seed: int):
    """The upstream network and criterion (``build_model(args, training=True)``), the network's weights
    drawn with the global RNG seeded with ``seed``, BatchNorm running statistics from ``seed + 1``."""
    torch.manual_seed(seed)
    with upstream_on_cpu():
        model, criterion = upstream.models.build_model(upstream_args(), training=True)
    generator = torch.Generator().manual_seed(seed + STATISTICS_SEED_OFFSET)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, RUNNING_MEAN_STD, generator=generator)
            module.running_var.uniform_(*RUNNING_VAR_RANGE, generator=generator)
    return model.eval(), criterion


def stored(state: dict) -> dict:
    """``state`` as the checkpoint stores it: floating tensors in float16, the rest unchanged."""
    return {key: value.half() if value.is_floating_point() else value.clone() for key, value in state.items()}


def load_stored(model, checkpoint: dict) -> None:
    """Load the float16 ``checkpoint`` into ``model`` as float32: the fixtures are computed with exactly the
    stored values."""
    model.load_state_dict({key: value.float() if value.is_floating_point() else value
                           for key, value in checkpoint.items()})


def read_rgb(path: Path) -> np.ndarray:
    """``path`` decoded as upstream's ``load_data`` decodes it (OpenCV, alpha dropped): uint8 ``[H, W, 3]`` RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FixtureError(f"cannot read the picture {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def padded_input(upstream, path: Path) -> torch.Tensor:
    """The network's input for ``path``: RGB scaled to [0, 1] (Dehaze-P2PNet normalises no further),
    zero-padded at the bottom and right to multiples of 128 by upstream's own collate; ``[1, 3, H_pad, W_pad]``."""
    image = torchvision.transforms.ToTensor()(read_rgb(path))
    return upstream.misc.nested_tensor_from_tensor_list([image])


def forward(model, samples: torch.Tensor) -> dict:
    """The upstream network's outputs for one padded picture: float32 ``pred_logits`` ``[A, 2]`` and
    ``pred_points`` ``[A, 2]`` (x, y pixels)."""
    with upstream_on_cpu():
        outputs = model(samples)
    return {key: outputs[key][0].float().numpy() for key in ("pred_logits", "pred_points")}


def shift_person_bias(model, checkpoint: dict, raw_bias: torch.Tensor, samples: torch.Tensor) -> float:
    """Lower the person-class biases of ``classification.output`` so that ``PERSON_FRACTION`` of the anchors
    of ``samples`` score above 0.5 (a random network scores about half of them so). Updates ``checkpoint``
    and ``model``; returns the shift (logits) taken off the float32 biases ``raw_bias`` before storing."""
    logits = torch.from_numpy(forward(model, samples)["pred_logits"]).double()
    margin = logits[:, PERSON_CLASS] - logits[:, 1 - PERSON_CLASS]
    shift = float(torch.quantile(margin, 1.0 - PERSON_FRACTION))
    bias = raw_bias.clone()
    bias[PERSON_CLASS::2] -= shift
    checkpoint["classification.output.bias"] = bias.half()
    load_stored(model, checkpoint)
    return shift


def criterion_batch(seed: int) -> tuple:
    """The fixed batch: ``pred_logits`` ``[3, 256, 2]`` ~ N(0, 2^2), ``pred_points`` ``[3, 256, 2]`` and the
    people's points (``[N, 2]`` each) uniform in the 128-pixel crops, all drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(CROP_PEOPLE), CROP_ANCHORS, 2)
    logits = torch.randn(shape, generator=generator) * LOGIT_STD
    points = torch.rand(shape, generator=generator) * CROP_SIZE_PX
    people = [torch.rand(count, 2, generator=generator) * CROP_SIZE_PX for count in CROP_PEOPLE]
    return logits, points, people


def criterion_reference(criterion, seed: int) -> dict:
    """The upstream matcher's assignments and unweighted losses on ``criterion_batch(seed)``."""
    logits, points, people = criterion_batch(seed)
    outputs = {"pred_logits": logits, "pred_points": points}
    targets = [{"point": crop, "labels": torch.ones(len(crop), dtype=torch.int64)} for crop in people]
    with upstream_on_cpu():
        matching = criterion.matcher(outputs, targets)
        losses = criterion(outputs, targets)
    return {
        "inputs": {"pred_logits": logits.tolist(), "pred_points": points.tolist(),
                   "target_points": [crop.tolist() for crop in people]},
        "settings": {"cost_class": COST_CLASS, "cost_point": COST_POINT, "eos_coef": EOS_COEF},
        "matching": [[rows.tolist(), columns.tolist()] for rows, columns in matching],
        "unweighted_losses": {name: float(value) for name, value in losses.items()},
    }


def find_pictures(given: list) -> list:
    """The pictures to compute outputs for, sorted by name: the files and folders ``given``, else the real
    samples of the fixtures. Raises ``FixtureError`` when there are none or two share a name."""
    if not given:
        fixtures = os.environ.get(FIXTURES_ENV_VAR)
        samples = (Path(fixtures) if fixtures else ROOT.parent / "shared") / "real_samples"
        if not samples.is_dir():
            raise FixtureError(f"no pictures: {samples} not found; give some with --images")
        given = [samples]
    pictures = [picture for path in map(Path, given) for picture in pictures_in(path)]
    stems = [p.stem for p in pictures]
    if not pictures or len(set(stems)) < len(stems):
        raise FixtureError("no pictures in --images" if not pictures else "two pictures share a name")
    return sorted(pictures, key=lambda p: p.stem)


def pictures_in(path: Path) -> list:
    """The picture ``path``, or the pictures in the folder ``path`` (by suffix)."""
    if not path.exists():
        raise FixtureError(f"--images {path}: not found")
    if not path.is_dir():
        return [path]
    return [picture for picture in path.iterdir() if picture.suffix.lower() in PICTURE_SUFFIXES]


def people_count(picture: Path):
    """Head points in the annotation ``<stem>.txt`` beside ``picture`` (one ``x y`` per line), or None."""
    annotation = picture.with_suffix(".txt")
    if not annotation.is_file():
        return None
    return sum(1 for line in annotation.read_text().splitlines() if line.strip())


def write_outputs(output: Path, picture: Path, samples: torch.Tensor, outputs: dict) -> dict:
    """Write ``<stem>_reference_outputs.npz``; returns the picture's row of ``reference_counts.json``."""
    np.savez_compressed(output / f"{picture.stem}_reference_outputs.npz",
                        padded_input_shape=np.array(samples.shape, dtype=np.int64), **outputs)
    logits = torch.from_numpy(outputs["pred_logits"])
    height, width = read_rgb(picture).shape[:2]
    return {"image_size_wh": [width, height], "padded_input_chw": list(samples.shape[1:]),
            "gt_count": people_count(picture),
            "pred_count_at_0.5": int((torch.softmax(logits, -1)[:, PERSON_CLASS] > 0.5).sum())}


def upstream_commit(upstream: Path):
    """The checkout's git commit, or None where it is no git work tree of its own."""
    if not (upstream / ".git").exists():
        return None
    result = subprocess.run(["git", "-C", str(upstream), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def write_checkpoint(output: Path, checkpoint: dict) -> None:
    """Write ``upstream_format_checkpoint.pth`` (``{'model': checkpoint}``) and its key -> shape list."""
    torch.save({"model": checkpoint}, output / "upstream_format_checkpoint.pth")
    shapes = {key: list(value.shape) for key, value in checkpoint.items()}
    (output / "upstream_state_dict_keys.json").write_text(json.dumps(shapes, indent=0))


def provenance_record(upstream_dir: Path, pictures: list, seed: int, shift: float) -> dict:
    """What ``provenance.json`` records: where the code came from, the seeds, the bias shift, the versions."""
    return {"upstream": UPSTREAM_URL, "upstream_commit": upstream_commit(upstream_dir), "seed": seed,
            "statistics_seed": seed + STATISTICS_SEED_OFFSET, "criterion_seed": seed + CRITERION_SEED_OFFSET,
            "person_bias_shift": shift, "person_fraction_of": pictures[0].name,
            "pictures": [picture.name for picture in pictures], "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__}


def make_reference(upstream_dir: Path, output: Path, pictures: list, seed: int) -> dict:
    """Write every fixture into ``output`` (created); returns the provenance record written beside them."""
    output.mkdir(parents=True, exist_ok=True)  # first: an output that cannot be made fails before the work
    upstream = import_upstream(upstream_dir)
    model, criterion = build_network(upstream, seed=seed)
    raw_bias = model.classification.output.bias.detach().clone()
    checkpoint = stored(model.state_dict())
    load_stored(model, checkpoint)
    inputs = {picture: padded_input(upstream, picture) for picture in pictures}
    shift = shift_person_bias(model, checkpoint, raw_bias, inputs[pictures[0]])
    write_checkpoint(output, checkpoint)
    counts = {picture.stem: write_outputs(output, picture, samples, forward(model, samples))
              for picture, samples in inputs.items()}
    (output / "reference_counts.json").write_text(json.dumps(counts, indent=1))
    batch = criterion_reference(criterion, seed + CRITERION_SEED_OFFSET)
    (output / "criterion_reference.json").write_text(json.dumps(batch))
    provenance = provenance_record(upstream_dir, pictures, seed, shift)
    (output / "provenance.json").write_text(json.dumps(provenance, indent=1))
    return provenance


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--upstream", required=True, help=f"a checkout of {UPSTREAM_URL}")
    parser.add_argument("--output", required=True, help="folder to write the fixtures into (created)")
    parser.add_argument("--images", nargs="+", default=None,
                        help="pictures or folders of pictures (default: real_samples/ of the fixtures)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (0: the shared fixtures)")
    args = parser.parse_args(argv)
    try:
        check_output(Path(args.output))
        check_checkout(Path(args.upstream))
        pictures = find_pictures(args.images)
        provenance = make_reference(Path(args.upstream), Path(args.output), pictures, seed=args.seed)
    except (FixtureError, OSError) as error:  # OSError: an output folder that cannot be written, say
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote the reference fixtures for {', '.join(provenance['pictures'])} to {args.output} "
          f"(seed {args.seed}); compare: python tools/parity.py --reference {args.output} "
          f"--images {pictures[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
