"""Export a checkpoint to ONNX, for onnxruntime and other runtimes without PyTorch.

    python tools/export_onnx.py --weight_path weights/Hazy_JHU_best.pth --output hazy_jhu.onnx
    python run_test.py --weight_path hazy_jhu.onnx --input photos/ --output_dir out/

The file holds the inference network in fp32 (BatchNorm folded, normalisation and anchor points in
the graph) for any height and width that are multiples of 128; ``run_test.py`` and ``Counter`` pad
and tile for it as for the checkpoint (see ``inference/onnx_network.py``). After writing, the file is
checked with ``onnx.checker`` and run by onnxruntime on two random images of different sizes; the
largest differences from the PyTorch network are printed, and the export fails if they exceed the
parity tolerances.
"""
import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference import Counter  # noqa: E402
from models.checkpoint import CheckpointError, build_from_checkpoint  # noqa: E402
from models.network import INPUT_NORMS  # noqa: E402
from inference.onnx_network import ONNX_SUFFIX, OPSET, OnnxNetwork, export_onnx  # noqa: E402
from util.script import EXIT_FAILED, error_line, run_script  # noqa: E402
from inference.parity import LOGIT_TOLERANCE, POINT_TOLERANCE_PX, compare_outputs  # noqa: E402

CHECK_SIZES = ((256, 384), (384, 640))


def check_export(model, path: Path) -> bool:
    """Run the PyTorch network (exact mode) and the ONNX file on random images of ``CHECK_SIZES``;
    print the largest differences and return whether they are within the parity tolerances."""
    exact = Counter(model, device="cpu", tile_size=0)
    exported = Counter(OnnxNetwork(path), tile_size=0)
    generator = torch.Generator().manual_seed(0)
    ok = True
    for height, width in CHECK_SIZES:
        image = torch.rand(3, height, width, generator=generator)
        row = compare_outputs(exported.outputs(image), exact.outputs(image))
        ok &= row["max_logit_diff"] <= LOGIT_TOLERANCE and row["max_point_diff"] <= POINT_TOLERANCE_PX
        print(f"check {width}x{height}: {row['anchors']} anchors, max |logit diff| {row['max_logit_diff']:.2e}, "
              f"max |point diff| {row['max_point_diff']:.2e} px against PyTorch")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--weight_path", required=True,
                        help="checkpoint to export (from train.py, a released one, also by name such as "
                             "Hazy_JHU, or an original P2PNet one)")
    parser.add_argument("--output", required=True, help=f"the ONNX file to write (suffix {ONNX_SUFFIX})")
    parser.add_argument("--input_norm", choices=INPUT_NORMS, default=None,
                        help="input normalisation, when the checkpoint does not store it (original P2PNet "
                             "checkpoints need imagenet)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.suffix.lower() != ONNX_SUFFIX:
        parser.error(f"--output {output}: the file name must end in {ONNX_SUFFIX}")
    if not output.parent.is_dir():
        parser.error(f"--output {output}: folder {output.parent} does not exist")
    try:
        model, settings, _ = build_from_checkpoint(args.weight_path, input_norm=args.input_norm)
        export_onnx(model, output)
        print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, opset {OPSET}, {settings.row} x {settings.line} "
              f"anchors per cell, input_norm {settings.input_norm}); onnx.checker: valid")
        if not check_export(model, output):
            print(f"error: {output} differs from the PyTorch network beyond the parity tolerances "
                  f"(logits {LOGIT_TOLERANCE:g}, points {POINT_TOLERANCE_PX:g} px)", file=sys.stderr)
            return EXIT_FAILED
    except (FileNotFoundError, ValueError, KeyError, CheckpointError, ImportError) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    run_script(main)
